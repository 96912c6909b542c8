//! The peer link: length-prefixed frames over TLS, opened by a handshake in
//! which both nodes prove they know the shared secret.
//!
//! The problem. Two cove nodes replicate over a network the operator may not
//! fully trust, and configure each other by address and a shared secret
//! (issue 4), not by certificates: the accepting node serves cove's ordinary
//! certificate, which is self-signed by default and whose name need not match
//! the address a peer dials. So TLS here gives confidentiality and integrity,
//! and the secret gives authentication.
//!
//! The handshake, after TLS (1.3 only on the connecting side):
//!
//! ```text
//! client -> server  hello:  version(1) nonce_c(32) name_c
//! server -> client  hello:  version(1) nonce_s(32) name_s
//! client -> server  proof:  MAC("client")
//! server -> client  0x00 MAC("server")     or 0x01 (refused) and close
//! MAC(role) = blake3::keyed_hash(key, role || exporter || nonce_c || nonce_s
//!                                     || len(name_c) name_c || len(name_s) name_s)
//! key       = blake3::derive_key("cove 2026-11 replication link", secret)
//! exporter  = TLS exporter, label "EXPORTER-cove-replication", 32 bytes
//! ```
//!
//! Invariants. A proof is bound to this TLS session (the exporter), to both
//! fresh nonces (no replay) and to both names (a node cannot be made to
//! believe it talks to another name), and to its role (a server's proof is not
//! a client's). A man in the middle that terminates TLS towards each side sees
//! two sessions with two different exporter values, so relaying one side's
//! proof to the other fails; it can only pass if it knows the secret. The
//! server checks the client's proof before it sends its own, so a client
//! without the secret learns nothing it could use offline beyond one MAC over
//! values it chose. MACs are compared in constant time (`blake3::Hash`'s ==).
//! The whole handshake runs under one deadline, and handshake frames are
//! limited to [`MAX_HANDSHAKE_FRAME`] bytes before the peer is authenticated.
//!
//! Alternatives rejected: pinned certificates (the operator would have to
//! copy certificates between nodes, and the issue fixes a shared secret);
//! TLS-PSK (rustls does not offer external PSKs); a plain challenge-response
//! without channel binding (relayable by a man in the middle, since the
//! client accepts any certificate).

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufStream, DuplexStream};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, server};

/// Largest frame a link sends or accepts once the peer is authenticated.
pub const MAX_FRAME: usize = 32 * 1024 * 1024;
/// Largest frame accepted during the handshake, before the peer is known.
pub const MAX_HANDSHAKE_FRAME: usize = 1024;
/// The replication protocol version this node speaks, sent in the hello.
pub const PROTOCOL_VERSION: u8 = 4;
/// Longest node name accepted in a hello, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Shortest accepted shared secret, in bytes (after trimming).
pub const MIN_SECRET_LEN: usize = 16;

const KEY_CONTEXT: &str = "cove 2026-11 replication link";
const EXPORTER_LABEL: &[u8] = b"EXPORTER-cove-replication";
const NONCE_LEN: usize = 32;
const PROOF_OK: u8 = 0;
const PROOF_REFUSED: u8 = 1;
const BUFFER: usize = 64 * 1024;

/// Why a secret was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the replication secret is empty")]
    Empty,
    #[error("the replication secret is {0} bytes; at least {MIN_SECRET_LEN} are required")]
    TooShort(usize),
    #[error("cannot read the replication secret file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// The shared secret of a replication pair, kept only as the derived MAC
/// key. Its `Debug` prints `<redacted>`.
#[derive(Clone)]
pub struct Secret {
    key: [u8; 32],
}

impl Secret {
    /// From the configuration's `secret` string; surrounding whitespace is
    /// not part of the secret.
    pub fn new(text: &str) -> Result<Secret, SecretError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(SecretError::Empty);
        }
        if text.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort(text.len()));
        }
        Ok(Secret {
            key: blake3::derive_key(KEY_CONTEXT, text.as_bytes()),
        })
    }

    /// From the configuration's `secret_file`: the file's text, trimmed.
    pub fn from_file(path: &Path) -> Result<Secret, SecretError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Secret::new(&text)
    }

    fn proof(&self, role: &[u8], exporter: &[u8; 32], transcript: &Transcript) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(role);
        h.update(exporter);
        h.update(&transcript.nonce_c);
        h.update(&transcript.nonce_s);
        for name in [&transcript.name_c, &transcript.name_s] {
            h.update(&(name.len() as u32).to_be_bytes());
            h.update(name.as_bytes());
        }
        h.finalize()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// An I/O error as a log line shows it: rustls appends a documentation
