//! IMAP mode (RFC 3501): a small IMAP client of our own and two
//! measurements.
//!
//! - `imap ops`: timed operations on one (big) mailbox, one connection:
//!   SELECT, `UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)`,
//!   `UID SEARCH SUBJECT`, `UID SEARCH BODY`, `UID STORE 1:* ±FLAGS.SILENT
//!   (\Seen)`, and random `FETCH n BODY.PEEK[]`, one at a time and
//!   pipelined. Every answer is checked (counts, literals, flags after).
//! - `imap idle`: C connections log in, SELECT and IDLE; the server's memory
//!   is sampled before and after; then one message is delivered over LMTP
//!   and the time until every connection sees `* n EXISTS` is measured.
//!
//! The client reads whole responses, literals included (`{n}` at the end of
//! a line: n bytes follow, then the rest of the response).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpSocket;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::CommonArgs;
use crate::message::{MessageGen, xorshift};
use crate::stats::{CpuProbe, MemSample, Report, mem_available_kib, tree_memory, tree_rss_kib};

#[derive(Args, Debug)]
pub struct ImapArgs {
    #[command(subcommand)]
    pub cmd: ImapCmd,
}

#[derive(Subcommand, Debug)]
pub enum ImapCmd {
    /// Timed operations on one mailbox: SELECT, UID FETCH of envelopes,
    /// UID SEARCH SUBJECT/BODY, UID STORE of \Seen on all, random BODY.PEEK[].
    Ops(OpsArgs),
    /// Many connections in IDLE: server memory per connection, and the delay
    /// until all of them see EXISTS after one LMTP delivery.
    Idle(IdleArgs),
    /// Whole sessions per second: clients looping connect, LOGIN, SELECT,
    /// LOGOUT.
    Sessions(crate::imap_sessions::SessionsArgs),
}

/// Where to log in and which mailbox to select.
#[derive(Args, Debug)]
pub struct Target {
    /// IMAP server, host:port.
    #[arg(long, default_value = "127.0.0.1:143")]
    pub addr: String,
    #[arg(long)]
    pub user: String,
    #[arg(long)]
    pub pass: String,
    #[arg(long, default_value = "INBOX")]
    pub mailbox: String,
}

#[derive(Args, Debug)]
pub struct OpsArgs {
    #[command(flatten)]
    pub target: Target,
    /// This is the first SELECT of the mailbox since it was loaded: reported
    /// as run=first (otherwise run=repeat).
    #[arg(long)]
    pub first: bool,
    /// Word searched with UID SEARCH SUBJECT.
    #[arg(long, default_value = "marzipan")]
    pub subject_token: String,
    /// Word searched with UID SEARCH BODY.
    #[arg(long, default_value = "kumquat")]
    pub body_token: String,
    /// Fail unless SELECT reports exactly this many messages.
    #[arg(long)]
    pub expect_messages: Option<u64>,
    /// Fail unless SEARCH SUBJECT finds exactly this many.
    #[arg(long)]
    pub expect_subject_hits: Option<u64>,
    /// Fail unless SEARCH BODY finds exactly this many.
    #[arg(long)]
    pub expect_body_hits: Option<u64>,
    /// Random messages fetched with FETCH n BODY.PEEK[] (each way).
    #[arg(long, default_value_t = 1000)]
    pub peek: usize,
    /// Commands in flight for the pipelined BODY.PEEK[] run.
    #[arg(long, default_value_t = 32)]
    pub pipeline: usize,
    /// Seed of the random message numbers (same seed, same numbers).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run only these groups of operations (comma-separated: fetch, search,
    /// store, peek); SELECT always runs. Empty: all.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

impl OpsArgs {
    /// Whether the group of operations `group` runs (see `--only`).
    fn runs(&self, group: &str) -> bool {
        self.only.iter().all(|g| g.is_empty()) || self.only.iter().any(|g| g == group)
    }
}

#[derive(Args, Debug)]
pub struct IdleArgs {
    /// IMAP server, host:port.
    #[arg(long, default_value = "127.0.0.1:143")]
    pub addr: String,
    /// LMTP server that delivers the message the idle connections wait for.
    #[arg(long)]
    pub lmtp_addr: String,
    /// Login name; `{n}` is replaced by first-user .. first-user+users-1.
    #[arg(long, default_value = "bench{n}@example.com")]
    pub user_template: String,
    /// Users the connections are spread over (round-robin); the delivery
    /// goes to all of them in one LMTP transaction.
    #[arg(long, default_value_t = 1)]
    pub users: u64,
    #[arg(long, default_value_t = 0)]
    pub first_user: u64,
    #[arg(long)]
    pub pass: String,
    #[arg(long, default_value = "INBOX")]
    pub mailbox: String,
    /// Connections to put in IDLE.
    #[arg(long, default_value_t = 100)]
    pub conns: usize,
    /// Bind connection i to source address 127.0.0.(2 + i % N); 0 = let
    /// the kernel pick (127.0.0.1). More source addresses, more ports.
    #[arg(long, default_value_t = 0)]
    pub sources: u32,
    /// Connections being set up (connect, LOGIN, SELECT, IDLE) at once.
    #[arg(long, default_value_t = 64)]
    pub setup_concurrency: usize,
    /// Sessions run through LOGIN/SELECT/IDLE/LOGOUT before the baseline
    /// memory sample (worker processes started, allocator pools warm).
    #[arg(long, default_value_t = 16)]
    pub warmup: usize,
    /// Milliseconds to wait before each memory sample.
    #[arg(long, default_value_t = 2000)]
    pub settle_ms: u64,
    /// Safety: stop opening connections (and report the run as aborted)
    /// once the server's RSS (summed over its processes) passes this many MiB.
    #[arg(long)]
    pub max_server_rss_mib: Option<u64>,
    /// Safety: stop opening connections once the machine's MemAvailable
    /// falls below this many MiB.
    #[arg(long, default_value_t = 3072)]
    pub min_mem_available_mib: u64,
    /// Seconds to wait, after the delivery, for every connection's EXISTS.
    #[arg(long, default_value_t = 60)]
    pub exists_timeout: u64,
    #[command(flatten)]
    pub common: CommonArgs,
}

pub async fn run(args: ImapArgs) -> Result<bool> {
    match args.cmd {
        ImapCmd::Ops(a) => ops(a).await,
        ImapCmd::Idle(a) => idle(a).await,
        ImapCmd::Sessions(a) => crate::imap_sessions::sessions(a).await,
    }
}

// ------------------------------------------------------------------ client

/// Longest response line we accept (literals not counted).
const LINE_MAX: u64 = 1 << 20;

/// One response: a tagged/untagged line or a continuation request, with the
/// literals it carries.
#[derive(Default)]
pub(crate) struct Resp {
    /// The response's lines joined, without CRLFs and without the literals'
    /// bytes (the `{n}` markers stay).
    text: Vec<u8>,
    literals: Vec<Vec<u8>>,
}

impl Resp {
    /// Text after `* ` for untagged responses.
    pub(crate) fn untagged(&self) -> Option<&[u8]> {
        self.text.strip_prefix(b"* ")
    }

