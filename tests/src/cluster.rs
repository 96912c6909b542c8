//! Four `cove serve` processes as two pairs under one cluster map, and the
//! clients of their MTA lookups (socketmap netstrings, readsocket lines).
//!
//! pair-a is `s1` and `s2` holding `a.test`; pair-b is `s3` and `s4`
//! holding `b.test` and `*.b.test`. Each node's LMTP, HTTP, replication
//! and socketmap ports are chosen before start (the map is the same file
//! on every node and names them), and every node replicates with its
//! pair's other node directly.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::{TestServer, eventually};

pub const NAMES: [&str; 4] = ["s1", "s2", "s3", "s4"];
const SECRET: &str = "cluster-test-secret-0123456789";
/// How long the nodes get to see each other (health polls, user lists).
pub const SETTLE: Duration = Duration::from_secs(30);

/// A port that is free and stays free until a node binds it: below the
/// kernel's ephemeral range, so no outgoing connection (the nodes' health
/// polls and replication links) and no bind to port 0 can take it first.
/// Each call tries the next port from a start that differs per process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768)
        .clamp(12000, 65535);
    let span = low - 10000;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let seed = std::process::id().wrapping_mul(7919) ^ nanos;
    // Tests in one process run in parallel threads: a port handed out is
    // never handed out again, even before its node binds it.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 10000 + (seed.wrapping_add(n.wrapping_mul(37)) % span);
        let port = u16::try_from(port).expect("a port");
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if given.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port below the ephemeral range")
}

/// One node's ports.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub lmtp: u16,
    pub imap: u16,
    pub pop3: u16,
    pub http: u16,
    pub replication: u16,
    pub socketmap: u16,
}

/// The four nodes; `nodes[i]` is `NAMES[i]`. A killed node stays in the
/// vector, not running.
pub struct Fleet {
    pub nodes: Vec<TestServer>,
    pub ports: Vec<Ports>,
}

/// The `[cluster]` text every node gets.
pub fn cluster_map(ports: &[Ports], health_interval_ms: u64) -> String {
    let mut map =
        format!("[cluster]\nhealth_interval_ms = {health_interval_ms}\nhealth_timeout_ms = 500\n");
    for (pair, domains, nodes) in [
        ("pair-a", "\"a.test\"", [0, 1]),
        ("pair-b", "\"b.test\", \"*.b.test\"", [2, 3]),
    ] {
        map.push_str(&format!(
            "[[cluster.pairs]]\nname = \"{pair}\"\ndomains = [{domains}]\n"
        ));
        for i in nodes {
            map.push_str(&format!(
                "[[cluster.pairs.nodes]]\nname = \"{}\"\nlmtp = \"127.0.0.1:{}\"\nimap = \"127.0.0.1:{}\"\npop3 = \"127.0.0.1:{}\"\nhttp = \"127.0.0.1:{}\"\n",
                NAMES[i], ports[i].lmtp, ports[i].imap, ports[i].pop3, ports[i].http
            ));
        }
    }
    map
}

impl Fleet {
    /// Start the four nodes, add `users` on the first node of the pair
    /// that holds each (replication gives them to the other), and wait until every node sees every other one up and
    /// has swapped user lists with its peer.
    pub fn start<S: AsRef<str>>(users: &[S]) -> Fleet {
        Fleet::start_with(users, "")
    }

    /// [`Fleet::start`] with more `[replication]` keys (`sync_delivery`).
    pub fn start_with<S: AsRef<str>>(users: &[S], replication: &str) -> Fleet {
        let ports: Vec<Ports> = (0..4)
            .map(|_| Ports {
                lmtp: free_port(),
                imap: free_port(),
                pop3: free_port(),
                http: free_port(),
                replication: free_port(),
                socketmap: free_port(),
            })
            .collect();
        let map = cluster_map(&ports, 200);
        let secret = crate::unique_secret(SECRET);
        let nodes = (0..4)
            .map(|i| {
                let peer = i ^ 1;
                let p = ports[i];
                let extra = format!(
                    "[imap]\nlisten = [\"127.0.0.1:{}\"]\nauth_failure_delay_ms = 10\n\
                     [pop3]\nlisten = [\"127.0.0.1:{}\"]\nauth_failure_delay_ms = 10\n\
                     [http]\nlisten = [\"127.0.0.1:{}\"]\n\
                     [mta]\nsocketmap_listen = [\"127.0.0.1:{}\"]\n\
                     [replication]\nlisten = [\"127.0.0.1:{}\"]\nsecret = {secret:?}\n\
                     debounce_ms = 50\nbackoff_max_secs = 1\nheartbeat_ms = 200\nheartbeat_timeout_ms = 1000\n\
                     {replication}\n\
                     [[replication.peers]]\nname = {:?}\naddress = \"127.0.0.1:{}\"\n\
                     {map}",
                    p.imap,
                    p.pop3,
                    p.http,
                    p.socketmap,
                    p.replication,
                    NAMES[peer],
                    ports[peer].replication
                );
                TestServer::start_node_at(NAMES[i], &format!("127.0.0.1:{}", p.lmtp), &extra)
            })
            .collect();
        let fleet = Fleet { nodes, ports };
        for u in users {
            let u = u.as_ref();
            fleet.nodes[fleet.pair_nodes(u)[0]].add_users(&[u]);
        }
        fleet.settle(&[0, 1, 2, 3]);
        fleet
    }

    pub fn pair_nodes(&self, address: &str) -> [usize; 2] {
        pair_nodes(address)
    }

