//! The IMAP views of a message's bytes: ENVELOPE, BODY/BODYSTRUCTURE,
//! BODY[section] and BINARY[section] (RFC 3501 §6.4.5 and §7.4.2, RFC 9051
//! §6.4.5 and §7.5.2, RFC 3516).
//!
//! # The problem
//! A FETCH response describes a stored message in IMAP's own syntax, and
//! clients rely on the exact bytes. ENVELOPE wants the *raw* header values:
//! encoded words not decoded, `<id@host>` kept, groups as start/end markers.
//! BODYSTRUCTURE wants every MIME part's size and line count *as stored*, and
//! BODY[1.2.MIME] wants exact byte ranges. A library that decodes and
//! normalises (mail-parser does both, for good reasons of its own) loses what
//! IMAP needs, so everything here works on the raw bytes and byte offsets into
//! them. Messages are arbitrary: bare LF line ends, NUL bytes, 8-bit headers,
//! missing blank lines, broken boundaries. Every function returns some
//! answer and never panics.
//!
//! # Where things come from
//! - The MIME tree (`part.rs`) is our own boundary scanner over the raw
//!   bytes. We tried mail-parser 0.11.9's `MessageParser::parse` for this
//!   first and dropped it:
//!   1. A 900 KB message of 30,000 nested `message/rfc822` parts overflows a
//!      2 MiB thread stack inside `parse` and aborts the process, in release
//!      builds too.
//!   2. It decodes every part (base64, charset conversion) only to describe
//!      them.
//!   3. It misreads some broken messages: a nested multipart whose closing
//!      boundary is missing swallows the parent's remaining parts, and the
//!      offsets of a base64-encoded message/rfc822 point into the decoded
//!      copy, not into `raw`.
//!
//!   Our scanner caps nesting at [`MAX_DEPTH`] and the part count at
//!   [`MAX_PARTS`], which are Dovecot's defaults. Each multipart is split
//!   top-down, within the range its parent gave it, so a broken inner part
//!   cannot swallow the parent's remaining parts.
//! - Header fields (`header.rs`), Content-Type/-Disposition parameters with
//!   RFC 2231 continuations (`content_type.rs`) and address lists
//!   (`address.rs`) are parsed from the raw header bytes.
//! - BINARY decoding (`binary.rs`) uses our own lenient base64 and
//!   quoted-printable decoders, which follow RFC 2045 §6.7/§6.8. mail-parser's
//!   public decoders give up (`None`) on the first stray character.
//!
//! # Conventions chosen
//! - Media type, subtype, transfer encoding, disposition type and parameter
//!   names are sent in upper case, as in the RFC 3501/9051 examples
//!   (`("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92)`). They
//!   are case-insensitive tokens. Parameter values, IDs, descriptions and so
//!   on go out exactly as written. Dovecot instead echoes the case as written
//!   (lower case for its defaults).
//! - body-fld-octets is the byte length of the part's body as stored (no
//!   LF→CRLF adjustment). body-fld-lines is the number of LF bytes in it, as
//!   Dovecot counts: a last line without a line end is not counted. Inside a
//!   multipart, the line end before a boundary belongs to the boundary
//!   (RFC 2046 §5.1.1), so a part's last line is never counted there.
//! - Strings are quoted when they are 7-bit without CR/LF/NUL (`"` and `\`
//!   escaped), otherwise sent as a `{n}` literal. NUL, which no IMAP string
//!   may hold, becomes U+FFFD.
//! - A part whose type promises structure we did not parse is described as
//!   APPLICATION/OCTET-STREAM, keeping its parameters (RFC 2046 §4.5.3). That
//!   covers a multipart without a boundary, an encoded message/rfc822, and
//!   anything past the nesting limit. Sending `"MESSAGE" "RFC822"` without an
//!   envelope, or a MULTIPART with no children, breaks client parsers. A
//!   multipart with a boundary but no parts gets one empty TEXT/PLAIN child
//!   (as Dovecot does), because body-type-mpart needs at least one body.
//! - Every TEXT part without a charset parameter gets `("CHARSET"
//!   "US-ASCII")` after its other parameters (RFC 2045 §5.2), whether it
//!   has a Content-Type or not, as Dovecot answers.
//! - An address without a domain gets host "MISSING_DOMAIN", one without a
//!   local part mailbox "MISSING_MAILBOX" (Dovecot's words): RFC 3501
//!   §7.4.2 keeps a NIL host for group markers. A header field repeated
//!   (two To: lines) contributes all its addresses.
//! - RFC 2231 parameters are merged as Dovecot does. Plain continuations
//!   become one value (`name*0=a; name*1=b` → `NAME "ab"`). Encoded ones keep
//!   the charset and the percent-encoding, under a `*` name
//!   (`FILENAME* "utf-8''%E2%82%AC.txt"`), so nothing is lost or guessed.
//!   An encoded `boundary*` is decoded to split the multipart (Dovecot 2.3
//!   does not; see docs/rfc-status.md).
//!
//! # Checked against Dovecot
//! `tests/interop/mime_dovecot.rs` compares ENVELOPE, BODYSTRUCTURE and the
//! body sections of the messages in `tests/corpus/` with Dovecot's answers,
//! as parsed values; the differences that remain are listed there and in
//! docs/rfc-status.md with their reasons.
//!
//! # Not handled yet
//! - message/global (RFC 6532) as RFC 9051's body-type-msg (envelope and
//!   nested body) for IMAP4rev2 clients; for IMAP4rev1 it is a basic body
//!   (RFC 3501's body-type-msg is message/rfc822 only), as in Dovecot 2.3.
//! - UTF8=ACCEPT: 8-bit strings always go out as literals.
//! - Caching: each call parses the message again. Use [`ParsedMessage`] to
//!   serve several FETCH items from one parse.

