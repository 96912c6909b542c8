//! RFC 4731 ESEARCH: `SEARCH RETURN (MIN MAX COUNT ALL) criteria`, answered
//! with one `* ESEARCH (TAG "t") [UID] MIN n MAX n COUNT n ALL set` line
//! instead of the list of every number.
//!
//! imap-codec does not decode the RETURN option, so it is taken off the
//! command line here (`split_return`) and the rest goes to imap-codec as a
//! plain SEARCH; literals in the criteria are left where they are.

use super::framing;
use super::response;

/// What a `SEARCH RETURN (...)` asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchReturn {
    /// The command's tag, echoed in the response (RFC 4731 §3.1).
    pub tag: String,
    pub min: bool,
    pub max: bool,
    pub count: bool,
    pub all: bool,
    /// RFC 5182 SEARCHRES: remember the result for `$`.
    pub save: bool,
}

impl SearchReturn {
    /// RFC 5182 §2.1: SAVE alone returns no ESEARCH response.
    pub fn answers(&self) -> bool {
        self.min || self.max || self.count || self.all
    }
}

/// Whether `bytes` starts with `word` and a space (ASCII case-insensitive),
/// and what follows.
fn after_word<'a>(bytes: &'a [u8], word: &str) -> Option<&'a [u8]> {
    let n = word.len();
    let head = bytes.get(..n + 1)?;
    (head[..n].eq_ignore_ascii_case(word.as_bytes()) && head[n] == b' ').then(|| &bytes[n + 1..])
}

/// For `tag [UID] SEARCH RETURN (opts) criteria`: the options and the
/// command without them. `None` for any other command; `Some(Err)` for
/// a RETURN cove cannot honour.
pub fn split_return(bytes: &[u8]) -> Option<Result<(SearchReturn, Vec<u8>), String>> {
    let tag = framing::tag_of(bytes)?;
    let rest = bytes.get(tag.len() + 1..)?;
    let rest = after_word(rest, "UID").unwrap_or(rest);
    // RFC 5267 ESORT: SORT takes the same options, but SAVE.
    let (rest, sort) = match after_word(rest, "SEARCH") {
        Some(rest) => (rest, false),
        None => (after_word(rest, "SORT")?, true),
    };
    let after_return = after_word(rest, "RETURN")?;
    let start = bytes.len() - rest.len();
    let Some(list) = after_return.strip_prefix(b"(") else {
        return Some(Err("RETURN needs a list of options".into()));
    };
    let Some(close) = list.iter().position(|b| *b == b')') else {
        return Some(Err("RETURN options are not closed".into()));
    };
    let mut ret = SearchReturn {
        tag: tag.to_string(),
        ..SearchReturn::default()
    };
    for option in list[..close]
        .split(|b| *b == b' ')
        .filter(|o| !o.is_empty())
    {
        match option.to_ascii_uppercase().as_slice() {
            b"MIN" => ret.min = true,
            b"MAX" => ret.max = true,
            b"COUNT" => ret.count = true,
            b"ALL" => ret.all = true,
            b"SAVE" => ret.save = true,
            _ => {
                let shown = String::from_utf8_lossy(option).into_owned();
                return Some(Err(format!("Unknown RETURN option {shown}")));
            }
        }
    }
    if sort && ret.save {
        return Some(Err("SAVE is not a SORT RETURN option".into()));
    }
    // RFC 4731 §3.1: RETURN () is RETURN (ALL).
    if !ret.answers() && !ret.save {
        ret.all = true;
    }
    let Some(criteria) = list[close + 1..].strip_prefix(b" ") else {
        return Some(Err("RETURN needs criteria after it".into()));
    };
    let mut plain = bytes[..start].to_vec();
    plain.extend_from_slice(criteria);
    Some(Ok((ret, plain)))
}

