//! Content verification and repair over the whole data directory (the
//! per-account part and its essay are in `account/content.rs`).

use std::collections::HashSet;

use cove_dedup::ContentId;

use crate::account::{ContentCheck, DamagedMessage};
use crate::{Result, Store};

/// What [`Store::verify_content`] found.
#[derive(Debug, Default)]
pub struct ContentReport {
    pub blobs_checked: u64,
    /// Blobs whose bytes did not match their name, quarantined now:
    /// (name, actual content).
    pub corrupt_blobs: Vec<(ContentId, ContentId)>,
    /// Message files that do not hold their content, whatever the cause
    /// (a corrupt blob, or one quarantined earlier by a re-delivery).
    pub messages: Vec<DamagedMessage>,
    /// Message files checked.
    pub files_checked: u64,
}

impl ContentReport {
    pub fn is_clean(&self) -> bool {
        self.corrupt_blobs.is_empty() && self.messages.is_empty()
    }
}

/// What [`Store::repair_damaged`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// Damaged content ids known (quarantined copies still served).
    pub damaged: u64,
    /// Message files relinked to a verified copy here.
    pub relinked: u64,
    /// Users queued for replication because a damaged content id they use
    /// has no good copy here (the peer's is fetched).
    pub queued_users: Vec<String>,
}

impl Store {
    /// Verify every blob (quarantining corrupt ones) and every user's
    /// message files (`cove dedup verify`). Blocking; reads everything.
    pub fn verify_content(&self) -> Result<ContentReport> {
        let (blobs_checked, corrupt_blobs) = self.blobs().verify_all()?;
        let mut check = ContentCheck::after_verifying_blobs();
        let mut messages = Vec::new();
        for user in self.directory().list()? {
            let account = self.account(&user)?;
            messages.extend(account.verify_messages(&mut check)?);
        }
        Ok(ContentReport {
            files_checked: check.files,
            blobs_checked,
            corrupt_blobs,
            messages,
        })
    }

    /// Relink every message file that serves a damaged content id to a
    /// verified copy stored here, and queue for replication the users whose
    /// damaged content has no good copy here. Cheap when nothing is
    /// damaged (one directory listing); otherwise it opens every account.
    pub fn repair_damaged(&self) -> Result<RepairReport> {
        let damaged: HashSet<ContentId> = self.blobs().damaged()?;
        let mut report = RepairReport {
            damaged: damaged.len() as u64,
            ..RepairReport::default()
        };
        if damaged.is_empty() {
            self.blobs().retire_repaired()?;
            return Ok(report);
        }
        for user in self.directory().list()? {
            let account = self.account(&user)?;
            let (relinked, lacking) = account.repair_damaged(&damaged)?;
            report.relinked += relinked;
            if !lacking.is_empty() {
                if let Some(hook) = self.change_hook().get() {
                    hook(account.email());
                }
                report.queued_users.push(account.email().to_string());
            }
        }
        self.blobs().retire_repaired()?;
        Ok(report)
    }
}
