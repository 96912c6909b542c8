//! LIST and LSUB patterns (RFC 3501 §6.3.8): `*` matches any run of
//! characters, `%` any run without the hierarchy delimiter (`.`), anything
//! else itself.
//!
//! The obvious matcher (try every split at each wildcard, recursively) is
//! exponential in the number of wildcards: `*a*a*a*a*b` against a
//! 200-character name took seconds, and a client chooses the pattern. Here
//! the pattern is compiled once into a Glushkov-style automaton whose states
//! are pattern positions, and a name is run through it with a bit set of
//! the live states: each name byte costs `pattern.len() / 64` word
//! operations, so a match is O(name × pattern / 64) whatever the pattern,
//! with no backtracking and no recursion. Runs of wildcards are folded first
//! (`**`, `*%`, `%*` are `*`; `%%` is `%`), which makes the ε-step of a
//! wildcard a single shift.
//!
//! Rejected: the greedy "remember the last `*`" matcher is linear for `*`
//! alone but wrong once `%` may not cross a delimiter; a DP table per name is
//! O(name × pattern) bytes of work without the 64× of the bit set.

const DELIMITER: u8 = b'.';

/// No mailbox name is longer: a Maildir++ folder is one directory entry
/// (`.` and the name), at most 255 bytes.
const LONGEST_NAME: usize = 255;

/// A compiled LIST pattern.
pub struct ListPattern {
    /// Number of pattern positions (the accepting state is `len`).
    len: usize,
    words: usize,
    /// Positions holding `*`.
    star: Vec<u64>,
    /// Positions holding `%`.
    percent: Vec<u64>,
    /// For each byte value, the positions holding that literal byte
    /// (`words` words per byte, 256 bytes).
    literal: Vec<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Item {
    Star,
    Percent,
    Byte(u8),
}

impl ListPattern {
    pub fn new(pattern: &[u8]) -> ListPattern {
        let mut items: Vec<Item> = Vec::new();
        let mut literals = 0;
        for &b in pattern {
            // Each literal takes one byte of the name: a pattern with more
            // of them than any name has bytes matches nothing, and its
            // automaton (a client may send megabytes) is never built.
            if literals > LONGEST_NAME {
                return ListPattern::new(b"");
            }
            let item = match b {
                b'*' => Item::Star,
                b'%' => Item::Percent,
                b => Item::Byte(b),
            };
            match (items.last_mut(), item) {
                (Some(last @ (Item::Star | Item::Percent)), Item::Star) => *last = Item::Star,
                (Some(Item::Star | Item::Percent), Item::Percent) => {}
                (_, Item::Byte(_)) => {
                    literals += 1;
                    items.push(item);
                }
                _ => items.push(item),
            }
        }
        let len = items.len();
        // One more bit for the accepting state.
        let words = (len + 1).div_ceil(64);
        let mut p = ListPattern {
            len,
            words,
            star: vec![0; words],
            percent: vec![0; words],
            literal: vec![0; words * 256],
        };
        for (i, item) in items.iter().enumerate() {
            let (w, bit) = (i / 64, 1u64 << (i % 64));
            match item {
                Item::Star => p.star[w] |= bit,
                Item::Percent => p.percent[w] |= bit,
                Item::Byte(b) => p.literal[usize::from(*b) * words + w] |= bit,
            }
        }
        p
    }

    /// Does `name` match?
    pub fn matches(&self, name: &[u8]) -> bool {
        let mut live = vec![0u64; self.words];
        live[0] = 1;
        self.close(&mut live);
        let mut next = vec![0u64; self.words];
        for &c in name {
            let lit = &self.literal[usize::from(c) * self.words..][..self.words];
            let mut carry = 0u64;
            let mut any = 0u64;
            for w in 0..self.words {
                // A literal that matches moves on one position; a wildcard
                // stays (consuming `c`), `%` unless `c` is the delimiter.
                let moved = live[w] & lit[w];
                let stay =
                    live[w] & (self.star[w] | if c == DELIMITER { 0 } else { self.percent[w] });
                next[w] = (moved << 1) | carry | stay;
                carry = moved >> 63;
                any |= next[w];
            }
            if any == 0 {
                return false;
            }
            std::mem::swap(&mut live, &mut next);
            self.close(&mut live);
        }
        live[self.len / 64] & (1u64 << (self.len % 64)) != 0
    }

