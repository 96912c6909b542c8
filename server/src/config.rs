//! The configuration: one TOML file, or the embedded defaults (a single node
//! on loopback, data in ./cove-data, a self-signed certificate).
//!
//! With a file, a protocol whose section is absent is not served: an
//! operator's file says exactly what listens. Unknown keys are errors that
//! name the key.

use anyhow::{Context, bail};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default = "default_hostname")]
    pub hostname: String,
    #[serde(default)]
    pub lmtp: Option<LmtpConfig>,
    #[serde(default)]
    pub imap: Option<ImapConfig>,
    #[serde(default)]
    pub pop3: Option<Pop3Config>,
    #[serde(default)]
    pub http: Option<HttpConfig>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    /// Absent: this node does not replicate.
    #[serde(default)]
    pub replication: Option<ReplicationConfig>,
    /// Absent: this node is not part of a cluster map (DESIGN.md "Routing").
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
    /// Absent: no lookups for MTAs (socketmap, readsocket).
    #[serde(default)]
    pub mta: Option<MtaConfig>,
    /// Absent: no Sieve at delivery, no ManageSieve (`crate::sieve`).
    #[serde(default)]
    pub sieve: Option<crate::sieve::SieveConfig>,
    /// Addresses or CIDRs of proxies (nginx's mail proxy) that may send a
    /// PROXY protocol header on listeners with `proxy_protocol = true`, and
    /// plaintext passwords (they terminated TLS). See server/src/proxy.rs.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// The file this configuration was read from (`None`: the embedded
    /// defaults); a reload (SIGHUP) reads it again.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `[cluster]`: the pairs of nodes and the domains each holds; the same
/// file on every node (see `crate::cluster`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    #[serde(default)]
    pub pairs: Vec<PairConfig>,
    /// How often every other node's `GET /health` is polled.
    #[serde(default = "default_health_interval")]
    pub health_interval_ms: u64,
    /// A node that does not answer `/health` this fast counts as down.
    #[serde(default = "default_health_timeout")]
    pub health_timeout_ms: u64,
}

/// `[[cluster.pairs]]`: two nodes that replicate each other's users (or
/// one, for a single node), and the domains they hold.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairConfig {
    pub name: String,
    /// Exact domains and `*.` wildcards (`*.example.org` is every
    /// subdomain of example.org, not example.org itself).
    #[serde(default)]
    pub domains: Vec<String>,
    /// The pair that holds every domain no pair names.
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub nodes: Vec<NodeConfig>,
}

/// `[[cluster.pairs.nodes]]`: one node, by its hostname, and the IP:port
/// addresses proxies and MTAs use to reach it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub name: String,
    #[serde(default)]
    pub imap: Option<String>,
    #[serde(default)]
    pub pop3: Option<String>,
    #[serde(default)]
    pub lmtp: Option<String>,
    /// Required: `/health` and `/cluster/user` are asked here.
    pub http: String,
}

/// `[mta]`: lookups for the MTA in front of cove.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtaConfig {
    /// Postfix socketmap and Exim readsocket, on one listener.
    #[serde(default)]
    pub socketmap_listen: Vec<String>,
    /// Longest request: netstring payload or line, in bytes.
    #[serde(default = "default_socketmap_request")]
    pub max_request_length: usize,
    /// Seconds a client may stay silent between requests.
    #[serde(default = "default_socketmap_timeout")]
    pub timeout_secs: u64,
    #[serde(default = "default_socketmap_connections")]
    pub max_connections: usize,
    /// How long a lookup waits for another pair's node (`/cluster/user`).
    #[serde(default = "default_remote_lookup_timeout")]
    pub remote_timeout_ms: u64,
}

