//! The connection side of an IMAP session: the socket, the output buffer
//! and what every handler needs to know of the server. The session's state
//! (who is logged in, which mailbox is selected) is kept apart, in
//! `session::State`, so that a handler borrows the connection to write and
//! its state to read or change, each typed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cove_store::Account;
use tokio::io::BufReader;

use super::ImapContext;
use super::condstore::Enabled;
use super::outcome::{self, Outcome};
use crate::conn::Conn;
use crate::listener::ConnectionSlot;

pub struct Connection {
    pub ctx: Arc<ImapContext>,
    pub peer: SocketAddr,
    pub id: u64,
    pub reader: BufReader<Conn>,
    pub out: Vec<u8>,
    /// RFC 5161 ENABLE, and what RFC 7162 enables implicitly.
    pub enabled: Enabled,
}

impl Connection {
    /// An untagged line (`* ...`).
    pub fn untagged(&mut self, text: &str) {
        self.out.extend_from_slice(b"* ");
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// Write what is buffered, within `limit` if there is one.
    pub async fn flush_within(&mut self, limit: Option<Duration>) -> std::io::Result<()> {
        if !self.out.is_empty() {
            crate::conn::write_within(self.reader.get_mut(), &self.out, limit).await?;
            // A waiting session keeps no output buffer: thousands of them
            // wait in IDLE.
            self.out = Vec::new();
        }
        Ok(())
    }

    pub fn is_tls(&self) -> bool {
        self.reader.get_ref().is_tls()
    }

    /// Plaintext passwords are accepted over TLS, from loopback, or when
    /// the operator allows it (RFC 3501 §6.2.3, RFC 8314).
    pub fn plaintext_ok(&self) -> bool {
        self.reader
            .get_ref()
            .plaintext_ok(self.peer, self.ctx.config.allow_plaintext_auth)
    }

    /// The answer to a store error (the one mapping, `outcome`), logged
    /// with this session when the client is not told why.
    pub fn refuse(&self, e: &cove_store::Error) -> Outcome {
        outcome::for_store_error(e, self.id)
    }

    /// A mailbox name the client sent that is not one: NO, logged.
    pub fn refuse_name(&self, e: &cove_store::Error) -> Outcome {
        tracing::info!(session = self.id, peer = %self.peer, error = %e.to_string().escape_debug(), "imap mailbox name refused");
        self.refuse(e)
    }
}

/// A logged-in user: the state of RFC 3501 §3.2, and part of §3.3's.
pub struct Authed {
    pub account: Arc<Account>,
    /// The user's limits at login (RFC 9208 STORAGE and MESSAGE).
    limits: cove_store::Quota,
    _slot: ConnectionSlot<i64>,
}

impl Authed {
    pub fn new(
        account: Arc<Account>,
        limits: cove_store::Quota,
        slot: ConnectionSlot<i64>,
    ) -> Authed {
        Authed {
            account,
            limits,
            _slot: slot,
        }
    }

    /// Run blocking store work off the reactor, charged to this user's
    /// share of the blocking pool (`crate::work`).
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> cove_store::Result<T> + Send + 'static,
    ) -> cove_store::Result<T> {
        crate::work::store(crate::work::Lane::User(self.account.email()), f).await
    }

    pub fn account(&self) -> Arc<Account> {
        self.account.clone()
    }

    /// The user's limits (each 0: none).
    pub fn quota(&self) -> cove_store::Quota {
        self.limits
    }
}
