//! Telling that a Maildir has not changed since the last scan, without
//! scanning it.
//!
//! A scan lists every file of every folder and reads every index row:
//! 40 ms for an INBOX of 10,000 messages on the bench machine, paid by
//! each POP3 login (a POP3 client polls every few minutes, mostly to find
//! nothing new). But every change a scan can find — a file added, removed
//! or renamed (a flag change), a folder added, removed or renamed —
//! changes the modification time of a directory: `new/` or `cur/` of a
//! folder, the folder itself, or `Maildir/`. So the stamps of those
//! directories, taken *before* a scan lists them, say whether a later scan
//! could find anything: if none has changed, it could not (Dovecot's
//! Maildir code relies on the same property).
//!
//! Each stamp is a directory's modification time *and* its status-change
//! time (ctime). A program can set an mtime back (`touch -d`, `rsync -a`
//! restoring a backup, `utime`), but setting it changes the ctime, which
//! no program can set: equal stamps mean no change at all, not one hidden
//! behind a restored mtime. That is what lets the stamps outlive the
//! process: they are kept in the index (meta `dir_stamps`, written by a
//! scan that finished, [`DirStamps::encode`]), and an account opened again
//! — after the open-account table closed it, or after a restart — lists
//! nothing when its Maildir is as that scan left it.
//!
//! Two things could make equal stamps lie, and both are handled:
//! - Timestamp granularity. A directory changed twice within one tick of
//!   the filesystem's clock (a jiffy on Linux, a second on some
//!   filesystems) keeps one mtime, so a change made just after the stamps
//!   were taken could be invisible. Stamps are trusted only if every mtime
//!   is more than [`RACY`] older than the moment they were taken ("racy
//!   git" has the same rule); a Maildir written to within the last two
//!   seconds is always scanned.
//! - The index being replaced (`cove index rebuild` from another process):
//!   the stamps include index.sqlite's inode.
//!
//! Only a scan that finished records stamps, and a scan clears them first.
//! The wall clock is read directly, not through the injected [`Env`]
//! clock: it is compared with the filesystem's timestamps, which come from
//! the kernel's clock.
//!
//! [`Env`]: crate::Env

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::maildir;

/// How old every stamp must be, when taken, to be trusted.
const RACY: Duration = Duration::from_secs(2);

/// A directory's modification and status-change times in nanoseconds
/// (`None`: absent).
type Mtime = Option<(i128, i128)>;

