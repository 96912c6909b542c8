//! The admin commands. Each prints what it did, and fails with a one-line
//! reason (main prints it and exits non-zero).

use anyhow::{Context, bail};
use std::io::{BufRead, IsTerminal};

use cove_store::{Address, Env, Store, StoreOptions, User};

use crate::auth::{self, Secret};
use crate::config::Config;

pub fn open_store(config: &Config) -> anyhow::Result<Store> {
    let store = Store::open(
        &config.data_dir,
        StoreOptions {
            hostname: config.hostname.clone(),
            env: Env::default(),
            durability: config.server.durability()?,
        },
    )
    .with_context(|| {
        format!(
            "cannot open the data directory {}",
            config.data_dir.display()
        )
    })?;
    store.set_default_message_quota(config.server.default_message_quota);
    store.set_open_accounts(config.server.open_accounts);
    if config.server.index_new_mail {
        let fulltext = if config.server.fulltext_new_mail {
            cove_store::FullTextOnArrival::Everyone
        } else {
            cove_store::FullTextOnArrival::Indexed
        };
        store.set_deriver(std::sync::Arc::new(crate::derive::ArrivalViews), fulltext);
    }
    Ok(store)
}

fn address(s: &str) -> anyhow::Result<Address> {
    Ok(Address::parse(s)?)
}

/// Read a password from standard input (its first line). On a terminal
/// the password is asked twice, without echo, and both must match.
fn password_from_stdin() -> anyhow::Result<Secret> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return read_password_line();
    }
    let first = prompt_hidden("Password: ")?;
    let again = prompt_hidden("Password again: ")?;
    if first.0 != again.0 {
        bail!("the two passwords differ; nothing changed");
    }
    Ok(first)
}

fn read_password_line() -> anyhow::Result<Secret> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("read the password from standard input")?;
    let pw = line.trim_end_matches(['\r', '\n']).to_string();
    if pw.is_empty() {
        bail!("empty password on standard input");
    }
    Ok(Secret(pw))
}

/// Ask for a password on the terminal with echo off (restored afterwards,
/// also when reading fails).
fn prompt_hidden(prompt: &str) -> anyhow::Result<Secret> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).context("read the terminal's settings")?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    quiet.local_modes.insert(LocalModes::ECHONL);
    // Echo off before the prompt, so nothing typed after it is shown.
    tcsetattr(&stdin, OptionalActions::Now, &quiet).context("turn the terminal's echo off")?;
    eprint!("{prompt}");
    let read = read_password_line();
    let restored = tcsetattr(&stdin, OptionalActions::Now, &saved);
    let pw = read?;
    restored.context("restore the terminal's echo")?;
    Ok(pw)
}

/// `cove user add`; `own_message_limit`: `quota.messages` is the user's own
/// (else the server's default applies).
pub fn user_add(
    config: &Config,
    email: &str,
    password_stdin: bool,
    quota: cove_store::Quota,
    own_message_limit: bool,
) -> anyhow::Result<()> {
    let address = address(email)?;
    let hash = if password_stdin {
        Some(auth::hash_password(&password_from_stdin()?)?)
    } else {
        None
    };
    let store = open_store(config)?;
    let has_password = hash.is_some();
    let mut user = store.add_user(&address, hash, quota.bytes)?;
    if own_message_limit {
        store
            .directory()
            .set_message_quota(&address, Some(quota.messages))?;
        user.message_quota = Some(quota.messages);
    }
    let limits = store.limits(&user);
    let account = store.account(&user)?;
    let names: Vec<String> = account.mailboxes()?.into_iter().map(|m| m.name).collect();
    println!(
        "added user {address} ({}; quota {}; messages {}; mailboxes: {})",
        if has_password {
            "password set"
        } else {
            "no password: delivery only until `cove user passwd`"
        },
        if limits.bytes == 0 {
            "none".to_string()
        } else {
            format!("{} bytes", limits.bytes)
        },
        if limits.messages == 0 {
            "no limit".to_string()
        } else {
            limits.messages.to_string()
        },
        names.join(", ")
    );
    Ok(())
}

pub fn user_del(config: &Config, email: &str, purge: bool) -> anyhow::Result<()> {
    let address = address(email)?;
    let store = open_store(config)?;
    let user = find_user(&store, &address)?;
    store.directory().remove(&address)?;
    store.close_account(&user);
    let home = store.home_of(&address);
    if purge {
        std::fs::remove_dir_all(&home)
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .with_context(|| format!("user removed, but cannot remove {}", home.display()))?;
        println!(
            "removed user {address} and their mail (blobs no longer used are freed by `cove dedup gc`)"
        );
    } else {
        println!(
            "removed user {address}; their mail stays in {} (use --purge to delete it)",
            home.display()
        );
    }
    Ok(())
}

