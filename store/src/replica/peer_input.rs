//! What a peer sends, checked before anything of it is applied.
//!
//! A peer proves it knows the shared secret; that makes it authenticated,
//! not trusted (DESIGN.md, "Replication"). A peer with a bug, a wrong
//! clock, or an attacker holding the secret must not be able to do more
//! than a client could: so every name, stamp and flag in a [`Delta`] or a
//! [`UserRecord`] is checked here, at the apply boundary, with the rules a
//! client's input meets. Sizes are not checked: they are never taken from a
//! peer (the apply derives a message's size from the content it holds).
//!
//! Stamps. The merge is "the later change wins", so a stamp far in the
//! future would win against every change made here until that time comes
//! (an administrator's `cove user passwd`, a user's flag): it would pin
//! the item. A stamp more than [`PeerLimits::max_clock_skew_ms`] ahead of
//! this node's clock is therefore refused. A refused delta is not applied
//! at all (the session fails and is logged; the peer's mark does not move,
//! so an honest peer whose clock runs ahead is applied once this node's
//! clock has caught up); a refused user record is skipped, the others
//! merged.

use super::{Delta, FlagClock, Stamp, UserRecord};
use crate::{Error, Result};

/// Bounds on what a peer may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLimits {
    /// How far ahead of this node's clock a peer's stamp may be.
    pub max_clock_skew_ms: u64,
    /// The largest message content (one blob) a peer may send.
    pub max_blob_bytes: u64,
    /// The most content a peer may send in one session; what is left is
    /// asked for in the next one.
    pub max_session_bytes: u64,
    /// New messages applied per index transaction when a peer's delta
    /// brings more (a first sync): the user's deliveries wait at most one
    /// such chunk, not the whole apply.
    pub apply_chunk_messages: usize,
}

impl Default for PeerLimits {
    fn default() -> Self {
        PeerLimits {
            max_clock_skew_ms: 5 * 60 * 1000,
            // The default largest message (50 MiB) and a margin.
            max_blob_bytes: 51 * 1024 * 1024,
            max_session_bytes: 1024 * 1024 * 1024,
            apply_chunk_messages: 2_000,
        }
    }
}

impl PeerLimits {
    /// The latest stamp a peer may send when this node's clock reads
    /// `now_ms` (milliseconds since the epoch).
    pub fn latest_stamp(&self, now_ms: u64) -> Stamp {
        let ms = now_ms
            .saturating_add(self.max_clock_skew_ms)
            .min(u64::MAX >> 16);
        (ms << 16) | 0xffff
    }
}

/// A mailbox name from a peer, checked as a client's would be
/// (`maildir::validate_mailbox_name`: no '/', no empty hierarchy level so no
/// leading '.', no "..", no control character, not too long). The Maildir++
/// folder of a valid name is one directory entry inside `Maildir/`.
pub fn valid_peer_mailbox_name(name: &str) -> Result<()> {
    crate::maildir::validate_mailbox_name(name)
        .map(|_| ())
        .map_err(|_| Error::InvalidData(format!("the peer sent an invalid mailbox name {name:?}")))
}

