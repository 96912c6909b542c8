//! The replication port against connections that never authenticate
//! (issue 11): on the real `cove serve`, whose descriptors are limited to
//! 256 (`prlimit`), a flood of idle connections to the replication port
//! must not stop IMAP from greeting. Before the fix, 1,100 such
//! connections used up the descriptors and IMAP stopped greeting.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use cove_tests::{CLI_TIMEOUT, TestServer, eventually, run_bounded, text};

const SECRET: &str = "replication-limits-test-secret-0123";
/// Connections the flood keeps open: well past the process's 256
/// descriptors.
const FLOOD: usize = 600;

/// Keep `FLOOD` connections open to `addr` until `stop`: each one the node
/// closes is opened again. `opened` counts them.
fn flood(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut open: Vec<TcpStream> = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            open.retain(|c| {
                let mut b = [0u8; 1];
                // Still open while there is nothing to read (the node
                // never speaks first); closed by the node: 0 or an error.
                match (&*c).read(&mut b) {
                    Ok(n) => n > 0,
                    Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                }
            });
            while open.len() < FLOOD {
                match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                    Ok(c) => {
                        c.set_nonblocking(true).expect("nonblocking");
                        open.push(c);
                        opened.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => break,
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

#[test]
fn idle_connections_to_the_replication_port_do_not_stop_imap() {
    let node = TestServer::start_node(
        "node-a",
        &format!(
            "[imap]\nlisten = [\"127.0.0.1:0\"]\n\
             [replication]\nlisten = [\"127.0.0.1:0\"]\nsecret = {SECRET:?}\n\
             [[replication.peers]]\nname = \"node-b\"\naddress = \"127.0.0.1:9\"\n"
        ),
    );
    let imap = node.addr_of("imap");
    let replication = node.addr_of("replication");
    let mut limit = Command::new("prlimit");
    limit.args(["--pid", &node.pid().to_string(), "--nofile=256:256"]);
    let out = run_bounded(limit, None, CLI_TIMEOUT);
    assert!(out.status.success(), "prlimit: {}", text(&out.stderr));

    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    let flooder = flood(replication, stop.clone(), opened.clone());
    // Once the flood is past the node's descriptors...
    let flooded = eventually(Duration::from_secs(20), || {
        (opened.load(Ordering::SeqCst) >= 300).then_some(())
    });
    let client = TcpStream::connect(imap).expect("connect to IMAP");
    // ...IMAP greets. (Without a bound on the replication port, no
    // descriptor frees up before the first idle connections reach the
    // node's 10 s handshake timeout; the wait stays below that.)
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut greeting = String::new();
    let read = BufReader::new(&client).read_line(&mut greeting);
    stop.store(true, Ordering::SeqCst);
    flooder.join().expect("flood thread");
    let opened = opened.load(Ordering::SeqCst);
    assert!(flooded.is_some(), "the flood opened {opened} connections");
    assert!(
        read.is_ok() && greeting.starts_with("* OK"),
        "IMAP greets during the flood ({opened} connections opened): {read:?} {greeting:?}\n{}",
        node.logs().join("\n")
    );
    assert!(
        node.logged("too many replication connections in the handshake"),
        "the refusals are logged:\n{}",
        node.logs().join("\n")
    );
}
