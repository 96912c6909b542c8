//! ManageSieve (RFC 5804) transcripts against the real `cove serve`: the
//! greeting's capabilities, every command in both states, literals,
//! CHECKSCRIPT/PUTSCRIPT errors naming the line, the per-user limits,
//! STARTTLS and implicit TLS, and a script put over ManageSieve that then
//! files a delivery.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use cove_tests::{IMAP_CONFIG, TestServer, base64, tcp_connect, tls_config_trusting, tls_connect};

const PASSWORD: &str = "pw-ms-1";

fn server(extra: &str) -> TestServer {
    let s = TestServer::start(&format!(
        "{IMAP_CONFIG}\n[sieve]\nlisten = [\"127.0.0.1:0\"]\ntls_listen = [\"127.0.0.1:0\"]\nmax_scripts = 3\nmax_script_size = 200\nmax_bad_commands = 3\nauth_failure_delay_ms = 10\n{extra}"
    ));
    s.add_user_with_password("ann@x.org", PASSWORD);
    s
}

/// A ManageSieve client over any stream: send a line, read the response
/// lines up to and including OK / NO / BYE.
struct Ms<S: Read + Write> {
    r: BufReader<S>,
}

impl<S: Read + Write> Ms<S> {
    fn new(stream: S) -> Ms<S> {
        Ms {
            r: BufReader::new(stream),
        }
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        if self.r.read_line(&mut l).expect("read a line") == 0 {
            return "<EOF>".into();
        }
        l.trim_end_matches(['\r', '\n']).to_string()
    }

