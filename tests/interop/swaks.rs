//! swaks, the SMTP test tool operators reach for first, speaking LMTP to
//! cove: plain, pipelined, and over STARTTLS with cove's self-signed
//! certificate (verified against that certificate, and refused without it).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cove_tests::{TestServer, text};

use crate::common::{header_value, maildir_message_files, program, run};

/// Run swaks against cove's LMTP listener with `args` after the common
/// ones; returns its output (swaks prints the whole conversation on
/// standard output).
fn swaks(swaks: &Path, server: &TestServer, args: &[&str]) -> (Output, String) {
    let mut c = Command::new(swaks);
    c.args(["--protocol", "LMTP", "--server"])
        .arg(server.lmtp_addr().to_string())
        .args(["--from", "sender@example.org", "--helo", "client.test"])
        .args(args);
    let out = run(c);
    let transcript = format!("{}{}", text(&out.stdout), text(&out.stderr));
    (out, transcript)
}

/// A message file for `--data`, with a Message-ID the test looks for.
fn message_file(dir: &Path, id: &str) -> PathBuf {
    let path = dir.join(format!("{id}.eml"));
    fs::write(
        &path,
        format!(
            "From: sender@example.org\r\nTo: a@x.org\r\nSubject: swaks {id}\r\n\
             Message-ID: <{id}@swaks.test>\r\n\r\n.a line that starts with a dot\r\nbye\r\n"
        ),
    )
    .expect("write the message");
    path
}

/// The INBOX file of `user` whose Message-ID is `<id@swaks.test>`.
fn delivered(server: &TestServer, user: &str, id: &str) -> PathBuf {
    let want = format!("<{id}@swaks.test>");
    let found: Vec<PathBuf> = maildir_message_files(&server.folder(user, "INBOX"))
        .into_iter()
        .filter(|f| {
            fs::read(f)
                .ok()
                .and_then(|b| header_value(&b, "Message-ID"))
                .is_some_and(|m| m == want)
        })
        .collect();
    assert_eq!(found.len(), 1, "{want} in {user}'s INBOX: {found:?}");
    let bytes = fs::read(&found[0]).unwrap();
    // The dot-stuffed line arrived unstuffed.
    assert!(
        text(&bytes).contains("\r\n.a line that starts with a dot\r\n"),
        "{}",
        text(&bytes)
    );
    found[0].clone()
}

#[test]
fn swaks_delivers_to_two_users_and_pipelines() {
    let Some(bin) = program("swaks", "swaks") else {
        return;
    };
    let server = TestServer::start("");
    server.add_users(&["a@x.org", "b@x.org"]);
    let dir = tempfile::tempdir().unwrap();

    let data = message_file(dir.path(), "plain");
    let (out, t) = swaks(
        &bin,
        &server,
        &["--to", "a@x.org,b@x.org", "--data", data.to_str().unwrap()],
    );
    assert!(out.status.success(), "swaks failed ({}):\n{t}", out.status);
    assert!(t.contains("<-  220 cove.test LMTP"), "{t}");
    assert!(t.contains(" -> LHLO client.test"), "{t}");
    // One reply per recipient after the data (RFC 2033 §4.2).
    assert!(t.contains("<-  250 2.0.0 <a@x.org> Saved as UID 1"), "{t}");
    assert!(t.contains("<-  250 2.0.0 <b@x.org> Saved as UID 1"), "{t}");
    let fa = delivered(&server, "a@x.org", "plain");
    let fb = delivered(&server, "b@x.org", "plain");
    assert_eq!(
        fs::metadata(fa).unwrap().ino(),
        fs::metadata(fb).unwrap().ino(),
        "stored once"
    );

    // PIPELINING (RFC 2920): MAIL, both RCPTs and DATA in one write; the
    // unknown user gets cove's 550, the other one the message.
    let data = message_file(dir.path(), "pipelined");
    let (out, t) = swaks(
        &bin,
        &server,
        &[
            "--pipeline",
            "--to",
            "nobody@x.org,a@x.org",
            "--data",
            data.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "swaks failed ({}):\n{t}", out.status);
    assert!(t.contains("<-  250-PIPELINING"), "{t}");
    assert!(
        t.contains(" -> MAIL FROM:<sender@example.org>\n -> RCPT TO:<nobody@x.org>\n -> RCPT TO:<a@x.org>\n -> DATA\n"),
        "not pipelined:\n{t}"
    );
    assert!(
        t.contains("<** 550 5.1.1 <nobody@x.org> User unknown"),
        "{t}"
    );
    assert!(t.contains("<-  250 2.0.0 <a@x.org> Saved as UID 2"), "{t}");
    delivered(&server, "a@x.org", "pipelined");
}

#[test]
fn swaks_reports_coves_550_for_an_unknown_user() {
    let Some(bin) = program("swaks", "swaks") else {
        return;
    };
    let server = TestServer::start("");
    let (out, t) = swaks(&bin, &server, &["--to", "nobody@x.org"]);
    // swaks exits 24 when no recipient was accepted.
    assert_eq!(out.status.code(), Some(24), "{t}");
    assert!(
        t.contains("<** 550 5.1.1 <nobody@x.org> User unknown"),
        "{t}"
    );
    assert!(t.contains("<-  221 2.0.0"), "{t}");
}

#[test]
fn swaks_delivers_over_starttls() {
    let Some(bin) = program("swaks", "swaks") else {
        return;
    };
    let server = TestServer::start("");
    server.add_users(&["a@x.org"]);
    let dir = tempfile::tempdir().unwrap();
    let cert = server.data_dir().join("tls/cert.pem");
    let cert = cert.to_str().unwrap();

    // Verified against cove's own certificate, pipelined after TLS too.
    let data = message_file(dir.path(), "tls");
    let (out, t) = swaks(
        &bin,
        &server,
        &[
            "--to",
            "a@x.org",
            "-tls",
            "--tls-verify",
            "--tls-ca-path",
            cert,
            "--pipeline",
            "--data",
            data.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "swaks failed ({}):\n{t}", out.status);
    assert!(t.contains("<-  250 STARTTLS"), "{t}");
    assert!(t.contains("<-  220 2.0.0 Ready to start TLS"), "{t}");
    assert!(t.contains("=== TLS started with cipher TLSv1.3"), "{t}");
    // `~>`/`<~` are lines inside TLS: LHLO again, no STARTTLS offered now.
    assert!(t.contains(" ~> LHLO client.test"), "{t}");
    let after_tls = &t[t.find(" ~> LHLO").unwrap()..];
    assert!(!after_tls.contains("STARTTLS"), "{t}");
    assert!(t.contains("<~  250 2.0.0 <a@x.org> Saved as UID 1"), "{t}");
    assert!(t.contains("<~  221 2.0.0"), "{t}");
    delivered(&server, "a@x.org", "tls");

    // The verification above means something: without cove's certificate
    // as the trust anchor, swaks refuses the handshake and sends nothing.
    let (out, t) = swaks(&bin, &server, &["--to", "a@x.org", "-tls", "--tls-verify"]);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("certificate verify failed"), "{t}");
    assert!(!t.contains("Saved as UID"), "{t}");
}
