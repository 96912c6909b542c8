//! RFC 5322 §3.4 address lists, with the §4.4 obsolete forms (source
//! routes, dotted phrases), turned into RFC 3501 §7.4.2 address structures
//! `(name adl mailbox host)`.
//!
//! Input is an unfolded raw header value. Encoded words are not decoded.
//! The parser never fails. A broken address yields what could be read, and
//! junk is skipped up to the next `,`.
//! - `name`: the display name (quoted strings unquoted, words joined by one
//!   space where the input had whitespace). Without one, the last comment,
//!   as in `user@host (Real Name)`.
//! - `adl`: an obsolete source route, `@a,@b` from `<@a,@b:user@host>`.
//! - Groups: `Name: a@x, b@y;` gives a start marker (NIL NIL "Name" NIL),
//!   the members, then an end marker (NIL NIL NIL NIL).
//! - A missing domain (`root`, `Name <root>`) gives host "MISSING_DOMAIN"
//!   and a missing local part (`<>`, `<@host>`) mailbox "MISSING_MAILBOX",
//!   as Dovecot answers: RFC 3501 §7.4.2 gives a NIL host only to group
//!   markers, so a client reading `(NIL NIL "root" NIL)` sees the start of
//!   a group called "root". The placeholders are only how the address is
//!   written; the parsed [`Mailbox`] keeps what the header said.

use super::imap_string::{push_nstring, push_string};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum AddressItem {
    Mailbox(Mailbox),
    GroupStart(Vec<u8>),
    GroupEnd,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Mailbox {
    pub name: Option<Vec<u8>>,
    pub route: Option<Vec<u8>>,
    pub local: Vec<u8>,
    pub domain: Option<Vec<u8>>,
}

/// Writes an address list: `((...)(...))`, or NIL when it holds nothing.
pub(super) fn write_address_list(out: &mut Vec<u8>, items: &[AddressItem]) {
    if items.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for item in items {
        out.push(b'(');
        match item {
            AddressItem::Mailbox(m) => {
                push_nstring(out, m.name.as_deref());
                out.push(b' ');
                push_nstring(out, m.route.as_deref());
                out.push(b' ');
                push_string(out, or_placeholder(Some(&m.local), MISSING_MAILBOX));
                out.push(b' ');
                push_string(out, or_placeholder(m.domain.as_deref(), MISSING_DOMAIN));
            }
            AddressItem::GroupStart(name) => {
                out.extend_from_slice(b"NIL NIL ");
                push_string(out, name);
                out.extend_from_slice(b" NIL");
            }
            AddressItem::GroupEnd => out.extend_from_slice(b"NIL NIL NIL NIL"),
        }
        out.push(b')');
    }
    out.push(b')');
}

/// What an address without a local part / domain shows in its place
/// (Dovecot's words; RFC 3501 §7.4.2 keeps NIL for group markers).
const MISSING_MAILBOX: &[u8] = b"MISSING_MAILBOX";
const MISSING_DOMAIN: &[u8] = b"MISSING_DOMAIN";

fn or_placeholder<'a>(part: Option<&'a [u8]>, placeholder: &'a [u8]) -> &'a [u8] {
    part.filter(|p| !p.is_empty()).unwrap_or(placeholder)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// An atom, or a quoted string's content.
    Word(Vec<u8>),
    Comment(Vec<u8>),
    /// `[...]`, brackets included.
    DomainLiteral(Vec<u8>),
    Special(u8),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    space_before: bool,
}

const SPECIALS: &[u8] = b"()<>[]:;@\\,.\"";

fn lex(s: &[u8]) -> Vec<Token> {
    let mut toks = Vec::new();
    let mut space = false;
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        let tok = match b {
            b' ' | b'\t' | b'\r' | b'\n' => {
                space = true;
                i += 1;
                continue;
            }
            b'(' => {
                let (content, next) = comment(s, i);
                i = next;
                toks.push(Token {
                    tok: Tok::Comment(content),
                    space_before: space,
                });
                space = true;
                continue;
            }
            b'"' => {
                let (content, next) = quoted(s, i);
                i = next;
                Tok::Word(content)
            }
            b'[' => {
                let end = s[i..]
                    .iter()
                    .position(|&c| c == b']')
                    .map_or(s.len(), |p| i + p + 1);
                let literal = s[i..end].to_vec();
                i = end;
                Tok::DomainLiteral(literal)
            }
            _ if SPECIALS.contains(&b) => {
                i += 1;
                Tok::Special(b)
            }
            _ => {
                let start = i;
                while s.get(i).is_some_and(|&c| {
                    !SPECIALS.contains(&c) && !matches!(c, b' ' | b'\t' | b'\r' | b'\n')
                }) {
                    i += 1;
                }
                Tok::Word(s[start..i].to_vec())
            }
        };
        toks.push(Token {
            tok,
            space_before: space,
        });
        space = false;
    }
    toks
}

