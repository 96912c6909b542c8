//! The per-user index (`index.sqlite`, WAL).
//!
//! # Why an index beside the Maildir
//! The Maildir is the truth for which messages exist and their system flags;
//! the index is the truth for what a Maildir cannot say: UIDs and UIDVALIDITY,
//! modseqs, keywords, mailbox GUIDs, expunge tombstones and the change log
//! that IDLE sessions and the replicator read from any modseq on.
//!
//! # Schema
//! - `meta(key, value)`: schema version and the user-wide modseq counter.
//!   One counter for all mailboxes keeps every mailbox's modseqs increasing
//!   (RFC 7162 only asks for that) and makes the change log one sequence.
//! - `meta(key, value)` also keeps `uidvalidity`, the last UIDVALIDITY given
//!   out: a new mailbox always gets one above every earlier one, so a name
//!   deleted and created again within a second never shows an old
//!   UIDVALIDITY with new UIDs (RFC 3501 §2.3.1.1).
//! - `mailbox`: GUID, name, folder dir, UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ,
//!   special-use. Its `subscribed` column is unused since schema 2. A new
//!   mailbox's id is above every id a tombstone names, so the tombstones of a
//!   deleted mailbox never attach to a later one.
//! - `subscription(name)`: subscribed names (RFC 3501 §6.3.6), which need not
//!   exist; [`MailboxInfo::subscribed`] is derived from it.
//! - `message`: one row per message instance, keyed by (mailbox, UID); the
//!   GUID is unique per user (a GUID lives in at most one mailbox).
//! - `tombstone`: (mailbox, UID, GUID, modseq) of every expunge, so that a
//!   message missing on one replica is never brought back once expunged.
//! - `change`: the change log, one row per modseq, or per run of modseqs
//!   for a flag change on many messages (`flagrun`: the run's first
//!   modseq, each message's UID and flags in the run's order).
//!
//! # Durability
//! WAL mode. With `synchronous=FULL` every commit fsyncs the WAL; in the
//! default batched mode commits run with `synchronous=NORMAL` and the group
//! flush of `durability.rs` makes them durable before anything is
//! acknowledged.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use crate::changes::{Change, ChangeKind, FlagRun};
use crate::ids::{ContentId, Flags, MailboxGuid, MessageGuid, ModSeq, Uid};
use crate::{IoContext, Result};

