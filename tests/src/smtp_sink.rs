//! A test SMTP server that takes every message and keeps it: where
//! Sieve's vacation replies and redirects land in tests.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One message the sink received.
#[derive(Debug, Clone)]
pub struct Sunk {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

/// Listening on a free loopback port until dropped (its thread ends with
/// the test process; each connection has a read timeout).
pub struct SmtpSink {
    addr: SocketAddr,
    messages: Arc<Mutex<Vec<Sunk>>>,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the SMTP sink");
        let addr = listener.local_addr().expect("sink address");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let kept = messages.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let kept = kept.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &kept);
                });
            }
        });
        SmtpSink { addr, messages }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn messages(&self) -> Vec<Sunk> {
        self.messages.lock().unwrap().clone()
    }

    /// Wait up to 10 s for at least `n` messages.
    pub fn wait_for(&self, n: usize) -> Vec<Sunk> {
        crate::eventually(Duration::from_secs(10), || {
            let m = self.messages();
            (m.len() >= n).then_some(m)
        })
        .unwrap_or_else(|| panic!("the SMTP sink got {:?}, wanted {n}", self.messages()))
    }
}

fn serve(conn: std::net::TcpStream, kept: &Mutex<Vec<Sunk>>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut w = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    w.write_all(b"220 sink ESMTP\r\n")?;
    let mut cur = Sunk {
        from: String::new(),
        to: Vec::new(),
        data: String::new(),
    };
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let upper = line.to_ascii_uppercase();
        let arg = |prefix: &str| {
            line[prefix.len()..]
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        };
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            w.write_all(b"250-sink\r\n250 8BITMIME\r\n")?;
        } else if upper.starts_with("MAIL FROM:") {
            cur.from = arg("MAIL FROM:");
            w.write_all(b"250 ok\r\n")?;
        } else if upper.starts_with("RCPT TO:") {
            cur.to.push(arg("RCPT TO:"));
            w.write_all(b"250 ok\r\n")?;
        } else if upper.starts_with("DATA") {
            w.write_all(b"354 go\r\n")?;
            loop {
                line.clear();
                if r.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" {
                    break;
                }
                cur.data.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            kept.lock().unwrap().push(std::mem::replace(
                &mut cur,
                Sunk {
                    from: String::new(),
                    to: Vec::new(),
                    data: String::new(),
                },
            ));
            w.write_all(b"250 queued\r\n")?;
        } else if upper.starts_with("QUIT") {
            w.write_all(b"221 bye\r\n")?;
            return Ok(());
        } else {
            w.write_all(b"250 ok\r\n")?;
        }
    }
}
