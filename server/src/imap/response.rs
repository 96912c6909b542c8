//! Writing IMAP responses (RFC 3501 §7, formal syntax §9). imap-types has
//! no variant for some responses we send, so responses are written as bytes
//! here, with the quoting rules in one place.

use cove_store::Flags;

/// A string as IMAP `string`: quoted when it can be, a literal otherwise.
pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    let quotable = s.iter().all(|b| *b >= 0x20 && *b < 0x7f);
    quoted_or_literal(out, s, quotable);
}

/// A string that may hold UTF-8 (RFC 9051 §9 QUOTED-CHAR allows it in a
/// quoted string): quoted when it can be, a literal otherwise.
pub fn utf8_string(out: &mut Vec<u8>, s: &str) {
    let quotable = s.chars().all(|c| c >= ' ' && c != '\u{7f}');
    quoted_or_literal(out, s.as_bytes(), quotable);
}

/// `s` quoted (when `quotable` and short), or as a literal.
fn quoted_or_literal(out: &mut Vec<u8>, s: &[u8], quotable: bool) {
    if quotable && s.len() < 1024 {
        out.push(b'"');
        for b in s {
            if *b == b'"' || *b == b'\\' {
                out.push(b'\\');
            }
            out.push(*b);
        }
        out.push(b'"');
    } else {
        literal(out, s);
    }
}

/// A literal: `{n}CRLF` and the bytes, a NUL byte sent as 0x80.
///
/// RFC 3501 §9 (CHAR8 = %x01-ff) and RFC 9051 §9 allow no NUL in a
/// literal; only a literal8 may carry one, and only in a BINARY response
/// (RFC 3516 §4.2). Stored content can hold NUL (a BINARY APPEND, a
/// delivery that carried one), so every BODY[], RFC822 and header literal
/// goes through here. 0x80 is Dovecot's choice too: one byte for one, so
/// the length, RFC822.SIZE and partial-fetch offsets stay those of the
/// stored message, and a client that needs the exact bytes asks BINARY.
pub fn literal(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
    if s.contains(&0) {
        out.extend(s.iter().map(|&b| if b == 0 { 0x80 } else { b }));
    } else {
        out.extend_from_slice(s);
    }
}

/// RFC 3516 §4.2 literal8: `~{n}CRLF` and the bytes exactly, NUL included.
/// Only for BINARY[...] data.
pub fn literal8(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(format!("~{{{}}}\r\n", s.len()).as_bytes());
    out.extend_from_slice(s);
}

/// A mailbox name (already in modified UTF-7): an atom when it is one,
/// otherwise a string.
pub fn mailbox(out: &mut Vec<u8>, name: &str) {
    let atom = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"(){ %*\"\\]".contains(&b));
    if atom {
        out.extend_from_slice(name.as_bytes());
    } else {
        string(out, name.as_bytes());
    }
}

/// A set of UIDs or message numbers in the shortest form, `1:3,7,9:10`
/// (COPYUID, VANISHED, MODIFIED). The numbers may come in any order.
pub fn number_set(numbers: &[u32]) -> String {
    let mut sorted = numbers.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}:{end}")
        });
        i += 1;
    }
    out.join(",")
}

/// ` MODSEQ (n)` after the FLAGS of a FETCH response once CONDSTORE is
/// enabled (RFC 7162 §3.1.4), nothing before.
pub fn modseq_item(enabled: super::condstore::Enabled, modseq: u64) -> String {
    if enabled.condstore {
        format!(" MODSEQ ({modseq})")
    } else {
        String::new()
    }
}

/// `(\Seen \Flagged kw1)`, with `\Recent` when asked.
pub fn flag_list(flags: Flags, keywords: &[String], recent: bool) -> String {
    let mut parts: Vec<&str> = flags.imap_names();
    if recent {
        parts.push("\\Recent");
    }
    parts.extend(keywords.iter().map(String::as_str));
    format!("({})", parts.join(" "))
}

/// An INTERNALDATE: `"17-Jul-1996 02:44:25 -0700"` (always UTC here).
pub fn internal_date(secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "\"{:02}-{}-{:04} {:02}:{:02}:{:02} +0000\"",
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (the well-known era-based algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days since 1970-01-01 of a civil date (inverse of `civil_from_days`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_literal_carries_nul_but_literal8_does() {
        let render = |write: fn(&mut Vec<u8>, &[u8]), s: &[u8]| {
            let mut out = Vec::new();
            write(&mut out, s);
            out
        };
        assert_eq!(render(literal, b"a\0b\0"), b"{4}\r\na\x80b\x80");
        assert_eq!(render(string, b"x\0"), b"{2}\r\nx\x80");
        assert_eq!(render(literal8, b"a\0b"), b"~{3}\r\na\0b");
    }

    #[test]
    fn quoting() {
        let mut out = Vec::new();
        string(&mut out, b"a \"b\" \\c");
        assert_eq!(out, b"\"a \\\"b\\\" \\\\c\"");
        out.clear();
        string(&mut out, b"line\r\nbreak");
        assert_eq!(out, b"{11}\r\nline\r\nbreak");
        out.clear();
        mailbox(&mut out, "Sent Items");
        assert_eq!(out, b"\"Sent Items\"");
        out.clear();
        mailbox(&mut out, "INBOX");
        assert_eq!(out, b"INBOX");
    }

    #[test]
    fn number_sets() {
        assert_eq!(number_set(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
        assert_eq!(number_set(&[10, 9, 1, 1]), "1,9:10");
        assert_eq!(number_set(&[]), "");
    }

    #[test]
    fn dates() {
        assert_eq!(internal_date(0), "\"01-Jan-1970 00:00:00 +0000\"");
        assert_eq!(internal_date(837_570_265), "\"17-Jul-1996 02:24:25 +0000\"");
        assert_eq!(days_from_civil(1996, 7, 17), 837_570_265 / 86_400);
        assert_eq!(
            flag_list(Flags::SEEN | Flags::FLAGGED, &["work".into()], true),
            "(\\Flagged \\Seen \\Recent work)"
        );
    }
}
