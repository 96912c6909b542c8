//! [`SortKeys`]: a message's header-derived keys in the form the engine
//! compares, computed once per content (base subject extracted and case
//! mapped, addresses case mapped, message ids taken out of their fields),
//! and [`Candidate`]: one message of a SORT or THREAD, the index's keys
//! beside a shared reference to its `SortKeys`.
//!
//! Why a prepared form: a warm `SORT (DATE)` of 10,000 messages spent
//! ~40 ms decoding cached raw keys and ~25 ms recomputing base subjects
//! and case maps at every command (debug build, 2026-12-07). Kept ready,
//! a command only looks its keys up (the server keeps them in memory,
//! `imap/sort_cache.rs`, and in the index's derived cache, [`encode`]).
//!
//! The cached form ([`encode`], `DerivedKind::ImapSortKeys`): a version
//! byte, the sent date, the reply flag, then every string as a 4-byte
//! big-endian length and its bytes (an absent Message-ID as length
//! `u32::MAX`). When it changes, the kind gets a new number.

use std::sync::Arc;

use super::{Address, MessageKeys, base_subject, casemap, thread::message_ids};

/// The header-derived keys of one content, ready to compare.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SortKeys {
    /// The Date: field in seconds since the epoch (UTC), `None` when missing
    /// or unparsable (RFC 5256 §2.2: INTERNALDATE is used instead).
    pub sent_date: Option<i64>,
    /// The base subject (RFC 5256 §2.1), case mapped.
    pub subject: Box<str>,
    /// Whether the subject was a reply or a forward (§2.1, THREAD step 5).
    pub reply_or_forward: bool,
    /// The first From, To and Cc addr-mailbox, case mapped ("" for none).
    pub from: Box<str>,
    pub to: Box<str>,
    pub cc: Box<str>,
    /// RFC 5957 DISPLAYFROM / DISPLAYTO, case mapped.
    pub display_from: Box<str>,
    pub display_to: Box<str>,
    /// The first `<id>` of Message-ID.
    pub message_id: Option<Box<str>>,
    /// The parents THREAD REFERENCES links (step 1A): the ids of References,
    /// or else the first of In-Reply-To, separated by spaces (an id holds
    /// none).
    pub parents: Box<str>,
}

impl SortKeys {
    /// The keys of a message's parsed header fields.
    pub fn prepare(m: &MessageKeys) -> SortKeys {
        let base = base_subject(&m.subject);
        let mailbox = |a: &Option<Address>| {
            a.as_ref()
                .map(|a| casemap(&a.mailbox))
                .unwrap_or_default()
                .into_boxed_str()
        };
        let mut parents = m.references.as_deref().map(message_ids).unwrap_or_default();
        if parents.is_empty() {
            // No (valid) References: the first id of In-Reply-To.
            parents = m
                .in_reply_to
                .as_deref()
                .map(message_ids)
                .unwrap_or_default();
            parents.truncate(1);
        }
        SortKeys {
            sent_date: m.sent_date,
            subject: casemap(&base.text).into_boxed_str(),
            reply_or_forward: base.is_reply_or_forward,
            from: mailbox(&m.from),
            to: mailbox(&m.to),
            cc: mailbox(&m.cc),
            display_from: display(&m.from).into_boxed_str(),
            display_to: display(&m.to).into_boxed_str(),
            message_id: m
                .message_id
                .as_deref()
                .and_then(|v| message_ids(v).first().map(|id| Box::from(*id))),
            parents: parents.join(" ").into_boxed_str(),
        }
    }

    /// The ids of [`SortKeys::parents`], oldest first.
    pub fn parent_ids(&self) -> impl Iterator<Item = &str> {
        self.parents.split(' ').filter(|id| !id.is_empty())
    }

