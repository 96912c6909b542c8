//! The one authentication service: every login path (IMAP LOGIN and
//! AUTHENTICATE PLAIN, POP3 USER/PASS and AUTH PLAIN, nginx's auth_http)
//! asks [`Authenticator`] whether a user name and password are good, and
//! gets the same answer under the same rules.
//!
//! What it guarantees, whatever the protocol:
//! 1. Brute force costs time per client and per user ([`super::penalty`]):
//!    after a failure, the next attempt of that client address (and of
//!    that user name) is looked at only once its wait is over. An attempt
//!    refused for that is not checked at all, so the right password is
//!    not accepted during the wait either.
//! 2. An unknown user costs what a known one costs: a name that is not a
//!    user, or a user without a password, is checked against a stand-in
//!    argon2id hash made at start with the parameters of real hashes. Both
//!    paths run exactly one password check on the password threads, so
//!    neither the reply time nor the load tells names apart. (A user whose
//!    hash is still in a cheaper legacy Dovecot scheme is checked in that
//!    scheme until the first good login rehashes it.)
//! 3. The caller decides how to spend the wait. [`Authenticator::login`]
//!    (IMAP, POP3 sessions) queues the attempt until the client's turn,
//!    then checks it, and the session sleeps the returned wait before it
//!    answers a failure. [`Authenticator::authenticate`] (the HTTP endpoint)
//!    never sleeps out a penalty: a penalised attempt comes back at once as
//!    `Failed { wait }`, for an `Auth-Wait` header. It only queues behind
//!    the checks in flight of a key that has no failure (a client's own
//!    connections logging in together), which is capacity, not a penalty.
//!
//! The client address is taken as given: the listeners pass the real
//! client's (PROXY protocol from trusted proxies), never a proxy's.
//!
//! Failures are logged by the callers, which know the port
//! (`<proto> login failed user=<name> peer=<ip:port>`, see
//! [`super::login_failed`]); the service logs only the refusals it makes.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use cove_store::{Account, Address, PasswordHash, Store, User};

use super::penalty::{Patience, PenaltyBox, Refused, Schedule};
use super::{PasswordCheckers, Secret, hash_password};
use crate::metrics::Proto;

/// What an authentication found.
pub enum AuthResult {
    /// Good credentials: the user and their account, opened.
    Ok(User, Arc<Account>),
    /// Bad credentials, or an attempt refused unchecked because the client
    /// or the user is penalised. `wait`: how long before this client may
    /// try again (the IMAP and POP3 sessions sleep it before answering;
    /// the HTTP endpoint sends it as `Auth-Wait`).
    Failed { wait: Duration },
    /// The store could not answer; try again later (logged).
    TempFail,
}

impl std::fmt::Debug for AuthResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthResult::Ok(user, _) => write!(f, "Ok({})", user.address),
            AuthResult::Failed { wait } => write!(f, "Failed {{ wait: {wait:?} }}"),
            AuthResult::TempFail => f.write_str("TempFail"),
        }
    }
}

/// How long a session's attempt may queue behind others from its client
/// (each check in flight holds the queue for tens of milliseconds) on top
/// of the longest penalty, before it is answered as failed.
const QUEUE_PATIENCE: Duration = Duration::from_secs(30);

/// How long an nginx auth_http request may wait for one of the user's (or
/// the address's) checks in flight to end, when neither is penalised: a
/// mail client opening several connections at once (Thunderbird opens
/// five) must not see a failed login because its own logins overlap.
/// Well under nginx's `auth_http_timeout` (60 s by default).
const HTTP_BUSY_PATIENCE: Duration = Duration::from_secs(10);

/// The authentication service (see the module essay).
pub struct Authenticator {
    store: Arc<Store>,
    passwords: Arc<PasswordCheckers>,
    penalties: PenaltyBox,
    /// Checked in place of the hash of a user who does not exist or has no
    /// password; its password is random and forgotten.
    stand_in: PasswordHash,
}

impl Authenticator {
    /// Make the stand-in hash (one argon2id hash, off the reactor) and
    /// empty penalty tables.
    pub async fn new(
        store: Arc<Store>,
        passwords: Arc<PasswordCheckers>,
        schedule: Schedule,
    ) -> anyhow::Result<Authenticator> {
        let stand_in = tokio::task::spawn_blocking(|| {
            let mut random = [0u8; 24];
            getrandom::fill(&mut random)
                .map_err(|e| anyhow::anyhow!("random bytes for the stand-in hash: {e}"))?;
            let password: String = random.iter().map(|b| format!("{b:02x}")).collect();
            hash_password(&Secret(password))
        })
        .await??;
        Ok(Authenticator {
            store,
            passwords,
            penalties: PenaltyBox::new(schedule),
            stand_in,
        })
    }

