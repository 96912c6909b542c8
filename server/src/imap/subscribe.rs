//! RFC 3501 §6.3.6 SUBSCRIBE and §6.3.7 UNSUBSCRIBE.

use cove_store::MailboxName;

use super::connection::{Authed, Connection};
use super::outcome::Outcome;

// RFC 3501 §6.3.6 SUBSCRIBE, §6.3.7 UNSUBSCRIBE.
pub async fn subscribe(
    conn: &mut Connection,
    user: &Authed,
    name: MailboxName,
    on: bool,
) -> Outcome {
    let account = user.account();
    match user
        .blocking(move || account.set_subscribed(name.as_str(), on))
        .await
    {
        Ok(()) if on => Outcome::ok("SUBSCRIBE completed"),
        Ok(()) => Outcome::ok("UNSUBSCRIBE completed"),
        Err(e) => conn.refuse(&e),
    }
}
