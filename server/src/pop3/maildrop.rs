//! The maildrop of one POP3 session (RFC 1939 §4–§6): the user's INBOX as
//! it was at login, numbered 1..n, with each message's size and unique id;
//! DELE marks, RSET unmarks, QUIT expunges the marked ones through the
//! store (so IMAP sessions see EXPUNGE, and the replicator sends it on).
//!
//! - Sizes are the octets of the CRLF form (see `encode`), computed once
//!   per content and kept in the store's derived cache (kind
//!   [`DerivedKind::Pop3CrlfSize`]).
//! - The unique id (UIDL) is the message GUID in hex: the GUID is in the
//!   Maildir file name, replication carries it to every node, and a
//!   rebuilt index reads it back, so a client never downloads a message
//!   twice after a failover or a rebuild. A message moved by IMAP out and
//!   back keeps its GUID and so its UIDL; a copy gets a new one.
//! - One POP3 session per user at a time (RFC 1939 §8 "exclusive-access
//!   lock"): an in-process set of user ids, held by the session's
//!   [`MaildropLock`], released when the session ends however it ends
//!   (drop). It locks out POP3 only: IMAP sessions and deliveries go on,
//!   and a message IMAP expunges meanwhile answers `-ERR` on RETR.

use std::collections::HashSet;
use std::io::Read;
use std::sync::{Arc, Mutex};

use cove_store::{Account, ContentId, DerivedKind, MailboxFiles, MailboxInfo, MessageMeta, Uid};

use super::command::MessageNumber;
use super::encode::{CrlfSize, Extent};
use super::retrieval::Retrieval;

/// The derived-cache kind of a message's CRLF size (8 bytes, big endian).
/// Kind 21, before it, left out the CRLF sent after a last line that has
/// none; its entries are no longer read.
pub const CRLF_SIZE_KIND: DerivedKind = DerivedKind::Pop3CrlfSize;

/// Users with a POP3 session in this process.
#[derive(Default)]
pub struct MaildropLocks {
    held: Mutex<HashSet<i64>>,
}

/// A user's maildrop lock; dropping it releases it.
pub struct MaildropLock {
    locks: Arc<MaildropLocks>,
    user: i64,
}

impl MaildropLocks {
    /// The lock of `user`, or `None` while another session holds it.
    pub fn try_lock(self: &Arc<Self>, user: i64) -> Option<MaildropLock> {
        let mut held = self.held.lock().ok()?;
        held.insert(user).then(|| MaildropLock {
            locks: self.clone(),
            user,
        })
    }
}

impl Drop for MaildropLock {
    fn drop(&mut self) {
        if let Ok(mut held) = self.locks.held.lock() {
            held.remove(&self.user);
        }
    }
}

/// One message of the maildrop.
pub struct DropMessage {
    pub meta: MessageMeta,
    /// Octets of the CRLF form.
    pub size: u64,
}

/// Why a message number names nothing to act on.
#[derive(Debug, PartialEq, Eq)]
pub enum Missing {
    NoSuchMessage,
    Deleted,
}

pub struct Maildrop {
    pub account: Arc<Account>,
    pub mailbox: MailboxInfo,
    /// The INBOX folder, open for reading message files.
    pub files: Arc<MailboxFiles>,
    messages: Vec<DropMessage>,
    deleted: Vec<bool>,
    /// Sent whole by RETR (\Seen at QUIT, as Dovecot does).
    retrieved: Vec<bool>,
    _lock: MaildropLock,
}

impl Maildrop {
    /// Open the INBOX of `account` as a maildrop. Blocking (reads the
    /// index, and the files whose CRLF size is not cached yet).
    pub fn load(account: Arc<Account>, lock: MaildropLock) -> cove_store::Result<Maildrop> {
        // Mail another program put into the Maildir since the account was
        // last reconciled belongs in the maildrop too (no IMAP session may
        // have it watched); a Maildir no one changed is not listed again.
        account.scan_if_changed()?;
        let mailbox = account.mailbox("INBOX")?;
        let files = Arc::new(account.mailbox_files(&mailbox)?);
        let metas = account.messages(&mailbox.guid)?;
        let keys: Vec<(ContentId, DerivedKind)> = metas
            .iter()
            .map(|m| (m.content_id, CRLF_SIZE_KIND))
            .collect();
        let cached = account.derived(&keys)?;
        let mut learned = Vec::new();
        let mut messages = Vec::with_capacity(metas.len());
        for (meta, cached) in metas.into_iter().zip(cached) {
            let known = cached
                .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                .map(u64::from_be_bytes);
            let size = match known {
                Some(s) => s,
                None => match file_crlf_size(&files, &meta.file) {
                    Ok(s) => {
                        learned.push((meta.content_id, CRLF_SIZE_KIND, s.to_be_bytes().to_vec()));
                        s
                    }
                    // Expunged by IMAP this instant, or unreadable: the
                    // stored size will do; RETR will say what is wrong.
                    Err(_) => meta.size,
                },
            };
            messages.push(DropMessage { meta, size });
        }
        if let Err(e) = account.store_derived(&learned) {
            tracing::warn!(user = %account.email(), error = %e, "could not cache POP3 sizes");
        }
        let deleted = vec![false; messages.len()];
        let retrieved = vec![false; messages.len()];
        Ok(Maildrop {
            account,
            mailbox,
            files,
            messages,
            deleted,
            retrieved,
            _lock: lock,
        })
    }

