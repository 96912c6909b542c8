//! Lookups for the MTA on `[mta] socketmap_listen`: Postfix's socketmap
//! protocol (socketmap_table(5)) and, on the same port, a line protocol
//! for Exim's `${readsocket}`.
//!
//! Socketmap: each request is one netstring `<len>:<map> <key>,` and is
//! answered with one netstring: `OK <value>`, `NOTFOUND `, `TEMP <reason>`
//! or `PERM <reason>`. Postfix keeps the connection for more requests.
//! A request that starts with a digit is a netstring; anything else is a
//! line.
//!
//! Line protocol (one request per line, LF or CRLF, one answer line each):
//!
//! | request                      | answers                                  |
//! |------------------------------|------------------------------------------|
//! | `domain example.com`         | `yes`, `no`                              |
//! | `mailbox alice@example.com`  | `yes`, `no`, `temp <reason>`             |
//! | `transport alice@example.com`| `lmtp <ip> <port>`, `no`, `temp <reason>`|
//!
//! and `error <reason>` for a request it does not understand.
//!
//! The maps, in both protocols:
//! - `domains` (Postfix `virtual_mailbox_domains`): OK when a pair holds
//!   the domain;
//! - `mailboxes` (`virtual_mailbox_maps`): OK when the user exists
//!   ([`lookup::mailbox`]); TEMP while it cannot be known yet, so that
//!   smtpd answers 450 and the sender retries instead of bouncing;
//! - `transport` (`transport_maps`): `lmtp:inet:IP:PORT` of the node that
//!   should take the user's mail now ([`Cluster::route`]); TEMP when no node
//!   of its pair is up, so the MTA queues and retries.
//!
//! Limits: a request (netstring payload or line) is at most
//! `max_request_length` bytes (the connection gets `PERM`/`error` and is
//! closed above it), a client silent for `timeout_secs` is closed, at most
//! `max_connections` at once. Keys are logged escaped (`{:?}`), cut to 200
//! characters.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cove_store::Address;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use super::lookup::{self, UserStatus, Users};
use super::{Cluster, Proto, Route};
use crate::config::MtaConfig;

/// One request, as parsed from the wire.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// A socketmap netstring's payload.
    Netstring(Vec<u8>),
    /// A line, without its end.
    Line(Vec<u8>),
}

/// What [`parse`] found at the head of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole request yet.
    Incomplete,
    /// A request and how many bytes it took.
    Request(Request, usize),
    /// Not a request: the reason (the connection is closed after saying so).
    Bad(&'static str),
}

/// Digits of a netstring length we read at most (a length above `max` is
/// refused long before).
const MAX_LENGTH_DIGITS: usize = 7;

/// Parse one request from `buf`; `max` is the longest payload or line.
pub fn parse(buf: &[u8], max: usize) -> Parsed {
    let Some(&first) = buf.first() else {
        return Parsed::Incomplete;
    };
    if !first.is_ascii_digit() {
        return match buf.iter().position(|&b| b == b'\n') {
            Some(end) if end <= max => {
                let line = &buf[..end];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                Parsed::Request(Request::Line(line.to_vec()), end + 1)
            }
            Some(_) => Parsed::Bad("line too long"),
            None if buf.len() > max => Parsed::Bad("line too long"),
            None => Parsed::Incomplete,
        };
    }
    let digits = buf.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits > MAX_LENGTH_DIGITS {
        return Parsed::Bad("netstring length too long");
    }
    let Some(&colon) = buf.get(digits) else {
        return Parsed::Incomplete;
    };
    if colon != b':' {
        return Parsed::Bad("netstring length not followed by ':'");
    }
    let len: usize = match std::str::from_utf8(&buf[..digits])
        .ok()
        .and_then(|d| d.parse().ok())
    {
        Some(len) => len,
        None => return Parsed::Bad("netstring length"),
    };
    if len > max {
        return Parsed::Bad("netstring too long");
    }
    let start = digits + 1;
    let Some(&comma) = buf.get(start + len) else {
        return Parsed::Incomplete;
    };
    if comma != b',' {
        return Parsed::Bad("netstring not ended by ','");
    }
    Parsed::Request(
        Request::Netstring(buf[start..start + len].to_vec()),
        start + len + 1,
    )
}

/// A netstring around `payload`.
pub fn netstring(payload: &str) -> Vec<u8> {
    format!("{}:{payload},", payload.len()).into_bytes()
}

/// A map's answer, before it is put in either protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Found, with the value.
    Found(String),
    NotFound,
    Temp(String),
    Perm(String),
}

