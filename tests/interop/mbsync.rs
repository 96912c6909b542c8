//! mbsync (isync) keeping a local Maildir and a cove account in step, both
//! ways: a 1,000-message INBOX is pulled; then flags change on both ends, a
//! message is deleted on each end, a message and a folder are made locally;
//! the next run makes both ends equal, and the run after that has nothing
//! to do (its IMAP conversation, traced with `-Dn`, stores, appends,
//! expunges and downloads nothing, and neither end changes).

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use cove_tests::{IMAP_CONFIG, Imap, TestServer, message, text};

use crate::common::{
    Flags, ImapMessage, header_value, imap_mailbox_names, imap_messages, maildir_message_files,
    maildir_messages, program, run, tree,
};

const USER: &str = "alice@example.com";
const PASSWORD: &str = "mbsync-secret";
const MESSAGES: usize = 1000;

/// The Message-ID of the n-th delivered message.
fn id(n: usize) -> String {
    format!("<mb{n:04}@cove.test>")
}

/// Deliver the numbered messages over LMTP, on a few connections at once.
fn deliver_numbered(lmtp: SocketAddr) {
    const CONNECTIONS: usize = 4;
    std::thread::scope(|s| {
        for c in 0..CONNECTIONS {
            s.spawn(move || {
                let mut client = cove_tests::Client::connect(lmtp);
                assert_eq!(client.read_reply().code, 220);
                assert_eq!(client.lhlo("client.test").code, 250);
                for n in (1..=MESSAGES).filter(|n| n % CONNECTIONS == c) {
                    let d = client.deliver(
                        "sender@example.org",
                        &[USER],
                        &message(&format!("mb{n:04}"), &format!("message number {n}")),
                    );
                    assert!(d.results.len() == 1 && d.results[0].is("250"), "{d:?}");
                }
            });
        }
    });
}

/// One mbsync setup: its configuration and the local Maildir root.
struct Mbsync {
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl Mbsync {
    /// A setup whose far side is `account` (the lines of an
    /// `IMAPAccount cove` section after its first line).
    fn new(bin: PathBuf, account: &str) -> Mbsync {
        let dir = tempfile::tempdir().expect("temp dir");
        let mail = dir.path().join("mail");
        fs::create_dir(&mail).expect("mkdir");
        let m = mail.display();
        let rc = format!(
            "IMAPAccount cove
{account}
IMAPStore cove-far
Account cove

MaildirStore local-near
Path {m}/
Inbox {m}/INBOX
SubFolders Verbatim

Channel cove
Far :cove-far:
Near :local-near:
Patterns *
Sync All
Create Both
Expunge Both
SyncState *
"
        );
        fs::write(dir.path().join("mbsyncrc"), rc).expect("write mbsyncrc");
        Mbsync { bin, dir }
    }

    fn mail(&self) -> PathBuf {
        self.dir.path().join("mail")
    }

    /// `mbsync -a` (with `-Dn`, the IMAP conversation, when `trace`);
    /// asserts success and returns what it printed.
    fn sync(&self, trace: bool) -> String {
        let mut c = Command::new(&self.bin);
        c.arg("-c").arg(self.dir.path().join("mbsyncrc"));
        if trace {
            c.arg("-Dn");
        }
        c.arg("-a");
        let out = run(c);
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            out.status.success(),
            "mbsync failed ({}):\n{all}",
            out.status
        );
        all
    }

    /// The message files of every local folder (a snapshot).
    fn message_files(&self) -> Vec<String> {
        tree(&self.mail())
            .into_iter()
            .filter(|f| f.contains("/cur/") || f.contains("/new/"))
            .collect()
    }
}

/// The far side over plain IMAP with LOGIN: cove allows it from loopback
/// (mbsync warns that the password goes in the clear).
fn plain_account(imap: SocketAddr) -> String {
    format!(
        "Host {}\nPort {}\nUser {USER}\nPass {PASSWORD}\nSSLType None\nAuthMechs LOGIN\n",
        imap.ip(),
        imap.port()
    )
}

/// The far side over TLS (`ssl_type` STARTTLS or IMAPS), trusting cove's
/// self-signed certificate and checking it names `localhost`.
fn tls_account(port: u16, ssl_type: &str, cert: &Path) -> String {
    format!(
        "Host localhost\nPort {port}\nUser {USER}\nPass {PASSWORD}\nSSLType {ssl_type}\n\
         CertificateFile {}\n",
        cert.display()
    )
}

/// Set the flags of the local copy of message `id` in `folder` (mbsync's
/// files keep a `,U=` UID in the name; flags follow `:2,`).
fn set_local_flags(folder: &Path, id: &str, letters: &str) {
    let file = local_file(folder, id);
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let base = name.split_once(":2,").map_or(name.as_str(), |(b, _)| b);
    let mut sorted: Vec<char> = letters.chars().collect();
    sorted.sort_unstable();
    let to = folder.join("cur").join(format!(
        "{base}:2,{}",
        sorted.into_iter().collect::<String>()
    ));
    fs::rename(&file, &to).expect("rename to set flags");
}

