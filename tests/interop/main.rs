//! The interop suite: the programs operators and users already run, each
//! talking to a real `cove serve` on loopback.
//!
//! - `postfix`: Postfix delivering over LMTP, fan-out stored once, bounces
//!   carrying cove's 550.
//! - `postfix_cluster`: Postfix routing through cove's socketmaps over two
//!   pairs, and failing over after `kill -9`.
//! - `exim`: Exim routing through cove's readsocket lookups over two pairs,
//!   and failing over after `kill -9`.
//! - `mbsync`: isync's two-way sync of a 1,000-message mailbox with a local
//!   Maildir, flags and deletions from both ends converging.
//! - `swaks`: swaks over LMTP, plain, pipelined and with STARTTLS.
//! - `dovecot`: Dovecot's `doveadm` reading cove's Maildir++ tree.
//! - `sieve_connect`: sieve-connect managing scripts over ManageSieve.
//! - `mime_dovecot`: ENVELOPE, BODYSTRUCTURE and body sections of the
//!   messages in `tests/corpus/`, cove's against Dovecot's `imap`.
//! - `sort_dovecot`: cove's SORT/THREAD engine against Dovecot's SORT and
//!   THREAD on the same corpus and on random mailboxes (both through
//!   `dovecot_imap`, a private Dovecot `imap` process).
//!
//! A case whose program is missing prints `skipped: ...` and passes, except
//! with `CI=true`, where it fails: `.ci/run` installs every program.

mod common;
mod dovecot;
mod dovecot_imap;
mod exim;
mod imap_value;
mod mbsync;
mod mime_dovecot;
mod nginx;
mod postfix;
mod postfix_cluster;
mod sieve_connect;
mod sort_dovecot;
mod swaks;
