//! POP3 commands on the wire (RFC 1939 §3, RFC 2449, RFC 2595, RFC 5034):
//! one line in, one typed [`Command`] out. No sockets and no store here.
//!
//! RFC 1939 §3: a keyword of three or four letters, case-insensitive,
//! followed by arguments separated by single spaces. cove also accepts runs
//! of spaces between arguments. PASS takes the rest of the line as is
//! (passwords may contain spaces, RFC 1939 §7).

use crate::auth::Secret;

/// A parsed command.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    // AUTHORIZATION state (RFC 1939 §4, §7; RFC 2595; RFC 5034)
    User(String),
    Pass(Password),
    Apop,
    Auth {
        /// `None`: `AUTH` alone, a request for the list of mechanisms.
        mechanism: Option<String>,
        /// The initial response (RFC 5034 §4), base64 or `=`.
        initial: Option<String>,
    },
    Stls,
    // Any state (RFC 2449 §5)
    Capa,
    Quit,
    // TRANSACTION state (RFC 1939 §5)
    Stat,
    List(Option<MessageNumber>),
    Retr(MessageNumber),
    Dele(MessageNumber),
    Noop,
    Rset,
    Top(MessageNumber, u64),
    Uidl(Option<MessageNumber>),
}

/// A message-number argument as the client wrote it: decimal digits
/// (whether it names a message is the maildrop's to say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageNumber(pub u64);

/// A password; `Debug` hides it.
#[derive(PartialEq, Eq)]
pub struct Password(pub String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Password {
    pub fn into_secret(self) -> Secret {
        Secret(self.0)
    }
}

/// Why a line is not a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// No such keyword.
    Unknown,
    /// A known keyword with arguments that do not fit it.
    Syntax(&'static str),
}

/// Longest argument RFC 1939 §3 allows (40 characters); user names and
/// SASL responses get more room, as clients send long addresses.
const MAX_ARG: usize = 40;

/// Parse one command line (without its CRLF).
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let (keyword, rest) = match line.iter().position(|b| *b == b' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &line[line.len()..]),
    };
    if keyword.is_empty() || keyword.len() > 4 || !keyword.iter().all(u8::is_ascii_alphabetic) {
        return Err(ParseError::Unknown);
    }
    let keyword = keyword.to_ascii_uppercase();
    if keyword == b"PASS" {
        // RFC 1939 §7: the rest of the line, spaces included.
        let pw =
            std::str::from_utf8(rest).map_err(|_| ParseError::Syntax("password is not UTF-8"))?;
        if pw.is_empty() {
            return Err(ParseError::Syntax("PASS needs a password"));
        }
        return Ok(Command::Pass(Password(pw.to_string())));
    }
    let rest =
        std::str::from_utf8(rest).map_err(|_| ParseError::Syntax("arguments are not UTF-8"))?;
    if rest.chars().any(|c| c.is_control()) {
        return Err(ParseError::Syntax("control characters in the command line"));
    }
    let args: Vec<&str> = rest.split(' ').filter(|a| !a.is_empty()).collect();
    let none = |c: Command| {
        if args.is_empty() {
            Ok(c)
        } else {
            Err(ParseError::Syntax("no arguments expected"))
        }
    };
    match &keyword[..] {
        b"USER" => match args[..] {
            [name] if name.len() <= 255 => Ok(Command::User(name.to_string())),
            _ => Err(ParseError::Syntax("USER needs one name")),
        },
        b"APOP" => Ok(Command::Apop),
        b"AUTH" => match args[..] {
            [] => Ok(Command::Auth {
                mechanism: None,
                initial: None,
            }),
            [m] => Ok(Command::Auth {
                mechanism: Some(m.to_ascii_uppercase()),
                initial: None,
            }),
            [m, ir] => Ok(Command::Auth {
                mechanism: Some(m.to_ascii_uppercase()),
                initial: Some(ir.to_string()),
            }),
            _ => Err(ParseError::Syntax(
                "AUTH takes a mechanism and an initial response",
            )),
        },
        b"STLS" => none(Command::Stls),
        b"CAPA" => none(Command::Capa),
        b"QUIT" => none(Command::Quit),
        b"STAT" => none(Command::Stat),
        b"NOOP" => none(Command::Noop),
        b"RSET" => none(Command::Rset),
        b"LIST" => optional_number(&args).map(Command::List),
        b"UIDL" => optional_number(&args).map(Command::Uidl),
        b"RETR" => one_number(&args).map(Command::Retr),
        b"DELE" => one_number(&args).map(Command::Dele),
        b"TOP" => match args[..] {
            [msg, lines] => Ok(Command::Top(
                number(msg)?,
                digits(lines).ok_or(ParseError::Syntax("Invalid number of lines"))?,
            )),
            _ => Err(ParseError::Syntax(
                "TOP needs a message number and a line count",
            )),
        },
        _ => Err(ParseError::Unknown),
    }
}

fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > MAX_ARG || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Too many digits for u64 still names no message: saturate.
    Some(s.parse().unwrap_or(u64::MAX))
}

fn number(s: &str) -> Result<MessageNumber, ParseError> {
    digits(s)
        .map(MessageNumber)
        .ok_or(ParseError::Syntax("Invalid message number"))
}

fn one_number(args: &[&str]) -> Result<MessageNumber, ParseError> {
    match args {
        [n] => number(n),
        [] => Err(ParseError::Syntax("Message number required")),
        _ => Err(ParseError::Syntax("Too many arguments")),
    }
}

fn optional_number(args: &[&str]) -> Result<Option<MessageNumber>, ParseError> {
    match args {
        [] => Ok(None),
        [n] => number(n).map(Some),
        _ => Err(ParseError::Syntax("Too many arguments")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_command() {
        assert_eq!(
            parse(b"user alice@x.org"),
            Ok(Command::User("alice@x.org".into()))
        );
        assert_eq!(
            parse(b"PASS two words "),
            Ok(Command::Pass(Password("two words ".into())))
        );
        assert_eq!(parse(b"STAT"), Ok(Command::Stat));
        assert_eq!(parse(b"list"), Ok(Command::List(None)));
        assert_eq!(parse(b"LIST 2"), Ok(Command::List(Some(MessageNumber(2)))));
        assert_eq!(parse(b"RETR 1"), Ok(Command::Retr(MessageNumber(1))));
        assert_eq!(parse(b"DELE  3"), Ok(Command::Dele(MessageNumber(3))));
        assert_eq!(parse(b"TOP 1 0"), Ok(Command::Top(MessageNumber(1), 0)));
        assert_eq!(parse(b"UIDL"), Ok(Command::Uidl(None)));
        assert_eq!(parse(b"NOOP"), Ok(Command::Noop));
        assert_eq!(parse(b"RSET"), Ok(Command::Rset));
        assert_eq!(parse(b"QUIT"), Ok(Command::Quit));
        assert_eq!(parse(b"CAPA"), Ok(Command::Capa));
        assert_eq!(parse(b"STLS"), Ok(Command::Stls));
        assert_eq!(
            parse(b"AUTH plain AGEAYg=="),
            Ok(Command::Auth {
                mechanism: Some("PLAIN".into()),
                initial: Some("AGEAYg==".into())
            })
        );
        assert_eq!(
            parse(b"AUTH"),
            Ok(Command::Auth {
                mechanism: None,
                initial: None
            })
        );
        assert_eq!(
            parse(b"RETR 99999999999999999999999"),
            Ok(Command::Retr(MessageNumber(u64::MAX)))
        );
    }

    #[test]
    fn refuses_what_does_not_fit() {
        assert_eq!(parse(b""), Err(ParseError::Unknown));
        assert_eq!(parse(b"FROB"), Err(ParseError::Unknown));
        assert_eq!(parse(b"RETRX 1"), Err(ParseError::Unknown));
        assert_eq!(parse(b"R3TR 1"), Err(ParseError::Unknown));
        assert!(matches!(parse(b"RETR"), Err(ParseError::Syntax(_))));
        assert!(matches!(parse(b"RETR x"), Err(ParseError::Syntax(_))));
        assert!(matches!(parse(b"RETR -1"), Err(ParseError::Syntax(_))));
        assert!(matches!(parse(b"RETR 1 2"), Err(ParseError::Syntax(_))));
        assert!(matches!(parse(b"TOP 1"), Err(ParseError::Syntax(_))));
        assert!(matches!(parse(b"STAT 1"), Err(ParseError::Syntax(_))));
        assert!(matches!(parse(b"PASS"), Err(ParseError::Syntax(_))));
        assert!(matches!(parse(b"USER"), Err(ParseError::Syntax(_))));
        assert!(matches!(parse(b"USER \x01"), Err(ParseError::Syntax(_))));
        assert!(matches!(parse(b"LIST \xff"), Err(ParseError::Syntax(_))));
        assert_eq!(
            format!("{:?}", parse(b"PASS secret")),
            "Ok(Pass(<redacted>))"
        );
    }
}
