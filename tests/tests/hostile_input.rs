//! A hostile client cannot stop, exhaust or fool a node (DESIGN.md
//! invariant 4): what a client sends before or after login cannot crash the
//! process, make a connection hold memory it has not sent, keep connection
//! slots with silence, or write a line of its own into the log. Each test
//! here failed on the code before the fix it names.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use cove_tests::{IMAP_CONFIG, Imap, TestServer, assert_lines, assert_reply, tcp_connect};

const USER: &str = "a@x.org";
const PASS: &str = "pw";
const POP3: &str = "[pop3]\nlisten = [\"127.0.0.1:0\"]\ntls_listen = [\"127.0.0.1:0\"]\n";

fn server(lmtp_extra: &str, sections: &str) -> TestServer {
    let s = TestServer::start(&format!("{lmtp_extra}\n{IMAP_CONFIG}{sections}"));
    s.add_user_with_password(USER, PASS);
    s
}

/// A memory figure of the server from /proc/<pid>/status (`VmRSS`: now,
/// `VmHWM`: the most it ever had), in KiB.
fn memory_kib(s: &TestServer, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.pid())).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in {status}"))
}

/// A raw connection and the lines it reads.
struct Raw {
    r: BufReader<TcpStream>,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        Raw {
            r: BufReader::new(tcp_connect(addr)),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.r.get_mut().write_all(bytes).expect("send");
    }

    /// The next line, `None` at end of stream (or a reset).
    fn line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        match self.r.read_until(b'\n', &mut buf) {
            Ok(0) => None,
            Ok(_) => Some(String::from_utf8_lossy(&buf).trim_end().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("read: {e}"),
        }
    }

    /// Whether the server closes the connection without sending more than
    /// `allowed` lines first (e.g. a BYE).
    fn closed_after(&mut self, allowed: usize) -> bool {
        for _ in 0..=allowed {
            if self.line().is_none() {
                return true;
            }
        }
        false
    }
}

// Issue 11 (1): a LIST or CREATE with ~11,000 `(` overflowed the stack of
// the LIST-EXTENDED tokenizer and aborted the process, taking LMTP and POP3
// with it. Now: BAD, and every listener still answers; deep SEARCH keys
// (imap-codec's parser) are refused too.
#[test]
fn deep_nesting_is_bad_and_the_node_keeps_serving() {
    let s = server("", POP3);
    let mut c = s.imap();
    for verb in ["LIST", "CREATE"] {
        let line = format!("a {verb} {}", "(".repeat(11_000));
        assert_lines(
            &c.cmd(&line),
            &["a BAD Parentheses nested deeper than 8 levels"],
        );
    }
    c.login(USER, PASS);
    c.cmd_ok("s SELECT INBOX");
    let r = c.cmd(&format!("b SEARCH {}ALL", "NOT ".repeat(10_000)));
    assert!(r[0].starts_with("b BAD"), "{r:?}");
    let r = c.cmd(&format!("b UID SEARCH {}ALL", "(".repeat(30_000)));
    assert!(r[0].starts_with("b BAD"), "{r:?}");
    assert_lines(&c.cmd("c NOOP"), &["c OK NOOP completed"]);

    assert_reply(&s.lmtp().lhlo("client.test"), "250");
    let mut p = Raw::connect(s.addr_of("pop3"));
    assert!(p.line().is_some_and(|l| l.starts_with("+OK")));
    assert!(s.imap().greeting.starts_with("* OK"));
}

