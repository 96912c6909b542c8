use super::*;
use tokio::net::TcpListener;

const SECRET: &str = "correct horse battery staple";
const T: Duration = Duration::from_secs(10);

fn secret() -> Secret {
    Secret::new(SECRET).unwrap()
}

fn acceptor() -> TlsAcceptor {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(made.signing_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![made.cert.der().clone()], key)
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

#[path = "../../tests/common/captured.rs"]
mod captured;
use captured::Captured;

#[tokio::test]
async fn frames_round_trip_with_counts() {
    let (mut a, mut b) = memory_pair();
    let big: Vec<u8> = (0..MAX_FRAME).map(|i| (i % 251) as u8).collect();
    let frames = vec![Vec::new(), b"hello".to_vec(), vec![7u8; 100_000], big];
    let sent = frames.clone();
    let writer = tokio::spawn(async move {
        for f in &sent {
            a.send(f).await.unwrap();
        }
        a.flush().await.unwrap();
        a.shutdown().await.unwrap();
        a.bytes_sent()
    });
    for f in &frames {
        assert_eq!(b.recv().await.unwrap().as_deref(), Some(f.as_slice()));
    }
    assert_eq!(b.recv().await.unwrap(), None, "clean EOF between frames");
    let expected: u64 = frames.iter().map(|f| 4 + f.len() as u64).sum();
    assert_eq!(writer.await.unwrap(), expected);
    assert_eq!(b.bytes_received(), expected);
}

#[tokio::test]
async fn over_limit_frames_are_refused_both_ways() {
    let (mut a, _b) = memory_pair();
    let e = a.send(&vec![0u8; MAX_FRAME + 1]).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(a.bytes_sent(), 0);

    let (mut raw, other) = tokio::io::duplex(1024);
    let mut link = Link::new(other);
    raw.write_all(&((MAX_FRAME + 1) as u32).to_be_bytes())
        .await
        .unwrap();
    let e = link.recv().await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("over the"), "{e}");
}

#[tokio::test]
async fn truncated_frames_are_errors() {
    // EOF inside the length.
    let (mut raw, other) = tokio::io::duplex(1024);
    let mut link = Link::new(other);
    raw.write_all(&[0, 0]).await.unwrap();
    drop(raw);
    let e = link.recv().await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);

    // EOF inside the body.
    let (mut raw, other) = tokio::io::duplex(1024);
    let mut link = Link::new(other);
    raw.write_all(&10u32.to_be_bytes()).await.unwrap();
    raw.write_all(b"12345").await.unwrap();
    drop(raw);
    let e = link.recv().await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    assert_eq!(link.bytes_received(), 9);
}

#[test]
fn secrets_are_trimmed_checked_and_redacted() {
    assert!(matches!(Secret::new("   \n"), Err(SecretError::Empty)));
    assert!(matches!(
        Secret::new("short-secret"),
        Err(SecretError::TooShort(12))
    ));
    let a = Secret::new(SECRET).unwrap();
    let b = Secret::new(&format!("  {SECRET}\n")).unwrap();
    assert_eq!(a.key, b.key);
    assert_eq!(a.key, blake3::derive_key(KEY_CONTEXT, SECRET.as_bytes()));
    assert_eq!(format!("{a:?}"), "Secret(<redacted>)");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("peer.secret");
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    assert_eq!(Secret::from_file(&path).unwrap().key, a.key);
    let e = Secret::from_file(&dir.path().join("missing")).unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
}

async fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

#[tokio::test]
async fn tls_handshake_exchanges_names_and_frames() {
    let (l, addr) = listener().await;
    let acc = acceptor();
    let server = tokio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        let (mut link, peer) = accept(tcp, &acc, &secret(), "storage-01", T).await.unwrap();
        let f = link.recv().await.unwrap().unwrap();
        link.send(&f).await.unwrap();
        link.flush().await.unwrap();
        peer
    });
    let (mut link, peer) = connect(&addr, &secret(), "storage-02", T).await.unwrap();
    assert_eq!(peer, "storage-01");
    link.send(b"ping").await.unwrap();
    link.flush().await.unwrap();
    assert_eq!(link.recv().await.unwrap().unwrap(), b"ping");
    assert_eq!(server.await.unwrap(), "storage-02");
}

