//! RFC 7162 CONDSTORE and QRESYNC: what a session has enabled, and the
//! responses those extensions change.
//!
//! Every message row carries a modification sequence (the index's change
//! counter, `ModSeq`), and so does every expunge (its tombstone). Changes a
//! peer's replicator applies are logged like a client's, with this node's
//! next modseq, so a client resynchronising against either node sees them:
//! a modseq is a position in *this* node's change log, never the peer's.
//!
//! - CONDSTORE is enabled by the first command that uses it (RFC 7162
//!   §3.1: ENABLE CONDSTORE, SELECT (CONDSTORE), FETCH MODSEQ or
//!   CHANGEDSINCE, SEARCH MODSEQ, STORE UNCHANGEDSINCE, STATUS
//!   HIGHESTMODSEQ). From then on SELECT reports HIGHESTMODSEQ and every
//!   FETCH carrying flags carries MODSEQ too.
//! - QRESYNC only by ENABLE QRESYNC (§3.2.3), and it implies CONDSTORE.
//!   From then on expunges are told as `VANISHED uid-set` instead of
//!   `n EXPUNGE` (§3.2.10), SELECT takes the QRESYNC parameter, UID FETCH
//!   takes VANISHED, and a SELECT that closes another mailbox says
//!   `[CLOSED]` first (§3.2.11).
//!
//! A client whose remembered modseq is above this node's (the index was
//! rebuilt, or it talked to a node further ahead) gets everything it names
//! reported, rather than nothing.

use std::collections::HashSet;

use cove_store::{ModSeq, Uid};
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use super::connection::Connection;
use super::outcome::{Code, untagged_ok};
use super::response;
use super::view::View;

/// The extensions a session has enabled (RFC 5161).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Enabled {
    pub condstore: bool,
    pub qresync: bool,
    /// RFC 9051: IMAP4rev2 (`revision.rs`).
    pub revision: super::revision::Revision,
}

impl Connection {
    /// RFC 7162 §3.1: a CONDSTORE enabling command. When it is the first
    /// and a mailbox is selected, the client learns its HIGHESTMODSEQ now
    /// (§3.1.2.1: it has not seen one in the SELECT).
    pub fn enable_condstore(&mut self, view: Option<&View>) {
        if self.enabled.condstore {
            return;
        }
        self.enabled.condstore = true;
        if let Some(view) = view {
            untagged_ok(
                Code::HighestModSeq(view.highest_modseq()),
                "Highest",
                &mut self.out,
            );
        }
    }
}

/// Tells the client of messages removed from the view: `n EXPUNGE` each,
/// or once QRESYNC is enabled one `VANISHED uid-set` (RFC 7162 §3.2.10).
pub struct Expunges {
    qresync: bool,
    vanished: Vec<Uid>,
}

impl Expunges {
    pub fn new(enabled: Enabled) -> Expunges {
        Expunges {
            qresync: enabled.qresync,
            vanished: Vec::new(),
        }
    }

    /// The message `uid`, numbered `seq` until now, is gone.
    pub fn gone(&mut self, seq: usize, uid: Uid, out: &mut Vec<u8>) {
        if self.qresync {
            self.vanished.push(uid);
        } else {
            out.extend_from_slice(format!("* {seq} EXPUNGE\r\n").as_bytes());
        }
    }

    /// Write what is still to be written.
    pub fn finish(self, out: &mut Vec<u8>) {
        if !self.vanished.is_empty() {
            vanished(out, &self.vanished, false);
        }
    }
}

/// `* VANISHED [(EARLIER)] uid-set`.
pub fn vanished(out: &mut Vec<u8>, uids: &[Uid], earlier: bool) {
    let earlier = if earlier { "(EARLIER) " } else { "" };
    out.extend_from_slice(
        format!("* VANISHED {earlier}{}\r\n", response::number_set(uids)).as_bytes(),
    );
}

/// A set of UIDs as given (no `*` resolution beyond `last`), for the
/// known-UIDs of QRESYNC and the set of UID FETCH (VANISHED): whether a
/// UID is in it.
pub struct UidSet(Vec<(Uid, Uid)>);

impl UidSet {
    pub fn new(set: &SequenceSet, last: Uid) -> UidSet {
        let value = |v: &SeqOrUid| match v {
            SeqOrUid::Value(v) => v.get(),
            SeqOrUid::Asterisk => last,
        };
        UidSet(
            set.0
                .as_ref()
                .iter()
                .map(|s| match s {
                    Sequence::Single(a) => (value(a), value(a)),
                    Sequence::Range(a, b) => (value(a).min(value(b)), value(a).max(value(b))),
                })
                .collect(),
        )
    }

    pub fn contains(&self, uid: Uid) -> bool {
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&uid))
    }
}

/// The expunged UIDs a client that knew the mailbox at `since` must be told
/// of (RFC 7162 §3.2.5.1, §3.2.6): tombstones newer than `since`, within
/// `known`. `since` above the mailbox's highest modseq: every UID in `known`
/// (up to UIDNEXT) the mailbox no longer has.
pub fn expunged_since(
    view: &View,
    tombstones: &[(Uid, ModSeq)],
    since: ModSeq,
    known: Option<&UidSet>,
) -> Vec<Uid> {
    let everything = UidSet(vec![(1, view.uid_next().saturating_sub(1))]);
    let known = known.unwrap_or(&everything);
    let mut out: Vec<Uid> = tombstones
        .iter()
        .filter(|(uid, modseq)| *modseq > since && known.contains(*uid))
        .map(|(uid, _)| *uid)
        .collect();
    if since > view.highest_modseq() {
        let present: HashSet<Uid> = view.messages.iter().map(|m| m.uid).collect();
        for (lo, hi) in &known.0 {
            let (lo, hi) = ((*lo).max(1), (*hi).min(view.uid_next().saturating_sub(1)));
            // Bounded: a wider range gets the tombstones only.
            if hi >= lo && hi - lo < MAX_GAP_SCAN {
                out.extend((lo..=hi).filter(|u| !present.contains(u)));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out.retain(|u| view.seq_of(*u).is_none());
    out
}

/// The widest UID range scanned for gaps when the tombstones cannot be
/// trusted (a client ahead of this node).
const MAX_GAP_SCAN: u32 = 1_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vanished_is_one_line_of_uid_ranges() {
        let mut out = Vec::new();
        vanished(&mut out, &[9, 3, 4, 5], true);
        assert_eq!(out, b"* VANISHED (EARLIER) 3:5,9\r\n");
        let mut out = Vec::new();
        let mut e = Expunges::new(Enabled {
            condstore: true,
            qresync: true,
            ..Enabled::default()
        });
        e.gone(2, 7, &mut out);
        e.gone(2, 8, &mut out);
        assert!(out.is_empty(), "written once, at the end");
        e.finish(&mut out);
        assert_eq!(out, b"* VANISHED 7:8\r\n");
        let mut out = Vec::new();
        let mut e = Expunges::new(Enabled::default());
        e.gone(2, 7, &mut out);
        e.finish(&mut out);
        assert_eq!(out, b"* 2 EXPUNGE\r\n");
    }
}
