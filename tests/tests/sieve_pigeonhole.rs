//! Differential test against Pigeonhole, Dovecot's Sieve implementation:
//! the same scripts and messages through `sieve-test` (Debian's
//! dovecot-sieve, which prints the actions a script takes) and through a
//! real `cove serve` (LMTP delivery, then folders and flags over IMAP, the
//! relay's SMTP sink for redirects and vacation replies, LMTP's reply for
//! reject). Both must come to the same set of actions.
//!
//! Where cove differs on purpose, the case avoids it: cove files into a
//! missing folder's INBOX (the folders used are created first), and
//! delivers `user+detail@` to a `detail` folder that exists (none does).
//! Missing `sieve-test` skips the test, except with `CI=true`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cove_tests::smtp_sink::SmtpSink;
use cove_tests::{IMAP_CONFIG, TestServer, run_bounded, text};

const PASSWORD: &str = "pw-diff";

/// (script, subject, extra header lines, envelope sender)
const CASES: &[(&str, &str, &str, &str)] = &[
    (
        "require [\"fileinto\", \"imap4flags\"];\nif header :contains \"subject\" \"report\" { fileinto \"Work\"; addflag \"\\\\Seen\"; }\n",
        "weekly report",
        "",
        "bob@example.org",
    ),
    (
        "require [\"fileinto\", \"imap4flags\"];\nif header :contains \"subject\" \"report\" { addflag \"\\\\Flagged\"; fileinto \"Work\"; }\n",
        "nothing here",
        "",
        "bob@example.org",
    ),
    (
        "require [\"fileinto\", \"copy\"];\nif address :domain \"from\" \"example.org\" { fileinto :copy \"Lists\"; }\n",
        "hello",
        "",
        "bob@example.org",
    ),
    (
        "require [\"reject\"];\nif size :over 10 { reject \"too big for me\"; }\n",
        "anything",
        "",
        "bob@example.org",
    ),
    (
        "if header :is \"subject\" \"spam\" { discard; }\n",
        "spam",
        "",
        "bob@example.org",
    ),
    (
        "if exists \"x-forward\" { redirect \"elsewhere@example.net\"; }\n",
        "fwd me",
        "X-Forward: yes\r\n",
        "bob@example.org",
    ),
    (
        "require \"copy\";\nredirect :copy \"archive@example.net\";\n",
        "keep and copy",
        "",
        "bob@example.org",
    ),
    (
        "require \"vacation\";\nvacation :days 1 :subject \"Out\" \"I am out.\";\n",
        "hi there",
        "",
        "carl@example.org",
    ),
    (
        "require \"vacation\";\nvacation :days 1 \"I am out.\";\n",
        "list mail",
        "List-Id: <news.example.org>\r\n",
        "news-bounces@example.org",
    ),
    (
        "require [\"fileinto\", \"variables\"];\nif header :matches \"subject\" \"[*] *\" { fileinto \"${1}\"; }\n",
        "[Lists] topic",
        "",
        "bob@example.org",
    ),
    (
        "require [\"fileinto\", \"body\"];\nif body :contains \"invoice\" { fileinto \"Work\"; } else { keep; }\n",
        "see attached",
        "",
        "bob@example.org",
    ),
    (
        "require [\"fileinto\", \"relational\", \"comparator-i;ascii-numeric\"];\nif header :count \"ge\" :comparator \"i;ascii-numeric\" \"received\" \"2\" { fileinto \"Lists\"; }\n",
        "hops",
        "Received: from a\r\nReceived: from b\r\n",
        "bob@example.org",
    ),
    (
        "require [\"envelope\", \"fileinto\", \"imap4flags\"];\nif envelope :localpart :is \"from\" \"boss\" { setflag \"\\\\Flagged\"; keep; stop; }\nfileinto \"Lists\";\n",
        "from the boss",
        "",
        "boss@example.org",
    ),
    (
        "require \"fileinto\";\nfileinto \"INBOX\";\nkeep;\nfileinto \"Work\";\nfileinto \"Work\";\n",
        "named twice",
        "",
        "bob@example.org",
    ),
    (
        "require [\"fileinto\"];\nif anyof (header :contains \"subject\" \"a1\", not exists \"x-nope\") { fileinto \"Lists\"; fileinto \"Work\"; }\n",
        "two folders",
        "",
        "bob@example.org",
    ),
];

fn message(rcpt: &str, from: &str, subject: &str, extra: &str, n: usize) -> String {
    format!(
        "{extra}From: {from}\r\nTo: {rcpt}\r\nSubject: {subject}\r\nMessage-ID: <case{n}@diff>\r\nDate: Mon, 7 Dec 2026 10:00:00 +0000\r\n\r\nPlease see the invoice.\r\n"
    )
}

