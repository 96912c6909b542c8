//! LMTP command lines (RFC 2033 on RFC 5321 syntax), parsed completely into
//! a typed value before anything runs. No sockets here.

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Lhlo(String),
    /// HELO or EHLO: RFC 2033 §4.1 forbids them in LMTP.
    HeloOrEhlo,
    Mail {
        from: String,
        params: MailParams,
    },
    Rcpt {
        to: String,
    },
    Data,
    Rset,
    Noop,
    Quit,
    StartTls,
    Vrfy,
    Help,
}

/// MAIL FROM parameters (RFC 1870 SIZE, RFC 6152 BODY, RFC 6531 SMTPUTF8).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body: Body,
    pub smtputf8: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Body {
    #[default]
    SevenBit,
    EightBitMime,
}

/// Why a line is not a command we can run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// 500 5.5.2: not a command at all.
    Unrecognized,
    /// 501 5.5.4: a known command with bad arguments.
    Syntax(&'static str),
    /// 555 5.5.4: a MAIL/RCPT parameter we do not support.
    UnknownParameter(String),
    /// 501 5.1.7 / 5.1.3: a path that is not `<address>`.
    BadPath(&'static str),
}

/// Parse one command line (without its CRLF).
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let line =
        std::str::from_utf8(line).map_err(|_| ParseError::Syntax("command line is not UTF-8"))?;
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(ParseError::Syntax("control characters in command line"));
    }
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    let verb = verb.to_ascii_uppercase();
    let no_args = |cmd: Command| {
        if rest.trim().is_empty() {
            Ok(cmd)
        } else {
            Err(ParseError::Syntax("this command takes no arguments"))
        }
    };
    match verb.as_str() {
        "LHLO" => {
            let host = rest.trim();
            if host.is_empty() || host.contains(' ') {
                return Err(ParseError::Syntax("LHLO needs one host name"));
            }
            Ok(Command::Lhlo(host.to_string()))
        }
        "HELO" | "EHLO" => Ok(Command::HeloOrEhlo),
        "MAIL" => {
            let args = strip_prefix_ci(rest, "FROM:")
                .ok_or(ParseError::Syntax("expected MAIL FROM:<address>"))?;
            let (path, params) = split_path(args)?;
            Ok(Command::Mail {
                from: path.to_string(),
                params: parse_mail_params(params)?,
            })
        }
        "RCPT" => {
            let args = strip_prefix_ci(rest, "TO:")
                .ok_or(ParseError::Syntax("expected RCPT TO:<address>"))?;
            let (path, params) = split_path(args)?;
            if path.is_empty() {
                return Err(ParseError::BadPath("empty recipient"));
            }
            for p in params.split_whitespace() {
                let key = p.split('=').next().unwrap_or(p).to_ascii_uppercase();
                // ORCPT (RFC 3461) may come from an MTA that speaks DSN to us
                // regardless; it does not change delivery.
                if key != "ORCPT" {
                    return Err(ParseError::UnknownParameter(key));
                }
            }
            Ok(Command::Rcpt {
                to: path.to_string(),
            })
        }
        "DATA" => no_args(Command::Data),
        "RSET" => no_args(Command::Rset),
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_args(Command::Quit),
        "STARTTLS" => no_args(Command::StartTls),
        "VRFY" => Ok(Command::Vrfy),
        "HELP" => Ok(Command::Help),
        _ => Err(ParseError::Unrecognized),
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let s = s.trim_start();
    // `get`, not `[..]`: the line is UTF-8 and a multi-byte character may
    // straddle `prefix.len()` (found by the lmtp fuzz target).
    match s.get(..prefix.len()) {
        Some(head) if head.eq_ignore_ascii_case(prefix) => Some(s[prefix.len()..].trim_start()),
        _ => None,
    }
}

/// `<path> params...` into the address inside the brackets and the rest.
fn split_path(args: &str) -> Result<(&str, &str), ParseError> {
    let args = args.trim();
    if !args.starts_with('<') {
        return Err(ParseError::BadPath("the address must be in angle brackets"));
    }
    let end = args.find('>').ok_or(ParseError::BadPath("missing '>'"))?;
    let mut path = &args[1..end];
    // A source route (RFC 5321 §4.1.2, obsolete) is accepted and ignored.
    if path.starts_with('@')
        && let Some((_, addr)) = path.split_once(':')
    {
        path = addr;
    }
    if path.contains(['<', '>', ' ']) {
        return Err(ParseError::BadPath("malformed address"));
    }
    Ok((path, args[end + 1..].trim()))
}

fn parse_mail_params(params: &str) -> Result<MailParams, ParseError> {
    let mut out = MailParams::default();
    for p in params.split_whitespace() {
        let (key, value) = match p.split_once('=') {
            Some((k, v)) => (k.to_ascii_uppercase(), Some(v)),
            None => (p.to_ascii_uppercase(), None),
        };
        match (key.as_str(), value) {
            ("SIZE", Some(v)) => {
                out.size = Some(
                    v.parse()
                        .map_err(|_| ParseError::Syntax("SIZE needs a number"))?,
                );
            }
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => {
                out.body = Body::EightBitMime
            }
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => out.body = Body::SevenBit,
            ("BODY", _) => {
                return Err(ParseError::UnknownParameter(format!(
                    "BODY={}",
                    value.unwrap_or("")
                )));
            }
            ("SMTPUTF8", None) => out.smtputf8 = true,
            _ => return Err(ParseError::UnknownParameter(key)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(
            parse(b"LHLO mx.example.com"),
            Ok(Command::Lhlo("mx.example.com".into()))
        );
        assert_eq!(
            parse(b"lhlo"),
            Err(ParseError::Syntax("LHLO needs one host name"))
        );
        assert_eq!(parse(b"EHLO x"), Ok(Command::HeloOrEhlo));
        assert_eq!(
            parse(b"MAIL FROM:<a@b.c> SIZE=100 BODY=8BITMIME SMTPUTF8"),
            Ok(Command::Mail {
                from: "a@b.c".into(),
                params: MailParams {
                    size: Some(100),
                    body: Body::EightBitMime,
                    smtputf8: true
                }
            })
        );
        assert_eq!(
            parse(b"mail from: <>"),
            Ok(Command::Mail {
                from: "".into(),
                params: MailParams::default()
            })
        );
        assert_eq!(
            parse(b"MAIL FROM:<a@b.c> FOO=1"),
            Err(ParseError::UnknownParameter("FOO".into()))
        );
        assert_eq!(
            parse(b"MAIL FROM:a@b.c"),
            Err(ParseError::BadPath("the address must be in angle brackets"))
        );
        assert_eq!(
            parse(b"RCPT TO:<@relay:u@d.e>"),
            Ok(Command::Rcpt { to: "u@d.e".into() })
        );
        assert_eq!(
            parse(b"RCPT TO:<u@d.e> ORCPT=rfc822;u@d.e"),
            Ok(Command::Rcpt { to: "u@d.e".into() })
        );
        assert_eq!(
            parse(b"RCPT TO:<>"),
            Err(ParseError::BadPath("empty recipient"))
        );
        assert_eq!(parse(b"DATA"), Ok(Command::Data));
        assert_eq!(
            parse(b"DATA x"),
            Err(ParseError::Syntax("this command takes no arguments"))
        );
        assert_eq!(parse(b"XYZZY"), Err(ParseError::Unrecognized));
        assert_eq!(
            parse(b"\xff\xfe"),
            Err(ParseError::Syntax("command line is not UTF-8"))
        );
        assert_eq!(
            parse(b"NOOP \x01"),
            Err(ParseError::Syntax("control characters in command line"))
        );
    }
}
