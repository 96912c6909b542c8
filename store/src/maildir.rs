//! Maildir++ layout and file names.
//!
//! A user's home holds `Maildir/` (INBOX) and one `Maildir/.<name>/` per other
//! mailbox, each with `cur/ new/ tmp/`, the layout Dovecot, Courier, mutt and
//! mbsync read. cove names its files `<secs>.G<guid>.<host>,S=<size>` in `new/`
//! and `<...>:2,<flags>` in `cur/`: the GUID in the unique part lets a lost
//! index be rebuilt without losing GUIDs. Files from other programs keep
//! their names; their GUID is derived from the unique part
//! ([`MessageGuid::derived_from_name`]).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cove_dedup::regular_file::NotRegular;

use crate::ids::{Flags, MailboxGuid, MessageGuid};
use crate::{Error, IoContext, Result};

/// The parts of a Maildir file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName {
    /// Everything before `:2,` (the unique part with its `,S=` fields).
    pub base: String,
    /// The unique part alone (before the first `,`), which never changes.
    pub unique: String,
    pub flags: Flags,
    /// Info letters cove does not interpret (kept on rename).
    pub other_letters: String,
    /// `S=` from the name, if present.
    pub size: Option<u64>,
    /// The GUID embedded by cove, if any.
    pub guid: Option<MessageGuid>,
}

impl FileName {
    pub fn parse(name: &str) -> Option<FileName> {
        let (base, info) = Self::split(name)?;
        let (flags, other_letters) = info.map(Flags::from_maildir_letters).unwrap_or_default();
        let unique = base.split(',').next().unwrap_or(base).to_string();
        let size = base
            .split(',')
            .skip(1)
            .find_map(|f| f.strip_prefix("S="))
            .and_then(|s| s.parse().ok());
        let guid = unique
            .split('.')
            .nth(1)
            .and_then(|p| p.strip_prefix('G'))
            .and_then(|g| g.parse().ok());
        Some(FileName {
            base: base.to_string(),
            unique,
            flags,
            other_letters,
            size,
            guid,
        })
    }

    /// The base of a name ([`FileName::base`]) without parsing the rest.
    pub fn base_of(name: &str) -> Option<&str> {
        Self::split(name).map(|(base, _)| base)
    }

    /// A name's base and its `:2,` info, if any.
    fn split(name: &str) -> Option<(&str, Option<&str>)> {
        if name.starts_with('.') || name.is_empty() {
            return None;
        }
        Some(match name.split_once(":2,") {
            Some((b, i)) => (b, Some(i)),
            None => (name.split_once(':').map_or(name, |(b, _)| b), None),
        })
    }

    /// The name of a new cove file.
    pub fn new_delivery(secs: u64, guid: MessageGuid, host: &str, size: u64) -> String {
        format!("{secs}.G{guid}.{},S={size}", sanitize_host(host))
    }

    /// The GUID this file stands for.
    pub fn effective_guid(&self) -> MessageGuid {
        self.guid
            .unwrap_or_else(|| MessageGuid::derived_from_name(&self.unique))
    }

    /// The file's name in `cur/` with the given flags.
    pub fn cur_name(&self, flags: Flags) -> String {
        self.with_info(flags, self.other_letters.chars())
    }

    /// The file's name in `cur/` with the given flags and keyword letters
    /// (`a`..`z`, see `keyword_letters.rs`) in place of the ones it has.
    pub fn cur_name_with(&self, flags: Flags, keyword_letters: &str) -> String {
        let others = self
            .other_letters
            .chars()
            .filter(|c| !c.is_ascii_lowercase());
        self.with_info(flags, others.chain(keyword_letters.chars()))
    }

    /// `<base>:2,<letters>`: the flags' capitals and `more`, sorted.
    fn with_info(&self, flags: Flags, more: impl Iterator<Item = char>) -> String {
        let mut letters: Vec<char> = flags.maildir_letters().chars().collect();
        letters.extend(more);
        letters.sort_unstable();
        letters.dedup();
        format!(
            "{}:2,{}",
            self.base,
            letters.into_iter().collect::<String>()
        )
    }