// Issue 11 (2): after a refused LITERAL+ literal the rest of the line was
// read without a bound, and a command could carry any number of literals
// (decoded again after each). Now the lines of a command count together,
// before and after its literals, and literals are limited in number and in
// total — tightly before login.
#[test]
fn literals_are_bounded_in_number_size_and_the_lines_around_them() {
    let s = server("", "");
    let mut c = s.imap();
    // Five one-byte literals before login: one over the four allowed. The
    // rest of the command is read and dropped; the session goes on.
    c.send_raw(b"a LOGIN {1+}\r\nx {1+}\r\nx {1+}\r\nx {1+}\r\nx {1+}\r\nx\r\n");
    assert_lines(
        &[c.read_response()],
        &["a BAD [TOOBIG] More than 4 literals in one command"],
    );
    // Two literals of 5 KiB each: under 8 KiB one by one, over it together.
    let five = vec![b'u'; 5 * 1024];
    let mut cmd = b"b LOGIN {5120+}\r\n".to_vec();
    cmd.extend_from_slice(&five);
    cmd.extend_from_slice(b" {5120+}\r\n");
    cmd.extend_from_slice(&five);
    cmd.extend_from_slice(b"\r\n");
    c.send_raw(&cmd);
    assert_lines(
        &[c.read_response()],
        &["b NO [TOOBIG] The literals of one command exceed 8192 bytes in all"],
    );
    // A refused literal, then 32 MiB of line after it: read and dropped,
    // never held (the peak memory of the server does not move).
    let peak = memory_kib(&s, "VmHWM");
    let mut cmd = b"c LOGIN {100000+}\r\n".to_vec();
    cmd.extend(std::iter::repeat_n(b'p', 100_000));
    cmd.extend(std::iter::repeat_n(b'q', 32 * 1024 * 1024));
    cmd.extend_from_slice(b"\r\n");
    c.send_raw(&cmd);
    assert_lines(
        &[c.read_response()],
        &["c NO [TOOBIG] Literal of 100000 bytes exceeds the limit of 8192"],
    );
    let grown = memory_kib(&s, "VmHWM").saturating_sub(peak);
    assert!(
        grown < 8 * 1024,
        "the line after a refused literal was held: {grown} KiB"
    );
    // A line over 64 KiB after an accepted literal is refused too.
    let mut cmd = b"c2 LOGIN {1+}\r\nx ".to_vec();
    cmd.extend(std::iter::repeat_n(b'q', 70_000));
    cmd.extend_from_slice(b"\r\n");
    c.send_raw(&cmd);
    assert_lines(
        &[c.read_response()],
        &["c2 BAD [TOOBIG] Command line too long"],
    );
    assert_lines(&c.cmd("d NOOP"), &["d OK NOOP completed"]);

    // Logged in, the limit is 100 literals per command.
    c.login(USER, PASS);
    let mut cmd = b"e SEARCH".to_vec();
    for _ in 0..101 {
        cmd.extend_from_slice(b" TEXT {1+}\r\nz");
    }
    cmd.extend_from_slice(b"\r\n");
    c.send_raw(&cmd);
    assert_lines(
        &[c.read_response()],
        &["e BAD [TOOBIG] More than 100 literals in one command"],
    );
    assert_lines(&c.cmd("f NOOP"), &["f OK NOOP completed"]);
}

// Issue 11 (3): `APPEND {52428800}` allocated and zeroed 50 MB as soon as
// it was announced; 20 such connections took 1 GB. Now a literal's buffer
// grows with the bytes that arrive: 20 connections that announce 50 MB
// and send nothing leave the server's memory about where it was.
#[test]
fn announced_literals_take_no_memory_until_their_bytes_arrive() {
    let s = server("", "");
    let mut clients: Vec<Imap<TcpStream>> = Vec::new();
    for _ in 0..20 {
        let mut c = s.imap_login(USER, PASS);
        c.cmd_ok("s SELECT INBOX");
        clients.push(c);
    }
    let before = memory_kib(&s, "VmRSS");
    for c in &mut clients {
        c.send("a APPEND INBOX {52428800}");
        // The continuation request: the server now waits for the bytes.
        assert_lines(&[c.read_response()], &["+ Ready for literal data"]);
        c.send_raw(b"From: x\r\n");
    }
    // Past the "+": give the server time to do whatever it does next.
    std::thread::sleep(Duration::from_millis(500));
    let after = memory_kib(&s, "VmRSS");
    let grown = after.saturating_sub(before);
    assert!(
        grown < 50 * 1024,
        "20 announced 50 MB literals grew the server by {grown} KiB ({before} -> {after})"
    );
}

