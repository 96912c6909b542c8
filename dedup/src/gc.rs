//! Garbage collection: a blob whose link count is 1 is used by no Maildir
//! file (the essay at the top of lib.rs says why it is safe while
//! deliveries run). [`BlobStore::gc`] walks every blob (`cove dedup gc`,
//! and the server's periodic full pass); [`BlobStore::collect_unlinked`]
//! checks only the blobs whose links EXPUNGE or DELETE removed, so that
//! expunged mail frees its space within seconds at a cost that follows the
//! expunges, not the store's size.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::{BlobStore, ContentId, IoContext, Result};

/// Content ids whose Maildir links were removed (EXPUNGE, DELETE): the
/// candidates of the next bounded collection. Bounded: past
/// [`UNLINKED_LIMIT`] ids it only remembers that a full pass is due.
#[derive(Debug, Default)]
pub(crate) struct Unlinked {
    ids: HashSet<ContentId>,
    overflowed: bool,
}

/// Most content ids remembered for the automatic collection.
const UNLINKED_LIMIT: usize = 100_000;

impl BlobStore {
    /// Note that Maildir links to these blobs were removed: they are
    /// collected by the next [`collect_unlinked`](BlobStore::collect_unlinked)
    /// if nothing links them any more.
    pub fn unlinked(&self, ids: impl IntoIterator<Item = ContentId>) {
        let Ok(mut u) = self.unlinked.lock() else {
            return;
        };
        for id in ids {
            if u.ids.len() >= UNLINKED_LIMIT {
                u.overflowed = true;
                break;
            }
            u.ids.insert(id);
        }
    }

    /// Whether [`unlinked`](BlobStore::unlinked) noted anything since the
    /// last collection.
    pub fn has_unlinked(&self) -> bool {
        self.unlinked
            .lock()
            .is_ok_and(|u| !u.ids.is_empty() || u.overflowed)
    }

    /// Collect up to `limit` of the blobs noted by
    /// [`unlinked`](BlobStore::unlinked) that nothing links any more (the
    /// rest wait for the next call); a full [`gc`](BlobStore::gc) if more
    /// were noted than remembered. Safe while deliveries run, like `gc`.
    pub fn collect_unlinked(&self, limit: usize) -> Result<GcReport> {
        let (batch, full) = {
            let Ok(mut u) = self.unlinked.lock() else {
                return Ok(GcReport::default());
            };
            let batch: Vec<ContentId> = u.ids.iter().take(limit).copied().collect();
            for id in &batch {
                u.ids.remove(id);
            }
            (batch, std::mem::take(&mut u.overflowed))
        };
        if full {
            return self.gc();
        }
        let mut report = GcReport::default();
        for id in batch {
            let Ok(meta) = fs::symlink_metadata(self.path_of(&id)) else {
                continue;
            };
            if meta.nlink() != 1 {
                continue;
            }
            if self.collect_one(&id)? {
                report.removed_blobs += 1;
                report.freed_bytes += meta.len();
            } else {
                report.kept_in_use += 1;
            }
        }
        Ok(report)
    }

    /// How much the store holds and how much dedup saves.
    pub fn stats(&self) -> Result<DedupStats> {
        let mut s = DedupStats::default();
        self.for_each_blob(|_, _, meta| {
            let refs = meta.nlink().saturating_sub(1);
            s.blobs += 1;
            s.stored_bytes += meta.len();
            s.messages += refs;
            s.logical_bytes += refs * meta.len();
            if refs == 0 {
                s.unreferenced_blobs += 1;
            }
        })?;
        Ok(s)
    }

