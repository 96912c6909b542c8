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

use std::borrow::Borrow;
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
use super::sort_order::{OrderKey, SortOrders};
use super::view::{Messages, SnapshotKey, View, ViewMessage};

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
/// the index's derived cache, then the message (`None`: a message gone
/// since the view was read).
fn header_keys_of<M: Borrow<ViewMessage>>(
    account: &Account,
    mailbox: &cove_store::MailboxInfo,
    memory: &SortKeyCache,
    found: &[(usize, M)],
) -> cove_store::Result<Vec<Option<Arc<SortKeys>>>> {
    let ids: Vec<ContentId> = found.iter().map(|(_, m)| m.borrow().content_id).collect();
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
            let m = found[i].1.borrow();
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
    Ok(keys)
}

/// The candidates of the messages found, in mailbox order, each with the
/// number the response names it by (its UID, or its sequence number) in
/// [`Candidate::uid`]. Without `headers`, only the index's keys are filled
/// in (SORT by ARRIVAL and SIZE reads no header). `None` for a message
/// whose keys could not be read (gone since the view was read).
fn candidates_of<M: Borrow<ViewMessage>>(
    f: &Found<'_>,
    found: &[(usize, M)],
    uid: bool,
    headers: bool,
) -> cove_store::Result<Vec<Option<Candidate>>> {
    let header = if headers {
        header_keys_of(f.account, f.mailbox, f.memory, found)?
    } else {
        Vec::new()
    };
    let none = Arc::<SortKeys>::default();
    Ok(found
        .iter()
        .enumerate()
        .map(|(i, (seq, m))| {
            let keys = match header.get(i) {
                Some(k) => k.clone()?,
                None => none.clone(),
            };
            Some(candidate(*seq, m.borrow(), uid, keys))
        })
        .collect())
}

/// A message's candidate, named by its UID or its sequence number `seq`.
fn candidate(seq: usize, m: &ViewMessage, uid: bool, keys: Arc<SortKeys>) -> Candidate {
    Candidate {
        uid: if uid { m.uid } else { seq as u32 },
        internal_date: m.internal_date,
        size: m.size,
        keys,
    }
}

/// [`candidates_of`], a message whose keys could not be read sorting as
/// one without header fields.
fn all_candidates_of(
    f: &Found<'_>,
    found: &[(usize, ViewMessage)],
    uid: bool,
    headers: bool,
) -> cove_store::Result<Vec<Candidate>> {
    let candidates = candidates_of(f, found, uid, headers)?;
    Ok(candidates
        .into_iter()
        .zip(found)
        .map(|(c, (seq, m))| c.unwrap_or_else(|| candidate(*seq, m, uid, Arc::default())))
        .collect())
}

/// What SORT answers for the messages `found` (of the view's `all`), in
/// order: a walk over the mailbox's kept order ([`SortOrders`]), brought
/// up to `all` first (expunged messages dropped, new ones merged in: only
/// their keys are read), or made now and kept when the search found at
/// least half of the mailbox; a smaller part of a mailbox with no kept
/// order is sorted alone.
fn sorted_numbers(
    f: &Found<'_>,
    criteria: &[SortCriterion],
    uid: bool,
) -> cove_store::Result<Vec<u32>> {
    let Found {
        account,
        mailbox,
        orders,
        all,
        found,
        ..
    } = *f;
    let headers = needs_headers(criteria);
    let key = OrderKey {
        mailbox: SnapshotKey {
            email: account.email().to_string(),
            mailbox: mailbox.guid,
            uidvalidity: mailbox.uidvalidity,
        },
        criteria: criteria.to_vec(),
    };
    let kept = orders.take(&key);
    if kept.is_some() || found.len() * 2 >= all.len() {
        let mut order = kept.unwrap_or_default();
        let now = all.iter().map(|m| (m.uid, m.content_id));
        let synced = order.sync(now, criteria, |at| {
            let arrived: Vec<(usize, &ViewMessage)> =
                at.iter().map(|&i| (i + 1, &all[i])).collect();
            let candidates = candidates_of(f, &arrived, true, headers)?;
            Ok::<_, cove_store::Error>(
                candidates
                    .into_iter()
                    .zip(&arrived)
                    .map(|(c, (_, m))| Some((m.content_id, c?)))
                    .collect(),
            )
        })?;
        if synced {
            let numbers = if uid && found.len() == order.len() {
                // The whole mailbox (the order holds it all, now).
                order.sorted().iter().map(|c| c.uid).collect()
            } else {
                let uids: Vec<u32> = found.iter().map(|(_, m)| m.uid).collect();
                order
                    .sorted()
                    .iter()
                    .filter_map(|c| {
                        let i = uids.binary_search(&c.uid).ok()?;
                        Some(if uid { c.uid } else { found[i].0 as u32 })
                    })
                    .collect()
            };
            orders.put(key, order);
            return Ok(numbers);
        }
        // Some keys could not be read: the order stays as it was.
        orders.put(key, order);
    }
    let candidates = all_candidates_of(f, found, uid, headers)?;
    Ok(sort::sort(&candidates, criteria)
        .into_iter()
        .map(|i| candidates[i].uid)
        .collect())
}

/// Whether `criteria` compare header fields (ARRIVAL and SIZE are the
/// index's).
fn needs_headers(criteria: &[SortCriterion]) -> bool {
    criteria
        .iter()
        .any(|c| !matches!(c.key, sort::SortKey::Arrival | sort::SortKey::Size))
}

/// What a command's answer is made from, on the blocking pool: the
/// messages found, and what to read their keys with.
struct Found<'a> {
    account: &'a Account,
    mailbox: &'a cove_store::MailboxInfo,
    memory: &'a SortKeyCache,
    orders: &'a SortOrders,
    /// The view's messages.
    all: &'a Messages,
    /// The messages the search found: sequence number and message.
    found: &'a [(usize, ViewMessage)],
}

/// Run the search and give what it found to `answer` (on the blocking
/// pool): its result, and the highest modseq found when the criteria have
/// a MODSEQ key (RFC 7162 §3.1.5).
async fn answer_with<T: Send + 'static>(
    conn: &mut Connection,
    user: &Authed,
    view: &mut View,
    criteria: Vec1<SearchKey<'static>>,
    answer: impl FnOnce(Found<'_>) -> cove_store::Result<T> + Send + 'static,
) -> cove_store::Result<(T, Option<u64>)> {
    let matcher = Matcher::new(conn, view, criteria.as_ref());
    let with_modseq = matcher.with_modseq;
    let account = user.account();
    let mailbox = view.mailbox.clone();
    let all = view.messages.clone();
    let memory = conn.ctx.sort_keys.clone();
    let orders = conn.ctx.sort_orders.clone();
    user.blocking(move || {
        let found = matcher.run(&account)?;
        let highest = found.iter().map(|(_, m)| m.modseq).max();
        let answered = answer(Found {
            account: &account,
            mailbox: &mailbox,
            memory: &memory,
            orders: &orders,
            all: &all,
            found: &found,
        })?;
        Ok((answered, highest.filter(|_| with_modseq)))
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
    let answered = answer_with(conn, user, view, criteria, move |f| {
        sorted_numbers(&f, &order, uid)
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
    let answered = answer_with(conn, user, view, criteria, move |f| {
        let keys = all_candidates_of(&f, f.found, uid, true)?;
        let threads = sort::thread(&keys, algorithm);
        Ok(sort::write_threads(&threads, |i| keys[i].uid))
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
