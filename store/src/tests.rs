//! Store tests against a real temporary data directory.

use super::*;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A clock that only moves when told.
struct FixedClock(AtomicU64);

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.0.load(Ordering::SeqCst))
    }
}

/// Deterministic GUIDs: a counter.
struct CountingEntropy(AtomicU64);

impl Entropy for CountingEntropy {
    fn fill(&self, out: &mut [u8]) {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        out.fill(0);
        let b = n.to_be_bytes();
        let len = out.len();
        out[len - 8..].copy_from_slice(&b);
    }
}

fn store_at(dir: &Path) -> Store {
    store_with(dir, Durability::Batched)
}

fn store_with(dir: &Path, durability: Durability) -> Store {
    let env = Env {
        clock: Arc::new(FixedClock(AtomicU64::new(1_700_000_000))),
        entropy: Arc::new(CountingEntropy(AtomicU64::new(0))),
    };
    Store::open(
        dir,
        StoreOptions {
            hostname: "test".into(),
            env,
            durability,
        },
    )
    .unwrap()
}

fn user(store: &Store, email: &str) -> User {
    store
        .add_user(&Address::parse(email).unwrap(), None, 0)
        .unwrap()
}

fn inbox_files(store: &Store, email: &str) -> Vec<PathBuf> {
    let home = store.home_of(&Address::parse(email).unwrap());
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        for e in fs::read_dir(home.join("Maildir").join(sub)).unwrap() {
            out.push(e.unwrap().path());
        }
    }
    out.sort();
    out
}

#[test]
fn new_account_has_default_mailboxes_with_special_use() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    let u = user(&s, "a@x.org");
    let acct = s.account(&u).unwrap();
    let names: Vec<(String, Option<String>)> = acct
        .mailboxes()
        .unwrap()
        .into_iter()
        .map(|m| (m.name, m.special_use))
        .collect();
    for (name, su) in DEFAULT_MAILBOXES {
        assert!(
            names.contains(&(name.to_string(), su.map(str::to_string))),
            "{name} missing: {names:?}"
        );
    }
    assert!(d.path().join("mail/x.org/a/Maildir/.Sent/cur").is_dir());
}

#[test]
fn one_blob_to_many_recipients_shares_one_inode_and_gets_uids() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    let users: Vec<User> = (0..5).map(|i| user(&s, &format!("u{i}@x.org"))).collect();
    let blob = s.blobs().put(b"Subject: hi\r\n\r\nhello\r\n").unwrap();
    let targets: Vec<DeliveryTarget> = users
        .iter()
        .map(|u| DeliveryTarget {
            user: u.clone(),
            mailbox: None,
        })
        .collect();
    for r in s.deliver(&blob, &targets) {
        assert_eq!(r.unwrap().uid, 1);
    }
    let inodes: std::collections::HashSet<u64> = (0..5)
        .flat_map(|i| inbox_files(&s, &format!("u{i}@x.org")))
        .map(|p| fs::metadata(p).unwrap().ino())
        .collect();
    assert_eq!(inodes.len(), 1);
    let again = s.deliver(&blob, &targets[..1]);
    assert_eq!(again[0].as_ref().unwrap().uid, 2);
    drop(blob);
    let stats = s.blobs().stats().unwrap();
    assert_eq!((stats.blobs, stats.messages), (1, 6));
}

#[test]
fn fsync_mode_delivers_the_same_way() {
    let d = tempfile::tempdir().unwrap();
    let s = store_with(d.path(), Durability::Fsync);
    let users: Vec<User> = (0..3).map(|i| user(&s, &format!("u{i}@x.org"))).collect();
    let blob = s.blobs().put(b"fsynced\r\n").unwrap();
    let targets: Vec<DeliveryTarget> = users
        .iter()
        .map(|u| DeliveryTarget {
            user: u.clone(),
            mailbox: None,
        })
        .collect();
    assert!(
        s.deliver(&blob, &targets)
            .iter()
            .all(|r| r.as_ref().is_ok_and(|d| d.uid == 1))
    );
    assert_eq!(s.sync.flushes(), 0);
}

#[test]
fn batched_mode_flushes_once_for_many_recipients() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    let users: Vec<User> = (0..10).map(|i| user(&s, &format!("u{i}@x.org"))).collect();
    let blob = s.blobs().put(b"batched\r\n").unwrap();
    let targets: Vec<DeliveryTarget> = users
        .iter()
        .map(|u| DeliveryTarget {
            user: u.clone(),
            mailbox: None,
        })
        .collect();
    let before = s.sync.flushes();
    assert!(s.deliver(&blob, &targets).iter().all(|r| r.is_ok()));
    assert_eq!(s.sync.flushes() - before, 1);
}

#[test]
fn detail_mailbox_used_only_when_it_exists() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    let u = user(&s, "a@x.org");
    let blob = s.blobs().put(b"x\r\n").unwrap();
    let to = |m: &str| DeliveryTarget {
        user: u.clone(),
        mailbox: Some(m.to_string()),
    };
    let r = s.deliver(&blob, &[to("Archive"), to("NoSuchBox")]);
    let acct = s.account(&u).unwrap();
    assert_eq!(
        r[0].as_ref().unwrap().mailbox,
        acct.mailbox("Archive").unwrap().guid
    );
    assert_eq!(
        r[1].as_ref().unwrap().mailbox,
        acct.mailbox("INBOX").unwrap().guid
    );
}

