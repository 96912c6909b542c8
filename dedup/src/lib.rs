//! Content-addressed blob store.
//!
//! # The problem
//! A company-wide message to 1,000 mailboxes should be one file, not 1,000.
//! Every message cove stores is first written here as an immutable *blob*
//! named by the blake3 hash of its bytes; each Maildir file is a hard link to
//! that blob. The blob's link count is therefore its reference count.
//!
//! # Invariants
//! - A file at `blobs/<2 hex>/<62 hex>` holds exactly the bytes whose blake3
//!   hash is its name. Writers stream into `blobs/tmp/`, fsync, and only then
//!   give the file its name with `link(2)` — which never replaces an existing
//!   name, so a blob that is already linked into Maildirs keeps its inode.
//! - A blob is only linked into a Maildir while the writer still holds its
//!   staged temporary copy ([`StagedBlob`]). If garbage collection removed the
//!   blob in between, the staged copy is installed again, so a delivery never
//!   fails or loses content because of a concurrent `gc`.
//! - Garbage collection never unlinks a blob that a Maildir file shares: it
//!   first *renames* a candidate (link count 1) out of the namespace, so no new
//!   link can be made to it, then checks the count again. A link made between
//!   the first check and the rename is seen by the second check and the blob is
//!   put back. This needs no lock shared between the server and the CLI.
//!
//! # Alternatives rejected
//! - A lock file taken by every delivery: a cross-process lock on the hot
//!   path, and a crashed holder blocks everyone.
//! - `rename(2)` to install a blob: it silently replaces an existing blob and
//!   splits its links over two inodes, so dedup and the refcount are lost.
//! - A reference-count table in SQLite: a second truth that can disagree with
//!   the filesystem after a crash; the link count cannot.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

mod durability;

pub use durability::{BadDurability, Durability, GroupSync};

/// Errors of the blob store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("blob {0} does not exist")]
    NotFound(ContentId),
    #[error("blob {id} is corrupt: its content hashes to {actual}")]
    Corrupt { id: ContentId, actual: ContentId },
    #[error(
        "{0} and {1} are on different filesystems: blobs and mail must share one so that hard links work"
    )]
    CrossDevice(PathBuf, PathBuf),
    #[error(
        "cannot hard-link a file from {0} into {1} ({2}): blobs and mail need a filesystem with hard links (ext4, xfs, btrfs; not vfat or exfat)"
    )]
    NoHardLinks(PathBuf, PathBuf, io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

trait IoContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: what(),
            source,
        })
    }
}

impl Error {
    /// The underlying I/O error kind, if this is an I/O error.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Error::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }

    /// The raw OS error number, if any (ENOSPC, EDQUOT ... matter to callers).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// The blake3 hash of a message's bytes: its identity in the blob store.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentId(pub [u8; 32]);

impl ContentId {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> ContentId {
        ContentId(*blake3::hash(bytes).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from_digit((b >> 4) as u32, 16).unwrap_or('0'));
            s.push(char::from_digit((b & 15) as u32, 16).unwrap_or('0'));
        }
        s
    }
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentId({})", self.to_hex())
    }
}

/// Error for a string that is not 64 lowercase hex digits.
#[derive(Debug, thiserror::Error)]
#[error("not a content id (64 hex digits): {0:?}")]
pub struct BadContentId(pub String);

impl FromStr for ContentId {
    type Err = BadContentId;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(BadContentId(s.to_string()));
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16);
            let lo = (pair[1] as char).to_digit(16);
            match (hi, lo) {
                (Some(h), Some(l)) => out[i] = (h * 16 + l) as u8,
                _ => return Err(BadContentId(s.to_string())),
            }
        }
        Ok(ContentId(out))
    }
}

/// fsync a directory, so that names created or removed in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("fsync directory {}", dir.display()))
}

/// A content-addressed store of immutable blobs under one directory.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
    tmp: PathBuf,
    /// How writes are made durable (shared with the mail store, which lives
    /// on the same filesystem).
    sync: Arc<GroupSync>,
}

