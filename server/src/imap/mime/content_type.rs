//! MIME structured header values (RFC 2045 §5.1, RFC 2183, RFC 2231, RFC
//! 3282): Content-Type, Content-Disposition, Content-Transfer-Encoding and
//! Content-Language, parsed from the unfolded raw value.
//!
//! The parser is lenient the way mail readers are. Comments are skipped. An
//! unquoted parameter value runs to the next `;`, whitespace or comment, so
//! `boundary=----=_Part_1` works. A malformed parameter is skipped up to the
//! next `;`.
//!
//! RFC 2231 (§3 continuations, §4 charset and language) is merged as
//! Dovecot's rfc2231-parser does:
//! - `name*0=a; name*1=b` gives `name` = `ab`.
//! - If any segment is extended (`*N*`), the result is `name*` holding
//!   `charset'lang'` and the percent-encoded value. Plain segments are
//!   escaped (`%` → `%25`), and a bare `''` prefix is added when the first
//!   segment is not extended.
//! - When the indexes are not exactly 0..n, the segments are kept unmerged
//!   as `name*N` / `name*N*`.
//!
//! A merged parameter stays where its first segment was.

use std::collections::HashMap;

/// One `attribute=value` parameter, name as written, value unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Param {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

impl Param {
    /// `charset=US-ASCII`, RFC 2045 §5.2's default for text.
    pub fn default_charset() -> Param {
        Param {
            name: b"charset".to_vec(),
            value: b"US-ASCII".to_vec(),
        }
    }
}

