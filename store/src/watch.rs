//! Noticing changes other programs make in the Maildir while cove runs.
//!
//! # The problem
//! mutt, an MDA, `mbsync` or a restore script may add, rename (new flags) or
//! remove message files, and create or remove folders, at any time. The
//! reconciling scan ([`Account::scan`]) turns any such state into index rows
//! and change-feed entries; IMAP IDLE sessions hear of them on the feed. What
//! was missing is *when* to scan: soon after the change (clients in IDLE
//! expect news within a second), and not all the time.
//!
//! # What this does
//! One inotify instance for the whole server (read by its own thread,
//! `watch/reader.rs`, 64 KiB at a time):
//! Linux allows 128 instances per user by default, so one per session or per
//! account would run out (Dovecot falls back to 30-second polling there).
//! [`MaildirWatcher::watch`] hands out a [`WatchGuard`]; while an account has
//! at least one guard, these directories are watched, each non-recursively:
//! `Maildir/` (INBOX's folder; also sees `.Folder` directories appear and
//! go), `Maildir/new`, `Maildir/cur`, and for every `.Folder`: the folder
//! itself (sees its `new/`, `cur/` appear) and its `new/` and `cur/`.
//!
//! An event is a hint, never data: it names a path, the path is mapped to its
//! account, the account is marked dirty, and one background thread
//! (`cove-watch`, a plain std thread) scans it once things have been quiet
//! for [`QUIET`] (at most [`MAX_DELAY`] after the first hint). A hint that
//! touched a folder directory (not a message directory) also makes the
//! thread recompute the account's set of watched directories before the
//! scan, so a folder created by another program is watched before it is
//! scanned: nothing that lands in it afterwards goes unnoticed.
//!
//! # Invariants
//! - Events are hints, scans are the truth: a lost, duplicated or reordered
//!   event changes at most when a scan runs, never what the index holds. When
//!   the kernel queue overflows or reading it fails,
//!   every watched account is rescanned and its watch set recomputed.
//! - No feedback loop: only events that can mean a message or folder changed
//!   count (create, remove, rename, data written); opens, reads and attribute
//!   changes — what a scan does itself (readdir, hashing a file, hard-linking
//!   it into the blob store) — are dropped in the event handler, as are names
//!   starting with `.` in message directories (`.cove-dedup.*` temporaries),
//!   and `tmp/`, `index.sqlite*` and other files beside the folders.
//! - cove's own changes cost no scan, however many: a delivery, a flag
//!   rename, an expunge, a COPY or MOVE and a replica apply first tell the
//!   account's [`OwnChanges`] how many files will appear or vanish in which
//!   directory, and each event of that kind there uses one up instead of
//!   marking the account dirty (a scan that finds nothing lists every file
//!   of the account: 0.4 s for 100,000 messages, after every delivery to a
//!   user with a client in IDLE; a `STORE 1:*` on 100,000 messages used to
//!   cost a scan or several while it ran). An event nobody announced still
//!   marks the account dirty, so another program's change beside cove's is
//!   seen (the counting argument is at [`OwnChanges`]). Announcements are
//!   counted only for message directories inotify watches (not a folder
//!   cove just made), are taken back when the operation fails, and count
//!   for [`OWN_TTL`] after the last one (events lost in an overflow).
//! - Bounded memory: the event handler (on the reader's thread) does not queue
//!   events; it marks accounts dirty in a map with one entry per account.
//!   A burst of thousands of files is one or a few scans.
//! - Nothing blocks an async reactor: [`WatchGuard`]'s `Drop` takes a short
//!   mutex and wakes the thread; the unwatch happens there.
//!   [`MaildirWatcher::watch`] itself is blocking (it lists `Maildir/` and
//!   adds inotify watches): call it from blocking code.
//! - Watching an account schedules one scan of it, so that what changed
//!   between its last scan and the watch is not missed. An account stays
//!   watched for [`UNWATCH_GRACE`] after its last guard is dropped, so that
//!   a client that reconnects (they all do, often) costs no full scan.
//! - Fallback: if the inotify instance cannot be made (limit reached, no
//!   inotify), that is logged once and every watched account is scanned
//!   every [`POLL_INTERVAL`]; an account some of whose directories could not
//!   be watched (`max_user_watches`) is polled the same way.
//! - A poll, a rescan after an overflow and the first scan of a newly
//!   watched account are [`Account::scan_if_changed`]: they list nothing
//!   when no directory of the Maildir changed since the last scan. A scan
//!   an event asked for is a full one (the event proves a change; stamps
//!   could hide it on a filesystem whose clock is not the kernel's).
//!
//! # Alternatives rejected
//! - One watcher per session or per account: runs into the 128-instance
//!   limit with ordinary numbers of users.
//! - A recursive watch on `Maildir/`: it also watches every `tmp/`, where
//!   each delivery of every other program writes, and a recursive watch walks the whole
//!   tree on every new directory.
//! - Watching every account all the time: costs watches (3 per folder) for
//!   users nobody is looking at; the next session's SELECT scans anyway.
//! - Applying events directly (a `Create` in `new/` means message added):
//!   events get lost (queue overflow) and come for cove's own writes too;
//!   the scan already knows how to reconcile anything, so events only say
//!   when to run it.
//! - notify-debouncer-full: keeps every event and a file-id cache, when a
//!   per-account dirty bit is all that is needed.
//! - The `notify` crate itself (used until 2026-12-07): it reads 1 KiB at a
//!   time and allocates paths for every event; see `watch/reader.rs`.
//! - Scanning on the tokio runtime: the scan is blocking (readdir, SQLite,
//!   hashing); one std thread suffices, as scans of unchanged accounts are
//!   cheap. A scan of one account delays the scans of others queued behind
//!   it.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::account::Account;
use crate::maildir;

mod reader;

use reader::{Hint, Kernel, WatchError};

/// How long an account must have been quiet before it is scanned.
pub const QUIET: Duration = Duration::from_millis(50);
/// The longest a hint waits for its scan while events keep coming.
pub const MAX_DELAY: Duration = Duration::from_millis(250);
/// How often watched accounts are scanned when inotify is not available.
pub const POLL_INTERVAL: Duration = Duration::from_secs(30);

/// How long an account stays watched after its last guard is dropped.
pub const UNWATCH_GRACE: Duration = Duration::from_secs(60);

/// How long an announced change waits for its event.
pub const OWN_TTL: Duration = Duration::from_secs(10);

/// Which way an announced change turns a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum OwnEvent {
    /// Created or renamed to (inotify `IN_CREATE`, `IN_MOVED_TO`).
    Appear,
    /// Removed or renamed from (`IN_DELETE`, `IN_MOVED_FROM`).
    Vanish,
}

impl OwnEvent {
    fn slot(self) -> usize {
        match self {
            OwnEvent::Appear => 0,
            OwnEvent::Vanish => 1,
        }
    }
}

/// A rename's two changes.
pub(crate) fn own_rename(src: &Path, dst: &Path) -> [(PathBuf, OwnEvent); 2] {
    [
        (src.to_path_buf(), OwnEvent::Vanish),
        (dst.to_path_buf(), OwnEvent::Appear),
    ]
}

