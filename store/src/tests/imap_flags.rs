//! STORE (with UNCHANGEDSINCE) and APPEND.

use super::*;

fn updated_uids(r: &StoreResult) -> Vec<Uid> {
    r.updated.iter().map(|u| u.0).collect()
}

#[test]
fn store_adds_flags_renames_only_for_system_flags_and_logs() {
    let f = Fixture::new();
    let a = f.put_plain("INBOX", "a\r\n");
    let b = f.put(
        "INBOX",
        "b\r\n",
        NewMessage {
            flags: Flags::SEEN,
            ..Default::default()
        },
    );
    let inbox = f.mb("INBOX").guid;
    let b_file = f.msgs("INBOX")[1].file.clone();
    let start = f.acct.current_modseq().unwrap();
    let mut feed = f.acct.subscribe();

    let r = f
        .acct
        .store_flags(
            &inbox,
            &[a.uid, b.uid, 99],
            FlagOp::Add(Flags::SEEN, kw(&["Work"])),
            None,
        )
        .unwrap();

    assert!(r.modified.is_empty());
    assert_eq!(updated_uids(&r), vec![a.uid, b.uid]);
    let rows = f.msgs("INBOX");
    for (u, row) in r.updated.iter().zip(&rows) {
        assert_eq!((u.1, &u.2, u.3), (Flags::SEEN, &kw(&["Work"]), row.modseq));
        assert_eq!((row.flags, &row.keywords), (Flags::SEEN, &kw(&["Work"])));
        assert!(row.modseq > start);
    }
    assert!(rows[0].file.starts_with("cur/") && rows[0].file.ends_with(":2,Sa"));
    // b's keyword is its letter too (b was already \Seen).
    assert_ne!(rows[1].file, b_file);
    assert!(rows[1].file.ends_with(":2,Sa"), "{}", rows[1].file);
    assert!(f.path_of("INBOX", &rows[1]).exists());
    let changes = f.acct.changes_since(start).unwrap();
    assert_eq!(changes.len(), 2);
    for c in &changes {
        assert!(matches!(c.kind, ChangeKind::FlagsChanged { flags, .. } if flags == Flags::SEEN));
        let live = feed.try_recv().unwrap();
        // Live events also carry the added row; the log does not.
        assert_eq!(
            (live.modseq, live.mailbox, &live.kind),
            (c.modseq, c.mailbox, &c.kind)
        );
    }
    f.assert_consistent();

    // The same again, with another spelling: nothing changes, nothing logged,
    // still reported; the first spelling stays.
    let mark = f.acct.current_modseq().unwrap();
    let r2 = f
        .acct
        .store_flags(
            &inbox,
            &[a.uid, b.uid],
            FlagOp::Add(Flags::SEEN, kw(&["WORK"])),
            None,
        )
        .unwrap();
    assert_eq!(f.acct.current_modseq().unwrap(), mark);
    assert_eq!(r2.updated, r.updated);
    f.assert_consistent();
}

#[test]
fn store_replace_and_remove() {
    let f = Fixture::new();
    let a = f.put(
        "INBOX",
        "a\r\n",
        NewMessage {
            flags: Flags::SEEN | Flags::FLAGGED,
            keywords: kw(&["one", "Two"]),
            ..Default::default()
        },
    );
    let inbox = f.mb("INBOX").guid;
    let r = f
        .acct
        .store_flags(
            &inbox,
            &[a.uid],
            FlagOp::Remove(Flags::FLAGGED | Flags::DRAFT, kw(&["two", "absent"])),
            None,
        )
        .unwrap();
    assert_eq!(
        (r.updated[0].1, &r.updated[0].2),
        (Flags::SEEN, &kw(&["one"]))
    );
    let r = f
        .acct
        .store_flags(
            &inbox,
            &[a.uid],
            FlagOp::Replace(Flags::ANSWERED | Flags::DELETED, kw(&["ONE", "three"])),
            None,
        )
        .unwrap();
    assert_eq!(
        (r.updated[0].1, &r.updated[0].2),
        (Flags::ANSWERED | Flags::DELETED, &kw(&["one", "three"]))
    );
    let row = &f.msgs("INBOX")[0];
    // one = a (given by the first STORE), three = c.
    assert!(row.file.ends_with(":2,RTac"), "{}", row.file);
    assert_eq!(row.keywords, kw(&["one", "three"]));
    // Keywords only: a new modseq, and the keyword's letter.
    let file = row.file.replace(":2,RTac", ":2,RTacd");
    let r = f
        .acct
        .store_flags(
            &inbox,
            &[a.uid],
            FlagOp::Add(Flags::empty(), kw(&["four"])),
            None,
        )
        .unwrap();
    assert!(r.updated[0].3 > row.modseq);
    assert_eq!(f.msgs("INBOX")[0].file, file);
    // Replace with nothing: cur/ with empty letters.
    f.acct
        .store_flags(
            &inbox,
            &[a.uid],
            FlagOp::Replace(Flags::empty(), vec![]),
            None,
        )
        .unwrap();
    let row = &f.msgs("INBOX")[0];
    assert!(row.file.starts_with("cur/") && row.file.ends_with(":2,"));
    assert!(row.keywords.is_empty());
    f.assert_consistent();
}

