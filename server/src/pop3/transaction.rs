//! The TRANSACTION state (RFC 1939 §5, §7): STAT, LIST, RETR, DELE, NOOP,
//! RSET, TOP, UIDL. Deleted messages keep their numbers and are left out
//! of STAT, LIST and UIDL; acting on one is `-ERR`.

use crate::work::{self, Lane};
use std::collections::VecDeque;

use cove_store::Cached;
use tokio::io::AsyncBufReadExt;

use super::command::{self, Command, MessageNumber};
use super::encode::Extent;
use super::maildrop::{Maildrop, Missing};
use super::retrieval::{self, Retrieval, Transfer};
use super::session::{Flow, Session, State};
use crate::metrics::{METRICS, Pop3Read};

/// Output gathered before it is written, while answering RETRs.
const TRANSFER_BUDGET: usize = 256 * 1024;
/// Pipelined RETR/TOP commands answered in one trip to the blocking pool.
const MAX_BATCH: usize = 256;

impl Session {
    fn maildrop(&mut self) -> Option<&mut Maildrop> {
        match &mut self.state {
            State::Transaction(m) => Some(m),
            State::Authorization { .. } => None,
        }
    }

    /// A TRANSACTION-state command.
    pub async fn transaction(&mut self, cmd: Command) -> Flow {
        let Some(drop) = self.maildrop() else {
            return Flow::Continue;
        };
        let mut reply = Vec::new();
        let result: Result<(), String> = match cmd {
            // RFC 1939 §5 STAT.
            Command::Stat => {
                let (n, octets) = drop.stat();
                reply.push(format!("+OK {n} {octets}"));
                Ok(())
            }
            // RFC 1939 §5 LIST [msg].
            Command::List(None) => {
                let (n, octets) = drop.stat();
                reply.push(format!("+OK {n} messages ({octets} octets)"));
                reply.extend(drop.live().map(|(i, m)| format!("{i} {}", m.size)));
                reply.push(".".into());
                Ok(())
            }
            Command::List(Some(n)) => found(drop, n).map(|(i, m)| {
                reply.push(format!("+OK {} {}", i + 1, m.size));
            }),
            // RFC 1939 §7 UIDL [msg].
            Command::Uidl(None) => {
                reply.push("+OK Unique-ID listing follows".into());
                reply.extend(
                    drop.live()
                        .map(|(i, m)| format!("{i} {}", Maildrop::unique_id(m))),
                );
                reply.push(".".into());
                Ok(())
            }
            Command::Uidl(Some(n)) => found(drop, n).map(|(i, m)| {
                reply.push(format!("+OK {} {}", i + 1, Maildrop::unique_id(m)));
            }),
            // RFC 1939 §5 DELE msg.
            Command::Dele(n) => found(drop, n).map(|(i, _)| i).map(|i| {
                drop.delete(i);
                reply.push(format!("+OK Message {} deleted", i + 1));
            }),
            // RFC 1939 §5 NOOP.
            Command::Noop => {
                reply.push("+OK".into());
                Ok(())
            }
            // RFC 1939 §5 RSET.
            Command::Rset => {
                drop.reset();
                let (n, octets) = drop.stat();
                reply.push(format!("+OK Maildrop has {n} messages ({octets} octets)"));
                Ok(())
            }
            // RFC 1939 §5 RETR msg, §7 TOP msg n.
            Command::Retr(n) => return self.retrieve(n, Extent::Whole).await,
            Command::Top(n, lines) => return self.retrieve(n, Extent::Top(lines)).await,
            _ => Err("Not allowed in this state".into()),
        };
        match result {
            Ok(()) => {
                for line in reply {
                    self.out.extend_from_slice(line.as_bytes());
                    self.out.extend_from_slice(b"\r\n");
                }
            }
            Err(e) => self.err(&e),
        }
        Flow::Continue
    }

