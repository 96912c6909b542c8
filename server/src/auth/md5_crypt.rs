//! MD5-crypt (`$1$salt$hash`), the FreeBSD/glibc crypt(3) scheme Dovecot
//! calls `{MD5-CRYPT}`: only verified, for passwords imported from
//! Dovecot, which are rehashed to argon2id at the first good login.
//! RustCrypto publishes no md5-crypt crate; this is the published
//! algorithm (Poul-Henning Kamp's, 1994) over the `md-5` crate we already
//! use, in place of a dependency that brought an older RustCrypto stack.

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

const MAGIC: &str = "$1$";
/// crypt(3)'s base-64 alphabet.
const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Whether `password` matches `stored` (`$1$salt$hash`).
pub fn verify(password: &[u8], stored: &str) -> bool {
    let Some(rest) = stored.strip_prefix(MAGIC) else {
        return false;
    };
    let Some((salt, _)) = rest.split_once('$') else {
        return false;
    };
    // crypt(3) uses at most 8 characters of salt.
    let salt = &salt.as_bytes()[..salt.len().min(8)];
    let expected = hash(password, salt);
    let given = rest.rsplit('$').next().unwrap_or("");
    bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// The 22-character hash part of `$1$salt$hash`.
fn hash(password: &[u8], salt: &[u8]) -> String {
    let mut alt = Md5::new();
    alt.update(password);
    alt.update(salt);
    alt.update(password);
    let alt = alt.finalize();

    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(MAGIC.as_bytes());
    ctx.update(salt);
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alt[..n]);
        left -= n;
    }
    let mut i = password.len();
    while i != 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut last = ctx.finalize();

    for round in 0..1000 {
        let mut c = Md5::new();
        if round & 1 == 1 {
            c.update(password);
        } else {
            c.update(last);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(password);
        }
        if round & 1 == 1 {
            c.update(last);
        } else {
            c.update(password);
        }
        last = c.finalize();
    }

    let f = last;
    let mut out = String::with_capacity(22);
    let groups = [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)];
    for (a, b, c) in groups {
        to64(
            &mut out,
            u32::from(f[a]) << 16 | u32::from(f[b]) << 8 | u32::from(f[c]),
            4,
        );
    }
    to64(&mut out, u32::from(f[11]), 2);
    out
}

fn to64(out: &mut String, mut v: u32, n: usize) {
    for _ in 0..n {
        out.push(char::from(ITOA64[(v & 0x3f) as usize]));
        v >>= 6;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hashes() {
        // doveadm pw -s MD5-CRYPT -p 'Tr0ub4dor&3' (Dovecot 2.3.19.1).
        assert!(verify(b"Tr0ub4dor&3", "$1$p8rRPL0Q$iAn/zE1LAnZknkPsNlfm71"));
        assert!(!verify(
            b"Tr0ub4dor&4",
            "$1$p8rRPL0Q$iAn/zE1LAnZknkPsNlfm71"
        ));
        // `openssl passwd -1 -salt saltsalt password`, and with an empty
        // salt and password (OpenSSL 3.0).
        assert_eq!(hash(b"password", b"saltsalt"), "qjXMvbEw8oaL.CzflDtaK/");
        assert!(verify(b"", "$1$$qRPK7m23GJusamGpoGLby/"));
        // Passwords over 16 and 32 bytes, a non-ASCII one, a salt cut to
        // 8 characters (`openssl passwd -1 -salt longsaltover8 PW`).
        for (pw, stored) in [
            ("abcdefghijklmnopq", "$1$longsalt$Ywnq4E8Ne3EvlKBOcuMX30"),
            (
                "abcdefghijklmnopqrstuvwxyz0123456",
                "$1$longsalt$EDvAx4slsFxvFjJysHbvr/",
            ),
            ("pässwörd", "$1$longsalt$yE/wvjV8cXbdr6Ip0w5eC."),
        ] {
            assert!(verify(pw.as_bytes(), stored), "{pw}");
            let longer = stored.replace("longsalt", "longsaltover8");
            assert!(verify(pw.as_bytes(), &longer), "{pw}, salt over 8");
        }
        assert!(!verify(b"x", "$6$abc$def"));
        assert!(!verify(b"x", "$1$nodollar"));
    }
}