#[test]
fn store_unchangedsince_reports_modified_messages() {
    let f = Fixture::new();
    let a = f.put_plain("INBOX", "a\r\n");
    let b = f.put_plain("INBOX", "b\r\n");
    let c = f.put_plain("INBOX", "c\r\n");
    let inbox = f.mb("INBOX").guid;
    // b changes after the client's snapshot.
    let snapshot = f.acct.current_modseq().unwrap();
    f.acct
        .store_flags(&inbox, &[b.uid], FlagOp::Add(Flags::FLAGGED, vec![]), None)
        .unwrap();
    let r = f
        .acct
        .store_flags(
            &inbox,
            &[a.uid, b.uid, c.uid],
            FlagOp::Add(Flags::SEEN, vec![]),
            Some(snapshot),
        )
        .unwrap();
    assert_eq!(r.modified, vec![b.uid]);
    assert_eq!(updated_uids(&r), vec![a.uid, c.uid]);
    let rows = f.msgs("INBOX");
    assert_eq!(rows[1].flags, Flags::FLAGGED, "b left alone");
    assert_eq!(rows[0].flags, Flags::SEEN);
    // UNCHANGEDSINCE 0 always fails (RFC 7162 §3.1.3).
    let r = f
        .acct
        .store_flags(&inbox, &[a.uid], FlagOp::Add(Flags::DRAFT, vec![]), Some(0))
        .unwrap();
    assert_eq!((r.modified, r.updated.len()), (vec![a.uid], 0));
    f.assert_consistent();
}

#[test]
fn store_refuses_keywords_that_are_not_atoms() {
    let f = Fixture::new();
    let a = f.put_plain("INBOX", "a\r\n");
    let inbox = f.mb("INBOX").guid;
    let mark = f.acct.current_modseq().unwrap();
    for bad in ["two words", "\\Seen", "", "a]"] {
        let e = f
            .acct
            .store_flags(&inbox, &[a.uid], FlagOp::Add(Flags::SEEN, kw(&[bad])), None)
            .unwrap_err();
        assert!(matches!(e, Error::InvalidData(_)), "{bad:?}: {e:?}");
    }
    assert_eq!(f.acct.current_modseq().unwrap(), mark);
    assert_eq!(f.msgs("INBOX")[0].flags, Flags::empty());
    assert!(matches!(
        f.acct.store_flags(
            &MailboxGuid([0; 16]),
            &[1],
            FlagOp::Add(Flags::SEEN, vec![]),
            None
        ),
        Err(Error::NotFound(_))
    ));
    f.assert_consistent();
}

