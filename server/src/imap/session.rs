//! One IMAP connection: the state machine of RFC 3501 §3 — not
//! authenticated, authenticated, selected, logout — reading one complete
//! command at a time, decoding it into a typed command (`command`), and
//! running it with the state its table row says it needs.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncWriteExt, BufReader};

use super::ImapContext;
use super::command::{self, Announce, AnyState, Command, Decoded, Valid};
pub use super::connection::Authed;
use super::connection::Connection;
use super::framing::{self, Frame};
use super::outcome::{Code, Outcome, untagged_ok};
use super::revision::Revision;
use super::view::View;
use crate::client_text::ClientText;
use crate::conn::{Conn, PIPELINED_OUTPUT};

/// Read buffer per connection: small, because thousands of connections
/// sit idle; commands and literals larger than it are read in pieces.
pub const READ_BUFFER: usize = 2048;

/// RFC 3501 §3: the session's state, each with what it holds.
pub enum State {
    NotAuthenticated,
    Authenticated(Authed),
    Selected(Authed, Box<View>),
    Logout,
}

/// What the session does after a command.
pub(super) enum Control {
    /// Read the next command.
    Next,
    /// Close the connection.
    Stop,
    /// Enter IDLE (RFC 2177) with this tag.
    Idle(String),
}

pub struct Session {
    pub conn: Connection,
    pub state: State,
    bad_in_a_row: u32,
    /// Not logged in by then: the connection is closed (`login_timeout_secs`).
    login_deadline: tokio::time::Instant,
}

impl Session {
    pub fn new(ctx: Arc<ImapContext>, conn: Conn, peer: SocketAddr, id: u64) -> Session {
        let login_timeout = ctx.config.login_timeout_secs;
        Session {
            conn: Connection {
                ctx,
                peer,
                id,
                reader: BufReader::with_capacity(READ_BUFFER, conn),
                out: Vec::new(),
                enabled: Default::default(),
            },
            state: State::NotAuthenticated,
            bad_in_a_row: 0,
            login_deadline: tokio::time::Instant::now() + Duration::from_secs(login_timeout),
        }
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        // Before login, no longer than the login deadline.
        let limit = match self.state {
            State::NotAuthenticated => Some(self.read_timeout()),
            _ => None,
        };
        self.conn.flush_within(limit).await
    }

    pub fn logged_in(&self) -> bool {
        matches!(self.state, State::Authenticated(_) | State::Selected(..))
    }

    /// Leave the selected state (if any), keeping the login.
    pub fn deselect(&mut self) {
        let state = std::mem::replace(&mut self.state, State::Logout);
        self.state = match state {
            State::Selected(a, _) | State::Authenticated(a) => State::Authenticated(a),
            other => other,
        };
    }

    pub async fn run(mut self) {
        {
            // Not kept for the session's life (it would be: a local of
            // this function lives across the await below).
            let greeting = format!(
                "OK [CAPABILITY {}] {} IMAP cove ready",
                super::capability::capabilities(&self.conn, self.logged_in()),
                self.conn.ctx.hostname
            );
            self.conn.untagged(&greeting);
        }
        self.serve().await;
        let _ = self.flush().await;
        let _ = self.conn.reader.get_mut().shutdown().await;
        tracing::debug!(session = self.conn.id, peer = %self.conn.peer, "imap session ended");
    }

