//! Client bytes in log lines.
//!
//! Operators feed cove's log to fail2ban and to their eyes. Bytes a client
//! sent (a command it got wrong, a user name, an address) must not be able
//! to end a log line and start a forged one (`imap login failed user=…
//! peer=<someone else>`), move the cursor with escape sequences, or hide
//! text behind bidirectional overrides. So every client-supplied value is
//! logged through [`ClientText`], which shows printable text as it is and
//! everything else as an escape (`\n`, `\x1b`, `\u{202e}`), and cuts it at
//! a length.
//!
//! As a second line of defence, [`OneLinePerEvent`] wraps the log writer:
//! whatever a call site logs, a CR or LF inside an event is written as
//! `\r` / `\n`, so one event is always exactly one line.

use std::fmt;
use std::io::{self, Write};

/// Client bytes, escaped for a log line (see the module essay).
#[derive(Clone, Copy)]
pub struct ClientText<'a> {
    bytes: &'a [u8],
    /// Bytes shown at most; the rest is counted, not shown.
    max: usize,
    /// Spaces escaped too (`\x20`): for a value inside a line of
    /// `key=value` pairs, which must stay one word.
    word: bool,
}

impl<'a> ClientText<'a> {
    /// A command line or part of one: the first 80 bytes, spaces kept.
    pub fn line(bytes: &'a (impl AsRef<[u8]> + ?Sized)) -> ClientText<'a> {
        ClientText {
            bytes: bytes.as_ref(),
            max: 80,
            word: false,
        }
    }

    /// A name (a user, an address): one word, the first 256 bytes.
    pub fn word(bytes: &'a (impl AsRef<[u8]> + ?Sized)) -> ClientText<'a> {
        ClientText {
            bytes: bytes.as_ref(),
            max: 256,
            word: true,
        }
    }
}

/// Shown as they are: printable characters, but not those that change how
/// the text around them is laid out (bidi controls, zero-width and line
/// and paragraph separators).
fn shown_as_is(c: char) -> bool {
    !c.is_control()
        && !matches!(c,
            '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
}

impl fmt::Display for ClientText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cut = self.bytes.len() > self.max;
        let shown = &self.bytes[..self.bytes.len().min(self.max)];
        for chunk in shown.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    '\n' => f.write_str("\\n")?,
                    '\r' => f.write_str("\\r")?,
                    '\t' => f.write_str("\\t")?,
                    ' ' if self.word => f.write_str("\\x20")?,
                    c if c.is_ascii_control() => write!(f, "\\x{:02x}", c as u32)?,
                    c if shown_as_is(c) => write!(f, "{c}")?,
                    c => write!(f, "\\u{{{:x}}}", c as u32)?,
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        if cut {
            write!(f, "...({} bytes)", self.bytes.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for ClientText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// A log writer that keeps each event on one line: a CR or LF before the
/// event's final newline is written escaped. tracing-subscriber's `fmt`
/// layer hands each event to its writer in one `write_all`.
pub struct OneLinePerEvent<W>(pub W);

impl<W: Write> Write for OneLinePerEvent<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (body, end) = match buf.strip_suffix(b"\n") {
            Some(body) => (body, &b"\n"[..]),
            None => (buf, &b""[..]),
        };
        if !body.iter().any(|b| matches!(b, b'\n' | b'\r')) {
            self.0.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut out = Vec::with_capacity(buf.len() + 16);
        for b in body {
            match b {
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b => out.push(*b),
            }
        }
        out.extend_from_slice(end);
        self.0.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        let forged = b"x\r\nimap login failed user=a peer=1.2.3.4\x1b[2J\\";
        assert_eq!(
            ClientText::line(forged).to_string(),
            "x\\r\\nimap login failed user=a peer=1.2.3.4\\x1b[2J\\\\"
        );
        assert_eq!(
            ClientText::word("al ice\u{202e}é\u{7f}".as_bytes()).to_string(),
            "al\\x20ice\\u{202e}é\\x7f"
        );
        assert_eq!(ClientText::word(b"\xff\xc3").to_string(), "\\xff\\xc3");
        let long = ClientText::line(&[b'a'; 100]).to_string();
        assert_eq!(long, format!("{}...(100 bytes)", "a".repeat(80)));
    }

    #[test]
    fn one_event_is_one_line() {
        let mut w = OneLinePerEvent(Vec::new());
        w.write_all(b"a\nb\rc\n").unwrap();
        w.write_all(b"plain\n").unwrap();
        assert_eq!(w.0, b"a\\nb\\rc\nplain\n");
    }
}
