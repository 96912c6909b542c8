//! RFC 5256 SORT, UID SORT, THREAD and UID THREAD (with RFC 5957
//! SORT=DISPLAY keys): the messages the search criteria select (the SEARCH
//! matcher, search.rs), ordered or threaded by the pure engine in `sort/`.
//!
//! The engine reads one [`MessageKeys`] per message. Its header-derived
//! part is cached by content id (`DerivedKind::ImapSortKeys`): a message's
//! header is parsed once per content, at the first SORT or THREAD that
//! needs it, and never again. Everything runs on the blocking pool.

use cove_store::{Account, DerivedKind};
use imap_codec::imap_types::core::Vec1;
use imap_codec::imap_types::search::SearchKey;

use super::connection::{Authed, Connection};
use super::esearch::{self, SearchReturn};
use super::outcome::Outcome;
use super::search::{Matcher, header_block};
use super::sort::{self, Algorithm, MessageKeys, SortCriterion};
use super::view::{View, ViewMessage};

const SORT_KEYS_KIND: DerivedKind = DerivedKind::ImapSortKeys;

/// The keys of the messages found, in mailbox order, each with the number
/// the response names it by (its UID, or its sequence number) in
/// [`MessageKeys::uid`]. Without `headers`, only the index's keys are
/// filled in (SORT by ARRIVAL and SIZE reads no header).
fn keys_of(
    account: &Account,
    mailbox: &cove_store::MailboxInfo,
    found: Vec<(usize, ViewMessage)>,
    uid: bool,
    headers: bool,
) -> cove_store::Result<Vec<MessageKeys>> {
    let asked: Vec<(cove_store::ContentId, DerivedKind)> = found
        .iter()
        .filter(|_| headers)
        .map(|(_, m)| (m.content_id, SORT_KEYS_KIND))
        .collect();
    let mut cached = account.derived(&asked)?.into_iter();
    let mut learned = Vec::new();
    let mut keys = Vec::with_capacity(found.len());
    for (seq, m) in found {
        let cached = cached.next().flatten();
        let mut k = match cached.as_deref().and_then(sort::decode_keys) {
            Some(k) => k,
            None if !headers => MessageKeys::default(),
            None => {
                // The file may have been renamed (flags) since the view was
                // read: look it up again. A message gone since sorts as one
                // without header fields.
                let raw = match account.message(&mailbox.guid, m.uid)? {
                    Some(cur) => account.read_message(mailbox, &cur).ok(),
                    None => None,
                };
                match raw {
                    Some(raw) => {
                        let k = sort::header_keys(header_block(&raw));
                        learned.push((m.content_id, SORT_KEYS_KIND, sort::encode_keys(&k)));
                        k
                    }
                    None => MessageKeys::default(),
                }
            }
        };
        k.uid = if uid { m.uid } else { seq as u32 };
        k.internal_date = m.internal_date;
        k.size = m.size;
        keys.push(k);
    }
    // A cache that cannot be written only costs a parse next time.
    if let Err(e) = account.store_derived(&learned) {
        tracing::warn!(error = %e, "could not cache sort keys");
    }
    Ok(keys)
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
    answer: impl FnOnce(&[MessageKeys]) -> T + Send + 'static,
) -> cove_store::Result<(T, Option<u64>)> {
    let matcher = Matcher::new(conn, view, criteria.as_ref());
    let with_modseq = matcher.with_modseq;
    let account = user.account();
    let mailbox = view.mailbox.clone();
    user.blocking(move || {
        let found = matcher.run(&account)?;
        let highest = found.iter().map(|(_, m)| m.modseq).max();
        let keys = keys_of(&account, &mailbox, found, uid, headers)?;
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
            let mut line: String = "SORT".into();
            for n in numbers {
                line.push_str(&format!(" {n}"));
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
