//! RFC 3501 §6.4.7 COPY, RFC 6851 MOVE, and their UID forms, with RFC 4315
//! COPYUID.

use cove_store::{MailboxName, Uid};
use imap_codec::imap_types::sequence::SequenceSet;

use super::fetch::{resolve, seq_set_in_range};
use super::mailboxes::outcome_for;
use super::session::{Outcome, Session, State};

/// `1:3,7` for COPYUID.
fn uid_set(uids: &[Uid]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end + 1 {
            i += 1;
            end = uids[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}:{end}")
        });
        i += 1;
    }
    out.join(",")
}

impl Session {
    pub async fn copy_or_move(
        &mut self,
        set: SequenceSet,
        target: MailboxName,
        uid: bool,
        is_move: bool,
    ) -> Outcome {
        let quota = self.quota();
        let State::Selected(a, view) = &self.state else {
            return Outcome::Bad("No mailbox selected".into());
        };
        if is_move && view.read_only {
            return Outcome::No("[READ-ONLY] Mailbox is read-only".into());
        }
        if !uid && !seq_set_in_range(view, &set) {
            return Outcome::Bad("Message sequence number out of range".into());
        }
        let uids: Vec<Uid> = resolve(view, &set, uid)
            .into_iter()
            .map(|i| view.messages[i].uid)
            .collect();
        let account = a.account.clone();
        let from = view.mailbox.guid;
        let done = self
            .blocking(move || {
                let to = match account.mailbox(target.as_str()) {
                    Ok(mb) => mb,
                    Err(cove_store::Error::NotFound(_)) => return Ok(None),
                    Err(e) => return Err(e),
                };
                if is_move {
                    account.move_messages(&from, &uids, &to.guid).map(Some)
                } else {
                    account
                        .copy_messages(&from, &uids, &to.guid, Some(quota))
                        .map(Some)
                }
            })
            .await;
        let transfer = match done {
            Ok(Some(t)) => t,
            Ok(None) => return Outcome::No("[TRYCREATE] No such mailbox".into()),
            Err(e) => return outcome_for(&e),
        };
        let (src, dst): (Vec<Uid>, Vec<Uid>) = transfer.pairs.iter().copied().unzip();
        let code = if src.is_empty() {
            String::new()
        } else {
            format!(
                "[COPYUID {} {} {}] ",
                transfer.uidvalidity,
                uid_set(&src),
                uid_set(&dst)
            )
        };
        if is_move {
            // RFC 6851 §4.3: COPYUID comes in an untagged OK before the
            // EXPUNGEs, then the tagged OK.
            if !code.is_empty() {
                self.untagged(&format!("OK {}Moved", code));
            }
            if let State::Selected(_, view) = &mut self.state {
                for uid in &src {
                    for seq in view.remove_own(&[*uid]) {
                        self.out
                            .extend_from_slice(format!("* {seq} EXPUNGE\r\n").as_bytes());
                    }
                }
            }
            self.announce(true).await;
            Outcome::Ok("MOVE completed".into())
        } else {
            self.announce(false).await;
            Outcome::Ok(format!("{code}COPY completed"))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn uid_sets() {
        assert_eq!(super::uid_set(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
        assert_eq!(super::uid_set(&[]), "");
    }
}
