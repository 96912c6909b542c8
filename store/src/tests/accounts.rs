//! The account table and account creation: a bounded cache that closes
//! the least recently used idle accounts, opening an existing account
//! without a write, and a new account made whole with one group flush.

use super::*;
use crate::account::{CREATING_DIR, default_identity};

fn deliver_one(s: &Store, u: &User, body: &[u8]) {
    let blob = s.blobs().put(body).unwrap();
    let target = DeliveryTarget {
        user: u.clone(),
        mailbox: None,
    };
    for r in s.deliver(&blob, &[target]) {
        r.unwrap();
    }
}

// An account closed and opened again (the open-account table closed it,
// or the server restarted) lists nothing when its Maildir did not change:
// the stamps of its last finished scan are kept in the index. Changed
// meanwhile by another program, it is scanned, and the new file found.
#[test]
fn reopening_an_unchanged_account_lists_nothing() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    let u = user(&s, "a@x.org");
    deliver_one(&s, &u, b"Subject: 1\r\n\r\none\r\n");
    let maildir = s.home_of(&u.address).join("Maildir");
    // Old enough for a scan's stamps to be trusted.
    backdate(
        &maildir_dirs(&maildir),
        SystemTime::now() - Duration::from_secs(60),
    );
    s.account(&u).unwrap().scan().unwrap();
    let inbox_count = |s: &Store| {
        let acct = s.account(&u).unwrap();
        let inbox = acct.mailbox("INBOX").unwrap().guid;
        acct.messages(&inbox).unwrap().len()
    };
    for _ in 0..2 {
        s.close_account(&u);
        let scans = s.maildir_scans();
        assert_eq!(inbox_count(&s), 1);
        assert_eq!(s.maildir_scans(), scans, "the reopen listed the Maildir");
    }

    s.close_account(&u);
    fs::write(
        maildir.join("new/1600000000.P1Q1.mx"),
        b"Subject: 2\r\n\r\ntwo\r\n",
    )
    .unwrap();
    let scans = s.maildir_scans();
    assert_eq!(inbox_count(&s), 2, "the file delivered while closed");
    assert_eq!(s.maildir_scans(), scans + 1);
}

// With room for 4, ten users delivered to round-robin keep at most 4
// accounts open, the most recently used ones; every delivery lands. (The
// old table closed every idle account once 1,024 were open, and had no
// limit to set.)
#[test]
fn open_accounts_are_bounded_and_the_least_recently_used_close_first() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    s.set_open_accounts(4);
    let users: Vec<User> = (0..10).map(|i| user(&s, &format!("u{i}@x.org"))).collect();
    for round in 0..3 {
        for u in &users {
            deliver_one(
                &s,
                u,
                format!("Subject: {round}\r\n\r\nround {round}\r\n").as_bytes(),
            );
            assert!(s.open_accounts() <= 4, "{} open", s.open_accounts());
        }
    }
    // u9 was used last, u6 first of the four most recent: both still open
    // (the same account comes back), u0 long closed.
    let recent = Arc::downgrade(&s.account(&users[9]).unwrap());
    let oldest = Arc::downgrade(&s.account(&users[6]).unwrap());
    let before = s.open_accounts();
    assert!(before <= 4);
    s.account(&users[8]).unwrap();
    s.account(&users[7]).unwrap();
    assert!(
        recent.upgrade().is_some(),
        "the most recently used was closed"
    );
    assert!(oldest.upgrade().is_some(), "a recently used one was closed");
    for u in &users {
        let acct = s.account(u).unwrap();
        let inbox = acct.mailbox("INBOX").unwrap();
        assert_eq!(inbox.uidnext, 4, "{}", u.address);
        assert!(s.open_accounts() <= 4);
    }
}

// An account somebody holds is never closed, however full the table.
#[test]
fn accounts_in_use_stay_open_past_the_limit() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    s.set_open_accounts(2);
    let users: Vec<User> = (0..5).map(|i| user(&s, &format!("h{i}@x.org"))).collect();
    let held: Vec<Arc<Account>> = users.iter().map(|u| s.account(u).unwrap()).collect();
    assert_eq!(s.open_accounts(), 5);
    for (u, a) in users.iter().zip(&held) {
        assert!(Arc::ptr_eq(&s.account(u).unwrap(), a));
    }
    drop(held);
    let other = user(&s, "other@x.org");
    s.account(&other).unwrap();
    assert!(s.open_accounts() <= 2, "{} open", s.open_accounts());
}

// Opening an account that exists on disk makes no folder and no flush:
// no mkdir (the old open made `Maildir/` and INBOX's `cur new tmp` again
// each time, failing with EEXIST) and no directory fsync.
#[test]
fn opening_an_existing_account_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    let u = user(&s, "a@x.org");
    deliver_one(&s, &u, b"Subject: x\r\n\r\nx\r\n");
    s.close_account(&u);
    let made = crate::maildir::FOLDERS_MADE.with(|n| n.get());
    let flushes = s.sync.flushes();
    let acct = s.account(&u).unwrap();
    assert_eq!(crate::maildir::FOLDERS_MADE.with(|n| n.get()), made);
    assert_eq!(s.sync.flushes(), flushes);
    assert_eq!(acct.mailboxes().unwrap().len(), DEFAULT_MAILBOXES.len());
}