    /// Remove every blob that no Maildir file links to any more. Safe while
    /// deliveries run: see the module documentation.
    pub fn gc(&self) -> Result<GcReport> {
        let mut candidates = Vec::new();
        self.for_each_blob(|id, _, meta| {
            if meta.nlink() == 1 {
                candidates.push((id, meta.len()));
            }
        })?;
        let mut report = GcReport::default();
        for (id, len) in candidates {
            if self.collect_one(&id)? {
                report.removed_blobs += 1;
                report.freed_bytes += len;
            } else {
                report.kept_in_use += 1;
            }
        }
        // Temporary blobs abandoned by a crash mid-write (older than an hour,
        // so a slow delivery that is still writing is left alone).
        report.removed_tmp = self.remove_stale_tmp(Duration::from_secs(3600))?;
        Ok(report)
    }

    /// Remove one blob if nothing links to it. Returns whether it was removed.
    pub(crate) fn collect_one(&self, id: &ContentId) -> Result<bool> {
        let path = self.path_of(id);
        let parked = self.tmp.join(format!("gc.{}", id.to_hex()));
        match fs::rename(&path, &parked) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e).ctx(|| format!("park {}", path.display())),
        }
        let meta = fs::symlink_metadata(&parked).ctx(|| format!("stat {}", parked.display()))?;
        if meta.nlink() == 1 {
            fs::remove_file(&parked).ctx(|| format!("remove {}", parked.display()))?;
            Ok(true)
        } else {
            // Someone linked it between our scan and the rename: put it back.
            self.unpark(&parked, &path)?;
            Ok(false)
        }
    }

    /// Give a parked blob its name back (after a linked-in-between race or a
    /// crash in the middle of gc).
    fn unpark(&self, parked: &Path, path: &Path) -> Result<()> {
        if let Err(e) = fs::hard_link(parked, path) {
            // If a writer re-installed the same content meanwhile, its inode
            // is the blob now; ours lives on in the Maildir files linking it.
            if !path.exists() {
                return Err(e).ctx(|| format!("restore {}", path.display()));
            }
        }
        fs::remove_file(parked).ctx(|| format!("remove {}", parked.display()))
    }

    /// After a crash in the middle of gc, blobs may sit parked in tmp/.
    pub(crate) fn recover_interrupted_gc(&self) -> Result<()> {
        let entries = fs::read_dir(&self.tmp).ctx(|| format!("list {}", self.tmp.display()))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_prefix("gc.")) else {
                continue;
            };
            let Ok(id) = hex.parse::<ContentId>() else {
                continue;
            };
            let parked = entry.path();
            let Ok(meta) = fs::symlink_metadata(&parked) else {
                continue;
            };
            if meta.nlink() > 1 {
                if let Some(dir) = self.path_of(&id).parent() {
                    fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
                }
                self.unpark(&parked, &self.path_of(&id))?;
            } else {
                let _ = fs::remove_file(&parked);
            }
        }
        Ok(())
    }

    fn remove_stale_tmp(&self, older_than: Duration) -> Result<u64> {
        let mut removed = 0;
        let now = SystemTime::now();
        let entries = fs::read_dir(&self.tmp).ctx(|| format!("list {}", self.tmp.display()))?;
        for entry in entries.flatten() {
            let is_write = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("w."));
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > older_than);
            if is_write && old && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Figures for `cove dedup stats`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DedupStats {
    /// Distinct contents stored.
    pub blobs: u64,
    /// Maildir files that link a blob.
    pub messages: u64,
    /// What the messages would take without dedup.
    pub logical_bytes: u64,
    /// What the blobs take.
    pub stored_bytes: u64,
    /// Blobs nothing links to (what `gc` would remove).
    pub unreferenced_blobs: u64,
}

impl DedupStats {
    /// logical / stored; 1.0 when nothing is stored.
    pub fn ratio(&self) -> f64 {
        if self.stored_bytes == 0 {
            1.0
        } else {
            self.logical_bytes as f64 / self.stored_bytes as f64
        }
    }
}

/// What a garbage collection did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub removed_blobs: u64,
    pub freed_bytes: u64,
    /// Candidates that were linked again while gc ran, and kept.
    pub kept_in_use: u64,
    /// Abandoned temporary files removed.
    pub removed_tmp: u64,
}
