//! The README's Quick start, as a newcomer runs it: its first command,
//! verbatim, in a fresh copy of the repository, must start cove on the
//! ports the README names, and SIGTERM must stop it cleanly.
//!
//! The command is `cargo run --release -- serve`, so this test builds the
//! release profile. The copy lives at a fixed place in the target directory
//! and keeps the files' times, and CARGO_TARGET_DIR is the workspace's own:
//! after the first run (a cold release build: minutes) cargo finds nothing
//! to rebuild. The README's ports are fixed: if another program holds one,
//! the test fails saying which.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cove_tests::daemon::Daemon;
use cove_tests::{target_dir, tls_config_trusting, tls_connect, without_test_env};

/// A cold release build on 2 busy cores takes minutes; this bounds it.
const BUILD_AND_START: Duration = Duration::from_secs(45 * 60);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the repository")
}

/// The Quick start chapter: its first code block's first command, and
/// the paragraph after the block (which names the ports).
fn quick_start(readme: &str) -> (String, String) {
    let chapter = &readme[readme
        .find("## Quick start")
        .expect("a Quick start chapter")..];
    let open = chapter.find("```").expect("a code block");
    let body_at = open + chapter[open..].find('\n').expect("code block line") + 1;
    let close = body_at
        + chapter[body_at..]
            .find("```")
            .expect("end of the code block");
    let command = chapter[body_at..close]
        .lines()
        .map(|l| l.split(" #").next().unwrap_or("").trim())
        .find(|l| !l.is_empty())
        .expect("a command in the block")
        .to_string();
    let after = chapter[close + 3..].trim_start_matches(['`', '\n']);
    let paragraph = after.split("\n\n").next().unwrap_or("").to_string();
    (command, paragraph)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Speaks {
    Lmtp,
    Imap,
    Imaps,
    Pop3,
    Pop3s,
    Http,
}

/// Each `127.0.0.1:PORT` of the paragraph, with the protocol named before
/// it ("IMAP over TLS on `127.0.0.1:1993`").
fn named_ports(paragraph: &str) -> Vec<(Speaks, SocketAddr)> {
    let mut out = Vec::new();
    let mut rest = paragraph;
    while let Some(at) = rest.find("`127.0.0.1:") {
        let before = &rest[..at];
        let end = at + 1 + rest[at + 1..].find('`').expect("closing backtick");
        let addr: SocketAddr = rest[at + 1..end].parse().expect("an address");
        let tls = before.contains("over TLS");
        let speaks = match ["LMTP", "IMAP", "POP3", "HTTP"]
            .iter()
            .filter_map(|p| before.rfind(p).map(|i| (i, *p)))
            .max()
            .map(|(_, p)| p)
        {
            Some("LMTP") => Speaks::Lmtp,
            Some("IMAP") if tls => Speaks::Imaps,
            Some("IMAP") => Speaks::Imap,
            Some("POP3") if tls => Speaks::Pop3s,
            Some("POP3") => Speaks::Pop3,
            Some("HTTP") => Speaks::Http,
            _ => panic!("no protocol named before {addr} in: {paragraph}"),
        };
        out.push((speaks, addr));
        rest = &rest[end + 1..];
    }
    out
}

/// Copy the tracked files (as they are in the working tree, uncommitted
/// edits included) to `to`, keeping their modification times.
fn copy_tracked(from: &Path, to: &Path) {
    let out = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(from)
        .output()
        .expect("run git ls-files");
    assert!(out.status.success(), "git ls-files: {out:?}");
    let _ = std::fs::remove_dir_all(to);
    for name in out.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        let source = from.join(&name);
        let Ok(meta) = std::fs::symlink_metadata(&source) else {
            continue; // deleted in the working tree
        };
        let target = to.join(&name);
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        if meta.file_type().is_symlink() {
            let link = std::fs::read_link(&source).expect("readlink");
            std::os::unix::fs::symlink(link, &target).expect("symlink");
            continue;
        }
        std::fs::copy(&source, &target).expect("copy");
        let f = std::fs::File::options()
            .write(true)
            .open(&target)
            .expect("open the copy");
        f.set_modified(meta.modified().expect("mtime"))
            .expect("keep the mtime");
    }
}

