//! Sieve in an LMTP delivery, between "the message is staged" and "the
//! 250s": decide per recipient (blocking pool), send what the scripts
//! send (async, to the relay), then place the copies through the store
//! like any delivery (same blob, same dedup, same group flush).

use std::sync::Arc;
use std::time::Duration;

use cove_store::{DeliveryTarget, Placement, Store};

use super::engine::{Copy, Delivery, OutgoingKind, Plan, SieveEngine};
use super::outgoing;
use crate::client_text::ClientText;
use crate::work::{self, Lane};

/// What happens to one recipient's copy.
#[derive(Debug)]
pub enum Decision {
    /// No script ran: the usual delivery (INBOX or the detail mailbox).
    Plain,
    Plan(Plan),
}

impl Decision {
    /// The copies to store for `target` (empty: discarded or rejected).
    pub fn copies(&self, target: &DeliveryTarget) -> Vec<Copy> {
        match self {
            Decision::Plain => vec![plain(target)],
            Decision::Plan(p) => p.placements.clone(),
        }
    }

    pub fn reject(&self) -> Option<&str> {
        match self {
            Decision::Plan(p) => p.reject.as_deref(),
            Decision::Plain => None,
        }
    }
}

/// The message as it arrived, where it goes without a script.
fn plain(target: &DeliveryTarget) -> Copy {
    Copy {
        placement: Placement::from(target.clone()),
        content: None,
    }
}

/// One accepted recipient.
pub struct Rcpt<'a> {
    pub target: &'a DeliveryTarget,
    /// RCPT TO as the client wrote it.
    pub given: &'a str,
}

/// Whether any recipient has a script to run (blocking; a marker file read
/// each): if none has, the message is neither read back nor parsed.
pub fn any_script(engine: &SieveEngine, store: &Store, targets: &[DeliveryTarget]) -> bool {
    engine.has_global_scripts()
        || targets.iter().any(|t| {
            store
                .sieve(&t.user.address)
                .active_name()
                .is_ok_and(|n| n.is_some())
        })
}

/// Run the scripts for each recipient (blocking). `raw` is the message,
/// or `None` when it is over `[sieve] max_message_size`. A script that
/// fails makes that recipient's delivery plain, with a log line.
pub fn decide(
    engine: &SieveEngine,
    store: &Store,
    raw: Option<&[u8]>,
    from: &str,
    rcpts: &[Rcpt],
    session: u64,
) -> Vec<Decision> {
    let Some(raw) = raw else {
        for r in rcpts {
            if engine.has_global_scripts()
                || store
                    .sieve(&r.target.user.address)
                    .active_name()
                    .is_ok_and(|n| n.is_some())
            {
                tracing::info!(session, user = %r.target.user.address, max = engine.config().max_message_size,
                    "message over [sieve] max_message_size: delivered without running scripts");
            }
        }
        return rcpts.iter().map(|_| Decision::Plain).collect();
    };
    let message = engine.parse(raw);
    let now = store.env().now_secs();
    rcpts
        .iter()
        .map(|r| {
            let d = Delivery {
                store,
                user: &r.target.user,
                detail: r.target.mailbox.as_deref(),
                from,
                to: r.given,
                now,
            };
            match engine.plan(&d, &message) {
                Ok(Some(plan)) => {
                    tracing::debug!(session, user = %r.target.user.address, scripts = ?plan.ran, copies = plan.placements.len(),
                        outgoing = plan.outgoing.len(), reject = plan.reject.is_some(), "sieve ran");
                    Decision::Plan(plan)
                }
                Ok(None) => Decision::Plain,
                Err(e) => {
                    tracing::warn!(session, user = %r.target.user.address, error = %ClientText::line(&e.to_string()),
                        "sieve failed; delivering to INBOX as without a script");
                    Decision::Plain
                }
            }
        })
        .collect()
}

/// The message being delivered, for [`send_outgoing`].
#[derive(Clone, Copy)]
pub struct Mail<'a> {
    pub engine: &'a SieveEngine,
    pub store: &'a Arc<Store>,
    /// Our host name (EHLO).
    pub helo: &'a str,
    /// MAIL FROM of the delivery.
    pub from: &'a str,
    pub raw: &'a [u8],
    pub session: u64,
}

