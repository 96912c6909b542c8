//! One IMAP connection: the state machine of RFC 3501 §3 — not
//! authenticated, authenticated, selected, logout — reading one complete
//! command at a time, running it, and answering.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cove_store::{Account, User};
use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use imap_codec::imap_types::command::{Command, CommandBody};
use tokio::io::{AsyncWriteExt, BufReader};

use super::ImapContext;
use super::extended::{self, Extended};
use super::framing::{self, Frame};
use super::view::View;
use crate::client_text::ClientText;
use crate::conn::{Conn, PIPELINED_OUTPUT};
use crate::listener::ConnectionSlot;

/// Read buffer per connection: small, because thousands of connections
/// sit idle; commands and literals larger than it are read in pieces.
pub const READ_BUFFER: usize = 2048;

/// A logged-in user.
pub struct Authed {
    pub user: User,
    pub account: Arc<Account>,
    _slot: ConnectionSlot<i64>,
}

impl Authed {
    pub fn new(user: User, account: Arc<Account>, slot: ConnectionSlot<i64>) -> Authed {
        Authed {
            user,
            account,
            _slot: slot,
        }
    }
}

pub enum State {
    NotAuthenticated,
    Authenticated(Authed),
    Selected(Authed, Box<View>),
    Logout,
}

/// What the session does after a command.
enum Control {
    /// Read the next command.
    Next,
    /// Close the connection.
    Stop,
    /// Enter IDLE (RFC 2177) with this tag.
    Idle(String),
}

/// How a command ended, for the tagged response.
pub enum Outcome {
    Ok(String),
    No(String),
    Bad(String),
    /// STARTTLS accepted: the tagged OK goes out in clear text, then the
    /// handshake starts.
    StartTls,
}

pub struct Session {
    pub ctx: Arc<ImapContext>,
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
    pub fn new(ctx: Arc<ImapContext>, conn: Conn, peer: SocketAddr, id: u64) -> Session {
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

    /// An untagged line (`* ...`).
    pub fn untagged(&mut self, text: &str) {
        self.out.extend_from_slice(b"* ");
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            // Before login, no longer than the login deadline.
            let limit = match self.state {
                State::NotAuthenticated => Some(self.read_timeout()),
                _ => None,
            };
            crate::conn::write_within(self.reader.get_mut(), &self.out, limit).await?;
            // A waiting session keeps no output buffer: thousands of them
            // wait in IDLE.
            self.out = Vec::new();
        }
        Ok(())
    }

    pub fn is_tls(&self) -> bool {
        self.reader.get_ref().is_tls()
    }

    /// Plaintext passwords are accepted over TLS, from loopback, or when
    /// the operator allows it.
    pub fn plaintext_ok(&self) -> bool {
        plaintext_allowed(
            self.is_tls() || self.reader.get_ref().from_trusted_proxy(),
            self.peer.ip(),
            self.ctx.config.allow_plaintext_auth,
        )
    }

    pub fn capabilities(&self) -> String {
        let mut caps = vec!["IMAP4rev1"];
        if let State::NotAuthenticated = self.state {
            if self.ctx.tls.is_some() && !self.is_tls() {
                caps.push("STARTTLS");
            }
            if self.plaintext_ok() {
                caps.push("AUTH=PLAIN");
                caps.push("SASL-IR");
            } else {
                caps.push("LOGINDISABLED");
            }
        }
        caps.extend([
            "LITERAL+",
            "ID",
            "ENABLE",
            "IDLE",
            "NAMESPACE",
            "UNSELECT",
            "UIDPLUS",
            "MOVE",
            "CHILDREN",
            "SPECIAL-USE",
            "CREATE-SPECIAL-USE",
            "LIST-EXTENDED",
            "LIST-STATUS",
            "BINARY",
        ]);
        let limit = format!("APPENDLIMIT={}", self.ctx.config.max_literal_size);
        let mut s = caps.join(" ");
        s.push(' ');
        s.push_str(&limit);
        s
    }

