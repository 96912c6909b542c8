//! Extensions a client probes for: a well-formed command of an extension
//! cove does not advertise answers BAD without counting toward the
//! bad-command limit (a client probing is not misbehaving); COMPRESS
//! (RFC 4978) is valid once logged in, whether a mailbox is selected or not.
//!
//! Transcripts: each client line and the exact server lines. The compressed
//! session itself is tests/python/imaplib_compress.py (imap_imaplib.rs).

use cove_tests::{IMAP_CONFIG, TestServer, assert_lines};

const USER: &str = "a@x.org";
const PASS: &str = "pw";

fn server(extra: &str) -> TestServer {
    let s = TestServer::start(&format!("{IMAP_CONFIG}{extra}"));
    s.add_user_with_password(USER, PASS);
    s
}

// Ten BADs used to end the session, so a client probing for SORT, THREAD
// (both run now: imap_sort.rs), ACL, METADATA, NOTIFY... was disconnected. Now those answer BAD and the
// count of bad commands in a row is left as it was: here the limit is 3,
// and after six probes, two bad commands still do not reach it.
#[test]
fn unsupported_extension_commands_are_bad_and_not_counted() {
    let s = server("max_bad_commands = 3\n");
    let mut c = s.imap_login(USER, PASS);
    c.cmd_ok("p0 SELECT INBOX");
    assert_lines(&c.cmd("p1 FOO"), &["p1 BAD Command not understood"]);
    for (line, name) in [
        ("p2 LISTRIGHTS INBOX bob", "LISTRIGHTS"),
        ("p3 SETMETADATA INBOX (/private/comment NIL)", "SETMETADATA"),
        ("p4 MYRIGHTS INBOX", "MYRIGHTS"),
        ("p5 NOTIFY NONE", "NOTIFY"),
        ("p6 GETMETADATA \"\" /shared/comment", "GETMETADATA"),
        ("p7 UID NOTIFY NONE", "NOTIFY"),
    ] {
        let tag = line.split(' ').next().unwrap_or_default();
        assert_lines(
            &c.cmd(line),
            &[&format!("{tag} BAD {name} is not supported")],
        );
    }
    assert_lines(&c.cmd("p8 FOO"), &["p8 BAD Command not understood"]);
    assert_lines(&c.cmd("p9 NOOP"), &["p9 OK NOOP completed"]);
    // Malformed lines still count: three in a row end the session.
    for tag in ["q1", "q2"] {
        assert_lines(
            &c.cmd(&format!("{tag} FOO")),
            &[&format!("{tag} BAD Command not understood")],
        );
    }
    c.send("q3 FOO");
    assert_lines(
        &[c.read_response(), c.read_response()],
        &[
            "q3 BAD Command not understood",
            "* BYE Too many bad commands",
        ],
    );
}

// The defect: `COMPRESS DEFLATE` with no mailbox selected answered "No
// mailbox selected" (commands the session did not know fell through to the
// selected state's checks). RFC 4978 §3: valid once logged in; BAD before.
#[test]
fn compress_is_valid_without_a_mailbox_selected() {
    let s = server("");
    let mut c = s.imap();
    assert_lines(&c.cmd("z0 COMPRESS DEFLATE"), &["z0 BAD Log in first"]);
    c.login(USER, PASS);
    let caps = c.cmd_ok("z1 CAPABILITY");
    assert!(caps[0].contains(" COMPRESS=DEFLATE"), "{caps:?}");
    assert_lines(&c.cmd("z2 COMPRESS DEFLATE"), &["z2 OK DEFLATE active"]);
}

