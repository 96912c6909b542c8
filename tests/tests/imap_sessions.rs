//! What one IMAP session sees of another's changes (RFC 3501 §5.2, §5.5,
//! §7.4.1; RFC 2177 IDLE), who is told a message is \Recent (§2.3.2), and
//! the per-user connection limit. Two (or three) connections to one server.
//!
//! Transcripts: each client line and the exact server lines. Waits for
//! announcements that arrive on their own are bounded (5 s).

use std::net::TcpStream;
use std::time::Duration;

use cove_tests::{IMAP_CONFIG, Imap, TestServer, assert_lines, message};

const USER: &str = "a@x.org";
const PASS: &str = "pw";
const WAIT: Duration = Duration::from_secs(5);

fn server(extra: &str) -> TestServer {
    let s = TestServer::start(&format!("{IMAP_CONFIG}{extra}"));
    s.add_user_with_password(USER, PASS);
    s
}

#[track_caller]
fn select(s: &TestServer, tag: &str, exists: usize, recent: usize) -> Imap<TcpStream> {
    let mut c = s.imap_login(USER, PASS);
    let r = c.cmd_ok(&format!("{tag} SELECT INBOX"));
    assert_eq!(r[2], format!("* {exists} EXISTS"), "{r:?}");
    assert_eq!(r[3], format!("* {recent} RECENT"), "{r:?}");
    c
}

/// The next response within [`WAIT`], which must come.
#[track_caller]
fn next_within(c: &mut Imap<TcpStream>) -> String {
    c.read_response_within(WAIT)
        .unwrap_or_else(|| panic!("nothing announced within {WAIT:?}"))
}

// RFC 2177 IDLE: "+" then, while idling, new mail is announced at once
// (`* n EXISTS`, RFC 3501 §7.3.1, with RECENT §7.3.2); DONE ends IDLE
// with the tagged OK. Mail that came while not idling is announced at the
// next NOOP (§6.1.2).
#[test]
fn idle_announces_a_delivery() {
    let s = server("");
    let mut a = select(&s, "a0", 0, 0);
    a.send("a1 IDLE");
    assert_lines(&[a.read_response()], &["+ idling"]);
    assert_eq!(
        a.read_response_within(Duration::from_millis(300)),
        None,
        "nothing has happened yet"
    );
    s.deliver_to(USER, &message("one", "first"));
    assert_lines(
        &[next_within(&mut a), next_within(&mut a)],
        &["* 1 EXISTS", "* 1 RECENT"],
    );
    a.send("DONE");
    assert_lines(&[a.read_response()], &["a1 OK IDLE terminated"]);

    s.deliver_to(USER, &message("two", "second"));
    assert_lines(
        &a.cmd("a2 NOOP"),
        &["* 2 EXISTS", "* 2 RECENT", "a2 OK NOOP completed"],
    );
    assert_lines(&a.cmd("a3 NOOP"), &["a3 OK NOOP completed"]);
    assert_lines(
        &a.cmd("a4 FETCH 2 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])"),
        &[
            "* 2 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {21}\r\nSubject: test two\r\n\r\n)",
            "a4 OK FETCH completed",
        ],
    );
}

// RFC 3501 §7.4.1, §5.2: a flag change made by one session is announced
// to another as an unsolicited FETCH with FLAGS at its next command (here
// NOOP) or at once while it idles; the session that made it is not told
// again.
#[test]
fn flag_changes_are_announced_to_the_other_session() {
    let s = server("");
    s.deliver_to(USER, &message("one", "first"));
    let mut a = select(&s, "a0", 1, 1);
    let mut b = select(&s, "b0", 1, 0);
    assert_lines(
        &a.cmd("a1 STORE 1 +FLAGS (\\Flagged)"),
        &[
            "* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent))",
            "a1 OK STORE completed",
        ],
    );
    assert_lines(&a.cmd("a2 NOOP"), &["a2 OK NOOP completed"]);
    assert_lines(
        &b.cmd("b1 NOOP"),
        &[
            "* 1 FETCH (UID 1 FLAGS (\\Flagged))",
            "b1 OK NOOP completed",
        ],
    );
    assert_lines(&b.cmd("b2 NOOP"), &["b2 OK NOOP completed"]);

    b.send("b3 IDLE");
    assert_lines(&[b.read_response()], &["+ idling"]);
    assert_lines(
        &a.cmd("a3 STORE 1 -FLAGS.SILENT (\\Flagged)"),
        &["a3 OK STORE completed"],
    );
    assert_lines(&[next_within(&mut b)], &["* 1 FETCH (UID 1 FLAGS ())"]);
    b.send("DONE");
    assert_lines(&[b.read_response()], &["b3 OK IDLE terminated"]);
    assert_lines(&a.cmd("a4 NOOP"), &["a4 OK NOOP completed"]);
}

