//! RENAME, DELETE, subscriptions, LIST-STATUS and CONDSTORE reads.

use super::*;

fn names(f: &Fixture) -> Vec<String> {
    f.acct
        .mailboxes()
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect()
}

#[test]
fn rename_keeps_identity_and_takes_children_along() {
    let f = Fixture::new();
    for n in ["Work", "Work.Q1", "Work.Q1.Jan", "Workshop"] {
        f.acct.create_mailbox(n, None).unwrap();
        f.acct.set_subscribed(n, true).unwrap();
    }
    f.acct.set_subscribed("Work.Ghost", true).unwrap();
    let a = f.put(
        "Work",
        "a\r\n",
        NewMessage {
            keywords: kw(&["$Label1"]),
            ..Default::default()
        },
    );
    f.put_plain("Work.Q1", "b\r\n");
    let before: Vec<MailboxInfo> = ["Work", "Work.Q1", "Work.Q1.Jan"]
        .iter()
        .map(|n| f.mb(n))
        .collect();
    let msgs_before = f.msgs("Work");
    let start = f.acct.current_modseq().unwrap();
    let mut feed = f.acct.subscribe();

    f.acct.rename_mailbox("Work", "Job").unwrap();

    let now = names(&f);
    for n in ["Job", "Job.Q1", "Job.Q1.Jan", "Workshop"] {
        assert!(now.contains(&n.to_string()), "{n} missing from {now:?}");
    }
    assert!(!now.iter().any(|n| n.starts_with("Work.") || n == "Work"));
    for (old, new) in before.iter().zip(["Job", "Job.Q1", "Job.Q1.Jan"]) {
        let mb = f.mb(new);
        assert_eq!(
            (mb.guid, mb.uidvalidity, mb.uidnext),
            (old.guid, old.uidvalidity, old.uidnext)
        );
        assert!(f.folder(new).join("cur").is_dir());
        assert!(!f.folder(&old.name).exists());
    }
    assert_eq!(f.msgs("Job"), msgs_before);
    assert_eq!(f.msgs("Job")[0].keywords, kw(&["$Label1"]));
    // Subscriptions follow, including one to a child that does not exist.
    let subs = f.acct.subscriptions().unwrap();
    for n in ["Job", "Job.Q1", "Job.Q1.Jan", "Job.Ghost", "Workshop"] {
        assert!(subs.contains(&n.to_string()), "{n} not in {subs:?}");
    }
    assert!(!subs.iter().any(|n| n.starts_with("Work.") || n == "Work"));
    assert!(f.mb("Job").subscribed);
    // The log and the feed say the same.
    let changes = f.acct.changes_since(start).unwrap();
    assert_eq!(changes.len(), 3);
    assert!(changes.iter().any(|c| c.mailbox == before[0].guid
        && c.kind
            == ChangeKind::MailboxRenamed {
                from: "Work".into(),
                to: "Job".into()
            }));
    for c in &changes {
        let live = feed.try_recv().unwrap();
        // Live events also carry the added row; the log does not.
        assert_eq!(
            (live.modseq, live.mailbox, &live.kind),
            (c.modseq, c.mailbox, &c.kind)
        );
    }
    f.assert_consistent();
    // UIDs go on where they were; the old name is a new mailbox whose
    // UIDVALIDITY differs, so its UID 1 never means the old UID 1.
    let next = f.put_plain("Job", "c\r\n");
    assert_eq!(next.uid, a.uid + 1);
    let again = f.acct.create_mailbox("Work", None).unwrap();
    assert_ne!(again.guid, before[0].guid);
    assert!(again.uidvalidity > before[0].uidvalidity);
    f.assert_consistent();
}

#[test]
fn rename_errors_change_nothing() {
    let f = Fixture::new();
    for n in ["Work", "Work.Q1", "Job.Q1"] {
        f.acct.create_mailbox(n, None).unwrap();
    }
    let before = f.acct.mailboxes().unwrap();
    let modseq = f.acct.current_modseq().unwrap();
    type Case = (&'static str, &'static str, fn(&Error) -> bool);
    let cases: [Case; 8] = [
        ("Nope", "Other", |e| matches!(e, Error::NotFound(_))),
        ("Work", "Sent", |e| matches!(e, Error::AlreadyExists(_))),
        ("Work", "inbox", |e| matches!(e, Error::AlreadyExists(_))),
        // The child Work.Q1 would become Job.Q1, which exists.
        ("Work", "Job", |e| matches!(e, Error::AlreadyExists(_))),
        ("Work", "a..b", |e| matches!(e, Error::InvalidData(_))),
        ("Work", "", |e| matches!(e, Error::InvalidData(_))),
        ("Work", "x/y", |e| matches!(e, Error::InvalidData(_))),
        ("../Work", "x", |e| matches!(e, Error::InvalidData(_))),
    ];
    for (from, to, want) in cases {
        let e = f.acct.rename_mailbox(from, to).unwrap_err();
        assert!(want(&e), "{from} -> {to}: {e:?}");
    }
    assert_eq!(f.acct.mailboxes().unwrap(), before);
    assert_eq!(f.acct.current_modseq().unwrap(), modseq);
    assert!(f.folder("Work.Q1").is_dir());
    f.assert_consistent();
}

