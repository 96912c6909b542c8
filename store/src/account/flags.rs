//! STORE (RFC 3501 §6.4.6) with CONDSTORE's UNCHANGEDSINCE (RFC 7162 §3.1.3).
//!
//! One call handles the whole message set in one index transaction, so
//! `STORE 1:* +FLAGS` on a big mailbox is one commit and one flush. A
//! change of system flags or keywords renames a file (its `:2,` letters:
//! capitals for flags, `a`..`z` for keywords as the folder's
//! `dovecot-keywords` maps them, see keyword_letters.rs). Files are renamed
//! before the commit: a crash between leaves files whose flags and keyword
//! letters the scan takes over (the change was never acknowledged).

use std::fs;
use std::path::PathBuf;

use super::Account;
use crate::ids::{Flags, MailboxGuid, ModSeq, Uid};
use crate::index::{MessageMeta, Tx};
use crate::keyword_letters::{KeywordLetters, letters_in};
use crate::keywords::{FlagOp, same_set};
use crate::maildir::{FileName, Relocator};
use crate::watch::own_rename;
use crate::{Error, IoContext, Result};

/// What STORE did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreResult {
    /// Every UID asked for that names a message and passed the
    /// UNCHANGEDSINCE test, in the order asked, with its flags, keywords and
    /// modseq after the operation (unchanged messages keep their modseq).
    pub updated: Vec<(Uid, Flags, Vec<String>, ModSeq)>,
    /// UIDs not changed because their modseq is above UNCHANGEDSINCE
    /// (RFC 7162 `MODIFIED` response code).
    pub modified: Vec<Uid>,
}

/// A message whose flags the operation changes.
struct Pending {
    row: MessageMeta,
    flags: Flags,
    keywords: Vec<String>,
    file: String,
}

impl Account {
    /// RFC 3501 §6.4.6 STORE, RFC 7162 UNCHANGEDSINCE: apply `op` to the
    /// messages of `mailbox` named by `uids` (sorted; UIDs that name no
    /// message are skipped). A message whose flags and keywords do not change
    /// is not written and keeps its modseq. With `unchanged_since`, messages
    /// whose modseq is above it are left alone and listed in `modified`.
    /// Keywords that are not atoms are refused (`InvalidData`); keywords
    /// match without regard to case and keep their first spelling.
    pub fn store_flags(
        &self,
        mailbox: &MailboxGuid,
        uids: &[Uid],
        op: FlagOp,
        unchanged_since: Option<ModSeq>,
    ) -> Result<StoreResult> {
        let op = op.checked()?;
        // Flagging \Deleted must work on a full disk: it undoes its renames
        // on error, so it can run again once the reserve is released.
        self.freeing("STORE", || {
            self.store_flags_once(mailbox, uids, &op, unchanged_since)
        })
    }

