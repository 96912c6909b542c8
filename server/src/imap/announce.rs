//! Telling a session what others changed in its selected mailbox: new
//! messages (EXISTS, RECENT), flag changes (FETCH FLAGS) and, where the
//! command allows it (RFC 3501 §7.4.1; the command table's `Announce`),
//! EXPUNGE. The view (`view.rs`) keeps what is pending; this reads what the
//! feed did not carry from the index, off the reactor, and claims \Recent.

use cove_store::Error;

use super::connection::{Authed, Connection};
use super::view::{PendingRead, View};

/// Why the selected mailbox cannot be shown any more.
pub enum MailboxGone {
    /// It no longer exists (deleted or renamed elsewhere).
    Removed,
    /// Its UIDs were given again under a new UIDVALIDITY (replication
    /// merged it with a mailbox of the same name made on the peer): the
    /// UIDs this session showed mean nothing now, and IMAP has no way to
    /// tell a selected session so (RFC 3501 §2.3.1.1) but to end it.
    Renumbered,
}

/// Announce what others changed in the selected mailbox: EXPUNGE only when
/// `allow_expunge`.
pub async fn announce(
    conn: &mut Connection,
    user: &Authed,
    view: &mut View,
    allow_expunge: bool,
) -> Result<(), MailboxGone> {
    let account = user.account();
    let read = view.pending_read();
    let last_uid = view.last_uid();
    let read_only = view.read_only;
    let mailbox_first_recent = view.mailbox.first_recent;
    let guid = view.mailbox.guid;
    let uidvalidity = view.mailbox.uidvalidity;
    let query = match &read {
        PendingRead::Nothing | PendingRead::FromFeed => None,
        PendingRead::Since(modseq) => Some(Some(*modseq)),
        PendingRead::All => Some(None),
    };
    let rows = match query {
        None => Ok(Vec::new()),
        Some(since) => {
            let account = account.clone();
            let read = user
                .blocking(move || {
                    let rows = match since {
                        Some(modseq) => account.messages_since(&guid, modseq)?,
                        None => account.messages(&guid)?,
                    };
                    // Read after the rows: a renumbering committed before
                    // them shows here.
                    let now = account.mailbox_by_guid(&guid)?.uidvalidity;
                    Ok((rows, now))
                })
                .await;
            match read {
                Ok((_, now)) if now != uidvalidity => {
                    tracing::info!(session = conn.id, mailbox = %view.mailbox.name.escape_debug(), from = uidvalidity, to = now, "the selected mailbox was renumbered by replication; the session is ended");
                    return Err(MailboxGone::Renumbered);
                }
                read => read.map(|(rows, _)| rows),
            }
        }
    };
    // New messages: this session takes their \Recent, unless it only
    // EXAMINEd the mailbox, or another session of this server already
    // took them (the shared floor spares thousands of IDLE sessions a
    // write to the index each).
    let newest = {
        let from_rows = rows
            .as_ref()
            .ok()
            .and_then(|r| r.iter().map(|m| m.uid).max());
        view.newest_arrived()
            .max(from_rows)
            .filter(|u| *u > last_uid)
    };
    let rows = match (rows, newest) {
        (Ok(rows), Some(newest)) if !read_only => {
            let floor = conn.ctx.recent_floor(guid);
            if newest < floor {
                Ok((rows, floor))
            } else {
                let claimed = user.blocking(move || account.claim_recent(&guid)).await;
                claimed.map(|first| {
                    conn.ctx.raise_recent_floor(guid, newest + 1);
                    (rows, first)
                })
            }
        }
        (Ok(rows), _) => Ok((rows, mailbox_first_recent)),
        (Err(e), _) => Err(e),
    };
    match rows {
        Ok((rows, first_recent)) => {
            view.apply(
                &read,
                rows,
                first_recent,
                allow_expunge,
                conn.enabled,
                &mut conn.out,
            );
            Ok(())
        }
        // Gone by its GUID: merged into the peer's mailbox of the same
        // name (which it now is, renumbered), or removed.
        Err(Error::NotFound(_)) => {
            let account = user.account();
            let name = view.mailbox.name.clone();
            match user.blocking(move || account.mailbox(&name)).await {
                Ok(_) => {
                    tracing::info!(session = conn.id, mailbox = %view.mailbox.name.escape_debug(), "the selected mailbox was merged with the peer's of the same name; the session is ended");
                    Err(MailboxGone::Renumbered)
                }
                Err(_) => Err(MailboxGone::Removed),
            }
        }
        Err(e) => {
            tracing::warn!(session = conn.id, error = %e, "could not refresh the selected mailbox");
            Ok(())
        }
    }
}
