//! Sieve at LMTP delivery, end to end: scripts put with `cove sieve put`,
//! messages delivered over LMTP, the result checked over IMAP (folders,
//! flags, keywords) and at a test SMTP sink (vacation, redirect).

use cove_tests::smtp_sink::SmtpSink;
use cove_tests::{IMAP_CONFIG, Imap, TestServer};
use std::net::TcpStream;

const PASSWORD: &str = "pw-sieve-1";

/// A server with IMAP and `[sieve]` (relay to `sink`, extra keys).
fn server(sink: Option<&SmtpSink>, extra: &str) -> TestServer {
    let relay = sink
        .map(|s| format!("relay = \"{}\"\n", s.addr()))
        .unwrap_or_default();
    TestServer::start(&format!(
        "{IMAP_CONFIG}\n[sieve]\nmin_vacation_period_secs = 1\n{relay}{extra}\n"
    ))
}

fn put_script(server: &TestServer, user: &str, name: &str, script: &str) {
    let file = server.data_dir().join(format!("{name}.sieve.in"));
    std::fs::write(&file, script).unwrap();
    server.cli_ok(&[
        "sieve",
        "put",
        user,
        name,
        file.to_str().unwrap(),
        "--activate",
    ]);
}

fn mail(from: &str, to: &str, subject: &str, extra_headers: &str, body: &str) -> String {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: Mon, 7 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{}@test>\r\n{extra_headers}\r\n{body}\r\n",
        subject.replace(' ', "-")
    )
}

fn deliver(server: &TestServer, from: &str, rcpt: &str, msg: &str) -> String {
    let mut lmtp = server.lmtp_ready();
    let d = lmtp.deliver(from, &[rcpt], msg);
    assert_eq!(d.results.len(), 1, "{d:?}");
    d.results[0].first().to_string()
}

/// `FLAGS` of every message in `mailbox`, as the server shows them.
fn flags_in(imap: &mut Imap<TcpStream>, mailbox: &str) -> Vec<String> {
    imap.cmd_ok(&format!("S1 EXAMINE \"{mailbox}\""));
    imap.cmd_ok("F1 FETCH 1:* (FLAGS)")
        .into_iter()
        .filter(|l| l.starts_with("* ") && l.contains("FETCH"))
        .collect()
}

fn count_in(imap: &mut Imap<TcpStream>, mailbox: &str) -> usize {
    let r = imap.cmd(&format!("T1 STATUS \"{mailbox}\" (MESSAGES)"));
    if !r.last().is_some_and(|l| l.starts_with("T1 OK")) {
        return 0;
    }
    r.iter()
        .find_map(|l| l.split("MESSAGES ").nth(1))
        .and_then(|n| n.trim_end_matches(')').trim().parse().ok())
        .unwrap_or(0)
}

const SORTING: &str = r#"require ["fileinto", "envelope", "imap4flags", "subaddress", "copy",
  "mailbox", "body", "relational", "comparator-i;ascii-numeric", "variables",
  "date", "index", "encoded-character"];
# subaddress + envelope: user+shop@ files into Shopping, created on demand
if envelope :detail "to" "shop" { fileinto :create "Shopping"; stop; }
# encoded-character: "BOSS"
if header :contains "subject" "${hex:42 4f 53 53}" {
  addflag "\\Flagged"; addflag "$boss"; keep; stop;
}
# body + copy: a copy in Lists, and the implicit keep stays
if body :text :contains "unsubscribe" { fileinto :copy :create "Lists"; }
# relational with a numeric comparator, fileinto :flags
if header :value "ge" :comparator "i;ascii-numeric" "X-Priority" "4" {
  fileinto :flags ["\\Seen", "low"] :create "Low"; stop;
}
# date + index: the second Received field names relay2
if allof (header :index 2 :contains "received" "relay2",
          date :value "ge" "date" "year" "2026") {
  fileinto :create "Relayed"; stop;
}
# variables + mailbox: a folder named from the subject, only if it exists
if header :matches "subject" "project *" {
  set :lower "p" "${1}";
  if mailboxexists "${p}" { fileinto "${p}"; stop; }
}
"#;

