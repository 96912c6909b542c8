//! The cluster map as read from `[cluster]`: pairs, their domains and their
//! nodes' addresses, validated once so that a lookup never meets a bad
//! entry.

use std::collections::HashSet;
use std::net::SocketAddr;

use anyhow::bail;
use cove_store::Address;

use crate::config::{ClusterConfig, NodeConfig};

/// A protocol a node serves, for [`super::Cluster::serving`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Imap,
    Pop3,
    Lmtp,
    Http,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Imap => "imap",
            Proto::Pop3 => "pop3",
            Proto::Lmtp => "lmtp",
            Proto::Http => "http",
        }
    }
}

/// One node of a pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Its hostname; the name replication knows it by.
    pub name: String,
    pub imap: Option<SocketAddr>,
    pub pop3: Option<SocketAddr>,
    pub lmtp: Option<SocketAddr>,
    pub http: SocketAddr,
}

impl Node {
    pub fn addr(&self, proto: Proto) -> Option<SocketAddr> {
        match proto {
            Proto::Imap => self.imap,
            Proto::Pop3 => self.pop3,
            Proto::Lmtp => self.lmtp,
            Proto::Http => Some(self.http),
        }
    }
}

/// A pair: one or two nodes holding the same users.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub name: String,
    /// Exact domains, lowercase.
    exact: Vec<String>,
    /// `*.suffix` wildcards, stored as `.suffix`, lowercase.
    wildcards: Vec<String>,
    pub default: bool,
    pub nodes: Vec<Node>,
}

impl Pair {
    /// The node that writes for `address` while both are up: a hash of the
    /// lowercase address picks node 0 or 1, so the users split evenly and
    /// every node of the cluster picks the same one.
    pub fn preferred(&self, address: &Address) -> usize {
        if self.nodes.len() < 2 {
            return 0;
        }
        let key = address.to_string().to_lowercase();
        usize::from(blake3::hash(key.as_bytes()).as_bytes()[0] & 1)
    }

    fn holds_named(&self, domain: &str) -> bool {
        self.exact.iter().any(|d| d == domain)
            || self.wildcards.iter().any(|w| domain.ends_with(w.as_str()))
    }
}

/// The whole map, valid by construction.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterMap {
    pub pairs: Vec<Pair>,
    /// Index of the pair holding this node.
    pub own_pair: usize,
    /// This node's hostname.
    pub own_node: String,
}

/// Where a user lives: the first implementation is the file map's domain
/// list; a directory (SQL, LDAP) that places single users may implement it
/// later.
pub trait Locator: Send + Sync {
    /// The index of the pair that holds `address`, if any does.
    fn pair_index(&self, address: &Address) -> Option<usize>;
    /// Whether some pair holds `domain` (Postfix's virtual_mailbox_domains).
    fn holds_domain(&self, domain: &str) -> bool;
}

impl Locator for ClusterMap {
    fn pair_index(&self, address: &Address) -> Option<usize> {
        self.pair_of_domain(&address.domain)
    }

    fn holds_domain(&self, domain: &str) -> bool {
        self.pair_of_domain(&domain.to_lowercase()).is_some()
    }
}

impl ClusterMap {
    /// The pair holding `domain` (lowercase): an exact name first, then the
    /// longest wildcard, then the default pair.
    fn pair_of_domain(&self, domain: &str) -> Option<usize> {
        if let Some(i) = self
            .pairs
            .iter()
            .position(|p| p.exact.iter().any(|d| d == domain))
        {
            return Some(i);
        }
        let wildcard = self
            .pairs
            .iter()
            .enumerate()
            .flat_map(|(i, p)| p.wildcards.iter().map(move |w| (i, w)))
            .filter(|(_, w)| domain.ends_with(w.as_str()))
            .max_by_key(|(_, w)| w.len())
            .map(|(i, _)| i);
        debug_assert!(wildcard.is_none_or(|i| self.pairs[i].holds_named(domain)));
        wildcard.or_else(|| self.pairs.iter().position(|p| p.default))
    }

    pub fn own_pair(&self) -> &Pair {
        &self.pairs[self.own_pair]
    }

    /// Every node but this one.
    pub fn other_nodes(&self) -> impl Iterator<Item = &Node> {
        self.pairs
            .iter()
            .flat_map(|p| p.nodes.iter())
            .filter(|n| n.name != self.own_node)
    }

