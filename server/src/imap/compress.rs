//! RFC 4978 COMPRESS=DEFLATE: after the tagged OK, both directions are raw
//! DEFLATE (`crate::deflate`), over plain TCP or TLS alike; every response
//! the session flushes ends its deflate block, so a client never waits on
//! a partial one.

use super::outcome::{Code, Outcome};
use super::session::{Control, READ_BUFFER, Session};
use crate::conn::Conn;

impl Session {
    // RFC 4978 §3: COMPRESS DEFLATE (valid once logged in: the table's).
    pub(super) async fn compress(&mut self, tag: &str) -> Control {
        if matches!(self.conn.reader.get_ref(), Conn::Deflate(_)) {
            // RFC 4978 §3: a second COMPRESS.
            return self.answer(
                tag,
                Outcome::no(Code::CompressionActive, "DEFLATE is already active"),
            );
        }
        // The OK goes out uncompressed; everything after it is compressed.
        if let Control::Stop = self.answer(tag, Outcome::ok("DEFLATE active")) {
            return Control::Stop;
        }
        if self.flush().await.is_err() {
            return Control::Stop;
        }
        match crate::conn::start_deflate(&mut self.conn.reader, READ_BUFFER) {
            Ok(()) => Control::Next,
            Err(e) => {
                tracing::warn!(session = self.conn.id, peer = %self.conn.peer, error = %e, "imap COMPRESS could not start");
                Control::Stop
            }
        }
    }
}