/// A `+detail` is text: any Unicode spelling of a mailbox's name reaches
/// it, and a detail that is no valid name (a path trick) reaches INBOX.
#[test]
fn detail_is_a_unicode_name_in_any_normal_form() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    let u = user(&s, "a@x.org");
    let acct = s.account(&u).unwrap();
    let cafe = acct.create_mailbox("Caf&AOk-", None).unwrap();
    let blob = s.blobs().put(b"x\r\n").unwrap();
    let to = |m: &str| DeliveryTarget {
        user: u.clone(),
        mailbox: Some(m.to_string()),
    };
    let r = s.deliver(
        &blob,
        &[to("Caf\u{e9}"), to("cafe\u{301}"), to("../Caf&AOk-")],
    );
    let inbox = acct.mailbox("INBOX").unwrap().guid;
    let got: Vec<_> = r.iter().map(|r| r.as_ref().unwrap().mailbox).collect();
    assert_eq!(got, [cafe.guid, cafe.guid, inbox]);
}

#[test]
fn quota_is_enforced() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    let u = s
        .add_user(&Address::parse("q@x.org").unwrap(), None, 10)
        .unwrap();
    let small = s.blobs().put(b"12345678\r\n").unwrap();
    assert!(
        s.deliver(
            &small,
            &[DeliveryTarget {
                user: u.clone(),
                mailbox: None
            }]
        )[0]
        .is_ok()
    );
    let r = s.deliver(
        &small,
        &[DeliveryTarget {
            user: u,
            mailbox: None,
        }],
    );
    assert!(matches!(r[0], Err(Error::OverQuota { .. })));
}

#[test]
fn flags_rename_the_file_and_log_changes() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    let u = user(&s, "a@x.org");
    let acct = s.account(&u).unwrap();
    let mut feed = acct.subscribe();
    let blob = s.blobs().put(b"m\r\n").unwrap();
    let del = acct
        .deliver("INBOX", &blob, &NewMessage::default())
        .unwrap();
    let start = acct.current_modseq().unwrap();
    acct.set_flags(
        &del.mailbox,
        del.uid,
        Flags::SEEN | Flags::FLAGGED,
        &["work".into()],
    )
    .unwrap();
    let files = inbox_files(&s, "a@x.org");
    assert_eq!(files.len(), 1);
    // "work" is keyword letter a (dovecot-keywords).
    assert!(files[0].to_str().unwrap().ends_with(":2,FSa"), "{files:?}");
    assert!(files[0].to_str().unwrap().contains("/cur/"));
    let msgs = acct.messages(&del.mailbox).unwrap();
    assert_eq!(msgs[0].keywords, vec!["work".to_string()]);
    let changes = acct.changes_since(start).unwrap();
    assert_eq!(changes.len(), 1);
    assert!(matches!(
        changes[0].kind,
        ChangeKind::FlagsChanged { uid: 1, .. }
    ));
    assert!(matches!(
        feed.try_recv().unwrap().kind,
        ChangeKind::MessageAdded { uid: 1, .. }
    ));
    assert!(matches!(
        feed.try_recv().unwrap().kind,
        ChangeKind::FlagsChanged { uid: 1, .. }
    ));
    // The rescan agrees with what we did.
    assert!(acct.scan().unwrap().is_empty());
}

#[test]
fn expunge_leaves_tombstone_and_removes_file() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    let u = user(&s, "a@x.org");
    let acct = s.account(&u).unwrap();
    let blob = s.blobs().put(b"m\r\n").unwrap();
    let a = acct
        .deliver("INBOX", &blob, &NewMessage::default())
        .unwrap();
    let b = acct
        .deliver("INBOX", &blob, &NewMessage::default())
        .unwrap();
    assert_eq!(acct.used_bytes().unwrap(), 6);
    assert_eq!(acct.expunge(&a.mailbox, &[a.uid, 99]).unwrap(), vec![a.uid]);
    assert_eq!(
        acct.used_bytes().unwrap(),
        3,
        "the quota count follows expunges"
    );
    assert_eq!(inbox_files(&s, "a@x.org").len(), 1);
    assert_eq!(
        acct.tombstones(&a.mailbox).unwrap(),
        vec![(a.uid, a.guid, acct.current_modseq().unwrap())]
    );
    // UIDs are never reused.
    let c = acct
        .deliver("INBOX", &blob, &NewMessage::default())
        .unwrap();
    assert_eq!((b.uid, c.uid), (2, 3));
}

#[test]
fn scan_picks_up_foreign_files_and_notices_removals() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    let u = user(&s, "a@x.org");
    let acct = s.account(&u).unwrap();
    let blob = s.blobs().put(b"first\r\n").unwrap();
    let first = acct
        .deliver("INBOX", &blob, &NewMessage::default())
        .unwrap();
    let second = acct
        .deliver(
            "INBOX",
            &s.blobs().put(b"second\r\n").unwrap(),
            &NewMessage::default(),
        )
        .unwrap();
    let maildir = s.home_of(&u.address).join("Maildir");
    // Another program delivers one (with flags in cur/) and deletes one.
    fs::write(
        maildir.join("cur/1600000000.P1Q1.mx:2,S"),
        b"From: x\n\nforeign\n",
    )
    .unwrap();
    let victim = inbox_files(&s, "a@x.org")
        .into_iter()
        .find(|p| p.to_str().unwrap().contains(&second.guid.to_hex()))
        .unwrap();
    fs::remove_file(victim).unwrap();
    let report = acct.scan().unwrap();
    assert_eq!((report.messages_added, report.messages_expunged), (1, 1));
    let msgs = acct.messages(&first.mailbox).unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].uid, first.uid);
    let foreign = &msgs[1];
    assert_eq!(foreign.uid, 3);
    assert_eq!(foreign.flags, Flags::SEEN);
    assert_eq!(
        foreign.guid,
        MessageGuid::derived_from_name("1600000000.P1Q1.mx")
    );
    assert_eq!(foreign.content_id, ContentId::of(b"From: x\n\nforeign\n"));
    // The foreign file became a blob itself.
    s.blobs().verify(&foreign.content_id).unwrap();
    // Renamed by another program with other flags: a flag change.
    fs::rename(
        maildir.join("cur/1600000000.P1Q1.mx:2,S"),
        maildir.join("cur/1600000000.P1Q1.mx:2,RS"),
    )
    .unwrap();
    assert_eq!(acct.scan().unwrap().flags_changed, 1);
    assert_eq!(
        acct.messages(&first.mailbox).unwrap()[1].flags,
        Flags::SEEN | Flags::ANSWERED
    );
}

