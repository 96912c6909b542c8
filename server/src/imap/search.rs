//! RFC 3501 §6.4.4 SEARCH and UID SEARCH. Flag, size, date and set keys are
//! answered from the index; header and text keys read the message and match
//! decoded headers and bodies, case-insensitively (RFC 3501: "a substring
//! match ... case-insensitive").

pub(crate) mod fulltext;

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use cove_store::{Account, ContentId, DerivedKind, Flags, MailboxInfo, Uid};
use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::SequenceSet;
use mail_parser::{HeaderValue, MessageParser};

use super::connection::{Authed, Connection};
use super::esearch::{self, SearchReturn};
use super::outcome::Outcome;
use super::response::days_from_civil;
use super::savedate::{self, DateCmp};
use super::sort_cache::{ContentCache, Footprint};
use super::view::{Messages, Recent, View, ViewMessage};

/// A search key with everything borrowed from the command made owned and
/// every set resolved against the view.
#[derive(Debug, Clone)]
enum Key {
    All,
    Flag(Flags, bool),
    Keyword(String, bool),
    Recent(bool),
    New,
    In(HashSet<Uid>),
    Larger(u64),
    Smaller(u64),
    /// Internal date: before/on/since, in days since the epoch.
    Date(DateCmp, i64),
    /// Date: header, in days since the epoch.
    Sent(DateCmp, i64),
    Header(String, Needle),
    Body(Needle),
    Text(Needle),
    Not(Box<Key>),
    Or(Box<Key>, Box<Key>),
    And(Vec<Key>),
    /// RFC 7162 MODSEQ.
    ModSeq(u64),
    /// RFC 8514 SAVEDBEFORE/SAVEDON/SAVEDSINCE, in days since the epoch.
    Saved(DateCmp, i64),
    /// RFC 5032 OLDER/YOUNGER, in seconds.
    Older(i64),
    Younger(i64),
}

fn days(d: &imap_codec::imap_types::datetime::NaiveDate) -> i64 {
    // "YYYY-MM-DD" from chrono's Display.
    let s = d.as_ref().to_string();
    let mut it = s.split('-');
    let y = it.next().and_then(|v| v.parse().ok()).unwrap_or(1970);
    let m = it.next().and_then(|v| v.parse().ok()).unwrap_or(1);
    let dd = it.next().and_then(|v| v.parse().ok()).unwrap_or(1);
    days_from_civil(y, m, dd)
}

fn text(a: &imap_codec::imap_types::core::AString<'_>) -> String {
    String::from_utf8_lossy(a.as_ref()).to_lowercase()
}

/// A lowercased search string with its substring searcher, built once per
/// command (not once per message).
#[derive(Debug, Clone)]
pub(super) struct Needle {
    text: String,
    finder: memchr::memmem::Finder<'static>,
}

impl Needle {
    /// Whether `haystack` holds it (as `str::contains`).
    fn is_in(&self, haystack: &str) -> bool {
        self.finder.find(haystack.as_bytes()).is_some()
    }
}

impl From<String> for Needle {
    fn from(text: String) -> Needle {
        let finder = memchr::memmem::Finder::new(text.as_bytes()).into_owned();
        Needle { text, finder }
    }
}

impl From<&str> for Needle {
    fn from(text: &str) -> Needle {
        Needle::from(text.to_string())
    }
}

