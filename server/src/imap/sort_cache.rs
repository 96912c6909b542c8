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
//! [`Footprint`]), in generations: each entry carries the generation it
//! was last read or found in (a hit restamps it in place), and when an
//! insert would pass the budget the oldest generations go, in one pass
//! over the map for at least an eighth of the budget. So everything read
//! within the last 7/8 of the budget stays, at most the budget is held,
//! and no per-entry bookkeeping (an LRU list) is paid on the hot path.
//! (Two maps, the current one rotated out at half the budget, as first
//! written, kept at most half: a mailbox of 1,000,000 messages, ~200 MB of
//! search fields in a 256 MB budget, was dropped while it was read, and
//! every SEARCH SUBJECT read the index again.) A budget of 0 keeps
//! nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use cove_store::{ContentId, ContentIdHash};

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

/// How many generations share the budget: everything read or found
/// within the last (GENERATIONS - 1) / GENERATIONS of the budget stays.
const GENERATIONS: usize = 8;

struct Entry<V> {
    value: Arc<V>,
    /// Its [`entry_bytes`].
    bytes: usize,
    /// The generation it was last read or found in.
    generation: u64,
}

/// One map; each entry stamped with the generation it was last used in
/// (a hit restamps it in place: no move between maps), and the bytes each
/// live generation holds. The current generation closes when it holds
/// 1/[`GENERATIONS`] of the budget; when an insert would pass the budget,
/// the oldest generations go (one pass over the map for at least that
/// share of the budget).
struct Generations<V> {
    map: HashMap<ContentId, Entry<V>, ContentIdHash>,
    /// Bytes per generation still holding entries, oldest first.
    bytes: BTreeMap<u64, usize>,
    current: u64,
    held: usize,
}

impl<V> Default for Generations<V> {
    fn default() -> Self {
        Generations {
            map: HashMap::with_hasher(ContentIdHash),
            bytes: BTreeMap::new(),
            current: 0,
            held: 0,
        }
    }
}

impl<V: Footprint> Generations<V> {
    fn insert(&mut self, id: ContentId, value: Arc<V>, budget: usize) {
        if self.get(&id, budget).is_some() {
            return;
        }
        let bytes = entry_bytes(&*value);
        if bytes > budget {
            return;
        }
        if self.held + bytes > budget {
            self.evict(self.held + bytes - budget, budget);
        }
        self.map.insert(
            id,
            Entry {
                value,
                bytes,
                generation: self.current,
            },
        );
        self.held += bytes;
        self.add(self.current, bytes, budget);
    }

    /// The value of `id`, restamped with the current generation.
    fn get(&mut self, id: &ContentId, budget: usize) -> Option<Arc<V>> {
        let current = self.current;
        let e = self.map.get_mut(id)?;
        let value = e.value.clone();
        if e.generation != current {
            let (was, bytes) = (e.generation, e.bytes);
            e.generation = current;
            self.remove_bytes(was, bytes);
            self.add(current, bytes, budget);
        }
        Some(value)
    }

    fn add(&mut self, generation: u64, bytes: usize, budget: usize) {
        let in_it = self.bytes.entry(generation).or_insert(0);
        *in_it += bytes;
        if *in_it >= budget / GENERATIONS {
            self.current += 1;
        }
    }

    fn remove_bytes(&mut self, generation: u64, bytes: usize) {
        if let Some(b) = self.bytes.get_mut(&generation) {
            *b = b.saturating_sub(bytes);
            if *b == 0 {
                self.bytes.remove(&generation);
            }
        }
    }

    /// Drop the oldest generations, at least `need` bytes and at least a
    /// generation's share of the budget (so passes over the map are rare).
    fn evict(&mut self, need: usize, budget: usize) {
        let need = need.max(budget / GENERATIONS);
        let mut freed = 0;
        let mut through = None;
        while freed < need {
            let Some((g, b)) = self.bytes.pop_first() else {
                break;
            };
            freed += b;
            through = Some(g);
        }
        let Some(through) = through else {
            return;
        };
        self.map.retain(|_, e| e.generation > through);
        self.held = self.held.saturating_sub(freed);
        if self.current <= through {
            self.current = through + 1;
        }
    }

    /// What the entries hold, by [`entry_bytes`].
    #[cfg(test)]
    fn held_bytes(&self) -> usize {
        self.held
    }
}

/// What an entry costs: its value, the map's slot and the `Arc`'s counts.
fn entry_bytes<V: Footprint>(value: &V) -> usize {
    value.footprint() + std::mem::size_of::<(ContentId, Entry<V>)>() + 16
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
        ids.iter().map(|id| g.get(id, self.budget)).collect()
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

    fn held(cache: &SortKeyCache) -> usize {
        cache.inner.lock().map(|g| g.held_bytes()).unwrap_or(0)
    }

    /// The entries of one mailbox that take most of the budget are all
    /// still there when it is read again. (With two maps rotated at half
    /// the budget, the first six of these were gone.)
    #[test]
    fn a_mailbox_of_most_of_the_budget_stays_whole() {
        let one = entry_bytes(&*keys("s"));
        let cache = SortKeyCache::new((16 * one) as u64);
        let ids: Vec<ContentId> = (1..=14).map(id).collect();
        cache.insert_many(ids.iter().map(|&i| (i, keys("s"))));
        for _ in 0..3 {
            let got = cache.get_many(&ids);
            assert!(got.iter().all(|k| k.is_some()));
        }
        assert!(held(&cache) <= 16 * one);
    }

    /// Past the budget, what was used least lately goes first, and no
    /// more than the budget is ever held.
    #[test]
    fn forgets_the_least_recently_used_within_the_budget() {
        let one = entry_bytes(&*keys("s"));
        let cache = SortKeyCache::new((16 * one) as u64);
        cache.insert_many((1..=16).map(|n| (id(n), keys("s"))));
        assert_eq!(held(&cache), 16 * one);
        // 1-4 are read again: now the most recently used.
        assert!(
            cache
                .get_many(&[id(1), id(2), id(3), id(4)])
                .iter()
                .all(|k| k.is_some())
        );
        for n in 17..=20 {
            cache.insert_many([(id(n), keys("s"))]);
            assert!(held(&cache) <= 16 * one);
        }
        let got = cache.get_many(&(1..=20).map(id).collect::<Vec<_>>());
        let kept: Vec<u8> = (1..=20u8)
            .filter(|&n| got[n as usize - 1].is_some())
            .collect();
        assert!(kept.starts_with(&[1, 2, 3, 4]), "{kept:?}");
        assert!(kept.ends_with(&[17, 18, 19, 20]), "{kept:?}");
        assert!(!kept.contains(&5) && !kept.contains(&8), "{kept:?}");
        assert!(kept.contains(&16), "{kept:?}");
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
