//! The background indexer: views and full text of arrived mail are made
//! without anyone asking, and those of expunged content go.

use super::*;
use crate::{Derivation, Deriver, FullText, FullTextOnArrival, IndexedText, TextField};
use std::collections::HashSet;

/// Views and text made from the bytes as they are (a view of kind 7 is
/// the first line; the text is the whole message, lowercased).
struct FirstLine;

const KIND: crate::DerivedKind = crate::DerivedKind::ImapHeaderText;
const VERSION: u32 = 3;

impl Deriver for FirstLine {
    fn derive(&self, raw: &[u8], with_text: bool) -> Derivation {
        let text = String::from_utf8_lossy(raw).to_lowercase();
        Derivation {
            views: vec![(KIND, text.lines().next().unwrap_or("").as_bytes().to_vec())],
            text: IndexedText {
                body: if with_text { text } else { String::new() },
                header: String::new(),
            },
        }
    }

    fn text_version(&self) -> u32 {
        VERSION
    }
}

fn indexed(s: &Store) {
    assert!(s.wait_indexed(Duration::from_secs(60)), "indexer idle");
}

fn candidates(acct: &Account, needle: &str) -> HashSet<ContentId> {
    FullText::open(acct, VERSION)
        .unwrap()
        .candidates(needle, TextField::Body)
        .unwrap()
        .unwrap()
}

#[test]
fn arrived_mail_gets_its_views_and_text_without_being_asked() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    assert!(s.set_deriver(Arc::new(FirstLine), FullTextOnArrival::Everyone));
    assert!(
        !s.set_deriver(Arc::new(FirstLine), FullTextOnArrival::Everyone),
        "once"
    );
    let acct = s.account(&user(&s, "a@x.org")).unwrap();
    let kumquat = s.blobs().put(b"Kumquat pie\r\n").unwrap();
    let marzipan = s.blobs().put(b"Marzipan tart\r\n").unwrap();
    // LMTP's path (Store::deliver) and APPEND's (Account::deliver).
    let target = DeliveryTarget {
        user: s
            .user(&Address::parse("a@x.org").unwrap())
            .unwrap()
            .unwrap(),
        mailbox: None,
    };
    assert!(s.deliver(&kumquat, &[target])[0].is_ok());
    acct.deliver("Archive", &marzipan, &NewMessage::default())
        .unwrap();
    indexed(&s);
    assert_eq!(
        acct.derived(&[(kumquat.id(), KIND), (marzipan.id(), KIND)])
            .unwrap(),
        vec![
            Some(b"kumquat pie".to_vec()),
            Some(b"marzipan tart".to_vec())
        ]
    );
    assert_eq!(candidates(&acct, "umqua"), HashSet::from([kumquat.id()]));
    assert_eq!(candidates(&acct, "arzip"), HashSet::from([marzipan.id()]));
}

#[test]
fn expunged_content_leaves_the_views_and_the_index_unless_a_copy_holds_it() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    s.set_deriver(Arc::new(FirstLine), FullTextOnArrival::Everyone);
    let acct = s.account(&user(&s, "a@x.org")).unwrap();
    let inbox = acct.mailbox("INBOX").unwrap();
    let archive = acct.mailbox("Archive").unwrap();
    let kept = s.blobs().put(b"Kumquat pie\r\n").unwrap();
    let gone = s.blobs().put(b"Marzipan tart\r\n").unwrap();
    let k = acct
        .deliver("INBOX", &kept, &NewMessage::default())
        .unwrap();
    let g = acct
        .deliver("INBOX", &gone, &NewMessage::default())
        .unwrap();
    acct.copy_messages(&inbox.guid, &[k.uid], &archive.guid, None)
        .unwrap();
    indexed(&s);
    acct.expunge(&inbox.guid, &[k.uid, g.uid]).unwrap();
    indexed(&s);
    assert_eq!(
        acct.derived(&[(kept.id(), KIND), (gone.id(), KIND)])
            .unwrap(),
        vec![Some(b"kumquat pie".to_vec()), None]
    );
    assert_eq!(candidates(&acct, "umqua"), HashSet::from([kept.id()]));
    assert!(candidates(&acct, "arzip").is_empty());
    // The last copy goes with its mailbox.
    acct.delete_mailbox("Archive").unwrap();
    indexed(&s);
    assert_eq!(acct.derived(&[(kept.id(), KIND)]).unwrap(), vec![None]);
    assert!(candidates(&acct, "umqua").is_empty());
}

#[test]
fn a_sweep_forgets_everything_no_message_holds() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    s.set_deriver(Arc::new(FirstLine), FullTextOnArrival::Everyone);
    let acct = s.account(&user(&s, "a@x.org")).unwrap();
    let inbox = acct.mailbox("INBOX").unwrap();
    let kept = s.blobs().put(b"Kumquat pie\r\n").unwrap();
    let gone = s.blobs().put(b"Marzipan tart\r\n").unwrap();
    acct.deliver("INBOX", &kept, &NewMessage::default())
        .unwrap();
    let g = acct
        .deliver("INBOX", &gone, &NewMessage::default())
        .unwrap();
    indexed(&s);
    // Expunged while no indexer listened (another process, an older cove).
    let quiet = store_at(d.path());
    let other = quiet
        .account(
            &quiet
                .user(&Address::parse("a@x.org").unwrap())
                .unwrap()
                .unwrap(),
        )
        .unwrap();
    other.expunge(&inbox.guid, &[g.uid]).unwrap();
    drop(other);
    drop(quiet);
    assert_eq!(acct.sweep_derived().unwrap(), 1);
    let mut ft = FullText::open(&acct, VERSION).unwrap();
    assert_eq!(ft.sweep(&acct).unwrap(), 1);
    assert_eq!(candidates(&acct, "umqua"), HashSet::from([kept.id()]));
    assert!(candidates(&acct, "arzip").is_empty());
}

#[test]
fn by_default_only_users_with_a_fulltext_index_get_text_on_arrival() {
    let d = tempfile::tempdir().unwrap();
    let s = store_at(d.path());
    s.set_deriver(Arc::new(FirstLine), FullTextOnArrival::Indexed);
    let acct = s.account(&user(&s, "a@x.org")).unwrap();
    let inbox = acct.mailbox("INBOX").unwrap();
    let first = s.blobs().put(b"Kumquat pie\r\n").unwrap();
    acct.deliver("INBOX", &first, &NewMessage::default())
        .unwrap();
    indexed(&s);
    assert_eq!(
        acct.derived(&[(first.id(), KIND)]).unwrap(),
        vec![Some(b"kumquat pie".to_vec())]
    );
    let fts = acct.home().join(crate::FULLTEXT_FILE);
    assert!(
        !fts.exists(),
        "a full-text index made for a user who never searched"
    );
    // A body search builds the index; from then on new mail goes into it.
    let mut ft = FullText::open(&acct, VERSION).unwrap();
    ft.refresh_deriving(&acct, &inbox, &|raw| FirstLine.derive(raw, true))
        .unwrap();
    let second = s.blobs().put(b"Marzipan tart\r\n").unwrap();
    acct.deliver("INBOX", &second, &NewMessage::default())
        .unwrap();
    indexed(&s);
    assert_eq!(candidates(&acct, "arzip"), HashSet::from([second.id()]));
}
