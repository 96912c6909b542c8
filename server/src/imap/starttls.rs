//! RFC 3501 §6.2.1 STARTTLS (and RFC 2595 §3.1: the buffered input is
//! discarded, so nothing sent in clear text is read as if it came over TLS).

use std::time::Duration;

use super::outcome::Outcome;
use super::session::{Control, READ_BUFFER, Session};

impl Session {
    // RFC 3501 §6.2.1: STARTTLS (valid before login only: the table's).
    pub(super) async fn starttls(&mut self, tag: &str) -> Control {
        let refused = if self.conn.is_tls() {
            Some(Outcome::bad("TLS already active"))
        } else if self.conn.ctx.tls.is_none() {
            Some(Outcome::no_plain("TLS not available"))
        } else {
            None
        };
        if let Some(refused) = refused {
            return self.answer(tag, refused);
        }
        // The tagged OK goes out in clear text, then the handshake starts.
        self.answer(tag, Outcome::ok("Begin TLS negotiation now"));
        if self.handshake().await {
            Control::Next
        } else {
            Control::Stop
        }
    }

    /// After STARTTLS's OK: flush it, then run the handshake.
    async fn handshake(&mut self) -> bool {
        let Some(acceptor) = self.conn.ctx.tls.clone() else {
            return false;
        };
        if self.flush().await.is_err() {
            return false;
        }
        let timeout = Duration::from_secs(self.conn.ctx.config.handshake_timeout_secs);
        match crate::conn::start_tls(&mut self.conn.reader, &acceptor, READ_BUFFER, timeout).await {
            Ok(()) => true,
            Err(e) => {
                tracing::info!(session = self.conn.id, peer = %self.conn.peer, error = %e, "imap STARTTLS handshake failed");
                false
            }
        }
    }
}
