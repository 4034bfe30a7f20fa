//! Parsing of `Authorization` / `Proxy-Authorization` header values carrying Digest credentials
//! (RFC 7616 §3.4, RFC 3261 §22.4), tolerant of what real phones send.
//!
//! Accepted: `Digest` in any case, parameter names in any case and in any order, quoted or
//! unquoted values, commas and `\"` escapes inside quoted strings, empty list elements, and
//! spaces, tabs and line breaks (folded headers) between the parts. Rejected with a typed
//! [`CredentialsError`]: other schemes, syntax errors, duplicated parameters, missing required
//! parameters, a malformed `nc`, and values longer than [`MAX_CREDENTIALS_LEN`]. Parsing never
//! panics, whatever the input.

use std::borrow::Cow;
use std::fmt;

use super::params::{AuthParams, clip, is_ws};

/// Longest header value accepted, in bytes. Real credentials are a few hundred bytes.
pub const MAX_CREDENTIALS_LEN: usize = 4096;

/// The Digest credentials a client sent, as parsed from the header value.
///
/// Values are unquoted and unescaped but otherwise raw: `algorithm` and `qop` are checked by
/// [`Authenticator::verify`](super::Authenticator::verify), which reports unsupported values.
/// `Debug` redacts `response`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// `username` (or the decoded `username*` of RFC 7616 §3.4.4).
    pub username: String,
    /// `realm` the client answered for.
    pub realm: String,
    /// `nonce` echoed from the challenge.
    pub nonce: String,
    /// `uri` (digest-uri), normally the Request-URI.
    pub uri: String,
    /// `response`, hex.
    pub response: String,
    /// `algorithm` as sent; absent means MD5.
    pub algorithm: Option<String>,
    /// `qop` as sent; absent means an RFC 2069 style response.
    pub qop: Option<String>,
    /// `nc`, validated to be 8 hex digits when present.
    pub nc: Option<String>,
    /// `cnonce`.
    pub cnonce: Option<String>,
    /// `opaque`, if the client echoed one.
    pub opaque: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("realm", &self.realm)
            .field("nonce", &self.nonce)
            .field("uri", &self.uri)
            .field("response", &"<redacted>")
            .field("algorithm", &self.algorithm)
            .field("qop", &self.qop)
            .field("nc", &self.nc)
            .field("cnonce", &self.cnonce)
            .field("opaque", &self.opaque)
            .finish()
    }
}

