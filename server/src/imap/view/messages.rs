//! The messages of a view, by sequence number: one immutable snapshot of
//! the mailbox, shared by every session that selected it
//! ([`Snapshots`](super::Snapshots)), and this session's own differences
//! from it (messages expunged, flags changed, messages arrived). A
//! mailbox of 1,000,000 messages costs its sessions one snapshot (80 MB),
//! not 80 MB each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use cove_store::{ModSeq, Uid};

use super::ViewMessage;

/// The mailbox as the index had it: rows by UID.
#[derive(Debug)]
pub struct Snapshot {
    rows: Box<[ViewMessage]>,
    /// Every change of the account up to this modseq is in `rows` (later
    /// ones may be too): what changed after it is read from the index.
    modseq: ModSeq,
    /// The highest modseq of a row.
    max_modseq: ModSeq,
}

impl Snapshot {
    /// `rows` ascending by UID, holding every change up to `modseq`.
    pub fn new(rows: Vec<ViewMessage>, modseq: ModSeq) -> Snapshot {
        let max_modseq = rows.iter().map(|m| m.modseq).max().unwrap_or(0);
        Snapshot {
            rows: rows.into_boxed_slice(),
            modseq,
            max_modseq,
        }
    }

    pub fn modseq(&self) -> ModSeq {
        self.modseq
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }
}

/// Which mailbox a snapshot is of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SnapshotKey {
    pub email: String,
    pub mailbox: cove_store::MailboxGuid,
    pub uidvalidity: u32,
}

/// The newest snapshot of each selected mailbox of this server, while a
/// view holds it: a session that selects a mailbox starts from it and reads
/// only what changed since.
#[derive(Debug, Default)]
pub struct Snapshots {
    map: Mutex<HashMap<SnapshotKey, Weak<Snapshot>>>,
}

impl Snapshots {
    pub fn get(&self, key: &SnapshotKey) -> Option<Arc<Snapshot>> {
        self.map.lock().ok()?.get(key).and_then(Weak::upgrade)
    }

    /// Make `snapshot` the one new views of its mailbox start from.
    pub fn put(&self, key: SnapshotKey, snapshot: &Arc<Snapshot>) {
        if let Ok(mut map) = self.map.lock() {
            // Forget mailboxes no view holds any more (bounded by the
            // mailboxes selected at once).
            if map.len() >= 64 && map.len().is_power_of_two() {
                map.retain(|_, s| s.strong_count() > 0);
            }
            map.insert(key, Arc::downgrade(snapshot));
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map
            .lock()
            .map(|m| m.values().filter(|s| s.strong_count() > 0).count())
            .unwrap_or(0)
    }
}

/// A view's messages: the shared snapshot with this view's differences.
/// Indexing and iteration are in sequence-number order (index = seq - 1),
/// like the `Vec` it replaces.
#[derive(Debug, Clone)]
pub struct Messages {
    base: Arc<Snapshot>,
    /// Indices into `base.rows` of messages this view no longer has,
    /// ascending.
    gone: Vec<u32>,
    /// This view's state of base rows that changed, by index into
    /// `base.rows`.
    changed: HashMap<u32, ViewMessage>,
    /// Messages above the last UID of `base`, ascending.
    tail: Vec<ViewMessage>,
}

impl Messages {
    pub fn on(base: Arc<Snapshot>) -> Messages {
        Messages {
            base,
            gone: Vec::new(),
            changed: HashMap::new(),
            tail: Vec::new(),
        }
    }

    /// Only the rows, no snapshot to share (tests, small mailboxes).
    #[cfg(test)]
    pub fn from_rows(rows: Vec<ViewMessage>) -> Messages {
        Messages::on(Arc::new(Snapshot::new(rows, 0)))
    }

    /// The snapshot this view started from is still the one it shares
    /// (no private copy was made).
    pub fn shares(&self, snapshot: &Arc<Snapshot>) -> bool {
        Arc::ptr_eq(&self.base, snapshot)
    }