/// address to some of its errors (`peer closed connection without sending
/// TLS close_notify: https://docs.rs/...`), which has no place in an
/// operator's log; every word that is a URL is left out.
pub fn plain_io(e: &io::Error) -> String {
    let text = e.to_string();
    if !text.contains("://") {
        return text;
    }
    let words: Vec<&str> = text
        .split(' ')
        .filter(|w| !w.starts_with("http://") && !w.starts_with("https://"))
        .collect();
    words
        .join(" ")
        .trim_end_matches([' ', ':', ';', ',', '('])
        .to_string()
}

/// Why a link could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot connect to {addr}: {}", plain_io(source))]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("TLS handshake failed: {}", plain_io(.0))]
    Tls(#[source] io::Error),
    #[error("the replication handshake failed: {}", plain_io(.0))]
    Io(#[from] io::Error),
    #[error("the replication handshake took longer than {0:?}")]
    Timeout(Duration),
    #[error("the peer refused the link: wrong secret")]
    Refused,
    #[error("the peer did not prove it knows the secret (wrong secret, or a man in the middle)")]
    BadProof,
    #[error("the peer speaks replication protocol version {theirs}; this node speaks {ours}")]
    Version { ours: u8, theirs: u8 },
    #[error("malformed replication handshake: {0}")]
    Malformed(&'static str),
}

/// Any byte stream a link can run over: TLS to a peer, or memory.
pub trait PeerIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + ?Sized> PeerIo for T {}

/// The stream of a link this node opened ([`connect`]); boxed so the
/// replicator can be handed links made some other way (see
/// `replicator::Connector`).
pub type PeerStream = Box<dyn PeerIo>;

/// A framed, buffered, counted byte stream to a peer. A frame is a u32
/// big-endian length and that many bytes. `send` only buffers; call `flush`
/// before waiting for an answer.
pub struct Link<S> {
    io: BufStream<S>,
    sent: u64,
    received: u64,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Link<S> {
    pub fn new(stream: S) -> Link<S> {
        Link {
            io: BufStream::with_capacity(BUFFER, BUFFER, stream),
            sent: 0,
            received: 0,
        }
    }

    /// Queue one frame. Frames over [`MAX_FRAME`] are refused.
    pub async fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        if frame.len() > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "frame of {} bytes is over the {MAX_FRAME}-byte limit",
                    frame.len()
                ),
            ));
        }
        self.io
            .write_all(&(frame.len() as u32).to_be_bytes())
            .await?;
        self.io.write_all(frame).await?;
        self.sent += 4 + frame.len() as u64;
        Ok(())
    }

    /// The next frame; `None` when the peer closed cleanly between frames.
    pub async fn recv(&mut self) -> io::Result<Option<Vec<u8>>> {
        self.recv_limited(MAX_FRAME).await
    }

    async fn recv_limited(&mut self, max: usize) -> io::Result<Option<Vec<u8>>> {
        let mut head = [0u8; 4];
        let mut got = 0;
        while got < head.len() {
            let n = self.io.read(&mut head[got..]).await?;
            if n == 0 {
                if got == 0 {
                    return Ok(None);
                }
                self.received += got as u64;
                return Err(truncated());
            }
            got += n;
        }
        self.received += 4;
        let len = u32::from_be_bytes(head) as usize;
        if len > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("peer sent a frame of {len} bytes, over the {max}-byte limit"),
            ));
        }
        // Grow as bytes arrive rather than trusting the length up front.
        let mut frame = Vec::with_capacity(len.min(BUFFER));
        let n = (&mut self.io)
            .take(len as u64)
            .read_to_end(&mut frame)
            .await?;
        self.received += n as u64;
        if n < len {
            return Err(truncated());
        }
        Ok(Some(frame))
    }

    /// Write out every queued frame.
    pub async fn flush(&mut self) -> io::Result<()> {
        self.io.flush().await
    }

    /// Flush, then close the sending direction (TLS close_notify, TCP FIN).
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.io.shutdown().await
    }

    /// Bytes handed to the stream so far, frame headers included.
    pub fn bytes_sent(&self) -> u64 {
        self.sent
    }

    /// Bytes read from the stream so far, frame headers included.
    pub fn bytes_received(&self) -> u64 {
        self.received
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        self.io.get_ref()
    }
}

impl<S> fmt::Debug for Link<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("sent", &self.sent)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

