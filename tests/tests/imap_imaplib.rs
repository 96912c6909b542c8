//! A real client library through a whole session: Python's imaplib logs in,
//! lists, selects, fetches, searches, stores, copies, moves, expunges and
//! appends against the real binary (tests/python/imaplib_session.py).

use std::process::Command;
use std::time::Duration;

use cove_tests::{TestServer, message, run_bounded};

#[test]
fn python_imaplib_session() {
    let server =
        TestServer::start("[imap]\nlisten = [\"127.0.0.1:0\"]\nauth_failure_delay_ms = 10\n");
    let out = server.cli_stdin(
        &["user", "add", "alice@x.org", "--password-stdin"],
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
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/imaplib_session.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .env("COVE_IMAP", server.addr_of("imap").to_string())
        .env("COVE_USER", "alice@x.org")
        .env("COVE_PASS", "s3cret");
    let out = run_bounded(cmd, None, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "imaplib session failed:\n{stdout}\n{stderr}\nserver log:\n{}",
        server.logs().join("\n")
    );
    assert!(stdout.contains("imaplib ok"), "{stdout}");
}