/// The ESEARCH response for `hits` (numbers or UIDs with their modseqs, in
/// the order of the answer: ascending for SEARCH, the sort order for RFC
/// 5267 ESORT, whose MIN and MAX are the first and last sorted and whose
/// ALL keeps that order); with a MODSEQ search key, the highest modseq of
/// what was found (RFC 7162 §3.1.5).
pub fn write(
    out: &mut Vec<u8>,
    ret: &SearchReturn,
    uid: bool,
    hits: &[(usize, u64)],
    modseq: bool,
) {
    if !ret.answers() {
        return;
    }
    let mut line = b"* ESEARCH (TAG ".to_vec();
    response::string(&mut line, ret.tag.as_bytes());
    line.push(b')');
    if uid {
        line.extend_from_slice(b" UID");
    }
    let numbers: Vec<u32> = hits.iter().map(|(n, _)| *n as u32).collect();
    // RFC 4731 §3.1: MIN, MAX and ALL only when something matched.
    if let (Some(min), Some(max)) = (numbers.first(), numbers.last()) {
        if ret.min {
            line.extend_from_slice(format!(" MIN {min}").as_bytes());
        }
        if ret.max {
            line.extend_from_slice(format!(" MAX {max}").as_bytes());
        }
    }
    if ret.count {
        line.extend_from_slice(format!(" COUNT {}", numbers.len()).as_bytes());
    }
    if ret.all && !numbers.is_empty() {
        line.extend_from_slice(format!(" ALL {}", ordered_set(&numbers)).as_bytes());
    }
    if modseq && let Some(highest) = hits.iter().map(|(_, m)| *m).max() {
        line.extend_from_slice(format!(" MODSEQ {highest}").as_bytes());
    }
    line.extend_from_slice(b"\r\n");
    out.extend_from_slice(&line);
}

/// A sequence-set of `numbers` in their order: ranges only for ascending
/// consecutive runs (`3,5,1:2,4`), so an ascending list is written as
/// compactly as a set.
fn ordered_set(numbers: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < numbers.len() {
        let start = numbers[i];
        let mut end = start;
        while numbers
            .get(i + 1)
            .is_some_and(|n| Some(*n) == end.checked_add(1))
        {
            end += 1;
            i += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if end == start {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_options_are_taken_off_the_line() {
        let (ret, plain) = split_return(b"a1 UID SEARCH RETURN (MIN COUNT) FLAGGED\r\n")
            .expect("ours")
            .expect("valid");
        assert!(ret.min && ret.count && !ret.max && !ret.all);
        assert_eq!(ret.tag, "a1");
        assert_eq!(plain, b"a1 UID SEARCH FLAGGED\r\n");
        let (ret, plain) = split_return(b"b search return () charset UTF-8 {3}\r\nabc\r\n")
            .expect("ours")
            .expect("valid");
        assert!(ret.all);
        assert_eq!(plain, b"b search charset UTF-8 {3}\r\nabc\r\n");
        assert!(split_return(b"c SEARCH ALL\r\n").is_none());
        assert!(
            split_return(b"c SEARCH RETURN (FOO) ALL\r\n")
                .expect("ours")
                .is_err()
        );
        let (ret, _) = split_return(b"c SEARCH RETURN (SAVE) ALL\r\n")
            .expect("ours")
            .expect("valid");
        assert!(ret.save && !ret.answers());
        assert!(
            split_return(b"c SEARCH RETURN (MIN ALL\r\n")
                .expect("ours")
                .is_err()
        );
    }

    #[test]
    fn sort_return_and_ordered_sets() {
        let (ret, plain) = split_return(b"s UID SORT RETURN (MIN ALL) (DATE) UTF-8 ALL\r\n")
            .expect("ours")
            .expect("valid");
        assert!(ret.min && ret.all && !ret.count);
        assert_eq!(plain, b"s UID SORT (DATE) UTF-8 ALL\r\n");
        assert!(
            split_return(b"s SORT RETURN (SAVE) (DATE) UTF-8 ALL\r\n")
                .expect("ours")
                .is_err()
        );
        assert_eq!(ordered_set(&[3, 5, 1, 2, 4]), "3,5,1:2,4");
        assert_eq!(ordered_set(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
        assert_eq!(ordered_set(&[5, 4, 3]), "5,4,3");
        assert_eq!(ordered_set(&[u32::MAX, 1]), "4294967295,1");
        assert_eq!(ordered_set(&[]), "");
    }

    #[test]
    fn esearch_lines() {
        let ret = SearchReturn {
            tag: "A282".into(),
            min: true,
            count: true,
            ..SearchReturn::default()
        };
        let mut out = Vec::new();
        write(&mut out, &ret, false, &[(2, 1), (10, 1), (11, 1)], false);
        // RFC 4731 §3.1's example.
        assert_eq!(out, b"* ESEARCH (TAG \"A282\") MIN 2 COUNT 3\r\n");
        let mut out = Vec::new();
        write(&mut out, &ret, true, &[], false);
        assert_eq!(out, b"* ESEARCH (TAG \"A282\") UID COUNT 0\r\n");
    }
}