fn truncated() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the peer closed the link inside a frame",
    )
}

/// Two linked ends in memory, without TLS or authentication: for tests and
/// for running two stores in one process.
pub fn memory_pair() -> (Link<DuplexStream>, Link<DuplexStream>) {
    let (a, b) = tokio::io::duplex(256 * 1024);
    (Link::new(a), Link::new(b))
}

/// What both sides said in their hellos: the input of the proofs.
struct Transcript {
    nonce_c: [u8; NONCE_LEN],
    nonce_s: [u8; NONCE_LEN],
    name_c: String,
    name_s: String,
}

struct Hello {
    version: u8,
    nonce: [u8; NONCE_LEN],
    name: String,
}

fn encode_hello(nonce: &[u8; NONCE_LEN], name: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + NONCE_LEN + name.len());
    v.push(PROTOCOL_VERSION);
    v.extend_from_slice(nonce);
    v.extend_from_slice(name.as_bytes());
    v
}

fn decode_hello(frame: &[u8]) -> Result<Hello, LinkError> {
    let (&version, rest) = frame
        .split_first()
        .ok_or(LinkError::Malformed("empty hello"))?;
    if version != PROTOCOL_VERSION {
        // Whatever follows may be laid out differently: stop here.
        return Ok(Hello {
            version,
            nonce: [0; NONCE_LEN],
            name: String::new(),
        });
    }
    if rest.len() < NONCE_LEN {
        return Err(LinkError::Malformed("hello too short"));
    }
    let (nonce, name) = rest.split_at(NONCE_LEN);
    let name = std::str::from_utf8(name).map_err(|_| LinkError::Malformed("name not UTF-8"))?;
    if !valid_name(name) {
        return Err(LinkError::Malformed(
            "node name empty, too long or with control characters",
        ));
    }
    Ok(Hello {
        version,
        nonce: nonce
            .try_into()
            .map_err(|_| LinkError::Malformed("nonce"))?,
        name: name.to_string(),
    })
}

/// A node name as the handshake carries it (and as logs may show it).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.chars().any(|c| c.is_control() || c.is_whitespace())
}

fn nonce() -> Result<[u8; NONCE_LEN], LinkError> {
    let mut n = [0u8; NONCE_LEN];
    getrandom::fill(&mut n).map_err(|e| LinkError::Io(io::Error::other(e.to_string())))?;
    Ok(n)
}

/// The TLS session's exporter value the proofs are bound to (RFC 8446 §7.5).
fn exporter<D>(conn: &rustls::ConnectionCommon<D>) -> Result<[u8; 32], LinkError> {
    conn.export_keying_material([0u8; 32], EXPORTER_LABEL, None)
        .map_err(|e| LinkError::Tls(io::Error::other(e)))
}

async fn recv_handshake<S: AsyncRead + AsyncWrite + Unpin + Send>(
    link: &mut Link<S>,
) -> Result<Vec<u8>, LinkError> {
    match link.recv_limited(MAX_HANDSHAKE_FRAME).await? {
        Some(f) => Ok(f),
        None => Err(LinkError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the peer closed the link during the handshake",
        ))),
    }
}

/// Open a link to a peer at `addr` (`host:port`) and authenticate both ways.
/// Returns the link and the name the peer gave.
pub async fn connect(
    addr: &str,
    secret: &Secret,
    my_name: &str,
    timeout: Duration,
) -> Result<(Link<PeerStream>, String), LinkError> {
    tokio::time::timeout(timeout, connect_inner(addr, secret, my_name))
        .await
        .map_err(|_| LinkError::Timeout(timeout))?
}

async fn connect_inner(
    addr: &str,
    secret: &Secret,
    my_name: &str,
) -> Result<(Link<PeerStream>, String), LinkError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| LinkError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let tls = TlsConnector::from(client_config())
        .connect(server_name(addr), tcp)
        .await
        .map_err(LinkError::Tls)?;
    let exporter = exporter(tls.get_ref().1)?;
    let stream: PeerStream = Box::new(tls);
    client_handshake(Link::new(stream), secret, my_name, exporter).await
}

