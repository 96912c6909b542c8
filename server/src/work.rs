//! Blocking work (files, fsync, SQLite, message parsing) and who may use
//! how much of the blocking pool.
//!
//! # The problem
//! Every protocol runs its store calls on tokio's blocking pool, which is
//! bounded (each thread keeps a malloc arena). When any session could put
//! any number of jobs on it, two users sending 64 costly SEARCHes filled all
//! 64 threads, and an unrelated delivery waited 40 s for a thread, a login
//! 30 s.
//!
//! # The mechanism
//! All blocking work goes through [`run`], in one of two lanes:
//! - [`Lane::User`]: work a client session asked for (IMAP, POP3). It takes a
//!   permit of that user's own semaphore (`blocking_per_user`, default 4),
//!   then one of the session lane's (`blocking_threads - blocking_reserved`).
//!   Both semaphores are FIFO, and a user holds at most their own budget of
//!   the lane's permits, so a user with 60 queued searches waits behind
//!   themselves, and every other user's next job is at most
//!   `blocking_per_user` jobs per other active user away.
//! - [`Lane::Reserved`]: deliveries (LMTP) and logins (user lookup, account
//!   open). Their own `blocking_reserved` permits (default 16), never taken
//!   by sessions, so mail and logins never queue behind anyone's searches.
//!
//! The runtime's pool has room for both lanes plus a margin for the few
//! callers outside them (store open at start, replication), so a permit
//! always finds a thread. Permits are moved into the job, so a job whose
//! client went away still counts until it really ends.
//!
//! Rejected: one semaphore for everything (fair among jobs, not among users:
//! the user with most jobs gets most threads); a worker thread per user
//! (thousands of idle threads for thousands of IDLE sessions).
//!
//! The budget is process-wide, like the pool it shares: [`configure`] sets it
//! once at start; until then (tests of single sessions, the CLI) defaults
//! apply.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Which share of the blocking pool a job is charged to.
#[derive(Debug, Clone, Copy)]
pub enum Lane<'a> {
    /// Work a session of this user asked for.
    User(&'a str),
    /// Deliveries and logins: reserved capacity.
    Reserved,
}

/// The sizes, from `[server]` in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// All permits: the session lane plus the reserved one.
    pub threads: usize,
    /// One user's share of the session lane.
    pub per_user: usize,
    /// Kept for deliveries and logins.
    pub reserved: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            threads: 64,
            per_user: 4,
            reserved: 16,
        }
    }
}

impl Budget {
    /// Threads the runtime's blocking pool needs: both lanes and a margin
    /// for work outside them.
    pub fn pool_threads(&self) -> usize {
        self.threads + 16
    }
}

struct Pool {
    per_user: usize,
    sessions: Arc<Semaphore>,
    reserved: Arc<Semaphore>,
    users: Mutex<Users>,
}

/// Each active user's semaphore; dropped when nobody holds or waits on it.
struct Users {
    semaphores: HashMap<String, Arc<Semaphore>>,
    /// The map's size at which entries nobody uses are swept.
    sweep_at: usize,
}

const SWEEP_MIN: usize = 1024;

static POOL: OnceLock<Pool> = OnceLock::new();

fn pool() -> &'static Pool {
    POOL.get_or_init(|| Pool::new(Budget::default()))
}

impl Pool {
    fn new(b: Budget) -> Pool {
        let reserved = b.reserved.clamp(1, b.threads.saturating_sub(1).max(1));
        Pool {
            per_user: b.per_user.max(1),
            sessions: Arc::new(Semaphore::new(b.threads.saturating_sub(reserved).max(1))),
            reserved: Arc::new(Semaphore::new(reserved)),
            users: Mutex::new(Users {
                semaphores: HashMap::new(),
                sweep_at: SWEEP_MIN,
            }),
        }
    }

