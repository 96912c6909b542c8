//! IMAP connection states (RFC 3501 §3, §6.1, §6.2): which commands each
//! state accepts and how the others are refused, the capability list before
//! and after login, LOGIN/AUTHENTICATE, LOGOUT, bad syntax and the limit on
//! bad commands, and the any-state extensions ID, NAMESPACE and ENABLE.
//!
//! Transcripts: each client line and the exact server lines.

use cove_tests::{
    IMAP_CONFIG, Imap, TestServer, assert_lines, base64, code_value, eventually, line_matches,
};
use std::net::TcpStream;
use std::time::Duration;

const USER: &str = "a@x.org";
const PASS: &str = "pw";

/// Capabilities listed in every state: IMAP4rev1 first (RFC 3501 §7.2.1)
/// and the extensions cove implements.
const COMMON_CAPS: &[&str] = &[
    "LITERAL+",
    "ID",
    "ENABLE",
    "IDLE",
    "NAMESPACE",
    "UNSELECT",
    "UIDPLUS",
    "MOVE",
    "CHILDREN",
    "SPECIAL-USE",
    "APPENDLIMIT=100000",
];

/// The atoms of a `[CAPABILITY ...]` response code.
fn capability_code(line: &str) -> Vec<String> {
    let code =
        code_value(line, "CAPABILITY").unwrap_or_else(|| panic!("no CAPABILITY code: {line}"));
    code.split(' ').map(str::to_string).collect()
}

/// IMAP4rev1 first, each of COMMON_CAPS and `with`, none of `without`, no
/// duplicates.
#[track_caller]
fn check_caps(caps: &[String], with: &[&str], without: &[&str]) {
    assert_eq!(
        caps.first().map(String::as_str),
        Some("IMAP4rev1"),
        "{caps:?}"
    );
    for c in COMMON_CAPS.iter().chain(with) {
        assert!(caps.iter().any(|x| x == c), "{c} missing from {caps:?}");
    }
    for c in without {
        assert!(!caps.iter().any(|x| x == c), "{c} listed in {caps:?}");
    }
    let mut sorted = caps.to_vec();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), caps.len(), "duplicates in {caps:?}");
}

/// Assert a tagged OK carries a post-login capability list.
#[track_caller]
fn assert_logged_in(line: &str, tag: &str) {
    assert!(
        line_matches(&format!("{tag} OK [CAPABILITY {{any}}] Logged in"), line),
        "{line}"
    );
    check_caps(&capability_code(line), &[], &["STARTTLS", "AUTH=PLAIN"]);
}

fn server(extra: &str) -> TestServer {
    let s = TestServer::start(&format!("{IMAP_CONFIG}max_literal_size = 100000\n{extra}"));
    s.add_user_with_password(USER, PASS);
    s
}

fn logged_in(s: &TestServer) -> Imap<TcpStream> {
    s.imap_login(USER, PASS)
}

/// Commands of the authenticated state (RFC 3501 §6.3) and the extensions
/// that belong to it, each complete and valid.
const AUTHENTICATED_COMMANDS: &[&str] = &[
    "SELECT INBOX",
    "EXAMINE INBOX",
    "CREATE foo",
    "DELETE foo",
    "RENAME foo bar",
    "SUBSCRIBE foo",
    "UNSUBSCRIBE foo",
    "LIST \"\" *",
    "LSUB \"\" *",
    "STATUS INBOX (MESSAGES)",
    "NAMESPACE",
    "ENABLE CONDSTORE",
    "IDLE",
];

/// Commands of the selected state (RFC 3501 §6.4; RFC 3691 UNSELECT,
/// RFC 4315 UID EXPUNGE, RFC 6851 MOVE), each complete and valid.
const SELECTED_COMMANDS: &[&str] = &[
    "CHECK",
    "CLOSE",
    "UNSELECT",
    "EXPUNGE",
    "UID EXPUNGE 1",
    "SEARCH ALL",
    "UID SEARCH ALL",
    "FETCH 1 FLAGS",
    "UID FETCH 1 FLAGS",
    "STORE 1 +FLAGS (\\Seen)",
    "UID STORE 1 +FLAGS (\\Seen)",
    "COPY 1 Trash",
    "UID COPY 1 Trash",
    "MOVE 1 Trash",
    "UID MOVE 1 Trash",
];

