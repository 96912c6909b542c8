//! A client connection: plain TCP, or TLS (implicit or after STARTTLS).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// Answers held for a pipelining client before they are written even though
/// more commands are waiting: a client that sends without reading is slowed
/// down by TCP, not buffered for (a NOOP's answer is 2.5 times its size).
pub const PIPELINED_OUTPUT: usize = 64 * 1024;

pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Either of the above, compressed (IMAP COMPRESS=DEFLATE, RFC 4978).
    Deflate(Box<crate::deflate::Deflated>),
    /// Briefly, while the stream is handed to the TLS handshake: reads see
    /// end of file, writes fail.
    Detached,
}

impl Conn {
    pub fn is_tls(&self) -> bool {
        match self {
            Conn::Tls(_) => true,
            Conn::Deflate(d) => d.inner().is_tls(),
            _ => false,
        }
    }

    /// The address at the other end of the socket: the client's, or the
    /// proxy's for a client behind a PROXY header.
    pub fn socket_peer(&self) -> Option<std::net::SocketAddr> {
        match self {
            Conn::Plain(s) => s.peer_addr().ok(),
            Conn::Tls(s) => s.get_ref().0.peer_addr().ok(),
            Conn::Deflate(d) => d.inner().socket_peer(),
            Conn::Detached => None,
        }
    }

    /// A connection from a trusted proxy (which terminated TLS itself).
    pub fn from_trusted_proxy(&self) -> bool {
        self.socket_peer()
            .is_some_and(|p| crate::proxy::is_trusted(p.ip()))
    }

    /// Whether a password may cross this connection in clear text: inside
    /// TLS, from loopback, or where the operator allows it (RFC 8314).
    pub fn plaintext_ok(&self, peer: std::net::SocketAddr, allowed_by_config: bool) -> bool {
        crate::auth::plaintext_allowed(
            self.is_tls() || self.from_trusted_proxy(),
            peer.ip(),
            allowed_by_config,
        )
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Conn::Deflate(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Conn::Detached => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Conn::Deflate(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Conn::Detached => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Conn::Deflate(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Conn::Detached => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Conn::Deflate(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Conn::Detached => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

/// Write `out` to the client and flush it, within `limit` when there is one
/// (then `ErrorKind::TimedOut`): a client that stops reading cannot keep
/// its session, and its connection slot, by that alone.
pub async fn write_within(
    conn: &mut Conn,
    out: &[u8],
    limit: Option<std::time::Duration>,
) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let write = async {
        conn.write_all(out).await?;
        conn.flush().await
    };
    match limit {
        None => write.await,
        Some(limit) => tokio::time::timeout(limit, write)
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
    }
}

/// STARTTLS (RFC 3207 for LMTP, RFC 3501 §6.2.1 for IMAP): hand the plain
/// connection to the TLS handshake and read on through TLS. Anything the
/// client pipelined after the command was sent in clear text and is
/// discarded with the old buffer (CVE-2011-0411). The handshake may take
/// `timeout` at most: a client that never speaks TLS does not keep its
/// connection slot.
pub async fn start_tls(
    reader: &mut tokio::io::BufReader<Conn>,
    acceptor: &tokio_rustls::TlsAcceptor,
    buffer: usize,
    timeout: std::time::Duration,
) -> io::Result<()> {
    let placeholder = tokio::io::BufReader::new(Conn::Detached);
    let old = std::mem::replace(reader, placeholder);
    let Conn::Plain(tcp) = old.into_inner() else {
        return Err(io::Error::other(
            "STARTTLS on a connection that is not plain TCP",
        ));
    };
    let tls = handshake(acceptor, tcp, timeout).await?;
    *reader = tokio::io::BufReader::with_capacity(buffer, Conn::Tls(Box::new(tls)));
    Ok(())
}

/// RFC 4978 COMPRESS=DEFLATE: compress the connection from here on, both
/// ways. Bytes the client sent after the command and already read are
/// compressed ones: they go to the decompressor first.
pub fn start_deflate(reader: &mut tokio::io::BufReader<Conn>, buffer: usize) -> io::Result<()> {
    if matches!(reader.get_ref(), Conn::Deflate(_) | Conn::Detached) {
        return Err(io::Error::other("the connection is already compressed"));
    }
    let pending = reader.buffer().to_vec();
    let placeholder = tokio::io::BufReader::new(Conn::Detached);
    let old = std::mem::replace(reader, placeholder).into_inner();
    let deflated = crate::deflate::Deflated::new(old, &pending);
    *reader = tokio::io::BufReader::with_capacity(buffer, Conn::Deflate(Box::new(deflated)));
    Ok(())
}

/// The server side of a TLS handshake, `timeout` at most (then
/// `ErrorKind::TimedOut`).
pub async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    timeout: std::time::Duration,
) -> io::Result<TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(done) => done,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no TLS handshake within {timeout:?}"),
        )),
    }
}
