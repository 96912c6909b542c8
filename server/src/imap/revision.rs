//! IMAP4rev1 (RFC 3501) or IMAP4rev2 (RFC 9051): what a session's protocol
//! revision changes, decided in one place.
//!
//! cove advertises both; a session speaks IMAP4rev1 until the client sends
//! `ENABLE IMAP4rev2` (RFC 9051 §6.3.1) in the authenticated state. What
//! then differs (RFC 9051 Appendix E) and where it is handled:
//!
//! - mailbox names are UTF-8 both ways, modified UTF-7 is not used
//!   (§5.1): [`Revision::parse_name`] reads every name a command carries
//!   (`command::decode_as`), [`Revision::write_name`] writes every name a
//!   response carries. The store keeps its one canonical form either way.
//! - SEARCH is answered with ESEARCH carrying the tag (§6.4.4, §7.3.4),
//!   never `* SEARCH`: a SEARCH without RETURN is RETURN (ALL)
//!   ([`Revision::search_return`]).
//! - no \Recent flag and no RECENT response or STATUS item (§2.3.2): the
//!   view of a rev2 session holds no recent messages (`select.rs`,
//!   `View::apply`), so no FETCH, FLAGS or SEARCH can show one.
//! - SELECT and EXAMINE send a LIST response for the mailbox and no
//!   UNSEEN code (§6.3.2), and closing a selected mailbox by selecting
//!   another says `* OK [CLOSED]` (§7.1).
//!
//! What rev2 makes mandatory and cove already has, whatever the revision:
//! NAMESPACE, UNSELECT, UIDPLUS, ESEARCH, SEARCHRES, ENABLE, IDLE, SASL-IR,
//! LIST-EXTENDED, LIST-STATUS, MOVE, LITERAL- (as LITERAL+), BINARY,
//! SPECIAL-USE, STATUS=SIZE, STATUS DELETED, the UID in every unsolicited
//! FETCH, and \HasChildren / \HasNoChildren in LIST.

use std::borrow::Cow;

use cove_store::MailboxName;

use super::esearch::SearchReturn;
use super::response;

/// The protocol revision a session speaks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Revision {
    #[default]
    Rev1,
    Rev2,
}

impl Revision {
    /// A mailbox name as the client sent it: modified UTF-7 (RFC 3501
    /// §5.1.3), or UTF-8 once IMAP4rev2 is enabled (RFC 9051 §5.1), where
    /// `&` stands for itself.
    pub fn parse_name(self, wire: &[u8]) -> cove_store::Result<MailboxName> {
        match self {
            Revision::Rev1 => MailboxName::parse(wire),
            Revision::Rev2 => match std::str::from_utf8(wire) {
                Ok(name) => MailboxName::from_unicode(name),
                // Not UTF-8: refused by the strict modified UTF-7 parser,
                // with the same error as any other bad name.
                Err(_) => MailboxName::parse(wire),
            },
        }
    }

    /// A stored mailbox name (modified UTF-7) in this revision's form.
    pub fn shown_name(self, stored: &str) -> Cow<'_, str> {
        match self {
            Revision::Rev1 => Cow::Borrowed(stored),
            Revision::Rev2 if stored.is_ascii() && !stored.contains('&') => Cow::Borrowed(stored),
            Revision::Rev2 => match MailboxName::parse(stored.as_bytes()) {
                Ok(name) => Cow::Owned(name.to_unicode()),
                Err(_) => Cow::Borrowed(stored),
            },
        }
    }

    /// Write a stored mailbox name in this revision's form: an atom when
    /// it is one, otherwise a quoted string (UTF-8 allowed in rev2, RFC
    /// 9051 §9 QUOTED-CHAR) or a literal.
    pub fn write_name(self, out: &mut Vec<u8>, stored: &str) {
        let shown = self.shown_name(stored);
        match self {
            Revision::Rev1 => response::mailbox(out, &shown),
            Revision::Rev2 if shown.is_ascii() => response::mailbox(out, &shown),
            Revision::Rev2 => response::utf8_string(out, &shown),
        }
    }

    /// The RETURN options of a SEARCH that named none: RFC 9051 §6.4.4
    /// answers every SEARCH with ESEARCH, as RETURN (ALL) would.
    pub fn search_return(self, tag: &str) -> Option<SearchReturn> {
        match self {
            Revision::Rev1 => None,
            Revision::Rev2 => Some(SearchReturn {
                tag: tag.to_string(),
                all: true,
                ..SearchReturn::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_utf8_in_rev2_and_modified_utf7_in_rev1() {
        let rev1 = Revision::Rev1.parse_name(b"Caf&AOk-").unwrap();
        let rev2 = Revision::Rev2.parse_name("Café".as_bytes()).unwrap();
        assert_eq!(rev1, rev2);
        assert_eq!(Revision::Rev2.shown_name(rev1.as_str()), "Café");
        assert_eq!(Revision::Rev1.shown_name(rev1.as_str()), "Caf&AOk-");
        // `&` is itself in rev2, a shift in rev1.
        let amp = Revision::Rev2.parse_name(b"R&D").unwrap();
        assert_eq!(amp.as_str(), "R&-D");
        assert!(Revision::Rev1.parse_name(b"R&D").is_err());
        let mut out = Vec::new();
        Revision::Rev2.write_name(&mut out, amp.as_str());
        assert_eq!(out, b"R&D");
        out.clear();
        Revision::Rev2.write_name(&mut out, rev1.as_str());
        assert_eq!(out, "\"Café\"".as_bytes());
        out.clear();
        Revision::Rev1.write_name(&mut out, rev1.as_str());
        assert_eq!(out, b"Caf&AOk-");
    }
}