async fn client_handshake<S: AsyncRead + AsyncWrite + Unpin + Send>(
    mut link: Link<S>,
    secret: &Secret,
    my_name: &str,
    exporter: [u8; 32],
) -> Result<(Link<S>, String), LinkError> {
    let nonce_c = nonce()?;
    link.send(&encode_hello(&nonce_c, my_name)).await?;
    link.flush().await?;
    let hello = decode_hello(&recv_handshake(&mut link).await?)?;
    if hello.version != PROTOCOL_VERSION {
        return Err(LinkError::Version {
            ours: PROTOCOL_VERSION,
            theirs: hello.version,
        });
    }
    let transcript = Transcript {
        nonce_c,
        nonce_s: hello.nonce,
        name_c: my_name.to_string(),
        name_s: hello.name,
    };
    let mine = secret.proof(b"client", &exporter, &transcript);
    link.send(mine.as_bytes()).await?;
    link.flush().await?;
    let answer = recv_handshake(&mut link).await?;
    match answer.split_first() {
        Some((&PROOF_REFUSED, _)) => Err(LinkError::Refused),
        Some((&PROOF_OK, proof)) => {
            let proof: [u8; 32] = proof
                .try_into()
                .map_err(|_| LinkError::Malformed("server proof length"))?;
            if blake3::Hash::from(proof) != secret.proof(b"server", &exporter, &transcript) {
                return Err(LinkError::BadProof);
            }
            Ok((link, transcript.name_s))
        }
        _ => Err(LinkError::Malformed("server proof")),
    }
}

/// Take an accepted TCP connection through TLS (cove's acceptor) and the
/// handshake. Returns the link and the name the peer gave; whether that name
/// is a configured peer is the caller's question.
pub async fn accept(
    tcp: TcpStream,
    acceptor: &TlsAcceptor,
    secret: &Secret,
    my_name: &str,
    timeout: Duration,
) -> Result<(Link<server::TlsStream<TcpStream>>, String), LinkError> {
    let peer = tcp
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "(unknown address)".to_string());
    let work = async {
        let _ = tcp.set_nodelay(true);
        let tls = acceptor.accept(tcp).await.map_err(LinkError::Tls)?;
        let exporter = exporter(tls.get_ref().1)?;
        server_handshake(Link::new(tls), secret, my_name, exporter, &peer).await
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| LinkError::Timeout(timeout))?
}

async fn server_handshake<S: AsyncRead + AsyncWrite + Unpin + Send>(
    mut link: Link<S>,
    secret: &Secret,
    my_name: &str,
    exporter: [u8; 32],
    peer: &str,
) -> Result<(Link<S>, String), LinkError> {
    let hello = decode_hello(&recv_handshake(&mut link).await?)?;
    let nonce_s = nonce()?;
    // Our hello goes out even on a version mismatch, so the other side can
    // say which version we speak.
    link.send(&encode_hello(&nonce_s, my_name)).await?;
    link.flush().await?;
    if hello.version != PROTOCOL_VERSION {
        tracing::warn!(
            "replication peer {peer} refused: it speaks protocol version {}, this node speaks {PROTOCOL_VERSION}",
            hello.version
        );
        return Err(LinkError::Version {
            ours: PROTOCOL_VERSION,
            theirs: hello.version,
        });
    }
    let transcript = Transcript {
        nonce_c: hello.nonce,
        nonce_s,
        name_c: hello.name,
        name_s: my_name.to_string(),
    };
    let proof = recv_handshake(&mut link).await?;
    let proof: [u8; 32] = proof
        .as_slice()
        .try_into()
        .map_err(|_| LinkError::Malformed("client proof length"))?;
    if blake3::Hash::from(proof) != secret.proof(b"client", &exporter, &transcript) {
        tracing::warn!(
            "replication peer {peer} (claims {}) refused: wrong secret",
            transcript.name_c
        );
        let _ = link.send(&[PROOF_REFUSED]).await;
        let _ = link.shutdown().await;
        return Err(LinkError::BadProof);
    }
    let mut answer = Vec::with_capacity(33);
    answer.push(PROOF_OK);
    answer.extend_from_slice(secret.proof(b"server", &exporter, &transcript).as_bytes());
    link.send(&answer).await?;
    link.flush().await?;
    Ok((link, transcript.name_c))
}

/// The TLS name to present: the host part of `host:port` (an IP address is
/// fine; the certificate is not checked against it anyway).
fn server_name(addr: &str) -> ServerName<'static> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .unwrap_or_else(|_| ServerName::try_from("cove-peer").expect("a valid DNS name"))
}

fn client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let verifier = Arc::new(AnyCertificate(provider.clone()));
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13])
                .expect("ring supports TLS 1.3")
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// Accepts any certificate (authentication is the secret, bound to the TLS
/// session), but still checks that the server holds the certificate's key,
/// with the ring provider's algorithms.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests;