#[test]
fn extensions_file_and_flag_as_the_script_says() {
    let server = server(None, "");
    server.add_user_with_password("alice@x.org", PASSWORD);
    put_script(&server, "alice@x.org", "sorting", SORTING);
    let mut imap = server.imap_login("alice@x.org", PASSWORD);
    imap.cmd_ok("C1 CREATE apollo");

    let f = "bob@example.org";
    let to = "alice@x.org";
    assert!(
        deliver(
            &server,
            f,
            "alice+shop@x.org",
            &mail(f, to, "order 1", "", "hi")
        )
        .starts_with("250")
    );
    assert!(deliver(&server, f, to, &mail(f, to, "the BOSS says", "", "hi")).starts_with("250"));
    assert!(
        deliver(
            &server,
            f,
            to,
            &mail(f, to, "news", "", "to unsubscribe click")
        )
        .starts_with("250")
    );
    assert!(
        deliver(
            &server,
            f,
            to,
            &mail(f, to, "meh", "X-Priority: 5\r\n", "hi")
        )
        .starts_with("250")
    );
    let received = "Received: from relay1 by x\r\nReceived: from relay2 by y\r\n";
    assert!(deliver(&server, f, to, &mail(f, to, "hops", received, "hi")).starts_with("250"));
    assert!(deliver(&server, f, to, &mail(f, to, "project Apollo", "", "hi")).starts_with("250"));
    assert!(deliver(&server, f, to, &mail(f, to, "project Gemini", "", "hi")).starts_with("250"));

    assert_eq!(count_in(&mut imap, "Shopping"), 1);
    assert_eq!(count_in(&mut imap, "Lists"), 1);
    assert_eq!(count_in(&mut imap, "Relayed"), 1);
    assert_eq!(count_in(&mut imap, "apollo"), 1);
    // BOSS, news (copy kept), project Gemini (no such folder).
    assert_eq!(count_in(&mut imap, "INBOX"), 3);
    let inbox = flags_in(&mut imap, "INBOX");
    assert!(
        inbox
            .iter()
            .any(|l| l.contains("\\Flagged") && l.contains("$boss")),
        "{inbox:?}"
    );
    let low = flags_in(&mut imap, "Low");
    assert_eq!(low.len(), 1, "{low:?}");
    assert!(
        low[0].contains("\\Seen") && low[0].contains("low"),
        "{low:?}"
    );
    // Content is stored once: the Lists copy and the INBOX copy share a blob.
    let lists = server.maildir_files("alice@x.org", "Lists");
    use std::os::unix::fs::MetadataExt;
    assert!(std::fs::metadata(&lists[0]).unwrap().nlink() >= 3);
}

#[test]
fn reject_discard_and_a_global_before_script() {
    let dir = tempfile::tempdir().unwrap();
    let before = dir.path().join("spam.sieve");
    std::fs::write(
        &before,
        "require [\"fileinto\", \"mailbox\"];\nif header :contains \"X-Spam\" \"yes\" { fileinto :create \"Junk\"; stop; }\n",
    )
    .unwrap();
    let server = server(
        None,
        &format!("before = [{:?}]\n", before.display().to_string()),
    );
    server.add_user_with_password("carol@x.org", PASSWORD);
    put_script(
        &server,
        "carol@x.org",
        "rules",
        "require [\"reject\", \"ereject\"];\n\
         if header :contains \"subject\" \"junkmail\" { discard; stop; }\n\
         if header :contains \"subject\" \"go away\" { reject \"Not here.\"; }\n",
    );
    let f = "bob@example.org";
    let to = "carol@x.org";
    let r = deliver(&server, f, to, &mail(f, to, "go away", "", "x"));
    assert!(r.starts_with("550 5.7.1") && r.contains("Not here."), "{r}");
    let r = deliver(&server, f, to, &mail(f, to, "junkmail", "", "x"));
    assert!(r.starts_with("250 2.0.0"), "{r}");
    let r = deliver(
        &server,
        f,
        to,
        &mail(f, to, "hello", "X-Spam: yes\r\n", "x"),
    );
    assert!(r.starts_with("250 2.0.0"), "{r}");
    // Global scripts run for users without a working script of their own
    // too: dave's active script (put behind cove's back) does not compile.
    server.add_user_with_password("dave@x.org", PASSWORD);
    let sieve_dir = server.home("dave@x.org").join("sieve");
    std::fs::create_dir_all(&sieve_dir).unwrap();
    std::fs::write(sieve_dir.join("bad.sieve"), "frobnicate;\n").unwrap();
    std::fs::write(sieve_dir.join("active"), "bad").unwrap();
    let r = deliver(
        &server,
        f,
        "dave@x.org",
        &mail(f, "dave@x.org", "hello", "X-Spam: yes\r\n", "x"),
    );
    assert!(r.starts_with("250 2.0.0"), "{r}");
    let mut imap = server.imap_login("carol@x.org", PASSWORD);
    assert_eq!(count_in(&mut imap, "INBOX"), 0);
    assert_eq!(count_in(&mut imap, "Junk"), 1);
    let mut imap = server.imap_login("dave@x.org", PASSWORD);
    assert_eq!(count_in(&mut imap, "Junk"), 1);
    assert_eq!(count_in(&mut imap, "INBOX"), 0);
}

