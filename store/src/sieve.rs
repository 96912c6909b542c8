//! A user's Sieve scripts (RFC 5228) and what the scripts remember, kept
//! in the user's home beside the Maildir:
//!
//! ```text
//! mail/<domain>/<local>/sieve/
//!   <name>.sieve      one script per file, its bytes as the user sent them;
//!                     its mtime is its change time for replication
//!   active            the name of the active script ("" or absent: none)
//!   removed           scripts deleted or renamed away, with the time
//!   tracking          vacation and duplicate ids (hashed) with their expiry
//!   redirects         redirects and notifications sent today (the limit)
//! ```
//!
//! # Why files and not the index
//! Scripts are a handful of small texts per user that operators want to
//! read and edit with the tools they know (Pigeonhole keeps them the same
//! way); a plain file per script also migrates from Dovecot homes as is.
//! The active marker is a small file holding a name rather than Dovecot's
//! symlink, so it replicates like any other value and a dangling link
//! cannot happen. Every write goes to a temporary file, is flushed, then
//! renamed into place and the directory flushed: a crash leaves the old
//! or the new version, never half a script.
//!
//! # Replication
//! [`SieveScripts::state`] is everything above but the redirect count, sent
//! whole in each sync session (a user has a few small scripts);
//! [`SieveScripts::merge`] takes a peer's: per script and for the marker the
//! later change wins, a remembered removal beats an older copy, tracking is
//! the union. Both nodes end with the same files whatever the order.
//!
//! The store does not understand Sieve: the server compiles a script
//! before it asks for it to be stored (ManageSieve's CHECKSCRIPT rules).
//! Names are checked here (RFC 5804 §1.6 plus what a file name needs).
//! One process-wide lock serialises writes: script edits are rare, and two
//! sessions renaming at once (or a rename and a peer's merge) must not lose
//! a script.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, IoContext, Result};

fn sync_dir(dir: &Path) -> Result<()> {
    Ok(cove_dedup::sync_dir(dir)?)
}

/// The folder in a user's home.
pub const SIEVE_DIR: &str = "sieve";
const ACTIVE_FILE: &str = "active";
const TRACKING_FILE: &str = "tracking";
const REDIRECTS_FILE: &str = "redirects";
const REMOVED_FILE: &str = "removed";
/// Script removals remembered (so a peer's older copy does not bring a
/// script back).
const MAX_REMOVED: usize = 256;
/// Most scripts, and the largest, a peer's state may hold.
const PEER_MAX_SCRIPTS: usize = 256;
const PEER_MAX_SCRIPT: usize = 1 << 20;
const SUFFIX: &str = ".sieve";
/// Longest script name in characters (RFC 5804 §1.6 asks servers to take
/// at least 128 octets).
pub const MAX_NAME_CHARS: usize = 128;
/// Most ids remembered per user (vacation and duplicate); the oldest go first.
const MAX_TRACKED: usize = 10_000;

/// Per-user bounds, from `[sieve]` in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SieveLimits {
    pub max_scripts: usize,
    pub max_script_size: u64,
}

impl Default for SieveLimits {
    fn default() -> Self {
        SieveLimits {
            max_scripts: 16,
            max_script_size: 64 * 1024,
        }
    }
}

/// One stored script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptInfo {
    pub name: String,
    pub active: bool,
}

/// Check a script name (RFC 5804 §1.6: no control characters, no line
/// ends; here also no `/`, no leading dot, not empty, bounded).
pub fn check_script_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.starts_with('.')
        || name
            .chars()
            .any(|c| c.is_control() || c == '/' || c == '\u{2028}' || c == '\u{2029}');
    if bad {
        return Err(Error::InvalidData(format!(
            "bad script name {:?}: 1 to {MAX_NAME_CHARS} characters, no '/', no control characters, no leading '.'",
            name.chars().take(MAX_NAME_CHARS + 1).collect::<String>()
        )));
    }
    Ok(())
}

/// The one lock over script writes (process-wide: the store's API and
/// the replicator's merge both write).
static LOCK: Mutex<()> = Mutex::new(());

/// One user's scripts (from [`crate::Store::sieve`]).
pub struct SieveScripts {
    dir: PathBuf,
    /// Told of every change, so the replicator queues the user.
    hook: Option<(crate::ChangeHook, String)>,
    /// The store's clock: removal and activation stamps, and the tracking
    /// expiry, count on it like every other replication stamp.
    env: crate::Env,
}

