//! RFC 3501 §6.3.1 SELECT and §6.3.2 EXAMINE, with RFC 7162's CONDSTORE and
//! QRESYNC parameters.

use cove_store::{Flags, MailboxName, ModSeq, Uid};
use imap_codec::imap_types::command::SelectParameter;
use imap_codec::imap_types::sequence::SequenceSet;

use super::condstore::{UidSet, expunged_since, vanished};
use super::connection::{Authed, Connection};
use super::list;
use super::objectid;
use super::outcome::{Code, Outcome, untagged_ok};
use super::response;
use super::revision::Revision;
use super::view::{Recent, View};

/// RFC 7162 §3.2.5: what a client remembers of the mailbox.
struct Resync {
    uidvalidity: u32,
    modseq: ModSeq,
    known: Option<SequenceSet>,
}

// RFC 3501 §6.3.1 SELECT, §6.3.2 EXAMINE: open the view and describe it;
// the session enters the selected state with it. RFC 7162 §3.1.8 the
// CONDSTORE parameter, §3.2.5 the QRESYNC parameter.
pub async fn select(
    conn: &mut Connection,
    user: &Authed,
    name: MailboxName,
    read_only: bool,
    parameters: Vec<SelectParameter>,
) -> Result<(Box<View>, Outcome), Outcome> {
    let mut resync = None;
    for p in parameters {
        match p {
            SelectParameter::CondStore => conn.enable_condstore(None),
            SelectParameter::QResync {
                uid_validity,
                mod_sequence_value,
                known_uids,
                ..
            } => {
                // §3.2.5: only once QRESYNC is enabled.
                if !conn.enabled.qresync {
                    return Err(Outcome::bad("QRESYNC is not enabled"));
                }
                resync = Some(Resync {
                    uidvalidity: uid_validity.get(),
                    modseq: mod_sequence_value.get(),
                    known: known_uids,
                });
            }
        }
    }
    let account = user.account();
    let store = conn.ctx.store.clone();
    let snapshots = conn.ctx.snapshots.clone();
    let want_tombstones = resync.is_some();
    let opened = user
        .blocking(move || {
            let mb = account.mailbox(name.as_str())?;
            let watch = store.watcher().watch(&account);
            let tombstones = if want_tombstones {
                account.tombstones(&mb.guid)?
            } else {
                Vec::new()
            };
            let view = View::open(&account, &snapshots, mb, read_only, watch)?;
            Ok((view, tombstones))
        })
        .await;
    let (mut view, tombstones) = opened.map_err(|e| conn.refuse(&e))?;
    let rev = conn.enabled.revision;
    view.write_flags(&mut conn.out);
    conn.untagged(&format!("{} EXISTS", view.exists()));
    if rev == Revision::Rev2 {
        // RFC 9051 §6.3.2: the mailbox's LIST response; no \Recent, no
        // RECENT (§2.3.2), no UNSEEN code.
        view.recent = Recent::default();
        let attrs = view.mailbox.special_use.as_deref().unwrap_or("");
        list::line(&mut conn.out, "LIST", attrs, &view.mailbox.name, "", rev);
    } else {
        conn.untagged(&format!("{} RECENT", view.recent.len()));
        if let Some(i) = view
            .messages
            .iter()
            .position(|m| !m.flags.contains(Flags::SEEN))
        {
            untagged_ok(Code::Unseen(i + 1), "First unseen", &mut conn.out);
        }
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
    // RFC 8474 §4.
    untagged_ok(
        Code::MailboxId(objectid::mailbox_id(&view.mailbox.guid)),
        "Ok",
        &mut conn.out,
    );
    if conn.enabled.condstore {
        untagged_ok(
            Code::HighestModSeq(view.highest_modseq()),
            "Highest",
            &mut conn.out,
        );
    }
    // RFC 7162 §3.2.5.1: with the UIDVALIDITY the client knew, what it
    // missed: VANISHED (EARLIER), then the changed messages' flags.
    if let Some(r) = resync
        && r.uidvalidity == view.mailbox.uidvalidity
    {
        let known = r.known.as_ref().map(|k| UidSet::new(k, view.last_uid()));
        let tombstones: Vec<(Uid, ModSeq)> = tombstones.iter().map(|(u, _, m)| (*u, *m)).collect();
        let gone = expunged_since(&view, &tombstones, r.modseq, known.as_ref());
        if !gone.is_empty() {
            vanished(&mut conn.out, &gone, true);
        }
        let ahead = r.modseq > view.highest_modseq();
        for (i, m) in view.messages.iter().enumerate() {
            if (ahead || m.modseq > r.modseq) && known.as_ref().is_none_or(|k| k.contains(m.uid)) {
                let flags = response::flag_list(m.flags, &m.keywords, view.recent.contains(&m.uid));
                conn.out.extend_from_slice(
                    format!(
                        "* {} FETCH (UID {} FLAGS {flags} MODSEQ ({}))\r\n",
                        i + 1,
                        m.uid,
                        m.modseq
                    )
                    .as_bytes(),
                );
            }
        }
    }
    let outcome = if read_only {
        Outcome::ok_with(Code::ReadOnly, "EXAMINE completed")
    } else {
        Outcome::ok_with(Code::ReadWrite, "SELECT completed")
    };
    Ok((Box::new(view), outcome))
}
