//! `cove sieve list|put|get|activate|delete USER`: an operator's view of a
//! user's scripts, with the same checks as ManageSieve.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use cove_store::Address;

use super::{SieveConfig, SieveEngine};
use crate::config::Config;

fn open(config: &Config, email: &str) -> anyhow::Result<(cove_store::Store, Address, SieveConfig)> {
    let sieve = config.sieve.clone().unwrap_or_default();
    let store = crate::cli::open_store(config)?;
    let address = Address::parse(email)?;
    store
        .user(&address)?
        .with_context(|| format!("no such user {address}"))?;
    Ok((store, address, sieve))
}

pub fn list(config: &Config, email: &str) -> anyhow::Result<()> {
    let (store, address, _) = open(config, email)?;
    let scripts = store.sieve(&address).list()?;
    if scripts.is_empty() {
        println!("{address} has no scripts");
    }
    for s in scripts {
        println!("{}{}", s.name, if s.active { " (active)" } else { "" });
    }
    Ok(())
}

/// Store a script from FILE (or standard input) after compiling it.
pub fn put(
    config: &Config,
    email: &str,
    name: &str,
    file: Option<&Path>,
    activate: bool,
) -> anyhow::Result<()> {
    let (store, address, sieve) = open(config, email)?;
    let text = match file {
        Some(p) => std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
        None => {
            let mut b = Vec::new();
            std::io::stdin()
                .take(sieve.max_script_size + 1)
                .read_to_end(&mut b)
                .context("read the script from standard input")?;
            b
        }
    };
    let engine = SieveEngine::new(&sieve, &config.hostname)?;
    if let Err(e) = engine.compile(&text) {
        bail!("script {name} not stored: {e}");
    }
    let scripts = store.sieve(&address);
    scripts.put(name, &text, &sieve.limits())?;
    if activate {
        scripts.activate(Some(name))?;
    }
    println!(
        "stored script {name} for {address} ({} bytes{})",
        text.len(),
        if activate { ", active" } else { "" }
    );
    Ok(())
}

pub fn get(config: &Config, email: &str, name: &str) -> anyhow::Result<()> {
    let (store, address, _) = open(config, email)?;
    let text = store.sieve(&address).get(name)?;
    use std::io::Write;
    std::io::stdout().write_all(&text)?;
    Ok(())
}

/// Make NAME active, or none with `None`.
pub fn activate(config: &Config, email: &str, name: Option<&str>) -> anyhow::Result<()> {
    let (store, address, _) = open(config, email)?;
    store.sieve(&address).activate(name)?;
    match name {
        Some(n) => println!("script {n} is now active for {address}"),
        None => println!("no script is active for {address} any more"),
    }
    Ok(())
}

pub fn delete(config: &Config, email: &str, name: &str) -> anyhow::Result<()> {
    let (store, address, _) = open(config, email)?;
    store.sieve(&address).delete(name)?;
    println!("deleted script {name} of {address}");
    Ok(())
}
