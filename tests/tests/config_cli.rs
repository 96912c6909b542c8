//! The operator interface: configuration errors, a port that cannot be
//! bound, a clean stop on SIGTERM, and the admin CLI's promises (it prints
//! what it did; it fails with one line and a non-zero exit).

use std::fs;
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use cove_tests::{
    CLI_TIMEOUT, TestServer, assert_reply, config_text, cove_bin, header, mailbox_contents,
    message, run_bounded, text,
};

/// Run `cove serve` on a config text, expecting it to exit by itself.
fn serve_expecting_exit(config: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cove.toml");
    fs::write(
        &path,
        config.replace("@DIR@", &dir.path().display().to_string()),
    )
    .unwrap();
    let mut cmd = Command::new(cove_bin());
    cmd.arg("serve")
        .arg("--config")
        .arg(&path)
        .env("COVE_LOG", "info");
    run_bounded(cmd, None, CLI_TIMEOUT)
}

/// The failure message of a command: standard error from the line that
/// starts with `cove: ` (after any log lines) to the end; only a TOML error
/// takes more than one line, to show where in the file it is.
fn failure_line(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "expected a failure: {out:?}");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    let at = err
        .find("cove: ")
        .filter(|&at| at == 0 || err[..at].ends_with('\n'))
        .unwrap_or_else(|| panic!("no `cove: ` line in stderr: {err}"));
    err[at..].trim_end().to_string()
}

#[test]
fn unknown_config_key_is_named() {
    let out = serve_expecting_exit(
        "data_dir = \"@DIR@/data\"\n[lmtp]\nlisten = [\"127.0.0.1:0\"]\nfrobnicate = 3\n",
    );
    // A TOML error keeps its form: the file, line and column first, then
    // the line itself with the key marked, then what is wrong.
    let message = failure_line(&out);
    let lines: Vec<&str> = message.lines().collect();
    assert!(
        lines[0].contains("cove.toml: TOML parse error at line 4"),
        "{message}"
    );
    assert!(
        lines.iter().any(|l| l.contains("| frobnicate = 3")),
        "{message}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("unknown field `frobnicate`")),
        "{message}"
    );
    let out = serve_expecting_exit("data_dir = \"@DIR@/data\"\nlisten_everywhere = true\n");
    let message = failure_line(&out);
    assert!(message.contains("listen_everywhere"), "{message}");
}

#[test]
fn unbindable_listener_exits_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = serve_expecting_exit(&config_text(&dir.path().join("data"), &addr, ""));
    let line = failure_line(&out);
    assert!(line.contains(&addr), "{line}");
    drop(taken);
}

#[test]
fn sigterm_lets_a_delivery_in_progress_finish() {
    let mut server = TestServer::start("");
    server.add_users(&["a@x.org"]);
    let mut c = server.lmtp_ready();
    assert_reply(&c.cmd("MAIL FROM:<s@example.org>"), "250 2.1.0");
    assert_reply(&c.cmd("RCPT TO:<a@x.org>"), "250 2.1.5");
    assert_reply(&c.cmd("DATA"), "354");
    let body = cove_tests::dot_stuff(&message("in-flight", "sent around SIGTERM"));
    let (first, rest) = body.split_at(40);
    c.send_raw(first).unwrap();
    std::thread::sleep(Duration::from_millis(100));

    server.sigterm();
    // The listener closes; the session in DATA goes on.
    assert!(
        cove_tests::eventually(Duration::from_secs(10), || server
            .logged("SIGTERM")
            .then_some(()))
        .is_some()
    );
    std::thread::sleep(Duration::from_millis(100));
    c.send_raw(rest).unwrap();
    assert_reply(&c.read_reply(), "250 2.0.0 <a@x.org> Saved as UID 1");
    // Then the server says goodbye.
    assert_reply(&c.read_reply(), "421 4.3.2");
    assert!(c.is_closed());

    let status = server.wait_exit();
    assert!(status.success(), "exit status {status}");
    assert!(server.logged("stopped"), "{:#?}", server.logs());

    let store = server.open_store();
    let (_, msgs) = mailbox_contents(&store, "a@x.org", "INBOX");
    assert_eq!(msgs.len(), 1);
    let bytes = fs::read(&msgs[0].1).unwrap();
    assert_eq!(
        header(&bytes, "Message-ID").as_deref(),
        Some("<in-flight@cove.test>")
    );
}

#[test]
fn idle_server_stops_cleanly_on_sigterm() {
    let mut server = TestServer::start("");
    let _idle = server.lmtp_ready();
    let status = server.sigterm_and_wait();
    assert!(status.success(), "exit status {status}");
    assert!(server.logged("stopped"));
}