/// The stamps of a Maildir's directories and of the index file, and when
/// they were taken.
#[derive(Debug, Clone)]
pub(super) struct DirStamps {
    dirs: Stamps,
    /// Nanoseconds since the epoch when they were taken (`None`: the clock
    /// is before 1970, nothing is trusted).
    taken: Option<i128>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamps {
    index_ino: Option<u64>,
    root: Mtime,
    /// Per folder directory name (`""` for INBOX): the directory, `cur/`,
    /// `new/`.
    folders: Vec<(String, [Mtime; 3])>,
}

impl DirStamps {
    /// Take the stamps of `maildir`, with `index_ino` the inode of the
    /// index they go with (a scan: the one its connection has open).
    /// Blocking (one listing of `maildir`, three stats per folder).
    /// Directories are followed where they are symlinks (a `cur` on
    /// another disk): what a scan lists is what is stamped.
    pub(super) fn take(maildir: &Path, index_ino: Option<u64>) -> io::Result<DirStamps> {
        let taken = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_nanos() as i128);
        let root = mtime(maildir)?;
        let mut names = vec![String::new()];
        match fs::read_dir(maildir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry?;
                    // Every entry that could become a folder, with or
                    // without its cur/ yet.
                    if let Some(name) = entry.file_name().to_str()
                        && !name.is_empty()
                        && maildir::mailbox_name_of_dir(name).is_some()
                    {
                        names.push(name.to_string());
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        names.sort();
        let mut folders = Vec::with_capacity(names.len());
        for name in names {
            let dir = maildir.join(&name);
            let stamps = [
                mtime(&dir)?,
                mtime(&dir.join("cur"))?,
                mtime(&dir.join("new"))?,
            ];
            folders.push((name, stamps));
        }
        Ok(DirStamps {
            dirs: Stamps {
                index_ino,
                root,
                folders,
            },
            taken,
        })
    }

    /// Whether the directories and the index are as these stamps say.
    pub(super) fn same_as(&self, other: &DirStamps) -> bool {
        self.dirs == other.dirs
    }

    /// Whether these stamps can be trusted later: every directory was more
    /// than [`RACY`] old when they were taken.
    pub(super) fn trustworthy(&self) -> bool {
        let Some(taken) = self.taken else {
            return false;
        };
        let limit = taken - RACY.as_nanos() as i128;
        self.dirs
            .folders
            .iter()
            .flat_map(|(_, s)| s.iter())
            .chain(std::iter::once(&self.dirs.root))
            .all(|m| m.is_none_or(|(t, _)| t < limit))
    }

    /// The stamps as text, for the index (`decode` reads it back).
    pub(super) fn encode(&self) -> String {
        let num = |n: Option<i128>| n.map_or("-".to_string(), |n| n.to_string());
        let dir = |m: &Mtime| m.map_or("-".to_string(), |(t, c)| format!("{t},{c}"));
        let mut out = format!(
            "{STAMPS_VERSION}\ntaken {}\nindex {}\nroot {}\n",
            num(self.taken),
            num(self.dirs.index_ino.map(i128::from)),
            dir(&self.dirs.root)
        );
        for (name, [d, cur, new]) in &self.dirs.folders {
            // Hex: a folder's name may hold any byte but `/`.
            let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
            out.push_str(&format!(
                "folder {hex} {} {} {}\n",
                dir(d),
                dir(cur),
                dir(new)
            ));
        }
        out
    }

    /// Stamps written by [`encode`](DirStamps::encode); `None` for anything
    /// else (another version, damage): the account is then scanned.
    pub(super) fn decode(text: &str) -> Option<DirStamps> {
        fn num(s: &str) -> Option<Option<i128>> {
            if s == "-" {
                Some(None)
            } else {
                s.parse().ok().map(Some)
            }
        }
        fn dir(s: &str) -> Option<Mtime> {
            if s == "-" {
                return Some(None);
            }
            let (t, c) = s.split_once(',')?;
            Some(Some((t.parse().ok()?, c.parse().ok()?)))
        }
        let mut lines = text.lines();
        if lines.next()? != STAMPS_VERSION {
            return None;
        }
        let mut field = |key: &str| -> Option<String> {
            lines
                .next()?
                .strip_prefix(key)?
                .strip_prefix(' ')
                .map(str::to_string)
        };
        let taken = num(&field("taken")?)?;
        let index_ino = match num(&field("index")?)? {
            Some(n) => Some(u64::try_from(n).ok()?),
            None => None,
        };
        let root = dir(&field("root")?)?;
        let mut folders = Vec::new();
        for line in lines {
            let mut parts = line.strip_prefix("folder ")?.split(' ');
            let hex = parts.next()?;
            if hex.len() % 2 != 0 {
                return None;
            }
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()?;
            let name = String::from_utf8(bytes).ok()?;
            let stamps = [
                dir(parts.next()?)?,
                dir(parts.next()?)?,
                dir(parts.next()?)?,
            ];
            if parts.next().is_some() {
                return None;
            }
            folders.push((name, stamps));
        }
        Some(DirStamps {
            dirs: Stamps {
                index_ino,
                root,
                folders,
            },
            taken,
        })
    }
}

/// The first line of encoded stamps.
const STAMPS_VERSION: &str = "cove-dir-stamps 1";

/// The inode of a file, `None` if it is not there.
pub(super) fn inode(path: &Path) -> io::Result<Option<u64>> {
    Ok(stat(path)?.map(|m| m.ino()))
}

fn stat(path: &Path) -> io::Result<Option<fs::Metadata>> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn mtime(path: &Path) -> io::Result<Mtime> {
    let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
    Ok(stat(path)?.map(|m| (ns(m.mtime(), m.mtime_nsec()), ns(m.ctime(), m.ctime_nsec()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_mtime(dir: &Path, when: SystemTime) {
        fs::File::open(dir)
            .and_then(|f| f.set_modified(when))
            .unwrap_or_else(|e| panic!("set mtime of {}: {e}", dir.display()));
    }

    #[test]
    fn every_kind_of_change_shows_and_new_stamps_are_not_trusted() {
        let home = tempfile::tempdir().expect("tempdir");
        let md = home.path().join("Maildir");
        for d in ["cur", "new", "tmp", ".Sent/cur", ".Sent/new"] {
            fs::create_dir_all(md.join(d)).expect("mkdir");
        }
        let index = home.path().join("index.sqlite");
        fs::write(&index, b"x").expect("index");
        let take = || DirStamps::take(&md, inode(&index).expect("stat")).expect("stamps");
        let before = take();
        assert!(!before.trustworthy(), "just made");
        let old = SystemTime::now() - Duration::from_secs(60);
        for d in ["", "cur", "new", "tmp", ".Sent", ".Sent/cur", ".Sent/new"] {
            set_mtime(&md.join(d), old);
        }
        let before = take();
        assert!(before.trustworthy());
        assert!(take().same_as(&before), "nothing changed");

        let changes: [&dyn Fn(); 5] = [
            &|| fs::write(md.join("new/1.M1.x"), b"m").expect("deliver"),
            &|| fs::rename(md.join("new/1.M1.x"), md.join("cur/1.M1.x:2,S")).expect("flag"),
            &|| fs::create_dir(md.join(".Drafts")).expect("folder"),
            &|| fs::create_dir(md.join(".Drafts/cur")).expect("its cur"),
            &|| {
                fs::rename(&index, home.path().join("old")).expect("aside");
                fs::write(&index, b"new").expect("rebuilt index");
            },
        ];
        let mut last = before;
        for (i, change) in changes.iter().enumerate() {
            change();
            let now = take();
            assert!(!now.same_as(&last), "change {i} unseen");
            last = now;
        }
    }

    /// Stamps survive the trip through the index's text, and a change
    /// hidden behind a restored mtime still shows (the ctime moved).
    #[test]
    fn stamps_round_trip_and_a_restored_mtime_does_not_hide_a_change() {
        let home = tempfile::tempdir().expect("tempdir");
        let md = home.path().join("Maildir");
        for d in ["cur", "new", ".Sent/cur", ".Sent/new", ".a b\u{e9}/cur"] {
            fs::create_dir_all(md.join(d)).expect("mkdir");
        }
        let old = SystemTime::now() - Duration::from_secs(60);
        for d in ["", "cur", "new", ".Sent", ".Sent/cur", ".Sent/new"] {
            set_mtime(&md.join(d), old);
        }
        let stamps = DirStamps::take(&md, Some(42)).expect("stamps");
        let back = DirStamps::decode(&stamps.encode()).expect("decodes");
        assert!(back.same_as(&stamps));
        assert_eq!(back.taken, stamps.taken);
        assert_eq!(back.trustworthy(), stamps.trustworthy());
        assert!(DirStamps::decode("cove-dir-stamps 0\n").is_none());
        assert!(DirStamps::decode(&stamps.encode().replace("root ", "root x")).is_none());

        // A file slipped into new/ behind new/'s old mtime.
        std::thread::sleep(Duration::from_millis(20));
        fs::write(md.join("new/1.M1.x"), b"m").expect("deliver");
        set_mtime(&md.join("new"), old);
        let now = DirStamps::take(&md, Some(42)).expect("stamps");
        assert!(!now.same_as(&stamps), "hidden behind the restored mtime");
    }

    /// Trust is judged at the moment the stamps were taken: a scan that
    /// runs long does not make stamps of a then-fresh directory trusted.
    #[test]
    fn stamps_of_a_fresh_directory_stay_untrusted_later() {
        let home = tempfile::tempdir().expect("tempdir");
        let md = home.path().join("Maildir");
        fs::create_dir_all(md.join("new")).expect("mkdir");
        let stamps = DirStamps::take(&md, None).expect("stamps");
        assert!(!stamps.trustworthy());
        std::thread::sleep(RACY + Duration::from_millis(100));
        assert!(!stamps.trustworthy(), "judged when taken, not when asked");
    }
}
