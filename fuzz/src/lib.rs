//! The bodies of cove's fuzz targets, one function per target.
//!
//! They live here rather than in `fuzz_targets/` so that
//! `server/tests/fuzz_regressions.rs` can include this very file (`#[path]`)
//! and run the same code on every `cargo test`, without nightly or
//! libFuzzer. So this file may use only `cove`, `imap_codec` and `std`.
//!
//! Each body calls the parsers exactly as the server does with bytes a
//! client sent, and checks what must hold whatever those bytes are: no
//! panic, and a few cheap invariants (two ways of computing the same answer
//! agree; what we send back is well-formed IMAP).

use cove::imap::command as imap_command_decoder;
use cove::imap::framing::{CommandLimits, Framer, Next, tag_of};
use cove::imap::mime::{self, ParsedMessage, SectionKind};
use cove::imap::revision::Revision;
use cove::imap::sort::{self, Address, Algorithm, Candidate, MessageKeys, SortCriterion, SortKey};
use cove::imap::{esearch, extended, searchres};
use cove::lmtp::command;
use cove::lmtp::data::{DataDecoder, Step};
use cove::pop3::encode::{Encoder, Extent, crlf_size, sent_unchanged};
use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use imap_codec::imap_types::IntoStatic;

/// The limits `framing::read_command` applies once logged in, with the
/// defaults of `[imap]`.
const LIMITS: CommandLimits = CommandLimits {
    max_line: 64 * 1024,
    max_literals: 100,
    max_literal_bytes: 50 * 1024 * 1024,
};

/// Target `imap_command`: the bytes of one command, or of several in a row
/// as a client would pipeline them.
///
/// The whole input is handled as `session.rs` handles a complete command:
/// `extended::parse`, then imap-codec, then the tag for a BAD. Then it is
/// read again as `framing::read_command` reads a socket (line by line,
/// literals by their announced length), and each command framed that way
/// goes through the same steps.
pub fn imap_command(data: &[u8]) {
    complete_command(data);
    for command in frame_commands(data) {
        complete_command(&command);
    }
}

/// `Session::run` on one framed command, up to dispatch: the session's own
/// decoder (`command::decode`: the ESEARCH RETURN split, `extended`,
/// imap-codec, the table), then each parser on its own.
fn complete_command(bytes: &[u8]) {
    use imap_command_decoder::Decoded;
    // As an IMAP4rev1 and an IMAP4rev2 session reads it (names, SEARCH).
    for rev in [Revision::Rev1, Revision::Rev2] {
        match imap_command_decoder::decode_as(bytes.to_vec(), rev) {
            Decoded::Command { tag, command } => {
                assert!(!tag.is_empty());
                let _ = command.spec();
            }
            Decoded::Unsupported { tag, name } => {
                let _ = format!("{tag} BAD {name} is not supported\r\n");
            }
            Decoded::Invalid { tag, .. } => {
                let _ = format!("{tag} BAD x\r\n");
            }
        }
    }
    if let Some(Ok((_, plain))) = esearch::split_return(bytes) {
        assert!(plain.len() < bytes.len(), "the RETURN option is taken off");
    }
    for at in searchres::dollar_positions(bytes) {
        assert_eq!(bytes.get(at), Some(&b'$'));
    }
    if let Some(parsed) = extended::parse(bytes) {
        let tag = match parsed {
            Ok(extended::Extended::List { tag, .. }) => tag,
            Ok(extended::Extended::CreateSpecialUse { tag, .. }) => tag,
            Err(_) => tag_of(bytes).unwrap_or("*").to_string(),
        };
        let _ = format!("{tag} BAD x\r\n");
        return;
    }
    match CommandCodec::default().decode(bytes) {
        Ok((rest, command)) => {
            assert!(rest.len() <= bytes.len());
            let command = command.into_static();
            let _ = command.tag.inner().to_string();
            let _ = format!("{:?}", command.body);
        }
        Err(_) => {
            if let Some(tag) = tag_of(bytes) {
                assert!(!tag.is_empty() && tag.len() <= 64, "{tag:?}");
                assert!(bytes.starts_with(tag.as_bytes()));
            }
            let _ = String::from_utf8_lossy(&bytes[..bytes.len().min(60)])
                .trim_end()
                .to_string();
        }
    }
}

