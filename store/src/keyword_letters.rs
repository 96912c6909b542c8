//! Keywords in the Maildir, the way Dovecot keeps them: each folder's
//! `dovecot-keywords` file maps the letters `a`..`z` to keyword names
//! (`<index> <name>` lines, index 0 being `a`), and a message file's `:2,`
//! info carries the letters of its keywords beside the system flags'
//! capitals (`...:2,Sab`).
//!
//! # Why
//! The index alone held keywords, so `cove index rebuild` (or an index
//! lost under a running server) lost every one of them, and no other
//! program (Dovecot, mutt) saw them. With the letters in the file names a
//! rebuild reads them back, and another program's keyword changes reach
//! cove as renames, like its flag changes.
//!
//! # Rules
//! - A keyword gets the first free letter of its folder when a message of
//!   that folder first carries it; letters are never reassigned (Dovecot
//!   only appends too), so a name once written keeps its meaning.
//! - Only 26 letters exist: keywords beyond the 26th of a folder stay in
//!   the index alone (as all keywords did before), and a rebuild loses
//!   those.
//! - The file is replaced atomically (written under `tmp/`, fsynced,
//!   renamed, directory fsynced) before any file name uses a new letter.
//! - The index stays the truth for keywords: the scan applies the letters a
//!   file *gained or lost* since the name the index knows (another
//!   program's change), and reads letters as keywords only for files it
//!   has no row for (a new file, a rebuild).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::ids::Flags;
use crate::maildir::FileName;
use crate::{IoContext, Result};

/// The file's name in a folder, as Dovecot names it.
pub const KEYWORDS_FILE: &str = "dovecot-keywords";
/// Letters `a`..`z`.
const LETTERS: usize = 26;

/// One folder's letter -> keyword map.
#[derive(Debug, Clone, Default)]
pub struct KeywordLetters {
    folder: PathBuf,
    /// Index = letter (`a` + i); `None` where the file names nothing.
    names: Vec<Option<String>>,
    /// Letters given out since it was read, not saved yet.
    dirty: bool,
}

impl KeywordLetters {
    /// The map of `folder` (empty if it has no `dovecot-keywords`, or an
    /// unreadable one: never a FIFO, see `regular_file`).
    pub fn read(folder: &Path) -> KeywordLetters {
        let mut names = vec![None; LETTERS];
        if let Ok(bytes) = cove_dedup::regular_file::read(&folder.join(KEYWORDS_FILE)) {
            for line in String::from_utf8_lossy(&bytes).lines() {
                let Some((i, name)) = line.split_once(' ') else {
                    continue;
                };
                let name = name.trim();
                match i.trim().parse::<usize>() {
                    Ok(i) if i < LETTERS && crate::keywords::normalized(&[name.into()]).is_ok() => {
                        names[i] = Some(name.to_string());
                    }
                    _ => {}
                }
            }
        }
        KeywordLetters {
            folder: folder.to_path_buf(),
            names,
            dirty: false,
        }
    }

    /// The keywords the letters `a`..`z` among `info` stand for (other
    /// characters are ignored; letters the file does not name too).
    pub fn keywords_of(&self, info: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for c in info.chars().filter(char::is_ascii_lowercase) {
            if let Some(Some(name)) = self.names.get((c as u8 - b'a') as usize)
                && !out.iter().any(|k| k.eq_ignore_ascii_case(name))
            {
                out.push(name.clone());
            }
        }
        out
    }

    /// The letters of `keywords`, sorted, giving free letters to keywords
    /// that have none yet (while there are free letters); keywords left
    /// without one stay in the index alone.
    pub(crate) fn letters_for(&mut self, keywords: &[String]) -> String {
        let mut letters = Vec::new();
        for k in keywords {
            let known = self
                .names
                .iter()
                .position(|n| n.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(k)));
            let i = match known {
                Some(i) => i,
                None => match self.names.iter().position(Option::is_none) {
                    Some(free) => {
                        self.names[free] = Some(k.clone());
                        self.dirty = true;
                        free
                    }
                    None => continue,
                },
            };
            letters.push((b'a' + i as u8) as char);
        }
        letters.sort_unstable();
        letters.dedup();
        letters.into_iter().collect()
    }

    /// Write the file if letters were given out, durably, before any name
    /// uses them.
    pub(crate) fn save(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let mut text = String::new();
        for (i, name) in self.names.iter().enumerate() {
            if let Some(name) = name {
                text.push_str(&format!("{i} {name}\n"));
            }
        }
        let target = self.folder.join(KEYWORDS_FILE);
        // A name of this process's own: the server and a CLI command may
        // both write a folder's file.
        static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self
            .folder
            .join("tmp")
            .join(format!("{KEYWORDS_FILE}.{}.{n}", std::process::id()));
        let write = || -> io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &target)
        };
        write().ctx(|| format!("write {}", target.display()))?;
        cove_dedup::sync_dir(&self.folder)?;
        self.dirty = false;
        Ok(())
    }
}

