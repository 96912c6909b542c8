//! Pipelined FETCHes (RFC 3501 §5.5): FETCHes that only read and are
//! already complete in the server's read buffer are answered together, in
//! one trip to the store (counted by `cove_imap_fetch_total` on
//! `/metrics`), each with its own responses and tagged status, in the
//! order sent; a command that changes something (a STORE, a FETCH that
//! sets \Seen) ends the batch and is answered after the ones before it,
//! before the ones after it.

use cove_tests::{IMAP_CONFIG, TestServer, message, metric};

const USER: &str = "p@x.org";
const PASS: &str = "pw";

fn server_with(messages: usize) -> TestServer {
    let s = TestServer::start(&format!(
        "{IMAP_CONFIG}\n[http]\nlisten = [\"127.0.0.1:0\"]\n"
    ));
    s.add_user_with_password(USER, PASS);
    for i in 1..=messages {
        s.deliver_to(USER, &message(&format!("m{i}"), &format!("body {i}")));
    }
    // A first session is told they are \Recent, not the one under test.
    let mut first = s.imap_login(USER, PASS);
    first.cmd_ok("R1 SELECT INBOX");
    first.cmd_ok("R2 LOGOUT");
    s
}

fn fetch_counts(s: &TestServer) -> (u64, u64) {
    let (status, m) = s.http("GET", "/metrics");
    assert_eq!(status, 200);
    (
        metric(&m, "cove_imap_fetch_total{count=\"commands\"}"),
        metric(&m, "cove_imap_fetch_total{count=\"blocking_trips\"}"),
    )
}

/// 32 FETCH BODY.PEEK[] sent in one write: every answer is the message
/// asked for, in order, and they took far fewer trips than commands.
#[test]
fn pipelined_peeks_share_trips_and_keep_their_order() {
    let s = server_with(8);
    let mut c = s.imap_login(USER, PASS);
    c.cmd_ok("S1 SELECT INBOX");
    let (commands0, trips0) = fetch_counts(&s);
    let mut burst = String::new();
    for i in 0..32 {
        let n = i % 8 + 1;
        burst.push_str(&format!("P{i} FETCH {n} (UID BODY.PEEK[])\r\n"));
    }
    c.send_raw(burst.as_bytes());
    for i in 0..32 {
        let n = i % 8 + 1;
        let r = c.read_until_tagged(&format!("P{i}"));
        assert_eq!(r.len(), 2, "P{i}: {r:?}");
        assert!(
            r[0].starts_with(&format!("* {n} FETCH (UID {n} BODY[] {{")),
            "P{i}: {r:?}"
        );
        assert!(r[0].contains(&format!("body {n}")), "P{i}: {r:?}");
        assert_eq!(r[1], format!("P{i} OK FETCH completed"));
    }
    let (commands, trips) = fetch_counts(&s);
    assert_eq!(commands - commands0, 32);
    assert!(
        trips - trips0 <= 8,
        "32 pipelined FETCHes took {} trips to the store",
        trips - trips0
    );
    // Nothing was marked \Seen.
    let r = c.cmd_ok("S2 SEARCH SEEN");
    assert_eq!(r[0], "* SEARCH");
}

/// A STORE and a FETCH that sets \Seen in the middle of a pipeline are
/// answered in place: the FETCHes after them see their changes, the ones
/// before do not; a FETCH that fails is answered in its place too.
#[test]
fn a_change_in_the_pipeline_is_answered_in_order() {
    let s = server_with(3);
    let mut c = s.imap_login(USER, PASS);
    c.cmd_ok("S1 SELECT INBOX");
    c.send_raw(
        b"A1 FETCH 1 (FLAGS)\r\n\
          A2 FETCH 1:2 (FLAGS)\r\n\
          A3 STORE 1 +FLAGS (\\Flagged)\r\n\
          A4 FETCH 1 (FLAGS)\r\n\
          A5 FETCH 9 (FLAGS)\r\n\
          A6 FETCH 2 (FLAGS BODY[])\r\n\
          A7 FETCH 2:3 (FLAGS)\r\n",
    );
    let mut got = Vec::new();
    for tag in ["A1", "A2", "A3", "A4", "A5", "A6", "A7"] {
        got.extend(c.read_until_tagged(tag));
    }
    let fetched_2 = got
        .iter()
        .find(|l| l.starts_with("* 2 FETCH (FLAGS (\\Seen) BODY[] {"))
        .cloned()
        .unwrap_or_else(|| panic!("no BODY[] of 2 in {got:?}"));
    let expected = vec![
        "* 1 FETCH (FLAGS ())".to_string(),
        "A1 OK FETCH completed".into(),
        "* 1 FETCH (FLAGS ())".into(),
        "* 2 FETCH (FLAGS ())".into(),
        "A2 OK FETCH completed".into(),
        "* 1 FETCH (UID 1 FLAGS (\\Flagged))".into(),
        "A3 OK STORE completed".into(),
        "* 1 FETCH (FLAGS (\\Flagged))".into(),
        "A4 OK FETCH completed".into(),
        "A5 BAD Message sequence number out of range".into(),
        fetched_2,
        "A6 OK FETCH completed".into(),
        "* 2 FETCH (FLAGS (\\Seen))".into(),
        "* 3 FETCH (FLAGS ())".into(),
        "A7 OK FETCH completed".into(),
    ];
    assert_eq!(got, expected);
}
