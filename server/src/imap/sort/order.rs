//! RFC 5256 §3 SORT keys and RFC 5957 §3 DISPLAYFROM / DISPLAYTO.
//!
//! Every key compares a value prepared once per content (base subjects
//! and case-mapped addresses, `prepared.rs`), borrowed at each comparison. Messages
//! equal on every criterion keep their mailbox order (RFC 5256 §3: "sorted
//! according to the order in which they appear in the mailbox"), which is
//! also why REVERSE never reverses that last tie-break.

use std::cmp::Ordering;

use super::Candidate;

/// A sort key (RFC 5256 §3, RFC 5957 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SortKey {
    /// INTERNALDATE.
    Arrival,
    /// The addr-mailbox of the first Cc address.
    Cc,
    /// The sent date (INTERNALDATE when there is none), in UTC.
    Date,
    /// The addr-mailbox of the first From address.
    From,
    /// RFC822.SIZE.
    Size,
    /// The base subject (§2.1).
    Subject,
    /// The addr-mailbox of the first To address.
    To,
    /// RFC 5957: the display name of the first From address, or its
    /// addr-spec when it has none.
    DisplayFrom,
    /// RFC 5957: the same for the first To address.
    DisplayTo,
}

/// One sort criterion: a key, with REVERSE or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SortCriterion {
    pub key: SortKey,
    pub reverse: bool,
}

/// The value a key compares, borrowed from the prepared keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Value<'a> {
    Number(i64),
    Size(u64),
    Text(&'a str),
}

impl SortKey {
    fn value(self, m: &Candidate) -> Value<'_> {
        let k = &*m.keys;
        match self {
            SortKey::Arrival => Value::Number(m.internal_date),
            SortKey::Date => Value::Number(m.sort_date()),
            SortKey::Size => Value::Size(m.size),
            SortKey::Subject => Value::Text(&k.subject),
            SortKey::Cc => Value::Text(&k.cc),
            SortKey::From => Value::Text(&k.from),
            SortKey::To => Value::Text(&k.to),
            SortKey::DisplayFrom => Value::Text(&k.display_from),
            SortKey::DisplayTo => Value::Text(&k.display_to),
        }
    }
}

