//! RFC 5182 SEARCHRES: `SEARCH RETURN (SAVE ...)` remembers its result, and
//! `$` names it in a later FETCH, STORE, COPY, MOVE, UID EXPUNGE, SEARCH,
//! SORT or THREAD (the last three: in their search criteria).
//!
//! The result is kept as UIDs (§2.1: it keeps naming the same messages
//! while others are expunged), with the selected mailbox; a SELECT,
//! EXAMINE, CLOSE or UNSELECT forgets it. imap-codec does not know `$`, so
//! the session writes the saved set in its place before the command is
//! decoded (`substitute`): UIDs for a UID command, the messages' current
//! numbers otherwise; in search criteria (SEARCH, SORT, THREAD) by the key
//! it stands for instead: UIDs after `UID`, current numbers alone. An empty result becomes a UID no message has, and a
//! numbered command its UID form, so the command does nothing, as §2.1
//! says, instead of being refused for a number out of range.

use cove_store::Uid;

use super::framing;
use super::response;
use super::view::View;

/// A UID no message has (RFC 3501 §2.3.1.1: UIDs are below 2^32 - 1 in
/// practice; cove never assigns it).
const NO_MESSAGE: &str = "4294967295";

/// Where the `$` tokens of a command line are: outside quoted strings and
/// literals, standing alone between spaces, parentheses or the line end.
pub fn dollar_positions(line: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            b'"' => {
                i += 1;
                while i < line.len() && line[i] != b'"' {
                    i += if line[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'{' => {
                // A literal: skip its bytes.
                let close = line[i..].iter().position(|b| *b == b'}').map(|p| i + p);
                let n = close
                    .and_then(|c| std::str::from_utf8(&line[i + 1..c]).ok())
                    .and_then(|d| d.trim_end_matches('+').parse::<usize>().ok());
                match (close, n) {
                    (Some(c), Some(n)) if line.get(c + 1..c + 3) == Some(b"\r\n") => {
                        i = c.saturating_add(3).saturating_add(n);
                    }
                    _ => i += 1,
                }
            }
            b'$' => {
                let before = i > 0 && matches!(line[i - 1], b' ' | b'(');
                let after = matches!(line.get(i + 1), None | Some(b' ' | b')' | b'\r' | b'\n'));
                if before && after {
                    out.push(i);
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    out
}

/// The command with each `$` replaced by the saved result, or `None` when
/// it has no `$`. `saved`: the UIDs of the last SEARCH with SAVE.
pub fn substitute(line: &[u8], saved: &[Uid], view: &View) -> Option<Vec<u8>> {
    let tag = framing::tag_of(line)?;
    let uid = framing::verb_of(line).is_some_and(|v| v.eq_ignore_ascii_case(b"UID"));
    // Only where a sequence set may stand (a mailbox may be called `$`).
    let verb = if uid {
        framing::verb_of(line.get(tag.len() + 1..)?)?
    } else {
        framing::verb_of(line)?
    };
    const TAKES_SETS: [&[u8]; 8] = [
        b"FETCH", b"STORE", b"COPY", b"MOVE", b"SEARCH", b"EXPUNGE", b"SORT", b"THREAD",
    ];
    if !TAKES_SETS.iter().any(|v| verb.eq_ignore_ascii_case(v)) {
        return None;
    }
    let positions = dollar_positions(line);
    if positions.is_empty() {
        return None;
    }
    let present: Vec<Uid> = saved
        .iter()
        .copied()
        .filter(|u| view.seq_of(*u).is_some())
        .collect();
    let seqs = || -> Vec<u32> {
        present
            .iter()
            .filter_map(|u| view.seq_of(*u))
            .map(|s| s as u32)
            .collect()
    };
    if CRITERIA.iter().any(|v| verb.eq_ignore_ascii_case(v)) {
        return Some(in_criteria(line, &positions, &present, &seqs()));
    }
    let (set, as_uid) = if present.is_empty() {
        (NO_MESSAGE.to_string(), true)
    } else if uid {
        (response::number_set(&present), true)
    } else {
        (response::number_set(&seqs()), false)
    };
    let mut out = Vec::with_capacity(line.len() + set.len());
    // A numbered command naming nothing becomes its UID form.
    let from = if as_uid && !uid {
        out.extend_from_slice(tag.as_bytes());
        out.extend_from_slice(b" UID");
        tag.len()
    } else {
        0
    };
    let mut at = from;
    for p in positions {
        out.extend_from_slice(&line[at..p]);
        out.extend_from_slice(set.as_bytes());
        at = p + 1;
    }
    out.extend_from_slice(&line[at..]);
    Some(out)
}

/// The commands whose `$` stands in search criteria.
const CRITERIA: [&[u8]; 3] = [b"SEARCH", b"SORT", b"THREAD"];

/// `$` in search criteria: after the `UID` key it is the UID set; alone it
/// is a sequence set (RFC 3501 §6.4.4), so it becomes the messages'
/// current numbers, in `UID SEARCH` as in `SEARCH` (the command's UID
/// prefix says what is answered, not how the criteria number messages).
/// An empty result is a UID no message has.
fn in_criteria(line: &[u8], positions: &[usize], uids: &[Uid], seqs: &[u32]) -> Vec<u8> {
    let uid_set = if uids.is_empty() {
        NO_MESSAGE.to_string()
    } else {
        response::number_set(uids)
    };
    let seq_set = if seqs.is_empty() {
        format!("UID {NO_MESSAGE}")
    } else {
        response::number_set(seqs)
    };
    let mut out = Vec::with_capacity(line.len() + uid_set.len() + seq_set.len());
    let mut at = 0;
    for &p in positions {
        out.extend_from_slice(&line[at..p]);
        let before = &line[..p];
        let after_uid_key = before.len() >= 4
            && before[before.len() - 4..].eq_ignore_ascii_case(b"UID ")
            && matches!(
                before.len().checked_sub(5).map(|i| before[i]),
                Some(b' ' | b'(')
            );
        out.extend_from_slice(if after_uid_key { &uid_set } else { &seq_set }.as_bytes());
        at = p + 1;
    }
    out.extend_from_slice(&line[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::{dollar_positions, in_criteria};

    /// `$` alone in criteria is a sequence set, after `UID` a UID set.
    #[test]
    fn criteria_dollars_are_numbers_or_uids_by_their_key() {
        let line = b"a UID SORT (DATE) UTF-8 OR $ (uid $)\r\n";
        let positions = dollar_positions(line);
        let out = in_criteria(line, &positions, &[20, 21], &[1, 2]);
        assert_eq!(out, b"a UID SORT (DATE) UTF-8 OR 1:2 (uid 20:21)\r\n");
        let out = in_criteria(line, &positions, &[], &[]);
        assert_eq!(
            out,
            b"a UID SORT (DATE) UTF-8 OR UID 4294967295 (uid 4294967295)\r\n"
        );
    }

    #[test]
    fn only_standalone_dollars_outside_strings_and_literals() {
        assert_eq!(dollar_positions(b"a FETCH $ FLAGS\r\n"), vec![8]);
        assert_eq!(
            dollar_positions(b"a UID SEARCH UID $ SUBJECT \"$ 5\"\r\n"),
            vec![17]
        );
        assert!(dollar_positions(b"a SEARCH SUBJECT {3}\r\n $ \r\n").is_empty());
        assert!(dollar_positions(b"a STORE 1 +FLAGS ($Label)\r\n").is_empty());
        assert!(dollar_positions(b"a FETCH 1,$ FLAGS\r\n").is_empty());
        // A literal length that would overflow (found by the fuzz target).
        assert!(dollar_positions(b"a STORE {18446744073709551615}\r\n $\r\n").is_empty());
    }
}
