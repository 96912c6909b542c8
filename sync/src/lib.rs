//! cove's replicator: per-user, bidirectional, incremental sync of
//! mailboxes between peer nodes (DESIGN.md, "Replication";
//! docs/replication.md).
//!
//! - [`transport`]: the authenticated, framed TLS link between two nodes.
//! - [`session`]: one user's sync over a link; the merge rules themselves
//!   live in `cove_store::replica`, next to the data they change.
//! - [`replicator`]: which users to sync with which peer, and when.
//! - [`http`]: the `[http]` admin endpoint (metrics, status, sync now).

pub mod admission;
pub mod http;
pub mod replicator;
pub mod session;
pub mod transport;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One async lock per user, so that two sessions for one user (one this
/// node started, one its peer started) never interleave on this node.
#[derive(Default)]
pub struct UserLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl UserLocks {
    pub async fn lock(&self, user: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.slot(user).lock_owned().await
    }

    /// The lock if nobody holds it. The accepting side of a session uses
    /// this: waiting could deadlock with a session this node started for
    /// the same user in the other direction, which holds this node's lock
    /// while it waits for the peer's.
    pub fn try_lock(&self, user: &str) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        self.slot(user).try_lock_owned().ok()
    }

    fn slot(&self, user: &str) -> Arc<tokio::sync::Mutex<()>> {
        {
            let mut map = match self.locks.lock() {
                Ok(m) => m,
                Err(poisoned) => poisoned.into_inner(),
            };
            if map.len() > 4096 {
                map.retain(|_, l| Arc::strong_count(l) > 1);
            }
            map.entry(user.to_ascii_lowercase()).or_default().clone()
        }
    }
}