// RFC 3501 §3.1, §6.3, §6.4: in the not-authenticated state only
// CAPABILITY, NOOP, LOGOUT, STARTTLS, AUTHENTICATE and LOGIN are valid;
// everything else is refused with a tagged BAD (and nothing else is sent).
#[test]
fn not_authenticated_refuses_every_other_command() {
    let s = server("max_bad_commands = 100\n");
    let mut c = s.imap();
    for (i, command) in AUTHENTICATED_COMMANDS
        .iter()
        .chain(SELECTED_COMMANDS)
        .enumerate()
    {
        let tag = format!("n{i}");
        let got = c.cmd(&format!("{tag} {command}"));
        assert_lines(&got, &[&format!("{tag} BAD Log in first")]);
    }
    // APPEND with a LITERAL+ literal (RFC 7888): refused too.
    let got = c.append("n99", "INBOX", "", b"Subject: x\r\n\r\nx\r\n");
    assert_lines(&got, &["n99 BAD Log in first"]);
    // Still usable.
    assert_lines(&c.cmd("z NOOP"), &["z OK NOOP completed"]);
}

// RFC 3501 §6.3 vs §6.4: in the authenticated state the selected-state
// commands are refused with BAD; nothing is selected.
#[test]
fn authenticated_refuses_selected_state_commands() {
    let s = server("max_bad_commands = 100\n");
    let mut c = logged_in(&s);
    for (i, command) in SELECTED_COMMANDS.iter().enumerate() {
        let tag = format!("s{i}");
        let got = c.cmd(&format!("{tag} {command}"));
        assert_lines(&got, &[&format!("{tag} BAD No mailbox selected")]);
    }
    assert_lines(&c.cmd("z NOOP"), &["z OK NOOP completed"]);
}

// RFC 3501 §6.2: LOGIN, AUTHENTICATE and STARTTLS are valid only in the
// not-authenticated state; after login (authenticated and selected state)
// they are BAD.
#[test]
fn login_authenticate_and_starttls_after_login_are_bad() {
    let s = server("");
    let mut c = logged_in(&s);
    let ir = base64(format!("\0{USER}\0{PASS}").as_bytes());
    assert_lines(
        &c.cmd(&format!("a1 LOGIN {USER} {PASS}")),
        &["a1 BAD Already logged in"],
    );
    assert_lines(
        &c.cmd(&format!("a2 AUTHENTICATE PLAIN {ir}")),
        &["a2 BAD Already logged in"],
    );
    assert_lines(&c.cmd("a3 NOOP"), &["a3 OK NOOP completed"]);
    assert_lines(
        &c.cmd("a4 STARTTLS"),
        &["a4 BAD STARTTLS only before login"],
    );
    c.cmd_ok("a5 SELECT INBOX");
    assert_lines(
        &c.cmd(&format!("a6 LOGIN {USER} {PASS}")),
        &["a6 BAD Already logged in"],
    );
    assert_lines(&c.cmd("a7 NOOP"), &["a7 OK NOOP completed"]);
    assert_lines(
        &c.cmd("a8 STARTTLS"),
        &["a8 BAD STARTTLS only before login"],
    );
    // Still selected.
    assert_lines(&c.cmd("a9 CHECK"), &["a9 OK CHECK completed"]);
}

// RFC 3501 §7.1.1 greeting with a CAPABILITY code, §6.1.1 CAPABILITY.
// Before login on loopback (no TLS yet): STARTTLS (RFC 3501 §6.2.1),
// AUTH=PLAIN (RFC 4616) and SASL-IR (RFC 4959); LOGINDISABLED is for
// connections that are neither TLS nor loopback, which 127.0.0.1 cannot
// show. After login neither STARTTLS nor AUTH= is listed; LOGIN's OK
// carries the new list (RFC 3501 §7.1 CAPABILITY response code). The list
// grows as extensions are added, so it is checked item by item; the code
// in the greeting and in LOGIN's OK must equal the CAPABILITY response.
#[test]
fn capability_before_and_after_login() {
    let s = server("");
    let mut c = s.imap();
    let greeting = c.greeting.clone();
    assert!(
        line_matches(
            "* OK [CAPABILITY {any}] cove.test IMAP cove ready",
            &greeting
        ),
        "{greeting}"
    );
    let before = capability_code(&greeting);
    check_caps(
        &before,
        &["STARTTLS", "AUTH=PLAIN", "SASL-IR"],
        &["LOGINDISABLED"],
    );
    assert_lines(
        &c.cmd("a1 CAPABILITY"),
        &[
            &format!("* CAPABILITY {}", before.join(" ")),
            "a1 OK CAPABILITY completed",
        ],
    );

    let ok = c.cmd(&format!("a2 LOGIN {USER} {PASS}"));
    assert_lines(&ok, &["a2 OK [CAPABILITY {any}] Logged in"]);
    let after = capability_code(&ok[0]);
    check_caps(&after, &[], &["STARTTLS", "AUTH=PLAIN", "LOGINDISABLED"]);
    assert!(after.iter().all(|c| !c.starts_with("AUTH=")), "{after:?}");
    assert_lines(
        &c.cmd("a3 CAPABILITY"),
        &[
            &format!("* CAPABILITY {}", after.join(" ")),
            "a3 OK CAPABILITY completed",
        ],
    );
    c.cmd_ok("a4 SELECT INBOX");
    assert_lines(
        &c.cmd("a5 CAPABILITY"),
        &[
            &format!("* CAPABILITY {}", after.join(" ")),
            "a5 OK CAPABILITY completed",
        ],
    );
}

