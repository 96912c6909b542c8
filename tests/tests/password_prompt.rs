//! `cove user add --password-stdin` and `cove user passwd` on a terminal:
//! the password is asked twice, never echoed, and two different answers
//! change nothing. Driven through a real pseudo-terminal (Python's `pty`).

use std::process::Command;
use std::time::Duration;

use cove_tests::{TestServer, cove_bin, run_bounded, text};

/// Run `cove ARGS` on a pseudo-terminal, typing each of `answers` after a
/// prompt; returns (exit code, everything the terminal showed).
fn on_terminal(server: &TestServer, args: &[&str], answers: &[&str]) -> (i32, String) {
    let script = r#"
import os, pty, sys, json
argv = json.loads(sys.argv[1]); answers = json.loads(sys.argv[2])
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
seen = b""
def read_until(marker):
    global seen
    while marker not in seen.split(b"\n")[-1]:
        chunk = os.read(fd, 1024)
        if not chunk:
            raise SystemExit("eof before " + repr(marker))
        seen += chunk
for a in answers:
    read_until(b"assword")
    os.write(fd, a.encode() + b"\n")
    seen += b"\n"
while True:
    try:
        chunk = os.read(fd, 1024)
    except OSError:
        break
    if not chunk:
        break
    seen += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.write(seen.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let mut argv = vec![cove_bin().display().to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    argv.push("--config".into());
    argv.push(server.config_path().display().to_string());
    let quote = |v: &[String]| {
        format!(
            "[{}]",
            v.iter()
                .map(|s| format!("{:?}", s))
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    let answers: Vec<String> = answers.iter().map(|a| a.to_string()).collect();
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(script)
        .arg(quote(&argv))
        .arg(quote(&answers))
        .env("COVE_LOG", "warn");
    let out = run_bounded(cmd, None, Duration::from_secs(60));
    (out.status.code().unwrap_or(-1), text(&out.stdout))
}

#[test]
fn passwords_are_asked_twice_without_echo() {
    let s = TestServer::start("");
    let secret = "s3cret-typed-here";

    let (code, shown) = on_terminal(
        &s,
        &["user", "add", "a@x.org", "--password-stdin"],
        &[secret, secret],
    );
    assert_eq!(code, 0, "{shown}");
    assert_eq!(shown.matches("Password").count(), 2, "asked twice: {shown}");
    assert!(!shown.contains(secret), "the password was echoed: {shown}");

    let (code, shown) = on_terminal(
        &s,
        &["user", "passwd", "a@x.org"],
        &["one password", "another one"],
    );
    assert_ne!(code, 0, "two different answers are refused: {shown}");
    assert!(shown.contains("differ"), "{shown}");
    assert!(!shown.contains("one password"), "{shown}");
}
