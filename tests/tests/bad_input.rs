//! DESIGN.md invariant 4: bad input gets a clear 5xx with an enhanced status
//! code, limits are enforced, the server keeps serving, and stored mail is
//! never harmed.

use std::collections::BTreeSet;
use std::fs;
use std::time::Duration;

use cove_tests::{
    Client, TestServer, assert_reply, dot_stuff, eventually, header, mailbox_contents, message,
};

const LIMITS: &str = "max_message_size = 10000\nmax_errors = 5\n";

/// A good delivery to a@x.org; returns its Message-ID.
fn good(c: &mut Client<std::net::TcpStream>, id: &str) -> String {
    let d = c.deliver("s@example.org", &["a@x.org"], &message(id, "good"));
    assert_eq!(d.results.len(), 1, "{d:?}");
    assert_reply(&d.results[0], "250 2.0.0 <a@x.org> Saved as UID");
    format!("<{id}@cove.test>")
}

#[test]
fn bad_commands_get_errors_and_the_session_goes_on() {
    let mut server = TestServer::start(LIMITS);
    server.add_users(&["a@x.org"]);
    let mut kept = BTreeSet::new();

    // Sequence errors.
    let mut c = server.lmtp();
    assert_reply(&c.cmd("MAIL FROM:<s@example.org>"), "503 5.5.1");
    assert_reply(&c.cmd("HELO client.test"), "500 5.5.1");
    assert_reply(&c.cmd("EHLO client.test"), "500 5.5.1");
    assert_reply(&c.lhlo("client.test"), "250");
    assert_reply(&c.cmd("RCPT TO:<a@x.org>"), "503 5.5.1");
    assert_reply(&c.cmd("DATA"), "503 5.5.1");
    assert_reply(&c.cmd("MAIL FROM:<s@example.org>"), "250 2.1.0");
    assert_reply(&c.cmd("MAIL FROM:<s@example.org>"), "503 5.5.1");
    assert_reply(&c.cmd("DATA"), "503 5.5.1 No valid recipients");
    assert_reply(&c.cmd("RCPT TO:<nobody@x.org>"), "550 5.1.1");
    assert_reply(&c.cmd("DATA"), "503 5.5.1 No valid recipients");
    assert_reply(&c.cmd("RSET"), "250 2.0.0");

    // Garbage.
    assert_reply(&c.cmd("FROBNICATE"), "500 5.5.2");
    assert_reply(&c.cmd("RCPT TO:not-an-address"), "501");
    assert_reply(
        &c.cmd(&format!("NOOP {}", "x".repeat(5000))),
        "500 5.5.2 Line too long",
    );
    assert_reply(&c.cmd("NOOP"), "250 2.0.0");
    c.send_raw(b"\xff\xfe\x80 MAIL \x01\x02\r\n").unwrap();
    let r = c.read_reply();
    assert_eq!(r.code / 100, 5, "{r:?}");
    assert_reply(&r, "501 5.5.4");
    c.send_raw(b"NOOP \x07bell\r\n").unwrap();
    assert_reply(&c.read_reply(), "501 5.5.4");
    // Still usable after all that.
    assert_reply(&c.cmd("NOOP"), "250 2.0.0");
    kept.insert(good(&mut c, "good-1"));

    // Too big by SIZE=, and too big in fact.
    assert_reply(&c.cmd("MAIL FROM:<s@example.org> SIZE=999999"), "552 5.3.4");
    let big = message("too-big", &"y".repeat(20_000));
    let d = c.deliver("s@example.org", &["a@x.org", "a+Sent@x.org"], &big);
    assert_reply(d.data.as_ref().unwrap(), "354");
    assert_eq!(d.results.len(), 2);
    for r in &d.results {
        assert_reply(r, "552 5.3.4");
    }
    kept.insert(good(&mut c, "good-2"));

    // Pipelining: one write, replies in order.
    c.send_raw(
        b"MAIL FROM:<s@example.org>\r\nRCPT TO:<a@x.org>\r\nRCPT TO:<nobody@x.org>\r\nDATA\r\n",
    )
    .unwrap();
    assert_reply(&c.read_reply(), "250 2.1.0");
    assert_reply(&c.read_reply(), "250 2.1.5");
    assert_reply(&c.read_reply(), "550 5.1.1");
    assert_reply(&c.read_reply(), "354");
    let mut rest = dot_stuff(&message("piped", ".leading dot\r\n..two"));
    rest.extend_from_slice(b"NOOP\r\nQUIT\r\n");
    c.send_raw(&rest).unwrap();
    assert_reply(&c.read_reply(), "250 2.0.0 <a@x.org> Saved as UID");
    assert_reply(&c.read_reply(), "250 2.0.0");
    assert_reply(&c.read_reply(), "221 2.0.0");
    assert!(c.is_closed());
    kept.insert("<piped@cove.test>".to_string());

    // Too many errors in a row: 421, then the connection is closed.
    let mut c = server.lmtp_ready();
    for _ in 0..4 {
        assert_reply(&c.cmd("BOGUS"), "500 5.5.2");
    }
    assert_reply(&c.cmd("BOGUS"), "500 5.5.2");
    assert_reply(&c.read_reply(), "421 4.7.0");
    assert!(c.is_closed(), "connection still open after 421");

    // A good command resets the count.
    let mut c = server.lmtp_ready();
    for _ in 0..3 {
        for _ in 0..4 {
            assert_reply(&c.cmd("BOGUS"), "500 5.5.2");
        }
        assert_reply(&c.cmd("NOOP"), "250 2.0.0");
    }
    kept.insert(good(&mut c, "good-3"));
    assert_reply(&c.cmd("QUIT"), "221 2.0.0");

    server.stop();
    assert!(server.logged("lmtp command line too long"));
    assert!(server.logged("too many bad lmtp commands"));

    // Only the good messages are stored, intact.
    let store = server.open_store();
    let mut found = BTreeSet::new();
    for mailbox in ["INBOX", "Sent"] {
        for (m, path) in mailbox_contents(&store, "a@x.org", mailbox).1 {
            let bytes = fs::read(&path).unwrap();
            store.blobs().verify(&m.content_id).unwrap();
            found.insert(header(&bytes, "Message-ID").unwrap());
            if header(&bytes, "Message-ID").as_deref() == Some("<piped@cove.test>") {
                let body = String::from_utf8_lossy(&bytes);
                assert!(
                    body.ends_with("\r\n\r\n.leading dot\r\n..two\r\n"),
                    "{body:?}"
                );
            }
        }
    }
    assert_eq!(found, kept);
    let blobs = server.blob_files().len();
    assert_eq!(blobs, kept.len(), "a blob beyond the good messages");
}

