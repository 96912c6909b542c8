//! Background upkeep of the data directory, so that no operator has to run
//! a command for mail to behave: every tick (a second), on the blocking
//! pool, never on the reactor:
//! - blobs of expunged or deleted mail that nothing links any more are
//!   removed, at most [`Housekeeping::batch`] per tick (cove-dedup's
//!   `collect_unlinked`, safe while deliveries run, like `cove dedup gc`),
//!   and a full collection runs every `[server] gc_interval_secs` for what
//!   a crash or another program left;
//! - the space reserve is written again once the disk has room
//!   (cove-dedup's `reserve.rs`);
//! - message files that serve a quarantined (corrupt) copy are relinked to
//!   a verified copy, or their users queued so that replication fetches
//!   one from the peer (store's `account/content.rs`); this opens every
//!   account, so it runs when the damaged set changes and then every
//!   [`Housekeeping::repair_every`] while damage is left;
//! - the index connections of open accounts nobody has used for
//!   `[server] index_idle_close_secs` are closed (store's
//!   `Store::close_idle_indexes`), so that accounts whose sessions sit in
//!   IDLE or that a delivery opened cost a few KiB, not a few hundred.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cove_store::{ContentId, Store};
use tokio::sync::watch;

/// What the housekeeping does and how often.
#[derive(Debug, Clone)]
pub struct Housekeeping {
    pub tick: Duration,
    /// Blobs collected per tick at most.
    pub batch: usize,
    /// Full collections; `None`: never.
    pub full_gc_every: Option<Duration>,
    pub repair_every: Duration,
    /// Close the index of an account unused this long; `None`: never.
    pub index_idle_close: Option<Duration>,
}

/// What the previous ticks did (kept between them).
#[derive(Default)]
struct State {
    last_full_gc: Option<Instant>,
    damaged: HashSet<ContentId>,
    last_repair: Option<Instant>,
}

impl Housekeeping {
    /// Run until `stopped` turns true.
    pub async fn run(self, store: Arc<Store>, mut stopped: watch::Receiver<bool>) {
        let mut state = State {
            last_full_gc: Some(Instant::now()),
            ..State::default()
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.tick) => {}
                _ = stopped.changed() => {}
            }
            if *stopped.borrow() {
                return;
            }
            let (store, this) = (store.clone(), self.clone());
            match tokio::task::spawn_blocking(move || {
                this.tick(&store, &mut state);
                state
            })
            .await
            {
                Ok(s) => state = s,
                Err(e) => {
                    tracing::error!(error = %e, "housekeeping failed; restarting it");
                    state = State::default();
                }
            }
        }
    }

    fn tick(&self, store: &Store, state: &mut State) {
        let blobs = store.blobs();
        let started = Instant::now();
        let full_due = self
            .full_gc_every
            .is_some_and(|every| state.last_full_gc.is_none_or(|t| t.elapsed() >= every));
        let collected = if full_due {
            state.last_full_gc = Some(Instant::now());
            blobs.gc()
        } else if blobs.has_unlinked() {
            blobs.collect_unlinked(self.batch)
        } else {
            Ok(cove_store::GcReport::default())
        };
        match collected {
            Ok(r) if r.removed_blobs > 0 || r.removed_tmp > 0 => {
                tracing::info!(
                    removed_blobs = r.removed_blobs,
                    freed_bytes = r.freed_bytes,
                    kept_in_use = r.kept_in_use,
                    removed_tmp = r.removed_tmp,
                    full = full_due,
                    took_ms = started.elapsed().as_millis() as u64,
                    "collected blobs no mailbox uses any more"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "blob collection failed; retried next tick"),
        }
        blobs.reserve().restore_if_room();
        if let Some(idle) = self.index_idle_close {
            let closed = store.close_idle_indexes(idle);
            if closed > 0 {
                tracing::debug!(closed, "closed the indexes of idle accounts");
                give_back_free_heap();
            }
        }
        self.repair(store, state);
    }

    fn repair(&self, store: &Store, state: &mut State) {
        let damaged = match store.blobs().damaged() {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "could not list the quarantined blobs");
                return;
            }
        };
        let due = damaged != state.damaged
            || (!damaged.is_empty()
                && state
                    .last_repair
                    .is_none_or(|t| t.elapsed() >= self.repair_every));
        state.damaged = damaged;
        if !due {
            return;
        }
        state.last_repair = Some(Instant::now());
        match store.repair_damaged() {
            Ok(r) if r.damaged > 0 => tracing::warn!(
                damaged = r.damaged,
                relinked = r.relinked,
                from_peer = ?r.queued_users,
                "corrupt content: message files relinked to verified copies; the users listed fetch the rest from the peer"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "repairing corrupt content failed; retried later")
            }
        }
    }
}

/// Give the allocator's free pages back to the system. What closed
/// indexes freed (about 190 KiB each, store/examples/account_memory.rs)
/// lies between blocks still in use, where glibc keeps it resident: closing
/// them without this left the server's RSS where it was
/// (benches/results/idle-memory-2026-12-07-accounts.md). Called when
/// indexes were closed, so at most once a tick.
fn give_back_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes a plain integer and only returns free
        // pages to the system (madvise); glibc documents it as MT-Safe.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
