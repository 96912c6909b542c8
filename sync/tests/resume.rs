//! A session cut while content is on the way: the next session sends only
//! the content that had not arrived, and applies everything once.

mod common;

use std::collections::BTreeSet;

use common::{Cut, CutSide, Node, assert_converged, sync, sync_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_session_resumes_without_resending_what_arrived() {
    let nodes = [Node::new("node-a"), Node::new("node-b")];
    let [a, b] = &nodes;
    let body = "x".repeat(20_000);
    let mut all = BTreeSet::new();
    for i in 0..20 {
        all.insert(
            a.deliver("INBOX", &format!("Subject: m{i}\r\n\r\n{i} {body}\r\n"))
                .guid,
        );
    }
    // B connects; the link dies after about half the content reached it.
    let cut = sync_with(
        b,
        a,
        Some(Cut {
            side: CutSide::Client,
            after: 200_000,
        }),
    )
    .await;
    assert!(cut.client.is_err(), "the session was cut");
    assert!(b.messages("INBOX").is_empty(), "nothing half-applied");

    let resumed = sync(b, a).await;
    assert_eq!(resumed.here.messages_added, 20, "everything applied once");
    assert!(
        resumed.blobs_received > 0 && resumed.blobs_received < 20,
        "only the content that had not arrived travels again ({} blobs)",
        resumed.blobs_received
    );
    assert_converged(&nodes, &all);
}
