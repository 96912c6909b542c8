//! Reading one complete IMAP command off the wire: its lines and the
//! literals between them (RFC 3501 §4.3 synchronising literals, answered
//! with a continuation request; RFC 7888 LITERAL+ literals, read at once).
//! The complete bytes are then decoded by imap-codec, once; this module
//! never interprets a command beyond finding its tag and its literals.
//!
//! What a client can make a connection hold is bounded here, whatever it
//! sends ([`CommandLimits`]): the command's lines together (before and
//! after its literals), the number of its literals, each literal and all
//! of them together. A literal's buffer grows with the bytes that arrive,
//! never with the number announced. A literal is found from the end of its
//! line (`{n}` / `{n+}` / `~{n}` then CRLF, as imap-codec's own
//! `Fragmentizer` does), so a command with many literals costs one pass
//! over its bytes, not one decode per literal.
//!
//! The decisions are made by [`Framer`], which never touches a socket (the
//! fuzz target drives it over plain bytes); [`read_command`] feeds it from
//! the connection.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::conn::Conn;

/// Bounds on one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandLimits {
    /// The command's lines together, literals not counted.
    pub max_line: usize,
    /// Literals in one command.
    pub max_literals: u32,
    /// Bytes of one literal, and of all of a command's literals together.
    pub max_literal_bytes: u64,
}

/// Why a command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TooBig {
    /// Its lines are longer than `max_line`.
    Line,
    /// A literal of this many bytes is over `max_literal_bytes`.
    Literal(u64),
    /// More than `max_literals` literals.
    Literals,
    /// Its literals together are over `max_literal_bytes`.
    LiteralTotal,
}

/// What came off the wire.
pub enum Frame {
    /// A complete command's bytes (decode with `CommandCodec`).
    Command(Vec<u8>),
    /// A command over a limit. It was read to its end and dropped, or to a
    /// synchronising literal that was not accepted (the client never sends
    /// it). `tag` is the command's, when it has one we may echo.
    TooBig { tag: Option<String>, why: TooBig },
    /// The client closed the connection (or sent half a command and left).
    Eof,
}

/// A literal announced at the end of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announcement {
    pub length: u64,
    /// `{n}`: the client waits for a continuation request.
    pub synchronising: bool,
}

/// The literal a command line (through its CRLF) announces, if any:
/// `{n}CRLF` or `{n+}CRLF` at its very end. A quoted string cannot hide
/// one there (it cannot hold CR or LF). A number too big for `u64` is
/// `u64::MAX` (refused like any literal over the limit).
pub fn announcement(line: &[u8]) -> Option<Announcement> {
    let body = line.strip_suffix(b"}\r\n")?;
    let (body, synchronising) = match body.strip_suffix(b"+") {
        Some(b) => (b, false),
        None => (body, true),
    };
    let open = body.iter().rposition(|b| *b == b'{')?;
    let digits = &body[open + 1..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let length = digits.iter().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    Some(Announcement {
        length,
        synchronising,
    })
}

/// What the reader does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The command is complete.
    Done,
    /// Read a literal of `length` bytes into the command, then its next
    /// line; send a continuation request first when `synchronising`.
    Literal { length: u64, synchronising: bool },
    /// Read `length` bytes and drop them (a refused LITERAL+ literal),
    /// then the command's next line.
    Skip(u64),
    /// The command is refused and nothing more of it will come.
    Refused(TooBig),
}

/// The decisions of [`read_command`], without I/O: one command's limits
/// and what it has used of them.
#[derive(Debug)]
pub struct Framer {
    limits: CommandLimits,
    line_bytes: usize,
    literals: u32,
    literal_bytes: u64,
    refused: Option<TooBig>,
}

impl Framer {
    pub fn new(limits: CommandLimits) -> Framer {
        Framer {
            limits,
            line_bytes: 0,
            literals: 0,
            literal_bytes: 0,
            refused: None,
        }
    }

    /// Bytes the next line may have before the command is too long.
    pub fn line_room(&self) -> usize {
        self.limits.max_line.saturating_sub(self.line_bytes)
    }

    /// Why the command is refused, once it is.
    pub fn refused(&self) -> Option<TooBig> {
        self.refused
    }

    /// The next line was longer than [`line_room`](Framer::line_room)
    /// (and was read to its end and dropped).
    pub fn line_too_long(&mut self) -> Next {
        let why = *self.refused.get_or_insert(TooBig::Line);
        Next::Refused(why)
    }