/// Changes announced for one file operation: taken back when dropped,
/// unless [`Announced::made`] says the operation made them.
#[must_use = "dropping it takes the announcement back"]
pub(crate) struct Announced<'a> {
    own: &'a OwnChanges,
    changes: Vec<(PathBuf, OwnEvent)>,
}

impl Announced<'_> {
    /// The operation made the changes: their events are coming.
    pub(crate) fn made(mut self) {
        self.changes.clear();
    }
}

impl Drop for Announced<'_> {
    fn drop(&mut self) {
        if !self.changes.is_empty() {
            self.own.retract(self.changes.drain(..));
        }
    }
}

/// How many changes of each kind an operation announced, per directory
/// (what it takes back if it fails): as small as the set of directories
/// it touches, however many files.
#[derive(Default)]
pub(crate) struct OwnTally(HashMap<(PathBuf, OwnEvent), u64>);

impl OwnTally {
    pub(crate) fn add(&mut self, changes: &[(PathBuf, OwnEvent)]) {
        for (path, event) in changes {
            self.note(path, *event);
        }
    }

    /// One change of `path`.
    fn note(&mut self, path: &Path, event: OwnEvent) {
        if let Some(dir) = path.parent() {
            self.add_in(dir, event, 1);
        }
    }

    /// `n` changes of one kind in the directory `dir`.
    pub(crate) fn add_in(&mut self, dir: &Path, event: OwnEvent, n: u64) {
        if n > 0 {
            *self.0.entry((dir.to_path_buf(), event)).or_default() += n;
        }
    }
}

/// The changes cove itself is about to make in an account's message
/// directories, so that their events cost no scan (see the module
/// documentation). One per account, shared with the watcher.
///
/// They are counted per directory and kind, not kept per file: memory is
/// one slot per watched directory however big the operation (a `STORE
/// 1:*` on 100,000 messages announces 200,000 changes). Counting loses
/// nothing: an event is used up only while its directory still has
/// announced changes of its kind to come, so another program's event there
/// either finds none left (the account is marked dirty) or uses up one of
/// cove's, whose own event then finds none left (marked dirty then). Only
/// when an operation takes back more than is left (a foreign event used up
/// a change that then did not happen) is the account marked dirty by
/// [`OwnChanges::retract`] itself.
#[derive(Default)]
pub(crate) struct OwnChanges {
    state: Mutex<Expected>,
}

#[derive(Default)]
struct Expected {
    /// The account's message directories inotify watches (empty: not
    /// watched), with the events still to come of each kind; only changes
    /// in them are announced.
    dirs: HashMap<PathBuf, [Slot; 2]>,
    /// Where to mark the account dirty (set while it is watched).
    watcher: Option<(std::sync::Weak<Inbox>, Key)>,
}

/// Events of one kind still to come in one directory.
#[derive(Default, Clone, Copy)]
struct Slot {
    left: u64,
    /// When last announced or used: after [`OWN_TTL`] without either, what
    /// is left is forgotten (events lost in an overflow).
    at: Option<Instant>,
}

impl OwnChanges {
    /// Announce that cove is about to make each of these changes: one event
    /// each. Only changes in watched message directories are counted.
    pub(crate) fn expect<I>(&self, changes: I)
    where
        I: IntoIterator<Item = (PathBuf, OwnEvent)>,
    {
        let mut tally = OwnTally::default();
        for (path, event) in changes {
            tally.note(&path, event);
        }
        self.expect_tally(&tally);
    }

    /// Announce the changes a tally counts (a batch: a count per directory
    /// and kind, however many files).
    pub(crate) fn expect_tally(&self, tally: &OwnTally) {
        let now = Instant::now();
        let mut e = lock(&self.state);
        for ((dir, event), n) in &tally.0 {
            let Some(slots) = e.dirs.get_mut(dir.as_path()) else {
                continue;
            };
            let slot = &mut slots[event.slot()];
            if slot.at.is_some_and(|t| now.duration_since(t) >= OWN_TTL) {
                slot.left = 0;
            }
            slot.left += n;
            slot.at = Some(now);
        }
    }

    /// Announce the changes of one file operation; see [`Announced`].
    pub(crate) fn announce<const N: usize>(
        &self,
        changes: [(PathBuf, OwnEvent); N],
    ) -> Announced<'_> {
        self.expect(changes.clone());
        Announced {
            own: self,
            changes: changes.into(),
        }
    }

    /// Take back announcements of changes that did not happen (the
    /// operation failed).
    pub(crate) fn retract<I>(&self, changes: I)
    where
        I: IntoIterator<Item = (PathBuf, OwnEvent)>,
    {
        let mut tally = OwnTally::default();
        for (path, event) in changes {
            tally.note(&path, event);
        }
        self.retract_tally(&tally);
    }

    /// Take back what a tally announced. More than is left means a foreign
    /// event used up one of them: the account is marked dirty.
    pub(crate) fn retract_tally(&self, tally: &OwnTally) {
        let mut e = lock(&self.state);
        let mut overdrawn = false;
        for ((dir, event), n) in &tally.0 {
            let Some(slots) = e.dirs.get_mut(dir.as_path()) else {
                continue;
            };
            let slot = &mut slots[event.slot()];
            overdrawn |= *n > slot.left;
            slot.left = slot.left.saturating_sub(*n);
        }
        let watcher = e.watcher.clone();
        drop(e);
        if overdrawn && let Some((inbox, key)) = watcher.and_then(|(w, k)| Some((w.upgrade()?, k)))
        {
            inbox.mark(&[(key, false)], false, true);
        }
    }

    /// Whether an event that an entry of the directory `dir` saw `event`
    /// was announced (and not longer than [`OWN_TTL`] ago); if so it is
    /// used up.
    fn take(&self, dir: &Path, event: OwnEvent) -> bool {
        let mut e = lock(&self.state);
        let Some(slots) = e.dirs.get_mut(dir) else {
            return false;
        };
        let slot = &mut slots[event.slot()];
        let now = Instant::now();
        if slot.left == 0 || slot.at.is_none_or(|t| now.duration_since(t) >= OWN_TTL) {
            slot.left = 0;
            return false;
        }
        slot.left -= 1;
        slot.at = Some(now);
        true
    }

    /// The account's watched message directories (none: unwatched), and
    /// where to mark it dirty. What was announced in the others is dropped.
    fn set_dirs(&self, dirs: HashSet<PathBuf>, watcher: Option<(std::sync::Weak<Inbox>, Key)>) {
        let mut e = lock(&self.state);
        let mut old = std::mem::take(&mut e.dirs);
        e.dirs = dirs
            .into_iter()
            .map(|d| {
                let slots = old.remove(&d).unwrap_or_default();
                (d, slots)
            })
            .collect();
        e.watcher = watcher;
    }

    #[cfg(test)]
    fn pending(&self) -> u64 {
        lock(&self.state)
            .dirs
            .values()
            .flat_map(|s| s.iter().map(|s| s.left))
            .sum()
    }
}