    fn is_continuation(&self) -> bool {
        self.text.first() == Some(&b'+')
    }

    /// (tag, status word, rest) for tagged responses.
    fn tagged(&self) -> Option<(&[u8], &[u8], &[u8])> {
        if self.untagged().is_some() || self.is_continuation() {
            return None;
        }
        let mut it = self.text.splitn(3, |&b| b == b' ');
        let tag = it.next()?;
        let status = it.next()?;
        Some((tag, status, it.next().unwrap_or(b"")))
    }

    pub(crate) fn show(&self) -> String {
        let t = String::from_utf8_lossy(&self.text[..self.text.len().min(200)]).into_owned();
        if self.text.len() > 200 {
            format!("{t}...")
        } else {
            t
        }
    }
}

/// End of a command: its tagged response.
struct Done {
    status: String,
    text: String,
}

impl Done {
    fn ok(&self, what: &str) -> Result<()> {
        if self.status != "OK" {
            bail!("{what}: {} {}", self.status, self.text);
        }
        Ok(())
    }
}

pub(crate) struct Client {
    rd: BufReader<OwnedReadHalf>,
    wr: BufWriter<OwnedWriteHalf>,
    tag: u64,
    timeout: Duration,
}

impl Client {
    /// Connects (from `source` if given) and reads the greeting.
    pub(crate) async fn connect(
        addr: SocketAddr,
        source: Option<IpAddr>,
        timeout: Duration,
        buf: usize,
    ) -> Result<Client> {
        let sock = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(src) = source {
            // Pick the port at connect time (per destination), not at bind:
            // otherwise every bound socket holds a port of its own.
            let one: libc::c_int = 1;
            // SAFETY: a valid socket fd and a c_int option value.
            let rc = unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_BIND_ADDRESS_NO_PORT,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error())
                    .context("setsockopt(IP_BIND_ADDRESS_NO_PORT)");
            }
            sock.bind(SocketAddr::new(src, 0))
                .with_context(|| format!("bind to {src}"))?;
        }
        let stream = tokio::time::timeout(timeout, sock.connect(addr))
            .await
            .context("connect timed out")?
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        let mut c = Client {
            rd: BufReader::with_capacity(buf, r),
            wr: BufWriter::with_capacity(buf.min(4096), w),
            tag: 0,
            timeout,
        };
        let g = c.read().await.context("reading the greeting")?;
        match g.untagged() {
            Some(t) if t.starts_with(b"OK") || t.starts_with(b"PREAUTH") => Ok(c),
            _ => bail!("unexpected greeting: {}", g.show()),
        }
    }

    fn next_tag(&mut self) -> String {
        self.tag += 1;
        format!("c{}", self.tag)
    }

    /// Queues a line (CRLF added); `flush` sends.
    async fn queue(&mut self, line: &str) -> Result<()> {
        self.wr.write_all(line.as_bytes()).await?;
        self.wr.write_all(b"\r\n").await?;
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        self.wr.flush().await?;
        Ok(())
    }

    async fn read(&mut self) -> Result<Resp> {
        let t = self.timeout;
        self.read_within(t).await
    }

    /// Reads one whole response, literals included.
    pub(crate) async fn read_within(&mut self, timeout: Duration) -> Result<Resp> {
        let mut r = Resp::default();
        loop {
            let start = r.text.len();
            let n = tokio::time::timeout(
                timeout,
                (&mut self.rd).take(LINE_MAX).read_until(b'\n', &mut r.text),
            )
            .await
            .context("timed out waiting for the server")?
            .context("reading from the server")?;
            if n == 0 {
                bail!("server closed the connection");
            }
            if !r.text.ends_with(b"\n") {
                bail!("response line longer than {LINE_MAX} bytes");
            }
            r.text.pop();
            if r.text.ends_with(b"\r") {
                r.text.pop();
            }
            let Some(len) = literal_len(&r.text[start..]) else {
                return Ok(r);
            };
            let mut lit = vec![0u8; len];
            tokio::time::timeout(timeout, self.rd.read_exact(&mut lit))
                .await
                .context("timed out reading a literal")?
                .context("reading a literal")?;
            r.literals.push(lit);
        }
    }

    /// Sends a command and reads up to its tagged response; `each` sees
    /// every untagged response on the way.
    async fn command(&mut self, cmd: &str, mut each: impl FnMut(&Resp)) -> Result<Done> {
        let tag = self.next_tag();
        self.queue(&format!("{tag} {cmd}")).await?;
        self.flush().await?;
        loop {
            let r = self.read().await?;
            if let Some((t, status, text)) = r.tagged() {
                if t != tag.as_bytes() {
                    bail!("tagged response for another command: {}", r.show());
                }
                return Ok(Done {
                    status: String::from_utf8_lossy(status).to_ascii_uppercase(),
                    text: String::from_utf8_lossy(text).into_owned(),
                });
            }
            if r.is_continuation() {
                bail!(
                    "unexpected continuation request after {cmd:?}: {}",
                    r.show()
                );
            }
            each(&r);
        }
    }

    pub(crate) async fn login(&mut self, user: &str, pass: &str) -> Result<()> {
        self.command(&format!("LOGIN {} {}", quoted(user), quoted(pass)), |_| {})
            .await?
            .ok("LOGIN")
    }

    /// SELECT; returns EXISTS.
    pub(crate) async fn select(&mut self, mailbox: &str) -> Result<u64> {
        let mut exists = None;
        self.command(&format!("SELECT {}", quoted(mailbox)), |r| {
            if let Some(n) = r.untagged().and_then(exists_of) {
                exists = Some(n);
            }
        })
        .await?
        .ok("SELECT")?;
        exists.context("SELECT answered OK without EXISTS")
    }

    /// UID SEARCH; returns the number of UIDs found.
    async fn search_count(&mut self, criteria: &str) -> Result<u64> {
        let mut hits = None;
        self.command(&format!("UID SEARCH {criteria}"), |r| {
            if let Some(n) = r.untagged().and_then(search_hits) {
                *hits.get_or_insert(0) += n;
            }
        })
        .await?
        .ok("UID SEARCH")?;
        hits.context("UID SEARCH answered OK without * SEARCH")
    }

    /// Sends IDLE and waits for the continuation request; returns the tag.
    pub(crate) async fn start_idle(&mut self) -> Result<String> {
        let tag = self.next_tag();
        self.queue(&format!("{tag} IDLE")).await?;
        self.flush().await?;
        loop {
            let r = self.read().await?;
            if r.is_continuation() {
                return Ok(tag);
            }
            if r.tagged().is_some() {
                bail!("IDLE refused: {}", r.show());
            }
        }
    }

    /// DONE, then the tagged end of IDLE.
    pub(crate) async fn done(&mut self, tag: &str) -> Result<()> {
        self.queue("DONE").await?;
        self.flush().await?;
        loop {
            let r = self.read().await?;
            if let Some((t, status, text)) = r.tagged()
                && t == tag.as_bytes()
            {
                if !status.eq_ignore_ascii_case(b"OK") {
                    bail!(
                        "IDLE ended with {} {}",
                        String::from_utf8_lossy(status),
                        String::from_utf8_lossy(text)
                    );
                }
                return Ok(());
            }
        }
    }

    pub(crate) async fn logout(&mut self) -> Result<()> {
        self.command("LOGOUT", |_| {}).await?.ok("LOGOUT")
    }
}