/// Every directory of a Maildir (the root, each folder, its cur/ new/ tmp/).
fn maildir_dirs(maildir: &Path) -> Vec<PathBuf> {
    let mut out = vec![maildir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        for e in fs::read_dir(&out[i]).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.push(p);
            }
        }
        i += 1;
    }
    out
}

fn backdate(dirs: &[PathBuf], when: SystemTime) {
    for d in dirs {
        fs::File::open(d).unwrap().set_modified(when).unwrap();
    }
}

#[test]
fn scan_if_changed_skips_only_a_maildir_no_one_touched() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    let u = user(&s, "a@x.org");
    let acct = s.account(&u).unwrap();
    let maildir = s.home_of(&u.address).join("Maildir");
    let inbox = acct.mailbox("INBOX").unwrap().guid;
    let count = || acct.messages(&inbox).unwrap().len();

    // Just written: too recent to trust, so it is scanned.
    fs::write(
        maildir.join("new/1600000000.P1Q1.mx"),
        b"A: 1\r\n\r\none\r\n",
    )
    .unwrap();
    assert_eq!(acct.scan_if_changed().unwrap().messages_added, 1);

    // Untouched for a minute: the scan's stamps are trusted, and
    // scan_if_changed lists nothing...
    let old = SystemTime::now() - Duration::from_secs(60);
    let dirs = maildir_dirs(&maildir);
    backdate(&dirs, old);
    assert!(acct.scan().unwrap().is_empty());
    let scans = s.maildir_scans();
    assert!(acct.scan_if_changed().unwrap().is_empty());
    assert_eq!(s.maildir_scans(), scans, "listed an untouched Maildir");
    // ...but a file slipped in behind a restored mtime is seen: restoring
    // the mtime moved new/'s ctime (past the clock tick of the backdating
    // above, which no change made in the same tick could be told from).
    std::thread::sleep(Duration::from_millis(20));
    fs::write(
        maildir.join("new/1600000001.P1Q1.mx"),
        b"A: 2\r\n\r\ntwo\r\n",
    )
    .unwrap();
    backdate(&[maildir.join("new")], old);
    assert_eq!(acct.scan_if_changed().unwrap().messages_added, 1);
    assert_eq!(count(), 2);

    // Any real change is seen: a delivery by another program, a flag
    // change (rename in cur/), a new folder.
    backdate(&dirs, old);
    assert!(acct.scan().unwrap().is_empty());
    fs::write(
        maildir.join("new/1600000002.P1Q1.mx"),
        b"A: 3\r\n\r\nthree\r\n",
    )
    .unwrap();
    assert_eq!(acct.scan_if_changed().unwrap().messages_added, 1);
    backdate(&dirs, old);
    assert!(acct.scan().unwrap().is_empty());
    let m = acct.messages(&inbox).unwrap().remove(0);
    let from = maildir.join(&m.file);
    let name = from.file_name().unwrap().to_str().unwrap();
    let to = maildir
        .join("cur")
        .join(format!("{}:2,F", name.split(":2,").next().unwrap()));
    fs::rename(&from, &to).unwrap();
    assert_eq!(acct.scan_if_changed().unwrap().flags_changed, 1);
    backdate(&dirs, old);
    assert!(acct.scan().unwrap().is_empty());
    maildir::create_folder(&maildir.join(".Lists")).unwrap();
    assert_eq!(acct.scan_if_changed().unwrap().mailboxes_added, 1);
}

#[test]
fn crash_between_link_and_commit_is_recovered_by_scan() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    let u = user(&s, "a@x.org");
    let acct = s.account(&u).unwrap();
    let blob = s.blobs().put(b"orphan\r\n").unwrap();
    let guid = MessageGuid([9; 16]);
    let name = maildir::FileName::new_delivery(1_700_000_000, guid, "test", blob.len());
    blob.link_to(&s.home_of(&u.address).join("Maildir/new").join(&name))
        .unwrap();
    let report = acct.scan().unwrap();
    assert_eq!(report.messages_added, 1);
    let inbox = acct.mailbox("inbox").unwrap();
    let msgs = acct.messages(&inbox.guid).unwrap();
    assert_eq!(msgs[0].guid, guid);
    assert_eq!(msgs[0].content_id, blob.id());
}

/// Deliver `n` small messages (`m0`, `m1`...) to INBOX; their GUIDs.
fn deliver_to_inbox(s: &Store, acct: &crate::Account, n: usize) -> Vec<MessageGuid> {
    (0..n)
        .map(|i| {
            let blob = s.blobs().put(format!("m{i}\r\n").as_bytes()).unwrap();
            acct.deliver("INBOX", &blob, &NewMessage::default())
                .unwrap()
                .guid
        })
        .collect()
}

