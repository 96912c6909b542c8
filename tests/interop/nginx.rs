//! nginx's mail proxy (Debian's nginx with libnginx-mod-mail) in front of
//! cove, the way operators run it: nginx asks cove's own auth_http endpoint
//! (`GET /auth`, through an nginx http upstream) where each login goes, and
//! hands the connection over with a PROXY protocol header, so cove sees the
//! real client's address.
//!
//! Checked: IMAP and POP3 logins through nginx (POP3 failed with
//! `proxy_protocol on` before: `-ERR Unknown command`); the per-IP limit
//! counts the real client (127.0.0.2 and 127.0.0.3 behind one proxy), not
//! the proxy; a failed login is logged with the client's address; a PROXY
//! header from an address that is not a trusted proxy closes the
//! connection with a log line.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cove_tests::{Client, Imap, TestServer, eventually};

use crate::common::{free_port, program, skip_or_fail, wait_for_listener};

const MAIL_MODULE: &str = "/usr/lib/nginx/modules/ngx_mail_module.so";
const USER: &str = "alice@example.com";
const PASSWORD: &str = "a good password";

/// nginx in the foreground, one process, its files in a temp dir; killed
/// when dropped.
struct Nginx {
    child: Child,
    _dir: tempfile::TempDir,
    imap: u16,
    pop3: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_nginx(nginx: &Path, cove_http: SocketAddr) -> Nginx {
    let dir = tempfile::Builder::new()
        .prefix("cove-nginx-")
        .tempdir()
        .expect("temp dir");
    let d = dir.path().display();
    let (imap, pop3, auth) = (free_port(), free_port(), free_port());
    let conf = format!(
        r#"load_module {MAIL_MODULE};
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 128; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream cove_auth {{ server {cove_http}; }}
    server {{
        listen 127.0.0.1:{auth};
        location = /auth {{ proxy_pass http://cove_auth/auth; }}
    }}
}}
mail {{
    auth_http 127.0.0.1:{auth}/auth;
    proxy_pass_error_message on;
    server {{
        listen 127.0.0.1:{imap};
        protocol imap;
        proxy_protocol on;
    }}
    server {{
        listen 127.0.0.1:{pop3};
        protocol pop3;
        pop3_auth plain;
        proxy_protocol on;
    }}
}}
"#
    );
    let conf_path = dir.path().join("nginx.conf");
    fs::write(&conf_path, conf).expect("write nginx.conf");
    let child = Command::new(nginx)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let n = Nginx {
        child,
        _dir: dir,
        imap,
        pop3,
    };
    for port in [imap, pop3, auth] {
        assert!(
            wait_for_listener(port, Duration::from_secs(20)),
            "nginx did not listen on {port}: {}",
            fs::read_to_string(n._dir.path().join("error.log")).unwrap_or_default()
        );
    }
    n
}

/// A TCP connection to `port` on 127.0.0.1 from the address `from`.
fn connect_from(from: &str, port: u16) -> TcpStream {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let local: SocketAddr = format!("{from}:0").parse().expect("address");
    sock.bind(&local.into()).expect("bind the client address");
    let to: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    sock.connect_timeout(&to.into(), Duration::from_secs(10))
        .expect("connect");
    let tcp: TcpStream = sock.into();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    tcp
}

#[test]
fn nginx_mail_proxy_with_auth_http_and_the_proxy_protocol() {
    let Some(nginx) = program("nginx", "nginx") else {
        return;
    };
    if !Path::new(MAIL_MODULE).exists() {
        skip_or_fail("nginx's mail module is not installed (Debian package libnginx-mod-mail)");
        return;
    }
    let cove = TestServer::start_with_root(
        "storage-01",
        r#"trusted_proxies = ["127.0.0.1/32"]"#,
        r#"
[imap]
listen = ["127.0.0.1:0"]
proxy_protocol = true
max_connections_per_ip = 2
auth_failure_delay_ms = 10

[pop3]
listen = ["127.0.0.1:0"]
proxy_protocol = true

[http]
listen = ["127.0.0.1:0"]
"#,
    );
    cove.cli_stdin(
        &["user", "add", USER, "--password-stdin"],
        Some(PASSWORD.as_bytes()),
    );
    let http = cove.addr_of(cove_tests::HTTP_MARKER);
    let proxy = start_nginx(&nginx, http);

    // IMAP through nginx from two client addresses: each gets two sessions
    // (the per-IP limit counts clients, not the proxy); a third one from
    // 127.0.0.2 is refused by cove.
    let login = |from: &str| {
        let mut imap = Imap::greeted(connect_from(from, proxy.imap));
        imap.cmd_ok(&format!(
            "a1 LOGIN {} {}",
            cove_tests::quoted(USER),
            cove_tests::quoted(PASSWORD)
        ));
        imap.cmd_ok("a2 SELECT INBOX");
        imap
    };
    let held: Vec<_> = ["127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3"]
        .into_iter()
        .map(login)
        .collect();
    let mut third = Client::new(connect_from("127.0.0.2", proxy.imap));
    let greeting = third.read_line().ok().flatten().unwrap_or_default();
    assert!(
        greeting.starts_with("* OK"),
        "nginx's greeting: {greeting:?}"
    );
    third.send_line(&format!(
        "a1 LOGIN {} {}",
        cove_tests::quoted(USER),
        cove_tests::quoted(PASSWORD)
    ));
    let answer = third.read_line().ok().flatten().unwrap_or_default();
    assert!(
        answer.contains("Too many connections from your address"),
        "a third session from 127.0.0.2 is over its per-IP limit: {answer:?}"
    );
    drop(held);

    // A wrong password, through nginx: refused by auth_http, logged with the
    // client's address (fail2ban matches this line).
    let mut imap = Imap::greeted(connect_from("127.0.0.3", proxy.imap));
    let r = imap.cmd(&format!("b1 LOGIN {} \"wrong\"", cove_tests::quoted(USER)));
    assert!(r.last().is_some_and(|l| l.starts_with("b1 NO")), "{r:?}");
    assert!(
        eventually(Duration::from_secs(10), || cove
            .logged("login failed user=alice@example.com peer=127.0.0.3")
            .then_some(()))
        .is_some(),
        "the failure is logged with the client's address:\n{}",
        cove.logs().join("\n")
    );

    // POP3 through nginx with the PROXY header.
    let mut pop = Client::new(connect_from("127.0.0.2", proxy.pop3));
    let mut pop_cmd = |line: Option<&str>| {
        if let Some(line) = line {
            pop.send_line(line);
        }
        pop.read_line().ok().flatten().unwrap_or_default()
    };
    assert!(pop_cmd(None).starts_with("+OK"), "greeting");
    assert!(pop_cmd(Some(&format!("USER {USER}"))).starts_with("+OK"));
    let r = pop_cmd(Some(&format!("PASS {PASSWORD}")));
    assert!(r.starts_with("+OK"), "POP3 login through nginx: {r:?}");
    assert_eq!(pop_cmd(Some("STAT")), "+OK 0 0");
    assert!(pop_cmd(Some("QUIT")).starts_with("+OK"));

    // A PROXY header from an address that is not a trusted proxy: refused.
    let imap_addr = cove.addr_of("imap");
    let mut direct = Client::new(connect_from("127.0.0.4", imap_addr.port()));
    let greeting = direct.read_line().ok().flatten().unwrap_or_default();
    assert!(greeting.starts_with("* OK"), "greeting: {greeting:?}");
    direct.send_line("PROXY TCP4 198.51.100.7 127.0.0.1 4000 143");
    assert!(direct.is_closed(), "the connection is closed");
    assert!(
        eventually(Duration::from_secs(10), || cove
            .logged("PROXY protocol header where none is accepted")
            .then_some(()))
        .is_some(),
        "{}",
        cove.logs().join("\n")
    );
}
