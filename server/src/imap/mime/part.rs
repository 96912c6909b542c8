//! The MIME tree of a message as byte ranges into its raw bytes: RFC 2045
//! headers, RFC 2046 §5.1 multipart, §5.2.1 message/rfc822, and RFC 3501
//! §6.4.5 part numbers.
//!
//! Each entity is split into header (empty line included) and body. A
//! multipart body is cut at lines starting with `--boundary` (a prefix
//! match, as RFC 2046 §5.1.1 forbids a boundary inside a part). The line
//! end before a delimiter belongs to the delimiter, not to the part.
//! Preamble and epilogue stay in the multipart's body only. A missing close
//! delimiter ends the last part at the end of its parent's range. Splitting
//! is top-down within the range the parent gave, so a broken inner multipart
//! cannot eat its parent's later parts.
//!
//! Limits (see [`MAX_DEPTH`], [`MAX_PARTS`]) bound recursion and memory on
//! hostile input. A part past them is kept whole as a single leaf.

use std::ops::Range;

use super::content_type::{Param, decode_rfc2231, first_token, parse_content_type};
use super::header::{first, header_end, next_line};
use super::{MAX_DEPTH, MAX_PARTS};

#[derive(Debug)]
pub(super) struct MimePart {
    /// The header block, its terminating empty line included.
    pub header: Range<usize>,
    /// The body, as stored.
    pub body: Range<usize>,
    pub media: MediaType,
    /// Content-Transfer-Encoding's mechanism in upper case; empty if absent.
    pub encoding: Vec<u8>,
    pub kind: PartKind,
}

#[derive(Debug)]
pub(super) enum PartKind {
    Single,
    Multipart(Vec<MimePart>),
    /// message/rfc822: the encapsulated message's
    /// top-level entity (its header is the message header).
    Message(Box<MimePart>),
}

/// A Content-Type, type and subtype in upper case, parameters as written
/// (RFC 2231-merged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MediaType {
    pub main: Vec<u8>,
    pub sub: Vec<u8>,
    pub params: Vec<Param>,
}

/// The type of a part without a (valid) Content-Type: RFC 2045 §5.2, and
/// RFC 2046 §5.1.5 for multipart/digest.
#[derive(Debug, Clone, Copy)]
enum DefaultType {
    TextPlain,
    MessageRfc822,
}

impl MediaType {
    fn from_header(header: &[u8], default: DefaultType) -> MediaType {
        if let Some(field) = first(header, b"Content-Type")
            && let Some((main, sub, mut params)) = parse_content_type(&field.unfolded())
        {
            let main = main.to_ascii_uppercase();
            // RFC 2045 §5.2, RFC 2046 §4.1.2: a text part without a charset
            // is US-ASCII. Said explicitly, as for a part without a
            // Content-Type, so every TEXT part reads the same.
            if main == b"TEXT"
                && !params
                    .iter()
                    .any(|p| p.name.eq_ignore_ascii_case(b"charset"))
            {
                params.push(Param::default_charset());
            }
            return MediaType {
                main,
                sub: sub.to_ascii_uppercase(),
                params,
            };
        }
        match default {
            DefaultType::TextPlain => MediaType::text_plain(),
            DefaultType::MessageRfc822 => MediaType {
                main: b"MESSAGE".to_vec(),
                sub: b"RFC822".to_vec(),
                params: Vec::new(),
            },
        }
    }

    fn text_plain() -> MediaType {
        MediaType {
            main: b"TEXT".to_vec(),
            sub: b"PLAIN".to_vec(),
            params: vec![Param::default_charset()],
        }
    }

    /// The first parameter called `name` (ASCII case-insensitive).
    pub fn param(&self, name: &[u8]) -> Option<&[u8]> {
        self.params
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .map(|p| p.value.as_slice())
    }

