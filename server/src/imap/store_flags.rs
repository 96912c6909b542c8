//! RFC 3501 §6.4.6 STORE and UID STORE (FLAGS, +FLAGS, -FLAGS, .SILENT),
//! with RFC 7162 UNCHANGEDSINCE, and the flag changes FETCH makes (its
//! implicit \Seen).

use cove_store::{FlagOp, Flags, Uid};
use imap_codec::imap_types::command::StoreModifier;
use imap_codec::imap_types::flag::{Flag, StoreResponse, StoreType};

use super::command::Store;
use super::connection::{Authed, Connection};
use super::outcome::{Code, Outcome};
use super::response;
use super::view::View;

/// A flag change to apply.
#[derive(Debug, Clone)]
pub struct FlagChange {
    pub kind: StoreType,
    pub flags: Flags,
    pub keywords: Vec<String>,
}

impl FlagChange {
    /// The implicit `\Seen` of FETCH BODY[] (RFC 3501 §6.4.5).
    pub fn add_seen() -> FlagChange {
        FlagChange {
            kind: StoreType::Add,
            flags: Flags::SEEN,
            keywords: Vec::new(),
        }
    }

    fn op(&self) -> FlagOp {
        match self.kind {
            StoreType::Replace => FlagOp::Replace(self.flags, self.keywords.clone()),
            StoreType::Add => FlagOp::Add(self.flags, self.keywords.clone()),
            StoreType::Remove => FlagOp::Remove(self.flags, self.keywords.clone()),
        }
    }
}

/// What a flag change tells the client of each message it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// `* n FETCH (UID u FLAGS (..))`, with MODSEQ once CONDSTORE is on.
    Flags,
    /// `* n FETCH (UID u MODSEQ (m))`: STORE .SILENT once CONDSTORE is
    /// on (RFC 7162 §3.1.3: the client's cache needs the new modseq).
    ModSeqOnly,
    /// Nothing (FETCH's implicit \Seen: the FETCH itself reports it).
    Nothing,
}

// RFC 3501 §6.4.6 STORE, §6.4.8 UID STORE; RFC 7162 §3.1.3 UNCHANGEDSINCE.
pub async fn store(conn: &mut Connection, user: &Authed, view: &mut View, store: Store) -> Outcome {
    if view.read_only {
        return Outcome::no(Code::ReadOnly, "Mailbox is read-only");
    }
    if !store.uid && !view.seq_set_in_range(&store.set) {
        return Outcome::bad("Message sequence number out of range");
    }
    let unchanged_since = store
        .modifiers
        .iter()
        .map(|m| match m {
            StoreModifier::UnchangedSince(v) => *v,
        })
        .next();
    if unchanged_since.is_some() {
        // RFC 7162 §3.1: a CONDSTORE enabling command.
        conn.enable_condstore(Some(view));
    }
    let uids = view.uids(&store.set, store.uid);
    let (system, keywords) = split_flags(&store.flags);
    let change = FlagChange {
        kind: store.kind,
        flags: system,
        keywords,
    };
    let report = match store.response {
        StoreResponse::Answer => Report::Flags,
        StoreResponse::Silent if conn.enabled.condstore => Report::ModSeqOnly,
        StoreResponse::Silent => Report::Nothing,
    };
    let modified =
        match apply_flag_change(conn, user, view, &uids, change, unchanged_since, report).await {
            Ok(m) => m,
            Err(refused) => return refused,
        };
    if modified.is_empty() {
        return Outcome::ok("STORE completed");
    }
    // RFC 7162 §3.1.3: the messages not stored, by UID for UID STORE and
    // by number for STORE.
    let numbers: Vec<u32> = if store.uid {
        modified
    } else {
        modified
            .iter()
            .filter_map(|u| view.seq_of(*u))
            .map(|s| s as u32)
            .collect()
    };
    Outcome::ok_with(
        Code::Modified(response::number_set(&numbers)),
        "Conditional STORE failed",
    )
}

/// Change flags of messages of the selected mailbox and update the view,
/// telling the client as `report` says. With `unchanged_since`, messages
/// changed after it are left alone; their UIDs are returned.
pub async fn apply_flag_change(
    conn: &mut Connection,
    user: &Authed,
    view: &mut View,
    uids: &[Uid],
    change: FlagChange,
    unchanged_since: Option<u64>,
    report: Report,
) -> Result<Vec<Uid>, Outcome> {
    let account = user.account();
    let guid = view.mailbox.guid;
    let uids = uids.to_vec();
    let op = change.op();
    let result = user
        .blocking(move || account.store_flags(&guid, &uids, op, unchanged_since))
        .await
        .map_err(|e| conn.refuse(&e))?;
    if report == Report::Flags {
        let shown = result.updated.iter().flat_map(|u| u.2.iter());
        view.announce_keywords(shown.map(String::as_str), &mut conn.out);
    }
    if report != Report::Nothing {
        for (uid, flags, keywords, modseq) in &result.updated {
            let Some(seq) = view.seq_of(*uid) else {
                continue;
            };
            let line = match report {
                Report::Nothing => continue,
                Report::ModSeqOnly => format!("* {seq} FETCH (UID {uid} MODSEQ ({modseq}))\r\n"),
                Report::Flags => {
                    let list = response::flag_list(*flags, keywords, view.recent.contains(uid));
                    let modseq = response::modseq_item(conn.enabled, *modseq);
                    format!("* {seq} FETCH (UID {uid} FLAGS {list}{modseq})\r\n")
                }
            };
            conn.out.extend_from_slice(line.as_bytes());
        }
    }
    view.update_own_many(result.updated, result.committed);
    Ok(result.modified)
}

/// System flags and keywords from a flag list.
pub fn split_flags(flags: &[Flag<'_>]) -> (Flags, Vec<String>) {
    let mut system = Flags::empty();
    let mut keywords = Vec::new();
    for f in flags {
        match f {
            Flag::Seen => system.insert(Flags::SEEN),
            Flag::Answered => system.insert(Flags::ANSWERED),
            Flag::Flagged => system.insert(Flags::FLAGGED),
            Flag::Deleted => system.insert(Flags::DELETED),
            Flag::Draft => system.insert(Flags::DRAFT),
            Flag::Keyword(k) => {
                let k = k.inner().to_string();
                if !keywords.iter().any(|x: &String| x.eq_ignore_ascii_case(&k)) {
                    keywords.push(k);
                }
            }
            Flag::Extension(_) => {}
        }
    }
    (system, keywords)
}