    /// The message a number names, with its index (number - 1).
    pub fn get(&self, n: MessageNumber) -> Result<(usize, &DropMessage), Missing> {
        let i = usize::try_from(n.0)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .filter(|i| *i < self.messages.len())
            .ok_or(Missing::NoSuchMessage)?;
        if self.deleted[i] {
            return Err(Missing::Deleted);
        }
        Ok((i, &self.messages[i]))
    }

    /// Messages not marked deleted, with their numbers.
    pub fn live(&self) -> impl Iterator<Item = (usize, &DropMessage)> {
        self.messages
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.deleted[*i])
            .map(|(i, m)| (i + 1, m))
    }

    /// STAT: messages not marked deleted and their octets.
    pub fn stat(&self) -> (usize, u64) {
        self.live()
            .fold((0, 0), |(n, o), (_, m)| (n + 1, o + m.size))
    }

    /// DELE: mark a message.
    pub fn delete(&mut self, index: usize) {
        if let Some(d) = self.deleted.get_mut(index) {
            *d = true;
        }
    }

    /// RSET: unmark every message.
    pub fn reset(&mut self) {
        self.deleted.iter_mut().for_each(|d| *d = false);
    }

    /// A message was sent whole (RETR).
    pub fn retrieved(&mut self, index: usize) {
        if let Some(r) = self.retrieved.get_mut(index) {
            *r = true;
        }
    }

    /// UIDs of the messages RETR sent that are not deleted and not \Seen
    /// yet: they get \Seen at QUIT, so that IMAP shows POP3-read mail as
    /// read (Dovecot's default too).
    pub fn seen_uids(&self) -> Vec<Uid> {
        self.messages
            .iter()
            .zip(self.retrieved.iter().zip(&self.deleted))
            .filter(|(m, (r, d))| **r && !**d && !m.meta.flags.contains(cove_store::Flags::SEEN))
            .map(|(m, _)| m.meta.uid)
            .collect()
    }

    /// The UIDs marked deleted (what QUIT expunges).
    pub fn deleted_uids(&self) -> Vec<Uid> {
        self.messages
            .iter()
            .zip(&self.deleted)
            .filter(|(_, d)| **d)
            .map(|(m, _)| m.meta.uid)
            .collect()
    }

    /// RFC 1939 §7 UIDL: the unique id of a message (its GUID, 32 hex digits).
    pub fn unique_id(message: &DropMessage) -> String {
        message.meta.guid.to_hex()
    }

    /// What RETR or TOP of a message needs to send it.
    pub fn retrieval(&self, index: usize, extent: Extent) -> Option<Retrieval> {
        let m = self.messages.get(index)?;
        Some(Retrieval {
            number: index + 1,
            uid: m.meta.uid,
            file: m.meta.file.clone(),
            stored: m.meta.size,
            size: m.size,
            extent,
        })
    }
}

/// The CRLF size of a message file, read in pieces.
/// The cached CRLF size view of a message, as a POP3 session caches it
/// (the background indexer makes it on arrival: crate::derive).
pub(crate) fn crlf_size_view(raw: &[u8]) -> (DerivedKind, Vec<u8>) {
    let mut size = CrlfSize::default();
    size.feed(raw);
    (CRLF_SIZE_KIND, size.finish().to_be_bytes().to_vec())
}

fn file_crlf_size(files: &MailboxFiles, file: &str) -> std::io::Result<u64> {
    let mut f = files.open(file)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = CrlfSize::default();
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(size.finish());
        }
        size.feed(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lock_per_user_released_on_drop() {
        let locks = Arc::new(MaildropLocks::default());
        let a = locks.try_lock(1).expect("free");
        assert!(locks.try_lock(1).is_none(), "held");
        let _b = locks.try_lock(2).expect("another user");
        drop(a);
        assert!(locks.try_lock(1).is_some(), "released");
    }
}
