//! RFC 9208 QUOTA on the quota cove enforces: one root, "", over all of a
//! user's mailboxes, the STORAGE resource in units of 1024 octets; APPEND
//! and COPY past it are NO [OVERQUOTA]; SETQUOTA is the operator's; STATUS
//! DELETED and DELETED-STORAGE.
//!
//! Transcripts: each client line and the exact server lines (the RFC's
//! §4.1.2 example shape: QUOTAROOT, then QUOTA for each root).

use cove_tests::{IMAP_CONFIG, TestServer, assert_lines};

const PASS: &str = "pw";

/// A server with `user`, whose quota is `quota` bytes (0: none).
fn server_with(user: &str, quota: u64) -> TestServer {
    let s = TestServer::start(IMAP_CONFIG);
    let quota = quota.to_string();
    let out = s.cli_stdin(
        &["user", "add", user, "--quota", &quota, "--password-stdin"],
        Some(format!("{PASS}\n").as_bytes()),
    );
    assert!(out.status.success(), "{out:?}");
    s
}

fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: a@example.org\r\nSubject: s\r\n\r\n".to_vec();
    m.resize(size - 2, b'x');
    m.extend_from_slice(b"\r\n");
    m
}

#[test]
fn quota_root_usage_and_overquota() {
    let s = server_with("q@x.org", 4096);
    let mut c = s.imap_login("q@x.org", PASS);
    let caps = c.cmd_ok("q0 CAPABILITY");
    assert!(
        caps[0].contains(" QUOTA ") && caps[0].contains(" QUOTA=RES-STORAGE"),
        "{caps:?}"
    );
    assert_lines(
        &c.cmd("q1 GETQUOTAROOT INBOX"),
        &[
            "* QUOTAROOT INBOX \"\"",
            "* QUOTA \"\" (STORAGE 0 4)",
            "q1 OK GETQUOTAROOT completed",
        ],
    );
    let r = c.append("q2", "INBOX", "", &message(3000));
    assert_lines(&r, &["q2 OK [APPENDUID {num} 1] APPEND completed"]);
    assert_lines(
        &c.cmd("q3 GETQUOTA \"\""),
        &["* QUOTA \"\" (STORAGE 2 4)", "q3 OK GETQUOTA completed"],
    );
    // RFC 9208 §4.3: past the limit, APPEND and COPY are NO [OVERQUOTA].
    let r = c.append("q4", "INBOX", "", &message(2000));
    assert_lines(&r, &["q4 NO [OVERQUOTA] Quota exceeded"]);
    c.cmd_ok("q5 SELECT INBOX");
    assert_lines(
        &c.cmd("q6 COPY 1 Archive"),
        &["q6 NO [OVERQUOTA] Quota exceeded"],
    );
    assert_lines(
        &c.cmd("q7 GETQUOTA other"),
        &["q7 NO [NONEXISTENT] No such quota root"],
    );
    assert_lines(
        &c.cmd("q8 SETQUOTA \"\" (STORAGE 512)"),
        &["q8 NO [CANNOT] Quotas are set by the operator"],
    );
    assert_lines(
        &c.cmd("q9 GETQUOTAROOT Nowhere"),
        &["q9 NO [NONEXISTENT] mailbox Nowhere does not exist"],
    );
}

// No quota, no root (RFC 9208 §4.1.2: the QUOTAROOT response lists none).
#[test]
fn a_user_without_a_quota_has_no_root() {
    let s = server_with("n@x.org", 0);
    let mut c = s.imap_login("n@x.org", PASS);
    assert_lines(
        &c.cmd("n1 GETQUOTAROOT INBOX"),
        &["* QUOTAROOT INBOX", "n1 OK GETQUOTAROOT completed"],
    );
    assert_lines(
        &c.cmd("n2 GETQUOTA \"\""),
        &["n2 NO [NONEXISTENT] No such quota root"],
    );
}