    /// The ε-step: a wildcard may match nothing, so its successor is live
    /// too. After folding no two wildcards are adjacent, so one shift is the
    /// whole closure.
    fn close(&self, live: &mut [u64]) {
        let mut carry = 0u64;
        for (w, word) in live.iter_mut().enumerate() {
            let wild = *word & (self.star[w] | self.percent[w]);
            *word |= (wild << 1) | carry;
            carry = wild >> 63;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ListPattern;

    fn m(p: &str, n: &str) -> bool {
        ListPattern::new(p.as_bytes()).matches(n.as_bytes())
    }

    /// The exponential matcher this replaces, as the reference.
    fn reference(pattern: &[u8], name: &[u8]) -> bool {
        match pattern.split_first() {
            None => name.is_empty(),
            Some((b'*', rest)) => (0..=name.len()).any(|i| reference(rest, &name[i..])),
            Some((b'%', rest)) => (0..=name.len())
                .take_while(|i| *i == 0 || name[i - 1] != b'.')
                .any(|i| reference(rest, &name[i..])),
            Some((c, rest)) => name.first().is_some_and(|n| n == c) && reference(rest, &name[1..]),
        }
    }

    #[test]
    fn rfc_3501_semantics() {
        assert!(m("*", "Work.Q1"));
        assert!(m("*", ""));
        assert!(m("%", ""));
        assert!(!m("%", "Work.Q1"));
        assert!(m("%", "Work"));
        assert!(m("Work.%", "Work.Q1"));
        assert!(!m("Work.%", "Work.Q1.Jan"));
        assert!(m("Work.*", "Work.Q1.Jan"));
        assert!(m("W*1", "Work.Q1"));
        assert!(!m("Work", "Work.Q1"));
        assert!(!m("Work.Q1", "Work"));
        assert!(m("%.%", "a.b"));
        assert!(!m("%.%", "a.b.c"));
        assert!(m("*%", "a.b.c"));
        assert!(m("%*", "a.b.c"));
        assert!(!m("%%", "a.b"));
        assert!(m("a%%b", "axyb"));
        assert!(!m("", "a"));
        assert!(m("", ""));
    }

    #[test]
    fn long_patterns_cross_word_boundaries() {
        let name = "x".repeat(150) + ".y";
        assert!(m(&name, &name));
        assert!(m(&("x".repeat(100) + "*" + &"x".repeat(49) + "%.y"), &name));
        assert!(!m(&("x".repeat(151) + "*"), &name));
        assert!(m(&("x".repeat(149) + "%.%"), &name));
    }

    #[test]
    fn a_pattern_longer_than_any_name_matches_nothing() {
        let huge = "a".repeat(10_000_000);
        let p = ListPattern::new(huge.as_bytes());
        assert!(p.words <= 1);
        assert!(!p.matches(b"a"));
        assert!(!p.matches(&huge.as_bytes()[..255]));
        assert!(m(&"%a".repeat(255), &"a".repeat(255)));
    }

    #[test]
    fn the_pathological_pattern_answers() {
        let name = "a".repeat(200);
        assert!(!m("*a*a*a*a*a*a*a*a*a*a*a*a*b", &name));
        assert!(m("*a*a*a*a*a*a*a*a*a*a*a*a*", &name));
        assert!(!m("%a%a%a%a%a%a%a%a%a%a%b", &name));
    }

    #[test]
    fn agrees_with_the_reference_on_small_cases() {
        let alphabet = [b'a', b'.', b'*', b'%'];
        let names: Vec<Vec<u8>> = (0..4u32.pow(5))
            .map(|k| {
                (0..5)
                    .map(|d| [b'a', b'.', b'b', b'a'][(k / 4u32.pow(d) % 4) as usize])
                    .collect()
            })
            .collect();
        for k in 0..4u32.pow(5) {
            let pattern: Vec<u8> = (0..5)
                .map(|d| alphabet[(k / 4u32.pow(d) % 4) as usize])
                .collect();
            let compiled = ListPattern::new(&pattern);
            for len in [0usize, 1, 3, 5] {
                for name in &names {
                    let name = &name[..len];
                    assert_eq!(
                        compiled.matches(name),
                        reference(&pattern, name),
                        "{:?} vs {:?}",
                        String::from_utf8_lossy(&pattern),
                        String::from_utf8_lossy(name)
                    );
                }
            }
        }
    }
}
