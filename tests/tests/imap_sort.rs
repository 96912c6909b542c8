//! RFC 5256 SORT and THREAD, RFC 5957 SORT=DISPLAY, over the wire against
//! the real binary: every sort key, REVERSE, several keys, search criteria
//! after the charset (the RFC's example shapes: `SORT (DATE) UTF-8 SINCE
//! ...`, `SORT (SUBJECT REVERSE DATE) UTF-8 ALL`, `THREAD ORDEREDSUBJECT
//! UTF-8 SINCE ...`, `THREAD REFERENCES US-ASCII TEXT ...`), the UID forms,
//! an unknown charset (NO [BADCHARSET]) and an unknown algorithm (BAD),
//! RFC 5267 ESORT, and a Python imaplib session using `.sort()` and
//! `.thread()`.
//!
//! The mailbox (UIDs 2..6 are sequence numbers 1..5: UID 1 is expunged):
//!
//! | seq | arrival   | Date:        | Subject               | From                 | To                    | Cc  | size |
//! |-----|-----------|--------------|-----------------------|----------------------|-----------------------|-----|------|
//! | 1   | 05-Nov    | 2 Nov 10:00  | Plan                  | Zed <zed@z.example>  | Aaron <bob@b.example> |     | 600  |
//! | 2   | 04-Nov    | 2 Nov 11:00  | Re: Plan              | amy@a.example        | Carol <carol@c.ex>    | x@x | 400  |
//! | 3   | 03-Nov    | 1 Nov 09:00  | Another               | Ann <yolanda@y.ex>   |                       |     | 1000 |
//! | 4   | 02-Nov    | 3 Nov 08:00  | Re: Re: plan          | bob@b.example        | alice@a.example       |     | 800  |
//! | 5   | 01-Nov 12h| (none)       | [list] another (fwd)  |                      |                       |     | 500  |
//!
//! Message-IDs: 1 `<p@x>`; 2 `<q@x>` references `<p@x>`; 4 `<r@x>`
//! references `<p@x> <q@x>`; 3 `<z@x>`; 5 `<s@x>`.

use cove_tests::{IMAP_CONFIG, Imap, TestServer, assert_lines};

const USER: &str = "s@x.org";
const PASS: &str = "pw";

/// A message of exactly `size` bytes.
fn padded(headers: &str, size: usize) -> Vec<u8> {
    let mut m = format!("{headers}\r\n").into_bytes();
    assert!(m.len() + 2 <= size);
    m.resize(size - 2, b'x');
    m.extend_from_slice(b"\r\n");
    m
}

const MESSAGES: [(&str, &str, usize); 5] = [
    (
        "05-Nov-2026 10:00:00 +0000",
        "Subject: Plan\r\nFrom: Zed <zed@z.example>\r\nTo: Aaron <bob@b.example>\r\n\
         Date: Mon, 2 Nov 2026 10:00:00 +0000\r\nMessage-ID: <p@x>\r\n",
        600,
    ),
    (
        "04-Nov-2026 10:00:00 +0000",
        "Subject: Re: Plan\r\nFrom: amy@a.example\r\nTo: Carol <carol@c.example>\r\nCc: x@x.example\r\n\
         Date: Mon, 2 Nov 2026 11:00:00 +0000\r\nMessage-ID: <q@x>\r\nReferences: <p@x>\r\n",
        400,
    ),
    (
        "03-Nov-2026 10:00:00 +0000",
        "Subject: Another\r\nFrom: Ann <yolanda@y.example>\r\n\
         Date: Sun, 1 Nov 2026 09:00:00 +0000\r\nMessage-ID: <z@x>\r\n",
        1000,
    ),
    (
        "02-Nov-2026 10:00:00 +0000",
        "Subject: Re: Re: plan\r\nFrom: bob@b.example\r\nTo: alice@a.example\r\n\
         Date: Tue, 3 Nov 2026 08:00:00 +0000\r\nMessage-ID: <r@x>\r\nReferences: <p@x> <q@x>\r\n",
        800,
    ),
    (
        "01-Nov-2026 12:00:00 +0000",
        "Subject: [list] another (fwd)\r\nMessage-ID: <s@x>\r\n",
        500,
    ),
];

