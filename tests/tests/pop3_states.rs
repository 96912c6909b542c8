//! POP3 states and commands (RFC 1939 §3–§7, RFC 2449 CAPA, RFC 5034 AUTH):
//! each command in each state, with the exact lines the server sends.

mod pop3_common;

use std::time::Duration;

use cove_tests::{base64, eventually, message};
use pop3_common::{PASS, Pop3, USER, guid_of_file, logged_in, pop3, server};

/// The CAPA answer before login on a plain loopback connection.
const CAPA_AUTHORIZATION: &[&str] = &[
    "+OK Capability list follows",
    "TOP",
    "UIDL",
    "RESP-CODES",
    "AUTH-RESP-CODE",
    "PIPELINING",
    "USER",
    "SASL PLAIN",
    "STLS",
    "EXPIRE NEVER",
    "IMPLEMENTATION cove",
    ".",
];

/// The CAPA answer in the TRANSACTION state.
const CAPA_TRANSACTION: &[&str] = &[
    "+OK Capability list follows",
    "TOP",
    "UIDL",
    "RESP-CODES",
    "AUTH-RESP-CODE",
    "PIPELINING",
    "EXPIRE NEVER",
    "IMPLEMENTATION cove",
    ".",
];

// RFC 1939 §4: the AUTHORIZATION state takes USER, PASS, APOP, QUIT (and
// RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH); every TRANSACTION command
// is refused.
#[test]
fn authorization_state() {
    let s = server("");
    let mut c = pop3(&s);
    assert_eq!(c.greeting, "+OK cove.test cove POP3 server ready");
    assert_eq!(c.multi("CAPA"), CAPA_AUTHORIZATION);
    for cmd in [
        "STAT", "LIST", "LIST 1", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 1", "UIDL", "UIDL 1",
    ] {
        assert_eq!(c.cmd(cmd), "-ERR Log in first", "{cmd}");
    }
    assert_eq!(c.cmd("PASS pw"), "-ERR No user name given (USER first)");
    assert_eq!(
        c.cmd("APOP p@x.org 0123456789abcdef"),
        "-ERR APOP is not supported"
    );
    assert_eq!(c.cmd("FROB"), "-ERR Unknown command");
    assert_eq!(c.cmd("USER"), "-ERR USER needs one name");
    // A wrong password: [AUTH], and USER must come again.
    assert_eq!(c.cmd(&format!("USER {USER}")), "+OK Send your password");
    assert_eq!(c.cmd("PASS wrong"), "-ERR [AUTH] Authentication failed");
    assert_eq!(
        c.cmd(&format!("PASS {PASS}")),
        "-ERR No user name given (USER first)"
    );
    // An unknown user gets the same answer.
    assert_eq!(c.cmd("USER nobody@x.org"), "+OK Send your password");
    assert_eq!(c.cmd("PASS pw"), "-ERR [AUTH] Authentication failed");
    // The log line is written before the answer, but read from the
    // server's stderr by another thread: wait for it.
    let logged = eventually(Duration::from_secs(10), || {
        s.logged("pop3 login failed user=nobody@x.org peer=127.0.0.1:")
            .then_some(())
    });
    assert!(logged.is_some());
    // QUIT in AUTHORIZATION: no UPDATE state.
    assert_eq!(c.cmd("QUIT"), "+OK cove.test cove POP3 server signing off");
    assert!(c.closed());
}

