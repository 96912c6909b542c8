//! The server's memory of what is derived from a message's content, by
//! content id, shared by every IMAP session ([`ContentCache`]): the
//! prepared SORT / THREAD keys ([`SortKeyCache`]) and the header fields
//! SEARCH's address and subject keys read (search.rs `SearchFields`).
//!
//! A repeated SORT, THREAD or SEARCH SUBJECT of a big mailbox should cost
//! the engine's work and no more: without this, each one read every
//! message's entry from the index's derived cache (SQLite) and decoded it
//! — most of a warm `SORT (DATE)` (issue 14) and of a warm SEARCH SUBJECT
//! (issue 15). Content never changes, so an entry never goes stale; copies
//! of one content (COPY, dedup, other users) share it.
//!
//! Bounded by a budget (`[imap] sort_key_cache_bytes`,
//! `search_field_cache_bytes`: an estimate of the heap the entries hold,
//! [`Footprint`]) with two generations: lookups read the current map then
//! the previous one (moving a hit into the current); when the current
//! holds half the budget it becomes the previous and the old previous is
//! dropped. So the entries of the mailboxes read lately stay, at most the
//! budget is held, and no per-entry bookkeeping (an LRU list) is paid on
//! the hot path. A budget of 0 keeps nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cove_store::ContentId;

use super::sort::SortKeys;

/// What an entry holds on the heap, roughly (for the budget).
pub trait Footprint {
    fn footprint(&self) -> usize;
}

impl Footprint for SortKeys {
    fn footprint(&self) -> usize {
        SortKeys::footprint(self)
    }
}

/// Prepared sort keys by content id.
pub type SortKeyCache = ContentCache<SortKeys>;

struct Generations<V> {
    current: HashMap<ContentId, Arc<V>>,
    current_bytes: usize,
    previous: HashMap<ContentId, Arc<V>>,
}

impl<V> Default for Generations<V> {
    fn default() -> Self {
        Generations {
            current: HashMap::new(),
            current_bytes: 0,
            previous: HashMap::new(),
        }
    }
}

impl<V: Footprint> Generations<V> {
    fn insert(&mut self, id: ContentId, value: Arc<V>, budget: usize) {
        let bytes = entry_bytes(&*value);
        if self.current_bytes + bytes > budget / 2 {
            self.previous = std::mem::take(&mut self.current);
            self.current_bytes = 0;
        }
        if self.current.insert(id, value).is_none() {
            self.current_bytes += bytes;
        }
    }
}

/// What an entry costs: its value, the map's slot and the `Arc`'s counts.
fn entry_bytes<V: Footprint>(value: &V) -> usize {
    value.footprint() + std::mem::size_of::<(ContentId, Arc<V>)>() + 16
}

/// Values derived from content, by content id (see the module comment).
pub struct ContentCache<V> {
    budget: usize,
    inner: Mutex<Generations<V>>,
}

impl<V: Footprint> ContentCache<V> {
    pub fn new(budget_bytes: u64) -> ContentCache<V> {
        ContentCache {
            budget: usize::try_from(budget_bytes).unwrap_or(usize::MAX),
            inner: Mutex::default(),
        }
    }

    /// The values known for each id, in order.
    pub fn get_many(&self, ids: &[ContentId]) -> Vec<Option<Arc<V>>> {
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

    /// Remember values just read or computed.
    pub fn insert_many(&self, entries: impl IntoIterator<Item = (ContentId, Arc<V>)>) {
        if self.budget == 0 {
            return;
        }
        if let Ok(mut g) = self.inner.lock() {
            for (id, value) in entries {
                g.insert(id, value, self.budget);
            }
        }
    }

    /// The value of each id, in order: from memory, else from `load`,
    /// given the positions (in `ids`) of those not in memory and
    /// answering one value (or `None`: nothing known) per position; what
    /// it loaded is remembered.
    pub fn get_or_load<E>(
        &self,
        ids: &[ContentId],
        load: impl FnOnce(&[usize]) -> Result<Vec<Option<V>>, E>,
    ) -> Result<Vec<Option<Arc<V>>>, E> {
        let mut values = self.get_many(ids);
        let missing: Vec<usize> = (0..values.len()).filter(|&i| values[i].is_none()).collect();
        if missing.is_empty() {
            return Ok(values);
        }
        let loaded = load(&missing)?;
        let mut learned = Vec::with_capacity(missing.len());
        for (&i, value) in missing.iter().zip(loaded) {
            if let Some(value) = value {
                let value = Arc::new(value);
                learned.push((ids[i], value.clone()));
                values[i] = Some(value);
            }
        }
        self.insert_many(learned);
        Ok(values)
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
        let one = entry_bytes(&*keys("s"));
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

    /// Only what memory lacks is loaded, once; what was loaded is then
    /// in memory, and what the loader did not know stays unknown.
    #[test]
    fn loads_only_what_memory_lacks() {
        let cache = SortKeyCache::new(1 << 20);
        cache.insert_many([(id(1), keys("one"))]);
        let mut asked = Vec::new();
        let got = cache.get_or_load(&[id(1), id(2), id(3)], |missing| {
            asked.extend_from_slice(missing);
            Ok::<_, ()>(vec![
                Some(SortKeys {
                    subject: "two".into(),
                    ..SortKeys::default()
                }),
                None,
            ])
        });
        assert_eq!(asked, [1, 2]);
        let subjects: Vec<Option<String>> = got
            .unwrap_or_default()
            .iter()
            .map(|k| k.as_ref().map(|k| k.subject.to_string()))
            .collect();
        assert_eq!(subjects, [Some("one".into()), Some("two".into()), None]);
        let again = cache.get_or_load(&[id(2)], |_| Err(()));
        assert!(again.is_ok_and(|v| v[0].is_some()));
    }

    #[test]
    fn a_zero_budget_keeps_nothing() {
        let cache = SortKeyCache::new(0);
        cache.insert_many([(id(1), keys("s"))]);
        assert!(cache.get_many(&[id(1)])[0].is_none());
    }
}
