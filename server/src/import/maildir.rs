//! `cove import maildir`: a user's Dovecot Maildir++ tree into cove.
//!
//! # What is read (never written)
//! - Folders: the Maildir root is INBOX, each `.Name` directory with a
//!   `cur/` is the mailbox `Name` (Maildir++ names, '.' between levels,
//!   modified UTF-7 as on disk — the way cove keeps them too).
//! - `dovecot-uidlist` of each folder: header `3 V<uidvalidity> N<nextuid>
//!   G<mailbox guid>` (version 1: `1 <uidvalidity> <nextuid>`), then one
//!   `<uid> [<ext>...] :<file name base>` per message. A record whose file is
//!   gone was expunged; a file without a record arrived after Dovecot last
//!   looked and gets a fresh UID, as Dovecot would give it. UIDNEXT is the
//!   header's or the highest UID + 1, whichever is more (Dovecot appends
//!   records without rewriting the header).
//! - `dovecot-keywords`: `<index> <name>` lines; the letters `a`..`z` after
//!   `:2,` in a file name are keywords 0..25 (read as cove keeps its own:
//!   `cove_store::KeywordLetters`). The capitals are the system
//!   flags (D F R S T).
//! - `subscriptions` in the root: `V\t2`, an empty line, then one name per
//!   line with a tab between hierarchy levels.
//! - The received date (IMAP INTERNALDATE) is the file's mtime, as Dovecot's.
//! - Special use: Dovecot sets it in its configuration, which the import
//!   cannot read; the usual names (Sent, Sent Items, Drafts, Trash, Junk,
//!   Spam, Archive...) get the usual use.
//!
//! # Identity
//! Each message's GUID is derived from its folder's Dovecot mailbox GUID
//! (the folder name if the uidlist has none) and its file name base, so a
//! second run recognises every message and changes nothing, and a mailbox
//! made by the import takes Dovecot's mailbox GUID. The store does the
//! rest (`cove_store::Account::import_messages`).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};

use cove_store::maildir::FileName;
use cove_store::{
    Account, Address, ImportCache, ImportMailbox, ImportMessage, ImportReport, KeywordLetters,
    MailboxGuid, MailboxImport, MessageGuid, Store, Uid,
};

use crate::config::Config;

/// Messages per index transaction (and per group flush).
const BATCH: usize = 1000;

/// Where the mail comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// One user: `--user EMAIL PATH`.
    One { email: String, path: PathBuf },
    /// `--users FILE`: `EMAIL PATH` lines.
    List(PathBuf),
}

/// Options of `cove import maildir`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Add users that do not exist yet (without a password).
    pub create_users: bool,
}

/// The special use Dovecot configurations usually give a top-level name.
pub fn special_use_for(name: &str) -> Option<&'static str> {
    const NAMES: &[(&str, &str)] = &[
        ("sent", "\\Sent"),
        ("sent items", "\\Sent"),
        ("sent messages", "\\Sent"),
        ("sent mail", "\\Sent"),
        ("drafts", "\\Drafts"),
        ("trash", "\\Trash"),
        ("deleted items", "\\Trash"),
        ("deleted messages", "\\Trash"),
        ("junk", "\\Junk"),
        ("spam", "\\Junk"),
        ("junk e-mail", "\\Junk"),
        ("archive", "\\Archive"),
        ("archives", "\\Archive"),
    ];
    let lower = name.to_ascii_lowercase();
    NAMES.iter().find(|(n, _)| *n == lower).map(|(_, u)| *u)
}

/// A folder's `dovecot-uidlist`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Uidlist {
    pub uidvalidity: Option<u32>,
    pub nextuid: Uid,
    /// Dovecot's mailbox GUID (32 hex digits), if given.
    pub guid: Option<String>,
    /// (UID, file name base), as listed.
    pub records: Vec<(Uid, String)>,
}

