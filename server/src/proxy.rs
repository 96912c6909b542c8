//! Clients behind a proxy: the PROXY protocol (haproxy's spec, versions 1
//! and 2) from the operator's trusted proxies.
//!
//! Behind nginx's mail proxy every client arrives from the proxy's address.
//! Per-IP connection limits, login penalties, log lines that fail2ban reads
//! and metrics would all see one client, the proxy. A proxy that speaks
//! the PROXY protocol sends the real client's address first on each
//! connection; cove takes it from addresses listed in `trusted_proxies`
//! only, on listeners that set `proxy_protocol = true`, and uses it
//! everywhere the client's address is used.
//!
//! - A listener with `proxy_protocol = true` requires the header from a
//!   trusted address (the protocol cannot be guessed: IMAP, POP3 and LMTP
//!   servers speak first) within [`HEADER_TIMEOUT`]; anything else closes
//!   the connection with a log line. Clients from other addresses connect
//!   directly as before.
//! - A PROXY header from anyone else is refused: each protocol recognises
//!   one where it expected a command ([`looks_like_header`]), logs it and
//!   closes the connection. Taking it would let any client choose the
//!   address its penalties and limits are counted against.
//! - A trusted proxy may send plaintext passwords (it terminated TLS with
//!   the client), as Dovecot's `login_trusted_networks` allows, whatever
//!   `allow_plaintext_auth` says for everyone else.
//! - A `LOCAL` header (the proxy's own health check) or one without an
//!   internet address keeps the proxy's address.
//!
//! The header is parsed by the `ppp` crate; this module reads exactly the
//! header's bytes from the socket (peeking first), so nothing the client
//! sends after it is consumed.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ppp::{HeaderResult, PartialResult, v1, v2};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// How long a trusted proxy has to send its header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest header read: a v1 line is at most 107 bytes; a v2 header is 16
/// bytes and its addresses and TLVs (nginx and haproxy send well under 1 KiB).
const MAX_HEADER: usize = 4096;

/// The networks whose connections may carry a PROXY header and send
/// plaintext passwords.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<(IpAddr, u8)>,
}

impl TrustedProxies {
    /// Parse CIDRs (`10.0.0.0/8`, `2001:db8::/32`) or single addresses.
    pub fn parse(list: &[String]) -> Result<TrustedProxies, String> {
        let mut nets = Vec::with_capacity(list.len());
        for item in list {
            let (addr, len) = match item.split_once('/') {
                Some((a, l)) => (a, Some(l)),
                None => (item.as_str(), None),
            };
            let ip: IpAddr = addr
                .trim()
                .parse()
                .map_err(|_| format!("trusted_proxies: {item:?} is not an address or CIDR"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len = match len {
                Some(l) => l
                    .trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|l| *l <= max)
                    .ok_or_else(|| format!("trusted_proxies: bad prefix length in {item:?}"))?,
                None => max,
            };
            nets.push((ip, len));
        }
        Ok(TrustedProxies { nets })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|&(net, len)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), len),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), len),
            _ => false,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

fn prefix_eq(a: &[u8], b: &[u8], len: u8) -> bool {
    let (bytes, bits) = (usize::from(len / 8), len % 8);
    if a[..bytes] != b[..bytes] {
        return false;
    }
    bits == 0 || {
        let mask = 0xffu8 << (8 - bits);
        a[bytes] & mask == b[bytes] & mask
    }
}

static TRUSTED: RwLock<Option<Arc<TrustedProxies>>> = RwLock::new(None);

/// Set the trusted proxies (at start, and again on a reload).
pub fn set_trusted(t: TrustedProxies) {
    if let Ok(mut g) = TRUSTED.write() {
        *g = Some(Arc::new(t));
    }
}

/// Is `ip` a trusted proxy?
pub fn is_trusted(ip: IpAddr) -> bool {
    TRUSTED
        .read()
        .ok()
        .and_then(|g| g.clone())
        .is_some_and(|t| t.contains(ip))
}

/// Does a line where a command was expected start a PROXY v1 header? (A
/// v2 header starts with an empty line and binary bytes, which every
/// protocol already answers as bad commands.)
pub fn looks_like_header(line: &[u8]) -> bool {
    line.starts_with(b"PROXY ")
}

/// The log line for a PROXY header where none was expected: from an
/// address that is not a trusted proxy, or on a listener without
/// `proxy_protocol`.
pub fn refused_unexpected(proto: &str, session: u64, peer: SocketAddr) {
    tracing::warn!(session, peer = %peer, "{proto}: a PROXY protocol header where none is accepted (the address is not in trusted_proxies, or the listener has no proxy_protocol); connection refused");
}

/// Read the PROXY header a trusted proxy sends first. `Ok(Some(addr))` is
/// the client's address; `Ok(None)`: the header names none (LOCAL, UNKNOWN,
/// a unix socket), keep the proxy's.
pub async fn read_header(tcp: &mut TcpStream) -> Result<Option<SocketAddr>, String> {
    tokio::time::timeout(HEADER_TIMEOUT, read_header_inner(tcp))
        .await
        .map_err(|_| format!("no PROXY header within {HEADER_TIMEOUT:?}"))?
}

