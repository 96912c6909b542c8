//! One user's mail: mailboxes, messages, flags, the change feed.
//!
//! Every method is blocking (files, fsync, SQLite): async callers run them on
//! a blocking pool. Methods of one account are serialised by the account's
//! index connection; different accounts proceed in parallel.

mod content;
pub(crate) mod derived;
mod dir_stamps;
mod flags;
mod history;
mod import;
mod mailboxes;
mod replica;
mod scan;
mod transfer;

pub use content::{ContentCheck, DamagedMessage};
pub use derived::{ContentIdHash, DerivedKind};
pub use flags::StoreResult;
pub use history::{History, HistoryRows, PRUNE_EVERY, Pruned};
pub use import::{ImportCache, ImportMailbox, ImportMessage, ImportReport, MailboxImport};
pub use transfer::Transfer;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use cove_dedup::{BlobStore, StagedBlob};
use rusqlite::Connection;
use tokio::sync::broadcast;

use crate::changes::{Change, ChangeKind};
use crate::env::Env;
use crate::ids::{Flags, MailboxGuid, MessageGuid, ModSeq, Uid};
use crate::index::{self, MailboxInfo, MessageMeta, NewMessageRow, Tx};
use crate::keyword_letters::{self, KeywordLetters, letters_in};
use crate::maildir::{self, FileName, FolderIdentity};
use crate::watch::OwnEvent;
use crate::{Error, IoContext, Result};
use cove_dedup::{Durability, GroupSync};

/// The mailboxes every new account starts with, and their RFC 6154 use.
pub const DEFAULT_MAILBOXES: [(&str, Option<&str>); 6] = [
    ("INBOX", None),
    ("Sent", Some("\\Sent")),
    ("Drafts", Some("\\Drafts")),
    ("Trash", Some("\\Trash")),
    ("Junk", Some("\\Junk")),
    ("Archive", Some("\\Archive")),
];

pub(crate) const INDEX_FILE: &str = "index.sqlite";

/// The identity of a default mailbox of a new account: derived from the
/// address and the name, so that two nodes that each make the account (a
/// delivery reached both before they synced) make the same mailboxes,
/// which then merge instead of standing side by side (DESIGN.md,
/// "Replication"). The UIDVALIDITY comes from the same hash, below 2^31.
pub(crate) fn default_identity(email: &str, name: &str) -> FolderIdentity {
    let mut h = blake3::Hasher::new();
    h.update(b"cove default mailbox\0");
    h.update(email.to_ascii_lowercase().as_bytes());
    h.update(b"\0");
    h.update(name.as_bytes());
    let bytes = *h.finalize().as_bytes();
    let mut guid = [0u8; 16];
    guid.copy_from_slice(&bytes[..16]);
    let v = u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]) & 0x7fff_ffff;
    FolderIdentity {
        guid: MailboxGuid(guid),
        uidvalidity: v.max(1),
    }
}
/// Where deleted mailboxes' folders wait to be removed, in the user's home
/// (outside `Maildir/`, so no Maildir reader sees them).
const DELETED_DIR: &str = ".cove-deleted";
/// Where new mailboxes' folders are built before they are renamed into
/// `Maildir/` whole, in the user's home (a scan never sees a half-made one).
pub(crate) const CREATING_DIR: &str = ".cove-creating";

/// A shared lock on a scratch folder of `home` ([`DELETED_DIR`],
/// [`CREATING_DIR`]) for as long as it is held: that process has a folder
/// in the making there. The clean-up at open
/// ([`Account::remove_deleted_folders`]) empties a scratch folder only under
/// the exclusive lock, so another process's account (the CLI's `cove user
/// add` while the server opens the same new user) never loses a folder it
/// is building or parking.
pub(crate) fn scratch_busy(home: &Path, scratch: &str) -> Result<fs::File> {
    let file = scratch_busy_file(home, scratch)?;
    file.lock_shared()
        .ctx(|| format!("lock {}", home.join(format!("{scratch}.lock")).display()))?;
    Ok(file)
}

/// The lock file of [`scratch_busy`], unlocked.
fn scratch_busy_file(home: &Path, scratch: &str) -> Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = home.join(format!("{scratch}.lock"));
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .ctx(|| format!("open {}", path.display()))
}

/// Build a new account's whole `Maildir/` (INBOX and the default folders,
/// each with `cur/ new/ tmp/` and its identity file) under the home's
/// [`CREATING_DIR`] and rename it into place in one step: a crash leaves no
/// `Maildir/` (the next open builds it again; the scratch copy is removed)
/// or all of it. In batched mode nothing is flushed here: the group flush
/// that makes the account's index rows durable covers it (one flush per
/// new account). Another process that placed one first wins; its is kept.
fn make_maildir(home: &Path, email: &str, sync: &GroupSync) -> Result<()> {
    static STAGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let flush = sync.mode() == Durability::Fsync;
    fs::create_dir_all(home).ctx(|| format!("create {}", home.display()))?;
    let _busy = scratch_busy(home, CREATING_DIR)?;
    let scratch = home.join(CREATING_DIR);
    fs::create_dir_all(&scratch).ctx(|| format!("create {}", scratch.display()))?;
    let staging = scratch.join(format!(
        "Maildir.{}.{}",
        std::process::id(),
        STAGED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let maildir = home.join("Maildir");
    let built = (|| -> Result<()> {
        for (name, _) in DEFAULT_MAILBOXES {
            let dir = staging.join(maildir::mailbox_dir_name(name));
            maildir::create_folder_with(&dir, flush)?;
            default_identity(email, name).write_with(&dir, flush)?;
        }
        match maildir::rename_noreplace(&staging, &maildir) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::DirectoryNotEmpty
                ) =>
            {
                tracing::info!(user = %email, "another process made the new account's Maildir first");
            }
            Err(e) => {
                return Err(e)
                    .ctx(|| format!("rename {} to {}", staging.display(), maildir.display()));
            }
        }
        if flush {
            cove_dedup::sync_dir(home)?;
        }
        Ok(())
    })();
    if staging.symlink_metadata().is_ok() {
        let _ = fs::remove_dir_all(&staging);
    }
    built
}

/// Whether a mailbox made by [`Account::create_mailbox_as`] is subscribed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subscribe {
    Yes,
    No,
}