#[test]
fn store_on_ten_thousand_messages_in_one_call() {
    let f = Fixture::new();
    let blob = f.store.blobs().put(b"bulk\r\n").unwrap();
    let mut uids = Vec::new();
    for i in 0..10_000 {
        let msg = NewMessage {
            flags: if i % 2 == 0 {
                Flags::SEEN
            } else {
                Flags::empty()
            },
            ..Default::default()
        };
        uids.push(f.acct.deliver_unsynced("INBOX", &blob, &msg).unwrap().0.uid);
    }
    let inbox = f.mb("INBOX").guid;
    let start = f.acct.current_modseq().unwrap();
    let r = f
        .acct
        .store_flags(&inbox, &uids, FlagOp::Add(Flags::SEEN, kw(&["bulk"])), None)
        .unwrap();
    assert_eq!(updated_uids(&r), uids);
    assert!(
        r.updated
            .iter()
            .all(|u| u.1 == Flags::SEEN && u.2 == kw(&["bulk"]))
    );
    assert_eq!(f.acct.changes_since(start).unwrap().len(), 10_000);
    let rows = f.msgs("INBOX");
    assert!(
        rows.iter()
            .all(|m| m.flags == Flags::SEEN && m.file.ends_with(":2,Sa"))
    );
    // Only the 5,000 that were unseen were renamed; all 10,000 are in cur/.
    assert_eq!(
        fs::read_dir(f.folder("INBOX").join("cur")).unwrap().count(),
        10_000
    );
    assert_eq!(
        fs::read_dir(f.folder("INBOX").join("new")).unwrap().count(),
        0
    );
    let r = f
        .acct
        .store_flags(
            &inbox,
            &uids,
            FlagOp::Remove(Flags::SEEN, kw(&["BULK"])),
            None,
        )
        .unwrap();
    assert!(r.updated.iter().all(|u| u.1.is_empty() && u.2.is_empty()));
    f.assert_consistent();
}

#[test]
fn store_finds_a_file_another_program_renamed() {
    let f = Fixture::new();
    let a = f.put_plain("INBOX", "a\r\n");
    let row = f.msgs("INBOX")[0].clone();
    let old = f.path_of("INBOX", &row);
    let name = old.file_name().unwrap().to_str().unwrap().to_string();
    fs::rename(
        &old,
        f.folder("INBOX").join("cur").join(format!("{name}:2,F")),
    )
    .unwrap();
    f.acct
        .store_flags(
            &f.mb("INBOX").guid,
            &[a.uid],
            FlagOp::Add(Flags::SEEN, vec![]),
            None,
        )
        .unwrap();
    let row = &f.msgs("INBOX")[0];
    assert!(f.path_of("INBOX", row).exists());
    assert_eq!(row.flags, Flags::SEEN);
    f.assert_consistent();
}

/// A STORE on more messages than are renamed one at a time: files another
/// program renamed or removed meanwhile, UNCHANGEDSINCE per message, and a
/// modseq and a change-log entry of its own for every message changed.
#[test]
fn a_big_store_renames_in_batches_and_logs_every_message() {
    let f = Fixture::new();
    let blob = f.store.blobs().put(b"batch\r\n").unwrap();
    let mut uids = Vec::new();
    for _ in 0..1_500 {
        let d = f
            .acct
            .deliver_unsynced("INBOX", &blob, &NewMessage::default());
        uids.push(d.unwrap().0.uid);
    }
    let inbox = f.mb("INBOX").guid;
    // Another program flags message 10 (a rename) and deletes message 20's
    // file; message 30 changes after the client's modseq.
    let rows = f.msgs("INBOX");
    let renamed = f.path_of("INBOX", &rows[9]);
    let name = renamed.file_name().unwrap().to_str().unwrap().to_string();
    fs::rename(
        &renamed,
        f.folder("INBOX").join("cur").join(format!("{name}:2,F")),
    )
    .unwrap();
    fs::remove_file(f.path_of("INBOX", &rows[19])).unwrap();
    let since = f.acct.current_modseq().unwrap();
    f.acct
        .store_flags(&inbox, &[uids[29]], FlagOp::Add(Flags::DRAFT, vec![]), None)
        .unwrap();
    let start = f.acct.current_modseq().unwrap();

    let r = f
        .acct
        .store_flags(
            &inbox,
            &uids,
            FlagOp::Add(Flags::SEEN, kw(&["batch"])),
            Some(since),
        )
        .unwrap();
    assert_eq!(r.modified, [uids[29]]);
    let mut expected: Vec<Uid> = uids.clone();
    expected.retain(|u| *u != uids[19] && *u != uids[29]);
    assert_eq!(updated_uids(&r), expected);
    // One modseq each, in the order asked, above the start.
    let modseqs: Vec<ModSeq> = r.updated.iter().map(|u| u.3).collect();
    assert!(modseqs.windows(2).all(|w| w[0] < w[1]), "{modseqs:?}");
    assert!(modseqs[0] > start);
    let changes = f.acct.changes_since(start).unwrap();
    assert_eq!(changes.len(), expected.len());
    for (c, u) in changes.iter().zip(&r.updated) {
        assert_eq!(c.modseq, u.3);
        assert_eq!(
            c.kind,
            ChangeKind::FlagsChanged {
                uid: u.0,
                flags: Flags::SEEN,
                keywords: kw(&["batch"]),
            }
        );
    }
    // Every file the index names is there with its letters (the one
    // another program renamed too); the removed one is expunged by the
    // next scan.
    let rows = f.msgs("INBOX");
    for m in rows.iter().filter(|m| m.uid != uids[19]) {
        assert!(f.path_of("INBOX", m).exists(), "{}", m.file);
        if m.uid != uids[29] {
            assert!(m.file.ends_with("Sa"), "{}", m.file);
        }
    }
    f.acct.scan().unwrap();
    f.assert_consistent();
}

