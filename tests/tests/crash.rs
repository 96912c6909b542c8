//! DESIGN.md invariants 1 and 2 across `kill -9`: every delivery answered
//! 250 survives (file, blob link, index row), no UID or GUID is doubled, and
//! UIDs keep rising after the restart.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cove_tests::{Client, TestServer, assert_reply, header, mailbox_contents, message};

const USERS: [&str; 4] = ["c0@x.org", "c1@x.org", "c2@x.org", "c3@x.org"];
const CONNECTIONS: usize = 4;

/// Deliver from `CONNECTIONS` threads until `kill -9` hits the server
/// mid-stream (after 200 deliveries or a second); returns (user,
/// Message-ID, UID) of every delivery answered 250.
fn deliver_until_killed(server: &mut TestServer, round: usize) -> Vec<(String, String, u32)> {
    let addr = server.lmtp_addr();
    let acked: Arc<Mutex<Vec<(String, String, u32)>>> = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for t in 0..CONNECTIONS {
        let acked = acked.clone();
        let count = count.clone();
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut c = Client::connect(addr);
            if c.try_read_reply().is_err() || c.try_cmd("LHLO crash.test").is_err() {
                return;
            }
            // Bounded: the kill comes long before this.
            for n in 0..10_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                // Rotate over users so that connections meet in one mailbox.
                let user = USERS[(t + n) % USERS.len()];
                let id = format!("crash-{round}-{t}-{n}");
                match c.try_deliver("s@example.org", &[user], &message(&id, "x")) {
                    Ok(d) if d.results.len() == 1 && d.results[0].is("250 2.0.0") => {
                        let uid = d.results[0].saved_uid().expect("a UID in the reply");
                        acked.lock().unwrap().push((
                            user.to_string(),
                            format!("<{id}@cove.test>"),
                            uid,
                        ));
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    // Anything else: not acknowledged (the server is gone).
                    _ => break,
                }
            }
        }));
    }
    let started = Instant::now();
    while count.load(Ordering::Relaxed) < 200 && started.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(10));
    }
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("delivery thread panicked");
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        !acked.is_empty(),
        "round {round}: nothing delivered before the kill"
    );
    acked
}

#[test]
fn acknowledged_deliveries_survive_kill_9() {
    let mut server = TestServer::start("");
    server.add_users(&USERS);

    // Three crashes in a row, each restart on the data the last one left.
    let mut acked = Vec::new();
    for round in 0..3 {
        if round > 0 {
            server.restart();
        }
        acked.extend(deliver_until_killed(&mut server, round));
    }

    // The server starts again on the crashed data, and stops cleanly.
    server.restart();
    server.stop();

    let mut max_uid: HashMap<String, u32> = HashMap::new();
    {
        let store = server.open_store();
        let mut all_guids = HashSet::new();
        // (user, Message-ID, UID) of every indexed message.
        let mut found: HashSet<(String, String, u32)> = HashSet::new();
        for user in USERS {
            let (mb, msgs) = mailbox_contents(&store, user, "INBOX");
            let mut uids = HashSet::new();
            for (m, path) in &msgs {
                assert!(uids.insert(m.uid), "{user}: UID {} twice", m.uid);
                assert!(all_guids.insert(m.guid), "{user}: GUID {} twice", m.guid);
                assert!(m.uid < mb.uidnext, "{user}: UID {} >= UIDNEXT", m.uid);
                let bytes = fs::read(path)
                    .unwrap_or_else(|e| panic!("{user}: indexed file {}: {e}", path.display()));
                assert_eq!(bytes.len() as u64, m.size);
                let id = header(&bytes, "Message-ID").expect("Message-ID");
                found.insert((user.to_string(), id, m.uid));
                // The blob behind it is still there and verifies.
                store
                    .blobs()
                    .verify(&m.content_id)
                    .unwrap_or_else(|e| panic!("{user} UID {}: blob: {e}", m.uid));
            }
            let highest = msgs.iter().map(|(m, _)| m.uid).max().unwrap_or(0);
            max_uid.insert(user.to_string(), highest.max(mb.uidnext.saturating_sub(1)));
            // Nothing left unindexed in the Maildir.
            assert_eq!(
                server.maildir_files(user, "INBOX").len(),
                msgs.len(),
                "{user}: Maildir files vs index rows"
            );
        }
        // Every acknowledged message is there, under the UID it was given.
        let lost: Vec<_> = acked.iter().filter(|a| !found.contains(*a)).collect();
        assert!(
            lost.is_empty(),
            "{} of {} acknowledged deliveries lost or renumbered: {lost:?}",
            lost.len(),
            acked.len()
        );
        eprintln!(
            "{} deliveries acknowledged before the kill, {} messages found after it",
            acked.len(),
            found.len()
        );
    }

    // After the crash, new UIDs are above every earlier one.
    server.restart();
    let mut c = server.lmtp_ready();
    for user in USERS {
        let d = c.deliver(
            "s@example.org",
            &[user],
            &message(&format!("after-{user}"), "y"),
        );
        assert_reply(&d.results[0], "250 2.0.0");
        let uid = d.results[0].saved_uid().expect("a UID");
        assert!(
            uid > max_uid[user],
            "{user}: new UID {uid} not above earlier {}",
            max_uid[user]
        );
    }
}