/// Why a header value is not usable Digest credentials. Attacker-controlled text inside is
/// truncated to a few dozen characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// Nothing but whitespace.
    #[error("empty authorization header value")]
    Empty,
    /// Longer than [`MAX_CREDENTIALS_LEN`].
    #[error("authorization header value is {len} bytes, more than the {max} accepted")]
    TooLong {
        /// Length received.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Another scheme, e.g. `Basic`, or the header name was passed along with the value.
    #[error("expected the Digest authorization scheme, got {scheme:?}")]
    NotDigest {
        /// The scheme text received.
        scheme: String,
    },
    /// The parameter list does not parse.
    #[error("syntax error at byte {at}: {what}")]
    Syntax {
        /// Byte offset in the header value.
        at: usize,
        /// What was expected.
        what: &'static str,
    },
    /// The same parameter twice (ambiguous, so refused).
    #[error("parameter {0:?} appears more than once")]
    DuplicateParam(String),
    /// A required parameter is absent (`username`, `realm`, `nonce`, `uri`, `response`; with
    /// `qop` also `nc` and `cnonce`).
    #[error("missing {0} parameter")]
    MissingParam(&'static str),
    /// `nc` is not exactly 8 hex digits.
    #[error("nc must be 8 hex digits, got {0:?}")]
    BadNc(String),
    /// `username*` is not a valid `UTF-8''…` extended value.
    #[error("username* is not a valid UTF-8'' percent-encoded value")]
    BadUsernameStar,
}

/// Parses an `Authorization` or `Proxy-Authorization` header value (without the header name).
pub fn parse_credentials(value: &str) -> Result<Credentials, CredentialsError> {
    use CredentialsError::{BadNc, DuplicateParam, MissingParam, NotDigest};

    if value.len() > MAX_CREDENTIALS_LEN {
        return Err(CredentialsError::TooLong {
            len: value.len(),
            max: MAX_CREDENTIALS_LEN,
        });
    }
    if value.bytes().all(is_ws) {
        return Err(CredentialsError::Empty);
    }
    let (scheme, mut params) = AuthParams::new(value)?;
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Err(NotDigest {
            scheme: clip(scheme),
        });
    }

    const NAMES: [&str; 11] = [
        "username",
        "username*",
        "realm",
        "nonce",
        "uri",
        "response",
        "algorithm",
        "qop",
        "nc",
        "cnonce",
        "opaque",
    ];
    let mut vals: [Option<Cow<'_, str>>; 11] = Default::default();
    while let Some((name, v)) = params.next_param()? {
        let Some(i) = NAMES.iter().position(|n| n.eq_ignore_ascii_case(name)) else {
            continue; // unknown parameters (userhash, auts, …) are ignored
        };
        if let Some(slot) = vals.get_mut(i) {
            if slot.is_some() {
                return Err(DuplicateParam(clip(name)));
            }
            *slot = Some(v);
        }
    }
    let [
        username,
        username_star,
        realm,
        nonce,
        uri,
        response,
        algorithm,
        qop,
        nc,
        cnonce,
        opaque,
    ] = vals;

    let username = match (username, username_star) {
        (Some(_), Some(_)) => return Err(DuplicateParam("username/username*".to_owned())),
        (Some(u), None) => u.into_owned(),
        (None, Some(ext)) => decode_ext_value(&ext)?,
        (None, None) => return Err(MissingParam("username")),
    };
    let required = |v: Option<Cow<'_, str>>, name| v.map(Cow::into_owned).ok_or(MissingParam(name));
    let realm = required(realm, "realm")?;
    let nonce = required(nonce, "nonce")?;
    let uri = required(uri, "uri")?;
    let response = required(response, "response")?;
    if let Some(nc) = &nc
        && !super::algorithm::is_hex_of_len(nc, 8)
    {
        return Err(BadNc(clip(nc)));
    }
    if qop.is_some() {
        if nc.is_none() {
            return Err(MissingParam("nc"));
        }
        if cnonce.is_none() {
            return Err(MissingParam("cnonce"));
        }
    }
    Ok(Credentials {
        username,
        realm,
        nonce,
        uri,
        response,
        algorithm: algorithm.map(Cow::into_owned),
        qop: qop.map(Cow::into_owned),
        nc: nc.map(Cow::into_owned),
        cnonce: cnonce.map(Cow::into_owned),
        opaque: opaque.map(Cow::into_owned),
    })
}

/// Decodes an RFC 8187 ext-value `UTF-8'lang'percent-encoded`.
fn decode_ext_value(v: &str) -> Result<String, CredentialsError> {
    let mut parts = v.splitn(3, '\'');
    let (Some(charset), Some(_language), Some(encoded)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(CredentialsError::BadUsernameStar);
    };
    if !charset.eq_ignore_ascii_case("UTF-8") {
        return Err(CredentialsError::BadUsernameStar);
    }
    let hex = |b: Option<u8>| b.and_then(|b| char::from(b).to_digit(16));
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut it = encoded.bytes();
    while let Some(b) = it.next() {
        if b == b'%' {
            match (hex(it.next()), hex(it.next())) {
                (Some(hi), Some(lo)) => bytes.push(u8::try_from((hi << 4) | lo).unwrap_or(0)),
                _ => return Err(CredentialsError::BadUsernameStar),
            }
        } else {
            bytes.push(b);
        }
    }
    String::from_utf8(bytes).map_err(|_| CredentialsError::BadUsernameStar)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng, rngs::StdRng};

    /// Strips `Authorization: ` / `Proxy-Authorization: ` from a captured header line.
    fn value_of(line: &str) -> &str {
        line.split_once(':').map_or(line, |(_, v)| v)
    }

    #[test]
    fn pjsip_microsip() {
        let line = "Authorization: Digest username=\"1001\", realm=\"asterisk\", \
            nonce=\"1712345678/2f1c0a6b9e8d7c6b5a49382716051423\", uri=\"sip:192.168.1.10\", \
            response=\"0a4f3c2d1e0f9a8b7c6d5e4f3a2b1c0d\", algorithm=MD5, \
            cnonce=\"7c6d2f9a0b1e4d3c\", qop=auth, nc=00000001";
        let c = parse_credentials(value_of(line)).unwrap();
        assert_eq!(c.username, "1001");
        assert_eq!(c.realm, "asterisk");
        assert_eq!(c.nonce, "1712345678/2f1c0a6b9e8d7c6b5a49382716051423");
        assert_eq!(c.uri, "sip:192.168.1.10");
        assert_eq!(c.response, "0a4f3c2d1e0f9a8b7c6d5e4f3a2b1c0d");
        assert_eq!(c.algorithm.as_deref(), Some("MD5"));
        assert_eq!(c.cnonce.as_deref(), Some("7c6d2f9a0b1e4d3c"));
        assert_eq!(c.qop.as_deref(), Some("auth"));
        assert_eq!(c.nc.as_deref(), Some("00000001"));
        assert_eq!(c.opaque, None);
    }

    #[test]
    fn zoiper_lowercase_md5_no_spaces() {
        let line = "Authorization: Digest username=\"1002\",realm=\"pbx.example.com\",\
            nonce=\"abc\",uri=\"sip:pbx.example.com;transport=UDP\",\
            response=\"d41d8cd98f00b204e9800998ecf8427e\",cnonce=\"e1f2\",nc=00000002,qop=auth,\
            algorithm=md5";
        let c = parse_credentials(value_of(line)).unwrap();
        assert_eq!(c.username, "1002");
        assert_eq!(c.uri, "sip:pbx.example.com;transport=UDP");
        assert_eq!(c.algorithm.as_deref(), Some("md5"));
        assert_eq!(c.nc.as_deref(), Some("00000002"));
    }

    #[test]
    fn jssip_algorithm_first() {
        let line = "Proxy-Authorization: Digest algorithm=MD5, username=\"1001\", \
            realm=\"pbx.example.com\", nonce=\"n0nce\", uri=\"sip:1002@pbx.example.com\", \
            response=\"6629fae49393a05397450978507c4ef1\", qop=auth, cnonce=\"4l3kk1f9rvrc\", \
            nc=00000001";
        let c = parse_credentials(value_of(line)).unwrap();
        assert_eq!(c.algorithm.as_deref(), Some("MD5"));
        assert_eq!(c.username, "1001");
        assert_eq!(c.uri, "sip:1002@pbx.example.com");
        assert_eq!(c.cnonce.as_deref(), Some("4l3kk1f9rvrc"));
    }

    #[test]
    fn old_desk_phone_without_qop() {
        let v = "Digest username=\"200\",realm=\"pbx\",nonce=\"x\",uri=\"sip:pbx\",\
            response=\"0123456789abcdef0123456789abcdef\"";
        let c = parse_credentials(v).unwrap();
        assert_eq!(
            (c.qop, c.nc, c.cnonce, c.algorithm),
            (None, None, None, None)
        );
    }

    #[test]
    fn case_whitespace_folding_quotes_and_escapes() {
        let v = "  dIGEST\r\n\tUSERNAME = \"a\\\"b\\\\c\" ,Realm=\"x, y\",\r\n NONCE=n,  \
            URI=sip:x , Response=\"r\",,  Opaque=\"o\" , Unknown=\"ignored, really\",";
        let c = parse_credentials(v).unwrap();
        assert_eq!(c.username, "a\"b\\c");
        assert_eq!(c.realm, "x, y");
        assert_eq!(c.nonce, "n");
        assert_eq!(c.uri, "sip:x");
        assert_eq!(c.response, "r");
        assert_eq!(c.opaque.as_deref(), Some("o"));
    }

    #[test]
    fn username_star() {
        let v = "Digest username*=UTF-8''J%C3%A4s%C3%B8n%20Doe, realm=r, nonce=n, uri=u, \
            response=x";
        assert_eq!(parse_credentials(v).unwrap().username, "Jäsøn Doe");
        let bad = "Digest username*=UTF-8''%C3, realm=r, nonce=n, uri=u, response=x";
        assert_eq!(
            parse_credentials(bad),
            Err(CredentialsError::BadUsernameStar)
        );
        let both = "Digest username=a, username*=UTF-8''a, realm=r, nonce=n, uri=u, response=x";
        assert!(matches!(
            parse_credentials(both),
            Err(CredentialsError::DuplicateParam(_))
        ));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        use CredentialsError::*;
        let cases: &[(&str, CredentialsError)] = &[
            ("", Empty),
            (" \r\n ", Empty),
            (
                "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
                NotDigest {
                    scheme: "Basic".into(),
                },
            ),
            (
                "Authorization: Digest username=\"a\"",
                NotDigest {
                    scheme: "Authorization:".into(),
                },
            ),
            (
                "Digest realm=r, nonce=n, uri=u, response=x",
                MissingParam("username"),
            ),
            (
                "Digest username=a, nonce=n, uri=u, response=x",
                MissingParam("realm"),
            ),
            (
                "Digest username=a, realm=r, uri=u, response=x",
                MissingParam("nonce"),
            ),
            (
                "Digest username=a, realm=r, nonce=n, response=x",
                MissingParam("uri"),
            ),
            (
                "Digest username=a, realm=r, nonce=n, uri=u",
                MissingParam("response"),
            ),
            (
                "Digest username=a, realm=r, nonce=n, uri=u, response=x, qop=auth, nc=00000001",
                MissingParam("cnonce"),
            ),
            (
                "Digest username=a, realm=r, nonce=n, uri=u, response=x, qop=auth, cnonce=c",
                MissingParam("nc"),
            ),
            (
                "Digest username=a, realm=r, nonce=n, uri=u, response=x, qop=auth, cnonce=c, nc=1",
                BadNc("1".into()),
            ),
            (
                "Digest username=a, realm=r, nonce=n, uri=u, response=x, qop=auth, cnonce=c, \
                 nc=0000000g",
                BadNc("0000000g".into()),
            ),
            (
                "Digest username=a, USERNAME=b, realm=r, nonce=n, uri=u, response=x",
                DuplicateParam("USERNAME".into()),
            ),
            (
                "Digest username=\"a, realm=r",
                Syntax {
                    at: 16,
                    what: "unterminated quoted string",
                },
            ),
            (
                "Digest username=\"a\\",
                Syntax {
                    at: 16,
                    what: "unterminated quoted string",
                },
            ),
            (
                "Digest username",
                Syntax {
                    at: 15,
                    what: "expected '=' after a parameter name",
                },
            ),
            (
                "Digest username=",
                Syntax {
                    at: 16,
                    what: "expected a parameter value",
                },
            ),
            (
                "Digest username=a realm=b",
                Syntax {
                    at: 18,
                    what: "expected ',' between parameters",
                },
            ),
            (
                "Digest =a",
                Syntax {
                    at: 7,
                    what: "expected a parameter name",
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_credentials(input).as_ref(), Err(want), "{input:?}");
            assert!(!want.to_string().is_empty());
        }
    }

    #[test]
    fn huge_input_is_refused_early() {
        let huge = format!("Digest username=\"{}\"", "a".repeat(1 << 20));
        assert!(matches!(
            parse_credentials(&huge),
            Err(CredentialsError::TooLong { .. })
        ));
        let long_scheme = "x".repeat(10_000);
        let e = parse_credentials(&long_scheme[..4000]).unwrap_err();
        assert!(e.to_string().len() < 200, "error text is clipped: {e}");
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = StdRng::seed_from_u64(0x006b_7562_6570_6278);
        let alphabet = b"Digest usernamrlcoq=\"\\, \t\r\n0123456789abcdef*'%\xc3\xa4";
        let valid = "Digest username=\"1001\", realm=\"r\", nonce=\"n\", uri=\"sip:x\", \
            response=\"0123456789abcdef0123456789abcdef\", qop=auth, nc=00000001, cnonce=\"c\"";
        for i in 0..20_000 {
            let bytes: Vec<u8> = match i % 3 {
                // Uniformly random bytes.
                0 => (0..rng.random_range(0..300))
                    .map(|_| rng.random::<u8>())
                    .collect(),
                // Bytes from an alphabet that exercises the lexer.
                1 => (0..rng.random_range(0..120))
                    .map(|_| {
                        let i = rng.random_range(0..alphabet.len());
                        alphabet.get(i).copied().unwrap_or(b' ')
                    })
                    .collect(),
                // A valid value with a few random byte mutations.
                _ => {
                    let mut b = valid.as_bytes().to_vec();
                    for _ in 0..rng.random_range(1..4) {
                        let at = rng.random_range(0..b.len());
                        if let Some(x) = b.get_mut(at) {
                            *x = rng.random();
                        }
                    }
                    b.truncate(rng.random_range(0..=b.len()));
                    b
                }
            };
            let s = String::from_utf8_lossy(&bytes);
            let _ = parse_credentials(&s);
        }
    }
}
