//! Raw header blocks (RFC 5322 §2.2, §2.2.3): where a header ends, its
//! fields, and their values unfolded but otherwise untouched.
//!
//! Line ends may be CRLF or bare LF. A field is a line containing a colon
//! plus its continuation lines, which start with SP or HTAB. Lines
//! that are neither (no colon, or a continuation with no field before it)
//! are junk: skipped, not fatal.

/// Where the header starting at `start` ends: just past its empty line, or
/// `end` if it has none. `start <= end <= raw.len()` is the caller's promise;
/// anything else gives `end.min(raw.len())`.
pub(super) fn header_end(raw: &[u8], start: usize, end: usize) -> usize {
    let end = end.min(raw.len());
    let mut pos = start;
    while pos < end {
        let line_end = next_line(raw, pos, end);
        if matches!(raw.get(pos..line_end), Some(b"\n" | b"\r\n")) {
            return line_end;
        }
        pos = line_end;
    }
    end
}

/// The offset just past the LF that ends the line starting at `pos`, or `end`.
pub(super) fn next_line(raw: &[u8], pos: usize, end: usize) -> usize {
    raw.get(pos..end)
        .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
        .map_or(end, |i| pos + i + 1)
}

/// One header field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Field<'a> {
    /// The field name, without trailing whitespace.
    pub name: &'a [u8],
    /// Everything after the colon, folds included, final line end excluded.
    pub value: &'a [u8],
    /// The whole field as stored, final line end included (if it has one).
    pub bytes: &'a [u8],
}

impl Field<'_> {
    /// The value unfolded (line ends removed, the whitespace after them
    /// kept, as Dovecot does) and trimmed of surrounding whitespace.
    pub fn unfolded(&self) -> Vec<u8> {
        unfold(self.value)
    }
}

/// The fields of a header block, in order. Stops at the empty line.
pub(super) fn fields(header: &[u8]) -> Fields<'_> {
    Fields { rest: header }
}

/// The first field called `name` (ASCII case-insensitive), if any.
pub(super) fn first<'a>(header: &'a [u8], name: &[u8]) -> Option<Field<'a>> {
    fields(header).find(|f| f.name.eq_ignore_ascii_case(name))
}

/// The unfolded, trimmed value of the first field called `name`.
pub(super) fn first_value(header: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    first(header, name).map(|f| f.unfolded())
}

pub(super) struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        loop {
            let chunk = self.take_chunk()?;
            if chunk == b"\n" || chunk == b"\r\n" {
                self.rest = &[];
                return None;
            }
            if let Some(field) = parse_field(chunk) {
                return Some(field);
            }
        }
    }
}

impl<'a> Fields<'a> {
    /// Splits off the first line and the continuation lines after it.
    fn take_chunk(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let mut end = next_line(self.rest, 0, self.rest.len());
        while end < self.rest.len() && matches!(self.rest[end], b' ' | b'\t') {
            end = next_line(self.rest, end, self.rest.len());
        }
        let (chunk, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(chunk)
    }
}

fn parse_field(chunk: &[u8]) -> Option<Field<'_>> {
    let colon = chunk.iter().position(|&b| b == b':' || b == b'\n')?;
    if chunk[colon] != b':' {
        return None;
    }
    let name = trim_end(&chunk[..colon]);
    // RFC 5322 §3.6.8 ftext: printable US-ASCII except colon.
    if name.is_empty() || !name.iter().all(|&b| (33..=126).contains(&b)) {
        return None;
    }
    let mut value = &chunk[colon + 1..];
    if let Some(v) = value.strip_suffix(b"\n") {
        value = v.strip_suffix(b"\r").unwrap_or(v);
    }
    Some(Field {
        name,
        value,
        bytes: chunk,
    })
}

/// Removes the line ends of folds (CRLF or LF; a CR that ends no line is
/// kept) and trims surrounding whitespace.
pub(super) fn unfold(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        match value[i] {
            b'\r' if value.get(i + 1) == Some(&b'\n') => {}
            b'\n' => {}
            b => out.push(b),
        }
        i += 1;
    }
    let start = out.iter().position(|b| !is_wsp(*b)).unwrap_or(out.len());
    let end = out
        .iter()
        .rposition(|b| !is_wsp(*b))
        .map_or(start, |i| i + 1);
    out.truncate(end);
    out.drain(..start);
    out
}

pub(super) fn is_wsp(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn trim_end(s: &[u8]) -> &[u8] {
    let end = s.iter().rposition(|&b| !is_wsp(b)).map_or(0, |i| i + 1);
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_end_crlf_and_lf() {
        let raw = b"A: 1\r\nB: 2\r\n\r\nbody";
        assert_eq!(header_end(raw, 0, raw.len()), 14);
        let raw = b"A: 1\nB: 2\n\nbody";
        assert_eq!(header_end(raw, 0, raw.len()), 11);
    }

    #[test]
    fn header_end_without_empty_line_is_the_end() {
        let raw = b"A: 1\r\nB: 2";
        assert_eq!(header_end(raw, 0, raw.len()), raw.len());
        assert_eq!(header_end(b"", 0, 0), 0);
        assert_eq!(header_end(b"x", 5, 9), 1);
    }

    #[test]
    fn header_end_leading_empty_line() {
        assert_eq!(header_end(b"\r\nbody", 0, 6), 2);
        assert_eq!(header_end(b"\nbody", 0, 5), 1);
    }

    #[test]
    fn fields_with_folds_and_junk() {
        let h = b"Subject: a\r\n  b\r\n\tc\r\n junk continuation\r\nno colon line\r\nFrom : x\r\n\r\nAfter: no\r\n";
        let f: Vec<_> = fields(h).collect();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].name, b"Subject");
        assert_eq!(f[0].value, b" a\r\n  b\r\n\tc\r\n junk continuation");
        assert_eq!(f[0].unfolded(), b"a  b\tc junk continuation");
        assert_eq!(f[1].name, b"From");
        assert_eq!(f[1].bytes, b"From : x\r\n");
    }

    #[test]
    fn orphan_continuation_is_skipped() {
        let f: Vec<_> = fields(b" orphan: 1\nA: 2\n").collect();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].name, b"A");
    }

    #[test]
    fn first_is_case_insensitive_and_first_wins() {
        let h = b"subject: one\nSUBJECT: two\n";
        assert_eq!(first_value(h, b"Subject").as_deref(), Some(&b"one"[..]));
        assert_eq!(first_value(h, b"From"), None);
    }

    #[test]
    fn last_field_without_line_end() {
        let f: Vec<_> = fields(b"A: 1\nB: 2").collect();
        assert_eq!(f[1].value, b" 2");
        assert_eq!(f[1].bytes, b"B: 2");
    }

    #[test]
    fn unfold_keeps_lone_cr_and_8bit() {
        assert_eq!(unfold(b" a\rb \xff\r\n c "), b"a\rb \xff c");
        assert_eq!(unfold(b"   "), b"");
    }
}
