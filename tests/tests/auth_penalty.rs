//! Login penalties and the cost of unknown users (issue 11), over real
//! sockets against the real binary: every login path goes through one
//! authentication service, which makes a client (and a user name) wait
//! longer after each failure before its next attempt is even looked at,
//! and checks one password whether or not the user exists.
//!
//! Nothing here times the server: what is asserted is what it did, read
//! from `/metrics` (password checks run, attempts waiting their turn,
//! penalty table sizes) and from its replies. A second client is a second
//! loopback address (127.0.0.2), bound before connecting.

mod pop3_common;

use std::net::IpAddr;
use std::time::Duration;

use cove_tests::{IMAP_CONFIG, Imap, TestServer, base64, eventually, quoted, tcp_connect_from};
use pop3_common::{POP3_CONFIG, Pop3};

const HTTP: &str = "[http]\nlisten = [\"127.0.0.1:0\"]\n";
const A: &str = "a@x.org";
const B: &str = "b@x.org";
const FIRST: [u8; 4] = [127, 0, 0, 1];
const SECOND: [u8; 4] = [127, 0, 0, 2];

fn server(auth: &str) -> TestServer {
    let s = TestServer::start(&format!("{IMAP_CONFIG}{POP3_CONFIG}{HTTP}[auth]\n{auth}"));
    s.add_user_with_password(A, "a-pw");
    s.add_user_with_password(B, "b-pw");
    s
}

/// One sample of `/metrics` (`name{labels}` as written).
#[track_caller]
fn metric(s: &TestServer, series: &str) -> u64 {
    let (status, body) = s.http("GET", "/metrics");
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{body}"))
}

/// Wait until a sample reaches `want` (the server works on its own time).
#[track_caller]
fn metric_becomes(s: &TestServer, series: &str, want: u64) {
    let got = eventually(Duration::from_secs(20), || {
        (metric(s, series) == want).then_some(())
    });
    assert!(
        got.is_some(),
        "{series} stayed {} (want {want})",
        metric(s, series)
    );
}

const CHECKS: &str = "cove_password_checks_total";
const WAITING: &str = "cove_logins_waiting";

fn imap_from(s: &TestServer, from: [u8; 4]) -> Imap<std::net::TcpStream> {
    Imap::greeted(tcp_connect_from(IpAddr::from(from), s.addr_of("imap")))
}

fn login_line(tag: &str, user: &str, password: &str) -> String {
    format!("{tag} LOGIN {} {}", quoted(user), quoted(password))
}

// After a wrong password, the next attempt from the same address waits
// before it is checked, even for another user and with the right password;
// another address is not slowed by the first one's failures, except for the
// user name that failed (the per-user penalty).
#[test]
fn a_failed_client_waits_before_its_next_attempt_is_checked_and_others_do_not() {
    // A long penalty: the waiting attempts are seen waiting, never answered.
    let s = server("penalty_initial_ms = 600000\npenalty_max_ms = 600000\n");
    let base = metric(&s, CHECKS);

    let mut attacker = imap_from(&s, FIRST);
    attacker.send(&login_line("f1", A, "wrong"));
    metric_becomes(&s, CHECKS, base + 1);
    metric_becomes(&s, "cove_auth_penalty_entries{table=\"client\"}", 1);
    let port = attacker.local_addr().port();
    let fail2ban = format!("imap login failed user={A} peer=127.0.0.1:{port}");
    assert!(
        eventually(Duration::from_secs(10), || s
            .logged(&fail2ban)
            .then_some(()))
        .is_some(),
        "no {fail2ban:?} line"
    );

    // Same address, another user, the right password: not checked yet.
    let mut same_address = imap_from(&s, FIRST);
    same_address.send(&login_line("g1", B, "b-pw"));
    metric_becomes(&s, WAITING, 1);

    // Another address, another user: checked and in at once.
    let mut other = imap_from(&s, SECOND);
    other.cmd_ok(&login_line("h1", B, "b-pw"));
    assert_eq!(metric(&s, CHECKS), base + 2);

    // Another address, the user that failed: that user waits too.
    let mut other_as_a = imap_from(&s, SECOND);
    other_as_a.send(&login_line("i1", A, "a-pw"));
    metric_becomes(&s, WAITING, 2);
    assert_eq!(
        metric(&s, CHECKS),
        base + 2,
        "a waiting attempt was checked"
    );
    assert_eq!(
        same_address.read_response_within(Duration::from_millis(100)),
        None
    );
    assert_eq!(
        other_as_a.read_response_within(Duration::from_millis(100)),
        None
    );
}

