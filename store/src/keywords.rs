//! IMAP keywords (RFC 3501 §2.3.2 `flag-keyword`): atoms, matched without
//! regard to case, stored with the first spelling a message was given.
//!
//! The index keeps a message's keywords as one space-separated text column,
//! so a keyword that is not an atom (a space, a backslash, a control
//! character) must never get in: every path that stores keywords checks them
//! here first.

use crate::ids::Flags;
use crate::{Error, Result};

/// What STORE does to a message's flags (RFC 3501 §6.4.6): the system flags
/// and keywords given replace, are added to, or are removed from the
/// message's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagOp {
    Replace(Flags, Vec<String>),
    Add(Flags, Vec<String>),
    Remove(Flags, Vec<String>),
}

impl FlagOp {
    /// The keywords the operation names.
    pub(crate) fn keywords(&self) -> &[String] {
        match self {
            FlagOp::Replace(_, k) | FlagOp::Add(_, k) | FlagOp::Remove(_, k) => k,
        }
    }

    /// The same operation with its keywords checked and without case-blind
    /// duplicates.
    pub(crate) fn checked(&self) -> Result<FlagOp> {
        let k = normalized(self.keywords())?;
        Ok(match self {
            FlagOp::Replace(f, _) => FlagOp::Replace(*f, k),
            FlagOp::Add(f, _) => FlagOp::Add(*f, k),
            FlagOp::Remove(f, _) => FlagOp::Remove(*f, k),
        })
    }

    /// A message's flags and keywords after the operation. `self` must be
    /// [`checked`](FlagOp::checked). Keywords the message already has keep
    /// their spelling.
    pub(crate) fn apply(&self, flags: Flags, keywords: &[String]) -> (Flags, Vec<String>) {
        let has = |list: &[String], k: &str| list.iter().any(|x| x.eq_ignore_ascii_case(k));
        match self {
            FlagOp::Replace(f, ks) => {
                let out = ks
                    .iter()
                    .map(|k| {
                        keywords
                            .iter()
                            .find(|x| x.eq_ignore_ascii_case(k))
                            .unwrap_or(k)
                            .clone()
                    })
                    .collect();
                (*f, out)
            }
            FlagOp::Add(f, ks) => {
                let mut out = keywords.to_vec();
                for k in ks {
                    if !has(&out, k) {
                        out.push(k.clone());
                    }
                }
                (flags | *f, out)
            }
            FlagOp::Remove(f, ks) => {
                let mut new_flags = flags;
                new_flags.remove(*f);
                let out = keywords.iter().filter(|k| !has(ks, k)).cloned().collect();
                (new_flags, out)
            }
        }
    }
}

/// Whether two keyword lists name the same keywords (ignoring case and
/// order). Both must be free of case-blind duplicates.
pub(crate) fn same_set(a: &[String], b: &[String]) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|k| b.iter().any(|x| x.eq_ignore_ascii_case(k)))
}

/// Check a keyword: an IMAP atom (RFC 3501 §9 `atom`), so no space,
/// control character, non-ASCII, or any of `( ) { % * " \ ]`.
pub(crate) fn validate(k: &str) -> Result<()> {
    let atom_char = |b: u8| b > 0x20 && b < 0x7f && !b"(){%*\"\\]".contains(&b);
    if k.is_empty() || !k.bytes().all(atom_char) {
        return Err(Error::InvalidData(format!("invalid keyword {k:?}")));
    }
    Ok(())
}

/// Checked keywords, case-blind duplicates dropped (the first spelling
/// stays).
pub(crate) fn normalized(keywords: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(keywords.len());
    for k in keywords {
        validate(k)?;
        if !out.iter().any(|x| x.eq_ignore_ascii_case(k)) {
            out.push(k.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn keywords_must_be_atoms() {
        for good in ["$Junk", "work", "Non-Junk", "a.b", "$MDNSent"] {
            assert!(validate(good).is_ok(), "{good}");
        }
        for bad in [
            "", "a b", "\\Seen", "x(", "50%", "a*", "q\"", "x]", "é", "a\r",
        ] {
            assert!(
                matches!(validate(bad), Err(Error::InvalidData(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            normalized(&s(&["Work", "work", "$Junk"])).unwrap(),
            s(&["Work", "$Junk"])
        );
    }

    #[test]
    fn apply_matches_case_blind_and_keeps_first_spelling() {
        let cur = s(&["Work", "$Junk"]);
        let add = FlagOp::Add(Flags::SEEN, s(&["work", "home"]));
        assert_eq!(
            add.apply(Flags::FLAGGED, &cur),
            (Flags::SEEN | Flags::FLAGGED, s(&["Work", "$Junk", "home"]))
        );
        let rm = FlagOp::Remove(Flags::FLAGGED, s(&["WORK"]));
        assert_eq!(
            rm.apply(Flags::FLAGGED | Flags::SEEN, &cur),
            (Flags::SEEN, s(&["$Junk"]))
        );
        let rep = FlagOp::Replace(Flags::DRAFT, s(&["$junk", "new"]));
        let (f, k) = rep.apply(Flags::SEEN, &cur);
        assert_eq!((f, k.clone()), (Flags::DRAFT, s(&["$Junk", "new"])));
        assert!(same_set(&k, &s(&["NEW", "$JUNK"])));
        assert!(!same_set(&k, &s(&["new"])));
    }
}
