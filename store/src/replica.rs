//! What replicas of a user's mail exchange, and the rules that merge them
//! (DESIGN.md, "Replication"; docs/replication.md).
//!
//! # Stamps
//! Every change a replica must be able to order against a change made on
//! another node carries a [`Stamp`]: milliseconds since the epoch in the high
//! bits and a 16-bit id of the node that made it in the low 16, so that two
//! stamps never tie unless one node made both, and "the later change wins,
//! ties by node id" is one integer comparison. Stamped are: where a message
//! was put (`message.placed`: delivery, APPEND, COPY, MOVE), each flag's last
//! change (`message.clock`), each expunge (`tombstone.stamp`), each name a
//! mailbox was given (`mailbox.name_stamp`), each mailbox delete
//! (`mailbox_gone`) and each (un)subscription (`subscription_stamp`).
//!
//! # The merge is a function of the two deltas
//! A sync session swaps one [`Delta`] each way: everything that changed on
//! a node since the other last applied its changes. Both nodes then apply
//! the other's delta with the same rules. What must come out the same on
//! both nodes without a third party — which messages get fresh UIDs because
//! two nodes gave one UID to different messages — is decided by
//! [`renumbering`], a function of the two deltas alone, symmetric in them;
//! everything else is a last-writer-wins merge per item (flags per flag),
//! which gives the same result whichever order the nodes apply it in.
//!
//! # A new message never lands below a UID already shown
//! RFC 3501 §2.3.1.1: UIDs are given in strictly ascending order; a client
//! that fetched up to UID n asks only for UIDs above n. So a message that a
//! node applies from its peer and does not hold at that place already must
//! never take a UID below that node's UIDNEXT (the node may have shown
//! every UID below it). Two UIDs given to two messages are one case (the
//! collision rule above); the other is a UID this node passed without
//! giving it to anything its delta names: it gave it long ago (the peer
//! knew, yet placed a message there, e.g. its filter filed a message into
//! a mailbox at a UID below the one this node's filter chose), or skipped
//! it (a UIDNEXT raised by a renumbering or by the peer's). The renumbering
//! decides it from the deltas, for each message's winning placement
//! (mailbox, UID) taken from one node's delta: it is new to the other node
//! if the other node sent the message at another place (a delta holds the
//! node's current place of every message it sends), or did not send it and
//! the sender does not know the other node holds it there. The sender
//! knows that from its own index: a placement at or below the other node's
//! mark was applied there, and a placement it made by applying that node's
//! delta (at that node's UID, or at a UID of a renumbering both applied) is
//! the other node's too; the change log's `add` row names that peer. Each
//! delta's messages carry that answer (`MessageState::peer_has`), each
//! delta its mailboxes' UIDNEXT, so both nodes decide alike: a placement new
//! to the other node below that node's UIDNEXT takes a fresh UID above both
//! UIDNEXTs, on both nodes. An answer wrong towards "the peer has it" (a
//! third node, a session that failed on one side) is caught when applying:
//! the apply never inserts a message below the mailbox's UIDNEXT as it was
//! before the apply, and gives it a fresh UID that the peer follows at the
//! next session, as for a UID taken while the session ran. One wrong
//! towards "new" costs an EXPUNGE and a new UID, never a meaning.
//!
//! # Mailboxes made on both nodes under one name
//! A filter that files into `Spam` creates it on whichever node runs it; two
//! nodes apart each make one. They mean one mailbox, so they merge: two
//! mailboxes of one name, each created after the other node's mark and
//! never renamed, each unknown to the other node (neither among its
//! mailboxes nor its deleted ones), merge into the one with the lower GUID
//! ([`merges`]), on both nodes. The kept mailbox keeps its GUID,
//! UIDVALIDITY and UIDs; the other's messages take fresh UIDs above both
//! nodes' UIDNEXT, and its own UIDs and tombstones are void (its clients
//! see a new UIDVALIDITY); what those tombstones say of their messages is
//! not void (the apply's `renumber_mailbox` keeps each expunge, and sends
//! on one the peer has not had yet). A mailbox renamed to the name, or one
//! the other node knew, is a different mailbox that happens to end with the
//! name: the suffix rule keeps both.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::time::UNIX_EPOCH;

use crate::env::Clock;
use crate::ids::{Flags, MailboxGuid, MessageGuid, ModSeq, Uid};

mod feed;
mod peer_input;
pub use crate::account::{History, HistoryRows, PRUNE_EVERY, Pruned};
pub use feed::{ContentFeed, FeedSender, Received};
pub use peer_input::{PeerLimits, refuse_user_record, valid_peer_mailbox_name, validate_delta};

/// Milliseconds since the epoch << 16 | node id.
pub type Stamp = u64;

/// A node's 16-bit id: from its hostname, so it is the same after a restart.
pub fn node_id(hostname: &str) -> u16 {
    let h = blake3::hash(hostname.as_bytes());
    u16::from_be_bytes([h.as_bytes()[0], h.as_bytes()[1]])
}