impl Uidlist {
    /// Parse the text of a `dovecot-uidlist` (versions 1 and 3).
    pub fn parse(text: &str) -> Option<Uidlist> {
        let mut lines = text.lines();
        let header = lines.next()?;
        let mut words = header.split_ascii_whitespace();
        let mut out = Uidlist::default();
        match words.next()? {
            "1" => {
                out.uidvalidity = words.next()?.parse().ok();
                out.nextuid = words.next()?.parse().ok()?;
            }
            "3" => {
                for w in words {
                    let (key, value) = w.split_at(1);
                    match key {
                        "V" => out.uidvalidity = value.parse().ok(),
                        "N" => out.nextuid = value.parse().ok()?,
                        "G" => out.guid = Some(value.to_string()),
                        _ => {}
                    }
                }
            }
            _ => return None,
        }
        for line in lines {
            let (uid, rest) = match line.split_once(' ') {
                Some(parts) => parts,
                None => continue,
            };
            let Ok(uid) = uid.parse::<Uid>() else {
                continue;
            };
            // Version 3: extension fields, then ':' and the name; version 1:
            // the name right away.
            let name = match rest.find(':') {
                Some(i) if rest.starts_with(':') || rest[..i].ends_with(' ') => &rest[i + 1..],
                _ => rest.rsplit(' ').next().unwrap_or(rest),
            };
            let base = name.split(":2,").next().unwrap_or(name);
            if uid > 0 && !base.is_empty() {
                out.records.push((uid, base.to_string()));
            }
        }
        let highest = out.records.iter().map(|(u, _)| *u).max().unwrap_or(0);
        out.nextuid = out.nextuid.max(highest.saturating_add(1)).max(1);
        Some(out)
    }
}

/// Dovecot's `subscriptions` file: the subscribed names ('.' between
/// levels).
pub fn parse_subscriptions(text: &str) -> Vec<String> {
    let mut lines = text.lines().peekable();
    if lines.peek().is_some_and(|l| l.starts_with("V\t")) {
        lines.next();
    }
    lines
        .filter(|l| !l.is_empty())
        .map(|l| l.replace('\t', "."))
        .collect()
}

fn read_optional(path: &Path) -> anyhow::Result<Option<String>> {
    // Never a FIFO (which would wait for a writer) or a symlink's target.
    match cove_store::regular_file::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

/// The folders of a Dovecot Maildir++ tree: (mailbox name, directory),
/// INBOX first.
fn folders(root: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(root).with_context(|| format!("list {}", root.display()))? {
        let entry = entry.with_context(|| format!("list {}", root.display()))?;
        let Some(dir) = entry.file_name().to_str().map(str::to_string) else {
            eprintln!("skipping {}: its name is not UTF-8", entry.path().display());
            continue;
        };
        let Some(name) = dir.strip_prefix('.') else {
            continue;
        };
        if name.is_empty() || name == "." || !entry.path().join("cur").is_dir() {
            continue;
        }
        out.push((name.to_string(), entry.path()));
    }
    out.sort();
    out.insert(0, ("INBOX".to_string(), root.to_path_buf()));
    Ok(out)
}

/// The messages of one folder, numbered ones first by UID, then the
/// unnumbered by date.
fn folder_messages(dir: &Path, name: &str, list: &Uidlist) -> anyhow::Result<Vec<ImportMessage>> {
    // The same reading of dovecot-keywords as cove's own (a letter per
    // keyword in the file names, see the store's keyword_letters.rs).
    let names = KeywordLetters::read(dir);
    let key = list
        .guid
        .clone()
        .unwrap_or_else(|| format!("folder {name}"));
    // base -> (path, parsed name, mtime)
    let mut files: HashMap<String, (PathBuf, FileName, i64)> = HashMap::new();
    for sub in ["cur", "new"] {
        let d = dir.join(sub);
        let entries = match fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("list {}", d.display())),
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("list {}", d.display()))?;
            let Some(fname) = entry.file_name().to_str().map(str::to_string) else {
                eprintln!("skipping {}: its name is not UTF-8", entry.path().display());
                continue;
            };
            let Some(parsed) = FileName::parse(&fname) else {
                continue;
            };
            let meta = entry
                .metadata()
                .with_context(|| format!("stat {}", entry.path().display()))?;
            if !meta.is_file() {
                continue;
            }
            files.insert(parsed.base.clone(), (entry.path(), parsed, meta.mtime()));
        }
    }
    let message =
        |uid: Option<Uid>, base: &str, (path, parsed, mtime): (PathBuf, FileName, i64)| {
            ImportMessage {
                uid,
                guid: MessageGuid::derived_from_name(&format!("dovecot\0{key}\0{base}")),
                source: path,
                flags: parsed.flags,
                keywords: names.keywords_of(&parsed.other_letters),
                internal_date: mtime,
            }
        };
    let mut out = Vec::with_capacity(files.len());
    let mut records = list.records.clone();
    records.sort();
    for (uid, base) in &records {
        let hit = files.remove(base).or_else(|| {
            // A record written with only the unique part of the name.
            let unique = base.split(',').next().unwrap_or(base);
            let found = files
                .keys()
                .find(|b| b.split(',').next() == Some(unique))
                .cloned();
            found.and_then(|b| files.remove(&b))
        });
        if let Some(file) = hit {
            out.push(message(Some(*uid), base, file));
        }
    }
    let mut rest: Vec<(String, (PathBuf, FileName, i64))> = files.into_iter().collect();
    rest.sort_by(|a, b| (a.1.2, &a.0).cmp(&(b.1.2, &b.0)));
    for (base, file) in rest {
        out.push(message(None, &base, file));
    }
    Ok(out)
}

