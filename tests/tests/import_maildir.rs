//! `cove import maildir` against a Maildir that a real Dovecot built: mail
//! delivered by Dovecot's LMTP, folders, flags, keywords, moves, expunges
//! (UID gaps) and subscriptions made with `doveadm`. After the import, cove
//! must show over IMAP what `doveadm` showed: the same folders,
//! UIDVALIDITY, UIDNEXT, UID -> Message-ID map, sizes, flags and keywords;
//! a second run must change nothing; mail delivered to two Dovecot users
//! must be stored once; the Dovecot tree must be left as it was.
//!
//! Needs Debian's dovecot-core and dovecot-lmtpd. Without them the test
//! says why and passes, unless CI=true, where it fails.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use cove_tests::{Client, IMAP_CONFIG, Imap, TestServer, eventually, run_bounded, text};

const DOVECOT: &str = "/usr/sbin/dovecot";
const DOVEADM: &str = "/usr/bin/doveadm";
const LMTP: &str = "/usr/lib/dovecot/lmtp";

/// Whether Dovecot is here; `Err` says what is missing.
fn dovecot_missing() -> Option<String> {
    [DOVECOT, DOVEADM, LMTP]
        .iter()
        .find(|p| !Path::new(p).exists())
        .map(|p| format!("{p} is missing (apt-get install dovecot-core dovecot-lmtpd)"))
}

/// Skip (with the reason) when Dovecot is missing, except under CI=true.
macro_rules! require_dovecot {
    () => {
        if let Some(why) = dovecot_missing() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true and Dovecot is not installed: {why}");
            }
            eprintln!("skipping: {why}");
            return;
        }
    };
}

/// A private Dovecot (LMTP only) with its config, users and mail under a
/// temporary directory, as benches/dovecot/start.sh sets one up.
struct Dovecot {
    dir: tempfile::TempDir,
    conf: PathBuf,
    lmtp: SocketAddr,
    running: bool,
}