// RFC 3501 §6.1.2 NOOP in every state.
#[test]
fn noop_in_every_state() {
    let s = server("");
    let mut c = s.imap();
    assert_lines(&c.cmd("a1 NOOP"), &["a1 OK NOOP completed"]);
    c.login(USER, PASS);
    assert_lines(&c.cmd("a2 NOOP"), &["a2 OK NOOP completed"]);
    c.cmd_ok("a3 SELECT INBOX");
    assert_lines(&c.cmd("a4 NOOP"), &["a4 OK NOOP completed"]);
}

// RFC 3501 §6.1.3 LOGOUT: untagged BYE, then the tagged OK, then the
// server closes the connection — in each state.
#[test]
fn logout_in_each_state() {
    let s = server("");

    let mut c = s.imap();
    assert_lines(
        &c.cmd("a1 LOGOUT"),
        &["* BYE Logging out", "a1 OK LOGOUT completed"],
    );
    assert!(c.closed(), "connection left open after LOGOUT");

    let mut c = logged_in(&s);
    assert_lines(
        &c.cmd("a1 LOGOUT"),
        &["* BYE Logging out", "a1 OK LOGOUT completed"],
    );
    assert!(c.closed(), "connection left open after LOGOUT");

    let mut c = logged_in(&s);
    c.cmd_ok("a1 SELECT INBOX");
    assert_lines(
        &c.cmd("a2 LOGOUT"),
        &["* BYE Logging out", "a2 OK LOGOUT completed"],
    );
    assert!(c.closed(), "connection left open after LOGOUT");
}

// RFC 3501 §7.1.3 BAD: a command that cannot be parsed gets BAD with its
// tag; a line without a usable tag gets an untagged BAD.
#[test]
fn bad_syntax_is_bad_with_the_tag() {
    let s = server("");
    let mut c = s.imap();
    assert_lines(&c.cmd("x1 FROBNICATE"), &["x1 BAD Command not understood"]);
    assert_lines(
        &c.cmd("x2 LOGIN onlyone"),
        &["x2 BAD Command not understood"],
    );
    assert_lines(&c.cmd("x3 NOOP"), &["x3 OK NOOP completed"]);
    c.login(USER, PASS);
    assert_lines(&c.cmd("x4 SELECT"), &["x4 BAD Command not understood"]);
    assert_lines(
        &c.cmd("x5 FETCH 1 (FLAGS"),
        &["x5 BAD Command not understood"],
    );
    assert_lines(&c.cmd("x6 NOOP"), &["x6 OK NOOP completed"]);
    // "+" cannot start a tag (RFC 3501 §9 tag): the BAD is untagged.
    c.send("+bad NOOP");
    assert_lines(&[c.read_response()], &["* BAD Command not understood"]);
    assert_lines(&c.cmd("x7 NOOP"), &["x7 OK NOOP completed"]);
}

// Invariant 4 of DESIGN.md, RFC 3501 §7.1.5 BYE: after
// `max_bad_commands` bad commands in a row the server says BYE and
// closes. A good command in between resets the count.
#[test]
fn too_many_bad_commands_close_the_connection() {
    let s = server("max_bad_commands = 3\n");
    let mut c = s.imap();
    assert_lines(&c.cmd("b1 FOO"), &["b1 BAD Command not understood"]);
    assert_lines(&c.cmd("b2 FOO"), &["b2 BAD Command not understood"]);
    assert_lines(&c.cmd("b3 NOOP"), &["b3 OK NOOP completed"]);
    assert_lines(&c.cmd("b4 FOO"), &["b4 BAD Command not understood"]);
    assert_lines(&c.cmd("b5 FOO"), &["b5 BAD Command not understood"]);
    c.send("b6 FOO");
    assert_lines(
        &[c.read_response(), c.read_response()],
        &[
            "b6 BAD Command not understood",
            "* BYE Too many bad commands",
        ],
    );
    assert!(c.closed(), "connection left open after BYE");
}