    /// Lines up to the final OK/NO/BYE (a literal's bytes are one line
    /// each as they come).
    fn response(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let l = self.line();
            let done = l == "<EOF>"
                || ["OK", "NO", "BYE"]
                    .iter()
                    .any(|s| l == *s || l.starts_with(&format!("{s} ")));
            out.push(l);
            if done {
                return out;
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.r.get_mut().write_all(bytes).expect("send");
    }

    fn cmd(&mut self, line: &str) -> Vec<String> {
        self.send(format!("{line}\r\n").as_bytes());
        self.response()
    }

    #[track_caller]
    fn cmd_ok(&mut self, line: &str) -> Vec<String> {
        let r = self.cmd(line);
        assert!(r.last().unwrap().starts_with("OK"), "{line}: {r:?}");
        r
    }

    fn login(&mut self, user: &str, password: &str) -> Vec<String> {
        let ir = base64(format!("\0{user}\0{password}").as_bytes());
        self.cmd(&format!("AUTHENTICATE \"PLAIN\" \"{ir}\""))
    }
}

fn connect(server: &TestServer) -> (Ms<TcpStream>, Vec<String>) {
    let mut ms = Ms::new(tcp_connect(server.addr_of("managesieve")));
    let greeting = ms.response();
    (ms, greeting)
}

fn putscript(name: &str, script: &str) -> String {
    format!("PUTSCRIPT \"{name}\" {{{}+}}\r\n{script}", script.len())
}

#[test]
fn greeting_capabilities_and_the_not_authenticated_state() {
    let server = server("");
    let (mut ms, greeting) = connect(&server);
    assert_eq!(greeting[0], "\"IMPLEMENTATION\" \"cove\"");
    assert!(
        greeting
            .iter()
            .any(|l| l.starts_with("\"SIEVE\" \"fileinto ") && l.contains("vacation"))
    );
    assert!(
        greeting.contains(&"\"SASL\" \"PLAIN\"".to_string()),
        "{greeting:?}"
    );
    assert!(greeting.contains(&"\"STARTTLS\"".to_string()));
    assert!(greeting.contains(&"\"VERSION\" \"1.0\"".to_string()));
    assert!(greeting.last().unwrap().starts_with("OK"));
    // RFC 5804 §2.14: NOOP echoes its tag.
    assert_eq!(ms.cmd("NOOP \"t1\""), vec!["OK (TAG \"t1\") \"Done\""]);
    // Commands of the other state are refused, and count as bad: the
    // third bad command in a row (max_bad_commands = 3) ends the session.
    for cmd in ["LISTSCRIPTS", "GETSCRIPT \"a\""] {
        assert_eq!(ms.cmd(cmd), vec!["NO \"Authenticate first\""], "{cmd}");
    }
    let r = ms.cmd("FROB");
    assert!(r[0].starts_with("NO \"Unknown command"), "{r:?}");
    assert!(
        ms.line().starts_with("BYE"),
        "too many bad commands close the connection"
    );
}

#[test]
fn authenticate_plain_rules() {
    let server = server("");
    let (mut ms, _) = connect(&server);
    let r = ms.login("ann@x.org", "wrong");
    assert_eq!(r, vec!["NO \"Authentication failed\""]);
    assert!(server.logged("managesieve login failed user=ann@x.org"));
    // Without an initial response: an empty challenge, then the answer.
    ms.send(b"AUTHENTICATE \"PLAIN\"\r\n");
    assert_eq!(ms.line(), "\"\"");
    let ir = base64(format!("\0ann@x.org\0{PASSWORD}").as_bytes());
    ms.send(format!("{{{}+}}\r\n{ir}\r\n", ir.len()).as_bytes());
    assert_eq!(ms.response(), vec!["OK \"Logged in\""]);
    let r = ms.login("ann@x.org", PASSWORD);
    assert_eq!(r, vec!["NO \"Already authenticated\""]);
    ms.cmd_ok("LOGOUT");
}

#[test]
fn script_commands_transcript() {
    let server = server("");
    let (mut ms, _) = connect(&server);
    assert_eq!(ms.login("ann@x.org", PASSWORD), vec!["OK \"Logged in\""]);
    ms.cmd_ok("HAVESPACE \"rules\" 100");
    assert_eq!(
        ms.cmd("HAVESPACE \"rules\" 201"),
        vec!["NO (QUOTA/MAXSIZE) \"Scripts may have at most 200 bytes\""]
    );
    // CHECKSCRIPT and PUTSCRIPT name the line of an error.
    let bad = "require \"fileinto\";\r\nkeep;\r\nfrobnicate;\r\n";
    let r = ms.cmd(&format!("CHECKSCRIPT {{{}+}}\r\n{bad}", bad.len()));
    assert!(r[0].starts_with("NO \"line 3: "), "{r:?}");
    let r = ms.cmd(&putscript("rules", bad));
    assert!(r[0].starts_with("NO \"line 3: "), "{r:?}");
    let good = "require \"fileinto\";\r\nif header :contains \"subject\" \"list\" { fileinto \"Lists\"; }\r\n";
    ms.cmd_ok(&format!("CHECKSCRIPT {{{}+}}\r\n{good}", good.len()));
    ms.cmd_ok(&putscript("rules", good));
    ms.cmd_ok(&putscript("other", "keep;\r\n"));
    assert_eq!(
        ms.cmd("LISTSCRIPTS"),
        vec!["\"other\"", "\"rules\"", "OK \"Listscripts completed\""]
    );
    ms.cmd_ok("SETACTIVE \"rules\"");
    assert_eq!(
        ms.cmd("LISTSCRIPTS"),
        vec![
            "\"other\"",
            "\"rules\" ACTIVE",
            "OK \"Listscripts completed\""
        ]
    );
    ms.send(b"GETSCRIPT \"rules\"\r\n");
    assert_eq!(ms.line(), format!("{{{}}}", good.len()));
    let mut body = vec![0u8; good.len()];
    ms.r.read_exact(&mut body).unwrap();
    assert_eq!(body, good.as_bytes());
    assert_eq!(ms.response(), vec!["", "OK \"Getscript completed\""]);
    assert_eq!(
        ms.cmd("GETSCRIPT \"nope\""),
        vec!["NO (NONEXISTENT) \"No such script\""]
    );
    assert_eq!(
        ms.cmd("DELETESCRIPT \"rules\""),
        vec!["NO (ACTIVE) \"The script is active\""]
    );
    assert_eq!(
        ms.cmd("RENAMESCRIPT \"other\" \"rules\""),
        vec!["NO (ALREADYEXISTS) \"A script of that name exists\""]
    );
    ms.cmd_ok("RENAMESCRIPT \"rules\" \"sorting\"");
    ms.cmd_ok(&putscript("third", "keep;\r\n"));
    assert_eq!(
        ms.cmd(&putscript("fourth", "keep;\r\n")),
        vec!["NO (QUOTA/MAXSCRIPTS) \"At most 3 scripts\""]
    );
    // A literal over the limit is read and refused; the session goes on.
    let big = "#".repeat(1500);
    assert_eq!(
        ms.cmd(&putscript("big", &big)),
        vec!["NO (QUOTA/MAXSIZE) \"Script too big\""]
    );
    ms.cmd_ok("DELETESCRIPT \"other\"");
    ms.cmd_ok("SETACTIVE \"\"");
    assert_eq!(
        ms.cmd("LISTSCRIPTS"),
        vec!["\"sorting\"", "\"third\"", "OK \"Listscripts completed\""]
    );
    // Activate again and deliver: the renamed script files the message.
    ms.cmd_ok("SETACTIVE \"sorting\"");
    let mut imap = server.imap_login("ann@x.org", PASSWORD);
    imap.cmd_ok("C1 CREATE Lists");
    server.deliver_to(
        "ann@x.org",
        "From: b@example.org\r\nTo: ann@x.org\r\nSubject: a list mail\r\n\r\nhi\r\n",
    );
    assert_eq!(server.maildir_files("ann@x.org", "Lists").len(), 1);
    assert!(server.maildir_files("ann@x.org", "INBOX").is_empty());
}

#[test]
fn starttls_and_implicit_tls() {
    let server = server("");
    let (mut ms, _) = connect(&server);
    ms.cmd_ok("STARTTLS");
    let tcp = ms.r.into_inner();
    let config = tls_config_trusting(&server.data_dir().join("tls/cert.pem"));
    let tls = tls_connect(tcp, config.clone(), "localhost").expect("STARTTLS handshake");
    let mut ms = Ms::new(tls);
    // RFC 5804 §2.2: the capabilities again, without STARTTLS.
    let caps = ms.response();
    assert!(caps.last().unwrap().starts_with("OK"), "{caps:?}");
    assert!(!caps.iter().any(|l| l.contains("STARTTLS")), "{caps:?}");
    assert_eq!(ms.login("ann@x.org", PASSWORD), vec!["OK \"Logged in\""]);
    ms.cmd_ok("LISTSCRIPTS");

    let tcp = tcp_connect(server.addr_of("managesieve-tls"));
    let tls = tls_connect(tcp, config, "localhost").expect("implicit TLS handshake");
    let mut ms = Ms::new(tls);
    let greeting = ms.response();
    assert!(greeting.last().unwrap().starts_with("OK"), "{greeting:?}");
    assert!(!greeting.iter().any(|l| l.contains("STARTTLS")));
    assert_eq!(ms.login("ann@x.org", PASSWORD), vec!["OK \"Logged in\""]);
}

#[test]
fn a_client_that_does_not_log_in_in_time_is_sent_away() {
    let server = server("login_timeout_secs = 1\n");
    let (mut ms, _) = connect(&server);
    assert_eq!(ms.cmd("NOOP"), vec!["OK \"Done\""]);
    // No command needed: the deadline closes the connection.
    assert_eq!(ms.line(), "BYE \"Login timeout; log in sooner\"");
    assert_eq!(ms.line(), "<EOF>");
    assert!(server.logs_soon("managesieve login timeout"));
    // Logged in in time, the deadline no longer applies.
    let (mut ms, _) = connect(&server);
    assert_eq!(ms.login("ann@x.org", PASSWORD), vec!["OK \"Logged in\""]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(ms.cmd("NOOP"), vec!["OK \"Done\""]);
}

#[test]
fn over_long_lines_are_refused_and_the_session_goes_on() {
    let server = server("");
    let (mut ms, _) = connect(&server);
    let long = format!("NOOP \"{}\"", "x".repeat(10_000));
    assert_eq!(ms.cmd(&long), vec!["NO \"Line too long\""]);
    assert_eq!(ms.cmd("NOOP"), vec!["OK \"Done\""]);
    // A literal far beyond the limit closes the connection at once.
    ms.send(b"PUTSCRIPT \"x\" {999999999+}\r\n");
    let mut rest = String::new();
    let _ = ms.r.read_to_string(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
}
