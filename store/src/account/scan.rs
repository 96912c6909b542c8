//! The reconciling scan: make the index agree with the Maildir.
//!
//! # The problem
//! The Maildir is the truth for which messages and folders exist and for
//! their system flags; the index for everything else. Other programs (mutt,
//! an MDA, a backup restore) change the Maildir behind cove's back, and every
//! operation of cove's own that touches both the Maildir and the index can be
//! cut short by a crash between the two. The scan must turn each such state
//! into one the index can describe, without losing mail and without giving a
//! UID a second meaning.
//!
//! # What it does
//! 1. Folders. A folder whose identity file (`cove-mailbox`) names a mailbox
//!    whose folder is gone was *renamed*: the row follows it and keeps its
//!    GUID, UIDVALIDITY and UIDs (this also finishes a rename cut short
//!    between `rename(2)` and its commit). Other new folders become mailboxes
//!    (keeping the GUID and raising the UIDVALIDITY their identity file
//!    names, unless another mailbox already holds that GUID); mailboxes whose
//!    folder is gone are deleted, each message expunged with a tombstone.
//! 2. Messages. Rows whose file is gone are expunged; rows whose file's flags
//!    changed take the file's flags. Then files without a row are indexed,
//!    oldest first. A file whose GUID belongs to a row that vanished in this
//!    same scan was *moved* (by another program, or by a MOVE cut short
//!    between its renames and its commit): it gets a new UID where it is now
//!    and keeps its GUID, keywords and internal date — the GUID ends up in
//!    exactly one mailbox. A file whose GUID has a tombstone in its mailbox
//!    and no vanished row was expunged just before a crash: it is removed.
//!
//! # Not scanning
//! [`Account::scan_if_changed`] skips the scan when no directory of the
//! Maildir changed since the last one finished (`dir_stamps`): a POP3 login
//! to a quiet maildrop of 10,000 messages no longer lists them all. A scan
//! that finished keeps its stamps in the index too, so opening the account
//! again ([`Account::scan_at_open`], after the open-account table closed it
//! or after a restart) lists nothing when nothing changed.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;

use super::dir_stamps::{self, DirStamps};
use super::{Account, DEFAULT_MAILBOXES, IndexConn, ScanReport};
use crate::changes::Change;
use crate::ids::MessageGuid;
use crate::index::{self, MailboxInfo, MessageMeta, NewMessageRow, Tx};
use crate::keyword_letters::{KeywordLetters, apply_renamed_letters};
use crate::maildir::{self, FileName, FolderIdentity};
use crate::{Error, Result};

/// What a scan did to the index, before it is flushed and announced.
pub(super) struct ScanOutcome {
    report: ScanReport,
    changes: Vec<Change>,
    /// Index writes that log no change (a file moved from new/ to cur/).
    quiet_writes: bool,
    stamps: Option<DirStamps>,
}

impl Account {
    /// Reconcile the index with the Maildir: folders and files added,
    /// renamed, moved or removed by other programs, and a crash in the middle
    /// of any operation. The Maildir is the truth for which messages exist
    /// and their system flags; the index for everything else.
    pub fn scan(&self) -> Result<ScanReport> {
        let mut g = self.conn()?;
        let outcome = self.scan_locked(&mut g)?;
        drop(g);
        self.finish_scan(outcome)
    }

    /// Make what a scan did durable and known (after the index lock is
    /// released, where the caller can).
    pub(super) fn finish_scan(&self, outcome: ScanOutcome) -> Result<ScanReport> {
        let ScanOutcome {
            report,
            changes,
            quiet_writes,
            stamps,
        } = outcome;
        // A scan that found nothing wrote nothing: no group flush (the
        // Maildir watcher scans after cove's own writes too).
        if !report.is_empty() || !changes.is_empty() || quiet_writes {
            self.sync.sync()?;
        }
        if !report.is_empty() {
            tracing::info!(user = %self.email, ?report, "reconciled index with Maildir");
        }
        self.announce(changes);
        self.set_scanned(stamps.filter(DirStamps::trustworthy));
        Ok(report)
    }

