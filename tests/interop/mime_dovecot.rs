//! cove's ENVELOPE, BODYSTRUCTURE and body sections against Dovecot's, on
//! the corpus in `tests/corpus/` (mailing-list mail and a digest, a DSN,
//! S/MIME-signed and PGP-encrypted mail, RFC 2231 parameters, broken MIME,
//! 8-bit headers, nested message/rfc822, odd address lists, NUL bytes,
//! an HTML newsletter, a calendar invitation, a header-only message,
//! message/global, header quirks, a digest with an encoded message).
//!
//! Both servers get the same bytes by APPEND and answer the same FETCH
//! commands; the answers are compared as parsed IMAP values (a quoted string
//! equals a literal with the same bytes); BINARY and BINARY.SIZE too, for
//! leaf parts. The tokens RFC 2045 makes case-insensitive (type, subtype,
//! encoding, parameter and disposition names) and charset names are
//! compared upper-cased: cove sends them upper case, as the RFC examples
//! do, and Dovecot echoes them as written.
//!
//! Dovecot runs as its own `imap` process (`dovecot_imap.rs`).
//!
//! Every difference that remains is listed in [`KNOWN_DIFFERENCES`] with the
//! reason cove answers as it does, and in docs/rfc-status.md. The test fails
//! on any other difference, and also when a listed one disappears, so the
//! list stays true.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::net::TcpStream;

use cove_tests::{IMAP_CONFIG, TestServer, quoted};

use crate::common::announce;
use crate::dovecot_imap::{Dovecot, USER, corpus, dovecot_imap_installed};
use crate::imap_value::{RawSession, Value, text};

const PASSWORD: &str = "a mime test";

/// (corpus file, FETCH item, why cove's answer differs from Dovecot's). An
/// item ending in `*` covers every item it starts. Keep docs/rfc-status.md
/// ("Differences from Dovecot") in step.
const KNOWN_DIFFERENCES: &[(&str, &str, &str)] = &[
    (
        "06-rfc2231.eml",
        "B*",
        "cove decodes an RFC 2231 `boundary*=us-ascii''...` and splits the multipart; \
         Dovecot 2.3 reads only a plain `boundary` and shows one empty part",
    ),
    (
        "07-broken-mime.eml",
        "BODY",
        "a multipart without a boundary: cove says APPLICATION/OCTET-STREAM (its bytes \
         stay fetchable as part 4); Dovecot says a multipart with one empty text part",
    ),
    ("07-broken-mime.eml", "BODYSTRUCTURE", "as BODY"),
    (
        "07-broken-mime.eml",
        "BODY[4.1*",
        "part 4.1 exists only in Dovecot's reading",
    ),
    ("07-broken-mime.eml", "BINARY[4.1]", "as BODY[4.1]"),
    (
        "07-broken-mime.eml",
        "BINARY.SIZE*",
        "one part has an unknown encoding (x-unknown): Dovecot then refuses BINARY.SIZE \
         of every part; cove answers each part's size and NO [UNKNOWN-CTE] for that one",
    ),
    (
        "19-header-quirks.eml",
        "BINARY.SIZE*",
        "as in 07: one part is x-uuencode, and Dovecot refuses BINARY.SIZE of every part",
    ),
    (
        "20-digest-and-rfc822-headers.eml",
        "BODY",
        "a base64-encoded message/rfc822 part: cove says APPLICATION/OCTET-STREAM \
         (RFC 2046 5.2.1 allows only 7bit, 8bit or binary there, and an envelope it \
         did not parse would be made up); Dovecot says MESSAGE/RFC822 with an empty \
         envelope and body, and counts the CRLF before the next delimiter",
    ),
    (
        "20-digest-and-rfc822-headers.eml",
        "BODYSTRUCTURE",
        "as BODY",
    ),
    (
        "20-digest-and-rfc822-headers.eml",
        "BODY[3*",
        "the same part: Dovecot keeps the CRLF before the delimiter and gives it \
         sub-parts",
    ),
    (
        "20-digest-and-rfc822-headers.eml",
        "BINARY*",
        "the same part: cove decodes its base64 (RFC 3516 4.2), Dovecot sends it encoded",
    ),
    (
        "10-addresses.eml",
        "ENVELOPE",
        "two Subject: and two Message-ID: fields: cove takes the first (as its SORT \
         keys do; SEARCH matches either), Dovecot the last",
    ),
    (
        "12-binary-nul.eml",
        "BODY*",
        "Dovecot re-encodes a binary part to base64 when saving a BINARY APPEND \
         (RFC 3516 §4.4 allows it); cove stores the bytes as given and sends a NUL \
         as 0x80 outside BINARY[]",
    ),
    (
        "13-bare-lf-simple.eml",
        "B*",
        "bare LF line ends: cove sends and counts the stored bytes; Dovecot sends \
         CRLF and counts with it (docs/interop.md)",
    ),
    (
        "14-html-newsletter.eml",
        "BODY[2]",
        "a nested multipart's close delimiter directly followed by the outer one: \
         RFC 2046 5.1.1 gives the CRLF between them to the outer delimiter, so cove's \
         part 2 ends at `--=_rel_3c--`; Dovecot keeps the CRLF in part 2",
    ),
    (
        "16-headers-only-and-odd.eml",
        "ENVELOPE",
        "To: with empty list elements (`(comment only), ,,`, RFC 5322 4.4 obs-addr-list): \
         cove skips them, Dovecot writes a MISSING_MAILBOX address for each; a lone \
         quoted word is a mailbox for cove, a display name for Dovecot; a Message-ID \
         folded onto its own line is trimmed by cove, Dovecot keeps the leading space",
    ),
];

