//! A selected mailbox as one session sees it.
//!
//! Message sequence numbers are positions in `messages` (RFC 3501 §2.3.1.2).
//! Other sessions, LMTP, other programs (through the scan) and later the
//! replicator change the mailbox at any time; their changes reach the view
//! through the account's change feed and are announced only where RFC 3501
//! §7.4.1 and §5.5 allow: EXISTS and FETCH FLAGS after any command, EXPUNGE
//! never during FETCH, STORE or SEARCH (the message keeps its number until
//! an EXPUNGE may be sent).

mod messages;
mod recent;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use cove_store::{
    Account, Change, ChangeKind, ContentId, Flags, MailboxInfo, MessageMeta, ModSeq, Uid,
};
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use tokio::sync::broadcast;

use super::condstore::{Enabled, Expunges};
use super::outcome::{Code, untagged_ok};
use super::response;
use super::revision::Revision;

pub use messages::{Messages, Snapshot, SnapshotKey, Snapshots};
pub use recent::Recent;

/// The system flags every mailbox permits (RFC 3501 §2.3.2).
pub const SYSTEM_FLAGS: &str = "\\Answered \\Flagged \\Deleted \\Seen \\Draft";

/// What a view keeps of one message: what FETCH of flags, dates and sizes,
/// SEARCH and the cached views (by content id) need, with no heap
/// allocation unless the message has keywords. 80 bytes (a `MessageMeta`,
/// with its file name and GUID, takes about 190), held once per mailbox in
/// the snapshot its sessions share ([`Messages`]), and thousands of
/// sessions sit in IDLE: the file name is looked up in the index when a
/// message's bytes are read, as it may have changed since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewMessage {
    pub uid: Uid,
    pub flags: Flags,
    pub modseq: ModSeq,
    /// Seconds since the epoch.
    pub internal_date: i64,
    pub size: u64,
    pub content_id: ContentId,
    pub keywords: Box<[String]>,
}

impl From<MessageMeta> for ViewMessage {
    fn from(m: MessageMeta) -> ViewMessage {
        ViewMessage {
            uid: m.uid,
            flags: m.flags,
            modseq: m.modseq,
            internal_date: m.internal_date,
            size: m.size,
            content_id: m.content_id,
            keywords: m.keywords.into_boxed_slice(),
        }
    }
}

/// What a view needs read from the index.
pub enum PendingRead {
    Nothing,
    /// Only what the feed brought.
    FromFeed,
    Since(ModSeq),
    All,
}

pub struct View {
    pub mailbox: MailboxInfo,
    pub read_only: bool,
    pub messages: Messages,
    pub recent: Recent,
    feed: broadcast::Receiver<Change>,
    /// Expunged elsewhere, not yet announced.
    expunged: BTreeSet<Uid>,
    /// The feed said this mailbox changed since the last refresh.
    dirty: bool,
    /// Rows the feed brought (new messages, flag changes), not applied yet.
    arrived: Vec<ViewMessage>,
    /// The feed lagged: reload everything.
    lagged: bool,
    /// The feed said it skipped this many changes; whether they were all
    /// this session's own is told by the next one (see [`View::own_run`]).
    skipped: Option<u64>,
    /// The modseqs (first, last) of this session's last flag change
    /// (STORE, FETCH's \Seen): a run of the account's changes with
    /// nothing else in it, which the view holds already
    /// ([`View::update_own_many`]), and which reaches the feed in one
    /// piece ([`Account::subscribe`]). The feed's copies are skipped, and a
    /// lag that dropped only them costs no reload: a STORE on more
    /// messages than the feed holds (1,024) would otherwise reload the
    /// whole mailbox after it.
    own_run: Option<(ModSeq, ModSeq)>,
    /// Highest modseq applied to the view.
    modseq: ModSeq,
    /// Every change of the account up to this modseq is in the view or was
    /// seen on the feed. The account has one modseq counter and one change
    /// per modseq, and a change is announced only after it was committed,
    /// but two commits may reach the feed out of order (each announces
    /// after its own flush). A change above `feed_mark + 1` means one before
    /// it is committed and not seen yet: the view reads the index instead of
    /// showing the newer row first (RFC 3501 §2.3.1.1: a client must never
    /// learn of a UID below one it has already seen).
    feed_mark: ModSeq,
    /// The keywords the session was told of in a FLAGS response (RFC 3501
    /// §7.2.6), sorted: a FETCH may show no other, so a new one is
    /// announced first ([`View::announce_keywords`]).
    announced: Vec<String>,
    /// RFC 5182: the UIDs the last SEARCH with SAVE found (`$`).
    pub saved: Vec<Uid>,
    /// Keeps the account's Maildir watched while the mailbox is selected.
    _watch: cove_store::WatchGuard,
}

