//! Mailbox names: one validated type, built at the edge (a client's
//! command, an LMTP `+detail`, an imported folder, a peer's change) and
//! trusted everywhere after.
//!
//! # The problem
//! A name is a path on disk (`Maildir/.<name>`), a key in the index, and what
//! a client sees. Taken as given, bytes that are not UTF-8 collapsed to
//! U+FFFD and two different names became one; invalid modified UTF-7 and raw
//! 8-bit names were stored; `Café` typed as NFC and as NFD became two
//! mailboxes that look the same; `a..b` created `a` before failing.
//!
//! # The form kept
//! The stored form is modified UTF-7 (RFC 3501 §5.1.3), as IMAP clients and
//! Dovecot's Maildir++ folders spell names, and canonical: decoded strictly,
//! normalized to Unicode NFC, encoded again the one way the RFC allows
//! (printable ASCII as itself, `&` as `&-`, every other run base64 in one
//! shift). So two spellings of one name are one [`MailboxName`], and equal
//! names are equal strings.
//!
//! # What is refused
//! - bytes outside printable US-ASCII in the modified UTF-7 form (raw 8-bit
//!   names are UTF-8 only where RFC 6855 UTF8=ACCEPT applies: then the
//!   caller decodes them and uses [`MailboxName::from_unicode`]);
//! - `&` shifts that are unterminated, use characters outside modified
//!   base64, leave non-zero or whole spare bits, hold broken UTF-16, or
//!   encode a character that must stand for itself;
//! - empty names and empty hierarchy levels (`.a`, `a.`, `a..b`), so no
//!   level is `.` or `..`; `/`; control characters (C0, DEL, C1);
//! - a first level starting with `cove-` (`Maildir/.cove-*` are cove's own
//!   temporaries), and names over [`MAX_LEN`] bytes encoded.
//!
//! `INBOX` is case-insensitive (RFC 3501 §5.1) and kept as `INBOX`.

use std::fmt;

use unicode_normalization::UnicodeNormalization;

use crate::{Error, Result};

/// The longest name, in bytes of its stored form (the folder's directory
/// name adds one byte and must stay under the usual 255).
pub const MAX_LEN: usize = 200;

/// The hierarchy delimiter.
pub const DELIMITER: char = '.';

/// A valid mailbox name in its canonical stored form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailboxName(String);

impl MailboxName {
    /// A name as IMAP carries it: modified UTF-7 (RFC 3501 §5.1.3), which
    /// is also the form stored in the index, on disk and sent to peers.
    /// Call this for every name from a client, a peer or an import.
    pub fn parse(wire: &[u8]) -> Result<MailboxName> {
        let unicode = decode(wire).map_err(|why| invalid(wire, why))?;
        Self::build(&unicode).map_err(|why| invalid(wire, why))
    }

    /// A name written in Unicode (an LMTP `+detail`, a UTF-8 folder name,
    /// an IMAP name under RFC 6855 UTF8=ACCEPT).
    pub fn from_unicode(name: &str) -> Result<MailboxName> {
        Self::build(name).map_err(|why| invalid(name.as_bytes(), why))
    }

    fn build(unicode: &str) -> std::result::Result<MailboxName, &'static str> {
        let nfc: String = unicode.nfc().collect();
        check_levels(&nfc)?;
        let encoded = if nfc.eq_ignore_ascii_case("INBOX") {
            "INBOX".to_string()
        } else {
            encode(&nfc)
        };
        if encoded.len() > MAX_LEN {
            return Err("too long");
        }
        Ok(MailboxName(encoded))
    }

    /// The stored (modified UTF-7) form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name in Unicode, for people and logs.
    pub fn to_unicode(&self) -> String {
        // A MailboxName holds only what `decode` accepts.
        decode(self.0.as_bytes()).unwrap_or_else(|_| self.0.clone())
    }

    pub fn is_inbox(&self) -> bool {
        self.0 == "INBOX"
    }

    /// The superior hierarchy levels, shortest first (`a`, `a.b` for
    /// `a.b.c`): each is valid, since every level of a valid name is.
    pub fn parents(&self) -> impl Iterator<Item = MailboxName> + '_ {
        self.0
            .match_indices(DELIMITER)
            .map(|(i, _)| MailboxName(self.0[..i].to_string()))
    }
}

