//! Raw SIP messages in `tests/fixtures/`: real REGISTERs of real clients, and malformed ones.
//!
//! `register/<client>-<kind>.sip` holds exact bytes (CRLF) of what a client sent: `initial`
//! (no credentials), `auth` (answering the challenge below) and, for some, `unregister`. Which
//! were captured here and which reconstructed from public traces is in `fixtures/README.md`.
//! Every `auth` message answers `WWW-Authenticate: Digest realm="pbx.example.com",
//! nonce="<FIXTURE_NONCE>", qop="auth", algorithm=MD5` for user 1001, password change-me-1001,
//! so a registrar test can check its digest code against eight real clients' quirks.
//! `malformed/*.sip` are broken messages a parser must refuse without panicking.
//!
//! The unit tests here keep the files honest: CRLF only, a blank line after the headers,
//! a Content-Length matching the body, and digests that verify.

use std::path::{Path, PathBuf};

use md5::{Digest as _, Md5};

use crate::error::{IoContext, Result};

/// The nonce of the challenge every `*-auth.sip` answers.
pub const FIXTURE_NONCE: &str = crate::responder::RESPONDER_NONCE;
/// The realm of that challenge.
pub const FIXTURE_REALM: &str = "pbx.example.com";
/// The user of every fixture.
pub const FIXTURE_USER: &str = "1001";
/// The password of every fixture.
pub const FIXTURE_PASSWORD: &str = "change-me-1001";

/// `tests/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The bytes of `tests/fixtures/<relative>`.
pub fn read_fixture(relative: impl AsRef<Path>) -> Result<Vec<u8>> {
    let path = fixtures_dir().join(relative);
    std::fs::read(&path).context(|| format!("read {}", path.display()))
}

/// One REGISTER of one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterFixture {
    /// `baresip`, `jssip`, `linphone`, `microsip`, `pjsua2`, `sipjs`, `sipp`, `zoiper`.
    pub client: String,
    /// `initial`, `auth` or `unregister`.
    pub kind: String,
    /// The file.
    pub path: PathBuf,
    /// Its exact bytes.
    pub bytes: Vec<u8>,
}

/// Every `register/*.sip`, sorted by file name.
pub fn register_fixtures() -> Result<Vec<RegisterFixture>> {
    Ok(sip_files("register")?
        .into_iter()
        .filter_map(|(path, bytes)| {
            let stem = path.file_stem()?.to_string_lossy().into_owned();
            let (client, kind) = stem.rsplit_once('-')?;
            Some(RegisterFixture {
                client: client.to_owned(),
                kind: kind.to_owned(),
                path,
                bytes,
            })
        })
        .collect())
}

/// Every `malformed/*.sip` as (name without extension, bytes), sorted by name.
pub fn malformed_fixtures() -> Result<Vec<(String, Vec<u8>)>> {
    Ok(sip_files("malformed")?
        .into_iter()
        .map(|(path, bytes)| {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, bytes)
        })
        .collect())
}

fn sip_files(sub: &str) -> Result<Vec<(PathBuf, Vec<u8>)>> {
    let dir = fixtures_dir().join(sub);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .context(|| format!("read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "sip"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).context(|| format!("read {}", p.display()))?;
            Ok((p, bytes))
        })
        .collect()
}

/// The header lines of a message (start line excluded), unfolded, as (name, value).
pub fn headers(message: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(message);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n").skip(1) {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    out
}

/// The first header named `name` (case-insensitive; compact forms are not expanded).
pub fn header(message: &[u8], name: &str) -> Option<String> {
    headers(message)
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// The parameters of a `Digest …` credentials value (keys lowercased, quotes removed).
pub fn digest_params(value: &str) -> Vec<(String, String)> {
    let mut rest = value.trim_start();
    if rest.len() >= 6 && rest[..6].eq_ignore_ascii_case("digest") {
        rest = &rest[6..];
    }
    let mut out = Vec::new();
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            // A quoted string; backslash escapes the next character.
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, e)) = chars.next() {
                            value.push(e);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    _ => value.push(c),
                }
            }
            (value, &quoted[end..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        out.push((key, value));
        rest = next;
    }
    out
}