#[test]
fn rebuild_after_index_loss_keeps_guids_and_bumps_uidvalidity() {
    let d = tempfile::tempdir().unwrap();
    let guids;
    let (old_validity, sent_guid);
    {
        let s = store_at(d.path());
        let u = user(&s, "a@x.org");
        let acct = s.account(&u).unwrap();
        guids = deliver_to_inbox(&s, &acct, 5);
        let blob = s.blobs().put(b"sent\r\n").unwrap();
        acct.deliver(
            "Sent",
            &blob,
            &NewMessage {
                flags: Flags::SEEN,
                ..Default::default()
            },
        )
        .unwrap();
        old_validity = acct.mailbox("INBOX").unwrap().uidvalidity;
        sent_guid = acct.mailbox("Sent").unwrap().guid;
    }
    let home = d.path().join("mail/x.org/a");
    fs::remove_file(home.join("index.sqlite")).unwrap();
    let s = store_at(d.path());
    let u = s
        .user(&Address::parse("a@x.org").unwrap())
        .unwrap()
        .unwrap();
    let acct = s.account(&u).unwrap();
    let inbox = acct.mailbox("INBOX").unwrap();
    assert!(inbox.uidvalidity > old_validity);
    let got: Vec<MessageGuid> = acct
        .messages(&inbox.guid)
        .unwrap()
        .iter()
        .map(|m| m.guid)
        .collect();
    let mut want = guids.clone();
    want.sort();
    let mut got_sorted = got.clone();
    got_sorted.sort();
    assert_eq!(got_sorted, want);
    let sent = acct.mailbox("Sent").unwrap();
    assert_eq!(sent.guid, sent_guid);
    assert_eq!(sent.special_use.as_deref(), Some("\\Sent"));
    assert_eq!(acct.messages(&sent.guid).unwrap()[0].flags, Flags::SEEN);
}

/// index.sqlite deleted or truncated while its account is open: the next
/// use rebuilds it from the Maildir (GUIDs and mailbox GUIDs kept) before
/// answering; a truncated one is kept aside.
#[test]
fn index_lost_under_an_open_account_is_rebuilt_before_use() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    let acct = s.account(&user(&s, "a@x.org")).unwrap();
    let home = acct.home().to_path_buf();
    let index = home.join("index.sqlite");
    let len = fs::metadata(&index).unwrap().len();
    assert!(
        len > 0 && len.is_multiple_of(512),
        "a fresh index is {len} bytes"
    );
    let mut guids = deliver_to_inbox(&s, &acct, 3);
    let inbox_guid = acct.mailbox("INBOX").unwrap().guid;
    let listed = |acct: &crate::Account| -> Vec<MessageGuid> {
        let mut g: Vec<MessageGuid> = acct
            .messages(&acct.mailbox("INBOX").unwrap().guid)
            .unwrap()
            .iter()
            .map(|m| m.guid)
            .collect();
        g.sort();
        g
    };
    guids.sort();

    fs::remove_file(&index).unwrap();
    assert_eq!(acct.mailbox("INBOX").unwrap().guid, inbox_guid);
    assert_eq!(listed(&acct), guids);

    fs::OpenOptions::new()
        .write(true)
        .open(&index)
        .unwrap()
        .set_len(0)
        .unwrap();
    // The next delivery lands in the rebuilt index, beside the others.
    let blob = s.blobs().put(b"after\r\n").unwrap();
    guids.push(
        acct.deliver("INBOX", &blob, &NewMessage::default())
            .unwrap()
            .guid,
    );
    guids.sort();
    assert_eq!(listed(&acct), guids);
    let kept: Vec<String> = fs::read_dir(&home)
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.starts_with("index.sqlite.truncated-"))
        .collect();
    assert!(!kept.is_empty(), "the truncated index is kept aside");
}

/// Pages of an open index damaged on disk (a bad sector): SQLite reports
/// it on the read that meets them, the index checks itself at its next use
/// and is rebuilt from the Maildir (kept aside as `.damaged-<secs>`).
#[test]
fn index_damaged_under_an_open_account_is_rebuilt_at_its_next_use() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    let acct = s.account(&user(&s, "a@x.org")).unwrap();
    let mut guids = deliver_to_inbox(&s, &acct, 3);
    guids.sort();
    let index = acct.home().join("index.sqlite");
    // Every page into the database file, the WAL emptied (which also makes
    // the account's connection drop its cached pages at its next read).
    {
        let other = rusqlite::Connection::open(&index).unwrap();
        other
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
    }
    let len = fs::metadata(&index).unwrap().len();
    let mut bytes = fs::read(&index).unwrap();
    for b in &mut bytes[4096..] {
        *b = 0x5a;
    }
    assert_eq!(bytes.len() as u64, len);
    fs::write(&index, &bytes).unwrap();

    // The read that meets the damage fails (a temporary error)...
    let first = acct.mailbox("INBOX").and_then(|mb| acct.messages(&mb.guid));
    assert!(matches!(first, Err(Error::Index(_))), "{first:?}");
    // ...and the next use finds the index rebuilt.
    let inbox = acct.mailbox("INBOX").unwrap();
    let mut now: Vec<MessageGuid> = acct
        .messages(&inbox.guid)
        .unwrap()
        .iter()
        .map(|m| m.guid)
        .collect();
    now.sort();
    assert_eq!(now, guids);
    assert!(fs::read_dir(acct.home()).unwrap().flatten().any(|e| {
        e.file_name()
            .to_string_lossy()
            .starts_with("index.sqlite.damaged-")
    }));
}

#[test]
fn mailbox_create_rejects_duplicates_and_bad_names() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    let u = user(&s, "a@x.org");
    let acct = s.account(&u).unwrap();
    acct.create_mailbox("Work.Q1", None).unwrap();
    assert!(matches!(
        acct.create_mailbox("Work.Q1", None),
        Err(Error::AlreadyExists(_))
    ));
    assert!(matches!(
        acct.create_mailbox("inbox", None),
        Err(Error::AlreadyExists(_))
    ));
    assert!(matches!(
        acct.create_mailbox("../etc", None),
        Err(Error::InvalidData(_))
    ));
}

