//! COPY and MOVE between a user's mailboxes (RFC 3501 §6.4.7, RFC 6851,
//! RFC 4315 COPYUID).
//!
//! # Identity
//! A copy is a new message instance: a new GUID, a new UID, a new Maildir
//! name — but the same content, so its file is one more hard link to the
//! same inode (the blob). A move keeps the GUID (DESIGN.md "Identity"): the
//! file is renamed into the other folder under the same name, the row in the
//! source is expunged (tombstone, `Expunged`) and a row with a new UID is
//! inserted in the target (`MessageAdded`), in one index transaction.
//!
//! # Crash safety of MOVE
//! The order is: rename the files, make the renames durable, commit.
//! - Crash before any rename: nothing happened.
//! - Crash after some or all renames, before the commit: the files sit in
//!   the target without rows, their rows in the source without files. The
//!   reconciling scan expunges the rows and indexes the files where they are
//!   now, keeping GUID, keywords and internal date (see `scan.rs`): the move
//!   completes for the files that moved; the rest stay in the source. The
//!   GUID is never in both mailboxes, never in neither.
//! - Crash after the commit: done.
//!
//! Commit-then-rename was rejected: a crash between them leaves rows in the
//! target without files (expunged by the scan) and files in the source whose
//! GUIDs have tombstones there (removed by the scan as expunged) — mail lost.
//! That is also why the renames are flushed before the commit in batched
//! mode: without the flush the commit could reach the disk and the renames
//! not.
//!
//! A COPY links first and commits second; a crash between leaves extra
//! copies with new GUIDs that the scan indexes — never a lost message.

use std::fs;
use std::path::PathBuf;

use super::Account;
use crate::ids::{MailboxGuid, MessageGuid, Uid};
use crate::index::{MailboxInfo, MessageMeta, NewMessageRow, Tx};
use crate::keyword_letters::{moved_rel, new_file_rel};
use crate::maildir::{self, FileName, Relocator};
use crate::watch::{OwnEvent, own_rename};
use crate::{Error, IoContext, Result};

/// Where copied or moved messages landed (RFC 4315 COPYUID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// UIDVALIDITY of the target mailbox.
    pub uidvalidity: u32,
    /// (source UID, target UID), in the order the UIDs were given; UIDs that
    /// named no message are left out.
    pub pairs: Vec<(Uid, Uid)>,
}

/// A message file renamed into another folder, not yet committed.
pub(super) struct MovedFile {
    /// The source row, with `file` its name now (in both folders).
    pub meta: MessageMeta,
    src: PathBuf,
    dst: PathBuf,
}

/// A new link made by a copy, not yet committed.
struct CopiedFile {
    source: MessageMeta,
    guid: MessageGuid,
    base: String,
    rel: String,
    path: PathBuf,
}

impl Account {
    /// RFC 3501 §6.4.7 COPY / RFC 4315 COPYUID: copy messages of `from`
    /// (by UID, sorted) into `to`. Each copy gets a new GUID and the next UID
    /// of `to`, keeps flags, keywords and internal date, and shares the
    /// content's inode. UIDs that name no message are skipped. With a
    /// `quota` (the user's limits), `OverQuota` comes before anything is
    /// done if the copies would not fit.
    pub fn copy_messages(
        &self,
        from: &MailboxGuid,
        uids: &[Uid],
        to: &MailboxGuid,
        quota: Option<crate::Quota>,
    ) -> Result<Transfer> {
        let mut g = self.conn()?;
        let from_mb = Self::mailbox_in(&g.conn, from)?;
        let to_mb = Self::mailbox_in(&g.conn, to)?;
        let rows = Self::rows_for(&g.conn, from_mb.id, uids)?;
        if let Some(quota) = &quota {
            let needed: u64 = rows.iter().map(|m| m.size).sum();
            quota.admit(&g.conn, rows.len() as u64, needed)?;
        }
        let src_folder = self.folder(&from_mb);
        let dst_folder = self.folder(&to_mb);
        let mut relocator = Relocator::new(&src_folder);
        let mut copies: Vec<CopiedFile> = Vec::with_capacity(rows.len());
        let unlink_all = |copies: &[CopiedFile]| {
            for c in copies {
                let _ = fs::remove_file(&c.path);
            }
        };
        let mut dst_letters = None;
        for m in rows {
            let guid = self.env.message_guid();
            // The name carries the internal date, so that an index rebuilt
            // from the Maildir gives the copy its date back.
            let base =
                FileName::new_delivery(m.internal_date.max(0) as u64, guid, &self.hostname, m.size);
            let Some(parsed) = FileName::parse(&base) else {
                unlink_all(&copies);
                return Err(Error::InvalidData(format!("bad file name {base}")));
            };
            // The keywords' letters as the destination folder maps them.
            let rel =
                match new_file_rel(&dst_folder, &mut dst_letters, &parsed, m.flags, &m.keywords) {
                    Ok(rel) => rel,
                    Err(e) => {
                        unlink_all(&copies);
                        return Err(e);
                    }
                };
            let path = dst_folder.join(&rel);
            let announced = self.own.announce([(path.clone(), OwnEvent::Appear)]);
            match self.link_copy(&src_folder, &mut relocator, &m, &path) {
                Ok(true) => {
                    announced.made();
                    copies.push(CopiedFile {
                        source: m,
                        guid,
                        base: parsed.base,
                        rel,
                        path,
                    });
                }
                Ok(false) => {}
                Err(e) => {
                    unlink_all(&copies);
                    return Err(e);
                }
            }
        }
        let committed = (|| {
            for sub in ["cur", "new"] {
                self.sync.dir_written(&dst_folder.join(sub))?;
            }
            let mut tx = Tx::begin(&mut g.conn, &self.env)?;
            let mut pairs = Vec::with_capacity(copies.len());
            for c in &copies {
                let row = NewMessageRow {
                    guid: c.guid,
                    content_id: c.source.content_id,
                    flags: c.source.flags,
                    keywords: &c.source.keywords,
                    internal_date: c.source.internal_date,
                    size: c.source.size,
                    base: &c.base,
                    file: &c.rel,
                    placed: None,
                    clock: "",
                };
                let (uid, _) = tx.insert_message(&to_mb, &row)?;
                pairs.push((c.source.uid, uid));
            }
            Ok::<_, Error>((pairs, tx.commit()?))
        })();
        match committed {
            Ok((pairs, changes)) => {
                drop(g);
                self.publish(changes)?;
                Ok(Transfer {
                    uidvalidity: to_mb.uidvalidity,
                    pairs,
                })
            }
            Err(e) => {
                unlink_all(&copies);
                Err(e)
            }
        }
    }

