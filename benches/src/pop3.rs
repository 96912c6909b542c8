//! `cove-load pop3`: RETR every message of a maildrop, in sequence (one
//! command in flight) or pipelined (RFC 2449 PIPELINING: `--pipeline N`
//! commands in flight), against any POP3 server.
//!
//! The client is built not to be the limit: one connection, a 256 KiB read
//! buffer, and each answer found by scanning for the `.CRLF` terminator at
//! a line start instead of reading line by line.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::CommonArgs;
use crate::stats::{CpuProbe, Latencies, Report};

#[derive(Args, Debug)]
pub struct Pop3Args {
    /// Server address, host:port.
    #[arg(long, default_value = "127.0.0.1:1110")]
    pub addr: String,
    #[arg(long, default_value = "bench0@example.com")]
    pub user: String,
    #[arg(long, default_value = "bench")]
    pub pass: String,
    /// Messages to RETR (1..=N); the maildrop must hold at least this many.
    /// 0: all of them.
    #[arg(long, default_value_t = 0)]
    pub messages: u64,
    /// RETR commands in flight (1: in sequence).
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// How the window is refilled: `half` sends the missing commands in
    /// one write once half the window is answered; `each` sends one new
    /// command after each answer (a write per answer, as a simple
    /// pipelining client does).
    #[arg(long, value_enum, default_value_t = Refill::Half)]
    pub refill: Refill,
    /// Instead of RETRs: this many polls as a mail client checking for new
    /// mail makes them (connect, USER, PASS, STAT, UIDL, QUIT), timed.
    #[arg(long, default_value_t = 0)]
    pub polls: u32,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refill {
    Half,
    Each,
}

/// One POP3 connection of the load client.
struct Connection {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
    line: Vec<u8>,
    timeout: Duration,
}

impl Connection {
    /// Connect, read the greeting, USER and PASS.
    async fn login(args: &Pop3Args) -> Result<Connection> {
        let tcp = TcpStream::connect(&args.addr)
            .await
            .with_context(|| format!("connect to {}", args.addr))?;
        tcp.set_nodelay(true)?;
        let (r, w) = tcp.into_split();
        let mut c = Connection {
            r: BufReader::with_capacity(256 * 1024, r),
            w,
            line: Vec::new(),
            timeout: Duration::from_secs(args.common.timeout),
        };
        c.status("greeting").await?;
        c.command(&format!("USER {}", args.user)).await?;
        c.command(&format!("PASS {}", args.pass)).await?;
        Ok(c)
    }

    /// Read a `+OK` line into `self.line`.
    async fn status(&mut self, what: &str) -> Result<()> {
        self.line.clear();
        tokio::time::timeout(self.timeout, self.r.read_until(b'\n', &mut self.line))
            .await
            .with_context(|| format!("{what}: no answer within {:?}", self.timeout))??;
        if !self.line.starts_with(b"+OK") {
            bail!("{what}: {}", String::from_utf8_lossy(&self.line).trim_end());
        }
        Ok(())
    }

    /// Send a command, read its `+OK` line.
    async fn command(&mut self, command: &str) -> Result<()> {
        self.w
            .write_all(format!("{command}\r\n").as_bytes())
            .await?;
        let what = command.split(' ').next().unwrap_or(command);
        self.status(what).await
    }

    /// Read the rest of a multi-line answer (after its status line), up to
    /// and including the `.CRLF`; the bytes it had.
    async fn multi_line(&mut self, what: &str) -> Result<u64> {
        let mut scan = Terminator::default();
        let mut bytes = 0u64;
        loop {
            let buf = tokio::time::timeout(self.timeout, self.r.fill_buf())
                .await
                .with_context(|| format!("{what}: no data within {:?}", self.timeout))??;
            if buf.is_empty() {
                bail!("connection closed inside {what}");
            }
            let (used, end) = scan.feed(buf);
            bytes += used as u64;
            self.r.consume(used);
            if end {
                return Ok(bytes);
            }
        }
    }