/// The first line a server sends (or, for HTTP, the status line of GET
/// /metrics), over TLS for imaps and pop3s, trusting the certificate the
/// way the README says.
fn first_line(speaks: Speaks, addr: SocketAddr, cert: &Path) -> std::io::Result<String> {
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut line = String::new();
    match speaks {
        Speaks::Imaps | Speaks::Pop3s => {
            let tls = tls_connect(tcp, tls_config_trusting(cert), "127.0.0.1")?;
            BufReader::new(tls).read_line(&mut line)?;
        }
        Speaks::Http => {
            let mut tcp = tcp;
            tcp.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
            let mut reader = BufReader::new(tcp);
            reader.read_line(&mut line)?;
            let _ = reader.read_to_end(&mut Vec::new());
        }
        _ => {
            BufReader::new(tcp).read_line(&mut line)?;
        }
    }
    Ok(line.trim_end().to_string())
}

fn expected_start(speaks: Speaks) -> &'static str {
    match speaks {
        Speaks::Lmtp => "220 ",
        Speaks::Imap | Speaks::Imaps => "* OK",
        Speaks::Pop3 | Speaks::Pop3s => "+OK",
        Speaks::Http => "HTTP/1.1 200",
    }
}

/// The cove process of `cargo run`: cargo itself on Unix (it execs the
/// program), or else its child.
fn cove_of(cargo: u32) -> Option<u32> {
    let comm = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok();
    if comm(cargo).is_some_and(|c| c.trim() == "cove") {
        return Some(cargo);
    }
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        // pid (comm) state ppid ...: comm may hold spaces, so after ')'.
        let ppid: u32 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        (ppid == cargo && comm(pid).is_some_and(|c| c.trim() == "cove")).then_some(pid)
    })
}

#[test]
fn the_readme_quick_start_command_serves_on_the_ports_it_names() {
    let repo = repo();
    let readme = std::fs::read_to_string(repo.join("README.md")).expect("README.md");
    let (command, paragraph) = quick_start(&readme);
    let ports = named_ports(&paragraph);
    for p in [
        Speaks::Lmtp,
        Speaks::Imap,
        Speaks::Imaps,
        Speaks::Pop3,
        Speaks::Pop3s,
        Speaks::Http,
    ] {
        assert!(
            ports.iter().any(|(s, _)| *s == p),
            "the Quick start names no {p:?} port: {paragraph}"
        );
    }
    for (speaks, addr) in &ports {
        if let Err(e) = TcpListener::bind(addr) {
            panic!(
                "the README's {speaks:?} port {addr} is taken by another program ({e}); stop it (a cove started by hand?) and run this test again"
            );
        }
    }

    let target = target_dir();
    let clone = target.join("quickstart").join("clone");
    copy_tracked(&repo, &clone);
    let mut cmd = Command::new("sh");
    without_test_env(&mut cmd);
    cmd.arg("-c")
        .arg(format!("exec {command}"))
        .current_dir(&clone)
        .env("CARGO_TARGET_DIR", &target)
        .env("COVE_LOG", "info")
        .env_remove("COVE_CONFIG");
    let log = target.join("quickstart").join("serve.log");
    let mut d = Daemon::spawn(cmd, &log);
    d.wait_for("serving", BUILD_AND_START);

    let cert = clone.join("cove-data/tls/cert.pem");
    for (speaks, addr) in &ports {
        let line = first_line(*speaks, *addr, &cert)
            .unwrap_or_else(|e| panic!("{speaks:?} on {addr}: {e}\n{}", d.output()));
        assert!(
            line.starts_with(expected_start(*speaks)),
            "{speaks:?} on {addr} answered {line:?}"
        );
    }

    // SIGTERM to cove; cargo run exits with cove's status.
    let cove =
        cove_of(d.pid()).unwrap_or_else(|| panic!("no cove under cargo run:\n{}", d.output()));
    let st = Command::new("kill")
        .args(["-TERM", &cove.to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let st = d.wait_exit(Duration::from_secs(60));
    assert!(st.success(), "{st}:\n{}", d.output());
    let output = d.output();
    assert!(output.contains("SIGTERM: shutting down"), "{output}");
    assert!(output.contains(" stopped"), "{output}");
}
