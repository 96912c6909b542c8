//! The end-to-end test harness: build and start the real `cove` binary on a
//! fresh data directory with port 0, learn its ports from its log, and speak
//! its protocols over real sockets with small blocking clients.
//!
//! Everything is bounded: server start, every read on a socket, every CLI
//! command. A test that goes wrong fails with the server's log, never hangs.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use cove_store;

pub mod cluster;
pub mod daemon;
pub mod proxy;
pub mod smtp_sink;
use cove_store::{Address, MailboxInfo, MessageMeta, Store, StoreOptions};

/// How long a server gets to start, a command to run, a reply to arrive.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The hostname every test server uses (also in its certificate).
pub const HOSTNAME: &str = "cove.test";

// ---------------------------------------------------------------------------
// The binary

/// The target directory: `CARGO_TARGET_DIR` if set, else the one this test
/// executable was built in (`<target>/debug/deps/<test>`).
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        if dir.is_absolute() {
            return dir;
        }
        return Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(deps) = exe.parent()
        && deps.file_name().is_some_and(|n| n == "deps")
        && let Some(target) = deps.parent().and_then(Path::parent)
    {
        return target.to_path_buf();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
}

/// The cargo that runs the tests, without the variables it sets for this
/// test process (CARGO_PKG_NAME, CARGO_MANIFEST_DIR, ...): they are not the
/// environment of a build, and build scripts that watch them would
/// rebuild, and then rebuild again for the next `cargo test`.
pub fn cargo_command() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut cmd = Command::new(cargo);
    without_test_env(&mut cmd);
    cmd
}

/// Remove from `cmd`'s environment what cargo sets for a test process.
pub fn without_test_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let Some(k) = key.to_str() else { continue };
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || k.starts_with("CARGO_BIN_")
            || matches!(
                k,
                "CARGO_CRATE_NAME" | "CARGO_PRIMARY_PACKAGE" | "CARGO_TARGET_TMPDIR" | "OUT_DIR"
            )
        {
            cmd.env_remove(k);
        }
    }
}

/// The `cove` binary, built (once per test process) with the same cargo that
/// runs the tests.
pub fn cove_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let target = target_dir();
        let mut cmd = cargo_command();
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "cove",
            "--bin",
            "cove",
            "--target-dir",
        ])
        .arg(&target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null());
        let out = cmd.output().expect("run cargo build for the cove binary");
        assert!(
            out.status.success(),
            "building cove failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = target.join("debug").join("cove");
        assert!(bin.is_file(), "no cove binary at {}", bin.display());
        bin
    })
}

/// Send signal `name` (`TERM`, `HUP`) to process `pid`.
pub fn signal(pid: u32, name: &str) {
    let st = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -{name} {pid} failed");
}

/// Run a command to its end with a deadline, feeding `stdin`. Panics (after
/// killing it) if it overruns.
pub fn run_bounded(mut cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn command");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(input).expect("write stdin");
    }
    let mut out_pipe = child.stdout.take().expect("stdout pipe");
    let mut err_pipe = child.stderr.take().expect("stderr pipe");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let status = wait_bounded(&mut child, timeout).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{cmd:?} did not finish within {timeout:?}");
    });
    Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}

/// Wait for a child with a deadline; `None` if it is still running.
pub fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() >= deadline => return None,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("wait for child: {e}"),
        }
    }
}

/// Poll `f` until it returns `Some`, for at most `timeout`.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The login penalty test servers get unless `extra` has an `[auth]`
/// section: a millisecond, so that tests which fail logins on purpose stay
/// quick, while every login still goes through the penalty's gate.
pub const AUTH_CONFIG: &str = "[auth]\npenalty_initial_ms = 1\npenalty_max_ms = 1\n";

/// The text of a configuration file: the data directory, [`HOSTNAME`],
/// [`AUTH_CONFIG`] (unless `extra` has its own `[auth]`) and an `[lmtp]`
/// section listening on `listen`. `extra` follows the `listen` line, so
/// bare keys in it are LMTP keys; it may open further sections.
pub fn config_text(data_dir: &Path, listen: &str, extra: &str) -> String {
    config_text_for(data_dir, HOSTNAME, listen, extra)
}

/// [`config_text`] with another `hostname` (a replication node's name).
pub fn config_text_for(data_dir: &Path, hostname: &str, listen: &str, extra: &str) -> String {
    let auth = if extra.contains("[auth]") {
        ""
    } else {
        AUTH_CONFIG
    };
    format!(
        "data_dir = {:?}\nhostname = {hostname:?}\n\n{auth}[lmtp]\nlisten = [{listen:?}]\n{extra}\n",
        data_dir.display().to_string()
    )
}

/// Trim a CLI output stream to text.
/// What the `[http]` listener's start line says before its address.
pub const HTTP_MARKER: &str = "http (metrics, sync admin)";

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------------------
// The server

/// A `cove serve` process on a fresh data directory, listening for LMTP on
/// a port of its choosing. Dropping it kills the process.
pub struct TestServer {
    _dir: tempfile::TempDir,
    data_dir: PathBuf,
    config_path: PathBuf,
    child: Option<Child>,
    drain: Option<JoinHandle<()>>,
    logs: Arc<Mutex<Vec<String>>>,
    lmtp_addr: Option<SocketAddr>,
    /// The first log line of the running process (a restart's listeners
    /// are found after it, never the previous run's).
    first_line: usize,
}