/// `framing::read_command` over an in-memory stream: the complete commands
/// it would hand to the session, in order. The decisions are
/// `framing::Framer`'s own; this only moves the bytes.
fn frame_commands(mut input: &[u8]) -> Vec<Vec<u8>> {
    let mut commands = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut framer = Framer::new(LIMITS);
    loop {
        // read_line: through the next LF; a line cut off by EOF is dropped.
        let Some(lf) = input.iter().position(|b| *b == b'\n') else {
            return commands;
        };
        let line = &input[..=lf];
        input = &input[lf + 1..];
        let next = if line.len() > framer.line_room() {
            framer.line_too_long()
        } else {
            buf.extend_from_slice(line);
            framer.line(line)
        };
        match next {
            Next::Done => {
                commands.push(std::mem::take(&mut buf));
                framer = Framer::new(LIMITS);
            }
            Next::Refused(_) => {
                buf.clear();
                framer = Framer::new(LIMITS);
            }
            Next::Skip(length) | Next::Literal { length, .. } => {
                let Ok(length) = usize::try_from(length) else {
                    return commands;
                };
                if input.len() < length {
                    return commands;
                }
                if matches!(next, Next::Literal { .. }) {
                    buf.extend_from_slice(&input[..length]);
                }
                input = &input[length..];
            }
        }
    }
}

/// Part numbers a FETCH may name: the message, the first levels, nested
/// parts, and numbers no message has.
const PART_PATHS: &[&[u32]] = &[
    &[],
    &[1],
    &[2],
    &[3],
    &[1, 1],
    &[1, 2],
    &[2, 1],
    &[2, 2],
    &[2, 2, 1],
    &[1, 1, 1, 1],
    &[0],
    &[1, 0],
    &[u32::MAX],
];

fn section_kinds() -> Vec<SectionKind> {
    vec![
        SectionKind::Full,
        SectionKind::Header,
        SectionKind::Text,
        SectionKind::Mime,
        SectionKind::HeaderFields {
            names: vec!["Subject".into(), "FROM".into(), "content-type".into()],
            not: false,
        },
        SectionKind::HeaderFields {
            names: vec!["received".into()],
            not: true,
        },
        SectionKind::HeaderFields {
            names: Vec::new(),
            not: false,
        },
    ]
}

/// Target `imap_sort`: arbitrary bytes as the header keys of a mailbox
/// (one message per NUL-separated record; its lines are the subject,
/// Message-ID, References, In-Reply-To, From mailbox and display name; its
/// dates and size derive from its bytes), through every SORT key, both ways,
/// and both THREAD algorithms. Each answer must name every message exactly
/// once; the THREAD text must be balanced with no empty list.
pub fn imap_sort(data: &[u8]) {
    let messages: Vec<Candidate> = data
        .split(|&b| b == 0)
        .take(2_000)
        .enumerate()
        .map(|(i, record)| Candidate::from(&sort_keys(i, record)))
        .collect();
    // The prepared keys' cached form reads back as they were.
    for m in &messages {
        assert_eq!(
            sort::decode_keys(&sort::encode_keys(&m.keys)).as_ref(),
            Some(&*m.keys)
        );
    }
    let n = messages.len();
    let keys = [
        SortKey::Arrival,
        SortKey::Cc,
        SortKey::Date,
        SortKey::From,
        SortKey::Size,
        SortKey::Subject,
        SortKey::To,
        SortKey::DisplayFrom,
        SortKey::DisplayTo,
    ];
    for key in keys {
        for reverse in [false, true] {
            let mut order = sort::sort(&messages, &[SortCriterion { key, reverse }]);
            order.sort_unstable();
            assert!(
                order.iter().copied().eq(0..n),
                "{key:?} lost or doubled a message"
            );
        }
    }
    for algorithm in [Algorithm::OrderedSubject, Algorithm::References] {
        let text = sort::write_threads(&sort::thread(&messages, algorithm), |i| i as u32 + 1);
        assert!(!text.contains("()"), "{algorithm:?}: empty list in {text}");
        let mut depth = 0i64;
        for c in text.bytes() {
            depth += match c {
                b'(' => 1,
                b')' => -1,
                _ => 0,
            };
            assert!(depth >= 0, "{algorithm:?}: unbalanced {text}");
        }
        assert_eq!(depth, 0, "{algorithm:?}: unbalanced {text}");
        let mut seen: Vec<usize> = text
            .split(|c: char| !c.is_ascii_digit())
            .filter(|w| !w.is_empty())
            .map(|w| w.parse().expect("a number"))
            .collect();
        seen.sort_unstable();
        assert!(seen.iter().copied().eq(1..=n), "{algorithm:?}: {text}");
    }
}

