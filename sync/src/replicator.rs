//! Which users to sync with which peer, and when (DESIGN.md "Replication").
//!
//! - Any committed change to a user's mail queues that user for every peer
//!   (the store's change hook calls [`Replicator::queue`]); each peer's task
//!   waits `debounce` after the first change, so a burst becomes one
//!   session, then syncs every queued user over its link.
//! - A full sync (every user) runs at start, every `full_sync_interval`,
//!   and whenever a link to the peer is (re)established.
//! - A failed link or session is retried with exponential backoff and
//!   jitter up to `backoff_max`; the users stay queued.
//! - Sessions for one user never run twice at once on a node
//!   ([`UserLocks`]), whichever side started them.
//! - No change waits for the next full sync. Each queued user carries the
//!   number of its latest change; a session takes that number when it
//!   starts and removes the user afterwards only if no change came since
//!   (a change committed while the session ran may be missing from the
//!   delta it sent). And every `heartbeat` the peers compare a digest of
//!   the users changed lately plus a rotating slice of all users (each
//!   side's position and its mark of the other,
//!   `cove_store::replica::Digest`): a user on
//!   which they disagree is synced. Any wakeup lost some other way (a
//!   change another process made, a bug of the same class) heals in
//!   seconds instead of waiting for the hourly full sync. The same round
//!   trip is the link's heartbeat: a peer that does not answer within
//!   `heartbeat_timeout` is down, mail traffic or not.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use cove_store::Store;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::UserLocks;
use crate::admission::{Admission, LinkLimits};
use crate::session::{self, SyncError, UserSync};
use crate::transport::{self, Link, PeerStream, Secret};

type ClientLink = Link<PeerStream>;

/// How long a user counts as changed lately: the anti-entropy round lists
/// it every time until then.
const RECENT: Duration = Duration::from_secs(600);
/// Users of the rotating slice in each anti-entropy round.
const ROTATION: usize = 64;
/// Users changed lately listed in one anti-entropy round at most (in turn,
/// from a cursor): the peer reads a digest per user, from the index file
/// of an account it has closed, and must answer within
/// `heartbeat_timeout`. With every user listed each round, a node that
/// took mail for 10,000 users while its peer was down sent 4,096 per
/// heartbeat; the peer, busy catching up, did not answer within 5 s, the
/// link was dropped as dead and every user queued again (issue 15). With
/// a heartbeat every 3 s, 448 a round still list each of up to 89,000
/// recent users once within [`RECENT`].
const RECENT_PER_DIGEST: usize = 448;

/// Where the last anti-entropy round stopped, in all users and in the
/// users changed lately.
#[derive(Default)]
struct DigestCursor {
    all: Option<String>,
    recent: Option<String>,
}

/// The users of one anti-entropy round: the next [`RECENT_PER_DIGEST`] of
/// the users changed lately and the next [`ROTATION`] of all users, each
/// in address order after its cursor (wrapping). Users queued for the peer
/// are left out: a session is about to compare them anyway, and after a
/// peer was down that is every user.
fn digest_selection(
    mut recent: Vec<String>,
    mut all: Vec<String>,
    queued: impl Fn(&str) -> bool,
    cursor: &mut DigestCursor,
) -> Vec<String> {
    recent.retain(|u| !queued(u));
    recent.sort();
    let mut users = next_slice(&recent, &mut cursor.recent, RECENT_PER_DIGEST);
    all.retain(|u| !queued(u));
    all.sort();
    for u in next_slice(&all, &mut cursor.all, ROTATION) {
        if !users.contains(&u) {
            users.push(u);
        }
    }
    users
}

/// Up to `n` of `sorted` after `cursor` (wrapping); moves the cursor.
fn next_slice(sorted: &[String], cursor: &mut Option<String>, n: usize) -> Vec<String> {
    if sorted.is_empty() {
        return Vec::new();
    }
    let start = cursor
        .as_ref()
        .map_or(0, |c| sorted.partition_point(|u| u <= c));
    let slice: Vec<String> = sorted
        .iter()
        .cycle()
        .skip(start)
        .take(n.min(sorted.len()))
        .cloned()
        .collect();
    *cursor = slice.last().cloned();
    slice
}

/// A link being opened: the link and the name the peer gave, or why not.
pub type Connecting<'a> =
    Pin<Box<dyn Future<Output = Result<(ClientLink, String), String>> + Send + 'a>>;

/// How the replicator reaches a peer: an authenticated link and the name
/// the peer gave. [`TlsConnector`] in production; a test can hand the
/// replicator links of its own making.
pub trait Connector: Send + Sync {
    fn connect<'a>(&'a self, peer: &'a PeerSpec) -> Connecting<'a>;
}

/// TLS over TCP to the peer's address, proving the shared secret
/// ([`transport::connect`]).
pub struct TlsConnector {
    pub secret: Secret,
    pub node: String,
    pub timeout: Duration,
}

