//! The maildrop of one POP3 session (RFC 1939 §4–§6): the user's INBOX as
//! it was at login, numbered 1..n, with each message's size and unique id;
//! DELE marks, RSET unmarks, QUIT expunges the marked ones through the
//! store (so IMAP sessions see EXPUNGE, and the replicator sends it on).
//!
//! - Sizes are the octets of the CRLF form (see `encode`), computed once
//!   per content and kept in the store's derived cache (kind
//!   [`CRLF_SIZE_KIND`]; IMAP's kinds are 11–14).
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

use std::collections::{HashSet, VecDeque};
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cove_store::{Account, ContentId, MailboxInfo, MessageMeta, Uid};

use super::command::MessageNumber;
use super::encode::{CrlfSize, Encoder, Extent};

/// The derived-cache kind of a message's CRLF size (8 bytes, big endian).
pub const CRLF_SIZE_KIND: u8 = 21;

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
        // have it watched).
        account.scan()?;
        let mailbox = account.mailbox("INBOX")?;
        let metas = account.messages(&mailbox.guid)?;
        let keys: Vec<(ContentId, u8)> = metas
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
                None => match file_crlf_size(&account.message_path(&mailbox, &meta)) {
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

    /// The UIDs marked deleted (what QUIT expunges).
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
            file: self.account.message_path(&self.mailbox, &m.meta),
            size: m.size,
            extent,
        })
    }
}

/// The CRLF size of a message file, read in pieces.
fn file_crlf_size(path: &std::path::Path) -> std::io::Result<u64> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = CrlfSize::default();
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(size.total);
        }
        size.feed(&buf[..n]);
    }
}

/// One RETR or TOP to answer.
pub struct Retrieval {
    pub number: usize,
    pub uid: Uid,
    pub file: PathBuf,
    pub size: u64,
    pub extent: Extent,
}

/// RETR and TOP answers being written: one, or several pipelined ones in a
/// row. [`Transfer::run`] is blocking; it encodes into the session's output
/// until the queue is done or the output holds `budget` bytes, then the
/// session writes them and runs it again — so a big message streams
/// through a bounded buffer, and many small ones cost one trip to the
/// blocking pool.
pub struct Transfer {
    queue: VecDeque<Retrieval>,
    current: Option<(std::fs::File, Encoder)>,
    account: Arc<Account>,
    mailbox: MailboxInfo,
    buf: Vec<u8>,
}

/// Bytes read from a message file at once.
const READ_PIECE: usize = 64 * 1024;

impl Transfer {
    pub fn new(account: Arc<Account>, mailbox: MailboxInfo, queue: Vec<Retrieval>) -> Transfer {
        Transfer {
            queue: queue.into(),
            current: None,
            account,
            mailbox,
            buf: Vec::new(),
        }
    }

    pub fn is_finished(&self) -> bool {
        self.queue.is_empty() && self.current.is_none()
    }

    /// Encode answers into `out` until done or `out` holds `budget` bytes.
    /// An error after a `+OK` went out cannot be told to the client in
    /// POP3: the caller closes the connection.
    pub fn run(&mut self, out: &mut Vec<u8>, budget: usize) -> std::io::Result<()> {
        if self.buf.len() < READ_PIECE {
            self.buf.resize(READ_PIECE, 0);
        }
        while out.len() < budget {
            if let Some((file, encoder)) = self.current.as_mut() {
                let n = file.read(&mut self.buf)?;
                if n > 0 {
                    encoder.feed(&self.buf[..n], out);
                }
                if n == 0 || encoder.is_done() {
                    encoder.finish(out);
                    self.current = None;
                }
                continue;
            }
            let Some(r) = self.queue.pop_front() else {
                break;
            };
            match self.open(&r) {
                Ok(Some(file)) => {
                    match r.extent {
                        Extent::Whole => {
                            out.extend_from_slice(format!("+OK {} octets\r\n", r.size).as_bytes())
                        }
                        Extent::Top(_) => out.extend_from_slice(b"+OK Top of message follows\r\n"),
                    }
                    self.current = Some((file, Encoder::new(r.extent)));
                }
                Ok(None) => out.extend_from_slice(
                    format!(
                        "-ERR Message {} was removed by another session\r\n",
                        r.number
                    )
                    .as_bytes(),
                ),
                Err(e) => {
                    tracing::error!(user = %self.account.email(), file = %r.file.display(), error = %e, "pop3: cannot read a message");
                    out.extend_from_slice(
                        format!("-ERR [SYS/TEMP] Cannot read message {}\r\n", r.number).as_bytes(),
                    );
                }
            }
        }
        if self.is_finished() && self.buf.capacity() > READ_PIECE {
            self.buf = Vec::new();
        }
        Ok(())
    }

    /// Open a message's file; if a flag change renamed it (IMAP), find
    /// its new name; `None` if it was expunged meanwhile.
    fn open(&self, r: &Retrieval) -> std::io::Result<Option<std::fs::File>> {
        match std::fs::File::open(&r.file) {
            Ok(f) => return Ok(Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let found = self
            .account
            .message(&self.mailbox.guid, r.uid)
            .map_err(std::io::Error::other)?;
        match found {
            None => Ok(None),
            Some(m) => match std::fs::File::open(self.account.message_path(&self.mailbox, &m)) {
                Ok(f) => Ok(Some(f)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            },
        }
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
