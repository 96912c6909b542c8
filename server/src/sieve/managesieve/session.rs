//! One ManageSieve connection (RFC 5804): not authenticated, then
//! authenticated as a user; one command at a time, each read whole
//! (lines and literals, bounded) before it runs. Store work (script files,
//! compiling) runs on the blocking pool in the user's lane.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use cove_store::{Error as StoreError, User};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::ManageSieveContext;
use super::command::{self, Command, Next, ParseError, Scanner};
use crate::auth::{AuthResult, Secret};
use crate::client_text::ClientText;
use crate::conn::Conn;
use crate::work::{self, Lane};

const READ_BUFFER: usize = 8192;
/// A literal this many times over the script size limit closes the
/// connection instead of being read and dropped.
const LITERAL_SLACK: u64 = 4;

enum State {
    NotAuthenticated,
    Authenticated(User),
}

enum Flow {
    Continue,
    Close,
}

pub struct Session {
    ctx: Arc<ManageSieveContext>,
    peer: SocketAddr,
    id: u64,
    reader: BufReader<Conn>,
    out: Vec<u8>,
    state: State,
    bad_in_a_row: u32,
    /// Not logged in by then: the connection is closed.
    login_deadline: tokio::time::Instant,
}

/// How a command was read.
enum Read {
    Command(Result<Command, ParseError>),
    /// A literal over the limit was skipped; the command is refused.
    TooBig,
    TooLong,
    Gone,
}

impl Session {
    pub fn new(ctx: Arc<ManageSieveContext>, conn: Conn, peer: SocketAddr, id: u64) -> Session {
        let ctx_login_timeout = ctx.config.login_timeout_secs;
        Session {
            ctx,
            peer,
            id,
            reader: BufReader::with_capacity(READ_BUFFER, conn),
            out: Vec::new(),
            state: State::NotAuthenticated,
            bad_in_a_row: 0,
            login_deadline: tokio::time::Instant::now() + Duration::from_secs(ctx_login_timeout),
        }
    }

    /// How long the next command may take to arrive: the idle timeout, and
    /// before login no later than the login deadline.
    fn read_timeout(&self) -> Duration {
        let idle = Duration::from_secs(self.ctx.config.timeout_secs);
        match self.state {
            State::NotAuthenticated => idle.min(
                self.login_deadline
                    .saturating_duration_since(tokio::time::Instant::now()),
            ),
            State::Authenticated(_) => idle,
        }
    }

    fn is_tls(&self) -> bool {
        self.reader.get_ref().is_tls()
    }

    fn plaintext_ok(&self) -> bool {
        crate::auth::plaintext_allowed(
            self.is_tls() || self.reader.get_ref().from_trusted_proxy(),
            self.peer.ip(),
            self.ctx.config.allow_plaintext_auth,
        )
    }

    /// `OK`/`NO`/`BYE` with an optional response code and text.
    fn status(&mut self, status: &str, code: Option<&str>, text: &str) {
        self.out.extend_from_slice(status.as_bytes());
        if let Some(code) = code {
            self.out.extend_from_slice(format!(" ({code})").as_bytes());
        }
        if !text.is_empty() {
            self.out.push(b' ');
            command::string(&mut self.out, text.replace(['\r', '\n'], " ").as_bytes());
        }
        self.out.extend_from_slice(b"\r\n");
    }

    fn ok(&mut self, text: &str) {
        self.status("OK", None, text);
    }