/// 1: first version. 2: the `subscription` table (filled from
/// `mailbox.subscribed`). 3: `mailbox.first_recent`. 4: replication stamps
/// (`message.placed`, `message.clock`, `tombstone.stamp`,
/// `mailbox.name_stamp`, `mailbox_gone`, `subscription_stamp`,
/// `peer_mark`). 5: a flag change on many messages is one change-log row
/// (`flagrun`, see [`crate::changes::FlagRun`]), and the message table has
/// one modseq index (`message_modseq`, by mailbox), not two: a STORE moves
/// one index entry per message.
const SCHEMA_VERSION: i64 = 5;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS mailbox(
  id INTEGER PRIMARY KEY,
  guid BLOB NOT NULL UNIQUE,
  name TEXT NOT NULL UNIQUE,
  dir TEXT NOT NULL UNIQUE,
  uidvalidity INTEGER NOT NULL,
  uidnext INTEGER NOT NULL,
  highestmodseq INTEGER NOT NULL,
  special_use TEXT,
  subscribed INTEGER NOT NULL DEFAULT 0,
  first_recent INTEGER NOT NULL DEFAULT 1,
  name_stamp INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS message(
  mailbox_id INTEGER NOT NULL,
  uid INTEGER NOT NULL,
  guid BLOB NOT NULL UNIQUE,
  content_id BLOB NOT NULL,
  flags INTEGER NOT NULL,
  keywords TEXT NOT NULL DEFAULT '',
  modseq INTEGER NOT NULL,
  internal_date INTEGER NOT NULL,
  size INTEGER NOT NULL,
  base TEXT NOT NULL,
  file TEXT NOT NULL,
  placed INTEGER NOT NULL DEFAULT 0,
  clock TEXT NOT NULL DEFAULT '',
  PRIMARY KEY(mailbox_id, uid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tombstone(
  mailbox_id INTEGER NOT NULL,
  uid INTEGER NOT NULL,
  guid BLOB NOT NULL,
  modseq INTEGER NOT NULL,
  stamp INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY(mailbox_id, uid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS change(
  modseq INTEGER PRIMARY KEY,
  mailbox_guid BLOB NOT NULL,
  kind TEXT NOT NULL,
  uid INTEGER,
  guid BLOB,
  detail TEXT
);
CREATE TABLE IF NOT EXISTS subscription(name TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS message_modseq ON message(mailbox_id, modseq);
CREATE INDEX IF NOT EXISTS tombstone_modseq ON tombstone(modseq);
CREATE INDEX IF NOT EXISTS tombstone_guid ON tombstone(guid);
-- Expunges whose tombstones a renumbering dropped (a mailbox merged into
-- the peer's, or gave way to its UIDVALIDITY: the UIDs mean nothing now),
-- by GUID with the newest stamp: what they said about their messages still
-- holds (replica.rs, `expunged_at`). Created on open: no schema version
-- (an older cove ignores it).
CREATE TABLE IF NOT EXISTS expunged_guid(
  guid BLOB PRIMARY KEY,
  stamp INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mailbox_gone(
  guid BLOB PRIMARY KEY,
  id INTEGER NOT NULL,
  name TEXT NOT NULL,
  stamp INTEGER NOT NULL
) WITHOUT ROWID;
-- Mailboxes that merged into another (replica.rs, `MailboxMerged`): this
-- node's and those peers told of. Created on open (an older cove ignores
-- it).
CREATE TABLE IF NOT EXISTS mailbox_merged(
  guid BLOB PRIMARY KEY,
  into_guid BLOB NOT NULL
) WITHOUT ROWID;
-- The UIDNEXT a mailbox had here when it was deleted or merged away: if a
-- peer's mail makes it again under its GUID, UIDs below are not given
-- again, whatever tombstones were pruned since (replica.rs, `create`).
CREATE TABLE IF NOT EXISTS mailbox_floor(
  guid BLOB PRIMARY KEY,
  uidnext INTEGER NOT NULL
) WITHOUT ROWID;
-- Messages an import batch is about to link into a Maildir, at the old
-- server's UID (account/import.rs, Durability): a file the reconciling
-- scan finds without a row is one of these if its GUID is listed, and is
-- indexed as imported, not as mail cove placed.
CREATE TABLE IF NOT EXISTS import_pending(
  guid BLOB PRIMARY KEY,
  mailbox_id INTEGER NOT NULL,
  uid INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subscription_stamp(
  name TEXT PRIMARY KEY,
  subscribed INTEGER NOT NULL,
  stamp INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS peer_mark(
  peer TEXT PRIMARY KEY,
  modseq INTEGER NOT NULL,
  epoch INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
-- Per peer: this node's modseq up to which the peer has applied its
-- changes (the peer's mark of this node), what the history is pruned to
-- (account/history.rs). Created on open: no schema version.
CREATE TABLE IF NOT EXISTS peer_applied(
  peer TEXT PRIMARY KEY,
  modseq INTEGER NOT NULL,
  epoch INTEGER NOT NULL
) WITHOUT ROWID;
-- Derived data (account/derived.rs): each content that has any gets a
-- number in arrival order (`derived_content`: one insert at a random place,
-- its content id's, per message), and its views are kept under (kind,
-- number) (`derived_view`): a message's seven views are appended at the
-- ends of seven ranges instead of landing on seven random pages, and a
-- command that wants one kind for a whole mailbox (SEARCH SUBJECT) reads
-- that kind's range in arrival order. AUTOINCREMENT: a number is never
-- given twice, so a view left behind can never be taken for another
-- content's. Created on open, no schema version; the tables they replace
-- (`derived`, `derived_by_kind`) are moved into them by `move_derived`.
CREATE TABLE IF NOT EXISTS derived_content(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  content_id BLOB NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS derived_view(
  kind INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  data BLOB NOT NULL,
  PRIMARY KEY(kind, seq)
) WITHOUT ROWID;
";

/// Bumped each time SQLite reports a damaged database (corrupt, not a
/// database, a read short of a page), whichever database of the process it
/// was: every open index then checks itself once ([`intact`]) at its next
/// use (account.rs, `conn`). The error does not say which file it came
/// from; a check of each open index once per such event is cheap next to
/// serving a damaged one until an operator notices.
static CORRUPTION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub(crate) fn corruption_seen() {
    CORRUPTION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// How many damaged-database reports the process has had.
pub(crate) fn corruption_generation() -> u64 {
    CORRUPTION.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether SQLite finds the index intact (`PRAGMA quick_check`: every page
/// read, no index cross-check).
pub(crate) fn intact(conn: &Connection) -> bool {
    matches!(
        conn.query_row("PRAGMA quick_check(1)", [], |r| r.get::<_, String>(0)),
        Ok(ref s) if s == "ok"
    )
}

/// Open (creating if needed) one of cove's SQLite databases (`cove.db`,
/// `index.sqlite`, `fts.sqlite`), readable by cove's user only: created
/// 0600 before SQLite opens it (its `-wal` and `-shm` take the database's
/// mode), and an existing one tightened to that (one log line).
pub(crate) fn open_private(path: &Path) -> Result<Connection> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let made = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path);
    let made = made.and_then(|f| {
        let mode = f.metadata()?.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            f.set_permissions(std::fs::Permissions::from_mode(mode & 0o700))?;
            tracing::info!(path = %path.display(), from = format!("{mode:o}"), to = format!("{:o}", mode & 0o700), "made a database readable by cove's user only");
        }
        Ok(())
    });
    made.ctx(|| format!("open {}", path.display()))?;
    Ok(Connection::open(path)?)
}

/// Open (creating if needed) an index database.
/// `durable_commits`: every commit fsyncs the WAL (`synchronous=FULL`);
/// otherwise the caller's group flush makes commits durable
/// (`synchronous=NORMAL`, still crash-consistent).
/// Each open index's page cache, in KiB (see [`open`]).
pub(crate) const SMALL_CACHE_KIB: i64 = 512;

/// Run `f` with a page cache of about `kib` KiB, then give it back: a
/// transaction that touches many rows (a peer's first sync: 100,000
/// messages) thrashes the small cache (its apply took 23 s instead of 5).
/// The page cache for a write transaction that touches `rows` rows:
/// about 1 KiB each, from the small cache up to 64 MiB. With the small
/// cache a STORE on 100,000 messages spilled its dirty pages to the WAL and
/// read them back (52,000 `pread`s and 31,000 `pwrite`s for one command).
pub(crate) fn cache_kib_for_rows(rows: usize) -> i64 {
    i64::try_from(rows)
        .unwrap_or(i64::MAX)
        .clamp(SMALL_CACHE_KIB, 64 * 1024)
}

pub(crate) fn with_cache<T>(
    conn: &mut Connection,
    kib: i64,
    f: impl FnOnce(&mut Connection) -> Result<T>,
) -> Result<T> {
    let big = kib > SMALL_CACHE_KIB;
    if big {
        conn.pragma_update(None, "cache_size", -kib)?;
    }
    let out = f(conn);
    if big {
        // Only fails on a connection that is already broken.
        let _ = conn.pragma_update(None, "cache_size", -SMALL_CACHE_KIB);
    }
    out
}

/// WAL pages (4 KiB) after which a commit checkpoints the index: each
/// open account's WAL stays under 512 KiB.
pub(crate) const AUTOCHECKPOINT_PAGES: i64 = 128;

/// The same while a bulk write runs in many transactions (a peer's first
/// sync applied in chunks of 2,000 messages, each of which fills the WAL
/// past [`AUTOCHECKPOINT_PAGES`]): a checkpoint is two `fsync`s of the
/// index and a copy of its pages, and one after every chunk took more of
/// the apply's time than the rows (issue 15). The WAL may grow to 64 MiB
/// meanwhile; the bulk write checkpoints once at its end
/// ([`end_bulk_writes`]).
pub(crate) const BULK_AUTOCHECKPOINT_PAGES: i64 = 16 * 1024;

/// Hold checkpoints back to every [`BULK_AUTOCHECKPOINT_PAGES`] pages.
pub(crate) fn begin_bulk_writes(conn: &Connection) -> Result<()> {
    conn.pragma_update(None, "wal_autocheckpoint", BULK_AUTOCHECKPOINT_PAGES)?;
    Ok(())
}

/// Back to ordinary checkpoints, and one now for what the bulk write left
/// in the WAL (passive: it never waits for readers).
pub(crate) fn end_bulk_writes(conn: &Connection) -> Result<()> {
    conn.pragma_update(None, "wal_autocheckpoint", AUTOCHECKPOINT_PAGES)?;
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
    Ok(())
}

pub(crate) fn open(path: &Path, durable_commits: bool) -> Result<Connection> {
    let mut conn = open_private(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        if durable_commits { "FULL" } else { "NORMAL" },
    )?;
    // Thousands of accounts may be open at once: keep each one's page cache
    // small, and its WAL from growing past 512 KiB between checkpoints (the
    // WAL is deleted when the account is closed).
    conn.pragma_update(None, "cache_size", -SMALL_CACHE_KIB)?;
    // No memory map (`mmap_size` stays 0, and is set so: a build default
    // could differ). A map of a file that another process truncates kills
    // the whole process with SIGBUS on the next read of a vanished page —
    // every user's sessions, no log line (SQLite's "mmap" documentation
    // says as much). Without it a truncated index is a read error for that
    // one user. What the map saved (copies of pages into the small cache
    // above, for a FETCH of 100,000 cached ENVELOPEs) a sequential read of
    // one kind's rows of the derived table wins back (account/derived.rs).
    conn.pragma_update(None, "mmap_size", 0)?;
    conn.pragma_update(None, "wal_autocheckpoint", AUTOCHECKPOINT_PAGES)?;
    conn.pragma_update(None, "journal_size_limit", 512 * 1024)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.execute_batch(SCHEMA)?;
    crate::account::derived::move_derived(&conn)?;
    let version: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE key='schema'", [], |r| {
            r.get(0)
        })
        .optional()?;
    match version {
        None => {
            conn.execute(
                "INSERT INTO meta VALUES('schema', ?1), ('modseq', 0), ('bytes', 0)",
                [SCHEMA_VERSION],
            )?;
        }
        // An index problem, not bad input: temporary (LMTP 4xx), never a
        // bounce for a real user.
        Some(v) if v > SCHEMA_VERSION => {
            return Err(crate::Error::Index(format!(
                "{} has schema version {v}, newer than this cove understands ({SCHEMA_VERSION})",
                path.display()
            )));
        }
        Some(v) => migrate(&mut conn, v)?,
    }
    // The message count (RFC 9208 MESSAGE usage), counted afresh at each
    // open and kept by `add_usage` after: right for an index from before it
    // was kept, and after an older cove wrote to the index without it (no
    // schema version needed). One count per open; the view's first read
    // of a mailbox costs more.
    conn.execute(
        "INSERT OR REPLACE INTO meta(key, value) SELECT 'messages', count(*) FROM message",
        [],
    )?;
    // The index's epoch: a random number made with the index, so that a
    // peer can tell a rebuilt index (whose modseqs start again) from the
    // one it synced with.
    let mut epoch = [0u8; 8];
    getrandom::fill(&mut epoch)
        .map_err(|e| crate::Error::Index(format!("no randomness for the index epoch: {e}")))?;
    conn.execute(
        "INSERT OR IGNORE INTO meta(key, value) VALUES('epoch', ?1)",
        [i64::from_le_bytes(epoch) & i64::MAX],
    )?;
    Ok(conn)
}

/// The index's epoch (see [`open`]).
pub(crate) fn epoch(conn: &Connection) -> Result<u64> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| {
            r.get::<_, i64>(0)
        })
        .optional()?
        .unwrap_or(0) as u64)
}

/// Bring an index of an older schema version up to this one, each step in
/// its own transaction.
fn migrate(conn: &mut Connection, from: i64) -> Result<()> {
    if from < 2 {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(
            "INSERT OR IGNORE INTO subscription(name) SELECT name FROM mailbox WHERE subscribed != 0;
             UPDATE meta SET value = 2 WHERE key = 'schema';",
        )?;
        tx.commit()?;
    }
    if from < 3 {
        // \Recent (RFC 3501 §2.3.2): the first UID no session has been
        // shown yet, kept across restarts.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(
            "ALTER TABLE mailbox ADD COLUMN first_recent INTEGER NOT NULL DEFAULT 1;
             UPDATE meta SET value = 3 WHERE key = 'schema';",
        )?;
        tx.commit()?;
    }
    if from < 4 {
        // Replication (sync/): when each message was put where it is and
        // when each of its flags last changed, when each expunge, rename,
        // mailbox delete and (un)subscription happened.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(
            "ALTER TABLE message ADD COLUMN placed INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE message ADD COLUMN clock TEXT NOT NULL DEFAULT '';
             ALTER TABLE tombstone ADD COLUMN stamp INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE mailbox ADD COLUMN name_stamp INTEGER NOT NULL DEFAULT 0;
             UPDATE meta SET value = 4 WHERE key = 'schema';",
        )?;
        tx.commit()?;
    }
    if from < 5 {
        // A STORE's run of flag changes is one change-log row (an older
        // cove could not read it: hence the version), and the modseq index
        // over all mailboxes goes: the per-mailbox one answers every query
        // (replication walks it mailbox by mailbox), and a STORE moves one
        // entry per message instead of two.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(
            "DROP INDEX IF EXISTS message_modseq_all;
             UPDATE meta SET value = 5 WHERE key = 'schema';",
        )?;
        tx.commit()?;
    }
    Ok(())
}

/// A mailbox as the index knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxInfo {
    pub(crate) id: i64,
    pub guid: MailboxGuid,
    pub name: String,
    pub(crate) dir: String,
    pub uidvalidity: u32,
    pub uidnext: Uid,
    pub highest_modseq: ModSeq,
    pub special_use: Option<String>,
    pub subscribed: bool,
    /// The first UID no session has been shown as \Recent yet.
    pub first_recent: Uid,
}

/// A message's flags, keywords (as stored) and flag clock before a change.
type OldFlags = (u8, String, String);

fn old_flags_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OldFlags> {
    Ok((r.get::<_, i64>(0)? as u8, r.get(1)?, r.get(2)?))
}

/// One message's new flags in [`Tx::update_flags_many`].
pub(crate) struct FlagUpdate<'a> {
    pub uid: Uid,
    pub flags: Flags,
    pub keywords: &'a [String],
    /// Its file after the change (relative to the mailbox folder).
    pub file: &'a str,
}

/// One message instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    pub uid: Uid,
    pub guid: MessageGuid,
    pub content_id: ContentId,
    pub flags: Flags,
    pub keywords: Vec<String>,
    pub modseq: ModSeq,
    /// Seconds since the epoch.
    pub internal_date: i64,
    pub size: u64,
    /// `new/<name>` or `cur/<name>`, relative to the mailbox folder.
    pub file: String,
}

pub(crate) fn guid16(v: Vec<u8>) -> [u8; 16] {
    let mut g = [0u8; 16];
    let n = v.len().min(16);
    g[..n].copy_from_slice(&v[..n]);
    g
}

fn content32(v: Vec<u8>) -> ContentId {
    let mut g = [0u8; 32];
    let n = v.len().min(32);
    g[..n].copy_from_slice(&v[..n]);
    ContentId(g)
}

pub(crate) fn keywords_to_text(k: &[String]) -> String {
    k.join(" ")
}

pub(crate) fn keywords_from_text(t: &str) -> Vec<String> {
    t.split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

const MAILBOX_COLS: &str = "mailbox.id, mailbox.guid, mailbox.name, mailbox.dir, mailbox.uidvalidity, \
     mailbox.uidnext, mailbox.highestmodseq, mailbox.special_use, \
     EXISTS(SELECT 1 FROM subscription WHERE subscription.name = mailbox.name), mailbox.first_recent";

fn mailbox_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MailboxInfo> {
    Ok(MailboxInfo {
        id: r.get(0)?,
        guid: MailboxGuid(guid16(r.get(1)?)),
        name: r.get(2)?,
        dir: r.get(3)?,
        uidvalidity: r.get(4)?,
        uidnext: r.get(5)?,
        highest_modseq: r.get::<_, i64>(6)? as u64,
        special_use: r.get(7)?,
        subscribed: r.get(8)?,
        first_recent: r.get(9)?,
    })
}

pub(crate) const MESSAGE_COLS: &str =
    "uid, guid, content_id, flags, keywords, modseq, internal_date, size, file";

pub(crate) fn message_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageMeta> {
    Ok(MessageMeta {
        uid: r.get(0)?,
        guid: MessageGuid(guid16(r.get(1)?)),
        content_id: content32(r.get(2)?),
        flags: Flags::from_bits(r.get::<_, i64>(3)? as u8),
        keywords: keywords_from_text(&r.get::<_, String>(4)?),
        modseq: r.get::<_, i64>(5)? as u64,
        internal_date: r.get(6)?,
        size: r.get::<_, i64>(7)? as u64,
        file: r.get(8)?,
    })
}

pub(crate) fn mailboxes(conn: &Connection) -> Result<Vec<MailboxInfo>> {
    let mut st =
        conn.prepare_cached(&format!("SELECT {MAILBOX_COLS} FROM mailbox ORDER BY name"))?;
    let rows = st.query_map([], mailbox_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn mailbox_by_name(conn: &Connection, name: &str) -> Result<Option<MailboxInfo>> {
    let name = normalize_name(name);
    let mut st = conn.prepare_cached(&format!(
        "SELECT {MAILBOX_COLS} FROM mailbox WHERE name = ?1"
    ))?;
    Ok(st.query_row([name], mailbox_row).optional()?)
}

pub(crate) fn mailbox_by_id(conn: &Connection, id: i64) -> Result<Option<MailboxInfo>> {
    let mut st =
        conn.prepare_cached(&format!("SELECT {MAILBOX_COLS} FROM mailbox WHERE id = ?1"))?;
    Ok(st.query_row([id], mailbox_row).optional()?)
}

pub(crate) fn mailbox_by_guid(
    conn: &Connection,
    guid: &MailboxGuid,
) -> Result<Option<MailboxInfo>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {MAILBOX_COLS} FROM mailbox WHERE guid = ?1"
    ))?;
    Ok(st.query_row([&guid.0[..]], mailbox_row).optional()?)
}

/// INBOX is case-insensitive (RFC 3501 §5.1); other names are kept as given.
pub(crate) fn normalize_name(name: &str) -> &str {
    if name.eq_ignore_ascii_case("INBOX") {
        "INBOX"
    } else {
        name
    }
}

pub(crate) fn messages(conn: &Connection, mailbox_id: i64) -> Result<Vec<MessageMeta>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLS} FROM message WHERE mailbox_id = ?1 ORDER BY uid"
    ))?;
    let rows = st.query_map([mailbox_id], message_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// [`messages`], one row at a time.
pub(crate) fn each_message(
    conn: &Connection,
    mailbox_id: i64,
    mut each: impl FnMut(MessageMeta),
) -> Result<()> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLS} FROM message WHERE mailbox_id = ?1 ORDER BY uid"
    ))?;
    let mut rows = st.query([mailbox_id])?;
    while let Some(r) = rows.next()? {
        each(message_row(r)?);
    }
    Ok(())
}

