//! Two stores in one process, synced over an in-memory link: the conflict
//! rules of DESIGN.md ("Replication") one scenario at a time, each ending in
//! the checks of invariants 2 and 3.

mod common;

use std::collections::BTreeSet;

use common::{Node, assert_converged, describe, sync, sync_until_quiet};
use cove_store::{FlagOp, Flags, MessageGuid};

fn pair() -> [Node; 2] {
    [Node::new("node-a"), Node::new("node-b")]
}

fn set(guids: impl IntoIterator<Item = MessageGuid>) -> BTreeSet<MessageGuid> {
    guids.into_iter().collect()
}

fn add_flags(n: &Node, mailbox: &str, uid: u32, flags: Flags, keywords: &[&str]) {
    let mb = n.mailbox(mailbox);
    n.account
        .store_flags(
            &mb.guid,
            &[uid],
            FlagOp::Add(flags, keywords.iter().map(|k| k.to_string()).collect()),
            None,
        )
        .expect("store flags");
    n.observe();
}

fn remove_flags(n: &Node, mailbox: &str, uid: u32, flags: Flags, keywords: &[&str]) {
    let mb = n.mailbox(mailbox);
    n.account
        .store_flags(
            &mb.guid,
            &[uid],
            FlagOp::Remove(flags, keywords.iter().map(|k| k.to_string()).collect()),
            None,
        )
        .expect("store flags");
    n.observe();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_during_a_partition_converge_without_loss_or_duplicate() {
    let nodes = pair();
    let [a, b] = &nodes;
    // A common past: one message both nodes know at UID 1.
    let common = a.deliver("INBOX", "Subject: common\r\n\r\nboth\r\n");
    sync(a, b).await;
    assert_eq!(b.messages("INBOX").len(), 1);

    // Partition: A takes UIDs 2..=4, B takes 2..=3 for other messages.
    let on_a: Vec<_> = (0..3)
        .map(|i| a.deliver("INBOX", &format!("Subject: a{i}\r\n\r\nfrom a\r\n")))
        .collect();
    let on_b: Vec<_> = (0..2)
        .map(|i| b.deliver("INBOX", &format!("Subject: b{i}\r\n\r\nfrom b\r\n")))
        .collect();
    assert_eq!(on_a.iter().map(|d| d.uid).collect::<Vec<_>>(), [2, 3, 4]);
    assert_eq!(on_b.iter().map(|d| d.uid).collect::<Vec<_>>(), [2, 3]);
    let all = set(std::iter::once(common.guid)
        .chain(on_a.iter().map(|d| d.guid))
        .chain(on_b.iter().map(|d| d.guid)));

    sync(a, b).await;
    sync_until_quiet(&nodes, 4).await;
    let state = assert_converged(&nodes, &all);
    let inbox = &state.mailboxes[&a.mailbox("INBOX").guid];
    assert_eq!(inbox.messages.len(), 6, "nothing lost, nothing doubled");
    assert_eq!(inbox.messages[&1].0, common.guid, "the common UID kept");
    assert_eq!(
        inbox.messages[&4].0, on_a[2].guid,
        "A's UID 4 collided with nothing"
    );
    // UIDs 2 and 3 were given to two messages each: all four renumbered
    // above both UIDNEXTs (5 and 4), and 2 and 3 are never used again.
    assert!(!inbox.messages.contains_key(&2) && !inbox.messages.contains_key(&3));
    let fresh: BTreeSet<u32> = inbox.messages.keys().copied().filter(|u| *u >= 5).collect();
    assert_eq!(fresh, (5..=8).collect());

    // A second partition on top of the first.
    let more_a = a.deliver("INBOX", "Subject: a-late\r\n\r\n");
    let more_b = b.deliver("INBOX", "Subject: b-late\r\n\r\n");
    assert_eq!((more_a.uid, more_b.uid), (9, 9));
    sync(b, a).await;
    sync_until_quiet(&nodes, 4).await;
    let all = set(all.into_iter().chain([more_a.guid, more_b.guid]));
    let state = assert_converged(&nodes, &all);
    assert_eq!(state.mailboxes[&a.mailbox("INBOX").guid].messages.len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_merge_flag_by_flag() {
    let nodes = pair();
    let [a, b] = &nodes;
    let m = a.deliver("INBOX", "Subject: flags\r\n\r\n");
    let pre = a.append(
        "INBOX",
        "Subject: pre-flagged\r\n\r\n",
        Flags::SEEN,
        &["$Label1"],
    );
    sync(a, b).await;

    // \Seen on A, \Flagged on B, for the same message.
    add_flags(a, "INBOX", m.uid, Flags::SEEN, &[]);
    add_flags(b, "INBOX", m.uid, Flags::FLAGGED, &["$Work"]);
    sync(a, b).await;
    sync_until_quiet(&nodes, 4).await;
    let state = assert_converged(&nodes, &set([m.guid, pre.guid]));
    let inbox = &state.mailboxes[&a.mailbox("INBOX").guid];
    assert_eq!(
        inbox.messages[&m.uid].1,
        (Flags::SEEN | Flags::FLAGGED).bits()
    );
    assert_eq!(inbox.messages[&m.uid].2, ["$Work"]);

    // Removed on one node, untouched on the other: removed.
    remove_flags(b, "INBOX", m.uid, Flags::SEEN, &[]);
    // A flag given at APPEND (never changed since), removed on A.
    remove_flags(a, "INBOX", pre.uid, Flags::SEEN, &["$Label1"]);
    sync(b, a).await;
    sync_until_quiet(&nodes, 4).await;
    let state = assert_converged(&nodes, &set([m.guid, pre.guid]));
    let inbox = &state.mailboxes[&a.mailbox("INBOX").guid];
    assert_eq!(inbox.messages[&m.uid].1, Flags::FLAGGED.bits());
    assert_eq!(inbox.messages[&pre.uid].1, 0);
    assert!(inbox.messages[&pre.uid].2.is_empty());

    // The same flag set on one node and cleared on the other: the later
    // change wins. \Answered: cleared on B, then set on A. \Draft: set on
    // A, then cleared on B.
    add_flags(b, "INBOX", m.uid, Flags::ANSWERED, &[]);
    remove_flags(b, "INBOX", m.uid, Flags::ANSWERED, &[]);
    add_flags(a, "INBOX", m.uid, Flags::DRAFT, &[]);
    std::thread::sleep(std::time::Duration::from_millis(5));
    add_flags(a, "INBOX", m.uid, Flags::ANSWERED, &[]);
    add_flags(b, "INBOX", m.uid, Flags::DRAFT, &[]);
    remove_flags(b, "INBOX", m.uid, Flags::DRAFT, &[]);
    sync(a, b).await;
    sync_until_quiet(&nodes, 4).await;
    let state = assert_converged(&nodes, &set([m.guid, pre.guid]));
    let inbox = &state.mailboxes[&a.mailbox("INBOX").guid];
    assert_eq!(
        inbox.messages[&m.uid].1,
        (Flags::FLAGGED | Flags::ANSWERED).bits()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_on_one_node_keeps_the_flag_set_on_the_other() {
    let nodes = pair();
    let [a, b] = &nodes;
    let m = a.deliver("INBOX", "Subject: move me\r\n\r\n");
    let stay = a.deliver("INBOX", "Subject: stay\r\n\r\n");
    sync(a, b).await;

    let (inbox, archive) = (a.mailbox("INBOX"), a.mailbox("Archive"));
    let moved = a
        .account
        .move_messages(&inbox.guid, &[m.uid], &archive.guid)
        .expect("move");
    a.observe();
    assert_eq!(moved.pairs.len(), 1);
    add_flags(b, "INBOX", m.uid, Flags::FLAGGED, &[]);

    sync(b, a).await;
    sync_until_quiet(&nodes, 4).await;
    let state = assert_converged(&nodes, &set([m.guid, stay.guid]));
    for n in &nodes {
        let (mailbox, row) = n.find(&m.guid).expect("the moved message exists");
        assert_eq!(mailbox, "Archive", "{}", n.name);
        assert_eq!(row.flags, Flags::FLAGGED, "{}", n.name);
        assert_eq!(
            row.uid, moved.pairs[0].1,
            "{}: the UID the move gave",
            n.name
        );
    }
    assert_eq!(state.mailboxes[&inbox.guid].messages.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expunge_wins_over_a_flag_change() {
    let nodes = pair();
    let [a, b] = &nodes;
    let m = a.deliver("INBOX", "Subject: doomed\r\n\r\n");
    let keep = a.deliver("INBOX", "Subject: kept\r\n\r\n");
    sync(a, b).await;

    let inbox = a.mailbox("INBOX");
    assert_eq!(
        a.account.expunge(&inbox.guid, &[m.uid]).expect("expunge"),
        [m.uid]
    );
    a.observe();
    std::thread::sleep(std::time::Duration::from_millis(5));
    add_flags(b, "INBOX", m.uid, Flags::SEEN, &["$Later"]);

    sync(b, a).await;
    sync_until_quiet(&nodes, 4).await;
    assert_converged(&nodes, &set([keep.guid]));
    for n in &nodes {
        assert!(
            n.find(&m.guid).is_none(),
            "{}: expunged message back",
            n.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailbox_create_rename_delete_propagate() {
    let nodes = pair();
    let [a, b] = &nodes;
    let created = a.account.create_mailbox("Projects", None).expect("create");
    a.account
        .rename_mailbox("Projects", "Work")
        .expect("rename");
    sync(a, b).await;
    assert_eq!(b.mailbox("Work").guid, created.guid);

    b.account.rename_mailbox("Work", "Jobs").expect("rename");
    sync(a, b).await;
    assert_eq!(a.mailbox("Jobs").guid, created.guid);
    assert!(a.account.mailbox("Work").is_err());

    let old = b.deliver("Jobs", "Subject: seen by both\r\n\r\n");
    sync(b, a).await;
    a.account.delete_mailbox("Jobs").expect("delete");
    sync(a, b).await;
    sync_until_quiet(&nodes, 4).await;
    let state = assert_converged(&nodes, &BTreeSet::new());
    assert!(
        !state.mailboxes.contains_key(&created.guid),
        "deleted on both"
    );
    assert!(b.find(&old.guid).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_never_destroys_mail_that_arrived_after_it() {
    let nodes = pair();
    let [a, b] = &nodes;
    a.account.create_mailbox("Lists", None).expect("create");
    let old = a.deliver("Lists", "Subject: old\r\n\r\n");
    sync(a, b).await;

    a.account.delete_mailbox("Lists").expect("delete");
    a.observe();
    let new = b.deliver("Lists", "Subject: arrived meanwhile\r\n\r\n");

    sync(a, b).await;
    sync_until_quiet(&nodes, 4).await;
    let state = assert_converged(&nodes, &set([new.guid]));
    for n in &nodes {
        let (mailbox, _) = n.find(&new.guid).expect("the new message is kept");
        assert_eq!(mailbox, "Lists", "{}", n.name);
        assert!(n.find(&old.guid).is_none(), "{}: old message back", n.name);
    }
    assert_eq!(state.mailboxes.len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_conflicts_end_in_one_name_each() {
    let nodes = pair();
    let [a, b] = &nodes;
    let shared = a.account.create_mailbox("Shared", None).expect("create");
    sync(a, b).await;

    // Renamed on both: the later rename wins.
    a.account.rename_mailbox("Shared", "FromA").expect("rename");
    std::thread::sleep(std::time::Duration::from_millis(5));
    b.account.rename_mailbox("Shared", "FromB").expect("rename");
    // Two different mailboxes that end with one name, one of them by a
    // rename: they stay two, and one takes a suffix.
    let xa = a.account.create_mailbox("Twin0", None).expect("create");
    a.account.rename_mailbox("Twin0", "Twin").expect("rename");
    let xb = b.account.create_mailbox("Twin", None).expect("create");
    let ma = a.deliver("Twin", "Subject: twin a\r\n\r\n");
    let mb = b.deliver("Twin", "Subject: twin b\r\n\r\n");

    sync(a, b).await;
    sync_until_quiet(&nodes, 4).await;
    let state = assert_converged(&nodes, &set([ma.guid, mb.guid]));
    assert_eq!(state.mailboxes[&shared.guid].name, "FromB");
    let names: BTreeSet<&str> = [xa.guid, xb.guid]
        .iter()
        .map(|g| state.mailboxes[g].name.as_str())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains("Twin"), "{names:?}");
}

/// A filter on each node made `Spam` while the nodes were apart and filed
/// mail into it: one `Spam` on both nodes afterwards (the lower GUID's),
/// with all the mail; the kept mailbox's messages keep their UIDs, the
/// others take fresh ones above both nodes' UIDNEXT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_name_made_on_both_nodes_apart_is_one_mailbox() {
    let nodes = pair();
    let [a, b] = &nodes;
    a.deliver("INBOX", "Subject: before\r\n\r\n");
    sync(a, b).await;
    let sa = a.account.create_mailbox("Spam", None).expect("create");
    let sb = b.account.create_mailbox("Spam", None).expect("create");
    let on_a: Vec<_> = (0..3)
        .map(|i| a.deliver("Spam", &format!("Subject: a{i}\r\n\r\n")))
        .collect();
    let on_b: Vec<_> = (0..2)
        .map(|i| b.deliver("Spam", &format!("Subject: b{i}\r\n\r\n")))
        .collect();
    let all = set(on_a.iter().chain(on_b.iter()).map(|d| d.guid));

    sync(a, b).await;
    sync_until_quiet(&nodes, 4).await;
    let state = assert_converged(&nodes, &all);
    let (kept, kept_msgs, given_msgs) = if sa.guid < sb.guid {
        (sa.guid, &on_a, &on_b)
    } else {
        (sb.guid, &on_b, &on_a)
    };
    let spam: Vec<_> = state
        .mailboxes
        .iter()
        .filter(|(_, v)| v.name.starts_with("Spam"))
        .collect();
    assert_eq!(spam.len(), 1, "one Spam: {}", describe(&state));
    assert_eq!(*spam[0].0, kept, "the lower GUID is kept");
    let view = spam[0].1;
    assert_eq!(view.messages.len(), 5, "nothing lost, nothing doubled");
    let uid_of = |g| {
        view.messages
            .iter()
            .find(|(_, m)| m.0 == g)
            .map(|(u, _)| *u)
    };
    for d in kept_msgs {
        assert_eq!(uid_of(d.guid), Some(d.uid), "the kept mailbox's UIDs stand");
    }
    let top = kept_msgs.len() as u32;
    for d in given_msgs {
        assert!(
            uid_of(d.guid).is_some_and(|u| u > top),
            "fresh UIDs above the kept ones"
        );
    }
}

/// An expunge in a mailbox that merges into the other node's still
/// expunges the message there: the merge voids the mailbox's UIDs, not
/// what its tombstones say about their messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expunge_in_a_mailbox_that_merges_away_still_expunges() {
    let nodes = pair();
    let [a, b] = &nodes;
    let m = a.deliver("INBOX", "Subject: spam\r\n\r\n");
    sync(a, b).await;
    // Apart: each node's filter makes Spam; on the node whose Spam gives
    // way (the higher GUID), the user files m there and deletes it.
    let sa = a.account.create_mailbox("Spam", None).expect("create");
    let sb = b.account.create_mailbox("Spam", None).expect("create");
    let (x, y, spam) = if sa.guid > sb.guid {
        (a, b, sa)
    } else {
        (b, a, sb)
    };
    let keep = y.deliver("Spam", "Subject: kept\r\n\r\n");
    let inbox = x.mailbox("INBOX");
    let uid = x.find(&m.guid).expect("m on both").1.uid;
    x.account
        .move_messages(&inbox.guid, &[uid], &spam.guid)
        .expect("move");
    let filed = x.messages("Spam");
    x.account
        .expunge(&spam.guid, &[filed[0].uid])
        .expect("expunge");
    x.observe();
    sync(a, b).await;
    sync_until_quiet(&nodes, 4).await;
    assert_converged(&nodes, &set([keep.guid]));
    for n in &nodes {
        assert!(
            n.find(&m.guid).is_none(),
            "{}: the deleted message is back",
            n.name
        );
    }
}

/// As above, but the other node's filter filed the same message into its
/// own Spam (after the expunger filed it, before the expunge): the merge
/// must not forget the expunge (it dropped the merged mailbox's
/// tombstones, so the expunger took the message back from the other node,
/// which had applied the expunge: one node with it, one without, and
/// neither sent anything more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expunge_in_a_mailbox_that_merges_away_beats_an_earlier_filing_elsewhere() {
    let nodes = pair();
    let [a, b] = &nodes;
    let m = a.deliver("INBOX", "Subject: spam\r\n\r\n");
    sync(a, b).await;
    let sa = a.account.create_mailbox("Spam", None).expect("create");
    let sb = b.account.create_mailbox("Spam", None).expect("create");
    let ((x, x_spam), (y, y_spam)) = if sa.guid > sb.guid {
        ((a, sa), (b, sb))
    } else {
        ((b, sb), (a, sa))
    };
    let file = |n: &Node, spam: &cove_store::MailboxInfo| {
        let inbox = n.mailbox("INBOX");
        let uid = n.find(&m.guid).expect("m is here").1.uid;
        n.account
            .move_messages(&inbox.guid, &[uid], &spam.guid)
            .expect("move");
        n.observe();
        // Stamps are milliseconds: the next change is later.
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    file(x, &x_spam);
    file(y, &y_spam);
    let uid = x.find(&m.guid).expect("m filed").1.uid;
    x.account.expunge(&x_spam.guid, &[uid]).expect("expunge");
    x.observe();
    sync(a, b).await;
    sync_until_quiet(&nodes, 4).await;
    assert_converged(&nodes, &BTreeSet::new());
    for n in &nodes {
        assert!(
            n.find(&m.guid).is_none(),
            "{}: the message expunged last is back",
            n.name
        );
    }
}

/// A user expunges a message in the mailbox that merges away while the
/// session that merges it runs (after this node took its delta, before it
/// applied the peer's): the peer, which takes the message into the kept
/// mailbox at a fresh UID, must still learn of the expunge. The merge
/// dropped that tombstone with the mailbox's old UIDs before it travelled,
/// and the peer kept the message for good (found by the randomized
/// two-process run: one node with it, one without, marks agreeing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expunge_made_while_its_mailbox_merges_away_reaches_the_peer() {
    expunge_while_merging_away(false).await;
}

/// As above, but the peer's filter filed the message into its own Spam
/// too, later: the peer holds it in the kept mailbox at its own UID (no
/// fresh UID for it), and must still learn of the expunge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expunge_made_while_its_mailbox_merges_away_reaches_a_peer_that_filed_it_too() {
    expunge_while_merging_away(true).await;
}

async fn expunge_while_merging_away(peer_files_too: bool) {
    let nodes = pair();
    let [a, b] = &nodes;
    let m = a.deliver("INBOX", "Subject: spam\r\n\r\n");
    sync(a, b).await;
    let sa = a.account.create_mailbox("Spam", None).expect("create");
    let sb = b.account.create_mailbox("Spam", None).expect("create");
    let ((x, x_spam), (y, y_spam)) = if sa.guid > sb.guid {
        ((a, sa), (b, sb))
    } else {
        ((b, sb), (a, sa))
    };
    y.deliver("Spam", "Subject: kept\r\n\r\n");
    let file = |n: &Node, spam: &cove_store::MailboxInfo| {
        let inbox = n.mailbox("INBOX");
        let uid = n.find(&m.guid).expect("m is here").1.uid;
        n.account
            .move_messages(&inbox.guid, &[uid], &spam.guid)
            .expect("move");
        n.observe();
        // Stamps are milliseconds: the next change is later.
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    file(x, &x_spam);
    if peer_files_too {
        file(y, &y_spam);
    }
    let filed = x.find(&m.guid).expect("m filed").1.uid;
    // x connects: past its Open, it is writing the delta it took.
    let out = common::sync_during(x, y, None, 300, || {
        x.account.expunge(&x_spam.guid, &[filed]).expect("expunge");
    })
    .await;
    assert!(out.client.is_ok() && out.server.is_ok(), "{out:?}");
    sync_until_quiet(&nodes, 4).await;
    let state = assert_converged(&nodes, &BTreeSet::new());
    for n in &nodes {
        assert!(
            n.find(&m.guid).is_none(),
            "{}: the expunged message is back:\n{}",
            n.name,
            describe(&state)
        );
    }
}
