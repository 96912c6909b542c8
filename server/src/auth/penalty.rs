//! Login penalties: a wait that grows with each failed login, per client
//! address and per user name, and that is served *before* the next attempt
//! is evaluated.
//!
//! The problem. A fixed delay after a failure (`auth_failure_delay_ms`)
//! slows one connection, not an attacker: fifty connections from one
//! address got 18 wrong passwords a second answered, and after 400 of them
//! the right password was accepted at once. Guessing must cost time per
//! *client* and per *target*, whatever the number of connections.
//!
//! The schedule (after Dovecot's documented `auth_penalty`): after the
//! n-th failure in a row, the key waits `initial * 2^(n-1)`, at most `max`
//! (2, 4, 8, 15, 15 ... seconds by default). A key with no failure for
//! `expire` is forgotten. Two keys are kept for each attempt:
//! - the client address (an IPv6 client by its /64, which one subscriber
//!   usually holds whole; a v4-mapped address as IPv4);
//! - the user name as typed (trimmed, lowercased, so as
//!   `cove_store::Address` normalises it; unknown names too, or a name
//!   that never gets a penalty would betray that it does not exist), kept
//!   as a keyed 64-bit hash so a 64 KiB name costs 8 bytes.
//!
//! The invariants:
//! 1. A penalised key gets *one evaluated attempt per window*. An attempt
//!    finds the gate closed while the window is open, or while another
//!    attempt of a penalised key is being checked (it is "in flight": the
//!    gate reserves it, as if it were going to fail). So parallel
//!    connections buy nothing; they queue. Before its first failure, a key
//!    may have a few checks in flight at once (`FREE_IN_FLIGHT`), so an
//!    attacker's opening burst is checked at most that many times before
//!    the first failure lands.
//! 2. A refused attempt is not evaluated (no password check, no new
//!    failure): while penalised, even the right password is not accepted
//!    before the wait is over. Sessions wait their turn (see
//!    [`PenaltyBox::pass`]) and so answer the right password after the
//!    wait; the nginx endpoint answers `Auth-Wait` at once instead.
//! 3. A successful login forgets the *user's* failures, but not the
//!    *address's*: otherwise an attacker holding one account of its own
//!    could log into it between guesses at others and never be slowed. It
//!    only ends that address's reservation, so the next attempt from it
//!    (a colleague behind the same NAT) goes straight on.
//! 4. Memory is bounded: each table holds at most `capacity` keys; a new
//!    key evicts the one whose last failure is oldest. A spray of addresses
//!    can thus evict an attacker's own entry (it gets a fresh start), never
//!    grow the server.
//!
//! Alternatives rejected: counting refused attempts as failures (a third
//! party could then keep any user locked out just by trying, without even
//! spending an argon2 check); sleeping inside the check (the nginx
//! endpoint must not hold a request for 15 s, and a sleep does not bound
//! parallel attempts); a fixed lockout after N failures (a denial of
//! service on demand for any user name).
//!
//! The cost: while an address has recent failures, its logins are checked
//! one at a time (each reservation lasts one password check, tens of
//! milliseconds); a per-user penalty lets a determined attacker delay a
//! user's logins by up to `max` (`penalty_per_user = false` turns it off).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Checks of one key that may run side by side while it has no failure:
/// the most an attacker's first burst of parallel connections gets checked
/// before the first failure lands and the penalty begins.
const FREE_IN_FLIGHT: u32 = 4;

/// How long an attempt over [`FREE_IN_FLIGHT`] is told to wait (sessions
/// are woken sooner, as each check ends).
const BUSY_WAIT: Duration = Duration::from_millis(100);

/// The penalty schedule (`[auth]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// The wait after the first failure; it doubles with each further one.
    pub initial: Duration,
    /// The longest wait. Zero turns penalties off.
    pub max: Duration,
    /// A key without a failure for this long is forgotten.
    pub expire: Duration,
    /// Keys per table (addresses, user names) at most.
    pub capacity: usize,
    /// Whether user names are penalised too, not only addresses.
    pub per_user: bool,
}

impl Schedule {
    /// The wait after `failures` failures in a row.
    pub fn wait(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let doublings = (failures - 1).min(31);
        self.initial.saturating_mul(1u32 << doublings).min(self.max)
    }
}

/// One key's failures.
#[derive(Debug)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    /// Attempts before this are refused.
    open_at: Instant,
    /// Attempts that passed the gate and are being checked.
    in_flight: u32,
    /// Its place in [`Table::order`].
    seq: u64,
}

