//! nginx's auth_http protocol against cove's `GET /auth`, header by
//! header (the nginx end to end runs are in tests/interop/nginx.rs):
//! IMAP and POP3 logins answer the node's listener; SMTP submission is
//! answered from the same users and passwords with `[http] smtp_relay`; a
//! wrong password gets `Auth-Wait` (and `Auth-Error-Code` for SMTP), none
//! after ten attempts; `auth_key` keeps everyone else out.

use cove_tests::{HTTP_MARKER, IMAP_CONFIG, TestServer};

const USER: &str = "sub@x.org";
const PASS: &str = "a pass word";

/// One auth_http request: the answer's status and `Auth-*` headers.
fn ask(s: &TestServer, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>) {
    cove_tests::auth_http(s.addr_of(HTTP_MARKER), headers)
}

fn login(protocol: &str, pass: &str, attempt: &str) -> Vec<(&'static str, String)> {
    vec![
        ("Auth-Method", "plain".into()),
        ("Auth-User", USER.into()),
        ("Auth-Pass", pass.replace(' ', "%20")),
        ("Auth-Protocol", protocol.into()),
        ("Auth-Login-Attempt", attempt.into()),
        ("Client-IP", "192.0.2.9".into()),
        ("X-Auth-Key", "the proxy's key".into()),
    ]
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

#[test]
fn imap_pop3_and_smtp_logins_are_routed_and_refused_as_nginx_expects() {
    let s = TestServer::start(&format!(
        "{IMAP_CONFIG}\n[pop3]\nlisten = [\"127.0.0.1:0\"]\n\n[http]\nlisten = [\"127.0.0.1:0\"]\n\
         auth_key = \"the proxy's key\"\nsmtp_relay = \"192.0.2.25:587\"\n\n[auth]\npenalty_initial_ms = 0\npenalty_max_ms = 0\n"
    ));
    s.add_user_with_password(USER, PASS);
    let as_refs =
        |v: &[(&'static str, String)]| v.iter().map(|(n, v)| (*n, v.clone())).collect::<Vec<_>>();
    let send = |v: Vec<(&str, String)>| {
        let refs: Vec<(&str, &str)> = v.iter().map(|(n, v)| (*n, v.as_str())).collect();
        ask(&s, &refs)
    };

    let imap = s.addr_of("imap");
    let (status, h) = send(as_refs(&login("imap", PASS, "1")));
    assert_eq!(status, 200);
    assert_eq!(header(&h, "Auth-Status"), Some("OK"), "{h:?}");
    assert_eq!(
        header(&h, "Auth-Server"),
        Some(imap.ip().to_string().as_str())
    );
    assert_eq!(
        header(&h, "Auth-Port"),
        Some(imap.port().to_string().as_str())
    );

    let pop3 = s.addr_of("pop3");
    let (_, h) = send(as_refs(&login("pop3", PASS, "1")));
    assert_eq!(
        header(&h, "Auth-Port"),
        Some(pop3.port().to_string().as_str())
    );

    // Submission: the same password, the configured relay.
    let (_, h) = send(as_refs(&login("smtp", PASS, "1")));
    assert_eq!(header(&h, "Auth-Status"), Some("OK"), "{h:?}");
    assert_eq!(header(&h, "Auth-Server"), Some("192.0.2.25"));
    assert_eq!(header(&h, "Auth-Port"), Some("587"));

    // A wrong password: a reason, a wait, and SMTP's error code.
    let (_, h) = send(as_refs(&login("smtp", "wrong", "1")));
    assert_eq!(header(&h, "Auth-Status"), Some("Invalid login or password"));
    assert!(header(&h, "Auth-Wait").is_some(), "{h:?}");
    assert_eq!(header(&h, "Auth-Error-Code"), Some("535 5.7.8"));
    // After ten attempts nginx is told to give up (no Auth-Wait).
    let (_, h) = send(as_refs(&login("imap", "wrong", "10")));
    assert!(header(&h, "Auth-Wait").is_none(), "{h:?}");
    assert!(s.logged("auth_http login failed user=sub@x.org peer=192.0.2.9"));

    // Without the proxy's key: refused.
    let mut no_key = as_refs(&login("imap", PASS, "1"));
    no_key.retain(|(n, _)| *n != "X-Auth-Key");
    assert_eq!(send(no_key).0, 403);
}