impl Answer {
    /// As socketmap_table(5) says.
    fn socketmap(&self) -> Vec<u8> {
        netstring(&match self {
            Answer::Found(v) => format!("OK {v}"),
            Answer::NotFound => "NOTFOUND ".to_string(),
            Answer::Temp(r) => format!("TEMP {}", one_line(r)),
            Answer::Perm(r) => format!("PERM {}", one_line(r)),
        })
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// Which map a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Map {
    Domains,
    Mailboxes,
    Transport,
}

/// Where a user's mail goes now.
enum LmtpRoute {
    /// The serving node, and a standby.
    To(SocketAddr, Option<SocketAddr>),
    /// No pair holds the address (or it is not one).
    Nowhere,
    /// Its pair has no node up: why.
    NoneUp(String),
}

/// What the lookups need.
pub struct MtaLookups {
    pub cluster: Arc<Cluster>,
    pub users: Arc<Users>,
    pub remote_timeout: Duration,
}

impl MtaLookups {
    /// Answer `key` from `map`.
    pub async fn answer(&self, map: Map, key: &str) -> Answer {
        match map {
            Map::Domains => {
                if self.cluster.holds_domain(key) {
                    Answer::Found("cove".into())
                } else {
                    Answer::NotFound
                }
            }
            Map::Mailboxes => {
                let Ok(address) = Address::parse(key) else {
                    return Answer::NotFound;
                };
                let status =
                    lookup::mailbox(&self.cluster, &self.users, &address, self.remote_timeout)
                        .await;
                match status {
                    UserStatus::Exists => Answer::Found(address.to_string()),
                    UserStatus::Absent => Answer::NotFound,
                    UserStatus::Unknown(why) => Answer::Temp(why),
                }
            }
            Map::Transport => match self.lmtp_route(key) {
                LmtpRoute::To(addr, Some(standby)) => {
                    Answer::Found(format!("lmtp:inet:{addr}, {standby}"))
                }
                LmtpRoute::To(addr, None) => Answer::Found(format!("lmtp:inet:{addr}")),
                LmtpRoute::Nowhere => Answer::NotFound,
                LmtpRoute::NoneUp(why) => Answer::Temp(why),
            },
        }
    }

    /// Where `key`'s mail goes now: the serving node, and the pair's other
    /// node when it is not known to be down (Postfix 3.5+ tries a list in
    /// order, so a node that died since the last health poll costs one
    /// refused connection, not a deferral). A bare domain (Postfix asks it
    /// after the address) is not routed here: the address decides.
    fn lmtp_route(&self, key: &str) -> LmtpRoute {
        let Ok(address) = Address::parse(key) else {
            return LmtpRoute::Nowhere;
        };
        // Every detail address of a user goes to the user's node.
        let (base, _) = address.without_detail(self.users.delimiter);
        match self.cluster.route(&base, Proto::Lmtp) {
            Route::Node(name, addr) => {
                LmtpRoute::To(addr, self.cluster.standby(&base, Proto::Lmtp, &name))
            }
            Route::NotHeld => LmtpRoute::Nowhere,
            Route::NoneUp(pair) => LmtpRoute::NoneUp(format!("no node of {pair} is up")),
        }
    }

    /// One request in, one answer out (the bytes to send).
    pub async fn respond(&self, request: &Request) -> Vec<u8> {
        match request {
            Request::Netstring(payload) => {
                let text = String::from_utf8_lossy(payload);
                let (name, key) = text.split_once(' ').unwrap_or((&text, ""));
                let map = match name {
                    "domains" => Map::Domains,
                    "mailboxes" => Map::Mailboxes,
                    "transport" => Map::Transport,
                    _ => {
                        tracing::info!(map = ?cut(name), "socketmap: unknown map");
                        return Answer::Perm(format!("unknown map {:?}", cut(name))).socketmap();
                    }
                };
                let answer = self.answer(map, key).await;
                tracing::debug!(map = name, key = ?cut(key), answer = ?answer, "socketmap");
                answer.socketmap()
            }
            Request::Line(line) => {
                let text = String::from_utf8_lossy(line);
                let (verb, key) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
                let key = key.trim();
                let line = match verb.to_ascii_lowercase().as_str() {
                    "domain" => yes_no(self.answer(Map::Domains, key).await),
                    "mailbox" => yes_no(self.answer(Map::Mailboxes, key).await),
                    "transport" => match self.lmtp_route(key) {
                        LmtpRoute::To(addr, _) => format!("lmtp {} {}", addr.ip(), addr.port()),
                        LmtpRoute::Nowhere => "no".into(),
                        LmtpRoute::NoneUp(why) => format!("temp {why}"),
                    },
                    _ => {
                        tracing::info!(request = ?cut(&text), "readsocket: unknown request");
                        "error unknown request; use domain, mailbox or transport".into()
                    }
                };
                tracing::debug!(request = ?cut(&text), answer = %line, "readsocket");
                format!("{}\n", one_line(&line)).into_bytes()
            }
        }
    }
}

fn yes_no(a: Answer) -> String {
    match a {
        Answer::Found(_) => "yes".into(),
        Answer::NotFound => "no".into(),
        Answer::Temp(r) => format!("temp {r}"),
        Answer::Perm(r) => format!("error {r}"),
    }
}

/// A client's string for a log line: at most 200 characters (and logged
/// with `{:?}`, which escapes it).
fn cut(s: &str) -> String {
    s.chars().take(200).collect()
}

/// Serve `listener` until `stop`.
pub async fn serve(
    listener: TcpListener,
    lookups: Arc<MtaLookups>,
    config: MtaConfig,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let config = Arc::new(config);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "socketmap: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(peer = %peer, limit = config.max_connections, "socketmap: connection refused, at the limit");
            continue;
        };
        let (lookups, config, stop) = (lookups.clone(), config.clone(), stop.clone());
        tokio::spawn(async move {
            if let Err(e) = session(tcp, &lookups, &config, stop).await {
                tracing::debug!(peer = %peer, error = %e, "socketmap: connection ended");
            }
            drop(slot);
        });
    }
}

