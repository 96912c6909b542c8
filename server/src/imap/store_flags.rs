//! RFC 3501 §6.4.6 STORE and UID STORE (FLAGS, +FLAGS, -FLAGS, .SILENT).

use cove_store::{FlagOp, Flags, Uid};
use imap_codec::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_codec::imap_types::sequence::SequenceSet;

use super::fetch::{resolve, seq_set_in_range};
use super::mailboxes::{outcome_for, split_flags};
use super::response;
use super::session::{Outcome, Session, State};

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

impl Session {
    // RFC 3501 §6.4.6 STORE.
    pub async fn store(
        &mut self,
        set: SequenceSet,
        kind: StoreType,
        response: StoreResponse,
        flags: Vec<Flag<'static>>,
        uid: bool,
    ) -> Outcome {
        let State::Selected(_, view) = &self.state else {
            return Outcome::Bad("No mailbox selected".into());
        };
        if view.read_only {
            return Outcome::No("[READ-ONLY] Mailbox is read-only".into());
        }
        if !uid && !seq_set_in_range(view, &set) {
            return Outcome::Bad("Message sequence number out of range".into());
        }
        let uids: Vec<Uid> = resolve(view, &set, uid)
            .into_iter()
            .map(|i| view.messages[i].uid)
            .collect();
        let (system, keywords) = split_flags(&flags);
        let change = FlagChange {
            kind,
            flags: system,
            keywords,
        };
        let silent = matches!(response, StoreResponse::Silent);
        if let Err(o) = self.apply_flag_change(&uids, change, None, silent).await {
            return o;
        }
        // UID STORE .SILENT still owes nothing; STORE answers with FETCH
        // FLAGS (written by apply_flag_change) and UID when it was UID STORE.
        let _ = uid;
        self.announce(false).await;
        Outcome::Ok("STORE completed".into())
    }

    /// Change flags of messages of the selected mailbox and update the view;
    /// unless `silent`, write `* n FETCH (FLAGS ...)` for each.
    pub async fn apply_flag_change(
        &mut self,
        uids: &[Uid],
        change: FlagChange,
        unchanged_since: Option<u64>,
        silent: bool,
    ) -> Result<(), Outcome> {
        let State::Selected(a, view) = &self.state else {
            return Err(Outcome::Bad("No mailbox selected".into()));
        };
        let account = a.account.clone();
        let guid = view.mailbox.guid;
        let uids = uids.to_vec();
        let op = change.op();
        let result = self
            .blocking(move || account.store_flags(&guid, &uids, op, unchanged_since))
            .await;
        let result = match result {
            Ok(r) => r,
            Err(e) => return Err(outcome_for(&e)),
        };
        let State::Selected(_, view) = &mut self.state else {
            return Ok(());
        };
        for (uid, flags, keywords, modseq) in result.updated {
            view.update_own(uid, flags, keywords.clone(), modseq);
            if !silent && let Some(seq) = view.seq_of(uid) {
                let list = response::flag_list(flags, &keywords, view.recent.contains(&uid));
                self.out.extend_from_slice(
                    format!("* {seq} FETCH (UID {uid} FLAGS {list})\r\n").as_bytes(),
                );
            }
        }
        Ok(())
    }
}