/// One user in a fresh store, for the tests of the IMAP-facing operations.
struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    user: User,
    acct: Arc<Account>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path());
        let user = user(&store, "a@x.org");
        let acct = store.account(&user).unwrap();
        Fixture {
            _dir: dir,
            store,
            user,
            acct,
        }
    }

    fn maildir(&self) -> PathBuf {
        self.store.home_of(&self.user.address).join("Maildir")
    }

    /// The folder of a mailbox name.
    fn folder(&self, name: &str) -> PathBuf {
        self.maildir().join(maildir::mailbox_dir_name(name))
    }

    fn mb(&self, name: &str) -> MailboxInfo {
        self.acct.mailbox(name).unwrap()
    }

    fn msgs(&self, name: &str) -> Vec<MessageMeta> {
        self.acct.messages(&self.mb(name).guid).unwrap()
    }

    fn put(&self, mailbox: &str, body: &str, msg: NewMessage) -> Delivered {
        let blob = self.store.blobs().put(body.as_bytes()).unwrap();
        self.acct.deliver(mailbox, &blob, &msg).unwrap()
    }

    fn put_plain(&self, mailbox: &str, body: &str) -> Delivered {
        self.put(mailbox, body, NewMessage::default())
    }

    fn path_of(&self, mailbox: &str, m: &MessageMeta) -> PathBuf {
        self.acct.message_path(&self.mb(mailbox), m)
    }

    /// Every message GUID of the account, asserting none is in two places.
    fn all_guids(&self) -> Vec<MessageGuid> {
        let mut all = Vec::new();
        for mb in self.acct.mailboxes().unwrap() {
            all.extend(self.acct.messages(&mb.guid).unwrap().iter().map(|m| m.guid));
        }
        let unique: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len(), "a GUID lives in two places");
        all
    }

    /// The index and the Maildir agree, and no GUID is in two places.
    fn assert_consistent(&self) {
        assert_eq!(self.acct.scan().unwrap(), ScanReport::default());
        self.all_guids();
    }
}

fn kw(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

mod accounts;
mod idle_memory;
mod imap_flags;
mod imap_mailboxes;
mod imap_transfer;
mod indexer;
mod replica_peer;

const ENV: DerivedKind = DerivedKind::ImapEnvelope;
const BS: DerivedKind = DerivedKind::ImapBodyStructure;

#[test]
fn derived_data_round_trips_by_content() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    let acct = s.account(&user(&s, "a@x.org")).unwrap();
    let a = ContentId::of(b"a");
    let b = ContentId::of(b"b");
    assert_eq!(acct.derived(&[(a, ENV)]).unwrap(), vec![None]);
    acct.store_derived(&[(a, ENV, b"env".to_vec()), (a, BS, b"bs".to_vec())])
        .unwrap();
    assert_eq!(
        acct.derived(&[(a, ENV), (a, BS), (b, ENV)]).unwrap(),
        vec![Some(b"env".to_vec()), Some(b"bs".to_vec()), None]
    );
}

// Sieve stamps (a script's change, a removal, the active marker) count on
// the store's clock like every other replication stamp: with a clock of
// 2023, a script put today merges as a change of 2023.
#[test]
fn sieve_stamps_come_from_the_injected_clock() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    let u = user(&s, "a@x.org");
    let scripts = s.sieve(&u.address);
    let limits = crate::sieve::SieveLimits::default();
    scripts.put("one", b"keep;", &limits).unwrap();
    scripts.put("two", b"keep;", &limits).unwrap();
    scripts.activate(Some("one")).unwrap();
    scripts.delete("two").unwrap();
    let state = scripts.state().unwrap().unwrap();
    let clock_ms = 1_700_000_000_000;
    assert_eq!(
        state.scripts.iter().map(|s| s.stamp).collect::<Vec<_>>(),
        [clock_ms]
    );
    assert_eq!(state.active_stamp, clock_ms);
    assert_eq!(
        state.removed.iter().map(|r| r.stamp).collect::<Vec<_>>(),
        [clock_ms]
    );
}

// A folder another process is building (the CLI's `cove user add` makes
// the default mailboxes while the server opens the same new account) is
// not the left-over of a crash: the clean-up at open leaves it while that
// process holds the scratch lock, and takes it once no one does.
#[test]
fn a_folder_in_the_making_survives_another_open_of_the_account() {
    use crate::account::{CREATING_DIR, scratch_busy};
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    let u = user(&s, "a@x.org");
    let home = s.account(&u).unwrap().home().to_path_buf();
    let building = home.join(CREATING_DIR).join("in-the-making");
    fs::create_dir_all(&building).unwrap();
    fs::write(building.join("cove-mailbox"), b"identity").unwrap();
    let busy = scratch_busy(&home, CREATING_DIR).unwrap();
    s.close_account(&u);
    s.account(&u).unwrap();
    assert!(
        building.join("cove-mailbox").exists(),
        "removed while in the making"
    );
    drop(busy);
    s.close_account(&u);
    s.account(&u).unwrap();
    assert!(!building.exists(), "a crash's left-over stays");
}