async fn session(
    mut tcp: TcpStream,
    lookups: &MtaLookups,
    config: &MtaConfig,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let max = config.max_request_length;
    let timeout = Duration::from_secs(config.timeout_secs);
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    let mut chunk = [0u8; 4096];
    loop {
        // Answer every whole request already here (pipelined ones too).
        loop {
            match parse(&buf, max) {
                Parsed::Incomplete => break,
                Parsed::Request(request, used) => {
                    buf.drain(..used);
                    let answer = lookups.respond(&request).await;
                    tcp.write_all(&answer).await?;
                }
                Parsed::Bad(why) => {
                    let peer = tcp.peer_addr().ok();
                    tracing::info!(peer = ?peer, reason = why, "socketmap: bad request; closing");
                    let answer = if buf.first().is_some_and(u8::is_ascii_digit) {
                        Answer::Perm(why.into()).socketmap()
                    } else {
                        format!("error {why}\n").into_bytes()
                    };
                    tcp.write_all(&answer).await?;
                    return tcp.shutdown().await;
                }
            }
        }
        let n = tokio::select! {
            r = tokio::time::timeout(timeout, tcp.read(&mut chunk)) => match r {
                Ok(r) => r?,
                Err(_) => return Ok(()),
            },
            _ = stop.changed() => return Ok(()),
        };
        if n == 0 {
            // Exim's readsocket sends one line, maybe without its end,
            // and shuts down its side: answer what is there.
            if !buf.is_empty() && !buf[0].is_ascii_digit() && buf.len() <= max {
                let answer = lookups
                    .respond(&Request::Line(std::mem::take(&mut buf)))
                    .await;
                tcp.write_all(&answer).await?;
            }
            return tcp.shutdown().await;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netstrings_and_lines_parse_with_limits() {
        let req = |b: &[u8]| parse(b, 64);
        assert_eq!(
            req(b"23:mailboxes a@example.com,rest"),
            Parsed::Request(Request::Netstring(b"mailboxes a@example.com".to_vec()), 27)
        );
        assert_eq!(req(b"23:mailboxes a@exam"), Parsed::Incomplete);
        assert_eq!(req(b"23"), Parsed::Incomplete);
        assert_eq!(req(b""), Parsed::Incomplete);
        assert_eq!(req(b"3:abc;"), Parsed::Bad("netstring not ended by ','"));
        assert_eq!(
            req(b"3;abc,"),
            Parsed::Bad("netstring length not followed by ':'")
        );
        assert_eq!(req(b"65:"), Parsed::Bad("netstring too long"));
        assert_eq!(
            req(b"99999999999:"),
            Parsed::Bad("netstring length too long")
        );
        assert_eq!(req(b"0:,"), Parsed::Request(Request::Netstring(vec![]), 3));
        assert_eq!(
            req(b"transport a@b\r\nmore"),
            Parsed::Request(Request::Line(b"transport a@b".to_vec()), 15)
        );
        assert_eq!(req(b"transport a@b"), Parsed::Incomplete);
        assert_eq!(req(&[b'x'; 65]), Parsed::Bad("line too long"));
        let mut long = vec![b'x'; 70];
        long.push(b'\n');
        assert_eq!(req(&long), Parsed::Bad("line too long"));
        assert_eq!(netstring("NOTFOUND "), b"9:NOTFOUND ,");
        assert_eq!(
            Answer::Temp("a\r\nb".into()).socketmap(),
            b"9:TEMP a  b,".to_vec()
        );
    }
}