/// Keys with failures, oldest failure first; at most `capacity`.
struct Table<K> {
    entries: HashMap<K, Entry>,
    /// Last failure's sequence number -> key: the eviction and expiry order.
    order: BTreeMap<u64, K>,
    next_seq: u64,
    capacity: usize,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(capacity: usize) -> Table<K> {
        Table {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            capacity: capacity.max(1),
        }
    }

    /// Drop the keys whose last failure is `expire` old.
    fn expire(&mut self, now: Instant, expire: Duration) {
        while let Some((_, key)) = self.order.first_key_value() {
            let stale = self
                .entries
                .get(key)
                .is_none_or(|e| now.saturating_duration_since(e.last_failure) >= expire);
            if !stale {
                break;
            }
            if let Some((_, key)) = self.order.pop_first() {
                self.entries.remove(&key);
            }
        }
    }

    /// Whether `key` may pass now, and if not, for how long it waits.
    fn gate(&self, key: &K, schedule: &Schedule, now: Instant) -> Gate {
        match self.entries.get(key) {
            None => Gate::Open,
            // Not penalised: a few checks side by side (queued attempts are
            // woken as each ends).
            Some(e) if e.failures == 0 => {
                if e.in_flight < FREE_IN_FLIGHT {
                    Gate::Open
                } else {
                    Gate::Busy(schedule.initial.min(BUSY_WAIT))
                }
            }
            // Until the check in flight ends; its failure would open this
            // window anyway.
            Some(e) if e.in_flight > 0 => {
                Gate::Penalised(schedule.wait(e.failures).max(Duration::from_millis(1)))
            }
            Some(e) => match e.open_at.saturating_duration_since(now) {
                wait if wait.is_zero() => Gate::Open,
                wait => Gate::Penalised(wait),
            },
        }
    }

    /// Count a check in flight for `key` (a key without failures gets an
    /// entry for as long as it has checks in flight).
    fn reserve(&mut self, key: &K, now: Instant) {
        if let Some(e) = self.entries.get_mut(key) {
            e.in_flight += 1;
            return;
        }
        self.insert(key, 0, 1, now, now);
    }

    fn release(&mut self, key: &K) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        e.in_flight = e.in_flight.saturating_sub(1);
        if e.failures == 0 && e.in_flight == 0 {
            self.forget(key);
        }
    }

    /// A new entry, evicting the oldest ones to stay within the capacity.
    fn insert(&mut self, key: &K, failures: u32, in_flight: u32, now: Instant, open_at: Instant) {
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.insert(
            key.clone(),
            Entry {
                failures,
                last_failure: now,
                open_at,
                in_flight,
                seq,
            },
        );
        self.order.insert(seq, key.clone());
    }

    fn forget(&mut self, key: &K) {
        if let Some(e) = self.entries.remove(key) {
            self.order.remove(&e.seq);
        }
    }

    /// One more failure for `key`: its wait from now.
    fn fail(&mut self, key: &K, schedule: &Schedule, now: Instant) -> Duration {
        let (failures, in_flight) = match self.entries.remove(key) {
            Some(e) => {
                self.order.remove(&e.seq);
                (e.failures.saturating_add(1), e.in_flight)
            }
            None => (1, 0),
        };
        let wait = schedule.wait(failures);
        self.insert(key, failures, in_flight, now, now + wait);
        wait
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// What the gate says to one key's attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    Open,
    /// The key has no failure, but [`FREE_IN_FLIGHT`] of its checks are
    /// running: the attempt waits for one to end, which is capacity, not
    /// a penalty.
    Busy(Duration),
    /// The key's failures hold the gate shut this long.
    Penalised(Duration),
}

/// Why [`PenaltyBox::pass`] gave up, with how long the attempt would
/// still have had to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Capacity: the client or user had [`FREE_IN_FLIGHT`] checks running
    /// for longer than the caller's patience for that (a burst of logins
    /// from one address, not a failure of theirs).
    Busy(Duration),
    /// The client's or user's failures.
    Penalised(Duration),
}

impl Refused {
    /// How long the attempt would still have had to wait.
    pub fn wait(self) -> Duration {
        match self {
            Refused::Busy(wait) | Refused::Penalised(wait) => wait,
        }
    }
}

impl Gate {
    /// The stricter of two keys' gates.
    fn and(self, other: Gate) -> Gate {
        match (self, other) {
            (Gate::Penalised(a), Gate::Penalised(b)) => Gate::Penalised(a.max(b)),
            (p @ Gate::Penalised(_), _) | (_, p @ Gate::Penalised(_)) => p,
            (Gate::Busy(a), Gate::Busy(b)) => Gate::Busy(a.max(b)),
            (b @ Gate::Busy(_), Gate::Open) | (Gate::Open, b @ Gate::Busy(_)) => b,
            (Gate::Open, Gate::Open) => Gate::Open,
        }
    }
}

