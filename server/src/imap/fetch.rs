//! RFC 3501 §6.4.5 FETCH and §6.4.8 UID FETCH; RFC 3516 BINARY; RFC 7162
//! MODSEQ, CHANGEDSINCE and VANISHED.

use std::num::NonZeroU32;

use cove_store::{DerivedKind, Flags, MailboxInfo, ModSeq, Uid};
use imap_codec::imap_types::command::FetchModifier;
use imap_codec::imap_types::fetch::{MessageDataItemName, Section};

use super::command::Fetch;
use super::condstore::{UidSet, expunged_since, vanished};
use super::connection::{Authed, Connection};
use super::mime;
use super::objectid::{self, ObjectItems};
use super::outcome::{Code, Outcome};
use super::response;
use super::store_flags::{FlagChange, Report, apply_flag_change};
use super::view::{View, ViewMessage};

/// ENVELOPE, BODYSTRUCTURE and BODY are cached in the index by content id
/// (`Account::derived`); when their rendering changes, their kinds get new
/// numbers (`DerivedKind`, in the store).
fn derived_kind(item: &MessageDataItemName<'_>) -> Option<DerivedKind> {
    use MessageDataItemName as I;
    match item {
        I::Envelope => Some(DerivedKind::ImapEnvelope),
        I::BodyStructure => Some(DerivedKind::ImapBodyStructure),
        I::Body => Some(DerivedKind::ImapBody),
        _ => None,
    }
}

/// What the cache or one parse gave for a message.
#[derive(Default)]
struct Derived(std::collections::HashMap<DerivedKind, Vec<u8>>);

impl Derived {
    fn compute(&mut self, msg: &mime::ParsedMessage<'_>, kind: DerivedKind) -> Vec<u8> {
        let bytes = match kind {
            DerivedKind::ImapEnvelope => msg.envelope(),
            DerivedKind::ImapBodyStructure => msg.bodystructure(true),
            _ => msg.bodystructure(false),
        };
        self.0.insert(kind, bytes.clone());
        bytes
    }
}

/// Every cached view of a message, as its first FETCH would cache them
/// (the background indexer makes them on arrival: crate::derive).
pub(crate) fn views(raw: &[u8]) -> Vec<(DerivedKind, Vec<u8>)> {
    use MessageDataItemName as I;
    let content = Content::new(raw);
    let mut derived = Derived::default();
    for item in [I::Envelope, I::BodyStructure, I::Body] {
        if let Some(kind) = derived_kind(&item) {
            derived.compute(content.msg(), kind);
        }
    }
    derived.0.into_iter().collect()
}

/// Items that need the message's bytes even when the cache has the rest.
fn needs_raw(item: &MessageDataItemName<'_>) -> bool {
    needs_content(item) && derived_kind(item).is_none()
}

fn needs_content(item: &MessageDataItemName<'_>) -> bool {
    use MessageDataItemName as I;
    !matches!(
        item,
        I::Flags | I::InternalDate | I::Rfc822Size | I::Uid | I::ModSeq
    )
}

fn sets_seen(item: &MessageDataItemName<'_>) -> bool {
    use MessageDataItemName as I;
    match item {
        I::BodyExt { peek, .. } | I::Binary { peek, .. } => !peek,
        I::Rfc822 | I::Rfc822Text => true,
        _ => false,
    }
}

