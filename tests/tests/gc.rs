//! `cove dedup gc` removes the blobs no Maildir file links to, and only
//! those (a blob's link count is its reference count).

use std::fs;

use cove_store::ContentId;
use cove_tests::{TestServer, assert_reply, header, mailbox_contents, message};

/// `cove dedup stats` as (messages, blobs, unreferenced).
fn stats(server: &TestServer) -> (u64, u64, u64) {
    let out = server.cli_ok(&["dedup", "stats"]);
    let field = |name: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {out}"))
    };
    (field("messages:"), field("blobs:"), field("unreferenced:"))
}

/// The one file of a user's INBOX with this Message-ID.
fn file_with(server: &TestServer, user: &str, id: &str) -> std::path::PathBuf {
    server
        .maildir_files(user, "INBOX")
        .into_iter()
        .find(|p| header(&fs::read(p).unwrap(), "Message-ID").as_deref() == Some(id))
        .unwrap_or_else(|| panic!("no {id} in {user}'s INBOX"))
}

#[test]
fn gc_removes_only_unreferenced_blobs() {
    let mut server = TestServer::start("");
    server.add_users(&["a@x.org", "b@x.org"]);
    let mut c = server.lmtp_ready();
    let d = c.deliver(
        "s@example.org",
        &["a@x.org", "b@x.org"],
        &message("A", "shared"),
    );
    assert_reply(&d.results[0], "250 2.0.0");
    assert_reply(&d.results[1], "250 2.0.0");
    let d = c.deliver("s@example.org", &["a@x.org"], &message("B", "alone"));
    assert_reply(&d.results[0], "250 2.0.0");
    assert_reply(&c.cmd("QUIT"), "221 2.0.0");
    assert_eq!(stats(&server), (3, 2, 0));

    let a_of_a = file_with(&server, "a@x.org", "<A@cove.test>");
    let b_of_a = file_with(&server, "b@x.org", "<A@cove.test>");
    let b_file = file_with(&server, "a@x.org", "<B@cove.test>");
    let a_id = ContentId::of(&fs::read(&a_of_a).unwrap());
    let b_id = ContentId::of(&fs::read(&b_file).unwrap());

    // Behind cove's back: B's only copy and one of A's two copies go.
    fs::remove_file(&b_file).unwrap();
    fs::remove_file(&a_of_a).unwrap();
    assert_eq!(stats(&server), (1, 2, 1));

    // gc, while the server runs.
    let out = server.cli_ok(&["dedup", "gc"]);
    assert!(
        out.starts_with("removed 1 unreferenced blob(s), freeing "),
        "{out}"
    );
    let blobs = server.blob_files();
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    assert!(blobs[0].ends_with(&a_id.to_hex()[2..]));
    assert!(blobs.iter().all(|p| !p.ends_with(&b_id.to_hex()[2..])));
    assert_eq!(stats(&server), (1, 1, 0));
    // Nothing left to collect.
    let out = server.cli_ok(&["dedup", "gc"]);
    assert!(out.starts_with("removed 0 unreferenced blob(s)"), "{out}");
    assert!(b_of_a.exists());

    server.stop();
    let store = server.open_store();
    store.blobs().verify(&a_id).expect("A's blob verifies");
    assert!(
        store.blobs().verify(&b_id).is_err(),
        "B's blob is still there"
    );
    // The index follows the Maildir: a@ has nothing left, b@ still has A.
    assert!(mailbox_contents(&store, "a@x.org", "INBOX").1.is_empty());
    let (_, b_msgs) = mailbox_contents(&store, "b@x.org", "INBOX");
    assert_eq!(b_msgs.len(), 1);
    assert_eq!(b_msgs[0].0.content_id, a_id);
    assert_eq!(
        fs::read(&b_msgs[0].1).unwrap(),
        store.blobs().read(&a_id).unwrap()
    );
}