/// A script that fails at run time, loops through includes, or files
/// into a mailbox that cannot be created: the message lands in INBOX.
#[test]
fn broken_scripts_still_deliver_to_inbox() {
    let server = server(None, "cpu_limit = 100\n");
    server.add_user_with_password("erin@x.org", PASSWORD);
    let cases = [
        (
            "uncreatable",
            "require [\"fileinto\", \"mailbox\"];\nfileinto :create \"bad..name\";\n",
        ),
        (
            "loop",
            "require \"include\";\ninclude :personal \"loop\";\n",
        ),
        (
            "missing",
            "require \"include\";\ninclude :personal \"nowhere\";\n",
        ),
        (
            "cpu",
            &format!(
                "require \"fileinto\";\n{}fileinto \"Never\";\n",
                "if header :contains \"x-a\" \"b\" { discard; }\n".repeat(150)
            ),
        ),
    ];
    for (i, (name, script)) in cases.iter().enumerate() {
        put_script(&server, "erin@x.org", name, script);
        let r = deliver(
            &server,
            "bob@example.org",
            "erin@x.org",
            &mail("bob@example.org", "erin@x.org", name, "", "x"),
        );
        assert!(r.starts_with("250 2.0.0"), "{name}: {r}");
        let mut imap = server.imap_login("erin@x.org", PASSWORD);
        assert_eq!(count_in(&mut imap, "INBOX"), i + 1, "{name}");
    }
    assert!(server.logged("cannot create the mailbox; delivering to INBOX"));
    assert!(server.logged("sieve failed; delivering to INBOX"));
}

#[test]
fn vacation_answers_once_and_never_lists_bulk_or_self() {
    let sink = SmtpSink::start();
    let server = server(Some(&sink), "");
    server.add_user_with_password("frank@x.org", PASSWORD);
    put_script(
        &server,
        "frank@x.org",
        "away",
        "require [\"vacation\", \"vacation-seconds\"];\n\
         vacation :seconds 3600 :subject \"Away\" \"I am away until Monday.\";\n",
    );
    let to = "frank@x.org";
    let bob = "bob@example.org";
    assert!(deliver(&server, bob, to, &mail(bob, to, "one", "", "x")).starts_with("250"));
    let got = sink.wait_for(1);
    assert_eq!(
        got[0].from, "",
        "auto-replies go out with an empty return path"
    );
    assert_eq!(got[0].to, vec![bob.to_string()]);
    assert!(
        got[0].data.contains("Auto-Submitted: auto-replied"),
        "{}",
        got[0].data
    );
    assert!(got[0].data.contains("I am away until Monday."));
    // Not again within :seconds, nor to lists, bulk, auto-submitted mail,
    // the user's own address or an empty return path.
    assert!(deliver(&server, bob, to, &mail(bob, to, "two", "", "x")).starts_with("250"));
    let carl = "carl@example.org";
    for (from, headers) in [
        (carl, "List-Id: <list.example.org>\r\n"),
        (carl, "Precedence: bulk\r\n"),
        (carl, "Auto-Submitted: auto-generated\r\n"),
        (to, ""),
        ("", ""),
    ] {
        let sender = if from.is_empty() { carl } else { from };
        let r = deliver(&server, from, to, &mail(sender, to, "x", headers, "x"));
        assert!(r.starts_with("250"), "{r}");
    }
    // One more from a new sender is answered: the sink has seen everything
    // before it.
    let dora = "dora@example.org";
    assert!(deliver(&server, dora, to, &mail(dora, to, "three", "", "x")).starts_with("250"));
    let got = sink.wait_for(2);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1].to, vec![dora.to_string()]);
    let mut imap = server.imap_login("frank@x.org", PASSWORD);
    assert_eq!(count_in(&mut imap, "INBOX"), 8);
}

