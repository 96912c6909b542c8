//! Draining a node for maintenance (`cove node drain`): `/health` answers
//! 503 at once, so nginx's auth_http (asking cove) and monitors send new
//! sessions to the peer; after a grace period the IMAP and POP3 sessions
//! still open here are told to reconnect (`* BYE [UNAVAILABLE]`,
//! `-ERR [SYS/TEMP]`) at the next point their protocol allows, so their
//! clients come back on the peer. LMTP is not cut: an MTA's transaction is
//! short, and the MTA lookups route new ones elsewhere.
//!
//! Sessions learn of an eviction through one process-wide watch channel
//! ([`subscribe`]); each eviction bumps its generation.

use std::sync::LazyLock;

use tokio::sync::watch;

static EVICTIONS: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::channel(0).0);

/// A receiver that changes when sessions must leave.
pub fn subscribe() -> watch::Receiver<u64> {
    EVICTIONS.subscribe()
}

/// Tell every IMAP and POP3 session to send its client away; returns how
/// many were listening.
pub fn evict_sessions() -> usize {
    EVICTIONS.send_modify(|g| *g += 1);
    EVICTIONS.receiver_count()
}

/// The text a client is told.
pub const REASON: &str = "This server is being drained for maintenance; please reconnect";
