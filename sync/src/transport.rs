//! Peer links (written by the transport work).
