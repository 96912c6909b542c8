//! The inotify instance behind the Maildir watcher, and the thread
//! (`cove-inotify`) that reads its events and hands them to the watcher's
//! [`Inbox`] a read buffer at a time.
//!
//! # Why not the `notify` crate (used until 2026-12-07)
//! A `UID STORE 1:* +FLAGS` on 35,470 messages renames 35,470 files in one
//! directory: 70,940 inotify events. notify's loop read them 1 KiB at a time
//! and woke for nearly every one (30,608 `read`s and 13,345 `EAGAIN`s for a
//! +FLAGS/-FLAGS pair), and made each an `Event` of its own with its own
//! paths (a `PathBuf` joined per event, cloned for the rename pairing, a
//! `Vec` each), handed over one by one: about 12% of the server's CPU for
//! that command (perf). The watcher needs none of it: an event is a hint
//! naming a directory and an entry of it.
//!
//! # What this does
//! - Reads [`READ_BUFFER`] (64 KiB, some 800 events of Maildir names) at a
//!   time, and after each wake-up waits [`GATHER`] before reading again: a
//!   burst is read a buffer at a time, not an event at a time (at most
//!   1/[`GATHER`] wake-ups a second). What that delays is a hint, which
//!   waits for [`QUIET`](super::QUIET) (50 ms) before its scan anyway. The
//!   kernel queues 16,384 events by default (`fs.inotify.max_queued_events`):
//!   a burst of 100,000 renames a second fills 1,000 of them in a
//!   [`GATHER`]; an overflow rescans every watched account, as before.
//! - Hands the events over without allocating: the directory is a reference
//!   into the descriptor map, the entry's name one into the read buffer.
//! - Asks the kernel only for the events that can mean a message or folder
//!   changed ([`MASK`]): an entry created, deleted, moved in or out, a file
//!   closed after writing, the directory itself deleted or moved. Not
//!   `IN_ATTRIB` (each hard link the scan makes into the blob store), not
//!   `IN_MODIFY` (each write; the close after it is enough), not opens.
//!
//! Lock order: the descriptor map, then the [`Inbox`]'s locks (the reader
//! holds the map while the inbox routes a buffer's events).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use rustix::event::{EventfdFlags, PollFd, PollFlags};

use super::{Inbox, OwnEvent, lock};

/// Bytes read from the inotify descriptor at a time.
pub(super) const READ_BUFFER: usize = 64 * 1024;

/// How long the reader lets events gather after a wake-up.
pub(super) const GATHER: Duration = Duration::from_millis(5);

/// How long the reader waits after reading or waiting failed (each failure
/// rescans every watched account: not in a tight loop).
const AFTER_ERROR: Duration = Duration::from_secs(1);

/// The events watched directories report.
const MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::CLOSE_WRITE)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::ONLYDIR);

/// One event, as the reader hands it over.
#[derive(Debug, Clone, Copy)]
pub(super) struct Hint<'a> {
    /// The watched directory.
    pub dir: &'a Path,
    /// The entry of `dir` it concerns; `None`: `dir` itself (deleted or
    /// moved away).
    pub name: Option<&'a OsStr>,
    /// For an entry: whether it appeared or vanished (`None`: a file was
    /// written).
    pub change: Option<OwnEvent>,
}

/// Why a directory could not be watched.
#[derive(Debug)]
pub(super) enum WatchError {
    /// It is gone.
    NotFound,
    /// `fs.inotify.max_user_watches` reached.
    Limit,
    Other(io::Error),
}

impl From<io::Error> for WatchError {
    fn from(e: io::Error) -> WatchError {
        use rustix::io::Errno;
        match Errno::from_io_error(&e) {
            Some(Errno::NOENT | Errno::NOTDIR) => WatchError::NotFound,
            Some(Errno::NOSPC) => WatchError::Limit,
            _ => WatchError::Other(e),
        }
    }
}

impl std::fmt::Display for WatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WatchError::NotFound => f.write_str("no such directory"),
            WatchError::Limit => f.write_str("inotify watch limit reached"),
            WatchError::Other(e) => e.fmt(f),
        }
    }
}

/// Watch descriptor number -> the directory it watches.
type Dirs = Arc<Mutex<HashMap<i32, PathBuf>>>;

/// The server's inotify instance: adds and removes watches; its reader
/// thread stops when this is dropped.
pub(super) struct Kernel {
    watches: Watches,
    by_path: HashMap<PathBuf, WatchDescriptor>,
    dirs: Dirs,
    /// Written to stop the reader.
    stop: OwnedFd,
}