/// Whether `item` of `file` is a listed difference.
fn known(file: &str, item: &str, entry: &(&str, &str, &str)) -> bool {
    let (f, pattern, _) = entry;
    *f == file
        && match pattern.strip_suffix('*') {
            Some(prefix) => item.starts_with(prefix),
            None => item == *pattern,
        }
}

#[test]
fn envelope_bodystructure_and_sections_match_dovecot() {
    if !dovecot_imap_installed() {
        return;
    }
    let corpus = corpus();
    let server = TestServer::start(IMAP_CONFIG);
    server.add_user_with_password(USER, PASSWORD);
    let mut cove = cove_session(&server);
    let mut dovecot = Dovecot::start();
    for (_, message) in &corpus {
        cove.append("INBOX", message);
        dovecot.session.append("INBOX", message);
    }
    cove.command(b"SELECT INBOX");
    dovecot.session.command(b"SELECT INBOX");

    let mut differences = BTreeMap::new();
    let mut compared = 0;
    for (n, (name, _)) in corpus.iter().enumerate() {
        let seq = n + 1;
        let mut items: Vec<String> = ["ENVELOPE", "BODYSTRUCTURE", "BODY"]
            .map(String::from)
            .into();
        let mut paths = Vec::new();
        for session in [&mut cove as &mut dyn Fetch, &mut dovecot.session] {
            if let Some(structure) = session.item(seq, "BODYSTRUCTURE") {
                part_paths(&structure, &[], &mut paths);
            }
        }
        paths.sort();
        paths.dedup();
        items.extend(["BODY[HEADER]", "BODY[TEXT]", "BODY[]"].map(String::from));
        for (path, kind) in paths {
            let dotted = path
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(".");
            // RFC 3501 §6.4.5 defines HEADER and TEXT after a part number
            // only for a message/rfc822 part.
            let suffixes: &[&str] = if kind == Kind::Message {
                &["", ".MIME", ".HEADER", ".TEXT"]
            } else {
                &["", ".MIME"]
            };
            for suffix in suffixes {
                items.push(format!("BODY[{dotted}{suffix}]"));
            }
            // RFC 3516: a leaf's decoded content and its size. (Dovecot
            // 2.3.19's imap process dies on BINARY.SIZE of a multipart.)
            if kind == Kind::Leaf {
                items.push(format!("BINARY[{dotted}]"));
                items.push(format!("BINARY.SIZE[{dotted}]"));
            }
        }
        compared += items.len();
        for item in items {
            let theirs = dovecot.session.item(seq, &item).map(|v| fold(&item, v));
            let ours = cove.item(seq, &item).map(|v| fold(&item, v));
            if ours != theirs {
                differences.insert((name.clone(), item), (ours, theirs));
            }
        }
    }
    drop(dovecot);
    announce(&format!(
        "mime_dovecot: {} messages, {compared} FETCH items compared, {} differ",
        corpus.len(),
        differences.len()
    ));

    let mut report = String::new();
    for ((file, item), (ours, theirs)) in &differences {
        if !KNOWN_DIFFERENCES.iter().any(|k| known(file, item, k)) {
            report.push_str(&format!(
                "\n{file} {item}\n  cove:    {ours:?}\n  dovecot: {theirs:?}\n"
            ));
        }
    }
    for entry @ (file, item, why) in KNOWN_DIFFERENCES {
        if !differences.keys().any(|(f, i)| known(f, i, entry)) {
            report.push_str(&format!(
                "\n{file} {item}: listed as a difference ({why}) but now equal\n"
            ));
        }
    }
    assert!(report.is_empty(), "cove and Dovecot differ:{report}");
}