#[test]
fn user_commands() {
    let server = TestServer::start("");
    let cfg = server.config_path().to_str().unwrap().to_string();

    let out = server.cli_ok(&["user", "add", "Alice@X.org"]);
    assert!(out.contains("added user alice@x.org"), "{out}");
    // The second add fails with one line.
    let out = server.cli(&["user", "add", "alice@x.org"]);
    let line = failure_line(&out);
    assert_eq!(
        text(&out.stderr).lines().count(),
        1,
        "{}",
        text(&out.stderr)
    );
    assert!(line.contains("alice@x.org"), "{line}");
    assert!(text(&out.stdout).is_empty(), "{}", text(&out.stdout));

    let out = server.cli_stdin(
        &[
            "user",
            "add",
            "bob@x.org",
            "--password-stdin",
            "--quota",
            "1000000",
        ],
        Some(b"hunter2\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("password set"));

    // Invalid address.
    let line = failure_line(&server.cli(&["user", "add", "no-at-sign"]));
    assert!(line.contains("no-at-sign"), "{line}");

    // --config before and after the subcommand.
    let before = run_bounded(
        {
            let mut c = Command::new(cove_bin());
            c.args(["--config", &cfg, "user", "list"]);
            c
        },
        None,
        CLI_TIMEOUT,
    );
    let after = run_bounded(
        {
            let mut c = Command::new(cove_bin());
            c.args(["user", "list", "--config", &cfg]);
            c
        },
        None,
        CLI_TIMEOUT,
    );
    assert!(before.status.success() && after.status.success());
    assert_eq!(before.stdout, after.stdout);
    let list = text(&before.stdout);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    assert!(lines[0].starts_with("alice@x.org\tno-password"), "{list}");
    assert!(
        lines[1].starts_with("bob@x.org\tpassword\tquota=1000000"),
        "{list}"
    );
    assert_eq!(lines[2], "2 user(s)");

    // passwd.
    let out = server.cli_stdin(
        &["user", "passwd", "alice@x.org", "--password-stdin"],
        Some(b"correct horse\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        server
            .cli_ok(&["user", "list"])
            .contains("alice@x.org\tpassword")
    );
    let line = failure_line(&server.cli_stdin(
        &["user", "passwd", "nobody@x.org", "--password-stdin"],
        Some(b"pw\n"),
    ));
    assert!(line.contains("nobody@x.org"), "{line}");

    // del of an unknown user fails; del of a known one works and the server
    // no longer accepts mail for them.
    let line = failure_line(&server.cli(&["user", "del", "nobody@x.org"]));
    assert!(line.contains("nobody@x.org"), "{line}");
    let out = server.cli_ok(&["user", "del", "bob@x.org"]);
    assert!(out.contains("removed user bob@x.org"), "{out}");
    assert!(
        server.home("bob@x.org").exists(),
        "mail kept without --purge"
    );
    let mut c = server.lmtp_ready();
    assert_reply(&c.cmd("MAIL FROM:<s@example.org>"), "250 2.1.0");
    assert_reply(&c.cmd("RCPT TO:<bob@x.org>"), "550 5.1.1");
    assert_reply(&c.cmd("RCPT TO:<alice@x.org>"), "250 2.1.5");
    assert_reply(&c.cmd("QUIT"), "221 2.0.0");
    let out = server.cli_ok(&["user", "del", "alice@x.org", "--purge"]);
    assert!(out.contains("removed user alice@x.org"), "{out}");
    assert!(!server.home("alice@x.org").exists());
    assert_eq!(server.cli_ok(&["user", "list"]).trim(), "0 user(s)");

    // Commands about unknown users fail with one line.
    for args in [
        ["mailbox", "list", "nobody@x.org"],
        ["index", "rebuild", "nobody@x.org"],
    ] {
        let line = failure_line(&server.cli(&args));
        assert!(line.contains("nobody@x.org"), "{args:?}: {line}");
    }
    // A missing config file is named.
    let out = run_bounded(
        {
            let mut c = Command::new(cove_bin());
            c.args(["user", "list", "--config", "/nonexistent/cove.toml"]);
            c
        },
        None,
        CLI_TIMEOUT,
    );
    let line = failure_line(&out);
    assert!(line.contains("/nonexistent/cove.toml"), "{line}");
}

// An admin command without a configuration does not invent a data
// directory where the shell stands (it used to make ./cove-data and report
// "0 user(s)"); COVE_CONFIG names the server's configuration like --config.
#[test]
fn admin_commands_find_the_servers_data_or_refuse() {
    let server = TestServer::start("");
    server.add_users(&["a@x.org"]);
    let empty = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(cove_bin());
    cmd.args(["user", "list"])
        .current_dir(empty.path())
        .env_remove("COVE_CONFIG");
    let out = run_bounded(cmd, None, CLI_TIMEOUT);
    let line = failure_line(&out);
    assert!(line.contains("no data directory at ./cove-data"), "{line}");
    assert!(
        fs::read_dir(empty.path()).unwrap().next().is_none(),
        "nothing was created in the current directory"
    );

    let mut cmd = Command::new(cove_bin());
    cmd.args(["user", "list"])
        .current_dir(empty.path())
        .env("COVE_CONFIG", server.config_path());
    let out = run_bounded(cmd, None, CLI_TIMEOUT);
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).contains("a@x.org"), "{out:?}");
}
