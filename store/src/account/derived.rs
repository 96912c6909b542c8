//! A cache of data derived from a message's content (a protocol's parsed
//! views of it, such as IMAP's ENVELOPE and BODYSTRUCTURE), keyed by content
//! id: content never changes, so an entry never goes stale, and copies of
//! the same content (COPY, dedup) share it. The store does not interpret the
//! bytes; every kind is a variant of [`DerivedKind`], whose number is the one
//! kept in the index.
//!
//! Entries are not flushed to disk with the group commit: a lost entry is
//! computed again. Entries of content no message holds any more are
//! removed by the background indexer (indexer.rs) after expunges.

use std::collections::{HashMap, HashSet};

use cove_dedup::ContentId;
use rusqlite::params;

use super::Account;
use crate::Result;

/// What a derived-data entry holds. The numbers are stored in the index, so
/// they are owned here, in one enum, rather than by each protocol: two kinds
/// with one number would read each other's bytes, and `repr(u8)` makes the
/// compiler refuse that. When a kind's rendering changes, the kind gets a
/// new number (never one used before); entries under the old number are no
/// longer read and go with their content.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DerivedKind {
    // Used before, never again: 11-14 (rendering 1 of the four IMAP kinds
    // below), 21, 23 (a rendering 2 never shipped: 22 is POP3's), 35 (the
    // sort keys' rendering 1: raw fields).
    /// IMAP ENVELOPE (RFC 3501 §7.4.2), rendering 3: MISSING_DOMAIN hosts,
    /// repeated To/Cc kept.
    ImapEnvelope = 31,
    /// IMAP BODYSTRUCTURE (with extension data), rendering 3: US-ASCII for
    /// every text part without a charset, RFC 2231 `boundary*`.
    ImapBodyStructure = 32,
    /// IMAP BODY (BODYSTRUCTURE without extension data), rendering 3.
    ImapBody = 33,
    /// The decoded header text IMAP SEARCH matches header keys against,
    /// rendering 4: group names in address fields.
    ImapHeaderText = 34,
    /// The header-derived SORT and THREAD keys (RFC 5256: base subject,
    /// sent date, first From/To/Cc address, Message-ID, parent ids),
    /// rendering 2: ready to compare (server/src/imap/sort/prepared.rs
    /// `encode`).
    ImapSortKeys = 36,
    /// POP3: the message's size with CRLF line ends (8 bytes, big endian).
    Pop3CrlfSize = 22,
}

impl DerivedKind {
    /// The number the index keeps.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// Content ids per lookup statement (SQLite allows 32,766 parameters).
const LOOKUP_BATCH: usize = 500;
/// Asked ids per page of the index above which the derived table is read
/// in one pass instead of looked up ([`Account::derived`]): a pass costs
/// about 4 times more per page than a lookup per id, so it never loses.
const SCAN_FACTOR: i64 = 4;

impl Account {
    /// Look up derived data: one answer per (content, kind) asked.
    ///
    /// Asked in statements of up to [`LOOKUP_BATCH`] ids of one kind (a
    /// FETCH of 100,000 ENVELOPEs is 400 statements, not 100,000) — or,
    /// when more ids are asked than [`SCAN_FACTOR`] times the pages of the
    /// whole index, by reading the table once in order: content ids are
    /// random, so each lookup reads a leaf page of its own (copied into
    /// the small page cache by `pread`, the index being read without a
    /// memory map: index.rs), while one pass reads each page once. For
    /// 100,000 ENVELOPEs of 350 bytes: 141 ms of CPU for the pass, 360 ms
    /// for the lookups without a memory map, 230 ms with one (the SQLite
    /// part alone, release build, medians of 5).
    pub fn derived(&self, keys: &[(ContentId, DerivedKind)]) -> Result<Vec<Option<Vec<u8>>>> {
        let g = self.conn()?;
        let mut out: Vec<Option<Vec<u8>>> = vec![None; keys.len()];
        let mut kinds: Vec<DerivedKind> = keys.iter().map(|(_, k)| *k).collect();
        kinds.sort_unstable_by_key(|k| k.code());
        kinds.dedup();
        let pages: i64 = g.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        for kind in kinds {
            let wanted: Vec<usize> = (0..keys.len()).filter(|i| keys[*i].1 == kind).collect();
            if wanted.len() as i64 >= pages.saturating_mul(SCAN_FACTOR) {
                let mut index: HashMap<&[u8], Vec<usize>> = HashMap::with_capacity(wanted.len());
                for i in &wanted {
                    index.entry(&keys[*i].0.0[..]).or_default().push(*i);
                }
                let mut st = g
                    .conn
                    .prepare_cached("SELECT content_id, data FROM derived WHERE kind = ?1")?;
                let mut rows = st.query([kind.code()])?;
                while let Some(row) = rows.next()? {
                    let Ok(id) = row.get_ref(0)?.as_blob() else {
                        continue;
                    };
                    if let Some((last, rest)) = index.get(id).and_then(|s| s.split_last()) {
                        let data: Vec<u8> = row.get(1)?;
                        for i in rest {
                            out[*i] = Some(data.clone());
                        }
                        out[*last] = Some(data);
                    }
                }
                continue;
            }
            for chunk in wanted.chunks(LOOKUP_BATCH) {
                let sql = format!(
                    "SELECT content_id, data FROM derived WHERE kind = ?1 AND content_id IN ({})",
                    vec!["?"; chunk.len()].join(",")
                );
                let mut st = g.conn.prepare_cached(&sql)?;
                let mut params: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(chunk.len() + 1);
                let code = kind.code();
                params.push(&code);
                let ids: Vec<&[u8]> = chunk.iter().map(|i| &keys[*i].0.0[..]).collect();
                for id in &ids {
                    params.push(id);
                }
                let mut found: HashMap<Vec<u8>, Vec<u8>> = HashMap::with_capacity(chunk.len());
                let rows = st.query_map(&params[..], |r| {
                    Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
                })?;
                for row in rows {
                    let (id, data) = row?;
                    found.insert(id, data);
                }
                for i in chunk {
                    out[*i] = found.get(&keys[*i].0.0[..]).cloned();
                }
            }
        }
        Ok(out)
    }

