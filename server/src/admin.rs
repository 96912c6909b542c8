//! The `[http]` endpoint's answers (served by `cove_sync::http`):
//! Prometheus metrics, replication status and `sync now`, the node's
//! health, and nginx's mail auth_http.
//!
//! # nginx's auth_http (ngx_mail_auth_http_module)
//! nginx's mail proxy asks `GET /auth` before it connects a client to a
//! backend: `Auth-User` and `Auth-Pass` (percent-escaped by nginx),
//! `Auth-Protocol` (imap, pop3, smtp), `Auth-Login-Attempt`, `Client-IP`.
//! cove checks the password with the same code as its own IMAP and POP3
//! logins (legacy hashes and their rehash included) and answers in headers,
//! always with status 200: `Auth-Status: OK`, `Auth-Server` (an IP address,
//! as nginx requires) and `Auth-Port` of the node that should serve the
//! user now; or a reason in `Auth-Status` with `Auth-Wait` (seconds before
//! nginx lets the client try again; left out after 10 attempts, so nginx
//! closes the connection, as its documentation asks) and, for SMTP,
//! `Auth-Error-Code`.
//!
//! Any node answers, so nginx can list all of them in an http upstream and
//! no single node is a point of failure for logins. Without a cluster map
//! the answer is this node's own listener. With one (crate::cluster), a
//! user of this node's pair is checked here and sent to the node that
//! serves them now (the preferred one, the peer while it is down or
//! draining); a user of another pair is asked of that pair's serving node,
//! whose answer is passed on: no node holds another pair's passwords.
//! If that node does not answer (it died before this node's health checks
//! noticed), the pair's other node is asked, with `X-Cove-Unreachable`
//! naming the silent node so that it routes the login to itself even if
//! its own checks have not noticed either.
//!
//! # Health
//! `GET /health` answers 200 `serving` while this node takes new sessions,
//! and 503 `draining` while an operator drains it (`cove node drain`),
//! so proxies and the other nodes send new sessions elsewhere.
//!
//! # The admin token
//! State-changing requests (every POST) need the token in
//! `<data_dir>/admin.token` (made at the first start, mode 0600): whoever
//! can read the data directory may administer the node, nobody else; the
//! CLI reads it from there.

use std::future::Future;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cove_sync::http::{AdminHandler, Reply, Replying, Request};
use cove_sync::replicator::{Replicator, summarize};

use crate::auth::{AuthResult, Authenticator, Secret};
use crate::metrics::Proto;

/// The file holding the admin token, in the data directory.
pub const TOKEN_FILE: &str = "admin.token";

/// The header a node adds when it asks a pair's other node because the
/// first did not answer (see the module's essay); it names that node.
const UNREACHABLE_HEADER: &str = "x-cove-unreachable";

/// Attempts after which nginx is told to give up (no `Auth-Wait`).
const MAX_ATTEMPTS: u32 = 10;

pub struct Admin {
    pub replicator: Option<Arc<Replicator>>,
    pub token: String,
    /// The same authentication service as IMAP and POP3 logins (penalties
    /// per client address and per user included).
    pub auth: Arc<Authenticator>,
    /// Where this node serves each protocol (the first listener's address).
    pub imap: Option<SocketAddr>,
    pub pop3: Option<SocketAddr>,
    pub auth_key: Option<Secret>,
    /// `[http] smtp_relay`: where an SMTP submission login is sent.
    pub smtp_relay: Option<SocketAddr>,
    pub auth_failure_delay: Duration,
    pub draining: Arc<AtomicBool>,
    /// This node's directory, for `/cluster/user` (crate::cluster::lookup).
    pub users: Arc<crate::cluster::lookup::Users>,
    /// The cluster map, when configured: which node serves a user now, and
    /// which pair holds another pair's users (asked for their logins).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// How long after `cove node drain` open IMAP and POP3 sessions are
    /// sent away ([`crate::drain`]).
    pub drain_grace: Duration,
}

/// The admin token of the data directory at `data_dir`: read, or made
/// (32 random bytes, hex, mode 0600) when there is none yet.
pub fn admin_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
    }
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw)
        .map_err(|e| anyhow::anyhow!("no randomness for the admin token: {e}"))?;
    let token = hex::encode(raw);
    let tmp: PathBuf = data_dir.join(format!("{TOKEN_FILE}.tmp"));
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
        f.write_all(token.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(token)
}