// RFC 4731 §3.1 ESEARCH, with the RFC's own examples' shapes: MIN and
// COUNT, RETURN () meaning ALL, nothing found, and the UID form.
#[test]
fn esearch_returns_min_max_count_all() {
    let s = server("");
    let mut c = s.imap_login(USER, PASS);
    for i in 1..=11 {
        let msg = format!("From: smith@example.org\r\nSubject: m{i}\r\n\r\nbody\r\n");
        c.append(&format!("s{i}"), "INBOX", "", msg.as_bytes());
    }
    c.cmd_ok("a0 SELECT INBOX");
    c.cmd_ok("a1 STORE 2,10:11 +FLAGS.SILENT (\\Flagged)");
    let caps = c.cmd_ok("a2 CAPABILITY");
    assert!(caps[0].contains(" ESEARCH"), "{caps:?}");
    assert_lines(
        &c.cmd("A282 SEARCH RETURN (MIN COUNT) FLAGGED SINCE 1-Feb-1994"),
        &[
            "* ESEARCH (TAG \"A282\") MIN 2 COUNT 3",
            "A282 OK SEARCH completed",
        ],
    );
    assert_lines(
        &c.cmd("A283 SEARCH RETURN () FLAGGED SINCE 1-Feb-1994"),
        &[
            "* ESEARCH (TAG \"A283\") ALL 2,10:11",
            "A283 OK SEARCH completed",
        ],
    );
    assert_lines(
        &c.cmd("A284 SEARCH RETURN (MIN MAX) FLAGGED NOT FROM \"Smith\""),
        &["* ESEARCH (TAG \"A284\")", "A284 OK SEARCH completed"],
    );
    assert_lines(
        &c.cmd("A285 UID SEARCH RETURN (MAX COUNT ALL) FLAGGED"),
        &[
            "* ESEARCH (TAG \"A285\") UID MAX 11 COUNT 3 ALL 2,10:11",
            "A285 OK SEARCH completed",
        ],
    );
    assert_lines(
        &c.cmd("A286 SEARCH RETURN (PARTIAL 1:5) FLAGGED"),
        &["A286 BAD Unknown RETURN option PARTIAL"],
    );
}

/// The `(id)` of `CODE (id)` in a line.
fn object_id(line: &str, code: &str) -> String {
    let start = line
        .find(&format!("{code} ("))
        .unwrap_or_else(|| panic!("{code} in {line}"));
    let rest = &line[start + code.len() + 2..];
    rest[..rest.find(')').expect("closed")].to_string()
}

// RFC 8474 OBJECTID, in the RFC's examples' shapes: CREATE's OK and
// SELECT name the MAILBOXID (§4.1, §4.2), STATUS returns it (§4.4), RENAME
// keeps it (§4.3); FETCH EMAILID is the same after COPY and MOVE (§5.1),
// THREADID is NIL where the server does not thread (§5.2).
#[test]
fn objectid_mailboxid_emailid_threadid() {
    let s = server("");
    let mut c = s.imap_login(USER, PASS);
    let caps = c.cmd_ok("o0 CAPABILITY");
    assert!(caps[0].contains(" OBJECTID"), "{caps:?}");
    let created = c.cmd_ok("o1 CREATE foo");
    let foo = object_id(&created[0], "MAILBOXID");
    assert!(
        foo.len() <= 255 && foo.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{foo}"
    );
    assert_lines(
        &c.cmd("o2 STATUS foo (MAILBOXID)"),
        &[
            &format!("* STATUS foo (UIDVALIDITY {{num}} MAILBOXID ({foo}))"),
            "o2 OK STATUS completed",
        ],
    );
    c.cmd_ok("o3 RENAME foo bar");
    let selected = c.cmd_ok("o4 SELECT bar");
    assert!(
        selected.contains(&format!("* OK [MAILBOXID ({foo})] Ok")),
        "{selected:?}"
    );
    let inbox = c.cmd_ok("o5 SELECT INBOX");
    let inbox_id = inbox
        .iter()
        .find(|l| l.contains("[MAILBOXID "))
        .map(|l| object_id(l, "MAILBOXID"))
        .expect("MAILBOXID");
    assert_ne!(inbox_id, foo);

    c.append("o6", "INBOX", "", b"Subject: one\r\n\r\nbody\r\n");
    let fetched = c.cmd_ok("o7 FETCH 1 (EMAILID THREADID)");
    let email = object_id(&fetched[0], "EMAILID");
    assert_lines(
        &fetched,
        &[
            &format!("* 1 FETCH (UID 1 EMAILID ({email}) THREADID NIL)"),
            "o7 OK FETCH completed",
        ],
    );
    c.cmd_ok("o8 COPY 1 bar");
    c.cmd_ok("o9 MOVE 1 Archive");
    for mailbox in ["bar", "Archive"] {
        c.cmd_ok(&format!("p1 SELECT {mailbox}"));
        assert_lines(
            &c.cmd("p2 UID FETCH 1:* (EMAILID)"),
            &[
                &format!("* 1 FETCH (UID 1 EMAILID ({email}))"),
                "p2 OK FETCH completed",
            ],
        );
    }
}

