//! Content transfer inside a session: the blobs one side asked for
//! (`Need`), streamed as chunks, then `BlobsDone`.
//!
//! # The problem
//! A first sync moves a whole mailbox: 100,000 blobs of 4 KiB. Done one
//! blob at a time — a blocking-pool round trip to read it, three to write
//! it, and a filesystem flush per blob before it gets its name — it ran at
//! a fifth of rsync's speed on the same link (issue 15): the flushes, not
//! the bytes, were the cost.
//!
//! # What we do
//! - Sending: one blocking task reads (and verifies) the asked blobs in
//!   order and hands them over in batches of a few MiB through a short
//!   queue; the session writes their chunks to the link as they come. The
//!   disk and the link work at the same time, and nothing waits for the
//!   peer between blobs.
//! - Receiving: the session checks every chunk (asked for, not sent twice,
//!   within the blob and session limits) and hands the chunks, in batches,
//!   to one blocking writer. The writer streams each blob into its
//!   temporary file, checks its hash when its last chunk arrives, and hands
//!   the complete blobs to a finisher thread, which makes them durable with
//!   one group flush ([`BlobWriter::finish_all`]) before any of them gets
//!   its name (the order of invariant 5 and of the delivery path, with one
//!   flush per batch instead of one per blob) while the writer goes on
//!   with the next. The finisher flushes once [`FLUSH_MIN_BLOBS`] blobs
//!   (an apply chunk's worth) or [`FLUSH_MIN_BYTES`] bytes wait, or as
//!   soon as the writer has nothing more for the moment (a slow peer's
//!   blobs are not held back), or at the end. Taking whatever was there
//!   each time it was free, it flushed every ~80 blobs of a fast first
//!   sync (255 `syncfs` for 20,000 blobs, each flushing every dirty page
//!   of the filesystem, other programs' too: issue 15). At most
//!   [`FLUSH_BLOBS`] blobs or [`FLUSH_BYTES`] bytes wait for it. Chunks go
//!   from the link to the writer a batch at a time, and at once when the
//!   link has nothing more for the moment (a slow peer's blobs are not
//!   held back).
//! - Each finished batch goes on to the apply at once ([`ContentFeed`]):
//!   the apply links a chunk of messages as soon as that chunk's blobs are
//!   named, while the next chunks' content is still on the link.
//! - Memory stays bounded: at most [`QUEUE`] batches of at most
//!   [`HANDOFF_BYTES`] wait between the link and the disk, in each
//!   direction.
//! - Content received before a session fails is kept (finished and named),
//!   so that a retried session does not send it again; an unfinished blob is
//!   dropped.

use std::collections::HashSet;
use std::sync::Arc;

use cove_store::replica::{Delta, FeedSender};
use cove_store::{Account, BlobStore, BlobWriter, ContentId, Store};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::{
    CHUNK, Incoming, Msg, SyncError, UserSync, blocking, recv, refuse, send_msg, unexpected,
};
use crate::transport::Link;

/// Blobs made durable by one group flush on the receiving side at most
/// (fewer when the finisher is idle)...
const FLUSH_BLOBS: usize = 16 * 1024;
/// ...or bytes, whichever comes first.
const FLUSH_BYTES: u64 = 256 * 1024 * 1024;
/// A flush waits for this many complete blobs (an apply chunk's worth)...
const FLUSH_MIN_BLOBS: usize = 2 * 1024;
/// ...or bytes, unless the writer is idle or done.
const FLUSH_MIN_BYTES: u64 = 32 * 1024 * 1024;
/// Bytes of content handed between the link and the disk at once...
const HANDOFF_BYTES: usize = 4 * 1024 * 1024;
/// ...or chunks (small blobs).
const HANDOFF_CHUNKS: usize = 1024;
/// Batches waiting between the link and the disk.
const QUEUE: usize = 4;

const TAG_CHUNK: u8 = super::TAG_CHUNK;

