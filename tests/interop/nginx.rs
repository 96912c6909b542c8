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

use cove_tests::cluster::{Fleet, NAMES, address_preferring, preferred};
use cove_tests::{Client, Imap, TestServer, eventually, quoted};

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
    start_nginx_for(nginx, &[cove_http], true)
}

/// nginx's mail proxy with `auth_http` through an http upstream of every
/// node in `auth` (tried in turn; a dead node is skipped), and the PROXY
/// protocol to the backends or not.
fn start_nginx_for(nginx: &Path, auth_servers: &[SocketAddr], proxy_protocol: bool) -> Nginx {
    let dir = tempfile::Builder::new()
        .prefix("cove-nginx-")
        .tempdir()
        .expect("temp dir");
    let d = dir.path().display();
    let (imap, pop3, auth) = (free_port(), free_port(), free_port());
    let upstream: String = auth_servers
        .iter()
        .map(|a| format!("server {a} max_fails=1 fail_timeout=5s; "))
        .collect();
    let proxy_protocol = if proxy_protocol { "on" } else { "off" };
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
    upstream cove_auth {{ {upstream} }}
    server {{
        listen 127.0.0.1:{auth};
        location = /auth {{
            proxy_pass http://cove_auth/auth;
            proxy_connect_timeout 1s;
            proxy_next_upstream error timeout;
        }}
    }}
}}
mail {{
    auth_http 127.0.0.1:{auth}/auth;
    proxy_pass_error_message on;
    server {{
        listen 127.0.0.1:{imap};
        protocol imap;
        proxy_protocol {proxy_protocol};
    }}
    server {{
        listen 127.0.0.1:{pop3};
        protocol pop3;
        pop3_auth plain;
        proxy_protocol {proxy_protocol};
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

/// Log in through nginx; `Err` with what was answered when refused.
fn login_through(port: u16, user: &str) -> Result<Imap<TcpStream>, String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut c = Client::new(tcp);
    let greeting = c.read_line().ok().flatten().unwrap_or_default();
    if !greeting.starts_with("* OK") {
        return Err(greeting);
    }
    c.send_line(&format!("l1 LOGIN {} {}", quoted(user), quoted(PASSWORD)));
    let answer = c.read_line().ok().flatten().unwrap_or_default();
    if !answer.starts_with("l1 OK") {
        return Err(answer);
    }
    Ok(Imap::new(c.into_inner()))
}

/// POP3 through nginx: the UIDL listing of `user`'s maildrop.
fn uidl_through(port: u16, user: &str) -> Result<Vec<String>, String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut c = Client::new(tcp);
    let mut line = |send: Option<&str>| {
        if let Some(l) = send {
            c.send_line(l);
        }
        c.read_line().ok().flatten().unwrap_or_default()
    };
    for (send, what) in [
        (None, "greeting"),
        (Some(format!("USER {user}")), "USER"),
        (Some(format!("PASS {PASSWORD}")), "PASS"),
        (Some("UIDL".to_string()), "UIDL"),
    ] {
        let answer = line(send.as_deref());
        if !answer.starts_with("+OK") {
            return Err(format!("{what}: {answer}"));
        }
    }
    let mut uidls = Vec::new();
    loop {
        let l = line(None);
        if l == "." || l.is_empty() {
            break;
        }
        uidls.push(l);
    }
    line(Some("QUIT"));
    Ok(uidls)
}

/// The node whose log shows `user`'s latest IMAP login.
fn logged_in_at(fleet: &Fleet, user: &str, logins_before: &[usize]) -> Option<usize> {
    (0..4).find(|&i| {
        let n = fleet.nodes[i]
            .logs()
            .iter()
            .filter(|l| l.contains("imap login") && l.contains(user))
            .count();
        n > logins_before[i]
    })
}

fn logins(fleet: &Fleet, user: &str) -> Vec<usize> {
    (0..4)
        .map(|i| {
            fleet.nodes[i]
                .logs()
                .iter()
                .filter(|l| l.contains("imap login") && l.contains(user))
                .count()
        })
        .collect()
}

/// UIDVALIDITY and each message's UID, flags (keywords included) of
/// `user`'s INBOX, over `imap`.
fn mailbox_state(imap: &mut Imap<TcpStream>) -> (String, Vec<String>) {
    let select = imap.cmd_ok("s1 SELECT INBOX");
    let validity = select
        .iter()
        .find_map(|l| l.split("[UIDVALIDITY ").nth(1))
        .and_then(|r| r.split(']').next())
        .unwrap_or_default()
        .to_string();
    let mut fetched: Vec<String> = imap
        .cmd_ok("s2 UID FETCH 1:* (UID FLAGS)")
        .into_iter()
        .filter(|l| l.starts_with("* "))
        .map(|l| {
            l.split_once(" FETCH ")
                .map(|(_, r)| r.to_string())
                .unwrap_or(l)
        })
        .collect();
    fetched.sort();
    (validity, fetched)
}

// The HA drill of issue 12: nginx in front of two pairs, auth_http served by
// cove through an nginx upstream of all four nodes. A user's logins land on
// their preferred node; kill -9 it and the next login through nginx lands
// on the peer, which shows the same mailbox (UIDVALIDITY, UIDs, flags,
// keywords) and has the message the dead node acknowledged with
// sync_delivery; a user of the other pair logs in through any node's
// auth_http; restart the dead node and routing returns to it.
#[test]
fn nginx_fails_over_to_the_peer_when_a_node_dies() {
    let Some(nginx) = program("nginx", "nginx") else {
        return;
    };
    if !Path::new(MAIL_MODULE).exists() {
        skip_or_fail("nginx's mail module is not installed (Debian package libnginx-mod-mail)");
        return;
    }
    let alice = address_preferring(0, "alice", "a.test");
    let carol = address_preferring(2, "carol", "b.test");
    let mut fleet = Fleet::start_with(&[&alice, &carol], "sync_delivery = true");
    for (user, node) in [(&alice, 0), (&carol, 2)] {
        let out = fleet.nodes[node].cli_stdin(
            &["user", "passwd", user, "--password-stdin"],
            Some(PASSWORD.as_bytes()),
        );
        assert!(out.status.success(), "{out:?}");
    }
    // The new passwords reach the peers (replicated users).
    std::thread::sleep(Duration::from_secs(3));
    let auth: Vec<SocketAddr> = fleet
        .ports
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], p.http)))
        .collect();
    let proxy = start_nginx_for(&nginx, &auth, false);

    // A message acknowledged by alice's preferred node with sync_delivery.
    let mut lmtp = fleet.nodes[0].lmtp_ready();
    let d = lmtp.deliver(
        "sender@example.org",
        &[&alice],
        &cove_tests::message("before-the-crash", "acknowledged by s1"),
    );
    assert!(d.results.iter().all(|r| r.is("250")), "{:?}", d.results);

    // alice lands on s1, carol (the other pair) on s3, whichever node's
    // auth_http nginx asks.
    for (user, want) in [(&alice, 0), (&carol, 2)] {
        assert_eq!(preferred(user), want);
        let before = logins(&fleet, user);
        let mut imap = login_through(proxy.imap, user).unwrap_or_else(|e| panic!("{user}: {e}"));
        imap.cmd_ok("n1 NOOP");
        let at = eventually(Duration::from_secs(10), || {
            logged_in_at(&fleet, user, &before)
        });
        assert_eq!(at, Some(want), "{user} lands on {}", NAMES[want]);
    }
    let mut imap = login_through(proxy.imap, &alice).expect("alice on s1");
    imap.cmd_ok("f0 SELECT INBOX");
    imap.cmd_ok("f1 UID STORE 1 +FLAGS (\\Flagged $Important)");
    let on_s1 = mailbox_state(&mut imap);
    drop(imap);
    let uidls_s1 = uidl_through(proxy.pop3, &alice).expect("POP3 through nginx on s1");
    assert_eq!(uidls_s1.len(), 1, "{uidls_s1:?}");
    // Replicated to s2 before s1 dies (a change acknowledged without
    // sync_delivery may still be on its way: wait for it).
    let s2_has_flag = || {
        let mut direct = fleet.nodes[1].imap_login(&alice, PASSWORD);
        (mailbox_state(&mut direct) == on_s1).then_some(())
    };
    eventually(Duration::from_secs(20), s2_has_flag).expect("s2 has s1's state");

    // kill -9 s1: the next login through nginx lands on s2.
    fleet.nodes[0].kill9();
    let killed = std::time::Instant::now();
    let before = logins(&fleet, &alice);
    let mut imap = eventually(Duration::from_secs(30), || {
        login_through(proxy.imap, &alice).ok()
    })
    .expect("a login through nginx after s1 died");
    let failover = killed.elapsed();
    crate::common::announce(&format!(
        "failover: kill -9 to the first login through nginx on the peer: {failover:?}"
    ));
    let at = eventually(Duration::from_secs(10), || {
        logged_in_at(&fleet, &alice, &before)
    });
    assert_eq!(at, Some(1), "alice now lands on s2");
    let on_s2 = mailbox_state(&mut imap);
    assert_eq!(on_s2, on_s1, "same UIDVALIDITY, UIDs, flags and keywords");
    let fetched = imap.cmd_ok("b1 UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])");
    assert!(
        fetched.iter().any(|l| l.contains("before-the-crash")),
        "the message s1 acknowledged is on s2: {fetched:?}"
    );
    // Each protocol's health is checked on its own: in the few
    // milliseconds between s2 noticing s1's IMAP and its POP3 gone, a POP3
    // login may still be sent to s1 and fail (nginx answers -ERR); a
    // poller tries again, as the IMAP login above did.
    let uidls_s2 = eventually(Duration::from_secs(10), || {
        uidl_through(proxy.pop3, &alice).ok()
    })
    .expect("POP3 through nginx on s2");
    assert_eq!(uidls_s2, uidls_s1, "the same POP3 UIDLs on the peer");
    imap.cmd_ok("f2 UID STORE 1 +FLAGS (\\Answered)");
    imap.cmd_ok("f3 LOGOUT");
    drop(imap);

    // s1 comes back: the two converge and alice's logins return to s1.
    fleet.nodes[0].restart();
    let back = eventually(Duration::from_secs(30), || {
        let before = logins(&fleet, &alice);
        let mut imap = login_through(proxy.imap, &alice).ok()?;
        imap.cmd_ok("n2 NOOP");
        let at = eventually(Duration::from_secs(5), || {
            logged_in_at(&fleet, &alice, &before)
        })?;
        if at != 0 {
            std::thread::sleep(Duration::from_millis(200));
            return None;
        }
        let state = mailbox_state(&mut imap);
        state
            .1
            .iter()
            .any(|l| l.contains("\\Answered"))
            .then_some(state)
    });
    assert!(
        back.is_some(),
        "alice back on s1 with the change made on s2"
    );
}