/// What to store with a new message.
#[derive(Debug, Clone, Default)]
pub struct NewMessage {
    pub flags: Flags,
    pub keywords: Vec<String>,
    /// Seconds since the epoch; `None` means now.
    pub internal_date: Option<i64>,
    /// The account's limits, if it has any.
    pub quota: Option<crate::Quota>,
}

/// Where a message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub mailbox: MailboxGuid,
    pub uidvalidity: u32,
    pub uid: Uid,
    pub guid: MessageGuid,
    pub modseq: ModSeq,
}

/// Counts for STATUS and `cove mailbox list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MailboxStatus {
    pub messages: u32,
    pub unseen: u32,
    pub size: u64,
    /// Messages no session has been shown as \Recent yet.
    pub recent: u32,
}

/// [`Account::mailbox_changes_since`]: what changed in a mailbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailboxChanges {
    /// Rows with a higher modseq (new messages, changed flags), by UID.
    pub changed: Vec<MessageMeta>,
    /// UIDs expunged since, ascending.
    pub expunged: Vec<Uid>,
}

/// What a reconciling scan found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanReport {
    pub mailboxes_added: u32,
    pub mailboxes_removed: u32,
    /// Folders found under another name (renamed by another program, or a
    /// rename cut short by a crash).
    pub mailboxes_renamed: u32,
    pub messages_added: u32,
    pub messages_expunged: u32,
    pub flags_changed: u32,
}

impl ScanReport {
    pub fn is_empty(&self) -> bool {
        *self == ScanReport::default()
    }

    /// Both reports added up.
    pub fn plus(&self, other: &ScanReport) -> ScanReport {
        ScanReport {
            mailboxes_added: self.mailboxes_added + other.mailboxes_added,
            mailboxes_removed: self.mailboxes_removed + other.mailboxes_removed,
            mailboxes_renamed: self.mailboxes_renamed + other.mailboxes_renamed,
            messages_added: self.messages_added + other.messages_added,
            messages_expunged: self.messages_expunged + other.messages_expunged,
            flags_changed: self.flags_changed + other.flags_changed,
        }
    }
}

/// The account's index connection, or none: an account nobody has used
/// for a while gives it back ([`Account::close_index_if_idle`]) and the
/// next use opens it again.
struct IndexSlot {
    open: Option<IndexConn>,
    /// The inode of the index file the connection had open when it was
    /// closed: a file lost meanwhile is rebuilt, as under an open one.
    closed_ino: u64,
    /// When the connection was last handed out.
    used: std::time::Instant,
}

/// The index connection as [`Account::conn`] hands it out: always open.
struct IndexGuard<'a>(MutexGuard<'a, IndexSlot>);

impl std::ops::Deref for IndexGuard<'_> {
    type Target = IndexConn;
    fn deref(&self) -> &IndexConn {
        match &self.0.open {
            Some(c) => c,
            // `conn` opens the slot before it makes a guard, and nothing
            // closes it while the guard holds the lock.
            None => unreachable!("an IndexGuard is made only over an open index"),
        }
    }
}

impl std::ops::DerefMut for IndexGuard<'_> {
    fn deref_mut(&mut self) -> &mut IndexConn {
        match &mut self.0.open {
            Some(c) => c,
            None => unreachable!("an IndexGuard is made only over an open index"),
        }
    }
}

struct IndexConn {
    conn: Connection,
    /// Inode of index.sqlite when it was opened: if the file is replaced
    /// (`cove index rebuild` from another process) the connection is reopened.
    ino: u64,
    /// [`index::corruption_generation`] when this index was last found
    /// intact (or opened).
    checked: u64,
}

/// What an open account holds in memory, in bytes ([`Account::memory`]):
/// the figures an operator (and `store/examples/account_memory.rs`) needs
/// to tell what thousands of open accounts cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountMemory {
    /// SQLite's page cache of the index connection (0 while it is closed).
    pub page_cache: u64,
    /// The index's schema as SQLite parsed it for the connection.
    pub schema: u64,
    /// Prepared statements, rusqlite's cache of them included.
    pub statements: u64,
    /// The change feed's ring of recent changes (0 while nobody listens).
    pub feed_ring: u64,
}

/// One user's mail store.
pub struct Account {
    email: String,
    home: PathBuf,
    maildir: PathBuf,
    index: Mutex<IndexSlot>,
    blobs: BlobStore,
    env: Env,
    hostname: String,
    feed: crate::changes::Feed,
    sync: Arc<GroupSync>,
    opening_scan: ScanReport,
    listeners: Arc<crate::Listeners>,
    /// How much replication history to keep (the store's setting).
    history: Arc<std::sync::OnceLock<History>>,
    /// This account, for the background indexer's queue (set by the
    /// store once the account is in its `Arc`).
    me: std::sync::OnceLock<std::sync::Weak<Account>>,
    /// The Maildir's stamps as the last finished scan found them, if they
    /// can be trusted ([`Account::scan_if_changed`]).
    scanned: Mutex<Option<dir_stamps::DirStamps>>,
    /// The changes cove is about to make in its message directories, for
    /// the Maildir watcher (they cost no scan).
    own: Arc<crate::watch::OwnChanges>,
    /// Chunked applies of a peer's delta running on this account (a
    /// first sync): the background indexer leaves it alone meanwhile.
    bulk_applies: std::sync::atomic::AtomicUsize,
    /// The store's count of full Maildir scans.
    scans: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("email", &self.email)
            .finish()
    }
}

fn open_index(home: &Path, mode: Durability, node: u16) -> Result<IndexConn> {
    let path = home.join(INDEX_FILE);
    if !path.exists() {
        // A WAL left without its database would be replayed onto the new,
        // empty one: remove the orphans of a deleted index first.
        for suffix in ["-wal", "-shm"] {
            let _ = fs::remove_file(home.join(format!("{INDEX_FILE}{suffix}")));
        }
    }
    let conn = index::open(&path, mode == Durability::Fsync)?;
    conn.execute(
        "INSERT INTO meta(key, value) VALUES('node', ?1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value WHERE value != excluded.value",
        [node as i64],
    )?;
    let ino = fs::metadata(&path)
        .ctx(|| format!("stat {}", path.display()))?
        .ino();
    Ok(IndexConn {
        conn,
        ino,
        checked: index::corruption_generation(),
    })
}

