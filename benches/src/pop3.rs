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
use crate::stats::{CpuProbe, Report};

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
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refill {
    Half,
    Each,
}

pub async fn run(args: Pop3Args) -> Result<bool> {
    let timeout = Duration::from_secs(args.common.timeout);
    let tcp = TcpStream::connect(&args.addr)
        .await
        .with_context(|| format!("connect to {}", args.addr))?;
    tcp.set_nodelay(true)?;
    let (r, mut w) = tcp.into_split();
    let mut r = BufReader::with_capacity(256 * 1024, r);
    let mut line = Vec::new();
    let status = async |r: &mut BufReader<_>, line: &mut Vec<u8>, what: &str| -> Result<()> {
        line.clear();
        tokio::time::timeout(timeout, r.read_until(b'\n', line))
            .await
            .with_context(|| format!("{what}: no answer within {timeout:?}"))??;
        if !line.starts_with(b"+OK") {
            bail!("{what}: {}", String::from_utf8_lossy(line).trim_end());
        }
        Ok(())
    };
    status(&mut r, &mut line, "greeting").await?;
    w.write_all(format!("USER {}\r\n", args.user).as_bytes())
        .await?;
    status(&mut r, &mut line, "USER").await?;
    w.write_all(format!("PASS {}\r\n", args.pass).as_bytes())
        .await?;
    status(&mut r, &mut line, "PASS").await?;
    w.write_all(b"STAT\r\n").await?;
    status(&mut r, &mut line, "STAT").await?;
    let have: u64 = String::from_utf8_lossy(&line)
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .context("STAT answer without a count")?;
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
            w.write_all(&commands).await?;
        }
        // One answer: the status line, then up to `.CRLF` at a line start.
        status(&mut r, &mut line, "RETR").await?;
        let mut scan = Terminator::default();
        loop {
            let buf = tokio::time::timeout(timeout, r.fill_buf())
                .await
                .with_context(|| format!("RETR {}: no data within {timeout:?}", done + 1))??;
            if buf.is_empty() {
                bail!("connection closed inside RETR {}", done + 1);
            }
            let (used, end) = scan.feed(buf);
            bytes += used as u64;
            r.consume(used);
            if end {
                break;
            }
        }
        done += 1;
    }
    let elapsed = start.elapsed();
    let (server_ms, client_ms) = cpu.finish()?;
    w.write_all(b"QUIT\r\n").await?;
    let _ = status(&mut r, &mut line, "QUIT").await;

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