    /// The multipart boundary: `boundary`, or else an RFC 2231 encoded
    /// `boundary*` (`us-ascii''outer`, continuations already merged),
    /// decoded. Dovecot 2.3 only reads the plain form; RFC 2231 §3 allows
    /// either, and a sender that encodes its boundary still means it.
    pub fn boundary(&self) -> Option<Vec<u8>> {
        let boundary = match self.param(b"boundary") {
            Some(plain) => plain.to_vec(),
            None => decode_rfc2231(self.param(b"boundary*")?),
        };
        (!boundary.is_empty()).then_some(boundary)
    }

    /// message/rfc822: the one type RFC 3501's body-type-msg describes with
    /// an envelope and a nested body. message/global (RFC 6532) is a
    /// body-type-basic for IMAP4rev1 clients, as in Dovecot 2.3: an
    /// envelope where RFC 3501's grammar expects extension data breaks
    /// their parsers. (RFC 9051 §9 adds MESSAGE/GLOBAL to body-type-msg for
    /// IMAP4rev2.)
    pub fn is_encapsulated_message(&self) -> bool {
        self.main == b"MESSAGE" && self.sub == b"RFC822"
    }
}

impl MimePart {
    /// Splits a whole message; never fails.
    pub fn parse_message(raw: &[u8]) -> MimePart {
        let mut budget = MAX_PARTS;
        parse_entity(raw, 0..raw.len(), DefaultType::TextPlain, 0, &mut budget)
    }

    /// RFC 3501 §6.4.5: the part numbered `path` in the message whose
    /// top-level entity is `self`. A non-multipart message has only part 1,
    /// itself. The parts of a message/rfc822 part are the parts of the
    /// message it encapsulates.
    pub fn find(&self, path: &[u32]) -> Option<&MimePart> {
        let (&first, rest) = path.split_first()?;
        let mut part = self.message_part(first)?;
        for &n in rest {
            part = match &part.kind {
                PartKind::Multipart(children) => nth(children, n)?,
                PartKind::Message(inner) => inner.message_part(n)?,
                PartKind::Single => return None,
            };
        }
        Some(part)
    }

    fn message_part(&self, n: u32) -> Option<&MimePart> {
        match &self.kind {
            PartKind::Multipart(children) => nth(children, n),
            _ => (n == 1).then_some(self),
        }
    }

    /// For a message/rfc822 part, the encapsulated message.
    pub fn encapsulated(&self) -> Option<&MimePart> {
        match &self.kind {
            PartKind::Message(inner) => Some(inner),
            _ => None,
        }
    }
}

fn nth(children: &[MimePart], n: u32) -> Option<&MimePart> {
    children.get(usize::try_from(n).ok()?.checked_sub(1)?)
}

/// The number of LF bytes in `raw[range]` (body-fld-lines).
pub(super) fn count_lines(raw: &[u8], range: Range<usize>) -> usize {
    raw.get(range)
        .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
}

fn parse_entity(
    raw: &[u8],
    range: Range<usize>,
    default: DefaultType,
    depth: usize,
    budget: &mut usize,
) -> MimePart {
    let body_start = header_end(raw, range.start, range.end);
    let header = range.start..body_start;
    let body = body_start..range.end.max(body_start);
    let header_bytes = raw.get(header.clone()).unwrap_or_default();
    let media = MediaType::from_header(header_bytes, default);
    let encoding = first(header_bytes, b"Content-Transfer-Encoding")
        .and_then(|f| first_token(&f.unfolded()).map(<[u8]>::to_ascii_uppercase))
        .unwrap_or_default();
    *budget = budget.saturating_sub(1);

    let may_nest = depth < MAX_DEPTH && *budget > 0;
    let boundary = media.boundary();
    let kind = match boundary {
        Some(boundary) if may_nest && media.main == b"MULTIPART" => {
            let child_default = if media.sub == b"DIGEST" {
                DefaultType::MessageRfc822
            } else {
                DefaultType::TextPlain
            };
            let ranges = split_multipart(raw, body.clone(), &boundary, *budget);
            let mut children: Vec<MimePart> = ranges
                .into_iter()
                .map(|r| parse_entity(raw, r, child_default, depth + 1, budget))
                .collect();
            if children.is_empty() {
                // body-type-mpart needs one body: an empty text/plain one.
                children.push(MimePart {
                    header: body.end..body.end,
                    body: body.end..body.end,
                    media: MediaType::text_plain(),
                    encoding: Vec::new(),
                    kind: PartKind::Single,
                });
            }
            PartKind::Multipart(children)
        }
        _ if may_nest && media.is_encapsulated_message() && is_identity(&encoding) => {
            PartKind::Message(Box::new(parse_entity(
                raw,
                body.clone(),
                DefaultType::TextPlain,
                depth + 1,
                budget,
            )))
        }
        _ => PartKind::Single,
    };
    MimePart {
        header,
        body,
        media,
        encoding,
        kind,
    }
}

