//! What the protocol listeners count for `/metrics` (Prometheus text
//! format): sessions open, logins and deliveries by result, and how POP3
//! read the messages it sent. Process-wide counters, like a Prometheus
//! default registry: each is one relaxed atomic add where it happens.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// The protocols with a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Lmtp,
    Imap,
    Pop3,
}

impl Proto {
    const ALL: [Proto; 3] = [Proto::Lmtp, Proto::Imap, Proto::Pop3];

    /// `lmtp`, `imap`, `pop3` (the names the listeners log).
    pub fn from_name(name: &str) -> Option<Proto> {
        Proto::ALL.into_iter().find(|p| p.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Proto::Lmtp => "lmtp",
            Proto::Imap => "imap",
            Proto::Pop3 => "pop3",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How a POP3 answer read its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pop3Read {
    /// From the page cache, on the session's task.
    PageCache,
    /// On the blocking pool.
    BlockingPool,
}

pub struct Metrics {
    open: [AtomicI64; 3],
    logins_ok: [AtomicU64; 3],
    logins_failed: [AtomicU64; 3],
    deliveries_ok: AtomicU64,
    deliveries_failed: AtomicU64,
    pop3_page_cache: AtomicU64,
    pop3_blocking_pool: AtomicU64,
    password_checks: AtomicU64,
    logins_refused: AtomicU64,
    logins_waiting: AtomicI64,
    logins_queued: AtomicU64,
    penalised_clients: AtomicU64,
    penalised_users: AtomicU64,
    indexed: AtomicU64,
    forgotten: AtomicU64,
    imap_fetches: AtomicU64,
    imap_fetch_trips: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const ZERO_I: AtomicI64 = AtomicI64::new(0);

/// The process's counters.
pub static METRICS: Metrics = Metrics {
    open: [ZERO_I; 3],
    logins_ok: [ZERO; 3],
    logins_failed: [ZERO; 3],
    deliveries_ok: ZERO,
    deliveries_failed: ZERO,
    pop3_page_cache: ZERO,
    pop3_blocking_pool: ZERO,
    password_checks: ZERO,
    logins_refused: ZERO,
    logins_waiting: ZERO_I,
    logins_queued: ZERO,
    penalised_clients: ZERO,
    penalised_users: ZERO,
    indexed: ZERO,
    forgotten: ZERO,
    imap_fetches: ZERO,
    imap_fetch_trips: ZERO,
};

/// A session counted as open (in [`METRICS`]) until dropped.
pub struct OpenSession(Proto);

impl OpenSession {
    pub fn new(proto: Proto) -> OpenSession {
        METRICS.open[proto.index()].fetch_add(1, Relaxed);
        OpenSession(proto)
    }
}

impl Drop for OpenSession {
    fn drop(&mut self) {
        METRICS.open[self.0.index()].fetch_sub(1, Relaxed);
    }
}

/// A login attempt counted as waiting out a penalty until dropped.
pub struct Waiting(());

impl Waiting {
    /// One more attempt waiting (and queued, counted once per attempt).
    pub fn start() -> Waiting {
        METRICS.logins_queued.fetch_add(1, Relaxed);
        METRICS.logins_waiting.fetch_add(1, Relaxed);
        Waiting(())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        METRICS.logins_waiting.fetch_sub(1, Relaxed);
    }
}

impl Metrics {
    /// One password verification (argon2 or a legacy scheme), real or
    /// against the stand-in hash of an unknown user.
    pub fn password_check(&self) {
        self.password_checks.fetch_add(1, Relaxed);
    }

    /// A login refused unchecked because its client or user is penalised.
    pub fn login_refused(&self) {
        self.logins_refused.fetch_add(1, Relaxed);
    }

    /// The keys the penalty tables hold now.
    pub fn penalty_entries(&self, sizes: crate::auth::penalty::Sizes) {
        self.penalised_clients.store(sizes.clients as u64, Relaxed);
        self.penalised_users.store(sizes.users as u64, Relaxed);
    }

    pub fn login(&self, proto: Proto, ok: bool) {
        let counters = if ok {
            &self.logins_ok
        } else {
            &self.logins_failed
        };
        counters[proto.index()].fetch_add(1, Relaxed);
    }

    /// One recipient's delivery (LMTP), stored or failed with a store error.
    pub fn delivery(&self, ok: bool) {
        let c = if ok {
            &self.deliveries_ok
        } else {
            &self.deliveries_failed
        };
        c.fetch_add(1, Relaxed);
    }

    /// POP3 answers (RETR, TOP) sent, by how they were read.
    pub fn pop3_sent(&self, read: Pop3Read, n: u64) {
        let c = match read {
            Pop3Read::PageCache => &self.pop3_page_cache,
            Pop3Read::BlockingPool => &self.pop3_blocking_pool,
        };
        c.fetch_add(n, Relaxed);
    }

    /// IMAP FETCH commands answered with `trips` trips to the blocking
    /// pool between them (pipelined ones share trips).
    pub fn imap_fetched(&self, commands: u64, trips: u64) {
        self.imap_fetches.fetch_add(commands, Relaxed);
        self.imap_fetch_trips.fetch_add(trips, Relaxed);
    }

    /// A round of the background indexer (crate::derive).
    pub fn indexed(&self, report: &cove_store::Indexed) {
        self.indexed.fetch_add(report.indexed as u64, Relaxed);
        self.forgotten.fetch_add(report.forgotten as u64, Relaxed);
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let open: Vec<(String, u64)> = Proto::ALL
            .iter()
            .map(|p| {
                let n = self.open[p.index()].load(Relaxed).max(0);
                (format!("proto=\"{}\"", p.name()), n as u64)
            })
            .collect();
        family(
            &mut out,
            "cove_sessions_open",
            "gauge",
            "Client sessions open, by protocol",
            &open,
        );
        let mut logins = Vec::new();
        for p in [Proto::Imap, Proto::Pop3] {
            for (result, c) in [("ok", &self.logins_ok), ("failed", &self.logins_failed)] {
                let labels = format!("proto=\"{}\",result=\"{result}\"", p.name());
                logins.push((labels, c[p.index()].load(Relaxed)));
            }
        }
        family(
            &mut out,
            "cove_logins_total",
            "counter",
            "Logins (IMAP, POP3), by result",
            &logins,
        );
        let deliveries = [
            sample("result=\"ok\"", &self.deliveries_ok),
            sample("result=\"failed\"", &self.deliveries_failed),
        ];
        family(
            &mut out,
            "cove_lmtp_deliveries_total",
            "counter",
            "Deliveries to one recipient, by result",
            &deliveries,
        );
        let sent = [
            sample("read=\"page_cache\"", &self.pop3_page_cache),
            sample("read=\"blocking_pool\"", &self.pop3_blocking_pool),
        ];
        let indexer = [
            sample("event=\"indexed\"", &self.indexed),
            sample("event=\"forgotten\"", &self.forgotten),
        ];
        family(
            &mut out,
            "cove_indexer_contents_total",
            "counter",
            "Message contents the background indexer parsed on arrival (indexed) or removed after their last message went (forgotten)",
            &indexer,
        );
        let fetches = [
            sample("count=\"commands\"", &self.imap_fetches),
            sample("count=\"blocking_trips\"", &self.imap_fetch_trips),
        ];
        family(
            &mut out,
            "cove_imap_fetch_total",
            "counter",
            "IMAP FETCH commands, and the trips to the blocking pool that answered them (pipelined FETCHes share trips)",
            &fetches,
        );
        family(
            &mut out,
            "cove_pop3_messages_sent_total",
            "counter",
            "POP3 RETR and TOP answers, by how the message was read",
            &sent,
        );
        for (name, kind, help, value) in [
            (
                "cove_password_checks_total",
                "counter",
                "Password verifications, unknown users included (checked against a stand-in hash)",
                self.password_checks.load(Relaxed),
            ),
            (
                "cove_logins_refused_total",
                "counter",
                "Login attempts refused unchecked: their client or user was penalised",
                self.logins_refused.load(Relaxed),
            ),
            (
                "cove_logins_waiting",
                "gauge",
                "Login attempts waiting out a penalty before they are checked",
                self.logins_waiting.load(Relaxed).max(0) as u64,
            ),
            (
                "cove_logins_queued_total",
                "counter",
                "Login attempts that waited out a penalty before they were checked or refused",
                self.logins_queued.load(Relaxed),
            ),
        ] {
            family(&mut out, name, kind, help, &[(String::new(), value)]);
        }
        let entries = [
            sample("table=\"client\"", &self.penalised_clients),
            sample("table=\"user\"", &self.penalised_users),
        ];
        family(
            &mut out,
            "cove_auth_penalty_entries",
            "gauge",
            "Clients and user names with recent failed logins (bounded by [auth] penalty_table_size)",
            &entries,
        );
        let available = [(
            String::new(),
            u64::from(cove_store::cached_reads_available()),
        )];
        family(
            &mut out,
            "cove_cached_reads_available",
            "gauge",
            "1 while messages can be read from the page cache without blocking (openat2 RESOLVE_CACHED, preadv2 RWF_NOWAIT)",
            &available,
        );
        out
    }
}

/// A counter's sample with its labels.
fn sample(labels: &str, counter: &AtomicU64) -> (String, u64) {
    (labels.to_string(), counter.load(Relaxed))
}

/// One metric family: its HELP and TYPE lines, then a sample per label set
/// (an empty label set: the bare name).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_count_while_open_and_names_round_trip() {
        let m = Metrics {
            open: [ZERO_I; 3],
            logins_ok: [ZERO; 3],
            logins_failed: [ZERO; 3],
            deliveries_ok: ZERO,
            deliveries_failed: ZERO,
            pop3_page_cache: ZERO,
            pop3_blocking_pool: ZERO,
            password_checks: ZERO,
            logins_refused: ZERO,
            logins_waiting: ZERO_I,
            logins_queued: ZERO,
            penalised_clients: ZERO,
            penalised_users: ZERO,
            indexed: ZERO,
            forgotten: ZERO,
            imap_fetches: ZERO,
            imap_fetch_trips: ZERO,
        };
        m.login(Proto::Pop3, false);
        m.pop3_sent(Pop3Read::PageCache, 3);
        let text = m.render();
        assert!(
            text.contains("cove_logins_total{proto=\"pop3\",result=\"failed\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("cove_pop3_messages_sent_total{read=\"page_cache\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("cove_sessions_open{proto=\"imap\"} 0\n"),
            "{text}"
        );
        for p in Proto::ALL {
            assert_eq!(Proto::from_name(p.name()), Some(p));
        }
        assert_eq!(Proto::from_name("smtp"), None);
    }
}
