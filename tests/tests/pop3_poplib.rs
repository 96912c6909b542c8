//! A real client library end to end: Python's poplib over plain TCP, over
//! STLS (RFC 2595) and over implicit TLS, against the real binary
//! (tests/python/poplib_session.py).

mod pop3_common;

use std::process::Command;
use std::time::Duration;

use cove_tests::{message, run_bounded};
use pop3_common::{PASS, USER, server};

fn run(mode: &str) {
    let s = server("");
    for (subject, body) in [
        ("first", "body one"),
        ("second", "body two\r\n.leading dot"),
        ("third", "body three"),
    ] {
        s.deliver_to(USER, &message(subject, body));
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/poplib_session.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .arg(mode)
        .env("COVE_POP3", s.addr_of("pop3").to_string())
        .env("COVE_POP3S", s.addr_of("pop3s").to_string())
        .env("COVE_CERT", s.data_dir().join("tls/cert.pem"))
        .env("COVE_USER", USER)
        .env("COVE_PASS", PASS);
    let out = run_bounded(cmd, None, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "poplib {mode} session failed:\n{stdout}\n{stderr}\nserver log:\n{}",
        s.logs().join("\n")
    );
    assert!(stdout.contains("poplib ok"), "{stdout}");
}

#[test]
fn python_poplib_plain() {
    run("plain");
}

#[test]
fn python_poplib_stls() {
    run("stls");
}

#[test]
fn python_poplib_implicit_tls() {
    run("tls");
}
