//! COPY and MOVE, including crash points of MOVE.

use super::*;

/// Three INBOX messages: flagged with a keyword and a date, plain (in new/),
/// seen.
fn three(f: &Fixture) -> [Delivered; 3] {
    [
        f.put(
            "INBOX",
            "one\r\n",
            NewMessage {
                flags: Flags::FLAGGED,
                keywords: kw(&["$Label1", "work"]),
                internal_date: Some(1_600_000_000),
                ..Default::default()
            },
        ),
        f.put_plain("INBOX", "two\r\n"),
        f.put(
            "INBOX",
            "three\r\n",
            NewMessage {
                flags: Flags::SEEN,
                ..Default::default()
            },
        ),
    ]
}

fn ino(path: &Path) -> u64 {
    fs::metadata(path).unwrap().ino()
}

#[test]
fn copy_makes_new_instances_sharing_the_content() {
    let f = Fixture::new();
    let [a, _, c] = three(&f);
    let inbox = f.mb("INBOX");
    let archive = f.mb("Archive");
    let sources = f.msgs("INBOX");
    let start = f.acct.current_modseq().unwrap();
    let mut feed = f.acct.subscribe();

    let t = f
        .acct
        .copy_messages(&inbox.guid, &[a.uid, c.uid, 99], &archive.guid, None)
        .unwrap();

    assert_eq!(t.uidvalidity, archive.uidvalidity);
    assert_eq!(t.pairs, vec![(a.uid, 1), (c.uid, 2)]);
    let copies = f.msgs("Archive");
    assert_eq!(copies.len(), 2);
    for (src, copy) in [(&sources[0], &copies[0]), (&sources[2], &copies[1])] {
        assert_ne!(src.guid, copy.guid);
        assert_eq!(
            (
                &src.content_id,
                src.flags,
                &src.keywords,
                src.internal_date,
                src.size
            ),
            (
                &copy.content_id,
                copy.flags,
                &copy.keywords,
                copy.internal_date,
                copy.size
            )
        );
        assert_eq!(
            ino(&f.path_of("INBOX", src)),
            ino(&f.path_of("Archive", copy))
        );
        assert!(copy.file.starts_with("cur/"), "{}", copy.file);
        assert!(copy.file.contains(&copy.guid.to_hex()));
    }
    // The keywords' letters as Archive's dovecot-keywords maps them.
    assert!(copies[0].file.ends_with(":2,Fab"), "{}", copies[0].file);
    assert_eq!(f.msgs("INBOX"), sources, "the originals stay as they were");
    let changes = f.acct.changes_since(start).unwrap();
    assert_eq!(
        changes
            .iter()
            .map(|c| (c.mailbox, c.kind.clone()))
            .collect::<Vec<_>>(),
        vec![
            (
                archive.guid,
                ChangeKind::MessageAdded {
                    uid: 1,
                    guid: copies[0].guid
                }
            ),
            (
                archive.guid,
                ChangeKind::MessageAdded {
                    uid: 2,
                    guid: copies[1].guid
                }
            ),
        ]
    );
    for c in &changes {
        let live = feed.try_recv().unwrap();
        // Live events also carry the added row; the log does not.
        assert_eq!(
            (live.modseq, live.mailbox, &live.kind),
            (c.modseq, c.mailbox, &c.kind)
        );
    }
    assert_eq!(f.acct.used_bytes().unwrap(), (5 + 5 + 7) + 5 + 7);
    f.assert_consistent();
    // Again, and into the mailbox itself: fresh UIDs, never reused.
    let again = f
        .acct
        .copy_messages(&inbox.guid, &[a.uid], &archive.guid, None)
        .unwrap();
    assert_eq!(again.pairs, vec![(a.uid, 3)]);
    let own = f
        .acct
        .copy_messages(&inbox.guid, &[a.uid], &inbox.guid, None)
        .unwrap();
    assert_eq!(own.pairs, vec![(a.uid, 4)]);
    assert_eq!(f.all_guids().len(), 7);
    f.assert_consistent();
    // The copy in new/ stays in new/.
    let plain = f
        .acct
        .copy_messages(&inbox.guid, &[2], &archive.guid, None)
        .unwrap();
    let m = f
        .msgs("Archive")
        .into_iter()
        .find(|m| m.uid == plain.pairs[0].1)
        .unwrap();
    assert!(m.file.starts_with("new/"), "{}", m.file);
    f.assert_consistent();
}

