//! Routing over a cluster map (issue 12 items 3, 5, 6): four `cove serve`
//! processes as two pairs, asked through their MTA lookups (socketmap and
//! the readsocket line protocol) and LMTP; `kill -9` of a preferred node;
//! and the 450-before-550 rule for addresses a node does not know yet.

use std::net::SocketAddr;
use std::time::Duration;

use cove_tests::cluster::{
    Fleet, NAMES, SETTLE, free_port, one_user_per_node, preferred, readsocket, socketmap,
};
use cove_tests::proxy::{Partition, Proxy};
use cove_tests::{Client, TestServer, eventually, message};

fn rcpt(c: &mut Client<std::net::TcpStream>, to: &str) -> String {
    c.cmd(&format!("RCPT TO:<{to}>")).first().to_string()
}

#[test]
fn every_node_routes_both_pairs_and_fails_over_after_kill9() {
    let users = one_user_per_node();
    let mut fleet = Fleet::start(&users);

    for (i, name) in NAMES.iter().enumerate() {
        let at = fleet.socketmap_addr(i);
        for u in &users {
            let node = preferred(u);
            let route = fleet.lmtp_route(node, Some(node ^ 1));
            assert_eq!(socketmap(at, "transport", u), route, "{name} {u}");
            // Case does not move a user.
            assert_eq!(socketmap(at, "transport", &u.to_uppercase()), route);
            assert_eq!(socketmap(at, "mailboxes", u), format!("OK {u}"));
            assert_eq!(
                readsocket(at, &format!("transport {u}\n")),
                format!("lmtp 127.0.0.1 {}\n", fleet.ports[node].lmtp)
            );
            assert_eq!(readsocket(at, &format!("mailbox {u}")), "yes\n");
        }
        for (domain, held) in [
            ("a.test", true),
            ("B.TEST", true),
            ("x.b.test", true),
            ("c.test", false),
        ] {
            let want = if held { "OK cove" } else { "NOTFOUND " };
            assert_eq!(socketmap(at, "domains", domain), want, "{domain}");
            let want = if held { "yes\n" } else { "no\n" };
            assert_eq!(readsocket(at, &format!("domain {domain}\r\n")), want);
        }
        assert_eq!(socketmap(at, "mailboxes", "nobody@b.test"), "NOTFOUND ");
        assert_eq!(socketmap(at, "transport", "nobody@c.test"), "NOTFOUND ");
        assert_eq!(socketmap(at, "transport", "b.test"), "NOTFOUND ");
        assert_eq!(readsocket(at, "mailbox nobody@a.test\n"), "no\n");
        assert!(socketmap(at, "aliases", "x").starts_with("PERM unknown map"));
        assert!(readsocket(at, "frobnicate x\n").starts_with("error unknown request"));
    }

    // Each user's mail, sent where the lookup says, is stored there.
    for (k, u) in users.iter().enumerate() {
        let node = preferred(u);
        let id = format!("<routed-{k}@cluster.test>");
        let mut c = fleet.nodes[node].lmtp_ready();
        let d = c.deliver("sender@c.test", &[u], &message(&id, "routed"));
        assert!(
            d.results.first().is_some_and(|r| r.is("250")),
            "{u} on {}: {:?}",
            NAMES[node],
            d
        );
    }

    // kill -9 of alice's node: every other node sends her mail to s2.
    let alice = &users[0];
    fleet.nodes[0].kill9();
    for (i, name) in NAMES.iter().enumerate().skip(1) {
        let at = fleet.socketmap_addr(i);
        eventually(SETTLE, || {
            (socketmap(at, "transport", alice) == fleet.lmtp_route(1, None)).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "{} still routes {alice}: {}",
                name,
                socketmap(at, "transport", alice)
            )
        });
        // Her mailbox is still known, from s2.
        assert_eq!(socketmap(at, "mailboxes", alice), format!("OK {alice}"));
    }
    // Bob's node is up: his route does not move.
    assert_eq!(
        socketmap(fleet.socketmap_addr(2), "transport", &users[1]),
        fleet.lmtp_route(1, None)
    );

    // Both of pair-a gone: try later, never "no such user".
    fleet.nodes[1].kill9();
    let at = fleet.socketmap_addr(2);
    let temp = eventually(SETTLE, || {
        let t = socketmap(at, "transport", alice);
        t.starts_with("TEMP").then_some(t)
    })
    .expect("TEMP once pair-a is down");
    assert_eq!(temp, "TEMP no node of pair-a is up");
    assert!(socketmap(at, "mailboxes", alice).starts_with("TEMP"));
    assert!(readsocket(at, &format!("transport {alice}\n")).starts_with("temp no node of pair-a"));
    // pair-b is unaffected.
    assert_eq!(
        socketmap(at, "transport", &users[3]),
        fleet.lmtp_route(3, Some(2))
    );
}

