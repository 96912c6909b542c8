//! Sieve (RFC 5228 and the extensions sieve-rs implements) at LMTP
//! delivery, and ManageSieve (RFC 5804) for users to manage their scripts.
//!
//! - [`engine`]: compile (cached by content), run a user's scripts on a
//!   message, answer the interpreter from the store, and make a plan.
//! - [`delivery`]: the plan inside an LMTP delivery (blocking pool for
//!   the scripts and the store, async for the relay).
//! - [`outgoing`]: vacation/redirect rules and the SMTP client to the relay.
//! - Scripts live in the user's home (`cove_store::sieve`).

pub mod cli;
mod config;
pub mod delivery;
pub mod engine;
pub mod import;
pub mod managesieve;
pub mod outgoing;

pub use config::SieveConfig;
pub use engine::SieveEngine;