/// Milliseconds since the epoch on `clock` (what stamps count). There is
/// deliberately no clockless variant: every stamp comes from the clock the
/// store was given ([`crate::Env`]), so tests that inject one see it in
/// every placement, flag, expunge and directory stamp.
pub fn now_ms(clock: &dyn Clock) -> u64 {
    clock
        .now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Now on `clock`, on `node`.
pub fn stamp_now(clock: &dyn Clock, node: u16) -> Stamp {
    (now_ms(clock) << 16) | node as u64
}

/// The first stamp of `mine`'s node that is after `seen`.
pub(crate) fn stamp_after(seen: Stamp, mine: Stamp) -> Stamp {
    (((seen >> 16) + 1) << 16) | (mine & 0xffff)
}

/// The system flags by name, in bit order.
const SYSTEM_FLAGS: [(&str, Flags); 5] = [
    ("\\Seen", Flags::SEEN),
    ("\\Answered", Flags::ANSWERED),
    ("\\Flagged", Flags::FLAGGED),
    ("\\Deleted", Flags::DELETED),
    ("\\Draft", Flags::DRAFT),
];

/// When each of a message's flags (system flags and keywords) was last set
/// or cleared, and to what. A flag without an entry has never changed since
/// the message was delivered (stamp 0). Kept as text in `message.clock`:
/// `<stamp>:<0|1>:<flag>` separated by spaces (flags are IMAP atoms, which
/// hold no space).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlagClock(BTreeMap<String, (bool, Stamp)>);

impl FlagClock {
    pub fn parse(text: &str) -> FlagClock {
        let mut map = BTreeMap::new();
        for entry in text.split(' ').filter(|e| !e.is_empty()) {
            let mut parts = entry.splitn(3, ':');
            let (Some(stamp), Some(value), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if let Ok(stamp) = stamp.parse::<u64>() {
                map.insert(name.to_string(), (value == "1", stamp));
            }
        }
        FlagClock(map)
    }

    /// The newest stamp in the clock (0 if none).
    pub fn newest(&self) -> Stamp {
        self.0.values().map(|(_, s)| *s).max().unwrap_or(0)
    }

    /// Stamp every flag that differs between `old` and `new`.
    pub fn record_change(
        &mut self,
        old: (Flags, &[String]),
        new: (Flags, &[String]),
        stamp: Stamp,
    ) {
        let before = flag_set(old.0, old.1);
        let after = flag_set(new.0, new.1);
        for name in before.symmetric_difference(&after) {
            self.0.insert(name.clone(), (after.contains(name), stamp));
        }
    }
}

impl std::fmt::Display for FlagClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for (name, (value, stamp)) in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{stamp}:{}:{name}", u8::from(*value))?;
        }
        Ok(())
    }
}

fn flag_set(flags: Flags, keywords: &[String]) -> BTreeSet<String> {
    let mut set: BTreeSet<String> = SYSTEM_FLAGS
        .iter()
        .filter(|(_, f)| flags.contains(*f))
        .map(|(n, _)| n.to_string())
        .collect();
    set.extend(keywords.iter().cloned());
    set
}

/// One side's flags for [`merge_flags`].
pub struct FlagsSide<'a> {
    pub flags: Flags,
    pub keywords: &'a [String],
    pub clock: &'a FlagClock,
}

/// Merge two replicas' flags, flag by flag: the side that changed a flag
/// later wins; a flag neither side ever changed is kept if either has it
/// (when in doubt, keep). Commutative: merge(a, b) == merge(b, a).
pub fn merge_flags(a: FlagsSide<'_>, b: FlagsSide<'_>) -> (Flags, Vec<String>, FlagClock) {
    let set_a = flag_set(a.flags, a.keywords);
    let set_b = flag_set(b.flags, b.keywords);
    let mut names: BTreeSet<&String> = set_a.iter().chain(set_b.iter()).collect();
    names.extend(a.clock.0.keys());
    names.extend(b.clock.0.keys());
    let mut flags = Flags::empty();
    let mut keywords = Vec::new();
    let mut clock = BTreeMap::new();
    for name in names {
        let va = set_a.contains(name);
        let vb = set_b.contains(name);
        let sa = a.clock.0.get(name).map_or(0, |(_, s)| *s);
        let sb = b.clock.0.get(name).map_or(0, |(_, s)| *s);
        let value = match sa.cmp(&sb) {
            std::cmp::Ordering::Greater => va,
            std::cmp::Ordering::Less => vb,
            std::cmp::Ordering::Equal => va || vb,
        };
        let stamp = sa.max(sb);
        if stamp > 0 {
            clock.insert(name.clone(), (value, stamp));
        }
        if value {
            match SYSTEM_FLAGS.iter().find(|(n, _)| *n == name.as_str()) {
                Some((_, f)) => flags.insert(*f),
                None => keywords.push(name.clone()),
            }
        }
    }
    (flags, keywords, FlagClock(clock))
}

/// A mailbox as a replica describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxState {
    pub guid: MailboxGuid,
    pub name: String,
    pub name_stamp: Stamp,
    pub uidvalidity: u32,
    pub uidnext: Uid,
    pub special_use: Option<String>,
    /// Created after the receiving peer's mark, under the name it has now
    /// (never renamed since): the peer may not know it. Two such mailboxes
    /// of one name, each unknown to the other node, merge ([`merges`]).
    pub created_apart: bool,
}

