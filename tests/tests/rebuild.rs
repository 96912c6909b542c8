//! `cove index rebuild`: a lost index is rebuilt from the Maildir with every
//! message's GUID and mailbox kept and UIDVALIDITY renewed upwards.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use cove_store::{Address, Flags, MessageGuid, NewMessage};
use cove_tests::{TestServer, assert_reply, mailbox_contents, message};

const USER: &str = "a@x.org";
const MAILBOXES: [&str; 2] = ["INBOX", "Sent"];

/// (GUID, mailbox) of every message, and each mailbox's UIDVALIDITY.
fn snapshot(server: &TestServer) -> (BTreeSet<(MessageGuid, String)>, BTreeMap<String, u32>) {
    let store = server.open_store();
    let mut messages = BTreeSet::new();
    let mut validity = BTreeMap::new();
    for name in MAILBOXES {
        let (mb, msgs) = mailbox_contents(&store, USER, name);
        validity.insert(name.to_string(), mb.uidvalidity);
        for (m, _) in msgs {
            messages.insert((m.guid, name.to_string()));
        }
    }
    (messages, validity)
}

/// A server with mail in INBOX and Sent (by LMTP, `+Sent`, and one flagged
/// message stored through the store API while the server is down).
fn populated() -> TestServer {
    let mut server = TestServer::start("");
    server.add_users(&[USER]);
    let mut c = server.lmtp_ready();
    for n in 0..4 {
        let d = c.deliver("s@example.org", &[USER], &message(&format!("in{n}"), "x"));
        assert_reply(&d.results[0], "250 2.0.0");
    }
    for n in 0..2 {
        let d = c.deliver(
            "s@example.org",
            &["a+Sent@x.org"],
            &message(&format!("sent{n}"), "x"),
        );
        assert_reply(&d.results[0], "250 2.0.0");
    }
    assert_reply(&c.cmd("QUIT"), "221 2.0.0");
    server.stop();
    {
        let store = server.open_store();
        let user = store.user(&Address::parse(USER).unwrap()).unwrap().unwrap();
        let account = store.account(&user).unwrap();
        let blob = store
            .blobs()
            .put(format!("Return-Path: <me@x.org>\r\n{}", message("flagged", "seen")).as_bytes())
            .unwrap();
        let mut flags = Flags::default();
        flags.insert(Flags::SEEN);
        account
            .deliver(
                "Sent",
                &blob,
                &NewMessage {
                    flags,
                    ..NewMessage::default()
                },
            )
            .unwrap();
    }
    server.restart();
    server
}

fn rebuild_and_check(
    server: &TestServer,
    before: &BTreeSet<(MessageGuid, String)>,
    validity: &BTreeMap<String, u32>,
) {
    let out = server.cli(&["index", "rebuild", USER]);
    assert!(
        out.status.success(),
        "index rebuild failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("rebuilt the index of a@x.org"), "{stdout}");
    assert!(
        stdout.contains(&format!("{} message(s)", before.len())),
        "{stdout}"
    );

    let (after, new_validity) = snapshot(server);
    assert_eq!(&after, before, "GUIDs or mailboxes changed by the rebuild");
    for name in MAILBOXES {
        assert!(
            new_validity[name] > validity[name],
            "{name}: UIDVALIDITY {} not above {}",
            new_validity[name],
            validity[name]
        );
    }
}

#[test]
fn rebuild_after_index_deleted() {
    let mut server = populated();
    server.stop();
    let (before, validity) = snapshot(&server);
    assert_eq!(before.len(), 7);
    // At least the message stored directly; the `+Sent` ones too unless
    // detail delivery misroutes them (lmtp_fanout tests that).
    assert!(before.iter().any(|(_, m)| m == "Sent"));

    let home = server.home(USER);
    fs::remove_file(home.join("index.sqlite")).unwrap();
    rebuild_and_check(&server, &before, &validity);

    // The server serves the rebuilt index: new UIDs come after the
    // rebuilt ones.
    let highest = {
        let store = server.open_store();
        let (mb, msgs) = mailbox_contents(&store, USER, "INBOX");
        let highest = msgs.iter().map(|(m, _)| m.uid).max().unwrap();
        assert!(mb.uidnext > highest);
        highest
    };
    server.restart();
    let mut c = server.lmtp_ready();
    let d = c.deliver("s@example.org", &[USER], &message("after", "x"));
    assert_reply(&d.results[0], "250 2.0.0 <a@x.org> Saved as UID");
    assert!(
        d.results[0].saved_uid().unwrap() > highest,
        "{:?}",
        d.results[0]
    );
}

#[test]
fn rebuild_with_stale_wal_and_shm_left_behind() {
    let mut server = populated();
    // One more delivery makes the server open the index; take the snapshot
    // while it holds it, then crash it: index.sqlite-wal and -shm stay.
    let mut c = server.lmtp_ready();
    let d = c.deliver("s@example.org", &[USER], &message("last", "x"));
    assert_reply(&d.results[0], "250 2.0.0");
    let (before, validity) = snapshot(&server);
    assert_eq!(before.len(), 8);
    server.kill9();
    let home = server.home(USER);
    assert!(
        home.join("index.sqlite-wal").exists() && home.join("index.sqlite-shm").exists(),
        "expected a WAL and SHM after kill -9: {:?}",
        fs::read_dir(&home)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect::<Vec<_>>()
    );
    fs::remove_file(home.join("index.sqlite")).unwrap();
    rebuild_and_check(&server, &before, &validity);
}
