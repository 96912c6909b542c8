//! SORT and THREAD as pure functions (RFC 5256, RFC 5957 SORT=DISPLAY):
//! the orders and trees the commands answer, computed from a plain list of
//! per-message keys. No store, no session, no wire syntax beyond the
//! THREAD response's parenthesized form.
//!
//! # How it is meant to be called
//! The SORT / THREAD command handler (`imap/sort_thread.rs`) builds one
//! [`MessageKeys`] per message of the selected view, **in sequence-number
//! order** (index 0 is message 1: every tie is broken by that order, as
//! RFC 5256 asks), after narrowing the view by the command's search keys:
//!
//! ```text
//! let mut k = sort::header_keys(header_bytes);      // or from a cache
//! (k.uid, k.internal_date, k.size) = (uid, internal_date, size);
//! let keys: Vec<MessageKeys> = ...;                 // one per candidate message
//! let order = sort::sort(&keys, &criteria);         // indices into `keys`
//! let line = order.iter().map(|&i| keys[i].uid)...; // or sequence numbers
//! let threads = sort::thread(&keys, Algorithm::References);
//! let text = sort::write_threads(&threads, |i| keys[i].uid);  // "(1 2 (3)(4))"
//! ```
//!
//! The engine reads only [`MessageKeys`]; it decodes nothing (RFC 2047
//! encoded words must already be decoded to UTF-8 by the caller) and never
//! touches message bytes. Where the keys can come from without re-reading
//! messages (issue 14 asks for that): the store's derived cache
//! (`store/src/account/derived.rs`, keyed by content id) already holds, per
//! content,
//! - the ENVELOPE (kind 31, server/src/imap/fetch.rs): the raw Date,
//!   Subject (still RFC 2047-encoded), From/To/Cc address structures with
//!   display name, mailbox and host, and the Message-ID and In-Reply-To;
//! - the decoded, lower-cased header text (kind 34,
//!   server/src/imap/search.rs): every field decoded, Subject included, and
//!   the sent *day* (not the time, so not enough for DATE);
//! - the message's uid, INTERNALDATE and RFC822.SIZE come from the index
//!   (`ViewMessage`).
//!
//! References is in neither, so the handler caches its own kind
//! (`DerivedKind::ImapSortKeys`): [`header_keys`] (`keys.rs`) computes
//! every header-derived key from a header block in one parse, and
//! [`encode_keys`] / [`decode_keys`] are its cached form, so that SORT and
//! THREAD read no message twice.
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
mod thread;

pub use base_subject::{BaseSubject, base_subject};
pub use keys::{decode as decode_keys, encode as encode_keys, header_keys};
pub use order::{SortCriterion, SortKey, sort};
pub use thread::{Algorithm, ThreadNode, thread, write_threads};

use unicode_normalization::UnicodeNormalization;

/// What SORT and THREAD read of one message. Strings are decoded (UTF-8,
/// encoded words decoded); absent header fields are `None` or empty.
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
    /// The raw Message-ID, References and In-Reply-To field values (the
    /// engine extracts the `<...>` ids).
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

impl MessageKeys {
    /// The date RFC 5256 §2.2 sorts and threads by: the sent date, or
    /// INTERNALDATE when there is none.
    pub fn sort_date(&self) -> i64 {
        self.sent_date.unwrap_or(self.internal_date)
    }
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
        assert_eq!(m.sort_date(), 5);
        m.sent_date = Some(3);
        assert_eq!(m.sort_date(), 3);
    }
}