/// RFC 2045 §6.1: the encodings that leave the bytes as they are.
pub(super) fn is_identity(encoding: &[u8]) -> bool {
    matches!(encoding, b"" | b"7BIT" | b"8BIT" | b"BINARY")
}

/// The ranges of a multipart's parts, at most `max_parts` of them (the
/// last one then runs to the end).
fn split_multipart(
    raw: &[u8],
    body: Range<usize>,
    boundary: &[u8],
    max_parts: usize,
) -> Vec<Range<usize>> {
    let mut delimiter = b"--".to_vec();
    delimiter.extend_from_slice(boundary);
    let mut parts = Vec::new();
    let mut open: Option<usize> = None;
    let mut pos = body.start;
    while pos < body.end {
        let line_end = next_line(raw, pos, body.end);
        let line = raw.get(pos..line_end).unwrap_or_default();
        if let Some(after) = line.strip_prefix(delimiter.as_slice()) {
            let close = after.starts_with(b"--");
            if open.is_none() || close || parts.len() + 2 <= max_parts {
                if let Some(start) = open.take() {
                    parts.push(start..without_line_end(raw, start, pos));
                }
                if close {
                    return parts;
                }
                open = Some(line_end);
            }
        }
        pos = line_end;
    }
    if let Some(start) = open {
        parts.push(start..body.end);
    }
    parts
}

