//! The IMAP views of a message's bytes: ENVELOPE, BODYSTRUCTURE and
//! BODY[section] (RFC 3501 §6.4.5, §7.4.2).
