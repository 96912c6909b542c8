//! What every protocol's listener shares: the accept loop, session ids, and
//! the count of open connections per client address.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Open connections, in all and per client address (or per user).
#[derive(Default)]
pub struct ConnectionCount<K: std::hash::Hash + Eq + Clone = IpAddr> {
    open: Mutex<HashMap<K, usize>>,
}

/// Releases its slot when the connection ends, however it ends.
pub struct ConnectionSlot<K: std::hash::Hash + Eq + Clone = IpAddr> {
    count: Arc<ConnectionCount<K>>,
    key: K,
    /// A client session: counted in `cove_sessions_open` while it lasts.
    _session: Option<crate::metrics::OpenSession>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    TooManyInAll,
    TooManyForKey,
}

impl Refused {
    pub fn text(self) -> &'static str {
        match self {
            Refused::TooManyInAll => "Too many connections, try again later",
            Refused::TooManyForKey => "Too many connections from your address",
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> ConnectionCount<K> {
    pub fn new() -> Arc<Self> {
        Arc::new(ConnectionCount {
            open: Mutex::new(HashMap::new()),
        })
    }

    pub fn acquire(
        self: &Arc<Self>,
        key: K,
        max_total: usize,
        max_per_key: usize,
    ) -> Result<ConnectionSlot<K>, Refused> {
        let mut map = self.open.lock().map_err(|_| Refused::TooManyInAll)?;
        let total: usize = map.values().sum();
        if total >= max_total {
            return Err(Refused::TooManyInAll);
        }
        let n = map.entry(key.clone()).or_insert(0);
        if *n >= max_per_key {
            return Err(Refused::TooManyForKey);
        }
        *n += 1;
        Ok(ConnectionSlot {
            count: self.clone(),
            key,
            _session: None,
        })
    }
}

impl<K: std::hash::Hash + Eq + Clone> Drop for ConnectionSlot<K> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.count.open.lock()
            && let Some(n) = map.get_mut(&self.key)
        {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// Take a connection slot for `peer`, or tell the client why not (one
/// protocol line, e.g. `421 4.7.0` or `* BYE [UNAVAILABLE]`, followed by
/// the reason) and log it.
pub async fn admit(
    proto: &str,
    count: &Arc<ConnectionCount>,
    tcp: &mut TcpStream,
    peer: SocketAddr,
    max_total: usize,
    max_per_ip: usize,
    refusal_prefix: &str,
) -> Option<ConnectionSlot> {
    match count.acquire(peer.ip(), max_total, max_per_ip) {
        Ok(mut slot) => {
            slot._session =
                crate::metrics::Proto::from_name(proto).map(crate::metrics::OpenSession::new);
            Some(slot)
        }
        Err(why) => {
            tracing::warn!(peer = %peer, "{}; {proto} connection refused", why.text());
            let line = format!("{refusal_prefix} {}\r\n", why.text());
            let _ = tokio::io::AsyncWriteExt::write_all(tcp, line.as_bytes()).await;
            None
        }
    }
}

static SESSION_IDS: AtomicU64 = AtomicU64::new(1);

/// Sessions the server waits for at shutdown.
pub type Sessions = Arc<Mutex<JoinSet<()>>>;

/// Accept connections until shutdown; each runs `serve(stream, peer, id)`
/// as a task in `sessions`. With `proxy_protocol`, a connection from a
/// trusted proxy first gives the client's address in a PROXY header
/// (server/src/proxy.rs), and `peer` is that client.
pub async fn accept_loop<F, Fut>(
    proto: &'static str,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    sessions: Sessions,
    proxy_protocol: bool,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let serve = Arc::new(serve);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: wait a little instead of spinning.
                tracing::warn!(error = %e, "{proto} accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let id = SESSION_IDS.fetch_add(1, Ordering::Relaxed);
        let serve = serve.clone();
        let task = async move {
            let mut tcp = tcp;
            let mut peer = peer;
            if proxy_protocol && crate::proxy::is_trusted(peer.ip()) {
                match crate::proxy::read_header(&mut tcp).await {
                    Ok(Some(client)) => {
                        tracing::debug!(session = id, proxy = %peer, peer = %client, "{proto} connection through a trusted proxy");
                        peer = client;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(session = id, proxy = %peer, "{proto}: {e}; connection closed");
                        return;
                    }
                }
            }
            serve(tcp, peer, id).await
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

/// The acceptor a listener's connections start TLS with: `Some(None)` on
/// a plain listener, `None` on an implicit-TLS listener without TLS (the
/// connection is dropped).
pub fn implicit_tls(
    implicit: bool,
    tls: Option<&tokio_rustls::TlsAcceptor>,
) -> Option<Option<&tokio_rustls::TlsAcceptor>> {
    match (implicit, tls) {
        (false, _) => Some(None),
        (true, Some(t)) => Some(Some(t)),
        (true, None) => None,
    }
}

/// What [`open`] needs to know of a protocol's listener.
pub struct Admission<'a> {
    /// `imap`, `pop3`: names the connection in log lines (`imaps`, `pop3s`
    /// with implicit TLS).
    pub proto: &'a str,
    pub count: &'a Arc<ConnectionCount>,
    pub max_total: usize,
    pub max_per_ip: usize,
    /// The start of the line a refused client gets (`* BYE [UNAVAILABLE]`).
    pub refusal_prefix: &'a str,
    /// `Some` for a listener with implicit TLS (imaps, pop3s).
    pub implicit_tls: Option<&'a tokio_rustls::TlsAcceptor>,
    /// How long that handshake may take.
    pub handshake_timeout: std::time::Duration,
}

/// Admit a connection (the connection limits) and, for implicit TLS, run
/// the handshake (`handshake_timeout` at most). `None`: refused or failed,
/// already said.
pub async fn open(
    a: Admission<'_>,
    mut tcp: TcpStream,
    peer: SocketAddr,
    id: u64,
) -> Option<(ConnectionSlot, crate::conn::Conn)> {
    let slot = admit(
        a.proto,
        a.count,
        &mut tcp,
        peer,
        a.max_total,
        a.max_per_ip,
        a.refusal_prefix,
    )
    .await?;
    let Some(acceptor) = a.implicit_tls else {
        return Some((slot, crate::conn::Conn::Plain(tcp)));
    };
    let proto = a.proto;
    match crate::conn::handshake(acceptor, tcp, a.handshake_timeout).await {
        Ok(tls) => Some((slot, crate::conn::Conn::Tls(Box::new(tls)))),
        Err(e) => {
            tracing::info!(session = id, peer = %peer, error = %e, "{proto}s TLS handshake failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_limits_per_key_and_in_total() {
        let count: Arc<ConnectionCount> = ConnectionCount::new();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let s1 = count.acquire(a, 3, 2).unwrap();
        let _s2 = count.acquire(a, 3, 2).unwrap();
        assert_eq!(count.acquire(a, 3, 2).err(), Some(Refused::TooManyForKey));
        let _s3 = count.acquire(b, 3, 2).unwrap();
        assert_eq!(count.acquire(b, 3, 2).err(), Some(Refused::TooManyInAll));
        drop(s1);
        assert!(
            count.acquire(a, 3, 2).is_ok(),
            "a slot is released when its connection ends"
        );
    }
}
