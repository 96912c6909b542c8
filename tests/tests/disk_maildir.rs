//! What another program, a bad sector or an operator can leave on disk
//! (issue 11): names in a Maildir that are not message files, an index
//! truncated or deleted under a running server, keywords kept where
//! other programs and a rebuild see them, and the modes of cove's files.

mod pop3_common;

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use cove_tests::{IMAP_CONFIG, TestServer, eventually, message};
use pop3_common::{PASS, POP3_CONFIG, USER};

const WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// A server with IMAP and POP3, and [`USER`] with two messages.
fn server_with_two_messages() -> TestServer {
    let s = TestServer::start(&format!("{IMAP_CONFIG}{POP3_CONFIG}"));
    s.add_user_with_password(USER, PASS);
    for n in 1..=2 {
        s.deliver_to(USER, &message(&format!("m{n}"), &format!("body {n}")));
    }
    s
}

/// The `* n EXISTS` of a SELECT's responses.
fn exists(responses: &[String]) -> Option<u32> {
    responses
        .iter()
        .find_map(|r| r.strip_prefix("* ")?.strip_suffix(" EXISTS")?.parse().ok())
}

fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .expect("mkfifo");
}

#[test]
fn fifo_directory_and_symlink_in_cur_are_skipped() {
    let s = server_with_two_messages();
    let outside = s.data_dir().parent().expect("temp dir").join("outside");
    fs::write(&outside, message("secret", "SECRET-FROM-OUTSIDE")).expect("outside file");
    let cur = s.folder(USER, "INBOX").join("cur");
    let fifo = cur.join("1700000001.M1P1.otherhost,S=10:2,S");
    mkfifo(&fifo);
    fs::create_dir(cur.join("1700000002.M2P2.otherhost:2,")).expect("directory");
    std::os::unix::fs::symlink(&outside, cur.join("1700000003.M3P3.otherhost:2,S"))
        .expect("symlink");

    // The account serves its two messages, over IMAP and POP3.
    let mut imap = s.imap_login(USER, PASS);
    let selected = imap.cmd_ok("S1 SELECT INBOX");
    assert_eq!(exists(&selected), Some(2), "{selected:?}");
    let fetched = imap.cmd_ok("F1 FETCH 1:* BODY[]").join("\n");
    assert!(fetched.contains("body 1") && fetched.contains("body 2"));
    assert!(!fetched.contains("SECRET-FROM-OUTSIDE"), "{fetched}");

    let mut pop = pop3_common::logged_in(&s);
    assert!(pop.cmd("STAT").starts_with("+OK 2 "));
    for n in 1..=2 {
        let retr = pop.multi(&format!("RETR {n}")).join("\n");
        assert!(retr.contains(&format!("body {n}")), "{retr}");
        assert!(!retr.contains("SECRET-FROM-OUTSIDE"), "{retr}");
    }
    assert_eq!(pop.cmd("QUIT").split(' ').next(), Some("+OK"));

    // Another program's real message still gets in (a later scan), and the
    // FIFO is reported once, not once per scan.
    fs::write(
        s.folder(USER, "INBOX")
            .join("new/1700000004.M4P4.otherhost"),
        message("m3", "body 3"),
    )
    .expect("foreign message");
    eventually(WAIT, || {
        let r = imap.cmd_ok("N1 NOOP");
        r.iter().any(|l| l == "* 3 EXISTS").then_some(())
    })
    .expect("the foreign message shows up");
    let fifo_name = fifo.file_name().and_then(|n| n.to_str()).expect("name");
    let reports = s.logs().iter().filter(|l| l.contains(fifo_name)).count();
    assert_eq!(reports, 1, "{:#?}", s.logs());

    // Nothing but regular files under blobs/, three of them, none the
    // outside file's content; and verify ends.
    let blobs = s.blob_files();
    assert_eq!(blobs.len(), 3, "{blobs:?}");
    for b in &blobs {
        let meta = fs::symlink_metadata(b).expect("blob");
        assert!(meta.file_type().is_file(), "{}: {meta:?}", b.display());
        let bytes = fs::read(b).expect("read blob");
        assert!(!String::from_utf8_lossy(&bytes).contains("SECRET-FROM-OUTSIDE"));
    }
    let out = s.cli(&["dedup", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The FIFO is still a FIFO, untouched.
    assert!(
        fs::symlink_metadata(&fifo)
            .expect("fifo")
            .file_type()
            .is_fifo()
    );
}

const OTHER: &str = "o@x.org";

/// The POP3 UIDLs of [`USER`]'s maildrop (derived from the GUIDs).
fn uidls(s: &TestServer) -> Vec<String> {
    let mut pop = pop3_common::logged_in(s);
    let lines = pop.multi("UIDL");
    assert!(lines[0].starts_with("+OK"), "{lines:?}");
    assert_eq!(pop.cmd("QUIT").split(' ').next(), Some("+OK"));
    let mut out: Vec<String> = lines[1..lines.len() - 1]
        .iter()
        .filter_map(|l| l.split(' ').nth(1).map(str::to_string))
        .collect();
    out.sort();
    out
}

/// Whether the server process is alive (not a zombie: TestServer reaps it
/// only when asked).
fn alive(s: &TestServer) -> bool {
    fs::read_to_string(format!("/proc/{}/stat", s.pid()))
        .ok()
        .and_then(|st| st.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

#[test]
fn index_truncated_under_an_open_session_takes_down_nobody() {
    let s = server_with_two_messages();
    s.add_user_with_password(OTHER, PASS);
    s.deliver_to(OTHER, &message("o1", "other's mail"));
    let before = uidls(&s);

    let mut imap = s.imap_login(USER, PASS);
    imap.cmd_ok("S1 SELECT INBOX");
    imap.cmd_ok("F1 FETCH 1:* (ENVELOPE BODYSTRUCTURE)");
    fs::OpenOptions::new()
        .write(true)
        .open(s.home(USER).join("index.sqlite"))
        .expect("open index")
        .set_len(0)
        .expect("truncate");

    // The session's next commands get answers of some kind (or the
    // connection ends): no hang, and above all no dead server.
    imap.send("F2 FETCH 1:* (ENVELOPE BODYSTRUCTURE)");
    while let Ok(Some(r)) = imap.try_read_response() {
        if r.starts_with("F2 ") {
            break;
        }
    }
    assert!(alive(&s), "cove died:\n{}", s.logs().join("\n"));

    // Every user is served; the truncated index was rebuilt with the
    // same messages (the same UIDLs).
    let mut other = s.imap_login(OTHER, PASS);
    assert_eq!(exists(&other.cmd_ok("S1 SELECT INBOX")), Some(1));
    s.deliver_to(OTHER, &message("o2", "more"));
    let mut again = s.imap_login(USER, PASS);
    assert_eq!(exists(&again.cmd_ok("S1 SELECT INBOX")), Some(2));
    assert_eq!(uidls(&s), before);
    assert!(alive(&s));
}

#[test]
fn index_deleted_under_a_running_server_is_rebuilt_before_delivery() {
    let s = server_with_two_messages();
    let before = uidls(&s);
    assert_eq!(before.len(), 2);
    fs::remove_file(s.home(USER).join("index.sqlite")).expect("delete the index");

    // A real user never gets a 5xx for an index problem: here a 250.
    let mut lmtp = s.lmtp_ready();
    let d = lmtp.deliver("s@example.org", &[USER], &message("m3", "body 3"));
    assert!(d.results[0].is("250"), "{:?}", d.results[0]);

    // INBOX is there with every message, GUIDs (POP3 UIDLs) kept.
    let mut imap = s.imap_login(USER, PASS);
    let selected = imap.cmd_ok("S1 SELECT INBOX");
    assert_eq!(exists(&selected), Some(3), "{selected:?}");
    let after = uidls(&s);
    assert_eq!(after.len(), 3);
    assert!(
        before.iter().all(|u| after.contains(u)),
        "{before:?} {after:?}"
    );
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn files_are_private_to_coves_user() {
    use std::os::unix::fs::PermissionsExt;
    let mut s = server_with_two_messages();
    let data = s.data_dir().to_path_buf();
    let home = s.home(USER);
    let mut imap = s.imap_login(USER, PASS);
    imap.cmd_ok("S1 SELECT INBOX");
    imap.cmd_ok("S2 SEARCH BODY \"body\"");
    for dir in [
        data.clone(),
        data.join("blobs"),
        data.join("mail"),
        data.join("tls"),
        home.clone(),
        home.join("Maildir/cur"),
        home.join("Maildir/.Sent"),
    ] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    for file in [
        data.join("cove.db"),
        data.join("tls/key.pem"),
        home.join("index.sqlite"),
        home.join("fts.sqlite"),
    ] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    for message in s.maildir_files(USER, "INBOX") {
        assert_eq!(mode(&message), 0o400, "{}", message.display());
    }

    // A data directory made by an older cove is tightened at start.
    s.stop();
    for (path, m) in [(&data, 0o755), (&data.join("cove.db"), 0o644)] {
        fs::set_permissions(path, fs::Permissions::from_mode(m)).expect("chmod");
    }
    s.restart();
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("cove.db")), 0o600);
    assert!(s.logged("made the data directory readable by cove's user only"));
}

#[test]
fn a_secret_every_user_can_read_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("peer.secret");
    fs::write(&secret, "0123456789abcdef-shared-secret\n").expect("secret");
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let config = dir.path().join("cove.toml");
    fs::write(
        &config,
        cove_tests::config_text(
            &dir.path().join("data"),
            "127.0.0.1:0",
            &format!(
                "[replication]\nlisten = [\"127.0.0.1:0\"]\nsecret_file = {:?}\n\
                 [[replication.peers]]\nname = \"b\"\naddress = \"127.0.0.1:9\"\n",
                secret.display().to_string()
            ),
        ),
    )
    .expect("config");
    let mut cmd = std::process::Command::new(cove_tests::cove_bin());
    cmd.arg("serve").arg("--config").arg(&config);
    let out = cove_tests::run_bounded(cmd, None, WAIT);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("cove: ")
            && last.contains("secret_file")
            && last.contains("readable by every user"),
        "{err}"
    );
}

#[test]
fn keywords_survive_an_index_rebuild() {
    let mut s = server_with_two_messages();
    let mut imap = s.imap_login(USER, PASS);
    imap.cmd_ok("S1 SELECT INBOX");
    imap.cmd_ok("K1 STORE 1 +FLAGS (\\Seen $Forwarded Work)");
    imap.cmd_ok("K2 STORE 2 +FLAGS (Later)");
    imap.cmd_ok("L1 LOGOUT");
    // Where Dovecot and mutt look for them too.
    let map = fs::read_to_string(s.folder(USER, "INBOX").join("dovecot-keywords"))
        .expect("dovecot-keywords");
    assert_eq!(map, "0 $Forwarded\n1 Work\n2 Later\n");

    s.stop();
    let out = s.cli(&["index", "rebuild", USER]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.restart();
    let mut imap = s.imap_login(USER, PASS);
    imap.cmd_ok("S1 SELECT INBOX");
    let lines = imap.cmd_ok("F1 FETCH 1:2 FLAGS");
    let flags_of = |n: u32| -> Vec<&str> {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("* {n} FETCH (FLAGS (")))
            .unwrap_or_else(|| panic!("no FETCH {n} in {lines:?}"));
        let inner = &line[line.find("FLAGS (").expect("FLAGS") + 7..];
        let mut f: Vec<&str> = inner[..inner.find(')').expect(")")]
            .split(' ')
            .filter(|f| *f != "\\Recent")
            .collect();
        f.sort();
        f
    };
    // A rebuild numbers messages of the same second in any order.
    let mut both = vec![flags_of(1), flags_of(2)];
    both.sort();
    assert_eq!(both, [vec!["$Forwarded", "Work", "\\Seen"], vec!["Later"]]);
}