/// One message's keys from one record of [`imap_sort`]'s input.
fn sort_keys(i: usize, record: &[u8]) -> MessageKeys {
    let text = String::from_utf8_lossy(record);
    let mut lines = text.split('\n').map(str::to_string);
    let hash = record
        .iter()
        .fold(0i64, |h, &b| h.wrapping_mul(31).wrapping_add(i64::from(b)));
    let subject = lines.next().unwrap_or_default();
    let message_id = lines.next();
    let references = lines.next();
    let in_reply_to = lines.next();
    let from = lines.next().map(|mailbox| Address {
        display_name: lines.next().unwrap_or_default(),
        mailbox,
        host: String::new(),
    });
    MessageKeys {
        uid: i as u32 + 1,
        internal_date: hash % 1000,
        sent_date: (hash % 3 != 0).then_some(hash % 500),
        size: record.len() as u64,
        subject,
        to: from.clone(),
        from,
        message_id,
        references,
        in_reply_to,
        ..MessageKeys::default()
    }
}

/// Target `imap_mime`: arbitrary bytes as a stored message, through every
/// FETCH view of it.
///
/// The free functions (`mime::envelope` and the rest) parse the message
/// again on each call, so each is called once and compared with
/// [`ParsedMessage`], which serves all the part paths and kinds from one
/// parse; that keeps the target fast enough to explore.
pub fn imap_mime(data: &[u8]) {
    let parsed = ParsedMessage::parse(data);

    let envelope = parsed.envelope();
    check_imap_syntax("ENVELOPE", &envelope);
    assert_eq!(envelope, mime::envelope(data));

    for extensible in [false, true] {
        let body = parsed.bodystructure(extensible);
        check_imap_syntax("BODYSTRUCTURE", &body);
        assert_eq!(body, mime::bodystructure(data, extensible));
    }

    let kinds = section_kinds();
    for (i, path) in PART_PATHS.iter().enumerate() {
        for (j, kind) in kinds.iter().enumerate() {
            let section = parsed.section(path, kind);
            if (i + j) % 16 == 0 {
                assert_eq!(section, mime::section_bytes(data, path, kind));
            }
            if let Some(bytes) = section {
                let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
                assert_eq!(mime::partial(&bytes, 0, len), &bytes[..]);
                let half = mime::partial(&bytes, len / 2, 7);
                assert!(half.len() <= 7);
                assert!(mime::partial(&bytes, len, u32::MAX).is_empty());
            }
        }
        let binary = parsed.binary(path);
        if i % 4 == 1 {
            assert_eq!(binary.clone().ok(), mime::binary_section(data, path));
        }
        if let Err(e) = binary {
            let _ = e.to_string();
        }
    }
}