impl AdminHandler for Admin {
    fn metrics(&self) -> String {
        let mut out = format!(
            "# HELP cove_up 1 while cove serves\n# TYPE cove_up gauge\ncove_up 1\n# HELP cove_build_info cove's version\n# TYPE cove_build_info gauge\ncove_build_info{{version=\"{}\"}} 1\n# HELP cove_draining 1 while the node is drained (no new sessions)\n# TYPE cove_draining gauge\ncove_draining {}\n",
            env!("CARGO_PKG_VERSION"),
            u8::from(self.draining.load(Ordering::Relaxed)),
        );
        out.push_str(&crate::metrics::METRICS.render());
        if let Some(r) = &self.replicator {
            out.push_str(&r.metrics());
        }
        out
    }

    fn sync_status(&self) -> String {
        match &self.replicator {
            Some(r) => r.status_json(),
            None => "{\"replication\":\"not configured\",\"peers\":[]}".to_string(),
        }
    }

    fn sync_now(
        &self,
        user: Option<String>,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
        Box::pin(async move {
            let Some(r) = &self.replicator else {
                return Err("replication is not configured on this node ([replication])".into());
            };
            r.sync_now(user).await.map(|reports| summarize(&reports))
        })
    }

    fn admin_token(&self) -> Option<String> {
        Some(self.token.clone())
    }

    fn route<'a>(&'a self, request: &'a Request) -> Option<Replying<'a>> {
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/health") => Some(Box::pin(async move { self.health() })),
            ("GET", "/sync/table") => Some(Box::pin(async move {
                Reply::text(
                    200,
                    match &self.replicator {
                        Some(r) => r.status_table(),
                        None => "replication is not configured on this node\n".to_string(),
                    },
                )
            })),
            ("GET", "/auth") => Some(Box::pin(self.auth_http(request))),
            // Another node, or this node's MTA lookups, asking whether a
            // user exists here (crate::cluster::lookup).
            ("GET", "/cluster/user") => Some(Box::pin(async move {
                let Some(address) = request.param("address") else {
                    return Reply::text(400, "bad request: address is missing\n");
                };
                let (status, body) =
                    crate::cluster::lookup::cluster_user_answer(&self.users, &address).await;
                Reply::text(status, body)
            })),
            ("POST", "/node/drain") => Some(Box::pin(async move {
                let grace = match request.param("grace_secs") {
                    None => self.drain_grace,
                    Some(g) => match g.parse::<u64>() {
                        Ok(g) => Duration::from_secs(g),
                        Err(_) => return Reply::text(400, "grace_secs is not a number\n"),
                    },
                };
                self.drain(grace)
            })),
            ("POST", "/node/undrain") => Some(Box::pin(async move { self.set_draining(false) })),
            _ => None,
        }
    }
}

impl Admin {
    /// `GET /health`.
    fn health(&self) -> Reply {
        if self.draining.load(Ordering::Relaxed) {
            Reply::text(503, "draining\n")
        } else {
            Reply::text(200, "serving\n")
        }
    }

