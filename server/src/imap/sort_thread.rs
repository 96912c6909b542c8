//! RFC 5256 SORT, UID SORT, THREAD and UID THREAD (with RFC 5957
//! SORT=DISPLAY keys): the messages the search criteria select (the SEARCH
//! matcher, search.rs), ordered or threaded by the pure engine in `sort/`.
//!
//! The engine reads one [`Candidate`] per message: the index's keys and
//! the message's prepared header keys ([`SortKeys`], ready to compare).
//! Those come, in order, from the server's memory (`sort_cache.rs`), the
//! index's derived cache (`DerivedKind::ImapSortKeys`, made when the
//! message arrived: `crate::derive`), or the message itself (then cached
//! in both). So a repeated SORT or THREAD reads no message and no index
//! entry. Everything runs on the blocking pool.

use std::fmt::Write;
use std::sync::Arc;

use cove_store::{Account, ContentId, DerivedKind};
use imap_codec::imap_types::core::Vec1;
use imap_codec::imap_types::search::SearchKey;

use super::connection::{Authed, Connection};
use super::esearch::{self, SearchReturn};
use super::outcome::Outcome;
use super::search::{Matcher, current_bytes, header_block};
use super::sort::{self, Algorithm, Candidate, SortCriterion, SortKeys};
use super::sort_cache::SortKeyCache;
use super::view::{View, ViewMessage};

const SORT_KEYS_KIND: DerivedKind = DerivedKind::ImapSortKeys;

/// The cached sort keys of a message (the background indexer makes them
/// on arrival: crate::derive).
pub(crate) fn sort_keys_view(raw: &[u8]) -> (DerivedKind, Vec<u8>) {
    (SORT_KEYS_KIND, sort::encode_keys(&prepare(raw)))
}

/// A message's prepared sort keys, from its header block.
fn prepare(raw: &[u8]) -> SortKeys {
    SortKeys::prepare(&sort::header_keys(header_block(raw)))
}

/// The prepared keys of each message found, in order: from `memory`, then
/// the index's derived cache, then the message (a message gone since the
/// view was read sorts as one without header fields).
fn header_keys_of(
    account: &Account,
    mailbox: &cove_store::MailboxInfo,
    memory: &SortKeyCache,
    found: &[(usize, ViewMessage)],
) -> cove_store::Result<Vec<Arc<SortKeys>>> {
    let ids: Vec<ContentId> = found.iter().map(|(_, m)| m.content_id).collect();
    let keys = memory.get_or_load(&ids, |missing| {
        let asked: Vec<(ContentId, DerivedKind)> =
            missing.iter().map(|&i| (ids[i], SORT_KEYS_KIND)).collect();
        let cached = account.derived_with(&asked, sort::decode_keys)?;
        let mut learned = Vec::new();
        let mut loaded = Vec::with_capacity(missing.len());
        for (&i, cached) in missing.iter().zip(cached) {
            if let Some(k) = cached {
                loaded.push(Some(k));
                continue;
            }
            let m = &found[i].1;
            let Some(raw) = current_bytes(account, mailbox, m.uid)? else {
                loaded.push(None);
                continue;
            };
            let k = prepare(&raw);
            learned.push((m.content_id, SORT_KEYS_KIND, sort::encode_keys(&k)));
            loaded.push(Some(k));
        }
        // A cache that cannot be written only costs a parse next time.
        if let Err(e) = account.store_derived(&learned) {
            tracing::warn!(error = %e, "could not cache sort keys");
        }
        Ok::<_, cove_store::Error>(loaded)
    })?;
    Ok(keys.into_iter().map(Option::unwrap_or_default).collect())
}

/// The candidates of the messages found, in mailbox order, each with the
/// number the response names it by (its UID, or its sequence number) in
/// [`Candidate::uid`]. Without `headers`, only the index's keys are filled
/// in (SORT by ARRIVAL and SIZE reads no header).
fn candidates_of(
    account: &Account,
    mailbox: &cove_store::MailboxInfo,
    memory: &SortKeyCache,
    found: Vec<(usize, ViewMessage)>,
    uid: bool,
    headers: bool,
) -> cove_store::Result<Vec<Candidate>> {
    let header = if headers {
        header_keys_of(account, mailbox, memory, &found)?
    } else {
        Vec::new()
    };
    let none = Arc::<SortKeys>::default();
    Ok(found
        .into_iter()
        .enumerate()
        .map(|(i, (seq, m))| Candidate {
            uid: if uid { m.uid } else { seq as u32 },
            internal_date: m.internal_date,
            size: m.size,
            keys: header.get(i).cloned().unwrap_or_else(|| none.clone()),
        })
        .collect())
}

