//! More content than one session may carry (`max_session_bytes`): each
//! session brings what fits, the rest waits for the next, and nothing is
//! lost or applied twice.

mod common;

use std::collections::BTreeSet;

use common::{Node, assert_converged, sync};
use cove_store::replica::PeerLimits;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_over_the_session_budget_arrives_over_several_sessions() {
    let nodes = [Node::new("node-a"), Node::new("node-b")];
    let [a, b] = &nodes;
    assert!(b.store.set_peer_limits(PeerLimits {
        max_blob_bytes: 1 << 20,
        max_session_bytes: 1 << 20,
        ..PeerLimits::default()
    }));
    let body = "y".repeat(400_000);
    let mut all = BTreeSet::new();
    for i in 0..5 {
        all.insert(
            a.deliver("INBOX", &format!("Subject: m{i}\r\n\r\n{i} {body}\r\n"))
                .guid,
        );
    }
    // 5 x 400 kB against 1 MiB a session: two, two, then one.
    let mut received = Vec::new();
    for _ in 0..5 {
        let s = sync(b, a).await;
        received.push(s.blobs_received);
        assert!(
            s.content_bytes_received <= 1 << 20,
            "one session brought {} bytes",
            s.content_bytes_received
        );
        if s.here.deferred == 0 {
            break;
        }
    }
    assert_eq!(received, vec![2, 2, 1], "blobs per session");
    assert_eq!(b.messages("INBOX").len(), 5);
    assert_converged(&nodes, &all);
}