    /// A line of the command, through its LF.
    pub fn line(&mut self, line: &[u8]) -> Next {
        self.line_bytes = self.line_bytes.saturating_add(line.len());
        let Some(a) = announcement(line) else {
            return match self.refused {
                Some(why) => Next::Refused(why),
                None => Next::Done,
            };
        };
        if self.refused.is_none() {
            self.literals += 1;
            self.literal_bytes = self.literal_bytes.saturating_add(a.length);
            self.refused = if a.length > self.limits.max_literal_bytes {
                Some(TooBig::Literal(a.length))
            } else if self.literals > self.limits.max_literals {
                Some(TooBig::Literals)
            } else if self.literal_bytes > self.limits.max_literal_bytes {
                Some(TooBig::LiteralTotal)
            } else {
                return Next::Literal {
                    length: a.length,
                    synchronising: a.synchronising,
                };
            };
        }
        match self.refused {
            // The client waits for a "+" that will not come.
            Some(why) if a.synchronising => Next::Refused(why),
            // RFC 7888 §4: a LITERAL+ literal comes anyway; the rest of the
            // command follows it.
            _ => Next::Skip(a.length),
        }
    }
}

/// Read one command, sending continuation requests for synchronising
/// literals.
pub async fn read_command(
    reader: &mut BufReader<Conn>,
    limits: CommandLimits,
) -> std::io::Result<Frame> {
    let mut framer = Framer::new(limits);
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    let mut tag: Option<String> = None;
    loop {
        let start = buf.len();
        let next = match read_line(reader, framer.line_room(), &mut buf).await? {
            LineEnd::Eof => return Ok(Frame::Eof),
            LineEnd::TooLong => framer.line_too_long(),
            LineEnd::Line => {
                if tag.is_none() {
                    tag = tag_of(&buf).map(str::to_string);
                }
                let next = framer.line(&buf[start..]);
                if framer.refused().is_some() {
                    // Nothing of a refused command is kept.
                    buf = Vec::new();
                }
                next
            }
        };
        match next {
            Next::Done => return Ok(Frame::Command(buf)),
            Next::Refused(why) => return Ok(Frame::TooBig { tag, why }),
            Next::Skip(length) => {
                if !discard(reader, length).await? {
                    return Ok(Frame::Eof);
                }
            }
            Next::Literal {
                length,
                synchronising,
            } => {
                if synchronising {
                    reader
                        .get_mut()
                        .write_all(b"+ Ready for literal data\r\n")
                        .await?;
                    reader.get_mut().flush().await?;
                }
                // Grows with what arrives (read_to_end), not with `length`.
                let got = (&mut *reader).take(length).read_to_end(&mut buf).await?;
                if (got as u64) < length {
                    return Ok(Frame::Eof);
                }
            }
        }
    }
}

enum LineEnd {
    Line,
    TooLong,
    Eof,
}

/// Append one line (through its LF) to `buf`, at most `max` bytes; a
/// longer one is read to its end and dropped (nothing of it kept).
async fn read_line(
    reader: &mut BufReader<Conn>,
    max: usize,
    buf: &mut Vec<u8>,
) -> std::io::Result<LineEnd> {
    let start = buf.len();
    let limit = u64::try_from(max.saturating_add(1)).unwrap_or(u64::MAX);
    let n = (&mut *reader).take(limit).read_until(b'\n', buf).await?;
    if n == 0 {
        return Ok(LineEnd::Eof);
    }
    if buf.last() == Some(&b'\n') {
        return Ok(LineEnd::Line);
    }
    if buf.len() - start <= max {
        return Ok(LineEnd::Eof);
    }
    buf.truncate(start);
    // Too long: read to the end of the line, through the reader's own
    // buffer.
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(LineEnd::Eof);
        }
        match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => {
                reader.consume(i + 1);
                return Ok(LineEnd::TooLong);
            }
            None => {
                let n = chunk.len();
                reader.consume(n);
            }
        }
    }
}

/// Read one line for a command's own dialogue (AUTHENTICATE data, IDLE's
/// DONE), without its CRLF.
pub async fn read_plain_line(
    reader: &mut BufReader<Conn>,
    max: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    match read_line(reader, max, &mut buf).await? {
        LineEnd::Line => {
            while matches!(buf.last(), Some(b'\n' | b'\r')) {
                buf.pop();
            }
            Ok(Some(buf))
        }
        LineEnd::TooLong => Ok(Some(Vec::new())),
        LineEnd::Eof => Ok(None),
    }
}

/// Read `n` bytes and drop them, through the reader's own buffer; false
/// when the client left first.
async fn discard(reader: &mut BufReader<Conn>, mut n: u64) -> std::io::Result<bool> {
    while n > 0 {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(false);
        }
        let take = usize::try_from(n).unwrap_or(usize::MAX).min(chunk.len());
        reader.consume(take);
        n -= take as u64;
    }
    Ok(true)
}

/// The command's name, after `UID` for the UID forms (`FETCH` for
/// `t UID FETCH ...`), as sent.
pub fn command_name_of(line: &[u8]) -> Option<&[u8]> {
    let verb = verb_of(line)?;
    if verb.eq_ignore_ascii_case(b"UID") {
        let tag = tag_of(line)?;
        verb_of(line.get(tag.len() + 1..)?)
    } else {
        Some(verb)
    }
}

