//! The fuzz targets' bodies (fuzz/src/lib.rs, included as is) on every
//! `cargo test`, without nightly or libFuzzer: over the hand-written seed
//! corpus, over deterministic mutations of it, and over each input a fuzz
//! run has found (the regressions below).

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod bodies;

use std::path::PathBuf;

use bodies::XorShift;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 7] = [
    ("imap_command", bodies::imap_command),
    ("imap_mime", bodies::imap_mime),
    ("imap_sort", bodies::imap_sort),
    ("lmtp", bodies::lmtp),
    ("pop3", bodies::pop3),
    ("passwd_file", bodies::passwd_file),
    ("managesieve", bodies::managesieve),
];

/// Random inputs per target and run.
const RANDOM_INPUTS: usize = 2_000;

/// The committed seeds (`fuzz/corpus/<target>/seed-*`), not what local fuzz
/// runs added beside them.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("seed-"))
        .map(|e| {
            let bytes = std::fs::read(e.path()).expect("read seed");
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

#[test]
fn every_target_on_its_seeds() {
    for (target, body) in TARGETS {
        for (name, bytes) in seeds(target) {
            eprintln!("{target}/{name}");
            body(&bytes);
        }
    }
}

/// Bytes and words that steer the parsers into their interesting branches.
const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"(",
    b")",
    b"\"",
    b"\\",
    b"{",
    b"}",
    b"{0}\r\n",
    b"{3}\r\n",
    b"{5+}\r\n",
    b"{4294967295}\r\n",
    b"{52428800+}\r\n",
    b"{18446744073709551615}\r\n",
    b"((((((((((((((((((((((((((((((((",
    b"NOT NOT NOT NOT NOT NOT NOT NOT NOT NOT ",
    b"OR OR OR OR OR OR OR OR OR OR ",
    b"NIL",
    b" LIST ",
    b" CREATE ",
    b"RETURN (STATUS (MESSAGES))",
    b"BODY[1.2.MIME]<0.10>",
    b"\x00",
    b"\xff",
    b"\xc3\xa9",
    b"\xe2\x82\xac",
    b"--",
    b"--simple boundary",
    b"\r\n\r\n",
    b"Content-Type: multipart/mixed; boundary=X\r\n",
    b"Content-Type: message/rfc822\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"\r\n--X\r\n",
    b"\r\n--X--\r\n",
    b"=?UTF-8?B?w6k=?=",
    b"; name*0*=utf-8''%E2; name*1=x",
    b"<a@b>",
    b"\"A Group\": a@b.c, d@e.f;",
    b"=3D=\r\n",
    b"MAIL FROM:",
    b"RCPT TO:",
    b"<@relay:",
    b"SIZE=",
    b"BODY=8BITMIME",
    b".\r\n",
    b"..",
];

/// One mutation of a seed, as a fuzzer would make it.
fn mutate(rng: &mut XorShift, seeds: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut input = seeds[rng.next_u64() as usize % seeds.len()].1.clone();
    let rounds = 1 + rng.next_u64() % 8;
    for _ in 0..rounds {
        let at = if input.is_empty() {
            0
        } else {
            rng.next_u64() as usize % (input.len() + 1)
        };
        match rng.next_u64() % 7 {
            0 if at < input.len() => input[at] ^= 1 << (rng.next_u64() % 8),
            1 => input.insert(at, rng.next_u64() as u8),
            2 => {
                let token = TOKENS[rng.next_u64() as usize % TOKENS.len()];
                input.splice(at..at, token.iter().copied());
            }
            3 => {
                let end = (at + (rng.next_u64() % 16) as usize).min(input.len());
                input.drain(at..end);
            }
            4 => {
                let end = (at + (rng.next_u64() % 64) as usize).min(input.len());
                let copy = input[at..end].to_vec();
                input.splice(end..end, copy);
            }
            5 => input.truncate(at),
            _ => {
                // Splice in part of another seed.
                let other = &seeds[rng.next_u64() as usize % seeds.len()].1;
                let from = rng.next_u64() as usize % (other.len() + 1);
                let to = (from + (rng.next_u64() % 128) as usize).min(other.len());
                input.splice(at..at, other[from..to].iter().copied());
            }
        }
    }
    input
}

#[test]
fn every_target_on_random_inputs() {
    for (target, body) in TARGETS {
        let seeds = seeds(target);
        let mut rng = XorShift::new(target.as_bytes());
        for i in 0..RANDOM_INPUTS {
            let input = if i % 4 == 0 {
                // Plain random bytes, short.
                let len = rng.next_u64() % 64;
                (0..len).map(|_| rng.next_u64() as u8).collect()
            } else {
                mutate(&mut rng, &seeds)
            };
            let outcome = std::panic::catch_unwind(|| body(&input));
            assert!(
                outcome.is_ok(),
                "{target}: input {i} panicked: {:?}",
                String::from_utf8_lossy(&input)
            );
        }
    }
}

// Findings of fuzz runs, minimised, each calling the parser the target
// called.

/// Fuzz target `lmtp`: a MAIL or RCPT line whose argument has a multi-byte
/// UTF-8 character across the end of `FROM:` / `TO:` (byte 5 / byte 3 of
/// the argument) panicked in `lmtp::command::parse` (`strip_prefix_ci`
/// sliced the `&str` inside a character), ending the LMTP connection task
/// without a reply. Such a line is a syntax error (501).
#[test]
fn lmtp_mail_rcpt_argument_cut_inside_a_character() {
    use cove::lmtp::command::{ParseError, parse};
    for line in [
        &b"RCPT a\xe2\x82\xac"[..],
        b"RCPT T.\xf2\x81\x92\xb3",
        b"MAIL abcd\xc3\xa9",
        b"MAIL FROM\xc3\xa9",
        b"mail \xe2\x82\xac\xe2\x82\xac",
    ] {
        let shown = String::from_utf8_lossy(line).into_owned();
        let parsed = std::panic::catch_unwind(|| parse(line))
            .unwrap_or_else(|_| panic!("lmtp::command::parse panicked on {shown:?}"));
        assert!(
            matches!(parsed, Err(ParseError::Syntax(_))),
            "{shown:?}: {parsed:?}"
        );
    }
    // The whole target body too.
    bodies::lmtp(b"LHLO x\r\nRCPT a\xe2\x82\xac\r\n");
}

/// Generated hostile inputs: lists nested far deeper than any command
/// needs, in every command whose parser recurses (ours for LIST and
/// CREATE, imap-codec's for SEARCH and FETCH), and literals announced far
/// larger or far more numerous than the limits. Run on a thread with the
/// stack of a tokio worker (2 MiB): 11,000 `(` in a LIST overflowed it and
/// aborted the whole server.
#[test]
fn imap_command_on_deep_nesting_and_huge_literals() {
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for depth in [9, 100, 11_000, 60_000] {
        let open = "(".repeat(depth);
        let close = ")".repeat(depth);
        for line in [
            format!("a LIST {open}\r\n"),
            format!("a LIST \"\" * RETURN {open}STATUS{close}\r\n"),
            format!("a CREATE x {open}USE{close}\r\n"),
            format!("a SEARCH {open}ALL{close}\r\n"),
            format!("a SEARCH {}ALL\r\n", "NOT ".repeat(depth)),
            format!("a SEARCH {}ALL ALL\r\n", "OR ".repeat(depth)),
            format!("a FETCH 1 {open}FLAGS{close}\r\n"),
        ] {
            inputs.push(line.into_bytes());
        }
    }
    for length in [
        "52428800+",
        "4294967295",
        "18446744073709551615+",
        "99999999999999999999999",
    ] {
        inputs.push(format!("a APPEND INBOX {{{length}}}\r\nabc\r\nb NOOP\r\n").into_bytes());
    }
    let mut many = b"a LOGIN".to_vec();
    for _ in 0..2_000 {
        many.extend_from_slice(b" {8+}\r\n12345678");
    }
    many.extend_from_slice(b"\r\n");
    inputs.push(many);
    let run = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            for input in &inputs {
                bodies::imap_command(input);
            }
        })
        .expect("thread");
    assert!(run.join().is_ok(), "a hostile input panicked");
}
