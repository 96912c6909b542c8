//! LMTP mode (RFC 2033): N connections deliver M messages in total.
//!
//! Each connection says LHLO once, then runs transactions: MAIL FROM, R x RCPT
//! TO, DATA, the message, and reads one final reply per accepted recipient.
//! With PIPELINING (RFC 2920) the envelope (MAIL, RCPTs, DATA) goes out in
//! one write and its replies are read afterwards; the message itself is only
//! sent after the 354. Every reply is checked; anything not 2xx (or 354 for
//! DATA) is an error that is counted and reported.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::CommonArgs;
use crate::message::{MessageGen, Varied};
use crate::stats::{CpuProbe, Latencies, Report};

#[derive(Args, Debug)]
pub struct LmtpArgs {
    /// Server address, host:port.
    #[arg(long, default_value = "127.0.0.1:2424")]
    pub addr: String,
    /// Concurrent connections.
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Messages (transactions) to deliver in total, over all connections.
    #[arg(long, default_value_t = 1000)]
    pub messages: u64,
    /// Message size in bytes (suffixes k/KiB, m/MiB allowed).
    #[arg(long, default_value = "4096", value_parser = crate::parse_size)]
    pub size: usize,
    /// Recipient address; `{n}` is replaced by the user index 0..users-1.
    #[arg(long, default_value = "bench{n}@example.com")]
    pub rcpt_template: String,
    /// Number of distinct users; recipients go round-robin over them.
    #[arg(long, default_value_t = 1)]
    pub users: u64,
    /// Deliver user by user instead of round-robin: each connection takes
    /// the next user and delivers all of that user's messages (messages /
    /// users, which must divide evenly; one recipient per transaction)
    /// before taking another, so the server opens each account once.
    #[arg(long)]
    pub by_user: bool,
    /// Recipients per transaction.
    #[arg(long, default_value_t = 1)]
    pub rcpts_per_txn: u64,
    /// Send byte-identical content in every transaction of this run (for
    /// dedup benchmarks). Different runs still differ.
    #[arg(long)]
    pub same_content: bool,
    /// Generate every message on its own: sender, subject words and body
    /// text differ per message, and rare tokens make IMAP SEARCH hit one
    /// message in --token-every (see --subject-token, --body-token).
    #[arg(long, conflicts_with = "same_content")]
    pub varied: bool,
    /// With --varied: messages seq % N == 0 get the subject token, seq % N
    /// == N/2 the body token (0: no tokens).
    #[arg(long, default_value_t = 1000)]
    pub token_every: u64,
    /// With --varied: word put in the Subject of one message in --token-every.
    #[arg(long, default_value = "marzipan")]
    pub subject_token: String,
    /// With --varied: word put in the body of one message in --token-every.
    #[arg(long, default_value = "kumquat")]
    pub body_token: String,
    /// Envelope sender.
    #[arg(long, default_value = "load@bench.example")]
    pub from: String,
    /// Do not pipeline even if the server offers PIPELINING.
    #[arg(long)]
    pub no_pipelining: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// One server reply (possibly multi-line), lines joined with " / ".
struct Reply {
    code: u16,
    text: String,
    lines: Vec<String>,
}

impl Reply {
    fn is_2xx(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

/// What happened to one transaction.
#[derive(Default)]
struct TxnOutcome {
    delivered: u64,
    /// One entry per non-2xx reply (and per recipient left undelivered).
    errors: Vec<String>,
}

/// Shared by all connections of a run.
struct Shared {
    args: LmtpArgs,
    msg: MessageGen,
    rcpts: Vec<String>,
    next_txn: AtomicU64,
    /// With --by-user: the next user a connection takes.
    next_user: AtomicU64,
    errors: Mutex<ErrorLog>,
}

#[derive(Default)]
struct ErrorLog {
    count: u64,
    samples: Vec<String>,
}

const ERROR_SAMPLES: usize = 20;

impl Shared {
    fn error(&self, e: String) {
        let mut log = self.errors.lock().unwrap();
        log.count += 1;
        if log.samples.len() < ERROR_SAMPLES {
            log.samples.push(e);
        }
    }
}

/// Per-connection tallies, merged at the end.
#[derive(Default)]
struct Tally {
    txns_ok: u64,
    txns_failed: u64,
    deliveries_ok: u64,
    deliveries_failed: u64,
    latencies: Latencies,
}

struct Conn {
    rd: BufReader<OwnedReadHalf>,
    wr: BufWriter<OwnedWriteHalf>,
    pipelining: bool,
    size_ext: bool,
    timeout: Duration,
}

impl Conn {
    async fn open(sh: &Shared) -> Result<Conn> {
        let timeout = Duration::from_secs(sh.args.common.timeout);
        let stream = tokio::time::timeout(timeout, TcpStream::connect(&sh.args.addr))
            .await
            .context("connect timed out")?
            .with_context(|| format!("cannot connect to {}", sh.args.addr))?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        let mut c = Conn {
            rd: BufReader::with_capacity(16 * 1024, r),
            wr: BufWriter::with_capacity(64 * 1024, w),
            pipelining: false,
            size_ext: false,
            timeout,
        };
        let greeting = c.reply().await?;
        if greeting.code != 220 {
            bail!("greeting is not 220: {} {}", greeting.code, greeting.text);
        }
        c.send(b"LHLO cove-load.bench.example\r\n").await?;
        let lhlo = c.reply().await?;
        if lhlo.code != 250 {
            bail!("LHLO refused: {} {}", lhlo.code, lhlo.text);
        }
        for l in lhlo.lines.iter().skip(1) {
            let kw = l
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            match kw.as_str() {
                "PIPELINING" => c.pipelining = !sh.args.no_pipelining,
                "SIZE" => c.size_ext = true,
                _ => {}
            }
        }
        Ok(c)
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.wr.write_all(bytes).await?;
        self.wr.flush().await?;
        Ok(())
    }

    /// Reads one reply: lines `NNN-text` ... `NNN text`, all with one code.
    async fn reply(&mut self) -> Result<Reply> {
        let mut lines = Vec::new();
        let mut code = None;
        loop {
            let mut raw = Vec::new();
            let n = tokio::time::timeout(
                self.timeout,
                (&mut self.rd).take(64 * 1024).read_until(b'\n', &mut raw),
            )
            .await
            .context("timed out waiting for a reply")?
            .context("reading a reply")?;
            if n == 0 {
                bail!("server closed the connection");
            }
            if !raw.ends_with(b"\n") {
                bail!("reply line longer than 64 KiB");
            }
            let line = String::from_utf8_lossy(&raw)
                .trim_end_matches(['\r', '\n'])
                .to_string();
            let b = line.as_bytes();
            if b.len() < 3
                || !b[..3].iter().all(u8::is_ascii_digit)
                || (b.len() > 3 && b[3] != b' ' && b[3] != b'-')
            {
                bail!("malformed reply line: {line:?}");
            }
            let c: u16 = line[..3].parse().unwrap();
            if *code.get_or_insert(c) != c {
                bail!("reply code changed inside a multi-line reply: {line:?}");
            }
            let last = b.len() == 3 || b[3] == b' ';
            lines.push(line.get(4..).unwrap_or("").to_string());
            if last {
                break;
            }
        }
        let text = lines.join(" / ");
        Ok(Reply {
            code: code.unwrap(),
            text,
            lines,
        })
    }

    /// One transaction. Err means the connection is no longer usable.
    async fn transaction(&mut self, sh: &Shared, seq: u64, rcpts: &[&str]) -> Result<TxnOutcome> {
        let mut out = TxnOutcome::default();
        let size = if self.size_ext {
            format!(" SIZE={}", sh.msg.size())
        } else {
            String::new()
        };
        let mail_cmd = format!("MAIL FROM:<{}>{size}\r\n", sh.args.from);
        let rcpt_cmds: Vec<String> = rcpts.iter().map(|r| format!("RCPT TO:<{r}>\r\n")).collect();

        // Envelope: pipelined in one write, or one command at a time.
        let mut accepted: Vec<&str> = Vec::new();
        let mail_ok;
        let data_reply;
        if self.pipelining {
            let mut buf = mail_cmd.into_bytes();
            for c in &rcpt_cmds {
                buf.extend_from_slice(c.as_bytes());
            }
            buf.extend_from_slice(b"DATA\r\n");
            self.send(&buf).await?;
            let r = self.reply().await?;
            mail_ok = r.is_2xx();
            if !mail_ok {
                out.errors.push(format!("MAIL: {} {}", r.code, r.text));
            }
            for rcpt in rcpts {
                let r = self.reply().await?;
                if r.is_2xx() {
                    accepted.push(rcpt);
                } else {
                    out.errors
                        .push(format!("RCPT {rcpt}: {} {}", r.code, r.text));
                }
            }
            data_reply = Some(self.reply().await?);
        } else {
            self.send(mail_cmd.as_bytes()).await?;
            let r = self.reply().await?;
            mail_ok = r.is_2xx();
            if !mail_ok {
                out.errors.push(format!("MAIL: {} {}", r.code, r.text));
            } else {
                for (rcpt, cmd) in rcpts.iter().zip(&rcpt_cmds) {
                    self.send(cmd.as_bytes()).await?;
                    let r = self.reply().await?;
                    if r.is_2xx() {
                        accepted.push(rcpt);
                    } else {
                        out.errors
                            .push(format!("RCPT {rcpt}: {} {}", r.code, r.text));
                    }
                }
            }
            data_reply = if accepted.is_empty() {
                None
            } else {
                self.send(b"DATA\r\n").await?;
                Some(self.reply().await?)
            };
        }

        match data_reply {
            Some(r) if r.code == 354 => {
                if accepted.is_empty() || !mail_ok {
                    // RFC 2033 4.2: DATA must fail without a valid envelope.
                    bail!(
                        "DATA answered 354 although MAIL/RCPT failed: {}",
                        out.errors.join("; ")
                    );
                }
                let (header, body) = sh.msg.parts(seq);
                self.wr.write_all(&header).await?;
                self.wr.write_all(&body).await?;
                self.wr.write_all(b".\r\n").await?;
                self.wr.flush().await?;
                // RFC 2033: one reply per accepted recipient, in RCPT order.
                for rcpt in &accepted {
                    let r = self.reply().await?;
                    if r.is_2xx() {
                        out.delivered += 1;
                    } else {
                        out.errors
                            .push(format!("DATA for {rcpt}: {} {}", r.code, r.text));
                    }
                }
            }
            Some(r) => {
                if !accepted.is_empty() && mail_ok {
                    out.errors.push(format!("DATA: {} {}", r.code, r.text));
                }
                // Envelope failed: clear the server's transaction state.
                self.rset().await?;
            }
            None => self.rset().await?,
        }
        Ok(out)
    }

    async fn rset(&mut self) -> Result<()> {
        self.send(b"RSET\r\n").await?;
        let r = self.reply().await?;
        if !r.is_2xx() {
            bail!("RSET refused: {} {}", r.code, r.text);
        }
        Ok(())
    }

    async fn quit(&mut self) -> Result<()> {
        self.send(b"QUIT\r\n").await?;
        let r = self.reply().await?;
        if r.code != 221 {
            bail!("QUIT answered {} {}", r.code, r.text);
        }
        Ok(())
    }
}

/// Hands out work: round-robin (a shared transaction counter; transaction
/// seq goes to users seq*R .. seq*R+R-1) or, with --by-user, a block of
/// messages / users consecutive transactions per user taken by one
/// connection (`block` is that connection's current user and how many of
/// its transactions are left). Returns the transaction's seq and its
/// recipients' user numbers, `None` once the work is used up.
fn next_txn(sh: &Shared, block: &mut Option<(u64, u64)>) -> Option<(u64, Vec<usize>)> {
    let a = &sh.args;
    if !a.by_user {
        let seq = sh.next_txn.fetch_add(1, Ordering::Relaxed);
        if seq >= a.messages {
            return None;
        }
        let users = (0..a.rcpts_per_txn)
            .map(|j| ((seq * a.rcpts_per_txn + j) % a.users) as usize)
            .collect();
        return Some((seq, users));
    }
    let per_user = a.messages / a.users;
    if block.is_none_or(|(_, left)| left == 0) {
        let user = sh.next_user.fetch_add(1, Ordering::Relaxed);
        if user >= a.users {
            return None;
        }
        *block = Some((user, per_user));
    }
    let (user, left) = block.as_mut()?;
    let seq = *user * per_user + (per_user - *left);
    *left -= 1;
    Some((seq, vec![*user as usize]))
}

/// Runs transactions on one connection until the shared work is used up.
/// Returns the connection if it is still usable.
async fn drive(sh: Arc<Shared>, mut conn: Conn, id: usize) -> (Tally, Option<Conn>) {
    let mut t = Tally::default();
    let r = sh.args.rcpts_per_txn;
    let mut block = None;
    while let Some((seq, users)) = next_txn(&sh, &mut block) {
        let rcpts: Vec<&str> = users.iter().map(|&u| sh.rcpts[u].as_str()).collect();
        let start = Instant::now();
        match conn.transaction(&sh, seq, &rcpts).await {
            Ok(o) => {
                let failed = r - o.delivered;
                t.deliveries_ok += o.delivered;
                t.deliveries_failed += failed;
                if failed == 0 && o.errors.is_empty() {
                    t.txns_ok += 1;
                    t.latencies.push(start.elapsed());
                } else {
                    t.txns_failed += 1;
                }
                for e in o.errors {
                    sh.error(format!("conn {id} txn {seq}: {e}"));
                }
            }
            Err(e) => {
                t.txns_failed += 1;
                t.deliveries_failed += r;
                sh.error(format!(
                    "conn {id} txn {seq}: connection failed, giving it up: {e:#}"
                ));
                // This connection is dead; the others take the rest.
                return (t, None);
            }
        }
    }
    (t, Some(conn))
}

/// Returns Ok(true) if every delivery succeeded.
pub async fn run(args: LmtpArgs) -> Result<bool> {
    if args.conns == 0 || args.users == 0 || args.rcpts_per_txn == 0 {
        bail!("--conns, --users and --rcpts-per-txn must be at least 1");
    }
    if args.users > 1 && !args.rcpt_template.contains("{n}") {
        bail!("--rcpt-template must contain {{n}} when --users > 1");
    }
    if args.by_user && (args.rcpts_per_txn != 1 || !args.messages.is_multiple_of(args.users)) {
        bail!("--by-user needs --rcpts-per-txn 1 and --messages a multiple of --users");
    }
    let msg = if args.varied {
        MessageGen::new_varied(
            args.size,
            Varied {
                every: args.token_every,
                subject_token: args.subject_token.clone(),
                body_token: args.body_token.clone(),
            },
        )?
    } else {
        MessageGen::new(args.size, args.same_content)?
    };
    let rcpts = (0..args.users)
        .map(|n| args.rcpt_template.replace("{n}", &n.to_string()))
        .collect();
    let sh = Arc::new(Shared {
        msg,
        rcpts,
        next_txn: AtomicU64::new(0),
        next_user: AtomicU64::new(0),
        errors: Mutex::new(ErrorLog::default()),
        args,
    });

    // Connect everyone first: setup (and a forking server's process start)
    // is not part of the measured delivery phase.
    let mut conns = Vec::with_capacity(sh.args.conns);
    for i in 0..sh.args.conns {
        conns.push(
            Conn::open(&sh)
                .await
                .with_context(|| format!("connection {i}"))?,
        );
    }
    let pipelining = conns[0].pipelining;

    let cpu = CpuProbe::start(sh.args.common.server_pid)?;
    let start = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, c)| tokio::spawn(drive(sh.clone(), c, i)))
        .collect();
    let mut total = Tally::default();
    let mut finished = Vec::new();
    for t in tasks {
        let (tally, conn) = t.await.context("a connection task panicked")?;
        total.txns_ok += tally.txns_ok;
        total.txns_failed += tally.txns_failed;
        total.deliveries_ok += tally.deliveries_ok;
        total.deliveries_failed += tally.deliveries_failed;
        total.latencies.extend(tally.latencies);
        finished.push((finished.len(), conn));
    }
    let wall = start.elapsed().as_secs_f64();
    let (server_ms, client_ms) = cpu.finish()?;

