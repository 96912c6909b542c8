//! RFC 9208 QUOTA: the quota cove enforces at delivery, APPEND and COPY
//! (`User::quota`, bytes; 0 for none), shown as one quota root, `""`, over
//! all of the user's mailboxes, with the STORAGE resource in units of 1024
//! octets. What it counts is every message the user holds, at its size,
//! whether or not its content is shared with other messages or users
//! (each user pays for what they see; dedup saves the server's disk, not
//! the user's quota). Quotas are the operator's to set (`cove user`), so
//! SETQUOTA is refused and QUOTASET is not advertised.

use cove_store::MailboxName;

use super::connection::{Authed, Connection};
use super::outcome::{Code, Outcome};
use super::response;

/// The one quota root.
const ROOT: &str = "";

/// `* QUOTA "" (STORAGE used limit)`, in KiB, for a user with a quota.
async fn quota_line(conn: &mut Connection, user: &Authed) -> Result<(), Outcome> {
    let account = user.account();
    let used = user
        .blocking(move || account.used_bytes())
        .await
        .map_err(|e| conn.refuse(&e))?;
    let mut line = b"* QUOTA ".to_vec();
    response::string(&mut line, ROOT.as_bytes());
    line.extend_from_slice(
        format!(" (STORAGE {} {})\r\n", used / 1024, user.quota() / 1024).as_bytes(),
    );
    conn.out.extend_from_slice(&line);
    Ok(())
}

// RFC 9208 §4.1.2: GETQUOTAROOT. A user without a quota has no root.
pub async fn get_quota_root(conn: &mut Connection, user: &Authed, name: MailboxName) -> Outcome {
    let account = user.account();
    let check = name.clone();
    if let Err(e) = user
        .blocking(move || account.mailbox(check.as_str()).map(|_| ()))
        .await
    {
        return conn.refuse(&e);
    }
    let mut line = b"* QUOTAROOT ".to_vec();
    conn.enabled.revision.write_name(&mut line, name.as_str());
    if user.quota() > 0 {
        line.push(b' ');
        response::string(&mut line, ROOT.as_bytes());
    }
    line.extend_from_slice(b"\r\n");
    conn.out.extend_from_slice(&line);
    if user.quota() > 0
        && let Err(refused) = quota_line(conn, user).await
    {
        return refused;
    }
    Outcome::ok("GETQUOTAROOT completed")
}

// RFC 9208 §4.1.1: GETQUOTA.
pub async fn get_quota(conn: &mut Connection, user: &Authed, root: &str) -> Outcome {
    if root != ROOT || user.quota() == 0 {
        return Outcome::no(Code::Nonexistent, "No such quota root");
    }
    match quota_line(conn, user).await {
        Ok(()) => Outcome::ok("GETQUOTA completed"),
        Err(refused) => refused,
    }
}

// RFC 9208 §4.1.3: SETQUOTA, without QUOTASET.
pub fn set_quota() -> Outcome {
    Outcome::no(Code::Cannot, "Quotas are set by the operator")
}
