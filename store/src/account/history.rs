//! Bounded replication history: the change log and expunge tombstones are
//! pruned once every peer has applied them.
//!
//! # The problem
//! Every change adds a row to `change`, every expunge one to `tombstone`;
//! nothing took them away, so a user's index grew with every delivery and
//! every expunge for as long as the account lived (issue 15).
//!
//! # What is kept, and why
//! - Each peer tells this node, at the start of every session, the modseq
//!   of this node's changes it has applied (its mark of this node). It is
//!   kept per peer in `peer_applied`.
//! - The *history floor* is the lowest of those marks (in this index's
//!   epoch), but never more than [`History::keep_changes`] changes behind
//!   the newest: a peer that is away cannot make the log grow without
//!   bound. Change-log rows at or below the floor are deleted; so are
//!   tombstones at or below it that are older than
//!   [`History::keep_expunges_ms`] (the time margin covers a peer that
//!   applies a delta taken before the floor moved), and `expunged_guid`
//!   rows older than that.
//! - Expunges are the exception to the cap (next section).
//! - What the change log still answers (which placements a peer already
//!   holds, which mailboxes were created apart) is only ever asked above a
//!   peer's mark, which is at or above the floor for every peer that kept
//!   up.
//!
//! # A peer that was away longer than what is kept
//! Its mark is below the floor: what it missed is no longer all in the log
//! (an expunge's tombstone may be gone). It gets a *complete* delta: every
//! message this node holds, flagged `complete`. A complete delta lets the
//! receiver tell an expunge from a message it never sent: a message it
//! holds, absent from the delta, whose row (modseq) is at or below the
//! sender's mark of the receiver was applied by the sender and has left
//! it since, so it is expunged on the receiver too; one changed after that
//! mark is new to the sender and travels to it as usual (when in doubt,
//! keep). So a peer that returns after any absence converges, and the
//! history stays bounded.
//!
//! # Expunges a peer has not applied
//! The cap must not take an expunge that a peer has not applied: if that
//! peer took the message from this node, its next delta lists it again
//! (a flag change is enough), and this node, with no tombstone left, could
//! not tell it from new mail and would take it back — a message the user
//! deleted, returned (found by the property test,
//! `an_expunge_pruned_before_the_peer_applied_it_stays_an_expunge`). So a
//! tombstone above the lowest `peer_applied` whose GUID this node no longer
//! holds (an expunge; a move's tombstone is not needed, the message itself
//! travels) stays past the cap, and travels in the complete delta that
//! peer gets; the peer applies it as any expunge. They are bounded too: the
//! newest [`History::keep_changes`] of them are kept, older ones are
//! forgotten with a warning (a peer that many expunges behind, or one
//! removed without telling anyone). Past that bound the complete delta
//! still expunges on the peer every such message it has not changed since
//! this node's mark of it; one it changed since (a flag) comes back on both
//! nodes (when in doubt, keep).
//!
//! # Alternatives rejected
//! - Keeping tombstones for a fixed time only: a peer away for longer
//!   would bring expunged mail back, silently.
//! - Refusing to prune while a peer is away: a dead peer that nobody
//!   removed from the configuration would make every index grow forever.

use rusqlite::{OptionalExtension, params};

use super::Account;
use crate::Result;
use crate::ids::ModSeq;
use crate::index;
use crate::replica::Mark;

/// How much replication history each user's index keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct History {
    /// Change-log rows kept behind the newest change even if a peer has
    /// not applied them; a peer further behind gets a complete delta.
    /// Also how many expunges a peer has not applied are kept past that
    /// (the module's essay).
    pub keep_changes: u64,
    /// How long an expunge's tombstone is kept after every peer applied
    /// it, in milliseconds.
    pub keep_expunges_ms: u64,
}

impl Default for History {
    fn default() -> Self {
        History {
            keep_changes: 100_000,
            keep_expunges_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// What one [`Account::prune_history`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// The history floor after it.
    pub floor: ModSeq,
    pub changes: u64,
    pub tombstones: u64,
    pub expunged_guids: u64,
}

/// The modseq at or below which the change log was pruned (0: never).
pub(crate) fn history_floor(conn: &rusqlite::Connection) -> Result<ModSeq> {
    let v: Option<i64> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'history_floor'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.map_or(0, |v| v.max(0) as u64))
}

/// The two per-peer marks a user's index keeps.
#[derive(Clone, Copy)]
pub(super) enum MarkTable {
    /// The peer's modseq applied here.
    PeerMark,
    /// This node's modseq applied by the peer.
    PeerApplied,
}

pub(super) fn store_mark(
    conn: &rusqlite::Connection,
    table: MarkTable,
    peer: &str,
    mark: Mark,
) -> Result<()> {
    let sql = match table {
        MarkTable::PeerMark => {
            "INSERT INTO peer_mark(peer, modseq, epoch) VALUES (?1, ?2, ?3)
             ON CONFLICT(peer) DO UPDATE SET modseq = excluded.modseq, epoch = excluded.epoch"
        }
        MarkTable::PeerApplied => {
            "INSERT INTO peer_applied(peer, modseq, epoch) VALUES (?1, ?2, ?3)
             ON CONFLICT(peer) DO UPDATE SET modseq = excluded.modseq, epoch = excluded.epoch"
        }
    };
    conn.execute(sql, params![peer, mark.modseq as i64, mark.epoch as i64])?;
    Ok(())
}

impl Account {
    /// Record `peer`'s mark of this node: the modseq of this node's
    /// changes it has applied (it says so at the start of each session).
    pub fn set_peer_applied(&self, peer: &str, mark: Mark) -> Result<()> {
        store_mark(&self.conn()?.conn, MarkTable::PeerApplied, peer, mark)
    }