/// Messages of a mailbox whose modseq is above `modseq` (RFC 7162).
pub(crate) fn messages_since(
    conn: &Connection,
    mailbox_id: i64,
    modseq: ModSeq,
) -> Result<Vec<MessageMeta>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLS} FROM message WHERE mailbox_id = ?1 AND modseq > ?2 ORDER BY uid"
    ))?;
    let rows = st.query_map(params![mailbox_id, modseq as i64], message_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Every mailbox with (messages, unseen, bytes), in one query.
pub(crate) fn mailboxes_with_counts(
    conn: &Connection,
) -> Result<Vec<(MailboxInfo, crate::MailboxStatus)>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {MAILBOX_COLS}, count(message.uid),
                total(CASE WHEN message.flags & 1 = 0 THEN 1 ELSE 0 END), total(message.size),
                total(CASE WHEN message.uid >= mailbox.first_recent THEN 1 ELSE 0 END)
         FROM mailbox LEFT JOIN message ON message.mailbox_id = mailbox.id
         GROUP BY mailbox.id ORDER BY mailbox.name"
    ))?;
    let rows = st.query_map([], |r| {
        Ok((
            mailbox_row(r)?,
            crate::MailboxStatus {
                messages: r.get::<_, i64>(10)? as u32,
                unseen: r.get::<_, f64>(11)? as u32,
                size: r.get::<_, f64>(12)? as u64,
                recent: r.get::<_, f64>(13)? as u32,
            },
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Subscribed names, sorted.
pub(crate) fn subscriptions(conn: &Connection) -> Result<Vec<String>> {
    let mut st = conn.prepare_cached("SELECT name FROM subscription ORDER BY name")?;
    let rows = st.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn message_by_uid(
    conn: &Connection,
    mailbox_id: i64,
    uid: Uid,
) -> Result<Option<MessageMeta>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {MESSAGE_COLS} FROM message WHERE mailbox_id = ?1 AND uid = ?2"
    ))?;
    Ok(st
        .query_row(params![mailbox_id, uid], message_row)
        .optional()?)
}

/// RFC 8514 save dates, in seconds since the epoch, of `uids` (in their
/// order; `None` for a UID no message has).
///
/// A message's save date is when it was put in this mailbox: the time part
/// of its placement stamp (`message.placed`, milliseconds since the epoch
/// in its upper 48 bits, replica.rs `stamp_now`). The stamp is replicated
/// with the placement, so both nodes answer the same save date, and COPY,
/// MOVE and a peer's move make a new one. Rows without a stamp (0: found
/// by the first scan of a Maildir, imported, or placed before schema 4)
/// answer their internal date.
pub(crate) fn save_dates(
    conn: &Connection,
    mailbox_id: i64,
    uids: &[Uid],
) -> Result<Vec<Option<i64>>> {
    let mut st = conn.prepare_cached(
        "SELECT placed, internal_date FROM message WHERE mailbox_id = ?1 AND uid = ?2",
    )?;
    let mut out = Vec::with_capacity(uids.len());
    for uid in uids {
        let row = st
            .query_row(params![mailbox_id, uid], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            })
            .optional()?;
        out.push(row.map(|(placed, internal)| match (placed as u64) >> 16 {
            0 => internal,
            ms => (ms / 1000) as i64,
        }));
    }
    Ok(out)
}

pub(crate) fn message_count(
    conn: &Connection,
    mailbox: &MailboxInfo,
) -> Result<(u32, u32, u64, u32)> {
    let mut st = conn.prepare_cached(
        "SELECT count(*), total(CASE WHEN flags & 1 = 0 THEN 1 ELSE 0 END), total(size),
                total(CASE WHEN uid >= ?2 THEN 1 ELSE 0 END)
         FROM message WHERE mailbox_id = ?1",
    )?;
    Ok(
        st.query_row(params![mailbox.id, mailbox.first_recent], |r| {
            Ok((
                r.get::<_, i64>(0)? as u32,
                r.get::<_, f64>(1)? as u32,
                r.get::<_, f64>(2)? as u64,
                r.get::<_, f64>(3)? as u32,
            ))
        })?,
    )
}

/// Take the messages no session has been shown as \Recent yet: returns the
/// old first-recent UID and moves it to UIDNEXT (RFC 3501 §2.3.2).
pub(crate) fn claim_recent(conn: &mut Connection, mailbox_id: i64) -> Result<Uid> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let old: Uid = tx.query_row(
        "SELECT first_recent FROM mailbox WHERE id = ?1",
        [mailbox_id],
        |r| r.get(0),
    )?;
    tx.execute(
        "UPDATE mailbox SET first_recent = uidnext WHERE id = ?1",
        [mailbox_id],
    )?;
    tx.commit()?;
    Ok(old)
}