#[test]
fn socketmap_limits_bad_input_and_pipelining() {
    use std::io::{Read, Write};
    let fleet = Fleet::start(&["eve@a.test"]);
    let at = fleet.socketmap_addr(0);
    // Postfix keeps one connection for many lookups, and may pipeline.
    let mut s = std::net::TcpStream::connect(at).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"14:domains a.test,14:domains c.test,")
        .unwrap();
    let want = b"7:OK cove,9:NOTFOUND ,";
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, want);
    // Over the length limit: PERM and the connection closes.
    s.write_all(b"99999:").unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&rest),
        "23:PERM netstring too long,"
    );
    let long = format!("mailbox {}@a.test\n", "x".repeat(2000));
    assert_eq!(readsocket(at, &long), "error line too long\n");
    assert_eq!(
        readsocket(at, "3:abcd,"),
        "31:PERM netstring not ended by ',',"
    );
    // Client strings with control characters are answered and logged
    // escaped.
    assert_eq!(
        socketmap(at, "mailboxes", "a\u{1b}[31m@a.test"),
        "NOTFOUND "
    );
    assert!(socketmap(at, "map\u{1b}[31m", "k").starts_with("PERM unknown map"));
    let logged = eventually(SETTLE, || {
        let logs = fleet.nodes[0].logs();
        logs.iter()
            .any(|l| l.contains("socketmap: unknown map"))
            .then_some(logs)
    })
    .expect("the unknown map is logged");
    assert!(logged.iter().all(|l| !l.contains('\u{1b}')), "{logged:?}");
}

/// Two nodes of one pair, replicating through proxies the test controls.
struct Pair {
    a: TestServer,
    b: TestServer,
    to_a: Proxy,
    to_b: Proxy,
    b_socketmap: SocketAddr,
}

fn pair() -> Pair {
    let to_a = Proxy::bind();
    let to_b = Proxy::bind();
    let lmtp = [free_port(), free_port()];
    let http = [free_port(), free_port()];
    let sm = free_port();
    let map = format!(
        "[cluster]\nhealth_interval_ms = 200\n[[cluster.pairs]]\nname = \"p\"\ndomains = [\"a.test\"]\n\
         [[cluster.pairs.nodes]]\nname = \"n-a\"\nlmtp = \"127.0.0.1:{}\"\nhttp = \"127.0.0.1:{}\"\n\
         [[cluster.pairs.nodes]]\nname = \"n-b\"\nlmtp = \"127.0.0.1:{}\"\nhttp = \"127.0.0.1:{}\"\n",
        lmtp[0], http[0], lmtp[1], http[1]
    );
    let node = |name: &str, http: u16, peer: &str, peer_addr: SocketAddr, mta: &str| {
        format!(
            "[http]\nlisten = [\"127.0.0.1:{http}\"]\n{mta}\
             [replication]\nlisten = [\"127.0.0.1:0\"]\nsecret = \"pair-test-secret-0123456789\"\n\
             debounce_ms = 50\nbackoff_max_secs = 1\nheartbeat_ms = 200\nheartbeat_timeout_ms = 1000\n\
             [[replication.peers]]\nname = {peer:?}\naddress = \"{peer_addr}\"\n{map}\n# {name}\n"
        )
    };
    let a = TestServer::start_node_at(
        "n-a",
        &format!("127.0.0.1:{}", lmtp[0]),
        &node("n-a", http[0], "n-b", to_b.addr(), ""),
    );
    let b = TestServer::start_node_at(
        "n-b",
        &format!("127.0.0.1:{}", lmtp[1]),
        &node(
            "n-b",
            http[1],
            "n-a",
            to_a.addr(),
            &format!("[mta]\nsocketmap_listen = [\"127.0.0.1:{sm}\"]\n"),
        ),
    );
    Pair {
        a,
        b,
        to_a,
        to_b,
        b_socketmap: SocketAddr::from(([127, 0, 0, 1], sm)),
    }
}