// Issue 11 (4): a STARTTLS handshake had no time limit, so silent
// connections kept their slots for ever (100 filled max_connections for
// everyone). Now every handshake (STARTTLS, STLS, LMTP STARTTLS, implicit
// TLS) ends after handshake_timeout_secs, and a client that does not log
// in is closed after login_timeout_secs.
#[test]
fn silent_clients_lose_their_slots() {
    let s = server(
        "handshake_timeout_secs = 1",
        "max_connections = 3\nhandshake_timeout_secs = 1\nlogin_timeout_secs = 2\n\
         [pop3]\nlisten = [\"127.0.0.1:0\"]\ntls_listen = [\"127.0.0.1:0\"]\nhandshake_timeout_secs = 1\n",
    );
    let mut silent = Vec::new();
    for i in 0..3 {
        let mut c = Raw::connect(s.addr_of("imap"));
        assert!(c.line().is_some_and(|l| l.starts_with("* OK")));
        c.send(format!("t{i} STARTTLS\r\n").as_bytes());
        assert_eq!(
            c.line().as_deref(),
            Some(format!("t{i} OK Begin TLS negotiation now").as_str())
        );
        silent.push(c);
    }
    // All slots taken.
    let mut refused = Raw::connect(s.addr_of("imap"));
    assert_eq!(
        refused.line().as_deref(),
        Some("* BYE [UNAVAILABLE] Too many connections, try again later")
    );
    for c in &mut silent {
        assert!(
            c.closed_after(0),
            "a silent STARTTLS connection stayed open"
        );
    }
    // Slots free again: a new client is greeted.
    let mut c = Raw::connect(s.addr_of("imap"));
    assert!(c.line().is_some_and(|l| l.starts_with("* OK")));
    // And one that never logs in is told and closed.
    assert_eq!(
        c.line().as_deref(),
        Some("* BYE Login timeout; log in sooner")
    );
    assert!(c.closed_after(0));

    // Implicit TLS, POP3 STLS, LMTP STARTTLS: the same.
    for proto in ["imaps", "pop3s"] {
        let mut c = Raw::connect(s.addr_of(proto));
        assert!(c.closed_after(0), "{proto}: a silent handshake stayed open");
    }
    let mut p = Raw::connect(s.addr_of("pop3"));
    assert!(p.line().is_some_and(|l| l.starts_with("+OK")));
    p.send(b"STLS\r\n");
    assert!(p.line().is_some_and(|l| l.starts_with("+OK")));
    assert!(p.closed_after(0), "a silent STLS connection stayed open");
    let mut l = Raw::connect(s.lmtp_addr());
    assert!(l.line().is_some_and(|l| l.starts_with("220")));
    l.send(b"LHLO x\r\n");
    while l.line().is_some_and(|l| l.starts_with("250-")) {}
    l.send(b"STARTTLS\r\n");
    assert!(l.line().is_some_and(|l| l.starts_with("220")));
    assert!(l.closed_after(0), "a silent LMTP STARTTLS stayed open");
    assert!(s.logged("imap STARTTLS handshake failed"));
}

// A client that sends commands and never reads the answers kept its
// session, and its slot, for as long as it liked: the server waited in a
// write with no time limit. Before login that write ends at the login
// deadline too.
#[test]
fn a_client_that_never_reads_loses_its_slot() {
    let s = server("", "login_timeout_secs = 2\n");
    let mut c = Raw::connect(s.addr_of("imap"));
    // ~25 MB of answers: far more than the socket buffers hold.
    c.send(&b"a CAPABILITY\r\n".repeat(100_000));
    std::thread::sleep(Duration::from_secs(3));
    // Read what was sent: the connection ends (it would wait for ever).
    let mut lines = 0u64;
    while c.line().is_some() {
        lines += 1;
    }
    assert!(lines < 200_000, "every command was answered: {lines} lines");
}

