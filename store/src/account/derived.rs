//! A cache of data derived from a message's content (a protocol's parsed
//! views of it, such as IMAP's ENVELOPE and BODYSTRUCTURE), keyed by content
//! id: content never changes, so an entry never goes stale, and copies of
//! the same content (COPY, dedup) share it. The store does not interpret the
//! bytes; callers name their kinds with small numbers.
//!
//! Entries are not flushed to disk with the group commit: a lost entry is
//! computed again.

use std::collections::HashMap;

use cove_dedup::ContentId;
use rusqlite::params;

use super::Account;
use crate::Result;

/// Content ids per lookup statement (SQLite allows 32,766 parameters).
const LOOKUP_BATCH: usize = 500;

impl Account {
    /// Look up derived data: one answer per (content, kind) asked.
    ///
    /// Asked in statements of up to [`LOOKUP_BATCH`] ids of one kind (a
    /// FETCH of 100,000 ENVELOPEs is 400 statements, not 100,000).
    pub fn derived(&self, keys: &[(ContentId, u8)]) -> Result<Vec<Option<Vec<u8>>>> {
        let g = self.conn()?;
        let mut out: Vec<Option<Vec<u8>>> = vec![None; keys.len()];
        let mut kinds: Vec<u8> = keys.iter().map(|(_, k)| *k).collect();
        kinds.sort_unstable();
        kinds.dedup();
        for kind in kinds {
            let wanted: Vec<usize> = (0..keys.len()).filter(|i| keys[*i].1 == kind).collect();
            for chunk in wanted.chunks(LOOKUP_BATCH) {
                let sql = format!(
                    "SELECT content_id, data FROM derived WHERE kind = ?1 AND content_id IN ({})",
                    vec!["?"; chunk.len()].join(",")
                );
                let mut st = g.conn.prepare_cached(&sql)?;
                let mut params: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(chunk.len() + 1);
                params.push(&kind);
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