impl View {
    /// Open a view (blocking: reads the index).
    pub fn open(
        account: &Account,
        snapshots: &Snapshots,
        mailbox: MailboxInfo,
        read_only: bool,
        watch: cove_store::WatchGuard,
    ) -> cove_store::Result<View> {
        View::open_on(
            account,
            snapshots,
            account.subscribe(),
            mailbox,
            read_only,
            watch,
        )
    }

    /// [`open`](View::open) on a feed the caller subscribed to.
    fn open_on(
        account: &Account,
        snapshots: &Snapshots,
        feed: broadcast::Receiver<Change>,
        mailbox: MailboxInfo,
        read_only: bool,
        watch: cove_store::WatchGuard,
    ) -> cove_store::Result<View> {
        // Subscribed first: nothing that happens after the read is missed.
        // The mark is read before the rows, so the rows hold at least it.
        let feed_mark = account.current_modseq()?;
        let messages = shared_messages(account, snapshots, &mailbox, feed_mark)?;
        let modseq = messages.max_modseq().max(mailbox.highest_modseq);
        // EXAMINE shows \Recent without taking it (RFC 3501 §6.3.2).
        let first_recent = if read_only {
            mailbox.first_recent
        } else {
            account.claim_recent(&mailbox.guid)?
        };
        let recent = Recent::range(
            first_recent,
            messages.last().map_or(0, |m| m.uid),
            messages.len() - messages.count_below(first_recent),
        );
        let mut announced: Vec<String> = Vec::new();
        for m in &messages {
            for k in m.keywords.iter() {
                if !announced.iter().any(|a| a.eq_ignore_ascii_case(k)) {
                    announced.push(k.clone());
                }
            }
        }
        announced.sort_unstable();
        Ok(View {
            mailbox,
            read_only,
            messages,
            recent,
            feed,
            expunged: BTreeSet::new(),
            dirty: false,
            arrived: Vec::new(),
            lagged: false,
            skipped: None,
            own_run: None,
            modseq,
            feed_mark,
            announced,
            saved: Vec::new(),
            _watch: watch,
        })
    }

    /// RFC 3501 §7.2.6 FLAGS and §7.1 PERMANENTFLAGS: the flags of this
    /// mailbox, keywords included, and which of them may be stored (none
    /// in a read-only mailbox; any keyword, `\*`, otherwise).
    pub fn write_flags(&self, out: &mut Vec<u8>) {
        let extra: String = self.announced.iter().map(|k| format!(" {k}")).collect();
        out.extend_from_slice(format!("* FLAGS ({SYSTEM_FLAGS}{extra})\r\n").as_bytes());
        if self.read_only {
            untagged_ok(
                Code::PermanentFlags(String::new()),
                "Read-only mailbox",
                out,
            );
        } else {
            untagged_ok(
                Code::PermanentFlags(format!("{SYSTEM_FLAGS}{extra} \\*")),
                "Flags permitted",
                out,
            );
        }
    }

    /// [`View::announce_keywords`] for the keywords of these messages.
    fn announce_keywords_of(&mut self, uids: &[Uid], out: &mut Vec<u8>) {
        let keywords: Vec<String> = uids
            .iter()
            .filter_map(|u| self.seq_of(*u))
            .flat_map(|seq| self.messages[seq - 1].keywords.to_vec())
            .collect();
        self.announce_keywords(keywords.iter().map(String::as_str), out);
    }

