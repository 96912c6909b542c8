//! RFC 3501 §6.2.2 AUTHENTICATE (PLAIN, RFC 4616; SASL-IR, RFC 4959) and
//! §6.2.3 LOGIN. The credentials are checked by the authentication service
//! (`crate::auth::Authenticator`: penalties for repeated failures, the same
//! cost for unknown users). Failed logins are delayed (the configured delay
//! or the penalty, the longer) and logged with the client's address in one
//! line fail2ban can match: `imap login failed user=<name> peer=<ip:port>`.

use base64::Engine;
use std::time::Duration;

use super::connection::Authed;
use super::framing;
use super::outcome::{Code, Outcome};
use super::session::{Session, State};
use crate::auth::{AuthResult, Secret};
use crate::metrics::Proto;

impl Session {
    // RFC 3501 §6.2.3: LOGIN.
    pub async fn login(&mut self, username: &str, password: Secret) -> Outcome {
        if !self.conn.plaintext_ok() {
            return Outcome::no(
                Code::PrivacyRequired,
                "Plaintext login needs TLS (STARTTLS first)",
            );
        }
        self.check_credentials(username, password).await
    }

    // RFC 3501 §6.2.2: AUTHENTICATE; only PLAIN is offered.
    pub async fn authenticate(&mut self, mechanism: &str, initial: Option<Vec<u8>>) -> Outcome {
        if !mechanism.eq_ignore_ascii_case("PLAIN") {
            return Outcome::no_plain("Unsupported authentication mechanism");
        }
        if !self.conn.plaintext_ok() {
            return Outcome::no(
                Code::PrivacyRequired,
                "Plaintext authentication needs TLS (STARTTLS first)",
            );
        }
        let response = match initial {
            Some(r) => r,
            None => {
                self.conn.out.extend_from_slice(b"+ \r\n");
                if self.flush().await.is_err() {
                    return Outcome::bad("Connection lost");
                }
                let timeout = self.read_timeout();
                let read = framing::read_plain_line(&mut self.conn.reader, 8192);
                let line = match tokio::time::timeout(timeout, read).await {
                    Ok(Ok(Some(l))) => l,
                    _ => {
                        self.state = State::Logout;
                        return Outcome::bad("Connection lost or login timeout");
                    }
                };
                if line == b"*" {
                    return Outcome::bad("Authentication cancelled");
                }
                match base64::engine::general_purpose::STANDARD.decode(&line) {
                    Ok(r) => r,
                    Err(_) => return Outcome::bad("Invalid base64"),
                }
            }
        };
        // authzid NUL authcid NUL password (RFC 4616 §2).
        let mut parts = response.split(|b| *b == 0);
        let (Some(authz), Some(authc), Some(pw), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Outcome::bad("Malformed PLAIN response");
        };
        if !authz.is_empty() && authz != authc {
            return Outcome::no(
                Code::AuthorizationFailed,
                "Logging in as another user is not allowed",
            );
        }
        let user = String::from_utf8_lossy(authc).into_owned();
        let password = Secret(String::from_utf8_lossy(pw).into_owned());
        self.check_credentials(&user, password).await
    }

    /// Every IMAP login's check: through the authentication service
    /// (penalties, unknown users), then the per-user connection limit.
    async fn check_credentials(&mut self, username: &str, password: Secret) -> Outcome {
        let client = self.conn.peer.ip();
        let checked = self
            .conn
            .ctx
            .auth
            .login(username, password, client, Proto::Imap);
        let (user, account) = match checked.await {
            AuthResult::Ok(user, account) => (user, account),
            AuthResult::Failed { wait } => {
                let delay = Duration::from_millis(self.conn.ctx.config.auth_failure_delay_ms);
                crate::auth::login_failed("imap", username, self.conn.peer, delay.max(wait)).await;
                return Outcome::no(Code::AuthenticationFailed, "Invalid credentials");
            }
            AuthResult::TempFail => {
                // The authentication service logged why.
                return Outcome::no(Code::Unavailable, "Temporary failure, try again later");
            }
        };
        let slot = self.conn.ctx.per_user.acquire(
            user.id,
            usize::MAX,
            self.conn.ctx.config.max_connections_per_user,
        );
        let Ok(slot) = slot else {
            tracing::warn!(session = self.conn.id, peer = %self.conn.peer, user = %user.address, "too many imap connections for this user");
            return Outcome::no(Code::Limit, "Too many connections for this user");
        };
        tracing::info!(session = self.conn.id, peer = %self.conn.peer, user = %user.address, "imap login");
        crate::metrics::METRICS.login(Proto::Imap, true);
        let limits = self.conn.ctx.store.limits(&user);
        self.state = State::Authenticated(Authed::new(account, limits, slot));
        let caps = super::capability::capabilities(&self.conn, true);
        Outcome::ok_with(Code::Capability(caps), "Logged in")
    }
}
