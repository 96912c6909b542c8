//! Answering RETR and TOP (RFC 1939 §5, §7): one command, or a run of
//! pipelined ones (RFC 2449 §6.6), each answer whole and in order.
//!
//! A message is read one of two ways:
//! - from the page cache, on the session's own task ([`answer_cached`]):
//!   opened and read with calls that never wait for the disk (see
//!   `cove_store::MailboxFiles`), straight into the session's output. A
//!   message with CRLF line ends and no line starting with a dot (all that
//!   cove stores itself, but for the dots) goes out as read: no second
//!   copy, no line-by-line encoding. Anything else goes through the
//!   [`Encoder`](super::encode::Encoder).
//! - on the blocking pool ([`Transfer`]): the first message the cache
//!   cannot answer and every one queued after it (answers keep their
//!   order), and messages over [`CACHED_MAX`], which stream through a
//!   bounded buffer instead of being read whole. A file renamed by a flag
//!   change meanwhile is found again there, and errors are answered there.
//!
//! Before the cached path, every RETR cost a trip to the blocking pool and
//! a walk of the file's whole path; 10,000 pipelined 4 KiB RETRs spent
//! 20 µs of server CPU each on the bench machine, most of it in thread
//! wake-ups, path walks and copies (benches/results/pop3-2026-12-06.md).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::Arc;

use cove_store::{Account, Cached, MailboxFiles, MailboxGuid, Uid, read_cached};

use super::encode::{self, Encoder, Extent};

/// Messages above this many stored bytes are streamed by [`Transfer`].
pub const CACHED_MAX: u64 = 256 * 1024;

/// One RETR or TOP to answer.
pub struct Retrieval {
    /// The message number the client gave.
    pub number: usize,
    pub uid: Uid,
    /// The file's name in its folder (`cur/...`), as the index had it.
    pub file: String,
    /// Bytes of the stored file.
    pub stored: u64,
    /// Octets of the CRLF form (what LIST said).
    pub size: u64,
    pub extent: Extent,
}

/// The `+OK` line that opens an answer.
fn status_line(r: &Retrieval, out: &mut Vec<u8>) {
    match r.extent {
        Extent::Whole => {
            // Writing into a Vec cannot fail.
            let _ = write!(out, "+OK {} octets\r\n", r.size);
        }
        Extent::Top(_) => out.extend_from_slice(b"+OK Top of message follows\r\n"),
    }
}

/// Append the whole answer to `r` to `out` if the page cache holds the
/// message; otherwise leave `out` as it was and say `WouldBlock` (also for
/// a file that is gone or unreadable: [`Transfer`] finds out which and
/// answers it).
pub fn answer_cached(files: &MailboxFiles, r: &Retrieval, out: &mut Vec<u8>) -> Cached<()> {
    let Ok(stored) = usize::try_from(r.stored) else {
        return Cached::WouldBlock;
    };
    if r.stored > CACHED_MAX {
        return Cached::WouldBlock;
    }
    let file = match files.open_cached(&r.file) {
        Ok(Cached::Ready(f)) => f,
        Ok(Cached::WouldBlock) | Err(_) => return Cached::WouldBlock,
    };
    let answer = out.len();
    status_line(r, out);
    let body = out.len();
    // Content is immutable, so the file has the bytes the index says; a
    // file that does not (another program rewrote it) is left to the
    // blocking path. One byte more is asked for, to see a longer file.
    out.resize(body + stored + 1, 0);
    let mut got = 0;
    let complete = loop {
        match read_cached(&file, got as u64, &mut out[body + got..]) {
            Ok(Cached::Ready(0)) => break got == stored,
            Ok(Cached::Ready(n)) => {
                got += n;
                if got >= stored {
                    break got == stored && !longer_than(&file, stored);
                }
            }
            Ok(Cached::WouldBlock) | Err(_) => break false,
        }
    };
    if !complete {
        out.truncate(answer);
        return Cached::WouldBlock;
    }
    out.truncate(body + got);
    if r.extent == Extent::Whole && encode::sent_unchanged(&out[body..]) {
        out.extend_from_slice(b".\r\n");
    } else {
        let raw = out.split_off(body);
        let mut encoder = Encoder::new(r.extent);
        encoder.feed(&raw, out);
        encoder.finish(out);
    }
    Cached::Ready(())
}

