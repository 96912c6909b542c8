//! RFC 7162 CONDSTORE and QRESYNC against the real server: HIGHESTMODSEQ on
//! SELECT/EXAMINE/STATUS, MODSEQ in FETCH, CHANGEDSINCE, UNCHANGEDSINCE with
//! [MODIFIED], SEARCH MODSEQ, ENABLE, SELECT with the QRESYNC parameter,
//! VANISHED (EARLIER) and VANISHED instead of EXPUNGE, [CLOSED].
//!
//! Transcripts: each client line and the exact server lines. Modification
//! sequences are this server's own numbers, so a test reads them from the
//! responses and states the rest relative to them, as the RFC's examples do
//! with theirs.

use std::net::TcpStream;

use cove_tests::{IMAP_CONFIG, Imap, TestServer, assert_lines, code_value};

const USER: &str = "a@x.org";
const PASS: &str = "pw";

fn message(n: usize) -> String {
    format!("From: a@example.org\r\nSubject: message {n}\r\n\r\nbody {n}\r\n")
}

/// A server whose user has `n` messages in INBOX (UIDs 1..=n), no longer
/// \Recent for later sessions.
fn server_with(n: usize) -> TestServer {
    let s = TestServer::start(IMAP_CONFIG);
    s.add_user_with_password(USER, PASS);
    let mut c = s.imap_login(USER, PASS);
    for i in 1..=n {
        c.append(&format!("s{i}"), "INBOX", "", message(i).as_bytes());
    }
    c.cmd_ok("s0 SELECT INBOX");
    c.cmd_ok("s9 LOGOUT");
    s
}

/// The number in `[HIGHESTMODSEQ n]` among `lines`.
#[track_caller]
fn highest_modseq(lines: &[String]) -> u64 {
    lines
        .iter()
        .find_map(|l| code_value(l, "HIGHESTMODSEQ"))
        .unwrap_or_else(|| panic!("no HIGHESTMODSEQ in {lines:?}"))
        .parse()
        .expect("a number")
}

/// The UIDVALIDITY a SELECT reported.
#[track_caller]
fn uidvalidity(lines: &[String]) -> String {
    lines
        .iter()
        .find_map(|l| code_value(l, "UIDVALIDITY"))
        .unwrap_or_else(|| panic!("no UIDVALIDITY in {lines:?}"))
}

/// The MODSEQ of each message, by a FETCH.
#[track_caller]
fn modseqs(c: &mut Imap<TcpStream>) -> Vec<u64> {
    let r = c.cmd_ok("m FETCH 1:* (MODSEQ)");
    r.iter()
        .filter(|l| l.starts_with("* ") && l.contains(" FETCH "))
        .map(|l| {
            let start = l.find("MODSEQ (").expect("MODSEQ") + 8;
            l[start..].trim_end_matches("))").parse().expect("a number")
        })
        .collect()
}

// The defect: `SELECT INBOX (CONDSTORE)` said OK with no HIGHESTMODSEQ
// (RFC 7162 §3.1.8: the CONDSTORE parameter enables CONDSTORE, and SELECT
// then reports HIGHESTMODSEQ, §3.1.2.1). A plain SELECT before CONDSTORE
// is enabled does not.
#[test]
fn select_condstore_reports_highestmodseq() {
    let s = server_with(2);
    let mut c = s.imap_login(USER, PASS);
    let plain = c.cmd_ok("a1 SELECT INBOX");
    assert!(
        !plain.iter().any(|l| l.contains("HIGHESTMODSEQ")),
        "{plain:?}"
    );
    let r = c.cmd_ok("a2 SELECT INBOX (CONDSTORE)");
    assert_lines(
        &r,
        &[
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
            "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted",
            "* 2 EXISTS",
            "* 0 RECENT",
            "* OK [UNSEEN 1] First unseen",
            "* OK [UIDVALIDITY {num}] UIDs valid",
            "* OK [UIDNEXT 3] Predicted next UID",
            "* OK [MAILBOXID (F{any})] Ok",
            "* OK [HIGHESTMODSEQ {num}] Highest",
            "a2 OK [READ-WRITE] SELECT completed",
        ],
    );
    let highest = highest_modseq(&r);
    let each = modseqs(&mut c);
    assert_eq!(Some(highest), each.iter().copied().max(), "{each:?}");
    // EXAMINE too, now that CONDSTORE is on; and STATUS (§3.1.6).
    let e = c.cmd_ok("a3 EXAMINE INBOX");
    assert_eq!(highest_modseq(&e), highest);
    assert_lines(
        &c.cmd("a4 STATUS INBOX (HIGHESTMODSEQ MESSAGES)"),
        &[
            &format!("* STATUS INBOX (HIGHESTMODSEQ {highest} MESSAGES 2)"),
            "a4 OK STATUS completed",
        ],
    );
}