// An index made before the table was keyed by kind first: its entries of
// kinds still read move over at open, retired kinds' do not, and the old
// table is gone.
#[test]
fn derived_entries_of_the_old_table_move_at_open() {
    let d = tempfile::tempdir().unwrap();
    let a = ContentId::of(b"a");
    let home = {
        let s = store_at(d.path());
        let acct = s.account(&user(&s, "a@x.org")).unwrap();
        acct.home().to_path_buf()
    };
    let old = rusqlite::Connection::open(home.join("index.sqlite")).unwrap();
    old.execute_batch(
        "CREATE TABLE derived(content_id BLOB NOT NULL, kind INTEGER NOT NULL,
           data BLOB NOT NULL, PRIMARY KEY(content_id, kind)) WITHOUT ROWID;",
    )
    .unwrap();
    for (kind, data) in [(ENV.code(), &b"env"[..]), (35, &b"retired"[..])] {
        old.execute(
            "INSERT INTO derived(content_id, kind, data) VALUES (?1, ?2, ?3)",
            rusqlite::params![&a.0[..], kind, data],
        )
        .unwrap();
    }
    drop(old);
    let (_s, acct) = reopened(d.path(), "a@x.org");
    assert_eq!(
        acct.derived(&[(a, ENV)]).unwrap(),
        vec![Some(b"env".to_vec())]
    );
    let rows = views_after_moving(&home, "derived");
    assert_eq!(rows, 1, "the retired kind's entry did not move");
}

/// The store at `dir` opened again, and the account of `email` (made
/// before).
fn reopened(dir: &Path, email: &str) -> (Store, Arc<Account>) {
    let s = store_at(dir);
    let known = s.user(&Address::parse(email).unwrap()).unwrap().unwrap();
    let acct = s.account(&known).unwrap();
    (s, acct)
}

/// After an open that moved the old table `old` of derived data: that it is
/// gone, and how many views the new layout holds.
fn views_after_moving(home: &Path, old: &str) -> i64 {
    let check = rusqlite::Connection::open(home.join("index.sqlite")).unwrap();
    let tables: i64 = check
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = ?1",
            [old],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0, "the old table is dropped");
    check
        .query_row("SELECT count(*) FROM derived_view", [], |r| r.get(0))
        .unwrap()
}

// An index of the layout keyed by (kind, content id) (`derived_by_kind`,
// before views were numbered in arrival order): at open every entry of a
// kind still read moves, numbered in the order of the messages that hold
// the contents; lookups, the pass over a whole kind and a new entry read
// the same as before; the old table is gone.
#[test]
fn derived_entries_keyed_by_content_move_to_arrival_numbers_at_open() {
    let d = tempfile::tempdir().unwrap();
    let (home, held) = {
        let s = store_at(d.path());
        let acct = s.account(&user(&s, "a@x.org")).unwrap();
        let mut held = Vec::new();
        for i in 0..300u32 {
            let blob = s
                .blobs()
                .put(format!("Subject: {i}\r\n\r\nbody {i}\r\n").as_bytes())
                .unwrap();
            acct.deliver("INBOX", &blob, &NewMessage::default())
                .unwrap();
            held.push(blob.id());
        }
        (acct.home().to_path_buf(), held)
    };
    let unheld = ContentId::of(b"no message holds it");
    let old = rusqlite::Connection::open(home.join("index.sqlite")).unwrap();
    old.execute_batch(
        "DROP TABLE derived_view; DROP TABLE derived_content;
         CREATE TABLE derived_by_kind(kind INTEGER NOT NULL, content_id BLOB NOT NULL,
           data BLOB NOT NULL, PRIMARY KEY(kind, content_id)) WITHOUT ROWID;",
    )
    .unwrap();
    let mut all: Vec<(ContentId, u8, Vec<u8>)> = Vec::new();
    for (i, id) in held.iter().chain([&unheld]).enumerate() {
        all.push((*id, ENV.code(), format!("env {i}").into_bytes()));
        all.push((*id, BS.code(), format!("bs {i}").into_bytes()));
    }
    all.push((held[0], 35, b"retired".to_vec()));
    for (id, kind, data) in &all {
        old.execute(
            "INSERT INTO derived_by_kind(kind, content_id, data) VALUES (?1, ?2, ?3)",
            rusqlite::params![kind, &id.0[..], data],
        )
        .unwrap();
    }
    drop(old);
    let (_s, acct) = reopened(d.path(), "a@x.org");
    // Every entry by lookup (a few keys) and by a pass (all of a kind).
    let expect = |prefix: &str| -> Vec<Option<Vec<u8>>> {
        (0..=held.len())
            .map(|i| Some(format!("{prefix} {i}").into_bytes()))
            .collect()
    };
    let keys = |kind: DerivedKind| -> Vec<(ContentId, DerivedKind)> {
        held.iter().chain([&unheld]).map(|id| (*id, kind)).collect()
    };
    assert_eq!(acct.derived(&keys(ENV)).unwrap(), expect("env"));
    assert_eq!(acct.derived(&keys(BS)).unwrap(), expect("bs"));
    assert_eq!(
        acct.derived(&[(held[7], BS), (unheld, ENV)]).unwrap(),
        vec![Some(b"bs 7".to_vec()), Some(b"env 300".to_vec())]
    );
    let rows = views_after_moving(&home, "derived_by_kind");
    let check = rusqlite::Connection::open(home.join("index.sqlite")).unwrap();
    assert_eq!(rows, 2 * 301, "the retired kind's entry did not move");
    // Numbered in the messages' order, the content no message holds last.
    let order: Vec<Vec<u8>> = check
        .prepare("SELECT content_id FROM derived_content ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let wanted: Vec<Vec<u8>> = held
        .iter()
        .chain([&unheld])
        .map(|id| id.0.to_vec())
        .collect();
    assert_eq!(order, wanted);
    drop(check);
    // A new content's views come after, and an old content's are replaced.
    let new = ContentId::of(b"new");
    acct.store_derived(&[
        (new, ENV, b"new env".to_vec()),
        (held[3], ENV, b"env 3b".to_vec()),
    ])
    .unwrap();
    assert_eq!(
        acct.derived(&[(new, ENV), (held[3], ENV), (held[3], BS)])
            .unwrap(),
        vec![
            Some(b"new env".to_vec()),
            Some(b"env 3b".to_vec()),
            Some(b"bs 3".to_vec())
        ]
    );
    // The sweep takes the content no message holds (and the new one).
    assert_eq!(acct.sweep_derived().unwrap(), 2);
    assert_eq!(acct.derived(&[(unheld, ENV)]).unwrap(), vec![None]);
    assert_eq!(
        acct.derived(&[(held[299], ENV)]).unwrap(),
        vec![Some(b"env 299".to_vec())]
    );
}

#[test]
fn derived_lookups_in_batches_answer_each_key_in_order() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    let acct = s.account(&user(&s, "a@x.org")).unwrap();
    // 1,200 contents (more than one statement's worth), every third one
    // cached, under two kinds; keys asked in a shuffled order, with
    // repeats (COPY: one content under two UIDs).
    let ids: Vec<ContentId> = (0..1200u32)
        .map(|i| ContentId::of(&i.to_le_bytes()))
        .collect();
    let entries: Vec<(ContentId, DerivedKind, Vec<u8>)> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 == 0)
        .flat_map(|(i, id)| {
            [
                (*id, ENV, format!("e{i}").into_bytes()),
                (*id, BS, format!("b{i}").into_bytes()),
            ]
        })
        .collect();
    acct.store_derived(&entries).unwrap();
    let mut keys = Vec::new();
    for i in (0..1200usize).rev().step_by(3).chain(0..40) {
        keys.push((ids[i], ENV));
        keys.push((ids[i], BS));
    }
    // All of them (440 ids of each kind, more than a quarter of the
    // account's messages: one pass over each kind's rows), and a few
    // (lookups).
    for keys in [&keys[..], &keys[..20]] {
        let got = acct.derived(keys).unwrap();
        assert_eq!(got.len(), keys.len());
        for ((id, kind), answer) in keys.iter().zip(&got) {
            let i = ids.iter().position(|x| x == id).unwrap();
            let want = (i % 3 == 0)
                .then(|| format!("{}{i}", if *kind == ENV { "e" } else { "b" }).into_bytes());
            assert_eq!(answer, &want, "content {i} kind {kind:?}");
        }
    }
}