impl TestServer {
    /// Start a server. `extra` is appended after the `[lmtp]` `listen` line
    /// (see [`config_text`]).
    pub fn start(extra: &str) -> TestServer {
        TestServer::start_node(HOSTNAME, extra)
    }

    /// Start a server whose `hostname` (its node name for replication) is
    /// `hostname`; otherwise as [`start`](TestServer::start).
    pub fn start_node(hostname: &str, extra: &str) -> TestServer {
        TestServer::start_with_root(hostname, "", extra)
    }

    /// [`start_node`](TestServer::start_node) with top-level keys (`root`,
    /// before any section: `trusted_proxies = [...]`).
    pub fn start_with_root(hostname: &str, root: &str, extra: &str) -> TestServer {
        TestServer::start_on_with_root(None, hostname, root, "127.0.0.1:0", extra)
    }

    /// [`start_node`](TestServer::start_node) with LMTP on `lmtp_listen`
    /// (a cluster map names each node's LMTP address before it starts).
    pub fn start_node_at(hostname: &str, lmtp_listen: &str, extra: &str) -> TestServer {
        TestServer::start_on_with_root(None, hostname, "", lmtp_listen, extra)
    }

    /// Start a server whose data directory is `data_dir` (for example on a
    /// small filesystem of the test's own), or a fresh temporary one.
    pub fn start_on(data_dir: Option<PathBuf>, hostname: &str, extra: &str) -> TestServer {
        TestServer::start_on_with_root(data_dir, hostname, "", "127.0.0.1:0", extra)
    }

