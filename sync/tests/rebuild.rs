//! A node whose index is rebuilt (`cove index rebuild`: GUIDs kept, UIDs
//! lost, UIDVALIDITY renewed, a new index epoch) gets its peer's UIDs,
//! UIDVALIDITY and keywords back, and keeps what it received meanwhile.

mod common;

use std::collections::BTreeSet;

use common::{Node, assert_converged, sync, sync_until_quiet};
use cove_store::Flags;

/// What `cove index rebuild` does to an account's index: move it aside,
/// scan the Maildir into a new one.
fn rebuild(n: &Node) {
    let home = n.account.home().to_path_buf();
    for suffix in ["", "-wal", "-shm"] {
        let from = home.join(format!("index.sqlite{suffix}"));
        if from.exists() {
            std::fs::rename(&from, home.join(format!("old-index.sqlite{suffix}")))
                .expect("move the index aside");
        }
    }
    n.account.scan().expect("rescan into a new index");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_index_takes_its_peers_uids_back() {
    let nodes = [Node::new("node-a"), Node::new("node-b")];
    let [a, b] = &nodes;
    let mut all = BTreeSet::new();
    for i in 0..4 {
        all.insert(
            a.deliver("INBOX", &format!("Subject: m{i}\r\n\r\nbody {i}\r\n"))
                .guid,
        );
    }
    let kw = a.append("INBOX", "Subject: kw\r\n\r\nx\r\n", Flags::SEEN, &["$Work"]);
    all.insert(kw.guid);
    all.insert(b.deliver("Archive", "Subject: filed\r\n\r\ny\r\n").guid);
    sync(a, b).await;
    sync_until_quiet(&nodes, 4).await;
    assert_converged(&nodes, &all);
    let inbox = a.mailbox("INBOX");
    let before: Vec<(u32, cove_store::MessageGuid)> = b
        .messages("INBOX")
        .iter()
        .map(|m| (m.uid, m.guid))
        .collect();

    rebuild(b);
    let rebuilt = b.mailbox("INBOX");
    assert_ne!(
        rebuilt.uidvalidity, inbox.uidvalidity,
        "a rebuild renews UIDVALIDITY"
    );
    assert!(
        b.messages("INBOX").iter().all(|m| m.keywords.is_empty()),
        "keywords live only in the index"
    );
    // Mail keeps arriving on both while the rebuilt node is not synced.
    let late_b = b.deliver("INBOX", "Subject: late-b\r\n\r\n");
    let late_a = a.deliver("INBOX", "Subject: late-a\r\n\r\n");
    all.extend([late_a.guid, late_b.guid]);

    sync(b, a).await;
    sync_until_quiet(&nodes, 4).await;
    assert_converged(&nodes, &all);
    let healed = b.mailbox("INBOX");
    assert_eq!(
        healed.uidvalidity, inbox.uidvalidity,
        "the kept UIDVALIDITY stands"
    );
    let after: Vec<(u32, cove_store::MessageGuid)> = b
        .messages("INBOX")
        .iter()
        .map(|m| (m.uid, m.guid))
        .collect();
    for pair in &before {
        assert!(
            after.contains(pair),
            "UID {} names the same message again",
            pair.0
        );
    }
    let m = b
        .messages("INBOX")
        .into_iter()
        .find(|m| m.guid == kw.guid)
        .expect("the keyword message");
    assert_eq!(
        m.keywords,
        vec!["$Work".to_string()],
        "keywords come back from the peer"
    );
    assert!(m.flags.contains(Flags::SEEN));
    // The other mailboxes too.
    assert_eq!(
        b.mailbox("Archive").uidvalidity,
        a.mailbox("Archive").uidvalidity
    );
}