/// What is at `index.sqlite` compared with the file the connection has
/// open. Checked at every use of the index (one `stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IndexFile {
    Same,
    /// Another file (`cove index rebuild` in another process).
    Replaced,
    /// Deleted.
    Missing,
    /// Our own file, cut to a length no SQLite database has (0, or not a
    /// whole number of 512-byte pages).
    Truncated,
    /// Our own file, failing SQLite's check (after SQLite reported damage).
    Damaged,
}

/// Close the connection of an index file that was replaced, deleted or
/// cut, before anything is opened in its place. SQLite deletes a WAL and
/// its shared-memory file *by name* when the last connection closes, and
/// the names may be the new index's by then: its WAL is kept
/// (`SQLITE_FCNTL_PERSIST_WAL`; the orphans of a deleted index are
/// removed by [`open_index`]). Until then an in-memory placeholder holds
/// the place, with an inode no file has, so the next use tries again if
/// the reopening fails.
fn retire(index: &mut IndexConn) -> Result<()> {
    let old = std::mem::replace(
        index,
        IndexConn {
            conn: Connection::open_in_memory()?,
            ino: 0,
            checked: 0,
        },
    );
    if matches!(old.conn.path(), None | Some("")) {
        // A stand-in (in memory): no WAL to keep.
        return Ok(());
    }
    let mut persist: std::ffi::c_int = 1;
    if let Err(e) = old.conn.file_control(
        Some(rusqlite::MAIN_DB),
        rusqlite::FileControl::PersistWal(&mut persist),
    ) {
        // Left open rather than risk the new index's WAL (rare: a few
        // descriptors and a small cache, once per lost index).
        tracing::warn!(error = %e, "could not keep the WAL of a replaced index on close; leaving its connection open");
        std::mem::forget(old);
        return Ok(());
    }
    drop(old);
    Ok(())
}

impl IndexFile {
    fn check(home: &Path, open_ino: u64) -> IndexFile {
        match fs::metadata(home.join(INDEX_FILE)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => IndexFile::Missing,
            // Unknown (EACCES...): the connection's own reads will say.
            Err(_) => IndexFile::Same,
            Ok(m) if m.ino() != open_ino => IndexFile::Replaced,
            Ok(m) if m.len() == 0 || m.len() % 512 != 0 => IndexFile::Truncated,
            Ok(_) => IndexFile::Same,
        }
    }
}

/// What every account of a store shares with it, set once at start.
#[derive(Clone, Default)]
pub(crate) struct StoreSettings {
    pub listeners: Arc<crate::Listeners>,
    pub history: Arc<std::sync::OnceLock<History>>,
    /// Full Maildir scans run ([`crate::Store::maildir_scans`]).
    pub scans: Arc<std::sync::atomic::AtomicU64>,
}

impl Account {
    /// Open a user's account at `home`, creating its Maildir and default
    /// mailboxes if new, and reconcile the index with the Maildir.
    pub(crate) fn open(
        email: &str,
        home: PathBuf,
        blobs: BlobStore,
        env: Env,
        hostname: &str,
        sync: Arc<GroupSync>,
        settings: StoreSettings,
    ) -> Result<Account> {
        let maildir = home.join("Maildir");
        // An existing account is opened without a write: no mkdir, no
        // flush (a delivery rotation over thousands of users reopens
        // accounts often).
        let fresh_home = !maildir.exists();
        if fresh_home {
            make_maildir(&home, email, &sync)?;
        } else if !maildir::folder_complete(&maildir) {
            // Another program removed one of INBOX's directories.
            maildir::create_folder(&maildir)?;
        }
        let node = crate::replica::node_id(hostname);
        let index = open_index(&home, sync.mode(), node)?;
        let account = Account {
            email: email.to_string(),
            home,
            maildir,
            index: Mutex::new(IndexSlot {
                open: Some(index),
                closed_ino: 0,
                used: std::time::Instant::now(),
            }),
            blobs,
            env,
            hostname: hostname.to_string(),
            feed: Default::default(),
            sync,
            opening_scan: ScanReport::default(),
            listeners: settings.listeners,
            history: settings.history,
            me: std::sync::OnceLock::new(),
            scanned: Mutex::new(None),
            own: Arc::default(),
            bulk_applies: std::sync::atomic::AtomicUsize::new(0),
            scans: settings.scans,
        };
        // A new account's mailboxes, in one transaction: made durable with
        // one group flush below, together with its Maildir.
        let made = if fresh_home {
            account.insert_default_mailboxes()?
        } else {
            Vec::new()
        };
        let opening_scan = match account.scan_at_open() {
            // Another process (the CLI adding the user while the server
            // opens the account for a peer's sync) inserted a new folder's
            // row between this scan's look and its insert; the scan's
            // transaction rolled back, and a second scan finds the row.
            Err(Error::AlreadyExists(what)) => {
                tracing::info!(user = %email, what = %what, "another process made a mailbox while this one opened the account; scanning again");
                account.scan()?
            }
            other => other?,
        };
        if fresh_home {
            account.publish(made)?;
        }
        account.remove_deleted_folders();
        let mut account = account;
        account.opening_scan = opening_scan;
        Ok(account)
    }

    /// What the scan made when the account was opened found and did.
    pub fn opening_scan(&self) -> &ScanReport {
        &self.opening_scan
    }

    pub fn email(&self) -> &str {
        &self.email
    }

    pub(crate) fn set_me(self: &Arc<Self>) {
        let _ = self.me.set(Arc::downgrade(self));
    }

    /// A chunked apply of a peer's delta runs on this account.
    pub(crate) fn in_bulk_apply(&self) -> bool {
        self.bulk_applies.load(std::sync::atomic::Ordering::Acquire) > 0
    }

    /// A chunked apply starts (`true`) or ends (`false`).
    pub(super) fn bulk_apply(&self, running: bool) {
        use std::sync::atomic::Ordering;
        if running {
            self.bulk_applies.fetch_add(1, Ordering::AcqRel);
        } else {
            self.bulk_applies.fetch_sub(1, Ordering::AcqRel);
        }
    }

    pub(crate) fn me(&self) -> Option<std::sync::Weak<Account>> {
        self.me.get().cloned()
    }

