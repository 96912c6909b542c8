//! Group commit: making many deliveries durable with few flushes.
//!
//! # The problem
//! A delivery is durable when its blob's bytes, its blob name, its Maildir
//! name and its index row are on disk. Done one by one that is four fsyncs per
//! message (file, blob directory, Maildir directory, SQLite WAL), and on this
//! kind of storage each is a round trip to the device and most of the CPU a
//! delivery costs.
//!
//! # What we do
//! In [`Durability::Batched`] mode (the default) a delivery waits for two
//! group flushes, each one `syncfs(2)` of the data directory's filesystem
//! that covers every writer who finished writing before it started:
//! 1. after writing the blob's bytes, before the blob gets any name — so no
//!    name can ever point at content that is not on disk;
//! 2. after linking the blob into the Maildirs and committing the index rows,
//!    before the replies.
//!
//! Concurrent deliveries share both flushes, so their cost is spread over
//! everything in flight. SQLite runs with `synchronous=NORMAL`, which keeps
//! the WAL consistent (checkpoints still sync) and leaves commit durability to
//! the second flush.
//!
//! A crash before the second flush returns can leave any subset of an
//! unacknowledged delivery's names and rows; the reconciling scan handles each
//! case (a file without a row is indexed, a row without a file is expunged, a
//! blob without a Maildir link is garbage). Nothing acknowledged is lost.
//!
//! # Alternatives
//! - [`Durability::Fsync`]: fsync every file and directory and commit with
//!   `synchronous=FULL`. No flush is shared and `syncfs` is not used, which
//!   suits a data directory on a filesystem busy with other writers (a
//!   `syncfs` flushes their dirty data too).
//! - A write-ahead journal of our own: a second log beside SQLite's, more code
//!   and more recovery paths for the same effect.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use crate::{Error, IoContext, Result, sync_dir};

/// How deliveries are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Group flushes with `syncfs`, shared by everything in flight.
    #[default]
    Batched,
    /// Every file and directory fsynced on its own.
    Fsync,
}

/// A durability mode that is neither "batched" nor "fsync".
#[derive(Debug, thiserror::Error)]
#[error("durability must be \"batched\" or \"fsync\", not {0:?}")]
pub struct BadDurability(pub String);

impl std::str::FromStr for Durability {
    type Err = BadDurability;
    fn from_str(s: &str) -> std::result::Result<Self, BadDurability> {
        match s {
            "batched" => Ok(Durability::Batched),
            "fsync" => Ok(Durability::Fsync),
            other => Err(BadDurability(other.to_string())),
        }
    }
}

#[derive(Default)]
struct Tickets {
    /// Tickets handed out: a writer takes one after its writes are done.
    issued: u64,
    /// Every ticket up to this one is durable.
    synced: u64,
    /// A flush is running.
    flushing: bool,
    /// Tickets up to this one were in a flush that failed.
    failed_through: u64,
}

/// The group committer of one filesystem.
pub struct GroupSync {
    mode: Durability,
    fs: File,
    tickets: Mutex<Tickets>,
    done: Condvar,
    /// Flushes done so far (for figures and tests).
    flushes: AtomicU64,
}

impl std::fmt::Debug for GroupSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupSync")
            .field("mode", &self.mode)
            .finish()
    }
}

impl GroupSync {
    /// A committer for the filesystem that holds `dir`.
    pub fn new(dir: &Path, mode: Durability) -> Result<GroupSync> {
        let fs = File::open(dir).ctx(|| format!("open {}", dir.display()))?;
        Ok(GroupSync {
            mode,
            fs,
            tickets: Mutex::new(Tickets::default()),
            done: Condvar::new(),
            flushes: AtomicU64::new(0),
        })
    }

    pub fn mode(&self) -> Durability {
        self.mode
    }

    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// A name was created or removed in `dir`: fsync it now in `Fsync` mode;
    /// in `Batched` mode the next group flush covers it.
    pub fn dir_written(&self, dir: &Path) -> Result<()> {
        match self.mode {
            Durability::Fsync => sync_dir(dir),
            Durability::Batched => Ok(()),
        }
    }

    /// A file's bytes were written: `fdatasync` it in `Fsync` mode, wait for
    /// a group flush in `Batched` mode.
    pub fn file_written(&self, file: &File) -> Result<()> {
        match self.mode {
            Durability::Fsync => file.sync_data().ctx(|| "fsync a new blob".to_string()),
            Durability::Batched => self.sync(),
        }
    }

    /// In `Batched` mode, return once everything this thread wrote before the
    /// call is durable. In `Fsync` mode everything already is.
    pub fn sync(&self) -> Result<()> {
        if self.mode == Durability::Fsync {
            return Ok(());
        }
        let poisoned = || Error::Io {
            context: "group sync".into(),
            source: std::io::Error::other("lock poisoned by an earlier panic"),
        };
        let mut t = self.tickets.lock().map_err(|_| poisoned())?;
        t.issued += 1;
        let mine = t.issued;
        loop {
            if mine <= t.failed_through {
                return Err(Error::Io {
                    context: "syncfs of the data directory".into(),
                    source: std::io::Error::other("a group flush failed; see the log"),
                });
            }
            if t.synced >= mine {
                return Ok(());
            }
            if t.flushing {
                t = self.done.wait(t).map_err(|_| poisoned())?;
                continue;
            }
            t.flushing = true;
            let upto = t.issued;
            drop(t);
            let flushed = rustix::fs::syncfs(&self.fs);
            self.flushes.fetch_add(1, Ordering::Relaxed);
            t = self.tickets.lock().map_err(|_| poisoned())?;
            t.flushing = false;
            match flushed {
                Ok(()) => t.synced = t.synced.max(upto),
                // Every writer of this batch must fail: a later syncfs would
                // not report the lost writeback again.
                Err(e) => {
                    tracing::error!(error = %e, "syncfs of the data directory failed");
                    t.failed_through = t.failed_through.max(upto);
                }
            }
            self.done.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn concurrent_callers_share_flushes() {
        let d = tempfile::tempdir().unwrap();
        let g = Arc::new(GroupSync::new(d.path(), Durability::Batched).unwrap());
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        g.sync().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // 320 requests; each waits for a flush that started after it asked.
        let n = g.flushes();
        assert!((1..=320).contains(&n), "{n} flushes");
    }

    #[test]
    fn fsync_mode_never_flushes_the_filesystem() {
        let d = tempfile::tempdir().unwrap();
        let g = GroupSync::new(d.path(), Durability::Fsync).unwrap();
        g.sync().unwrap();
        assert_eq!(g.flushes(), 0);
        assert!("sometimes".parse::<Durability>().is_err());
        assert_eq!("fsync".parse::<Durability>().unwrap(), Durability::Fsync);
    }
}
