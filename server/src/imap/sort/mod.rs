//! SORT and THREAD as pure functions (RFC 5256, RFC 5957 SORT=DISPLAY):
//! the orders and trees the commands answer, computed from a plain list of
//! per-message keys. No store, no session, no wire syntax beyond the
//! THREAD response's parenthesized form.
//!
//! # How it is meant to be called
//! The SORT / THREAD command handler (`imap/sort_thread.rs`) builds one
//! [`Candidate`] per message of the selected view, **in sequence-number
//! order** (index 0 is message 1: every tie is broken by that order, as
//! RFC 5256 asks), after narrowing the view by the command's search keys:
//!
//! ```text
//! let keys = SortKeys::prepare(&sort::header_keys(header_bytes)); // once per content
//! let c = Candidate { uid, internal_date, size, keys: Arc::new(keys) };
//! let order = sort::sort(&candidates, &criteria);   // indices into `candidates`
//! let threads = sort::thread(&candidates, Algorithm::References);
//! let text = sort::write_threads(&threads, |i| candidates[i].uid);  // "(1 2 (3)(4))"
//! ```
//!
//! The engine reads only [`Candidate`]s and their [`SortKeys`]: ready to
//! compare (base subject extracted and case mapped, addresses case mapped,
//! message ids taken out), so a command decodes nothing. [`header_keys`]
//! (`keys.rs`) parses a header block into [`MessageKeys`] (RFC 2047
//! encoded words decoded), [`SortKeys::prepare`] (`prepared.rs`) turns
//! that into the compared form, and [`encode_keys`] / [`decode_keys`] are
//! its cached form (`DerivedKind::ImapSortKeys`, made when a message
//! arrives: `crate::derive`). The handler keeps prepared keys in memory by
//! content id (`imap/sort_cache.rs`), so a repeated SORT or THREAD reads
//! neither messages nor the index's cache.
//!
//! # Rules implemented
//! - Base subject (RFC 5256 §2.1), in `base_subject.rs`, with whether the
//!   subject was a reply or forward (§2.1 and THREAD step 5).
//! - Keys from a header block in `keys.rs`: addresses as ENVELOPE shows
//!   them (the first address structure, so a group's name sorts a grouped
//!   To:, as in Dovecot), display names and subjects decoded.
//! - Sort keys (RFC 5256 §3, RFC 5957 §3) in `order.rs`; strings compare
//!   with an approximation of i;unicode-casemap (RFC 5051): NFKD, then
//!   lower case (RFC 5051 uses title case; the two differ for a handful of
//!   characters only).
//! - THREAD ORDEREDSUBJECT and REFERENCES (RFC 5256 §3) in `thread.rs`.
//!
//! `tests/interop/sort_dovecot.rs` checks the engine against Dovecot's SORT
//! and THREAD (every key above, REVERSE, two-key criteria, both
//! algorithms) on `tests/corpus/` and on random mailboxes with reply loops,
//! duplicate and missing Message-IDs: the answers are equal.
//!
//! Bounded work and no recursion: chains of replies can be as long as the
//! mailbox, so every tree walk uses an explicit stack.

mod base_subject;
mod keys;
mod order;
mod prepared;
mod thread;

pub use base_subject::{BaseSubject, base_subject};
pub use keys::header_keys;
pub use order::{SortCriterion, SortKey, compare, sort};
pub use prepared::{Candidate, SortKeys, decode as decode_keys, encode as encode_keys};
pub use thread::{Algorithm, ThreadNode, thread, write_threads};

use unicode_normalization::UnicodeNormalization;

/// A message's header fields as SORT and THREAD read them, before
/// [`SortKeys::prepare`] (and the index's keys, which a [`Candidate`]
/// carries). Strings are decoded (UTF-8, encoded words decoded); absent
/// header fields are `None` or empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageKeys {
    /// The UID (the engine only carries it for the caller).
    pub uid: u32,
    /// INTERNALDATE, seconds since the epoch.
    pub internal_date: i64,
    /// The Date: field in seconds since the epoch (UTC), `None` when missing
    /// or unparsable (RFC 5256 §2.2: INTERNALDATE is used instead).
    pub sent_date: Option<i64>,
    /// RFC822.SIZE.
    pub size: u64,
    /// The Subject field, decoded and unfolded; empty when absent.
    pub subject: String,
    /// The first address of From, To and Cc (RFC 5256 §3 uses the first).
    pub from: Option<Address>,
    pub to: Option<Address>,
    pub cc: Option<Address>,
    /// The raw Message-ID, References and In-Reply-To field values
    /// ([`SortKeys::prepare`] extracts the `<...>` ids).
    pub message_id: Option<String>,
    pub references: Option<String>,
    pub in_reply_to: Option<String>,
}

/// One address of a From/To/Cc field, as ENVELOPE splits it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Address {
    /// The display name, decoded; empty when there is none.
    pub display_name: String,
    /// The local part (RFC 3501 addr-mailbox).
    pub mailbox: String,
    /// The domain (addr-host); empty when there is none.
    pub host: String,
}

/// The comparison form of a string under (approximately) i;unicode-casemap
/// (RFC 5051 §2): compatibility decomposition, then case-folded.
pub(crate) fn casemap(s: &str) -> String {
    if s.is_ascii() {
        // NFKD leaves ASCII alone; most subjects and addresses are ASCII.
        return s.to_ascii_lowercase();
    }
    s.nfkd().flat_map(char::to_lowercase).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casemap_folds_case_and_compatibility_forms() {
        assert_eq!(casemap("ÉCOLE"), casemap("école"));
        assert_eq!(casemap("ﬁle"), "file");
        assert_eq!(casemap("Ａ"), "a");
        assert_ne!(casemap("a"), casemap("b"));
    }

    #[test]
    fn sort_date_falls_back_to_internal_date() {
        let mut m = MessageKeys {
            internal_date: 5,
            ..MessageKeys::default()
        };
        assert_eq!(Candidate::from(&m).sort_date(), 5);
        m.sent_date = Some(3);
        assert_eq!(Candidate::from(&m).sort_date(), 3);
    }
}
