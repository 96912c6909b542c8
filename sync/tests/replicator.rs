//! The replicator's promises, with node A's real [`Replicator`] syncing to
//! node B over in-memory links a test can hold at a chosen protocol step
//! (handed to the replicator through its [`Connector`]):
//!
//! - a change committed while a session for that user runs is not lost
//!   (the user stays queued and the change travels with no further change);
//! - anti-entropy finds a change no wakeup announced (another process made
//!   it) within a few heartbeats, long before the hourly full sync;
//! - a peer that stops answering is down within the heartbeat timeout,
//!   with no mail traffic, and up again when it answers;
//! - one user's slow session does not hold the other users of the round
//!   (a peer that comes back has all of them to catch up on).

mod common;

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use common::{Node, USER};
use cove_store::{Address, Durability, Flags, MessageGuid, Store, StoreOptions};
use cove_sync::replicator::{Connecting, Connector, Options, PeerSpec, Replicator};
use cove_sync::session::{Msg, serve_link};
use cove_sync::transport::{Link, PeerStream, Secret};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::{Notify, watch};

/// Holds the stream A writes to B: once armed, it lets through the write
/// that ends with A's next `Need` (A has taken its delta by then), then
/// holds every later write until released. `hold_now` holds at once.
#[derive(Default)]
struct Gate {
    armed: AtomicBool,
    held: AtomicBool,
    waker: Mutex<Option<Waker>>,
    reached: Notify,
}

