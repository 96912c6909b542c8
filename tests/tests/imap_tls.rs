//! IMAP over TLS: STARTTLS (RFC 3501 §6.2.1, RFC 2595) and implicit TLS on
//! the imaps port (RFC 8314), with the self-signed certificate cove makes
//! on first start (trusted here as "localhost").

use cove_tests::{
    IMAP_CONFIG, Imap, TestServer, assert_lines, code_value, line_matches, tls_config_trusting,
    tls_connect,
};

const USER: &str = "a@x.org";
const PASS: &str = "pw";

fn server() -> TestServer {
    let s = TestServer::start(IMAP_CONFIG);
    s.add_user_with_password(USER, PASS);
    s.deliver_to(USER, &cove_tests::message("one", "over tls"));
    s
}

fn caps(list: &str) -> Vec<&str> {
    list.split(' ').collect()
}

// RFC 3501 §6.2.1 STARTTLS: tagged OK, then the handshake; no new
// greeting; CAPABILITY afterwards no longer lists STARTTLS (RFC 2595 §3.1:
// the client must discard what it learnt before), STARTTLS again is
// refused; LOGIN works over TLS.
#[test]
fn starttls_then_login() {
    let s = server();
    let config = tls_config_trusting(&s.data_dir().join("tls/cert.pem"));
    let mut c = s.imap();
    let before = code_value(&c.greeting, "CAPABILITY").expect("capabilities in the greeting");
    assert!(caps(&before).contains(&"STARTTLS"), "{before}");
    assert_lines(&c.cmd("t1 STARTTLS"), &["t1 OK Begin TLS negotiation now"]);
    let tls = tls_connect(c.into_inner(), config, "localhost").expect("TLS handshake");
    let mut c = Imap::new(tls);

    let got = c.cmd("t2 CAPABILITY");
    assert_lines(&got, &["* CAPABILITY {any}", "t2 OK CAPABILITY completed"]);
    let after = &got[0]["* CAPABILITY ".len()..];
    let after = caps(after);
    assert!(!after.contains(&"STARTTLS"), "{after:?}");
    assert!(after.contains(&"AUTH=PLAIN"), "{after:?}");
    assert!(!after.contains(&"LOGINDISABLED"), "{after:?}");
    assert_eq!(after.first(), Some(&"IMAP4rev1"));

    assert_lines(&c.cmd("t3 STARTTLS"), &["t3 BAD TLS already active"]);
    let ok = c.cmd(&format!("t4 LOGIN {USER} {PASS}"));
    assert_lines(&ok, &["t4 OK [CAPABILITY {any}] Logged in"]);
    let r = c.cmd_ok("t5 SELECT INBOX");
    assert_eq!(r[2], "* 1 EXISTS", "{r:?}");
    assert_lines(
        &c.cmd("t6 FETCH 1 BODY.PEEK[TEXT]"),
        &[
            "* 1 FETCH (BODY[TEXT] {10}\r\nover tls\r\n)",
            "t6 OK FETCH completed",
        ],
    );
    assert_lines(
        &c.cmd("t7 LOGOUT"),
        &["* BYE Logging out", "t7 OK LOGOUT completed"],
    );
}

// CVE-2011-0411 (command injection across STARTTLS), RFC 3501 §6.2.1:
// anything pipelined in clear text behind STARTTLS is discarded, not run
// inside the TLS session.
#[test]
fn commands_pipelined_after_starttls_are_not_run() {
    let s = server();
    let config = tls_config_trusting(&s.data_dir().join("tls/cert.pem"));
    let mut c = s.imap();
    c.send_raw(format!("t1 STARTTLS\r\nt2 LOGIN {USER} {PASS}\r\nt3 SELECT INBOX\r\n").as_bytes());
    assert_lines(&[c.read_response()], &["t1 OK Begin TLS negotiation now"]);
    let tls = tls_connect(c.into_inner(), config, "localhost").expect("TLS handshake");
    let mut c = Imap::new(tls);
    // Still not authenticated: the injected LOGIN did not run, and no
    // responses to it arrive.
    assert_lines(&c.cmd("t4 SELECT INBOX"), &["t4 BAD Log in first"]);
    assert_lines(&c.cmd("t5 NOOP"), &["t5 OK NOOP completed"]);
}

