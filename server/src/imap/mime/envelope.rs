//! RFC 3501 §7.4.2, RFC 9051 §7.5.2: ENVELOPE, built from raw header
//! values.
//!
//! `(date subject from sender reply-to to cc bcc in-reply-to message-id)`.
//! Values are unfolded and trimmed. Nothing else changes: encoded words stay
//! encoded, and Message-ID / In-Reply-To keep their angle brackets and
//! anything around them. A header field that is absent is NIL. One that is
//! present but empty is `""`, except for the address lists, which are NIL
//! when they hold no address. When Sender or Reply-To is absent or holds no
//! address, it repeats From (RFC 3501 §7.4.2). An address field that occurs
//! more than once (two To: lines, which RFC 5322 §3.6 forbids but mailers
//! write) gives all its addresses, in order, as Dovecot answers: dropping
//! the second To: would hide recipients. Date, Subject, In-Reply-To and
//! Message-ID take the first occurrence, as the SORT keys do
//! (`sort::header_keys`); SEARCH matches any occurrence. Dovecot takes the
//! last; see docs/rfc-status.md.

use super::address::{AddressItem, parse_address_list, write_address_list};
use super::header::{fields, first_value};
use super::imap_string::push_nstring;

/// Writes the ENVELOPE of the message whose header block is `header`.
pub(super) fn write_envelope(out: &mut Vec<u8>, header: &[u8]) {
    let from = addresses(header, b"From");
    let or_from = |list: Vec<AddressItem>| if list.is_empty() { from.clone() } else { list };
    let sender = or_from(addresses(header, b"Sender"));
    let reply_to = or_from(addresses(header, b"Reply-To"));

    out.push(b'(');
    push_nstring(out, first_value(header, b"Date").as_deref());
    out.push(b' ');
    push_nstring(out, first_value(header, b"Subject").as_deref());
    for list in [&from, &sender, &reply_to] {
        out.push(b' ');
        write_address_list(out, list);
    }
    for name in [&b"To"[..], b"Cc", b"Bcc"] {
        out.push(b' ');
        write_address_list(out, &addresses(header, name));
    }
    out.push(b' ');
    push_nstring(out, first_value(header, b"In-Reply-To").as_deref());
    out.push(b' ');
    push_nstring(out, first_value(header, b"Message-ID").as_deref());
    out.push(b')');
}