// The same limit counts commands refused in the wrong state; the third
// still gets its tagged BAD (RFC 3501 §2.2.2: the server's completion
// response is tagged with the command's tag) before the BYE.
#[test]
fn too_many_wrong_state_commands_close_the_connection() {
    let s = server("max_bad_commands = 3\n");
    let mut c = s.imap();
    assert_lines(&c.cmd("w1 SELECT INBOX"), &["w1 BAD Log in first"]);
    assert_lines(&c.cmd("w2 SELECT INBOX"), &["w2 BAD Log in first"]);
    c.send("w3 SELECT INBOX");
    let mut got = Vec::new();
    while let Ok(Some(r)) = c.try_read_response() {
        got.push(r);
    }
    assert_lines(
        &got,
        &["w3 BAD Log in first", "* BYE Too many bad commands"],
    );
}

// RFC 3501 §6.2.3 LOGIN failure: NO with the RFC 5530 AUTHENTICATIONFAILED
// code, and one log line that fail2ban can match, with the client's
// address and port.
#[test]
fn failed_login_is_no_and_logged() {
    let s = server("");
    let mut c = s.imap();
    let me = c.local_addr();
    assert_lines(
        &c.cmd(&format!("f1 LOGIN {USER} wrong")),
        &["f1 NO [AUTHENTICATIONFAILED] Invalid credentials"],
    );
    assert_lines(
        &c.cmd("f2 LOGIN nobody@x.org pw"),
        &["f2 NO [AUTHENTICATIONFAILED] Invalid credentials"],
    );
    for user in [USER, "nobody@x.org"] {
        let line = format!("imap login failed user={user} peer={me}");
        assert!(
            eventually(Duration::from_secs(5), || s.logged(&line).then_some(())).is_some(),
            "no log line {line:?}:\n{}",
            s.logs().join("\n")
        );
    }
    // Still not authenticated; a good login works afterwards.
    assert_lines(&c.cmd("f3 SELECT INBOX"), &["f3 BAD Log in first"]);
    c.login(USER, PASS);
    c.cmd_ok("f4 SELECT INBOX");
}

// RFC 3501 §4.3, §7.5: LOGIN's arguments as synchronising literals, each
// preceded by a continuation request; RFC 7888 LITERAL+ without one.
#[test]
fn login_with_literals() {
    let s = server("");
    let mut c = s.imap();
    c.send(&format!("l1 LOGIN {{{}}}", USER.len()));
    assert_lines(&[c.read_response()], &["+ Ready for literal data"]);
    c.send(&format!("{USER} {{{}}}", PASS.len()));
    assert_lines(&[c.read_response()], &["+ Ready for literal data"]);
    c.send(PASS);
    assert_logged_in(&c.read_response(), "l1");
    c.cmd_ok("l2 SELECT INBOX");

    let mut c = s.imap();
    c.send_raw(
        format!(
            "l3 LOGIN {{{}+}}\r\n{USER} {{{}+}}\r\n{PASS}\r\n",
            USER.len(),
            PASS.len()
        )
        .as_bytes(),
    );
    assert_logged_in(&c.read_response(), "l3");
}

// RFC 3501 §6.2.2 AUTHENTICATE PLAIN (RFC 4616) with the initial response
// on the command line (RFC 4959 SASL-IR).
#[test]
fn authenticate_plain_with_initial_response() {
    let s = server("");
    let mut c = s.imap();
    let ir = base64(format!("\0{USER}\0{PASS}").as_bytes());
    let ok = c.cmd(&format!("p1 AUTHENTICATE PLAIN {ir}"));
    assert_eq!(ok.len(), 1, "{ok:?}");
    assert_logged_in(&ok[0], "p1");
    c.cmd_ok("p2 SELECT INBOX");
}

