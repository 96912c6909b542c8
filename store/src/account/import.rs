//! Importing mail another server kept (`cove import maildir`).
//!
//! # The problem
//! A user's IMAP clients cached UIDs from the old server. If cove gave the
//! same messages other UIDs, or the mailboxes another UIDVALIDITY, every
//! client would download every message again (RFC 3501 §2.3.1.1). So an
//! import creates each mailbox with the old server's UIDVALIDITY and puts
//! each message at the UID the old server gave it — the only place in cove
//! where the caller chooses UIDs — and still keeps the DESIGN invariants:
//! a UID never names two messages, content is stored once and verified,
//! and nothing is reported done before it is durable.
//!
//! # Identity and running twice
//! The caller gives every message a GUID derived from what identifies it
//! on the old server (its mailbox and file name), so an import is
//! deterministic: a second run finds each message by GUID and changes
//! nothing, and two nodes that import the same tree end with the same
//! GUIDs, UIDs and UIDVALIDITYs. A message whose GUID is already in the
//! mailbox is left where it is (its flags follow the old server's); one
//! that is in another mailbox (moved in cove since) or has a tombstone
//! here (expunged in cove since) is not brought back.
//!
//! # Whose UIDs
//! A mailbox cove made (a default mailbox of a new account) takes the old
//! server's UIDVALIDITY only while it is untouched: no message and no
//! tombstone. Otherwise, unless it already has that UIDVALIDITY (an earlier
//! run), the import of that mailbox is refused: its UIDs were cove's. In a
//! mailbox that already has the old UIDVALIDITY, a message goes to its old
//! UID unless that UID is taken, has a tombstone, or lies below a message
//! cove itself put there (mail delivered after cove went live, which
//! clients may have seen): then it gets a fresh UID, never a reused one.
//! Imported rows carry replication stamp 0 (`placed`), like rows a scan
//! finds in a new Maildir: that is how a later run tells them apart.
//!
//! # Durability
//! One index transaction per batch: the batch's GUIDs and old UIDs are
//! first listed in `import_pending` (committed with the WAL flushed), every
//! file of the batch is linked, one group flush makes them durable, then
//! the rows are committed and flushed (the same transaction takes the
//! batch out of `import_pending`). A crash before the commit leaves files
//! whose names carry their GUIDs; the reconciling scan finds them listed as
//! pending and indexes them as imported: at their old UID when this rule
//! allows it, with replication stamp 0 — not as mail cove placed, which
//! would put every old UID of the rest of the import below "mail cove put
//! there" and renumber it all (a resumed import of 1,000,000 messages gave
//! its last 318,906 fresh UIDs so). The next run finds them by GUID. An
//! error in a batch removes the links it made and its pending entries.
//!
//! # Content
//! Bytes are stored with CRLF line ends (bare LF becomes CRLF, as cove's
//! LMTP does), so an imported message has the size and bytes the old IMAP
//! server showed (Dovecot stores LF and sends CRLF) and shares its blob
//! with the same mail delivered to cove or imported for another user. A
//! new content's file becomes its blob (one link, no copy); known content
//! is verified once per [`ImportCache`] and then only linked.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use cove_dedup::ContentId;
use rusqlite::{OptionalExtension, params};

use super::Account;
use crate::ids::{Flags, MailboxGuid, MessageGuid, Uid};
use crate::index::{self, MailboxInfo, NewMessageRow, Tx};
use crate::keyword_letters::{letters_in, letters_in_folder};
use crate::maildir::{self, FileName, FolderIdentity};
use crate::{Error, IoContext, Result};

/// A mailbox as the old server kept it.
#[derive(Debug, Clone)]
pub struct ImportMailbox<'a> {
    pub name: &'a str,
    /// Its GUID for a mailbox made by the import (the old server's, so two
    /// nodes importing the same tree agree); a fresh one if `None` or taken.
    pub guid: Option<MailboxGuid>,
    /// The old server's UIDVALIDITY; `None` if it never gave one (a folder
    /// no client has opened): cove's own is kept or made.
    pub uidvalidity: Option<u32>,
    /// The old server's UIDNEXT (no later message gets a lower UID).
    pub uidnext: Uid,
    /// RFC 6154 use for a mailbox the import makes.
    pub special_use: Option<&'a str>,
    pub subscribed: bool,
}

