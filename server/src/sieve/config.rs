//! `[sieve]`: Sieve filtering at delivery, ManageSieve (RFC 5804), and the
//! limits of both. Absent from an operator's file: no script runs and no
//! ManageSieve listener starts; the embedded defaults turn both on.

use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SieveConfig {
    /// ManageSieve listeners (STARTTLS offered when TLS is configured);
    /// empty: none.
    #[serde(default)]
    pub listen: Vec<String>,
    /// ManageSieve over implicit TLS.
    #[serde(default)]
    pub tls_listen: Vec<String>,
    /// Scripts a user may keep.
    #[serde(default = "default_max_scripts")]
    pub max_scripts: usize,
    /// Largest script, in bytes.
    #[serde(default = "default_max_script_size")]
    pub max_script_size: u64,
    /// Instructions a script (with its includes) may run per message;
    /// past it the message goes to INBOX.
    #[serde(default = "default_cpu_limit")]
    pub cpu_limit: usize,
    /// Nested `include`s (RFC 6609).
    #[serde(default = "default_max_includes")]
    pub max_nested_includes: usize,
    /// Messages larger than this are not filtered (delivered as without a
    /// script, logged): a script sees the whole message in memory.
    #[serde(default = "default_max_message_size")]
    pub max_message_size: u64,
    /// Scripts run before each user's own, in order (Pigeonhole's
    /// sieve_before), e.g. spam to Junk.
    #[serde(default)]
    pub before: Vec<PathBuf>,
    /// Scripts run after each user's own (sieve_after).
    #[serde(default)]
    pub after: Vec<PathBuf>,
    /// Folder holding scripts for `include :global` (RFC 6609).
    #[serde(default)]
    pub global_dir: Option<PathBuf>,
    /// SMTP relay for vacation replies and redirects (`host:port`); unset,
    /// those actions are logged and not sent (a redirect then keeps).
    #[serde(default)]
    pub relay: Option<String>,
    /// Seconds the relay may take for one message.
    #[serde(default = "default_relay_timeout")]
    pub relay_timeout_secs: u64,
    /// Redirects per message (RFC 5228 §4.2 asks for a limit).
    #[serde(default = "default_max_redirects")]
    pub max_redirects: usize,
    /// Redirects and notify messages per user per day (UTC).
    #[serde(default = "default_max_redirects_per_day")]
    pub max_redirects_per_day: u32,
    /// Lower bound of vacation `:days`/`:seconds`, in seconds (RFC 5230
    /// §4.1, RFC 6131 §2).
    #[serde(default = "default_min_vacation_period")]
    pub min_vacation_period_secs: u64,
    /// ManageSieve: longest command line, in bytes.
    #[serde(default = "default_max_line_length")]
    pub max_line_length: usize,
    /// ManageSieve: bad commands in a row before the connection is closed.
    #[serde(default = "crate::config::default_max_errors")]
    pub max_bad_commands: u32,
    /// ManageSieve: idle seconds before the connection is closed.
    #[serde(default = "default_idle_timeout")]
    pub timeout_secs: u64,
    /// ManageSieve: seconds a client may take from connecting to logging in.
    #[serde(default = "crate::config::default_login_timeout")]
    pub login_timeout_secs: u64,
    /// ManageSieve: seconds a TLS handshake may take.
    #[serde(default = "crate::config::default_handshake_timeout")]
    pub handshake_timeout_secs: u64,
    #[serde(default = "crate::config::default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "crate::config::default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// Allow AUTHENTICATE PLAIN on connections neither TLS nor loopback.
    #[serde(default)]
    pub allow_plaintext_auth: bool,
    /// Delay before answering a failed login, in milliseconds.
    #[serde(default = "crate::config::default_auth_failure_delay")]
    pub auth_failure_delay_ms: u64,
}

impl Default for SieveConfig {
    fn default() -> Self {
        toml::from_str("").expect("every [sieve] key has a default")
    }
}

impl SieveConfig {
    pub fn limits(&self) -> cove_store::SieveLimits {
        cove_store::SieveLimits {
            max_scripts: self.max_scripts,
            max_script_size: self.max_script_size,
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        for (key, list) in [("listen", &self.listen), ("tls_listen", &self.tls_listen)] {
            for a in list {
                a.parse::<std::net::SocketAddr>().map_err(|_| {
                    anyhow::anyhow!("[sieve] {key}: {a:?} is not an IP:port address")
                })?;
            }
        }
        if self.max_scripts < 1 {
            anyhow::bail!("[sieve] max_scripts must be at least 1");
        }
        if self.max_script_size < 64 {
            anyhow::bail!("[sieve] max_script_size must be at least 64 bytes");
        }
        if self.cpu_limit < 100 {
            anyhow::bail!("[sieve] cpu_limit must be at least 100 instructions");
        }
        if self.max_line_length < 1024 {
            anyhow::bail!("[sieve] max_line_length must be at least 1024");
        }
        if let Some(relay) = &self.relay
            && !relay.contains(':')
        {
            anyhow::bail!("[sieve] relay: {relay:?} is not host:port");
        }
        Ok(())
    }
}

fn default_max_scripts() -> usize {
    cove_store::SieveLimits::default().max_scripts
}
fn default_max_script_size() -> u64 {
    cove_store::SieveLimits::default().max_script_size
}
fn default_cpu_limit() -> usize {
    20_000
}
fn default_max_includes() -> usize {
    3
}
fn default_max_message_size() -> u64 {
    16 * 1024 * 1024
}
fn default_relay_timeout() -> u64 {
    30
}
fn default_max_redirects() -> usize {
    4
}
fn default_max_redirects_per_day() -> u32 {
    100
}
fn default_min_vacation_period() -> u64 {
    // RFC 5230 §4.1: at least a day unless the site allows less; RFC 6131
    // lets `:seconds` go lower, which tests and some sites want.
    60
}
fn default_max_line_length() -> usize {
    8192
}
fn default_idle_timeout() -> u64 {
    600
}