/// How long an attempt may wait at the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Patience {
    /// For a penalised key's window to open.
    pub penalty: Duration,
    /// For a check of an unpenalised key to end (never less than
    /// `penalty`).
    pub busy: Duration,
}

/// The keys of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keys {
    client: IpAddr,
    user: u64,
}

struct Tables {
    clients: Table<IpAddr>,
    users: Table<u64>,
}

/// Both tables, behind one lock held only for a few map operations.
pub struct PenaltyBox {
    schedule: Schedule,
    tables: Mutex<Tables>,
    /// Woken whenever a reservation ends, so queued attempts look again.
    changed: Notify,
    names: RandomState,
}

/// How many keys the tables hold now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub clients: usize,
    pub users: usize,
}

impl PenaltyBox {
    pub fn new(schedule: Schedule) -> PenaltyBox {
        PenaltyBox {
            schedule,
            tables: Mutex::new(Tables {
                clients: Table::new(schedule.capacity),
                users: Table::new(schedule.capacity),
            }),
            changed: Notify::new(),
            names: RandomState::new(),
        }
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The keys of an attempt by `client` as `username`.
    pub fn keys(&self, client: IpAddr, username: &str) -> Keys {
        let mut h = self.names.build_hasher();
        for c in username.trim().chars().flat_map(char::to_lowercase) {
            c.hash(&mut h);
        }
        Keys {
            client: client_key(client),
            user: h.finish(),
        }
    }

    fn enabled(&self) -> bool {
        !self.schedule.max.is_zero()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        // A panic while the lock was held left at worst a stale entry.
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pass the gate now, or learn how long to wait.
    pub fn try_pass(&self, keys: Keys) -> Result<Pass<'_>, Duration> {
        self.try_gate(keys).map_err(|refused| match refused {
            Gate::Busy(wait) | Gate::Penalised(wait) => wait,
            Gate::Open => Duration::ZERO,
        })
    }

    /// Pass the gate now, or the gate that refused.
    fn try_gate(&self, keys: Keys) -> Result<Pass<'_>, Gate> {
        if !self.enabled() {
            return Ok(Pass::new(self, keys));
        }
        let now = Instant::now();
        let s = &self.schedule;
        let mut t = self.lock();
        t.clients.expire(now, s.expire);
        t.users.expire(now, s.expire);
        let mut gate = t.clients.gate(&keys.client, s, now);
        if s.per_user {
            gate = gate.and(t.users.gate(&keys.user, s, now));
        }
        if gate != Gate::Open {
            return Err(gate);
        }
        t.clients.reserve(&keys.client, now);
        if s.per_user {
            t.users.reserve(&keys.user, now);
        }
        Ok(Pass::new(self, keys))
    }

    /// Wait for the gate, at most as long as `patience` allows for the
    /// reason it is shut: the pass, or how long the attempt would still
    /// have to wait. Zero patience never sleeps.
    pub async fn pass(&self, keys: Keys, patience: Patience) -> Result<Pass<'_>, Refused> {
        let start = Instant::now();
        let penalty_deadline = start + patience.penalty;
        let busy_deadline = start + patience.busy.max(patience.penalty);
        let mut waiting = None;
        loop {
            // Registered before the look, so a release between the two is
            // not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (refused, deadline) = match self.try_gate(keys) {
                Ok(pass) => return Ok(pass),
                Err(Gate::Busy(wait)) => (Refused::Busy(wait), busy_deadline),
                Err(Gate::Penalised(wait)) => (Refused::Penalised(wait), penalty_deadline),
                Err(Gate::Open) => (Refused::Penalised(Duration::ZERO), penalty_deadline),
            };
            let wait = refused.wait();
            let now = Instant::now();
            if now >= deadline {
                return Err(refused);
            }
            waiting.get_or_insert_with(crate::metrics::Waiting::start);
            tokio::select! {
                _ = tokio::time::sleep_until((now + wait).min(deadline)) => {}
                _ = &mut changed => {}
            }
        }
    }

    /// How many keys the tables hold (expired ones dropped first).
    pub fn sizes(&self) -> Sizes {
        let now = Instant::now();
        let mut t = self.lock();
        t.clients.expire(now, self.schedule.expire);
        t.users.expire(now, self.schedule.expire);
        Sizes {
            clients: t.clients.len(),
            users: t.users.len(),
        }
    }

    fn finish(&self, keys: Keys, verdict: Verdict) -> Duration {
        if !self.enabled() {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let s = &self.schedule;
        let (wait, sizes) = {
            let mut t = self.lock();
            t.clients.release(&keys.client);
            t.users.release(&keys.user);
            let wait = match verdict {
                Verdict::Undecided => Duration::ZERO,
                Verdict::Succeeded => {
                    t.users.forget(&keys.user);
                    Duration::ZERO
                }
                Verdict::Failed => {
                    let mut wait = t.clients.fail(&keys.client, s, now);
                    if s.per_user {
                        wait = wait.max(t.users.fail(&keys.user, s, now));
                    }
                    wait
                }
            };
            let sizes = Sizes {
                clients: t.clients.len(),
                users: t.users.len(),
            };
            (wait, sizes)
        };
        crate::metrics::METRICS.penalty_entries(sizes);
        self.changed.notify_waiters();
        wait
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Succeeded,
    Failed,
    /// The check could not be made (the store failed, the task ended).
    Undecided,
}

/// An attempt through the gate. Say how it ended ([`Pass::failed`],
/// [`Pass::succeeded`]); dropped unsaid, it only ends the reservation.
pub struct Pass<'a> {
    gate: &'a PenaltyBox,
    keys: Keys,
    done: bool,
}

