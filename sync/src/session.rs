//! One user's sync session over a peer link (docs/replication.md).
//!
//! ```text
//! client                                   server
//! Open{user, since: what I applied of you} ->
//!                                          <- Delta{yours since, since: what I applied of you}
//! Delta{mine since that}                   ->
//! Need{content I lack}                     ->
//!                                          <- blob chunks, BlobsDone
//!                                          <- Need{content it lacks}
//! blob chunks, BlobsDone                   ->
//! (both apply the other's delta)
//! Done{my report}                          ->
//!                                          <- Done{its report}
//! ```
//!
//! Each side applies the other's delta in one index transaction and then
//! records the peer's modseq it has applied (its "mark"): a session cut at
//! any point leaves each side either fully applied or untouched, and the
//! next session resends from the mark. Content travels only when the
//! receiver lacks it (by blake3 id), is verified against its id before it
//! is linked (DESIGN.md invariant 5), and is sent in chunks of 1 MiB.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

use cove_store::UsersMerged;
use cove_store::replica::{
    ApplyProgress, ApplyReport, ContentFeed, Delta, Digest, Mark, MessageState, TombstoneState,
    UserRecord, validate_delta,
};
use cove_store::{Account, Address, Store};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::transport::Link;

mod content;
use content::{receive_blobs, send_blobs};

const CHUNK: usize = 1024 * 1024;
const TAG_MSG: u8 = 0;
const TAG_CHUNK: u8 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub enum Msg {
    Open {
        user: String,
        since: Mark,
    },
    NoSuchUser,
    /// A delta's head; `more` [`Msg::DeltaMore`] frames follow with the
    /// rest of its messages and tombstones (frames stay far below the
    /// link's limit whatever the mailbox's size).
    Delta {
        delta: Delta,
        since: Mark,
        more: u32,
    },
    Need {
        content: Vec<[u8; 32]>,
    },
    BlobsDone,
    Done {
        report: ApplyReport,
        error: Option<String>,
    },
    /// A session for this user is running the other way: try again soon.
    Busy,
    /// Every user this node knows and has removed, with stamps; answered
    /// with the peer's own (the directory merge is last-writer-wins).
    Users {
        users: Vec<UserRecord>,
    },
    DeltaMore {
        messages: Vec<MessageState>,
        tombstones: Vec<TombstoneState>,
    },
    /// Anti-entropy and heartbeat: the sender's digest of each listed
    /// user, answered with the receiver's digest of the same users, in the
    /// same order (`None`: no such user, or no index yet).
    Digest {
        users: Vec<(String, Option<Digest>)>,
    },
}

/// Most users in one [`Msg::Digest`].
pub const DIGEST_MAX_USERS: usize = 4096;

/// Messages (or tombstones) per delta frame: about 2 MiB.
const DELTA_PAGE: usize = 16 * 1024;

fn page<T: Clone>(v: &[T], n: usize) -> Vec<T> {
    let from = (n * DELTA_PAGE).min(v.len());
    let to = ((n + 1) * DELTA_PAGE).min(v.len());
    v[from..to].to_vec()
}

async fn send_delta<S>(link: &mut Link<S>, delta: &Delta, since: Mark) -> Result<(), SyncError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let pages = delta
        .messages
        .len()
        .max(delta.tombstones.len())
        .div_ceil(DELTA_PAGE)
        .max(1);
    let head = Delta {
        epoch: delta.epoch,
        since: delta.since,
        modseq: delta.modseq,
        mailboxes: delta.mailboxes.clone(),
        gone: delta.gone.clone(),
        merged: delta.merged.clone(),
        subscriptions: delta.subscriptions.clone(),
        messages: page(&delta.messages, 0),
        tombstones: page(&delta.tombstones, 0),
        sieve: delta.sieve.clone(),
        complete: delta.complete,
    };
    let more =
        u32::try_from(pages - 1).map_err(|_| SyncError::Protocol("delta too large".into()))?;
    send_msg(
        link,
        &Msg::Delta {
            delta: head,
            since,
            more,
        },
    )
    .await?;
    for n in 1..pages {
        send_msg(
            link,
            &Msg::DeltaMore {
                messages: page(&delta.messages, n),
                tombstones: page(&delta.tombstones, n),
            },
        )
        .await?;
    }
    Ok(())
}

