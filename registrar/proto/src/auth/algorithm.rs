//! Digest algorithms (RFC 7616 / RFC 8760 names), HA1 derivation and the `response` computation.
//!
//! Everything here is allocation-free except [`ha1`] and [`Ha1::from_password`], which produce the
//! owned strings that are stored per extension. Digests are returned as [`HexDigest`], a lowercase
//! hex string kept on the stack.

use std::fmt;

use md5::Md5;
use sha2::{Digest, Sha256};

/// A digest algorithm this module implements.
///
/// Only the two non-session variants are supported: `MD5` (RFC 2617/3261, what every phone speaks)
/// and `SHA-256` (RFC 7616/8760). `MD5-sess`, `SHA-256-sess`, `SHA-512-256` and `AKAv1-MD5` are
/// rejected by [`Algorithm::parse`] and reported as
/// [`AuthFailure::UnsupportedAlgorithm`](super::AuthFailure::UnsupportedAlgorithm).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `algorithm=MD5`, also the meaning of an absent `algorithm` parameter.
    Md5,
    /// `algorithm=SHA-256`.
    Sha256,
}

impl Algorithm {
    /// Parses an `algorithm` parameter value, ignoring ASCII case (Zoiper sends `md5`).
    pub fn parse(value: &str) -> Option<Self> {
        if value.eq_ignore_ascii_case("MD5") {
            Some(Self::Md5)
        } else if value.eq_ignore_ascii_case("SHA-256") {
            Some(Self::Sha256)
        } else {
            None
        }
    }

    /// The canonical spelling used in challenges: `MD5` or `SHA-256`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Sha256 => "SHA-256",
        }
    }

    /// Number of lowercase hex characters of a digest with this algorithm (32 or 64).
    pub fn hex_len(self) -> usize {
        match self {
            Self::Md5 => 32,
            Self::Sha256 => 64,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A lowercase hex digest (32 chars for MD5, 64 for SHA-256) held on the stack.
///
/// Its `Debug` output is redacted: digests computed here are HA1s and responses, which must not
/// end up in logs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HexDigest {
    buf: [u8; 64],
    len: u8,
}

impl HexDigest {
    /// The digest as a lowercase hex string.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// The digest as lowercase hex ASCII bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..usize::from(self.len)).unwrap_or_default()
    }
}

impl fmt::Debug for HexDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HexDigest(<{} hex chars redacted>)", self.len)
    }
}

/// The per-algorithm hash state, so callers need not be generic.
enum Hasher {
    Md5(Md5),
    Sha256(Sha256),
}

impl Hasher {
    fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Md5 => Self::Md5(Md5::new()),
            Algorithm::Sha256 => Self::Sha256(Sha256::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Self::Md5(h) => h.update(data),
            Self::Sha256(h) => h.update(data),
        }
    }

    fn finish(self) -> HexDigest {
        let mut out = HexDigest {
            buf: [0; 64],
            len: 0,
        };
        let written = match self {
            Self::Md5(h) => encode_hex(&h.finalize(), &mut out.buf),
            Self::Sha256(h) => encode_hex(&h.finalize(), &mut out.buf),
        };
        out.len = u8::try_from(written).unwrap_or(0);
        out
    }
}

/// Lowercase-hex encodes `bytes` into the front of `out`, returning the number of chars written.
fn encode_hex(bytes: &[u8], out: &mut [u8; 64]) -> usize {
    let n = bytes.len().saturating_mul(2);
    match out.get_mut(..n).map(|dst| hex::encode_to_slice(bytes, dst)) {
        Some(Ok(())) => n,
        _ => 0,
    }
}

/// `H(parts[0] ":" parts[1] ":" …)` as lowercase hex.
fn hash_joined(algorithm: Algorithm, parts: &[&[u8]]) -> HexDigest {
    let mut h = Hasher::new(algorithm);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(part);
    }
    h.finish()
}

/// `H(username ":" realm ":" password)` in lowercase hex (RFC 7616 §3.4.2, non-session algorithms).
pub fn ha1(algorithm: Algorithm, username: &str, realm: &str, password: &str) -> String {
    ha1_digest(algorithm, username, realm, password)
        .as_str()
        .to_owned()
}

fn ha1_digest(algorithm: Algorithm, username: &str, realm: &str, password: &str) -> HexDigest {
    hash_joined(
        algorithm,
        &[username.as_bytes(), realm.as_bytes(), password.as_bytes()],
    )
}

/// The stored secrets of one user in one realm: the store's HA1 set (lowercase hex per
/// algorithm; an empty string means "not stored", and verifying with that algorithm then fails
/// with [`AuthFailure::MissingHa1`](super::AuthFailure::MissingHa1)).
pub type Ha1 = kubepbx_api::ha1::Ha1Set;

/// The HA1 for `algorithm` (possibly empty).
pub fn ha1_for(ha1: &Ha1, algorithm: Algorithm) -> &str {
    match algorithm {
        Algorithm::Md5 => &ha1.md5,
        Algorithm::Sha256 => &ha1.sha256,
    }
}

/// The `qop=auth` inputs of a response: the client's `qop`, `nc` and `cnonce` strings, hashed
/// exactly as the client sent them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QopAuth<'a> {
    /// The `qop` value as sent (normally `auth`).
    pub qop: &'a str,
    /// The nonce count as sent, 8 hex digits.
    pub nc: &'a str,
    /// The client nonce.
    pub cnonce: &'a str,
}