/// Whether a file read to `stored` bytes has more. A read from the page
/// cache that stops short stops at a page boundary, so a read that ended
/// at `stored` when more was asked for reached the end of the file —
/// unless `stored` is itself a multiple of the page size; only then is
/// the file's size asked (fstat never waits for the disk: the inode is
/// in memory while the file is open).
fn longer_than(file: &std::fs::File, stored: usize) -> bool {
    const SMALLEST_PAGE: usize = 4096;
    if !stored.is_multiple_of(SMALLEST_PAGE) {
        return false;
    }
    file.metadata().map_or(true, |m| m.len() != stored as u64)
}

/// RETR and TOP answers written from the blocking pool: one, or several
/// pipelined ones in a row. [`Transfer::run`] is blocking; it encodes into
/// the session's output until the queue is done or the output holds
/// `budget` bytes, then the session writes them and runs it again — so a
/// big message streams through a bounded buffer, and many small ones cost
/// one trip to the blocking pool.
pub struct Transfer {
    queue: VecDeque<Retrieval>,
    current: Option<(std::fs::File, Encoder)>,
    account: Arc<Account>,
    mailbox: MailboxGuid,
    files: Arc<MailboxFiles>,
    buf: Vec<u8>,
}

/// Bytes read from a message file at once.
const READ_PIECE: usize = 64 * 1024;

impl Transfer {
    pub fn new(
        account: Arc<Account>,
        mailbox: MailboxGuid,
        files: Arc<MailboxFiles>,
        queue: VecDeque<Retrieval>,
    ) -> Transfer {
        Transfer {
            queue,
            current: None,
            account,
            mailbox,
            files,
            buf: Vec::new(),
        }
    }

    pub fn is_finished(&self) -> bool {
        self.queue.is_empty() && self.current.is_none()
    }

    /// Encode answers into `out` until done or `out` holds `budget` bytes.
    /// An error after a `+OK` went out cannot be told to the client in
    /// POP3: the caller closes the connection.
    pub fn run(&mut self, out: &mut Vec<u8>, budget: usize) -> std::io::Result<()> {
        if self.buf.len() < READ_PIECE {
            self.buf.resize(READ_PIECE, 0);
        }
        while out.len() < budget {
            if let Some((file, encoder)) = self.current.as_mut() {
                let n = file.read(&mut self.buf)?;
                if n > 0 {
                    encoder.feed(&self.buf[..n], out);
                }
                if n == 0 || encoder.is_done() {
                    encoder.finish(out);
                    self.current = None;
                }
                continue;
            }
            let Some(r) = self.queue.pop_front() else {
                break;
            };
            match self.open(&r) {
                Ok(Some(file)) => {
                    status_line(&r, out);
                    self.current = Some((file, Encoder::new(r.extent)));
                }
                Ok(None) => {
                    let _ = write!(
                        out,
                        "-ERR Message {} was removed by another session\r\n",
                        r.number
                    );
                }
                Err(e) => {
                    tracing::error!(user = %self.account.email(), file = %self.files.path().join(&r.file).display(), error = %e, "pop3: cannot read a message");
                    let _ = write!(out, "-ERR [SYS/TEMP] Cannot read message {}\r\n", r.number);
                }
            }
        }
        if self.is_finished() && self.buf.capacity() > READ_PIECE {
            self.buf = Vec::new();
        }
        Ok(())
    }