pub fn user_list(config: &Config) -> anyhow::Result<()> {
    let store = open_store(config)?;
    let users = store.directory().list()?;
    for u in &users {
        let quota = if u.quota == 0 {
            "-".to_string()
        } else {
            u.quota.to_string()
        };
        // A hash imported from Dovecot (`{SCHEME}...`) is shown by its
        // scheme until the user's first login rehashes it to argon2id.
        let pw = match &u.password {
            Some(h) if h.0.starts_with('{') => {
                let scheme = h.0.split_once('}').map_or("", |(s, _)| s);
                format!("password={scheme}}}")
            }
            Some(_) => "password".to_string(),
            None => "no-password".to_string(),
        };
        let messages = match store.limits(u).messages {
            0 => "-".to_string(),
            n => n.to_string(),
        };
        println!("{}\t{pw}\tquota={quota}\tmessages={messages}", u.address);
    }
    println!("{} user(s)", users.len());
    Ok(())
}

/// The user `address`, or the one message every command gives for a user
/// that does not exist.
fn find_user(store: &Store, address: &Address) -> anyhow::Result<User> {
    store
        .user(address)?
        .with_context(|| format!("no such user {address}"))
}

pub fn user_passwd(config: &Config, email: &str, password_stdin: bool) -> anyhow::Result<()> {
    let address = address(email)?;
    if !password_stdin && !std::io::stdin().is_terminal() {
        bail!("give the new password with --password-stdin");
    }
    // Known before the password is asked for.
    let store = open_store(config)?;
    find_user(&store, &address)?;
    let hash = auth::hash_password(&password_from_stdin()?)?;
    store.directory().set_password(&address, Some(hash))?;
    println!("password of {address} changed");
    Ok(())
}

pub fn mailbox_list(config: &Config, email: &str) -> anyhow::Result<()> {
    let address = address(email)?;
    let store = open_store(config)?;
    let user = find_user(&store, &address)?;
    let account = store.account(&user)?;
    // Opening the account reconciled it already; scan again in case the
    // Maildir changed since (the server may be delivering meanwhile).
    let report = account.opening_scan().plus(&account.scan()?);
    println!(
        "{:<24} {:<10} {:>8} {:>8} {:>12} {:>12} {:>8}",
        "MAILBOX", "USE", "MESSAGES", "UNSEEN", "BYTES", "UIDVALIDITY", "UIDNEXT"
    );
    for mb in account.mailboxes()? {
        let st = account.status(&mb.guid)?;
        println!(
            "{:<24} {:<10} {:>8} {:>8} {:>12} {:>12} {:>8}",
            mb.name,
            mb.special_use.as_deref().unwrap_or("-"),
            st.messages,
            st.unseen,
            st.size,
            mb.uidvalidity,
            mb.uidnext
        );
    }
    if !report.is_empty() {
        println!(
            "reconciled with the Maildir: {} message(s) added, {} expunged, {} flag change(s), {} mailbox(es) added, {} removed",
            report.messages_added,
            report.messages_expunged,
            report.flags_changed,
            report.mailboxes_added,
            report.mailboxes_removed
        );
    }
    Ok(())
}

pub fn index_rebuild(config: &Config, email: &str) -> anyhow::Result<()> {
    let address = address(email)?;
    let store = open_store(config)?;
    let user = find_user(&store, &address)?;
    let home = store.home_of(&address);
    let index = home.join("index.sqlite");
    if index.exists() {
        let secs = store.env().now_secs();
        let backup = home.join(format!("index.sqlite.before-rebuild-{secs}"));
        // Kept, not deleted: the rebuild must never lose what it replaces.
        std::fs::rename(&index, &backup)
            .with_context(|| format!("move {} aside", index.display()))?;
        for suffix in ["-wal", "-shm"] {
            let side = home.join(format!("index.sqlite{suffix}"));
            if side.exists() {
                std::fs::rename(
                    &side,
                    home.join(format!("index.sqlite.before-rebuild-{secs}{suffix}")),
                )
                .with_context(|| format!("move {} aside", side.display()))?;
            }
        }
        println!("moved the old index aside to {}", backup.display());
    }
    let account = store.account(&user)?;
    let mut messages = 0;
    let mailboxes = account.mailboxes()?;
    for mb in &mailboxes {
        messages += account.status(&mb.guid)?.messages;
    }
    println!(
        "rebuilt the index of {address} from its Maildir: {} mailbox(es), {messages} message(s); GUIDs kept, UIDVALIDITY renewed",
        mailboxes.len()
    );
    Ok(())
}