/// RFC 5256 §3 SORT: the indices of `messages` (given in mailbox order) in
/// the order the criteria give.
///
/// The compared values are gathered first, one contiguous vector per
/// criterion: comparing through each candidate's shared keys would chase a
/// pointer to a random place in memory twice per comparison (on 100,000
/// messages that was a third of a warm `SORT (DATE)`).
///
/// Ties end at the mailbox order, so the order is total and an unstable
/// sort gives the stable sort's answer, faster; with one criterion (the
/// usual SORT) each value sits beside its index, so a comparison reads one
/// place in memory.
pub fn sort(messages: &[Candidate], criteria: &[SortCriterion]) -> Vec<usize> {
    if let [criterion] = criteria {
        let mut pairs: Vec<(Value<'_>, usize)> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| (criterion.key.value(m), i))
            .collect();
        if criterion.reverse {
            pairs.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        } else {
            pairs.sort_unstable();
        }
        return pairs.into_iter().map(|(_, i)| i).collect();
    }
    let values: Vec<Vec<Value<'_>>> = criteria
        .iter()
        .map(|c| messages.iter().map(|m| c.key.value(m)).collect())
        .collect();
    let mut order: Vec<usize> = (0..messages.len()).collect();
    order.sort_unstable_by(|&a, &b| {
        by_criteria(criteria, |i, _| values[i][a].cmp(&values[i][b])).then(a.cmp(&b))
    });
    order
}

/// The first of `criteria`'s orderings (`ord_of` the criterion's index and
/// itself) that is not equal, reversed where the criterion asks; `Equal`
/// if all are.
fn by_criteria(
    criteria: &[SortCriterion],
    mut ord_of: impl FnMut(usize, &SortCriterion) -> Ordering,
) -> Ordering {
    for (i, criterion) in criteria.iter().enumerate() {
        let ord = ord_of(i, criterion);
        let ord = if criterion.reverse {
            ord.reverse()
        } else {
            ord
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

/// How `a` and `b` compare under `criteria`, ties broken by
/// [`Candidate::uid`] ascending: [`sort`]'s order when the candidates are
/// given in mailbox order and `uid` is their UID (mailbox order is UID
/// order). A kept order merges new messages in with it
/// (`imap/sort_order.rs`).
pub fn compare(a: &Candidate, b: &Candidate, criteria: &[SortCriterion]) -> Ordering {
    by_criteria(criteria, |_, c| c.key.value(a).cmp(&c.key.value(b))).then(a.uid.cmp(&b.uid))
}

#[cfg(test)]
mod tests {
    use super::super::{Address, MessageKeys, prepared::SortKeys};
    use super::*;

    fn addr(name: &str, mailbox: &str, host: &str) -> Option<Address> {
        Some(Address {
            display_name: name.into(),
            mailbox: mailbox.into(),
            host: host.into(),
        })
    }

    fn by(key: SortKey) -> SortCriterion {
        SortCriterion {
            key,
            reverse: false,
        }
    }

    fn rev(key: SortKey) -> SortCriterion {
        SortCriterion { key, reverse: true }
    }

    /// Four messages (indices 0..4 are sequence numbers 1..4).
    fn mailbox() -> Vec<MessageKeys> {
        vec![
            MessageKeys {
                uid: 10,
                internal_date: 400,
                sent_date: Some(100),
                size: 30,
                subject: "Re: [list] Zebra".into(),
                from: addr("Zed", "zed", "z.example"),
                to: addr("", "Bob", "b.example"),
                cc: None,
                ..MessageKeys::default()
            },
            MessageKeys {
                uid: 11,
                internal_date: 300,
                sent_date: None,
                size: 10,
                subject: "apple".into(),
                from: addr("", "amy", "a.example"),
                to: addr("Carol", "carol", "c.example"),
                cc: addr("", "x", "x.example"),
                ..MessageKeys::default()
            },
            MessageKeys {
                uid: 12,
                internal_date: 200,
                sent_date: Some(350),
                size: 20,
                subject: "Apple (fwd)".into(),
                from: addr("Ann", "YOLANDA", "y.example"),
                to: None,
                cc: addr("", "a", "x.example"),
                ..MessageKeys::default()
            },
            MessageKeys {
                uid: 13,
                internal_date: 100,
                sent_date: Some(100),
                size: 20,
                subject: "zebra".into(),
                from: None,
                to: addr("", "alice", ""),
                cc: None,
                ..MessageKeys::default()
            },
        ]
    }

    fn sorted(criteria: &[SortCriterion]) -> Vec<usize> {
        let candidates: Vec<Candidate> = mailbox().iter().map(Candidate::from).collect();
        sort(&candidates, criteria)
    }

    #[test]
    fn arrival_date_and_size() {
        assert_eq!(sorted(&[by(SortKey::Arrival)]), [3, 2, 1, 0]);
        // Date: 0 and 3 sent at 100 (tie: mailbox order), 1 has none and
        // sorts by its INTERNALDATE 300, 2 at 350.
        assert_eq!(sorted(&[by(SortKey::Date)]), [0, 3, 1, 2]);
        // Equal sizes keep mailbox order, also under REVERSE.
        assert_eq!(sorted(&[by(SortKey::Size)]), [1, 2, 3, 0]);
        assert_eq!(sorted(&[rev(SortKey::Size)]), [0, 2, 3, 1]);
    }

    #[test]
    fn subject_uses_the_base_subject_case_insensitively() {
        // "apple" = "Apple (fwd)", "Re: [list] Zebra" = "zebra".
        assert_eq!(sorted(&[by(SortKey::Subject)]), [1, 2, 0, 3]);
        assert_eq!(
            sorted(&[by(SortKey::Subject), rev(SortKey::Date)]),
            [2, 1, 0, 3]
        );
        assert_eq!(
            sorted(&[rev(SortKey::Subject), by(SortKey::Arrival)]),
            [3, 0, 2, 1]
        );
    }

    #[test]
    fn address_keys_use_the_mailbox_and_missing_is_empty() {
        // From: amy, yolanda, zed; no From sorts first.
        assert_eq!(sorted(&[by(SortKey::From)]), [3, 1, 2, 0]);
        // To: alice, bob, carol; none first.
        assert_eq!(sorted(&[by(SortKey::To)]), [2, 3, 0, 1]);
        // Cc: a, x; the two without tie in mailbox order.
        assert_eq!(sorted(&[by(SortKey::Cc)]), [0, 3, 2, 1]);
    }

    #[test]
    fn display_keys_prefer_the_display_name() {
        // DISPLAYFROM: "", amy@a.example, Ann, Zed.
        assert_eq!(sorted(&[by(SortKey::DisplayFrom)]), [3, 1, 2, 0]);
        // DISPLAYTO: "", alice, bob@b.example, Carol.
        assert_eq!(sorted(&[by(SortKey::DisplayTo)]), [2, 3, 0, 1]);
        let blank = MessageKeys {
            from: addr("  ", "m", "h"),
            ..MessageKeys::default()
        };
        assert_eq!(&*SortKeys::prepare(&blank).display_from, "m@h");
    }

    #[test]
    fn no_criteria_and_no_messages() {
        assert_eq!(sorted(&[]), [0, 1, 2, 3]);
        assert!(sort(&[], &[by(SortKey::Date)]).is_empty());
    }
}