impl BlobStore {
    /// Open (creating if needed) the blob store at `root` (usually
    /// `<data_dir>/blobs`).
    pub fn open(root: impl Into<PathBuf>, durability: Durability) -> Result<BlobStore> {
        let root = root.into();
        let tmp = root.join("tmp");
        fs::create_dir_all(&tmp).ctx(|| format!("create {}", tmp.display()))?;
        let sync = Arc::new(GroupSync::new(&root, durability)?);
        let store = BlobStore { root, tmp, sync };
        store.recover_interrupted_gc()?;
        Ok(store)
    }

    /// The group committer of the blobs' filesystem, which the mail store
    /// shares.
    pub fn group_sync(&self) -> &Arc<GroupSync> {
        &self.sync
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob named `id` lives.
    pub fn path_of(&self, id: &ContentId) -> PathBuf {
        let hex = id.to_hex();
        self.root.join(&hex[..2]).join(&hex[2..])
    }

    /// Fail unless `other` is on the same filesystem as the blobs and that
    /// filesystem makes hard links, which dedup is built on. One device is
    /// not enough: vfat and exfat refuse `link(2)` (EPERM), so the probe
    /// links a file from the blobs' tmp/ into `other` and removes both.
    pub fn check_same_filesystem(&self, other: &Path) -> Result<()> {
        let a = fs::metadata(&self.root).ctx(|| format!("stat {}", self.root.display()))?;
        let b = fs::metadata(other).ctx(|| format!("stat {}", other.display()))?;
        if a.dev() != b.dev() {
            return Err(Error::CrossDevice(self.root.clone(), other.to_path_buf()));
        }
        let mut rnd = [0u8; 8];
        getrandom::fill(&mut rnd).map_err(|e| Error::Io {
            context: "random name for the hard link probe".into(),
            source: io::Error::other(e.to_string()),
        })?;
        let name = format!(
            ".link-probe.{}",
            rnd.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let (source, link) = (self.tmp.join(&name), other.join(&name));
        File::create(&source).ctx(|| format!("create {}", source.display()))?;
        let linked = fs::hard_link(&source, &link);
        let _ = fs::remove_file(&source);
        match linked {
            Ok(()) => {
                let _ = fs::remove_file(&link);
                Ok(())
            }
            Err(e) => Err(Error::NoHardLinks(self.tmp.clone(), other.to_path_buf(), e)),
        }
    }

    /// Start writing a new blob. Bytes are hashed as they are written.
    pub fn writer(&self) -> Result<BlobWriter> {
        let mut rnd = [0u8; 12];
        getrandom::fill(&mut rnd).map_err(|e| Error::Io {
            context: "random name for a temporary blob".into(),
            source: io::Error::other(e.to_string()),
        })?;
        let name: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
        let path = self.tmp.join(format!("w.{name}"));
        // Read-only from the start: every Maildir name of a blob shares its
        // inode, so a program that rewrote one in place would change them all.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o440)
            .open(&path)
            .ctx(|| format!("create {}", path.display()))?;
        Ok(BlobWriter {
            store: self.clone(),
            file: Some(file),
            path,
            hasher: blake3::Hasher::new(),
            len: 0,
        })
    }

    /// Store `bytes` in one call.
    pub fn put(&self, bytes: &[u8]) -> Result<StagedBlob> {
        let mut w = self.writer()?;
        w.write(bytes)?;
        w.finish()
    }

    /// Adopt an existing file (for example one another program dropped into a
    /// Maildir) as the blob of its content: if no blob has that content yet,
    /// the file itself becomes the blob (one more hard link, no copy). Returns
    /// the content id and whether the file now shares the blob's inode.
    pub fn adopt(&self, file: &Path) -> Result<(ContentId, u64, bool)> {
        let mut f = File::open(file).ctx(|| format!("open {}", file.display()))?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut len = 0u64;
        loop {
            let n = f
                .read(&mut buf)
                .ctx(|| format!("read {}", file.display()))?;
            if n == 0 {
                break;
            }
            len += n as u64;
            hasher.update(&buf[..n]);
        }
        let id = ContentId(*hasher.finalize().as_bytes());
        let target = self.path_of(&id);
        if let Some(dir) = target.parent() {
            fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
        }
        for _ in 0..3 {
            match fs::hard_link(file, &target) {
                // Not synced here: the file is already safe under its Maildir
                // name, and a blob name lost in a crash only costs a dedup
                // miss. Adopting thousands of files (an mbsync run) must not
                // cost two fsyncs each; the scan flushes once at its end.
                Ok(()) => return Ok((id, len, true)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let same = fs::metadata(&target).map(|m| m.ino()).ok()
                        == fs::metadata(file).map(|m| m.ino()).ok();
                    if same {
                        return Ok((id, len, true));
                    }
                    // The caller may replace the file by a link to the stored
                    // copy: only if that copy really holds these bytes.
                    match self.verify(&id) {
                        Ok(()) => return Ok((id, len, false)),
                        Err(Error::NotFound(_)) => continue,
                        Err(Error::Corrupt { actual, .. }) => self.quarantine(&id, &actual)?,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => {
                    return Err(e)
                        .ctx(|| format!("link {} to {}", file.display(), target.display()));
                }
            }
        }
        // The name kept changing under us: keep the file as it is.
        Ok((id, len, true))
    }

    /// Check that the blob's bytes still hash to its name.
    pub fn verify(&self, id: &ContentId) -> Result<()> {
        let path = self.path_of(id);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::NotFound(*id)),
            Err(e) => return Err(e).ctx(|| format!("open {}", path.display())),
        };
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f
                .read(&mut buf)
                .ctx(|| format!("read {}", path.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let actual = ContentId(*hasher.finalize().as_bytes());
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
        let dest = dir.join(format!("{}.actual-{}", id.to_hex(), actual.to_hex()));
        tracing::error!(blob = %id, actual = %actual, to = %dest.display(), "blob content does not match its name; quarantined");
        match fs::rename(self.path_of(id), &dest) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).ctx(|| format!("quarantine {}", id.to_hex())),
        }
    }

    /// Check every blob against its name; returns the ids of corrupt ones.
    pub fn verify_all(&self) -> Result<(u64, Vec<ContentId>)> {
        let mut ids = Vec::new();
        self.for_each_blob(|id, _, _| ids.push(id))?;
        let mut bad = Vec::new();
        for id in &ids {
            match self.verify(id) {
                Ok(()) | Err(Error::NotFound(_)) => {}
                Err(Error::Corrupt { .. }) => bad.push(*id),
                Err(e) => return Err(e),
            }
        }
        Ok((ids.len() as u64, bad))
    }

    /// Read a whole blob.
    pub fn read(&self, id: &ContentId) -> Result<Vec<u8>> {
        let path = self.path_of(id);
        match fs::read(&path) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::NotFound(*id)),
            Err(e) => Err(e).ctx(|| format!("read {}", path.display())),
        }
    }