/// Send the blobs the peer asked for, then `BlobsDone`. Blobs gone here
/// (collected meanwhile) are skipped: the peer defers those messages. A
/// peer gets only the content of the messages in `offered` (this session's
/// user's delta), never another blob it names.
pub(super) async fn send_blobs<S>(
    link: &mut Link<S>,
    store: &Arc<Store>,
    account: &Arc<Account>,
    ids: &[[u8; 32]],
    offered: &Delta,
    out: &mut UserSync,
) -> Result<(), SyncError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let offered: HashSet<[u8; 32]> = offered.messages.iter().map(|m| m.content).collect();
    let others: Vec<[u8; 32]> = ids
        .iter()
        .filter(|id| !offered.contains(*id))
        .copied()
        .collect();
    if !others.is_empty() {
        // Content not in this session's changes: only what this user's
        // mail holds (a peer repairing a damaged copy asks for it).
        let (a, asked) = (account.clone(), others.clone());
        let held = blocking(move || a.holds_content(&asked)).await?;
        if others.iter().any(|id| !held.contains(id)) {
            return Err(refuse(
                "the peer asked for content that this user's mail does not hold".into(),
            ));
        }
    }
    let (tx, mut rx) = mpsc::channel(QUEUE);
    let (blobs, ids) = (store.blobs().clone(), ids.to_vec());
    let reader = tokio::task::spawn_blocking(move || read_blobs(&blobs, &ids, &tx));
    while let Some(batch) = rx.recv().await {
        for (id, bytes) in batch {
            send_blob(link, &id, &bytes).await?;
            out.blobs_sent += 1;
            out.content_bytes_sent += bytes.len() as u64;
        }
    }
    reader
        .await
        .map_err(|e| SyncError::Protocol(format!("worker failed: {e}")))??;
    send_msg(link, &Msg::BlobsDone).await?;
    link.flush().await?;
    Ok(())
}

/// One blob ready to send.
type ReadBlob = ([u8; 32], Vec<u8>);

/// Read `ids` in order, each checked against its id, and hand them to the
/// session in batches; stops early if the session stopped listening.
fn read_blobs(
    blobs: &BlobStore,
    ids: &[[u8; 32]],
    tx: &mpsc::Sender<Vec<ReadBlob>>,
) -> Result<(), cove_store::Error> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    for id in ids {
        let Some(content) = read_verified(blobs, ContentId(*id))? else {
            continue;
        };
        bytes += content.len();
        batch.push((*id, content));
        if bytes >= HANDOFF_BYTES || batch.len() >= HANDOFF_CHUNKS {
            if tx.blocking_send(std::mem::take(&mut batch)).is_err() {
                return Ok(());
            }
            bytes = 0;
        }
    }
    if !batch.is_empty() {
        let _ = tx.blocking_send(batch);
    }
    Ok(())
}

/// A blob's bytes if it is here and matches its id.
fn read_verified(blobs: &BlobStore, cid: ContentId) -> Result<Option<Vec<u8>>, cove_store::Error> {
    match blobs.read(&cid) {
        Ok(bytes) => {
            let actual = ContentId::of(&bytes);
            if actual == cid {
                return Ok(Some(bytes));
            }
            // Corrupt here too: never sent (the peer would refuse it);
            // quarantined, so this node asks its peers for it in turn.
            if let Err(e) = blobs.quarantine(&cid, &actual) {
                tracing::error!(blob = %cid, error = %e, "replication: corrupt blob not sent, and it could not be quarantined");
            }
            Ok(None)
        }
        Err(e) => match cove_store::Error::from(e) {
            e if e.is_missing_content() => Ok(None),
            e => Err(e),
        },
    }
}

async fn send_blob<S>(link: &mut Link<S>, id: &[u8; 32], bytes: &[u8]) -> Result<(), SyncError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut chunks = bytes.chunks(CHUNK).peekable();
    if chunks.peek().is_none() {
        send_chunk(link, id, true, &[]).await?;
    }
    while let Some(c) = chunks.next() {
        send_chunk(link, id, chunks.peek().is_none(), c).await?;
    }
    Ok(())
}

async fn send_chunk<S>(
    link: &mut Link<S>,
    id: &[u8; 32],
    last: bool,
    data: &[u8],
) -> Result<(), SyncError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut frame = Vec::with_capacity(34 + data.len());
    frame.push(TAG_CHUNK);
    frame.extend_from_slice(id);
    frame.push(u8::from(last));
    frame.extend_from_slice(data);
    link.send(&frame).await?;
    Ok(())
}

/// A chunk on its way from the link to the writer.
struct Piece {
    id: [u8; 32],
    /// The first chunk of a blob (an unfinished blob before it is dropped).
    first: bool,
    last: bool,
    data: Vec<u8>,
}