impl std::ops::Deref for Needle {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

fn uids_of(view: &View, set: &SequenceSet, uid: bool) -> HashSet<Uid> {
    view.uids(set, uid).into_iter().collect()
}

fn lower(view: &View, key: &SearchKey<'_>) -> Key {
    use SearchKey as S;
    match key {
        S::All => Key::All,
        S::And(keys) => Key::And(keys.as_ref().iter().map(|k| lower(view, k)).collect()),
        S::SequenceSet(set) => Key::In(uids_of(view, set, false)),
        S::Uid(set) => Key::In(uids_of(view, set, true)),
        S::Answered => Key::Flag(Flags::ANSWERED, true),
        S::Unanswered => Key::Flag(Flags::ANSWERED, false),
        S::Deleted => Key::Flag(Flags::DELETED, true),
        S::Undeleted => Key::Flag(Flags::DELETED, false),
        S::Draft => Key::Flag(Flags::DRAFT, true),
        S::Undraft => Key::Flag(Flags::DRAFT, false),
        S::Flagged => Key::Flag(Flags::FLAGGED, true),
        S::Unflagged => Key::Flag(Flags::FLAGGED, false),
        S::Seen => Key::Flag(Flags::SEEN, true),
        S::Unseen => Key::Flag(Flags::SEEN, false),
        S::Keyword(k) => Key::Keyword(k.inner().to_string(), true),
        S::Unkeyword(k) => Key::Keyword(k.inner().to_string(), false),
        S::Recent => Key::Recent(true),
        S::Old => Key::Recent(false),
        S::New => Key::New,
        S::Larger(n) => Key::Larger(u64::from(*n)),
        S::Smaller(n) => Key::Smaller(u64::from(*n)),
        S::Before(d) => Key::Date(DateCmp::Before, days(d)),
        S::On(d) => Key::Date(DateCmp::On, days(d)),
        S::Since(d) => Key::Date(DateCmp::Since, days(d)),
        S::SentBefore(d) => Key::Sent(DateCmp::Before, days(d)),
        S::SentOn(d) => Key::Sent(DateCmp::On, days(d)),
        S::SentSince(d) => Key::Sent(DateCmp::Since, days(d)),
        S::From(s) => Key::Header("from".into(), text(s).into()),
        S::To(s) => Key::Header("to".into(), text(s).into()),
        S::Cc(s) => Key::Header("cc".into(), text(s).into()),
        S::Bcc(s) => Key::Header("bcc".into(), text(s).into()),
        S::Subject(s) => Key::Header("subject".into(), text(s).into()),
        S::Header(name, value) => {
            let (name, value) = (text(name), text(value));
            match savedate::read_back(&name, &value) {
                Some((cmp, day)) => Key::Saved(cmp, day),
                None => Key::Header(name, value.into()),
            }
        }
        S::Body(s) => Key::Body(text(s).into()),
        S::Text(s) => Key::Text(text(s).into()),
        S::Not(k) => Key::Not(Box::new(lower(view, k))),
        S::Or(a, b) => Key::Or(Box::new(lower(view, a)), Box::new(lower(view, b))),
        S::Older(n) => Key::Older(i64::from(n.get())),
        S::Younger(n) => Key::Younger(i64::from(n.get())),
        S::ModSequence { modseq, .. } => Key::ModSeq(*modseq),
    }
}

/// Keys that need the body text (the rest of the content keys need only
/// the header, which is cached).
fn needs_body(k: &Key) -> bool {
    any_key(k, &|k| matches!(k, Key::Body(_) | Key::Text(_)))
}

/// Whether `k` or any key inside it is one `leaf` accepts.
fn any_key(k: &Key, leaf: &impl Fn(&Key) -> bool) -> bool {
    match k {
        Key::Not(k) => any_key(k, leaf),
        Key::Or(a, b) => any_key(a, leaf) || any_key(b, leaf),
        Key::And(v) => v.iter().any(|k| any_key(k, leaf)),
        _ => leaf(k),
    }
}

/// The decoded, lowercased header of a message, cached in the index by
/// content id (`Account::derived`) for header-only searches; when the
/// encoding below changes, the kind gets a new number (in the store).
const HEADER_TEXT_KIND: DerivedKind = DerivedKind::ImapHeaderText;

impl Content<'_> {
    /// The (name, value) header fields, in order.
    fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers
            .split('\n')
            .filter_map(|line| line.split_once('\t'))
    }

    /// Whether a `name` field (lowercased) holds `needle` (lowercased).
    fn header_contains(&self, name: &str, needle: &Needle) -> bool {
        self.fields().any(|(n, v)| n == name && needle.is_in(v))
    }

    /// Whether any header value holds `needle` (lowercased).
    fn any_header_contains(&self, needle: &Needle) -> bool {
        self.fields().any(|(_, v)| needle.is_in(v))
    }

    /// The cached form: the `name\tvalue\n` lines, then `\x01sent\t<days>`
    /// if dated.
    fn header_text(&self) -> Vec<u8> {
        let mut out = self.headers.to_string();
        if let Some(d) = self.sent_day {
            out.push_str(&format!("{SENT_LINE}{d}\n"));
        }
        out.into_bytes()
    }

    /// The cached form read back, borrowed: no allocation per field (a
    /// header search reads one per message of the mailbox).
    fn from_header_text(text: &[u8]) -> Content<'_> {
        let text = String::from_utf8_lossy(text);
        let (headers, sent_day) = match text.rfind(SENT_LINE) {
            // Only as the last line (a header named so is not it).
            Some(at)
                if (at == 0 || text[..at].ends_with('\n'))
                    && !text[at..].trim_end_matches('\n').contains('\n') =>
            {
                let day = text[at + SENT_LINE.len()..].trim_end().parse().ok();
                let headers = match text {
                    Cow::Borrowed(t) => Cow::Borrowed(&t[..at]),
                    Cow::Owned(mut t) => {
                        t.truncate(at);
                        Cow::Owned(t)
                    }
                };
                (headers, day)
            }
            _ => (text, None),
        };
        Content {
            headers,
            body: String::new(),
            sent_day,
        }
    }
}