/// The rest of a delta whose head said `more` frames follow.
async fn recv_delta_rest<S>(
    link: &mut Link<S>,
    delta: &mut Delta,
    more: u32,
) -> Result<(), SyncError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    for _ in 0..more {
        match recv_msg(link).await? {
            Msg::DeltaMore {
                messages,
                tombstones,
            } => {
                delta.messages.extend(messages);
                delta.tombstones.extend(tombstones);
            }
            other => return Err(unexpected("DeltaMore", &other)),
        }
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("link: {}", crate::transport::plain_io(.0))]
    Io(#[from] std::io::Error),
    #[error("store: {0}")]
    Store(#[from] cove_store::Error),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("the peer closed the link")]
    Closed,
    /// The blocking task writing received content stopped (its own error
    /// says why).
    #[error("the content writer stopped")]
    WriterGone,
}

impl SyncError {
    /// The link went away (the peer restarted, the network dropped it):
    /// an expected event, not a fault of either node.
    pub fn is_disconnect(&self) -> bool {
        use std::io::ErrorKind;
        match self {
            SyncError::Closed => true,
            SyncError::Io(e) => matches!(
                e.kind(),
                ErrorKind::UnexpectedEof
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
            ),
            _ => false,
        }
    }
}

/// What one session did, from this node's side.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UserSync {
    pub user: String,
    /// What applying the peer's changes did here.
    pub here: ApplyReport,
    /// What applying ours did on the peer.
    pub there: ApplyReport,
    pub blobs_sent: u64,
    pub blobs_received: u64,
    pub content_bytes_sent: u64,
    pub content_bytes_received: u64,
    /// The user does not exist on the peer.
    pub skipped: bool,
    /// The peer was syncing this user with us the other way; nothing done.
    pub busy: bool,
    /// Milliseconds spent exchanging content, and applying the peer's
    /// delta here after the content was all in (the apply runs beside the
    /// content transfer; this is the part that did not overlap it).
    /// Figures for the log and benchmarks.
    #[serde(default)]
    pub content_ms: u64,
    #[serde(default)]
    pub apply_ms: u64,
}

enum Incoming {
    Msg(Msg),
    Chunk {
        id: [u8; 32],
        last: bool,
        data: Vec<u8>,
    },
}

async fn send_msg<S>(link: &mut Link<S>, msg: &Msg) -> Result<(), SyncError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut frame = vec![TAG_MSG];
    frame =
        postcard::to_extend(msg, frame).map_err(|e| SyncError::Protocol(format!("encode: {e}")))?;
    link.send(&frame).await?;
    Ok(())
}

async fn recv<S>(link: &mut Link<S>) -> Result<Incoming, SyncError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    recv_within(link, SILENCE).await
}

async fn recv_within<S>(
    link: &mut Link<S>,
    limit: std::time::Duration,
) -> Result<Incoming, SyncError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let frame = tokio::time::timeout(limit, link.recv())
        .await
        .map_err(|_| SyncError::Protocol(format!("the peer said nothing for {limit:?}")))??
        .ok_or(SyncError::Closed)?;
    decode(frame)
}

/// The longest a peer may stay silent inside a session...
const SILENCE: std::time::Duration = std::time::Duration::from_secs(120);
/// ...except while it applies a delta (a first sync of a big mailbox).
const APPLYING: std::time::Duration = std::time::Duration::from_secs(3600);

/// The peer's `Done`, after it applied our delta.
async fn recv_done<S>(link: &mut Link<S>) -> Result<(ApplyReport, Option<String>), SyncError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    match recv_within(link, APPLYING).await? {
        Incoming::Msg(Msg::Done { report, error }) => Ok((report, error)),
        Incoming::Msg(other) => Err(unexpected("Done", &other)),
        Incoming::Chunk { .. } => Err(SyncError::Protocol("unexpected content chunk".into())),
    }
}

