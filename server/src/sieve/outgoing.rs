//! Mail a script sends (vacation replies, redirects): the rules that keep
//! an auto-responder from doing harm, and a small SMTP client (RFC 5321)
//! that hands each message to `[sieve] relay`.
//!
//! The interpreter already declines to answer lists and the like; the
//! rules are checked again here, on the message as it arrived, so a
//! change in the interpreter cannot make cove answer a mailing list:
//! - RFC 5230 §5.1, RFC 3834 §2: no reply to an empty return path or to a
//!   MAILER-DAEMON / owner- / -request sender, to `Auto-Submitted` other
//!   than `no`, to `Precedence: bulk|list|junk`, to mail with `List-*`
//!   headers, nor to one of the user's own addresses;
//! - RFC 3834 §3.1.7: replies go out with an empty return path (so they
//!   cannot be answered in turn) and `Auto-Submitted: auto-replied`;
//! - redirects keep the original return path (RFC 5228 §4.2) and count
//!   against a per-message limit (the interpreter's) and a per-day limit
//!   per user (the store's `redirects` file).

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Whether an auto-reply to this message is allowed (see the module text).
pub fn may_auto_reply(return_path: &str, own: &[String], header: &[u8]) -> Result<(), String> {
    let from = return_path.trim().to_ascii_lowercase();
    if from.is_empty() {
        return Err("empty return path".into());
    }
    let local = from.split('@').next().unwrap_or("");
    if local == "mailer-daemon" || local.starts_with("owner-") || local.ends_with("-request") {
        return Err(format!("sender {from} is a list or system address"));
    }
    if own.iter().any(|o| o.eq_ignore_ascii_case(&from)) {
        return Err("sender is the user".into());
    }
    for (name, value) in header_fields(header) {
        let value = value.trim().to_ascii_lowercase();
        match name.to_ascii_lowercase().as_str() {
            "auto-submitted" if value != "no" => {
                return Err(format!("Auto-Submitted: {value}"));
            }
            "precedence" if ["bulk", "list", "junk"].contains(&value.as_str()) => {
                return Err(format!("Precedence: {value}"));
            }
            n if n.starts_with("list-") => return Err(format!("{name} header (a list)")),
            _ => {}
        }
    }
    Ok(())
}

/// Whether a notification about this message is allowed (RFC 5436 §2.7:
/// never about a message that is itself auto-submitted).
pub fn may_notify(header: &[u8]) -> Result<(), String> {
    match header_fields(header)
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("auto-submitted"))
    {
        Some((_, v)) if !v.trim().eq_ignore_ascii_case("no") => {
            Err(format!("Auto-Submitted: {}", v.trim()))
        }
        _ => Ok(()),
    }
}

/// The header fields of a message, unfolded: (name, value).
fn header_fields(message: &[u8]) -> Vec<(String, String)> {
    let end = memchr::memmem::find(message, b"\r\n\r\n").unwrap_or(message.len());
    let text = String::from_utf8_lossy(&message[..end]);
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push_str(line);
            }
        } else if let Some((n, v)) = line.split_once(':') {
            out.push((n.trim().to_string(), v.to_string()));
        }
    }
    out
}

/// Send one message through the relay: `MAIL FROM:<from>`, one RCPT.
pub async fn send(
    relay: &str,
    helo: &str,
    from: &str,
    to: &str,
    message: &[u8],
    timeout: Duration,
) -> Result<(), String> {
    tokio::time::timeout(timeout, send_inner(relay, helo, from, to, message))
        .await
        .map_err(|_| format!("relay {relay} timed out"))?
}

async fn send_inner(
    relay: &str,
    helo: &str,
    from: &str,
    to: &str,
    message: &[u8],
) -> Result<(), String> {
    if [from, to]
        .iter()
        .any(|a| a.contains(['\r', '\n', '<', '>']))
    {
        return Err("address with a line break or angle bracket".into());
    }
    let tcp = TcpStream::connect(relay)
        .await
        .map_err(|e| format!("connect to relay {relay}: {e}"))?;
    let mut s = BufReader::new(tcp);
    expect(&mut s, 220).await?;
    command(&mut s, &format!("EHLO {helo}\r\n"), 250).await?;
    command(&mut s, &format!("MAIL FROM:<{from}>\r\n"), 250).await?;
    command(&mut s, &format!("RCPT TO:<{to}>\r\n"), 250).await?;
    command(&mut s, "DATA\r\n", 354).await?;
    let mut body = Vec::with_capacity(message.len() + 64);
    for line in message.split_inclusive(|b| *b == b'\n') {
        if line.first() == Some(&b'.') {
            body.push(b'.');
        }
        body.extend_from_slice(line);
    }
    if !body.ends_with(b"\r\n") {
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b".\r\n");
    s.get_mut()
        .write_all(&body)
        .await
        .map_err(|e| e.to_string())?;
    expect(&mut s, 250).await?;
    let _ = command(&mut s, "QUIT\r\n", 221).await;
    Ok(())
}

async fn command(s: &mut BufReader<TcpStream>, line: &str, want: u16) -> Result<(), String> {
    s.get_mut()
        .write_all(line.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    expect(s, want).await
}

/// Read one reply (all its lines) and check its code.
async fn expect(s: &mut BufReader<TcpStream>, want: u16) -> Result<(), String> {
    let mut line = String::new();
    for _ in 0..100 {
        line.clear();
        let mut limited = (&mut *s).take(4096);
        let n = limited
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("relay closed the connection".into());
        }
        let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        if line.as_bytes().get(3) == Some(&b'-') {
            continue;
        }
        if code != want {
            return Err(format!(
                "relay answered {}",
                crate::client_text::ClientText::line(line.trim_end())
            ));
        }
        return Ok(());
    }
    Err("relay reply too long".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_reply_rules() {
        let own = vec!["alice@example.org".to_string()];
        let plain = b"From: bob@example.org\r\nSubject: hi\r\n\r\nbody";
        assert!(may_auto_reply("bob@example.org", &own, plain).is_ok());
        assert!(may_auto_reply("", &own, plain).is_err());
        assert!(may_auto_reply("alice@example.org", &own, plain).is_err());
        assert!(may_auto_reply("MAILER-DAEMON@example.org", &own, plain).is_err());
        assert!(may_auto_reply("owner-list@example.org", &own, plain).is_err());
        assert!(may_auto_reply("list-request@example.org", &own, plain).is_err());
        for h in [
            &b"List-Id: <x.example.org>\r\n\r\n"[..],
            b"Precedence: bulk\r\n\r\n",
            b"Precedence: list\r\n\r\n",
            b"Auto-Submitted: auto-replied\r\n\r\n",
            b"Subject: x\r\nAuto-Submitted:\r\n auto-generated\r\n\r\n",
        ] {
            assert!(
                may_auto_reply("bob@example.org", &own, h).is_err(),
                "{}",
                String::from_utf8_lossy(h)
            );
        }
        assert!(may_auto_reply("bob@example.org", &own, b"Auto-Submitted: no\r\n\r\n").is_ok());
        assert!(may_notify(b"List-Id: <x>\r\nAuto-Submitted: no\r\n\r\n").is_ok());
        assert!(may_notify(b"Auto-Submitted: auto-replied\r\n\r\nx").is_err());
    }
}
