//! RFC 3501 §6.4.4 SEARCH BODY and TEXT answered through the full-text index
//! (`fts.sqlite` in the user's home): the answers must be exactly those of
//! reading every message — case-insensitive substrings of the decoded text,
//! needles shorter than a trigram, messages that arrive after the index was
//! built, content shared by two mailboxes, expunged messages, and an index
//! that is missing or broken.

use std::net::TcpStream;

use cove_tests::{IMAP_CONFIG, Imap, TestServer, assert_lines};

const USER: &str = "a@x.org";
const PASS: &str = "pw";

/// Quoted-printable body: "Kumquat" is split by a soft line break and
/// written in mixed case; the decoded text is "a KumQuat tart, café".
const QP: &str = "From: alice@example.org\r\n\
Subject: Dessert\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
a KumQ=\r\nuat tart, caf=C3=A9\r\n";

/// The needle only in a header.
const HEADER_ONLY: &str = "From: bob@example.org\r\n\
Subject: Kumquat season\r\n\
\r\n\
Nothing about fruit here.\r\n";

/// Base64 body: the raw bytes do not contain the word, the decoded do.
const BASE64: &str = "From: carol@example.org\r\n\
Subject: Encoded\r\n\
Content-Type: text/plain\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
YSBrdW1xdWF0IGphbQ==\r\n";

/// Neither.
const PLAIN: &str = "From: dave@example.org\r\n\
Subject: Lunch\r\n\
\r\n\
Shall we meet at noon? ku\r\n";

fn server() -> TestServer {
    let s = TestServer::start(IMAP_CONFIG);
    s.add_user_with_password(USER, PASS);
    s
}

fn append(c: &mut Imap<TcpStream>, mailbox: &str, msg: &str) {
    let r = c.append("ap", mailbox, "", msg.as_bytes());
    assert!(r.last().is_some_and(|l| l.starts_with("ap OK")), "{r:?}");
}

#[track_caller]
fn search(c: &mut Imap<TcpStream>, key: &str, hits: &str) {
    assert_lines(
        &c.cmd(&format!("s UID SEARCH {key}")),
        &[&format!("* SEARCH{hits}"), "s OK SEARCH completed"],
    );
}

/// Messages 1-4 (UIDs 1-4): QP, HEADER_ONLY, BASE64, PLAIN; INBOX selected.
fn selected_with_mail(s: &TestServer) -> Imap<TcpStream> {
    let mut c = s.imap_login(USER, PASS);
    for m in [QP, HEADER_ONLY, BASE64, PLAIN] {
        append(&mut c, "INBOX", m);
    }
    c.cmd_ok("x SELECT INBOX");
    c
}

// Case-insensitive substrings of the decoded body (BODY) and of the body or
// any header (TEXT), short needles, and keys combined with AND, OR and NOT.
#[test]
fn body_and_text_match_substrings_of_the_decoded_text() {
    let s = server();
    let mut c = selected_with_mail(&s);
    let cases: &[(&str, &str)] = &[
        ("BODY kumquat", " 1 3"),
        ("BODY KUMQUAT", " 1 3"),
        ("BODY umqu", " 1 3"),
        ("BODY \"kumquat tart\"", " 1"),
        ("BODY \"t, café\"", " 1"),
        ("BODY \"CAFÉ\"", " 1"),
        ("BODY kumquats", ""),
        ("BODY \"kumquat  tart\"", ""),
        ("TEXT kumquat", " 1 2 3"),
        ("TEXT SEASON", " 2"),
        ("BODY season", ""),
        // Under three characters: no trigram; every message is read.
        ("BODY ku", " 1 3 4"),
        ("BODY k", " 1 3 4"),
        ("BODY \"\"", " 1 2 3 4"),
        ("TEXT ku", " 1 2 3 4"),
        ("NOT BODY kumquat", " 2 4"),
        ("OR BODY kumquat BODY noon", " 1 3 4"),
        ("OR BODY kumquat FROM dave", " 1 3 4"),
        ("BODY kumquat FROM carol", " 3"),
        ("BODY kumquat BODY jam", " 3"),
        ("UID 2:4 TEXT kumquat", " 2 3"),
    ];
    for (key, hits) in cases {
        search(&mut c, key, hits);
    }
    assert!(
        s.home(USER).join("fts.sqlite").exists(),
        "the index was built"
    );
}

