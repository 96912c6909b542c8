//! RFC 3501 §6.3.11 APPEND, with RFC 4315 APPENDUID. The message stays in
//! the buffer the command was read into; only its place in it travels, so
//! it is held once.

use cove_store::{Error, MailboxName, NewMessage};
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::datetime::DateTime;
use imap_codec::imap_types::flag::Flag;

use super::connection::{Authed, Connection};
use super::outcome::{Code, Outcome};
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
    pub fn located(command: &Command<'_>, buf: &[u8]) -> Option<Append> {
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
            mailbox: MailboxName::parse(super::command::mailbox_bytes(mailbox)),
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

// RFC 3501 §6.3.11 APPEND; RFC 4315 §3 APPENDUID.
pub async fn append(conn: &mut Connection, user: &Authed, append: Append) -> Outcome {
    let Append {
        mailbox: name,
        flags,
        date,
        message,
        buffer,
    } = append;
    let name = match name {
        Ok(name) => name,
        Err(e) => return conn.refuse_name(&e),
    };
    let (system, keywords) = split_flags(&flags);
    let internal_date = date.map(|d| d.as_ref().timestamp());
    let store = conn.ctx.store.clone();
    let account = user.account();
    let quota = user.quota();
    let r = user
        .blocking(move || {
            let mb = match account.mailbox(name.as_str()) {
                Ok(mb) => mb,
                Err(Error::NotFound(_)) => return Ok(None),
                Err(e) => return Err(e),
            };
            let bytes = buffer
                .get(message)
                .ok_or_else(|| Error::InvalidData("APPEND literal out of range".into()))?;
            let blob = store.blobs().put(bytes)?;
            let msg = NewMessage {
                flags: system,
                keywords,
                internal_date,
                quota: Some(quota),
            };
            account.deliver(&mb.name, &blob, &msg).map(Some)
        })
        .await;
    match r {
        Ok(Some(d)) => Outcome::ok_with(
            Code::AppendUid {
                uidvalidity: d.uidvalidity,
                uid: d.uid,
            },
            "APPEND completed",
        ),
        // RFC 3501 §6.3.11: the client may CREATE and retry.
        Ok(None) => Outcome::no(Code::TryCreate, "No such mailbox"),
        Err(e) => conn.refuse(&e),
    }
}