    /// Check credentials without ever sleeping out a penalty (nginx
    /// auth_http): a penalised client or user gets `Failed { wait }` at
    /// once, unchecked. An attempt that finds only the unpenalised key's
    /// free checks all in flight waits for one to end (at most
    /// [`HTTP_BUSY_PATIENCE`]).
    pub async fn authenticate(
        &self,
        username: &str,
        password: Secret,
        client: IpAddr,
        protocol: Proto,
    ) -> AuthResult {
        let patience = Patience {
            penalty: Duration::ZERO,
            busy: HTTP_BUSY_PATIENCE,
        };
        self.attempt(username, password, client, protocol, patience)
            .await
    }

    /// Check credentials for a session: a penalised attempt waits its turn
    /// (at most the longest penalty plus [`QUEUE_PATIENCE`]) and is then
    /// checked, so the right password is accepted once the wait is over.
    pub async fn login(
        &self,
        username: &str,
        password: Secret,
        client: IpAddr,
        protocol: Proto,
    ) -> AuthResult {
        let wait = self.penalties.schedule().max + QUEUE_PATIENCE;
        let patience = Patience {
            penalty: wait,
            busy: wait,
        };
        self.attempt(username, password, client, protocol, patience)
            .await
    }

    /// How many password checks have run (the stand-in's included).
    pub fn password_checks(&self) -> u64 {
        self.passwords.checks()
    }

    async fn attempt(
        &self,
        username: &str,
        password: Secret,
        client: IpAddr,
        protocol: Proto,
        patience: Patience,
    ) -> AuthResult {
        let keys = self.penalties.keys(client, username);
        let pass = match self.penalties.pass(keys, patience).await {
            Ok(pass) => pass,
            Err(refused) => {
                crate::metrics::METRICS.login_refused();
                let why = match refused {
                    Refused::Penalised(_) => "penalised",
                    // More checks of this client or user at once than the
                    // gate lets run side by side, for longer than this
                    // attempt could wait: capacity, not a failure.
                    Refused::Busy(_) => "refused, too many logins of this client or user at once,",
                };
                let wait = refused.wait();
                tracing::info!(
                    "{} login {why} user={} client={client} wait_ms={}",
                    protocol.name(),
                    username.escape_debug(),
                    wait.as_millis()
                );
                return AuthResult::Failed { wait };
            }
        };
        match self.check(username, password).await {
            Ok(Some((user, account))) => {
                pass.succeeded();
                AuthResult::Ok(user, account)
            }
            Ok(None) => AuthResult::Failed {
                wait: pass.failed(),
            },
            Err(e) => {
                tracing::error!(proto = protocol.name(), client = %client, error = %e, "login lookup failed");
                AuthResult::TempFail
            }
        }
    }

    /// The user's account when the name and password are right, `None`
    /// when they are not; always exactly one password check.
    async fn check(
        &self,
        username: &str,
        password: Secret,
    ) -> Result<Option<(User, Arc<Account>)>, cove_store::Error> {
        // Logins take the blocking pool's reserved lane: another user's
        // searches never hold them up (crate::work).
        let joined = |e: crate::work::Failed| cove_store::Error::Index(format!("login task: {e}"));
        let name = username.to_string();
        let lookup = self.store.clone();
        let user = crate::work::run(crate::work::Lane::Reserved, move || {
            match Address::parse(&name) {
                Ok(address) => lookup.user(&address),
                Err(_) => Ok(None),
            }
        })
        .await
        .map_err(joined)??;
        let user = match user {
            Some(user) => match user.password.clone() {
                Some(hash) => {
                    let (store, address) = (&self.store, &user.address);
                    let good = self.passwords.check(store, address, password, hash).await;
                    good.then_some(user)
                }
                None => self.stand_in_check(password).await,
            },
            None => self.stand_in_check(password).await,
        };
        let Some(user) = user else {
            return Ok(None);
        };
        let opener = self.store.clone();
        let account = crate::work::run(crate::work::Lane::Reserved, move || {
            opener.account(&user).map(|a| (user, a))
        })
        .await
        .map_err(joined)??;
        Ok(Some(account))
    }

