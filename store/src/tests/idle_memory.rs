//! What an open account holds while nobody uses it (issue 15): its index
//! connection is closed after a while and opened again on the next use,
//! and its change feed holds no ring while nobody listens.

use super::*;

fn deliver(s: &Store, acct: &Account, text: &str) -> Delivered {
    let blob = s.blobs().put(text.as_bytes()).unwrap();
    acct.deliver("INBOX", &blob, &NewMessage::default())
        .unwrap()
}

fn inbox_count(acct: &Account) -> usize {
    let inbox = acct
        .mailboxes()
        .unwrap()
        .into_iter()
        .find(|m| m.name == "INBOX")
        .expect("INBOX");
    acct.messages(&inbox.guid).unwrap().len()
}

#[test]
fn an_idle_index_is_closed_and_opened_again_at_the_next_use() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    let acct = s.account(&user(&s, "a@x.org")).unwrap();
    deliver(&s, &acct, "Subject: 1\r\n\r\none\r\n");
    assert!(
        acct.memory().unwrap().schema > 0,
        "open: the schema is parsed"
    );
    // Just used: kept.
    assert!(!acct.close_index_if_idle(Duration::from_secs(3600)));
    assert!(acct.close_index_if_idle(Duration::ZERO));
    let closed = acct.memory().unwrap();
    assert_eq!(
        (closed.page_cache, closed.schema, closed.statements),
        (0, 0, 0),
        "a closed index holds no SQLite memory"
    );
    // Nothing to close twice.
    assert!(!acct.close_index_if_idle(Duration::ZERO));
    let d2 = deliver(&s, &acct, "Subject: 2\r\n\r\ntwo\r\n");
    assert_eq!(d2.uid, 2, "the reopened index goes on from where it was");
    assert_eq!(inbox_count(&acct), 2);
    assert!(acct.memory().unwrap().schema > 0);
}

#[test]
fn an_index_lost_while_closed_is_rebuilt_not_served_empty() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    let acct = s.account(&user(&s, "a@x.org")).unwrap();
    deliver(&s, &acct, "Subject: 1\r\n\r\none\r\n");
    deliver(&s, &acct, "Subject: 2\r\n\r\ntwo\r\n");
    assert!(acct.close_index_if_idle(Duration::ZERO));
    for suffix in ["", "-wal", "-shm"] {
        let _ = fs::remove_file(acct.home().join(format!("index.sqlite{suffix}")));
    }
    // Opened again without the lost-index check, this would be a new,
    // empty index with no INBOX.
    assert_eq!(inbox_count(&acct), 2);
}

#[test]
fn the_store_closes_only_indexes_unused_for_the_given_time() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    let a = s.account(&user(&s, "a@x.org")).unwrap();
    let b = s.account(&user(&s, "b@x.org")).unwrap();
    assert_eq!(s.close_idle_indexes(Duration::from_secs(3600)), 0);
    assert_eq!(s.close_idle_indexes(Duration::ZERO), 2);
    assert_eq!(s.close_idle_indexes(Duration::ZERO), 0);
    deliver(&s, &a, "Subject: 1\r\n\r\none\r\n");
    assert_eq!(inbox_count(&b), 0);
}

#[test]
fn the_feed_holds_a_ring_only_while_someone_listens() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    let acct = s.account(&user(&s, "a@x.org")).unwrap();
    assert_eq!(acct.memory().unwrap().feed_ring, 0, "nobody listens yet");
    let mut feed = acct.subscribe();
    assert!(acct.memory().unwrap().feed_ring > 0);
    deliver(&s, &acct, "Subject: 1\r\n\r\none\r\n");
    assert!(matches!(
        feed.try_recv().unwrap().kind,
        ChangeKind::MessageAdded { uid: 1, .. }
    ));
    drop(feed);
    // The first change sent with nobody listening drops the ring.
    deliver(&s, &acct, "Subject: 2\r\n\r\ntwo\r\n");
    assert_eq!(acct.memory().unwrap().feed_ring, 0);
    let mut again = acct.subscribe();
    deliver(&s, &acct, "Subject: 3\r\n\r\nthree\r\n");
    assert!(matches!(
        again.try_recv().unwrap().kind,
        ChangeKind::MessageAdded { uid: 3, .. }
    ));
}