    /// Seconds since the epoch from the unique part, when it starts with them.
    pub fn delivery_secs(&self) -> Option<i64> {
        self.unique.split('.').next()?.parse().ok()
    }
}

/// The Maildir spec: '/' and ':' in a host name are written as octal escapes.
fn sanitize_host(host: &str) -> String {
    host.replace('/', "\\057").replace(':', "\\072")
}

/// Where a mailbox lives under `Maildir/`: "" for INBOX, `.Name` otherwise.
pub fn mailbox_dir_name(name: &str) -> String {
    if name.eq_ignore_ascii_case("INBOX") {
        String::new()
    } else {
        format!(".{name}")
    }
}

/// The folder of the mailbox whose directory (`MailboxInfo::dir`) is `dir`,
/// inside `maildir`: refused unless `dir` is a Maildir++ folder of a valid
/// name (empty for INBOX, else '.' and the name), so that no name, however
/// it got into the index, makes a path outside the user's Maildir.
pub fn folder_path(maildir: &Path, dir: &str) -> Result<PathBuf> {
    let ok = dir.is_empty()
        || mailbox_name_of_dir(dir).is_some_and(|name| validate_mailbox_name(&name).is_ok());
    if !ok {
        return Err(Error::InvalidData(format!(
            "mailbox folder {dir:?} is not a Maildir++ folder name"
        )));
    }
    Ok(maildir.join(dir))
}

/// The mailbox name a Maildir++ folder directory stands for.
pub fn mailbox_name_of_dir(dir: &str) -> Option<String> {
    if dir.is_empty() {
        return Some("INBOX".to_string());
    }
    let name = dir.strip_prefix('.')?;
    if name.is_empty() || name == "." || name.starts_with('.') {
        return None;
    }
    Some(name.to_string())
}

/// Create `cur/ new/ tmp/` under `dir`, durably (`dir` and its parent
/// fsynced).
pub fn create_folder(dir: &Path) -> Result<()> {
    create_folder_with(dir, true)
}

/// Create `cur/ new/ tmp/` under `dir`; with `flush` false nothing is
/// fsynced and the caller's group flush must follow before anything it
/// made is reported.
pub fn create_folder_with(dir: &Path, flush: bool) -> Result<()> {
    #[cfg(test)]
    FOLDERS_MADE.with(|n| n.set(n.get() + 1));
    for sub in ["cur", "new", "tmp"] {
        let p = dir.join(sub);
        fs::create_dir_all(&p).ctx(|| format!("create {}", p.display()))?;
    }
    if flush {
        cove_dedup::sync_dir(dir)?;
        if let Some(parent) = dir.parent() {
            cove_dedup::sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Whether `dir` has its `cur/ new/ tmp/` (three `stat`s, no write).
pub fn folder_complete(dir: &Path) -> bool {
    ["cur", "new", "tmp"]
        .iter()
        .all(|sub| dir.join(sub).is_dir())
}

#[cfg(test)]
thread_local! {
    /// How many times this thread made (or made sure of) a folder's
    /// directories: a test's count of what opening an account writes.
    pub(crate) static FOLDERS_MADE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A file found in a Maildir folder.
#[derive(Debug, Clone)]
pub struct FoundFile {
    /// `new/<name>` or `cur/<name>`.
    pub rel: String,
    pub name: FileName,
}

/// List the messages of one folder (its `new/` and `cur/`).
pub fn list_folder(dir: &Path) -> Result<Vec<FoundFile>> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        let d = dir.join(sub);
        let entries = match fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).ctx(|| format!("list {}", d.display())),
        };
        for entry in entries {
            let entry = entry.ctx(|| format!("list {}", d.display()))?;
            // The entry's type from readdir (an lstat where the filesystem
            // does not say): a FIFO, a directory or a symlink is no message.
            let kind = entry
                .file_type()
                .ctx(|| format!("stat {}", entry.path().display()))?;
            if let Some(what) = NotRegular::of_file_type(kind) {
                skipping(&entry.path(), &what);
                continue;
            }
            let Some(fname) = entry.file_name().to_str().map(str::to_string) else {
                tracing::warn!(dir = %d.display(), "skipping a Maildir file whose name is not UTF-8");
                continue;
            };
            if let Some(name) = FileName::parse(&fname) {
                out.push(FoundFile {
                    rel: format!("{sub}/{fname}"),
                    name,
                });
            }
        }
    }
    Ok(out)
}

