//! `cove-load auth-http`: nginx's mail `auth_http` requests (the protocol
//! of ngx_mail_auth_http_module) against cove's `GET /auth`, made as nginx
//! makes them: one HTTP/1.0 request per connection, the credentials in
//! `Auth-User` / `Auth-Pass` headers, the client's address in `Client-IP`.
//! `--connections` such clients run at once for `--seconds`, each with its
//! own client address (so no address collects failure penalties).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::CommonArgs;
use crate::stats::{CpuProbe, Latencies, Report};

#[derive(Args, Debug)]
pub struct AuthHttpArgs {
    /// cove's HTTP listener, host:port.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub addr: String,
    #[arg(long)]
    pub user: String,
    #[arg(long)]
    pub pass: String,
    /// imap, pop3 or smtp (Auth-Protocol).
    #[arg(long, default_value = "imap")]
    pub protocol: String,
    /// The X-Auth-Key header, if cove's `[http] auth_key` is set.
    #[arg(long)]
    pub auth_key: Option<String>,
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    #[command(flatten)]
    pub common: CommonArgs,
}

pub async fn run(a: AuthHttpArgs) -> Result<bool> {
    if a.connections == 0 || a.connections > 250 {
        bail!("--connections must be between 1 and 250");
    }
    let probe = CpuProbe::start(a.common.server_pid)?;
    let until = Instant::now() + Duration::from_secs(a.seconds);
    let timeout = Duration::from_secs(a.common.timeout);
    let mut tasks = Vec::new();
    for c in 0..a.connections {
        let request = request(&a, c);
        let addr = a.addr.clone();
        tasks.push(tokio::spawn(async move {
            client(&addr, &request, until, timeout).await
        }));
    }
    let started = Instant::now();
    let mut lat = Latencies::default();
    let (mut ok, mut other) = (0u64, 0u64);
    for t in tasks {
        let (l, good, bad) = t.await.context("client task")??;
        lat.extend(l);
        ok += good;
        other += bad;
    }
    let secs = started.elapsed().as_secs_f64();
    let (server_ms, me_ms) = probe.finish()?;
    let rate = ok as f64 / secs;
    let label = a.common.result_label();
    let (p50, p99) = (lat.percentile_ms(50.0), lat.percentile_ms(99.0));
    println!(
        "auth-http {label}: {ok} OK answers in {secs:.1} s over {} connections: {rate:.0}/s, p50 {:.2} ms, p99 {:.2} ms ({other} other answers)",
        a.connections,
        p50.unwrap_or(f64::NAN),
        p99.unwrap_or(f64::NAN),
    );
    let mut r = Report::default();
    r.add("mode", "auth-http")
        .add("label", label)
        .add("protocol", &a.protocol)
        .add("connections", a.connections)
        .add("ok", ok)
        .add("other", other)
        .add("per_sec", format!("{rate:.0}"))
        .add_f("p50_ms", p50, 2)
        .add_f("p99_ms", p99, 2)
        .add_f("server_cpu_ms", server_ms, 0)
        .add("load_cpu_ms", format!("{me_ms:.0}"));
    println!("{}", r.result_line());
    Ok(other == 0)
}

/// The request nginx sends for client number `c` (address 192.0.2.c+1).
fn request(a: &AuthHttpArgs, c: usize) -> String {
    let key = a
        .auth_key
        .as_ref()
        .map(|k| format!("X-Auth-Key: {k}\r\n"))
        .unwrap_or_default();
    format!(
        "GET /auth HTTP/1.0\r\nHost: localhost\r\nAuth-Method: plain\r\nAuth-User: {}\r\nAuth-Pass: {}\r\nAuth-Protocol: {}\r\nAuth-Login-Attempt: 1\r\nClient-IP: 192.0.2.{}\r\nClient-Host: [UNAVAILABLE]\r\n{key}\r\n",
        a.user,
        a.pass,
        a.protocol,
        c + 1
    )
}

/// One nginx worker's worth of requests, one after another until `until`:
/// latencies, `Auth-Status: OK` answers, other answers.
async fn client(
    addr: &str,
    request: &str,
    until: Instant,
    timeout: Duration,
) -> Result<(Latencies, u64, u64)> {
    let mut lat = Latencies::default();
    let (mut ok, mut other) = (0u64, 0u64);
    let mut reply = Vec::with_capacity(1024);
    while Instant::now() < until {
        let t = Instant::now();
        reply.clear();
        tokio::time::timeout(timeout, async {
            let mut tcp = TcpStream::connect(addr)
                .await
                .with_context(|| format!("connect to {addr}"))?;
            tcp.set_nodelay(true)?;
            tcp.write_all(request.as_bytes()).await?;
            // HTTP/1.0: the answer ends when the server closes.
            tcp.read_to_end(&mut reply).await?;
            anyhow::Ok(())
        })
        .await
        .context("no answer in time")??;
        lat.push(t.elapsed());
        let text = String::from_utf8_lossy(&reply);
        if text
            .lines()
            .any(|l| l.eq_ignore_ascii_case("Auth-Status: OK"))
        {
            ok += 1;
        } else {
            other += 1;
        }
    }
    Ok((lat, ok, other))
}