impl fmt::Display for MailboxName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MailboxName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MailboxName({:?})", self.0)
    }
}

impl AsRef<str> for MailboxName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

fn invalid(given: &[u8], why: &str) -> Error {
    Error::InvalidData(format!(
        "invalid mailbox name {:?}: {why}",
        String::from_utf8_lossy(&given[..given.len().min(MAX_LEN + 16)])
    ))
}

fn check_levels(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.split(DELIMITER).any(str::is_empty) {
        return Err("empty hierarchy level");
    }
    if name.contains('/') {
        return Err("'/' is not allowed");
    }
    if name.chars().any(char::is_control) {
        return Err("control character");
    }
    if name.starts_with("cove-") {
        return Err("names starting with cove- are reserved");
    }
    Ok(())
}

/// Printable US-ASCII, which modified UTF-7 writes as itself.
fn printable(c: u32) -> bool {
    (0x20..=0x7e).contains(&c)
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

fn base64_value(b: u8) -> Option<u32> {
    BASE64.iter().position(|x| *x == b).map(|v| v as u32)
}

/// Strict RFC 3501 §5.1.3 decoding.
fn decode(wire: &[u8]) -> std::result::Result<String, &'static str> {
    let mut out = String::with_capacity(wire.len());
    let mut i = 0;
    while i < wire.len() {
        let b = wire[i];
        if b != b'&' {
            if !printable(u32::from(b)) {
                return Err("not modified UTF-7 (8-bit or control byte)");
            }
            out.push(char::from(b));
            i += 1;
            continue;
        }
        let end = wire[i + 1..]
            .iter()
            .position(|b| *b == b'-')
            .map(|p| i + 1 + p)
            .ok_or("unterminated & shift")?;
        let run = &wire[i + 1..end];
        if run.is_empty() {
            out.push('&');
        } else {
            decode_shift(run, &mut out)?;
        }
        i = end + 1;
    }
    Ok(out)
}

/// One `&...-` run: modified base64 of UTF-16BE.
fn decode_shift(run: &[u8], out: &mut String) -> std::result::Result<(), &'static str> {
    let mut units: Vec<u16> = Vec::with_capacity(run.len() * 6 / 16);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in run {
        let v = base64_value(b).ok_or("not modified base64")?;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 16 {
            bits -= 16;
            units.push((acc >> bits) as u16);
            acc &= (1 << bits) - 1;
        }
    }
    if bits >= 6 || acc != 0 {
        return Err("bad padding in a base64 run");
    }
    for c in char::decode_utf16(units) {
        let c = c.map_err(|_| "broken UTF-16")?;
        if printable(u32::from(c)) {
            return Err("printable ASCII encoded in base64");
        }
        out.push(c);
    }
    Ok(())
}

