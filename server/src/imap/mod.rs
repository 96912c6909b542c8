//! IMAP4rev1 (RFC 3501) and its everyday extensions: how mail clients read
//! mail from cove.
//!
//! The wire is imap-codec's: `framing` reads a whole command (its lines and
//! literals) and imap-codec decodes it into a typed `Command`; responses are
//! written by `response`. `session` is the connection's state machine
//! (not authenticated, authenticated, selected); each group of commands has
//! its own file; `view` is a selected mailbox as one session sees it, with the
//! changes other sessions made announced only where RFC 3501 §7.4.1 allows.

mod auth;
mod copy_move;
pub mod extended;
pub(crate) mod fetch;
pub mod framing;
mod list;
mod list_pattern;
mod mailboxes;
pub mod mime;
mod response;
pub(crate) mod search;
mod session;
mod store_flags;
mod view;
mod waiting;

use std::net::SocketAddr;
use std::sync::Arc;

use cove_store::Store;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::ImapConfig;
use crate::conn::Conn;
use crate::listener::{self, ConnectionCount, Sessions};
use crate::reload::Live;

/// What every IMAP session shares.
pub struct ImapContext {
    pub store: Arc<Store>,
    pub config: ImapConfig,
    pub hostname: String,
    pub tls: Option<TlsAcceptor>,
    pub shutdown: watch::Receiver<bool>,
    connections: Arc<ConnectionCount>,
    per_user: Arc<ConnectionCount<i64>>,
    /// Every login goes through it (penalties, password threads).
    auth: Arc<crate::auth::Authenticator>,
    /// Per mailbox, the lowest UID no session of this server has claimed as
    /// \Recent yet (a cache in front of the index's `first_recent`).
    recent_floor:
        Arc<std::sync::Mutex<std::collections::HashMap<cove_store::MailboxGuid, cove_store::Uid>>>,
}

impl ImapContext {
    /// UIDs below this were already claimed as \Recent by some session (0:
    /// nothing known, ask the index).
    pub fn recent_floor(&self, mailbox: cove_store::MailboxGuid) -> cove_store::Uid {
        self.recent_floor
            .lock()
            .ok()
            .and_then(|m| m.get(&mailbox).copied())
            .unwrap_or(0)
    }

    pub fn raise_recent_floor(&self, mailbox: cove_store::MailboxGuid, floor: cove_store::Uid) {
        if let Ok(mut m) = self.recent_floor.lock() {
            let f = m.entry(mailbox).or_insert(0);
            *f = (*f).max(floor);
        }
    }
}

impl ImapContext {
    pub fn new(
        store: Arc<Store>,
        config: ImapConfig,
        hostname: String,
        tls: Option<TlsAcceptor>,
        shutdown: watch::Receiver<bool>,
        auth: Arc<crate::auth::Authenticator>,
    ) -> Self {
        ImapContext {
            store,
            config,
            hostname,
            tls,
            shutdown,
            connections: ConnectionCount::new(),
            per_user: ConnectionCount::new(),
            auth,
            recent_floor: Arc::default(),
        }
    }
}

/// A reload gives the sessions accepted afterwards its limits; connection
/// counts and the like stay shared.
impl crate::reload::Reconfigure for ImapContext {
    type Section = ImapConfig;

    fn with_config(&self, config: ImapConfig) -> Self {
        ImapContext {
            store: self.store.clone(),
            config,
            hostname: self.hostname.clone(),
            tls: self.tls.clone(),
            shutdown: self.shutdown.clone(),
            connections: self.connections.clone(),
            per_user: self.per_user.clone(),
            auth: self.auth.clone(),
            recent_floor: self.recent_floor.clone(),
        }
    }
}

/// Accept IMAP connections until shutdown; `implicit_tls` for imaps. Each
/// connection gets the context in force when it is accepted (a reload
/// replaces it).
pub async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<Live<ImapContext>>,
    sessions: Sessions,
    implicit_tls: bool,
) {
    let shutdown = ctx.get().shutdown.clone();
    let proto = if implicit_tls { "imaps" } else { "imap" };
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
    ctx: Arc<ImapContext>,
    tcp: TcpStream,
    peer: SocketAddr,
    id: u64,
    implicit_tls: bool,
) {
    // Admission and the TLS handshake run in an allocation of their own,
    // freed before the session starts: the task, which lives as long as
    // the connection, holds only what the session needs.
    let Some((_slot, conn)) = Box::pin(open_connection(&ctx, tcp, peer, id, implicit_tls)).await
    else {
        return;
    };
    tracing::debug!(session = id, peer = %peer, "imap connection");
    session::Session::new(ctx, conn, peer, id).run().await;
}

/// Admit a connection (the connection limits) and, for imaps, run the TLS
/// handshake.
async fn open_connection(
    ctx: &ImapContext,
    tcp: TcpStream,
    peer: SocketAddr,
    id: u64,
    implicit_tls: bool,
) -> Option<(listener::ConnectionSlot, Conn)> {
    let tls = if implicit_tls {
        Some(ctx.tls.as_ref()?)
    } else {
        None
    };
    let admission = listener::Admission {
        proto: "imap",
        count: &ctx.connections,
        max_total: ctx.config.max_connections,
        max_per_ip: ctx.config.max_connections_per_ip,
        refusal_prefix: "* BYE [UNAVAILABLE]",
        implicit_tls: tls,
        handshake_timeout: std::time::Duration::from_secs(ctx.config.handshake_timeout_secs),
    };
    listener::open(admission, tcp, peer, id).await
}