fn default_health_interval() -> u64 {
    1000
}
fn default_health_timeout() -> u64 {
    500
}
fn default_socketmap_request() -> usize {
    1024
}
fn default_socketmap_timeout() -> u64 {
    300
}
fn default_socketmap_connections() -> usize {
    256
}
fn default_remote_lookup_timeout() -> u64 {
    2000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LmtpConfig {
    #[serde(default)]
    pub listen: Vec<String>,
    /// Largest message accepted, in bytes (SIZE; 552 5.3.4 above it).
    #[serde(default = "default_max_message_size")]
    pub max_message_size: u64,
    /// Recipients per transaction (452 4.5.3 above it).
    #[serde(default = "default_max_recipients")]
    pub max_recipients: usize,
    /// Longest command line, in bytes including CRLF.
    #[serde(default = "default_max_line_length")]
    pub max_line_length: usize,
    /// Separator of `user+detail@domain`; empty turns detail delivery off.
    #[serde(default = "default_recipient_delimiter")]
    pub recipient_delimiter: String,
    /// Seconds a client may stay silent (RFC 5321 §4.5.3.2 suggests 5 minutes).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Seconds a STARTTLS handshake may take.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_secs: u64,
    /// Bad commands in a row before the connection is closed.
    #[serde(default = "default_max_errors")]
    pub max_errors: u32,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// Connections from `trusted_proxies` start with a PROXY protocol
    /// header (v1 or v2) giving the client's address.
    #[serde(default)]
    pub proxy_protocol: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapConfig {
    #[serde(default)]
    pub listen: Vec<String>,
    /// Implicit TLS (imaps).
    #[serde(default)]
    pub tls_listen: Vec<String>,
    /// Longest command line, in bytes (literals not counted).
    #[serde(default = "default_imap_line")]
    pub max_line_length: usize,
    /// Largest literal, and so the largest APPEND (APPENDLIMIT); also the
    /// most one command's literals may hold together.
    #[serde(default = "default_max_message_size")]
    pub max_literal_size: u64,
    /// Literals in one command, once logged in.
    #[serde(default = "default_max_literals_per_command")]
    pub max_literals_per_command: u32,
    /// Before login: the most one command's literals may hold together (a
    /// user name and a password need little).
    #[serde(default = "default_max_literal_size_before_login")]
    pub max_literal_size_before_login: u64,
    /// Before login: literals in one command.
    #[serde(default = "default_max_literals_before_login")]
    pub max_literals_before_login: u32,
    /// Seconds a client may take from connecting to logging in.
    #[serde(default = "default_login_timeout")]
    pub login_timeout_secs: u64,
    /// Seconds a TLS handshake (imaps, STARTTLS) may take.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_secs: u64,
    /// Bad commands in a row before `* BYE`.
    #[serde(default = "default_max_errors")]
    pub max_bad_commands: u32,
    /// Idle seconds before autologout (RFC 3501 §5.4: at least 30 minutes).
    #[serde(default = "default_autologout")]
    pub autologout_secs: u64,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// Connections from `trusted_proxies` start with a PROXY protocol
    /// header (v1 or v2) giving the client's address.
    #[serde(default)]
    pub proxy_protocol: bool,
    #[serde(default = "default_max_connections_per_user")]
    pub max_connections_per_user: usize,
    /// Allow LOGIN/AUTHENTICATE PLAIN on connections that are neither TLS
    /// nor from loopback.
    #[serde(default)]
    pub allow_plaintext_auth: bool,
    /// Delay before answering a failed login, in milliseconds.
    #[serde(default = "default_auth_failure_delay")]
    pub auth_failure_delay_ms: u64,
    /// Memory for prepared SORT / THREAD keys, shared by all sessions
    /// (imap/sort_cache.rs), in bytes: ~300-1,000 bytes per message (long
    /// References chains cost most); a mailbox sorted again within half of
    /// it is answered without reading the index. 0: none kept.
    #[serde(default = "default_sort_key_cache_bytes")]
    pub sort_key_cache_bytes: u64,
    /// Memory for the Subject/From/To/Cc/Bcc text SEARCH reads, shared by
    /// all sessions (imap/search.rs `SearchFields`), in bytes: ~150-300
    /// bytes per message; a mailbox searched again within half of it is
    /// answered without reading the index. 0: none kept.
    #[serde(default = "default_search_field_cache_bytes")]
    pub search_field_cache_bytes: u64,
    /// Memory for whole mailboxes kept in the order of the SORT criteria
    /// asked of them, shared by all sessions (imap/sort_order.rs), in
    /// bytes: ~70 bytes per message and order, plus the prepared keys it
    /// holds (counted in full, though shared with `sort_key_cache_bytes`'
    /// while both hold them; an order bigger than this is not kept); a
    /// repeated SORT then walks the kept order (updated by what arrived and
    /// was expunged) instead of sorting. 0: none kept.
    #[serde(default = "default_sort_order_cache_bytes")]
    pub sort_order_cache_bytes: u64,
}

impl Default for ImapConfig {
    fn default() -> Self {
        ImapConfig {
            listen: Vec::new(),
            tls_listen: Vec::new(),
            max_line_length: default_imap_line(),
            max_literal_size: default_max_message_size(),
            max_literals_per_command: default_max_literals_per_command(),
            max_literal_size_before_login: default_max_literal_size_before_login(),
            max_literals_before_login: default_max_literals_before_login(),
            login_timeout_secs: default_login_timeout(),
            handshake_timeout_secs: default_handshake_timeout(),
            max_bad_commands: default_max_errors(),
            autologout_secs: default_autologout(),
            max_connections: default_max_connections(),
            max_connections_per_ip: default_max_connections_per_ip(),
            proxy_protocol: false,
            max_connections_per_user: default_max_connections_per_user(),
            allow_plaintext_auth: false,
            auth_failure_delay_ms: default_auth_failure_delay(),
            sort_key_cache_bytes: default_sort_key_cache_bytes(),
            search_field_cache_bytes: default_search_field_cache_bytes(),
            sort_order_cache_bytes: default_sort_order_cache_bytes(),
        }
    }
}

fn default_sort_key_cache_bytes() -> u64 {
    256 << 20
}

fn default_search_field_cache_bytes() -> u64 {
    256 << 20
}

fn default_sort_order_cache_bytes() -> u64 {
    256 << 20
}

fn default_imap_line() -> usize {
    64 * 1024
}
fn default_max_literals_per_command() -> u32 {
    100
}
fn default_max_literal_size_before_login() -> u64 {
    8 * 1024
}
fn default_max_literals_before_login() -> u32 {
    4
}
pub(crate) fn default_login_timeout() -> u64 {
    120
}
pub(crate) fn default_handshake_timeout() -> u64 {
    30
}
fn default_autologout() -> u64 {
    30 * 60
}
fn default_max_connections_per_user() -> usize {
    50
}
pub(crate) fn default_auth_failure_delay() -> u64 {
    2000
}

/// `[pop3]`: POP3 (RFC 1939) with its limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pop3Config {
    #[serde(default)]
    pub listen: Vec<String>,
    /// Implicit TLS (pop3s, RFC 8314).
    #[serde(default)]
    pub tls_listen: Vec<String>,
    /// Longest command line, in bytes including CRLF (RFC 2449 §4: clients
    /// send at most 255).
    #[serde(default = "default_pop3_line")]
    pub max_line_length: usize,
    /// Unknown or malformed commands in a row before the connection is closed.
    #[serde(default = "default_max_errors")]
    pub max_bad_commands: u32,
    /// Idle seconds before autologout (RFC 1939 §3: at least 10 minutes).
    #[serde(default = "default_pop3_autologout")]
    pub autologout_secs: u64,
    /// Seconds a client may take from connecting to logging in.
    #[serde(default = "default_login_timeout")]
    pub login_timeout_secs: u64,
    /// Seconds a TLS handshake (pop3s, STLS) may take.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_secs: u64,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// Connections from `trusted_proxies` start with a PROXY protocol
    /// header (v1 or v2) giving the client's address.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Allow USER/PASS and AUTH PLAIN on connections that are neither TLS
    /// nor from loopback.
    #[serde(default)]
    pub allow_plaintext_auth: bool,
    /// Delay before answering a failed login, in milliseconds.
    #[serde(default = "default_auth_failure_delay")]
    pub auth_failure_delay_ms: u64,
}

impl Default for Pop3Config {
    fn default() -> Self {
        Pop3Config {
            listen: Vec::new(),
            tls_listen: Vec::new(),
            max_line_length: default_pop3_line(),
            max_bad_commands: default_max_errors(),
            autologout_secs: default_pop3_autologout(),
            login_timeout_secs: default_login_timeout(),
            handshake_timeout_secs: default_handshake_timeout(),
            max_connections: default_max_connections(),
            max_connections_per_ip: default_max_connections_per_ip(),
            proxy_protocol: false,
            allow_plaintext_auth: false,
            auth_failure_delay_ms: default_auth_failure_delay(),
        }
    }
}

fn default_pop3_line() -> usize {
    1024
}
/// RFC 1939 §3: an autologout timer of at least 10 minutes.
const POP3_MIN_AUTOLOGOUT: u64 = 600;
fn default_pop3_autologout() -> u64 {
    POP3_MIN_AUTOLOGOUT
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default)]
    pub listen: Vec<String>,
    /// When set, `GET /auth` (nginx's auth_http) answers only requests
    /// carrying it in `X-Auth-Key` (nginx: `auth_http_header X-Auth-Key
    /// "...";`).
    #[serde(default)]
    pub auth_key: Option<crate::auth::Secret>,
    /// Where nginx's SMTP submission proxy sends a user who authenticated
    /// (`IP:port` of the relay: Postfix's submission service, say); absent,
    /// `GET /auth` refuses SMTP.
    #[serde(default)]
    pub smtp_relay: Option<std::net::SocketAddr>,
}

