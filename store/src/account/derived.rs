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
use rusqlite::{OptionalExtension, params};

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
    /// The Subject, From, To, Cc and Bcc text and sent day IMAP SEARCH
    /// matches those keys against, rendering 1: a short extract of
    /// `ImapHeaderText` (server/src/imap/search.rs `SearchFields`), so a
    /// search of them reads a few short rows instead of whole headers.
    ImapSearchFields = 37,
    /// POP3: the message's size with CRLF line ends (8 bytes, big endian).
    Pop3CrlfSize = 22,
}

impl DerivedKind {
    /// Every kind read and written today (a kind added above goes here
    /// too: [`DerivedKind::position`]'s match will not compile without it).
    pub const ALL: [DerivedKind; 7] = [
        DerivedKind::ImapEnvelope,
        DerivedKind::ImapBodyStructure,
        DerivedKind::ImapBody,
        DerivedKind::ImapHeaderText,
        DerivedKind::ImapSortKeys,
        DerivedKind::Pop3CrlfSize,
        DerivedKind::ImapSearchFields,
    ];

    /// The number the index keeps.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Where the kind stands in [`DerivedKind::ALL`].
    const fn position(self) -> usize {
        match self {
            DerivedKind::ImapEnvelope => 0,
            DerivedKind::ImapBodyStructure => 1,
            DerivedKind::ImapBody => 2,
            DerivedKind::ImapHeaderText => 3,
            DerivedKind::ImapSortKeys => 4,
            DerivedKind::Pop3CrlfSize => 5,
            DerivedKind::ImapSearchFields => 6,
        }
    }
}

// Every kind is in ALL, at its place (checked when compiling).
const _: () = {
    let mut i = 0;
    while i < DerivedKind::ALL.len() {
        assert!(DerivedKind::ALL[i].position() == i);
        i += 1;
    }
};

/// Hashing for maps keyed by content id: a content id is a blake3 hash,
/// already uniform (and not chosen by a client: finding two with equal
/// first bytes is the work of breaking blake3), so its first eight bytes
/// are the hash; SipHash over all 32 and a slice compare were a sixth of
/// the first SEARCH SUBJECT of 528,000 messages (perf).
#[derive(Debug, Clone, Copy, Default)]
pub struct ContentIdHash;

/// [`ContentIdHash`]'s hasher.
#[derive(Debug, Default)]
pub struct ContentIdHasher(u64);

impl std::hash::BuildHasher for ContentIdHash {
    type Hasher = ContentIdHasher;
    fn build_hasher(&self) -> ContentIdHasher {
        ContentIdHasher(0)
    }
}

impl std::hash::Hasher for ContentIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // The id's bytes (after a length prefix, for a slice or array):
        // its first eight, or for short input all of it folded in.
        match bytes.first_chunk::<8>() {
            Some(head) => self.0 ^= u64::from_le_bytes(*head),
            None => {
                for b in bytes {
                    self.0 = self.0.rotate_left(8) ^ u64::from(*b);
                }
            }
        }
    }
}

/// Move the entries of the tables older coves kept (`derived`, keyed by
/// content first, cove before 2026-12-07; `derived_by_kind`, keyed by kind
/// and content id, before the layout by arrival number) into
/// `derived_content` and `derived_view`, keeping the kinds still read,
/// then drop them: one transaction each, at open. Contents get their
/// numbers in the order their messages have in the index (mailbox, UID),
/// then those no message holds (a sweep removes them later), so a pass
/// over a kind after the move reads in mailbox order, as one after
/// arrivals does.
pub(crate) fn move_derived(conn: &rusqlite::Connection) -> Result<()> {
    let codes: Vec<String> = DerivedKind::ALL
        .iter()
        .map(|k| k.code().to_string())
        .collect();
    let codes = codes.join(",");
    for old in ["derived", "derived_by_kind"] {
        let present: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [old],
            |r| r.get(0),
        )?;
        if present == 0 {
            continue;
        }
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE;
             CREATE TEMP TABLE moving(content_id BLOB PRIMARY KEY) WITHOUT ROWID;
             INSERT OR IGNORE INTO moving SELECT content_id FROM {old} WHERE kind IN ({codes});
             INSERT OR IGNORE INTO derived_content(content_id)
               SELECT content_id FROM message WHERE content_id IN (SELECT content_id FROM moving)
               ORDER BY mailbox_id, uid;
             INSERT OR IGNORE INTO derived_content(content_id) SELECT content_id FROM moving;
             DROP TABLE moving;
             INSERT OR IGNORE INTO derived_view(kind, seq, data)
               SELECT o.kind, c.seq, o.data FROM {old} o JOIN derived_content c USING (content_id)
               WHERE o.kind IN ({codes})
               ORDER BY o.kind, c.seq;
             DROP TABLE {old};
             COMMIT;"
        ))?;
    }
    Ok(())
}

