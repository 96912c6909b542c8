//! "Does this mailbox exist?", asked by the MTA's lookups and by other
//! nodes (`GET /cluster/user?address=`).
//!
//! A node answers "no" only when it knows: its own directory lacks the
//! user *and* it has swapped user lists with its peer since it started or
//! since the link last came back. Before that the user may exist on the
//! peer and not yet here (added there a moment ago), so the answer is
//! "cannot tell yet", which the MTA turns into a retry, never a bounce.
//! A user of another pair is asked of that pair's serving node, which
//! applies the same rule; this node never forwards such a question again,
//! so a lookup costs at most one hop.

use std::sync::Arc;
use std::time::Duration;

use cove_store::{Address, Store};
use cove_sync::replicator::Replicator;

use super::{Cluster, Node, NodeState};

/// What a node can say about a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserStatus {
    Exists,
    /// Known not to exist on either node of its pair.
    Absent,
    /// Cannot tell now (why): try later.
    Unknown(String),
}

/// This node's directory, and whether it has its peer's users too.
pub struct Users {
    pub store: Arc<Store>,
    pub replicator: Option<Arc<Replicator>>,
    /// `[lmtp] recipient_delimiter`: `user+detail` is the user.
    pub delimiter: Option<char>,
}

impl Users {
    /// Whether the directory holds every user of the pair: no peer, or
    /// user lists swapped with every peer since the link came up.
    pub fn complete(&self) -> bool {
        users_complete(self.replicator.as_deref())
    }

    /// The answer from this node's directory alone.
    pub async fn local(&self, address: &Address) -> UserStatus {
        let store = self.store.clone();
        let (base, _) = address.without_detail(self.delimiter);
        let whole = address.clone();
        let found = tokio::task::spawn_blocking(move || {
            Ok::<_, cove_store::Error>(
                store.user(&whole)?.is_some() || store.user(&base)?.is_some(),
            )
        })
        .await;
        match found {
            Ok(Ok(true)) => UserStatus::Exists,
            Ok(Ok(false)) if self.complete() => UserStatus::Absent,
            Ok(Ok(false)) => {
                UserStatus::Unknown("user lists not yet exchanged with the replication peer".into())
            }
            Ok(Err(e)) => UserStatus::Unknown(format!("directory: {e}")),
            Err(e) => UserStatus::Unknown(format!("directory task: {e}")),
        }
    }
}

/// Whether an address unknown here is unknown on the whole pair: no
/// replication, or user lists swapped with every peer since the link came
/// up (LMTP and the `mailboxes` map share this rule).
pub fn users_complete(replicator: Option<&Replicator>) -> bool {
    replicator.is_none_or(|r| r.users_exchanged_since_link_up())
}

/// `GET /cluster/user?address=`: 200 `yes` or `no`, 503 when this node
/// cannot tell yet, 400 for an address that is not one.
pub async fn cluster_user_answer(users: &Users, address: &str) -> (u16, String) {
    let Ok(address) = Address::parse(address) else {
        return (400, "bad request: not an address\n".into());
    };
    match users.local(&address).await {
        UserStatus::Exists => (200, "yes\n".into()),
        UserStatus::Absent => (200, "no\n".into()),
        UserStatus::Unknown(why) => (503, format!("{why}\n")),
    }
}

/// Whether `address` exists anywhere in the cluster: here for this pair's
/// users, else by asking the other pair's nodes over HTTP: the preferred
/// one first, then the other (so a node that died since the last health
/// poll costs one refused connection, not a TEMP), skipping nodes known to
/// be down.
pub async fn mailbox(
    cluster: &Cluster,
    users: &Users,
    address: &Address,
    remote_timeout: Duration,
) -> UserStatus {
    if cluster.is_own(address) {
        return users.local(address).await;
    }
    let Some(pair) = cluster.pair_of(address) else {
        return UserStatus::Absent;
    };
    let first = pair.preferred(address);
    let mut why = Vec::new();
    for n in [first, 1 - first].into_iter().take(pair.nodes.len()) {
        let node = &pair.nodes[n];
        if cluster.state(&node.name) == NodeState::Down {
            continue;
        }
        match ask(node, address, remote_timeout).await {
            UserStatus::Unknown(w) => why.push(w),
            known => return known,
        }
    }
    if why.is_empty() {
        return UserStatus::Unknown(format!("no node of {} is up", pair.name));
    }
    UserStatus::Unknown(why.join("; "))
}

/// `GET /cluster/user` of one node.
async fn ask(node: &Node, address: &Address, timeout: Duration) -> UserStatus {
    let path = cove_sync::http::cluster_user_path(&address.to_string());
    let addr = node.http.to_string();
    let asked = cove_sync::http::http_request(&addr, "GET", &path);
    let name = &node.name;
    match tokio::time::timeout(timeout, asked).await {
        Ok(Ok((200, body))) if body.trim() == "yes" => UserStatus::Exists,
        Ok(Ok((200, body))) if body.trim() == "no" => UserStatus::Absent,
        Ok(Ok((status, body))) => UserStatus::Unknown(format!(
            "{name} answered {status} {:?}",
            body.trim().chars().take(200).collect::<String>()
        )),
        Ok(Err(e)) => UserStatus::Unknown(format!("{name}: {e}")),
        Err(_) => UserStatus::Unknown(format!("{name} did not answer in {timeout:?}")),
    }
}
