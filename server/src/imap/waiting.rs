//! What a session holds while it waits for its client.
//!
//! Thousands of sessions sit in IDLE or between commands, and each would
//! keep its read buffer (2 KiB) the whole time. While nothing is buffered, a
//! plain TCP session gives the buffer back and waits on the socket itself
//! (a one-byte `peek`: nothing is consumed, so the wait can be cancelled at
//! any point, as `select!` does); the buffer is allocated again, by a guard
//! that runs even on cancellation, when the wait ends. A TLS session does
//! the same once rustls holds nothing the socket's readiness would not
//! show (no decrypted bytes waiting, no close_notify read); when the socket
//! has bytes it reads through TLS as before (they may be a record with no
//! data for us, a key update: then it waits with its buffer, as it always
//! did). What rustls itself keeps (its 4 KiB record buffer, the keys) is
//! out of reach of its buffered API (benches/results/idle-memory-2026-12-07-tls.md).

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
    let tls = match reader.get_mut() {
        Conn::Plain(_) => false,
        Conn::Tls(stream) => {
            if !tls_quiet(stream) {
                return Ok(!reader.fill_buf().await?.is_empty());
            }
            true
        }
        _ => return Ok(!reader.fill_buf().await?.is_empty()),
    };
    let conn = take(reader);
    *reader = BufReader::with_capacity(SHED, conn);
    let guard = Restore { reader, capacity };
    let tcp = match guard.reader.get_ref() {
        Conn::Plain(tcp) => tcp,
        Conn::Tls(stream) => stream.get_ref().0,
        _ => return Ok(true),
    };
    let mut one = [0u8; 1];
    let n = tcp.peek(&mut one).await?;
    drop(guard);
    if tls && n > 0 {
        // Bytes of a TLS record: whether they hold data for us, only
        // reading them through rustls tells.
        return Ok(!reader.fill_buf().await?.is_empty());
    }
    Ok(n > 0)
}

/// Whether rustls holds nothing that the socket's readiness would not
/// show: no decrypted bytes waiting to be read, no close_notify read (after
/// which the socket may stay quiet while reads return the end). An error
/// is left for the next read to report.
fn tls_quiet(stream: &mut tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> bool {
    match stream.get_mut().1.process_new_packets() {
        Ok(state) => state.plaintext_bytes_to_read() == 0 && !state.peer_has_closed(),
        Err(_) => false,
    }
}
