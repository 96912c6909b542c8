//! Identities (DESIGN.md "Identity"): message and mailbox GUIDs, UIDs, modseqs,
//! and the system flags.

use std::fmt;
use std::str::FromStr;

pub use cove_dedup::ContentId;

/// Lower-case hex of a GUID. By table: a POP3 UIDL listing and every
/// scan of a big mailbox make one per message.
fn hex16(bytes: &[u8; 16]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(32);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn parse_hex16(s: &str) -> Option<[u8; 16]> {
    fn digit(c: u8) -> Option<u8> {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let s = s.as_bytes();
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (slot, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *slot = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

macro_rules! guid_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        pub struct $name(pub [u8; 16]);

        impl $name {
            pub fn to_hex(&self) -> String {
                hex16(&self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl FromStr for $name {
            type Err = crate::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_hex16(s)
                    .map($name)
                    .ok_or_else(|| crate::Error::InvalidData(format!("not a GUID: {s:?}")))
            }
        }
    };
}

guid_type!(
    /// 128 random bits given to a message instance when it is delivered,
    /// appended or copied. MOVE keeps it; it lives in at most one mailbox of a
    /// user; POP3's UIDL is derived from it.
    MessageGuid
);
guid_type!(
    /// 128 random bits per mailbox; a rename keeps it.
    MailboxGuid
);

impl MessageGuid {
    /// A GUID for a Maildir file that carries none in its name (delivered by
    /// another program): derived from the file's unique name, so that a
    /// rebuilt index gives it the same GUID again.
    pub fn derived_from_name(unique: &str) -> MessageGuid {
        let h = blake3::hash(format!("cove maildir guid\0{unique}").as_bytes());
        let mut g = [0u8; 16];
        g.copy_from_slice(&h.as_bytes()[..16]);
        MessageGuid(g)
    }
}

/// An IMAP UID (RFC 3501 §2.3.1.1).
pub type Uid = u32;
/// A modification sequence (RFC 7162).
pub type ModSeq = u64;

/// IMAP system flags, as a bit set (\Recent is per session, not stored).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags(u8);

impl Flags {
    pub const SEEN: Flags = Flags(1);
    pub const ANSWERED: Flags = Flags(2);
    pub const FLAGGED: Flags = Flags(4);
    pub const DELETED: Flags = Flags(8);
    pub const DRAFT: Flags = Flags(16);

    /// Maildir info letters, in the ASCII order the Maildir spec asks for.
    const LETTERS: [(char, Flags); 5] = [
        ('D', Flags::DRAFT),
        ('F', Flags::FLAGGED),
        ('R', Flags::ANSWERED),
        ('S', Flags::SEEN),
        ('T', Flags::DELETED),
    ];

    pub const fn empty() -> Flags {
        Flags(0)
    }
    pub fn bits(self) -> u8 {
        self.0
    }
    pub fn from_bits(bits: u8) -> Flags {
        Flags(bits & 31)
    }
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn insert(&mut self, other: Flags) {
        self.0 |= other.0;
    }
    pub fn remove(&mut self, other: Flags) {
        self.0 &= !other.0;
    }

    /// The Maildir `:2,` letters for these flags.
    pub fn maildir_letters(self) -> String {
        Flags::LETTERS
            .iter()
            .filter(|(_, f)| self.contains(*f))
            .map(|(c, _)| *c)
            .collect()
    }

    /// Flags from Maildir info letters; unknown letters are returned apart so
    /// that they survive a rename.
    pub fn from_maildir_letters(letters: &str) -> (Flags, String) {
        let mut flags = Flags::empty();
        let mut other = String::new();
        for c in letters.chars() {
            match Flags::LETTERS.iter().find(|(l, _)| *l == c) {
                Some((_, f)) => flags.insert(*f),
                None => other.push(c),
            }
        }
        (flags, other)
    }

    /// IMAP names, e.g. `["\\Seen", "\\Flagged"]`.
    pub fn imap_names(self) -> Vec<&'static str> {
        [
            (Flags::ANSWERED, "\\Answered"),
            (Flags::FLAGGED, "\\Flagged"),
            (Flags::DELETED, "\\Deleted"),
            (Flags::SEEN, "\\Seen"),
            (Flags::DRAFT, "\\Draft"),
        ]
        .into_iter()
        .filter(|(f, _)| self.contains(*f))
        .map(|(_, n)| n)
        .collect()
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flags({})", self.imap_names().join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_hex_round_trip() {
        let g = MessageGuid([0xab; 16]);
        assert_eq!(g.to_hex().parse::<MessageGuid>().unwrap(), g);
        assert!("zz".parse::<MessageGuid>().is_err());
        let bytes: [u8; 16] = std::array::from_fn(|i| (i as u8) * 17);
        let g = MessageGuid(bytes);
        assert_eq!(g.to_hex(), "00112233445566778899aabbccddeeff");
        assert_eq!(
            "00112233445566778899AABBCCDDEEFF"
                .parse::<MessageGuid>()
                .unwrap(),
            g
        );
        for bad in [
            "00112233445566778899aabbccddeefg",
            "+0112233445566778899aabbccddeeff",
            "0011",
        ] {
            assert!(bad.parse::<MessageGuid>().is_err(), "{bad}");
        }
    }

    #[test]
    fn maildir_letters_are_sorted_and_round_trip() {
        let f = Flags::SEEN | Flags::DRAFT | Flags::DELETED;
        assert_eq!(f.maildir_letters(), "DST");
        assert_eq!(Flags::from_maildir_letters("DSTa"), (f, "a".to_string()));
    }

    #[test]
    fn derived_guid_is_stable() {
        assert_eq!(
            MessageGuid::derived_from_name("1700000000.P1Q2.host"),
            MessageGuid::derived_from_name("1700000000.P1Q2.host")
        );
    }
}
