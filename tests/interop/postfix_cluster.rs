//! Postfix in front of four cove nodes (two pairs), configured as the
//! README's "High availability" section tells operators: the domains,
//! mailboxes and transport come from cove's socketmap on one node (s3).
//!
//! It proves: mail for users of both pairs reaches each user's preferred
//! node; an unknown address is refused by smtpd at RCPT (never accepted
//! and bounced later); after `kill -9` of a user's preferred node the next
//! message goes to the other node of the pair with no bounce, nothing
//! lost, and Postfix's queue ends empty. It prints the time from the
//! kill to Postfix's next successful delivery.

use std::time::{Duration, Instant};

use cove_tests::cluster::{Fleet, one_user_per_node, preferred};
use cove_tests::{eventually, text};

use crate::common::announce;
use crate::postfix::{Postfix, postfix_program};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// The main.cf lines of the README, asking the socketmap at `addr`, with
/// retries a test can wait for.
pub fn routing(addr: std::net::SocketAddr) -> String {
    format!(
        "virtual_mailbox_domains = socketmap:inet:{addr}:domains
virtual_mailbox_maps = socketmap:inet:{addr}:mailboxes
transport_maps = socketmap:inet:{addr}:transport
# For the test: retry deferred mail within seconds.
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
"
    )
}

/// Wait until Postfix's log says `user`'s message went to cove's LMTP on
/// `port` (status=sent); the log line.
fn sent(pf: &Postfix, user: &str, port: u16) -> String {
    let want = format!("to=<{user}>, relay=127.0.0.1[127.0.0.1]:{port}");
    eventually(DELIVERY_TIMEOUT, || {
        pf.log()
            .lines()
            .find(|l| l.contains(&want) && l.contains("status=sent"))
            .map(str::to_string)
    })
    .unwrap_or_else(|| {
        panic!(
            "Postfix did not deliver to {user} on port {port} within {DELIVERY_TIMEOUT:?}\n{}",
            pf.queue()
        )
    })
}

fn message(id: &str, to: &str) -> String {
    format!("From: s@c.test\r\nTo: {to}\r\nSubject: {id}\r\nMessage-ID: {id}\r\n\r\nHi.\r\n")
}

#[test]
fn postfix_routes_through_coves_socketmaps_and_fails_over_on_kill9() {
    let Some(postfix) = postfix_program() else {
        return;
    };
    let users = one_user_per_node();
    let mut fleet = Fleet::start(&users);
    let mut pf = Postfix::start_routing(postfix, &routing(fleet.socketmap_addr(2)));

    // Every user's mail lands on the user's preferred node.
    for (k, u) in users.iter().enumerate() {
        let id = format!("<before-{k}@postfix.test>");
        pf.submit("s@c.test", &[u], &message(&id, u));
        let node = preferred(u);
        let line = sent(&pf, u, fleet.ports[node].lmtp);
        assert!(line.contains("250 2.0.0"), "{line}");
        fleet.await_message(node, u, &id);
    }

    // An unknown address is refused at RCPT by smtpd itself.
    let mut c = pf.smtp();
    assert!(c.cmd("MAIL FROM:<s@c.test>").is("250"));
    for nobody in ["nobody@a.test", "nobody@b.test"] {
        let r = c.cmd(&format!("RCPT TO:<{nobody}>"));
        assert!(
            r.is("550 5.1.1") && r.first().contains("User unknown in virtual mailbox table"),
            "{:?}",
            r.lines
        );
    }
    drop(c);

    // Alice's first message has reached s2 too (replication) before s1 dies.
    let alice = &users[0];
    fleet.await_message(1, alice, "<before-0@postfix.test>");

    // kill -9 of alice's preferred node, and a message for her at once.
    fleet.nodes[0].kill9();
    let killed = Instant::now();
    pf.submit(
        "s@c.test",
        &[alice],
        &message("<after@postfix.test>", alice),
    );
    let line = sent(&pf, alice, fleet.ports[1].lmtp);
    let took = killed.elapsed();
    assert!(line.contains("250 2.0.0"), "{line}");
    announce(&format!(
        "postfix_cluster: kill -9 of the preferred node to Postfix's next successful delivery (to its peer): {took:?}"
    ));
    fleet.await_message(1, alice, "<after@postfix.test>");

    // No bounce, and nothing left in the queue.
    let log = pf.log();
    assert!(!log.contains("status=bounced"), "{log}");
    let queue = eventually(DELIVERY_TIMEOUT, || {
        let q = pf.queue();
        q.contains("Mail queue is empty").then_some(q)
    });
    assert!(
        queue.is_some(),
        "queue not empty:\n{}\n{}",
        pf.queue(),
        text(log.as_bytes())
    );
    pf.stop();
}
