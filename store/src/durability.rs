//! Group commit: making many deliveries durable with one flush.
//!
//! # The problem
//! A delivery is durable when its blob's bytes, its blob name, its Maildir
//! name and its index row are on disk. Done one by one that is four fsyncs per
//! message (file, blob directory, Maildir directory, SQLite WAL), and on this
//! kind of storage each is a round trip to the device and most of the CPU a
//! delivery costs.
//!
//! # What we do
//! In [`Durability::Batched`] mode (the default), a delivery fsyncs its blob's
//! *bytes* itself — so no name can ever point at content that is not on disk —
//! then writes its names and its index row without syncing, and asks for a
//! group sync: one `syncfs(2)` of the data directory's filesystem covers every
//! delivery that finished writing before it started. Concurrent deliveries
//! share the flush; the replies wait for it. SQLite runs with
//! `synchronous=NORMAL`, which keeps the WAL consistent (checkpoints still
//! sync) and leaves commit durability to our flush.
//!
//! A crash before the flush returns can leave any subset of an unacknowledged
//! delivery's names and rows; the reconciling scan handles each case (a file
//! without a row is indexed, a row without a file is expunged, a blob without
//! a Maildir link is garbage). Nothing acknowledged is lost.
//!
//! # Alternatives
//! - [`Durability::Fsync`]: fsync every file and directory and commit with
//!   `synchronous=FULL`. No flush is shared, and `syncfs` is not used, which
//!   suits a data directory on a filesystem busy with other writers (a
//!   `syncfs` flushes their dirty data too).
//! - A write-ahead journal of our own: a second log beside SQLite's, more code
//!   and more recovery paths for the same effect.

use std::fs::File;
use std::path::Path;
use std::sync::{Condvar, Mutex};

use crate::{Error, IoContext, Result};

/// How deliveries are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Blob bytes fsynced per message; names and index rows flushed for many
    /// deliveries at once with `syncfs`.
    #[default]
    Batched,
    /// Every file and directory fsynced on its own.
    Fsync,
}

impl std::str::FromStr for Durability {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "batched" => Ok(Durability::Batched),
            "fsync" => Ok(Durability::Fsync),
            other => Err(Error::InvalidData(format!(
                "durability must be \"batched\" or \"fsync\", not {other:?}"
            ))),
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

/// The group committer of one data directory.
pub(crate) struct GroupSync {
    mode: Durability,
    fs: File,
    tickets: Mutex<Tickets>,
    done: Condvar,
    /// Flushes done so far (for figures and tests).
    flushes: std::sync::atomic::AtomicU64,
}

impl GroupSync {
    pub(crate) fn new(data_dir: &Path, mode: Durability) -> Result<GroupSync> {
        let fs = File::open(data_dir).ctx(|| format!("open {}", data_dir.display()))?;
        Ok(GroupSync {
            mode,
            fs,
            tickets: Mutex::new(Tickets::default()),
            done: Condvar::new(),
            flushes: std::sync::atomic::AtomicU64::new(0),
        })
    }

    #[cfg(test)]
    pub(crate) fn flushes(&self) -> u64 {
        self.flushes.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn mode(&self) -> Durability {
        self.mode
    }

    /// Fsync a directory now in `Fsync` mode; in `Batched` mode the group
    /// flush covers it.
    pub(crate) fn dir_written(&self, dir: &Path) -> Result<()> {
        match self.mode {
            Durability::Fsync => Ok(cove_dedup::sync_dir(dir)?),
            Durability::Batched => Ok(()),
        }
    }

    /// Return once everything this thread wrote before the call is durable.
    pub(crate) fn sync(&self) -> Result<()> {
        if self.mode == Durability::Fsync {
            return Ok(());
        }
        let poisoned = || Error::Index("group sync lock poisoned".into());
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
            if !t.flushing {
                t.flushing = true;
                let upto = t.issued;
                drop(t);
                let flushed = rustix::fs::syncfs(&self.fs);
                self.flushes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                t = self.tickets.lock().map_err(|_| poisoned())?;
                t.flushing = false;
                self.done.notify_all();
                match flushed {
                    Ok(()) => t.synced = t.synced.max(upto),
                    // Every writer of this batch must fail: a later syncfs
                    // would not report the lost writeback again.
                    Err(e) => {
                        tracing::error!(error = %e, "syncfs of the data directory failed");
                        t.failed_through = t.failed_through.max(upto);
                    }
                }
            } else {
                t = self.done.wait(t).map_err(|_| poisoned())?;
            }
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
        // 320 requests; each caller waits for a flush that started after
        // its request, so there is at least one, and sharing makes fewer.
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
