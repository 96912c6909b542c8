//! `cove user import FILE`: users and their passwords from a Dovecot
//! passwd-file, so nobody has to reset a password when moving to cove.
//!
//! A passwd-file line is `user:password:uid:gid:gecos:home:shell:extra`;
//! only the first two fields matter to cove (uid, gid and home belong to
//! Dovecot's layout, not cove's). Blank lines and lines whose first
//! non-blank character is `#` are skipped. The user is a mail address
//! (`--domain` completes bare names, for Dovecot's per-domain files); the
//! password is `{SCHEME}hash` in one of the schemes of
//! [`crate::auth::schemes`], or a bare crypt string.
//!
//! What is stored: the hash as it came, checked to be well formed for its
//! scheme; the first good login replaces it with argon2id
//! ([`crate::auth::PasswordCheckers::check`]). `{PLAIN}` passwords are
//! hashed with argon2id right away, so no password is ever kept in clear.
//!
//! Refusals: a line cove cannot use (unknown scheme, malformed hash, no
//! password, no valid address, a user listed twice) is reported with its
//! line number, the user and the reason, and the import goes on with the
//! other lines; the command then fails (exit status 1), so a script
//! notices. Running the import again is safe: users whose hash did not
//! change are reported `unchanged`. Chosen over all-or-nothing because a
//! partial migration can be completed by fixing the refused lines and
//! running it again, and nothing imported is wrong.

use anyhow::Context;
use std::path::Path;

use cove_store::{Address, PasswordHash};

use crate::auth::{self, Secret, schemes::LegacyHash};
use crate::cli::open_store;
use crate::config::Config;

/// A usable line of the file.
#[derive(Debug)]
pub struct PasswdEntry {
    /// 1-based line number in the file.
    pub line: usize,
    pub address: Address,
    pub hash: LegacyHash,
}

/// A line cove refuses, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub line: usize,
    /// The user field as written.
    pub user: String,
    pub why: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "refused {} (line {}): {}",
            self.user.escape_debug(),
            self.line,
            self.why
        )
    }
}

/// Read a passwd-file: each user line, usable or refused, in file order.
pub fn parse_passwd_file(text: &str, domain: Option<&str>) -> Vec<Result<PasswdEntry, Refusal>> {
    let mut out = Vec::new();
    let mut seen: std::collections::HashMap<Address, usize> = std::collections::HashMap::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let content = raw.trim_end_matches('\r');
        let trimmed = content.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut fields = content.split(':');
        let user = fields.next().unwrap_or_default().trim();
        let password = fields.next().unwrap_or_default();
        let refuse = |why: String| Refusal {
            line,
            user: user.to_string(),
            why,
        };
        let full = match (user.contains('@'), domain) {
            (true, _) | (false, None) => user.to_string(),
            (false, Some(d)) => format!("{user}@{d}"),
        };
        let address = match Address::parse(&full) {
            Ok(a) => a,
            Err(_) if !user.contains('@') && domain.is_none() => {
                out.push(Err(refuse(
                    "not a mail address (give --domain for bare user names)".into(),
                )));
                continue;
            }
            Err(e) => {
                out.push(Err(refuse(e.to_string())));
                continue;
            }
        };
        if password.is_empty() {
            out.push(Err(refuse(
                "no password (Dovecot's nopassword is not imported; use `cove user add`)".into(),
            )));
            continue;
        }
        let hash = match LegacyHash::parse(password) {
            Ok(h) => h,
            Err(e) => {
                out.push(Err(refuse(e.to_string())));
                continue;
            }
        };
        if let Some(first) = seen.get(&address) {
            out.push(Err(refuse(format!(
                "{address} is listed again (first on line {first}); this line is ignored"
            ))));
            continue;
        }
        seen.insert(address.clone(), line);
        out.push(Ok(PasswdEntry {
            line,
            address,
            hash,
        }));
    }
    out
}

/// What the import did with one user.
enum Outcome {
    Added,
    Updated,
    Unchanged,
}

