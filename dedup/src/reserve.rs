//! Space kept back so that users can delete mail on a full disk.
//!
//! # The problem
//! When the data directory's filesystem is full, deleting mail needs space
//! too: flagging `\Deleted`, EXPUNGE, MOVE and DELETE all commit to the
//! user's SQLite index, whose WAL grows by a few pages per commit. Without
//! those pages every request answers NO, and the only way out is an operator.
//!
//! # What we do
//! A file (`<data_dir>/reserve`, [`DEFAULT_RESERVE_BYTES`] unless
//! configured) is allocated when the store opens (`fallocate`, so its blocks
//! are really taken; zeros are written where that is not supported). The first "no space" error
//! anywhere removes it, which gives its blocks back to the filesystem, and
//! logs loudly. While it is gone the store is in *low-space mode*: new content
//! (deliveries, APPEND, content from a peer) is refused with "no space"
//! (LMTP 452, IMAP NO), so that the freed blocks stay for index commits that
//! delete mail. The server's housekeeping writes the file again once the
//! filesystem has room for it twice over, and logs that deliveries resume.
//!
//! # Alternatives rejected
//! - SQLite's own means (`journal_size_limit`, a pre-grown WAL): a checkpoint
//!   still needs pages in the main database, and a WAL that was checkpointed
//!   and truncated has nothing left to reuse.
//! - A filesystem reserve (ext4's root-reserved blocks): cove often runs as
//!   root, so it would eat those blocks for deliveries too, and tmpfs or XFS
//!   have none.
//! - Refusing deliveries at a free-space threshold: needs a guess of how much
//!   the next delivery takes; the reserve is exact and is freed only when the
//!   disk is really full.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// The reserve's size when the operator does not set one: room for a few
/// thousand index commits.
pub const DEFAULT_RESERVE_BYTES: u64 = 8 * 1024 * 1024;

/// The reserve file of one data directory (disabled when its size is 0).
#[derive(Debug, Default)]
pub struct SpaceReserve {
    path: PathBuf,
    size: u64,
    /// The file is gone and new content is refused.
    released: AtomicBool,
    /// Serialises writing and removing the file.
    lock: Mutex<()>,
}

/// The error new content gets in low-space mode: ENOSPC, so that every
/// caller maps it like a real full disk.
pub fn low_space_error() -> io::Error {
    io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error())
}

/// Whether an I/O error means the filesystem (or the quota) is full.
pub fn is_no_space(e: &io::Error) -> bool {
    let raw = e.raw_os_error();
    raw == Some(rustix::io::Errno::NOSPC.raw_os_error())
        || raw == Some(rustix::io::Errno::DQUOT.raw_os_error())
        || e.kind() == io::ErrorKind::StorageFull
}

impl SpaceReserve {
    /// A reserve of `size` bytes at `path`, written now if it is missing
    /// (if that fails for lack of space, the store starts in low-space mode).
    pub fn open(path: PathBuf, size: u64) -> io::Result<SpaceReserve> {
        let reserve = SpaceReserve {
            path,
            size,
            released: AtomicBool::new(false),
            lock: Mutex::new(()),
        };
        if size == 0 {
            let _ = fs::remove_file(&reserve.path);
            return Ok(reserve);
        }
        let present = fs::metadata(&reserve.path).is_ok_and(|m| m.len() >= size);
        if !present {
            match reserve.write_file() {
                Ok(()) => {}
                Err(e) if is_no_space(&e) => {
                    reserve.released.store(true, Ordering::SeqCst);
                    tracing::error!(reserve = %reserve.path.display(), bytes = size, "the disk is full: no room for the space reserve; new mail is refused, deleting mail works");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(reserve)
    }

    /// Whether new content is refused (the reserve is in use).
    pub fn is_released(&self) -> bool {
        self.released.load(Ordering::SeqCst)
    }

    /// The disk is full: give the reserve's blocks back so that deletions can
    /// commit. Returns whether this call freed them (false if they were
    /// already freed or there is no reserve).
    pub fn release(&self, cause: &dyn std::fmt::Display) -> bool {
        if self.size == 0 {
            return false;
        }
        let Ok(_g) = self.lock.lock() else {
            return false;
        };
        if self.released.swap(true, Ordering::SeqCst) {
            return false;
        }
        match fs::remove_file(&self.path) {
            Ok(()) => {
                tracing::error!(reserve = %self.path.display(), bytes = self.size, cause = %cause, "the disk is full: released the space reserve so that users can delete mail; new mail is refused until space returns");
                true
            }
            Err(e) => {
                tracing::error!(reserve = %self.path.display(), error = %e, cause = %cause, "the disk is full and the space reserve could not be released");
                false
            }
        }
    }

    /// If the reserve is in use and the filesystem now has room for it twice
    /// over, write it again and accept new content. Returns whether it did.
    pub fn restore_if_room(&self) -> bool {
        if !self.is_released() || self.size == 0 {
            return false;
        }
        let Ok(_g) = self.lock.lock() else {
            return false;
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let Ok(st) = rustix::fs::statvfs(dir) else {
            return false;
        };
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        if free < self.size.saturating_mul(2) {
            return false;
        }
        match self.write_file() {
            Ok(()) => {
                self.released.store(false, Ordering::SeqCst);
                tracing::warn!(reserve = %self.path.display(), free_bytes = free, "disk space is back: space reserve re-created; new mail is accepted again");
                true
            }
            Err(e) => {
                tracing::warn!(reserve = %self.path.display(), error = %e, "could not re-create the space reserve yet");
                false
            }
        }
    }

    /// Write the file under a temporary name, then give it its name.
    fn write_file(&self) -> io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            // fallocate reserves the blocks without writing them (ext4,
            // XFS, tmpfs); zeros where the filesystem cannot.
            match rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, self.size) {
                Ok(()) => {}
                Err(e) if e == rustix::io::Errno::NOSPC || e == rustix::io::Errno::DQUOT => {
                    return Err(e.into());
                }
                Err(_) => {
                    let zeros = vec![0u8; 64 * 1024];
                    let mut left = self.size;
                    while left > 0 {
                        let n = left.min(zeros.len() as u64) as usize;
                        f.write_all(&zeros[..n])?;
                        left -= n as u64;
                    }
                }
            }
            f.sync_all()?;
            fs::rename(&tmp, &self.path)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_and_restore() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("reserve");
        let r = SpaceReserve::open(path.clone(), 4096).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 4096);
        assert!(!r.is_released());
        assert!(r.release(&"test"));
        assert!(!path.exists());
        assert!(r.is_released());
        assert!(!r.release(&"again"));
        assert!(r.restore_if_room());
        assert!(path.exists() && !r.is_released());
    }

    #[test]
    fn size_zero_disables_it() {
        let d = tempfile::tempdir().unwrap();
        let r = SpaceReserve::open(d.path().join("reserve"), 0).unwrap();
        assert!(!r.release(&"x"));
        assert!(!r.is_released());
    }
}
