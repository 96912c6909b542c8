//! `cove user import`: users from a Dovecot passwd-file whose hashes were
//! made by Dovecot itself (`doveadm pw`), one user per scheme. Each logs in
//! over IMAP with their password (a wrong one fails and changes nothing),
//! and the first good login replaces the Dovecot hash with argon2id; POP3
//! USER/PASS, POP3 AUTH PLAIN and IMAP AUTHENTICATE PLAIN take legacy
//! hashes too. A file with an unknown scheme is refused line by line.
//!
//! Needs Debian's dovecot-core for `doveadm`; without it the test is
//! skipped with a printed reason, except under CI=true, where it fails.

mod pop3_common;

use cove_store::{Address, Directory};
use cove_tests::{IMAP_CONFIG, TestServer, base64, text};
use pop3_common::{POP3_CONFIG, pop3};
use std::path::Path;
use std::process::Command;

/// Every scheme the migration promises, as `doveadm pw -s` names it.
const SCHEMES: &[&str] = &[
    "PLAIN",
    "PLAIN-MD5",
    "MD5-CRYPT",
    "SHA256-CRYPT",
    "SHA512-CRYPT",
    "BLF-CRYPT",
    "SHA",
    "SSHA",
    "SSHA256",
    "SSHA512",
    "ARGON2ID",
    "ARGON2I",
];

/// `doveadm pw -s SCHEME -p PASSWORD`, or `None` (with the reason printed)
/// when doveadm is not installed and this is not CI.
fn doveadm_pw(scheme: &str, password: &str) -> Option<String> {
    let out = match Command::new("doveadm")
        .args(["pw", "-s", scheme, "-p", password])
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("doveadm is needed under CI (Debian package dovecot-core): {e}");
            }
            eprintln!("skipped: doveadm not found ({e}); install dovecot-core to run this test");
            return None;
        }
    };
    assert!(
        out.status.success(),
        "doveadm pw -s {scheme}: {}",
        text(&out.stderr)
    );
    let hash = text(&out.stdout).trim().to_string();
    assert!(hash.starts_with(&format!("{{{scheme}}}")), "{hash}");
    Some(hash)
}

/// The stored password hash of a user, read from the directory while the
/// server runs (SQLite in WAL mode allows a reader beside it).
fn stored_hash(data_dir: &Path, email: &str) -> String {
    let dir = Directory::open(
        &data_dir.join("cove.db"),
        std::sync::Arc::new(cove_store::SystemClock),
    )
    .expect("open the directory");
    let user = dir
        .get(&Address::parse(email).unwrap())
        .unwrap()
        .unwrap_or_else(|| panic!("{email} not in the directory"));
    user.password.expect("a password").0
}

fn user_for(scheme: &str) -> String {
    format!("{}@example.org", scheme.to_ascii_lowercase())
}

fn password_for(scheme: &str) -> String {
    format!("pw {scheme} ä&3")
}

fn write_file(s: &TestServer, name: &str, content: &str) -> String {
    let path = s.data_dir().parent().unwrap().join(name);
    std::fs::write(&path, content).unwrap();
    path.to_str().unwrap().to_string()
}

fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[test]
fn dovecot_users_log_in_and_are_rehashed_to_argon2id() {
    let mut file = String::from("# exported from Dovecot\n\n");
    for scheme in SCHEMES {
        let Some(hash) = doveadm_pw(scheme, &password_for(scheme)) else {
            return;
        };
        file.push_str(&format!(
            "{}:{hash}:5000:5000::/var/vmail/example.org/{}::\n",
            user_for(scheme),
            scheme.to_ascii_lowercase()
        ));
    }
    let s = TestServer::start(&format!("{IMAP_CONFIG}{POP3_CONFIG}"));
    let path = write_file(&s, "users.passwd", &file);

    let out = s.cli_ok(&["user", "import", &path]);
    for scheme in SCHEMES {
        let how = if *scheme == "PLAIN" {
            "hashed with argon2id now"
        } else {
            "argon2id at first login"
        };
        let line = format!("added {} ({{{scheme}}}, {how})", user_for(scheme));
        assert!(out.lines().any(|l| l == line), "no {line:?} in:\n{out}");
    }
    assert!(
        out.ends_with(&format!(
            "12 added, 0 updated, 0 unchanged, 0 refused (from {path})\n"
        )),
        "{out}"
    );
    // Running it again changes nothing.
    let again = s.cli_ok(&["user", "import", &path]);
    assert!(
        again.ends_with(&format!(
            "0 added, 0 updated, 12 unchanged, 0 refused (from {path})\n"
        )),
        "{again}"
    );

    // Until their first login, `cove user list` shows who still has a
    // Dovecot hash.
    let listed = s.cli_ok(&["user", "list"]);
    assert!(
        listed.contains("ssha512@example.org\tpassword={SSHA512}\t"),
        "{listed}"
    );

    for scheme in SCHEMES {
        let (user, password) = (user_for(scheme), password_for(scheme));
        let before = stored_hash(s.data_dir(), &user);
        if *scheme == "PLAIN" {
            assert!(before.starts_with("$argon2id$"), "{before}");
        } else {
            assert!(before.starts_with(&format!("{{{scheme}}}")), "{before}");
        }

        let mut imap = s.imap();
        let wrong = imap.cmd(&format!(
            "W1 LOGIN {} {}",
            quoted(&user),
            quoted(&format!("{password}x"))
        ));
        assert_eq!(
            wrong.last().unwrap(),
            "W1 NO [AUTHENTICATIONFAILED] Invalid credentials",
            "{scheme}"
        );
        assert_eq!(stored_hash(s.data_dir(), &user), before, "{scheme}");

        let ok = imap.cmd(&format!("L1 LOGIN {} {}", quoted(&user), quoted(&password)));
        assert!(
            ok.last().unwrap().starts_with("L1 OK [CAPABILITY "),
            "{scheme}: {ok:?}"
        );
        imap.cmd_ok("L2 LOGOUT");
        let after = stored_hash(s.data_dir(), &user);
        assert!(
            after.starts_with("$argon2id$v=19$"),
            "{scheme} not rehashed: {after}"
        );

        // The new hash takes the same password, and only it.
        let mut again = s.imap();
        let wrong = again.cmd(&format!("W2 LOGIN {} {}", quoted(&user), quoted("nope")));
        assert!(wrong.last().unwrap().starts_with("W2 NO "), "{scheme}");
        again.login(&user, &password);
        assert_eq!(stored_hash(s.data_dir(), &user), after, "{scheme}");
    }
    assert!(s.logged("password rehashed to argon2id user=ssha512@example.org scheme=SSHA512"));
    let listed = s.cli_ok(&["user", "list"]);
    assert!(
        listed.contains("ssha512@example.org\tpassword\t"),
        "{listed}"
    );
}

