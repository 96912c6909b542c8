//! Replication test harness: stores in temporary directories, one user on
//! each, synced over in-memory links that a test can cut after N bytes, and
//! the checks of DESIGN.md invariants 2 and 3.
//!
//! Each [`Node`] remembers every (mailbox, UIDVALIDITY, UID) -> GUID it was
//! ever seen to hold ([`Node::observe`]): a UID that later names another
//! GUID on that node is a broken invariant 2, whatever else happened; and
//! the highest UID it was seen to show in each mailbox: a message that
//! appears later under a UID at or below it is one that a client fetching
//! only UIDs above the last it saw would never see (RFC 3501 §2.3.1.1).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use cove_store::{
    Account, Address, Delivered, Durability, Entropy, Env, Error, Flags, MailboxGuid, MailboxInfo,
    MessageGuid, MessageMeta, NewMessage, Store, StoreOptions, SystemClock, Uid,
};
use cove_sync::UserLocks;
use cove_sync::session::{SyncError, UserSync, serve_link, sync_user};
use cove_sync::transport::Link;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub const USER: &str = "user@example.org";

/// Deterministic GUIDs, different on every node: blake3(node, counter).
struct NodeEntropy {
    node: String,
    n: AtomicU64,
}

impl Entropy for NodeEntropy {
    fn fill(&self, out: &mut [u8]) {
        let n = self.n.fetch_add(1, Ordering::SeqCst);
        let mut h = blake3::Hasher::new();
        h.update(self.node.as_bytes());
        h.update(&n.to_le_bytes());
        h.finalize_xof().fill(out);
    }
}

/// One node: a store of its own with [`USER`] on it.
pub struct Node {
    pub name: String,
    pub store: Arc<Store>,
    pub locks: Arc<UserLocks>,
    pub account: Arc<Account>,
    /// (mailbox, UIDVALIDITY, UID) -> the GUID it was seen to name.
    seen: Mutex<BTreeMap<(MailboxGuid, u32, Uid), MessageGuid>>,
    /// (mailbox, UIDVALIDITY) -> the highest UID it was seen to show.
    highest: Mutex<BTreeMap<(MailboxGuid, u32), Uid>>,
    _dir: tempfile::TempDir,
}