/// The header fields [`SearchFields`] keeps: those of RFC 3501's SUBJECT,
/// FROM, TO, CC and BCC keys, the ones clients search.
const FIELD_NAMES: [&str; 5] = ["subject", "from", "to", "cc", "bcc"];

/// What header-only searches on [`FIELD_NAMES`] and sent dates read of a
/// message, taken from its decoded header text ([`Content`]) and kept in
/// the server's memory by content id (`ImapContext::search_fields`,
/// shared by every session), so a repeated SEARCH SUBJECT reads neither
/// the index nor the message, and matches a few short strings per message
/// (issue 15: 100,000 cached header texts of ~1 KiB were read and scanned
/// at every search).
pub(crate) struct SearchFields {
    /// For each of [`FIELD_NAMES`] in turn, the values of its fields each
    /// followed by `\n` (no value holds one: [`content_of`] makes them
    /// spaces), so a needle without `\n` matches within one value, as
    /// in [`Content::header_contains`].
    text: Box<str>,
    /// Where each name's values end in `text`.
    ends: [u32; FIELD_NAMES.len()],
    sent_day: Option<i64>,
}

impl SearchFields {
    fn of(c: &Content<'_>) -> SearchFields {
        let mut text = String::new();
        let mut ends = [0; FIELD_NAMES.len()];
        for (end, name) in ends.iter_mut().zip(FIELD_NAMES) {
            for (_, v) in c.fields().filter(|(n, _)| *n == name) {
                text.push_str(v);
                text.push('\n');
            }
            // A header block is far below 4 GiB (messages are bounded);
            // a longer one answers no match past the cut.
            *end = u32::try_from(text.len()).unwrap_or(u32::MAX);
        }
        SearchFields {
            text: text.into_boxed_str(),
            ends,
            sent_day: c.sent_day,
        }
    }

    /// Whether a `name` field (one of [`FIELD_NAMES`]) holds `needle`.
    fn header_contains(&self, name: &str, needle: &Needle) -> bool {
        let Some(at) = FIELD_NAMES.iter().position(|n| *n == name) else {
            return false;
        };
        let start = at.checked_sub(1).map_or(0, |p| self.ends[p]) as usize;
        let Some(values) = self.text.get(start..self.ends[at] as usize) else {
            return false;
        };
        !values.is_empty() && !needle.contains('\n') && needle.is_in(values)
    }
}

impl SearchFields {
    /// The cached form: the sent day (a presence byte, then 8 bytes big
    /// endian), each end (4 bytes big endian), then the text.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + 4 * FIELD_NAMES.len() + self.text.len());
        match self.sent_day {
            Some(d) => {
                out.push(1);
                out.extend_from_slice(&d.to_be_bytes());
            }
            None => out.push(0),
        }
        for end in self.ends {
            out.extend_from_slice(&end.to_be_bytes());
        }
        out.extend_from_slice(self.text.as_bytes());
        out
    }

    /// [`SearchFields::encode`]'s form read back; `None` when it is not
    /// that form (the caller makes the fields again).
    fn decode(bytes: &[u8]) -> Option<SearchFields> {
        let (sent_day, rest) = match bytes.split_first()? {
            (0, rest) => (None, rest),
            (1, rest) => {
                let (day, rest) = rest.split_first_chunk::<8>()?;
                (Some(i64::from_be_bytes(*day)), rest)
            }
            _ => return None,
        };
        let mut ends = [0; FIELD_NAMES.len()];
        let mut rest = rest;
        for end in &mut ends {
            let (e, r) = rest.split_first_chunk::<4>()?;
            *end = u32::from_be_bytes(*e);
            rest = r;
        }
        let text = std::str::from_utf8(rest).ok()?;
        let ordered = ends.windows(2).all(|w| w[0] <= w[1]);
        let fits = ends[FIELD_NAMES.len() - 1] as usize == text.len();
        (ordered && fits).then(|| SearchFields {
            text: text.into(),
            ends,
            sent_day,
        })
    }
}

impl Footprint for SearchFields {
    fn footprint(&self) -> usize {
        std::mem::size_of::<SearchFields>() + self.text.len()
    }
}

/// Whether every content key of `k` can be answered from [`SearchFields`].
fn fields_suffice(k: &Key) -> bool {
    !any_key(k, &|k| match k {
        Key::Header(name, _) => !FIELD_NAMES.contains(&name.as_str()),
        Key::Body(_) | Key::Text(_) => true,
        _ => false,
    })
}

/// The line of the cached header text that holds the sent day.
const SENT_LINE: &str = "\x01sent\t";

