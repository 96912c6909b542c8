//! A process started the way an operator or an init system starts cove
//! (a command line, an environment, a user), whose standard error goes to
//! a file the test reads: for the tests of the README's Quick start, the
//! Debian package and privilege dropping, which cannot use
//! [`TestServer`](crate::TestServer)'s fixed layout.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::{eventually, wait_bounded};

pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
    what: String,
}

impl Daemon {
    /// Spawn `cmd` with standard error to `log` (standard output too).
    pub fn spawn(mut cmd: Command, log: &Path) -> Daemon {
        let what = format!("{cmd:?}");
        let err = File::create(log).expect("create the log file");
        let out = err.try_clone().expect("clone the log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        Daemon {
            child: Some(child),
            log: log.to_path_buf(),
            what,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Everything written so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until a line contains `needle` (panics, with the output, if the
    /// process exits first or `timeout` passes); returns that line.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let found = eventually(timeout, || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "{} exited with {status} before logging {needle:?}:\n{}",
                    self.what,
                    self.output()
                );
            }
            self.output()
                .lines()
                .find(|l| l.contains(needle))
                .map(str::to_string)
        });
        found.unwrap_or_else(|| {
            panic!(
                "{} did not log {needle:?} within {timeout:?}:\n{}",
                self.what,
                self.output()
            )
        })
    }

    /// The address in the line `<proto> listening on <addr>`.
    pub fn listening(&mut self, proto: &str, timeout: Duration) -> SocketAddr {
        let marker = format!("{proto} listening on ");
        let line = self.wait_for(&marker, timeout);
        let at = line.find(&marker).unwrap_or(0) + marker.len();
        line[at..]
            .split_whitespace()
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    }

    /// SIGTERM, and wait (bounded) for the exit.
    pub fn stop(&mut self, timeout: Duration) -> ExitStatus {
        crate::signal(self.pid(), "TERM");
        self.wait_exit(timeout)
    }

    /// Wait (bounded) for the exit; panics with the output if it overruns.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        wait_bounded(&mut child, timeout).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} did not exit within {timeout:?} of SIGTERM:\n{}",
                self.what,
                self.output()
            )
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The greeting line a server sends on connect (LMTP `220`, IMAP `* OK`,
/// POP3 `+OK`), read within a few seconds.
pub fn greeting(addr: SocketAddr) -> std::io::Result<String> {
    use std::io::{BufRead, BufReader};
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = String::new();
    BufReader::new(tcp).read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}

/// The uid a running process has (`Uid:` of /proc/PID/status: real,
/// effective, saved, filesystem).
pub fn uids_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|u| u.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}
