//! Commands imap-codec cannot decode, parsed here first: LIST-EXTENDED
//! (RFC 5258) with LIST-STATUS (RFC 5819) and SPECIAL-USE (RFC 6154)
//! options, and CREATE-SPECIAL-USE (`CREATE name (USE (\Sent))`, RFC 6154
//! §3). Everything else goes to imap-codec.

use imap_codec::imap_types::status::StatusDataItemName;

/// A token of a command line: an atom, a string (quoted or literal), or a
/// parenthesised list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Atom(String),
    Str(Vec<u8>),
    List(Vec<Token>),
}

impl Token {
    fn text(&self) -> Option<String> {
        match self {
            Token::Atom(a) => Some(a.clone()),
            Token::Str(s) => Some(String::from_utf8_lossy(s).into_owned()),
            Token::List(_) => None,
        }
    }

    fn is_atom(&self, word: &str) -> bool {
        matches!(self, Token::Atom(a) if a.eq_ignore_ascii_case(word))
    }
}

/// Deepest parenthesised list accepted. The deepest these commands need is
/// 2 (`RETURN (STATUS (MESSAGES))`, `(USE (\Sent))`); the parser recurses
/// once per level, so without a bound a line of `(` would overflow the
/// stack.
pub const MAX_NESTING: usize = 8;

/// Why a line could not be tokenized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Untokenizable {
    /// Not one of ours, or broken: left to imap-codec.
    Syntax,
    /// Lists nested deeper than [`MAX_NESTING`].
    TooDeep,
}

/// Tokenize `input` (a whole command with its literals inline).
fn tokens(input: &[u8]) -> Result<Vec<Token>, Untokenizable> {
    let mut pos = 0;
    list_body(input, &mut pos, 0)
}

fn list_body(input: &[u8], pos: &mut usize, depth: usize) -> Result<Vec<Token>, Untokenizable> {
    use Untokenizable::{Syntax, TooDeep};
    let nested = depth > 0;
    let mut out = Vec::new();
    loop {
        while *pos < input.len() && input[*pos] == b' ' {
            *pos += 1;
        }
        let Some(&c) = input.get(*pos) else {
            return if nested { Err(Syntax) } else { Ok(out) };
        };
        match c {
            b'\r' | b'\n' => {
                return if nested { Err(Syntax) } else { Ok(out) };
            }
            b'(' => {
                if depth >= MAX_NESTING {
                    return Err(TooDeep);
                }
                *pos += 1;
                out.push(Token::List(list_body(input, pos, depth + 1)?));
            }
            b')' => {
                *pos += 1;
                return if nested { Ok(out) } else { Err(Syntax) };
            }
            b'"' => {
                *pos += 1;
                let mut s = Vec::new();
                loop {
                    let b = *input.get(*pos).ok_or(Syntax)?;
                    *pos += 1;
                    match b {
                        b'"' => break,
                        b'\\' => {
                            s.push(*input.get(*pos).ok_or(Syntax)?);
                            *pos += 1;
                        }
                        b'\r' | b'\n' => return Err(Syntax),
                        _ => s.push(b),
                    }
                }
                out.push(Token::Str(s));
            }
            b'{' => {
                let close = input[*pos..]
                    .iter()
                    .position(|b| *b == b'}')
                    .ok_or(Syntax)?
                    + *pos;
                let spec = std::str::from_utf8(&input[*pos + 1..close]).map_err(|_| Syntax)?;
                let n: usize = spec.trim_end_matches('+').parse().map_err(|_| Syntax)?;
                let mut start = close + 1;
                if input.get(start) == Some(&b'\r') {
                    start += 1;
                }
                if input.get(start) != Some(&b'\n') {
                    return Err(Syntax);
                }
                start += 1;
                let end = start.checked_add(n).ok_or(Syntax)?;
                let data = input.get(start..end).ok_or(Syntax)?;
                out.push(Token::Str(data.to_vec()));
                *pos = end;
            }
            _ => {
                let start = *pos;
                while *pos < input.len() && !b" ()\r\n\"".contains(&input[*pos]) {
                    *pos += 1;
                }
                out.push(Token::Atom(
                    String::from_utf8_lossy(&input[start..*pos]).into_owned(),
                ));
            }
        }
    }
}