#[test]
fn redirect_goes_to_the_relay_with_the_original_sender() {
    let sink = SmtpSink::start();
    let server = server(Some(&sink), "max_redirects_per_day = 2\n");
    server.add_user_with_password("gina@x.org", PASSWORD);
    put_script(
        &server,
        "gina@x.org",
        "fwd",
        "require [\"copy\"];\n\
         if header :contains \"subject\" \"copy\" { redirect :copy \"archive@example.net\"; }\n\
         else { redirect \"gina@example.net\"; }\n",
    );
    let to = "gina@x.org";
    let bob = "bob@example.org";
    assert!(deliver(&server, bob, to, &mail(bob, to, "moved", "", "x")).starts_with("250"));
    assert!(deliver(&server, bob, to, &mail(bob, to, "copy", "", "x")).starts_with("250"));
    let got = sink.wait_for(2);
    assert_eq!(got[0].from, bob);
    assert_eq!(got[0].to, vec!["gina@example.net".to_string()]);
    assert!(got[0].data.contains("Subject: moved"));
    assert_eq!(got[1].to, vec!["archive@example.net".to_string()]);
    // Over the day's limit: not sent, kept instead.
    assert!(deliver(&server, bob, to, &mail(bob, to, "third", "", "x")).starts_with("250"));
    let mut imap = server.imap_login("gina@x.org", PASSWORD);
    // "copy" (kept by :copy) and "third" (over the limit, kept).
    assert_eq!(count_in(&mut imap, "INBOX"), 2);
    assert_eq!(sink.messages().len(), 2);
    assert!(server.logged("over the day's limit"));
}

#[test]
fn notify_mailto_goes_to_the_relay_and_the_message_is_kept() {
    let sink = SmtpSink::start();
    let server = server(Some(&sink), "");
    server.add_user_with_password("kim@x.org", PASSWORD);
    put_script(
        &server,
        "kim@x.org",
        "alert",
        "require \"enotify\";\n\
         if header :contains \"subject\" \"urgent\" { notify :message \"Urgent mail\" \"mailto:pager@example.net\"; }\n",
    );
    let to = "kim@x.org";
    let bob = "bob@example.org";
    assert!(deliver(&server, bob, to, &mail(bob, to, "urgent: call", "", "x")).starts_with("250"));
    let got = sink.wait_for(1);
    assert_eq!(got[0].from, "", "RFC 5436: an empty return path");
    assert_eq!(got[0].to, vec!["pager@example.net".to_string()]);
    assert!(
        got[0].data.contains("Auto-Submitted: auto-notified"),
        "{}",
        got[0].data
    );
    // Never for auto-submitted mail.
    let headers = "Auto-Submitted: auto-generated\r\n";
    assert!(
        deliver(
            &server,
            bob,
            to,
            &mail(bob, to, "urgent again", headers, "x")
        )
        .starts_with("250")
    );
    let mut imap = server.imap_login("kim@x.org", PASSWORD);
    assert_eq!(count_in(&mut imap, "INBOX"), 2);
    assert_eq!(sink.messages().len(), 1);
}

/// editheader (RFC 5293): the copy a script changed is stored changed, as
/// a content of its own; an unchanged copy to another user keeps sharing
/// the delivery's one blob.
#[test]
fn editheader_changes_are_stored() {
    let server = server(None, "");
    server.add_user_with_password("lee@x.org", PASSWORD);
    server.add_user_with_password("max@x.org", PASSWORD);
    put_script(
        &server,
        "lee@x.org",
        "tag",
        "require [\"editheader\", \"fileinto\", \"mailbox\"];\n\
         addheader \"X-Filtered\" \"by cove\";\n\
         deleteheader \"X-Secret\";\n\
         fileinto :create \"Tagged\";\n",
    );
    let msg = mail(
        "bob@example.org",
        "lee@x.org",
        "tag me",
        "X-Secret: s3cret\r\n",
        "body",
    );
    let mut lmtp = server.lmtp_ready();
    let d = lmtp.deliver("bob@example.org", &["lee@x.org", "max@x.org"], &msg);
    assert!(d.results.iter().all(|r| r.is("250")), "{d:?}");
    let tagged = server.maildir_files("lee@x.org", "Tagged");
    assert_eq!(tagged.len(), 1);
    let stored = String::from_utf8_lossy(&std::fs::read(&tagged[0]).unwrap()).into_owned();
    assert!(stored.contains("X-Filtered: by cove"), "{stored}");
    assert!(!stored.contains("s3cret"), "{stored}");
    assert!(
        stored.contains("Subject: tag me") && stored.ends_with("body\r\n"),
        "{stored}"
    );
    let plain = server.maildir_files("max@x.org", "INBOX");
    let plain_text = String::from_utf8_lossy(&std::fs::read(&plain[0]).unwrap()).into_owned();
    assert!(plain_text.contains("X-Secret: s3cret") && !plain_text.contains("X-Filtered"));
}

