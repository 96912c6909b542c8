//! Password hashing (argon2id for every password cove sets), and the
//! login rules every protocol shares: when a plaintext password may be
//! accepted, how credentials are checked, how a failed login is handled.
//!
//! Hashes imported from Dovecot (`cove user import`) stay in their own
//! scheme (see [`schemes`]) until the user's first good login, which
//! replaces them with argon2id.

mod md5_crypt;
pub mod penalty;
pub mod schemes;
mod service;

pub use service::{AuthResult, Authenticator};

use crate::work::{self, Lane};
use anyhow::Context;
use argon2::{Argon2, PasswordHasher};
use cove_store::{Address, PasswordHash, Store};
use schemes::LegacyHash;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// A password in memory; `Debug` never prints it.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The argon2id cost of the hashes cove makes (`[auth] argon2_*`).
/// Checking a hash uses the cost written in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hashing {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Hashing {
    /// argon2id m=19 MiB, t=2, p=1 (OWASP's first choice; the argon2
    /// crate's defaults).
    pub const DEFAULT: Hashing = Hashing {
        memory_kib: argon2::Params::DEFAULT_M_COST,
        iterations: argon2::Params::DEFAULT_T_COST,
        parallelism: argon2::Params::DEFAULT_P_COST,
    };

    fn hasher(&self) -> anyhow::Result<Argon2<'static>> {
        let params = argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
        Ok(Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            params,
        ))
    }
}

/// The process's [`Hashing`], set from the configuration at start.
static HASHING: std::sync::RwLock<Hashing> = std::sync::RwLock::new(Hashing::DEFAULT);

/// Use `hashing` for every hash made from now on (once at start, from
/// `[auth]`; the server and the admin commands alike).
pub fn set_hashing(hashing: Hashing) {
    if let Ok(mut h) = HASHING.write() {
        *h = hashing;
    }
}

fn hashing() -> Hashing {
    HASHING.read().map(|h| *h).unwrap_or(Hashing::DEFAULT)
}

/// Hash a new password with argon2id, at the configured cost.
pub fn hash_password(password: &Secret) -> anyhow::Result<PasswordHash> {
    hash_password_with(password, &hashing())
}

/// Hash a new password with argon2id at the cost `hashing` names.
pub fn hash_password_with(password: &Secret, hashing: &Hashing) -> anyhow::Result<PasswordHash> {
    let hash = hashing
        .hasher()?
        .hash_password(password.0.as_bytes())
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))
        .context("hash the password")?;
    Ok(PasswordHash(hash.to_string()))
}

/// What a password check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Wrong password (or a stored hash nothing can match).
    Bad,
    /// Right password, stored as cove stores passwords (argon2id).
    Good,
    /// Right password, stored in a legacy (Dovecot) scheme: replace it.
    GoodLegacy,
}

/// Check a password against a stored hash: cove's own argon2 PHC string,
/// or a `{SCHEME}` hash imported from Dovecot. Blocking (argon2 and the
/// crypt schemes take milliseconds to tens of milliseconds): run it off
/// the reactor.
pub fn check_password(password: &Secret, stored: &PasswordHash) -> Verdict {
    if stored.0.starts_with('{') {
        return match LegacyHash::parse(&stored.0) {
            Ok(legacy) if legacy.verify(password.0.as_bytes()) => Verdict::GoodLegacy,
            _ => Verdict::Bad,
        };
    }
    if verify_argon2(password.0.as_bytes(), &stored.0) {
        Verdict::Good
    } else {
        Verdict::Bad
    }
}

/// Working memory an argon2 check may keep on its thread between checks,
/// at most (a larger hash's memory is allocated for the check alone).
const KEPT_ARGON2_MEMORY: usize = 64 * 1024 * 1024;
/// Working memory all password threads together may keep: on a machine
/// with many cores, the threads past it allocate per check (the process
/// keeps at most this much for logins, whatever the core count).
const KEPT_ARGON2_MEMORY_TOTAL: usize = 128 * 1024 * 1024;
/// What the password threads keep now.
static KEPT_ARGON2_NOW: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Take `bytes` more of [`KEPT_ARGON2_MEMORY_TOTAL`] (false: not that much
/// is left), or give back (negative growth is always taken).
fn claim_kept_argon2(from: usize, to: usize) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    KEPT_ARGON2_NOW
        .fetch_update(Relaxed, Relaxed, |now| {
            let next = now.saturating_sub(from).checked_add(to)?;
            (to <= from || next <= KEPT_ARGON2_MEMORY_TOTAL).then_some(next)
        })
        .is_ok()
}