/// A mailbox the replica deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxGone {
    pub guid: MailboxGuid,
    pub name: String,
    pub stamp: Stamp,
}

/// A mailbox that merged into another on some node ([`merges`]): from
/// then on its GUID stands for the kept one on every node that hears of it,
/// so a node that still holds it (it never took part in the merge) merges
/// it too, instead of the merged node making it again under UIDs it had
/// given other messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxMerged {
    pub guid: MailboxGuid,
    pub into: MailboxGuid,
}

/// A name's subscription and when it was last changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionState {
    pub name: String,
    pub subscribed: bool,
    pub stamp: Stamp,
}

/// A message instance, where it is and how it is flagged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageState {
    pub mailbox: MailboxGuid,
    pub uid: Uid,
    pub guid: MessageGuid,
    /// blake3 of the content: what a peer asks for if it lacks it.
    pub content: [u8; 32],
    pub flags: u8,
    pub keywords: Vec<String>,
    /// [`FlagClock`] text.
    pub clock: String,
    pub placed: Stamp,
    pub internal_date: i64,
    pub size: u64,
    /// The sender knows that the receiving peer already holds this message
    /// at this mailbox and UID: the peer applied this placement (it is at
    /// or below the peer's mark), or the sender took it from the peer (or
    /// from a renumbering both applied). False: the placement may be new
    /// to the peer (see [`renumbering`]).
    pub peer_has: bool,
}

/// A UID retired in a mailbox: the message was expunged, or moved away
/// (then its GUID lives on elsewhere in the same delta).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TombstoneState {
    pub mailbox: MailboxGuid,
    pub uid: Uid,
    pub guid: MessageGuid,
    pub stamp: Stamp,
}

/// How far a node has applied a peer's changes: the peer's modseq, within
/// the peer's index epoch (a rebuilt index starts a new epoch, and its
/// modseqs start again).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub modseq: ModSeq,
    pub epoch: u64,
}

/// What one node says of one user in an anti-entropy round: how far its
/// own changes go, and how far it has applied the other node's. Two nodes
/// agree on a user when each one's mark of the other is the other's
/// position; anything else means a change has not travelled yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// This node's latest modseq of the user, and its index epoch.
    pub position: Mark,
    /// The other node's modseq this node has applied.
    pub mark: Mark,
}

impl Digest {
    /// True when nothing is waiting to travel either way between the node
    /// that made `self` and the one that made `theirs`.
    pub fn agrees_with(&self, theirs: &Digest) -> bool {
        self.mark == theirs.position && theirs.mark == self.position
    }
}

/// Everything about one user that changed on a node after modseq `since`.
/// Mailboxes, deleted mailboxes and subscriptions are always sent whole
/// (they are few); messages and tombstones only when changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// The sending index's epoch: marks are only valid within one.
    pub epoch: u64,
    pub since: ModSeq,
    /// The node's modseq when the delta was taken: the `since` of the next.
    pub modseq: ModSeq,
    pub mailboxes: Vec<MailboxState>,
    pub gone: Vec<MailboxGone>,
    /// Every mailbox that merged into another, as the sender knows (sent
    /// whole, like `gone`).
    pub merged: Vec<MailboxMerged>,
    pub subscriptions: Vec<SubscriptionState>,
    pub messages: Vec<MessageState>,
    pub tombstones: Vec<TombstoneState>,
    /// The user's Sieve scripts, active marker and vacation/duplicate
    /// tracking, sent whole (`None`: the user never had scripts).
    pub sieve: Option<Box<crate::sieve::SieveState>>,
    /// Every message and tombstone the sender holds, whatever `since`
    /// (still the receiver's mark): its history was pruned past that mark,
    /// so a message the receiver holds that the sender had applied and no
    /// longer lists was expunged there (account/history.rs).
    pub complete: bool,
}

impl Delta {
    /// Nothing changed but the (always sent) mailbox list.
    pub fn has_message_changes(&self) -> bool {
        !self.messages.is_empty() || !self.tombstones.is_empty()
    }

    pub(crate) fn mailbox(&self, guid: &MailboxGuid) -> Option<&MailboxState> {
        self.mailboxes.iter().find(|m| m.guid == *guid)
    }
}

/// Which placement of a message wins: the later one (ties by mailbox and
/// UID, so that every node picks the same).
pub(crate) fn placement_key(m: &MessageState) -> (Stamp, MailboxGuid, Uid) {
    (m.placed, m.mailbox, m.uid)
}

/// The UIDs both nodes give to messages that two nodes numbered alike.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Renumbering {
    /// (mailbox, message) -> its new UID, the same on every node.
    pub uids: BTreeMap<(MailboxGuid, MessageGuid), Uid>,
    /// Mailboxes whose UIDVALIDITY differs between the two nodes (one
    /// node's index was rebuilt, which renews UIDVALIDITY): the lower
    /// UIDVALIDITY stands on both nodes, with the UIDs of the node that has
    /// it; the other node takes them (its own UIDs under the higher
    /// UIDVALIDITY are void), and its messages the first node lacks get
    /// fresh UIDs (in `uids`).
    pub resets: BTreeMap<MailboxGuid, Reset>,
    /// Mailboxes that merge into another ([`merges`]): the one that gives
    /// way -> the one kept. Their messages take fresh UIDs in the kept
    /// mailbox (in `uids`), their UIDs and tombstones are void.
    pub merged: BTreeMap<MailboxGuid, Merge>,
}

