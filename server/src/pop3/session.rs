//! One POP3 connection: the states of RFC 1939 §3 — AUTHORIZATION, then
//! TRANSACTION once a maildrop is open, UPDATE when QUIT commits — reading
//! one command line at a time (RFC 2449 PIPELINING: answers are buffered
//! and written when no further command is waiting), with the limits of
//! `[pop3]`: line length, bad commands in a row, the autologout timer.

use crate::work::{self, Lane};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::Pop3Context;
use super::command::{self, Command, ParseError};
use super::maildrop::Maildrop;
use crate::client_text::ClientText;
use crate::conn::{Conn, PIPELINED_OUTPUT};

/// Read buffer: room for a few hundred pipelined commands.
pub const READ_BUFFER: usize = 4096;

pub enum State {
    /// RFC 1939 §4; `user` is the name a USER gave, waiting for PASS.
    Authorization { user: Option<String> },
    /// RFC 1939 §5.
    Transaction(Box<Maildrop>),
}

/// What the session does after a command.
pub enum Flow {
    Continue,
    /// The answer is written, then the connection closes.
    Close,
}

/// How a line was read.
pub enum LineRead {
    Line(Vec<u8>),
    TooLong,
    Eof,
}

pub struct Session {
    pub ctx: Arc<Pop3Context>,
    pub peer: SocketAddr,
    pub id: u64,
    pub reader: BufReader<Conn>,
    pub out: Vec<u8>,
    pub state: State,
    bad_in_a_row: u32,
    /// Not logged in by then: the connection is closed (`login_timeout_secs`).
    login_deadline: tokio::time::Instant,
}

impl Session {
    pub fn new(ctx: Arc<Pop3Context>, conn: Conn, peer: SocketAddr, id: u64) -> Session {
        let login_timeout = ctx.config.login_timeout_secs;
        Session {
            ctx,
            peer,
            id,
            reader: BufReader::with_capacity(READ_BUFFER, conn),
            out: Vec::new(),
            state: State::Authorization { user: None },
            bad_in_a_row: 0,
            login_deadline: tokio::time::Instant::now() + Duration::from_secs(login_timeout),
        }
    }

    /// `+OK text`.
    pub fn ok(&mut self, text: &str) {
        self.line("+OK", text);
    }

    /// `-ERR text`.
    pub fn err(&mut self, text: &str) {
        self.line("-ERR", text);
    }

