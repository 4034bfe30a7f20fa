//! HA1 digests: `H(username ":" realm ":" password)` for MD5 and SHA-256 (RFC 7616 §3.4.2).
//!
//! The store keeps only these, never the password. Because the realm is part of the hash, a
//! domain change must re-derive them from the password (the operator and `kubepbx up` do).

use md5::Md5;
use sha2::{Digest, Sha256};

/// The HA1 of one user for every algorithm kubepbx offers, as lowercase hex.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ha1Set {
    /// `MD5(user:realm:password)`.
    pub md5: String,
    /// `SHA-256(user:realm:password)`.
    pub sha256: String,
}

impl std::fmt::Debug for Ha1Set {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // HA1s are password equivalents: never print them.
        f.write_str("Ha1Set(<redacted>)")
    }
}

impl Ha1Set {
    /// Derives both HA1s.
    pub fn derive(user: &str, realm: &str, password: &str) -> Self {
        Ha1Set {
            md5: hex_digest::<Md5>(user, realm, password),
            sha256: hex_digest::<Sha256>(user, realm, password),
        }
    }
}

fn hex_digest<D: Digest>(user: &str, realm: &str, password: &str) -> String {
    let mut h = D::new();
    h.update(user.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7616_mufasa() {
        // RFC 7616 §3.9.1 credentials; expected values from Python's hashlib.
        let h = Ha1Set::derive("Mufasa", "http-auth@example.org", "Circle of Life");
        assert_eq!(h.md5, "3d78807defe7de2157e2b0b6573a855f");
        assert_eq!(
            h.sha256,
            "7987c64c30e25f1b74be53f966b49b90f2808aa92faf9a00262392d7b4794232"
        );
        assert!(!format!("{h:?}").contains(&h.md5));
    }
}