    /// The scan's work on the index, with its connection held.
    pub(super) fn scan_locked(&self, g: &mut IndexConn) -> Result<ScanOutcome> {
        let mut report = ScanReport::default();
        let mut changes = Vec::new();
        // Taken before anything is listed: a change made while the scan
        // runs shows as a newer stamp next time.
        self.set_scanned(None);
        self.scans
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // With the inode of the index this scan reconciles (a rebuild may
        // be swapping the file right now).
        let stamps = DirStamps::take(&self.maildir, Some(g.ino)).ok();

        // 1. Folders.
        let on_disk = maildir::list_folders(&self.maildir)?;
        let known = index::mailboxes(&g.conn)?;
        let to_add: Vec<&String> = on_disk
            .iter()
            .filter(|dir| !known.iter().any(|m| &m.dir == *dir))
            .collect();
        let mut removed: Vec<MailboxInfo> = known
            .iter()
            .filter(|m| !on_disk.contains(&m.dir) && m.name != "INBOX")
            .cloned()
            .collect();
        if !to_add.is_empty() || !removed.is_empty() {
            let mut tx = Tx::begin(&mut g.conn, &self.env)?;
            let mut new_folders = Vec::new();
            for dir in to_add {
                let Some(name) = maildir::mailbox_name_of_dir(dir) else {
                    continue;
                };
                if !dir.is_empty() && name.eq_ignore_ascii_case("INBOX") {
                    tracing::warn!(user = %self.email, dir = %dir, "ignoring a folder that would be a second INBOX");
                    continue;
                }
                let path = self.maildir.join(dir);
                let previous = FolderIdentity::read(&path);
                let renamed = previous.and_then(|p| removed.iter().position(|m| m.guid == p.guid));
                if let Some(i) = renamed {
                    let mb = removed.remove(i);
                    tracing::info!(user = %self.email, from = %mb.name, to = %name, "mailbox folder was renamed");
                    tx.rename_mailbox(&mb, &name, dir)?;
                    if tx.set_subscription(&mb.name, false)? {
                        tx.set_subscription(&name, true)?;
                    }
                    report.mailboxes_renamed += 1;
                    continue;
                }
                new_folders.push((dir, name, path, previous));
            }
            for mb in &removed {
                tracing::info!(user = %self.email, mailbox = %mb.name, "mailbox folder vanished from the Maildir; removing it from the index");
                tx.delete_mailbox(mb)?;
                report.mailboxes_removed += 1;
            }
            for (dir, name, path, previous) in new_folders {
                // A GUID another mailbox holds (a folder copied by another
                // program) is not taken over: the copy gets its own.
                let previous = match previous {
                    Some(p) if index::mailbox_by_guid(&tx.tx, &p.guid)?.is_none() => Some(p),
                    _ => None,
                };
                // INBOX of a new account: the identity every node gives it.
                let default = (previous.is_none() && name == "INBOX")
                    .then(|| super::default_identity(&self.email, &name))
                    .filter(|d| !matches!(index::mailbox_by_guid(&tx.tx, &d.guid), Ok(Some(_))));
                let identity = match default {
                    Some(d) => {
                        tx.raise_uidvalidity(d.uidvalidity)?;
                        d
                    }
                    None => FolderIdentity {
                        guid: previous
                            .map(|p| p.guid)
                            .unwrap_or_else(|| self.env.mailbox_guid()),
                        uidvalidity: tx.next_uidvalidity(
                            self.env.now_secs(),
                            previous.map(|p| p.uidvalidity),
                        )?,
                    },
                };
                maildir::create_folder(&path)?;
                identity.write(&path)?;
                let special_use = DEFAULT_MAILBOXES
                    .iter()
                    .find(|(n, _)| *n == name)
                    .and_then(|(_, s)| *s);
                tx.insert_mailbox(
                    identity.guid,
                    &name,
                    dir,
                    identity.uidvalidity,
                    special_use,
                    true,
                )?;
                report.mailboxes_added += 1;
            }
            changes.extend(tx.commit()?);
        }

        // 2. Messages: first everything that left or changed, in every
        // mailbox (a file moved between folders frees its GUID), then
        // everything new.
        let mailboxes = index::mailboxes(&g.conn)?;
        let mut additions: Vec<(MailboxInfo, maildir::FoundFile)> = Vec::new();
        let mut vanished: HashMap<MessageGuid, MessageMeta> = HashMap::new();
        // Index writes that log no change (a file moved from new/ to cur/).
        let mut quiet_writes = false;
        let mut tx = Tx::begin(&mut g.conn, &self.env)?;
        // Each folder's keyword letters, read when a file needs them.
        let mut letter_maps: HashMap<i64, KeywordLetters> = HashMap::new();
        for mb in &mailboxes {
            let folder = self.folder(mb);
            let mut found = maildir::list_folder(&folder)?;
            found.sort_by(|a, b| a.name.base.cmp(&b.name.base));
            let rows = index::messages(&tx.tx, mb.id)?;
            let mut matched = vec![false; found.len()];
            for row in rows {
                let base = row.file.rsplit('/').next().and_then(FileName::base_of);
                let hit =
                    base.and_then(|b| found.binary_search_by(|f| f.name.base.as_str().cmp(b)).ok());
                match hit {
                    None => {
                        tx.expunge(mb, row.uid, row.guid)?;
                        report.messages_expunged += 1;
                        vanished.insert(row.guid, row);
                    }
                    Some(i) => {
                        matched[i] = true;
                        let f = &found[i];
                        // Keyword letters another program added or took
                        // away since the name the index knows.
                        let keywords = if f.rel == row.file {
                            None
                        } else {
                            let map = letter_maps
                                .entry(mb.id)
                                .or_insert_with(|| KeywordLetters::read(&folder));
                            apply_renamed_letters(map, &row.keywords, &row.file, &f.rel)
                        };
                        if f.name.flags != row.flags || keywords.is_some() {
                            let keywords = keywords.as_deref().unwrap_or(&row.keywords);
                            tx.update_flags(mb, row.uid, f.name.flags, keywords, &f.rel)?;
                            report.flags_changed += 1;
                        } else if f.rel != row.file {
                            tx.update_file(mb, row.uid, &f.rel)?;
                            quiet_writes = true;
                        }
                    }
                }
            }
            for (i, f) in found.into_iter().enumerate() {
                if !matched[i] {
                    additions.push((mb.clone(), f));
                }
            }
        }
        // Oldest first, so UIDs follow arrival order.
        let mut prepared = Vec::new();
        for (mb, f) in additions {
            let path = self.folder(&mb).join(&f.rel);
            // Not following a symlink (the listing skipped those; this
            // is the name as it is now).
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let date = f
                .name
                .delivery_secs()
                .filter(|_| f.name.guid.is_some())
                .unwrap_or(meta.mtime());
            prepared.push((date, mb, f, path));
        }
        prepared.sort_by(|a, b| (a.0, &a.2.name.base).cmp(&(b.0, &b.2.name.base)));
        // Filling a new index (a rebuild, or a Maildir cove has not seen):
        // where these messages were put and when is unknown, so their
        // placement never wins over a peer's (replication).
        let populating: bool = tx.tx.query_row(
            "SELECT NOT EXISTS(SELECT 1 FROM message) AND NOT EXISTS(SELECT 1 FROM tombstone)",
            [],
            |r| r.get(0),
        )?;
        for (date, mb, f, path) in prepared {
            let guid = f.name.effective_guid();
            let moved = vanished.remove(&guid);
            if moved.is_none() && index::tombstone_for_guid(&tx.tx, mb.id, &guid)? {
                // Expunged, but the crash came before the file was removed.
                let _ = fs::remove_file(&path);
                continue;
            }
            let (content_id, size) = match self.adopt_file(&path) {
                Ok(adopted) => adopted,
                Err(e @ Error::NoSpace(_)) => return Err(e),
                // Not a regular file after all (replaced since the
                // listing), unreadable, or changing under us: the account
                // still serves everything else; the next scan tries again.
                Err(e) => {
                    maildir::skipping(&path, &e);
                    continue;
                }
            };
            // A file the index has no row for: its keywords are its
            // letters, as its folder maps them (a rebuild reads them back).
            let lettered;
            let (keywords, internal_date) = match &moved {
                Some(m) => (m.keywords.as_slice(), m.internal_date),
                None => {
                    let map = letter_maps
                        .entry(mb.id)
                        .or_insert_with(|| KeywordLetters::read(&self.folder(&mb)));
                    lettered = map.keywords_of(&f.name.other_letters);
                    (lettered.as_slice(), date)
                }
            };
            // A file an import was linking when it stopped is imported
            // mail, at its old UID where the import's rule allows it
            // (account/import.rs, "Durability"); a file of a Maildir cove
            // has not seen yet has no known placement either.
            let pending = if moved.is_none() {
                super::import::take_pending(&tx.tx, mb.id, &guid)?
            } else {
                None
            };
            let row = NewMessageRow {
                guid,
                content_id,
                flags: f.name.flags,
                keywords,
                internal_date,
                size,
                base: &f.name.base,
                file: &f.rel,
                placed: (pending.is_some() || (populating && moved.is_none())).then_some(0),
                clock: "",
            };
            let inserted = match pending {
                Some(Some(uid)) => tx.insert_message_at(&mb, uid, &row),
                _ => tx.insert_message(&mb, &row),
            };
            match inserted {
                Ok(_) => report.messages_added += 1,
                Err(Error::AlreadyExists(_)) => {
                    tracing::warn!(user = %self.email, file = %path.display(), %guid, "a second file carries the GUID of a message already indexed; leaving it unindexed");
                }
                Err(e) => return Err(e),
            }
        }
        changes.extend(tx.commit()?);
        if let Some(st) = stamps.as_ref().filter(|s| s.trustworthy()) {
            keep_stamps(&g.conn, st);
        }
        Ok(ScanOutcome {
            report,
            changes,
            quiet_writes,
            stamps,
        })
    }