    /// Roughly the memory this entry holds (for the server's cache budget).
    pub fn footprint(&self) -> usize {
        std::mem::size_of::<SortKeys>()
            + [
                &self.subject,
                &self.from,
                &self.to,
                &self.cc,
                &self.display_from,
                &self.display_to,
                &self.parents,
            ]
            .iter()
            .map(|s| s.len())
            .sum::<usize>()
            + self.message_id.as_deref().map_or(0, str::len)
    }
}

/// RFC 5957 §3: the display name when it is not empty, else the addr-spec
/// (`mailbox@host`); empty without an address.
fn display(a: &Option<Address>) -> String {
    let Some(a) = a else {
        return String::new();
    };
    let name = a.display_name.trim();
    if !name.is_empty() {
        return casemap(name);
    }
    if a.host.is_empty() {
        casemap(&a.mailbox)
    } else {
        casemap(&format!("{}@{}", a.mailbox, a.host))
    }
}

/// One message of a SORT or THREAD: what the index knows, and the shared
/// header-derived keys.
#[derive(Debug, Clone, Default)]
pub struct Candidate {
    /// The number the answer names the message by (UID or sequence
    /// number); the engine only carries it.
    pub uid: u32,
    /// INTERNALDATE, seconds since the epoch.
    pub internal_date: i64,
    /// RFC822.SIZE.
    pub size: u64,
    pub keys: Arc<SortKeys>,
}

impl Candidate {
    /// The date RFC 5256 §2.2 sorts and threads by: the sent date, or
    /// INTERNALDATE when there is none.
    pub fn sort_date(&self) -> i64 {
        self.keys.sent_date.unwrap_or(self.internal_date)
    }
}

impl From<&MessageKeys> for Candidate {
    fn from(m: &MessageKeys) -> Candidate {
        Candidate {
            uid: m.uid,
            internal_date: m.internal_date,
            size: m.size,
            keys: Arc::new(SortKeys::prepare(m)),
        }
    }
}

/// The version byte of [`encode`]'s form.
const ENCODING: u8 = 2;

/// The cached form of [`SortKeys`] (see the module comment).
pub fn encode(keys: &SortKeys) -> Vec<u8> {
    fn text(out: &mut Vec<u8>, s: Option<&str>) {
        match s {
            Some(s) => {
                // A field is far below 4 GiB (the header block is bounded);
                // a longer one is cut at a character boundary.
                let mut n = s.len().min(u32::MAX as usize - 1);
                while !s.is_char_boundary(n) {
                    n -= 1;
                }
                out.extend_from_slice(&(n as u32).to_be_bytes());
                out.extend_from_slice(&s.as_bytes()[..n]);
            }
            None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
        }
    }
    let mut out = vec![ENCODING];
    match keys.sent_date {
        Some(d) => {
            out.push(1);
            out.extend_from_slice(&d.to_be_bytes());
        }
        None => out.push(0),
    }
    out.push(u8::from(keys.reply_or_forward));
    for s in [
        &keys.subject,
        &keys.from,
        &keys.to,
        &keys.cc,
        &keys.display_from,
        &keys.display_to,
    ] {
        text(&mut out, Some(s));
    }
    text(&mut out, keys.message_id.as_deref());
    text(&mut out, Some(&keys.parents));
    out
}