    /// RETR or TOP, and the RETRs and TOPs pipelined right behind it.
    async fn retrieve(&mut self, n: MessageNumber, extent: Extent) -> Flow {
        let Some(drop) = self.maildrop() else {
            return Flow::Continue;
        };
        let first = match found(drop, n) {
            Ok((i, _)) => drop.retrieval(i, extent),
            Err(e) => {
                self.err(&e);
                return Flow::Continue;
            }
        };
        let mut queue: VecDeque<Retrieval> = first.into_iter().collect();
        // RFC 2449 PIPELINING: take the RETRs already waiting, as long as
        // each names a message that can be sent.
        while queue.len() < MAX_BATCH {
            let buffered = self.reader.buffer();
            let Some(end) = memchr::memchr(b'\n', buffered) else {
                break;
            };
            let line = buffered[..end]
                .strip_suffix(b"\r")
                .unwrap_or(&buffered[..end]);
            let next = match command::parse(line) {
                Ok(Command::Retr(n)) => Some((n, Extent::Whole)),
                Ok(Command::Top(n, l)) => Some((n, Extent::Top(l))),
                _ => None,
            };
            let Some(drop) = self.maildrop() else { break };
            let Some(r) = next.and_then(|(n, e)| {
                let (i, _) = drop.get(n).ok()?;
                drop.retrieval(i, e)
            }) else {
                break;
            };
            queue.push_back(r);
            self.reader.consume(end + 1);
        }
        let Some(drop) = self.maildrop() else {
            return Flow::Continue;
        };
        for r in &queue {
            if matches!(r.extent, Extent::Whole) {
                drop.retrieved(r.number - 1);
            }
        }
        let (account, mailbox, files) =
            (drop.account.clone(), drop.mailbox.guid, drop.files.clone());
        // What the page cache holds is answered here, in order, until a
        // message is not there.
        let asked = queue.len() as u64;
        while let Some(r) = queue.front() {
            if let Cached::WouldBlock = retrieval::answer_cached(&files, r, &mut self.out) {
                break;
            }
            queue.pop_front();
            if self.out.len() >= TRANSFER_BUDGET && self.flush().await.is_err() {
                return Flow::Close;
            }
            // A long run of cached answers lets the worker's other tasks
            // run now and then.
            tokio::task::coop::consume_budget().await;
        }
        let left = queue.len() as u64;
        METRICS.pop3_sent(Pop3Read::PageCache, asked - left);
        if queue.is_empty() {
            return Flow::Continue;
        }
        // The rest on the blocking pool.
        METRICS.pop3_sent(Pop3Read::BlockingPool, left);
        let user = account.email().to_string();
        let mut transfer = Transfer::new(account, mailbox, files, queue);
        loop {
            let mut out = std::mem::take(&mut self.out);
            let job = work::run(Lane::User(&user), move || {
                let r = transfer.run(&mut out, TRANSFER_BUDGET);
                (transfer, out, r)
            })
            .await;
            let (t, out, result) = match job {
                Ok(done) => done,
                Err(e) => {
                    tracing::error!(session = self.id, error = %e, "pop3 RETR task failed");
                    return Flow::Close;
                }
            };
            self.out = out;
            if let Err(e) = result {
                // A +OK may be out already: the only honest end is to close.
                tracing::error!(session = self.id, peer = %self.peer, error = %e, "pop3 RETR failed while sending; closing");
                return Flow::Close;
            }
            if t.is_finished() {
                return Flow::Continue;
            }
            transfer = t;
            if self.flush().await.is_err() {
                return Flow::Close;
            }
        }
    }
}

/// The message a number names, or the `-ERR` text (RFC 1939 §5: a
/// deleted message may not be named).
fn found(
    drop: &Maildrop,
    n: MessageNumber,
) -> Result<(usize, &super::maildrop::DropMessage), String> {
    drop.get(n).map_err(|e| match e {
        Missing::NoSuchMessage => "No such message".to_string(),
        Missing::Deleted => format!("Message {} is deleted", n.0),
    })
}
