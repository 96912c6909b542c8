//! cove's SORT/THREAD engine (server/src/imap/sort/, not wired to the
//! commands yet) against Dovecot's SORT and THREAD, on the messages of
//! `tests/corpus/` (three of them a small thread, one of those without
//! References).
//!
//! The corpus goes to Dovecot's own `imap` (see `mime_dovecot.rs`) by APPEND
//! with INTERNALDATEs one minute apart, latest first, so that ARRIVAL is not
//! mailbox order. The engine gets the same messages as
//! `sort::header_keys(bytes)` plus those INTERNALDATEs and Dovecot's
//! RFC822.SIZE; its answers, written with sequence numbers, must equal
//! Dovecot's `* SORT` and `* THREAD` lines, except the differences listed in
//! [`KNOWN_DIFFERENCES`].

use cove::imap::sort::{self, Algorithm, MessageKeys, SortCriterion, SortKey};

use crate::imap_value::text;
use crate::mime_dovecot::{Dovecot, corpus, dovecot_imap_installed};

/// 2026-01-01T00:00:00Z.
const JAN_1_2026: i64 = 1_767_225_600;

/// (command arguments, why cove's engine answers otherwise). Keep
/// docs/rfc-status.md in step.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[];

/// The SORT criteria compared, as sent and as the engine takes them.
fn criteria() -> Vec<(&'static str, Vec<SortCriterion>)> {
    let by = |key| SortCriterion {
        key,
        reverse: false,
    };
    let rev = |key| SortCriterion { key, reverse: true };
    vec![
        ("ARRIVAL", vec![by(SortKey::Arrival)]),
        ("DATE", vec![by(SortKey::Date)]),
        ("REVERSE DATE", vec![rev(SortKey::Date)]),
        ("SUBJECT", vec![by(SortKey::Subject)]),
        (
            "SUBJECT REVERSE ARRIVAL",
            vec![by(SortKey::Subject), rev(SortKey::Arrival)],
        ),
        ("FROM", vec![by(SortKey::From)]),
        ("TO", vec![by(SortKey::To)]),
        ("CC", vec![by(SortKey::Cc)]),
        ("SIZE", vec![by(SortKey::Size)]),
        ("DISPLAYFROM", vec![by(SortKey::DisplayFrom)]),
        ("DISPLAYTO", vec![by(SortKey::DisplayTo)]),
    ]
}

#[test]
fn sort_and_thread_engine_match_dovecot() {
    if !dovecot_imap_installed() {
        return;
    }
    let corpus = corpus();
    let n = corpus.len();
    let mut dovecot = Dovecot::start();
    let mut keys: Vec<MessageKeys> = Vec::with_capacity(n);
    for (i, (_, message)) in corpus.iter().enumerate() {
        let minute = n - i;
        let date = format!("01-Jan-2026 00:{minute:02}:00 +0000");
        dovecot.session.append_dated("INBOX", Some(&date), message);
        let mut k = sort::header_keys(message);
        k.uid = i as u32 + 1;
        k.internal_date = JAN_1_2026 + minute as i64 * 60;
        keys.push(k);
    }
    dovecot.session.command(b"SELECT INBOX");
    for (i, k) in keys.iter_mut().enumerate() {
        let size = dovecot
            .session
            .try_fetch(i + 1, "RFC822.SIZE")
            .and_then(|pairs| pairs.into_iter().find(|(name, _)| name == "RFC822.SIZE"))
            .and_then(|(_, v)| text(v.bytes()?).parse().ok());
        k.size = size.expect("RFC822.SIZE from Dovecot");
    }

    let mut differences = Vec::new();
    for (args, criteria) in criteria() {
        let theirs = untagged(&mut dovecot, &format!("SORT ({args}) UTF-8 ALL"), "* SORT");
        let ours: Vec<String> = sort::sort(&keys, &criteria)
            .iter()
            .map(|i| (i + 1).to_string())
            .collect();
        differences.push((format!("SORT ({args})"), ours.join(" "), theirs));
    }
    for (name, algorithm) in [
        ("ORDEREDSUBJECT", Algorithm::OrderedSubject),
        ("REFERENCES", Algorithm::References),
    ] {
        let theirs = untagged(
            &mut dovecot,
            &format!("THREAD {name} UTF-8 ALL"),
            "* THREAD",
        );
        let ours = sort::write_threads(&sort::thread(&keys, algorithm), |i| i as u32 + 1);
        differences.push((format!("THREAD {name}"), ours, theirs));
    }
    drop(dovecot);

    let mut report = String::new();
    for (command, ours, theirs) in &differences {
        let listed = KNOWN_DIFFERENCES.iter().any(|(c, _)| c == command);
        if (ours != theirs) != listed {
            report.push_str(&format!(
                "\n{command}{}\n  cove:    {ours}\n  dovecot: {theirs}\n",
                if listed {
                    " (listed as a difference, now equal)"
                } else {
                    ""
                }
            ));
        }
    }
    assert!(report.is_empty(), "the engine and Dovecot differ:{report}");
}

/// The data of the untagged `prefix` response to `command` (trimmed).
fn untagged(dovecot: &mut Dovecot, command: &str, prefix: &str) -> String {
    dovecot
        .session
        .command(command.as_bytes())
        .iter()
        .find_map(|r| text(r).strip_prefix(prefix).map(|s| s.trim().to_string()))
        .unwrap_or_else(|| panic!("no {prefix} for {command}"))
}
