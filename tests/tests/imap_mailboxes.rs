//! IMAP mailbox commands (RFC 3501 §6.3): SELECT, EXAMINE, CREATE, DELETE,
//! RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST, LSUB, STATUS and APPEND, with
//! RFC 3348 CHILDREN, RFC 6154 SPECIAL-USE, RFC 4315 UIDPLUS (APPENDUID),
//! RFC 7888 LITERAL+ and RFC 7889 APPENDLIMIT.
//!
//! Transcripts: each client line and the exact server lines (`{num}` stands
//! for a number that differs between runs, such as UIDVALIDITY). A new
//! account has INBOX, Archive, Drafts, Junk, Sent and Trash.

use std::net::TcpStream;

use cove_tests::{
    IMAP_CONFIG, Imap, TestServer, assert_lines, assert_lines_unordered, code_value, message,
};

const USER: &str = "a@x.org";
const PASS: &str = "pw";

fn server() -> TestServer {
    let s = TestServer::start(&format!("{IMAP_CONFIG}max_literal_size = 1000\n"));
    s.add_user_with_password(USER, PASS);
    s
}

fn login(s: &TestServer) -> Imap<TcpStream> {
    s.imap_login(USER, PASS)
}

/// The UIDVALIDITY STATUS reports for a mailbox.
fn uidvalidity(c: &mut Imap<TcpStream>, mailbox: &str) -> String {
    let r = c.cmd_ok(&format!("uv STATUS {mailbox} (UIDVALIDITY)"));
    let line = &r[0];
    let at = line.find("(UIDVALIDITY ").expect("UIDVALIDITY in STATUS") + 13;
    line[at..line.len() - 1].to_string()
}

/// The default mailboxes as LIST "" * shows them on a new account.
const DEFAULT_LIST: [&str; 6] = [
    "* LIST (\\HasNoChildren \\Archive) \".\" Archive",
    "* LIST (\\HasNoChildren \\Drafts) \".\" Drafts",
    "* LIST (\\HasNoChildren) \".\" INBOX",
    "* LIST (\\HasNoChildren \\Junk) \".\" Junk",
    "* LIST (\\HasNoChildren \\Sent) \".\" Sent",
    "* LIST (\\HasNoChildren \\Trash) \".\" Trash",
];

// RFC 3501 §6.3.1 SELECT: FLAGS, PERMANENTFLAGS, EXISTS, RECENT, UNSEEN,
// UIDVALIDITY and UIDNEXT, then OK [READ-WRITE]. FLAGS lists the keywords
// in use; PERMANENTFLAGS adds \* (new keywords may be created).
#[test]
fn select_responses() {
    let s = server();
    s.deliver_to(USER, &message("one", "first"));
    s.deliver_to(USER, &message("two", "second"));
    let mut c = login(&s);
    let got = c.cmd("a1 SELECT INBOX");
    assert_lines(
        &got,
        &[
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
            "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted",
            "* 2 EXISTS",
            "* 2 RECENT",
            "* OK [UNSEEN 1] First unseen",
            "* OK [UIDVALIDITY {num}] UIDs valid",
            "* OK [UIDNEXT 3] Predicted next UID",
            "* OK [MAILBOXID (F{any})] Ok",
            "a1 OK [READ-WRITE] SELECT completed",
        ],
    );
    let validity = code_value(&got[5], "UIDVALIDITY").unwrap();
    assert_eq!(uidvalidity(&mut c, "INBOX"), validity);
    c.cmd_ok("a2 STORE 1 +FLAGS.SILENT (\\Seen $Work)");
    c.cmd_ok("a3 LOGOUT");

    // Another session: the keyword is in FLAGS and PERMANENTFLAGS, the
    // first unseen message is now 2, nothing is recent any more (the first
    // session was told), UIDVALIDITY has not changed.
    let mut c = login(&s);
    assert_lines(
        &c.cmd("b1 SELECT INBOX"),
        &[
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work)",
            "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work \\*)] Flags permitted",
            "* 2 EXISTS",
            "* 0 RECENT",
            "* OK [UNSEEN 2] First unseen",
            &format!("* OK [UIDVALIDITY {validity}] UIDs valid"),
            "* OK [UIDNEXT 3] Predicted next UID",
            "* OK [MAILBOXID (F{any})] Ok",
            "b1 OK [READ-WRITE] SELECT completed",
        ],
    );
    // An empty mailbox: no UNSEEN line, UIDNEXT 1.
    assert_lines(
        &c.cmd("b2 SELECT Trash"),
        &[
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
            "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted",
            "* 0 EXISTS",
            "* 0 RECENT",
            "* OK [UIDVALIDITY {num}] UIDs valid",
            "* OK [UIDNEXT 1] Predicted next UID",
            "* OK [MAILBOXID (F{any})] Ok",
            "b2 OK [READ-WRITE] SELECT completed",
        ],
    );
}