/// The addresses of every `name` field, in header order.
pub(super) fn addresses(header: &[u8], name: &[u8]) -> Vec<AddressItem> {
    fields(header)
        .filter(|f| f.name.eq_ignore_ascii_case(name))
        .flat_map(|f| parse_address_list(&f.unfolded()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(header: &str) -> String {
        let mut out = Vec::new();
        write_envelope(&mut out, header.as_bytes());
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The ENVELOPE of RFC 3501 §7.4.2's FETCH example, from a header that
    /// would produce it.
    #[test]
    fn rfc3501_example() {
        let header = "Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\n\
                      From: Terry Gray <gray@cac.washington.edu>\r\n\
                      Subject: IMAP4rev1 WG mtg summary and minutes\r\n\
                      To: imap@cac.washington.edu\r\n\
                      cc: minutes@CNRI.Reston.VA.US,\r\n John Klensin <KLENSIN@MIT.EDU>\r\n\
                      Message-Id: <B27397-0100000@cac.washington.edu>\r\n\
                      MIME-Version: 1.0\r\n\
                      Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\n";
        assert_eq!(
            envelope(header),
            "(\"Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\" \
             \"IMAP4rev1 WG mtg summary and minutes\" \
             ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) \
             ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) \
             ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) \
             ((NIL NIL \"imap\" \"cac.washington.edu\")) \
             ((NIL NIL \"minutes\" \"CNRI.Reston.VA.US\")\
             (\"John Klensin\" NIL \"KLENSIN\" \"MIT.EDU\")) NIL NIL \
             \"<B27397-0100000@cac.washington.edu>\")"
        );
    }

    #[test]
    fn absent_everything_is_nil() {
        assert_eq!(envelope(""), "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)");
        assert_eq!(
            envelope("X-Junk: 1\r\n\r\n"),
            "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
        );
    }

    #[test]
    fn present_but_empty() {
        assert_eq!(
            envelope(
                "Subject:\r\nDate: \r\nFrom: a@b\r\nSender:\r\nReply-To:  \r\nTo:\r\nMessage-ID:\r\n\r\n"
            ),
            "(\"\" \"\" ((NIL NIL \"a\" \"b\")) ((NIL NIL \"a\" \"b\")) ((NIL NIL \"a\" \"b\")) NIL NIL NIL NIL \"\")"
        );
    }

    #[test]
    fn sender_and_reply_to_kept_when_present() {
        let e = envelope("From: a@b\nSender: s@b\nReply-To: r@b\nBcc: x@y\n\n");
        assert_eq!(
            e,
            "(NIL NIL ((NIL NIL \"a\" \"b\")) ((NIL NIL \"s\" \"b\")) ((NIL NIL \"r\" \"b\")) NIL NIL \
             ((NIL NIL \"x\" \"y\")) NIL NIL)"
        );
    }

    #[test]
    fn raw_values_encoded_words_and_ids() {
        let e = envelope(
            "Subject: =?utf-8?q?Caf=C3=A9?=\r\n  test\r\n\
             From: =?iso-8859-1?q?Al=EFce?= <alice@x>\r\n\
             In-Reply-To: <a@x> (comment)\r\n\
             Message-ID:\r\n <id@host>\r\n\r\n",
        );
        assert_eq!(
            e,
            "(NIL \"=?utf-8?q?Caf=C3=A9?=  test\" ((\"=?iso-8859-1?q?Al=EFce?=\" NIL \"alice\" \"x\")) \
             ((\"=?iso-8859-1?q?Al=EFce?=\" NIL \"alice\" \"x\")) ((\"=?iso-8859-1?q?Al=EFce?=\" NIL \"alice\" \"x\")) \
             NIL NIL NIL \"<a@x> (comment)\" \"<id@host>\")"
        );
    }

    #[test]
    fn repeated_address_fields_are_all_kept() {
        let e = envelope("From: a@b\nTo: G: x@y, z@w;\nCc: c1@d\nTo: t2@u\nCC: c2@d\nto: \n\n");
        assert!(
            e.ends_with(
                "((NIL NIL \"G\" NIL)(NIL NIL \"x\" \"y\")(NIL NIL \"z\" \"w\")(NIL NIL NIL NIL)\
                 (NIL NIL \"t2\" \"u\")) ((NIL NIL \"c1\" \"d\")(NIL NIL \"c2\" \"d\")) NIL NIL NIL)"
            ),
            "{e}"
        );
    }

    #[test]
    fn first_occurrence_wins_and_names_are_case_insensitive() {
        let e = envelope("SUBJECT: one\nsubject: two\nfrom: a@b\n\n");
        assert!(e.starts_with("(NIL \"one\" ((NIL NIL \"a\" \"b\"))"), "{e}");
    }

    #[test]
    fn eight_bit_quotes_and_nul() {
        let mut out = Vec::new();
        write_envelope(&mut out, b"Subject: caf\xe9 \"q\" a\\b\0\r\n\r\n");
        assert_eq!(
            out,
            b"(NIL {15}\r\ncaf\xe9 \"q\" a\\b\xef\xbf\xbd NIL NIL NIL NIL NIL NIL NIL NIL)"
        );
        assert_eq!(
            envelope("Subject: say \"hi\" \\o/\n\n"),
            "(NIL \"say \\\"hi\\\" \\\\o/\" NIL NIL NIL NIL NIL NIL NIL NIL)"
        );
    }

    #[test]
    fn groups_in_envelope() {
        let e = envelope("From: a@b\nTo: undisclosed-recipients:;\nCc: A Group: a@x, b@y;\n\n");
        assert!(
            e.contains(
                "((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)) \
                 ((NIL NIL \"A Group\" NIL)(NIL NIL \"a\" \"x\")(NIL NIL \"b\" \"y\")(NIL NIL NIL NIL)) NIL"
            ),
            "{e}"
        );
    }
}
