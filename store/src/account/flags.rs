//! STORE (RFC 3501 §6.4.6) with CONDSTORE's UNCHANGEDSINCE (RFC 7162 §3.1.3).
//!
//! One call handles the whole message set in one index transaction, so
//! `STORE 1:* +FLAGS` on a big mailbox is one commit and one flush. A
//! change of system flags or keywords renames a file (its `:2,` letters:
//! capitals for flags, `a`..`z` for keywords as the folder's
//! `dovecot-keywords` maps them, see keyword_letters.rs). Files are renamed
//! before the commit: a crash between leaves files whose flags and keyword
//! letters the scan takes over (the change was never acknowledged).
//!
//! A big set is done in batches, not message by message: every rename is
//! announced to the Maildir watcher with one call, the renames are made
//! from a descriptor of the folder (two path components each, not the whole
//! path), and the index is written by [`Tx::update_flags_many`]: one read
//! of what the messages had, one UPDATE each (one modseq index entry
//! moved), and one change-log row for the whole set. Every changed message
//! still gets a modseq of its own, a run in UID order (RFC 7162), and its
//! own change on the live feed; replication sends each changed row.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use super::Account;
use crate::ids::{Flags, MailboxGuid, ModSeq, Uid};
use crate::index::{FlagUpdate, MessageMeta, Tx};
use crate::keyword_letters::{KeywordLetters, letters_in};
use crate::keywords::{FlagOp, same_set};
use crate::maildir::{FileName, Relocator};
use crate::watch::{OwnEvent, OwnTally, own_rename};
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
    /// The modseqs the changed messages were given, first and last: one
    /// run with nothing of anyone else's in it (the account's changes are
    /// numbered in one transaction at a time). `None`: nothing changed.
    /// The live feed carries each of them too; a session that holds them
    /// already skips them there (`View` in the server).
    pub committed: Option<(ModSeq, ModSeq)>,
}

