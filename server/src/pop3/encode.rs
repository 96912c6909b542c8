//! A stored message as POP3 sends it (RFC 1939 §3): CRLF line ends, a `.`
//! doubled at the start of a line, the `.CRLF` terminator — also for
//! messages stored with bare LF by another program. And the size a client
//! is told (STAT, LIST, RETR): the octets of the CRLF form, so that a
//! client counting what it receives (minus the stuffing) gets that number.
//!
//! The encoder is fed the file in pieces and keeps what it must across
//! them (at the start of a line? was the last byte a CR?), so a message is
//! never held whole; for TOP it stops after the header and N body lines.

/// The CRLF size of stored bytes: what a client counts of RETR's answer
/// once it has undone the dot-stuffing. Each LF not preceded by CR counts
/// twice, and a last line without a line end gets the CRLF the encoder
/// adds. Pieces of one message can be summed with [`CrlfSize`].
pub fn crlf_size(bytes: &[u8]) -> u64 {
    let mut s = CrlfSize::default();
    s.feed(bytes);
    s.finish()
}

/// [`crlf_size`] over a message fed in pieces.
#[derive(Default)]
pub struct CrlfSize {
    fed: u64,
    last: Option<u8>,
}

impl CrlfSize {
    pub fn feed(&mut self, bytes: &[u8]) {
        let bare = memchr::memchr_iter(b'\n', bytes)
            .filter(|&i| match i.checked_sub(1) {
                Some(p) => bytes[p] != b'\r',
                None => self.last != Some(b'\r'),
            })
            .count() as u64;
        if let Some(&last) = bytes.last() {
            self.last = Some(last);
        }
        self.fed += bytes.len() as u64 + bare;
    }

    /// The size of all that was fed.
    pub fn finish(&self) -> u64 {
        match self.last {
            None | Some(b'\n') => self.fed,
            Some(b'\r') => self.fed + 1,
            Some(_) => self.fed + 2,
        }
    }
}

/// Whether RETR can send stored bytes as they are, followed by `.CRLF`:
/// every line ends with CRLF (the last one too) and none starts with a
/// dot. Then the [`Encoder`] would change nothing.
pub fn sent_unchanged(stored: &[u8]) -> bool {
    if stored.is_empty() {
        return true;
    }
    if stored[0] == b'.' || !stored.ends_with(b"\r\n") {
        return false;
    }
    memchr::memchr_iter(b'\n', stored)
        .all(|i| i > 0 && stored[i - 1] == b'\r' && stored.get(i + 1) != Some(&b'.'))
}

/// What to send of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// RETR: all of it.
    Whole,
    /// TOP: the header, the blank line, and this many body lines.
    Top(u64),
}

/// Encodes one message for the wire; see the module comment.
pub struct Encoder {
    at_line_start: bool,
    last_was_cr: bool,
    /// Bytes of the current line so far (to tell the blank line).
    line_len: usize,
    in_header: bool,
    /// Body lines still to send (TOP).
    body_lines_left: Option<u64>,
    done: bool,
}

impl Encoder {
    pub fn new(extent: Extent) -> Encoder {
        let body_lines_left = match extent {
            Extent::Whole => None,
            Extent::Top(n) => Some(n),
        };
        Encoder {
            at_line_start: true,
            last_was_cr: false,
            line_len: 0,
            in_header: true,
            body_lines_left,
            done: false,
        }
    }

