//! A blocking POP3 client for the pop3_* tests, and the `[pop3]` section
//! they start servers with.

#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

use cove_tests::{TestServer, TlsStream, tcp_connect, tls_config_trusting, tls_connect};

/// A `[pop3]` section: plain and implicit-TLS listeners on port 0, a short
/// delay after a failed login. More `[pop3]` keys may follow it.
pub const POP3_CONFIG: &str = "[pop3]\nlisten = [\"127.0.0.1:0\"]\ntls_listen = [\"127.0.0.1:0\"]\nauth_failure_delay_ms = 10\n";

pub const USER: &str = "p@x.org";
pub const PASS: &str = "pw";

/// A server with [`POP3_CONFIG`] (plus `extra` `[pop3]` keys) and [`USER`].
pub fn server(extra: &str) -> TestServer {
    let s = TestServer::start(&format!("{POP3_CONFIG}{extra}"));
    s.add_user_with_password(USER, PASS);
    s
}

pub struct Pop3<S: Read + Write> {
    stream: BufReader<S>,
    pub greeting: String,
}

impl Pop3<TcpStream> {
    pub fn connect(addr: SocketAddr) -> Pop3<TcpStream> {
        Pop3::greeted(tcp_connect(addr))
    }
}

/// Connect to the plain listener and read the greeting.
pub fn pop3(s: &TestServer) -> Pop3<TcpStream> {
    Pop3::connect(s.addr_of("pop3"))
}

/// Connect and log in with USER/PASS.
pub fn logged_in(s: &TestServer) -> Pop3<TcpStream> {
    let mut c = pop3(s);
    c.login(USER, PASS);
    c
}

/// Connect to the implicit-TLS listener.
pub fn pop3s(s: &TestServer) -> Pop3<TlsStream> {
    let config = tls_config_trusting(&s.data_dir().join("tls/cert.pem"));
    let tcp = tcp_connect(s.addr_of("pop3s"));
    Pop3::greeted(tls_connect(tcp, config, "localhost").expect("pop3s TLS handshake"))
}

impl<S: Read + Write> Pop3<S> {
    pub fn new(stream: S) -> Pop3<S> {
        Pop3 {
            stream: BufReader::new(stream),
            greeting: String::new(),
        }
    }

    pub fn greeted(stream: S) -> Pop3<S> {
        let mut c = Pop3::new(stream);
        c.greeting = c.line();
        assert!(c.greeting.starts_with("+OK "), "greeting {:?}", c.greeting);
        c
    }

    pub fn into_inner(self) -> S {
        assert!(self.stream.buffer().is_empty(), "unread data");
        self.stream.into_inner()
    }

    pub fn get_mut(&mut self) -> &mut S {
        self.stream.get_mut()
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        let s = self.stream.get_mut();
        s.write_all(bytes).expect("send");
        s.flush().expect("flush");
    }

    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes());
    }

    /// One line with its CRLF, raw; `None` at end of stream.
    pub fn try_raw_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut buf = Vec::new();
        if self.stream.read_until(b'\n', &mut buf)? == 0 {
            return Ok(None);
        }
        Ok(Some(buf))
    }

    /// One line without its CRLF (which must be there).
    #[track_caller]
    pub fn line(&mut self) -> String {
        let raw = self
            .try_raw_line()
            .unwrap_or_else(|e| panic!("reading a line: {e}"))
            .unwrap_or_else(|| panic!("connection closed, a line was expected"));
        let text = String::from_utf8_lossy(&raw).into_owned();
        text.strip_suffix("\r\n")
            .unwrap_or_else(|| panic!("line without CRLF: {text:?}"))
            .to_string()
    }

    /// Send a command, read its one-line answer.
    #[track_caller]
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(line);
        self.line()
    }

    /// Read a status line and, if `+OK`, the lines up to the `.` (the `.`
    /// included, as sent, so transcripts show it).
    #[track_caller]
    pub fn read_multi(&mut self) -> Vec<String> {
        let first = self.line();
        let more = first.starts_with("+OK");
        let mut out = vec![first];
        if more {
            loop {
                let l = self.line();
                let end = l == ".";
                out.push(l);
                if end {
                    break;
                }
            }
        }
        out
    }

    /// Send a command with a multi-line answer.
    #[track_caller]
    pub fn multi(&mut self, line: &str) -> Vec<String> {
        self.send(line);
        self.read_multi()
    }

    /// The raw bytes of a multi-line answer after its status line, through
    /// the terminating `.CRLF`.
    #[track_caller]
    pub fn raw_body(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let l = self
                .try_raw_line()
                .expect("read")
                .expect("connection closed inside a multi-line answer");
            let end = l == b".\r\n";
            out.extend_from_slice(&l);
            if end {
                return out;
            }
        }
    }

    /// USER and PASS, asserting success.
    #[track_caller]
    pub fn login(&mut self, user: &str, pass: &str) {
        let r = self.cmd(&format!("USER {user}"));
        assert_eq!(r, "+OK Send your password");
        let r = self.cmd(&format!("PASS {pass}"));
        assert!(r.starts_with("+OK Logged in, "), "PASS: {r}");
    }

    /// Whether the server closes the connection now (end of stream or a
    /// reset, with nothing else sent first).
    pub fn closed(&mut self) -> bool {
        match self.try_raw_line() {
            Ok(None) => true,
            Ok(Some(l)) => panic!(
                "expected the connection to close, got {:?}",
                String::from_utf8_lossy(&l)
            ),
            Err(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            ),
        }
    }
}

/// The UIDL a Maildir file stands for: its GUID (from its name; derived
/// from the name for files without one), in hex.
pub fn guid_of_file(path: &std::path::Path) -> String {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    cove_tests::cove_store::maildir::FileName::parse(&name)
        .unwrap_or_else(|| panic!("not a Maildir file name: {name}"))
        .effective_guid()
        .to_hex()
}