impl Connector for TlsConnector {
    fn connect<'a>(&'a self, peer: &'a PeerSpec) -> Connecting<'a> {
        Box::pin(async move {
            transport::connect(&peer.address, &self.secret, &self.node, self.timeout)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// How often the directory is checked for user changes made by the CLI.
const USERS_POLL: Duration = Duration::from_secs(1);

/// A configured peer.
#[derive(Debug, Clone)]
pub struct PeerSpec {
    pub name: String,
    pub address: String,
}

/// How the replicator runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// This node's name (its hostname): what peers know it by.
    pub node: String,
    pub secret: Secret,
    pub peers: Vec<PeerSpec>,
    pub debounce: Duration,
    pub full_sync_interval: Duration,
    pub backoff_max: Duration,
    pub connect_timeout: Duration,
    /// How often the peers compare digests (anti-entropy and heartbeat).
    pub heartbeat: Duration,
    /// A peer that has not answered a heartbeat this long is down.
    pub heartbeat_timeout: Duration,
    /// Bounds on the connections the replication listener holds.
    pub links: LinkLimits,
    /// Users synced with one peer at once, each over a link of its own
    /// (see [`Replicator::sync_round`]); at least 1.
    pub sessions_per_peer: usize,
}

/// One user waiting to be synced with a peer.
#[derive(Debug, Clone, Copy)]
struct Queued {
    /// When the oldest change not yet synced was queued (for the lag).
    since: Instant,
    /// The number of the latest change queued: a session that started
    /// before it may not carry it.
    change: u64,
}

#[derive(Default)]
struct PeerState {
    /// Users waiting.
    queue: BTreeMap<String, Queued>,
    connected: bool,
    /// User lists swapped over the current link (cleared when it drops).
    users_exchanged: bool,
    /// When the peer last answered a heartbeat.
    last_heartbeat: Option<Instant>,
    last_error: Option<String>,
    /// The last failure's reason and when, kept after the link recovers
    /// (`last_error` is cleared then): what an operator asks afterwards.
    last_failure: Option<(String, SystemTime)>,
    last_success: Option<SystemTime>,
    /// Queued-to-synced time of the last user synced.
    last_lag: Option<Duration>,
    full_sync_wanted: bool,
}

impl PeerState {
    /// Queue `user` for a change numbered `change`.
    fn enqueue(&mut self, user: String, now: Instant, change: u64) {
        self.queue
            .entry(user)
            .and_modify(|q| q.change = q.change.max(change))
            .or_insert(Queued { since: now, change });
    }

    /// A session that started when `user`'s entry was `taken` succeeded:
    /// the user leaves the queue, unless a change was queued since (that
    /// change may have been committed after the session took its delta).
    fn synced(&mut self, user: &str, taken: Queued) {
        if self.queue.get(user).map(|q| q.change) == Some(taken.change) {
            self.queue.remove(user);
        }
        self.last_lag = Some(taken.since.elapsed());
    }
}

struct Peer {
    spec: PeerSpec,
    state: Mutex<PeerState>,
    wake: Notify,
    sessions: AtomicU64,
    failures: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    messages_in: AtomicU64,
    /// Users an anti-entropy round found unsynced and not queued.
    repairs: AtomicU64,
    /// Heartbeats the peer did not answer within the timeout.
    silences: AtomicU64,
}

impl Peer {
    fn state(&self) -> std::sync::MutexGuard<'_, PeerState> {
        match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        }
    }
}

/// The replicator of one node.
pub struct Replicator {
    store: Arc<Store>,
    opts: Options,
    locks: Arc<UserLocks>,
    peers: Vec<Arc<Peer>>,
    connector: Arc<dyn Connector>,
    /// Numbers the changes queued (see [`Queued::change`]).
    changes: AtomicU64,
    /// Users changed lately, with when: listed in every digest.
    recent: Mutex<HashMap<String, Instant>>,
    admission: Arc<Admission>,
}

/// What a synchronous replication of one user's change came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replicated {
    /// A peer holds the change.
    Confirmed,
    /// No peer confirmed it within the timeout.
    TimedOut,
    /// Every peer failed before the timeout (none reachable): nothing was
    /// waited for.
    NoPeer,
}

impl Replicator {
    pub fn new(store: Arc<Store>, opts: Options) -> Arc<Replicator> {
        let connector = Arc::new(TlsConnector {
            secret: opts.secret.clone(),
            node: opts.node.clone(),
            timeout: opts.connect_timeout,
        });
        Replicator::with_connector(store, opts, connector)
    }

    /// A replicator that reaches its peers through `connector`.
    pub fn with_connector(
        store: Arc<Store>,
        opts: Options,
        connector: Arc<dyn Connector>,
    ) -> Arc<Replicator> {
        let peers = opts
            .peers
            .iter()
            .map(|spec| {
                Arc::new(Peer {
                    spec: spec.clone(),
                    state: Mutex::new(PeerState {
                        full_sync_wanted: true,
                        ..PeerState::default()
                    }),
                    wake: Notify::new(),
                    sessions: AtomicU64::new(0),
                    failures: AtomicU64::new(0),
                    bytes_sent: AtomicU64::new(0),
                    bytes_received: AtomicU64::new(0),
                    messages_in: AtomicU64::new(0),
                    repairs: AtomicU64::new(0),
                    silences: AtomicU64::new(0),
                })
            })
            .collect();
        Arc::new(Replicator {
            store,
            admission: Admission::new(opts.links),
            opts,
            locks: Arc::new(UserLocks::default()),
            peers,
            connector,
            changes: AtomicU64::new(0),
            recent: Mutex::new(HashMap::new()),
        })
    }