/// The paths already reported by [`skipping`], so that a FIFO left in
/// `cur/` costs one log line, not one per scan. Bounded: when full it
/// starts again (a path may then be reported a second time).
static REPORTED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
const REPORTED_MAX: usize = 10_000;

/// Say (once per path for the life of the process) that a name in a
/// Maildir is left out, and why.
pub(crate) fn skipping(path: &Path, why: &dyn std::fmt::Display) {
    let Ok(mut reported) = REPORTED.lock() else {
        return;
    };
    let set = reported.get_or_insert_with(HashSet::new);
    if set.len() >= REPORTED_MAX {
        set.clear();
    }
    if set.insert(path.to_path_buf()) {
        tracing::warn!(path = %path.display(), reason = %why, "skipping a name in the Maildir that is not a message file (reported once)");
    }
}

/// `rename(2)` that never replaces an existing name (`RENAME_NOREPLACE`;
/// on a filesystem without it, a check and then a plain rename).
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    use rustix::io::Errno;
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(e) if e == Errno::INVAL || e == Errno::NOSYS || e == Errno::NOTSUP => {
            if to.symlink_metadata().is_ok() {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            fs::rename(from, to)
        }
        Err(e) => Err(e.into()),
    }
}

/// Finds where a message file is now when the name the index remembers is
/// gone (another program changed its flags, so its `:2,` part or its
/// `new/`/`cur/` changed): the folder is listed once, on the first miss.
pub(crate) struct Relocator<'a> {
    folder: &'a Path,
    by_base: Option<std::collections::HashMap<String, String>>,
}

impl<'a> Relocator<'a> {
    pub(crate) fn new(folder: &'a Path) -> Relocator<'a> {
        Relocator {
            folder,
            by_base: None,
        }
    }

    /// The current `new/..` or `cur/..` name of the file the index knows as
    /// `file`, or `None` if it is gone.
    pub(crate) fn find(&mut self, file: &str) -> Result<Option<String>> {
        let Some(base) = file
            .rsplit('/')
            .next()
            .and_then(FileName::parse)
            .map(|f| f.base)
        else {
            return Ok(None);
        };
        if self.by_base.is_none() {
            let listing = list_folder(self.folder)?;
            self.by_base = Some(listing.into_iter().map(|f| (f.name.base, f.rel)).collect());
        }
        Ok(self.by_base.as_ref().and_then(|m| m.get(&base).cloned()))
    }
}

/// List the Maildir++ folder directories under a `Maildir/` root ("" first).
pub fn list_folders(root: &Path) -> Result<Vec<String>> {
    let mut out = vec![String::new()];
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).ctx(|| format!("list {}", root.display())),
    };
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if mailbox_name_of_dir(&name).is_some() && entry.path().join("cur").is_dir() {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// The per-folder file that keeps a mailbox's GUID and UIDVALIDITY beside its
/// mail, so that a rebuilt index keeps the mailbox's identity and never reuses
/// a UIDVALIDITY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FolderIdentity {
    pub guid: MailboxGuid,
    pub uidvalidity: u32,
}

const IDENTITY_FILE: &str = "cove-mailbox";

impl FolderIdentity {
    pub fn read(dir: &Path) -> Option<FolderIdentity> {
        let bytes = cove_dedup::regular_file::read(&dir.join(IDENTITY_FILE)).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let mut guid = None;
        let mut uidvalidity = None;
        for line in text.lines() {
            match line.split_once('=') {
                Some(("guid", v)) => guid = v.trim().parse().ok(),
                Some(("uidvalidity", v)) => uidvalidity = v.trim().parse().ok(),
                _ => {}
            }
        }
        Some(FolderIdentity {
            guid: guid?,
            uidvalidity: uidvalidity?,
        })
    }

