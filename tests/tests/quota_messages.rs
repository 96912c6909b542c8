//! RFC 9208 §5.2 MESSAGE: a per-user message limit (`cove user add
//! --messages`, else `[server] default_message_quota`), enforced at LMTP
//! delivery (552 5.2.2, like the byte quota), APPEND and COPY (NO
//! [OVERQUOTA]); MOVE within the one root changes no usage. GETQUOTA and
//! GETQUOTAROOT list MESSAGE only when a limit is set, STORAGE only when a
//! byte limit is.
//!
//! Transcripts: each client line and the exact server lines.

use cove_tests::{IMAP_CONFIG, TestServer, assert_lines, message};

const PASS: &str = "pw";

fn add_user(s: &TestServer, user: &str, args: &[&str]) {
    let mut cli = vec!["user", "add", user, "--password-stdin"];
    cli.extend_from_slice(args);
    let out = s.cli_stdin(&cli, Some(format!("{PASS}\n").as_bytes()));
    assert!(out.status.success(), "{out:?}");
}

fn mail(n: usize) -> Vec<u8> {
    format!("From: a@example.org\r\nSubject: m{n}\r\n\r\nbody {n}\r\n").into_bytes()
}

#[test]
fn message_limit_over_imap() {
    let s = TestServer::start(IMAP_CONFIG);
    add_user(&s, "m@x.org", &["--messages", "2"]);
    let mut c = s.imap_login("m@x.org", PASS);
    let caps = c.cmd_ok("m0 CAPABILITY");
    assert!(caps[0].contains(" QUOTA=RES-MESSAGE"), "{caps:?}");
    // No byte limit: MESSAGE alone.
    assert_lines(
        &c.cmd("m1 GETQUOTAROOT INBOX"),
        &[
            "* QUOTAROOT INBOX \"\"",
            "* QUOTA \"\" (MESSAGE 0 2)",
            "m1 OK GETQUOTAROOT completed",
        ],
    );
    assert_lines(
        &c.append("m2", "INBOX", "", &mail(1)),
        &["m2 OK [APPENDUID {num} 1] APPEND completed"],
    );
    assert_lines(
        &c.append("m3", "INBOX", "", &mail(2)),
        &["m3 OK [APPENDUID {num} 2] APPEND completed"],
    );
    // RFC 9208 §4.3: the third is refused.
    assert_lines(
        &c.append("m4", "INBOX", "", &mail(3)),
        &["m4 NO [OVERQUOTA] Quota exceeded"],
    );
    assert_lines(
        &c.cmd("m5 GETQUOTA \"\""),
        &["* QUOTA \"\" (MESSAGE 2 2)", "m5 OK GETQUOTA completed"],
    );
    c.cmd_ok("m6 SELECT INBOX");
    assert_lines(
        &c.cmd("m7 COPY 1 Archive"),
        &["m7 NO [OVERQUOTA] Quota exceeded"],
    );
    // A MOVE keeps the count: allowed at the limit.
    assert_lines(
        &c.cmd("m8 MOVE 1 Archive"),
        &[
            "* OK [COPYUID {num} 1 1] Moved",
            "* 1 EXPUNGE",
            "m8 OK MOVE completed",
        ],
    );
    // Room again once one is expunged.
    c.cmd_ok("m9 STORE 1 +FLAGS.SILENT (\\Deleted)");
    c.cmd_ok("m10 EXPUNGE");
    assert_lines(
        &c.cmd("m11 GETQUOTA \"\""),
        &["* QUOTA \"\" (MESSAGE 1 2)", "m11 OK GETQUOTA completed"],
    );
    c.cmd_ok("m13 SELECT Archive");
    assert_lines(
        &c.cmd("m14 COPY 1 INBOX"),
        &["m14 OK [COPYUID {num} 1 3] COPY completed"],
    );
    assert_lines(
        &c.cmd("m15 COPY 1 INBOX"),
        &["m15 NO [OVERQUOTA] Quota exceeded"],
    );
}

#[test]
fn both_limits_are_listed_and_lmtp_refuses_like_the_byte_quota() {
    let s = TestServer::start(IMAP_CONFIG);
    add_user(&s, "b@x.org", &["--quota", "1048576", "--messages", "1"]);
    add_user(&s, "free@x.org", &[]);
    let mut lmtp = s.lmtp_ready();
    let d = lmtp.deliver(
        "s@example.org",
        &["b@x.org", "free@x.org"],
        &message("first", "one"),
    );
    assert!(d.results.iter().all(|r| r.is("250 2.0.0")), "{d:?}");
    let d = lmtp.deliver(
        "s@example.org",
        &["b@x.org", "free@x.org"],
        &message("second", "two"),
    );
    assert_eq!(d.results.len(), 2, "{:?}", d.results);
    assert!(d.results[0].is("552 5.2.2"), "{:?}", d.results);
    assert!(d.results[1].is("250 2.0.0"), "{:?}", d.results);
    assert_eq!(s.maildir_files("b@x.org", "INBOX").len(), 1);
    let mut c = s.imap_login("b@x.org", PASS);
    assert_lines(
        &c.cmd("b1 GETQUOTA \"\""),
        &[
            "* QUOTA \"\" (STORAGE 0 1024 MESSAGE 1 1)",
            "b1 OK GETQUOTA completed",
        ],
    );
    // A user with no limit has no root.
    let mut f = s.imap_login("free@x.org", PASS);
    assert_lines(
        &f.cmd("f1 GETQUOTAROOT INBOX"),
        &["* QUOTAROOT INBOX", "f1 OK GETQUOTAROOT completed"],
    );
}

/// `[server] default_message_quota` for users without their own limit; a
/// user's own `--messages 0` lifts it.
#[test]
fn the_default_applies_unless_the_user_has_a_limit() {
    let s = TestServer::start(&format!(
        "{IMAP_CONFIG}[server]\ndefault_message_quota = 5\n"
    ));
    add_user(&s, "d@x.org", &[]);
    add_user(&s, "u@x.org", &["--messages", "0"]);
    let list = s.cli_ok(&["user", "list"]);
    assert!(
        list.contains("d@x.org\tpassword\tquota=-\tmessages=5"),
        "{list}"
    );
    assert!(
        list.contains("u@x.org\tpassword\tquota=-\tmessages=-"),
        "{list}"
    );
    let mut d = s.imap_login("d@x.org", PASS);
    assert_lines(
        &d.cmd("d1 GETQUOTA \"\""),
        &["* QUOTA \"\" (MESSAGE 0 5)", "d1 OK GETQUOTA completed"],
    );
    let mut u = s.imap_login("u@x.org", PASS);
    assert_lines(
        &u.cmd("u1 GETQUOTA \"\""),
        &["u1 NO [NONEXISTENT] No such quota root"],
    );
}