type CoveSession = RawSession<BufReader<TcpStream>, TcpStream>;

fn cove_session(server: &TestServer) -> CoveSession {
    let stream = TcpStream::connect(server.addr_of("imap")).expect("connect");
    stream
        .set_read_timeout(Some(cove_tests::READ_TIMEOUT))
        .expect("timeout");
    let reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut session = RawSession::new(reader, stream);
    let greeting = session.read_response();
    assert!(greeting.starts_with(b"* OK"), "{}", text(&greeting));
    session.command(format!("LOGIN {} {}", quoted(USER), quoted(PASSWORD)).as_bytes());
    session
}

/// One FETCH item from either server, `None` when the server answers NO or
/// leaves the item out.
trait Fetch {
    fn item(&mut self, seq: usize, item: &str) -> Option<Value>;
}

impl<R: std::io::BufRead, W: std::io::Write> Fetch for RawSession<R, W> {
    fn item(&mut self, seq: usize, item: &str) -> Option<Value> {
        let request =
            item.replacen("BODY[", "BODY.PEEK[", 1)
                .replacen("BINARY[", "BINARY.PEEK[", 1);
        self.try_fetch(seq, &request)?
            .into_iter()
            .find(|(name, _)| name == item)
            .map(|(_, v)| v)
    }
}

/// What a part is, for the sections that apply to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Leaf,
    Message,
    Multipart,
}

fn kind(body: &Value) -> Kind {
    if children(body).is_some() {
        Kind::Multipart
    } else if encapsulated(body).is_some() {
        Kind::Message
    } else {
        Kind::Leaf
    }
}

/// The part numbers (RFC 3501 §6.4.5) below a BODYSTRUCTURE at `prefix`,
/// each with its kind.
fn part_paths(body: &Value, prefix: &[u32], out: &mut Vec<(Vec<u32>, Kind)>) {
    let push = |path: Vec<u32>, part: &Value, out: &mut Vec<(Vec<u32>, Kind)>| {
        out.push((path.clone(), kind(part)));
        part_paths(part, &path, out);
    };
    if let Some(kids) = children(body) {
        for (n, kid) in kids.iter().enumerate() {
            push([prefix, &[n as u32 + 1]].concat(), kid, out);
        }
    } else if prefix.is_empty() {
        // A single-part message: part 1 is the message's body.
        out.push((vec![1], Kind::Leaf));
        if let Some(inner) = encapsulated(body) {
            part_paths(inner, &[1], out);
        }
    } else if let Some(inner) = encapsulated(body) {
        // A message/rfc822 part: its parts are the encapsulated message's.
        match children(inner) {
            Some(_) => part_paths(inner, prefix, out),
            None => push([prefix, &[1]].concat(), inner, out),
        }
    }
}