    async fn serve(&mut self) {
        let mut shutdown = self.conn.ctx.shutdown.clone();
        let mut drained = crate::drain::subscribe();
        loop {
            let waiting = !self.conn.reader.buffer().is_empty();
            if (!waiting || self.conn.out.len() >= PIPELINED_OUTPUT) && self.flush().await.is_err()
            {
                return;
            }
            if matches!(self.state, State::Logout) {
                return;
            }
            if *shutdown.borrow() {
                self.conn.untagged("BYE [UNAVAILABLE] Server shutting down");
                return;
            }
            let timeout = self.read_timeout();
            let limits = self.command_limits();
            // Boxed like the commands (below), so that the task is no
            // bigger than what IDLE needs.
            let command = Box::pin(async {
                // No read buffer held while the client is quiet.
                super::waiting::until_input(&mut self.conn.reader, READ_BUFFER).await?;
                framing::read_command(&mut self.conn.reader, limits).await
            });
            let read = tokio::select! {
                r = tokio::time::timeout(timeout, command) => r,
                _ = shutdown.changed() => continue,
                _ = drained.changed() => {
                    // Between commands: RFC 3501 §7.1.5 BYE, then close.
                    tracing::info!(session = self.conn.id, peer = %self.conn.peer, "imap session sent away: node drained");
                    self.conn.untagged(&format!("BYE [UNAVAILABLE] {}", crate::drain::REASON));
                    return;
                }
            };
            let frame = match read {
                Err(_) if matches!(self.state, State::NotAuthenticated) => {
                    tracing::info!(session = self.conn.id, peer = %self.conn.peer, "imap login timeout");
                    self.conn.untagged("BYE Login timeout; log in sooner");
                    return;
                }
                Err(_) => {
                    tracing::info!(session = self.conn.id, peer = %self.conn.peer, "imap autologout");
                    self.conn.untagged("BYE Autologout; idle for too long");
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
                    let outcome = self.idle().await;
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
        let idle = Duration::from_secs(self.conn.ctx.config.autologout_secs);
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
        let c = &self.conn.ctx.config;
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
        tracing::info!(session = self.conn.id, peer = %self.conn.peer, limit = ?why, "imap command over a limit refused");
        let max = limits.max_literal_bytes;
        let outcome = match why {
            TooBig::Line => Outcome::bad_with(Code::TooBig, "Command line too long"),
            TooBig::Literal(length) => Outcome::no(
                Code::TooBig,
                format!("Literal of {length} bytes exceeds the limit of {max}"),
            ),
            TooBig::Literals => Outcome::bad_with(
                Code::TooBig,
                format!("More than {} literals in one command", limits.max_literals),
            ),
            TooBig::LiteralTotal => Outcome::no(
                Code::TooBig,
                format!("The literals of one command exceed {max} bytes in all"),
            ),
        };
        outcome.write(&tag, &mut self.conn.out);
        matches!(why, TooBig::Line | TooBig::Literals) && self.count_bad()
    }

    /// Decode and run one command read off the wire.
    async fn command(&mut self, bytes: Vec<u8>) -> Control {
        // RFC 5182: `$` is the saved search result of the selected mailbox.
        let bytes = match &self.state {
            State::Selected(_, view) => {
                super::searchres::substitute(&bytes, &view.saved, view).unwrap_or(bytes)
            }
            _ => bytes,
        };
        let (tag, command) = match command::decode_as(bytes, self.conn.enabled.revision) {
            Decoded::Command { tag, command } => (tag, command),
            Decoded::Unsupported { tag, name } => {
                // Not counted toward max_bad_commands, and no reset either.
                tracing::info!(session = self.conn.id, peer = %self.conn.peer, command = name, "imap command not supported");
                self.finish(&tag, Outcome::bad(format!("{name} is not supported")));
                return Control::Next;
            }
            Decoded::Invalid { tag, why, line } => {
                if let Some(line) = line {
                    if crate::proxy::looks_like_header(&line) {
                        crate::proxy::refused_unexpected("imap", self.conn.id, self.conn.peer);
                        return Control::Stop;
                    }
                    tracing::info!(session = self.conn.id, peer = %self.conn.peer, line = %ClientText::line(line.trim_ascii_end()), "imap command not understood");
                }
                return self.answer(&tag, Outcome::bad(why));
            }
        };
        let spec = command.spec();
        if let Some(refusal) = self.refusal(spec.valid, &command) {
            return self.answer(&tag, refusal);
        }
        let command = match command {
            // Pipelined FETCHes that only read go to the store together.
            Command::Selected(command::Selected::Fetch(f)) if self.batchable(&f, &mut 0) => {
                return self.fetch_pipelined(tag, f).await;
            }
            other => other,
        };
        let outcome = match command {
            // IDLE runs in the session's own task (see `serve`).
            Command::Authenticated(command::Authenticated::Idle) => return Control::Idle(tag),
            Command::NotAuthenticated(command::NotAuthenticated::StartTls) => {
                return self.starttls(&tag).await;
            }
            Command::Authenticated(command::Authenticated::Compress) => {
                return self.compress(&tag).await;
            }
            Command::Any(c) => self.any_state(c).await,
            Command::NotAuthenticated(c) => self.not_authenticated(c).await,
            Command::Authenticated(c) => self.authenticated(c).await,
            Command::Selected(c) => self.selected(c).await,
        };
        self.announce_after(spec.announce).await;
        self.answer(&tag, outcome)
    }

    /// Whether a FETCH may be answered together with others (see
    /// `fetch::batchable`), `rows` counting the messages of the batch.
    fn batchable(&self, f: &command::Fetch, rows: &mut usize) -> bool {
        match &self.state {
            State::Selected(_, view) => super::fetch::batchable(view, f, rows),
            _ => false,
        }
    }

    /// A FETCH that only reads, and every such FETCH the client pipelined
    /// after it that is already complete in the read buffer: answered in
    /// one trip to the blocking pool, in order, each with its tagged
    /// status. Untagged updates come after the last one (RFC 3501 §7.4.1:
    /// none is owed between them). The first command that does not fit
    /// stays in the buffer for the next round.
    async fn fetch_pipelined(&mut self, tag: String, first: command::Fetch) -> Control {
        let mut rows = 0;
        self.batchable(&first, &mut rows);
        let mut batch = vec![(tag, first)];
        while let Some((len, tag, next)) = self.buffered_fetch() {
            if !self.batchable(&next, &mut rows) {
                break;
            }
            Pin::new(&mut self.conn.reader).consume(len);
            batch.push((tag, next));
        }
        let State::Selected(user, view) = &mut self.state else {
            return self.answer(&batch[0].0, Outcome::bad("No mailbox selected"));
        };
        let answered = super::fetch::fetch_batch(&mut self.conn, user, view, batch).await;
        let last = answered.len().saturating_sub(1);
        for (i, (tag, responses, outcome)) in answered.into_iter().enumerate() {
            self.conn.out.extend_from_slice(&responses);
            if i == last {
                self.announce_after(Announce::WithoutExpunge).await;
            }
            if self.respond(&tag, outcome) {
                return Control::Stop;
            }
        }
        Control::Next
    }

    /// The next command, if it is a FETCH whose line (with no literal) is
    /// complete in the read buffer: its length there, tag and FETCH. The
    /// buffer is left as it is.
    fn buffered_fetch(&self) -> Option<(usize, String, command::Fetch)> {
        let buffered = self.conn.reader.buffer();
        let end = buffered.iter().position(|b| *b == b'\n')? + 1;
        let line = &buffered[..end];
        if end > self.conn.ctx.config.max_line_length || framing::announcement(line).is_some() {
            return None;
        }
        let State::Selected(_, view) = &self.state else {
            return None;
        };
        let bytes = line.to_vec();
        let bytes = super::searchres::substitute(&bytes, &view.saved, view).unwrap_or(bytes);
        match command::decode(bytes) {
            Decoded::Command {
                tag,
                command: Command::Selected(command::Selected::Fetch(f)),
            } => Some((end, tag, f)),
            _ => None,
        }
    }

    /// The BAD for a command not valid in the current state (RFC 3501 §6).
    fn refusal(&self, valid: Valid, command: &Command) -> Option<Outcome> {
        let text = match (valid, &self.state) {
            (Valid::Any, _)
            | (Valid::NotAuthenticated, State::NotAuthenticated)
            | (Valid::Authenticated, State::Authenticated(_) | State::Selected(..))
            | (Valid::Selected, State::Selected(..)) => return None,
            (Valid::NotAuthenticated, _) => match command {
                Command::NotAuthenticated(command::NotAuthenticated::StartTls) => {
                    "STARTTLS only before login"
                }
                _ => "Already logged in",
            },
            (_, State::NotAuthenticated | State::Logout) => "Log in first",
            (Valid::Selected, _) => "No mailbox selected",
        };
        Some(Outcome::bad(text))
    }

    /// Send the tagged response and say what comes next.
    pub(super) fn answer(&mut self, tag: &str, outcome: Outcome) -> Control {
        if self.respond(tag, outcome) {
            Control::Stop
        } else {
            Control::Next
        }
    }

    /// Send the tagged response; true when it was one BAD too many (the
    /// BYE follows the tagged line).
    fn respond(&mut self, tag: &str, outcome: Outcome) -> bool {
        let bad = outcome.is_bad();
        self.finish(tag, outcome);
        if bad {
            self.count_bad()
        } else {
            self.bad_in_a_row = 0;
            false
        }
    }

    fn finish(&mut self, tag: &str, outcome: Outcome) {
        match outcome.status {
            super::outcome::Status::No => {
                let user = match &self.state {
                    State::Authenticated(a) | State::Selected(a, _) => Some(a.account.email()),
                    _ => None,
                };
                tracing::info!(session = self.conn.id, peer = %self.conn.peer, user = ?user, tag = ?tag, code = ?outcome.code, reply = ?outcome.text, "imap command refused");
            }
            super::outcome::Status::Bad => {
                tracing::info!(session = self.conn.id, peer = %self.conn.peer, tag = ?tag, reply = ?outcome.text, "imap command rejected");
            }
            super::outcome::Status::Ok => {}
        }
        outcome.write(tag, &mut self.conn.out);
    }

    fn count_bad(&mut self) -> bool {
        self.bad_in_a_row += 1;
        if self.bad_in_a_row >= self.conn.ctx.config.max_bad_commands {
            tracing::warn!(session = self.conn.id, peer = %self.conn.peer, "too many bad imap commands; closing");
            self.conn.untagged("BYE Too many bad commands");
            return true;
        }
        false
    }

    /// After a command, what its table row allows of other sessions'
    /// changes (RFC 3501 §7.4.1).
    pub(super) async fn announce_after(&mut self, announce: Announce) {
        if announce == Announce::Nothing {
            return;
        }
        let State::Selected(user, view) = &mut self.state else {
            return;
        };
        let everything = announce == Announce::Everything;
        use super::announce::MailboxGone;
        match super::announce::announce(&mut self.conn, user, view, everything).await {
            Ok(()) => {}
            // The mailbox itself went away (deleted or renamed elsewhere).
            Err(MailboxGone::Removed) => {
                self.conn
                    .untagged("BYE [NONEXISTENT] The selected mailbox was removed");
                self.state = State::Logout;
            }
            Err(MailboxGone::Renumbered) => {
                self.conn.untagged(
                    "BYE The selected mailbox was renumbered (new UIDVALIDITY): select it again",
                );
                self.state = State::Logout;
            }
        }
    }

    // RFC 3501 §6.1.
    async fn any_state(&mut self, c: AnyState) -> Outcome {
        match c {
            // RFC 3501 §6.1.1.
            AnyState::Capability => {
                let caps = super::capability::capabilities(&self.conn, self.logged_in());
                self.conn.untagged(&format!("CAPABILITY {caps}"));
                Outcome::ok("CAPABILITY completed")
            }
            // RFC 3501 §6.1.2: the announcements are the table's.
            AnyState::Noop => Outcome::ok("NOOP completed"),
            // RFC 3501 §6.1.3.
            AnyState::Logout => {
                self.conn.untagged("BYE Logging out");
                self.state = State::Logout;
                Outcome::ok("LOGOUT completed")
            }
            AnyState::Id => super::capability::id(&mut self.conn),
        }
    }

    // RFC 3501 §6.2.
    async fn not_authenticated(&mut self, c: command::NotAuthenticated) -> Outcome {
        use command::NotAuthenticated as N;
        match c {
            N::Login { username, password } => self.login(&username, password).await,
            N::Authenticate {
                mechanism,
                initial_response,
            } => self.authenticate(&mechanism, initial_response).await,
            // Answered in `command` (the handshake follows the OK).
            N::StartTls => Outcome::bad("STARTTLS only before login"),
        }
    }

    // RFC 3501 §6.3: the handlers get the logged-in user.
    async fn authenticated(&mut self, c: command::Authenticated) -> Outcome {
        use command::Authenticated as A;
        // Commands that change the selection.
        match c {
            A::Select {
                mailbox,
                read_only,
                parameters,
            } => {
                // A failed SELECT leaves no mailbox selected (RFC 3501 §6.3.1);
                // RFC 7162 §3.2.11: with QRESYNC, the client is told first;
                // RFC 9051 §7.1: always in IMAP4rev2.
                let enabled = self.conn.enabled;
                if matches!(self.state, State::Selected(..))
                    && (enabled.qresync || enabled.revision == Revision::Rev2)
                {
                    untagged_ok(Code::Closed, "Previous mailbox closed", &mut self.conn.out);
                }
                self.deselect();
                let State::Authenticated(user) = &self.state else {
                    return Outcome::bad("Log in first");
                };
                let mailbox = match mailbox {
                    Ok(m) => m,
                    Err(e) => return self.conn.refuse_name(&e),
                };
                let opened =
                    super::select::select(&mut self.conn, user, mailbox, read_only, parameters)
                        .await;
                return match opened {
                    Ok((view, outcome)) => {
                        if let State::Authenticated(user) =
                            std::mem::replace(&mut self.state, State::Logout)
                        {
                            self.state = State::Selected(user, view);
                        }
                        outcome
                    }
                    Err(refused) => refused,
                };
            }
            // RFC 3501 §6.3.4: deleting the selected mailbox ends the selection.
            A::Delete(Ok(ref name)) if matches!(&self.state, State::Selected(_, view) if view.mailbox.name == name.as_str()) =>
            {
                self.deselect();
            }
            _ => {}
        }
        let (user, view) = match &self.state {
            State::Authenticated(user) => (user, None),
            State::Selected(user, view) => (user, Some(&**view)),
            _ => return Outcome::bad("Log in first"),
        };
        let conn = &mut self.conn;
        match c {
            A::Namespace => super::capability::namespace(conn),
            A::Enable(capabilities) => super::enable::enable(conn, &capabilities, view),
            A::Select { .. } => Outcome::bad("Log in first"),
            A::Create {
                mailbox,
                special_use,
            } => match mailbox {
                Ok(m) => super::create::create(conn, user, m, special_use).await,
                Err(e) => conn.refuse_name(&e),
            },
            A::Delete(mailbox) => match mailbox {
                Ok(m) => super::delete_rename::delete(conn, user, m).await,
                Err(e) => conn.refuse_name(&e),
            },
            A::Rename { from, to } => match (from, to) {
                (Ok(from), Ok(to)) => super::delete_rename::rename(conn, user, from, to).await,
                (Err(e), _) | (_, Err(e)) => conn.refuse_name(&e),
            },
            A::Subscribe { mailbox, subscribe } => match mailbox {
                Ok(m) => super::subscribe::subscribe(conn, user, m, subscribe).await,
                Err(e) => conn.refuse_name(&e),
            },
            A::List {
                options,
                lsub,
                plain,
            } => super::list::list(conn, user, options, lsub, plain).await,
            A::Status {
                mailbox,
                items,
                mailbox_id,
            } => match mailbox {
                Ok(m) => super::status::status(conn, user, view, m, &items, mailbox_id).await,
                Err(e) => conn.refuse_name(&e),
            },
            A::Append(append) => super::append::append(conn, user, append).await,
            A::GetQuota(root) => super::quota::get_quota(conn, user, &root).await,
            A::GetQuotaRoot(mailbox) => match mailbox {
                Ok(m) => super::quota::get_quota_root(conn, user, m).await,
                Err(e) => conn.refuse_name(&e),
            },
            A::SetQuota => super::quota::set_quota(),
            // Answered in `command` (IDLE runs in the session's own task;
            // COMPRESS changes the connection).
            A::Idle | A::Compress => Outcome::bad("Not expected here"),
        }
    }

    // RFC 3501 §6.4: the handlers get the user and the selected mailbox.
    async fn selected(&mut self, c: command::Selected) -> Outcome {
        use command::Selected as S;
        let State::Selected(user, view) = &mut self.state else {
            return Outcome::bad("No mailbox selected");
        };
        let conn = &mut self.conn;
        let closes = matches!(c, S::Close { .. });
        let outcome = match c {
            // RFC 3501 §6.4.1: the announcements are the table's.
            S::Check => Outcome::ok("CHECK completed"),
            S::Close { expunge } => super::close::close(conn, user, view, expunge).await,
            S::Expunge(set) => super::expunge::expunge(conn, user, view, set).await,
            S::Fetch(fetch) => super::fetch::fetch(conn, user, view, fetch).await,
            S::Store(store) => super::store_flags::store(conn, user, view, store).await,
            S::Search { criteria, uid, ret } => {
                super::search::search(conn, user, view, criteria, uid, ret).await
            }
            S::Sort {
                order,
                criteria,
                uid,
                ret,
            } => super::sort_thread::sort(conn, user, view, order, criteria, uid, ret).await,
            S::Thread {
                algorithm,
                criteria,
                uid,
            } => match algorithm {
                // RFC 5256 §3: only the advertised algorithms.
                None => Outcome::bad("Unknown threading algorithm"),
                Some(a) => super::sort_thread::thread(conn, user, view, a, criteria, uid).await,
            },
            // RFC 3501 §6.4.4, RFC 5256 §3.
            S::UnknownCharset { .. } => Outcome::no(Code::BadCharset, "Unsupported charset"),
            S::Copy {
                set,
                mailbox,
                uid,
                is_move,
            } => match mailbox {
                Ok(m) => {
                    super::copy_move::copy_or_move(conn, user, view, set, m, uid, is_move).await
                }
                Err(e) => conn.refuse_name(&e),
            },
        };
        // CLOSE and UNSELECT end the selection unless they failed.
        if closes && outcome.status == super::outcome::Status::Ok {
            self.deselect();
        }
        outcome
    }
}