// RFC 3501 §7.4.1: "An EXPUNGE response MUST NOT be sent when no command
// is in progress, nor while responding to a FETCH, STORE, or SEARCH
// command" — message numbers stay as they were during those — and it is
// sent at the next command that allows it (NOOP, §6.1.2).
#[test]
fn expunge_by_another_session_waits_for_noop() {
    let s = server("");
    for id in ["one", "two", "three"] {
        s.deliver_to(USER, &message(id, id));
    }
    let mut a = select(&s, "a0", 3, 3);
    let mut b = select(&s, "b0", 3, 0);
    a.cmd_ok("a1 STORE 2 +FLAGS.SILENT (\\Deleted)");
    assert_lines(
        &a.cmd("a2 EXPUNGE"),
        &["* 2 EXPUNGE", "a2 OK EXPUNGE completed"],
    );

    assert_lines(
        &b.cmd("b1 FETCH 1:3 UID"),
        &[
            "* 1 FETCH (UID 1)",
            "* 2 FETCH (UID 2)",
            "* 3 FETCH (UID 3)",
            "b1 OK FETCH completed",
        ],
    );
    assert_lines(
        &b.cmd("b2 STORE 3 +FLAGS (\\Seen)"),
        &["* 3 FETCH (UID 3 FLAGS (\\Seen))", "b2 OK STORE completed"],
    );
    assert_lines(
        &b.cmd("b3 SEARCH SEEN"),
        &["* SEARCH 3", "b3 OK SEARCH completed"],
    );
    assert_lines(
        &b.cmd("b4 FETCH 3 (UID FLAGS)"),
        &["* 3 FETCH (UID 3 FLAGS (\\Seen))", "b4 OK FETCH completed"],
    );
    assert_lines(&b.cmd("b5 NOOP"), &["* 2 EXPUNGE", "b5 OK NOOP completed"]);
    assert_lines(
        &b.cmd("b6 FETCH 1:* UID"),
        &[
            "* 1 FETCH (UID 1)",
            "* 2 FETCH (UID 3)",
            "b6 OK FETCH completed",
        ],
    );
    // A sees B's flag change; its own expunge is not announced twice.
    assert_lines(
        &a.cmd("a3 NOOP"),
        &[
            "* 2 FETCH (UID 3 FLAGS (\\Seen \\Recent))",
            "a3 OK NOOP completed",
        ],
    );
}

// RFC 2177 with RFC 3501 §7.4.1: while B idles, A's EXPUNGE is announced
// to B at once.
#[test]
fn idle_announces_an_expunge() {
    let s = server("");
    for id in ["one", "two"] {
        s.deliver_to(USER, &message(id, id));
    }
    let mut a = select(&s, "a0", 2, 2);
    let mut b = select(&s, "b0", 2, 0);
    b.send("b1 IDLE");
    assert_lines(&[b.read_response()], &["+ idling"]);
    a.cmd_ok("a1 STORE 1 +FLAGS.SILENT (\\Deleted)");
    assert_lines(
        &[next_within(&mut b)],
        &["* 1 FETCH (UID 1 FLAGS (\\Deleted))"],
    );
    a.cmd_ok("a2 EXPUNGE");
    assert_lines(&[next_within(&mut b)], &["* 1 EXPUNGE"]);
    b.send("DONE");
    assert_lines(&[b.read_response()], &["b1 OK IDLE terminated"]);
    assert_lines(
        &b.cmd("b2 FETCH 1:* UID"),
        &["* 1 FETCH (UID 2)", "b2 OK FETCH completed"],
    );
}