/// The value of an RFC 2231 §4 extended parameter (`charset'lang'%xx...`,
/// as merged under a `name*`) with the charset and language dropped and
/// the percent-encoding undone. The bytes stay in the named charset; a
/// broken `%` escape is kept as written.
pub(super) fn decode_rfc2231(value: &[u8]) -> Vec<u8> {
    let mut quotes = value.iter().enumerate().filter(|&(_, &b)| b == b'\'');
    let encoded = match (quotes.next(), quotes.next()) {
        (Some(_), Some((second, _))) => &value[second + 1..],
        _ => value,
    };
    let mut out = Vec::with_capacity(encoded.len());
    let mut i = 0;
    while let Some(&b) = encoded.get(i) {
        let hex = |at: usize| encoded.get(at).and_then(super::binary::hex);
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                let decoded = high << 4 | low;
                out.push(decoded);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Content-Type: `(type, subtype, params)`, or `None` when the value has no
/// `type/subtype` (RFC 2045 §5.2 then says: treat as text/plain).
pub(super) fn parse_content_type(value: &[u8]) -> Option<(Vec<u8>, Vec<u8>, Vec<Param>)> {
    let mut cur = Cursor { s: value, i: 0 };
    let main = cur.token()?.to_vec();
    if !cur.eat(b'/') {
        return None;
    }
    let sub = cur.token()?.to_vec();
    Some((main, sub, cur.params()))
}

/// Content-Disposition: `(type, params)`, `None` without a type token.
pub(super) fn parse_disposition(value: &[u8]) -> Option<(Vec<u8>, Vec<Param>)> {
    let mut cur = Cursor { s: value, i: 0 };
    let kind = cur.token()?.to_vec();
    Some((kind, cur.params()))
}

/// The first token of a value, e.g. Content-Transfer-Encoding's mechanism.
pub(super) fn first_token(value: &[u8]) -> Option<&[u8]> {
    Cursor { s: value, i: 0 }.token()
}

/// Content-Language (RFC 3282): the comma-separated language tags.
pub(super) fn parse_languages(value: &[u8]) -> Vec<Vec<u8>> {
    let mut cur = Cursor { s: value, i: 0 };
    let mut tags = Vec::new();
    loop {
        match cur.token() {
            Some(tag) => tags.push(tag.to_vec()),
            None if cur.at_end() => return tags,
            None => cur.i += 1,
        }
    }
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// Skips whitespace and (nested) comments.
    fn skip_cfws(&mut self) {
        while let Some(b) = self.peek() {
            if matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
                self.i += 1;
            } else if b == b'(' {
                self.skip_comment();
            } else {
                break;
            }
        }
    }

    fn skip_comment(&mut self) {
        let mut depth = 0usize;
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'\\' => self.i += 1,
                b'(' => depth += 1,
                b')' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return;
                    }
                }
                _ => {}
            }
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.skip_cfws();
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// RFC 2045 token (8-bit bytes tolerated), after optional CFWS.
    fn token(&mut self) -> Option<&'a [u8]> {
        self.skip_cfws();
        let start = self.i;
        while self.peek().is_some_and(is_token_char) {
            self.i += 1;
        }
        (self.i > start).then(|| &self.s[start..self.i])
    }

    /// A parameter value: a quoted string, or anything up to `;`,
    /// whitespace or a comment.
    fn value(&mut self) -> Vec<u8> {
        self.skip_cfws();
        if self.peek() == Some(b'"') {
            self.i += 1;
            let mut out = Vec::new();
            while let Some(b) = self.peek() {
                self.i += 1;
                match b {
                    b'"' => break,
                    b'\\' => {
                        if let Some(next) = self.peek() {
                            out.push(next);
                            self.i += 1;
                        }
                    }
                    b'\r' | b'\n' => {}
                    _ => out.push(b),
                }
            }
            return out;
        }
        let start = self.i;
        while self
            .peek()
            .is_some_and(|b| !matches!(b, b';' | b' ' | b'\t' | b'\r' | b'\n' | b'('))
        {
            self.i += 1;
        }
        self.s[start..self.i].to_vec()
    }

    /// `*(";" attribute "=" value)`, RFC 2231-merged.
    fn params(&mut self) -> Vec<Param> {
        let mut raw = Vec::new();
        loop {
            self.skip_cfws();
            if self.at_end() {
                break;
            }
            if !self.eat(b';') {
                self.skip_past_semicolon();
                continue;
            }
            let Some(name) = self.token() else { continue };
            if !self.eat(b'=') {
                continue;
            }
            let value = self.value();
            raw.push(Param {
                name: name.to_vec(),
                value,
            });
        }
        merge_rfc2231(raw)
    }

    fn skip_past_semicolon(&mut self) {
        while let Some(b) = self.peek() {
            if b == b';' {
                return;
            }
            if b == b'"' {
                self.value();
            } else if b == b'(' {
                self.skip_comment();
            } else {
                self.i += 1;
            }
        }
    }
}

/// RFC 2045 §5.1: any CHAR except SPACE, CTLs and tspecials.
fn is_token_char(b: u8) -> bool {
    b > b' ' && b != 0x7f && !b"()<>@,;:\\\"/[]?=".contains(&b)
}

/// A segment of an RFC 2231 parameter: `name*N` or `name*N*` or `name*`.
struct Segment {
    name: Vec<u8>,
    index: u32,
    extended: bool,
}

fn segment(name: &[u8]) -> Option<Segment> {
    let star = name.iter().position(|&b| b == b'*')?;
    let (base, rest) = (&name[..star], &name[star + 1..]);
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let (index, extended) = match &rest[digits..] {
        b"" if digits == 0 => (0, true),
        b"" => (parse_index(&rest[..digits])?, false),
        b"*" if digits > 0 => (parse_index(&rest[..digits])?, true),
        _ => return None,
    };
    Some(Segment {
        name: base.to_vec(),
        index,
        extended,
    })
}