// The index is built by the first search; messages that arrive later (by
// APPEND or LMTP), and flag changes, are seen by the next one.
#[test]
fn messages_added_after_the_index_was_built_are_found() {
    let s = server();
    let mut c = selected_with_mail(&s);
    search(&mut c, "BODY kumquat", " 1 3");
    let mut other = s.imap_login(USER, PASS);
    append(
        &mut other,
        "INBOX",
        "Subject: more\r\n\r\nKUMQUAT chutney\r\n",
    );
    s.deliver_to(USER, "Subject: by lmtp\r\n\r\nthe kumquat tree\r\n");
    c.cmd_ok("n NOOP");
    search(&mut c, "BODY kumquat", " 1 3 5 6");
    search(&mut c, "BODY chutney", " 5");
    c.cmd_ok("f UID STORE 1:* +FLAGS.SILENT (\\Seen)");
    search(&mut c, "BODY kumquat", " 1 3 5 6");
    search(&mut c, "BODY kumquat UNSEEN", "");
    // The same bytes delivered again: one content (dedup), already in the
    // index, now under two UIDs.
    s.deliver_to(USER, "Subject: by lmtp\r\n\r\nthe kumquat tree\r\n");
    c.cmd_ok("n NOOP");
    search(&mut c, "BODY \"kumquat tree\"", " 6 7");
}

// COPY shares the content (one index entry); each mailbox answers with its
// own messages, and an expunged message is no longer found even though its
// content stays in the index.
#[test]
fn shared_content_and_expunged_messages() {
    let s = server();
    let mut c = selected_with_mail(&s);
    c.cmd_ok("c CREATE Work");
    search(&mut c, "BODY kumquat", " 1 3");
    c.cmd_ok("c UID COPY 1:3 Work");
    c.cmd_ok("w SELECT Work");
    search(&mut c, "BODY kumquat", " 1 3");
    search(&mut c, "TEXT kumquat", " 1 2 3");
    // Expunge the QP copy in Work: INBOX still has it.
    c.cmd_ok("d UID STORE 1 +FLAGS.SILENT (\\Deleted)");
    c.cmd_ok("e EXPUNGE");
    search(&mut c, "BODY kumquat", " 3");
    c.cmd_ok("i SELECT INBOX");
    search(&mut c, "BODY kumquat", " 1 3");
    c.cmd_ok("d UID STORE 1:3 +FLAGS.SILENT (\\Deleted)");
    c.cmd_ok("e EXPUNGE");
    search(&mut c, "BODY kumquat", "");
    search(&mut c, "TEXT kumquat", "");
    // The same content delivered again is found under its new UID.
    append(&mut c, "INBOX", QP);
    c.cmd_ok("n NOOP");
    search(&mut c, "BODY kumquat", " 5");
}

// An expunge by another session: the message keeps its number until this
// session may be told, and is not reported meanwhile by a body search any
// more than by a scan.
#[test]
fn expunged_by_another_session() {
    let s = server();
    let mut c = selected_with_mail(&s);
    search(&mut c, "BODY kumquat", " 1 3");
    let mut other = s.imap_login(USER, PASS);
    other.cmd_ok("o SELECT INBOX");
    other.cmd_ok("d UID STORE 3 +FLAGS.SILENT (\\Deleted)");
    other.cmd_ok("e EXPUNGE");
    search(&mut c, "BODY kumquat", " 1");
}

// A missing index is built again; an unreadable one is not used, and the
// search reads every message instead.
#[test]
fn missing_or_broken_index() {
    let s = server();
    let mut c = selected_with_mail(&s);
    search(&mut c, "BODY kumquat", " 1 3");
    let fts = s.home(USER).join("fts.sqlite");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", fts.display()));
    }
    search(&mut c, "BODY kumquat", " 1 3");
    assert!(fts.exists());
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", fts.display()));
    }
    std::fs::write(&fts, vec![0x5a; 8192]).unwrap();
    search(&mut c, "BODY kumquat", " 1 3");
    search(&mut c, "TEXT season", " 2");
}