    pub(crate) fn own_changes(&self) -> &Arc<crate::watch::OwnChanges> {
        &self.own
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The index connection, reopened if index.sqlite was replaced, and
    /// rebuilt from the Maildir first if it was deleted, truncated, or
    /// fails SQLite's check after SQLite reported a damaged database
    /// ([`IndexFile`]): nobody is served from an empty index (a delivery
    /// would find no INBOX) or, past one failed command, a damaged one.
    /// The value of an integer pragma of the account's index connection.
    #[cfg(test)]
    pub(crate) fn index_pragma(&self, name: &str) -> Result<i64> {
        Ok(self
            .conn()?
            .conn
            .pragma_query_value(None, name, |r| r.get(0))?)
    }

    fn conn(&self) -> Result<IndexGuard<'_>> {
        let mut slot = self.slot()?;
        let reopen = || {
            open_index(
                &self.home,
                self.sync.mode(),
                crate::replica::node_id(&self.hostname),
            )
        };
        if slot.open.is_none() {
            let ino = slot.closed_ino;
            slot.open = Some(match IndexFile::check(&self.home, ino) {
                IndexFile::Same | IndexFile::Replaced => reopen()?,
                // Lost while closed: a stand-in with the old inode, which
                // the check below finds lost and rebuilds.
                _ => IndexConn {
                    conn: Connection::open_in_memory()?,
                    ino,
                    checked: index::corruption_generation(),
                },
            });
        }
        slot.used = std::time::Instant::now();
        let mut guard = IndexGuard(slot);
        let mut state = IndexFile::check(&self.home, guard.ino);
        let reports = index::corruption_generation();
        if state == IndexFile::Same && guard.checked != reports {
            // SQLite reported a damaged database somewhere since this index
            // was last checked.
            if !index::intact(&guard.conn) {
                state = IndexFile::Damaged;
            }
            guard.checked = reports;
        }
        match state {
            IndexFile::Same => {}
            IndexFile::Replaced => {
                tracing::info!(user = %self.email, "index.sqlite was replaced; reopening it");
                retire(&mut guard)?;
                *guard = reopen()?;
            }
            lost @ (IndexFile::Missing | IndexFile::Truncated | IndexFile::Damaged) => {
                tracing::warn!(user = %self.email, index = ?lost, "index.sqlite was lost under the running server; rebuilding it from the Maildir before serving this user (GUIDs kept, UIDVALIDITY renewed)");
                retire(&mut guard)?;
                match lost {
                    IndexFile::Truncated => self.move_index_aside("truncated")?,
                    IndexFile::Damaged => self.move_index_aside("damaged")?,
                    _ => {}
                }
                *guard = reopen()?;
                let outcome = self.scan_locked(&mut guard)?;
                self.finish_scan(outcome)?;
            }
        }
        Ok(guard)
    }