/// `[replication]`: the peers this node replicates with (DESIGN.md,
/// "Replication"). The node's own name is `hostname`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationConfig {
    /// Where peers connect to this node.
    #[serde(default)]
    pub listen: Vec<String>,
    /// The shared secret, the same on every node; or `secret_file`.
    #[serde(default)]
    pub secret: Option<String>,
    /// A file holding the shared secret (trimmed); or `secret`.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// LMTP answers 250 only once a peer holds the message too.
    #[serde(default)]
    pub sync_delivery: bool,
    /// How long a synchronous delivery waits for a peer before it falls back
    /// to asynchronous replication (and logs that it did).
    #[serde(default = "default_sync_delivery_timeout")]
    pub sync_delivery_timeout_ms: u64,
    /// Quiet time after a user's change before the user is synced.
    #[serde(default = "default_debounce")]
    pub debounce_ms: u64,
    /// Seconds between full syncs of all users.
    #[serde(default = "default_full_sync_interval")]
    pub full_sync_interval_secs: u64,
    /// Longest wait between attempts to reach a failing peer.
    #[serde(default = "default_backoff_max")]
    pub backoff_max_secs: u64,
    /// Milliseconds between heartbeats to each peer; each one also compares
    /// a digest of users (anti-entropy), so a missed change heals within a
    /// few heartbeats.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_ms: u64,
    /// A peer that has not answered a heartbeat this long is down.
    #[serde(default = "default_heartbeat_timeout")]
    pub heartbeat_timeout_ms: u64,
    /// How far ahead of this node's clock a peer's change may be stamped;
    /// later stamps are refused (they would win over every change made
    /// here until then).
    #[serde(default = "default_max_clock_skew")]
    pub max_clock_skew_secs: u64,
    /// Largest message content a peer may send, in bytes. Absent: the
    /// larger of `[lmtp] max_message_size` and `[imap] max_literal_size`,
    /// plus 1 MiB.
    #[serde(default)]
    pub max_content_size: Option<u64>,
    /// Most content a peer may send in one user's session, in bytes; more
    /// waits for the next session.
    #[serde(default = "default_max_session_bytes")]
    pub max_session_bytes: u64,
    /// New messages of a peer's delta applied per index transaction (a
    /// first sync): a delivery to that user waits at most one chunk.
    #[serde(default = "default_apply_chunk_messages")]
    pub apply_chunk_messages: usize,
    /// Connections to `listen` still in the handshake, in all and per
    /// address; more are closed at once.
    #[serde(default = "default_max_pending_links")]
    pub max_pending_links: usize,
    #[serde(default = "default_max_pending_links_per_ip")]
    pub max_pending_links_per_ip: usize,
    /// Authenticated links to `listen`, in all.
    #[serde(default = "default_max_links")]
    pub max_links: usize,
    /// Users synced with each peer at once, each over a link of its own
    /// (a peer that comes back has every user to catch up on).
    #[serde(default = "default_sessions_per_peer")]
    pub sessions_per_peer: usize,
    /// Change-log rows each user's index keeps behind its newest change
    /// for a peer that has not applied them; a peer further behind gets a
    /// complete delta (docs/replication.md, "Bounded history"). Also how
    /// many expunges a peer has not applied are kept past that.
    #[serde(default = "default_keep_changes")]
    pub keep_changes: u64,
    /// How long an expunge's tombstone is kept once every peer applied it.
    #[serde(default = "default_keep_expunges")]
    pub keep_expunges_secs: u64,
}

/// The secret stays out of `Debug` output (and so out of logs).
impl std::fmt::Debug for ReplicationConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationConfig")
            .field("listen", &self.listen)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_file", &self.secret_file)
            .field("peers", &self.peers)
            .field("sync_delivery", &self.sync_delivery)
            .field("sync_delivery_timeout_ms", &self.sync_delivery_timeout_ms)
            .field("debounce_ms", &self.debounce_ms)
            .field("full_sync_interval_secs", &self.full_sync_interval_secs)
            .field("backoff_max_secs", &self.backoff_max_secs)
            .field("heartbeat_ms", &self.heartbeat_ms)
            .field("heartbeat_timeout_ms", &self.heartbeat_timeout_ms)
            .field("max_clock_skew_secs", &self.max_clock_skew_secs)
            .field("max_content_size", &self.max_content_size)
            .field("max_session_bytes", &self.max_session_bytes)
            .field("apply_chunk_messages", &self.apply_chunk_messages)
            .field("max_pending_links", &self.max_pending_links)
            .field("max_pending_links_per_ip", &self.max_pending_links_per_ip)
            .field("max_links", &self.max_links)
            .field("sessions_per_peer", &self.sessions_per_peer)
            .field("keep_changes", &self.keep_changes)
            .field("keep_expunges_secs", &self.keep_expunges_secs)
            .finish()
    }
}

/// `[[replication.peers]]`: a node this one connects to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's `hostname`, which it gives in the link handshake.
    pub name: String,
    /// `host:port` of the peer's replication listener.
    pub address: String,
}

fn default_sync_delivery_timeout() -> u64 {
    2000
}
fn default_debounce() -> u64 {
    200
}
fn default_full_sync_interval() -> u64 {
    3600
}
fn default_backoff_max() -> u64 {
    60
}
fn default_heartbeat() -> u64 {
    3000
}
fn default_heartbeat_timeout() -> u64 {
    5000
}
fn default_max_clock_skew() -> u64 {
    300
}
fn default_max_session_bytes() -> u64 {
    1024 * 1024 * 1024
}
fn default_apply_chunk_messages() -> usize {
    cove_store::replica::PeerLimits::default().apply_chunk_messages
}
fn default_keep_changes() -> u64 {
    cove_store::replica::History::default().keep_changes
}
fn default_keep_expunges() -> u64 {
    cove_store::replica::History::default().keep_expunges_ms / 1000
}
fn default_max_pending_links() -> usize {
    16
}
fn default_max_pending_links_per_ip() -> usize {
    4
}
fn default_max_links() -> usize {
    64
}
fn default_sessions_per_peer() -> usize {
    4
}

/// Shortest shared secret accepted, in bytes after trimming (the same rule
/// as `cove_sync::transport::MIN_SECRET_LEN`, checked here so a short inline
/// secret is named at start).
const MIN_SECRET_LEN: usize = 16;