    /// Queue a user for every peer (called on every committed change).
    pub fn queue(&self, user: &str) {
        let now = Instant::now();
        let change = self.next_change();
        if let Ok(mut recent) = self.recent.lock() {
            recent.insert(user.to_string(), now);
        }
        for peer in &self.peers {
            peer.state().enqueue(user.to_string(), now, change);
            peer.wake.notify_one();
        }
    }

    /// Whether this node holds every peer's users: user lists swapped with
    /// each peer since this node started or since the link last came
    /// back. Until then an address unknown here may exist on a peer (LMTP
    /// answers 450, not 550).
    pub fn users_exchanged_since_link_up(&self) -> bool {
        self.peers.iter().all(|p| p.state().users_exchanged)
    }

    fn next_change(&self) -> u64 {
        self.changes.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The users of the next anti-entropy round ([`digest_selection`]).
    async fn digest_users(&self, peer: &Peer, cursor: &mut DigestCursor) -> Vec<String> {
        let recent: Vec<String> = match self.recent.lock() {
            Ok(mut recent) => {
                recent.retain(|_, t| t.elapsed() < RECENT);
                recent.keys().cloned().collect()
            }
            Err(_) => Vec::new(),
        };
        let all = self.all_users().await;
        let s = peer.state();
        digest_selection(recent, all, |u| s.queue.contains_key(u), cursor)
    }

    /// One anti-entropy round (the heartbeat): queue the users on which
    /// the peer disagrees. An error means the link is down.
    async fn heartbeat(
        &self,
        peer: &Peer,
        link: &mut ClientLink,
        cursor: &mut DigestCursor,
    ) -> Result<(), String> {
        let users = self.digest_users(peer, cursor).await;
        let round = session::exchange_digest(link, &self.store, &peer.spec.name, users);
        let differ = match tokio::time::timeout(self.opts.heartbeat_timeout, round).await {
            Ok(Ok(differ)) => differ,
            Ok(Err(e)) => return Err(format!("heartbeat: {e}")),
            Err(_) => {
                peer.silences.fetch_add(1, Ordering::Relaxed);
                return Err(format!(
                    "the peer did not answer a heartbeat within {:?}",
                    self.opts.heartbeat_timeout
                ));
            }
        };
        let now = Instant::now();
        let mut s = peer.state();
        s.last_heartbeat = Some(now);
        for user in differ {
            if s.queue.contains_key(&user) {
                continue;
            }
            peer.repairs.fetch_add(1, Ordering::Relaxed);
            tracing::info!(peer = %peer.spec.name, user = %user, "replication: anti-entropy found a change that has not travelled; syncing the user");
            s.enqueue(user, now, self.next_change());
        }
        Ok(())
    }

    /// Start one task per peer; they stop when `stop` turns true.
    pub fn start(
        self: &Arc<Self>,
        stop: watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        self.peers
            .iter()
            .map(|p| tokio::spawn(self.clone().run_peer(p.clone(), stop.clone())))
            .collect()
    }

    /// Run a directory read on the blocking pool: SQLite may wait on its
    /// lock (the CLI writes the same file) and must not stall the reactor.
    /// `None` if the read failed (logged) or the task died.
    async fn read_directory<T, F>(&self, what: &'static str, read: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(&cove_store::Directory) -> cove_store::Result<T> + Send + 'static,
    {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || read(store.directory())).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "replication: cannot read the user directory ({what})");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "replication: the user directory read ({what}) failed");
                None
            }
        }
    }

    async fn users_version(&self) -> Option<u64> {
        self.read_directory("version", |d| d.users_version()).await
    }

    async fn users_changed_since(&self, version: u64) -> Vec<String> {
        self.read_directory("changed users", move |d| {
            Ok(d.user_records()?
                .into_iter()
                .filter(|u| u.stamp > version && !u.removed)
                .map(|u| u.address)
                .collect())
        })
        .await
        .unwrap_or_default()
    }

    async fn all_users(&self) -> Vec<String> {
        self.read_directory("all users", |d| {
            Ok(d.list()?.iter().map(|u| u.address.to_string()).collect())
        })
        .await
        .unwrap_or_default()
    }

    async fn run_peer(self: Arc<Self>, peer: Arc<Peer>, mut stop: watch::Receiver<bool>) {
        let mut link: Option<ClientLink> = None;
        let mut failures: u32 = 0;
        // The directory's version last swapped with this peer (users are
        // changed by the CLI, another process: polled).
        let mut users_sent: Option<u64> = None;
        let mut next_full = Instant::now() + self.opts.full_sync_interval;
        let mut next_heartbeat = Instant::now() + self.opts.heartbeat;
        let mut rotation = DigestCursor::default();
        // Links beside `link` for the users of a round (opened when a round
        // has more than one user, kept while `link` is up).
        let mut extra: Vec<ClientLink> = Vec::new();
        loop {
            if *stop.borrow() {
                break;
            }
            let idle = {
                let s = peer.state();
                s.queue.is_empty() && !s.full_sync_wanted
            };
            if idle && self.users_version().await == users_sent && Instant::now() < next_heartbeat {
                tokio::select! {
                    _ = peer.wake.notified() => {
                        // Let a burst of changes gather into one session.
                        tokio::time::sleep(self.opts.debounce).await;
                    }
                    _ = tokio::time::sleep_until(next_full.into()) => {}
                    _ = tokio::time::sleep_until(next_heartbeat.into()) => {}
                    _ = tokio::time::sleep(USERS_POLL) => {
                        if self.users_version().await == users_sent {
                            continue;
                        }
                    }
                    _ = stop.changed() => continue,
                }
            }
            if Instant::now() >= next_full {
                peer.state().full_sync_wanted = true;
                next_full = Instant::now() + self.opts.full_sync_interval;
            }
            if link.is_none() {
                let connecting = self.connector.connect(&peer.spec);
                let connected = tokio::select! {
                    c = connecting => c,
                    _ = stop.changed() => break,
                };
                match connected {
                    Ok((l, name)) => {
                        if name != peer.spec.name {
                            tracing::warn!(peer = %peer.spec.name, address = %peer.spec.address, answered = %name, "replication: the peer answers under another name; check [[replication.peers]]");
                        }
                        tracing::info!(peer = %peer.spec.name, "replication link up");
                        let mut s = peer.state();
                        s.connected = true;
                        s.last_error = None;
                        s.last_heartbeat = Some(Instant::now());
                        next_heartbeat = Instant::now() + self.opts.heartbeat;
                        // A peer that comes back gets a full sync, and
                        // its users again (added while the link was down).
                        s.full_sync_wanted = true;
                        users_sent = None;
                        link = Some(l);
                    }
                    Err(e) => {
                        next_heartbeat = Instant::now() + self.opts.heartbeat;
                        self.failed(&peer, &e, &mut failures, &mut stop).await;
                        continue;
                    }
                }
            }
            let Some(l) = link.as_mut() else { continue };
            if Instant::now() >= next_heartbeat {
                next_heartbeat = Instant::now() + self.opts.heartbeat;
                if let Err(e) = self.heartbeat(&peer, l, &mut rotation).await {
                    link = None;
                    close_all(extra.drain(..));
                    self.failed(&peer, &e, &mut failures, &mut stop).await;
                    continue;
                }
            }
            let version = self.users_version().await;
            if version != users_sent {
                match session::exchange_users(l, &self.store).await {
                    Ok(merged) => {
                        // Users new here, and users changed here since the
                        // last swap, need a sync.
                        let now = Instant::now();
                        let changed = self.users_changed_since(users_sent.unwrap_or(0)).await;
                        let change = self.next_change();
                        let mut s = peer.state();
                        for a in merged.added.iter().map(|a| a.to_string()).chain(changed) {
                            s.enqueue(a, now, change);
                        }
                        s.users_exchanged = true;
                        users_sent = version;
                    }
                    Err(e) => {
                        link = None;
                        close_all(extra.drain(..));
                        self.failed(&peer, &format!("users: {e}"), &mut failures, &mut stop)
                            .await;
                        continue;
                    }
                }
            }
            let full = std::mem::take(&mut peer.state().full_sync_wanted);
            if full {
                let now = Instant::now();
                let users = self.all_users().await;
                let change = self.next_change();
                let mut s = peer.state();
                for u in users {
                    s.enqueue(u, now, change);
                }
            }
            let batch: Vec<(String, Queued)> = peer
                .state()
                .queue
                .iter()
                .map(|(u, q)| (u.clone(), *q))
                .collect();
            let Some(main) = link.take() else { continue };
            let Round { main, broken, busy } =
                self.sync_round(&peer, main, &mut extra, batch, &stop).await;
            match broken {
                Some(e) => {
                    close_all(main.into_iter().chain(extra.drain(..)));
                    self.failed(&peer, &e, &mut failures, &mut stop).await;
                }
                None => {
                    link = main;
                    failures = 0;
                }
            }
            if busy {
                // The peer is syncing those users with us right now; ours
                // stay queued for the next round.
                tokio::time::sleep(self.busy_pause(&peer.spec.name)).await;
            }
        }
        for l in link.into_iter().chain(extra) {
            close(l).await;
        }
    }

    /// One round over the queued users: `batch` taken by up to
    /// `sessions_per_peer` workers, each with a link of its own (`main`
    /// and the links in `extra`, topped up here), so a returning peer's
    /// thousands of users are not worked through one at a time, each
    /// waiting for the last one's round trips and applies. The node whose
    /// name sorts higher takes the users in reverse order: after a peer
    /// was down both nodes queue every user, and walking them in the same
    /// order would have them meet on each user (the second gets Busy).
    async fn sync_round(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        main: ClientLink,
        extra: &mut Vec<ClientLink>,
        mut batch: Vec<(String, Queued)>,
        stop: &watch::Receiver<bool>,
    ) -> Round {
        let want = self.opts.sessions_per_peer.clamp(1, batch.len().max(1));
        while extra.len() + 1 < want {
            match self.connector.connect(&peer.spec).await {
                Ok((l, _)) => extra.push(l),
                Err(e) => {
                    // Fewer workers this round; the main link carries on.
                    tracing::debug!(peer = %peer.spec.name, error = %e, "replication: an extra link was not opened");
                    break;
                }
            }
        }
        if self.opts.node > peer.spec.name {
            batch.reverse();
        }
        let work = Arc::new(Mutex::new(batch.into_iter()));
        let mut workers = tokio::task::JoinSet::new();
        for (i, l) in std::iter::once(main).chain(extra.drain(..)).enumerate() {
            let (me, peer, work, stop) = (self.clone(), peer.clone(), work.clone(), stop.clone());
            workers.spawn(async move {
                let (l, outcome) = me.sync_users(&peer, l, &work, stop).await;
                (i, l, outcome)
            });
        }
        let mut round = Round {
            main: None,
            broken: None,
            busy: false,
        };
        while let Some(joined) = workers.join_next().await {
            let (i, l, outcome) = match joined {
                Ok(x) => x,
                Err(e) => {
                    round
                        .broken
                        .get_or_insert(format!("a session task failed: {e}"));
                    continue;
                }
            };
            round.busy |= outcome.busy;
            match outcome.broken {
                Some(e) => {
                    round.broken.get_or_insert(e);
                    close_all(std::iter::once(l));
                }
                None if i == 0 => round.main = Some(l),
                None => extra.push(l),
            }
        }
        if round.main.is_none() {
            round
                .broken
                .get_or_insert_with(|| "the main link was lost".into());
        }
        round
    }

    /// One worker of [`Replicator::sync_round`]: sync users taken from
    /// `work` over `l` until none is left or a session fails.
    async fn sync_users(
        &self,
        peer: &Peer,
        mut l: ClientLink,
        work: &Mutex<std::vec::IntoIter<(String, Queued)>>,
        mut stop: watch::Receiver<bool>,
    ) -> (ClientLink, Outcome) {
        let mut out = Outcome::default();
        loop {
            let next = match work.lock() {
                Ok(mut w) => w.next(),
                Err(p) => p.into_inner().next(),
            };
            let Some((user, queued)) = next else { break };
            let started = (l.bytes_sent(), l.bytes_received());
            let result = {
                let _guard = self.locks.lock(&user).await;
                // Shutting down: a session dropped half-way leaves
                // nothing half-applied (see session.rs).
                tokio::select! {
                    r = session::sync_user(&mut l, &self.store, &peer.spec.name, &user) => r,
                    _ = stop.changed() => Err(SyncError::Protocol("shutting down".into())),
                }
            };
            peer.bytes_sent
                .fetch_add(l.bytes_sent() - started.0, Ordering::Relaxed);
            peer.bytes_received
                .fetch_add(l.bytes_received() - started.1, Ordering::Relaxed);
            match result {
                Ok(report) if report.busy => out.busy = true,
                Ok(report) if report.here.deferred + report.there.deferred > 0 => {
                    // Something could not be applied yet (content not
                    // available): the user stays queued and is retried.
                    peer.sessions.fetch_add(1, Ordering::Relaxed);
                    log_report(&peer.spec.name, &report);
                    out.busy = true;
                }
                Ok(report) => {
                    peer.sessions.fetch_add(1, Ordering::Relaxed);
                    peer.messages_in
                        .fetch_add(report.here.messages_added, Ordering::Relaxed);
                    log_report(&peer.spec.name, &report);
                    let mut s = peer.state();
                    s.synced(&user, queued);
                    s.last_success = Some(self.store.env().clock.now());
                    s.last_error = None;
                }
                Err(e) => {
                    out.broken = Some(format!("{user}: {e}"));
                    break;
                }
            }
        }
        (l, out)
    }

    /// How long to wait after the peer answered Busy. Two nodes that each
    /// start a session for the same user at the same moment both get Busy;
    /// with equal pauses they would retry in step and collide again and
    /// again. So the pause is random, and the node whose name sorts higher
    /// waits longer, which lets the other one through.
    fn busy_pause(&self, peer: &str) -> Duration {
        busy_pause(self.opts.debounce, &self.opts.node, peer, random_unit())
    }

    /// Record a failure and wait the backoff (exponential, with jitter).
    async fn failed(
        &self,
        peer: &Peer,
        error: &str,
        failures: &mut u32,
        stop: &mut watch::Receiver<bool>,
    ) {
        peer.failures.fetch_add(1, Ordering::Relaxed);
        *failures = failures.saturating_add(1);
        {
            let mut s = peer.state();
            if s.connected || s.last_error.as_deref() != Some(error) {
                tracing::warn!(peer = %peer.spec.name, error = %error, "replication with this peer failed; retrying with backoff");
            }
            s.connected = false;
            s.users_exchanged = false;
            s.last_error = Some(error.to_string());
            s.last_failure = Some((error.to_string(), self.store.env().clock.now()));
        }
        let base = Duration::from_millis(250)
            .saturating_mul(1u32 << (*failures).min(16))
            .min(self.opts.backoff_max);
        let jitter = base.mul_f64(0.5 + random_unit() / 2.0);
        tokio::select! {
            _ = tokio::time::sleep(jitter) => {}
            _ = stop.changed() => {}
        }
    }

    /// Accept peers' links on `listener` until `stop`.
    pub async fn accept_loop(
        self: Arc<Self>,
        listener: TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let (tcp, addr) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "replication accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = stop.changed() => return,
            };
            // Over a limit: closed before any TLS work.
            let pending = match self.admission.pending(addr.ip()) {
                Ok(p) => p,
                Err(why) => {
                    self.admission.refused(addr, why);
                    continue;
                }
            };
            let me = self.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let (link, name) = match transport::accept(
                    tcp,
                    &acceptor,
                    &me.opts.secret,
                    &me.opts.node,
                    me.opts.connect_timeout,
                )
                .await
                {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(peer = %addr, error = %e, "replication link refused");
                        return;
                    }
                };
                drop(pending);
                let _admitted = match me.admission.link() {
                    Ok(a) => a,
                    Err(why) => {
                        me.admission.refused(addr, why);
                        return;
                    }
                };
                if !me.peers.iter().any(|p| p.spec.name == name) {
                    tracing::warn!(peer = %addr, name = %name, "replication link refused: not a configured peer");
                    return;
                }
                tracing::info!(peer = %name, address = %addr, "replication link accepted");
                let counters = me.peers.iter().find(|p| p.spec.name == name).cloned();
                let on_bytes = move |sent: u64, received: u64| {
                    if let Some(p) = &counters {
                        p.bytes_sent.fetch_add(sent, Ordering::Relaxed);
                        p.bytes_received.fetch_add(received, Ordering::Relaxed);
                    }
                };
                if let Err(e) = session::serve_link_counted(
                    link,
                    me.store.clone(),
                    name.clone(),
                    me.locks.clone(),
                    on_bytes,
                )
                .await
                {
                    if e.is_disconnect() {
                        tracing::info!(peer = %name, reason = %e, "replication link from the peer closed");
                    } else {
                        tracing::warn!(peer = %name, error = %e, "replication session from peer failed");
                    }
                }
            });
        }
    }

    /// Sync now, over fresh links: one user or every user, with every
    /// peer. A report per peer and user.
    pub async fn sync_now(&self, user: Option<String>) -> Result<Vec<(String, UserSync)>, String> {
        let users = match user {
            Some(u) => vec![u],
            None => self.all_users().await,
        };
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for peer in &self.peers {
            match self.sync_with(peer, &users, true).await {
                Ok(reports) => out.extend(reports.into_iter().map(|r| (peer.spec.name.clone(), r))),
                Err(e) => errors.push(format!("{}: {e}", peer.spec.name)),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors.join("; "))
        }
    }

    async fn sync_with(
        &self,
        peer: &Peer,
        users: &[String],
        with_users: bool,
    ) -> Result<Vec<UserSync>, SyncError> {
        let (mut link, _) = self
            .connector
            .connect(&peer.spec)
            .await
            .map_err(SyncError::Protocol)?;
        if with_users {
            session::exchange_users(&mut link, &self.store).await?;
        }
        let mut reports = Vec::new();
        for user in users {
            let _guard = self.locks.lock(user).await;
            let mut r = session::sync_user(&mut link, &self.store, &peer.spec.name, user).await?;
            // The peer is syncing this user with us: wait for it, then ours.
            for _ in 0..100 {
                if !r.busy {
                    break;
                }
                tokio::time::sleep(self.busy_pause(&peer.spec.name)).await;
                r = session::sync_user(&mut link, &self.store, &peer.spec.name, user).await?;
            }
            peer.sessions.fetch_add(1, Ordering::Relaxed);
            reports.push(r);
        }
        peer.bytes_sent
            .fetch_add(link.bytes_sent(), Ordering::Relaxed);
        peer.bytes_received
            .fetch_add(link.bytes_received(), Ordering::Relaxed);
        let _ = link.shutdown().await;
        Ok(reports)
    }

    /// Make a user's latest changes reach at least one peer within
    /// `timeout` (synchronous delivery).
    pub async fn replicate_now(&self, user: &str, timeout: Duration) -> Replicated {
        let users = [user.to_string()];
        let attempt = async {
            for peer in &self.peers {
                if let Ok(r) = self.sync_with(peer, &users, false).await
                    && r.iter().all(|r| !r.skipped && !r.busy)
                {
                    return Replicated::Confirmed;
                }
            }
            Replicated::NoPeer
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .unwrap_or(Replicated::TimedOut)
    }

    /// `GET /sync/status`: each peer as JSON.
    pub fn status_json(&self) -> String {
        let mut out = String::from("{\"node\":");
        json_str(&mut out, &self.opts.node);
        out.push_str(",\"peers\":[");
        for (i, p) in self.peers.iter().enumerate() {
            let s = p.state();
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"name\":");
            json_str(&mut out, &p.spec.name);
            out.push_str(",\"address\":");
            json_str(&mut out, &p.spec.address);
            let oldest = s
                .queue
                .values()
                .map(|q| q.since)
                .min()
                .map(|t| t.elapsed().as_secs_f64());
            let _ = write!(
                out,
                ",\"connected\":{},\"users_queued\":{},\"oldest_unsynced_secs\":{},\"sessions\":{},\"failures\":{},\"heartbeat_timeouts\":{},\"last_error\":",
                s.connected,
                s.queue.len(),
                oldest.map_or("null".to_string(), |o| format!("{o:.3}")),
                p.sessions.load(Ordering::Relaxed),
                p.failures.load(Ordering::Relaxed),
                p.silences.load(Ordering::Relaxed),
            );
            match &s.last_error {
                Some(e) => json_str(&mut out, e),
                None => out.push_str("null"),
            }
            let now = self.store.env().clock.now();
            let ago = |t: SystemTime| {
                now.duration_since(t)
                    .map_or("0.000".to_string(), |d| format!("{:.3}", d.as_secs_f64()))
            };
            out.push_str(",\"last_failure\":");
            match &s.last_failure {
                Some((e, at)) => {
                    out.push_str("{\"error\":");
                    json_str(&mut out, e);
                    let _ = write!(out, ",\"secs_ago\":{}}}", ago(*at));
                }
                None => out.push_str("null"),
            }
            let _ = write!(
                out,
                ",\"last_success_secs_ago\":{}}}",
                s.last_success.map_or("null".to_string(), ago)
            );
        }
        out.push_str("]}");
        out
    }

    /// `cove sync status`: one line per peer, for people.
    pub fn status_table(&self) -> String {
        let mut out = format!(
            "node {}\n{:<20} {:<22} {:<5} {:>6} {:>9} {:>9} {:>9}  {}\n",
            self.opts.node,
            "PEER",
            "ADDRESS",
            "LINK",
            "QUEUED",
            "OLDEST",
            "SESSIONS",
            "FAILURES",
            "LAST ERROR"
        );
        for p in &self.peers {
            let s = p.state();
            let oldest = s
                .queue
                .values()
                .map(|q| q.since)
                .min()
                .map_or("-".to_string(), |t| {
                    format!("{:.1}s", t.elapsed().as_secs_f64())
                });
            let _ = writeln!(
                out,
                "{:<20} {:<22} {:<5} {:>6} {:>9} {:>9} {:>9}  {}",
                p.spec.name,
                p.spec.address,
                if s.connected { "up" } else { "down" },
                s.queue.len(),
                oldest,
                p.sessions.load(Ordering::Relaxed),
                p.failures.load(Ordering::Relaxed),
                s.last_error.as_deref().unwrap_or("-"),
            );
        }
        out
    }

    /// `GET /metrics`: Prometheus text.
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        let gauges: [(&str, &str, &str); 10] = [
            (
                "cove_replication_connected",
                "gauge",
                "1 if the link to the peer is up",
            ),
            (
                "cove_replication_queue_users",
                "gauge",
                "users waiting to be synced with the peer",
            ),
            (
                "cove_replication_oldest_unsynced_seconds",
                "gauge",
                "age of the oldest change not yet synced to the peer",
            ),
            (
                "cove_replication_last_lag_seconds",
                "gauge",
                "time from a user's change to its sync, for the last user synced",
            ),
            (
                "cove_replication_sessions_total",
                "counter",
                "user sync sessions completed with the peer",
            ),
            (
                "cove_replication_failures_total",
                "counter",
                "failed links or sessions with the peer",
            ),
            (
                "cove_replication_bytes_sent_total",
                "counter",
                "bytes sent to the peer",
            ),
            (
                "cove_replication_bytes_received_total",
                "counter",
                "bytes received from the peer",
            ),
            (
                "cove_replication_anti_entropy_repairs_total",
                "counter",
                "users found unsynced by a digest comparison and not queued (a change whose wakeup was missed)",
            ),
            (
                "cove_replication_heartbeat_timeouts_total",
                "counter",
                "heartbeats the peer did not answer within heartbeat_timeout (the link went silent)",
            ),
        ];
        for (i, (name, kind, help)) in gauges.iter().enumerate() {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for p in &self.peers {
                let s = p.state();
                let v = match i {
                    0 => f64::from(u8::from(s.connected)),
                    1 => s.queue.len() as f64,
                    2 => s
                        .queue
                        .values()
                        .map(|q| q.since)
                        .min()
                        .map_or(0.0, |t| t.elapsed().as_secs_f64()),
                    3 => s.last_lag.map_or(0.0, |d| d.as_secs_f64()),
                    4 => p.sessions.load(Ordering::Relaxed) as f64,
                    5 => p.failures.load(Ordering::Relaxed) as f64,
                    6 => p.bytes_sent.load(Ordering::Relaxed) as f64,
                    7 => p.bytes_received.load(Ordering::Relaxed) as f64,
                    8 => p.repairs.load(Ordering::Relaxed) as f64,
                    _ => p.silences.load(Ordering::Relaxed) as f64,
                };
                let _ = writeln!(out, "{name}{{peer=\"{}\"}} {v}", p.spec.name);
            }
        }
        out
    }
}