/// What [`Account::import_mailbox`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxImport {
    /// A new mailbox.
    Created,
    /// An untouched cove mailbox (a default one) took the old UIDVALIDITY.
    TookOver,
    /// Already had it (an earlier run); nothing changed.
    Unchanged,
    /// Already had it; UIDNEXT or the subscription changed.
    Updated,
}

/// One message to import.
#[derive(Debug, Clone)]
pub struct ImportMessage {
    /// The old server's UID; `None` for a message it never numbered (mail
    /// it had not seen yet): it gets a fresh UID.
    pub uid: Option<Uid>,
    /// Derived from the old server's identity of the message (see the module
    /// notes).
    pub guid: MessageGuid,
    /// The message file on the old server (read, never changed).
    pub source: PathBuf,
    pub flags: Flags,
    pub keywords: Vec<String>,
    /// Seconds since the epoch.
    pub internal_date: i64,
}

/// What [`Account::import_messages`] did with a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Stored at the old server's UID.
    pub added: u64,
    /// Stored at a fresh UID (their old UID was taken, or they had none).
    pub renumbered: u64,
    /// Already imported (found by GUID), flags as before.
    pub present: u64,
    /// Already imported, with flags or keywords changed to the old server's.
    pub flags_updated: u64,
    /// Not brought back: expunged or moved away in cove since an earlier run.
    pub skipped: u64,
    /// Keywords left out because they are not IMAP atoms.
    pub keywords_dropped: u64,
    /// Bytes of content that was new to the blob store.
    pub new_bytes: u64,
    /// Bytes of content that was already stored (linked, not written).
    pub shared_bytes: u64,
}

impl ImportReport {
    pub fn add(&mut self, o: &ImportReport) {
        self.added += o.added;
        self.renumbered += o.renumbered;
        self.present += o.present;
        self.flags_updated += o.flags_updated;
        self.skipped += o.skipped;
        self.keywords_dropped += o.keywords_dropped;
        self.new_bytes += o.new_bytes;
        self.shared_bytes += o.shared_bytes;
    }
}

/// Content already verified during this import: linked again without
/// reading the blob; and per mailbox, the highest UID of a message cove
/// itself put there. Keep one across users for a whole run.
#[derive(Debug, Default)]
pub struct ImportCache {
    verified: HashSet<ContentId>,
    cove_max: HashMap<(String, MailboxGuid), CoveMax>,
    /// Tests: stop a batch as a crash would, after its files are linked
    /// and flushed and before its rows are committed.
    #[cfg(test)]
    pub(crate) crash_after_links: bool,
}

/// The highest UID of a message cove itself put in a mailbox (delivered,
/// appended, moved in: `placed` != 0), as of the mailbox's highest message
/// modseq `seen`.
#[derive(Debug, Clone, Copy)]
struct CoveMax {
    uid: Uid,
    seen: i64,
}