    fn store_flags_once(
        &self,
        mailbox: &MailboxGuid,
        uids: &[Uid],
        op: &FlagOp,
        unchanged_since: Option<ModSeq>,
    ) -> Result<StoreResult> {
        let mut g = self.conn()?;
        let mb = Self::mailbox_in(&g.conn, mailbox)?;
        let rows = Self::rows_for(&g.conn, mb.id, uids)?;
        let folder = self.folder(&mb);
        let mut relocator = Relocator::new(&folder);
        let mut letters = KeywordLetters::read(&folder);
        let mut result = StoreResult::default();
        // Each asked-for message, in order: unchanged (Err) or pending (Ok).
        let mut plan: Vec<std::result::Result<Pending, MessageMeta>> =
            Vec::with_capacity(rows.len());
        let mut renamed: Vec<(PathBuf, PathBuf)> = Vec::new();
        for row in rows {
            if unchanged_since.is_some_and(|u| row.modseq > u) {
                result.modified.push(row.uid);
                continue;
            }
            let (flags, keywords) = op.apply(row.flags, &row.keywords);
            if flags == row.flags && same_set(&keywords, &row.keywords) {
                plan.push(Err(row));
                continue;
            }
            let mut file = row.file.clone();
            let keyword_letters = letters.letters_for(&keywords);
            if flags != row.flags || keyword_letters != letters_in(&row.file) {
                // A letter given out now is in dovecot-keywords before any
                // name uses it.
                if let Err(e) = letters.save() {
                    undo_renames(&renamed);
                    return Err(e);
                }
                let wanted = (flags, keyword_letters.as_str());
                match self.rename_for_flags(&folder, &mut relocator, &row.file, wanted) {
                    Ok(Some((src, dst, rel))) => {
                        renamed.push((src, dst));
                        file = rel;
                    }
                    Ok(None) => continue, // the file is gone: the scan expunges it
                    Err(e) => {
                        undo_renames(&renamed);
                        return Err(e);
                    }
                }
            }
            plan.push(Ok(Pending {
                row,
                flags,
                keywords,
                file,
            }));
        }
        let committed = (|| {
            if !renamed.is_empty() {
                for sub in ["cur", "new"] {
                    self.sync.dir_written(&folder.join(sub))?;
                }
            }
            let kib = crate::index::cache_kib_for_rows(plan.len());
            crate::index::with_cache(&mut g.conn, kib, |conn| {
                let mut tx = Tx::begin(conn, &self.env)?;
                for item in plan {
                    match item {
                        Err(row) => {
                            result
                                .updated
                                .push((row.uid, row.flags, row.keywords, row.modseq));
                        }
                        Ok(p) => {
                            let modseq =
                                tx.update_flags(&mb, p.row.uid, p.flags, &p.keywords, &p.file)?;
                            result
                                .updated
                                .push((p.row.uid, p.flags, p.keywords, modseq));
                        }
                    }
                }
                tx.commit()
            })
        })();
        match committed {
            Ok(changes) => {
                drop(g);
                if !changes.is_empty() {
                    self.publish(changes)?;
                }
                Ok(result)
            }
            Err(e) => {
                undo_renames(&renamed);
                Err(e)
            }
        }
    }

    /// Rename a message file for new system flags and keyword letters
    /// (into `cur/` with its `:2,` letters), announced to the Maildir
    /// watcher. Returns (old path, new path, new relative
    /// name), or `None` if the file is gone.
    pub(super) fn rename_for_flags(
        &self,
        folder: &std::path::Path,
        relocator: &mut Relocator<'_>,
        file: &str,
        (flags, keyword_letters): (Flags, &str),
    ) -> Result<Option<(PathBuf, PathBuf, String)>> {
        let target = |rel: &str| -> Result<String> {
            let name = rel.rsplit('/').next().unwrap_or(rel);
            let parsed = FileName::parse(name)
                .ok_or_else(|| Error::InvalidData(format!("bad file name {name}")))?;
            Ok(format!(
                "cur/{}",
                parsed.cur_name_with(flags, keyword_letters)
            ))
        };
        let mut rel = file.to_string();
        for attempt in 0..2 {
            let new_rel = target(&rel)?;
            let (src, dst) = (folder.join(&rel), folder.join(&new_rel));
            if new_rel == rel {
                return Ok(Some((src, dst, new_rel)));
            }
            let announced = self.own.announce(own_rename(&src, &dst));
            match fs::rename(&src, &dst) {
                Ok(()) => {
                    announced.made();
                    return Ok(Some((src, dst, new_rel)));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempt == 0 => {
                    match relocator.find(file)? {
                        Some(now) => rel = now,
                        None => return Ok(None),
                    }
                }
                Err(e) => {
                    return Err(e).ctx(|| format!("rename {rel} in {}", folder.display()));
                }
            }
        }
        Ok(None)
    }
}

/// Put renamed files back (best effort: the scan takes over what is left).
fn undo_renames(renamed: &[(PathBuf, PathBuf)]) {
    for (src, dst) in renamed.iter().rev() {
        if src != dst
            && let Err(e) = fs::rename(dst, src)
        {
            tracing::warn!(file = %dst.display(), error = %e, "could not undo a flag rename");
        }
    }
}
