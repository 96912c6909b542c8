//! The message files of one mailbox folder, and reading them without ever
//! waiting for the disk.
//!
//! The problem. Every store call is blocking, so protocol sessions run them
//! on a blocking pool: a thread hand-off there and back per trip. For a
//! POP3 RETR of a small message the hand-off costs more than the read —
//! on the 2-core bench machine, path walks, thread wake-ups and copies
//! were most of cove's CPU per pipelined RETR (perf, 2026-12-06). Yet
//! nearly every message a client downloads was delivered minutes ago and
//! is in the page cache.
//!
//! Linux says, without blocking, whether it can answer from memory:
//! - `openat2(2)` with `RESOLVE_CACHED` (Linux 5.12) opens a path only if
//!   every component is in the dentry cache, `EAGAIN` otherwise;
//! - `preadv2(2)` with `RWF_NOWAIT` (Linux 4.14) reads only what is in the
//!   page cache, `EAGAIN` if none of it is.
//!
//! io_uring uses the same two flags to decide what it can do inline.
//! [`MailboxFiles::open_cached`] and [`read_cached`] answer
//! [`Cached::WouldBlock`] where the kernel would have to wait; the caller
//! then does the same work on its blocking pool with
//! [`MailboxFiles::open`] and plain reads. A kernel or filesystem without
//! the flags answers `EINVAL`, `ENOSYS` or `EOPNOTSUPP`: the process then
//! stops trying (one log line) and every read takes the blocking path, as
//! before.
//!
//! Files are opened relative to the folder's directory descriptor (a walk
//! of `cur/<name>`, not of the whole data directory path), and with
//! `O_NOATIME` where the kernel allows it (cove owns its files): a read
//! then never dirties an inode, whose journal update is the one thing in a
//! cached read that could still wait. Where `O_NOATIME` is refused
//! (`EPERM`: files owned by another user, or a seccomp filter refusing
//! `openat2`), it is dropped for the process, and so are cached reads.
//!
//! Alternatives rejected: `tokio::task::block_in_place` (hands the
//! worker's other tasks to a new thread: the same hand-off, in reverse);
//! io_uring (a second I/O runtime beside tokio's, for reads that are
//! memory copies when cached); `mmap` (a page-table update and a fault per
//! small file, and SIGBUS if a file shrinks).

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use cove_dedup::regular_file;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::{Errno, IoSliceMut, ReadWriteFlags};

/// Whether an answer was ready without waiting.
#[derive(Debug, PartialEq, Eq)]
pub enum Cached<T> {
    Ready(T),
    /// Only a blocking call can answer (not in memory, or not supported).
    WouldBlock,
}

/// Cleared when the kernel or filesystem lacks `RESOLVE_CACHED` or
/// `RWF_NOWAIT`.
static CACHED_READS: AtomicBool = AtomicBool::new(true);
/// Cleared when the kernel refuses `O_NOATIME` (`EPERM`).
static NO_ATIME: AtomicBool = AtomicBool::new(true);

/// Whether [`MailboxFiles::open_cached`] and [`read_cached`] can answer
/// `Ready` here (false once the kernel said it lacks the flags).
pub fn cached_reads_available() -> bool {
    CACHED_READS.load(Ordering::Relaxed)
}

/// The open directory of one mailbox folder (the folder with `cur/`,
/// `new/`, `tmp/`), for opening its message files by their index names
/// (`cur/<name>`, `new/<name>`).
#[derive(Debug)]
pub struct MailboxFiles {
    dir: OwnedFd,
    path: PathBuf,
}

impl MailboxFiles {
    /// Open a folder's directory. Blocking.
    pub fn open_dir(path: &Path) -> io::Result<MailboxFiles> {
        let dir = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(MailboxFiles {
            dir,
            path: path.to_path_buf(),
        })
    }