/// A comment starting at `s[start] == '('`: its content (nested parens kept,
/// quoted-pairs unescaped, trimmed) and the offset after it.
fn comment(s: &[u8], start: usize) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut i = start;
    while let Some(&b) = s.get(i) {
        i += 1;
        match b {
            b'\\' => {
                if let Some(&next) = s.get(i) {
                    out.push(next);
                    i += 1;
                }
                continue;
            }
            b'(' => {
                depth += 1;
                if depth == 1 {
                    continue;
                }
            }
            b')' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            b'\r' | b'\n' => continue,
            _ => {}
        }
        out.push(b);
    }
    (super::header::unfold(&out), i)
}

/// A quoted string starting at `s[start] == '"'`: its unescaped content and
/// the offset after the closing quote (or the end).
fn quoted(s: &[u8], start: usize) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut i = start + 1;
    while let Some(&b) = s.get(i) {
        i += 1;
        match b {
            b'"' => break,
            b'\\' => {
                if let Some(&next) = s.get(i) {
                    out.push(next);
                    i += 1;
                }
            }
            b'\r' | b'\n' => {}
            _ => out.push(b),
        }
    }
    (out, i)
}

/// Parses an unfolded address-list value (From, To, Cc, ...).
pub(super) fn parse_address_list(value: &[u8]) -> Vec<AddressItem> {
    let mut p = Parser {
        toks: lex(value),
        i: 0,
        out: Vec::new(),
        in_group: false,
    };
    while let Some(tok) = p.peek() {
        match tok {
            Tok::Special(b',') => p.i += 1,
            Tok::Special(b';') => {
                if p.in_group {
                    p.out.push(AddressItem::GroupEnd);
                    p.in_group = false;
                }
                p.i += 1;
            }
            _ => p.mailbox_or_group(),
        }
    }
    if p.in_group {
        p.out.push(AddressItem::GroupEnd);
    }
    p.out
}