    // Polite goodbye (outside the measurement); a refused QUIT is an error too.
    for (i, c) in finished {
        let Some(mut c) = c else { continue };
        if let Err(e) = c.quit().await {
            sh.error(format!("conn {i}: {e:#}"));
        }
    }

    let a = &sh.args;
    let attempted = total.txns_ok + total.txns_failed;
    let not_attempted = a.messages.saturating_sub(attempted);
    let p50 = total.latencies.percentile_ms(50.0);
    let p99 = total.latencies.percentile_ms(99.0);
    let msgs_per_s = total.txns_ok as f64 / wall;
    let per = |ms: Option<f64>, n: u64| ms.filter(|_| n > 0).map(|ms| ms / n as f64);
    let errors = sh.errors.lock().unwrap();

    let mut rep = Report::default();
    rep.add("proto", "lmtp")
        .add("label", a.common.result_label())
        .add("addr", &a.addr)
        .add("conns", a.conns)
        .add("size", sh.msg.size())
        .add("rcpts_per_txn", a.rcpts_per_txn)
        .add("users", a.users)
        .add("by_user", a.by_user)
        .add("same_content", a.same_content)
        .add("varied", a.varied);
    if a.varied {
        // Messages carrying the search tokens (if all were delivered).
        let v = Varied {
            every: a.token_every,
            subject_token: a.subject_token.clone(),
            body_token: a.body_token.clone(),
        };
        let (subj, body) = v.hits(a.messages);
        rep.add("subject_token_msgs", subj)
            .add("body_token_msgs", body);
    }
    rep.add("pipelining", pipelining)
        .add("messages", a.messages)
        .add("msgs_ok", total.txns_ok)
        .add("msgs_failed", total.txns_failed)
        .add("not_attempted", not_attempted)
        .add("deliveries_ok", total.deliveries_ok)
        .add("deliveries_failed", total.deliveries_failed)
        .add("error_replies", errors.count);
    rep.add_f("wall_s", Some(wall), 3)
        .add_f("msgs_per_s", Some(msgs_per_s), 1)
        .add_f(
            "deliveries_per_s",
            Some(total.deliveries_ok as f64 / wall),
            1,
        )
        .add_f("p50_ms", p50, 2)
        .add_f("p99_ms", p99, 2)
        .add_f("server_cpu_ms", server_ms, 0)
        .add_f("cpu_ms_per_msg", per(server_ms, total.txns_ok), 3)
        .add_f(
            "cpu_ms_per_delivery",
            per(server_ms, total.deliveries_ok),
            3,
        )
        .add_f("client_cpu_ms", Some(client_ms), 0);

