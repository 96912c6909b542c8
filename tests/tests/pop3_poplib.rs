//! A real client library end to end: Python's poplib over plain TCP, over
//! STLS (RFC 2595) and over implicit TLS, against the real binary
//! (tests/python/poplib_session.py).

mod pop3_common;

use cove_tests::message;
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
    s.run_python(
        "poplib_session.py",
        &[mode],
        &[
            ("COVE_POP3", s.addr_of("pop3").to_string()),
            ("COVE_POP3S", s.addr_of("pop3s").to_string()),
            (
                "COVE_CERT",
                s.data_dir().join("tls/cert.pem").display().to_string(),
            ),
            ("COVE_USER", USER.to_string()),
            ("COVE_PASS", PASS.to_string()),
        ],
        "poplib ok",
    );
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