impl Node {
    pub fn new(name: &str) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = Env {
            clock: Arc::new(SystemClock),
            entropy: Arc::new(NodeEntropy {
                node: name.to_string(),
                n: AtomicU64::new(0),
            }),
        };
        let store = Store::open(
            dir.path(),
            StoreOptions {
                hostname: name.to_string(),
                env,
                durability: Durability::Batched,
            },
        )
        .expect("open store");
        let user = store
            .add_user(&Address::parse(USER).expect("address"), None, 0)
            .expect("add user");
        let account = store.account(&user).expect("account");
        Node {
            name: name.to_string(),
            store: Arc::new(store),
            locks: Arc::new(UserLocks::default()),
            account,
            seen: Mutex::new(BTreeMap::new()),
            highest: Mutex::new(BTreeMap::new()),
            _dir: dir,
        }
    }

    pub fn mailbox(&self, name: &str) -> MailboxInfo {
        self.account
            .mailbox(name)
            .unwrap_or_else(|e| panic!("{}: mailbox {name}: {e}", self.name))
    }

    /// Deliver `body` to `mailbox` (LMTP's path).
    pub fn deliver(&self, mailbox: &str, body: &str) -> Delivered {
        self.append(mailbox, body, Flags::empty(), &[])
    }

    /// APPEND `body` to `mailbox` with flags and keywords.
    pub fn append(&self, mailbox: &str, body: &str, flags: Flags, keywords: &[&str]) -> Delivered {
        self.try_append(mailbox, body, flags, keywords)
            .unwrap_or_else(|e| panic!("{}: append to {mailbox}: {e}", self.name))
    }

    pub fn try_append(
        &self,
        mailbox: &str,
        body: &str,
        flags: Flags,
        keywords: &[&str],
    ) -> Result<Delivered, Error> {
        let blob = self.store.blobs().put(body.as_bytes())?;
        let msg = NewMessage {
            flags,
            keywords: keywords.iter().map(|k| k.to_string()).collect(),
            ..NewMessage::default()
        };
        let d = self.account.append(mailbox, &blob, &msg)?;
        self.observe();
        Ok(d)
    }

    /// The messages of a mailbox, by UID.
    pub fn messages(&self, mailbox: &str) -> Vec<MessageMeta> {
        let mb = self.mailbox(mailbox);
        self.account.messages(&mb.guid).expect("messages")
    }

    /// Where the message `guid` is: (mailbox name, its row).
    pub fn find(&self, guid: &MessageGuid) -> Option<(String, MessageMeta)> {
        let mut found = None;
        for mb in self.account.mailboxes().expect("mailboxes") {
            let messages = match self.account.messages(&mb.guid) {
                Ok(messages) => messages,
                // Deleted (by the peer's replication) since the list above
                // was read: nothing of it to observe now.
                Err(cove_store::Error::NotFound(_)) => continue,
                Err(e) => panic!("{}: messages of {}: {e}", self.name, mb.name),
            };
            for m in messages {
                if m.guid == *guid {
                    assert!(
                        found.is_none(),
                        "{}: message {guid} is in two places",
                        self.name
                    );
                    found = Some((mb.name.clone(), m));
                }
            }
        }
        found
    }

    /// Record every UID this node now shows; panic if one names another
    /// message than it did before (DESIGN.md invariant 2), or if a UID
    /// appears at or below the highest this node showed in that mailbox
    /// before (UIDs of new arrivals only ascend, RFC 3501 §2.3.1.1). A
    /// mailbox deleted here forgets its highest UID: no client can have
    /// it selected, and mail that brings it back starts its view afresh.
    pub fn observe(&self) {
        let mut seen = self.seen.lock().expect("seen");
        let mut highest = self.highest.lock().expect("highest");
        let mailboxes = self.account.mailboxes().expect("mailboxes");
        highest.retain(|(g, v), _| {
            mailboxes
                .iter()
                .any(|mb| mb.guid == *g && mb.uidvalidity == *v)
        });
        for mb in mailboxes {
            let high = highest.get(&(mb.guid, mb.uidvalidity)).copied();
            let messages = match self.account.messages(&mb.guid) {
                Ok(messages) => messages,
                // Deleted (by the peer's replication) since the list above
                // was read: nothing of it to observe now.
                Err(cove_store::Error::NotFound(_)) => continue,
                Err(e) => panic!("{}: messages of {}: {e}", self.name, mb.name),
            };
            for m in messages {
                let key = (mb.guid, mb.uidvalidity, m.uid);
                match seen.get(&key) {
                    Some(g) if *g != m.guid => panic!(
                        "{}: UID {} of mailbox {} ({}) named {g} and now names {} (invariant 2)",
                        self.name, m.uid, mb.name, mb.guid, m.guid
                    ),
                    Some(_) => {}
                    None => {
                        if let Some(high) = high.filter(|h| m.uid <= *h) {
                            panic!(
                                "{}: message {} appeared at UID {} of mailbox {} ({}), at or below UID {high} shown before (RFC 3501 §2.3.1.1)",
                                self.name, m.guid, m.uid, mb.name, mb.guid
                            );
                        }
                        seen.insert(key, m.guid);
                    }
                }
                let h = highest.entry((mb.guid, mb.uidvalidity)).or_insert(0);
                *h = (*h).max(m.uid);
            }
        }
    }

    /// Everything invariant 3 says must be the same on every node.
    pub fn state(&self) -> NodeState {
        let mut mailboxes = BTreeMap::new();
        for mb in self.account.mailboxes().expect("mailboxes") {
            let messages = self
                .account
                .messages(&mb.guid)
                .expect("messages")
                .into_iter()
                .map(|m| {
                    let mut kw = m.keywords.clone();
                    kw.sort();
                    (m.uid, (m.guid, m.flags.bits(), kw))
                })
                .collect();
            mailboxes.insert(
                mb.guid,
                MailboxView {
                    name: mb.name.clone(),
                    uidvalidity: mb.uidvalidity,
                    messages,
                },
            );
        }
        NodeState { mailboxes }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxView {
    pub name: String,
    pub uidvalidity: u32,
    /// UID -> (GUID, flag bits, keywords sorted).
    pub messages: BTreeMap<Uid, (MessageGuid, u8, Vec<String>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    pub mailboxes: BTreeMap<MailboxGuid, MailboxView>,
}

impl NodeState {
    /// Every GUID and where it is; panics if one is in two places.
    pub fn guids(&self, node: &str) -> BTreeMap<MessageGuid, (MailboxGuid, Uid)> {
        let mut out = BTreeMap::new();
        for (mb, view) in &self.mailboxes {
            for (uid, (g, _, _)) in &view.messages {
                if let Some(prev) = out.insert(*g, (*mb, *uid)) {
                    panic!(
                        "{node}: message {g} is in two places: {prev:?} and {:?}",
                        (mb, uid)
                    );
                }
            }
        }
        out
    }
}

/// Where a link is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutSide {
    /// The connecting side's stream fails.
    Client,
    /// The accepting side's stream fails.
    Server,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    pub side: CutSide,
    /// Bytes (read and written) the cut end's stream carries before it
    /// fails.
    pub after: usize,
}

/// A stream that fails once it has carried `left` bytes either way: a link
/// cut mid-session.
pub struct Budget<S> {
    inner: S,
    left: usize,
}

impl<S> Budget<S> {
    pub fn new(inner: S, left: usize) -> Budget<S> {
        Budget { inner, left }
    }
}

fn cut_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "link cut by the test")
}

