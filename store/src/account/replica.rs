//! A replica's side of a sync session: the delta it sends, the content it
//! lacks, and applying the peer's delta (the rules are in `crate::replica`).
//!
//! # One transaction per session, or per chunk of new messages
//! A delta is applied under the account's index lock in one index
//! transaction: files are linked and renamed first, made durable, then the
//! rows are committed. A crash in between leaves files whose names carry
//! their GUIDs; the reconciling scan indexes them where they are (see
//! `transfer.rs`), and the next session finishes the job — nothing is ever
//! in two mailboxes, nothing lost. An error undoes the file operations.
//!
//! A delta of more than `PeerLimits::apply_chunk_messages` messages (a
//! first sync: 100,000 rows held the user's deliveries for 14 s) first
//! adds the messages new here in chunks, each its own transaction, the
//! index lock free between them; then one last transaction applies
//! everything else (merges, moves, flags, expunges, mailbox deletes and
//! names). The chunks take the messages by mailbox and in the order of the
//! UIDs they take, so UIDs ascend across chunks. A chunk adds a message
//! only at a UID that is free and not below its mailbox's UIDNEXT at that
//! chunk's start: a delivery between two chunks takes the next UID, and
//! a peer message that wanted it (or one below it) is left to the last
//! transaction, which gives it a fresh UID above everything, as for any UID
//! given out while a session runs (the peer follows at the next session).
//! So no UID is used twice and none appears below one already shown
//! (RFC 3501 §2.3.1.1). The changes of such an apply are one contiguous
//! modseq range only if nothing was logged between chunks; otherwise the
//! peer is not told a range (`applied_modseqs`), so it does not take the
//! delivery for its own change coming back. A session cut between chunks
//! leaves the committed chunks applied and the mark where it was: the
//! next session resends the delta and finds those messages already here.
//! Deltas that reset a UIDVALIDITY or merge mailboxes renumber whole
//! mailboxes and stay one transaction.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::PathBuf;

use cove_dedup::{ContentId, StagedBlob};
use rusqlite::{OptionalExtension, params};

use super::{Account, DELETED_DIR, scratch_busy};
use crate::ids::{Flags, MailboxGuid, MessageGuid, ModSeq, Uid};
use crate::index::{self, MailboxInfo, MessageMeta, NewMessageRow, Tx};
use crate::maildir::{self, FileName, FolderIdentity};
use crate::replica::{
    ApplyProgress, ApplyReport, ContentFeed, Delta, Digest, FlagClock, FlagsSide, MailboxGone,
    MailboxMerged, MailboxState, Mark, MessageState, PeerLimits, Stamp, SubscriptionState,
    TombstoneState, merge_flags, renumbering, validate_delta,
};
use crate::watch::{OwnEvent, OwnTally, own_rename};
use crate::{Error, IoContext, Result};

/// A message row with its replication columns.
struct LocalRow {
    mailbox_id: i64,
    meta: MessageMeta,
    placed: Stamp,
    clock: String,
}

/// `SELECT` of a [`LocalRow`], followed by `where`.
fn local_rows_sql(r#where: &str) -> String {
    format!(
        "SELECT {}, mailbox_id, placed, clock FROM message WHERE {where}",
        index::MESSAGE_COLS
    )
}

fn local_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LocalRow> {
    Ok(LocalRow {
        meta: index::message_row(r)?,
        mailbox_id: r.get(9)?,
        placed: r.get::<_, i64>(10)? as u64,
        clock: r.get(11)?,
    })
}

fn row_by_guid(conn: &rusqlite::Connection, guid: &MessageGuid) -> Result<Option<LocalRow>> {
    let mut st = conn.prepare_cached(&local_rows_sql("guid = ?1"))?;
    Ok(st.query_row([&guid.0[..]], local_row).optional()?)
}

/// When a mailbox got its name (replication stamp).
fn name_stamp(tx: &Tx<'_>, mailbox_id: i64) -> Result<Stamp> {
    let v: i64 = tx
        .tx
        .prepare_cached("SELECT name_stamp FROM mailbox WHERE id = ?1")?
        .query_row([mailbox_id], |r| r.get(0))?;
    Ok(v as u64)
}

/// The newest expunge stamp of a GUID on this node, if it was expunged:
/// its tombstones, and those a renumbering dropped (`expunged_guid`).
fn expunged_at(conn: &rusqlite::Connection, guid: &MessageGuid) -> Result<Option<Stamp>> {
    let mut st = conn.prepare_cached(
        "SELECT max(stamp) FROM (SELECT stamp FROM tombstone WHERE guid = ?1
                                 UNION ALL SELECT stamp FROM expunged_guid WHERE guid = ?1)",
    )?;
    let v: Option<i64> = st.query_row([&guid.0[..]], |r| r.get(0))?;
    Ok(v.map(|s| s as u64))
}

/// Which placements (mailbox, UID, GUID) made after `since` the peer
/// holds too: those this node took from it (their change-log row names the
/// peer). Placements at or below `since` are not listed: the peer applied
/// them. Others (user operations here, fresh UIDs only this node gave) are
/// listed as unknown to the peer.
fn placements_peer_has(
    conn: &rusqlite::Connection,
    peer: &str,
    since: u64,
) -> Result<HashMap<(MailboxGuid, Uid, MessageGuid), bool>> {
    let mut st = conn.prepare_cached(
        "SELECT mailbox_guid, uid, guid, detail FROM change
         WHERE modseq > ?1 AND kind = 'add' ORDER BY modseq",
    )?;
    let rows = st.query_map([since as i64], |r| {
        Ok((
            MailboxGuid(index::guid16(r.get(0)?)),
            r.get::<_, Uid>(1)?,
            MessageGuid(index::guid16(r.get(2)?)),
            r.get::<_, Option<String>>(3)?,
        ))
    })?;
    let mut out = HashMap::new();
    for row in rows {
        let (mailbox, uid, guid, from) = row?;
        out.insert((mailbox, uid, guid), from.as_deref() == Some(peer));
    }
    Ok(out)
}

/// Mailboxes created or renamed after `since`: true if created and never
/// renamed since.
fn names_given_since(
    conn: &rusqlite::Connection,
    since: u64,
) -> Result<HashMap<MailboxGuid, bool>> {
    let mut st = conn.prepare_cached(
        "SELECT mailbox_guid, kind FROM change
         WHERE modseq > ?1 AND kind IN ('create', 'rename') ORDER BY modseq",
    )?;
    let rows = st.query_map([since as i64], |r| {
        Ok((
            MailboxGuid(index::guid16(r.get(0)?)),
            r.get::<_, String>(1)?,
        ))
    })?;
    let mut out = HashMap::new();
    for row in rows {
        let (guid, kind) = row?;
        let created = kind == "create";
        out.entry(guid)
            .and_modify(|c: &mut bool| *c = *c && created)
            .or_insert(created);
    }
    Ok(out)
}