async fn read_header_inner(tcp: &mut TcpStream) -> Result<Option<SocketAddr>, String> {
    let mut buf = vec![0u8; MAX_HEADER];
    loop {
        let n = tcp
            .peek(&mut buf)
            .await
            .map_err(|e| format!("reading the PROXY header: {e}"))?;
        if n == 0 {
            return Err("the proxy closed the connection before its header".into());
        }
        let parsed = HeaderResult::parse(&buf[..n]);
        if parsed.is_incomplete() {
            if n == buf.len() {
                return Err("PROXY header too long".into());
            }
            // More of the header is on its way: peek again once it came.
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        let (len, client) = match parsed {
            HeaderResult::V1(Ok(h)) => (h.header.len(), v1_client(&h.addresses)),
            HeaderResult::V2(Ok(h)) => (h.len(), v2_client(&h)),
            HeaderResult::V1(Err(e)) => return Err(format!("bad PROXY v1 header: {e}")),
            HeaderResult::V2(Err(e)) => return Err(format!("bad PROXY v2 header: {e}")),
        };
        let mut header = vec![0u8; len];
        tcp.read_exact(&mut header)
            .await
            .map_err(|e| format!("reading the PROXY header: {e}"))?;
        return Ok(client);
    }
}

fn v1_client(a: &v1::Addresses) -> Option<SocketAddr> {
    match a {
        v1::Addresses::Tcp4(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        v1::Addresses::Tcp6(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        v1::Addresses::Unknown => None,
    }
}

fn v2_client(h: &v2::Header<'_>) -> Option<SocketAddr> {
    if h.command == v2::Command::Local {
        return None;
    }
    match h.addresses {
        v2::Addresses::IPv4(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        v2::Addresses::IPv6(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn cidrs_match_their_addresses_only() {
        let t = TrustedProxies::parse(&[
            "10.1.0.0/16".into(),
            "192.0.2.7".into(),
            "2001:db8::/32".into(),
            "172.16.0.0/12".into(),
        ])
        .unwrap();
        for ok in [
            "10.1.2.3",
            "192.0.2.7",
            "2001:db8:1::5",
            "::ffff:10.1.9.9",
            "172.31.1.1",
        ] {
            assert!(t.contains(ok.parse().unwrap()), "{ok}");
        }
        for no in [
            "10.2.0.1",
            "192.0.2.8",
            "2001:db9::1",
            "172.32.0.1",
            "127.0.0.1",
        ] {
            assert!(!t.contains(no.parse().unwrap()), "{no}");
        }
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(TrustedProxies::parse(&["example.com".into()]).is_err());
    }

    async fn through(header: &[u8], rest: &[u8]) -> (Result<Option<SocketAddr>, String>, Vec<u8>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (h, r) = (header.to_vec(), rest.to_vec());
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            // The header in two pieces, as a slow proxy might send it.
            let cut = h.len() / 2;
            c.write_all(&h[..cut]).await.unwrap();
            c.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            c.write_all(&h[cut..]).await.unwrap();
            c.write_all(&r).await.unwrap();
            c.shutdown().await.unwrap();
        });
        let (mut tcp, _) = listener.accept().await.unwrap();
        let got = read_header(&mut tcp).await;
        let mut after = Vec::new();
        tcp.read_to_end(&mut after).await.unwrap();
        client.await.unwrap();
        (got, after)
    }

    #[tokio::test]
    async fn v1_and_v2_headers_give_the_client_and_leave_what_follows() {
        let (got, after) = through(
            b"PROXY TCP4 203.0.113.9 10.0.0.1 51000 143\r\n",
            b"a1 NOOP\r\n",
        )
        .await;
        assert_eq!(got.unwrap(), Some("203.0.113.9:51000".parse().unwrap()));
        assert_eq!(after, b"a1 NOOP\r\n");

        let v2: Vec<u8> = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (
                "[2001:db8::9]:4000".parse::<SocketAddr>().unwrap(),
                "[2001:db8::1]:110".parse::<SocketAddr>().unwrap(),
            ),
        )
        .build()
        .unwrap();
        let (got, after) = through(&v2, b"USER x\r\n").await;
        assert_eq!(got.unwrap(), Some("[2001:db8::9]:4000".parse().unwrap()));
        assert_eq!(after, b"USER x\r\n");

        let (got, _) = through(b"PROXY UNKNOWN\r\n", b"").await;
        assert_eq!(got.unwrap(), None);
        let (got, _) = through(b"HELLO there\r\n", b"").await;
        assert!(got.is_err());
    }

    #[test]
    fn a_header_is_recognised_where_a_command_was_expected() {
        assert!(looks_like_header(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2"));
        assert!(!looks_like_header(b"a1 LOGIN x y"));
    }
}