impl ReplicationConfig {
    fn validate(&self, hostname: &str) -> anyhow::Result<()> {
        match (&self.secret, &self.secret_file) {
            (None, None) => bail!("[replication] needs secret or secret_file"),
            (Some(_), Some(_)) => {
                bail!("[replication] secret and secret_file are both set; keep one")
            }
            (Some(s), None) => {
                let len = s.trim().len();
                if len < MIN_SECRET_LEN {
                    bail!(
                        "[replication] secret is {len} bytes; at least {MIN_SECRET_LEN} are required"
                    );
                }
            }
            (None, Some(_)) => {}
        }
        if hostname.len() > 255 || hostname.chars().any(|c| c.is_control()) {
            bail!("[replication] hostname {hostname:?} cannot serve as a node name");
        }
        let mut seen = std::collections::HashSet::new();
        for p in &self.peers {
            if p.name.is_empty() {
                bail!("[[replication.peers]] name must not be empty");
            }
            if p.name.chars().any(|c| c.is_control() || c.is_whitespace()) || p.name.len() > 255 {
                bail!(
                    "[[replication.peers]] name {:?} is not a valid node name",
                    p.name
                );
            }
            if p.name == hostname {
                bail!(
                    "[[replication.peers]] name {:?} is this node's own hostname",
                    p.name
                );
            }
            if !seen.insert(p.name.as_str()) {
                bail!("[[replication.peers]] name {:?} appears twice", p.name);
            }
            let port_ok = p
                .address
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                bail!(
                    "[[replication.peers]] {}: address {:?} is not host:port",
                    p.name,
                    p.address
                );
            }
        }
        if self.full_sync_interval_secs < 1 {
            bail!("[replication] full_sync_interval_secs must be at least 1");
        }
        if self.backoff_max_secs < 1 {
            bail!("[replication] backoff_max_secs must be at least 1");
        }
        if self.heartbeat_ms < 100 {
            bail!("[replication] heartbeat_ms must be at least 100");
        }
        if self.heartbeat_timeout_ms < 100 {
            bail!("[replication] heartbeat_timeout_ms must be at least 100");
        }
        if self.max_pending_links < 1 || self.max_pending_links_per_ip < 1 || self.max_links < 1 {
            bail!(
                "[replication] max_pending_links, max_pending_links_per_ip and max_links must be at least 1"
            );
        }
        if !(1..=32).contains(&self.sessions_per_peer) {
            bail!("[replication] sessions_per_peer must be between 1 and 32");
        }
        if self.max_content_size == Some(0) {
            bail!("[replication] max_content_size must be at least 1");
        }
        if self
            .max_content_size
            .is_some_and(|c| self.max_session_bytes < c)
        {
            bail!("[replication] max_session_bytes must be at least max_content_size");
        }
        Ok(())
    }
}

/// `[auth]`: the penalty for failed logins, shared by every protocol
/// (see `auth/penalty.rs`): after the n-th failure in a row, a client
/// address and a user name each wait `initial * 2^(n-1)`, at most `max`,
/// before their next attempt is looked at.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The wait after the first failure, in milliseconds.
    #[serde(default = "default_penalty_initial")]
    pub penalty_initial_ms: u64,
    /// The longest wait, in milliseconds; 0 turns penalties off.
    #[serde(default = "default_penalty_max")]
    pub penalty_max_ms: u64,
    /// Seconds without a failure after which a client or user is forgotten.
    #[serde(default = "default_penalty_expire")]
    pub penalty_expire_secs: u64,
    /// Client addresses (and, apart, user names) remembered at most; the
    /// one whose last failure is oldest makes room.
    #[serde(default = "default_penalty_table_size")]
    pub penalty_table_size: usize,
    /// Penalise user names as well as client addresses (slows guessing
    /// from many addresses, at the price of letting anyone delay a user's
    /// logins by up to `penalty_max_ms`).
    #[serde(default = "default_true")]
    pub penalty_per_user: bool,
    /// The argon2id cost of every hash cove makes (new passwords, legacy
    /// hashes rehashed, the stand-in hash unknown users are checked
    /// against): memory in KiB, passes, lanes. A login costs about
    /// memory × passes of work (README, "Logins"); existing hashes keep
    /// the cost they were made with.
    #[serde(default = "default_argon2_memory_kib")]
    pub argon2_memory_kib: u32,
    #[serde(default = "default_argon2_iterations")]
    pub argon2_iterations: u32,
    #[serde(default = "default_argon2_parallelism")]
    pub argon2_parallelism: u32,
    /// Replace a legacy (Dovecot) hash by an argon2id one at the user's
    /// first good login; false keeps the legacy hash (and its cost).
    #[serde(default = "default_true")]
    pub rehash_legacy: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            penalty_initial_ms: default_penalty_initial(),
            penalty_max_ms: default_penalty_max(),
            penalty_expire_secs: default_penalty_expire(),
            penalty_table_size: default_penalty_table_size(),
            penalty_per_user: true,
            argon2_memory_kib: default_argon2_memory_kib(),
            argon2_iterations: default_argon2_iterations(),
            argon2_parallelism: default_argon2_parallelism(),
            rehash_legacy: true,
        }
    }
}

impl AuthConfig {
    /// The schedule the penalty tables follow.
    pub fn schedule(&self) -> crate::auth::penalty::Schedule {
        use std::time::Duration;
        crate::auth::penalty::Schedule {
            initial: Duration::from_millis(self.penalty_initial_ms),
            max: Duration::from_millis(self.penalty_max_ms),
            expire: Duration::from_secs(self.penalty_expire_secs),
            capacity: self.penalty_table_size,
            per_user: self.penalty_per_user,
        }
    }

    /// How passwords are hashed, checked.
    pub fn hashing(&self) -> anyhow::Result<crate::auth::Hashing> {
        let (m, t, p) = (
            self.argon2_memory_kib,
            self.argon2_iterations,
            self.argon2_parallelism,
        );
        if !(1..=16).contains(&p) {
            bail!("[auth] argon2_parallelism must be between 1 and 16, not {p}");
        }
        if !(1..=32).contains(&t) {
            bail!("[auth] argon2_iterations must be between 1 and 32, not {t}");
        }
        if m < 8 * p || m > 1024 * 1024 {
            bail!(
                "[auth] argon2_memory_kib must be between 8 × argon2_parallelism ({}) and 1048576 (1 GiB), not {m}",
                8 * p
            );
        }
        Ok(crate::auth::Hashing {
            memory_kib: m,
            iterations: t,
            parallelism: p,
        })
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.hashing()?;
        if self.penalty_max_ms > 0 && self.penalty_initial_ms < 1 {
            bail!(
                "[auth] penalty_initial_ms must be at least 1 (or penalty_max_ms = 0: no penalty)"
            );
        }
        if self.penalty_initial_ms > self.penalty_max_ms {
            bail!("[auth] penalty_initial_ms must not exceed penalty_max_ms");
        }
        if self.penalty_max_ms > 3_600_000 {
            bail!("[auth] penalty_max_ms must be at most 3600000 (one hour)");
        }
        if self.penalty_expire_secs < 1 {
            bail!("[auth] penalty_expire_secs must be at least 1");
        }
        if self.penalty_table_size < 1 {
            bail!("[auth] penalty_table_size must be at least 1");
        }
        Ok(())
    }
}

