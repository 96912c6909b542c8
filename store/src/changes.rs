//! The typed change feed: what happened to a user's mail, in modseq order.
//! IDLE sessions, NOOP and the replicator all read this one feed, live
//! (a broadcast channel per user) or from the index's change log.

use crate::ids::{Flags, MailboxGuid, MessageGuid, ModSeq, Uid};

/// One change, with the modseq it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub modseq: ModSeq,
    pub mailbox: MailboxGuid,
    pub kind: ChangeKind,
    /// For a message added, its row as committed, so that listeners (IDLE
    /// sessions) need not read the index for it; for a message expunged,
    /// its row as it was. Live events only: the change log read back does
    /// not carry it.
    pub message: Option<std::sync::Arc<crate::MessageMeta>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    MailboxCreated {
        name: String,
    },
    MailboxRenamed {
        from: String,
        to: String,
    },
    MailboxDeleted {
        name: String,
    },
    Subscription {
        subscribed: bool,
    },
    MessageAdded {
        uid: Uid,
        guid: MessageGuid,
    },
    FlagsChanged {
        uid: Uid,
        flags: Flags,
        keywords: Vec<String>,
    },
    Expunged {
        uid: Uid,
        guid: MessageGuid,
    },
}

impl ChangeKind {
    pub(crate) fn tag(&self) -> &'static str {
        match self {
            ChangeKind::MailboxCreated { .. } => "create",
            ChangeKind::MailboxRenamed { .. } => "rename",
            ChangeKind::MailboxDeleted { .. } => "delete",
            ChangeKind::Subscription { .. } => "subscribe",
            ChangeKind::MessageAdded { .. } => "add",
            ChangeKind::FlagsChanged { .. } => "flags",
            ChangeKind::Expunged { .. } => "expunge",
        }
    }

    /// (uid, guid, detail) as stored in the change log.
    pub(crate) fn to_columns(&self) -> (Option<Uid>, Option<MessageGuid>, Option<String>) {
        match self {
            ChangeKind::MailboxCreated { name } | ChangeKind::MailboxDeleted { name } => {
                (None, None, Some(name.clone()))
            }
            ChangeKind::MailboxRenamed { from, to } => (None, None, Some(format!("{from}\n{to}"))),
            ChangeKind::Subscription { subscribed } => {
                (None, None, Some(u8::from(*subscribed).to_string()))
            }
            ChangeKind::MessageAdded { uid, guid } | ChangeKind::Expunged { uid, guid } => {
                (Some(*uid), Some(*guid), None)
            }
            ChangeKind::FlagsChanged {
                uid,
                flags,
                keywords,
            } => {
                let mut d = flags.bits().to_string();
                for k in keywords {
                    d.push(' ');
                    d.push_str(k);
                }
                (Some(*uid), None, Some(d))
            }
        }
    }

    pub(crate) fn from_columns(
        tag: &str,
        uid: Option<Uid>,
        guid: Option<MessageGuid>,
        detail: Option<String>,
    ) -> Option<ChangeKind> {
        Some(match tag {
            "create" => ChangeKind::MailboxCreated { name: detail? },
            "delete" => ChangeKind::MailboxDeleted { name: detail? },
            "rename" => {
                let d = detail?;
                let (from, to) = d.split_once('\n')?;
                ChangeKind::MailboxRenamed {
                    from: from.to_string(),
                    to: to.to_string(),
                }
            }
            "subscribe" => ChangeKind::Subscription {
                subscribed: detail? == "1",
            },
            "add" => ChangeKind::MessageAdded {
                uid: uid?,
                guid: guid?,
            },
            "expunge" => ChangeKind::Expunged {
                uid: uid?,
                guid: guid?,
            },
            "flags" => {
                let d = detail?;
                let mut parts = d.split(' ');
                let flags = Flags::from_bits(parts.next()?.parse().ok()?);
                ChangeKind::FlagsChanged {
                    uid: uid?,
                    flags,
                    keywords: parts
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect(),
                }
            }
            _ => return None,
        })
    }
}