    pub async fn run(mut self) {
        {
            // Not kept for the session's life (it would be: a local of
            // this function lives across the await below).
            let greeting = format!(
                "OK [CAPABILITY {}] {} IMAP cove ready",
                self.capabilities(),
                self.ctx.hostname
            );
            self.untagged(&greeting);
        }
        self.serve().await;
        let _ = self.flush().await;
        let _ = self.reader.get_mut().shutdown().await;
        tracing::debug!(session = self.id, peer = %self.peer, "imap session ended");
    }

    async fn serve(&mut self) {
        let mut shutdown = self.ctx.shutdown.clone();
        let mut drained = crate::drain::subscribe();
        loop {
            let waiting = !self.reader.buffer().is_empty();
            if (!waiting || self.out.len() >= PIPELINED_OUTPUT) && self.flush().await.is_err() {
                return;
            }
            if matches!(self.state, State::Logout) {
                return;
            }
            if *shutdown.borrow() {
                self.untagged("BYE [UNAVAILABLE] Server shutting down");
                return;
            }
            let timeout = self.read_timeout();
            let limits = self.command_limits();
            // Boxed like the commands (below), so that the task is no
            // bigger than what IDLE needs.
            let command = Box::pin(async {
                // No read buffer held while the client is quiet.
                super::waiting::until_input(&mut self.reader, READ_BUFFER).await?;
                framing::read_command(&mut self.reader, limits).await
            });
            let read = tokio::select! {
                r = tokio::time::timeout(timeout, command) => r,
                _ = shutdown.changed() => continue,
                _ = drained.changed() => {
                    // Between commands: RFC 3501 §7.1.5 BYE, then close.
                    tracing::info!(session = self.id, peer = %self.peer, "imap session sent away: node drained");
                    self.untagged(&format!("BYE [UNAVAILABLE] {}", crate::drain::REASON));
                    return;
                }
            };
            let frame = match read {
                Err(_) if matches!(self.state, State::NotAuthenticated) => {
                    tracing::info!(session = self.id, peer = %self.peer, "imap login timeout");
                    self.untagged("BYE Login timeout; log in sooner");
                    return;
                }
                Err(_) => {
                    tracing::info!(session = self.id, peer = %self.peer, "imap autologout");
                    self.untagged("BYE Autologout; idle for too long");
                    return;
                }
                Ok(Err(_)) | Ok(Ok(Frame::Eof)) => return,
                Ok(Ok(f)) => f,
            };
            let bytes = match frame {
                Frame::Command(b) => b,
                Frame::Eof => return,
                Frame::TooBig { tag, why } => {
                    if self.too_big(tag, why, limits) {
                        return;
                    }
                    continue;
                }
            };
            // Each command runs in its own allocation, freed when it ends,
            // except IDLE, which sessions spend most of their life in: the
            // task itself stays as small as IDLE needs, and a session in
            // IDLE holds neither the command nor its bytes.
            match Box::pin(self.command(bytes)).await {
                Control::Next => {}
                Control::Stop => return,
                Control::Idle(tag) => {
                    let outcome = self.idle(&tag).await;
                    if self.respond(&tag, outcome) {
                        return;
                    }
                }
            }
        }
    }

    /// How long the next read may wait: the autologout timer, and before
    /// login no later than the login deadline.
    pub fn read_timeout(&self) -> Duration {
        let idle = Duration::from_secs(self.ctx.config.autologout_secs);
        match self.state {
            State::NotAuthenticated => idle.min(
                self.login_deadline
                    .saturating_duration_since(tokio::time::Instant::now()),
            ),
            _ => idle,
        }
    }

    /// What one command may hold: before login nobody needs more than a
    /// password's worth of literals, so a client that has not logged in
    /// cannot make the server hold more than a few KiB.
    fn command_limits(&self) -> framing::CommandLimits {
        let c = &self.ctx.config;
        match self.state {
            State::NotAuthenticated => framing::CommandLimits {
                max_line: c.max_line_length,
                max_literals: c.max_literals_before_login,
                max_literal_bytes: c.max_literal_size.min(c.max_literal_size_before_login),
            },
            _ => framing::CommandLimits {
                max_line: c.max_line_length,
                max_literals: c.max_literals_per_command,
                max_literal_bytes: c.max_literal_size,
            },
        }
    }

