//! cove's mail store: users, Maildir++ folders, the per-user index, UIDs,
//! flags, modseqs and the change feed — one narrow, protocol-neutral API that
//! LMTP, IMAP, POP3 and the replicator all use.
//!
//! ```text
//! <data_dir>/
//!   cove.db                   users (Directory)
//!   blobs/                    content-addressed message bodies (cove-dedup)
//!   mail/<domain>/<local>/    a user's home (Account)
//!     Maildir/{cur,new,tmp}   INBOX; Maildir/.<name>/ other mailboxes
//!     index.sqlite            the user's index
//!     fts.sqlite              full-text index for SEARCH (a cache)
//! ```
//!
//! Every call is blocking; async code runs it on a blocking pool.

mod account;
mod changes;
mod content;
mod directory;
mod env;
mod error;
mod fulltext;
mod ids;
mod index;
mod indexer;
mod keyword_letters;
mod keywords;
mod mailbox_files;
mod mailbox_name;
pub mod maildir;
mod quota;
pub mod replica;
pub mod sieve;
mod watch;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

pub use account::{
    Account, AccountMemory, ContentCheck, ContentIdHash, DEFAULT_MAILBOXES, DamagedMessage,
    Delivered, DerivedKind, ImportCache, ImportMailbox, ImportMessage, ImportReport,
    MailboxChanges, MailboxImport, MailboxStatus, NewMessage, ScanReport, StoreResult, Transfer,
};
pub use changes::{Change, ChangeKind};
pub use content::{ContentReport, RepairReport};
pub use cove_dedup::{
    BlobStore, BlobWriter, ContentId, DEFAULT_RESERVE_BYTES, DedupStats, Durability,
    Error as BlobError, GcReport, GroupSync, StagedBlob, regular_file,
};
pub use directory::{Address, Directory, PasswordHash, User, UsersMerged};
pub use env::{Clock, Entropy, Env, OsEntropy, SystemClock};
pub(crate) use error::IoContext;
pub use error::{Error, Result};
pub use fulltext::{FULLTEXT_FILE, FullText, IndexedText, Refreshed, TextField, can_narrow};
pub use ids::{Flags, MailboxGuid, MessageGuid, ModSeq, Uid};
pub use index::{MailboxInfo, MessageMeta};
pub use indexer::{Derivation, Deriver, FullTextOnArrival, Indexed};
pub use keyword_letters::{KEYWORDS_FILE, KeywordLetters};
pub use keywords::FlagOp;
pub use mailbox_files::{Cached, MailboxFiles, cached_reads_available, read_cached};
pub use mailbox_name::MailboxName;
pub use quota::{Quota, QuotaResource};
pub use sieve::{ScriptInfo, SieveLimits, SieveScripts};
pub use watch::{MaildirWatcher, WatchGuard};

/// How many accounts stay open by default before the least recently used
/// idle ones are closed (`[server] open_accounts`; never more than half of
/// the descriptor limit holds). Not higher by default: each open account
/// whose index is in use holds three descriptors and ~300 KiB, and SQLite
/// walks a list of every open database file at each open, so with
/// thousands open each reopen costs more (a 10,000-user LMTP rotation with
/// ~6,600 open spent 47% of its CPU in SQLite's `findReusableFd` and
/// `fillInUnixFile`: benches/results/catchup-2026-12-07-10000.md).
pub const DEFAULT_OPEN_ACCOUNTS: usize = 1024;

/// Descriptors an open account holds: its index database, WAL and
/// shared-memory file.
const FDS_PER_ACCOUNT: u64 = 3;

/// How many accounts may stay open with a descriptor limit of `nofile`
/// (`None`: unlimited): half of the descriptors, the rest is the sessions',
/// the blobs' and the listeners'. A 10,000-user rotation with the limit at
/// 20,000 ran out of descriptors (every new blob failed with EMFILE) when
/// the table kept 16,384 accounts open.
fn accounts_within_fds(nofile: Option<u64>) -> usize {
    nofile.map_or(usize::MAX, |n| {
        usize::try_from(n / 2 / FDS_PER_ACCOUNT)
            .unwrap_or(usize::MAX)
            .max(1)
    })
}