fn default_penalty_initial() -> u64 {
    2000
}
fn default_penalty_max() -> u64 {
    15_000
}
fn default_penalty_expire() -> u64 {
    300
}
fn default_penalty_table_size() -> usize {
    65_536
}
fn default_argon2_memory_kib() -> u32 {
    crate::auth::Hashing::DEFAULT.memory_kib
}
fn default_argon2_iterations() -> u32 {
    crate::auth::Hashing::DEFAULT.iterations
}
fn default_argon2_parallelism() -> u32 {
    crate::auth::Hashing::DEFAULT.parallelism
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Seconds sessions get to finish after SIGTERM before they are cut.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_secs: u64,
    /// "batched": blob bytes fsynced per message, names and index rows made
    /// durable by one shared syncfs for concurrent deliveries (group commit).
    /// "fsync": every file and directory fsynced on its own; for a data
    /// directory on a filesystem busy with other writers.
    #[serde(default = "default_durability")]
    pub durability: String,
    /// Bytes kept in `<data_dir>/reserve` so that users can still delete
    /// mail when the disk is full; 0 turns the reserve off.
    #[serde(default = "default_reserve_bytes")]
    pub reserve_bytes: u64,
    /// Seconds between full collections of unreferenced blobs (expunged
    /// mail is collected within seconds anyway); 0 turns them off.
    #[serde(default = "default_gc_interval")]
    pub gc_interval_secs: u64,
    /// Seconds an open account's index may go unused before its SQLite
    /// connection is closed (about 300 KiB each, most of what an open
    /// account costs; the next use opens it again, a millisecond for a
    /// small mailbox); 0 keeps them open.
    #[serde(default = "default_index_idle_close")]
    pub index_idle_close_secs: u64,
    /// Seconds after `cove node drain` before open IMAP and POP3 sessions
    /// are told to reconnect (to the peer).
    #[serde(default = "default_drain_grace")]
    pub drain_grace_secs: u64,
    /// Blocking jobs (store calls) running at once, all users together
    /// (docs/architecture.md, "Blocking work").
    #[serde(default = "default_blocking_threads")]
    pub blocking_threads: usize,
    /// Of those, how many one user's sessions may hold.
    #[serde(default = "default_blocking_per_user")]
    pub blocking_per_user: usize,
    /// Of those, how many are kept for deliveries and logins.
    #[serde(default = "default_blocking_reserved")]
    pub blocking_reserved: usize,
    /// What is logged: an `EnvFilter` directive (`info`, `debug`,
    /// `info,cove::imap=debug`); SIGHUP applies a new one. COVE_LOG in the
    /// environment wins over it.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Started as root (without systemd's `User=`): the user to become once
    /// the listeners are bound and the data directory is open.
    #[serde(default)]
    pub user: Option<String>,
    /// Parse new mail in the background right after it arrives (one
    /// low-priority thread): IMAP's ENVELOPE, BODYSTRUCTURE and header
    /// text, POP3's sizes and the full-text index are then ready for the
    /// first FETCH, SEARCH or POP3 listing. Off: each is made at its first
    /// use, and `fts.sqlite` only for users who search bodies.
    #[serde(default = "default_true")]
    pub index_new_mail: bool,
    /// With `index_new_mail`: put every user's new mail into the full-text
    /// index too, so that no first SEARCH BODY builds it (about 1.4 ms of
    /// CPU per delivered 4 KiB message, README "Benchmarks"). False: only
    /// the new mail of users who have a full-text index already (who
    /// searched bodies once).
    #[serde(default)]
    pub fulltext_new_mail: bool,
    /// RFC 9208 MESSAGE: how many messages a user may hold when the
    /// directory gives them no limit of their own (`cove user add
    /// --messages`); 0: no limit. Not replicated: give both nodes the same.
    #[serde(default)]
    pub default_message_quota: u64,
    /// How many accounts stay open when idle before the least recently
    /// used are closed (at least 1; lowered, with a log line, to what half
    /// of the descriptor limit holds at three per account). An account
    /// whose index is open costs ~300 KiB and three descriptors; reopening
    /// one rescans its Maildir.
    #[serde(default = "default_open_accounts")]
    pub open_accounts: usize,
}

impl ServerConfig {
    pub fn durability(&self) -> anyhow::Result<cove_store::Durability> {
        self.durability
            .parse()
            .map_err(|e| anyhow::anyhow!("[server] durability: {e}"))
    }

    /// The blocking pool's budget, checked.
    pub fn blocking_budget(&self) -> anyhow::Result<crate::work::Budget> {
        let (threads, per_user, reserved) = (
            self.blocking_threads,
            self.blocking_per_user,
            self.blocking_reserved,
        );
        if !(2..=4096).contains(&threads) {
            anyhow::bail!("[server] blocking_threads must be between 2 and 4096, not {threads}");
        }
        if reserved == 0 || reserved >= threads {
            anyhow::bail!(
                "[server] blocking_reserved must be at least 1 and below blocking_threads ({threads}), not {reserved}"
            );
        }
        if per_user == 0 || per_user > threads - reserved {
            anyhow::bail!(
                "[server] blocking_per_user must be between 1 and blocking_threads - blocking_reserved ({}), not {per_user}",
                threads - reserved
            );
        }
        Ok(crate::work::Budget {
            threads,
            per_user,
            reserved,
        })
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            shutdown_grace_secs: default_shutdown_grace(),
            durability: default_durability(),
            reserve_bytes: default_reserve_bytes(),
            gc_interval_secs: default_gc_interval(),
            index_idle_close_secs: default_index_idle_close(),
            drain_grace_secs: default_drain_grace(),
            blocking_threads: default_blocking_threads(),
            blocking_per_user: default_blocking_per_user(),
            blocking_reserved: default_blocking_reserved(),
            log_level: default_log_level(),
            user: None,
            index_new_mail: true,
            fulltext_new_mail: false,
            default_message_quota: 0,
            open_accounts: default_open_accounts(),
        }
    }
}

fn default_drain_grace() -> u64 {
    30
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("./cove-data")
}
fn default_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
fn default_max_message_size() -> u64 {
    50 * 1024 * 1024
}
fn default_max_recipients() -> usize {
    1000
}
fn default_max_line_length() -> usize {
    2048
}
fn default_recipient_delimiter() -> String {
    "+".to_string()
}
fn default_timeout() -> u64 {
    300
}
pub(crate) fn default_max_errors() -> u32 {
    10
}
pub(crate) fn default_max_connections() -> usize {
    1000
}
pub(crate) fn default_max_connections_per_ip() -> usize {
    200
}
fn default_shutdown_grace() -> u64 {
    10
}
fn default_blocking_threads() -> usize {
    crate::work::Budget::default().threads
}
fn default_blocking_per_user() -> usize {
    crate::work::Budget::default().per_user
}
fn default_blocking_reserved() -> usize {
    crate::work::Budget::default().reserved
}
fn default_log_level() -> String {
    "info".to_string()
}
fn default_durability() -> String {
    "batched".to_string()
}
fn default_reserve_bytes() -> u64 {
    cove_store::DEFAULT_RESERVE_BYTES
}
fn default_gc_interval() -> u64 {
    6 * 3600
}

fn default_open_accounts() -> usize {
    cove_store::DEFAULT_OPEN_ACCOUNTS
}
fn default_index_idle_close() -> u64 {
    60
}

