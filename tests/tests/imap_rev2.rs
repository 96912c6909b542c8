//! RFC 9051 IMAP4rev2 beside IMAP4rev1: advertised both, rev2 behaviour
//! only once the client sends `ENABLE IMAP4rev2` (RFC 9051 Appendix E):
//! SEARCH answered with ESEARCH and its tag, no \Recent and no RECENT,
//! SELECT's LIST response and no UNSEEN code, `[CLOSED]`, UTF-8 mailbox
//! names both ways. The same commands without ENABLE keep rev1's shapes.
//!
//! Transcripts: each client line and the exact server lines.

use std::net::TcpStream;

use cove_tests::{IMAP_CONFIG, Imap, TestServer, assert_lines};

const USER: &str = "r@x.org";
const PASS: &str = "pw";

fn message(n: usize) -> String {
    format!("From: a@example.org\r\nSubject: message {n}\r\n\r\nbody {n}\r\n")
}

/// A server whose user has two messages in INBOX (the first \Seen), both
/// still \Recent, and a mailbox "Café" (in modified UTF-7: Caf&AOk-).
fn server() -> TestServer {
    let s = TestServer::start(IMAP_CONFIG);
    s.add_user_with_password(USER, PASS);
    let mut c = s.imap_login(USER, PASS);
    c.append("s1", "INBOX", "(\\Seen)", message(1).as_bytes());
    c.append("s2", "INBOX", "", message(2).as_bytes());
    c.cmd_ok("s3 CREATE Caf&AOk-");
    c.cmd_ok("s9 LOGOUT");
    s
}

/// Deliver one more message to INBOX from another session.
fn append_elsewhere(s: &TestServer) {
    let mut other = s.imap_login(USER, PASS);
    other.append("o1", "INBOX", "", message(3).as_bytes());
    other.cmd_ok("o9 LOGOUT");
}

fn enabled(s: &TestServer) -> Imap<TcpStream> {
    let mut c = s.imap_login(USER, PASS);
    let caps = c.cmd_ok("r0 CAPABILITY");
    assert!(
        caps[0].starts_with("* CAPABILITY IMAP4rev1 IMAP4rev2 "),
        "{caps:?}"
    );
    assert_lines(
        &c.cmd("r1 ENABLE IMAP4rev2"),
        &["* ENABLED IMAP4rev2", "r1 OK ENABLE completed"],
    );
    // RFC 5161 §3.2: only what this command enabled.
    assert_lines(
        &c.cmd("r2 ENABLE IMAP4rev2"),
        &["* ENABLED", "r2 OK ENABLE completed"],
    );
    c
}

#[test]
fn rev2_session_transcript() {
    let s = server();
    let mut c = enabled(&s);
    // RFC 9051 §6.3.2: a LIST response, no RECENT, no UNSEEN.
    assert_lines(
        &c.cmd("r3 SELECT INBOX"),
        &[
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
            "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted",
            "* 2 EXISTS",
            "* LIST () \".\" INBOX",
            "* OK [UIDVALIDITY {num}] UIDs valid",
            "* OK [UIDNEXT 3] Predicted next UID",
            "* OK [MAILBOXID ({any})] Ok",
            "r3 OK [READ-WRITE] SELECT completed",
        ],
    );
    // §2.3.2: no \Recent flag, though both messages are new.
    assert_lines(
        &c.cmd("r4 FETCH 1:* (FLAGS)"),
        &[
            "* 1 FETCH (FLAGS (\\Seen))",
            "* 2 FETCH (FLAGS ())",
            "r4 OK FETCH completed",
        ],
    );
    // §6.4.4: ESEARCH with the tag, for SEARCH and UID SEARCH, found or not.
    assert_lines(
        &c.cmd("r5 SEARCH UNSEEN"),
        &["* ESEARCH (TAG \"r5\") ALL 2", "r5 OK SEARCH completed"],
    );
    assert_lines(
        &c.cmd("r6 UID SEARCH ALL"),
        &[
            "* ESEARCH (TAG \"r6\") UID ALL 1:2",
            "r6 OK SEARCH completed",
        ],
    );
    assert_lines(
        &c.cmd("r7 SEARCH SUBJECT nowhere"),
        &["* ESEARCH (TAG \"r7\")", "r7 OK SEARCH completed"],
    );
    assert_lines(
        &c.cmd("r8 SEARCH RETURN (COUNT) ALL"),
        &["* ESEARCH (TAG \"r8\") COUNT 2", "r8 OK SEARCH completed"],
    );
    // A message arriving meanwhile: EXISTS, no RECENT.
    append_elsewhere(&s);
    assert_lines(&c.cmd("r9 NOOP"), &["* 3 EXISTS", "r9 OK NOOP completed"]);
    // STATUS: DELETED and SIZE are rev2's; RECENT is not.
    c.cmd_ok("r10 STORE 1 +FLAGS.SILENT (\\Deleted)");
    assert_lines(
        &c.cmd("r11 STATUS INBOX (MESSAGES RECENT DELETED SIZE)"),
        &[
            "* STATUS INBOX (MESSAGES 3 SIZE {num} DELETED 1)",
            "r11 OK STATUS completed",
        ],
    );
    // UTF-8 names both ways (§5.1): the mailbox made in modified UTF-7 is
    // listed, selected and statused in UTF-8; `&` is itself.
    assert_lines(
        &c.cmd("r12 LIST \"\" \"Caf*\""),
        &[
            "* LIST (\\HasNoChildren) \".\" \"Café\"",
            "r12 OK LIST completed",
        ],
    );
    assert_lines(
        &c.cmd("r13 CREATE \"R&D\""),
        &["r13 OK [MAILBOXID ({any})] CREATE completed"],
    );
    assert_lines(
        &c.cmd("r14 STATUS \"R&D\" (MESSAGES)"),
        &["* STATUS R&D (MESSAGES 0)", "r14 OK STATUS completed"],
    );
    // §7.1: selecting another mailbox says [CLOSED] first.
    assert_lines(
        &c.cmd("r15 EXAMINE \"Café\""),
        &[
            "* OK [CLOSED] Previous mailbox closed",
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
            "* OK [PERMANENTFLAGS ()] Read-only mailbox",
            "* 0 EXISTS",
            "* LIST () \".\" \"Café\"",
            "* OK [UIDVALIDITY {num}] UIDs valid",
            "* OK [UIDNEXT 1] Predicted next UID",
            "* OK [MAILBOXID ({any})] Ok",
            "r15 OK [READ-ONLY] EXAMINE completed",
        ],
    );
    // A modified UTF-7 spelling is a plain name in rev2: none such.
    assert_lines(
        &c.cmd("r16 STATUS Caf&AOk- (MESSAGES)"),
        &["r16 NO [NONEXISTENT] {any}"],
    );
    // The other session, in rev1, sees the same mailbox in modified UTF-7.
    let mut rev1 = s.imap_login(USER, PASS);
    assert_lines(
        &rev1.cmd("a1 LIST \"\" \"R*\""),
        &[
            "* LIST (\\HasNoChildren) \".\" R&-D",
            "a1 OK LIST completed",
        ],
    );
}