/// What one user's import did.
#[derive(Debug, Default)]
struct UserReport {
    created: u32,
    took_over: u32,
    unchanged: u32,
    updated: u32,
    refused: Vec<String>,
    messages: ImportReport,
}

/// The Maildir under `path`: `path` itself, or `path/Maildir`.
fn maildir_root(path: &Path) -> anyhow::Result<PathBuf> {
    if path.join("cur").is_dir() {
        return Ok(path.to_path_buf());
    }
    if path.join("Maildir").join("cur").is_dir() {
        return Ok(path.join("Maildir"));
    }
    bail!(
        "{} is not a Maildir (no cur/ in it or in {}/Maildir)",
        path.display(),
        path.display()
    )
}

fn import_user(
    account: &Account,
    root: &Path,
    cache: &mut ImportCache,
) -> anyhow::Result<UserReport> {
    let mut report = UserReport::default();
    let subscriptions = read_optional(&root.join("subscriptions"))?
        .map(|t| parse_subscriptions(&t))
        .unwrap_or_default();
    let folders = folders(root)?;
    for (name, dir) in &folders {
        let list = match read_optional(&dir.join("dovecot-uidlist"))? {
            Some(text) => Uidlist::parse(&text)
                .with_context(|| format!("{}: not a dovecot-uidlist I can read", dir.display()))?,
            None => Uidlist {
                nextuid: 1,
                ..Uidlist::default()
            },
        };
        let top_level = !name.contains('.');
        let guid = list
            .guid
            .as_deref()
            .and_then(|g| g.parse::<MailboxGuid>().ok());
        let spec = ImportMailbox {
            name,
            guid,
            uidvalidity: list.uidvalidity,
            uidnext: list.nextuid,
            special_use: if top_level {
                special_use_for(name)
            } else {
                None
            },
            subscribed: subscriptions
                .iter()
                .any(|s| s == name || (name == "INBOX" && s.eq_ignore_ascii_case("INBOX"))),
        };
        let mailbox = match account.import_mailbox(&spec) {
            Ok((mb, outcome)) => {
                match outcome {
                    MailboxImport::Created => report.created += 1,
                    MailboxImport::TookOver => report.took_over += 1,
                    MailboxImport::Unchanged => report.unchanged += 1,
                    MailboxImport::Updated => report.updated += 1,
                }
                mb
            }
            Err(e @ cove_store::Error::InUse(_)) => {
                eprintln!("cove: not imported: {e}");
                report.refused.push(name.clone());
                continue;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("mailbox {name} from {}", dir.display()));
            }
        };
        let messages = folder_messages(dir, name, &list)?;
        for batch in messages.chunks(BATCH) {
            let r = account
                .import_messages(&mailbox.guid, batch, cache)
                .with_context(|| format!("messages of {name} from {}", dir.display()))?;
            report.messages.add(&r);
        }
    }
    // Subscribed names without a folder (RFC 3501 §6.3.6 allows them).
    let have = account.subscriptions()?;
    for name in &subscriptions {
        if !folders.iter().any(|(n, _)| n == name) && !have.contains(name) {
            match account.set_subscribed(name, true) {
                Ok(()) => {}
                Err(e) => eprintln!("cove: subscription {name:?} not imported: {e}"),
            }
        }
    }
    Ok(report)
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 10 << 30 => format!("{} GiB", b >> 30),
        b if b >= 10 << 20 => format!("{} MiB", b >> 20),
        b if b >= 10 << 10 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// `cove import maildir`.
