//! RFC 3501 §6.4.5, RFC 9051 §6.4.5: the bytes of BODY[section], before
//! `<partial>`.
//!
//! - `[]` is the whole message. `[HEADER]` is the header with its empty
//!   line, `[TEXT]` the body after it.
//! - `[1.2]` is that part's body. Part 1 of a non-multipart message is its
//!   body, and a message/rfc822 part's sub-parts are those of the message
//!   it encapsulates (see `part.rs`).
//! - `[1.2.MIME]` is the part's own MIME header, empty line included.
//! - HEADER, TEXT and HEADER.FIELDS after a part number apply only to a
//!   message/rfc822 part, and address the encapsulated message. For other
//!   parts the section does not exist (`None`).
//! - HEADER.FIELDS (or .NOT) returns the matching fields as stored, folds
//!   included, in header order (every occurrence), followed by one empty
//!   line. The empty line is always there, even when nothing matches.
//!
//! All bytes are as stored, so a message with bare LF line ends gives bare
//! LF sections.

use std::borrow::Cow;
use std::ops::Range;

use super::header::fields;
use super::part::MimePart;

/// What follows the part number in a section specifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionKind {
    /// No specifier: `BODY[]` (the whole message) or `BODY[1.2]` (the
    /// part's body).
    Full,
    Header,
    /// `HEADER.FIELDS (names)`, or with `not`, `HEADER.FIELDS.NOT (names)`.
    /// Names are matched ASCII case-insensitively.
    HeaderFields {
        names: Vec<String>,
        not: bool,
    },
    Text,
    /// Only valid after a part number.
    Mime,
}

pub(super) fn section_bytes<'a>(
    raw: &'a [u8],
    root: &MimePart,
    part: &[u32],
    kind: &SectionKind,
) -> Option<Cow<'a, [u8]>> {
    if part.is_empty() {
        return match kind {
            SectionKind::Full => Some(Cow::Borrowed(raw)),
            SectionKind::Mime => None,
            _ => message_section(raw, root, kind),
        };
    }
    let target = root.find(part)?;
    match kind {
        SectionKind::Full => slice(raw, target.body.clone()),
        SectionKind::Mime => slice(raw, target.header.clone()),
        _ => message_section(raw, target.encapsulated()?, kind),
    }
}

/// HEADER, TEXT or HEADER.FIELDS of the message whose top-level entity is
/// `message`.
fn message_section<'a>(
    raw: &'a [u8],
    message: &MimePart,
    kind: &SectionKind,
) -> Option<Cow<'a, [u8]>> {
    match kind {
        SectionKind::Header => slice(raw, message.header.clone()),
        SectionKind::Text => slice(raw, message.body.clone()),
        SectionKind::HeaderFields { names, not } => {
            let header = raw.get(message.header.clone())?;
            Some(Cow::Owned(header_fields(header, names, *not)))
        }
        SectionKind::Full | SectionKind::Mime => None,
    }
}

fn slice(raw: &[u8], range: Range<usize>) -> Option<Cow<'_, [u8]>> {
    raw.get(range).map(Cow::Borrowed)
}

fn header_fields(header: &[u8], names: &[String], not: bool) -> Vec<u8> {
    // Keep the message's own line-end style for lines we add.
    let eol: &[u8] = match header {
        [.., b'\r', b'\n'] => b"\r\n",
        [.., b'\n'] => b"\n",
        _ => b"\r\n",
    };
    let mut out = Vec::new();
    for field in fields(header) {
        let listed = names
            .iter()
            .any(|n| n.as_bytes().eq_ignore_ascii_case(field.name));
        if listed != not {
            out.extend_from_slice(field.bytes);
            if !field.bytes.ends_with(b"\n") {
                out.extend_from_slice(eol);
            }
        }
    }
    out.extend_from_slice(eol);
    out
}

