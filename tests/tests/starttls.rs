//! STARTTLS (RFC 3207) on LMTP with the self-signed certificate cove makes
//! on first start.

use cove_tests::{
    Client, TestServer, assert_reply, header, message, tls_config_trusting, tls_connect,
};

#[test]
fn deliver_over_starttls() {
    let server = TestServer::start("");
    server.add_users(&["a@x.org"]);
    let config = tls_config_trusting(&server.data_dir().join("tls/cert.pem"));

    let mut c = server.lmtp();
    let caps = c.lhlo("client.test");
    assert_reply(&caps, "250");
    assert!(caps.lines.iter().any(|l| &l[4..] == "STARTTLS"), "{caps:?}");
    assert_reply(&c.cmd("STARTTLS"), "220 2.0.0");

    let tls = tls_connect(c.into_inner(), config, "localhost").expect("TLS handshake");
    let mut c = Client::new(tls);
    // LHLO again; STARTTLS is no longer offered.
    assert_reply(&c.cmd("MAIL FROM:<s@example.org>"), "503 5.5.1");
    let caps = c.lhlo("client.test");
    assert_reply(&caps, "250");
    assert!(
        caps.lines.iter().all(|l| !l.contains("STARTTLS")),
        "{caps:?}"
    );
    assert_reply(&c.cmd("STARTTLS"), "503 5.5.1");
    let d = c.deliver("s@example.org", &["a@x.org"], &message("tls", "secret"));
    assert_reply(&d.results[0], "250 2.0.0 <a@x.org> Saved as UID 1");
    assert_reply(&c.cmd("QUIT"), "221 2.0.0");

    let files = server.maildir_files("a@x.org", "INBOX");
    assert_eq!(files.len(), 1);
    let bytes = std::fs::read(&files[0]).unwrap();
    assert_eq!(
        header(&bytes, "Message-ID").as_deref(),
        Some("<tls@cove.test>")
    );
}

#[test]
fn commands_pipelined_after_starttls_are_not_run() {
    let server = TestServer::start("");
    server.add_users(&["a@x.org"]);
    let config = tls_config_trusting(&server.data_dir().join("tls/cert.pem"));

    let mut c = server.lmtp_ready();
    // Injected in clear text behind STARTTLS, in the same packet
    // (CVE-2011-0411): none of it may run after the handshake.
    c.send_raw(b"STARTTLS\r\nLHLO injected\r\nHELP\r\nMAIL FROM:<evil@example.org>\r\n")
        .unwrap();
    assert_reply(&c.read_reply(), "220 2.0.0");
    let tls = tls_connect(c.into_inner(), config, "localhost").expect("TLS handshake");
    let mut c = Client::new(tls);
    // The first reply after the handshake answers this fresh command: no
    // LHLO or MAIL carried over, no 214 for HELP.
    assert_reply(&c.cmd("RCPT TO:<a@x.org>"), "503 5.5.1");
    assert_reply(&c.cmd("MAIL FROM:<s@example.org>"), "503 5.5.1");
    let caps = c.lhlo("client.test");
    assert_reply(&caps, "250");
    assert_reply(&c.cmd("NOOP"), "250 2.0.0");
    assert_reply(&c.cmd("QUIT"), "221 2.0.0");
}

#[test]
fn wrong_name_is_refused_by_the_client() {
    // The self-signed certificate names the configured host and localhost,
    // nothing else.
    let server = TestServer::start("");
    let config = tls_config_trusting(&server.data_dir().join("tls/cert.pem"));
    for (name, ok) in [
        ("cove.test", true),
        ("localhost", true),
        ("elsewhere.test", false),
    ] {
        let mut c = server.lmtp_ready();
        assert_reply(&c.cmd("STARTTLS"), "220 2.0.0");
        let r = tls_connect(c.into_inner(), config.clone(), name);
        assert_eq!(r.is_ok(), ok, "{name}: {:?}", r.err());
    }
}