impl Gate {
    fn hold_after_need(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    fn hold_now(&self) {
        self.held.store(true, Ordering::SeqCst);
    }

    fn release(&self) {
        self.held.store(false, Ordering::SeqCst);
        if let Some(w) = self.waker.lock().unwrap().take() {
            w.wake();
        }
    }
}

struct GatedStream {
    inner: DuplexStream,
    gate: Arc<Gate>,
    /// Bytes of the frame being written, to recognise whole frames.
    frame: Vec<u8>,
}

impl GatedStream {
    /// Follow A's frames (u32 length + body) through `bytes`; true when a
    /// `Need` message ended.
    fn saw_need(&mut self, bytes: &[u8]) -> bool {
        let mut need = false;
        self.frame.extend_from_slice(bytes);
        loop {
            if self.frame.len() < 4 {
                return need;
            }
            let len = u32::from_be_bytes(self.frame[..4].try_into().unwrap()) as usize;
            if self.frame.len() < 4 + len {
                return need;
            }
            let body: Vec<u8> = self.frame.drain(..4 + len).skip(4).collect();
            if body.first() == Some(&0)
                && matches!(postcard::from_bytes(&body[1..]), Ok(Msg::Need { .. }))
            {
                need = true;
            }
        }
    }
}

impl AsyncRead for GatedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for GatedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.gate.held.load(Ordering::SeqCst) {
            *self.gate.waker.lock().unwrap() = Some(cx.waker().clone());
            // Released between the check and storing the waker?
            if self.gate.held.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
        }
        let n = match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => n,
            other => return other,
        };
        if self.saw_need(&buf[..n]) && self.gate.armed.swap(false, Ordering::SeqCst) {
            self.gate.held.store(true, Ordering::SeqCst);
            self.gate.reached.notify_one();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Links from A to B in memory, B's end served by B's store, A's end
/// behind the gate (the first `gated` links; later ones pass freely).
struct ToB {
    b: Arc<Store>,
    gate: Arc<Gate>,
    gated: usize,
    opened: AtomicUsize,
}

impl Connector for ToB {
    fn connect<'a>(&'a self, _peer: &'a PeerSpec) -> Connecting<'a> {
        Box::pin(async move {
            let gate = if self.opened.fetch_add(1, Ordering::SeqCst) < self.gated {
                self.gate.clone()
            } else {
                Arc::new(Gate::default())
            };
            let (a, b) = tokio::io::duplex(256 * 1024);
            let store = self.b.clone();
            tokio::spawn(serve_link(
                Link::new(b),
                store,
                "a".to_string(),
                Arc::new(cove_sync::UserLocks::default()),
            ));
            let stream: PeerStream = Box::new(GatedStream {
                inner: a,
                gate,
                frame: Vec::new(),
            });
            Ok((Link::new(stream), "b".to_string()))
        })
    }
}

struct Running {
    replicator: Arc<Replicator>,
    gate: Arc<Gate>,
    _stop: watch::Sender<bool>,
}

/// Start A's replicator towards B, A's change hook queueing A's users, and
/// wait for its first full sync.
async fn start(a: &Node, b: &Node, heartbeat: Duration) -> Running {
    let running = start_gated(a, b, heartbeat, Arc::new(Gate::default()), usize::MAX);
    wait_for("the first full sync", || sessions(&running) >= 1.0).await;
    running
}

/// Start A's replicator towards B, its first `gated` links behind `gate`.
fn start_gated(a: &Node, b: &Node, heartbeat: Duration, gate: Arc<Gate>, gated: usize) -> Running {
    let opts = Options {
        node: "a".into(),
        secret: Secret::new("a shared secret of the pair").unwrap(),
        peers: vec![PeerSpec {
            name: "b".into(),
            address: "memory".into(),
        }],
        debounce: Duration::from_millis(20),
        full_sync_interval: Duration::from_secs(3600),
        backoff_max: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(5),
        heartbeat,
        heartbeat_timeout: Duration::from_millis(800),
        links: cove_sync::admission::LinkLimits {
            max_pending: 16,
            max_pending_per_ip: 4,
            max_links: 64,
        },
        sessions_per_peer: 4,
    };
    let connector = Arc::new(ToB {
        b: b.store.clone(),
        gate: gate.clone(),
        gated,
        opened: AtomicUsize::new(0),
    });
    let replicator = Replicator::with_connector(a.store.clone(), opts, connector);
    let hook = Arc::downgrade(&replicator);
    a.store.set_change_hook(Arc::new(move |user: &str| {
        if let Some(r) = hook.upgrade() {
            r.queue(user);
        }
    }));
    let (stop, stopped) = watch::channel(false);
    replicator.start(stopped);
    Running {
        replicator,
        gate,
        _stop: stop,
    }
}

fn metric(r: &Running, name: &str) -> f64 {
    let text = r.replicator.metrics();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .unwrap_or_else(|| panic!("no {name} in {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

fn sessions(r: &Running) -> f64 {
    metric(r, "cove_replication_sessions_total")
}

/// Poll `done` until it holds; panic after 30 s (a hang guard, not a
/// timing assertion: with two loaded cores, 10 s was seen to pass).
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn has(node: &Node, guid: &MessageGuid) -> bool {
    node.messages("INBOX").iter().any(|m| m.guid == *guid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_committed_while_a_session_runs_reach_the_peer_with_no_further_change() {
    let (a, b) = (Node::new("a"), Node::new("b"));
    let kept = a.deliver("INBOX", "Subject: kept\r\n\r\nkept\r\n");
    let doomed = a.deliver("INBOX", "Subject: doomed\r\n\r\ndoomed\r\n");
    // No heartbeat during the test: only the queue can carry the changes.
    let r = start(&a, &b, Duration::from_secs(3600)).await;
    assert!(has(&b, &kept.guid));
    let done_before = sessions(&r);

    // A session for the user starts and is held once A has sent its delta.
    r.gate.hold_after_need();
    a.deliver("INBOX", "Subject: first\r\n\r\nfirst\r\n");
    tokio::time::timeout(Duration::from_secs(10), r.gate.reached.notified())
        .await
        .expect("a session started and reached its Need");

    // Meanwhile: a delivery, an expunge and a flag change, all committed
    // after the running session took its delta.
    let during = a.deliver("INBOX", "Subject: during\r\n\r\nduring\r\n");
    let inbox = a.mailbox("INBOX");
    a.account.expunge(&inbox.guid, &[doomed.uid]).unwrap();
    a.account
        .set_flags(&inbox.guid, kept.uid, Flags::FLAGGED, &[])
        .unwrap();
    r.gate.release();

    wait_for("the held session and the one after it", || {
        sessions(&r) >= done_before + 2.0
    })
    .await;
    wait_for("all three changes on B", || {
        let inbox = b.messages("INBOX");
        has(&b, &during.guid)
            && !inbox.iter().any(|m| m.guid == doomed.guid)
            && inbox
                .iter()
                .any(|m| m.guid == kept.guid && m.flags.contains(Flags::FLAGGED))
    })
    .await;
    assert_eq!(a.state(), b.state(), "A and B converged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_finds_a_change_no_wakeup_announced() {
    let (a, b) = (Node::new("a"), Node::new("b"));
    let r = start(&a, &b, Duration::from_millis(200)).await;
    assert_eq!(
        metric(&r, "cove_replication_anti_entropy_repairs_total"),
        0.0
    );

    // Another process (the CLI, an import) changes A's index: A's
    // replicator is not told.
    let other = Store::open(
        a.store.data_dir(),
        StoreOptions {
            hostname: "a".into(),
            env: a.store.env().clone(),
            durability: Durability::Batched,
        },
    )
    .unwrap();
    let user = other.user(&Address::parse(USER).unwrap()).unwrap().unwrap();
    let account = other.account(&user).unwrap();
    let blob = other
        .blobs()
        .put(b"Subject: quiet\r\n\r\nquiet\r\n")
        .unwrap();
    let quiet = account
        .append("INBOX", &blob, &cove_store::NewMessage::default())
        .unwrap();

    wait_for("the change on B", || has(&b, &quiet.guid)).await;
    assert!(metric(&r, "cove_replication_anti_entropy_repairs_total") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_answering_is_down_within_the_heartbeat_timeout() {
    let (a, b) = (Node::new("a"), Node::new("b"));
    let r = start(&a, &b, Duration::from_millis(200)).await;
    assert_eq!(metric(&r, "cove_replication_connected"), 1.0);

    // Idle first: nothing queued and no session for a while. A silence
    // that begins inside a session is noticed by the session's own limit
    // (120 s; docs/replication.md), not by the heartbeat, and the first
    // sessions after the link came up may still be running.
    let mut quiet_since = (Instant::now(), sessions(&r));
    wait_for("A to be idle", || {
        let now = (Instant::now(), sessions(&r));
        if now.1 != quiet_since.1 || metric(&r, "cove_replication_queue_users") > 0.0 {
            quiet_since = now;
        }
        now.0 - quiet_since.0 > Duration::from_millis(1000)
    })
    .await;
    // B goes silent; no mail moves.
    let failures = metric(&r, "cove_replication_failures_total");
    assert_eq!(metric(&r, "cove_replication_heartbeat_timeouts_total"), 0.0);
    r.gate.hold_now();
    // Down, for a heartbeat not answered. The link is retried meanwhile
    // (and may be up again by the next look on a loaded machine, or have
    // failed again for another reason, which replaces the last failure's
    // text), so what is watched is what stays: the counters.
    wait_for("A to see B down", || {
        metric(&r, "cove_replication_heartbeat_timeouts_total") > 0.0
            && metric(&r, "cove_replication_failures_total") > failures
    })
    .await;
    assert!(
        r.replicator
            .status_json()
            .contains("\"heartbeat_timeouts\":"),
        "{}",
        r.replicator.status_json()
    );

    // B answers again: up, and the old error is gone.
    r.gate.release();
    wait_for("A to see B up", || {
        metric(&r, "cove_replication_connected") == 1.0
            && r.replicator.status_json().contains("\"last_error\":null")
    })
    .await;
    // What happened stays for the operator who looks afterwards.
    let status = r.replicator.status_json();
    assert!(status.contains("\"last_failure\":{\"error\":"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_session_does_not_hold_the_other_users_of_the_round() {
    let (a, b) = (Node::new("a"), Node::new("b"));
    let other = Address::parse("other@example.org").unwrap();
    for node in [&a, &b] {
        node.store.add_user(&other, None, 0).unwrap();
    }
    let other_account = {
        let user = a.store.user(&other).unwrap().unwrap();
        a.store.account(&user).unwrap()
    };
    let theirs = other_account
        .append(
            "INBOX",
            &a.store
                .blobs()
                .put(b"Subject: theirs\r\n\r\ntheirs\r\n")
                .unwrap(),
            &cove_store::NewMessage::default(),
        )
        .unwrap();
    let mine = a.deliver("INBOX", "Subject: mine\r\n\r\nmine\r\n");

    // The first link A opens stalls once its first session has sent its
    // Need: that user's content does not reach B while it is held.
    let gate = Arc::new(Gate::default());
    gate.hold_after_need();
    let r = start_gated(&a, &b, Duration::from_secs(3600), gate, 1);
    tokio::time::timeout(Duration::from_secs(10), r.gate.reached.notified())
        .await
        .expect("a session started and reached its Need");

    // The other user of the same round reaches B meanwhile.
    let b_other = {
        let user = b.store.user(&other).unwrap().unwrap();
        b.store.account(&user).unwrap()
    };
    let on_b = |guid: &MessageGuid| {
        has(&b, guid) || {
            let inbox = b_other.mailbox("INBOX").unwrap();
            b_other
                .messages(&inbox.guid)
                .unwrap()
                .iter()
                .any(|m| m.guid == *guid)
        }
    };
    wait_for("the user whose session is not held on B", || {
        on_b(&mine.guid) || on_b(&theirs.guid)
    })
    .await;

    r.gate.release();
    wait_for("both users on B", || on_b(&mine.guid) && on_b(&theirs.guid)).await;
}