    fn start_on_with_root(
        data_dir: Option<PathBuf>,
        hostname: &str,
        root: &str,
        lmtp_listen: &str,
        extra: &str,
    ) -> TestServer {
        let dir = tempfile::Builder::new()
            .prefix("cove-test-")
            .tempdir()
            .expect("temp dir");
        let data_dir = data_dir.unwrap_or_else(|| dir.path().join("data"));
        let config_path = dir.path().join("cove.toml");
        fs::write(
            &config_path,
            format!(
                "{root}\n{}",
                config_text_for(&data_dir, hostname, lmtp_listen, extra)
            ),
        )
        .expect("write config");
        let mut server = TestServer {
            _dir: dir,
            data_dir,
            config_path,
            child: None,
            drain: None,
            logs: Arc::new(Mutex::new(Vec::new())),
            lmtp_addr: None,
            first_line: 0,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let first_line = self.logs.lock().unwrap().len();
        self.first_line = first_line;
        let mut child = Command::new(cove_bin())
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .env("COVE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cove serve");
        let stderr = child.stderr.take().expect("stderr pipe");
        let logs = self.logs.clone();
        self.drain = Some(std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                        logs.lock().unwrap().push(line);
                    }
                }
            }
        }));
        self.child = Some(child);
        let marker = "lmtp listening on ";
        let found = eventually(START_TIMEOUT, || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.join_drain();
                panic!(
                    "cove serve exited during start with {status}:\n{}",
                    self.logs().join("\n")
                );
            }
            let logs = self.logs.lock().unwrap();
            logs[first_line..].iter().find_map(|l| {
                let at = l.find(marker)?;
                let addr = l[at + marker.len()..].split_whitespace().next()?;
                addr.parse::<SocketAddr>().ok()
            })
        });
        match found {
            Some(addr) => self.lmtp_addr = Some(addr),
            None => panic!(
                "cove serve did not log its LMTP address within {START_TIMEOUT:?}:\n{}",
                self.logs().join("\n")
            ),
        }
    }

    fn join_drain(&mut self) {
        if let Some(t) = self.drain.take() {
            let _ = t.join();
        }
    }

    /// The LMTP address of the running server.
    pub fn lmtp_addr(&self) -> SocketAddr {
        self.lmtp_addr.expect("server not running")
    }

    /// The address another listener logged (`"imap"`, `"imaps"`): the last
    /// `<proto> listening on <addr>` line, waited for.
    pub fn addr_of(&self, proto: &str) -> SocketAddr {
        let marker = format!("{proto} listening on ");
        eventually(START_TIMEOUT, || {
            let logs = self.logs.lock().unwrap();
            logs[self.first_line.min(logs.len())..]
                .iter()
                .rev()
                .find_map(|l| {
                    let at = l.find(&marker)?;
                    let addr = l[at + marker.len()..].split_whitespace().next()?;
                    addr.parse::<SocketAddr>().ok()
                })
        })
        .unwrap_or_else(|| {
            panic!(
                "cove serve did not log a {proto} address:\n{}",
                self.logs().join("\n")
            )
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server not running").id()
    }

    /// Every log line so far, across restarts.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Whether some log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.logs.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Whether the server logs a line holding `needle` within 10 s: a line
    /// written after the reply the test saw reaches the log reader later.
    pub fn logs_soon(&self, needle: &str) -> bool {
        eventually(Duration::from_secs(10), || {
            self.logged(needle).then_some(())
        })
        .is_some()
    }

    /// Run `cove ARGS` against the running server: its configuration with
    /// the `[http] listen` port it actually bound (commands that ask the
    /// server find it there).
    pub fn cli_running(&self, args: &[&str]) -> Output {
        let config = fs::read_to_string(&self.config_path).expect("read the config");
        let http = self.addr_of(HTTP_MARKER);
        let config = config.replacen(
            "[http]\nlisten = [\"127.0.0.1:0\"]",
            &format!("[http]\nlisten = [\"{http}\"]"),
            1,
        );
        let path = self.config_path.with_file_name("cli.toml");
        fs::write(&path, config).expect("write the CLI config");
        let mut cmd = Command::new(cove_bin());
        cmd.args(args)
            .arg("--config")
            .arg(&path)
            .env("COVE_LOG", "warn");
        run_bounded(cmd, None, CLI_TIMEOUT)
    }

    /// Run `cove ARGS --config FILE`.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_stdin(args, None)
    }

    /// Run `cove ARGS --config FILE` with `stdin` as its standard input.
    pub fn cli_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = Command::new(cove_bin());
        cmd.args(args)
            .arg("--config")
            .arg(&self.config_path)
            .env("COVE_LOG", "warn");
        run_bounded(cmd, stdin, CLI_TIMEOUT)
    }

    /// Run a CLI command that must succeed; returns its standard output.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "cove {args:?} failed ({}):\n{}{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Run `tests/python/<script>` (with `args`, and `env` set) against
    /// this server, within 60 s: it must succeed and print `done`.
    #[track_caller]
    pub fn run_python(&self, script: &str, args: &[&str], env: &[(&str, String)], done: &str) {
        let mut cmd = Command::new("python3");
        cmd.arg(format!("{}/python/{script}", env!("CARGO_MANIFEST_DIR")))
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)));
        let out = run_bounded(cmd, None, Duration::from_secs(60));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{script} {args:?} failed:\n{stdout}\n{stderr}\nserver log:\n{}",
            self.logs().join("\n")
        );
        assert!(stdout.contains(done), "{stdout}");
    }

    /// Add users (delivery only) with `cove user add`.
    pub fn add_users(&self, emails: &[&str]) {
        for e in emails {
            self.cli_ok(&["user", "add", e]);
        }
    }

    /// Kill the server with SIGKILL and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.join_drain();
        self.lmtp_addr = None;
    }

    /// Send SIGTERM without waiting.
    pub fn sigterm(&self) {
        signal(self.pid(), "TERM");
    }

    /// SIGHUP: reload the configuration.
    pub fn sighup(&self) {
        signal(self.pid(), "HUP");
    }

    /// Wait (bounded) for the server to exit; its log is complete afterwards.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server not running");
        let status = wait_bounded(&mut child, STOP_TIMEOUT).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "cove serve did not exit within {STOP_TIMEOUT:?}:\n{}",
                self.logs().join("\n")
            )
        });
        self.join_drain();
        self.lmtp_addr = None;
        status
    }

    /// SIGTERM, then wait for the exit.
    pub fn sigterm_and_wait(&mut self) -> ExitStatus {
        self.sigterm();
        self.wait_exit()
    }

    /// Stop cleanly and insist on a successful exit.
    pub fn stop(&mut self) {
        let st = self.sigterm_and_wait();
        assert!(
            st.success(),
            "cove serve exited with {st}:\n{}",
            self.logs().join("\n")
        );
    }

    /// Start again on the same configuration and data (stopping first with
    /// SIGTERM if still running); the port is new.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        self.spawn();
    }

    /// Connect an LMTP client and read the greeting (asserting 220).
    pub fn lmtp(&self) -> Client<TcpStream> {
        let mut c = Client::connect(self.lmtp_addr());
        let greeting = c.read_reply();
        assert_eq!(greeting.code, 220, "greeting: {greeting:?}");
        c
    }

    /// An LMTP client after greeting and LHLO.
    pub fn lmtp_ready(&self) -> Client<TcpStream> {
        let mut c = self.lmtp();
        let r = c.lhlo("client.test");
        assert_eq!(r.code, 250, "LHLO: {r:?}");
        c
    }

    /// A user's home directory.
    pub fn home(&self, email: &str) -> PathBuf {
        let (local, domain) = email.rsplit_once('@').expect("an address");
        self.data_dir.join("mail").join(domain).join(local)
    }

    /// A mailbox's Maildir++ folder ("INBOX" is the Maildir itself).
    pub fn folder(&self, email: &str, mailbox: &str) -> PathBuf {
        let root = self.home(email).join("Maildir");
        if mailbox.eq_ignore_ascii_case("INBOX") {
            root
        } else {
            root.join(format!(".{mailbox}"))
        }
    }

    /// The message files (new/ and cur/) of a mailbox, sorted.
    pub fn maildir_files(&self, email: &str, mailbox: &str) -> Vec<PathBuf> {
        let folder = self.folder(email, mailbox);
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = fs::read_dir(folder.join(sub)) {
                for e in rd.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_file()) {
                        out.push(e.path());
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// Every blob file (`blobs/<2hex>/<62hex>`), sorted.
    pub fn blob_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let root = self.data_dir.join("blobs");
        for shard in fs::read_dir(&root).into_iter().flatten().flatten() {
            let name = shard.file_name();
            if name.len() != 2 || !shard.path().is_dir() {
                continue;
            }
            for e in fs::read_dir(shard.path()).into_iter().flatten().flatten() {
                out.push(e.path());
            }
        }
        out.sort();
        out
    }

    /// The files in `blobs/tmp/`.
    pub fn blob_tmp_files(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = fs::read_dir(self.data_dir.join("blobs/tmp"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        out.sort();
        out
    }

    /// Open the data directory with the store API (the server should be
    /// stopped; opening an account reconciles it with its Maildir).
    pub fn open_store(&self) -> Store {
        open_store(&self.data_dir)
    }

    /// What the background indexer derived (`kind`) from each message of
    /// `user`'s INBOX when it arrived, waited for (up to 30 s), with the
    /// store opened beside the running server, the account and the
    /// messages, in order.
    pub fn derived_on_arrival(&self, user: &str, kind: cove_store::DerivedKind) -> ArrivalViews {
        let store = self.open_store();
        let user = store
            .user(&Address::parse(user).expect("address"))
            .expect("user")
            .expect("known");
        let account = store.account(&user).expect("account");
        let inbox = account.mailbox("INBOX").expect("inbox");
        let messages = account.messages(&inbox.guid).expect("messages");
        let keys: Vec<_> = messages.iter().map(|m| (m.content_id, kind)).collect();
        let views = eventually(Duration::from_secs(30), || {
            let cached = account.derived(&keys).expect("derived");
            cached
                .iter()
                .all(Option::is_some)
                .then(|| cached.into_iter().flatten().collect::<Vec<_>>())
        })
        .expect("every message's views derived after delivery");
        ArrivalViews {
            _store: store,
            account,
            messages,
            views,
        }
    }
}

/// [`TestServer::derived_on_arrival`]'s answer.
pub struct ArrivalViews {
    _store: Store,
    pub account: Arc<cove_store::Account>,
    pub messages: Vec<MessageMeta>,
    pub views: Vec<Vec<u8>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Whether the server had died by itself before the test ended (a
        // crash or a signal): the first thing to know about a failure.
        let died = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.join_drain();
        if std::thread::panicking() {
            if let Some(status) = died {
                eprintln!("---- cove serve had exited by itself: {status} ----");
            }
            let logs = self.logs();
            let skip = logs.len().saturating_sub(200);
            eprintln!(
                "---- cove serve log (last {} lines) ----",
                logs.len() - skip
            );
            for l in &logs[skip..] {
                eprintln!("{l}");
            }
            eprintln!("---- end of log ----");
        }
    }
}

/// `base` made unique to this test process and call: the replication
/// secret of one pair (or fleet) of test nodes. A node of another test
/// that reaches this pair's listeners (through a port freed by a restart
/// and taken again, with a proxy still pointing at it) is then refused
/// for its secret instead of replicating into the wrong test.
pub fn unique_secret(base: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{base}-{}-{n}", std::process::id())
}

/// One nginx auth_http request (`GET /auth` with `headers`) to `addr`:
/// the answer's status and its `Auth-*` headers.
pub fn auth_http(addr: SocketAddr, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>) {
    let mut tcp = tcp_connect(addr);
    let mut req = String::from("GET /auth HTTP/1.0\r\nHost: localhost\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).unwrap();
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {raw:?}"));
    let head = raw.split("\r\n\r\n").next().unwrap_or_default();
    let auth = head
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(n, _)| n.starts_with("Auth-"))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    (status, auth)
}

// ---------------------------------------------------------------------------
// The store, seen from outside

/// Open a data directory with the store API.
pub fn open_store(data_dir: &Path) -> Store {
    Store::open(
        data_dir,
        StoreOptions {
            hostname: "t".into(),
            env: cove_store::Env::default(),
            durability: cove_store::Durability::default(),
        },
    )
    .expect("open the store")
}

/// A mailbox and its messages with their file paths, from the index.
pub fn mailbox_contents(
    store: &Store,
    email: &str,
    mailbox: &str,
) -> (MailboxInfo, Vec<(MessageMeta, PathBuf)>) {
    let address = Address::parse(email).expect("address");
    let user = store
        .user(&address)
        .expect("user lookup")
        .unwrap_or_else(|| panic!("no user {email}"));
    let account = store.account(&user).expect("open account");
    let mb = account
        .mailbox(mailbox)
        .unwrap_or_else(|e| panic!("mailbox {mailbox} of {email}: {e}"));
    let msgs = account
        .messages(&mb.guid)
        .expect("list messages")
        .into_iter()
        .map(|m| {
            let p = account.message_path(&mb, &m);
            (m, p)
        })
        .collect();
    (mb, msgs)
}

/// The value of one sample line (`name{labels} value`) of `/metrics`.
#[track_caller]
pub fn metric(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
}

/// The value of a header (first occurrence, unfolded is not needed here).
pub fn header(message: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(message);
    for line in text.split("\r\n") {
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case(name)
        {
            return Some(v.trim().to_string());
        }
    }
    None
}

/// A small message with a unique Subject and Message-ID.
pub fn message(id: &str, body: &str) -> String {
    format!(
        "From: sender@example.org\r\nTo: rcpt@x.org\r\nSubject: test {id}\r\nMessage-ID: <{id}@cove.test>\r\n\r\n{body}\r\n"
    )
}

// ---------------------------------------------------------------------------
// A line-protocol client (LMTP now; IMAP and POP3 later)

/// One reply: its code and its lines (without CRLF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// The first line, e.g. `250 2.0.0 <a@x.org> Saved as UID 1`.
    pub fn first(&self) -> &str {
        self.lines.first().map(String::as_str).unwrap_or("")
    }

    /// Whether the first line starts with `prefix` (e.g. `"550 5.1.1"`).
    pub fn is(&self, prefix: &str) -> bool {
        self.first().starts_with(prefix)
    }

    /// The UID in a `250 2.0.0 <..> Saved as UID n` reply.
    pub fn saved_uid(&self) -> Option<u32> {
        self.first()
            .rsplit_once("Saved as UID ")
            .and_then(|(_, n)| n.trim().parse().ok())
    }
}

/// Assert a reply starts with `prefix`, with a readable failure.
#[track_caller]
pub fn assert_reply(r: &Reply, prefix: &str) {
    assert!(r.is(prefix), "expected {prefix:?}, got {:?}", r.lines);
}

/// What a whole LMTP transaction got back.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub mail: Reply,
    pub rcpts: Vec<Reply>,
    /// The reply to DATA (354, or 503 when no recipient was accepted);
    /// `None` if MAIL failed.
    pub data: Option<Reply>,
    /// One reply per accepted recipient, in order.
    pub results: Vec<Reply>,
}