#[test]
fn pop3_and_authenticate_take_legacy_hashes() {
    let mut file = String::new();
    for (user, scheme) in [
        ("pass@example.org", "SHA512-CRYPT"),
        ("auth@example.org", "SSHA"),
        ("imapauth@example.org", "BLF-CRYPT"),
    ] {
        let Some(hash) = doveadm_pw(scheme, "s3cret:ö") else {
            return;
        };
        file.push_str(&format!("{user}:{hash}\n"));
    }
    let s = TestServer::start(&format!("{IMAP_CONFIG}{POP3_CONFIG}"));
    let path = write_file(&s, "users.passwd", &file);
    s.cli_ok(&["user", "import", &path]);

    // POP3 USER/PASS (RFC 1939 §7).
    let mut c = pop3(&s);
    c.cmd("USER pass@example.org");
    assert_eq!(c.cmd("PASS s3cret:o"), "-ERR [AUTH] Authentication failed");
    assert!(stored_hash(s.data_dir(), "pass@example.org").starts_with("{SHA512-CRYPT}$6$"));
    c.login("pass@example.org", "s3cret:ö");
    assert!(stored_hash(s.data_dir(), "pass@example.org").starts_with("$argon2id$"));
    c.cmd("QUIT");

    // POP3 AUTH PLAIN with an initial response (RFC 5034).
    let mut c = pop3(&s);
    let r = c.cmd(&format!(
        "AUTH PLAIN {}",
        base64("\0auth@example.org\0s3cret:ö".as_bytes())
    ));
    assert!(r.starts_with("+OK Logged in"), "{r}");
    assert!(stored_hash(s.data_dir(), "auth@example.org").starts_with("$argon2id$"));

    // IMAP AUTHENTICATE PLAIN (RFC 3501 §6.2.2, SASL-IR).
    let mut imap = s.imap();
    let r = imap.cmd(&format!(
        "A1 AUTHENTICATE PLAIN {}",
        base64("\0imapauth@example.org\0s3cret:ö".as_bytes())
    ));
    assert!(r.last().unwrap().starts_with("A1 OK "), "{r:?}");
    assert!(stored_hash(s.data_dir(), "imapauth@example.org").starts_with("$argon2id$"));
}

#[test]
fn an_unknown_scheme_is_refused_naming_the_user_and_the_scheme() {
    let s = TestServer::start(IMAP_CONFIG);
    let file = "good@example.org:{PLAIN}fine\n\
        # comment\n\
        old@example.org:{CRAM-MD5}e02d374fde0dc75a17a557039a3a5338c7743304777dccd376f332bee68d2cf6:5000:5000::/home/old::\n\
        broken@example.org:{SSHA}AAAA\n";
    let path = write_file(&s, "mixed.passwd", file);
    let out = s.cli(&["user", "import", &path]);
    assert!(!out.status.success(), "a refused line must fail the import");
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout,
        format!(
            "added good@example.org ({{PLAIN}}, hashed with argon2id now)\n\
             refused old@example.org (line 3): unknown password scheme {{CRAM-MD5}}\n\
             refused broken@example.org (line 4): malformed {{SSHA}} hash: no salt after the digest\n\
             1 added, 0 updated, 0 unchanged, 2 refused (from {path})\n"
        )
    );
    assert_eq!(
        text(&out.stderr),
        format!("cove: 2 line(s) of {path} refused (the other users were imported)\n")
    );
    // The good line was imported; the refused users were not.
    s.imap_login("good@example.org", "fine");
    let users = s.cli_ok(&["user", "list"]);
    assert!(users.contains("good@example.org\tpassword"), "{users}");
    assert!(!users.contains("old@example.org"), "{users}");
    assert!(!users.contains("broken@example.org"), "{users}");
}

#[test]
fn an_existing_user_gets_the_password_from_the_file() {
    let s = TestServer::start(IMAP_CONFIG);
    s.add_user_with_password("kept@example.org", "before");
    // doveadm pw -s SSHA256 -p 'Tr0ub4dor&3'
    let file = "kept@example.org:{SSHA256}bGiAUZeDjNGhMSA4o9RYzbKyVy+0QhEivtfCCc3aOUqP0HG0\n";
    let path = write_file(&s, "one.passwd", file);
    let out = s.cli_ok(&["user", "import", &path]);
    assert_eq!(
        out,
        format!(
            "updated kept@example.org (password replaced: {{SSHA256}}, argon2id at first login)\n\
             0 added, 1 updated, 0 unchanged, 0 refused (from {path})\n"
        )
    );
    let mut c = s.imap();
    let r = c.cmd("W1 LOGIN kept@example.org before");
    assert!(r.last().unwrap().starts_with("W1 NO "), "{r:?}");
    c.login("kept@example.org", "Tr0ub4dor&3");
}
