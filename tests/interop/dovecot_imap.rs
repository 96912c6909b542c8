//! A private Dovecot `imap` process for the comparisons with cove
//! (`mime_dovecot.rs`, `sort_dovecot.rs`), and the corpus they share.
//!
//! Dovecot runs as its own `imap` binary in pre-authenticated mode (stdin
//! and stdout, the way `doveadm exec imap` does), with a private
//! configuration, Maildir and index in a temp directory: no daemon, no port.

use std::fs;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use crate::common::{run_ok, running_as_root, scratch_dir, skip_or_fail};
use crate::dovecot::mail_identity;
use crate::imap_value::{RawSession, text};

/// The user both servers serve.
pub(crate) const USER: &str = "alice@example.com";
/// Debian's dovecot-imapd puts the IMAP process here.
const DOVECOT_IMAP: &str = "/usr/lib/dovecot/imap";

/// Whether Dovecot's `imap` is there; otherwise false after
/// [`skip_or_fail`].
pub(crate) fn dovecot_imap_installed() -> bool {
    let there = Path::new(DOVECOT_IMAP).exists();
    if !there {
        skip_or_fail(&format!(
            "{DOVECOT_IMAP} not installed (Debian package dovecot-imapd)"
        ));
    }
    there
}

/// The corpus files in name order, with their bytes.
pub(crate) fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "corpus: {files:?}");
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            (name, fs::read(&p).expect("read corpus file"))
        })
        .collect()
}

/// A private Dovecot `imap` process, pre-authenticated as [`USER`].
pub(crate) struct Dovecot {
    child: Child,
    pub(crate) session: RawSession<BufReader<ChildStdout>, ChildStdin>,
    _dir: tempfile::TempDir,
}

impl Dovecot {
    pub(crate) fn start() -> Dovecot {
        let dir = scratch_dir("cove-dovecot-imap-");
        let home = dir.path().join("home");
        let index = dir.path().join("index");
        for d in [&home, &index] {
            fs::create_dir(d).expect("mkdir");
        }
        if running_as_root(dir.path()) {
            run_ok({
                let mut c = Command::new("chown");
                c.args(["-R", "nobody"]).arg(&home).arg(&index);
                c
            });
        }
        let config = dir.path().join("dovecot.conf");
        fs::write(
            &config,
            format!(
                "# Written by cove's MIME comparison test.\n\
                 mail_location = maildir:~/Maildir:INDEX={}\n\
                 ssl = no\nlog_path = /dev/null\n{}",
                index.display(),
                mail_identity(dir.path())
            ),
        )
        .expect("write dovecot.conf");
        let mut child = Command::new(DOVECOT_IMAP)
            .arg("-c")
            .arg(&config)
            .env("USER", USER)
            .env("HOME", &home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dovecot's imap");
        let reader = BufReader::new(child.stdout.take().expect("stdout"));
        let writer = child.stdin.take().expect("stdin");
        let mut session = RawSession::new(reader, writer);
        let greeting = session.read_response();
        assert!(greeting.starts_with(b"* PREAUTH"), "{}", text(&greeting));
        Dovecot {
            child,
            session,
            _dir: dir,
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