/// Dot-stuff a message and end it: CRLF line ends, `.` doubled at line
/// start, then `.CRLF`.
pub fn dot_stuff(body: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 16);
    let normalised = body.replace("\r\n", "\n");
    let trimmed = normalised.strip_suffix('\n').unwrap_or(&normalised);
    for line in trimmed.split('\n') {
        if line.starts_with('.') {
            out.push(b'.');
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// A blocking client for CRLF line protocols over any stream (TCP, TLS).
/// Every read has a timeout (set on the TCP socket).
pub struct Client<S: Read + Write> {
    stream: BufReader<S>,
}

impl Client<TcpStream> {
    pub fn connect(addr: SocketAddr) -> Client<TcpStream> {
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        tcp.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        tcp.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        tcp.set_nodelay(true).unwrap();
        Client::new(tcp)
    }
}

impl<S: Read + Write> Client<S> {
    pub fn new(stream: S) -> Client<S> {
        Client {
            stream: BufReader::new(stream),
        }
    }

    /// The stream, once nothing is left unread in the buffer (STARTTLS).
    pub fn into_inner(self) -> S {
        assert!(
            self.stream.buffer().is_empty(),
            "unread data left: {:?}",
            String::from_utf8_lossy(self.stream.buffer())
        );
        self.stream.into_inner()
    }

    pub fn get_mut(&mut self) -> &mut S {
        self.stream.get_mut()
    }

    /// Write raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        let s = self.stream.get_mut();
        s.write_all(bytes)?;
        s.flush()
    }

    /// Write one line (CRLF added).
    pub fn send_line(&mut self, line: &str) {
        let mut b = Vec::with_capacity(line.len() + 2);
        b.extend_from_slice(line.as_bytes());
        b.extend_from_slice(b"\r\n");
        self.send_raw(&b)
            .unwrap_or_else(|e| panic!("send {line:?}: {e}"));
    }

    /// Read one line without its CRLF; `Ok(None)` at end of stream.
    pub fn read_line(&mut self) -> io::Result<Option<String>> {
        let mut buf = Vec::new();
        let n = self.stream.read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            buf.pop();
        }
        Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
    }

    /// Read one (possibly multi-line) SMTP-style reply, or an error if the
    /// stream ends or times out first.
    pub fn try_read_reply(&mut self) -> io::Result<Reply> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line()?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed after {lines:?}"),
                )
            })?;
            let bad = || {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad reply line {line:?}"),
                )
            };
            let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).ok_or_else(bad)?;
            let more = match line.as_bytes().get(3) {
                Some(b'-') => true,
                Some(b' ') | None => false,
                Some(_) => return Err(bad()),
            };
            lines.push(line);
            if !more {
                return Ok(Reply { code, lines });
            }
        }
    }

    /// Read one reply; panics if none comes.
    #[track_caller]
    pub fn read_reply(&mut self) -> Reply {
        match self.try_read_reply() {
            Ok(r) => r,
            Err(e) => panic!("reading a reply: {e}"),
        }
    }

    /// Whether the server has closed the connection (reads end of stream,
    /// or an error such as a reset), within the read timeout.
    pub fn is_closed(&mut self) -> bool {
        matches!(self.read_line(), Ok(None) | Err(_))
    }

    /// Send a command line and read its reply.
    #[track_caller]
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send_line(line);
        self.read_reply()
    }

    /// Send a command line and read its reply, reporting a vanished server
    /// instead of panicking.
    pub fn try_cmd(&mut self, line: &str) -> io::Result<Reply> {
        self.send_raw(format!("{line}\r\n").as_bytes())?;
        self.try_read_reply()
    }

    /// LHLO.
    pub fn lhlo(&mut self, host: &str) -> Reply {
        self.cmd(&format!("LHLO {host}"))
    }

    /// One whole transaction: MAIL, each RCPT, DATA, the message, and one
    /// reply per accepted recipient.
    pub fn deliver(&mut self, from: &str, rcpts: &[&str], body: &str) -> Delivery {
        self.try_deliver(from, rcpts, body)
            .unwrap_or_else(|e| panic!("delivery failed on the wire: {e}"))
    }

    /// [`deliver`](Client::deliver) that reports a vanished server instead
    /// of panicking.
    pub fn try_deliver(&mut self, from: &str, rcpts: &[&str], body: &str) -> io::Result<Delivery> {
        self.send_raw(format!("MAIL FROM:<{from}>\r\n").as_bytes())?;
        let mail = self.try_read_reply()?;
        if mail.code != 250 {
            return Ok(Delivery {
                mail,
                rcpts: Vec::new(),
                data: None,
                results: Vec::new(),
            });
        }
        let mut replies = Vec::new();
        for r in rcpts {
            self.send_raw(format!("RCPT TO:<{r}>\r\n").as_bytes())?;
            replies.push(self.try_read_reply()?);
        }
        self.send_raw(b"DATA\r\n")?;
        let data = self.try_read_reply()?;
        let mut results = Vec::new();
        if data.code == 354 {
            self.send_raw(&dot_stuff(body))?;
            for _ in replies.iter().filter(|r| r.code / 100 == 2) {
                results.push(self.try_read_reply()?);
            }
        }
        Ok(Delivery {
            mail,
            rcpts: replies,
            data: Some(data),
            results,
        })
    }
}