thread_local! {
    /// Whether this thread keeps its argon2 working memory (the password
    /// threads do: see [`PasswordCheckers`]).
    static KEEPS_ARGON2_MEMORY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// That memory.
    static ARGON2_MEMORY: std::cell::RefCell<Vec<argon2::Block>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Check a password against an argon2 PHC string (`$argon2id$v=19$m=..`),
/// with the cost written in it, in constant time. On a password thread
/// the working memory (m KiB) is the thread's own, kept between checks:
/// with the allocator's fixed mmap threshold (main.rs) each check
/// otherwise mapped, faulted in, zeroed and unmapped 19 MiB — a third of
/// a login's 46 ms on this project's VM (32 ms with the memory kept).
pub(crate) fn verify_argon2(password: &[u8], stored: &str) -> bool {
    use argon2::password_hash::phc::{Output, PasswordHash as Phc};
    let Ok(parsed) = Phc::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = argon2::Algorithm::try_from(parsed.algorithm.as_str()) else {
        return false;
    };
    let version = match parsed.version.map(argon2::Version::try_from) {
        None => argon2::Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let Ok(params) = argon2::Params::try_from(&parsed) else {
        return false;
    };
    let blocks = params.block_count();
    let hasher = Argon2::new(algorithm, version, params);
    let mut out = vec![0u8; expected.len()];
    let hashed = if KEEPS_ARGON2_MEMORY.get()
        && blocks.saturating_mul(argon2::Block::SIZE) <= KEPT_ARGON2_MEMORY
    {
        ARGON2_MEMORY.with_borrow_mut(|memory| {
            let size = |n: usize| n * argon2::Block::SIZE;
            if memory.len() != blocks {
                if !claim_kept_argon2(size(memory.len()), size(blocks)) {
                    return hasher.hash_password_into(password, salt, &mut out);
                }
                *memory = vec![argon2::Block::default(); blocks];
            }
            hasher.hash_password_into_with_memory(password, salt, &mut out, &mut memory[..])
        })
    } else {
        hasher.hash_password_into(password, salt, &mut out)
    };
    // Output's equality is constant-time.
    hashed.is_ok() && Output::new(&out).is_ok_and(|computed| computed == *expected)
}

/// Whether a password matches a stored hash (see [`check_password`]).
pub fn verify_password(password: &Secret, stored: &PasswordHash) -> bool {
    check_password(password, stored) != Verdict::Bad
}

/// A good password check on the password threads: with the new argon2id
/// hash when the stored one was legacy.
enum Checked {
    Bad,
    Good,
    Rehashed(PasswordHash),
}

/// A job for the password threads.
type Job = Box<dyn FnOnce() + Send>;

/// Password checks on a few dedicated threads.
///
/// An argon2 check allocates a ~19 MiB buffer. Run on tokio's blocking pool
/// (up to 512 threads), each thread's malloc arena keeps such a buffer after
/// use: a burst of logins left 9.8 GiB resident after 756 logins in the
/// IMAP benchmark. A fixed set of threads bounds both the parallelism and
/// the memory kept (one buffer per thread).
pub struct PasswordCheckers {
    jobs: std::sync::mpsc::Sender<Job>,
    /// Checks made (also in `cove_password_checks_total`).
    checks: Arc<std::sync::atomic::AtomicU64>,
    /// Replace a legacy hash at the first good login (`[auth]
    /// rehash_legacy`).
    rehash_legacy: bool,
}

impl PasswordCheckers {
    pub fn new(threads: usize) -> std::io::Result<PasswordCheckers> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
        for n in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("cove-password-{n}"))
                .spawn(move || {
                    // One argon2 working memory per thread, kept.
                    KEEPS_ARGON2_MEMORY.set(true);
                    loop {
                        let job = match queue.lock() {
                            Ok(q) => q.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return, // every sender is gone: shutting down
                        }
                    }
                })?;
        }
        Ok(PasswordCheckers {
            jobs,
            checks: Arc::default(),
            rehash_legacy: true,
        })
    }

    /// Keep legacy hashes as they are (`[auth] rehash_legacy = false`):
    /// their logins cost what their scheme costs.
    pub fn keeping_legacy_hashes(mut self) -> PasswordCheckers {
        self.rehash_legacy = false;
        self
    }

    /// How many passwords these threads have checked.
    pub fn checks(&self) -> u64 {
        self.checks.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Check a password against a stored hash on the password threads.
    pub async fn verify(&self, password: Secret, stored: PasswordHash) -> bool {
        !matches!(self.check_rehash(password, stored).await, Checked::Bad)
    }

    /// Check a user's password on the password threads; when it matched a
    /// legacy (Dovecot) hash, store an argon2id hash in its place, so the
    /// legacy one is never used again. A failure to store the new hash is
    /// logged and does not fail the login (the next one tries again).
    pub async fn check(
        &self,
        store: &Arc<Store>,
        address: &Address,
        password: Secret,
        stored: PasswordHash,
    ) -> bool {
        match self.check_rehash(password, stored.clone()).await {
            Checked::Bad => false,
            Checked::Good => true,
            Checked::Rehashed(new) => {
                let scheme = stored.0.get(1..).and_then(|s| s.split_once('}'));
                let scheme = scheme.map(|(name, _)| name.to_string()).unwrap_or_default();
                let store = store.clone();
                let who = address.clone();
                let replaced = work::run(Lane::Reserved, move || {
                    store.directory().replace_password(&who, &stored, new)
                })
                .await;
                match replaced {
                    Ok(Ok(true)) => {
                        tracing::info!(user = %address, scheme = %scheme, "password rehashed to argon2id")
                    }
                    // Changed meanwhile (`cove user passwd`, a peer): keep that.
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(user = %address, error = %e, "password rehash not stored")
                    }
                    Err(e) => {
                        tracing::warn!(user = %address, error = %e, "password rehash task failed")
                    }
                }
                true
            }
        }
    }

    /// The check, and the argon2id hash to store if the old one was legacy.
    async fn check_rehash(&self, password: Secret, stored: PasswordHash) -> Checked {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let checks = self.checks.clone();
        let rehash_legacy = self.rehash_legacy;
        let job: Job = Box::new(move || {
            checks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            crate::metrics::METRICS.password_check();
            let checked = match check_password(&password, &stored) {
                Verdict::Bad => Checked::Bad,
                Verdict::Good => Checked::Good,
                Verdict::GoodLegacy if !rehash_legacy => Checked::Good,
                Verdict::GoodLegacy => match hash_password(&password) {
                    Ok(new) => Checked::Rehashed(new),
                    Err(e) => {
                        tracing::warn!(error = %e, "password rehash failed");
                        Checked::Good
                    }
                },
            };
            let _ = tx.send(checked);
        });
        if self.jobs.send(job).is_err() {
            return Checked::Bad;
        }
        rx.await.unwrap_or(Checked::Bad)
    }
}