/// Remove every entry of one content (its number, then a point delete
/// per kind).
pub(crate) fn delete_derived_of(conn: &rusqlite::Connection, id: &ContentId) -> Result<bool> {
    let seq: Option<i64> = conn
        .prepare_cached("SELECT seq FROM derived_content WHERE content_id = ?1")?
        .query_row([&id.0[..]], |r| r.get(0))
        .optional()?;
    let Some(seq) = seq else {
        return Ok(false);
    };
    let mut st = conn.prepare_cached("DELETE FROM derived_view WHERE kind = ?1 AND seq = ?2")?;
    for kind in DerivedKind::ALL {
        st.execute(params![kind.code(), seq])?;
    }
    conn.prepare_cached("DELETE FROM derived_content WHERE seq = ?1")?
        .execute([seq])?;
    Ok(true)
}

/// The statement that looks up `n` content ids' views of one kind (`?1`).
/// `CROSS JOIN` fixes the order: each id found in `derived_content`'s
/// index, then its view by (kind, number). Left to choose, SQLite walked
/// the kind's whole range of `derived_view` for every statement once the
/// IN list was long (500 ids), a pass over the mailbox per 500 messages:
/// `FETCH 1:* (ENVELOPE)` of 100,000 took 9.4 s of CPU where 1.3 s was
/// usual, growing with the square of the mailbox.
fn lookup_sql(n: usize) -> String {
    format!(
        "SELECT c.content_id, v.data FROM derived_content c
           CROSS JOIN derived_view v ON v.kind = ?1 AND v.seq = c.seq
           WHERE c.content_id IN ({})",
        vec!["?"; n].join(",")
    )
}

/// Content ids per lookup statement (SQLite allows 32,766 parameters).
const LOOKUP_BATCH: usize = 500;
/// A kind's entries are read in one pass instead of looked up
/// ([`Account::derived`]) when at least one in `PASS_SHARE` of the
/// account's messages is asked for: the pass reads only that kind's rows
/// (the table is keyed by kind first), several entries per page, where
/// each lookup of a random content id reads a page of its own.
const PASS_SHARE: i64 = 4;
/// Below this many ids of one kind, lookups without counting anything.
const PASS_MIN: usize = 256;

impl Account {
    /// Look up derived data: one answer per (content, kind) asked.
    ///
    /// Asked in statements of up to [`LOOKUP_BATCH`] ids of one kind (a
    /// FETCH of 100 ENVELOPEs is one statement, not 100) — or, when a
    /// [`PASS_SHARE`] of the account's messages or more is asked, by
    /// reading that kind's rows once in order: content ids are random, so
    /// each lookup reads a leaf page of its own (copied into the small
    /// page cache by `pread`, the index being read without a memory map:
    /// index.rs), while one pass reads each page of the kind once. For
    /// 100,000 ENVELOPEs of 350 bytes: 141 ms of CPU for a pass (over the
    /// whole table, before it was keyed by kind first), 360 ms for the
    /// lookups without a memory map, 230 ms with one (the SQLite part
    /// alone, release build, medians of 5).
    pub fn derived(&self, keys: &[(ContentId, DerivedKind)]) -> Result<Vec<Option<Vec<u8>>>> {
        self.derived_with(keys, |data| Some(data.to_vec()))
    }