/// Bytes of all messages (what a quota counts), kept as a running total in
/// `meta` beside the modseq counter (the same page, so no extra write).
pub(crate) fn total_size(conn: &Connection) -> Result<u64> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = 'bytes'", [], |r| {
            r.get::<_, i64>(0)
        })?
        .max(0) as u64)
}

/// How many messages the account holds, in all its mailboxes (kept in
/// `meta` beside the bytes: a delivery under a message limit reads one
/// row, not 100,000).
pub(crate) fn message_total(conn: &Connection) -> Result<u64> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = 'messages'", [], |r| {
            r.get::<_, i64>(0)
        })?
        .max(0) as u64)
}

/// A write transaction that allocates modseqs and records each change in the
/// change log; the changes are announced on the feed after commit.
pub(crate) struct Tx<'c> {
    pub(crate) tx: Transaction<'c>,
    pub(crate) changes: Vec<Change>,
    /// The last modseq handed out in this transaction; the counter in
    /// `meta` and each mailbox's HIGHESTMODSEQ are written once, at commit
    /// (a STORE on 100,000 messages makes 100,000 changes).
    last_modseq: Option<i64>,
    raised: Vec<(i64, i64)>,
    /// This transaction's replication stamp (see [`crate::replica::Stamp`]),
    /// made on first use from `clock`.
    stamp: Option<u64>,
    clock: &'c dyn crate::env::Clock,
}