fn parse_index(digits: &[u8]) -> Option<u32> {
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn merge_rfc2231(raw: Vec<Param>) -> Vec<Param> {
    let segments: Vec<Option<Segment>> = raw.iter().map(|p| segment(&p.name)).collect();
    if segments.iter().all(Option::is_none) {
        return raw;
    }
    // Positions of each name's segments, found in one pass (a hostile
    // header may hold many thousands).
    let mut by_name: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
    for (i, s) in segments.iter().enumerate() {
        if let Some(s) = s {
            by_name
                .entry(s.name.to_ascii_lowercase())
                .or_default()
                .push(i);
        }
    }
    let mut out = Vec::with_capacity(raw.len());
    for (i, param) in raw.iter().enumerate() {
        let Some(first) = &segments[i] else {
            out.push(param.clone());
            continue;
        };
        // The first segment of a name emits the merged parameter; the
        // others were taken along with it.
        let Some(positions) = by_name.remove(&first.name.to_ascii_lowercase()) else {
            continue;
        };
        let mut group: Vec<(u32, bool, &Vec<u8>)> = positions
            .iter()
            .filter_map(|&j| Some((segments.get(j)?.as_ref()?, raw.get(j)?)))
            .map(|(s, p)| (s.index, s.extended, &p.value))
            .collect();
        group.sort_by_key(|&(index, _, _)| index);
        let contiguous = group
            .iter()
            .enumerate()
            .all(|(n, &(index, _, _))| index as usize == n);
        if !contiguous {
            for &(index, extended, value) in &group {
                let star = if extended { "*" } else { "" };
                let mut name = first.name.clone();
                name.extend_from_slice(format!("*{index}{star}").as_bytes());
                out.push(Param {
                    name,
                    value: value.clone(),
                });
            }
            continue;
        }
        let any_extended = group.iter().any(|&(_, extended, _)| extended);
        let mut name = first.name.clone();
        let mut value = Vec::new();
        if any_extended {
            name.push(b'*');
            if group.first().is_some_and(|&(_, extended, _)| !extended) {
                value.extend_from_slice(b"''");
            }
        }
        for &(_, extended, segment_value) in &group {
            if any_extended && !extended {
                for &b in segment_value {
                    if b == b'%' {
                        value.extend_from_slice(b"%25");
                    } else {
                        value.push(b);
                    }
                }
            } else {
                value.extend_from_slice(segment_value);
            }
        }
        out.push(Param { name, value });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(value: &str) -> Vec<(String, String)> {
        let (_, _, p) = parse_content_type(value.as_bytes()).expect("content type");
        p.into_iter()
            .map(|p| {
                (
                    String::from_utf8_lossy(&p.name).into_owned(),
                    String::from_utf8_lossy(&p.value).into_owned(),
                )
            })
            .collect()
    }

    fn pair(a: &str, b: &str) -> (String, String) {
        (a.to_string(), b.to_string())
    }

    #[test]
    fn simple_content_type() {
        let (t, s, p) =
            parse_content_type(b"Text/Plain; charset=\"utf-8\"; format=flowed").expect("ct");
        assert_eq!((t.as_slice(), s.as_slice()), (&b"Text"[..], &b"Plain"[..]));
        assert_eq!(
            p[0],
            Param {
                name: b"charset".to_vec(),
                value: b"utf-8".to_vec()
            }
        );
        assert_eq!(p[1].value, b"flowed");
    }

    #[test]
    fn comments_spaces_and_escapes() {
        let (t, s, p) =
            parse_content_type(b" (c) text (x) / html (y) ; name = \"a \\\"b\\\" c\" (z)")
                .expect("ct");
        assert_eq!((t, s), (b"text".to_vec(), b"html".to_vec()));
        assert_eq!(
            p,
            vec![Param {
                name: b"name".to_vec(),
                value: b"a \"b\" c".to_vec()
            }]
        );
    }

    #[test]
    fn unquoted_boundary_with_equals() {
        assert_eq!(
            params("multipart/mixed; boundary=----=_Part_1_2.3"),
            vec![pair("boundary", "----=_Part_1_2.3")]
        );
    }

    #[test]
    fn invalid_content_type() {
        assert_eq!(parse_content_type(b"text"), None);
        assert_eq!(parse_content_type(b"/plain"), None);
        assert_eq!(parse_content_type(b""), None);
        assert_eq!(parse_content_type(b"text/"), None);
    }

    #[test]
    fn junk_parameters_are_skipped() {
        assert_eq!(
            params("text/plain; junk; =x; a=1; b; c=\"unterminated"),
            vec![pair("a", "1"), pair("c", "unterminated")]
        );
        assert_eq!(
            params("text/plain; name=my file.txt; x=y"),
            vec![pair("name", "my"), pair("x", "y")]
        );
    }

    #[test]
    fn rfc2231_plain_continuations() {
        assert_eq!(
            params("application/x-stuff; title*1=\" two\"; title*0=one; other=1"),
            vec![pair("title", "one two"), pair("other", "1")]
        );
    }

    #[test]
    fn rfc2231_extended() {
        assert_eq!(
            params("application/x; filename*=utf-8''%E2%82%AC%20rates.txt"),
            vec![pair("filename*", "utf-8''%E2%82%AC%20rates.txt")]
        );
        assert_eq!(
            params("application/x; filename*0*=utf-8'en'%E2%82%AC; filename*1=\" 100%\""),
            vec![pair("filename*", "utf-8'en'%E2%82%AC 100%25")]
        );
    }

    #[test]
    fn rfc2231_dovecot_test_vector() {
        // Dovecot's test-rfc2231-parser input; same merged values (our order
        // follows the first segment instead of sorting by name).
        let got = params(
            "a/b; key4*=us-ascii''foo; key*2=ba%; key2*0=a; key3*0*=us-ascii'en'xyz; key*0=\"foo\"; \
             key2*1*=b%25; key3*1=plop%; key*1=baz",
        );
        assert_eq!(
            got,
            vec![
                pair("key4*", "us-ascii''foo"),
                pair("key", "foobazba%"),
                pair("key2*", "''ab%25"),
                pair("key3*", "us-ascii'en'xyzplop%25"),
            ]
        );
    }

    #[test]
    fn rfc2231_values_decode() {
        assert_eq!(decode_rfc2231(b"us-ascii''outer-b"), b"outer-b");
        assert_eq!(
            decode_rfc2231(b"utf-8'en'%E2%82%AC%20x"),
            "\u{20ac} x".as_bytes()
        );
        assert_eq!(decode_rfc2231(b"''a%25b"), b"a%b");
        // Broken escapes and a missing charset'lang' prefix stay as written.
        assert_eq!(decode_rfc2231(b"x'y'100%%zz%4"), b"100%%zz%4");
        assert_eq!(decode_rfc2231(b"no-quotes%41"), b"no-quotesA");
    }

    #[test]
    fn rfc2231_missing_index_is_left_unmerged() {
        assert_eq!(
            params("a/b; n*0=x; n*2*=z"),
            vec![pair("n*0", "x"), pair("n*2*", "z")]
        );
        assert_eq!(params("a/b; n*x=1"), vec![pair("n*x", "1")]);
    }

    #[test]
    fn many_segments_merge_in_linear_time() {
        let mut value = String::from("a/b");
        for i in (0..50_000).rev() {
            value.push_str(&format!("; n*{i}=x"));
        }
        let got = params(&value);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.len(), 50_000);
    }

    #[test]
    fn disposition_and_languages() {
        let (kind, p) =
            parse_disposition(b"attachment; filename=\"a b.pdf\"; size=12").expect("disposition");
        assert_eq!(kind, b"attachment");
        assert_eq!(p.len(), 2);
        assert_eq!(parse_disposition(b";x=1"), None);
        assert_eq!(
            parse_languages(b"en-US, (comment) de ,,fr"),
            vec![b"en-US".to_vec(), b"de".to_vec(), b"fr".to_vec()]
        );
        assert_eq!(first_token(b" (c) Base64 junk"), Some(&b"Base64"[..]));
    }
}
