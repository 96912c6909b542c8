//! Opening a file another program can reach (a Maildir message, a blob)
//! without trusting what it is.
//!
//! # The problem
//! A Maildir is shared with other programs and with the operator. What
//! sits under a message's name is not always a message: a FIFO makes
//! `open(2)` wait forever for a writer (a blocking-pool thread lost per
//! attempt, and a FIFO linked into `blobs/` hangs every later reader of
//! it); a directory fails every read (and, before this module, the whole
//! account with it); a symlink serves whatever file it points to, inside
//! the data directory or not.
//!
//! # What every reader does
//! [`open_at`] (and [`open`], [`read`] over it) opens with `O_NOFOLLOW`
//! (a symlink as the last component is refused with `ELOOP`) and
//! `O_NONBLOCK` (a FIFO opens at once instead of waiting for a writer),
//! then `fstat`s what it opened and refuses anything that is not a
//! regular file. The checks run on the open descriptor, so a name swapped
//! between a listing and the open cannot slip a FIFO or a symlink in. A
//! refusal is an [`io::Error`] whose inner error is [`NotRegular`]
//! ([`is_not_regular`] tells it apart), so that callers skip the name and
//! say so, instead of failing the account.
//!
//! The symlink check is on the last component only: an operator may well
//! keep the data directory behind a symlink.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{CWD, FileType, Mode, OFlags};
use rustix::io::Errno;

/// What was found where a regular file was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRegular {
    Directory,
    Symlink,
    Fifo,
    Socket,
    Device,
    Unknown,
}

impl NotRegular {
    fn of(t: FileType) -> NotRegular {
        match t {
            FileType::Directory => NotRegular::Directory,
            FileType::Symlink => NotRegular::Symlink,
            FileType::Fifo => NotRegular::Fifo,
            FileType::Socket => NotRegular::Socket,
            FileType::CharacterDevice | FileType::BlockDevice => NotRegular::Device,
            _ => NotRegular::Unknown,
        }
    }

    /// What a directory entry of this type is, if it is not a regular
    /// file (`None` for a regular file).
    pub fn of_file_type(t: std::fs::FileType) -> Option<NotRegular> {
        use std::os::unix::fs::FileTypeExt;
        Some(if t.is_file() {
            return None;
        } else if t.is_dir() {
            NotRegular::Directory
        } else if t.is_symlink() {
            NotRegular::Symlink
        } else if t.is_fifo() {
            NotRegular::Fifo
        } else if t.is_socket() {
            NotRegular::Socket
        } else if t.is_char_device() || t.is_block_device() {
            NotRegular::Device
        } else {
            NotRegular::Unknown
        })
    }

    fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, self)
    }
}

impl fmt::Display for NotRegular {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            NotRegular::Directory => "a directory",
            NotRegular::Symlink => "a symbolic link",
            NotRegular::Fifo => "a FIFO",
            NotRegular::Socket => "a socket",
            NotRegular::Device => "a device",
            NotRegular::Unknown => "of an unknown type",
        };
        write!(f, "not a regular file: {what}")
    }
}

impl std::error::Error for NotRegular {}

/// Whether `e` is [`open_at`]'s refusal of something that is not a
/// regular file (and which).
pub fn is_not_regular(e: &io::Error) -> Option<NotRegular> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<NotRegular>())
        .copied()
}

/// Open `path` (relative to `dir`) for reading if it is a regular file.
/// `extra` adds open flags (`O_NOATIME`). Blocking (but never waits for a
/// FIFO's writer).
pub fn open_at(dir: impl AsFd, path: impl AsRef<Path>, extra: OFlags) -> io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK | extra;
    match rustix::fs::openat(dir, path.as_ref(), flags, Mode::empty()) {
        Ok(fd) => checked(fd),
        Err(Errno::LOOP) => Err(NotRegular::Symlink.into_io()),
        Err(e) => Err(e.into()),
    }
}

/// The file `fd` if it is a regular file; the same descriptor in blocking
/// mode (a regular file ignores `O_NONBLOCK`; nothing else gets here).
pub fn checked(fd: OwnedFd) -> io::Result<File> {
    let st = rustix::fs::fstat(&fd)?;
    let t = FileType::from_raw_mode(st.st_mode);
    if t != FileType::RegularFile {
        return Err(NotRegular::of(t).into_io());
    }
    Ok(File::from(fd))
}

/// [`open_at`] a path (absolute, or relative to the working directory).
pub fn open(path: &Path) -> io::Result<File> {
    open_at(CWD, path, OFlags::empty())
}

/// The whole content of the regular file at `path`.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let mut f = open(path)?;
    let mut out = Vec::new();
    f.read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_open() {
        let d = tempfile::tempdir().expect("tempdir");
        let file = d.path().join("file");
        std::fs::write(&file, b"mail").expect("write");
        assert_eq!(read(&file).expect("regular file"), b"mail");

        let fifo = d.path().join("fifo");
        rustix::fs::mknodat(CWD, &fifo, FileType::Fifo, Mode::RUSR | Mode::WUSR, 0)
            .expect("mkfifo");
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&file, &link).expect("symlink");
        let dir = d.path().join("dir");
        std::fs::create_dir(&dir).expect("dir");
        for (path, what) in [
            (&fifo, NotRegular::Fifo),
            (&link, NotRegular::Symlink),
            (&dir, NotRegular::Directory),
        ] {
            // The FIFO has no writer: a plain open would never return.
            let e = read(path).expect_err("refused");
            assert_eq!(is_not_regular(&e), Some(what), "{}", path.display());
        }
        let missing = read(&d.path().join("missing")).expect_err("missing");
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        assert_eq!(is_not_regular(&missing), None);
    }
}