mod address;
mod binary;
mod bodystructure;
mod content_type;
mod envelope;
mod header;
mod imap_string;
mod part;
mod section;

use std::borrow::Cow;

pub use binary::BinaryError;
pub use section::{SectionKind, partial};

/// Deepest nesting of multiparts and message/rfc822 parts that is parsed
/// (Dovecot's default); deeper parts are described as opaque leaves.
pub const MAX_DEPTH: usize = 100;
/// Most MIME parts parsed per message (Dovecot's default); the remainder of
/// the multipart where the limit is hit stays in its last part.
pub const MAX_PARTS: usize = 10_000;

/// A message split into its MIME parts, to answer several FETCH items from
/// one parse. The free functions below do the same for a single item.
pub struct ParsedMessage<'a> {
    raw: &'a [u8],
    root: part::MimePart,
}

impl<'a> ParsedMessage<'a> {
    pub fn parse(raw: &'a [u8]) -> Self {
        ParsedMessage {
            raw,
            root: part::MimePart::parse_message(raw),
        }
    }

    /// RFC 3501 §7.4.2 ENVELOPE of the top-level header, parenthesized.
    pub fn envelope(&self) -> Vec<u8> {
        let mut out = Vec::new();
        envelope::write_envelope(
            &mut out,
            self.raw.get(self.root.header.clone()).unwrap_or_default(),
        );
        out
    }

    /// RFC 3501 §7.4.2 BODYSTRUCTURE (`extensible`) or BODY.
    pub fn bodystructure(&self, extensible: bool) -> Vec<u8> {
        let mut out = Vec::new();
        bodystructure::write_body(&mut out, self.raw, &self.root, extensible);
        out
    }

    /// RFC 3501 §6.4.5 BODY[part.section], before any `<partial>`. `None` if
    /// the part does not exist or the section does not apply to it.
    pub fn section(&self, part: &[u32], kind: &SectionKind) -> Option<Cow<'a, [u8]>> {
        section::section_bytes(self.raw, &self.root, part, kind)
    }

    /// RFC 3516 BINARY[part]: the part's body with its transfer encoding
    /// removed. The length of the result is BINARY.SIZE.
    pub fn binary(&self, part: &[u32]) -> Result<Cow<'a, [u8]>, BinaryError> {
        binary::binary_bytes(self.raw, &self.root, part)
    }
}

/// One address structure of an ENVELOPE (RFC 3501 §7.4.2), as stored:
/// encoded words not decoded, a missing host `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeAddress {
    pub name: Option<Vec<u8>>,
    pub mailbox: Vec<u8>,
    pub host: Option<Vec<u8>>,
}

/// The first address structure ENVELOPE shows for header field `field` of
/// `header` (every occurrence of the field counts, as in ENVELOPE): what
/// RFC 5256 §3 sorts FROM, TO and CC by. A group's start marker is an
/// address with the group's name as its mailbox, as Dovecot sorts it.
/// `None` when the field holds no address.
pub fn first_envelope_address(header: &[u8], field: &[u8]) -> Option<EnvelopeAddress> {
    use address::AddressItem;
    envelope::addresses(header, field)
        .into_iter()
        .find_map(|item| match item {
            AddressItem::Mailbox(m) => Some(EnvelopeAddress {
                name: m.name,
                mailbox: m.local,
                host: m.domain,
            }),
            AddressItem::GroupStart(name) => Some(EnvelopeAddress {
                name: None,
                mailbox: name,
                host: None,
            }),
            AddressItem::GroupEnd => None,
        })
}

/// RFC 3501 §7.4.2: the ENVELOPE of a message, e.g.
/// `("date" "subject" ((NIL NIL "a" "b")) ... NIL "<id@x>")`.
pub fn envelope(raw: &[u8]) -> Vec<u8> {
    ParsedMessage::parse(raw).envelope()
}

/// RFC 3501 §7.4.2: BODYSTRUCTURE (`extensible = true`, with extension
/// data) or BODY (`false`).
pub fn bodystructure(raw: &[u8], extensible: bool) -> Vec<u8> {
    ParsedMessage::parse(raw).bodystructure(extensible)
}

/// RFC 3501 §6.4.5: the bytes of BODY[`part`.`kind`]; see
/// [`ParsedMessage::section`].
pub fn section_bytes<'a>(raw: &'a [u8], part: &[u32], kind: &SectionKind) -> Option<Cow<'a, [u8]>> {
    ParsedMessage::parse(raw).section(part, kind)
}

/// RFC 3516: the decoded bytes of BINARY[`part`], `None` when the part does
/// not exist or its encoding is unknown. [`ParsedMessage::binary`] tells the
/// two apart (the latter needs `NO [UNKNOWN-CTE]`).
pub fn binary_section<'a>(raw: &'a [u8], part: &[u32]) -> Option<Cow<'a, [u8]>> {
    ParsedMessage::parse(raw).binary(part).ok()
}

#[cfg(test)]
mod tests;
