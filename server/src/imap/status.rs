//! RFC 3501 §6.3.10 STATUS (and RFC 8438 STATUS=SIZE's item, RFC 7162's
//! HIGHESTMODSEQ, RFC 9208's DELETED and DELETED-STORAGE).

use cove_store::{Flags, MailboxInfo, MailboxName, MailboxStatus};
use imap_codec::imap_types::status::StatusDataItemName;

use super::connection::{Authed, Connection};
use super::objectid;
use super::outcome::Outcome;
use super::revision::Revision;
use super::view::View;

// RFC 3501 §6.3.10 STATUS.
pub async fn status(
    conn: &mut Connection,
    user: &Authed,
    selected: Option<&View>,
    name: MailboxName,
    items: &[StatusDataItemName],
    mailbox_id: bool,
) -> Outcome {
    // RFC 7162 §3.1: STATUS HIGHESTMODSEQ enables CONDSTORE.
    if items.contains(&StatusDataItemName::HighestModSeq) {
        conn.enable_condstore(selected);
    }
    let account = user.account();
    let deleted_asked = items.iter().any(|i| {
        matches!(
            i,
            StatusDataItemName::Deleted | StatusDataItemName::DeletedStorage
        )
    });
    let got = user
        .blocking(move || {
            let mb = account.mailbox(name.as_str())?;
            let st = account.status(&mb.guid)?;
            // RFC 9208 §4.2: what expunging would free.
            let deleted = if deleted_asked {
                let doomed: Vec<u64> = account
                    .messages(&mb.guid)?
                    .iter()
                    .filter(|m| m.flags.contains(Flags::DELETED))
                    .map(|m| m.size)
                    .collect();
                Some((doomed.len(), doomed.iter().sum::<u64>()))
            } else {
                None
            };
            Ok((mb, st, deleted))
        })
        .await;
    let (mb, st, deleted): (MailboxInfo, MailboxStatus, _) = match got {
        Ok(x) => x,
        Err(e) => return conn.refuse(&e),
    };
    let rev = conn.enabled.revision;
    let mut parts = status_items(&mb, &st, items, rev);
    if let Some((count, bytes)) = deleted {
        for item in items {
            let part = match item {
                StatusDataItemName::Deleted => format!("DELETED {count}"),
                // In units of 1024 octets, like the STORAGE resource.
                StatusDataItemName::DeletedStorage => format!("DELETED-STORAGE {}", bytes / 1024),
                _ => continue,
            };
            if !parts.is_empty() {
                parts.push(' ');
            }
            parts.push_str(&part);
        }
    }
    if mailbox_id {
        // RFC 8474 §4.
        if !parts.is_empty() {
            parts.push(' ');
        }
        parts.push_str(&format!("MAILBOXID ({})", objectid::mailbox_id(&mb.guid)));
    }
    let mut line = b"* STATUS ".to_vec();
    rev.write_name(&mut line, &mb.name);
    line.extend_from_slice(format!(" ({parts})\r\n").as_bytes());
    conn.out.extend_from_slice(&line);
    Outcome::ok("STATUS completed")
}

/// The STATUS items asked for, e.g. `MESSAGES 3 UNSEEN 1`.
pub fn status_items(
    mb: &MailboxInfo,
    st: &MailboxStatus,
    items: &[StatusDataItemName],
    rev: Revision,
) -> String {
    let mut parts = Vec::new();
    for item in items {
        match item {
            StatusDataItemName::Messages => parts.push(format!("MESSAGES {}", st.messages)),
            // RFC 9051 §2.3.2: IMAP4rev2 has no \Recent, nor this item.
            StatusDataItemName::Recent if rev == Revision::Rev2 => {}
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