/// Send what the scripts send, under the rules of [`outgoing`]. A redirect
/// that cannot be sent (no relay, the relay refused, over the day's limit)
/// keeps the message instead: it is never lost.
pub async fn send_outgoing(m: &Mail<'_>, rcpt: &Rcpt<'_>, decision: &mut Decision) {
    let Mail {
        engine,
        store,
        helo,
        from,
        raw,
        session,
    } = *m;
    let Decision::Plan(plan) = decision else {
        return;
    };
    let config = engine.config();
    let user = rcpt.target.user.address.to_string();
    let own = vec![user.clone(), rcpt.given.to_string()];
    let mut redirect_failed = false;
    for out in std::mem::take(&mut plan.outgoing) {
        let to = ClientText::word(&out.to).to_string();
        let (mail_from, body) = match out.kind {
            OutgoingKind::AutoReply => {
                if let Err(why) = outgoing::may_auto_reply(from, &own, raw) {
                    tracing::info!(session, user = %user, to = %to, reason = %ClientText::line(&why), "sieve auto-reply not sent");
                    continue;
                }
                ("", out.message.as_deref().unwrap_or(raw))
            }
            OutgoingKind::Redirect | OutgoingKind::Notify => {
                if out.kind == OutgoingKind::Notify
                    && let Err(why) = outgoing::may_notify(raw)
                {
                    tracing::info!(session, user = %user, to = %to, reason = %ClientText::line(&why), "sieve notification not sent");
                    continue;
                }
                let store = store.clone();
                let address = rcpt.target.user.address.clone();
                let per_day = config.max_redirects_per_day;
                let day = store.env().now_secs().div_euclid(86_400);
                let allowed = work::run(Lane::Reserved, move || {
                    store.sieve(&address).count_redirects(day, 1, per_day)
                })
                .await;
                if !matches!(allowed, Ok(Ok(true))) {
                    tracing::warn!(session, user = %user, to = %to, kind = ?out.kind, "sieve redirect or notify over the day's limit (or the count failed); not sent");
                    redirect_failed |= out.kind == OutgoingKind::Redirect;
                    continue;
                }
                // RFC 5436 §2.7: a notification's return path is empty.
                let mail_from = if out.kind == OutgoingKind::Notify {
                    ""
                } else {
                    from
                };
                (mail_from, out.message.as_deref().unwrap_or(raw))
            }
        };
        let Some(relay) = &config.relay else {
            tracing::warn!(session, user = %user, to = %to, "sieve wants to send mail but [sieve] relay is not set");
            redirect_failed |= out.kind == OutgoingKind::Redirect;
            continue;
        };
        let timeout = Duration::from_secs(config.relay_timeout_secs);
        match outgoing::send(relay, helo, mail_from, &out.to, body, timeout).await {
            Ok(()) => {
                tracing::info!(session, user = %user, to = %to, kind = ?out.kind, "sieve sent a message");
            }
            Err(e) => {
                tracing::warn!(session, user = %user, to = %to, kind = ?out.kind, error = %ClientText::line(&e), "sieve could not send a message");
                redirect_failed |= out.kind == OutgoingKind::Redirect;
            }
        }
    }
    if redirect_failed && plan.placements.is_empty() && plan.reject.is_none() {
        plan.placements.push(plain(rcpt.target));
        plan.discard = false;
    }
}

/// Remember the vacation and duplicate ids of the recipients whose copy
/// was stored (blocking).
pub fn track(store: &Store, target: &DeliveryTarget, decision: &Decision) {
    if let Decision::Plan(plan) = decision
        && let Err(e) = store
            .sieve(&target.user.address)
            .track(&plan.track, store.env().now_secs())
    {
        tracing::warn!(user = %target.user.address, error = %e, "could not record sieve vacation/duplicate ids");
    }
}

/// Copies grouped by their bytes: the delivery's blob (`None`) or a
/// message editheader changed; `owners[i]` is the recipient of
/// `placements[i]`.
#[derive(Default)]
pub struct CopyGroup {
    pub placements: Vec<cove_store::Placement>,
    pub owners: Vec<usize>,
}

pub fn copies_by_content(
    targets: &[DeliveryTarget],
    decisions: &[Decision],
) -> Vec<(Option<Arc<Vec<u8>>>, CopyGroup)> {
    let mut groups: Vec<(Option<Arc<Vec<u8>>>, CopyGroup)> = vec![(None, CopyGroup::default())];
    for (i, (t, d)) in targets.iter().zip(decisions).enumerate() {
        for c in d.copies(t) {
            let at = match &c.content {
                None => 0,
                Some(bytes) => match groups
                    .iter()
                    .position(|(b, _)| b.as_ref().is_some_and(|b| b == bytes))
                {
                    Some(at) => at,
                    None => {
                        groups.push((Some(bytes.clone()), CopyGroup::default()));
                        groups.len() - 1
                    }
                },
            };
            groups[at].1.placements.push(c.placement);
            groups[at].1.owners.push(i);
        }
    }
    groups.retain(|(_, g)| !g.owners.is_empty());
    groups
}

/// The same failure for each copy of a group (store errors are not Clone).
pub fn copy_error(e: &cove_store::Error) -> cove_store::Error {
    if e.is_temporary() {
        cove_store::Error::Io {
            context: "storing a changed message".into(),
            source: std::io::Error::other(e.to_string()),
        }
    } else {
        cove_store::Error::InvalidData(e.to_string())
    }
}