// RFC 3501 §6.3.2 EXAMINE "is identical to SELECT and returns the same
// output" with [READ-ONLY] and PERMANENTFLAGS (); it "MUST NOT cause
// messages to lose the \Recent flag" — so it reports them as recent
// (RECENT counts "messages with the \Recent flag set", §7.3.2) without
// taking the flag away from the next SELECT.
#[test]
fn examine_reports_recent_without_consuming_it() {
    let s = server();
    s.deliver_to(USER, &message("one", "first"));
    s.deliver_to(USER, &message("two", "second"));
    let mut c = login(&s);
    assert_lines(
        &c.cmd("a1 EXAMINE INBOX"),
        &[
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
            "* OK [PERMANENTFLAGS ()] Read-only mailbox",
            "* 2 EXISTS",
            "* 2 RECENT",
            "* OK [UNSEEN 1] First unseen",
            "* OK [UIDVALIDITY {num}] UIDs valid",
            "* OK [UIDNEXT 3] Predicted next UID",
            "* OK [MAILBOXID (F{any})] Ok",
            "a1 OK [READ-ONLY] EXAMINE completed",
        ],
    );
    let mut d = login(&s);
    let got = d.cmd_ok("b1 SELECT INBOX");
    assert_eq!(got[3], "* 2 RECENT", "{got:?}");
}

// RFC 3501 §6.3.2: EXAMINE changes nothing: no \Seen from BODY[] (§6.4.5),
// STORE, EXPUNGE and MOVE refused, CLOSE expunges nothing (§6.4.2), and
// \Recent stays for the next SELECT.
#[test]
fn examine_changes_nothing() {
    let s = server();
    s.deliver_to(USER, &message("one", "first"));
    s.deliver_to(USER, &message("two", "second"));
    let mut c = login(&s);
    let got = c.cmd_ok("a1 EXAMINE INBOX");
    assert_eq!(got.last().unwrap(), "a1 OK [READ-ONLY] EXAMINE completed");
    assert_lines(
        &c.cmd("a2 FETCH 1 (BODY[TEXT])"),
        &[
            "* 1 FETCH (BODY[TEXT] {7}\r\nfirst\r\n)",
            "a2 OK FETCH completed",
        ],
    );
    assert_lines(
        &c.cmd("a3 STORE 1 +FLAGS (\\Deleted)"),
        &["a3 NO [READ-ONLY] Mailbox is read-only"],
    );
    assert_lines(
        &c.cmd("a4 EXPUNGE"),
        &["a4 NO [READ-ONLY] Mailbox is read-only"],
    );
    assert_lines(
        &c.cmd("a5 MOVE 1 Trash"),
        &["a5 NO [READ-ONLY] Mailbox is read-only"],
    );
    assert_lines(&c.cmd("a6 CLOSE"), &["a6 OK CLOSE completed"]);

    let mut d = login(&s);
    assert_lines(
        &d.cmd("b1 SELECT INBOX"),
        &[
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
            "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted",
            "* 2 EXISTS",
            "* 2 RECENT",
            "* OK [UNSEEN 1] First unseen",
            "* OK [UIDVALIDITY {num}] UIDs valid",
            "* OK [UIDNEXT 3] Predicted next UID",
            "* OK [MAILBOXID (F{any})] Ok",
            "b1 OK [READ-WRITE] SELECT completed",
        ],
    );
    assert_lines(
        &d.cmd("b2 FETCH 1:2 (FLAGS)"),
        &[
            "* 1 FETCH (FLAGS (\\Recent))",
            "* 2 FETCH (FLAGS (\\Recent))",
            "b2 OK FETCH completed",
        ],
    );
}

// RFC 3501 §6.3.1: "If the client is not permitted to modify the mailbox
// but is permitted read access, the mailbox is selected as read-only" — and
// a SELECT that fails leaves no mailbox selected: "any currently selected
// mailbox is deselected before attempting the new selection".
#[test]
fn failed_select_leaves_nothing_selected() {
    let s = server();
    s.deliver_to(USER, &message("one", "first"));
    let mut c = login(&s);
    c.cmd_ok("a1 SELECT INBOX");
    assert_lines(
        &c.cmd("a2 SELECT Nowhere"),
        &["a2 NO [NONEXISTENT] mailbox Nowhere does not exist"],
    );
    assert_lines(&c.cmd("a3 FETCH 1 FLAGS"), &["a3 BAD No mailbox selected"]);
    c.cmd_ok("a4 EXAMINE INBOX");
    assert_lines(
        &c.cmd("a5 EXAMINE Nowhere"),
        &["a5 NO [NONEXISTENT] mailbox Nowhere does not exist"],
    );
    assert_lines(&c.cmd("a6 CHECK"), &["a6 BAD No mailbox selected"]);
}

