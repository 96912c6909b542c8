//! RFC 3501 §6.3.11 APPEND, with RFC 4315 APPENDUID and RFC 3502
//! MULTIAPPEND. A single message stays in the buffer the command was read
//! into; only its place in it travels, so it is held once. The messages of
//! a MULTIAPPEND are split into single APPENDs first (`split_multi`), each
//! decoded by imap-codec, which knows only one message per APPEND.

use cove_store::{Error, MailboxName, NewMessage};
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::datetime::DateTime;
use imap_codec::imap_types::flag::Flag;

use super::connection::{Authed, Connection};
use super::framing;
use super::outcome::{Code, Outcome};
use super::response;
use super::store_flags::split_flags;

/// An APPEND whose message is a range of the command's buffer.
pub struct Append {
    /// The name, or why it is not one.
    pub mailbox: cove_store::Result<MailboxName>,
    pub flags: Vec<Flag<'static>>,
    pub date: Option<DateTime>,
    pub message: std::ops::Range<usize>,
    /// The bytes the command was read as.
    pub buffer: Vec<u8>,
}

impl Append {
    /// The APPEND in `command`, with its literal located in `buf` (the
    /// bytes it was decoded from); `None` for any other command.
    pub fn located(
        command: &Command<'_>,
        buf: &[u8],
        rev: super::revision::Revision,
    ) -> Option<Append> {
        use imap_codec::imap_types::IntoStatic;
        use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
        let CommandBody::Append {
            mailbox,
            flags,
            date,
            message,
        } = &command.body
        else {
            return None;
        };
        let data: &[u8] = match message {
            LiteralOrLiteral8::Literal(l) => l.data(),
            LiteralOrLiteral8::Literal8(l) => &l.data,
        };
        let start = (data.as_ptr() as usize).checked_sub(buf.as_ptr() as usize)?;
        let range = start..start + data.len();
        // Only if the literal really is a slice of `buf` (imap-codec borrows).
        if buf
            .get(range.clone())
            .is_none_or(|s| !std::ptr::eq(s.as_ptr(), data.as_ptr()))
        {
            return None;
        }
        Some(Append {
            mailbox: rev.parse_name(super::command::mailbox_bytes(mailbox)),
            flags: flags.iter().cloned().map(IntoStatic::into_static).collect(),
            date: date.clone(),
            message: range,
            buffer: Vec::new(),
        })
    }

    /// The same APPEND, holding the buffer its message is in.
    pub fn with_buffer(self, buffer: Vec<u8>) -> Append {
        Append { buffer, ..self }
    }
}

/// The end of a quoted string starting at `at` (after its closing quote).
fn skip_quoted(b: &[u8], mut at: usize) -> Option<usize> {
    at += 1;
    while at < b.len() {
        match b[at] {
            b'\\' => at += 2,
            b'"' => return Some(at + 1),
            _ => at += 1,
        }
    }
    None
}

/// The end of a literal (`{n}`, `{n+}`, `~{n}`, then CRLF and n bytes)
/// starting at `at`.
fn skip_literal(b: &[u8], mut at: usize) -> Option<usize> {
    if b.get(at) == Some(&b'~') {
        at += 1;
    }
    if b.get(at) != Some(&b'{') {
        return None;
    }
    let close = at + b[at..].iter().position(|c| *c == b'}')?;
    let digits = std::str::from_utf8(&b[at + 1..close]).ok()?;
    let n: usize = digits.trim_end_matches('+').parse().ok()?;
    let start = close + 1;
    if b.get(start..start + 2)? != b"\r\n" {
        return None;
    }
    let end = (start + 2).checked_add(n)?;
    (end <= b.len()).then_some(end)
}

/// RFC 3502: for an APPEND of more than one message, one single-message
/// APPEND command per message (same tag and mailbox); `None` otherwise.
pub fn split_multi(b: &[u8]) -> Option<Vec<Vec<u8>>> {
    let tag = framing::tag_of(b)?;
    let verb = framing::verb_of(b)?;
    if !verb.eq_ignore_ascii_case(b"APPEND") {
        return None;
    }
    let mailbox_at = tag.len() + 1 + verb.len() + 1;
    let mut at = match b.get(mailbox_at)? {
        b'"' => skip_quoted(b, mailbox_at)?,
        b'{' => skip_literal(b, mailbox_at)?,
        _ => mailbox_at + b[mailbox_at..].iter().position(|c| *c == b' ')?,
    };
    let head = &b[..at];
    let mut parts = Vec::new();
    loop {
        if b.get(at) != Some(&b' ') {
            return None;
        }
        let start = at + 1;
        at = start;
        if b.get(at) == Some(&b'(') {
            at += b[at..].iter().position(|c| *c == b')')? + 1;
            at += usize::from(b.get(at) == Some(&b' '));
        }
        if b.get(at) == Some(&b'"') {
            at = skip_quoted(b, at)?;
            at += usize::from(b.get(at) == Some(&b' '));
        }
        at = skip_literal(b, at)?;
        parts.push(start..at);
        if b.get(at..) == Some(b"\r\n") || at == b.len() {
            break;
        }
    }
    if parts.len() < 2 {
        return None;
    }
    Some(
        parts
            .into_iter()
            .map(|p| {
                let mut one = head.to_vec();
                one.push(b' ');
                one.extend_from_slice(&b[p]);
                one.extend_from_slice(b"\r\n");
                one
            })
            .collect(),
    )
}

