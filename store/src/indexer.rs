//! Work on arrived mail in the background: the views the protocols need
//! and the full-text index, made right after a message arrives rather than
//! at its first FETCH or SEARCH.
//!
//! **The problem.** A FETCH ENVELOPE or SEARCH SUBJECT of a mailbox nobody
//! read yet parses every message (the views are cached by content id,
//! account/derived.rs); the first SEARCH BODY builds the full-text index
//! (fulltext.rs). Users feel that first time: a new mailbox, a migrated
//! account, a peer that just synced. Dovecot parses at delivery and its
//! first FETCH is fast.
//!
//! **The mechanism.** Every committed change is announced through one place
//! ([`Account::announce`]); there the account tells the indexer which
//! mailboxes got messages and which contents were expunged. So every way a
//! message arrives — LMTP, APPEND, COPY and MOVE, replication, import, a
//! scan that finds another program's file — is covered without each path
//! remembering to ask. One worker thread, at a lower CPU priority than the
//! sessions, waits [`SETTLE`] after the first arrival (a burst becomes one
//! batch), then for each account with work:
//! - forgets the full-text entries and cached views of expunged contents
//!   no message holds any more;
//! - refreshes the full-text index of each mailbox that got mail
//!   ([`FullText::refresh_deriving`]: only what is new since the last
//!   refresh, so repeated batches never re-read a mailbox), which parses
//!   each new content once and stores both its text and the caller's
//!   views of it.
//!
//! The parse is the caller's ([`Deriver`]): the store does not interpret
//! message bytes.
//!
//! **Invariants.** Nothing here is needed for correctness: a view or text
//! not made yet is made by its first use, as before; a failure is logged
//! and the next use repairs it. The queue holds at most one entry per
//! account, with at most [`MAX_FREED`] expunged contents (beyond that the
//! whole index is swept instead), so its memory is bounded whatever the
//! rate of mail. The delivery never waits for the indexer.
//!
//! **Rejected.** Parsing inside the delivery, before the 250 (the LMTP
//! rate would pay for every message, and a slow parse would hold a
//! delivery). A tokio task (the parse is CPU work: it belongs on a thread
//! of its own, at a lower priority). A thread per account (thousands).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::changes::{Change, ChangeKind};
use crate::fulltext::{FULLTEXT_FILE, FullText, IndexedText};
use crate::{Account, ContentId, Error, MailboxGuid, Result};

/// Quiet time after the first arrival before the worker starts, so a
/// burst of deliveries is one batch.
const SETTLE: Duration = Duration::from_millis(100);
/// Expunged contents remembered per account; past it, the account's whole
/// index is swept instead.
const MAX_FREED: usize = 100_000;
/// The worker's nice value (sessions and deliveries go first).
const NICENESS: i32 = 10;

/// What a protocol derives from one message's bytes.
#[derive(Debug, Default, Clone)]
pub struct Derivation {
    /// Entries for [`Account::derived`]: (kind, data).
    pub views: Vec<(crate::DerivedKind, Vec<u8>)>,
    /// The text for the full-text index.
    pub text: IndexedText,
}

/// What one round of background work did for one account.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Indexed {
    /// Contents parsed: views cached and text indexed.
    pub indexed: usize,
    /// Contents whose text was removed (no message holds them any more).
    pub forgotten: usize,
}

/// Whose new mail goes into the full-text index on arrival (the views are
/// made for everyone's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullTextOnArrival {
    /// Every user's: no first SEARCH BODY ever builds the index, but each
    /// delivery costs its trigram insert (most of the background work,
    /// and most users never search bodies).
    Everyone,
    /// Users who have a full-text index already (they searched bodies
    /// once): their later searches never wait for new mail.
    Indexed,
}

/// The parse the store runs on arrived mail; the server gives its own.
pub trait Deriver: Send + Sync {
    /// The views of a message, and its text when `text` (else empty).
    fn derive(&self, raw: &[u8], text: bool) -> Derivation;
    /// The version of the text extraction ([`FullText::open`]'s
    /// `extractor`): the one searches use.
    fn text_version(&self) -> u32;
    /// Told after each account's round (for metrics).
    fn done(&self, _report: &Indexed) {}
}

/// Messages remembered per account for a views-only round (beyond it,
/// their views are made at first use).
const MAX_ADDED: usize = 10_000;