/// The part paths of the BINARY and BINARY.SIZE items asked for.
fn binary_parts<'i>(items: &'i [MessageDataItemName<'_>]) -> impl Iterator<Item = Vec<u32>> + 'i {
    items.iter().filter_map(|i| match i {
        MessageDataItemName::Binary { section, .. }
        | MessageDataItemName::BinarySize { section } => Some(part_numbers(section)),
        _ => None,
    })
}

fn part_numbers(p: &[NonZeroU32]) -> Vec<u32> {
    p.iter().map(|n| n.get()).collect()
}

/// The section name as echoed in the response, e.g. `1.2.HEADER.FIELDS (FROM)`.
fn section_name(section: &Option<Section<'_>>) -> String {
    let dotted = |p: &[NonZeroU32]| {
        p.iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(".")
    };
    let prefix = |p: &Option<imap_codec::imap_types::fetch::Part>| match p {
        Some(p) => format!("{}.", dotted(p.0.as_ref())),
        None => String::new(),
    };
    let fields =
        |f: &imap_codec::imap_types::core::Vec1<imap_codec::imap_types::core::AString<'_>>| {
            f.as_ref()
                .iter()
                .map(|a| String::from_utf8_lossy(a.as_ref()).to_ascii_uppercase())
                .collect::<Vec<_>>()
                .join(" ")
        };
    match section {
        None => String::new(),
        Some(Section::Part(p)) => dotted(p.0.as_ref()),
        Some(Section::Header(p)) => format!("{}HEADER", prefix(p)),
        Some(Section::HeaderFields(p, f)) => format!("{}HEADER.FIELDS ({})", prefix(p), fields(f)),
        Some(Section::HeaderFieldsNot(p, f)) => {
            format!("{}HEADER.FIELDS.NOT ({})", prefix(p), fields(f))
        }
        Some(Section::Text(p)) => format!("{}TEXT", prefix(p)),
        Some(Section::Mime(p)) => format!("{}.MIME", dotted(p.0.as_ref())),
    }
}

/// The bytes of a BODY[section].
fn section_bytes(msg: &mime::ParsedMessage<'_>, section: &Option<Section<'_>>) -> Option<Vec<u8>> {
    use mime::SectionKind as K;
    let (part, kind) = match section {
        None => (Vec::new(), K::Full),
        Some(Section::Part(p)) => (part_numbers(p.0.as_ref()), K::Full),
        Some(Section::Header(p)) => (
            p.as_ref()
                .map(|p| part_numbers(p.0.as_ref()))
                .unwrap_or_default(),
            K::Header,
        ),
        Some(Section::HeaderFields(p, f)) | Some(Section::HeaderFieldsNot(p, f)) => {
            let names = f
                .as_ref()
                .iter()
                .map(|a| String::from_utf8_lossy(a.as_ref()).into_owned())
                .collect();
            let not = matches!(section, Some(Section::HeaderFieldsNot(..)));
            (
                p.as_ref()
                    .map(|p| part_numbers(p.0.as_ref()))
                    .unwrap_or_default(),
                K::HeaderFields { names, not },
            )
        }
        Some(Section::Text(p)) => (
            p.as_ref()
                .map(|p| part_numbers(p.0.as_ref()))
                .unwrap_or_default(),
            K::Text,
        ),
        Some(Section::Mime(p)) => (part_numbers(p.0.as_ref()), K::Mime),
    };
    msg.section(&part, &kind).map(|c| c.into_owned())
}

fn partial_of<'b>(bytes: &'b [u8], partial: &Option<(u32, NonZeroU32)>) -> (&'b [u8], String) {
    match partial {
        None => (bytes, String::new()),
        Some((offset, len)) => (
            mime::partial(bytes, *offset, len.get()),
            format!("<{offset}>"),
        ),
    }
}

