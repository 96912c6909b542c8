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
//! - An anonymous temporary copy (`O_TMPFILE`, linked in with `linkat`),
//!   which would save the temporary name's create and unlink per message:
//!   the staged copy's name is the extra link that keeps gc away from a blob
//!   installed a moment ago and not yet linked into a Maildir. An anonymous
//!   inode adds no link, and once gc has removed its only name the kernel
//!   refuses to link it again (an `O_TMPFILE` inode is linkable only until
//!   its first link), so a delivery that races gc would fail where it now
//!   re-installs the blob and succeeds.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

mod durability;
mod gc;
pub mod regular_file;
mod reserve;
mod verify;

pub use durability::{BadDurability, Durability, GroupSync};
use gc::Unlinked;
pub use gc::{DedupStats, GcReport};
pub use reserve::{DEFAULT_RESERVE_BYTES, SpaceReserve, is_no_space};
pub use verify::{hash_content, hash_file};

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
    /// Space kept for deletions on a full disk (see [`SpaceReserve`]).
    reserve: Arc<SpaceReserve>,
    /// Blobs that lost a Maildir link, for the automatic collection.
    unlinked: Arc<Mutex<Unlinked>>,
}

impl BlobStore {
    /// Open (creating if needed) the blob store at `root` (usually
    /// `<data_dir>/blobs`).
    pub fn open(root: impl Into<PathBuf>, durability: Durability) -> Result<BlobStore> {
        let root = root.into();
        let tmp = root.join("tmp");
        fs::create_dir_all(&tmp).ctx(|| format!("create {}", tmp.display()))?;
        let sync = Arc::new(GroupSync::new(&root, durability)?);
        let store = BlobStore {
            root,
            tmp,
            sync,
            reserve: Arc::default(),
            unlinked: Arc::default(),
        };
        store.recover_interrupted_gc()?;
        Ok(store)
    }

    /// Keep `size` bytes in a reserve file at `path` (on the blobs'
    /// filesystem) for deletions on a full disk; 0 turns it off.
    pub fn with_reserve(mut self, path: PathBuf, size: u64) -> Result<BlobStore> {
        let reserve =
            SpaceReserve::open(path.clone(), size).ctx(|| format!("write {}", path.display()))?;
        self.reserve = Arc::new(reserve);
        Ok(self)
    }

    /// The space reserve (low-space mode while it is released).
    pub fn reserve(&self) -> &SpaceReserve {
        &self.reserve
    }

    /// The disk is full (`cause`): release the reserve so that deletions
    /// can commit. Returns whether this call freed space.
    pub fn release_reserve(&self, cause: &dyn fmt::Display) -> bool {
        self.reserve.release(cause)
    }

    /// Pass `r` on; if it failed because the disk is full, release the
    /// space reserve first (low-space mode: deletions get the freed space).
    pub fn on_full_disk<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(e @ Error::Io { source, .. }) = &r
            && is_no_space(source)
        {
            self.release_reserve(e);
        }
        r
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
    /// Refused with ENOSPC while the space reserve is in use.
    pub fn writer(&self) -> Result<BlobWriter> {
        if self.reserve.is_released() {
            return Err(Error::Io {
                context: "the disk is full (space reserve in use): new content is refused until space returns".into(),
                source: reserve::low_space_error(),
            });
        }
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
        // Never a FIFO, a directory or a symlink's target (regular_file.rs).
        let mut f = regular_file::open(file).ctx(|| format!("open {}", file.display()))?;
        let (id, len) = hash_content(&mut f, file)?;
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
                Ok(()) => return self.linked_what_was_read(&f, file, &target, id, len),
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

    /// After `adopt` linked `file`'s name as the blob `target`: make sure
    /// the name still stood for the file that was hashed (another program
    /// may have put something else there meanwhile, a FIFO even); if not,
    /// the link is taken back.
    fn linked_what_was_read(
        &self,
        read: &File,
        file: &Path,
        target: &Path,
        id: ContentId,
        len: u64,
    ) -> Result<(ContentId, u64, bool)> {
        let hashed = read.metadata().map(|m| (m.dev(), m.ino()));
        let linked = fs::symlink_metadata(target).map(|m| (m.dev(), m.ino()));
        match (hashed, linked) {
            (Ok(a), Ok(b)) if a == b => Ok((id, len, true)),
            _ => {
                let _ = fs::remove_file(target);
                Err(Error::Io {
                    context: format!("adopt {}", file.display()),
                    source: io::Error::other("the file was replaced while it was read"),
                })
            }
        }
    }

    /// Read a whole blob.
    pub fn read(&self, id: &ContentId) -> Result<Vec<u8>> {
        let path = self.path_of(id);
        match regular_file::read(&path) {
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
                // Only regular files are blobs: anything else under a
                // blob's name (a FIFO linked in before cove checked) is
                // neither verified, counted nor collected.
                match fs::symlink_metadata(&path) {
                    Ok(meta) if meta.is_file() => f(id, &path, &meta),
                    Ok(meta) => {
                        tracing::warn!(path = %path.display(), kind = ?meta.file_type(), "not a regular file under a blob's name; left alone");
                    }
                    Err(_) => {}
                }
            }
        }
        Ok(())
    }
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
            Some(f) => {
                let written = f
                    .write_all(bytes)
                    .ctx(|| format!("write {}", path.display()));
                self.store.on_full_disk(written)
            }
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