/// The process's descriptor limit (soft), `None` if unlimited.
fn nofile_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// An account, opened on first use.
type AccountSlot = Arc<Mutex<Option<Arc<Account>>>>;

/// The open accounts, with when each was last asked for.
#[derive(Default)]
struct AccountTable {
    slots: HashMap<i64, (AccountSlot, u64)>,
    /// Ticks once per [`Store::account`] call (the recency order).
    tick: u64,
}

impl AccountTable {
    /// The slot of `user`, made if needed, marked as used now. With the
    /// table full, the least recently used idle accounts are closed first:
    /// an eighth of the limit at once, so the sort is paid once per
    /// `limit / 8` openings. Accounts somebody holds stay whatever their
    /// age (the limit is soft). The closed accounts are returned, for the
    /// caller to drop once the table is unlocked (closing an index
    /// connection checkpoints it).
    fn slot(&mut self, user: i64, limit: usize) -> (AccountSlot, Vec<AccountSlot>) {
        self.tick += 1;
        let tick = self.tick;
        if let Some((slot, used)) = self.slots.get_mut(&user) {
            *used = tick;
            return (slot.clone(), Vec::new());
        }
        let mut closed = Vec::new();
        if self.slots.len() >= limit {
            let mut idle: Vec<(u64, i64)> = self
                .slots
                .iter()
                .filter(|(_, (slot, _))| !in_use(slot))
                .map(|(id, (_, used))| (*used, *id))
                .collect();
            let excess = self.slots.len() + 1 - limit;
            let target = excess.max(limit / 8).min(idle.len());
            if target > 0 && target < idle.len() {
                idle.select_nth_unstable(target - 1);
            }
            closed.extend(
                idle[..target]
                    .iter()
                    .filter_map(|(_, id)| self.slots.remove(id).map(|(slot, _)| slot)),
            );
        }
        let slot = AccountSlot::default();
        self.slots.insert(user, (slot.clone(), tick));
        (slot, closed)
    }
}

/// Whether somebody besides the table holds an account's slot or the
/// account itself (an opening in progress, a session, a delivery).
fn in_use(slot: &AccountSlot) -> bool {
    Arc::strong_count(slot) > 1
        || slot
            .try_lock()
            .ok()
            .map(|a| a.as_ref().is_some_and(|a| Arc::strong_count(a) > 1))
            .unwrap_or(true)
}

/// Called with a user's address after changes to that user's mail were
/// committed (the replicator queues the user).
pub type ChangeHook = Arc<dyn Fn(&str) + Send + Sync>;

/// Called with a user's address as a chunked apply of a peer's delta
/// commits each chunk (the replication session logs progress; a test can
/// act while the apply is mid-way, with the user's index lock free).
pub type ApplyProgressHook = Arc<dyn Fn(&str, replica::ApplyProgress) + Send + Sync>;

/// Who hears of committed changes besides the change feed.
#[derive(Default)]
pub(crate) struct Listeners {
    /// The replicator's hook.
    pub(crate) hook: OnceLock<ChangeHook>,
    /// The background indexer of arrived mail.
    pub(crate) indexer: OnceLock<Arc<indexer::Indexer>>,
    /// Told of each chunk of a chunked replication apply.
    pub(crate) apply_progress: OnceLock<ApplyProgressHook>,
}

/// Options for [`Store::open`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Written into Maildir file names (the Maildir spec's host part).
    pub hostname: String,
    pub env: Env,
    pub durability: Durability,
}