#[tokio::test]
async fn wrong_secret_is_refused_on_both_sides_and_logged() {
    let log = Captured::default();
    let _guard = log.start();
    let (l, addr) = listener().await;
    let acc = acceptor();
    let server = tokio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        accept(tcp, &acc, &secret(), "storage-01", T)
            .await
            .map(|_| ())
    });
    let other = Secret::new("a different secret, long enough").unwrap();
    let e = connect(&addr, &other, "storage-02", T).await.unwrap_err();
    assert!(matches!(e, LinkError::Refused), "{e}");
    let e = server.await.unwrap().unwrap_err();
    assert!(matches!(e, LinkError::BadProof), "{e}");
    let text = log.text();
    assert!(
        text.contains("replication peer 127.0.0.1:")
            && text.contains("(claims storage-02) refused: wrong secret"),
        "{text}"
    );
}

/// A man in the middle that terminates TLS on both sides and relays the
/// handshake faithfully, without the secret: the proofs are bound to two
/// different TLS sessions, so the server refuses.
#[tokio::test]
async fn a_relaying_man_in_the_middle_is_refused() {
    let (real, real_addr) = listener().await;
    let (mitm, mitm_addr) = listener().await;
    let acc = acceptor();
    let server = tokio::spawn(async move {
        let (tcp, _) = real.accept().await.unwrap();
        accept(tcp, &acc, &secret(), "storage-01", T)
            .await
            .map(|_| ())
    });
    let mitm_acc = acceptor();
    tokio::spawn(async move {
        let (tcp, _) = mitm.accept().await.unwrap();
        let mut from_client = mitm_acc.accept(tcp).await.unwrap();
        let tcp = TcpStream::connect(&real_addr).await.unwrap();
        let mut to_server = TlsConnector::from(client_config())
            .connect(server_name(&real_addr), tcp)
            .await
            .unwrap();
        let _ = tokio::io::copy_bidirectional(&mut from_client, &mut to_server).await;
    });
    let e = connect(&mitm_addr, &secret(), "storage-02", T)
        .await
        .unwrap_err();
    assert!(matches!(e, LinkError::Refused), "{e}");
    assert!(matches!(
        server.await.unwrap().unwrap_err(),
        LinkError::BadProof
    ));
}

#[tokio::test]
async fn a_proof_for_another_exporter_value_is_rejected() {
    let (a, b) = memory_pair();
    let client = tokio::spawn(async move { client_handshake(a, &secret(), "c", [1; 32]).await });
    let e = server_handshake(b, &secret(), "s", [2; 32], "test")
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(e, LinkError::BadProof), "{e}");
    let e = client.await.unwrap().map(|_| ()).unwrap_err();
    assert!(matches!(e, LinkError::Refused), "{e}");

    // Same exporter on both sides: accepted (the check above is the binding).
    let (a, b) = memory_pair();
    let client = tokio::spawn(async move { client_handshake(a, &secret(), "c", [1; 32]).await });
    let (_, name) = server_handshake(b, &secret(), "s", [1; 32], "test")
        .await
        .unwrap();
    assert_eq!(name, "c");
    assert_eq!(client.await.unwrap().unwrap().1, "s");
}

#[tokio::test]
async fn a_server_without_the_secret_is_not_believed() {
    let (a, mut b) = memory_pair();
    let client = tokio::spawn(async move { client_handshake(a, &secret(), "c", [1; 32]).await });
    let _hello = b.recv().await.unwrap().unwrap();
    b.send(&encode_hello(&[9; 32], "s")).await.unwrap();
    b.flush().await.unwrap();
    let _proof = b.recv().await.unwrap().unwrap();
    let mut fake = vec![PROOF_OK];
    fake.extend_from_slice(&[0u8; 32]);
    b.send(&fake).await.unwrap();
    b.flush().await.unwrap();
    let e = client.await.unwrap().map(|_| ()).unwrap_err();
    assert!(matches!(e, LinkError::BadProof), "{e}");
}