    for e in &errors.samples {
        eprintln!("ERROR {e}");
    }
    if errors.count > errors.samples.len() as u64 {
        eprintln!(
            "ERROR ... and {} more",
            errors.count - errors.samples.len() as u64
        );
    }

    let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.2}"));
    let label = if a.common.label.is_empty() {
        String::new()
    } else {
        format!(" [{}]", a.common.label)
    };
    let cpu_part = match server_ms {
        Some(ms) => format!(
            ", server CPU {ms:.0} ms = {} ms/msg",
            fmt(per(Some(ms), total.txns_ok))
        ),
        None => String::new(),
    };
    println!(
        "lmtp{label}: {} msgs ({} deliveries, {} B, {} conns) in {wall:.2} s = {msgs_per_s:.1} msgs/s, \
         latency p50 {} ms p99 {} ms{cpu_part}, {} failed deliveries, {} not attempted, {} error replies",
        total.txns_ok,
        total.deliveries_ok,
        sh.msg.size(),
        a.conns,
        fmt(p50),
        fmt(p99),
        total.deliveries_failed,
        not_attempted,
        errors.count,
    );
    println!("{}", rep.result_line());

    Ok(total.deliveries_failed == 0 && not_attempted == 0 && errors.count == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        lmtp: LmtpArgs,
    }