// The defect: `FETCH 1:* (FLAGS) (CHANGEDSINCE m)` returned every message
// (RFC 7162 §3.1.4.1: only those whose modseq is above m, with MODSEQ).
#[test]
fn fetch_changedsince_returns_only_what_changed() {
    let s = server_with(3);
    let mut c = s.imap_login(USER, PASS);
    let r = c.cmd_ok("b1 SELECT INBOX (CONDSTORE)");
    let before = highest_modseq(&r);
    assert_lines(
        &c.cmd(&format!("b2 FETCH 1:* (FLAGS) (CHANGEDSINCE {before})")),
        &["b2 OK FETCH completed"],
    );
    let stored = c.cmd_ok("b3 STORE 2 +FLAGS (\\Flagged)");
    let after = modseqs(&mut c)[1];
    assert!(after > before, "{after} > {before}");
    assert_eq!(
        stored[0],
        format!("* 2 FETCH (UID 2 FLAGS (\\Flagged) MODSEQ ({after}))")
    );
    assert_lines(
        &c.cmd(&format!("b4 FETCH 1:* (FLAGS) (CHANGEDSINCE {before})")),
        &[
            &format!("* 2 FETCH (FLAGS (\\Flagged) MODSEQ ({after}))"),
            "b4 OK FETCH completed",
        ],
    );
    assert_lines(
        &c.cmd(&format!("b5 UID FETCH 1:* (FLAGS) (CHANGEDSINCE {before})")),
        &[
            &format!("* 2 FETCH (UID 2 FLAGS (\\Flagged) MODSEQ ({after}))"),
            "b5 OK FETCH completed",
        ],
    );
}

// A STORE on many messages is one change-log row (index schema 5) but
// still gives each changed message a modseq of its own, a run in UID
// order: CHANGEDSINCE from before it finds exactly the changed messages
// (not the one that had \Seen already), each with its modseq, and from
// the middle of the run only the rest.
#[test]
fn changedsince_after_a_store_on_many_finds_exactly_the_changed() {
    let s = server_with(6);
    let mut other = s.imap_login(USER, PASS);
    other.cmd_ok("o1 SELECT INBOX");
    other.cmd_ok("o2 STORE 2 +FLAGS (\\Seen)");
    other.cmd_ok("o3 UID STORE 1:* +FLAGS.SILENT (\\Seen)");
    other.cmd_ok("o4 LOGOUT");
    // A session of its own after the STORE: nothing else comes unasked.
    let mut c = s.imap_login(USER, PASS);
    let now = highest_modseq(&c.cmd_ok("c1 SELECT INBOX (CONDSTORE)"));
    let before = now - 5;
    let want = |tag: &str, from: usize| -> Vec<String> {
        [1, 3, 4, 5, 6]
            .iter()
            .enumerate()
            .skip(from)
            .map(|(i, n)| {
                format!(
                    "* {n} FETCH (UID {n} FLAGS (\\Seen) MODSEQ ({}))",
                    before + 1 + i as u64
                )
            })
            .chain([format!("{tag} OK FETCH completed")])
            .collect()
    };
    assert_eq!(
        c.cmd(&format!("c2 UID FETCH 1:* (FLAGS) (CHANGEDSINCE {before})")),
        want("c2", 0)
    );
    assert_eq!(
        c.cmd(&format!(
            "c3 UID FETCH 1:* (FLAGS) (CHANGEDSINCE {})",
            before + 2
        )),
        want("c3", 2)
    );
}