impl Default for LmtpConfig {
    fn default() -> Self {
        LmtpConfig {
            listen: Vec::new(),
            max_message_size: default_max_message_size(),
            max_recipients: default_max_recipients(),
            max_line_length: default_max_line_length(),
            recipient_delimiter: default_recipient_delimiter(),
            timeout_secs: default_timeout(),
            handshake_timeout_secs: default_handshake_timeout(),
            max_errors: default_max_errors(),
            max_connections: default_max_connections(),
            max_connections_per_ip: default_max_connections_per_ip(),
            proxy_protocol: false,
        }
    }
}

impl LmtpConfig {
    pub fn delimiter(&self) -> Option<char> {
        self.recipient_delimiter.chars().next()
    }
}

/// Where cove looks for its configuration when neither `--config` nor
/// `COVE_CONFIG` names one.
pub const DEFAULT_PATH: &str = "/etc/cove/cove.toml";

impl Config {
    /// The embedded defaults: one node on loopback.
    pub fn embedded() -> Config {
        Config {
            data_dir: default_data_dir(),
            hostname: default_hostname(),
            lmtp: Some(LmtpConfig {
                listen: vec!["127.0.0.1:2424".into()],
                ..LmtpConfig::default()
            }),
            imap: Some(ImapConfig {
                listen: vec!["127.0.0.1:1143".into()],
                tls_listen: vec!["127.0.0.1:1993".into()],
                ..ImapConfig::default()
            }),
            pop3: Some(Pop3Config {
                listen: vec!["127.0.0.1:1110".into()],
                tls_listen: vec!["127.0.0.1:1995".into()],
                ..Pop3Config::default()
            }),
            http: Some(HttpConfig {
                listen: vec!["127.0.0.1:8185".into()],
                auth_key: None,
                smtp_relay: None,
            }),
            tls: None,
            server: ServerConfig::default(),
            auth: AuthConfig::default(),
            replication: None,
            cluster: None,
            mta: None,
            sieve: Some(crate::sieve::SieveConfig {
                listen: vec!["127.0.0.1:4190".into()],
                ..crate::sieve::SieveConfig::default()
            }),
            trusted_proxies: Vec::new(),
            source: None,
        }
    }