/// The whole data directory.
pub struct Store {
    data_dir: PathBuf,
    mail_root: PathBuf,
    blobs: BlobStore,
    directory: Directory,
    opts: StoreOptions,
    sync: Arc<GroupSync>,
    accounts: Mutex<AccountTable>,
    /// At most this many accounts stay open when idle (`[server]
    /// open_accounts`).
    open_accounts_limit: std::sync::atomic::AtomicUsize,
    watcher: OnceLock<MaildirWatcher>,
    listeners: Arc<Listeners>,
    peer_limits: OnceLock<replica::PeerLimits>,
    history: Arc<OnceLock<replica::History>>,
    /// The message limit of users without their own (`quota.rs`); 0: none.
    default_message_quota: std::sync::atomic::AtomicU64,
    /// Full Maildir scans run by this store's accounts.
    scans: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

/// One recipient of a delivery.
#[derive(Debug, Clone)]
pub struct DeliveryTarget {
    pub user: User,
    /// The mailbox to deliver to (`user+detail@` when `detail` exists), or
    /// `None` for INBOX.
    pub mailbox: Option<String>,
}

/// A recipient with where and how its copy is stored.
#[derive(Debug, Clone)]
pub struct Placement {
    pub target: DeliveryTarget,
    pub flags: Flags,
    pub keywords: Vec<String>,
    /// Create `target.mailbox` when it does not exist (Sieve `:create`,
    /// RFC 5490 §3.2); otherwise a missing mailbox means INBOX.
    pub create: bool,
}

impl From<DeliveryTarget> for Placement {
    fn from(target: DeliveryTarget) -> Placement {
        Placement {
            target,
            flags: Flags::empty(),
            keywords: Vec::new(),
            create: false,
        }
    }
}

impl Store {
    /// The mailbox a placement lands in: `name` as `user+detail` finds it
    /// (so a detail address and a fileinto agree), created if asked, else
    /// INBOX.
    fn placement_mailbox(
        &self,
        account: &Account,
        user: &User,
        name: &str,
        create: bool,
    ) -> String {
        match account.mailbox_loosely(name) {
            Ok(Some(mb)) => return mb.name,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(user = %user.address, mailbox = ?name, error = %e, "mailbox lookup failed; delivering to INBOX");
                return "INBOX".into();
            }
        }
        if !create {
            tracing::debug!(user = %user.address, mailbox = ?name, "no such mailbox; delivering to INBOX");
            return "INBOX".into();
        }
        let created = MailboxName::from_unicode(name)
            .and_then(|n| account.create_mailbox(n.as_str(), None))
            .or_else(|e| match account.mailbox_loosely(name) {
                // Another delivery created it a moment ago.
                Ok(Some(mb)) => Ok(mb),
                _ => Err(e),
            });
        match created {
            Ok(mb) => {
                tracing::info!(user = %user.address, mailbox = ?mb.name, "mailbox created for a delivery");
                mb.name
            }
            Err(e) => {
                tracing::info!(user = %user.address, mailbox = ?name, error = %e, "cannot create the mailbox; delivering to INBOX");
                "INBOX".into()
            }
        }
    }

    /// Open (creating if needed) a data directory.
    pub fn open(data_dir: &Path, opts: StoreOptions) -> Result<Store> {
        fs::create_dir_all(data_dir).ctx(|| format!("create {}", data_dir.display()))?;
        let mail_root = data_dir.join("mail");
        fs::create_dir_all(&mail_root).ctx(|| format!("create {}", mail_root.display()))?;
        let blobs = BlobStore::open(data_dir.join("blobs"), opts.durability)?;
        let sync = blobs.group_sync().clone();
        blobs.check_same_filesystem(&mail_root)?;
        let directory = Directory::open(&data_dir.join("cove.db"), opts.env.clock.clone())?;
        directory.set_node(replica::node_id(&opts.hostname));
        Ok(Store {
            data_dir: data_dir.to_path_buf(),
            mail_root,
            blobs,
            directory,
            opts,
            sync,
            accounts: Mutex::default(),
            open_accounts_limit: std::sync::atomic::AtomicUsize::new(
                DEFAULT_OPEN_ACCOUNTS.min(accounts_within_fds(nofile_limit())),
            ),
            watcher: OnceLock::new(),
            listeners: Arc::default(),
            peer_limits: OnceLock::new(),
            history: Arc::new(OnceLock::new()),
            default_message_quota: std::sync::atomic::AtomicU64::new(0),
            scans: Arc::default(),
        })
    }