/// The header views of a message, as header-only SEARCHes cache them
/// (the background indexer makes them on arrival: crate::derive): the
/// header text and its [`SearchFields`].
pub(crate) fn header_views(raw: &[u8]) -> [(DerivedKind, Vec<u8>); 2] {
    let c = content_of(header_block(raw));
    [
        (FIELDS_KIND, SearchFields::of(&c).encode()),
        (HEADER_TEXT_KIND, c.header_text()),
    ]
}

/// [`SearchFields`] in the index's derived cache; when
/// [`SearchFields::encode`]'s form changes, the kind gets a new number.
const FIELDS_KIND: DerivedKind = DerivedKind::ImapSearchFields;

/// The header block of a message (through its blank line, or all of it).
pub(super) fn header_block(raw: &[u8]) -> &[u8] {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| i + 2))
        .unwrap_or(raw.len());
    &raw[..end]
}

/// RFC 7162 §3.1.5: a MODSEQ key anywhere in the search.
fn has_modseq(k: &Key) -> bool {
    any_key(k, &|k| matches!(k, Key::ModSeq(_)))
}

fn needs_content(k: &Key) -> bool {
    any_key(k, &|k| {
        matches!(
            k,
            Key::Sent(..) | Key::Header(..) | Key::Body(_) | Key::Text(_)
        )
    })
}

/// RFC 8514: a save-date key anywhere in the search.
fn needs_save_dates(k: &Key) -> bool {
    any_key(k, &|k| matches!(k, Key::Saved(..)))
}

fn compare(cmp: DateCmp, day: i64, wanted: i64) -> bool {
    match cmp {
        DateCmp::Before => day < wanted,
        DateCmp::On => day == wanted,
        DateCmp::Since => day >= wanted,
    }
}

/// The parts of a message that text keys look at, decoded and lowercased.
struct Content<'a> {
    /// Every header field as a `name\tvalue\n` line (tabs and newlines
    /// inside a name or value made spaces): the cached form, so that
    /// matching a cached entry borrows it.
    headers: Cow<'a, str>,
    body: String,
    sent_day: Option<i64>,
}

fn header_text(v: &HeaderValue<'_>) -> String {
    match v {
        HeaderValue::Text(t) => t.to_string(),
        HeaderValue::TextList(l) => l.join(" "),
        HeaderValue::Address(a) => {
            let mut s = String::new();
            let mut push = |addr| push_address(&mut s, addr);
            match a {
                mail_parser::Address::List(list) => list.iter().for_each(&mut push),
                // RFC 5322 §3.4 `display-name ":" [group-list] ";"`: the
                // group's name is searchable too (`SEARCH TO friends`), as
                // in Dovecot.
                mail_parser::Address::Group(groups) => {
                    for group in groups {
                        if let Some(name) = &group.name {
                            push_group_name(&mut s, name);
                        }
                        let mut push = |addr| push_address(&mut s, addr);
                        group.addresses.iter().for_each(&mut push);
                    }
                }
            }
            s
        }
        HeaderValue::DateTime(d) => d.to_rfc822(),
        HeaderValue::ContentType(c) => {
            format!("{}/{}", c.c_type, c.c_subtype.as_deref().unwrap_or(""))
        }
        _ => String::new(),
    }
}

/// `name <address> ` as the matcher reads an address.
fn push_address(s: &mut String, addr: &mail_parser::Addr<'_>) {
    if let Some(n) = &addr.name {
        s.push_str(n);
        s.push(' ');
    }
    if let Some(a) = &addr.address {
        s.push('<');
        s.push_str(a);
        s.push_str("> ");
    }
}

/// `name: ` before a group's members.
fn push_group_name(s: &mut String, name: &str) {
    s.push_str(name);
    s.push_str(": ");
}

/// mail-parser recurses once per nested multipart or message part and can
/// overflow a thread's stack on a hostile message: only messages with few
/// container parts are given to it; the rest are searched as raw text.
const MAX_CONTAINERS_FOR_PARSER: usize = 64;

fn containers(raw: &[u8]) -> usize {
    let lower = raw.to_ascii_lowercase();
    let count = |needle: &[u8]| lower.windows(needle.len()).filter(|w| *w == needle).count();
    count(b"multipart/") + count(b"message/")
}