/// Wait for the next session on an idle link (no time limit: links stay
/// open between sessions).
async fn recv_between_sessions<S>(link: &mut Link<S>) -> Result<Incoming, SyncError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let frame = link.recv().await?.ok_or(SyncError::Closed)?;
    decode(frame)
}

fn decode(frame: Vec<u8>) -> Result<Incoming, SyncError> {
    match frame.split_first() {
        Some((&TAG_MSG, body)) => postcard::from_bytes(body)
            .map(Incoming::Msg)
            .map_err(|e| SyncError::Protocol(format!("undecodable message: {e}"))),
        Some((&TAG_CHUNK, body)) if body.len() >= 33 => {
            let mut id = [0u8; 32];
            id.copy_from_slice(&body[..32]);
            Ok(Incoming::Chunk {
                id,
                last: body[32] != 0,
                data: body[33..].to_vec(),
            })
        }
        _ => Err(SyncError::Protocol("unknown frame".into())),
    }
}

async fn recv_msg<S>(link: &mut Link<S>) -> Result<Msg, SyncError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    match recv(link).await? {
        Incoming::Msg(m) => Ok(m),
        Incoming::Chunk { .. } => Err(SyncError::Protocol("unexpected content chunk".into())),
    }
}

fn unexpected(what: &str, got: &Msg) -> SyncError {
    SyncError::Protocol(format!("expected {what}, got {got:?}"))
}

async fn blocking<T, F>(f: F) -> Result<T, SyncError>
where
    F: FnOnce() -> Result<T, cove_store::Error> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SyncError::Protocol(format!("worker failed: {e}")))?
        .map_err(SyncError::Store)
}

/// What the peer sent is over a limit or not its to ask: logged, and the
/// session ends.
fn refuse(why: String) -> SyncError {
    tracing::warn!(error = %why, "replication: refused what the peer sent; the session is cut");
    SyncError::Protocol(why)
}

async fn open_account(store: &Arc<Store>, user: &str) -> Result<Option<Arc<Account>>, SyncError> {
    let store = store.clone();
    let user = user.to_string();
    blocking(move || {
        let address = Address::parse(&user)?;
        match store.user(&address)? {
            Some(u) => Ok(Some(store.account(&u)?)),
            None => Ok(None),
        }
    })
    .await
}

/// The apply of the peer's delta, running beside the session.
type Applying = tokio::task::JoinHandle<Result<ApplyReport, SyncError>>;

/// Ask the peer for the content of `remote` this node lacks, and receive
/// it (verified) while the apply of `remote` runs beside: each chunk of
/// new messages is applied as soon as its content is in (a first sync's
/// apply no longer waits for the last blob, issue 15). Returns the apply,
/// still running, once the content is all in; if receiving fails, the
/// apply stops at its next chunk (those committed stay, as for a session
/// cut between chunks) and the receiving error is returned.
async fn fetch_and_apply<S>(
    link: &mut Link<S>,
    store: &Arc<Store>,
    account: &Arc<Account>,
    peer: &str,
    local: Arc<Delta>,
    remote: Arc<Delta>,
    out: &mut UserSync,
) -> Result<Applying, SyncError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let limits = store.peer_limits();
    let (a, r) = (account.clone(), remote.clone());
    // A delta the apply will refuse gets no content either.
    let valid = validate_delta(&remote, store.env().now_ms(), &limits).is_ok();
    let budget = limits.max_session_bytes;
    let (need, damaged) = blocking(move || {
        let mut need = if valid {
            within_session_budget(a.replica_missing_content(&r)?, &r, budget)
        } else {
            Vec::new()
        };
        // Content whose copy here is corrupt counts as lacking: files are
        // relinked to a good copy here if there is one, the rest is asked
        // for (store's account/content.rs).
        // A repair that fails is logged and tried again next session; it
        // never stops the user's replication.
        let damaged: Vec<[u8; 32]> = match a.repair_content() {
            Ok(lacking) => lacking.into_iter().map(|c| c.0).collect(),
            Err(e) => {
                tracing::warn!(user = %a.email(), error = %e, "replication: could not repair damaged content");
                Vec::new()
            }
        };
        for id in &damaged {
            if !need.contains(id) {
                need.push(*id);
            }
        }
        Ok((need, damaged))
    })
    .await?;
    send_msg(
        link,
        &Msg::Need {
            content: need.clone(),
        },
    )
    .await?;
    link.flush().await?;
    let (feed_tx, feed) = ContentFeed::streamed(need.iter().copied());
    let applying = tokio::spawn(apply(
        store.clone(),
        account.clone(),
        peer.to_string(),
        local,
        remote,
        feed,
    ));
    let received = match receive_blobs(link, store, &need, feed_tx, out).await {
        Ok(r) => r,
        Err(e) => {
            // Stopped by the end of the feed; the session's user lock is
            // held until it has.
            let _ = applying.await;
            return Err(e);
        }
    };
    if damaged.iter().any(|id| received.contains(id)) {
        // The verified copies are installed: relink the damaged files.
        let a = account.clone();
        if let Err(e) = blocking(move || a.repair_content()).await {
            tracing::warn!(user = %account.email(), error = %e, "replication: could not relink damaged content to the copy the peer sent");
        }
    }
    Ok(applying)
}