/// An account, by the address of its `Account` (stable: the watcher holds an
/// `Arc` of it while it is registered).
type Key = usize;

fn key_of(account: &Arc<Account>) -> Key {
    Arc::as_ptr(account) as usize
}

/// Lock, taking over a mutex a panicking thread left poisoned: every state
/// here is valid between statements.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a watched directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DirKind {
    /// `Maildir/`: INBOX's folder, holding the other folders.
    Root,
    /// `Maildir/.Folder`.
    Folder,
    /// A `new/` or `cur/`.
    Messages,
}

/// A watched directory: what it is, and whose.
struct Route {
    kind: DirKind,
    accounts: Vec<Key>,
}

/// A hint: scan this account soon.
#[derive(Clone, Copy)]
struct Dirty {
    first: Instant,
    last: Instant,
    /// Recompute the account's watched directories before the scan.
    resync: bool,
    /// Scan at once (poll tick, overflow).
    urgent: bool,
    /// An event said something changed: a full scan, not one that trusts
    /// unchanged directory stamps.
    by_event: bool,
}

impl Dirty {
    fn due(&self) -> Instant {
        if self.urgent {
            self.first
        } else {
            (self.last + QUIET).min(self.first + MAX_DELAY)
        }
    }
}

/// What the event handler, the guards and the thread share, without the
/// inotify reader (which holds the inbox: no reference cycle).
#[derive(Default)]
struct Inbox {
    /// Watched directory -> kind and accounts.
    routes: Mutex<HashMap<PathBuf, Route>>,
    /// The announced changes of each account watched with inotify.
    own: Mutex<HashMap<Key, Arc<OwnChanges>>>,
    pending: Mutex<Pending>,
    wake: Condvar,
    scans: AtomicU64,
    warned_error: AtomicBool,
}

#[derive(Default)]
struct Pending {
    dirty: HashMap<Key, Dirty>,
    /// Overflow or error: every watched account.
    rescan_all: bool,
    /// Guards dropped, one entry each.
    released: Vec<Key>,
    stop: bool,
}

impl Inbox {
    fn mark(&self, hits: &[(Key, bool)], urgent: bool, by_event: bool) {
        let now = Instant::now();
        let mut p = lock(&self.pending);
        let mut new = false;
        for &(key, resync) in hits {
            match p.dirty.entry(key) {
                Entry::Occupied(mut e) => {
                    let d = e.get_mut();
                    d.last = now;
                    d.resync |= resync;
                    d.by_event |= by_event;
                    if urgent && !d.urgent {
                        d.urgent = true;
                        new = true;
                    }
                }
                Entry::Vacant(e) => {
                    e.insert(Dirty {
                        first: now,
                        last: now,
                        resync,
                        urgent,
                        by_event,
                    });
                    new = true;
                }
            }
        }
        drop(p);
        // A later event only moves a due time later: the thread, waking
        // early, computes it again.
        if new {
            self.wake.notify_one();
        }
    }

    fn rescan_all(&self) {
        let mut p = lock(&self.pending);
        if !p.rescan_all {
            p.rescan_all = true;
            drop(p);
            self.wake.notify_one();
        }
    }

    /// The inotify reader could not read or wait: every watched account
    /// may have missed a change.
    fn on_error(&self, e: &dyn std::fmt::Display) {
        if self.warned_error.swap(true, Ordering::Relaxed) {
            tracing::debug!(error = %e, "maildir watcher error; rescanning watched accounts");
        } else {
            tracing::warn!(error = %e, "maildir watcher error; rescanning watched accounts");
        }
        self.rescan_all();
    }

    /// The kernel's event queue overflowed: events were lost.
    fn on_overflow(&self) {
        tracing::info!("inotify queue overflowed; rescanning watched accounts");
        self.rescan_all();
    }

    /// One read's events (on the reader's thread: cheap, never blocks on
    /// anything but these short locks, each taken once for the batch).
    fn on_events(&self, hints: &[Hint<'_>]) {
        let mut hits: Vec<(Key, bool)> = Vec::new();
        {
            let routes = lock(&self.routes);
            let own = lock(&self.own);
            for hint in hints {
                let Some((keys, resync)) = route(&routes, hint.dir, hint.name) else {
                    continue;
                };
                // A message file cove announced it would change.
                if !resync
                    && let Some(change) = hint.change
                    && keys
                        .iter()
                        .filter_map(|k| own.get(k))
                        .any(|o| o.take(hint.dir, change))
                {
                    continue;
                }
                for &k in keys {
                    if !hits.iter().any(|(h, r)| *h == k && *r == resync) {
                        hits.push((k, resync));
                    }
                }
            }
        }
        if !hits.is_empty() {
            self.mark(&hits, false, true);
        }
    }
}

/// The accounts an event concerns (one in the watched directory `dir`, of
/// its entry `name` or of `dir` itself), and whether their watch set must
/// be recomputed.
fn route<'a>(
    routes: &'a HashMap<PathBuf, Route>,
    dir: &Path,
    name: Option<&std::ffi::OsStr>,
) -> Option<(&'a [Key], bool)> {
    let r = routes.get(dir)?;
    // The watched directory itself (deleted or moved away).
    let Some(name) = name else {
        return Some((&r.accounts, true));
    };
    let name = name.to_str()?;
    let relevant = match r.kind {
        // Message files; `.`-names are temporaries (`.cove-dedup.*`), which
        // the scan ignores too.
        DirKind::Messages => return (!name.starts_with('.')).then_some((&r.accounts, false)),
        DirKind::Folder => name == "new" || name == "cur",
        DirKind::Root => {
            name == "new"
                || name == "cur"
                || (!name.starts_with(".cove-") && maildir::mailbox_name_of_dir(name).is_some())
        }
    };
    relevant.then_some((&r.accounts, true))
}