/// A server whose user's INBOX holds the five messages above, UIDs 2..6.
fn server() -> TestServer {
    server_with(IMAP_CONFIG)
}

/// [`server`] with its configuration.
fn server_with(config: &str) -> TestServer {
    let s = TestServer::start(config);
    let out = s.cli_stdin(
        &["user", "add", USER, "--password-stdin"],
        Some(format!("{PASS}\n").as_bytes()),
    );
    assert!(out.status.success(), "{out:?}");
    let mut c = s.imap_login(USER, PASS);
    c.append("a0", "INBOX", "", b"Subject: gone\r\n\r\nx\r\n");
    for (i, (date, headers, size)) in MESSAGES.iter().enumerate() {
        let r = c.append(
            &format!("a{}", i + 1),
            "INBOX",
            &format!("\"{date}\""),
            &padded(headers, *size),
        );
        assert!(r.last().is_some_and(|l| l.contains(" OK ")), "{r:?}");
    }
    c.cmd_ok("e1 SELECT INBOX");
    c.cmd_ok("e2 STORE 1 +FLAGS (\\Deleted)");
    c.cmd_ok("e3 EXPUNGE");
    s
}

fn selected(s: &TestServer) -> Imap<std::net::TcpStream> {
    let mut c = s.imap_login(USER, PASS);
    c.cmd_ok("s0 SELECT INBOX");
    c
}

/// `tag command` answers `* <untagged>` then `tag OK <WHAT> completed`.
#[track_caller]
fn answers(c: &mut Imap<std::net::TcpStream>, line: &str, untagged: &str) {
    let tag = line.split(' ').next().unwrap_or_default();
    let verb = line
        .split(' ')
        .nth(1)
        .filter(|v| !v.eq_ignore_ascii_case("UID"))
        .or_else(|| line.split(' ').nth(2))
        .unwrap_or_default();
    assert_lines(
        &c.cmd(line),
        &[untagged, &format!("{tag} OK {verb} completed")],
    );
}

#[test]
fn capabilities_are_advertised() {
    let s = server();
    let mut c = s.imap_login(USER, PASS);
    let caps = c.cmd_ok("c1 CAPABILITY");
    for cap in [
        " SORT ",
        " SORT=DISPLAY ",
        " THREAD=ORDEREDSUBJECT ",
        " THREAD=REFERENCES ",
        " ESORT ",
    ] {
        assert!(caps[0].contains(cap), "{cap}: {caps:?}");
    }
}

// RFC 5256 §3: every key, REVERSE, ties in mailbox order.
#[test]
fn sort_every_key() {
    let s = server();
    let mut c = selected(&s);
    answers(&mut c, "k1 SORT (ARRIVAL) UTF-8 ALL", "* SORT 5 4 3 2 1");
    // 5 has no Date: its INTERNALDATE (1 Nov 12:00) is its date.
    answers(&mut c, "k2 SORT (DATE) UTF-8 ALL", "* SORT 3 5 1 2 4");
    // Base subjects: "another" (3, 5), "plan" (1, 2, 4): ties in mailbox order.
    answers(&mut c, "k3 SORT (SUBJECT) UTF-8 ALL", "* SORT 3 5 1 2 4");
    // A missing From sorts first (empty).
    answers(&mut c, "k4 SORT (FROM) UTF-8 ALL", "* SORT 5 2 4 3 1");
    answers(&mut c, "k5 SORT (TO) UTF-8 ALL", "* SORT 3 5 4 1 2");
    answers(&mut c, "k6 SORT (CC) UTF-8 ALL", "* SORT 1 3 4 5 2");
    answers(&mut c, "k7 SORT (SIZE) UTF-8 ALL", "* SORT 2 5 1 4 3");
    // RFC 5957: the display name, or the address without one.
    answers(
        &mut c,
        "k8 SORT (DISPLAYFROM) UTF-8 ALL",
        "* SORT 5 2 3 4 1",
    );
    answers(&mut c, "k9 SORT (DISPLAYTO) UTF-8 ALL", "* SORT 3 5 1 4 2");
}

