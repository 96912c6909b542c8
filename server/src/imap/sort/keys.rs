//! [`MessageKeys`] from a message's header block: what a SORT / THREAD
//! handler computes once per content (and can cache by content id, as the
//! search header text is) instead of reading messages at each command.
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

/// The cached form of a message's header-derived keys (the store's
/// `DerivedKind::ImapSortKeys`): a version byte, the sent date, then every
/// string as a 4-byte big-endian length and its bytes (an absent one as
/// length `u32::MAX`). When this changes, the kind gets a new number.
pub fn encode(keys: &MessageKeys) -> Vec<u8> {
    fn text(out: &mut Vec<u8>, s: Option<&str>) {
        match s {
            Some(s) => {
                let n = u32::try_from(s.len()).unwrap_or(u32::MAX - 1);
                out.extend_from_slice(&n.to_be_bytes());
                out.extend_from_slice(&s.as_bytes()[..n as usize]);
            }
            None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
        }
    }
    let mut out = vec![ENCODING];
    match keys.sent_date {
        Some(d) => {
            out.push(1);
            out.extend_from_slice(&d.to_be_bytes());
        }
        None => out.push(0),
    }
    text(&mut out, Some(&keys.subject));
    for a in [&keys.from, &keys.to, &keys.cc] {
        match a {
            Some(a) => {
                text(&mut out, Some(&a.display_name));
                text(&mut out, Some(&a.mailbox));
                text(&mut out, Some(&a.host));
            }
            None => (0..3).for_each(|_| text(&mut out, None)),
        }
    }
    for id in [&keys.message_id, &keys.references, &keys.in_reply_to] {
        text(&mut out, id.as_deref());
    }
    out
}

/// The version byte of [`encode`]'s form.
const ENCODING: u8 = 1;

/// [`encode`]'s form read back (the uid, INTERNALDATE and size are left
/// for the caller); `None` when it is not that form (the caller computes
/// the keys again).
pub fn decode(bytes: &[u8]) -> Option<MessageKeys> {
    struct Reader<'a>(&'a [u8]);
    impl Reader<'_> {
        fn take(&mut self, n: usize) -> Option<&[u8]> {
            let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
            self.0 = rest;
            Some(head)
        }
        fn text(&mut self) -> Option<Option<String>> {
            let n = u32::from_be_bytes(self.take(4)?.try_into().ok()?);
            if n == u32::MAX {
                return Some(None);
            }
            let bytes = self.take(usize::try_from(n).ok()?)?;
            Some(Some(String::from_utf8(bytes.to_vec()).ok()?))
        }
        fn address(&mut self) -> Option<Option<Address>> {
            let (name, mailbox, host) = (self.text()?, self.text()?, self.text()?);
            Some(match (name, mailbox, host) {
                (Some(display_name), Some(mailbox), Some(host)) => Some(Address {
                    display_name,
                    mailbox,
                    host,
                }),
                _ => None,
            })
        }
    }
    let mut r = Reader(bytes);
    if r.take(1)? != [ENCODING] {
        return None;
    }
    let sent_date = match r.take(1)? {
        [0] => None,
        [1] => Some(i64::from_be_bytes(r.take(8)?.try_into().ok()?)),
        _ => return None,
    };
    let keys = MessageKeys {
        sent_date,
        subject: r.text()?.unwrap_or_default(),
        from: r.address()?,
        to: r.address()?,
        cc: r.address()?,
        message_id: r.text()?,
        references: r.text()?,
        in_reply_to: r.text()?,
        ..MessageKeys::default()
    };
    r.0.is_empty().then_some(keys)
}

#[cfg(test)]
mod tests {
    use super::super::{Algorithm, SortCriterion, SortKey, sort, thread, write_threads};
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
        let keys: Vec<MessageKeys> = headers.iter().map(|h| header_keys(h)).collect();
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

    #[test]
    fn cached_form_round_trips_and_refuses_damage() {
        let keys = header_keys(
            b"Subject: =?utf-8?q?Caf=C3=A9?=\r\nFrom: Ann <a@x>\r\nCc: c@y\r\n\
              Date: Tue, 10 Nov 2026 12:00:00 +0100\r\nMessage-ID: <m@x>\r\n\r\n",
        );
        let bytes = encode(&keys);
        assert_eq!(decode(&bytes), Some(keys.clone()));
        let empty = MessageKeys::default();
        assert_eq!(decode(&encode(&empty)), Some(empty));
        // Every truncation, a trailing byte, another version: not read.
        for n in 0..bytes.len() {
            assert_eq!(decode(&bytes[..n]), None, "{n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer), None);
        let mut other = bytes;
        other[0] = ENCODING + 1;
        assert_eq!(decode(&other), None);
        // A length past the end.
        assert_eq!(decode(&[ENCODING, 0, 0xff, 0xff, 0xff, 0xf0]), None);
    }
}
