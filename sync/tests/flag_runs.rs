//! A STORE on many messages is one change-log row on its node (index
//! schema 5, store/src/index.rs); the peer must still get every message's
//! flags, merged flag by flag with what it changed meanwhile.

mod common;

use std::collections::BTreeSet;

use common::{Node, assert_converged, sync, sync_until_quiet};
use cove_store::{FlagOp, Flags};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_applies_every_change_of_a_batched_store() {
    let nodes = [Node::new("node-a"), Node::new("node-b")];
    let [a, b] = &nodes;
    let delivered: Vec<_> = (0..40)
        .map(|i| a.deliver("INBOX", &format!("Subject: m{i}\r\n\r\nbody {i}\r\n")))
        .collect();
    sync(a, b).await;
    let all: BTreeSet<_> = delivered.iter().map(|d| d.guid).collect();
    let uids: Vec<u32> = delivered.iter().map(|d| d.uid).collect();

    // Meanwhile on B: \Flagged on one message, \Seen on another.
    let inbox_b = b.mailbox("INBOX");
    for (uid, flags) in [(uids[5], Flags::FLAGGED), (uids[6], Flags::SEEN)] {
        b.account
            .store_flags(&inbox_b.guid, &[uid], FlagOp::Add(flags, vec![]), None)
            .expect("store on b");
    }
    b.observe();
    // On A: one STORE on all 40 (one change-log row, 40 modseqs), and one
    // more that takes \Seen off the first ten again.
    let inbox_a = a.mailbox("INBOX");
    let first = a
        .account
        .store_flags(
            &inbox_a.guid,
            &uids,
            FlagOp::Add(Flags::SEEN, vec!["$Done".to_string()]),
            None,
        )
        .expect("store on a");
    assert_eq!(first.committed.map(|(f, l)| l - f + 1), Some(40));
    a.account
        .store_flags(
            &inbox_a.guid,
            &uids[..10],
            FlagOp::Remove(Flags::SEEN, vec![]),
            None,
        )
        .expect("second store on a");
    a.observe();

    sync(a, b).await;
    sync_until_quiet(&nodes, 4).await;
    let state = assert_converged(&nodes, &all);
    let inbox = &state.mailboxes[&inbox_a.guid];
    for (i, uid) in uids.iter().enumerate() {
        let (_, flags, keywords) = &inbox.messages[uid];
        let mut want = if i < 10 { Flags::empty() } else { Flags::SEEN };
        if i == 5 {
            want = want | Flags::FLAGGED;
        }
        assert_eq!(*flags, want.bits(), "message {i}");
        assert_eq!(keywords, &["$Done"], "message {i}");
    }
}
