//! RFC 2177 IDLE: the session waits for the client's DONE and announces the
//! selected mailbox's changes as they come. It runs in the session's own
//! task (sessions spend most of their life here).

use std::time::Duration;

use super::command::Announce;
use super::outcome::Outcome;
use super::session::{READ_BUFFER, Session, State};

impl Session {
    /// Send what changed; `Some` when IDLE ends with it (the mailbox went
    /// away, or the client).
    async fn announce_in_idle(&mut self) -> Option<Outcome> {
        Box::pin(self.announce_after(Announce::Everything)).await;
        if matches!(self.state, State::Logout) {
            return Some(Outcome::ok("IDLE terminated"));
        }
        if self.flush().await.is_err() {
            return Some(Outcome::bad("Connection lost"));
        }
        None
    }
}

enum IdleEvent {
    Input,
    Changed,
    Shutdown,
    Drained,
    Timeout,
    Gone,
}

impl Session {
    // RFC 2177 §3: IDLE.
    pub(super) async fn idle(&mut self) -> Outcome {
        self.conn.out.extend_from_slice(b"+ idling\r\n");
        if let Some(ended) = self.announce_in_idle().await {
            return ended;
        }
        let mut shutdown = self.conn.ctx.shutdown.clone();
        let mut drained = crate::drain::subscribe();
        let timeout = Duration::from_secs(self.conn.ctx.config.autologout_secs);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = async {
                match &mut self.state {
                    State::Selected(_, view) => view.next_change().await,
                    _ => std::future::pending().await,
                }
            };
            let event = tokio::select! {
                r = super::waiting::until_input(&mut self.conn.reader, READ_BUFFER) => match r {
                    Ok(true) => IdleEvent::Input,
                    Ok(false) | Err(_) => IdleEvent::Gone,
                },
                more = changed => if more { IdleEvent::Changed } else { IdleEvent::Gone },
                _ = shutdown.changed() => IdleEvent::Shutdown,
                _ = drained.changed() => IdleEvent::Drained,
                _ = tokio::time::sleep_until(deadline) => IdleEvent::Timeout,
            };
            match event {
                IdleEvent::Input => {
                    // The rest of the line is bounded by the same deadline:
                    // a client that sends "DO" and nothing more does not
                    // keep its session (and slot) for good.
                    let line = super::framing::read_plain_line(&mut self.conn.reader, 1024);
                    return match tokio::time::timeout_at(deadline, line).await {
                        Ok(Ok(Some(l))) if l.eq_ignore_ascii_case(b"DONE") => {
                            Outcome::ok("IDLE terminated")
                        }
                        Ok(Ok(Some(_))) => Outcome::bad("Expected DONE"),
                        Ok(_) => Outcome::bad("Connection lost"),
                        Err(_) => {
                            tracing::info!(session = self.conn.id, peer = %self.conn.peer, "imap IDLE ended: DONE not completed before the autologout");
                            self.autologout_in_idle()
                        }
                    };
                }
                IdleEvent::Changed => {
                    if let Some(ended) = self.announce_in_idle().await {
                        return ended;
                    }
                }
                IdleEvent::Shutdown => {
                    self.conn.untagged("BYE [UNAVAILABLE] Server shutting down");
                    self.state = State::Logout;
                    return Outcome::ok("IDLE terminated");
                }
                IdleEvent::Drained => {
                    tracing::info!(session = self.conn.id, peer = %self.conn.peer, "imap session sent away from IDLE: node drained");
                    self.conn
                        .untagged(&format!("BYE [UNAVAILABLE] {}", crate::drain::REASON));
                    self.state = State::Logout;
                    return Outcome::ok("IDLE terminated");
                }
                IdleEvent::Timeout => return self.autologout_in_idle(),
                IdleEvent::Gone => {
                    self.state = State::Logout;
                    return Outcome::bad("Connection lost");
                }
            }
        }
    }

    /// RFC 3501 §5.4: the autologout timer ran out during IDLE.
    fn autologout_in_idle(&mut self) -> Outcome {
        self.conn.untagged("BYE Autologout; idle for too long");
        self.state = State::Logout;
        Outcome::ok("IDLE terminated")
    }
}