/// The directories to watch for a Maildir, by kind. `false` when `Maildir/`
/// could not be listed (the account is then polled).
fn wanted_dirs(root: &Path) -> (Vec<(PathBuf, DirKind)>, bool) {
    let mut out = Vec::new();
    let mut folders = vec![(root.to_path_buf(), DirKind::Root)];
    let complete = match std::fs::read_dir(root) {
        Ok(entries) => {
            for entry in entries.flatten() {
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if name.starts_with(".cove-") || maildir::mailbox_name_of_dir(&name).is_none() {
                    continue;
                }
                let path = entry.path();
                if path.is_dir() {
                    folders.push((path, DirKind::Folder));
                }
            }
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (out, true),
        Err(e) => {
            tracing::warn!(dir = %root.display(), error = %e, "cannot list a Maildir to watch it");
            false
        }
    };
    for (folder, kind) in folders {
        for sub in ["new", "cur"] {
            let p = folder.join(sub);
            if p.is_dir() {
                out.push((p, DirKind::Messages));
            }
        }
        out.push((folder, kind));
    }
    (out, complete)
}

/// An account being watched.
struct Watched {
    account: Arc<Account>,
    guards: usize,
    maildir: PathBuf,
    /// Directories watched for it.
    dirs: Vec<PathBuf>,
    /// Some directory could not be watched: polled as well.
    incomplete: bool,
    /// No guard since then: unwatched after [`UNWATCH_GRACE`]. Until then a
    /// new guard needs no scan (the watch never stopped).
    idle_since: Option<Instant>,
}

/// What only `watch` and the thread touch.
struct State {
    /// `None`: no inotify; watched accounts are polled.
    backend: Option<Kernel>,
    accounts: HashMap<Key, Watched>,
    warned_limit: bool,
    /// See [`UNWATCH_GRACE`]; zero in tests that check unwatching.
    grace: Duration,
}

impl State {
    /// Make the watched directories of `key` those its Maildir has now.
    fn resync(&mut self, inbox: &Arc<Inbox>, key: Key) {
        if self.backend.is_none() {
            return;
        }
        let Some(w) = self.accounts.get_mut(&key) else {
            return;
        };
        let (wanted, listed) = wanted_dirs(&w.maildir);
        let old = std::mem::take(&mut w.dirs);
        let wanted_paths: HashSet<&PathBuf> = wanted.iter().map(|(p, _)| p).collect();
        // Stale ones first: a folder renamed by another program keeps its
        // inotify watch (the inode), known by the old path until re-added;
        // removing that after adding the new path would drop both.
        for p in old.iter().filter(|p| !wanted_paths.contains(p)) {
            self.release_dir(inbox, key, p);
        }
        let old: HashSet<PathBuf> = old.into_iter().collect();
        let mut dirs = Vec::with_capacity(wanted.len());
        let mut complete = listed;
        for (p, kind) in wanted {
            if old.contains(&p) {
                dirs.push(p);
                continue;
            }
            match self.add_dir(inbox, key, &p, kind) {
                Ok(()) => dirs.push(p),
                // Gone meanwhile: its parent's event brings a resync.
                Err(WatchError::NotFound) => {}
                Err(e) => {
                    complete = false;
                    if matches!(e, WatchError::Limit) && !self.warned_limit {
                        self.warned_limit = true;
                        tracing::warn!(dir = %p.display(), "inotify watch limit reached (fs.inotify.max_user_watches); such mailboxes are polled every {}s", POLL_INTERVAL.as_secs());
                    } else {
                        tracing::debug!(dir = %p.display(), error = %e, "cannot watch a Maildir directory; it is polled");
                    }
                }
            }
        }
        if let Some(w) = self.accounts.get_mut(&key) {
            // cove's own changes are announced in the message directories
            // watched now (a folder it just made is not, yet). The map's
            // lock is let go first: the reader takes it after the routes'.
            let own = lock(&inbox.own).get(&key).cloned();
            if let Some(own) = own {
                let routes = lock(&inbox.routes);
                let messages = dirs
                    .iter()
                    .filter(|d| routes.get(*d).is_some_and(|r| r.kind == DirKind::Messages))
                    .cloned()
                    .collect();
                drop(routes);
                own.set_dirs(messages, Some((Arc::downgrade(inbox), key)));
            }
            w.dirs = dirs;
            w.incomplete = !complete;
        }
    }

    fn add_dir(
        &mut self,
        inbox: &Inbox,
        key: Key,
        path: &Path,
        kind: DirKind,
    ) -> Result<(), WatchError> {
        {
            let mut routes = lock(&inbox.routes);
            if let Some(r) = routes.get_mut(path) {
                if !r.accounts.contains(&key) {
                    r.accounts.push(key);
                }
                return Ok(());
            }
        }
        if let Some(b) = self.backend.as_mut() {
            b.watch(path)?;
        }
        lock(&inbox.routes).insert(
            path.to_path_buf(),
            Route {
                kind,
                accounts: vec![key],
            },
        );
        Ok(())
    }

    fn release_dir(&mut self, inbox: &Inbox, key: Key, path: &Path) {
        let unwatch = {
            let mut routes = lock(&inbox.routes);
            match routes.get_mut(path) {
                Some(r) => {
                    r.accounts.retain(|k| *k != key);
                    let last = r.accounts.is_empty();
                    if last {
                        routes.remove(path);
                    }
                    last
                }
                None => false,
            }
        };
        if unwatch && let Some(b) = self.backend.as_mut() {
            b.unwatch(path);
        }
    }

    /// One guard fewer; the last one unwatches.
    fn release(&mut self, inbox: &Inbox, key: Key) {
        let Some(w) = self.accounts.get_mut(&key) else {
            return;
        };
        w.guards = w.guards.saturating_sub(1);
        if w.guards > 0 {
            return;
        }
        // Clients reconnect all the time: keep watching a while, so that the
        // next session on a big mailbox needs no full scan.
        if !self.grace.is_zero() {
            w.idle_since = Some(Instant::now());
            return;
        }
        self.evict(inbox, key);
    }

    /// Stop watching accounts that have had no guard for the grace period.
    fn evict_idle(&mut self, inbox: &Inbox) {
        let grace = self.grace;
        let idle: Vec<Key> = self
            .accounts
            .iter()
            .filter(|(_, w)| w.guards == 0 && w.idle_since.is_some_and(|t| t.elapsed() >= grace))
            .map(|(k, _)| *k)
            .collect();
        for key in idle {
            self.evict(inbox, key);
        }
    }

    fn evict(&mut self, inbox: &Inbox, key: Key) {
        if let Some(own) = lock(&inbox.own).remove(&key) {
            own.set_dirs(HashSet::new(), None);
        }
        if let Some(w) = self.accounts.remove(&key) {
            for p in &w.dirs {
                self.release_dir(inbox, key, p);
            }
        }
    }
}

struct Shared {
    inbox: Arc<Inbox>,
    state: Mutex<State>,
}

/// The server's one Maildir watcher (see the module documentation).
/// Obtained from [`Store::watcher`](crate::Store::watcher).
pub struct MaildirWatcher {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MaildirWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaildirWatcher")
            .field("scans", &self.scans())
            .finish()
    }
}

/// Keeps an account watched; the last one dropped stops that. Dropping does
/// not block (the unwatch happens on the watcher's thread).
#[must_use = "the account is watched only while the guard lives"]
pub struct WatchGuard {
    inbox: Arc<Inbox>,
    key: Key,
}

impl std::fmt::Debug for WatchGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchGuard").finish_non_exhaustive()
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let mut p = lock(&self.inbox.pending);
        p.released.push(self.key);
        drop(p);
        self.inbox.wake.notify_one();
    }
}

