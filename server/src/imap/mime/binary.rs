//! RFC 3516 (and RFC 9051 §6.4.5 BINARY): a part's body with its
//! Content-Transfer-Encoding removed.
//!
//! - `BINARY[]` is the whole message, unchanged.
//! - A multipart or message/rfc822 part is returned as stored; RFC 2045 §6.4
//!   allows those only identity encodings.
//! - 7bit, 8bit, binary or no encoding: the body as stored.
//! - base64 and quoted-printable are decoded leniently, as RFC 2045 asks of
//!   readers. base64 (§6.8) ignores characters outside the alphabet.
//!   Quoted-printable (§6.7) drops trailing whitespace, joins soft line
//!   breaks, keeps a malformed `=` as is, and keeps line ends as stored.
//!   mail-parser's public decoders return `None` on the first stray
//!   character instead, which would turn a slightly damaged attachment into
//!   an error.
//! - Any other encoding is [`BinaryError::UnknownCte`], which RFC 3516 §4.3
//!   answers with `NO [UNKNOWN-CTE]`.

use std::borrow::Cow;
use std::fmt;

use super::part::{MimePart, PartKind, is_identity};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BinaryError {
    /// The part number names no part of this message.
    NoSuchPart,
    /// The part's Content-Transfer-Encoding (upper case) is not one we can
    /// decode: RFC 3516 `[UNKNOWN-CTE]`.
    UnknownCte(Vec<u8>),
}

impl fmt::Display for BinaryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BinaryError::NoSuchPart => f.write_str("no such message part"),
            BinaryError::UnknownCte(cte) => {
                write!(
                    f,
                    "unknown content-transfer-encoding {}",
                    String::from_utf8_lossy(cte)
                )
            }
        }
    }
}

impl std::error::Error for BinaryError {}

pub(super) fn binary_bytes<'a>(
    raw: &'a [u8],
    root: &MimePart,
    part: &[u32],
) -> Result<Cow<'a, [u8]>, BinaryError> {
    if part.is_empty() {
        return Ok(Cow::Borrowed(raw));
    }
    let target = root.find(part).ok_or(BinaryError::NoSuchPart)?;
    let body = raw
        .get(target.body.clone())
        .ok_or(BinaryError::NoSuchPart)?;
    if !matches!(target.kind, PartKind::Single) || is_identity(&target.encoding) {
        return Ok(Cow::Borrowed(body));
    }
    match target.encoding.as_slice() {
        b"BASE64" => Ok(Cow::Owned(decode_base64(body))),
        b"QUOTED-PRINTABLE" => Ok(Cow::Owned(decode_quoted_printable(body))),
        other => Err(BinaryError::UnknownCte(other.to_vec())),
    }
}

/// RFC 2045 §6.8, lenient: non-alphabet bytes are skipped, `=` ends a
/// group (so concatenated padded blocks decode too).
fn decode_base64(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() / 4 * 3 + 3);
    let mut acc: u32 = 0;
    let mut sextets = 0;
    for &b in input {
        let value = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                flush_base64(&mut out, acc, sextets);
                acc = 0;
                sextets = 0;
                continue;
            }
            _ => continue,
        };
        acc = (acc << 6) | u32::from(value);
        sextets += 1;
        if sextets == 4 {
            out.extend_from_slice(&acc.to_be_bytes()[1..]);
            acc = 0;
            sextets = 0;
        }
    }
    flush_base64(&mut out, acc, sextets);
    out
}

/// Emits the whole bytes held by an incomplete group of `sextets`.
fn flush_base64(out: &mut Vec<u8>, acc: u32, sextets: u32) {
    match sextets {
        2 => out.push((acc >> 4) as u8),
        3 => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
        _ => {}
    }
}

