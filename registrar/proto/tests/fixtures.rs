//! Real REGISTERs from real clients (`tests/fixtures/register/`, see its README) through the
//! parser, the registrar's header checks and the digest code.
//!
//! Every `*-auth.sip` answers the fixed challenge `realm="pbx.example.com",
//! nonce="7d1b3f0a2c9e4d5f8a6b0c1d2e3f4a5b"` for user 1001, password `change-me-1001`; the digest
//! response computed by our code from the client's own parameters must equal the client's.

use bytes::Bytes;
use ezk_sip_types::Name;
use ezk_sip_types::header::typed::Contact;
use kubepbx_sip::auth::{Algorithm, QopAuth, ha1, parse_credentials, response};
use kubepbx_sip::message::{Message, Method, Request, parse};
use std::path::PathBuf;

const PASSWORD: &str = "change-me-1001";

fn fixtures() -> Vec<(String, Request)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/register");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("fixture dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "sip") {
            continue;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = Bytes::from(std::fs::read(&path).expect("read fixture"));
        match parse(bytes) {
            Ok(Message::Request(r)) => out.push((name, r)),
            other => panic!("{name}: not a request: {other:?}"),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        out.len() >= 16,
        "expected the fixtures of eight clients, found {}",
        out.len()
    );
    out
}

#[test]
fn every_client_register_parses_with_contacts() {
    for (name, request) in fixtures() {
        assert_eq!(request.method, Method::Register, "{name}");
        assert_eq!(request.defect, None, "{name}");
        let e = request
            .essentials()
            .unwrap_or_else(|p| panic!("{name}: {p}"));
        assert_eq!(e.cseq.method, Method::Register, "{name}");
        let contacts: Vec<Contact> = request
            .headers
            .get(Name::CONTACT)
            .unwrap_or_else(|err| panic!("{name}: Contact: {err:?}"));
        assert!(!contacts.is_empty(), "{name}");
    }
}

#[test]
fn websocket_clients_carry_their_instance_id() {
    for (name, request) in fixtures() {
        if !(name.starts_with("sipjs") || name.starts_with("jssip")) {
            continue;
        }
        let contacts: Vec<Contact> = request.headers.get(Name::CONTACT).unwrap();
        let instance = contacts[0]
            .params
            .get_val("+sip.instance")
            .map(|v| v.to_string());
        assert!(
            instance
                .as_deref()
                .is_some_and(|i| i.trim_matches('"').starts_with("<urn:uuid:")),
            "{name}: {instance:?}"
        );
        assert!(contacts[0].params.get_val("reg-id").is_some(), "{name}");
    }
}

#[test]
fn every_client_digest_verifies() {
    let mut checked = 0;
    for (name, request) in fixtures() {
        let Some(value) = request.header(&Name::AUTHORIZATION) else {
            continue;
        };
        let c = parse_credentials(value).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(c.username, "1001", "{name}");
        let algorithm =
            Algorithm::parse(c.algorithm.as_deref().unwrap_or("MD5")).expect("algorithm");
        let stored = ha1(algorithm, &c.username, &c.realm, PASSWORD);
        let qop = c.qop.as_deref().map(|qop| QopAuth {
            qop,
            nc: c.nc.as_deref().unwrap_or(""),
            cnonce: c.cnonce.as_deref().unwrap_or(""),
        });
        let expected = response(algorithm, &stored, &c.nonce, "REGISTER", &c.uri, qop);
        assert_eq!(expected.as_str(), c.response.to_ascii_lowercase(), "{name}");
        checked += 1;
    }
    assert!(
        checked >= 8,
        "every client's auth fixture checked, got {checked}"
    );
}