/// What a round of [`Replicator::sync_round`] came to.
struct Round {
    /// The main link back, unless the round broke.
    main: Option<ClientLink>,
    /// The first session or link that failed.
    broken: Option<String>,
    /// Some user stays queued: the peer was syncing it, or part of it
    /// could not be applied yet.
    busy: bool,
}

/// What one worker of a round came to.
#[derive(Default)]
struct Outcome {
    broken: Option<String>,
    busy: bool,
}

/// Close a link politely (the peer sees a clean end, not an error).
async fn close(mut l: ClientLink) {
    let _ = tokio::time::timeout(Duration::from_secs(5), l.shutdown()).await;
}

/// Close links in the background (a peer that stopped answering must not
/// hold the replicator in a shutdown).
fn close_all(links: impl Iterator<Item = ClientLink>) {
    for l in links {
        tokio::spawn(close(l));
    }
}

/// The pause after Busy: between 1 and 2 debounces for the node whose
/// name sorts lower, between 3 and 6 for the other (`r` in [0, 1]), so the
/// two never retry at the same moment twice.
fn busy_pause(debounce: Duration, node: &str, peer: &str, r: f64) -> Duration {
    let base = debounce.max(Duration::from_millis(20));
    let base = if node > peer { base * 3 } else { base };
    base.mul_f64(1.0 + r)
}

