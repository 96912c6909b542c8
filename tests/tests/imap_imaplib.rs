//! A real client library through a whole session: Python's imaplib logs in,
//! lists, selects, fetches, searches, stores, copies, moves, expunges and
//! appends against the real binary (tests/python/imaplib_session.py); and
//! resynchronises with CONDSTORE and QRESYNC (imaplib_condstore.py).

use cove_tests::{IMAP_CONFIG, TestServer, message};

#[test]
fn python_imaplib_session() {
    run_script("imaplib_session.py", "imaplib ok");
}

// RFC 7162: ENABLE QRESYNC, HIGHESTMODSEQ, CHANGEDSINCE, UNCHANGEDSINCE
// with [MODIFIED], VANISHED, SELECT (QRESYNC ...). A scripted imaplib
// session, not a sync client: neither sync client Debian ships uses RFC
// 7162 (checked 2026-12-07): mbsync 1.4.4 (isync 1.4.4-5) has no
// CONDSTORE, QRESYNC, CHANGEDSINCE or MODSEQ in its binary and fetches
// every flag at each sync (tests/interop/mbsync.rs), and offlineimap3
// (0.0~git20211018, not on PyPI) has none of them in its sources.
#[test]
fn python_imaplib_condstore() {
    run_script("imaplib_condstore.py", "imaplib condstore ok");
}

// RFC 4978: COMPRESS DEFLATE over plain TCP and over TLS; a second one is
// NO [COMPRESSIONACTIVE].
#[test]
fn python_imaplib_compress() {
    run_script("imaplib_compress.py", "imaplib compress ok");
}

// RFC 9208: GETQUOTAROOT, GETQUOTA, SETQUOTA refused; RFC 4731 ESEARCH.
#[test]
fn python_imaplib_quota_and_esearch() {
    run_script("imaplib_quota_esearch.py", "imaplib quota esearch ok");
}

/// Run a script of tests/python against a server whose alice@x.org (quota
/// 1 MiB) has three messages in INBOX; it must print `done`.
fn run_script(name: &str, done: &str) {
    let server = TestServer::start(IMAP_CONFIG);
    let out = server.cli_stdin(
        &[
            "user",
            "add",
            "alice@x.org",
            "--quota",
            "1048576",
            "--password-stdin",
        ],
        Some(b"s3cret\n"),
    );
    assert!(
        out.status.success(),
        "user add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lmtp = server.lmtp_ready();
    for subject in ["first", "second", "third"] {
        let d = lmtp.deliver(
            "s@example.org",
            &["alice@x.org"],
            &message(subject, &format!("body of {subject}")),
        );
        assert!(d.results[0].is("250"), "{:?}", d.results);
    }
    server.run_python(
        name,
        &[],
        &[
            ("COVE_IMAP", server.addr_of("imap").to_string()),
            ("COVE_IMAPS", server.addr_of("imaps").to_string()),
            ("COVE_USER", "alice@x.org".to_string()),
            ("COVE_PASS", "s3cret".to_string()),
        ],
        done,
    );
}
