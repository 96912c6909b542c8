//! One LMTP connection: the state machine of RFC 2033 (LHLO, a transaction
//! of MAIL, RCPTs and DATA, one reply per accepted recipient after DATA),
//! with STARTTLS (RFC 3207) and PIPELINING (RFC 2920).

use crate::work::{self, Lane};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cove_store::{Address, BlobWriter, DeliveryTarget, StagedBlob};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::LmtpContext;
use super::command::{self, Command, MailParams, ParseError};
use super::data::{DataDecoder, Step};
use super::reply::{self, Reply};
use crate::client_text::ClientText;
use crate::conn::{Conn, PIPELINED_OUTPUT};
use crate::sieve::delivery::{self, Decision, Rcpt};

/// Bytes of message held in memory before they are written to the blob file.
const FLUSH_THRESHOLD: usize = 256 * 1024;
/// Longest piece of a DATA line read at once.
const DATA_PIECE: u64 = 64 * 1024;

/// An accepted recipient.
struct Recipient {
    /// As the client wrote it (for the reply text).
    given: String,
    target: DeliveryTarget,
}

/// What became of one recipient's copy.
enum Outcome {
    Stored(Result<cove_store::Delivered, cove_store::Error>),
    /// Sieve discard (or only redirects): nothing stored, 250.
    Discarded,
    /// Sieve reject/ereject (RFC 5429 §2.1: refuse in the protocol).
    Rejected(String),
}

/// The content id and size of a stored message, and each recipient's outcome.
type Stored = (cove_store::ContentId, u64, Vec<Outcome>);

/// What the first blocking job of a delivery did.
enum Staged {
    /// No Sieve script applied: every copy is stored.
    Stored(Stored),
    /// Scripts decided; their outgoing mail is sent before the copies are
    /// stored.
    Filtered(StagedBlob, Vec<Decision>, Option<Vec<u8>>),
}

/// Link `staged` (or, for a message a script changed, a blob of its own)
/// into every mailbox the decisions name (blocking).
fn store_copies(
    store: &cove_store::Store,
    staged: &StagedBlob,
    targets: &[DeliveryTarget],
    decisions: Vec<Decision>,
) -> Stored {
    let mut results: Vec<Option<Result<cove_store::Delivered, cove_store::Error>>> =
        targets.iter().map(|_| None).collect();
    for (content, group) in delivery::copies_by_content(targets, &decisions) {
        let placed = match &content {
            None => store.deliver_placed(staged, &group.placements),
            // A message editheader changed: a blob of its own.
            Some(bytes) => match store.blobs().put(bytes) {
                Ok(blob) => store.deliver_placed(&blob, &group.placements),
                Err(e) => {
                    let e = cove_store::Error::from(e);
                    group
                        .owners
                        .iter()
                        .map(|_| Err(delivery::copy_error(&e)))
                        .collect()
                }
            },
        };
        for (i, r) in group.owners.into_iter().zip(placed) {
            // A recipient's delivery succeeded when any copy was stored.
            match (&results[i], r) {
                (Some(Ok(_)), _) => {}
                (_, r) => results[i] = Some(r),
            }
        }
    }
    for ((t, d), r) in targets.iter().zip(&decisions).zip(&results) {
        if !matches!(r, Some(Err(_))) {
            delivery::track(store, t, d);
        }
    }
    let outcomes: Vec<Outcome> = results
        .into_iter()
        .zip(&decisions)
        .map(|(r, d)| match (r, d.reject()) {
            (_, Some(reason)) => Outcome::Rejected(reason.to_string()),
            (Some(r), _) => Outcome::Stored(r),
            (None, _) => Outcome::Discarded,
        })
        .collect();
    (staged.id(), staged.len(), outcomes)
}

/// A transaction: MAIL, then RCPTs.
struct Transaction {
    from: String,
    params: MailParams,
    recipients: Vec<Recipient>,
}

enum LineRead {
    Line(Vec<u8>),
    TooLong,
    Eof,
}

/// Why a session ends.
enum End {
    Quit,
    ClientGone,
}

