//! RFC 3501 §6.4.7 COPY, RFC 6851 MOVE, and their UID forms, with RFC 4315
//! COPYUID.

use cove_store::{MailboxName, Uid};
use imap_codec::imap_types::sequence::SequenceSet;

use super::condstore::Expunges;
use super::connection::{Authed, Connection};
use super::outcome::{Code, Outcome, untagged_ok};
use super::response;
use super::view::View;

// RFC 3501 §6.4.7 COPY, RFC 6851 §3.1 MOVE, and their UID forms (§6.4.8),
// with RFC 4315 §3 COPYUID.
pub async fn copy_or_move(
    conn: &mut Connection,
    user: &Authed,
    view: &mut View,
    set: SequenceSet,
    target: MailboxName,
    uid: bool,
    is_move: bool,
) -> Outcome {
    if is_move && view.read_only {
        return Outcome::no(Code::ReadOnly, "Mailbox is read-only");
    }
    if !uid && !view.seq_set_in_range(&set) {
        return Outcome::bad("Message sequence number out of range");
    }
    let uids = view.uids(&set, uid);
    let account = user.account();
    let quota = user.quota();
    let from = view.mailbox.guid;
    let done = user
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
        Ok(None) => return Outcome::no(Code::TryCreate, "No such mailbox"),
        Err(e) => return conn.refuse(&e),
    };
    let (src, dst): (Vec<Uid>, Vec<Uid>) = transfer.pairs.iter().copied().unzip();
    let code = (!src.is_empty()).then(|| Code::CopyUid {
        uidvalidity: transfer.uidvalidity,
        from: response::number_set(&src),
        to: response::number_set(&dst),
    });
    if !is_move {
        return match code {
            Some(code) => Outcome::ok_with(code, "COPY completed"),
            None => Outcome::ok("COPY completed"),
        };
    }
    // RFC 6851 §4.3: COPYUID comes in an untagged OK before the EXPUNGEs,
    // then the tagged OK.
    if let Some(code) = code {
        untagged_ok(code, "Moved", &mut conn.out);
    }
    let mut expunges = Expunges::new(conn.enabled);
    for uid in &src {
        for seq in view.remove_own(&[*uid]) {
            expunges.gone(seq, *uid, &mut conn.out);
        }
    }
    expunges.finish(&mut conn.out);
    Outcome::ok("MOVE completed")
}
