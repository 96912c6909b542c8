//! RFC 3501 §6.3.4 DELETE and §6.3.5 RENAME.

use cove_store::MailboxName;

use super::connection::{Authed, Connection};
use super::outcome::{Code, Outcome};

// RFC 3501 §6.3.4 DELETE (the session has left the selected state first
// if this was the selected mailbox).
pub async fn delete(conn: &mut Connection, user: &Authed, name: MailboxName) -> Outcome {
    if name.is_inbox() {
        return Outcome::no(Code::Cannot, "INBOX cannot be deleted");
    }
    let account = user.account();
    match user
        .blocking(move || account.delete_mailbox(name.as_str()))
        .await
    {
        Ok(()) => Outcome::ok("DELETE completed"),
        Err(e) => conn.refuse(&e),
    }
}

// RFC 3501 §6.3.5 RENAME.
pub async fn rename(
    conn: &mut Connection,
    user: &Authed,
    from: MailboxName,
    to: MailboxName,
) -> Outcome {
    let account = user.account();
    match user
        .blocking(move || account.rename_mailbox(from.as_str(), to.as_str()))
        .await
    {
        Ok(()) => Outcome::ok("RENAME completed"),
        Err(e) => conn.refuse(&e),
    }
}