/// Start a Dovecot master on `conf` (it forks into the background).
fn run_master(conf: &Path, d: &Path) {
    // The master forks into the background and keeps what it was given
    // as stdout and stderr open: give it nothing to hold.
    let started = Command::new(DOVECOT)
        .arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run dovecot");
    assert!(
        started.success(),
        "dovecot did not start: {}",
        fs::read_to_string(d.join("dovecot.log")).unwrap_or_default()
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn sh(cmd: &mut Command) -> String {
    let what = format!("{cmd:?}");
    let out = run_bounded(
        std::mem::replace(cmd, Command::new("true")),
        None,
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{what}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

impl Dovecot {
    fn start(users: &[&str]) -> Dovecot {
        // Dovecot's unix socket paths must stay short: a directory in /tmp.
        let dir = tempfile::Builder::new()
            .prefix("cove-dv-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let d = dir.path().to_path_buf();
        for sub in ["run", "state", "mail"] {
            fs::create_dir_all(d.join(sub)).unwrap();
        }
        let root = current_uid() == 0;
        // As root, the mail belongs to "nobody" (Dovecot refuses UID 0 for
        // mail) and Dovecot's own users must be able to enter the directory.
        let (uid, gid, privs) = if root {
            let uid = sh(Command::new("id").args(["-u", "nobody"]))
                .trim()
                .to_string();
            let gid = sh(Command::new("id").args(["-g", "nobody"]))
                .trim()
                .to_string();
            sh(Command::new("chown")
                .arg(format!("{uid}:{gid}"))
                .arg(d.join("mail")));
            sh(Command::new("chmod").arg("755").arg(&d));
            (uid, gid, String::new())
        } else {
            let uid = sh(Command::new("id").arg("-u")).trim().to_string();
            let gid = sh(Command::new("id").arg("-g")).trim().to_string();
            let me = sh(Command::new("id").arg("-un")).trim().to_string();
            let group = sh(Command::new("id").arg("-gn")).trim().to_string();
            let privs = format!(
                "default_internal_user = {me}\ndefault_internal_group = {group}\n\
                 default_login_user = {me}\nservice anvil {{\n  chroot =\n}}\n"
            );
            (uid, gid, privs)
        };
        let mut passwd = String::new();
        for u in users {
            let (local, domain) = u.split_once('@').unwrap();
            passwd.push_str(&format!(
                "{u}:{{PLAIN}}pw:{uid}:{gid}::{}::\n",
                d.join("mail").join(domain).join(local).display()
            ));
        }
        fs::write(d.join("users"), passwd).unwrap();
        let port = free_port();
        let conf = d.join("dovecot.conf");
        let dd = d.display();
        fs::write(
            &conf,
            format!(
                "base_dir = {dd}/run\nstate_dir = {dd}/state\ninstance_name = cove-import-{port}\n\
                 log_path = {dd}/dovecot.log\nprotocols = lmtp\nlisten = 127.0.0.1\nssl = no\n\
                 mail_location = maildir:{dd}/mail/%d/%n/Maildir\n\
                 mail_uid = {uid}\nmail_gid = {gid}\nfirst_valid_uid = {uid}\nlast_valid_uid = {uid}\n\
                 first_valid_gid = {gid}\nlast_valid_gid = {gid}\n\
                 # The same bytes for every recipient (no Delivered-To, no Received).\n\
                 lmtp_hdr_delivery_address = none\nlmtp_add_received_header = no\n\
                 passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {dd}/users\n}}\n\
                 userdb {{\n  driver = passwd-file\n  args = username_format=%u {dd}/users\n}}\n\
                 {privs}\
                 service lmtp {{\n  inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n}}\n"
            ),
        )
        .unwrap();
        run_master(&conf, &d);
        let lmtp: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        eventually(Duration::from_secs(10), || {
            std::net::TcpStream::connect(lmtp).ok().map(|_| ())
        })
        .unwrap_or_else(|| {
            panic!(
                "dovecot did not listen on {lmtp}: {}",
                fs::read_to_string(d.join("dovecot.log")).unwrap_or_default()
            )
        });
        Dovecot {
            dir,
            conf,
            lmtp,
            running: true,
        }
    }

    /// Start it again on the same mail (after [`stop`](Dovecot::stop)).
    fn restart(&mut self) {
        run_master(&self.conf, self.dir.path());
        self.running = true;
        let lmtp = self.lmtp;
        eventually(Duration::from_secs(10), || {
            std::net::TcpStream::connect(lmtp).ok().map(|_| ())
        })
        .expect("dovecot listens again");
    }

    fn doveadm(&self, args: &[&str]) -> String {
        sh(Command::new(DOVEADM).arg("-c").arg(&self.conf).args(args))
    }

    fn deliver(&self, rcpts: &[&str], body: &str) {
        let mut c = Client::connect(self.lmtp);
        let greeting = c.read_reply();
        assert!(greeting.is("220"), "dovecot greeting {greeting:?}");
        let r = c.lhlo("client.test");
        assert_eq!(r.code, 250, "LHLO: {r:?}");
        let d = c.deliver("sender@example.org", rcpts, body);
        assert!(
            d.results.len() == rcpts.len() && d.results.iter().all(|r| r.is("250")),
            "dovecot delivery: {d:?}"
        );
    }

    fn maildir(&self, email: &str) -> PathBuf {
        let (local, domain) = email.split_once('@').unwrap();
        self.dir
            .path()
            .join("mail")
            .join(domain)
            .join(local)
            .join("Maildir")
    }

    fn stop(&mut self) {
        if self.running {
            let pid =
                fs::read_to_string(self.dir.path().join("run/master.pid")).unwrap_or_default();
            self.doveadm(&["stop"]);
            self.running = false;
            // Everything it wrote is on disk once the master is gone.
            let proc = PathBuf::from(format!("/proc/{}", pid.trim()));
            eventually(Duration::from_secs(10), || (!proc.exists()).then_some(()))
                .expect("dovecot stops");
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if self.running {
            let _ = Command::new(DOVEADM)
                .arg("-c")
                .arg(&self.conf)
                .arg("stop")
                .output();
        }
    }
}

fn current_uid() -> u32 {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    text(&out.stdout).trim().parse().expect("a uid")
}

/// One message as a server shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    message_id: String,
    size: u64,
    flags: BTreeSet<String>,
}

/// A mailbox as a server shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Folder {
    uidvalidity: u32,
    uidnext: u32,
    messages: BTreeMap<u32, Msg>,
}

fn flag_set(s: &str) -> BTreeSet<String> {
    s.split_whitespace()
        .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
        .map(str::to_string)
        .collect()
}

/// What `doveadm` says of a user's mail.
fn dovecot_view(dv: &Dovecot, user: &str) -> BTreeMap<String, Folder> {
    let mut out = BTreeMap::new();
    for line in dv
        .doveadm(&["mailbox", "status", "-u", user, "uidvalidity uidnext", "*"])
        .lines()
    {
        // "<name> uidnext=M uidvalidity=N" (the name may hold spaces).
        let cut = [" uidnext=", " uidvalidity="]
            .iter()
            .filter_map(|k| line.find(k))
            .min()
            .unwrap_or_else(|| panic!("doveadm mailbox status: {line:?}"));
        let (name, rest) = line.split_at(cut);
        let value = |key: &str| -> u32 {
            rest.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap()
                .parse()
                .unwrap()
        };
        out.insert(
            name.to_string(),
            Folder {
                uidvalidity: value("uidvalidity="),
                uidnext: value("uidnext="),
                messages: BTreeMap::new(),
            },
        );
    }
    let fetched = dv.doveadm(&[
        "fetch",
        "-u",
        user,
        "mailbox uid flags size.virtual hdr.message-id",
        "all",
    ]);
    for record in fetched.split('\x0c') {
        let mut fields = BTreeMap::new();
        for line in record.lines() {
            if let Some((k, v)) = line.split_once(": ") {
                fields.insert(k.to_string(), v.trim().to_string());
            } else if let Some(k) = line.strip_suffix(':') {
                fields.insert(k.to_string(), String::new());
            }
        }
        let Some(mailbox) = fields.get("mailbox") else {
            continue;
        };
        let uid: u32 = fields["uid"].parse().unwrap();
        out.get_mut(mailbox).unwrap().messages.insert(
            uid,
            Msg {
                message_id: fields["hdr.message-id"].clone(),
                size: fields["size.virtual"].parse().unwrap(),
                flags: flag_set(&fields["flags"]),
            },
        );
    }
    out
}

/// The value after `key ` in an IMAP response line.
fn item<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!("{key} "))? + key.len() + 1;
    let rest = &line[at..];
    if let Some(inner) = rest.strip_prefix('(') {
        return inner.split(')').next();
    }
    rest.split([' ', ')', ']']).next()
}

/// What cove shows over IMAP of the mailboxes `names`.
fn cove_view(imap: &mut Imap<std::net::TcpStream>, names: &[String]) -> BTreeMap<String, Folder> {
    let mut out = BTreeMap::new();
    for name in names {
        let sel = imap.cmd_ok(&format!("s EXAMINE \"{name}\""));
        let find = |key: &str| -> u32 {
            sel.iter()
                .find_map(|l| item(l, key))
                .unwrap_or_else(|| panic!("{key} of {name}: {sel:?}"))
                .parse()
                .unwrap()
        };
        let (uidvalidity, uidnext) = (find("UIDVALIDITY"), find("UIDNEXT"));
        let mut messages = BTreeMap::new();
        let exists = sel
            .iter()
            .any(|l| l.starts_with("* ") && l.ends_with(" EXISTS") && l != "* 0 EXISTS");
        if exists {
            for line in imap.cmd_ok(
                "f UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])",
            ) {
                if !line.starts_with("* ") {
                    continue;
                }
                let uid: u32 = item(&line, "UID").unwrap().parse().unwrap();
                let size: u64 = item(&line, "RFC822.SIZE").unwrap().parse().unwrap();
                let flags = flag_set(item(&line, "FLAGS").unwrap());
                let message_id = line
                    .split("Message-ID: ")
                    .nth(1)
                    .and_then(|s| s.split('\r').next())
                    .unwrap_or("")
                    .trim()
                    .to_string();
                messages.insert(
                    uid,
                    Msg {
                        message_id,
                        size,
                        flags,
                    },
                );
            }
        }
        out.insert(
            name.clone(),
            Folder {
                uidvalidity,
                uidnext,
                messages,
            },
        );
    }
    out
}

/// Names from LIST or LSUB responses, with their attributes.
fn listed(lines: &[String]) -> BTreeMap<String, String> {
    lines
        .iter()
        .filter(|l| l.starts_with("* LIST ") || l.starts_with("* LSUB "))
        .map(|l| {
            let attrs = l.split(')').next().unwrap_or("").to_string();
            let name = l
                .rsplit("\".\" ")
                .next()
                .unwrap()
                .trim_matches('"')
                .to_string();
            (name, attrs)
        })
        .collect()
}

/// Every file of a tree with its size, mtime and inode: proof it was not
/// touched.
fn tree_state(root: &Path) -> BTreeMap<PathBuf, (u64, i64, u64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            }
            out.insert(e.path(), (m.len(), m.mtime(), m.ino()));
        }
    }
    out
}