    /// The scan of an account being opened: skipped when the Maildir and
    /// the index are as the last finished scan left them (its stamps,
    /// kept in the index by whichever process ran it, trusted and equal to
    /// the directories' now), as [`scan_if_changed`] skips it for an open
    /// account. A delivery rotation over more users than stay open, or a
    /// login to a quiet mailbox whose account was closed, then costs a few
    /// stats instead of a listing of every folder.
    ///
    /// [`scan_if_changed`]: Account::scan_if_changed
    pub(super) fn scan_at_open(&self) -> Result<ScanReport> {
        let kept = {
            let g = self.conn()?;
            kept_stamps(&g.conn)
        };
        if let Some(kept) = kept.filter(DirStamps::trustworthy) {
            self.set_scanned(Some(kept));
            return self.scan_if_changed();
        }
        self.scan()
    }

    /// [`scan`](Account::scan), unless no directory of the Maildir changed
    /// since the last scan finished (and its stamps were old enough to
    /// trust): then that scan's result stands, and nothing is listed.
    pub fn scan_if_changed(&self) -> Result<ScanReport> {
        let last = self.scanned.lock().ok().and_then(|s| s.clone());
        let index = self.home.join(super::INDEX_FILE);
        if let Some(last) = last
            && dir_stamps::inode(&index)
                .and_then(|ino| DirStamps::take(&self.maildir, ino))
                .is_ok_and(|now| now.same_as(&last))
        {
            return Ok(ScanReport::default());
        }
        self.scan()
    }