impl MaildirWatcher {
    /// Start the watcher and its thread, on inotify if it can be had, else
    /// polling every [`POLL_INTERVAL`].
    pub(crate) fn start() -> MaildirWatcher {
        let inbox = Arc::new(Inbox::default());
        let backend = match Kernel::start(inbox.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch Maildirs (inotify); changes made by other programs are picked up by polling every {}s instead", POLL_INTERVAL.as_secs());
                None
            }
        };
        Self::with_backend(inbox, backend, POLL_INTERVAL)
    }

    /// A watcher that only polls, every `every` (tests of the fallback).
    #[cfg(test)]
    pub(crate) fn polling(every: Duration) -> MaildirWatcher {
        Self::with_backend(Arc::new(Inbox::default()), None, every)
    }

    fn with_backend(
        inbox: Arc<Inbox>,
        backend: Option<Kernel>,
        poll_every: Duration,
    ) -> MaildirWatcher {
        let shared = Arc::new(Shared {
            inbox,
            state: Mutex::new(State {
                backend,
                accounts: HashMap::new(),
                warned_limit: false,
                grace: UNWATCH_GRACE,
            }),
        });
        let worker = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("cove-watch".into())
            .spawn(move || run(&worker, poll_every));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the Maildir watcher thread; changes made by other programs are noticed only when a mailbox is opened");
        }
        MaildirWatcher { shared }
    }

    /// Watch an account's Maildir until the guard (and every other guard
    /// for it) is dropped: changes other programs make there are scanned
    /// within about [`MAX_DELAY`] and go out on the account's change feed.
    /// Also schedules one scan now. Blocking (lists `Maildir/`, adds inotify
    /// watches); never fails — what cannot be watched is polled.
    pub fn watch(&self, account: &Arc<Account>) -> WatchGuard {
        let key = key_of(account);
        let inbox = &self.shared.inbox;
        let mut st = lock(&self.shared.state);
        let first = match st.accounts.entry(key) {
            Entry::Occupied(mut e) => {
                e.get_mut().guards += 1;
                e.get_mut().idle_since = None;
                false
            }
            Entry::Vacant(e) => {
                e.insert(Watched {
                    account: account.clone(),
                    guards: 1,
                    maildir: account.home().join("Maildir"),
                    dirs: Vec::new(),
                    incomplete: false,
                    idle_since: None,
                });
                true
            }
        };
        if first {
            if st.backend.is_some() {
                lock(&inbox.own).insert(key, account.own_changes().clone());
            }
            st.resync(inbox, key);
        }
        drop(st);
        if first {
            inbox.mark(&[(key, false)], false, false);
        }
        WatchGuard {
            inbox: inbox.clone(),
            key,
        }
    }

    /// Unwatch accounts as soon as their last guard is dropped (tests).
    #[cfg(test)]
    fn unwatch_at_once(&self) {
        lock(&self.shared.state).grace = Duration::ZERO;
    }

    /// How many scans the watcher has started (metrics, tests).
    pub fn scans(&self) -> u64 {
        self.shared.inbox.scans.load(Ordering::Relaxed)
    }

    /// How many accounts are watched.
    pub fn watched_accounts(&self) -> usize {
        lock(&self.shared.state).accounts.len()
    }

    /// How many directories inotify watches.
    pub fn watched_dirs(&self) -> usize {
        lock(&self.shared.inbox.routes).len()
    }

    /// Whether inotify is in use (else watched accounts are polled).
    pub fn uses_inotify(&self) -> bool {
        lock(&self.shared.state).backend.is_some()
    }
}

impl Drop for MaildirWatcher {
    fn drop(&mut self) {
        let mut p = lock(&self.shared.inbox.pending);
        p.stop = true;
        drop(p);
        self.shared.inbox.wake.notify_one();
    }
}