// RFC 3501 §6.3.3 CREATE: superior hierarchy names are created too; a
// trailing delimiter is dropped; an existing name and INBOX (any case) are
// NO (RFC 5530 ALREADYEXISTS).
#[test]
fn create() {
    let s = server();
    let mut c = login(&s);
    assert_lines(
        &c.cmd("a1 CREATE Work.Q1"),
        &["a1 OK [MAILBOXID (F{any})] CREATE completed"],
    );
    assert_lines_unordered(
        &c.cmd("a2 LIST \"\" Work*"),
        &[
            "* LIST (\\HasChildren) \".\" Work",
            "* LIST (\\HasNoChildren) \".\" Work.Q1",
            "a2 OK LIST completed",
        ],
    );
    assert_lines(
        &c.cmd("a3 CREATE Work"),
        &["a3 NO [ALREADYEXISTS] mailbox Work already exists"],
    );
    assert_lines(
        &c.cmd("a4 CREATE INBOX"),
        &["a4 NO [ALREADYEXISTS] INBOX always exists"],
    );
    assert_lines(
        &c.cmd("a5 CREATE inbox"),
        &["a5 NO [ALREADYEXISTS] INBOX always exists"],
    );
    assert_lines(
        &c.cmd("a6 CREATE Trailing."),
        &["a6 OK [MAILBOXID (F{any})] CREATE completed"],
    );
    assert_lines(
        &c.cmd("a7 LIST \"\" Trailing*"),
        &[
            "* LIST (\\HasNoChildren) \".\" Trailing",
            "a7 OK LIST completed",
        ],
    );
    assert_lines(
        &c.cmd("a8 CREATE \"My Box\""),
        &["a8 OK [MAILBOXID (F{any})] CREATE completed"],
    );
    assert_lines(
        &c.cmd("a9 LIST \"\" \"My*\""),
        &[
            "* LIST (\\HasNoChildren) \".\" \"My Box\"",
            "a9 OK LIST completed",
        ],
    );
    // The created superior is a real mailbox.
    c.cmd_ok("b1 SELECT Work");
    c.cmd_ok("b2 SELECT Work.Q1");
}

// RFC 3501 §6.3.4 DELETE: the mailbox goes; a missing one is NO; INBOX
// cannot be deleted.
#[test]
fn delete() {
    let s = server();
    let mut c = login(&s);
    c.cmd_ok("a1 CREATE Old");
    assert_lines(&c.cmd("a2 DELETE Old"), &["a2 OK DELETE completed"]);
    assert_lines(&c.cmd("a3 LIST \"\" Old"), &["a3 OK LIST completed"]);
    assert_lines(
        &c.cmd("a4 DELETE Old"),
        &["a4 NO [NONEXISTENT] mailbox Old does not exist"],
    );
    assert_lines(
        &c.cmd("a5 DELETE INBOX"),
        &["a5 NO [CANNOT] INBOX cannot be deleted"],
    );
    assert_lines(
        &c.cmd("a6 DELETE inbox"),
        &["a6 NO [CANNOT] INBOX cannot be deleted"],
    );
    assert_lines(
        &c.cmd("a7 SELECT Old"),
        &["a7 NO [NONEXISTENT] mailbox Old does not exist"],
    );
}

// RFC 3501 §6.3.4: "The DELETE command MUST NOT remove inferior
// hierarchical names" — and, as its example shows (A82..A86), the deleted
// parent then appears to "%" as \Noselect (§6.3.8: levels of hierarchy
// that are not selectable mailboxes are returned with \Noselect), but not
// to "*".
#[test]
fn delete_keeps_children_and_the_parent_becomes_noselect() {
    let s = server();
    let mut c = login(&s);
    c.cmd_ok("a1 CREATE P.C");
    assert_lines(&c.cmd("a2 DELETE P"), &["a2 OK DELETE completed"]);
    assert_lines(
        &c.cmd("a3 LIST \"\" P*"),
        &["* LIST (\\HasNoChildren) \".\" P.C", "a3 OK LIST completed"],
    );
    let mut want: Vec<&str> = DEFAULT_LIST.to_vec();
    want.push("* LIST (\\Noselect \\HasChildren) \".\" P");
    want.push("a4 OK LIST completed");
    assert_lines_unordered(&c.cmd("a4 LIST \"\" %"), &want);
    assert_lines(
        &c.cmd("a5 SELECT P"),
        &["a5 NO [NONEXISTENT] mailbox P does not exist"],
    );
    c.cmd_ok("a6 SELECT P.C");
}

// RFC 3501 §6.3.4: a mailbox created again after DELETE must not reuse the
// UIDs of the old one unless its UIDVALIDITY differs.
#[test]
fn recreated_mailbox_does_not_reuse_uids() {
    let s = server();
    let mut c = login(&s);
    c.cmd_ok("a1 CREATE Box");
    let before = c.cmd_ok("a2 STATUS Box (UIDVALIDITY)");
    let r = c.append("a3", "Box", "", b"Subject: x\r\n\r\nx\r\n");
    assert_lines(&r, &["a3 OK [APPENDUID {num} 1] APPEND completed"]);
    c.cmd_ok("a4 DELETE Box");
    c.cmd_ok("a5 CREATE Box");
    let after = c.cmd_ok("a6 STATUS Box (UIDVALIDITY UIDNEXT)");
    assert_lines(
        &after,
        &[
            "* STATUS Box (UIDVALIDITY {num} UIDNEXT {num})",
            "a6 OK STATUS completed",
        ],
    );
    let old = before[0]
        .trim_end_matches(')')
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    let fields: Vec<&str> = after[0].trim_end_matches(')').split(' ').collect();
    let (new_validity, uidnext) = (fields[4], fields[6]);
    assert!(
        new_validity != old || uidnext.parse::<u32>().unwrap() > 1,
        "UID 1 would be reused: {before:?} {after:?}"
    );
}