/// A random number in [0, 1].
fn random_unit() -> f64 {
    let mut r = [0u8; 2];
    let _ = getrandom::fill(&mut r);
    f64::from(u16::from_le_bytes(r)) / f64::from(u16::MAX)
}

fn log_report(peer: &str, r: &UserSync) {
    if r.skipped {
        tracing::warn!(peer = %peer, user = %r.user, "replication: the user does not exist on the peer (add it there too: users are not replicated)");
        return;
    }
    if r.here.changed() || r.there.changed() {
        tracing::info!(
            peer = %peer, user = %r.user,
            added = r.here.messages_added, moved = r.here.messages_moved,
            renumbered = r.here.messages_renumbered, flags = r.here.flags_changed,
            expunged = r.here.messages_expunged, deferred = r.here.deferred,
            peer_added = r.there.messages_added, blobs_in = r.blobs_received, blobs_out = r.blobs_sent,
            content_ms = r.content_ms, apply_ms = r.apply_ms,
            "replicated"
        );
    }
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A human-readable summary of a `sync now`.
pub fn summarize(reports: &[(String, UserSync)]) -> String {
    let mut out = String::new();
    for (peer, r) in reports {
        if r.skipped {
            let _ = writeln!(out, "{peer} {}: not on the peer, skipped", r.user);
            continue;
        }
        let _ = writeln!(
            out,
            "{peer} {}: received {} new, {} moved, {} renumbered, {} flag changes, {} expunged; peer received {} new, {} moved, {} renumbered, {} flag changes, {} expunged; content {} blobs ({} bytes) in, {} blobs ({} bytes) out",
            r.user,
            r.here.messages_added,
            r.here.messages_moved,
            r.here.messages_renumbered,
            r.here.flags_changed,
            r.here.messages_expunged,
            r.there.messages_added,
            r.there.messages_moved,
            r.there.messages_renumbered,
            r.there.flags_changed,
            r.there.messages_expunged,
            r.blobs_received,
            r.content_bytes_received,
            r.blobs_sent,
            r.content_bytes_sent,
        );
    }
    if out.is_empty() {
        out.push_str("nothing to sync\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_busy_the_two_nodes_never_pause_alike() {
        let d = Duration::from_millis(50);
        for r in [0.0, 0.3, 1.0] {
            for q in [0.0, 0.7, 1.0] {
                let lower = busy_pause(d, "node-a", "node-b", r);
                let higher = busy_pause(d, "node-b", "node-a", q);
                assert!(lower <= d * 2 && higher >= d * 3, "{lower:?} vs {higher:?}");
            }
        }
    }

    /// After a peer was down every user is queued and recent: the
    /// heartbeat's digest lists none of them (it listed 4,096 before, and
    /// the busy peer missed the 5 s timeout). Recent users that are not
    /// queued are listed in turn, a bounded number per round, every one
    /// within a few rounds.
    #[test]
    fn heartbeat_digests_are_bounded_and_skip_queued_users() {
        let users: Vec<String> = (0..10_000).map(|i| format!("u{i:05}@x.org")).collect();
        let mut cursor = DigestCursor::default();
        let all_queued = digest_selection(users.clone(), users.clone(), |_| true, &mut cursor);
        assert!(
            all_queued.is_empty(),
            "{} queued users listed",
            all_queued.len()
        );

        let queued = |u: &str| u.ends_with("7@x.org");
        let mut seen = std::collections::HashSet::new();
        let rounds = 10_000 / RECENT_PER_DIGEST + 1;
        for _ in 0..rounds {
            let round = digest_selection(users.clone(), users.clone(), queued, &mut cursor);
            assert!(
                round.len() <= RECENT_PER_DIGEST + ROTATION,
                "{} listed",
                round.len()
            );
            assert!(round.len() <= session::DIGEST_MAX_USERS);
            assert!(round.iter().all(|u| !queued(u)));
            seen.extend(round);
        }
        assert_eq!(seen.len(), 9_000, "every recent user not queued, in turn");
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        json_str(&mut out, "a\"b\\c\n");
        assert_eq!(out, "\"a\\\"b\\\\c\\u000a\"");
    }
}