    fn user_semaphore(&self, user: &str) -> Arc<Semaphore> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        // Entries of users whose waiting job was cancelled (its client went
        // away) are swept now and then, so the map stays as small as the
        // set of users with work.
        if users.semaphores.len() >= users.sweep_at {
            users.semaphores.retain(|_, s| Arc::strong_count(s) > 1);
            users.sweep_at = (users.semaphores.len() * 2).max(SWEEP_MIN);
        }
        users
            .semaphores
            .entry(user.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_user)))
            .clone()
    }

    /// Forget `user`'s semaphore when no job holds or waits on it.
    fn release_user(&self, user: &str) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if users
            .semaphores
            .get(user)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            users.semaphores.remove(user);
        }
    }
}

/// Set the budget (once, at start). `false` if it was set already.
pub fn configure(budget: Budget) -> bool {
    POOL.set(Pool::new(budget)).is_ok()
}

/// The permits a job holds until it ends.
struct Permits {
    _lane: OwnedSemaphorePermit,
    _user: Option<UserShare>,
}

/// A permit of one user's semaphore; the user's entry goes when unused.
struct UserShare {
    user: String,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for UserShare {
    fn drop(&mut self) {
        drop(self.permit.take());
        pool().release_user(&self.user);
    }
}

/// The job failed to run to its end (it panicked).
#[derive(Debug, thiserror::Error)]
#[error("blocking task failed: {0}")]
pub struct Failed(String);

/// Run `f` on the blocking pool once `lane` has room for it.
pub async fn run<T: Send + 'static>(
    lane: Lane<'_>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Failed> {
    let pool = pool();
    // The semaphores are never closed, so acquiring cannot fail.
    let closed = |_| Failed("the blocking pool is closed".into());
    let permits = match lane {
        Lane::User(user) => {
            let mine = pool.user_semaphore(user);
            let share = UserShare {
                user: user.to_string(),
                permit: Some(mine.acquire_owned().await.map_err(closed)?),
            };
            Permits {
                _lane: pool
                    .sessions
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(closed)?,
                _user: Some(share),
            }
        }
        Lane::Reserved => Permits {
            _lane: pool
                .reserved
                .clone()
                .acquire_owned()
                .await
                .map_err(closed)?,
            _user: None,
        },
    };
    tokio::task::spawn_blocking(move || {
        let _held = permits;
        f()
    })
    .await
    .map_err(|e| Failed(e.to_string()))
}

/// [`run`] for store calls: a failed job is a store error.
pub async fn store<T: Send + 'static>(
    lane: Lane<'_>,
    f: impl FnOnce() -> cove_store::Result<T> + Send + 'static,
) -> cove_store::Result<T> {
    match run(lane, f).await {
        Ok(r) => r,
        Err(e) => Err(cove_store::Error::Index(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A user with many jobs holds at most their budget of threads, and
    /// another user's job and a reserved job run while all of them wait.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_user_cannot_take_every_thread() {
        let budget = Budget::default();
        configure(budget);
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (release, gate) = tokio::sync::watch::channel(false);
        let mut hog = tokio::task::JoinSet::new();
        for _ in 0..40 {
            let (running, peak, mut gate) = (running.clone(), peak.clone(), gate.clone());
            hog.spawn(async move {
                run(Lane::User("hog@example.org"), move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    let handle = tokio::runtime::Handle::current();
                    let _ = handle.block_on(gate.wait_for(|open| *open));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            });
        }
        // Until the hog's jobs are released, others still get threads.
        let other = tokio::time::timeout(
            Duration::from_secs(60),
            run(Lane::User("other@example.org"), || 1),
        );
        assert_eq!(other.await.expect("other user's job ran").unwrap(), 1);
        let reserved = tokio::time::timeout(Duration::from_secs(60), run(Lane::Reserved, || 2));
        assert_eq!(reserved.await.expect("reserved job ran").unwrap(), 2);
        release.send_replace(true);
        while let Some(r) = hog.join_next().await {
            r.unwrap().unwrap();
        }
        assert!(peak.load(Ordering::SeqCst) <= budget.per_user);
        // Only this test's users: other unit tests of this binary run jobs
        // of their own users on the same process-wide pool meanwhile.
        let users = pool().users.lock().unwrap();
        for user in ["hog@example.org", "other@example.org"] {
            assert!(!users.semaphores.contains_key(user), "{user} kept");
        }
    }
}