impl ImportCache {
    /// The highest UID of a message cove itself put in `mb` (old UIDs
    /// below it would be news no client looks for). `placed` has no index:
    /// the first batch of a mailbox reads all its rows, each later one only
    /// the rows written since the last (by the modseq index): reading every
    /// row for each batch of 1,000 was ~25 page reads per imported message
    /// at 500,000 messages, and made an import slower the bigger the
    /// mailbox got. Never lower than before: a client that saw a UID cove
    /// gave keeps having seen it after an expunge.
    fn cove_max(&mut self, user: &str, tx: &Tx<'_>, mb: &MailboxInfo) -> Result<Uid> {
        let seen: i64 = tx.tx.query_row(
            "SELECT coalesce(max(modseq), 0) FROM message WHERE mailbox_id = ?1",
            [mb.id],
            |r| r.get(0),
        )?;
        let key = (user.to_string(), mb.guid);
        let uid: Uid = match self.cove_max.get(&key) {
            Some(was) => tx
                .tx
                .prepare_cached(
                    "SELECT coalesce(max(uid), 0) FROM message INDEXED BY message_modseq
                     WHERE mailbox_id = ?1 AND modseq > ?2 AND placed != 0",
                )?
                .query_row(params![mb.id, was.seen], |r| r.get::<_, Uid>(0))?
                .max(was.uid),
            None => tx.tx.query_row(
                "SELECT coalesce(max(uid), 0) FROM message WHERE mailbox_id = ?1 AND placed != 0",
                [mb.id],
                |r| r.get(0),
            )?,
        };
        self.cove_max.insert(key, CoveMax { uid, seen });
        Ok(uid)
    }
}

/// List a batch in `import_pending` before any of its files is linked,
/// with the WAL flushed at the commit whatever the durability mode: a
/// linked file must never be on disk without its entry (module notes,
/// "Durability").
fn record_pending(
    conn: &mut rusqlite::Connection,
    mailbox_id: i64,
    batch: &[ImportMessage],
) -> Result<()> {
    let sync: String = conn.pragma_query_value(None, "synchronous", |r| {
        Ok(match r.get::<_, i64>(0)? {
            0 => "OFF",
            1 => "NORMAL",
            3 => "EXTRA",
            _ => "FULL",
        }
        .to_string())
    })?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    let written = (|| {
        let tx = conn.transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT OR REPLACE INTO import_pending(guid, mailbox_id, uid) VALUES (?1, ?2, ?3)",
            )?;
            for m in batch {
                st.execute(params![&m.guid.0[..], mailbox_id, m.uid.unwrap_or(0)])?;
            }
        }
        tx.commit()
    })();
    conn.pragma_update(None, "synchronous", &sync)?;
    Ok(written?)
}

/// Take a batch out of `import_pending` (in the transaction that commits
/// its rows, or after it failed).
fn clear_pending(conn: &rusqlite::Connection, batch: &[ImportMessage]) -> Result<()> {
    let mut st = conn.prepare_cached("DELETE FROM import_pending WHERE guid = ?1")?;
    for m in batch {
        st.execute([&m.guid.0[..]])?;
    }
    Ok(())
}

/// For the reconciling scan: if a file it found without a row is one an
/// import batch was linking when it stopped (`import_pending`), take it out
/// of the list and say at which UID it belongs: `Some(Some(uid))` its old
/// UID, free and above every message cove placed in the mailbox (the
/// import's own rule); `Some(None)` imported but at a fresh UID; `None`:
/// not an import's.
pub(crate) fn take_pending(
    conn: &rusqlite::Connection,
    mailbox_id: i64,
    guid: &MessageGuid,
) -> Result<Option<Option<Uid>>> {
    let uid: Option<Uid> = conn
        .prepare_cached(
            "DELETE FROM import_pending WHERE guid = ?1 AND mailbox_id = ?2 RETURNING uid",
        )?
        .query_row(params![&guid.0[..], mailbox_id], |r| r.get(0))
        .optional()?;
    let Some(uid) = uid else {
        return Ok(None);
    };
    let usable: bool = uid > 0
        && conn
            .prepare_cached(
                "SELECT NOT EXISTS(SELECT 1 FROM message WHERE mailbox_id = ?1 AND uid = ?2)
                    AND NOT EXISTS(SELECT 1 FROM tombstone WHERE mailbox_id = ?1 AND uid = ?2)
                    AND ?2 > (SELECT coalesce(max(uid), 0) FROM message
                              WHERE mailbox_id = ?1 AND placed != 0)",
            )?
            .query_row(params![mailbox_id, uid], |r| r.get(0))?;
    Ok(Some(usable.then_some(uid)))
}