impl Renumbering {
    /// The UID the peer's message `m` takes: the renumbering's, else its
    /// own.
    pub fn uid_of(&self, m: &MessageState) -> Uid {
        self.uids
            .get(&(m.mailbox, m.guid))
            .copied()
            .unwrap_or(m.uid)
    }
}

/// What a mailbox that merges into another becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Merge {
    pub into: MailboxGuid,
    /// The kept mailbox's UIDNEXT after the fresh UIDs.
    pub uidnext: Uid,
}

impl Renumbering {
    /// `delta` as the merge sees it: messages and tombstones of a mailbox
    /// that merges into another are in the kept one (at UIDs the
    /// renumbering replaces; tombstones at UID 0, which claims nothing),
    /// and the mailbox itself is gone.
    pub fn view<'d>(&self, delta: &'d Delta) -> Cow<'d, Delta> {
        rewrite(
            delta,
            &self.merged.iter().map(|(g, m)| (*g, m.into)).collect(),
        )
    }
}

/// Mailboxes that both nodes created under one name while apart: a
/// mailbox of each delta, of the same name (not INBOX), each created after
/// the other node's mark and never renamed since, and each unknown to the
/// other node (not among its mailboxes, nor its deleted ones). A user who
/// made `Spam` on each node (or a filter that did) means one mailbox: they
/// merge into the one with the lower GUID, the same choice on both nodes.
/// A mailbox that was renamed, or that the other node knew, is another
/// matter (two mailboxes that end with one name: the suffix rule).
/// Returns the one that gives way -> the one kept. Symmetric.
pub fn merges(a: &Delta, b: &Delta) -> BTreeMap<MailboxGuid, MailboxGuid> {
    let unknown_to = |m: &MailboxState, d: &Delta| {
        d.mailbox(&m.guid).is_none() && !d.gone.iter().any(|g| g.guid == m.guid)
    };
    let mut out = BTreeMap::new();
    for x in a
        .mailboxes
        .iter()
        .filter(|m| m.created_apart && unknown_to(m, b))
    {
        if x.name.eq_ignore_ascii_case("INBOX") {
            continue;
        }
        for y in b
            .mailboxes
            .iter()
            .filter(|m| m.created_apart && unknown_to(m, a))
        {
            if y.name == x.name && y.guid != x.guid {
                let (keep, give) = if x.guid < y.guid { (x, y) } else { (y, x) };
                out.insert(give.guid, keep.guid);
            }
        }
    }
    // A mailbox one node merged away that the other still holds (it was
    // shared with a third node before the merge): it merges here too, into
    // the one the first node kept, when that one is new to the other node.
    for (from, to) in [(a, b), (b, a)] {
        for m in &from.merged {
            let into = merged_into(from, m.into);
            if to.mailbox(&m.guid).is_some()
                && from.mailbox(&m.guid).is_none()
                && from.mailbox(&into).is_some()
                && to.mailbox(&into).is_none()
                && into != m.guid
            {
                out.entry(m.guid).or_insert(into);
            }
        }
    }
    out
}

/// The mailbox `guid` stands for in `d`: itself, or the one it merged into
/// (followed through later merges, at most as many as `d` lists).
fn merged_into(d: &Delta, mut guid: MailboxGuid) -> MailboxGuid {
    for _ in 0..d.merged.len() {
        match d.merged.iter().find(|m| m.guid == guid) {
            Some(m) => guid = m.into,
            None => break,
        }
    }
    guid
}

/// [`Renumbering::view`] with the merges given.
fn rewrite<'d>(delta: &'d Delta, merged: &BTreeMap<MailboxGuid, MailboxGuid>) -> Cow<'d, Delta> {
    let touched = delta.mailboxes.iter().any(|m| merged.contains_key(&m.guid))
        || delta
            .messages
            .iter()
            .any(|m| merged.contains_key(&m.mailbox))
        || delta
            .tombstones
            .iter()
            .any(|t| merged.contains_key(&t.mailbox));
    if !touched {
        return Cow::Borrowed(delta);
    }
    let mut d = delta.clone();
    d.mailboxes.retain(|m| !merged.contains_key(&m.guid));
    // An expunge in the mailbox that gives way still expunges its message
    // (which the other node may hold elsewhere), but its UID meant nothing
    // in the kept mailbox: UID 0, which claims nothing.
    for t in &mut d.tombstones {
        if let Some(into) = merged.get(&t.mailbox) {
            t.mailbox = *into;
            t.uid = 0;
        }
    }
    for m in &mut d.messages {
        if let Some(into) = merged.get(&m.mailbox) {
            m.mailbox = *into;
        }
    }
    Cow::Owned(d)
}

/// What a mailbox becomes on the node whose UIDVALIDITY gives way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reset {
    pub uidvalidity: u32,
    /// UIDNEXT after the fresh UIDs.
    pub uidnext: Uid,
}