/// A special-use attribute (RFC 6154): `\` and a short atom.
fn valid_special_use(s: &str) -> bool {
    s.len() <= 32
        && s.strip_prefix('\\')
            .is_some_and(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// A flag name in a flag clock: a system flag or a keyword.
fn valid_flag_name(name: &str) -> bool {
    super::SYSTEM_FLAGS.iter().any(|(n, _)| *n == name) || crate::keywords::validate(name).is_ok()
}

/// The internal dates a client can give (IMAP's `date-year` is four
/// digits): 0001-01-01 to 9999-12-31, in seconds since the epoch.
const INTERNAL_DATES: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;

fn stamp_ok(what: &str, stamp: Stamp, latest: Stamp) -> Result<()> {
    if stamp > latest {
        return Err(Error::InvalidData(format!(
            "the peer sent a {what} stamped {} s after this node's clock (allowed: the configured clock skew); is its clock right?",
            ((stamp >> 16).saturating_sub(latest >> 16)) / 1000
        )));
    }
    Ok(())
}

/// Check a peer's delta before it is applied: every mailbox and
/// subscription name, special-use attribute, keyword and flag name, and
/// every stamp (not after `limits.latest_stamp(now_ms)`).
pub fn validate_delta(d: &Delta, now_ms: u64, limits: &PeerLimits) -> Result<()> {
    let latest = limits.latest_stamp(now_ms);
    for m in &d.mailboxes {
        valid_peer_mailbox_name(&m.name)?;
        stamp_ok("mailbox name", m.name_stamp, latest)?;
        if m.uidvalidity == 0 {
            return Err(Error::InvalidData(format!(
                "the peer sent mailbox {:?} with UIDVALIDITY 0",
                m.name
            )));
        }
        if let Some(s) = &m.special_use
            && !valid_special_use(s)
        {
            return Err(Error::InvalidData(format!(
                "the peer sent an invalid special-use attribute {s:?}"
            )));
        }
    }
    for g in &d.gone {
        valid_peer_mailbox_name(&g.name)?;
        stamp_ok("mailbox delete", g.stamp, latest)?;
    }
    for s in &d.subscriptions {
        valid_peer_mailbox_name(&s.name)?;
        stamp_ok("subscription", s.stamp, latest)?;
    }
    for m in &d.messages {
        stamp_ok("message placement", m.placed, latest)?;
        if !INTERNAL_DATES.contains(&m.internal_date) {
            return Err(Error::InvalidData(format!(
                "the peer sent an internal date of {} s, outside the years 1 to 9999",
                m.internal_date
            )));
        }
        for k in &m.keywords {
            crate::keywords::validate(k)?;
        }
        for (name, (_, stamp)) in &FlagClock::parse(&m.clock).0 {
            if !valid_flag_name(name) {
                return Err(Error::InvalidData(format!(
                    "the peer sent an invalid flag name {name:?}"
                )));
            }
            stamp_ok("flag change", *stamp, latest)?;
        }
    }
    for t in &d.tombstones {
        stamp_ok("expunge", t.stamp, latest)?;
    }
    Ok(())
}

/// Why a peer's user record is refused, if it is.
pub fn refuse_user_record(r: &UserRecord, now_ms: u64, limits: &PeerLimits) -> Option<String> {
    if r.stamp > limits.latest_stamp(now_ms) {
        return Some(format!(
            "stamped {} s ahead of this node's clock",
            ((r.stamp >> 16).saturating_sub(now_ms)) / 1000
        ));
    }
    if let Some(p) = &r.password
        && (p.len() > 1024 || p.chars().any(|c| c.is_control()))
    {
        return Some("its password hash is not a hash string".into());
    }
    if r.quota > i64::MAX as u64 {
        return Some("its quota is out of range".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::{MailboxState, MessageState, SubscriptionState, TombstoneState};
    use super::*;
    use crate::ids::{MailboxGuid, MessageGuid};

    const NOW: u64 = 1_800_000_000_000;

    fn mailbox(name: &str) -> MailboxState {
        MailboxState {
            guid: MailboxGuid([1; 16]),
            name: name.into(),
            name_stamp: NOW << 16,
            uidvalidity: 1,
            uidnext: 1,
            special_use: None,
            created_apart: false,
        }
    }

    fn check(d: Delta) -> Result<()> {
        validate_delta(&d, NOW, &PeerLimits::default())
    }

    #[test]
    fn names_that_leave_the_maildir_are_refused() {
        for bad in [
            "../x",
            "..",
            "a/../../b",
            ".hidden",
            "a\nb",
            "",
            "a..b",
            "/etc",
        ] {
            let d = Delta {
                mailboxes: vec![mailbox(bad)],
                ..Delta::default()
            };
            assert!(check(d).is_err(), "{bad:?}");
            let d = Delta {
                subscriptions: vec![SubscriptionState {
                    name: bad.into(),
                    subscribed: true,
                    stamp: 0,
                }],
                ..Delta::default()
            };
            assert!(check(d).is_err(), "subscription {bad:?}");
        }
        let d = Delta {
            mailboxes: vec![mailbox("Work.Q1"), mailbox("INBOX")],
            ..Delta::default()
        };
        assert!(check(d).is_ok());
    }

    #[test]
    fn stamps_past_the_clock_skew_are_refused() {
        let skew = PeerLimits::default().max_clock_skew_ms;
        let at = |ms: u64| (ms << 16) | 7;
        let tomb = |stamp| Delta {
            tombstones: vec![TombstoneState {
                mailbox: MailboxGuid([1; 16]),
                uid: 1,
                guid: MessageGuid([2; 16]),
                stamp,
            }],
            ..Delta::default()
        };
        assert!(check(tomb(at(NOW + skew))).is_ok());
        assert!(check(tomb(at(NOW + skew + 1))).is_err());
        assert!(check(tomb(u64::MAX)).is_err());
        let msg = |placed, clock: &str| Delta {
            messages: vec![MessageState {
                mailbox: MailboxGuid([1; 16]),
                uid: 1,
                guid: MessageGuid([2; 16]),
                content: [0; 32],
                flags: 0,
                keywords: vec![],
                peer_has: false,
                clock: clock.into(),
                placed,
                internal_date: 0,
                size: u64::MAX,
            }],
            ..Delta::default()
        };
        assert!(check(msg(at(NOW), &format!("{}:1:\\Seen", at(NOW)))).is_ok());
        assert!(check(msg(at(NOW + 3_600_000), "")).is_err());
        assert!(check(msg(at(NOW), &format!("{}:1:\\Seen", u64::MAX))).is_err());
        assert!(check(msg(at(NOW), "1:1:bad(flag")).is_err());
        let mut far_date = msg(at(NOW), "");
        far_date.messages[0].internal_date = i64::MAX;
        assert!(check(far_date).is_err());
        let mut far = mailbox("Far");
        far.name_stamp = at(NOW + 10 * skew);
        assert!(
            check(Delta {
                mailboxes: vec![far],
                ..Delta::default()
            })
            .is_err()
        );
    }

    #[test]
    fn a_far_future_user_record_is_refused() {
        let rec = |stamp| UserRecord {
            address: "a@x.org".into(),
            password: Some("$argon2id$v=19$...".into()),
            quota: 0,
            stamp,
            removed: false,
        };
        let l = PeerLimits::default();
        assert_eq!(refuse_user_record(&rec(NOW << 16), NOW, &l), None);
        assert!(refuse_user_record(&rec((NOW + 86_400_000) << 16), NOW, &l).is_some());
        assert!(refuse_user_record(&rec(u64::MAX), NOW, &l).is_some());
    }
}