/// What the matcher reads; the full-text index stores the same text (bump
/// `fulltext::EXTRACTOR_VERSION` when this changes).
fn content_of(raw: &[u8]) -> Content<'static> {
    let parsed = if containers(raw) <= MAX_CONTAINERS_FOR_PARSER {
        MessageParser::default().parse(raw)
    } else {
        None
    };
    let Some(msg) = parsed else {
        return Content {
            headers: Cow::Borrowed(""),
            body: String::from_utf8_lossy(raw).to_lowercase(),
            sent_day: None,
        };
    };
    let mut headers = String::new();
    for h in msg.headers() {
        headers.push_str(&h.name.as_str().to_lowercase().replace(['\t', '\n'], " "));
        headers.push('\t');
        headers.push_str(
            &header_text(&h.value)
                .to_lowercase()
                .replace(['\t', '\n'], " "),
        );
        headers.push('\n');
    }
    let mut body = String::new();
    for i in 0..msg.text_body_count() {
        if let Some(t) = msg.body_text(i) {
            body.push_str(&t.to_lowercase());
            body.push('\n');
        }
    }
    let sent_day = msg
        .date()
        .map(|d| days_from_civil(i64::from(d.year), u32::from(d.month), u32::from(d.day)));
    Content {
        headers: Cow::Owned(headers),
        body,
        sent_day,
    }
}

/// The text of a message that content keys read.
#[derive(Clone, Copy)]
enum Text<'a> {
    Full(&'a Content<'a>),
    /// Only for searches [`fields_suffice`] for.
    Fields(&'a SearchFields),
}

impl Text<'_> {
    fn header_contains(self, name: &str, needle: &Needle) -> bool {
        match self {
            Text::Full(c) => c.header_contains(name, needle),
            Text::Fields(f) => f.header_contains(name, needle),
        }
    }

    fn sent_day(self) -> Option<i64> {
        match self {
            Text::Full(c) => c.sent_day,
            Text::Fields(f) => f.sent_day,
        }
    }

    /// Whether the body, or with `headers` any header value, holds
    /// `needle` (never asked of [`Text::Fields`]).
    fn body_contains(self, needle: &Needle, headers: bool) -> bool {
        match self {
            Text::Full(c) => needle.is_in(&c.body) || (headers && c.any_header_contains(needle)),
            Text::Fields(_) => false,
        }
    }
}

/// What a message is matched on beyond its view row.
#[derive(Clone, Copy)]
struct Facts<'a> {
    recent: &'a Recent,
    now: i64,
    content: Option<Text<'a>>,
    /// RFC 8514: its save date, when a key needs it.
    saved: Option<i64>,
}

fn matches(k: &Key, m: &ViewMessage, facts: &Facts<'_>) -> bool {
    let Facts {
        recent,
        now,
        content,
        saved,
    } = *facts;
    match k {
        Key::All => true,
        Key::Flag(f, set) => m.flags.contains(*f) == *set,
        Key::Keyword(kw, set) => m.keywords.iter().any(|x| x.eq_ignore_ascii_case(kw)) == *set,
        Key::Recent(set) => recent.contains(&m.uid) == *set,
        Key::New => recent.contains(&m.uid) && !m.flags.contains(Flags::SEEN),
        Key::In(uids) => uids.contains(&m.uid),
        Key::Larger(n) => m.size > *n,
        Key::Smaller(n) => m.size < *n,
        Key::Date(cmp, day) => compare(*cmp, m.internal_date.div_euclid(86_400), *day),
        Key::Sent(cmp, day) => content
            .and_then(Text::sent_day)
            .is_some_and(|d| compare(*cmp, d, *day)),
        Key::Header(name, needle) => content.is_some_and(|c| c.header_contains(name, needle)),
        Key::Body(needle) => content.is_some_and(|c| c.body_contains(needle, false)),
        Key::Text(needle) => content.is_some_and(|c| c.body_contains(needle, true)),
        Key::Saved(cmp, day) => saved.is_some_and(|s| compare(*cmp, s.div_euclid(86_400), *day)),
        Key::Not(k) => !matches(k, m, facts),
        Key::Or(a, b) => matches(a, m, facts) || matches(b, m, facts),
        Key::And(v) => v.iter().all(|k| matches(k, m, facts)),
        Key::ModSeq(n) => m.modseq >= *n,
        Key::Older(secs) => m.internal_date <= now - secs,
        Key::Younger(secs) => m.internal_date >= now - secs,
    }
}

/// The search keys of a SEARCH, SORT or THREAD command resolved against
/// the view, with what matching them needs: owned, to run on the blocking
/// pool ([`Matcher::run`]).
pub(super) struct Matcher {
    key: Key,
    /// The view's messages: a shared snapshot and this view's differences,
    /// so taking them costs no copy of each message on the reactor (a
    /// mailbox of 1,000,000 messages was 1,000,000 clones per SEARCH).
    messages: Messages,
    recent: Recent,
    mailbox: MailboxInfo,
    now: i64,
    /// The server's memory of [`SearchFields`].
    memory: Arc<ContentCache<SearchFields>>,
    /// RFC 7162 §3.1.5: a MODSEQ key is in the criteria.
    pub with_modseq: bool,
}

