//! Dovecot's password schemes, so users migrated from Dovecot keep their
//! passwords.
//!
//! The problem: a Dovecot passwd-file holds hashes in a dozen formats
//! (`{SCHEME}value`), and cove must accept every user's password on the
//! first login after the migration without ever knowing the password
//! beforehand. So cove stores the imported hash as it came, verifies it
//! with the scheme's own algorithm at login, and on the first good login
//! replaces it with an argon2id hash of its own (crate::auth): a legacy
//! hash is used at most once per user.
//!
//! Invariants:
//! - A legacy hash is stored in its Dovecot form, `{SCHEME}value` (scheme
//!   name upper-cased, an explicit `.HEX`/`.B64` encoding kept); cove's own
//!   hashes are PHC strings and never start with `{`. That first byte is
//!   how a stored hash is told apart.
//! - [`LegacyHash::parse`] accepts only what [`LegacyHash::verify`] can
//!   check: an import refuses anything else up front (naming the scheme),
//!   rather than storing a hash no password can ever match.
//! - Comparisons of digests are constant-time (`subtle`); the crypt(3) and
//!   argon2 crates compare in constant time themselves.
//!
//! Encodings follow Dovecot's `password_decode()` (src/auth/password-scheme.c):
//! a `.HEX`, `.B64` or `.BASE64` suffix on the scheme name forces the
//! encoding; without one, a fixed-length digest (PLAIN-MD5, SHA...) is read
//! as hex when the value is exactly twice the digest length and as base64
//! otherwise (hex that does not decode falls back to base64), and salted
//! digests (SSHA...) are base64 of `digest ‖ salt`.
//!
//! Rejected alternatives: verifying through the system's crypt(3) (libc
//! dependent; musl lacks bcrypt) or calling `doveadm pw -t` (Dovecot would
//! have to stay installed). DES crypt, CRAM-MD5, DIGEST-MD5, SCRAM and
//! PBKDF2 are not accepted: they are rare, and the import names them.

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use sha2::Digest;
use subtle::ConstantTimeEq;

/// A Dovecot password scheme cove can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `{PLAIN}`, `{CLEARTEXT}`: the password itself.
    Plain,
    /// `{PLAIN-MD5}` (hex by default), `{LDAP-MD5}` (base64): MD5(password).
    PlainMd5,
    /// `{SHA}`, `{SHA1}`: SHA-1(password), base64.
    Sha1,
    /// `{SHA256}`, `{SHA512}`: unsalted SHA-2, base64.
    Sha256,
    Sha512,
    /// `{SMD5}`, `{SSHA}`, `{SSHA256}`, `{SSHA512}`: base64(H(password ‖
    /// salt) ‖ salt).
    Smd5,
    Ssha,
    Ssha256,
    Ssha512,
    /// `{MD5-CRYPT}`: `$1$salt$hash`.
    Md5Crypt,
    /// `{SHA256-CRYPT}`, `{SHA512-CRYPT}`: `$5$...`, `$6$...`.
    Sha256Crypt,
    Sha512Crypt,
    /// `{BLF-CRYPT}`: bcrypt, `$2y$NN$...`.
    BlfCrypt,
    /// `{CRYPT}`: whatever crypt(3) made; cove accepts the `$1$`, `$5$`,
    /// `$6$` and `$2?$` forms (not DES).
    Crypt,
    /// `{ARGON2ID}`, `{ARGON2I}`: PHC strings.
    Argon2id,
    Argon2i,
}

/// How a digest is written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// Not encoded (PLAIN, crypt strings, PHC strings).
    None,
    Hex,
    Base64,
}