    /// Remember derived data (one transaction for all entries).
    pub fn store_derived(&self, entries: &[(ContentId, DerivedKind, Vec<u8>)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut g = self.conn()?;
        let tx = g.conn.transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT OR REPLACE INTO derived(content_id, kind, data) VALUES (?1, ?2, ?3)",
            )?;
            for (id, kind, data) in entries {
                st.execute(params![&id.0[..], kind.code(), data])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Those of `contents` that some message of the account holds (one
    /// pass over the message rows: there is no index by content).
    pub fn held_among(&self, contents: &HashSet<ContentId>) -> Result<HashSet<ContentId>> {
        let g = self.conn()?;
        held_in(&g.conn, contents)
    }

    /// Remove the cached views of those of `contents` that no message
    /// holds any more; returns how many contents went. Decided and done in
    /// one transaction of the index, so a message committed meanwhile keeps
    /// its views.
    pub fn forget_derived(&self, contents: &HashSet<ContentId>) -> Result<usize> {
        if contents.is_empty() {
            return Ok(0);
        }
        let mut g = self.conn()?;
        let tx = g.conn.transaction()?;
        let held = held_in(&tx, contents)?;
        let mut gone = 0;
        {
            let mut st = tx.prepare_cached("DELETE FROM derived WHERE content_id = ?1")?;
            for id in contents.difference(&held) {
                if st.execute([&id.0[..]])? > 0 {
                    gone += 1;
                }
            }
        }
        tx.commit()?;
        Ok(gone)
    }

    /// Remove every cached view whose content no message holds (after
    /// more expunges than the indexer keeps track of one by one); SQLite
    /// sorts the held contents in its temporary store, not in memory here.
    pub fn sweep_derived(&self) -> Result<usize> {
        let g = self.conn()?;
        Ok(g.conn.execute(
            "DELETE FROM derived WHERE content_id NOT IN (SELECT content_id FROM message)",
            [],
        )?)
    }
}

fn held_in(
    conn: &rusqlite::Connection,
    contents: &HashSet<ContentId>,
) -> Result<HashSet<ContentId>> {
    let mut held = HashSet::new();
    let mut st = conn.prepare_cached("SELECT content_id FROM message")?;
    let mut rows = st.query([])?;
    while let Some(row) = rows.next()? {
        let Ok(blob) = row.get_ref(0)?.as_blob() else {
            continue;
        };
        if let Ok(id) = <[u8; 32]>::try_from(blob) {
            let id = ContentId(id);
            if contents.contains(&id) {
                held.insert(id);
            }
        }
    }
    Ok(held)
}