    pub fn len(&self) -> usize {
        self.live_base() + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages of the base this view still has.
    fn live_base(&self) -> usize {
        self.base.rows.len() - self.gone.len()
    }

    /// The index into `base.rows` of the view's `i`th message, `i` below
    /// [`live_base`](Self::live_base): `i` plus the number of gone rows
    /// before it. `gone[j] - j` (live rows before the `j`th gone one) never
    /// decreases, so that number is a binary search.
    fn base_index(&self, i: usize) -> usize {
        if self.gone.is_empty() {
            return i;
        }
        let (mut lo, mut hi) = (0usize, self.gone.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.gone[mid] as usize - mid <= i {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        i + lo
    }

    /// The view's position of a base row that is not gone.
    fn position_of_base(&self, b: usize) -> usize {
        b - self.gone.partition_point(|g| (*g as usize) < b)
    }

    fn base_row(&self, b: usize) -> &ViewMessage {
        if !self.changed.is_empty()
            && let Some(m) = self.changed.get(&(b as u32))
        {
            return m;
        }
        &self.base.rows[b]
    }

    pub fn get(&self, i: usize) -> Option<&ViewMessage> {
        let live = self.live_base();
        if i < live {
            Some(self.base_row(self.base_index(i)))
        } else {
            self.tail.get(i - live)
        }
    }

    pub fn last(&self) -> Option<&ViewMessage> {
        self.len().checked_sub(1).and_then(|i| self.get(i))
    }

    pub fn iter(&self) -> Iter<'_> {
        Iter {
            messages: self,
            base: 0,
            gone: 0,
            tail: 0,
        }
    }

    /// The position (0-based) of a UID.
    pub fn position(&self, uid: Uid) -> Option<usize> {
        if self.tail.first().is_some_and(|t| uid >= t.uid) {
            return self
                .tail
                .binary_search_by_key(&uid, |m| m.uid)
                .ok()
                .map(|j| self.live_base() + j);
        }
        let b = self.base.rows.binary_search_by_key(&uid, |m| m.uid).ok()?;
        if self.gone.binary_search(&(b as u32)).is_ok() {
            return None;
        }
        Some(self.position_of_base(b))
    }

    /// How many messages have a UID below `uid`.
    pub fn count_below(&self, uid: Uid) -> usize {
        let b = self.base.rows.partition_point(|m| m.uid < uid);
        let below = self.position_of_base(b);
        if b < self.base.rows.len() {
            below
        } else {
            below + self.tail.partition_point(|m| m.uid < uid)
        }
    }

    /// The highest modseq of a message of the view (or of one it had).
    pub fn max_modseq(&self) -> ModSeq {
        self.changed
            .values()
            .chain(self.tail.iter())
            .map(|m| m.modseq)
            .max()
            .unwrap_or(0)
            .max(self.base.max_modseq)
    }

    /// Replace the message at position `i` (same UID).
    pub fn set(&mut self, i: usize, m: ViewMessage) {
        let live = self.live_base();
        if i < live {
            let b = self.base_index(i);
            self.changed.insert(b as u32, m);
            self.compact_if_large();
        } else if let Some(t) = self.tail.get_mut(i - live) {
            *t = m;
        }
    }

    /// Replace the messages at positions `i` (same UIDs), ascending: one
    /// by one, or, when they are many, in one private copy (a STORE on
    /// the whole mailbox would otherwise fill the differences and copy
    /// the rows each time they outgrow a quarter of the snapshot).
    pub fn set_many(&mut self, changes: Vec<(usize, ViewMessage)>) {
        let own = self.gone.len() + self.changed.len() + self.tail.len() + changes.len();
        if own <= 4096 || own <= self.base.rows.len() / 4 {
            for (i, m) in changes {
                self.set(i, m);
            }
            return;
        }
        let mut rows = self.rows();
        for (i, m) in changes {
            if let Some(row) = rows.get_mut(i) {
                *row = m;
            }
        }
        *self = Messages::on(Arc::new(Snapshot::new(rows, self.base.modseq)));
    }

    /// Remove the message at position `i`.
    pub fn remove(&mut self, i: usize) {
        let live = self.live_base();
        if i < live {
            let b = self.base_index(i) as u32;
            self.changed.remove(&b);
            let at = self.gone.partition_point(|g| *g < b);
            self.gone.insert(at, b);
            self.compact_if_large();
        } else if i - live < self.tail.len() {
            self.tail.remove(i - live);
        }
    }

    /// Insert a message at position `i`, `count_below(m.uid)`.
    pub fn insert(&mut self, i: usize, m: ViewMessage) {
        let live = self.live_base();
        if i >= live && self.base.rows.last().is_none_or(|l| l.uid < m.uid) {
            // Above the base (new UIDs always are).
            self.tail.insert(i - live, m);
            self.compact_if_large();
        } else {
            // Where the base has (or had) rows: only a copy can hold it.
            let mut rows = self.rows();
            rows.insert(i, m);
            *self = Messages::on(Arc::new(Snapshot::new(rows, self.base.modseq)));
        }
    }

    /// With differences of more than a quarter of the snapshot, a private
    /// copy is smaller and faster (and all of it, when the view holds too
    /// much of its own).
    fn compact_if_large(&mut self) {
        let own = self.gone.len() + self.changed.len() + self.tail.len();
        if own > 4096 && own > self.base.rows.len() / 4 {
            self.compact();
        }
    }

    /// Make the view's messages a snapshot of their own.
    fn compact(&mut self) {
        *self = Messages::on(Arc::new(Snapshot::new(self.rows(), self.base.modseq)));
    }

    fn rows(&self) -> Vec<ViewMessage> {
        let mut rows = Vec::with_capacity(self.len() + 1);
        rows.extend(self.iter().cloned());
        rows
    }
}

impl std::ops::Index<usize> for Messages {
    type Output = ViewMessage;

    fn index(&self, i: usize) -> &ViewMessage {
        match self.get(i) {
            Some(m) => m,
            None => panic!("message index {i} out of range ({} messages)", self.len()),
        }
    }
}

impl<'a> IntoIterator for &'a Messages {
    type Item = &'a ViewMessage;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// The messages in sequence-number order.
pub struct Iter<'a> {
    messages: &'a Messages,
    /// Next base row.
    base: usize,
    /// Next entry of `gone`.
    gone: usize,
    /// Next tail message.
    tail: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a ViewMessage;

    fn next(&mut self) -> Option<&'a ViewMessage> {
        let m = self.messages;
        while self.base < m.base.rows.len() {
            let b = self.base;
            self.base += 1;
            if m.gone.get(self.gone).is_some_and(|g| *g as usize == b) {
                self.gone += 1;
                continue;
            }
            return Some(m.base_row(b));
        }
        let t = m.tail.get(self.tail)?;
        self.tail += 1;
        Some(t)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let m = self.messages;
        let left =
            (m.base.rows.len() - self.base) - (m.gone.len() - self.gone) + m.tail.len() - self.tail;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Iter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use cove_store::Flags;

    fn msg(uid: Uid, modseq: ModSeq) -> ViewMessage {
        ViewMessage {
            uid,
            flags: Flags::empty(),
            modseq,
            internal_date: 0,
            size: 0,
            content_id: cove_store::ContentId([0; 32]),
            keywords: Box::new([]),
        }
    }

    /// Many changes at once (a STORE on the whole mailbox) make one
    /// private copy, equal to the changes applied one by one; the shared
    /// snapshot stays as it was.
    #[test]
    fn set_many_equals_setting_one_by_one() {
        let rows: Vec<ViewMessage> = (1..=6000u32).map(|u| msg(u, 1)).collect();
        let snapshot = Arc::new(Snapshot::new(rows, 1));
        for changed in [10usize, 6000] {
            let mut one_by_one = Messages::on(snapshot.clone());
            one_by_one.remove(3);
            let mut at_once = one_by_one.clone();
            let changes: Vec<(usize, ViewMessage)> = (0..changed)
                .filter(|i| i % 7 != 0 && *i < one_by_one.len())
                .map(|i| (i, msg(one_by_one[i].uid, 9)))
                .collect();
            for (i, m) in changes.clone() {
                one_by_one.set(i, m);
            }
            at_once.set_many(changes);
            let a: Vec<ViewMessage> = at_once.iter().cloned().collect();
            let b: Vec<ViewMessage> = one_by_one.iter().cloned().collect();
            assert_eq!(a, b, "{changed} changes");
            assert!(snapshot.rows.iter().all(|m| m.modseq == 1));
        }
    }

    /// Random removals, changes and arrivals applied to `Messages` and to a
    /// plain `Vec` give the same sequence, positions and counts.
    #[test]
    fn behaves_as_a_vec_under_random_changes() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n.max(1) as u64) as usize
        };
        for round in 0..20 {
            let rows: Vec<ViewMessage> = (0..300u32).map(|i| msg(i * 2 + 1, 1)).collect();
            let mut vec = rows.clone();
            let snapshot = Arc::new(Snapshot::new(rows, 1));
            let mut messages = Messages::on(snapshot.clone());
            let mut uid_next = 700;
            for step in 0..400 {
                match next(4) {
                    0 if !vec.is_empty() => {
                        let i = next(vec.len());
                        vec.remove(i);
                        messages.remove(i);
                    }
                    1 if !vec.is_empty() => {
                        let i = next(vec.len());
                        let m = msg(vec[i].uid, step + 2);
                        vec[i] = m.clone();
                        messages.set(i, m);
                    }
                    2 => {
                        uid_next += 1 + next(3) as Uid;
                        let m = msg(uid_next, step + 2);
                        vec.push(m.clone());
                        messages.insert(messages.count_below(m.uid), m);
                    }
                    _ => {
                        // A UID below the last one where none is.
                        let uid = next(uid_next as usize) as Uid + 1;
                        if vec.binary_search_by_key(&uid, |m| m.uid).is_err() {
                            let at = vec.partition_point(|m| m.uid < uid);
                            vec.insert(at, msg(uid, step + 2));
                            assert_eq!(messages.count_below(uid), at);
                            messages.insert(at, msg(uid, step + 2));
                        }
                    }
                }
                assert_eq!(messages.len(), vec.len(), "round {round} step {step}");
                let probe = next(uid_next as usize + 2) as Uid;
                assert_eq!(
                    messages.position(probe),
                    vec.iter().position(|m| m.uid == probe)
                );
                assert_eq!(
                    messages.count_below(probe),
                    vec.partition_point(|m| m.uid < probe)
                );
                if !vec.is_empty() {
                    let i = next(vec.len());
                    assert_eq!(messages[i], vec[i]);
                }
            }
            let all: Vec<ViewMessage> = messages.iter().cloned().collect();
            assert_eq!(all, vec);
            assert_eq!(messages.iter().len(), vec.len());
            assert_eq!(
                messages.max_modseq(),
                vec.iter().map(|m| m.modseq).max().unwrap_or(0).max(1)
            );
            // The snapshot others share never changed.
            assert_eq!(snapshot.len(), 300);
            assert!(snapshot.rows.iter().all(|m| m.modseq == 1));
        }
    }
}
