//! RFC 8514 SAVEDATE: when a message was saved into its mailbox.
//!
//! The save date is the store's placement time (`Account::save_dates`):
//! set when a message is delivered, appended, copied or moved into the
//! mailbox, carried by replication with the placement, so both nodes answer
//! the same date; a message with no placement time (found by the first scan
//! of a Maildir, imported, or stored before the index kept one) answers its
//! internal date. Every mailbox supports save dates, so FETCH SAVEDATE is
//! never NIL and SAVEDATESUPPORTED matches every message (§4).
//!
//! imap-codec knows neither the FETCH item nor the search keys. The FETCH
//! item is taken off with the OBJECTID items (`objectid::split`). The search
//! keys are rewritten here, before imap-codec decodes the command, into a
//! key it knows and cove reads back: `SAVEDBEFORE d` becomes
//! `HEADER ":saved" "before <days>"`, SAVEDATESUPPORTED `ALL`. A header
//! field name never holds `:` (RFC 5322 §3.6.8), and a client's own
//! `":saved"` in a search command is refused, so the rewritten key can only
//! come from here.

use super::framing;
use super::response::days_from_civil;

/// The header name that carries a rewritten save-date key.
pub const MARKER: &str = ":saved";

/// How a save-date key compares (RFC 8514 §4, like RFC 3501's BEFORE, ON
/// and SINCE: by day, time and zone disregarded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateCmp {
    Before,
    On,
    Since,
}

/// A rewritten key read back: how it compares and the day (days since the
/// epoch). `None` when the header key is not one of ours.
pub fn read_back(name: &str, value: &str) -> Option<(DateCmp, i64)> {
    if name != MARKER {
        return None;
    }
    let (op, day) = value.split_once(' ')?;
    let cmp = match op {
        "before" => DateCmp::Before,
        "on" => DateCmp::On,
        "since" => DateCmp::Since,
        _ => return None,
    };
    Some((cmp, day.parse().ok()?))
}