// RFC 3501 §6.3.5 RENAME: inferior names are renamed too; the messages,
// UIDVALIDITY and subscriptions go with them. A missing source is NO; an
// existing target is NO.
#[test]
fn rename_with_children() {
    let s = server();
    let mut c = login(&s);
    c.cmd_ok("a1 CREATE Work.Q1");
    c.cmd_ok("a2 SUBSCRIBE Work");
    c.cmd_ok("a3 SUBSCRIBE Work.Q1");
    let r = c.append("a4", "Work.Q1", "", b"Subject: q1\r\n\r\nq1\r\n");
    assert_lines(&r, &["a4 OK [APPENDUID {num} 1] APPEND completed"]);
    let validity = uidvalidity(&mut c, "Work.Q1");
    assert_lines(&c.cmd("a5 RENAME Work Play"), &["a5 OK RENAME completed"]);
    let mut want: Vec<&str> = DEFAULT_LIST.to_vec();
    want.push("* LIST (\\HasChildren) \".\" Play");
    want.push("* LIST (\\HasNoChildren) \".\" Play.Q1");
    want.push("a6 OK LIST completed");
    assert_lines_unordered(&c.cmd("a6 LIST \"\" *"), &want);
    assert_lines(
        &c.cmd("a7 STATUS Play.Q1 (MESSAGES UIDNEXT UIDVALIDITY)"),
        &[
            &format!("* STATUS Play.Q1 (MESSAGES 1 UIDNEXT 2 UIDVALIDITY {validity})"),
            "a7 OK STATUS completed",
        ],
    );
    assert_lines_unordered(
        &c.cmd("a8 LSUB \"\" P*"),
        &[
            "* LSUB (\\HasChildren) \".\" Play",
            "* LSUB (\\HasNoChildren) \".\" Play.Q1",
            "a8 OK LSUB completed",
        ],
    );
    assert_lines(&c.cmd("a9 LSUB \"\" W*"), &["a9 OK LSUB completed"]);
    assert_lines(
        &c.cmd("b1 RENAME Work Other"),
        &["b1 NO [NONEXISTENT] mailbox Work does not exist"],
    );
    assert_lines(
        &c.cmd("b2 RENAME Play Sent"),
        &["b2 NO [ALREADYEXISTS] mailbox Sent already exists"],
    );
    assert_lines(
        &c.cmd("b3 RENAME Play INBOX"),
        &["b3 NO [ALREADYEXISTS] mailbox INBOX already exists"],
    );
}

// RFC 3501 §6.3.5: "Renaming INBOX is permitted, and has special behavior.
// It moves all messages in INBOX to a new mailbox with the given name,
// leaving INBOX empty" — INBOX stays, and new mail still arrives in it
// without reusing its UIDs.
#[test]
fn rename_inbox_moves_the_messages() {
    let s = server();
    s.deliver_to(USER, &message("one", "first"));
    s.deliver_to(USER, &message("two", "second"));
    let mut c = login(&s);
    let inbox_validity = uidvalidity(&mut c, "INBOX");
    assert_lines(&c.cmd("a1 RENAME INBOX Old"), &["a1 OK RENAME completed"]);
    assert_lines(
        &c.cmd("a2 STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY)"),
        &[
            &format!("* STATUS INBOX (MESSAGES 0 UIDNEXT 3 UIDVALIDITY {inbox_validity})"),
            "a2 OK STATUS completed",
        ],
    );
    assert_lines(
        &c.cmd("a3 STATUS Old (MESSAGES)"),
        &["* STATUS Old (MESSAGES 2)", "a3 OK STATUS completed"],
    );
    assert_lines(
        &c.cmd("a4 LIST \"\" INBOX"),
        &[
            "* LIST (\\HasNoChildren) \".\" INBOX",
            "a4 OK LIST completed",
        ],
    );
    c.cmd_ok("a5 EXAMINE Old");
    assert_lines(
        &c.cmd("a6 FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])"),
        &[
            "* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {21}\r\nSubject: test one\r\n\r\n)",
            "* 2 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {21}\r\nSubject: test two\r\n\r\n)",
            "a6 OK FETCH completed",
        ],
    );
    s.deliver_to(USER, &message("three", "third"));
    assert_lines(
        &c.cmd("a7 STATUS INBOX (MESSAGES UIDNEXT)"),
        &[
            "* STATUS INBOX (MESSAGES 1 UIDNEXT 4)",
            "a7 OK STATUS completed",
        ],
    );
}

