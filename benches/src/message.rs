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
    size: usize,
    nonce: u64,
    date: String,
    /// Every message differs in From, Subject and body text (see `varied`).
    varied: Option<Varied>,
}

/// Search-realistic content: every message has its own sender, subject and
/// body text; one message in `every` carries `subject_token` in its Subject
/// (those with `seq % every == 0`) and another one in `every` carries
/// `body_token` in its body (`seq % every == every / 2`), so that
/// `SEARCH SUBJECT`/`SEARCH BODY` for them each hit one message in `every`.
#[derive(Clone, Debug)]
pub struct Varied {
    pub every: u64,
    pub subject_token: String,
    pub body_token: String,
}

impl Varied {
    /// How many of the messages `0..n` carry the subject token and the
    /// body token.
    pub fn hits(&self, n: u64) -> (u64, u64) {
        if self.every == 0 {
            return (0, 0);
        }
        let half = self.every / 2;
        let subj = n.div_ceil(self.every);
        let body = if n > half {
            (n - half).div_ceil(self.every)
        } else {
            0
        };
        (subj, body)
    }
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
            size,
            nonce,
            date: rfc5322_date(now.as_secs()),
            varied: None,
        })
    }

    /// Like `new(size, false)`, but every message is generated on its own
    /// (sender, subject words, body text), with rare tokens (see `Varied`).
    pub fn new_varied(size: usize, varied: Varied) -> anyhow::Result<Self> {
        for t in [&varied.subject_token, &varied.body_token] {
            if t.is_empty() || t.len() > 16 || !t.bytes().all(|b| b.is_ascii_alphanumeric()) {
                anyhow::bail!("search tokens must be 1-16 ASCII letters/digits: {t:?}");
            }
        }
        let mut g = Self::new(size, false)?;
        // Headers stay under 400 bytes (lines < 78 chars), the token line
        // under 70: 512 always leaves room for the filler.
        if size < 512 {
            anyhow::bail!("message size {size} is too small for varied messages (at least 512)");
        }
        g.varied = Some(varied);
        Ok(g)
    }

    /// Header of a varied message (Subject with the token if `token`).
    fn varied_header(&self, seq: u64, token: bool, v: &Varied) -> Vec<u8> {
        const NAMES: &[&str] = &[
            "Alice", "Bruno", "Chiara", "Dmitri", "Eva", "Farid", "Greta", "Hiro", "Ines", "Jonas",
            "Kemal", "Lucia", "Marek", "Nadia", "Olaf", "Priya", "Quentin", "Rosa", "Sven",
            "Tamar",
        ];
        const DOMAINS: &[&str] = &[
            "example.org",
            "example.net",
            "mail.example.com",
            "corp.example",
            "lists.example.org",
        ];
        let mut rng = (self.nonce ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1;
        let name = NAMES[(xorshift(&mut rng) % NAMES.len() as u64) as usize];
        let dom = DOMAINS[(xorshift(&mut rng) % DOMAINS.len() as u64) as usize];
        let n = xorshift(&mut rng) % 100;
        let mut subject = String::new();
        // 3 words or more, at most 36 characters: the Subject line stays
        // under 78 characters with a token and the number.
        let words = 3 + xorshift(&mut rng) % 5;
        for i in 0..words {
            let w = WORDS[(xorshift(&mut rng) % WORDS.len() as u64) as usize];
            if i >= 3 && subject.len() + 1 + w.len() > 36 {
                break;
            }
            if i > 0 {
                subject.push(' ');
            }
            subject.push_str(w);
        }
        if token {
            subject.push(' ');
            subject.push_str(&v.subject_token);
        }
        let mut h = String::with_capacity(512);
        h.push_str(&format!(
            "From: {name} <{}{n}@{dom}>\r\n",
            name.to_ascii_lowercase()
        ));
        h.push_str("To: Benchmark List <list@example.com>\r\n");
        h.push_str(&format!("Subject: {subject} #{seq}\r\n"));
        h.push_str(&format!("Date: {}\r\n", self.date));
        h.push_str(&format!(
            "Message-ID: <{:016x}.{seq:0width$}@cove-load.bench.example>\r\n",
            self.nonce,
            width = SEQ_WIDTH
        ));
        h.push_str("MIME-Version: 1.0\r\n");
        h.push_str("Content-Type: text/plain; charset=us-ascii\r\n");
        h.push_str("Content-Transfer-Encoding: 7bit\r\n");
        h.push_str("\r\n");
        h.into_bytes()
    }

    /// Message `seq` as sent on the wire (dot-stuffed), as header and body.
    pub fn parts(&self, seq: u64) -> (Vec<u8>, std::borrow::Cow<'_, [u8]>) {
        let Some(v) = &self.varied else {
            return (self.header(seq), std::borrow::Cow::Borrowed(self.body()));
        };
        let (subj, body_tok) = if v.every == 0 {
            (false, false)
        } else {
            (seq.is_multiple_of(v.every), seq % v.every == v.every / 2)
        };
        let header = self.varied_header(seq, subj, v);
        let mut body = Vec::with_capacity(self.size - header.len());
        if body_tok {
            body.extend_from_slice(
                format!(
                    "Please check the {} figures before Thursday.\r\n",
                    v.body_token
                )
                .as_bytes(),
            );
        }
        let rest = self.size - header.len() - body.len();
        let seed = self.nonce ^ seq.wrapping_mul(0xd134_2543_de82_ef95);
        body.extend_from_slice(&body_text(rest, seed));
        (header, std::borrow::Cow::Owned(dot_stuff(&body)))
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

/// Filler vocabulary (the search tokens must not be substrings of any
/// run of these words).
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

/// Plain-text paragraphs of exactly `len` bytes (len >= 2), lines <= MAX_LINE
/// chars plus CRLF.
fn body_text(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = seed | 1;
    let mut next = move || xorshift(&mut rng);
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

/// xorshift64: deterministic filler, no need for quality.
pub fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
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
    fn varied_messages() {
        let v = Varied {
            every: 10,
            subject_token: "marzipan".into(),
            body_token: "kumquat".into(),
        };
        assert_eq!(v.hits(100), (10, 10));
        assert_eq!(v.hits(5), (1, 0));
        assert_eq!(v.hits(6), (1, 1));
        let g = MessageGen::new_varied(4096, v.clone()).unwrap();
        let mut seen = std::collections::HashSet::new();
        let (mut subj, mut body) = (0, 0);
        for seq in 0..100 {
            let (h, b) = g.parts(seq);
            let mut msg = h.clone();
            msg.extend_from_slice(&b);
            assert_eq!(msg.len(), 4096, "seq {seq}");
            for line in msg.split(|&b| b == b'\n') {
                assert!(line.len() <= 79, "line too long: {}", line.len());
                assert!(!line.starts_with(b"."));
            }
            let text = String::from_utf8(msg).unwrap();
            if text.contains("marzipan") {
                subj += 1;
                assert!(String::from_utf8_lossy(&h).contains("marzipan"));
            }
            if text.contains("kumquat") {
                body += 1;
                assert!(!String::from_utf8_lossy(&h).contains("kumquat"));
            }
            assert!(seen.insert(b.into_owned()), "bodies differ");
        }
        assert_eq!((subj, body), (10, 10));
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