/// A multipart body's parts.
fn children(body: &Value) -> Option<&[Value]> {
    let items = body.list()?;
    let n = items.iter().take_while(|v| v.list().is_some()).count();
    (n > 0).then(|| &items[..n])
}

/// A message/rfc822 (or message/global) part's encapsulated body.
fn encapsulated(body: &Value) -> Option<&Value> {
    let items = body.list()?;
    let upper = |i: usize| items.get(i)?.bytes().map(<[u8]>::to_ascii_uppercase);
    let is_message =
        upper(0)? == b"MESSAGE" && matches!(upper(1)?.as_slice(), b"RFC822" | b"GLOBAL");
    is_message
        .then(|| items.get(8))
        .flatten()
        .filter(|b| b.list().is_some())
}

/// `value` with RFC 2045's case-insensitive tokens upper-cased, when `item`
/// is a body structure.
fn fold(item: &str, value: Value) -> Value {
    if item == "BODY" || item == "BODYSTRUCTURE" {
        fold_body(&value)
    } else {
        value
    }
}

fn upper(v: &Value) -> Value {
    match v {
        Value::Str(s) => Value::Str(s.to_ascii_uppercase()),
        other => other.clone(),
    }
}

/// Parameter lists `(name value ...)`: names upper-cased, and the value of
/// CHARSET (charset names are case-insensitive, RFC 2978 §2.3).
fn fold_params(v: &Value) -> Value {
    let Some(items) = v.list() else {
        return v.clone();
    };
    let mut out: Vec<Value> = Vec::with_capacity(items.len());
    for pair in items.chunks(2) {
        let name = upper(&pair[0]);
        let charset = name.bytes() == Some(b"CHARSET");
        out.push(name);
        out.extend(
            pair.get(1)
                .map(|value| if charset { upper(value) } else { value.clone() }),
        );
    }
    Value::List(out)
}

/// A disposition `(type params)`.
fn fold_disposition(v: &Value) -> Value {
    match v.list() {
        Some([kind, params]) => Value::List(vec![upper(kind), fold_params(params)]),
        _ => v.clone(),
    }
}

fn fold_body(body: &Value) -> Value {
    let Some(items) = body.list() else {
        return body.clone();
    };
    let mut out: Vec<Value> = items.to_vec();
    if let Some(kids) = children(body) {
        // (body... subtype [params [disposition [language [location]]]])
        let n = kids.len();
        for (i, kid) in kids.iter().enumerate() {
            out[i] = fold_body(kid);
        }
        for (offset, f) in [
            (0, upper as fn(&Value) -> Value),
            (1, fold_params),
            (2, fold_disposition),
        ] {
            if let Some(v) = out.get_mut(n + offset) {
                *v = f(v);
            }
        }
        return Value::List(out);
    }
    // (type subtype params id description encoding size [envelope body]
    //  [lines] [md5 [disposition [language [location]]]])
    for i in [0, 1, 5] {
        if let Some(v) = out.get_mut(i) {
            *v = upper(v);
        }
    }
    if let Some(v) = out.get_mut(2) {
        *v = fold_params(v);
    }
    let message = encapsulated(body).is_some();
    let text = items
        .first()
        .and_then(Value::bytes)
        .is_some_and(|t| t.eq_ignore_ascii_case(b"TEXT"));
    if message {
        out[8] = fold_body(&items[8]);
    }
    let md5_at = if message {
        10
    } else if text {
        8
    } else {
        7
    };
    if let Some(v) = out.get_mut(md5_at + 1) {
        *v = fold_disposition(v);
    }
    Value::List(out)
}