pub fn run(config: &Config, source: Source, opts: Options) -> anyhow::Result<()> {
    let jobs: Vec<(String, PathBuf)> = match source {
        Source::One { email, path } => vec![(email, path)],
        Source::List(file) => {
            let text =
                fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
            let mut jobs = Vec::new();
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let Some((email, path)) = line.split_once(char::is_whitespace) else {
                    bail!(
                        "{} line {}: expected `EMAIL PATH`, got {line:?}",
                        file.display(),
                        n + 1
                    );
                };
                jobs.push((email.to_string(), PathBuf::from(path.trim())));
            }
            jobs
        }
    };
    // Check every line before importing anything.
    let mut checked = Vec::with_capacity(jobs.len());
    for (email, path) in &jobs {
        let address = Address::parse(email).with_context(|| format!("user {email}"))?;
        checked.push((address, maildir_root(path)?));
    }
    let store = crate::cli::open_store(config)?;
    let mut cache = ImportCache::default();
    let mut total = ImportReport::default();
    let mut failed: Vec<String> = Vec::new();
    let started = Instant::now();
    for (address, root) in &checked {
        let t = Instant::now();
        match import_one_user(&store, address, root, opts, &mut cache) {
            Ok(r) => {
                let m = &r.messages;
                let n = m.added + m.renumbered;
                println!(
                    "imported {address} from {}: mailboxes {} created, {} took Dovecot's UIDVALIDITY, {} already imported{}; messages {} at their Dovecot UIDs, {} at new UIDs, {} already present, {} with flags updated, {} left out (expunged or moved in cove since); content {} new, {} already stored; {:.1} s{}",
                    root.display(),
                    r.created,
                    r.took_over,
                    r.unchanged + r.updated,
                    if r.refused.is_empty() {
                        String::new()
                    } else {
                        format!(", {} REFUSED ({})", r.refused.len(), r.refused.join(", "))
                    },
                    m.added,
                    m.renumbered,
                    m.present,
                    m.flags_updated,
                    m.skipped,
                    size(m.new_bytes),
                    size(m.shared_bytes),
                    t.elapsed().as_secs_f64(),
                    if n > 0 {
                        format!(
                            " ({:.0} messages/s)",
                            n as f64 / t.elapsed().as_secs_f64().max(1e-6)
                        )
                    } else {
                        String::new()
                    }
                );
                if m.keywords_dropped > 0 {
                    println!(
                        "  {} keywords left out (not IMAP atoms)",
                        m.keywords_dropped
                    );
                }
                let sieve = config.sieve.clone().unwrap_or_default();
                match crate::sieve::import::pigeonhole(
                    &store,
                    &sieve,
                    &config.hostname,
                    address,
                    root,
                ) {
                    Ok(Some(line)) => println!("{line}"),
                    Ok(None) => {}
                    Err(e) => {
                        eprintln!(
                            "cove: {address}: sieve scripts: {}",
                            crate::error_text::chain(&e)
                        );
                        failed.push(address.to_string());
                    }
                }
                if !r.refused.is_empty() {
                    failed.push(address.to_string());
                }
                total.add(m);
            }
            Err(e) => {
                eprintln!("cove: {address}: {}", crate::error_text::chain(&e));
                failed.push(address.to_string());
            }
        }
    }
    if config.server.index_new_mail {
        let t = Instant::now();
        if store.wait_indexed(std::time::Duration::from_secs(24 * 3600)) {
            println!(
                "indexed the imported mail (views and full text): {:.1} s",
                t.elapsed().as_secs_f64()
            );
        }
    }
    if checked.len() > 1 {
        let n = total.added + total.renumbered;
        println!(
            "{} users: {} messages imported, {} already present; content {} new, {} already stored; {:.1} s ({:.0} messages/s)",
            checked.len(),
            n,
            total.present,
            size(total.new_bytes),
            size(total.shared_bytes),
            started.elapsed().as_secs_f64(),
            n as f64 / started.elapsed().as_secs_f64().max(1e-6)
        );
    }
    if !failed.is_empty() {
        bail!(
            "the import of {} of {} users did not finish ({}); see above",
            failed.len(),
            checked.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

fn import_one_user(
    store: &Store,
    address: &Address,
    root: &Path,
    opts: Options,
    cache: &mut ImportCache,
) -> anyhow::Result<UserReport> {
    let user = match store.user(address)? {
        Some(u) => u,
        None if opts.create_users => {
            let u = store.add_user(address, None, 0)?;
            println!(
                "added user {address} (no password: `cove user passwd` or `cove user import` sets one)"
            );
            u
        }
        None => bail!(
            "no such user; import the users first (`cove user import`, or `cove user add`), or pass --create-users"
        ),
    };
    let account = store.account(&user)?;
    import_user(&account, root, cache)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uidlist_version_3() {
        let text = "3 V1795332143 N8 Gd8518f192f98026b7301000083ecc375\n\
                    1 :1795332143.M428823P371.vm,S=232,W=243\n\
                    3 W304 :1795332149.M674852P682.vm,S=291,W=304\n\
                    9 :1795332149.M7P6.vm,S=291,W=304:2,S\n";
        let l = Uidlist::parse(text).unwrap();
        assert_eq!(l.uidvalidity, Some(1795332143));
        assert_eq!(l.nextuid, 10);
        assert_eq!(l.guid.as_deref(), Some("d8518f192f98026b7301000083ecc375"));
        assert_eq!(
            l.records,
            vec![
                (1, "1795332143.M428823P371.vm,S=232,W=243".to_string()),
                (3, "1795332149.M674852P682.vm,S=291,W=304".to_string()),
                (9, "1795332149.M7P6.vm,S=291,W=304".to_string()),
            ]
        );
    }

    #[test]
    fn uidlist_version_1_and_stale_header() {
        let l = Uidlist::parse("1 1234 5\n7 1234.P1.host\n").unwrap();
        assert_eq!(l.uidvalidity, Some(1234));
        assert_eq!(l.nextuid, 8);
        assert_eq!(l.records, vec![(7, "1234.P1.host".to_string())]);
        assert_eq!(Uidlist::parse("9 x"), None);
    }

    #[test]
    fn keywords_and_subscriptions() {
        let d = tempfile::tempdir().expect("tempdir");
        fs::write(
            d.path().join("dovecot-keywords"),
            "0 $Forwarded\n1 NonJunk\n2 Later\n",
        )
        .expect("write");
        let k = KeywordLetters::read(d.path());
        assert_eq!(k.keywords_of("abz"), vec!["$Forwarded", "NonJunk"]);
        assert_eq!(
            parse_subscriptions("V\t2\n\nWork\nWork\tQ1\n"),
            vec!["Work", "Work.Q1"]
        );
        assert_eq!(special_use_for("Sent Items"), Some("\\Sent"));
        assert_eq!(special_use_for("Work"), None);
    }
}