/// What cove writes for ENVELOPE and BODYSTRUCTURE must be one
/// parenthesised list of RFC 3501 §9 `nil`, `number`, quoted strings and
/// literals, or clients cannot read the FETCH response.
fn check_imap_syntax(what: &str, out: &[u8]) {
    let shown = || String::from_utf8_lossy(out).into_owned();
    assert_eq!(
        out.first(),
        Some(&b'('),
        "{what} is not a list: {}",
        shown()
    );
    let mut depth = 0usize;
    let mut i = 0;
    while i < out.len() {
        match out[i] {
            b'(' => {
                depth += 1;
                i += 1;
            }
            b')' => {
                assert!(depth > 0, "{what}: unbalanced ')' at {i}: {}", shown());
                depth -= 1;
                i += 1;
                if depth == 0 {
                    assert_eq!(i, out.len(), "{what}: bytes after the list: {}", shown());
                }
            }
            b' ' => i += 1,
            b'"' => {
                i += 1;
                loop {
                    match out.get(i) {
                        Some(b'"') => break,
                        Some(b'\\') => {
                            assert!(
                                matches!(out.get(i + 1), Some(b'"' | b'\\')),
                                "{what}: bad escape at {i}: {}",
                                shown()
                            );
                            i += 2;
                        }
                        Some(&b) => {
                            assert!(
                                (0x01..=0x7f).contains(&b) && b != b'\r' && b != b'\n',
                                "{what}: byte {b:#04x} in a quoted string at {i}: {}",
                                shown()
                            );
                            i += 1;
                        }
                        None => panic!("{what}: unterminated quoted string: {}", shown()),
                    }
                }
                i += 1;
            }
            b'{' => {
                let close = out[i..]
                    .iter()
                    .position(|b| *b == b'}')
                    .map(|p| p + i)
                    .unwrap_or_else(|| panic!("{what}: bad literal at {i}: {}", shown()));
                let n: usize = std::str::from_utf8(&out[i + 1..close])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("{what}: bad literal length at {i}: {}", shown()));
                assert_eq!(
                    out.get(close + 1..close + 3),
                    Some(&b"\r\n"[..]),
                    "{what}: literal without CRLF at {i}: {}",
                    shown()
                );
                let start = close + 3;
                let data = out
                    .get(start..start + n)
                    .unwrap_or_else(|| panic!("{what}: short literal at {i}: {}", shown()));
                assert!(!data.contains(&0), "{what}: NUL in a literal: {}", shown());
                i = start + n;
            }
            b'0'..=b'9' => {
                while out.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
            }
            b'N' if out[i..].starts_with(b"NIL") => i += 3,
            b => panic!("{what}: unexpected byte {b:#04x} at {i}: {}", shown()),
        }
    }
    assert_eq!(depth, 0, "{what}: unclosed list: {}", shown());
}

/// How `lmtp::session` cuts a long DATA line (`DATA_PIECE`).
const DATA_PIECE: usize = 64 * 1024;

/// Target `lmtp`: every line as a command line, and the whole input as the
/// DATA that follows a 354.
pub fn lmtp(data: &[u8]) {
    for line in data.split_inclusive(|b| *b == b'\n') {
        // session::read_line drops the LF and one CR before it.
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Err(e) = command::parse(line) {
            let _ = format!("{e:?}");
        }
    }

    // DATA as the session reads it: whole lines, long ones in pieces of
    // DATA_PIECE bytes. Smaller pieces must decode to the same message; any
    // piece size of 3 or more can stand for DATA_PIECE (the end marker
    // `.CRLF` is never cut).
    let whole = decode_data(data, |_| DATA_PIECE);
    let piece = 3 + usize::from(data.first().copied().unwrap_or(0) % 61);
    assert_eq!(
        decode_data(data, |_| piece),
        whole,
        "pieces of {piece} bytes decode differently"
    );

    // And cut anywhere at all (pieces of 1 and 2 bytes too): no panic.
    let mut rng = XorShift::new(data);
    decode_data(data, |_| 1 + (rng.next_u64() % 9) as usize);
}

/// Feed `data` to a DataDecoder as the session does: each line, cut into
/// pieces of at most `piece(..)` bytes. Returns what was decoded and how
/// many input bytes were used when the end marker was seen.
fn decode_data(data: &[u8], mut piece: impl FnMut(usize) -> usize) -> (Vec<u8>, Option<usize>) {
    let mut decoder = DataDecoder::default();
    let mut out = Vec::new();
    let mut used = 0;
    for line in data.split_inclusive(|b| *b == b'\n') {
        let mut rest = line;
        while !rest.is_empty() {
            let n = piece(used).clamp(1, rest.len());
            let before = out.len();
            let step = decoder.feed(&rest[..n], &mut out);
            used += n;
            rest = &rest[n..];
            if step == Step::End {
                assert_eq!(out.len(), before, "the end marker wrote bytes");
                return (out, Some(used));
            }
        }
    }
    (out, None)
}