#[test]
fn rename_inbox_moves_its_messages_into_a_new_mailbox() {
    let f = Fixture::new();
    f.acct.create_mailbox("INBOX.Sub", None).unwrap();
    let inbox = f.mb("INBOX");
    let a = f.put(
        "INBOX",
        "one\r\n",
        NewMessage {
            flags: Flags::SEEN | Flags::FLAGGED,
            keywords: kw(&["work"]),
            internal_date: Some(1_600_000_000),
            ..Default::default()
        },
    );
    let b = f.put_plain("INBOX", "two\r\n");
    let old_rows = f.msgs("INBOX");
    let ino_a = fs::metadata(f.path_of("INBOX", &old_rows[0]))
        .unwrap()
        .ino();
    let start = f.acct.current_modseq().unwrap();

    f.acct.rename_mailbox("inbox", "Old").unwrap();

    let old = f.mb("Old");
    assert_ne!(old.guid, inbox.guid);
    assert_ne!(old.uidvalidity, inbox.uidvalidity);
    assert!(old.subscribed);
    let moved = f.msgs("Old");
    assert_eq!(
        moved.iter().map(|m| (m.uid, m.guid)).collect::<Vec<_>>(),
        vec![(1, a.guid), (2, b.guid)]
    );
    assert_eq!(moved[0].flags, Flags::SEEN | Flags::FLAGGED);
    assert_eq!(moved[0].keywords, kw(&["work"]));
    assert_eq!(moved[0].internal_date, 1_600_000_000);
    assert_eq!(
        fs::metadata(f.path_of("Old", &moved[0])).unwrap().ino(),
        ino_a
    );
    // INBOX stays, empty, its UIDs used up; its child is not renamed.
    assert!(f.msgs("INBOX").is_empty());
    assert_eq!(f.mb("INBOX").guid, inbox.guid);
    assert!(names(&f).contains(&"INBOX.Sub".to_string()));
    assert_eq!(
        f.acct
            .tombstones(&inbox.guid)
            .unwrap()
            .iter()
            .map(|t| (t.0, t.1))
            .collect::<Vec<_>>(),
        vec![(a.uid, a.guid), (b.uid, b.guid)]
    );
    let kinds: Vec<ChangeKind> = f
        .acct
        .changes_since(start)
        .unwrap()
        .into_iter()
        .map(|c| c.kind)
        .collect();
    assert_eq!(kinds[0], ChangeKind::MailboxCreated { name: "Old".into() });
    assert_eq!(kinds.len(), 5);
    f.assert_consistent();
    assert_eq!(f.put_plain("INBOX", "three\r\n").uid, 3);
    // Again, to a name that exists: refused; to a new one: an empty move.
    assert!(matches!(
        f.acct.rename_mailbox("INBOX", "Old"),
        Err(Error::AlreadyExists(_))
    ));
    f.acct.delete_mailbox("Old").unwrap();
    f.acct.rename_mailbox("INBOX", "Old").unwrap();
    let old2 = f.mb("Old");
    assert!(
        old2.uidvalidity > old.uidvalidity,
        "a new Old, a new UIDVALIDITY"
    );
    assert_eq!(f.msgs("Old").len(), 1);
    f.assert_consistent();
}

