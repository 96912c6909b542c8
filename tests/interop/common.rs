//! What the interop cases share: finding the program under test (and the
//! skip-or-fail rule when it is missing), scratch directories other users
//! can enter, running a program with a deadline, and reading both sides of
//! a mailbox (cove over IMAP, a Maildir on disk) as Message-ID -> flags.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use cove_tests::{Imap, quoted, run_bounded, text};

/// How long one run of an outside program may take.
pub const PROGRAM_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether this is a CI run (`CI=true`), where nothing may be skipped.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Print a line that `cargo test` shows even for a passing test (the
/// harness captures `println!`, not writes to the stderr handle).
pub fn announce(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Give up on a case because something outside cove is missing: a skip
/// (a printed `skipped:` line, and the test passes) on a developer's
/// machine, a failure in CI.
pub fn skip_or_fail(reason: &str) {
    assert!(
        !in_ci(),
        "{reason}, and CI=true: .ci/run must install it (the interop suite skips nothing in CI)"
    );
    announce(&format!("skipped: {reason}"));
}

/// The path of program `name` (from Debian package `package`), or `None`
/// after [`skip_or_fail`] when it is not installed. Looks in `PATH` and in
/// the sbin directories, which a non-root `PATH` often lacks.
pub fn program(name: &str, package: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if fs::metadata(&candidate).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0) {
            return Some(candidate);
        }
    }
    skip_or_fail(&format!("{name} not installed (Debian package {package})"));
    None
}

/// Whether this process runs as root (a file it creates is owned by uid 0).
pub fn running_as_root(scratch: &Path) -> bool {
    let probe = scratch.join(".uid-probe");
    fs::write(&probe, b"").expect("write a probe file");
    let uid = fs::metadata(&probe).expect("stat the probe").uid();
    let _ = fs::remove_file(&probe);
    uid == 0
}

/// Whether this process may start `program`'s private instance (it runs
/// as root); otherwise false after [`skip_or_fail`].
pub fn root_for(program: &str) -> bool {
    let probe = tempfile::tempdir().expect("temp dir");
    if running_as_root(probe.path()) {
        return true;
    }
    skip_or_fail(&format!("{program} needs root to start a private instance"));
    false
}

/// A fresh temporary directory that daemons running as other users
/// (Postfix's `postfix`, Dovecot's mail user) can enter.
pub fn scratch_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir");
    open_to_others(dir.path());
    dir
}

/// `chmod 0755` a directory.
pub fn open_to_others(dir: &Path) {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
}

/// A TCP port nobody listens on right now (bound on port 0, then closed).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

/// Wait until something accepts connections on `127.0.0.1:port`.
pub fn wait_for_listener(port: u16, timeout: Duration) -> bool {
    cove_tests::eventually(timeout, || {
        TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
    })
    .is_some()
}

/// Run a program to its end within [`PROGRAM_TIMEOUT`].
pub fn run(cmd: Command) -> Output {
    run_bounded(cmd, None, PROGRAM_TIMEOUT)
}

/// [`run`], insisting on exit status 0; returns standard output.
#[track_caller]
pub fn run_ok(cmd: Command) -> String {
    let what = format!("{cmd:?}");
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The value of header `name` in a message with CRLF or LF line ends
/// (first occurrence; folded continuation lines are not joined).
pub fn header_value(message: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(message);
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case(name)
        {
            return Some(v.trim().to_string());
        }
    }
    None
}

/// System flags as IMAP names, sorted (`\Recent` and keywords left out).
pub type Flags = BTreeSet<String>;

/// The five system flags a Maildir file name can carry (RFC 3501 §2.3.2;
/// `\Recent` is session state, not stored).
pub const SYSTEM_FLAGS: [&str; 5] = ["\\Answered", "\\Deleted", "\\Draft", "\\Flagged", "\\Seen"];

/// Keep only the system flags of a list of IMAP flags.
pub fn system_flags<'a>(flags: impl IntoIterator<Item = &'a str>) -> Flags {
    flags
        .into_iter()
        .filter(|f| SYSTEM_FLAGS.iter().any(|s| s.eq_ignore_ascii_case(f)))
        .map(|f| {
            SYSTEM_FLAGS
                .iter()
                .find(|s| s.eq_ignore_ascii_case(f))
                .map(|s| s.to_string())
                .unwrap_or_default()
        })
        .collect()
}

/// The system flags in a Maildir file name's info (`...:2,FRS`).
pub fn maildir_name_flags(file_name: &str) -> Flags {
    let Some((_, info)) = file_name.rsplit_once(":2,") else {
        return Flags::new();
    };
    info.chars()
        .filter_map(|c| match c {
            'D' => Some("\\Draft"),
            'F' => Some("\\Flagged"),
            'R' => Some("\\Answered"),
            'S' => Some("\\Seen"),
            'T' => Some("\\Deleted"),
            _ => None,
        })
        .map(str::to_string)
        .collect()
}

/// One message as IMAP shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapMessage {
    pub uid: u32,
    pub flags: Flags,
    /// RFC822.SIZE.
    pub size: u64,
    pub message_id: String,
}