#[test]
fn sort_reverse_several_keys_and_search_criteria() {
    let s = server();
    let mut c = selected(&s);
    answers(
        &mut c,
        "r1 SORT (REVERSE FROM) UTF-8 ALL",
        "* SORT 1 3 4 2 5",
    );
    // RFC 5256 §3 example shape.
    answers(
        &mut c,
        "r2 SORT (SUBJECT REVERSE DATE) UTF-8 ALL",
        "* SORT 5 3 4 2 1",
    );
    // REVERSE does not reverse the mailbox-order tie-break (3 before 5).
    answers(
        &mut c,
        "r3 SORT (REVERSE SUBJECT) UTF-8 ALL",
        "* SORT 1 2 4 3 5",
    );
    // RFC 5256 §3 example shape: the search criteria after the charset.
    answers(
        &mut c,
        "r4 SORT (DATE) UTF-8 SINCE 3-Nov-2026",
        "* SORT 3 1 2",
    );
    answers(
        &mut c,
        "r5 SORT (ARRIVAL) US-ASCII SUBJECT plan",
        "* SORT 4 2 1",
    );
    answers(
        &mut c,
        "r6 SORT (SIZE) UTF-8 OR FROM zed LARGER 900",
        "* SORT 1 3",
    );
    answers(&mut c, "r7 SORT (DATE) UTF-8 SUBJECT nothing", "* SORT");
    // RFC 5182: `$` names a saved search result in the criteria.
    c.cmd_ok("r9 SEARCH RETURN (SAVE) SUBJECT plan");
    answers(&mut c, "r10 SORT (REVERSE DATE) UTF-8 $", "* SORT 4 2 1");
    answers(&mut c, "r11 THREAD REFERENCES UTF-8 $", "* THREAD (1 2 4)");
    // In the criteria `$` is a sequence set, also in the UID forms (UIDs
    // 2..6 are numbers 1..5 here: UIDs written as numbers would name 2, 3
    // and 5); after the UID key, a UID set.
    answers(&mut c, "r12 UID SORT (DATE) UTF-8 $", "* SORT 2 3 5");
    answers(&mut c, "r13 UID SEARCH $", "* SEARCH 2 3 5");
    answers(&mut c, "r14 SORT (DATE) UTF-8 UID $", "* SORT 1 2 4");
    // Twice the same: the second answer comes from the cached keys.
    answers(
        &mut c,
        "r8 SORT (DATE) UTF-8 SINCE 3-Nov-2026",
        "* SORT 3 1 2",
    );
}

#[test]
fn uid_sort_answers_uids() {
    let s = server();
    let mut c = selected(&s);
    answers(
        &mut c,
        "u1 UID SORT (ARRIVAL) UTF-8 ALL",
        "* SORT 6 5 4 3 2",
    );
    answers(
        &mut c,
        "u2 UID SORT (REVERSE SIZE) UTF-8 UID 2:4",
        "* SORT 4 2 3",
    );
    answers(
        &mut c,
        "u3 UID THREAD REFERENCES UTF-8 ALL",
        "* THREAD (4 6)(2 3 5)",
    );
}

// RFC 5267 §3 ESORT: SORT RETURN answers ESEARCH; MIN and MAX are the
// first and last in the sort order, ALL keeps that order (ranges only for
// ascending runs).
#[test]
fn esort_returns_esearch_in_sort_order() {
    let s = server();
    let mut c = selected(&s);
    assert_lines(
        &c.cmd("e1 SORT RETURN (MIN MAX COUNT ALL) (DATE) UTF-8 ALL"),
        &[
            "* ESEARCH (TAG \"e1\") MIN 3 MAX 4 COUNT 5 ALL 3,5,1:2,4",
            "e1 OK SORT completed",
        ],
    );
    assert_lines(
        &c.cmd("e2 UID SORT RETURN () (REVERSE ARRIVAL) UTF-8 ALL"),
        &["* ESEARCH (TAG \"e2\") UID ALL 2:6", "e2 OK SORT completed"],
    );
    assert_lines(
        &c.cmd("e3 SORT RETURN (COUNT MIN) (DATE) UTF-8 SUBJECT nothing"),
        &["* ESEARCH (TAG \"e3\") COUNT 0", "e3 OK SORT completed"],
    );
    // SAVE is SEARCH's (RFC 5182), not a SORT RETURN option.
    let r = c.cmd("e4 SORT RETURN (SAVE) (DATE) UTF-8 ALL");
    assert!(r.len() == 1 && r[0].starts_with("e4 BAD "), "{r:?}");
}

