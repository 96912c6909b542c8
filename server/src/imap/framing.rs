//! Reading one complete IMAP command off the wire: its lines and the
//! literals between them (RFC 3501 §4.3 synchronising literals, answered
//! with a continuation request; RFC 7888 LITERAL+ literals, read at once).
//! The complete bytes are then decoded by imap-codec; this module never
//! interprets a command beyond finding its literals.

use imap_codec::CommandCodec;
use imap_codec::decode::{CommandDecodeError, Decoder};
use imap_codec::imap_types::core::LiteralMode;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::conn::Conn;

/// What came off the wire.
pub enum Frame {
    /// A complete command's bytes (decode with [`CommandCodec`]).
    Command(Vec<u8>),
    /// A line longer than the limit; it was read to its end and dropped.
    LineTooLong,
    /// A literal over the limit. A synchronising one was not accepted (the
    /// client never sends it); a non-synchronising one was read and dropped.
    LiteralTooBig { tag: String, length: u32 },
    /// The client closed the connection (or sent half a command and left).
    Eof,
}

/// Read one command, sending continuation requests for synchronising
/// literals.
pub async fn read_command(
    reader: &mut BufReader<Conn>,
    max_line: usize,
    max_literal: u64,
) -> std::io::Result<Frame> {
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    loop {
        match read_line(reader, max_line, &mut buf).await? {
            LineEnd::Eof => return Ok(Frame::Eof),
            LineEnd::TooLong => return Ok(Frame::LineTooLong),
            LineEnd::Line => {}
        }
        match CommandCodec::default().decode(&buf) {
            Err(CommandDecodeError::LiteralFound { tag, length, mode }) => {
                if u64::from(length) > max_literal {
                    let tag = tag.inner().to_string();
                    if mode == LiteralMode::NonSync {
                        discard(reader, u64::from(length)).await?;
                        // The rest of the command line follows the literal.
                        let mut rest = Vec::new();
                        if let LineEnd::Eof = read_line(reader, usize::MAX, &mut rest).await? {
                            return Ok(Frame::Eof);
                        }
                    }
                    return Ok(Frame::LiteralTooBig { tag, length });
                }
                if mode == LiteralMode::Sync {
                    reader
                        .get_mut()
                        .write_all(b"+ Ready for literal data\r\n")
                        .await?;
                    reader.get_mut().flush().await?;
                }
                let start = buf.len();
                buf.resize(start + length as usize, 0);
                if reader.read_exact(&mut buf[start..]).await.is_err() {
                    return Ok(Frame::Eof);
                }
            }
            // Complete, or not IMAP at all: the caller decodes again and
            // answers BAD where it fails.
            _ => return Ok(Frame::Command(buf)),
        }
    }
}

enum LineEnd {
    Line,
    TooLong,
    Eof,
}

/// Append one line (through its LF) to `buf`, at most `max` bytes.
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
    // Too long: read to the end of the line and drop it.
    loop {
        let mut scratch = Vec::new();
        let n = (&mut *reader)
            .take(64 * 1024)
            .read_until(b'\n', &mut scratch)
            .await?;
        if n == 0 {
            return Ok(LineEnd::Eof);
        }
        if scratch.last() == Some(&b'\n') {
            return Ok(LineEnd::TooLong);
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

async fn discard(reader: &mut BufReader<Conn>, mut n: u64) -> std::io::Result<()> {
    let mut scratch = vec![0u8; 64 * 1024];
    while n > 0 {
        let want = n.min(scratch.len() as u64) as usize;
        let got = reader.read(&mut scratch[..want]).await?;
        if got == 0 {
            return Ok(());
        }
        n -= got as u64;
    }
    Ok(())
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
    use super::tag_of;

    #[test]
    fn tags() {
        assert_eq!(tag_of(b"a1 NOOP\r\n"), Some("a1"));
        assert_eq!(tag_of(b"+ x"), None);
        assert_eq!(tag_of(b"\xff NOOP"), None);
        assert_eq!(tag_of(b""), None);
    }
}