    /// How many accounts stay open when idle before the least recently
    /// used are closed (`[server] open_accounts`): at least 1, and no more
    /// than half of the process's descriptor limit holds (logged when that
    /// lowers it). Returns the limit in force.
    pub fn set_open_accounts(&self, limit: usize) -> usize {
        let within = accounts_within_fds(nofile_limit());
        let effective = limit.clamp(1, within.max(1));
        if effective < limit {
            tracing::warn!(
                open_accounts = limit,
                effective,
                "open_accounts lowered to what half of the descriptor limit (ulimit -n) holds at {FDS_PER_ACCOUNT} per account; raise the limit to keep more open"
            );
        }
        self.open_accounts_limit
            .store(effective, std::sync::atomic::Ordering::Relaxed);
        effective
    }

    /// How many accounts are open (idle or in use) right now.
    pub fn open_accounts(&self) -> usize {
        self.accounts.lock().map_or(0, |a| a.slots.len())
    }

    /// The message limit (RFC 9208 MESSAGE) of users the directory gives
    /// none of their own; 0: none (`[server] default_message_quota`).
    pub fn set_default_message_quota(&self, limit: u64) {
        self.default_message_quota
            .store(limit, std::sync::atomic::Ordering::Relaxed);
    }

    /// A user's limits: the directory's byte quota, and its message limit
    /// or the server's default.
    pub fn limits(&self, user: &User) -> Quota {
        Quota {
            bytes: user.quota,
            messages: user.message_quota.unwrap_or_else(|| {
                self.default_message_quota
                    .load(std::sync::atomic::Ordering::Relaxed)
            }),
        }
    }