    /// Check `[cluster]` and build the map; each error is one line naming
    /// the entry.
    pub fn from_config(c: &ClusterConfig, hostname: &str) -> anyhow::Result<ClusterMap> {
        if c.pairs.is_empty() {
            bail!("[cluster] names no pairs ([[cluster.pairs]])");
        }
        if c.health_interval_ms < 100 || c.health_timeout_ms < 50 {
            bail!(
                "[cluster] health_interval_ms must be at least 100 and health_timeout_ms at least 50"
            );
        }
        let mut pair_names = HashSet::new();
        let mut node_names = HashSet::new();
        let mut domains = HashSet::new();
        let mut pairs = Vec::new();
        let mut defaults = 0;
        for p in &c.pairs {
            let label = format!("[[cluster.pairs]] {:?}", p.name);
            if p.name.is_empty() || p.name.chars().any(|c| c.is_control() || c.is_whitespace()) {
                bail!(
                    "[[cluster.pairs]] name {:?} is not a valid pair name",
                    p.name
                );
            }
            if !pair_names.insert(p.name.as_str()) {
                bail!("{label} appears twice");
            }
            if !(1..=2).contains(&p.nodes.len()) {
                bail!(
                    "{label} has {} nodes; a pair has 2 (or 1 for a single node)",
                    p.nodes.len()
                );
            }
            if p.default {
                defaults += 1;
            }
            if p.domains.is_empty() && !p.default {
                bail!("{label} holds no domains and is not the default pair");
            }
            let mut exact = Vec::new();
            let mut wildcards = Vec::new();
            for d in &p.domains {
                let lower = d.to_lowercase();
                if !domains.insert(lower.clone()) {
                    bail!("{label}: domain {d:?} is held by more than one pair");
                }
                let (wild, name) = match lower.strip_prefix("*.") {
                    Some(rest) => (true, rest),
                    None => (false, lower.as_str()),
                };
                if Address::parse(&format!("x@{name}")).is_err() || name.contains('*') {
                    bail!("{label}: {d:?} is not a domain or a *. wildcard");
                }
                if wild {
                    wildcards.push(format!(".{name}"));
                } else {
                    exact.push(name.to_string());
                }
            }
            let mut nodes = Vec::new();
            for n in &p.nodes {
                nodes.push(node(&label, n)?);
                if !node_names.insert(n.name.as_str()) {
                    bail!("{label}: node {:?} appears in the map twice", n.name);
                }
            }
            pairs.push(Pair {
                name: p.name.clone(),
                exact,
                wildcards,
                default: p.default,
                nodes,
            });
        }
        if defaults > 1 {
            bail!("[cluster] more than one pair says default = true");
        }
        let Some(own_pair) = pairs
            .iter()
            .position(|p| p.nodes.iter().any(|n| n.name == hostname))
        else {
            bail!("[cluster] this node's hostname {hostname:?} is in no pair");
        };
        Ok(ClusterMap {
            pairs,
            own_pair,
            own_node: hostname.to_string(),
        })
    }
}

