//! New mail is parsed in the background right after it arrives (the
//! store's indexer, `[server] index_new_mail`): its IMAP views and POP3
//! size are cached and its text is in the full-text index before anyone
//! asks, and an expunged message's text leaves the index. Seen through
//! `/metrics` (`cove_indexer_contents_total`); the answers of SEARCH stay
//! exactly those of reading every message.

use std::time::Duration;

use cove_tests::{IMAP_CONFIG, TestServer, assert_lines, eventually, message};

const USER: &str = "a@x.org";
const PASS: &str = "pw";

/// The value of `cove_indexer_contents_total{event="<event>"}`.
fn indexer_count(s: &TestServer, event: &str) -> u64 {
    let (status, body) = s.http("GET", "/metrics");
    assert_eq!(status, 200);
    let series = format!("cove_indexer_contents_total{{event=\"{event}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{body}"))
}

#[track_caller]
fn wait_for_count(s: &TestServer, event: &str, want: u64) {
    let got = eventually(Duration::from_secs(30), || {
        (indexer_count(s, event) >= want).then_some(())
    });
    assert!(
        got.is_some(),
        "{event}: {} of {want} after 30 s",
        indexer_count(s, event)
    );
}

#[test]
fn delivered_mail_is_indexed_without_a_request_and_expunged_mail_leaves_the_index() {
    let s = TestServer::start(&format!(
        "{IMAP_CONFIG}\n[http]\nlisten = [\"127.0.0.1:0\"]\n"
    ));
    s.add_user_with_password(USER, PASS);
    assert_eq!(indexer_count(&s, "indexed"), 0);
    s.deliver_to(USER, &message("a", "a kumquat tart"));
    // Nobody has searched, fetched or listed anything: the views are made,
    // and no full-text index for a user who never searched bodies.
    wait_for_count(&s, "indexed", 1);
    assert!(!s.home(USER).join("fts.sqlite").exists());

    let mut c = s.imap_login(USER, PASS);
    c.cmd_ok("x SELECT INBOX");
    assert_lines(
        &c.cmd("s UID SEARCH BODY kumquat"),
        &["* SEARCH 1", "s OK SEARCH completed"],
    );
    // Now that the user has an index, new mail goes into it on arrival.
    s.deliver_to(USER, &message("b", "marzipan, again"));
    wait_for_count(&s, "indexed", 2);
    assert_eq!(indexer_count(&s, "forgotten"), 0);
    c.cmd_ok("n NOOP");
    c.cmd_ok("f UID STORE 1 +FLAGS.SILENT (\\Deleted)");
    c.cmd_ok("e EXPUNGE");
    wait_for_count(&s, "forgotten", 1);
    assert_lines(
        &c.cmd("s UID SEARCH BODY kumquat"),
        &["* SEARCH", "s OK SEARCH completed"],
    );
    assert_lines(
        &c.cmd("s UID SEARCH BODY marzipan"),
        &["* SEARCH 2", "s OK SEARCH completed"],
    );
}

#[test]
fn with_fulltext_new_mail_every_users_mail_is_in_the_index_before_a_search() {
    let s = TestServer::start(&format!(
        "{IMAP_CONFIG}\n[http]\nlisten = [\"127.0.0.1:0\"]\n[server]\nfulltext_new_mail = true\n"
    ));
    s.add_user_with_password(USER, PASS);
    s.deliver_to(USER, &message("a", "a kumquat tart"));
    wait_for_count(&s, "indexed", 1);
    assert!(s.home(USER).join("fts.sqlite").exists());
}