pub fn dedup_stats(config: &Config) -> anyhow::Result<()> {
    let store = open_store(config)?;
    let s = store.blobs().stats()?;
    println!("messages:        {}", s.messages);
    println!("blobs:           {}", s.blobs);
    println!("logical bytes:   {}", s.logical_bytes);
    println!("stored bytes:    {}", s.stored_bytes);
    println!("dedup ratio:     {:.2}", s.ratio());
    println!(
        "unreferenced:    {} blob(s) (`cove dedup gc` removes them)",
        s.unreferenced_blobs
    );
    Ok(())
}

pub fn dedup_gc(config: &Config) -> anyhow::Result<()> {
    let store = open_store(config)?;
    let r = store.blobs().gc()?;
    println!(
        "removed {} unreferenced blob(s), freeing {} bytes; {} kept because they were linked meanwhile; {} abandoned temporary file(s) removed",
        r.removed_blobs, r.freed_bytes, r.kept_in_use, r.removed_tmp
    );
    Ok(())
}

pub fn dedup_verify(config: &Config) -> anyhow::Result<()> {
    let store = open_store(config)?;
    let report = store.verify_content()?;
    for (id, actual) in &report.corrupt_blobs {
        println!("corrupt blob: {id} holds {actual}; moved to blobs/quarantine/");
    }
    for m in &report.messages {
        println!("damaged message: {m}");
    }
    if !report.is_clean() {
        bail!(
            "{} of {} message file(s) do not hold their content ({} of {} blob(s) corrupt); the running server relinks them to a verified copy, fetched from its peer if this node has none",
            report.messages.len(),
            report.files_checked,
            report.corrupt_blobs.len(),
            report.blobs_checked
        );
    }
    println!(
        "verified {} blob(s) and {} message file(s): all match their content hash",
        report.blobs_checked, report.files_checked
    );
    Ok(())
}

/// The running server's admin endpoint: the first `[http] listen` address
/// (an unspecified IP means this host's loopback).
fn admin_address(config: &Config) -> anyhow::Result<String> {
    let listen = config
        .http
        .as_ref()
        .and_then(|h| h.listen.first())
        .context(
            "cove sync talks to the running server over [http] listen, which is not configured",
        )?;
    Ok(match listen.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
        _ => listen.clone(),
    })
}

fn admin_request(config: &Config, method: &str, path: &str) -> anyhow::Result<String> {
    let addr = admin_address(config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // State-changing requests carry the admin token the server keeps in
    // its data directory (server/src/admin.rs).
    let token = match method {
        "GET" => None,
        _ => Some(
            std::fs::read_to_string(config.data_dir.join(crate::admin::TOKEN_FILE))
                .with_context(|| {
                    format!(
                        "cannot read the admin token in {} (is the server running with this data_dir?)",
                        config.data_dir.display()
                    )
                })?
                .trim()
                .to_string(),
        ),
    };
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    let (status, _, body) = runtime
        .block_on(cove_sync::http::http_exchange(
            &addr, method, path, &headers,
        ))
        .with_context(|| format!("cannot reach the running server at {addr} ([http] listen)"))?;
    if status != 200 {
        anyhow::bail!("{}", body.trim());
    }
    Ok(body)
}

/// `cove sync now [EMAIL]`.
pub fn sync_now(config: &Config, email: Option<&str>) -> anyhow::Result<()> {
    if let Some(e) = email {
        address(e)?;
    }
    let body = admin_request(config, "POST", &cove_sync::http::sync_now_path(email))?;
    print!("{body}");
    Ok(())
}

/// `cove node drain` / `cove node undrain`.
pub fn node_drain(config: &Config, on: bool, grace: Option<u64>) -> anyhow::Result<()> {
    let path = match (on, grace) {
        (true, Some(g)) => format!("/node/drain?grace_secs={g}"),
        (true, None) => "/node/drain".to_string(),
        (false, _) => "/node/undrain".to_string(),
    };
    let body = admin_request(config, "POST", &path)?;
    print!("{body}");
    Ok(())
}

/// `cove sync status`: a table, or the JSON document with `--json`.
pub fn sync_status(config: &Config, json: bool) -> anyhow::Result<()> {
    let path = if json { "/sync/status" } else { "/sync/table" };
    let body = admin_request(config, "GET", path)?;
    println!("{}", body.trim_end());
    Ok(())
}
