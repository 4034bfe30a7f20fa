//! `WWW-Authenticate` / `Proxy-Authenticate` header values: two challenges, SHA-256 first and
//! MD5 last, sharing one fresh nonce.
//!
//! Order matters: RFC 8760 clients pick the first algorithm they support, while JsSIP and several
//! phones only read the last challenge and only know MD5. Each value has the conventional shape
//! `Digest realm="pbx.example.com", nonce="…", qop="auth", algorithm=SHA-256[, stale=true]`.

use super::algorithm::Algorithm;
use super::authenticator::Authenticator;
use super::nonce::NONCE_CHARS;

impl Authenticator {
    /// Header values for `WWW-Authenticate` (401) or `Proxy-Authenticate` (407): exactly two,
    /// `algorithm=SHA-256` first and `algorithm=MD5` last, both with `realm`, `qop="auth"`, the
    /// same fresh nonce, and `stale=true` when `stale` is set (after
    /// [`AuthFailure::rechallenge_stale`](super::AuthFailure::rechallenge_stale)).
    ///
    /// `realm` should be printable text; `"` and `\` are escaped and control characters (which
    /// could inject header lines) are dropped, which then makes the realm echoed by the phone
    /// differ from the configured one.
    pub fn challenge(&mut self, realm: &str, stale: bool, now_unix_secs: u64) -> [String; 2] {
        let mut nonce = String::with_capacity(NONCE_CHARS);
        self.mint_nonce_into(realm, now_unix_secs, &mut nonce);
        [
            challenge_value(realm, &nonce, Algorithm::Sha256, stale),
            challenge_value(realm, &nonce, Algorithm::Md5, stale),
        ]
    }
}

/// One challenge header value.
fn challenge_value(realm: &str, nonce: &str, algorithm: Algorithm, stale: bool) -> String {
    let mut out = String::with_capacity(realm.len() + nonce.len() + 72);
    out.push_str("Digest realm=\"");
    for c in realm.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push_str("\", nonce=\"");
    out.push_str(nonce);
    out.push_str("\", qop=\"auth\", algorithm=");
    out.push_str(algorithm.as_str());
    if stale {
        out.push_str(", stale=true");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape() {
        assert_eq!(
            challenge_value("pbx.example.com", "N", Algorithm::Sha256, false),
            "Digest realm=\"pbx.example.com\", nonce=\"N\", qop=\"auth\", algorithm=SHA-256"
        );
        assert_eq!(
            challenge_value("pbx", "N", Algorithm::Md5, true),
            "Digest realm=\"pbx\", nonce=\"N\", qop=\"auth\", algorithm=MD5, stale=true"
        );
    }

    #[test]
    fn realm_cannot_break_out_of_its_quotes_or_the_header() {
        let v = challenge_value("a\"b\\c\r\nX-Evil: 1", "N", Algorithm::Md5, false);
        assert_eq!(
            v,
            "Digest realm=\"a\\\"b\\\\cX-Evil: 1\", nonce=\"N\", qop=\"auth\", algorithm=MD5"
        );
    }
}
