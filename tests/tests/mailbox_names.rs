//! Mailbox names are checked once, at the edge, and one name is one
//! mailbox (RFC 3501 §5.1.3 modified UTF-7, normalized to NFC): a refused
//! or failed CREATE leaves nothing behind, not even after a restart's scan.

use std::fs;
use std::net::TcpStream;

use cove_tests::{IMAP_CONFIG, Imap, TestServer};

const USER: &str = "a@x.org";
const PASS: &str = "pw";

fn server() -> (TestServer, Imap<TcpStream>) {
    let s = TestServer::start(IMAP_CONFIG);
    s.add_user_with_password(USER, PASS);
    let c = s.imap_login(USER, PASS);
    (s, c)
}

/// The names LIST "" * shows, without the default mailboxes.
fn listed(c: &mut Imap<TcpStream>) -> Vec<String> {
    const DEFAULTS: [&str; 6] = ["INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash"];
    let r = c.cmd_ok("ls LIST \"\" *");
    r[..r.len() - 1]
        .iter()
        .map(|l| {
            l.rsplit_once("\".\" ")
                .map_or(l.as_str(), |(_, n)| n)
                .to_string()
        })
        .filter(|n| !DEFAULTS.contains(&n.as_str()))
        .collect()
}

fn tagged(r: &[String]) -> &str {
    r.last().map(String::as_str).unwrap_or("")
}

// RFC 3501 §6.3.3: an invalid name creates nothing, not even its parent.
#[test]
fn create_with_an_empty_level_leaves_nothing() {
    let (mut s, mut c) = server();
    for name in ["a..b", "\".x\"", "\"p./\"", "\"p.q/..\""] {
        let r = c.cmd(&format!("c CREATE {name}"));
        assert!(tagged(&r).starts_with("c NO"), "{name}: {r:?}");
    }
    assert_eq!(listed(&mut c), Vec::<String>::new());
    s.restart();
    let mut c = s.imap_login(USER, PASS);
    assert_eq!(listed(&mut c), Vec::<String>::new());
}

// A CREATE whose folder cannot be made (here: something already in the way
// of its tmp/) fails whole: no folder for a later scan to take for a
// mailbox, and the parent it made is taken back.
#[test]
fn a_create_that_fails_midway_leaves_nothing() {
    let (mut s, mut c) = server();
    let maildir = s.home(USER).join("Maildir");
    for dir in [".x", ".p.x"] {
        fs::create_dir_all(maildir.join(dir)).unwrap();
        fs::write(maildir.join(dir).join("tmp"), b"in the way").unwrap();
    }
    let r = c.cmd("c1 CREATE x");
    assert!(tagged(&r).starts_with("c1 NO"), "{r:?}");
    let r = c.cmd("c2 CREATE p.x");
    assert!(tagged(&r).starts_with("c2 NO"), "{r:?}");
    assert_eq!(listed(&mut c), Vec::<String>::new());
    drop(c);
    // The scan at start looks at every folder.
    s.restart();
    let mut c = s.imap_login(USER, PASS);
    assert_eq!(listed(&mut c), Vec::<String>::new());
    assert!(!maildir.join(".x").join("cur").exists());
    assert!(!maildir.join(".p").exists());
    let scratch = s.home(USER).join(".cove-creating");
    let left: Vec<_> = fs::read_dir(&scratch)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    // Once the way is clear, the same CREATE works.
    fs::remove_dir_all(maildir.join(".x")).unwrap();
    c.cmd_ok("c3 CREATE x");
    assert_eq!(listed(&mut c), ["x"]);
}

// RFC 3501 §5.1.3 with Unicode NFC: "Café" with a precomposed é and with e
// plus a combining acute accent are one mailbox.
#[test]
fn nfc_and_nfd_spellings_are_one_mailbox() {
    let (_s, mut c) = server();
    let nfc = "Caf&AOk-"; // U+00E9
    let nfd = "Cafe&AwE-"; // e, U+0301
    c.cmd_ok(&format!("c1 CREATE {nfd}"));
    let r = c.cmd(&format!("c2 CREATE {nfc}"));
    assert!(tagged(&r).starts_with("c2 NO [ALREADYEXISTS]"), "{r:?}");
    assert_eq!(listed(&mut c), [nfc]);
    c.cmd_ok(&format!("s1 SELECT {nfd}"));
    c.cmd_ok(&format!("s2 SELECT {nfc}"));
    c.cmd_ok(&format!("r1 RENAME {nfd} Caf&AOk-.Old"));
    assert_eq!(listed(&mut c), ["Caf&AOk-.Old"]);
}

// RFC 3501 §5.1.3: names that are not modified UTF-7 are refused, whatever
// command carries them, and so are raw 8-bit names (no UTF8=ACCEPT).
#[test]
fn invalid_modified_utf7_and_8bit_names_are_refused() {
    let (_s, mut c) = server();
    for name in [
        "&Jjo",      // unterminated
        "&AGE-",     // 'a' in base64
        "&Jjp-",     // spare bits set
        "\"&Jj!-\"", // not base64
        "&2D0-",     // lone surrogate
    ] {
        let r = c.cmd(&format!("c CREATE {name}"));
        assert!(tagged(&r).starts_with("c NO"), "{name}: {r:?}");
        let r = c.cmd(&format!("s SELECT {name}"));
        assert!(tagged(&r).starts_with("s NO"), "{name}: {r:?}");
    }
    // Two different byte strings that are not UTF-8 once collapsed to the
    // same U+FFFD name; both are refused now.
    for (tag, raw) in [
        ("e1", &b"caf\xe9"[..]),
        ("e2", b"caf\xe8"),
        ("e3", "Café".as_bytes()),
    ] {
        let mut line = format!("{tag} CREATE {{{}+}}\r\n", raw.len()).into_bytes();
        line.extend_from_slice(raw);
        line.extend_from_slice(b"\r\n");
        c.send_raw(&line);
        let r = c.read_until_tagged(tag);
        let done = tagged(&r);
        assert!(
            done.starts_with(&format!("{tag} NO")) || done.starts_with(&format!("{tag} BAD")),
            "{raw:?}: {r:?}"
        );
    }
    c.cmd_ok("c1 CREATE &Jjo-"); // a valid non-ASCII name still works
    assert_eq!(listed(&mut c), ["&Jjo-"]);
}