impl<S: AsyncRead + Unpin> AsyncRead for Budget<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.left == 0 {
            return Poll::Ready(Err(cut_error()));
        }
        let want = buf.remaining().min(self.left);
        let mut tmp = vec![0u8; want];
        let mut rb = ReadBuf::new(&mut tmp);
        match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                buf.put_slice(rb.filled());
                self.left -= n;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Budget<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.left == 0 {
            return Poll::Ready(Err(cut_error()));
        }
        let n = buf.len().min(self.left);
        match Pin::new(&mut self.inner).poll_write(cx, &buf[..n]) {
            Poll::Ready(Ok(k)) => {
                self.left -= k;
                Poll::Ready(Ok(k))
            }
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What a session did, seen from both ends.
#[derive(Debug)]
pub struct Outcome {
    pub client: Result<UserSync, SyncError>,
    pub server: Result<(), SyncError>,
}

impl Outcome {
    /// Whether the session changed anything on either node.
    pub fn changed(&self) -> bool {
        match &self.client {
            // Busy: the peer was syncing this user the other way; nothing
            // was done, so nothing is known to be quiet.
            Ok(s) => s.busy || s.here.changed() || s.there.changed(),
            Err(_) => true,
        }
    }
}

/// A stream that runs `during` once, when it has written `at` bytes: user
/// operations made while a session runs (on the connecting side, past its
/// `Open` frame, that is after it took its delta and before it applies the
/// peer's).
pub struct During<'a, S> {
    inner: S,
    at: usize,
    written: usize,
    during: Option<Box<dyn FnOnce() + Send + 'a>>,
}

