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
