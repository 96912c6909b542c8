//! Sorted orders of whole mailboxes, kept between SORT commands and shared
//! by every session of the server ([`SortOrders`]), each updated by what
//! changed since it was made ([`Order::sync`]): a repeated SORT is a walk
//! over a ready order, not a sort (issue 15).
//!
//! Why: a warm `SORT (SUBJECT)` of 100,000 messages took 163 ms against
//! Dovecot's 110 ms (2026-12-07): every command looked 100,000 prepared
//! keys up in the shared key memory and sorted them again, comparing
//! strings scattered over the heap. Dovecot answers from its sort index.
//!
//! What an order is: the messages of one mailbox (by its
//! [`SnapshotKey`]: account, mailbox, UIDVALIDITY) as `(UID, content id)`
//! ascending by UID, and the same messages sorted by one list of criteria,
//! ties by UID (mailbox order, RFC 5256 §3). A message's keys depend only
//! on its content and its INTERNALDATE and size, which never change for a
//! UID; so the order of a set of UIDs is the order of any of its subsets
//! restricted to them, and a mailbox that changed needs only its expunged
//! messages dropped and its new ones merged in. A UID whose content id is
//! not the one the order holds (never in IMAP; guarded all the same) is
//! dropped and merged in again.
//!
//! Bounded by a budget (`[imap] sort_order_cache_bytes`): an order costs
//! its two vectors and the prepared keys it holds ([`Order::bytes`]); the
//! least recently used orders go first, and one bigger than the budget is
//! not kept. A budget of 0 keeps none (every SORT sorts).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Mutex;

use cove_store::{ContentId, Uid};

use super::sort::{self, Candidate, SortCriterion};
use super::view::SnapshotKey;

/// Which order: the mailbox and the criteria.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderKey {
    pub mailbox: SnapshotKey,
    pub criteria: Vec<SortCriterion>,
}

/// One mailbox's messages in the order of one list of criteria.
#[derive(Debug, Default)]
pub struct Order {
    /// The messages it holds, ascending by UID, with their content.
    members: Vec<(Uid, ContentId)>,
    /// The same messages in sort order ([`Candidate::uid`]: the UID).
    sorted: Vec<Candidate>,
    /// What the prepared keys of `sorted` hold ([`sort::SortKeys::footprint`]).
    key_bytes: usize,
}

/// What an order lacks and holds too much of, against the mailbox now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// UIDs to drop (expunged, or another content), ascending.
    pub gone: Vec<Uid>,
    /// Positions (in the mailbox given to [`Order::changes`]) of the
    /// messages to merge in.
    pub arrived: Vec<usize>,
}

impl Order {
    /// The order of `messages` (each with its content id;
    /// [`Candidate::uid`]: the UID). The server makes its orders by
    /// [`Order::sync`] from an empty one.
    #[cfg(test)]
    pub fn new(messages: Vec<(ContentId, Candidate)>, criteria: &[SortCriterion]) -> Order {
        let mut order = Order::default();
        order.update(&[], messages, criteria);
        order
    }

    /// How many messages it holds.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Compare with the mailbox now (`now`: `(UID, content id)` ascending
    /// by UID): one walk over both.
    pub fn changes(&self, now: impl IntoIterator<Item = (Uid, ContentId)>) -> Changes {
        let mut changes = Changes::default();
        let mut held = self.members.iter().peekable();
        for (i, (uid, content)) in now.into_iter().enumerate() {
            while let Some(&&(u, _)) = held.peek()
                && u < uid
            {
                changes.gone.push(u);
                held.next();
            }
            match held.peek() {
                Some(&&(u, c)) if u == uid => {
                    held.next();
                    if c != content {
                        changes.gone.push(u);
                        changes.arrived.push(i);
                    }
                }
                _ => changes.arrived.push(i),
            }
        }
        changes.gone.extend(held.map(|&(u, _)| u));
        changes
    }