fn message(n: u32) -> String {
    format!(
        "From: alice@example.org\r\nTo: a@example.com\r\nSubject: message {n}\r\n\
         Date: Sat, 01 Feb 2020 09:59:00 +0000\r\nMessage-ID: <m{n}@test>\r\n\r\n\
         Body of message {n}.\r\nSecond line.\r\n"
    )
}

#[test]
fn import_keeps_what_dovecot_clients_cached() {
    require_dovecot!();
    let (a, b) = ("a@example.com", "b@example.com");
    let mut dv = Dovecot::start(&[a, b]);
    // Ten messages for a; the first four for b too, in one transaction.
    for n in 1..=10 {
        if n <= 4 {
            dv.deliver(&[a, b], &message(n));
        } else {
            dv.deliver(&[a], &message(n));
        }
    }
    dv.doveadm(&[
        "mailbox", "create", "-u", a, "Work", "Work.Q1", "Sent", "Trash",
    ]);
    dv.doveadm(&[
        "mailbox",
        "subscribe",
        "-u",
        a,
        "INBOX",
        "Work",
        "Work.Q1",
        "Gone",
    ]);
    dv.doveadm(&[
        "flags", "add", "-u", a, "\\Seen", "mailbox", "INBOX", "uid", "1:2",
    ]);
    dv.doveadm(&[
        "flags",
        "add",
        "-u",
        a,
        "\\Flagged $Important Later",
        "mailbox",
        "INBOX",
        "uid",
        "2",
    ]);
    dv.doveadm(&[
        "flags",
        "add",
        "-u",
        a,
        "\\Answered NonJunk",
        "mailbox",
        "INBOX",
        "uid",
        "5",
    ]);
    dv.doveadm(&["move", "-u", a, "Work", "mailbox", "INBOX", "uid", "3:4"]);
    dv.doveadm(&["move", "-u", a, "Work.Q1", "mailbox", "INBOX", "uid", "7"]);
    dv.doveadm(&["move", "-u", a, "Sent", "mailbox", "INBOX", "uid", "8"]);
    dv.doveadm(&[
        "flags",
        "add",
        "-u",
        a,
        "\\Seen Later",
        "mailbox",
        "Sent",
        "all",
    ]);
    // Gaps: one in the middle, and the highest UID.
    dv.doveadm(&["expunge", "-u", a, "mailbox", "INBOX", "uid", "6"]);
    dv.doveadm(&["expunge", "-u", a, "mailbox", "INBOX", "uid", "10"]);
    dv.doveadm(&[
        "flags",
        "add",
        "-u",
        b,
        "\\Deleted",
        "mailbox",
        "INBOX",
        "uid",
        "4",
    ]);
    let want_a = dovecot_view(&dv, a);
    let want_b = dovecot_view(&dv, b);
    let subscribed_a: BTreeSet<String> = dv
        .doveadm(&["mailbox", "list", "-s", "-u", a])
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(want_a["INBOX"].uidnext, 11, "{want_a:?}");
    assert_eq!(want_a["INBOX"].messages.len(), 4, "{want_a:?}");
    dv.stop();
    let before = tree_state(&dv.dir.path().join("mail"));

    let server = TestServer::start(IMAP_CONFIG);
    server.add_user_with_password(a, "pw");
    server.add_user_with_password(b, "pw");
    let list = server.data_dir().join("../users.txt");
    fs::write(
        &list,
        format!(
            "# users to import\n{a} {}\n{b} {}\n",
            dv.maildir(a).display(),
            dv.maildir(b).display()
        ),
    )
    .unwrap();
    let first = server.cli_ok(&["import", "maildir", "--users", list.to_str().unwrap()]);
    assert!(
        first.contains("messages 8 at their Dovecot UIDs"),
        "{first}"
    );
    assert!(
        first.contains("messages 4 at their Dovecot UIDs"),
        "{first}"
    );
    assert_eq!(
        before,
        tree_state(&dv.dir.path().join("mail")),
        "the Dovecot tree changed"
    );

    // The same view over IMAP.
    let names: Vec<String> = want_a.keys().cloned().collect();
    let mut imap = server.imap_login(a, "pw");
    let got_a = cove_view(&mut imap, &names);
    assert_eq!(got_a, want_a);
    let mut imap_b = server.imap_login(b, "pw");
    let got_b = cove_view(&mut imap_b, &["INBOX".to_string()]);
    assert_eq!(got_b["INBOX"], want_b["INBOX"]);
    // Subscriptions as Dovecot had them (a name without a mailbox too);
    // special use by name.
    let lsub = listed(&imap.cmd_ok("l LSUB \"\" \"*\""));
    for name in &names {
        assert_eq!(
            lsub.contains_key(name),
            subscribed_a.contains(name),
            "subscription of {name}: {lsub:?}"
        );
    }
    for name in &subscribed_a {
        assert!(lsub.contains_key(name), "{name} not subscribed: {lsub:?}");
    }
    let all = listed(&imap.cmd_ok("l LIST \"\" \"*\""));
    assert!(all["Sent"].contains("\\Sent"), "{all:?}");
    assert!(all["Trash"].contains("\\Trash"), "{all:?}");

    // Stored once: b's four messages are a's first four, byte for byte.
    let blobs = server.blob_files();
    assert_eq!(blobs.len(), 8, "one blob per distinct message: {blobs:?}");
    let inodes = |email: &str| -> BTreeSet<u64> {
        let mut out = BTreeSet::new();
        for folder in ["INBOX", "Work", "Work.Q1", "Sent"] {
            for f in server.maildir_files(email, folder) {
                out.insert(fs::metadata(f).unwrap().ino());
            }
        }
        out
    };
    let (ia, ib) = (inodes(a), inodes(b));
    assert_eq!(ib.len(), 4);
    assert!(ib.is_subset(&ia), "b's files are links to a's blobs");

    // A second run changes nothing, not even a modseq. (The STATUS lines
    // only: the first STATUS HIGHESTMODSEQ enables CONDSTORE, and with a
    // mailbox selected that adds its HIGHESTMODSEQ, RFC 7162 §3.1.)
    let modseqs = |imap: &mut Imap<std::net::TcpStream>| -> Vec<String> {
        names
            .iter()
            .map(|n| {
                imap.cmd_ok(&format!(
                    "m STATUS \"{n}\" (HIGHESTMODSEQ UIDNEXT MESSAGES)"
                ))
                .into_iter()
                .filter(|l| l.starts_with("* STATUS"))
                .collect::<Vec<_>>()
                .join("\n")
            })
            .collect()
    };
    let status_before = modseqs(&mut imap);
    let again = server.cli_ok(&["import", "maildir", "--users", list.to_str().unwrap()]);
    assert!(
        again.contains("messages 0 at their Dovecot UIDs, 0 at new UIDs, 8 already present, 0 with flags updated"),
        "{again}"
    );
    assert!(
        again.contains("content 0 bytes new, 0 bytes already stored"),
        "{again}"
    );
    assert_eq!(modseqs(&mut imap), status_before);
    assert_eq!(cove_view(&mut imap, &names), want_a);
    assert_eq!(server.blob_files().len(), 8);
    assert_eq!(
        before,
        tree_state(&dv.dir.path().join("mail")),
        "the Dovecot tree changed"
    );

    // Catch-up: Dovecot kept serving; two more messages, a flag changed,
    // one message expunged in cove meanwhile (it stays expunged).
    imap.cmd_ok("x SELECT Work");
    imap.cmd_ok("x UID STORE 1 +FLAGS (\\Deleted)");
    imap.cmd_ok("x UID EXPUNGE 1");
    dv.restart();
    dv.deliver(&[a], &message(11));
    dv.deliver(&[a], &message(12));
    dv.doveadm(&[
        "flags",
        "add",
        "-u",
        a,
        "\\Answered",
        "mailbox",
        "INBOX",
        "uid",
        "9",
    ]);
    let mut want = dovecot_view(&dv, a);
    dv.stop();
    let third = server.cli_ok(&[
        "import",
        "maildir",
        "--user",
        a,
        dv.maildir(a).to_str().unwrap(),
    ]);
    assert!(
        third.contains("messages 2 at their Dovecot UIDs, 0 at new UIDs, 6 already present, 1 with flags updated, 1 left out"),
        "{third}"
    );
    want.get_mut("Work").unwrap().messages.remove(&1);
    assert_eq!(cove_view(&mut imap, &names), want);
    imap.cmd_ok("z LOGOUT");
    imap_b.cmd_ok("z LOGOUT");
}

#[test]
fn import_refuses_a_mailbox_cove_already_numbered() {
    require_dovecot!();
    let a = "a@example.com";
    let mut dv = Dovecot::start(&[a]);
    dv.deliver(&[a], &message(1));
    dv.stop();
    let server = TestServer::start(IMAP_CONFIG);
    server.add_user_with_password(a, "pw");
    server.deliver_to(a, &message(99));
    let maildir = dv.maildir(a);
    let out = server.cli(&["import", "maildir", "--user", a, maildir.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("mailbox INBOX of a@example.com: it already holds mail cove numbered"),
        "{err}"
    );
    // A user that does not exist is named, not created.
    let out = server.cli(&[
        "import",
        "maildir",
        "--user",
        "nobody@example.com",
        maildir.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no such user"),
        "{}",
        text(&out.stderr)
    );
}
