//! How a command ends (RFC 3501 §7.1: OK, NO, BAD), its response codes as
//! typed values (RFC 5530 and the extensions that define their own), and
//! the one function that maps a store error to them.
//!
//! A code is written from its variant only, so the bracketed text of every
//! reply has one spelling; the human-readable text after it is free. What a
//! client is not told (an index failure, a full disk) is logged here, where
//! it is hidden, with the session it happened in.

use std::borrow::Cow;
use std::fmt;

use cove_store::{Error, Uid};

/// RFC 3501 §7.1 response codes, RFC 5530's, and the extensions' cove sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Code {
    AlreadyExists,
    /// RFC 4315 §3: the UIDVALIDITY and UIDs an APPEND got (a set for
    /// MULTIAPPEND).
    AppendUid {
        uidvalidity: u32,
        uids: String,
    },
    AuthenticationFailed,
    AuthorizationFailed,
    /// RFC 3501 §7.1: the charsets SEARCH knows.
    BadCharset,
    Cannot,
    /// RFC 3501 §7.1: the capabilities, after login.
    Capability(String),
    /// RFC 7162 §3.2.11: the previously selected mailbox is closed.
    Closed,
    /// RFC 4978 §3: COMPRESS on a compressed connection.
    CompressionActive,
    /// RFC 4315 §3: UIDVALIDITY, source and destination UID sets.
    CopyUid {
        uidvalidity: u32,
        from: String,
        to: String,
    },
    ExpungeIssued,
    /// RFC 7162 §3.1.2.1.
    HighestModSeq(u64),
    InUse,
    Limit,
    /// RFC 8474 §4: the mailbox's immutable id.
    MailboxId(String),
    /// RFC 7162 §3.1.3: the messages UNCHANGEDSINCE did not store.
    Modified(String),
    Nonexistent,
    OverQuota,
    PermanentFlags(String),
    PrivacyRequired,
    ReadOnly,
    ReadWrite,
    TooBig,
    TryCreate,
    UidNext(Uid),
    UidValidity(u32),
    Unavailable,
    /// RFC 3516 §4.2: a part's encoding cove cannot decode.
    UnknownCte,
    /// RFC 3501 §7.1: the first unseen message's sequence number.
    Unseen(usize),
    /// RFC 6154 §3: a special use cove does not support.
    UseAttr,
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Code as C;
        match self {
            C::AlreadyExists => f.write_str("ALREADYEXISTS"),
            C::AppendUid { uidvalidity, uids } => write!(f, "APPENDUID {uidvalidity} {uids}"),
            C::AuthenticationFailed => f.write_str("AUTHENTICATIONFAILED"),
            C::AuthorizationFailed => f.write_str("AUTHORIZATIONFAILED"),
            C::BadCharset => f.write_str("BADCHARSET (UTF-8 US-ASCII)"),
            C::Cannot => f.write_str("CANNOT"),
            C::Capability(caps) => write!(f, "CAPABILITY {caps}"),
            C::Closed => f.write_str("CLOSED"),
            C::CompressionActive => f.write_str("COMPRESSIONACTIVE"),
            C::CopyUid {
                uidvalidity,
                from,
                to,
            } => write!(f, "COPYUID {uidvalidity} {from} {to}"),
            C::ExpungeIssued => f.write_str("EXPUNGEISSUED"),
            C::HighestModSeq(m) => write!(f, "HIGHESTMODSEQ {m}"),
            C::InUse => f.write_str("INUSE"),
            C::Limit => f.write_str("LIMIT"),
            C::MailboxId(id) => write!(f, "MAILBOXID ({id})"),
            C::Modified(set) => write!(f, "MODIFIED {set}"),
            C::Nonexistent => f.write_str("NONEXISTENT"),
            C::OverQuota => f.write_str("OVERQUOTA"),
            C::PermanentFlags(list) => write!(f, "PERMANENTFLAGS ({list})"),
            C::PrivacyRequired => f.write_str("PRIVACYREQUIRED"),
            C::ReadOnly => f.write_str("READ-ONLY"),
            C::ReadWrite => f.write_str("READ-WRITE"),
            C::TooBig => f.write_str("TOOBIG"),
            C::TryCreate => f.write_str("TRYCREATE"),
            C::UidNext(u) => write!(f, "UIDNEXT {u}"),
            C::UidValidity(v) => write!(f, "UIDVALIDITY {v}"),
            C::Unavailable => f.write_str("UNAVAILABLE"),
            C::UnknownCte => f.write_str("UNKNOWN-CTE"),
            C::Unseen(seq) => write!(f, "UNSEEN {seq}"),
            C::UseAttr => f.write_str("USEATTR"),
        }
    }
}

/// RFC 3501 §7.1 status responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::No => "NO",
            Status::Bad => "BAD",
        }
    }
}

/// How a command ended, for the tagged response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    pub code: Option<Code>,
    pub text: Cow<'static, str>,
}