/// The hash to store for an entry: `{PLAIN}` becomes argon2id at once,
/// every other scheme is kept until the first login.
fn hash_to_store(hash: &LegacyHash) -> anyhow::Result<(PasswordHash, String)> {
    if let Some(plain) = hash.plaintext()
        && let Ok(password) = String::from_utf8(plain)
    {
        let new = auth::hash_password(&Secret(password))?;
        return Ok((
            new,
            format!("{{{}}}, hashed with argon2id now", hash.label()),
        ));
    }
    Ok((
        PasswordHash(hash.to_stored()),
        format!("{{{}}}, argon2id at first login", hash.label()),
    ))
}

/// Whether the stored password is already the one in the file: the same
/// hash, or for `{PLAIN}` a hash the plaintext matches.
fn same_password(stored: Option<&PasswordHash>, hash: &LegacyHash) -> bool {
    let Some(stored) = stored else {
        return false;
    };
    if let Some(plain) = hash.plaintext()
        && let Ok(password) = String::from_utf8(plain)
    {
        return auth::verify_password(&Secret(password), stored);
    }
    stored.0 == hash.to_stored()
}

/// How many lines [`import_entry`] works on at once.
const IMPORT_THREADS: usize = 8;

/// [`import_entry`] for every entry, on [`IMPORT_THREADS`] threads; the
/// results in the entries' order (`None`: not taken, after a failure).
fn import_in_parallel(
    store: &cove_store::Store,
    entries: &[&PasswdEntry],
) -> Vec<Option<anyhow::Result<(Outcome, String)>>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<anyhow::Result<(Outcome, String)>>> =
        entries.iter().map(|_| None).collect();
    let done = std::sync::Mutex::new(&mut results);
    std::thread::scope(|scope| {
        for _ in 0..IMPORT_THREADS.min(entries.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(entry) = entries.get(i) else { break };
                    let result = import_entry(store, entry);
                    let failed = result.is_err();
                    if let Ok(mut done) = done.lock() {
                        done[i] = Some(result);
                    }
                    if failed {
                        // Stop taking lines: the command fails at this one.
                        next.store(entries.len(), Ordering::Relaxed);
                    }
                }
            });
        }
    });
    results
}

/// Add one user, or update their password: the outcome and its report line.
fn import_entry(
    store: &cove_store::Store,
    entry: &PasswdEntry,
) -> anyhow::Result<(Outcome, String)> {
    let address = &entry.address;
    let existing = store
        .user(address)
        .with_context(|| format!("look up {address}"))?;
    Ok(match existing {
        Some(user) if same_password(user.password.as_ref(), &entry.hash) => (
            Outcome::Unchanged,
            format!(
                "unchanged {address} (same {{{}}} password)",
                entry.hash.label()
            ),
        ),
        Some(_) => {
            let (hash, how) = hash_to_store(&entry.hash)?;
            store
                .directory()
                .set_password(address, Some(hash))
                .with_context(|| format!("set the password of {address}"))?;
            (
                Outcome::Updated,
                format!("updated {address} (password replaced: {how})"),
            )
        }
        None => {
            let (hash, how) = hash_to_store(&entry.hash)?;
            let user = store
                .add_user(address, Some(hash), 0)
                .with_context(|| format!("add {address} (line {})", entry.line))?;
            // The import uses no account: close it now, so that 10,000 new
            // users do not keep 10,000 index connections open.
            store.close_account(&user);
            (Outcome::Added, format!("added {address} ({how})"))
        }
    })
}