    /// Link a message's file at `dst`: from its Maildir file, from where
    /// that file is now if another program renamed it, or else from its
    /// blob. `Ok(false)`: the message is gone.
    fn link_copy(
        &self,
        src_folder: &std::path::Path,
        relocator: &mut Relocator<'_>,
        m: &MessageMeta,
        dst: &std::path::Path,
    ) -> Result<bool> {
        let not_found = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
        let first = src_folder.join(&m.file);
        match fs::hard_link(&first, dst) {
            Ok(()) => return Ok(true),
            Err(e) if not_found(&e) && !first.exists() => {}
            Err(e) => {
                return Err(e).ctx(|| format!("link {} to {}", first.display(), dst.display()));
            }
        }
        if let Some(rel) = relocator.find(&m.file)? {
            let now = src_folder.join(rel);
            match fs::hard_link(&now, dst) {
                Ok(()) => return Ok(true),
                Err(e) if not_found(&e) && !now.exists() => {}
                Err(e) => {
                    return Err(e).ctx(|| format!("link {} to {}", now.display(), dst.display()));
                }
            }
        }
        match cove_dedup::link_existing(&self.blobs, &m.content_id, dst) {
            Ok(()) => Ok(true),
            Err(cove_dedup::Error::NotFound(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// RFC 6851 MOVE (with RFC 4315 COPYUID): move messages of `from` (by
    /// UID, sorted) into `to`. Each keeps its GUID, flags, keywords and
    /// internal date and gets the next UID of `to`; in `from` it is expunged
    /// (tombstone, `Expunged` change). UIDs that name no message are skipped.
    /// Moving into the same mailbox gives the messages new UIDs there.
    pub fn move_messages(
        &self,
        from: &MailboxGuid,
        uids: &[Uid],
        to: &MailboxGuid,
    ) -> Result<Transfer> {
        // Moving mail to Trash must work on a full disk: it undoes its
        // renames on error, so it can run again once the reserve is released.
        self.freeing("MOVE", || self.move_messages_once(from, uids, to))
    }

    fn move_messages_once(
        &self,
        from: &MailboxGuid,
        uids: &[Uid],
        to: &MailboxGuid,
    ) -> Result<Transfer> {
        let mut g = self.conn()?;
        let from_mb = Self::mailbox_in(&g.conn, from)?;
        let to_mb = Self::mailbox_in(&g.conn, to)?;
        let rows = Self::rows_for(&g.conn, from_mb.id, uids)?;
        let moved = self.move_files(&from_mb, &to_mb, rows)?;
        let committed = (|| {
            self.renames_durable(&from_mb, &to_mb)?;
            let mut tx = Tx::begin(&mut g.conn, &self.env)?;
            let pairs = move_rows(&mut tx, &from_mb, &to_mb, &moved)?;
            Ok::<_, Error>((pairs, tx.commit()?))
        })();
        match committed {
            Ok((pairs, changes)) => {
                drop(g);
                self.publish(changes)?;
                Ok(Transfer {
                    uidvalidity: to_mb.uidvalidity,
                    pairs,
                })
            }
            Err(e) => {
                undo_moves(&moved);
                Err(e)
            }
        }
    }

    /// Rename the files of `rows` from `from`'s folder into `to`'s, under
    /// the same names. Messages whose file is gone are left out (the scan
    /// expunges them). On error, every rename done is undone.
    pub(super) fn move_files(
        &self,
        from: &MailboxInfo,
        to: &MailboxInfo,
        rows: Vec<MessageMeta>,
    ) -> Result<Vec<MovedFile>> {
        let src_folder = self.folder(from);
        let dst_folder = self.folder(to);
        if from.id == to.id {
            return Ok(rows
                .into_iter()
                .map(|meta| MovedFile {
                    src: src_folder.join(&meta.file),
                    dst: src_folder.join(&meta.file),
                    meta,
                })
                .collect());
        }
        let mut relocator = Relocator::new(&src_folder);
        let mut moved: Vec<MovedFile> = Vec::with_capacity(rows.len());
        // Keyword letters are per folder: a moved file takes the
        // destination's (keyword_letters.rs).
        let mut dst_letters = None;
        for mut meta in rows {
            let mut dst_rel =
                match moved_rel(&dst_folder, &mut dst_letters, &meta.file, &meta.keywords) {
                    Ok(rel) => rel,
                    Err(e) => {
                        undo_moves(&moved);
                        return Err(e);
                    }
                };
            let mut src = src_folder.join(&meta.file);
            let mut dst = dst_folder.join(&dst_rel);
            let announced = self.own.announce(own_rename(&src, &dst));
            let mut result = maildir::rename_noreplace(&src, &dst);
            if result.is_ok() {
                announced.made();
            }
            if matches!(&result, Err(e) if e.kind() == std::io::ErrorKind::NotFound)
                && !src.exists()
            {
                match relocator.find(&meta.file) {
                    Ok(Some(rel)) => {
                        dst_rel =
                            match moved_rel(&dst_folder, &mut dst_letters, &rel, &meta.keywords) {
                                Ok(r) => r,
                                Err(e) => {
                                    undo_moves(&moved);
                                    return Err(e);
                                }
                            };
                        src = src_folder.join(&rel);
                        dst = dst_folder.join(&dst_rel);
                        result = maildir::rename_noreplace(&src, &dst);
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        undo_moves(&moved);
                        return Err(e);
                    }
                }
            }
            if let Err(e) = result {
                undo_moves(&moved);
                return Err(e).ctx(|| format!("move {} to {}", src.display(), dst.display()));
            }
            meta.file = dst_rel;
            moved.push(MovedFile { meta, src, dst });
        }
        Ok(moved)
    }

    /// Make renames between two folders durable before their commit (see the
    /// module notes): each directory in `Fsync` mode, one flush in batched
    /// mode.
    pub(super) fn renames_durable(&self, from: &MailboxInfo, to: &MailboxInfo) -> Result<()> {
        for mb in [from, to] {
            for sub in ["cur", "new"] {
                self.sync.dir_written(&self.folder(mb).join(sub))?;
            }
        }
        Ok(self.sync.sync()?)
    }
}

/// The index half of a move: expunge each row in `from`, insert it in `to`
/// with the same GUID and the next UID. Returns (old UID, new UID) pairs.
pub(super) fn move_rows(
    tx: &mut Tx<'_>,
    from: &MailboxInfo,
    to: &MailboxInfo,
    moved: &[MovedFile],
) -> Result<Vec<(Uid, Uid)>> {
    let mut pairs = Vec::with_capacity(moved.len());
    for f in moved {
        let m = &f.meta;
        let name = m.file.rsplit('/').next().unwrap_or(&m.file);
        let base = FileName::parse(name)
            .map(|p| p.base)
            .ok_or_else(|| Error::InvalidData(format!("bad file name {name}")))?;
        // The flags' history travels with the message (replication).
        let clock = tx.clock_of(from, m.uid)?;
        tx.expunge(from, m.uid, m.guid)?;
        let row = NewMessageRow {
            guid: m.guid,
            content_id: m.content_id,
            flags: m.flags,
            keywords: &m.keywords,
            internal_date: m.internal_date,
            size: m.size,
            base: &base,
            file: &m.file,
            placed: None,
            clock: &clock,
        };
        let (uid, _) = tx.insert_message(to, &row)?;
        pairs.push((m.uid, uid));
    }
    Ok(pairs)
}

/// Put moved files back where they were (best effort: what cannot be put
/// back, the scan treats as moved).
pub(super) fn undo_moves(moved: &[MovedFile]) {
    for f in moved.iter().rev() {
        if f.src != f.dst
            && let Err(e) = maildir::rename_noreplace(&f.dst, &f.src)
        {
            tracing::warn!(file = %f.dst.display(), error = %e, "could not undo a move");
        }
    }
}