#[tokio::test]
async fn protocol_version_mismatch_is_named_on_both_sides() {
    // A future client talks to this server.
    let (mut a, b) = memory_pair();
    let server =
        tokio::spawn(async move { server_handshake(b, &secret(), "s", [1; 32], "test").await });
    let mut hello = encode_hello(&[3; 32], "c");
    hello[0] = PROTOCOL_VERSION + 1;
    a.send(&hello).await.unwrap();
    a.flush().await.unwrap();
    let reply = a.recv().await.unwrap().unwrap();
    assert_eq!(
        reply[0], PROTOCOL_VERSION,
        "the server still says its version"
    );
    let e = server.await.unwrap().map(|_| ()).unwrap_err();
    assert!(
        matches!(e, LinkError::Version { ours, theirs } if ours == PROTOCOL_VERSION && theirs == PROTOCOL_VERSION + 1),
        "{e}"
    );

    // This client talks to a future server.
    let (a, mut b) = memory_pair();
    let client = tokio::spawn(async move { client_handshake(a, &secret(), "c", [1; 32]).await });
    let _hello = b.recv().await.unwrap().unwrap();
    b.send(&[PROTOCOL_VERSION + 1, 0, 0]).await.unwrap();
    b.flush().await.unwrap();
    let e = client.await.unwrap().map(|_| ()).unwrap_err();
    assert!(
        matches!(e, LinkError::Version { ours, theirs } if ours == PROTOCOL_VERSION && theirs == PROTOCOL_VERSION + 1),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains(&format!("version {}", PROTOCOL_VERSION + 1)),
        "{e}"
    );
}

#[tokio::test]
async fn malformed_hellos_and_oversized_handshake_frames_are_refused() {
    for bad in [
        Vec::new(),
        vec![PROTOCOL_VERSION, 1, 2, 3],
        encode_hello(&[0; 32], ""),
        encode_hello(&[0; 32], "two words"),
    ] {
        let (mut a, b) = memory_pair();
        let server =
            tokio::spawn(async move { server_handshake(b, &secret(), "s", [1; 32], "t").await });
        a.send(&bad).await.unwrap();
        a.flush().await.unwrap();
        let e = server.await.unwrap().map(|_| ()).unwrap_err();
        assert!(matches!(e, LinkError::Malformed(_)), "{bad:?}: {e}");
    }
    let (mut a, b) = memory_pair();
    let server =
        tokio::spawn(async move { server_handshake(b, &secret(), "s", [1; 32], "t").await });
    a.send(&vec![1u8; MAX_HANDSHAKE_FRAME + 1]).await.unwrap();
    a.flush().await.unwrap();
    let e = server.await.unwrap().map(|_| ()).unwrap_err();
    assert!(matches!(e, LinkError::Io(_)), "{e}");
}

#[tokio::test]
async fn a_silent_peer_runs_into_the_handshake_deadline() {
    let short = Duration::from_millis(200);
    // A server that accepts TCP and never speaks TLS.
    let (l, addr) = listener().await;
    let hold = tokio::spawn(async move { l.accept().await.unwrap() });
    let e = connect(&addr, &secret(), "c", short).await.unwrap_err();
    assert!(matches!(e, LinkError::Timeout(_)), "{e}");
    drop(hold);

    // A client that connects and never speaks.
    let (l, addr) = listener().await;
    let _silent = TcpStream::connect(&addr).await.unwrap();
    let (tcp, _) = l.accept().await.unwrap();
    let e = accept(tcp, &acceptor(), &secret(), "s", short)
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(e, LinkError::Timeout(_)), "{e}");
}

#[tokio::test]
async fn connecting_to_nothing_names_the_address() {
    let (l, addr) = listener().await;
    drop(l);
    let e = connect(&addr, &secret(), "c", T).await.unwrap_err();
    assert!(matches!(e, LinkError::Connect { .. }), "{e}");
    assert!(e.to_string().contains(&addr), "{e}");
}

#[test]
fn io_errors_in_logs_carry_no_urls() {
    let rustls_eof = std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "peer closed connection without sending TLS close_notify: https://docs.rs/rustls/latest/rustls/manual/_03_howto/index.html#unexpected-eof",
    );
    assert_eq!(
        super::plain_io(&rustls_eof),
        "peer closed connection without sending TLS close_notify"
    );
    let e = super::LinkError::Tls(rustls_eof);
    assert!(!e.to_string().contains("https://"), "{e}");
    let plain = std::io::Error::from_raw_os_error(111);
    assert_eq!(super::plain_io(&plain), plain.to_string());
}
