//! cove's server: protocols, TLS, configuration and the admin commands.
//! The `cove` binary (main.rs) is its command line; fuzz targets and tests
//! use the protocol parsers from here.

pub mod admin;
pub mod auth;
pub mod cli;
pub mod client_text;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod deflate;
pub mod derive;
pub mod drain;
pub mod error_text;
pub mod housekeeping;
pub mod imap;
pub mod import;
pub mod listener;
pub mod lmtp;
pub mod logging;
pub mod metrics;
pub mod pop3;
pub mod private_files;
pub mod privileges;
pub mod proxy;
pub mod reload;
pub mod serve;
pub mod sieve;
pub mod tls;
pub mod work;

/// A store in a fresh temporary directory, for unit tests (the directory
/// lives as long as the returned guard).
#[cfg(test)]
pub(crate) fn test_store(hostname: &str) -> (tempfile::TempDir, std::sync::Arc<cove_store::Store>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = cove_store::Store::open(
        dir.path(),
        cove_store::StoreOptions {
            hostname: hostname.into(),
            env: cove_store::Env::default(),
            durability: cove_store::Durability::default(),
        },
    )
    .expect("open a test store");
    (dir, std::sync::Arc::new(store))
}
