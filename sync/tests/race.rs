//! A UID given out while a session runs (after the node's delta was taken)
//! is invisible to the renumbering, which sees only the two deltas. The
//! node that finds the UID taken gives the message a fresh one, and the
//! nodes agree again at the next session without any UID changing meaning.

mod common;

use std::collections::{BTreeSet, HashMap};

use common::{Node, assert_converged, sync, sync_until_quiet};
use cove_store::ContentId;
use cove_store::replica::Mark;

/// One session done by hand, with `between` run after both deltas were
/// taken and before either is applied.
fn session_with_a_gap(a: &Node, b: &Node, between: impl FnOnce()) {
    let mark_of = |n: &Node, peer: &Node| n.account.peer_mark(&peer.name).expect("mark");
    let da = a
        .account
        .replica_delta(&b.name, mark_of(b, a))
        .expect("delta a");
    let db = b
        .account
        .replica_delta(&a.name, mark_of(a, b))
        .expect("delta b");
    between();
    for (n, local, remote, peer) in [(a, &da, &db, b), (b, &db, &da, a)] {
        // The content the peer would send.
        let mut content = HashMap::new();
        for id in n.account.replica_missing_content(remote).expect("missing") {
            let bytes = std::fs::read(peer.store.blobs().path_of(&ContentId(id))).expect("blob");
            content.insert(id, n.store.blobs().put(&bytes).expect("stage"));
        }
        let report = n
            .account
            .apply_replica(&peer.name, local, remote, &content)
            .expect("apply");
        assert_eq!(report.deferred, 0, "{}: nothing left for later", n.name);
        n.account
            .set_peer_mark(
                &peer.name,
                Mark {
                    modseq: remote.modseq,
                    epoch: remote.epoch,
                },
            )
            .expect("mark");
        n.observe();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uid_given_out_during_a_session_is_not_given_twice() {
    let nodes = [Node::new("node-a"), Node::new("node-b")];
    let [a, b] = &nodes;
    let first = a.deliver("INBOX", "Subject: first\r\n\r\n");
    sync(a, b).await;
    // A delivers at UID 2 and files the message away (a mail filter).
    let filed = a.deliver("INBOX", "Subject: filed\r\n\r\n");
    assert_eq!(filed.uid, 2);
    let inbox = a.mailbox("INBOX");
    let archive = a.mailbox("Archive");
    a.account
        .move_messages(&inbox.guid, &[filed.uid], &archive.guid)
        .expect("move");
    a.observe();
    // B delivers at UID 2 too, while the session runs.
    let mut late = None;
    session_with_a_gap(a, b, || {
        let d = b.deliver("INBOX", "Subject: late\r\n\r\n");
        assert_eq!(d.uid, 2);
        late = Some(d);
    });
    let late = late.expect("delivered");
    sync_until_quiet(&nodes, 4).await;
    let all: BTreeSet<_> = [first.guid, filed.guid, late.guid].into_iter().collect();
    let state = assert_converged(&nodes, &all);
    let inbox_state = &state.mailboxes[&inbox.guid];
    assert!(
        !inbox_state.messages.contains_key(&2),
        "UID 2 named the filed message on A and the late one on B: retired on both"
    );
    assert!(inbox_state.messages.values().any(|(g, ..)| *g == late.guid));
}