struct Parser {
    toks: Vec<Token>,
    i: usize,
    out: Vec<AddressItem>,
    in_group: bool,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i).map(|t| &t.tok)
    }

    /// Reads words and dots (and notes comments) until a special token.
    fn words(&mut self, comments: &mut Vec<Vec<u8>>, stop: &[u8]) -> Vec<Token> {
        let mut words = Vec::new();
        while let Some(t) = self.toks.get(self.i) {
            match &t.tok {
                Tok::Special(c) if stop.contains(c) => break,
                Tok::Comment(c) => comments.push(c.clone()),
                Tok::Word(_) | Tok::DomainLiteral(_) | Tok::Special(b'.') => words.push(t.clone()),
                Tok::Special(_) => {}
            }
            self.i += 1;
        }
        words
    }

    fn mailbox_or_group(&mut self) {
        let mut comments = Vec::new();
        let phrase = self.words(&mut comments, b"<:@,;");
        match self.peek() {
            Some(Tok::Special(b':')) => {
                self.i += 1;
                if !self.in_group {
                    self.out
                        .push(AddressItem::GroupStart(render(&phrase, true)));
                    self.in_group = true;
                }
            }
            Some(Tok::Special(b'<')) => {
                self.i += 1;
                let mut mailbox = self.angle_addr(&mut comments);
                self.skip_to_separator(&mut comments);
                mailbox.name = if phrase.is_empty() {
                    last_comment(comments)
                } else {
                    Some(render(&phrase, true))
                };
                self.push(mailbox);
            }
            Some(Tok::Special(b'@')) => {
                self.i += 1;
                let domain = self.words(&mut comments, b"<>:@,;");
                self.skip_to_separator(&mut comments);
                self.push(Mailbox {
                    name: last_comment(comments),
                    route: None,
                    local: render(&phrase, false),
                    domain: Some(render(&domain, false)),
                });
            }
            _ if !phrase.is_empty() => self.push(Mailbox {
                name: last_comment(comments),
                local: render(&phrase, true),
                ..Mailbox::default()
            }),
            _ => {}
        }
    }

    /// After `<`: `[route ":"] local ["@" domain] [">"]`.
    fn angle_addr(&mut self, comments: &mut Vec<Vec<u8>>) -> Mailbox {
        let mut route = None;
        if let Some(Tok::Special(b'@')) = self.peek() {
            let start = self.i;
            let mut text = Vec::new();
            while let Some(tok) = self.peek() {
                match tok {
                    Tok::Special(b':') => break,
                    Tok::Special(b'>' | b';' | b'<') => break,
                    Tok::Special(c) => text.push(*c),
                    Tok::Word(w) | Tok::DomainLiteral(w) => text.extend_from_slice(w),
                    Tok::Comment(_) => {}
                }
                self.i += 1;
            }
            if let Some(Tok::Special(b':')) = self.peek() {
                self.i += 1;
                route = Some(text);
            } else {
                self.i = start;
            }
        }
        let local = self.words(comments, b"<>@,;");
        let mut domain = None;
        if let Some(Tok::Special(b'@')) = self.peek() {
            self.i += 1;
            domain = Some(render(&self.words(comments, b"<>@,;"), false));
        }
        if let Some(Tok::Special(b'>')) = self.peek() {
            self.i += 1;
        }
        Mailbox {
            name: None,
            route,
            local: render(&local, false),
            domain,
        }
    }

    /// Skips to the next `,` or `;`, keeping the comments on the way.
    fn skip_to_separator(&mut self, comments: &mut Vec<Vec<u8>>) {
        while let Some(tok) = self.peek() {
            match tok {
                Tok::Special(b',' | b';') => return,
                Tok::Comment(c) => comments.push(c.clone()),
                _ => {}
            }
            self.i += 1;
        }
    }

    fn push(&mut self, mailbox: Mailbox) {
        self.out.push(AddressItem::Mailbox(mailbox));
    }
}

/// Joins words; with `spaced`, one space wherever the input had whitespace.
fn render(words: &[Token], spaced: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, t) in words.iter().enumerate() {
        if spaced && n > 0 && t.space_before {
            out.push(b' ');
        }
        match &t.tok {
            Tok::Word(w) | Tok::DomainLiteral(w) => out.extend_from_slice(w),
            Tok::Special(c) => out.push(*c),
            Tok::Comment(_) => {}
        }
    }
    out
}

