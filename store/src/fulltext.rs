//! A full-text index of message content, for IMAP SEARCH BODY and TEXT.
//!
//! **The problem.** RFC 3501 §6.4.4 asks for a case-insensitive substring
//! match on the decoded text of every message of a mailbox. Reading and
//! parsing 100,000 messages takes seconds; an index of words cannot answer
//! substrings ("umqu" must find "kumquat").
//!
//! **The index.** SQLite FTS5 with the `trigram` tokenizer, in its own file
//! `fts.sqlite` next to `index.sqlite` in the user's home (it is a cache:
//! deleting it costs one rebuild, and the index's schema stays the
//! index's). Every substring of three characters or more of a text is made of
//! trigrams the text contains, so "all the needle's trigrams are in the
//! document" is a *necessary* condition for a match: the index gives
//! candidates, never answers. The caller confirms each candidate with its
//! exact matcher, so the results are exactly those of a full scan, and a
//! needle of fewer than three characters (no trigram) is not asked here at
//! all. The tables are contentless with `detail=none` (rowids only, the
//! smallest index), queried as an AND of the needle's trigrams rather than
//! as a phrase, which such tables cannot check.
//!
//! **What is indexed** is the caller's text (for IMAP: the decoded,
//! lowercased body and header values, exactly what its matcher reads), once
//! per content id: copies in several mailboxes and dedup'd deliveries share
//! one entry. The caller names its text extraction with a version; another
//! version empties the index (the texts would no longer be what the matcher
//! reads).
//!
//! **Invariants.**
//! - Per mailbox (GUID and UIDVALIDITY) the index keeps a modseq and a UID:
//!   every message of the mailbox whose modseq was at or below that modseq
//!   when it was read, and every one with a UID at or below that UID, has
//!   its content indexed. Modseqs are given in commit order, so the messages
//!   still to index are among `messages_since(that modseq)`; of those, only
//!   UIDs above the UID are new (UIDs too are given in commit order, so a
//!   snapshot holding a UID holds every lower one that still exists). A
//!   flag change on every message therefore costs one read of the rows, not
//!   a lookup per message. The account's modseq is read *before* the
//!   messages, so nothing committed in between is skipped.
//! - A message whose file cannot be read holds both back below its own, so
//!   it is tried again next time rather than silently never found.
//! - A candidate is only a candidate: the caller looks at the mailbox's
//!   messages. Content no message of the account holds any more is
//!   removed ([`FullText::forget`], the tables are `contentless_delete`),
//!   but an entry that outlives its messages for a while costs nothing
//!   but space.
//!
//! **When.** New mail is indexed in the background right after it arrives
//! (indexer.rs: the same [`FullText::refresh_deriving`], which also caches
//! the protocols' views of each message), so the first search finds the
//! index up to date; a search still refreshes first, for whatever the
//! background has not reached yet.
//!
//! **Rejected.** Keeping the text in `index.sqlite` (another schema's
//! migrations; a big index slows every delivery's commit). Indexing inside
//! the delivery (the 250 would wait for a parse). A word tokenizer (no
//! substrings). FTS5 `LIKE` on trigram tables (needs stored content: twice
//! the size).

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use cove_dedup::ContentId;
use rusqlite::{Connection, OptionalExtension, params};

use crate::indexer::Derivation;
use crate::{Account, MailboxInfo, MessageMeta, ModSeq, Result, Uid};

/// The index's file in the user's home.
pub const FULLTEXT_FILE: &str = "fts.sqlite";

/// Bump when the tables below change (the old ones are dropped). 2: the
/// text tables are `contentless_delete` (expunged content is removed).
const SCHEMA_VERSION: i64 = 2;

/// Messages parsed and inserted per transaction while building.
const BATCH: usize = 2048;

/// Contents looked at per pass over the account in [`FullText::sweep`].
const SWEEP_CHUNK: usize = 50_000;

/// At most this many of a needle's trigrams are asked (any subset still
/// gives every match).
const MAX_TRIGRAMS: usize = 12;

/// The searchable text of one message, as the caller's matcher reads it.
#[derive(Debug, Default, Clone)]
pub struct IndexedText {
    pub body: String,
    pub header: String,
}

