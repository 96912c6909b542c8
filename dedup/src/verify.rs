//! Content verification: a blob's bytes must hash to its name (DESIGN.md
//! invariant 5). A blob that does not is moved to `blobs/quarantine/` (the
//! name is free for the right content), and so is, as one more hard link,
//! any Maildir file found holding other bytes than its content id. The
//! quarantine is the record of damage: an entry whose inode has other links
//! is still served by some mailbox ([`BlobStore::damaged`]); once every
//! such file is relinked to good content its count drops to one and the
//! entry is retired.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::{BlobStore, ContentId, Error, IoContext, Result};

/// The content id and length of a Maildir file's content, without
/// following a symbolic link or blocking on a FIFO; `None` if it is not a
/// regular file.
pub fn hash_file(path: &Path) -> Result<Option<(ContentId, u64)>> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(path);
    let f = match f {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Ok(None);
        }
        Err(e) => return Err(e).ctx(|| format!("open {}", path.display())),
    };
    if !f
        .metadata()
        .ctx(|| format!("stat {}", path.display()))?
        .is_file()
    {
        return Ok(None);
    }
    hash_content(f, path).map(Some)
}

/// The content id and length of what `f` (opened from `path`) holds.
pub fn hash_content(mut f: File, path: &Path) -> Result<(ContentId, u64)> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .ctx(|| format!("read {}", path.display()))?;
        if n == 0 {
            break;
        }
        len += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((ContentId(*hasher.finalize().as_bytes()), len))
}

impl BlobStore {
    /// Check that the blob's bytes still hash to its name.
    pub fn verify(&self, id: &ContentId) -> Result<()> {
        let path = self.path_of(id);
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::NotFound(*id)),
            Err(e) => return Err(e).ctx(|| format!("open {}", path.display())),
        };
        let (actual, _) = hash_content(f, &path)?;
        if actual != *id {
            return Err(Error::Corrupt { id: *id, actual });
        }
        Ok(())
    }

    /// Move a blob whose content does not match its name out of the way, to
    /// `blobs/quarantine/`, so that the right content can take its name. The
    /// Maildir files already linked to it keep it; `verify` reports them.
    pub fn quarantine(&self, id: &ContentId, actual: &ContentId) -> Result<()> {
        let dir = self.root.join("quarantine");
        fs::create_dir_all(&dir).ctx(|| format!("create {}", dir.display()))?;
        let path = self.path_of(id);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            return Ok(());
        };
        // The inode in the name: two corrupt copies of one content (a
        // re-delivery, then bit rot again) both stay tracked.
        let dest = dir.join(format!(
            "{}.actual-{}.{}",
            id.to_hex(),
            actual.to_hex(),
            meta.ino()
        ));
        tracing::error!(blob = %id, actual = %actual, to = %dest.display(), maildir_links = meta.nlink().saturating_sub(1), "blob content does not match its name; quarantined (`cove dedup verify` lists the messages that use it)");
        match fs::rename(&path, &dest) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).ctx(|| format!("quarantine {}", id.to_hex())),
        }
    }

    /// Check every blob against its name and quarantine the corrupt ones;
    /// returns how many were checked and the (name, actual content) of the
    /// corrupt ones.
    pub fn verify_all(&self) -> Result<(u64, Vec<(ContentId, ContentId)>)> {
        // Streamed: memory grows with the corrupt blobs, not the store.
        let (mut checked, mut bad, mut failed) = (0u64, Vec::new(), None);
        self.for_each_blob(|id, _, _| {
            if failed.is_some() {
                return;
            }
            checked += 1;
            let verdict = match self.verify(&id) {
                Ok(()) | Err(Error::NotFound(_)) => Ok(()),
                Err(Error::Corrupt { actual, .. }) => {
                    bad.push((id, actual));
                    self.quarantine(&id, &actual)
                }
                Err(e) => Err(e),
            };
            failed = verdict.err();
        })?;
        match failed {
            Some(e) => Err(e),
            None => Ok((checked, bad)),
        }
    }

    /// Track a Maildir file that should hold `id` but holds `actual` (and is
    /// not a link to a quarantined blob already): one more hard link in
    /// `blobs/quarantine/`, so that [`damaged`](BlobStore::damaged) lists
    /// it until the file is repaired.
    pub fn quarantine_file(&self, file: &Path, id: &ContentId, actual: &ContentId) -> Result<()> {
        let dir = self.root.join("quarantine");
        fs::create_dir_all(&dir).ctx(|| format!("create {}", dir.display()))?;
        let ino = fs::symlink_metadata(file)
            .ctx(|| format!("stat {}", file.display()))?
            .ino();
        let dest = dir.join(format!("{}.actual-{}.{ino}", id.to_hex(), actual.to_hex()));
        match fs::hard_link(file, &dest) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e).ctx(|| format!("link {} to {}", file.display(), dest.display())),
        }
    }

    /// Content ids whose corrupt copy some Maildir file still serves: a
    /// quarantined inode with links besides its quarantine name. They count
    /// as lacking until every such file is relinked to good content.
    pub fn damaged(&self) -> Result<HashSet<ContentId>> {
        let mut out = HashSet::new();
        self.for_each_quarantined(|id, meta| {
            if meta.nlink() > 1 {
                out.insert(id);
            }
        })?;
        Ok(out)
    }

    /// Remove the quarantined copies no Maildir file serves any more
    /// (repaired, or never linked); returns how many.
    pub fn retire_repaired(&self) -> Result<u64> {
        let mut gone = Vec::new();
        self.for_each_quarantined_path(|id, path, meta| {
            if meta.nlink() == 1 {
                gone.push((id, path.to_path_buf()));
            }
        })?;
        for (id, path) in &gone {
            if fs::remove_file(path).is_ok() {
                tracing::info!(blob = %id, "no mailbox serves the corrupt copy of this content any more; removed it from quarantine");
            }
        }
        Ok(gone.len() as u64)
    }

    fn for_each_quarantined(&self, mut f: impl FnMut(ContentId, &fs::Metadata)) -> Result<()> {
        self.for_each_quarantined_path(|id, _, meta| f(id, meta))
    }

    fn for_each_quarantined_path(
        &self,
        mut f: impl FnMut(ContentId, &Path, &fs::Metadata),
    ) -> Result<()> {
        let dir = self.root.join("quarantine");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).ctx(|| format!("list {}", dir.display())),
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.get(..64))
                .and_then(|h| h.parse::<ContentId>().ok())
            else {
                continue;
            };
            let path = entry.path();
            if let Ok(meta) = fs::symlink_metadata(&path) {
                f(id, &path, &meta);
            }
        }
        Ok(())
    }

    /// The inode of the blob named `id`, if it exists.
    pub fn inode_of(&self, id: &ContentId) -> Option<u64> {
        fs::symlink_metadata(self.path_of(id)).ok().map(|m| m.ino())
    }
}
