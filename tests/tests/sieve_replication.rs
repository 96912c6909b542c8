//! Sieve scripts and vacation tracking replicate with the mailbox: a
//! script put over ManageSieve on one node runs on the other, and a pair
//! answers one sender's vacation once, whichever node takes the mail.

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use cove_tests::proxy::Proxy;
use cove_tests::smtp_sink::SmtpSink;
use cove_tests::{IMAP_CONFIG, TestServer, base64, eventually, tcp_connect};

const USER: &str = "v@x.org";
const PASS: &str = "pw-repl-sieve";
const SECRET: &str = "sieve-replication-secret-0123456789";

struct Pair {
    a: TestServer,
    b: TestServer,
    _links: (Proxy, Proxy),
}

fn node(
    name: &str,
    peer: &str,
    peer_addr: std::net::SocketAddr,
    sink: &SmtpSink,
    secret: &str,
) -> TestServer {
    TestServer::start_node(
        name,
        &format!(
            "{IMAP_CONFIG}\n[sieve]\nlisten = [\"127.0.0.1:0\"]\nmin_vacation_period_secs = 1\nrelay = \"{}\"\n\
             [replication]\nlisten = [\"127.0.0.1:0\"]\nsecret = {secret:?}\n\
             debounce_ms = 50\nbackoff_max_secs = 1\nfull_sync_interval_secs = 3600\n\
             [[replication.peers]]\nname = {peer:?}\naddress = \"{peer_addr}\"\n",
            sink.addr()
        ),
    )
}

fn pair(sink: &SmtpSink) -> Pair {
    let (to_b, to_a) = (Proxy::bind(), Proxy::bind());
    let secret = cove_tests::unique_secret(SECRET);
    let a = node("node-a", "node-b", to_b.addr(), sink, &secret);
    let b = node("node-b", "node-a", to_a.addr(), sink, &secret);
    a.add_user_with_password(USER, PASS);
    b.add_user_with_password(USER, PASS);
    to_b.forward_to(b.addr_of("replication"));
    to_a.forward_to(a.addr_of("replication"));
    Pair {
        a,
        b,
        _links: (to_b, to_a),
    }
}

/// Put `script` as `name` and activate it, over ManageSieve on `node`.
fn managesieve_put(node: &TestServer, name: &str, script: &str) {
    let tcp = tcp_connect(node.addr_of("managesieve"));
    let mut w = tcp.try_clone().unwrap();
    let mut r = BufReader::new(tcp);
    let expect_ok = |r: &mut BufReader<std::net::TcpStream>| loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        if l.starts_with("OK") {
            return;
        }
        assert!(!l.starts_with("NO") && !l.is_empty(), "{l}");
    };
    expect_ok(&mut r);
    let ir = base64(format!("\0{USER}\0{PASS}").as_bytes());
    write!(w, "AUTHENTICATE \"PLAIN\" \"{ir}\"\r\n").unwrap();
    expect_ok(&mut r);
    write!(
        w,
        "PUTSCRIPT \"{name}\" {{{}+}}\r\n{script}\r\n",
        script.len()
    )
    .unwrap();
    expect_ok(&mut r);
    write!(w, "SETACTIVE \"{name}\"\r\n").unwrap();
    expect_ok(&mut r);
}

fn wait_active(node: &TestServer, name: &str) {
    let want = format!("{name} (active)");
    eventually(Duration::from_secs(20), || {
        node.cli_ok(&["sieve", "list", USER])
            .contains(&want)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("{want} never reached the other node"));
}

fn mail(from: &str, subject: &str) -> String {
    format!(
        "From: {from}\r\nTo: {USER}\r\nSubject: {subject}\r\nMessage-ID: <{}@t>\r\n\r\nhi\r\n",
        subject.replace(' ', ".")
    )
}

#[test]
fn a_script_put_on_one_node_files_mail_on_the_other() {
    let sink = SmtpSink::start();
    let p = pair(&sink);
    managesieve_put(
        &p.a,
        "rules",
        "require [\"fileinto\", \"mailbox\"];\r\nif header :contains \"subject\" \"report\" { fileinto :create \"Reports\"; }\r\n",
    );
    wait_active(&p.b, "rules");
    let mut lmtp = p.b.lmtp_ready();
    let d = lmtp.deliver(
        "boss@example.org",
        &[USER],
        &mail("boss@example.org", "weekly report"),
    );
    assert!(d.results[0].is("250"), "{d:?}");
    assert_eq!(p.b.maildir_files(USER, "Reports").len(), 1);
    // And back: an edit on node-b reaches node-a.
    managesieve_put(&p.b, "rules2", "discard;\r\n");
    wait_active(&p.a, "rules2");
}

#[test]
fn vacation_answers_a_sender_once_across_the_pair() {
    let sink = SmtpSink::start();
    let p = pair(&sink);
    managesieve_put(
        &p.a,
        "away",
        "require \"vacation\";\r\nvacation :days 7 \"Away this week.\";\r\n",
    );
    wait_active(&p.b, "away");
    let bob = "bob@example.org";
    let mut lmtp = p.a.lmtp_ready();
    assert!(lmtp.deliver(bob, &[USER], &mail(bob, "first")).results[0].is("250"));
    assert_eq!(sink.wait_for(1).len(), 1);
    // The tracking reaches node-b, which then stays silent.
    let tracking = p.b.home(USER).join("sieve/tracking");
    eventually(Duration::from_secs(20), || {
        std::fs::read_to_string(&tracking)
            .ok()
            .filter(|t| !t.is_empty())
    })
    .expect("vacation tracking replicated to node-b");
    let mut lmtp = p.b.lmtp_ready();
    assert!(lmtp.deliver(bob, &[USER], &mail(bob, "second")).results[0].is("250"));
    assert_eq!(sink.messages().len(), 1, "{:?}", sink.messages());
}