/// The watcher's thread: wait for hints, let them settle, scan.
fn run(shared: &Shared, poll_every: Duration) {
    let inbox = &shared.inbox;
    let mut next_poll = Instant::now() + poll_every;
    loop {
        // Wait until something is due, then take it.
        let (released, rescan_all, ready) = {
            let mut p = lock(&inbox.pending);
            loop {
                if p.stop {
                    drop(p);
                    // Dropping the inotify instance stops its reader.
                    let backend = lock(&shared.state).backend.take();
                    drop(backend);
                    return;
                }
                let now = Instant::now();
                let due = p
                    .dirty
                    .values()
                    .map(Dirty::due)
                    .min()
                    .map_or(next_poll, |d| d.min(next_poll));
                if p.rescan_all || !p.released.is_empty() || due <= now {
                    break;
                }
                p = inbox
                    .wake
                    .wait_timeout(p, due - now)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            let now = Instant::now();
            let ready: Vec<(Key, bool, bool)> = p
                .dirty
                .iter()
                .filter(|(_, d)| d.due() <= now)
                .map(|(k, d)| (*k, d.resync, d.by_event))
                .collect();
            for (k, _, _) in &ready {
                p.dirty.remove(k);
            }
            (
                std::mem::take(&mut p.released),
                std::mem::take(&mut p.rescan_all),
                ready,
            )
        };

        let changed: HashSet<Key> = ready.iter().filter(|r| r.2).map(|r| r.0).collect();
        let mut work: HashMap<Key, bool> = ready.into_iter().map(|(k, r, _)| (k, r)).collect();
        {
            let mut st = lock(&shared.state);
            for key in released {
                st.release(inbox, key);
            }
            st.evict_idle(inbox);
            let now = Instant::now();
            let poll = now >= next_poll;
            if poll {
                next_poll = now + poll_every;
            }
            let polling = st.backend.is_none();
            for (key, w) in &st.accounts {
                if rescan_all || (poll && (polling || w.incomplete)) {
                    *work.entry(*key).or_default() |= !polling;
                }
            }
            // Released accounts are not scanned any more.
            work.retain(|k, _| st.accounts.contains_key(k));
        }
        if rescan_all {
            // Hints that came meanwhile are covered by this round.
            let mut p = lock(&inbox.pending);
            p.dirty.retain(|k, _| !work.contains_key(k));
        }

        for (key, resync) in work {
            let account = {
                let mut st = lock(&shared.state);
                if resync {
                    st.resync(inbox, key);
                }
                match st.accounts.get(&key) {
                    Some(w) => w.account.clone(),
                    None => continue,
                }
            };
            inbox.scans.fetch_add(1, Ordering::Relaxed);
            // An event proves a change: scan. A poll, an overflow or a new
            // watch only may have missed one: scan if a stamp moved.
            let scanned = if changed.contains(&key) {
                account.scan()
            } else {
                account.scan_if_changed()
            };
            match scanned {
                Ok(report) if !report.is_empty() => {
                    tracing::debug!(user = %account.email(), ?report, "Maildir changed outside cove");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(user = %account.email(), error = %e, "scan after a Maildir change failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Address, Change, ChangeKind, Store, StoreOptions, User};
    use std::fs;
    use tokio::sync::broadcast;

    struct Fx {
        _dir: tempfile::TempDir,
        store: Store,
        user: User,
        acct: Arc<Account>,
    }

    impl Fx {
        fn new() -> Fx {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(
                dir.path(),
                StoreOptions {
                    hostname: "test".into(),
                    env: crate::Env::default(),
                    durability: crate::Durability::Batched,
                },
            )
            .unwrap();
            let user = store
                .add_user(&Address::parse("a@x.org").unwrap(), None, 0)
                .unwrap();
            let acct = store.account(&user).unwrap();
            Fx {
                _dir: dir,
                store,
                user,
                acct,
            }
        }

        fn maildir(&self) -> PathBuf {
            self.store.home_of(&self.user.address).join("Maildir")
        }

        /// Deliver a file the way another MDA does: write in tmp/, rename
        /// into new/.
        fn drop_in(&self, folder: &Path, name: &str, body: &str) -> PathBuf {
            let tmp = folder.join("tmp").join(name);
            fs::write(&tmp, body).unwrap();
            let dst = folder.join("new").join(name);
            fs::rename(&tmp, &dst).unwrap();
            dst
        }
    }

    /// The changes on the feed within `within`, stopping early once `enough`
    /// of them arrived.
    fn collect(
        feed: &mut broadcast::Receiver<Change>,
        within: Duration,
        enough: usize,
    ) -> Vec<Change> {
        let end = Instant::now() + within;
        let mut out = Vec::new();
        while Instant::now() < end && out.len() < enough {
            match feed.try_recv() {
                Ok(c) => out.push(c),
                Err(broadcast::error::TryRecvError::Empty) => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("feed: {e:?}"),
            }
        }
        out
    }

    /// Wait until no scan has started for a while; returns the count.
    fn settle(w: &MaildirWatcher) -> u64 {
        let mut last = w.scans();
        loop {
            std::thread::sleep(MAX_DELAY + QUIET * 2);
            let now = w.scans();
            if now == last {
                return now;
            }
            last = now;
        }
    }

    #[test]
    fn foreign_add_rename_remove_reach_the_feed_within_a_second() {
        let fx = Fx::new();
        let w = MaildirWatcher::start();
        assert!(w.uses_inotify());
        let _g = w.watch(&fx.acct);
        settle(&w);
        let mut feed = fx.acct.subscribe();
        let inbox = fx.acct.mailbox("INBOX").unwrap().guid;

        let t = Instant::now();
        let path = fx.drop_in(&fx.maildir(), "1700000000.M1P1.mutt,S=5", "hello");
        let got = collect(&mut feed, Duration::from_secs(1), 1);
        assert!(
            matches!(got.as_slice(), [Change { mailbox, kind: ChangeKind::MessageAdded { uid: 1, .. }, .. }] if *mailbox == inbox),
            "{got:?}"
        );
        eprintln!("add noticed after {:?}", t.elapsed());

        let seen = fx
            .maildir()
            .join("cur")
            .join("1700000000.M1P1.mutt,S=5:2,S");
        fs::rename(&path, &seen).unwrap();
        let got = collect(&mut feed, Duration::from_secs(1), 1);
        assert!(
            matches!(got.as_slice(), [Change { kind: ChangeKind::FlagsChanged { uid: 1, flags, .. }, .. }] if *flags == crate::Flags::SEEN),
            "{got:?}"
        );

        fs::remove_file(&seen).unwrap();
        let got = collect(&mut feed, Duration::from_secs(1), 1);
        assert!(
            matches!(
                got.as_slice(),
                [Change {
                    kind: ChangeKind::Expunged { uid: 1, .. },
                    ..
                }]
            ),
            "{got:?}"
        );
    }

    #[test]
    fn own_writes_cost_no_scan_and_do_not_loop() {
        let fx = Fx::new();
        let w = MaildirWatcher::start();
        let _g = w.watch(&fx.acct);
        let before = settle(&w);
        let mut feed = fx.acct.subscribe();
        let blob = fx.store.blobs().put(b"Subject: x\r\n\r\nx").unwrap();
        let d = fx
            .acct
            .deliver("INBOX", &blob, &crate::NewMessage::default())
            .unwrap();
        fx.acct
            .set_flags(&d.mailbox, d.uid, crate::Flags::SEEN, &[])
            .unwrap();
        let d2 = fx
            .acct
            .deliver("INBOX", &blob, &crate::NewMessage::default())
            .unwrap();
        fx.acct.expunge(&d2.mailbox, &[d2.uid]).unwrap();
        let archive = fx.acct.mailbox("Archive").unwrap().guid;
        let copied = fx
            .acct
            .copy_messages(&d.mailbox, &[d.uid], &archive, None)
            .unwrap();
        fx.acct
            .move_messages(&archive, &[copied.pairs[0].1], &d.mailbox)
            .unwrap();
        let after = settle(&w);
        assert_eq!(after - before, 0, "scans after own writes");
        // Only the changes cove made itself: two deliveries, a flag change,
        // an expunge, a copy, and the move (expunged there, added here).
        let got = collect(&mut feed, Duration::from_millis(100), usize::MAX);
        assert_eq!(got.len(), 7, "{got:?}");
        assert_eq!(fx.acct.own_changes().pending(), 0);
        // And a foreign file that the scan dedups (a link into blobs/, a
        // rename over it) settles too.
        fx.drop_in(&fx.maildir(), "1700000001.M2P2.mutt,S=1", "x");
        let before = settle(&w);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(w.scans(), before);
        // A scan that finds nothing does not flush.
        let sync = fx.store.blobs().group_sync().clone();
        let flushes = sync.flushes();
        assert!(fx.acct.scan().unwrap().is_empty());
        assert_eq!(sync.flushes(), flushes);
    }

    /// Deliver `body` `n` times to INBOX: its GUID and the UIDs.
    fn deliver_many(fx: &Fx, body: &[u8], n: usize) -> (crate::MailboxGuid, Vec<crate::Uid>) {
        let blob = fx.store.blobs().put(body).unwrap();
        let mut uids = Vec::new();
        let mut mailbox = None;
        for _ in 0..n {
            let d = fx
                .acct
                .deliver("INBOX", &blob, &crate::NewMessage::default())
                .unwrap();
            uids.push(d.uid);
            mailbox = Some(d.mailbox);
        }
        (mailbox.unwrap(), uids)
    }

    /// `STORE +FLAGS (\Seen)` on `uids`.
    fn see_all(fx: &Fx, mailbox: &crate::MailboxGuid, uids: &[crate::Uid]) -> crate::StoreResult {
        fx.acct
            .store_flags(
                mailbox,
                uids,
                crate::FlagOp::Add(crate::Flags::SEEN, Vec::new()),
                None,
            )
            .unwrap()
    }

    /// A flag change on more messages than any per-file bookkeeping would
    /// keep (it used to stop at 1,024 and cost a scan) still costs no scan,
    /// and another program's rename right after it is still seen.
    #[test]
    fn a_big_store_costs_no_scan() {
        let fx = Fx::new();
        let w = MaildirWatcher::start();
        let _g = w.watch(&fx.acct);
        let (mailbox, uids) = deliver_many(&fx, b"Subject: z\r\n\r\nz", 1500);
        let before = settle(&w);
        let r = see_all(&fx, &mailbox, &uids);
        assert_eq!(r.updated.len(), 1500);
        let after = settle(&w);
        assert_eq!(after - before, 0, "scans after STORE on 1,500 messages");
        assert_eq!(fx.acct.own_changes().pending(), 0);
        // mutt flags one of them right after: noticed.
        let mut feed = fx.acct.subscribe();
        let file = fx.acct.message(&mailbox, uids[7]).unwrap().unwrap().file;
        fs::rename(
            fx.maildir().join(&file),
            fx.maildir().join(file.replace(":2,S", ":2,FS")),
        )
        .unwrap();
        let got = collect(&mut feed, Duration::from_secs(2), 1);
        assert!(
            matches!(got.as_slice(), [Change { kind: ChangeKind::FlagsChanged { uid, flags, .. }, .. }] if *uid == uids[7] && *flags == crate::Flags::SEEN | crate::Flags::FLAGGED),
            "{got:?}"
        );
    }

    /// Files another program drops into cur/ while a STORE renames
    /// thousands of files there are each seen: cove's own renames are
    /// counted, not matched by name or skipped while the batch runs, so a
    /// foreign event among them leaves one of cove's over, which marks the
    /// account dirty and scans it.
    #[test]
    fn files_dropped_into_cur_during_a_big_store_are_seen() {
        let fx = Fx::new();
        let w = MaildirWatcher::start();
        let _g = w.watch(&fx.acct);
        let (mailbox, uids) = deliver_many(&fx, b"Subject: d\r\n\r\nd", 3000);
        settle(&w);
        let stop = Arc::new(AtomicBool::new(false));
        let dropper = {
            let (stop, maildir) = (stop.clone(), fx.maildir());
            std::thread::spawn(move || {
                let mut n = 0;
                while n == 0 || !stop.load(Ordering::Relaxed) {
                    let name = format!("1700000500.M{n}P8.mutt,S=1");
                    let tmp = maildir.join("tmp").join(&name);
                    fs::write(&tmp, "x").unwrap();
                    fs::rename(&tmp, maildir.join("cur").join(format!("{name}:2,F"))).unwrap();
                    n += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
                n
            })
        };
        let r = see_all(&fx, &mailbox, &uids);
        stop.store(true, Ordering::Relaxed);
        let dropped = dropper.join().unwrap();
        assert_eq!(r.updated.len(), 3000);
        settle(&w);
        let messages = fx.acct.messages(&mailbox).unwrap();
        let flagged = messages
            .iter()
            .filter(|m| m.flags == crate::Flags::FLAGGED)
            .count();
        eprintln!("{dropped} files dropped during the STORE");
        assert_eq!(flagged, dropped, "every dropped file is in the index");
        assert_eq!(messages.len(), 3000 + dropped);
        assert_eq!(fx.acct.own_changes().pending(), 0);
    }

    /// Announcements count only for their kind of change, in watched
    /// message directories, for a while.
    #[test]
    fn announcements_match_kind_directory_and_age() {
        let own = OwnChanges::default();
        let dir = PathBuf::from("/m/Maildir/new");
        let file = dir.join("1.G1.h,S=1");
        own.expect([(file.clone(), OwnEvent::Appear)]);
        assert_eq!(own.pending(), 0, "not watched: nothing kept");
        own.set_dirs(HashSet::from([dir.clone()]), None);
        own.expect([
            (file.clone(), OwnEvent::Appear),
            (PathBuf::from("/m/Maildir/.New/cur/x"), OwnEvent::Appear),
        ]);
        assert_eq!(own.pending(), 1, "only in watched directories");
        assert!(
            !own.take(&dir, OwnEvent::Vanish),
            "a removal is not a creation"
        );
        assert!(own.take(&dir, OwnEvent::Appear));
        assert!(!own.take(&dir, OwnEvent::Appear), "used up");
        // Taken back after a failure.
        own.expect([(file.clone(), OwnEvent::Appear)]);
        own.retract([(file.clone(), OwnEvent::Appear)]);
        assert!(!own.take(&dir, OwnEvent::Appear));
        // Too old to count.
        own.expect([(file.clone(), OwnEvent::Vanish)]);
        if let Some(old) = Instant::now().checked_sub(OWN_TTL + Duration::from_secs(1)) {
            for slots in lock(&own.state).dirs.values_mut() {
                for slot in slots.iter_mut() {
                    slot.at = Some(old);
                }
            }
            assert!(!own.take(&dir, OwnEvent::Vanish));
        }
        // Unwatched: everything dropped.
        own.expect([(file.clone(), OwnEvent::Appear)]);
        own.set_dirs(HashSet::new(), None);
        assert_eq!(own.pending(), 0);
        // However big the operation, its changes are counted, not kept.
        own.set_dirs(HashSet::from([dir.clone()]), None);
        own.expect((0..200_000).map(|i| (dir.join(i.to_string()), OwnEvent::Appear)));
        assert_eq!(own.pending(), 200_000);
        assert_eq!(lock(&own.state).dirs.len(), 1);
    }

    /// A foreign event in a directory where cove announced changes uses up
    /// one of cove's; if cove then takes that change back, the account is
    /// marked dirty all the same.
    #[test]
    fn a_foreign_event_is_never_swallowed_by_a_retraction() {
        let inbox = Arc::new(Inbox::default());
        let own = OwnChanges::default();
        let dir = PathBuf::from("/m/Maildir/cur");
        own.set_dirs(
            HashSet::from([dir.clone()]),
            Some((Arc::downgrade(&inbox), 7)),
        );
        let ours = dir.join("1.G1.h,S=1:2,S");
        let announced = own.announce([(ours.clone(), OwnEvent::Appear)]);
        // Another program's file lands first and uses it up.
        assert!(own.take(&dir, OwnEvent::Appear));
        assert!(lock(&inbox.pending).dirty.is_empty());
        // cove's rename failed: taking it back marks the account.
        drop(announced);
        let p = lock(&inbox.pending);
        assert!(p.dirty.get(&7).is_some_and(|d| d.by_event), "marked dirty");
    }

    /// Another program's change to a file right after cove's own change of
    /// it is still noticed: only the events cove announced are used up.
    #[test]
    fn a_foreign_change_right_after_an_own_one_is_seen() {
        let fx = Fx::new();
        let w = MaildirWatcher::start();
        let _g = w.watch(&fx.acct);
        settle(&w);
        let mut feed = fx.acct.subscribe();
        let blob = fx.store.blobs().put(b"Subject: y\r\n\r\ny").unwrap();
        let d = fx
            .acct
            .deliver("INBOX", &blob, &crate::NewMessage::default())
            .unwrap();
        let r = fx
            .acct
            .store_flags(
                &d.mailbox,
                &[d.uid],
                crate::FlagOp::Add(crate::Flags::SEEN, Vec::new()),
                None,
            )
            .unwrap();
        assert_eq!(r.updated.len(), 1);
        let file = fx.acct.message(&d.mailbox, d.uid).unwrap().unwrap().file;
        // mutt flags it too, at once.
        let flagged = format!("{}F", file.replace(":2,S", ":2,"));
        fs::rename(
            fx.maildir().join(&file),
            fx.maildir().join(format!("{flagged}S")),
        )
        .unwrap();
        let got = collect(&mut feed, Duration::from_secs(2), 3);
        assert!(
            matches!(got.last(), Some(Change { kind: ChangeKind::FlagsChanged { flags, .. }, .. }) if *flags == crate::Flags::SEEN | crate::Flags::FLAGGED),
            "{got:?}"
        );
    }

    #[test]
    fn folders_created_by_another_program_are_watched() {
        let fx = Fx::new();
        let w = MaildirWatcher::start();
        let _g = w.watch(&fx.acct);
        settle(&w);
        let mut feed = fx.acct.subscribe();
        let folder = fx.maildir().join(".Lists");
        fs::create_dir(&folder).unwrap();
        for sub in ["tmp", "new", "cur"] {
            std::thread::sleep(Duration::from_millis(30));
            fs::create_dir(folder.join(sub)).unwrap();
        }
        let got = collect(&mut feed, Duration::from_secs(2), 1);
        assert!(
            matches!(got.as_slice(), [Change { kind: ChangeKind::MailboxCreated { name }, .. }] if name == "Lists"),
            "{got:?}"
        );
        settle(&w);
        let lists = fx.acct.mailbox("Lists").unwrap().guid;
        fx.drop_in(&folder, "1700000002.M3P3.mutt,S=2", "hi");
        let got = collect(&mut feed, Duration::from_secs(1), 1);
        assert!(
            matches!(got.as_slice(), [Change { mailbox, kind: ChangeKind::MessageAdded { .. }, .. }] if *mailbox == lists),
            "{got:?}"
        );
        // Removed by another program: its watches go too.
        let dirs = w.watched_dirs();
        fs::remove_dir_all(&folder).unwrap();
        let got = collect(&mut feed, Duration::from_secs(1), 2);
        assert!(
            got.iter()
                .any(|c| matches!(&c.kind, ChangeKind::MailboxDeleted { name } if name == "Lists")),
            "{got:?}"
        );
        settle(&w);
        assert_eq!(w.watched_dirs(), dirs - 3);
    }

    #[test]
    fn dropping_the_last_guard_unwatches() {
        let fx = Fx::new();
        let w = MaildirWatcher::start();
        w.unwatch_at_once();
        let g1 = w.watch(&fx.acct);
        let g2 = w.watch(&fx.acct);
        assert_eq!(w.watched_accounts(), 1);
        // INBOX and 5 default folders, 3 directories each.
        assert_eq!(w.watched_dirs(), 18);
        drop(g1);
        settle(&w);
        assert_eq!(w.watched_accounts(), 1);
        drop(g2);
        let before = settle(&w);
        assert_eq!(w.watched_accounts(), 0);
        assert_eq!(w.watched_dirs(), 0);
        let mut feed = fx.acct.subscribe();
        fx.drop_in(&fx.maildir(), "1700000003.M4P4.mutt,S=2", "hi");
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(w.scans(), before);
        assert!(collect(&mut feed, Duration::from_millis(10), 1).is_empty());
    }

    #[test]
    fn a_reconnecting_client_costs_no_scan() {
        let fx = Fx::new();
        let w = MaildirWatcher::start();
        let g = w.watch(&fx.acct);
        let before = settle(&w);
        drop(g);
        // The next session within the grace period finds the account still
        // watched: no scan, and what changed meanwhile still arrives.
        let _g = w.watch(&fx.acct);
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(w.scans(), before);
        assert_eq!(w.watched_accounts(), 1);
        let mut feed = fx.acct.subscribe();
        fx.drop_in(&fx.maildir(), "1700000009.M9P9.mutt,S=2", "hi");
        assert_eq!(collect(&mut feed, Duration::from_secs(2), 1).len(), 1);
    }

    #[test]
    fn a_burst_of_files_is_a_few_scans() {
        let fx = Fx::new();
        let w = MaildirWatcher::start();
        let _g = w.watch(&fx.acct);
        let before = settle(&w);
        let mut feed = fx.acct.subscribe();
        for i in 0..500 {
            fx.drop_in(
                &fx.maildir(),
                &format!("1700000100.M{i}P9.mutt,S=4"),
                &format!("m{i:03}"),
            );
        }
        let got = collect(&mut feed, Duration::from_secs(10), 500);
        assert_eq!(got.len(), 500);
        assert!(
            got.iter()
                .all(|c| matches!(c.kind, ChangeKind::MessageAdded { .. }))
        );
        let scans = settle(&w) - before;
        eprintln!("500 files: {scans} scans");
        assert!(scans <= 12, "{scans} scans for 500 files");
    }

    #[test]
    fn polling_fallback_scans_watched_accounts() {
        let fx = Fx::new();
        let w = MaildirWatcher::polling(Duration::from_millis(300));
        w.unwatch_at_once();
        assert!(!w.uses_inotify());
        let g = w.watch(&fx.acct);
        assert_eq!(w.watched_dirs(), 0);
        let mut feed = fx.acct.subscribe();
        fx.drop_in(&fx.maildir(), "1700000004.M5P5.mutt,S=2", "hi");
        let got = collect(&mut feed, Duration::from_secs(2), 1);
        assert!(
            matches!(
                got.as_slice(),
                [Change {
                    kind: ChangeKind::MessageAdded { .. },
                    ..
                }]
            ),
            "{got:?}"
        );
        drop(g);
        std::thread::sleep(Duration::from_millis(100));
        let before = w.scans();
        std::thread::sleep(Duration::from_millis(700));
        assert_eq!(w.scans(), before);
    }

    #[test]
    fn overflow_rescans_every_watched_account() {
        let fx = Fx::new();
        let w = MaildirWatcher::start();
        let _g = w.watch(&fx.acct);
        let before = settle(&w);
        w.shared.inbox.on_overflow();
        let after = settle(&w);
        assert_eq!(after - before, 1);
    }

    #[test]
    fn routing_ignores_noise() {
        let mut routes = HashMap::new();
        routes.insert(
            PathBuf::from("/m/Maildir"),
            Route {
                kind: DirKind::Root,
                accounts: vec![1],
            },
        );
        routes.insert(
            PathBuf::from("/m/Maildir/new"),
            Route {
                kind: DirKind::Messages,
                accounts: vec![1],
            },
        );
        // An entry's event (or, for a watched directory, its own).
        let r = |p: &str| {
            let p = Path::new(p);
            let found = match routes.contains_key(p) {
                true => route(&routes, p, None),
                false => route(&routes, p.parent()?, p.file_name()),
            };
            found.map(|(k, resync)| (k.to_vec(), resync))
        };
        assert_eq!(r("/m/Maildir/new/123.x"), Some((vec![1], false)));
        assert_eq!(r("/m/Maildir/new/.cove-dedup.1"), None);
        assert_eq!(r("/m/Maildir/tmp"), None);
        assert_eq!(r("/m/Maildir/cove-mailbox"), None);
        assert_eq!(r("/m/Maildir/.cove-x"), None);
        assert_eq!(r("/m/Maildir/.Sent"), Some((vec![1], true)));
        assert_eq!(r("/m/Maildir/new"), Some((vec![1], true)));
        assert_eq!(r("/m/index.sqlite-wal"), None);
        assert_eq!(
            route(&routes, Path::new("/m/Maildir"), Some("new".as_ref())),
            Some((&[1][..], true)),
            "a message directory appearing or going"
        );
    }
}