fn node(label: &str, n: &NodeConfig) -> anyhow::Result<Node> {
    if n.name.is_empty() || n.name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        bail!("{label}: node name {:?} is not a valid host name", n.name);
    }
    let addr = |key: &str, v: &str| -> anyhow::Result<SocketAddr> {
        v.parse().map_err(|_| {
            anyhow::anyhow!(
                "{label}: node {:?} {key} = {v:?} is not an IP:port address",
                n.name
            )
        })
    };
    let opt = |key: &str, v: &Option<String>| v.as_deref().map(|v| addr(key, v)).transpose();
    Ok(Node {
        name: n.name.clone(),
        imap: opt("imap", &n.imap)?,
        pop3: opt("pop3", &n.pop3)?,
        lmtp: opt("lmtp", &n.lmtp)?,
        http: addr("http", &n.http)?,
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::Config;

    pub const MAP: &str = r#"
hostname = "storage-01"
[lmtp]
listen = ["127.0.0.1:2424"]
[[cluster.pairs]]
name = "pair-a"
domains = ["example.com", "*.example.org"]
[[cluster.pairs.nodes]]
name = "storage-01"
imap = "10.0.0.1:143"
lmtp = "10.0.0.1:24"
http = "10.0.0.1:8185"
[[cluster.pairs.nodes]]
name = "storage-02"
lmtp = "10.0.0.2:24"
http = "10.0.0.2:8185"
[[cluster.pairs]]
name = "pair-b"
domains = ["example.net", "*.eu.example.org"]
default = true
[[cluster.pairs.nodes]]
name = "storage-03"
lmtp = "10.0.0.3:24"
http = "10.0.0.3:8185"
"#;

    fn map(text: &str) -> ClusterMap {
        let c = Config::parse(text, "t").unwrap();
        ClusterMap::from_config(&c.cluster.unwrap(), &c.hostname).unwrap()
    }

    fn at<'m>(m: &'m ClusterMap, a: &str) -> Option<&'m str> {
        m.pair_index(&Address::parse(a).unwrap())
            .map(|i| m.pairs[i].name.as_str())
    }

    #[test]
    fn domains_exact_wildcard_longest_and_default() {
        let m = map(MAP);
        assert_eq!(m.own_pair().name, "pair-a");
        assert_eq!(at(&m, "a@Example.COM"), Some("pair-a"));
        assert_eq!(at(&m, "a@x.example.org"), Some("pair-a"));
        assert_eq!(
            at(&m, "a@x.eu.example.org"),
            Some("pair-b"),
            "longest wildcard"
        );
        // `*.example.org` is not example.org itself: that goes to the default.
        assert_eq!(at(&m, "a@example.org"), Some("pair-b"));
        assert_eq!(at(&m, "a@elsewhere.test"), Some("pair-b"));
        assert!(m.holds_domain("EXAMPLE.net"));
        let names: Vec<_> = m.other_nodes().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["storage-02", "storage-03"]);
        let without_default = map(&MAP.replace("default = true\n", ""));
        assert_eq!(at(&without_default, "a@elsewhere.test"), None);
        assert!(!without_default.holds_domain("elsewhere.test"));
    }

    #[test]
    fn the_preferred_node_is_stable_and_splits_the_users() {
        let m = map(MAP);
        let pair = &m.pairs[0];
        let mut count = [0usize; 2];
        for i in 0..1000 {
            let a = Address::parse(&format!("user{i}@example.com")).unwrap();
            let upper = Address::parse(&format!("USER{i}@EXAMPLE.COM")).unwrap();
            assert_eq!(pair.preferred(&a), pair.preferred(&upper));
            count[pair.preferred(&a)] += 1;
        }
        assert!(count[0] > 400 && count[1] > 400, "{count:?}");
        let a = Address::parse("x@example.net").unwrap();
        assert_eq!(
            m.pairs[1].preferred(&a),
            0,
            "a single node is always preferred"
        );
    }

    #[test]
    fn errors_are_one_line_and_name_the_entry() {
        let err = |text: &str| format!("{:#}", Config::parse(text, "f.toml").unwrap_err());
        let cases = [
            (
                MAP.replace("hostname = \"storage-01\"", "hostname = \"storage-09\""),
                "hostname \"storage-09\" is in no pair",
            ),
            (
                MAP.replace("\"example.net\"", "\"Example.com\""),
                "\"Example.com\" is held by more than one pair",
            ),
            (
                MAP.replace("10.0.0.2:24", "storage-02:24"),
                "node \"storage-02\" lmtp = \"storage-02:24\" is not an IP:port",
            ),
            (
                MAP.replace("name = \"pair-b\"", "name = \"pair-a\""),
                "\"pair-a\" appears twice",
            ),
            (
                MAP.replace("\"*.eu.example.org\"", "\"*.*.org\""),
                "\"*.*.org\" is not a domain",
            ),
            (
                MAP.replace("name = \"storage-03\"", "name = \"storage-02\""),
                "node \"storage-02\" appears in the map twice",
            ),
            (
                format!(
                    "{MAP}[[cluster.pairs.nodes]]\nname = \"s4\"\nhttp = \"10.0.0.4:1\"\n[[cluster.pairs.nodes]]\nname = \"s5\"\nhttp = \"10.0.0.5:1\"\n"
                ),
                "has 3 nodes",
            ),
            (
                "hostname = \"h\"\n[cluster]\n".to_string(),
                "names no pairs",
            ),
        ];
        for (text, want) in cases {
            let e = err(&text);
            assert!(e.contains(want), "{want:?} not in {e:?}");
            assert!(!e.trim_end().contains('\n'), "more than one line: {e:?}");
        }
        let e = err(&MAP.replace("http = \"10.0.0.3:8185\"\n", ""));
        assert!(e.contains("http"), "{e}");
    }
}