    fn set_scanned(&self, stamps: Option<DirStamps>) {
        if let Ok(mut s) = self.scanned.lock() {
            *s = stamps;
        }
    }
}

/// The meta key of the stamps a finished scan keeps in the index.
const STAMPS_KEY: &str = "dir_stamps";

/// Keep a finished scan's stamps in the index (written only when they
/// differ from the kept ones). Not flushed on its own: losing them costs
/// one scan. A failure is logged and costs the same.
fn keep_stamps(conn: &rusqlite::Connection, stamps: &DirStamps) {
    if let Err(e) = conn.execute(
        "INSERT INTO meta(key, value) VALUES(?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value WHERE value IS NOT excluded.value",
        rusqlite::params![STAMPS_KEY, stamps.encode()],
    ) {
        tracing::debug!(error = %e, "could not keep the Maildir's stamps in the index");
    }
}

/// The stamps the last finished scan kept in the index, if readable.
fn kept_stamps(conn: &rusqlite::Connection) -> Option<DirStamps> {
    let text: String = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [STAMPS_KEY], |r| {
            r.get(0)
        })
        .ok()?;
    DirStamps::decode(&text)
}

impl Account {
    /// Make a file found in the Maildir share its blob (hashing it; linking
    /// it as the blob if its content is new, or replacing it by a link to the
    /// existing blob). Returns (content id, size).
    fn adopt_file(&self, path: &std::path::Path) -> Result<(cove_dedup::ContentId, u64)> {
        let (id, len, shared) = self.blobs.adopt(path)?;
        if !shared {
            // Same content already stored: replace the file by a link to it.
            let tmp = path.with_file_name(format!(".cove-dedup.{}", self.env.message_guid()));
            cove_dedup::link_existing(&self.blobs, &id, &tmp)?;
            if let Err(e) = fs::rename(&tmp, path) {
                let _ = fs::remove_file(&tmp);
                tracing::warn!(file = %path.display(), error = %e, "could not dedup a file found in the Maildir");
            }
        }
        Ok((id, len))
    }
}