/// A flag change on many messages of one mailbox, logged as one change-log
/// row (kind `flagrun`) at the first of its modseqs: the messages in the
/// order their modseqs run, each with its new flags and keywords.
///
/// The row's text is one line per stretch of messages given the same
/// flags and keywords: the flags as [`ChangeKind::FlagsChanged`] stores
/// them (bits, then keywords, by spaces), a tab, and the UIDs as ranges
/// (`4:9,12`) in the run's order. `STORE 1:* +FLAGS (\Seen)` on 35,000
/// messages is a line or a few, where it was 35,000 rows.
pub(crate) struct FlagRun;

/// The most messages one `flagrun` row may expand to when read back (a
/// damaged row must not make the reader allocate without bound).
const FLAG_RUN_MAX: u64 = 1 << 24;

impl FlagRun {
    /// The row's text for (uid, flags, keywords) in modseq order.
    pub(crate) fn encode<'a>(
        items: impl IntoIterator<Item = (Uid, Flags, &'a [String])>,
    ) -> String {
        let mut out = String::new();
        // The current line's flags and its last range.
        let mut line: Option<(Flags, &'a [String])> = None;
        let mut range: Option<(Uid, Uid)> = None;
        let close = |out: &mut String, range: Option<(Uid, Uid)>| {
            if let Some((a, b)) = range {
                if !out.ends_with('\t') {
                    out.push(',');
                }
                out.push_str(&a.to_string());
                if b != a {
                    out.push(':');
                    out.push_str(&b.to_string());
                }
            }
        };
        for (uid, flags, keywords) in items {
            if line != Some((flags, keywords)) {
                close(&mut out, range.take());
                if line.is_some() {
                    out.push('\n');
                }
                let (_, _, detail) = ChangeKind::FlagsChanged {
                    uid,
                    flags,
                    keywords: keywords.to_vec(),
                }
                .to_columns();
                out.push_str(&detail.unwrap_or_default());
                out.push('\t');
                line = Some((flags, keywords));
            }
            range = match range {
                Some((a, b)) if b.checked_add(1) == Some(uid) => Some((a, uid)),
                other => {
                    close(&mut out, other);
                    Some((uid, uid))
                }
            };
        }
        close(&mut out, range);
        out
    }

    /// The changes of a row written by [`FlagRun::encode`] at `modseq`,
    /// those above `since` only. `None`: not such a row.
    pub(crate) fn decode(
        modseq: ModSeq,
        detail: &str,
        since: ModSeq,
    ) -> Option<Vec<(ModSeq, ChangeKind)>> {
        let mut out = Vec::new();
        let mut n: u64 = 0;
        for line in detail.split('\n') {
            let (flags, uids) = line.split_once('\t')?;
            let Some(ChangeKind::FlagsChanged {
                flags, keywords, ..
            }) = ChangeKind::from_columns("flags", Some(0), None, Some(flags.to_string()))
            else {
                return None;
            };
            for range in uids.split(',') {
                let (a, b) = match range.split_once(':') {
                    Some((a, b)) => (a.parse::<Uid>().ok()?, b.parse::<Uid>().ok()?),
                    None => {
                        let a = range.parse::<Uid>().ok()?;
                        (a, a)
                    }
                };
                if a > b || n + u64::from(b - a) >= FLAG_RUN_MAX {
                    return None;
                }
                for uid in a..=b {
                    let at = modseq + n;
                    n += 1;
                    if at > since {
                        out.push((
                            at,
                            ChangeKind::FlagsChanged {
                                uid,
                                flags,
                                keywords: keywords.clone(),
                            },
                        ));
                    }
                }
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_columns_round_trip() {
        let g = MessageGuid([3; 16]);
        for kind in [
            ChangeKind::MailboxCreated { name: "A".into() },
            ChangeKind::MailboxRenamed {
                from: "A".into(),
                to: "B.C".into(),
            },
            ChangeKind::MailboxDeleted { name: "B".into() },
            ChangeKind::Subscription { subscribed: true },
            ChangeKind::MessageAdded { uid: 4, guid: g },
            ChangeKind::Expunged { uid: 4, guid: g },
            ChangeKind::FlagsChanged {
                uid: 9,
                flags: Flags::SEEN | Flags::DRAFT,
                keywords: vec!["$Junk".into(), "work".into()],
            },
        ] {
            let (uid, guid, detail) = kind.to_columns();
            assert_eq!(
                ChangeKind::from_columns(kind.tag(), uid, guid, detail),
                Some(kind)
            );
        }
    }

    /// A run's row reads back as each message's change, at the modseqs
    /// the run gave them, in its order; from the middle of the run, only
    /// the rest.
    #[test]
    fn a_flag_run_round_trips() {
        let seen = (Flags::SEEN, Vec::new());
        let work = (
            Flags::SEEN | Flags::FLAGGED,
            vec!["work".to_string(), "$Junk".to_string()],
        );
        let items: Vec<(Uid, &(Flags, Vec<String>))> = vec![
            (3, &seen),
            (4, &seen),
            (5, &seen),
            (7, &seen),
            (8, &work),
            (9, &seen),
            (10, &seen),
            (2, &seen),
        ];
        let text = FlagRun::encode(items.iter().map(|(u, (f, k))| (*u, *f, &k[..])));
        assert_eq!(text, "1\t3:5,7\n5 work $Junk\t8\n1\t9:10,2");
        let want: Vec<(ModSeq, ChangeKind)> = items
            .iter()
            .zip(100..)
            .map(|((uid, (flags, keywords)), m)| {
                (
                    m,
                    ChangeKind::FlagsChanged {
                        uid: *uid,
                        flags: *flags,
                        keywords: keywords.clone(),
                    },
                )
            })
            .collect();
        assert_eq!(FlagRun::decode(100, &text, 0), Some(want.clone()));
        assert_eq!(FlagRun::decode(100, &text, 104), Some(want[5..].to_vec()));
        for bad in ["", "1", "x\t1", "1\t5:4", "1\t1:4000000000", "1\t1,"] {
            assert_eq!(FlagRun::decode(1, bad, 0), None, "{bad:?}");
        }
    }
}

/// How many changes an account's live feed keeps for a listener that has
/// not read them yet; one that falls further behind gets `Lagged` and
/// re-reads the index.
pub(crate) const FEED_CAPACITY: usize = 1024;

/// An account's live change feed: a broadcast ring of [`FEED_CAPACITY`]
/// changes, made when the first listener subscribes and dropped at the
/// first change sent while nobody listens. The ring is allocated whole
/// (about 120 KiB), so an account nobody watches (opened by a delivery, a
/// POP3 poll or a peer's sync) holds none; nothing is lost by dropping it,
/// since a change sent with no receiver reaches nobody either way.
#[derive(Default)]
pub(crate) struct Feed {
    ring: std::sync::Mutex<Option<tokio::sync::broadcast::Sender<Change>>>,
}

impl Feed {
    fn ring(&self) -> std::sync::MutexGuard<'_, Option<tokio::sync::broadcast::Sender<Change>>> {
        // The state is an Option of a channel: a panic elsewhere cannot
        // leave it half-changed.
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Live changes from now on.
    pub(crate) fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Change> {
        let mut ring = self.ring();
        match ring.as_ref() {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = tokio::sync::broadcast::channel(FEED_CAPACITY);
                *ring = Some(tx);
                rx
            }
        }
    }

    /// Tell every listener; with none left, drop the ring.
    pub(crate) fn send(&self, change: Change) {
        self.send_all(std::iter::once(change));
    }

    /// Tell every listener of a commit's changes, under one lock: another
    /// commit's changes never land among them (a listener that finds a
    /// run of its own changes there can count on that).
    pub(crate) fn send_all(&self, changes: impl IntoIterator<Item = Change>) {
        let mut ring = self.ring();
        let Some(tx) = ring.as_ref() else {
            return;
        };
        for change in changes {
            if tx.send(change).is_err() {
                *ring = None;
                return;
            }
        }
    }

    /// The ring's slots, in bytes (0 without a ring): what the channel
    /// allocates for [`FEED_CAPACITY`] slots of a change, its position and
    /// its lock.
    pub(crate) fn ring_bytes(&self) -> u64 {
        if self.ring().is_none() {
            return 0;
        }
        let slot = std::mem::size_of::<Option<Change>>() + 2 * std::mem::size_of::<u64>() + 16;
        (FEED_CAPACITY * slot) as u64
    }
}