/// SELECT (or EXAMINE, when `read_only`) `mailbox` and fetch every
/// message's UID, system flags, size and Message-ID, in UID order.
#[track_caller]
pub fn imap_messages<S: std::io::Read + Write>(
    imap: &mut Imap<S>,
    mailbox: &str,
    read_only: bool,
) -> Vec<ImapMessage> {
    let verb = if read_only { "EXAMINE" } else { "SELECT" };
    let r = imap.cmd_ok(&format!("S1 {verb} {}", quoted(mailbox)));
    let exists: usize = r
        .iter()
        .find_map(|l| l.strip_prefix("* ")?.strip_suffix(" EXISTS")?.parse().ok())
        .unwrap_or_else(|| panic!("no EXISTS in {r:?}"));
    if exists == 0 {
        return Vec::new();
    }
    let r = imap
        .cmd_ok("F1 UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])");
    let mut out: Vec<ImapMessage> = r
        .iter()
        .filter(|l| l.starts_with("* ") && l.contains(" FETCH ("))
        .map(|l| parse_fetch(l))
        .collect();
    out.sort_by_key(|m| m.uid);
    assert_eq!(out.len(), exists, "{mailbox}: FETCH 1:* vs EXISTS: {r:?}");
    out
}

/// Parse one `* n FETCH (...)` response of [`imap_messages`].
fn parse_fetch(line: &str) -> ImapMessage {
    let number_after = |key: &str| -> u64 {
        let at = line
            .find(key)
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
            + key.len();
        line[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or_else(|_| panic!("bad {key} in {line:?}"))
    };
    let flags_at = line
        .find("FLAGS (")
        .unwrap_or_else(|| panic!("no FLAGS in {line:?}"))
        + "FLAGS (".len();
    let flags_end = line[flags_at..].find(')').expect("FLAGS list end") + flags_at;
    let flags = system_flags(line[flags_at..flags_end].split_whitespace());
    let header_at = line.find("}\r\n").expect("a header literal") + 3;
    let message_id = header_value(&line.as_bytes()[header_at..], "Message-ID")
        .unwrap_or_else(|| panic!("no Message-ID in {line:?}"));
    ImapMessage {
        uid: u32::try_from(number_after("UID ")).expect("a UID"),
        flags,
        size: number_after("RFC822.SIZE "),
        message_id,
    }
}

/// The names a LIST "" "*" returns (as sent: modified UTF-7).
#[track_caller]
pub fn imap_mailbox_names<S: std::io::Read + Write>(imap: &mut Imap<S>) -> BTreeSet<String> {
    let r = imap.cmd_ok("L1 LIST \"\" \"*\"");
    r.iter()
        .filter_map(|l| l.strip_prefix("* LIST "))
        .map(|l| {
            // (attributes) "delimiter" name
            let after_attrs = &l[l.find(')').expect("attributes") + 2..];
            let name = after_attrs.split_once(' ').expect("delimiter and name").1;
            match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
                Some(q) => q.replace("\\\"", "\"").replace("\\\\", "\\"),
                None => name.to_string(),
            }
        })
        .collect()
}

/// A Maildir folder's messages: Message-ID -> system flags from the file
/// name, for every file in `new/` and `cur/`.
pub fn maildir_messages(folder: &Path) -> BTreeMap<String, Flags> {
    let mut out = BTreeMap::new();
    for file in maildir_message_files(folder) {
        let bytes = fs::read(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let id = header_value(&bytes, "Message-ID")
            .unwrap_or_else(|| panic!("no Message-ID in {}", file.display()));
        let name = file.file_name().expect("file name").to_string_lossy();
        let previous = out.insert(id.clone(), maildir_name_flags(&name));
        assert!(previous.is_none(), "{id} twice in {}", folder.display());
    }
    out
}

/// The files in a Maildir folder's `new/` and `cur/`, sorted.
pub fn maildir_message_files(folder: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        for e in fs::read_dir(folder.join(sub))
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_type().is_ok_and(|t| t.is_file()) {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Every file under `dir` (recursively), relative, sorted: a snapshot to
/// show that a program wrote, renamed or removed nothing.
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(root, &p, out);
            } else {
                out.push(
                    p.strip_prefix(root)
                        .expect("under root")
                        .display()
                        .to_string(),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Decode an IMAP mailbox name from modified UTF-7 (RFC 3501 §5.1.3).
pub fn decode_mutf7(name: &str) -> String {
    let mut out = String::new();
    let mut rest = name;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let end = after.find('-').expect("an mUTF-7 shift ends with '-'");
        let encoded = &after[..end];
        if encoded.is_empty() {
            out.push('&');
        } else {
            let mut bits: u32 = 0;
            let mut nbits = 0;
            let mut units = Vec::new();
            for c in encoded.bytes() {
                let v = match c {
                    b'A'..=b'Z' => c - b'A',
                    b'a'..=b'z' => c - b'a' + 26,
                    b'0'..=b'9' => c - b'0' + 52,
                    b'+' => 62,
                    b',' => 63,
                    _ => panic!("bad mUTF-7 in {name:?}"),
                };
                bits = (bits << 6) | u32::from(v);
                nbits += 6;
                if nbits >= 16 {
                    nbits -= 16;
                    units.push(((bits >> nbits) & 0xffff) as u16);
                }
            }
            out.push_str(&String::from_utf16(&units).expect("UTF-16 in mUTF-7"));
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

#[test]
fn mutf7_decodes_rfc_3501_examples() {
    assert_eq!(decode_mutf7("R&AOk-unions"), "Réunions");
    assert_eq!(
        decode_mutf7("~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
        "~peter/mail/台北/日本語"
    );
    assert_eq!(decode_mutf7("a&-b"), "a&b");
}

#[test]
fn maildir_info_flags() {
    let f = maildir_name_flags("1.G1.host,S=10:2,DFRST");
    assert_eq!(f.len(), 5);
    assert!(maildir_name_flags("1.G1.host,S=10").is_empty());
}
