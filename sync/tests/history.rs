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

/// A and B share twelve messages; B goes away. A expunges four of them
/// (first the one B flags while apart, then three others) and takes 20
/// more, pruning as it goes with `keep_changes` = `keep`. What each node
/// holds then.
struct Apart {
    nodes: [Node; 2],
    /// Expunged on A, untouched on B.
    doomed: Vec<cove_store::Delivered>,
    /// Expunged on A, flagged on B while apart.
    flagged_on_b: cove_store::Delivered,
    /// Never expunged.
    kept: BTreeSet<cove_store::MessageGuid>,
}

async fn apart(keep: u64) -> Apart {
    let nodes = [Node::new("node-a"), Node::new("node-b")];
    for n in &nodes {
        n.store.set_history(History {
            keep_changes: keep,
            keep_expunges_ms: 0,
        });
    }
    let [a, b] = &nodes;
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
    a.account
        .expunge(&inbox.guid, &[flagged_on_b.uid])
        .expect("expunge");
    let gone: Vec<_> = doomed.iter().map(|d| d.uid).collect();
    a.account.expunge(&inbox.guid, &gone).expect("expunge");
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
    Apart {
        nodes,
        doomed,
        flagged_on_b,
        kept,
    }
}

/// B was away longer than A's change log keeps (five changes): A's delta
/// for it is complete. The expunges B has not applied outlive the cap and
/// travel in it: B drops all four, the one it flagged too (an expunge wins
/// over a flag change), and A gets none of them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_away_longer_than_the_history_gets_a_complete_delta() {
    let Apart {
        nodes,
        doomed,
        flagged_on_b,
        kept,
    } = apart(5).await;
    let [a, b] = &nodes;
    let r = rows(a);
    assert_eq!(r.tombstones, 4, "A keeps the expunges B has not applied");
    assert!(r.changes <= 5 + 5, "the change log is capped: {r:?}");
    let back = sync(b, a).await;
    assert_eq!(
        back.here.messages_expunged, 4,
        "B expunged what A expunged while it was away: {:?}",
        back.here
    );
    sync(a, b).await;
    sync(b, a).await;
    for d in doomed.iter().chain([&flagged_on_b]) {
        assert!(a.find(&d.guid).is_none(), "A got {} back", d.guid);
        assert!(b.find(&d.guid).is_none(), "B kept {}", d.guid);
    }
    assert_converged(&nodes, &kept);
    assert_eq!(rows(a).tombstones, 0, "applied by B: pruned");
}

/// The same with only two expunges kept past the cap: A forgets the
/// oldest two (the one B flagged, and one B did not touch). The complete
/// delta still expunges on B each message it did not change since A's
/// mark; the one B flagged comes back to A (when in doubt, keep).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_bound_a_forgotten_expunge_of_a_message_the_peer_changed_comes_back() {
    let Apart {
        nodes,
        doomed,
        flagged_on_b,
        mut kept,
    } = apart(2).await;
    let [a, b] = &nodes;
    assert_eq!(rows(a).tombstones, 2, "A keeps two of the four");
    let back = sync(b, a).await;
    assert_eq!(
        back.here.messages_expunged,
        doomed.len() as u64,
        "B expunged what A expunged while it was away (not the one it flagged): {:?}",
        back.here
    );
    sync(a, b).await;
    sync(b, a).await;
    kept.insert(flagged_on_b.guid);
    for d in &doomed {
        assert!(a.find(&d.guid).is_none(), "A got {} back", d.guid);
        assert!(b.find(&d.guid).is_none(), "B kept {}", d.guid);
    }
    assert_converged(&nodes, &kept);
}