/// Decide, from the two deltas alone, which messages need fresh UIDs, in
/// each mailbox: every message whose winning placement is at a UID that
/// either (a) is claimed by more than one message (a live message or a
/// retired UID's tombstone, on either node), or (b) would be new to the
/// other node below that node's UIDNEXT (see [`new_below_uidnext`]). They
/// get fresh UIDs above both nodes' UIDNEXT and every claimed UID, in GUID
/// order (DESIGN.md: "colliding UIDs renumbered above both UIDNEXTs on both
/// nodes"). Symmetric in `a` and `b`.
pub fn renumbering(a: &Delta, b: &Delta) -> Renumbering {
    let merged = merges(a, b);
    // Messages that move into a kept mailbox, by side (true: `a`): each
    // whose placement there wins takes a fresh UID.
    let moved_in = |d: &Delta| -> BTreeSet<MessageGuid> {
        d.messages
            .iter()
            .filter(|m| merged.contains_key(&m.mailbox))
            .map(|m| m.guid)
            .collect()
    };
    let (moved_in_a, moved_in_b) = (moved_in(a), moved_in(b));
    let (a, b) = (&*rewrite(a, &merged), &*rewrite(b, &merged));
    let mut out = Renumbering::default();
    for ma in &a.mailboxes {
        if let Some(mb) = b.mailbox(&ma.guid)
            && mb.uidvalidity != ma.uidvalidity
        {
            let (keep, give) = if ma.uidvalidity < mb.uidvalidity {
                (a, b)
            } else {
                (b, a)
            };
            let reset = reset_mailbox(ma.guid, keep, give, &mut out.uids);
            out.resets.insert(ma.guid, reset);
        }
    }
    // Each GUID's winning placement, and the delta it came from.
    let mut winners: BTreeMap<MessageGuid, (&MessageState, &Delta)> = BTreeMap::new();
    for (m, from) in a
        .messages
        .iter()
        .map(|m| (m, a))
        .chain(b.messages.iter().map(|m| (m, b)))
    {
        let e = winners.entry(m.guid).or_insert((m, from));
        if placement_key(m) > placement_key(e.0) {
            *e = (m, from);
        }
    }
    let held = |d: &Delta| -> BTreeMap<MessageGuid, (MailboxGuid, Uid)> {
        d.messages
            .iter()
            .map(|m| (m.guid, (m.mailbox, m.uid)))
            .collect()
    };
    let (held_a, held_b) = (held(a), held(b));
    let mut claims: BTreeMap<MailboxGuid, BTreeMap<Uid, BTreeSet<MessageGuid>>> = BTreeMap::new();
    // A message that moves into a kept mailbox claims no UID there: its
    // UID was the other mailbox's.
    let claiming = a
        .messages
        .iter()
        .filter(|m| !moved_in_a.contains(&m.guid))
        .chain(b.messages.iter().filter(|m| !moved_in_b.contains(&m.guid)));
    for m in claiming {
        claims
            .entry(m.mailbox)
            .or_default()
            .entry(m.uid)
            .or_default()
            .insert(m.guid);
    }
    for t in a
        .tombstones
        .iter()
        .chain(b.tombstones.iter())
        .filter(|t| t.uid != 0)
    {
        claims
            .entry(t.mailbox)
            .or_default()
            .entry(t.uid)
            .or_default()
            .insert(t.guid);
    }
    let mut losers: BTreeMap<MailboxGuid, BTreeSet<MessageGuid>> = BTreeMap::new();
    let mut fresh_end: BTreeMap<MailboxGuid, Uid> = BTreeMap::new();
    for (g, (w, from)) in &winners {
        if out.resets.contains_key(&w.mailbox) {
            continue;
        }
        let (other, other_held, moved_in) = if std::ptr::eq(*from, a) {
            (b, &held_b, &moved_in_a)
        } else {
            (a, &held_a, &moved_in_b)
        };
        let collides = claims
            .get(&w.mailbox)
            .and_then(|uids| uids.get(&w.uid))
            .is_some_and(|guids| guids.len() > 1)
            || moved_in.contains(g);
        if collides || new_below_uidnext(w, other, other_held.get(g)) {
            losers.entry(w.mailbox).or_default().insert(*g);
        }
    }
    for (mailbox, losers) in losers {
        let next_of = |d: &Delta| d.mailbox(&mailbox).map_or(1, |m| m.uidnext);
        let highest = claims
            .get(&mailbox)
            .and_then(|uids| uids.keys().next_back().copied())
            .unwrap_or(0);
        let mut fresh = next_of(a).max(next_of(b)).max(highest.saturating_add(1));
        for g in losers {
            out.uids.insert((mailbox, g), fresh);
            fresh = fresh.saturating_add(1);
        }
        fresh_end.insert(mailbox, fresh);
    }
    for (give, into) in merged {
        let uidnext = fresh_end.get(&into).copied().unwrap_or_else(|| {
            let next_of = |d: &Delta| d.mailbox(&into).map_or(1, |m| m.uidnext);
            next_of(a).max(next_of(b))
        });
        out.merged.insert(give, Merge { into, uidnext });
    }
    out
}

