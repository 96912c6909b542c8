//! What a session holds while it waits for its client.
//!
//! Thousands of sessions sit in IDLE or between commands, and each would
//! keep its read buffer (2 KiB) the whole time. While nothing is buffered, a
//! plain TCP session gives the buffer back and waits on the socket itself
//! (a one-byte `peek`: nothing is consumed, so the wait can be cancelled at
//! any point, as `select!` does); the buffer is allocated again, by a guard
//! that runs even on cancellation, when the wait ends. TLS sessions keep
//! theirs: rustls may already hold decrypted bytes that the socket's
//! readiness would not show.

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::conn::Conn;

/// Puts a read buffer of `capacity` back into the reader when dropped.
struct Restore<'a> {
    reader: &'a mut BufReader<Conn>,
    capacity: usize,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let conn = take(self.reader);
        *self.reader = BufReader::with_capacity(self.capacity, conn);
    }
}

/// The smallest buffer tokio's `BufReader` takes (it refuses 0).
const SHED: usize = 1;

/// The connection, leaving a detached reader with the smallest buffer in
/// its place.
fn take(reader: &mut BufReader<Conn>) -> Conn {
    std::mem::replace(reader, BufReader::with_capacity(SHED, Conn::Detached)).into_inner()
}

/// Wait until the client has sent something (`Ok(true)`) or closed the
/// connection (`Ok(false)`), holding (almost) no read buffer meanwhile; the reader
/// has a buffer of `capacity` again when this returns or is cancelled.
pub async fn until_input(reader: &mut BufReader<Conn>, capacity: usize) -> std::io::Result<bool> {
    if !reader.buffer().is_empty() {
        return Ok(true);
    }
    if !matches!(reader.get_ref(), Conn::Plain(_)) {
        return Ok(!reader.fill_buf().await?.is_empty());
    }
    let conn = take(reader);
    *reader = BufReader::with_capacity(SHED, conn);
    let guard = Restore { reader, capacity };
    let Conn::Plain(tcp) = guard.reader.get_ref() else {
        return Ok(true);
    };
    let mut one = [0u8; 1];
    let n = tcp.peek(&mut one).await?;
    drop(guard);
    Ok(n > 0)
}
