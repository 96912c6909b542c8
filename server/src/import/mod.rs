//! Moving to cove from another mail server without clients noticing:
//! `cove import maildir` brings Dovecot Maildir++ trees over with their
//! UIDVALIDITY, UIDs, flags, keywords and subscriptions.

pub mod maildir;
pub mod users;