    /// Visit every blob: (id, size, link count).
    fn for_each_blob(&self, mut f: impl FnMut(ContentId, &Path, &fs::Metadata)) -> Result<()> {
        let shards = fs::read_dir(&self.root).ctx(|| format!("list {}", self.root.display()))?;
        for shard in shards {
            let shard = shard.ctx(|| format!("list {}", self.root.display()))?;
            let shard_name = shard.file_name();
            let Some(prefix) = shard_name.to_str().filter(|s| s.len() == 2) else {
                continue;
            };
            let shard_path = shard.path();
            let entries =
                fs::read_dir(&shard_path).ctx(|| format!("list {}", shard_path.display()))?;
            for entry in entries {
                let entry = entry.ctx(|| format!("list {}", shard_path.display()))?;
                let name = entry.file_name();
                let Some(rest) = name.to_str() else { continue };
                let Ok(id) = format!("{prefix}{rest}").parse::<ContentId>() else {
                    continue;
                };
                let path = entry.path();
                // A blob removed by a concurrent gc between readdir and stat is skipped.
                if let Ok(meta) = fs::symlink_metadata(&path) {
                    f(id, &path, &meta);
                }
            }
        }
        Ok(())
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
    fn collect_one(&self, id: &ContentId) -> Result<bool> {
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
    fn recover_interrupted_gc(&self) -> Result<()> {
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

/// A blob being written. Drop it without [`finish`](BlobWriter::finish) and
/// the temporary file is removed.
pub struct BlobWriter {
    store: BlobStore,
    /// Written unbuffered: callers hand over large chunks (a whole small
    /// message, or 256 KiB at a time).
    file: Option<File>,
    path: PathBuf,
    hasher: blake3::Hasher,
    len: u64,
}

impl BlobWriter {
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        let path = &self.path;
        match self.file.as_mut() {
            Some(f) => f
                .write_all(bytes)
                .ctx(|| format!("write {}", path.display())),
            None => Err(Error::Io {
                context: format!("write {}", path.display()),
                source: io::Error::other("writer already finished"),
            }),
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Make the content durable and give it its content-addressed name.
    pub fn finish(mut self) -> Result<StagedBlob> {
        let path = self.path.clone();
        let file = self.file.take().ok_or_else(|| Error::Io {
            context: format!("finish {}", path.display()),
            source: io::Error::other("writer already finished"),
        })?;
        self.store.sync.file_written(&file)?;
        drop(file);
        let id = ContentId(*self.hasher.finalize().as_bytes());
        let staged = StagedBlob {
            store: self.store.clone(),
            id,
            len: self.len,
            tmp: Some(std::mem::take(&mut self.path)),
        };
        staged.install()?;
        Ok(staged)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A blob that is durable under its name, while its writer still holds the
/// temporary copy so that it can be linked into Maildirs even if a garbage
/// collection runs at the same moment. Dropping it releases the copy.
pub struct StagedBlob {
    store: BlobStore,
    id: ContentId,
    len: u64,
    tmp: Option<PathBuf>,
}

impl fmt::Debug for StagedBlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StagedBlob")
            .field("id", &self.id)
            .field("len", &self.len)
            .finish()
    }
}

impl StagedBlob {
    pub fn id(&self) -> ContentId {
        self.id
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn store(&self) -> &BlobStore {
        &self.store
    }

    /// Give the blob its name, unless a blob of that content already exists.
    fn install(&self) -> Result<()> {
        let Some(tmp) = &self.tmp else { return Ok(()) };
        let target = self.store.path_of(&self.id);
        let shard = target.parent().unwrap_or(&self.store.root).to_path_buf();
        let mut created_shard = false;
        if !shard.exists() {
            match fs::create_dir(&shard) {
                Ok(()) => created_shard = true,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).ctx(|| format!("create {}", shard.display())),
            }
        }
        if created_shard {
            self.store.sync.dir_written(&self.store.root)?;
        }
        for _ in 0..3 {
            match fs::hard_link(tmp, &target) {
                Ok(()) => return self.store.sync.dir_written(&shard),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    // Content we are about to link into Maildirs: check the
                    // stored copy really is these bytes (invariant 5).
                    match self.store.verify(&self.id) {
                        Ok(()) => return Ok(()),
                        Err(Error::NotFound(_)) => continue, // gc removed it meanwhile
                        Err(Error::Corrupt { actual, .. }) => {
                            self.store.quarantine(&self.id, &actual)?;
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => {
                    return Err(e)
                        .ctx(|| format!("link {} to {}", tmp.display(), target.display()));
                }
            }
        }
        Err(Error::Io {
            context: format!("install blob {}", self.id),
            source: io::Error::other("the blob kept changing while it was installed"),
        })
    }

    /// Hard-link the blob at `dest` (a new name; the caller fsyncs its
    /// directory). If a concurrent gc removed the blob, it is installed again
    /// from the staged copy first.
    pub fn link_to(&self, dest: &Path) -> Result<()> {
        let target = self.store.path_of(&self.id);
        for _ in 0..3 {
            match fs::hard_link(&target, dest) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound && !target.exists() => {
                    self.install()?;
                }
                Err(e) => {
                    return Err(e)
                        .ctx(|| format!("link {} to {}", target.display(), dest.display()));
                }
            }
        }
        Err(Error::NotFound(self.id))
    }
}

impl Drop for StagedBlob {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// Link an existing blob (by id) at `dest`, for content that is already
/// stored (COPY, a peer that holds it). Fails with [`Error::NotFound`] if the
/// blob is gone.
pub fn link_existing(store: &BlobStore, id: &ContentId, dest: &Path) -> Result<()> {
    let target = store.path_of(id);
    match fs::hard_link(&target, dest) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !target.exists() => {
            Err(Error::NotFound(*id))
        }
        Err(e) => Err(e).ctx(|| format!("link {} to {}", target.display(), dest.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().join("blobs"), Durability::Fsync).unwrap();
        (dir, store)
    }

    /// Overwrite a blob in place, as a misbehaving program (or bit rot) would.
    fn corrupt(path: &Path, bytes: &[u8]) {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o640)).unwrap();
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn blobs_are_read_only() {
        use std::os::unix::fs::PermissionsExt;
        let (_d, s) = store();
        let id = s.put(b"immutable").unwrap().id();
        assert_eq!(
            fs::metadata(s.path_of(&id)).unwrap().permissions().mode() & 0o777,
            0o440
        );
    }

    #[test]
    fn content_id_hex_round_trips() {
        let id = ContentId::of(b"hello");
        assert_eq!(id.to_hex().parse::<ContentId>().unwrap(), id);
        assert!("xyz".parse::<ContentId>().is_err());
        assert!("g".repeat(64).parse::<ContentId>().is_err());
    }

    #[test]
    fn put_names_blob_by_hash_and_dedups() {
        let (_d, s) = store();
        let a = s.put(b"same bytes").unwrap();
        let b = s.put(b"same bytes").unwrap();
        assert_eq!(a.id(), b.id());
        assert_eq!(a.id(), ContentId::of(b"same bytes"));
        assert_eq!(fs::read(s.path_of(&a.id())).unwrap(), b"same bytes");
        drop((a, b));
        let stats = s.stats().unwrap();
        assert_eq!(stats.blobs, 1);
        // No temporary files left behind.
        assert_eq!(fs::read_dir(s.root().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn streamed_write_hashes_like_one_shot() {
        let (_d, s) = store();
        let mut w = s.writer().unwrap();
        for chunk in [&b"Subject: x\r\n"[..], b"\r\n", b"body\r\n"] {
            w.write(chunk).unwrap();
        }
        let staged = w.finish().unwrap();
        assert_eq!(staged.id(), ContentId::of(b"Subject: x\r\n\r\nbody\r\n"));
        assert_eq!(staged.len(), 20);
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let (_d, s) = store();
        let mut w = s.writer().unwrap();
        w.write(b"partial").unwrap();
        drop(w);
        assert_eq!(fs::read_dir(s.root().join("tmp")).unwrap().count(), 0);
        assert_eq!(s.stats().unwrap().blobs, 0);
    }

    #[test]
    fn links_share_inode_and_count_as_references() {
        let (d, s) = store();
        let staged = s.put(b"message").unwrap();
        let mail = d.path().join("mail");
        fs::create_dir(&mail).unwrap();
        for i in 0..3 {
            staged.link_to(&mail.join(format!("m{i}"))).unwrap();
        }
        drop(staged);
        let ino = fs::metadata(mail.join("m0")).unwrap().ino();
        assert_eq!(fs::metadata(mail.join("m2")).unwrap().ino(), ino);
        let st = s.stats().unwrap();
        assert_eq!(
            (st.blobs, st.messages, st.logical_bytes, st.stored_bytes),
            (1, 3, 21, 7)
        );
        assert!((st.ratio() - 3.0).abs() < 1e-9);
    }

    #[test]
    fn gc_removes_only_unreferenced_blobs() {
        let (d, s) = store();
        let kept = s.put(b"kept").unwrap();
        let gone = s.put(b"gone").unwrap();
        kept.link_to(&d.path().join("ref")).unwrap();
        let (kept_id, gone_id) = (kept.id(), gone.id());
        drop((kept, gone));
        let report = s.gc().unwrap();
        assert_eq!(report.removed_blobs, 1);
        assert_eq!(report.freed_bytes, 4);
        assert!(s.path_of(&kept_id).exists());
        assert!(!s.path_of(&gone_id).exists());
        s.verify(&kept_id).unwrap();
    }

    #[test]
    fn staged_blob_survives_concurrent_gc() {
        let (d, s) = store();
        // While a fresh blob is staged, its temporary name is one more link,
        // so gc leaves it alone.
        let first = s.put(b"racing").unwrap();
        assert_eq!(s.gc().unwrap().removed_blobs, 0);
        drop(first);
        // The content was already stored (unreferenced): the new put keeps
        // its own temporary copy, and gc removes the old blob between the
        // put and the link into a Maildir.
        let staged = s.put(b"racing").unwrap();
        assert_eq!(s.gc().unwrap().removed_blobs, 1);
        staged.link_to(&d.path().join("late")).unwrap();
        drop(staged);
        assert_eq!(fs::read(d.path().join("late")).unwrap(), b"racing");
        assert_eq!(s.stats().unwrap().messages, 1);
        s.verify(&ContentId::of(b"racing")).unwrap();
    }

    #[test]
    fn gc_puts_back_a_blob_linked_after_its_scan() {
        let (d, s) = store();
        let id = s.put(b"x").unwrap().id();
        // Simulate the race inside collect_one: link appears after the scan.
        link_existing(&s, &id, &d.path().join("r")).unwrap();
        assert!(!s.collect_one(&id).unwrap());
        assert!(s.path_of(&id).exists());
    }

    #[test]
    fn interrupted_gc_is_recovered_on_open() {
        let (d, s) = store();
        let id = s.put(b"parked").unwrap().id();
        link_existing(&s, &id, &d.path().join("r")).unwrap();
        let parked = s.root().join("tmp").join(format!("gc.{}", id.to_hex()));
        fs::rename(s.path_of(&id), &parked).unwrap();
        let s = BlobStore::open(s.root(), Durability::Fsync).unwrap();
        assert!(s.path_of(&id).exists());
        assert!(!parked.exists());
    }

    #[test]
    fn verify_detects_corruption() {
        let (_d, s) = store();
        let id = s.put(b"original").unwrap().id();
        corrupt(&s.path_of(&id), b"tampered");
        assert!(matches!(s.verify(&id), Err(Error::Corrupt { .. })));
        assert!(matches!(
            s.verify(&ContentId::of(b"none")),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn a_corrupt_stored_copy_is_never_linked_again() {
        let (d, s) = store();
        let id = s.put(b"the real content").unwrap().id();
        corrupt(&s.path_of(&id), b"bit rot");
        assert_eq!(s.verify_all().unwrap(), (1, vec![id]));
        // The same content arrives again: the rotten copy is quarantined and
        // the new bytes take the name.
        let staged = s.put(b"the real content").unwrap();
        staged.link_to(&d.path().join("m")).unwrap();
        assert_eq!(fs::read(d.path().join("m")).unwrap(), b"the real content");
        s.verify(&id).unwrap();
        assert_eq!(
            fs::read_dir(s.root().join("quarantine")).unwrap().count(),
            1
        );
    }

    #[test]
    fn adopt_turns_a_foreign_file_into_the_blob() {
        let (d, s) = store();
        let f = d.path().join("foreign");
        fs::write(&f, b"dropped by procmail").unwrap();
        let (id, len, shared) = s.adopt(&f).unwrap();
        assert!(shared);
        assert_eq!(len, 19);
        assert_eq!(
            fs::metadata(s.path_of(&id)).unwrap().ino(),
            fs::metadata(&f).unwrap().ino()
        );
    }
}
