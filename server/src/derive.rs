//! What the protocols need from a message, made in the background right
//! after it arrives (cove_store's indexer.rs calls [`ArrivalViews`]): the
//! views IMAP FETCH caches (ENVELOPE, BODYSTRUCTURE, BODY), the header
//! text a header-only SEARCH reads, the keys SORT and THREAD compare, POP3's CRLF size, and the text of the
//! full-text index — each exactly what the command would compute and
//! cache at first use, so the first FETCH, SEARCH or POP3 listing of new
//! mail finds them made.

use cove_store::{Derivation, Deriver, Indexed};

use crate::imap::{fetch, search, sort_thread};
use crate::pop3::maildrop;

/// The server's [`Deriver`].
pub struct ArrivalViews;

impl Deriver for ArrivalViews {
    fn derive(&self, raw: &[u8], text: bool) -> Derivation {
        let mut views = fetch::views(raw);
        views.extend(search::header_views(raw));
        views.push(sort_thread::sort_keys_view(raw));
        views.push(maildrop::crlf_size_view(raw));
        Derivation {
            views,
            text: if text {
                search::fulltext::extract(raw)
            } else {
                Default::default()
            },
        }
    }

    fn text_version(&self) -> u32 {
        search::fulltext::EXTRACTOR_VERSION
    }

    fn done(&self, report: &Indexed) {
        crate::metrics::METRICS.indexed(report);
    }
}
