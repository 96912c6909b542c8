//! RENAME, DELETE, SUBSCRIBE and UNSUBSCRIBE (RFC 3501 §6.3.4–§6.3.7).
//!
//! # Rename
//! A mailbox is a Maildir++ folder `.A.B`; its children are the sibling
//! folders `.A.B.*`. A rename renames each folder (never over an existing
//! name), then commits the new names. The identity file inside each folder
//! (`cove-mailbox`: GUID and UIDVALIDITY) travels with it, so a crash between
//! the renames and the commit is finished by the scan, which recognises a
//! folder by its identity under its new name. GUIDs, UIDVALIDITY and UIDs
//! never change in a rename.
//!
//! Renaming INBOX is special (RFC 3501 §6.3.5): a new mailbox (new GUID, new
//! UIDVALIDITY) receives all of INBOX's messages as a MOVE would (same GUIDs,
//! new UIDs), and INBOX stays, empty, with its UIDs still unused. The change
//! log says `MailboxCreated` and then `Expunged`/`MessageAdded` per message,
//! not `MailboxRenamed`: INBOX's GUID keeps naming INBOX.
//!
//! # Delete
//! The folder is first renamed out of `Maildir/` into the home's
//! `.cove-deleted/`, then the index drops the mailbox (every message expunged
//! with a tombstone, so replicas learn of each), then the parked folder is
//! removed. A crash before the commit leaves a mailbox without a folder: the
//! scan deletes it the same way. Parked folders left by a crash are removed
//! when the account is opened. Children are not touched (RFC 3501 §6.3.4).
//!
//! # Subscriptions
//! A set of names (`subscription` table) that need not exist (RFC 3501
//! §6.3.6): deleting a mailbox keeps its subscription; renaming one moves the
//! subscriptions of it and its children.

use std::fs;
use std::path::PathBuf;

use super::transfer::{move_rows, undo_moves};
use super::{Account, CREATING_DIR, DELETED_DIR, scratch_busy, scratch_busy_file};
use crate::changes::ChangeKind;
use crate::index::{self, MailboxInfo, Tx};
use crate::maildir::{self, FolderIdentity};
use crate::{Error, IoContext, Result};

