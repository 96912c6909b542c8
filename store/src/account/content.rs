//! Content verification and repair of a user's message files.
//!
//! # The problem
//! A message file is a hard link to its blob, so a blob whose bytes rot is
//! served to every user who shares it; and once a re-delivery of the same
//! content has quarantined the rotten blob (dedup/src/lib.rs), the blob
//! store looks healthy while the Maildir files still hold the bad inode.
//! Checking the blobs alone says nothing about what mailboxes serve.
//!
//! # What we do
//! - [`Account::verify_messages`] checks what each index row's file really
//!   holds: a file that shares the verified blob's inode is good; any other
//!   is hashed (once per inode). A file whose content is not its content id
//!   is reported with its mailbox, UID, GUID and path, logged, and tracked
//!   in `blobs/quarantine/` (one more hard link), which is the one record of
//!   damaged content ([`cove_dedup::BlobStore::damaged`]).
//! - [`Account::repair_damaged`] relinks every file of the account that
//!   serves a damaged content id to the verified blob, when one is stored:
//!   link the blob under a temporary name in the folder's `tmp/`, then
//!   `rename(2)` it over the file, so a reader sees the old inode or the new
//!   one, never no file. It runs under the index lock, so no flag change
//!   renames the file meanwhile. Ids with no good copy here are returned:
//!   the replication session asks the peer for them like content it lacks.
//!
//! # Alternatives rejected
//! - Rewriting the inode in place with the good bytes: blobs are read-only,
//!   a crash mid-write leaves a half-written message, and readers with the
//!   file open would see bytes change under them.
//! - A table of damaged messages in cove.db: a second record that can
//!   disagree with the files; the quarantine links are counted by the
//!   filesystem and drop to one by themselves when the last file is fixed.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use cove_dedup::ContentId;

use super::Account;
use crate::ids::{MessageGuid, Uid};
use crate::index;
use crate::watch::OwnEvent;
use crate::{IoContext, Result};

/// A message whose file does not hold the content its index row names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedMessage {
    pub user: String,
    pub mailbox: String,
    pub uid: Uid,
    pub guid: MessageGuid,
    pub path: PathBuf,
    /// What the file should hold.
    pub content_id: ContentId,
    /// What it holds (`None`: not a regular file).
    pub actual: Option<ContentId>,
}

impl std::fmt::Display for DamagedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let actual = self
            .actual
            .map_or_else(|| "not a regular file".to_string(), |a| a.to_hex());
        write!(
            f,
            "user={} mailbox={:?} uid={} guid={} content={} actual={} path={}",
            self.user,
            self.mailbox,
            self.uid,
            self.guid.to_hex(),
            self.content_id,
            actual,
            self.path.display()
        )
    }
}

/// What a verification run has already learnt, shared by every account
/// it checks: each blob is verified and each inode that is not its blob's
/// hashed once.
#[derive(Debug, Default)]
pub struct ContentCheck {
    /// Every blob was just verified (and the corrupt ones quarantined), so
    /// a blob under its name is good: no per-blob memory for a whole-store
    /// run. Otherwise blobs are verified on first use and remembered here.
    blobs_verified: bool,
    /// Blob inode by content id, `None` when no good blob is stored.
    blobs: HashMap<ContentId, Option<u64>>,
    /// (device, inode) -> what it holds.
    inodes: HashMap<(u64, u64), Option<ContentId>>,
    /// Message files checked.
    pub files: u64,
}

impl ContentCheck {
    /// For a run that has just verified every blob
    /// ([`cove_dedup::BlobStore::verify_all`]); a blob installed since was
    /// verified when it was installed.
    pub fn after_verifying_blobs() -> ContentCheck {
        ContentCheck {
            blobs_verified: true,
            ..ContentCheck::default()
        }
    }

    /// The inode of the verified blob of `id`, if a good one is stored.
    fn good_blob(&mut self, blobs: &cove_dedup::BlobStore, id: &ContentId) -> Option<u64> {
        if self.blobs_verified {
            return blobs.inode_of(id);
        }
        *self
            .blobs
            .entry(*id)
            .or_insert_with(|| match blobs.verify(id) {
                Ok(()) => blobs.inode_of(id),
                Err(cove_dedup::Error::Corrupt { actual, .. }) => {
                    // Quarantined now: the messages that use it are found
                    // below and reported.
                    let _ = blobs.quarantine(id, &actual);
                    None
                }
                Err(_) => None,
            })
    }
}