    /// Write durably (temp file, fsync, rename, fsync dir).
    pub fn write(&self, dir: &Path) -> Result<()> {
        self.write_with(dir, true)
    }

    /// Write (temp file, rename); with `flush` false nothing is fsynced and
    /// the caller's group flush must follow.
    pub fn write_with(&self, dir: &Path, flush: bool) -> Result<()> {
        let tmp = dir.join("tmp").join(format!("{IDENTITY_FILE}.new"));
        let body = format!("guid={}\nuidvalidity={}\n", self.guid, self.uidvalidity);
        let write = || -> io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            io::Write::write_all(&mut f, body.as_bytes())?;
            if flush {
                f.sync_all()?;
            }
            fs::rename(&tmp, dir.join(IDENTITY_FILE))
        };
        write().ctx(|| format!("write {}", dir.join(IDENTITY_FILE).display()))?;
        if flush {
            cove_dedup::sync_dir(dir)?;
        }
        Ok(())
    }
}

/// Path of a user's home under the data dir: `mail/<domain>/<local>`.
pub fn home_of(mail_root: &Path, local: &str, domain: &str) -> PathBuf {
    mail_root.join(domain).join(local)
}

/// A mailbox name that can be stored, in its canonical form
/// ([`MailboxName::parse`](crate::MailboxName::parse)).
pub fn validate_mailbox_name(name: &str) -> Result<crate::MailboxName> {
    crate::MailboxName::parse(name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cove_names() {
        let g = MessageGuid([7; 16]);
        let n = FileName::new_delivery(1700000000, g, "node/a:1", 42);
        assert_eq!(n, format!("1700000000.G{g}.node\\057a\\0721,S=42"));
        let p = FileName::parse(&n).unwrap();
        assert_eq!(p.guid, Some(g));
        assert_eq!(p.size, Some(42));
        assert_eq!(p.flags, Flags::empty());
        assert_eq!(p.delivery_secs(), Some(1700000000));
        let cur = p.cur_name(Flags::SEEN | Flags::FLAGGED);
        assert!(cur.ends_with(",S=42:2,FS"));
        let c = FileName::parse(&cur).unwrap();
        assert_eq!(c.flags, Flags::SEEN | Flags::FLAGGED);
        assert_eq!(c.base, p.base);
    }

    #[test]
    fn parses_foreign_names() {
        let p = FileName::parse("1234.M5P6Q7.mx1,S=100,W=103:2,RSa").unwrap();
        assert_eq!(p.guid, None);
        assert_eq!(p.unique, "1234.M5P6Q7.mx1");
        assert_eq!(p.flags, Flags::ANSWERED | Flags::SEEN);
        assert_eq!(p.other_letters, "a");
        assert_eq!(p.cur_name(Flags::SEEN), "1234.M5P6Q7.mx1,S=100,W=103:2,Sa");
        assert_eq!(
            p.effective_guid(),
            MessageGuid::derived_from_name("1234.M5P6Q7.mx1")
        );
        assert!(FileName::parse(".hidden").is_none());
    }

    #[test]
    fn folder_names() {
        assert_eq!(mailbox_dir_name("INBOX"), "");
        assert_eq!(mailbox_dir_name("Sent"), ".Sent");
        assert_eq!(mailbox_name_of_dir(".Work.Q1").as_deref(), Some("Work.Q1"));
        assert_eq!(mailbox_name_of_dir("cur"), None);
        assert!(validate_mailbox_name("a/b").is_err());
        assert!(validate_mailbox_name("a..b").is_err());
        assert!(validate_mailbox_name("Work.Q1").is_ok());
    }

    #[test]
    fn folder_paths_stay_in_the_maildir() {
        let m = Path::new("/home/u/Maildir");
        assert_eq!(folder_path(m, "").unwrap(), m);
        assert_eq!(folder_path(m, ".Work.Q1").unwrap(), m.join(".Work.Q1"));
        for bad in [
            ".x/../../etc",
            "..",
            ".",
            "Sent",
            "..Sent",
            ".a/b",
            "/etc",
            ".a\nb",
        ] {
            assert!(folder_path(m, bad).is_err(), "{bad:?}");
        }
    }
}
