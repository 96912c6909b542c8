//! cove's SORT/THREAD engine (server/src/imap/sort/, not wired to the
//! commands yet) against Dovecot's SORT and THREAD, on the messages of
//! `tests/corpus/` (three of them a small thread, one of those without
//! References).
//!
//! The corpus goes to Dovecot's own `imap` (`dovecot_imap.rs`) by APPEND
//! with INTERNALDATEs one minute apart, latest first, so that ARRIVAL is not
//! mailbox order. The engine gets the same messages as
//! `sort::header_keys(bytes)` plus those INTERNALDATEs and Dovecot's
//! RFC822.SIZE; its answers, written with sequence numbers, must equal
//! Dovecot's `* SORT` and `* THREAD` lines, except the differences listed in
//! [`KNOWN_DIFFERENCES`].

use cove::imap::sort::{self, Algorithm, MessageKeys, SortCriterion, SortKey};

use crate::dovecot_imap::{Dovecot, corpus, dovecot_imap_installed};
use crate::imap_value::text;

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
    let messages: Vec<(&[u8], i64)> = corpus
        .iter()
        .enumerate()
        .map(|(i, (_, m))| (m.as_slice(), JAN_1_2026 + (n - i) as i64 * 60))
        .collect();
    let keys = load(&mut dovecot, &messages);

    let differences = compare(&mut dovecot, &keys);
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

/// Random mailboxes (fixed seeds) with what makes threading hard: replies
/// to messages not in the mailbox, duplicate and missing Message-IDs,
/// references to later messages (loops), equal and unparsable dates,
/// every kind of Re:/Fwd:/[blob] decoration. Every answer must be
/// Dovecot's, with no exception listed.
#[test]
fn random_mailboxes_sort_and_thread_as_dovecot() {
    if !dovecot_imap_installed() {
        return;
    }
    for seed in [1u64, 2, 3] {
        let mut dovecot = Dovecot::start();
        let headers = random_mailbox(seed, 400);
        let messages: Vec<(&[u8], i64)> = headers
            .iter()
            .map(|(h, internal)| (h.as_slice(), *internal))
            .collect();
        let keys = load(&mut dovecot, &messages);
        let answers = compare(&mut dovecot, &keys);
        drop(dovecot);
        for (command, ours, theirs) in answers {
            assert_eq!(ours, theirs, "seed {seed}, {command}");
        }
    }
}

/// APPENDs `messages` (bytes, INTERNALDATE in January 2026) to Dovecot's
/// INBOX, selects it, and returns the engine's keys for them, sizes as
/// Dovecot counts them.
fn load(dovecot: &mut Dovecot, messages: &[(&[u8], i64)]) -> Vec<MessageKeys> {
    let mut keys = Vec::with_capacity(messages.len());
    for (i, &(message, internal)) in messages.iter().enumerate() {
        let t = internal - JAN_1_2026;
        assert!(
            (0..31 * 86_400).contains(&t),
            "INTERNALDATE outside January 2026"
        );
        let date = format!(
            "{:02}-Jan-2026 {:02}:{:02}:{:02} +0000",
            t / 86_400 + 1,
            t % 86_400 / 3_600,
            t % 3_600 / 60,
            t % 60
        );
        dovecot.session.append_dated("INBOX", Some(&date), message);
        let mut k = sort::header_keys(message);
        k.uid = i as u32 + 1;
        k.internal_date = internal;
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
    keys
}

/// `n` header-only messages and their INTERNALDATEs, from `seed`.
fn random_mailbox(seed: u64, n: usize) -> Vec<(Vec<u8>, i64)> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut below = |m: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % m
    };
    let decorations = [
        "",
        "",
        "Re: ",
        "RE: re: ",
        "Fwd: ",
        "[list] ",
        "Re: [list] ",
        "[list] Re: ",
        "Fw: Re: ",
    ];
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let id = match below(40) {
            0 => String::new(),
            1 if i > 0 => format!("Message-ID: <m{}@r>\r\n", below(i as u64)),
            _ => format!("Message-ID: <m{i}@r>\r\n"),
        };
        let mut refs: Vec<String> = Vec::new();
        if below(3) > 0 && i > 0 {
            for _ in 0..1 + below(4) {
                refs.push(match below(10) {
                    0 => format!("<gone{}@r>", below(20)),
                    1 => format!("<m{}@r>", i as u64 + below(5)),
                    _ => format!("<m{}@r>", below(i as u64)),
                });
            }
        }
        let mut h = id;
        match below(4) {
            0 if !refs.is_empty() => {
                h.push_str(&format!("In-Reply-To: {}\r\n", refs[refs.len() - 1]));
            }
            1 if !refs.is_empty() => {
                h.push_str(&format!("In-Reply-To: {}\r\n", refs[0]));
                h.push_str(&format!("References: {}\r\n", refs.join(" ")));
            }
            _ if !refs.is_empty() => h.push_str(&format!("References: {}\r\n", refs.join(" "))),
            _ => {}
        }
        let decoration = decorations[below(decorations.len() as u64) as usize];
        let trailer = if below(15) == 0 { " (fwd)" } else { "" };
        h.push_str(&format!(
            "Subject: {decoration}topic {}{trailer}\r\n",
            below(30)
        ));
        let date = match below(25) {
            0 => "no date at all".to_string(),
            _ => format!(
                "Fri, {} Jan 2026 {:02}:{:02}:00 +0{}00",
                1 + below(5),
                below(24),
                below(4) * 15,
                below(3)
            ),
        };
        h.push_str(&format!("Date: {date}\r\n"));
        let sender = below(12);
        h.push_str(&format!(
            "From: Person {sender} <p{sender}@example.org>\r\n\r\nbody\r\n"
        ));
        out.push((h.into_bytes(), JAN_1_2026 + below(10 * 86_400) as i64));
    }
    out
}

/// Every SORT criterion and THREAD algorithm, Dovecot's answer (on its
/// selected INBOX) beside the engine's over `keys`: (command, ours, theirs).
fn compare(dovecot: &mut Dovecot, keys: &[MessageKeys]) -> Vec<(String, String, String)> {
    let mut answers = Vec::new();
    // Prepared as the server prepares them (once per content).
    let keys: Vec<sort::Candidate> = keys.iter().map(sort::Candidate::from).collect();
    for (args, criteria) in criteria() {
        let theirs = untagged(dovecot, &format!("SORT ({args}) UTF-8 ALL"), "* SORT");
        let ours: Vec<String> = sort::sort(&keys, &criteria)
            .iter()
            .map(|i| (i + 1).to_string())
            .collect();
        answers.push((format!("SORT ({args})"), ours.join(" "), theirs));
    }
    for (name, algorithm) in [
        ("ORDEREDSUBJECT", Algorithm::OrderedSubject),
        ("REFERENCES", Algorithm::References),
    ] {
        let theirs = untagged(dovecot, &format!("THREAD {name} UTF-8 ALL"), "* THREAD");
        let ours = sort::write_threads(&sort::thread(&keys, algorithm), |i| i as u32 + 1);
        answers.push((format!("THREAD {name}"), ours, theirs));
    }
    answers
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