/// `{123}` or `{123+}` at the end of a line.
fn literal_len(line: &[u8]) -> Option<usize> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = &inner[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// An IMAP quoted string.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `N EXISTS` → N.
pub(crate) fn exists_of(u: &[u8]) -> Option<u64> {
    let (n, rest) = split_number(u)?;
    rest.eq_ignore_ascii_case(b" EXISTS").then_some(n)
}

/// `N FETCH (...)` → N.
fn fetch_seq(u: &[u8]) -> Option<u64> {
    let (n, rest) = split_number(u)?;
    (rest.len() >= 7 && rest[..7].eq_ignore_ascii_case(b" FETCH ")).then_some(n)
}

/// `SEARCH 1 2 3` → 3.
fn search_hits(u: &[u8]) -> Option<u64> {
    if u.len() < 6 || !u[..6].eq_ignore_ascii_case(b"SEARCH") {
        return None;
    }
    let rest = &u[6..];
    if !rest.is_empty() && rest[0] != b' ' {
        return None;
    }
    Some(
        rest.split(|&b| b == b' ')
            .filter(|w| !w.is_empty() && w.iter().all(u8::is_ascii_digit))
            .count() as u64,
    )
}

fn split_number(u: &[u8]) -> Option<(u64, &[u8])> {
    let end = u
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(u.len());
    if end == 0 {
        return None;
    }
    let n = std::str::from_utf8(&u[..end]).ok()?.parse().ok()?;
    Some((n, &u[end..]))
}

/// `UID 123` inside a FETCH response.
fn uid_in(text: &[u8]) -> Option<u64> {
    let at = find(text, b"UID ")?;
    split_number(&text[at + 4..]).map(|(n, _)| n)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub(crate) async fn resolve(addr: &str) -> Result<SocketAddr> {
    tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("cannot resolve {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to nothing"))
}

fn label_of(c: &CommonArgs) -> String {
    if c.label.is_empty() {
        String::new()
    } else {
        format!(" [{}]", c.label)
    }
}

// ------------------------------------------------------------------ ops

/// One timed operation.
struct OpLine {
    op: &'static str,
    wall: Duration,
    count: u64,
    server_ms: Option<f64>,
    ok: bool,
    extra: Vec<(&'static str, String)>,
    human: String,
}

async fn ops(a: OpsArgs) -> Result<bool> {
    if a.pipeline == 0 {
        bail!("--pipeline must be at least 1");
    }
    let t = &a.target;
    let addr = resolve(&t.addr).await?;
    let timeout = Duration::from_secs(a.common.timeout);
    let mut c = Client::connect(addr, None, timeout, 256 * 1024).await?;
    c.login(&t.user, &t.pass).await?;
    let pid = a.common.server_pid;
    let mut lines: Vec<OpLine> = Vec::new();
    let mut errors: Vec<String> = Vec::new();

    // SELECT
    let cpu = CpuProbe::start(pid)?;
    let t = Instant::now();
    let exists = c.select(&a.target.mailbox).await?;
    let wall = t.elapsed();
    let (srv, _) = cpu.finish()?;
    let mut ok = true;
    if let Some(e) = a.expect_messages
        && e != exists
    {
        ok = false;
        errors.push(format!("SELECT: {exists} EXISTS, expected {e}"));
    }
    lines.push(OpLine {
        op: "select",
        wall,
        count: exists,
        server_ms: srv,
        ok,
        extra: vec![],
        human: format!("{exists} EXISTS"),
    });
    if exists == 0 {
        bail!("{} is empty: nothing to measure", a.target.mailbox);
    }

    if a.runs("fetch") {
        fetch_envelope(&mut c, pid, exists, &mut lines, &mut errors).await?;
    }
    if a.runs("search") {
        searches(&mut c, &a, pid, &mut lines, &mut errors).await?;
    }
    if a.runs("store") {
        stores(&mut c, pid, exists, &mut lines, &mut errors).await?;
    }
    if a.runs("peek") {
        peeks(&mut c, &a, pid, exists, &mut lines, &mut errors).await?;
    }
    if let Err(e) = c.logout().await {
        errors.push(format!("{e:#}"));
    }
    report_ops(&a, &lines, &errors)
}

/// `UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)`.
async fn fetch_envelope(
    c: &mut Client,
    pid: Option<u32>,
    exists: u64,
    lines: &mut Vec<OpLine>,
    errors: &mut Vec<String>,
) -> Result<()> {
    let mut n = 0u64;
    let mut uids = HashSet::new();
    let mut incomplete = 0u64;
    let mut bytes = 0u64;
    let cpu = CpuProbe::start(pid)?;
    let t = Instant::now();
    let done = c
        .command(
            "UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)",
            |r| {
                let Some(u) = r.untagged() else { return };
                if fetch_seq(u).is_none() {
                    return;
                }
                n += 1;
                bytes += (r.text.len() + r.literals.iter().map(Vec::len).sum::<usize>()) as u64;
                let complete = [
                    &b"ENVELOPE ("[..],
                    b"RFC822.SIZE ",
                    b"INTERNALDATE ",
                    b"FLAGS (",
                ]
                .iter()
                .all(|k| find(u, k).is_some());
                match uid_in(u) {
                    Some(uid) if complete => {
                        uids.insert(uid);
                    }
                    _ => incomplete += 1,
                }
            },
        )
        .await?;
    let wall = t.elapsed();
    let (srv, _) = cpu.finish()?;
    let mut ok = done.status == "OK";
    if !ok {
        errors.push(format!("UID FETCH: {} {}", done.status, done.text));
    } else if n != exists || uids.len() as u64 != exists || incomplete > 0 {
        ok = false;
        errors.push(format!(
            "UID FETCH 1:*: {n} FETCH responses, {} distinct UIDs, {incomplete} without all items; {exists} messages",
            uids.len()
        ));
    }
    lines.push(OpLine {
        op: "fetch_envelope",
        wall,
        count: n,
        server_ms: srv,
        ok,
        extra: vec![("response_bytes", bytes.to_string())],
        human: format!("{n} FETCH responses, {} MB", bytes / 1_000_000),
    });
    Ok(())
}

/// `UID SEARCH SUBJECT` and `UID SEARCH BODY`.
async fn searches(
    c: &mut Client,
    a: &OpsArgs,
    pid: Option<u32>,
    lines: &mut Vec<OpLine>,
    errors: &mut Vec<String>,
) -> Result<()> {
    for (op, key, token, expect) in [
        (
            "search_subject",
            "SUBJECT",
            &a.subject_token,
            a.expect_subject_hits,
        ),
        ("search_body", "BODY", &a.body_token, a.expect_body_hits),
    ] {
        let cpu = CpuProbe::start(pid)?;
        let t = Instant::now();
        let r = c.search_count(&format!("{key} {}", quoted(token))).await;
        let wall = t.elapsed();
        let (srv, _) = cpu.finish()?;
        let (ok, hits) = match r {
            Ok(h) => match expect {
                Some(e) if e != h => {
                    errors.push(format!("UID SEARCH {key} {token}: {h} hits, expected {e}"));
                    (false, h)
                }
                _ => (true, h),
            },
            Err(e) => {
                errors.push(format!("UID SEARCH {key} {token}: {e:#}"));
                (false, 0)
            }
        };
        lines.push(OpLine {
            op,
            wall,
            count: hits,
            server_ms: srv,
            ok,
            extra: vec![],
            human: format!("{hits} hits for {token:?}"),
        });
    }

    Ok(())
}

/// `UID STORE 1:* +FLAGS.SILENT (\Seen)`, then -FLAGS.SILENT (which
/// leaves the mailbox as it was, so runs repeat); each checked by a
/// SEARCH afterwards (not timed).
async fn stores(
    c: &mut Client,
    pid: Option<u32>,
    exists: u64,
    lines: &mut Vec<OpLine>,
    errors: &mut Vec<String>,
) -> Result<()> {
    for (op, sign, check) in [
        ("store_add_seen", '+', "UNSEEN"),
        ("store_remove_seen", '-', "SEEN"),
    ] {
        let mut untagged_fetch = 0u64;
        let cpu = CpuProbe::start(pid)?;
        let t = Instant::now();
        let done = c
            .command(&format!("UID STORE 1:* {sign}FLAGS.SILENT (\\Seen)"), |r| {
                if r.untagged().and_then(fetch_seq).is_some() {
                    untagged_fetch += 1;
                }
            })
            .await?;
        let wall = t.elapsed();
        let (srv, _) = cpu.finish()?;
        let mut ok = done.status == "OK";
        if !ok {
            errors.push(format!(
                "UID STORE {sign}FLAGS.SILENT: {} {}",
                done.status, done.text
            ));
        }
        let left = c.search_count(check).await?;
        if left != 0 {
            ok = false;
            errors.push(format!(
                "after UID STORE 1:* {sign}FLAGS.SILENT (\\Seen), UID SEARCH {check} finds {left}"
            ));
        }
        if untagged_fetch > 0 {
            eprintln!(
                "NOTE UID STORE 1:* {sign}FLAGS.SILENT (\\Seen) was answered with {untagged_fetch} untagged FETCH responses (.SILENT asks for none)"
            );
        }
        lines.push(OpLine {
            op,
            wall,
            count: exists,
            server_ms: srv,
            ok,
            extra: vec![
                ("untagged_fetch", untagged_fetch.to_string()),
                ("check_left", left.to_string()),
            ],
            human: format!(
                "{exists} messages, SEARCH {check} after: {left}, {untagged_fetch} untagged FETCH"
            ),
        });
    }

    Ok(())
}

/// Random `FETCH n BODY.PEEK[]`: one at a time, then pipelined; then no
/// message may be \Seen.
async fn peeks(
    c: &mut Client,
    a: &OpsArgs,
    pid: Option<u32>,
    exists: u64,
    lines: &mut Vec<OpLine>,
    errors: &mut Vec<String>,
) -> Result<()> {
    let mut rng = a.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let seqs: Vec<u64> = (0..a.peek)
        .map(|_| 1 + xorshift(&mut rng) % exists)
        .collect();
    for (op, window) in [("peek_seq", 1usize), ("peek_pipelined", a.pipeline)] {
        let cpu = CpuProbe::start(pid)?;
        let t = Instant::now();
        let r = peek(c, &seqs, window).await;
        let wall = t.elapsed();
        let (srv, _) = cpu.finish()?;
        let (ok, p) = match r {
            Ok(p) => {
                let ok = p.bad.is_empty() && p.fetched == seqs.len() as u64;
                if !ok {
                    errors.push(format!(
                        "FETCH BODY.PEEK[] ({window} in flight): {} of {} fetched; {}",
                        p.fetched,
                        seqs.len(),
                        p.bad.join("; ")
                    ));
                }
                (ok, p)
            }
            Err(e) => {
                errors.push(format!("FETCH BODY.PEEK[] ({window} in flight): {e:#}"));
                (false, PeekOutcome::default())
            }
        };
        let rate = p.fetched as f64 / wall.as_secs_f64();
        lines.push(OpLine {
            op,
            wall,
            count: p.fetched,
            server_ms: srv,
            ok,
            extra: vec![
                ("in_flight", window.to_string()),
                ("msgs_per_s", format!("{rate:.0}")),
                ("literal_bytes", p.bytes.to_string()),
                ("literal_min", p.min.to_string()),
                ("literal_max", p.max.to_string()),
            ],
            human: format!(
                "{} messages, {window} in flight = {rate:.0} msgs/s, literals {}..{} B",
                p.fetched, p.min, p.max
            ),
        });
    }
    // BODY.PEEK[] must not have set \Seen.
    let seen = c.search_count("SEEN").await?;
    if seen != 0 {
        errors.push(format!(
            "after FETCH BODY.PEEK[], UID SEARCH SEEN finds {seen} (PEEK must not set \\Seen)"
        ));
    }
    Ok(())
}

/// Print the operations' lines and RESULT lines and the errors; true if
/// there were none.
fn report_ops(a: &OpsArgs, lines: &[OpLine], errors: &[String]) -> Result<bool> {
    let label = label_of(&a.common);
    let run = if a.first { "first" } else { "repeat" };
    for l in lines {
        let cpu = l
            .server_ms
            .map(|ms| format!(", server CPU {ms:.0} ms"))
            .unwrap_or_default();
        println!(
            "imap ops{label} {run} {}: {:.1} ms{} ({}){}",
            l.op,
            l.wall.as_secs_f64() * 1000.0,
            cpu,
            l.human,
            if l.ok { "" } else { " FAILED" }
        );
        let mut rep = Report::default();
        rep.add("proto", "imap")
            .add("mode", "ops")
            .add("label", a.common.result_label())
            .add("addr", &a.target.addr)
            .add("run", run)
            .add("op", l.op)
            .add("ok", l.ok);
        rep.add_f("wall_ms", Some(l.wall.as_secs_f64() * 1000.0), 3)
            .add("count", l.count)
            .add_f("server_cpu_ms", l.server_ms, 0);
        for (k, v) in &l.extra {
            rep.add(k, v);
        }
        println!("{}", rep.result_line());
    }
    for e in errors {
        eprintln!("ERROR {e}");
    }
    Ok(errors.is_empty())
}

#[derive(Default)]
struct PeekOutcome {
    fetched: u64,
    bytes: u64,
    min: usize,
    max: usize,
    bad: Vec<String>,
}

impl PeekOutcome {
    fn note_bad(&mut self, s: String) {
        if self.bad.len() < 5 {
            self.bad.push(s);
        }
    }
}

/// `FETCH n BODY.PEEK[]` for every n in `seqs`, `window` commands in flight.
/// Each answer must be one FETCH response for one of the numbers asked,
/// with one literal that looks like the message (a Message-ID header).
async fn peek(c: &mut Client, seqs: &[u64], window: usize) -> Result<PeekOutcome> {
    let mut out = PeekOutcome {
        min: usize::MAX,
        ..Default::default()
    };
    let mut in_flight: HashMap<String, u64> = HashMap::new();
    // Message numbers asked and not yet answered (with multiplicity).
    let mut wanted: HashMap<u64, u32> = HashMap::new();
    let mut next = 0;
    while next < seqs.len() || !in_flight.is_empty() {
        let mut queued = false;
        while next < seqs.len() && in_flight.len() < window {
            let tag = c.next_tag();
            c.queue(&format!("{tag} FETCH {} BODY.PEEK[]", seqs[next]))
                .await?;
            in_flight.insert(tag, seqs[next]);
            *wanted.entry(seqs[next]).or_default() += 1;
            next += 1;
            queued = true;
        }
        if queued {
            c.flush().await?;
        }
        let r = c.read().await?;
        if let Some(u) = r.untagged() {
            let Some(seq) = fetch_seq(u) else { continue };
            match wanted.get_mut(&seq) {
                Some(k) if *k > 0 => *k -= 1,
                _ => {
                    out.note_bad(format!("FETCH response for {seq}, not asked: {}", r.show()));
                    continue;
                }
            }
            if find(u, b"BODY[]").is_none() || r.literals.len() != 1 {
                out.note_bad(format!(
                    "FETCH response without BODY[] literal: {}",
                    r.show()
                ));
                continue;
            }
            let lit = &r.literals[0];
            if find(lit, b"Message-ID:").is_none() {
                out.note_bad(format!("BODY[] of {seq} has no Message-ID header"));
                continue;
            }
            out.fetched += 1;
            out.bytes += lit.len() as u64;
            out.min = out.min.min(lit.len());
            out.max = out.max.max(lit.len());
        } else if let Some((tag, status, text)) = r.tagged() {
            let tag = String::from_utf8_lossy(tag).into_owned();
            let Some(seq) = in_flight.remove(&tag) else {
                bail!("tagged response for no command in flight: {}", r.show());
            };
            if !status.eq_ignore_ascii_case(b"OK") {
                out.note_bad(format!(
                    "FETCH {seq} BODY.PEEK[]: {} {}",
                    String::from_utf8_lossy(status),
                    String::from_utf8_lossy(text)
                ));
            }
        } else {
            bail!("unexpected continuation request: {}", r.show());
        }
    }
    if out.min == usize::MAX {
        out.min = 0;
    }
    Ok(out)
}

// ------------------------------------------------------------------ idle

struct IdleCfg {
    addr: SocketAddr,
    users: Vec<String>,
    pass: String,
    mailbox: String,
    sources: u32,
    timeout: Duration,
}

impl IdleCfg {
    fn user(&self, i: usize) -> &str {
        &self.users[i % self.users.len()]
    }

    fn source(&self, i: usize) -> Option<IpAddr> {
        (self.sources > 0).then(|| {
            IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                0,
                2 + (i as u32 % self.sources) as u8,
            ))
        })
    }
}