/// `derived_with` hands each position its entry as stored (copies of one
/// content each get theirs, in one pass and in lookups), and what `read`
/// refuses is answered as missing.
#[test]
fn derived_with_reads_each_position_in_place() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    let acct = s.account(&user(&s, "a@x.org")).unwrap();
    let ids: Vec<ContentId> = (0..600u32)
        .map(|i| ContentId::of(&i.to_le_bytes()))
        .collect();
    let entries: Vec<(ContentId, DerivedKind, Vec<u8>)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            (
                *id,
                ENV,
                if i % 5 == 0 {
                    b"bad".to_vec()
                } else {
                    format!("e{i}").into_bytes()
                },
            )
        })
        .collect();
    acct.store_derived(&entries).unwrap();
    // Each content twice, far apart: 1,200 positions (a pass), then 10
    // (lookups).
    let keys: Vec<(ContentId, DerivedKind)> = ids
        .iter()
        .chain(ids.iter().rev())
        .map(|id| (*id, ENV))
        .collect();
    for keys in [&keys[..], &keys[595..605]] {
        let got = acct
            .derived_with(keys, |b| {
                std::str::from_utf8(b)
                    .ok()
                    .filter(|t| *t != "bad")
                    .map(String::from)
            })
            .unwrap();
        assert_eq!(got.len(), keys.len());
        for ((id, _), answer) in keys.iter().zip(&got) {
            let i = ids.iter().position(|x| x == id).unwrap();
            let want = (i % 5 != 0).then(|| format!("e{i}"));
            assert_eq!(answer, &want, "content {i}");
        }
    }
}

/// Rot a blob in place (its inode stays, so every Maildir link sees it).
fn rot(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o640)).unwrap();
    let mut bytes = fs::read(path).unwrap();
    bytes[0] ^= 1;
    fs::write(path, bytes).unwrap();
}

#[test]
fn damaged_files_are_reported_then_relinked_to_a_verified_copy() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    let (a, b) = (user(&s, "a@x.org"), user(&s, "b@x.org"));
    let bytes = b"Subject: shared\r\n\r\nbody\r\n";
    let targets = [a.clone(), b.clone()].map(|user| DeliveryTarget {
        user,
        mailbox: None,
    });
    let blob = s.blobs().put(bytes).unwrap();
    let id = blob.id();
    assert!(s.deliver(&blob, &targets).iter().all(|r| r.is_ok()));
    drop(blob);
    rot(&s.blobs().path_of(&id));

    let report = s.verify_content().unwrap();
    assert_eq!(report.corrupt_blobs.len(), 1);
    let mut users: Vec<&str> = report.messages.iter().map(|m| m.user.as_str()).collect();
    users.sort();
    assert_eq!(users, ["a@x.org", "b@x.org"]);
    assert!(report.messages.iter().all(|m| m.content_id == id));
    // No good copy here: nothing to relink with.
    let r = s.repair_damaged().unwrap();
    assert_eq!((r.damaged, r.relinked), (1, 0));

    // A view parsed from the damaged bytes was cached.
    let acct_a = s.account(&a).unwrap();
    acct_a
        .store_derived(&[(id, ENV, b"rotten".to_vec())])
        .unwrap();

    // The content arrives again: both users' files are relinked to it.
    let again = s.blobs().put(bytes).unwrap();
    let r = s.repair_damaged().unwrap();
    assert_eq!((r.damaged, r.relinked), (1, 2));
    let ino = fs::metadata(s.blobs().path_of(&id)).unwrap().ino();
    for email in ["a@x.org", "b@x.org"] {
        let files = inbox_files(&s, email);
        assert_eq!(files.len(), 1);
        assert_eq!(fs::read(&files[0]).unwrap(), bytes);
        assert_eq!(fs::metadata(&files[0]).unwrap().ino(), ino);
    }
    assert_eq!(acct_a.derived(&[(id, ENV)]).unwrap(), vec![None]);
    drop(again);
    assert!(s.verify_content().unwrap().is_clean());
    assert!(s.blobs().damaged().unwrap().is_empty());
    assert_eq!(
        fs::read_dir(s.blobs().root().join("quarantine"))
            .unwrap()
            .count(),
        0,
        "the rotten copy left quarantine once nothing served it"
    );
}