/// `cove user import FILE [--domain DOMAIN]`.
pub fn import_users(config: &Config, file: &Path, domain: Option<&str>) -> anyhow::Result<()> {
    let text = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let text = String::from_utf8_lossy(&text);
    let entries = parse_passwd_file(&text, domain);
    let store = open_store(config)?;
    let (mut added, mut updated, mut unchanged, mut refused) = (0, 0, 0, 0);
    // The lines are imported by several threads at once (the parser
    // refuses an address listed twice, so no two touch one user): the
    // argon2id hashing of `{PLAIN}` passwords runs on every core, and the
    // new accounts' group flushes are shared (one syncfs for the accounts
    // that wait at once). Each line's result is known, and printed in file
    // order, only once what it made is durable.
    let usable: Vec<&PasswdEntry> = entries.iter().filter_map(|e| e.as_ref().ok()).collect();
    let mut imported = import_in_parallel(&store, &usable).into_iter();
    for entry in &entries {
        if let Err(refusal) = entry {
            println!("{refusal}");
            refused += 1;
            continue;
        }
        // None: a line after a failure, not taken.
        let Some(result) = imported.next().flatten() else {
            break;
        };
        let (outcome, report) = result?;
        println!("{report}");
        match outcome {
            Outcome::Added => added += 1,
            Outcome::Updated => updated += 1,
            Outcome::Unchanged => unchanged += 1,
        }
    }
    println!(
        "{added} added, {updated} updated, {unchanged} unchanged, {refused} refused (from {})",
        file.display()
    );
    if refused > 0 {
        anyhow::bail!(
            "{refused} line(s) of {} refused (the other users were imported)",
            file.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_file_lines_are_read_as_dovecot_does() {
        let text = "# Dovecot users\n\
            \n\
            alice@example.org:{SHA512-CRYPT}$6$FnocuF9TIKJ33XP/$cBjGcuXH5DAjbWuyagTH/5muZFM76LXCd.XHQBmP.JfvPej7YJz8coJBXetcIl9EdceJ59DdwP2i07XWP9aiH0:1000:1000::/home/alice::userdb_quota_rule=*:storage=1G\n\
            \t# indented comment\n\
            Bob@Example.org:{ssha}cdpBe1ldzPRM62HS1VzNRtZe8h7MnkD5\r\n\
            carol:{PLAIN}pw\n\
            dave@example.org:{CRAM-MD5}e02d374fde0dc75a17a557039a3a5338c7743304777dccd376f332bee68d2cf6::::\n\
            erin@example.org:\n\
            alice@example.org:{PLAIN}again\n\
            frank@example.org:$1$p8rRPL0Q$iAn/zE1LAnZknkPsNlfm71\n";
        let parsed = parse_passwd_file(text, None);
        let summary: Vec<String> = parsed
            .iter()
            .map(|r| match r {
                Ok(e) => format!("{} {} {}", e.line, e.address, e.hash.label()),
                Err(r) => r.to_string(),
            })
            .collect();
        assert_eq!(
            summary,
            [
                "3 alice@example.org SHA512-CRYPT",
                "5 bob@example.org SSHA",
                "refused carol (line 6): not a mail address (give --domain for bare user names)",
                "refused dave@example.org (line 7): unknown password scheme {CRAM-MD5}",
                "refused erin@example.org (line 8): no password (Dovecot's nopassword is not imported; use `cove user add`)",
                "refused alice@example.org (line 9): alice@example.org is listed again (first on line 3); this line is ignored",
                "10 frank@example.org CRYPT",
            ]
        );
        let with_domain = parse_passwd_file("carol:{PLAIN}pw\n", Some("example.net"));
        assert_eq!(
            with_domain[0].as_ref().unwrap().address.to_string(),
            "carol@example.net"
        );
    }

    #[test]
    fn plain_passwords_are_hashed_at_import() {
        let (hash, how) = hash_to_store(&LegacyHash::parse("{PLAIN}pw").unwrap()).unwrap();
        assert!(hash.0.starts_with("$argon2id$"), "{how}");
        assert!(auth::verify_password(&Secret("pw".into()), &hash));
        let (hash, how) =
            hash_to_store(&LegacyHash::parse("{SSHA}cdpBe1ldzPRM62HS1VzNRtZe8h7MnkD5").unwrap())
                .unwrap();
        assert_eq!(hash.0, "{SSHA}cdpBe1ldzPRM62HS1VzNRtZe8h7MnkD5");
        assert_eq!(how, "{SSHA}, argon2id at first login");
    }
}