    /// Keep `bytes` of space in `<data_dir>/reserve` for deleting mail on
    /// a full disk (cove-dedup's `reserve.rs`); 0 removes it. Call before
    /// any account is opened (the accounts share the blob store).
    pub fn with_space_reserve(mut self, bytes: u64) -> Result<Store> {
        let opened = self.accounts.lock().map_or(true, |a| !a.slots.is_empty());
        if opened {
            return Err(Error::InUse("the store (accounts already open)".into()));
        }
        self.blobs = self
            .blobs
            .clone()
            .with_reserve(self.data_dir.join("reserve"), bytes)?;
        Ok(self)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    pub fn env(&self) -> &Env {
        &self.opts.env
    }

    /// The home directory of a user.
    pub fn home_of(&self, address: &Address) -> PathBuf {
        maildir::home_of(&self.mail_root, &address.local, &address.domain)
    }

    /// A user's Sieve scripts and what they remember (`<home>/sieve/`).
    pub fn sieve(&self, address: &Address) -> sieve::SieveScripts {
        let hook = self
            .listeners
            .hook
            .get()
            .map(|h| (h.clone(), address.to_string()));
        sieve::SieveScripts::new(&self.home_of(address), hook, self.env().clone())
    }

    /// Look a user up by address.
    pub fn user(&self, address: &Address) -> Result<Option<User>> {
        self.directory.get(address)
    }

    /// Add a user and create their mailboxes.
    pub fn add_user(
        &self,
        address: &Address,
        password: Option<PasswordHash>,
        quota: u64,
    ) -> Result<User> {
        let user = self
            .directory
            .add(address, password, quota, self.opts.env.now_secs())?;
        self.account(&user)?;
        Ok(user)
    }

    /// How many full Maildir scans (every folder listed) this store's
    /// accounts have run: a reopened account whose Maildir nothing changed
    /// runs none.
    pub fn maildir_scans(&self) -> u64 {
        self.scans.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Open a user's account (cached while in use).
    pub fn account(&self, user: &User) -> Result<Arc<Account>> {
        let limit = self
            .open_accounts_limit
            .load(std::sync::atomic::Ordering::Relaxed);
        let (slot, closed) = self
            .accounts
            .lock()
            .map_err(|_| Error::Index("account table lock poisoned".into()))?
            .slot(user.id, limit);
        drop(closed);
        // Opening scans the Maildir, which can take a while for a big one:
        // only this user's slot is held meanwhile, so deliveries to other
        // users go on, and two threads never open the same account twice.
        let mut slot = slot
            .lock()
            .map_err(|_| Error::Index("account slot lock poisoned".into()))?;
        if let Some(a) = slot.as_ref() {
            return Ok(a.clone());
        }
        let account = Arc::new(Account::open(
            &user.address.to_string(),
            self.home_of(&user.address),
            self.blobs.clone(),
            self.opts.env.clone(),
            &self.opts.hostname,
            self.sync.clone(),
            account::StoreSettings {
                listeners: self.listeners.clone(),
                history: self.history.clone(),
                scans: self.scans.clone(),
            },
        )?);
        account.set_me();
        *slot = Some(account.clone());
        Ok(account)
    }

    /// A user's anti-entropy digest for `peer` (`None`: no index yet). An
    /// open account answers from its own connection; any other is read
    /// from its index file without opening the account (no Maildir scan),
    /// so a round over many quiet users costs a few page reads each.
    pub fn replica_digest(&self, user: &User, peer: &str) -> Result<Option<replica::Digest>> {
        let open = self
            .accounts
            .lock()
            .ok()
            .and_then(|open| open.slots.get(&user.id).map(|(slot, _)| slot.clone()))
            .and_then(|slot| slot.try_lock().ok().and_then(|a| a.clone()));
        if let Some(account) = open {
            return account.replica_digest(peer).map(Some);
        }
        index::read_digest(&self.home_of(&user.address), peer)
    }

    /// The server's one Maildir watcher, started on first use (one inotify
    /// instance and one thread): hold a [`WatchGuard`] from
    /// [`MaildirWatcher::watch`] while a session looks at an account, and
    /// changes other programs make in its Maildir are scanned and announced
    /// on its change feed within a second.
    pub fn watcher(&self) -> &MaildirWatcher {
        self.watcher.get_or_init(MaildirWatcher::start)
    }

    /// Set the bounds on what replication peers may send (once, at start;
    /// false if they were set already). Unset, the defaults hold.
    pub fn set_peer_limits(&self, limits: replica::PeerLimits) -> bool {
        self.peer_limits.set(limits).is_ok()
    }

    /// The bounds on what replication peers may send.
    pub fn peer_limits(&self) -> replica::PeerLimits {
        self.peer_limits.get().copied().unwrap_or_default()
    }

    /// Set how much replication history each index keeps (once, at start;
    /// false if it was set already). Unset, the defaults hold.
    pub fn set_history(&self, history: replica::History) -> bool {
        self.history.set(history).is_ok()
    }

    /// How much replication history each index keeps.
    pub fn history(&self) -> replica::History {
        self.history.get().copied().unwrap_or_default()
    }

    /// Set the hook told of every user whose mail changes (once; false if
    /// one was set already).
    pub fn set_change_hook(&self, hook: ChangeHook) -> bool {
        self.listeners.hook.set(hook).is_ok()
    }

    pub(crate) fn change_hook(&self) -> &OnceLock<ChangeHook> {
        &self.listeners.hook
    }

    /// Set the hook told of each committed chunk of a chunked replication
    /// apply (once; false if one was set already).
    pub fn set_apply_progress_hook(&self, hook: ApplyProgressHook) -> bool {
        self.listeners.apply_progress.set(hook).is_ok()
    }

    /// The hook told of each chunk of a chunked replication apply.
    pub fn apply_progress_hook(&self) -> Option<&ApplyProgressHook> {
        self.listeners.apply_progress.get()
    }

    /// Derive what the protocols need from each message right after it
    /// arrives, in the background (indexer.rs): `deriver`'s views go to
    /// the derived cache, its text to the full-text index of the users
    /// `fulltext` names. Once; false if a deriver was set already.
    pub fn set_deriver(&self, deriver: Arc<dyn Deriver>, fulltext: FullTextOnArrival) -> bool {
        let mut started = false;
        self.listeners.indexer.get_or_init(|| {
            started = true;
            indexer::Indexer::start(deriver, fulltext)
        });
        started
    }

    /// Wait until the background indexer has done everything queued so
    /// far, at most `limit`; false if it had not (true without an
    /// indexer). For the import command and tests.
    pub fn wait_indexed(&self, limit: std::time::Duration) -> bool {
        self.listeners
            .indexer
            .get()
            .is_none_or(|i| i.wait_idle(limit))
    }

    /// Close the index connections of the open accounts nobody has used
    /// for `idle` ([`Account::close_index_if_idle`]); how many were closed.
    /// The housekeeping calls it every tick (`[server]
    /// index_idle_close_secs`).
    pub fn close_idle_indexes(&self, idle: std::time::Duration) -> usize {
        let open: Vec<Arc<Account>> = match self.accounts.lock() {
            Ok(open) => open
                .slots
                .values()
                .filter_map(|(slot, _)| slot.try_lock().ok().and_then(|a| a.clone()))
                .collect(),
            Err(_) => return 0,
        };
        open.iter().filter(|a| a.close_index_if_idle(idle)).count()
    }

    /// Forget a cached account (after its user was removed).
    pub fn close_account(&self, user: &User) {
        if let Ok(mut open) = self.accounts.lock() {
            open.slots.remove(&user.id);
        }
    }

    /// Deliver one stored blob to several recipients: one hard link each,
    /// one result each, in order.
    ///
    /// All recipients share one group flush: the results come back once
    /// every successful delivery is durable.
    pub fn deliver(&self, blob: &StagedBlob, targets: &[DeliveryTarget]) -> Vec<Result<Delivered>> {
        let placed: Vec<Placement> = targets.iter().cloned().map(Placement::from).collect();
        self.deliver_placed(blob, &placed)
    }

    /// [`deliver`](Store::deliver) with flags, keywords and `:create` per
    /// target (Sieve's fileinto and imap4flags). A mailbox that does not
    /// exist is created when the placement says so; when it does not (or
    /// creating fails) the message goes to INBOX and a line is logged:
    /// mail is never lost to a missing folder. Keywords that are not IMAP
    /// atoms are dropped (logged), never the message.
    pub fn deliver_placed(
        &self,
        blob: &StagedBlob,
        targets: &[Placement],
    ) -> Vec<Result<Delivered>> {
        let mut announcements = Vec::new();
        let mut results: Vec<Result<Delivered>> = targets
            .iter()
            .map(|p| {
                let t = &p.target;
                let account = self.account(&t.user)?;
                let mailbox = match &t.mailbox {
                    Some(m) => self.placement_mailbox(&account, &t.user, m, p.create),
                    None => "INBOX".to_string(),
                };
                let keywords: Vec<String> = p
                    .keywords
                    .iter()
                    .filter(|k| {
                        let ok = keywords::validate(k).is_ok();
                        if !ok {
                            tracing::info!(user = %t.user.address, keyword = ?k, "keyword is not an IMAP atom; dropped");
                        }
                        ok
                    })
                    .cloned()
                    .collect();
                let msg = NewMessage {
                    quota: Some(self.limits(&t.user)),
                    flags: p.flags,
                    keywords,
                    ..NewMessage::default()
                };
                let (delivered, changes) = account.deliver_unsynced(&mailbox, blob, &msg)?;
                announcements.push((account, changes));
                Ok(delivered)
            })
            .collect();
        if announcements.is_empty() {
            return results;
        }
        if let Err(e) = self.sync.sync() {
            // Not known to be durable, so not acknowledged: the sender retries.
            let reason = e.to_string();
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(Error::Io {
                    context: "flushing the delivery to disk".into(),
                    source: std::io::Error::other(reason.clone()),
                });
            }
            return results;
        }
        for (account, changes) in announcements {
            account.announce(changes);
        }
        results
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(indexer) = self.listeners.indexer.get() {
            indexer.close();
        }
    }
}

#[cfg(test)]
mod tests;
