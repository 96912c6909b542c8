//! Replication mode: `repl lag` delivers over LMTP to node A at a steady
//! rate while one IMAP connection IDLEs on the same mailbox on node B, and
//! measures, per message, the time from A's 250 to B's `* n EXISTS` that
//! first counts it (replication lag as a user of B sees it).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use tokio::sync::mpsc;

use crate::CommonArgs;
use crate::imap::{Client, exists_of, lmtp_deliver};

#[derive(Args, Debug)]
pub struct ReplArgs {
    #[command(subcommand)]
    cmd: ReplCmd,
}

#[derive(Subcommand, Debug)]
enum ReplCmd {
    /// Lag from a delivery on node A until an IDLE client on node B sees it.
    Lag(LagArgs),
}

#[derive(Args, Debug)]
struct LagArgs {
    /// LMTP address of node A.
    #[arg(long)]
    lmtp: SocketAddr,
    /// IMAP address of node B.
    #[arg(long)]
    imap: SocketAddr,
    #[arg(long)]
    user: String,
    #[arg(long)]
    password: String,
    #[arg(long, default_value = "INBOX")]
    mailbox: String,
    /// Deliveries per second.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Messages to deliver.
    #[arg(long, default_value_t = 500)]
    count: u64,
    #[command(flatten)]
    common: CommonArgs,
}

pub async fn run(args: ReplArgs) -> Result<bool> {
    match args.cmd {
        ReplCmd::Lag(a) => lag(a).await,
    }
}

async fn lag(a: LagArgs) -> Result<bool> {
    if a.rate <= 0.0 {
        bail!("--rate must be above 0");
    }
    let timeout = Duration::from_secs(a.common.timeout);
    let mut c = Client::connect(a.imap, None, timeout, 4096).await?;
    c.login(&a.user, &a.password).await?;
    let base = c.select(&a.mailbox).await?;
    let tag = c.start_idle().await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Instant)>();
    let watcher = tokio::spawn(async move {
        let forever = Duration::from_secs(86400);
        loop {
            let r = c.read_within(forever).await?;
            if let Some(n) = r.untagged().and_then(exists_of)
                && tx.send((n, Instant::now())).is_err()
            {
                break;
            }
        }
        c.done(&tag).await?;
        c.logout().await
    });
    let rcpts = [a.user.clone()];
    let start = Instant::now();
    let mut acked = Vec::with_capacity(a.count as usize);
    for i in 0..a.count {
        let at = start + Duration::from_secs_f64(i as f64 / a.rate);
        tokio::time::sleep_until(at.into()).await;
        let (_, ack) = lmtp_deliver(a.lmtp, &rcpts, timeout)
            .await
            .with_context(|| format!("delivery {}", i + 1))?;
        acked.push(ack);
    }
    let want = base + a.count;
    let mut seen: Vec<(u64, Instant)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.last().is_none_or(|(n, _)| *n < want) {
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some(e)) => seen.push(e),
            _ => break,
        }
    }
    watcher.abort();
    let mut lags = Vec::new();
    let mut missing = 0;
    for (i, ack) in acked.iter().enumerate() {
        let n = base + i as u64 + 1;
        match seen.iter().find(|(count, _)| *count >= n) {
            Some((_, t)) => lags.push(t.saturating_duration_since(*ack).as_secs_f64() * 1000.0),
            None => missing += 1,
        }
    }
    lags.sort_by(f64::total_cmp);
    let pct = |p: f64| -> f64 {
        if lags.is_empty() {
            return f64::NAN;
        }
        let i = ((p / 100.0) * (lags.len() - 1) as f64).round() as usize;
        lags[i.min(lags.len() - 1)]
    };
    let (p50, p99, max) = (pct(50.0), pct(99.0), pct(100.0));
    let (label, seen) = (a.common.result_label(), lags.len());
    println!(
        "repl lag {label}: {} deliveries at {}/s, seen {seen} on B; lag p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms, {missing} never seen",
        a.count, a.rate
    );
    println!(
        "RESULT mode=repl-lag label={label} count={} rate={} seen={seen} p50_ms={p50:.1} p99_ms={p99:.1} max_ms={max:.1} missing={missing}",
        a.count, a.rate
    );
    Ok(missing == 0)
}