#[test]
fn copy_checks_the_quota_first_and_knows_its_mailboxes() {
    let f = Fixture::new();
    let [a, b, c] = three(&f);
    let inbox = f.mb("INBOX").guid;
    let archive = f.mb("Archive").guid;
    let used = f.acct.used_bytes().unwrap();
    let e = f
        .acct
        .copy_messages(
            &inbox,
            &[a.uid, b.uid, c.uid],
            &archive,
            Some(bytes_quota(used + 10)),
        )
        .unwrap_err();
    assert!(matches!(e, Error::OverQuota { needed: 17, .. }), "{e:?}");
    assert!(f.msgs("Archive").is_empty());
    assert_eq!(
        fs::read_dir(f.folder("Archive").join("cur"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        fs::read_dir(f.folder("Archive").join("new"))
            .unwrap()
            .count(),
        0
    );
    // Exactly enough, and 0 meaning no quota.
    f.acct
        .copy_messages(
            &inbox,
            &[a.uid, b.uid],
            &archive,
            Some(bytes_quota(used + 10)),
        )
        .unwrap();
    f.acct
        .copy_messages(&inbox, &[c.uid], &archive, Some(bytes_quota(0)))
        .unwrap();
    for (from, to) in [
        (MailboxGuid([0; 16]), archive),
        (inbox, MailboxGuid([0; 16])),
    ] {
        assert!(matches!(
            f.acct.copy_messages(&from, &[1], &to, None),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            f.acct.move_messages(&from, &[1], &to),
            Err(Error::NotFound(_))
        ));
    }
    f.assert_consistent();
}

#[test]
fn copy_finds_a_file_renamed_by_another_program() {
    let f = Fixture::new();
    let [_, b, _] = three(&f);
    let src = f.msgs("INBOX")[1].clone();
    let old = f.path_of("INBOX", &src);
    let name = old.file_name().unwrap().to_str().unwrap().to_string();
    fs::rename(
        &old,
        f.folder("INBOX").join("cur").join(format!("{name}:2,S")),
    )
    .unwrap();
    let t = f
        .acct
        .copy_messages(&f.mb("INBOX").guid, &[b.uid], &f.mb("Trash").guid, None)
        .unwrap();
    assert_eq!(t.pairs, vec![(b.uid, 1)]);
    let copy = &f.msgs("Trash")[0];
    assert_eq!(ino(&f.path_of("Trash", copy)), src_ino(&f, &src));
    // The scan then takes the other program's flag change.
    assert_eq!(f.acct.scan().unwrap().flags_changed, 1);
    f.assert_consistent();
}

fn src_ino(f: &Fixture, m: &MessageMeta) -> u64 {
    let blob = f.store.blobs().path_of(&m.content_id);
    ino(&blob)
}

#[test]
fn move_keeps_guids_and_expunges_the_source() {
    let f = Fixture::new();
    let [a, b, c] = three(&f);
    let inbox = f.mb("INBOX");
    let archive = f.mb("Archive");
    let sources = f.msgs("INBOX");
    let inodes: Vec<u64> = sources
        .iter()
        .map(|m| ino(&f.path_of("INBOX", m)))
        .collect();
    let start = f.acct.current_modseq().unwrap();
    let flushes = f.store.sync.flushes();
    let mut feed = f.acct.subscribe();

    let t = f
        .acct
        .move_messages(&inbox.guid, &[a.uid, b.uid, 99], &archive.guid)
        .unwrap();

    assert_eq!(t.uidvalidity, archive.uidvalidity);
    assert_eq!(t.pairs, vec![(a.uid, 1), (b.uid, 2)]);
    // The renames were flushed before the commit, the commit before the reply.
    assert_eq!(f.store.sync.flushes() - flushes, 2);
    let moved = f.msgs("Archive");
    for (i, m) in moved.iter().enumerate() {
        let src = &sources[i];
        assert_eq!(
            (
                m.guid,
                m.content_id,
                m.flags,
                &m.keywords,
                m.internal_date,
                &m.file
            ),
            (
                src.guid,
                src.content_id,
                src.flags,
                &src.keywords,
                src.internal_date,
                &src.file
            )
        );
        assert_eq!(ino(&f.path_of("Archive", m)), inodes[i]);
        assert!(!f.path_of("INBOX", src).exists());
    }
    assert_eq!(
        f.msgs("INBOX").iter().map(|m| m.guid).collect::<Vec<_>>(),
        vec![c.guid]
    );
    assert_eq!(
        f.acct
            .tombstones(&inbox.guid)
            .unwrap()
            .iter()
            .map(|t| (t.0, t.1))
            .collect::<Vec<_>>(),
        vec![(a.uid, a.guid), (b.uid, b.guid)]
    );
    let changes = f.acct.changes_since(start).unwrap();
    assert_eq!(
        changes
            .iter()
            .map(|c| (c.mailbox, c.kind.clone()))
            .collect::<Vec<_>>(),
        vec![
            (
                inbox.guid,
                ChangeKind::Expunged {
                    uid: a.uid,
                    guid: a.guid
                }
            ),
            (
                archive.guid,
                ChangeKind::MessageAdded {
                    uid: 1,
                    guid: a.guid
                }
            ),
            (
                inbox.guid,
                ChangeKind::Expunged {
                    uid: b.uid,
                    guid: b.guid
                }
            ),
            (
                archive.guid,
                ChangeKind::MessageAdded {
                    uid: 2,
                    guid: b.guid
                }
            ),
        ]
    );
    for c in &changes {
        let live = feed.try_recv().unwrap();
        // Live events also carry the added row; the log does not.
        assert_eq!(
            (live.modseq, live.mailbox, &live.kind),
            (c.modseq, c.mailbox, &c.kind)
        );
    }
    assert_eq!(f.acct.used_bytes().unwrap(), 5 + 5 + 7);
    f.assert_consistent();
    // And back: new UIDs in INBOX above every one it gave out.
    let back = f
        .acct
        .move_messages(&archive.guid, &[1, 2], &inbox.guid)
        .unwrap();
    assert_eq!(back.pairs, vec![(1, 4), (2, 5)]);
    assert_eq!(f.all_guids().len(), 3);
    f.assert_consistent();
    // Into the same mailbox: same GUID, a new UID.
    let same = f
        .acct
        .move_messages(&inbox.guid, &[4], &inbox.guid)
        .unwrap();
    assert_eq!(same.pairs, vec![(4, 6)]);
    assert_eq!(
        f.msgs("INBOX").iter().find(|m| m.uid == 6).unwrap().guid,
        a.guid
    );
    f.assert_consistent();
}

/// What MOVE does on disk before its commit, for some messages: rename the
/// file into the target under the same name.
fn rename_like_move(f: &Fixture, from: &str, to: &str, m: &MessageMeta) {
    fs::rename(f.folder(from).join(&m.file), f.folder(to).join(&m.file)).unwrap();
}

#[test]
fn move_cut_short_by_a_crash_is_finished_or_absent_never_both() {
    // Crash before any rename: nothing happened.
    let f = Fixture::new();
    let [a, b, _] = three(&f);
    f.assert_consistent();

    // Crash after one of two renames: that one is moved, keeping GUID,
    // keywords and date; the other stays.
    let rows = f.msgs("INBOX");
    rename_like_move(&f, "INBOX", "Archive", &rows[0]);
    let report = f.acct.scan().unwrap();
    assert_eq!((report.messages_expunged, report.messages_added), (1, 1));
    let moved = f.msgs("Archive");
    assert_eq!(moved.len(), 1);
    assert_eq!(
        (
            moved[0].guid,
            &moved[0].keywords,
            moved[0].internal_date,
            moved[0].flags
        ),
        (a.guid, &rows[0].keywords, 1_600_000_000, Flags::FLAGGED)
    );
    assert!(f.msgs("INBOX").iter().any(|m| m.guid == b.guid));
    assert!(!f.msgs("INBOX").iter().any(|m| m.guid == a.guid));
    assert_eq!(f.acct.tombstones(&f.mb("INBOX").guid).unwrap()[0].1, a.guid);
    f.assert_consistent();

    // Crash after every rename: the whole move is done by the scan.
    let rest = f.msgs("INBOX");
    for m in &rest {
        rename_like_move(&f, "INBOX", "Archive", m);
    }
    let report = f.acct.scan().unwrap();
    assert_eq!((report.messages_expunged, report.messages_added), (2, 2));
    assert!(f.msgs("INBOX").is_empty());
    assert_eq!(f.msgs("Archive").len(), 3);
    f.assert_consistent();

    // A message moved back into a mailbox where it has a tombstone (it was
    // moved out of there before): the crash-cut move back is still
    // finished, not mistaken for an expunge.
    let back = f.msgs("Archive")[0].clone();
    assert!(
        f.acct
            .tombstones(&f.mb("INBOX").guid)
            .unwrap()
            .iter()
            .any(|t| t.1 == back.guid),
        "INBOX has a tombstone for it"
    );
    rename_like_move(&f, "Archive", "INBOX", &back);
    f.acct.scan().unwrap();
    let now = f.msgs("INBOX");
    assert_eq!(now.len(), 1);
    assert_eq!((now[0].guid, &now[0].keywords), (back.guid, &back.keywords));
    assert!(now[0].uid > 3, "a new UID, never an old one");
    f.assert_consistent();
}

#[test]
fn move_after_another_program_renamed_the_file() {
    let f = Fixture::new();
    let [_, b, _] = three(&f);
    let src = f.msgs("INBOX")[1].clone();
    let old = f.path_of("INBOX", &src);
    let name = old.file_name().unwrap().to_str().unwrap().to_string();
    fs::rename(
        &old,
        f.folder("INBOX").join("cur").join(format!("{name}:2,S")),
    )
    .unwrap();
    let t = f
        .acct
        .move_messages(&f.mb("INBOX").guid, &[b.uid], &f.mb("Junk").guid)
        .unwrap();
    assert_eq!(t.pairs, vec![(b.uid, 1)]);
    let m = &f.msgs("Junk")[0];
    assert_eq!(m.guid, b.guid);
    assert!(f.path_of("Junk", m).exists());
    assert_eq!(f.acct.scan().unwrap().flags_changed, 1);
    f.assert_consistent();
    // A message whose file is gone altogether is skipped (the scan
    // expunges it).
    let gone = f.msgs("INBOX")[0].clone();
    fs::remove_file(f.path_of("INBOX", &gone)).unwrap();
    let t = f
        .acct
        .move_messages(&f.mb("INBOX").guid, &[gone.uid], &f.mb("Junk").guid)
        .unwrap();
    assert!(t.pairs.is_empty());
    assert_eq!(f.acct.scan().unwrap().messages_expunged, 1);
    f.assert_consistent();
}

/// A byte limit alone.
fn bytes_quota(bytes: u64) -> crate::Quota {
    crate::Quota { bytes, messages: 0 }
}