    /// Drop the messages `gone` names (ascending UIDs) and merge `arrived`
    /// in (each with its content id; any order): one walk over the order.
    pub fn update(
        &mut self,
        gone: &[Uid],
        mut arrived: Vec<(ContentId, Candidate)>,
        criteria: &[SortCriterion],
    ) {
        if !gone.is_empty() {
            let is_gone = |uid: &Uid| gone.binary_search(uid).is_ok();
            self.members.retain(|(u, _)| !is_gone(u));
            let mut freed = 0;
            self.sorted.retain(|c| {
                let keep = !is_gone(&c.uid);
                if !keep {
                    freed += c.keys.footprint();
                }
                keep
            });
            self.key_bytes = self.key_bytes.saturating_sub(freed);
        }
        if arrived.is_empty() {
            return;
        }
        arrived.sort_unstable_by_key(|(_, c)| c.uid);
        let members = std::mem::take(&mut self.members);
        self.members = merge_by(
            members,
            arrived.iter().map(|(id, c)| (c.uid, *id)),
            |a, b| a.0.cmp(&b.0),
        );
        let arrived: Vec<Candidate> = arrived.into_iter().map(|(_, c)| c).collect();
        self.key_bytes += arrived.iter().map(|c| c.keys.footprint()).sum::<usize>();
        // In UID order, `sort` breaks ties by UID, as `compare` does. The
        // candidates are moved into their places, not cloned (a clone and
        // a drop per message: two more passes over scattered keys).
        let places = sort::sort(&arrived, criteria);
        let mut slots: Vec<Option<Candidate>> = arrived.into_iter().map(Some).collect();
        let new: Vec<Candidate> = places.into_iter().filter_map(|i| slots[i].take()).collect();
        let sorted = std::mem::take(&mut self.sorted);
        self.sorted = merge_by(sorted, new, |a, b| sort::compare(a, b, criteria));
    }

    /// Bring it up to the mailbox now: `now` as for [`Order::changes`],
    /// `candidates` making the candidates of the given positions of it
    /// (`None`: they could not all be made, and the order is not usable).
    pub fn sync<E>(
        &mut self,
        now: impl IntoIterator<Item = (Uid, ContentId)>,
        criteria: &[SortCriterion],
        candidates: impl FnOnce(&[usize]) -> Result<Option<Vec<(ContentId, Candidate)>>, E>,
    ) -> Result<bool, E> {
        let changes = self.changes(now);
        let arrived = if changes.arrived.is_empty() {
            Vec::new()
        } else {
            match candidates(&changes.arrived)? {
                Some(c) => c,
                None => return Ok(false),
            }
        };
        self.update(&changes.gone, arrived, criteria);
        Ok(true)
    }

    /// The messages in sort order.
    pub fn sorted(&self) -> &[Candidate] {
        &self.sorted
    }

    /// What it holds in memory, roughly (for the budget).
    pub fn bytes(&self) -> usize {
        self.members.capacity() * std::mem::size_of::<(Uid, ContentId)>()
            + self.sorted.capacity() * std::mem::size_of::<Candidate>()
            + self.key_bytes
    }
}

/// `a` and `b` (each ascending by `cmp`) merged, ascending.
fn merge_by<T>(
    a: Vec<T>,
    b: impl IntoIterator<Item = T>,
    cmp: impl Fn(&T, &T) -> Ordering,
) -> Vec<T> {
    let mut b = b.into_iter().peekable();
    let mut out = Vec::with_capacity(a.len() + b.size_hint().0);
    for x in a {
        while let Some(y) = b.next_if(|y| cmp(y, &x) == Ordering::Less) {
            out.push(y);
        }
        out.push(x);
    }
    out.extend(b);
    out
}

/// The kept orders, shared by every session (see the module comment).
pub struct SortOrders {
    budget: usize,
    inner: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    map: HashMap<OrderKey, (Order, u64)>,
    /// Bumped at every use: an order's is when it was last put back.
    tick: u64,
    held: usize,
}

