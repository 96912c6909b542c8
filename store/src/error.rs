//! The one protocol-neutral error of the store. Exactly one function per
//! protocol maps it to wire codes (IMAP response codes, POP3 `-ERR [..]`,
//! LMTP enhanced status codes).

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("over quota: {used} of {limit} {resource} used, {needed} more needed")]
    OverQuota {
        resource: crate::QuotaResource,
        used: u64,
        limit: u64,
        needed: u64,
    },
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooBig { size: u64, limit: u64 },
    #[error("{0} is in use")]
    InUse(String),
    #[error("message was expunged")]
    Expunged,
    #[error("invalid data: {0}")]
    InvalidData(String),
    #[error("index busy: {0}")]
    Busy(String),
    #[error("no space left: {0}")]
    NoSpace(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("index: {0}")]
    Index(String),
    #[error(transparent)]
    Blob(cove_dedup::Error),
}

impl Error {
    /// Whether retrying later may succeed (LMTP 4xx rather than 5xx).
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            Error::Busy(_)
                | Error::NoSpace(_)
                | Error::Io { .. }
                | Error::Index(_)
                | Error::Blob(_)
                | Error::InUse(_)
        )
    }

    /// Whether this is a blob the content store does not hold (callers
    /// above the store ask this instead of matching the blob store's own
    /// error type).
    pub fn is_missing_content(&self) -> bool {
        matches!(self, Error::Blob(cove_dedup::Error::NotFound(_)))
    }

    /// A mailbox asked for by its GUID is gone: removed, renamed away or
    /// merged with the peer's of the same name since the caller looked it
    /// up. Said so, because the GUID alone means nothing to a user.
    pub(crate) fn mailbox_gone(guid: &crate::MailboxGuid) -> Error {
        Error::NotFound(format!(
            "mailbox {guid} (removed or merged with another since it was opened)"
        ))
    }
}

fn is_no_space(e: &io::Error) -> bool {
    // ENOSPC = 28, EDQUOT = 122 on Linux.
    matches!(e.raw_os_error(), Some(28) | Some(122)) || e.kind() == io::ErrorKind::StorageFull
}

impl From<cove_dedup::Error> for Error {
    fn from(e: cove_dedup::Error) -> Self {
        if matches!(e.raw_os_error(), Some(28) | Some(122)) {
            return Error::NoSpace(e.to_string());
        }
        Error::Blob(e)
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        let short_read = matches!(
            &e,
            rusqlite::Error::SqliteFailure(f, _)
                if f.extended_code == rusqlite::ffi::SQLITE_IOERR_SHORT_READ
        );
        if short_read
            || matches!(
                e.sqlite_error_code(),
                Some(ErrorCode::DatabaseCorrupt) | Some(ErrorCode::NotADatabase)
            )
        {
            crate::index::corruption_seen();
        }
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => {
                Error::Busy(e.to_string())
            }
            Some(ErrorCode::DiskFull) => Error::NoSpace(e.to_string()),
            _ => Error::Index(e.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) trait IoContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| {
            if is_no_space(&source) {
                Error::NoSpace(format!("{}: {source}", what()))
            } else {
                Error::Io {
                    context: what(),
                    source,
                }
            }
        })
    }
}

impl<T> IoContext<T> for std::result::Result<T, cove_dedup::Error> {
    fn ctx(self, _what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(Error::from)
    }
}