#[test]
fn an_address_unknown_before_the_user_lists_are_swapped_gets_450_then_550() {
    let p = pair();
    // The link is down (the proxies forward nowhere yet); frank is added
    // on n-a only.
    p.a.add_users(&["frank@a.test"]);
    let mut c = p.b.lmtp_ready();
    assert_eq!(c.cmd("MAIL FROM:<s@c.test>").code, 250);
    let r = rcpt(&mut c, "frank@a.test");
    assert!(
        r.starts_with("450 4.1.1 <frank@a.test> User unknown here"),
        "{r}"
    );
    assert!(rcpt(&mut c, "nobody@a.test").starts_with("450 4.1.1"));
    assert!(
        socketmap(p.b_socketmap, "mailboxes", "frank@a.test")
            .starts_with("TEMP user lists not yet exchanged")
    );
    drop(c);

    // The link comes up: n-b learns frank, and that nobody is nobody.
    p.to_b.forward_to(p.b.addr_of("replication"));
    p.to_a.forward_to(p.a.addr_of("replication"));
    let answers = eventually(SETTLE, || {
        let mut c = p.b.lmtp_ready();
        c.cmd("MAIL FROM:<s@c.test>");
        let known = rcpt(&mut c, "frank@a.test");
        let unknown = rcpt(&mut c, "nobody@a.test");
        (known.starts_with("250") && !unknown.starts_with("450")).then_some(unknown)
    })
    .expect("n-b learns frank, and that nobody is nobody, once the link is up");
    assert!(
        answers.starts_with("550 5.1.1 <nobody@a.test> User unknown"),
        "{answers}"
    );
    assert_eq!(
        socketmap(p.b_socketmap, "mailboxes", "frank@a.test"),
        "OK frank@a.test"
    );
    assert_eq!(
        socketmap(p.b_socketmap, "mailboxes", "nobody@a.test"),
        "NOTFOUND "
    );

    // The link drops: n-b cannot know again until it is back.
    p.to_a.cut(Partition::Refuse);
    p.to_b.cut(Partition::Refuse);
    eventually(SETTLE, || {
        let mut c = p.b.lmtp_ready();
        c.cmd("MAIL FROM:<s@c.test>");
        rcpt(&mut c, "nobody@a.test")
            .starts_with("450 4.1.1")
            .then_some(())
    })
    .expect("450 again while the link is down");
    // A user n-b knows is still delivered.
    let mut c = p.b.lmtp_ready();
    let d = c.deliver("s@c.test", &["frank@a.test"], &message("<f@t>", "hi"));
    assert!(d.results.first().is_some_and(|r| r.is("250")), "{:?}", d);
}