/// The same commands without ENABLE: IMAP4rev1's answers.
#[test]
fn without_enable_the_answers_stay_rev1() {
    let s = server();
    let mut c = s.imap_login(USER, PASS);
    assert_lines(
        &c.cmd("a1 SELECT INBOX"),
        &[
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
            "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted",
            "* 2 EXISTS",
            "* 2 RECENT",
            "* OK [UNSEEN 2] First unseen",
            "* OK [UIDVALIDITY {num}] UIDs valid",
            "* OK [UIDNEXT 3] Predicted next UID",
            "* OK [MAILBOXID ({any})] Ok",
            "a1 OK [READ-WRITE] SELECT completed",
        ],
    );
    assert_lines(
        &c.cmd("a2 FETCH 1:* (FLAGS)"),
        &[
            "* 1 FETCH (FLAGS (\\Seen \\Recent))",
            "* 2 FETCH (FLAGS (\\Recent))",
            "a2 OK FETCH completed",
        ],
    );
    assert_lines(
        &c.cmd("a3 SEARCH UNSEEN"),
        &["* SEARCH 2", "a3 OK SEARCH completed"],
    );
    append_elsewhere(&s);
    assert_lines(
        &c.cmd("a4 NOOP"),
        &["* 3 EXISTS", "* 3 RECENT", "a4 OK NOOP completed"],
    );
    assert_lines(
        &c.cmd("a5 STATUS INBOX (MESSAGES RECENT)"),
        &[
            "* STATUS INBOX (MESSAGES 3 RECENT 0)",
            "a5 OK STATUS completed",
        ],
    );
    assert_lines(
        &c.cmd("a6 LIST \"\" \"Caf*\""),
        &[
            "* LIST (\\HasNoChildren) \".\" Caf&AOk-",
            "a6 OK LIST completed",
        ],
    );
    assert_lines(&c.cmd("a7 CREATE \"R&D\""), &["a7 NO [CANNOT] {any}"]);
    // No [CLOSED] without QRESYNC or rev2.
    let lines = c.cmd_ok("a8 EXAMINE Caf&AOk-");
    assert!(!lines.iter().any(|l| l.contains("[CLOSED]")), "{lines:?}");
    // ENABLE IMAP4rev2 with a mailbox selected is not enabled (RFC 5161
    // §3.1: before a mailbox is selected).
    assert_lines(
        &c.cmd("a9 ENABLE IMAP4rev2"),
        &["* ENABLED", "a9 OK ENABLE completed"],
    );
    assert_lines(
        &c.cmd("a10 SEARCH ALL"),
        &["* SEARCH", "a10 OK SEARCH completed"],
    );
}