    fn line(&mut self, status: &str, text: &str) {
        self.out.extend_from_slice(status.as_bytes());
        if !text.is_empty() {
            self.out.push(b' ');
            self.out
                .extend_from_slice(text.replace(['\r', '\n'], " ").as_bytes());
        }
        self.out.extend_from_slice(b"\r\n");
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            // Before login, no longer than the login deadline.
            let limit = match self.state {
                State::Authorization { .. } => Some(self.read_timeout()),
                State::Transaction(_) => None,
            };
            crate::conn::write_within(self.reader.get_mut(), &self.out, limit).await?;
            self.out.clear();
            if self.out.capacity() > 512 * 1024 {
                self.out = Vec::new();
            }
        }
        Ok(())
    }

    pub fn is_tls(&self) -> bool {
        self.reader.get_ref().is_tls()
    }

    /// Plaintext passwords over TLS, from loopback, or where allowed.
    pub fn plaintext_ok(&self) -> bool {
        self.reader
            .get_ref()
            .plaintext_ok(self.peer, self.ctx.config.allow_plaintext_auth)
    }

    /// Whether a whole command line is already buffered (pipelined).
    pub fn line_waiting(&self) -> bool {
        self.reader.buffer().contains(&b'\n')
    }

    /// Read one line (CRLF or LF stripped) of at most `max` bytes; a longer
    /// one is read to its end and dropped.
    pub async fn read_line(&mut self, max: usize) -> std::io::Result<LineRead> {
        let mut line = Vec::new();
        let mut too_long = false;
        loop {
            let buf = self.reader.fill_buf().await?;
            if buf.is_empty() {
                return Ok(LineRead::Eof);
            }
            let (take, end) = match buf.iter().position(|b| *b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            if !too_long {
                line.extend_from_slice(&buf[..take]);
                if line.len() > max {
                    too_long = true;
                    line = Vec::new();
                }
            }
            self.reader.consume(take);
            if end {
                if too_long {
                    return Ok(LineRead::TooLong);
                }
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(LineRead::Line(line));
            }
        }
    }

    /// How long the next read may wait: the autologout timer, and before
    /// login no later than the login deadline.
    pub fn read_timeout(&self) -> Duration {
        let idle = Duration::from_secs(self.ctx.config.autologout_secs);
        match self.state {
            State::Authorization { .. } => idle.min(
                self.login_deadline
                    .saturating_duration_since(tokio::time::Instant::now()),
            ),
            State::Transaction(_) => idle,
        }
    }

    pub async fn run(mut self) {
        self.ok(&format!("{} cove POP3 server ready", self.ctx.hostname));
        let mut shutdown = self.ctx.shutdown.clone();
        let mut drained = crate::drain::subscribe();
        loop {
            let waiting = self.line_waiting();
            if (!waiting || self.out.len() >= PIPELINED_OUTPUT) && self.flush().await.is_err() {
                return;
            }
            let max = self.ctx.config.max_line_length;
            let timeout = self.read_timeout();
            let read = tokio::select! {
                r = tokio::time::timeout(timeout, self.read_line(max)) => r,
                _ = shutdown.changed() => {
                    // RFC 1939 §6 does not apply: nothing is deleted.
                    self.err("[SYS/TEMP] Server shutting down");
                    let _ = self.flush().await;
                    return;
                }
                _ = drained.changed() => {
                    // As for a shutdown: nothing is deleted.
                    tracing::info!(session = self.id, peer = %self.peer, "pop3 session sent away: node drained");
                    self.err(&format!("[SYS/TEMP] {}", crate::drain::REASON));
                    let _ = self.flush().await;
                    return;
                }
            };
            let line = match read {
                Err(_) if matches!(self.state, State::Authorization { .. }) => {
                    tracing::info!(session = self.id, peer = %self.peer, "pop3 login timeout");
                    self.err("Login timeout; log in sooner");
                    let _ = self.flush().await;
                    return;
                }
                Err(_) => {
                    // RFC 1939 §3: autologout, without entering UPDATE.
                    tracing::info!(session = self.id, peer = %self.peer, "pop3 autologout");
                    self.err("Autologout; idle for too long");
                    let _ = self.flush().await;
                    return;
                }
                Ok(Err(_)) | Ok(Ok(LineRead::Eof)) => {
                    tracing::debug!(session = self.id, "pop3 client gone");
                    return;
                }
                Ok(Ok(LineRead::TooLong)) => {
                    self.err("Line too long");
                    if self.count_bad() {
                        let _ = self.flush().await;
                        return;
                    }
                    continue;
                }
                Ok(Ok(LineRead::Line(l))) => l,
            };
            if crate::proxy::looks_like_header(&line) {
                crate::proxy::refused_unexpected("pop3", self.id, self.peer);
                return;
            }
            let flow = match command::parse(&line) {
                Ok(cmd) => self.dispatch(cmd).await,
                Err(e) => {
                    tracing::info!(session = self.id, peer = %self.peer, line = %ClientText::line(&line), "pop3 command not understood");
                    match e {
                        ParseError::Unknown => self.err("Unknown command"),
                        ParseError::Syntax(why) => self.err(why),
                    }
                    self.bad()
                }
            };
            if let Flow::Close = flow {
                let _ = self.flush().await;
                let _ = self.reader.get_mut().shutdown().await;
                return;
            }
        }
    }

    /// A bad command was answered: close after too many in a row.
    pub fn bad(&mut self) -> Flow {
        if self.count_bad() {
            Flow::Close
        } else {
            Flow::Continue
        }
    }

    fn count_bad(&mut self) -> bool {
        self.bad_in_a_row += 1;
        if self.bad_in_a_row >= self.ctx.config.max_bad_commands {
            tracing::warn!(session = self.id, peer = %self.peer, "too many bad pop3 commands; closing");
            self.err("Too many bad commands, closing the connection");
            return true;
        }
        false
    }

    /// Run one command in the current state.
    async fn dispatch(&mut self, cmd: Command) -> Flow {
        let authorization = matches!(self.state, State::Authorization { .. });
        let bad_before = self.bad_in_a_row;
        let flow = match cmd {
            // RFC 2449 §5: CAPA in any state.
            Command::Capa => {
                self.capa();
                Flow::Continue
            }
            // RFC 1939 §4 (AUTHORIZATION) and §6 (UPDATE).
            Command::Quit => return self.quit().await,
            Command::User(name) if authorization => self.user(name),
            Command::Pass(pw) if authorization => self.pass(pw).await,
            Command::Auth { mechanism, initial } if authorization => {
                self.auth(mechanism, initial).await
            }
            Command::Stls if authorization => self.stls().await,
            Command::Apop if authorization => {
                self.err("APOP is not supported");
                Flow::Continue
            }
            Command::User(_)
            | Command::Pass(_)
            | Command::Auth { .. }
            | Command::Stls
            | Command::Apop => {
                self.err("Already logged in");
                Flow::Continue
            }
            cmd => {
                if authorization {
                    self.err("Log in first");
                    return Flow::Continue;
                }
                self.transaction(cmd).await
            }
        };
        if self.bad_in_a_row == bad_before {
            self.bad_in_a_row = 0;
        }
        flow
    }

    /// RFC 2449 §5 CAPA: what this state offers.
    fn capa(&mut self) {
        let mut caps = vec!["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"];
        let authorization = matches!(self.state, State::Authorization { .. });
        if authorization {
            if self.plaintext_ok() {
                caps.push("USER");
                caps.push("SASL PLAIN");
            }
            if self.ctx.tls.is_some() && !self.is_tls() {
                caps.push("STLS");
            }
        }
        caps.push("EXPIRE NEVER");
        caps.push("IMPLEMENTATION cove");
        self.ok("Capability list follows");
        for c in caps {
            self.out.extend_from_slice(c.as_bytes());
            self.out.extend_from_slice(b"\r\n");
        }
        self.out.extend_from_slice(b".\r\n");
    }

    /// RFC 1939 §4 QUIT (nothing to commit) and §6 (UPDATE).
    async fn quit(&mut self) -> Flow {
        let state = std::mem::replace(&mut self.state, State::Authorization { user: None });
        let State::Transaction(maildrop) = state else {
            self.ok(&format!(
                "{} cove POP3 server signing off",
                self.ctx.hostname
            ));
            return Flow::Close;
        };
        let uids = maildrop.deleted_uids();
        let seen = maildrop.seen_uids();
        let account = maildrop.account.clone();
        let mailbox = maildrop.mailbox.guid;
        let user = account.email().to_string();
        let expunged = if uids.is_empty() && seen.is_empty() {
            Ok(Ok(Vec::new()))
        } else {
            work::run(Lane::User(&user), move || {
                if !seen.is_empty() {
                    let add = cove_store::FlagOp::Add(cove_store::Flags::SEEN, Vec::new());
                    // Messages IMAP expunged meanwhile are skipped.
                    account.store_flags(&mailbox, &seen, add, None)?;
                }
                if uids.is_empty() {
                    return Ok(Vec::new());
                }
                account.expunge(&mailbox, &uids)
            })
            .await
        };
        // The lock goes with the maildrop, after the expunge.
        let (left, _) = maildrop.stat();
        drop(maildrop);
        match expunged {
            Ok(Ok(gone)) => {
                tracing::info!(session = self.id, peer = %self.peer, user = %user, deleted = gone.len(), "pop3 logout");
                let left = match left {
                    0 => "maildrop empty".to_string(),
                    1 => "1 message left".to_string(),
                    n => format!("{n} messages left"),
                };
                self.ok(&format!(
                    "{} cove POP3 server signing off ({left})",
                    self.ctx.hostname
                ));
            }
            Ok(Err(e)) => {
                tracing::error!(session = self.id, user = %user, error = %e, "pop3 QUIT could not remove deleted messages");
                self.err("[SYS/TEMP] Some deleted messages were not removed");
            }
            Err(e) => {
                tracing::error!(session = self.id, user = %user, error = %e, "pop3 QUIT task failed");
                self.err("[SYS/TEMP] Some deleted messages were not removed");
            }
        }
        Flow::Close
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Authenticator, PasswordCheckers, Secret, hash_password};
    use crate::config::Pop3Config;
    use cove_store::Address;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    async fn line(c: &mut BufReader<TcpStream>) -> String {
        let mut l = String::new();
        c.read_line(&mut l).await.expect("read");
        l.trim_end().to_string()
    }

    /// Connect, log in as p@x.org with one message, and send `commands`
    /// behind the login (pipelined).
    async fn logged_in_then(addr: std::net::SocketAddr, commands: &str) -> BufReader<TcpStream> {
        let mut c = BufReader::new(TcpStream::connect(addr).await.expect("connect"));
        assert!(line(&mut c).await.starts_with("+OK"), "greeting");
        let login = format!("USER p@x.org\r\nPASS pw\r\n{commands}\r\n");
        c.get_mut().write_all(login.as_bytes()).await.expect("send");
        assert_eq!(line(&mut c).await, "+OK Send your password");
        assert!(line(&mut c).await.starts_with("+OK Logged in, 1 message"));
        c
    }

    // RFC 1939 §3: the autologout timer (at least 10 minutes of silence)
    // ends a session without entering the UPDATE state: a message marked
    // with DELE stays, and the maildrop lock is released. Tokio's clock is
    // paused, so the ten minutes pass at once.
    #[tokio::test(start_paused = true)]
    async fn autologout_ends_the_session_without_update() {
        let (_dir, store) = crate::test_store("t");
        let address = Address::parse("p@x.org").expect("address");
        let hash = hash_password(&Secret("pw".into())).expect("hash");
        let user = store.add_user(&address, Some(hash), 0).expect("user");
        let account = store.account(&user).expect("account");
        let new = account.home().join("Maildir/new/1700000000.M1P1.test");
        std::fs::write(new, "Subject: x\r\n\r\nbody\r\n").expect("message");

        let config = Pop3Config::default();
        let autologout = Duration::from_secs(config.autologout_secs);
        assert!(autologout >= Duration::from_secs(600));
        let (_shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let ctx = Arc::new(Pop3Context::new(
            store.clone(),
            config,
            "t".into(),
            None,
            shutdown_rx,
            Arc::new(
                Authenticator::new(
                    store.clone(),
                    Arc::new(PasswordCheckers::new(1).expect("password threads")),
                    crate::config::AuthConfig::default().schedule(),
                )
                .await
                .expect("authenticator"),
            ),
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let serve = |ctx: Arc<Pop3Context>, listener: TcpListener| async move {
            let (tcp, peer) = listener.accept().await.expect("accept");
            Session::new(ctx, Conn::Plain(tcp), peer, 1).run().await;
            listener
        };

        let server = tokio::spawn(serve(ctx.clone(), listener));
        let mut c = logged_in_then(addr, "DELE 1").await;
        assert_eq!(line(&mut c).await, "+OK Message 1 deleted");
        let quiet_from = tokio::time::Instant::now();
        assert_eq!(line(&mut c).await, "-ERR Autologout; idle for too long");
        assert!(
            quiet_from.elapsed() >= autologout,
            "{:?}",
            quiet_from.elapsed()
        );
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).await.expect("read");
        assert!(rest.is_empty(), "closed after the -ERR");
        let listener = server.await.expect("session");

        // Nothing was deleted, and the maildrop can be opened again.
        let inbox = account.mailbox("INBOX").expect("INBOX");
        assert_eq!(account.messages(&inbox.guid).expect("messages").len(), 1);
        let server = tokio::spawn(serve(ctx, listener));
        let mut c = logged_in_then(addr, "STAT\r\nQUIT").await;
        assert!(line(&mut c).await.starts_with("+OK 1 "));
        assert!(line(&mut c).await.starts_with("+OK"));
        server.await.expect("session");
    }
}
