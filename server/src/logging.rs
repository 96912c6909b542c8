//! Log output: one line per event on standard error, at a level a reload
//! can change (`[server] log_level`, an `EnvFilter` directive). `COVE_LOG`
//! in the environment wins over the file, at start and at every reload.

use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Registry, reload};

struct Level {
    handle: reload::Handle<EnvFilter, Registry>,
    /// The directive in force, as given.
    current: Mutex<String>,
    /// Set from COVE_LOG: the configuration does not change it.
    from_env: bool,
}

static LEVEL: OnceLock<Level> = OnceLock::new();

/// Install the subscriber: COVE_LOG if set and valid, else `default`.
pub fn init(default: &str) {
    let env = std::env::var("COVE_LOG")
        .ok()
        .filter(|d| EnvFilter::try_new(d).is_ok());
    let directive = env.clone().unwrap_or_else(|| default.to_string());
    let filter = EnvFilter::try_new(&directive).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let output = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        // One event, one line, whatever a client put in it (client_text.rs).
        .with_writer(|| crate::client_text::OneLinePerEvent(std::io::stderr()));
    if tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .is_ok()
    {
        let _ = LEVEL.set(Level {
            handle,
            current: Mutex::new(directive),
            from_env: env.is_some(),
        });
    }
}

/// Make `directive` the level in force. `Ok(Some("info → debug"))` when
/// it changed, `Ok(None)` when it was already in force or COVE_LOG rules.
pub fn set_level(directive: &str) -> anyhow::Result<Option<String>> {
    let Some(level) = LEVEL.get() else {
        return Ok(None);
    };
    if level.from_env {
        return Ok(None);
    }
    let mut current = level
        .current
        .lock()
        .map_err(|_| anyhow::anyhow!("log level lock poisoned"))?;
    if *current == directive {
        return Ok(None);
    }
    let filter = EnvFilter::try_new(directive)
        .map_err(|e| anyhow::anyhow!("[server] log_level {directive:?}: {e}"))?;
    level
        .handle
        .reload(filter)
        .map_err(|e| anyhow::anyhow!("log level: {e}"))?;
    let change = format!("{current} → {directive}");
    *current = directive.to_string();
    Ok(Some(change))
}

/// Whether `directive` is a valid level (checked when the file is read).
pub fn check_level(directive: &str) -> anyhow::Result<()> {
    EnvFilter::try_new(directive)
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("[server] log_level {directive:?}: {e}"))
}