/// A message's bytes as stored now (its file may have been renamed since
/// the view was read: it is looked up again); `None` when it is gone.
pub(super) fn current_bytes(
    account: &Account,
    mailbox: &MailboxInfo,
    uid: Uid,
) -> cove_store::Result<Option<Vec<u8>>> {
    Ok(match account.message(&mailbox.guid, uid)? {
        Some(cur) => account.read_message(mailbox, &cur).ok(),
        None => None,
    })
}

/// The [`SearchFields`] of each candidate, in order: from `memory`, then
/// the index's derived cache (made on arrival), then the cached header
/// text, then the message (what was made is then cached in the index);
/// `None` for a message gone since the view was read.
fn fields_of(
    account: &Account,
    mailbox: &MailboxInfo,
    memory: &ContentCache<SearchFields>,
    candidates: &[(usize, &ViewMessage)],
) -> cove_store::Result<Vec<Option<Arc<SearchFields>>>> {
    let ids: Vec<ContentId> = candidates.iter().map(|(_, m)| m.content_id).collect();
    memory.get_or_load(&ids, |missing| {
        let asked: Vec<(ContentId, DerivedKind)> =
            missing.iter().map(|&i| (ids[i], FIELDS_KIND)).collect();
        let mut loaded: Vec<Option<SearchFields>> =
            account.derived_with(&asked, SearchFields::decode)?;
        // Mail that arrived before the kind existed: from the header text.
        let unmade: Vec<usize> = (0..loaded.len()).filter(|&j| loaded[j].is_none()).collect();
        let asked: Vec<(ContentId, DerivedKind)> = unmade
            .iter()
            .map(|&j| (ids[missing[j]], HEADER_TEXT_KIND))
            .collect();
        let texts = if unmade.is_empty() {
            Vec::new()
        } else {
            account.derived(&asked)?
        };
        let mut learned = Vec::new();
        for (&j, text) in unmade.iter().zip(texts) {
            let m = candidates[missing[j]].1;
            let fields = match text {
                Some(text) => SearchFields::of(&Content::from_header_text(&text)),
                None => {
                    let Some(raw) = current_bytes(account, mailbox, m.uid)? else {
                        continue;
                    };
                    let c = content_of(header_block(&raw));
                    learned.push((m.content_id, HEADER_TEXT_KIND, c.header_text()));
                    SearchFields::of(&c)
                }
            };
            learned.push((m.content_id, FIELDS_KIND, fields.encode()));
            loaded[j] = Some(fields);
        }
        // A cache that cannot be written only costs a parse next time.
        if let Err(e) = account.store_derived(&learned) {
            tracing::warn!(error = %e, "could not cache header text");
        }
        Ok::<_, cove_store::Error>(loaded)
    })
}

impl Matcher {
    pub fn new(conn: &mut Connection, view: &mut View, criteria: &[SearchKey<'static>]) -> Matcher {
        let key = Key::And(criteria.iter().map(|k| lower(view, k)).collect());
        let with_modseq = has_modseq(&key);
        if with_modseq {
            // RFC 7162 §3.1: a CONDSTORE enabling command.
            conn.enable_condstore(Some(view));
        }
        Matcher {
            key,
            messages: view.messages.clone(),
            recent: view.recent.clone(),
            mailbox: view.mailbox.clone(),
            now: conn.ctx.store.env().now_secs(),
            memory: conn.ctx.search_fields.clone(),
            with_modseq,
        }
    }

    /// The messages that match, with their sequence numbers, in mailbox
    /// order. Reads messages (or their cached header text) only when a key
    /// needs their content.
    pub fn run(self, account: &Account) -> cove_store::Result<Vec<(usize, ViewMessage)>> {
        let Matcher {
            key,
            messages,
            recent,
            mailbox,
            now,
            memory,
            ..
        } = self;
        let content = needs_content(&key);
        let body = needs_body(&key);
        // Body searches read only the messages the full-text index names.
        let narrowed = body
            .then(|| fulltext::narrow(account, &mailbox, &key))
            .flatten();
        let candidates: Vec<(usize, &ViewMessage)> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| (i + 1, m))
            .filter(|(_, m)| {
                narrowed
                    .as_ref()
                    .is_none_or(|ids| ids.contains(&m.content_id))
            })
            .collect();
        // Searches of the usual header fields read them from memory.
        let fields = if content && fields_suffice(&key) {
            fields_of(account, &mailbox, &memory, &candidates)?
        } else {
            Vec::new()
        };
        // Other header-only searches read the cached header text first.
        let cached = if content && !body && fields.is_empty() {
            let keys: Vec<(cove_store::ContentId, DerivedKind)> = candidates
                .iter()
                .map(|(_, m)| (m.content_id, HEADER_TEXT_KIND))
                .collect();
            account.derived(&keys)?
        } else {
            Vec::new()
        };
        let saved = if needs_save_dates(&key) {
            let uids: Vec<Uid> = candidates.iter().map(|(_, m)| m.uid).collect();
            account.save_dates(&mailbox.guid, &uids)?
        } else {
            Vec::new()
        };
        let mut learned = Vec::new();
        let mut hits = Vec::new();
        for (i, (seq, m)) in candidates.into_iter().enumerate() {
            let c = if !content || !fields.is_empty() {
                None
            } else if let Some(Some(text)) = cached.get(i) {
                Some(Content::from_header_text(text))
            } else {
                current_bytes(account, &mailbox, m.uid)?.map(|raw| {
                    if body {
                        content_of(&raw)
                    } else {
                        let c = content_of(header_block(&raw));
                        learned.push((m.content_id, HEADER_TEXT_KIND, c.header_text()));
                        c
                    }
                })
            };
            let text = match fields.get(i) {
                Some(f) => f.as_deref().map(Text::Fields),
                None => c.as_ref().map(Text::Full),
            };
            let facts = Facts {
                recent: &recent,
                now,
                content: text,
                saved: saved.get(i).copied().flatten(),
            };
            if matches(&key, m, &facts) {
                hits.push((seq, m.clone()));
            }
        }
        // A cache that cannot be written only costs a parse next time.
        if let Err(e) = account.store_derived(&learned) {
            tracing::warn!(error = %e, "could not cache header text");
        }
        Ok(hits)
    }
}