    /// Open a message's file; if a flag change renamed it (IMAP), find
    /// its new name; `None` if it was expunged meanwhile.
    fn open(&self, r: &Retrieval) -> std::io::Result<Option<std::fs::File>> {
        match self.files.open(&r.file) {
            Ok(f) => return Ok(Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let found = self
            .account
            .message(&self.mailbox, r.uid)
            .map_err(std::io::Error::other)?;
        match found {
            None => Ok(None),
            Some(m) => match self.files.open(&m.file) {
                Ok(f) => Ok(Some(f)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retrieval(file: &str, stored: &[u8], extent: Extent) -> Retrieval {
        Retrieval {
            number: 7,
            uid: 7,
            file: file.into(),
            stored: stored.len() as u64,
            size: encode::crlf_size(stored),
            extent,
        }
    }

    /// What the blocking path sends for a message.
    fn blocking_answer(files: &Arc<MailboxFiles>, r: Retrieval) -> Vec<u8> {
        let mut out = Vec::new();
        status_line(&r, &mut out);
        let mut f = files.open(&r.file).expect("open");
        let mut raw = Vec::new();
        f.read_to_end(&mut raw).expect("read");
        let mut e = Encoder::new(r.extent);
        e.feed(&raw, &mut out);
        e.finish(&mut out);
        out
    }

    #[test]
    fn cached_answers_are_the_encoders() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("cur")).expect("cur");
        let files = Arc::new(MailboxFiles::open_dir(dir.path()).expect("open"));
        let cases: [(&str, &[u8]); 6] = [
            ("cur/crlf", b"Subject: a\r\n\r\nbody\r\nmore\r\n"),
            ("cur/dots", b"Subject: a\r\n\r\n.hidden\r\nx\r\n.\r\n"),
            ("cur/barelf", b"Subject: a\n\nbody\n"),
            ("cur/noend", b"Subject: a\r\n\r\nno line end"),
            ("cur/empty", b""),
            ("cur/lead", b".Subject: a\r\n\r\nb\r\n"),
        ];
        for (name, bytes) in cases {
            std::fs::write(dir.path().join(name), bytes).expect("write");
            for extent in [Extent::Whole, Extent::Top(0), Extent::Top(1)] {
                let mut out = b"+OK earlier answer\r\n".to_vec();
                match answer_cached(&files, &retrieval(name, bytes, extent), &mut out) {
                    Cached::Ready(()) => {
                        let mut want = b"+OK earlier answer\r\n".to_vec();
                        want.extend(blocking_answer(&files, retrieval(name, bytes, extent)));
                        assert_eq!(
                            String::from_utf8_lossy(&out),
                            String::from_utf8_lossy(&want),
                            "{name} {extent:?}"
                        );
                    }
                    Cached::WouldBlock => {
                        // Just written, so in the page cache: only a kernel
                        // without the flags sends it the blocking way.
                        assert!(!cove_store::cached_reads_available(), "{name} {extent:?}");
                        assert_eq!(out, b"+OK earlier answer\r\n");
                    }
                }
            }
        }
    }

    #[test]
    fn a_file_that_is_not_what_the_index_says_goes_to_the_blocking_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("cur")).expect("cur");
        let files = MailboxFiles::open_dir(dir.path()).expect("open");
        std::fs::write(
            dir.path().join("cur/m"),
            b"A: b\r\n\r\nlonger than said\r\n",
        )
        .expect("write");
        let mut out = Vec::new();
        let r = retrieval("cur/m", b"A: b\r\n\r\n", Extent::Whole);
        assert_eq!(answer_cached(&files, &r, &mut out), Cached::WouldBlock);
        assert!(out.is_empty());
        // Shorter than the index says.
        let r = retrieval("cur/m", &[b'x'; 100], Extent::Whole);
        assert_eq!(answer_cached(&files, &r, &mut out), Cached::WouldBlock);
        // Longer, by a page, than a page-sized index entry.
        std::fs::write(dir.path().join("cur/p"), [b'y'; 8192]).expect("write");
        let r = retrieval("cur/p", &[b'y'; 4096], Extent::Whole);
        assert_eq!(answer_cached(&files, &r, &mut out), Cached::WouldBlock);
        assert!(out.is_empty());
        let r = retrieval("cur/p", &[b'y'; 8192], Extent::Whole);
        if cove_store::cached_reads_available() {
            assert_eq!(answer_cached(&files, &r, &mut out), Cached::Ready(()));
            assert_eq!(out.len(), "+OK 8194 octets\r\n".len() + 8192 + 2 + 3);
            out.clear();
        }
        let gone = retrieval("cur/gone", b"A: b\r\n", Extent::Whole);
        assert_eq!(answer_cached(&files, &gone, &mut out), Cached::WouldBlock);
        let big = Retrieval {
            stored: CACHED_MAX + 1,
            ..retrieval("cur/m", b"", Extent::Whole)
        };
        assert_eq!(answer_cached(&files, &big, &mut out), Cached::WouldBlock);
        assert!(out.is_empty());
    }
}