/// Receive blobs until `BlobsDone`, verifying each against its id; each
/// batch made durable and named goes to `feed` at once, which is told the
/// transfer is complete if it ends well (dropped otherwise). Returns the
/// ids received.
///
/// Neither the peer's word nor a size it announced is trusted: a blob
/// longer than `max_blob_bytes`, or more than `max_session_bytes` of
/// content in one session, cuts the session (the unfinished blob is
/// removed).
pub(super) async fn receive_blobs<S>(
    link: &mut Link<S>,
    store: &Arc<Store>,
    asked: &[[u8; 32]],
    feed: FeedSender,
    out: &mut UserSync,
) -> Result<HashSet<[u8; 32]>, SyncError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (tx, rx) = mpsc::channel(QUEUE);
    let blobs = store.blobs().clone();
    let writer = tokio::task::spawn_blocking(move || write_blobs(&blobs, rx, feed));
    let fed = feed_writer(link, store, asked, tx, out).await;
    let written = writer
        .await
        .map_err(|e| SyncError::Protocol(format!("worker failed: {e}")))?;
    match (fed, written) {
        (Ok(()), Ok((received, feed))) => {
            feed.complete();
            Ok(received)
        }
        // The writer's own error explains why it stopped taking chunks.
        (Err(SyncError::WriterGone), Err(e)) | (Ok(()), Err(e)) => Err(e),
        (Err(e), _) => Err(e),
    }
}

/// Read chunks from the link until `BlobsDone`, check them, and pass
/// them to the writer. The chunks of complete blobs that arrived are
/// handed over even if the session fails (they are kept).
async fn feed_writer<S>(
    link: &mut Link<S>,
    store: &Arc<Store>,
    asked: &[[u8; 32]],
    tx: mpsc::Sender<Vec<Piece>>,
    out: &mut UserSync,
) -> Result<(), SyncError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut handoff = Handoff {
        tx,
        batch: Vec::new(),
        bytes: 0,
    };
    let received = receive_chunks(link, store, asked, &mut handoff, out).await;
    let handed = handoff.send().await;
    received.and(handed)
}

/// Chunks on their way to the writer, sent a batch at a time.
struct Handoff {
    tx: mpsc::Sender<Vec<Piece>>,
    batch: Vec<Piece>,
    bytes: usize,
}

impl Handoff {
    async fn push(&mut self, piece: Piece) -> Result<(), SyncError> {
        self.bytes += piece.data.len();
        self.batch.push(piece);
        if self.bytes >= HANDOFF_BYTES || self.batch.len() >= HANDOFF_CHUNKS {
            self.send().await?;
        }
        Ok(())
    }

    async fn send(&mut self) -> Result<(), SyncError> {
        self.bytes = 0;
        if self.batch.is_empty() {
            return Ok(());
        }
        self.tx
            .send(std::mem::take(&mut self.batch))
            .await
            .map_err(|_| SyncError::WriterGone)
    }
}

async fn receive_chunks<S>(
    link: &mut Link<S>,
    store: &Arc<Store>,
    asked: &[[u8; 32]],
    handoff: &mut Handoff,
    out: &mut UserSync,
) -> Result<(), SyncError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let limits = store.peer_limits();
    let asked: HashSet<[u8; 32]> = asked.iter().copied().collect();
    let mut done: HashSet<[u8; 32]> = HashSet::new();
    // The blob being received and its length so far.
    let mut current: Option<([u8; 32], u64)> = None;
    let mut total: u64 = 0;
    loop {
        let incoming = {
            let next = recv(link);
            tokio::pin!(next);
            if handoff.batch.is_empty() {
                next.await?
            } else {
                tokio::select! {
                    biased;
                    got = &mut next => got?,
                    // Nothing more on the link right now: what came goes
                    // on to the disk (and the apply) before we wait.
                    () = std::future::ready(()) => {
                        handoff.send().await?;
                        next.await?
                    }
                }
            }
        };
        let (id, last, data) = match incoming {
            Incoming::Msg(Msg::BlobsDone) => return Ok(()),
            Incoming::Msg(other) => return Err(unexpected("content or BlobsDone", &other)),
            Incoming::Chunk { id, last, data } => (id, last, data),
        };
        if !asked.contains(&id) || done.contains(&id) {
            return Err(SyncError::Protocol(
                "peer sent content nobody asked for".into(),
            ));
        }
        total += data.len() as u64;
        if total > limits.max_session_bytes {
            return Err(refuse(format!(
                "the peer sent more than {} bytes of content in one session",
                limits.max_session_bytes
            )));
        }
        // A chunk of another blob drops the unfinished one.
        let (first, len) = match current.take() {
            Some((cur, len)) if cur == id => (false, len),
            _ => (true, 0),
        };
        let len = len + data.len() as u64;
        if len > limits.max_blob_bytes {
            return Err(refuse(format!(
                "the peer sent a blob of more than {} bytes",
                limits.max_blob_bytes
            )));
        }
        if last {
            done.insert(id);
            out.blobs_received += 1;
            out.content_bytes_received += len;
        } else {
            current = Some((id, len));
        }
        handoff
            .push(Piece {
                id,
                first,
                last,
                data,
            })
            .await?;
    }
}