fn last_comment(comments: Vec<Vec<u8>>) -> Option<Vec<u8>> {
    comments.into_iter().rev().find(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imap(value: &str) -> String {
        let mut out = Vec::new();
        write_address_list(&mut out, &parse_address_list(value.as_bytes()));
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn plain_and_named() {
        assert_eq!(imap("a@b.example"), r#"((NIL NIL "a" "b.example"))"#);
        assert_eq!(
            imap("Terry Gray <gray@cac.washington.edu>"),
            r#"(("Terry Gray" NIL "gray" "cac.washington.edu"))"#
        );
        assert_eq!(
            imap("<x@y>, z@w"),
            r#"((NIL NIL "x" "y")(NIL NIL "z" "w"))"#
        );
    }

    #[test]
    fn quoted_names_are_unquoted() {
        assert_eq!(
            imap(r#""Doe, John" <jd@x>"#),
            r#"(("Doe, John" NIL "jd" "x"))"#
        );
        assert_eq!(
            imap(r#""J \"Jay\" \\ D" <j@x>"#),
            r#"(("J \"Jay\" \\ D" NIL "j" "x"))"#
        );
        assert_eq!(
            imap(r#"John "Q."   Public <j@x>"#),
            r#"(("John Q. Public" NIL "j" "x"))"#
        );
    }

    #[test]
    fn comment_names() {
        assert_eq!(
            imap("user@host (Real Name)"),
            r#"(("Real Name" NIL "user" "host"))"#
        );
        assert_eq!(
            imap("(Real (nested) \\) Name) user@host"),
            r#"(("Real (nested) ) Name" NIL "user" "host"))"#
        );
        assert_eq!(imap("<u@h> (C)"), r#"(("C" NIL "u" "h"))"#);
        // A display name beats a comment.
        assert_eq!(imap("Name (c) <u@h>"), r#"(("Name" NIL "u" "h"))"#);
    }

    #[test]
    fn obsolete_dotted_phrase_and_local_part() {
        assert_eq!(imap("A.B. Smith <s@x>"), r#"(("A.B. Smith" NIL "s" "x"))"#);
        assert_eq!(
            imap("john . doe @ example . com"),
            r#"((NIL NIL "john.doe" "example.com"))"#
        );
        assert_eq!(imap(r#""john doe"@x"#), r#"((NIL NIL "john doe" "x"))"#);
        assert_eq!(imap("a@[192.0.2.1]"), r#"((NIL NIL "a" "[192.0.2.1]"))"#);
    }

    #[test]
    fn encoded_words_stay_raw() {
        assert_eq!(
            imap("=?utf-8?q?Al=C3=AFce?= =?utf-8?q?_B?= <a@x>"),
            r#"(("=?utf-8?q?Al=C3=AFce?= =?utf-8?q?_B?=" NIL "a" "x"))"#
        );
    }

    #[test]
    fn source_route() {
        assert_eq!(
            imap("Joe <@r1.example,@r2.example:joe@x>"),
            r#"(("Joe" "@r1.example,@r2.example" "joe" "x"))"#
        );
        // "<@x>" is no route: a local part missing, the domain kept.
        assert_eq!(imap("<@x>"), r#"((NIL NIL "MISSING_MAILBOX" "x"))"#);
    }

    #[test]
    fn groups() {
        assert_eq!(
            imap("undisclosed-recipients:;"),
            r#"((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL))"#
        );
        assert_eq!(
            imap("A Group: a@x, Bee <b@y>; c@z"),
            r#"((NIL NIL "A Group" NIL)(NIL NIL "a" "x")("Bee" NIL "b" "y")(NIL NIL NIL NIL)(NIL NIL "c" "z"))"#
        );
        // Unterminated group gets its end marker.
        assert_eq!(
            imap("G: a@x"),
            r#"((NIL NIL "G" NIL)(NIL NIL "a" "x")(NIL NIL NIL NIL))"#
        );
    }

    /// A missing host or mailbox is a placeholder, never NIL, which
    /// RFC 3501 §7.4.2 reserves for group markers (Dovecot answers the same).
    #[test]
    fn missing_host_and_mailbox_are_placeholders() {
        assert_eq!(imap("root"), r#"((NIL NIL "root" "MISSING_DOMAIN"))"#);
        assert_eq!(
            imap("Root <root>, a@"),
            r#"(("Root" NIL "root" "MISSING_DOMAIN")(NIL NIL "a" "MISSING_DOMAIN"))"#
        );
        assert_eq!(
            imap("Undisclosed recipients"),
            r#"((NIL NIL "Undisclosed recipients" "MISSING_DOMAIN"))"#
        );
        assert_eq!(
            imap("<>"),
            r#"((NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN"))"#
        );
        assert_eq!(imap(""), "NIL");
        assert_eq!(imap(" , ,, "), "NIL");
        assert_eq!(imap("(only a comment)"), "NIL");
        // The parsed value keeps what the header said.
        assert_eq!(
            parse_address_list(b"root"),
            vec![AddressItem::Mailbox(Mailbox {
                local: b"root".to_vec(),
                ..Mailbox::default()
            })]
        );
    }

    #[test]
    fn garbage_never_panics_and_recovers_at_commas() {
        // "<<" leaves an empty address before the comma.
        assert_eq!(
            imap("<<a@b>> , c@d"),
            r#"((NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")(NIL NIL "c" "d"))"#
        );
        for s in [
            "<",
            ">",
            "\"",
            "(",
            "@",
            ":",
            ";",
            "a@",
            "@b",
            "<a@b",
            "\"unterminated <a@b>",
            "(x <a@b>",
            "a:b:c;;",
            "[",
            "\\",
        ] {
            let _ = imap(s);
        }
    }

    #[test]
    fn eight_bit_names_become_literals() {
        assert_eq!(
            imap("Jos\u{e9} <j@x>"),
            "(({5}\r\nJos\u{e9} NIL \"j\" \"x\"))"
        );
    }
}