/// The command name after the tag (`UID` for the UID commands), as sent.
pub fn verb_of(line: &[u8]) -> Option<&[u8]> {
    let tag = tag_of(line)?;
    let rest = line.get(tag.len()..)?.strip_prefix(b" ")?;
    let end = rest
        .iter()
        .position(|b| !b.is_ascii_alphanumeric() && *b != b'-' && *b != b'.')
        .unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// The tag of a command line we could not decode, if it has one we may
/// echo (RFC 3501 §9: tag = 1*<any ASTRING-CHAR except "+">).
pub fn tag_of(line: &[u8]) -> Option<&str> {
    let end = line
        .iter()
        .position(|b| *b == b' ' || *b == b'\r' || *b == b'\n')
        .unwrap_or(line.len());
    let tag = &line[..end];
    let ok = !tag.is_empty()
        && tag.len() <= 64
        && tag
            .iter()
            .all(|b| b.is_ascii_graphic() && !b"+(){%*\"\\]".contains(b));
    if ok {
        std::str::from_utf8(tag).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        assert_eq!(tag_of(b"a1 NOOP\r\n"), Some("a1"));
        assert_eq!(tag_of(b"+ x"), None);
        assert_eq!(tag_of(b"\xff NOOP"), None);
        assert_eq!(tag_of(b""), None);
    }

    #[test]
    fn announcements() {
        let sync = |length| {
            Some(Announcement {
                length,
                synchronising: true,
            })
        };
        assert_eq!(announcement(b"a LOGIN {5}\r\n"), sync(5));
        assert_eq!(announcement(b"a APPEND x ~{0}\r\n"), sync(0));
        assert_eq!(
            announcement(b"a APPEND x {7+}\r\n"),
            Some(Announcement {
                length: 7,
                synchronising: false
            })
        );
        assert_eq!(
            announcement(b"a X {99999999999999999999999}\r\n"),
            sync(u64::MAX)
        );
        for no in [
            &b"a NOOP\r\n"[..],
            b"a X {}\r\n",
            b"a X {5}\n",
            b"a X {5} \r\n",
            b"a X {-5}\r\n",
            b"a X {+}\r\n",
            b"}\r\n",
        ] {
            assert_eq!(announcement(no), None, "{}", String::from_utf8_lossy(no));
        }
    }

    const LIMITS: CommandLimits = CommandLimits {
        max_line: 100,
        max_literals: 2,
        max_literal_bytes: 10,
    };

    #[test]
    fn literals_are_counted_and_summed() {
        let mut f = Framer::new(LIMITS);
        assert_eq!(
            f.line(b"a LOGIN {4}\r\n"),
            Next::Literal {
                length: 4,
                synchronising: true
            }
        );
        assert_eq!(
            f.line(b" {6+}\r\n"),
            Next::Literal {
                length: 6,
                synchronising: false
            }
        );
        // A third literal is one too many; LITERAL+ bytes are read and dropped.
        assert_eq!(f.line(b" {1+}\r\n"), Next::Skip(1));
        assert_eq!(f.line(b"\r\n"), Next::Refused(TooBig::Literals));

        let mut f = Framer::new(LIMITS);
        assert!(matches!(f.line(b"a X {6}\r\n"), Next::Literal { .. }));
        // Each under the limit, together over it; a synchronising one is
        // never sent.
        assert_eq!(f.line(b" {5}\r\n"), Next::Refused(TooBig::LiteralTotal));

        let mut f = Framer::new(LIMITS);
        assert_eq!(f.line(b"a X {11}\r\n"), Next::Refused(TooBig::Literal(11)));
    }

    #[test]
    fn lines_after_literals_count_against_the_line_limit() {
        let mut f = Framer::new(LIMITS);
        assert!(matches!(f.line(b"a X {1}\r\n"), Next::Literal { .. }));
        assert_eq!(f.line_room(), 100 - 9);
        assert_eq!(f.line(&[b'x'; 91]), Next::Done);
        assert_eq!(f.line_room(), 0);
        assert_eq!(f.line_too_long(), Next::Refused(TooBig::Line));
    }

    /// imap-codec bounds its own recursion (search keys at 9 levels,
    /// BODYSTRUCTURE and THREAD at 8), so the longest command line of
    /// nested search keys decodes to an error on a stack far smaller than
    /// a tokio worker's (2 MiB).
    #[test]
    fn imap_codec_does_not_recurse_on_deep_search_keys() {
        use imap_codec::CommandCodec;
        use imap_codec::decode::Decoder;
        let deep = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let n = 64 * 1024 / 4;
                for line in [
                    format!("a SEARCH {}ALL\r\n", "NOT ".repeat(n)),
                    format!("a SEARCH {}ALL ALL\r\n", "OR ".repeat(n)),
                    format!("a SEARCH {}ALL{}\r\n", "(".repeat(n), ")".repeat(n)),
                    format!("a UID SEARCH {}\r\n", "(".repeat(4 * n)),
                ] {
                    assert!(CommandCodec::default().decode(line.as_bytes()).is_err());
                }
            })
            .expect("thread");
        assert!(deep.join().is_ok(), "decoding overflowed a 256 KiB stack");
    }
}