fn local_file(folder: &Path, id: &str) -> PathBuf {
    maildir_message_files(folder)
        .into_iter()
        .find(|f| {
            fs::read(f)
                .ok()
                .and_then(|b| header_value(&b, "Message-ID"))
                .is_some_and(|m| m == id)
        })
        .unwrap_or_else(|| panic!("no local file for {id} in {}", folder.display()))
}

/// A message a local mail client wrote (LF line ends, no flags yet).
fn write_local_message(folder: &Path, unique: &str, id: &str) {
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(folder.join(sub)).expect("mkdir");
    }
    fs::write(
        folder.join("new").join(format!("1700000000.{unique}.near")),
        format!("From: alice@example.com\nTo: bob@example.org\nSubject: {unique}\nMessage-ID: {id}\n\nwritten locally\n"),
    )
    .expect("write a local message");
}

/// cove's side as Message-ID -> flags, and the raw rows.
fn cove_state<S: std::io::Read + std::io::Write>(
    imap: &mut Imap<S>,
    mailbox: &str,
) -> (BTreeMap<String, Flags>, Vec<ImapMessage>) {
    let rows = imap_messages(imap, mailbox, false);
    let map: BTreeMap<String, Flags> = rows
        .iter()
        .map(|m| (m.message_id.clone(), m.flags.clone()))
        .collect();
    assert_eq!(map.len(), rows.len(), "a Message-ID twice in {mailbox}");
    (map, rows)
}

