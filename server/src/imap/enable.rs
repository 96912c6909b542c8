//! RFC 5161 ENABLE.

use imap_codec::imap_types::core::Vec1;
use imap_codec::imap_types::extensions::enable::CapabilityEnable;

use super::connection::Connection;
use super::outcome::Outcome;

// RFC 5161 §3.1: ENABLE (no extension cove supports needs enabling yet).
pub fn enable(conn: &mut Connection, _asked: &Vec1<CapabilityEnable<'static>>) -> Outcome {
    conn.untagged("ENABLED");
    Outcome::ok("ENABLE completed")
}
