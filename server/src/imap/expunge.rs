//! RFC 3501 §6.4.3 EXPUNGE and RFC 4315 §2.1 UID EXPUNGE.

use std::collections::HashSet;

use cove_store::{Flags, Uid};
use imap_codec::imap_types::sequence::SequenceSet;

use super::condstore::Expunges;
use super::connection::{Authed, Connection};
use super::outcome::{Code, Outcome};
use super::view::View;

// RFC 3501 §6.4.3 EXPUNGE; RFC 4315 §2.1 UID EXPUNGE (only the \Deleted
// messages of the set).
pub async fn expunge(
    conn: &mut Connection,
    user: &Authed,
    view: &mut View,
    only: Option<SequenceSet>,
) -> Outcome {
    if view.read_only {
        return Outcome::no(Code::ReadOnly, "Mailbox is read-only");
    }
    let allowed: Option<HashSet<Uid>> = only.map(|set| view.uids(&set, true).into_iter().collect());
    let doomed: Vec<Uid> = view
        .messages
        .iter()
        .filter(|m| {
            m.flags.contains(Flags::DELETED) && allowed.as_ref().is_none_or(|s| s.contains(&m.uid))
        })
        .map(|m| m.uid)
        .collect();
    let account = user.account();
    let guid = view.mailbox.guid;
    let gone = match user.blocking(move || account.expunge(&guid, &doomed)).await {
        Ok(g) => g,
        Err(e) => return conn.refuse(&e),
    };
    let mut expunges = Expunges::new(conn.enabled);
    for uid in gone {
        for seq in view.remove_own(&[uid]) {
            expunges.gone(seq, uid, &mut conn.out);
        }
    }
    expunges.finish(&mut conn.out);
    Outcome::ok("EXPUNGE completed")
}