    /// Answer a command over a limit (RFC 4469, RFC 5530 TOOBIG); true when
    /// it was one bad command too many.
    fn too_big(
        &mut self,
        tag: Option<String>,
        why: framing::TooBig,
        limits: framing::CommandLimits,
    ) -> bool {
        use framing::TooBig;
        let tag = tag.unwrap_or_else(|| "*".to_string());
        tracing::info!(session = self.id, peer = %self.peer, limit = ?why, "imap command over a limit refused");
        let max = limits.max_literal_bytes;
        let text = match why {
            TooBig::Line => "BAD [TOOBIG] Command line too long".to_string(),
            TooBig::Literal(length) => {
                format!("NO [TOOBIG] Literal of {length} bytes exceeds the limit of {max}")
            }
            TooBig::Literals => format!(
                "BAD [TOOBIG] More than {} literals in one command",
                limits.max_literals
            ),
            TooBig::LiteralTotal => {
                format!("NO [TOOBIG] The literals of one command exceed {max} bytes in all")
            }
        };
        self.out
            .extend_from_slice(format!("{tag} {text}\r\n").as_bytes());
        matches!(why, TooBig::Line | TooBig::Literals) && self.count_bad()
    }

    /// Decode and run one command read off the wire.
    async fn command(&mut self, bytes: Vec<u8>) -> Control {
        if let Some(parsed) = extended::parse(&bytes) {
            let (tag, outcome) = match parsed {
                Ok(cmd) => self.dispatch_extended(cmd).await,
                Err(why) => (
                    framing::tag_of(&bytes).unwrap_or("*").to_string(),
                    Outcome::Bad(why),
                ),
            };
            if self.respond(&tag, outcome) {
                return Control::Stop;
            }
            return Control::Next;
        }
        let decoded = CommandCodec::default().decode(&bytes);
        match decoded {
            Ok((_, command)) => {
                // APPEND: the message stays in the buffer it was read
                // into; only its place in it travels (held once).
                if let Some(append) = Append::borrowed_from(&command, &bytes) {
                    let tag = command.tag.inner().to_string();
                    drop(command);
                    let outcome = match self.state {
                        State::NotAuthenticated => Outcome::Bad("Log in first".into()),
                        _ => self.append(append, bytes).await,
                    };
                    if self.respond(&tag, outcome) {
                        return Control::Stop;
                    }
                    return Control::Next;
                }
                let command = command.into_static_command();
                let tag = command.tag.inner().to_string();
                drop(bytes);
                // IDLE runs in the session's own task (see `serve`).
                let idle = matches!(command.body, CommandBody::Idle)
                    && !matches!(self.state, State::NotAuthenticated);
                if idle {
                    return Control::Idle(tag);
                }
                let outcome = self.dispatch(command).await;
                if let Outcome::StartTls = outcome {
                    self.finish(&tag, Outcome::Ok("Begin TLS negotiation now".into()));
                    if !self.complete_starttls().await {
                        return Control::Stop;
                    }
                    return Control::Next;
                }
                if self.respond(&tag, outcome) {
                    return Control::Stop;
                }
            }
            Err(_) if crate::proxy::looks_like_header(&bytes) => {
                crate::proxy::refused_unexpected("imap", self.id, self.peer);
                return Control::Stop;
            }
            Err(_) => {
                let tag = framing::tag_of(&bytes).unwrap_or("*").to_string();
                let shown = bytes.trim_ascii_end();
                tracing::info!(session = self.id, peer = %self.peer, line = %ClientText::line(shown), "imap command not understood");
                self.finish(&tag, Outcome::Bad("Command not understood".into()));
                if self.count_bad() {
                    return Control::Stop;
                }
            }
        }
        Control::Next
    }

    /// Send the tagged response; true when it was one BAD too many (the
    /// BYE follows the tagged line).
    fn respond(&mut self, tag: &str, outcome: Outcome) -> bool {
        let bad = matches!(outcome, Outcome::Bad(_));
        self.finish(tag, outcome);
        if bad {
            self.count_bad()
        } else {
            self.bad_in_a_row = 0;
            false
        }
    }

