//! RFC 5258 LIST-EXTENDED, RFC 5819 LIST-STATUS and RFC 6154
//! CREATE-SPECIAL-USE over a real socket: the commands imap-codec cannot
//! decode, which cove parses itself.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use cove_tests::{TestServer, line_matches};

struct Imap {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Imap {
    fn connect(server: &TestServer) -> Imap {
        let s = TcpStream::connect(server.addr_of("imap")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut i = Imap {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        };
        let greeting = i.line();
        assert!(greeting.starts_with("* OK"), "{greeting}");
        i
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).unwrap();
        l.trim_end().to_string()
    }

    /// Send a tagged command; return every line up to and including the tagged one.
    fn cmd(&mut self, tag: &str, rest: &str) -> Vec<String> {
        write!(self.w, "{tag} {rest}\r\n").unwrap();
        let mut lines = Vec::new();
        loop {
            let l = self.line();
            assert!(!l.is_empty(), "connection closed after {lines:?}");
            let done = l.starts_with(&format!("{tag} "));
            lines.push(l);
            if done {
                return lines;
            }
        }
    }
}

#[test]
fn list_extended_status_and_create_special_use() {
    let server =
        TestServer::start("[imap]\nlisten = [\"127.0.0.1:0\"]\nauth_failure_delay_ms = 10\n");
    let out = server.cli_stdin(
        &["user", "add", "a@x.org", "--password-stdin"],
        Some(b"pw\n"),
    );
    assert!(out.status.success());
    let mut lmtp = server.lmtp_ready();
    let d = lmtp.deliver(
        "s@example.org",
        &["a@x.org"],
        &cove_tests::message("one", "x"),
    );
    assert!(d.results[0].is("250"));

    let mut c = Imap::connect(&server);
    assert_eq!(
        c.cmd("a", "LOGIN a@x.org pw")
            .last()
            .unwrap()
            .split(' ')
            .nth(1),
        Some("OK")
    );
    let caps = c.cmd("b", "CAPABILITY");
    for cap in [
        "LIST-EXTENDED",
        "LIST-STATUS",
        "CREATE-SPECIAL-USE",
        "SPECIAL-USE",
    ] {
        assert!(caps[0].split(' ').any(|w| w == cap), "{cap} in {caps:?}");
    }

    // CREATE-SPECIAL-USE, then it shows with its attribute.
    let created = c.cmd("c", "CREATE Outbox (USE (\\Sent))");
    assert_eq!(created.len(), 1, "{created:?}");
    // RFC 8474 §4.1: the new mailbox's MAILBOXID.
    assert!(
        line_matches("c OK [MAILBOXID (F{any})] CREATE completed", &created[0]),
        "{created:?}"
    );
    assert!(
        c.cmd("c2", "CREATE Bad (USE (\\Bogus))")
            .last()
            .unwrap()
            .starts_with("c2 NO [USEATTR]")
    );
    let l = c.cmd("d", "LIST \"\" Outbox");
    assert_eq!(l[0], "* LIST (\\HasNoChildren \\Sent) \".\" Outbox");

    // Selection SUBSCRIBED: a subscribed name that does not exist is \NonExistent.
    assert_eq!(
        c.cmd("e", "SUBSCRIBE Ghost").last().unwrap(),
        "e OK SUBSCRIBE completed"
    );
    let l = c.cmd("f", "LIST (SUBSCRIBED) \"\" *");
    assert!(
        l.contains(&"* LIST (\\NonExistent \\Subscribed) \".\" Ghost".to_string()),
        "{l:?}"
    );
    assert!(
        l.contains(&"* LIST (\\HasNoChildren \\Subscribed) \".\" INBOX".to_string()),
        "{l:?}"
    );
    assert_eq!(l.last().unwrap(), "f OK LIST completed");

    // Several patterns, RETURN (STATUS ...): a STATUS line after each LIST line.
    let l = c.cmd(
        "g",
        "LIST \"\" (INBOX Outbox) RETURN (STATUS (MESSAGES UNSEEN))",
    );
    assert_eq!(
        l,
        vec![
            "* LIST (\\HasNoChildren) \".\" INBOX",
            "* STATUS INBOX (MESSAGES 1 UNSEEN 1)",
            "* LIST (\\HasNoChildren \\Sent) \".\" Outbox",
            "* STATUS Outbox (MESSAGES 0 UNSEEN 0)",
            "g OK LIST completed",
        ]
    );

    // Selection SPECIAL-USE: only mailboxes with a special use.
    let l = c.cmd("h", "LIST (SPECIAL-USE) \"\" *");
    assert!(l.iter().all(|x| !x.ends_with(" INBOX")), "{l:?}");
    assert!(l.iter().any(|x| x.contains("\\Trash")), "{l:?}");

    // Bad options are BAD, and the session goes on.
    assert!(
        c.cmd("i", "LIST (NOPE) \"\" *")
            .last()
            .unwrap()
            .starts_with("i BAD")
    );
    assert_eq!(c.cmd("j", "NOOP").last().unwrap(), "j OK NOOP completed");
}
