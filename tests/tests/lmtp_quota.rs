//! The quota at delivery: a recipient over quota gets 552 5.2.2 (RFC 3463:
//! mailbox full) while the others in the same transaction get their 250.

use cove_tests::{TestServer, message};

#[test]
fn over_quota_recipient_gets_552_5_2_2() {
    let server = TestServer::start("");
    server.cli_ok(&["user", "add", "small@x.org", "--quota", "100"]);
    server.cli_ok(&["user", "add", "big@x.org"]);
    let mut lmtp = server.lmtp_ready();
    let body = "x".repeat(200);
    let d = lmtp.deliver(
        "s@example.org",
        &["small@x.org", "big@x.org"],
        &message("quota", &body),
    );
    assert_eq!(d.results.len(), 2, "{:?}", d.results);
    assert!(d.results[0].is("552 5.2.2"), "{:?}", d.results);
    assert!(d.results[1].is("250 2.0.0"), "{:?}", d.results);
    assert!(server.maildir_files("small@x.org", "INBOX").is_empty());
    assert_eq!(server.maildir_files("big@x.org", "INBOX").len(), 1);
}