/// Wait for the apply that [`fetch_and_apply`] started.
async fn applied(applying: Applying) -> Result<ApplyReport, SyncError> {
    applying
        .await
        .map_err(|e| SyncError::Protocol(format!("worker failed: {e}")))?
}

/// The content to ask for in this session: as much as `budget` bytes
/// allows going by the sizes the peer announced (a plan only: what it
/// really sends is counted by [`receive_blobs`]), and at least one blob.
/// Messages whose content is left out wait for the next session (the mark
/// does not move past them).
fn within_session_budget(missing: Vec<[u8; 32]>, remote: &Delta, budget: u64) -> Vec<[u8; 32]> {
    let announced: HashMap<[u8; 32], u64> = remote
        .messages
        .iter()
        .map(|m| (m.content, m.size))
        .collect();
    let mut planned: u64 = 0;
    let mut need = Vec::new();
    for id in missing {
        let size = announced.get(&id).copied().unwrap_or(0);
        if !need.is_empty() && planned.saturating_add(size) > budget {
            break;
        }
        planned = planned.saturating_add(size);
        need.push(id);
    }
    need
}

/// Apply the peer's delta with the content `feed` brings, and advance the
/// mark (unless something was left for later: then the whole delta is
/// asked for again next time).
async fn apply(
    store: Arc<Store>,
    account: Arc<Account>,
    peer: String,
    local: Arc<Delta>,
    remote: Arc<Delta>,
    mut feed: ContentFeed,
) -> Result<ApplyReport, SyncError> {
    let limits = store.peer_limits();
    let (user, peer_name) = (account.email().to_string(), peer.to_string());
    let hook = store.apply_progress_hook().cloned();
    let applied = blocking(move || {
        let mut progress = |p: ApplyProgress| {
            tracing::debug!(peer = %peer, user = %account.email(), applied = p.applied, total = p.total,
                "replication: a chunk of the peer's changes applied");
            if let Some(hook) = &hook {
                hook(account.email(), p);
            }
        };
        let report =
            account.apply_replica(&peer, &local, &remote, &mut feed, &limits, &mut progress)?;
        if report.deferred == 0 {
            let mark = account.peer_mark(&peer)?;
            let next = Mark {
                modseq: remote.modseq,
                epoch: remote.epoch,
            };
            // Never backwards within one epoch (a slower session that
            // started earlier may finish later).
            if next.epoch != mark.epoch || remote.since == 0 || next.modseq > mark.modseq {
                account.set_peer_mark(&peer, next)?;
            }
        }
        Ok(report)
    })
    .await;
    if let Err(SyncError::Store(cove_store::Error::InvalidData(why))) = &applied {
        tracing::warn!(peer = %peer_name, user = %user, error = %why, "replication: the peer's changes were refused (nothing of them applied)");
    }
    applied
}