// RFC 3501 §6.2.2 AUTHENTICATE PLAIN with a continuation: the server sends
// an empty challenge (`+ `), the client answers with one base64 line. A
// `*` cancels (tagged BAD); a wrong password is NO [AUTHENTICATIONFAILED].
#[test]
fn authenticate_plain_with_continuation() {
    let s = server("");
    let mut c = s.imap();

    c.send("p1 AUTHENTICATE PLAIN");
    assert_lines(&[c.read_response()], &["+ "]);
    c.send("*");
    assert_lines(&[c.read_response()], &["p1 BAD Authentication cancelled"]);

    c.send("p2 AUTHENTICATE PLAIN");
    assert_lines(&[c.read_response()], &["+ "]);
    c.send(&base64(format!("\0{USER}\0nope").as_bytes()));
    assert_lines(
        &[c.read_response()],
        &["p2 NO [AUTHENTICATIONFAILED] Invalid credentials"],
    );

    c.send("p3 AUTHENTICATE PLAIN");
    assert_lines(&[c.read_response()], &["+ "]);
    c.send(&base64(format!("{USER}\0{USER}\0{PASS}").as_bytes()));
    assert_logged_in(&c.read_response(), "p3");
    c.cmd_ok("p4 SELECT INBOX");
}

// RFC 4616 §2: an authorization identity other than the authentication
// identity is refused; an unknown mechanism is NO (RFC 3501 §6.2.2).
#[test]
fn authenticate_refusals() {
    let s = server("");
    s.add_user_with_password("b@x.org", "pw2");
    let mut c = s.imap();
    let ir = base64(format!("b@x.org\0{USER}\0{PASS}").as_bytes());
    assert_lines(
        &c.cmd(&format!("r1 AUTHENTICATE PLAIN {ir}")),
        &["r1 NO [AUTHORIZATIONFAILED] Logging in as another user is not allowed"],
    );
    assert_lines(
        &c.cmd("r2 AUTHENTICATE CRAM-MD5"),
        &["r2 NO Unsupported authentication mechanism"],
    );
    assert_lines(&c.cmd("r3 SELECT INBOX"), &["r3 BAD Log in first"]);
}

// RFC 2971 ID: valid in any state.
#[test]
fn id_in_any_state() {
    let s = server("");
    let mut c = s.imap();
    assert_lines(
        &c.cmd("i1 ID (\"name\" \"test\" \"version\" \"1\")"),
        &[
            "* ID (\"name\" \"cove\" \"vendor\" \"cove\")",
            "i1 OK ID completed",
        ],
    );
    c.login(USER, PASS);
    assert_lines(
        &c.cmd("i2 ID NIL"),
        &[
            "* ID (\"name\" \"cove\" \"vendor\" \"cove\")",
            "i2 OK ID completed",
        ],
    );
}

// RFC 2342 NAMESPACE: authenticated and selected states; one personal
// namespace with "." as the delimiter, no others.
#[test]
fn namespace() {
    let s = server("");
    let mut c = s.imap();
    assert_lines(&c.cmd("s1 NAMESPACE"), &["s1 BAD Log in first"]);
    c.login(USER, PASS);
    assert_lines(
        &c.cmd("s2 NAMESPACE"),
        &[
            "* NAMESPACE ((\"\" \".\")) NIL NIL",
            "s2 OK NAMESPACE completed",
        ],
    );
    c.cmd_ok("s3 SELECT INBOX");
    assert_lines(
        &c.cmd("s4 NAMESPACE"),
        &[
            "* NAMESPACE ((\"\" \".\")) NIL NIL",
            "s4 OK NAMESPACE completed",
        ],
    );
}

// RFC 5161 ENABLE: authenticated state; the ENABLED response lists only
// extensions the server supports and this command enabled (RFC 7162
// CONDSTORE, once; an unknown one never).
#[test]
fn enable() {
    let s = server("");
    let mut c = s.imap();
    assert_lines(&c.cmd("e1 ENABLE CONDSTORE"), &["e1 BAD Log in first"]);
    c.login(USER, PASS);
    assert_lines(
        &c.cmd("e2 ENABLE CONDSTORE"),
        &["* ENABLED CONDSTORE", "e2 OK ENABLE completed"],
    );
    assert_lines(
        &c.cmd("e3 ENABLE X-UNKNOWN"),
        &["* ENABLED", "e3 OK ENABLE completed"],
    );
}

// RFC 2177 IDLE in the authenticated state (valid there too): `+`, then
// DONE ends it with the tagged OK.
#[test]
fn idle_done_in_authenticated_state() {
    let s = server("");
    let mut c = logged_in(&s);
    c.send("d1 IDLE");
    assert_lines(&[c.read_response()], &["+ idling"]);
    c.send("DONE");
    assert_lines(&[c.read_response()], &["d1 OK IDLE terminated"]);
    assert_lines(&c.cmd("d2 NOOP"), &["d2 OK NOOP completed"]);
}
