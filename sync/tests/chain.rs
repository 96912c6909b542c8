//! Three nodes that do not all sync with each other: an expunge must travel
//! through a node that never held the message.

mod common;

use std::collections::BTreeSet;

use common::{Node, assert_converged, sync};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expunge_travels_through_a_node_that_never_held_the_message() {
    let nodes = [
        Node::new("node-a"),
        Node::new("node-b"),
        Node::new("node-c"),
    ];
    let [a, b, c] = &nodes;
    let kept = a.deliver("INBOX", "Subject: kept\r\n\r\n");
    let gone = a.deliver("INBOX", "Subject: gone\r\n\r\n");
    // A and C talk once; then only through B (A-B, B-C).
    sync(a, c).await;
    let inbox = a.mailbox("INBOX");
    a.account
        .expunge(&inbox.guid, &[gone.uid])
        .expect("expunge on A");
    a.observe();
    for _ in 0..3 {
        sync(a, b).await;
        sync(b, c).await;
        sync(c, b).await;
        sync(b, a).await;
    }
    let state = assert_converged(&nodes, &[kept.guid].into_iter().collect::<BTreeSet<_>>());
    assert!(
        state.mailboxes[&inbox.guid]
            .messages
            .values()
            .all(|(g, ..)| *g != gone.guid),
        "the expunged message is gone everywhere"
    );
}