// POP3 (USER/PASS, AUTH PLAIN) goes through the same service: the right
// password sent while the address is penalised is checked once the wait is
// over, and accepted then.
#[test]
fn pop3_logins_wait_their_turn_then_the_right_password_is_accepted() {
    // Long enough that the second connection surely asks within it.
    let s = server("penalty_initial_ms = 2000\npenalty_max_ms = 2000\n");
    let base = metric(&s, CHECKS);
    let addr = s.addr_of("pop3");
    let pop3 = || Pop3::greeted(tcp_connect_from(IpAddr::from(FIRST), addr));

    for (n, mut login) in [
        (1, vec!["USER a@x.org".to_string(), "PASS a-pw".to_string()]),
        (
            2,
            vec![format!("AUTH PLAIN {}", base64(b"\0a@x.org\0a-pw"))],
        ),
    ] {
        let mut wrong = pop3();
        assert_eq!(wrong.cmd("USER a@x.org"), "+OK Send your password");
        wrong.send("PASS wrong");
        metric_becomes(&s, CHECKS, base + 2 * n - 1);
        // The failure is recorded (a successful login forgets the user).
        metric_becomes(&s, "cove_auth_penalty_entries{table=\"user\"}", 1);

        // Sent while the address is penalised: queued, then checked.
        let mut right = pop3();
        let last = login.pop().unwrap();
        for line in login {
            assert!(right.cmd(&line).starts_with("+OK"));
        }
        let reply = right.cmd(&last);
        assert!(reply.starts_with("+OK Logged in"), "{reply}");
        assert_eq!(metric(&s, "cove_logins_queued_total"), n);
        assert_eq!(metric(&s, CHECKS), base + 2 * n);
        assert_eq!(wrong.line(), "-ERR [AUTH] Authentication failed");
        assert!(right.cmd("QUIT").starts_with("+OK"));
    }
}

// An unknown user, a user without a password, a name that is no address and
// a wrong password each cost exactly one password check (argon2), so neither
// the time nor the load tells which names exist.
#[test]
fn unknown_users_cost_one_password_check_like_wrong_passwords() {
    let s = server("penalty_initial_ms = 1\npenalty_max_ms = 1\n");
    let out = s.cli(&["user", "add", "nopass@x.org"]);
    assert!(out.status.success(), "{out:?}");
    let mut imap = s.imap();
    let mut checks = metric(&s, CHECKS);
    for (n, (user, password)) in [
        ("nobody@x.org", "a-pw"),
        ("nopass@x.org", ""),
        ("not an address", "a-pw"),
        (A, "wrong"),
    ]
    .into_iter()
    .enumerate()
    {
        let tag = format!("u{n}");
        let reply = imap.cmd(&login_line(&tag, user, password));
        assert_eq!(
            reply.last().unwrap(),
            &format!("{tag} NO [AUTHENTICATIONFAILED] Invalid credentials")
        );
        checks += 1;
        assert_eq!(metric(&s, CHECKS), checks, "{user}: password checks");
    }
    let addr = s.addr_of("pop3");
    let mut pop = Pop3::greeted(tcp_connect_from(IpAddr::from(FIRST), addr));
    assert!(pop.cmd("USER nobody@x.org").starts_with("+OK"));
    assert_eq!(pop.cmd("PASS x"), "-ERR [AUTH] Authentication failed");
    assert_eq!(metric(&s, CHECKS), checks + 1);
}

// A spray of client addresses and user names cannot grow the penalty
// tables past their configured size.
#[test]
fn the_penalty_tables_stay_within_their_size() {
    let s = server("penalty_initial_ms = 1\npenalty_max_ms = 1\npenalty_table_size = 2\n");
    let base = metric(&s, CHECKS);
    for n in 2..=6u8 {
        let mut c = imap_from(&s, [127, 0, 0, n]);
        let reply = c.cmd(&login_line("t1", &format!("spray{n}@x.org"), "x"));
        assert!(reply.last().unwrap().starts_with("t1 NO "), "{reply:?}");
    }
    assert_eq!(metric(&s, CHECKS), base + 5);
    assert_eq!(metric(&s, "cove_auth_penalty_entries{table=\"client\"}"), 2);
    assert_eq!(metric(&s, "cove_auth_penalty_entries{table=\"user\"}"), 2);
}
