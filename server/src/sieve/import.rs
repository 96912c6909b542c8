//! `cove import maildir`: a Dovecot user's Pigeonhole scripts come along.
//! Pigeonhole keeps them in the home as `sieve/<name>.sieve` with
//! `.dovecot.sieve` a symlink to the active one (or, in older setups, a
//! single `.dovecot.sieve` file). Each script is compiled first: one that
//! cove cannot run is reported with its line and left out, never stored
//! half-working; importing again replaces the scripts with the same names.

use std::fs;
use std::path::{Path, PathBuf};

use cove_store::{Address, Store};

use super::{SieveConfig, SieveEngine};

/// The Dovecot home of a Maildir: the folder holding `sieve/` or
/// `.dovecot.sieve`, the Maildir's own folder or its parent.
fn home_of(maildir: &Path) -> Option<PathBuf> {
    [Some(maildir), maildir.parent()]
        .into_iter()
        .flatten()
        .find(|h| h.join("sieve").is_dir() || h.join(".dovecot.sieve").exists())
        .map(Path::to_path_buf)
}

/// Import the scripts beside `maildir` into `address`'s scripts. Returns
/// one line for the report, or `None` when there was nothing to import.
pub fn pigeonhole(
    store: &Store,
    config: &SieveConfig,
    hostname: &str,
    address: &Address,
    maildir: &Path,
) -> anyhow::Result<Option<String>> {
    let Some(home) = home_of(maildir) else {
        return Ok(None);
    };
    let engine = SieveEngine::new(config, hostname)?;
    let scripts = store.sieve(address);
    let limits = config.limits();
    let mut imported = Vec::new();
    let mut left_out = Vec::new();
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    if let Ok(entries) = fs::read_dir(home.join("sieve")) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".sieve")
                && e.path().is_file()
            {
                found.push((stem.to_string(), e.path()));
            }
        }
    }
    found.sort();
    // The active script: the link's target, or a lone file.
    let marker = home.join(".dovecot.sieve");
    let mut active = None;
    match fs::read_link(&marker) {
        Ok(target) => {
            let target = home.join(target);
            active = target
                .file_name()
                .and_then(|f| f.to_str())
                .and_then(|f| f.strip_suffix(".sieve"))
                .map(str::to_string);
        }
        Err(_) if marker.is_file() => {
            found.push(("dovecot".into(), marker.clone()));
            active = Some("dovecot".into());
        }
        Err(_) => {}
    }
    for (name, path) in &found {
        let text = fs::read(path)?;
        let stored = engine
            .compile(&text)
            .map_err(|e| format!("does not compile: {e}"))
            .and_then(|_| scripts.put(name, &text, &limits).map_err(|e| e.to_string()));
        match stored {
            Ok(()) => imported.push(name.clone()),
            Err(why) => left_out.push(format!("{name} ({why})")),
        }
    }
    let activated = match active.filter(|a| imported.contains(a)) {
        Some(a) => {
            scripts.activate(Some(&a))?;
            format!(", {a} active")
        }
        None => String::new(),
    };
    if imported.is_empty() && left_out.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "  sieve scripts from {}: {} imported{activated}{}",
        home.display(),
        imported.len(),
        if left_out.is_empty() {
            String::new()
        } else {
            format!("; LEFT OUT: {}", left_out.join("; "))
        }
    )))
}