    /// How many messages in `user`'s INBOX on node `i` carry `message_id`
    /// (a `Message-ID:` header line with exactly that value).
    pub fn count_message(&self, i: usize, user: &str, message_id: &str) -> usize {
        let line = format!("Message-ID: {message_id}");
        let folder = self.nodes[i].folder(user, "INBOX");
        ["cur", "new"]
            .iter()
            .filter_map(|sub| std::fs::read_dir(folder.join(sub)).ok())
            .flatten()
            .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
            .filter(|m| {
                String::from_utf8_lossy(m)
                    .lines()
                    .any(|l| l.trim_end() == line)
            })
            .count()
    }

    /// Wait until the message is in `user`'s INBOX on node `i`, once.
    pub fn await_message(&self, i: usize, user: &str, message_id: &str) {
        let found = eventually(SETTLE, || {
            (self.count_message(i, user, message_id) == 1).then_some(())
        });
        assert!(
            found.is_some(),
            "{message_id} is not once in {user}'s INBOX on {} ({} copies)",
            NAMES[i],
            self.count_message(i, user, message_id)
        );
    }

    /// The socketmap address of node `i`.
    pub fn socketmap_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[i].socketmap))
    }

    /// What `transport` answers for node `i`, with the pair's other node
    /// as the standby while it is not known to be down.
    pub fn lmtp_route(&self, i: usize, standby: Option<usize>) -> String {
        match standby {
            Some(j) => format!(
                "OK lmtp:inet:127.0.0.1:{}, 127.0.0.1:{}",
                self.ports[i].lmtp, self.ports[j].lmtp
            ),
            None => format!("OK lmtp:inet:127.0.0.1:{}", self.ports[i].lmtp),
        }
    }

    /// Wait until each of `live` routes to each other live node (its health
    /// polls see it up) and knows that an unknown user is unknown (user
    /// lists swapped within each pair).
    pub fn settle(&self, live: &[usize]) {
        for &i in live {
            let at = self.socketmap_addr(i);
            for &j in live {
                let domain = if j < 2 { "a.test" } else { "b.test" };
                let probe = address_preferring(j, "probe", domain);
                let standby = Some(j ^ 1).filter(|k| live.contains(k));
                let want = self.lmtp_route(j, standby);
                eventually(SETTLE, || {
                    (socketmap(at, "transport", &probe) == want).then_some(())
                })
                .unwrap_or_else(|| {
                    panic!(
                        "{} does not route {probe} to {} within {SETTLE:?}: {}",
                        NAMES[i],
                        NAMES[j],
                        socketmap(at, "transport", &probe)
                    )
                });
                let nobody = format!("nobody@{domain}");
                eventually(SETTLE, || {
                    (socketmap(at, "mailboxes", &nobody) == "NOTFOUND ").then_some(())
                })
                .unwrap_or_else(|| {
                    panic!(
                        "{} cannot tell {nobody} is unknown within {SETTLE:?}: {}",
                        NAMES[i],
                        socketmap(at, "mailboxes", &nobody)
                    )
                });
            }
        }
    }
}

/// A user whose preferred node is each node in turn: `alice…@a.test` (s1),
/// `bob…@a.test` (s2), `carol…@b.test` (s3), and `dave…@x.b.test` (s4,
/// under the `*.b.test` wildcard).
pub fn one_user_per_node() -> Vec<String> {
    vec![
        address_preferring(0, "alice", "a.test"),
        address_preferring(1, "bob", "a.test"),
        address_preferring(2, "carol", "b.test"),
        address_preferring(3, "dave", "x.b.test"),
    ]
}

/// The indexes of the nodes of the pair holding `address`.
pub fn pair_nodes(address: &str) -> [usize; 2] {
    if address.ends_with("a.test") {
        [0, 1]
    } else {
        [2, 3]
    }
}

/// The node that should take `address`'s mail while both of its pair are
/// up: the same rule as cove's (blake3 of the lowercase address).
pub fn preferred(address: &str) -> usize {
    let bit = blake3::hash(address.to_lowercase().as_bytes()).as_bytes()[0] & 1;
    pair_nodes(address)[usize::from(bit)]
}

/// An address at `domain` whose preferred node is `node` (`name{k}@domain`).
pub fn address_preferring(node: usize, name: &str, domain: &str) -> String {
    (0..)
        .map(|k| format!("{name}{k}@{domain}"))
        .find(|a| preferred(a) == node)
        .expect("some address")
}

/// One socketmap lookup (a fresh connection): the reply's payload.
pub fn socketmap(addr: SocketAddr, map: &str, key: &str) -> String {
    let payload = format!("{map} {key}");
    let reply = exchange(addr, format!("{}:{payload},", payload.len()).as_bytes());
    let text = String::from_utf8_lossy(&reply).into_owned();
    let (len, rest) = text
        .split_once(':')
        .unwrap_or_else(|| panic!("not a netstring: {text:?}"));
    let len: usize = len.parse().expect("netstring length");
    assert_eq!(rest.len(), len + 1, "one netstring: {text:?}");
    assert!(rest.ends_with(','), "netstring end: {text:?}");
    rest[..len].to_string()
}

/// One line-protocol request as Exim's readsocket sends it (the line, then
/// its half of the connection shut): the whole answer.
pub fn readsocket(addr: SocketAddr, line: &str) -> String {
    String::from_utf8_lossy(&exchange(addr, line.as_bytes())).into_owned()
}

/// Send `request`, shut the writing half, read to the end.
fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect to the socketmap listener");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).expect("send");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read the answer");
    out
}
