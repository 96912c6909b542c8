//! sieve-connect (Debian's package, the ManageSieve client scripts and
//! admins use) uploading, activating and listing a script on cove over
//! STARTTLS; a delivery then runs it.

use std::process::Command;

use cove_tests::{IMAP_CONFIG, TestServer, run_bounded, text};

use crate::common::{PROGRAM_TIMEOUT, program};

const PASSWORD: &str = "pw-sieve-connect";

/// Run sieve-connect against `server` as ann@x.org with `args`; the
/// password goes in on standard input (`--passwordfd 0`).
fn sieve_connect(bin: &std::path::Path, server: &TestServer, args: &[&str]) -> (bool, String) {
    let addr = server.addr_of("managesieve");
    let mut c = Command::new(bin);
    c.args(["--server", "localhost", "--port"])
        .arg(addr.port().to_string())
        .args(["--user", "ann@x.org", "--passwordfd", "0", "--notlsverify"])
        .args(args);
    let out = run_bounded(c, Some(format!("{PASSWORD}\n").as_bytes()), PROGRAM_TIMEOUT);
    (
        out.status.success(),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

#[test]
fn sieve_connect_uploads_and_activates_a_script_that_then_runs() {
    let Some(bin) = program("sieve-connect", "sieve-connect") else {
        return;
    };
    let server = TestServer::start(&format!(
        "{IMAP_CONFIG}\n[sieve]\nlisten = [\"127.0.0.1:0\"]\n"
    ));
    server.add_user_with_password("ann@x.org", PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("rules.sieve");
    std::fs::write(
        &script,
        "require [\"fileinto\", \"mailbox\"];\nif header :contains \"subject\" \"[list]\" { fileinto :create \"Lists\"; }\n",
    )
    .unwrap();
    let local = script.to_str().unwrap();
    let (ok, out) = sieve_connect(
        &bin,
        &server,
        &["--localsieve", local, "--remotesieve", "rules", "--upload"],
    );
    assert!(ok, "upload: {out}");
    let (ok, out) = sieve_connect(&bin, &server, &["--remotesieve", "rules", "--activate"]);
    assert!(ok, "activate: {out}");
    let (ok, out) = sieve_connect(&bin, &server, &["--list"]);
    assert!(ok && out.contains("rules"), "list: {out}");
    // A script that does not compile is refused with the line named.
    std::fs::write(&script, "keep;\nfrobnicate;\n").unwrap();
    let (ok, out) = sieve_connect(
        &bin,
        &server,
        &["--localsieve", local, "--remotesieve", "bad", "--upload"],
    );
    assert!(!ok && out.contains("line 2"), "bad upload: {out}");
    server.deliver_to(
        "ann@x.org",
        "From: b@example.org\r\nTo: ann@x.org\r\nSubject: [list] hello\r\n\r\nhi\r\n",
    );
    assert_eq!(server.maildir_files("ann@x.org", "Lists").len(), 1);
    assert!(server.maildir_files("ann@x.org", "INBOX").is_empty());
}
