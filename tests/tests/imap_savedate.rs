//! RFC 8514 SAVEDATE against the real server: FETCH SAVEDATE and the
//! SAVEDBEFORE, SAVEDON, SAVEDSINCE and SAVEDATESUPPORTED search keys. The
//! save date is when the message was put in the mailbox, not its internal
//! date: an APPEND with an old date is saved today. A message imported with
//! no placement time answers its internal date.
//!
//! Transcripts: each client line and the exact server lines; the save date
//! itself is read back and checked against the test's clock.

use std::fs;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cove_tests::{IMAP_CONFIG, TestServer, assert_lines};

const USER: &str = "s@x.org";
const PASS: &str = "pw";
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Seconds since the epoch of `"dd-Mon-yyyy hh:mm:ss +0000"`.
fn parse_date(s: &str) -> i64 {
    let s = s.trim_matches('"');
    let (date, time) = s.split_once(' ').unwrap();
    let mut d = date.split('-');
    let day: i64 = d.next().unwrap().parse().unwrap();
    let name = d.next().unwrap();
    let month = MONTHS.iter().position(|m| *m == name).unwrap() as i64 + 1;
    let year: i64 = d.next().unwrap().parse().unwrap();
    let mut t = time.split(' ').next().unwrap().split(':');
    let (h, mi, se): (i64, i64, i64) = (
        t.next().unwrap().parse().unwrap(),
        t.next().unwrap().parse().unwrap(),
        t.next().unwrap().parse().unwrap(),
    );
    // Days from civil (proleptic Gregorian).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + h * 3600 + mi * 60 + se
}

/// The value after `item` in a FETCH line (a quoted date).
fn item(line: &str, item: &str) -> String {
    let at = line.find(&format!("{item} \"")).unwrap() + item.len() + 1;
    let end = line[at + 1..].find('"').unwrap() + at + 2;
    line[at..end].to_string()
}

#[test]
fn save_date_is_when_the_message_was_saved_not_its_internal_date() {
    let s = TestServer::start(IMAP_CONFIG);
    s.add_user_with_password(USER, PASS);
    let mut c = s.imap_login(USER, PASS);
    let caps = c.cmd_ok("v0 CAPABILITY");
    assert!(caps[0].contains(" SAVEDATE"), "{caps:?}");
    let before = now();
    c.append(
        "v1",
        "INBOX",
        "\"01-Jan-2020 00:00:00 +0000\"",
        b"From: a@example.org\r\nSubject: old\r\n\r\nbody\r\n",
    );
    let after = now();
    c.cmd_ok("v2 SELECT INBOX");
    let lines = c.cmd_ok("v3 FETCH 1 (INTERNALDATE SAVEDATE)");
    assert!(
        lines[0].starts_with(
            "* 1 FETCH (INTERNALDATE \"01-Jan-2020 00:00:00 +0000\" UID 1 SAVEDATE \""
        ),
        "{lines:?}"
    );
    let shown = item(&lines[0], "SAVEDATE");
    let saved = parse_date(&shown);
    assert!(
        (before - 1..=after + 1).contains(&saved),
        "saved {saved} outside [{before}, {after}]: {lines:?}"
    );
    // Its day, `dd-Mon-yyyy`, for the search keys.
    let today = shown
        .trim_matches('"')
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    // RFC 8514 §4: by day, like BEFORE/ON/SINCE on the internal date.
    for (tag, criteria, want) in [
        ("v4", format!("SAVEDON {today}"), "* SEARCH 1"),
        ("v5", format!("SAVEDSINCE \"{today}\""), "* SEARCH 1"),
        ("v6", format!("SINCE {today}"), "* SEARCH"),
        ("v7", "SAVEDBEFORE 1-Jan-2021".to_string(), "* SEARCH"),
        ("v8", "BEFORE 1-Jan-2021".to_string(), "* SEARCH 1"),
        ("v9", "SAVEDATESUPPORTED".to_string(), "* SEARCH 1"),
        ("v10", format!("NOT SAVEDON {today}"), "* SEARCH"),
        (
            "v11",
            "OR SAVEDBEFORE 1-Jan-2000 SUBJECT old".to_string(),
            "* SEARCH 1",
        ),
    ] {
        assert_lines(
            &c.cmd(&format!("{tag} SEARCH {criteria}")),
            &[want, &format!("{tag} OK SEARCH completed")],
        );
    }
    assert_lines(
        &c.cmd(&format!("v12 UID SEARCH RETURN (COUNT) SAVEDSINCE {today}")),
        &[
            "* ESEARCH (TAG \"v12\") UID COUNT 1",
            "v12 OK SEARCH completed",
        ],
    );
    // The rewritten key cannot be forged, and a key without a date is BAD.
    assert_lines(
        &c.cmd("v13 SEARCH HEADER \":saved\" \"on 1\""),
        &["v13 BAD :saved is reserved"],
    );
    assert_lines(
        &c.cmd("v14 SEARCH SAVEDON"),
        &["v14 BAD SAVEDON needs a date (d-Mon-yyyy)"],
    );
    // A COPY is saved anew in its mailbox.
    c.cmd_ok("v15 CREATE Saved");
    c.cmd_ok("v16 COPY 1 Saved");
    c.cmd_ok("v17 SELECT Saved");
    let lines = c.cmd_ok("v18 UID FETCH 1 (SAVEDATE)");
    let copied = parse_date(&item(&lines[0], "SAVEDATE"));
    assert!(copied >= saved && copied <= now() + 1, "{lines:?}");
}

/// A message imported from a Maildir has no placement time: its save date
/// is its internal date (the file's mtime), as for rows an older index
/// kept.
#[test]
fn an_imported_message_is_saved_at_its_internal_date() {
    let s = TestServer::start(IMAP_CONFIG);
    s.add_user_with_password(USER, PASS);
    let dir = tempfile::tempdir().unwrap();
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let file = dir.path().join("cur/1577836800.M1P1.host:2,S");
    fs::write(
        &file,
        b"From: a@example.org\r\nSubject: imported\r\n\r\nbody\r\n",
    )
    .unwrap();
    let mtime = UNIX_EPOCH + Duration::from_secs(1_577_836_800);
    fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    s.cli_ok(&[
        "import",
        "maildir",
        "--user",
        USER,
        dir.path().to_str().unwrap(),
    ]);
    let mut c = s.imap_login(USER, PASS);
    c.cmd_ok("i1 SELECT INBOX");
    assert_lines(
        &c.cmd("i2 FETCH 1 (INTERNALDATE SAVEDATE)"),
        &[
            // UID stands in for SAVEDATE in what imap-codec decodes
            // (objectid.rs), and comes unasked (RFC 3501 §7.4.2 allows it).
            "* 1 FETCH (INTERNALDATE \"01-Jan-2020 00:00:00 +0000\" UID 1 SAVEDATE \"01-Jan-2020 00:00:00 +0000\")",
            "i2 OK FETCH completed",
        ],
    );
    assert_lines(
        &c.cmd("i3 SEARCH SAVEDON 1-Jan-2020"),
        &["* SEARCH 1", "i3 OK SEARCH completed"],
    );
}