// The defect: `UID STORE 1 (UNCHANGEDSINCE 1) +FLAGS (\Seen)` was applied to
// a message at a higher modseq instead of failing (RFC 7162 §3.1.3). Then
// the shape of the RFC's own example (§3.1.3, "a103"): a silent
// conditional STORE answers each stored message with its new MODSEQ and
// names the others in [MODIFIED].
#[test]
fn unchangedsince_refuses_messages_changed_since() {
    let s = server_with(3);
    let mut c = s.imap_login(USER, PASS);
    c.cmd_ok("c1 SELECT INBOX");
    let m = modseqs(&mut c);
    assert!(m[0] > 1, "{m:?}");
    assert_lines(
        &c.cmd("c2 UID STORE 1 (UNCHANGEDSINCE 1) +FLAGS (\\Seen)"),
        &["c2 OK [MODIFIED 1] Conditional STORE failed"],
    );
    assert_lines(
        &c.cmd("c3 FETCH 1 (FLAGS)"),
        &[
            &format!("* 1 FETCH (FLAGS () MODSEQ ({}))", m[0]),
            "c3 OK FETCH completed",
        ],
    );
    // Message 2 changes; then a conditional store on 1:3 as of before it.
    c.cmd_ok("c4 STORE 2 +FLAGS.SILENT (\\Answered)");
    let now = modseqs(&mut c);
    let r = c.cmd(&format!(
        "c5 UID STORE 1:3 (UNCHANGEDSINCE {}) +FLAGS.SILENT (\\Deleted)",
        m[2]
    ));
    let after = modseqs(&mut c);
    assert_lines(
        &r,
        &[
            &format!("* 1 FETCH (UID 1 MODSEQ ({}))", after[0]),
            &format!("* 3 FETCH (UID 3 MODSEQ ({}))", after[2]),
            "c5 OK [MODIFIED 2] Conditional STORE failed",
        ],
    );
    assert_eq!(after[1], now[1], "message 2 untouched");
    // UNCHANGEDSINCE 0 always fails (§3.1.3); STORE names messages by
    // number, UID STORE by UID.
    assert_lines(
        &c.cmd("c6 STORE 1:2 (UNCHANGEDSINCE 0) -FLAGS (\\Deleted)"),
        &["c6 OK [MODIFIED 1:2] Conditional STORE failed"],
    );
}

// RFC 5161 §3.2 / RFC 7162 §3.2.3: ENABLED lists what the command enabled;
// QRESYNC implies CONDSTORE.
#[test]
fn enable_condstore_and_qresync() {
    let s = server_with(1);
    let mut c = s.imap_login(USER, PASS);
    let caps = c.cmd_ok("d0 CAPABILITY");
    assert!(
        caps[0].contains(" CONDSTORE") && caps[0].contains(" QRESYNC"),
        "{caps:?}"
    );
    assert_lines(
        &c.cmd("d1 ENABLE QRESYNC CONDSTORE X-UNKNOWN"),
        &["* ENABLED QRESYNC", "d1 OK ENABLE completed"],
    );
    assert_lines(
        &c.cmd("d2 ENABLE CONDSTORE"),
        &["* ENABLED", "d2 OK ENABLE completed"],
    );
    let r = c.cmd_ok("d3 SELECT INBOX");
    assert!(r.iter().any(|l| l.contains("[HIGHESTMODSEQ ")), "{r:?}");
}

