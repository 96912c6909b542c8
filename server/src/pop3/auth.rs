//! The AUTHORIZATION state: RFC 1939 §7 USER and PASS, RFC 5034 AUTH
//! PLAIN (with the initial response), RFC 2595 §4 STLS. Credentials are
//! checked by the authentication service (`crate::auth::Authenticator`), as
//! IMAP's are; failed logins are delayed (the configured delay or the
//! penalty, the longer) and logged as IMAP's are (`pop3 login failed user=<name>
//! peer=<ip:port>`), and answered `-ERR [AUTH]` (RFC 3206); a store that
//! cannot answer gives `-ERR [SYS/TEMP]`, a user who already has a POP3
//! session `-ERR [IN-USE]` (RFC 2449 §8.1.2).

use base64::Engine;
use std::time::Duration;

use super::command::Password;
use super::maildrop::Maildrop;
use super::session::{Flow, LineRead, READ_BUFFER, Session, State};
use crate::auth::{AuthResult, Secret};
use crate::metrics::Proto;

const PLAINTEXT_REFUSED: &str =
    "[AUTH] Plaintext authentication disallowed on non-secure connections (STLS first)";

impl Session {
    // RFC 1939 §7: USER name.
    pub fn user(&mut self, name: String) -> Flow {
        if !self.plaintext_ok() {
            self.err(PLAINTEXT_REFUSED);
            return Flow::Continue;
        }
        self.state = State::Authorization { user: Some(name) };
        self.ok("Send your password");
        Flow::Continue
    }

    // RFC 1939 §7: PASS string, right after a successful USER.
    pub async fn pass(&mut self, password: Password) -> Flow {
        let State::Authorization { user } = &mut self.state else {
            return Flow::Continue;
        };
        let Some(name) = user.take() else {
            self.err("No user name given (USER first)");
            return self.bad();
        };
        if !self.plaintext_ok() {
            self.err(PLAINTEXT_REFUSED);
            return Flow::Continue;
        }
        self.login(&name, password.into_secret()).await
    }

    // RFC 5034: AUTH mechanism [initial-response]. `AUTH` alone lists the
    // mechanisms (a convention older clients rely on).
    pub async fn auth(&mut self, mechanism: Option<String>, initial: Option<String>) -> Flow {
        self.state = State::Authorization { user: None };
        let Some(mechanism) = mechanism else {
            self.ok("Mechanisms follow");
            if self.plaintext_ok() {
                self.out.extend_from_slice(b"PLAIN\r\n");
            }
            self.out.extend_from_slice(b".\r\n");
            return Flow::Continue;
        };
        if mechanism != "PLAIN" {
            self.err("Unsupported authentication mechanism");
            return Flow::Continue;
        }
        if !self.plaintext_ok() {
            self.err(PLAINTEXT_REFUSED);
            return Flow::Continue;
        }
        let encoded = match initial {
            Some(ir) => ir.into_bytes(),
            None => {
                // RFC 5034 §4: an empty challenge.
                self.out.extend_from_slice(b"+ \r\n");
                if self.flush().await.is_err() {
                    return Flow::Close;
                }
                let (timeout, max) = (self.read_timeout(), self.ctx.config.max_line_length);
                match tokio::time::timeout(timeout, self.read_line(max)).await {
                    Ok(Ok(LineRead::Line(l))) => l,
                    Ok(Ok(LineRead::TooLong)) => {
                        self.err("Line too long");
                        return self.bad();
                    }
                    _ => return Flow::Close,
                }
            }
        };
        if encoded == b"*" {
            self.err("Authentication cancelled");
            return Flow::Continue;
        }
        // RFC 5034 §4: "=" is an empty initial response.
        let decoded = if encoded == b"=" {
            Ok(Vec::new())
        } else {
            base64::engine::general_purpose::STANDARD.decode(&encoded)
        };
        let Ok(response) = decoded else {
            self.err("Invalid base64");
            return self.bad();
        };
        // RFC 4616 §2: authzid NUL authcid NUL password.
        let mut parts = response.split(|b| *b == 0);
        let (Some(authz), Some(authc), Some(pw), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            self.err("Malformed PLAIN response");
            return self.bad();
        };
        if !authz.is_empty() && authz != authc {
            self.err("[AUTH] Logging in as another user is not allowed");
            return Flow::Continue;
        }
        let name = String::from_utf8_lossy(authc).into_owned();
        let password = Secret(String::from_utf8_lossy(pw).into_owned());
        self.login(&name, password).await
    }

    // RFC 2595 §4: STLS.
    pub async fn stls(&mut self) -> Flow {
        if self.is_tls() {
            self.err("TLS is already active");
            return Flow::Continue;
        }
        let Some(acceptor) = self.ctx.tls.clone() else {
            self.err("TLS is not available");
            return Flow::Continue;
        };
        // A USER given in clear text is forgotten (RFC 2595 §4).
        self.state = State::Authorization { user: None };
        self.ok("Begin TLS negotiation");
        if self.flush().await.is_err() {
            return Flow::Close;
        }
        match crate::conn::start_tls(
            &mut self.reader,
            &acceptor,
            READ_BUFFER,
            Duration::from_secs(self.ctx.config.handshake_timeout_secs),
        )
        .await
        {
            Ok(()) => Flow::Continue,
            Err(e) => {
                tracing::info!(session = self.id, peer = %self.peer, error = %e, "pop3 STLS handshake failed");
                Flow::Close
            }
        }
    }

    /// Check the credentials, take the maildrop lock, open the maildrop.
    async fn login(&mut self, name: &str, password: Secret) -> Flow {
        let client = self.peer.ip();
        let checked = self.ctx.auth.login(name, password, client, Proto::Pop3);
        let (user, account) = match checked.await {
            AuthResult::Ok(user, account) => (user, account),
            AuthResult::Failed { wait } => {
                let delay = Duration::from_millis(self.ctx.config.auth_failure_delay_ms);
                crate::auth::login_failed("pop3", name, self.peer, delay.max(wait)).await;
                self.err("[AUTH] Authentication failed");
                return Flow::Continue;
            }
            AuthResult::TempFail => {
                self.err("[SYS/TEMP] Temporary failure, try again later");
                return Flow::Continue;
            }
        };
        let Some(lock) = self.ctx.locks.try_lock(user.id) else {
            tracing::info!(session = self.id, peer = %self.peer, user = %user.address, "pop3 maildrop in use");
            self.err("[IN-USE] Mailbox is locked by another POP3 session");
            return Flow::Continue;
        };
        let loaded = tokio::task::spawn_blocking(move || Maildrop::load(account, lock)).await;
        let maildrop = match loaded {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                tracing::error!(session = self.id, user = %user.address, error = %e, "pop3 maildrop could not be opened");
                self.err(&super::store_error_text(&e));
                return Flow::Continue;
            }
            Err(e) => {
                tracing::error!(session = self.id, user = %user.address, error = %e, "pop3 maildrop task failed");
                self.err("[SYS/TEMP] Temporary failure, try again later");
                return Flow::Continue;
            }
        };
        let (n, octets) = maildrop.stat();
        tracing::info!(session = self.id, peer = %self.peer, user = %user.address, messages = n, "pop3 login");
        crate::metrics::METRICS.login(Proto::Pop3, true);
        self.state = State::Transaction(Box::new(maildrop));
        self.ok(&format!("Logged in, {n} messages ({octets} octets)"));
        Flow::Continue
    }
}
