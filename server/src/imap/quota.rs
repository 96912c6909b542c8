//! RFC 9208 QUOTA: the limits cove enforces at delivery, APPEND and COPY
//! (`cove_store::Quota`: bytes and messages; 0 for none), shown as one
//! quota root, `""`, over all of the user's mailboxes, with the STORAGE
//! resource in units of 1024 octets (§5.1) and the MESSAGE resource
//! (§5.2), each listed only when its limit is set. What they count is
//! every message the user holds, at its size, whether or not its content
//! is shared with other messages or users (each user pays for what they
//! see; dedup saves the server's disk, not the user's quota). MOVE within
//! the root changes neither. Quotas are the operator's to set (`cove
//! user`, `[server] default_message_quota`), so SETQUOTA is refused and
//! QUOTASET is not advertised.

use cove_store::MailboxName;

use super::connection::{Authed, Connection};
use super::outcome::{Code, Outcome};
use super::response;

/// The one quota root.
const ROOT: &str = "";

/// `* QUOTA "" (STORAGE used limit MESSAGE used limit)`, each resource
/// only when its limit is set, for a user with a limit.
async fn quota_line(conn: &mut Connection, user: &Authed) -> Result<(), Outcome> {
    let account = user.account();
    let (bytes, messages) = user
        .blocking(move || Ok((account.used_bytes()?, account.message_total()?)))
        .await
        .map_err(|e| conn.refuse(&e))?;
    let limits = user.quota();
    let mut resources = Vec::new();
    if limits.bytes > 0 {
        resources.push(format!("STORAGE {} {}", bytes / 1024, limits.bytes / 1024));
    }
    if limits.messages > 0 {
        resources.push(format!("MESSAGE {messages} {}", limits.messages));
    }
    let mut line = b"* QUOTA ".to_vec();
    response::string(&mut line, ROOT.as_bytes());
    line.extend_from_slice(format!(" ({})\r\n", resources.join(" ")).as_bytes());
    conn.out.extend_from_slice(&line);
    Ok(())
}

// RFC 9208 §4.1.2: GETQUOTAROOT. A user without a limit has no root.
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
    let limited = user.quota().any();
    if limited {
        line.push(b' ');
        response::string(&mut line, ROOT.as_bytes());
    }
    line.extend_from_slice(b"\r\n");
    conn.out.extend_from_slice(&line);
    if limited && let Err(refused) = quota_line(conn, user).await {
        return refused;
    }
    Outcome::ok("GETQUOTAROOT completed")
}

// RFC 9208 §4.1.1: GETQUOTA.
pub async fn get_quota(conn: &mut Connection, user: &Authed, root: &str) -> Outcome {
    if root != ROOT || !user.quota().any() {
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