impl<'c> Tx<'c> {
    pub(crate) fn begin(conn: &'c mut Connection, env: &'c crate::env::Env) -> Result<Tx<'c>> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        Ok(Tx {
            tx,
            changes: Vec::new(),
            last_modseq: None,
            raised: Vec::new(),
            stamp: None,
            clock: &*env.clock,
        })
    }

    /// The stamp of what this transaction does: the time in milliseconds and
    /// this node's id (`meta.node`), above every stamp this transaction has
    /// already read (so that a later change always wins over an earlier one
    /// made on the same node, even if the clock stepped back).
    pub(crate) fn stamp(&mut self) -> Result<u64> {
        if let Some(s) = self.stamp {
            return Ok(s);
        }
        let node: i64 = self
            .tx
            .query_row("SELECT value FROM meta WHERE key = 'node'", [], |r| {
                r.get(0)
            })
            .optional()?
            .unwrap_or(0);
        let s = crate::replica::stamp_now(self.clock, node as u16);
        self.stamp = Some(s);
        Ok(s)
    }

    /// Make sure this transaction's stamp is above `seen`.
    pub(crate) fn stamp_above(&mut self, seen: u64) -> Result<u64> {
        let s = self.stamp()?;
        if s <= seen {
            let bumped = crate::replica::stamp_after(seen, s);
            self.stamp = Some(bumped);
            return Ok(bumped);
        }
        Ok(s)
    }

    /// Record a change: allocate the next modseq, log it, raise the
    /// mailbox's HIGHESTMODSEQ. Returns the modseq.
    pub(crate) fn log(&mut self, mailbox: &MailboxInfo, kind: ChangeKind) -> Result<ModSeq> {
        let modseq = self.next_modseq(mailbox)?;
        let (uid, guid, detail) = kind.to_columns();
        self.tx
            .prepare_cached("INSERT INTO change(modseq, mailbox_guid, kind, uid, guid, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
            .execute(params![modseq, &mailbox.guid.0[..], kind.tag(), uid, guid.as_ref().map(|g| &g.0[..]), detail])?;
        self.push_change(mailbox, modseq, kind);
        Ok(modseq as u64)
    }

    /// The next modseq, which raises `mailbox`'s HIGHESTMODSEQ at commit.
    fn next_modseq(&mut self, mailbox: &MailboxInfo) -> Result<i64> {
        let modseq: i64 = match self.last_modseq {
            Some(m) => m + 1,
            None => {
                let current: i64 =
                    self.tx
                        .query_row("SELECT value FROM meta WHERE key = 'modseq'", [], |r| {
                            r.get(0)
                        })?;
                current + 1
            }
        };
        self.last_modseq = Some(modseq);
        match self.raised.iter_mut().find(|(id, _)| *id == mailbox.id) {
            Some(entry) => entry.1 = modseq,
            None => self.raised.push((mailbox.id, modseq)),
        }
        Ok(modseq)
    }

    /// The next `count` modseqs (at least one), which raise `mailbox`'s
    /// HIGHESTMODSEQ at commit; returns the first.
    fn take_modseqs(&mut self, mailbox: &MailboxInfo, count: i64) -> Result<i64> {
        let first = self.next_modseq(mailbox)?;
        let last = first + (count - 1).max(0);
        self.last_modseq = Some(last);
        if let Some(entry) = self.raised.iter_mut().find(|(id, _)| *id == mailbox.id) {
            entry.1 = last;
        }
        Ok(first)
    }

    /// A change logged at `modseq`, for the live feed at commit.
    fn push_change(&mut self, mailbox: &MailboxInfo, modseq: i64, kind: ChangeKind) {
        self.changes.push(Change {
            modseq: modseq as u64,
            mailbox: mailbox.guid,
            kind,
            message: None,
        });
    }

    pub(crate) fn insert_mailbox(
        &mut self,
        guid: MailboxGuid,
        name: &str,
        dir: &str,
        uidvalidity: u32,
        special_use: Option<&str>,
        subscribed: bool,
    ) -> Result<MailboxInfo> {
        // Above every id in use and every id a tombstone names (so a deleted
        // mailbox's tombstones never attach to this one).
        let stamp = self.stamp()? as i64;
        self.tx.execute(
            "INSERT INTO mailbox(id, guid, name, dir, uidvalidity, uidnext, highestmodseq, special_use, name_stamp) VALUES (
               1 + max(coalesce((SELECT max(id) FROM mailbox), 0), coalesce((SELECT max(mailbox_id) FROM tombstone), 0),
                       coalesce((SELECT max(id) FROM mailbox_gone), 0)),
               ?1, ?2, ?3, ?4, 1, 0, ?5, ?6)",
            params![&guid.0[..], name, dir, uidvalidity, special_use, stamp],
        )
        .map_err(|e| match e.sqlite_error_code() {
            // Another process (the CLI and the server opening a new account
            // at once) made it first.
            Some(rusqlite::ErrorCode::ConstraintViolation) => {
                crate::Error::AlreadyExists(format!("mailbox {name}"))
            }
            _ => e.into(),
        })?;
        if subscribed {
            self.set_subscription(name, true)?;
        }
        let mb = mailbox_by_guid(&self.tx, &guid)?.ok_or_else(|| {
            crate::Error::Index("mailbox vanished inside its own transaction".into())
        })?;
        self.log(
            &mb,
            ChangeKind::MailboxCreated {
                name: name.to_string(),
            },
        )?;
        Ok(mb)
    }

    /// A UIDVALIDITY for a new mailbox: the time, but above every one given
    /// out before (and every one a mailbox has, for indexes from before the
    /// counter) and above `previous` (the one a folder had when its index
    /// was lost).
    pub(crate) fn next_uidvalidity(&mut self, now: i64, previous: Option<u32>) -> Result<u32> {
        let floor = (now.clamp(1, u32::MAX as i64)).max(previous.map_or(0, |p| p as i64 + 1));
        let v: i64 = self.tx.query_row(
            "INSERT INTO meta(key, value)
               VALUES('uidvalidity', max(?1, coalesce((SELECT max(uidvalidity) + 1 FROM mailbox), 0)))
             ON CONFLICT(key) DO UPDATE SET value = max(value + 1, excluded.value)
             RETURNING value",
            [floor],
            |r| r.get(0),
        )?;
        u32::try_from(v)
            .map_err(|_| crate::Error::Index(format!("UIDVALIDITY {v} is out of range")))
    }

    /// Keep the UIDVALIDITY counter at or above `v` (a mailbox made with a
    /// given UIDVALIDITY).
    pub(crate) fn raise_uidvalidity(&mut self, v: u32) -> Result<()> {
        self.tx.execute(
            "INSERT INTO meta(key, value) VALUES('uidvalidity', ?1)
             ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
            [v as i64],
        )?;
        Ok(())
    }

    /// Give a mailbox a new name (and folder); logs `MailboxRenamed`.
    pub(crate) fn rename_mailbox(
        &mut self,
        mailbox: &MailboxInfo,
        name: &str,
        dir: &str,
    ) -> Result<()> {
        let stamp = self.stamp()? as i64;
        self.tx.execute(
            "UPDATE mailbox SET name = ?2, dir = ?3, name_stamp = max(name_stamp + 65536, ?4) WHERE id = ?1",
            params![mailbox.id, name, dir, stamp],
        )?;
        self.log(
            mailbox,
            ChangeKind::MailboxRenamed {
                from: mailbox.name.clone(),
                to: name.to_string(),
            },
        )?;
        Ok(())
    }

    /// Remove a mailbox: every message expunged (tombstones and `Expunged`
    /// changes, so replicas learn of each), then `MailboxDeleted`. Returns
    /// the expunged UIDs.
    pub(crate) fn delete_mailbox(&mut self, mailbox: &MailboxInfo) -> Result<Vec<Uid>> {
        let rows = messages(&self.tx, mailbox.id)?;
        for m in &rows {
            self.expunge(mailbox, m.uid, m.guid)?;
        }
        self.log(
            mailbox,
            ChangeKind::MailboxDeleted {
                name: mailbox.name.clone(),
            },
        )?;
        retire_uids(&self.tx, mailbox.id)?;
        self.tx
            .execute("DELETE FROM mailbox WHERE id = ?1", [mailbox.id])?;
        let stamp = self.stamp()? as i64;
        self.tx.execute(
            "INSERT OR REPLACE INTO mailbox_gone(guid, id, name, stamp) VALUES (?1, ?2, ?3, ?4)",
            params![&mailbox.guid.0[..], mailbox.id, mailbox.name, stamp],
        )?;
        Ok(rows.iter().map(|m| m.uid).collect())
    }

    /// Subscribe to or unsubscribe from a name; returns whether that changed
    /// anything. Logs nothing (the caller logs when the mailbox exists).
    pub(crate) fn set_subscription(&mut self, name: &str, subscribed: bool) -> Result<bool> {
        let n = if subscribed {
            self.tx
                .prepare_cached("INSERT OR IGNORE INTO subscription(name) VALUES (?1)")?
                .execute([name])?
        } else {
            self.tx
                .prepare_cached("DELETE FROM subscription WHERE name = ?1")?
                .execute([name])?
        };
        if n > 0 {
            let stamp = self.stamp()? as i64;
            self.tx
                .prepare_cached("INSERT OR REPLACE INTO subscription_stamp(name, subscribed, stamp) VALUES (?1, ?2, ?3)")?
                .execute(params![name, subscribed, stamp])?;
        }
        Ok(n > 0)
    }

    /// Subscriptions follow a rename: `from` and every `from.` child name
    /// (existing or not) become `to...`.
    pub(crate) fn rename_subscriptions(&mut self, from: &str, to: &str) -> Result<()> {
        let prefix = format!("{from}.");
        self.tx.execute(
            "UPDATE OR REPLACE subscription SET name = ?2 || substr(name, ?3)
             WHERE name = ?1 OR substr(name, 1, length(?4)) = ?4",
            params![from, to, from.chars().count() as i64 + 1, prefix],
        )?;
        Ok(())
    }

    /// Take the next UID of a mailbox.
    pub(crate) fn allocate_uid(&mut self, mailbox: &MailboxInfo) -> Result<Uid> {
        let uid: Uid = self.tx.query_row(
            "UPDATE mailbox SET uidnext = uidnext + 1 WHERE id = ?1 RETURNING uidnext - 1",
            [mailbox.id],
            |r| r.get(0),
        )?;
        Ok(uid)
    }

    pub(crate) fn insert_message(
        &mut self,
        mailbox: &MailboxInfo,
        m: &NewMessageRow<'_>,
    ) -> Result<(Uid, ModSeq)> {
        let uid = self.allocate_uid(mailbox)?;
        self.insert_message_at(mailbox, uid, m)
    }

    /// Insert a message under a UID chosen by the caller (replication),
    /// raising UIDNEXT above it.
    pub(crate) fn insert_message_at(
        &mut self,
        mailbox: &MailboxInfo,
        uid: Uid,
        m: &NewMessageRow<'_>,
    ) -> Result<(Uid, ModSeq)> {
        let placed = match m.placed {
            Some(p) => p,
            None => self.stamp()?,
        };
        self.tx
            .prepare_cached("UPDATE mailbox SET uidnext = max(uidnext, ?2 + 1) WHERE id = ?1")?
            .execute(params![mailbox.id, uid])?;
        let modseq = self.log(mailbox, ChangeKind::MessageAdded { uid, guid: m.guid })?;
        self.tx
            .prepare_cached(
                "INSERT INTO message(mailbox_id, uid, guid, content_id, flags, keywords, modseq, internal_date, size, base, file, placed, clock) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?
            .execute(params![
                mailbox.id,
                uid,
                &m.guid.0[..],
                &m.content_id.0[..],
                m.flags.bits() as i64,
                keywords_to_text(m.keywords),
                modseq as i64,
                m.internal_date,
                m.size as i64,
                m.base,
                m.file,
                placed as i64,
                m.clock,
            ])
            .map_err(|e| match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::ConstraintViolation) => {
                    crate::Error::AlreadyExists(format!("message {}", m.guid))
                }
                _ => e.into(),
            })?;
        self.add_usage(m.size as i64, 1)?;
        if let Some(change) = self.changes.last_mut() {
            change.message = Some(std::sync::Arc::new(MessageMeta {
                uid,
                guid: m.guid,
                content_id: m.content_id,
                flags: m.flags,
                keywords: m.keywords.to_vec(),
                modseq,
                internal_date: m.internal_date,
                size: m.size,
                file: m.file.to_string(),
            }));
        }
        Ok((uid, modseq))
    }

    /// Keep the account's usage (RFC 9208 STORAGE and MESSAGE) with every
    /// message row added or removed: the only two places rows come and go.
    fn add_usage(&mut self, bytes: i64, messages: i64) -> Result<()> {
        self.tx
            .prepare_cached(
                "UPDATE meta SET value = value + CASE key WHEN 'bytes' THEN ?1 ELSE ?2 END
                 WHERE key IN ('bytes', 'messages')",
            )?
            .execute([bytes, messages])?;
        Ok(())
    }

    pub(crate) fn expunge(
        &mut self,
        mailbox: &MailboxInfo,
        uid: Uid,
        guid: MessageGuid,
    ) -> Result<ModSeq> {
        // After the message's placement, which this node has read: else a
        // peer whose placement carries a later stamp (a clock ahead, or the
        // same millisecond and a higher node id) would keep the message
        // that the user deleted here (replica.rs: a placement after an
        // expunge wins).
        let placed: Option<i64> = self
            .tx
            .prepare_cached("SELECT placed FROM message WHERE mailbox_id = ?1 AND uid = ?2")?
            .query_row(params![mailbox.id, uid], |r| r.get(0))
            .optional()?;
        let stamp = self.stamp_above(placed.unwrap_or(0) as u64)?;
        self.expunge_stamped(mailbox, uid, guid, stamp)
    }

    /// [`expunge`](Tx::expunge) with the stamp of the node that expunged.
    pub(crate) fn expunge_stamped(
        &mut self,
        mailbox: &MailboxInfo,
        uid: Uid,
        guid: MessageGuid,
        stamp: u64,
    ) -> Result<ModSeq> {
        let modseq = self.log(mailbox, ChangeKind::Expunged { uid, guid })?;
        let gone = self
            .tx
            .prepare_cached(&format!(
                "DELETE FROM message WHERE mailbox_id = ?1 AND uid = ?2 RETURNING {MESSAGE_COLS}"
            ))?
            .query_row(params![mailbox.id, uid], message_row)
            .optional()?;
        if let Some(gone) = gone {
            self.add_usage(-(gone.size as i64), -1)?;
            // Live listeners learn which content went (the background
            // indexer forgets what no message holds any more).
            if let Some(change) = self.changes.last_mut() {
                change.message = Some(std::sync::Arc::new(gone));
            }
        }
        self.tx
            .prepare_cached("INSERT OR REPLACE INTO tombstone(mailbox_id, uid, guid, modseq, stamp) VALUES (?1, ?2, ?3, ?4, ?5)")?
            .execute(params![mailbox.id, uid, &guid.0[..], modseq as i64, stamp as i64])?;
        Ok(modseq)
    }

    pub(crate) fn update_flags(
        &mut self,
        mailbox: &MailboxInfo,
        uid: Uid,
        flags: Flags,
        keywords: &[String],
        file: &str,
    ) -> Result<ModSeq> {
        let old: Option<OldFlags> = self
            .tx
            .prepare_cached(
                "SELECT flags, keywords, clock FROM message WHERE mailbox_id = ?1 AND uid = ?2",
            )?
            .query_row(params![mailbox.id, uid], old_flags_row)
            .optional()?;
        let clock = self.clock_after(old, flags, keywords)?;
        self.set_flags_row(mailbox, uid, flags, keywords, &clock, file)
    }

    /// The flag clock of a message that had `old` (none: gone) after its
    /// change to `flags` and `keywords`, stamped by this transaction.
    fn clock_after(
        &mut self,
        old: Option<OldFlags>,
        flags: Flags,
        keywords: &[String],
    ) -> Result<String> {
        let Some((old_flags, old_keywords, old_clock)) = old else {
            return Ok(String::new());
        };
        let mut clock = crate::replica::FlagClock::parse(&old_clock);
        let old_keywords = keywords_from_text(&old_keywords);
        let newest = clock.newest();
        let stamp = self.stamp_above(newest)?;
        clock.record_change(
            (Flags::from_bits(old_flags), &old_keywords),
            (flags, keywords),
            stamp,
        );
        Ok(clock.to_string())
    }

    /// [`Tx::update_flags`] for many messages of one mailbox (STORE on a
    /// message set): what they had is read with one statement, each message
    /// is one UPDATE, and the change log gets one row for them all (a
    /// [`FlagRun`]). Every message still gets its own modseq (RFC 7162), a
    /// run in the order given, and its own change on the live feed.
    /// Messages that had the same flags, keywords and flag clock get the
    /// same new clock, made once (a STORE on a whole mailbox mostly finds
    /// few distinct ones). Returns the modseqs in the order given.
    pub(crate) fn update_flags_many(
        &mut self,
        mailbox: &MailboxInfo,
        updates: &[FlagUpdate<'_>],
    ) -> Result<Vec<ModSeq>> {
        let (Some(first), Some(last)) = (
            updates.iter().map(|u| u.uid).min(),
            updates.iter().map(|u| u.uid).max(),
        ) else {
            return Ok(Vec::new());
        };
        if let [one] = updates {
            return Ok(vec![self.update_flags(
                mailbox,
                one.uid,
                one.flags,
                one.keywords,
                one.file,
            )?]);
        }
        let mut old: HashMap<Uid, OldFlags> = HashMap::with_capacity(updates.len());
        {
            let mut st = self.tx.prepare_cached(
                "SELECT uid, flags, keywords, clock FROM message WHERE mailbox_id = ?1 AND uid BETWEEN ?2 AND ?3",
            )?;
            let mut rows = st.query(params![mailbox.id, first, last])?;
            while let Some(r) = rows.next()? {
                old.insert(r.get(0)?, (r.get::<_, i64>(1)? as u8, r.get(2)?, r.get(3)?));
            }
        }
        // (what it had, its new flags and keywords) -> its new clock.
        let mut made: HashMap<(OldFlags, u8, String), std::rc::Rc<str>> = HashMap::new();
        let mut rows: Vec<(String, std::rc::Rc<str>)> = Vec::with_capacity(updates.len());
        for u in updates {
            let keywords = keywords_to_text(u.keywords);
            let Some(had) = old.remove(&u.uid) else {
                rows.push((keywords, std::rc::Rc::from("")));
                continue;
            };
            let key = (had, u.flags.bits(), keywords);
            let clock = match made.get(&key) {
                Some(c) => c.clone(),
                None => {
                    let c: std::rc::Rc<str> = self
                        .clock_after(Some(key.0.clone()), u.flags, u.keywords)?
                        .into();
                    made.insert(key.clone(), c.clone());
                    c
                }
            };
            rows.push((key.2, clock));
        }
        drop(made);
        let count = i64::try_from(updates.len()).unwrap_or(i64::MAX);
        let first_modseq = self.take_modseqs(mailbox, count)?;
        {
            let mut st = self.tx.prepare_cached(
                "UPDATE message SET flags = ?3, keywords = ?4, modseq = ?5, file = ?6, clock = ?7 WHERE mailbox_id = ?1 AND uid = ?2",
            )?;
            for ((u, (keywords, clock)), modseq) in updates.iter().zip(&rows).zip(first_modseq..) {
                st.execute(params![
                    mailbox.id,
                    u.uid,
                    u.flags.bits() as i64,
                    keywords,
                    modseq,
                    u.file,
                    &**clock
                ])?;
            }
        }
        drop(rows);
        let run = FlagRun::encode(updates.iter().map(|u| (u.uid, u.flags, u.keywords)));
        self.tx
            .prepare_cached(
                "INSERT INTO change(modseq, mailbox_guid, kind, uid, guid, detail) VALUES (?1, ?2, 'flagrun', NULL, NULL, ?3)",
            )?
            .execute(params![first_modseq, &mailbox.guid.0[..], run])?;
        let mut modseqs = Vec::with_capacity(updates.len());
        for (u, modseq) in updates.iter().zip(first_modseq..) {
            self.push_change(
                mailbox,
                modseq,
                ChangeKind::FlagsChanged {
                    uid: u.uid,
                    flags: u.flags,
                    keywords: u.keywords.to_vec(),
                },
            );
            modseqs.push(modseq as u64);
        }
        Ok(modseqs)
    }

    /// Write a message's flags, keywords and flag clock as given
    /// (replication's merge), logging `FlagsChanged`.
    pub(crate) fn set_flags_row(
        &mut self,
        mailbox: &MailboxInfo,
        uid: Uid,
        flags: Flags,
        keywords: &[String],
        clock: &str,
        file: &str,
    ) -> Result<ModSeq> {
        let modseq = self.log(
            mailbox,
            ChangeKind::FlagsChanged {
                uid,
                flags,
                keywords: keywords.to_vec(),
            },
        )?;
        self.tx
            .prepare_cached("UPDATE message SET flags = ?3, keywords = ?4, modseq = ?5, file = ?6, clock = ?7 WHERE mailbox_id = ?1 AND uid = ?2")?
            .execute(params![mailbox.id, uid, flags.bits() as i64, keywords_to_text(keywords), modseq as i64, file, clock])?;
        Ok(modseq)
    }

    /// A message's flag clock (empty if it has none or is gone).
    pub(crate) fn clock_of(&mut self, mailbox: &MailboxInfo, uid: Uid) -> Result<String> {
        Ok(self
            .tx
            .prepare_cached("SELECT clock FROM message WHERE mailbox_id = ?1 AND uid = ?2")?
            .query_row(params![mailbox.id, uid], |r| r.get(0))
            .optional()?
            .unwrap_or_default())
    }

    /// A file was renamed without a flag change (new/ to cur/).
    pub(crate) fn update_file(
        &mut self,
        mailbox: &MailboxInfo,
        uid: Uid,
        file: &str,
    ) -> Result<()> {
        self.tx
            .prepare_cached("UPDATE message SET file = ?3 WHERE mailbox_id = ?1 AND uid = ?2")?
            .execute(params![mailbox.id, uid, file])?;
        Ok(())
    }

    pub(crate) fn commit(self) -> Result<Vec<Change>> {
        if let Some(last) = self.last_modseq {
            self.tx
                .prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'modseq'")?
                .execute([last])?;
        }
        for (id, modseq) in &self.raised {
            self.tx
                .prepare_cached(
                    "UPDATE mailbox SET highestmodseq = max(highestmodseq, ?2) WHERE id = ?1",
                )?
                .execute(params![id, modseq])?;
        }
        self.tx.commit()?;
        Ok(self.changes)
    }
}