/// Every mailbox's UIDNEXT.
fn uidnexts(tx: &Tx<'_>) -> Result<HashMap<MailboxGuid, Uid>> {
    let mut st = tx.tx.prepare_cached("SELECT guid, uidnext FROM mailbox")?;
    let rows = st.query_map([], |r| {
        Ok((MailboxGuid(index::guid16(r.get(0)?)), r.get::<_, Uid>(1)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// File operations of one apply, undone if it fails.
#[derive(Default)]
struct FileOps {
    linked: Vec<PathBuf>,
    renamed: Vec<(PathBuf, PathBuf)>,
    dirs: HashSet<PathBuf>,
    /// Files of expunged messages, removed after the commit.
    doomed: Vec<PathBuf>,
    /// Their content, for the automatic blob collection.
    unlinked: Vec<cove_dedup::ContentId>,
    /// Folders of deleted mailboxes, parked; removed after the commit.
    parked: Vec<(PathBuf, PathBuf)>,
    /// Held while folders are parked (`scratch_busy`).
    parking: Option<fs::File>,
    /// Changes announced to the Maildir watcher, taken back if the apply
    /// fails.
    announced: OwnTally,
}

impl FileOps {
    fn undo(&self, account: &Account) {
        account.own_changes().retract_tally(&self.announced);
        for (src, dst) in self.renamed.iter().rev() {
            if let Err(e) = maildir::rename_noreplace(dst, src) {
                tracing::warn!(file = %dst.display(), error = %e, "could not undo a rename of a failed sync");
            }
        }
        for (folder, parked) in &self.parked {
            let _ = maildir::rename_noreplace(parked, folder);
        }
        for p in &self.linked {
            let _ = fs::remove_file(p);
        }
    }

    /// Tell the Maildir watcher that these changes are about to be made
    /// (their events then cost no scan).
    fn announce<const N: usize>(&mut self, account: &Account, changes: [(PathBuf, OwnEvent); N]) {
        self.announced.add(&changes);
        account.own_changes().expect(changes);
    }

    fn touched(&mut self, path: &std::path::Path) {
        if let Some(dir) = path.parent() {
            self.dirs.insert(dir.to_path_buf());
        }
    }
}

/// Where a message of `flags` lives under the base name `base`.
fn rel_name(base: &str, flags: Flags) -> Result<String> {
    let parsed =
        FileName::parse(base).ok_or_else(|| Error::InvalidData(format!("bad file name {base}")))?;
    Ok(if flags.is_empty() {
        format!("new/{}", parsed.base)
    } else {
        format!("cur/{}", parsed.cur_name(flags))
    })
}

fn base_of(file: &str) -> &str {
    file.rsplit('/').next().unwrap_or(file)
}

impl Account {
    /// Everything that changed after modseq `since` (all of it if `since`
    /// is ahead of this node's modseq, as after an index rebuild), for
    /// `peer`, whose mark of this node `since` is.
    pub fn replica_delta(&self, peer: &str, since: Mark) -> Result<Delta> {
        let mut g = self.conn()?;
        let tx = g.conn.transaction()?;
        let modseq = index::current_modseq(&tx)?;
        let epoch = index::epoch(&tx)?;
        // A mark from another epoch (this index was rebuilt since) or
        // ahead of this index means nothing: everything is sent. A mark
        // below the pruned history: everything, as a complete delta.
        let floor = super::history::history_floor(&tx)?;
        let known = since.epoch == epoch && since.modseq <= modseq;
        let complete = known && since.modseq > 0 && since.modseq < floor;
        if complete {
            tracing::info!(user = %self.email, peer = %peer.escape_debug(), mark = since.modseq, floor,
                "replication: the peer is behind the pruned history; it gets a complete delta");
        }
        let since = if known { since.modseq } else { 0 };
        let mut delta = Delta {
            epoch,
            since,
            modseq,
            sieve: self.sieve_state(),
            complete,
            ..Delta::default()
        };
        // Where the messages and tombstones start.
        let since = if complete { 0 } else { since };
        {
            let mut st = tx.prepare_cached(
                "SELECT guid, name, name_stamp, uidvalidity, uidnext, special_use FROM mailbox ORDER BY id",
            )?;
            let rows = st.query_map([], |r| {
                Ok(MailboxState {
                    guid: MailboxGuid(index::guid16(r.get(0)?)),
                    name: r.get(1)?,
                    name_stamp: r.get::<_, i64>(2)? as u64,
                    uidvalidity: r.get(3)?,
                    uidnext: r.get(4)?,
                    special_use: r.get(5)?,
                    created_apart: false,
                })
            })?;
            delta.mailboxes = rows.collect::<rusqlite::Result<_>>()?;
            let named = names_given_since(&tx, since)?;
            for m in &mut delta.mailboxes {
                m.created_apart = named.get(&m.guid) == Some(&true);
            }
            let mut st = tx.prepare_cached("SELECT guid, name, stamp FROM mailbox_gone")?;
            let rows = st.query_map([], |r| {
                Ok(MailboxGone {
                    guid: MailboxGuid(index::guid16(r.get(0)?)),
                    name: r.get(1)?,
                    stamp: r.get::<_, i64>(2)? as u64,
                })
            })?;
            delta.gone = rows.collect::<rusqlite::Result<_>>()?;
            let mut st = tx.prepare_cached("SELECT guid, into_guid FROM mailbox_merged")?;
            let rows = st.query_map([], |r| {
                Ok(MailboxMerged {
                    guid: MailboxGuid(index::guid16(r.get(0)?)),
                    into: MailboxGuid(index::guid16(r.get(1)?)),
                })
            })?;
            delta.merged = rows.collect::<rusqlite::Result<_>>()?;
            let mut st = tx.prepare_cached(
                "SELECT name, subscribed, stamp FROM subscription_stamp
                 UNION ALL
                 SELECT name, 1, 0 FROM subscription
                   WHERE name NOT IN (SELECT name FROM subscription_stamp)",
            )?;
            let rows = st.query_map([], |r| {
                Ok(SubscriptionState {
                    name: r.get(0)?,
                    subscribed: r.get(1)?,
                    stamp: r.get::<_, i64>(2)? as u64,
                })
            })?;
            delta.subscriptions = rows.collect::<rusqlite::Result<_>>()?;
            // Mailbox by mailbox (CROSS JOIN keeps that order): the
            // modseq index is per mailbox (index.rs, schema 5).
            let mut st = tx.prepare_cached(
                "SELECT mb.guid, m.uid, m.guid, m.content_id, m.flags, m.keywords, m.clock, m.placed,
                        m.internal_date, m.size
                 FROM mailbox mb CROSS JOIN message m ON mb.id = m.mailbox_id
                 WHERE m.modseq > ?1 ORDER BY m.modseq",
            )?;
            let rows = st.query_map([since as i64], |r| {
                let content: Vec<u8> = r.get(3)?;
                let mut c = [0u8; 32];
                let n = content.len().min(32);
                c[..n].copy_from_slice(&content[..n]);
                Ok(MessageState {
                    mailbox: MailboxGuid(index::guid16(r.get(0)?)),
                    uid: r.get(1)?,
                    guid: MessageGuid(index::guid16(r.get(2)?)),
                    content: c,
                    flags: r.get::<_, i64>(4)? as u8,
                    keywords: index::keywords_from_text(&r.get::<_, String>(5)?),
                    clock: r.get(6)?,
                    placed: r.get::<_, i64>(7)? as u64,
                    internal_date: r.get(8)?,
                    size: r.get::<_, i64>(9)? as u64,
                    peer_has: false,
                })
            })?;
            delta.messages = rows.collect::<rusqlite::Result<_>>()?;
            let known = placements_peer_has(&tx, peer, since)?;
            for m in &mut delta.messages {
                m.peer_has = known
                    .get(&(m.mailbox, m.uid, m.guid))
                    .copied()
                    .unwrap_or(true);
            }
            let mut st = tx.prepare_cached(
                "SELECT coalesce(mb.guid, mg.guid), t.uid, t.guid, t.stamp
                 FROM tombstone t
                 LEFT JOIN mailbox mb ON mb.id = t.mailbox_id
                 LEFT JOIN mailbox_gone mg ON mg.id = t.mailbox_id
                 WHERE t.modseq > ?1 ORDER BY t.modseq",
            )?;
            let rows = st.query_map([since as i64], |r| {
                Ok((
                    r.get::<_, Option<Vec<u8>>>(0)?,
                    r.get::<_, Uid>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?;
            for row in rows {
                let (mailbox, uid, guid, stamp) = row?;
                // A tombstone of a mailbox deleted before schema 4 names no
                // GUID: the peer learns of that mailbox's delete anyway.
                if let Some(mailbox) = mailbox {
                    delta.tombstones.push(TombstoneState {
                        mailbox: MailboxGuid(index::guid16(mailbox)),
                        uid,
                        guid: MessageGuid(index::guid16(guid)),
                        stamp: stamp as u64,
                    });
                }
            }
        }
        tx.finish()?;
        Ok(delta)
    }

    /// Which of `ids` some message of this user's has as its content.
    pub fn holds_content(&self, ids: &[[u8; 32]]) -> Result<HashSet<[u8; 32]>> {
        let wanted: HashSet<[u8; 32]> = ids.iter().copied().collect();
        let g = self.conn()?;
        let mut st = g
            .conn
            .prepare_cached("SELECT DISTINCT content_id FROM message")?;
        let mut rows = st.query([])?;
        let mut held = HashSet::new();
        while let Some(row) = rows.next()? {
            let c: Vec<u8> = row.get(0)?;
            if let Ok(c) = <[u8; 32]>::try_from(c.as_slice())
                && wanted.contains(&c)
            {
                held.insert(c);
            }
        }
        Ok(held)
    }

    /// This node's position for `peer` in an anti-entropy round.
    pub fn replica_digest(&self, peer: &str) -> Result<Digest> {
        let g = self.conn()?;
        index::digest(&g.conn, peer)
    }

    /// The highest modseq of `peer`'s that this node has applied.
    pub fn peer_mark(&self, peer: &str) -> Result<Mark> {
        let g = self.conn()?;
        let v: Option<(i64, i64)> = g
            .conn
            .query_row(
                "SELECT modseq, epoch FROM peer_mark WHERE peer = ?1",
                [peer],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(v.map_or(Mark::default(), |(m, e)| Mark {
            modseq: m.max(0) as u64,
            epoch: e as u64,
        }))
    }

    pub fn set_peer_mark(&self, peer: &str, mark: Mark) -> Result<()> {
        super::history::store_mark(
            &self.conn()?.conn,
            super::history::MarkTable::PeerMark,
            peer,
            mark,
        )
    }

    /// The content of `remote`'s messages that this node must fetch: for
    /// messages it does not hold, whose blob is not stored here either. In
    /// the order a chunked apply takes the messages (by mailbox and UID),
    /// so that each chunk's content arrives before the next chunk's.
    pub fn replica_missing_content(&self, remote: &Delta) -> Result<Vec<[u8; 32]>> {
        let g = self.conn()?;
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut order: Vec<&MessageState> = remote.messages.iter().collect();
        order.sort_by_key(|m| (m.mailbox, m.uid));
        for m in order {
            if !seen.insert(m.content) {
                continue;
            }
            if row_by_guid(&g.conn, &m.guid)?.is_some() {
                continue;
            }
            if !self.blobs.path_of(&ContentId(m.content)).exists() {
                out.push(m.content);
            }
        }
        Ok(out)
    }

    /// Apply a peer's delta. `local` is the delta this node sent in the
    /// same session (the renumbering is decided from both); `content` holds
    /// the blobs fetched from the peer, verified, or that are arriving
    /// while the apply runs (each chunk waits for its own).
    ///
    /// Everything in `remote` is checked first ([`validate_delta`]: names,
    /// flags, stamps within `limits`' clock skew); a delta that fails is
    /// not applied at all.
    ///
    /// A delta with more than `limits.apply_chunk_messages` messages (a
    /// first sync) is applied in chunks, each its own transaction (see the
    /// module's essay); `progress` hears of each chunk once it is
    /// committed and the index lock is free.
    pub fn apply_replica(
        &self,
        peer: &str,
        local: &Delta,
        remote: &Delta,
        content: &mut ContentFeed,
        limits: &PeerLimits,
        progress: &mut dyn FnMut(ApplyProgress),
    ) -> Result<ApplyReport> {
        validate_delta(remote, self.env.now_ms(), limits)?;
        let renum = renumbering(local, remote);
        // The peer's delta as the merge sees it (mailboxes merged into
        // another: their messages in the kept one).
        let remote = &*renum.view(remote);
        let mut run = ApplyRun {
            account: self,
            peer,
            remote,
            renum: &renum,
            report: ApplyReport {
                uidvalidity_resets: renum.resets.len() as u64,
                ..ApplyReport::default()
            },
            modseqs: None,
            contiguous: true,
            unflushed_dirs: HashSet::new(),
        };
        // New messages first, in arrival order, a chunk per transaction.
        // Not when UIDVALIDITYs reset or mailboxes merge: those renumber
        // whole mailboxes, which stays one transaction.
        let mut early: HashSet<MessageGuid> = HashSet::new();
        let chunk = limits.apply_chunk_messages.max(1);
        let chunked =
            renum.resets.is_empty() && renum.merged.is_empty() && remote.messages.len() > chunk;
        // One index checkpoint for all the chunks, when the apply ends.
        let _bulk = chunked.then(|| BulkWrites::begin(self)).transpose()?;
        if chunked {
            let order = arrival_order(remote, &renum);
            let total = order.len();
            for (n, slice) in order.chunks(chunk).enumerate() {
                // This chunk's content only: the next chunks' may still be
                // on the link (`ContentFeed`).
                content.wait_for(slice.iter().map(|&i| &remote.messages[i].content))?;
                let blobs = content.blobs();
                run.transaction(slice.len(), Flush::Deferred, |cx, tx| {
                    if n == 0 {
                        cx.merge_mailboxes(tx)?;
                        cx.mailboxes(tx)?;
                    }
                    cx.new_messages(tx, slice, blobs, &mut early)
                })?;
                progress(ApplyProgress {
                    applied: (n * chunk + slice.len()).min(total),
                    total,
                });
                // Let a delivery waiting for the index lock take it now.
                std::thread::yield_now();
            }
        }
        let rows =
            remote.messages.len() - early.len() + remote.tombstones.len() + local.messages.len();
        content.wait_all()?;
        let blobs = content.blobs();
        run.transaction(rows, Flush::BeforeCommit, |cx, tx| {
            if !chunked {
                cx.merge_mailboxes(tx)?;
                cx.mailboxes(tx)?;
            }
            cx.messages(tx, blobs, &early)?;
            cx.expunged_behind_history(tx, local.since)?;
            cx.deleted_mailboxes(tx)?;
            cx.settle_names(tx)?;
            cx.raise_uidnexts(tx)?;
            cx.learn_merges(tx)?;
            cx.subscriptions(tx)
        })?;
        // Sessions with a renumbered mailbox selected (merged into the
        // peer's, or its UIDVALIDITY given way) saw the renumbering's
        // changes logged under the mailbox as it is now, not the one they
        // hold: tell them to look (`announce_renumbered`).
        if let Some((_, last)) = run.modseqs {
            let renumbered = renum.merged.keys().chain(renum.resets.keys());
            self.announce_renumbered(renumbered.copied(), last);
        }
        let mut report = run.report;
        report.applied_modseqs = run.modseqs.filter(|_| run.contiguous);
        if let Some(sieve) = &remote.sieve {
            self.merge_sieve(peer, sieve, limits);
        }
        Ok(report)
    }

    /// The user's Sieve state for a delta; a failure to read it is logged
    /// and keeps the mail flowing.
    fn sieve_state(&self) -> Option<Box<crate::sieve::SieveState>> {
        crate::sieve::SieveScripts::new(&self.home, None, self.env.clone())
            .state()
            .map(|s| s.map(Box::new))
            .unwrap_or_else(|e| {
                tracing::warn!(user = %self.email(), error = %e, "replication: cannot read the sieve scripts; not sent");
                None
            })
    }

    /// Merge a peer's Sieve state (after its mail): refused or failed, it
    /// is logged and the mail stays applied.
    fn merge_sieve(&self, peer: &str, sieve: &crate::sieve::SieveState, limits: &PeerLimits) {
        let latest_ms = limits.latest_stamp(self.env.now_ms()) >> 16;
        if let Err(e) = crate::sieve::SieveScripts::new(&self.home, None, self.env.clone())
            .merge(sieve, latest_ms)
        {
            tracing::warn!(user = %self.email(), peer = %peer, error = %e, "replication: the peer's sieve scripts were not merged");
        }
    }
}

/// The index's WAL checkpoints held back while a chunked apply runs
/// (`index::begin_bulk_writes`), one checkpoint when it ends, whether it
/// succeeded or not. A connection reopened meanwhile (the housekeeping
/// closes idle indexes) has ordinary checkpoints again: only slower.
///
/// Meanwhile the background indexer leaves the account alone
/// (`Account::in_bulk_apply`): it wrote the views of up to 10,000 new
/// messages in one transaction under the account's index lock, at a low
/// CPU priority, and on a loaded machine every chunk behind it waited
/// 1.3-2.7 s (a 100,000-message first sync at load 8; 40 s of apply past
/// the last blob at load 20). It does the views once the apply is done.
struct BulkWrites<'a> {
    account: &'a Account,
}

impl<'a> BulkWrites<'a> {
    fn begin(account: &'a Account) -> Result<BulkWrites<'a>> {
        index::begin_bulk_writes(&account.conn()?.conn)?;
        account.bulk_apply(true);
        Ok(BulkWrites { account })
    }
}

impl Drop for BulkWrites<'_> {
    fn drop(&mut self) {
        self.account.bulk_apply(false);
        let ended = self
            .account
            .conn()
            .and_then(|g| index::end_bulk_writes(&g.conn));
        if let Err(e) = ended {
            // The next commit checkpoints instead.
            tracing::debug!(user = %self.account.email, error = %e, "replication: could not checkpoint the index after a chunked apply");
        }
    }
}

/// Whether a transaction of an apply makes its files durable before it
/// commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flush {
    /// The last (or only) transaction: one group flush covers its files
    /// and every earlier chunk's, before the commit that lets the session
    /// advance the mark.
    BeforeCommit,
    /// A chunk of new messages: no flush of its own. Nothing of it is
    /// acknowledged to the peer before the last transaction's flush, and
    /// a delivery in between flushes it with its own (a group flush covers
    /// the whole filesystem, and the index's WAL is ordered), so a crash
    /// loses at most chunks the next session resends. One `syncfs` per
    /// 2,000 messages would cost more than the rows on a busy disk.
    Deferred,
}

/// One apply of a peer's delta, over one or more transactions.
struct ApplyRun<'a> {
    account: &'a Account,
    peer: &'a str,
    remote: &'a Delta,
    renum: &'a crate::replica::Renumbering,
    report: ApplyReport,
    /// The first and last modseq the apply's transactions logged.
    modseqs: Option<(ModSeq, ModSeq)>,
    /// No other change was logged between two of them.
    contiguous: bool,
    /// Directories that chunks without a flush of their own wrote in.
    unflushed_dirs: HashSet<PathBuf>,
}

impl ApplyRun<'_> {
    /// One transaction of the apply under the index lock: files linked
    /// and renamed by `step`, made durable, then the rows committed; on
    /// failure the file operations are undone. After the commit the
    /// changes are announced and expunged files removed.
    fn transaction(
        &mut self,
        rows: usize,
        flush: Flush,
        step: impl FnOnce(&mut Apply<'_>, &mut Tx<'_>) -> Result<()>,
    ) -> Result<()> {
        let account = self.account;
        let mut g = account.conn()?;
        let mut ops = FileOps::default();
        let cache_kib = index::cache_kib_for_rows(rows);
        let result = index::with_cache(&mut g.conn, cache_kib, |conn| {
            let mut tx = Tx::begin(conn, &account.env)?;
            let floors = uidnexts(&tx)?;
            let mut cx = Apply {
                account,
                peer: self.peer,
                floors,
                remote: self.remote,
                renum: self.renum,
                ops: &mut ops,
                report: &mut self.report,
                verified: HashMap::new(),
            };
            step(&mut cx, &mut tx)?;
            if flush == Flush::BeforeCommit {
                // In fsync mode each directory is flushed on its own:
                // those of the chunks before too.
                for dir in ops.dirs.iter().chain(&self.unflushed_dirs) {
                    account.sync.dir_written(dir)?;
                }
                account.sync.dir_written(&account.maildir)?;
                account.sync.sync()?;
            }
            tx.commit()
        });
        let changes = match result {
            Ok(c) => c,
            Err(e) => {
                ops.undo(account);
                return Err(e);
            }
        };
        drop(g);
        if flush == Flush::Deferred {
            self.unflushed_dirs.extend(ops.dirs.iter().cloned());
        }
        if let (Some(first), Some(last)) = (changes.first(), changes.last()) {
            self.modseqs = Some(match self.modseqs {
                None => (first.modseq, last.modseq),
                Some((start, end)) => {
                    self.contiguous &= first.modseq == end + 1;
                    (start, last.modseq)
                }
            });
        }
        account.announce(changes);
        for f in &ops.doomed {
            let announced = account.own.announce([(f.clone(), OwnEvent::Vanish)]);
            if fs::remove_file(f).is_ok() {
                announced.made();
            }
        }
        for (_, parked) in &ops.parked {
            let _ = fs::remove_dir_all(parked);
        }
        account.blobs.unlinked(ops.unlinked);
        Ok(())
    }
}

/// The peer's messages in the order they arrive here when applied in
/// chunks: by mailbox, then by the UID each takes (so that UIDs ascend
/// from one chunk to the next). Indexes into `remote.messages`.
fn arrival_order(remote: &Delta, renum: &crate::replica::Renumbering) -> Vec<usize> {
    let mut order: Vec<(MailboxGuid, Uid, usize)> = remote
        .messages
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let uid = renum.uid_of(r);
            (r.mailbox, uid, i)
        })
        .collect();
    order.sort_unstable();
    order.into_iter().map(|(_, _, i)| i).collect()
}

struct Apply<'a> {
    account: &'a Account,
    /// The peer whose delta this is.
    peer: &'a str,
    /// Each mailbox's UIDNEXT here before the apply: no message new here
    /// takes a UID below it (this node may have shown those UIDs).
    floors: HashMap<MailboxGuid, Uid>,
    remote: &'a Delta,
    renum: &'a crate::replica::Renumbering,
    ops: &'a mut FileOps,
    report: &'a mut ApplyReport,
    /// Blobs already stored here that this apply checked against their
    /// hash, with their length (`None`: missing or corrupt).
    verified: HashMap<[u8; 32], Option<u64>>,
}

impl Apply<'_> {
    /// A mailbox's folder; refused if its directory would leave the
    /// Maildir (defence in depth: peer names are checked on arrival).
    fn folder(&self, mb: &MailboxInfo) -> Result<PathBuf> {
        maildir::folder_path(&self.account.maildir, &mb.dir)
    }

    /// A name for mailbox `guid` (named at `stamp`) that no other mailbox
    /// here holds: when two mailboxes end with one name, the one named
    /// later yields and takes a suffix (the same choice on every node).
    /// Returns the name, after making a local mailbox yield if it must.
    fn free_name(
        &mut self,
        tx: &mut Tx<'_>,
        name: &str,
        guid: MailboxGuid,
        stamp: Stamp,
    ) -> Result<String> {
        let Some(holder) = index::mailbox_by_name(&tx.tx, name)? else {
            return Ok(name.to_string());
        };
        if holder.guid == guid {
            return Ok(name.to_string());
        }
        let suffixed = |g: &MailboxGuid| format!("{name}-{}", &g.to_hex()[..8]);
        let holder_stamp = name_stamp(tx, holder.id)?;
        if name.eq_ignore_ascii_case("INBOX") || (holder_stamp, holder.guid) < (stamp, guid) {
            return Ok(suffixed(&guid));
        }
        let new_name = suffixed(&holder.guid);
        self.rename_folder(tx, &holder, &new_name, holder_stamp + 1)?;
        Ok(name.to_string())
    }

    fn rename_folder(
        &mut self,
        tx: &mut Tx<'_>,
        mb: &MailboxInfo,
        name: &str,
        stamp: Stamp,
    ) -> Result<()> {
        let dir = maildir::mailbox_dir_name(name);
        let src = self.folder(mb)?;
        let dst = maildir::folder_path(&self.account.maildir, &dir)?;
        match maildir::rename_noreplace(&src, &dst) {
            Ok(()) => self.ops.renamed.push((src, dst)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !src.exists() => {}
            Err(e) => {
                return Err(e).ctx(|| format!("rename {} to {}", src.display(), dst.display()));
            }
        }
        tx.rename_mailbox(mb, name, &dir)?;
        tx.tx.execute(
            "UPDATE mailbox SET name_stamp = ?2 WHERE id = ?1",
            params![mb.id, stamp as i64],
        )?;
        self.report.mailboxes_renamed += 1;
        Ok(())
    }

    /// This node's UIDVALIDITY of a mailbox gives way to the peer's (lower)
    /// one: every message takes the UID the renumbering gives it (the
    /// peer's UID for it, or a fresh one).
    fn reset(
        &mut self,
        tx: &mut Tx<'_>,
        mb: &MailboxInfo,
        reset: crate::replica::Reset,
    ) -> Result<MailboxInfo> {
        tracing::info!(user = %self.account.email, mailbox = %mb.name, from = mb.uidvalidity, to = reset.uidvalidity,
            "replication: this mailbox's UIDVALIDITY gives way to the peer's (an index was rebuilt); its UIDs follow the peer's");
        self.renumber_mailbox(tx, mb, mb.guid, reset.uidvalidity, reset.uidnext)
    }

    /// This node's mailbox `mb` merges into the peer's `into` (both were
    /// created under one name while the nodes were apart): it becomes that
    /// mailbox (GUID, UIDVALIDITY, name stamp), its messages at the fresh
    /// UIDs the renumbering gives them.
    fn merge_into(
        &mut self,
        tx: &mut Tx<'_>,
        mb: &MailboxInfo,
        into: &MailboxState,
        merge: crate::replica::Merge,
    ) -> Result<()> {
        tracing::info!(user = %self.account.email, mailbox = %mb.name, into = %into.guid,
            "replication: this mailbox and the peer's of the same name were made while the nodes were apart; they merge into one");
        // One name for the mailbox on every node. A merge a peer told of can
        // reach a mailbox renamed since: then the two names keep their own
        // stamps, and the later name wins here ([`Self::mailboxes`], right
        // after) and on the peer, as for any rename.
        let stamp = if mb.name == into.name {
            into.name_stamp
        } else {
            name_stamp(tx, mb.id)?
        };
        index::retire_uids(&tx.tx, mb.id)?;
        tx.tx.execute(
            "UPDATE mailbox SET guid = ?2, name_stamp = ?3 WHERE id = ?1",
            params![mb.id, &into.guid.0[..], stamp as i64],
        )?;
        tx.tx.execute(
            "UPDATE meta SET value = max(value, ?1) WHERE key = 'uidvalidity'",
            [into.uidvalidity as i64],
        )?;
        self.renumber_mailbox(tx, mb, into.guid, into.uidvalidity, merge.uidnext)?;
        // Its GUID now stands for the kept mailbox: a peer that still holds
        // it hears so ([`crate::replica::merges`]) and merges it too.
        remember_merge(&tx.tx, mb.guid, into.guid)?;
        self.report.mailboxes_renamed += 1;
        Ok(())
    }

    /// Give every message of `mb` (now known by `guid`) a UID under
    /// `uidvalidity`: the one the renumbering gives it, else a fresh one
    /// from `uidnext` on. Old UIDs are expunged (sessions see EXPUNGE, then
    /// the messages under their new UIDs); tombstones of the old UIDs are
    /// dropped, since those UIDs mean nothing now.
    fn renumber_mailbox(
        &mut self,
        tx: &mut Tx<'_>,
        mb: &MailboxInfo,
        guid: MailboxGuid,
        uidvalidity: u32,
        uidnext: Uid,
    ) -> Result<MailboxInfo> {
        let rows: Vec<LocalRow> = {
            let mut st = tx
                .tx
                .prepare_cached(&local_rows_sql("mailbox_id = ?1 ORDER BY uid"))?;
            let rows = st.query_map([mb.id], local_row)?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        // The old UIDs' tombstones go, but not what they say of their
        // messages: without it, a message expunged here would come back
        // from the peer (whose placement is older than the expunge, so the
        // peer applies the expunge: one node with it, one without).
        tx.tx.execute(
            "INSERT INTO expunged_guid(guid, stamp)
               SELECT guid, max(stamp) FROM tombstone WHERE mailbox_id = ?1 GROUP BY guid
             ON CONFLICT(guid) DO UPDATE SET stamp = max(stamp, excluded.stamp)",
            [mb.id],
        )?;
        let dropped: Vec<(MessageGuid, Stamp)> = {
            let mut st = tx.tx.prepare_cached(
                "SELECT guid, max(stamp) FROM tombstone WHERE mailbox_id = ?1 GROUP BY guid",
            )?;
            let rows = st.query_map([mb.id], |r| {
                Ok((
                    MessageGuid(index::guid16(r.get(0)?)),
                    r.get::<_, i64>(1)? as u64,
                ))
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let stamp = tx.stamp()?;
        for row in &rows {
            tx.expunge_stamped(mb, row.meta.uid, row.meta.guid, stamp)?;
        }
        tx.tx
            .execute("DELETE FROM tombstone WHERE mailbox_id = ?1", [mb.id])?;
        let mut next = uidnext;
        let mut fresh = || {
            let u = next;
            next += 1;
            u
        };
        let mut placed_rows = Vec::with_capacity(rows.len());
        for row in rows {
            let uid = self
                .renum
                .uids
                .get(&(guid, row.meta.guid))
                .copied()
                .unwrap_or_else(&mut fresh);
            placed_rows.push((uid, row));
        }
        tx.tx.execute(
            "UPDATE mailbox SET uidvalidity = ?2, uidnext = ?3, first_recent = ?3 WHERE id = ?1",
            params![mb.id, uidvalidity, next],
        )?;
        let mb = index::mailbox_by_guid(&tx.tx, &guid)?
            .ok_or_else(|| Error::Index("mailbox vanished inside its own transaction".into()))?;
        for (uid, row) in placed_rows {
            let base = base_of(&row.meta.file).to_string();
            let parsed_base = FileName::parse(&base)
                .map(|p| p.base)
                .ok_or_else(|| Error::InvalidData(format!("bad file name {base}")))?;
            let new_row = NewMessageRow {
                guid: row.meta.guid,
                content_id: row.meta.content_id,
                flags: row.meta.flags,
                keywords: &row.meta.keywords,
                internal_date: row.meta.internal_date,
                size: row.meta.size,
                base: &parsed_base,
                file: &row.meta.file,
                placed: Some(row.placed),
                clock: &row.clock,
            };
            let (_, modseq) = tx.insert_message_at(&mb, uid, &new_row)?;
            self.peer_has(tx, modseq)?;
            self.report.messages_renumbered += 1;
        }
        self.carry_expunges(tx, &mb, &dropped)?;
        FolderIdentity { guid, uidvalidity }.write(&self.folder(&mb)?)?;
        Ok(mb)
    }

    /// An expunge whose tombstone a renumbering of `mb` dropped, of a
    /// message this node no longer holds but the peer does (or will):
    /// the expunge of that message where the peer holds it after this
    /// session — at the UID the renumbering gives it in `mb`, else where
    /// the peer's delta puts it — a new tombstone that travels in this
    /// node's next delta (it claims only that message's own UID). Without
    /// it, an expunge made here after this node took its delta (a user's,
    /// while the session ran) is never sent: the peer keeps the message
    /// for good while the marks agree.
    fn carry_expunges(
        &mut self,
        tx: &mut Tx<'_>,
        mb: &MailboxInfo,
        dropped: &[(MessageGuid, Stamp)],
    ) -> Result<()> {
        for (g, stamp) in dropped {
            if row_by_guid(&tx.tx, g)?.is_some() {
                continue;
            }
            let place = match self.renum.uids.get(&(mb.guid, *g)) {
                Some(uid) => Some((mb.clone(), *uid)),
                None => match self.remote.messages.iter().find(|r| r.guid == *g) {
                    Some(r) => index::mailbox_by_guid(&tx.tx, &r.mailbox)?.map(|m| {
                        let uid = self.renum.uids.get(&(r.mailbox, *g)).copied();
                        (m, uid.unwrap_or(r.uid))
                    }),
                    None => None,
                },
            };
            let Some((dest, uid)) = place else {
                continue;
            };
            if uid == 0 || !Self::uid_free(tx, &dest, uid, g)? {
                continue;
            }
            tx.expunge_stamped(&dest, uid, *g, *stamp)?;
            tx.tx.execute(
                "UPDATE mailbox SET uidnext = max(uidnext, ?2 + 1) WHERE id = ?1",
                params![dest.id, uid],
            )?;
        }
        Ok(())
    }

    /// Mailboxes of this node that merge into the peer's (see
    /// `crate::replica::merges`), before the peer's mailboxes are applied.
    fn merge_mailboxes(&mut self, tx: &mut Tx<'_>) -> Result<()> {
        for (give, merge) in &self.renum.merged {
            let Some(mb) = index::mailbox_by_guid(&tx.tx, give)? else {
                continue;
            };
            if index::mailbox_by_guid(&tx.tx, &merge.into)?.is_some() {
                continue;
            }
            let Some(into) = self.remote.mailbox(&merge.into) else {
                continue;
            };
            let into = into.clone();
            self.merge_into(tx, &mb, &into, *merge)?;
        }
        Ok(())
    }

    /// Create the peer's mailbox here, under its GUID and UIDVALIDITY.
    fn create(&mut self, tx: &mut Tx<'_>, r: &MailboxState) -> Result<MailboxInfo> {
        let name = self.free_name(tx, &r.name, r.guid, r.name_stamp)?;
        let dir = maildir::mailbox_dir_name(&name);
        let path = maildir::folder_path(&self.account.maildir, &dir)?;
        maildir::create_folder(&path)?;
        FolderIdentity {
            guid: r.guid,
            uidvalidity: r.uidvalidity,
        }
        .write(&path)?;
        // Deleted here before: its tombstones (what this node expunged in
        // it, which peers may still have to learn) move to the new row, or
        // the delta would lose them and their UIDs could be given again.
        let earlier: Option<i64> = tx
            .tx
            .query_row(
                "SELECT id FROM mailbox_gone WHERE guid = ?1",
                [&r.guid.0[..]],
                |row| row.get(0),
            )
            .optional()?;
        tx.tx
            .execute("DELETE FROM mailbox_gone WHERE guid = ?1", [&r.guid.0[..]])?;
        let mb = tx.insert_mailbox(
            r.guid,
            &name,
            &dir,
            r.uidvalidity,
            r.special_use.as_deref(),
            false,
        )?;
        if let Some(earlier) = earlier {
            tx.tx.execute(
                "UPDATE tombstone SET mailbox_id = ?2 WHERE mailbox_id = ?1",
                params![earlier, mb.id],
            )?;
            tx.tx.execute(
                "UPDATE mailbox SET uidnext = max(uidnext,
                   coalesce((SELECT max(uid) + 1 FROM tombstone WHERE mailbox_id = ?1), 1))
                 WHERE id = ?1",
                [mb.id],
            )?;
        }
        // Deleted or merged away here before, and made again now (by mail
        // the deleter never saw, or a merge that could not be followed: the
        // kept mailbox is gone too): the UIDs it gave out here are not
        // given again, whether or not their tombstones are still kept.
        let retired: Option<Uid> = tx
            .tx
            .query_row(
                "SELECT uidnext FROM mailbox_floor WHERE guid = ?1",
                [&r.guid.0[..]],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(next) = retired.filter(|n| *n > 1) {
            tx.tx.execute(
                "UPDATE mailbox SET uidnext = max(uidnext, ?2) WHERE id = ?1",
                params![mb.id, next],
            )?;
            let floor = self.floors.entry(r.guid).or_insert(next);
            *floor = (*floor).max(next);
        }
        // Its UIDNEXT is raised to the peer's with the others, at the end
        // ([`Apply::raise_uidnexts`]).
        tx.tx.execute(
            "UPDATE mailbox SET name_stamp = ?2 WHERE id = ?1",
            params![mb.id, r.name_stamp as i64],
        )?;
        tx.tx.execute(
            "UPDATE meta SET value = max(value, ?1) WHERE key = 'uidvalidity'",
            [r.uidvalidity as i64],
        )?;
        self.report.mailboxes_created += 1;
        index::mailbox_by_guid(&tx.tx, &r.guid)?
            .ok_or_else(|| Error::Index("mailbox vanished inside its own transaction".into()))
    }

    /// The merges the peer knows of, kept to tell other peers (a merge
    /// that concerns a mailbox still here was applied by
    /// [`Self::merge_mailboxes`]; one this node never held is only passed
    /// on).
    fn learn_merges(&mut self, tx: &mut Tx<'_>) -> Result<()> {
        for m in &self.remote.merged {
            if index::mailbox_by_guid(&tx.tx, &m.guid)?.is_none() {
                remember_merge(&tx.tx, m.guid, m.into)?;
            }
        }
        Ok(())
    }

    /// Each mailbox's UIDNEXT raised to the peer's, in the last
    /// transaction of an apply: raised in the first chunk of a chunked one,
    /// the later chunks would find their own UIDs below it and give every
    /// message a fresh one.
    fn raise_uidnexts(&mut self, tx: &mut Tx<'_>) -> Result<()> {
        for r in &self.remote.mailboxes {
            tx.tx.execute(
                "UPDATE mailbox SET uidnext = max(uidnext, ?2) WHERE guid = ?1",
                params![&r.guid.0[..], r.uidnext],
            )?;
        }
        Ok(())
    }

    fn mailboxes(&mut self, tx: &mut Tx<'_>) -> Result<()> {
        for r in &self.remote.mailboxes {
            match index::mailbox_by_guid(&tx.tx, &r.guid)? {
                Some(l) => {
                    let l = match self.renum.resets.get(&r.guid) {
                        Some(reset) if reset.uidvalidity != l.uidvalidity => {
                            self.reset(tx, &l, *reset)?
                        }
                        _ => l,
                    };
                    let stamp = name_stamp(tx, l.id)?;
                    if l.name != r.name
                        && r.name_stamp > stamp
                        && !l.name.eq_ignore_ascii_case("INBOX")
                    {
                        let name = self.free_name(tx, &r.name, r.guid, r.name_stamp)?;
                        if name != l.name {
                            self.rename_folder(tx, &l, &name, r.name_stamp)?;
                        }
                    }
                }
                None => {
                    let gone: Option<i64> = tx
                        .tx
                        .query_row(
                            "SELECT stamp FROM mailbox_gone WHERE guid = ?1",
                            [&r.guid.0[..]],
                            |row| row.get(0),
                        )
                        .optional()?;
                    // Deleted here after the peer named it: stays deleted,
                    // unless mail the deleter never saw brings it back.
                    if gone.is_some_and(|s| s as u64 >= r.name_stamp) {
                        continue;
                    }
                    self.create(tx, r)?;
                }
            }
        }
        Ok(())
    }

    /// The mailbox a peer's message goes to, created (again) if needed.
    fn target_mailbox(
        &mut self,
        tx: &mut Tx<'_>,
        guid: &MailboxGuid,
    ) -> Result<Option<MailboxInfo>> {
        if let Some(mb) = index::mailbox_by_guid(&tx.tx, guid)? {
            return Ok(Some(mb));
        }
        match self.remote.mailbox(guid) {
            Some(r) => Ok(Some(self.create(tx, r)?)),
            None => Ok(None),
        }
    }

    /// `uid` if `guid`, arriving in `mb` here, may take it: it is free
    /// here and not below this node's UIDNEXT before the apply (a UID below
    /// it may have been shown to a client, which never looks below the
    /// last UID it saw: RFC 3501 §2.3.1.1). Otherwise a fresh UID above
    /// this node's and the peer's UIDNEXT. The renumbering foresees both
    /// from the two deltas; this happens when this node gave UIDs out while
    /// the session ran (after its delta was taken), which the renumbering
    /// could not know. The message keeps its placement stamp, so at the
    /// next session the peer sees the same placement with a higher UID,
    /// which wins, and follows: one UID never names two messages, a new
    /// message never appears below a UID already shown, and the nodes
    /// agree again.
    fn free_uid_or_fresh(
        &mut self,
        tx: &mut Tx<'_>,
        mb: &MailboxInfo,
        uid: Uid,
        guid: &MessageGuid,
    ) -> Result<Uid> {
        let below_floor = !self.renum.resets.contains_key(&mb.guid)
            && self.floors.get(&mb.guid).is_some_and(|f| uid < *f);
        if !below_floor && Self::uid_free(tx, mb, uid, guid)? {
            return Ok(uid);
        }
        let here: Uid =
            tx.tx
                .query_row("SELECT uidnext FROM mailbox WHERE id = ?1", [mb.id], |r| {
                    r.get(0)
                })?;
        let there = self.remote.mailbox(&mb.guid).map_or(1, |m| m.uidnext);
        let fresh = here.max(there).max(uid.saturating_add(1));
        tracing::info!(user = %self.account.email, mailbox = %mb.name, uid, fresh, guid = %guid, below_uidnext = below_floor,
            "replication: the UID is taken or passed here (given out during the session); the message gets a fresh one, which the peer will follow");
        self.report.messages_renumbered += 1;
        self.report.divergent = true;
        Ok(fresh)
    }

    /// The placement logged at `modseq` is one the peer holds too (it
    /// sent it, or applies the same renumbering): say so in the change log,
    /// so that this node's next delta does not offer it as new to the peer.
    fn peer_has(&self, tx: &mut Tx<'_>, modseq: ModSeq) -> Result<()> {
        tx.tx.execute(
            "UPDATE change SET detail = ?2 WHERE modseq = ?1",
            params![modseq as i64, self.peer],
        )?;
        Ok(())
    }

    fn uid_free(tx: &Tx<'_>, mb: &MailboxInfo, uid: Uid, guid: &MessageGuid) -> Result<bool> {
        if let Some(m) = index::message_by_uid(&tx.tx, mb.id, uid)? {
            return Ok(m.guid == *guid);
        }
        let retired: Option<Vec<u8>> = tx
            .tx
            .prepare_cached("SELECT guid FROM tombstone WHERE mailbox_id = ?1 AND uid = ?2")?
            .query_row(params![mb.id, uid], |r| r.get(0))
            .optional()?;
        Ok(retired.is_none_or(|g| index::guid16(g) == guid.0))
    }

    /// One chunk of a chunked apply (`slice`: indexes into the peer's
    /// messages, in [`arrival_order`]): each message new here whose UID is
    /// free and not below this mailbox's UIDNEXT is added, and noted in
    /// `early`. Any other (held here already, its UID taken or passed by
    /// a delivery between chunks, its mailbox not here yet) is left to the
    /// last transaction, which applies it by the usual rules — a fresh UID
    /// above everything there, never one below a UID already shown.
    fn new_messages(
        &mut self,
        tx: &mut Tx<'_>,
        slice: &[usize],
        content: &HashMap<[u8; 32], StagedBlob>,
        early: &mut HashSet<MessageGuid>,
    ) -> Result<()> {
        for &i in slice {
            let r = &self.remote.messages[i];
            let uid = self.renum.uid_of(r);
            if row_by_guid(&tx.tx, &r.guid)?.is_some() {
                continue;
            }
            let Some(mb) = index::mailbox_by_guid(&tx.tx, &r.mailbox)? else {
                continue;
            };
            let below_floor = self.floors.get(&mb.guid).is_some_and(|f| uid < *f);
            if below_floor || !Self::uid_free(tx, &mb, uid, &r.guid)? {
                continue;
            }
            self.add(tx, r, uid, content)?;
            early.insert(r.guid);
        }
        Ok(())
    }

    fn messages(
        &mut self,
        tx: &mut Tx<'_>,
        content: &HashMap<[u8; 32], StagedBlob>,
        early: &HashSet<MessageGuid>,
    ) -> Result<()> {
        let remote_live: HashSet<MessageGuid> =
            self.remote.messages.iter().map(|m| m.guid).collect();
        for r in self
            .remote
            .messages
            .iter()
            .filter(|r| !early.contains(&r.guid))
        {
            let target_uid = self.renum.uid_of(r);
            match row_by_guid(&tx.tx, &r.guid)? {
                Some(l) => self.merge_existing(tx, r, target_uid, l)?,
                None => self.add(tx, r, target_uid, content)?,
            }
        }
        // Local messages the renumbering moves and the peer did not send.
        for ((mailbox, guid), uid) in &self.renum.uids {
            if remote_live.contains(guid) {
                continue;
            }
            let Some(l) = row_by_guid(&tx.tx, guid)? else {
                continue;
            };
            let Some(mb) = index::mailbox_by_guid(&tx.tx, mailbox)? else {
                continue;
            };
            if l.mailbox_id != mb.id || l.meta.uid == *uid {
                continue;
            }
            let (flags, keywords) = (l.meta.flags, l.meta.keywords.clone());
            let clock = l.clock.clone();
            let placed = l.placed;
            if self.relocate(tx, &l, &mb, *uid, placed, flags, &keywords, &clock)? {
                self.report.messages_renumbered += 1;
            }
        }
        // Expunges: a tombstone whose GUID the peer no longer holds, at the
        // newest stamp the peer has for that GUID.
        let mut newest: HashMap<MessageGuid, Stamp> = HashMap::new();
        for t in &self.remote.tombstones {
            let e = newest.entry(t.guid).or_insert(t.stamp);
            *e = (*e).max(t.stamp);
        }
        for t in &self.remote.tombstones {
            if remote_live.contains(&t.guid) {
                continue;
            }
            let Some(newest) = newest.remove(&t.guid) else {
                continue;
            };
            self.expunge(tx, t, newest)?;
        }
        Ok(())
    }

    /// A complete delta (the peer's history was pruned past this node's
    /// mark, account/history.rs): a message here that the peer does not
    /// list, whose row the peer had applied (its modseq is at or below
    /// `applied`, the peer's mark of this node), has left the peer since
    /// (an expunge whose tombstone is gone): it is expunged here too.
    /// Messages changed here after that mark are new to the peer and keep.
    fn expunged_behind_history(&mut self, tx: &mut Tx<'_>, applied: ModSeq) -> Result<()> {
        if !self.remote.complete || applied == 0 {
            return Ok(());
        }
        let listed: HashSet<MessageGuid> = self.remote.messages.iter().map(|m| m.guid).collect();
        let gone: Vec<(MailboxGuid, Uid, MessageGuid)> = {
            // Mailbox by mailbox, as in `replica_delta`.
            let mut st = tx.tx.prepare(
                "SELECT mb.guid, m.uid, m.guid FROM mailbox mb CROSS JOIN message m ON mb.id = m.mailbox_id
                 WHERE m.modseq <= ?1",
            )?;
            let rows = st.query_map([applied as i64], |r| {
                Ok((
                    MailboxGuid(index::guid16(r.get(0)?)),
                    r.get::<_, Uid>(1)?,
                    MessageGuid(index::guid16(r.get(2)?)),
                ))
            })?;
            rows.filter(|r| r.as_ref().map_or(true, |(_, _, g)| !listed.contains(g)))
                .collect::<rusqlite::Result<_>>()?
        };
        let stamp = tx.stamp()?;
        // The peer may take such a message back in this very session (its
        // tombstone was forgotten past the bound, account/history.rs): this
        // expunge must travel to it, not be skipped as its change echoed.
        self.report.divergent |= !gone.is_empty();
        for (mailbox, uid, guid) in gone {
            let t = TombstoneState {
                mailbox,
                uid,
                guid,
                stamp,
            };
            self.expunge(tx, &t, stamp)?;
        }
        Ok(())
    }

    fn expunge(&mut self, tx: &mut Tx<'_>, t: &TombstoneState, stamp: Stamp) -> Result<()> {
        let Some(l) = row_by_guid(&tx.tx, &t.guid)? else {
            return self.remember_expunge(tx, t, stamp);
        };
        // Put somewhere after the expunge (a move the expunger never saw):
        // kept (DESIGN.md: when in doubt, keep). The expunger deleted it,
        // and gets it back only if it hears of it again: the row is
        // touched so that it travels in this node's next delta, and the
        // apply is divergent so that the peer does not skip that change.
        if l.placed > stamp {
            if let Some(mb) = index::mailbox_by_id(&tx.tx, l.mailbox_id)? {
                tx.set_flags_row(
                    &mb,
                    l.meta.uid,
                    l.meta.flags,
                    &l.meta.keywords,
                    &l.clock,
                    &l.meta.file,
                )?;
                self.report.divergent = true;
            }
            return Ok(());
        }
        let Some(mb) = index::mailbox_by_id(&tx.tx, l.mailbox_id)? else {
            return Ok(());
        };
        tx.expunge_stamped(&mb, l.meta.uid, l.meta.guid, stamp)?;
        let path = self.folder(&mb)?.join(&l.meta.file);
        self.ops.touched(&path);
        self.ops.doomed.push(path);
        self.ops.unlinked.push(l.meta.content_id);
        self.report.messages_expunged += 1;
        Ok(())
    }

    /// The peer expunged a message this node never held: keep its
    /// tombstone all the same, so that this node passes the expunge on to
    /// its other peers (else a third node that still has the message would
    /// bring it back here and, through here, to the node that expunged it)
    /// and never gives that UID to another message.
    fn remember_expunge(
        &mut self,
        tx: &mut Tx<'_>,
        t: &TombstoneState,
        stamp: Stamp,
    ) -> Result<()> {
        let Some(mb) = index::mailbox_by_guid(&tx.tx, &t.mailbox)? else {
            return Ok(());
        };
        // UID 0: an expunge in a mailbox that merged into this one, whose
        // UIDs mean nothing here.
        if t.uid == 0
            || self.renum.resets.contains_key(&mb.guid)
            || !Self::uid_free(tx, &mb, t.uid, &t.guid)?
        {
            return Ok(());
        }
        if expunged_at(&tx.tx, &t.guid)?.is_some_and(|e| e >= stamp) {
            return Ok(());
        }
        tx.expunge_stamped(&mb, t.uid, t.guid, stamp)?;
        tx.tx.execute(
            "UPDATE mailbox SET uidnext = max(uidnext, ?2 + 1) WHERE id = ?1",
            params![mb.id, t.uid],
        )?;
        Ok(())
    }

    fn merge_existing(
        &mut self,
        tx: &mut Tx<'_>,
        r: &MessageState,
        target_uid: Uid,
        l: LocalRow,
    ) -> Result<()> {
        let Some(local_mb) = index::mailbox_by_id(&tx.tx, l.mailbox_id)? else {
            return Ok(());
        };
        let local_clock = FlagClock::parse(&l.clock);
        let remote_clock = FlagClock::parse(&r.clock);
        let (flags, keywords, clock) = merge_flags(
            FlagsSide {
                flags: l.meta.flags,
                keywords: &l.meta.keywords,
                clock: &local_clock,
            },
            FlagsSide {
                flags: Flags::from_bits(r.flags),
                keywords: &r.keywords,
                clock: &remote_clock,
            },
        );
        let clock = clock.to_string();
        let remote_wins = (r.placed, r.mailbox, r.uid) > (l.placed, local_mb.guid, l.meta.uid);
        let (dest_guid, dest_uid, placed) = if remote_wins {
            (r.mailbox, target_uid, r.placed)
        } else {
            let uid = self
                .renum
                .uids
                .get(&(local_mb.guid, l.meta.guid))
                .copied()
                .unwrap_or(l.meta.uid);
            (local_mb.guid, uid, l.placed)
        };
        if dest_guid == local_mb.guid && dest_uid == l.meta.uid {
            if flags != l.meta.flags || keywords != l.meta.keywords || clock != l.clock {
                let mut file = l.meta.file.clone();
                if flags != l.meta.flags {
                    let new_rel = rel_name(base_of(&file), flags)?;
                    let folder = self.folder(&local_mb)?;
                    let (src, dst) = (folder.join(&file), folder.join(&new_rel));
                    if src != dst {
                        self.ops.announce(self.account, own_rename(&src, &dst));
                        fs::rename(&src, &dst)
                            .ctx(|| format!("rename {} to {}", src.display(), dst.display()))?;
                        self.ops.touched(&src);
                        self.ops.touched(&dst);
                        self.ops.renamed.push((src, dst));
                    }
                    file = new_rel;
                }
                tx.set_flags_row(&local_mb, l.meta.uid, flags, &keywords, &clock, &file)?;
                self.report.flags_changed += 1;
            }
            return Ok(());
        }
        let Some(dest) = self.target_mailbox(tx, &dest_guid)? else {
            self.report.deferred += 1;
            self.report.divergent = true;
            return Ok(());
        };
        if self.relocate(tx, &l, &dest, dest_uid, placed, flags, &keywords, &clock)? {
            if dest.id == local_mb.id {
                self.report.messages_renumbered += 1;
            } else {
                self.report.messages_moved += 1;
            }
        }
        Ok(())
    }

    /// Move a local message to `uid` in `dest` (another mailbox, or a new
    /// UID in its own), retiring its old UID. False if the UID is taken.
    #[allow(clippy::too_many_arguments)]
    fn relocate(
        &mut self,
        tx: &mut Tx<'_>,
        l: &LocalRow,
        dest: &MailboxInfo,
        uid: Uid,
        placed: Stamp,
        flags: Flags,
        keywords: &[String],
        clock: &str,
    ) -> Result<bool> {
        let wanted = uid;
        let uid = self.free_uid_or_fresh(tx, dest, wanted, &l.meta.guid)?;
        let Some(src_mb) = index::mailbox_by_id(&tx.tx, l.mailbox_id)? else {
            return Ok(false);
        };
        let base = base_of(&l.meta.file).to_string();
        let new_rel = rel_name(&base, flags)?;
        let src = self.folder(&src_mb)?.join(&l.meta.file);
        let dst = self.folder(dest)?.join(&new_rel);
        if src != dst {
            self.ops.announce(self.account, own_rename(&src, &dst));
            maildir::rename_noreplace(&src, &dst)
                .ctx(|| format!("move {} to {}", src.display(), dst.display()))?;
            self.ops.touched(&src);
            self.ops.touched(&dst);
            self.ops.renamed.push((src, dst));
        }
        let stamp = tx.stamp()?;
        tx.expunge_stamped(&src_mb, l.meta.uid, l.meta.guid, stamp)?;
        let parsed_base = FileName::parse(&base)
            .map(|p| p.base)
            .ok_or_else(|| Error::InvalidData(format!("bad file name {base}")))?;
        let row = NewMessageRow {
            guid: l.meta.guid,
            content_id: l.meta.content_id,
            flags,
            keywords,
            internal_date: l.meta.internal_date,
            size: l.meta.size,
            base: &parsed_base,
            file: &new_rel,
            placed: Some(placed),
            clock,
        };
        let (_, modseq) = tx.insert_message_at(dest, uid, &row)?;
        if uid == wanted {
            self.peer_has(tx, modseq)?;
        }
        Ok(true)
    }

    fn add(
        &mut self,
        tx: &mut Tx<'_>,
        r: &MessageState,
        uid: Uid,
        content: &HashMap<[u8; 32], StagedBlob>,
    ) -> Result<()> {
        if expunged_at(&tx.tx, &r.guid)?.is_some_and(|e| e >= r.placed) {
            // Expunged here after the peer put it where it is.
            return Ok(());
        }
        let Some(mb) = self.target_mailbox(tx, &r.mailbox)? else {
            self.report.deferred += 1;
            self.report.divergent = true;
            return Ok(());
        };
        // The size is the content's, never the peer's word for it.
        let id = ContentId(r.content);
        let size = match content.get(&r.content) {
            Some(blob) => Some(blob.len()),
            None => self.verified_local(&id)?,
        };
        let Some(size) = size else {
            return self.content_missing(r);
        };
        let wanted = uid;
        let uid = self.free_uid_or_fresh(tx, &mb, wanted, &r.guid)?;
        let flags = Flags::from_bits(r.flags);
        let now = self.account.env.now_secs().max(0) as u64;
        let base = FileName::new_delivery(now, r.guid, &self.account.hostname, size);
        let rel = rel_name(&base, flags)?;
        let path = self.folder(&mb)?.join(&rel);
        self.ops
            .announce(self.account, [(path.clone(), OwnEvent::Appear)]);
        match content.get(&r.content) {
            Some(blob) => blob.link_to(&path)?,
            None => match cove_dedup::link_existing(&self.account.blobs, &id, &path) {
                Ok(()) => {}
                // Collected since it was checked.
                Err(cove_dedup::Error::NotFound(_)) => return self.content_missing(r),
                Err(e) => return Err(e.into()),
            },
        }
        self.ops.touched(&path);
        self.ops.linked.push(path);
        let parsed_base = FileName::parse(&base)
            .map(|p| p.base)
            .ok_or_else(|| Error::InvalidData(format!("bad file name {base}")))?;
        let keywords = crate::keywords::normalized(&r.keywords)?;
        let row = NewMessageRow {
            guid: r.guid,
            content_id: id,
            flags,
            keywords: &keywords,
            internal_date: r.internal_date,
            size,
            base: &parsed_base,
            file: &rel,
            placed: Some(r.placed),
            clock: &r.clock,
        };
        let (_, modseq) = tx.insert_message_at(&mb, uid, &row)?;
        if uid == wanted {
            self.peer_has(tx, modseq)?;
        }
        self.report.messages_added += 1;
        Ok(())
    }

    /// A message whose content this node does not have (yet): left for the
    /// next session.
    fn content_missing(&mut self, r: &MessageState) -> Result<()> {
        tracing::warn!(user = %self.account.email, guid = %r.guid, "replication: content not available yet; retried at the next sync");
        self.report.deferred += 1;
        self.report.divergent = true;
        Ok(())
    }

    /// The length of content this node already stores, after checking its
    /// bytes against its hash (DESIGN.md invariant 5: a corrupt blob is not
    /// linked again, wherever the message came from). A corrupt blob is
    /// quarantined, so that the next session fetches the content from the
    /// peer. `None`: not stored here (or corrupt).
    fn verified_local(&mut self, id: &ContentId) -> Result<Option<u64>> {
        if let Some(known) = self.verified.get(&id.0) {
            return Ok(*known);
        }
        let blobs = &self.account.blobs;
        let known = match blobs.verify(id) {
            Ok(()) => match fs::metadata(blobs.path_of(id)) {
                Ok(m) => Some(m.len()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(e).ctx(|| format!("stat blob {id}")),
            },
            Err(cove_dedup::Error::NotFound(_)) => None,
            Err(cove_dedup::Error::Corrupt { actual, .. }) => {
                tracing::error!(user = %self.account.email, blob = %id, actual = %actual,
                    "replication: the stored copy of content a peer's message needs does not match its hash; not linked, fetched from the peer at the next sync");
                blobs.quarantine(id, &actual)?;
                None
            }
            Err(e) => return Err(e.into()),
        };
        self.verified.insert(id.0, known);
        Ok(known)
    }

    /// Mailboxes the peer deleted: deleted here too once empty (their
    /// messages the peer knew were expunged by its tombstones; mail it
    /// never saw keeps the mailbox).
    fn deleted_mailboxes(&mut self, tx: &mut Tx<'_>) -> Result<()> {
        for gone in &self.remote.gone {
            let Some(mb) = index::mailbox_by_guid(&tx.tx, &gone.guid)? else {
                continue;
            };
            if mb.name.eq_ignore_ascii_case("INBOX") {
                continue;
            }
            let stamp = name_stamp(tx, mb.id)?;
            if stamp >= gone.stamp || !index::messages(&tx.tx, mb.id)?.is_empty() {
                continue;
            }
            let folder = self.folder(&mb)?;
            if self.ops.parking.is_none() {
                self.ops.parking = Some(scratch_busy(&self.account.home, DELETED_DIR)?);
            }
            let parking = self.account.home.join(DELETED_DIR);
            fs::create_dir_all(&parking).ctx(|| format!("create {}", parking.display()))?;
            let parked = parking.join(mb.guid.to_hex());
            let _ = fs::remove_dir_all(&parked);
            match maildir::rename_noreplace(&folder, &parked) {
                Ok(()) => self.ops.parked.push((folder, parked)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).ctx(|| format!("move {} aside", folder.display())),
            }
            self.ops.dirs.insert(parking);
            tx.delete_mailbox(&mb)?;
            tx.tx.execute(
                "UPDATE mailbox_gone SET stamp = ?2 WHERE guid = ?1",
                params![&gone.guid.0[..], gone.stamp as i64],
            )?;
            self.report.mailboxes_deleted += 1;
        }
        Ok(())
    }

    /// A mailbox that took the peer's name with a suffix, because another
    /// mailbox held that name here, takes the name itself once it is free
    /// (the holder deleted or renamed, perhaps by this very delta). Without
    /// this, the two nodes would keep two names under one stamp forever.
    fn settle_names(&mut self, tx: &mut Tx<'_>) -> Result<()> {
        for r in &self.remote.mailboxes {
            let Some(l) = index::mailbox_by_guid(&tx.tx, &r.guid)? else {
                continue;
            };
            if l.name != format!("{}-{}", r.name, &r.guid.to_hex()[..8]) {
                continue;
            }
            let stamp = name_stamp(tx, l.id)?;
            if stamp != r.name_stamp {
                continue;
            }
            let name = self.free_name(tx, &r.name, r.guid, r.name_stamp)?;
            if name == r.name {
                self.rename_folder(tx, &l, &name, r.name_stamp)?;
            }
        }
        Ok(())
    }

    fn subscriptions(&mut self, tx: &mut Tx<'_>) -> Result<()> {
        for s in &self.remote.subscriptions {
            let local: Option<(bool, i64)> = tx
                .tx
                .query_row(
                    "SELECT subscribed, stamp FROM subscription_stamp WHERE name = ?1",
                    [&s.name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let local_stamp = local.map_or(0, |(_, st)| st as u64);
            if s.stamp <= local_stamp && local.is_some() {
                continue;
            }
            if local.is_none() && s.stamp == 0 && !s.subscribed {
                continue;
            }
            if tx.set_subscription(&s.name, s.subscribed)? {
                self.report.subscriptions_changed += 1;
            }
            tx.tx.execute(
                "INSERT INTO subscription_stamp(name, subscribed, stamp) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET subscribed = excluded.subscribed, stamp = max(stamp, excluded.stamp)",
                params![s.name, s.subscribed, s.stamp as i64],
            )?;
        }
        Ok(())
    }
}

/// Record that mailbox `guid` merged into `into` (and that what merged
/// into `guid` before is in `into` now). A merge already known keeps its
/// target.
fn remember_merge(
    tx: &rusqlite::Transaction<'_>,
    guid: MailboxGuid,
    into: MailboxGuid,
) -> Result<()> {
    if guid == into {
        return Ok(());
    }
    tx.execute(
        "INSERT OR IGNORE INTO mailbox_merged(guid, into_guid) VALUES (?1, ?2)",
        params![&guid.0[..], &into.0[..]],
    )?;
    tx.execute(
        "UPDATE mailbox_merged SET into_guid = ?2 WHERE into_guid = ?1",
        params![&guid.0[..], &into.0[..]],
    )?;
    Ok(())
}