// RFC 1939 §5–§7: STAT, LIST, UIDL, RETR, TOP, DELE, NOOP, RSET in the
// TRANSACTION state, then QUIT's UPDATE.
#[test]
fn transaction_state_and_update() {
    let s = server("");
    let one = message("one", "first body\r\n.dotted line");
    let two = message("two", "second body");
    s.deliver_to(USER, &one);
    s.deliver_to(USER, &two);
    let files = s.maildir_files(USER, "INBOX");
    assert_eq!(files.len(), 2);
    // The index orders by UID; delivery order is UID order, so match by content.
    let stored: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let (i1, i2) = if String::from_utf8_lossy(&stored[0]).contains("test one") {
        (0, 1)
    } else {
        (1, 0)
    };
    let (size1, size2) = (stored[i1].len(), stored[i2].len());
    let (uid1, uid2) = (guid_of_file(&files[i1]), guid_of_file(&files[i2]));
    let total = size1 + size2;

    let mut c = pop3(&s);
    assert_eq!(c.cmd(&format!("USER {USER}")), "+OK Send your password");
    assert_eq!(
        c.cmd(&format!("PASS {PASS}")),
        format!("+OK Logged in, 2 messages ({total} octets)")
    );
    assert_eq!(c.multi("CAPA"), CAPA_TRANSACTION);
    assert_eq!(c.cmd("STAT"), format!("+OK 2 {total}"));
    assert_eq!(
        c.multi("LIST"),
        [
            format!("+OK 2 messages ({total} octets)"),
            format!("1 {size1}"),
            format!("2 {size2}"),
            ".".into()
        ]
    );
    assert_eq!(c.cmd("LIST 2"), format!("+OK 2 {size2}"));
    assert_eq!(c.cmd("LIST 3"), "-ERR No such message");
    assert_eq!(c.cmd("LIST 0"), "-ERR No such message");
    assert_eq!(c.cmd("LIST x"), "-ERR Invalid message number");
    assert_eq!(
        c.multi("UIDL"),
        [
            "+OK Unique-ID listing follows".to_string(),
            format!("1 {uid1}"),
            format!("2 {uid2}"),
            ".".into()
        ]
    );
    assert_eq!(c.cmd("UIDL 1"), format!("+OK 1 {uid1}"));
    assert_eq!(c.cmd("UIDL 9"), "-ERR No such message");

    // RETR: the message, dot-stuffed, then ".".
    assert_eq!(c.cmd("RETR 1"), format!("+OK {size1} octets"));
    let body = c.raw_body();
    let stored1 = String::from_utf8_lossy(&stored[i1]).into_owned();
    assert!(stored1.ends_with(&one), "{stored1:?}");
    let want = format!("{}.\r\n", stored1.replace("\r\n.dotted", "\r\n..dotted"));
    assert_eq!(String::from_utf8_lossy(&body), want);
    assert_eq!(c.cmd("RETR 3"), "-ERR No such message");
    assert_eq!(c.cmd("RETR"), "-ERR Message number required");

    // TOP: the header, the blank line, n body lines.
    assert_eq!(
        c.multi("TOP 1 0"),
        [
            "+OK Top of message follows",
            "Return-Path: <sender@example.org>",
            "From: sender@example.org",
            "To: rcpt@x.org",
            "Subject: test one",
            "Message-ID: <one@cove.test>",
            "",
            "."
        ]
    );
    assert_eq!(
        c.multi("TOP 1 1"),
        [
            "+OK Top of message follows",
            "Return-Path: <sender@example.org>",
            "From: sender@example.org",
            "To: rcpt@x.org",
            "Subject: test one",
            "Message-ID: <one@cove.test>",
            "",
            "first body",
            "."
        ]
    );
    assert_eq!(
        c.cmd("TOP 1"),
        "-ERR TOP needs a message number and a line count"
    );
    assert_eq!(c.cmd("TOP 1 x"), "-ERR Invalid number of lines");

    // DELE marks; a marked message is not there for any command.
    assert_eq!(c.cmd("DELE 1"), "+OK Message 1 deleted");
    assert_eq!(c.cmd("DELE 1"), "-ERR Message 1 is deleted");
    assert_eq!(c.cmd("RETR 1"), "-ERR Message 1 is deleted");
    assert_eq!(c.cmd("LIST 1"), "-ERR Message 1 is deleted");
    assert_eq!(c.cmd("UIDL 1"), "-ERR Message 1 is deleted");
    assert_eq!(c.cmd("TOP 1 0"), "-ERR Message 1 is deleted");
    assert_eq!(c.cmd("STAT"), format!("+OK 1 {size2}"));
    assert_eq!(
        c.multi("LIST"),
        [
            format!("+OK 1 messages ({size2} octets)"),
            format!("2 {size2}"),
            ".".into()
        ]
    );
    assert_eq!(
        c.multi("UIDL"),
        [
            "+OK Unique-ID listing follows".to_string(),
            format!("2 {uid2}"),
            ".".into()
        ]
    );
    // RSET unmarks.
    assert_eq!(
        c.cmd("RSET"),
        format!("+OK Maildrop has 2 messages ({total} octets)")
    );
    assert_eq!(c.cmd("STAT"), format!("+OK 2 {total}"));
    assert_eq!(c.cmd("NOOP"), "+OK");
    // AUTHORIZATION commands are over.
    assert_eq!(c.cmd("USER x"), "-ERR Already logged in");
    assert_eq!(c.cmd("PASS x"), "-ERR Already logged in");
    assert_eq!(c.cmd("AUTH PLAIN"), "-ERR Already logged in");
    assert_eq!(c.cmd("STLS"), "-ERR Already logged in");
    assert_eq!(c.cmd("APOP a b"), "-ERR Already logged in");
    // UPDATE: QUIT removes what is marked.
    assert_eq!(c.cmd("DELE 1"), "+OK Message 1 deleted");
    assert_eq!(
        c.cmd("QUIT"),
        "+OK cove.test cove POP3 server signing off (1 message left)"
    );
    assert!(c.closed());
    assert_eq!(s.maildir_files(USER, "INBOX"), vec![files[i2].clone()]);

    let mut c = logged_in(&s);
    assert_eq!(c.cmd("STAT"), format!("+OK 1 {size2}"));
    assert_eq!(c.cmd("UIDL 1"), format!("+OK 1 {uid2}"));
    assert_eq!(c.cmd("DELE 1"), "+OK Message 1 deleted");
    assert_eq!(
        c.cmd("QUIT"),
        "+OK cove.test cove POP3 server signing off (maildrop empty)"
    );
    assert!(s.maildir_files(USER, "INBOX").is_empty());
}

