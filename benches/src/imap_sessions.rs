//! `imap sessions`: whole sessions per second — C clients, each looping
//! connect, LOGIN, SELECT, LOGOUT for a fixed time — so that the login path
//! (password check, account open, SELECT) is what is measured. With an
//! expensive hash (argon2id) the password check bounds it; with a cheap
//! one, the protocol path does.

use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;

use crate::CommonArgs;
use crate::imap::{Client, Target, resolve};
use crate::stats::{CpuProbe, Latencies, Report};

#[derive(Args, Debug)]
pub struct SessionsArgs {
    #[command(flatten)]
    pub target: Target,
    /// Clients looping at once.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Seconds to loop.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// One session: connect, LOGIN, SELECT, LOGOUT.
async fn session(a: &SessionsArgs, addr: std::net::SocketAddr, timeout: Duration) -> Result<()> {
    let t = &a.target;
    let mut c = Client::connect(addr, None, timeout, 16 * 1024).await?;
    c.login(&t.user, &t.pass).await?;
    c.select(&t.mailbox).await?;
    c.logout().await
}

pub async fn sessions(a: SessionsArgs) -> Result<bool> {
    let addr = resolve(&a.target.addr).await?;
    let timeout = Duration::from_secs(a.common.timeout);
    // One warm-up session (opens the account, fills caches), not counted.
    session(&a, addr, timeout).await?;
    let a = std::sync::Arc::new(a);
    let probe = CpuProbe::start(a.common.server_pid)?;
    let started = Instant::now();
    let until = started + Duration::from_secs(a.seconds);
    let mut tasks = Vec::new();
    for _ in 0..a.clients {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Latencies::default();
            let mut done = 0u64;
            let mut failed = 0u64;
            let mut first_error = None;
            while Instant::now() < until {
                let t = Instant::now();
                match session(&a, addr, timeout).await {
                    Ok(()) => {
                        lat.push(t.elapsed());
                        done += 1;
                    }
                    Err(e) => {
                        failed += 1;
                        first_error.get_or_insert(format!("{e:#}"));
                    }
                }
            }
            (lat, done, failed, first_error)
        }));
    }
    let mut lat = Latencies::default();
    let (mut done, mut failed) = (0u64, 0u64);
    let mut errors = Vec::new();
    for t in tasks {
        let (l, d, f, e) = t.await?;
        lat.extend(l);
        done += d;
        failed += f;
        errors.extend(e);
    }
    let wall = started.elapsed().as_secs_f64();
    let (server_ms, client_ms) = probe.finish()?;
    let rate = done as f64 / wall;
    let (p50, p99) = (lat.percentile_ms(50.0), lat.percentile_ms(99.0));
    println!(
        "imap sessions [{}]: {done} sessions in {wall:.1} s by {} clients = {rate:.1}/s, p50 {:.1} ms, p99 {:.1} ms, {failed} failed{}",
        a.common.result_label(),
        a.clients,
        p50.unwrap_or(f64::NAN),
        p99.unwrap_or(f64::NAN),
        server_ms
            .map(|ms| format!(", server CPU {:.2} ms/session", ms / done.max(1) as f64))
            .unwrap_or_default()
    );
    let mut rep = Report::default();
    rep.add("proto", "imap")
        .add("mode", "sessions")
        .add("label", a.common.result_label())
        .add("addr", &a.target.addr)
        .add("clients", a.clients)
        .add("sessions", done)
        .add("failed", failed);
    rep.add_f("wall_s", Some(wall), 3)
        .add_f("sessions_per_s", Some(rate), 1)
        .add_f("p50_ms", p50, 2)
        .add_f("p99_ms", p99, 2)
        .add_f("server_cpu_ms", server_ms, 0)
        .add_f(
            "server_cpu_ms_per_session",
            server_ms.map(|ms| ms / done.max(1) as f64),
            3,
        )
        .add_f("client_cpu_ms", Some(client_ms), 0);
    println!("{}", rep.result_line());
    for e in &errors {
        eprintln!("ERROR {e}");
    }
    Ok(failed == 0)
}