// RFC 8314 implicit TLS: the greeting comes inside TLS and offers no
// STARTTLS; login and a session work as on the plain port.
#[test]
fn implicit_tls_on_imaps() {
    let s = server();
    let mut c = s.imaps();
    assert!(
        line_matches(
            "* OK [CAPABILITY {any}] cove.test IMAP cove ready",
            &c.greeting
        ),
        "{}",
        c.greeting
    );
    let greeting_caps = code_value(&c.greeting, "CAPABILITY").unwrap();
    let list = caps(&greeting_caps);
    assert!(!list.contains(&"STARTTLS"), "{list:?}");
    assert!(list.contains(&"AUTH=PLAIN"), "{list:?}");
    assert_lines(
        &c.cmd("s1 CAPABILITY"),
        &[
            &format!("* CAPABILITY {greeting_caps}"),
            "s1 OK CAPABILITY completed",
        ],
    );
    assert_lines(&c.cmd("s2 STARTTLS"), &["s2 BAD TLS already active"]);
    c.login(USER, PASS);
    let r = c.cmd_ok("s3 SELECT INBOX");
    assert_eq!(r[2], "* 1 EXISTS", "{r:?}");
    assert_lines(
        &c.cmd("s4 FETCH 1 (BODY.PEEK[TEXT])"),
        &[
            "* 1 FETCH (BODY[TEXT] {10}\r\nover tls\r\n)",
            "s4 OK FETCH completed",
        ],
    );
    assert_lines(
        &c.cmd("s5 LOGOUT"),
        &["* BYE Logging out", "s5 OK LOGOUT completed"],
    );
    assert!(c.closed());
}

// The self-signed certificate names what a client on the machine uses:
// the host name, localhost, 127.0.0.1 (the README's examples) and ::1. A
// client that verifies the certificate against the address it dialled
// accepts it.
#[test]
fn the_self_signed_certificate_covers_the_loopback_addresses() {
    let s = server();
    let config = tls_config_trusting(&s.data_dir().join("tls/cert.pem"));
    for name in ["127.0.0.1", "cove.test", "localhost"] {
        let tcp = cove_tests::tcp_connect(s.addr_of("imaps"));
        let tls = tls_connect(tcp, config.clone(), name)
            .unwrap_or_else(|e| panic!("a client verifying {name}: {e}"));
        let c = Imap::greeted(tls);
        assert!(c.greeting.starts_with("* OK"), "{name}: {}", c.greeting);
    }
    // ::1 is in the certificate too, whether or not this host has IPv6.
    let tcp = cove_tests::tcp_connect(s.addr_of("imaps"));
    assert!(tls_connect(tcp, config, "::1").is_ok(), "::1");
}

// A TLS session waits for its client (between commands, in IDLE) without
// its read buffer once rustls holds nothing undelivered (issue 15); the
// client's next bytes are then read through TLS as before, even when a
// line comes in several records with pauses between them: new mail is
// announced in IDLE, a DONE split in two ends it, and a command split in
// two runs.
#[test]
fn idle_and_commands_over_tls_after_quiet_waits() {
    let s = server();
    let mut c = s.imaps();
    c.login(USER, PASS);
    let r = c.cmd_ok("s1 SELECT INBOX");
    assert_eq!(r[2], "* 1 EXISTS", "{r:?}");
    c.send("s2 IDLE");
    assert_lines(&[c.read_response()], &["+ idling"]);
    s.deliver_to(USER, &cove_tests::message("two", "while idle"));
    // Both are \Recent to this session (the first one since SELECT).
    assert_lines(
        &[c.read_response(), c.read_response()],
        &["* 2 EXISTS", "* 2 RECENT"],
    );
    let pause = std::time::Duration::from_millis(300);
    c.send_raw(b"DO");
    std::thread::sleep(pause);
    c.send_raw(b"NE\r\n");
    assert_lines(&[c.read_response()], &["s2 OK IDLE terminated"]);
    std::thread::sleep(pause);
    c.send_raw(b"s3 FETCH 2 (BODY");
    std::thread::sleep(pause);
    c.send_raw(b".PEEK[TEXT])\r\n");
    assert_lines(
        &c.read_until_tagged("s3"),
        &[
            "* 2 FETCH (BODY[TEXT] {12}\r\nwhile idle\r\n)",
            "s3 OK FETCH completed",
        ],
    );
}
