//! RFC 5161 ENABLE.

use imap_codec::imap_types::core::Vec1;
use imap_codec::imap_types::extensions::enable::CapabilityEnable;

use super::connection::Connection;
use super::outcome::Outcome;
use super::revision::Revision;
use super::view::View;

// RFC 5161 §3.1: ENABLE. The ENABLED response lists what this command
// enabled: CONDSTORE and QRESYNC (RFC 7162 §3.2.3; QRESYNC implies
// CONDSTORE) and IMAP4rev2 (RFC 9051 §6.3.1). imap-codec reads IMAP4rev2
// as an unknown capability: every name is compared by its text.
pub fn enable(
    conn: &mut Connection,
    asked: &Vec1<CapabilityEnable<'static>>,
    view: Option<&View>,
) -> Outcome {
    let mut enabled: Vec<&str> = Vec::new();
    for capability in asked.as_ref() {
        let name = capability.to_string().to_ascii_uppercase();
        let was = conn.enabled;
        match name.as_str() {
            "CONDSTORE" => {}
            "QRESYNC" => conn.enabled.qresync = true,
            "IMAP4REV2" => {
                // RFC 9051 §6.3.1: before a mailbox is selected; a selected
                // view already told the client rev1's \Recent and names.
                if view.is_some() {
                    tracing::info!(session = conn.id, peer = %conn.peer, "imap ENABLE IMAP4rev2 with a mailbox selected: not enabled");
                } else if was.revision == Revision::Rev1 {
                    conn.enabled.revision = Revision::Rev2;
                    enabled.push("IMAP4rev2");
                }
                continue;
            }
            _ => continue,
        }
        conn.enable_condstore(view);
        if !was.condstore && !enabled.contains(&"CONDSTORE") && name == "CONDSTORE" {
            enabled.push("CONDSTORE");
        }
        if !was.qresync && name == "QRESYNC" {
            enabled.push("QRESYNC");
        }
    }
    let list: String = enabled.iter().map(|c| format!(" {c}")).collect();
    conn.untagged(&format!("ENABLED{list}"));
    Outcome::ok("ENABLE completed")
}
