//! Users, in `<data_dir>/cove.db`: addresses, password hashes, quotas.

use rusqlite::{Connection, OptionalExtension, params};
use std::fmt;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use crate::{Error, Result};

/// A normalised mail address: lowercase, `local@domain`, safe to use as a
/// directory name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    pub local: String,
    pub domain: String,
}

impl Address {
    pub fn parse(s: &str) -> Result<Address> {
        let s = s.trim();
        let bad = |why: &str| Error::InvalidData(format!("invalid address {s:?}: {why}"));
        let (local, domain) = s.rsplit_once('@').ok_or_else(|| bad("no '@'"))?;
        if local.is_empty() || local.len() > 64 {
            return Err(bad("the local part must be 1 to 64 characters"));
        }
        if domain.is_empty() || domain.len() > 253 {
            return Err(bad("the domain must be 1 to 253 characters"));
        }
        let local_ok = local.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || "!#$%&'*+=?^_`{|}~.-".contains(c)
                || (!c.is_ascii() && !c.is_control())
        });
        if !local_ok || local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(bad("the local part has characters cove does not accept"));
        }
        let domain_ok = domain.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && label.chars().all(|c| {
                    c.is_ascii_alphanumeric() || c == '-' || (!c.is_ascii() && !c.is_control())
                })
        });
        if !domain_ok {
            return Err(bad("the domain is not a valid host name"));
        }
        Ok(Address {
            local: local.to_lowercase(),
            domain: domain.to_lowercase(),
        })
    }

    /// Split `local+detail@domain` at the recipient delimiter: the address
    /// and the detail, if any.
    pub fn without_detail(&self, delimiter: Option<char>) -> (Address, Option<String>) {
        if let Some(d) = delimiter
            && let Some((base, detail)) = self.local.split_once(d)
            && !base.is_empty()
        {
            return (
                Address {
                    local: base.to_string(),
                    domain: self.domain.clone(),
                },
                Some(detail.to_string()),
            );
        }
        (self.clone(), None)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// A password hash in PHC or `{SCHEME}` form. Its `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(pub String);

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(<redacted>)")
    }
}

/// A user as the directory knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub address: Address,
    /// `None`: no password set, so no login (delivery still works).
    pub password: Option<PasswordHash>,
    /// Bytes; 0 means no quota.
    pub quota: u64,
    /// RFC 9208 MESSAGE: how many messages the user may hold; `None`: the
    /// server's default, 0: no limit. Kept by this node only (`quota.rs`).
    pub message_quota: Option<u64>,
}

/// The user directory.
pub struct Directory {
    conn: Mutex<Connection>,
    /// This node's id, for the stamps of user changes (replication).
    node: std::sync::atomic::AtomicU16,
    /// The store's clock: every user stamp comes from it.
    clock: std::sync::Arc<dyn crate::env::Clock>,
}

/// What changed when a peer's users were merged in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsersMerged {
    pub added: Vec<Address>,
    pub removed: Vec<Address>,
    pub updated: Vec<Address>,
}

impl fmt::Debug for Directory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Directory")
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS user(
  id INTEGER PRIMARY KEY,
  local TEXT NOT NULL,
  domain TEXT NOT NULL,
  password TEXT,
  quota INTEGER NOT NULL DEFAULT 0,
  created INTEGER NOT NULL,
  UNIQUE(local, domain)
);
CREATE TABLE IF NOT EXISTS user_gone(
  local TEXT NOT NULL,
  domain TEXT NOT NULL,
  stamp INTEGER NOT NULL,
  PRIMARY KEY(local, domain)
) WITHOUT ROWID;
";

fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        address: Address {
            local: r.get(1)?,
            domain: r.get(2)?,
        },
        password: r.get::<_, Option<String>>(3)?.map(PasswordHash),
        quota: r.get::<_, i64>(4)?.max(0) as u64,
        message_quota: r.get::<_, Option<i64>>(5)?.map(|n| n.max(0) as u64),
    })
}

