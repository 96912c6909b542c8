//! cove's replicator: per-user, bidirectional, incremental sync of
//! mailboxes between peer nodes (DESIGN.md, "Replication").

pub mod http;
pub mod transport;
