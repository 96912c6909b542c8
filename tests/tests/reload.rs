//! SIGHUP: the TLS certificate (renewed by certbot), the protocol limits
//! and the log level are taken without a restart; one log line says what
//! changed and what needs a restart.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cove_tests::{
    Client, IMAP_CONFIG, Imap, TestServer, assert_lines, eventually, tcp_connect,
    tls_config_trusting, tls_connect,
};

const USER: &str = "a@x.org";
const PASS: &str = "pw";

/// A new self-signed certificate for `localhost`, as certbot would write
/// it: the files are replaced in place.
fn write_certificate(cert: &Path, key: &Path) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("make a certificate");
    std::fs::write(key, made.signing_key.serialize_pem()).expect("write key");
    // A key every user could read is refused at start.
    std::fs::set_permissions(key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod key");
    std::fs::write(cert, made.cert.pem()).expect("write cert");
}

fn sighup(s: &TestServer) {
    s.sighup();
}

/// Wait for the `n`-th `SIGHUP:` line and return it.
fn reload_line(s: &TestServer, n: usize) -> String {
    eventually(Duration::from_secs(20), || {
        s.logs()
            .into_iter()
            .filter(|l| l.contains("SIGHUP: "))
            .nth(n - 1)
    })
    .unwrap_or_else(|| panic!("no reload logged:\n{}", s.logs().join("\n")))
}

fn imaps(addr: SocketAddr, trusting: &Path) -> std::io::Result<Imap<cove_tests::TlsStream>> {
    let tls = tls_connect(
        tcp_connect(addr),
        tls_config_trusting(trusting),
        "localhost",
    )?;
    Ok(Imap::greeted(tls))
}

/// Open an LMTP transaction and give it `n` recipients; the replies.
fn rcpts(addr: SocketAddr, n: usize) -> Vec<String> {
    let mut c = Client::connect(addr);
    c.read_reply();
    c.lhlo("test");
    c.send_line("MAIL FROM:<s@example.org>");
    c.read_reply();
    (0..n)
        .map(|_| {
            c.send_line(&format!("RCPT TO:<{USER}>"));
            c.read_reply().first().to_string()
        })
        .collect()
}

#[test]
fn sighup_takes_a_renewed_certificate_and_new_limits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    write_certificate(&cert, &key);
    let old_cert = dir.path().join("old.pem");
    std::fs::copy(&cert, &old_cert).expect("keep the old certificate");
    let tls = format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let s = TestServer::start(&format!("max_recipients = 3\n{IMAP_CONFIG}{tls}"));
    s.add_user_with_password(USER, PASS);
    let imaps_addr = s.addr_of("imaps");

    // A session opened before the renewal, logged in.
    let mut open = imaps(imaps_addr, &old_cert).expect("TLS with the first certificate");
    open.cmd_ok(&format!("a1 LOGIN {USER} {PASS}"));
    assert_eq!(rcpts(s.lmtp_addr(), 3).last().map(|r| &r[..3]), Some("250"));

    // certbot renews; the operator lowers a limit and moves a listener.
    write_certificate(&cert, &key);
    let text = std::fs::read_to_string(s.config_path()).expect("read config");
    let text = text
        .replace("max_recipients = 3", "max_recipients = 1")
        .replace(
            "listen = [\"127.0.0.1:0\"]\nmax_rec",
            "listen = [\"127.0.0.2:0\"]\nmax_rec",
        );
    assert!(text.contains("127.0.0.2:0"), "{text}");
    std::fs::write(s.config_path(), text).expect("write config");
    sighup(&s);
    let line = reload_line(&s, 1);
    assert!(
        line.contains("applied lmtp.max_recipients, tls certificate (new chain from")
            && line.ends_with("needs a restart: lmtp.listen"),
        "{line}"
    );

    // A new client sees the new certificate: trusting only the old one
    // fails, trusting the new one works.
    assert!(
        imaps(imaps_addr, &old_cert).is_err(),
        "the old certificate is still served"
    );
    let mut new = imaps(imaps_addr, &cert).expect("TLS with the renewed certificate");
    new.cmd_ok(&format!("b1 LOGIN {USER} {PASS}"));
    // The session opened before goes on over its TLS keys.
    assert_lines(&open.cmd("a2 NOOP"), &["a2 OK NOOP completed"]);
    open.cmd_ok("a3 SELECT INBOX");
    // New LMTP sessions get the new limit (the listener did not move).
    let replies = rcpts(s.lmtp_addr(), 2);
    assert_eq!(replies[0].get(..3), Some("250"), "{replies:?}");
    assert!(replies[1].starts_with("452"), "{replies:?}");

    // A file that does not pass the checks changes nothing.
    std::fs::write(s.config_path(), "[imap]\nlisten = [\"nowhere\"]\n").expect("write");
    sighup(&s);
    let refused = eventually(Duration::from_secs(20), || {
        s.logs()
            .into_iter()
            .find(|l| l.contains("SIGHUP: configuration refused, nothing changed"))
    })
    .unwrap_or_else(|| panic!("no refusal logged:\n{}", s.logs().join("\n")));
    assert!(refused.contains("nowhere"), "{refused}");
    assert_lines(&new.cmd("b2 NOOP"), &["b2 OK NOOP completed"]);
}