    /// The folder's path (for log lines).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Open a message file for reading. Blocking; `NotFound` if it is gone
    /// (expunged, or renamed by a flag change); refused if it is not a
    /// regular file ([`cove_dedup::regular_file`]: never a FIFO, a
    /// directory or a symlink's target).
    pub fn open(&self, file: &str) -> io::Result<File> {
        check_name(file)?;
        let noatime = NO_ATIME.load(Ordering::Relaxed);
        match regular_file::open_at(&self.dir, file, atime_flag(noatime)) {
            Err(e) if noatime && e.raw_os_error() == Some(Errno::PERM.raw_os_error()) => {
                refuse_noatime();
                regular_file::open_at(&self.dir, file, atime_flag(false))
            }
            other => other,
        }
    }

    /// The whole content of a message file ([`open`](Self::open)).
    pub fn read(&self, file: &str) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        io::Read::read_to_end(&mut self.open(file)?, &mut out)?;
        Ok(out)
    }

    /// [`open`](Self::open), but only if the kernel can do it from its
    /// caches. `NotFound` as there.
    pub fn open_cached(&self, file: &str) -> io::Result<Cached<File>> {
        if !CACHED_READS.load(Ordering::Relaxed) || !NO_ATIME.load(Ordering::Relaxed) {
            return Ok(Cached::WouldBlock);
        }
        check_name(file)?;
        loop {
            match rustix::fs::openat2(
                &self.dir,
                file,
                read_flags(),
                Mode::empty(),
                ResolveFlags::CACHED | ResolveFlags::NO_SYMLINKS,
            ) {
                // The same check as the blocking open's (an fstat of an
                // inode just looked up: in memory).
                Ok(fd) => return regular_file::checked(fd).map(Cached::Ready),
                // A symlink anywhere in the name: the blocking open decides
                // (it refuses one as the file itself).
                Err(Errno::AGAIN | Errno::LOOP) => return Ok(Cached::WouldBlock),
                Err(Errno::INTR) => continue,
                // O_NOATIME refused (files owned by another user), or a
                // seccomp filter that refuses openat2: either way no
                // cached reads (a read that updates an access time may
                // wait for the journal).
                Err(Errno::PERM) => {
                    refuse_noatime();
                    give_up_cached_reads("openat2 with O_NOATIME", Errno::PERM);
                    return Ok(Cached::WouldBlock);
                }
                Err(e @ (Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP)) => {
                    give_up_cached_reads("openat2 with RESOLVE_CACHED", e);
                    return Ok(Cached::WouldBlock);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Read from `offset` into `buf` what the page cache holds, without
/// waiting: `Ready(n)` may be short of `buf` (part of the range is in
/// memory; `Ready(0)` is the end of the file).
pub fn read_cached(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<Cached<usize>> {
    if !CACHED_READS.load(Ordering::Relaxed) {
        return Ok(Cached::WouldBlock);
    }
    loop {
        match rustix::io::preadv2(
            file,
            &mut [IoSliceMut::new(buf)],
            offset,
            ReadWriteFlags::NOWAIT,
        ) {
            Ok(n) => return Ok(Cached::Ready(n)),
            Err(Errno::AGAIN) => return Ok(Cached::WouldBlock),
            Err(Errno::INTR) => continue,
            Err(e @ (Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP)) => {
                give_up_cached_reads("preadv2 with RWF_NOWAIT", e);
                return Ok(Cached::WouldBlock);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// An index name is `cur/<name>` or `new/<name>`: it never leaves its
/// folder.
fn check_name(file: &str) -> io::Result<()> {
    let name = file
        .strip_prefix("cur/")
        .or_else(|| file.strip_prefix("new/"));
    match name {
        Some(n) if !n.is_empty() && !n.contains(['/', '\0']) && n != "." && n != ".." => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a message file name: {file:?}"),
        )),
    }
}

/// The flags of a cached open: those of [`regular_file::open_at`], with
/// `O_NOATIME`.
fn read_flags() -> OFlags {
    OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOATIME
}

fn atime_flag(noatime: bool) -> OFlags {
    if noatime {
        OFlags::NOATIME
    } else {
        OFlags::empty()
    }
}

fn refuse_noatime() {
    if NO_ATIME.swap(false, Ordering::Relaxed) {
        tracing::info!(
            "message files are not owned by cove's user (O_NOATIME refused): reads update access times"
        );
    }
}

fn give_up_cached_reads(call: &str, e: Errno) {
    if CACHED_READS.swap(false, Ordering::Relaxed) {
        tracing::info!(
            call,
            error = %io::Error::from(e),
            "no non-blocking reads from the page cache here (needs Linux 5.12); every message read goes through the blocking pool"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn cached_reads_see_what_blocking_reads_see() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("cur")).expect("cur");
        let body = b"Subject: hi\r\n\r\nbody\r\n".repeat(300);
        std::fs::write(dir.path().join("cur/m1:2,S"), &body).expect("write");
        let files = MailboxFiles::open_dir(dir.path()).expect("open dir");

        let mut blocking = Vec::new();
        files
            .open("cur/m1:2,S")
            .expect("open")
            .read_to_end(&mut blocking)
            .expect("read");
        assert_eq!(blocking, body);

        // Just written: in the page cache on any kernel that has the
        // flags; elsewhere both calls say WouldBlock and nothing else.
        match files.open_cached("cur/m1:2,S").expect("open_cached") {
            Cached::Ready(f) => {
                let mut buf = vec![0u8; body.len() + 10];
                let mut got = 0;
                while let Cached::Ready(n) =
                    read_cached(&f, got as u64, &mut buf[got..]).expect("read_cached")
                {
                    if n == 0 {
                        break;
                    }
                    got += n;
                }
                assert_eq!(&buf[..got], &body[..], "the whole file, from the cache");
            }
            Cached::WouldBlock => assert!(!CACHED_READS.load(Ordering::Relaxed)),
        }

        // The blocking lookup leaves a negative dentry the cached one sees.
        let gone_blocking = files.open("cur/nothing").map(|_| ());
        let gone = files.open_cached("cur/nothing").map(|_| ());
        assert_eq!(
            gone_blocking.map_err(|e| e.kind()),
            Err(io::ErrorKind::NotFound)
        );
        if CACHED_READS.load(Ordering::Relaxed) {
            // A missing name is a negative dentry: answered from the cache.
            assert_eq!(gone.map_err(|e| e.kind()), Err(io::ErrorKind::NotFound));
        }
    }

    #[test]
    fn only_regular_files_are_messages() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("cur")).expect("cur");
        std::fs::write(dir.path().join("outside"), b"secret").expect("write");
        let cur = dir.path().join("cur");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            cur.join("fifo"),
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");
        std::os::unix::fs::symlink(dir.path().join("outside"), cur.join("link")).expect("link");
        std::fs::create_dir(cur.join("dir")).expect("dir");
        let files = MailboxFiles::open_dir(dir.path()).expect("open dir");
        for name in ["cur/fifo", "cur/link", "cur/dir"] {
            // Neither waits for a FIFO's writer nor follows the link.
            let e = files.open(name).expect_err(name);
            assert!(regular_file::is_not_regular(&e).is_some(), "{name}: {e}");
            match files.open_cached(name) {
                Ok(Cached::WouldBlock) => {}
                Err(e) => assert!(regular_file::is_not_regular(&e).is_some(), "{name}: {e}"),
                Ok(Cached::Ready(_)) => panic!("{name} opened"),
            }
        }
    }

    #[test]
    fn names_cannot_leave_the_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("box/cur")).expect("box");
        std::fs::write(dir.path().join("secret"), b"x").expect("write");
        std::fs::write(dir.path().join("box/top"), b"x").expect("write");
        let files = MailboxFiles::open_dir(&dir.path().join("box")).expect("open dir");
        let available = cached_reads_available();
        for name in [
            "cur/../../secret",
            "/etc/passwd",
            "top",
            "cur/",
            "cur/..",
            "cur/a\0b",
        ] {
            let cached = files.open_cached(name).map(|_| ()).map_err(|e| e.kind());
            assert_eq!(cached, Err(io::ErrorKind::InvalidInput), "{name}");
            let blocking = files.open(name).map(|_| ()).map_err(|e| e.kind());
            assert_eq!(blocking, Err(io::ErrorKind::InvalidInput), "{name}");
        }
        // A bad name says nothing about the kernel.
        assert_eq!(cached_reads_available(), available);
    }
}