    /// The message count of a STAT answer.
    async fn stat(&mut self) -> Result<u64> {
        self.command("STAT").await?;
        String::from_utf8_lossy(&self.line)
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .context("STAT answer without a count")
    }
}

pub async fn run(args: Pop3Args) -> Result<bool> {
    if args.polls > 0 {
        return polls(args).await;
    }
    let mut c = Connection::login(&args).await?;
    let have = c.stat().await?;
    let n = if args.messages == 0 {
        have
    } else {
        args.messages
    };
    if have < n {
        bail!("the maildrop holds {have} messages, {n} asked for");
    }
    let depth = args.pipeline.max(1);

    let cpu = CpuProbe::start(args.common.server_pid)?;
    let start = Instant::now();
    let mut sent = 0u64;
    let mut done = 0u64;
    let mut bytes = 0u64;
    let mut commands = Vec::new();
    while done < n {
        commands.clear();
        // Refill the window when half of it is answered, in one write, or
        // one command per answer.
        let refill = match args.refill {
            Refill::Half => sent - done <= (depth as u64) / 2,
            Refill::Each => true,
        };
        while refill && sent < n && sent - done < depth as u64 {
            sent += 1;
            commands.extend_from_slice(format!("RETR {sent}\r\n").as_bytes());
        }
        if !commands.is_empty() {
            c.w.write_all(&commands).await?;
        }
        // One answer: the status line, then up to `.CRLF` at a line start.
        c.status("RETR").await?;
        bytes += c.multi_line(&format!("RETR {}", done + 1)).await?;
        done += 1;
    }
    let elapsed = start.elapsed();
    let (server_ms, client_ms) = cpu.finish()?;
    let _ = c.command("QUIT").await;

    let rate = n as f64 / elapsed.as_secs_f64();
    println!(
        "pop3 retr {}: {n} messages, pipeline {depth}: {:.3} s, {rate:.0} msg/s, {:.1} MiB/s{}",
        args.common.result_label(),
        elapsed.as_secs_f64(),
        bytes as f64 / elapsed.as_secs_f64() / (1024.0 * 1024.0),
        server_ms
            .map(|ms| format!(", server CPU {ms:.0} ms"))
            .unwrap_or_default()
    );
    let mut report = Report::default();
    report
        .add("mode", "pop3-retr")
        .add("label", args.common.result_label())
        .add("messages", n)
        .add("pipeline", depth)
        .add("refill", format!("{:?}", args.refill).to_lowercase())
        .add_f("seconds", Some(elapsed.as_secs_f64()), 3)
        .add_f("msg_per_s", Some(rate), 0)
        .add("bytes", bytes)
        .add_f("server_cpu_ms", server_ms, 0)
        .add_f("client_cpu_ms", Some(client_ms), 0);
    println!("{}", report.result_line());
    Ok(true)
}

/// `--polls N`: what a POP3 client that checks for mail does, N times in
/// a row: connect, USER, PASS, STAT, UIDL, QUIT. Reports the median and
/// p90 of the whole poll and of the login part (connect to PASS's +OK).
async fn polls(args: Pop3Args) -> Result<bool> {
    let mut logins = Latencies::default();
    let mut whole = Latencies::default();
    let cpu = CpuProbe::start(args.common.server_pid)?;
    for _ in 0..args.polls {
        let start = Instant::now();
        let mut c = Connection::login(&args).await?;
        logins.push(start.elapsed());
        c.stat().await?;
        c.command("UIDL").await?;
        c.multi_line("UIDL").await?;
        c.command("QUIT").await?;
        whole.push(start.elapsed());
    }
    let (server_ms, client_ms) = cpu.finish()?;
    let (login_p50, login_p90) = (logins.percentile_ms(50.0), logins.percentile_ms(90.0));
    let (poll_p50, poll_p90) = (whole.percentile_ms(50.0), whole.percentile_ms(90.0));
    let ms = |v: Option<f64>| v.map_or("NA".into(), |v| format!("{v:.1} ms"));
    println!(
        "pop3 polls {}: {} polls (connect, USER, PASS, STAT, UIDL, QUIT): whole p50 {} p90 {}, login p50 {} p90 {}{}",
        args.common.result_label(),
        args.polls,
        ms(poll_p50),
        ms(poll_p90),
        ms(login_p50),
        ms(login_p90),
        server_ms
            .map(|ms| format!(", server CPU {ms:.0} ms"))
            .unwrap_or_default()
    );
    let mut report = Report::default();
    report
        .add("mode", "pop3-polls")
        .add("label", args.common.result_label())
        .add("polls", args.polls)
        .add_f("poll_p50_ms", poll_p50, 2)
        .add_f("poll_p90_ms", poll_p90, 2)
        .add_f("login_p50_ms", login_p50, 2)
        .add_f("login_p90_ms", login_p90, 2)
        .add_f("server_cpu_ms", server_ms, 0)
        .add_f("client_cpu_ms", Some(client_ms), 0);
    println!("{}", report.result_line());
    Ok(true)
}

/// Finds the `.CRLF` line that ends a multi-line answer, across reads.
#[derive(Default)]
struct Terminator {
    state: Scan,
}

#[derive(Default, Clone, Copy, PartialEq)]
enum Scan {
    /// At the start of a line (the status line was just read).
    #[default]
    LineStart,
    Mid,
    Dot,
    DotCr,
}

impl Terminator {
    /// Bytes of `buf` that belong to this answer, and whether it ended.
    fn feed(&mut self, buf: &[u8]) -> (usize, bool) {
        let mut i = 0;
        while i < buf.len() {
            match self.state {
                Scan::Mid => match buf[i..].iter().position(|b| *b == b'\n') {
                    Some(p) => {
                        i += p + 1;
                        self.state = Scan::LineStart;
                    }
                    None => i = buf.len(),
                },
                Scan::LineStart => {
                    self.state = if buf[i] == b'.' {
                        i += 1;
                        Scan::Dot
                    } else {
                        Scan::Mid
                    }
                }
                Scan::Dot => {
                    self.state = if buf[i] == b'\r' {
                        i += 1;
                        Scan::DotCr
                    } else {
                        Scan::Mid
                    }
                }
                Scan::DotCr => {
                    if buf[i] == b'\n' {
                        return (i + 1, true);
                    }
                    self.state = Scan::Mid;
                }
            }
        }
        (i, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_terminator_across_reads() {
        let answer = b"a\r\n..b\r\n.x\r\n.\r\nNEXT";
        for cut in 0..answer.len() {
            let mut t = Terminator::default();
            let (a, end_a) = t.feed(&answer[..cut]);
            let total = if end_a {
                a
            } else {
                let (b, end_b) = t.feed(&answer[cut..]);
                assert!(end_b, "cut at {cut}");
                a + b
            };
            assert_eq!(total, answer.len() - 4, "cut at {cut}");
        }
    }
}