    /// Prune the change log, tombstones and `expunged_guid` up to what
    /// every peer has applied, within `keep` (the module's essay).
    pub fn prune_history(&self, keep: &History, now_ms: u64) -> Result<Pruned> {
        let mut g = self.conn()?;
        prune(&mut g.conn, &self.email, keep, now_ms)
    }

    /// This user's history rows: what [`prune_history`](Self::prune_history)
    /// bounds.
    pub fn history_rows(&self) -> Result<HistoryRows> {
        let g = self.conn()?;
        let count = |table: &str| -> Result<u64> {
            let n: i64 = g
                .conn
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        };
        Ok(HistoryRows {
            changes: count("change")?,
            tombstones: count("tombstone")?,
            expunged_guids: count("expunged_guid")?,
        })
    }

    /// Called with every batch of committed changes: each time the modseq
    /// passes a multiple of [`PRUNE_EVERY`] (or of `keep_changes`, if
    /// smaller), prune, so that the history stays bounded whether or not a
    /// peer is reachable. Skipped (until the next multiple) when the index
    /// is busy; a failure is logged.
    pub(crate) fn prune_history_if_due(&self, changes: &[crate::changes::Change]) {
        let (Some(first), Some(last)) = (changes.first(), changes.last()) else {
            return;
        };
        let keep = self.history.get().copied().unwrap_or_default();
        let every = keep.keep_changes.clamp(1, PRUNE_EVERY);
        if first.modseq.saturating_sub(1) / every == last.modseq / every {
            return;
        }
        let Ok(mut g) = self.index.try_lock() else {
            return;
        };
        let Some(open) = g.open.as_mut() else {
            return;
        };
        if let Err(e) = prune(&mut open.conn, &self.email, &keep, self.env.now_ms()) {
            tracing::warn!(user = %self.email, error = %e, "could not prune the replication history");
        }
    }
}

/// Changes between two prunes outside sessions.
pub const PRUNE_EVERY: u64 = 1024;

/// Counts of a user's history rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryRows {
    pub changes: u64,
    pub tombstones: u64,
    pub expunged_guids: u64,
}

fn prune(
    conn: &mut rusqlite::Connection,
    user: &str,
    keep: &History,
    now_ms: u64,
) -> Result<Pruned> {
    let tx = conn.transaction()?;
    let current = index::current_modseq(&tx)?;
    let epoch = index::epoch(&tx)?;
    // A peer whose mark is of another epoch (a first session's, or one
    // from before this index was rebuilt) has applied nothing of this one.
    let applied: Option<i64> = tx.query_row(
        "SELECT min(CASE WHEN epoch = ?1 THEN modseq ELSE 0 END) FROM peer_applied",
        [epoch as i64],
        |r| r.get(0),
    )?;
    let capped = current.saturating_sub(keep.keep_changes);
    let floor = applied
        .map_or(capped, |a| (a.max(0) as u64).min(current).max(capped))
        .max(history_floor(&tx)?);
    let cutoff = (now_ms
        .saturating_sub(keep.keep_expunges_ms)
        .min(u64::MAX >> 17))
        << 16;
    // A `flagrun` row (changes.rs) stands at its run's first modseq and
    // holds the whole run: the last row at or below the floor may hold
    // changes above it, which a reader from the floor still needs
    // (`index::changes_since` reads that row for them), so it stays.
    let changes = tx.execute(
        "DELETE FROM change WHERE modseq <= ?1
           AND NOT (kind = 'flagrun' AND modseq = (SELECT max(modseq) FROM change WHERE modseq <= ?1))",
        [floor as i64],
    )?;
    // Expunges some peer has not applied stay past the cap (the module's
    // essay, "Expunges a peer has not applied"), the newest `keep_changes`
    // of them: those further back go with the others.
    let applied_by_all = applied.map_or(floor, |a| (a.max(0) as u64).min(floor));
    let unapplied_kept_above: Option<i64> = tx
        .query_row(
            "SELECT modseq FROM tombstone
             WHERE modseq > ?1 AND modseq <= ?2 AND guid NOT IN (SELECT guid FROM message)
             ORDER BY modseq DESC LIMIT 1 OFFSET ?3",
            params![
                applied_by_all as i64,
                floor as i64,
                keep.keep_changes.min(i64::MAX as u64) as i64
            ],
            |r| r.get(0),
        )
        .optional()?;
    let overflow = unapplied_kept_above.map_or(0, |m| m.max(0) as u64);
    let tombstones = tx.execute(
        "DELETE FROM tombstone WHERE modseq <= ?1 AND stamp < ?2
           AND (modseq <= ?3 OR guid IN (SELECT guid FROM message))",
        params![floor as i64, cutoff as i64, applied_by_all as i64],
    )?;
    let forgotten = tx.execute(
        "DELETE FROM tombstone WHERE modseq <= ?1 AND stamp < ?2",
        params![overflow as i64, cutoff as i64],
    )?;
    if forgotten > 0 {
        tracing::warn!(user = %user, forgotten, kept = keep.keep_changes, applied = applied_by_all,
            "replication: a peer is more than keep_changes expunges behind; the oldest expunges it has not applied are forgotten (one of those messages it changed since may come back)");
    }
    let expunged_guids = tx.execute(
        "DELETE FROM expunged_guid WHERE stamp < ?1",
        [cutoff as i64],
    )?;
    tx.execute(
        "INSERT INTO meta(key, value) VALUES('history_floor', ?1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [floor as i64],
    )?;
    tx.commit()?;
    Ok(Pruned {
        floor,
        changes: changes as u64,
        tombstones: (tombstones + forgotten) as u64,
        expunged_guids: expunged_guids as u64,
    })
}