pub struct Session {
    ctx: Arc<LmtpContext>,
    peer: SocketAddr,
    id: u64,
    reader: BufReader<Conn>,
    out: Vec<u8>,
    lhlo: Option<String>,
    tx: Option<Transaction>,
    errors: u32,
    /// The command being run got a syntax or sequence error.
    command_failed: bool,
}

impl Session {
    pub fn new(ctx: Arc<LmtpContext>, conn: Conn, peer: SocketAddr, id: u64) -> Session {
        Session {
            ctx,
            peer,
            id,
            reader: BufReader::with_capacity(16 * 1024, conn),
            out: Vec::with_capacity(1024),
            lhlo: None,
            tx: None,
            errors: 0,
            command_failed: false,
        }
    }

    fn reply(&mut self, r: Reply) {
        // Syntax and sequence errors count towards max_errors; a recipient
        // refused (550 5.1.1) is normal business in LMTP and does not.
        self.command_failed |= matches!(r.code, 500..=504 | 555);
        r.write_to(&mut self.out);
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            // A client that does not read is as gone as a silent one.
            let limit = Duration::from_secs(self.ctx.config.timeout_secs);
            crate::conn::write_within(self.reader.get_mut(), &self.out, Some(limit)).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Run the session to its end.
    pub async fn run(mut self) {
        let greeting = Reply::new(220, "", format!("{} LMTP cove ready", self.ctx.hostname));
        self.reply(greeting);
        let end = self.serve().await;
        let _ = self.flush().await;
        match end {
            End::Quit => {
                tracing::debug!(session = self.id, peer = %self.peer, "lmtp session ended")
            }
            End::ClientGone => {
                tracing::debug!(session = self.id, peer = %self.peer, "lmtp client went away")
            }
        }
        let _ = self.reader.get_mut().shutdown().await;
    }

    async fn serve(&mut self) -> End {
        let mut shutdown = self.ctx.shutdown.clone();
        loop {
            // Pipelining: answer in batches, flushing when the client has
            // nothing more waiting (RFC 2920 §3.2).
            let waiting = !self.reader.buffer().is_empty();
            if (!waiting || self.out.len() >= PIPELINED_OUTPUT) && self.flush().await.is_err() {
                return End::ClientGone;
            }
            if *shutdown.borrow() {
                self.reply(Reply::new(
                    421,
                    "4.3.2",
                    "Service shutting down, closing connection",
                ));
                return End::Quit;
            }
            let timeout = Duration::from_secs(self.ctx.config.timeout_secs);
            let max = self.ctx.config.max_line_length;
            let read = tokio::select! {
                r = tokio::time::timeout(timeout, read_line(&mut self.reader, max)) => r,
                _ = shutdown.changed() => continue,
            };
            let line = match read {
                Err(_) => {
                    tracing::info!(session = self.id, peer = %self.peer, "lmtp client timed out");
                    self.reply(Reply::new(421, "4.4.2", "Timeout, closing connection"));
                    return End::Quit;
                }
                Ok(Err(_)) | Ok(Ok(LineRead::Eof)) => return End::ClientGone,
                Ok(Ok(LineRead::TooLong)) => {
                    tracing::info!(session = self.id, peer = %self.peer, max, "lmtp command line too long");
                    self.reply(Reply::new(500, "5.5.2", "Line too long"));
                    if self.count_error() {
                        return End::Quit;
                    }
                    continue;
                }
                Ok(Ok(LineRead::Line(l))) => l,
            };
            if crate::proxy::looks_like_header(&line) {
                crate::proxy::refused_unexpected("lmtp", self.id, self.peer);
                return End::Quit;
            }
            match command::parse(&line) {
                Ok(cmd) => match self.handle(cmd).await {
                    Ok(None) => {}
                    Ok(Some(end)) => return end,
                    Err(()) => return End::ClientGone,
                },
                Err(e) => {
                    tracing::info!(session = self.id, peer = %self.peer, line = %ClientText::line(&line), error = ?e, "bad lmtp command");
                    let r = match e {
                        ParseError::Unrecognized => {
                            Reply::new(500, "5.5.2", "Command unrecognized")
                        }
                        ParseError::Syntax(why) => {
                            Reply::new(501, "5.5.4", format!("Syntax error: {why}"))
                        }
                        ParseError::UnknownParameter(p) => {
                            Reply::new(555, "5.5.4", format!("Unsupported parameter {p}"))
                        }
                        ParseError::BadPath(why) => {
                            Reply::new(501, "5.1.3", format!("Bad address syntax: {why}"))
                        }
                    };
                    self.reply(r);
                    if self.count_error() {
                        return End::Quit;
                    }
                }
            }
        }
    }

    /// Count a bad command; true when it is one too many.
    fn count_error(&mut self) -> bool {
        self.errors += 1;
        if self.errors >= self.ctx.config.max_errors {
            tracing::warn!(session = self.id, peer = %self.peer, errors = self.errors, "too many bad lmtp commands; closing");
            self.reply(Reply::new(
                421,
                "4.7.0",
                "Too many errors, closing connection",
            ));
            return true;
        }
        false
    }

    /// Run one command. `Err(())` means the client vanished.
    async fn handle(&mut self, cmd: Command) -> Result<Option<End>, ()> {
        self.command_failed = false;
        match cmd {
            // RFC 2033 §4.1: LHLO, answered like EHLO.
            Command::Lhlo(host) => {
                self.tx = None;
                self.lhlo = Some(host);
                let mut caps = vec![
                    self.ctx.hostname.clone(),
                    "PIPELINING".into(),
                    "ENHANCEDSTATUSCODES".into(),
                    "8BITMIME".into(),
                    "SMTPUTF8".into(),
                    format!("SIZE {}", self.ctx.config.max_message_size),
                ];
                if self.ctx.tls.is_some() && !self.reader.get_ref().is_tls() {
                    caps.push("STARTTLS".into());
                }
                let last = caps.len() - 1;
                for (i, c) in caps.into_iter().enumerate() {
                    let sep = if i == last { ' ' } else { '-' };
                    self.out
                        .extend_from_slice(format!("250{sep}{c}\r\n").as_bytes());
                }
            }
            Command::HeloOrEhlo => self.reply(Reply::new(500, "5.5.1", "This is LMTP: use LHLO")),
            // RFC 5321 §4.1.1.2: MAIL.
            Command::Mail { from, params } => {
                if self.lhlo.is_none() {
                    self.reply(Reply::new(503, "5.5.1", "Send LHLO first"));
                } else if self.tx.is_some() {
                    self.reply(Reply::new(503, "5.5.1", "Nested MAIL command"));
                } else if params
                    .size
                    .is_some_and(|s| s > self.ctx.config.max_message_size)
                {
                    self.reply(Reply::new(
                        552,
                        "5.3.4",
                        format!(
                            "Message exceeds the size limit of {} bytes",
                            self.ctx.config.max_message_size
                        ),
                    ));
                } else {
                    self.tx = Some(Transaction {
                        from,
                        params,
                        recipients: Vec::new(),
                    });
                    self.reply(Reply::new(250, "2.1.0", "Sender ok"));
                }
            }
            // RFC 5321 §4.1.1.3: RCPT.
            Command::Rcpt { to } => self.rcpt(to).await,
            // RFC 2033 §4.2: DATA, one reply per accepted recipient.
            Command::Data => return self.data().await,
            Command::Rset => {
                self.tx = None;
                self.reply(Reply::new(250, "2.0.0", "Ok"));
            }
            Command::Noop => self.reply(Reply::new(250, "2.0.0", "Ok")),
            Command::Quit => {
                self.reply(Reply::new(221, "2.0.0", "Bye"));
                return Ok(Some(End::Quit));
            }
            Command::Vrfy => {
                self.reply(Reply::new(252, "2.5.2", "Cannot VRFY, but send it and see"))
            }
            Command::Help => self.reply(Reply::new(
                214,
                "2.0.0",
                "Commands: LHLO MAIL RCPT DATA RSET NOOP QUIT STARTTLS (RFC 2033)",
            )),
            // RFC 3207: STARTTLS.
            Command::StartTls => return self.starttls().await,
        }
        if !self.command_failed {
            self.errors = 0;
        } else if self.count_error() {
            return Ok(Some(End::Quit));
        }
        Ok(None)
    }

    async fn rcpt(&mut self, to: String) {
        let Some(tx) = &self.tx else {
            self.reply(Reply::new(503, "5.5.1", "Need MAIL before RCPT"));
            return;
        };
        if tx.recipients.len() >= self.ctx.config.max_recipients {
            self.reply(Reply::new(452, "4.5.3", "Too many recipients"));
            return;
        }
        let address = match Address::parse(&to) {
            Ok(a) => a,
            Err(_) => {
                self.reply(Reply::new(
                    501,
                    "5.1.3",
                    format!("Bad recipient address syntax <{to}>"),
                ));
                return;
            }
        };
        // The detail names a mailbox: keep its case as the sender wrote it.
        let (base, detail) = address.without_detail(self.ctx.config.delimiter());
        let detail = detail.map(|d| raw_detail(&to, d.chars().count()));
        let store = self.ctx.store.clone();
        let lookup = work::run(Lane::Reserved, move || {
            // `user+detail` is tried as a whole first: a user may really be
            // called that.
            match store.user(&address)? {
                Some(u) => Ok(Some((u, None))),
                None => Ok::<_, cove_store::Error>(store.user(&base)?.map(|u| (u, detail))),
            }
        })
        .await;
        match lookup {
            Ok(Ok(Some((user, mailbox)))) => {
                if let Some(tx) = &mut self.tx {
                    tx.recipients.push(Recipient {
                        given: to,
                        target: DeliveryTarget { user, mailbox },
                    });
                }
                self.reply(Reply::new(250, "2.1.5", "Recipient ok"));
            }
            Ok(Ok(None)) if !self.ctx.users_complete() => {
                // The user may have been added on the peer a moment ago:
                // a bounce now would be wrong, a retry is cheap.
                tracing::info!(session = self.id, peer = %self.peer, rcpt = ?to, "unknown recipient while user lists are not yet exchanged with the peer; deferred");
                self.reply(Reply::new(
                    450,
                    "4.1.1",
                    format!("<{to}> User unknown here, not yet checked with the replication peer; try again later"),
                ));
            }
            Ok(Ok(None)) => {
                tracing::info!(session = self.id, peer = %self.peer, rcpt = %ClientText::word(&to), "unknown recipient");
                self.reply(Reply::new(550, "5.1.1", format!("<{to}> User unknown")));
            }
            Ok(Err(e)) => {
                tracing::error!(session = self.id, rcpt = %ClientText::word(&to), error = %e, "user lookup failed");
                self.reply(Reply::new(
                    451,
                    "4.3.0",
                    "Temporary failure looking up the recipient",
                ));
            }
            Err(e) => {
                tracing::error!(session = self.id, rcpt = %ClientText::word(&to), error = %e, "user lookup task failed");
                self.reply(Reply::new(
                    451,
                    "4.3.0",
                    "Temporary failure looking up the recipient",
                ));
            }
        }
    }

    async fn data(&mut self) -> Result<Option<End>, ()> {
        match &self.tx {
            None => {
                self.reply(Reply::new(503, "5.5.1", "Need MAIL and RCPT before DATA"));
                return Ok(None);
            }
            Some(tx) if tx.recipients.is_empty() => {
                // RFC 2033 §4.2: no successful RCPT, DATA fails with 503.
                self.reply(Reply::new(503, "5.5.1", "No valid recipients"));
                return Ok(None);
            }
            Some(_) => {}
        }
        let Some(tx) = self.tx.take() else {
            return Ok(None);
        };
        self.reply(Reply::new(
            354,
            "",
            "Start mail input; end with <CRLF>.<CRLF>",
        ));
        self.flush().await.map_err(|_| ())?;
        let received = self.receive(&tx).await?;
        let replies = match received {
            Received::TooBig(size) => {
                tracing::info!(session = self.id, peer = %self.peer, size, "message over the size limit refused");
                let r = reply::for_store_error(&cove_store::Error::TooBig {
                    size,
                    limit: self.ctx.config.max_message_size,
                });
                vec![r; tx.recipients.len()]
            }
            Received::Failed(e) => {
                tracing::error!(session = self.id, error = %e, "could not store the message");
                vec![reply::for_store_error(&e); tx.recipients.len()]
            }
            Received::Stored(blob, pending) => self.deliver(&tx, blob, pending).await,
        };
        for r in replies {
            self.reply(r);
        }
        Ok(None)
    }

    /// Read the message after 354 into the blob store.
    async fn receive(&mut self, tx: &Transaction) -> Result<Received, ()> {
        let limit = self.ctx.config.max_message_size;
        let mut pending = Vec::with_capacity(
            tx.params.size.unwrap_or(8192).min(FLUSH_THRESHOLD as u64) as usize + 256,
        );
        pending.extend_from_slice(format!("Return-Path: <{}>\r\n", tx.from).as_bytes());
        let mut writer: Option<BlobWriter> = None;
        let mut failed: Option<cove_store::Error> = None;
        let mut total = 0u64;
        let mut too_big = false;
        let mut decoder = DataDecoder::default();
        let mut piece = Vec::with_capacity(1024);
        let timeout = Duration::from_secs(self.ctx.config.timeout_secs);
        loop {
            piece.clear();
            let mut limited = (&mut self.reader).take(DATA_PIECE);
            let read = limited.read_until(b'\n', &mut piece);
            match tokio::time::timeout(timeout, read).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => {
                    tracing::info!(session = self.id, peer = %self.peer, "client vanished during DATA; nothing delivered");
                    return Err(());
                }
                Ok(Ok(_)) => {}
            }
            let before = pending.len();
            if decoder.feed(&piece, &mut pending) == Step::End {
                break;
            }
            total += (pending.len() - before) as u64;
            if too_big || failed.is_some() {
                pending.clear();
                continue;
            }
            if total > limit {
                too_big = true;
                writer = None;
                pending = Vec::new();
                continue;
            }
            if pending.len() >= FLUSH_THRESHOLD {
                match self
                    .write_blob(writer.take(), std::mem::take(&mut pending))
                    .await
                {
                    Ok((w, buf)) => {
                        writer = Some(w);
                        pending = buf;
                        pending.clear();
                    }
                    Err(e) => failed = Some(e),
                }
            }
        }
        if too_big {
            return Ok(Received::TooBig(total));
        }
        if let Some(e) = failed {
            return Ok(Received::Failed(e));
        }
        Ok(Received::Stored(writer.map(Box::new), pending))
    }