/// Target `pop3`: every line as a POP3 command line, and the whole input
/// as a stored message sent by RETR and TOP.
///
/// The message encoded in random pieces must equal the message encoded at
/// once; with the stuffing undone it must be as long as the size LIST
/// announces (which counts the CRLF added to a last line without one); a
/// message RETR sends as stored must be one the encoder leaves unchanged;
/// TOP must be a prefix of RETR.
pub fn pop3(data: &[u8]) {
    for line in data.split_inclusive(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let _ = format!("{:?}", cove::pop3::command::parse(line));
    }
    let encode = |extent: Extent, pieces: &mut dyn FnMut() -> usize| {
        let mut e = Encoder::new(extent);
        let mut out = Vec::new();
        let mut rest = data;
        while !rest.is_empty() && !e.is_done() {
            let n = pieces().clamp(1, rest.len());
            e.feed(&rest[..n], &mut out);
            rest = &rest[n..];
        }
        e.finish(&mut out);
        out
    };
    let whole = encode(Extent::Whole, &mut || usize::MAX);
    let mut rng = XorShift::new(data);
    assert_eq!(
        encode(Extent::Whole, &mut || 1 + (rng.next_u64() % 9) as usize),
        whole,
        "pieces encode differently"
    );
    let body = whole.strip_suffix(b".\r\n").expect("terminator");
    let mut unstuffed = 0u64;
    for line in body.split_inclusive(|b| *b == b'\n') {
        assert!(line.ends_with(b"\r\n"), "a line without CRLF: {line:?}");
        unstuffed += line.len() as u64 - u64::from(line.first() == Some(&b'.'));
    }
    assert_eq!(unstuffed, crlf_size(data), "LIST size and RETR differ");
    if sent_unchanged(data) {
        assert_eq!(&whole[..data.len()], data, "sent as stored, but encoded");
        assert_eq!(whole.len(), data.len() + 3, "sent as stored, but encoded");
    }
    let lines = rng.next_u64() % 8;
    let top = encode(Extent::Top(lines), &mut || {
        1 + (rng.next_u64() % 17) as usize
    });
    let top_body = top.strip_suffix(b".\r\n").expect("terminator");
    assert!(
        body.starts_with(top_body),
        "TOP {lines} is not a prefix of RETR"
    );
}

/// Target `passwd_file`: a Dovecot passwd-file as `cove user import` reads
/// it, and each hash as a login reads it back from the store.
///
/// A usable line's hash, written out as cove stores it, parses again to the
/// same hash; the fast schemes (plain and digests) are verified with a
/// password (the crypt and argon2 ones cost up to seconds per call, which a
/// fuzzer must not pay; their crates parse before they hash).
pub fn passwd_file(data: &[u8]) {
    use cove::auth::schemes::{LegacyHash, Scheme};
    let text = String::from_utf8_lossy(data);
    for entry in cove::import::users::parse_passwd_file(&text, Some("example.org")) {
        let Ok(entry) = entry else { continue };
        let stored = entry.hash.to_stored();
        let again = LegacyHash::parse(&stored).expect("a stored hash parses again");
        assert_eq!(again, entry.hash, "{stored}");
        let fast = matches!(
            entry.hash.scheme(),
            Scheme::Plain
                | Scheme::PlainMd5
                | Scheme::Sha1
                | Scheme::Sha256
                | Scheme::Sha512
                | Scheme::Smd5
                | Scheme::Ssha
                | Scheme::Ssha256
                | Scheme::Ssha512
        );
        if fast {
            let _ = entry.hash.verify(b"pw");
            let _ = entry.hash.verify(stored.as_bytes());
        }
    }
}

/// A tiny deterministic generator (xorshift64), seeded from the input.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: &[u8]) -> Self {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for &b in seed.iter().take(64) {
            state = (state ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        XorShift(state | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// ManageSieve's wire (RFC 5804): any bytes as command lines and literals
/// never panic, and any string the server sends quoted scans back to the
/// same bytes.
pub fn managesieve(data: &[u8]) {
    use cove::sieve::managesieve::command::{Command, Next, Scanner, Token, string};
    let mut rest = data;
    let mut scanner = Scanner::default();
    while !rest.is_empty() {
        let (line, after) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = after;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match scanner.line(line) {
            Ok(Next::Done) => {
                let _ = format!("{:?}", Command::parse(std::mem::take(&mut scanner.tokens)));
            }
            Ok(Next::Literal(n)) => {
                let n = usize::try_from(n).unwrap_or(usize::MAX).min(rest.len());
                scanner.literal(rest[..n].to_vec());
                rest = &rest[n..];
            }
            Err(_) => scanner = Scanner::default(),
        }
    }
    let mut out = Vec::new();
    string(&mut out, data);
    if out.first() == Some(&b'"') {
        let mut s = Scanner::default();
        assert_eq!(s.line(&out), Ok(Next::Done), "{out:?}");
        assert_eq!(s.tokens, vec![Token::Str(data.to_vec())]);
    }
}
