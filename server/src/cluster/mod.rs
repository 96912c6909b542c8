//! Routing over a cluster of storage pairs (DESIGN.md "Routing, failover
//! and scale beyond one pair").
//!
//! The problem: users are sharded over pairs of nodes; each pair replicates
//! its users both ways. The MTA in front (Postfix, Exim) and the IMAP/POP3
//! proxy (nginx) must send each user to a node of the right pair, and
//! within the pair to the same node while both are up, and to the other the
//! moment one dies or drains, without an operator editing anything.
//!
//! What this module keeps:
//!
//! - The map is the same file on every node (`[cluster]`, [`ClusterMap`]),
//!   so every node answers the same question the same way: the pair comes
//!   from the domain (exact name, then the longest `*.` wildcard, then the
//!   default pair); the preferred node within the pair from a blake3 hash
//!   of the lowercase address, so the users split evenly and one node
//!   writes for a user at a time (UID conflicts between the two stay rare;
//!   when a guess is wrong, replication renumbers, it never loses mail).
//! - [`Cluster::serving`] answers the preferred node unless it is down or
//!   draining, then the other, then nobody (the caller says "try later",
//!   never "no such user").
//! - Node state is local knowledge only: a health task polls every other
//!   node's `GET /health` each `health_interval_ms` (200 up, 503 draining,
//!   anything else or no answer in `health_timeout_ms` down), and this
//!   node's own drain flag ([`Cluster::set_draining`]) says whether it takes
//!   new work. Nothing here needs agreement between nodes: two nodes that
//!   briefly disagree about a third send a user's mail to both nodes of
//!   the pair, which replication merges.
//! - [`Cluster::reload`] swaps the whole map at once (SIGHUP); a lookup
//!   sees the old map or the new one, never a mix.
//!
//! Alternatives rejected: a consensus system (etcd, raft) to agree on who
//! is up: it adds a third failure domain to every pair and buys nothing a
//! replicated mailbox needs; consistent hashing over all nodes: moving one
//! user would move mail between pairs, which replication does not do.
//!
//! Where a user lives is behind [`Locator`]; the file map's domain list is
//! its first implementation. Users and the map may later come from the
//! operator's SQL or LDAP directory (a user placed on a pair one by one)
//! by implementing it there, with a cache in front, without changing the
//! callers.

mod health;
pub mod lookup;
mod map;
pub mod socketmap;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use cove_store::Address;

use crate::config::ClusterConfig;
pub use map::{ClusterMap, Locator, Node, Pair, Proto};

/// What this node knows of another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Answered `/health` with 200.
    Up,
    /// Answered 503: finishing its sessions, takes no new work.
    Draining,
    /// No answer, or not asked yet.
    Down,
}

/// The cluster as this node sees it: the map and each node's state.
pub struct Cluster {
    map: RwLock<Arc<ClusterMap>>,
    states: Mutex<HashMap<String, NodeState>>,
    draining: Arc<AtomicBool>,
    health_interval: Mutex<Duration>,
    health_timeout: Mutex<Duration>,
}

/// Where a user goes now, or why nowhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The node's name and address.
    Node(String, SocketAddr),
    /// No pair holds the user's domain.
    NotHeld,
    /// The pair holds the user, but none of its nodes is up (with the pair's
    /// name).
    NoneUp(String),
}

impl Cluster {
    /// Build from a validated `[cluster]` for the node named `hostname`;
    /// `draining` is the node's drain flag (`cove node drain`, `/health`).
    pub fn new(
        config: &ClusterConfig,
        hostname: &str,
        draining: Arc<AtomicBool>,
    ) -> anyhow::Result<Arc<Cluster>> {
        let map = ClusterMap::from_config(config, hostname)?;
        Ok(Arc::new(Cluster {
            map: RwLock::new(Arc::new(map)),
            states: Mutex::new(HashMap::new()),
            draining,
            health_interval: Mutex::new(Duration::from_millis(config.health_interval_ms)),
            health_timeout: Mutex::new(Duration::from_millis(config.health_timeout_ms)),
        }))
    }