impl Directory {
    /// Open (or create) the directory at `path`; `clock` stamps its
    /// changes (the store's [`crate::Env`] clock).
    pub fn open(path: &Path, clock: std::sync::Arc<dyn crate::env::Clock>) -> Result<Directory> {
        let conn = crate::index::open_private(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        // Replication: when each user was last added or changed (a stamp,
        // see crate::replica).
        let has_stamp: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('user') WHERE name = 'stamp'")?
            .exists([])?;
        if !has_stamp {
            conn.execute_batch("ALTER TABLE user ADD COLUMN stamp INTEGER NOT NULL DEFAULT 0")?;
        }
        // RFC 9208 MESSAGE: a per-user message limit (NULL: the default).
        let has_message_quota: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('user') WHERE name = 'message_quota'")?
            .exists([])?;
        if !has_message_quota {
            conn.execute_batch("ALTER TABLE user ADD COLUMN message_quota INTEGER")?;
        }
        Ok(Directory {
            conn: Mutex::new(conn),
            node: std::sync::atomic::AtomicU16::new(0),
            clock,
        })
    }

    /// Set this node's id (from its hostname) for the stamps of changes.
    pub fn set_node(&self, node: u16) {
        self.node.store(node, std::sync::atomic::Ordering::Relaxed);
    }

    fn stamp(&self) -> u64 {
        crate::replica::stamp_now(
            &*self.clock,
            self.node.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Every user and every removed user, with the stamps of their last
    /// change: what a peer merges (see [`merge_users`](Directory::merge_users)).
    pub fn user_records(&self) -> Result<Vec<crate::replica::UserRecord>> {
        let c = self.conn()?;
        let mut st = c.prepare_cached(
            "SELECT local, domain, password, quota, stamp, 0 FROM user
             UNION ALL SELECT local, domain, NULL, 0, stamp, 1 FROM user_gone",
        )?;
        let rows = st.query_map([], |r| {
            Ok(crate::replica::UserRecord {
                address: format!("{}@{}", r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                password: r.get(2)?,
                quota: r.get::<_, i64>(3)?.max(0) as u64,
                stamp: r.get::<_, i64>(4)? as u64,
                removed: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The newest stamp of any user change (to notice changes made by
    /// another process, such as the CLI).
    pub fn users_version(&self) -> Result<u64> {
        let c = self.conn()?;
        let v: Option<i64> = c.query_row(
            "SELECT max(s) FROM (SELECT max(stamp) AS s FROM user UNION ALL SELECT max(stamp) FROM user_gone)",
            [],
            |r| r.get(0),
        )?;
        Ok(v.unwrap_or(0) as u64)
    }

    /// Merge a peer's users: per address, the later change wins (an add,
    /// a password or quota change, or a removal). A removed user's mail is
    /// kept, as `cove user del` without `--purge` does. A record stamped
    /// further ahead of this node's clock than `limits` allows (it would
    /// undo every change made here until then) is refused and logged, as is
    /// one that holds no password hash or quota this node could store.
    pub fn merge_users(
        &self,
        remote: &[crate::replica::UserRecord],
        limits: &crate::replica::PeerLimits,
    ) -> Result<UsersMerged> {
        let mut out = UsersMerged::default();
        let mut c = self.conn()?;
        let tx = c.transaction()?;
        let now = crate::replica::now_ms(&*self.clock);
        for r in remote {
            let Ok(address) = Address::parse(&r.address) else {
                tracing::warn!(address = ?r.address, "replication: a peer sent an invalid user address; ignored");
                continue;
            };
            if let Some(why) = crate::replica::refuse_user_record(r, now, limits) {
                tracing::warn!(user = %address, reason = %why, "replication: a peer's user record refused");
                continue;
            }
            let live: Option<(i64, Option<String>, i64)> = tx
                .query_row(
                    "SELECT stamp, password, quota FROM user WHERE local = ?1 AND domain = ?2",
                    params![address.local, address.domain],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()?;
            let gone: Option<i64> = tx
                .query_row(
                    "SELECT stamp FROM user_gone WHERE local = ?1 AND domain = ?2",
                    params![address.local, address.domain],
                    |row| row.get(0),
                )
                .optional()?;
            let local_stamp = live.as_ref().map(|l| l.0).or(gone).unwrap_or(-1);
            if (r.stamp as i64) <= local_stamp {
                continue;
            }
            if r.removed {
                if live.is_some() {
                    tx.execute(
                        "DELETE FROM user WHERE local = ?1 AND domain = ?2",
                        params![address.local, address.domain],
                    )?;
                    out.removed.push(address.clone());
                }
                tx.execute(
                    "INSERT OR REPLACE INTO user_gone(local, domain, stamp) VALUES (?1, ?2, ?3)",
                    params![address.local, address.domain, r.stamp as i64],
                )?;
                continue;
            }
            match live {
                Some((_, password, quota)) => {
                    tx.execute(
                        "UPDATE user SET password = ?3, quota = ?4, stamp = ?5 WHERE local = ?1 AND domain = ?2",
                        params![address.local, address.domain, r.password, r.quota as i64, r.stamp as i64],
                    )?;
                    if password != r.password || quota as u64 != r.quota {
                        out.updated.push(address);
                    }
                }
                None => {
                    tx.execute(
                        "INSERT INTO user(local, domain, password, quota, created, stamp) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![address.local, address.domain, r.password, r.quota as i64, (r.stamp >> 16) as i64 / 1000, r.stamp as i64],
                    )?;
                    tx.execute(
                        "DELETE FROM user_gone WHERE local = ?1 AND domain = ?2",
                        params![address.local, address.domain],
                    )?;
                    out.added.push(address);
                }
            }
        }
        tx.commit()?;
        Ok(out)
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>> {
        self.conn
            .lock()
            .map_err(|_| Error::Index("directory lock poisoned".into()))
    }

    pub fn get(&self, address: &Address) -> Result<Option<User>> {
        let c = self.conn()?;
        let mut st = c.prepare_cached(
            "SELECT id, local, domain, password, quota, message_quota FROM user WHERE local = ?1 AND domain = ?2",
        )?;
        Ok(st
            .query_row(params![address.local, address.domain], user_row)
            .optional()?)
    }

    pub fn list(&self) -> Result<Vec<User>> {
        let c = self.conn()?;
        let mut st = c.prepare_cached(
            "SELECT id, local, domain, password, quota, message_quota FROM user ORDER BY domain, local",
        )?;
        let rows = st.query_map([], user_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn add(
        &self,
        address: &Address,
        password: Option<PasswordHash>,
        quota: u64,
        now: i64,
    ) -> Result<User> {
        let stamp = self.stamp() as i64;
        let c = self.conn()?;
        // One commit (one WAL fsync) for the row and the tombstone it ends.
        let tx = c.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO user(local, domain, password, quota, created, stamp) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                address.local,
                address.domain,
                password.as_ref().map(|p| &p.0),
                quota as i64,
                now,
                stamp
            ],
        )
        .map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::ConstraintViolation) => {
                Error::AlreadyExists(format!("user {address}"))
            }
            _ => e.into(),
        })?;
        tx.execute(
            "DELETE FROM user_gone WHERE local = ?1 AND domain = ?2",
            params![address.local, address.domain],
        )?;
        tx.commit()?;
        drop(c);
        self.get(address)?
            .ok_or_else(|| Error::Index("user vanished after insert".into()))
    }

    pub fn remove(&self, address: &Address) -> Result<()> {
        let stamp = self.stamp() as i64;
        let c = self.conn()?;
        let n = c.execute(
            "DELETE FROM user WHERE local = ?1 AND domain = ?2",
            params![address.local, address.domain],
        )?;
        if n == 0 {
            return Err(Error::NotFound(format!("user {address}")));
        }
        c.execute(
            "INSERT OR REPLACE INTO user_gone(local, domain, stamp) VALUES (?1, ?2, ?3)",
            params![address.local, address.domain, stamp],
        )?;
        Ok(())
    }

    pub fn set_password(&self, address: &Address, password: Option<PasswordHash>) -> Result<()> {
        let n = self.conn()?.execute(
            "UPDATE user SET password = ?3, stamp = ?4 WHERE local = ?1 AND domain = ?2",
            params![
                address.local,
                address.domain,
                password.as_ref().map(|p| &p.0),
                self.stamp() as i64
            ],
        )?;
        if n == 0 {
            return Err(Error::NotFound(format!("user {address}")));
        }
        Ok(())
    }

    /// Replace a user's password hash only if it is still `old` (a hash
    /// upgraded at login must not undo a change made meanwhile). Whether
    /// it was replaced. Its stamp is later than the row's, even within the
    /// same millisecond, so peers that hold the old hash take the new one.
    pub fn replace_password(
        &self,
        address: &Address,
        old: &PasswordHash,
        new: PasswordHash,
    ) -> Result<bool> {
        let n = self.conn()?.execute(
            "UPDATE user SET password = ?4, stamp = max(?5, (((stamp >> 16) + 1) << 16) | (?5 & 65535))
             WHERE local = ?1 AND domain = ?2 AND password = ?3",
            params![
                address.local,
                address.domain,
                old.0,
                new.0,
                self.stamp() as i64
            ],
        )?;
        Ok(n == 1)
    }

    /// Set a user's message limit (`None`: the server's default; 0: none).
    /// Not a replicated change: the stamp stays (`quota.rs`).
    pub fn set_message_quota(&self, address: &Address, limit: Option<u64>) -> Result<()> {
        let n = self.conn()?.execute(
            "UPDATE user SET message_quota = ?3 WHERE local = ?1 AND domain = ?2",
            params![address.local, address.domain, limit.map(|n| n as i64)],
        )?;
        if n == 0 {
            return Err(Error::NotFound(format!("user {address}")));
        }
        Ok(())
    }

    pub fn set_quota(&self, address: &Address, quota: u64) -> Result<()> {
        let n = self.conn()?.execute(
            "UPDATE user SET quota = ?3, stamp = ?4 WHERE local = ?1 AND domain = ?2",
            params![
                address.local,
                address.domain,
                quota as i64,
                self.stamp() as i64
            ],
        )?;
        if n == 0 {
            return Err(Error::NotFound(format!("user {address}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalised_and_checked() {
        let a = Address::parse(" Alice@Example.COM ").unwrap();
        assert_eq!(a.to_string(), "alice@example.com");
        for bad in [
            "noat",
            "@x.com",
            "a@",
            "../x@y.com",
            "a/b@c.com",
            ".a@b.com",
            "a@-x.com",
            "a@b..com",
            "a\0@b.com",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad} accepted");
        }
        let (base, detail) = Address::parse("bob+lists@x.org")
            .unwrap()
            .without_detail(Some('+'));
        assert_eq!(
            (base.to_string(), detail.as_deref()),
            ("bob@x.org".into(), Some("lists"))
        );
        let (base, detail) = Address::parse("+x@x.org")
            .unwrap()
            .without_detail(Some('+'));
        assert_eq!((base.to_string(), detail), ("+x@x.org".into(), None));
    }

    #[test]
    fn a_password_is_replaced_only_if_unchanged_meanwhile() {
        let d = tempfile::tempdir().unwrap();
        let dir = Directory::open(
            &d.path().join("cove.db"),
            std::sync::Arc::new(crate::SystemClock),
        )
        .unwrap();
        let a = Address::parse("a@x.org").unwrap();
        let old = PasswordHash("{SSHA}old".into());
        dir.add(&a, Some(old.clone()), 0, 1).unwrap();
        let before = dir.users_version().unwrap();
        assert!(
            dir.replace_password(&a, &old, PasswordHash("new".into()))
                .unwrap()
        );
        assert_eq!(
            dir.get(&a).unwrap().unwrap().password,
            Some(PasswordHash("new".into()))
        );
        assert!(
            dir.users_version().unwrap() > before,
            "peers must hear of it"
        );
        // A second rehash from the same old hash changes nothing.
        assert!(
            !dir.replace_password(&a, &old, PasswordHash("other".into()))
                .unwrap()
        );
        assert_eq!(
            dir.get(&a).unwrap().unwrap().password,
            Some(PasswordHash("new".into()))
        );
        let nobody = Address::parse("b@x.org").unwrap();
        assert!(!dir.replace_password(&nobody, &old, old.clone()).unwrap());
    }

    #[test]
    fn add_get_remove() {
        let d = tempfile::tempdir().unwrap();
        let dir = Directory::open(
            &d.path().join("cove.db"),
            std::sync::Arc::new(crate::SystemClock),
        )
        .unwrap();
        let a = Address::parse("a@x.org").unwrap();
        dir.add(&a, Some(PasswordHash("h".into())), 0, 1).unwrap();
        assert!(matches!(
            dir.add(&a, None, 0, 1),
            Err(Error::AlreadyExists(_))
        ));
        assert_eq!(
            dir.get(&a).unwrap().unwrap().password,
            Some(PasswordHash("h".into()))
        );
        assert_eq!(
            format!("{:?}", PasswordHash("secret".into())),
            "PasswordHash(<redacted>)"
        );
        dir.remove(&a).unwrap();
        assert!(dir.get(&a).unwrap().is_none());
        assert!(matches!(dir.remove(&a), Err(Error::NotFound(_))));
    }

    #[test]
    fn users_merge_later_change_wins_both_ways() {
        let d = tempfile::tempdir().unwrap();
        let one = Directory::open(
            &d.path().join("one.db"),
            std::sync::Arc::new(crate::SystemClock),
        )
        .unwrap();
        let two = Directory::open(
            &d.path().join("two.db"),
            std::sync::Arc::new(crate::SystemClock),
        )
        .unwrap();
        one.set_node(1);
        two.set_node(2);
        let a = Address::parse("a@x.org").unwrap();
        let b = Address::parse("b@x.org").unwrap();
        one.add(&a, Some(PasswordHash("h1".into())), 0, 1).unwrap();
        one.add(&b, None, 0, 1).unwrap();
        let merged = two
            .merge_users(&one.user_records().unwrap(), &Default::default())
            .unwrap();
        assert_eq!(merged.added, vec![a.clone(), b.clone()]);
        assert_eq!(
            two.get(&a).unwrap().unwrap().password,
            Some(PasswordHash("h1".into()))
        );
        // A newer password on two, a removal on one: each wins on the other.
        std::thread::sleep(std::time::Duration::from_millis(3));
        two.set_password(&a, Some(PasswordHash("h2".into())))
            .unwrap();
        one.remove(&b).unwrap();
        let m1 = one
            .merge_users(&two.user_records().unwrap(), &Default::default())
            .unwrap();
        let m2 = two
            .merge_users(&one.user_records().unwrap(), &Default::default())
            .unwrap();
        assert_eq!(m1.updated, vec![a.clone()]);
        assert_eq!(m2.removed, vec![b.clone()]);
        for dir in [&one, &two] {
            assert_eq!(
                dir.get(&a).unwrap().unwrap().password,
                Some(PasswordHash("h2".into()))
            );
            assert!(dir.get(&b).unwrap().is_none());
        }
        // Merging again changes nothing (idempotent).
        assert_eq!(
            one.merge_users(&two.user_records().unwrap(), &Default::default())
                .unwrap(),
            UsersMerged::default()
        );
    }
}
