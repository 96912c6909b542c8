//! Another program changes the Maildir while a client is in IDLE: the
//! server notices (inotify, then a scan) and tells the client within two
//! seconds — a new file as EXISTS, a rename to `:2,S` as FETCH FLAGS, a
//! removal as EXPUNGE.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cove_tests::TestServer;

/// A minimal IMAP client: lines only (no literals are needed here).
struct Imap {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Imap {
    fn connect(server: &TestServer) -> Imap {
        let stream = TcpStream::connect(server.addr_of("imap")).expect("connect to imap");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let writer = stream.try_clone().expect("clone stream");
        let mut c = Imap {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = c.line().expect("greeting");
        assert!(greeting.starts_with("* OK"), "{greeting}");
        c
    }

    fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("send");
    }

    /// One line, or `None` on timeout or end of stream.
    fn line(&mut self) -> Option<String> {
        let mut buf = String::new();
        match self.reader.read_line(&mut buf) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(buf.trim_end().to_string()),
        }
    }

    /// Send a tagged command; the untagged lines and the tagged reply.
    fn cmd(&mut self, tag: &str, command: &str) -> (Vec<String>, String) {
        self.send(&format!("{tag} {command}"));
        let mut untagged = Vec::new();
        loop {
            let l = self
                .line()
                .unwrap_or_else(|| panic!("no reply to {command}; got {untagged:?}"));
            if l.starts_with(&format!("{tag} ")) {
                return (untagged, l);
            }
            untagged.push(l);
        }
    }

    /// Lines until one satisfies `want`, within `within`; that line and how
    /// long it took.
    fn wait_for(&mut self, within: Duration, want: impl Fn(&str) -> bool) -> (String, Duration) {
        let start = Instant::now();
        let mut seen = Vec::new();
        while start.elapsed() < within {
            if let Some(l) = self.line() {
                if want(&l) {
                    return (l, start.elapsed());
                }
                seen.push(l);
            }
        }
        panic!("nothing wanted within {within:?}; got {seen:?}");
    }
}

#[test]
fn idle_hears_of_files_another_program_puts_in_the_maildir() {
    let server =
        TestServer::start("[imap]\nlisten = [\"127.0.0.1:0\"]\nauth_failure_delay_ms = 10\n");
    let out = server.cli_stdin(
        &["user", "add", "a@x.org", "--password-stdin"],
        Some(b"pw\n"),
    );
    assert!(
        out.status.success(),
        "user add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inbox = server.folder("a@x.org", "INBOX");

    let mut c = Imap::connect(&server);
    let (_, ok) = c.cmd("a1", "LOGIN a@x.org pw");
    assert!(ok.starts_with("a1 OK"), "{ok}");
    let (untagged, ok) = c.cmd("a2", "SELECT INBOX");
    assert!(ok.starts_with("a2 OK"), "{ok}");
    assert!(untagged.iter().any(|l| l == "* 0 EXISTS"), "{untagged:?}");
    c.send("a3 IDLE");
    let cont = c.line().expect("IDLE continuation");
    assert!(cont.starts_with('+'), "{cont}");

    // Delivered by "another MDA": written in tmp/, renamed into new/.
    let name = "1700000000.M1P1.other,S=30";
    let tmp = inbox.join("tmp").join(name);
    fs::write(&tmp, "Subject: from outside\r\n\r\nhi\r\n").expect("write message");
    let started = Instant::now();
    fs::rename(&tmp, inbox.join("new").join(name)).expect("rename into new/");
    let (_, took) = c.wait_for(Duration::from_secs(2), |l| l == "* 1 EXISTS");
    eprintln!(
        "EXISTS {took:?} after the rename ({:?} including the read)",
        started.elapsed()
    );

    // Read elsewhere: the file moves to cur/ with the S flag.
    fs::rename(
        inbox.join("new").join(name),
        inbox.join("cur").join(format!("{name}:2,S")),
    )
    .expect("rename to cur/");
    let (line, _) = c.wait_for(Duration::from_secs(2), |l| l.starts_with("* 1 FETCH"));
    assert!(line.contains("\\Seen"), "{line}");

    // Deleted elsewhere.
    fs::remove_file(inbox.join("cur").join(format!("{name}:2,S"))).expect("remove");
    c.wait_for(Duration::from_secs(2), |l| l == "* 1 EXPUNGE");

    c.send("DONE");
    let done = c.line().expect("IDLE end");
    assert!(done.starts_with("a3 OK"), "{done}");
    let (_, ok) = c.cmd("a4", "LOGOUT");
    assert!(ok.starts_with("a4 OK"), "{ok}");
}