#[test]
fn client_vanishing_mid_data_delivers_nothing() {
    let server = TestServer::start("");
    server.add_users(&["a@x.org"]);

    for (n, size) in [(0, 1_000usize), (1, 600_000)] {
        let mut c = server.lmtp_ready();
        assert_reply(&c.cmd("MAIL FROM:<s@example.org>"), "250 2.1.0");
        assert_reply(&c.cmd("RCPT TO:<a@x.org>"), "250 2.1.5");
        assert_reply(&c.cmd("DATA"), "354");
        // Half a message (bigger than the server's in-memory buffer in the
        // second round, so a temporary blob file exists), then gone.
        let partial = message(&format!("vanish-{n}"), &"z".repeat(size));
        c.send_raw(&partial.as_bytes()[..partial.len() - 10])
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        drop(c);

        let cleaned = eventually(Duration::from_secs(10), || {
            (server.blob_tmp_files().is_empty()
                && server.logged("client vanished during DATA")
                && server.maildir_files("a@x.org", "INBOX").is_empty())
            .then_some(())
        });
        assert!(
            cleaned.is_some(),
            "after a vanished client: tmp {:?}, INBOX {:?}",
            server.blob_tmp_files(),
            server.maildir_files("a@x.org", "INBOX")
        );
        assert!(server.blob_files().is_empty(), "{:?}", server.blob_files());
    }

    // The server keeps serving.
    let mut c = server.lmtp_ready();
    let d = c.deliver("s@example.org", &["a@x.org"], &message("after", "x"));
    assert_reply(&d.results[0], "250 2.0.0 <a@x.org> Saved as UID 1");
    assert_eq!(server.maildir_files("a@x.org", "INBOX").len(), 1);
}

