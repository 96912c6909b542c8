//! POP3 between sessions: the maildrop lock (`-ERR [IN-USE]`, released
//! however a session ends), a dropped connection deleting nothing, IMAP and
//! POP3 on one mailbox at once, messages stored with bare LF (by another
//! program) sent with CRLF and dot-stuffing, and pipelined RETRs answered
//! in order whichever way each message is read.

mod pop3_common;

use std::io::{Read, Write};
use std::time::Duration;

use cove_tests::{IMAP_CONFIG, eventually, message};
use pop3_common::{PASS, POP3_CONFIG, Pop3, USER, logged_in, pop3, pop3s, server};

// RFC 1939 §8, RFC 2449 §8.1.2: one session per maildrop; the second gets
// [IN-USE]; the lock goes with the first session, even when its
// connection just drops.
#[test]
fn second_session_is_refused_until_the_first_ends() {
    let s = server("");
    s.deliver_to(USER, &message("a", "x"));
    let first = logged_in(&s);
    let mut second = pop3(&s);
    assert_eq!(
        second.cmd(&format!("USER {USER}")),
        "+OK Send your password"
    );
    assert_eq!(
        second.cmd(&format!("PASS {PASS}")),
        "-ERR [IN-USE] Mailbox is locked by another POP3 session"
    );
    // Still in AUTHORIZATION: it may try again.
    drop(first); // the connection drops, no QUIT
    let ok = eventually(Duration::from_secs(10), || {
        second.cmd(&format!("USER {USER}"));
        let r = second.cmd(&format!("PASS {PASS}"));
        r.starts_with("+OK Logged in").then_some(r)
    });
    let ok = ok.expect("the lock is released when the connection drops");
    assert!(ok.starts_with("+OK Logged in, 1 messages ("), "{ok}");
    assert_eq!(second.cmd("STAT").split(' ').nth(1), Some("1"));
    // After QUIT, too.
    assert!(second.cmd("QUIT").starts_with("+OK"));
    let mut third = logged_in(&s);
    assert!(third.cmd("QUIT").starts_with("+OK"));
}

// RFC 1939 §6: only QUIT enters UPDATE; a connection that drops after DELE
// deletes nothing.
#[test]
fn a_dropped_connection_deletes_nothing() {
    let s = server("");
    s.deliver_to(USER, &message("a", "x"));
    s.deliver_to(USER, &message("b", "y"));
    let mut c = logged_in(&s);
    assert_eq!(c.cmd("DELE 1"), "+OK Message 1 deleted");
    assert_eq!(c.cmd("DELE 2"), "+OK Message 2 deleted");
    drop(c);
    let mut c = eventually(Duration::from_secs(10), || {
        let mut c = pop3(&s);
        c.cmd(&format!("USER {USER}"));
        c.cmd(&format!("PASS {PASS}"))
            .starts_with("+OK")
            .then_some(c)
    })
    .expect("the lock is released");
    assert!(c.cmd("STAT").starts_with("+OK 2 "));
    assert_eq!(s.maildir_files(USER, "INBOX").len(), 2);
}

// IMAP and POP3 on one mailbox at once: the POP3 lock does not block IMAP,
// and a DELE committed by POP3's QUIT reaches the IMAP session as EXPUNGE.
#[test]
fn imap_sees_pop3_deletions_as_expunge() {
    let s = cove_tests::TestServer::start(&format!("{IMAP_CONFIG}{POP3_CONFIG}"));
    s.add_user_with_password(USER, PASS);
    for id in ["a", "b", "c"] {
        s.deliver_to(USER, &message(id, "x"));
    }
    let mut p = logged_in(&s);
    let mut imap = s.imap_login(USER, PASS);
    let sel = imap.cmd_ok("S1 SELECT INBOX");
    assert!(sel.iter().any(|l| l == "* 3 EXISTS"), "{sel:?}");
    assert_eq!(p.cmd("DELE 2"), "+OK Message 2 deleted");
    // Marked only: IMAP sees nothing yet.
    assert_eq!(imap.cmd_ok("N1 NOOP"), ["N1 OK NOOP completed"]);
    assert_eq!(
        p.cmd("QUIT"),
        "+OK cove.test cove POP3 server signing off (2 messages left)"
    );
    let got = eventually(Duration::from_secs(10), || {
        let r = imap.cmd_ok("N2 NOOP");
        (r.len() > 1).then_some(r)
    })
    .expect("an EXPUNGE arrives");
    assert_eq!(got, ["* 2 EXPUNGE", "N2 OK NOOP completed"]);
    let f = imap.cmd_ok("F1 FETCH 1:* (ENVELOPE)");
    assert_eq!(f.len(), 3, "{f:?}");
    assert!(
        f[0].contains("\"test a\"") && f[1].contains("\"test c\""),
        "{f:?}"
    );

    // IMAP changes flags (the file is renamed) and expunges while a POP3
    // session holds its maildrop: RETR follows the rename, and a message
    // gone says so.
    let mut p = logged_in(&s);
    imap.cmd_ok("T1 STORE 1 +FLAGS (\\Seen)");
    imap.cmd_ok("T2 STORE 2 +FLAGS (\\Deleted)");
    imap.cmd_ok("T3 EXPUNGE");
    assert!(p.cmd("RETR 1").ends_with(" octets"));
    assert!(String::from_utf8_lossy(&p.raw_body()).contains("Subject: test a"));
    assert_eq!(
        p.cmd("RETR 2"),
        "-ERR Message 2 was removed by another session"
    );
    assert_eq!(p.cmd("DELE 2"), "+OK Message 2 deleted");
    assert!(p.cmd("QUIT").starts_with("+OK"));
    let f = imap.cmd_ok("F2 FETCH 1:* (FLAGS)");
    assert_eq!(f.len(), 2, "{f:?}");
}