// RFC 3501 §6.3.6 SUBSCRIBE, §6.3.7 UNSUBSCRIBE, §6.3.9 LSUB: the
// subscription list is a set of names that need not exist ("MUST NOT
// unilaterally remove an existing mailbox name from the subscription list
// even if a mailbox by that name no longer exists").
#[test]
fn subscribe_unsubscribe_lsub() {
    let s = server();
    let mut c = login(&s);
    c.cmd_ok("a1 SUBSCRIBE INBOX");
    assert_lines(
        &c.cmd("a2 UNSUBSCRIBE Junk"),
        &["a2 OK UNSUBSCRIBE completed"],
    );
    assert_lines(
        &c.cmd("a3 SUBSCRIBE Nowhere"),
        &["a3 OK SUBSCRIBE completed"],
    );
    c.cmd_ok("a4 CREATE Gone");
    c.cmd_ok("a5 SUBSCRIBE Gone");
    c.cmd_ok("a6 DELETE Gone");
    assert_lines_unordered(
        &c.cmd("a7 LSUB \"\" *"),
        &[
            "* LSUB (\\HasNoChildren \\Archive) \".\" Archive",
            "* LSUB (\\HasNoChildren \\Drafts) \".\" Drafts",
            "* LSUB (\\Noselect) \".\" Gone",
            "* LSUB (\\HasNoChildren) \".\" INBOX",
            "* LSUB (\\Noselect) \".\" Nowhere",
            "* LSUB (\\HasNoChildren \\Sent) \".\" Sent",
            "* LSUB (\\HasNoChildren \\Trash) \".\" Trash",
            "a7 OK LSUB completed",
        ],
    );
    assert_lines(
        &c.cmd("a8 UNSUBSCRIBE Nowhere"),
        &["a8 OK UNSUBSCRIBE completed"],
    );
    assert_lines(&c.cmd("a9 LSUB \"\" N*"), &["a9 OK LSUB completed"]);
    // LIST is not affected by subscriptions.
    let mut want: Vec<&str> = DEFAULT_LIST.to_vec();
    want.push("b1 OK LIST completed");
    assert_lines_unordered(&c.cmd("b1 LIST \"\" *"), &want);
}

// RFC 3501 §6.3.3/§6.3.9: CREATE does not subscribe the mailbox it makes,
// nor the parents it makes on the way; only SUBSCRIBE does, and after
// UNSUBSCRIBE nothing comes back \Subscribed (Dovecot's imaptest
// "subscribe" group).
#[test]
fn create_subscribes_nothing() {
    let s = server();
    let mut c = login(&s);
    c.cmd_ok("a1 CREATE Proj.Sub.Deep");
    assert_lines(&c.cmd("a2 LSUB \"\" Proj*"), &["a2 OK LSUB completed"]);
    assert_lines(
        &c.cmd("a3 LIST (SUBSCRIBED) \"\" Proj*"),
        &["a3 OK LIST completed"],
    );
    c.cmd_ok("a4 SUBSCRIBE Proj.Sub");
    c.cmd_ok("a5 UNSUBSCRIBE Proj.Sub");
    c.cmd_ok("a6 SUBSCRIBE Proj.Sub.Deep");
    assert_lines(
        &c.cmd("a7 LSUB \"\" Proj.%"),
        &["* LSUB (\\Noselect) \".\" Proj.Sub", "a7 OK LSUB completed"],
    );
    assert_lines(
        &c.cmd("a8 LIST \"\" Proj* RETURN (SUBSCRIBED)"),
        &[
            "* LIST (\\HasChildren) \".\" Proj",
            "* LIST (\\HasChildren) \".\" Proj.Sub",
            "* LIST (\\HasNoChildren \\Subscribed) \".\" Proj.Sub.Deep",
            "a8 OK LIST completed",
        ],
    );
}

// RFC 5258 §3.5 CHILDINFO: with (SUBSCRIBED RECURSIVEMATCH) a name that
// has a subscribed name below it says so, and a parent that is not
// subscribed is listed for them where the pattern stops at its level (the
// RFC's example 5; Dovecot answers the same). Without RECURSIVEMATCH,
// nothing of the kind.
#[test]
fn list_subscribed_recursivematch_returns_childinfo() {
    let s = server();
    let mut c = login(&s);
    c.cmd_ok("a1 CREATE Foo.Bar");
    c.cmd_ok("a2 CREATE Baz.Q");
    c.cmd_ok("a3 SUBSCRIBE Foo.Bar");
    c.cmd_ok("a4 SUBSCRIBE Baz");
    c.cmd_ok("a5 SUBSCRIBE Baz.Q");
    c.cmd_ok("a6 SUBSCRIBE Ghost.Child");
    let childinfo = " (\"CHILDINFO\" (\"SUBSCRIBED\"))";
    assert_lines_unordered(
        &c.cmd("b1 LIST (SUBSCRIBED RECURSIVEMATCH) \"\" %"),
        &[
            &format!("* LIST (\\HasChildren \\Subscribed) \".\" Baz{childinfo}"),
            &format!("* LIST (\\HasChildren) \".\" Foo{childinfo}"),
            &format!("* LIST (\\NonExistent) \".\" Ghost{childinfo}"),
            "* LIST (\\HasNoChildren \\Archive \\Subscribed) \".\" Archive",
            "* LIST (\\HasNoChildren \\Drafts \\Subscribed) \".\" Drafts",
            "* LIST (\\HasNoChildren \\Subscribed) \".\" INBOX",
            "* LIST (\\HasNoChildren \\Junk \\Subscribed) \".\" Junk",
            "* LIST (\\HasNoChildren \\Sent \\Subscribed) \".\" Sent",
            "* LIST (\\HasNoChildren \\Trash \\Subscribed) \".\" Trash",
            "b1 OK LIST completed",
        ],
    );
    // "*" reaches the subscribed names themselves: no unsubscribed parent.
    assert_lines(
        &c.cmd("b2 LIST (SUBSCRIBED RECURSIVEMATCH) \"\" Foo*"),
        &[
            "* LIST (\\HasNoChildren \\Subscribed) \".\" Foo.Bar",
            "b2 OK LIST completed",
        ],
    );
    assert_lines(
        &c.cmd("b3 LIST (SUBSCRIBED RECURSIVEMATCH) \"\" Foo"),
        &[
            &format!("* LIST (\\HasChildren) \".\" Foo{childinfo}"),
            "b3 OK LIST completed",
        ],
    );
    assert_lines(
        &c.cmd("b4 LIST (SUBSCRIBED) \"\" Foo"),
        &["b4 OK LIST completed"],
    );
}

