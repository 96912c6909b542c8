//! IMAP4rev1 (RFC 3501) and its everyday extensions: how mail clients read
//! mail from cove.
//!
//! Three parts, as for every protocol of cove:
//! - the wire: `framing` reads a whole command (its lines and literals),
//!   `command` decodes it (with imap-codec, and `extended` for what
//!   imap-codec cannot read) into a typed command; `response` and
//!   `outcome` write replies, response codes being typed values;
//! - the session (`session`): the connection's state machine (not
//!   authenticated, authenticated, selected, logout), which checks each
//!   command against the command table (`command::Command::spec`: valid
//!   states, and what may be announced after it) and hands the handler its
//!   state typed; `connection` is what handlers write to;
//! - the handlers, one file per command or close pair, each citing its RFC
//!   section. `view` is a selected mailbox as one session sees it, and
//!   `announce` tells the session of other sessions' changes where RFC 3501
//!   §7.4.1 allows.

mod announce;
mod append;
mod auth;
mod capability;
mod close;
pub mod command;
mod compress;
mod condstore;
mod connection;
mod copy_move;
mod create;
mod delete_rename;
mod enable;
pub mod esearch;
mod expunge;
pub mod extended;
pub(crate) mod fetch;
pub mod framing;
mod idle;
mod list;
mod list_pattern;
pub mod mime;
pub mod objectid;
mod outcome;
mod quota;
mod response;
pub mod revision;
mod savedate;
pub(crate) mod search;
pub mod searchres;
mod select;
mod session;
pub mod sort;
mod sort_cache;
mod sort_order;
pub(crate) mod sort_thread;
mod starttls;
mod status;
mod store_flags;
mod subscribe;
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
    /// Prepared SORT / THREAD keys by content id (sized when the server
    /// starts: a reload keeps it).
    pub sort_keys: Arc<sort_cache::SortKeyCache>,
    /// The header fields SEARCH SUBJECT/FROM/TO/CC/BCC read, shared by
    /// every session (search.rs `SearchFields`).
    pub(crate) search_fields: Arc<sort_cache::ContentCache<search::SearchFields>>,
    /// Whole mailboxes in the order of the SORT criteria asked of them,
    /// shared by every session and updated by what changed since
    /// (`sort_order.rs`).
    pub(crate) sort_orders: Arc<sort_order::SortOrders>,
    /// The mailbox snapshots selected views share (`view.rs`).
    pub snapshots: Arc<view::Snapshots>,
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
        let sort_keys = Arc::new(sort_cache::SortKeyCache::new(config.sort_key_cache_bytes));
        let search_fields = Arc::new(sort_cache::ContentCache::new(
            config.search_field_cache_bytes,
        ));
        let sort_orders = Arc::new(sort_order::SortOrders::new(config.sort_order_cache_bytes));
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
            sort_keys,
            search_fields,
            sort_orders,
            snapshots: Arc::default(),
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
            sort_keys: self.sort_keys.clone(),
            search_fields: self.search_fields.clone(),
            sort_orders: self.sort_orders.clone(),
            snapshots: self.snapshots.clone(),
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