/// The `Done` that tells the peer how applying its delta went.
fn done(applied: &Result<ApplyReport, SyncError>) -> Msg {
    match applied {
        Ok(r) => Msg::Done {
            report: *r,
            error: None,
        },
        Err(e) => Msg::Done {
            report: ApplyReport::default(),
            error: Some(e.to_string()),
        },
    }
}

/// Sessions one [`sync_user`] runs at most while an apply leaves the two
/// nodes disagreeing.
const FOLLOW_UPS: usize = 3;

/// The connecting side: sync `user` with the peer at the other end.
///
/// A session whose apply on either side was divergent (a fresh UID for a
/// UID given out while the session ran, something left for later) leaves
/// the two nodes disagreeing until another session carries that decision
/// to the other node. That session is run here, at once, on the same link
/// (at most [`FOLLOW_UPS`] more): the nodes must not depend on a later
/// wakeup to agree again. (One that was lost left a message at UID 123 on
/// one node and 125 on the other until the next full sync.)
pub async fn sync_user<S>(
    link: &mut Link<S>,
    store: &Arc<Store>,
    peer: &str,
    user: &str,
) -> Result<UserSync, SyncError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut out = sync_user_once(link, store, peer, user).await?;
    for _ in 0..FOLLOW_UPS {
        // Content left for later (a session's byte budget, a blob gone
        // meanwhile) is the replicator's to retry, paced; a divergent
        // decision (a UID given out while the session ran) is settled now.
        let deferred = out.here.deferred + out.there.deferred > 0;
        if out.busy || out.skipped || deferred || !(out.here.divergent || out.there.divergent) {
            break;
        }
        let next = sync_user_once(link, store, peer, user).await?;
        if next.busy || next.skipped {
            break;
        }
        out.absorb(next);
    }
    Ok(out)
}

impl UserSync {
    /// Add a follow-up session's figures; its reports say what is left.
    fn absorb(&mut self, next: UserSync) {
        self.here.absorb(&next.here);
        self.there.absorb(&next.there);
        self.blobs_sent += next.blobs_sent;
        self.blobs_received += next.blobs_received;
        self.content_bytes_sent += next.content_bytes_sent;
        self.content_bytes_received += next.content_bytes_received;
        self.content_ms += next.content_ms;
        self.apply_ms += next.apply_ms;
    }
}

/// One session of [`sync_user`].
async fn sync_user_once<S>(
    link: &mut Link<S>,
    store: &Arc<Store>,
    peer: &str,
    user: &str,
) -> Result<UserSync, SyncError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut out = UserSync {
        user: user.to_string(),
        ..UserSync::default()
    };
    let Some(account) = open_account(store, user).await? else {
        out.skipped = true;
        return Ok(out);
    };
    let since = {
        let (a, p) = (account.clone(), peer.to_string());
        blocking(move || a.peer_mark(&p)).await?
    };
    send_msg(
        link,
        &Msg::Open {
            user: user.to_string(),
            since,
        },
    )
    .await?;
    link.flush().await?;
    let (remote, their_since) = match recv_msg(link).await? {
        Msg::Delta {
            mut delta,
            since,
            more,
        } => {
            recv_delta_rest(link, &mut delta, more).await?;
            (delta, since)
        }
        Msg::NoSuchUser => {
            out.skipped = true;
            return Ok(out);
        }
        Msg::Busy => {
            out.busy = true;
            return Ok(out);
        }
        other => return Err(unexpected("Delta", &other)),
    };
    let (a, p) = (account.clone(), peer.to_string());
    let local = Arc::new(blocking(move || a.replica_delta(&p, their_since)).await?);
    send_delta(link, &local, Mark::default()).await?;
    let remote_at = Mark {
        modseq: remote.modseq,
        epoch: remote.epoch,
    };
    let started = std::time::Instant::now();
    let applying = fetch_and_apply(
        link,
        store,
        &account,
        peer,
        local.clone(),
        Arc::new(remote),
        &mut out,
    )
    .await?;
    let sent = match recv_msg(link).await {
        Ok(Msg::Need { content }) => {
            send_blobs(link, store, &account, &content, &local, &mut out).await
        }
        Ok(other) => Err(unexpected("Need", &other)),
        Err(e) => Err(e),
    };
    out.content_ms = started.elapsed().as_millis() as u64;
    let started = std::time::Instant::now();
    let applied = applied(applying).await;
    out.apply_ms = started.elapsed().as_millis() as u64;
    sent?;
    send_msg(link, &done(&applied)).await?;
    link.flush().await?;
    let (report, error) = recv_done(link).await?;
    out.there = report;
    if let Some(e) = error {
        return Err(SyncError::Protocol(format!(
            "the peer could not apply: {e}"
        )));
    }
    out.here = applied?;
    skip_echo(&account, peer, remote_at, &out.there).await?;
    prune_history(store, &account, peer, their_since).await;
    Ok(out)
}