impl SieveScripts {
    pub(crate) fn new(
        home: &Path,
        hook: Option<(crate::ChangeHook, String)>,
        env: crate::Env,
    ) -> SieveScripts {
        SieveScripts {
            dir: home.join(SIEVE_DIR),
            hook,
            env,
        }
    }

    fn now_ms(&self) -> u64 {
        self.env.now_ms()
    }

    fn guard(&self) -> Result<std::sync::MutexGuard<'static, ()>> {
        LOCK.lock()
            .map_err(|_| Error::Index("sieve lock poisoned".into()))
    }

    fn changed(&self) {
        if let Some((hook, user)) = &self.hook {
            hook(user);
        }
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}{SUFFIX}"))
    }

    /// Every script, sorted by name, and which one is active.
    pub fn list(&self) -> Result<Vec<ScriptInfo>> {
        let active = self.active_name()?;
        let mut out = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).ctx(|| format!("list {}", self.dir.display())),
        };
        for entry in entries {
            let entry = entry.ctx(|| format!("list {}", self.dir.display()))?;
            let file = entry.file_name();
            let Some(name) = file.to_str().and_then(|f| f.strip_suffix(SUFFIX)) else {
                continue;
            };
            if check_script_name(name).is_err() {
                continue;
            }
            out.push(ScriptInfo {
                name: name.to_string(),
                active: active.as_deref() == Some(name),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// A script's bytes.
    pub fn get(&self, name: &str) -> Result<Vec<u8>> {
        check_script_name(name)?;
        match fs::read(self.path_of(name)) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::NotFound(format!("script {name}")))
            }
            Err(e) => Err(e).ctx(|| format!("read script {name}")),
        }
    }

    /// The active script's name, if one is set and exists.
    pub fn active_name(&self) -> Result<Option<String>> {
        let Some(name) = read_text(&self.dir.join(ACTIVE_FILE))? else {
            return Ok(None);
        };
        let name = name.trim_end_matches('\n').to_string();
        if check_script_name(&name).is_err() || !self.path_of(&name).exists() {
            return Ok(None);
        }
        Ok(Some(name))
    }

    /// The active script: its name and bytes.
    pub fn active(&self) -> Result<Option<(String, Vec<u8>)>> {
        let Some(name) = self.active_name()? else {
            return Ok(None);
        };
        match self.get(&name) {
            Ok(b) => Ok(Some((name, b))),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether a script of `size` bytes named `name` would fit (RFC 5804
    /// §2.3 HAVESPACE): `Err(OverQuota)` names the limit it breaks.
    pub fn have_space(&self, name: &str, size: u64, limits: &SieveLimits) -> Result<()> {
        check_script_name(name)?;
        if size > limits.max_script_size {
            return Err(Error::TooBig {
                size,
                limit: limits.max_script_size,
            });
        }
        let scripts = self.list()?;
        let replaces = scripts.iter().any(|s| s.name == name);
        if !replaces && scripts.len() >= limits.max_scripts {
            return Err(Error::OverQuota {
                resource: crate::QuotaResource::Scripts,
                used: scripts.len() as u64,
                limit: limits.max_scripts as u64,
                needed: 1,
            });
        }
        Ok(())
    }

    /// Store (or replace) a script.
    pub fn put(&self, name: &str, script: &[u8], limits: &SieveLimits) -> Result<()> {
        let _g = self.guard()?;
        self.have_space(name, script.len() as u64, limits)?;
        self.write_file(&self.path_of(name), script)?;
        self.changed();
        Ok(())
    }

    /// Remove a script; the active one cannot be removed (RFC 5804 §2.10).
    pub fn delete(&self, name: &str) -> Result<()> {
        let _g = self.guard()?;
        check_script_name(name)?;
        if self.active_name()?.as_deref() == Some(name) {
            return Err(Error::InUse(format!("script {name} is active")));
        }
        match fs::remove_file(self.path_of(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!("script {name}")));
            }
            Err(e) => return Err(e).ctx(|| format!("delete script {name}")),
        }
        self.record_removed(&[(name.to_string(), self.now_ms())])?;
        self.changed();
        Ok(())
    }

    /// Rename a script, keeping it active if it was (RFC 5804 §2.11.1).
    pub fn rename(&self, old: &str, new: &str) -> Result<()> {
        let _g = self.guard()?;
        check_script_name(old)?;
        check_script_name(new)?;
        if !self.path_of(old).exists() {
            return Err(Error::NotFound(format!("script {old}")));
        }
        if self.path_of(new).exists() {
            return Err(Error::AlreadyExists(format!("script {new}")));
        }
        let was_active = self.active_name()?.as_deref() == Some(old);
        fs::rename(self.path_of(old), self.path_of(new))
            .ctx(|| format!("rename script {old} to {new}"))?;
        // The new name is a change of now (for the peer's merge).
        set_stamp(&self.path_of(new), self.now_ms())?;
        if was_active {
            self.write_file(&self.dir.join(ACTIVE_FILE), new.as_bytes())?;
        }
        self.record_removed(&[(old.to_string(), self.now_ms())])?;
        self.changed();
        Ok(())
    }

    /// Make `name` the active script, or none with `None` (RFC 5804 §2.8).
    pub fn activate(&self, name: Option<&str>) -> Result<()> {
        let _g = self.guard()?;
        let marker = self.dir.join(ACTIVE_FILE);
        match name {
            Some(name) => {
                check_script_name(name)?;
                if !self.path_of(name).exists() {
                    return Err(Error::NotFound(format!("script {name}")));
                }
                self.write_file(&marker, name.as_bytes())?;
            }
            // An empty marker, not none: "nothing active" has a time too.
            None if marker.exists() || self.dir.exists() => self.write_file(&marker, b"")?,
            None => return Ok(()),
        }
        self.changed();
        Ok(())
    }

    /// Write a file whole: temporary file, flush, rename, flush the folder.
    fn write_file(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        fs::create_dir_all(&self.dir).ctx(|| format!("create {}", self.dir.display()))?;
        let tmp = self.dir.join(format!(
            ".tmp.{}.{}",
            std::process::id(),
            path.file_name().and_then(|f| f.to_str()).unwrap_or("file")
        ));
        // The file's time is its stamp for the merge (`stamp_of`): the
        // store's clock, not the system's.
        let stamp = std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.now_ms());
        let written = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.set_modified(stamp)?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e).ctx(|| format!("write {}", path.display()));
        }
        sync_dir(&self.dir)
    }

    /// The ids remembered and unexpired at `now` (vacation, duplicate).
    fn tracking(&self, now: i64) -> Result<HashMap<String, i64>> {
        let Some(text) = read_text(&self.dir.join(TRACKING_FILE))? else {
            return Ok(HashMap::new());
        };
        Ok(text
            .lines()
            .filter_map(|l| {
                let (expiry, id) = l.split_once(' ')?;
                let expiry: i64 = expiry.parse().ok()?;
                (expiry > now).then(|| (id.to_string(), expiry))
            })
            .collect())
    }

    /// Whether `id` was remembered and has not expired (RFC 5230 §4.2,
    /// RFC 7352 §3). Ids are hashed so no sender address sits in the file.
    pub fn tracked(&self, id: &str, now: i64) -> Result<bool> {
        Ok(self.tracking(now)?.contains_key(&tracking_key(id)))
    }

    /// Remember ids until their expiry (seconds since the epoch); expired
    /// entries are dropped, and past the bound the soonest to expire.
    pub fn track(&self, ids: &[(String, i64)], now: i64) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let _g = self.guard()?;
        let mut all = self.tracking(now)?;
        for (id, expiry) in ids {
            let e = all.entry(tracking_key(id)).or_insert(*expiry);
            *e = (*e).max(*expiry);
        }
        let mut rows: Vec<(String, i64)> = all.into_iter().collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rows.truncate(MAX_TRACKED);
        self.write_tracking(&rows)?;
        self.changed();
        Ok(())
    }

    fn write_tracking(&self, rows: &[(String, i64)]) -> Result<()> {
        let text: String = rows.iter().map(|(id, e)| format!("{e} {id}\n")).collect();
        self.write_file(&self.dir.join(TRACKING_FILE), text.as_bytes())
    }

    /// Count `n` redirects against today's limit (`day`: days since the
    /// epoch); false (and nothing counted) when they would pass it.
    pub fn count_redirects(&self, day: i64, n: u32, per_day: u32) -> Result<bool> {
        let _g = self.guard()?;
        let path = self.dir.join(REDIRECTS_FILE);
        let sent = fs::read_to_string(&path)
            .ok()
            .and_then(|t| {
                let (d, n) = t.trim().split_once(' ')?;
                (d.parse::<i64>().ok()? == day).then(|| n.parse::<u32>().ok())?
            })
            .unwrap_or(0);
        if sent.saturating_add(n) > per_day {
            return Ok(false);
        }
        self.write_file(&path, format!("{day} {}\n", sent + n).as_bytes())?;
        Ok(true)
    }
}