// A message RETR sent gets \Seen at QUIT (not after TOP, not when the
// connection drops without QUIT), so that IMAP shows POP3-read mail as
// read, as Dovecot does by default.
#[test]
fn retr_marks_seen_at_quit() {
    let s = cove_tests::TestServer::start(&format!("{IMAP_CONFIG}{POP3_CONFIG}"));
    s.add_user_with_password(USER, PASS);
    for id in ["a", "b", "c", "d"] {
        s.deliver_to(USER, &message(id, "x"));
    }
    // Dropped without QUIT: nothing changes.
    let mut p = logged_in(&s);
    assert!(p.cmd("RETR 4").ends_with(" octets"));
    p.raw_body();
    drop(p);
    let mut p = eventually(Duration::from_secs(10), || {
        let mut p = pop3(&s);
        p.cmd(&format!("USER {USER}"));
        p.cmd(&format!("PASS {PASS}"))
            .starts_with("+OK")
            .then_some(p)
    })
    .expect("the maildrop is free again");
    assert!(p.cmd("RETR 1").ends_with(" octets"));
    p.raw_body();
    assert!(p.cmd("TOP 2 0").starts_with("+OK"));
    p.raw_body();
    assert!(p.cmd("RETR 3").ends_with(" octets"));
    p.raw_body();
    assert_eq!(p.cmd("DELE 3"), "+OK Message 3 deleted");
    assert!(p.cmd("QUIT").starts_with("+OK"));
    let mut imap = s.imap_login(USER, PASS);
    imap.cmd_ok("S1 SELECT INBOX");
    let f = imap.cmd_ok("F1 FETCH 1:* (FLAGS)");
    assert_eq!(f.len(), 4, "{f:?}");
    assert!(f[0].contains("\\Seen"), "RETR then QUIT: {f:?}");
    assert!(!f[1].contains("\\Seen"), "TOP only: {f:?}");
    assert!(!f[2].contains("\\Seen"), "dropped connection: {f:?}");
}

// Messages another program put into the Maildir with bare LF line ends:
// LIST and STAT count the CRLF form, RETR and TOP send it, dot-stuffed.
// The size is what the client receives once it undoes the stuffing: the
// last line, stored without a line end, is sent with one and counted.
#[test]
fn bare_lf_messages_are_sent_with_crlf_and_dot_stuffing() {
    let s = server("");
    let stored = "From: a@example.org\nSubject: lf only\n\nline one\n.starts with a dot\n..two dots\n.\nlast line without newline";
    let crlf = format!("{}\r\n", stored.replace('\n', "\r\n"));
    let new = s.folder(USER, "INBOX").join("new");
    std::fs::write(new.join("1700000000.M1P1.elsewhere"), stored).unwrap();
    let mut c = logged_in(&s);
    assert_eq!(c.cmd("STAT"), format!("+OK 1 {}", crlf.len()));
    assert_eq!(c.cmd("LIST 1"), format!("+OK 1 {}", crlf.len()));
    assert_eq!(c.cmd("RETR 1"), format!("+OK {} octets", crlf.len()));
    let body = String::from_utf8(c.raw_body()).unwrap();
    assert_eq!(
        body,
        "From: a@example.org\r\nSubject: lf only\r\n\r\nline one\r\n..starts with a dot\r\n...two dots\r\n..\r\nlast line without newline\r\n.\r\n"
    );
    assert_eq!(c.cmd("TOP 1 2"), "+OK Top of message follows");
    assert_eq!(
        String::from_utf8(c.raw_body()).unwrap(),
        "From: a@example.org\r\nSubject: lf only\r\n\r\nline one\r\n..starts with a dot\r\n.\r\n"
    );
    // The size is cached: a second session gives the same answer.
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let mut c = logged_in(&s);
    assert_eq!(c.cmd("LIST 1"), format!("+OK 1 {}", crlf.len()));
}

