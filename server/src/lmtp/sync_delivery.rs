//! `[replication] sync_delivery`: the 250 waits until a peer holds the
//! message, at most `sync_delivery_timeout_ms`, then falls back to
//! asynchronous replication.
//!
//! The fallback is logged once per change of state, not once per delivery:
//! a WARN when deliveries start going unconfirmed (saying whether the wait
//! ran out or no peer could be reached at all, which took no waiting),
//! an INFO when a peer confirms again. In between each delivery gets a
//! DEBUG line: with the peer down, a busy server would otherwise write a
//! WARN per message, each claiming a wait that did not happen.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cove_sync::replicator::{Replicated, Replicator};

pub struct SyncDelivery {
    replicator: Arc<Replicator>,
    timeout: Duration,
    /// Deliveries are being acknowledged without a peer's confirmation.
    unconfirmed: AtomicBool,
}

impl SyncDelivery {
    pub fn new(replicator: Arc<Replicator>, timeout: Duration) -> SyncDelivery {
        SyncDelivery {
            replicator,
            timeout,
            unconfirmed: AtomicBool::new(false),
        }
    }

    /// Make each user's new mail reach a peer (in parallel), then log what
    /// came of it.
    pub async fn wait(&self, session: u64, users: Vec<String>) {
        let mut waits = tokio::task::JoinSet::new();
        for user in users {
            let (replicator, timeout) = (self.replicator.clone(), self.timeout);
            waits.spawn(async move {
                let outcome = replicator.replicate_now(&user, timeout).await;
                (user, outcome)
            });
        }
        while let Some(done) = waits.join_next().await {
            if let Ok((user, outcome)) = done {
                self.note(session, &user, outcome);
            }
        }
    }

    fn note(&self, session: u64, user: &str, outcome: Replicated) {
        let timeout_ms = self.timeout.as_millis() as u64;
        if outcome == Replicated::Confirmed {
            if self.unconfirmed.swap(false, Ordering::Relaxed) {
                tracing::info!(session, user = %user, "sync_delivery: a peer confirms deliveries again");
            }
            return;
        }
        if self.unconfirmed.swap(true, Ordering::Relaxed) {
            tracing::debug!(session, user = %user, ?outcome, "sync_delivery: acknowledged without a peer's confirmation");
            return;
        }
        match outcome {
            Replicated::TimedOut => tracing::warn!(session, user = %user, timeout_ms,
                "sync_delivery: no peer confirmed the message in time; acknowledging deliveries without a peer until one confirms again, replication continues asynchronously"),
            _ => tracing::warn!(session, user = %user,
                "sync_delivery: no peer reachable; acknowledging deliveries without waiting until a peer confirms again, replication continues asynchronously"),
        }
    }
}