/// What waits to be done for one account.
struct Pending {
    account: Weak<Account>,
    /// Mailboxes that got messages.
    added: HashSet<MailboxGuid>,
    /// The messages added (at most [`MAX_ADDED`]), for a round without
    /// full text.
    messages: Vec<(MailboxGuid, Arc<crate::MessageMeta>)>,
    /// Contents of expunged messages.
    freed: HashSet<ContentId>,
    /// More were expunged than `freed` keeps: sweep everything.
    sweep: bool,
}

impl Pending {
    /// Take in what an earlier round left (`older`), within the bounds.
    fn absorb(&mut self, older: Pending) {
        self.added.extend(older.added);
        let mut messages = older.messages;
        messages.append(&mut self.messages);
        messages.truncate(MAX_ADDED);
        self.messages = messages;
        self.sweep |= older.sweep;
        if self.sweep {
            self.freed = HashSet::new();
        } else {
            self.freed.extend(older.freed);
            if self.freed.len() > MAX_FREED {
                self.freed = HashSet::new();
                self.sweep = true;
            }
        }
    }
}

#[derive(Default)]
struct Queue {
    /// By address.
    accounts: HashMap<String, Pending>,
    /// The worker is working on a batch taken from `accounts`.
    busy: bool,
    closed: bool,
}

/// The store's background indexer (one worker thread).
pub(crate) struct Indexer {
    deriver: Arc<dyn Deriver>,
    fulltext: FullTextOnArrival,
    queue: Mutex<Queue>,
    changed: Condvar,
}

impl Indexer {
    /// Start the worker.
    pub(crate) fn start(deriver: Arc<dyn Deriver>, fulltext: FullTextOnArrival) -> Arc<Indexer> {
        let indexer = Arc::new(Indexer {
            deriver,
            fulltext,
            queue: Mutex::default(),
            changed: Condvar::new(),
        });
        let worker = indexer.clone();
        let started = std::thread::Builder::new()
            .name("cove-indexer".into())
            .spawn(move || worker.run());
        if let Err(e) = started {
            // Then every view is made at first use, as without an indexer.
            tracing::warn!(error = %e, "could not start the background indexer");
        }
        indexer
    }

    /// Take note of committed changes of `account` (called by announce).
    pub(crate) fn note(&self, account: &Account, changes: &[Change]) {
        let mut added = Vec::new();
        let mut messages = Vec::new();
        let mut freed = Vec::new();
        for c in changes {
            match &c.kind {
                ChangeKind::MessageAdded { .. } => {
                    added.push(c.mailbox);
                    if let Some(m) = &c.message {
                        messages.push((c.mailbox, m.clone()));
                    }
                }
                ChangeKind::Expunged { .. } => {
                    if let Some(m) = &c.message {
                        freed.push(m.content_id);
                    }
                }
                _ => {}
            }
        }
        if added.is_empty() && freed.is_empty() {
            return;
        }
        let Some(me) = account.me() else {
            return;
        };
        let Ok(mut q) = self.queue.lock() else {
            return;
        };
        if q.closed {
            return;
        }
        let p = q
            .accounts
            .entry(account.email().to_string())
            .or_insert_with(|| Pending {
                account: me.clone(),
                added: HashSet::new(),
                messages: Vec::new(),
                freed: HashSet::new(),
                sweep: false,
            });
        p.account = me;
        p.added.extend(added);
        let room = MAX_ADDED.saturating_sub(p.messages.len());
        p.messages.extend(messages.into_iter().take(room));
        if !p.sweep {
            p.freed.extend(freed);
            if p.freed.len() > MAX_FREED {
                p.freed = HashSet::new();
                p.sweep = true;
            }
        }
        self.changed.notify_all();
    }