// RFC 7162 §3.2.5: SELECT with the QRESYNC parameter, after another session
// changed a message's flags and expunged another: VANISHED (EARLIER) for the
// expunge, FETCH (UID FLAGS MODSEQ) for the change, nothing for the rest;
// with known UIDs, only those. [CLOSED] when it replaces a selection
// (§3.2.11). Without ENABLE QRESYNC the parameter is BAD.
#[test]
fn select_qresync_reports_what_the_client_missed() {
    let s = server_with(4);
    let mut c = s.imap_login(USER, PASS);
    assert_lines(
        &c.cmd("e0 SELECT INBOX (QRESYNC (1 1))"),
        &["e0 BAD QRESYNC is not enabled"],
    );
    c.cmd_ok("e1 ENABLE QRESYNC");
    let r = c.cmd_ok("e2 SELECT INBOX");
    let known = highest_modseq(&r);
    let validity = uidvalidity(&r);
    c.cmd_ok("e3 LOGOUT");

    let mut other = s.imap_login(USER, PASS);
    other.cmd_ok("o1 SELECT INBOX");
    other.cmd_ok("o2 STORE 1 +FLAGS (\\Deleted)");
    other.cmd_ok("o3 EXPUNGE");
    other.cmd_ok("o4 UID STORE 3 +FLAGS (\\Flagged)");
    other.cmd_ok("o5 LOGOUT");

    let mut c = s.imap_login(USER, PASS);
    c.cmd_ok("e4 ENABLE QRESYNC");
    c.cmd_ok("e5 SELECT Sent");
    let r = c.cmd(&format!("e6 SELECT INBOX (QRESYNC ({validity} {known}))"));
    let now = highest_modseq(&r);
    assert!(now > known, "{now} > {known}");
    assert_lines(
        &r,
        &[
            "* OK [CLOSED] Previous mailbox closed",
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
            "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted",
            "* 3 EXISTS",
            "* 0 RECENT",
            "* OK [UNSEEN 1] First unseen",
            &format!("* OK [UIDVALIDITY {validity}] UIDs valid"),
            "* OK [UIDNEXT 5] Predicted next UID",
            "* OK [MAILBOXID (F{any})] Ok",
            &format!("* OK [HIGHESTMODSEQ {now}] Highest"),
            "* VANISHED (EARLIER) 1",
            &format!("* 2 FETCH (UID 3 FLAGS (\\Flagged) MODSEQ ({now}))"),
            "e6 OK [READ-WRITE] SELECT completed",
        ],
    );
    // Known UIDs 2 and 4 only: neither changed.
    let r = c.cmd(&format!(
        "e7 SELECT INBOX (QRESYNC ({validity} {known} 2,4))"
    ));
    assert!(
        !r.iter()
            .any(|l| l.starts_with("* VANISHED") || l.contains("FETCH")),
        "{r:?}"
    );
    // Another UIDVALIDITY: nothing to resynchronise from.
    let r = c.cmd(&format!("e8 SELECT INBOX (QRESYNC (4294967295 {known}))"));
    assert!(
        !r.iter()
            .any(|l| l.starts_with("* VANISHED") || l.contains("FETCH")),
        "{r:?}"
    );
    // UID FETCH with CHANGEDSINCE and VANISHED (§3.2.6).
    assert_lines(
        &c.cmd(&format!(
            "e9 UID FETCH 1:* (FLAGS) (CHANGEDSINCE {known} VANISHED)"
        )),
        &[
            "* VANISHED (EARLIER) 1",
            &format!("* 2 FETCH (UID 3 FLAGS (\\Flagged) MODSEQ ({now}))"),
            "e9 OK FETCH completed",
        ],
    );
}

// RFC 7162 §3.2.10: once QRESYNC is enabled, expunges are VANISHED, whether
// this session's (EXPUNGE) or another's (announced at NOOP); and flag
// changes announced from another session carry MODSEQ (§3.1.4).
#[test]
fn vanished_replaces_expunge_once_qresync_is_enabled() {
    let s = server_with(4);
    let mut c = s.imap_login(USER, PASS);
    c.cmd_ok("f1 ENABLE QRESYNC");
    c.cmd_ok("f2 SELECT INBOX");
    assert_lines(
        &c.cmd("f3 STORE 1:2 +FLAGS.SILENT (\\Deleted)"),
        &[
            "* 1 FETCH (UID 1 MODSEQ ({num}))",
            "* 2 FETCH (UID 2 MODSEQ ({num}))",
            "f3 OK STORE completed",
        ],
    );
    assert_lines(
        &c.cmd("f4 EXPUNGE"),
        &["* VANISHED 1:2", "f4 OK EXPUNGE completed"],
    );
    let mut other = s.imap_login(USER, PASS);
    other.cmd_ok("o1 SELECT INBOX");
    other.cmd_ok("o2 UID STORE 3 +FLAGS (\\Seen)");
    other.cmd_ok("o3 UID STORE 4 +FLAGS (\\Deleted)");
    other.cmd_ok("o4 EXPUNGE");
    assert_lines(
        &c.cmd("f5 NOOP"),
        &[
            "* VANISHED 4",
            "* 1 FETCH (UID 3 FLAGS (\\Seen) MODSEQ ({num}))",
            "f5 OK NOOP completed",
        ],
    );
}

// RFC 7162 §3.1.5: SEARCH with MODSEQ answers the highest modseq of the
// messages found.
#[test]
fn search_modseq_reports_the_highest() {
    let s = server_with(3);
    let mut c = s.imap_login(USER, PASS);
    c.cmd_ok("g1 SELECT INBOX");
    let m = modseqs(&mut c);
    c.cmd_ok("g2 STORE 3 +FLAGS (\\Flagged)");
    let now = modseqs(&mut c)[2];
    assert_lines(
        &c.cmd(&format!("g3 SEARCH MODSEQ {}", m[1])),
        &[
            &format!("* SEARCH 2 3 (MODSEQ {now})"),
            "g3 OK SEARCH completed",
        ],
    );
    assert_lines(
        &c.cmd(&format!("g4 SEARCH MODSEQ {}", now + 1)),
        &["* SEARCH", "g4 OK SEARCH completed"],
    );
}