/// What the operation does to one asked-for message.
enum Planned {
    /// Its flags and keywords stay (it keeps its modseq).
    Same(MessageMeta),
    Change(Pending),
    /// Its file is gone (the scan expunges it).
    Gone,
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
        let mut letters = KeywordLetters::read(&folder);
        let mut result = StoreResult::default();
        // Each asked-for message, in order: unchanged (Err) or pending (Ok).
        let mut plan: Vec<Planned> = Vec::with_capacity(rows.len());
        // The renames the pending messages need: (index in plan, from, to).
        let mut moves: Vec<(usize, String, String)> = Vec::new();
        for row in rows {
            if unchanged_since.is_some_and(|u| row.modseq > u) {
                result.modified.push(row.uid);
                continue;
            }
            let (flags, keywords) = op.apply(row.flags, &row.keywords);
            if flags == row.flags && same_set(&keywords, &row.keywords) {
                plan.push(Planned::Same(row));
                continue;
            }
            let mut file = row.file.clone();
            let keyword_letters = letters.letters_for(&keywords);
            if flags != row.flags || keyword_letters != letters_in(&row.file) {
                let to = flag_file_name(&row.file, (flags, &keyword_letters))?;
                if to != row.file {
                    moves.push((plan.len(), row.file.clone(), to.clone()));
                }
                file = to;
            }
            plan.push(Planned::Change(Pending {
                row,
                flags,
                keywords,
                file,
            }));
        }
        // A letter given out now is in dovecot-keywords before any name
        // uses it.
        letters.save()?;
        let renamed = self.rename_for_flags_batch(&folder, &mut plan, &moves)?;
        let committed = (|| {
            if !renamed.is_empty() {
                for sub in ["cur", "new"] {
                    self.sync.dir_written(&folder.join(sub))?;
                }
            }
            let kib = crate::index::cache_kib_for_rows(plan.len());
            crate::index::with_cache(&mut g.conn, kib, |conn| {
                let mut tx = Tx::begin(conn, &self.env)?;
                let updates: Vec<FlagUpdate<'_>> = plan
                    .iter()
                    .filter_map(|item| match item {
                        Planned::Change(p) => Some(p),
                        _ => None,
                    })
                    .map(|p| FlagUpdate {
                        uid: p.row.uid,
                        flags: p.flags,
                        keywords: &p.keywords,
                        file: &p.file,
                    })
                    .collect();
                let modseqs = tx.update_flags_many(&mb, &updates)?;
                drop(updates);
                if let (Some(first), Some(last)) = (modseqs.first(), modseqs.last()) {
                    result.committed = Some((*first, *last));
                }
                let mut modseqs = modseqs.into_iter();
                for item in plan {
                    match item {
                        Planned::Same(row) => {
                            result
                                .updated
                                .push((row.uid, row.flags, row.keywords, row.modseq));
                        }
                        Planned::Change(p) => {
                            let modseq = modseqs.next().unwrap_or(p.row.modseq);
                            result
                                .updated
                                .push((p.row.uid, p.flags, p.keywords, modseq));
                        }
                        Planned::Gone => {}
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
                renamed.undo();
                Err(e)
            }
        }
    }

    /// Make the renames `moves` names ((index in `plan`, from, to), relative
    /// to `folder`), announced to the Maildir watcher as one count per
    /// directory and kind (not a path per file), from one directory
    /// descriptor so each looks up two components, not the whole path. A
    /// file another program renamed meanwhile is looked up and renamed from
    /// its new name (its pending `file` follows); one that is gone leaves
    /// `plan` (the scan expunges it). Returns what was renamed; on error,
    /// what was renamed is put back.
    fn rename_for_flags_batch<'m>(
        &self,
        folder: &'m Path,
        plan: &mut [Planned],
        moves: &'m [(usize, String, String)],
    ) -> Result<MadeRenames<'m>> {
        let mut made = MadeRenames {
            folder,
            moves,
            batch: Vec::new(),
            relocated: Vec::new(),
        };
        if moves.is_empty() {
            return Ok(made);
        }
        let dir = rustix::fs::open(
            folder,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(std::io::Error::from)
        .ctx(|| format!("open {}", folder.display()))?;
        let pair = |i: &usize| (moves[*i].1.as_str(), moves[*i].2.as_str());
        let all: Vec<usize> = (0..moves.len()).collect();
        self.own
            .expect_tally(&rename_tally(folder, all.iter().map(pair)));
        let outcomes = rename_all(&dir, moves);
        made.batch = Vec::with_capacity(moves.len());
        let mut not_made: Vec<usize> = Vec::new();
        let mut failed: Option<(&str, std::io::Error)> = None;
        for (i, ((_, from, _), outcome)) in moves.iter().zip(outcomes).enumerate() {
            match outcome {
                Ok(()) => made.batch.push(i),
                Err(e) => {
                    not_made.push(i);
                    if e.kind() != std::io::ErrorKind::NotFound && failed.is_none() {
                        failed = Some((from, e));
                    }
                }
            }
        }
        if !not_made.is_empty() {
            self.own
                .retract_tally(&rename_tally(folder, not_made.iter().map(pair)));
        }
        if let Some((from, e)) = failed {
            made.undo();
            return Err(e).ctx(|| format!("rename {from} in {}", folder.display()));
        }
        // Files another program renamed (or removed) meanwhile, one by one.
        let mut relocator = Relocator::new(folder);
        for i in not_made {
            let (slot, from, _) = &moves[i];
            let Some(Planned::Change(p)) = plan.get_mut(*slot) else {
                continue;
            };
            let keyword_letters = letters_in(&p.file);
            match self.rename_for_flags(folder, &mut relocator, from, (p.flags, &keyword_letters)) {
                Ok(Some((src, dst, rel))) => {
                    made.relocated.push((src, dst));
                    p.file = rel;
                }
                Ok(None) => plan[*slot] = Planned::Gone,
                Err(e) => {
                    made.undo();
                    return Err(e);
                }
            }
        }
        Ok(made)
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
        let mut rel = file.to_string();
        for attempt in 0..2 {
            let new_rel = flag_file_name(&rel, (flags, keyword_letters))?;
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

/// The name (`cur/..`, relative to the folder) of the file `rel` with new
/// system flags and keyword letters.
fn flag_file_name(rel: &str, (flags, keyword_letters): (Flags, &str)) -> Result<String> {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    let parsed =
        FileName::parse(name).ok_or_else(|| Error::InvalidData(format!("bad file name {name}")))?;
    Ok(format!(
        "cur/{}",
        parsed.cur_name_with(flags, keyword_letters)
    ))
}

/// Rename each (_, from, to) of `moves` within `dir`, in order; the
/// outcomes in that order. One thread: renames in one directory take its
/// lock in the kernel, and on the bench machine (2 cores) 4 threads were no
/// faster than one (35,470 renames: 5.9-6.3 s against 4.3-6.1 s wall, the
/// same CPU).
fn rename_all(dir: &OwnedFd, moves: &[(usize, String, String)]) -> Vec<std::io::Result<()>> {
    moves
        .iter()
        .map(|(_, from, to)| {
            rustix::fs::renameat(dir, from.as_str(), dir, to.as_str()).map_err(std::io::Error::from)
        })
        .collect()
}

/// The renames a STORE made, to put back if its commit fails.
struct MadeRenames<'m> {
    folder: &'m Path,
    moves: &'m [(usize, String, String)],
    /// Indices into `moves` of the renames made in the batch.
    batch: Vec<usize>,
    /// Files found under another name and renamed from it (old, new path).
    relocated: Vec<(PathBuf, PathBuf)>,
}

impl MadeRenames<'_> {
    fn is_empty(&self) -> bool {
        self.batch.is_empty() && self.relocated.is_empty()
    }

    /// Put the files back, last renamed first (best effort: the scan takes
    /// over what is left).
    fn undo(&self) {
        undo_renames(&self.relocated);
        let back: Vec<(PathBuf, PathBuf)> = self
            .batch
            .iter()
            .map(|i| {
                let (_, from, to) = &self.moves[*i];
                (self.folder.join(from), self.folder.join(to))
            })
            .collect();
        undo_renames(&back);
    }
}

/// What renames (from, to), relative to `folder`, announce to the Maildir
/// watcher: a vanish in each one's directory, an appearance in the other;
/// counted per directory (a STORE touches `new/` and `cur/`), each
/// directory's path made once.
fn rename_tally<'a>(folder: &Path, renames: impl Iterator<Item = (&'a str, &'a str)>) -> OwnTally {
    let mut counts: Vec<(&str, OwnEvent, u64)> = Vec::new();
    for (from, to) in renames {
        for (rel, event) in [(from, OwnEvent::Vanish), (to, OwnEvent::Appear)] {
            let dir = rel.rsplit_once('/').map_or("", |(d, _)| d);
            match counts.iter_mut().find(|(d, e, _)| *d == dir && *e == event) {
                Some(c) => c.2 += 1,
                None => counts.push((dir, event, 1)),
            }
        }
    }
    let mut tally = OwnTally::default();
    for (dir, event, n) in counts {
        tally.add_in(&folder.join(dir), event, n);
    }
    tally
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