/// [`encode`]'s form read back; `None` when it is not that form (the
/// caller computes the keys again).
pub fn decode(bytes: &[u8]) -> Option<SortKeys> {
    struct Reader<'a>(&'a [u8]);
    impl Reader<'_> {
        fn take(&mut self, n: usize) -> Option<&[u8]> {
            let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
            self.0 = rest;
            Some(head)
        }
        fn text(&mut self) -> Option<Option<Box<str>>> {
            let n = u32::from_be_bytes(self.take(4)?.try_into().ok()?);
            if n == u32::MAX {
                return Some(None);
            }
            let bytes = self.take(usize::try_from(n).ok()?)?;
            Some(Some(Box::from(std::str::from_utf8(bytes).ok()?)))
        }
        fn present(&mut self) -> Option<Box<str>> {
            self.text()?
        }
    }
    let mut r = Reader(bytes);
    if r.take(1)? != [ENCODING] {
        return None;
    }
    let sent_date = match r.take(1)? {
        [0] => None,
        [1] => Some(i64::from_be_bytes(r.take(8)?.try_into().ok()?)),
        _ => return None,
    };
    let reply_or_forward = match r.take(1)? {
        [0] => false,
        [1] => true,
        _ => return None,
    };
    let keys = SortKeys {
        sent_date,
        reply_or_forward,
        subject: r.present()?,
        from: r.present()?,
        to: r.present()?,
        cc: r.present()?,
        display_from: r.present()?,
        display_to: r.present()?,
        message_id: r.text()?,
        parents: r.present()?,
    };
    r.0.is_empty().then_some(keys)
}

#[cfg(test)]
mod tests {
    use super::super::header_keys;
    use super::*;

    #[test]
    fn prepared_keys_are_what_the_engine_compares() {
        let keys = SortKeys::prepare(&header_keys(
            b"Subject: =?utf-8?q?Re=3A_Caf=C3=A9?=\r\n\
              From: =?iso-8859-1?q?J=F6rg?= <Joerg@example.de>\r\nTo: Bob@B.example\r\n\
              Date: Tue, 10 Nov 2026 12:00:00 +0100\r\n\
              Message-ID: junk <a@x> <b@x>\r\nIn-Reply-To: <r2@x> <r3@x>\r\n\r\n",
        ));
        // Case mapped (and NFKD: "é" is "e" and a combining accent).
        assert_eq!(*keys.subject, casemap("Café"));
        assert!(keys.reply_or_forward);
        assert_eq!((&*keys.from, &*keys.to, &*keys.cc), ("joerg", "bob", ""));
        assert_eq!(*keys.display_from, casemap("Jörg"));
        assert_eq!(&*keys.display_to, "bob@b.example");
        assert_eq!(keys.message_id.as_deref(), Some("<a@x>"));
        // Without References, the first id of In-Reply-To.
        assert_eq!(keys.parent_ids().collect::<Vec<_>>(), ["<r2@x>"]);
        let keys = SortKeys::prepare(&header_keys(
            b"References: <r1@x>\r\n <r2@x> <bad id>\r\nIn-Reply-To: <r3@x>\r\n\r\n",
        ));
        assert_eq!(keys.parent_ids().collect::<Vec<_>>(), ["<r1@x>", "<r2@x>"]);
        assert_eq!(
            SortKeys::prepare(&MessageKeys::default())
                .parent_ids()
                .count(),
            0
        );
    }

    #[test]
    fn cached_form_round_trips_and_refuses_damage() {
        let keys = SortKeys::prepare(&header_keys(
            b"Subject: =?utf-8?q?Caf=C3=A9?=\r\nFrom: Ann <a@x>\r\nCc: c@y\r\n\
              Date: Tue, 10 Nov 2026 12:00:00 +0100\r\nMessage-ID: <m@x>\r\n\
              References: <p@x> <q@x>\r\n\r\n",
        ));
        let bytes = encode(&keys);
        assert_eq!(decode(&bytes), Some(keys.clone()));
        let empty = SortKeys::default();
        assert_eq!(decode(&encode(&empty)), Some(empty));
        // Every truncation, a trailing byte, another version: not read.
        for n in 0..bytes.len() {
            assert_eq!(decode(&bytes[..n]), None, "{n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer), None);
        let mut other = bytes;
        other[0] = ENCODING + 1;
        assert_eq!(decode(&other), None);
        // The first rendering (raw fields) is not read as this one.
        assert_eq!(decode(&[1, 0]), None);
        // A length past the end.
        assert_eq!(decode(&[ENCODING, 0, 0, 0xff, 0xff, 0xff, 0xf0]), None);
    }
}
