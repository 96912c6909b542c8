//! RFC 3501 §6.3.3 CREATE, with RFC 6154 §3 CREATE-SPECIAL-USE.

use cove_store::{Error, MailboxName};

use super::connection::{Authed, Connection};
use super::objectid;
use super::outcome::{Code, Outcome};

/// The special uses cove keeps (RFC 6154 §2).
const KNOWN_USES: [&str; 7] = [
    "\\All",
    "\\Archive",
    "\\Drafts",
    "\\Flagged",
    "\\Junk",
    "\\Sent",
    "\\Trash",
];

// RFC 3501 §6.3.3 CREATE (the trailing delimiter is dropped when the
// command is decoded); RFC 6154 §3 `CREATE name (USE (\Sent))`.
pub async fn create(
    conn: &mut Connection,
    user: &Authed,
    name: MailboxName,
    uses: Vec<String>,
) -> Outcome {
    if uses.is_empty() {
        create_plain(conn, user, name).await
    } else {
        create_special_use(conn, user, name, uses).await
    }
}

async fn create_plain(conn: &mut Connection, user: &Authed, name: MailboxName) -> Outcome {
    if name.is_inbox() {
        return Outcome::no(Code::AlreadyExists, "INBOX always exists");
    }
    let account = user.account();
    let r = user
        .blocking(move || {
            // Superior hierarchy levels are created too, and taken back
            // if the mailbox itself cannot be: a CREATE that fails
            // leaves nothing.
            let mut made: Vec<MailboxName> = Vec::new();
            let mut created = Ok(());
            for parent in name.parents() {
                match account.create_mailbox(parent.as_str(), None) {
                    Ok(_) => made.push(parent),
                    Err(Error::AlreadyExists(_)) => {}
                    Err(e) => {
                        created = Err(e);
                        break;
                    }
                }
            }
            let created = created.and_then(|()| account.create_mailbox(name.as_str(), None));
            if created.is_err() {
                for parent in made.iter().rev() {
                    if let Err(e) = account.delete_mailbox(parent.as_str()) {
                        tracing::warn!(user = %account.email(), mailbox = %parent, error = %e, "could not take back a parent of a failed CREATE");
                    }
                }
            }
            created
        })
        .await;
    created(conn, r)
}

/// RFC 8474 §4: a CREATE's OK names the new mailbox's MAILBOXID.
fn created(conn: &Connection, r: cove_store::Result<cove_store::MailboxInfo>) -> Outcome {
    match r {
        Ok(mb) => Outcome::ok_with(
            Code::MailboxId(objectid::mailbox_id(&mb.guid)),
            "CREATE completed",
        ),
        Err(e) => conn.refuse(&e),
    }
}

// RFC 6154 §3: CREATE-SPECIAL-USE.
async fn create_special_use(
    conn: &mut Connection,
    user: &Authed,
    name: MailboxName,
    uses: Vec<String>,
) -> Outcome {
    let mut canonical = Vec::new();
    for u in &uses {
        match KNOWN_USES.iter().find(|k| k.eq_ignore_ascii_case(u)) {
            Some(k) => canonical.push(*k),
            None => {
                return Outcome::no(
                    Code::UseAttr,
                    format!("{u} is not a special use cove supports"),
                );
            }
        }
    }
    if canonical.len() > 1 {
        return Outcome::no(Code::UseAttr, "One special use per mailbox");
    }
    let special_use = canonical.first().map(|s| s.to_string());
    let account = user.account();
    let r = user
        .blocking(move || account.create_mailbox(name.as_str(), special_use.as_deref()))
        .await;
    created(conn, r)
}