    /// Swap in a new map (SIGHUP). On error the old map stays. Node states
    /// carry over by name; nodes new to the map start down until polled.
    pub fn reload(&self, config: &ClusterConfig) -> anyhow::Result<()> {
        let own = self.map().own_node.clone();
        let map = ClusterMap::from_config(config, &own)?;
        {
            let mut states = lock(&self.states);
            states.retain(|name, _| map.other_nodes().any(|n| &n.name == name));
        }
        *lock(&self.health_interval) = Duration::from_millis(config.health_interval_ms);
        *lock(&self.health_timeout) = Duration::from_millis(config.health_timeout_ms);
        let pairs = map.pairs.len();
        *match self.map.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        } = Arc::new(map);
        tracing::info!(pairs, "cluster map reloaded");
        Ok(())
    }

    /// The map in force now.
    pub fn map(&self) -> Arc<ClusterMap> {
        match self.map.read() {
            Ok(m) => m.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Stop (or resume) taking new work: `/health` answers 503 and other
    /// nodes route this node's users to its peer.
    pub fn set_draining(&self, draining: bool) {
        let was = self.draining.swap(draining, Ordering::SeqCst);
        if was != draining {
            tracing::info!(draining, "cluster: this node's drain flag changed");
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The state of the node named `name` (this node: by its drain flag).
    pub fn state(&self, name: &str) -> NodeState {
        if name == self.map().own_node {
            return if self.is_draining() {
                NodeState::Draining
            } else {
                NodeState::Up
            };
        }
        lock(&self.states)
            .get(name)
            .copied()
            .unwrap_or(NodeState::Down)
    }

    /// Record what the health task learnt; logs a change.
    fn set_state(&self, name: &str, state: NodeState) {
        let old = lock(&self.states).insert(name.to_string(), state);
        if old != Some(state) {
            tracing::info!(node = %name, state = ?state, was = ?old, "cluster: node state");
        }
    }

    /// The pair holding `address`, if any.
    pub fn pair_of(&self, address: &Address) -> Option<Pair> {
        let map = self.map();
        map.pair_index(address).map(|i| map.pairs[i].clone())
    }

    /// Whether this node's pair holds `address`.
    pub fn is_own(&self, address: &Address) -> bool {
        let map = self.map();
        map.pair_index(address) == Some(map.own_pair)
    }

    /// Whether some pair holds `domain`.
    pub fn holds_domain(&self, domain: &str) -> bool {
        self.map().holds_domain(domain)
    }

    /// The node that should serve `address` over `proto` now and its
    /// address: the preferred node unless it is down or draining, then the
    /// other. `None` when no pair holds the user or no node of its pair is
    /// up.
    pub fn serving(&self, address: &Address, proto: Proto) -> Option<(String, SocketAddr)> {
        self.serving_without(address, proto, None)
    }

    /// [`Cluster::serving`], counting the node named `unreachable` as down
    /// whatever this node's health checks last saw (another node just
    /// failed to reach it).
    pub fn serving_without(
        &self,
        address: &Address,
        proto: Proto,
        unreachable: Option<&str>,
    ) -> Option<(String, SocketAddr)> {
        match self.route_without(address, proto, unreachable) {
            Route::Node(name, addr) => Some((name, addr)),
            Route::NotHeld | Route::NoneUp(_) => None,
        }
    }

    /// [`Cluster::serving`] with the reason when nobody serves.
    pub fn route(&self, address: &Address, proto: Proto) -> Route {
        self.route_without(address, proto, None)
    }

    fn route_without(&self, address: &Address, proto: Proto, unreachable: Option<&str>) -> Route {
        let map = self.map();
        let Some(i) = map.pair_index(address) else {
            return Route::NotHeld;
        };
        let pair = &map.pairs[i];
        let first = pair.preferred(address);
        let order = [first, 1 - first];
        for &n in order.iter().take(pair.nodes.len()) {
            let node = &pair.nodes[n];
            if let Some(addr) = node.addr(proto)
                && self.state(&node.name) == NodeState::Up
                && unreachable != Some(node.name.as_str())
            {
                return Route::Node(node.name.clone(), addr);
            }
        }
        Route::NoneUp(pair.name.clone())
    }
}

impl Cluster {
    /// The other node of `address`'s pair, when `chosen` serves it and the
    /// other is not known to be down: where an MTA that can try a list
    /// (Postfix 3.5 and later) goes when `chosen` refuses, before this node
    /// has noticed it died or the MTA has asked again.
    pub fn standby(&self, address: &Address, proto: Proto, chosen: &str) -> Option<SocketAddr> {
        let map = self.map();
        let pair = &map.pairs[map.pair_index(address)?];
        pair.nodes
            .iter()
            .filter(|n| n.name != chosen && self.state(&n.name) != NodeState::Down)
            .find_map(|n| n.addr(proto))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

#[cfg(test)]
mod tests;