    fn slot(&self) -> Result<MutexGuard<'_, IndexSlot>> {
        self.index
            .lock()
            .map_err(|_| Error::Index("index lock poisoned by an earlier panic".into()))
    }

    /// Close the index connection if nobody has used it for `idle`: its
    /// SQLite memory (lookaside, parsed schema, prepared statements, page
    /// cache, the WAL index map: together most of what an open account
    /// costs, `benches/results/idle-memory-2026-12-07-accounts.md`) and its
    /// three descriptors go back; the next use opens it again. Never waits:
    /// an index in use is left open. True if it was closed.
    pub fn close_index_if_idle(&self, idle: std::time::Duration) -> bool {
        let Ok(mut slot) = self.index.try_lock() else {
            return false;
        };
        if slot.used.elapsed() < idle {
            return false;
        }
        let Some(open) = slot.open.take() else {
            return false;
        };
        if IndexFile::check(&self.home, open.ino) != IndexFile::Same {
            // Replaced or lost: `conn` retires it with care for the WAL
            // of whatever file now has its name.
            slot.open = Some(open);
            return false;
        }
        let ino = open.ino;
        match open.conn.close() {
            Ok(()) => {
                slot.closed_ino = ino;
                true
            }
            Err((conn, e)) => {
                tracing::warn!(user = %self.email, error = %e, "could not close an idle index; keeping it open");
                slot.open = Some(IndexConn {
                    conn,
                    ino,
                    checked: open.checked,
                });
                false
            }
        }
    }

    /// Keep a damaged index (and its WAL) beside the new one, as
    /// `cove index rebuild` does: never delete what may still be read.
    fn move_index_aside(&self, why: &str) -> Result<()> {
        let secs = self.env.now_secs();
        for suffix in ["", "-wal", "-shm"] {
            let from = self.home.join(format!("{INDEX_FILE}{suffix}"));
            let to = self.home.join(format!("{INDEX_FILE}.{why}-{secs}{suffix}"));
            match fs::rename(&from, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).ctx(|| format!("move {} aside", from.display())),
            }
        }
        Ok(())
    }

    /// Make committed changes durable (the group flush in batched mode),
    /// then announce them. Called after the index lock is released, so that
    /// other deliveries to this user join the same flush.
    fn publish(&self, changes: Vec<Change>) -> Result<()> {
        self.sync.sync()?;
        self.announce(changes);
        Ok(())
    }

    pub(crate) fn announce(&self, changes: Vec<Change>) {
        self.prune_history_if_due(&changes);
        if !changes.is_empty()
            && let Some(hook) = self.listeners.hook.get()
        {
            hook(&self.email);
        }
        if let Some(indexer) = self.listeners.indexer.get() {
            indexer.note(self, &changes);
        }
        // No receiver is not an error: nobody is listening right now.
        self.feed.send_all(changes);
    }

    /// Live changes from now on (IDLE, NOOP, the replicator). A receiver
    /// that falls behind gets `Lagged` and must re-read with
    /// [`changes_since`](Account::changes_since).
    /// Tell the sessions watching `mailboxes` that their UIDs were given
    /// again (replication renumbered them; the changes it logged name the
    /// mailbox as it is now): a live event only, not logged, not seen by
    /// the indexer or replication. Its kind makes a view read the index,
    /// where it finds its mailbox gone or under a new UIDVALIDITY; its
    /// modseq is the last one the renumbering logged, so the view's order
    /// rule (`feed_mark`) is kept.
    pub(crate) fn announce_renumbered(
        &self,
        mailboxes: impl Iterator<Item = MailboxGuid>,
        modseq: ModSeq,
    ) {
        for mailbox in mailboxes {
            self.feed.send(Change {
                modseq,
                mailbox,
                kind: ChangeKind::MailboxRenamed {
                    from: String::new(),
                    to: String::new(),
                },
                message: None,
            });
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.feed.subscribe()
    }

    /// What this account holds in memory now ([`AccountMemory`]).
    pub fn memory(&self) -> Result<AccountMemory> {
        let slot = self.slot()?;
        let status = |op| {
            let Some(open) = slot.open.as_ref() else {
                return 0;
            };
            let (mut current, mut high) = (0, 0);
            // SAFETY: the handle is the live connection the lock holds;
            // sqlite3_db_status only reads counters of it into the two
            // integers given.
            let rc = unsafe {
                rusqlite::ffi::sqlite3_db_status(open.conn.handle(), op, &mut current, &mut high, 0)
            };
            if rc == rusqlite::ffi::SQLITE_OK {
                u64::try_from(current).unwrap_or(0)
            } else {
                0
            }
        };
        Ok(AccountMemory {
            page_cache: status(rusqlite::ffi::SQLITE_DBSTATUS_CACHE_USED),
            schema: status(rusqlite::ffi::SQLITE_DBSTATUS_SCHEMA_USED),
            statements: status(rusqlite::ffi::SQLITE_DBSTATUS_STMT_USED),
            feed_ring: self.feed.ring_bytes(),
        })
    }

    /// The change log after `modseq`.
    pub fn changes_since(&self, modseq: ModSeq) -> Result<Vec<Change>> {
        index::changes_since(&self.conn()?.conn, modseq)
    }

    pub fn current_modseq(&self) -> Result<ModSeq> {
        index::current_modseq(&self.conn()?.conn)
    }

    pub fn mailboxes(&self) -> Result<Vec<MailboxInfo>> {
        index::mailboxes(&self.conn()?.conn)
    }

    /// The mailbox called `name`, in any spelling of it
    /// ([`MailboxName`](crate::MailboxName)); a name that is not valid is
    /// looked up as it is (a folder another program made).
    pub fn mailbox(&self, name: &str) -> Result<MailboxInfo> {
        let canonical = crate::MailboxName::parse(name.as_bytes());
        let key = canonical.as_ref().map_or(name, |n| n.as_str());
        index::mailbox_by_name(&self.conn()?.conn, key)?
            .ok_or_else(|| Error::NotFound(format!("mailbox {name}")))
    }

    /// The mailbox called `name`, or else the only one whose name differs
    /// from it just in case (for `user+detail` addresses, where senders and
    /// MTAs do not keep case reliably).
    /// The detail is text, not modified UTF-7: `user+Café@` names the
    /// mailbox a client sees as `Café`. A detail that is no valid name
    /// names no mailbox.
    pub fn mailbox_loosely(&self, detail: &str) -> Result<Option<MailboxInfo>> {
        let Ok(name) = crate::MailboxName::from_unicode(detail) else {
            return Ok(None);
        };
        let name = name.as_str();
        let g = self.conn()?;
        if let Some(mb) = index::mailbox_by_name(&g.conn, name)? {
            return Ok(Some(mb));
        }
        let mut alike = index::mailboxes(&g.conn)?
            .into_iter()
            .filter(|m| m.name.eq_ignore_ascii_case(name));
        match (alike.next(), alike.next()) {
            (Some(only), None) => Ok(Some(only)),
            _ => Ok(None),
        }
    }

    pub fn mailbox_by_guid(&self, guid: &MailboxGuid) -> Result<MailboxInfo> {
        index::mailbox_by_guid(&self.conn()?.conn, guid)?.ok_or_else(|| Error::mailbox_gone(guid))
    }

    pub fn status(&self, mailbox: &MailboxGuid) -> Result<MailboxStatus> {
        let g = self.conn()?;
        let mb = index::mailbox_by_guid(&g.conn, mailbox)?
            .ok_or_else(|| Error::mailbox_gone(mailbox))?;
        let (messages, unseen, size, recent) = index::message_count(&g.conn, &mb)?;
        Ok(MailboxStatus {
            messages,
            unseen,
            size,
            recent,
        })
    }

    /// Claim the mailbox's \Recent messages for one session (RFC 3501
    /// §2.3.2: exactly one session sees a message as recent): returns the
    /// first UID that is recent for the caller; later claims start above
    /// every UID handed out so far. Not flushed: losing a claim in a crash
    /// only shows a message as recent once more.
    pub fn claim_recent(&self, mailbox: &MailboxGuid) -> Result<Uid> {
        let mut g = self.conn()?;
        let mb = index::mailbox_by_guid(&g.conn, mailbox)?
            .ok_or_else(|| Error::mailbox_gone(mailbox))?;
        index::claim_recent(&mut g.conn, mb.id)
    }

    /// How many messages the account holds, in all its mailboxes (RFC
    /// 9208 MESSAGE usage).
    pub fn message_total(&self) -> Result<u64> {
        index::message_total(&self.conn()?.conn)
    }

    /// Bytes of mail the account holds (what its quota counts).
    pub fn used_bytes(&self) -> Result<u64> {
        index::total_size(&self.conn()?.conn)
    }

    pub fn messages(&self, mailbox: &MailboxGuid) -> Result<Vec<MessageMeta>> {
        let g = self.conn()?;
        let mb = index::mailbox_by_guid(&g.conn, mailbox)?
            .ok_or_else(|| Error::mailbox_gone(mailbox))?;
        index::messages(&g.conn, mb.id)
    }

    /// [`messages`](Self::messages), each row made into what the caller
    /// keeps as it is read: a mailbox of 1,000,000 messages does not pass
    /// through a vector of full rows (190 MB, with file names) first.
    pub fn messages_as<T>(
        &self,
        mailbox: &MailboxGuid,
        mut keep: impl FnMut(MessageMeta) -> T,
    ) -> Result<Vec<T>> {
        let g = self.conn()?;
        let mb = Self::mailbox_in(&g.conn, mailbox)?;
        let mut out = Vec::new();
        index::each_message(&g.conn, mb.id, |m| out.push(keep(m)))?;
        out.shrink_to_fit();
        Ok(out)
    }

    /// One message by UID, `None` if no message has it (expunged, or never
    /// given out).
    pub fn message(&self, mailbox: &MailboxGuid, uid: Uid) -> Result<Option<MessageMeta>> {
        let g = self.conn()?;
        let mb = Self::mailbox_in(&g.conn, mailbox)?;
        index::message_by_uid(&g.conn, mb.id, uid)
    }

    /// RFC 8514 SAVEDATE: when each of `uids` was put in the mailbox, in
    /// seconds since the epoch (`None`: no such message). The same on every
    /// replica; see `index::save_dates`.
    pub fn save_dates(&self, mailbox: &MailboxGuid, uids: &[Uid]) -> Result<Vec<Option<i64>>> {
        let g = self.conn()?;
        let mb = Self::mailbox_in(&g.conn, mailbox)?;
        index::save_dates(&g.conn, mb.id, uids)
    }

    /// RFC 7162 CONDSTORE/QRESYNC: the messages of a mailbox whose modseq is
    /// above `modseq`, by UID.
    pub fn messages_since(
        &self,
        mailbox: &MailboxGuid,
        modseq: ModSeq,
    ) -> Result<Vec<MessageMeta>> {
        let g = self.conn()?;
        let mb = index::mailbox_by_guid(&g.conn, mailbox)?
            .ok_or_else(|| Error::mailbox_gone(mailbox))?;
        index::messages_since(&g.conn, mb.id, modseq)
    }

    /// What changed in a mailbox after `since`, read at one point in time:
    /// its rows with a higher modseq and the UIDs expunged after `since`.
    /// `None` when the index may no longer know every such expunge (their
    /// tombstones are pruned up to a history floor above `since`), or the
    /// mailbox's UIDVALIDITY is no longer `uidvalidity`.
    pub fn mailbox_changes_since(
        &self,
        mailbox: &MailboxGuid,
        uidvalidity: u32,
        since: ModSeq,
    ) -> Result<Option<MailboxChanges>> {
        let g = self.conn()?;
        // One read transaction: a prune between the floor and the
        // tombstones cannot slip in.
        let tx = g.conn.unchecked_transaction()?;
        let mb = Self::mailbox_in(&tx, mailbox)?;
        if mb.uidvalidity != uidvalidity || history::history_floor(&tx)? > since {
            return Ok(None);
        }
        let changed = index::messages_since(&tx, mb.id, since)?;
        let expunged = index::expunged_since(&tx, mb.id, since)?;
        tx.finish()?;
        Ok(Some(MailboxChanges { changed, expunged }))
    }

    /// RFC 5819 LIST-STATUS: every mailbox with its counts, by name, in one
    /// query.
    pub fn mailbox_status_all(&self) -> Result<Vec<(MailboxInfo, MailboxStatus)>> {
        let g = self.conn()?;
        index::mailboxes_with_counts(&g.conn)
    }

    /// Expunge tombstones of a mailbox: (uid, guid, modseq).
    pub fn tombstones(&self, mailbox: &MailboxGuid) -> Result<Vec<(Uid, MessageGuid, ModSeq)>> {
        let g = self.conn()?;
        let mb = index::mailbox_by_guid(&g.conn, mailbox)?
            .ok_or_else(|| Error::mailbox_gone(mailbox))?;
        index::tombstones(&g.conn, mb.id)
    }

    /// The rows of `uids` (in that order; UIDs that name no message, and
    /// repeats, left out). Few UIDs are looked up one by one, many by one
    /// pass over the mailbox.
    fn rows_for(conn: &Connection, mailbox_id: i64, uids: &[Uid]) -> Result<Vec<MessageMeta>> {
        const ONE_BY_ONE: usize = 64;
        let mut out = Vec::with_capacity(uids.len());
        if uids.len() <= ONE_BY_ONE {
            let mut seen = std::collections::HashSet::new();
            for uid in uids {
                if seen.insert(*uid)
                    && let Some(m) = index::message_by_uid(conn, mailbox_id, *uid)?
                {
                    out.push(m);
                }
            }
        } else {
            let mut all: std::collections::HashMap<Uid, MessageMeta> =
                index::messages(conn, mailbox_id)?
                    .into_iter()
                    .map(|m| (m.uid, m))
                    .collect();
            for uid in uids {
                if let Some(m) = all.remove(uid) {
                    out.push(m);
                }
            }
        }
        Ok(out)
    }

    /// A mailbox by GUID, or `NotFound`.
    fn mailbox_in(conn: &Connection, guid: &MailboxGuid) -> Result<MailboxInfo> {
        index::mailbox_by_guid(conn, guid)?.ok_or_else(|| Error::mailbox_gone(guid))
    }

    fn folder(&self, mb: &MailboxInfo) -> PathBuf {
        self.maildir.join(&mb.dir)
    }

    /// Where a message's file is (it may be renamed by a flag change later).
    pub fn message_path(&self, mailbox: &MailboxInfo, message: &MessageMeta) -> PathBuf {
        self.folder(mailbox).join(&message.file)
    }

    /// The content of a message's file, as the index names it. Never a
    /// FIFO's, a directory's or a symlink's target's
    /// ([`cove_dedup::regular_file`]). `NotFound` if it is gone (expunged,
    /// or renamed by a flag change: look the message up again).
    pub fn read_message(
        &self,
        mailbox: &MailboxInfo,
        message: &MessageMeta,
    ) -> std::io::Result<Vec<u8>> {
        cove_dedup::regular_file::read(&self.message_path(mailbox, message))
    }

    /// The folder of a mailbox, opened for reading its message files by
    /// their index names ([`MessageMeta::file`]).
    pub fn mailbox_files(&self, mailbox: &MailboxInfo) -> Result<crate::MailboxFiles> {
        let path = self.folder(mailbox);
        crate::MailboxFiles::open_dir(&path).ctx(|| format!("open {}", path.display()))
    }

    /// Create a mailbox (RFC 3501 §6.3.3 semantics are the caller's). It is
    /// not subscribed: RFC 3501 §6.3.9 leaves subscribing to the client
    /// (SUBSCRIBE), and a mailbox CREATE made (or its parents) must not come
    /// back `\Subscribed` from LSUB after the client unsubscribed it. A name
    /// already in the subscription list stays subscribed.
    pub fn create_mailbox(&self, name: &str, special_use: Option<&str>) -> Result<MailboxInfo> {
        self.create_mailbox_as(name, special_use, None, Subscribe::No)
    }

    /// [`create_mailbox`](Account::create_mailbox) under a given identity
    /// (a default mailbox's), or a new one.
    fn create_mailbox_as(
        &self,
        name: &str,
        special_use: Option<&str>,
        identity: Option<FolderIdentity>,
        subscribe: Subscribe,
    ) -> Result<MailboxInfo> {
        let name = maildir::validate_mailbox_name(name)?;
        let name = name.as_str();
        let mut g = self.conn()?;
        if index::mailbox_by_name(&g.conn, name)?.is_some() {
            return Err(Error::AlreadyExists(format!("mailbox {name}")));
        }
        let dir = maildir::mailbox_dir_name(name);
        let path = self.maildir.join(&dir);
        let mut tx = Tx::begin(&mut g.conn, &self.env)?;
        let identity = match identity {
            Some(id) => {
                tx.raise_uidvalidity(id.uidvalidity)?;
                id
            }
            None => FolderIdentity {
                guid: self.env.mailbox_guid(),
                uidvalidity: tx.next_uidvalidity(self.env.now_secs(), None)?,
            },
        };
        self.place_new_folder(name, &path, &identity)?;
        let committed = (|| {
            let mb = tx.insert_mailbox(
                identity.guid,
                name,
                &dir,
                identity.uidvalidity,
                special_use,
                subscribe == Subscribe::Yes,
            )?;
            Ok((mb, tx.commit()?))
        })();
        let (mb, changes) = match committed {
            Ok(done) => done,
            Err(e) => {
                self.remove_new_folder(&path);
                return Err(e);
            }
        };
        drop(g);
        self.publish(changes)?;
        Ok(mb)
    }

    /// Make a new mailbox's folder at `path` whole or not at all: it is
    /// built (`cur/ new/ tmp/`, identity file, all fsynced) under the home's
    /// [`CREATING_DIR`], outside `Maildir/`, then renamed into place, never
    /// over anything. A failure at any step leaves nothing in `Maildir/`
    /// for a scan to take for a mailbox; a crash leaves at most a scratch
    /// folder, removed when the account is next opened.
    fn place_new_folder(&self, name: &str, path: &Path, identity: &FolderIdentity) -> Result<()> {
        let _busy = scratch_busy(&self.home, CREATING_DIR)?;
        let scratch = self.home.join(CREATING_DIR);
        fs::create_dir_all(&scratch).ctx(|| format!("create {}", scratch.display()))?;
        let staging = scratch.join(identity.guid.to_hex());
        if staging.symlink_metadata().is_ok() {
            fs::remove_dir_all(&staging).ctx(|| format!("remove {}", staging.display()))?;
        }
        let placed = maildir::create_folder(&staging)
            .and_then(|()| identity.write(&staging))
            .and_then(|()| match maildir::rename_noreplace(&staging, path) {
                Ok(()) => Ok(()),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::DirectoryNotEmpty
                    ) =>
                {
                    tracing::warn!(user = %self.email, folder = %path.display(), "a new mailbox's folder is in the way of something already there");
                    Err(Error::AlreadyExists(format!("mailbox {name}")))
                }
                Err(e) => Err(e).ctx(|| format!("rename {} to {}", staging.display(), path.display())),
            })
            .and_then(|()| Ok(cove_dedup::sync_dir(&self.maildir)?));
        if placed.is_err() && staging.symlink_metadata().is_ok() {
            let _ = fs::remove_dir_all(&staging);
        }
        placed
    }

    /// The rows of a new account's mailboxes (INBOX and the default
    /// folders, subscribed, with the identities every node gives them), in
    /// one transaction, not flushed: the caller publishes the changes. A
    /// name or identity already in the index (an earlier attempt cut short,
    /// another process) is left as it is.
    fn insert_default_mailboxes(&self) -> Result<Vec<Change>> {
        let mut g = self.conn()?;
        let mut tx = Tx::begin(&mut g.conn, &self.env)?;
        for (name, special_use) in DEFAULT_MAILBOXES {
            let id = default_identity(&self.email, name);
            if index::mailbox_by_name(&tx.tx, name)?.is_some()
                || index::mailbox_by_guid(&tx.tx, &id.guid)?.is_some()
            {
                continue;
            }
            tx.raise_uidvalidity(id.uidvalidity)?;
            let dir = maildir::mailbox_dir_name(name);
            tx.insert_mailbox(id.guid, name, &dir, id.uidvalidity, special_use, true)?;
        }
        tx.commit()
    }

    /// Take back a folder [`place_new_folder`](Account::place_new_folder)
    /// made, when the index did not take the mailbox.
    fn remove_new_folder(&self, path: &Path) {
        if let Err(e) = fs::remove_dir_all(path) {
            tracing::warn!(user = %self.email, folder = %path.display(), error = %e, "could not remove a new mailbox's folder after a failed create");
        }
    }

    /// RFC 3501 §6.3.11 APPEND (and RFC 4315 APPENDUID from the result):
    /// [`deliver`](Account::deliver) under the name IMAP uses. The flags put
    /// the file in `cur/` with its `:2,` letters, the keywords go to the
    /// index, `internal_date` is the one the client gave (or now).
    pub fn append(&self, mailbox: &str, blob: &StagedBlob, msg: &NewMessage) -> Result<Delivered> {
        self.deliver(mailbox, blob, msg)
    }

    /// Store a message: hard-link the blob into the mailbox, then commit the
    /// index row. When this returns Ok the message survives a crash
    /// (DESIGN.md invariant 1). Keywords that are not IMAP atoms are refused
    /// (`InvalidData`); case-blind duplicates are dropped.
    pub fn deliver(&self, mailbox: &str, blob: &StagedBlob, msg: &NewMessage) -> Result<Delivered> {
        let (delivered, changes) = self.deliver_unsynced(mailbox, blob, msg)?;
        self.sync.sync()?;
        self.announce(changes);
        Ok(delivered)
    }

    /// [`deliver`](Account::deliver) without the final group flush: the
    /// caller flushes once for many deliveries, then announces the changes.
    pub(crate) fn deliver_unsynced(
        &self,
        mailbox: &str,
        blob: &StagedBlob,
        msg: &NewMessage,
    ) -> Result<(Delivered, Vec<Change>)> {
        let keywords = crate::keywords::normalized(&msg.keywords)?;
        let mut g = self.conn()?;
        let mb = index::mailbox_by_name(&g.conn, mailbox)?
            .ok_or_else(|| Error::NotFound(format!("mailbox {mailbox}")))?;
        if let Some(quota) = &msg.quota {
            quota.admit(&g.conn, 1, blob.len())?;
        }
        let now = self.env.now_secs();
        let guid = self.env.message_guid();
        let base = FileName::new_delivery(now.max(0) as u64, guid, &self.hostname, blob.len());
        let parsed = FileName::parse(&base)
            .ok_or_else(|| Error::InvalidData(format!("bad file name {base}")))?;
        let folder = self.folder(&mb);
        let rel = keyword_letters::new_file_rel(&folder, &mut None, &parsed, msg.flags, &keywords)?;
        let path = folder.join(&rel);
        let announced = self.own.announce([(path.clone(), OwnEvent::Appear)]);
        blob.link_to(&path)?;
        announced.made();
        let committed = (|| {
            self.sync.dir_written(path.parent().unwrap_or(&folder))?;
            let mut tx = Tx::begin(&mut g.conn, &self.env)?;
            let row = NewMessageRow {
                guid,
                content_id: blob.id(),
                flags: msg.flags,
                keywords: &keywords,
                internal_date: msg.internal_date.unwrap_or(now),
                size: blob.len(),
                base: &parsed.base,
                file: &rel,
                placed: None,
                clock: "",
            };
            let (uid, modseq) = tx.insert_message(&mb, &row)?;
            let changes = tx.commit()?;
            Ok::<_, Error>((uid, modseq, changes))
        })();
        match committed {
            Ok((uid, modseq, changes)) => Ok((
                Delivered {
                    mailbox: mb.guid,
                    uidvalidity: mb.uidvalidity,
                    uid,
                    guid,
                    modseq,
                },
                changes,
            )),
            Err(e) => {
                // Not acknowledged, so not kept: a later scan must not
                // resurrect it (the sender will retry).
                let _ = fs::remove_file(&path);
                if let Error::NoSpace(why) = &e {
                    // Low-space mode: what is left goes to deletions.
                    self.blobs.release_reserve(why);
                }
                Err(e)
            }
        }
    }

    /// Set a message's system flags and keywords (replacing them).
    pub fn set_flags(
        &self,
        mailbox: &MailboxGuid,
        uid: Uid,
        flags: Flags,
        keywords: &[String],
    ) -> Result<ModSeq> {
        let keywords = &crate::keywords::normalized(keywords)?[..];
        let mut g = self.conn()?;
        let mb = index::mailbox_by_guid(&g.conn, mailbox)?
            .ok_or_else(|| Error::mailbox_gone(mailbox))?;
        let msg = index::message_by_uid(&g.conn, mb.id, uid)?.ok_or(Error::Expunged)?;
        let folder = self.folder(&mb);
        let mut file = msg.file.clone();
        let mut letters = KeywordLetters::read(&folder);
        let keyword_letters = letters.letters_for(keywords);
        if flags != msg.flags || keyword_letters != letters_in(&file) {
            letters.save()?;
            let wanted = (flags, keyword_letters.as_str());
            let mut relocator = maildir::Relocator::new(&folder);
            match self.rename_for_flags(&folder, &mut relocator, &file, wanted)? {
                Some((_, _, new_rel)) => file = new_rel,
                None => return Err(Error::Expunged),
            }
            for sub in ["cur", "new"] {
                self.sync.dir_written(&folder.join(sub))?;
            }
        }
        let mut tx = Tx::begin(&mut g.conn, &self.env)?;
        let modseq = tx.update_flags(&mb, uid, flags, keywords, &file)?;
        let changes = tx.commit()?;
        drop(g);
        self.publish(changes)?;
        Ok(modseq)
    }

    /// Expunge messages by UID; returns the UIDs actually expunged. Their
    /// blobs are collected automatically once nothing links them.
    pub fn expunge(&self, mailbox: &MailboxGuid, uids: &[Uid]) -> Result<Vec<Uid>> {
        // Nothing is removed before the commit, so a commit that failed for
        // lack of space can simply run again.
        self.freeing("EXPUNGE", || self.expunge_once(mailbox, uids))
    }

    fn expunge_once(&self, mailbox: &MailboxGuid, uids: &[Uid]) -> Result<Vec<Uid>> {
        let mut g = self.conn()?;
        let mb = index::mailbox_by_guid(&g.conn, mailbox)?
            .ok_or_else(|| Error::mailbox_gone(mailbox))?;
        let folder = self.folder(&mb);
        let mut gone = Vec::new();
        for uid in uids {
            if let Some(m) = index::message_by_uid(&g.conn, mb.id, *uid)? {
                gone.push(m);
            }
        }
        let kib = index::cache_kib_for_rows(gone.len());
        let changes = index::with_cache(&mut g.conn, kib, |conn| {
            let mut tx = Tx::begin(conn, &self.env)?;
            for m in &gone {
                tx.expunge(&mb, m.uid, m.guid)?;
            }
            tx.commit()
        })?;
        drop(g);
        self.sync.sync()?;
        // The index says they are gone; now the files. A crash in between
        // leaves files whose GUIDs have tombstones: the scan removes them.
        for m in &gone {
            let path = folder.join(&m.file);
            let announced = self.own.announce([(path.clone(), OwnEvent::Vanish)]);
            match fs::remove_file(&path) {
                Ok(()) => announced.made(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(user = %self.email, file = %m.file, error = %e, "expunged message file could not be removed")
                }
            }
        }
        for sub in ["cur", "new"] {
            let _ = self.sync.dir_written(&folder.join(sub));
        }
        self.blobs.unlinked(gone.iter().map(|m| m.content_id));
        self.announce(changes);
        Ok(gone.iter().map(|m| m.uid).collect())
    }

    /// Run `op`, which deletes mail and undoes its own file changes on
    /// error. If it fails because the disk is full, release the space
    /// reserve (cove-dedup's `reserve.rs`) and run it once more, so that
    /// users can delete mail on a full disk.
    fn freeing<T>(&self, what: &str, op: impl Fn() -> Result<T>) -> Result<T> {
        match op() {
            Err(Error::NoSpace(why)) if self.blobs.release_reserve(&why) => {
                tracing::warn!(user = %self.email, command = what, "the disk was full; running it again with the space reserve");
                op()
            }
            Err(Error::NoSpace(why)) => {
                tracing::error!(user = %self.email, command = what, error = %why, "the disk is full and the space reserve is used up");
                Err(Error::NoSpace(why))
            }
            r => r,
        }
    }
}