impl Account {
    /// RFC 3501 §6.3.5 RENAME: rename `from` and every child (`from.*`) to
    /// `to` (`to.*`), keeping GUIDs, UIDVALIDITY and UIDs; subscriptions
    /// follow. `NotFound` if `from` does not exist, `AlreadyExists` if `to`
    /// or a child's new name does, `InvalidData` for a bad name. Renaming
    /// INBOX moves its messages into a new mailbox `to` (see the module
    /// notes).
    pub fn rename_mailbox(&self, from: &str, to: &str) -> Result<()> {
        let from = maildir::validate_mailbox_name(from)?;
        let to = maildir::validate_mailbox_name(to)?;
        let (from, to) = (from.as_str(), to.as_str());
        if from == "INBOX" {
            return self.rename_inbox(to);
        }
        let mut g = self.conn()?;
        let mb = index::mailbox_by_name(&g.conn, from)?
            .ok_or_else(|| Error::NotFound(format!("mailbox {from}")))?;
        let prefix = format!("{}.", mb.name);
        let mut plan: Vec<(MailboxInfo, String, String)> = Vec::new();
        for m in index::mailboxes(&g.conn)? {
            if m.id != mb.id && !m.name.starts_with(&prefix) {
                continue;
            }
            let new_name = format!("{to}{}", &m.name[mb.name.len()..]);
            maildir::validate_mailbox_name(&new_name)?;
            if new_name.eq_ignore_ascii_case("INBOX")
                || index::mailbox_by_name(&g.conn, &new_name)?.is_some()
            {
                return Err(Error::AlreadyExists(format!("mailbox {new_name}")));
            }
            let new_dir = maildir::mailbox_dir_name(&new_name);
            plan.push((m, new_name, new_dir));
        }
        let mut done: Vec<(PathBuf, PathBuf)> = Vec::new();
        let undo = |done: &[(PathBuf, PathBuf)]| {
            for (src, dst) in done.iter().rev() {
                if let Err(e) = maildir::rename_noreplace(dst, src) {
                    tracing::warn!(folder = %dst.display(), error = %e, "could not undo a folder rename");
                }
            }
        };
        for (m, new_name, new_dir) in &plan {
            let src = self.maildir.join(&m.dir);
            let dst = self.maildir.join(new_dir);
            match maildir::rename_noreplace(&src, &dst) {
                Ok(()) => done.push((src, dst)),
                // The folder is gone already: the row follows the rename and
                // the next scan removes it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !src.exists() => {}
                Err(e) => {
                    undo(&done);
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        return Err(Error::AlreadyExists(format!("mailbox {new_name}")));
                    }
                    return Err(e).ctx(|| format!("rename {} to {}", src.display(), dst.display()));
                }
            }
        }
        let committed = (|| {
            self.sync.dir_written(&self.maildir)?;
            let mut tx = Tx::begin(&mut g.conn, &self.env)?;
            for (m, new_name, new_dir) in &plan {
                tx.rename_mailbox(m, new_name, new_dir)?;
            }
            tx.rename_subscriptions(&mb.name, to)?;
            tx.commit()
        })();
        match committed {
            Ok(changes) => {
                drop(g);
                self.publish(changes)
            }
            Err(e) => {
                undo(&done);
                Err(e)
            }
        }
    }

    /// RENAME INBOX: its messages move into a new mailbox `to`.
    fn rename_inbox(&self, to: &str) -> Result<()> {
        let mut g = self.conn()?;
        if to.eq_ignore_ascii_case("INBOX") || index::mailbox_by_name(&g.conn, to)?.is_some() {
            return Err(Error::AlreadyExists(format!("mailbox {to}")));
        }
        let inbox = index::mailbox_by_name(&g.conn, "INBOX")?
            .ok_or_else(|| Error::NotFound("mailbox INBOX".into()))?;
        let dir = maildir::mailbox_dir_name(to);
        let path = self.maildir.join(&dir);
        if path.symlink_metadata().is_ok() {
            return Err(Error::AlreadyExists(format!("mailbox {to}")));
        }
        let rows = index::messages(&g.conn, inbox.id)?;
        let mut tx = Tx::begin(&mut g.conn, &self.env)?;
        let identity = FolderIdentity {
            guid: self.env.mailbox_guid(),
            uidvalidity: tx.next_uidvalidity(self.env.now_secs(), None)?,
        };
        self.place_new_folder(to, &path, &identity)?;
        let target = tx.insert_mailbox(identity.guid, to, &dir, identity.uidvalidity, None, true);
        let target = match target {
            Ok(t) => t,
            Err(e) => {
                drop(tx);
                let _ = fs::remove_dir_all(&path);
                return Err(e);
            }
        };
        let moved = match self.move_files(&inbox, &target, rows) {
            Ok(m) => m,
            Err(e) => {
                drop(tx);
                let _ = fs::remove_dir_all(&path);
                return Err(e);
            }
        };
        let committed = (|| {
            self.renames_durable(&inbox, &target)?;
            move_rows(&mut tx, &inbox, &target, &moved)?;
            tx.commit()
        })();
        match committed {
            Ok(changes) => {
                drop(g);
                self.publish(changes)
            }
            Err(e) => {
                undo_moves(&moved);
                let _ = fs::remove_dir_all(&path);
                Err(e)
            }
        }
    }

    /// RFC 3501 §6.3.4 DELETE: remove a mailbox and its messages (each
    /// expunged with a tombstone); children stay. INBOX cannot be deleted
    /// (`InvalidData`); `NotFound` if there is no such mailbox. The
    /// subscription stays (RFC 3501 §6.3.6).
    pub fn delete_mailbox(&self, name: &str) -> Result<()> {
        // Undone on error (the folder is put back), so it can run again
        // once the space reserve is released.
        self.freeing("DELETE", || self.delete_mailbox_once(name))
    }

    fn delete_mailbox_once(&self, name: &str) -> Result<()> {
        if name.eq_ignore_ascii_case("INBOX") {
            return Err(Error::InvalidData("INBOX cannot be deleted".into()));
        }
        let name = maildir::validate_mailbox_name(name)?;
        let name = name.as_str();
        let mut g = self.conn()?;
        let mb = index::mailbox_by_name(&g.conn, name)?
            .ok_or_else(|| Error::NotFound(format!("mailbox {name}")))?;
        let folder = self.folder(&mb);
        let contents: Vec<_> = index::messages(&g.conn, mb.id)?
            .into_iter()
            .map(|m| m.content_id)
            .collect();
        let _busy = scratch_busy(&self.home, DELETED_DIR)?;
        let parking = self.home.join(DELETED_DIR);
        fs::create_dir_all(&parking).ctx(|| format!("create {}", parking.display()))?;
        let parked = parking.join(mb.guid.to_hex());
        let park = || maildir::rename_noreplace(&folder, &parked);
        let moved = match park() {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !folder.exists() => false,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Left by an earlier attempt that crashed.
                fs::remove_dir_all(&parked).ctx(|| format!("remove {}", parked.display()))?;
                park().ctx(|| format!("move {} aside", folder.display()))?;
                true
            }
            Err(e) => return Err(e).ctx(|| format!("move {} aside", folder.display())),
        };
        let committed = (|| {
            self.sync.dir_written(&self.maildir)?;
            self.sync.dir_written(&parking)?;
            let mut tx = Tx::begin(&mut g.conn, &self.env)?;
            tx.delete_mailbox(&mb)?;
            tx.commit()
        })();
        let changes = match committed {
            Ok(c) => c,
            Err(e) => {
                if moved && let Err(undo) = maildir::rename_noreplace(&parked, &folder) {
                    tracing::warn!(user = %self.email, mailbox = %mb.name, error = %undo, "could not put a folder back after a failed delete");
                }
                return Err(e);
            }
        };
        drop(g);
        self.publish(changes)?;
        if moved && let Err(e) = fs::remove_dir_all(&parked) {
            tracing::warn!(user = %self.email, folder = %parked.display(), error = %e, "could not remove a deleted mailbox's folder; it is retried when the account is opened");
        }
        self.blobs.unlinked(contents);
        Ok(())
    }

    /// Remove folders of deleted mailboxes, and of new ones never placed,
    /// that a crash left behind.
    pub(super) fn remove_deleted_folders(&self) {
        for scratch in [DELETED_DIR, CREATING_DIR] {
            // Another process (or account) of this user is making or
            // parking a folder there: it cleans up after itself.
            let Ok(lock) = scratch_busy_file(&self.home, scratch) else {
                continue;
            };
            if lock.try_lock().is_err() {
                continue;
            }
            let Ok(entries) = fs::read_dir(self.home.join(scratch)) else {
                continue;
            };
            for entry in entries.flatten() {
                if let Err(e) = fs::remove_dir_all(entry.path()) {
                    tracing::warn!(user = %self.email, folder = %entry.path().display(), error = %e, "could not remove a left-over folder");
                }
            }
        }
    }

    /// RFC 3501 §6.3.6 SUBSCRIBE / §6.3.7 UNSUBSCRIBE. The name need not
    /// exist; when it does, the change is logged (`Subscription`).
    pub fn set_subscribed(&self, name: &str, subscribed: bool) -> Result<()> {
        let name = maildir::validate_mailbox_name(name)?;
        let name = name.as_str();
        let mut g = self.conn()?;
        let mut tx = Tx::begin(&mut g.conn, &self.env)?;
        if tx.set_subscription(name, subscribed)?
            && let Some(mb) = index::mailbox_by_name(&tx.tx, name)?
        {
            tx.log(&mb, ChangeKind::Subscription { subscribed })?;
        }
        let changes = tx.commit()?;
        drop(g);
        self.publish(changes)
    }

    /// RFC 3501 §6.3.9 LSUB: the subscribed names, sorted, existing or not.
    pub fn subscriptions(&self) -> Result<Vec<String>> {
        index::subscriptions(&self.conn()?.conn)
    }
}