/// The accepting side: answer `Open` requests until the peer closes.
pub async fn serve_link<S>(
    link: Link<S>,
    store: Arc<Store>,
    peer: String,
    locks: Arc<crate::UserLocks>,
) -> Result<(), SyncError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    serve_link_counted(link, store, peer, locks, |_, _| {}).await
}

/// [`serve_link`], telling `on_bytes(sent, received)` the link's traffic
/// after each user's session.
pub async fn serve_link_counted<S>(
    mut link: Link<S>,
    store: Arc<Store>,
    peer: String,
    locks: Arc<crate::UserLocks>,
    on_bytes: impl Fn(u64, u64) + Send,
) -> Result<(), SyncError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut counted = (0, 0);
    loop {
        let now = (link.bytes_sent(), link.bytes_received());
        on_bytes(now.0 - counted.0, now.1 - counted.1);
        counted = now;
        let msg = match recv_between_sessions(&mut link).await {
            Ok(Incoming::Msg(m)) => m,
            Ok(Incoming::Chunk { .. }) => {
                return Err(SyncError::Protocol("unexpected content chunk".into()));
            }
            Err(SyncError::Closed) => return Ok(()),
            Err(e) => return Err(e),
        };
        if let Msg::Digest { users } = msg {
            let theirs = users.into_iter().map(|(u, _)| u).collect();
            let mine = digests(&store, &peer, theirs).await?;
            send_msg(&mut link, &Msg::Digest { users: mine }).await?;
            link.flush().await?;
            continue;
        }
        if let Msg::Users { users } = msg {
            let mine = users_of(&store).await?;
            send_msg(&mut link, &Msg::Users { users: mine }).await?;
            link.flush().await?;
            merge_users(&store, users).await?;
            continue;
        }
        let Msg::Open { user, since } = msg else {
            return Err(unexpected("Open", &msg));
        };
        let Some(_guard) = locks.try_lock(&user) else {
            send_msg(&mut link, &Msg::Busy).await?;
            link.flush().await?;
            continue;
        };
        serve_user(&mut link, &store, &peer, &user, since).await?;
    }
}

async fn serve_user<S>(
    link: &mut Link<S>,
    store: &Arc<Store>,
    peer: &str,
    user: &str,
    since: Mark,
) -> Result<UserSync, SyncError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut out = UserSync {
        user: user.to_string(),
        ..UserSync::default()
    };
    let Some(account) = open_account(store, user).await? else {
        send_msg(link, &Msg::NoSuchUser).await?;
        link.flush().await?;
        out.skipped = true;
        return Ok(out);
    };
    let a = account.clone();
    let p = peer.to_string();
    let (local, mark) =
        blocking(move || Ok((a.replica_delta(&p, since)?, a.peer_mark(&p)?))).await?;
    let local = Arc::new(local);
    send_delta(link, &local, mark).await?;
    link.flush().await?;
    let remote = match recv_msg(link).await? {
        Msg::Delta {
            mut delta, more, ..
        } => {
            recv_delta_rest(link, &mut delta, more).await?;
            delta
        }
        other => return Err(unexpected("Delta", &other)),
    };
    let started = std::time::Instant::now();
    match recv_msg(link).await? {
        Msg::Need { content } => {
            send_blobs(link, store, &account, &content, &local, &mut out).await?
        }
        other => return Err(unexpected("Need", &other)),
    }
    let remote_at = Mark {
        modseq: remote.modseq,
        epoch: remote.epoch,
    };
    let applying = fetch_and_apply(
        link,
        store,
        &account,
        peer,
        local,
        Arc::new(remote),
        &mut out,
    )
    .await?;
    out.content_ms = started.elapsed().as_millis() as u64;
    let started = std::time::Instant::now();
    let applied = applied(applying).await;
    out.apply_ms = started.elapsed().as_millis() as u64;
    let (there, their_error) = recv_done(link).await?;
    out.there = there;
    send_msg(link, &done(&applied)).await?;
    link.flush().await?;
    out.here = applied?;
    if their_error.is_none() {
        skip_echo(&account, peer, remote_at, &out.there).await?;
    }
    prune_history(store, &account, peer, since).await;
    Ok(out)
}