#[test]
fn append_stores_flags_keywords_and_date() {
    let f = Fixture::new();
    let blob = f.store.blobs().put(b"appended\r\n").unwrap();
    let d = f
        .acct
        .append(
            "Drafts",
            &blob,
            &NewMessage {
                flags: Flags::DRAFT | Flags::SEEN,
                keywords: kw(&["$MDNSent", "$mdnsent", "x"]),
                internal_date: Some(1_234_567_890),
                quota: None,
            },
        )
        .unwrap();
    let drafts = f.mb("Drafts");
    assert_eq!(
        (d.mailbox, d.uidvalidity, d.uid),
        (drafts.guid, drafts.uidvalidity, 1)
    );
    let m = &f.msgs("Drafts")[0];
    assert_eq!(m.guid, d.guid);
    assert_eq!(m.keywords, kw(&["$MDNSent", "x"]));
    assert_eq!(m.internal_date, 1_234_567_890);
    assert!(
        m.file.starts_with("cur/") && m.file.ends_with(":2,DSab"),
        "{}",
        m.file
    );
    assert!(matches!(
        f.acct.append(
            "Drafts",
            &blob,
            &NewMessage {
                keywords: kw(&["bad word"]),
                ..Default::default()
            }
        ),
        Err(Error::InvalidData(_))
    ));
    assert!(matches!(
        f.acct.append("Nope", &blob, &NewMessage::default()),
        Err(Error::NotFound(_))
    ));
    f.assert_consistent();
}

/// Keywords live in the Maildir as Dovecot keeps them (the folder's
/// `dovecot-keywords`, letters in the file names): a MOVE takes the
/// destination's letters, a lost index gets them back, and another
/// program's letter changes reach the index.
#[test]
fn keywords_are_letters_a_rebuild_and_other_programs_see() {
    let f = Fixture::new();
    let a = f.put(
        "INBOX",
        "a\r\n",
        NewMessage {
            keywords: kw(&["$Forwarded", "Work"]),
            ..Default::default()
        },
    );
    let b = f.put_plain("INBOX", "b\r\n");
    let inbox = f.mb("INBOX").guid;
    // Archive already maps a letter to something else.
    fs::write(f.folder("Archive").join("dovecot-keywords"), "0 Old\n").unwrap();
    f.acct
        .store_flags(
            &inbox,
            &[b.uid],
            FlagOp::Add(Flags::SEEN, kw(&["Work"])),
            None,
        )
        .unwrap();
    let archive = f.mb("Archive").guid;
    f.acct.move_messages(&inbox, &[a.uid], &archive).unwrap();
    let moved = &f.msgs("Archive")[0];
    assert!(moved.file.ends_with(":2,bc"), "{}", moved.file);
    assert_eq!(
        fs::read_to_string(f.folder("Archive").join("dovecot-keywords")).unwrap(),
        "0 Old\n1 $Forwarded\n2 Work\n"
    );
    f.assert_consistent();

    // Another program (Dovecot) sets "Old" on the moved message and takes
    // "Work" off INBOX's: renames, as for flags.
    let old_path = f.path_of("Archive", moved);
    fs::rename(
        &old_path,
        old_path.to_str().unwrap().replace(":2,bc", ":2,ab"),
    )
    .unwrap();
    let in_inbox = &f.msgs("INBOX")[0];
    let path = f.path_of("INBOX", in_inbox);
    fs::rename(&path, path.to_str().unwrap().replace(":2,Sb", ":2,S")).unwrap();
    f.acct.scan().unwrap();
    assert!(crate::keywords::same_set(
        &f.msgs("Archive")[0].keywords,
        &kw(&["Old", "$Forwarded"])
    ));
    assert!(f.msgs("INBOX")[0].keywords.is_empty());

    // A lost index: every keyword comes back from the letters.
    f.acct
        .store_flags(
            &inbox,
            &[in_inbox.uid],
            FlagOp::Add(Flags::empty(), kw(&["Again"])),
            None,
        )
        .unwrap();
    fs::remove_file(f.acct.home().join("index.sqlite")).unwrap();
    assert!(crate::keywords::same_set(
        &f.msgs("Archive")[0].keywords,
        &kw(&["Old", "$Forwarded"])
    ));
    assert_eq!(f.msgs("INBOX")[0].keywords, kw(&["Again"]));
}

