//! An account whose sessions sit in IDLE gives its index connection back
//! after `[server] index_idle_close_secs` (issue 15: the SQLite connection
//! is most of what an open account costs in memory), and the next use
//! opens it again: the session in IDLE is told of new mail as before, and
//! its next commands read the index as before.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use cove_tests::{IMAP_CONFIG, TestServer, assert_lines, eventually, message};

const USER: &str = "a@x.org";
const PASS: &str = "pw";
const WAIT: Duration = Duration::from_secs(5);

/// Whether the server process has the user's index.sqlite open.
fn index_open(s: &TestServer, email: &str) -> bool {
    let index = fs::canonicalize(s.home(email).join("index.sqlite")).expect("index.sqlite");
    fs::read_dir(format!("/proc/{}/fd", s.pid()))
        .expect("the server's descriptors")
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .any(|p: PathBuf| p == index)
}

#[test]
fn an_idle_account_closes_its_index_and_opens_it_again_for_new_mail() {
    let s = TestServer::start(&format!(
        "{IMAP_CONFIG}\n[server]\nindex_idle_close_secs = 1\n"
    ));
    s.add_user_with_password(USER, PASS);
    s.deliver_to(USER, &message("one", "first"));
    let mut c = s.imap_login(USER, PASS);
    let r = c.cmd_ok("a0 SELECT INBOX");
    assert!(r.iter().any(|l| l == "* 1 EXISTS"), "{r:?}");
    c.send("a1 IDLE");
    assert_lines(&[c.read_response()], &["+ idling"]);
    assert!(
        eventually(Duration::from_secs(20), || (!index_open(&s, USER))
            .then_some(()))
        .is_some(),
        "the index of an account idle for over a second is still open"
    );
    s.deliver_to(USER, &message("two", "second"));
    let announced = [
        c.read_response_within(WAIT).expect("EXISTS within 5 s"),
        c.read_response_within(WAIT).expect("RECENT within 5 s"),
    ];
    // Both are \Recent to this session (the first one since SELECT).
    assert_lines(&announced, &["* 2 EXISTS", "* 2 RECENT"]);
    c.send("DONE");
    assert_lines(&[c.read_response()], &["a1 OK IDLE terminated"]);
    let r = c.cmd_ok("a2 UID FETCH 1:* (UID)");
    assert_eq!(r.len(), 3, "two messages and the tagged OK: {r:?}");
    // Closed again once unused, opened again by the session's command.
    assert!(
        eventually(Duration::from_secs(20), || (!index_open(&s, USER))
            .then_some(()))
        .is_some(),
        "the index was not closed a second time"
    );
    let r = c.cmd_ok("a3 STATUS INBOX (MESSAGES)");
    assert_eq!(r[0], "* STATUS INBOX (MESSAGES 2)", "{r:?}");
}

#[test]
fn with_the_setting_at_zero_an_idle_account_keeps_its_index_open() {
    let s = TestServer::start(&format!(
        "{IMAP_CONFIG}\n[server]\nindex_idle_close_secs = 0\n"
    ));
    s.add_user_with_password(USER, PASS);
    let mut c = s.imap_login(USER, PASS);
    c.cmd_ok("a0 SELECT INBOX");
    c.send("a1 IDLE");
    assert_lines(&[c.read_response()], &["+ idling"]);
    // Several housekeeping ticks (one a second) pass.
    std::thread::sleep(Duration::from_secs(3));
    assert!(index_open(&s, USER));
    c.send("DONE");
    assert_lines(&[c.read_response()], &["a1 OK IDLE terminated"]);
}
