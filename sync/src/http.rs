//! The admin HTTP endpoint on `[http] listen`: Prometheus metrics, sync
//! status, and "sync now" for the CLI.
//!
//! Hand-written HTTP/1.1, one request per connection (`Connection: close`).
//! Three routes, no request bodies, no keep-alive, no chunked encoding, no
//! TLS: the listener is meant for loopback or an admin network. hyper would
//! bring h2, http-body and friends (about 55 unit-seconds of cold build, see
//! CRATES.md) for no behaviour we need, and a tiny server keeps the limits in
//! plain sight:
//!
//! - the request line is at most [`MAX_REQUEST_LINE`] bytes (414 above it),
//!   the whole head at most [`MAX_HEAD`] bytes and [`MAX_HEADERS`] header
//!   lines (431 above them);
//! - the head (and any body, which is read and discarded, at most
//!   [`MAX_BODY`] bytes, 413 above it) must arrive within [`READ_TIMEOUT`]
//!   (408 otherwise); a `Transfer-Encoding` body is refused (400);
//! - at most [`MAX_CONNECTIONS`] requests are handled at once; a connection
//!   over that is closed at once.
//!
//! The handler's own work (a `sync now` may take a while) is not under the
//! read timeout. Parsing is apart from the socket (`parse_head`, `route`),
//! so it is tested without one.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// Longest request line, in bytes.
pub const MAX_REQUEST_LINE: usize = 2048;
/// Longest request head (request line and headers), in bytes.
pub const MAX_HEAD: usize = 8 * 1024;
/// Most header lines in a request.
pub const MAX_HEADERS: usize = 64;
/// Largest request body, read and ignored.
pub const MAX_BODY: usize = 64 * 1024;
/// Time a client has to send its request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests handled at the same time.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a closing connection keeps reading what the client still sends.
const LINGER: Duration = Duration::from_secs(1);
/// Largest response `http_request` reads.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// What the endpoint serves; implemented by the replicator.
pub trait AdminHandler: Send + Sync {
    /// Prometheus text exposition format 0.0.4.
    fn metrics(&self) -> String;
    /// A JSON document.
    fn sync_status(&self) -> String;
    /// Sync one user (or every user with `None`) now. `Ok` is served as 200
    /// and `Err` as 500, both as `text/plain`.
    fn sync_now(
        &self,
        user: Option<String>,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>>;
    /// `GET /health`: 200 while this node serves, 503 while it drains.
    fn health(&self) -> (u16, String) {
        (200, "serving\n".into())
    }
    /// `GET /cluster/user?address=`: whether the user exists on this node
    /// (`cove::cluster::lookup`). Status and a `text/plain` body.
    fn cluster_user(
        &self,
        address: String,
    ) -> Pin<Box<dyn Future<Output = (u16, String)> + Send + '_>> {
        let _ = address;
        Box::pin(async { (404, "not found\n".to_string()) })
    }
}

/// Serve requests from `listener` until `stop` turns true (or its sender is
/// dropped). Requests in flight when it stops are finished by their tasks.
pub async fn serve_http(
    listener: TcpListener,
    handler: Arc<dyn AdminHandler>,
    stop: watch::Receiver<bool>,
) {
    serve(listener, handler, stop, READ_TIMEOUT).await
}

/// `serve_http` with the read timeout given (tests use a short one).
async fn serve(
    listener: TcpListener,
    handler: Arc<dyn AdminHandler>,
    mut stop: watch::Receiver<bool>,
    read_timeout: Duration,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        tracing::warn!("http: {peer} refused, {MAX_CONNECTIONS} requests in flight");
                        continue;
                    };
                    let handler = handler.clone();
                    tokio::spawn(async move {
                        if let Err(e) = handle(tcp, handler.as_ref(), read_timeout).await {
                            tracing::debug!("http: {peer}: {e}");
                        }
                        drop(slot);
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!("http: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// A parsed request head.
#[derive(Debug, PartialEq)]
struct Head {
    method: String,
    target: String,
    content_length: usize,
}

/// A response: status, content type, body, and `Allow` for 405.
#[derive(Debug, PartialEq)]
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
    allow: Option<&'static str>,
}

const TEXT: &str = "text/plain; charset=utf-8";
const METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";
const JSON: &str = "application/json";

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: TEXT,
            body: body.into(),
            allow: None,
        }
    }
}

