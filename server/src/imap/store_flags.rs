//! RFC 3501 §6.4.6 STORE and UID STORE (FLAGS, +FLAGS, -FLAGS, .SILENT),
//! and the flag changes FETCH makes (its implicit \Seen).

use cove_store::{FlagOp, Flags, Uid};
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

// RFC 3501 §6.4.6 STORE, §6.4.8 UID STORE.
pub async fn store(conn: &mut Connection, user: &Authed, view: &mut View, store: Store) -> Outcome {
    if view.read_only {
        return Outcome::no(Code::ReadOnly, "Mailbox is read-only");
    }
    if !store.uid && !view.seq_set_in_range(&store.set) {
        return Outcome::bad("Message sequence number out of range");
    }
    let uids = view.uids(&store.set, store.uid);
    let (system, keywords) = split_flags(&store.flags);
    let change = FlagChange {
        kind: store.kind,
        flags: system,
        keywords,
    };
    // STORE answers with FETCH FLAGS (and UID), .SILENT with nothing.
    let silent = matches!(store.response, StoreResponse::Silent);
    if let Err(refused) = apply_flag_change(conn, user, view, &uids, change, None, silent).await {
        return refused;
    }
    Outcome::ok("STORE completed")
}

/// Change flags of messages of the selected mailbox and update the view;
/// unless `silent`, write `* n FETCH (UID u FLAGS ...)` for each.
pub async fn apply_flag_change(
    conn: &mut Connection,
    user: &Authed,
    view: &mut View,
    uids: &[Uid],
    change: FlagChange,
    unchanged_since: Option<u64>,
    silent: bool,
) -> Result<(), Outcome> {
    let account = user.account();
    let guid = view.mailbox.guid;
    let uids = uids.to_vec();
    let op = change.op();
    let result = user
        .blocking(move || account.store_flags(&guid, &uids, op, unchanged_since))
        .await
        .map_err(|e| conn.refuse(&e))?;
    for (uid, flags, keywords, modseq) in result.updated {
        view.update_own(uid, flags, keywords.clone(), modseq);
        if !silent && let Some(seq) = view.seq_of(uid) {
            let list = response::flag_list(flags, &keywords, view.recent.contains(&uid));
            conn.out.extend_from_slice(
                format!("* {seq} FETCH (UID {uid} FLAGS {list})\r\n").as_bytes(),
            );
        }
    }
    Ok(())
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