/// The columns of a message about to be inserted.
pub(crate) struct NewMessageRow<'a> {
    pub guid: MessageGuid,
    pub content_id: ContentId,
    pub flags: Flags,
    pub keywords: &'a [String],
    pub internal_date: i64,
    pub size: u64,
    pub base: &'a str,
    pub file: &'a str,
    /// When it was put in this mailbox (a replication stamp); `None`: now.
    pub placed: Option<u64>,
    /// Its flag clock (`FlagClock` text); empty for a new instance.
    pub clock: &'a str,
}

/// Read the change log from `since` (exclusive) on. A `flagrun` row
/// ([`FlagRun`]) reads as the change of each of its messages; one logged at
/// or below `since` whose run reaches above it gives the rest of its run.
pub(crate) fn changes_since(conn: &Connection, since: ModSeq) -> Result<Vec<Change>> {
    const COLS: &str = "modseq, mailbox_guid, kind, uid, guid, detail";
    let row = |r: &rusqlite::Row<'_>| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<u32>>(3)?,
            r.get::<_, Option<Vec<u8>>>(4)?,
            r.get::<_, Option<String>>(5)?,
        ))
    };
    let mut out = Vec::new();
    let mut st = conn.prepare_cached(&format!(
        "SELECT {COLS} FROM change WHERE modseq <= ?1 AND kind = 'flagrun'
           AND modseq = (SELECT max(modseq) FROM change WHERE modseq <= ?1)"
    ))?;
    let below = st.query_map([since as i64], row)?;
    let mut st = conn.prepare_cached(&format!(
        "SELECT {COLS} FROM change WHERE modseq > ?1 ORDER BY modseq"
    ))?;
    let above = st.query_map([since as i64], row)?;
    for r in below.chain(above) {
        let (modseq, mb, tag, uid, guid, detail) = r?;
        let mailbox = MailboxGuid(guid16(mb));
        let unreadable =
            || crate::Error::Index(format!("unreadable change log row {modseq} ({tag})"));
        if tag == "flagrun" {
            let run = FlagRun::decode(modseq as u64, detail.as_deref().unwrap_or(""), since)
                .ok_or_else(unreadable)?;
            out.extend(run.into_iter().map(|(modseq, kind)| Change {
                modseq,
                mailbox,
                kind,
                message: None,
            }));
            continue;
        }
        let guid = guid.map(|g| MessageGuid(guid16(g)));
        let kind = ChangeKind::from_columns(&tag, uid, guid, detail).ok_or_else(unreadable)?;
        out.push(Change {
            modseq: modseq as u64,
            mailbox,
            kind,
            message: None,
        });
    }
    Ok(out)
}

