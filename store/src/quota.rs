//! A user's limits: bytes (RFC 9208 STORAGE) and messages (RFC 9208
//! MESSAGE), checked in one place before anything is stored.
//!
//! The byte limit is the directory's `quota` (replicated with the user).
//! The message limit is the directory's `message_quota` when set for the
//! user, else the server's default (`[server] default_message_quota`); it is
//! kept by each node's directory and not carried by replication (the peers'
//! user record is a fixed wire format), so an operator sets a per-user value
//! on both nodes, or relies on the same default in both configurations.
//! Usage counts every message the user holds, at its full size, in every
//! mailbox (shared content counted for each user); both figures are kept
//! in the index's `meta` (`bytes`, `messages`) by the two places message
//! rows come and go, so a check reads two rows, not the message table.

use std::fmt;

use rusqlite::Connection;

use crate::{Error, Result};

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaResource {
    /// Bytes of the messages held (RFC 9208 §5.1 STORAGE).
    Storage,
    /// Messages held (RFC 9208 §5.2 MESSAGE).
    Messages,
    /// Sieve scripts kept (RFC 5804 §1.3 QUOTA/MAXSCRIPTS).
    Scripts,
}

impl fmt::Display for QuotaResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QuotaResource::Storage => "bytes",
            QuotaResource::Messages => "messages",
            QuotaResource::Scripts => "scripts",
        })
    }
}

/// A user's limits; 0: none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    pub bytes: u64,
    pub messages: u64,
}

impl Quota {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.bytes > 0 || self.messages > 0
    }

    /// `OverQuota` if `messages` more messages of `bytes` in all would not
    /// fit beside what the account (`conn`, its index) holds.
    pub(crate) fn admit(&self, conn: &Connection, messages: u64, bytes: u64) -> Result<()> {
        if self.bytes > 0 {
            let used = crate::index::total_size(conn)?;
            if used + bytes > self.bytes {
                return Err(Error::OverQuota {
                    resource: QuotaResource::Storage,
                    used,
                    limit: self.bytes,
                    needed: bytes,
                });
            }
        }
        if self.messages > 0 {
            let used = crate::index::message_total(conn)?;
            if used + messages > self.messages {
                return Err(Error::OverQuota {
                    resource: QuotaResource::Messages,
                    used,
                    limit: self.messages,
                    needed: messages,
                });
            }
        }
        Ok(())
    }
}