// RFC 9208 §4.2: STATUS DELETED and DELETED-STORAGE, what EXPUNGE frees;
// RFC 8438 STATUS=SIZE: the mailbox's size in octets.
#[test]
fn status_deleted_and_deleted_storage() {
    let s = server_with("d@x.org", 0);
    let mut c = s.imap_login("d@x.org", PASS);
    for tag in ["a1", "a2", "a3"] {
        c.append(tag, "INBOX", "", &message(3000));
    }
    c.cmd_ok("d0 SELECT INBOX");
    c.cmd_ok("d1 STORE 1:2 +FLAGS.SILENT (\\Deleted)");
    assert_lines(
        &c.cmd("d2 STATUS INBOX (MESSAGES DELETED DELETED-STORAGE)"),
        &[
            "* STATUS INBOX (MESSAGES 3 DELETED 2 DELETED-STORAGE 5)",
            "d2 OK STATUS completed",
        ],
    );
    let caps = c.cmd_ok("d3 CAPABILITY");
    assert!(caps[0].contains(" STATUS=SIZE"), "{caps:?}");
    assert_lines(
        &c.cmd("d4 STATUS INBOX (SIZE)"),
        &["* STATUS INBOX (SIZE 9000)", "d4 OK STATUS completed"],
    );
}

// RFC 3502 MULTIAPPEND, in the shape of the RFC's example (A003): two
// messages in one APPEND, one APPENDUID with both UIDs; and all or none:
// when the second is over quota, the first is not kept either. (Before,
// everything after the first message was silently dropped.)
#[test]
fn multiappend_appends_all_or_none() {
    let s = server_with("m@x.org", 4096);
    let mut c = s.imap_login("m@x.org", PASS);
    let caps = c.cmd_ok("m0 CAPABILITY");
    assert!(caps[0].contains(" MULTIAPPEND"), "{caps:?}");
    let (one, two) = (message(1000), message(1200));
    let mut line = format!("A003 APPEND Archive (\\Seen) {{{}+}}\r\n", one.len()).into_bytes();
    line.extend_from_slice(&one);
    line.extend_from_slice(
        format!(
            " (\\Seen) \" 7-Feb-1994 22:43:04 -0800\" {{{}+}}\r\n",
            two.len()
        )
        .as_bytes(),
    );
    line.extend_from_slice(&two);
    line.extend_from_slice(b"\r\n");
    c.send_raw(&line);
    assert_lines(
        &c.read_until_tagged("A003"),
        &["A003 OK [APPENDUID {num} 1:2] APPEND completed"],
    );
    c.cmd_ok("m1 SELECT Archive");
    assert_lines(
        &c.cmd("m2 FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE)"),
        &[
            "* 1 FETCH (FLAGS (\\Seen \\Recent) INTERNALDATE \"{any}\" RFC822.SIZE 1000)",
            "* 2 FETCH (FLAGS (\\Seen \\Recent) INTERNALDATE \"08-Feb-1994 06:43:04 +0000\" RFC822.SIZE 1200)",
            "m2 OK FETCH completed",
        ],
    );
    // 2,200 of 4,096 bytes used: 1,000 more fit, 2,000 more do not.
    let (three, four) = (message(1000), message(2000));
    let mut line = format!("A004 APPEND Trash {{{}+}}\r\n", three.len()).into_bytes();
    line.extend_from_slice(&three);
    line.extend_from_slice(format!(" {{{}+}}\r\n", four.len()).as_bytes());
    line.extend_from_slice(&four);
    line.extend_from_slice(b"\r\n");
    c.send_raw(&line);
    assert_lines(
        &c.read_until_tagged("A004"),
        &["A004 NO [OVERQUOTA] Quota exceeded"],
    );
    assert_lines(
        &c.cmd("m3 STATUS Trash (MESSAGES)"),
        &["* STATUS Trash (MESSAGES 0)", "m3 OK STATUS completed"],
    );
}