// RFC 5182 SEARCHRES, the RFC's §3 example shapes: SEARCH RETURN (SAVE)
// answers no ESEARCH, `$` then names what it found in FETCH, STORE and
// SEARCH, by UID for UID commands; after an expunge `$` names what is left;
// an empty result makes the command do nothing; SELECT forgets it.
#[test]
fn searchres_saves_a_result_for_dollar() {
    let s = server("");
    let mut c = s.imap_login(USER, PASS);
    for i in 1..=5 {
        let msg = format!("From: a@example.org\r\nSubject: m{i}\r\n\r\nbody\r\n");
        c.append(&format!("s{i}"), "INBOX", "", msg.as_bytes());
    }
    c.cmd_ok("r0 SELECT INBOX");
    c.cmd_ok("r1 STORE 2,4 +FLAGS.SILENT (\\Flagged)");
    let caps = c.cmd_ok("r2 CAPABILITY");
    assert!(caps[0].contains(" SEARCHRES"), "{caps:?}");
    assert_lines(
        &c.cmd("A282 SEARCH RETURN (SAVE) FLAGGED"),
        &["A282 OK SEARCH completed"],
    );
    assert_lines(
        &c.cmd("A283 FETCH $ (UID)"),
        &[
            "* 2 FETCH (UID 2)",
            "* 4 FETCH (UID 4)",
            "A283 OK FETCH completed",
        ],
    );
    assert_lines(
        &c.cmd("A284 UID SEARCH UID $ SUBJECT m4"),
        &["* SEARCH 4", "A284 OK SEARCH completed"],
    );
    c.cmd_ok("r3 STORE 2 +FLAGS.SILENT (\\Deleted)");
    c.cmd_ok("r4 EXPUNGE");
    assert_lines(
        &c.cmd("A285 STORE $ +FLAGS (\\Seen)"),
        &[
            "* 3 FETCH (UID 4 FLAGS (\\Flagged \\Seen \\Recent))",
            "A285 OK STORE completed",
        ],
    );
    // SAVE with other options: ESEARCH for those, the result saved too.
    assert_lines(
        &c.cmd("A286 SEARCH RETURN (SAVE COUNT) SUBJECT nothing"),
        &[
            "* ESEARCH (TAG \"A286\") COUNT 0",
            "A286 OK SEARCH completed",
        ],
    );
    assert_lines(&c.cmd("A287 FETCH $ (UID)"), &["A287 OK FETCH completed"]);
    // A mailbox called $ is not a result.
    assert_lines(
        &c.cmd("A288 STATUS $ (MESSAGES)"),
        &["A288 NO [NONEXISTENT] mailbox $ does not exist"],
    );
    c.cmd_ok("r5 SEARCH RETURN (SAVE) ALL");
    c.cmd_ok("r6 SELECT INBOX");
    assert_lines(&c.cmd("A289 FETCH $ (UID)"), &["A289 OK FETCH completed"]);
}
