//! RFC 5256 §2.1: the base subject, what SORT SUBJECT and THREAD compare
//! (`Re: [list] Fwd: Hello (fwd)` → `Hello`).
//!
//! ```text
//! subj-refwd   = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"
//! subj-blob    = "[" *BLOBCHAR "]" *WSP
//! subj-leader  = (*subj-blob subj-refwd) / WSP
//! subj-trailer = "(fwd)" / WSP
//! subj-fwd     = "[fwd:" subject "]"
//! ```
//! The steps of §2.1 in order: (1) whitespace runs become one space (the
//! caller has decoded encoded words); (2) trailers go; (3) leaders go; (4) a
//! leading blob goes if something is left after it; (5) repeat 3–4; (6) a
//! `[fwd: ...]` wrapper goes, and back to 2. Whether anything of a reply or
//! forward was removed is remembered: THREAD's step 5 needs it.

/// A base subject and whether the subject was a reply or forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseSubject {
    pub text: String,
    /// A `Re:`, `Fw:`, `Fwd:`, `(fwd)` or `[fwd: ...]` was removed.
    pub is_reply_or_forward: bool,
}

/// The base subject of a decoded Subject value.
pub fn base_subject(subject: &str) -> BaseSubject {
    // Step 1: tabs and line ends to spaces, runs of spaces to one.
    let mut s = String::with_capacity(subject.len());
    for c in subject.chars() {
        let c = if matches!(c, '\t' | '\r' | '\n') {
            ' '
        } else {
            c
        };
        if !(c == ' ' && s.ends_with(' ')) {
            s.push(c);
        }
    }
    let mut reply = false;
    loop {
        // Step 2: trailers.
        loop {
            if let Some(rest) = s.strip_suffix(' ') {
                s.truncate(rest.len());
            } else if s.len() >= 5 && s.as_bytes()[s.len() - 5..].eq_ignore_ascii_case(b"(fwd)") {
                s.truncate(s.len() - 5);
                reply = true;
            } else {
                break;
            }
        }
        // Steps 3 to 5: leaders, and a leading blob.
        loop {
            let before = s.len();
            loop {
                if s.starts_with(' ') {
                    s.remove(0);
                } else if let Some(end) = refwd_leader(&s) {
                    s.drain(..end);
                    reply = true;
                } else {
                    break;
                }
            }
            if let Some(end) = blob(&s, 0)
                && !s[end..].is_empty()
            {
                s.drain(..end);
            }
            if s.len() == before {
                break;
            }
        }
        // Step 6: a [fwd: ...] wrapper.
        let wrapped =
            s.len() >= 6 && s.as_bytes()[..5].eq_ignore_ascii_case(b"[fwd:") && s.ends_with(']');
        if !wrapped {
            break;
        }
        s = s[5..s.len() - 1].to_string();
        reply = true;
    }
    BaseSubject {
        text: s,
        is_reply_or_forward: reply,
    }
}

/// `*subj-blob subj-refwd` at the start of `s`: the offset after it.
fn refwd_leader(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(end) = blob(s, i) {
        i = end;
    }
    let word = |at: usize, w: &[u8]| {
        b.get(at..at + w.len())
            .is_some_and(|x| x.eq_ignore_ascii_case(w))
    };
    if word(i, b"re") {
        i += 2;
    } else if word(i, b"fwd") {
        i += 3;
    } else if word(i, b"fw") {
        i += 2;
    } else {
        return None;
    }
    i = skip_wsp(b, i);
    if b.get(i) == Some(&b':') {
        return Some(i + 1);
    }
    let end = blob(s, i)?;
    (b.get(end) == Some(&b':')).then_some(end + 1)
}

/// `subj-blob` (`[` non-brackets `]` then spaces) at offset `at`: the
/// offset after it.
fn blob(s: &str, at: usize) -> Option<usize> {
    let b = s.as_bytes();
    if b.get(at) != Some(&b'[') {
        return None;
    }
    let close = at + 1 + b[at + 1..].iter().position(|&c| c == b']' || c == b'[')?;
    (b[close] == b']').then(|| skip_wsp(b, close + 1))
}

fn skip_wsp(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(s: &str) -> (String, bool) {
        let b = base_subject(s);
        (b.text, b.is_reply_or_forward)
    }

    fn plain(s: &str) -> (String, bool) {
        (s.to_string(), false)
    }

    fn reply(s: &str) -> (String, bool) {
        (s.to_string(), true)
    }

    #[test]
    fn plain_subjects_keep_their_text_with_single_spaces() {
        assert_eq!(base("Hello"), plain("Hello"));
        assert_eq!(base("  Hello \t  world\r\n "), plain("Hello world"));
        assert_eq!(base(""), plain(""));
        assert_eq!(base("Re"), plain("Re"));
        assert_eq!(base("Reply needed"), plain("Reply needed"));
        assert_eq!(base("Regarding: x"), plain("Regarding: x"));
    }

    #[test]
    fn reply_and_forward_leaders_go() {
        assert_eq!(base("Re: Hello"), reply("Hello"));
        assert_eq!(base("RE:Hello"), reply("Hello"));
        assert_eq!(base("Fwd: Hello"), reply("Hello"));
        assert_eq!(base("FW: Hello"), reply("Hello"));
        assert_eq!(base("re : Hello"), reply("Hello"));
        assert_eq!(base("Re[2]: Hello"), reply("Hello"));
        assert_eq!(base("Re: Re: Fwd: re: Hello"), reply("Hello"));
    }

    #[test]
    fn blobs_go_before_refwd_and_when_something_is_left() {
        assert_eq!(base("[rust-users] Re: Lifetimes"), reply("Lifetimes"));
        assert_eq!(base("Re: [rust-users] Lifetimes"), reply("Lifetimes"));
        assert_eq!(base("[a] [b] Re: [c] x"), reply("x"));
        assert_eq!(base("[list] Topic"), plain("Topic"));
        // A blob that is all there is stays.
        assert_eq!(base("[only a blob]"), plain("[only a blob]"));
        assert_eq!(base("Re: [only a blob]"), reply("[only a blob]"));
        // Unclosed brackets are text.
        assert_eq!(base("[unclosed Re: x"), plain("[unclosed Re: x"));
    }

    #[test]
    fn trailers_and_fwd_wrappers_go() {
        assert_eq!(base("Hello (fwd)"), reply("Hello"));
        assert_eq!(base("Hello (FWD) (fwd)  "), reply("Hello"));
        assert_eq!(base("[Fwd: Hello]"), reply("Hello"));
        assert_eq!(base("[fwd: Re: [list] Hello (fwd)]"), reply("Hello"));
        assert_eq!(base("Re: [Fwd: [Fwd: Hello]]"), reply("Hello"));
        // Not a wrapper (no closing bracket at the end) but a blob with
        // text after it (step 4).
        assert_eq!(base("[fwd: Hello] x"), plain("x"));
        assert_eq!(base("[fwd: [a] x"), plain("[fwd: [a] x"));
    }

    #[test]
    fn non_ascii_text_is_kept_and_never_split() {
        assert_eq!(base("Re: Grüße [ü] (fwd)"), reply("Grüße [ü]"));
        assert_eq!(base("[ü] é"), plain("é"));
        for s in [
            "[", "]", "[fwd:]", "[fwd:", "(fwd)", "Re:", "[x]Re:", "ü(fwd)", "aaü", "[fwd:ü]",
        ] {
            let _ = base_subject(s);
        }
        assert_eq!(base("[fwd:]"), reply(""));
        assert_eq!(base("Re:"), reply(""));
    }
}