    /// The check an unknown user (or one without a password) costs: the
    /// stand-in hash, whose password nobody knows.
    async fn stand_in_check(&self, password: Secret) -> Option<User> {
        let _ = self.passwords.verify(password, self.stand_in.clone()).await;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn service(schedule: Schedule) -> (tempfile::TempDir, Arc<Store>, Authenticator) {
        let (d, store) = crate::test_store("t");
        let checkers = Arc::new(PasswordCheckers::new(1).unwrap());
        let auth = Authenticator::new(store.clone(), checkers, schedule)
            .await
            .unwrap();
        (d, store, auth)
    }

    fn no_penalty() -> Schedule {
        Schedule {
            initial: Duration::ZERO,
            max: Duration::ZERO,
            expire: Duration::from_secs(1),
            capacity: 10,
            per_user: true,
        }
    }

    /// The default-like penalty schedule (2 s, doubling to 15 s) and the
    /// user a@x.org with the password "right".
    async fn penalised_service_with_user() -> (tempfile::TempDir, Authenticator) {
        let schedule = Schedule {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(15),
            expire: Duration::from_secs(300),
            capacity: 100,
            per_user: true,
        };
        let (d, store, auth) = service(schedule).await;
        let a = Address::parse("a@x.org").unwrap();
        store
            .add_user(&a, Some(hash_password(&Secret("right".into())).unwrap()), 0)
            .unwrap();
        (d, auth)
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    #[tokio::test]
    async fn unknown_users_cost_one_password_check_like_known_ones() {
        let (_d, store, auth) = service(no_penalty()).await;
        let known = Address::parse("a@x.org").unwrap();
        let hash = hash_password(&Secret("right".into())).unwrap();
        store.add_user(&known, Some(hash), 0).unwrap();
        let nopass = Address::parse("n@x.org").unwrap();
        store.add_user(&nopass, None, 0).unwrap();
        let cost = |name: &'static str, pw: &'static str| {
            let auth = &auth;
            async move {
                let before = auth.password_checks();
                let r = auth
                    .authenticate(name, Secret(pw.into()), CLIENT, Proto::Imap)
                    .await;
                (auth.password_checks() - before, r)
            }
        };
        let (n, r) = cost("a@x.org", "wrong").await;
        assert!(
            matches!(r, AuthResult::Failed { .. }) && n == 1,
            "{r:?} {n}"
        );
        for name in ["nobody@x.org", "not an address", "n@x.org"] {
            let (n, r) = cost(name, "right").await;
            assert!(matches!(r, AuthResult::Failed { .. }), "{name}: {r:?}");
            assert_eq!(n, 1, "{name}: password checks");
        }
        let (n, r) = cost("A@X.org", "right").await;
        assert!(
            matches!(&r, AuthResult::Ok(u, _) if u.address == known),
            "{r:?}"
        );
        assert_eq!(n, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_penalised_attempt_is_answered_unchecked_or_after_its_wait() {
        let (_d, auth) = penalised_service_with_user().await;
        let right = || Secret("right".into());
        for wait in [2, 4] {
            let r = auth
                .authenticate("a@x.org", Secret("wrong".into()), CLIENT, Proto::Pop3)
                .await;
            assert!(
                matches!(r, AuthResult::Failed { wait: w } if w == Duration::from_secs(wait)),
                "{r:?}"
            );
            tokio::time::advance(Duration::from_secs(wait)).await;
        }
        assert!(matches!(
            auth.authenticate("a@x.org", Secret("wrong".into()), CLIENT, Proto::Pop3)
                .await,
            AuthResult::Failed { .. }
        ));
        // Penalised for 8 s: the right password is refused unchecked ...
        let checks = auth.password_checks();
        let r = auth
            .authenticate("a@x.org", right(), CLIENT, Proto::Imap)
            .await;
        assert!(
            matches!(r, AuthResult::Failed { wait } if wait == Duration::from_secs(8)),
            "{r:?}"
        );
        assert_eq!(auth.password_checks(), checks, "checked while penalised");
        // ... or, for a session, checked once the wait is over.
        let t0 = tokio::time::Instant::now();
        let r = auth.login("a@x.org", right(), CLIENT, Proto::Imap).await;
        assert!(matches!(r, AuthResult::Ok(..)), "{r:?}");
        assert_eq!(t0.elapsed(), Duration::from_secs(8));
    }

    // A mail client opening several connections at once logs in on each
    // through nginx's auth_http: more overlapping logins of one user than
    // the unpenalised free checks must all succeed (they queue), not get
    // "Invalid login or password" with an Auth-Wait.
    #[tokio::test]
    async fn overlapping_good_logins_through_auth_http_all_succeed() {
        let (_d, auth) = penalised_service_with_user().await;
        let auth = Arc::new(auth);
        let mut attempts = tokio::task::JoinSet::new();
        for i in 1..=12u8 {
            let auth = auth.clone();
            let client = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, i));
            attempts.spawn(async move {
                auth.authenticate("a@x.org", Secret("right".into()), client, Proto::Imap)
                    .await
            });
        }
        let mut good = 0;
        while let Some(r) = attempts.join_next().await {
            let r = r.unwrap();
            assert!(matches!(r, AuthResult::Ok(..)), "{r:?}");
            good += 1;
        }
        assert_eq!(good, 12);
    }
}
