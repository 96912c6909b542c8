//! IMAP `string` / `nstring` output (RFC 3501 §4.3, §4.5; RFC 9051 §4.3).
//!
//! A quoted string may hold any 7-bit character except NUL, CR and LF, with
//! `"` and `\` escaped. Anything else goes out as a synchronizing literal
//! `{n}\r\n` followed by the bytes. Neither form may carry NUL (that needs
//! literal8, RFC 3516), so NUL becomes U+FFFD.

use std::borrow::Cow;

const REPLACEMENT_CHARACTER: &[u8] = "\u{FFFD}".as_bytes();

/// Appends `s` as an IMAP string.
pub(super) fn push_string(out: &mut Vec<u8>, s: &[u8]) {
    if s.iter().all(|&b| is_quotable(b)) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        let s = without_nul(s);
        out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
        out.extend_from_slice(&s);
    }
}

/// Appends `s` as an IMAP nstring: NIL when absent.
pub(super) fn push_nstring(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => push_string(out, s),
        None => out.extend_from_slice(b"NIL"),
    }
}

fn is_quotable(b: u8) -> bool {
    matches!(b, 0x01..=0x7f) && b != b'\r' && b != b'\n'
}

fn without_nul(s: &[u8]) -> Cow<'_, [u8]> {
    if !s.contains(&0) {
        return Cow::Borrowed(s);
    }
    let mut clean = Vec::with_capacity(s.len() + 8);
    for &b in s {
        if b == 0 {
            clean.extend_from_slice(REPLACEMENT_CHARACTER);
        } else {
            clean.push(b);
        }
    }
    Cow::Owned(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push_string(&mut out, s);
        out
    }

    #[test]
    fn plain_text_is_quoted() {
        assert_eq!(string(b"Hello world"), b"\"Hello world\"");
        assert_eq!(string(b""), b"\"\"");
    }

    #[test]
    fn quote_and_backslash_are_escaped() {
        assert_eq!(string(br#"a "b" \c"#), br#""a \"b\" \\c""#);
    }

    #[test]
    fn line_ends_and_8bit_become_literals() {
        assert_eq!(string(b"a\r\nb"), b"{4}\r\na\r\nb");
        assert_eq!(string(b"a\nb"), b"{3}\r\na\nb");
        assert_eq!(string("Café".as_bytes()), b"{5}\r\nCaf\xc3\xa9");
        assert_eq!(string(b"x\"\xff"), b"{3}\r\nx\"\xff");
    }

    #[test]
    fn nul_is_replaced() {
        assert_eq!(string(b"a\0b"), b"{5}\r\na\xef\xbf\xbdb");
    }

    #[test]
    fn nstring_nil() {
        let mut out = Vec::new();
        push_nstring(&mut out, None);
        out.push(b' ');
        push_nstring(&mut out, Some(b"x"));
        assert_eq!(out, b"NIL \"x\"");
    }
}