/// `pos`, moved back over the CRLF or LF just before it (not past `start`).
fn without_line_end(raw: &[u8], start: usize, pos: usize) -> usize {
    let mut end = pos;
    if end > start && raw.get(end - 1) == Some(&b'\n') {
        end -= 1;
        if end > start && raw.get(end - 1) == Some(&b'\r') {
            end -= 1;
        }
    }
    end
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// multipart/mixed holding a multipart/alternative, then a
    /// message/rfc822 whose multipart holds another message/rfc822.
    pub(in super::super) const NESTED: &str = "From: a@b\r\n\
        Content-Type: multipart/mixed; boundary=\"X\"\r\n\
        \r\n\
        preamble\r\n\
        --X\r\n\
        Content-Type: multipart/alternative; boundary=Y\r\n\
        \r\n\
        --Y\r\n\
        \r\n\
        plain\r\n\
        line2\r\n\
        --Y\r\n\
        Content-Type: text/html\r\n\
        \r\n\
        <b>x</b>\r\n\
        --Y--\r\n\
        epi-inner\r\n\
        --X\r\n\
        Content-Type: message/rfc822\r\n\
        \r\n\
        Subject: inner\r\n\
        Content-Type: multipart/mixed; boundary=Z\r\n\
        \r\n\
        --Z\r\n\
        \r\n\
        z1\r\n\
        --Z\r\n\
        Content-Type: message/rfc822\r\n\
        \r\n\
        Subject: deep\r\n\
        \r\n\
        deep body\r\n\
        --Z--\r\n\
        \r\n\
        --X--\r\n\
        epilogue\r\n";

    fn body<'a>(raw: &'a [u8], root: &MimePart, path: &[u32]) -> Option<&'a str> {
        let part = root.find(path)?;
        std::str::from_utf8(&raw[part.body.clone()]).ok()
    }

    fn header<'a>(raw: &'a [u8], root: &MimePart, path: &[u32]) -> Option<&'a str> {
        let part = root.find(path)?;
        std::str::from_utf8(&raw[part.header.clone()]).ok()
    }

    fn check_nested(raw: &[u8], nl: &str) {
        let root = MimePart::parse_message(raw);
        let b = |path: &[u32]| body(raw, &root, path).map(|s| s.replace(nl, "|"));
        assert_eq!(
            b(&[1]).as_deref(),
            Some("--Y||plain|line2|--Y|Content-Type: text/html||<b>x</b>|--Y--|epi-inner")
        );
        assert_eq!(b(&[1, 1]).as_deref(), Some("plain|line2"));
        assert_eq!(header(raw, &root, &[1, 1]), Some(nl));
        assert_eq!(b(&[1, 2]).as_deref(), Some("<b>x</b>"));
        assert_eq!(
            b(&[2]).as_deref().map(|s| s.starts_with("Subject: inner|")),
            Some(true)
        );
        assert_eq!(
            b(&[2]).as_deref().map(|s| s.ends_with("deep body|--Z--|")),
            Some(true)
        );
        assert_eq!(b(&[2, 1]).as_deref(), Some("z1"));
        assert_eq!(b(&[2, 2]).as_deref(), Some("Subject: deep||deep body"));
        assert_eq!(b(&[2, 2, 1]).as_deref(), Some("deep body"));
        for missing in [
            &[][..],
            &[0],
            &[3],
            &[1, 3],
            &[1, 1, 1],
            &[2, 2, 1, 1],
            &[2, 3],
        ] {
            assert!(root.find(missing).is_none(), "{missing:?}");
        }
        let inner = root
            .find(&[2])
            .and_then(MimePart::encapsulated)
            .expect("inner message");
        assert_eq!(inner.media.sub, b"MIXED");
        assert_eq!(
            &raw[inner.header.clone()].starts_with(b"Subject: inner"),
            &true
        );
    }

    #[test]
    fn nested_tree_crlf() {
        check_nested(NESTED.as_bytes(), "\r\n");
    }

    #[test]
    fn nested_tree_bare_lf() {
        check_nested(NESTED.replace("\r\n", "\n").as_bytes(), "\n");
    }

    #[test]
    fn single_part_message_is_its_own_part_one() {
        let raw = b"Subject: x\r\n\r\nhello\r\n";
        let root = MimePart::parse_message(raw);
        assert_eq!(body(raw, &root, &[1]), Some("hello\r\n"));
        assert_eq!(header(raw, &root, &[1]), Some("Subject: x\r\n\r\n"));
        assert!(root.find(&[1, 1]).is_none());
        assert!(root.find(&[2]).is_none());
        assert_eq!(root.media, MediaType::text_plain());
    }

    #[test]
    fn digest_children_default_to_message_rfc822() {
        let raw = b"Content-Type: multipart/digest; boundary=X\r\n\r\n--X\r\n\r\nSubject: d1\r\n\r\nb1\r\n\
                    --X\r\nContent-Type: text/plain\r\n\r\nb2\r\n--X--\r\n";
        let root = MimePart::parse_message(raw);
        let first = root.find(&[1]).expect("part 1");
        assert!(matches!(first.kind, PartKind::Message(_)));
        assert_eq!(body(raw, &root, &[1, 1]), Some("b1"));
        assert_eq!(
            root.find(&[2]).map(|p| p.media.main.clone()),
            Some(b"TEXT".to_vec())
        );
    }

    #[test]
    fn outer_boundary_ends_an_unterminated_inner_multipart() {
        let raw = b"Content-Type: multipart/mixed; boundary=X\r\n\r\n--X\r\n\
                    Content-Type: multipart/mixed; boundary=Y\r\n\r\n--Y\r\n\r\ninner unterminated\r\n\
                    --X\r\n\r\nsecond\r\n--X--\r\n";
        let root = MimePart::parse_message(raw);
        assert_eq!(body(raw, &root, &[1, 1]), Some("inner unterminated"));
        assert_eq!(body(raw, &root, &[2]), Some("second"));
    }

    #[test]
    fn missing_close_delimiter_runs_to_the_end() {
        let raw = b"Content-Type: multipart/mixed; boundary=X\r\n\r\n--X\r\n\r\nunterminated";
        let root = MimePart::parse_message(raw);
        assert_eq!(body(raw, &root, &[1]), Some("unterminated"));
    }

    #[test]
    fn delimiter_right_after_delimiter_gives_an_empty_part() {
        let raw = b"Content-Type: multipart/mixed; boundary=X\n\n--X\n--X\n\nb\n--X--\n";
        let root = MimePart::parse_message(raw);
        assert_eq!(body(raw, &root, &[1]), Some(""));
        assert_eq!(header(raw, &root, &[1]), Some(""));
        assert_eq!(body(raw, &root, &[2]), Some("b"));
    }

    #[test]
    fn multipart_without_parts_gets_one_empty_part() {
        let raw = b"Content-Type: multipart/mixed; boundary=X\r\n\r\n--X--\r\n";
        let root = MimePart::parse_message(raw);
        assert_eq!(body(raw, &root, &[1]), Some(""));
        assert!(root.find(&[2]).is_none());
    }

    #[test]
    fn unsplittable_types_are_single() {
        for raw in [
            &b"Content-Type: multipart/mixed\r\n\r\n--X\r\n\r\nno boundary\r\n"[..],
            b"Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n\r\nx\r\n",
            b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\nU3ViamVjdDogaGkNCg0K\r\n",
        ] {
            let root = MimePart::parse_message(raw);
            assert!(matches!(root.kind, PartKind::Single), "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn empty_message_rfc822_body() {
        let raw = b"Content-Type: message/rfc822\r\n\r\n";
        let root = MimePart::parse_message(raw);
        let inner = root.encapsulated().expect("message");
        assert!(inner.header.is_empty() && inner.body.is_empty());
    }

    #[test]
    fn malformed_messages() {
        for raw in [
            &b""[..],
            b"\r\n",
            b"Subject: x",
            b"Subject: x\r\n",
            b"\x00\xff junk\n\nbody",
            b"\n\n\n",
            b"--X--",
        ] {
            let root = MimePart::parse_message(raw);
            assert!(root.header.end <= raw.len() && root.body.end == raw.len());
            assert!(root.find(&[1]).is_some());
        }
    }

    #[test]
    fn deep_nesting_is_cut_at_max_depth() {
        let raw = "Content-Type: message/rfc822\n\n".repeat(50_000) + "Subject: end\n\nbody\n";
        let root = MimePart::parse_message(raw.as_bytes());
        let mut depth = 0;
        let mut part = &root;
        while let Some(inner) = part.encapsulated() {
            part = inner;
            depth += 1;
        }
        assert_eq!(depth, MAX_DEPTH);
        assert!(matches!(part.kind, PartKind::Single));
    }

    #[test]
    fn part_count_is_capped() {
        let raw = "Content-Type: multipart/mixed; boundary=b\n\n".to_string()
            + &"--b\n\nx\n".repeat(MAX_PARTS * 2)
            + "--b--\n";
        let root = MimePart::parse_message(raw.as_bytes());
        let PartKind::Multipart(children) = &root.kind else {
            panic!("multipart expected")
        };
        assert!(children.len() < MAX_PARTS, "{}", children.len());
        let last = children.last().expect("children");
        assert!(last.body.len() > 1000);
    }
}