// RFC 5034: AUTH PLAIN with an initial response, with a continuation,
// cancelled; `AUTH` alone lists the mechanisms.
#[test]
fn auth_plain() {
    let s = server("");
    let mut c = pop3(&s);
    assert_eq!(c.multi("AUTH"), ["+OK Mechanisms follow", "PLAIN", "."]);
    assert_eq!(
        c.cmd("AUTH CRAM-MD5"),
        "-ERR Unsupported authentication mechanism"
    );
    assert_eq!(c.cmd("AUTH PLAIN"), "+ ");
    assert_eq!(c.cmd("*"), "-ERR Authentication cancelled");
    assert_eq!(c.cmd("AUTH PLAIN"), "+ ");
    assert_eq!(c.cmd("!!!"), "-ERR Invalid base64");
    let wrong = base64(format!("\0{USER}\0nope").as_bytes());
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {wrong}")),
        "-ERR [AUTH] Authentication failed"
    );
    let other = base64(format!("someone@x.org\0{USER}\0{PASS}").as_bytes());
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {other}")),
        "-ERR [AUTH] Logging in as another user is not allowed"
    );
    assert_eq!(c.cmd("AUTH PLAIN ="), "-ERR Malformed PLAIN response");
    let good = base64(format!("\0{USER}\0{PASS}").as_bytes());
    assert_eq!(c.cmd("AUTH PLAIN"), "+ ");
    assert_eq!(c.cmd(&good), "+OK Logged in, 0 messages (0 octets)");
    assert_eq!(
        c.cmd("QUIT"),
        "+OK cove.test cove POP3 server signing off (maildrop empty)"
    );

    let mut c = pop3(&s);
    let with_authzid = base64(format!("{USER}\0{USER}\0{PASS}").as_bytes());
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {with_authzid}")),
        "+OK Logged in, 0 messages (0 octets)"
    );
}

// RFC 2449 PIPELINING: commands sent at once are answered in order.
#[test]
fn pipelined_commands_answer_in_order() {
    let s = server("");
    for i in 0..5 {
        s.deliver_to(USER, &message(&format!("m{i}"), "body"));
    }
    let mut c = pop3(&s);
    c.send_raw(
        format!("USER {USER}\r\nPASS {PASS}\r\nSTAT\r\nRETR 1\r\nRETR 2\r\nTOP 3 0\r\nRETR 9\r\nRETR 4\r\nDELE 5\r\nNOOP\r\nQUIT\r\n")
            .as_bytes(),
    );
    assert_eq!(c.line(), "+OK Send your password");
    assert!(c.line().starts_with("+OK Logged in, 5 messages"));
    assert!(c.line().starts_with("+OK 5 "));
    for n in [1, 2] {
        assert!(c.line().ends_with(" octets"));
        let body = c.raw_body();
        assert!(String::from_utf8_lossy(&body).contains(&format!("Subject: test m{}", n - 1)));
    }
    assert_eq!(c.line(), "+OK Top of message follows");
    assert!(
        String::from_utf8_lossy(&c.raw_body()).ends_with("Message-ID: <m2@cove.test>\r\n\r\n.\r\n")
    );
    assert_eq!(c.line(), "-ERR No such message");
    assert!(c.line().ends_with(" octets"));
    assert!(String::from_utf8_lossy(&c.raw_body()).contains("Subject: test m3"));
    assert_eq!(c.line(), "+OK Message 5 deleted");
    assert_eq!(c.line(), "+OK");
    assert_eq!(
        c.line(),
        "+OK cove.test cove POP3 server signing off (4 messages left)"
    );
    assert!(c.closed());
}

// Limits: bad commands in a row close the connection; an over-long line is
// refused and counted.
#[test]
fn bad_commands_and_long_lines() {
    let s = server("max_bad_commands = 3\nmax_line_length = 300\n");
    let mut c = pop3(&s);
    assert_eq!(c.cmd("FROB"), "-ERR Unknown command");
    // A command of the wrong state is not a bad command; a good one resets
    // the count.
    assert_eq!(c.cmd("NOOP"), "-ERR Log in first");
    assert_eq!(c.multi("CAPA")[0], "+OK Capability list follows");
    assert_eq!(c.cmd(&"X".repeat(400)), "-ERR Line too long");
    assert_eq!(c.cmd("RETR one"), "-ERR Invalid message number");
    assert_eq!(c.cmd("FROB"), "-ERR Unknown command");
    assert_eq!(
        c.line(),
        "-ERR Too many bad commands, closing the connection"
    );
    assert!(c.closed());
    // The server goes on.
    let mut c: Pop3<_> = logged_in(&s);
    assert_eq!(c.cmd("STAT"), "+OK 0 0");
}