/// Canonical RFC 3501 §5.1.3 encoding.
fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        out.push('&');
        let (mut acc, mut bits) = (0u32, 0u32);
        for u in pending.drain(..) {
            acc = (acc << 16) | u32::from(u);
            bits += 16;
            while bits >= 6 {
                bits -= 6;
                out.push(char::from(BASE64[((acc >> bits) & 63) as usize]));
            }
            acc &= (1 << bits) - 1;
        }
        if bits > 0 {
            out.push(char::from(BASE64[((acc << (6 - bits)) & 63) as usize]));
        }
        out.push('-');
    };
    for c in name.chars() {
        if printable(u32::from(c)) {
            flush(&mut pending, &mut out);
            out.push(c);
            if c == '&' {
                out.push('-');
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut pending, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(wire: &str) -> String {
        MailboxName::parse(wire.as_bytes())
            .unwrap_or_else(|e| panic!("{wire:?}: {e}"))
            .as_str()
            .to_string()
    }

    fn bad(wire: &[u8]) {
        assert!(
            MailboxName::parse(wire).is_err(),
            "{:?} was accepted",
            String::from_utf8_lossy(wire)
        );
    }

    #[test]
    fn rfc_3501_examples() {
        // RFC 3501 §5.1.3: "~peter/mail/台北/日本語" (without the '/').
        let n = MailboxName::parse(b"~peter.mail.&U,BTFw-.&ZeVnLIqe-").unwrap();
        assert_eq!(n.to_unicode(), "~peter.mail.台北.日本語");
        assert_eq!(
            MailboxName::from_unicode("~peter.mail.台北.日本語").unwrap(),
            n
        );
        assert_eq!(ok("A&-B"), "A&-B");
        assert_eq!(MailboxName::parse(b"A&-B").unwrap().to_unicode(), "A&B");
    }

    #[test]
    fn inbox_is_case_insensitive() {
        assert_eq!(ok("inbox"), "INBOX");
        assert!(MailboxName::parse(b"InBoX").unwrap().is_inbox());
        assert_eq!(ok("inbox.Sub"), "inbox.Sub");
    }

    #[test]
    fn nfc_and_nfd_are_one_name() {
        let nfc = MailboxName::from_unicode("Caf\u{e9}").unwrap();
        let nfd = MailboxName::from_unicode("Cafe\u{301}").unwrap();
        assert_eq!(nfc, nfd);
        // The same through modified UTF-7 spellings of each.
        let wire_nfd = encode("Cafe\u{301}");
        assert_ne!(wire_nfd, nfc.as_str());
        assert_eq!(MailboxName::parse(wire_nfd.as_bytes()).unwrap(), nfc);
    }

    #[test]
    fn invalid_modified_utf7_is_refused() {
        bad(b"&");
        bad(b"a&Jjo");
        bad(b"&Jjo!-"); // not base64
        bad(b"&AGE-"); // 'a' in base64
        bad(b"&2D0-"); // lone high surrogate
        bad(b"&Jjp-"); // non-zero spare bits
        bad(b"&JjoA-"); // a whole spare character
        bad("Café".as_bytes()); // raw 8-bit
        bad(b"caf\xe9"); // not even UTF-8
        bad(b"a\tb");
    }

    #[test]
    fn hierarchy_tricks_are_refused() {
        for n in [
            "",
            ".",
            "..",
            "a..b",
            ".a",
            "a.",
            "a/b",
            "../x",
            "a.cove-x.b/..",
        ] {
            bad(n.as_bytes());
        }
        bad(b"cove-deleted");
        assert_eq!(ok("a.cove-x"), "a.cove-x");
        bad("x".repeat(MAX_LEN + 1).as_bytes());
        assert_eq!(ok(&"x".repeat(MAX_LEN)).len(), MAX_LEN);
        bad(&encode("\u{85}x").into_bytes()); // C1 control, encoded
    }

    #[test]
    fn parents_are_each_level() {
        let n = MailboxName::parse(b"a.&ZeVnLIqe-.c").unwrap();
        let p: Vec<String> = n.parents().map(|p| p.as_str().to_string()).collect();
        assert_eq!(p, ["a", "a.&ZeVnLIqe-"]);
        for parent in n.parents() {
            assert_eq!(
                MailboxName::parse(parent.as_str().as_bytes()).unwrap(),
                parent
            );
        }
    }

    proptest::proptest! {
        /// Whatever the bytes: no panic, and an accepted name is canonical
        /// (parsing its stored form gives it back).
        #[test]
        fn any_bytes(wire in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            if let Ok(n) = MailboxName::parse(&wire) {
                proptest::prop_assert_eq!(&MailboxName::parse(n.as_str().as_bytes()).unwrap(), &n);
                proptest::prop_assert!(n.as_str().bytes().all(|b| printable(u32::from(b))));
            }
        }

        /// Any Unicode name round-trips through the stored form, as NFC.
        #[test]
        fn any_unicode(name in "\\PC{0,24}") {
            if let Ok(n) = MailboxName::from_unicode(&name) {
                proptest::prop_assert_eq!(n.to_unicode(), if n.is_inbox() {
                    "INBOX".to_string()
                } else {
                    name.nfc().collect::<String>()
                });
                proptest::prop_assert_eq!(&MailboxName::parse(n.as_str().as_bytes()).unwrap(), &n);
            }
        }
    }

    #[test]
    fn encoding_round_trips() {
        for s in [
            "plain",
            "a&b",
            "日本語",
            "mixed 日本 and &",
            "emoji 😀 x",
            "Ünïcödé.Ωmega",
        ] {
            let n = MailboxName::from_unicode(s).unwrap();
            assert_eq!(n.to_unicode(), s.nfc().collect::<String>());
            assert_eq!(MailboxName::parse(n.as_str().as_bytes()).unwrap(), n);
        }
    }
}