/// A multi-line answer as the client keeps it: without the terminator and
/// the dot-stuffing (RFC 1939 §3).
fn unstuffed(wire: &[u8]) -> Vec<u8> {
    let body = wire.strip_suffix(b".\r\n").expect("terminator");
    let mut out = Vec::new();
    for line in body.split_inclusive(|b| *b == b'\n') {
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    out
}

/// RETR 1-4, TOP 2 1, RETR 1 and RETR 3 in one write; each answer whole,
/// in order, with the size LIST gives.
fn pipelined_retrs<S: Read + Write>(c: &mut Pop3<S>, stored: &[String]) {
    c.send_raw(b"RETR 1\r\nRETR 2\r\nRETR 3\r\nRETR 4\r\nTOP 2 1\r\nRETR 1\r\nRETR 3\r\n");
    for n in [1, 2, 3, 4] {
        let want = stored[n - 1].as_bytes();
        assert_eq!(c.line(), format!("+OK {} octets", want.len()), "RETR {n}");
        assert_eq!(unstuffed(&c.raw_body()), want, "RETR {n}");
    }
    assert_eq!(c.line(), "+OK Top of message follows");
    let top = unstuffed(&c.raw_body());
    let header_end = stored[1].find("\r\n\r\n").expect("header") + 4;
    let first_line_end = header_end + stored[1][header_end..].find("\r\n").expect("line") + 2;
    assert_eq!(top, &stored[1].as_bytes()[..first_line_end], "TOP 2 1");
    for n in [1, 3] {
        let want = stored[n - 1].as_bytes();
        assert_eq!(
            c.line(),
            format!("+OK {} octets", want.len()),
            "RETR {n} again"
        );
        assert_eq!(unstuffed(&c.raw_body()), want, "RETR {n} again");
    }
}

// RETRs pipelined in one write are answered whole and in order however
// each message is read: small ones from the page cache on the session's
// task (sent as stored, or dot-stuffed), one over 256 KiB streamed from
// the blocking pool, and one whose file IMAP renamed after login (found
// again on the blocking pool) — over plain TCP and over TLS.
#[test]
fn pipelined_retrs_mix_cached_and_streamed_messages() {
    let s = cove_tests::TestServer::start(&format!("{IMAP_CONFIG}{POP3_CONFIG}"));
    s.add_user_with_password(USER, PASS);
    let line = "x".repeat(998);
    let stored = [
        message("one", "small"),
        message("big", &format!("{line}\r\n.{line}\r\n").repeat(200)),
        message("dots", ".starts with a dot\r\n..two\r\n.\r\nend"),
        message("four", "renamed after login"),
    ];
    for m in &stored {
        s.deliver_to(USER, m);
    }
    // What is stored (LMTP adds trace headers): CRLF files, so POP3 sends
    // them as they are, but for the dot-stuffing.
    let inbox = s.folder(USER, "INBOX");
    let files: Vec<String> = ["new", "cur"]
        .iter()
        .flat_map(|d| std::fs::read_dir(inbox.join(d)).expect("read_dir"))
        .map(|e| std::fs::read_to_string(e.expect("entry").path()).expect("read"))
        .collect();
    let stored = stored.map(|m| {
        let subject = m
            .lines()
            .find(|l| l.starts_with("Subject:"))
            .expect("subject");
        let found: Vec<&String> = files.iter().filter(|f| f.contains(subject)).collect();
        assert_eq!(found.len(), 1, "{subject}");
        found[0].clone()
    });
    assert!(stored[1].len() > 256 * 1024);
    let mut imap = s.imap_login(USER, PASS);
    imap.cmd_ok("S1 SELECT INBOX");

    let mut c = logged_in(&s);
    imap.cmd_ok("T1 STORE 4 +FLAGS (\\Flagged)");
    pipelined_retrs(&mut c, &stored);
    assert!(c.cmd("QUIT").starts_with("+OK"));

    let mut c = pop3s(&s);
    c.login(USER, PASS);
    imap.cmd_ok("T2 STORE 4 -FLAGS (\\Flagged)");
    pipelined_retrs(&mut c, &stored);
    assert!(c.cmd("QUIT").starts_with("+OK"));
}