// [server] log_level changes with SIGHUP (without COVE_LOG, which would
// win): started at `warn`, cove writes none of its INFO lines; after the
// reload to `debug` it does, beginning with the reload's own line.
#[test]
fn sighup_changes_the_log_level() {
    use cove_tests::daemon::Daemon;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("cove.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    // As an editor or certbot does: a new file renamed over the old one,
    // so a reload never reads half of it.
    let write = |level: &str| {
        let new = dir.path().join("cove.toml.new");
        std::fs::write(
            &new,
            format!(
                "data_dir = {:?}\nhostname = \"cove.test\"\n[server]\nlog_level = \"{level}\"\n[lmtp]\nlisten = [\"127.0.0.1:{port}\"]\n",
                dir.path().join("data").display().to_string()
            ),
        )
        .expect("write config");
        std::fs::rename(&new, &config).expect("rename config");
    };
    write("warn");
    let mut cmd = Command::new(cove_tests::cove_bin());
    cmd.args(["serve", "--config"])
        .arg(&config)
        .env_remove("COVE_LOG");
    let mut d = Daemon::spawn(cmd, &dir.path().join("log"));
    let lmtp = SocketAddr::from(([127, 0, 0, 1], port));
    let up = eventually(Duration::from_secs(60), || {
        cove_tests::daemon::greeting(lmtp).ok()
    });
    assert!(up.is_some_and(|g| g.starts_with("220 ")), "{}", d.output());
    assert!(
        !d.output().contains(" INFO "),
        "INFO lines at warn:\n{}",
        d.output()
    );
    write("debug");
    let line = eventually(Duration::from_secs(20), || {
        cove_tests::signal(d.pid(), "HUP");
        std::thread::sleep(Duration::from_millis(100));
        d.output()
            .lines()
            .find(|l| l.contains("SIGHUP: "))
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("no reload line:\n{}", d.output()));
    assert!(
        line.contains(" INFO ")
            && line.contains("applied server.log_level, log level warn → debug"),
        "{line}\n{}",
        d.output()
    );
    let st = d.stop(Duration::from_secs(30));
    assert!(st.success(), "{}", d.output());
}

/// On an LMTP listener with `proxy_protocol = true`: send a PROXY v1
/// header and NOOP; the reply to NOOP, or `None` when the connection is
/// closed first (cove refuses a PROXY header from an untrusted address).
fn noop_through_proxy(addr: SocketAddr) -> Option<String> {
    let mut c = Client::connect(addr);
    c.send_line("PROXY TCP4 203.0.113.7 127.0.0.1 40000 24");
    c.send_line("NOOP");
    loop {
        let reply = c.try_read_reply().ok()?.first().to_string();
        if reply.starts_with("250") {
            return Some(reply);
        }
    }
}

// trusted_proxies changes with SIGHUP: a PROXY header from 127.0.0.1 closes
// the connection while 127.0.0.1 is not trusted, and is taken after the
// reload that trusts it.
#[test]
fn sighup_applies_trusted_proxies() {
    let s = TestServer::start_with_root(
        cove_tests::HOSTNAME,
        "trusted_proxies = []",
        "proxy_protocol = true",
    );
    assert_eq!(noop_through_proxy(s.lmtp_addr()), None);
    let refused = eventually(Duration::from_secs(10), || {
        s.logged("a PROXY protocol header where none is accepted")
            .then_some(())
    });
    assert!(refused.is_some(), "{}", s.logs().join("\n"));
    let text = std::fs::read_to_string(s.config_path()).expect("read config");
    let text = text.replace("trusted_proxies = []", "trusted_proxies = [\"127.0.0.1\"]");
    std::fs::write(s.config_path(), text).expect("write config");
    sighup(&s);
    let line = reload_line(&s, 1);
    assert!(line.contains("applied trusted_proxies"), "{line}");
    assert!(!line.contains("needs a restart"), "{line}");
    let after = noop_through_proxy(s.lmtp_addr());
    assert!(after.is_some(), "{}", s.logs().join("\n"));
}
