//! The admin HTTP endpoint on `[http] listen`: Prometheus metrics, sync
//! status, and "sync now" for the CLI.
//!
//! Hand-written HTTP/1.1, one request per connection (`Connection: close`).
//! Three routes of its own (the binary adds more through
//! [`AdminHandler::route`]: health, nginx's auth_http, drain), no request bodies, no keep-alive, no chunked encoding, no
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
//!   over that is closed at once;
//! - a request that changes state (every `POST`) needs the admin token
//!   (`Authorization: Bearer <token>`, [`AdminHandler::admin_token`]; 401
//!   without it) and must not come from a web page (a request with an
//!   `Origin` header is refused with 403, so a page a browser shows cannot
//!   make it); each one is logged with the client's address.
//!
//! The handler's own work (a `sync now` may take a while) is not under the
//! read timeout. Parsing is apart from the socket (`parse_head`, `route`),
//! so it is tested without one.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
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

/// A request for a route the binary serves ([`AdminHandler::route`]).
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// After `?`, still percent-encoded.
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub peer: SocketAddr,
}

impl Request {
    /// A header's value (names compare without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A query parameter, percent-decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        self.query
            .split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| percent_decode(v))
    }
}

/// The answer to a [`Request`]: a status, plain text, extra headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            body: body.into(),
            headers: Vec::new(),
        }
    }
}

/// A route's answer on its way.
pub type Replying<'a> = Pin<Box<dyn Future<Output = Reply> + Send + 'a>>;

/// What the endpoint serves; implemented by the binary.
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
    /// The token state-changing requests must carry; `None` refuses them
    /// all.
    fn admin_token(&self) -> Option<String>;
    /// Routes of the binary's own, tried for paths this module does not
    /// know: `None` is 404. A `POST` reaches here only with the token.
    fn route<'a>(&'a self, _request: &'a Request) -> Option<Replying<'a>> {
        None
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
    headers: Vec<(String, String)>,
}

/// A response: status, content type, body, and `Allow` for 405.
#[derive(Debug, PartialEq)]
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
    allow: Option<&'static str>,
    headers: Vec<(String, String)>,
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
            headers: Vec::new(),
        }
    }
}

/// The routes, as parsed from method and target.
#[derive(Debug, PartialEq)]
enum Route {
    Metrics,
    SyncStatus,
    SyncNow(Option<String>),
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
        Ok(Ok(Ok(head))) => {
            let peer = tcp
                .peer_addr()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
            answer(head, peer, handler).await
        }
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

/// Check a request's credential, then route it: this module's routes
/// first, then the binary's.
async fn answer(head: Head, peer: SocketAddr, handler: &dyn AdminHandler) -> Response {
    let (path, query) = head
        .target
        .split_once('?')
        .unwrap_or((head.target.as_str(), ""));
    let request = Request {
        method: head.method.clone(),
        path: path.to_string(),
        query: query.to_string(),
        headers: head.headers.clone(),
        peer,
    };
    if request.method == "POST" {
        if request.header("origin").is_some() {
            tracing::warn!(peer = %peer, path = %path.escape_debug(), "http: a request from a web page (Origin) refused");
            return Response::text(403, "requests from web pages are refused\n");
        }
        let given = request
            .header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(|t| blake3::hash(t.trim().as_bytes()));
        let wanted = handler.admin_token().map(|t| blake3::hash(t.as_bytes()));
        // blake3::Hash compares in constant time.
        if given.is_none() || given != wanted {
            tracing::warn!(peer = %peer, path = %path.escape_debug(), "http: a state-changing request without the admin token refused");
            return Response {
                headers: vec![("WWW-Authenticate".into(), "Bearer".into())],
                ..Response::text(401, "the admin token is needed (Authorization: Bearer)\n")
            };
        }
        tracing::info!(peer = %peer, path = %path.escape_debug(), query = %query.escape_debug(), "http: admin request");
    }
    match route(&head.method, &head.target) {
        Ok(route) => respond(route, handler).await,
        Err(refusal) if refusal.status == 404 => match handler.route(&request) {
            Some(replying) => {
                let r = replying.await;
                Response {
                    headers: r.headers,
                    ..Response::text(r.status, r.body)
                }
            }
            None => refusal,
        },
        Err(refusal) => refusal,
    }
}

async fn respond(route: Route, handler: &dyn AdminHandler) -> Response {
    match route {
        // GET /metrics: Prometheus text exposition format 0.0.4.
        Route::Metrics => Response {
            content_type: METRICS,
            ..Response::text(200, handler.metrics())
        },
        Route::SyncStatus => Response {
            content_type: JSON,
            ..Response::text(200, handler.sync_status())
        },
        Route::SyncNow(user) => match handler.sync_now(user).await {
            Ok(report) => Response::text(200, report),
            Err(e) => Response::text(500, e),
        },
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
    let mut headers = Vec::new();
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
        headers.push((name.to_string(), value.to_string()));
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
        headers,
    })
}

fn route(method: &str, target: &str) -> Result<Route, Response> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let allowed = match path {
        "/metrics" | "/sync/status" => "GET",
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
        _ => Route::SyncNow(sync_now_user(query)?),
    })
}

/// The `user` of `/sync/now?user=EMAIL`; other parameters are errors.
fn sync_now_user(query: &str) -> Result<Option<String>, Response> {
    let bad = |why: String| Response::text(400, format!("bad request: {why}\n"));
    let mut user = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("user", value)) if user.is_none() => {
                let value = percent_decode(value)
                    .ok_or_else(|| bad("user is not percent-encoded UTF-8".into()))?;
                if value.is_empty() {
                    return Err(bad("user is empty".into()));
                }
                user = Some(value);
            }
            Some(("user", _)) => return Err(bad("user given twice".into())),
            _ => return Err(bad(format!("unknown parameter {pair:?}"))),
        }
    }
    Ok(user)
}

/// RFC 3986 §2.1 percent-decoding. `+` stays `+` (it is common in
/// addresses: `user+detail@domain`).
pub fn percent_decode(s: &str) -> Option<String> {
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

/// The target of a "does this user exist here" request (another node's
/// `GET /cluster/user`).
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
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
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
    for (name, value) in &r.headers {
        // Header values come from the binary's routes: no line breaks.
        if !value.contains(['\r', '\n']) && !name.contains(['\r', '\n', ':']) {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
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
    http_exchange(addr, method, path, &[])
        .await
        .map(|(status, _, body)| (status, body))
}

/// A response: status, headers, body.
pub type Exchanged = (u16, Vec<(String, String)>, String);

/// [`http_request`] with request headers, answering the response's
/// headers too.
pub async fn http_exchange(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> io::Result<Exchanged> {
    let mut tcp = TcpStream::connect(addr).await?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n"
    );
    for (name, value) in headers {
        if value.contains(['\r', '\n']) || name.contains(['\r', '\n', ':']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "header with a line break",
            ));
        }
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
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

fn parse_response(raw: &[u8]) -> io::Result<Exchanged> {
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
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            let len: usize = value
                .trim()
                .parse()
                .map_err(|_| invalid("Content-Length"))?;
            body = body
                .get(..len)
                .ok_or_else(|| invalid("body shorter than Content-Length"))?;
        }
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    Ok((status, headers, String::from_utf8_lossy(body).into_owned()))
}

#[cfg(test)]
mod tests;