/// One message's FETCH response (without the leading `* n FETCH`).
fn render(
    row: &Row,
    content: Option<&Content<'_>>,
    derived: &Derived,
    items: &[MessageDataItemName<'_>],
    uid_cmd: bool,
    extra: Extra,
    out: &mut Vec<u8>,
) {
    use MessageDataItemName as I;
    let condstore = extra.condstore;
    let Row {
        seq,
        meta,
        recent,
        seen_now,
        saved,
    } = row;
    let (seq, recent, seen_now) = (*seq, *recent, *seen_now);
    out.extend_from_slice(format!("* {seq} FETCH (").as_bytes());
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !first {
            out.push(b' ');
        }
        first = false;
    };
    // UID FETCH always returns UID (RFC 3501 §6.4.8).
    if uid_cmd && !items.iter().any(|i| matches!(i, I::Uid)) {
        sep(out);
        out.extend_from_slice(format!("UID {}", meta.uid).as_bytes());
    }
    let empty = Content::new(b"");
    let content = content.unwrap_or(&empty);
    let raw = content.raw;
    let msg = || content.msg();
    let view = |item: &MessageDataItemName<'_>| -> std::borrow::Cow<'_, [u8]> {
        let kind = derived_kind(item).unwrap_or(DerivedKind::ImapBody);
        match derived.0.get(&kind) {
            Some(b) => std::borrow::Cow::Borrowed(b),
            None => std::borrow::Cow::Owned(Derived::default().compute(msg(), kind)),
        }
    };
    for item in items {
        sep(out);
        match item {
            I::Uid => out.extend_from_slice(format!("UID {}", meta.uid).as_bytes()),
            I::Flags => out.extend_from_slice(
                format!(
                    "FLAGS {}",
                    response::flag_list(meta.flags, &meta.keywords, recent)
                )
                .as_bytes(),
            ),
            I::InternalDate => out.extend_from_slice(
                format!(
                    "INTERNALDATE {}",
                    response::internal_date(meta.internal_date)
                )
                .as_bytes(),
            ),
            I::Rfc822Size => out.extend_from_slice(format!("RFC822.SIZE {}", meta.size).as_bytes()),
            I::ModSeq => out.extend_from_slice(format!("MODSEQ ({})", meta.modseq).as_bytes()),
            I::Envelope => {
                out.extend_from_slice(b"ENVELOPE ");
                out.extend_from_slice(&view(item));
            }
            I::BodyStructure => {
                out.extend_from_slice(b"BODYSTRUCTURE ");
                out.extend_from_slice(&view(item));
            }
            I::Body => {
                out.extend_from_slice(b"BODY ");
                out.extend_from_slice(&view(item));
            }
            I::Rfc822 => {
                out.extend_from_slice(b"RFC822 ");
                response::literal(out, raw);
            }
            I::Rfc822Header => {
                out.extend_from_slice(b"RFC822.HEADER ");
                let h = msg()
                    .section(&[], &mime::SectionKind::Header)
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                response::literal(out, &h);
            }
            I::Rfc822Text => {
                out.extend_from_slice(b"RFC822.TEXT ");
                let t = msg()
                    .section(&[], &mime::SectionKind::Text)
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                response::literal(out, &t);
            }
            I::BodyExt {
                section, partial, ..
            } => {
                let name = section_name(section);
                // BODY[] is the message as stored: no parse needed.
                let bytes = match section {
                    None => Some(std::borrow::Cow::Borrowed(raw)),
                    Some(_) => section_bytes(msg(), section).map(std::borrow::Cow::Owned),
                };
                match bytes {
                    Some(bytes) => {
                        let (slice, origin) = partial_of(&bytes, partial);
                        out.extend_from_slice(format!("BODY[{name}]{origin} ").as_bytes());
                        response::literal(out, slice);
                    }
                    None => out.extend_from_slice(format!("BODY[{name}] NIL").as_bytes()),
                }
            }
            I::Binary {
                section, partial, ..
            } => {
                let part = part_numbers(section);
                let name = part
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(".");
                match msg().binary(&part).ok() {
                    Some(bytes) => {
                        let (slice, origin) = partial_of(&bytes, partial);
                        out.extend_from_slice(format!("BINARY[{name}]{origin} ").as_bytes());
                        response::literal8(out, slice);
                    }
                    None => out.extend_from_slice(format!("BINARY[{name}] NIL").as_bytes()),
                }
            }
            I::BinarySize { section } => {
                let part = part_numbers(section);
                let name = part
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(".");
                let size = msg().binary(&part).map(|b| b.len()).unwrap_or(0);
                out.extend_from_slice(format!("BINARY.SIZE[{name}] {size}").as_bytes());
            }
        }
    }
    // The \Seen this FETCH set is reported even if FLAGS was not asked for
    // (RFC 3501 §6.4.5).
    if seen_now && !items.iter().any(|i| matches!(i, I::Flags)) {
        sep(out);
        out.extend_from_slice(
            format!(
                "FLAGS {}",
                response::flag_list(meta.flags, &meta.keywords, recent)
            )
            .as_bytes(),
        );
    }
    // RFC 7162 §3.1.4: once CONDSTORE is enabled, flags go with their MODSEQ.
    let flags_sent = seen_now || items.iter().any(|i| matches!(i, I::Flags));
    if condstore && flags_sent && !items.iter().any(|i| matches!(i, I::ModSeq)) {
        sep(out);
        out.extend_from_slice(format!("MODSEQ ({})", meta.modseq).as_bytes());
    }
    // RFC 8474 §5.
    if extra.objects.emailid {
        sep(out);
        let id = objectid::email_id(&meta.content_id);
        out.extend_from_slice(format!("EMAILID ({id})").as_bytes());
    }
    if extra.objects.threadid {
        sep(out);
        out.extend_from_slice(b"THREADID NIL");
    }
    // RFC 8514 §3: every mailbox keeps save dates (`savedate.rs`).
    if extra.objects.savedate {
        sep(out);
        let date = saved.map_or("NIL".to_string(), response::internal_date);
        out.extend_from_slice(format!("SAVEDATE {date}").as_bytes());
    }
    out.extend_from_slice(b")\r\n");
}