// RFC 3501 §2.3.2 \Recent: "This session is the first session to have
// been notified about this message; if the session is read-write,
// subsequent sessions will not see \Recent set for this message." The
// first SELECT gets the message as recent, a later one does not; new mail
// goes to whichever session is told first.
#[test]
fn recent_is_given_to_exactly_one_session() {
    let s = server("");
    s.deliver_to(USER, &message("one", "first"));
    let mut a = select(&s, "a0", 1, 1);
    let mut b = select(&s, "b0", 1, 0);
    assert_lines(
        &a.cmd("a1 FETCH 1 FLAGS"),
        &["* 1 FETCH (FLAGS (\\Recent))", "a1 OK FETCH completed"],
    );
    assert_lines(
        &b.cmd("b1 FETCH 1 FLAGS"),
        &["* 1 FETCH (FLAGS ())", "b1 OK FETCH completed"],
    );
    assert_lines(
        &a.cmd("a2 SEARCH RECENT"),
        &["* SEARCH 1", "a2 OK SEARCH completed"],
    );
    assert_lines(
        &b.cmd("b2 SEARCH RECENT"),
        &["* SEARCH", "b2 OK SEARCH completed"],
    );

    s.deliver_to(USER, &message("two", "second"));
    assert_lines(
        &b.cmd("b3 NOOP"),
        &["* 2 EXISTS", "* 1 RECENT", "b3 OK NOOP completed"],
    );
    assert_lines(
        &a.cmd("a3 NOOP"),
        &["* 2 EXISTS", "* 1 RECENT", "a3 OK NOOP completed"],
    );
    assert_lines(
        &a.cmd("a4 SEARCH RECENT"),
        &["* SEARCH 1", "a4 OK SEARCH completed"],
    );
    assert_lines(
        &b.cmd("b4 SEARCH RECENT"),
        &["* SEARCH 2", "b4 OK SEARCH completed"],
    );
    // A third session sees none.
    let mut c = select(&s, "c0", 2, 0);
    assert_lines(
        &c.cmd("c1 SEARCH RECENT"),
        &["* SEARCH", "c1 OK SEARCH completed"],
    );
}

// Invariant 4 of DESIGN.md (limits are enforced): with
// `max_connections_per_user = 2` a third login of the same user is NO
// [LIMIT] (RFC 5530) and leaves that connection not authenticated; other
// users are not affected; a LOGOUT frees the place.
#[test]
fn connections_per_user_are_limited() {
    let s = server("max_connections_per_user = 2\n");
    s.add_user_with_password("b@x.org", "pw2");
    let mut one = s.imap_login(USER, PASS);
    let _two = s.imap_login(USER, PASS);
    let mut three = s.imap();
    assert_lines(
        &three.cmd(&format!("t1 LOGIN {USER} {PASS}")),
        &["t1 NO [LIMIT] Too many connections for this user"],
    );
    assert_lines(&three.cmd("t2 SELECT INBOX"), &["t2 BAD Log in first"]);
    let _other = s.imap_login("b@x.org", "pw2");
    assert_lines(
        &one.cmd("o1 LOGOUT"),
        &["* BYE Logging out", "o1 OK LOGOUT completed"],
    );
    assert!(one.closed());
    three.login(USER, PASS);
    three.cmd_ok("t3 SELECT INBOX");
}

// RFC 3501 §6.3.5: renaming INBOX moves its messages out; a session that
// has INBOX selected sees them go as EXPUNGEs (§7.4.1) at its next NOOP,
// and INBOX stays selectable and receives new mail.
#[test]
fn rename_inbox_is_seen_as_expunges_by_a_session_on_inbox() {
    let s = server("");
    for id in ["one", "two"] {
        s.deliver_to(USER, &message(id, id));
    }
    let mut a = select(&s, "a0", 2, 2);
    let mut b = s.imap_login(USER, PASS);
    assert_lines(&b.cmd("b1 RENAME INBOX Old"), &["b1 OK RENAME completed"]);
    assert_lines(
        &a.cmd("a1 NOOP"),
        &["* 1 EXPUNGE", "* 1 EXPUNGE", "a1 OK NOOP completed"],
    );
    s.deliver_to(USER, &message("three", "three"));
    assert_lines(
        &a.cmd("a2 NOOP"),
        &["* 1 EXISTS", "* 1 RECENT", "a2 OK NOOP completed"],
    );
    assert_lines(
        &a.cmd("a3 FETCH 1 (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])"),
        &[
            "* 1 FETCH (UID 3 BODY[HEADER.FIELDS (SUBJECT)] {23}\r\nSubject: test three\r\n\r\n)",
            "a3 OK FETCH completed",
        ],
    );
}

// RFC 3501 §2.3.2: once a read-write session has been told a message is
// \Recent, "subsequent sessions will not see \Recent set for this message"
// — also sessions after a server restart.
#[test]
fn recent_is_not_given_again_after_a_restart() {
    let mut s = server("");
    s.deliver_to(USER, &message("one", "first"));
    let mut a = select(&s, "a0", 1, 1);
    assert_lines(
        &a.cmd("a1 LOGOUT"),
        &["* BYE Logging out", "a1 OK LOGOUT completed"],
    );
    s.restart();
    let mut b = select(&s, "b0", 1, 0);
    assert_lines(
        &b.cmd("b1 FETCH 1 FLAGS"),
        &["* 1 FETCH (FLAGS ())", "b1 OK FETCH completed"],
    );
}
