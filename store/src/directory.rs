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
}

/// The user directory.
pub struct Directory {
    conn: Mutex<Connection>,
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
    })
}

impl Directory {
    pub fn open(path: &Path) -> Result<Directory> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Directory {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>> {
        self.conn
            .lock()
            .map_err(|_| Error::Index("directory lock poisoned".into()))
    }

    pub fn get(&self, address: &Address) -> Result<Option<User>> {
        let c = self.conn()?;
        let mut st = c.prepare_cached(
            "SELECT id, local, domain, password, quota FROM user WHERE local = ?1 AND domain = ?2",
        )?;
        Ok(st
            .query_row(params![address.local, address.domain], user_row)
            .optional()?)
    }

    pub fn list(&self) -> Result<Vec<User>> {
        let c = self.conn()?;
        let mut st = c.prepare_cached(
            "SELECT id, local, domain, password, quota FROM user ORDER BY domain, local",
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
        let c = self.conn()?;
        c.execute(
            "INSERT INTO user(local, domain, password, quota, created) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                address.local,
                address.domain,
                password.as_ref().map(|p| &p.0),
                quota as i64,
                now
            ],
        )
        .map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::ConstraintViolation) => {
                Error::AlreadyExists(format!("user {address}"))
            }
            _ => e.into(),
        })?;
        drop(c);
        self.get(address)?
            .ok_or_else(|| Error::Index("user vanished after insert".into()))
    }

    pub fn remove(&self, address: &Address) -> Result<()> {
        let n = self.conn()?.execute(
            "DELETE FROM user WHERE local = ?1 AND domain = ?2",
            params![address.local, address.domain],
        )?;
        if n == 0 {
            return Err(Error::NotFound(format!("user {address}")));
        }
        Ok(())
    }

    pub fn set_password(&self, address: &Address, password: Option<PasswordHash>) -> Result<()> {
        let n = self.conn()?.execute(
            "UPDATE user SET password = ?3 WHERE local = ?1 AND domain = ?2",
            params![
                address.local,
                address.domain,
                password.as_ref().map(|p| &p.0)
            ],
        )?;
        if n == 0 {
            return Err(Error::NotFound(format!("user {address}")));
        }
        Ok(())
    }

    pub fn set_quota(&self, address: &Address, quota: u64) -> Result<()> {
        let n = self.conn()?.execute(
            "UPDATE user SET quota = ?3 WHERE local = ?1 AND domain = ?2",
            params![address.local, address.domain, quota as i64],
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
    fn add_get_remove() {
        let d = tempfile::tempdir().unwrap();
        let dir = Directory::open(&d.path().join("cove.db")).unwrap();
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
}
