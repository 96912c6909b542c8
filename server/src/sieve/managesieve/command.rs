//! The ManageSieve wire (RFC 5804 §4): a command line is an atom and
//! arguments (quoted strings, literals, numbers); a literal's bytes follow
//! its line, and the command goes on after them. No sockets here: the
//! session feeds lines and literal bytes, [`Scanner`] says what it needs
//! next, and [`Command::parse`] turns the tokens into a typed command.

/// One argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Atom(String),
    /// A quoted string or a literal's bytes.
    Str(Vec<u8>),
    Number(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// A command name no one knows.
    Unknown(String),
    /// Bad arguments, with a reason for the client.
    Syntax(&'static str),
}

/// What a scanned line asks of the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The command is complete.
    Done,
    /// Read this many literal bytes, then the next line (same command).
    Literal(u64),
}

/// Tokens of one command, gathered over its lines and literals.
#[derive(Debug, Default)]
pub struct Scanner {
    pub tokens: Vec<Token>,
}

impl Scanner {
    /// Scan one line (without its CRLF).
    pub fn line(&mut self, line: &[u8]) -> Result<Next, ParseError> {
        let mut i = 0;
        while i < line.len() {
            match line[i] {
                b' ' => i += 1,
                b'"' => {
                    let mut s = Vec::new();
                    i += 1;
                    loop {
                        match line.get(i) {
                            None => return Err(ParseError::Syntax("Unterminated quoted string")),
                            Some(b'"') => break,
                            Some(b'\\') => {
                                match line.get(i + 1) {
                                    Some(c @ (b'"' | b'\\')) => s.push(*c),
                                    _ => {
                                        return Err(ParseError::Syntax(
                                            "Bad escape in quoted string",
                                        ));
                                    }
                                }
                                i += 1;
                            }
                            Some(c) => s.push(*c),
                        }
                        i += 1;
                    }
                    i += 1;
                    self.tokens.push(Token::Str(s));
                }
                b'{' => {
                    let rest = &line[i + 1..];
                    let close = rest
                        .iter()
                        .position(|b| *b == b'}')
                        .ok_or(ParseError::Syntax("Bad literal"))?;
                    if close + 1 != rest.len() {
                        return Err(ParseError::Syntax("A literal must end its line"));
                    }
                    let digits = rest[..close].strip_suffix(b"+").unwrap_or(&rest[..close]);
                    let n = std::str::from_utf8(digits)
                        .ok()
                        .filter(|d| {
                            !d.is_empty() && d.len() <= 12 && d.bytes().all(|b| b.is_ascii_digit())
                        })
                        .and_then(|d| d.parse::<u64>().ok())
                        .ok_or(ParseError::Syntax("Bad literal length"))?;
                    return Ok(Next::Literal(n));
                }
                _ => {
                    let end = line[i..]
                        .iter()
                        .position(|b| *b == b' ')
                        .map_or(line.len(), |p| i + p);
                    let word = &line[i..end];
                    if !word.iter().all(|b| b.is_ascii_graphic()) {
                        return Err(ParseError::Syntax("Bad characters in an atom"));
                    }
                    let word = String::from_utf8_lossy(word).into_owned();
                    self.tokens.push(match word.parse::<u64>() {
                        Ok(n) if word.bytes().all(|b| b.is_ascii_digit()) => Token::Number(n),
                        _ => Token::Atom(word),
                    });
                    i = end;
                }
            }
        }
        Ok(Next::Done)
    }

    /// A literal's bytes, once read.
    pub fn literal(&mut self, bytes: Vec<u8>) {
        self.tokens.push(Token::Str(bytes));
    }
}

/// A command, parsed whole (RFC 5804 §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Authenticate {
        mechanism: String,
        initial: Option<Vec<u8>>,
    },
    StartTls,
    Logout,
    Capability,
    HaveSpace {
        name: String,
        size: u64,
    },
    PutScript {
        name: String,
        script: Vec<u8>,
    },
    ListScripts,
    SetActive {
        name: String,
    },
    GetScript {
        name: String,
    },
    DeleteScript {
        name: String,
    },
    RenameScript {
        old: String,
        new: String,
    },
    CheckScript {
        script: Vec<u8>,
    },
    Noop {
        tag: Option<String>,
    },
    Unauthenticate,
}