    fn finish(&mut self, tag: &str, outcome: Outcome) {
        let (word, text) = match outcome {
            Outcome::Ok(t) => ("OK", t),
            Outcome::StartTls => ("OK", "Begin TLS negotiation now".to_string()),
            Outcome::No(t) => ("NO", t),
            Outcome::Bad(t) => ("BAD", t),
        };
        if word == "NO" {
            let user = self.account().map(|a| a.email().to_string());
            tracing::info!(session = self.id, peer = %self.peer, user = ?user, tag = ?tag, reply = ?text, "imap command refused");
        }
        let text = text.replace(['\r', '\n'], " ");
        self.out
            .extend_from_slice(format!("{tag} {word} {text}\r\n").as_bytes());
    }

    fn count_bad(&mut self) -> bool {
        self.bad_in_a_row += 1;
        if self.bad_in_a_row >= self.ctx.config.max_bad_commands {
            tracing::warn!(session = self.id, peer = %self.peer, "too many bad imap commands; closing");
            self.untagged("BYE Too many bad commands");
            return true;
        }
        false
    }

    /// Run one command in the current state.
    async fn dispatch(&mut self, command: Command<'static>) -> Outcome {
        use CommandBody as C;
        let tag = command.tag.inner().to_string();
        match command.body {
            // RFC 3501 §6.1: any state.
            C::Capability => {
                let caps = self.capabilities();
                self.untagged(&format!("CAPABILITY {caps}"));
                Outcome::Ok("CAPABILITY completed".into())
            }
            C::Noop => {
                self.announce(true).await;
                Outcome::Ok("NOOP completed".into())
            }
            C::Logout => {
                self.untagged("BYE Logging out");
                self.state = State::Logout;
                Outcome::Ok("LOGOUT completed".into())
            }
            // RFC 2971: ID.
            C::Id { .. } => {
                self.untagged("ID (\"name\" \"cove\" \"vendor\" \"cove\")");
                Outcome::Ok("ID completed".into())
            }
            // RFC 2342: NAMESPACE.
            C::Namespace => match self.state {
                State::NotAuthenticated => Outcome::Bad("Log in first".into()),
                _ => {
                    self.untagged("NAMESPACE ((\"\" \".\")) NIL NIL");
                    Outcome::Ok("NAMESPACE completed".into())
                }
            },
            // RFC 5161: ENABLE (no extension we support needs enabling yet).
            C::Enable { .. } => match self.state {
                State::NotAuthenticated => Outcome::Bad("Log in first".into()),
                _ => {
                    self.untagged("ENABLED");
                    Outcome::Ok("ENABLE completed".into())
                }
            },
            // RFC 3501 §6.2: not authenticated.
            C::StartTLS => self.starttls().await,
            C::Login { username, password } => match self.state {
                State::NotAuthenticated => {
                    self.login(username.as_ref(), password.declassify().as_ref())
                        .await
                }
                _ => Outcome::Bad("Already logged in".into()),
            },
            C::Authenticate {
                mechanism,
                initial_response,
            } => match self.state {
                State::NotAuthenticated => {
                    let ir = initial_response.map(|s| s.declassify().to_vec());
                    self.authenticate(mechanism.as_ref(), ir).await
                }
                _ => Outcome::Bad("Already logged in".into()),
            },
            body => {
                if matches!(self.state, State::NotAuthenticated) {
                    return Outcome::Bad("Log in first".into());
                }
                self.dispatch_authenticated(&tag, body).await
            }
        }
    }