/// This index's position and its mark of `peer` (see
/// [`crate::replica::Digest`]).
pub(crate) fn digest(conn: &Connection, peer: &str) -> Result<crate::replica::Digest> {
    let epoch = epoch(conn)?;
    let mark: Option<(i64, i64)> = conn
        .query_row(
            "SELECT modseq, epoch FROM peer_mark WHERE peer = ?1",
            [peer],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(crate::replica::Digest {
        position: crate::replica::Mark {
            modseq: current_modseq(conn)?,
            epoch,
        },
        mark: mark.map_or_else(Default::default, |(m, e)| crate::replica::Mark {
            modseq: m.max(0) as u64,
            epoch: e.max(0) as u64,
        }),
    })
}

/// [`digest`] of the index in `home`, opened just for this (never
/// created: `None` when the user has no index yet).
pub(crate) fn read_digest(
    home: &std::path::Path,
    peer: &str,
) -> Result<Option<crate::replica::Digest>> {
    use rusqlite::OpenFlags;
    let path = home.join(crate::account::INDEX_FILE);
    let conn = match Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) {
        Ok(c) => c,
        Err(_) if !path.exists() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    digest(&conn, peer).map(Some)
}

pub(crate) fn current_modseq(conn: &Connection) -> Result<ModSeq> {
    Ok(
        conn.query_row("SELECT value FROM meta WHERE key='modseq'", [], |r| {
            r.get::<_, i64>(0)
        })? as u64,
    )
}

pub(crate) fn tombstones(
    conn: &Connection,
    mailbox_id: i64,
) -> Result<Vec<(Uid, MessageGuid, ModSeq)>> {
    let mut st = conn.prepare_cached(
        "SELECT uid, guid, modseq FROM tombstone WHERE mailbox_id = ?1 ORDER BY uid",
    )?;
    let rows = st.query_map([mailbox_id], |r| {
        Ok((
            r.get(0)?,
            MessageGuid(guid16(r.get(1)?)),
            r.get::<_, i64>(2)? as u64,
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// UIDs of a mailbox expunged after `modseq` (as far as tombstones are
/// kept), ascending.
pub(crate) fn expunged_since(
    conn: &Connection,
    mailbox_id: i64,
    modseq: ModSeq,
) -> Result<Vec<Uid>> {
    let mut st = conn.prepare_cached(
        "SELECT uid FROM tombstone WHERE mailbox_id = ?1 AND modseq > ?2 ORDER BY uid",
    )?;
    let rows = st.query_map(params![mailbox_id, modseq as i64], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn tombstone_for_guid(
    conn: &Connection,
    mailbox_id: i64,
    guid: &MessageGuid,
) -> Result<bool> {
    let mut st =
        conn.prepare_cached("SELECT 1 FROM tombstone WHERE mailbox_id = ?1 AND guid = ?2")?;
    Ok(st.exists(params![mailbox_id, &guid.0[..]])?)
}

#[cfg(test)]
mod tests;

/// Remember the UIDNEXT of mailbox `id` under its GUID (`mailbox_floor`),
/// before the mailbox is deleted or merged away.
pub(crate) fn retire_uids(tx: &rusqlite::Connection, id: i64) -> crate::Result<()> {
    tx.execute(
        "INSERT INTO mailbox_floor(guid, uidnext)
           SELECT guid, uidnext FROM mailbox WHERE id = ?1
         ON CONFLICT(guid) DO UPDATE SET uidnext = max(uidnext, excluded.uidnext)",
        [id],
    )?;
    Ok(())
}
