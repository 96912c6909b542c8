//! What a node applies from its peer gets this node's next modseq, like a
//! change made here: IMAP clients resynchronise with CONDSTORE/QRESYNC (RFC
//! 7162) by asking what changed since a modseq of *this* node's, so a
//! change that kept the peer's number (lower than this node's counter)
//! would never be reported to them.

mod common;

use common::{Node, sync};
use cove_store::{FlagOp, Flags};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_from_the_peer_get_a_local_modseq() {
    let nodes = [Node::new("node-a"), Node::new("node-b")];
    let [a, b] = &nodes;
    for i in 0..3 {
        a.deliver("INBOX", &format!("Subject: m{i}\r\n\r\n{i}\r\n"));
    }
    sync(a, b).await;
    // B's counter runs well ahead of A's.
    for i in 0..20 {
        b.deliver("Archive", &format!("Subject: b{i}\r\n\r\n{i}\r\n"));
    }
    let inbox_b = b.mailbox("INBOX");
    let before = b.account.current_modseq().expect("modseq");
    assert!(before > a.account.current_modseq().expect("modseq"));

    // On A: a flag change and an expunge.
    let inbox_a = a.mailbox("INBOX");
    a.account
        .store_flags(
            &inbox_a.guid,
            &[2],
            FlagOp::Add(Flags::FLAGGED, vec![]),
            None,
        )
        .expect("store");
    a.account.expunge(&inbox_a.guid, &[3]).expect("expunge");
    sync(a, b).await;

    // B reports both as changed since `before`, in its own numbers.
    let changed = b
        .account
        .messages_since(&inbox_b.guid, before)
        .expect("since");
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert!(changed[0].flags.contains(Flags::FLAGGED));
    assert!(changed[0].modseq > before);
    let tombstones = b.account.tombstones(&inbox_b.guid).expect("tombstones");
    let expunged: Vec<_> = tombstones.iter().filter(|t| t.2 > before).collect();
    assert_eq!(expunged.len(), 1, "{tombstones:?}");
    assert!(b.mailbox("INBOX").highest_modseq > before);
}