impl SortOrders {
    pub fn new(budget_bytes: u64) -> SortOrders {
        SortOrders {
            budget: usize::try_from(budget_bytes).unwrap_or(usize::MAX),
            inner: Mutex::default(),
        }
    }

    /// The order kept for `key`, taken out (a session updates it alone and
    /// puts it back; another one asking meanwhile sorts on its own).
    pub fn take(&self, key: &OrderKey) -> Option<Order> {
        let mut kept = self.inner.lock().ok()?;
        let (order, _) = kept.map.remove(key)?;
        kept.held = kept.held.saturating_sub(order.bytes());
        Some(order)
    }

    /// Keep `order` for `key` (replacing one kept meanwhile), dropping the
    /// least recently used orders to stay within the budget.
    pub fn put(&self, key: OrderKey, order: Order) {
        let bytes = order.bytes();
        if bytes > self.budget {
            return;
        }
        let Ok(mut kept) = self.inner.lock() else {
            return;
        };
        if let Some((old, _)) = kept.map.remove(&key) {
            kept.held = kept.held.saturating_sub(old.bytes());
        }
        while kept.held + bytes > self.budget {
            let Some(oldest) = kept
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((old, _)) = kept.map.remove(&oldest) {
                kept.held = kept.held.saturating_sub(old.bytes());
            }
        }
        kept.tick += 1;
        let tick = kept.tick;
        kept.held += bytes;
        kept.map.insert(key, (order, tick));
    }

    /// What the kept orders hold, by [`Order::bytes`].
    #[cfg(test)]
    fn held(&self) -> usize {
        self.inner.lock().map(|k| k.held).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::imap::sort::{SortKey, SortKeys};

    fn id(n: u32) -> ContentId {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&n.to_be_bytes());
        ContentId(b)
    }

    /// Message `uid` with a subject, a sent date and a size drawn from
    /// small sets (many ties), its content id `content`.
    fn message(uid: Uid, content: u32, subject: u8, date: u8) -> (ContentId, Candidate) {
        let keys = SortKeys {
            subject: format!("s{}", subject % 4).into_boxed_str(),
            from: format!("f{}", subject % 3).into_boxed_str(),
            sent_date: (!date.is_multiple_of(5)).then_some(i64::from(date % 7)),
            ..SortKeys::default()
        };
        let c = Candidate {
            uid,
            internal_date: i64::from(content % 6),
            size: u64::from(subject % 5),
            keys: Arc::new(keys),
        };
        (id(content), c)
    }

    /// The UIDs `sort::sort` gives for `messages` (ascending by UID).
    fn sorted_afresh(messages: &[(ContentId, Candidate)], criteria: &[SortCriterion]) -> Vec<Uid> {
        let c: Vec<Candidate> = messages.iter().map(|(_, c)| c.clone()).collect();
        sort::sort(&c, criteria)
            .into_iter()
            .map(|i| c[i].uid)
            .collect()
    }

    fn uids(order: &Order) -> Vec<Uid> {
        order.sorted().iter().map(|c| c.uid).collect()
    }

    fn criteria() -> impl Strategy<Value = Vec<SortCriterion>> {
        let key = prop_oneof![
            Just(SortKey::Arrival),
            Just(SortKey::Date),
            Just(SortKey::Subject),
            Just(SortKey::From),
            Just(SortKey::Size),
        ];
        prop::collection::vec(
            (key, any::<bool>()).prop_map(|(key, reverse)| SortCriterion { key, reverse }),
            1..3,
        )
    }