// RFC 5256 §3 THREAD: both algorithms, with search criteria.
#[test]
fn thread_both_algorithms() {
    let s = server();
    let mut c = selected(&s);
    // Threads in the order of their first message's date; the forward
    // (5) goes under the message whose base subject it shares (3).
    answers(
        &mut c,
        "t1 THREAD REFERENCES UTF-8 ALL",
        "* THREAD (3 5)(1 2 4)",
    );
    // The first message of a subject is the parent of the others.
    answers(
        &mut c,
        "t2 THREAD ORDEREDSUBJECT UTF-8 ALL",
        "* THREAD (3 5)(1 (2)(4))",
    );
    // RFC 5256 §3 example shapes.
    answers(
        &mut c,
        "t3 THREAD ORDEREDSUBJECT UTF-8 SINCE 3-Nov-2026",
        "* THREAD (3)(1 2)",
    );
    answers(
        &mut c,
        "t4 THREAD REFERENCES US-ASCII TEXT \"plan\"",
        "* THREAD (1 2 4)",
    );
    answers(
        &mut c,
        "t5 THREAD REFERENCES UTF-8 SUBJECT nothing",
        "* THREAD",
    );
}

#[test]
fn unknown_charset_and_algorithm() {
    let s = server();
    let mut c = selected(&s);
    // RFC 5256 §3, RFC 3501 §6.4.4.
    assert_lines(
        &c.cmd("x1 SORT (DATE) KOI8-R ALL"),
        &["x1 NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset"],
    );
    assert_lines(
        &c.cmd("x2 UID THREAD REFERENCES ISO-8859-5 ALL"),
        &["x2 NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset"],
    );
    assert_lines(
        &c.cmd("x3 THREAD SOMETHING UTF-8 ALL"),
        &["x3 BAD Unknown threading algorithm"],
    );
    for (tag, line) in [
        ("x4", "SORT () UTF-8 ALL"),
        ("x5", "SORT (BOGUS) UTF-8 ALL"),
        ("x6", "SORT (DATE) UTF-8"),
        ("x7", "SORT (REVERSE) UTF-8 ALL"),
        ("x8", "THREAD REFERENCES"),
    ] {
        let r = c.cmd(&format!("{tag} {line}"));
        assert!(
            r.len() == 1 && r[0].starts_with(&format!("{tag} BAD ")),
            "{line}: {r:?}"
        );
    }
    // Outside the selected state (RFC 5256: selected state only).
    let mut d = s.imap_login(USER, PASS);
    let r = d.cmd("y1 SORT (DATE) UTF-8 ALL");
    assert!(r.len() == 1 && r[0].starts_with("y1 BAD "), "{r:?}");
    // The session still works.
    answers(&mut c, "x9 SORT (ARRIVAL) UTF-8 ALL", "* SORT 5 4 3 2 1");
}

/// Put `data` in the index as `message`'s cached sort keys.
fn put_sort_keys(account: &cove_store::Account, message: &cove_store::MessageMeta, data: &[u8]) {
    account
        .store_derived(&[(
            message.content_id,
            cove_store::DerivedKind::ImapSortKeys,
            data.to_vec(),
        )])
        .expect("store");
}

// The keys are prepared once per content and never read from the message
// again: the background indexer caches them in the index when a message
// arrives (kind ImapSortKeys), before any SORT; the first SORT reads that
// entry (one swapped for another message's changes its answer), and later
// ones answer from the server's memory (swapping the entry back changes
// nothing: content never changes, so neither do its keys).
#[test]
fn sort_keys_are_made_on_arrival_and_kept_in_memory() {
    let s = server();
    let arrived = s.derived_on_arrival(USER, cove_store::DerivedKind::ImapSortKeys);
    let (account, messages, cached) = (&arrived.account, &arrived.messages, &arrived.views);
    // Message 4 ("Re: Re: plan") gets the keys of message 3 ("Another").
    let swap = |data: &[u8]| put_sort_keys(account, &messages[3], data);
    swap(&cached[2]);
    let mut c = selected(&s);
    answers(&mut c, "m1 SORT (SUBJECT) UTF-8 ALL", "* SORT 3 4 5 1 2");
    swap(&cached[3]);
    answers(&mut c, "m2 SORT (SUBJECT) UTF-8 ALL", "* SORT 3 4 5 1 2");
    // The memory is the server's, not the session's.
    let mut d = selected(&s);
    answers(&mut d, "m3 SORT (SUBJECT) UTF-8 ALL", "* SORT 3 4 5 1 2");
}