    /// Before a FETCH shows `keywords`: a FLAGS response for any the
    /// session has not been told of yet (RFC 3501 §7.2.6).
    pub fn announce_keywords<'k>(
        &mut self,
        keywords: impl IntoIterator<Item = &'k str>,
        out: &mut Vec<u8>,
    ) {
        let mut new = false;
        for k in keywords {
            if !self.announced.iter().any(|a| a.eq_ignore_ascii_case(k)) {
                self.announced.push(k.to_string());
                new = true;
            }
        }
        if new {
            self.announced.sort_unstable();
            self.write_flags(out);
        }
    }

    pub fn exists(&self) -> usize {
        self.messages.len()
    }

    /// RFC 7162 §3.1.2.1 HIGHESTMODSEQ: no message nor expunge the view
    /// knows of has a higher modseq (at least 1: the grammar's
    /// mod-sequence-value is positive).
    pub fn highest_modseq(&self) -> ModSeq {
        self.messages
            .max_modseq()
            .max(self.modseq)
            .max(self.mailbox.highest_modseq)
            .max(1)
    }

    /// Messages (indices into `messages`) a sequence set names, ascending.
    /// With `uid`, numbers are UIDs and ones that do not exist are ignored
    /// (RFC 3501 §6.4.8); `*` is the last message.
    pub fn resolve(&self, set: &SequenceSet, uid: bool) -> Vec<usize> {
        let n = self.messages.len();
        if n == 0 {
            return Vec::new();
        }
        let last_uid = self.messages[n - 1].uid;
        let value = |s: &SeqOrUid| -> u32 {
            match s {
                SeqOrUid::Value(v) => v.get(),
                SeqOrUid::Asterisk if uid => last_uid,
                SeqOrUid::Asterisk => n as u32,
            }
        };
        // Ranges of indices (start, end), merged: `1:*` of a million
        // messages is one range, not a million set entries.
        let mut ranges: Vec<(usize, usize)> = Vec::with_capacity(set.0.as_ref().len());
        for seq in set.0.as_ref() {
            let (a, b) = match seq {
                Sequence::Single(s) => (value(s), value(s)),
                Sequence::Range(x, y) => (value(x), value(y)),
            };
            let (lo, hi) = (a.min(b), a.max(b));
            if uid {
                let start = self.messages.count_below(lo);
                let end = self.messages.count_below(hi.saturating_add(1));
                let end = if hi == Uid::MAX { n } else { end };
                ranges.push((start, end));
            } else {
                let lo = (lo as usize).max(1);
                let hi = (hi as usize).min(n);
                if lo <= hi {
                    ranges.push((lo - 1, hi));
                }
            }
        }
        ranges.sort_unstable();
        let mut out: Vec<usize> = Vec::new();
        let mut done = 0;
        for (start, end) in ranges {
            let start = start.max(done);
            if start < end {
                out.extend(start..end);
                done = end;
            }
        }
        out
    }

    /// The UIDs of the messages a set names, ascending.
    pub fn uids(&self, set: &SequenceSet, uid: bool) -> Vec<Uid> {
        self.resolve(set, uid)
            .into_iter()
            .map(|i| self.messages[i].uid)
            .collect()
    }

    /// Whether every number of a message-sequence set is a valid sequence
    /// number (RFC 3501 §9: a number above EXISTS is an error; `*` is fine).
    pub fn seq_set_in_range(&self, set: &SequenceSet) -> bool {
        let n = self.messages.len() as u32;
        set.0.as_ref().iter().all(|s| {
            let ok = |v: &SeqOrUid| match v {
                SeqOrUid::Value(v) => v.get() <= n,
                SeqOrUid::Asterisk => n > 0,
            };
            match s {
                Sequence::Single(a) => ok(a),
                Sequence::Range(a, b) => ok(a) && ok(b),
            }
        })
    }

    /// 1-based sequence number of a UID.
    pub fn seq_of(&self, uid: Uid) -> Option<usize> {
        self.messages.position(uid).map(|i| i + 1)
    }

    /// The highest UID among rows the feed brought and not yet applied.
    pub fn newest_arrived(&self) -> Option<Uid> {
        self.arrived.iter().map(|m| m.uid).max()
    }

    /// The highest UID the view holds (0 when empty).
    pub fn last_uid(&self) -> Uid {
        self.messages.last().map(|m| m.uid).unwrap_or(0)
    }

    pub fn uid_next(&self) -> Uid {
        self.messages
            .last()
            .map(|m| m.uid + 1)
            .unwrap_or(1)
            .max(self.mailbox.uidnext)
    }

    /// Take what the feed has for this mailbox, without waiting.
    pub fn drain_feed(&mut self) {
        loop {
            match self.feed.try_recv() {
                Ok(c) => {
                    if let Some(n) = self.skipped.take()
                        && !self.skipped_only_own(n, &c)
                    {
                        self.lagged = true;
                    }
                    self.note(c)
                }
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    if self.own_run.is_some() && !self.lagged && self.skipped.is_none() {
                        self.skipped = Some(n);
                    } else {
                        self.lagged = true;
                    }
                }
                Err(_) => break,
            }
        }
        // Skipped, and nothing after: the skipped ones are unknown.
        if self.skipped.take().is_some() {
            self.lagged = true;
        }
    }

    /// The feed skipped `n` changes and `next` is the first it kept: were
    /// the skipped ones the first `n` of this session's own run? They
    /// were if `next` is the run's change number `n + 1` (the run reaches
    /// the feed in one piece and in order, so the `n` before it in the
    /// feed are the run's first `n`). Then the view has them already, and
    /// its mark moves over them (if all before the run were seen).
    fn skipped_only_own(&mut self, n: u64, next: &Change) -> bool {
        let Some((first, last)) = self.own_run else {
            return false;
        };
        if next.mailbox != self.mailbox.guid
            || next.modseq != first.saturating_add(n)
            || next.modseq > last
        {
            return false;
        }
        if self.feed_mark + 1 >= first {
            self.feed_mark = self.feed_mark.max(next.modseq - 1);
        }
        true
    }

    /// Wait for the next change of this mailbox (IDLE).
    pub async fn next_change(&mut self) -> bool {
        loop {
            match self.feed.recv().await {
                Ok(c) => {
                    let mine = c.mailbox == self.mailbox.guid;
                    self.note(c);
                    if mine {
                        return true;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.lagged = true;
                    return true;
                }
                Err(broadcast::error::RecvError::Closed) => return false,
            }
        }
    }

    fn note(&mut self, c: Change) {
        if c.modseq > self.feed_mark + 1 {
            // Something committed before `c` has not been seen: read the
            // index, which holds everything up to `c`, before showing `c`.
            self.dirty = true;
        }
        self.feed_mark = self.feed_mark.max(c.modseq);
        if c.mailbox != self.mailbox.guid {
            return;
        }
        // This session's own change: the view holds it (or a newer state).
        if self
            .own_run
            .is_some_and(|(first, last)| (first..=last).contains(&c.modseq))
        {
            return;
        }
        match c.kind {
            ChangeKind::Expunged { uid, .. } => {
                if self.seq_of(uid).is_some() {
                    self.expunged.insert(uid);
                }
            }
            // The event carries the row: no need to read the index (with
            // thousands of sessions in IDLE on one mailbox, that read was
            // what delayed their EXISTS).
            ChangeKind::MessageAdded { .. } if c.message.is_some() => {
                if let Some(m) = c.message {
                    self.arrived.push(ViewMessage::from((*m).clone()));
                }
            }
            ChangeKind::FlagsChanged {
                uid,
                flags,
                keywords,
            } => match self.seq_of(uid) {
                Some(seq) => {
                    let mut m = self.messages[seq - 1].clone();
                    m.flags = flags;
                    m.keywords = keywords.into_boxed_slice();
                    m.modseq = c.modseq;
                    self.arrived.push(m);
                }
                None => self.dirty = true,
            },
            _ => self.dirty = true,
        }
    }

    /// Forget messages this session expunged itself (already announced).
    pub fn remove_own(&mut self, uids: &[Uid]) -> Vec<usize> {
        let mut seqs = Vec::new();
        for uid in uids {
            if let Some(seq) = self.seq_of(*uid) {
                self.messages.remove(seq - 1);
                self.recent.remove(*uid);
                self.expunged.remove(uid);
                seqs.push(seq);
            }
        }
        seqs
    }

    /// What must be read from the index to bring the view up to date
    /// (drains the feed first).
    pub fn pending_read(&mut self) -> PendingRead {
        self.drain_feed();
        if std::mem::take(&mut self.lagged) {
            self.dirty = false;
            PendingRead::All
        } else if std::mem::take(&mut self.dirty) {
            PendingRead::Since(self.modseq)
        } else if !self.arrived.is_empty() {
            PendingRead::FromFeed
        } else {
            PendingRead::Nothing
        }
    }

    /// Apply what [`pending_read`](View::pending_read) asked for, and write
    /// the untagged responses the session may send now.
    /// `first_recent`: where this session's claim of \Recent messages
    /// began (a read-only view passes the mailbox's, without claiming).
    pub fn apply(
        &mut self,
        read: &PendingRead,
        rows: Vec<MessageMeta>,
        first_recent: Uid,
        allow_expunge: bool,
        enabled: Enabled,
        out: &mut Vec<u8>,
    ) {
        let mut changed_flags: BTreeSet<Uid> = BTreeSet::new();
        let mut added: Vec<Uid> = Vec::new();
        if let PendingRead::All = read {
            let present: HashSet<Uid> = rows.iter().map(|m| m.uid).collect();
            for m in &self.messages {
                if !present.contains(&m.uid) {
                    self.expunged.insert(m.uid);
                }
            }
        }
        // What the feed brought first; a read from the index (if any) after,
        // being at least as new.
        for m in std::mem::take(&mut self.arrived) {
            self.apply_row(m, false, &mut changed_flags, &mut added);
        }
        for m in rows {
            self.apply_row(ViewMessage::from(m), true, &mut changed_flags, &mut added);
        }
        if allow_expunge {
            let gone: Vec<Uid> = std::mem::take(&mut self.expunged).into_iter().collect();
            let mut expunges = Expunges::new(enabled);
            for uid in gone {
                if let Some(seq) = self.seq_of(uid) {
                    self.messages.remove(seq - 1);
                    self.recent.remove(uid);
                    expunges.gone(seq, uid, out);
                }
            }
            expunges.finish(out);
        }
        if !added.is_empty() {
            // New messages may bring keywords: FLAGS first (§7.2.6).
            self.announce_keywords_of(&added, out);
            out.extend_from_slice(format!("* {} EXISTS\r\n", self.messages.len()).as_bytes());
            // RFC 9051 §2.3.2: IMAP4rev2 has no \Recent (`revision.rs`).
            if enabled.revision == Revision::Rev1 {
                for u in added.iter().filter(|u| **u >= first_recent) {
                    self.recent.insert(*u);
                }
                out.extend_from_slice(format!("* {} RECENT\r\n", self.recent.len()).as_bytes());
            }
        }
        // A message already expunged elsewhere (its EXPUNGE is only waiting
        // for a command that allows it) gets no more flag news.
        let changed: Vec<Uid> = changed_flags
            .into_iter()
            .filter(|u| !self.expunged.contains(u))
            .collect();
        self.announce_keywords_of(&changed, out);
        for uid in changed {
            if let Some(seq) = self.seq_of(uid) {
                let m = &self.messages[seq - 1];
                let flags = response::flag_list(m.flags, &m.keywords, self.recent.contains(&uid));
                let modseq = response::modseq_item(enabled, m.modseq);
                out.extend_from_slice(
                    format!("* {seq} FETCH (UID {uid} FLAGS {flags}{modseq})\r\n").as_bytes(),
                );
            }
        }
    }

    /// Merge one row read from the index into the view.
    ///
    /// Only rows read from the index raise the view's modseq: a row from the
    /// feed may arrive before an older change whose event had no row.
    fn apply_row(
        &mut self,
        m: ViewMessage,
        from_index: bool,
        changed_flags: &mut BTreeSet<Uid>,
        added: &mut Vec<Uid>,
    ) {
        if from_index {
            self.modseq = self.modseq.max(m.modseq);
        }
        match self.messages.position(m.uid) {
            Some(i) => {
                let old = &self.messages[i];
                if m.modseq < old.modseq {
                    return; // an older state than the view already has
                }
                if old.flags != m.flags || old.keywords != m.keywords {
                    changed_flags.insert(m.uid);
                }
                self.messages.set(i, m);
            }
            // New UIDs are always above the ones the view has (UIDs only
            // grow), so this is an append.
            None => {
                added.push(m.uid);
                self.messages.insert(self.messages.count_below(m.uid), m);
            }
        }
    }

    /// Record flags this session set itself (the FETCH it sends is its
    /// own): (uid, flags, keywords, modseq) each, and the modseqs (first,
    /// last) the change was given ([`cove_store::StoreResult::committed`]),
    /// whose copies on the feed the view then skips.
    pub fn update_own_many(
        &mut self,
        updates: impl IntoIterator<Item = (Uid, cove_store::Flags, Vec<String>, ModSeq)>,
        committed: Option<(ModSeq, ModSeq)>,
    ) {
        let mut changed: Vec<(usize, ViewMessage)> = Vec::new();
        for (uid, flags, keywords, modseq) in updates {
            let Some(i) = self.messages.position(uid) else {
                continue;
            };
            let old = &self.messages[i];
            if old.flags == flags && *old.keywords == keywords[..] && old.modseq == modseq {
                continue;
            }
            let mut m = old.clone();
            m.flags = flags;
            m.keywords = keywords.into_boxed_slice();
            m.modseq = modseq;
            changed.push((i, m));
        }
        self.messages.set_many(changed);
        if committed.is_some() {
            self.own_run = committed;
        }
        // The view's modseq is not raised here: another session's change
        // with a lower modseq may still be on its way through the feed.
    }
}