/// The routes, as parsed from method and target.
#[derive(Debug, PartialEq)]
enum Route {
    Metrics,
    SyncStatus,
    SyncNow(Option<String>),
    Health,
    ClusterUser(String),
}

async fn handle(
    mut tcp: TcpStream,
    handler: &dyn AdminHandler,
    read_timeout: Duration,
) -> io::Result<()> {
    let response = match tokio::time::timeout(read_timeout, read_request(&mut tcp)).await {
        Err(_) => Response::text(408, "request not received in time\n"),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(Err(refusal))) => refusal,
        Ok(Ok(Ok(head))) => match route(&head.method, &head.target) {
            Err(refusal) => refusal,
            Ok(route) => respond(route, handler).await,
        },
    };
    write_response(&mut tcp, &response).await?;
    tcp.shutdown().await?;
    // Lingering close: read what the client may still be sending (a refused
    // request), so the kernel does not answer it with a reset that could
    // destroy the response before the client reads it.
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(LINGER, async {
        let mut left = MAX_HEAD + MAX_BODY;
        while left > 0 {
            match tcp.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
    Ok(())
}

async fn respond(route: Route, handler: &dyn AdminHandler) -> Response {
    match route {
        // GET /metrics: Prometheus text exposition format 0.0.4.
        Route::Metrics => Response {
            status: 200,
            content_type: METRICS,
            body: handler.metrics(),
            allow: None,
        },
        Route::SyncStatus => Response {
            status: 200,
            content_type: JSON,
            body: handler.sync_status(),
            allow: None,
        },
        Route::SyncNow(user) => match handler.sync_now(user).await {
            Ok(report) => Response::text(200, report),
            Err(e) => Response::text(500, e),
        },
        Route::Health => {
            let (status, body) = handler.health();
            Response::text(status, body)
        }
        Route::ClusterUser(address) => {
            let (status, body) = handler.cluster_user(address).await;
            Response::text(status, body)
        }
    }
}

/// Read the head (and discard a small body). The outer `Err` is the socket's;
/// the inner one is the response that refuses the request.
async fn read_request<S: AsyncRead + Unpin>(io: &mut S) -> io::Result<Result<Head, Response>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(end) = find_head_end(&buf) {
            if end > MAX_HEAD {
                return Ok(Err(Response::text(431, "request head too large\n")));
            }
            break end;
        }
        if !buf.contains(&b'\n') && buf.len() > MAX_REQUEST_LINE {
            return Ok(Err(Response::text(414, "request line too long\n")));
        }
        if buf.len() > MAX_HEAD {
            return Ok(Err(Response::text(431, "request head too large\n")));
        }
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the end of the request head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = match parse_head(&buf[..end]) {
        Ok(head) => head,
        Err(refusal) => return Ok(Err(refusal)),
    };
    // Drain the body, so closing does not reset the connection under the
    // response.
    let mut left = head.content_length.saturating_sub(buf.len() - end);
    while left > 0 {
        let n = io.read(&mut chunk[..left.min(1024)]).await?;
        if n == 0 {
            break;
        }
        left -= n;
    }
    Ok(Ok(head))
}

/// Where the head ends (after its blank line), CRLF or bare LF.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// RFC 9112 §3 and §5: request line and header fields.
fn parse_head(head: &[u8]) -> Result<Head, Response> {
    let bad = |why: &str| Response::text(400, format!("bad request: {why}\n"));
    let text = std::str::from_utf8(head).map_err(|_| bad("not UTF-8"))?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    if request_line.len() > MAX_REQUEST_LINE {
        return Err(Response::text(414, "request line too long\n"));
    }
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("request line is not METHOD TARGET VERSION"));
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(bad("not HTTP/1.0 or HTTP/1.1"));
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(bad("method"));
    }
    if !target.starts_with('/') {
        return Err(bad("target must be a path"));
    }
    let mut content_length = 0;
    let mut count = 0;
    for line in lines.filter(|l| !l.is_empty()) {
        count += 1;
        if count > MAX_HEADERS {
            return Err(Response::text(431, "too many header fields\n"));
        }
        let (name, value) = line.split_once(':').ok_or_else(|| bad("header field"))?;
        if name.is_empty() || name.ends_with(' ') || name.ends_with('\t') {
            return Err(bad("header field name"));
        }
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().map_err(|_| bad("Content-Length"))?;
            if content_length > MAX_BODY {
                return Err(Response::text(413, "request body too large\n"));
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(bad(
                "request bodies with Transfer-Encoding are not accepted",
            ));
        }
    }
    Ok(Head {
        method: method.to_string(),
        target: target.to_string(),
        content_length,
    })
}