/// How a scheme's value is checked.
enum Kind {
    Plain,
    /// An unsalted digest of this many bytes.
    Digest(usize),
    /// A salted digest: the digest of this many bytes, then the salt.
    Salted(usize),
    /// A crypt(3) string.
    CryptString,
    /// An argon2 PHC string of this algorithm.
    Phc(&'static str),
}

impl Scheme {
    /// Dovecot's names for the scheme (the first one is how cove writes it).
    fn names(self) -> &'static [&'static str] {
        match self {
            Scheme::Plain => &["PLAIN", "CLEARTEXT"],
            Scheme::PlainMd5 => &["PLAIN-MD5", "LDAP-MD5"],
            Scheme::Sha1 => &["SHA", "SHA1"],
            Scheme::Sha256 => &["SHA256"],
            Scheme::Sha512 => &["SHA512"],
            Scheme::Smd5 => &["SMD5"],
            Scheme::Ssha => &["SSHA"],
            Scheme::Ssha256 => &["SSHA256"],
            Scheme::Ssha512 => &["SSHA512"],
            Scheme::Md5Crypt => &["MD5-CRYPT"],
            Scheme::Sha256Crypt => &["SHA256-CRYPT"],
            Scheme::Sha512Crypt => &["SHA512-CRYPT"],
            Scheme::BlfCrypt => &["BLF-CRYPT"],
            Scheme::Crypt => &["CRYPT"],
            Scheme::Argon2id => &["ARGON2ID"],
            Scheme::Argon2i => &["ARGON2I"],
        }
    }

    const ALL: [Scheme; 16] = [
        Scheme::Plain,
        Scheme::PlainMd5,
        Scheme::Sha1,
        Scheme::Sha256,
        Scheme::Sha512,
        Scheme::Smd5,
        Scheme::Ssha,
        Scheme::Ssha256,
        Scheme::Ssha512,
        Scheme::Md5Crypt,
        Scheme::Sha256Crypt,
        Scheme::Sha512Crypt,
        Scheme::BlfCrypt,
        Scheme::Crypt,
        Scheme::Argon2id,
        Scheme::Argon2i,
    ];

    /// The scheme called `name` (any case), if cove knows it.
    fn lookup(name: &str) -> Option<Scheme> {
        Scheme::ALL
            .into_iter()
            .find(|s| s.names().iter().any(|n| n.eq_ignore_ascii_case(name)))
    }

    pub fn name(self) -> &'static str {
        self.names()[0]
    }

    fn kind(self) -> Kind {
        match self {
            Scheme::Plain => Kind::Plain,
            Scheme::PlainMd5 => Kind::Digest(16),
            Scheme::Sha1 => Kind::Digest(20),
            Scheme::Sha256 => Kind::Digest(32),
            Scheme::Sha512 => Kind::Digest(64),
            Scheme::Smd5 => Kind::Salted(16),
            Scheme::Ssha => Kind::Salted(20),
            Scheme::Ssha256 => Kind::Salted(32),
            Scheme::Ssha512 => Kind::Salted(64),
            Scheme::Md5Crypt
            | Scheme::Sha256Crypt
            | Scheme::Sha512Crypt
            | Scheme::BlfCrypt
            | Scheme::Crypt => Kind::CryptString,
            Scheme::Argon2id => Kind::Phc("argon2id"),
            Scheme::Argon2i => Kind::Phc("argon2i"),
        }
    }

    /// Dovecot's default encoding for the scheme.
    fn default_encoding(self, name: &str) -> Encoding {
        match self.kind() {
            Kind::Plain | Kind::CryptString | Kind::Phc(_) => Encoding::None,
            // PLAIN-MD5 is hex by default, its alias LDAP-MD5 base64.
            Kind::Digest(_) if name.eq_ignore_ascii_case("PLAIN-MD5") => Encoding::Hex,
            Kind::Digest(_) | Kind::Salted(_) => Encoding::Base64,
        }
    }

    /// H(parts...) with the scheme's digest.
    fn digest(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut d = D::new();
            for p in parts {
                d.update(p);
            }
            d.finalize().to_vec()
        }
        match self {
            Scheme::PlainMd5 | Scheme::Smd5 => run::<md5::Md5>(parts),
            Scheme::Sha1 | Scheme::Ssha => run::<sha1::Sha1>(parts),
            Scheme::Sha256 | Scheme::Ssha256 => run::<sha2::Sha256>(parts),
            Scheme::Sha512 | Scheme::Ssha512 => run::<sha2::Sha512>(parts),
            _ => Vec::new(),
        }
    }
}

/// Why a stored password cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemeError {
    #[error("no {{SCHEME}} prefix (cove does not guess Dovecot's default_pass_scheme)")]
    NoScheme,
    #[error("unknown password scheme {{{0}}}")]
    Unknown(String),
    #[error("malformed {{{scheme}}} hash: {why}")]
    Malformed { scheme: String, why: &'static str },
}

