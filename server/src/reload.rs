//! SIGHUP: take a new configuration without a restart.
//!
//! The problem: certbot renews the certificate every two or three months,
//! an operator raises a limit or turns on debug logs, and none of that
//! should cost a restart, which cuts every IMAP IDLE session of every user.
//!
//! How: the file named at start (`--config`, `COVE_CONFIG` or
//! /etc/cove/cove.toml) is read again and checked exactly as at start; a
//! file that does not pass is refused whole (one ERROR line) and nothing
//! changes. Then every registered [`Part`] of the running server applies
//! what it can (each takes the whole new [`Config`]): the TLS certificate
//! and key are read again (a handshake that starts afterwards presents the
//! new chain; an open session keeps the keys it negotiated), the protocol
//! limits go to the sessions accepted from then on (a session keeps the
//! limits it started with, as a Dovecot process does), the log level and
//! `trusted_proxies` change at once. The keys whose value changed between
//! the old file and the new one are compared with what the parts claim;
//! the rest (listen addresses, the data directory, replication...) needs a
//! restart, and the one log line says which.
//!
//! A part is a name, the keys it applies, and a function: the cluster map
//! and anything else that can be reloaded joins by [`Reloader::register`].
//!
//! Rejected: re-executing the binary (a restart by another name: sessions
//! are cut), and watching the files with inotify (certbot's deploy hook and
//! `systemctl reload` send SIGHUP; a half-written file would be picked up).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use crate::config::Config;

/// A value shared by everything that reads it, replaced whole by a reload;
/// a reader keeps the `Arc` it got for as long as it wants.
pub struct Live<T>(RwLock<Arc<T>>);

impl<T> Live<T> {
    pub fn new(value: T) -> Self {
        Live(RwLock::new(Arc::new(value)))
    }

    pub fn get(&self) -> Arc<T> {
        match self.0.read() {
            Ok(v) => v.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn set(&self, value: T) {
        match self.0.write() {
            Ok(mut v) => *v = Arc::new(value),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(value),
        }
    }
}

/// What a part of the running server says it did with a new configuration.
pub type Applied = anyhow::Result<Option<String>>;

/// One part of the running server that can take a new configuration.
pub struct Part {
    /// For the log line (`tls certificate`, `log level`).
    pub name: &'static str,
    /// Whether this part applies the configuration key `key` (a dotted
    /// path: `imap.max_line_length`, `trusted_proxies`, `cluster.map`).
    pub applies: Box<dyn Fn(&str) -> bool + Send + Sync>,
    /// Apply the new configuration; `Ok(Some(what))` adds `what` to the log
    /// line (a changed certificate, a level `info → debug`).
    pub apply: Box<dyn Fn(&Config) -> Applied + Send + Sync>,
}

impl Part {
    pub fn new(
        name: &'static str,
        applies: impl Fn(&str) -> bool + Send + Sync + 'static,
        apply: impl Fn(&Config) -> Applied + Send + Sync + 'static,
    ) -> Part {
        Part {
            name,
            applies: Box::new(applies),
            apply: Box::new(apply),
        }
    }
}

/// What one reload did, also written as its one log line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Keys and parts applied (`imap.max_line_length`, `tls certificate
    /// renewed`).
    pub applied: Vec<String>,
    /// Keys that changed in the file but take effect at the next start.
    pub needs_restart: Vec<String>,
    /// Parts that could not apply the new configuration, with the reason.
    pub failed: Vec<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if self.applied.is_empty() {
            parts.push("nothing changed".to_string());
        } else {
            parts.push(format!("applied {}", self.applied.join(", ")));
        }
        if !self.failed.is_empty() {
            parts.push(format!("failed: {}", self.failed.join("; ")));
        }
        if !self.needs_restart.is_empty() {
            parts.push(format!(
                "needs a restart: {}",
                self.needs_restart.join(", ")
            ));
        }
        f.write_str(&parts.join("; "))
    }
}

/// The reload of a running server.
pub struct Reloader {
    /// The configuration file read at start; `None`: the embedded defaults.
    path: Option<PathBuf>,
    /// The file's keys as the server runs them (to tell what changed).
    running: Mutex<toml::Table>,
    parts: Mutex<Vec<Arc<Part>>>,
}

impl Reloader {
    /// `text`: the file's content at start (empty for the embedded
    /// defaults).
    pub fn new(path: Option<PathBuf>, text: &str) -> Reloader {
        Reloader {
            path,
            running: Mutex::new(text.parse().unwrap_or_default()),
            parts: Mutex::new(Vec::new()),
        }
    }

    pub fn register(&self, part: Part) {
        if let Ok(mut parts) = self.parts.lock() {
            parts.push(Arc::new(part));
        }
    }