/// The `response` an RFC 2617/7616 MD5 digest must carry for these parameters.
pub fn expected_md5_response(
    method: &str,
    params: &[(String, String)],
    password: &str,
) -> Option<String> {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let ha1 = md5_hex(&format!(
        "{}:{}:{password}",
        get("username")?,
        get("realm")?
    ));
    let ha2 = md5_hex(&format!("{method}:{}", get("uri")?));
    let nonce = get("nonce")?;
    Some(match get("qop") {
        Some(qop) => md5_hex(&format!(
            "{ha1}:{nonce}:{}:{}:{qop}:{ha2}",
            get("nc")?,
            get("cnonce")?
        )),
        None => md5_hex(&format!("{ha1}:{nonce}:{ha2}")),
    })
}

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENTS: [&str; 8] = [
        "baresip", "jssip", "linphone", "microsip", "pjsua2", "sipjs", "sipp", "zoiper",
    ];

    #[test]
    fn every_client_has_an_initial_and_an_auth_register() {
        let all = register_fixtures().unwrap();
        for client in CLIENTS {
            for kind in ["initial", "auth"] {
                assert!(
                    all.iter().any(|f| f.client == client && f.kind == kind),
                    "missing register/{client}-{kind}.sip"
                );
            }
        }
        assert!(all.iter().all(|f| CLIENTS.contains(&f.client.as_str())));
    }

    #[test]
    fn register_fixtures_are_well_formed_sip() {
        for f in register_fixtures().unwrap() {
            let name = f.path.display();
            let b = &f.bytes;
            assert!(b.starts_with(b"REGISTER sip:"), "{name}: start line");
            let end = b
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .unwrap_or_else(|| panic!("{name}: no blank line after the headers"));
            let lf = b.iter().filter(|&&c| c == b'\n').count();
            let crlf = b.windows(2).filter(|w| w == b"\r\n").count();
            assert_eq!(lf, crlf, "{name}: a line ends in a bare LF");
            let body = &b[end + 4..];
            let len: usize = header(b, "Content-Length")
                .or_else(|| header(b, "l"))
                .unwrap_or_else(|| panic!("{name}: no Content-Length"))
                .parse()
                .unwrap();
            assert_eq!(len, body.len(), "{name}: Content-Length");
            for h in ["Via", "From", "To", "Call-ID", "CSeq", "Contact"] {
                assert!(header(b, h).is_some(), "{name}: no {h}");
            }
            let cseq = header(b, "CSeq").unwrap();
            assert!(cseq.ends_with(" REGISTER"), "{name}: CSeq {cseq}");
            assert_eq!(
                header(b, "Authorization").is_some(),
                f.kind == "auth" || (f.client == "sipjs" && f.kind == "unregister"),
                "{name}: Authorization presence"
            );
        }
    }

    #[test]
    fn every_auth_register_carries_a_valid_digest() {
        for f in register_fixtures().unwrap() {
            let Some(auth) = header(&f.bytes, "Authorization") else {
                continue;
            };
            let name = f.path.display();
            let params = digest_params(&auth);
            let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            assert_eq!(get("username").as_deref(), Some(FIXTURE_USER), "{name}");
            assert_eq!(get("realm").as_deref(), Some(FIXTURE_REALM), "{name}");
            assert_eq!(get("nonce").as_deref(), Some(FIXTURE_NONCE), "{name}");
            assert!(
                get("algorithm").is_none_or(|a| a.eq_ignore_ascii_case("MD5")),
                "{name}"
            );
            let expected = expected_md5_response("REGISTER", &params, FIXTURE_PASSWORD).unwrap();
            assert_eq!(get("response"), Some(expected), "{name}: digest response");
        }
    }

    #[test]
    fn the_initial_and_auth_register_of_a_client_share_call_id_and_tag() {
        let all = register_fixtures().unwrap();
        for client in CLIENTS {
            let get = |kind: &str| {
                all.iter()
                    .find(|f| f.client == client && f.kind == kind)
                    .map(|f| f.bytes.clone())
                    .unwrap()
            };
            let (initial, auth) = (get("initial"), get("auth"));
            assert_eq!(
                header(&initial, "Call-ID"),
                header(&auth, "Call-ID"),
                "{client}"
            );
            assert_eq!(header(&initial, "From"), header(&auth, "From"), "{client}");
            assert_ne!(
                header(&initial, "Via"),
                header(&auth, "Via"),
                "{client}: new branch"
            );
        }
    }

    #[test]
    fn malformed_fixtures_exist_and_are_broken() {
        let all = malformed_fixtures().unwrap();
        let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        for expected in [
            "truncated-start-line",
            "missing-call-id",
            "bad-cseq-number",
            "binary-garbage",
            "content-length-larger-than-body",
            "header-without-colon",
        ] {
            assert!(
                names.contains(&expected),
                "missing malformed/{expected}.sip"
            );
        }
        let (_, garbage) = all.iter().find(|(n, _)| n == "binary-garbage").unwrap();
        assert!(std::str::from_utf8(garbage).is_err());
        let (_, no_call_id) = all.iter().find(|(n, _)| n == "missing-call-id").unwrap();
        assert!(header(no_call_id, "Call-ID").is_none());
    }

    #[test]
    fn digest_params_handle_every_client_spelling() {
        let linphone = r#"  Digest realm="r", nonce="n", algorithm=MD5, username="1001",  uri="sip:d", response="x", cnonce="c", nc=00000001, qop=auth"#;
        let zoiper = r#"Digest username="1001",realm="r",nonce="n",uri="sip:d;transport=UDP",response="x",cnonce="c",nc=00000001,qop=auth,algorithm=md5"#;
        for v in [linphone, zoiper] {
            let p = digest_params(v);
            let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
            assert_eq!(get("username"), Some("1001"), "{v}");
            assert_eq!(get("realm"), Some("r"));
            assert_eq!(get("nc"), Some("00000001"));
            assert_eq!(get("qop"), Some("auth"));
            assert!(get("algorithm").unwrap().eq_ignore_ascii_case("md5"));
        }
    }
}
