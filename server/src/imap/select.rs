//! RFC 3501 §6.3.1 SELECT and §6.3.2 EXAMINE.

use cove_store::{Flags, MailboxName};
use imap_codec::imap_types::command::SelectParameter;

use super::connection::{Authed, Connection};
use super::outcome::{Code, Outcome, untagged_ok};
use super::view::View;

/// The system flags every mailbox permits (RFC 3501 §2.3.2).
pub const SYSTEM_FLAGS: &str = "\\Answered \\Flagged \\Deleted \\Seen \\Draft";

// RFC 3501 §6.3.1 SELECT, §6.3.2 EXAMINE: open the view and describe it;
// the session enters the selected state with it.
pub async fn select(
    conn: &mut Connection,
    user: &Authed,
    name: MailboxName,
    read_only: bool,
    _parameters: Vec<SelectParameter>,
) -> Result<(Box<View>, Outcome), Outcome> {
    let account = user.account();
    let store = conn.ctx.store.clone();
    let opened = user
        .blocking(move || {
            let mb = account.mailbox(name.as_str())?;
            let watch = store.watcher().watch(&account);
            View::open(&account, mb, read_only, watch)
        })
        .await;
    let view = opened.map_err(|e| conn.refuse(&e))?;
    let mut keywords: Vec<&str> = view
        .messages
        .iter()
        .flat_map(|m| m.keywords.iter().map(String::as_str))
        .collect();
    keywords.sort_unstable();
    keywords.dedup();
    let extra: String = keywords.iter().map(|k| format!(" {k}")).collect();
    conn.untagged(&format!("FLAGS ({SYSTEM_FLAGS}{extra})"));
    if read_only {
        untagged_ok(
            Code::PermanentFlags(String::new()),
            "Read-only mailbox",
            &mut conn.out,
        );
    } else {
        untagged_ok(
            Code::PermanentFlags(format!("{SYSTEM_FLAGS}{extra} \\*")),
            "Flags permitted",
            &mut conn.out,
        );
    }
    conn.untagged(&format!("{} EXISTS", view.exists()));
    conn.untagged(&format!("{} RECENT", view.recent.len()));
    if let Some(i) = view
        .messages
        .iter()
        .position(|m| !m.flags.contains(Flags::SEEN))
    {
        untagged_ok(Code::Unseen(i + 1), "First unseen", &mut conn.out);
    }
    untagged_ok(
        Code::UidValidity(view.mailbox.uidvalidity),
        "UIDs valid",
        &mut conn.out,
    );
    untagged_ok(
        Code::UidNext(view.uid_next()),
        "Predicted next UID",
        &mut conn.out,
    );
    let outcome = if read_only {
        Outcome::ok_with(Code::ReadOnly, "EXAMINE completed")
    } else {
        Outcome::ok_with(Code::ReadWrite, "SELECT completed")
    };
    Ok((Box::new(view), outcome))
}
