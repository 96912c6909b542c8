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