/// Which texts a needle is looked for in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextField {
    Body,
    /// IMAP TEXT: the body or any header value.
    BodyOrHeader,
}

/// What [`FullText::refresh`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Refreshed {
    /// Messages looked at (new or changed since the last refresh).
    pub looked_at: usize,
    /// Contents parsed and added.
    pub indexed: usize,
    /// Files that could not be read (tried again next time).
    pub unreadable: usize,
}

/// One user's full-text index (a connection to `fts.sqlite`).
pub struct FullText {
    conn: Connection,
}

impl std::fmt::Debug for FullText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FullText").finish_non_exhaustive()
    }
}

/// A needle the index can narrow: three characters or more, and none the
/// FTS5 query string cannot carry.
pub fn can_narrow(needle: &str) -> bool {
    needle.chars().count() >= 3 && !needle.contains('\0')
}

impl FullText {
    /// Open (creating if needed) the account's index. `extractor` names the
    /// caller's text extraction: a different one empties the index.
    pub fn open(account: &Account, extractor: u32) -> Result<FullText> {
        Self::open_at(&account.home().join(FULLTEXT_FILE), extractor)
    }

    fn open_at(path: &Path, extractor: u32) -> Result<FullText> {
        let conn = crate::index::open_private(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // A cache: a commit lost in a crash is indexed again.
        conn.pragma_update(None, "synchronous", "OFF")?;
        conn.pragma_update(None, "cache_size", -4096)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);",
        )?;
        let want = (SCHEMA_VERSION << 32) | i64::from(extractor);
        let have: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key = 'version'", [], |r| {
                r.get(0)
            })
            .optional()?;
        let mut ft = FullText { conn };
        if have != Some(want) {
            ft.rebuild_tables(want)?;
        }
        Ok(ft)
    }

    /// Start empty (another extraction or schema): the tables are made
    /// again, so a schema change takes effect too.
    fn rebuild_tables(&mut self, version: i64) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Another connection (the background indexer, a search) may have
        // made them meanwhile.
        let now: Option<i64> = tx
            .query_row("SELECT value FROM meta WHERE key = 'version'", [], |r| {
                r.get(0)
            })
            .optional()?;
        if now == Some(version) {
            return Ok(());
        }
        tx.execute_batch(
            "DROP TABLE IF EXISTS content; DROP TABLE IF EXISTS mailbox;
             DROP TABLE IF EXISTS body; DROP TABLE IF EXISTS header;
             CREATE TABLE content(
                 id INTEGER PRIMARY KEY, content_id BLOB NOT NULL UNIQUE);
             CREATE TABLE mailbox(
                 guid BLOB NOT NULL, uidvalidity INTEGER NOT NULL,
                 modseq INTEGER NOT NULL, uid INTEGER NOT NULL,
                 PRIMARY KEY(guid, uidvalidity));
             CREATE VIRTUAL TABLE body USING fts5(text, content='',
                 contentless_delete=1, detail=none, tokenize='trigram');
             CREATE VIRTUAL TABLE header USING fts5(text, content='',
                 contentless_delete=1, detail=none, tokenize='trigram');",
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES('version', ?1)",
            [version],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Index the contents of `mailbox`'s messages added or changed since the
    /// last refresh, with `extract` giving each message's text (called on
    /// up to two threads at once).
    pub fn refresh(
        &mut self,
        account: &Account,
        mailbox: &MailboxInfo,
        extract: &(dyn Fn(&[u8]) -> IndexedText + Sync),
    ) -> Result<Refreshed> {
        self.refresh_deriving(account, mailbox, &|raw| Derivation {
            views: Vec::new(),
            text: extract(raw),
        })
    }

    /// [`refresh`](FullText::refresh), with `derive` also giving the views
    /// of each message to cache ([`Account::derived`]): stored with each
    /// batch, so one read and parse serves both.
    pub fn refresh_deriving(
        &mut self,
        account: &Account,
        mailbox: &MailboxInfo,
        derive: &(dyn Fn(&[u8]) -> Derivation + Sync),
    ) -> Result<Refreshed> {
        let (done, done_uid): (ModSeq, Uid) = self
            .conn
            .query_row(
                "SELECT modseq, uid FROM mailbox WHERE guid = ?1 AND uidvalidity = ?2",
                params![&mailbox.guid.0[..], mailbox.uidvalidity],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, u32>(1)?)),
            )
            .optional()?
            .unwrap_or((0, 0));
        // Read the modseq first: whatever commits after it is found next time.
        let now = account.current_modseq()?;
        let mut report = Refreshed::default();
        if now <= done {
            return Ok(report);
        }
        // Which contents are known is decided under this index's write
        // lock, as [`forget`](FullText::forget) decides what goes: a
        // content judged known here is held by a message that forget's
        // look at the account then sees.
        let judged = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let rows = account.messages_since(&mailbox.guid, done)?;
        let mut missing: Vec<MessageMeta> = Vec::new();
        let mut newest = done_uid;
        {
            let mut known = judged.prepare_cached("SELECT 1 FROM content WHERE content_id = ?1")?;
            let mut seen: HashSet<ContentId> = HashSet::new();
            for m in rows.into_iter().filter(|m| m.uid > done_uid) {
                report.looked_at += 1;
                newest = newest.max(m.uid);
                if seen.insert(m.content_id) && !known.exists([&m.content_id.0[..]])? {
                    missing.push(m);
                }
            }
        }
        judged.commit()?;
        let (mut reached, mut reached_uid) = (now, newest);
        for batch in missing.chunks(BATCH) {
            let texts = read_and_extract(account, mailbox, batch, derive);
            let mut views: Vec<(ContentId, crate::DerivedKind, Vec<u8>)> = Vec::new();
            let tx = self.conn.transaction()?;
            {
                let mut content =
                    tx.prepare_cached("INSERT OR IGNORE INTO content(content_id) VALUES (?1)")?;
                let mut body =
                    tx.prepare_cached("INSERT INTO body(rowid, text) VALUES (?1, ?2)")?;
                let mut header =
                    tx.prepare_cached("INSERT INTO header(rowid, text) VALUES (?1, ?2)")?;
                for (m, text) in batch.iter().zip(texts) {
                    match text {
                        Read::Text(Derivation { views: v, text: t }) => {
                            views.extend(v.into_iter().map(|(k, d)| (m.content_id, k, d)));
                            // Another session may have indexed it meanwhile.
                            if content.execute([&m.content_id.0[..]])? == 1 {
                                let id = tx.last_insert_rowid();
                                body.execute(params![id, t.body.replace('\0', " ")])?;
                                header.execute(params![id, t.header.replace('\0', " ")])?;
                                report.indexed += 1;
                            }
                        }
                        // Expunged since its row was read: nothing to do
                        // (a copy elsewhere is indexed with its mailbox).
                        Read::Gone => {}
                        Read::Unreadable => {
                            report.unreadable += 1;
                            reached = reached.min(m.modseq.saturating_sub(1));
                            reached_uid = reached_uid.min(m.uid.saturating_sub(1));
                        }
                    }
                }
            }
            tx.commit()?;
            // A cache that cannot be written costs a parse at first use.
            if let Err(e) = account.store_derived(&views) {
                tracing::warn!(user = %account.email(), error = %e, "could not cache message views");
            }
        }
        // Never backwards (another session may have gone further); a
        // message that could not be read holds both below its own.
        self.conn.execute(
            "INSERT INTO mailbox(guid, uidvalidity, modseq, uid) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(guid, uidvalidity) DO UPDATE SET
                 modseq = max(modseq, excluded.modseq), uid = max(uid, excluded.uid)",
            params![
                &mailbox.guid.0[..],
                mailbox.uidvalidity,
                reached.max(done) as i64,
                reached_uid.max(done_uid)
            ],
        )?;
        Ok(report)
    }

    /// Remove the text of those of `contents` that no message of the
    /// account holds any more (expunged, or their mailbox deleted);
    /// returns how many went. One write transaction of this index, inside
    /// which the account's messages are read: a content a message holds is
    /// never forgotten (see the same lock in
    /// [`refresh_deriving`](FullText::refresh_deriving)). Costs one pass
    /// over the account's message rows.
    pub fn forget(&mut self, account: &Account, contents: &HashSet<ContentId>) -> Result<usize> {
        if contents.is_empty() {
            return Ok(0);
        }
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let held = account.held_among(contents)?;
        let mut gone = 0;
        {
            let mut find = tx.prepare_cached("SELECT id FROM content WHERE content_id = ?1")?;
            for id in contents.difference(&held) {
                let Some(row) = find
                    .query_row([&id.0[..]], |r| r.get::<_, i64>(0))
                    .optional()?
                else {
                    continue;
                };
                for sql in [
                    "DELETE FROM body WHERE rowid = ?1",
                    "DELETE FROM header WHERE rowid = ?1",
                    "DELETE FROM content WHERE id = ?1",
                ] {
                    tx.prepare_cached(sql)?.execute([row])?;
                }
                gone += 1;
            }
        }
        tx.commit()?;
        Ok(gone)
    }

    /// [`forget`](FullText::forget) over every content in the index,
    /// [`SWEEP_CHUNK`] at a time (memory stays bounded whatever the size).
    pub fn sweep(&mut self, account: &Account) -> Result<usize> {
        let (mut after, mut gone) = (0i64, 0);
        loop {
            let chunk: Vec<(i64, Vec<u8>)> = self
                .conn
                .prepare_cached(
                    "SELECT id, content_id FROM content WHERE id > ?1 ORDER BY id LIMIT ?2",
                )?
                .query_map(params![after, SWEEP_CHUNK as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            let Some((last, _)) = chunk.last() else {
                return Ok(gone);
            };
            after = *last;
            let ids: HashSet<ContentId> = chunk
                .iter()
                .filter_map(|(_, id)| <[u8; 32]>::try_from(id.as_slice()).ok().map(ContentId))
                .collect();
            gone += self.forget(account, &ids)?;
        }
    }

    /// Contents whose text may contain `needle` (lowercase, see
    /// [`can_narrow`]): a superset of the contents that do; `None` when the
    /// needle is too short for the index.
    pub fn candidates(&self, needle: &str, field: TextField) -> Result<Option<HashSet<ContentId>>> {
        if !can_narrow(needle) {
            return Ok(None);
        }
        let query = trigram_query(needle);
        let mut out = HashSet::new();
        let tables: &[&str] = match field {
            TextField::Body => &["body"],
            TextField::BodyOrHeader => &["body", "header"],
        };
        for table in tables {
            let mut st = self.conn.prepare_cached(&format!(
                "SELECT c.content_id FROM {table} f JOIN content c ON c.id = f.rowid
                 WHERE {table} MATCH ?1"
            ))?;
            let rows = st.query_map([&query], |r| r.get::<_, Vec<u8>>(0))?;
            for id in rows {
                let id = id?;
                if let Ok(a) = <[u8; 32]>::try_from(id.as_slice()) {
                    out.insert(ContentId(a));
                }
            }
        }
        Ok(Some(out))
    }
}

/// `"abc" AND "bcd" AND ...` over (at most [`MAX_TRIGRAMS`] of) the
/// needle's distinct trigrams, each a quoted FTS5 string.
fn trigram_query(needle: &str) -> String {
    let chars: Vec<char> = needle.chars().collect();
    let mut grams: Vec<String> = Vec::new();
    for w in chars.windows(3) {
        let g: String = w.iter().collect();
        if !grams.contains(&g) {
            grams.push(g);
        }
    }
    // Spread the ones asked over the whole needle.
    if grams.len() > MAX_TRIGRAMS {
        let n = grams.len();
        grams = (0..MAX_TRIGRAMS)
            .map(|i| grams[i * (n - 1) / (MAX_TRIGRAMS - 1)].clone())
            .collect();
    }
    grams
        .iter()
        .map(|g| format!("\"{}\"", g.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// A message's text (and views), as far as it could be read.
enum Read {
    Text(Derivation),
    /// Expunged meanwhile.
    Gone,
    Unreadable,
}

/// Each message's text (a file renamed by a flag change since its row was
/// read is looked up again).
fn read_and_extract(
    account: &Account,
    mailbox: &MailboxInfo,
    batch: &[MessageMeta],
    extract: &(dyn Fn(&[u8]) -> Derivation + Sync),
) -> Vec<Read> {
    let one = |m: &MessageMeta| -> Read {
        let raw = match account.read_message(mailbox, m) {
            Ok(raw) => raw,
            Err(_) => match account.message(&mailbox.guid, m.uid) {
                Ok(None) => return Read::Gone,
                Ok(Some(now)) => match account.read_message(mailbox, &now) {
                    Ok(raw) => raw,
                    Err(_) => return Read::Unreadable,
                },
                Err(_) => return Read::Unreadable,
            },
        };
        Read::Text(extract(&raw))
    };
    let half = batch.len().div_ceil(2);
    if batch.len() < 64 {
        return batch.iter().map(one).collect();
    }
    let (a, b) = batch.split_at(half);
    std::thread::scope(|s| {
        let other = s.spawn(|| b.iter().map(one).collect::<Vec<_>>());
        let mut out: Vec<Read> = a.iter().map(one).collect();
        match other.join() {
            Ok(rest) => out.extend(rest),
            // The extractor panicked on the other half: those are unread.
            Err(_) => out.extend(b.iter().map(|_| Read::Unreadable)),
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_with(texts: &[(&str, &str)]) -> (tempfile::TempDir, FullText) {
        let dir = tempfile::tempdir().unwrap();
        let mut ft = FullText::open_at(&dir.path().join(FULLTEXT_FILE), 1).unwrap();
        let tx = ft.conn.transaction().unwrap();
        for (i, (body, header)) in texts.iter().enumerate() {
            let id = ContentId([i as u8; 32]);
            tx.execute("INSERT INTO content(content_id) VALUES (?1)", [&id.0[..]])
                .unwrap();
            let row = tx.last_insert_rowid();
            tx.execute(
                "INSERT INTO body(rowid, text) VALUES (?1, ?2)",
                params![row, body],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO header(rowid, text) VALUES (?1, ?2)",
                params![row, header],
            )
            .unwrap();
        }
        tx.commit().unwrap();
        (dir, ft)
    }

    fn ids(set: Option<HashSet<ContentId>>) -> Vec<u8> {
        let mut v: Vec<u8> = set.unwrap().into_iter().map(|c| c.0[0]).collect();
        v.sort();
        v
    }

    #[test]
    fn substrings_of_three_or_more_characters_are_candidates() {
        let (_d, ft) = index_with(&[
            ("a kumquat tree", "subject\tfruit"),
            ("no fruit here", "subject\tkumquat"),
            ("quat", ""),
            ("café crème", ""),
            ("say \"hi\" now", ""),
        ]);
        assert_eq!(ids(ft.candidates("umqu", TextField::Body).unwrap()), [0]);
        assert_eq!(ids(ft.candidates("kumquat", TextField::Body).unwrap()), [0]);
        assert_eq!(
            ids(ft.candidates("kumquat", TextField::BodyOrHeader).unwrap()),
            [0, 1]
        );
        assert_eq!(ids(ft.candidates("qua", TextField::Body).unwrap()), [0, 2]);
        assert_eq!(ids(ft.candidates("fé c", TextField::Body).unwrap()), [3]);
        assert_eq!(ids(ft.candidates("\"hi\"", TextField::Body).unwrap()), [4]);
        assert_eq!(ids(ft.candidates("kiwi", TextField::Body).unwrap()), []);
        assert!(ft.candidates("ku", TextField::Body).unwrap().is_none());
    }

    #[test]
    fn long_needles_ask_a_spread_of_trigrams() {
        let q = trigram_query("abcdefghijklmnopqrstuvwxyz");
        assert_eq!(q.matches(" AND ").count(), MAX_TRIGRAMS - 1);
        assert!(q.starts_with("\"abc\"") && q.ends_with("\"xyz\""));
        assert_eq!(trigram_query("aaaa"), "\"aaa\"");
    }

    #[test]
    fn another_extractor_version_empties_the_index() {
        let (dir, ft) = index_with(&[("kumquat", "")]);
        drop(ft);
        let path = dir.path().join(FULLTEXT_FILE);
        let same = FullText::open_at(&path, 1).unwrap();
        assert_eq!(
            ids(same.candidates("kumquat", TextField::Body).unwrap()),
            [0]
        );
        drop(same);
        let other = FullText::open_at(&path, 2).unwrap();
        assert_eq!(
            ids(other.candidates("kumquat", TextField::Body).unwrap()),
            []
        );
    }
}