/// For a SEARCH, SORT or THREAD command (UID forms too) naming a save-date
/// key: the command with each rewritten. `None` when there is nothing to
/// rewrite; `Some(Err)` for a malformed key or a client's own marker.
pub fn rewrite(bytes: &[u8]) -> Option<Result<Vec<u8>, String>> {
    let verb = framing::command_name_of(bytes)?;
    if !["SEARCH", "SORT", "THREAD"]
        .iter()
        .any(|v| verb.eq_ignore_ascii_case(v.as_bytes()))
    {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() + 32);
    let mut rewritten = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'"' => {
                let end = quoted_end(bytes, i);
                if word_is(&bytes[i + 1..end.saturating_sub(1).max(i + 1)], MARKER) {
                    return Some(Err(format!("{MARKER} is reserved")));
                }
                out.extend_from_slice(&bytes[i..end]);
                i = end;
            }
            b'{' => {
                let end = literal_end(bytes, i);
                let data_start = bytes[i..end]
                    .windows(2)
                    .position(|w| w == b"\r\n")
                    .map_or(end, |p| i + p + 2);
                if word_is(&bytes[data_start..end], MARKER) {
                    return Some(Err(format!("{MARKER} is reserved")));
                }
                out.extend_from_slice(&bytes[i..end]);
                i = end;
            }
            _ if i > 0
                && matches!(bytes[i - 1], b' ' | b'(')
                && !matches!(b, b' ' | b')' | b'(' | b'\r' | b'\n') =>
            {
                let end = bytes[i..]
                    .iter()
                    .position(|c| matches!(c, b' ' | b')' | b'(' | b'\r' | b'\n'))
                    .map_or(bytes.len(), |p| i + p);
                let word = &bytes[i..end];
                if word_is(word, MARKER) {
                    return Some(Err(format!("{MARKER} is reserved")));
                }
                let cmp = if word_is(word, "SAVEDBEFORE") {
                    Some("before")
                } else if word_is(word, "SAVEDON") {
                    Some("on")
                } else if word_is(word, "SAVEDSINCE") {
                    Some("since")
                } else {
                    None
                };
                if let Some(cmp) = cmp {
                    let Some((day, next)) = date_after(bytes, end) else {
                        let name = String::from_utf8_lossy(word).to_ascii_uppercase();
                        return Some(Err(format!("{name} needs a date (d-Mon-yyyy)")));
                    };
                    out.extend_from_slice(
                        format!("HEADER \"{MARKER}\" \"{cmp} {day}\"").as_bytes(),
                    );
                    rewritten = true;
                    i = next;
                } else if word_is(word, "SAVEDATESUPPORTED") {
                    out.extend_from_slice(b"ALL");
                    rewritten = true;
                    i = end;
                } else {
                    out.extend_from_slice(word);
                    i = end;
                }
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    rewritten.then_some(Ok(out))
}

fn word_is(word: &[u8], name: &str) -> bool {
    word.eq_ignore_ascii_case(name.as_bytes())
}

/// Where the quoted string starting at `start` ends (after its closing
/// quote; the end of `bytes` if it has none).
fn quoted_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Where the literal starting at `start` (`{n}` or `{n+}`, CRLF, n bytes)
/// ends; just after the `{` if it is not one.
fn literal_end(bytes: &[u8], start: usize) -> usize {
    let rest = &bytes[start + 1..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let after = &rest[digits..];
    let marker = match after {
        [b'+', b'}', b'\r', b'\n', ..] | [b'-', b'}', b'\r', b'\n', ..] => 4,
        [b'}', b'\r', b'\n', ..] => 3,
        _ => return start + 1,
    };
    let n: usize = std::str::from_utf8(&rest[..digits])
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    (start + 1 + digits + marker)
        .saturating_add(n)
        .min(bytes.len())
}

/// ` d-Mon-yyyy` or ` "d-Mon-yyyy"` at `at` (RFC 3501 §9 date): the day
/// in days since the epoch, and where the date ends.
fn date_after(bytes: &[u8], at: usize) -> Option<(i64, usize)> {
    let rest = bytes.get(at..)?.strip_prefix(b" ")?;
    let (text, len) = match rest.strip_prefix(b"\"") {
        Some(q) => {
            let close = q.iter().position(|b| *b == b'"')?;
            (&q[..close], close + 2)
        }
        None => {
            let end = rest
                .iter()
                .position(|b| matches!(b, b' ' | b')' | b'\r' | b'\n'))
                .unwrap_or(rest.len());
            (&rest[..end], end)
        }
    };
    let text = std::str::from_utf8(text).ok()?;
    let mut parts = text.split('-');
    let (d, m, y) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || d.is_empty() || d.len() > 2 || y.len() != 4 {
        return None;
    }
    let day: u32 = d.parse().ok()?;
    let year: i64 = y.parse().ok()?;
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let month = MONTHS.iter().position(|n| n.eq_ignore_ascii_case(m))? as u32 + 1;
    if !(1..=31).contains(&day) {
        return None;
    }
    Some((days_from_civil(year, month, day), at + 1 + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(line: &str) -> String {
        String::from_utf8(rewrite(line.as_bytes()).unwrap().unwrap()).unwrap()
    }

    #[test]
    fn save_date_keys_become_marked_header_keys() {
        let day = days_from_civil(2020, 2, 1);
        assert_eq!(
            rewritten("a SEARCH SAVEDBEFORE 1-Feb-2020\r\n"),
            format!("a SEARCH HEADER \":saved\" \"before {day}\"\r\n")
        );
        assert_eq!(
            rewritten("a UID SEARCH (savedon \"1-feb-2020\" SEEN)\r\n"),
            format!("a UID SEARCH (HEADER \":saved\" \"on {day}\" SEEN)\r\n")
        );
        assert_eq!(
            rewritten("a SORT (DATE) UTF-8 NOT SAVEDSINCE 01-Feb-2020\r\n"),
            format!("a SORT (DATE) UTF-8 NOT HEADER \":saved\" \"since {day}\"\r\n")
        );
        assert_eq!(
            rewritten("a SEARCH SAVEDATESUPPORTED\r\n"),
            "a SEARCH ALL\r\n"
        );
        // Lists and RETURN options keep every byte.
        assert_eq!(
            rewritten("a UID SEARCH RETURN (COUNT) ((SAVEDATESUPPORTED) SEEN)\r\n"),
            "a UID SEARCH RETURN (COUNT) ((ALL) SEEN)\r\n"
        );
        assert_eq!(
            read_back(MARKER, &format!("on {day}")),
            Some((DateCmp::On, day))
        );
        assert_eq!(read_back("subject", "on 1"), None);
    }

    #[test]
    fn strings_literals_and_other_commands_are_left_alone() {
        assert!(rewrite(b"a SEARCH SUBJECT \"SAVEDON 1-Feb-2020\"\r\n").is_none());
        assert!(rewrite(b"a SEARCH SUBJECT {7+}\r\nSAVEDON\r\n").is_none());
        assert!(rewrite(b"a FETCH 1 SAVEDATE\r\n").is_none());
        assert!(rewrite(b"a SELECT SAVEDON\r\n").is_none());
        // Text after a literal is still read.
        let day = days_from_civil(2020, 2, 1);
        assert_eq!(
            rewritten("a SEARCH SUBJECT {2+}\r\nab SAVEDON 1-Feb-2020\r\n"),
            format!("a SEARCH SUBJECT {{2+}}\r\nab HEADER \":saved\" \"on {day}\"\r\n")
        );
    }

    #[test]
    fn a_client_cannot_forge_the_marker_and_bad_dates_are_refused() {
        for line in [
            "a SEARCH HEADER \":saved\" \"on 1\"\r\n",
            "a SEARCH HEADER :SAVED \"on 1\"\r\n",
            "a SEARCH HEADER {6+}\r\n:saved \"on 1\"\r\n",
            "a SEARCH SAVEDON\r\n",
            "a SEARCH SAVEDON 32-Feb-2020\r\n",
            "a SEARCH SAVEDON 1-Foo-2020\r\n",
            "a SEARCH SAVEDON \"1-Feb-2020\r\n",
        ] {
            assert!(matches!(rewrite(line.as_bytes()), Some(Err(_))), "{line}");
        }
    }
}
