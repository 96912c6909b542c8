//! One DATA to many recipients is stored once (DESIGN.md, LMTP): one reply
//! per recipient, one inode for all the copies, dedup across transactions,
//! and `user+detail` delivery.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;

use cove_store::ContentId;
use cove_tests::{TestServer, assert_reply, message};

#[test]
fn fifty_recipients_one_inode_and_dedup_across_transactions() {
    let server = TestServer::start("");
    let users: Vec<String> = (0..50).map(|i| format!("u{i:02}@x.org")).collect();
    let mut all: Vec<&str> = users.iter().map(String::as_str).collect();
    all.push("other@x.org");
    server.add_users(&all);

    let mut rcpts: Vec<&str> = users.iter().map(String::as_str).collect();
    rcpts.insert(17, "nobody@x.org");
    let body = message("fanout-1", "the same for everyone");
    let mut c = server.lmtp_ready();
    let d = c.deliver("sender@example.org", &rcpts, &body);
    assert_reply(&d.mail, "250 2.1.0");
    assert_eq!(d.rcpts.len(), 51);
    for (i, r) in d.rcpts.iter().enumerate() {
        if i == 17 {
            assert_reply(r, "550 5.1.1");
            assert!(r.first().contains("<nobody@x.org>"), "{r:?}");
        } else {
            assert_reply(r, "250 2.1.5");
        }
    }
    assert_reply(d.data.as_ref().unwrap(), "354");
    assert_eq!(d.results.len(), 50, "one reply per accepted recipient");
    for (r, u) in d.results.iter().zip(&users) {
        assert_reply(r, "250 2.0.0");
        assert!(r.first().contains(&format!("<{u}>")), "{r:?} for {u}");
        assert_eq!(r.saved_uid(), Some(1), "{r:?}");
    }

    // Every copy is the same inode, and it is the blob's.
    let mut inodes = HashSet::new();
    let mut first = None;
    for u in &users {
        let files = server.maildir_files(u, "INBOX");
        assert_eq!(files.len(), 1, "{u}: {files:?}");
        inodes.insert(fs::metadata(&files[0]).unwrap().ino());
        first.get_or_insert_with(|| files[0].clone());
    }
    assert_eq!(inodes.len(), 1, "the 50 copies are not one inode");
    let content = fs::read(first.unwrap()).unwrap();
    assert!(content.starts_with(b"Return-Path: <sender@example.org>\r\n"));
    let blob = server.data_dir().join("blobs").join({
        let hex = ContentId::of(&content).to_hex();
        format!("{}/{}", &hex[..2], &hex[2..])
    });
    let blob_meta = fs::metadata(&blob).expect("the blob named by the content's hash");
    assert!(inodes.contains(&blob_meta.ino()), "copies are not the blob");
    assert_eq!(blob_meta.nlink(), 51, "50 Maildir links and the blob name");
    assert_eq!(server.blob_files(), vec![blob.clone()]);

    // The same content in a later transaction: still the same inode.
    let d = c.deliver("sender@example.org", &["other@x.org"], &body);
    assert_eq!(d.results.len(), 1);
    assert_reply(&d.results[0], "250 2.0.0 <other@x.org> Saved as UID 1");
    let files = server.maildir_files("other@x.org", "INBOX");
    assert_eq!(files.len(), 1);
    assert_eq!(fs::metadata(&files[0]).unwrap().ino(), blob_meta.ino());
    assert_reply(&c.cmd("QUIT"), "221 2.0.0");

    let stats = server.cli_ok(&["dedup", "stats"]);
    let field = |name: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {stats}"))
    };
    assert_eq!(field("messages:"), 51, "{stats}");
    assert_eq!(field("blobs:"), 1, "{stats}");
    assert_eq!(field("unreferenced:"), 0, "{stats}");
}

#[test]
fn plus_detail_goes_to_the_mailbox_if_it_exists_else_inbox() {
    let server = TestServer::start("");
    server.add_users(&["a@x.org"]);
    let mut c = server.lmtp_ready();

    let d = c.deliver(
        "s@example.org",
        &["a+Archive@x.org"],
        &message("detail-1", "to Archive"),
    );
    assert_reply(&d.rcpts[0], "250 2.1.5");
    assert_reply(&d.results[0], "250 2.0.0 <a+Archive@x.org> Saved as UID");
    let archive = server.maildir_files("a@x.org", "Archive");
    let inbox = server.maildir_files("a@x.org", "INBOX");
    assert_eq!(
        (archive.len(), inbox.len()),
        (1, 0),
        "a+Archive@x.org must land in .Archive; Archive: {archive:?}, INBOX: {inbox:?}"
    );
    assert_eq!(d.results[0].saved_uid(), Some(1));
    let a = fs::read(&archive[0]).unwrap();
    assert_eq!(
        cove_tests::header(&a, "Message-ID").as_deref(),
        Some("<detail-1@cove.test>")
    );

    let d = c.deliver(
        "s@example.org",
        &["a+nosuch@x.org"],
        &message("detail-2", "to INBOX"),
    );
    assert_reply(&d.rcpts[0], "250 2.1.5");
    assert_reply(&d.results[0], "250 2.0.0 <a+nosuch@x.org> Saved as UID 1");
    let inbox = server.maildir_files("a@x.org", "INBOX");
    assert_eq!(inbox.len(), 1, "a+nosuch@x.org must land in INBOX");
    let i = fs::read(&inbox[0]).unwrap();
    assert_eq!(
        cove_tests::header(&i, "Message-ID").as_deref(),
        Some("<detail-2@cove.test>")
    );
    assert_eq!(server.maildir_files("a@x.org", "Archive").len(), 1);
}
