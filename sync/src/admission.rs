//! How many connections the replication listener holds.
//!
//! Anyone who can reach the replication port can open a TCP connection;
//! before the handshake proves the secret, each costs a file descriptor and
//! a task for up to the handshake timeout. Unbounded, a thousand idle
//! connections used up the process's descriptors and IMAP stopped greeting
//! (issue 11). So the listener counts:
//!
//! - connections still in the handshake, in all and per client address
//!   (small: a peer needs one at a time, and a retry after a cut link a
//!   second);
//! - authenticated links, in all (a peer's long-lived link, plus one per
//!   `sync now` or synchronous delivery while it runs).
//!
//! A connection over a limit is closed at once, before TLS (cheap: no
//! handshake work), and logged; refusals are logged at most once every
//! [`LOG_EVERY`], with how many were refused since, so a flood cannot
//! flood the log too.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Shortest time between two log lines about refused connections.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// The listener's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkLimits {
    /// Connections in the handshake (not yet authenticated), in all.
    pub max_pending: usize,
    /// Connections in the handshake from one address.
    pub max_pending_per_ip: usize,
    /// Authenticated links, in all.
    pub max_links: usize,
}

impl Default for LinkLimits {
    fn default() -> Self {
        LinkLimits {
            max_pending: 16,
            max_pending_per_ip: 4,
            max_links: 64,
        }
    }
}

#[derive(Default)]
struct Counts {
    pending: HashMap<IpAddr, usize>,
    links: usize,
    /// Refusals not logged yet, and when the last line was written.
    unlogged: u64,
    logged_at: Option<Instant>,
}

/// The listener's counts; slots are released when dropped.
pub struct Admission {
    limits: LinkLimits,
    counts: Mutex<Counts>,
}

/// A connection in the handshake.
pub struct Pending {
    admission: Arc<Admission>,
    ip: IpAddr,
}

/// An authenticated link.
pub struct Admitted {
    admission: Arc<Admission>,
}

impl Admission {
    pub fn new(limits: LinkLimits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        match self.counts.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        }
    }

    /// A slot for a new connection from `ip`, or why not.
    pub fn pending(self: &Arc<Self>, ip: IpAddr) -> Result<Pending, &'static str> {
        let mut c = self.counts();
        if c.pending.values().sum::<usize>() >= self.limits.max_pending {
            return Err("too many replication connections in the handshake");
        }
        let n = c.pending.entry(ip).or_insert(0);
        if *n >= self.limits.max_pending_per_ip {
            return Err("too many replication connections in the handshake from this address");
        }
        *n += 1;
        Ok(Pending {
            admission: self.clone(),
            ip,
        })
    }

    /// A slot for a link that passed the handshake, or why not.
    pub fn link(self: &Arc<Self>) -> Result<Admitted, &'static str> {
        let mut c = self.counts();
        if c.links >= self.limits.max_links {
            return Err("too many replication links");
        }
        c.links += 1;
        Ok(Admitted {
            admission: self.clone(),
        })
    }

    /// Log a refused connection, at most one line per [`LOG_EVERY`].
    pub fn refused(&self, peer: SocketAddr, why: &str) {
        let mut c = self.counts();
        c.unlogged += 1;
        if c.logged_at.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            return;
        }
        let n = std::mem::take(&mut c.unlogged);
        c.logged_at = Some(Instant::now());
        drop(c);
        tracing::warn!(peer = %peer, refused = n, "{why}; connection closed (refusals are logged at most every {}s)", LOG_EVERY.as_secs());
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut c = self.admission.counts();
        if let Some(n) = c.pending.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.pending.remove(&self.ip);
            }
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut c = self.admission.counts();
        c.links = c.links.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_released() {
        let a = Admission::new(LinkLimits {
            max_pending: 3,
            max_pending_per_ip: 2,
            max_links: 1,
        });
        let one: IpAddr = [10, 0, 0, 1].into();
        let two: IpAddr = [10, 0, 0, 2].into();
        let p1 = a.pending(one).unwrap();
        let _p2 = a.pending(one).unwrap();
        assert!(a.pending(one).is_err(), "per address");
        let _p3 = a.pending(two).unwrap();
        assert!(a.pending(two).is_err(), "in all");
        drop(p1);
        assert!(a.pending(one).is_ok(), "released");
        let l = a.link().unwrap();
        assert!(a.link().is_err());
        drop(l);
        assert!(a.link().is_ok());
    }
}
