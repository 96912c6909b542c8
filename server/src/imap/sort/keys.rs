//! [`MessageKeys`] from a message's header block: the fields a SORT /
//! THREAD handler prepares once per content (`prepared.rs`) instead of
//! reading messages at each command.
//!
//! Values are decoded (RFC 2047 encoded words, by mail-parser). Where a
//! field occurs twice, the first one counts, as in cove's ENVELOPE. The
//! Message-ID, References and In-Reply-To values stay raw: the thread engine
//! takes the `<...>` ids out of them itself. The uid, INTERNALDATE and size
//! are the index's; the caller fills them in.

use mail_parser::{HeaderName, HeaderValue, MessageParser};

use super::super::mime;
use super::{Address, MessageKeys};

/// The header-derived keys of a message (`raw` may be the whole message or
/// its header block only).
pub fn header_keys(raw: &[u8]) -> MessageKeys {
    let Some(msg) = MessageParser::default().parse_headers(raw) else {
        return MessageKeys::default();
    };
    let first = |name: HeaderName<'static>| msg.headers().iter().find(|h| h.name == name);
    let raw_value = |name: HeaderName<'static>| {
        first(name).map(|h| {
            let value = raw
                .get(h.offset_start as usize..h.offset_end as usize)
                .unwrap_or_default();
            String::from_utf8_lossy(value).trim().to_string()
        })
    };
    // Addresses as ENVELOPE shows them (RFC 5256 §3 sorts by its first
    // address structure: source routes, missing hosts and group markers
    // included), the display name decoded.
    let address = |field: &[u8]| {
        mime::first_envelope_address(raw, field).map(|a| Address {
            display_name: a.name.map(|n| decode_words(&n)).unwrap_or_default(),
            mailbox: String::from_utf8_lossy(&a.mailbox).into_owned(),
            host: String::from_utf8_lossy(a.host.as_deref().unwrap_or_default()).into_owned(),
        })
    };
    MessageKeys {
        subject: first(HeaderName::Subject)
            .map(|h| match &h.value {
                HeaderValue::Text(t) => t.to_string(),
                HeaderValue::TextList(l) => l.join(" "),
                _ => String::new(),
            })
            .unwrap_or_default(),
        sent_date: first(HeaderName::Date)
            .and_then(|h| h.value.as_datetime())
            .filter(|d| d.is_valid())
            .map(|d| d.to_timestamp()),
        from: address(b"From"),
        to: address(b"To"),
        cc: address(b"Cc"),
        message_id: raw_value(HeaderName::MessageId),
        references: raw_value(HeaderName::References),
        in_reply_to: raw_value(HeaderName::InReplyTo),
        ..MessageKeys::default()
    }
}

/// RFC 2047 encoded words in a display name decoded (as mail-parser
/// decodes an unstructured field).
fn decode_words(raw: &[u8]) -> String {
    let mut field = b"Subject: ".to_vec();
    field.extend_from_slice(raw);
    field.extend_from_slice(b"\r\n\r\n");
    MessageParser::default()
        .parse_headers(&field)
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(raw).into_owned())
}

#[cfg(test)]
mod tests {
    use super::super::{Algorithm, Candidate, SortCriterion, SortKey, sort, thread, write_threads};
    use super::*;

    #[test]
    fn decoded_values_first_occurrences_and_raw_ids() {
        let keys = header_keys(
            b"Subject: =?utf-8?q?Re=3A_Caf=C3=A9?=\r\nSubject: second\r\n\
              From: =?iso-8859-1?q?J=F6rg?= <joerg@example.de>, b@x\r\n\
              To: Team: ann@x.org, bob@y.org;\r\nCc: root\r\n\
              Date: Tue, 10 Nov 2026 12:00:00 +0100\r\n\
              Message-ID: <a@x>\r\nReferences: <r1@x>\r\n <r2@x>\r\nIn-Reply-To: <r2@x> (c)\r\n\r\nbody",
        );
        assert_eq!(keys.subject, "Re: Café");
        assert_eq!(keys.sent_date, Some(1_794_308_400));
        let from = keys.from.expect("from");
        assert_eq!(
            (
                from.display_name.as_str(),
                from.mailbox.as_str(),
                from.host.as_str()
            ),
            ("Jörg", "joerg", "example.de")
        );
        // A group's start marker comes first, its name as the mailbox.
        assert_eq!(keys.to.expect("to").mailbox, "Team");
        let cc = keys.cc.expect("cc");
        assert_eq!((cc.mailbox.as_str(), cc.host.as_str()), ("root", ""));
        assert_eq!(keys.message_id.as_deref(), Some("<a@x>"));
        assert!(
            keys.references
                .as_deref()
                .is_some_and(|r| r.contains("<r1@x>") && r.contains("<r2@x>"))
        );
        assert_eq!(keys.in_reply_to.as_deref(), Some("<r2@x> (c)"));
    }

    #[test]
    fn source_routes_and_repeated_fields() {
        let keys = header_keys(b"From: <@r.example:odd@example.org>\r\nCc:\r\nCc: c@x\r\n\r\n");
        let from = keys.from.expect("from");
        assert_eq!(
            (from.mailbox.as_str(), from.host.as_str()),
            ("odd", "example.org")
        );
        assert_eq!(keys.cc.expect("cc").mailbox, "c");
    }

    #[test]
    fn missing_and_broken_fields() {
        let keys = header_keys(b"Date: not a date\r\nFrom: \r\n\r\n");
        assert_eq!(keys.sent_date, None);
        assert_eq!(keys.subject, "");
        assert!(keys.to.is_none() && keys.message_id.is_none());
        let _ = header_keys(b"");
        let _ = header_keys(b"\xff\xfe: \x00\r\n");
    }

    /// From headers to a THREAD answer, as a handler would go.
    #[test]
    fn headers_thread_and_sort() {
        let headers: [&[u8]; 3] = [
            b"Subject: Plan\r\nMessage-ID: <p@x>\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\n\r\n",
            b"Subject: Re: Plan\r\nMessage-ID: <q@x>\r\nReferences: <p@x>\r\nDate: Mon, 2 Nov 2026 11:00:00 +0000\r\n\r\n",
            b"Subject: Another\r\nMessage-ID: <z@x>\r\nDate: Sun, 1 Nov 2026 09:00:00 +0000\r\n\r\n",
        ];
        let keys: Vec<Candidate> = headers
            .iter()
            .map(|h| Candidate::from(&header_keys(h)))
            .collect();
        let threads = thread(&keys, Algorithm::References);
        assert_eq!(write_threads(&threads, |i| i as u32 + 1), "(3)(1 2)");
        let by_subject = sort(
            &keys,
            &[SortCriterion {
                key: SortKey::Subject,
                reverse: false,
            }],
        );
        assert_eq!(by_subject, [2, 0, 1]);
    }
}