/// A user's scripts, active marker, removals and tracking as replication
/// sends them: whole, with a time per item; merged last writer wins.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SieveState {
    pub scripts: Vec<ScriptState>,
    pub removed: Vec<RemovedScript>,
    /// The active script's name ("" for none).
    pub active: String,
    /// When the active marker was last set (0: never).
    pub active_stamp: u64,
    /// Hashed vacation/duplicate ids and their expiry (seconds).
    pub tracking: Vec<(String, i64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScriptState {
    pub name: String,
    pub text: Vec<u8>,
    /// Milliseconds since the epoch of its last change.
    pub stamp: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RemovedScript {
    pub name: String,
    pub stamp: u64,
}

impl SieveScripts {
    /// What replication sends; `None` for a user who never had scripts.
    pub fn state(&self) -> Result<Option<SieveState>> {
        if !self.dir.is_dir() {
            return Ok(None);
        }
        let mut state = SieveState::default();
        for info in self.list()? {
            let path = self.path_of(&info.name);
            let Ok(text) = fs::read(&path) else { continue };
            state.scripts.push(ScriptState {
                stamp: stamp_of(&path).unwrap_or(0),
                name: info.name,
                text,
            });
        }
        state.removed = self.removed()?;
        let marker = self.dir.join(ACTIVE_FILE);
        if let Ok(name) = fs::read_to_string(&marker) {
            state.active = name.trim_end_matches('\n').to_string();
            state.active_stamp = stamp_of(&marker).unwrap_or(0);
        }
        let now = (self.now_ms() / 1000) as i64;
        state.tracking = self.tracking(now)?.into_iter().collect();
        state.tracking.sort();
        Ok(Some(state))
    }

    /// Merge a peer's state (validated first, as a client's input would
    /// be): per script and for the marker the later change wins (equal
    /// times: the larger text, so both nodes pick the same); removals
    /// win over older copies; tracking is the union. `latest_ms`: the
    /// latest time a peer may claim (this node's clock plus the allowed
    /// skew). Returns whether anything changed here.
    pub fn merge(&self, remote: &SieveState, latest_ms: u64) -> Result<bool> {
        let bad = |why: String| {
            Err(Error::InvalidData(format!(
                "the peer sent sieve state with {why}"
            )))
        };
        if remote.scripts.len() > PEER_MAX_SCRIPTS || remote.removed.len() > MAX_REMOVED * 4 {
            return bad("too many scripts".into());
        }
        if remote.tracking.len() > MAX_TRACKED * 2 {
            return bad("too many tracked ids".into());
        }
        for sc in &remote.scripts {
            check_script_name(&sc.name)?;
            if sc.text.len() > PEER_MAX_SCRIPT || sc.stamp > latest_ms {
                return bad(format!(
                    "script {:?} too big or stamped in the future",
                    sc.name
                ));
            }
        }
        for r in &remote.removed {
            check_script_name(&r.name)?;
            if r.stamp > latest_ms {
                return bad("a removal stamped in the future".into());
            }
        }
        if (!remote.active.is_empty() && check_script_name(&remote.active).is_err())
            || remote.active_stamp > latest_ms
        {
            return bad("a bad active marker".into());
        }
        if remote
            .tracking
            .iter()
            .any(|(k, _)| k.len() != 32 || !k.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return bad("a bad tracking id".into());
        }
        let _g = self.guard()?;
        let mut changed = false;
        let removed: HashMap<String, u64> = self
            .removed()?
            .into_iter()
            .map(|r| (r.name, r.stamp))
            .collect();
        for r in &remote.removed {
            let path = self.path_of(&r.name);
            if stamp_of(&path).is_some_and(|st| st < r.stamp) {
                fs::remove_file(&path).ctx(|| format!("remove {}", path.display()))?;
                changed = true;
            }
        }
        for sc in &remote.scripts {
            let path = self.path_of(&sc.name);
            if removed.get(&sc.name).is_some_and(|st| *st >= sc.stamp) {
                continue;
            }
            let local = stamp_of(&path).map(|st| (st, fs::read(&path).unwrap_or_default()));
            let newer = match &local {
                None => true,
                Some((st, text)) => sc.stamp > *st || (sc.stamp == *st && sc.text > *text),
            };
            if newer {
                self.write_file(&path, &sc.text)?;
                set_stamp(&path, sc.stamp)?;
                changed = true;
            }
        }
        let gone: Vec<(String, u64)> = remote
            .removed
            .iter()
            .filter(|r| removed.get(&r.name).is_none_or(|st| *st < r.stamp))
            .map(|r| (r.name.clone(), r.stamp))
            .collect();
        if !gone.is_empty() {
            self.record_removed(&gone)?;
        }
        let marker = self.dir.join(ACTIVE_FILE);
        if remote.active_stamp > stamp_of(&marker).unwrap_or(0) {
            self.write_file(&marker, remote.active.as_bytes())?;
            set_stamp(&marker, remote.active_stamp)?;
            changed = true;
        }
        let now = (self.now_ms() / 1000) as i64;
        let mut tracking = self.tracking(now)?;
        let before = tracking.clone();
        for (k, e) in remote.tracking.iter().filter(|(_, e)| *e > now) {
            let v = tracking.entry(k.clone()).or_insert(*e);
            *v = (*v).max(*e);
        }
        if tracking != before {
            let mut rows: Vec<(String, i64)> = tracking.into_iter().collect();
            rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            rows.truncate(MAX_TRACKED);
            self.write_tracking(&rows)?;
            changed = true;
        }
        Ok(changed)
    }

    fn removed(&self) -> Result<Vec<RemovedScript>> {
        let Some(text) = read_text(&self.dir.join(REMOVED_FILE))? else {
            return Ok(Vec::new());
        };
        Ok(text
            .lines()
            .filter_map(|l| {
                let (stamp, name) = l.split_once(' ')?;
                Some(RemovedScript {
                    stamp: stamp.parse().ok()?,
                    name: name.to_string(),
                })
            })
            .collect())
    }

    /// Remember removals (the newest [`MAX_REMOVED`]).
    fn record_removed(&self, entries: &[(String, u64)]) -> Result<()> {
        let mut all: HashMap<String, u64> = self
            .removed()?
            .into_iter()
            .map(|r| (r.name, r.stamp))
            .collect();
        for (name, stamp) in entries {
            let v = all.entry(name.clone()).or_insert(*stamp);
            *v = (*v).max(*stamp);
        }
        let mut rows: Vec<(String, u64)> = all.into_iter().collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rows.truncate(MAX_REMOVED);
        let text: String = rows.iter().map(|(n, st)| format!("{st} {n}\n")).collect();
        self.write_file(&self.dir.join(REMOVED_FILE), text.as_bytes())
    }
}

/// A small file's text; `None` when it does not exist.
fn read_text(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).ctx(|| format!("read {}", path.display())),
    }
}

