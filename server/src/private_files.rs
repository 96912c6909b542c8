//! Who may read cove's files: cove's user only.
//!
//! - Everything cove creates is private: the process runs with umask 077
//!   (set first thing in `main`), so directories are 0700, databases and
//!   keys 0600 and blobs 0400 (they are written 0440: read-only), whatever
//!   the umask of the shell or unit that started it. The databases are also
//!   made 0600 by the store itself (`index::open_private`).
//! - A data directory made by an older cove (0755) is tightened at start:
//!   the directory, `blobs/`, `mail/`, `tls/`, `cove.db` and the key cove
//!   made ([`tighten_data_dir`]); one log line says what changed. With the
//!   data directory at 0700 nothing below it can be reached by anyone else,
//!   so the millions of names under `mail/` are not walked.
//! - A secret the operator points at (replication `secret_file`, `[tls]
//!   key`) that every user can read is refused at start
//!   ([`refuse_world_readable`]): it is already exposed, and starting would
//!   hide that. Group-readable is accepted (Debian's `ssl-cert` group).
//!
//! Another program that must read the Maildir (Dovecot beside cove) runs
//! as cove's user, as a single mail user (`vmail`) setup has it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, bail};

/// The umask cove runs with.
pub const UMASK: u32 = 0o077;

/// Make every file and directory this process creates private to its
/// user. Called first thing in `main`, before any thread exists.
pub fn set_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(UMASK));
}

/// Take away group and other permissions from the data directory and the
/// names at its top that may hold secrets; returns what was changed as
/// `path (old -> new)`, and logs it in one line.
pub fn tighten_data_dir(data_dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut changed = Vec::new();
    let mut names = vec![
        data_dir.to_path_buf(),
        data_dir.join("blobs"),
        data_dir.join("mail"),
        data_dir.join("tls"),
        data_dir.join("tls/key.pem"),
    ];
    for suffix in ["", "-wal", "-shm"] {
        names.push(data_dir.join(format!("cove.db{suffix}")));
    }
    for path in names {
        // Not following a symlink: its target is not cove's to change.
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() || m.is_file() => m,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("stat {}", path.display())),
        };
        let mode = meta.permissions().mode() & 0o7777;
        let tight = mode & !UMASK;
        if tight != mode {
            fs::set_permissions(&path, fs::Permissions::from_mode(tight))
                .with_context(|| format!("chmod {}", path.display()))?;
            changed.push(format!("{} ({mode:o} -> {tight:o})", path.display()));
        }
    }
    if !changed.is_empty() {
        tracing::warn!(
            changed = %changed.join(", "),
            "made the data directory readable by cove's user only"
        );
    }
    Ok(changed)
}

/// Fail if the secret at `path` (`what` names its setting) can be read by
/// every user of the machine.
pub fn refuse_world_readable(path: &Path, what: &str) -> anyhow::Result<()> {
    let meta =
        fs::metadata(path).with_context(|| format!("{what}: cannot read {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o004 != 0 {
        bail!(
            "{what}: {} is readable by every user (mode {mode:o}); make it private first (chmod o-rwx)",
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loose_data_dirs_are_tightened_and_open_secrets_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        let data = d.path().join("data");
        fs::create_dir_all(data.join("mail")).expect("mkdir");
        fs::write(data.join("cove.db"), b"").expect("db");
        for (p, mode) in [(&data, 0o755), (&data.join("mail"), 0o755)] {
            fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
        }
        fs::set_permissions(data.join("cove.db"), fs::Permissions::from_mode(0o644))
            .expect("chmod");
        let changed = tighten_data_dir(&data).expect("tighten");
        assert_eq!(changed.len(), 3, "{changed:?}");
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("mail")), 0o700);
        assert_eq!(mode(&data.join("cove.db")), 0o600);
        assert!(tighten_data_dir(&data).expect("again").is_empty());

        let secret = d.path().join("secret");
        fs::write(&secret, b"s").expect("secret");
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = refuse_world_readable(&secret, "[replication] secret_file").expect_err("open");
        assert!(e.to_string().contains("readable by every user"), "{e}");
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o640)).expect("chmod");
        refuse_world_readable(&secret, "[replication] secret_file").expect("group may read");
    }
}
