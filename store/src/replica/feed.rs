//! Content for an apply that lands while the apply runs.
//!
//! A first sync used to receive every blob before it applied the first
//! message: for 100,000 × 4 KiB the apply (links and index rows) then ran
//! alone after the content, and it was the whole gap to rsync (issue 15).
//! With a [`ContentFeed`] the session hands each batch of blobs to the
//! apply as soon as the batch is durable and named; each chunk of new
//! messages waits only for its own blobs, so chunk N is applied while the
//! blobs of chunk N+1 are still on the link.
//!
//! The apply never treats a blob as missing while it may still come: it
//! waits for it until the session says the transfer is over
//! ([`FeedSender::complete`]); only then is a blob that never came missing
//! (the message is left for the next session, as before). A transfer that
//! fails (the sender dropped without `complete`) stops the apply at its
//! next wait, with the chunks already committed kept (as for a session cut
//! between chunks).

use std::collections::{HashMap, HashSet};
use std::sync::mpsc;

use cove_dedup::StagedBlob;

use crate::{Error, Result};

/// Blobs received, durable and named, by content id.
pub type Received = Vec<([u8; 32], StagedBlob)>;

enum Event {
    Blobs(Received),
    Complete,
}

/// The content an apply links: what is here, and what is still coming.
pub struct ContentFeed {
    have: HashMap<[u8; 32], StagedBlob>,
    /// Asked of the peer, not here yet.
    awaited: HashSet<[u8; 32]>,
    /// `None` once the transfer is over.
    rx: Option<mpsc::Receiver<Event>>,
    /// The transfer stopped before its end.
    failed: bool,
}

/// The session's end of a [`ContentFeed`].
pub struct FeedSender {
    tx: mpsc::Sender<Event>,
}

impl FeedSender {
    /// Hand over a batch of blobs (an apply that stopped no longer
    /// listens: the blobs stay stored for the next session).
    pub fn send(&self, blobs: Received) {
        let _ = self.tx.send(Event::Blobs(blobs));
    }

    /// The transfer is over: what did not come is not coming.
    pub fn complete(self) {
        let _ = self.tx.send(Event::Complete);
    }
}

impl ContentFeed {
    /// All the content there is, already here.
    pub fn ready(have: HashMap<[u8; 32], StagedBlob>) -> ContentFeed {
        ContentFeed {
            have,
            awaited: HashSet::new(),
            rx: None,
            failed: false,
        }
    }

    /// A feed expecting `awaited`, and the sender that delivers them.
    pub fn streamed(awaited: impl IntoIterator<Item = [u8; 32]>) -> (FeedSender, ContentFeed) {
        let (tx, rx) = mpsc::channel();
        let feed = ContentFeed {
            have: HashMap::new(),
            awaited: awaited.into_iter().collect(),
            rx: Some(rx),
            failed: false,
        };
        (FeedSender { tx }, feed)
    }

    /// The blobs here so far.
    pub fn blobs(&self) -> &HashMap<[u8; 32], StagedBlob> {
        &self.have
    }

    /// Block until every one of `ids` still awaited is here, or the
    /// transfer is over. An error if the transfer failed.
    pub fn wait_for<'a>(&mut self, ids: impl IntoIterator<Item = &'a [u8; 32]>) -> Result<()> {
        for id in ids {
            while self.awaited.contains(id) {
                self.next()?;
            }
        }
        Ok(())
    }

    /// Block until the transfer is over.
    pub fn wait_all(&mut self) -> Result<()> {
        while self.rx.is_some() {
            self.next()?;
        }
        self.stopped()
    }

    fn next(&mut self) -> Result<()> {
        let Some(rx) = &self.rx else {
            self.awaited.clear();
            return self.stopped();
        };
        match rx.recv() {
            Ok(Event::Blobs(blobs)) => {
                for (id, blob) in blobs {
                    self.awaited.remove(&id);
                    self.have.insert(id, blob);
                }
            }
            Ok(Event::Complete) => {
                self.rx = None;
                self.awaited.clear();
            }
            Err(mpsc::RecvError) => {
                self.rx = None;
                self.awaited.clear();
                self.failed = true;
                return self.stopped();
            }
        }
        Ok(())
    }

    fn stopped(&self) -> Result<()> {
        if !self.failed {
            return Ok(());
        }
        Err(Error::Io {
            context: "receive the peer's content".into(),
            source: std::io::Error::other("the transfer stopped before its end"),
        })
    }
}
