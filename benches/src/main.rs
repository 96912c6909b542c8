//! cove-load: a load generator for mail storage servers.
//!
//! It speaks the wire protocols only, so it can be aimed at cove or at any
//! other server (Dovecot, ...). One subcommand per protocol; every mode prints
//! one human-readable line and one machine-readable `RESULT key=value ...`
//! line, and exits non-zero if any operation failed.

mod auth_http;
mod imap;
mod imap_sessions;
mod lmtp;
mod message;
mod pop3;
mod repl;
mod socketmap;
mod stats;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cove-load",
    about = "Load generator for LMTP, IMAP and POP3 servers (and cove's MTA lookups)"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Deliver messages over LMTP (RFC 2033).
    Lmtp(lmtp::LmtpArgs),
    /// IMAP (RFC 3501): timed operations on a big mailbox, many IDLE connections.
    Imap(imap::ImapArgs),
    /// Replication between two nodes: delivery-to-visibility lag.
    Repl(repl::ReplArgs),
    /// POP3 (RFC 1939): RETR a whole maildrop, in sequence or pipelined.
    Pop3(pop3::Pop3Args),
    /// Postfix socketmap lookups (cove's [mta] socketmap_listen).
    Socketmap(socketmap::SocketmapArgs),
    /// nginx mail auth_http requests (cove's GET /auth).
    AuthHttp(auth_http::AuthHttpArgs),
}

/// Options every protocol mode takes.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// PID of the server; its CPU time (the process, its threads and all its
    /// descendants, plus reaped children) is sampled before and after the run.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Free text copied into the report (e.g. "cove 4KiB c=4").
    #[arg(long, default_value = "")]
    pub label: String,
    /// Seconds to wait for any one server reply before giving up on the connection.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

impl CommonArgs {
    /// The label as it goes into a RESULT line (`-` when none was given).
    pub fn result_label(&self) -> &str {
        if self.label.is_empty() {
            "-"
        } else {
            &self.label
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // One thread: the load generator shares the machine with the server, so it
    // should use as little CPU as it can. Network I/O is all it does.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cove-load: cannot start the runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let outcome = rt.block_on(async {
        match cli.mode {
            Mode::Lmtp(args) => lmtp::run(args).await,
            Mode::Imap(args) => imap::run(args).await,
            Mode::Repl(args) => repl::run(args).await,
            Mode::Pop3(args) => pop3::run(args).await,
            Mode::Socketmap(args) => socketmap::run(args).await,
            Mode::AuthHttp(args) => auth_http::run(args).await,
        }
    });
    match outcome {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("cove-load: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Parses a byte size: `4096`, `4k`/`4KiB` (x1024), `1m`/`1MiB` (x1024^2).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = if let Some(n) = t.strip_suffix("kib").or(t.strip_suffix('k')) {
        (n, 1024)
    } else if let Some(n) = t.strip_suffix("mib").or(t.strip_suffix('m')) {
        (n, 1024 * 1024)
    } else {
        (t.strip_suffix('b').unwrap_or(&t), 1)
    };
    num.trim()
        .parse::<usize>()
        .map(|n| n * mult)
        .map_err(|_| format!("not a size: {s:?} (examples: 4096, 4k, 100KiB, 1m)"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("4096"), Ok(4096));
        assert_eq!(super::parse_size("4k"), Ok(4096));
        assert_eq!(super::parse_size("100KiB"), Ok(102400));
        assert_eq!(super::parse_size("1m"), Ok(1048576));
        assert!(super::parse_size("x").is_err());
    }
}