    /// Write buffered bytes to the blob file off the reactor.
    async fn write_blob(
        &self,
        writer: Option<BlobWriter>,
        buf: Vec<u8>,
    ) -> Result<(BlobWriter, Vec<u8>), cove_store::Error> {
        let store = self.ctx.store.clone();
        work::run(Lane::Reserved, move || {
            let mut w = match writer {
                Some(w) => w,
                None => store.blobs().writer()?,
            };
            w.write(&buf)?;
            Ok((w, buf))
        })
        .await
        .map_err(|e| cove_store::Error::Index(format!("blob writer task: {e}")))?
    }

    /// A delivery step's result, or the reply every recipient gets when it
    /// failed (logged).
    fn finished<T, E: std::fmt::Display>(
        &self,
        r: Result<Result<T, cove_store::Error>, E>,
    ) -> Result<T, Reply> {
        match r {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                tracing::error!(session = self.id, error = %e, "could not store the message");
                Err(reply::for_store_error(&e))
            }
            Err(e) => {
                tracing::error!(session = self.id, error = %e, "delivery task failed");
                Err(Reply::new(
                    451,
                    "4.3.0",
                    "Temporary failure storing the message",
                ))
            }
        }
    }

    /// Finish the blob, run each recipient's Sieve scripts (if any), send
    /// what they send, and link the blob into every mailbox they name.
    ///
    /// Without a script for any recipient (the common case) the blob is
    /// finished and linked in one blocking job: one hand-off to the pool per
    /// message, not two. With scripts, the outgoing mail they make is sent
    /// from the reactor between the two jobs.
    async fn deliver(
        &mut self,
        tx: &Transaction,
        writer: Option<Box<BlobWriter>>,
        pending: Vec<u8>,
    ) -> Vec<Reply> {
        let store = self.ctx.store.clone();
        let engine = self.ctx.sieve.clone();
        let targets: Vec<DeliveryTarget> = tx.recipients.iter().map(|r| r.target.clone()).collect();
        let given: Vec<String> = tx.recipients.iter().map(|r| r.given.clone()).collect();
        let from = tx.from.clone();
        let session = self.id;
        let staged = work::run(Lane::Reserved, move || {
            let spilled = writer.is_some();
            let staged: StagedBlob = match writer {
                Some(mut w) => {
                    w.write(&pending)?;
                    w.finish()?
                }
                None => store.blobs().put(&pending)?,
            };
            let Some(engine) = engine.filter(|e| delivery::any_script(e, &store, &targets)) else {
                let plain = targets.iter().map(|_| Decision::Plain).collect();
                return Ok(Staged::Stored(store_copies(&store, &staged, &targets, plain)));
            };
            let raw = if staged.len() > engine.config().max_message_size {
                None
            } else if spilled {
                match store.blobs().read(&staged.id()) {
                    Ok(b) => Some(b),
                    Err(e) => {
                        tracing::warn!(session, error = %e, "cannot read the message back for sieve; delivering without scripts");
                        None
                    }
                }
            } else {
                Some(pending)
            };
            let rcpts: Vec<Rcpt> = targets
                .iter()
                .zip(&given)
                .map(|(target, given)| Rcpt { target, given })
                .collect();
            let decisions = delivery::decide(&engine, &store, raw.as_deref(), &from, &rcpts, session);
            Ok::<_, cove_store::Error>(Staged::Filtered(staged, decisions, raw))
        })
        .await;
        let (staged, mut decisions, raw) = match self.finished(staged) {
            Ok(Staged::Stored(stored)) => return self.replies(tx, stored).await,
            Ok(Staged::Filtered(staged, decisions, raw)) => (staged, decisions, raw),
            Err(e) => return vec![e; tx.recipients.len()],
        };
        if let (Some(engine), Some(raw)) = (&self.ctx.sieve, &raw) {
            let mail = delivery::Mail {
                engine,
                store: &self.ctx.store,
                helo: &self.ctx.hostname,
                from: &tx.from,
                raw,
                session: self.id,
            };
            for (rcpt, decision) in tx.recipients.iter().zip(decisions.iter_mut()) {
                let r = Rcpt {
                    target: &rcpt.target,
                    given: &rcpt.given,
                };
                delivery::send_outgoing(&mail, &r, decision).await;
            }
        }
        drop(raw);
        let store = self.ctx.store.clone();
        let targets: Vec<DeliveryTarget> = tx.recipients.iter().map(|r| r.target.clone()).collect();
        let result = work::run(Lane::Reserved, move || {
            Ok::<_, cove_store::Error>(store_copies(&store, &staged, &targets, decisions))
        })
        .await;
        match self.finished(result) {
            Ok(stored) => self.replies(tx, stored).await,
            Err(e) => vec![e; tx.recipients.len()],
        }
    }

    /// Wait for the peers when delivery is synchronous, then one reply
    /// (and one log line) per recipient.
    async fn replies(&mut self, tx: &Transaction, stored: Stored) -> Vec<Reply> {
        let (content, size, results) = stored;
        if let Some(sync_delivery) = &self.ctx.sync_delivery {
            // Synchronous replication: every recipient's mailbox reaches a
            // peer before the 250s (one session per user, in parallel).
            let mut users: Vec<String> = tx
                .recipients
                .iter()
                .zip(&results)
                .filter(|(_, r)| matches!(r, Outcome::Stored(Ok(_))))
                .map(|(rcpt, _)| rcpt.target.user.address.to_string())
                .collect();
            users.sort();
            users.dedup();
            sync_delivery.wait(self.id, users).await;
        }
        tx.recipients
            .iter()
            .zip(results)
            .map(|(rcpt, r)| match r {
                Outcome::Discarded => {
                    crate::metrics::METRICS.delivery(true);
                    tracing::info!(session = self.id, peer = %self.peer, from = %ClientText::word(&tx.from), to = %ClientText::word(&rcpt.given),
                        user = %rcpt.target.user.address, size, content = %content, "discarded by sieve");
                    Reply::new(250, "2.0.0", format!("<{}> Delivered (handled by the recipient's filter; no copy kept here)", rcpt.given))
                }
                Outcome::Rejected(reason) => {
                    tracing::info!(session = self.id, peer = %self.peer, from = %ClientText::word(&tx.from), to = %ClientText::word(&rcpt.given),
                        user = %rcpt.target.user.address, reason = %ClientText::line(&reason), "rejected by sieve");
                    Reply::new(550, "5.7.1", format!("<{}> Rejected: {}", rcpt.given, reply::reply_text(&reason)))
                }
                Outcome::Stored(Ok(d)) => {
                    crate::metrics::METRICS.delivery(true);
                    tracing::info!(session = self.id, peer = %self.peer, from = %ClientText::word(&tx.from), to = %ClientText::word(&rcpt.given),
                        user = %rcpt.target.user.address, uid = d.uid, guid = %d.guid, size, content = %content, "delivered");
                    Reply::new(250, "2.0.0", format!("<{}> Saved as UID {}", rcpt.given, d.uid))
                }
                Outcome::Stored(Err(e)) => {
                    crate::metrics::METRICS.delivery(false);
                    tracing::warn!(session = self.id, peer = %self.peer, to = %ClientText::word(&rcpt.given), error = %e, "delivery failed");
                    reply::for_store_error(&e)
                }
            })
            .collect()
    }

    async fn starttls(&mut self) -> Result<Option<End>, ()> {
        if self.reader.get_ref().is_tls() {
            self.reply(Reply::new(503, "5.5.1", "TLS already active"));
            return Ok(None);
        }
        let Some(acceptor) = self.ctx.tls.clone() else {
            self.reply(Reply::new(454, "4.7.0", "TLS not available"));
            return Ok(None);
        };
        self.reply(Reply::new(220, "2.0.0", "Ready to start TLS"));
        self.flush().await.map_err(|_| ())?;
        match crate::conn::start_tls(
            &mut self.reader,
            &acceptor,
            16 * 1024,
            Duration::from_secs(self.ctx.config.handshake_timeout_secs),
        )
        .await
        {
            Ok(()) => {
                self.lhlo = None;
                self.tx = None;
                tracing::debug!(session = self.id, peer = %self.peer, "lmtp STARTTLS done");
                Ok(None)
            }
            Err(e) => {
                tracing::info!(session = self.id, peer = %self.peer, error = %e, "lmtp TLS handshake failed");
                Err(())
            }
        }
    }
}

