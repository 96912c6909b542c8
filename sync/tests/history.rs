//! Bounded history (store's account/history.rs): the change log and the
//! expunge tombstones stop growing once every peer has applied them, and a
//! peer that was away longer than what is kept still converges (a complete
//! delta), without bringing back what was expunged meanwhile.

mod common;

use std::collections::BTreeSet;

use common::{Node, assert_converged, sync};
use cove_store::Flags;
use cove_store::replica::{History, HistoryRows};

const NO_MARGIN: History = History {
    keep_changes: 50,
    keep_expunges_ms: 0,
};

fn rows(n: &Node) -> HistoryRows {
    n.account.history_rows().expect("history rows")
}

/// Deliver `count` messages to A, sync, expunge them on A, sync.
async fn round(a: &Node, b: &Node, round: usize, count: usize) {
    let inbox = a.mailbox("INBOX");
    let mut uids = Vec::new();
    for i in 0..count {
        uids.push(
            a.deliver(
                "INBOX",
                &format!("Subject: r{round} m{i}\r\n\r\nbody {round} {i}\r\n"),
            )
            .uid,
        );
    }
    sync(b, a).await;
    a.account.expunge(&inbox.guid, &uids).expect("expunge");
    sync(b, a).await;
    // B learns in the next session that A applied its echo.
    sync(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_stops_growing_once_every_peer_applied_it() {
    let nodes = [Node::new("node-a"), Node::new("node-b")];
    let [a, b] = &nodes;
    for n in &nodes {
        n.store.set_history(NO_MARGIN);
    }
    for r in 0..3 {
        round(a, b, r, 40).await;
    }
    let early = (rows(a), rows(b));
    for r in 3..15 {
        round(a, b, r, 40).await;
    }
    let late = (rows(a), rows(b));
    // 15 rounds of 40 deliveries and 40 expunges: 1,200 changes and 600
    // tombstones on A without pruning. With it, what every peer applied is
    // gone, whatever the number of rounds.
    for (n, (e, l)) in [("A", (early.0, late.0)), ("B", (early.1, late.1))] {
        assert!(
            l.changes <= e.changes.max(NO_MARGIN.keep_changes) + 100,
            "{n}: the change log grew from {} to {} rows",
            e.changes,
            l.changes
        );
        assert!(
            l.tombstones <= e.tombstones.max(100),
            "{n}: tombstones grew from {} to {}",
            e.tombstones,
            l.tombstones
        );
    }
    assert!(a.messages("INBOX").is_empty() && b.messages("INBOX").is_empty());
    assert_converged(&nodes, &BTreeSet::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_away_longer_than_the_history_gets_a_complete_delta() {
    let nodes = [Node::new("node-a"), Node::new("node-b")];
    let [a, b] = &nodes;
    for n in &nodes {
        n.store.set_history(History {
            keep_changes: 5,
            keep_expunges_ms: 0,
        });
    }
    let mut kept = BTreeSet::new();
    let mut doomed = Vec::new();
    let mut flagged_on_b = None;
    for i in 0..12 {
        let d = a.deliver("INBOX", &format!("Subject: m{i}\r\n\r\n{i}\r\n"));
        match i % 4 {
            0 => doomed.push(d),
            1 if flagged_on_b.is_none() => flagged_on_b = Some(d),
            _ => {
                kept.insert(d.guid);
            }
        }
    }
    sync(b, a).await;
    sync(a, b).await;
    let inbox = a.mailbox("INBOX");
    let flagged_on_b = flagged_on_b.expect("one message flagged on B");
    // B goes away. A expunges four messages, one of which B flags while
    // apart, and takes more mail; A prunes past B's mark as it goes.
    let gone: Vec<_> = doomed.iter().map(|d| d.uid).collect();
    a.account.expunge(&inbox.guid, &gone).expect("expunge");
    a.account
        .expunge(&inbox.guid, &[flagged_on_b.uid])
        .expect("expunge");
    b.account
        .set_flags(
            &b.mailbox("INBOX").guid,
            flagged_on_b.uid,
            Flags::FLAGGED,
            &[],
        )
        .expect("flag on B");
    for i in 0..20 {
        kept.insert(
            a.deliver("INBOX", &format!("Subject: later {i}\r\n\r\n{i}\r\n"))
                .guid,
        );
    }
    // Pruned as the changes went by (every `keep_changes` of them).
    assert_eq!(rows(a).tombstones, 0, "A dropped the tombstones");

    // B comes back: A's delta for it is complete; B drops what A expunged,
    // and keeps (and gives back to A) the one it changed while apart.
    let back = sync(b, a).await;
    assert_eq!(
        back.here.messages_expunged,
        doomed.len() as u64,
        "B expunged what A expunged while it was away (not the one it flagged): {:?}",
        back.here
    );
    sync(a, b).await;
    kept.insert(flagged_on_b.guid);
    for d in &doomed {
        assert!(a.find(&d.guid).is_none(), "A got {} back", d.guid);
        assert!(b.find(&d.guid).is_none(), "B kept {}", d.guid);
    }
    assert_converged(&nodes, &kept);
}