/// After a session: record the peer's mark of this node (what it has
/// applied of ours, as it said at the start), and prune this user's
/// history up to what every peer has applied (store's
/// `account/history.rs`). A failure is logged, never the session's.
async fn prune_history(store: &Arc<Store>, account: &Arc<Account>, peer: &str, applied: Mark) {
    let (a, p, keep) = (account.clone(), peer.to_string(), store.history());
    let now = store.env().now_ms();
    let pruned = blocking(move || {
        a.set_peer_applied(&p, applied)?;
        a.prune_history(&keep, now)
    })
    .await;
    match pruned {
        Ok(p) if p.changes + p.tombstones + p.expunged_guids > 0 => {
            tracing::debug!(user = %account.email(), floor = p.floor, changes = p.changes, tombstones = p.tombstones,
                expunged_guids = p.expunged_guids, "replication: history pruned");
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(user = %account.email(), error = %e, "replication: could not prune the history");
        }
    }
}

/// The peer applied our delta in one transaction, right after taking the
/// delta it sent us (its modseqs continue without a gap) and with nothing
/// only it could decide: those changes are ours coming back, so our mark
/// of the peer moves past them and they do not travel back (on a first
/// sync they are as many rows as the mailbox).
async fn skip_echo(
    account: &Arc<Account>,
    peer: &str,
    remote_at: Mark,
    theirs: &ApplyReport,
) -> Result<(), SyncError> {
    let Some((first, last)) = theirs.applied_modseqs else {
        return Ok(());
    };
    if theirs.divergent || first != remote_at.modseq + 1 {
        return Ok(());
    }
    let (a, p) = (account.clone(), peer.to_string());
    blocking(move || {
        // Only if our own apply moved the mark to where the peer's delta
        // ended (nothing left for later here).
        if a.peer_mark(&p)? == remote_at {
            a.set_peer_mark(
                &p,
                Mark {
                    modseq: last,
                    epoch: remote_at.epoch,
                },
            )?;
        }
        Ok(())
    })
    .await
}

/// This node's digest of each of `users` for `peer`.
async fn digests(
    store: &Arc<Store>,
    peer: &str,
    users: Vec<String>,
) -> Result<Vec<(String, Option<Digest>)>, SyncError> {
    if users.len() > DIGEST_MAX_USERS {
        return Err(SyncError::Protocol(format!(
            "a digest of {} users (at most {DIGEST_MAX_USERS})",
            users.len()
        )));
    }
    let (store, peer) = (store.clone(), peer.to_string());
    blocking(move || {
        let mut out = Vec::with_capacity(users.len());
        for user in users {
            let digest = match Address::parse(&user) {
                Ok(address) => match store.user(&address)? {
                    Some(u) => store.replica_digest(&u, &peer)?,
                    None => None,
                },
                Err(_) => None,
            };
            out.push((user, digest));
        }
        Ok(out)
    })
    .await
}