impl Outcome {
    fn new(status: Status, code: Option<Code>, text: impl Into<Cow<'static, str>>) -> Outcome {
        Outcome {
            status,
            code,
            text: text.into(),
        }
    }

    pub fn ok(text: impl Into<Cow<'static, str>>) -> Outcome {
        Outcome::new(Status::Ok, None, text)
    }

    pub fn ok_with(code: Code, text: impl Into<Cow<'static, str>>) -> Outcome {
        Outcome::new(Status::Ok, Some(code), text)
    }

    pub fn no(code: Code, text: impl Into<Cow<'static, str>>) -> Outcome {
        Outcome::new(Status::No, Some(code), text)
    }

    /// A NO no response code describes.
    pub fn no_plain(text: impl Into<Cow<'static, str>>) -> Outcome {
        Outcome::new(Status::No, None, text)
    }

    pub fn bad(text: impl Into<Cow<'static, str>>) -> Outcome {
        Outcome::new(Status::Bad, None, text)
    }

    pub fn bad_with(code: Code, text: impl Into<Cow<'static, str>>) -> Outcome {
        Outcome::new(Status::Bad, Some(code), text)
    }

    pub fn is_bad(&self) -> bool {
        self.status == Status::Bad
    }

    /// `tag OK [CODE] text` with its CRLF; the text never breaks the line.
    pub fn write(&self, tag: &str, out: &mut Vec<u8>) {
        let word = self.status.word();
        let text = self.text.replace(['\r', '\n'], " ");
        let line = match &self.code {
            Some(code) => format!("{tag} {word} [{code}] {text}\r\n"),
            None => format!("{tag} {word} {text}\r\n"),
        };
        out.extend_from_slice(line.as_bytes());
    }
}

/// An untagged `* OK [CODE] text` (RFC 3501 §7.1.1).
pub fn untagged_ok(code: Code, text: &str, out: &mut Vec<u8>) {
    Outcome::ok_with(code, text.to_string()).write("*", out);
}

/// How a store error is told to an IMAP client (RFC 5530 response codes).
/// The one mapping for IMAP; what it does not tell the client, it logs,
/// with the session it happened in.
pub fn for_store_error(e: &Error, session: u64) -> Outcome {
    match e {
        Error::NotFound(what) => Outcome::no(Code::Nonexistent, format!("{what} does not exist")),
        Error::AlreadyExists(what) => {
            Outcome::no(Code::AlreadyExists, format!("{what} already exists"))
        }
        Error::OverQuota { .. } => Outcome::no(Code::OverQuota, "Quota exceeded"),
        Error::TooBig { limit, .. } => Outcome::no(
            Code::TooBig,
            format!("Message exceeds the limit of {limit} bytes"),
        ),
        Error::InUse(what) => Outcome::no(Code::InUse, format!("{what} is in use")),
        Error::Expunged => Outcome::no(Code::ExpungeIssued, "Message was expunged"),
        Error::InvalidData(why) => Outcome::no(Code::Cannot, why.clone()),
        Error::NoSpace(why) => {
            tracing::error!(session, error = %why, "imap: no space left on the data directory's disk");
            Outcome::no(
                Code::Unavailable,
                "The server's disk is full, try again later",
            )
        }
        Error::Busy(_) | Error::Io { .. } | Error::Index(_) | Error::Blob(_) => {
            tracing::error!(session, error = %e, "imap: store failure");
            Outcome::no(Code::Unavailable, "Temporary failure, try again later")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(o: &Outcome) -> String {
        let mut out = Vec::new();
        o.write("a1", &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn codes_are_written_in_brackets_after_the_status() {
        assert_eq!(
            line(&Outcome::ok_with(
                Code::AppendUid {
                    uidvalidity: 7,
                    uids: "3".into()
                },
                "APPEND completed"
            )),
            "a1 OK [APPENDUID 7 3] APPEND completed\r\n"
        );
        assert_eq!(line(&Outcome::bad("x\r\ny")), "a1 BAD x  y\r\n");
    }

    #[test]
    fn store_errors_map_to_rfc5530_codes() {
        let cases = [
            (Error::NotFound("Foo".into()), Code::Nonexistent),
            (Error::AlreadyExists("Foo".into()), Code::AlreadyExists),
            (
                Error::OverQuota {
                    resource: cove_store::QuotaResource::Messages,
                    used: 1,
                    limit: 1,
                    needed: 1,
                },
                Code::OverQuota,
            ),
            (Error::Expunged, Code::ExpungeIssued),
            (Error::Index("broken".into()), Code::Unavailable),
            (Error::NoSpace("full".into()), Code::Unavailable),
        ];
        for (e, code) in cases {
            let o = for_store_error(&e, 1);
            assert_eq!((o.status, o.code), (Status::No, Some(code)), "{e}");
        }
    }
}