// A SORT of the whole mailbox keeps it in that order in the server's
// memory, and the next SORT with those criteria walks it (issue 15): with
// no memory for keys (`sort_key_cache_bytes = 0`: a SORT that sorted would
// read every message's keys from the index), keys swapped in the index
// after the first SORT change no later answer, in any session. Messages
// that arrive are merged in and expunged ones dropped: the answers are
// those a fresh sort gives (worked out by hand below), and a search's
// part of the mailbox is walked in the same order.
#[test]
fn sort_order_is_kept_and_updated_by_arrivals_and_expunges() {
    let s = server_with(&format!("{IMAP_CONFIG}sort_key_cache_bytes = 0\n"));
    let arrived = s.derived_on_arrival(USER, cove_store::DerivedKind::ImapSortKeys);
    let (account, messages, cached) = (&arrived.account, &arrived.messages, &arrived.views);
    let swap = |data: &[u8]| put_sort_keys(account, &messages[3], data);
    let mut c = selected(&s);
    answers(&mut c, "o1 SORT (SUBJECT) UTF-8 ALL", "* SORT 3 5 1 2 4");
    // Message 4 ("Re: Re: plan") gets the keys of message 3 ("Another"):
    // sorting again would answer 3 4 5 1 2.
    swap(&cached[2]);
    answers(&mut c, "o2 SORT (SUBJECT) UTF-8 ALL", "* SORT 3 5 1 2 4");
    let mut d = selected(&s);
    answers(&mut d, "o3 SORT (SUBJECT) UTF-8 ALL", "* SORT 3 5 1 2 4");
    swap(&cached[3]);
    // New messages (UIDs 7, 8): base subjects "apple" and "zebra".
    d.append("o4", "INBOX", "", b"Subject: Apple\r\n\r\nx\r\n");
    d.append("o5", "INBOX", "", b"Subject: zebra\r\n\r\nx\r\n");
    c.cmd_ok("o6 NOOP");
    // another (3, 5), apple (6), plan (1, 2, 4), zebra (7).
    answers(
        &mut c,
        "o7 SORT (SUBJECT) UTF-8 ALL",
        "* SORT 3 5 6 1 2 4 7",
    );
    // Message 1 (UID 2, "Plan") expunged: UIDs 3..8 are now 1..6.
    d.cmd_ok("o8 STORE 1 +FLAGS.SILENT (\\Deleted)");
    d.cmd_ok("o9 EXPUNGE");
    c.cmd_ok("o10 NOOP");
    answers(&mut c, "o11 SORT (SUBJECT) UTF-8 ALL", "* SORT 2 4 5 1 3 6");
    answers(
        &mut c,
        "o12 UID SORT (SUBJECT) UTF-8 ALL",
        "* SORT 4 6 7 3 5 8",
    );
    answers(
        &mut c,
        "o13 SORT (SUBJECT) UTF-8 SUBJECT plan",
        "* SORT 1 3",
    );
    answers(
        &mut c,
        "o14 UID SORT (SUBJECT) UTF-8 NOT SUBJECT plan",
        "* SORT 4 6 7 8",
    );
    // A fresh sort (another criteria list: another order) agrees.
    answers(
        &mut d,
        "o15 SORT (REVERSE SUBJECT) UTF-8 ALL",
        "* SORT 6 1 3 5 2 4",
    );
}

// Python's imaplib: IMAP4.sort() and IMAP4.thread().
#[test]
fn python_imaplib_sort_and_thread() {
    let s = server();
    s.run_python(
        "imaplib_sort.py",
        &[],
        &[
            ("COVE_IMAP", s.addr_of("imap").to_string()),
            ("COVE_USER", USER.to_string()),
            ("COVE_PASS", PASS.to_string()),
        ],
        "imaplib sort ok",
    );
}