fn flags(list: &[&str]) -> Flags {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn mbsync_two_way_sync_of_1000_messages_converges_then_has_nothing_to_do() {
    let Some(bin) = program("mbsync", "isync") else {
        return;
    };
    let server = TestServer::start(IMAP_CONFIG);
    server.add_user_with_password(USER, PASSWORD);
    deliver_numbered(server.lmtp_addr());
    let mb = Mbsync::new(bin, &plain_account(server.addr_of("imap")));
    let inbox = mb.mail().join("INBOX");

    // 1. The first run pulls every message, and every folder.
    mb.sync(false);
    let local = maildir_messages(&inbox);
    assert_eq!(local.len(), MESSAGES);
    assert!(local.values().all(Flags::is_empty), "new mail is unflagged");
    for name in ["Archive", "Drafts", "Junk", "Sent", "Trash"] {
        assert!(mb.mail().join(name).join("cur").is_dir(), "{name} not made");
    }

    // 2. Changes on both ends.
    let mut imap = server.imap_login(USER, PASSWORD);
    let (_, rows) = cove_state(&mut imap, "INBOX");
    let uid = |n: usize| {
        rows.iter()
            .find(|m| m.message_id == id(n))
            .unwrap_or_else(|| panic!("no {}", id(n)))
            .uid
    };
    // On cove: \Seen on 1..=10, \Answered \Flagged on 11, 20 expunged.
    let seen: Vec<String> = (1..=10).map(|n| uid(n).to_string()).collect();
    imap.cmd_ok(&format!(
        "A1 UID STORE {} +FLAGS.SILENT (\\Seen)",
        seen.join(",")
    ));
    imap.cmd_ok(&format!(
        "A2 UID STORE {} +FLAGS.SILENT (\\Answered \\Flagged)",
        uid(11)
    ));
    imap.cmd_ok(&format!(
        "A3 UID STORE {} +FLAGS.SILENT (\\Deleted)",
        uid(20)
    ));
    imap.cmd_ok(&format!("A4 UID EXPUNGE {}", uid(20)));
    // Locally: \Flagged \Seen on 30..=39, \Draft on 40, 50 deleted, a new
    // message in INBOX and a new folder with one message.
    for n in 30..=39 {
        set_local_flags(&inbox, &id(n), "FS");
    }
    set_local_flags(&inbox, &id(40), "D");
    fs::remove_file(local_file(&inbox, &id(50))).expect("delete locally");
    write_local_message(&inbox, "local-inbox", "<local-inbox@near.test>");
    write_local_message(
        &mb.mail().join("Local"),
        "local-folder",
        "<local-folder@near.test>",
    );

    // 3. The second run converges.
    mb.sync(false);
    let (cove_inbox, _) = cove_state(&mut imap, "INBOX");
    let local_inbox = maildir_messages(&inbox);
    assert_eq!(
        local_inbox, cove_inbox,
        "INBOX differs (left: local, right: cove)"
    );
    let mut want: BTreeMap<String, Flags> = (1..=MESSAGES)
        .filter(|n| *n != 20 && *n != 50)
        .map(|n| (id(n), Flags::new()))
        .collect();
    for n in 1..=10 {
        want.insert(id(n), flags(&["\\Seen"]));
    }
    want.insert(id(11), flags(&["\\Answered", "\\Flagged"]));
    for n in 30..=39 {
        want.insert(id(n), flags(&["\\Flagged", "\\Seen"]));
    }
    want.insert(id(40), flags(&["\\Draft"]));
    want.insert("<local-inbox@near.test>".into(), Flags::new());
    assert_eq!(cove_inbox.len(), MESSAGES - 2 + 1);
    assert_eq!(cove_inbox, want, "INBOX is not what both ends asked for");
    assert!(
        imap_mailbox_names(&mut imap).contains("Local"),
        "mbsync did not create the local folder on cove"
    );
    let (cove_local, _) = cove_state(&mut imap, "Local");
    assert_eq!(cove_local, maildir_messages(&mb.mail().join("Local")));
    assert_eq!(
        cove_local.keys().collect::<Vec<_>>(),
        vec!["<local-folder@near.test>"]
    );

    // 4. A third run has nothing to do.
    let files_before = mb.message_files();
    let mailboxes = imap_mailbox_names(&mut imap);
    let cove_before: Vec<_> = mailboxes
        .iter()
        .map(|m| imap_messages(&mut imap, m, true))
        .collect();
    let status_before: Vec<_> = mailboxes
        .iter()
        .map(|m| imap.cmd_ok(&format!("S2 STATUS {m} (MESSAGES UIDNEXT UIDVALIDITY)")))
        .collect();
    imap.cmd_ok("A9 LOGOUT");
    let trace = mb.sync(true);
    let commands: Vec<&str> = trace
        .lines()
        .filter_map(|l| l.strip_prefix(">>> "))
        .collect();
    assert!(
        commands.iter().any(|c| c.contains("UID FETCH")),
        "no IMAP trace: {trace}"
    );
    for c in &commands {
        let upper = c.to_ascii_uppercase();
        for verb in ["APPEND", "STORE", "EXPUNGE", "CREATE", "DELETE", "BODY"] {
            assert!(!upper.contains(verb), "the last run sent {c:?}:\n{trace}");
        }
    }
    assert_eq!(mb.message_files(), files_before, "local files changed");
    let mut imap = server.imap_login(USER, PASSWORD);
    let cove_after: Vec<_> = mailboxes
        .iter()
        .map(|m| imap_messages(&mut imap, m, true))
        .collect();
    assert_eq!(cove_after, cove_before, "cove's messages or flags changed");
    let status_after: Vec<_> = mailboxes
        .iter()
        .map(|m| imap.cmd_ok(&format!("S2 STATUS {m} (MESSAGES UIDNEXT UIDVALIDITY)")))
        .collect();
    assert_eq!(status_after, status_before);
}

#[test]
fn mbsync_over_starttls_and_implicit_tls_verifies_coves_certificate() {
    let Some(bin) = program("mbsync", "isync") else {
        return;
    };
    let server = TestServer::start(IMAP_CONFIG);
    server.add_user_with_password(USER, PASSWORD);
    for n in 1..=5 {
        server.deliver_to(USER, &message(&format!("mb{n:04}"), "over TLS"));
    }
    let cert = server.data_dir().join("tls/cert.pem");
    for (ssl_type, port) in [
        ("STARTTLS", server.addr_of("imap").port()),
        ("IMAPS", server.addr_of("imaps").port()),
    ] {
        let mb = Mbsync::new(bin.clone(), &tls_account(port, ssl_type, &cert));
        let inbox = mb.mail().join("INBOX");
        let trace = mb.sync(true);
        let commands: Vec<&str> = trace
            .lines()
            .filter_map(|l| l.strip_prefix(">>> "))
            .collect();
        assert_eq!(
            commands.iter().any(|c| c.ends_with(" STARTTLS")),
            ssl_type == "STARTTLS",
            "{ssl_type}: {commands:?}"
        );
        assert!(
            !trace.contains("Password is being sent in the clear"),
            "{trace}"
        );
        let local = maildir_messages(&inbox);
        let want: Vec<String> = (1..=5).map(id).collect();
        assert_eq!(
            local.keys().cloned().collect::<Vec<_>>(),
            want,
            "{ssl_type}"
        );

        // And back: a flag set locally reaches cove over the same link.
        set_local_flags(&inbox, &id(3), "S");
        mb.sync(false);
        let mut imap = server.imap_login(USER, PASSWORD);
        let (cove, _) = cove_state(&mut imap, "INBOX");
        assert_eq!(cove, maildir_messages(&inbox), "{ssl_type}");
        assert_eq!(cove[&id(3)], flags(&["\\Seen"]), "{ssl_type}");
        imap.cmd_ok("U1 UID STORE 1:* -FLAGS.SILENT (\\Seen)");
        imap.cmd_ok("U2 LOGOUT");
    }
}
