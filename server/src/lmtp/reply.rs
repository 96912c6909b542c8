//! LMTP replies (RFC 5321 §4.2 with RFC 3463 enhanced status codes), and the
//! one function that maps store errors to them.

use cove_store::Error;

/// One reply: code, enhanced status code, text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub status: &'static str,
    pub text: String,
}

impl Reply {
    pub fn new(code: u16, status: &'static str, text: impl Into<String>) -> Reply {
        Reply {
            code,
            status,
            text: text.into(),
        }
    }

    pub fn write_to(&self, out: &mut Vec<u8>) {
        let text = self.text.replace(['\r', '\n'], " ");
        if self.status.is_empty() {
            out.extend_from_slice(format!("{} {}\r\n", self.code, text).as_bytes());
        } else {
            out.extend_from_slice(format!("{} {} {}\r\n", self.code, self.status, text).as_bytes());
        }
    }
}

/// How a store error is told to the MTA: permanent failures are 5xx so that
/// the sender bounces; everything that may pass is 4xx so that it retries.
/// Never a silent drop.
pub fn for_store_error(e: &Error) -> Reply {
    match e {
        Error::OverQuota { .. } => Reply::new(552, "5.2.2", "Mailbox is over quota"),
        Error::TooBig { limit, .. } => Reply::new(
            552,
            "5.3.4",
            format!("Message exceeds the size limit of {limit} bytes"),
        ),
        Error::NoSpace(_) => {
            Reply::new(452, "4.3.1", "Insufficient system storage, try again later")
        }
        Error::Busy(_) => Reply::new(451, "4.3.0", "Mailbox index is busy, try again later"),
        Error::InUse(_) => Reply::new(451, "4.2.0", "Mailbox is in use, try again later"),
        // The recipient was known at RCPT (an unknown one got 550 5.1.1
        // there): something it needs is missing now (its index being
        // rebuilt, the user deleted meanwhile). A bounce would be final;
        // a retry meets RCPT's answer.
        Error::NotFound(_) => Reply::new(
            451,
            "4.2.0",
            "Mailbox temporarily unavailable, try again later",
        ),
        Error::InvalidData(what) => Reply::new(554, "5.6.0", format!("Message refused: {what}")),
        Error::AlreadyExists(_)
        | Error::Expunged
        | Error::Io { .. }
        | Error::Index(_)
        | Error::Blob(_) => Reply::new(
            451,
            "4.3.0",
            "Temporary failure storing the message, try again later",
        ),
    }
}

/// A script's reject reason as reply text: one line, printable ASCII,
/// bounded.
pub fn reply_text(reason: &str) -> String {
    reason
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                ' '
            }
        })
        .take(200)
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_enhanced_codes() {
        // Bytes or messages (RFC 9208 STORAGE, MESSAGE): one reply.
        for resource in [
            cove_store::QuotaResource::Storage,
            cove_store::QuotaResource::Messages,
        ] {
            let q = for_store_error(&Error::OverQuota {
                resource,
                used: 1,
                limit: 1,
                needed: 1,
            });
            assert_eq!((q.code, q.status), (552, "5.2.2"));
        }
        let f = for_store_error(&Error::NoSpace("disk".into()));
        assert_eq!((f.code, f.status), (452, "4.3.1"));
        let b = for_store_error(&Error::Busy("locked".into()));
        assert_eq!((b.code, b.status), (451, "4.3.0"));
        let gone = for_store_error(&Error::NotFound("mailbox INBOX".into()));
        assert_eq!((gone.code, gone.status), (451, "4.2.0"));
        let mut out = Vec::new();
        Reply::new(250, "2.0.0", "Ok\r\ninjected").write_to(&mut out);
        assert_eq!(out, b"250 2.0.0 Ok  injected\r\n");
    }
}