    /// `POST /node/drain`: no new sessions now; the open ones are sent
    /// away after `grace` unless the node was undrained meanwhile.
    fn drain(&self, grace: Duration) -> Reply {
        let reply = self.set_draining(true);
        let draining = self.draining.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if draining.load(Ordering::Relaxed) {
                let told = crate::drain::evict_sessions();
                tracing::info!(
                    sessions = told,
                    "drain: open IMAP and POP3 sessions told to reconnect"
                );
            }
        });
        reply
    }

    /// `POST /node/drain` (at once), `POST /node/undrain`.
    fn set_draining(&self, on: bool) -> Reply {
        let was = self.draining.swap(on, Ordering::Relaxed);
        if was != on {
            tracing::info!(
                "node {}: /health answers {}",
                if on { "drained" } else { "undrained" },
                if on { "503 (no new sessions)" } else { "200" }
            );
        }
        Reply::text(200, if on { "draining\n" } else { "serving\n" })
    }

    /// `GET /auth`: nginx's auth_http (see the module's essay).
    async fn auth_http(&self, request: &Request) -> Reply {
        if let Some(key) = &self.auth_key {
            use subtle::ConstantTimeEq;
            let given = request.header("x-auth-key").unwrap_or_default();
            if !bool::from(given.as_bytes().ct_eq(key.0.as_bytes())) {
                tracing::warn!(peer = %request.peer, "auth_http: a request without the right X-Auth-Key refused");
                return Reply::text(403, "X-Auth-Key is missing or wrong\n");
            }
        }
        let header = |name: &str| request.header(name).unwrap_or_default();
        let protocol = header("auth-protocol").to_ascii_lowercase();
        let attempt: u32 = header("auth-login-attempt").parse().unwrap_or(1);
        let client = header("client-ip")
            .parse::<IpAddr>()
            .unwrap_or(request.peer.ip());
        let user = unescape(header("auth-user"));
        let pass = unescape(header("auth-pass"));
        let refuse = |status: &str| self.auth_refusal(status, &protocol, attempt, Duration::ZERO);
        if header("auth-method") != "plain" {
            return refuse("Only plain authentication is supported");
        }
        let (Some(user), Some(pass)) = (user, pass) else {
            return refuse("Invalid login or password");
        };
        let proto = if protocol == "pop3" {
            Proto::Pop3
        } else {
            Proto::Imap
        };
        if protocol == "smtp" && self.smtp_relay.is_none() {
            return refuse("SMTP is not relayed here ([http] smtp_relay)");
        }
        let address = cove_store::Address::parse(&user).ok();
        if let (Some(cluster), Some(address)) = (&self.cluster, &address)
            && cluster.pair_of(address).is_some()
            && !cluster.is_own(address)
        {
            return self.auth_elsewhere(cluster, address, request).await;
        }
        // Never sleeps: a penalty goes back to nginx as Auth-Wait.
        match self
            .auth
            .authenticate(&user, Secret(pass), client, proto)
            .await
        {
            AuthResult::Ok(_, _) => crate::metrics::METRICS.login(proto, true),
            AuthResult::Failed { wait } => {
                crate::metrics::METRICS.login(proto, false);
                tracing::warn!(
                    "auth_http login failed user={} peer={} protocol={}",
                    user.escape_debug(),
                    client,
                    protocol.escape_debug()
                );
                return self.auth_refusal("Invalid login or password", &protocol, attempt, wait);
            }
            AuthResult::TempFail => {
                return refuse("Temporary server problem, try again later");
            }
        }
        let routed = match (&self.cluster, &address) {
            // Submission: the same users and passwords, the relay the
            // configuration names.
            _ if protocol == "smtp" => self.smtp_relay,
            (Some(cluster), Some(address)) => {
                let wanted = match proto {
                    Proto::Pop3 => crate::cluster::Proto::Pop3,
                    _ => crate::cluster::Proto::Imap,
                };
                // Set by a node of another pair that could not reach the
                // node its health checks chose for this user (see
                // `auth_elsewhere`): this node may not have noticed yet.
                let unreachable = request.header(UNREACHABLE_HEADER);
                match cluster.serving_without(address, wanted, unreachable) {
                    Some((_, addr)) => Some(addr),
                    None => return refuse("No server for this user is up, try again later"),
                }
            }
            _ => match protocol.as_str() {
                "imap" => self.imap,
                "pop3" => self.pop3,
                _ => None,
            },
        };
        let Some(server) = routed else {
            return refuse("This protocol is not served here");
        };
        tracing::info!(user = %user.escape_debug(), client = %client, protocol = %protocol.escape_debug(), server = %server, "auth_http: login routed");
        Reply {
            headers: vec![
                ("Auth-Status".into(), "OK".into()),
                ("Auth-Server".into(), server.ip().to_string()),
                ("Auth-Port".into(), server.port().to_string()),
            ],
            ..Reply::text(200, "")
        }
    }

    /// A refusal; nginx lets the client try again after `Auth-Wait`: the
    /// penalty `wait`, at least the configured failure delay (whole seconds,
    /// rounded up).
    /// A user of another pair: the same request, asked of that pair's node
    /// that serves the user now; its `Auth-*` answer is passed on.
    async fn auth_elsewhere(
        &self,
        cluster: &crate::cluster::Cluster,
        address: &cove_store::Address,
        request: &Request,
    ) -> Reply {
        let Some((node, http)) = cluster.serving(address, crate::cluster::Proto::Http) else {
            return self.auth_refusal(
                "No server for this user is up, try again later",
                request.header("auth-protocol").unwrap_or_default(),
                1,
                Duration::ZERO,
            );
        };
        let forwarded: Vec<(&str, &str)> = request
            .headers
            .iter()
            .filter(|(n, _)| {
                let n = n.to_ascii_lowercase();
                n.starts_with("auth-")
                    || n == "client-ip"
                    || n == "client-host"
                    || n == "x-auth-key"
            })
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let mut asked = ask_auth(http, &forwarded).await;
        // The chosen node died before this node's health checks noticed
        // (it refuses or does not answer): its pair's other node serves
        // the user then, so ask it now rather than refuse the login.
        if !matches!(asked, Ok(Ok((200, _, _))))
            && let Some(standby) = cluster.standby(address, crate::cluster::Proto::Http, &node)
        {
            tracing::warn!(user = %address, node = %node, answer = ?asked.as_ref().map(|r| r.as_ref().map(|(s, _, _)| *s)), standby = %standby, "auth_http: the user's node did not answer; asking its pair's other node");
            // Told which node failed, so that it routes the login to
            // itself even if its own checks still see that node up.
            let mut told = forwarded.clone();
            told.push((UNREACHABLE_HEADER, node.as_str()));
            asked = ask_auth(standby, &told).await;
        }
        match asked {
            Ok(Ok((200, headers, _))) => {
                tracing::info!(user = %address, node = %node, "auth_http: asked the user's pair");
                Reply {
                    headers: headers
                        .into_iter()
                        .filter(|(n, _)| n.to_ascii_lowercase().starts_with("auth-"))
                        .collect(),
                    ..Reply::text(200, "")
                }
            }
            other => {
                tracing::warn!(user = %address, node = %node, answer = ?other.map(|r| r.map(|(s, _, _)| s)), "auth_http: the user's pair did not answer");
                self.auth_refusal(
                    "Temporary server problem, try again later",
                    request.header("auth-protocol").unwrap_or_default(),
                    1,
                    Duration::ZERO,
                )
            }
        }
    }

    fn auth_refusal(&self, status: &str, protocol: &str, attempt: u32, wait: Duration) -> Reply {
        let mut headers = vec![("Auth-Status".to_string(), status.to_string())];
        if attempt < MAX_ATTEMPTS {
            let wait = wait.max(self.auth_failure_delay);
            let wait = (wait.as_millis().div_ceil(1000) as u64).max(1);
            headers.push(("Auth-Wait".into(), wait.to_string()));
        }
        if protocol == "smtp" {
            headers.push(("Auth-Error-Code".into(), "535 5.7.8".into()));
        }
        Reply {
            headers,
            ..Reply::text(200, "")
        }
    }
}

/// Undo nginx's escaping of `Auth-User` and `Auth-Pass` (percent-escapes).
fn unescape(value: &str) -> Option<String> {
    cove_sync::http::percent_decode(value)
}

/// Ask another node's `GET /auth` with `headers`, within 10 s.
async fn ask_auth(
    http: SocketAddr,
    headers: &[(&str, &str)],
) -> Result<std::io::Result<cove_sync::http::Exchanged>, tokio::time::error::Elapsed> {
    tokio::time::timeout(
        Duration::from_secs(10),
        cove_sync::http::http_exchange(&http.to_string(), "GET", "/auth", headers),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_escapes_are_undone() {
        assert_eq!(unescape("a%20b%25c").as_deref(), Some("a b%c"));
        assert_eq!(unescape("caf%C3%A9").as_deref(), Some("café"));
        assert_eq!(unescape("bad%2"), None);
        assert_eq!(unescape("%FF"), None);
    }

    #[test]
    fn the_admin_token_is_made_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let t = admin_token(d.path()).unwrap();
        assert_eq!(t.len(), 64);
        assert_eq!(admin_token(d.path()).unwrap(), t, "kept");
        let mode = std::fs::metadata(d.path().join(TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
