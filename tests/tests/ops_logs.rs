//! Logs an operator can live with: one WARN per change of state rather
//! than per delivery, each cause said once, the session count at shutdown
//! true; and the shell completions.

use std::process::Command;
use std::time::Duration;

use cove_tests::{CLI_TIMEOUT, TestServer, cove_bin, eventually, message, run_bounded, text};

const USER: &str = "a@x.org";

// sync_delivery with the only peer down (nothing listens at its address):
// deliveries are acknowledged at once, and the log says so once, without
// claiming a wait of sync_delivery_timeout_ms that did not happen.
#[test]
fn sync_delivery_with_the_peer_down_warns_once() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = dead.local_addr().expect("addr");
    drop(dead);
    let s = TestServer::start(&format!(
        "[replication]\nsecret = \"0123456789abcdef-shared\"\nsync_delivery = true\nsync_delivery_timeout_ms = 2000\n\
         [[replication.peers]]\nname = \"node-b\"\naddress = \"{address}\"\n"
    ));
    s.add_users(&[USER]);
    let mut lmtp = s.lmtp_ready();
    for i in 0..4 {
        let d = lmtp.deliver("s@example.org", &[USER], &message(&format!("m{i}"), "x"));
        assert!(d.results[0].is("250"), "{d:?}");
    }
    let warned = eventually(Duration::from_secs(10), || {
        s.logged("sync_delivery: no peer reachable").then_some(())
    });
    assert!(warned.is_some(), "{}", s.logs().join("\n"));
    let lines: Vec<String> = s
        .logs()
        .into_iter()
        .filter(|l| l.contains("WARN") && l.contains("sync_delivery"))
        .collect();
    assert_eq!(lines.len(), 1, "one WARN for four deliveries: {lines:#?}");
    assert!(
        !lines[0].contains("2000") && !lines[0].contains("in time"),
        "a wait that did not happen: {}",
        lines[0]
    );
}

// The "stopped" line counts sessions open at SIGTERM, not every session
// that ever ran since the last accept.
#[test]
fn shutdown_counts_only_open_sessions() {
    let mut s = TestServer::start("");
    for _ in 0..3 {
        let mut c = s.lmtp_ready();
        c.send_line("QUIT");
        let _ = c.read_reply();
    }
    // The sessions end on their own after QUIT; give them a moment.
    std::thread::sleep(Duration::from_millis(300));
    s.stop();
    let stopped = s
        .logs()
        .into_iter()
        .find(|l| l.contains(" stopped"))
        .unwrap_or_else(|| panic!("no stop line:\n{}", s.logs().join("\n")));
    assert!(stopped.contains("sessions=0"), "{stopped}");
}

// An OS error wrapped by the store is printed once, not twice.
#[test]
fn an_os_error_is_said_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cove.toml");
    std::fs::write(
        &path,
        "data_dir = \"/dev/null/data\"\n[lmtp]\nlisten = [\"127.0.0.1:0\"]\n",
    )
    .expect("write config");
    let mut cmd = Command::new(cove_bin());
    cmd.args(["serve", "--config"]).arg(&path);
    let out = run_bounded(cmd, None, CLI_TIMEOUT);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.matches("os error 20").count(), 1, "{err}");
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef cove"),
        ("fish", "complete -c cove"),
    ] {
        let mut cmd = Command::new(cove_bin());
        // No configuration or data directory is needed to print them.
        cmd.args(["completions", shell])
            .env("COVE_CONFIG", "/nonexistent/cove.toml");
        let out = run_bounded(cmd, None, CLI_TIMEOUT);
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = text(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("serve"), "{shell}");
    }
}
