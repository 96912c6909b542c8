//! Content verification (DESIGN.md invariant 5, issue 11): a blob whose
//! bytes rot is served to every user who shares it, so `cove dedup verify`
//! checks what the mailboxes serve, names every message that uses damaged
//! content and exits non-zero — also once a re-delivery of the same content
//! has quarantined the rotten blob and the blob store looks healthy — and
//! the server relinks the damaged files to a verified copy.

use std::time::Duration;

use cove_store::{DeliveryTarget, Store};
use cove_tests::{
    TestServer, assert_reply, corrupt_in_place, eventually, fetch_body, message, open_store, text,
};

const USERS: [&str; 2] = ["a@x.org", "b@x.org"];
const PASS: &str = "pw";

/// A server with IMAP, both users, and one message delivered to both in
/// one transaction (one blob, two hard links). Returns the message as
/// stored (with the header LMTP adds).
fn shared_message() -> (TestServer, String) {
    let server =
        TestServer::start("[imap]\nlisten = [\"127.0.0.1:0\"]\nauth_failure_delay_ms = 10");
    for u in USERS {
        server.add_user_with_password(u, PASS);
    }
    let original = message("shared", "the bytes every user must get back");
    let mut c = server.lmtp_ready();
    let d = c.deliver("s@example.org", &USERS, &original);
    assert_reply(&d.results[0], "250 2.0.0");
    assert_reply(&d.results[1], "250 2.0.0");
    let blobs = server.blob_files();
    assert_eq!(blobs.len(), 1, "one blob for both users");
    let stored = String::from_utf8(std::fs::read(&blobs[0]).unwrap()).unwrap();
    assert!(stored.ends_with(&original));
    (server, stored)
}

/// `cove dedup verify`: asserts it fails and names the damaged message of
/// every user (mailbox, UID 1, GUID, path); returns its output.
fn verify_reports_both(server: &TestServer) -> String {
    let out = server.cli(&["dedup", "verify"]);
    let stdout = text(&out.stdout);
    assert!(
        !out.status.success(),
        "verify must fail: {stdout}{}",
        text(&out.stderr)
    );
    for u in USERS {
        let line = stdout
            .lines()
            .find(|l| l.starts_with("damaged message: ") && l.contains(&format!("user={u} ")))
            .unwrap_or_else(|| panic!("{u}'s message is not reported: {stdout}"));
        for part in ["mailbox=\"INBOX\"", "uid=1 ", "guid=", "path=/"] {
            assert!(line.contains(part), "{part} missing in {line:?}");
        }
    }
    stdout
}

#[test]
fn verify_names_every_message_that_serves_a_corrupt_blob() {
    let (server, original) = shared_message();
    let blob = server.blob_files().remove(0);
    corrupt_in_place(&blob);
    let out = verify_reports_both(&server);
    assert!(out.contains("corrupt blob: "), "{out}");
    // Quarantined: the name is free for the right content.
    assert!(!blob.exists());
    assert!(
        server
            .data_dir()
            .join("blobs/quarantine")
            .read_dir()
            .unwrap()
            .count()
            >= 1
    );
    // A second run still reports the messages (the blob store alone would
    // look clean now).
    verify_reports_both(&server);
    // No peer and no good copy here: users still get the damaged bytes,
    // and the report says so on every run.
    let mut imap = server.imap_login(USERS[0], PASS);
    imap.cmd_ok("s SELECT INBOX");
    assert_ne!(fetch_body(&mut imap, 1), original);
}

#[test]
fn a_redelivery_quarantines_the_blob_and_verify_still_reports_then_the_server_relinks() {
    let (mut server, original) = shared_message();
    server.stop();
    corrupt_in_place(&server.blob_files().remove(0));

    // The same content arrives again (through the store API, the path LMTP
    // takes): its stored copy does not verify, so it is quarantined and the
    // fresh bytes take the name. The old files still hold the bad inode.
    {
        let store: Store = open_store(server.data_dir());
        let user = store
            .user(&cove_store::Address::parse(USERS[0]).unwrap())
            .unwrap()
            .unwrap();
        let blob = store.blobs().put(original.as_bytes()).unwrap();
        let r = store.deliver(
            &blob,
            &[DeliveryTarget {
                user,
                mailbox: None,
            }],
        );
        assert!(r[0].is_ok(), "{r:?}");
    }
    let blob = server.blob_files().remove(0);
    assert_eq!(
        cove_store::ContentId::of(&std::fs::read(&blob).unwrap()),
        cove_store::ContentId::of(original.as_bytes()),
        "the blob store holds good bytes again"
    );
    verify_reports_both(&server);

    // The server relinks both users' files to the verified blob, without
    // anyone asking.
    server.restart();
    let starts = |marker: &str| server.logs().iter().filter(|l| l.contains(marker)).count();
    eventually(Duration::from_secs(20), || {
        (starts("imap listening on ") == starts("lmtp listening on ")).then_some(())
    })
    .expect("the restarted server logs its IMAP address");
    for u in USERS {
        let mut imap = server.imap_login(u, PASS);
        imap.cmd_ok("s SELECT INBOX");
        let repaired = eventually(Duration::from_secs(20), || {
            (fetch_body(&mut imap, 1) == original).then_some(())
        });
        assert!(repaired.is_some(), "{u} still gets damaged bytes");
    }
    let out = server.cli(&["dedup", "verify"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(server.logged("repaired: message file relinked"));
}
