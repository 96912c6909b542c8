//! A connection compressed with raw DEFLATE both ways (RFC 1951, as IMAP's
//! COMPRESS=DEFLATE uses it, RFC 4978).
//!
//! Writes are compressed into a buffer and sent on `flush`, which ends the
//! deflate block with a sync flush (RFC 4978 §4: the receiver can decode
//! everything sent so far): a session flushes at the end of its responses,
//! so a client never waits on half a block. Reads inflate into the
//! caller's buffer, so what one read produces is bounded by that buffer,
//! however well the input compresses (no decompression bomb); compressed
//! input is read in [`READ_CHUNK`]s.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::conn::Conn;

/// Compressed bytes read from the socket at a time.
const READ_CHUNK: usize = 4096;
/// Compressed output held before a write waits for the socket.
const WRITE_HIGH_WATER: usize = 64 * 1024;

pub struct Deflated {
    inner: Conn,
    compress: Compress,
    decompress: Decompress,
    /// Compressed input not inflated yet.
    input: Vec<u8>,
    input_at: usize,
    /// Compressed output not sent yet.
    output: Vec<u8>,
    output_at: usize,
    /// Something was written since the last sync flush.
    unflushed: bool,
    eof: bool,
}

impl Deflated {
    /// `pending`: compressed bytes the client sent with the command that
    /// started compression and that were already read.
    pub fn new(inner: Conn, pending: &[u8]) -> Deflated {
        Deflated {
            inner,
            // RFC 4978 §4: raw deflate, no zlib header.
            compress: Compress::new(Compression::default(), false),
            decompress: Decompress::new(false),
            input: pending.to_vec(),
            input_at: 0,
            output: Vec::new(),
            output_at: 0,
            unflushed: false,
            eof: false,
        }
    }

    pub fn inner(&self) -> &Conn {
        &self.inner
    }

    /// Deflate `data` (or, with `Sync` and no data, end the block) onto
    /// the output buffer.
    fn deflate(&mut self, mut data: &[u8], flush: FlushCompress) -> io::Result<()> {
        loop {
            self.output.reserve(data.len() / 2 + 64);
            let before_in = self.compress.total_in();
            let before_out = self.compress.total_out();
            self.compress
                .compress_vec(data, &mut self.output, flush)
                .map_err(io::Error::other)?;
            let read = (self.compress.total_in() - before_in) as usize;
            let wrote = (self.compress.total_out() - before_out) as usize;
            data = &data[read..];
            // Done when the input is taken and the last call had room to
            // spare (a sync flush writes all it has).
            if data.is_empty() && self.output.len() < self.output.capacity() {
                return Ok(());
            }
            if read == 0 && wrote == 0 && data.is_empty() {
                return Ok(());
            }
        }
    }

    /// Send buffered output until none is left.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.output_at < self.output.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.output[self.output_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.output_at += n;
        }
        self.output.clear();
        self.output_at = 0;
        if self.output.capacity() > 4 * WRITE_HIGH_WATER {
            self.output = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Deflated {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.input_at < this.input.len() {
                let before_in = this.decompress.total_in();
                let before_out = this.decompress.total_out();
                let status = this
                    .decompress
                    .decompress(
                        &this.input[this.input_at..],
                        buf.initialize_unfilled(),
                        FlushDecompress::None,
                    )
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let read = (this.decompress.total_in() - before_in) as usize;
                let wrote = (this.decompress.total_out() - before_out) as usize;
                this.input_at += read;
                buf.advance(wrote);
                if this.input_at == this.input.len() {
                    this.input.clear();
                    this.input_at = 0;
                }
                if wrote > 0 {
                    return Poll::Ready(Ok(()));
                }
                if status == Status::StreamEnd {
                    this.eof = true;
                }
                if read > 0 {
                    continue;
                }
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            // More compressed input.
            let mut chunk = [0u8; READ_CHUNK];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                this.eof = true;
                return Poll::Ready(Ok(()));
            }
            this.input.extend_from_slice(rb.filled());
        }
    }
}

impl AsyncWrite for Deflated {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.output.len() - this.output_at >= WRITE_HIGH_WATER {
            ready!(this.poll_drain(cx))?;
        }
        this.deflate(data, FlushCompress::None)?;
        this.unflushed = true;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if std::mem::take(&mut this.unflushed) {
            this.deflate(&[], FlushCompress::Sync)?;
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Both ends over a real socket pair: what one side writes and flushes,
    /// the other reads, without waiting for more.
    #[tokio::test]
    async fn round_trip_with_a_sync_flush_per_response() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut c = Deflated::new(Conn::Plain(tcp), b"");
            for i in 0..3 {
                let line = format!("a{i} NOOP {}\r\n", "x".repeat(i * 5000));
                c.write_all(line.as_bytes()).await.unwrap();
                c.flush().await.unwrap();
                let mut got = vec![0u8; line.len()];
                c.read_exact(&mut got).await.unwrap();
                assert_eq!(got, line.as_bytes());
            }
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let mut s = Deflated::new(Conn::Plain(tcp), b"");
        for i in 0..3 {
            let line = format!("a{i} NOOP {}\r\n", "x".repeat(i * 5000));
            let mut got = vec![0u8; line.len()];
            s.read_exact(&mut got).await.unwrap();
            assert_eq!(got, line.as_bytes());
            s.write_all(&got).await.unwrap();
            s.flush().await.unwrap();
        }
        client.await.unwrap();
    }

    /// Garbage instead of deflate data is an error, not a hang or a panic.
    #[tokio::test]
    async fn garbage_input_is_an_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tcp.write_all(&[0xff; 64]).await.unwrap();
            tcp.shutdown().await.unwrap();
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let mut s = Deflated::new(Conn::Plain(tcp), b"");
        let mut buf = [0u8; 64];
        let r = s.read(&mut buf).await;
        assert!(r.is_err(), "{r:?}");
        client.await.unwrap();
    }
}