#[test]
fn delete_removes_messages_with_tombstones_and_keeps_children() {
    let f = Fixture::new();
    f.acct.create_mailbox("Work", None).unwrap();
    f.acct.set_subscribed("Work", true).unwrap();
    f.acct.create_mailbox("Work.Sub", None).unwrap();
    let a = f.put_plain("Work", "a\r\n");
    let b = f.put_plain("Work", "b\r\n");
    f.put_plain("Work.Sub", "c\r\n");
    let work = f.mb("Work");
    let start = f.acct.current_modseq().unwrap();
    let mut feed = f.acct.subscribe();

    f.acct.delete_mailbox("Work").unwrap();

    assert!(matches!(f.acct.mailbox("Work"), Err(Error::NotFound(_))));
    assert!(!f.folder("Work").exists());
    assert_eq!(f.msgs("Work.Sub").len(), 1);
    let home = f.store.home_of(&f.user.address);
    assert_eq!(fs::read_dir(home.join(".cove-deleted")).unwrap().count(), 0);
    let changes = f.acct.changes_since(start).unwrap();
    let kinds: Vec<ChangeKind> = changes.iter().map(|c| c.kind.clone()).collect();
    assert_eq!(
        kinds,
        vec![
            ChangeKind::Expunged {
                uid: a.uid,
                guid: a.guid
            },
            ChangeKind::Expunged {
                uid: b.uid,
                guid: b.guid
            },
            ChangeKind::MailboxDeleted {
                name: "Work".into()
            },
        ]
    );
    assert!(changes.iter().all(|c| c.mailbox == work.guid));
    for c in &changes {
        let live = feed.try_recv().unwrap();
        // Live events also carry the added row; the log does not.
        assert_eq!(
            (live.modseq, live.mailbox, &live.kind),
            (c.modseq, c.mailbox, &c.kind)
        );
    }
    // RFC 3501 §6.3.6: the subscription stays.
    assert!(
        f.acct
            .subscriptions()
            .unwrap()
            .contains(&"Work".to_string())
    );
    assert_eq!(f.acct.used_bytes().unwrap(), 3);
    f.assert_consistent();
    // A new Work: new identity, no tombstones of the old one, UID 1 under a
    // new UIDVALIDITY.
    let again = f.acct.create_mailbox("Work", None).unwrap();
    assert_ne!(again.guid, work.guid);
    assert!(again.uidvalidity > work.uidvalidity);
    assert!(again.subscribed);
    assert!(f.acct.tombstones(&again.guid).unwrap().is_empty());
    assert_eq!(f.put_plain("Work", "d\r\n").uid, 1);
    // Errors.
    assert!(matches!(
        f.acct.delete_mailbox("inbox"),
        Err(Error::InvalidData(_))
    ));
    assert!(matches!(
        f.acct.delete_mailbox("Nope"),
        Err(Error::NotFound(_))
    ));
    f.assert_consistent();
}

#[test]
fn crash_inside_rename_or_delete_is_finished_by_the_scan() {
    let f = Fixture::new();
    f.acct.create_mailbox("Work", None).unwrap();
    f.acct.set_subscribed("Work", true).unwrap();
    let a = f.put(
        "Work",
        "a\r\n",
        NewMessage {
            keywords: kw(&["k"]),
            ..Default::default()
        },
    );
    let work = f.mb("Work");
    // Rename: the folder was renamed, the commit never happened.
    fs::rename(f.folder("Work"), f.folder("Job")).unwrap();
    let report = f.acct.scan().unwrap();
    assert_eq!(
        report,
        ScanReport {
            mailboxes_renamed: 1,
            ..Default::default()
        }
    );
    let job = f.mb("Job");
    assert_eq!(
        (job.guid, job.uidvalidity, job.uidnext),
        (work.guid, work.uidvalidity, work.uidnext)
    );
    assert_eq!(f.msgs("Job")[0].guid, a.guid);
    assert_eq!(f.msgs("Job")[0].keywords, kw(&["k"]));
    assert!(f.acct.subscriptions().unwrap().contains(&"Job".to_string()));
    f.assert_consistent();
    // Delete: the folder was parked, the commit never happened.
    let home = f.store.home_of(&f.user.address);
    fs::create_dir_all(home.join(".cove-deleted")).unwrap();
    fs::rename(
        f.folder("Job"),
        home.join(".cove-deleted").join(job.guid.to_hex()),
    )
    .unwrap();
    let report = f.acct.scan().unwrap();
    assert_eq!(report.mailboxes_removed, 1);
    assert!(!names(&f).contains(&"Job".to_string()));
    let expunged = f.acct.changes_since(0).unwrap().into_iter().any(|c| {
        c.mailbox == job.guid
            && matches!(c.kind, ChangeKind::Expunged { guid, .. } if guid == a.guid)
    });
    assert!(
        expunged,
        "the scan expunges the messages of a vanished folder"
    );
    f.assert_consistent();
    // The parked folder goes when the account is opened again.
    drop(f.acct);
    f.store.close_account(&f.user);
    f.store.account(&f.user).unwrap();
    assert_eq!(fs::read_dir(home.join(".cove-deleted")).unwrap().count(), 0);
}

#[test]
fn scan_does_not_take_over_a_copied_folders_identity() {
    let f = Fixture::new();
    f.acct.create_mailbox("Work", None).unwrap();
    f.put_plain("Work", "a\r\n");
    // Another program copies the folder (identity file included).
    let src = f.folder("Work");
    let dst = f.folder("Copy");
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(dst.join(sub)).unwrap();
    }
    fs::copy(src.join("cove-mailbox"), dst.join("cove-mailbox")).unwrap();
    let report = f.acct.scan().unwrap();
    assert_eq!(report.mailboxes_added, 1);
    assert_ne!(f.mb("Copy").guid, f.mb("Work").guid);
    f.assert_consistent();
}

