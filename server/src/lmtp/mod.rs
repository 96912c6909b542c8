//! LMTP (RFC 2033): how MTAs deliver into cove.

pub mod command;
pub mod data;
mod reply;
mod session;
mod sync_delivery;

use std::net::SocketAddr;
use std::sync::Arc;

use cove_store::Store;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::LmtpConfig;
use crate::conn::Conn;
use crate::listener::{self, ConnectionCount, Sessions};

/// What every LMTP session shares.
pub struct LmtpContext {
    pub store: Arc<Store>,
    pub config: LmtpConfig,
    pub hostname: String,
    pub tls: Option<TlsAcceptor>,
    pub shutdown: watch::Receiver<bool>,
    connections: Arc<ConnectionCount>,
    /// `[replication] sync_delivery`: answer 250 only once a peer holds
    /// the message, or after this long (then asynchronously, logged).
    pub sync_delivery: Option<Arc<sync_delivery::SyncDelivery>>,
    /// The replicator, when there is one: until it has swapped user lists
    /// with its peer, an unknown address gets 450 4.1.1, not 550 5.1.1.
    pub replicator: Option<Arc<cove_sync::replicator::Replicator>>,
    /// `[sieve]`: scripts run per recipient before the 250.
    pub sieve: Option<Arc<crate::sieve::SieveEngine>>,
}

impl LmtpContext {
    pub fn new(
        store: Arc<Store>,
        config: LmtpConfig,
        hostname: String,
        tls: Option<TlsAcceptor>,
        shutdown: watch::Receiver<bool>,
        sync_delivery: Option<(Arc<cove_sync::replicator::Replicator>, std::time::Duration)>,
    ) -> Self {
        LmtpContext {
            store,
            config,
            hostname,
            tls,
            shutdown,
            connections: ConnectionCount::new(),
            sync_delivery: sync_delivery.map(|(replicator, timeout)| {
                Arc::new(sync_delivery::SyncDelivery::new(replicator, timeout))
            }),
            replicator: None,
            sieve: None,
        }
    }

    /// Run Sieve scripts at delivery.
    pub fn with_sieve(mut self, sieve: Option<Arc<crate::sieve::SieveEngine>>) -> Self {
        self.sieve = sieve;
        self
    }

    /// Know the replicator, for the rule on unknown addresses.
    pub fn with_replicator(
        mut self,
        replicator: Option<Arc<cove_sync::replicator::Replicator>>,
    ) -> Self {
        self.replicator = replicator;
        self
    }

    /// Whether an address unknown here is unknown everywhere: no peer, or
    /// user lists swapped with every peer since the link came up.
    pub fn users_complete(&self) -> bool {
        crate::cluster::lookup::users_complete(self.replicator.as_deref())
    }
}

/// A reload gives the sessions accepted afterwards its limits; connection
/// counts and the like stay shared.
impl crate::reload::Reconfigure for LmtpContext {
    type Section = LmtpConfig;

    fn with_config(&self, config: LmtpConfig) -> Self {
        LmtpContext {
            store: self.store.clone(),
            config,
            hostname: self.hostname.clone(),
            tls: self.tls.clone(),
            shutdown: self.shutdown.clone(),
            connections: self.connections.clone(),
            sync_delivery: self.sync_delivery.clone(),
            replicator: self.replicator.clone(),
            sieve: self.sieve.clone(),
        }
    }
}

/// Accept LMTP connections until shutdown.
/// Each connection gets the context in force when it is accepted (a
/// reload replaces it).
pub async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<crate::reload::Live<LmtpContext>>,
    sessions: Sessions,
) {
    let shutdown = ctx.get().shutdown.clone();
    let proxy_protocol = ctx.get().config.proxy_protocol;
    listener::accept_loop(
        "lmtp",
        listener,
        shutdown,
        sessions,
        proxy_protocol,
        move |tcp, peer, id| serve_connection(ctx.get(), tcp, peer, id),
    )
    .await;
}

async fn serve_connection(ctx: Arc<LmtpContext>, tcp: TcpStream, peer: SocketAddr, id: u64) {
    let mut tcp = tcp;
    let limits = (
        ctx.config.max_connections,
        ctx.config.max_connections_per_ip,
    );
    let Some(_slot) = listener::admit(
        "lmtp",
        &ctx.connections,
        &mut tcp,
        peer,
        limits.0,
        limits.1,
        "421 4.7.0",
    )
    .await
    else {
        return;
    };
    tracing::debug!(session = id, peer = %peer, "lmtp connection");
    session::Session::new(ctx.clone(), Conn::Plain(tcp), peer, id)
        .run()
        .await;
}
