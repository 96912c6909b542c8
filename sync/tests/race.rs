//! A UID given out while a session runs (after the node's delta was taken)
//! is invisible to the renumbering, which sees only the two deltas. The
//! node that finds the UID taken gives the message a fresh one, and the
//! nodes agree again at the next session without any UID changing meaning.

mod common;

use std::collections::{BTreeSet, HashMap};

use common::{Node, assert_converged, sync, sync_during, sync_until_quiet};
use cove_store::ContentId;
use cove_store::replica::{ContentFeed, Mark};

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
            .apply_replica(
                &peer.name,
                local,
                remote,
                &mut ContentFeed::ready(content),
                &Default::default(),
                &mut |_| {},
            )
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

/// Issue 12 item 0.2: a message kept UID 123 on one node and 125 on the
/// other until a restart. A UID given out while a session ran made one
/// node give the peer's message a fresh UID (a divergent apply): only a
/// later session carries that to the other node, and when the wakeup for
/// it was lost, none came until the next full sync. One sync of the user
/// now leaves both nodes agreeing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sync_ends_in_agreement_after_a_uid_given_out_meanwhile() {
    let nodes = [Node::new("node-a"), Node::new("node-b")];
    let [a, b] = &nodes;
    for i in 0..122 {
        a.deliver("INBOX", &format!("Subject: old {i}\r\n\r\n"));
    }
    sync(a, b).await;
    // B takes UID 123 for x; A, once it has sent its delta, takes 123
    // and 124 for y and z: x gets a fresh UID on A, 125.
    let x = b.deliver("INBOX", "Subject: x\r\n\r\n");
    assert_eq!(x.uid, 123);
    let mut late = Vec::new();
    let out = sync_during(a, b, None, 100, || {
        late.push(a.deliver("INBOX", "Subject: y\r\n\r\n"));
        late.push(a.deliver("INBOX", "Subject: z\r\n\r\n"));
    })
    .await;
    assert!(out.client.is_ok() && out.server.is_ok(), "{out:?}");
    assert_eq!(
        late.iter().map(|d| d.uid).collect::<Vec<_>>(),
        [123, 124],
        "given out after A's delta was taken"
    );
    let all: BTreeSet<_> = [x.guid, late[0].guid, late[1].guid]
        .into_iter()
        .chain(
            a.messages("INBOX")
                .iter()
                .filter(|m| m.uid < 123)
                .map(|m| m.guid),
        )
        .collect();
    // No further session: both nodes agree already.
    let state = assert_converged(&nodes, &all);
    let inbox = &state.mailboxes[&a.mailbox("INBOX").guid];
    assert!(
        inbox.messages.keys().all(|u| *u != 123),
        "UID 123 named x on B and y on A: retired on both"
    );
}
