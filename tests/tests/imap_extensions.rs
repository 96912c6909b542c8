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
// QUOTA, METADATA, NOTIFY... was disconnected. Now those answer BAD and the
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
        ("p4 GETQUOTAROOT INBOX", "GETQUOTAROOT"),
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