/// Run the search, read the keys of what it found (with the header's when
/// `headers`) and give them to `answer` (on the blocking pool): its
/// result, and the highest modseq found when the criteria have a MODSEQ
/// key (RFC 7162 §3.1.5).
async fn answer_with<T: Send + 'static>(
    conn: &mut Connection,
    user: &Authed,
    view: &mut View,
    criteria: Vec1<SearchKey<'static>>,
    uid: bool,
    headers: bool,
    answer: impl FnOnce(&[Candidate]) -> T + Send + 'static,
) -> cove_store::Result<(T, Option<u64>)> {
    let matcher = Matcher::new(conn, view, criteria.as_ref());
    let with_modseq = matcher.with_modseq;
    let account = user.account();
    let mailbox = view.mailbox.clone();
    let memory = conn.ctx.sort_keys.clone();
    user.blocking(move || {
        let found = matcher.run(&account)?;
        let highest = found.iter().map(|(_, m)| m.modseq).max();
        let keys = candidates_of(&account, &mailbox, &memory, found, uid, headers)?;
        Ok((answer(&keys), highest.filter(|_| with_modseq)))
    })
    .await
}

// RFC 5256 §3 SORT and UID SORT; RFC 5267 §3 ESORT (SORT RETURN).
pub async fn sort(
    conn: &mut Connection,
    user: &Authed,
    view: &mut View,
    order: Vec<SortCriterion>,
    criteria: Vec1<SearchKey<'static>>,
    uid: bool,
    ret: Option<SearchReturn>,
) -> Outcome {
    let headers = order
        .iter()
        .any(|c| !matches!(c.key, sort::SortKey::Arrival | sort::SortKey::Size));
    let answered = answer_with(conn, user, view, criteria, uid, headers, move |keys| {
        sort::sort(keys, &order)
            .into_iter()
            .map(|i| keys[i].uid)
            .collect::<Vec<u32>>()
    })
    .await;
    match answered {
        Ok((numbers, highest)) if let Some(ret) = &ret => {
            // The highest modseq stands for every hit's: ESEARCH writes
            // their maximum.
            let hits: Vec<(usize, u64)> = numbers
                .iter()
                .map(|n| (*n as usize, highest.unwrap_or(0)))
                .collect();
            esearch::write(&mut conn.out, ret, uid, &hits, highest.is_some());
            Outcome::ok("SORT completed")
        }
        Ok((numbers, highest)) => {
            let mut line = String::with_capacity(5 + numbers.len() * 7);
            line.push_str("SORT");
            for n in numbers {
                let _ = write!(line, " {n}");
            }
            // RFC 7162 §3.1.5: with a MODSEQ key, the highest modseq of
            // the messages found.
            if let Some(m) = highest {
                line.push_str(&format!(" (MODSEQ {m})"));
            }
            conn.untagged(&line);
            Outcome::ok("SORT completed")
        }
        Err(e) => conn.refuse(&e),
    }
}

// RFC 5256 §3 THREAD and UID THREAD.
pub async fn thread(
    conn: &mut Connection,
    user: &Authed,
    view: &mut View,
    algorithm: Algorithm,
    criteria: Vec1<SearchKey<'static>>,
    uid: bool,
) -> Outcome {
    let answered = answer_with(conn, user, view, criteria, uid, true, move |keys| {
        let threads = sort::thread(keys, algorithm);
        sort::write_threads(&threads, |i| keys[i].uid)
    })
    .await;
    match answered {
        Ok((threads, _)) => {
            // RFC 5256 §4: `THREAD` alone when nothing matched.
            let sep = if threads.is_empty() { "" } else { " " };
            conn.untagged(&format!("THREAD{sep}{threads}"));
            Outcome::ok("THREAD completed")
        }
        Err(e) => conn.refuse(&e),
    }
}
