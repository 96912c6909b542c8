//! The DATA phase (RFC 5321 §4.1.1.4, §4.5.2): end at `CRLF.CRLF`, undo dot
//! stuffing, store lines with CRLF ends. No sockets here: the session feeds
//! it what it reads, one line (or one piece of a very long line) at a time.

/// What a piece of input meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    More,
    End,
}

/// Decoder state between pieces.
#[derive(Debug, Clone)]
pub struct DataDecoder {
    at_line_start: bool,
    /// The previous line ended in CRLF: only then does `.CRLF` end the data
    /// (a bare-LF `.` line does not: no SMTP-smuggling style ambiguity).
    prev_line_crlf: bool,
    /// The previous piece was a partial line ending in CR, not yet written.
    prev_cr: bool,
}

impl Default for DataDecoder {
    fn default() -> Self {
        DataDecoder {
            at_line_start: true,
            prev_line_crlf: true,
            prev_cr: false,
        }
    }
}

impl DataDecoder {
    /// Feed one piece: a whole line ending in LF, or part of a line (without
    /// LF). Decoded bytes are appended to `out`.
    pub fn feed(&mut self, piece: &[u8], out: &mut Vec<u8>) -> Step {
        let complete = piece.last() == Some(&b'\n');
        if self.at_line_start && self.prev_line_crlf && piece == b".\r\n" {
            return Step::End;
        }
        let body = if self.at_line_start && piece.first() == Some(&b'.') {
            &piece[1..]
        } else {
            piece
        };
        if std::mem::take(&mut self.prev_cr) {
            if body == b"\n" {
                // The CR held back from the previous piece, and its LF.
                out.extend_from_slice(b"\r\n");
                self.prev_line_crlf = true;
                self.at_line_start = true;
                return Step::More;
            }
            out.push(b'\r');
        }
        if complete {
            let content = &body[..body.len() - 1];
            // A bare LF is normalised to CRLF in what is stored, but for the
            // end marker only a real CRLF counts.
            match content.strip_suffix(b"\r") {
                Some(stripped) => {
                    out.extend_from_slice(stripped);
                    self.prev_line_crlf = true;
                }
                None => {
                    out.extend_from_slice(content);
                    self.prev_line_crlf = false;
                }
            }
            out.extend_from_slice(b"\r\n");
        } else if let Some(stripped) = body.strip_suffix(b"\r") {
            // Hold the CR back: it may be the first half of this line's CRLF.
            out.extend_from_slice(stripped);
            self.prev_cr = true;
        } else {
            out.extend_from_slice(body);
        }
        self.at_line_start = complete;
        Step::More
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(pieces: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut d = DataDecoder::default();
        let mut out = Vec::new();
        for p in pieces {
            if d.feed(p, &mut out) == Step::End {
                return (out, true);
            }
        }
        (out, false)
    }

    #[test]
    fn unstuffs_and_ends() {
        let (out, end) = decode(&[b"Subject: x\r\n", b"\r\n", b"..leading dot\r\n", b".\r\n"]);
        assert!(end);
        assert_eq!(out, b"Subject: x\r\n\r\n.leading dot\r\n");
    }

    #[test]
    fn bare_lf_is_normalised_but_does_not_end() {
        let (out, end) = decode(&[b"a\n", b".\n", b"b\r\n"]);
        assert!(!end);
        assert_eq!(out, b"a\r\n\r\nb\r\n");
        // After a bare-LF line, ".CRLF" is not the end either.
        let (_, end) = decode(&[b"a\n", b".\r\n"]);
        assert!(!end);
    }

    #[test]
    fn long_lines_in_pieces() {
        let (out, end) = decode(&[b".abc", b".def\r", b"\n", b".\r\n"]);
        assert!(end);
        assert_eq!(out, b"abc.def\r\n");
    }
}