/// What to list and what to return with each mailbox (RFC 5258 §3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    pub reference: String,
    pub patterns: Vec<String>,
    /// Selection: only subscribed mailboxes.
    pub subscribed: bool,
    /// Selection: only mailboxes with a special use.
    pub special_use: bool,
    pub recursive_match: bool,
    /// Return \Subscribed.
    pub return_subscribed: bool,
    /// Return STATUS for each mailbox (RFC 5819).
    pub return_status: Vec<StatusDataItemName>,
}

/// A command parsed here rather than by imap-codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extended {
    List {
        tag: String,
        options: ListOptions,
    },
    CreateSpecialUse {
        tag: String,
        mailbox: String,
        special_use: Vec<String>,
    },
}

fn status_item(name: &str) -> Option<StatusDataItemName> {
    Some(match name.to_ascii_uppercase().as_str() {
        "MESSAGES" => StatusDataItemName::Messages,
        "RECENT" => StatusDataItemName::Recent,
        "UIDNEXT" => StatusDataItemName::UidNext,
        "UIDVALIDITY" => StatusDataItemName::UidValidity,
        "UNSEEN" => StatusDataItemName::Unseen,
        "SIZE" => StatusDataItemName::Size,
        _ => return None,
    })
}

/// Parse the commands this module handles; `None` leaves the line to
/// imap-codec (which answers BAD if it is not IMAP either). `Some(Err)` is
/// a command of ours with bad arguments.
pub fn parse(input: &[u8]) -> Option<Result<Extended, String>> {
    // Cheap test first, on the command's name (after the tag): only LIST
    // with options and CREATE with a list are ours.
    let verb = super::framing::verb_of(input)?;
    let is_list = verb.eq_ignore_ascii_case(b"LIST");
    let is_create = verb.eq_ignore_ascii_case(b"CREATE");
    if !is_list && !is_create {
        return None;
    }
    let toks = match tokens(input) {
        Ok(t) => t,
        Err(Untokenizable::Syntax) => return None,
        Err(Untokenizable::TooDeep) => {
            return Some(Err(format!(
                "Parentheses nested deeper than {MAX_NESTING} levels"
            )));
        }
    };
    let tag = toks.first()?.text()?;
    let verb = toks.get(1)?;
    if verb.is_atom("LIST") {
        // Plain `LIST ref pattern` is imap-codec's.
        let extended = toks.len() > 4
            || matches!(toks.get(2), Some(Token::List(_)))
            || matches!(toks.get(3), Some(Token::List(_)));
        if !extended {
            return None;
        }
        return Some(parse_list(tag, &toks[2..]));
    }
    if verb.is_atom("CREATE") && toks.len() == 4 && matches!(toks.get(3), Some(Token::List(_))) {
        let mailbox = toks.get(2)?.text()?;
        let Some(Token::List(params)) = toks.get(3) else {
            return None;
        };
        let mut special_use = Vec::new();
        let mut it = params.iter();
        while let Some(p) = it.next() {
            if p.is_atom("USE") {
                match it.next() {
                    Some(Token::List(uses)) => {
                        special_use.extend(uses.iter().filter_map(Token::text))
                    }
                    _ => return Some(Err("USE needs a list of attributes".into())),
                }
            } else {
                return Some(Err(format!(
                    "Unknown CREATE parameter {}",
                    p.text().unwrap_or_default()
                )));
            }
        }
        return Some(Ok(Extended::CreateSpecialUse {
            tag,
            mailbox,
            special_use,
        }));
    }
    None
}

