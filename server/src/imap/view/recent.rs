//! The messages that are \Recent for one session (RFC 3501 §2.3.2), as
//! ranges of UIDs: the first SELECT of a mailbox of 1,000,000 new messages
//! claims them all, and a set of UIDs would hold each (10 MB).

use cove_store::Uid;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recent {
    /// Disjoint, ascending, inclusive; UIDs in them the view does not have
    /// are never asked about.
    ranges: Vec<(Uid, Uid)>,
    /// Messages of the view in `ranges`.
    count: usize,
}

impl Recent {
    /// The UIDs from `first` to `last` of which the view holds `count`.
    pub fn range(first: Uid, last: Uid, count: usize) -> Recent {
        if count == 0 || first > last {
            return Recent::default();
        }
        Recent {
            ranges: vec![(first, last)],
            count,
        }
    }

    pub fn contains(&self, uid: &Uid) -> bool {
        let i = self.ranges.partition_point(|(_, hi)| hi < uid);
        self.ranges.get(i).is_some_and(|(lo, _)| lo <= uid)
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// A message of the view becomes recent.
    pub fn insert(&mut self, uid: Uid) {
        if self.contains(&uid) {
            return;
        }
        self.count += 1;
        let i = self.ranges.partition_point(|(_, hi)| *hi < uid);
        let joins_before = i > 0 && self.ranges[i - 1].1.checked_add(1) == Some(uid);
        let joins_after = self
            .ranges
            .get(i)
            .is_some_and(|(lo, _)| uid.checked_add(1) == Some(*lo));
        match (joins_before, joins_after) {
            (true, true) => {
                self.ranges[i - 1].1 = self.ranges[i].1;
                self.ranges.remove(i);
            }
            (true, false) => self.ranges[i - 1].1 = uid,
            (false, true) => self.ranges[i].0 = uid,
            (false, false) => self.ranges.insert(i, (uid, uid)),
        }
    }

    /// A message of the view is gone.
    pub fn remove(&mut self, uid: Uid) {
        if !self.contains(&uid) {
            return;
        }
        self.count -= 1;
        let i = self.ranges.partition_point(|(_, hi)| *hi < uid);
        let (lo, hi) = self.ranges[i];
        match (lo == uid, hi == uid) {
            (true, true) => {
                self.ranges.remove(i);
            }
            (true, false) => self.ranges[i].0 = uid + 1,
            (false, true) => self.ranges[i].1 = uid - 1,
            (false, false) => {
                self.ranges[i].1 = uid - 1;
                self.ranges.insert(i + 1, (uid + 1, hi));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn matches_a_set_of_uids() {
        let mut set: BTreeSet<Uid> = (10..=50).collect();
        let mut recent = Recent::range(10, 50, 41);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let uid = (seed % 80) as Uid + 1;
            if seed & 1 << 40 == 0 {
                set.insert(uid);
                recent.insert(uid);
            } else {
                set.remove(&uid);
                recent.remove(uid);
            }
            assert_eq!(recent.len(), set.len());
            for u in 0..=82 {
                assert_eq!(recent.contains(&u), set.contains(&u), "uid {u}");
            }
        }
        assert_eq!(Recent::range(5, 4, 0), Recent::default());
    }
}