// RFC 3501 §6.4.4 SEARCH, §6.4.8 UID SEARCH.
pub async fn search(
    conn: &mut Connection,
    user: &Authed,
    view: &mut View,
    criteria: imap_codec::imap_types::core::Vec1<SearchKey<'static>>,
    uid: bool,
    ret: Option<SearchReturn>,
) -> Outcome {
    let matcher = Matcher::new(conn, view, criteria.as_ref());
    let with_modseq = matcher.with_modseq;
    let account = user.account();
    let found = user
        .blocking(move || {
            Ok(matcher
                .run(&account)?
                .into_iter()
                .map(|(seq, m)| (if uid { m.uid as usize } else { seq }, m.modseq))
                .collect::<Vec<_>>())
        })
        .await;
    match found {
        Ok(hits) if let Some(ret) = &ret => {
            // RFC 4731 §3.1.
            esearch::write(&mut conn.out, ret, uid, &hits, with_modseq);
            if ret.save {
                // RFC 5182 §2.1: kept as UIDs.
                view.saved = hits
                    .iter()
                    .filter_map(|(n, _)| {
                        if uid {
                            Some(*n as Uid)
                        } else {
                            view.messages.get(n.wrapping_sub(1)).map(|m| m.uid)
                        }
                    })
                    .collect();
            }
            Outcome::ok("SEARCH completed")
        }
        Ok(hits) => {
            let mut list: String = hits.iter().map(|(n, _)| format!(" {n}")).collect();
            // RFC 7162 §3.1.5: with a MODSEQ key, the highest modseq of the
            // messages found.
            if with_modseq && let Some(highest) = hits.iter().map(|(_, m)| *m).max() {
                list.push_str(&format!(" (MODSEQ {highest})"));
            }
            conn.untagged(&format!("SEARCH{list}"));
            Outcome::ok("SEARCH completed")
        }
        Err(e) => conn.refuse(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_text_round_trips() {
        let raw = b"Subject: =?utf-8?q?Caf=C3=A9?= menu\r\nFrom: Alice <a@x.org>\r\nDate: Sat, 01 Feb 2020 09:59:00 +0000\r\n\r\nbody\r\n";
        let c = content_of(header_block(raw));
        assert!(c.body.is_empty() || !c.body.contains("body"));
        let text = c.header_text();
        let back = Content::from_header_text(&text);
        assert_eq!(back.headers, c.headers);
        assert_eq!(back.sent_day, c.sent_day);
        assert!(back.header_contains("subject", &"café".into()));
        assert!(back.header_contains("from", &"a@x.org".into()));
        assert!(!back.header_contains("from", &"café".into()));
        // A search of any field's value (TEXT).
        assert!(back.any_header_contains(&"alice".into()));
        assert!(!back.any_header_contains(&"\x01sent".into()));
    }

    /// RFC 5322 §3.4 groups: the group's name and its members are all
    /// searchable (SEARCH TO friends, SEARCH TO ann@example.com).
    #[test]
    fn address_groups_are_searchable_by_name_and_member() {
        let raw =
            b"To: Friends: ann@example.com, \"Ben B.\" <ben@example.org>;, zed@example.net\r\n\
                    Cc: undisclosed-recipients:;\r\nTo: second@example.com\r\n\r\n";
        let c = content_of(header_block(raw));
        let hit = |name: &str, needle: &str| c.header_contains(name, &needle.into());
        for needle in [
            "friends",
            "friends:",
            "ann@example.com",
            "ben b.",
            "zed@example.net",
            "second@",
        ] {
            assert!(hit("to", needle), "TO {needle}: {:?}", c.headers);
        }
        assert!(hit("cc", "undisclosed-recipients"), "{:?}", c.headers);
        assert!(!hit("to", "nobody"));
        // The cached form keeps them.
        let text = c.header_text();
        let back = Content::from_header_text(&text);
        assert_eq!(back.headers, c.headers);
    }

    /// The cached form is read in place; only its last line can be the
    /// sent day.
    #[test]
    fn cached_header_text_is_read_in_place() {
        let c = Content::from_header_text(b"subject\tplan b\nto\tann\n\x01sent\t20000\n");
        assert!(matches!(c.headers, Cow::Borrowed(_)));
        assert_eq!(c.sent_day, Some(20000));
        assert!(
            c.header_contains("subject", &"plan".into()) && c.header_contains("to", &"ann".into())
        );
        let c = Content::from_header_text(b"\x01sent\t5\nsubject\tx\n");
        assert_eq!(c.sent_day, None);
        assert!(c.header_contains("subject", &"x".into()));
        let c = Content::from_header_text(b"\x01sent\t7");
        assert_eq!(c.sent_day, Some(7));
        assert!(!c.any_header_contains(&"7".into()));
    }

    /// The fields kept in memory answer every SUBJECT/FROM/TO/CC/BCC key
    /// as the full header text does: several fields of one name, empty
    /// and missing fields, groups, encoded words, needles that are empty,
    /// span two values or hold a newline.
    #[test]
    fn search_fields_answer_as_the_header_text() {
        let raws: [&[u8]; 4] = [
            b"Subject: =?utf-8?q?Caf=C3=A9?= lunch\r\nSubject: Second one\r\n\
              From: Alice <a@x.org>\r\nTo: Friends: ann@example.com;\r\nTo: zed@y\r\n\
              Date: Sat, 01 Feb 2020 09:59:00 +0000\r\n\r\nbody lunch\r\n",
            b"Subject:\r\nCc: c@y\r\nBcc: b@z\r\nX-Other: lunch\r\n\r\n",
            b"From: bob@example.org\r\n\r\n",
            b"",
        ];
        let needles = [
            "",
            "lunch",
            "café",
            "one",
            "lunch\nsecond",
            "\n",
            " ",
            "a@x.org",
            "<a@x.org>",
            "friends:",
            "zed",
            "c@y",
            "b@z",
            "bob",
            "nothing",
        ];
        for raw in raws {
            let c = content_of(header_block(raw));
            let cached = c.header_text();
            let made = SearchFields::of(&c);
            let bytes = made.encode();
            // Every truncation of the cached form is refused.
            for n in 0..bytes.len() {
                assert!(SearchFields::decode(&bytes[..n]).is_none(), "{n}");
            }
            let Some(read_back) = SearchFields::decode(&bytes) else {
                panic!("{bytes:?} not read back");
            };
            for f in [
                made,
                read_back,
                SearchFields::of(&Content::from_header_text(&cached)),
            ] {
                assert_eq!(f.sent_day, c.sent_day);
                for name in FIELD_NAMES {
                    for needle in needles {
                        let needle = Needle::from(needle);
                        assert_eq!(
                            f.header_contains(name, &needle),
                            c.header_contains(name, &needle),
                            "{name} {:?} in {:?}",
                            &*needle,
                            c.headers
                        );
                    }
                }
                assert!(!f.header_contains("x-other", &Needle::from("lunch")));
            }
        }
    }

    /// Only searches of the kept fields (and non-content keys) read them.
    #[test]
    fn fields_suffice_for_the_kept_fields_only() {
        let header = |n: &str| Key::Header(n.into(), Needle::from("x"));
        assert!(fields_suffice(&Key::And(vec![
            header("subject"),
            Key::Not(Box::new(header("bcc"))),
            Key::Sent(DateCmp::On, 1),
            Key::All,
        ])));
        assert!(!fields_suffice(&Key::Or(
            Box::new(header("subject")),
            Box::new(header("x-other"))
        )));
        assert!(!fields_suffice(&Key::Text(Needle::from("x"))));
        assert!(!fields_suffice(&Key::Not(Box::new(Key::Body(
            Needle::from("x")
        )))));
    }

    #[test]
    fn header_block_ends_at_the_blank_line() {
        assert_eq!(header_block(b"A: b\r\n\r\nbody"), b"A: b\r\n\r\n");
        assert_eq!(header_block(b"A: b\n\nbody"), b"A: b\n\n");
        assert_eq!(header_block(b"A: b"), b"A: b");
    }
}
