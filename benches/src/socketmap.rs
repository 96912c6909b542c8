//! `cove-load socketmap`: Postfix socketmap lookups (socketmap_table(5)),
//! as Postfix makes them: each connection sends one netstring request and
//! waits for its reply before the next. `--connections` such clients run at
//! once for `--seconds`; keys cycle through `--keys` (a comma list).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::CommonArgs;
use crate::stats::{CpuProbe, Latencies, Report};

#[derive(Args, Debug)]
pub struct SocketmapArgs {
    /// The socketmap listener, host:port.
    #[arg(long, default_value = "127.0.0.1:2426")]
    pub addr: String,
    /// The map: domains, mailboxes or transport.
    #[arg(long, default_value = "transport")]
    pub map: String,
    /// Keys to look up, comma-separated, used in turn.
    #[arg(long, default_value = "bench0@example.com")]
    pub keys: String,
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    #[command(flatten)]
    pub common: CommonArgs,
}

pub async fn run(a: SocketmapArgs) -> Result<bool> {
    let keys: Vec<String> = a.keys.split(',').map(str::to_string).collect();
    if keys.iter().any(String::is_empty) || a.connections == 0 {
        bail!("--keys must not hold an empty key, --connections must be above 0");
    }
    let probe = CpuProbe::start(a.common.server_pid)?;
    let until = Instant::now() + Duration::from_secs(a.seconds);
    let timeout = Duration::from_secs(a.common.timeout);
    let mut tasks = Vec::new();
    for c in 0..a.connections {
        let (addr, map, keys) = (a.addr.clone(), a.map.clone(), keys.clone());
        tasks.push(tokio::spawn(async move {
            client(&addr, &map, &keys, c, until, timeout).await
        }));
    }
    let started = Instant::now();
    let mut lat = Latencies::default();
    let mut answers = [0u64; 4];
    for t in tasks {
        let (l, counts) = t.await.context("client task")??;
        lat.extend(l);
        for (sum, n) in answers.iter_mut().zip(counts) {
            *sum += n;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let (server_ms, me_ms) = probe.finish()?;
    let total: u64 = answers.iter().sum();
    let rate = total as f64 / secs;
    let label = a.common.result_label();
    let (p50, p99) = (lat.percentile_ms(50.0), lat.percentile_ms(99.0));
    println!(
        "socketmap {label}: {total} {} lookups in {secs:.1} s over {} connections: {rate:.0}/s, p50 {:.3} ms, p99 {:.3} ms (OK {}, NOTFOUND {}, TEMP {}, other {})",
        a.map,
        a.connections,
        p50.unwrap_or(f64::NAN),
        p99.unwrap_or(f64::NAN),
        answers[0],
        answers[1],
        answers[2],
        answers[3]
    );
    let mut r = Report::default();
    r.add("mode", "socketmap")
        .add("label", label)
        .add("map", &a.map)
        .add("connections", a.connections)
        .add("lookups", total)
        .add("per_sec", format!("{rate:.0}"))
        .add_f("p50_ms", p50, 3)
        .add_f("p99_ms", p99, 3)
        .add_f("server_cpu_ms", server_ms, 0)
        .add("load_cpu_ms", format!("{me_ms:.0}"));
    println!("{}", r.result_line());
    Ok(answers[3] == 0)
}

/// One Postfix-like client: lookups one after another until `until`.
/// Latencies, and answers counted as OK, NOTFOUND, TEMP, other.
async fn client(
    addr: &str,
    map: &str,
    keys: &[String],
    first: usize,
    until: Instant,
    timeout: Duration,
) -> Result<(Latencies, [u64; 4])> {
    let mut tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    tcp.set_nodelay(true)?;
    let mut lat = Latencies::default();
    let mut counts = [0u64; 4];
    let mut buf = vec![0u8; 4096];
    let mut i = first;
    while Instant::now() < until {
        let payload = format!("{map} {}", keys[i % keys.len()]);
        i += 1;
        let request = format!("{}:{payload},", payload.len());
        let t = Instant::now();
        tcp.write_all(request.as_bytes()).await?;
        let reply = tokio::time::timeout(timeout, read_netstring(&mut tcp, &mut buf))
            .await
            .context("no reply in time")??;
        lat.push(t.elapsed());
        let slot = match reply.split(' ').next() {
            Some("OK") => 0,
            Some("NOTFOUND") => 1,
            Some("TEMP") => 2,
            _ => 3,
        };
        counts[slot] += 1;
    }
    Ok((lat, counts))
}

/// Read one netstring's payload.
async fn read_netstring(tcp: &mut TcpStream, buf: &mut [u8]) -> Result<String> {
    let mut got = Vec::new();
    loop {
        if let Some(colon) = got.iter().position(|&b| b == b':') {
            let len: usize = std::str::from_utf8(&got[..colon])?.parse()?;
            if got.len() > colon + 1 + len {
                return Ok(String::from_utf8_lossy(&got[colon + 1..colon + 1 + len]).into_owned());
            }
        }
        let n = tcp.read(buf).await?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        got.extend_from_slice(&buf[..n]);
    }
}
