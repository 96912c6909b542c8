//! IMAP4rev1 (RFC 3501) and its everyday extensions: how mail clients read
//! mail from cove.

pub mod mime;