/// The writer: blobs written as their chunks arrive, checked against their
/// id when complete, and left for a finisher thread that, whenever it is
/// free, takes every complete blob, makes them durable with one flush,
/// names them and hands them to `feed`, while the writer goes on. Whatever
/// stops it, the complete blobs it holds are finished. Returns the ids
/// received, and `feed` to be told the end.
fn write_blobs(
    blobs: &BlobStore,
    mut rx: mpsc::Receiver<Vec<Piece>>,
    feed: FeedSender,
) -> Result<(HashSet<[u8; 32]>, FeedSender), SyncError> {
    let finishing = Finishing::default();
    std::thread::scope(|s| {
        let (finishing, feed) = (&finishing, &feed);
        let finisher = s.spawn(move || finish_batches(finishing, feed));
        let written = write_pieces(blobs, &mut rx, finishing);
        finishing.close();
        let (received, finished) = finisher
            .join()
            .map_err(|_| SyncError::Protocol("the content finisher failed".into()))?;
        match (written, finished) {
            (Ok(()), Ok(())) => Ok(received),
            // The finisher's own error explains why it took no more.
            (Err(SyncError::WriterGone), Err(e)) | (Ok(()), Err(e)) => Err(e),
            (Err(e), _) => Err(e),
        }
    })
    .map(|received| (received, feed))
}

/// Complete blobs, closed, not yet durable.
type Batch = Vec<([u8; 32], BlobWriter)>;

