//! POP3 unique ids stay the same where operators need them to (DESIGN.md
//! "Identity", issue 5): after `cove index rebuild`, and on both nodes of
//! a replicating pair — so a POP3 client that fails over or reconnects
//! after a restore downloads nothing twice. UIDL is the message GUID, which
//! is in each Maildir file name.

mod pop3_common;

use std::collections::BTreeSet;
use std::time::Duration;

use cove_tests::proxy::Proxy;
use cove_tests::{TestServer, eventually, message, text};
use pop3_common::{PASS, POP3_CONFIG, Pop3, USER, guid_of_file, server};

/// The UIDL listing (number, unique id) of the user's maildrop.
fn uidl(s: &TestServer) -> Vec<String> {
    let mut c = Pop3::connect(s.addr_of("pop3"));
    c.login(USER, PASS);
    let mut lines = c.multi("UIDL");
    assert_eq!(lines.remove(0), "+OK Unique-ID listing follows");
    assert_eq!(lines.pop().as_deref(), Some("."));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    lines
}

/// The unique ids alone.
fn ids(listing: &[String]) -> Vec<String> {
    listing
        .iter()
        .map(|l| l.split_once(' ').expect("n id").1.to_string())
        .collect()
}

#[test]
fn uidl_is_the_guid_and_survives_an_index_rebuild() {
    let mut s = server("");
    for i in 0..4 {
        s.deliver_to(USER, &message(&format!("m{i}"), "body"));
    }
    // One message put there by another program: no GUID in its name.
    let new = s.folder(USER, "INBOX").join("new");
    std::fs::write(
        new.join("1600000000.M9P9.other"),
        "Subject: foreign\r\n\r\nx\r\n",
    )
    .unwrap();
    let before = uidl(&s);
    assert_eq!(before.len(), 5, "{before:?}");
    let from_files: BTreeSet<String> = s
        .maildir_files(USER, "INBOX")
        .iter()
        .map(|p| guid_of_file(p))
        .collect();
    assert_eq!(
        ids(&before).into_iter().collect::<BTreeSet<_>>(),
        from_files
    );
    for id in ids(&before) {
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "RFC 1939 §7: 1-70 characters 0x21-0x7E: {id}"
        );
    }

    s.stop();
    std::fs::remove_file(s.home(USER).join("index.sqlite")).unwrap();
    let out = s.cli(&["index", "rebuild", USER]);
    assert!(
        out.status.success(),
        "rebuild: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    s.restart();
    let after = uidl(&s);
    assert_eq!(
        ids(&after).into_iter().collect::<BTreeSet<_>>(),
        ids(&before).into_iter().collect::<BTreeSet<_>>(),
        "the same unique ids after the rebuild"
    );
}

const SECRET: &str = "pop3-uidl-test-secret-0123456789";

fn node(name: &str, peer: &str, peer_addr: std::net::SocketAddr, secret: &str) -> TestServer {
    let extra = format!(
        "{POP3_CONFIG}\
         [replication]\nlisten = [\"127.0.0.1:0\"]\nsecret = {secret:?}\n\
         debounce_ms = 50\nbackoff_max_secs = 1\nfull_sync_interval_secs = 3600\n\
         [[replication.peers]]\nname = {peer:?}\naddress = \"{peer_addr}\"\n"
    );
    let s = TestServer::start_node(name, &extra);
    s.add_user_with_password(USER, PASS);
    s
}

#[test]
fn uidl_is_the_same_on_both_replicating_nodes() {
    let to_b = Proxy::bind();
    let to_a = Proxy::bind();
    let secret = cove_tests::unique_secret(SECRET);
    let a = node("node-a", "node-b", to_b.addr(), &secret);
    let b = node("node-b", "node-a", to_a.addr(), &secret);
    to_b.forward_to(b.addr_of("replication"));
    to_a.forward_to(a.addr_of("replication"));
    for i in 0..3 {
        a.deliver_to(USER, &message(&format!("a{i}"), "on a"));
        b.deliver_to(USER, &message(&format!("b{i}"), "on b"));
    }
    let (la, lb) = eventually(Duration::from_secs(30), || {
        let (la, lb) = (uidl(&a), uidl(&b));
        (la.len() == 6 && la == lb).then_some((la, lb))
    })
    .unwrap_or_else(|| {
        panic!(
            "the nodes' UIDL listings never matched:\nnode-a {:?}\nnode-b {:?}",
            uidl(&a),
            uidl(&b)
        )
    });
    assert_eq!(la, lb);
    // And each is the GUID in the node's own file names.
    for s in [&a, &b] {
        let files: BTreeSet<String> = s
            .maildir_files(USER, "INBOX")
            .iter()
            .map(|p| guid_of_file(p))
            .collect();
        assert_eq!(ids(&la).into_iter().collect::<BTreeSet<_>>(), files);
    }
    // A deletion by POP3 on one node is gone from the other's listing.
    let mut c = Pop3::connect(a.addr_of("pop3"));
    c.login(USER, PASS);
    assert_eq!(c.cmd("DELE 1"), "+OK Message 1 deleted");
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let gone = ids(&la)[0].clone();
    eventually(Duration::from_secs(30), || {
        let lb = ids(&uidl(&b));
        (lb.len() == 5 && !lb.contains(&gone)).then_some(())
    })
    .expect("the POP3 deletion reaches node-b");
}
