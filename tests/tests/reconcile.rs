//! The Maildir is the truth for which messages exist (DESIGN.md, On disk):
//! a file another program drops in is picked up by the next scan, a file
//! deleted behind cove's back is expunged, and UIDs keep rising.

use std::fs;
use std::os::unix::fs::MetadataExt;

use cove_store::MessageGuid;
use cove_tests::{TestServer, assert_reply, header, mailbox_contents, message};

/// The INBOX row of `cove mailbox list`: (MESSAGES, UIDNEXT).
fn inbox_row(listing: &str) -> (u32, u32) {
    let row = listing
        .lines()
        .find(|l| l.starts_with("INBOX "))
        .unwrap_or_else(|| panic!("no INBOX row in:\n{listing}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    // MAILBOX USE MESSAGES UNSEEN BYTES UIDVALIDITY UIDNEXT
    assert_eq!(cols.len(), 7, "{row}");
    (cols[2].parse().unwrap(), cols[6].parse().unwrap())
}

#[test]
fn foreign_file_is_picked_up_and_deleted_file_expunged() {
    let mut server = TestServer::start("");
    server.add_users(&["a@x.org"]);
    let mut c = server.lmtp_ready();
    for n in 1..=3 {
        let d = c.deliver(
            "s@example.org",
            &["a@x.org"],
            &message(&format!("r{n}"), "x"),
        );
        assert_reply(
            &d.results[0],
            &format!("250 2.0.0 <a@x.org> Saved as UID {n}"),
        );
    }
    let listing = server.cli_ok(&["mailbox", "list", "a@x.org"]);
    assert_eq!(inbox_row(&listing), (3, 4), "{listing}");
    assert!(
        !listing.contains("reconciled"),
        "nothing to reconcile yet:\n{listing}"
    );

    // Another program delivers; someone deletes message 2 by hand.
    let inbox = server.folder("a@x.org", "INBOX");
    let foreign_name = "1700000000.M1P2.otherhost";
    let foreign_body = message("foreign", "dropped in by procmail");
    fs::write(inbox.join("new").join(foreign_name), &foreign_body).unwrap();
    let victim = server
        .maildir_files("a@x.org", "INBOX")
        .into_iter()
        .find(|p| header(&fs::read(p).unwrap(), "Message-ID").as_deref() == Some("<r2@cove.test>"))
        .expect("message r2 on disk");
    let victim_guid: MessageGuid = victim
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('.').nth(1))
        .and_then(|g| g.strip_prefix('G'))
        .and_then(|g| g.parse().ok())
        .expect("a GUID in the file name");
    fs::remove_file(&victim).unwrap();

    // The next scan reconciles.
    let reconciling = server.cli_ok(&["mailbox", "list", "a@x.org"]);
    assert_eq!(inbox_row(&reconciling), (3, 5), "{reconciling}");
    // A second scan finds nothing more.
    let listing = server.cli_ok(&["mailbox", "list", "a@x.org"]);
    assert_eq!(inbox_row(&listing), (3, 5), "{listing}");
    assert!(!listing.contains("reconciled"), "{listing}");

    // A later delivery gets a UID above the picked-up file's.
    let d = c.deliver("s@example.org", &["a@x.org"], &message("r5", "x"));
    assert_reply(&d.results[0], "250 2.0.0 <a@x.org> Saved as UID 5");
    assert_reply(&c.cmd("QUIT"), "221 2.0.0");
    server.stop();

    let store = server.open_store();
    let (mb, msgs) = mailbox_contents(&store, "a@x.org", "INBOX");
    let ids: Vec<(u32, String)> = msgs
        .iter()
        .map(|(m, p)| (m.uid, header(&fs::read(p).unwrap(), "Message-ID").unwrap()))
        .collect();
    assert_eq!(
        ids,
        vec![
            (1, "<r1@cove.test>".to_string()),
            (3, "<r3@cove.test>".to_string()),
            (4, "<foreign@cove.test>".to_string()),
            (5, "<r5@cove.test>".to_string()),
        ]
    );
    assert_eq!(mb.uidnext, 6);
    assert!(
        msgs.iter().all(|(m, _)| m.guid != victim_guid),
        "the deleted message is still indexed"
    );
    let (foreign, path) = &msgs[2];
    assert_eq!(
        foreign.guid,
        MessageGuid::derived_from_name("1700000000.M1P2.otherhost")
    );
    assert_eq!(foreign.size, foreign_body.len() as u64);
    // The picked-up file now shares its blob's inode.
    let blob = store.blobs().path_of(&foreign.content_id);
    assert_eq!(
        fs::metadata(&blob)
            .expect("a blob for the picked-up file")
            .ino(),
        fs::metadata(path).unwrap().ino()
    );
    store.blobs().verify(&foreign.content_id).unwrap();

    // Last, so that everything above is checked first: the listing that
    // reconciled says so.
    assert!(
        reconciling.contains("reconciled with the Maildir: 1 message(s) added, 1 expunged"),
        "`cove mailbox list` did not report its reconciliation:\n{reconciling}"
    );
}