fn parse_list(tag: String, args: &[Token]) -> Result<Extended, String> {
    let mut options = ListOptions::default();
    let mut i = 0;
    if let Some(Token::List(select)) = args.first() {
        for opt in select {
            match opt.text().unwrap_or_default().to_ascii_uppercase().as_str() {
                "SUBSCRIBED" => options.subscribed = true,
                "SPECIAL-USE" => options.special_use = true,
                "RECURSIVEMATCH" => options.recursive_match = true,
                "REMOTE" => {}
                other => return Err(format!("Unknown LIST selection option {other}")),
            }
        }
        if options.recursive_match && !options.subscribed {
            return Err("RECURSIVEMATCH needs another selection option".into());
        }
        i = 1;
    }
    options.reference = args
        .get(i)
        .and_then(Token::text)
        .ok_or("LIST needs a reference name")?;
    match args.get(i + 1) {
        Some(Token::List(pats)) => options.patterns = pats.iter().filter_map(Token::text).collect(),
        Some(t) => options.patterns = vec![t.text().ok_or("bad pattern")?],
        None => return Err("LIST needs a mailbox pattern".into()),
    }
    let mut rest = args[i + 2..].iter();
    while let Some(t) = rest.next() {
        if !t.is_atom("RETURN") {
            return Err("Expected RETURN".into());
        }
        let Some(Token::List(ret)) = rest.next() else {
            return Err("RETURN needs a list".into());
        };
        let mut r = ret.iter();
        while let Some(opt) = r.next() {
            match opt.text().unwrap_or_default().to_ascii_uppercase().as_str() {
                "SUBSCRIBED" => options.return_subscribed = true,
                "CHILDREN" | "SPECIAL-USE" => {}
                "STATUS" => {
                    let Some(Token::List(items)) = r.next() else {
                        return Err("STATUS needs a list".into());
                    };
                    for item in items {
                        let name = item.text().unwrap_or_default();
                        options
                            .return_status
                            .push(status_item(&name).ok_or(format!("Unknown STATUS item {name}"))?);
                    }
                }
                other => return Err(format!("Unknown LIST return option {other}")),
            }
        }
    }
    Ok(Extended::List { tag, options })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(line: &str) -> ListOptions {
        match parse(line.as_bytes()) {
            Some(Ok(Extended::List { options, .. })) => options,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn plain_commands_are_left_to_imap_codec() {
        assert_eq!(parse(b"a LIST \"\" *\r\n"), None);
        assert_eq!(parse(b"a CREATE foo\r\n"), None);
        assert_eq!(parse(b"a NOOP\r\n"), None);
    }

    #[test]
    fn list_extended() {
        let o = list("a LIST (SUBSCRIBED) \"\" \"*\"\r\n");
        assert!(o.subscribed);
        assert_eq!(o.patterns, vec!["*"]);
        let o = list("a LIST \"\" (INBOX \"Sent\") RETURN (CHILDREN STATUS (MESSAGES UNSEEN))\r\n");
        assert_eq!(o.patterns, vec!["INBOX", "Sent"]);
        assert_eq!(
            o.return_status,
            vec![StatusDataItemName::Messages, StatusDataItemName::Unseen]
        );
        let o = list("a LIST (SPECIAL-USE) \"\" * RETURN (SUBSCRIBED)\r\n");
        assert!(o.special_use && o.return_subscribed);
        assert!(matches!(parse(b"a LIST (BOGUS) \"\" *\r\n"), Some(Err(_))));
        assert!(matches!(
            parse(b"a LIST (RECURSIVEMATCH) \"\" *\r\n"),
            Some(Err(_))
        ));
        let o = list("a LIST \"\" {3}\r\nabc RETURN ()\r\n");
        assert_eq!(o.patterns, vec!["abc"]);
    }

    #[test]
    fn create_special_use() {
        assert_eq!(
            parse(b"t CREATE MySent (USE (\\Sent))\r\n"),
            Some(Ok(Extended::CreateSpecialUse {
                tag: "t".into(),
                mailbox: "MySent".into(),
                special_use: vec!["\\Sent".into()]
            }))
        );
        assert!(matches!(parse(b"t CREATE x (FOO)\r\n"), Some(Err(_))));
    }

    #[test]
    fn deep_nesting_is_refused_not_recursed() {
        // 11,000 levels overflowed the stack of a tokio worker (2 MiB).
        for verb in ["LIST", "CREATE"] {
            let line = format!("a {verb} {}\r\n", "(".repeat(11_000));
            assert_eq!(
                parse(line.as_bytes()),
                Some(Err("Parentheses nested deeper than 8 levels".into())),
                "{verb}"
            );
        }
        let ok = format!(
            "a LIST \"\" * RETURN {}{}\r\n",
            "(".repeat(8),
            ")".repeat(8)
        );
        assert!(!matches!(parse(ok.as_bytes()), Some(Err(e)) if e.contains("nested")));
    }

    #[test]
    fn literal_lengths_cannot_overflow() {
        let _ = parse(b"a LIST \"\" {18446744073709551615}\r\nab\r\n");
        let _ = parse(b"a CREATE {18446744073709551614+}\r\n(x)\r\n");
    }

    #[test]
    fn garbage_never_panics() {
        for s in [
            &b"a LIST ("[..],
            b"a LIST \"",
            b"a LIST {99}\r\nab",
            b"a CREATE (",
            b"a LIST ) (",
            b"\xff LIST (x",
        ] {
            let _ = parse(s);
        }
    }
}