// RFC 3501 §6.3.9: "if "foo/bar" ... is subscribed but "foo" is not. A "%"
// wildcard to LSUB must return foo, not foo/bar, in the LSUB response, and
// it MUST be flagged with the \Noselect attribute."
#[test]
fn lsub_percent_returns_the_unsubscribed_parent_as_noselect() {
    let s = server();
    let mut c = login(&s);
    c.cmd_ok("a1 CREATE Proj.Sub");
    c.cmd_ok("a2 UNSUBSCRIBE Proj");
    c.cmd_ok("a3 SUBSCRIBE Proj.Sub");
    assert_lines(
        &c.cmd("a4 LSUB \"\" Pro%"),
        &["* LSUB (\\Noselect) \".\" Proj", "a4 OK LSUB completed"],
    );
    assert_lines(
        &c.cmd("a5 LSUB \"\" Proj.%"),
        &[
            "* LSUB (\\HasNoChildren) \".\" Proj.Sub",
            "a5 OK LSUB completed",
        ],
    );
}

// RFC 3501 §6.3.8 LIST: "*" matches everything, "%" stops at the
// delimiter, the reference is prefixed to the pattern, INBOX matches
// case-insensitively, `LIST "" ""` returns the delimiter and root; RFC 3348
// \HasChildren/\HasNoChildren and RFC 6154 special-use attributes.
#[test]
fn list_patterns() {
    let s = server();
    let mut c = login(&s);
    c.cmd_ok("a1 CREATE Work.Q1");
    c.cmd_ok("a2 CREATE Work.Q2.Deep");

    let mut all: Vec<&str> = DEFAULT_LIST.to_vec();
    all.extend([
        "* LIST (\\HasChildren) \".\" Work",
        "* LIST (\\HasNoChildren) \".\" Work.Q1",
        "* LIST (\\HasChildren) \".\" Work.Q2",
        "* LIST (\\HasNoChildren) \".\" Work.Q2.Deep",
        "b1 OK LIST completed",
    ]);
    assert_lines_unordered(&c.cmd("b1 LIST \"\" *"), &all);

    let mut top: Vec<&str> = DEFAULT_LIST.to_vec();
    top.extend(["* LIST (\\HasChildren) \".\" Work", "b2 OK LIST completed"]);
    assert_lines_unordered(&c.cmd("b2 LIST \"\" %"), &top);

    assert_lines_unordered(
        &c.cmd("b3 LIST \"\" Work.%"),
        &[
            "* LIST (\\HasNoChildren) \".\" Work.Q1",
            "* LIST (\\HasChildren) \".\" Work.Q2",
            "b3 OK LIST completed",
        ],
    );
    assert_lines_unordered(
        &c.cmd("b4 LIST Work. %"),
        &[
            "* LIST (\\HasNoChildren) \".\" Work.Q1",
            "* LIST (\\HasChildren) \".\" Work.Q2",
            "b4 OK LIST completed",
        ],
    );
    assert_lines_unordered(
        &c.cmd("b5 LIST \"\" Work.*"),
        &[
            "* LIST (\\HasNoChildren) \".\" Work.Q1",
            "* LIST (\\HasChildren) \".\" Work.Q2",
            "* LIST (\\HasNoChildren) \".\" Work.Q2.Deep",
            "b5 OK LIST completed",
        ],
    );
    assert_lines(
        &c.cmd("b6 LIST \"\" \"\""),
        &["* LIST (\\Noselect) \".\" \"\"", "b6 OK LIST completed"],
    );
    assert_lines(
        &c.cmd("b7 LIST \"\" inbox"),
        &[
            "* LIST (\\HasNoChildren) \".\" INBOX",
            "b7 OK LIST completed",
        ],
    );
    assert_lines(
        &c.cmd("b8 LIST \"\" Sent"),
        &[
            "* LIST (\\HasNoChildren \\Sent) \".\" Sent",
            "b8 OK LIST completed",
        ],
    );
    assert_lines(&c.cmd("b9 LIST \"\" Nomatch*"), &["b9 OK LIST completed"]);
    assert_lines(
        &c.cmd("c1 LIST \"\" %.%"),
        &[
            "* LIST (\\HasNoChildren) \".\" Work.Q1",
            "* LIST (\\HasChildren) \".\" Work.Q2",
            "c1 OK LIST completed",
        ],
    );
}