    /// Whether TOP has sent all it should: the rest of the file is not needed.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Encode the next piece of the message into `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 32 + 8);
        while !input.is_empty() && !self.done {
            let (line, newline) = match memchr::memchr(b'\n', input) {
                Some(i) => (&input[..i], true),
                None => (input, false),
            };
            input = &input[line.len() + usize::from(newline)..];
            if self.at_line_start && line.first() == Some(&b'.') {
                out.push(b'.');
            }
            out.extend_from_slice(line);
            if let Some(&last) = line.last() {
                self.last_was_cr = last == b'\r';
                self.at_line_start = false;
                self.line_len += line.len();
            }
            if newline {
                if !self.last_was_cr {
                    out.push(b'\r');
                }
                out.push(b'\n');
                self.end_of_line();
            }
        }
    }

    /// A line ended: TOP's bookkeeping.
    fn end_of_line(&mut self) {
        let blank = self.line_len == 0 || (self.line_len == 1 && self.last_was_cr);
        self.at_line_start = true;
        self.last_was_cr = false;
        self.line_len = 0;
        let Some(left) = self.body_lines_left.as_mut() else {
            return;
        };
        if self.in_header {
            if blank {
                self.in_header = false;
                self.done = *left == 0;
            }
        } else {
            *left = left.saturating_sub(1);
            self.done = *left == 0;
        }
    }

    /// End the message: a CRLF if the last line had none, then `.CRLF`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.at_line_start {
            if !self.last_was_cr {
                out.push(b'\r');
            }
            out.push(b'\n');
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(input: &[u8], extent: Extent, piece: usize) -> Vec<u8> {
        let mut e = Encoder::new(extent);
        let mut out = Vec::new();
        for chunk in input.chunks(piece.max(1)) {
            e.feed(chunk, &mut out);
        }
        e.finish(&mut out);
        out
    }

    /// The inverse, as a client does it (RFC 1939 §3).
    fn unstuff(wire: &[u8]) -> Vec<u8> {
        let body = wire.strip_suffix(b".\r\n").expect("terminator");
        let mut out = Vec::new();
        for line in body.split_inclusive(|b| *b == b'\n') {
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        out
    }

    #[test]
    fn bare_lf_becomes_crlf_and_dots_are_stuffed() {
        let stored = b"Subject: x\n\n.hidden\n..two\nmid.dot\n.\nend";
        let want = b"Subject: x\r\n\r\n..hidden\r\n...two\r\nmid.dot\r\n..\r\nend\r\n.\r\n";
        for piece in [1, 2, 3, 7, 1000] {
            assert_eq!(
                encode(stored, Extent::Whole, piece),
                want.to_vec(),
                "pieces of {piece}"
            );
        }
        // Six bare LFs, and the CRLF after "end".
        assert_eq!(crlf_size(stored), stored.len() as u64 + 6 + 2);
    }

    #[test]
    fn crlf_stays_and_sizes_match_what_is_sent() {
        let stored = b"A: b\r\n\r\nline\r\n.\r\nx\r\n";
        let wire = encode(stored, Extent::Whole, 3);
        assert_eq!(wire, b"A: b\r\n\r\nline\r\n..\r\nx\r\n.\r\n".to_vec());
        assert_eq!(unstuff(&wire), stored.to_vec());
        assert_eq!(crlf_size(stored), stored.len() as u64);
        let mixed = b"a\r\nb\nc\r\n";
        assert_eq!(crlf_size(mixed), 9);
        let mut pieces = CrlfSize::default();
        pieces.feed(b"a\r");
        pieces.feed(b"\nb\n");
        assert_eq!(pieces.finish(), 6);
        assert_eq!(crlf_size(b"a\r"), 3);
        assert_eq!(crlf_size(b""), 0);
        assert_eq!(unstuff(&encode(mixed, Extent::Whole, 1)).len(), 9);
    }

    proptest::proptest! {
        /// The shortcut RETR takes agrees with the encoder, and sizes
        /// fed in pieces agree with the whole.
        #[test]
        fn unchanged_means_the_encoder_changes_nothing(
            bytes in proptest::collection::vec(
                proptest::sample::select(vec![b'a', b'.', b'\r', b'\n', b' ']),
                0..64,
            ),
            cut in 0usize..64,
        ) {
            let encoded = encode(&bytes, Extent::Whole, 5);
            let mut passed = bytes.clone();
            passed.extend_from_slice(b".\r\n");
            if sent_unchanged(&bytes) {
                proptest::prop_assert_eq!(&encoded, &passed);
            } else {
                proptest::prop_assert_ne!(&encoded, &passed);
            }
            let cut = cut.min(bytes.len());
            let mut pieces = CrlfSize::default();
            pieces.feed(&bytes[..cut]);
            pieces.feed(&bytes[cut..]);
            proptest::prop_assert_eq!(pieces.finish(), crlf_size(&bytes));
            proptest::prop_assert_eq!(unstuff(&encoded).len() as u64, crlf_size(&bytes));
        }
    }

    #[test]
    fn top_sends_the_header_and_n_body_lines() {
        let stored = b"A: 1\nB: 2\n\none\n.two\nthree\n";
        assert_eq!(
            encode(stored, Extent::Top(0), 2),
            b"A: 1\r\nB: 2\r\n\r\n.\r\n".to_vec()
        );
        assert_eq!(
            encode(stored, Extent::Top(2), 4),
            b"A: 1\r\nB: 2\r\n\r\none\r\n..two\r\n.\r\n".to_vec()
        );
        assert_eq!(
            encode(stored, Extent::Top(99), 5),
            encode(stored, Extent::Whole, 5)
        );
        // No body at all, and no blank line: everything there is.
        assert_eq!(
            encode(b"A: 1", Extent::Top(1), 1),
            b"A: 1\r\n.\r\n".to_vec()
        );
        assert_eq!(encode(b"", Extent::Whole, 1), b".\r\n".to_vec());
    }
}