// A new account costs one group flush (the old one: one per mailbox made,
// six), and gets INBOX and the default folders subscribed, with their
// special use and the identities every node gives them.
#[test]
fn a_new_account_is_made_with_one_group_flush() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    let before = s.sync.flushes();
    let u = user(&s, "new@x.org");
    assert_eq!(s.sync.flushes() - before, 1);
    check_default_mailboxes(&s, &u);
    let home = s.home_of(&u.address);
    assert!(
        fs::read_dir(home.join(CREATING_DIR))
            .unwrap()
            .next()
            .is_none(),
        "scratch left behind"
    );
}

fn check_default_mailboxes(s: &Store, u: &User) {
    let acct = s.account(u).unwrap();
    let email = u.address.to_string();
    let mailboxes = acct.mailboxes().unwrap();
    assert_eq!(mailboxes.len(), DEFAULT_MAILBOXES.len());
    for (name, special_use) in DEFAULT_MAILBOXES {
        let mb = mailboxes.iter().find(|m| m.name == name).unwrap();
        let id = default_identity(&email, name);
        assert_eq!(
            (mb.guid, mb.uidvalidity),
            (id.guid, id.uidvalidity),
            "{name}"
        );
        assert_eq!(mb.special_use.as_deref(), special_use, "{name}");
        assert!(mb.subscribed, "{name}");
        let dir = acct
            .home()
            .join("Maildir")
            .join(maildir::mailbox_dir_name(name));
        assert!(maildir::folder_complete(&dir), "{name}");
        assert_eq!(maildir::FolderIdentity::read(&dir), Some(id), "{name}");
    }
}

// The states a crash can leave a new account in (nothing is flushed until
// the account's one group flush, so any subset of what it made may be on
// disk) each end as a whole account at the next open: a staged Maildir
// that was never renamed into place (removed, the Maildir made again), the
// index lost after the Maildir landed (its folders adopted with their
// special use), the Maildir lost after the index rows landed (made again
// under the same rows).
#[test]
fn a_new_account_cut_short_is_made_whole_at_the_next_open() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    let u = user(&s, "cut@x.org");
    let home = s.home_of(&u.address);
    s.close_account(&u);

    // 1. Staged, never placed.
    let staged = home.join(CREATING_DIR).join("Maildir.1.0");
    fs::rename(home.join("Maildir"), &staged).unwrap();
    fs::remove_file(home.join("index.sqlite")).unwrap();
    check_default_mailboxes(&s, &u);
    assert!(!staged.exists(), "the staged copy stays");
    s.close_account(&u);

    // 2. The Maildir landed, the index did not.
    fs::remove_file(home.join("index.sqlite")).unwrap();
    let acct = s.account(&u).unwrap();
    let mut names: Vec<(String, Option<String>, bool)> = acct
        .mailboxes()
        .unwrap()
        .into_iter()
        .map(|m| (m.name, m.special_use, m.subscribed))
        .collect();
    names.sort();
    let mut want: Vec<(String, Option<String>, bool)> = DEFAULT_MAILBOXES
        .iter()
        .map(|(n, su)| (n.to_string(), su.map(str::to_string), true))
        .collect();
    want.sort();
    assert_eq!(names, want);
    drop(acct);
    s.close_account(&u);

    // 3. The index rows landed, the Maildir did not.
    let rows: Vec<MailboxInfo> = s.account(&u).unwrap().mailboxes().unwrap();
    s.close_account(&u);
    fs::remove_dir_all(home.join("Maildir")).unwrap();
    let acct = s.account(&u).unwrap();
    let again = acct.mailboxes().unwrap();
    assert_eq!(
        again
            .iter()
            .map(|m| (m.guid, m.uidvalidity))
            .collect::<Vec<_>>(),
        rows.iter()
            .map(|m| (m.guid, m.uidvalidity))
            .collect::<Vec<_>>()
    );
    for m in &again {
        let dir = home
            .join("Maildir")
            .join(maildir::mailbox_dir_name(&m.name));
        assert!(maildir::folder_complete(&dir), "{}", m.name);
    }
    drop(acct);
    deliver_one(&s, &u, b"Subject: after\r\n\r\nafter\r\n");
}

// In fsync mode a new account is made the same way (every file and
// directory fsynced on its own, no group flush).
#[test]
fn a_new_account_in_fsync_mode() {
    let d = tempfile::tempdir().unwrap();
    let s = store_with(d.path(), Durability::Fsync);
    let u = user(&s, "f@x.org");
    check_default_mailboxes(&s, &u);
    assert_eq!(s.sync.flushes(), 0);
}

// The table never keeps more accounts open than half of the descriptor
// limit holds (3 each: index, WAL, shared memory): 16,384 open accounts
// with `ulimit -n` 20,000 made every new blob fail with EMFILE.
#[test]
fn open_accounts_stay_within_the_descriptor_limit() {
    assert_eq!(accounts_within_fds(Some(20_000)), 3_333);
    assert_eq!(accounts_within_fds(Some(256)), 42);
    assert_eq!(accounts_within_fds(Some(1)), 1);
    assert_eq!(accounts_within_fds(None), usize::MAX);
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    let within = accounts_within_fds(nofile_limit());
    assert!(s.open_accounts_limit.load(Ordering::Relaxed) <= within);
    assert_eq!(s.set_open_accounts(usize::MAX), within);
    assert_eq!(s.set_open_accounts(2), 2.min(within));
}