    fn shared(args: &[&str]) -> Shared {
        let args = Cli::parse_from(std::iter::once("lmtp").chain(args.iter().copied())).lmtp;
        Shared {
            msg: MessageGen::new(args.size, false).expect("generator"),
            rcpts: (0..args.users).map(|n| format!("u{n}")).collect(),
            next_txn: AtomicU64::new(0),
            next_user: AtomicU64::new(0),
            errors: Mutex::new(ErrorLog::default()),
            args,
        }
    }

    /// Two connections taking turns: by user, each gets whole users (every
    /// transaction of a user on one connection, in a row, distinct seqs);
    /// round-robin, consecutive transactions go to consecutive users.
    #[test]
    fn by_user_hands_out_whole_users_round_robin_spreads_them() {
        let sh = shared(&["--users", "3", "--messages", "12", "--by-user"]);
        let (mut b0, mut b1) = (None, None);
        let mut per_conn: [Vec<(u64, usize)>; 2] = Default::default();
        loop {
            let a = next_txn(&sh, &mut b0);
            let b = next_txn(&sh, &mut b1);
            for (c, t) in [(0, a.clone()), (1, b.clone())] {
                if let Some((seq, users)) = t {
                    assert_eq!(users.len(), 1);
                    per_conn[c].push((seq, users[0]));
                }
            }
            if a.is_none() && b.is_none() {
                break;
            }
        }
        let users0: Vec<usize> = per_conn[0].iter().map(|t| t.1).collect();
        let users1: Vec<usize> = per_conn[1].iter().map(|t| t.1).collect();
        assert_eq!(users0, [0, 0, 0, 0, 2, 2, 2, 2]);
        assert_eq!(users1, [1, 1, 1, 1]);
        let mut seqs: Vec<u64> = per_conn.iter().flatten().map(|t| t.0).collect();
        seqs.sort();
        assert_eq!(seqs, (0..12).collect::<Vec<_>>(), "every message once");

        let sh = shared(&["--users", "3", "--messages", "4"]);
        let mut none = None;
        let users: Vec<usize> = std::iter::from_fn(|| next_txn(&sh, &mut none))
            .map(|(_, u)| u[0])
            .collect();
        assert_eq!(users, [0, 1, 2, 0]);
    }
}