enum Event {
    Ready,
    SetupFailed(String),
    /// Saw `* n EXISTS` with n above SELECT's EXISTS, at this instant.
    Seen(Instant),
    /// The connection broke (or the server said BYE) while idling.
    Lost(String),
}

/// Connect, LOGIN, SELECT; returns the client and EXISTS.
async fn open_session(cfg: &IdleCfg, i: usize) -> Result<(Client, u64)> {
    let mut c = Client::connect(cfg.addr, cfg.source(i), cfg.timeout, 1024).await?;
    c.login(cfg.user(i), &cfg.pass).await?;
    let exists = c.select(&cfg.mailbox).await?;
    Ok((c, exists))
}

/// One idle connection: set up, report Ready, wait for EXISTS (or stop),
/// then DONE and LOGOUT.
async fn idle_conn(
    i: usize,
    cfg: Arc<IdleCfg>,
    setup: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Event>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    // Closed semaphore: setup was aborted before this one started.
    let Ok(permit) = setup.acquire().await else {
        return Ok(());
    };
    let opened = async {
        let (mut c, exists) = open_session(&cfg, i).await?;
        let tag = c.start_idle().await?;
        Ok::<_, anyhow::Error>((c, exists, tag))
    }
    .await;
    drop(permit);
    let (mut c, exists, tag) = match opened {
        Ok(v) => v,
        Err(e) => {
            let _ = tx.send(Event::SetupFailed(format!("{e:#}")));
            return Err(e);
        }
    };
    let _ = tx.send(Event::Ready);
    let forever = Duration::from_secs(365 * 86400);
    loop {
        tokio::select! {
            r = c.read_within(forever) => match r {
                Ok(r) => {
                    if let Some(n) = r.untagged().and_then(exists_of) {
                        if n > exists {
                            let _ = tx.send(Event::Seen(Instant::now()));
                            break;
                        }
                    } else if r.untagged().is_some_and(|u| u.starts_with(b"BYE")) || r.tagged().is_some() {
                        let why = format!("while idling: {}", r.show());
                        let _ = tx.send(Event::Lost(why.clone()));
                        bail!(why);
                    }
                }
                Err(e) => {
                    let _ = tx.send(Event::Lost(format!("while idling: {e:#}")));
                    return Err(e);
                }
            },
            _ = stop.changed() => break,
        }
    }
    let _ = stop.wait_for(|s| *s).await;
    c.done(&tag).await?;
    c.logout().await
}