    async fn dispatch_authenticated(&mut self, tag: &str, body: CommandBody<'static>) -> Outcome {
        use CommandBody as C;
        match body {
            // RFC 3501 §6.3: authenticated state.
            C::Select { mailbox, .. } => self.select(mailbox_name(&mailbox), false).await,
            C::Examine { mailbox, .. } => self.select(mailbox_name(&mailbox), true).await,
            C::Create { mailbox } => self.create(mailbox_name(&mailbox)).await,
            C::Delete { mailbox } => self.delete(mailbox_name(&mailbox)).await,
            C::Rename { from, to } => self.rename(mailbox_name(&from), mailbox_name(&to)).await,
            C::Subscribe { mailbox } => self.subscribe(mailbox_name(&mailbox), true).await,
            C::Unsubscribe { mailbox } => self.subscribe(mailbox_name(&mailbox), false).await,
            C::List {
                reference,
                mailbox_wildcard,
            } => {
                self.list(
                    mailbox_name(&reference),
                    list_pattern(&mailbox_wildcard),
                    false,
                )
                .await
            }
            C::Lsub {
                reference,
                mailbox_wildcard,
            } => {
                self.list(
                    mailbox_name(&reference),
                    list_pattern(&mailbox_wildcard),
                    true,
                )
                .await
            }
            C::Status {
                mailbox,
                item_names,
            } => self.status(mailbox_name(&mailbox), &item_names).await,
            C::Idle => self.idle(tag).await,
            body => {
                if !matches!(self.state, State::Selected(..)) {
                    return Outcome::Bad("No mailbox selected".into());
                }
                self.dispatch_selected(body).await
            }
        }
    }

    async fn dispatch_selected(&mut self, body: CommandBody<'static>) -> Outcome {
        use CommandBody as C;
        match body {
            // RFC 3501 §6.4: selected state.
            C::Check => {
                self.announce(true).await;
                Outcome::Ok("CHECK completed".into())
            }
            C::Close => self.close(true).await,
            C::Unselect => self.close(false).await,
            C::Expunge => self.expunge(None).await,
            C::ExpungeUid { sequence_set } => self.expunge(Some(sequence_set)).await,
            C::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                ..
            } => self.fetch(sequence_set, macro_or_item_names, uid).await,
            C::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
                ..
            } => self.store(sequence_set, kind, response, flags, uid).await,
            C::Search {
                charset,
                criteria,
                uid,
            } => {
                // RFC 3501 §6.4.4: a charset we do not know is NO [BADCHARSET].
                let known = charset.as_ref().is_none_or(|c| {
                    let c: &str = c.as_ref();
                    c.eq_ignore_ascii_case("UTF-8") || c.eq_ignore_ascii_case("US-ASCII")
                });
                if known {
                    self.search(criteria, uid).await
                } else {
                    Outcome::No("[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset".into())
                }
            }
            C::Copy {
                sequence_set,
                mailbox,
                uid,
            } => {
                self.copy_or_move(sequence_set, mailbox_name(&mailbox), uid, false)
                    .await
            }
            C::Move {
                sequence_set,
                mailbox,
                uid,
            } => {
                self.copy_or_move(sequence_set, mailbox_name(&mailbox), uid, true)
                    .await
            }
            _ => Outcome::Bad("Command not supported".into()),
        }
    }

    /// Commands parsed by `extended` rather than imap-codec.
    async fn dispatch_extended(&mut self, cmd: Extended) -> (String, Outcome) {
        if matches!(self.state, State::NotAuthenticated) {
            let tag = match &cmd {
                Extended::List { tag, .. } | Extended::CreateSpecialUse { tag, .. } => tag.clone(),
            };
            return (tag, Outcome::Bad("Log in first".into()));
        }
        match cmd {
            // RFC 5258 LIST-EXTENDED, RFC 5819 LIST-STATUS.
            Extended::List { tag, options } => (tag, self.list_mailboxes(options, false).await),
            // RFC 6154 §3 CREATE-SPECIAL-USE.
            Extended::CreateSpecialUse {
                tag,
                mailbox,
                special_use,
            } => (tag, self.create_special_use(mailbox, special_use).await),
        }
    }

    // RFC 3501 §6.2.1: STARTTLS.
    async fn starttls(&mut self) -> Outcome {
        if !matches!(self.state, State::NotAuthenticated) {
            return Outcome::Bad("STARTTLS only before login".into());
        }
        if self.is_tls() {
            return Outcome::Bad("TLS already active".into());
        }
        if self.ctx.tls.is_none() {
            return Outcome::No("TLS not available".into());
        }
        Outcome::StartTls
    }

    /// After STARTTLS's OK: flush it, then run the handshake.
    async fn complete_starttls(&mut self) -> bool {
        let Some(acceptor) = self.ctx.tls.clone() else {
            return false;
        };
        if self.flush().await.is_err() {
            return false;
        }
        match crate::conn::start_tls(
            &mut self.reader,
            &acceptor,
            READ_BUFFER,
            Duration::from_secs(self.ctx.config.handshake_timeout_secs),
        )
        .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::info!(session = self.id, peer = %self.peer, error = %e, "imap STARTTLS handshake failed");
                false
            }
        }
    }
}