// RFC 3501 §6.3.10 STATUS: MESSAGES, UIDNEXT, UIDVALIDITY and UNSEEN of a
// mailbox that is not selected, in the order asked; a missing mailbox is
// NO.
#[test]
fn status() {
    let s = server();
    s.deliver_to(USER, &message("one", "first"));
    s.deliver_to(USER, &message("two", "second"));
    s.deliver_to(USER, &message("three", "third"));
    let mut c = login(&s);
    c.cmd_ok("a1 SELECT INBOX");
    c.cmd_ok("a2 STORE 2 +FLAGS.SILENT (\\Seen)");
    c.cmd_ok("a3 CLOSE");
    let validity = uidvalidity(&mut c, "INBOX");
    assert_lines(
        &c.cmd("a4 STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN)"),
        &[
            &format!("* STATUS INBOX (MESSAGES 3 UIDNEXT 4 UIDVALIDITY {validity} UNSEEN 2)"),
            "a4 OK STATUS completed",
        ],
    );
    assert_lines(
        &c.cmd("a5 STATUS INBOX (UNSEEN MESSAGES)"),
        &[
            "* STATUS INBOX (UNSEEN 2 MESSAGES 3)",
            "a5 OK STATUS completed",
        ],
    );
    assert_lines(
        &c.cmd("a6 STATUS Trash (MESSAGES UIDNEXT UNSEEN)"),
        &[
            "* STATUS Trash (MESSAGES 0 UIDNEXT 1 UNSEEN 0)",
            "a6 OK STATUS completed",
        ],
    );
    assert_lines(
        &c.cmd("a7 STATUS Nowhere (MESSAGES)"),
        &["a7 NO [NONEXISTENT] mailbox Nowhere does not exist"],
    );
}

// RFC 3501 §6.3.10 STATUS RECENT: "The number of messages with the \Recent
// flag set." Mail delivered while no session had the mailbox selected is
// recent (the first session to select it will be told so).
#[test]
fn status_recent_counts_undelivered_recent_messages() {
    let s = server();
    s.deliver_to(USER, &message("one", "first"));
    s.deliver_to(USER, &message("two", "second"));
    let mut c = login(&s);
    assert_lines(
        &c.cmd("a1 STATUS INBOX (MESSAGES RECENT)"),
        &[
            "* STATUS INBOX (MESSAGES 2 RECENT 2)",
            "a1 OK STATUS completed",
        ],
    );
    // And SELECT agrees.
    let got = c.cmd_ok("a2 SELECT INBOX");
    assert_eq!(got[3], "* 2 RECENT", "{got:?}");
}

// RFC 3501 §6.3.11 APPEND with a synchronising literal (§7.5: the server
// sends "+" before the client sends the literal), flags and a date; RFC
// 4315 APPENDUID. Appending to the selected mailbox announces EXISTS (and
// RECENT: an appended message is \Recent, §6.3.11 "In either case, the
// Recent flag is also set").
#[test]
fn append_with_synchronising_literal_flags_and_date() {
    let s = server();
    let mut c = login(&s);
    c.cmd_ok("a1 SELECT Drafts");
    let validity = uidvalidity(&mut c, "Drafts");
    let msg = b"From: me@x.org\r\nSubject: draft\r\n\r\nunfinished\r\n";
    c.send(&format!(
        "a2 APPEND Drafts (\\Draft $Work) \"14-Jul-2020 02:44:25 +0000\" {{{}}}",
        msg.len()
    ));
    assert_lines(&[c.read_response()], &["+ Ready for literal data"]);
    let mut bytes = msg.to_vec();
    bytes.extend_from_slice(b"\r\n");
    c.send_raw(&bytes);
    // The new keyword is announced in FLAGS before the message (§7.2.6).
    assert_lines(
        &c.read_until_tagged("a2"),
        &[
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work)",
            "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work \\*)] Flags permitted",
            "* 1 EXISTS",
            "* 1 RECENT",
            &format!("a2 OK [APPENDUID {validity} 1] APPEND completed"),
        ],
    );
    assert_lines(
        &c.cmd("a3 FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE)"),
        &[
            &format!(
                "* 1 FETCH (FLAGS (\\Draft \\Recent $Work) INTERNALDATE \"14-Jul-2020 02:44:25 +0000\" RFC822.SIZE {})",
                msg.len()
            ),
            "a3 OK FETCH completed",
        ],
    );
    assert_lines(
        &c.cmd("a4 FETCH 1 BODY.PEEK[]"),
        &[
            &format!(
                "* 1 FETCH (BODY[] {{{}}}\r\n{})",
                msg.len(),
                String::from_utf8_lossy(msg)
            ),
            "a4 OK FETCH completed",
        ],
    );
    // A date with another zone is the same instant.
    let r = c.append(
        "a5",
        "Drafts",
        "() \"14-Jul-2020 04:44:25 +0200\"",
        b"Subject: x\r\n\r\nx\r\n",
    );
    assert_lines(
        &r,
        &[
            "* 2 EXISTS",
            "* 2 RECENT",
            &format!("a5 OK [APPENDUID {validity} 2] APPEND completed"),
        ],
    );
    assert_lines(
        &c.cmd("a6 FETCH 2 INTERNALDATE"),
        &[
            "* 2 FETCH (INTERNALDATE \"14-Jul-2020 02:44:25 +0000\")",
            "a6 OK FETCH completed",
        ],
    );
}