impl Command {
    pub fn parse(tokens: Vec<Token>) -> Result<Command, ParseError> {
        let mut it = tokens.into_iter();
        let name = match it.next() {
            Some(Token::Atom(a)) => a.to_ascii_uppercase(),
            Some(_) => return Err(ParseError::Syntax("A command starts with its name")),
            None => return Err(ParseError::Syntax("Empty command")),
        };
        let args: Vec<Token> = it.collect();
        let cmd = match (name.as_str(), args.as_slice()) {
            ("AUTHENTICATE", [Token::Str(m)]) => Command::Authenticate {
                mechanism: text(m)?.to_ascii_uppercase(),
                initial: None,
            },
            ("AUTHENTICATE", [Token::Str(m), Token::Str(ir)]) => Command::Authenticate {
                mechanism: text(m)?.to_ascii_uppercase(),
                initial: Some(ir.clone()),
            },
            ("STARTTLS", []) => Command::StartTls,
            ("LOGOUT", []) => Command::Logout,
            ("CAPABILITY", []) => Command::Capability,
            ("HAVESPACE", [Token::Str(n), Token::Number(size)]) => Command::HaveSpace {
                name: text(n)?,
                size: *size,
            },
            ("PUTSCRIPT", [Token::Str(n), Token::Str(s)]) => Command::PutScript {
                name: text(n)?,
                script: s.clone(),
            },
            ("LISTSCRIPTS", []) => Command::ListScripts,
            ("SETACTIVE", [Token::Str(n)]) => Command::SetActive { name: text(n)? },
            ("GETSCRIPT", [Token::Str(n)]) => Command::GetScript { name: text(n)? },
            ("DELETESCRIPT", [Token::Str(n)]) => Command::DeleteScript { name: text(n)? },
            ("RENAMESCRIPT", [Token::Str(o), Token::Str(n)]) => Command::RenameScript {
                old: text(o)?,
                new: text(n)?,
            },
            ("CHECKSCRIPT", [Token::Str(s)]) => Command::CheckScript { script: s.clone() },
            ("NOOP", []) => Command::Noop { tag: None },
            ("NOOP", [Token::Str(t)]) => Command::Noop {
                tag: Some(text(t)?),
            },
            ("UNAUTHENTICATE", []) => Command::Unauthenticate,
            (
                "AUTHENTICATE" | "STARTTLS" | "LOGOUT" | "CAPABILITY" | "HAVESPACE" | "PUTSCRIPT"
                | "LISTSCRIPTS" | "SETACTIVE" | "GETSCRIPT" | "DELETESCRIPT" | "RENAMESCRIPT"
                | "CHECKSCRIPT" | "NOOP" | "UNAUTHENTICATE",
                _,
            ) => return Err(ParseError::Syntax("Wrong arguments for this command")),
            _ => return Err(ParseError::Unknown(name)),
        };
        Ok(cmd)
    }
}

/// A string argument as text (RFC 5804 §1.6: UTF-8).
fn text(bytes: &[u8]) -> Result<String, ParseError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| ParseError::Syntax("A string is not UTF-8"))
}

/// A string as the server sends it: quoted when it can be, else a literal.
pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    if s.len() <= 1024 && !s.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        out.push(b'"');
        for b in s {
            if matches!(b, b'"' | b'\\') {
                out.push(b'\\');
            }
            out.push(*b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
        out.extend_from_slice(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(lines: &[&[u8]]) -> Result<Command, ParseError> {
        let mut s = Scanner::default();
        let mut i = 0;
        loop {
            match s.line(lines[i])? {
                Next::Done => return Command::parse(s.tokens),
                Next::Literal(_) => {
                    s.literal(lines[i + 1].to_vec());
                    i += 2;
                }
            }
        }
    }

    #[test]
    fn commands_with_strings_literals_and_numbers() {
        assert_eq!(scan(&[b"capability"]), Ok(Command::Capability));
        assert_eq!(
            scan(&[b"HAVESPACE \"my script\" 1200"]),
            Ok(Command::HaveSpace {
                name: "my script".into(),
                size: 1200
            })
        );
        assert_eq!(
            scan(&[b"PUTSCRIPT \"a\\\"b\" {5+}", b"keep;", b""]),
            Ok(Command::PutScript {
                name: "a\"b".into(),
                script: b"keep;".to_vec()
            })
        );
        assert_eq!(
            scan(&[b"Authenticate \"PLAIN\" \"AGEAYg==\""]),
            Ok(Command::Authenticate {
                mechanism: "PLAIN".into(),
                initial: Some(b"AGEAYg==".to_vec())
            })
        );
        assert_eq!(
            scan(&[b"NOOP \"t1\""]),
            Ok(Command::Noop {
                tag: Some("t1".into())
            })
        );
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        assert!(matches!(scan(&[b"FROB"]), Err(ParseError::Unknown(_))));
        assert!(matches!(scan(&[b"GETSCRIPT"]), Err(ParseError::Syntax(_))));
        assert!(matches!(
            scan(&[b"GETSCRIPT \"x"]),
            Err(ParseError::Syntax(_))
        ));
        assert!(matches!(
            scan(&[b"PUTSCRIPT \"x\" {99999999999999}"]),
            Err(ParseError::Syntax(_))
        ));
        assert!(matches!(
            scan(&[b"PUTSCRIPT \"x\" {5} more"]),
            Err(ParseError::Syntax(_))
        ));
        assert!(matches!(scan(&[b"\"x\""]), Err(ParseError::Syntax(_))));
        assert!(matches!(
            scan(&[b"GETSCRIPT \"\xff\""]),
            Err(ParseError::Syntax(_))
        ));
    }

    #[test]
    fn strings_are_quoted_or_literal() {
        let mut out = Vec::new();
        string(&mut out, b"a\"b\\");
        assert_eq!(out, b"\"a\\\"b\\\\\"");
        out.clear();
        string(&mut out, b"keep;\r\n");
        assert_eq!(out, b"{7}\r\nkeep;\r\n");
    }
}