    /// [`Account::derived`], each entry given to `read` as SQLite holds it
    /// (no copy of its own) and the answer what `read` made of it: a
    /// caller that decodes entries (SEARCH's fields of 1,000,000 messages)
    /// allocates once per entry, not twice, and builds no list of byte
    /// vectors first. `None` from `read`: as if there were no entry.
    pub fn derived_with<T>(
        &self,
        keys: &[(ContentId, DerivedKind)],
        mut read: impl FnMut(&[u8]) -> Option<T>,
    ) -> Result<Vec<Option<T>>> {
        let g = self.conn()?;
        let mut out: Vec<Option<T>> = std::iter::repeat_with(|| None).take(keys.len()).collect();
        let mut kinds: Vec<DerivedKind> = keys.iter().map(|(_, k)| *k).collect();
        kinds.sort_unstable_by_key(|k| k.code());
        kinds.dedup();
        let mut messages: Option<i64> = None;
        for kind in kinds {
            let wanted: Vec<usize> = (0..keys.len()).filter(|i| keys[*i].1 == kind).collect();
            let pass = wanted.len() >= PASS_MIN && {
                let n = match messages {
                    Some(n) => n,
                    None => *messages.insert(g.conn.query_row(
                        "SELECT count(*) FROM message",
                        [],
                        |r| r.get(0),
                    )?),
                };
                (wanted.len() as i64).saturating_mul(PASS_SHARE) >= n
            };
            if pass {
                // The first position of each id, and the next position of
                // the same id after each (copies of one content): no list
                // allocated per id.
                let mut first: HashMap<ContentId, usize, ContentIdHash> =
                    HashMap::with_capacity_and_hasher(wanted.len(), ContentIdHash);
                let mut next: HashMap<usize, usize> = HashMap::new();
                for &i in wanted.iter().rev() {
                    if let Some(was) = first.insert(keys[i].0, i) {
                        next.insert(i, was);
                    }
                }
                // In arrival order: the views' range of this kind, each
                // row's content id from its number (the next row of
                // `derived_content` each time).
                let mut st = g.conn.prepare_cached(
                    "SELECT c.content_id, v.data FROM derived_view v
                       JOIN derived_content c ON c.seq = v.seq WHERE v.kind = ?1
                       ORDER BY v.seq",
                )?;
                let mut rows = st.query([kind.code()])?;
                while let Some(row) = rows.next()? {
                    let Some(id) = row
                        .get_ref(0)?
                        .as_blob()
                        .ok()
                        .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    else {
                        continue;
                    };
                    let mut at = first.get(&ContentId(id)).copied();
                    if at.is_none() {
                        continue;
                    }
                    let Ok(data) = row.get_ref(1)?.as_blob() else {
                        continue;
                    };
                    while let Some(i) = at {
                        out[i] = read(data);
                        at = next.get(&i).copied();
                    }
                }
                continue;
            }
            for chunk in wanted.chunks(LOOKUP_BATCH) {
                let mut st = g.conn.prepare_cached(&lookup_sql(chunk.len()))?;
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
                    out[*i] = found.get(&keys[*i].0.0[..]).and_then(|d| read(d));
                }
            }
        }
        Ok(out)
    }

    /// Remember derived data (one transaction for all entries). A content
    /// new here gets the next arrival number; its views are appended at
    /// the ends of their kinds' ranges (index.rs, `derived_view`): one
    /// insert at a random place per content (its id's), where keying the
    /// views by content id put each of a message's seven on a page of its
    /// own, ~55 `pread`s and ~45 `pwrite`s per imported message.
    pub fn store_derived(&self, entries: &[(ContentId, DerivedKind, Vec<u8>)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut g = self.conn()?;
        let kib = crate::index::cache_kib_for_rows(entries.len().saturating_mul(2));
        crate::index::with_cache(&mut g.conn, kib, |conn| {
            let tx = conn.transaction()?;
            {
                let mut number =
                    tx.prepare_cached("SELECT seq FROM derived_content WHERE content_id = ?1")?;
                let mut add =
                    tx.prepare_cached("INSERT INTO derived_content(content_id) VALUES (?1)")?;
                let mut put = tx.prepare_cached(
                    "INSERT OR REPLACE INTO derived_view(kind, seq, data) VALUES (?1, ?2, ?3)",
                )?;
                let mut last: Option<(ContentId, i64)> = None;
                for (id, kind, data) in entries {
                    let seq = match last {
                        // A content's views come together (the indexer's,
                        // a FETCH's): one lookup for them all.
                        Some((was, seq)) if was == *id => seq,
                        _ => {
                            let found: Option<i64> =
                                number.query_row([&id.0[..]], |r| r.get(0)).optional()?;
                            match found {
                                Some(seq) => seq,
                                None => {
                                    add.execute([&id.0[..]])?;
                                    tx.last_insert_rowid()
                                }
                            }
                        }
                    };
                    last = Some((*id, seq));
                    put.execute(params![kind.code(), seq, data])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
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
        for id in contents.difference(&held) {
            if delete_derived_of(&tx, id)? {
                gone += 1;
            }
        }
        tx.commit()?;
        Ok(gone)
    }

    /// Remove every cached view whose content no message holds (after
    /// more expunges than the indexer keeps track of one by one), and any
    /// view without its content's number; returns how many contents went.
    /// SQLite sorts the held contents in its temporary store, not in
    /// memory here.
    pub fn sweep_derived(&self) -> Result<usize> {
        let mut g = self.conn()?;
        let tx = g.conn.transaction()?;
        let gone = tx.execute(
            "DELETE FROM derived_content WHERE content_id NOT IN (SELECT content_id FROM message)",
            [],
        )?;
        tx.execute(
            "DELETE FROM derived_view WHERE seq NOT IN (SELECT seq FROM derived_content)",
            [],
        )?;
        tx.commit()?;
        Ok(gone)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    /// Ids that differ anywhere in their first eight bytes hash apart; a
    /// map keyed so finds each of many ids and no other.
    #[test]
    fn content_id_hash_keys_a_map() {
        let ids: Vec<ContentId> = (0..5000u32)
            .map(|i| ContentId::of(&i.to_le_bytes()))
            .collect();
        let mut map: HashMap<ContentId, usize, ContentIdHash> = HashMap::with_hasher(ContentIdHash);
        for (i, id) in ids.iter().enumerate() {
            map.insert(*id, i);
        }
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(map.get(id), Some(&i));
        }
        assert_eq!(map.get(&ContentId::of(b"absent")), None);
        let hashes: HashSet<u64> = ids.iter().map(|id| ContentIdHash.hash_one(id)).collect();
        assert_eq!(hashes.len(), ids.len());
    }

    /// A lookup of a full batch of ids starts from `derived_content`'s
    /// index, never from a walk of a kind's views (see [`lookup_sql`]).
    #[test]
    fn a_lookup_starts_from_the_content_ids() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(crate::index::SCHEMA).unwrap();
        let sql = format!("EXPLAIN QUERY PLAN {}", lookup_sql(LOOKUP_BATCH));
        let mut st = conn.prepare(&sql).unwrap();
        let mut params: Vec<Box<dyn rusqlite::ToSql>> = vec![Box::new(0u8)];
        for i in 0..LOOKUP_BATCH {
            params.push(Box::new(vec![i as u8; 32]));
        }
        let plan: Vec<String> = st
            .query_map(rusqlite::params_from_iter(params.iter()), |r| {
                r.get::<_, String>(3)
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            plan[0].contains("derived_content") && plan[0].contains("content_id=?"),
            "{plan:?}"
        );
        assert!(
            plan.iter()
                .any(|p| p.contains("SEARCH v") && p.contains("kind=? AND seq=?")),
            "{plan:?}"
        );
    }
}