    /// Read the file again and apply it; blocking (file reads). Logs one
    /// line: INFO, WARN when a part failed, ERROR when the file was refused.
    pub fn reload(&self) -> Option<Report> {
        let (config, table) = match self.read() {
            Ok(x) => x,
            Err(e) => {
                let reason = crate::error_text::chain(&e);
                tracing::error!("SIGHUP: configuration refused, nothing changed: {reason}");
                return None;
            }
        };
        let parts: Vec<Arc<Part>> = self.parts.lock().map(|p| p.clone()).unwrap_or_default();
        let mut report = Report::default();
        let changed = match self.running.lock() {
            Ok(mut running) => {
                let changed = changed_keys(&running, &table);
                *running = table;
                changed
            }
            Err(_) => Vec::new(),
        };
        for key in changed {
            if parts.iter().any(|p| (p.applies)(&key)) {
                report.applied.push(key);
            } else {
                report.needs_restart.push(key);
            }
        }
        for part in &parts {
            match (part.apply)(&config) {
                Ok(Some(what)) => report.applied.push(what),
                Ok(None) => {}
                Err(e) => {
                    report
                        .failed
                        .push(format!("{} ({})", part.name, crate::error_text::chain(&e)))
                }
            }
        }
        if report.failed.is_empty() {
            tracing::info!("SIGHUP: {report}");
        } else {
            tracing::warn!("SIGHUP: {report}");
        }
        Some(report)
    }

    fn read(&self) -> anyhow::Result<(Config, toml::Table)> {
        match &self.path {
            None => Ok((Config::embedded(), toml::Table::new())),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
                let config = Config::parse(&text, &p.display().to_string())?;
                Ok((config, text.parse().unwrap_or_default()))
            }
        }
    }
}

/// The dotted keys whose value differs between two files (a key present in
/// one only counts; an array of tables is one value).
fn changed_keys(old: &toml::Table, new: &toml::Table) -> Vec<String> {
    let mut out = Vec::new();
    diff("", old, new, &mut out);
    out.sort();
    out
}

fn diff(prefix: &str, old: &toml::Table, new: &toml::Table, out: &mut Vec<String>) {
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for key in keys {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (old.get(key), new.get(key)) {
            (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) => diff(&path, a, b, out),
            (Some(toml::Value::Table(a)), None) => diff(&path, a, &toml::Table::new(), out),
            (None, Some(toml::Value::Table(b))) => diff(&path, &toml::Table::new(), b, out),
            (a, b) if a != b => out.push(path),
            _ => {}
        }
    }
}

/// A protocol's shared session context, whose limits (its configuration
/// section) a reload replaces for the sessions accepted afterwards.
pub trait Reconfigure: Send + Sync + Sized + 'static {
    type Section: Clone;
    /// The same shared state (connection counts and the like) with `section`.
    fn with_config(&self, section: Self::Section) -> Self;
}

/// The part that gives `live` the limits of `[section]` (`pick` finds it in
/// a configuration): every key of the section but where it listens.
pub fn limits_part<T: Reconfigure>(
    name: &'static str,
    section: &'static str,
    live: Arc<Live<T>>,
    pick: fn(&Config) -> Option<&T::Section>,
) -> Part {
    Part::new(
        name,
        move |key| {
            key.strip_prefix(section)
                .is_some_and(|rest| rest.starts_with('.'))
                && is_session_limit(key)
        },
        move |config| {
            if let Some(new) = pick(config) {
                live.set(live.get().with_config(new.clone()));
            }
            Ok(None)
        },
    )
}

/// Whether `key` is a protocol limit a new session takes from a reload:
/// everything in `[lmtp]`, `[imap]` and `[pop3]` but where they listen.
pub fn is_session_limit(key: &str) -> bool {
    let Some((section, name)) = key.split_once('.') else {
        return false;
    };
    matches!(section, "lmtp" | "imap" | "pop3")
        && !matches!(name, "listen" | "tls_listen" | "proxy_protocol")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_are_dotted_paths() {
        let old: toml::Table =
            "a = 1\n[imap]\nlisten = [\"x\"]\nmax_line_length = 10\n[tls]\ncert = \"c\"\n"
                .parse()
                .unwrap();
        let new: toml::Table =
            "a = 1\n[imap]\nlisten = [\"y\"]\nmax_line_length = 10\n[pop3]\nlisten = []\n"
                .parse()
                .unwrap();
        assert_eq!(
            changed_keys(&old, &new),
            vec!["imap.listen", "pop3.listen", "tls.cert"]
        );
        assert!(is_session_limit("imap.max_line_length"));
        assert!(!is_session_limit("imap.listen"));
        assert!(!is_session_limit("replication.debounce_ms"));
    }

    #[test]
    fn the_report_is_one_line_saying_what_needs_a_restart() {
        let r = Report {
            applied: vec![
                "imap.max_line_length".into(),
                "tls certificate renewed".into(),
            ],
            needs_restart: vec!["lmtp.listen".into()],
            failed: vec![],
        };
        assert_eq!(
            r.to_string(),
            "applied imap.max_line_length, tls certificate renewed; needs a restart: lmtp.listen"
        );
        assert_eq!(Report::default().to_string(), "nothing changed");
    }
}