#[test]
fn duplicate_files_the_second_copy_away() {
    let server = server(None, "");
    server.add_user_with_password("hank@x.org", PASSWORD);
    put_script(
        &server,
        "hank@x.org",
        "dups",
        "require [\"duplicate\", \"fileinto\", \"mailbox\"];\n\
         if duplicate { fileinto :create \"Dups\"; }\n",
    );
    let to = "hank@x.org";
    let bob = "bob@example.org";
    let m = mail(bob, to, "same", "", "x");
    assert!(deliver(&server, bob, to, &m).starts_with("250"));
    assert!(deliver(&server, bob, to, &m).starts_with("250"));
    let mut imap = server.imap_login("hank@x.org", PASSWORD);
    assert_eq!(count_in(&mut imap, "INBOX"), 1);
    assert_eq!(count_in(&mut imap, "Dups"), 1);
}

#[test]
fn cli_lists_gets_and_refuses_a_broken_script() {
    let server = server(None, "");
    server.add_user_with_password("ivy@x.org", PASSWORD);
    put_script(&server, "ivy@x.org", "a", "keep;\n");
    let listed = server.cli_ok(&["sieve", "list", "ivy@x.org"]);
    assert!(listed.contains("a (active)"), "{listed}");
    assert_eq!(
        server.cli_ok(&["sieve", "get", "ivy@x.org", "a"]),
        "keep;\n"
    );
    let bad = server.data_dir().join("bad.sieve.in");
    std::fs::write(&bad, "keep;\nfrobnicate;\n").unwrap();
    let out = server.cli(&["sieve", "put", "ivy@x.org", "b", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2"), "{err}");
    server.cli_ok(&["sieve", "activate", "ivy@x.org", "--none"]);
    let listed = server.cli_ok(&["sieve", "list", "ivy@x.org"]);
    assert!(!listed.contains("active"), "{listed}");
}

/// `cove import maildir` brings a Dovecot user's Pigeonhole scripts and
/// the active link; a script cove cannot compile is reported, not stored.
#[test]
fn import_maildir_takes_pigeonhole_scripts_and_the_active_link() {
    let server = server(None, "");
    let home = tempfile::tempdir().unwrap();
    for d in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(home.path().join("Maildir").join(d)).unwrap();
    }
    let sieve = home.path().join("sieve");
    std::fs::create_dir_all(&sieve).unwrap();
    std::fs::write(
        sieve.join("work.sieve"),
        "require \"fileinto\";\nif header :contains \"subject\" \"report\" { fileinto \"Reports\"; }\n",
    )
    .unwrap();
    std::fs::write(sieve.join("old.sieve"), "keep;\n").unwrap();
    std::fs::write(sieve.join("broken.sieve"), "keep;\nnotacommand;\n").unwrap();
    std::os::unix::fs::symlink("sieve/work.sieve", home.path().join(".dovecot.sieve")).unwrap();
    let out = server.cli_ok(&[
        "import",
        "maildir",
        "--user",
        "jo@x.org",
        home.path().to_str().unwrap(),
        "--create-users",
    ]);
    assert!(out.contains("2 imported, work active"), "{out}");
    assert!(
        out.contains("LEFT OUT: broken (does not compile: line 2"),
        "{out}"
    );
    let listed = server.cli_ok(&["sieve", "list", "jo@x.org"]);
    assert_eq!(listed, "old\nwork (active)\n");
}
