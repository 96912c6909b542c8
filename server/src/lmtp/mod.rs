//! LMTP (RFC 2033): how MTAs deliver into cove.

mod command;
mod data;
mod reply;
mod session;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cove_store::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::config::LmtpConfig;
use crate::conn::Conn;

/// What every LMTP session shares.
pub struct LmtpContext {
    pub store: Arc<Store>,
    pub config: LmtpConfig,
    pub hostname: String,
    pub tls: Option<TlsAcceptor>,
    pub shutdown: watch::Receiver<bool>,
    connections: ConnectionCount,
}

impl LmtpContext {
    pub fn new(
        store: Arc<Store>,
        config: LmtpConfig,
        hostname: String,
        tls: Option<TlsAcceptor>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        LmtpContext {
            store,
            config,
            hostname,
            tls,
            shutdown,
            connections: ConnectionCount::default(),
        }
    }
}

/// Open connections, in all and per client address.
#[derive(Default)]
struct ConnectionCount {
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Releases its slot when the connection ends, however it ends.
struct ConnectionSlot<'a> {
    count: &'a ConnectionCount,
    ip: IpAddr,
}

impl ConnectionCount {
    fn acquire(
        &self,
        ip: IpAddr,
        max_total: usize,
        max_per_ip: usize,
    ) -> Result<ConnectionSlot<'_>, &'static str> {
        let mut map = self
            .per_ip
            .lock()
            .map_err(|_| "connection table poisoned")?;
        let total: usize = map.values().sum();
        if total >= max_total {
            return Err("Too many connections, try again later");
        }
        let n = map.entry(ip).or_insert(0);
        if *n >= max_per_ip {
            return Err("Too many connections from your address");
        }
        *n += 1;
        Ok(ConnectionSlot { count: self, ip })
    }
}

impl Drop for ConnectionSlot<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.count.per_ip.lock()
            && let Some(n) = map.get_mut(&self.ip)
        {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

static SESSION_IDS: AtomicU64 = AtomicU64::new(1);

/// Accept LMTP connections until shutdown; sessions are added to `sessions`
/// so that the server can wait for them.
pub async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<LmtpContext>,
    sessions: Arc<Mutex<JoinSet<()>>>,
) {
    let mut shutdown = ctx.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: wait a little instead of spinning.
                tracing::warn!(error = %e, "lmtp accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let ctx = ctx.clone();
        let task = async move {
            let id = SESSION_IDS.fetch_add(1, Ordering::Relaxed);
            serve_connection(ctx, tcp, peer, id).await;
        };
        match sessions.lock() {
            Ok(mut set) => {
                while set.try_join_next().is_some() {}
                set.spawn(task);
            }
            Err(_) => {
                tokio::spawn(task);
            }
        }
    }
}

async fn serve_connection(
    ctx: Arc<LmtpContext>,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    id: u64,
) {
    let slot = ctx.connections.acquire(
        peer.ip(),
        ctx.config.max_connections,
        ctx.config.max_connections_per_ip,
    );
    let _slot = match slot {
        Ok(s) => s,
        Err(why) => {
            tracing::warn!(peer = %peer, "{why}; lmtp connection refused");
            let mut tcp = tcp;
            let _ = tokio::io::AsyncWriteExt::write_all(
                &mut tcp,
                format!("421 4.7.0 {why}\r\n").as_bytes(),
            )
            .await;
            return;
        }
    };
    tracing::debug!(session = id, peer = %peer, "lmtp connection");
    session::Session::new(ctx.clone(), Conn::Plain(tcp), peer, id)
        .run()
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_limits_per_ip_and_in_total() {
        let count = ConnectionCount::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let s1 = count.acquire(a, 3, 2).unwrap();
        let _s2 = count.acquire(a, 3, 2).unwrap();
        assert_eq!(
            count.acquire(a, 3, 2).err(),
            Some("Too many connections from your address")
        );
        let _s3 = count.acquire(b, 3, 2).unwrap();
        assert_eq!(
            count.acquire(b, 3, 2).err(),
            Some("Too many connections, try again later")
        );
        drop(s1);
        assert!(
            count.acquire(a, 3, 2).is_ok(),
            "a slot is released when its connection ends"
        );
    }
}