/// A minimal LMTP delivery of one message to `rcpts`; returns (instant the
/// message went out, instant the last 250 arrived).
pub(crate) async fn lmtp_deliver(
    addr: SocketAddr,
    rcpts: &[String],
    timeout: Duration,
) -> Result<(Instant, Instant)> {
    let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
        .await
        .context("LMTP connect timed out")?
        .with_context(|| format!("cannot connect to LMTP at {addr}"))?;
    stream.set_nodelay(true)?;
    let (r, mut w) = stream.into_split();
    let mut rd = BufReader::new(r);
    async fn reply(rd: &mut BufReader<OwnedReadHalf>, timeout: Duration) -> Result<(u16, String)> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(timeout, rd.read_line(&mut line))
                .await
                .context("LMTP reply timed out")??;
            if n == 0 {
                bail!("LMTP server closed the connection");
            }
            let line = line.trim_end();
            let code: u16 = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .with_context(|| format!("malformed LMTP reply {line:?}"))?;
            text.push_str(line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, text));
            }
            text.push_str(" / ");
        }
    }
    async fn step(
        rd: &mut BufReader<OwnedReadHalf>,
        w: &mut OwnedWriteHalf,
        cmd: &str,
        want: u16,
        timeout: Duration,
    ) -> Result<()> {
        w.write_all(cmd.as_bytes()).await?;
        let (code, text) = reply(rd, timeout).await?;
        if code != want {
            bail!("LMTP {}: {text}", cmd.trim_end());
        }
        Ok(())
    }
    let (code, text) = reply(&mut rd, timeout).await?;
    if code != 220 {
        bail!("LMTP greeting: {text}");
    }
    step(
        &mut rd,
        &mut w,
        "LHLO cove-load.bench.example\r\n",
        250,
        timeout,
    )
    .await?;
    step(
        &mut rd,
        &mut w,
        "MAIL FROM:<load@bench.example>\r\n",
        250,
        timeout,
    )
    .await?;
    for r in rcpts {
        step(&mut rd, &mut w, &format!("RCPT TO:<{r}>\r\n"), 250, timeout).await?;
    }
    step(&mut rd, &mut w, "DATA\r\n", 354, timeout).await?;
    let msg = MessageGen::new(4096, false)?;
    let mut data = msg.header(u64::from(std::process::id()));
    data.extend_from_slice(msg.body());
    data.extend_from_slice(b".\r\n");
    let sent = Instant::now();
    w.write_all(&data).await?;
    for r in rcpts {
        let (code, text) = reply(&mut rd, timeout).await?;
        if !(200..300).contains(&code) {
            bail!("LMTP delivery to {r}: {text}");
        }
    }
    let acked = Instant::now();
    let _ = step(&mut rd, &mut w, "QUIT\r\n", 221, timeout).await;
    Ok((sent, acked))
}