/// Pigeonhole's actions, normalized.
fn pigeonhole(dir: &Path, script: &str, msg: &str, from: &str, rcpt: &str) -> Vec<String> {
    std::fs::write(dir.join("s.sieve"), script).unwrap();
    std::fs::write(dir.join("m.eml"), msg).unwrap();
    let mut c = Command::new("sieve-test");
    c.current_dir(dir)
        .env("HOME", dir)
        .args(["-c", "d.conf", "-f", from, "-r", rcpt, "s.sieve", "m.eml"]);
    let out = run_bounded(c, None, Duration::from_secs(60));
    let report = text(&out.stdout) + &text(&out.stderr);
    assert!(out.status.success(), "sieve-test failed: {report}");
    let mut actions = Vec::new();
    let mut last_store: Option<String> = None;
    let mut discard = false;
    for line in report.lines() {
        let l = line.trim();
        if let Some(folder) = l.strip_prefix("* store message in folder: ") {
            if let Some(prev) = last_store.take() {
                actions.push(prev);
            }
            last_store = Some(format!("store {folder} []"));
        } else if let Some(flags) = l.strip_prefix("+ add IMAP flags: ") {
            if let Some(prev) = last_store.take() {
                let mut f: Vec<String> = flags.split_whitespace().map(str::to_lowercase).collect();
                f.sort();
                let folder = prev.trim_start_matches("store ").trim_end_matches(" []");
                last_store = Some(format!("store {folder} [{}]", f.join(" ")));
            }
        } else if let Some(to) = l.strip_prefix("* redirect message to: ") {
            actions.push(format!("redirect {}", to.trim_matches(['<', '>'])));
        } else if l.starts_with("* send vacation message") {
            actions.push(format!("vacation {from}"));
        } else if l.starts_with("* reject message") {
            actions.push("reject".into());
        } else if l == "* discard" {
            discard = true;
        }
    }
    if let Some(prev) = last_store {
        actions.push(prev);
    }
    // Pigeonhole decides "never answer a mailing list" (RFC 5230 §5.1)
    // when it commits the vacation action, which sieve-test does not run:
    // it lists the reply anyway. The delivery would not send it.
    if msg.contains("\r\nList-Id:") || msg.starts_with("List-Id:") {
        actions.retain(|a| !a.starts_with("vacation "));
    }
    if discard && actions.is_empty() {
        actions.push("discard".into());
    }
    actions.sort();
    actions
}

/// cove's actions for the same case, read back from what happened.
fn cove(
    server: &TestServer,
    sink: &SmtpSink,
    n: usize,
    script: &str,
    msg: &str,
    from: &str,
    rcpt: &str,
) -> Vec<String> {
    server.add_user_with_password(rcpt, PASSWORD);
    let mut imap = server.imap_login(rcpt, PASSWORD);
    for folder in ["Work", "Lists"] {
        imap.cmd_ok(&format!("C1 CREATE {folder}"));
    }
    let file = server.data_dir().join(format!("case{n}.sieve"));
    std::fs::write(&file, script).unwrap();
    server.cli_ok(&[
        "sieve",
        "put",
        rcpt,
        "case",
        file.to_str().unwrap(),
        "--activate",
    ]);
    let sent_before = sink.messages().len();
    let mut lmtp = server.lmtp_ready();
    let d = lmtp.deliver(from, &[rcpt], msg);
    let mut actions = Vec::new();
    if d.results[0].is("550 5.7.1") {
        actions.push("reject".to_string());
    } else {
        assert!(d.results[0].is("250"), "{d:?}");
    }
    for folder in ["INBOX", "Work", "Lists"] {
        imap.cmd_ok(&format!("S1 EXAMINE {folder}"));
        for line in imap.cmd_ok("F1 UID FETCH 1:* (FLAGS)") {
            let Some(flags) = line
                .strip_prefix("* ")
                .and_then(|l| l.split_once("FLAGS ("))
                .map(|(_, f)| f.trim_end_matches("))").trim_end_matches(')'))
            else {
                continue;
            };
            let mut f: Vec<String> = flags
                .split_whitespace()
                .filter(|f| *f != "\\Recent")
                .map(str::to_lowercase)
                .collect();
            f.sort();
            actions.push(format!("store {folder} [{}]", f.join(" ")));
        }
    }
    for m in &sink.messages()[sent_before..] {
        if m.from.is_empty() {
            actions.push(format!("vacation {}", m.to.join(",")));
        } else {
            actions.push(format!("redirect {}", m.to.join(",")));
        }
    }
    if actions.is_empty() {
        actions.push("discard".into());
    }
    actions.sort();
    actions
}

#[test]
fn cove_and_pigeonhole_take_the_same_actions() {
    let have = Command::new("sieve-test").arg("-h").output().is_ok();
    if !have {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "sieve-test not installed (Debian package dovecot-sieve), and CI=true: .ci/run must install it"
        );
        eprintln!("skipped: sieve-test not installed (Debian package dovecot-sieve)");
        return;
    }
    // sieve-test wants a mail location and an unprivileged user to run as.
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    for d in ["md/cur", "md/new", "md/tmp"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    for p in ["", "md", "md/cur", "md/new", "md/tmp"] {
        std::fs::set_permissions(dir.path().join(p), std::fs::Permissions::from_mode(0o777))
            .unwrap();
    }
    // As root it drops to nobody; as anyone else it stays who it is.
    let probe = dir.path().join("uid-probe");
    std::fs::write(&probe, b"").unwrap();
    let (uid, gid) = {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&probe).unwrap();
        (m.uid(), m.gid())
    };
    let who = if uid == 0 {
        "mail_uid = nobody\nmail_gid = nogroup\n".to_string()
    } else {
        format!("mail_uid = {uid}\nmail_gid = {gid}\nfirst_valid_uid = 1\nfirst_valid_gid = 1\n")
    };
    std::fs::write(
        dir.path().join("d.conf"),
        format!("{who}mail_location = maildir:{}/md\n", dir.path().display()),
    )
    .unwrap();
    let sink = SmtpSink::start();
    let server = TestServer::start(&format!(
        "{IMAP_CONFIG}\n[sieve]\nrelay = \"{}\"\n",
        sink.addr()
    ));
    let mut differ = Vec::new();
    for (n, (script, subject, extra, from)) in CASES.iter().enumerate() {
        let rcpt = format!("user{n}@x.org");
        let msg = message(&rcpt, from, subject, extra, n);
        let theirs = pigeonhole(dir.path(), script, &msg, from, &rcpt);
        let ours = cove(&server, &sink, n, script, &msg, from, &rcpt);
        if theirs != ours {
            differ.push(format!(
                "case {n}:\n{script}  pigeonhole: {theirs:?}\n  cove:       {ours:?}"
            ));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}