// ---------------------------------------------------------------------------
// TLS

/// A rustls client configuration trusting exactly the PEM certificate at
/// `cert` (the server's self-signed one).
pub fn tls_config_trusting(cert: &Path) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).expect("read the certificate") {
        roots
            .add(c.expect("parse the certificate"))
            .expect("trust the certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A TLS stream over TCP, as a client.
pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Run the TLS handshake on `tcp` as a client of `server_name`.
pub fn tls_connect(
    tcp: TcpStream,
    config: Arc<rustls::ClientConfig>,
    server_name: &str,
) -> io::Result<TlsStream> {
    let name = rustls_pki_types::ServerName::try_from(server_name.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

// ---------------------------------------------------------------------------
// IMAP

/// An `[imap]` section for [`TestServer::start`]: plain and implicit-TLS
/// listeners on port 0 and a short delay after a failed login. Append more
/// `[imap]` keys after it.
pub const IMAP_CONFIG: &str = "[imap]\nlisten = [\"127.0.0.1:0\"]\ntls_listen = [\"127.0.0.1:0\"]\nauth_failure_delay_ms = 10\n";

impl TestServer {
    /// Add a user who can log in, with `cove user add --password-stdin`.
    pub fn add_user_with_password(&self, email: &str, password: &str) {
        let out = self.cli_stdin(
            &["user", "add", email, "--password-stdin"],
            Some(format!("{password}\n").as_bytes()),
        );
        assert!(
            out.status.success(),
            "user add {email}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }

    /// Connect to the plain IMAP listener and read the greeting.
    pub fn imap(&self) -> Imap<TcpStream> {
        Imap::connect(self.addr_of("imap"))
    }

    /// Connect to the plain IMAP listener and log in.
    pub fn imap_login(&self, user: &str, password: &str) -> Imap<TcpStream> {
        let mut c = self.imap();
        c.login(user, password);
        c
    }

    /// Connect to the implicit-TLS listener (trusting the server's own
    /// certificate, as `localhost`) and read the greeting.
    pub fn imaps(&self) -> Imap<TlsStream> {
        let config = tls_config_trusting(&self.data_dir().join("tls/cert.pem"));
        let tcp = tcp_connect(self.addr_of("imaps"));
        let tls = tls_connect(tcp, config, "localhost").expect("imaps TLS handshake");
        Imap::greeted(tls)
    }

    /// Deliver `body` to `rcpt` over LMTP, asserting it was accepted.
    /// One request to the server's `[http]` listener: (status, body).
    /// A POST carries the admin token from the data directory, as the CLI
    /// does.
    pub fn http(&self, method: &str, path: &str) -> (u16, String) {
        let auth = if method == "POST" {
            let token = fs::read_to_string(self.data_dir().join("admin.token"))
                .expect("read the admin token");
            format!("Authorization: Bearer {}\r\n", token.trim())
        } else {
            String::new()
        };
        let mut s = tcp_connect(self.addr_of(HTTP_MARKER));
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: test\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .expect("send the request");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("read the response");
        let raw = text(&raw);
        let status = raw
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("bad HTTP response {raw:?}"));
        let body = raw
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    pub fn deliver_to(&self, rcpt: &str, body: &str) {
        let mut lmtp = self.lmtp_ready();
        let d = lmtp.deliver("sender@example.org", &[rcpt], body);
        assert!(
            d.results.len() == 1 && d.results[0].is("250"),
            "delivery to {rcpt}: {d:?}"
        );
    }
}

/// A TCP connection with the harness's timeouts.
pub fn tcp_connect(addr: SocketAddr) -> TcpStream {
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    with_timeouts(tcp)
}

/// A TCP connection from the source address `from` (another loopback
/// address, e.g. 127.0.0.2: the whole of 127.0.0.0/8 is loopback), so the
/// server sees a second client.
pub fn tcp_connect_from(from: std::net::IpAddr, addr: SocketAddr) -> TcpStream {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::new(from, 0).into())
        .unwrap_or_else(|e| panic!("bind to {from}: {e}"));
    socket
        .connect_timeout(&addr.into(), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connect from {from} to {addr}: {e}"));
    with_timeouts(socket.into())
}

fn with_timeouts(tcp: TcpStream) -> TcpStream {
    tcp.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    tcp.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp
}

/// A blocking IMAP client for transcript tests. A response is one string:
/// its line without CRLF, with each literal `{n}` kept inline as
/// `{n}\r\n<n bytes>` followed by the rest of the line, so that a FETCH
/// with bodies compares as one exact string.
pub struct Imap<S: Read + Write> {
    client: Client<S>,
    /// The greeting, when one was read.
    pub greeting: String,
}

impl Imap<TcpStream> {
    /// Connect and read the greeting.
    pub fn connect(addr: SocketAddr) -> Imap<TcpStream> {
        Imap::greeted(tcp_connect(addr))
    }

    /// The client's own address (the server logs it as `peer=`).
    pub fn local_addr(&self) -> SocketAddr {
        self.client.stream.get_ref().local_addr().unwrap()
    }

    /// Read one response if one begins within `wait` (for announcements
    /// that arrive on their own, e.g. during IDLE); `None` if nothing came.
    /// The rest of a response that has begun is read with the usual timeout.
    pub fn read_response_within(&mut self, wait: Duration) -> Option<String> {
        if self.client.stream.buffer().is_empty() {
            self.client
                .stream
                .get_ref()
                .set_read_timeout(Some(wait))
                .unwrap();
            let got = self.client.stream.fill_buf().map(|b| b.len());
            self.client
                .stream
                .get_ref()
                .set_read_timeout(Some(READ_TIMEOUT))
                .unwrap();
            match got {
                Ok(0) => panic!("connection closed while waiting for a response"),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                Err(e) => panic!("waiting for a response: {e}"),
            }
        }
        Some(self.read_response())
    }
}

impl<S: Read + Write> Imap<S> {
    /// A client on a stream whose greeting (if any) was already dealt with
    /// (after STARTTLS there is none, RFC 3501 §6.2.1).
    pub fn new(stream: S) -> Imap<S> {
        Imap {
            client: Client::new(stream),
            greeting: String::new(),
        }
    }

    /// A client on a fresh connection: reads the greeting, which must be
    /// `* OK` (RFC 3501 §7.1.1).
    pub fn greeted(stream: S) -> Imap<S> {
        let mut c = Imap::new(stream);
        c.greeting = c.read_response();
        assert!(
            c.greeting.starts_with("* OK "),
            "greeting: {:?}",
            c.greeting
        );
        c
    }

    /// The stream, once nothing is left unread (STARTTLS).
    pub fn into_inner(self) -> S {
        self.client.into_inner()
    }

    /// Write raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.client
            .send_raw(bytes)
            .unwrap_or_else(|e| panic!("send {:?}: {e}", String::from_utf8_lossy(bytes)));
    }

    /// Write one line (CRLF added).
    pub fn send(&mut self, line: &str) {
        self.client.send_line(line);
    }

    /// Read one response (see the type's notes); `Ok(None)` at end of
    /// stream before anything was read.
    pub fn try_read_response(&mut self) -> io::Result<Option<String>> {
        let mut out: Vec<u8> = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = self.client.stream.read_until(b'\n', &mut line)?;
            if n == 0 {
                if out.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed inside a response: {:?}",
                        String::from_utf8_lossy(&out)
                    ),
                ));
            }
            if line.ends_with(b"\r\n") {
                line.truncate(line.len() - 2);
            } else if line.ends_with(b"\n") {
                line.truncate(line.len() - 1);
            }
            out.extend_from_slice(&line);
            match literal_length(&line) {
                Some(len) => {
                    let mut bytes = vec![0u8; len];
                    self.client.stream.read_exact(&mut bytes)?;
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(&bytes);
                }
                None => return Ok(Some(String::from_utf8_lossy(&out).into_owned())),
            }
        }
    }

    /// Read one response; panics if none comes.
    #[track_caller]
    pub fn read_response(&mut self) -> String {
        match self.try_read_response() {
            Ok(Some(r)) => r,
            Ok(None) => panic!("connection closed, a response was expected"),
            Err(e) => panic!("reading a response: {e}"),
        }
    }

    /// Read responses up to and including the one tagged `tag`.
    #[track_caller]
    pub fn read_until_tagged(&mut self, tag: &str) -> Vec<String> {
        let prefix = format!("{tag} ");
        let mut lines = Vec::new();
        loop {
            match self.try_read_response() {
                Ok(Some(r)) => {
                    let done = r.starts_with(&prefix);
                    lines.push(r);
                    if done {
                        return lines;
                    }
                }
                Ok(None) => panic!("connection closed before {tag}'s completion; got {lines:?}"),
                Err(e) => panic!("reading {tag}'s responses: {e}; got {lines:?}"),
            }
        }
    }

    /// Send a command line (its first word is the tag) and read every
    /// response up to its tagged completion, which is the last element.
    #[track_caller]
    pub fn cmd(&mut self, line: &str) -> Vec<String> {
        let tag = line.split(' ').next().unwrap_or("").to_string();
        self.send(line);
        self.read_until_tagged(&tag)
    }

    /// Send a command and assert its tagged completion starts with
    /// `TAG OK`; returns all its responses.
    #[track_caller]
    pub fn cmd_ok(&mut self, line: &str) -> Vec<String> {
        let tag = line.split(' ').next().unwrap_or("").to_string();
        let r = self.cmd(line);
        assert!(
            r.last()
                .is_some_and(|l| l.starts_with(&format!("{tag} OK"))),
            "{line:?} failed: {r:?}"
        );
        r
    }

    /// LOGIN with quoted strings, asserting success.
    #[track_caller]
    pub fn login(&mut self, user: &str, password: &str) {
        self.cmd_ok(&format!("L1 LOGIN {} {}", quoted(user), quoted(password)));
    }

    /// APPEND with a LITERAL+ literal (RFC 7888); `flags_and_date` is what
    /// goes between the mailbox and the literal (e.g. `(\Seen) "01-Jan-2020
    /// 00:00:00 +0000"`, or empty). Returns all the responses.
    #[track_caller]
    pub fn append(
        &mut self,
        tag: &str,
        mailbox: &str,
        flags_and_date: &str,
        message: &[u8],
    ) -> Vec<String> {
        let sp = if flags_and_date.is_empty() { "" } else { " " };
        let mut bytes = format!(
            "{tag} APPEND {mailbox}{sp}{flags_and_date} {{{}+}}\r\n",
            message.len()
        )
        .into_bytes();
        bytes.extend_from_slice(message);
        bytes.extend_from_slice(b"\r\n");
        self.send_raw(&bytes);
        self.read_until_tagged(tag)
    }

    /// Whether the server closes the connection now: end of stream (or a
    /// reset) within the read timeout, with nothing else sent first. A
    /// timeout is not a close.
    pub fn closed(&mut self) -> bool {
        match self.try_read_response() {
            Ok(None) => true,
            Ok(Some(r)) => panic!("expected the connection to close, got {r:?}"),
            Err(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            ),
        }
    }
}

/// The length of the literal a response line ends with (`{n}`), if any.
fn literal_length(line: &[u8]) -> Option<usize> {
    let body = line.strip_suffix(b"}")?;
    let open = body.iter().rposition(|b| *b == b'{')?;
    let digits = &body[open + 1..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// An IMAP quoted string.
pub fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Whether `line` matches `pattern`, where `{num}` stands for one or more
/// ASCII digits and `{any}` for any run of characters (possibly empty);
/// everything else is literal. (IMAP literals are `{digits}`, so these two
/// never clash with them.)
pub fn line_matches(pattern: &str, line: &str) -> bool {
    fn go(p: &[u8], l: &[u8]) -> bool {
        if let Some(rest) = p.strip_prefix(b"{num}") {
            let digits = l.iter().take_while(|b| b.is_ascii_digit()).count();
            return (1..=digits).any(|n| go(rest, &l[n..]));
        }
        if let Some(rest) = p.strip_prefix(b"{any}") {
            return (0..=l.len()).any(|n| go(rest, &l[n..]));
        }
        match (p.split_first(), l.split_first()) {
            (None, None) => true,
            (Some((a, pr)), Some((b, lr))) => a == b && go(pr, lr),
            _ => false,
        }
    }
    go(pattern.as_bytes(), line.as_bytes())
}

/// Assert responses equal the expected lines, in order; an expected line
/// may use the `{num}` and `{any}` patterns of [`line_matches`].
#[track_caller]
pub fn assert_lines<T: AsRef<str>>(got: &[T], want: &[&str]) {
    let got: Vec<&str> = got.iter().map(AsRef::as_ref).collect();
    let ok = got.len() == want.len() && got.iter().zip(want).all(|(g, w)| line_matches(w, g));
    assert!(
        ok,
        "responses differ\n--- expected ---\n{}\n--- got ---\n{}\n",
        want.join("\n"),
        got.join("\n")
    );
}

/// [`assert_lines`] for responses whose order the RFC leaves open (LIST,
/// LSUB): the untagged lines in any order, then the tagged line last.
#[track_caller]
pub fn assert_lines_unordered<T: AsRef<str>>(got: &[T], want: &[&str]) {
    let got: Vec<&str> = got.iter().map(AsRef::as_ref).collect();
    let mut remaining: Vec<&str> = got.clone();
    let ok = got.len() == want.len()
        && got
            .last()
            .zip(want.last())
            .is_some_and(|(g, w)| line_matches(w, g))
        && want[..want.len() - 1].iter().all(|w| {
            match remaining[..remaining.len() - 1]
                .iter()
                .position(|g| line_matches(w, g))
            {
                Some(i) => {
                    remaining.remove(i);
                    true
                }
                None => false,
            }
        });
    assert!(
        ok,
        "responses differ (untagged in any order)\n--- expected ---\n{}\n--- got ---\n{}\n",
        want.join("\n"),
        got.join("\n")
    );
}

/// The value after `[CODE ` in a response, e.g. `code_value(line,
/// "UIDVALIDITY")` -> `"1700000000"`.
pub fn code_value(line: &str, code: &str) -> Option<String> {
    let at = line.find(&format!("[{code} "))? + code.len() + 2;
    let end = line[at..].find(']')? + at;
    Some(line[at..end].to_string())
}

/// Standard base64 (RFC 4648 §4), for AUTHENTICATE.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Damaged content

/// Flip one byte of a file in place (keeping its inode, so every hard link
/// to it sees the change), as bit rot or a careless program would.
pub fn corrupt_in_place(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o640)).expect("make it writable");
    let mut bytes = fs::read(path).expect("read");
    let last = bytes.len() - 3;
    bytes[last] ^= 0x20;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for writing");
    f.write_all(&bytes).expect("write in place");
}

/// The `BODY[]` of the message with this UID in the selected mailbox, as
/// the server serves it.
pub fn fetch_body<S: Read + Write>(imap: &mut Imap<S>, uid: u32) -> String {
    let r = imap.cmd_ok(&format!("f UID FETCH {uid} BODY.PEEK[]"));
    let fetch = r
        .iter()
        .find(|l| l.starts_with("* ") && l.contains("FETCH"))
        .unwrap_or_else(|| panic!("no FETCH response: {r:?}"));
    let at = fetch.find("BODY[] {").expect("a literal") + "BODY[] ".len();
    let open = &fetch[at..];
    let len: usize = open[1..open.find('}').expect("}")].parse().expect("length");
    let start = open.find("}\r\n").expect("literal start") + 3;
    open[start..start + len].to_string()
}