// RFC 3501 §6.3.11 APPEND; RFC 4315 §3 APPENDUID; RFC 3502 MULTIAPPEND:
// several messages, all appended or none.
pub async fn append(conn: &mut Connection, user: &Authed, appends: Vec<Append>) -> Outcome {
    let mut name = None;
    let mut messages = Vec::with_capacity(appends.len());
    for append in appends {
        let Append {
            mailbox,
            flags,
            date,
            message,
            buffer,
        } = append;
        match mailbox {
            Ok(m) => name = Some(m),
            Err(e) => return conn.refuse_name(&e),
        }
        let (system, keywords) = split_flags(&flags);
        let new = NewMessage {
            flags: system,
            keywords,
            internal_date: date.map(|d| d.as_ref().timestamp()),
            quota: Some(user.quota()),
        };
        messages.push((new, message, buffer));
    }
    let Some(name) = name else {
        return Outcome::bad("APPEND needs a message");
    };
    let store = conn.ctx.store.clone();
    let account = user.account();
    let r = user
        .blocking(move || {
            let mb = match account.mailbox(name.as_str()) {
                Ok(mb) => mb,
                Err(Error::NotFound(_)) => return Ok(None),
                Err(e) => return Err(e),
            };
            let mut uids = Vec::with_capacity(messages.len());
            let mut uidvalidity = mb.uidvalidity;
            for (new, range, buffer) in messages {
                let delivered = buffer
                    .get(range)
                    .ok_or_else(|| Error::InvalidData("APPEND literal out of range".into()))
                    .and_then(|bytes| store.blobs().put(bytes).map_err(Error::from))
                    .and_then(|blob| account.deliver(&mb.name, &blob, &new));
                match delivered {
                    Ok(d) => {
                        uidvalidity = d.uidvalidity;
                        uids.push(d.uid);
                    }
                    Err(e) => {
                        // RFC 3502 §6.3.11: none appended. Take back what
                        // this command appended.
                        if !uids.is_empty()
                            && let Err(undo) = account.expunge(&mb.guid, &uids)
                        {
                            tracing::error!(user = %account.email(), error = %undo, "could not take back the messages of a failed MULTIAPPEND");
                        }
                        return Err(e);
                    }
                }
            }
            Ok(Some((uidvalidity, uids)))
        })
        .await;
    match r {
        Ok(Some((uidvalidity, uids))) => Outcome::ok_with(
            Code::AppendUid {
                uidvalidity,
                uids: response::number_set(&uids),
            },
            "APPEND completed",
        ),
        // RFC 3501 §6.3.11: the client may CREATE and retry.
        Ok(None) => Outcome::no(Code::TryCreate, "No such mailbox"),
        Err(e) => conn.refuse(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::split_multi;

    #[test]
    fn a_multiappend_is_split_into_single_appends() {
        let line = b"A3 APPEND \"saved messages\" (\\Seen) {3}\r\none \"7-Feb-1994 22:43:04 -0800\" {3+}\r\ntwo ~{3}\r\nthr\r\n";
        let parts = split_multi(line).expect("three messages");
        assert_eq!(
            parts,
            vec![
                b"A3 APPEND \"saved messages\" (\\Seen) {3}\r\none\r\n".to_vec(),
                b"A3 APPEND \"saved messages\" \"7-Feb-1994 22:43:04 -0800\" {3+}\r\ntwo\r\n"
                    .to_vec(),
                b"A3 APPEND \"saved messages\" ~{3}\r\nthr\r\n".to_vec(),
            ]
        );
        assert!(split_multi(b"A4 APPEND INBOX {3}\r\none\r\n").is_none());
        assert!(split_multi(b"A5 APPEND INBOX {9}\r\none\r\n").is_none());
        assert!(split_multi(b"A6 NOOP\r\n").is_none());
    }
}
