//! A hostile client cannot stop the node or starve other users: a LIST
//! pattern built to backtrack answers at once and nothing else waits for it
//! (RFC 3501 §6.3.8), and one user's costly SEARCHes cannot hold the
//! blocking pool against another user's delivery (docs/architecture.md,
//! "Blocking work").
//!
//! These are ordering checks, not timings: the other session is answered
//! while the costly work is still running; the harness's read timeout is only
//! a guard against a hang.

use std::net::TcpStream;
use std::time::Duration;

use cove_tests::{IMAP_CONFIG, Imap, TestServer, message};

const PASS: &str = "pw";

/// `*a*a*...*b` against a long run of `a`: the backtracking matcher tries
/// every way to split the name among the stars.
fn backtracking_pattern() -> String {
    "*a".repeat(12) + "*b"
}

// RFC 3501 §6.3.8: LIST with a pathological pattern.
#[test]
fn a_pathological_list_pattern_answers_and_blocks_no_one() {
    let s = TestServer::start(IMAP_CONFIG);
    s.add_user_with_password("a@x.org", PASS);
    let mut c = s.imap_login("a@x.org", PASS);
    let long = "a".repeat(200);
    c.cmd_ok(&format!("c1 CREATE {long}"));
    // One LIST per worker thread the server may have, so that a matcher
    // running on the reactor would hold all of them.
    let mut listers: Vec<Imap<TcpStream>> = (0..4).map(|_| s.imap_login("a@x.org", PASS)).collect();
    let pattern = backtracking_pattern();
    for l in &mut listers {
        l.send(&format!("l1 LIST \"\" \"{pattern}\""));
    }
    // Another protocol's session is greeted meanwhile.
    let greeting = s.lmtp();
    drop(greeting);
    for l in &mut listers {
        let r = l.read_until_tagged("l1");
        assert_eq!(r, ["l1 OK LIST completed"]);
    }
    // And the pattern still means what RFC 3501 says.
    let r = c.cmd_ok(&format!("l2 LIST \"\" \"{}\"", "*a".repeat(12)));
    assert!(r.iter().any(|l| l.ends_with(&long)), "{r:?}");
    c.cmd_ok(&format!("l3 LSUB \"\" \"{}\"", "%a".repeat(12) + "%b"));
}

/// A message whose every line must be decoded and lowered by a body search.
fn big_message() -> String {
    let line = "The quick brown fox jumps over the lazy dog again and again.\r\n";
    message("big", &line.repeat(4096))
}

/// A user with a large mailbox: one delivery, doubled by COPY (hard links).
fn fill(s: &TestServer, user: &str, doublings: usize) {
    s.deliver_to(user, &big_message());
    let mut c = s.imap_login(user, PASS);
    c.cmd_ok("s SELECT INBOX");
    for i in 0..doublings {
        c.cmd_ok(&format!("c{i} COPY 1:* INBOX"));
    }
}

// RFC 3501 §6.4.4 SEARCH against RFC 2033 delivery: the blocking pool is
// shared per user.
#[test]
fn another_users_delivery_does_not_wait_behind_searches() {
    let per_user = 32;
    let s = TestServer::start(&format!(
        "{IMAP_CONFIG}max_connections_per_user = {}\n",
        per_user + 2
    ));
    let users = ["a@x.org", "b@x.org"];
    for u in users {
        s.add_user_with_password(u, PASS);
        fill(&s, u, 7);
    }
    s.add_user_with_password("c@x.org", PASS);
    let mut searchers: Vec<Imap<TcpStream>> = Vec::new();
    for u in users {
        for _ in 0..per_user {
            let mut c = s.imap_login(u, PASS);
            c.cmd_ok("s SELECT INBOX");
            searchers.push(c);
        }
    }
    // Every search reads and decodes every message (NOT BODY cannot be
    // narrowed by the full-text index).
    for c in &mut searchers {
        c.send("q UID SEARCH NOT BODY zzzzqqq");
    }
    // Let the server take them all up before the delivery arrives.
    std::thread::sleep(Duration::from_secs(1));
    s.deliver_to("c@x.org", &message("urgent", "hello"));
    let answered = searchers
        .iter_mut()
        .map(|c| c.read_response_within(Duration::from_millis(1)))
        .filter(Option::is_some)
        .count();
    assert_eq!(
        answered, 0,
        "the delivery was answered only after searches of other users ended"
    );
    let mut c = s.imap_login("c@x.org", PASS);
    let r = c.cmd_ok("st STATUS INBOX (MESSAGES)");
    assert_eq!(r[0], "* STATUS INBOX (MESSAGES 1)");
}
