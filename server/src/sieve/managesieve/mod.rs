//! ManageSieve (RFC 5804): users list, upload, check and activate their
//! Sieve scripts (Roundcube's managesieve plugin, Thunderbird's sieve
//! add-on, `sieve-connect`). Its own listener (4190 in the embedded
//! defaults), STARTTLS and implicit TLS, AUTHENTICATE PLAIN through the
//! one authentication service with IMAP's plaintext rule and penalties.
//!
//! `command` is the wire (lines and literals in, typed commands out, no
//! sockets); `session` is the connection.

pub mod command;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use cove_store::Store;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::{SieveConfig, SieveEngine};
use crate::listener::{self, ConnectionCount, Sessions};

/// The SIEVE capability: the extensions a script may require.
pub const SIEVE_EXTENSIONS: &str = "fileinto envelope encoded-character comparator-i;ascii-numeric \
comparator-i;ascii-casemap comparator-i;octet body copy relational date index duplicate variables \
imap4flags include reject ereject subaddress vacation vacation-seconds mailbox environment \
editheader foreverypart mime extracttext regex ihave enotify";

/// What every ManageSieve session shares.
pub struct ManageSieveContext {
    pub store: Arc<Store>,
    pub config: SieveConfig,
    pub sieve: Arc<SieveEngine>,
    pub hostname: String,
    pub tls: Option<TlsAcceptor>,
    pub shutdown: watch::Receiver<bool>,
    pub auth: Arc<crate::auth::Authenticator>,
    connections: Arc<ConnectionCount>,
}

impl ManageSieveContext {
    pub fn new(
        store: Arc<Store>,
        sieve: Arc<SieveEngine>,
        hostname: String,
        tls: Option<TlsAcceptor>,
        shutdown: watch::Receiver<bool>,
        auth: Arc<crate::auth::Authenticator>,
    ) -> Self {
        ManageSieveContext {
            store,
            config: sieve.config().clone(),
            sieve,
            hostname,
            tls,
            shutdown,
            auth,
            connections: ConnectionCount::new(),
        }
    }
}

/// The listener's name in logs.
fn proto_name(implicit_tls: bool) -> &'static str {
    if implicit_tls {
        "managesieve-tls"
    } else {
        "managesieve"
    }
}

/// Accept ManageSieve connections until shutdown; `implicit_tls` for the
/// TLS listener.
pub async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<ManageSieveContext>,
    sessions: Sessions,
    implicit_tls: bool,
) {
    let shutdown = ctx.shutdown.clone();
    let proto = if implicit_tls {
        "managesieve-tls"
    } else {
        "managesieve"
    };
    listener::accept_loop(
        proto,
        listener,
        shutdown,
        sessions,
        false,
        move |tcp, peer, id| serve_connection(ctx.clone(), tcp, peer, id, implicit_tls),
    )
    .await;
}

async fn serve_connection(
    ctx: Arc<ManageSieveContext>,
    tcp: TcpStream,
    peer: SocketAddr,
    id: u64,
    implicit_tls: bool,
) {
    let Some(tls) = listener::implicit_tls(implicit_tls, ctx.tls.as_ref()) else {
        return;
    };
    let admission = listener::Admission {
        proto: "managesieve",
        count: &ctx.connections,
        max_total: ctx.config.max_connections,
        max_per_ip: ctx.config.max_connections_per_ip,
        refusal_prefix: "BYE (TRYLATER)",
        implicit_tls: tls,
        handshake_timeout: std::time::Duration::from_secs(ctx.config.handshake_timeout_secs),
    };
    let Some((_slot, conn)) = listener::open(admission, tcp, peer, id).await else {
        return;
    };
    tracing::debug!(session = id, peer = %peer, "managesieve connection");
    session::Session::new(ctx, conn, peer, id).run().await;
}

/// Bind the `[sieve]` listeners and spawn their accept loops.
pub async fn start(
    ctx: Arc<ManageSieveContext>,
    sessions: &Sessions,
    loops: &mut tokio::task::JoinSet<()>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let config = ctx.config.clone();
    for (addrs, implicit_tls, key) in [
        (&config.listen, false, "listen"),
        (&config.tls_listen, true, "tls_listen"),
    ] {
        for addr in addrs {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("[sieve] {key}: cannot bind {addr}"))?;
            let proto = proto_name(implicit_tls);
            tracing::info!("{proto} listening on {}", listener.local_addr()?);
            loops.spawn(accept_loop(
                listener,
                ctx.clone(),
                sessions.clone(),
                implicit_tls,
            ));
        }
    }
    Ok(())
}
