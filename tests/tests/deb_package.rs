//! The Debian package, built from server/Cargo.toml's [package.metadata.deb]
//! (packaging/build-deb.py, the same contents as `cargo deb`), installed
//! with dpkg, started the way its systemd unit starts it (systemctl is not
//! there: the unit's ExecStart runs as its User= with its
//! AmbientCapabilities=, through setpriv), serving, then purged.
//!
//! It needs root and dpkg; elsewhere it says `skipped:` (and fails under
//! CI=true). It leaves a machine as it found it, and refuses to touch one
//! where cove is installed for real.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cove_tests::daemon::{Daemon, greeting, uids_of};
use cove_tests::{cove_bin, run_bounded, text};

const UNIT: &str = "/lib/systemd/system/cove.service";
const DATA: &str = "/var/lib/cove";
/// Written into /var/lib/cove by this test: a leftover install of a test
/// run that died may be removed; any other install is left alone.
const MARKER: &str = "/var/lib/cove/.cove-package-test";
const START: Duration = Duration::from_secs(60);

fn skip(why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true: the package test cannot run: {why}"
    );
    println!("skipped: {why}");
}

fn run(args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..])
        .env("DEBIAN_FRONTEND", "noninteractive");
    run_bounded(cmd, None, Duration::from_secs(300))
}

fn run_ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed ({}):\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn installed() -> bool {
    run(&["dpkg-query", "-W", "-f=${Status}", "cove"])
        .stdout
        .starts_with(b"install ok installed")
}

/// The value of `Key=` in the unit file (the last one, as systemd reads it).
fn unit_value<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .rev()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// A port below 1024 nothing listens on.
fn free_privileged_port() -> Option<u16> {
    (600..1000).find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
}

#[test]
fn the_package_installs_serves_as_cove_and_purges() {
    let root = uids_of(std::process::id()).get(1) == Some(&0);
    if !root {
        return skip("installing a package needs root");
    }
    for tool in ["dpkg-deb", "python3", "setpriv", "adduser"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            return skip(&format!("{tool} is not installed"));
        }
    }
    if installed() && !Path::new(MARKER).exists() {
        println!("skipped: cove is installed on this machine; the test leaves it alone");
        return;
    }
    if Path::new(DATA).exists() && !Path::new(MARKER).exists() {
        println!("skipped: {DATA} exists and is not this test's");
        return;
    }
    // A leftover of a test run that died.
    if installed() {
        run_ok(&["dpkg", "--purge", "cove"]);
    }
    let _ = std::fs::remove_dir_all(DATA);
    let user_existed = run(&["getent", "passwd", "cove"]).status.success();

    // Build: the test's own binary (debug) stands in for the release one;
    // what is tested is the package around it.
    let work = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/build-deb.py");
    let deb = run_ok(&[
        "python3",
        script.to_str().unwrap(),
        "--binary",
        cove_bin().to_str().unwrap(),
        "--out",
        work.path().to_str().unwrap(),
        "--compression",
        "gzip",
    ]);
    let deb = deb.trim();
    run_ok(&["dpkg", "-i", deb]);
    std::fs::write(MARKER, "").expect("mark the test's install");

    // What dpkg put where.
    let conffiles = run_ok(&["dpkg-query", "-W", "-f=${Conffiles}", "cove"]);
    assert!(conffiles.contains("/etc/cove/cove.toml"), "{conffiles}");
    let passwd = run_ok(&["getent", "passwd", "cove"]);
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    let uid: u32 = fields[2].parse().unwrap();
    assert!(uid < 1000, "cove is a system user: {passwd}");
    assert_eq!(fields[6], "/usr/sbin/nologin", "{passwd}");
    let data = std::fs::metadata(DATA).expect("/var/lib/cove");
    assert_eq!(data.mode() & 0o7777, 0o700);
    assert_eq!(data.uid(), uid);
    let config = std::fs::metadata("/etc/cove/cove.toml").unwrap();
    assert_eq!(config.mode() & 0o777, 0o640, "the config may hold secrets");
    let unit = std::fs::read_to_string(UNIT).expect("the unit");
    for line in [
        "User=cove",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/cove",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} not in the unit");
    }

    // The example configuration is valid, and an admin command run as
    // root finds the data through it and works as the data's owner.
    let users = run_ok(&["/usr/bin/cove", "user", "add", "pkg@example.org"]);
    assert!(users.contains("added user pkg@example.org"), "{users}");
    for made in ["cove.db", "mail"] {
        let meta = std::fs::metadata(Path::new(DATA).join(made)).expect(made);
        assert_eq!(meta.uid(), uid, "{made} made by an admin command as root");
    }

    // Start it as systemd would: ExecStart, as User=, with the ambient
    // capability, no new privileges; COVE_CONFIG (a drop-in's Environment=)
    // names a configuration on free ports, LMTP on a privileged one.
    let exec = unit_value(&unit, "ExecStart").expect("ExecStart");
    let user = unit_value(&unit, "User").expect("User");
    let caps = unit_value(&unit, "AmbientCapabilities").expect("AmbientCapabilities");
    let cap = caps.to_lowercase().replace("cap_", "+");
    let port = free_privileged_port().expect("a free port below 1024");
    let test_config = work.path().join("cove.toml");
    std::fs::write(
        &test_config,
        format!(
            "data_dir = \"{DATA}\"\nhostname = \"cove.test\"\n[lmtp]\nlisten = [\"127.0.0.1:{port}\"]\n\
             [imap]\nlisten = [\"127.0.0.1:0\"]\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&test_config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={user}"),
        &format!("--regid={user}"),
        "--init-groups",
        &format!("--inh-caps={cap}"),
        &format!("--ambient-caps={cap}"),
        "--no-new-privs",
        "--",
    ])
    .args(exec.split_whitespace())
    .env_clear()
    .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    .env("COVE_CONFIG", &test_config)
    .env("COVE_LOG", "info");
    let mut d = Daemon::spawn(cmd, &work.path().join("serve.log"));
    let imap = d.listening("imap", START);
    assert_eq!(uids_of(d.pid()), vec![uid; 4], "{}", d.output());
    let lmtp = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let g = greeting(lmtp).expect("LMTP answers on the privileged port");
    assert!(g.starts_with("220 "), "{g}");
    let g = greeting(imap).expect("IMAP answers");
    assert!(g.starts_with("* OK"), "{g}");
    let st = d.stop(Duration::from_secs(30));
    assert!(st.success(), "{st}:\n{}", d.output());

    // Purge: the program and its configuration go; mail is never removed
    // by dpkg (this test removes its own).
    run_ok(&["dpkg", "--purge", "cove"]);
    assert!(!installed());
    assert!(!Path::new("/usr/bin/cove").exists());
    assert!(!Path::new("/etc/cove/cove.toml").exists());
    assert!(!Path::new(UNIT).exists());
    assert!(Path::new(DATA).join("cove.db").exists());
    std::fs::remove_dir_all(DATA).expect("remove the test's data");
    if !user_existed {
        run_ok(&["deluser", "--system", "cove"]);
    }
}
