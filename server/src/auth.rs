//! Password hashing: argon2id for every password cove sets.

use anyhow::Context;
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use cove_store::PasswordHash;

/// A password in memory; `Debug` never prints it.
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Hash a new password with argon2id (the crate's default parameters).
pub fn hash_password(password: &Secret) -> anyhow::Result<PasswordHash> {
    let hash = Argon2::default()
        .hash_password(password.0.as_bytes())
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))
        .context("hash the password")?;
    Ok(PasswordHash(hash.to_string()))
}

/// Check a password against a stored hash. Blocking (argon2 takes tens of
/// milliseconds): run it off the reactor.
pub fn verify_password(password: &Secret, stored: &PasswordHash) -> bool {
    match argon2::password_hash::phc::PasswordHash::new(&stored.0) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.0.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::PasswordVerifier;

    fn verifies(password: &str, stored: &PasswordHash) -> bool {
        let parsed = argon2::password_hash::phc::PasswordHash::new(&stored.0).unwrap();
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    }

    #[test]
    fn hash_then_verify() {
        let h = hash_password(&Secret("correct horse".into())).unwrap();
        assert!(h.0.starts_with("$argon2id$"));
        assert!(verifies("correct horse", &h));
        assert!(!verifies("wrong", &h));
        assert_eq!(format!("{:?}", Secret("x".into())), "<redacted>");
    }
}
