//! A first sync applies a big mailbox in chunks, each its own transaction,
//! so the user's deliveries on the receiving node wait for one chunk, not
//! for the whole apply (issue 15); a delivery between chunks keeps UIDs
//! ascending and unique, and both nodes end with every message once.

mod common;

use std::collections::BTreeSet;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Node, assert_converged, sync, sync_until_quiet};
use cove_store::replica::{ApplyProgress, PeerLimits};
use cove_store::{Delivered, MessageMeta, NewMessage};

/// What the progress hook saw at the first chunk: where the apply was,
/// and the delivery made then with the messages it showed next to it.
type Midway = (ApplyProgress, Result<(Delivered, Vec<MessageMeta>), String>);

/// Node A with 250 messages in INBOX; node B, empty, applies in chunks
/// of 50.
fn a_mailbox_of_250_for_b_in_chunks_of_50() -> ([Node; 2], BTreeSet<cove_store::MessageGuid>) {
    let nodes = [Node::new("node-a"), Node::new("node-b")];
    let mut all = BTreeSet::new();
    for i in 0..250 {
        all.insert(
            nodes[0]
                .deliver("INBOX", &format!("Subject: m{i}\r\n\r\nbody {i}\r\n"))
                .guid,
        );
    }
    assert!(nodes[1].store.set_peer_limits(PeerLimits {
        apply_chunk_messages: 50,
        ..PeerLimits::default()
    }));
    (nodes, all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_during_a_first_sync_is_acknowledged_before_the_sync_ends() {
    let (nodes, mut all) = a_mailbox_of_250_for_b_in_chunks_of_50();
    let [a, b] = &nodes;
    // At the first chunk, deliver to the receiving node from another
    // thread (LMTP's path) and wait for its answer: the sync stands still
    // meanwhile, so the delivery can only be acknowledged if the chunk
    // left the user's index free.
    let midway: Arc<Mutex<Option<Midway>>> = Arc::default();
    let (seen, account, store) = (midway.clone(), b.account.clone(), b.store.clone());
    assert!(b.store.set_apply_progress_hook(Arc::new(move |_user, p| {
        let mut seen = seen.lock().expect("midway");
        if seen.is_some() || p.applied >= p.total {
            return;
        }
        let (tx, rx) = mpsc::channel();
        let (account, store) = (account.clone(), store.clone());
        std::thread::spawn(move || {
            let delivered = (|| {
                let blob = store
                    .blobs()
                    .put(b"Subject: mid-way\r\n\r\nduring the first sync\r\n")?;
                let d = account.deliver("INBOX", &blob, &NewMessage::default())?;
                let inbox = account.mailbox("INBOX")?;
                Ok((d, account.messages(&inbox.guid)?))
            })();
            let _ = tx.send(delivered.map_err(|e: cove_store::Error| e.to_string()));
        });
        let answer = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| Err("no answer: the delivery was held by the sync".into()));
        *seen = Some((p, answer));
    })));

    sync(b, a).await;

    let (progress, delivered) = midway
        .lock()
        .expect("midway")
        .take()
        .expect("the first sync was applied in one piece (no chunk boundary)");
    assert!(progress.applied < progress.total, "{progress:?}");
    let (mid, shown) = delivered.expect("the delivery made mid-way");
    // Nothing that arrived after the delivery (the later chunks) took a
    // UID at or below one shown then (RFC 3501 §2.3.1.1), nor one shown.
    let high = shown.iter().map(|m| m.uid).max().expect("shown");
    assert!(shown.iter().any(|m| m.guid == mid.guid));
    let before: BTreeSet<_> = shown.iter().map(|m| m.guid).collect();
    for m in b.messages("INBOX") {
        if !before.contains(&m.guid) {
            assert!(
                m.uid > high,
                "{} arrived at UID {} after UID {high} was shown",
                m.guid,
                m.uid
            );
        }
    }
    all.insert(mid.guid);
    sync_until_quiet(&nodes, 6).await;
    let state = assert_converged(&nodes, &all);
    let total: usize = state.mailboxes.values().map(|v| v.messages.len()).sum();
    assert_eq!(total, all.len(), "every message once");
}

// The peer's UIDNEXT was once raised in the first chunk: every later chunk
// found its UIDs below it and gave all but 50 messages fresh UIDs, on
// both nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_sync_in_chunks_keeps_every_uid() {
    let (nodes, all) = a_mailbox_of_250_for_b_in_chunks_of_50();
    let [a, b] = &nodes;
    let s = sync(b, a).await;
    assert_eq!(
        (
            s.here.messages_added,
            s.here.messages_renumbered,
            s.here.divergent
        ),
        (250, 0, false),
        "{s:?}"
    );
    assert_eq!(a.state(), b.state());
    assert_converged(&nodes, &all);
}