    /// No more bytes: the file is closed (in `Fsync` mode, made durable
    /// first), so that many finished writers waiting for one
    /// [`finish_all`](BlobWriter::finish_all) hold no file descriptors.
    /// Writing after this fails.
    pub fn close(&mut self) -> Result<()> {
        if let Some(file) = self.file.take()
            && self.store.sync.mode() == Durability::Fsync
        {
            self.store
                .on_full_disk(self.store.sync.file_written(&file))?;
        }
        Ok(())
    }

    /// The id of the bytes written so far.
    pub fn content_id(&self) -> ContentId {
        ContentId(*self.hasher.finalize().as_bytes())
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Make the content durable and give it its content-addressed name.
    pub fn finish(self) -> Result<StagedBlob> {
        let mut staged = BlobWriter::finish_all(vec![self])?;
        staged.pop().ok_or_else(|| Error::Io {
            context: "finish a blob".into(),
            source: io::Error::other("no blob finished"),
        })
    }

    /// [`finish`](BlobWriter::finish) many writers, in order,
    /// with one group flush for all of them in `Batched` mode (a peer's
    /// first sync sends blobs by the thousand; one flush each was most of
    /// its time). The bytes of every writer are durable before any of them
    /// gets its name, as with `finish`.
    pub fn finish_all(writers: Vec<BlobWriter>) -> Result<Vec<StagedBlob>> {
        let Some(store) = writers.first().map(|w| w.store.clone()) else {
            return Ok(Vec::new());
        };
        let mut written = Vec::with_capacity(writers.len());
        for mut w in writers {
            w.close()?;
            // A writer of another store (never in cove): its own flush.
            if !Arc::ptr_eq(&w.store.sync, &store.sync) {
                w.store.on_full_disk(w.store.sync.sync())?;
            }
            written.push(w);
        }
        if store.sync.mode() == Durability::Batched {
            store.on_full_disk(store.sync.sync())?;
        }
        let mut staged = Vec::with_capacity(written.len());
        for mut w in written {
            let blob = StagedBlob {
                store: w.store.clone(),
                id: w.content_id(),
                len: w.len,
                tmp: Some(std::mem::take(&mut w.path)),
            };
            blob.install()?;
            staged.push(blob);
        }
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
    ///
    /// The link is tried first and the shard directory made only when the
    /// link finds it missing: once the 256 shards exist (early in a store's
    /// life) a delivery costs no `stat` of its shard.
    fn install(&self) -> Result<()> {
        let Some(tmp) = &self.tmp else { return Ok(()) };
        let target = self.store.path_of(&self.id);
        let shard = target.parent().unwrap_or(&self.store.root).to_path_buf();
        for _ in 0..4 {
            match fs::hard_link(tmp, &target) {
                Ok(()) => return self.store.sync.dir_written(&shard),
                Err(e) if e.kind() == io::ErrorKind::NotFound && !shard.exists() => {
                    match fs::create_dir(&shard) {
                        Ok(()) => self.store.sync.dir_written(&self.store.root)?,
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(e).ctx(|| format!("create {}", shard.display())),
                    }
                }
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

    #[test]
    fn finish_all_names_many_blobs_after_one_flush() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().join("blobs"), Durability::Batched).unwrap();
        let writers: Vec<BlobWriter> = (0..100)
            .map(|i| {
                let mut w = store.writer().unwrap();
                w.write(format!("blob {i}").as_bytes()).unwrap();
                w.close().unwrap();
                w
            })
            .collect();
        let before = store.group_sync().flushes();
        let staged = BlobWriter::finish_all(writers).unwrap();
        assert_eq!(
            store.group_sync().flushes() - before,
            1,
            "one flush for all"
        );
        for (i, b) in staged.iter().enumerate() {
            assert_eq!(b.id(), ContentId::of(format!("blob {i}").as_bytes()));
            assert_eq!(store.read(&b.id()).unwrap(), format!("blob {i}").as_bytes());
        }
        // Closed writers hold no file; a closed writer takes no more bytes.
        let mut w = store.writer().unwrap();
        w.close().unwrap();
        assert!(w.write(b"more").is_err());
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
        assert_eq!(
            s.verify_all().unwrap(),
            (1, vec![(id, ContentId::of(b"bit rot"))])
        );
        // Quarantined: the name is free for the right content.
        assert!(!s.path_of(&id).exists());
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
    fn collect_unlinked_removes_only_noted_blobs_nothing_links() {
        let (d, s) = store();
        let (kept, gone, unnoted) = (
            s.put(b"kept").unwrap(),
            s.put(b"gone").unwrap(),
            s.put(b"unnoted").unwrap(),
        );
        kept.link_to(&d.path().join("k")).unwrap();
        let ids = [kept.id(), gone.id(), unnoted.id()];
        drop((kept, gone, unnoted));
        assert!(!s.has_unlinked());
        s.unlinked([ids[0], ids[1]]);
        assert!(s.has_unlinked());
        let r = s.collect_unlinked(10).unwrap();
        assert_eq!((r.removed_blobs, r.freed_bytes), (1, 4));
        assert!(s.path_of(&ids[0]).exists() && !s.path_of(&ids[1]).exists());
        // Not noted: left for the periodic full gc.
        assert!(s.path_of(&ids[2]).exists());
        assert!(!s.has_unlinked());
    }

    #[test]
    fn a_quarantined_copy_still_linked_is_damaged_until_relinked() {
        let (d, s) = store();
        let staged = s.put(b"good").unwrap();
        let id = staged.id();
        let file = d.path().join("m");
        staged.link_to(&file).unwrap();
        drop(staged);
        corrupt(&s.path_of(&id), b"rot!");
        s.verify_all().unwrap();
        assert_eq!(s.damaged().unwrap(), std::collections::HashSet::from([id]));
        assert_eq!(s.retire_repaired().unwrap(), 0);
        // Relinked to a good copy: no longer damaged, and retired.
        let again = s.put(b"good").unwrap();
        fs::remove_file(&file).unwrap();
        again.link_to(&file).unwrap();
        assert!(s.damaged().unwrap().is_empty());
        assert_eq!(s.retire_repaired().unwrap(), 1);
        assert_eq!(
            fs::read_dir(s.root().join("quarantine")).unwrap().count(),
            0
        );
    }

    #[test]
    fn low_space_mode_refuses_new_content_until_the_reserve_is_back() {
        let (d, s) = store();
        let s = s.with_reserve(d.path().join("reserve"), 4096).unwrap();
        s.put(b"before").unwrap();
        assert!(s.release_reserve(&"test"));
        let refused = s.put(b"during").unwrap_err();
        assert_eq!(refused.raw_os_error(), Some(28));
        assert!(s.reserve().restore_if_room());
        s.put(b"after").unwrap();
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