    /// Queue `pending` again, merged with what was noted since.
    fn put_back(&self, email: String, pending: Pending) {
        let Ok(mut q) = self.queue.lock() else {
            return;
        };
        if q.closed {
            return;
        }
        match q.accounts.entry(email) {
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(pending);
            }
            std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().absorb(pending),
        }
    }

    /// Stop the worker (after its current batch).
    pub(crate) fn close(&self) {
        if let Ok(mut q) = self.queue.lock() {
            q.closed = true;
            q.accounts.clear();
        }
        self.changed.notify_all();
    }

    /// Wait until nothing is queued or being worked on, at most `limit`;
    /// false if that was not reached.
    pub(crate) fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let Ok(mut q) = self.queue.lock() else {
            return false;
        };
        while !q.closed && (q.busy || !q.accounts.is_empty()) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            q = match self.changed.wait_timeout(q, left) {
                Ok((q, _)) => q,
                Err(_) => return false,
            };
        }
        true
    }

    fn run(self: Arc<Self>) {
        // Linux gives each thread its own nice value: only this one yields.
        if let Err(e) = rustix::process::setpriority_process(None, NICENESS) {
            tracing::debug!(error = %e, "could not lower the indexer's priority");
        }
        loop {
            {
                let Ok(mut q) = self.queue.lock() else {
                    return;
                };
                while q.accounts.is_empty() && !q.closed {
                    q = match self.changed.wait(q) {
                        Ok(q) => q,
                        Err(_) => return,
                    };
                }
                if q.closed {
                    return;
                }
            }
            std::thread::sleep(SETTLE);
            let batch = match self.queue.lock() {
                Ok(mut q) => {
                    q.busy = true;
                    std::mem::take(&mut q.accounts)
                }
                Err(_) => return,
            };
            for (email, pending) in batch {
                let Some(account) = pending.account.upgrade() else {
                    continue;
                };
                if account.in_bulk_apply() {
                    // A first sync is applying chunks: its index lock is
                    // theirs until it ends (replica.rs `BulkWrites`).
                    self.put_back(email, pending);
                    continue;
                }
                if let Err(e) = self.work(&account, &pending) {
                    tracing::warn!(user = %email, error = %e, "background indexing failed; views and text are made at first use instead");
                }
            }
            if let Ok(mut q) = self.queue.lock() {
                q.busy = false;
            }
            self.changed.notify_all();
        }
    }

    /// The views of `messages` whose content has none yet (no full text):
    /// one read and parse each, one transaction for all.
    fn views_only(
        &self,
        account: &Account,
        messages: &[(MailboxGuid, Arc<crate::MessageMeta>)],
    ) -> Result<usize> {
        let mut mailboxes = HashMap::new();
        let mut views = Vec::new();
        let mut done = HashSet::new();
        for (guid, m) in messages {
            if !done.insert(m.content_id) {
                continue;
            }
            let mailbox = match mailboxes.entry(*guid) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(account.mailbox_by_guid(guid).ok())
                }
            };
            let Some(mailbox) = mailbox else {
                continue;
            };
            // Renamed by a flag change or expunged since: made at first use.
            let Ok(raw) = account.read_message(mailbox, m) else {
                continue;
            };
            let d = self.deriver.derive(&raw, false);
            views.extend(d.views.into_iter().map(|(k, v)| (m.content_id, k, v)));
        }
        account.store_derived(&views)?;
        Ok(done.len())
    }

    fn work(&self, account: &Account, p: &Pending) -> Result<()> {
        let started = Instant::now();
        let with_text = match self.fulltext {
            FullTextOnArrival::Everyone => true,
            FullTextOnArrival::Indexed => account.home().join(FULLTEXT_FILE).exists(),
        };
        if p.sweep {
            account.sweep_derived()?;
        } else {
            account.forget_derived(&p.freed)?;
        }
        let mut report = Indexed::default();
        if with_text {
            let mut ft = FullText::open(account, self.deriver.text_version())?;
            report.forgotten = if p.sweep {
                ft.sweep(account)?
            } else {
                ft.forget(account, &p.freed)?
            };
            let derive = |raw: &[u8]| self.deriver.derive(raw, true);
            for guid in &p.added {
                let mailbox = match account.mailbox_by_guid(guid) {
                    Ok(m) => m,
                    // Deleted (or renamed away) meanwhile.
                    Err(Error::NotFound(_)) => continue,
                    Err(e) => return Err(e),
                };
                report.indexed += ft.refresh_deriving(account, &mailbox, &derive)?.indexed;
            }
        } else {
            report.indexed = self.views_only(account, &p.messages)?;
        }
        self.deriver.done(&report);
        tracing::debug!(
            user = %account.email(),
            text = with_text,
            indexed = report.indexed,
            forgotten = report.forgotten,
            ms = started.elapsed().as_millis() as u64,
            "background indexing"
        );
        Ok(())
    }
}