fn route(method: &str, target: &str) -> Result<Route, Response> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let allowed = match path {
        "/metrics" | "/sync/status" | "/health" | "/cluster/user" => "GET",
        "/sync/now" => "POST",
        _ => return Err(Response::text(404, "not found\n")),
    };
    if method != allowed {
        return Err(Response {
            allow: Some(allowed),
            ..Response::text(405, format!("method not allowed; use {allowed}\n"))
        });
    }
    Ok(match path {
        "/metrics" => Route::Metrics,
        "/sync/status" => Route::SyncStatus,
        "/health" => Route::Health,
        "/cluster/user" => match query_param(query, "address")? {
            Some(address) => Route::ClusterUser(address),
            None => return Err(Response::text(400, "bad request: address is missing\n")),
        },
        _ => Route::SyncNow(query_param(query, "user")?),
    })
}

/// The one parameter `name` of a query (`/sync/now?user=EMAIL`,
/// `/cluster/user?address=EMAIL`); other parameters are errors.
fn query_param(query: &str, name: &str) -> Result<Option<String>, Response> {
    let bad = |why: String| Response::text(400, format!("bad request: {why}\n"));
    let mut found = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((key, value)) if key == name && found.is_none() => {
                let value = percent_decode(value)
                    .ok_or_else(|| bad(format!("{name} is not percent-encoded UTF-8")))?;
                if value.is_empty() {
                    return Err(bad(format!("{name} is empty")));
                }
                found = Some(value);
            }
            Some((key, _)) if key == name => return Err(bad(format!("{name} given twice"))),
            _ => return Err(bad(format!("unknown parameter {pair:?}"))),
        }
    }
    Ok(found)
}

/// RFC 3986 §2.1 percent-decoding. `+` stays `+` (it is common in
/// addresses: `user+detail@domain`).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The target of a "sync now" request: `/sync/now`, or with
/// `?user=` and the address percent-encoded.
pub fn sync_now_path(user: Option<&str>) -> String {
    match user {
        None => "/sync/now".to_string(),
        Some(user) => format!("/sync/now?user={}", percent_encode(user)),
    }
}

/// The target of a "does this user exist here" request.
pub fn cluster_user_path(address: &str) -> String {
    format!("/cluster/user?address={}", percent_encode(address))
}

/// RFC 3986 §2.1 percent-encoding of everything but unreserved bytes and `@`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

async fn write_response<S: AsyncWrite + Unpin>(io: &mut S, r: &Response) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    if let Some(allow) = r.allow {
        head.push_str(&format!("Allow: {allow}\r\n"));
    }
    head.push_str("\r\n");
    io.write_all(head.as_bytes()).await?;
    io.write_all(r.body.as_bytes()).await?;
    io.flush().await
}

/// One request to a cove HTTP endpoint at `addr` (`host:port`), for the CLI:
/// the status code and the body. No timeout of its own (a `sync now` may take
/// long); wrap it in `tokio::time::timeout` if one is wanted.
pub async fn http_request(addr: &str, method: &str, path: &str) -> io::Result<(u16, String)> {
    let mut tcp = TcpStream::connect(addr).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    (&mut tcp)
        .take(MAX_RESPONSE as u64 + 1)
        .read_to_end(&mut raw)
        .await?;
    if raw.len() > MAX_RESPONSE {
        return Err(invalid("response too large"));
    }
    parse_response(&raw)
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("bad HTTP response: {why}"),
    )
}

fn parse_response(raw: &[u8]) -> io::Result<(u16, String)> {
    let end = find_head_end(raw).ok_or_else(|| invalid("no end of head"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| invalid("head not UTF-8"))?;
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| invalid("status line"))?;
    let mut body = &raw[end..];
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            let len: usize = value
                .trim()
                .parse()
                .map_err(|_| invalid("Content-Length"))?;
            body = body
                .get(..len)
                .ok_or_else(|| invalid("body shorter than Content-Length"))?;
        }
    }
    Ok((status, String::from_utf8_lossy(body).into_owned()))
}

#[cfg(test)]
mod tests;
