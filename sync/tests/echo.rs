//! What a node applied from its peer does not travel back to the peer.

mod common;

use common::{Node, sync};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_peer_applied_does_not_come_back() {
    let nodes = [Node::new("node-a"), Node::new("node-b")];
    let [a, b] = &nodes;
    for i in 0..50 {
        a.deliver("INBOX", &format!("Subject: m{i}\r\n\r\n{i}\r\n"));
    }
    let first = sync(a, b).await;
    assert_eq!(first.there.messages_added, 50);
    // What B would send A now: nothing but its (always sent) mailboxes.
    let mark = a.account.peer_mark(&b.name).expect("mark");
    let back = b.account.replica_delta(&a.name, mark).expect("delta");
    assert!(
        back.messages.is_empty() && back.tombstones.is_empty(),
        "B's delta for A holds {} messages",
        back.messages.len()
    );
    // And B still sends what is its own.
    let own = b.deliver("INBOX", "Subject: b's own\r\n\r\n");
    let mark = a.account.peer_mark(&b.name).expect("mark");
    let next = b.account.replica_delta(&a.name, mark).expect("delta");
    assert_eq!(next.messages.len(), 1);
    assert_eq!(next.messages[0].guid, own.guid);
}
