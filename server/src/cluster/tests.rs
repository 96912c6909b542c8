//! The routing rules of [`Cluster`] over a map, with node states set by
//! hand (the health task's probes are tested end to end).

use super::map::tests::MAP;
use super::*;
use crate::config::Config;

fn cluster(text: &str) -> Arc<Cluster> {
    let c = Config::parse(text, "t").unwrap();
    Cluster::new(&c.cluster.unwrap(), &c.hostname, Arc::default()).unwrap()
}

/// A user of pair-a whose preferred node is `node` (0 or 1).
fn user_preferring(c: &Cluster, node: usize) -> Address {
    let pair = &c.map().pairs[0];
    (0..)
        .map(|i| Address::parse(&format!("u{i}@example.com")).unwrap())
        .find(|a| pair.preferred(a) == node)
        .unwrap()
}

fn lmtp(c: &Cluster, a: &Address) -> Option<String> {
    c.serving(a, Proto::Lmtp)
        .map(|(n, addr)| format!("{n} {addr}"))
}

#[test]
fn the_preferred_node_serves_until_it_is_down_or_draining() {
    let c = cluster(MAP);
    let on_02 = user_preferring(&c, 1);
    let on_01 = user_preferring(&c, 0);
    // storage-02 not polled yet: down; storage-01 is this node, up.
    assert_eq!(lmtp(&c, &on_02).as_deref(), Some("storage-01 10.0.0.1:24"));
    c.set_state("storage-02", NodeState::Up);
    assert_eq!(lmtp(&c, &on_02).as_deref(), Some("storage-02 10.0.0.2:24"));
    assert_eq!(lmtp(&c, &on_01).as_deref(), Some("storage-01 10.0.0.1:24"));
    c.set_state("storage-02", NodeState::Draining);
    assert_eq!(lmtp(&c, &on_02).as_deref(), Some("storage-01 10.0.0.1:24"));
    // This node drains: its users go to the peer.
    c.set_state("storage-02", NodeState::Up);
    c.set_draining(true);
    assert!(c.is_draining());
    assert_eq!(lmtp(&c, &on_01).as_deref(), Some("storage-02 10.0.0.2:24"));
    // Both unavailable: nobody, with the pair named.
    c.set_state("storage-02", NodeState::Down);
    assert_eq!(c.route(&on_01, Proto::Lmtp), Route::NoneUp("pair-a".into()));
    c.set_draining(false);
    // A protocol the preferred node does not serve goes to the other.
    c.set_state("storage-02", NodeState::Up);
    let imap = c.serving(&on_02, Proto::Imap).unwrap();
    assert_eq!(imap.0, "storage-01");
    // The single-node pair, and the default for other domains.
    let other = Address::parse("x@elsewhere.test").unwrap();
    assert_eq!(c.route(&other, Proto::Lmtp), Route::NoneUp("pair-b".into()));
    c.set_state("storage-03", NodeState::Up);
    assert_eq!(lmtp(&c, &other).as_deref(), Some("storage-03 10.0.0.3:24"));
    assert_eq!(c.pair_of(&other).unwrap().name, "pair-b");
    assert!(c.is_own(&on_01) && !c.is_own(&other));
}

#[test]
fn reload_moves_a_domain_at_once_and_a_bad_map_changes_nothing() {
    let c = cluster(MAP);
    c.set_state("storage-03", NodeState::Up);
    let a = Address::parse("x@example.net").unwrap();
    assert_eq!(c.pair_of(&a).unwrap().name, "pair-b");
    let moved = Config::parse(
        &MAP.replace("\"example.net\", ", "").replace(
            "domains = [\"example.com\"",
            "domains = [\"example.net\", \"example.com\"",
        ),
        "t",
    )
    .unwrap();
    c.reload(moved.cluster.as_ref().unwrap()).unwrap();
    assert_eq!(c.pair_of(&a).unwrap().name, "pair-a");
    assert!(c.is_own(&a));
    // Known states survive a reload.
    assert_eq!(c.state("storage-03"), NodeState::Up);
    let mut bad = moved.cluster.unwrap();
    bad.pairs[0].nodes[0].name = "storage-09".into();
    let e = c.reload(&bad).unwrap_err().to_string();
    assert!(e.contains("in no pair"), "{e}");
    assert_eq!(c.pair_of(&a).unwrap().name, "pair-a");
}

#[tokio::test]
async fn health_probes_read_200_503_and_silence() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn answering(status: &'static str) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut b = [0u8; 512];
                let _ = s.read(&mut b).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        addr
    }
    let t = Duration::from_millis(500);
    assert_eq!(
        health::probe(&answering("200 OK").await, t).await,
        NodeState::Up
    );
    assert_eq!(
        health::probe(&answering("503 Service Unavailable").await, t).await,
        NodeState::Draining
    );
    assert_eq!(
        health::probe(&answering("404 Not Found").await, t).await,
        NodeState::Down
    );
    // Accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    assert_eq!(
        health::probe(&addr, Duration::from_millis(100)).await,
        NodeState::Down
    );
    drop(silent);
    assert_eq!(health::probe(&addr, t).await, NodeState::Down);
}

/// A reload seen through the real socketmap listener: the domain moves to
/// the other pair at once, and a connection opened before the reload sees
/// the new map on its next request.
#[tokio::test]
async fn a_reloaded_map_moves_a_domain_on_the_socketmap() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_dir, store) = crate::test_store("storage-01");
    let c = cluster(MAP);
    c.set_state("storage-02", NodeState::Up);
    c.set_state("storage-03", NodeState::Up);
    let lookups = Arc::new(socketmap::MtaLookups {
        cluster: c.clone(),
        users: Arc::new(lookup::Users {
            store,
            replicator: None,
            delimiter: Some('+'),
        }),
        remote_timeout: Duration::from_secs(1),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let mta = Config::parse(
        &format!("{MAP}[mta]\nsocketmap_listen = [\"{addr}\"]\n"),
        "t",
    )
    .unwrap()
    .mta
    .unwrap();
    tokio::spawn(socketmap::serve(listener, lookups, mta, stopped));
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut ask = async |key: &str| {
        let payload = format!("transport {key}");
        s.write_all(format!("{}:{payload},", payload.len()).as_bytes())
            .await
            .unwrap();
        let mut buf = vec![0u8; 256];
        let n = s.read(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(
        ask("x+tag@example.net").await,
        "24:OK lmtp:inet:10.0.0.3:24,"
    );
    let moved = Config::parse(
        &MAP.replace("\"example.net\", ", "").replace(
            "domains = [\"example.com\"",
            "domains = [\"example.net\", \"example.com\"",
        ),
        "t",
    )
    .unwrap();
    c.reload(moved.cluster.as_ref().unwrap()).unwrap();
    let routed = ask("x+tag@example.net").await;
    assert!(
        routed.contains("OK lmtp:inet:10.0.0.1:24, 10.0.0.2:24")
            || routed.contains("OK lmtp:inet:10.0.0.2:24, 10.0.0.1:24"),
        "{routed}"
    );
}