impl<S> During<'_, S> {
    fn wrote(&mut self, n: usize) {
        self.written += n;
        if self.written >= self.at
            && let Some(f) = self.during.take()
        {
            f();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for During<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for During<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.wrote(n);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One session of `a` (connecting) with `b` (accepting), optionally cut.
pub async fn sync_with(a: &Node, b: &Node, cut: Option<Cut>) -> Outcome {
    sync_during(a, b, cut, usize::MAX, || {}).await
}

/// [`sync_with`], running `during` once the connecting side has written
/// `at` bytes (never, if it writes fewer).
pub async fn sync_during<'a>(
    a: &Node,
    b: &Node,
    cut: Option<Cut>,
    at: usize,
    during: impl FnOnce() + Send + 'a,
) -> Outcome {
    let (ca, cb) = tokio::io::duplex(256 * 1024);
    let budget = |side: CutSide| match cut {
        Some(c) if c.side == side => c.after,
        _ => usize::MAX,
    };
    let mut client = Link::new(During {
        inner: Budget::new(ca, budget(CutSide::Client)),
        at,
        written: 0,
        during: Some(Box::new(during)),
    });
    let server = Link::new(Budget::new(cb, budget(CutSide::Server)));
    let task = tokio::spawn(serve_link(
        server,
        b.store.clone(),
        a.name.clone(),
        b.locks.clone(),
    ));
    let client_result = {
        let _guard = a.locks.lock(USER).await;
        sync_user(&mut client, &a.store, &b.name, USER).await
    };
    drop(client);
    let server_result = task.await.expect("the serving task panicked");
    a.observe();
    b.observe();
    Outcome {
        client: client_result,
        server: server_result,
    }
}

/// One complete session; panics if either end fails.
pub async fn sync(a: &Node, b: &Node) -> UserSync {
    let out = sync_with(a, b, None).await;
    if let Err(e) = &out.server {
        panic!("{} serving {}: {e}", b.name, a.name);
    }
    match out.client {
        Ok(s) if s.busy => panic!("{} answered Busy to {}", b.name, a.name),
        Ok(s) => s,
        Err(e) => panic!("{} syncing with {}: {e}", a.name, b.name),
    }
}

/// Rounds of sessions between every pair until one round changes nothing
/// (at most `max_rounds`). Returns the number of rounds run.
pub async fn sync_until_quiet(nodes: &[Node], max_rounds: usize) -> usize {
    for round in 1..=max_rounds {
        let mut changed = false;
        for i in 0..nodes.len() {
            for j in 0..nodes.len() {
                if i != j {
                    changed |= sync_with(&nodes[i], &nodes[j], None).await.changed();
                }
            }
        }
        if !changed {
            return round;
        }
    }
    max_rounds
}

/// DESIGN.md invariant 3 across `nodes`: the same mailboxes (GUID, name,
/// UIDVALIDITY), the same UID -> GUID map in each, the same flags and
/// keywords, no GUID in two places; and every GUID in `must_exist` present.
/// Returns the common state.
pub fn assert_converged(nodes: &[Node], must_exist: &BTreeSet<MessageGuid>) -> NodeState {
    let first = nodes[0].state();
    let guids = first.guids(&nodes[0].name);
    for n in &nodes[1..] {
        let s = n.state();
        s.guids(&n.name);
        if s != first {
            panic!(
                "{} and {} differ:\n{}\n--- vs ---\n{}\ndifferences: {:?}",
                nodes[0].name,
                n.name,
                describe(&first),
                describe(&s),
                differences(&first, &s)
            );
        }
    }
    for g in must_exist {
        assert!(
            guids.contains_key(g),
            "message {g} was acknowledged and never expunged, yet is gone:\n{}",
            describe(&first)
        );
    }
    first
}

/// The mailboxes whose views differ between two states.
fn differences(
    a: &NodeState,
    b: &NodeState,
) -> Vec<(MailboxGuid, Option<MailboxView>, Option<MailboxView>)> {
    let keys: BTreeSet<MailboxGuid> = a
        .mailboxes
        .keys()
        .chain(b.mailboxes.keys())
        .copied()
        .collect();
    keys.into_iter()
        .filter(|k| a.mailboxes.get(k) != b.mailboxes.get(k))
        .map(|k| {
            (
                k,
                a.mailboxes.get(&k).cloned(),
                b.mailboxes.get(&k).cloned(),
            )
        })
        .collect()
}

/// A readable dump of a node's state, for failure messages.
pub fn describe(s: &NodeState) -> String {
    let mut out = String::new();
    for (g, v) in &s.mailboxes {
        out.push_str(&format!(
            "  {} [{}] uidvalidity {}\n",
            v.name,
            &g.to_hex()[..8],
            v.uidvalidity
        ));
        for (uid, (mg, flags, kw)) in &v.messages {
            out.push_str(&format!(
                "    {uid}: {} flags {flags:#x} {kw:?}\n",
                &mg.to_hex()[..8]
            ));
        }
    }
    out
}