/// The letters of `keywords` in `folder` (whose map is `map`, read on
/// first need), new ones given out and saved.
pub(crate) fn letters_in_folder(
    folder: &Path,
    map: &mut Option<KeywordLetters>,
    keywords: &[String],
) -> Result<String> {
    if keywords.is_empty() {
        return Ok(String::new());
    }
    let map = map.get_or_insert_with(|| KeywordLetters::read(folder));
    let given = map.letters_for(keywords);
    map.save()?;
    Ok(given)
}

/// Where a new message file goes in `folder`: `new/<base>` without flags
/// or keywords, else `cur/<base>:2,<letters>`, its keywords' letters
/// given out (and saved) first. `map` is the folder's, read on first need.
pub(crate) fn new_file_rel(
    folder: &Path,
    map: &mut Option<KeywordLetters>,
    parsed: &FileName,
    flags: Flags,
    keywords: &[String],
) -> Result<String> {
    let letters = letters_in_folder(folder, map, keywords)?;
    Ok(if flags.is_empty() && letters.is_empty() {
        format!("new/{}", parsed.base)
    } else {
        format!("cur/{}", parsed.cur_name_with(flags, &letters))
    })
}

/// The name a message file `rel` takes when it moves to `folder` (whose
/// map is `map`, read on first need): its keywords' letters as that
/// folder maps them; unchanged when it has neither keywords nor letters.
pub(crate) fn moved_rel(
    folder: &Path,
    map: &mut Option<KeywordLetters>,
    rel: &str,
    keywords: &[String],
) -> Result<String> {
    if keywords.is_empty() && letters_in(rel).is_empty() {
        return Ok(rel.to_string());
    }
    let name = rel.rsplit('/').next().unwrap_or(rel);
    let parsed = FileName::parse(name)
        .ok_or_else(|| crate::Error::InvalidData(format!("bad file name {name}")))?;
    let flags = parsed.flags;
    new_file_rel(folder, map, &parsed, flags, keywords).map(|r| {
        // A file with no flags and no keyword left keeps its place.
        if r.starts_with("new/") {
            rel.to_string()
        } else {
            r
        }
    })
}

/// The keyword letters (`a`..`z`) of a file name's `:2,` info, sorted.
pub(crate) fn letters_in(file: &str) -> String {
    let name = file.rsplit('/').next().unwrap_or(file);
    let mut letters: Vec<char> = match name.split_once(":2,") {
        Some((_, info)) => info.chars().filter(char::is_ascii_lowercase).collect(),
        None => Vec::new(),
    };
    letters.sort_unstable();
    letters.dedup();
    letters.into_iter().collect()
}

/// A message's keywords after another program renamed its file from
/// `known` (the name the index has) to `now`: the letters it gained are
/// added, those it lost removed; keywords without a letter stay.
pub(crate) fn apply_renamed_letters(
    map: &KeywordLetters,
    keywords: &[String],
    known: &str,
    now: &str,
) -> Option<Vec<String>> {
    let (before, after) = (letters_in(known), letters_in(now));
    if before == after {
        return None;
    }
    let gained: String = after.chars().filter(|c| !before.contains(*c)).collect();
    let lost: String = before.chars().filter(|c| !after.contains(*c)).collect();
    let lost = map.keywords_of(&lost);
    let mut out: Vec<String> = keywords
        .iter()
        .filter(|k| !lost.iter().any(|l| l.eq_ignore_ascii_case(k)))
        .cloned()
        .collect();
    for k in map.keywords_of(&gained) {
        if !out.iter().any(|x| x.eq_ignore_ascii_case(&k)) {
            out.push(k);
        }
    }
    (!crate::keywords::same_set(&out, keywords)).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_are_given_once_and_read_back() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(d.path().join("tmp")).expect("tmp");
        // Dovecot's own file, with an index it wrote.
        std::fs::write(d.path().join(KEYWORDS_FILE), "0 $Forwarded\n2 Work\n").expect("write");
        let mut map = KeywordLetters::read(d.path());
        assert_eq!(map.letters_for(&["work".into(), "$forwarded".into()]), "ac");
        assert!(!map.dirty, "known keywords take no letter");
        assert_eq!(map.letters_for(&["Urgent".into()]), "b");
        map.save().expect("save");
        let again = KeywordLetters::read(d.path());
        assert_eq!(
            again.keywords_of("Sabc"),
            vec!["$Forwarded".to_string(), "Urgent".into(), "Work".into()]
        );
        // 26 letters at most: the 27th keyword stays index-only.
        let many: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();
        let mut full = KeywordLetters::read(d.path());
        assert_eq!(full.letters_for(&many).len(), 23);
        assert!(full.names.iter().all(Option::is_some));

        let renamed = apply_renamed_letters(
            &again,
            &["$Forwarded".into(), "NoLetter".into()],
            "cur/x:2,Sa",
            "cur/x:2,Sbc",
        )
        .expect("changed");
        assert!(crate::keywords::same_set(
            &renamed,
            &["NoLetter".into(), "Urgent".into(), "Work".into()]
        ));
        assert_eq!(
            apply_renamed_letters(&again, &["A".into()], "cur/x:2,a", "new/x:2,a"),
            None
        );
    }
}