impl Account {
    /// Check every message file against its content id (see the module
    /// essay); returns the damaged ones, each logged and tracked in the
    /// blobs' quarantine.
    pub fn verify_messages(&self, check: &mut ContentCheck) -> Result<Vec<DamagedMessage>> {
        let g = self.conn()?;
        let mut out = Vec::new();
        for mb in index::mailboxes(&g.conn)? {
            let folder = self.folder(&mb);
            for m in index::messages(&g.conn, mb.id)? {
                let path = folder.join(&m.file);
                // A file gone meanwhile is the scan's business, not damage.
                let Ok(meta) = fs::symlink_metadata(&path) else {
                    continue;
                };
                check.files += 1;
                if meta.is_file() && check.good_blob(&self.blobs, &m.content_id) == Some(meta.ino())
                {
                    continue;
                }
                let actual = match check.inodes.get(&(meta.dev(), meta.ino())) {
                    Some(a) => *a,
                    // A FIFO, device or symlink in a message's place is
                    // never opened.
                    None if !meta.is_file() => None,
                    None => {
                        let a = cove_dedup::hash_file(&path)?.map(|(id, _)| id);
                        check.inodes.insert((meta.dev(), meta.ino()), a);
                        a
                    }
                };
                if actual == Some(m.content_id) {
                    continue;
                }
                if let Some(a) = actual {
                    self.blobs.quarantine_file(&path, &m.content_id, &a)?;
                }
                let damaged = DamagedMessage {
                    user: self.email.clone(),
                    mailbox: mb.name.clone(),
                    uid: m.uid,
                    guid: m.guid,
                    path,
                    content_id: m.content_id,
                    actual,
                };
                tracing::error!(user = %self.email, mailbox = %mb.name, uid = %m.uid, guid = %m.guid.to_hex(), content = %m.content_id, file = %damaged.path.display(), "message file does not hold its content; it is repaired from a verified copy (here or the peer's)");
                out.push(damaged);
            }
        }
        Ok(out)
    }

    /// Relink this account's files that serve a `damaged` content id to the
    /// verified blob, where one is stored (see the module essay). Returns
    /// how many files were relinked and the damaged ids this account uses
    /// that have no good copy here (to ask a peer for).
    pub fn repair_damaged(&self, damaged: &HashSet<ContentId>) -> Result<(u64, Vec<ContentId>)> {
        if damaged.is_empty() {
            return Ok((0, Vec::new()));
        }
        let g = self.conn()?;
        let mut check = ContentCheck::default();
        let mut lacking = HashSet::new();
        let mut relinked = 0;
        for mb in index::mailboxes(&g.conn)? {
            let folder = self.folder(&mb);
            for m in index::messages(&g.conn, mb.id)? {
                if !damaged.contains(&m.content_id) {
                    continue;
                }
                let path = folder.join(&m.file);
                let Ok(meta) = fs::symlink_metadata(&path) else {
                    continue;
                };
                let Some(good) = check.good_blob(&self.blobs, &m.content_id) else {
                    lacking.insert(m.content_id);
                    continue;
                };
                if meta.ino() == good
                    || (meta.is_file()
                        && cove_dedup::hash_file(&path)?.map(|(id, _)| id) == Some(m.content_id))
                {
                    continue;
                }
                let name = m.file.rsplit('/').next().unwrap_or(&m.file);
                let tmp = folder.join("tmp").join(format!("{name}.repair"));
                let _ = fs::remove_file(&tmp);
                let announced = self.own.announce([
                    (tmp.clone(), OwnEvent::Appear),
                    (tmp.clone(), OwnEvent::Vanish),
                    (path.clone(), OwnEvent::Appear),
                ]);
                cove_dedup::link_existing(&self.blobs, &m.content_id, &tmp)?;
                if let Err(e) = fs::rename(&tmp, &path) {
                    let _ = fs::remove_file(&tmp);
                    return Err(e).ctx(|| format!("replace {}", path.display()));
                }
                announced.made();
                if let Some(dir) = path.parent() {
                    self.sync.dir_written(dir)?;
                }
                relinked += 1;
                tracing::warn!(user = %self.email, mailbox = %mb.name, uid = %m.uid, guid = %m.guid.to_hex(), content = %m.content_id, file = %path.display(), "repaired: message file relinked to the verified copy of its content");
            }
        }
        if relinked > 0 {
            // Views parsed from the damaged bytes (ENVELOPE, BODYSTRUCTURE)
            // are parsed again from the good ones.
            for id in damaged.difference(&lacking) {
                super::derived::delete_derived_of(&g.conn, id)?;
            }
        }
        drop(g);
        if relinked > 0 {
            self.sync.sync()?;
            self.blobs.retire_repaired()?;
        }
        Ok((relinked, lacking.into_iter().collect()))
    }
}

impl Account {
    /// [`repair_damaged`](Account::repair_damaged) for every damaged content
    /// id known here; returns the ids this account uses that still have no
    /// good copy (the replication session asks the peer for them).
    pub fn repair_content(&self) -> Result<Vec<ContentId>> {
        let damaged = self.blobs.damaged()?;
        Ok(self.repair_damaged(&damaged)?.1)
    }
}
