//! POP3 between sessions: the maildrop lock (`-ERR [IN-USE]`, released
//! however a session ends), a dropped connection deleting nothing, IMAP and
//! POP3 on one mailbox at once, and messages stored with bare LF (by
//! another program) sent with CRLF and dot-stuffing.

mod pop3_common;

use std::time::Duration;

use cove_tests::{IMAP_CONFIG, eventually, message};
use pop3_common::{PASS, POP3_CONFIG, USER, logged_in, pop3, server};

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
#[test]
fn bare_lf_messages_are_sent_with_crlf_and_dot_stuffing() {
    let s = server("");
    let stored = "From: a@example.org\nSubject: lf only\n\nline one\n.starts with a dot\n..two dots\n.\nlast line without newline";
    let crlf = stored.replace('\n', "\r\n");
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
