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
pub mod tls;
pub mod work;