/// A password hash in one of Dovecot's schemes. Its `Debug` hides the value.
#[derive(Clone, PartialEq, Eq)]
pub struct LegacyHash {
    scheme: Scheme,
    /// The scheme name as cove writes it back, with an explicit encoding
    /// suffix if there was one (`PLAIN-MD5.B64`).
    label: String,
    encoding: Encoding,
    /// Whether the encoding was given (`.HEX`) rather than Dovecot's default.
    explicit: bool,
    value: String,
}

impl std::fmt::Debug for LegacyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LegacyHash({{{}}}<redacted>)", self.label)
    }
}

impl LegacyHash {
    /// Parse a password as Dovecot stores it: `{SCHEME}value`, or a bare
    /// crypt(3) string (`$1$`, `$5$`, `$6$`, `$2y$`), which Dovecot reads
    /// with its default scheme CRYPT. The value is checked to be well
    /// formed for its scheme.
    pub fn parse(stored: &str) -> Result<LegacyHash, SchemeError> {
        let (name, value) = match stored.strip_prefix('{') {
            Some(rest) => rest
                .split_once('}')
                .ok_or_else(|| SchemeError::Unknown(rest.to_string()))?,
            None if crypt_prefix(stored).is_some() => ("CRYPT", stored),
            None => return Err(SchemeError::NoScheme),
        };
        let (base, suffix) = match name.split_once('.') {
            Some((b, s)) => (b, Some(s)),
            None => (name, None),
        };
        let unknown = || SchemeError::Unknown(name.to_string());
        let scheme = Scheme::lookup(base).ok_or_else(unknown)?;
        let (encoding, explicit) = match suffix {
            None => (scheme.default_encoding(base), false),
            Some(s) if s.eq_ignore_ascii_case("HEX") => (Encoding::Hex, true),
            Some(s) if s.eq_ignore_ascii_case("B64") || s.eq_ignore_ascii_case("BASE64") => {
                (Encoding::Base64, true)
            }
            Some(_) => return Err(unknown()),
        };
        // Dovecot decodes a crypt or PHC string out of hex or base64 too,
        // but nobody writes them so: refuse rather than guess.
        if explicit && matches!(scheme.kind(), Kind::CryptString | Kind::Phc(_)) {
            return Err(unknown());
        }
        let mut label = base.to_ascii_uppercase();
        if let Some(s) = suffix {
            label.push('.');
            label.push_str(&s.to_ascii_uppercase());
        }
        let hash = LegacyHash {
            scheme,
            label,
            encoding,
            explicit,
            value: value.to_string(),
        };
        hash.check_form()?;
        Ok(hash)
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The scheme's name as it will be stored (`SHA512-CRYPT`, `PLAIN-MD5.B64`).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The password itself, for `{PLAIN}` (which cove hashes at once
    /// rather than store it).
    pub fn plaintext(&self) -> Option<Vec<u8>> {
        match self.scheme {
            Scheme::Plain => self.decoded(),
            _ => None,
        }
    }

    /// The stored form, `{SCHEME}value`.
    pub fn to_stored(&self) -> String {
        format!("{{{}}}{}", self.label, self.value)
    }

    fn malformed(&self, why: &'static str) -> SchemeError {
        SchemeError::Malformed {
            scheme: self.label.clone(),
            why,
        }
    }

    /// Whether the value can be checked at all.
    fn check_form(&self) -> Result<(), SchemeError> {
        match self.scheme.kind() {
            Kind::Plain => {
                if self.decoded().is_none() {
                    return Err(self.malformed("the encoded password does not decode"));
                }
            }
            Kind::Digest(len) => match self.decoded() {
                Some(raw) if raw.len() == len => {}
                Some(_) => return Err(self.malformed("the digest has the wrong length")),
                None => return Err(self.malformed("the digest does not decode")),
            },
            Kind::Salted(len) => match self.decoded() {
                Some(raw) if raw.len() > len => {}
                Some(_) => return Err(self.malformed("no salt after the digest")),
                None => return Err(self.malformed("the digest does not decode")),
            },
            Kind::CryptString => {
                let Some(prefix) = crypt_prefix(&self.value) else {
                    return Err(self.malformed(
                        "not a $1$, $5$, $6$ or $2y$ crypt string (DES crypt is not supported)",
                    ));
                };
                let wanted = match self.scheme {
                    Scheme::Md5Crypt => Some(CryptPrefix::Md5),
                    Scheme::Sha256Crypt => Some(CryptPrefix::Sha256),
                    Scheme::Sha512Crypt => Some(CryptPrefix::Sha512),
                    Scheme::BlfCrypt => Some(CryptPrefix::Bcrypt),
                    _ => None,
                };
                if wanted.is_some_and(|w| w != prefix) {
                    return Err(self.malformed("the crypt string is of another scheme"));
                }
                if !crypt_well_formed(prefix, &self.value) {
                    return Err(self.malformed("the crypt string does not parse"));
                }
            }
            Kind::Phc(algorithm) => {
                let parsed = argon2::password_hash::phc::PasswordHash::new(&self.value)
                    .map_err(|_| self.malformed("the PHC string does not parse"))?;
                if parsed.algorithm.as_str() != algorithm || parsed.hash.is_none() {
                    return Err(self.malformed("not an argon2 hash of this variant"));
                }
                let params = argon2::Params::try_from(&parsed)
                    .map_err(|_| self.malformed("the argon2 parameters are invalid"))?;
                if params.m_cost() > MAX_ARGON2_M_KIB
                    || params.t_cost() > MAX_ARGON2_T
                    || params.p_cost() > MAX_ARGON2_P
                {
                    return Err(self.malformed(
                        "argon2 cost too high for a login (m above 1 GiB, t above 32 or p above 16)",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The value decoded per its encoding (Dovecot's `password_decode`).
    fn decoded(&self) -> Option<Vec<u8>> {
        let value = self.value.as_str();
        match (self.encoding, self.scheme.kind()) {
            (Encoding::None, _) => Some(value.as_bytes().to_vec()),
            (Encoding::Hex, _) if self.explicit => hex::decode(value).ok(),
            (Encoding::Base64, _) if self.explicit => base64_decode(value),
            // No suffix: a digest of fixed length is hex when the length
            // says so, else base64 (hex that fails to decode included).
            (_, Kind::Digest(len)) => {
                if value.len() == len * 2
                    && let Ok(raw) = hex::decode(value)
                {
                    return Some(raw);
                }
                base64_decode(value)
            }
            (Encoding::Hex, _) => hex::decode(value).ok(),
            (Encoding::Base64, _) => base64_decode(value),
        }
    }

    /// Whether `password` matches. Blocking for the slow schemes (crypt,
    /// argon2): run it off the reactor. A hash [`parse`](LegacyHash::parse)
    /// would refuse (cost too high included) matches nothing.
    pub fn verify(&self, password: &[u8]) -> bool {
        if self.check_form().is_err() {
            return false;
        }
        match self.scheme.kind() {
            Kind::Plain => self
                .decoded()
                .is_some_and(|raw| bool::from(raw.as_slice().ct_eq(password))),
            Kind::Digest(len) => match self.decoded() {
                Some(raw) if raw.len() == len => {
                    bool::from(self.scheme.digest(&[password]).as_slice().ct_eq(&raw))
                }
                _ => false,
            },
            Kind::Salted(len) => match self.decoded() {
                Some(raw) if raw.len() > len => {
                    let (expected, salt) = raw.split_at(len);
                    bool::from(
                        self.scheme
                            .digest(&[password, salt])
                            .as_slice()
                            .ct_eq(expected),
                    )
                }
                _ => false,
            },
            Kind::CryptString => verify_crypt(password, &self.value),
            Kind::Phc(_) => super::verify_argon2(password, &self.value),
        }
    }
}

/// Base64 as Dovecot reads it: the standard alphabet, padding optional.
fn base64_decode(value: &str) -> Option<Vec<u8>> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    LENIENT.decode(value.trim()).ok()
}

/// Costs above these are refused: one login must not hold a password
/// thread for minutes or take gigabytes (Dovecot's defaults are bcrypt
/// cost 5, 5,000 SHA-crypt rounds, argon2 m=64 MiB t=3).
const MAX_BCRYPT_COST: u32 = 16;
const MAX_SHA_CRYPT_ROUNDS: u32 = 1_000_000;
const MAX_ARGON2_M_KIB: u32 = 1024 * 1024;
const MAX_ARGON2_T: u32 = 32;
const MAX_ARGON2_P: u32 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CryptPrefix {
    Md5,
    Sha256,
    Sha512,
    Bcrypt,
}

fn crypt_prefix(value: &str) -> Option<CryptPrefix> {
    if value.starts_with("$1$") {
        Some(CryptPrefix::Md5)
    } else if value.starts_with("$5$") {
        Some(CryptPrefix::Sha256)
    } else if value.starts_with("$6$") {
        Some(CryptPrefix::Sha512)
    } else if ["$2a$", "$2b$", "$2x$", "$2y$"]
        .iter()
        .any(|p| value.starts_with(p))
    {
        Some(CryptPrefix::Bcrypt)
    } else {
        None
    }
}

/// Crypt's base64 alphabet (`./0-9A-Za-z`).
fn crypt64(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
}

/// The shape of a crypt string, checked without running the (slow) hash.
fn crypt_well_formed(prefix: CryptPrefix, value: &str) -> bool {
    match prefix {
        // $1$salt$hash: a salt of up to 8 characters, 22 of hash.
        CryptPrefix::Md5 => {
            let mut f = value["$1$".len()..].split('$');
            match (f.next(), f.next(), f.next()) {
                (Some(salt), Some(hash), None) => {
                    salt.len() <= 8 && !salt.contains(':') && hash.len() == 22 && crypt64(hash)
                }
                _ => false,
            }
        }
        // $5$[rounds=N$]salt$hash: 43 (SHA-256) or 86 (SHA-512) of hash.
        CryptPrefix::Sha256 | CryptPrefix::Sha512 => {
            let want = if prefix == CryptPrefix::Sha256 {
                43
            } else {
                86
            };
            let mut fields: Vec<&str> = value[3..].split('$').collect();
            if fields.first().is_some_and(|f| f.starts_with("rounds=")) {
                let rounds = fields.remove(0)["rounds=".len()..].parse::<u32>();
                if !rounds.is_ok_and(|r| r <= MAX_SHA_CRYPT_ROUNDS) {
                    return false;
                }
            }
            matches!(fields.as_slice(), [salt, hash]
                if salt.len() <= 16 && hash.len() == want && crypt64(hash))
        }
        // $2y$NN$ then 53 characters of salt and hash.
        CryptPrefix::Bcrypt => {
            value.len() == 60
                && value.is_ascii()
                && value[4..6]
                    .parse::<u32>()
                    .is_ok_and(|c| (4..=MAX_BCRYPT_COST).contains(&c))
                && &value[6..7] == "$"
                && crypt64(&value[7..])
        }
    }
}

/// Check a password against a crypt(3) string (constant-time comparison in
/// each crate).
fn verify_crypt(password: &[u8], value: &str) -> bool {
    use argon2::PasswordVerifier;
    match crypt_prefix(value) {
        Some(CryptPrefix::Md5) => super::md5_crypt::verify(password, value),
        Some(CryptPrefix::Sha256 | CryptPrefix::Sha512) => sha_crypt::ShaCrypt::default()
            .verify_password(password, value)
            .is_ok(),
        Some(CryptPrefix::Bcrypt) => bcrypt::verify(password, value).unwrap_or(false),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &str = "Tr0ub4dor&3";

    /// Made by Dovecot 2.3.19.1: `doveadm pw -s SCHEME -p 'Tr0ub4dor&3'`.
    const DOVEADM: &[&str] = &[
        "{PLAIN}Tr0ub4dor&3",
        "{CLEARTEXT}Tr0ub4dor&3",
        "{PLAIN-MD5}4ece57a61323b52ccffdbef021956754",
        "{PLAIN-MD5.B64}Ts5XphMjtSzP/b7wIZVnVA==",
        "{LDAP-MD5}Ts5XphMjtSzP/b7wIZVnVA==",
        "{MD5-CRYPT}$1$p8rRPL0Q$iAn/zE1LAnZknkPsNlfm71",
        "{SHA256-CRYPT}$5$eLg0Jn10M3MD5Y1o$1w.feCRlC5ikkSCroU/FGYT8PmbuCsilIWz3uMVa0x9",
        "{SHA256-CRYPT}$5$rounds=1000$C7LQVE0EE6Kl34at$4yOFkXeD5SYr6gJr6e6lGuigUdjXdMTKP6x2cQxsyd6",
        "{SHA512-CRYPT}$6$FnocuF9TIKJ33XP/$cBjGcuXH5DAjbWuyagTH/5muZFM76LXCd.XHQBmP.JfvPej7YJz8coJBXetcIl9EdceJ59DdwP2i07XWP9aiH0",
        "{BLF-CRYPT}$2y$05$hKamrjLZVtTDbvyTpAbUMuirgFWTyp.VOy219TNFW6I28uUmXAlFm",
        "{CRYPT}$2y$05$Ui.OxwP86VK1VK8/0VNZHeGhMt5LhJ4/gxAmuYGVbwoMUenPknQom",
        "{SHA}h0Vy56WuaklGamrFeLmK26eMaqY=",
        "{SHA.HEX}874572e7a5ae6a49466a6ac578b98adba78c6aa6",
        "{SHA1}h0Vy56WuaklGamrFeLmK26eMaqY=",
        "{SHA256}SEhuFRToQjRv9AWx5F9EBZroJhnyMG+Z0JQNyzhukfc=",
        "{SHA512}xyu2IccEDPS2R0BjqaeXJpDiUvNa2+fPr/Wx7iMW7+c4LnI9QeATor+8M8MAfFDFhH0hqInM6DhTbqxyeAjeQA==",
        "{SMD5}RSCaxZ1QHwU3A/TF/0M/VzrTa18=",
        "{SSHA}cdpBe1ldzPRM62HS1VzNRtZe8h7MnkD5",
        "{SSHA256}bGiAUZeDjNGhMSA4o9RYzbKyVy+0QhEivtfCCc3aOUqP0HG0",
        "{SSHA512}OLk86UV0BfhRV/vlgyQaIPMboM3mlO+BYZWNxmHSVLn1jL7Ey3doMt8Gj0dDePUFEPPlHUoRZaX6S+m2y44NrejSLMs=",
        "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$Z04Am5PaRE7dpb+jZLUVqQ$zjA7lyhJENz4JZy3mkMrDrW5ueKFU3BMN6A+uKBiaA4",
        "{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$iXO7Vmbpz3e9U44ufF9b6g$AnR2M5Yg3tNw3ifsQ7d76LoIwXou5dFbxOdqcJJ22bM",
    ];

    #[test]
    fn every_doveadm_hash_takes_the_password_and_refuses_others() {
        for stored in DOVEADM {
            let h = LegacyHash::parse(stored).unwrap_or_else(|e| panic!("{stored}: {e}"));
            assert!(h.verify(PW.as_bytes()), "{stored} refused the password");
            assert!(!h.verify(b"Tr0ub4dor&4"), "{stored} took a wrong password");
            assert!(!h.verify(b""), "{stored} took the empty password");
            assert!(
                !h.verify(b"Tr0ub4dor&3 "),
                "{stored} took a longer password"
            );
        }
    }

    #[test]
    fn non_ascii_passwords_are_hashed_as_utf8() {
        // doveadm pw -s SHA512-CRYPT -p 'pässwörd'
        let h = LegacyHash::parse("{SHA512-CRYPT}$6$8ILWVghhgWYIeBHm$LMtgW9uJKmg7VwkedgR2MKTQSZBhBAvU./eKPMO/pLZDqDaJQ02FAMc7a8a9BKEV9iO0M4XE9XJxCCRiSsOQe/").unwrap();
        assert!(h.verify("pässwörd".as_bytes()));
        assert!(!h.verify(b"passwoerd"));
    }

    #[test]
    fn scheme_names_are_case_insensitive_and_normalised() {
        let h = LegacyHash::parse("{plain-md5.b64}Ts5XphMjtSzP/b7wIZVnVA==").unwrap();
        assert_eq!(h.scheme(), Scheme::PlainMd5);
        assert_eq!(h.to_stored(), "{PLAIN-MD5.B64}Ts5XphMjtSzP/b7wIZVnVA==");
        assert!(h.verify(PW.as_bytes()));
        let h = LegacyHash::parse("{ssha}cdpBe1ldzPRM62HS1VzNRtZe8h7MnkD5").unwrap();
        assert_eq!(h.to_stored(), "{SSHA}cdpBe1ldzPRM62HS1VzNRtZe8h7MnkD5");
    }

    #[test]
    fn default_encodings_are_guessed_as_dovecot_does() {
        // PLAIN-MD5 in base64 without a suffix, SHA in hex without one.
        for stored in [
            "{PLAIN-MD5}Ts5XphMjtSzP/b7wIZVnVA==",
            "{SHA}874572e7a5ae6a49466a6ac578b98adba78c6aa6",
            "{SHA}h0Vy56WuaklGamrFeLmK26eMaqY",
        ] {
            assert!(
                LegacyHash::parse(stored).unwrap().verify(PW.as_bytes()),
                "{stored}"
            );
        }
    }

    #[test]
    fn a_bare_crypt_string_is_crypt() {
        let h = LegacyHash::parse("$1$p8rRPL0Q$iAn/zE1LAnZknkPsNlfm71").unwrap();
        assert_eq!(h.scheme(), Scheme::Crypt);
        assert!(h.verify(PW.as_bytes()));
        assert_eq!(
            LegacyHash::parse("x8Jd0Xk3tqwD2").unwrap_err(),
            SchemeError::NoScheme
        );
    }

    #[test]
    fn unknown_and_malformed_hashes_are_refused_with_the_scheme() {
        for (stored, scheme) in [
            (
                "{CRAM-MD5}e02d374fde0dc75a17a557039a3a5338c7743304777dccd376f332bee68d2cf6",
                "CRAM-MD5",
            ),
            ("{PBKDF2}$1$abc$5000$00", "PBKDF2"),
            ("{NOPE}x", "NOPE"),
            ("{SHA.ROT13}x", "SHA.ROT13"),
            ("{MD5-CRYPT.HEX}00", "MD5-CRYPT.HEX"),
            ("{SHA", "SHA"),
        ] {
            assert_eq!(
                LegacyHash::parse(stored).unwrap_err(),
                SchemeError::Unknown(scheme.into()),
                "{stored}"
            );
        }
        for stored in [
            "{SHA}AAAA",
            "{SSHA}h0Vy56WuaklGamrFeLmK26eMaqY=",
            "{PLAIN-MD5}zz",
            "{MD5-CRYPT}$6$FnocuF9TIKJ33XP/$cBjGcuXH5DAjbWuyagTH/5muZFM76LXCd.XHQBmP.JfvPej7YJz8coJBXetcIl9EdceJ59DdwP2i07XWP9aiH0",
            "{SHA512-CRYPT}$6$salt$short",
            "{BLF-CRYPT}$2y$05$short",
            "{CRYPT}x8Jd0Xk3tqwD2",
            "{ARGON2ID}$argon2i$v=19$m=32768,t=4,p=1$iXO7Vmbpz3e9U44ufF9b6g$AnR2M5Yg3tNw3ifsQ7d76LoIwXou5dFbxOdqcJJ22bM",
            "{ARGON2I}nonsense",
            // Costs no login should pay.
            "{BLF-CRYPT}$2y$31$hKamrjLZVtTDbvyTpAbUMuirgFWTyp.VOy219TNFW6I28uUmXAlFm",
            "{SHA256-CRYPT}$5$rounds=999999999$C7LQVE0EE6Kl34at$4yOFkXeD5SYr6gJr6e6lGuigUdjXdMTKP6x2cQxsyd6",
            "{ARGON2ID}$argon2id$v=19$m=4194304,t=3,p=1$Z04Am5PaRE7dpb+jZLUVqQ$zjA7lyhJENz4JZy3mkMrDrW5ueKFU3BMN6A+uKBiaA4",
            "{ARGON2ID}$argon2id$v=19$m=65536,t=1000,p=1$Z04Am5PaRE7dpb+jZLUVqQ$zjA7lyhJENz4JZy3mkMrDrW5ueKFU3BMN6A+uKBiaA4",
            // Not ASCII where bytes are sliced.
            "{BLF-CRYPT}$2y$0é$hKamrjLZVtTDbvyTpAbUMuirgFWTyp.VOy219TNFW6I28uUmXAlF",
            "{MD5-CRYPT}$1$p8rRPL0é$iAn/zE1LAnZknkPsNlfm71",
        ] {
            assert!(
                matches!(
                    LegacyHash::parse(stored),
                    Err(SchemeError::Malformed { .. })
                ),
                "{stored}"
            );
        }
        assert_eq!(
            SchemeError::Unknown("CRAM-MD5".into()).to_string(),
            "unknown password scheme {CRAM-MD5}"
        );
    }

    #[test]
    fn debug_hides_the_value() {
        let h = LegacyHash::parse("{PLAIN}Tr0ub4dor&3").unwrap();
        assert_eq!(format!("{h:?}"), "LegacyHash({PLAIN}<redacted>)");
    }
}