    fn no(&mut self, code: Option<&str>, text: &str) {
        self.status("NO", code, text);
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            let limit = Some(Duration::from_secs(self.ctx.config.timeout_secs));
            crate::conn::write_within(self.reader.get_mut(), &self.out, limit).await?;
            self.out.clear();
        }
        Ok(())
    }

    // RFC 5804 §1.7: the capability response (greeting, CAPABILITY, after
    // STARTTLS).
    fn capabilities(&mut self) {
        let mut lines: Vec<(&str, String)> = vec![
            ("IMPLEMENTATION", "cove".into()),
            ("SIEVE", super::SIEVE_EXTENSIONS.into()),
        ];
        let sasl = if self.plaintext_ok() { "PLAIN" } else { "" };
        lines.push(("SASL", sasl.into()));
        if self.ctx.tls.is_some() && !self.is_tls() {
            lines.push(("STARTTLS", String::new()));
        }
        lines.push((
            "MAXREDIRECTS",
            self.ctx.sieve.config().max_redirects.to_string(),
        ));
        if let State::Authenticated(u) = &self.state {
            lines.push(("OWNER", u.address.to_string()));
        }
        lines.push(("VERSION", "1.0".into()));
        for (name, value) in lines {
            command::string(&mut self.out, name.as_bytes());
            if !value.is_empty() || name == "SASL" {
                self.out.push(b' ');
                command::string(&mut self.out, value.as_bytes());
            }
            self.out.extend_from_slice(b"\r\n");
        }
    }

    pub async fn run(mut self) {
        self.capabilities();
        self.ok(&format!("{} cove ManageSieve ready", self.ctx.hostname));
        let mut shutdown = self.ctx.shutdown.clone();
        loop {
            if self.flush().await.is_err() {
                return;
            }
            let timeout = self.read_timeout();
            let read = tokio::select! {
                r = tokio::time::timeout(timeout, self.read_command()) => r,
                _ = shutdown.changed() => {
                    self.status("BYE", Some("TRYLATER"), "Server shutting down");
                    let _ = self.flush().await;
                    return;
                }
            };
            let flow = match read {
                Err(_) if matches!(self.state, State::NotAuthenticated) => {
                    tracing::info!(session = self.id, peer = %self.peer, "managesieve login timeout");
                    self.status("BYE", None, "Login timeout; log in sooner");
                    Flow::Close
                }
                Err(_) => {
                    tracing::info!(session = self.id, peer = %self.peer, "managesieve idle timeout");
                    self.status("BYE", None, "Idle for too long");
                    Flow::Close
                }
                Ok(Read::Gone) => return,
                Ok(Read::TooLong) => {
                    self.no(None, "Line too long");
                    self.bad()
                }
                Ok(Read::TooBig) => {
                    self.no(Some("QUOTA/MAXSIZE"), "Script too big");
                    Flow::Continue
                }
                Ok(Read::Command(Err(e))) => {
                    let why = match &e {
                        ParseError::Unknown(name) => {
                            format!("Unknown command {}", ClientText::word(name))
                        }
                        ParseError::Syntax(s) => s.to_string(),
                    };
                    tracing::info!(session = self.id, peer = %self.peer, error = %why, "managesieve command not understood");
                    self.no(None, &why);
                    self.bad()
                }
                Ok(Read::Command(Ok(cmd))) => {
                    let bad_before = self.bad_in_a_row;
                    let flow = self.dispatch(cmd).await;
                    if self.bad_in_a_row == bad_before {
                        self.bad_in_a_row = 0;
                    }
                    flow
                }
            };
            if let Flow::Close = flow {
                let _ = self.flush().await;
                let _ = self.reader.get_mut().shutdown().await;
                return;
            }
        }
    }

    fn bad(&mut self) -> Flow {
        self.bad_in_a_row += 1;
        if self.bad_in_a_row >= self.ctx.config.max_bad_commands {
            tracing::info!(session = self.id, peer = %self.peer, "managesieve: too many bad commands");
            self.status("BYE", None, "Too many bad commands");
            return Flow::Close;
        }
        Flow::Continue
    }

    /// Read one line, at most `max` bytes (CRLF stripped).
    async fn read_line(&mut self, max: usize) -> std::io::Result<Option<Result<Vec<u8>, ()>>> {
        let mut line = Vec::new();
        let mut limited = (&mut self.reader).take(max as u64 + 1);
        let n = limited.read_until(b'\n', &mut line).await?;
        if n == 0 {
            return Ok(None);
        }
        if line.last() != Some(&b'\n') {
            if line.len() > max {
                // Drop the rest of the line.
                loop {
                    let buf = self.reader.fill_buf().await?;
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    match buf.iter().position(|b| *b == b'\n') {
                        Some(i) => {
                            self.reader.consume(i + 1);
                            return Ok(Some(Err(())));
                        }
                        None => {
                            let l = buf.len();
                            self.reader.consume(l);
                        }
                    }
                }
            }
            return Ok(None);
        }
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok(Some(Ok(line)))
    }

    /// Read a whole command: its lines and literals.
    async fn read_command(&mut self) -> Read {
        let max_line = self.ctx.config.max_line_length;
        let max_literal = self.ctx.config.max_script_size + 1024;
        let mut scanner = Scanner::default();
        let mut too_big = false;
        loop {
            let line = match self.read_line(max_line).await {
                Ok(Some(Ok(l))) => l,
                Ok(Some(Err(()))) => return Read::TooLong,
                _ => return Read::Gone,
            };
            match scanner.line(&line) {
                Err(e) => return Read::Command(Err(e)),
                Ok(Next::Done) if too_big => return Read::TooBig,
                Ok(Next::Done) => return Read::Command(Command::parse(scanner.tokens)),
                Ok(Next::Literal(n)) if n > max_literal => {
                    if n > max_literal.saturating_mul(LITERAL_SLACK) {
                        tracing::info!(session = self.id, peer = %self.peer, size = n, "managesieve literal far over the limit; closing");
                        return Read::Gone;
                    }
                    // Read and drop it, so the next command is in step.
                    let mut sink = tokio::io::sink();
                    let mut limited = (&mut self.reader).take(n);
                    match tokio::io::copy(&mut limited, &mut sink).await {
                        Ok(got) if got == n => too_big = true,
                        _ => return Read::Gone,
                    }
                }
                Ok(Next::Literal(n)) => {
                    let mut bytes = vec![0u8; n as usize];
                    if self.reader.read_exact(&mut bytes).await.is_err() {
                        return Read::Gone;
                    }
                    scanner.literal(bytes);
                }
            }
        }
    }

    async fn dispatch(&mut self, cmd: Command) -> Flow {
        let user = match (&self.state, &cmd) {
            (_, Command::Capability) => {
                self.capabilities();
                self.ok("Capability completed");
                return Flow::Continue;
            }
            (_, Command::Logout) => {
                self.ok("Logout completed");
                return Flow::Close;
            }
            (_, Command::Noop { tag }) => {
                let code = tag.as_ref().map(|t| {
                    let mut quoted = Vec::new();
                    command::string(&mut quoted, t.as_bytes());
                    format!("TAG {}", String::from_utf8_lossy(&quoted))
                });
                self.status("OK", code.as_deref(), "Done");
                return Flow::Continue;
            }
            (State::NotAuthenticated, Command::StartTls) => return self.starttls().await,
            (State::Authenticated(_), Command::StartTls) => {
                self.no(None, "STARTTLS only before AUTHENTICATE");
                return Flow::Continue;
            }
            (State::NotAuthenticated, Command::Authenticate { mechanism, initial }) => {
                let (m, i) = (mechanism.clone(), initial.clone());
                return self.authenticate(&m, i).await;
            }
            (State::Authenticated(_), Command::Authenticate { .. }) => {
                self.no(None, "Already authenticated");
                return Flow::Continue;
            }
            (State::Authenticated(_), Command::Unauthenticate) => {
                self.state = State::NotAuthenticated;
                self.ok("Unauthenticate completed");
                return Flow::Continue;
            }
            (State::NotAuthenticated, _) => {
                self.no(None, "Authenticate first");
                return self.bad();
            }
            (State::Authenticated(u), _) => u.clone(),
        };
        self.script_command(user, cmd).await;
        Flow::Continue
    }

    // RFC 5804 §2.2: STARTTLS.
    async fn starttls(&mut self) -> Flow {
        let Some(acceptor) = self.ctx.tls.clone().filter(|_| !self.is_tls()) else {
            self.no(None, "TLS is not available");
            return Flow::Continue;
        };
        self.ok("Begin TLS negotiation now");
        if self.flush().await.is_err() {
            return Flow::Close;
        }
        let timeout = Duration::from_secs(self.ctx.config.handshake_timeout_secs);
        match crate::conn::start_tls(&mut self.reader, &acceptor, READ_BUFFER, timeout).await {
            Ok(()) => {
                // §2.2: the capabilities again, as they now stand.
                self.capabilities();
                self.ok("TLS negotiation successful");
                Flow::Continue
            }
            Err(e) => {
                tracing::info!(session = self.id, peer = %self.peer, error = %e, "managesieve STARTTLS handshake failed");
                Flow::Close
            }
        }
    }

    // RFC 5804 §2.1: AUTHENTICATE "PLAIN" [initial response] (RFC 4616).
    async fn authenticate(&mut self, mechanism: &str, initial: Option<Vec<u8>>) -> Flow {
        if mechanism != "PLAIN" {
            self.no(None, "Unsupported authentication mechanism");
            return Flow::Continue;
        }
        if !self.plaintext_ok() {
            self.no(
                Some("ENCRYPT-NEEDED"),
                "Plaintext authentication disallowed on non-secure connections (STARTTLS first)",
            );
            return Flow::Continue;
        }
        let encoded = match initial {
            Some(ir) => ir,
            None => {
                self.out.extend_from_slice(b"\"\"\r\n");
                if self.flush().await.is_err() {
                    return Flow::Close;
                }
                let timeout = Duration::from_secs(self.ctx.config.timeout_secs);
                let read = tokio::time::timeout(timeout, self.read_command_tokens()).await;
                match read {
                    Ok(Some(b)) => b,
                    _ => return Flow::Close,
                }
            }
        };
        if encoded == b"*" {
            self.no(None, "Authentication cancelled");
            return Flow::Continue;
        }
        let Ok(response) = base64::engine::general_purpose::STANDARD.decode(&encoded) else {
            self.no(None, "Invalid base64");
            return self.bad();
        };
        let mut parts = response.split(|b| *b == 0);
        let (Some(authz), Some(authc), Some(pw), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            self.no(None, "Malformed PLAIN response");
            return self.bad();
        };
        if !authz.is_empty() && authz != authc {
            self.no(None, "Logging in as another user is not allowed");
            return Flow::Continue;
        }
        let name = String::from_utf8_lossy(authc).into_owned();
        let password = Secret(String::from_utf8_lossy(pw).into_owned());
        // The same service, penalties and delays as IMAP (Proto::Imap for
        // the penalty and metric keys: a ManageSieve client is a mail
        // client of the same user).
        let checked = self
            .ctx
            .auth
            .login(&name, password, self.peer.ip(), crate::metrics::Proto::Imap)
            .await;
        match checked {
            AuthResult::Ok(user, _) => {
                tracing::info!(session = self.id, peer = %self.peer, user = %user.address, "managesieve login");
                self.state = State::Authenticated(user);
                self.ok("Logged in");
            }
            AuthResult::Failed { wait } => {
                let delay = Duration::from_millis(self.ctx.config.auth_failure_delay_ms);
                crate::auth::login_failed("managesieve", &name, self.peer, delay.max(wait)).await;
                self.no(None, "Authentication failed");
            }
            AuthResult::TempFail => {
                self.no(Some("TRYLATER"), "Temporary failure, try again later");
            }
        }
        Flow::Continue
    }

    /// The client's answer to a SASL challenge: one string (quoted or
    /// literal) on its own.
    async fn read_command_tokens(&mut self) -> Option<Vec<u8>> {
        let max = self.ctx.config.max_line_length;
        let line = self.read_line(max).await.ok()??.ok()?;
        let mut s = Scanner::default();
        match s.line(&line).ok()? {
            Next::Done => {}
            Next::Literal(n) if n as usize <= max => {
                let mut b = vec![0u8; n as usize];
                self.reader.read_exact(&mut b).await.ok()?;
                let _ = self.read_line(max).await;
                return Some(b);
            }
            Next::Literal(_) => return None,
        }
        match s.tokens.as_slice() {
            [command::Token::Str(b)] => Some(b.clone()),
            [command::Token::Atom(a)] => Some(a.as_bytes().to_vec()),
            _ => None,
        }
    }

    /// The commands of the authenticated state.
    async fn script_command(&mut self, user: User, cmd: Command) {
        let store = self.ctx.store.clone();
        let sieve = self.ctx.sieve.clone();
        let limits = self.ctx.sieve.config().limits();
        let key = user.address.to_string();
        let address = user.address.clone();
        let result = work::run(Lane::User(&key), move || -> Result<Reply, StoreError> {
            let scripts = store.sieve(&address);
            Ok(match cmd {
                // RFC 5804 §2.3
                Command::HaveSpace { name, size } => {
                    scripts.have_space(&name, size, &limits)?;
                    Reply::Ok(String::new())
                }
                // §2.6
                Command::PutScript { name, script } => {
                    scripts.have_space(&name, script.len() as u64, &limits)?;
                    if let Err(e) = sieve.compile(&script) {
                        return Ok(Reply::No(None, e));
                    }
                    scripts.put(&name, &script, &limits)?;
                    Reply::Ok(String::new())
                }
                // §2.12
                Command::CheckScript { script } => match sieve.compile(&script) {
                    Ok(_) => Reply::Ok(String::new()),
                    Err(e) => Reply::No(None, e),
                },
                // §2.7
                Command::ListScripts => Reply::List(scripts.list()?),
                // §2.8: "" deactivates.
                Command::SetActive { name } => {
                    scripts.activate((!name.is_empty()).then_some(name.as_str()))?;
                    Reply::Ok(String::new())
                }
                // §2.9
                Command::GetScript { name } => Reply::Script(scripts.get(&name)?),
                // §2.10
                Command::DeleteScript { name } => {
                    scripts.delete(&name)?;
                    Reply::Ok(String::new())
                }
                // §2.11.1
                Command::RenameScript { old, new } => {
                    scripts.rename(&old, &new)?;
                    Reply::Ok(String::new())
                }
                _ => Reply::No(None, "Not allowed now".into()),
            })
        })
        .await;
        match result {
            Ok(Ok(Reply::Ok(text))) => self.ok(if text.is_empty() { "Done" } else { &text }),
            Ok(Ok(Reply::No(code, text))) => self.no(code, &text),
            Ok(Ok(Reply::List(list))) => {
                for s in list {
                    command::string(&mut self.out, s.name.as_bytes());
                    if s.active {
                        self.out.extend_from_slice(b" ACTIVE");
                    }
                    self.out.extend_from_slice(b"\r\n");
                }
                self.ok("Listscripts completed");
            }
            Ok(Ok(Reply::Script(bytes))) => {
                self.out
                    .extend_from_slice(format!("{{{}}}\r\n", bytes.len()).as_bytes());
                self.out.extend_from_slice(&bytes);
                self.out.extend_from_slice(b"\r\n");
                self.ok("Getscript completed");
            }
            Ok(Err(e)) => {
                let (code, text) = store_error(&e);
                tracing::info!(session = self.id, user = %user.address, error = %e, "managesieve command refused");
                self.no(code, &text);
            }
            Err(e) => {
                tracing::error!(session = self.id, error = %e, "managesieve task failed");
                self.no(Some("TRYLATER"), "Temporary failure, try again later");
            }
        }
    }
}

/// What a script command answers.
enum Reply {
    Ok(String),
    No(Option<&'static str>, String),
    List(Vec<cove_store::ScriptInfo>),
    Script(Vec<u8>),
}

/// The one mapping of a store error to a ManageSieve response code (RFC
/// 5804 §1.3).
fn store_error(e: &StoreError) -> (Option<&'static str>, String) {
    match e {
        StoreError::NotFound(_) => (Some("NONEXISTENT"), "No such script".into()),
        StoreError::AlreadyExists(_) => {
            (Some("ALREADYEXISTS"), "A script of that name exists".into())
        }
        StoreError::InUse(_) => (Some("ACTIVE"), "The script is active".into()),
        StoreError::TooBig { limit, .. } => (
            Some("QUOTA/MAXSIZE"),
            format!("Scripts may have at most {limit} bytes"),
        ),
        StoreError::OverQuota { limit, .. } => {
            (Some("QUOTA/MAXSCRIPTS"), format!("At most {limit} scripts"))
        }
        StoreError::InvalidData(why) => (None, why.clone()),
        e if e.is_temporary() => (
            Some("TRYLATER"),
            "Temporary failure, try again later".into(),
        ),
        _ => (None, "The script store failed".into()),
    }
}