/// Why setup must stop, if it must: the server or the machine is running
/// out of memory.
fn guard(pid: Option<u32>, max_rss_mib: Option<u64>, min_avail_mib: u64) -> Option<String> {
    if let Ok(avail) = mem_available_kib()
        && avail < min_avail_mib * 1024
    {
        return Some(format!(
            "MemAvailable {} MiB below the floor of {min_avail_mib} MiB",
            avail / 1024
        ));
    }
    if let (Some(pid), Some(max)) = (pid, max_rss_mib)
        && let Ok(rss) = tree_rss_kib(pid)
        && rss > max * 1024
    {
        return Some(format!(
            "server RSS {} MiB above the cap of {max} MiB",
            rss / 1024
        ));
    }
    None
}

/// Signed milliseconds from `from` to `to`.
fn ms_between(from: Instant, to: Instant) -> f64 {
    if to >= from {
        (to - from).as_secs_f64() * 1000.0
    } else {
        -((from - to).as_secs_f64() * 1000.0)
    }
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

async fn sample(pid: Option<u32>, settle: Duration) -> Result<Option<MemSample>> {
    tokio::time::sleep(settle).await;
    pid.map(tree_memory).transpose()
}

async fn idle(a: IdleArgs) -> Result<bool> {
    if a.conns == 0 || a.users == 0 || a.setup_concurrency == 0 {
        bail!("--conns, --users and --setup-concurrency must be at least 1");
    }
    if a.users > 1 && !a.user_template.contains("{n}") {
        bail!("--user-template must contain {{n}} when --users > 1");
    }
    if a.sources > 250 {
        bail!("--sources: at most 250 (127.0.0.2 .. 127.0.0.251)");
    }
    let cfg = Arc::new(IdleCfg {
        addr: resolve(&a.addr).await?,
        users: (0..a.users)
            .map(|k| {
                a.user_template
                    .replace("{n}", &(a.first_user + k).to_string())
            })
            .collect(),
        pass: a.pass.clone(),
        mailbox: a.mailbox.clone(),
        sources: a.sources,
        timeout: Duration::from_secs(a.common.timeout),
    });
    let lmtp = resolve(&a.lmtp_addr).await?;
    let pid = a.common.server_pid;
    let settle = Duration::from_millis(a.settle_ms);

    // Warm-up: whole sessions, not measured.
    let mut warm = tokio::task::JoinSet::new();
    for i in 0..a.warmup {
        let cfg = cfg.clone();
        warm.spawn(async move {
            let (mut c, _) = open_session(&cfg, i).await?;
            let tag = c.start_idle().await?;
            c.done(&tag).await?;
            c.logout().await
        });
    }
    while let Some(r) = warm.join_next().await {
        r.context("warm-up task panicked")?
            .context("warm-up session")?;
    }
    let before = sample(pid, settle).await?;

    // All connections into IDLE.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let setup = Arc::new(Semaphore::new(a.setup_concurrency));
    let t_setup = Instant::now();
    let tasks: Vec<_> = (0..a.conns)
        .map(|i| {
            tokio::spawn(idle_conn(
                i,
                cfg.clone(),
                setup.clone(),
                tx.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    drop(tx);
    let (mut ready, mut setup_failed, mut lost, mut early) = (0usize, 0usize, 0usize, 0usize);
    let mut errors: Vec<String> = Vec::new();
    let mut aborted: Option<String> = None;
    let mut guard_tick = tokio::time::interval(Duration::from_secs(1));
    while ready + setup_failed < a.conns {
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            _ = guard_tick.tick() => {
                if let Some(why) = guard(pid, a.max_server_rss_mib, a.min_mem_available_mib) {
                    errors.insert(0, format!(
                        "ABORTED after {ready} connections: {why}; no more connections opened, no delivery"
                    ));
                    aborted = Some(why);
                    setup.close();
                    break;
                }
                continue;
            }
        };
        match ev {
            Some(Event::Ready) => ready += 1,
            Some(Event::SetupFailed(e)) => {
                setup_failed += 1;
                errors.push(format!("setup: {e}"));
            }
            Some(Event::Seen(_)) => early += 1,
            Some(Event::Lost(e)) => {
                lost += 1;
                errors.push(e);
            }
            None => break,
        }
    }
    let setup_s = t_setup.elapsed().as_secs_f64();
    // Aborted: sample at once (memory is what went wrong), skip delivery.
    let after = sample(
        pid,
        if aborted.is_some() {
            Duration::ZERO
        } else {
            settle
        },
    )
    .await?;

    // One delivery; every connection should see EXISTS.
    let mut delays: Vec<f64> = Vec::with_capacity(ready);
    let mut from_sent: Vec<f64> = Vec::with_capacity(ready);
    let mut lmtp_ms = None;
    let delivered = if aborted.is_some() {
        Err(anyhow::anyhow!("skipped"))
    } else {
        lmtp_deliver(lmtp, &cfg.users, cfg.timeout).await
    };
    match delivered {
        _ if aborted.is_some() => {}
        Ok((sent, acked)) => {
            lmtp_ms = Some(ms_between(sent, acked));
            let deadline =
                tokio::time::Instant::from_std(acked) + Duration::from_secs(a.exists_timeout);
            while delays.len() + lost < ready {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(Event::Seen(at))) => {
                        delays.push(ms_between(acked, at));
                        from_sent.push(ms_between(sent, at));
                    }
                    Ok(Some(Event::Lost(e))) => {
                        lost += 1;
                        errors.push(e);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
        Err(e) => errors.push(format!("delivery: {e:#}")),
    }
    let missed = if aborted.is_some() {
        0
    } else {
        ready.saturating_sub(delays.len() + lost)
    };
    if missed > 0 {
        errors.push(format!(
            "{missed} of {ready} idle connections saw no EXISTS within {} s of the delivery",
            a.exists_timeout
        ));
    }

    // Leave: DONE and LOGOUT everywhere.
    let _ = stop_tx.send(true);
    let mut logout_errors = 0usize;
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(a.common.timeout), t).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                logout_errors += 1;
                if logout_errors <= 5 {
                    errors.push(format!("leaving: {e:#}"));
                }
            }
            Ok(Err(e)) => errors.push(format!("connection task failed: {e}")),
            Err(_) => {
                logout_errors += 1;
                errors.push("leaving: timed out".into());
            }
        }
    }
    // Setup failures and lost connections already counted; their tasks'
    // errors are the same ones.
    let logout_errors = logout_errors.saturating_sub(setup_failed + lost);
    let closed = sample(pid, settle).await?;

    delays.sort_by(f64::total_cmp);
    from_sent.sort_by(f64::total_cmp);
    let per_conn = |f: fn(&MemSample) -> u64| -> Option<f64> {
        let (b, a) = (before?, after?);
        (ready > 0).then(|| (f(&a) as f64 - f(&b) as f64) / ready as f64)
    };
    let rss_pc = per_conn(|m| m.rss_kib);
    let pss_pc = per_conn(|m| m.pss_kib);
    let priv_pc = per_conn(|m| m.private_kib);

    let mut rep = Report::default();
    rep.add("proto", "imap")
        .add("mode", "idle")
        .add("label", a.common.result_label())
        .add("addr", &a.addr)
        .add("conns", a.conns)
        .add("users", a.users)
        .add("conns_ok", ready)
        .add("setup_failed", setup_failed)
        .add("lost", lost)
        .add("early_exists", early)
        .add("aborted", aborted.as_deref().unwrap_or("no"));
    rep.add_f("setup_s", Some(setup_s), 2)
        .add_f("logins_per_s", Some(ready as f64 / setup_s), 1);
    for (name, m) in [("before", before), ("after", after), ("closed", closed)] {
        if let Some(m) = m {
            rep.add(&format!("procs_{name}"), m.processes)
                .add(&format!("rss_{name}_kib"), m.rss_kib)
                .add(&format!("pss_{name}_kib"), m.pss_kib)
                .add(&format!("private_{name}_kib"), m.private_kib);
        }
    }
    rep.add_f("rss_per_conn_kib", rss_pc, 2)
        .add_f("pss_per_conn_kib", pss_pc, 2)
        .add_f("private_per_conn_kib", priv_pc, 2)
        .add_f("lmtp_ms", lmtp_ms, 2)
        .add("exists_seen", delays.len())
        .add("exists_missed", missed)
        .add_f("exists_min_ms", delays.first().copied(), 2)
        .add_f("exists_p50_ms", pct(&delays, 50.0), 2)
        .add_f("exists_p99_ms", pct(&delays, 99.0), 2)
        .add_f("exists_max_ms", delays.last().copied(), 2)
        .add_f("exists_p99_from_sent_ms", pct(&from_sent, 99.0), 2)
        .add("logout_errors", logout_errors);

    for e in errors.iter().take(20) {
        eprintln!("ERROR {e}");
    }
    if errors.len() > 20 {
        eprintln!("ERROR ... and {} more", errors.len() - 20);
    }
    let f = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.1}"));
    let mem = match (before, after) {
        (Some(b), Some(af)) => format!(
            ", server memory {} → {} KiB RSS ({} KiB/conn), PSS {} KiB/conn, {} → {} processes",
            b.rss_kib,
            af.rss_kib,
            f(rss_pc),
            f(pss_pc),
            b.processes,
            af.processes
        ),
        _ => String::new(),
    };
    println!(
        "imap idle{}: {ready}/{} connections in IDLE (setup {setup_s:.1} s = {:.0} logins/s){mem}; \
         delivery acked in {} ms; EXISTS seen by {}/{ready}: p50 {} ms, p99 {} ms, max {} ms after the 250",
        label_of(&a.common),
        a.conns,
        ready as f64 / setup_s,
        f(lmtp_ms),
        delays.len(),
        f(pct(&delays, 50.0)),
        f(pct(&delays, 99.0)),
        f(delays.last().copied()),
    );
    println!("{}", rep.result_line());
    Ok(errors.is_empty() && ready == a.conns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing() {
        assert_eq!(literal_len(b"* 1 FETCH (BODY[] {4096}"), Some(4096));
        assert_eq!(literal_len(b"* 1 FETCH (BODY[] {12+}"), Some(12));
        assert_eq!(literal_len(b"* OK {x}"), None);
        assert_eq!(literal_len(b"* OK done"), None);
        assert_eq!(exists_of(b"100000 EXISTS"), Some(100000));
        assert_eq!(exists_of(b"3 RECENT"), None);
        assert_eq!(fetch_seq(b"7 FETCH (UID 9)"), Some(7));
        assert_eq!(uid_in(b"7 FETCH (FLAGS () UID 9 RFC822.SIZE 3)"), Some(9));
        assert_eq!(search_hits(b"SEARCH 1 2 3"), Some(3));
        assert_eq!(search_hits(b"SEARCH"), Some(0));
        assert_eq!(search_hits(b"SEARCHX 1"), None);
        assert_eq!(quoted("a\"b\\"), "\"a\\\"b\\\\\"");
        let r = Resp {
            text: b"c12 OK done".to_vec(),
            literals: vec![],
        };
        assert_eq!(r.tagged(), Some((&b"c12"[..], &b"OK"[..], &b"done"[..])));
        let mut v = vec![3.0, 1.0, 2.0];
        v.sort_by(f64::total_cmp);
        assert_eq!(pct(&v, 50.0), Some(2.0));
        assert_eq!(pct(&v, 99.0), Some(3.0));
    }

    #[tokio::test]
    async fn reads_literals() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"* OK hi\r\n").await.unwrap();
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(
                b"* 1 FETCH (BODY[] {5}\r\nab\r\nc ENVELOPE (NIL {3}\r\nx)y))\r\nc1 OK done\r\n",
            )
            .await
            .unwrap();
            let _ = s.read(&mut buf).await;
        });
        let mut c = Client::connect(addr, None, Duration::from_secs(5), 1024)
            .await
            .unwrap();
        let mut seen = Vec::new();
        let done = c
            .command("FETCH 1 BODY[]", |r| {
                seen.push((r.text.clone(), r.literals.clone()))
            })
            .await
            .unwrap();
        assert_eq!(done.status, "OK");
        assert_eq!(seen.len(), 1);
        assert_eq!(
            seen[0].0,
            b"* 1 FETCH (BODY[] {5} ENVELOPE (NIL {3}))".to_vec()
        );
        assert_eq!(seen[0].1, vec![b"ab\r\nc".to_vec(), b"x)y".to_vec()]);
    }
}