/// RFC 3501 §6.2.3, RFC 8314: a password may cross the connection in clear
/// text only inside TLS, from loopback, or where the operator allows it.
fn plaintext_allowed(tls: bool, peer: std::net::IpAddr, allowed_by_config: bool) -> bool {
    crate::auth::plaintext_allowed(tls, peer, allowed_by_config)
}

/// A mailbox name as cove stores it (modified UTF-7, INBOX normalised).
pub fn mailbox_name(m: &imap_codec::imap_types::mailbox::Mailbox<'_>) -> String {
    use imap_codec::imap_types::mailbox::Mailbox;
    match m {
        Mailbox::Inbox => "INBOX".to_string(),
        Mailbox::Other(o) => String::from_utf8_lossy(o.as_ref()).into_owned(),
    }
}

fn list_pattern(m: &imap_codec::imap_types::mailbox::ListMailbox<'_>) -> String {
    use imap_codec::imap_types::mailbox::ListMailbox;
    match m {
        ListMailbox::Token(t) => String::from_utf8_lossy(t.as_ref()).into_owned(),
        ListMailbox::String(s) => String::from_utf8_lossy(s.as_ref()).into_owned(),
    }
}

/// An APPEND whose message is a range of the command's buffer.
pub struct Append {
    pub mailbox: String,
    pub flags: Vec<imap_codec::imap_types::flag::Flag<'static>>,
    pub date: Option<imap_codec::imap_types::datetime::DateTime>,
    pub message: std::ops::Range<usize>,
}

impl Append {
    /// The APPEND in `command`, with its literal located in `buf` (the
    /// bytes it was decoded from); `None` for any other command.
    fn borrowed_from(command: &Command<'_>, buf: &[u8]) -> Option<Append> {
        use imap_codec::imap_types::IntoStatic;
        use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
        let CommandBody::Append {
            mailbox,
            flags,
            date,
            message,
        } = &command.body
        else {
            return None;
        };
        let data: &[u8] = match message {
            LiteralOrLiteral8::Literal(l) => l.data(),
            LiteralOrLiteral8::Literal8(l) => &l.data,
        };
        let start = (data.as_ptr() as usize).checked_sub(buf.as_ptr() as usize)?;
        let range = start..start + data.len();
        // Only if the literal really is a slice of `buf` (imap-codec borrows).
        if buf
            .get(range.clone())
            .is_none_or(|s| !std::ptr::eq(s.as_ptr(), data.as_ptr()))
        {
            return None;
        }
        Some(Append {
            mailbox: mailbox_name(mailbox),
            flags: flags.iter().cloned().map(IntoStatic::into_static).collect(),
            date: date.clone(),
            message: range,
        })
    }
}

/// Turn a decoded command into one that owns its data.
trait IntoStaticCommand {
    fn into_static_command(self) -> Command<'static>;
}

impl IntoStaticCommand for Command<'_> {
    fn into_static_command(self) -> Command<'static> {
        use imap_codec::imap_types::IntoStatic;
        self.into_static()
    }
}

#[cfg(test)]
mod tests {
    use super::plaintext_allowed;

    #[test]
    fn plaintext_passwords_need_tls_loopback_or_permission() {
        let remote: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        let local: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        assert!(
            !plaintext_allowed(false, remote, false),
            "remote clear text refused"
        );
        assert!(plaintext_allowed(true, remote, false));
        assert!(plaintext_allowed(false, local, false));
        assert!(plaintext_allowed(false, "::1".parse().unwrap(), false));
        assert!(plaintext_allowed(false, remote, true));
    }
}
