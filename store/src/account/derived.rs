//! A cache of data derived from a message's content (a protocol's parsed
//! views of it, such as IMAP's ENVELOPE and BODYSTRUCTURE), keyed by content
//! id: content never changes, so an entry never goes stale, and copies of
//! the same content (COPY, dedup) share it. The store does not interpret the
//! bytes; callers name their kinds with small numbers.
//!
//! Entries are not flushed to disk with the group commit: a lost entry is
//! computed again.

use cove_dedup::ContentId;
use rusqlite::{OptionalExtension, params};

use super::Account;
use crate::Result;

impl Account {
    /// Look up derived data: one answer per (content, kind) asked.
    pub fn derived(&self, keys: &[(ContentId, u8)]) -> Result<Vec<Option<Vec<u8>>>> {
        let g = self.conn()?;
        let mut st = g
            .conn
            .prepare_cached("SELECT data FROM derived WHERE content_id = ?1 AND kind = ?2")?;
        let mut out = Vec::with_capacity(keys.len());
        for (id, kind) in keys {
            out.push(
                st.query_row(params![&id.0[..], kind], |r| r.get::<_, Vec<u8>>(0))
                    .optional()?,
            );
        }
        Ok(out)
    }

    /// Remember derived data (one transaction for all entries).
    pub fn store_derived(&self, entries: &[(ContentId, u8, Vec<u8>)]) -> Result<()> {
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
                st.execute(params![&id.0[..], kind, data])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}