/// Whether the winning placement `w` would put its message on the `other`
/// node (whose delta is `other`, holding the message at `other_held` if it
/// sent it) at a UID below that node's UIDNEXT, where it does not hold it
/// already: a UID that node may have shown already, which a new message
/// must never take (RFC 3501 §2.3.1.1: UIDs ascend; a client that fetches
/// only UIDs above the last it saw would never see it).
///
/// New to the other node: it sent the message at another place (its delta
/// is its current state of every message it changed), or it did not send
/// it and `w` does not say the other node has it (`peer_has`, decided by
/// the sender from its own index: it knows which placements the other node
/// applied — those at or below its mark — and which it took from that node).
fn new_below_uidnext(
    w: &MessageState,
    other: &Delta,
    other_held: Option<&(MailboxGuid, Uid)>,
) -> bool {
    let new = match other_held {
        Some(at) => *at != (w.mailbox, w.uid),
        None => !w.peer_has,
    };
    new && other.mailbox(&w.mailbox).is_some_and(|m| w.uid < m.uidnext)
}

/// The UIDs the giving node's messages of `mailbox` take: the keeping
/// node's UID for a message it has there, else fresh ones above everything
/// the keeping node has claimed, in GUID order.
fn reset_mailbox(
    mailbox: MailboxGuid,
    keep: &Delta,
    give: &Delta,
    uids: &mut BTreeMap<(MailboxGuid, MessageGuid), Uid>,
) -> Reset {
    let (uidvalidity, uidnext) = keep
        .mailbox(&mailbox)
        .map_or((1, 1), |m| (m.uidvalidity, m.uidnext));
    let kept: BTreeMap<MessageGuid, Uid> = keep
        .messages
        .iter()
        .filter(|m| m.mailbox == mailbox)
        .map(|m| (m.guid, m.uid))
        .collect();
    let highest = keep
        .messages
        .iter()
        .filter(|m| m.mailbox == mailbox)
        .map(|m| m.uid)
        .chain(
            keep.tombstones
                .iter()
                .filter(|t| t.mailbox == mailbox)
                .map(|t| t.uid),
        )
        .max()
        .unwrap_or(0);
    let mut fresh = uidnext.max(highest.saturating_add(1));
    let mut given: Vec<MessageGuid> = give
        .messages
        .iter()
        .filter(|m| m.mailbox == mailbox)
        .map(|m| m.guid)
        .collect();
    given.sort();
    given.dedup();
    for g in given {
        let uid = match kept.get(&g) {
            Some(u) => *u,
            None => {
                let u = fresh;
                fresh = fresh.saturating_add(1);
                u
            }
        };
        uids.insert((mailbox, g), uid);
    }
    Reset {
        uidvalidity,
        uidnext: fresh,
    }
}

/// A user as replicas exchange it (the directory is merged per address,
/// the later change winning).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub address: String,
    /// The password hash (PHC string); `None`: no login.
    pub password: Option<String>,
    pub quota: u64,
    pub stamp: Stamp,
    pub removed: bool,
}

/// What applying a peer's delta did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    pub mailboxes_created: u64,
    pub mailboxes_renamed: u64,
    pub mailboxes_deleted: u64,
    pub messages_added: u64,
    pub messages_moved: u64,
    pub messages_renumbered: u64,
    pub flags_changed: u64,
    pub messages_expunged: u64,
    pub subscriptions_changed: u64,
    /// Changes left for the next sync (a UID taken meanwhile, content
    /// missing): not an error, the next session retries them.
    pub deferred: u64,
    /// Mailboxes whose UIDVALIDITY gave way to the peer's (a rebuilt
    /// index on one side).
    pub uidvalidity_resets: u64,
    /// The modseqs the apply gave its changes, if it changed anything and
    /// they form one contiguous range (nothing else was logged between
    /// its chunks; `None` otherwise, so the peer does not take a change
    /// made here meanwhile for its own coming back).
    pub applied_modseqs: Option<(ModSeq, ModSeq)>,
    /// The apply did something the peer cannot work out from the two
    /// deltas (a fresh UID for a UID taken meanwhile, something left for
    /// later): its changes must travel back to the peer.
    pub divergent: bool,
}

/// How far the apply of a big delta has come: `applied` of `total`
/// messages considered, after a chunk was committed (the user's index lock
/// is free at that moment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyProgress {
    pub applied: usize,
    pub total: usize,
}

impl ApplyReport {
    /// Add the report of a later apply in the same sync: counts add up;
    /// what was left for later, whether the nodes still disagree and the
    /// modseqs are the later apply's.
    pub fn absorb(&mut self, later: &ApplyReport) {
        self.mailboxes_created += later.mailboxes_created;
        self.mailboxes_renamed += later.mailboxes_renamed;
        self.mailboxes_deleted += later.mailboxes_deleted;
        self.messages_added += later.messages_added;
        self.messages_moved += later.messages_moved;
        self.messages_renumbered += later.messages_renumbered;
        self.flags_changed += later.flags_changed;
        self.messages_expunged += later.messages_expunged;
        self.subscriptions_changed += later.subscriptions_changed;
        self.uidvalidity_resets += later.uidvalidity_resets;
        self.deferred = later.deferred;
        self.divergent = later.divergent;
        self.applied_modseqs = later.applied_modseqs;
    }

