//! Invariant 4 for POP3: whatever bytes a client sends — binary junk, NULs,
//! invalid UTF-8, huge numbers, lines cut anywhere, over-long lines — in
//! either state, the server answers `-ERR` (or what the command means),
//! never panics, and the stored mail is untouched.

mod pop3_common;

use std::io::Write;

use cove_tests::message;
use pop3_common::{PASS, USER, logged_in, pop3, server};

/// xorshift64: deterministic junk.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

const WORDS: &[&str] = &[
    "USER",
    "PASS",
    "STAT",
    "LIST",
    "RETR",
    "DELE",
    "NOOP",
    "RSET",
    "TOP",
    "UIDL",
    "CAPA",
    "AUTH",
    "PLAIN",
    "STLS",
    "APOP",
    "0",
    "1",
    "2",
    "-1",
    "18446744073709551616",
    "*",
    "=",
    "AGEAYg==",
    " ",
    "\t",
    "\0",
    "\u{ff}",
    "é",
    ".",
    "..",
    "\r",
    "\r\n",
    "\n",
];

fn junk(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..(rng.next() % 12) {
        match rng.next() % 4 {
            0 => out.extend((0..rng.next() % 20).map(|_| rng.next() as u8)),
            1 => out.extend(std::iter::repeat_n(b'A', (rng.next() % 3000) as usize)),
            _ => {
                out.extend_from_slice(WORDS[(rng.next() as usize) % WORDS.len()].as_bytes());
                out.push(b' ');
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[test]
fn garbage_never_panics_and_changes_nothing() {
    let s = server("max_bad_commands = 1000\n");
    for i in 0..3 {
        s.deliver_to(USER, &message(&format!("g{i}"), "body\r\n.dot"));
    }
    let before: Vec<_> = s
        .maildir_files(USER, "INBOX")
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    for round in 0..40 {
        // Half the rounds in TRANSACTION, half in AUTHORIZATION.
        let mut c = if round % 2 == 0 {
            logged_in(&s)
        } else {
            pop3(&s)
        };
        let mut bytes = Vec::new();
        for _ in 0..30 {
            bytes.extend(junk(&mut rng));
        }
        // Never QUIT: a session that ends without QUIT deletes nothing,
        // whatever DELEs the junk held.
        let cut = bytes.len() - (rng.next() as usize % 3);
        let stream = c.get_mut();
        let _ = stream.write_all(&bytes[..cut]);
        let _ = stream.flush();
        // Answers come back until the junk is used up (or the server
        // closed after too many bad commands).
        // (The junk may end inside a line: end it first. A line cut
        // short, or a continuation AUTH waits for, takes it.)
        c.send("");
        c.send("NOOP");
        c.send("NOOP");
        while let Ok(Some(l)) = c.try_raw_line() {
            assert!(
                l.starts_with(b"+OK") || l.starts_with(b"-ERR") || l.ends_with(b"\r\n"),
                "{l:?}"
            );
            if l == b"+OK\r\n" || l == b"-ERR Log in first\r\n" {
                break;
            }
        }
    }
    // The server lives, serves, and the mail is as it was.
    let mut c = logged_in(&s);
    assert!(c.cmd("STAT").starts_with("+OK 3 "));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let after: Vec<_> = s
        .maildir_files(USER, "INBOX")
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert_eq!(before, after);
    assert!(!s.logged("panicked"), "{}", s.logs().join("\n"));
    let _ = PASS;
}