/// RFC 3501 §6.2.3, RFC 2595 §2.2, RFC 8314: a password may cross the
/// connection in clear text only inside TLS, from loopback, or where the
/// operator allows it.
pub fn plaintext_allowed(tls: bool, peer: IpAddr, allowed_by_config: bool) -> bool {
    tls || peer.is_loopback() || allowed_by_config
}

/// A failed login: one log line fail2ban can match (`<proto> login failed
/// user=<name> peer=<ip:port>`), then the configured delay before the
/// client hears about it.
pub async fn login_failed(proto: &str, username: &str, peer: SocketAddr, delay: Duration) {
    if let Some(p) = crate::metrics::Proto::from_name(proto) {
        crate::metrics::METRICS.login(p, false);
    }
    tracing::warn!(
        "{proto} login failed user={} peer={}",
        crate::client_text::ClientText::word(username),
        peer
    );
    tokio::time::sleep(delay).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::PasswordVerifier;

    fn verifies(password: &str, stored: &PasswordHash) -> bool {
        let parsed = argon2::password_hash::phc::PasswordHash::new(&stored.0).unwrap();
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    }

    #[tokio::test]
    async fn password_threads_check_passwords() {
        let checkers = PasswordCheckers::new(2).unwrap();
        let h = hash_password(&Secret("pw".into())).unwrap();
        assert!(checkers.verify(Secret("pw".into()), h.clone()).await);
        assert!(!checkers.verify(Secret("nope".into()), h).await);
    }

    #[tokio::test]
    async fn a_legacy_hash_is_replaced_by_argon2id_at_the_first_good_login() {
        let (_dir, store) = crate::test_store("t");
        let a = Address::parse("a@x.org").unwrap();
        // doveadm pw -s SSHA256 -p 'Tr0ub4dor&3'
        let legacy =
            PasswordHash("{SSHA256}bGiAUZeDjNGhMSA4o9RYzbKyVy+0QhEivtfCCc3aOUqP0HG0".into());
        store.add_user(&a, Some(legacy.clone()), 0).unwrap();
        let checkers = PasswordCheckers::new(1).unwrap();
        let stored = || store.user(&a).unwrap().unwrap().password.unwrap();

        let wrong = Secret("Tr0ub4dor&4".into());
        assert!(!checkers.check(&store, &a, wrong, legacy.clone()).await);
        assert_eq!(stored(), legacy, "a wrong password changes nothing");

        let right = || Secret("Tr0ub4dor&3".into());
        assert_eq!(check_password(&right(), &legacy), Verdict::GoodLegacy);
        assert!(checkers.check(&store, &a, right(), legacy.clone()).await);
        let new = stored();
        assert!(new.0.starts_with("$argon2id$"), "not rehashed");
        assert_eq!(check_password(&right(), &new), Verdict::Good);
        assert!(checkers.check(&store, &a, right(), new.clone()).await);
        assert_eq!(stored(), new, "an argon2id hash is kept");
        // A login that read the legacy hash before another one replaced it
        // still succeeds, and leaves the newer hash alone.
        assert!(checkers.check(&store, &a, right(), legacy.clone()).await);
        assert_eq!(stored(), new);
    }

    #[tokio::test]
    async fn a_legacy_hash_is_kept_when_the_operator_says_so() {
        let (_dir, store) = crate::test_store("t");
        let a = Address::parse("a@x.org").unwrap();
        let legacy =
            PasswordHash("{SSHA256}bGiAUZeDjNGhMSA4o9RYzbKyVy+0QhEivtfCCc3aOUqP0HG0".into());
        store.add_user(&a, Some(legacy.clone()), 0).unwrap();
        let checkers = PasswordCheckers::new(1).unwrap().keeping_legacy_hashes();
        let right = Secret("Tr0ub4dor&3".into());
        assert!(checkers.check(&store, &a, right, legacy.clone()).await);
        let stored = store.user(&a).unwrap().unwrap().password.unwrap();
        assert_eq!(stored, legacy, "rehashed although rehash_legacy = false");
    }

    #[test]
    fn new_hashes_have_the_configured_cost() {
        let cheap = Hashing {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let h = hash_password_with(&Secret("pw".into()), &cheap).unwrap();
        assert!(h.0.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{}", h.0);
        assert_eq!(check_password(&Secret("pw".into()), &h), Verdict::Good);
        assert_eq!(check_password(&Secret("pW".into()), &h), Verdict::Bad);
    }

    // A password thread keeps its argon2 memory between checks: hashes of
    // other costs, and wrong passwords after right ones, are still told
    // apart exactly (the memory is resized and overwritten, never trusted).
    #[tokio::test]
    async fn password_threads_reuse_their_memory_across_costs() {
        let checkers = PasswordCheckers::new(1).unwrap();
        let hashes: Vec<PasswordHash> = [(64, 1), (128, 2), (19456, 2), (64, 3)]
            .into_iter()
            .map(|(m, t)| {
                let cost = Hashing {
                    memory_kib: m,
                    iterations: t,
                    parallelism: 1,
                };
                hash_password_with(&Secret(format!("pw{m}.{t}")), &cost).unwrap()
            })
            .collect();
        for round in 0..2 {
            for (h, (m, t)) in hashes.iter().zip([(64, 1), (128, 2), (19456, 2), (64, 3)]) {
                let right = Secret(format!("pw{m}.{t}"));
                assert!(
                    checkers.verify(right, h.clone()).await,
                    "round {round}: {}",
                    h.0
                );
                let wrong = Secret(format!("pw{m}.{t}x"));
                assert!(
                    !checkers.verify(wrong, h.clone()).await,
                    "round {round}: {}",
                    h.0
                );
            }
        }
        // A legacy {ARGON2ID} hash goes the same way (schemes.rs).
        let legacy = PasswordHash(format!("{{ARGON2ID}}{}", hashes[0].0));
        assert!(
            checkers
                .verify(Secret("pw64.1".into()), legacy.clone())
                .await
        );
        assert!(!checkers.verify(Secret("pw64.2".into()), legacy).await);
    }

    #[test]
    fn plaintext_passwords_need_tls_loopback_or_permission() {
        let remote: IpAddr = "192.0.2.7".parse().unwrap();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(!plaintext_allowed(false, remote, false));
        assert!(plaintext_allowed(true, remote, false));
        assert!(plaintext_allowed(false, local, false));
        assert!(plaintext_allowed(false, "::1".parse().unwrap(), false));
        assert!(plaintext_allowed(false, remote, true));
    }

    #[test]
    fn hash_then_verify() {
        let h = hash_password(&Secret("correct horse".into())).unwrap();
        assert!(h.0.starts_with("$argon2id$"));
        assert!(verifies("correct horse", &h));
        assert!(!verifies("wrong", &h));
        assert_eq!(format!("{:?}", Secret("x".into())), "<redacted>");
    }
}