/// The connecting side of an anti-entropy round (also the link's
/// heartbeat): send this node's digest of `users`, and return those on
/// which the peer's answer does not agree (some change has not travelled).
pub async fn exchange_digest<S>(
    link: &mut Link<S>,
    store: &Arc<Store>,
    peer: &str,
    users: Vec<String>,
) -> Result<Vec<String>, SyncError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mine = digests(store, peer, users).await?;
    send_msg(
        link,
        &Msg::Digest {
            users: mine.clone(),
        },
    )
    .await?;
    link.flush().await?;
    let theirs = match recv_msg(link).await? {
        Msg::Digest { users } => users,
        other => return Err(unexpected("Digest", &other)),
    };
    if theirs.len() != mine.len() {
        return Err(SyncError::Protocol(
            "the peer's digest does not answer the users asked".into(),
        ));
    }
    let mut differ = Vec::new();
    for ((user, here), (_, there)) in mine.into_iter().zip(theirs) {
        if let (Some(here), Some(there)) = (here, there)
            && !here.agrees_with(&there)
        {
            differ.push(user);
        }
    }
    Ok(differ)
}

async fn users_of(store: &Arc<Store>) -> Result<Vec<UserRecord>, SyncError> {
    let store = store.clone();
    blocking(move || store.directory().user_records()).await
}

/// Merge a peer's users into the directory; users new here get their
/// account (Maildir, default mailboxes) at once.
async fn merge_users(store: &Arc<Store>, users: Vec<UserRecord>) -> Result<UsersMerged, SyncError> {
    let store = store.clone();
    blocking(move || {
        let merged = store
            .directory()
            .merge_users(&users, &store.peer_limits())?;
        for address in &merged.added {
            if let Some(user) = store.user(address)? {
                store.account(&user)?;
            }
        }
        for a in &merged.added {
            tracing::info!(user = %a, "replication: user added by a peer");
        }
        for a in &merged.removed {
            tracing::info!(user = %a, "replication: user removed by a peer (mail kept)");
        }
        for a in &merged.updated {
            tracing::info!(user = %a, "replication: user's password or quota changed by a peer");
        }
        Ok(merged)
    })
    .await
}

/// The connecting side: swap users with the peer and merge theirs.
pub async fn exchange_users<S>(
    link: &mut Link<S>,
    store: &Arc<Store>,
) -> Result<UsersMerged, SyncError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mine = users_of(store).await?;
    send_msg(link, &Msg::Users { users: mine }).await?;
    link.flush().await?;
    match recv_msg(link).await? {
        Msg::Users { users } => merge_users(store, users).await,
        other => Err(unexpected("Users", &other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cove_store::{MailboxGuid, MessageGuid};

    #[tokio::test]
    async fn a_big_delta_travels_in_pages_and_arrives_whole() {
        let (mut a, mut b) = crate::transport::memory_pair();
        let n = DELTA_PAGE * 2 + 17;
        let delta = Delta {
            epoch: 7,
            since: 3,
            modseq: 99,
            messages: (0..n)
                .map(|i| MessageState {
                    mailbox: MailboxGuid([1; 16]),
                    uid: i as u32 + 1,
                    guid: MessageGuid([(i % 251) as u8; 16]),
                    content: [2; 32],
                    flags: 0,
                    keywords: vec![],
                    clock: String::new(),
                    placed: 0,
                    internal_date: 0,
                    size: 1,
                    peer_has: false,
                })
                .collect(),
            tombstones: (0..5)
                .map(|i| TombstoneState {
                    mailbox: MailboxGuid([1; 16]),
                    uid: i,
                    guid: MessageGuid([0; 16]),
                    stamp: 1,
                })
                .collect(),
            ..Delta::default()
        };
        let sent = delta.clone();
        let writer = tokio::spawn(async move {
            send_delta(&mut a, &sent, Mark::default()).await?;
            a.flush().await?;
            Ok::<_, SyncError>(a)
        });
        let got = match recv_msg(&mut b).await.unwrap() {
            Msg::Delta {
                mut delta, more, ..
            } => {
                assert_eq!(more, 2, "three frames");
                recv_delta_rest(&mut b, &mut delta, more).await.unwrap();
                delta
            }
            other => panic!("got {other:?}"),
        };
        writer.await.unwrap().unwrap();
        assert_eq!(got, delta);
    }
}