    pub fn parse(text: &str, origin: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!("{origin}: {}", e.to_string().trim_end()))?;
        config.validate().with_context(|| origin.to_string())?;
        // Start-up checks that need the file itself, one clear line each.
        let explicit_hostname = text
            .parse::<toml::Table>()
            .is_ok_and(|t| t.contains_key("hostname"));
        if config.replication.is_some() && !explicit_hostname {
            bail!(
                "{origin}: [replication] needs hostname set: it is this node's name for its peers, and the system's host name ({}) is often the same on two machines made from one image",
                config.hostname
            );
        }
        let listens = [
            config.lmtp.as_ref().is_some_and(|l| !l.listen.is_empty()),
            config
                .imap
                .as_ref()
                .is_some_and(|i| !i.listen.is_empty() || !i.tls_listen.is_empty()),
            config
                .pop3
                .as_ref()
                .is_some_and(|p| !p.listen.is_empty() || !p.tls_listen.is_empty()),
            config.http.as_ref().is_some_and(|h| !h.listen.is_empty()),
            config
                .replication
                .as_ref()
                .is_some_and(|r| !r.listen.is_empty() || !r.peers.is_empty()),
            config
                .mta
                .as_ref()
                .is_some_and(|m| !m.socketmap_listen.is_empty()),
            config
                .sieve
                .as_ref()
                .is_some_and(|s| !s.listen.is_empty() || !s.tls_listen.is_empty()),
        ];
        if !listens.contains(&true) {
            bail!(
                "{origin}: nothing to serve: no listen address in [lmtp], [imap], [pop3], [http], [replication] or [mta]"
            );
        }
        Ok(config)
    }

    /// Load `--config FILE`, or the embedded defaults without one.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        match path {
            None => Ok(Config::embedded()),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config file {}", p.display()))?;
                let mut config = Config::parse(&text, &p.display().to_string())?;
                config.source = Some(p.to_path_buf());
                Ok(config)
            }
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        if let Some(s) = &self.sieve {
            s.validate()?;
        }
        crate::proxy::TrustedProxies::parse(&self.trusted_proxies).map_err(anyhow::Error::msg)?;
        if self.hostname.is_empty()
            || self
                .hostname
                .contains(|c: char| c.is_whitespace() || c == '/')
        {
            bail!("hostname {:?} is not a valid host name", self.hostname);
        }
        let check = |section: &str, key: &str, list: &[String]| -> anyhow::Result<()> {
            for a in list {
                a.parse::<SocketAddr>().map_err(|_| {
                    anyhow::anyhow!("[{section}] {key}: {a:?} is not an IP:port address")
                })?;
            }
            Ok(())
        };
        if let Some(l) = &self.lmtp {
            check("lmtp", "listen", &l.listen)?;
            if l.max_line_length < 512 {
                bail!("[lmtp] max_line_length must be at least 512 (RFC 5321 §4.5.3.1.4)");
            }
            if l.max_recipients < 1 {
                bail!("[lmtp] max_recipients must be at least 1");
            }
            if l.recipient_delimiter.chars().count() > 1 {
                bail!("[lmtp] recipient_delimiter must be one character or empty");
            }
            if l.handshake_timeout_secs < 1 {
                bail!("[lmtp] handshake_timeout_secs must be at least 1");
            }
        }
        if let Some(s) = &self.imap {
            check("imap", "listen", &s.listen)?;
            check("imap", "tls_listen", &s.tls_listen)?;
            if s.autologout_secs < 1 || s.login_timeout_secs < 1 || s.handshake_timeout_secs < 1 {
                bail!(
                    "[imap] autologout_secs, login_timeout_secs and handshake_timeout_secs must be at least 1"
                );
            }
        }
        if let Some(s) = &self.pop3 {
            check("pop3", "listen", &s.listen)?;
            check("pop3", "tls_listen", &s.tls_listen)?;
            if s.max_line_length < 255 {
                bail!("[pop3] max_line_length must be at least 255 (RFC 2449 §4)");
            }
            if s.autologout_secs < POP3_MIN_AUTOLOGOUT {
                bail!(
                    "[pop3] autologout_secs must be at least {POP3_MIN_AUTOLOGOUT} (RFC 1939 §3: 10 minutes)"
                );
            }
            if s.max_bad_commands < 1 {
                bail!("[pop3] max_bad_commands must be at least 1");
            }
            if s.login_timeout_secs < 1 || s.handshake_timeout_secs < 1 {
                bail!("[pop3] login_timeout_secs and handshake_timeout_secs must be at least 1");
            }
            if s.max_connections < 1 || s.max_connections_per_ip < 1 {
                bail!("[pop3] max_connections and max_connections_per_ip must be at least 1");
            }
        }
        self.server.durability()?;
        crate::logging::check_level(&self.server.log_level)?;
        self.auth.validate()?;
        if let Some(h) = &self.http {
            check("http", "listen", &h.listen)?;
        }
        if let Some(r) = &self.replication {
            check("replication", "listen", &r.listen)?;
            r.validate(&self.hostname)?;
        }
        if let Some(c) = &self.cluster {
            crate::cluster::ClusterMap::from_config(c, &self.hostname)?;
        }
        if let Some(m) = &self.mta {
            if self.cluster.is_none() {
                bail!("[mta] needs [cluster] (one pair of one node for a single server)");
            }
            check("mta", "socketmap_listen", &m.socketmap_listen)?;
            if m.max_request_length < 256 || m.max_request_length > 100_000 {
                bail!("[mta] max_request_length must be between 256 and 100000");
            }
            if m.timeout_secs < 1 || m.max_connections < 1 {
                bail!("[mta] timeout_secs and max_connections must be at least 1");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_keys_parse() {
        let c = Config::parse(
            r#"
data_dir = "/var/lib/cove"
hostname = "storage-01.example.com"
[lmtp]
listen = ["127.0.0.1:2424"]
[imap]
listen = ["127.0.0.1:1143"]
tls_listen = ["127.0.0.1:1993"]
[pop3]
listen = ["127.0.0.1:1110"]
tls_listen = ["127.0.0.1:1995"]
[http]
listen = ["127.0.0.1:8185"]
[tls]
cert = "/etc/cove/cert.pem"
key = "/etc/cove/key.pem"
"#,
            "test",
        )
        .unwrap();
        assert_eq!(c.hostname, "storage-01.example.com");
        assert_eq!(c.lmtp.unwrap().max_message_size, 50 * 1024 * 1024);
        assert_eq!(c.tls.unwrap().key, PathBuf::from("/etc/cove/key.pem"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = Config::parse("[lmtp]\nlisten = []\nfrobnicate = 1\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("frobnicate"), "{e}");
        let e = format!(
            "{:#}",
            Config::parse("[lmtp]\nlisten = [\"nonsense\"]\n", "f.toml").unwrap_err()
        );
        assert!(e.contains("nonsense"), "{e}");
        let e = Config::parse("[lmtp]\nmax_recipients = \"many\"\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_recipients"), "{e}");
        let e = format!(
            "{:#}",
            Config::parse("[server]\ndurability = \"never\"\n", "f.toml").unwrap_err()
        );
        assert!(e.contains("durability"), "{e}");
    }

    #[test]
    fn mta_keys_and_errors() {
        let err = |text: &str| format!("{:#}", Config::parse(text, "f.toml").unwrap_err());
        let e = err("[mta]\nsocketmap_listen = [\"127.0.0.1:2426\"]\n");
        assert!(e.contains("[mta] needs [cluster]"), "{e}");
        let cluster = "hostname = \"n\"\n[cluster]\n[[cluster.pairs]]\nname = \"p\"\ndefault = true\n\
                       [[cluster.pairs.nodes]]\nname = \"n\"\nhttp = \"127.0.0.1:8185\"\n";
        let c = Config::parse(
            &format!("{cluster}[mta]\nsocketmap_listen = [\"127.0.0.1:2426\"]\n"),
            "t",
        )
        .unwrap();
        let m = c.mta.unwrap();
        assert_eq!(
            (m.max_request_length, m.timeout_secs, m.max_connections),
            (1024, 300, 256)
        );
        let e = err(&format!("{cluster}[mta]\nsocketmap_listen = [\"here\"]\n"));
        assert!(
            e.contains("[mta] socketmap_listen") && e.contains("here"),
            "{e}"
        );
        let e = err(&format!("{cluster}[mta]\nmax_request_length = 10\n"));
        assert!(e.contains("max_request_length"), "{e}");
    }

    #[test]
    fn absent_sections_are_not_served() {
        let c = Config::parse(
            "data_dir = \"/tmp/x\"\n[lmtp]\nlisten = [\"127.0.0.1:0\"]\n",
            "t",
        )
        .unwrap();
        assert!(c.imap.is_none() && c.pop3.is_none() && c.http.is_none());
    }

    #[test]
    fn pop3_keys_and_limits() {
        let c = Config::parse(
            "[pop3]\nlisten = [\"127.0.0.1:1110\"]\nmax_bad_commands = 3\n",
            "t",
        )
        .unwrap();
        let p = c.pop3.unwrap();
        assert_eq!(p.max_bad_commands, 3);
        assert_eq!(p.autologout_secs, 600);
        assert_eq!(p.max_line_length, 1024);
        assert!(!p.allow_plaintext_auth);
        let embedded = Config::embedded().pop3.unwrap();
        assert_eq!(embedded.listen, vec!["127.0.0.1:1110".to_string()]);
        assert_eq!(embedded.tls_listen, vec!["127.0.0.1:1995".to_string()]);
        let err = |text: &str| format!("{:#}", Config::parse(text, "f.toml").unwrap_err());
        let e = err("[pop3]\nautologout_secs = 60\n");
        assert!(
            e.contains("[pop3] autologout_secs must be at least 600"),
            "{e}"
        );
        let e = err("[pop3]\nmax_line_length = 100\n");
        assert!(
            e.contains("[pop3] max_line_length must be at least 255"),
            "{e}"
        );
        let e = err("[pop3]\nmax_bad_commands = 0\n");
        assert!(e.contains("max_bad_commands"), "{e}");
        let e = err("[pop3]\nlisten = [\"nowhere\"]\n");
        assert!(e.contains("[pop3] listen") && e.contains("nowhere"), "{e}");
        let e = err("[pop3]\nfrobnicate = 1\n");
        assert!(e.contains("frobnicate"), "{e}");
    }

    #[test]
    fn argon2_cost_is_the_operators_choice_within_bounds() {
        let parse = |auth: &str| {
            Config::parse(
                &format!("[lmtp]\nlisten = [\"127.0.0.1:24\"]\n[auth]\n{auth}"),
                "t",
            )
        };
        let a = parse("").unwrap().auth;
        assert_eq!(a.hashing().unwrap(), crate::auth::Hashing::DEFAULT);
        assert!(a.rehash_legacy);
        let cheap = parse("argon2_memory_kib = 8\nargon2_iterations = 1\nrehash_legacy = false\n")
            .unwrap()
            .auth;
        assert_eq!(
            cheap.hashing().unwrap(),
            crate::auth::Hashing {
                memory_kib: 8,
                iterations: 1,
                parallelism: 1
            }
        );
        assert!(!cheap.rehash_legacy);
        for (bad, key) in [
            ("argon2_memory_kib = 7", "argon2_memory_kib"),
            (
                "argon2_memory_kib = 16\nargon2_parallelism = 4",
                "argon2_memory_kib",
            ),
            ("argon2_memory_kib = 2000000", "argon2_memory_kib"),
            ("argon2_iterations = 0", "argon2_iterations"),
            ("argon2_iterations = 33", "argon2_iterations"),
            ("argon2_parallelism = 0", "argon2_parallelism"),
        ] {
            let e = format!("{:#}", parse(bad).unwrap_err());
            assert!(e.contains(&format!("[auth] {key}")), "{bad}: {e}");
        }
    }

    #[test]
    fn auth_keys_have_safe_defaults_and_are_checked() {
        let a = Config::parse(
            "[lmtp]\nlisten = [\"127.0.0.1:24\"]\n[auth]\npenalty_max_ms = 4000\n",
            "t",
        )
        .unwrap()
        .auth;
        assert_eq!(a.penalty_initial_ms, 2000);
        assert_eq!(a.penalty_expire_secs, 300);
        assert_eq!(a.penalty_table_size, 65_536);
        assert!(a.penalty_per_user);
        let s = a.schedule();
        assert_eq!(s.wait(3), std::time::Duration::from_secs(4));
        assert_eq!(Config::embedded().auth.penalty_max_ms, 15_000);
        let off = Config::parse(
            "[lmtp]\nlisten = [\"127.0.0.1:24\"]\n[auth]\npenalty_initial_ms = 0\npenalty_max_ms = 0\n",
            "t",
        );
        assert!(off.unwrap().auth.schedule().max.is_zero());
        let err = |text: &str| {
            format!(
                "{:#}",
                Config::parse(
                    &format!("[lmtp]\nlisten = [\"127.0.0.1:24\"]\n{text}"),
                    "f.toml"
                )
                .unwrap_err()
            )
        };
        let e = err("[auth]\npenalty_initial_ms = 20000\n");
        assert!(
            e.contains("[auth] penalty_initial_ms must not exceed"),
            "{e}"
        );
        let e = err("[auth]\npenalty_table_size = 0\n");
        assert!(e.contains("penalty_table_size"), "{e}");
        let e = err("[auth]\npenalty_initial_ms = 0\n");
        assert!(e.contains("penalty_initial_ms must be at least 1"), "{e}");
        let e = err("[auth]\nlockout = 1\n");
        assert!(e.contains("lockout"), "{e}");
    }

    const REPLICATION: &str = r#"
hostname = "storage-01"
[replication]
listen = ["0.0.0.0:7024"]
secret = "0123456789abcdef-shared"
[[replication.peers]]
name = "storage-02"
address = "10.0.0.2:7024"
"#;

    #[test]
    fn replication_keys_parse_with_defaults() {
        let c = Config::parse(REPLICATION, "t").unwrap();
        let r = c.replication.unwrap();
        assert_eq!(r.listen, vec!["0.0.0.0:7024".to_string()]);
        assert_eq!(r.peers.len(), 1);
        assert_eq!(r.peers[0].name, "storage-02");
        assert_eq!(r.peers[0].address, "10.0.0.2:7024");
        assert!(!r.sync_delivery);
        assert_eq!(r.sync_delivery_timeout_ms, 2000);
        assert_eq!(r.debounce_ms, 200);
        assert_eq!(r.full_sync_interval_secs, 3600);
        assert_eq!(r.backoff_max_secs, 60);
        assert_eq!(r.max_clock_skew_secs, 300);
        assert_eq!(r.max_content_size, None);
        assert_eq!(r.max_session_bytes, 1 << 30);
        assert_eq!(
            (r.max_pending_links, r.max_pending_links_per_ip, r.max_links),
            (16, 4, 64)
        );
        let shown = format!("{r:?}");
        assert!(
            !shown.contains("0123456789abcdef") && shown.contains("<redacted>"),
            "{shown}"
        );

        let c = Config::parse(
            "hostname = \"a\"\n[replication]\nsecret_file = \"/etc/cove/peer.secret\"\n\
             sync_delivery = true\nsync_delivery_timeout_ms = 500\n\
             [[replication.peers]]\nname = \"b\"\naddress = \"b.example.com:7024\"\n",
            "t",
        )
        .unwrap();
        let r = c.replication.unwrap();
        assert!(r.listen.is_empty() && r.sync_delivery && r.secret.is_none());
        assert_eq!(r.sync_delivery_timeout_ms, 500);
        assert!(Config::embedded().replication.is_none());
    }

    #[test]
    fn start_up_checks_name_what_is_wrong() {
        let e = format!(
            "{:#}",
            Config::parse("data_dir = \"/x\"\n", "f.toml").unwrap_err()
        );
        assert!(e.contains("f.toml: nothing to serve"), "{e}");
        let e = format!(
            "{:#}",
            Config::parse(
                "[replication]\nsecret = \"0123456789abcdef-shared\"\n[[replication.peers]]\nname = \"b\"\naddress = \"b:7024\"\n",
                "f.toml"
            )
            .unwrap_err()
        );
        assert!(e.contains("[replication] needs hostname set"), "{e}");
    }

    #[test]
    fn replication_errors_are_named() {
        let err = |text: &str| format!("{:#}", Config::parse(text, "f.toml").unwrap_err());
        let with = |from: &str, to: &str| err(&REPLICATION.replace(from, to));

        let e = err("[replication]\nlisten = []\n");
        assert!(e.contains("needs secret or secret_file"), "{e}");
        let e = with("listen =", "secret_file = \"/x\"\nlisten =");
        assert!(e.contains("secret and secret_file are both set"), "{e}");
        let e = with("0123456789abcdef-shared", "  short  ");
        assert!(e.contains("secret is 5 bytes; at least 16"), "{e}");
        let e = with("\"storage-02\"", "\"\"");
        assert!(e.contains("name must not be empty"), "{e}");
        let e = with("\"storage-02\"", "\"storage-01\"");
        assert!(e.contains("own hostname"), "{e}");
        let e = err(&format!(
            "{REPLICATION}[[replication.peers]]\nname = \"storage-02\"\naddress = \"10.0.0.3:7024\"\n"
        ));
        assert!(e.contains("\"storage-02\" appears twice"), "{e}");
        let e = with("10.0.0.2:7024", "10.0.0.2");
        assert!(e.contains("not host:port"), "{e}");
        let e = with("0.0.0.0:7024", "anywhere");
        assert!(
            e.contains("[replication] listen") && e.contains("anywhere"),
            "{e}"
        );
        let e = with("listen =", "frobnicate = 1\nlisten =");
        assert!(e.contains("frobnicate"), "{e}");
        let e = with("address =", "port = 1\naddress =");
        assert!(e.contains("port"), "{e}");
        let e = with("listen =", "full_sync_interval_secs = 0\nlisten =");
        assert!(e.contains("full_sync_interval_secs"), "{e}");
        let e = with("listen =", "max_pending_links_per_ip = 0\nlisten =");
        assert!(e.contains("max_pending_links_per_ip"), "{e}");
        let e = with(
            "listen =",
            "max_content_size = 2000\nmax_session_bytes = 1000\nlisten =",
        );
        assert!(e.contains("max_session_bytes"), "{e}");
    }
}