    /// Whether anything changed.
    pub fn changed(&self) -> bool {
        self.mailboxes_created
            + self.mailboxes_renamed
            + self.mailboxes_deleted
            + self.messages_added
            + self.messages_moved
            + self.messages_renumbered
            + self.flags_changed
            + self.messages_expunged
            + self.subscriptions_changed
            > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_round_trips_and_records_changes() {
        let mut c = FlagClock::default();
        c.record_change(
            (Flags::SEEN, &["$Junk".to_string()]),
            (Flags::FLAGGED, &["$Junk".to_string(), "a=b@c".to_string()]),
            7 << 16,
        );
        let text = c.to_string();
        assert_eq!(FlagClock::parse(&text), c);
        assert_eq!(c.0.get("\\Seen"), Some(&(false, 7 << 16)));
        assert_eq!(c.0.get("\\Flagged"), Some(&(true, 7 << 16)));
        assert_eq!(c.0.get("a=b@c"), Some(&(true, 7 << 16)));
        assert_eq!(c.0.get("$Junk"), None);
    }

    #[test]
    fn later_change_wins_per_flag_and_merge_commutes() {
        // Base: nothing set. A set \Seen at t=5, B set \Flagged at t=6 and
        // cleared $x (set at delivery) at t=7.
        let mut ca = FlagClock::default();
        ca.record_change(
            (Flags::empty(), &["$x".into()]),
            (Flags::SEEN, &["$x".into()]),
            5 << 16,
        );
        let mut cb = FlagClock::default();
        cb.record_change(
            (Flags::empty(), &["$x".into()]),
            (Flags::FLAGGED, &[]),
            7 << 16,
        );
        let a_kw = vec!["$x".to_string()];
        let a = || FlagsSide {
            flags: Flags::SEEN,
            keywords: &a_kw,
            clock: &ca,
        };
        let b = || FlagsSide {
            flags: Flags::FLAGGED,
            keywords: &[],
            clock: &cb,
        };
        let ab = merge_flags(a(), b());
        let ba = merge_flags(b(), a());
        assert_eq!(ab, ba);
        assert_eq!(ab.0, Flags::SEEN | Flags::FLAGGED);
        assert!(ab.1.is_empty(), "$x was cleared later than it was set");
    }

    fn msg(mailbox: u8, uid: Uid, guid: u8, placed: Stamp) -> MessageState {
        MessageState {
            mailbox: MailboxGuid([mailbox; 16]),
            uid,
            guid: MessageGuid([guid; 16]),
            content: [0; 32],
            flags: 0,
            keywords: vec![],
            clock: String::new(),
            placed,
            internal_date: 0,
            size: 1,
            peer_has: false,
        }
    }

    fn mailbox(guid: u8, uidnext: Uid) -> MailboxState {
        MailboxState {
            guid: MailboxGuid([guid; 16]),
            name: "INBOX".into(),
            name_stamp: 0,
            uidvalidity: 1,
            uidnext,
            special_use: None,
            created_apart: false,
        }
    }

    #[test]
    fn colliding_uids_get_fresh_ones_above_both_uidnexts() {
        let a = Delta {
            mailboxes: vec![mailbox(1, 12)],
            messages: vec![msg(1, 10, 0xa1, 1), msg(1, 11, 0xa2, 2)],
            ..Delta::default()
        };
        let b = Delta {
            mailboxes: vec![mailbox(1, 11)],
            messages: vec![msg(1, 10, 0xb1, 3)],
            ..Delta::default()
        };
        let r = renumbering(&a, &b);
        assert_eq!(r, renumbering(&b, &a), "symmetric");
        let mb = MailboxGuid([1; 16]);
        assert_eq!(r.uids.len(), 2);
        assert_eq!(r.uids[&(mb, MessageGuid([0xa1; 16]))], 12);
        assert_eq!(r.uids[&(mb, MessageGuid([0xb1; 16]))], 13);
    }

    #[test]
    fn a_retired_uid_is_never_given_to_another_message() {
        // B expunged g1 at UID 5 while A delivered g2 at UID 5.
        let a = Delta {
            mailboxes: vec![mailbox(1, 6)],
            messages: vec![msg(1, 5, 2, 1)],
            ..Delta::default()
        };
        let b = Delta {
            mailboxes: vec![mailbox(1, 6)],
            tombstones: vec![TombstoneState {
                mailbox: MailboxGuid([1; 16]),
                uid: 5,
                guid: MessageGuid([1; 16]),
                stamp: 9,
            }],
            ..Delta::default()
        };
        let r = renumbering(&a, &b);
        assert_eq!(r.uids.len(), 1);
        assert_eq!(r.uids[&(MailboxGuid([1; 16]), MessageGuid([2; 16]))], 6);
    }

    #[test]
    fn a_rebuilt_mailbox_takes_the_older_uidvalidity_and_its_uids() {
        // a kept UIDVALIDITY 5 (g1 at 1, g2 at 2); b rebuilt its index
        // (UIDVALIDITY 9: g2 at 7, g3 at 8).
        let mut ma = mailbox(1, 3);
        ma.uidvalidity = 5;
        let mut mb = mailbox(1, 9);
        mb.uidvalidity = 9;
        let a = Delta {
            mailboxes: vec![ma],
            messages: vec![msg(1, 1, 1, 1), msg(1, 2, 2, 1)],
            ..Delta::default()
        };
        let b = Delta {
            mailboxes: vec![mb],
            messages: vec![msg(1, 7, 2, 1), msg(1, 8, 3, 1)],
            ..Delta::default()
        };
        let r = renumbering(&a, &b);
        assert_eq!(r, renumbering(&b, &a), "symmetric");
        let m = MailboxGuid([1; 16]);
        assert_eq!(
            r.resets[&m],
            Reset {
                uidvalidity: 5,
                uidnext: 4
            }
        );
        assert_eq!(r.uids[&(m, MessageGuid([2; 16]))], 2, "a's UID stands");
        assert_eq!(r.uids[&(m, MessageGuid([3; 16]))], 3, "fresh above a's");
        assert!(!r.uids.contains_key(&(m, MessageGuid([1; 16]))));
    }

    #[test]
    fn the_same_message_in_both_deltas_is_no_collision() {
        let a = Delta {
            mailboxes: vec![mailbox(1, 6)],
            messages: vec![msg(1, 5, 2, 1)],
            ..Delta::default()
        };
        let r = renumbering(&a, &a.clone());
        assert!(r.uids.is_empty());
    }

    #[test]
    fn a_message_new_to_a_node_never_lands_below_its_uidnext() {
        // A filed g7 at UID 5 of mailbox 1 while B, whose UIDNEXT there is
        // already 8 (UIDs it gave and its clients saw), never held it.
        let a = Delta {
            mailboxes: vec![mailbox(1, 6)],
            messages: vec![msg(1, 5, 7, 1)],
            ..Delta::default()
        };
        let b = Delta {
            mailboxes: vec![mailbox(1, 8)],
            ..Delta::default()
        };
        let r = renumbering(&a, &b);
        assert_eq!(r, renumbering(&b, &a), "symmetric");
        assert_eq!(r.uids[&(MailboxGuid([1; 16]), MessageGuid([7; 16]))], 8);
        // The same, when A knows B holds it there (a flag change of an old
        // message): nothing moves.
        let mut known = a.clone();
        known.messages[0].peer_has = true;
        assert!(renumbering(&known, &b).uids.is_empty());
        assert!(renumbering(&b, &known).uids.is_empty());
    }

    #[test]
    fn the_same_message_filed_on_both_nodes_takes_a_uid_above_both() {
        // Filters on both nodes moved g9 into mailbox 1: A at UID 38, B at
        // 37, later. B's placement wins, but A's clients saw 38 already: 37
        // would be a new UID below it, so g9 takes 39 on both.
        let a = Delta {
            mailboxes: vec![mailbox(1, 39)],
            messages: vec![msg(1, 38, 9, 1)],
            ..Delta::default()
        };
        let b = Delta {
            mailboxes: vec![mailbox(1, 38)],
            messages: vec![msg(1, 37, 9, 2)],
            ..Delta::default()
        };
        let r = renumbering(&a, &b);
        assert_eq!(r, renumbering(&b, &a), "symmetric");
        assert_eq!(r.uids[&(MailboxGuid([1; 16]), MessageGuid([9; 16]))], 39);
    }

    #[test]
    fn one_name_made_on_both_nodes_apart_merges_into_the_lower_guid() {
        let spam = |guid: u8, uidnext: Uid| MailboxState {
            name: "Spam".into(),
            created_apart: true,
            ..mailbox(guid, uidnext)
        };
        // A made Spam (GUID 3, messages at 1 and 2), B made Spam (GUID 2,
        // a message at 1).
        let a = Delta {
            mailboxes: vec![spam(3, 3)],
            messages: vec![msg(3, 1, 0x31, 1), msg(3, 2, 0x32, 2)],
            ..Delta::default()
        };
        let b = Delta {
            mailboxes: vec![spam(2, 2)],
            messages: vec![msg(2, 1, 0x21, 3)],
            ..Delta::default()
        };
        let r = renumbering(&a, &b);
        assert_eq!(r, renumbering(&b, &a), "symmetric");
        let kept = MailboxGuid([2; 16]);
        assert_eq!(r.merged[&MailboxGuid([3; 16])].into, kept);
        assert_eq!(r.uids[&(kept, MessageGuid([0x31; 16]))], 2);
        assert_eq!(r.uids[&(kept, MessageGuid([0x32; 16]))], 3);
        assert!(
            !r.uids.contains_key(&(kept, MessageGuid([0x21; 16]))),
            "kept UIDs stand"
        );
        assert_eq!(r.merged[&MailboxGuid([3; 16])].uidnext, 4);
        // One of them renamed, or known to the other node: no merge.
        let mut renamed = a.clone();
        renamed.mailboxes[0].created_apart = false;
        assert!(merges(&renamed, &b).is_empty());
        let mut knew = b.clone();
        knew.gone.push(MailboxGone {
            guid: MailboxGuid([3; 16]),
            name: "Spam".into(),
            stamp: 1,
        });
        assert!(merges(&a, &knew).is_empty());
    }
}