impl<'a> Pass<'a> {
    fn new(gate: &'a PenaltyBox, keys: Keys) -> Pass<'a> {
        Pass {
            gate,
            keys,
            done: false,
        }
    }

    /// The credentials were wrong: the wait before this client (or user)
    /// may try again.
    pub fn failed(mut self) -> Duration {
        self.done = true;
        self.gate.finish(self.keys, Verdict::Failed)
    }

    pub fn succeeded(mut self) {
        self.done = true;
        self.gate.finish(self.keys, Verdict::Succeeded);
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.gate.finish(self.keys, Verdict::Undecided);
        }
    }
}

/// The address a penalty is kept for: IPv4 as is (a v4-mapped IPv6
/// address as IPv4), IPv6 by its /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> Schedule {
        Schedule {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(15),
            expire: Duration::from_secs(300),
            capacity: 100,
            per_user: true,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_wait_doubles_up_to_the_maximum() {
        let s = schedule();
        let waits: Vec<u64> = (0..7).map(|n| s.wait(n).as_secs()).collect();
        assert_eq!(waits, [0, 2, 4, 8, 15, 15, 15]);
        assert_eq!(s.wait(u32::MAX), Duration::from_secs(15));
    }

    #[tokio::test(start_paused = true)]
    async fn a_penalised_client_waits_before_its_next_attempt_is_looked_at() {
        let b = PenaltyBox::new(schedule());
        let k = b.keys(ip("192.0.2.1"), "a@x.org");
        for expected in [2, 4, 8, 15, 15] {
            let pass = b.try_pass(k).expect("the window is open");
            assert_eq!(pass.failed(), Duration::from_secs(expected));
            // Refused until the window opens again, however often asked.
            for _ in 0..3 {
                assert_eq!(b.try_pass(k).err(), Some(Duration::from_secs(expected)));
            }
            tokio::time::advance(Duration::from_secs(expected) - Duration::from_millis(1)).await;
            assert!(b.try_pass(k).is_err());
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        // A session waits its turn and then passes (even with the right
        // password it is not looked at before).
        let pass = b.try_pass(k).unwrap();
        assert_eq!(pass.failed(), Duration::from_secs(15));
        let t0 = Instant::now();
        let pass = b
            .pass(
                k,
                Patience {
                    penalty: Duration::from_secs(60),
                    busy: Duration::from_secs(60),
                },
            )
            .await
            .unwrap();
        assert_eq!(t0.elapsed(), Duration::from_secs(15));
        pass.succeeded();
    }

    #[tokio::test(start_paused = true)]
    async fn one_attempt_at_a_time_while_penalised() {
        let b = PenaltyBox::new(schedule());
        let k = b.keys(ip("192.0.2.1"), "a@x.org");
        // No failures yet: a few attempts run side by side, no more.
        let free: Vec<_> = (0..FREE_IN_FLIGHT)
            .map(|_| b.try_pass(k).unwrap())
            .collect();
        assert!(b.try_pass(k).is_err(), "a burst past the free checks");
        let mut free = free.into_iter();
        assert_eq!(free.next().unwrap().failed(), Duration::from_secs(2));
        drop(free);
        assert!(b.try_pass(k).is_err(), "penalised");
        tokio::time::advance(Duration::from_secs(2)).await;
        // Penalised: the second attempt waits while the first is checked.
        let p1 = b.try_pass(k).unwrap();
        assert!(b.try_pass(k).is_err());
        let other = b.keys(ip("192.0.2.1"), "b@x.org");
        assert!(b.try_pass(other).is_err(), "the address is reserved");
        // The reservation ends with the check; a queued attempt is woken.
        let queued = b.pass(
            k,
            Patience {
                penalty: Duration::from_secs(60),
                busy: Duration::from_secs(60),
            },
        );
        tokio::pin!(queued);
        assert!(futures_poll(&mut queued).is_none());
        p1.succeeded();
        assert!(futures_poll(&mut queued).is_some());
    }

    // A refusal says why: a burst past the free checks is capacity, a
    // failure's window is a penalty (the log line and the operator differ).
    #[tokio::test(start_paused = true)]
    async fn a_refusal_tells_capacity_from_penalty() {
        let b = PenaltyBox::new(schedule());
        let k = b.keys(ip("192.0.2.1"), "a@x.org");
        let impatient = Patience {
            penalty: Duration::ZERO,
            busy: Duration::ZERO,
        };
        let free: Vec<_> = (0..FREE_IN_FLIGHT)
            .map(|_| b.try_pass(k).unwrap())
            .collect();
        assert!(matches!(
            b.pass(k, impatient).await.err(),
            Some(Refused::Busy(_))
        ));
        let mut free = free.into_iter();
        free.next().unwrap().failed();
        drop(free);
        assert!(matches!(
            b.pass(k, impatient).await.err(),
            Some(Refused::Penalised(w)) if w > Duration::ZERO
        ));
    }

    /// One poll of a future (the waker does nothing).
    fn futures_poll<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match std::pin::Pin::new(f).poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_forgets_the_user_not_the_address() {
        let b = PenaltyBox::new(schedule());
        let bad = b.keys(ip("192.0.2.1"), "a@x.org");
        b.try_pass(bad).unwrap().failed();
        b.try_pass(b.keys(ip("192.0.2.9"), "a@x.org"))
            .err()
            .expect("the user is penalised from any address");
        let other_user = b.keys(ip("192.0.2.9"), "b@x.org");
        b.try_pass(other_user)
            .expect("another address, another user: free")
            .succeeded();
        tokio::time::advance(Duration::from_secs(2)).await;
        b.try_pass(bad).unwrap().succeeded();
        assert_eq!(
            b.sizes(),
            Sizes {
                clients: 1,
                users: 0
            }
        );
        // The address's count goes on from where it was.
        assert_eq!(b.try_pass(bad).unwrap().failed(), Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn names_are_keyed_as_addresses_normalise_and_ipv6_by_64() {
        let b = PenaltyBox::new(schedule());
        let c = ip("192.0.2.1");
        assert_eq!(b.keys(c, " A@X.org "), b.keys(c, "a@x.org"));
        assert_ne!(b.keys(c, "a@x.org"), b.keys(c, "b@x.org"));
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa::1")),
            client_key(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(client_key(ip("::ffff:192.0.2.1")), c);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_expire_and_the_tables_stay_bounded() {
        let b = PenaltyBox::new(Schedule {
            capacity: 3,
            ..schedule()
        });
        for n in 1..=10 {
            let k = b.keys(ip(&format!("192.0.2.{n}")), &format!("u{n}@x.org"));
            b.try_pass(k).unwrap().failed();
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(
            b.sizes(),
            Sizes {
                clients: 3,
                users: 3
            }
        );
        // The oldest were evicted, the newest kept.
        assert!(b.try_pass(b.keys(ip("192.0.2.1"), "z@x.org")).is_ok());
        let newest = b.keys(ip("192.0.2.10"), "z@x.org");
        assert!(b.try_pass(newest).is_err());
        tokio::time::advance(Duration::from_secs(300)).await;
        assert_eq!(
            b.sizes(),
            Sizes {
                clients: 0,
                users: 0
            }
        );
        assert!(b.try_pass(newest).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn penalties_off() {
        let b = PenaltyBox::new(Schedule {
            max: Duration::ZERO,
            ..schedule()
        });
        let k = b.keys(ip("192.0.2.1"), "a@x.org");
        for _ in 0..5 {
            assert_eq!(b.try_pass(k).unwrap().failed(), Duration::ZERO);
        }
        assert_eq!(
            b.sizes(),
            Sizes {
                clients: 0,
                users: 0
            }
        );
    }
}