/// Bare LF becomes CRLF; everything else is kept.
fn crlf(bytes: Vec<u8>) -> Vec<u8> {
    let bare = bytes
        .iter()
        .enumerate()
        .filter(|(i, b)| **b == b'\n' && (*i == 0 || bytes[i - 1] != b'\r'))
        .count();
    if bare == 0 {
        return bytes;
    }
    let mut out = Vec::with_capacity(bytes.len() + bare);
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\n' && (i == 0 || bytes[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(*b);
    }
    out
}

impl Account {
    /// Create a mailbox under the old server's UIDVALIDITY and UIDNEXT, or
    /// give them to an untouched one of the same name (see the module
    /// notes). Refused (`InUse`) if a mailbox of that name holds mail cove
    /// numbered under another UIDVALIDITY.
    pub fn import_mailbox(&self, m: &ImportMailbox<'_>) -> Result<(MailboxInfo, MailboxImport)> {
        let name = maildir::validate_mailbox_name(m.name)?;
        let name = name.as_str();
        let mut g = self.conn()?;
        let mut tx = Tx::begin(&mut g.conn, &self.env)?;
        let outcome = match index::mailbox_by_name(&tx.tx, name)? {
            None => {
                let guid = match m.guid {
                    Some(guid) if index::mailbox_by_guid(&tx.tx, &guid)?.is_none() => guid,
                    _ => self.env.mailbox_guid(),
                };
                let uidvalidity = match m.uidvalidity {
                    Some(v) => {
                        tx.raise_uidvalidity(v)?;
                        v
                    }
                    None => tx.next_uidvalidity(self.env.now_secs(), None)?,
                };
                let dir = maildir::mailbox_dir_name(name);
                let path = self.maildir.join(&dir);
                if path.symlink_metadata().is_ok() {
                    return Err(Error::AlreadyExists(format!(
                        "folder {} (not a mailbox cove knows; run `cove mailbox list` to index it first)",
                        path.display()
                    )));
                }
                self.place_new_folder(name, &path, &FolderIdentity { guid, uidvalidity })?;
                let mb =
                    tx.insert_mailbox(guid, name, &dir, uidvalidity, m.special_use, m.subscribed)?;
                Self::raise_uidnext(&mut tx, &mb, m.uidnext, true)?;
                MailboxImport::Created
            }
            Some(mb) if m.uidvalidity.is_none_or(|v| v == mb.uidvalidity) => {
                let raised = Self::raise_uidnext(&mut tx, &mb, m.uidnext, false)?;
                let subscribed = tx.set_subscription(name, m.subscribed)?;
                if subscribed {
                    tx.log(
                        &mb,
                        crate::ChangeKind::Subscription {
                            subscribed: m.subscribed,
                        },
                    )?;
                }
                if raised || subscribed {
                    MailboxImport::Updated
                } else {
                    MailboxImport::Unchanged
                }
            }
            Some(mb) => {
                let v = m.uidvalidity.unwrap_or(mb.uidvalidity);
                let (messages, tombstones): (i64, i64) = tx.tx.query_row(
                    "SELECT (SELECT count(*) FROM message WHERE mailbox_id = ?1),
                            (SELECT count(*) FROM tombstone WHERE mailbox_id = ?1)",
                    [mb.id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                if messages > 0 || tombstones > 0 {
                    return Err(Error::InUse(format!(
                        "mailbox {name} of {}: it already holds mail cove numbered ({messages} messages, {tombstones} expunged; UIDVALIDITY {} here, {v} on the old server), so it cannot take the old server's UIDs; import into an account whose {name} is empty",
                        self.email, mb.uidvalidity
                    )));
                }
                tx.raise_uidvalidity(v)?;
                tx.tx.execute(
                    "UPDATE mailbox SET uidvalidity = ?2 WHERE id = ?1",
                    params![mb.id, v],
                )?;
                Self::raise_uidnext(&mut tx, &mb, m.uidnext, true)?;
                if tx.set_subscription(name, m.subscribed)? {
                    tx.log(
                        &mb,
                        crate::ChangeKind::Subscription {
                            subscribed: m.subscribed,
                        },
                    )?;
                }
                FolderIdentity {
                    guid: mb.guid,
                    uidvalidity: v,
                }
                .write(&self.folder(&mb))?;
                MailboxImport::TookOver
            }
        };
        let mb = index::mailbox_by_name(&tx.tx, name)?
            .ok_or_else(|| Error::Index("mailbox vanished inside its own transaction".into()))?;
        let changes = tx.commit()?;
        drop(g);
        self.publish(changes)?;
        Ok((mb, outcome))
    }

    /// UIDNEXT to at least `uidnext`; with `none_recent`, no message below
    /// it is \Recent (the old server's sessions saw them). Whether it rose.
    fn raise_uidnext(
        tx: &mut Tx<'_>,
        mb: &MailboxInfo,
        uidnext: Uid,
        none_recent: bool,
    ) -> Result<bool> {
        let n = tx.tx.execute(
            "UPDATE mailbox SET uidnext = ?2 WHERE id = ?1 AND uidnext < ?2",
            params![mb.id, uidnext],
        )?;
        if none_recent {
            tx.tx.execute(
                "UPDATE mailbox SET first_recent = max(first_recent, ?2) WHERE id = ?1",
                params![mb.id, uidnext],
            )?;
        }
        Ok(n > 0)
    }

    /// Store a batch of messages in one mailbox at the UIDs they had (see
    /// the module notes), in one transaction; when this returns Ok they are
    /// durable.
    pub fn import_messages(
        &self,
        mailbox: &MailboxGuid,
        batch: &[ImportMessage],
        cache: &mut ImportCache,
    ) -> Result<ImportReport> {
        let mut report = ImportReport::default();
        let mut g = self.conn()?;
        let mb = Self::mailbox_in(&g.conn, mailbox)?;
        let folder = self.folder(&mb);
        let mut linked: Vec<PathBuf> = Vec::new();
        let mut renamed: Vec<(PathBuf, PathBuf)> = Vec::new();
        // A page cache for the batch's rows: each message's row lands on
        // a page of its own in the GUID index. With the small cache
        // (index.rs) a batch of 1,000 into a mailbox of 270,000 spilled
        // and read back ~20 pages per message (strace of a 1,000,000
        // import).
        let kib = index::cache_kib_for_rows(batch.len().saturating_mul(8));
        record_pending(&mut g.conn, mb.id, batch)?;
        let committed = index::with_cache(&mut g.conn, kib, |conn| {
            let mut tx = Tx::begin(conn, &self.env)?;
            let cove_max = cache.cove_max(&self.email, &tx, &mb)?;
            self.import_batch(
                &mut tx,
                &mb,
                &folder,
                cove_max,
                batch,
                cache,
                &mut report,
                &mut linked,
                &mut renamed,
            )?;
            #[cfg(test)]
            if cache.crash_after_links {
                // What a crash here leaves: the files linked and flushed,
                // no row committed, nothing cleaned up.
                return Err(Error::Index("test: crashed after the links".into()));
            }
            clear_pending(&tx.tx, batch)?;
            tx.commit()
        });
        match committed {
            Ok(changes) => {
                drop(g);
                self.publish(changes)?;
                Ok(report)
            }
            #[cfg(test)]
            Err(e) if cache.crash_after_links => Err(e),
            Err(e) => {
                for path in &linked {
                    let _ = fs::remove_file(path);
                }
                for (from, to) in renamed.iter().rev() {
                    let _ = fs::rename(to, from);
                }
                if let Err(e) = clear_pending(&g.conn, batch) {
                    tracing::warn!(user = %self.email, error = %e, "import: could not clear a failed batch's pending entries (harmless: the next batch or scan clears them)");
                }
                Err(e)
            }
        }
    }

    /// The messages of a batch in `tx`, then their files made durable
    /// (files first, then the rows that name them).
    #[allow(clippy::too_many_arguments)]
    fn import_batch(
        &self,
        tx: &mut Tx<'_>,
        mb: &MailboxInfo,
        folder: &Path,
        cove_max: Uid,
        batch: &[ImportMessage],
        cache: &mut ImportCache,
        report: &mut ImportReport,
        linked: &mut Vec<PathBuf>,
        renamed: &mut Vec<(PathBuf, PathBuf)>,
    ) -> Result<()> {
        {
            for m in batch {
                self.import_one(tx, mb, folder, cove_max, m, cache, report, linked, renamed)?;
            }
            if !linked.is_empty() || !renamed.is_empty() {
                for sub in ["cur", "new"] {
                    self.sync.dir_written(&folder.join(sub))?;
                }
                self.sync.sync()?;
            }
            Ok(())
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn import_one(
        &self,
        tx: &mut Tx<'_>,
        mb: &MailboxInfo,
        folder: &Path,
        cove_max: Uid,
        m: &ImportMessage,
        cache: &mut ImportCache,
        report: &mut ImportReport,
        linked: &mut Vec<PathBuf>,
        renamed: &mut Vec<(PathBuf, PathBuf)>,
    ) -> Result<()> {
        let mut keywords = Vec::with_capacity(m.keywords.len());
        for k in &m.keywords {
            match crate::keywords::normalized(std::slice::from_ref(k)) {
                Ok(mut ok) if !keywords.iter().any(|x: &String| x.eq_ignore_ascii_case(k)) => {
                    keywords.append(&mut ok)
                }
                Ok(_) => {}
                Err(_) => {
                    tracing::warn!(user = %self.email, keyword = %k, "import: leaving out a keyword that is not an IMAP atom");
                    report.keywords_dropped += 1;
                }
            }
        }
        let found: Option<(i64, Uid, i64, String, String)> = tx
            .tx
            .prepare_cached(
                "SELECT mailbox_id, uid, flags, keywords, file FROM message WHERE guid = ?1",
            )?
            .query_row([&m.guid.0[..]], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()?;
        if let Some((mailbox_id, uid, flags, kw, file)) = found {
            if mailbox_id != mb.id {
                report.skipped += 1;
                return Ok(());
            }
            let flags = Flags::from_bits(flags as u8);
            let kw = index::keywords_from_text(&kw);
            let same_keywords = kw.len() == keywords.len()
                && kw
                    .iter()
                    .all(|k| keywords.iter().any(|x| x.eq_ignore_ascii_case(k)));
            if flags == m.flags && same_keywords {
                report.present += 1;
                return Ok(());
            }
            let mut file = file;
            let letters = letters_in_folder(folder, &mut None, &keywords)?;
            if flags != m.flags || letters != letters_in(&file) {
                let fname = file.rsplit('/').next().unwrap_or(&file).to_string();
                let parsed = FileName::parse(&fname)
                    .ok_or_else(|| Error::InvalidData(format!("bad file name {fname}")))?;
                let new_rel = format!("cur/{}", parsed.cur_name_with(m.flags, &letters));
                let (from, to) = (folder.join(&file), folder.join(&new_rel));
                fs::rename(&from, &to).ctx(|| format!("rename {file} in {}", folder.display()))?;
                renamed.push((from, to));
                file = new_rel;
            }
            tx.update_flags(mb, uid, m.flags, &keywords, &file)?;
            report.flags_updated += 1;
            return Ok(());
        }
        if index::tombstone_for_guid(&tx.tx, mb.id, &m.guid)? {
            report.skipped += 1;
            return Ok(());
        }
        let uid = match m.uid {
            Some(uid) if uid > cove_max && uid > 0 && !Self::uid_used(tx, mb, uid)? => {
                report.added += 1;
                uid
            }
            _ => {
                report.renumbered += 1;
                tx.allocate_uid(mb)?
            }
        };
        let bytes = crlf(
            cove_dedup::regular_file::read(&m.source)
                .ctx(|| format!("read {}", m.source.display()))?,
        );
        let size = bytes.len() as u64;
        let base =
            FileName::new_delivery(m.internal_date.max(0) as u64, m.guid, &self.hostname, size);
        let parsed = FileName::parse(&base)
            .ok_or_else(|| Error::InvalidData(format!("bad file name {base}")))?;
        let letters = letters_in_folder(folder, &mut None, &keywords)?;
        let rel = format!("cur/{}", parsed.cur_name_with(m.flags, &letters));
        let dest = folder.join(&rel);
        let id = self.store_content(folder, &base, &bytes, &dest, cache, report)?;
        linked.push(dest);
        let row = NewMessageRow {
            guid: m.guid,
            content_id: id,
            flags: m.flags,
            keywords: &keywords,
            internal_date: m.internal_date,
            size,
            base: &parsed.base,
            file: &rel,
            placed: Some(0),
            clock: "",
        };
        tx.insert_message_at(mb, uid, &row)?;
        Ok(())
    }

    /// Whether a UID has a message or a tombstone in the mailbox.
    fn uid_used(tx: &Tx<'_>, mb: &MailboxInfo, uid: Uid) -> Result<bool> {
        Ok(tx
            .tx
            .prepare_cached(
                "SELECT EXISTS(SELECT 1 FROM message WHERE mailbox_id = ?1 AND uid = ?2)
                     OR EXISTS(SELECT 1 FROM tombstone WHERE mailbox_id = ?1 AND uid = ?2)",
            )?
            .query_row(params![mb.id, uid], |r| r.get(0))?)
    }

    /// Put `bytes` at `dest` as a link to their blob: known content is
    /// linked (verified once per cache); new content is written into the
    /// folder's `tmp/` and that file becomes the blob. Nothing is flushed
    /// here (the batch is, once).
    fn store_content(
        &self,
        folder: &Path,
        base: &str,
        bytes: &[u8],
        dest: &Path,
        cache: &mut ImportCache,
        report: &mut ImportReport,
    ) -> Result<ContentId> {
        let id = ContentId::of(bytes);
        let known = cache.verified.contains(&id)
            || (self.blobs.path_of(&id).exists() && self.blobs.verify(&id).is_ok());
        if known {
            match cove_dedup::link_existing(&self.blobs, &id, dest) {
                Ok(()) => {
                    cache.verified.insert(id);
                    report.shared_bytes += bytes.len() as u64;
                    return Ok(id);
                }
                // A gc removed it meanwhile: store it again below.
                Err(cove_dedup::Error::NotFound(_)) => {
                    cache.verified.remove(&id);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let tmp = folder.join("tmp").join(format!("{base}.import"));
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o440)
                .open(&tmp)?;
            f.write_all(bytes)?;
            // Batched mode: the batch's one group flush covers it.
            if self.sync.mode() == cove_dedup::Durability::Fsync {
                f.sync_data()?;
            }
            Ok(())
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(e).ctx(|| format!("write {}", tmp.display()));
        }
        let stored = (|| {
            let (adopted, _, shared) = self.blobs.adopt(&tmp)?;
            if shared {
                fs::rename(&tmp, dest).ctx(|| format!("rename {}", tmp.display()))?;
                report.new_bytes += bytes.len() as u64;
            } else {
                cove_dedup::link_existing(&self.blobs, &adopted, dest)?;
                report.shared_bytes += bytes.len() as u64;
            }
            cache.verified.insert(adopted);
            Ok::<_, Error>(adopted)
        })();
        let _ = fs::remove_file(&tmp);
        stored
    }
}

#[cfg(test)]
mod tests {
    use super::crlf;

    #[test]
    fn bare_lf_becomes_crlf() {
        assert_eq!(crlf(b"a\nb\r\nc\n".to_vec()), b"a\r\nb\r\nc\r\n");
        assert_eq!(crlf(b"\n".to_vec()), b"\r\n");
        assert_eq!(crlf(b"a\r\n".to_vec()), b"a\r\n");
        assert_eq!(crlf(Vec::new()), b"");
    }
}