// Issue 11 (5): "command not understood" logged the client's bytes as they
// were, so a literal holding a newline wrote a line of the client's own —
// `imap login failed user=root peer=6.6.6.6:25` — that fail2ban would act
// on. Now every client value is escaped in every protocol's log lines.
#[test]
fn a_client_cannot_write_a_log_line() {
    let s = server("", POP3);
    let forged = b"\nimap login failed user=root peer=6.6.6.6:25";
    let mut c = s.imap();
    let mut cmd = format!("a FOO {{{}+}}\r\n", forged.len()).into_bytes();
    cmd.extend_from_slice(forged);
    cmd.extend_from_slice(b"\r\n");
    c.send_raw(&cmd);
    assert_lines(&[c.read_response()], &["a BAD Command not understood"]);
    // A user name with a newline in it.
    let mut cmd = format!("b LOGIN {{{}+}}\r\n", forged.len()).into_bytes();
    cmd.extend_from_slice(forged);
    cmd.extend_from_slice(b" pw\r\n");
    c.send_raw(&cmd);
    assert!(c.read_response().starts_with("b NO"));

    // POP3 and LMTP: a CR and an escape sequence in a bad command.
    let mut p = Raw::connect(s.addr_of("pop3"));
    assert!(p.line().is_some_and(|l| l.starts_with("+OK")));
    p.send(b"FOO \x1b[2J\rimap login failed user=root peer=6.6.6.6:25\r\n");
    assert!(p.line().is_some_and(|l| l.starts_with("-ERR")));
    let mut l = s.lmtp();
    l.send_raw(b"FOO \x1b[2J\rimap login failed user=root peer=6.6.6.6:25\r\n")
        .unwrap();
    assert_eq!(l.read_reply().code / 100, 5);

    let logs = cove_tests::eventually(Duration::from_secs(10), || {
        let logs = s.logs();
        let seen = logs.iter().any(|l| l.contains("bad lmtp command"))
            && logs
                .iter()
                .any(|l| l.contains("pop3 command not understood"));
        seen.then_some(logs)
    })
    .expect("the bad commands were logged");
    for line in &logs {
        assert!(
            !line.contains('\u{1b}') && !line.contains('\r'),
            "a raw control character in the log: {line:?}"
        );
        if line.contains("login failed user=root") {
            // Only ever inside the line that quotes the client, escaped.
            assert!(
                line.contains("\\nimap login failed") || line.contains("\\rimap login failed"),
                "a forged log line: {line:?}"
            );
        }
    }
    assert!(
        logs.iter()
            .any(|l| l.contains("line=a FOO {44+}\\r\\n\\nimap login failed")),
        "{logs:#?}"
    );
    // The real failure line names the user escaped, as one word.
    assert!(
        logs.iter().any(|l| l.contains(
            "imap login failed user=\\nimap\\x20login\\x20failed\\x20user=root\\x20peer=6.6.6.6:25 peer=127.0.0.1:"
        )),
        "{logs:#?}"
    );
}

// Issue 11 residual: during IDLE, once a client had sent anything, the rest
// of its DONE line was read with no deadline: "DO" and then silence kept the
// session and its slot for good. The line is now bounded by the autologout.
#[test]
fn an_unfinished_done_in_idle_does_not_keep_the_session() {
    let s = server("", "autologout_secs = 2\n");
    let mut c = Raw::connect(s.addr_of("imap"));
    assert!(c.line().is_some_and(|l| l.starts_with("* OK")));
    c.send(format!("a LOGIN {USER} {PASS}\r\nb SELECT INBOX\r\n").as_bytes());
    while c.line().is_some_and(|l| !l.starts_with("b ")) {}
    c.send(b"c IDLE\r\n");
    assert_eq!(c.line().as_deref(), Some("+ idling"));
    c.send(b"DO");
    assert_eq!(
        c.line().as_deref(),
        Some("* BYE Autologout; idle for too long")
    );
    assert_eq!(c.line().as_deref(), Some("c OK IDLE terminated"));
    assert!(c.closed_after(0));
    assert!(s.logs_soon("DONE not completed before the autologout"));
}
