//! RFC 8474 OBJECTID: MAILBOXID (SELECT, EXAMINE, STATUS, CREATE), EMAILID
//! and THREADID (FETCH).
//!
//! The ids are identical on every replica by construction, with no node to
//! ask: MAILBOXID is the mailbox's GUID (created once, replicated, kept by
//! RENAME), EMAILID the content id of the message (the blake3 hash of its
//! bytes: the same after COPY, MOVE and on each node), THREADID NIL (cove
//! does not thread yet; RFC 8474 §5.2 allows NIL).
//!
//! imap-codec does not know the new FETCH and STATUS items, so they are
//! taken off the command line (`split`) before it decodes the rest; each is
//! replaced by an item it knows (UID, UIDVALIDITY), so a list never ends up
//! empty: the client may get that item unasked, which RFC 3501 allows.

use cove_store::{ContentId, MailboxGuid};

use super::framing;

/// The OBJECTID items a FETCH or STATUS asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObjectItems {
    pub emailid: bool,
    pub threadid: bool,
    pub mailboxid: bool,
    /// RFC 8514 SAVEDATE (`savedate.rs`), taken off the same way.
    pub savedate: bool,
}

impl ObjectItems {
    pub fn any(&self) -> bool {
        self.emailid || self.threadid || self.mailboxid || self.savedate
    }
}

/// RFC 8474 §4: objectid.
pub fn mailbox_id(guid: &MailboxGuid) -> String {
    format!("F{}", guid.to_hex())
}

/// RFC 8474 §5.1: objectid.
pub fn email_id(content: &ContentId) -> String {
    format!("M{}", content.to_hex())
}

/// For `tag [UID] FETCH ...` and `tag STATUS ...` naming an OBJECTID item:
/// the items, and the line with each replaced by one imap-codec knows.
pub fn split(bytes: &[u8]) -> Option<(ObjectItems, Vec<u8>)> {
    let verb = framing::command_name_of(bytes)?;
    // FETCH's items may stand alone (`FETCH 1 EMAILID`), STATUS's are
    // always a list (after the mailbox name, which may be any word).
    let (names, substitute, min_depth): (&[&str], &[u8], usize) =
        if verb.eq_ignore_ascii_case(b"FETCH") {
            (&["EMAILID", "THREADID", "SAVEDATE"], b"UID", 0)
        } else if verb.eq_ignore_ascii_case(b"STATUS") {
            (&["MAILBOXID"], b"UIDVALIDITY", 1)
        } else {
            return None;
        };
    // Only up to the first string or literal: the items are atoms.
    let end = bytes
        .iter()
        .position(|b| *b == b'"' || *b == b'{')
        .unwrap_or(bytes.len());
    let mut items = ObjectItems::default();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let mut depth = 0usize;
    while i < bytes.len() {
        let b = bytes[i];
        if i < end {
            match b {
                b'(' => depth += 1,
                b')' => depth = depth.saturating_sub(1),
                _ => {}
            }
            let starts_word = i > 0 && matches!(bytes[i - 1], b' ' | b'(');
            if starts_word && (min_depth..=1).contains(&depth) {
                let found = names.iter().find(|n| {
                    let n = n.as_bytes();
                    bytes
                        .get(i..i + n.len())
                        .is_some_and(|w| w.eq_ignore_ascii_case(n))
                        && matches!(
                            bytes.get(i + n.len()),
                            Some(b' ' | b')' | b'\r' | b'\n') | None
                        )
                });
                if let Some(name) = found {
                    match *name {
                        "EMAILID" => items.emailid = true,
                        "THREADID" => items.threadid = true,
                        "SAVEDATE" => items.savedate = true,
                        _ => items.mailboxid = true,
                    }
                    out.extend_from_slice(substitute);
                    i += name.len();
                    continue;
                }
            }
        }
        out.push(b);
        i += 1;
    }
    items.any().then_some((items, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_items_are_replaced_by_known_ones() {
        let (items, line) = split(b"a UID FETCH 1:* (FLAGS EMAILID THREADID)\r\n").unwrap();
        assert!(items.emailid && items.threadid && !items.mailboxid);
        assert_eq!(line, b"a UID FETCH 1:* (FLAGS UID UID)\r\n");
        let (items, line) = split(b"a FETCH 1:2 (SAVEDATE FLAGS)\r\n").unwrap();
        assert!(items.savedate && !items.emailid);
        assert_eq!(line, b"a FETCH 1:2 (UID FLAGS)\r\n");
        let (items, line) = split(b"b FETCH 1 emailid\r\n").unwrap();
        assert!(items.emailid);
        assert_eq!(line, b"b FETCH 1 UID\r\n");
        let (items, line) = split(b"c STATUS INBOX (MAILBOXID MESSAGES)\r\n").unwrap();
        assert!(items.mailboxid);
        assert_eq!(line, b"c STATUS INBOX (UIDVALIDITY MESSAGES)\r\n");
        // A header field of that name is not the item.
        assert!(split(b"d FETCH 1 (BODY[HEADER.FIELDS (EMAILID)])\r\n").is_none());
        assert!(split(b"e FETCH 1 (FLAGS)\r\n").is_none());
        assert!(split(b"f SELECT EMAILID\r\n").is_none());
        assert!(split(b"g STATUS MAILBOXID (MESSAGES)\r\n").is_none());
    }
}