impl Kernel {
    /// A new inotify instance and its reader, which hands events to `inbox`.
    pub(super) fn start(inbox: Arc<Inbox>) -> io::Result<Kernel> {
        let inotify = Inotify::init()?;
        let watches = inotify.watches();
        let stop = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        let dirs = Dirs::default();
        let reader = Reader {
            inotify,
            dirs: dirs.clone(),
            stop: stop.try_clone()?,
        };
        std::thread::Builder::new()
            .name("cove-inotify".into())
            .spawn(move || reader.run(&inbox))?;
        Ok(Kernel {
            watches,
            by_path: HashMap::new(),
            dirs,
            stop,
        })
    }

    /// Watch a directory (non-recursively).
    pub(super) fn watch(&mut self, path: &Path) -> Result<(), WatchError> {
        let wd = self.watches.add(path, MASK)?;
        lock(&self.dirs).insert(wd.get_watch_descriptor_id(), path.to_path_buf());
        self.by_path.insert(path.to_path_buf(), wd);
        Ok(())
    }

    /// Stop watching a directory. A directory another program moved keeps
    /// its watch (inotify watches the inode); once watched again under its
    /// new path, the old path's unwatch leaves the watch alone.
    pub(super) fn unwatch(&mut self, path: &Path) {
        let Some(wd) = self.by_path.remove(path) else {
            return;
        };
        let id = wd.get_watch_descriptor_id();
        let mut dirs = lock(&self.dirs);
        if dirs.get(&id).is_some_and(|p| p != path) {
            return;
        }
        dirs.remove(&id);
        drop(dirs);
        // Fails when the directory was deleted (the kernel dropped the
        // watch already): nothing to do then.
        let _ = self.watches.remove(wd);
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        if let Err(e) = rustix::io::write(&self.stop, &1u64.to_ne_bytes()) {
            tracing::warn!(error = %e, "cannot stop the inotify reader");
        }
    }
}

struct Reader {
    inotify: Inotify,
    dirs: Dirs,
    stop: OwnedFd,
}

impl Reader {
    fn run(mut self, inbox: &Inbox) {
        let mut buffer = vec![0u8; READ_BUFFER];
        while self.wait(inbox) {
            // Until the queue is empty.
            loop {
                match self.inotify.read_events(&mut buffer) {
                    Ok(events) => {
                        if self.hand_over(events, inbox) == 0 {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        inbox.on_error(&e);
                        std::thread::sleep(AFTER_ERROR);
                        break;
                    }
                }
            }
            std::thread::sleep(GATHER);
        }
    }

    /// Wait until there are events (or a failed wait was waited out);
    /// `false`: stop.
    fn wait(&self, inbox: &Inbox) -> bool {
        loop {
            let mut fds = [
                PollFd::new(&self.inotify, PollFlags::IN),
                PollFd::new(&self.stop, PollFlags::IN),
            ];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) => {
                    if !fds[1].revents().is_empty() {
                        return false;
                    }
                    if !fds[0].revents().is_empty() {
                        return true;
                    }
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    inbox.on_error(&io::Error::from(e));
                    std::thread::sleep(AFTER_ERROR);
                    return true;
                }
            }
        }
    }

    /// Route one read's events; returns how many there were.
    fn hand_over(&self, events: inotify::Events<'_>, inbox: &Inbox) -> usize {
        let mut count = 0;
        let mut overflow = false;
        let mut ignored: Vec<i32> = Vec::new();
        let dirs = lock(&self.dirs);
        let mut hints: Vec<Hint<'_>> = Vec::new();
        for event in events {
            count += 1;
            if event.mask.contains(EventMask::Q_OVERFLOW) {
                overflow = true;
                continue;
            }
            let id = event.wd.get_watch_descriptor_id();
            if event.mask.contains(EventMask::IGNORED) {
                // The watch is gone (its directory deleted, or unwatched).
                ignored.push(id);
                continue;
            }
            let Some(dir) = dirs.get(&id) else {
                continue;
            };
            hints.push(Hint {
                dir,
                name: event.name,
                change: change_of(event.mask),
            });
        }
        if !hints.is_empty() {
            inbox.on_events(&hints);
        }
        drop(hints);
        drop(dirs);
        if !ignored.is_empty() {
            let mut dirs = lock(&self.dirs);
            for id in ignored {
                dirs.remove(&id);
            }
        }
        if overflow {
            inbox.on_overflow();
        }
        count
    }
}

/// Which way an event turned its entry, if it is a creation or removal.
fn change_of(mask: EventMask) -> Option<OwnEvent> {
    if mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
        Some(OwnEvent::Appear)
    } else if mask.intersects(EventMask::DELETE | EventMask::MOVED_FROM) {
        Some(OwnEvent::Vanish)
    } else {
        None
    }
}
