//! Test messages: realistic RFC 5322 text, padded to an exact size, unique
//! per message (or byte-identical on request). Shared by every protocol mode
//! that sends mail (LMTP DATA, later IMAP APPEND).

use std::time::{SystemTime, UNIX_EPOCH};

/// Longest body line we generate, without CRLF (RFC 5322 recommends <= 78).
const MAX_LINE: usize = 76;

/// Width of the sequence number in the Subject and Message-ID. Fixed, so the
/// header has the same length for every message and the body can be shared.
const SEQ_WIDTH: usize = 10;

/// Makes messages of exactly `size` bytes (CRLF line ends, counted as sent
/// before dot-stuffing; the generated text never needs stuffing anyway).
pub struct MessageGen {
    header: Vec<u8>,
    /// Offsets in `header` of the sequence-number digits to patch.
    seq_at: [usize; 2],
    /// The body, already dot-stuffed for the wire.
    body: Vec<u8>,
    same_content: bool,
}

impl MessageGen {
    /// `same_content`: every message is byte-identical (for dedup tests).
    /// Otherwise each message gets its own Message-ID and Subject. A per-run
    /// nonce in the Message-ID keeps content distinct across runs too.
    pub fn new(size: usize, same_content: bool) -> anyhow::Result<Self> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let nonce = (now.as_nanos() as u64) ^ ((std::process::id() as u64) << 40);
        let zeros = "0".repeat(SEQ_WIDTH);
        let subject_pre = "Subject: Benchmark message ";
        let mut header = String::new();
        header.push_str("From: cove-load <load@bench.example>\r\n");
        header.push_str("To: Benchmark List <list@example.com>\r\n");
        let seq0 = header.len() + subject_pre.len();
        header.push_str(&format!("{subject_pre}{zeros}\r\n"));
        header.push_str(&format!("Date: {}\r\n", rfc5322_date(now.as_secs())));
        let mid_pre = format!("Message-ID: <{nonce:016x}.");
        let seq1 = header.len() + mid_pre.len();
        header.push_str(&format!("{mid_pre}{zeros}@cove-load.bench.example>\r\n"));
        header.push_str("MIME-Version: 1.0\r\n");
        header.push_str("Content-Type: text/plain; charset=us-ascii\r\n");
        header.push_str("Content-Transfer-Encoding: 7bit\r\n");
        header.push_str("\r\n");

        let min = header.len() + 2;
        if size < min {
            anyhow::bail!("message size {size} is too small: the headers alone take {min} bytes");
        }
        let body = dot_stuff(&body_text(size - header.len(), nonce));
        Ok(Self {
            header: header.into_bytes(),
            seq_at: [seq0, seq1],
            body,
            same_content,
        })
    }

    /// The header of message number `seq` (unique unless same_content).
    pub fn header(&self, seq: u64) -> Vec<u8> {
        let mut h = self.header.clone();
        if !self.same_content {
            let digits = format!(
                "{:0width$}",
                seq % 10u64.pow(SEQ_WIDTH as u32),
                width = SEQ_WIDTH
            );
            for at in self.seq_at {
                h[at..at + SEQ_WIDTH].copy_from_slice(digits.as_bytes());
            }
        }
        h
    }

    /// The body as sent on the wire (dot-stuffed, ends with CRLF).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Size of the message in bytes (header + body, before dot-stuffing).
    pub fn size(&self) -> usize {
        self.header.len() + self.body.len()
    }
}

/// Plain-text paragraphs of exactly `len` bytes (len >= 2), lines <= MAX_LINE
/// chars plus CRLF.
fn body_text(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the",
        "mail",
        "server",
        "stores",
        "every",
        "message",
        "once",
        "and",
        "links",
        "it",
        "into",
        "each",
        "mailbox",
        "that",
        "should",
        "receive",
        "a",
        "copy",
        "delivery",
        "is",
        "acknowledged",
        "only",
        "after",
        "data",
        "reaches",
        "stable",
        "storage",
        "replicas",
        "agree",
        "on",
        "flags",
        "uids",
        "quarterly",
        "report",
        "attached",
        "please",
        "review",
        "before",
        "meeting",
        "thursday",
        "budget",
        "figures",
        "were",
        "updated",
        "yesterday",
        "regards",
        "team",
        "project",
        "schedule",
        "next",
        "week",
        "notes",
        "from",
        "call",
        "with",
        "customer",
        "about",
        "invoice",
        "shipping",
        "address",
        "confirmed",
    ];
    let mut rng = seed | 1;
    let mut next = move || {
        // xorshift64: deterministic filler, no need for quality.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut out = Vec::with_capacity(len);
    let mut remaining = len;
    let mut line = String::with_capacity(MAX_LINE + 16);
    while remaining > 0 {
        // Target text length of this line, leaving either nothing or >= 2
        // bytes (room for another CRLF) after it.
        let want = if remaining - 2 <= MAX_LINE {
            remaining - 2
        } else if remaining - (MAX_LINE + 2) == 1 {
            MAX_LINE - 1
        } else {
            // Vary line lengths a little, like real text.
            let l = MAX_LINE - (next() % 16) as usize;
            if remaining - (l + 2) == 1 { l - 1 } else { l }
        };
        line.clear();
        // Every tenth line or so is a blank paragraph break, when it fits.
        if want > 0 && remaining - 2 > MAX_LINE && next() % 10 == 0 {
            out.extend_from_slice(b"\r\n");
            remaining -= 2;
            continue;
        }
        while line.len() < want {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(WORDS[(next() % WORDS.len() as u64) as usize]);
        }
        line.truncate(want);
        // No trailing blank: replace it with a letter.
        if line.ends_with(' ') {
            line.pop();
            line.push('s');
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
        remaining -= want + 2;
    }
    debug_assert_eq!(out.len(), len);
    out
}

/// SMTP/LMTP transparency (RFC 5321 4.5.2): a line starting with '.' gets
/// another '.'. Expects CRLF line ends and the text to start at a line start.
pub fn dot_stuff(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut at_line_start = true;
    for &b in text {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    out
}

/// "Thu, 01 Jan 2026 00:00:00 +0000" for a Unix time.
fn rfc5322_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86400;
    let rem = secs % 86400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_sizes_and_short_lines() {
        for size in [400, 401, 402, 479, 480, 481, 4096, 4097, 102_400, 204_800] {
            for same in [false, true] {
                let g = MessageGen::new(size, same).unwrap();
                assert_eq!(g.size(), size);
                let mut msg = g.header(7);
                msg.extend_from_slice(g.body());
                assert_eq!(msg.len(), size, "size {size}");
                assert!(msg.ends_with(b"\r\n"));
                for line in msg.split(|&b| b == b'\n') {
                    assert!(line.len() <= 79, "line too long: {}", line.len());
                    assert!(!line.starts_with(b"."));
                }
            }
        }
    }

    #[test]
    fn unique_unless_same_content() {
        let g = MessageGen::new(4096, false).unwrap();
        assert_ne!(g.header(1), g.header(2));
        let g = MessageGen::new(4096, true).unwrap();
        assert_eq!(g.header(1), g.header(2));
    }

    #[test]
    fn too_small() {
        assert!(MessageGen::new(10, false).is_err());
    }

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_767_225_600),
            "Thu, 01 Jan 2026 00:00:00 +0000"
        );
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn stuffing() {
        assert_eq!(dot_stuff(b".a\r\nb.\r\n.\r\n"), b"..a\r\nb.\r\n..\r\n");
    }
}