/// RFC 3501 §6.4.5 `<offset.length>`: at most `len` bytes from `offset`.
/// An offset past the end gives an empty string.
pub fn partial(bytes: &[u8], offset: u32, len: u32) -> &[u8] {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    let end = start.saturating_add(len).min(bytes.len());
    bytes.get(start..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::super::part::tests::NESTED;
    use super::*;

    fn get(raw: &[u8], part: &[u32], kind: SectionKind) -> Option<String> {
        let root = MimePart::parse_message(raw);
        section_bytes(raw, &root, part, &kind).map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    fn fields_kind(names: &[&str], not: bool) -> SectionKind {
        SectionKind::HeaderFields {
            names: names.iter().map(|n| n.to_string()).collect(),
            not,
        }
    }

    #[test]
    fn top_level_sections() {
        let raw = NESTED.as_bytes();
        assert_eq!(get(raw, &[], SectionKind::Full).as_deref(), Some(NESTED));
        assert_eq!(
            get(raw, &[], SectionKind::Header).as_deref(),
            Some("From: a@b\r\nContent-Type: multipart/mixed; boundary=\"X\"\r\n\r\n")
        );
        let text = get(raw, &[], SectionKind::Text).unwrap_or_default();
        assert!(text.starts_with("preamble\r\n--X\r\n") && text.ends_with("--X--\r\nepilogue\r\n"));
        assert_eq!(get(raw, &[], SectionKind::Mime), None);
    }

    #[test]
    fn numbered_parts_and_mime_headers() {
        let raw = NESTED.as_bytes();
        assert_eq!(
            get(raw, &[1, 1], SectionKind::Full).as_deref(),
            Some("plain\r\nline2")
        );
        assert_eq!(
            get(raw, &[1], SectionKind::Mime).as_deref(),
            Some("Content-Type: multipart/alternative; boundary=Y\r\n\r\n")
        );
        assert_eq!(
            get(raw, &[1, 1], SectionKind::Mime).as_deref(),
            Some("\r\n")
        );
        assert_eq!(
            get(raw, &[1, 2], SectionKind::Mime).as_deref(),
            Some("Content-Type: text/html\r\n\r\n")
        );
        assert_eq!(
            get(raw, &[2], SectionKind::Mime).as_deref(),
            Some("Content-Type: message/rfc822\r\n\r\n")
        );
        assert_eq!(get(raw, &[3], SectionKind::Full), None);
    }

    #[test]
    fn encapsulated_messages() {
        let raw = NESTED.as_bytes();
        assert_eq!(
            get(raw, &[2], SectionKind::Header).as_deref(),
            Some("Subject: inner\r\nContent-Type: multipart/mixed; boundary=Z\r\n\r\n")
        );
        let text = get(raw, &[2], SectionKind::Text).unwrap_or_default();
        assert!(
            text.starts_with("--Z\r\n\r\nz1\r\n") && text.ends_with("deep body\r\n--Z--\r\n"),
            "{text}"
        );
        assert_eq!(
            get(raw, &[2, 2], SectionKind::Header).as_deref(),
            Some("Subject: deep\r\n\r\n")
        );
        assert_eq!(
            get(raw, &[2, 2], SectionKind::Text).as_deref(),
            Some("deep body")
        );
        assert_eq!(
            get(raw, &[2, 2, 1], SectionKind::Full).as_deref(),
            Some("deep body")
        );
        assert_eq!(
            get(raw, &[2, 2, 1], SectionKind::Mime).as_deref(),
            Some("Subject: deep\r\n\r\n")
        );
        assert_eq!(
            get(raw, &[2], fields_kind(&["subject"], false)).as_deref(),
            Some("Subject: inner\r\n\r\n")
        );
    }

    #[test]
    fn header_sections_need_a_message_part() {
        let raw = NESTED.as_bytes();
        assert_eq!(get(raw, &[1], SectionKind::Header), None);
        assert_eq!(get(raw, &[1, 1], SectionKind::Text), None);
        assert_eq!(get(raw, &[2, 1], fields_kind(&["x"], false)), None);
    }

    #[test]
    fn single_part_message() {
        let raw = b"Subject: s\r\nContent-Type: text/plain\r\n\r\nbody\r\n";
        assert_eq!(
            get(raw, &[1], SectionKind::Full).as_deref(),
            Some("body\r\n")
        );
        assert_eq!(
            get(raw, &[1], SectionKind::Mime).as_deref(),
            Some("Subject: s\r\nContent-Type: text/plain\r\n\r\n")
        );
        assert_eq!(get(raw, &[1], SectionKind::Header), None);
        assert_eq!(get(raw, &[1, 1], SectionKind::Full), None);
    }

    #[test]
    fn header_fields_in_order_with_folds() {
        let raw = b"Received: r1\r\nFrom: a@b\r\nSubject: one\r\n two\r\nReceived: r2\r\nTo: c@d\r\n\r\nbody";
        assert_eq!(
            get(
                raw,
                &[],
                fields_kind(&["SUBJECT", "from", "received"], false)
            )
            .as_deref(),
            Some("Received: r1\r\nFrom: a@b\r\nSubject: one\r\n two\r\nReceived: r2\r\n\r\n")
        );
        assert_eq!(
            get(raw, &[], fields_kind(&["Received", "Subject"], true)).as_deref(),
            Some("From: a@b\r\nTo: c@d\r\n\r\n")
        );
        assert_eq!(
            get(raw, &[], fields_kind(&["X-None"], false)).as_deref(),
            Some("\r\n")
        );
    }

    #[test]
    fn header_fields_keep_bare_lf_and_close_unterminated_fields() {
        assert_eq!(
            get(b"A: 1\nB: 2\n\nbody", &[], fields_kind(&["b"], false)).as_deref(),
            Some("B: 2\n\n")
        );
        assert_eq!(
            get(b"A: 1\r\nB: 2", &[], fields_kind(&["b"], false)).as_deref(),
            Some("B: 2\r\n\r\n")
        );
        assert_eq!(
            get(b"", &[], fields_kind(&["b"], false)).as_deref(),
            Some("\r\n")
        );
    }

    #[test]
    fn bare_lf_message_sections() {
        let lf = NESTED.replace("\r\n", "\n");
        assert_eq!(
            get(lf.as_bytes(), &[1, 1], SectionKind::Full).as_deref(),
            Some("plain\nline2")
        );
        assert_eq!(
            get(lf.as_bytes(), &[2, 2], SectionKind::Header).as_deref(),
            Some("Subject: deep\n\n")
        );
    }

    #[test]
    fn partial_ranges() {
        assert_eq!(partial(b"0123456789", 0, 3), b"012");
        assert_eq!(partial(b"0123456789", 8, 10), b"89");
        assert_eq!(partial(b"0123456789", 10, 1), b"");
        assert_eq!(partial(b"0123456789", u32::MAX, u32::MAX), b"");
        assert_eq!(partial(b"", 0, 5), b"");
    }
}