/// Complete blobs between the writer and the finisher (group commit: the
/// finisher takes all there are once a flush is due, [`Waiting::due`], so
/// the flushes stay few while blobs stream in, and a blob waits no longer
/// than the writer is busy).
#[derive(Default)]
struct Finishing {
    state: std::sync::Mutex<Waiting>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct Waiting {
    batch: Batch,
    bytes: u64,
    /// The writer has no more.
    closed: bool,
    /// The writer waits for the link (nothing more to write now).
    idle: bool,
    /// The finisher stopped (its error is its own).
    gone: bool,
}

impl Waiting {
    /// Whether the finisher should flush now: enough waits, or the writer
    /// has nothing more for the moment, or ever.
    fn due(&self) -> bool {
        self.closed
            || (!self.batch.is_empty()
                && (self.idle
                    || self.batch.len() >= FLUSH_MIN_BLOBS
                    || self.bytes >= FLUSH_MIN_BYTES))
    }
}

impl Finishing {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leave a complete blob; waits while [`FLUSH_BLOBS`] blobs or
    /// [`FLUSH_BYTES`] bytes already wait (memory and temporary files stay
    /// bounded).
    fn put(&self, id: [u8; 32], w: BlobWriter) -> Result<(), SyncError> {
        let mut st = self.lock();
        while !st.gone && (st.batch.len() >= FLUSH_BLOBS || st.bytes >= FLUSH_BYTES) {
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.gone {
            return Err(SyncError::WriterGone);
        }
        st.bytes += w.len();
        st.batch.push((id, w));
        self.changed.notify_all();
        Ok(())
    }

    fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// The writer is about to wait for the link (`true`), or has chunks
    /// again (`false`).
    fn idle(&self, idle: bool) {
        let mut st = self.lock();
        st.idle = idle;
        if idle {
            self.changed.notify_all();
        }
    }

    /// All that waits, once a flush is due; `None` once closed and empty.
    fn take(&self) -> Option<Batch> {
        let mut st = self.lock();
        while !st.due() {
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.bytes = 0;
        let batch = std::mem::take(&mut st.batch);
        self.changed.notify_all();
        (!batch.is_empty()).then_some(batch)
    }

    fn stop(&self) {
        self.lock().gone = true;
        self.changed.notify_all();
    }
}

fn write_pieces(
    blobs: &BlobStore,
    rx: &mut mpsc::Receiver<Vec<Piece>>,
    finishing: &Finishing,
) -> Result<(), SyncError> {
    let mut current: Option<([u8; 32], BlobWriter)> = None;
    loop {
        let pieces = match rx.try_recv() {
            Ok(pieces) => pieces,
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                // Nothing more for now: what is complete gets flushed.
                finishing.idle(true);
                let next = rx.blocking_recv();
                finishing.idle(false);
                match next {
                    Some(pieces) => pieces,
                    None => break,
                }
            }
        };
        for p in pieces {
            let mut w = match current.take() {
                Some((id, w)) if id == p.id && !p.first => w,
                _ => blobs.writer().map_err(cove_store::Error::from)?,
            };
            w.write(&p.data).map_err(cove_store::Error::from)?;
            if !p.last {
                current = Some((p.id, w));
                continue;
            }
            let got = w.content_id();
            if got.0 != p.id {
                // DESIGN.md invariant 5: never named, never linked.
                tracing::error!(expected = %ContentId(p.id), got = %got, "replication: the peer sent content that does not match its hash; refused");
                return Err(SyncError::Protocol(
                    "content does not match its hash".into(),
                ));
            }
            w.close().map_err(cove_store::Error::from)?;
            finishing.put(p.id, w)?;
        }
    }
    Ok(())
}

/// Each batch: one flush for all, then their names, then on to the apply.
fn finish_batches(
    finishing: &Finishing,
    feed: &FeedSender,
) -> (HashSet<[u8; 32]>, Result<(), SyncError>) {
    let mut received = HashSet::new();
    while let Some(batch) = finishing.take() {
        let (ids, writers): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        match BlobWriter::finish_all(writers) {
            Ok(blobs) => {
                received.extend(ids.iter().copied());
                feed.send(ids.into_iter().zip(blobs).collect());
            }
            Err(e) => {
                finishing.stop();
                return (received, Err(cove_store::Error::from(e).into()));
            }
        }
    }
    (received, Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cove_store::Durability;

    fn complete(blobs: &BlobStore, i: usize) -> ([u8; 32], BlobWriter) {
        let mut w = blobs.writer().expect("writer");
        w.write(format!("blob {i}").as_bytes()).expect("write");
        w.close().expect("close");
        (w.content_id().0, w)
    }

    // Issue 15: complete blobs wait for an apply chunk's worth before a
    // flush while the writer is busy; once it waits for the link, or is
    // done, what is complete is flushed (a slow peer's blobs are not held
    // back). The finisher used to flush whatever there was each time it
    // was free: 255 `syncfs` for a first sync of 20,000 blobs.
    #[test]
    fn a_flush_waits_for_a_chunk_of_blobs_while_the_writer_is_busy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = BlobStore::open(dir.path().join("blobs"), Durability::Batched).expect("blobs");
        let finishing = Finishing::default();
        for i in 0..10 {
            let (id, w) = complete(&blobs, i);
            finishing.put(id, w).expect("put");
        }
        assert!(!finishing.lock().due(), "10 blobs, the writer busy");
        finishing.idle(true);
        assert!(finishing.lock().due(), "the writer waits for the link");
        assert_eq!(finishing.take().map(|b| b.len()), Some(10));
        assert!(!finishing.lock().due(), "nothing waits");

        finishing.idle(false);
        for i in 0..FLUSH_MIN_BLOBS {
            let (id, w) = complete(&blobs, 100 + i);
            finishing.put(id, w).expect("put");
            assert_eq!(finishing.lock().due(), i + 1 == FLUSH_MIN_BLOBS);
        }
        assert_eq!(finishing.take().map(|b| b.len()), Some(FLUSH_MIN_BLOBS));

        let (id, w) = complete(&blobs, 0);
        finishing.put(id, w).expect("put");
        finishing.close();
        assert_eq!(
            finishing.take().map(|b| b.len()),
            Some(1),
            "the rest at the end"
        );
        assert!(finishing.take().is_none());
    }
}