/// RFC 2045 §6.7, lenient; line ends are kept as stored (CRLF or LF).
fn decode_quoted_printable(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    for line in input.split_inclusive(|&b| b == b'\n') {
        let (content, eol): (&[u8], &[u8]) = match line {
            [rest @ .., b'\r', b'\n'] => (rest, b"\r\n"),
            [rest @ .., b'\n'] => (rest, b"\n"),
            _ => (line, b""),
        };
        // Rule 3: trailing whitespace was added in transport.
        let end = content
            .iter()
            .rposition(|&b| b != b' ' && b != b'\t')
            .map_or(0, |i| i + 1);
        let content = &content[..end];
        let (content, soft_break) = match content.strip_suffix(b"=") {
            Some(rest) => (rest, true),
            None => (content, false),
        };
        let mut i = 0;
        while let Some(&b) = content.get(i) {
            if b == b'='
                && let (Some(hi), Some(lo)) = (
                    content.get(i + 1).and_then(hex),
                    content.get(i + 2).and_then(hex),
                )
            {
                out.push((hi << 4) | lo);
                i += 3;
                continue;
            }
            out.push(b);
            i += 1;
        }
        if !soft_break {
            out.extend_from_slice(eol);
        }
    }
    out
}

pub(super) fn hex(b: &u8) -> Option<u8> {
    char::from(*b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::super::part::tests::NESTED;
    use super::*;

    fn binary(raw: &[u8], part: &[u32]) -> Result<Vec<u8>, BinaryError> {
        binary_bytes(raw, &MimePart::parse_message(raw), part).map(Cow::into_owned)
    }

    #[test]
    fn base64_lenient() {
        assert_eq!(decode_base64(b"SGVsbG8sIHdvcmxkIQ=="), b"Hello, world!");
        assert_eq!(
            decode_base64(b"SGVs\r\nbG8s\r\nIHdv cmxk\tIQ"),
            b"Hello, world!"
        );
        assert_eq!(decode_base64(b"SGV*sb!G8=\r\nIQ=="), b"Hello!");
        assert_eq!(decode_base64(b""), b"");
        assert_eq!(decode_base64(b"A"), b"");
        assert_eq!(decode_base64(b"/w=="), b"\xff");
    }

    #[test]
    fn quoted_printable_lenient() {
        assert_eq!(
            decode_quoted_printable(b"Caf=C3=A9 =3D ok"),
            "Café = ok".as_bytes()
        );
        assert_eq!(
            decode_quoted_printable(b"soft=\r\nbreak\r\nnext  \r\n"),
            b"softbreak\r\nnext\r\n"
        );
        assert_eq!(decode_quoted_printable(b"lf=\nonly\n"), b"lfonly\n");
        assert_eq!(
            decode_quoted_printable(b"bad =ZZ =4 lower=e9 end="),
            b"bad =ZZ =4 lower\xe9 end"
        );
        assert_eq!(decode_quoted_printable(b"pad = \r\nx"), b"pad x");
    }

    #[test]
    fn decodes_parts_by_their_encoding() {
        let raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
                    Content-Transfer-Encoding: base64\r\n\r\nAAEC/w==\r\n--b\r\n\
                    Content-Transfer-Encoding: Quoted-Printable\r\n\r\na=3Db=\r\nc\r\n--b\r\n\
                    Content-Transfer-Encoding: 8bit\r\n\r\n\xe9t\xe9\r\n--b\r\n\
                    Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin\r\n--b--\r\n";
        assert_eq!(binary(raw, &[1]), Ok(vec![0, 1, 2, 255]));
        assert_eq!(binary(raw, &[2]), Ok(b"a=bc".to_vec()));
        assert_eq!(binary(raw, &[3]), Ok(b"\xe9t\xe9".to_vec()));
        assert_eq!(
            binary(raw, &[4]),
            Err(BinaryError::UnknownCte(b"X-UUENCODE".to_vec()))
        );
        assert_eq!(binary(raw, &[5]), Err(BinaryError::NoSuchPart));
        assert_eq!(binary(raw, &[]).map(|b| b.len()), Ok(raw.len()));
    }

    #[test]
    fn single_part_and_nested_parts() {
        let raw = b"Content-Transfer-Encoding: base64\r\n\r\naGk=\r\n";
        assert_eq!(binary(raw, &[1]), Ok(b"hi".to_vec()));
        assert_eq!(
            binary(NESTED.as_bytes(), &[2, 2, 1]),
            Ok(b"deep body".to_vec())
        );
        let message_part = binary(NESTED.as_bytes(), &[2]).unwrap_or_default();
        assert!(message_part.starts_with(b"Subject: inner\r\n"));
    }
}
