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

// Ten BADs used to end the session, so a client probing for SORT, THREAD,
// ACL, METADATA, NOTIFY... was disconnected. Now those answer BAD and the
// count of bad commands in a row is left as it was: here the limit is 3,
// and after six probes, two bad commands still do not reach it.
#[test]
fn unsupported_extension_commands_are_bad_and_not_counted() {
    let s = server("max_bad_commands = 3\n");
    let mut c = s.imap_login(USER, PASS);
    c.cmd_ok("p0 SELECT INBOX");
    assert_lines(&c.cmd("p1 FOO"), &["p1 BAD Command not understood"]);
    for (line, name) in [
        ("p2 SORT (DATE) UTF-8 ALL", "SORT"),
        ("p3 UID THREAD REFERENCES UTF-8 ALL", "THREAD"),
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
        &c.cmd("A286 SEARCH RETURN (SAVE) FLAGGED"),
        &["A286 BAD Unknown RETURN option SAVE"],
    );
}
