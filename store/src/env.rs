//! Time and randomness, injected so that tests can be deterministic without
//! test-only code paths in production.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::ids::{MailboxGuid, MessageGuid};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> SystemTime;
}

pub trait Entropy: Send + Sync + 'static {
    fn fill(&self, out: &mut [u8]);
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The operating system's random source. Should it ever fail, bytes are
/// derived from the time and a counter through blake3 instead: GUIDs need to
/// be unique, not secret.
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&self, out: &mut [u8]) {
        if getrandom::fill(out).is_err() {
            static COUNTER: AtomicU64 = AtomicU64::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let t = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let mut h = blake3::Hasher::new();
            h.update(&t.to_le_bytes());
            h.update(&n.to_le_bytes());
            h.update(&std::process::id().to_le_bytes());
            h.finalize_xof().fill(out);
        }
    }
}

/// The clock and random source a store uses.
#[derive(Clone)]
pub struct Env {
    pub clock: Arc<dyn Clock>,
    pub entropy: Arc<dyn Entropy>,
}

impl Default for Env {
    fn default() -> Self {
        Env {
            clock: Arc::new(SystemClock),
            entropy: Arc::new(OsEntropy),
        }
    }
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Env")
    }
}

impl Env {
    pub fn now_secs(&self) -> i64 {
        match self.clock.now().duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        }
    }

    /// Milliseconds since the epoch on the injected clock (what replication
    /// stamps count).
    pub fn now_ms(&self) -> u64 {
        crate::replica::now_ms(&*self.clock)
    }

    pub fn message_guid(&self) -> MessageGuid {
        let mut g = [0u8; 16];
        self.entropy.fill(&mut g);
        MessageGuid(g)
    }

    pub fn mailbox_guid(&self) -> MailboxGuid {
        let mut g = [0u8; 16];
        self.entropy.fill(&mut g);
        MailboxGuid(g)
    }
}