#[test]
fn recipient_and_connection_limits() {
    let server = TestServer::start("max_recipients = 3\nmax_connections_per_ip = 2\n");
    server.add_users(&["a@x.org", "b@x.org", "c@x.org", "d@x.org"]);

    // The fourth recipient is refused with 452 4.5.3; three get the mail.
    let mut c = server.lmtp_ready();
    let d = c.deliver(
        "s@example.org",
        &["a@x.org", "b@x.org", "c@x.org", "d@x.org"],
        &message("many", "x"),
    );
    assert_reply(&d.rcpts[2], "250 2.1.5");
    assert_reply(&d.rcpts[3], "452 4.5.3");
    assert_eq!(d.results.len(), 3);
    for r in &d.results {
        assert_reply(r, "250 2.0.0");
    }
    assert!(server.maildir_files("d@x.org", "INBOX").is_empty());
    assert_reply(&c.cmd("QUIT"), "221 2.0.0");
    assert!(c.is_closed());

    // A third connection from one address is turned away; once one closes,
    // a new one is welcome again.
    // (The server notices closed connections asynchronously.)
    let ready = || {
        eventually(Duration::from_secs(10), || {
            let mut c = Client::connect(server.lmtp_addr());
            c.read_reply().is("220").then_some(c)
        })
        .expect("a connection slot")
    };
    let first = ready();
    let second = ready();
    let mut third = Client::connect(server.lmtp_addr());
    assert_reply(&third.read_reply(), "421 4.7.0");
    assert!(third.is_closed());
    drop(second);
    let again = eventually(Duration::from_secs(10), || {
        let mut c = Client::connect(server.lmtp_addr());
        c.read_reply().is("220").then_some(c)
    });
    assert!(again.is_some(), "no connection accepted after one closed");
    drop((first, again));
}

#[test]
fn idle_and_stalled_clients_are_disconnected() {
    let server = TestServer::start("timeout_secs = 1\n");
    server.add_users(&["d@x.org"]);

    // A silent client is told so and disconnected.
    let mut idle = server.lmtp_ready();
    std::thread::sleep(Duration::from_millis(1500));
    assert_reply(&idle.read_reply(), "421 4.4.2");
    assert!(idle.is_closed());
    // So is one that stalls in the middle of DATA; nothing is delivered.
    let mut stall = server.lmtp_ready();
    assert_reply(&stall.cmd("MAIL FROM:<s@example.org>"), "250 2.1.0");
    assert_reply(&stall.cmd("RCPT TO:<d@x.org>"), "250 2.1.5");
    assert_reply(&stall.cmd("DATA"), "354");
    stall.send_raw(b"Subject: stalled\r\n\r\nhalf a").unwrap();
    assert!(
        stall.is_closed(),
        "a client stalled in DATA is not disconnected"
    );
    assert!(server.maildir_files("d@x.org", "INBOX").is_empty());
    assert!(
        eventually(Duration::from_secs(5), || server
            .blob_tmp_files()
            .is_empty()
            .then_some(()))
        .is_some()
    );
}

#[test]
fn bare_lf_dot_does_not_end_data() {
    // SMTP smuggling: `LF . LF` (or `LF . CRLF`) inside the data must not
    // end it, so commands hidden behind it are never run.
    let mut server = TestServer::start("");
    server.add_users(&["a@x.org", "victim@x.org"]);
    let mut c = server.lmtp_ready();
    assert_reply(&c.cmd("MAIL FROM:<s@example.org>"), "250 2.1.0");
    assert_reply(&c.cmd("RCPT TO:<a@x.org>"), "250 2.1.5");
    assert_reply(&c.cmd("DATA"), "354");
    c.send_raw(
        b"Subject: outer\r\n\r\nbefore\n.\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@x.org>\r\nDATA\r\n\
Subject: smuggled\r\n\r\nx\r\n.\n\r\nafter\r\n.\r\n",
    )
    .unwrap();
    assert_reply(&c.read_reply(), "250 2.0.0 <a@x.org> Saved as UID 1");
    assert_reply(&c.cmd("NOOP"), "250 2.0.0");
    assert_reply(&c.cmd("QUIT"), "221 2.0.0");
    server.stop();
    assert!(server.maildir_files("victim@x.org", "INBOX").is_empty());
    let files = server.maildir_files("a@x.org", "INBOX");
    assert_eq!(files.len(), 1);
    let stored = String::from_utf8(fs::read(&files[0]).unwrap()).unwrap();
    assert!(
        stored.contains("\r\nRCPT TO:<victim@x.org>\r\n"),
        "{stored:?}"
    );
    assert!(stored.ends_with("\r\nafter\r\n"), "{stored:?}");
    // Bare LFs were stored as CRLF.
    assert!(!stored.replace("\r\n", "").contains('\n'), "{stored:?}");
}