/// Cut to a whole number of pages, the index is not recognisably lost:
/// reads past its end fail for this user's commands (no memory map, so no
/// SIGBUS), until SQLite's report of the damage makes the index check
/// itself and be rebuilt; everyone else is served throughout.
#[test]
fn index_cut_short_is_an_error_for_one_user_not_a_crash() {
    let s = server_with_two_messages();
    s.add_user_with_password(OTHER, PASS);
    let before = uidls(&s);
    let mut imap = s.imap_login(USER, PASS);
    imap.cmd_ok("S1 SELECT INBOX");
    imap.cmd_ok("F1 FETCH 1:* (ENVELOPE BODYSTRUCTURE)");
    fs::OpenOptions::new()
        .write(true)
        .open(s.home(USER).join("index.sqlite"))
        .expect("open index")
        .set_len(4096)
        .expect("truncate");
    for cmd in [
        "F2 FETCH 1:* (ENVELOPE FLAGS)",
        "N1 NOOP",
        "S2 SELECT INBOX",
    ] {
        let tag = cmd.split(' ').next().expect("tag");
        imap.send(cmd);
        while let Ok(Some(r)) = imap.try_read_response() {
            if r.starts_with(&format!("{tag} ")) {
                break;
            }
        }
    }
    assert!(alive(&s), "cove died:\n{}", s.logs().join("\n"));
    s.deliver_to(OTHER, &message("o1", "other's mail"));
    let mut other = s.imap_login(OTHER, PASS);
    assert_eq!(exists(&other.cmd_ok("S1 SELECT INBOX")), Some(1));
    assert!(alive(&s));
    // The first command that reads a lost page fails for this user alone
    // (which command that is depends on what SQLite's page cache and the
    // shared mailbox snapshot still hold: the old session's, or this one's
    // first); the damage it reports makes the index check itself and be
    // rebuilt, so the next one is served.
    let mut again = s.imap_login(USER, PASS);
    let first = again.cmd("S1 SELECT INBOX");
    let served = if first.iter().any(|l| l.starts_with("S1 OK")) {
        first
    } else {
        assert!(
            first.iter().any(|l| l.starts_with("S1 NO [UNAVAILABLE]")),
            "a temporary failure, not another answer: {first:?}"
        );
        again.cmd_ok("S2 SELECT INBOX")
    };
    assert_eq!(exists(&served), Some(2));
    assert_eq!(uidls(&s), before);
}
