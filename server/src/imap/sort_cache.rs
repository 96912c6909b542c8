//! The server's memory of prepared SORT / THREAD keys ([`SortKeys`]), by
//! content id, shared by every IMAP session.
//!
//! A repeated SORT or THREAD of a big mailbox should cost the engine's
//! work and no more: without this, each one read every message's entry
//! from the index's derived cache (SQLite) and decoded it — most of a warm
//! `SORT (DATE)` (issue 14). Content never changes, so an entry never goes
//! stale; copies of one content (COPY, dedup, other users) share it.
//!
//! Bounded by `[imap] sort_key_cache_bytes` (an estimate of the heap the
//! entries hold, `SortKeys::footprint`) with two generations: lookups
//! read the current map then the previous one (moving a hit into the
//! current); when the current holds half the budget it becomes the
//! previous and the old previous is dropped. So the entries of the
//! mailboxes sorted lately stay, at most the budget is held, and no
//! per-entry bookkeeping (an LRU list) is paid on the hot path. A budget
//! of 0 keeps nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cove_store::ContentId;

use super::sort::SortKeys;

#[derive(Default)]
struct Generations {
    current: HashMap<ContentId, Arc<SortKeys>>,
    current_bytes: usize,
    previous: HashMap<ContentId, Arc<SortKeys>>,
}

impl Generations {
    fn insert(&mut self, id: ContentId, keys: Arc<SortKeys>, budget: usize) {
        let bytes = entry_bytes(&keys);
        if self.current_bytes + bytes > budget / 2 {
            self.previous = std::mem::take(&mut self.current);
            self.current_bytes = 0;
        }
        if self.current.insert(id, keys).is_none() {
            self.current_bytes += bytes;
        }
    }
}

/// What an entry costs: its keys, the map's slot and the `Arc`'s counts.
fn entry_bytes(keys: &SortKeys) -> usize {
    keys.footprint() + std::mem::size_of::<(ContentId, Arc<SortKeys>)>() + 16
}

/// Prepared sort keys by content id (see the module comment).
pub struct SortKeyCache {
    budget: usize,
    inner: Mutex<Generations>,
}

impl SortKeyCache {
    pub fn new(budget_bytes: u64) -> SortKeyCache {
        SortKeyCache {
            budget: usize::try_from(budget_bytes).unwrap_or(usize::MAX),
            inner: Mutex::default(),
        }
    }

    /// The keys known for each id, in order.
    pub fn get_many(&self, ids: &[ContentId]) -> Vec<Option<Arc<SortKeys>>> {
        let Ok(mut g) = self.inner.lock() else {
            return vec![None; ids.len()];
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(k) = g.current.get(id) {
                out.push(Some(k.clone()));
            } else if let Some(k) = g.previous.remove(id) {
                g.insert(*id, k.clone(), self.budget);
                out.push(Some(k));
            } else {
                out.push(None);
            }
        }
        out
    }

    /// Remember keys just read or computed.
    pub fn insert_many(&self, entries: impl IntoIterator<Item = (ContentId, Arc<SortKeys>)>) {
        if self.budget == 0 {
            return;
        }
        if let Ok(mut g) = self.inner.lock() {
            for (id, keys) in entries {
                g.insert(id, keys, self.budget);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(subject: &str) -> Arc<SortKeys> {
        Arc::new(SortKeys {
            subject: subject.into(),
            ..SortKeys::default()
        })
    }

    fn id(n: u8) -> ContentId {
        ContentId([n; 32])
    }

    #[test]
    fn remembers_within_the_budget_and_forgets_the_oldest() {
        let one = entry_bytes(&keys("s"));
        // Room for two entries per generation.
        let cache = SortKeyCache::new((4 * one) as u64);
        cache.insert_many((1..=2).map(|n| (id(n), keys("s"))));
        let got = cache.get_many(&[id(1), id(2), id(3)]);
        assert_eq!(got.iter().filter(|k| k.is_some()).count(), 2);
        assert_eq!(got[0].as_deref().map(|k| &*k.subject), Some("s"));
        // Two more: 1 and 2 move to the previous generation, still found;
        // moving 1 back makes 3 and 4 the previous generation, and 2 goes.
        cache.insert_many((3..=4).map(|n| (id(n), keys("s"))));
        assert!(cache.get_many(&[id(1)])[0].is_some());
        cache.insert_many((5..=6).map(|n| (id(n), keys("s"))));
        let got = cache.get_many(&[id(1), id(2), id(5), id(6)]);
        assert!(got[0].is_some() && got[1].is_none() && got[2].is_some() && got[3].is_some());
        let held = cache
            .inner
            .lock()
            .map(|g| g.current.len() + g.previous.len());
        assert!(held.is_ok_and(|n| n <= 4));
    }

    #[test]
    fn a_zero_budget_keeps_nothing() {
        let cache = SortKeyCache::new(0);
        cache.insert_many([(id(1), keys("s"))]);
        assert!(cache.get_many(&[id(1)])[0].is_none());
    }
}
