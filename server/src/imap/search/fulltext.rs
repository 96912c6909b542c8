//! SEARCH BODY and TEXT through the account's full-text index
//! (`cove_store::FullText`): the index names the messages that may match,
//! and only those are read and matched exactly, so the answer is the one a
//! scan of every message gives.
//!
//! A search key narrows when every message it can match must contain one of
//! its needles: `BODY x` and `TEXT x` (x of three characters or more), an
//! AND with at least one such key, an OR of two such keys. `NOT BODY x`, an
//! OR with any other key and short needles do not narrow, and the search
//! reads every message as before. The index is brought up to date (lazily:
//! only what was added since the last search) just before it is asked.

use std::collections::HashSet;

use cove_store::{Account, ContentId, FullText, IndexedText, MailboxInfo, TextField, can_narrow};

use super::{Key, content_of};

/// Names what [`extract`] puts in the index: bump it whenever `content_of`
/// or `extract` changes what the matcher reads, and every user's index is
/// built again.
/// 2: group names in address fields.
pub(crate) const EXTRACTOR_VERSION: u32 = 2;

/// The text the matcher reads, as the index stores it.
pub(crate) fn extract(raw: &[u8]) -> IndexedText {
    let c = content_of(raw);
    let mut header = String::new();
    for (_, v) in c.fields() {
        header.push_str(v);
        header.push('\n');
    }
    IndexedText {
        body: c.body,
        header,
    }
}

/// Whether the index can narrow `k` (see the module comment).
fn narrows(k: &Key) -> bool {
    match k {
        Key::Body(n) | Key::Text(n) => can_narrow(n),
        Key::And(v) => v.iter().any(narrows),
        Key::Or(a, b) => narrows(a) && narrows(b),
        _ => false,
    }
}

/// The contents a message must have to match `k`, or `None` for "any".
fn candidates(ft: &FullText, k: &Key) -> cove_store::Result<Option<HashSet<ContentId>>> {
    Ok(match k {
        Key::Body(n) => ft.candidates(n, TextField::Body)?,
        Key::Text(n) => ft.candidates(n, TextField::BodyOrHeader)?,
        Key::And(v) => {
            let mut out: Option<HashSet<ContentId>> = None;
            for k in v {
                if let Some(set) = candidates(ft, k)? {
                    out = Some(match out {
                        None => set,
                        Some(prev) => prev.intersection(&set).copied().collect(),
                    });
                }
            }
            out
        }
        Key::Or(a, b) => match (candidates(ft, a)?, candidates(ft, b)?) {
            (Some(mut a), Some(b)) => {
                a.extend(b);
                Some(a)
            }
            _ => None,
        },
        _ => None,
    })
}

/// The contents that may match `key` in `mailbox`, after indexing what is
/// new; `None` when the index cannot narrow this search (or failed: the
/// search then reads every message, as it would without an index).
pub(super) fn narrow(
    account: &Account,
    mailbox: &MailboxInfo,
    key: &Key,
) -> Option<HashSet<ContentId>> {
    if !narrows(key) {
        return None;
    }
    let found = (|| {
        let mut ft = FullText::open(account, EXTRACTOR_VERSION)?;
        let started = std::time::Instant::now();
        let done = ft.refresh(account, mailbox, &extract)?;
        if done.indexed > 0 || done.unreadable > 0 {
            tracing::info!(
                user = %account.email(),
                mailbox = %mailbox.name,
                looked_at = done.looked_at,
                indexed = done.indexed,
                unreadable = done.unreadable,
                ms = started.elapsed().as_millis() as u64,
                "full-text index updated"
            );
        }
        candidates(&ft, key)
    })();
    match found {
        Ok(set) => set,
        Err(e) => {
            tracing::warn!(user = %account.email(), error = %e, "full-text index unusable; searching every message");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(s: &str) -> Key {
        Key::Body(s.into())
    }

    #[test]
    fn which_keys_narrow() {
        assert!(narrows(&body("kumquat")));
        assert!(narrows(&Key::Text("abc".into())));
        assert!(!narrows(&body("ab")), "no trigram in two characters");
        assert!(!narrows(&Key::Not(Box::new(body("kumquat")))));
        assert!(narrows(&Key::And(vec![Key::All, body("kumquat")])));
        assert!(!narrows(&Key::And(vec![Key::All, body("ku")])));
        assert!(narrows(&Key::Or(
            Box::new(body("kumquat")),
            Box::new(Key::Text("marzipan".into()))
        )));
        assert!(!narrows(&Key::Or(
            Box::new(body("kumquat")),
            Box::new(Key::All)
        )));
    }

    #[test]
    fn extract_reads_what_the_matcher_reads() {
        let raw = b"Subject: =?utf-8?q?Caf=C3=A9?= Menu\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nKUM=\r\nQUAT pie\r\n";
        let t = extract(raw);
        assert!(t.body.contains("kumquat pie"), "{:?}", t.body);
        assert!(t.header.contains("café menu"), "{:?}", t.header);
    }
}