/// A file's change time for the merge: its mtime in milliseconds.
fn stamp_of(path: &Path) -> Option<u64> {
    let m = fs::metadata(path).ok()?.modified().ok()?;
    Some(m.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as u64)
}

fn set_stamp(path: &Path, ms: u64) -> Result<()> {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(t))
        .ctx(|| format!("set the time of {}", path.display()))
}

fn tracking_key(id: &str) -> String {
    blake3::hash(id.as_bytes()).to_hex()[..32].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scripts(dir: &Path, _: &()) -> SieveScripts {
        SieveScripts::new(dir, None, crate::Env::default())
    }

    #[test]
    fn put_list_activate_rename_delete() {
        let dir = tempfile::tempdir().unwrap();
        let lock = ();
        let s = scripts(dir.path(), &lock);
        let limits = SieveLimits::default();
        assert!(s.list().unwrap().is_empty());
        s.put("one", b"keep;", &limits).unwrap();
        s.put("two", b"discard;", &limits).unwrap();
        assert_eq!(s.active().unwrap(), None);
        s.activate(Some("two")).unwrap();
        assert_eq!(
            s.list().unwrap(),
            vec![
                ScriptInfo {
                    name: "one".into(),
                    active: false
                },
                ScriptInfo {
                    name: "two".into(),
                    active: true
                }
            ]
        );
        assert!(matches!(s.delete("two"), Err(Error::InUse(_))));
        assert!(matches!(
            s.rename("two", "one"),
            Err(Error::AlreadyExists(_))
        ));
        s.rename("two", "zwei").unwrap();
        assert_eq!(
            s.active().unwrap(),
            Some(("zwei".into(), b"discard;".to_vec()))
        );
        s.activate(None).unwrap();
        s.delete("zwei").unwrap();
        assert!(matches!(s.get("zwei"), Err(Error::NotFound(_))));
        assert!(matches!(s.activate(Some("nope")), Err(Error::NotFound(_))));
    }

    #[test]
    fn limits_and_names() {
        let dir = tempfile::tempdir().unwrap();
        let lock = ();
        let s = scripts(dir.path(), &lock);
        let limits = SieveLimits {
            max_scripts: 2,
            max_script_size: 10,
        };
        s.put("a", b"keep;", &limits).unwrap();
        s.put("b", b"keep;", &limits).unwrap();
        assert!(matches!(
            s.put("c", b"keep;", &limits),
            Err(Error::OverQuota { .. })
        ));
        // Replacing an existing script is not one more.
        s.put("a", b"discard;", &limits).unwrap();
        assert!(matches!(
            s.put("a", b"01234567890", &limits),
            Err(Error::TooBig { .. })
        ));
        for bad in ["", "../x", ".hidden", "a\nb", "a/b"] {
            assert!(
                s.put(bad, b"keep;", &SieveLimits::default()).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn two_homes_merge_to_the_same_scripts() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (sa, sb) = (scripts(a.path(), &()), scripts(b.path(), &()));
        let limits = SieveLimits::default();
        sa.put("one", b"keep;", &limits).unwrap();
        sa.put("two", b"discard;", &limits).unwrap();
        sa.activate(Some("one")).unwrap();
        sa.track(&[("_vbob".into(), i64::MAX / 2)], 0).unwrap();
        let latest = crate::Env::default().now_ms() + 60_000;
        assert!(sb.merge(&sa.state().unwrap().unwrap(), latest).unwrap());
        assert_eq!(
            sb.active().unwrap(),
            Some(("one".into(), b"keep;".to_vec()))
        );
        assert!(sb.tracked("_vbob", 1).unwrap());
        // A removal and a rename on b reach a; a's older copies do not
        // bring them back.
        std::thread::sleep(std::time::Duration::from_millis(5));
        sb.delete("two").unwrap();
        sb.rename("one", "uno").unwrap();
        assert!(sb.merge(&sa.state().unwrap().unwrap(), latest).is_ok());
        assert!(sa.merge(&sb.state().unwrap().unwrap(), latest).unwrap());
        assert_eq!(
            sa.state().unwrap().map(|s| s.scripts),
            sb.state().unwrap().map(|s| s.scripts)
        );
        assert_eq!(sa.active_name().unwrap(), Some("uno".into()));
        assert!(matches!(sa.get("two"), Err(Error::NotFound(_))));
        // Nothing more to do either way.
        assert!(!sa.merge(&sb.state().unwrap().unwrap(), latest).unwrap());
        assert!(!sb.merge(&sa.state().unwrap().unwrap(), latest).unwrap());
        // A peer's state is checked like a client's input.
        let mut evil = sa.state().unwrap().unwrap();
        evil.scripts[0].name = "../x".into();
        assert!(sb.merge(&evil, latest).is_err());
    }

    #[test]
    fn tracking_expires_and_redirects_count_per_day() {
        let dir = tempfile::tempdir().unwrap();
        let lock = ();
        let s = scripts(dir.path(), &lock);
        s.track(&[("_vbob@example.org".into(), 100)], 0).unwrap();
        assert!(s.tracked("_vbob@example.org", 50).unwrap());
        assert!(!s.tracked("_vbob@example.org", 100).unwrap());
        assert!(!s.tracked("other", 50).unwrap());
        assert!(s.count_redirects(1, 2, 3).unwrap());
        assert!(!s.count_redirects(1, 2, 3).unwrap());
        assert!(s.count_redirects(1, 1, 3).unwrap());
        assert!(s.count_redirects(2, 3, 3).unwrap());
    }
}