/// A mailbox "Old" made by an import (the old server's UIDVALIDITY 777 and
/// UIDNEXT 300), and a maker of its old messages by old UID (each written
/// to a source file under `dir`).
fn old_server_mailbox(
    acct: &crate::Account,
    dir: &Path,
) -> (crate::MailboxInfo, impl Fn(Uid) -> ImportMessage) {
    let (mb, _) = acct
        .import_mailbox(&ImportMailbox {
            name: "Old",
            guid: None,
            uidvalidity: Some(777),
            uidnext: 300,
            special_use: None,
            subscribed: true,
        })
        .unwrap();
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    let old = move |uid: Uid| {
        let source = src.join(format!("m{uid}"));
        fs::write(&source, format!("Subject: old {uid}\n\nbody {uid}\n")).unwrap();
        ImportMessage {
            uid: Some(uid),
            guid: MessageGuid::derived_from_name(&format!("old {uid}")),
            source,
            flags: Flags::empty(),
            keywords: Vec::new(),
            internal_date: 1_700_000_000,
        }
    };
    (mb, old)
}

// An import keeps, across its batches, the rule that an old UID below a
// message cove itself put in the mailbox is not used (clients saw cove's
// UID, so they never look below it): mail delivered between two batches
// counts for the next one, though each later batch reads only the rows
// written since the one before (ImportCache, `cove_max`).
#[test]
fn import_batches_give_way_to_mail_delivered_between_them() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    let acct = s.account(&user(&s, "a@x.org")).unwrap();
    let (mb, old) = old_server_mailbox(&acct, d.path());
    let mut cache = ImportCache::default();
    let first = acct
        .import_messages(&mb.guid, &[old(10), old(20)], &mut cache)
        .unwrap();
    assert_eq!((first.added, first.renumbered), (2, 0));
    let blob = s.blobs().put(b"Subject: new\r\n\r\nnew\r\n").unwrap();
    let delivered = acct.deliver("Old", &blob, &NewMessage::default()).unwrap();
    assert_eq!(delivered.uid, 300);
    let second = acct
        .import_messages(&mb.guid, &[old(30), old(400)], &mut cache)
        .unwrap();
    assert_eq!(
        (second.added, second.renumbered),
        (1, 1),
        "old UID 30 lies below cove's 300"
    );
    let uids: Vec<Uid> = acct
        .messages(&mb.guid)
        .unwrap()
        .iter()
        .map(|m| m.uid)
        .collect();
    assert!(!uids.contains(&30), "{uids:?}");
    assert!(uids.contains(&10) && uids.contains(&400), "{uids:?}");
}

// An import stopped between linking a batch's files and committing their
// rows (a crash, a kill, Ctrl-C) and then run again keeps the old server's
// UIDs: the reconciling scan indexes the batch's files as imported mail at
// their old UIDs, not as mail cove placed, so the rest of the import is not
// pushed below "mail cove put there" and renumbered (a resumed import of
// 1,000,000 messages gave its last 318,906 fresh UIDs that way).
#[test]
fn an_import_stopped_between_link_and_commit_resumes_at_the_old_uids() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    let acct = s.account(&user(&s, "a@x.org")).unwrap();
    let (mb, old) = old_server_mailbox(&acct, d.path());
    let mut cache = ImportCache::default();
    acct.import_messages(&mb.guid, &[old(10), old(20)], &mut cache)
        .unwrap();
    let mut crashing = ImportCache::default();
    crashing.crash_after_links = true;
    acct.import_messages(&mb.guid, &[old(30), old(40)], &mut crashing)
        .unwrap_err();
    // The next start's reconciling scan finds the two files without rows.
    assert_eq!(acct.scan().unwrap().messages_added, 2);
    let mut resumed = ImportCache::default();
    let batch = [old(30), old(40), old(50), old(60)];
    let report = acct
        .import_messages(&mb.guid, &batch, &mut resumed)
        .unwrap();
    assert_eq!(
        (report.present, report.added, report.renumbered),
        (2, 2, 0),
        "{report:?}"
    );
    let uids: Vec<(Uid, MessageGuid)> = acct
        .messages(&mb.guid)
        .unwrap()
        .iter()
        .map(|m| (m.uid, m.guid))
        .collect();
    let want: Vec<(Uid, MessageGuid)> = [10, 20, 30, 40, 50, 60]
        .into_iter()
        .map(|u| (u, old(u).guid))
        .collect();
    assert_eq!(uids, want);
    // Nothing is left listed as pending.
    acct.import_messages(&mb.guid, &batch, &mut resumed)
        .unwrap();
    assert_eq!(acct.scan().unwrap().messages_added, 0);
}