enum Received {
    /// The blob writer (if the message was large enough to need one) and
    /// the bytes not yet written.
    Stored(Option<Box<BlobWriter>>, Vec<u8>),
    TooBig(u64),
    Failed(cove_store::Error),
}

/// Read one command line of at most `max` bytes (CRLF included). A longer
/// line is read to its end and discarded.
async fn read_line(reader: &mut BufReader<Conn>, max: usize) -> std::io::Result<LineRead> {
    let mut buf = Vec::with_capacity(128);
    let n = (&mut *reader)
        .take(max as u64)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(LineRead::Eof);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        return Ok(LineRead::Line(buf));
    }
    if buf.len() < max {
        return Ok(LineRead::Eof);
    }
    loop {
        buf.clear();
        let n = (&mut *reader)
            .take(64 * 1024)
            .read_until(b'\n', &mut buf)
            .await?;
        if n == 0 {
            return Ok(LineRead::Eof);
        }
        if buf.last() == Some(&b'\n') {
            return Ok(LineRead::TooLong);
        }
    }
}

/// The last `len` characters of the local part of `raw` (the detail, in the
/// case the sender used; `Address` lowercases the local part).
fn raw_detail(raw: &str, len: usize) -> String {
    let local = raw.rsplit_once('@').map_or(raw, |(l, _)| l);
    let chars: Vec<char> = local.chars().collect();
    chars[chars.len().saturating_sub(len)..].iter().collect()
}

#[cfg(test)]
mod tests {
    use super::raw_detail;

    #[test]
    fn detail_keeps_its_case() {
        assert_eq!(raw_detail("Bob+Lists@X.org", 5), "Lists");
        assert_eq!(raw_detail("bob+Été@x.org", 3), "Été");
    }
}
