//! A raw-bytes IMAP client for comparing two servers' FETCH answers as
//! parsed values rather than as text: a response is read with its literals
//! inline (8-bit and NUL bytes kept, unlike the UTF-8 `Imap` harness), and
//! the data of a `* n FETCH (...)` response is parsed into [`Value`]s, so
//! that a quoted string and a literal holding the same bytes compare equal.

use std::fmt;
use std::io::{BufRead, Write};

/// One IMAP data value (RFC 3501 §4): NIL, an atom or number, a string
/// (quoted or literal, unquoted here), or a parenthesized list.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    Nil,
    Atom(Vec<u8>),
    Str(Vec<u8>),
    List(Vec<Value>),
}

impl Value {
    pub fn list(&self) -> Option<&[Value]> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }

    /// The bytes of a string or an atom.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Str(b) | Value::Atom(b) => Some(b),
            _ => None,
        }
    }
}

/// IMAP-like text for reports: strings quoted, bytes outside printable
/// ASCII as `\xNN`.
impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = |b: &[u8]| -> String {
            b.iter()
                .map(|&c| match c {
                    b'"' | b'\\' => format!("\\{}", c as char),
                    0x20..=0x7e => (c as char).to_string(),
                    _ => format!("\\x{c:02x}"),
                })
                .collect()
        };
        match self {
            Value::Nil => f.write_str("NIL"),
            Value::Atom(a) => f.write_str(&text(a)),
            Value::Str(s) => write!(f, "\"{}\"", text(s)),
            Value::List(items) => {
                f.write_str("(")?;
                for (n, item) in items.iter().enumerate() {
                    if n > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{item:?}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// Parses a sequence of values (e.g. the inside of a FETCH response's
/// parentheses). Panics on a syntax error: the servers under test must
/// send valid responses.
pub fn parse_values(bytes: &[u8]) -> Vec<Value> {
    let mut p = Parser { s: bytes, i: 0 };
    let values = p.sequence();
    assert!(
        p.i >= bytes.len(),
        "junk after {values:?}: {:?}",
        String::from_utf8_lossy(&bytes[p.i..])
    );
    values
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn sequence(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            while self.s.get(self.i) == Some(&b' ') {
                self.i += 1;
            }
            match self.s.get(self.i) {
                None | Some(b')') => return out,
                Some(_) => out.push(self.value()),
            }
        }
    }

    fn value(&mut self) -> Value {
        let rest = &self.s[self.i..];
        match rest[0] {
            b'(' => {
                self.i += 1;
                let items = self.sequence();
                assert_eq!(self.s.get(self.i), Some(&b')'), "unclosed list");
                self.i += 1;
                Value::List(items)
            }
            b'"' => {
                let mut out = Vec::new();
                self.i += 1;
                loop {
                    let c = *self.s.get(self.i).expect("unterminated quoted string");
                    self.i += 1;
                    match c {
                        b'"' => return Value::Str(out),
                        b'\\' => {
                            out.push(self.s[self.i]);
                            self.i += 1;
                        }
                        _ => out.push(c),
                    }
                }
            }
            b'{' | b'~' if literal_start(rest).is_some() => {
                let (header_len, len) = literal_start(rest).expect("checked");
                self.i += header_len;
                let bytes = self.s[self.i..self.i + len].to_vec();
                self.i += len;
                Value::Str(bytes)
            }
            _ => {
                let start = self.i;
                while self
                    .s
                    .get(self.i)
                    .is_some_and(|c| !matches!(c, b' ' | b'(' | b')'))
                {
                    // BODY[1.HEADER] holds no space; a section's bracket
                    // never holds a parenthesis in what these tests fetch.
                    self.i += 1;
                }
                let atom = &self.s[start..self.i];
                if atom.eq_ignore_ascii_case(b"NIL") {
                    Value::Nil
                } else {
                    Value::Atom(atom.to_vec())
                }
            }
        }
    }
}

/// `{n}\r\n` or `~{n}\r\n` at the start of `s`: (its length, n).
fn literal_start(s: &[u8]) -> Option<(usize, usize)> {
    let s_open = usize::from(s.first() == Some(&b'~'));
    let close = s.iter().position(|&c| c == b'}')?;
    let digits = s.get(s_open + 1..close)?;
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    let n = std::str::from_utf8(digits).ok()?.parse().ok()?;
    (s.get(close + 1..close + 3) == Some(b"\r\n")).then_some((close + 3, n))
}

/// The length of the literal announced at the end of a line (`{n}`).
fn trailing_literal(line: &[u8]) -> Option<usize> {
    let body = line.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&c| c == b'{')?;
    literal_start(&[&line[open..], b"\r\n"].concat()).map(|(_, n)| n)
}

/// An IMAP session over any byte stream pair (a TCP socket, or a Dovecot
/// `imap` process's stdin and stdout).
pub struct RawSession<R: BufRead, W: Write> {
    pub reader: R,
    pub writer: W,
    tag: u32,
}

impl<R: BufRead, W: Write> RawSession<R, W> {
    pub fn new(reader: R, writer: W) -> Self {
        RawSession {
            reader,
            writer,
            tag: 0,
        }
    }

    /// One response, line end removed, literals inline (`{n}\r\n` and the
    /// bytes).
    pub fn read_response(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = self.reader.read_until(b'\n', &mut line).expect("read");
            assert!(n > 0, "connection closed after {:?}", text(&out));
            let line = line.strip_suffix(b"\r\n").unwrap_or(&line);
            out.extend_from_slice(line);
            match trailing_literal(line) {
                Some(len) => {
                    let mut bytes = vec![0; len];
                    self.reader.read_exact(&mut bytes).expect("read literal");
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(&bytes);
                }
                _ => return out,
            }
        }
    }

    /// Sends `command` (without tag and line end; it may end in a
    /// non-synchronizing literal's bytes) and returns the untagged responses,
    /// insisting on a tagged OK.
    #[track_caller]
    pub fn command(&mut self, command: &[u8]) -> Vec<Vec<u8>> {
        match self.try_command(command) {
            Ok(untagged) => untagged,
            Err(tagged) => panic!("{} failed: {}", text(command), text(&tagged)),
        }
    }

    /// [`Self::command`], with a tagged NO or BAD as `Err(that response)`.
    pub fn try_command(&mut self, command: &[u8]) -> Result<Vec<Vec<u8>>, Vec<u8>> {
        self.tag += 1;
        let tag = format!("t{} ", self.tag);
        let mut bytes = tag.clone().into_bytes();
        bytes.extend_from_slice(command);
        bytes.extend_from_slice(b"\r\n");
        self.writer.write_all(&bytes).expect("write");
        self.writer.flush().expect("flush");
        let mut untagged = Vec::new();
        loop {
            let r = self.read_response();
            match r.strip_prefix(tag.as_bytes()) {
                Some(rest) if rest.starts_with(b"OK") => return Ok(untagged),
                Some(_) => return Err(r),
                None => untagged.push(r),
            }
        }
    }

    /// APPEND with a non-synchronizing literal (`~{n+}` when the message
    /// holds NUL, RFC 3516 §4.4).
    pub fn append(&mut self, mailbox: &str, message: &[u8]) {
        self.append_dated(mailbox, None, message);
    }

    /// [`Self::append`] with an INTERNALDATE (`"01-Jan-2026 00:01:00 +0000"`).
    pub fn append_dated(&mut self, mailbox: &str, date: Option<&str>, message: &[u8]) {
        let tilde = if message.contains(&0) { "~" } else { "" };
        let date = date.map(|d| format!("\"{d}\" ")).unwrap_or_default();
        let mut command =
            format!("APPEND {mailbox} {date}{tilde}{{{}+}}\r\n", message.len()).into_bytes();
        command.extend_from_slice(message);
        self.command(&command);
    }

    /// `FETCH seq (items)`: the data items of the `* seq FETCH` responses,
    /// as (item name in upper case, value) pairs; `None` when the server
    /// refuses the command.
    pub fn try_fetch(&mut self, seq: usize, items: &str) -> Option<Vec<(String, Value)>> {
        let prefix = format!("* {seq} FETCH (");
        let mut pairs = Vec::new();
        for r in self
            .try_command(format!("FETCH {seq} ({items})").as_bytes())
            .ok()?
        {
            let Some(data) = r.strip_prefix(prefix.as_bytes()) else {
                continue;
            };
            let data = data.strip_suffix(b")").expect("FETCH data ends with )");
            let values = parse_values(data);
            for pair in values.chunks(2) {
                let [Value::Atom(name), value] = pair else {
                    panic!("not name/value pairs: {values:?}");
                };
                pairs.push((text(name).to_ascii_uppercase(), value.clone()));
            }
        }
        Some(pairs)
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_and_literal_strings_are_the_same_value() {
        let v = parse_values(b"A \"x\\\"y\" {3}\r\nx\"y NIL (B ~{2}\r\n\0\x80) \"\"");
        assert_eq!(
            v,
            vec![
                Value::Atom(b"A".to_vec()),
                Value::Str(b"x\"y".to_vec()),
                Value::Str(b"x\"y".to_vec()),
                Value::Nil,
                Value::List(vec![
                    Value::Atom(b"B".to_vec()),
                    Value::Str(b"\0\x80".to_vec())
                ]),
                Value::Str(Vec::new()),
            ]
        );
        assert_eq!(format!("{:?}", v[4]), "(B \"\\x00\\x80\")");
    }
}