/// What a FETCH response carries beyond the items asked for.
#[derive(Clone, Copy, Default)]
struct Extra {
    /// RFC 7162 §3.1.4: MODSEQ with every FLAGS.
    condstore: bool,
    /// RFC 8474 EMAILID and THREADID.
    objects: ObjectItems,
}

/// A message's bytes, parsed at most once, when an item needs its structure.
struct Content<'a> {
    raw: &'a [u8],
    parsed: std::cell::OnceCell<mime::ParsedMessage<'a>>,
}

impl<'a> Content<'a> {
    fn new(raw: &'a [u8]) -> Content<'a> {
        Content {
            raw,
            parsed: std::cell::OnceCell::new(),
        }
    }

    fn msg(&self) -> &mime::ParsedMessage<'a> {
        self.parsed
            .get_or_init(|| mime::ParsedMessage::parse(self.raw))
    }
}

/// One message to answer for.
#[derive(Clone)]
struct Row {
    seq: usize,
    meta: ViewMessage,
    recent: bool,
    /// This FETCH set its \Seen.
    seen_now: bool,
    /// RFC 8514: its save date, read when SAVEDATE is asked for.
    saved: Option<i64>,
}

/// Messages answered per trip to the blocking pool: few when their bytes
/// are read (memory), many when the index alone answers (fewer hops).
/// Pipelined FETCHes answered together share the same bound.
const BATCH_WITH_CONTENT: usize = 64;
const BATCH_FROM_INDEX: usize = 2048;

