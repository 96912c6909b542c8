//! RFC 3501 §6.3.10 STATUS (and RFC 8438 STATUS=SIZE's item, RFC 7162's
//! HIGHESTMODSEQ).

use cove_store::{MailboxInfo, MailboxName, MailboxStatus};
use imap_codec::imap_types::status::StatusDataItemName;

use super::connection::{Authed, Connection};
use super::outcome::Outcome;
use super::response;
use super::view::View;

// RFC 3501 §6.3.10 STATUS.
pub async fn status(
    conn: &mut Connection,
    user: &Authed,
    selected: Option<&View>,
    name: MailboxName,
    items: &[StatusDataItemName],
) -> Outcome {
    // RFC 7162 §3.1: STATUS HIGHESTMODSEQ enables CONDSTORE.
    if items.contains(&StatusDataItemName::HighestModSeq) {
        conn.enable_condstore(selected);
    }
    let account = user.account();
    let got = user
        .blocking(move || {
            let mb = account.mailbox(name.as_str())?;
            let st = account.status(&mb.guid)?;
            Ok((mb, st))
        })
        .await;
    let (mb, st): (MailboxInfo, MailboxStatus) = match got {
        Ok(x) => x,
        Err(e) => return conn.refuse(&e),
    };
    let parts = status_items(&mb, &st, items);
    let mut line = b"* STATUS ".to_vec();
    response::mailbox(&mut line, &mb.name);
    line.extend_from_slice(format!(" ({parts})\r\n").as_bytes());
    conn.out.extend_from_slice(&line);
    Outcome::ok("STATUS completed")
}

/// The STATUS items asked for, e.g. `MESSAGES 3 UNSEEN 1`.
pub fn status_items(mb: &MailboxInfo, st: &MailboxStatus, items: &[StatusDataItemName]) -> String {
    let mut parts = Vec::new();
    for item in items {
        match item {
            StatusDataItemName::Messages => parts.push(format!("MESSAGES {}", st.messages)),
            StatusDataItemName::Recent => parts.push(format!("RECENT {}", st.recent)),
            StatusDataItemName::UidNext => parts.push(format!("UIDNEXT {}", mb.uidnext)),
            StatusDataItemName::UidValidity => {
                parts.push(format!("UIDVALIDITY {}", mb.uidvalidity))
            }
            StatusDataItemName::Unseen => parts.push(format!("UNSEEN {}", st.unseen)),
            StatusDataItemName::Size => parts.push(format!("SIZE {}", st.size)),
            // RFC 7162 §3.1.6 (positive, like the SELECT's).
            StatusDataItemName::HighestModSeq => {
                parts.push(format!("HIGHESTMODSEQ {}", mb.highest_modseq.max(1)))
            }
            _ => {}
        }
    }
    parts.join(" ")
}
