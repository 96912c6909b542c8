//! POP3 (RFC 1939) with CAPA and response codes (RFC 2449), STLS (RFC
//! 2595), AUTH PLAIN (RFC 5034) and implicit TLS: for the clients that
//! only download.
//!
//! `command` is the wire (a line in, a typed command out; `encode` turns
//! stored messages into dot-stuffed CRLF text); `session` is the
//! connection's state machine (AUTHORIZATION, TRANSACTION; UPDATE is the
//! QUIT that commits); `auth` and `transaction` hold the commands of each
//! state; `maildrop` is the INBOX as one session sees it, with its lock.
//!
//! What the design keeps (DESIGN.md, issue 5):
//! - UIDL is the message GUID, the same on every replica and after an
//!   index rebuild;
//! - a dropped connection deletes nothing: only QUIT in TRANSACTION runs
//!   the expunge;
//! - one POP3 session per user (`-ERR [IN-USE]`), never blocking IMAP;
//! - RETR and TOP read what the page cache holds on the session's task,
//!   with calls that cannot wait for the disk, and send CRLF messages
//!   without dots as read; the rest goes to the blocking pool, pipelined
//!   commands in one trip (`retrieval`).

mod auth;
pub mod command;
pub mod encode;
pub(crate) mod maildrop;
mod retrieval;
mod session;
mod transaction;

use std::net::SocketAddr;
use std::sync::Arc;

use cove_store::Store;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::Pop3Config;
use crate::listener::{self, ConnectionCount, Sessions};

pub use maildrop::CRLF_SIZE_KIND;

/// What every POP3 session shares.
pub struct Pop3Context {
    pub store: Arc<Store>,
    pub config: Pop3Config,
    pub hostname: String,
    pub tls: Option<TlsAcceptor>,
    pub shutdown: watch::Receiver<bool>,
    connections: Arc<ConnectionCount>,
    locks: Arc<maildrop::MaildropLocks>,
    /// Every login goes through it (penalties, password threads).
    auth: Arc<crate::auth::Authenticator>,
}

impl Pop3Context {
    pub fn new(
        store: Arc<Store>,
        config: Pop3Config,
        hostname: String,
        tls: Option<TlsAcceptor>,
        shutdown: watch::Receiver<bool>,
        auth: Arc<crate::auth::Authenticator>,
    ) -> Self {
        Pop3Context {
            store,
            config,
            hostname,
            tls,
            shutdown,
            connections: ConnectionCount::new(),
            locks: Arc::default(),
            auth,
        }
    }
}

/// A reload gives the sessions accepted afterwards its limits; connection
/// counts and the like stay shared.
impl crate::reload::Reconfigure for Pop3Context {
    type Section = Pop3Config;

    fn with_config(&self, config: Pop3Config) -> Self {
        Pop3Context {
            store: self.store.clone(),
            config,
            hostname: self.hostname.clone(),
            tls: self.tls.clone(),
            shutdown: self.shutdown.clone(),
            connections: self.connections.clone(),
            locks: self.locks.clone(),
            auth: self.auth.clone(),
        }
    }
}

/// Accept POP3 connections until shutdown; `implicit_tls` for pop3s.
pub async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<crate::reload::Live<Pop3Context>>,
    sessions: Sessions,
    implicit_tls: bool,
) {
    let shutdown = ctx.get().shutdown.clone();
    let proto = if implicit_tls { "pop3s" } else { "pop3" };
    let proxy_protocol = ctx.get().config.proxy_protocol;
    listener::accept_loop(
        proto,
        listener,
        shutdown,
        sessions,
        proxy_protocol,
        move |tcp, peer, id| serve_connection(ctx.get(), tcp, peer, id, implicit_tls),
    )
    .await;
}

async fn serve_connection(
    ctx: Arc<Pop3Context>,
    tcp: TcpStream,
    peer: SocketAddr,
    id: u64,
    implicit_tls: bool,
) {
    let Some(tls) = listener::implicit_tls(implicit_tls, ctx.tls.as_ref()) else {
        return;
    };
    let admission = listener::Admission {
        proto: "pop3",
        count: &ctx.connections,
        max_total: ctx.config.max_connections,
        max_per_ip: ctx.config.max_connections_per_ip,
        refusal_prefix: "-ERR [SYS/TEMP]",
        implicit_tls: tls,
        handshake_timeout: std::time::Duration::from_secs(ctx.config.handshake_timeout_secs),
    };
    let Some((_slot, conn)) = listener::open(admission, tcp, peer, id).await else {
        return;
    };
    tracing::debug!(session = id, peer = %peer, "pop3 connection");
    session::Session::new(ctx, conn, peer, id).run().await;
}

/// The one mapping of a store error to a POP3 `-ERR` line's text (RFC
/// 2449 §8 response codes, RFC 3206 SYS/TEMP and SYS/PERM).
pub fn store_error_text(e: &cove_store::Error) -> String {
    // What the client is not told, the log says.
    tracing::warn!(error = %e, "pop3: store failure");
    match e {
        cove_store::Error::InUse(_) => "[IN-USE] Mailbox is in use, try again later".into(),
        e if e.is_temporary() => "[SYS/TEMP] Temporary failure, try again later".into(),
        _ => "[SYS/PERM] The mailbox cannot be opened".into(),
    }
}