fn batch_size(items: &[MessageDataItemName<'_>]) -> usize {
    if items.iter().any(needs_raw) {
        BATCH_WITH_CONTENT
    } else {
        BATCH_FROM_INDEX
    }
}

/// A FETCH checked and resolved against the view: what rendering needs.
#[derive(Default)]
pub(super) struct Prepared {
    rows: Vec<Row>,
    items: Vec<MessageDataItemName<'static>>,
    uid: bool,
    extra: Extra,
}

// RFC 3501 §6.4.5 FETCH, §6.4.8 UID FETCH.
pub async fn fetch(conn: &mut Connection, user: &Authed, view: &mut View, fetch: Fetch) -> Outcome {
    let prepared = match prepare(conn, user, view, fetch).await {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    let batch = batch_size(&prepared.items);
    let mut done = Rendered::default();
    for chunk in prepared.rows.chunks(batch) {
        let job = Prepared {
            rows: chunk.to_vec(),
            items: prepared.items.clone(),
            uid: prepared.uid,
            extra: prepared.extra,
        };
        let account = user.account();
        let mailbox = view.mailbox.clone();
        let rendered = user
            .blocking(move || {
                let mut out = Vec::new();
                let r = render_rows(&account, &mailbox, &job, &mut out)?;
                Ok((out, r))
            })
            .await;
        match rendered {
            Ok((bytes, r)) => {
                done.missing |= r.missing;
                done.unknown_cte |= r.unknown_cte;
                conn.out.extend_from_slice(&bytes);
                if conn.out.len() > 256 * 1024 && conn.flush_within(None).await.is_err() {
                    return Outcome::bad("Connection lost");
                }
            }
            Err(e) => return conn.refuse(&e),
        }
    }
    let trips = prepared.rows.len().div_ceil(batch);
    crate::metrics::METRICS.imap_fetched(1, trips as u64);
    done.outcome()
}

/// Whether a FETCH may be answered together with the FETCHes pipelined
/// around it, in one trip to the blocking pool: it changes nothing (no
/// implicit \Seen: RFC 3501 §5.5 lets commands that only read run
/// together, and a batch of them sends no EXPUNGE between them, so their
/// message numbers agree), needs nothing else from the store (no
/// VANISHED), and names few messages (`rows` counts them up to the bound).
pub(super) fn batchable(view: &View, fetch: &Fetch, rows: &mut usize) -> bool {
    let modifiers_ok = fetch
        .modifiers
        .iter()
        .all(|m| matches!(m, FetchModifier::ChangedSince(_)));
    if !modifiers_ok || (!view.read_only && fetch.items.iter().any(sets_seen)) {
        return false;
    }
    let bound = batch_size(&fetch.items);
    let Some(n) = set_size_within(fetch, view, bound) else {
        return false;
    };
    *rows += n;
    *rows <= bound
}

/// How many messages a FETCH's set names at most, if no more than `bound`.
fn set_size_within(fetch: &Fetch, view: &View, bound: usize) -> Option<usize> {
    use imap_codec::imap_types::sequence::{SeqOrUid, Sequence};
    let largest = if fetch.uid {
        view.last_uid()
    } else {
        view.messages.len() as u32
    };
    let value = |s: &SeqOrUid| match s {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => largest,
    };
    let mut n: usize = 0;
    for s in fetch.set.0.as_ref() {
        let k = match s {
            Sequence::Single(_) => 1,
            Sequence::Range(a, b) => value(a).abs_diff(value(b)) as usize + 1,
        };
        n = n.saturating_add(k);
        if n > bound {
            return None;
        }
    }
    Some(n)
}

/// One FETCH of a batch answered: its tag, its FETCH responses and its
/// tagged status, for the caller to send in that order.
pub(super) type Answered = (String, Vec<u8>, Outcome);

/// Answer pipelined FETCHes (each [`batchable`]) in one trip to the
/// blocking pool, in the order given.
pub(super) async fn fetch_batch(
    conn: &mut Connection,
    user: &Authed,
    view: &mut View,
    batch: Vec<(String, Fetch)>,
) -> Vec<Answered> {
    let mut jobs: Vec<(String, Result<Prepared, Outcome>)> = Vec::with_capacity(batch.len());
    for (tag, f) in batch {
        let prepared = prepare(conn, user, view, f).await;
        jobs.push((tag, prepared));
    }
    let work: Vec<Option<Prepared>> = jobs
        .iter_mut()
        .map(|(_, p)| match p {
            Ok(p) => Some(std::mem::take(p)),
            Err(_) => None,
        })
        .collect();
    crate::metrics::METRICS.imap_fetched(jobs.len() as u64, 1);
    let account = user.account();
    let mailbox = view.mailbox.clone();
    let rendered = user
        .blocking(move || {
            let answer = |job: Prepared| -> cove_store::Result<(Vec<u8>, Rendered)> {
                let mut bytes = Vec::new();
                let r = render_rows(&account, &mailbox, &job, &mut bytes)?;
                Ok((bytes, r))
            };
            Ok(work
                .into_iter()
                .map(|job| job.map(answer))
                .collect::<Vec<_>>())
        })
        .await;
    let rendered = match rendered {
        Ok(r) => r,
        Err(e) => {
            let refused = conn.refuse(&e);
            return jobs
                .into_iter()
                .map(|(tag, p)| (tag, Vec::new(), p.err().unwrap_or_else(|| refused.clone())))
                .collect();
        }
    };
    jobs.into_iter()
        .zip(rendered)
        .map(|((tag, p), r)| match (p, r) {
            (Err(refused), _) => (tag, Vec::new(), refused),
            (Ok(_), Some(Ok((bytes, r)))) => (tag, bytes, r.outcome()),
            (Ok(_), Some(Err(e))) => (tag, Vec::new(), conn.refuse(&e)),
            (Ok(_), None) => (tag, Vec::new(), Outcome::bad("Not expected here")),
        })
        .collect()
}

/// Check a FETCH, set the \Seen it implies and announce what must come
/// before its responses; the rows to render.
async fn prepare(
    conn: &mut Connection,
    user: &Authed,
    view: &mut View,
    fetch: Fetch,
) -> Result<Prepared, Outcome> {
    let Fetch {
        set,
        mut items,
        uid,
        modifiers,
        objects,
    } = fetch;
    if !uid && !view.seq_set_in_range(&set) {
        return Err(Outcome::bad("Message sequence number out of range"));
    }
    let mut changed_since = None;
    let mut with_vanished = false;
    for m in &modifiers {
        match m {
            FetchModifier::ChangedSince(v) => changed_since = Some(v.get()),
            FetchModifier::Vanished => with_vanished = true,
        }
    }
    // RFC 7162 §3.2.6: VANISHED with UID FETCH and CHANGEDSINCE only, once
    // QRESYNC is enabled.
    if with_vanished && !(uid && changed_since.is_some() && conn.enabled.qresync) {
        return Err(Outcome::bad(
            "VANISHED needs UID FETCH, CHANGEDSINCE and QRESYNC enabled",
        ));
    }
    let asks_modseq = items
        .iter()
        .any(|i| matches!(i, MessageDataItemName::ModSeq));
    if changed_since.is_some() || asks_modseq {
        // RFC 7162 §3.1: a CONDSTORE enabling command.
        conn.enable_condstore(Some(view));
    }
    if changed_since.is_some() && !asks_modseq {
        // RFC 7162 §3.1.4.1: CHANGEDSINCE implies MODSEQ.
        items.push(MessageDataItemName::ModSeq);
    }
    let mut indices = view.resolve(&set, uid);
    if let Some(since) = changed_since {
        // RFC 7162 §3.1.4.1: only messages changed after `since`.
        indices.retain(|i| view.messages[*i].modseq > since);
        if with_vanished {
            let account = user.account();
            let guid = view.mailbox.guid;
            let tombstones = match user.blocking(move || account.tombstones(&guid)).await {
                Ok(t) => t,
                Err(e) => return Err(conn.refuse(&e)),
            };
            let tombstones: Vec<(Uid, ModSeq)> =
                tombstones.iter().map(|(u, _, m)| (*u, *m)).collect();
            let asked = UidSet::new(&set, view.last_uid());
            let gone = expunged_since(view, &tombstones, since, Some(&asked));
            if !gone.is_empty() {
                vanished(&mut conn.out, &gone, true);
            }
        }
    }
    let extra = Extra {
        condstore: conn.enabled.condstore,
        objects,
    };
    let mark_seen = !view.read_only && items.iter().any(sets_seen);

    // Implicit \Seen first, so that the FLAGS we return are current.
    let mut seen_now: std::collections::HashSet<u32> = std::collections::HashSet::new();
    if mark_seen {
        let unseen: Vec<u32> = indices
            .iter()
            .map(|i| view.messages[*i].uid)
            .filter(|u| {
                view.seq_of(*u)
                    .is_some_and(|s| !view.messages[s - 1].flags.contains(Flags::SEEN))
            })
            .collect();
        if !unseen.is_empty() {
            let change = FlagChange::add_seen();
            apply_flag_change(conn, user, view, &unseen, change, None, Report::Nothing).await?;
            seen_now.extend(unseen);
        }
    }
    // RFC 3501 §7.2.6: keywords this FETCH shows are announced first.
    if !seen_now.is_empty()
        || items
            .iter()
            .any(|i| matches!(i, MessageDataItemName::Flags))
    {
        let shown: Vec<String> = indices
            .iter()
            .flat_map(|i| view.messages[*i].keywords.to_vec())
            .collect();
        view.announce_keywords(shown.iter().map(String::as_str), &mut conn.out);
    }
    let rows: Vec<Row> = indices
        .iter()
        .map(|i| {
            let uid = view.messages[*i].uid;
            Row {
                seq: i + 1,
                meta: view.messages[*i].clone(),
                recent: view.recent.contains(&uid),
                seen_now: seen_now.contains(&uid),
                saved: None,
            }
        })
        .collect();
    Ok(Prepared {
        rows,
        items,
        uid,
        extra,
    })
}

/// What rendering found besides the responses.
#[derive(Default)]
struct Rendered {
    /// Some message was expunged meanwhile.
    missing: bool,
    /// Some BINARY part has an encoding cove cannot undo.
    unknown_cte: bool,
}

impl Rendered {
    fn outcome(&self) -> Outcome {
        if self.unknown_cte {
            Outcome::no(
                Code::UnknownCte,
                "A part's content transfer encoding is not one cove can decode",
            )
        } else if self.missing {
            // RFC 2180 §4.1.2, RFC 9051 §7.5.1: answered with what still
            // exists, like Dovecot; a NO would make clients retry or drop the
            // whole FETCH. The EXPUNGE follows at the next command that may
            // announce it.
            Outcome::ok("FETCH completed (some messages were expunged meanwhile)")
        } else {
            Outcome::ok("FETCH completed")
        }
    }
}

/// Render a FETCH's rows (blocking: reads the index and message files).
fn render_rows(
    account: &cove_store::Account,
    mailbox: &MailboxInfo,
    job: &Prepared,
    out: &mut Vec<u8>,
) -> cove_store::Result<Rendered> {
    let Prepared {
        rows,
        items,
        uid,
        extra,
    } = job;
    let mut done = Rendered::default();
    let kinds: Vec<DerivedKind> = items.iter().filter_map(derived_kind).collect();
    let raw_needed = items.iter().any(needs_raw);
    let keys: Vec<(cove_store::ContentId, DerivedKind)> = rows
        .iter()
        .flat_map(|r| kinds.iter().map(|k| (r.meta.content_id, *k)))
        .collect();
    let mut cached = if keys.is_empty() {
        Vec::new()
    } else {
        account.derived(&keys)?
    };
    let mut learned: Vec<(cove_store::ContentId, DerivedKind, Vec<u8>)> = Vec::new();
    let saved = if extra.objects.savedate {
        let uids: Vec<Uid> = rows.iter().map(|r| r.meta.uid).collect();
        account.save_dates(&mailbox.guid, &uids)?
    } else {
        Vec::new()
    };
    for (i, row) in rows.iter().enumerate() {
        let dated;
        let row = match saved.get(i) {
            Some(date) => {
                dated = Row {
                    saved: *date,
                    ..row.clone()
                };
                &dated
            }
            None => row,
        };
        let mut derived = Derived::default();
        for (j, kind) in kinds.iter().enumerate() {
            if let Some(Some(bytes)) = cached.get_mut(i * kinds.len() + j).map(Option::take) {
                derived.0.insert(*kind, bytes);
            }
        }
        let complete = derived.0.len() == kinds.len();
        let raw = if raw_needed || !complete {
            // The file may have been renamed (flags) since the
            // view was read: look it up again.
            let current = account.message(&mailbox.guid, row.meta.uid)?;
            match current.and_then(|m| account.read_message(mailbox, &m).ok()) {
                Some(bytes) => Some(bytes),
                None => {
                    done.missing = true;
                    continue;
                }
            }
        } else {
            None
        };
        let content = raw.as_deref().map(Content::new);
        if let Some(content) = &content
            && !complete
        {
            let msg = content.msg();
            for kind in &kinds {
                if !derived.0.contains_key(kind) {
                    let bytes = derived.compute(msg, *kind);
                    learned.push((row.meta.content_id, *kind, bytes));
                }
            }
        }
        // RFC 3516 §4.2: a part whose encoding we cannot undo
        // gets no BINARY data; the command ends NO [UNKNOWN-CTE].
        if let Some(content) = &content
            && binary_parts(items).any(|part| {
                matches!(
                    content.msg().binary(&part),
                    Err(mime::BinaryError::UnknownCte(_))
                )
            })
        {
            done.unknown_cte = true;
            continue;
        }
        render(row, content.as_ref(), &derived, items, *uid, *extra, out);
    }
    // A cache that cannot be written only costs a parse next time.
    if !learned.is_empty()
        && let Err(e) = account.store_derived(&learned)
    {
        tracing::warn!(error = %e, "could not cache message views");
    }
    Ok(done)
}