#[test]
fn subscriptions_need_not_exist_and_log_only_existing_mailboxes() {
    let f = Fixture::new();
    let mut want: Vec<String> = DEFAULT_MAILBOXES
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    want.sort();
    assert_eq!(f.acct.subscriptions().unwrap(), want);
    assert!(f.acct.mailboxes().unwrap().iter().all(|m| m.subscribed));
    let start = f.acct.current_modseq().unwrap();
    f.acct.set_subscribed("Not.There", true).unwrap();
    assert!(
        f.acct
            .subscriptions()
            .unwrap()
            .contains(&"Not.There".to_string())
    );
    assert_eq!(f.acct.current_modseq().unwrap(), start);
    f.acct.set_subscribed("Sent", false).unwrap();
    f.acct.set_subscribed("Sent", false).unwrap();
    assert!(!f.mb("Sent").subscribed);
    let changes = f.acct.changes_since(start).unwrap();
    assert_eq!(changes.len(), 1, "no change, no log entry");
    assert_eq!(changes[0].mailbox, f.mb("Sent").guid);
    assert_eq!(
        changes[0].kind,
        ChangeKind::Subscription { subscribed: false }
    );
    f.acct.set_subscribed("inbox", false).unwrap();
    assert!(!f.mb("INBOX").subscribed);
    assert!(
        !f.acct
            .subscriptions()
            .unwrap()
            .contains(&"INBOX".to_string())
    );
    f.acct.set_subscribed("Inbox", true).unwrap();
    assert!(f.mb("INBOX").subscribed);
    assert!(matches!(
        f.acct.set_subscribed("a..b", true),
        Err(Error::InvalidData(_))
    ));
    // A mailbox created under a subscribed name shows as subscribed; any
    // other new mailbox is not subscribed (RFC 3501 §6.3.9: SUBSCRIBE is
    // the client's).
    assert!(f.acct.create_mailbox("Not.There", None).unwrap().subscribed);
    assert!(!f.acct.create_mailbox("Fresh", None).unwrap().subscribed);
    assert!(
        !f.acct
            .subscriptions()
            .unwrap()
            .contains(&"Fresh".to_string())
    );
    // The default folders start subscribed.
    assert!(f.mb("Drafts").subscribed);
    f.assert_consistent();
}

#[test]
fn status_of_all_mailboxes_matches_one_by_one() {
    let f = Fixture::new();
    f.put_plain("INBOX", "a\r\n");
    f.put(
        "INBOX",
        "bb\r\n",
        NewMessage {
            flags: Flags::SEEN,
            ..Default::default()
        },
    );
    f.put_plain("Sent", "ccc\r\n");
    let all = f.acct.mailbox_status_all().unwrap();
    assert_eq!(
        all.iter().map(|(m, _)| m.clone()).collect::<Vec<_>>(),
        f.acct.mailboxes().unwrap()
    );
    for (mb, st) in &all {
        assert_eq!(*st, f.acct.status(&mb.guid).unwrap(), "{}", mb.name);
    }
    let inbox = all.iter().find(|(m, _)| m.name == "INBOX").unwrap().1;
    assert_eq!(
        inbox,
        MailboxStatus {
            messages: 2,
            unseen: 1,
            size: 7,
            recent: 2
        }
    );
}

#[test]
fn messages_since_lists_rows_changed_after_a_modseq() {
    let f = Fixture::new();
    let a = f.put_plain("INBOX", "a\r\n");
    let b = f.put_plain("INBOX", "b\r\n");
    let inbox = f.mb("INBOX").guid;
    assert_eq!(f.acct.message(&inbox, b.uid).unwrap().unwrap().guid, b.guid);
    assert_eq!(f.acct.message(&inbox, 99).unwrap(), None);
    assert_eq!(f.acct.messages_since(&inbox, 0).unwrap().len(), 2);
    let mark = f.acct.current_modseq().unwrap();
    assert!(f.acct.messages_since(&inbox, mark).unwrap().is_empty());
    f.acct
        .store_flags(&inbox, &[a.uid], FlagOp::Add(Flags::SEEN, vec![]), None)
        .unwrap();
    let since = f.acct.messages_since(&inbox, mark).unwrap();
    assert_eq!(since.len(), 1);
    assert_eq!(since[0].uid, a.uid);
    assert!(since[0].modseq > b.modseq);
    assert!(matches!(
        f.acct.messages_since(&MailboxGuid([0; 16]), 0),
        Err(Error::NotFound(_))
    ));
}