// RFC 3501 §6.3.11, §2.3.2: "In either case, the Recent flag is also set"
// — also when no session has selected the mailbox yet, and with flags.
#[test]
fn appended_message_is_recent_for_the_next_select() {
    let s = server();
    let mut c = login(&s);
    let r = c.append("a1", "Drafts", "(\\Seen)", b"Subject: x\r\n\r\nx\r\n");
    assert_lines(&r, &["a1 OK [APPENDUID {num} 1] APPEND completed"]);
    let r = c.append("a2", "Drafts", "", b"Subject: y\r\n\r\ny\r\n");
    assert_lines(&r, &["a2 OK [APPENDUID {num} 2] APPEND completed"]);
    let got = c.cmd_ok("a3 SELECT Drafts");
    assert_eq!(got[3], "* 2 RECENT", "{got:?}");
    assert_lines(
        &c.cmd("a4 FETCH 1:2 FLAGS"),
        &[
            "* 1 FETCH (FLAGS (\\Seen \\Recent))",
            "* 2 FETCH (FLAGS (\\Recent))",
            "a4 OK FETCH completed",
        ],
    );
}

// RFC 7888 LITERAL+: a non-synchronising literal `{n+}` is sent at once,
// with no continuation request.
#[test]
fn append_with_literal_plus() {
    let s = server();
    let mut c = login(&s);
    let validity = uidvalidity(&mut c, "INBOX");
    let r = c.append("a1", "INBOX", "", b"Subject: plus\r\n\r\nbody\r\n");
    assert_lines(
        &r,
        &[&format!("a1 OK [APPENDUID {validity} 1] APPEND completed")],
    );
    let r = c.append(
        "a2",
        "INBOX",
        "(\\Flagged)",
        b"Subject: two\r\n\r\nbody\r\n",
    );
    assert_lines(
        &r,
        &[&format!("a2 OK [APPENDUID {validity} 2] APPEND completed")],
    );
    assert_lines(
        &c.cmd("a3 STATUS INBOX (MESSAGES UIDNEXT)"),
        &[
            "* STATUS INBOX (MESSAGES 2 UIDNEXT 3)",
            "a3 OK STATUS completed",
        ],
    );
}

// RFC 3501 §6.3.11: appending to a mailbox that does not exist is NO with
// [TRYCREATE]; nothing is created.
#[test]
fn append_to_a_missing_mailbox_is_trycreate() {
    let s = server();
    let mut c = login(&s);
    let r = c.append("a1", "Nowhere", "", b"Subject: x\r\n\r\nx\r\n");
    assert_lines(&r, &["a1 NO [TRYCREATE] No such mailbox"]);
    assert_lines(&c.cmd("a2 LIST \"\" Nowhere"), &["a2 OK LIST completed"]);
}

// RFC 7889 APPENDLIMIT and RFC 4469/RFC 5530 TOOBIG: a literal over
// `max_literal_size` is refused with NO [TOOBIG] — a synchronising one
// before the client sends it (no "+", RFC 3501 §7.5), a LITERAL+ one after
// reading and dropping it. The connection stays usable; nothing is stored.
#[test]
fn append_over_the_literal_limit_is_toobig() {
    let s = server();
    let mut c = login(&s);
    c.send("a1 APPEND INBOX {5000}");
    assert_lines(
        &[c.read_response()],
        &["a1 NO [TOOBIG] Literal of 5000 bytes exceeds the limit of 1000"],
    );
    assert_lines(&c.cmd("a2 NOOP"), &["a2 OK NOOP completed"]);

    let big = vec![b'x'; 5000];
    let r = c.append("a3", "INBOX", "", &big);
    assert_lines(
        &r,
        &["a3 NO [TOOBIG] Literal of 5000 bytes exceeds the limit of 1000"],
    );
    assert_lines(&c.cmd("a4 NOOP"), &["a4 OK NOOP completed"]);
    assert_lines(
        &c.cmd("a5 STATUS INBOX (MESSAGES)"),
        &["* STATUS INBOX (MESSAGES 0)", "a5 OK STATUS completed"],
    );
    // At the limit is fine.
    let mut exact = b"Subject: x\r\n\r\n".to_vec();
    exact.resize(1000, b'y');
    let r = c.append("a6", "INBOX", "", &exact);
    assert_lines(&r, &["a6 OK [APPENDUID {num} 1] APPEND completed"]);
}