/// A STORE on many messages (schema 5): each changed message gets its own
/// modseq, a run in UID order; CHANGEDSINCE (`mailbox_changes_since`) finds
/// exactly them with those modseqs; the change log holds one row for the
/// whole run (it held one per message), which reads back as each message's
/// change, and from the middle of the run as the rest of it.
#[test]
fn a_store_on_many_messages_is_one_change_log_row() {
    let f = Fixture::new();
    let blob = f.store.blobs().put(b"run\r\n").unwrap();
    let mut uids = Vec::new();
    for i in 0..20 {
        let msg = NewMessage {
            flags: if i == 8 { Flags::SEEN } else { Flags::empty() },
            ..Default::default()
        };
        uids.push(f.acct.deliver_unsynced("INBOX", &blob, &msg).unwrap().0.uid);
    }
    let inbox = f.mb("INBOX");
    let start = f.acct.current_modseq().unwrap();
    let r = f
        .acct
        .store_flags(
            &inbox.guid,
            &uids[5..15],
            FlagOp::Add(Flags::SEEN, vec![]),
            None,
        )
        .unwrap();
    // Message 8 had \Seen: unchanged, it keeps its modseq.
    let changed: Vec<Uid> = uids[5..15]
        .iter()
        .copied()
        .filter(|u| *u != uids[8])
        .collect();
    let run: Vec<ModSeq> = (start + 1..=start + 9).collect();
    assert_eq!(r.committed, Some((start + 1, start + 9)));
    let delta = f
        .acct
        .mailbox_changes_since(&inbox.guid, inbox.uidvalidity, start)
        .unwrap()
        .unwrap();
    assert!(delta.expunged.is_empty());
    let got: Vec<(Uid, Flags, ModSeq)> = delta
        .changed
        .iter()
        .map(|m| (m.uid, m.flags, m.modseq))
        .collect();
    let want: Vec<(Uid, Flags, ModSeq)> = changed
        .iter()
        .zip(&run)
        .map(|(u, m)| (*u, Flags::SEEN, *m))
        .collect();
    assert_eq!(got, want);

    let index = rusqlite::Connection::open(
        f.store
            .home_of(&f.user.address)
            .join(crate::account::INDEX_FILE),
    )
    .unwrap();
    let rows: i64 = index
        .query_row(
            "SELECT count(*) FROM change WHERE modseq > ?1",
            [start as i64],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 1);

    let logged = |since: ModSeq| -> Vec<(Uid, Flags, ModSeq)> {
        f.acct
            .changes_since(since)
            .unwrap()
            .into_iter()
            .map(|c| match c.kind {
                ChangeKind::FlagsChanged { uid, flags, .. } => (uid, flags, c.modseq),
                other => panic!("not a flag change: {other:?}"),
            })
            .collect()
    };
    assert_eq!(logged(start), want);
    assert_eq!(logged(start + 4), want[4..].to_vec());
    assert_eq!(logged(start + 9), vec![]);
    // A prune whose floor falls inside the run keeps the run's row: the
    // changes above the floor are still read from it.
    let pruned = f
        .acct
        .prune_history(
            &crate::account::History {
                keep_changes: 5,
                keep_expunges_ms: 0,
            },
            u64::MAX >> 20,
        )
        .unwrap();
    assert_eq!(pruned.floor, start + 4);
    assert_eq!(logged(start + 4), want[4..].to_vec());
    f.assert_consistent();
}