// The map is the same file on every node and SIGHUP re-reads it: moving a
// domain to another pair in s1's file moves that domain's routing on s1
// (its transport answer names a node of the new pair), while a node that
// has not reloaded yet keeps the old map.
#[test]
fn a_sighup_map_change_moves_a_domain() {
    let carol = cove_tests::cluster::address_preferring(2, "carol", "b.test");
    let fleet = Fleet::start(&[&carol]);
    let at = |i| fleet.socketmap_addr(i);
    let pair_b = fleet.lmtp_route(2, Some(3));
    assert_eq!(socketmap(at(0), "transport", &carol), pair_b);

    let path = fleet.nodes[0].config_path().to_path_buf();
    let text = std::fs::read_to_string(&path).unwrap();
    let moved = text
        .replace(
            "domains = [\"a.test\"]",
            "domains = [\"a.test\", \"b.test\"]",
        )
        .replace(
            "domains = [\"b.test\", \"*.b.test\"]",
            "domains = [\"*.b.test\"]",
        );
    assert_ne!(moved, text, "the map names the domains as expected");
    std::fs::write(&path, moved).unwrap();
    fleet.nodes[0].sighup();

    let pair_a = [fleet.ports[0].lmtp, fleet.ports[1].lmtp];
    let routed = eventually(Duration::from_secs(20), || {
        let answer = socketmap(at(0), "transport", &carol);
        pair_a
            .iter()
            .any(|p| answer.starts_with(&format!("OK lmtp:inet:127.0.0.1:{p}")))
            .then_some(answer)
    });
    assert!(
        routed.is_some(),
        "s1 routes b.test to pair-a after SIGHUP: {}",
        socketmap(at(0), "transport", &carol)
    );
    assert_eq!(
        socketmap(at(2), "transport", &carol),
        pair_b,
        "s3 has not reloaded"
    );
    assert!(
        fleet.nodes[0].logged("SIGHUP: ") && fleet.nodes[0].logged("cluster map reloaded"),
        "{}",
        fleet.nodes[0].logs().join("\n")
    );
}

/// nginx asks any node's auth_http; for a user of the other pair that node
/// asks the pair's node that serves the user. When that node has just died
/// and this node's health checks have not noticed yet, the login is asked
/// of the pair's other node instead of refused "Temporary server problem"
/// (the nginx failover run hit it once, POP3 right after kill -9).
#[test]
fn auth_http_asks_the_users_other_node_when_the_chosen_one_died_unnoticed() {
    const PASS: &str = "carol-pass";
    let carol = cove_tests::cluster::address_preferring(2, "carol", "b.test");
    let mut fleet = Fleet::start(&[] as &[&str]);
    fleet.nodes[2].add_user_with_password(&carol, PASS);
    let login = [
        ("Auth-Method", "plain"),
        ("Auth-User", carol.as_str()),
        ("Auth-Pass", PASS),
        ("Auth-Protocol", "imap"),
        ("Auth-Login-Attempt", "1"),
        ("Client-IP", "192.0.2.9"),
    ];
    let http = |i: usize| SocketAddr::from(([127, 0, 0, 1], fleet.ports[i].http));
    let status = |answer: &[(String, String)]| {
        answer
            .iter()
            .find(|(n, _)| n == "Auth-Status")
            .map(|(_, v)| v.clone())
    };
    // s4 has her (replicated from s3) and s1 forwards to s3.
    eventually(SETTLE, || {
        let (code, a) = cove_tests::auth_http(http(3), &login);
        (code == 200 && status(&a).as_deref() == Some("OK")).then_some(())
    })
    .expect("carol's record reaches s4");
    let (_, a) = cove_tests::auth_http(http(0), &login);
    assert_eq!(status(&a).as_deref(), Some("OK"), "{a:?}");

    // s1 and s4 stop checking their peers (the next round in ten
    // minutes): s3 stays "up" in what they know.
    for i in [0, 3] {
        let path = fleet.nodes[i].config_path().to_path_buf();
        let text = std::fs::read_to_string(&path).unwrap();
        let quiet = text.replace("health_interval_ms = 200", "health_interval_ms = 600000");
        assert_ne!(quiet, text);
        std::fs::write(&path, quiet).unwrap();
        fleet.nodes[i].sighup();
        eventually(SETTLE, || {
            fleet.nodes[i].logged("cluster map reloaded").then_some(())
        })
        .expect("the node reloads");
    }
    // The rounds that had started before the reload are over.
    std::thread::sleep(Duration::from_secs(1));
    fleet.nodes[2].kill9();

    let (code, a) = cove_tests::auth_http(http(0), &login);
    assert_eq!(code, 200);
    assert_eq!(status(&a).as_deref(), Some("OK"), "{a:?}");
    let port = a
        .iter()
        .find(|(n, _)| n == "Auth-Port")
        .map(|(_, v)| v.clone());
    assert_eq!(
        port,
        Some(fleet.ports[3].imap.to_string()),
        "s4's IMAP: {a:?}"
    );
    assert!(fleet.nodes[0].logged("asking its pair's other node"));
}
