//! RFC 3501 §6.4.2 CLOSE and RFC 3691 UNSELECT. The session leaves the
//! selected state when they succeed (session.rs).

use cove_store::{Flags, Uid};

use super::connection::{Authed, Connection};
use super::outcome::Outcome;
use super::view::View;

// RFC 3501 §6.4.2 CLOSE (expunges \Deleted messages silently unless the
// mailbox is read-only), RFC 3691 §2 UNSELECT (does not).
pub async fn close(conn: &mut Connection, user: &Authed, view: &View, expunge: bool) -> Outcome {
    if expunge && !view.read_only {
        let account = user.account();
        let guid = view.mailbox.guid;
        let deleted: Vec<Uid> = view
            .messages
            .iter()
            .filter(|m| m.flags.contains(Flags::DELETED))
            .map(|m| m.uid)
            .collect();
        if !deleted.is_empty()
            && let Err(e) = user
                .blocking(move || account.expunge(&guid, &deleted))
                .await
        {
            return conn.refuse(&e);
        }
    }
    Outcome::ok(if expunge {
        "CLOSE completed"
    } else {
        "UNSELECT completed"
    })
}
