//! Started as root without systemd: `[server] user` makes cove bind its
//! listeners (a privileged port among them) as root and then run as that
//! user; what it made on disk belongs to that user. Refusals: root on a
//! data directory someone else owns, and a data directory not owned by
//! `user`. Plus the start-up check that blobs/ and mail/ can share hard
//! links.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cove_tests::daemon::{Daemon, greeting, uids_of};
use cove_tests::{CLI_TIMEOUT, cove_bin, run_bounded, text};

const START: Duration = Duration::from_secs(60);
/// Debian's unprivileged user, present on every system.
const USER: &str = "nobody";

fn is_root() -> bool {
    uids_of(std::process::id()).get(1) == Some(&0)
}

fn uid_of(user: &str) -> Option<u32> {
    let out = Command::new("id").args(["-u", user]).output().ok()?;
    text(&out.stdout).trim().parse().ok()
}

/// A directory the unprivileged user can reach (tempdir makes 0700 ones).
fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the temp dir");
    dir
}

fn write_config(dir: &Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("cove.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = {:?}\nhostname = \"cove.test\"\n{body}",
            dir.join("data").display().to_string()
        ),
    )
    .expect("write config");
    path
}

fn serve_expecting_failure(config: &Path) -> String {
    let mut cmd = Command::new(cove_bin());
    cmd.args(["serve", "--config"]).arg(config);
    let out = run_bounded(cmd, None, CLI_TIMEOUT);
    assert!(!out.status.success(), "expected a refusal: {out:?}");
    text(&out.stderr)
}

/// A port below 1024 nothing listens on (only root may bind it).
fn free_privileged_port() -> Option<u16> {
    (700..1000).find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
}

#[test]
fn root_binds_then_runs_as_the_configured_user() {
    if !is_root() {
        println!("skipped: privilege dropping needs the tests to run as root");
        return;
    }
    let uid = uid_of(USER).expect("the nobody user");
    let dir = open_tempdir();
    let port = free_privileged_port().expect("a free port below 1024");
    let config = write_config(
        dir.path(),
        &format!(
            "[server]\nuser = \"{USER}\"\n[lmtp]\nlisten = [\"127.0.0.1:{port}\"]\n[imap]\nlisten = [\"127.0.0.1:0\"]\n"
        ),
    );
    let mut cmd = Command::new(cove_bin());
    cmd.args(["serve", "--config"])
        .arg(&config)
        .env("COVE_LOG", "info");
    let mut d = Daemon::spawn(cmd, &dir.path().join("log"));
    d.wait_for("cove 0", START);
    let line = d.wait_for("listeners bound; running as", START);
    assert!(line.contains(USER), "{line}");
    // Every id of the process is the user's now: root cannot be had back.
    assert_eq!(uids_of(d.pid()), vec![uid; 4], "{}", d.output());
    let lmtp = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let g = greeting(lmtp).expect("LMTP on the privileged port");
    assert!(g.starts_with("220 "), "{g}");
    let imap = d.listening("imap", START);
    assert!(greeting(imap).expect("IMAP").starts_with("* OK"));
    // What cove made on its first start belongs to the user.
    let data = dir.path().join("data");
    for made in ["", "cove.db", "mail", "blobs", "tls/key.pem"] {
        let meta = std::fs::metadata(data.join(made)).expect(made);
        assert_eq!(meta.uid(), uid, "{made} is owned by uid {}", meta.uid());
    }
    let st = d.stop(Duration::from_secs(30));
    assert!(st.success(), "{st}: {}", d.output());
}

#[test]
fn root_refuses_a_data_directory_owned_by_someone_else() {
    if !is_root() {
        println!("skipped: needs the tests to run as root");
        return;
    }
    let uid = uid_of(USER).expect("the nobody user");
    let dir = open_tempdir();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::os::unix::fs::chown(&data, Some(uid), None).expect("chown");
    // Root without `user` would leave root's files in nobody's directory.
    let config = write_config(dir.path(), "[lmtp]\nlisten = [\"127.0.0.1:0\"]\n");
    let err = serve_expecting_failure(&config);
    assert!(
        err.contains("refusing to run as root on data_dir") && err.contains(&format!("uid {uid}")),
        "{err}"
    );
    // `user` names another owner than the directory's.
    std::os::unix::fs::chown(&data, Some(0), None).expect("chown");
    let config = write_config(
        dir.path(),
        &format!("[server]\nuser = \"{USER}\"\n[lmtp]\nlisten = [\"127.0.0.1:0\"]\n"),
    );
    let err = serve_expecting_failure(&config);
    assert!(
        err.contains("is owned by uid 0, not by [server] user \"nobody\""),
        "{err}"
    );
    let config = write_config(
        dir.path(),
        "[server]\nuser = \"no-such-user-here\"\n[lmtp]\nlisten = [\"127.0.0.1:0\"]\n",
    );
    let err = serve_expecting_failure(&config);
    assert!(err.contains("no such user on this system"), "{err}");
}

// A data directory where link(2) from blobs/ into mail/ is refused: cove
// says so at start instead of failing every delivery. vfat and exfat
// refuse hard links; this kernel has neither (no vfat in
// /proc/filesystems), so an immutable mail/ (chattr +i, link(2) answers
// EPERM as vfat does) stands in for such a filesystem.
#[test]
fn a_data_directory_without_hard_links_is_refused_at_start() {
    if !is_root() || Command::new("chattr").arg("--help").output().is_err() {
        println!("skipped: needs root and chattr to make link(2) fail");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mail = dir.path().join("data").join("mail");
    std::fs::create_dir_all(&mail).expect("mkdir");
    // Already private, so the start's tightening (0700) has nothing to
    // change on the immutable directory.
    for d in [mail.parent().expect("data"), mail.as_path()] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    let st = Command::new("chattr").arg("+i").arg(&mail).status();
    if !st.is_ok_and(|s| s.success()) {
        println!("skipped: chattr +i is not supported here");
        return;
    }
    let config = write_config(dir.path(), "[lmtp]\nlisten = [\"127.0.0.1:0\"]\n");
    let err = serve_expecting_failure(&config);
    let _ = Command::new("chattr").arg("-i").arg(&mail).status();
    let line = err.lines().last().unwrap_or("");
    assert!(
        line.contains("cannot hard-link a file from")
            && line.contains("blobs and mail need a filesystem with hard links"),
        "{err}"
    );
}
