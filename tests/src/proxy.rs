//! A TCP proxy a test can cut: the link between two replicating nodes.
//!
//! Each node's `[[replication.peers]] address` points at a proxy the test
//! owns. The proxy listens before the nodes start (so the address is known
//! when their configuration is written) and learns where to forward once
//! the peer has logged its replication address ([`Proxy::forward_to`]).
//!
//! [`Proxy::cut`] shuts down every forwarded connection at once (both
//! directions, both sockets) and then either refuses new connections
//! (accepts and closes them at once: the connector sees the link fail) or
//! holds them (accepts and never answers: the connector waits for its own
//! timeout). [`Proxy::heal`] forwards again; held connections are closed
//! then, so their owners retry on a working link.
//!
//! Plain threads and blocking sockets: a handful of connections, and a test
//! harness without an async runtime.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What a cut link does with new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partition {
    /// Accept and close at once.
    Refuse,
    /// Accept and keep open without a byte either way, until healed.
    Hold,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forward,
    Cut(Partition),
}

struct State {
    target: Option<SocketAddr>,
    mode: Mode,
    /// Bumped by every cut: a connection accepted before a cut and
    /// registered after it is closed instead.
    epoch: u64,
    next_id: u64,
    /// Both sockets of each live forwarded connection (clones, for
    /// shutting them down).
    live: Vec<(u64, TcpStream, TcpStream)>,
    held: Vec<TcpStream>,
}

struct Inner {
    state: Mutex<State>,
    closed: AtomicBool,
    /// Bytes forwarded, both directions, since the proxy started.
    bytes: AtomicU64,
    /// Connections forwarded since the proxy started.
    forwarded: AtomicU64,
}

impl Inner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        }
    }
}

/// A cuttable TCP proxy on 127.0.0.1. Dropping it closes everything.
pub struct Proxy {
    addr: SocketAddr,
    inner: Arc<Inner>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listen on 127.0.0.1 (a port of the system's choosing). Until
    /// [`forward_to`](Proxy::forward_to), connections are refused.
    pub fn bind() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                target: None,
                mode: Mode::Forward,
                epoch: 0,
                next_id: 0,
                live: Vec::new(),
                held: Vec::new(),
            }),
            closed: AtomicBool::new(false),
            bytes: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
        });
        let accept_inner = inner.clone();
        let accept = std::thread::spawn(move || accept_loop(listener, accept_inner));
        Proxy {
            addr,
            inner,
            accept: Some(accept),
        }
    }

    /// Where the nodes connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Forward new connections to `target` (connections already forwarded
    /// keep their old target).
    pub fn forward_to(&self, target: SocketAddr) {
        self.inner.state().target = Some(target);
    }

    /// Cut every forwarded connection now; new ones are refused or held.
    pub fn cut(&self, how: Partition) {
        let mut s = self.inner.state();
        s.mode = Mode::Cut(how);
        s.epoch += 1;
        for (_, a, b) in s.live.drain(..) {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }

    /// Forward again; connections held meanwhile are closed.
    pub fn heal(&self) {
        let mut s = self.inner.state();
        s.mode = Mode::Forward;
        for h in s.held.drain(..) {
            let _ = h.shutdown(Shutdown::Both);
        }
    }

    /// Bytes forwarded so far, both directions together.
    pub fn bytes(&self) -> u64 {
        self.inner.bytes.load(Ordering::Relaxed)
    }

    /// Connections forwarded so far.
    pub fn forwarded(&self) -> u64 {
        self.inner.forwarded.load(Ordering::Relaxed)
    }

    /// Connections being forwarded now.
    pub fn live(&self) -> usize {
        self.inner.state().live.len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.cut(Partition::Refuse);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    for conn in listener.incoming() {
        if inner.closed.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = conn else { continue };
        let (target, epoch) = {
            let mut s = inner.state();
            match (s.mode, s.target) {
                (Mode::Cut(Partition::Hold), _) => {
                    s.held.push(client);
                    continue;
                }
                (Mode::Cut(Partition::Refuse), _) | (Mode::Forward, None) => {
                    drop(s);
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                (Mode::Forward, Some(t)) => (t, s.epoch),
            }
        };
        let inner = inner.clone();
        std::thread::spawn(move || forward(client, target, epoch, inner));
    }
}

/// Connect to the target and pump bytes both ways until either side ends.
fn forward(client: TcpStream, target: SocketAddr, epoch: u64, inner: Arc<Inner>) {
    let Ok(upstream) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let clones = (client.try_clone(), upstream.try_clone());
    let (Ok(client2), Ok(upstream2)) = clones else {
        let _ = client.shutdown(Shutdown::Both);
        let _ = upstream.shutdown(Shutdown::Both);
        return;
    };
    let id = {
        let mut s = inner.state();
        if s.epoch != epoch || s.mode != Mode::Forward {
            // Cut while we were connecting.
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
            return;
        }
        let (Ok(c), Ok(u)) = (client.try_clone(), upstream.try_clone()) else {
            return;
        };
        s.next_id += 1;
        let id = s.next_id;
        s.live.push((id, c, u));
        id
    };
    inner.forwarded.fetch_add(1, Ordering::Relaxed);
    let up_inner = inner.clone();
    let up = std::thread::spawn(move || pump(client, upstream2, &up_inner));
    pump(upstream, client2, &inner);
    let _ = up.join();
    inner.state().live.retain(|(i, _, _)| *i != id);
}

/// Copy `from` to `to`. End of stream passes on as a half close; an error
/// either way closes both sockets.
fn pump(mut from: TcpStream, mut to: TcpStream, inner: &Inner) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                inner.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
