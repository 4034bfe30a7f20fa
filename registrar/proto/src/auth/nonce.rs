//! Stateless nonces: issue time, sequence number and instance tag, authenticated by an HMAC over
//! those fields and the realm, so any replica can tell its own nonces from forged ones without
//! storing them.
//!
//! Layout: 35 bytes, base64url without padding, so 47 characters from `[A-Za-z0-9_-]` (safe in a
//! quoted string, never needs escaping):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | format version, `1` |
//! | 1 | 8 | issue time, unix seconds, big endian |
//! | 9 | 8 | sequence number of the issuing [`Authenticator`](super::Authenticator), big endian |
//! | 17 | 2 | instance tag of the issuing replica, big endian |
//! | 19 | 16 | first 16 bytes of HMAC-SHA256(secret, `"kubepbx-sip nonce v1\0"` ‖ bytes 0..19 ‖ realm) |
//!
//! The realm is last in the MAC input and everything before it has a fixed length, so the input
//! is unambiguous.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Length of an encoded nonce in characters.
pub(crate) const NONCE_CHARS: usize = 47;
const RAW_LEN: usize = 35;
const HEADER_LEN: usize = 19;
const VERSION: u8 = 1;
/// Domain separation, so the secret's MACs cannot be confused with any other use of it.
const LABEL: &[u8] = b"kubepbx-sip nonce v1\0";

/// The authenticated contents of a nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NonceFields {
    pub(crate) issued_at: u64,
    pub(crate) seq: u64,
    pub(crate) instance: u16,
}

/// Why a nonce is not one of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidNonceReason {
    /// Not 47 base64url characters of format version 1, e.g. a nonce of another server.
    Garbled,
    /// Well-formed but the MAC does not match: forged, issued for another realm, or issued by a
    /// replica with a different nonce secret.
    BadMac,
}

impl fmt::Display for InvalidNonceReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Garbled => "it is not in this PBX's nonce format (a nonce from another server?)",
            Self::BadMac => {
                "its signature does not match (forged, issued for another realm, \
                 or the replicas do not share the nonce secret)"
            }
        })
    }
}

/// Mints and opens nonces with one secret. Cheap to use: the keyed HMAC state is computed once and
/// cloned per nonce.
#[derive(Clone)]
pub(crate) struct NonceCodec {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for NonceCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NonceCodec { <secret redacted> }")
    }
}

impl NonceCodec {
    pub(crate) fn new(secret: &[u8; 32]) -> Self {
        // HMAC zero-pads keys shorter than the block size (RFC 2104), so this equals keying with
        // the 32 secret bytes, without a fallible `new_from_slice`.
        let mut key = [0u8; 64];
        for (k, s) in key.iter_mut().zip(secret) {
            *k = *s;
        }
        let mut mac = <Hmac<Sha256> as KeyInit>::new(&key.into());
        mac.update(LABEL);
        Self { mac }
    }

    fn tag(&self, header: &[u8; HEADER_LEN], realm: &str) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(header);
        mac.update(realm.as_bytes());
        mac
    }

    /// Appends the encoded nonce for `fields` bound to `realm` to `out`.
    pub(crate) fn mint_into(&self, realm: &str, fields: NonceFields, out: &mut String) {
        let mut raw = [0u8; RAW_LEN];
        let header = encode_header(fields);
        raw[..HEADER_LEN].copy_from_slice(&header);
        let tag = self.tag(&header, realm).finalize().into_bytes();
        for (dst, src) in raw[HEADER_LEN..].iter_mut().zip(tag.iter()) {
            *dst = *src;
        }
        URL_SAFE_NO_PAD.encode_string(raw, out);
    }

    /// Decodes `nonce` and checks its MAC for `realm` (in constant time).
    pub(crate) fn open(&self, realm: &str, nonce: &str) -> Result<NonceFields, InvalidNonceReason> {
        if nonce.len() != NONCE_CHARS {
            return Err(InvalidNonceReason::Garbled);
        }
        let mut raw = [0u8; RAW_LEN + 1];
        match URL_SAFE_NO_PAD.decode_slice(nonce, &mut raw) {
            Ok(RAW_LEN) => {}
            _ => return Err(InvalidNonceReason::Garbled),
        }
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&raw[..HEADER_LEN]);
        if header[0] != VERSION {
            return Err(InvalidNonceReason::Garbled);
        }
        self.tag(&header, realm)
            .verify_truncated_left(&raw[HEADER_LEN..RAW_LEN])
            .map_err(|_| InvalidNonceReason::BadMac)?;
        Ok(decode_header(&header))
    }
}

fn encode_header(f: NonceFields) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0] = VERSION;
    h[1..9].copy_from_slice(&f.issued_at.to_be_bytes());
    h[9..17].copy_from_slice(&f.seq.to_be_bytes());
    h[17..19].copy_from_slice(&f.instance.to_be_bytes());
    h
}

fn decode_header(h: &[u8; HEADER_LEN]) -> NonceFields {
    let mut issued_at = [0u8; 8];
    let mut seq = [0u8; 8];
    let mut instance = [0u8; 2];
    issued_at.copy_from_slice(&h[1..9]);
    seq.copy_from_slice(&h[9..17]);
    instance.copy_from_slice(&h[17..19]);
    NonceFields {
        issued_at: u64::from_be_bytes(issued_at),
        seq: u64::from_be_bytes(seq),
        instance: u16::from_be_bytes(instance),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: NonceFields = NonceFields {
        issued_at: 1_700_000_000,
        seq: 0x0123_4567_89ab_cdef,
        instance: 7,
    };

    fn mint(codec: &NonceCodec, realm: &str) -> String {
        let mut s = String::new();
        codec.mint_into(realm, FIELDS, &mut s);
        s
    }

    #[test]
    fn roundtrip() {
        let codec = NonceCodec::new(&[1; 32]);
        let n = mint(&codec, "pbx.example.com");
        assert_eq!(n.len(), NONCE_CHARS);
        assert!(
            n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(codec.open("pbx.example.com", &n), Ok(FIELDS));
    }

    #[test]
    fn bound_to_realm_and_secret() {
        let codec = NonceCodec::new(&[1; 32]);
        let n = mint(&codec, "a.example.com");
        assert_eq!(
            codec.open("b.example.com", &n),
            Err(InvalidNonceReason::BadMac)
        );
        assert_eq!(
            NonceCodec::new(&[2; 32]).open("a.example.com", &n),
            Err(InvalidNonceReason::BadMac)
        );
    }

    #[test]
    fn any_tampering_is_detected() {
        let codec = NonceCodec::new(&[3; 32]);
        let n = mint(&codec, "r");
        for i in 0..n.len() {
            for replacement in ['A', 'z', '0', '-', '+', '/', '='] {
                let mut t = n.clone().into_bytes();
                if t[i] == replacement as u8 {
                    continue;
                }
                t[i] = replacement as u8;
                let t = String::from_utf8(t).unwrap();
                assert!(codec.open("r", &t).is_err(), "{t}");
            }
        }
        let non_ascii = format!("{}a", "é".repeat(23));
        for garbled in ["", "abc", &n[1..], &format!("{n}A"), &non_ascii] {
            assert_eq!(
                codec.open("r", garbled),
                Err(InvalidNonceReason::Garbled),
                "{garbled}"
            );
        }
    }
}