/// Computes a digest `response` (RFC 7616 §3.4.1, RFC 3261 §22.4).
///
/// With `qop`: `H(HA1:nonce:nc:cnonce:qop:H(method:uri))`; without (RFC 2069 style, old desk
/// phones): `H(HA1:nonce:H(method:uri))`. `ha1` is used as given; it must be lowercase hex.
pub fn response(
    algorithm: Algorithm,
    ha1: &str,
    nonce: &str,
    method: &str,
    uri: &str,
    qop: Option<QopAuth<'_>>,
) -> HexDigest {
    let ha2 = hash_joined(algorithm, &[method.as_bytes(), uri.as_bytes()]);
    match qop {
        Some(q) => hash_joined(
            algorithm,
            &[
                ha1.as_bytes(),
                nonce.as_bytes(),
                q.nc.as_bytes(),
                q.cnonce.as_bytes(),
                q.qop.as_bytes(),
                ha2.as_bytes(),
            ],
        ),
        None => hash_joined(
            algorithm,
            &[ha1.as_bytes(), nonce.as_bytes(), ha2.as_bytes()],
        ),
    }
}

/// Constant-time (for equal lengths) comparison of two ASCII hex strings, ignoring ASCII case.
/// Lengths are public (they follow from the algorithm), so a length mismatch returns early.
pub(crate) fn ct_eq_hex(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut acc = 0u8;
    for (x, y) in a.iter().zip(b) {
        acc |= x.to_ascii_lowercase() ^ y.to_ascii_lowercase();
    }
    std::hint::black_box(acc) == 0
}

/// A stored HA1 for `algorithm`, validated (right length, hex) and lowercased; `None` if absent
/// or unusable.
pub(crate) fn stored_ha1(algorithm: Algorithm, s: &str) -> Option<HexDigest> {
    if !is_hex_of_len(s, algorithm.hex_len()) {
        return None;
    }
    let mut out = HexDigest {
        buf: [0; 64],
        len: u8::try_from(s.len()).ok()?,
    };
    for (dst, src) in out.buf.iter_mut().zip(s.bytes()) {
        *dst = src.to_ascii_lowercase();
    }
    Some(out)
}

/// True if `s` is exactly `len` hex digits (either case).
pub(crate) fn is_hex_of_len(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "Mufasa";
    const PASS: &str = "Circle of Life";
    const REALM: &str = "http-auth@example.org";
    const NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

    fn rfc7616(algorithm: Algorithm) -> HexDigest {
        let ha1 = ha1(algorithm, USER, REALM, PASS);
        let qop = QopAuth {
            qop: "auth",
            nc: "00000001",
            cnonce: CNONCE,
        };
        response(algorithm, &ha1, NONCE, "GET", "/dir/index.html", Some(qop))
    }

    #[test]
    fn rfc7616_md5_example() {
        assert_eq!(
            rfc7616(Algorithm::Md5).as_str(),
            "8ca523f5e9506fed4657c9700eebdbec"
        );
    }

    #[test]
    fn rfc7616_sha256_example() {
        assert_eq!(
            rfc7616(Algorithm::Sha256).as_str(),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn rfc2617_no_qop_example() {
        // RFC 2069 style response; expected value computed independently (Python hashlib):
        // MD5("939e7578ed9e3c518a452acee763bce9:dcd98b7102dd2f0e8b11d0f600bfb0c093:" + HA2).
        let ha1 = ha1(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        assert_eq!(ha1, "939e7578ed9e3c518a452acee763bce9");
        let r = response(
            Algorithm::Md5,
            &ha1,
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "GET",
            "/dir/index.html",
            None,
        );
        assert_eq!(r.as_str(), "670fd8c2df070c60b045671b8b24ff02");
    }

    #[test]
    fn rfc2617_section_3_5_example() {
        let ha1 = ha1(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        let qop = QopAuth {
            qop: "auth",
            nc: "00000001",
            cnonce: "0a4f113b",
        };
        let r = response(
            Algorithm::Md5,
            &ha1,
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "GET",
            "/dir/index.html",
            Some(qop),
        );
        assert_eq!(r.as_str(), "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn algorithm_names() {
        for (s, a) in [
            ("MD5", Algorithm::Md5),
            ("md5", Algorithm::Md5),
            ("Md5", Algorithm::Md5),
            ("SHA-256", Algorithm::Sha256),
            ("sha-256", Algorithm::Sha256),
        ] {
            assert_eq!(Algorithm::parse(s), Some(a), "{s}");
        }
        for s in [
            "MD5-sess",
            "SHA-256-sess",
            "SHA-512-256",
            "AKAv1-MD5",
            "SHA256",
            "",
        ] {
            assert_eq!(Algorithm::parse(s), None, "{s}");
        }
    }

    #[test]
    fn debug_output_is_redacted() {
        let h = Ha1::derive("1001", "pbx", "secret");
        let dbg = format!("{h:?} {:?}", rfc7616(Algorithm::Md5));
        assert!(!dbg.contains(&h.md5) && !dbg.contains(&h.sha256));
        assert!(!dbg.contains("8ca523f5"));
    }

    #[test]
    fn ct_eq_hex_ignores_case_and_checks_length() {
        assert!(ct_eq_hex(b"abcdef01", b"ABCDEF01"));
        assert!(!ct_eq_hex(b"abcdef01", b"abcdef02"));
        assert!(!ct_eq_hex(b"abcdef01", b"abcdef0"));
    }
}