    proptest! {
        // After any run of arrivals, expunges and replaced contents, the
        // kept order synced to the mailbox is the fresh sort of it.
        #[test]
        fn synced_order_is_a_fresh_sort(
            criteria in criteria(),
            steps in prop::collection::vec(
                (prop::collection::vec((any::<u8>(), any::<u8>()), 0..20),
                 prop::collection::vec(any::<u16>(), 0..8),
                 any::<u16>()),
                1..8,
            ),
        ) {
            let mut next_uid = 1;
            let mut next_content = 100_000;
            let mut mailbox: Vec<(ContentId, Candidate)> = Vec::new();
            let mut order: Option<Order> = None;
            for (new, expunge, replace) in steps {
                for (subject, date) in new {
                    mailbox.push(message(next_uid, next_uid, subject, date));
                    next_uid += 1;
                }
                for e in expunge {
                    if !mailbox.is_empty() {
                        mailbox.remove(usize::from(e) % mailbox.len());
                    }
                }
                // Another content under a UID: dropped and merged again.
                if !mailbox.is_empty() {
                    let i = usize::from(replace) % mailbox.len();
                    let uid = mailbox[i].1.uid;
                    // A content's keys are its own: a new content id.
                    next_content += 1;
                    mailbox[i] = message(uid, next_content, replace as u8, (replace >> 8) as u8);
                }
                let o = order.get_or_insert_with(|| Order::new(Vec::new(), &criteria));
                let now = mailbox.iter().map(|(c, m)| (m.uid, *c));
                let synced = o.sync(now, &criteria, |at: &[usize]| {
                    Ok::<_, ()>(Some(at.iter().map(|&i| mailbox[i].clone()).collect()))
                });
                prop_assert_eq!(synced, Ok(true));
                prop_assert_eq!(uids(o), sorted_afresh(&mailbox, &criteria));
                prop_assert_eq!(o.len(), mailbox.len());
                prop_assert_eq!(o.changes(mailbox.iter().map(|(c, m)| (m.uid, *c))), Changes::default());
                let fresh = Order::new(mailbox.clone(), &criteria);
                prop_assert_eq!(uids(&fresh), uids(o));
            }
        }
    }

    #[test]
    fn changes_name_the_gone_and_the_arrived() {
        let by_subject = [SortCriterion {
            key: SortKey::Subject,
            reverse: false,
        }];
        let order = Order::new(
            vec![
                message(1, 1, 3, 0),
                message(2, 2, 1, 0),
                message(4, 4, 2, 0),
            ],
            &by_subject,
        );
        assert_eq!(uids(&order), [2, 4, 1]);
        // UID 1 expunged, 4 with another content, 5 and 6 new.
        let now = [(2, id(2)), (4, id(44)), (5, id(5)), (6, id(6))];
        assert_eq!(
            order.changes(now),
            Changes {
                gone: vec![1, 4],
                arrived: vec![1, 2, 3],
            }
        );
        // An order that cannot get its new messages' keys is not used.
        let mut o = order;
        assert_eq!(o.sync(now, &by_subject, |_| Ok::<_, ()>(None)), Ok(false));
    }

    #[test]
    fn orders_stay_within_the_budget_least_recently_used_first() {
        let key = |n: u32| OrderKey {
            mailbox: SnapshotKey {
                email: "u@x".into(),
                mailbox: cove_store::MailboxGuid([0; 16]),
                uidvalidity: n,
            },
            criteria: Vec::new(),
        };
        let order = || Order::new((1..=100).map(|u| message(u, u, 1, 1)).collect(), &[]);
        let one = order().bytes();
        let orders = SortOrders::new((one * 2) as u64);
        orders.put(key(1), order());
        orders.put(key(2), order());
        assert_eq!(orders.held(), 2 * one);
        // Taking 1 and putting it back makes 2 the least recently used.
        let o = orders.take(&key(1)).expect("kept");
        assert_eq!(orders.held(), one);
        orders.put(key(1), o);
        orders.put(key(3), order());
        assert_eq!(orders.held(), 2 * one);
        assert!(orders.take(&key(2)).is_none());
        assert!(orders.take(&key(1)).is_some());
        assert!(orders.take(&key(3)).is_some());
        // Nothing kept with no budget.
        let none = SortOrders::new(0);
        none.put(key(1), order());
        assert!(none.take(&key(1)).is_none());
    }
}
