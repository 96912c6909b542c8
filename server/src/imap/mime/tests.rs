//! Whole-module checks: the public API on a tricky message, and robustness
//! on mutated and truncated input (no panics, well-formed IMAP syntax).

use super::part::tests::NESTED;
use super::*;

#[test]
fn public_api_on_nested_message() {
    let raw = NESTED.as_bytes();
    assert!(envelope(raw).starts_with(b"(NIL NIL ((NIL NIL \"a\" \"b\"))"));
    assert!(bodystructure(raw, true).ends_with(b" \"MIXED\" (\"BOUNDARY\" \"X\") NIL NIL NIL)"));
    assert!(bodystructure(raw, false).ends_with(b" \"MIXED\")"));
    assert_eq!(
        section_bytes(raw, &[2, 2, 1], &SectionKind::Full).as_deref(),
        Some(&b"deep body"[..])
    );
    assert_eq!(
        binary_section(raw, &[1, 1]).as_deref(),
        Some(&b"plain\r\nline2"[..])
    );

    let parsed = ParsedMessage::parse(raw);
    assert_eq!(parsed.envelope(), envelope(raw));
    assert_eq!(parsed.bodystructure(true), bodystructure(raw, true));
    let text = parsed.section(&[], &SectionKind::Text).unwrap_or_default();
    assert_eq!(partial(&text, 0, 8), b"preamble");
}

/// Checks that `out` is a sequence of well-formed IMAP atoms, numbers,
/// strings and balanced parentheses, and nothing else.
fn assert_well_formed(out: &[u8]) {
    let mut depth = 0usize;
    let mut i = 0;
    while i < out.len() {
        match out[i] {
            b'(' => depth += 1,
            b')' => {
                assert!(depth > 0, "unbalanced: {}", String::from_utf8_lossy(out));
                depth -= 1;
            }
            b' ' => {}
            b'"' => {
                i += 1;
                while out[i] != b'"' {
                    assert!(matches!(out[i], 0x01..=0x7f) && out[i] != b'\r' && out[i] != b'\n');
                    if out[i] == b'\\' {
                        i += 1;
                        assert!(out[i] == b'"' || out[i] == b'\\');
                    }
                    i += 1;
                }
            }
            b'{' => {
                let close = out[i..]
                    .iter()
                    .position(|&b| b == b'}')
                    .expect("literal length")
                    + i;
                let len: usize = std::str::from_utf8(&out[i + 1..close])
                    .expect("digits")
                    .parse()
                    .expect("number");
                assert_eq!(&out[close + 1..close + 3], b"\r\n");
                let data = &out[close + 3..close + 3 + len];
                assert!(!data.contains(&0), "NUL in literal");
                i = close + 2 + len;
            }
            b'N' => {
                assert_eq!(&out[i..i + 3], b"NIL");
                i += 2;
            }
            b'0'..=b'9' => {}
            other => panic!(
                "unexpected byte {other:#x} at {i} in {}",
                String::from_utf8_lossy(out)
            ),
        }
        i += 1;
    }
    assert_eq!(depth, 0, "unbalanced: {}", String::from_utf8_lossy(out));
}

fn exercise(raw: &[u8]) {
    let parsed = ParsedMessage::parse(raw);
    assert_well_formed(&parsed.envelope());
    assert_well_formed(&parsed.bodystructure(true));
    assert_well_formed(&parsed.bodystructure(false));
    let kinds = [
        SectionKind::Full,
        SectionKind::Header,
        SectionKind::Text,
        SectionKind::Mime,
        SectionKind::HeaderFields {
            names: vec!["subject".to_string(), "content-type".to_string()],
            not: true,
        },
    ];
    for path in [
        &[][..],
        &[1],
        &[2],
        &[1, 1],
        &[1, 2],
        &[2, 1],
        &[2, 2, 1],
        &[3, 1, 1, 1],
    ] {
        for kind in &kinds {
            if let Some(bytes) = parsed.section(path, kind) {
                let _ = partial(&bytes, 3, 10);
            }
        }
        let _ = parsed.binary(path);
    }
}

/// xorshift64*: deterministic pseudo-random numbers for mutation tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap_or(0)
    }
}

const SEEDS: &[&[u8]] = &[
    NESTED.as_bytes(),
    b"From: \"A \\\"B\\\"\" <a@b>, (c) d@e, G: x@y;\r\nSender:\r\nSubject: =?utf-8?q?x?=\r\n\
      Content-Type: multipart/digest; boundary=\"q\"\r\n\r\n--q\r\n\r\nSubject: in\r\n\r\nhi\r\n\
      --q\r\nContent-Type: text/plain; name*0*=utf-8''%E2; name*1=x\r\n\
      Content-Disposition: attachment; filename=\"a\\\"b\"\r\nContent-Transfer-Encoding: base64\r\n\r\naGk=\r\n--q--\r\n",
    b"Content-Type: message/rfc822\nContent-Transfer-Encoding: quoted-printable\n\nSubject: =3D\n\nx=\n",
];

const INTERESTING: &[u8] = b"\r\n-:\"(<>=;@ \0\xff\\)[";

#[test]
fn every_truncation_is_handled() {
    for seed in SEEDS {
        for len in 0..=seed.len() {
            exercise(&seed[..len]);
        }
    }
}

#[test]
fn random_mutations_are_handled() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for seed in SEEDS {
        for _ in 0..400 {
            let mut raw = seed.to_vec();
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(raw.len());
                match rng.below(4) {
                    0 => raw[at] = INTERESTING[rng.below(INTERESTING.len())],
                    1 => {
                        raw.remove(at);
                    }
                    2 => raw.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
                    _ => {
                        let chunk: Vec<u8> =
                            raw[at..].iter().take(rng.below(40)).copied().collect();
                        let to = rng.below(raw.len());
                        raw.splice(to..to, chunk);
                    }
                }
                if raw.is_empty() {
                    raw.push(b'\n');
                }
            }
            exercise(&raw);
        }
    }
}

#[test]
fn hostile_shapes_are_handled() {
    exercise(&b"Content-Type: message/rfc822\n\n".repeat(30_000));
    let mut deep_multipart = Vec::new();
    for n in 0..30_000 {
        deep_multipart.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=b{n}\n\n--b{n}\n").as_bytes(),
        );
    }
    exercise(&deep_multipart);
    exercise(&b"\0".repeat(1000));
    exercise(&b"\n".repeat(1000));
    exercise(&b"(".repeat(1000));
}

#[test]
fn malformed_messages_give_sensible_answers() {
    // Only headers, no line end at all.
    let raw = b"Subject: x";
    assert_eq!(
        envelope(raw),
        b"(NIL \"x\" NIL NIL NIL NIL NIL NIL NIL NIL)"
    );
    assert_eq!(
        bodystructure(raw, false),
        b"(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 0 0)"
    );
    assert_eq!(
        section_bytes(raw, &[], &SectionKind::Header).as_deref(),
        Some(&raw[..])
    );
    assert_eq!(
        section_bytes(raw, &[], &SectionKind::Text).as_deref(),
        Some(&b""[..])
    );
    // Garbage without a colon: a header line of junk, then the body.
    let raw = b"\x00\xff no colon\n\nbody\0";
    assert_eq!(envelope(raw), b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)");
    assert_eq!(
        bodystructure(raw, false),
        b"(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 5 0)"
    );
    // Empty message.
    assert_eq!(
        bodystructure(b"", true),
        b"(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 0 0 NIL NIL NIL NIL)"
    );
    assert_eq!(
        section_bytes(b"", &[1], &SectionKind::Full).as_deref(),
        Some(&b""[..])
    );
}