/// More changes than this since the shared snapshot: read the mailbox
/// afresh (and share that).
fn delta_limit(snapshot_len: usize) -> usize {
    1024 + snapshot_len / 8
}

/// A new view's messages: the mailbox's shared snapshot with what changed
/// since it was read, or a fresh snapshot (shared from now on) when there
/// is none, it is too old, or the index cannot say what changed.
/// `feed_mark`: the account's modseq, read before anything else.
fn shared_messages(
    account: &Account,
    snapshots: &Snapshots,
    mailbox: &MailboxInfo,
    feed_mark: ModSeq,
) -> cove_store::Result<Messages> {
    let key = SnapshotKey {
        email: account.email().to_string(),
        mailbox: mailbox.guid,
        uidvalidity: mailbox.uidvalidity,
    };
    if let Some(snapshot) = snapshots.get(&key)
        && let Some(delta) =
            account.mailbox_changes_since(&mailbox.guid, mailbox.uidvalidity, snapshot.modseq())?
        && delta.changed.len() + delta.expunged.len() <= delta_limit(snapshot.len())
    {
        let mut messages = Messages::on(snapshot);
        for uid in delta.expunged {
            if let Some(i) = messages.position(uid) {
                messages.remove(i);
            }
        }
        for row in delta.changed {
            let row = ViewMessage::from(row);
            match messages.position(row.uid) {
                Some(i) if messages[i].modseq <= row.modseq => messages.set(i, row),
                Some(_) => {}
                None => messages.insert(messages.count_below(row.uid), row),
            }
        }
        return Ok(messages);
    }
    // Held for as long as the mailbox is selected: compact, and no spare
    // capacity. Every change up to `feed_mark` is in the rows, which are
    // read after it.
    let rows = account.messages_as(&mailbox.guid, ViewMessage::from)?;
    let snapshot = Arc::new(Snapshot::new(rows, feed_mark));
    snapshots.put(key, &snapshot);
    Ok(Messages::on(snapshot))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cove_store::{Address, NewMessage};

    fn deliver(account: &Account, store: &cove_store::Store, subject: &str) -> MessageMeta {
        let blob = store
            .blobs()
            .put(format!("Subject: {subject}\r\n\r\nbody\r\n").as_bytes())
            .expect("blob");
        let msg = NewMessage {
            flags: Flags::empty(),
            keywords: Vec::new(),
            internal_date: None,
            quota: None,
        };
        let done = account.deliver("INBOX", &blob, &msg).expect("deliver");
        let rows = account.messages(&done.mailbox).expect("rows");
        rows.into_iter()
            .find(|m| m.uid == done.uid)
            .expect("the delivered row")
    }

    fn added(mailbox: cove_store::MailboxGuid, row: &MessageMeta) -> Change {
        Change {
            modseq: row.modseq,
            mailbox,
            kind: ChangeKind::MessageAdded {
                uid: row.uid,
                guid: row.guid,
            },
            message: Some(std::sync::Arc::new(row.clone())),
        }
    }

    /// Bring the view up to date the way a session does; the untagged
    /// responses it would send.
    fn refresh(view: &mut View, account: &Account) -> String {
        let read = view.pending_read();
        let rows = match &read {
            PendingRead::Since(modseq) => account
                .messages_since(&view.mailbox.guid, *modseq)
                .expect("since"),
            PendingRead::All => account.messages(&view.mailbox.guid).expect("all"),
            _ => Vec::new(),
        };
        let mut out = Vec::new();
        view.apply(
            &read,
            rows,
            0,
            true,
            super::super::condstore::Enabled::default(),
            &mut out,
        );
        String::from_utf8(out).expect("utf-8")
    }

    /// The view's messages as (uid, flags, modseq).
    fn shown(view: &View) -> Vec<(Uid, Flags, ModSeq)> {
        view.messages
            .iter()
            .map(|m| (m.uid, m.flags, m.modseq))
            .collect()
    }

    /// The index's rows of INBOX as (uid, flags, modseq).
    fn indexed(account: &Account, mailbox: &MailboxInfo) -> Vec<(Uid, Flags, ModSeq)> {
        account
            .messages(&mailbox.guid)
            .expect("rows")
            .iter()
            .map(|m| (m.uid, m.flags, m.modseq))
            .collect()
    }

    /// A new user `email` with `n` messages in INBOX.
    fn account_with(store: &cove_store::Store, email: &str, n: usize) -> Arc<Account> {
        let user = store
            .add_user(&Address::parse(email).expect("address"), None, 0)
            .expect("user");
        let account = store.account(&user).expect("account");
        for i in 0..n {
            deliver(&account, store, &format!("m{i}"));
        }
        account
    }

    fn open_view(account: &Arc<Account>, store: &cove_store::Store, snapshots: &Snapshots) -> View {
        let inbox = account.mailbox("INBOX").expect("inbox");
        let watch = store.watcher().watch(account);
        View::open(account, snapshots, inbox, false, watch).expect("view")
    }

    // Sessions that select the same mailbox hold one snapshot of it between
    // them (a million messages cost 80 MB once, not per session); a later
    // session starts from it and reads only what changed since, and sees
    // exactly what the index holds.
    #[test]
    fn views_of_a_mailbox_share_one_snapshot_and_read_only_what_changed_since() {
        let (_dir, store) = crate::test_store("t");
        let account = account_with(&store, "s@x.org", 6);
        let snapshots = Snapshots::default();
        let first = open_view(&account, &store, &snapshots);
        let inbox = first.mailbox.clone();
        let key = SnapshotKey {
            email: account.email().to_string(),
            mailbox: inbox.guid,
            uidvalidity: inbox.uidvalidity,
        };
        let snapshot = snapshots.get(&key).expect("a shared snapshot");
        assert!(first.messages.shares(&snapshot));
        assert_eq!(shown(&first), indexed(&account, &inbox));

        // Changed after the snapshot: flags, an expunge, a delivery.
        account
            .set_flags(&inbox.guid, 2, Flags::SEEN, &[])
            .expect("flags");
        account.expunge(&inbox.guid, &[4]).expect("expunge");
        deliver(&account, &store, "late");
        let second = open_view(&account, &store, &snapshots);
        assert!(second.messages.shares(&snapshot), "not shared");
        assert_eq!(snapshots.len(), 1);
        assert_eq!(shown(&second), indexed(&account, &inbox));
        assert_eq!(second.exists(), 6);
        assert_eq!(second.seq_of(5), Some(4));
        // The first view has not been told yet: unchanged.
        assert_eq!(first.exists(), 6);
        assert_eq!(first.seq_of(4), Some(4));

        // History pruned above the snapshot: the expunges since it are no
        // longer all known, so a new view reads the mailbox afresh.
        account.expunge(&inbox.guid, &[1]).expect("expunge");
        account
            .prune_history(
                &cove_store::replica::History {
                    keep_changes: 0,
                    keep_expunges_ms: 0,
                },
                u64::MAX >> 20,
            )
            .expect("prune");
        let third = open_view(&account, &store, &snapshots);
        assert!(!third.messages.shares(&snapshot));
        assert_eq!(shown(&third), indexed(&account, &inbox));
        assert_eq!(third.exists(), 5);
        drop((first, second));
        assert!(
            snapshots
                .get(&key)
                .is_some_and(|s| third.messages.shares(&s))
        );
    }

    /// The feed's copies of a flag change `result` made, in the order the
    /// store announces them.
    fn flag_changes(
        mailbox: cove_store::MailboxGuid,
        result: &cove_store::StoreResult,
    ) -> Vec<Change> {
        result
            .updated
            .iter()
            .map(|(uid, flags, keywords, modseq)| Change {
                modseq: *modseq,
                mailbox,
                kind: ChangeKind::FlagsChanged {
                    uid: *uid,
                    flags: *flags,
                    keywords: keywords.clone(),
                },
                message: None,
            })
            .collect()
    }

    // A session's own STORE on more messages than the feed holds makes the
    // feed skip changes; when all it skipped were that session's own (which
    // its view holds already), the view reads nothing (it used to reload
    // the whole mailbox after every big STORE). When something of anyone
    // else's was skipped with them, it reloads and shows it.
    #[test]
    fn a_feed_lag_over_own_changes_only_reads_nothing_and_any_other_reloads() {
        let (_dir, store) = crate::test_store("t");
        let account = account_with(&store, "o@x.org", 40);
        let inbox = account.mailbox("INBOX").expect("inbox");
        let uids: Vec<Uid> = (1..=40).collect();
        let (feed, rx) = broadcast::channel(16);
        let watch = store.watcher().watch(&account);
        let snapshots = Snapshots::default();
        let mut view =
            View::open_on(&account, &snapshots, rx, inbox.clone(), false, watch).expect("view");

        // Own STORE on 40: the feed (16) skips 24 of them.
        let add = cove_store::FlagOp::Add(Flags::SEEN, Vec::new());
        let result = account
            .store_flags(&inbox.guid, &uids, add, None)
            .expect("store");
        let (first, last) = result.committed.expect("committed");
        assert_eq!(last - first + 1, 40);
        for c in flag_changes(inbox.guid, &result) {
            let _ = feed.send(c);
        }
        view.update_own_many(result.updated, result.committed);
        assert!(matches!(view.pending_read(), PendingRead::Nothing));
        assert_eq!(shown(&view), indexed(&account, &inbox));

        // Another session flags message 3 and announces it first; then this
        // session's next STORE (on 4..40) runs over the feed: 3's change is
        // skipped with the first of them and must not be lost.
        let other = account
            .store_flags(
                &inbox.guid,
                &[3],
                cove_store::FlagOp::Add(Flags::FLAGGED, Vec::new()),
                None,
            )
            .expect("other store");
        let remove = cove_store::FlagOp::Remove(Flags::SEEN, Vec::new());
        let mine = account
            .store_flags(&inbox.guid, &uids[3..], remove, None)
            .expect("store");
        for c in flag_changes(inbox.guid, &other)
            .into_iter()
            .chain(flag_changes(inbox.guid, &mine))
        {
            let _ = feed.send(c);
        }
        view.update_own_many(mine.updated, mine.committed);
        assert!(matches!(view.pending_read(), PendingRead::All));
        // pending_read drained the feed already; the reload shows message 3.
        let rows = account.messages(&inbox.guid).expect("all");
        let mut out = Vec::new();
        view.apply(
            &PendingRead::All,
            rows,
            0,
            true,
            super::super::condstore::Enabled::default(),
            &mut out,
        );
        let out = String::from_utf8(out).expect("utf-8");
        assert!(
            out.starts_with("* 3 FETCH (UID 3 FLAGS (") && out.contains("\\Flagged"),
            "{out}"
        );
        assert_eq!(shown(&view), indexed(&account, &inbox));
    }

    // Two deliveries committed in UID order may reach the feed in the
    // other order (each announces after its own flush). The view must not
    // show the second before the first: the client would then learn of a
    // UID below one it has already seen (RFC 3501 §2.3.1.1).
    #[test]
    fn a_change_announced_out_of_commit_order_is_not_shown_before_the_older_one() {
        let (_dir, store) = crate::test_store("t");
        let user = store
            .add_user(&Address::parse("v@x.org").expect("address"), None, 0)
            .expect("user");
        let account = store.account(&user).expect("account");
        deliver(&account, &store, "one");
        let inbox = account.mailbox("INBOX").expect("inbox");
        let (feed, rx) = broadcast::channel(16);
        let watch = store.watcher().watch(&account);
        let snapshots = Snapshots::default();
        let mut view = View::open_on(&account, &snapshots, rx, inbox, false, watch).expect("view");
        assert_eq!(view.exists(), 1);

        let second = deliver(&account, &store, "two");
        let third = deliver(&account, &store, "three");
        // The third's announcement arrives first.
        feed.send(added(view.mailbox.guid, &third)).expect("send");
        let out = refresh(&mut view, &account);
        assert!(out.starts_with("* 3 EXISTS\r\n"), "{out}");
        let uids: Vec<Uid> = view.messages.iter().map(|m| m.uid).collect();
        assert_eq!(uids, vec![1, second.uid, third.uid]);

        // The late announcement of the second changes nothing.
        feed.send(added(view.mailbox.guid, &second)).expect("send");
        assert_eq!(refresh(&mut view, &account), "");
        let uids: Vec<Uid> = view.messages.iter().map(|m| m.uid).collect();
        assert_eq!(uids, vec![1, second.uid, third.uid]);
    }
}
