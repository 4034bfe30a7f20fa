//! Endpoint tests: a simulated phone registers through the full digest exchange; time is fake.

use super::*;
use crate::auth::{Algorithm, QopAuth, response};
use crate::message::Response;
use kubepbx_api::Transport;
use kubepbx_api::extension::RecordingPolicy;
use kubepbx_api::ha1::Ha1Set;
use kubepbx_api::records::{ExtensionRecord, FailureReason, UserKey};
use kubepbx_api::store::Snapshot;
use std::net::SocketAddr;

const DOMAIN: &str = "pbx.example.com";

fn record(ext: &str, password: &str) -> ExtensionRecord {
    ExtensionRecord {
        domain: DOMAIN.into(),
        extension: ext.into(),
        display_name: None,
        ha1: Ha1Set::derive(ext, DOMAIN, password),
        enabled: true,
        disabled_reason: None,
        max_contacts: 5,
        recording: RecordingPolicy::Never,
        source: format!("default/ext-{ext}"),
        generation: 1,
    }
}

fn endpoint(records: Vec<ExtensionRecord>) -> Endpoint {
    let mut ep = Endpoint::new(EndpointConfig {
        replica: "up".into(),
        default_domain: DOMAIN.into(),
        advertise: "192.0.2.1:5060".into(),
        advertise_tls: Some("192.0.2.1:5061".into()),
        anchor_media: false,
        local_hosts: vec!["pbx.local".into()],
        registrar: RegistrarConfig::default(),
        bans: BanConfig::default(),
        nonce: NonceConfig::default(),
        secret: [7; 32],
        instance: 1,
        challenge: Vec::new(),
        cluster: None,
    });
    ep.load(Snapshot {
        extensions: records,
        ..Snapshot::default()
    });
    ep
}

fn start() -> Now {
    Now {
        mono: Instant::now(),
        wall: UnixMillis(1_795_000_000_000),
    }
}

/// A phone: builds REGISTERs, answers challenges like a real UA.
struct Phone {
    user: String,
    password: String,
    source: SocketAddr,
    contact: String,
    call_id: String,
    cseq: u32,
    branch: u32,
    extra: String,
    algorithm: &'static str,
}

impl Phone {
    fn new(user: &str, password: &str) -> Self {
        Phone {
            user: user.into(),
            password: password.into(),
            source: "192.0.2.10:5060".parse().unwrap(),
            contact: format!("<sip:{user}@192.0.2.10:5060>"),
            call_id: format!("call-{user}"),
            cseq: 0,
            branch: 0,
            extra: String::new(),
            algorithm: "MD5",
        }
    }

    fn request(&mut self, expires: Option<u32>, authorization: Option<String>) -> Bytes {
        self.cseq += 1;
        self.branch += 1;
        let mut text = format!(
            "REGISTER sip:{DOMAIN} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {};rport;branch=z9hG4bK{}-{}-{}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{}@{DOMAIN}>;tag=ft{}\r\n\
             To: <sip:{}@{DOMAIN}>\r\n\
             Call-ID: {}\r\nCSeq: {} REGISTER\r\n\
             User-Agent: TestPhone/1.0\r\n",
            self.source,
            self.user,
            self.call_id,
            self.branch,
            self.user,
            self.user,
            self.user,
            self.call_id,
            self.cseq
        );
        if !self.contact.is_empty() {
            text.push_str(&format!("Contact: {}\r\n", self.contact));
        }
        if let Some(e) = expires {
            text.push_str(&format!("Expires: {e}\r\n"));
        }
        if let Some(a) = authorization {
            text.push_str(&format!("Authorization: {a}\r\n"));
        }
        text.push_str(&self.extra);
        text.push_str("Content-Length: 0\r\n\r\n");
        Bytes::from(text)
    }

    /// The Authorization value answering the last (MD5) or first (SHA-256) challenge of a 401.
    fn answer(&self, challenge: &Response, password: &str) -> String {
        let values: Vec<String> = challenge
            .headers
            .get_raw(&Name::WWW_AUTHENTICATE)
            .map(|v| v.to_string())
            .collect();
        let wanted = if self.algorithm.eq_ignore_ascii_case("SHA-256") {
            "SHA-256"
        } else {
            "MD5"
        };
        let chosen = values
            .iter()
            .find(|v| v.contains(&format!("algorithm={wanted}")))
            .expect("challenge for algorithm");
        let param = |name: &str| -> String {
            let start = chosen.find(&format!("{name}=\"")).expect(name) + name.len() + 2;
            chosen[start..].split('"').next().unwrap().to_owned()
        };
        let (realm, nonce) = (param("realm"), param("nonce"));
        let alg = Algorithm::parse(wanted).unwrap();
        let ha1 = crate::auth::ha1(alg, &self.user, &realm, password);
        let uri = format!("sip:{DOMAIN}");
        let cnonce = "0a4f113b";
        let resp = response(
            alg,
            &ha1,
            &nonce,
            "REGISTER",
            &uri,
            Some(QopAuth {
                qop: "auth",
                nc: "00000001",
                cnonce,
            }),
        );
        format!(
            "Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{}\", algorithm={}, cnonce=\"{cnonce}\", qop=auth, nc=00000001",
            self.user,
            resp.as_str(),
            self.algorithm
        )
    }
}

fn send(ep: &mut Endpoint, now: Now, source: SocketAddr, bytes: Bytes) -> Vec<Response> {
    ep.handle_packet(now, Flow::udp(source), bytes);
    let mut out = Vec::new();
    while let Some(t) = ep.poll_transmit() {
        match message::parse(t.bytes) {
            Ok(Message::Response(r)) => out.push(r),
            other => panic!("endpoint sent a non-response: {other:?}"),
        }
    }
    out
}

fn only(mut responses: Vec<Response>) -> Response {
    assert_eq!(responses.len(), 1, "expected one response");
    responses.remove(0)
}

/// REGISTER → 401 → REGISTER with credentials → final response.
fn register(ep: &mut Endpoint, now: Now, phone: &mut Phone, expires: Option<u32>) -> Response {
    let challenge = only(send(ep, now, phone.source, phone.request(expires, None)));
    assert_eq!(challenge.code, 401);
    let auth = phone.answer(&challenge, &phone.password.clone());
    only(send(
        ep,
        now,
        phone.source,
        phone.request(expires, Some(auth)),
    ))
}

fn failures(ep: &mut Endpoint) -> Vec<FailureReason> {
    let mut out = Vec::new();
    while let Some(e) = ep.poll_event() {
        if let EndpointEvent::RegisterFailed { reason, .. } = e {
            out.push(reason);
        }
    }
    out
}

#[test]
fn challenge_offers_sha256_first_and_md5_last() {
    let mut ep = endpoint(vec![record("1001", "secret")]);
    let mut phone = Phone::new("1001", "secret");
    let r = only(send(
        &mut ep,
        start(),
        phone.source,
        phone.request(None, None),
    ));
    assert_eq!(r.code, 401);
    let challenges: Vec<String> = r
        .headers
        .get_raw(&Name::WWW_AUTHENTICATE)
        .map(|v| v.to_string())
        .collect();
    assert_eq!(challenges.len(), 2);
    assert!(
        challenges[0].contains("algorithm=SHA-256"),
        "{challenges:?}"
    );
    assert!(challenges[1].contains("algorithm=MD5"), "{challenges:?}");
    assert!(
        challenges
            .iter()
            .all(|c| c.contains("qop=\"auth\"") && c.contains("realm=\"pbx.example.com\""))
    );
    assert!(r.header(&Name::TO).unwrap().contains(";tag="));
    assert!(ep.drain_writes().is_empty(), "a challenge writes nothing");
}

#[test]
fn challenge_order_is_configurable_for_first_challenge_only_clients() {
    let mut ep = endpoint(vec![record("1001", "secret")]);
    ep.config.challenge = vec![crate::auth::Algorithm::Md5];
    let mut phone = Phone::new("1001", "secret");
    let r = only(send(
        &mut ep,
        start(),
        phone.source,
        phone.request(None, None),
    ));
    let challenges: Vec<String> = r
        .headers
        .get_raw(&Name::WWW_AUTHENTICATE)
        .map(|v| v.to_string())
        .collect();
    assert_eq!(challenges.len(), 1, "{challenges:?}");
    assert!(challenges[0].contains("algorithm=MD5"), "{challenges:?}");
}

#[test]
fn md5_and_sha256_registrations_succeed_and_are_written() {
    for algorithm in ["MD5", "md5", "SHA-256"] {
        let mut ep = endpoint(vec![record("1001", "secret")]);
        let mut phone = Phone::new("1001", "secret");
        phone.algorithm = algorithm;
        let now = start();
        let ok = register(&mut ep, now, &mut phone, Some(600));
        assert_eq!(ok.code, 200, "{algorithm}");
        let contacts: Vec<String> = ok
            .headers
            .get_raw(&Name::CONTACT)
            .map(|v| v.to_string())
            .collect();
        assert_eq!(
            contacts,
            vec!["<sip:1001@192.0.2.10:5060>;expires=600".to_owned()]
        );
        assert!(ok.header(&Name::DATE).is_some());
        let writes = ep.drain_writes();
        let binding = writes
            .iter()
            .find_map(|w| match w {
                Write::PutBinding(b) => Some(b.clone()),
                _ => None,
            })
            .expect("binding written");
        assert_eq!(binding.expires_at, now.wall.plus(Duration::from_secs(600)));
        assert_eq!(binding.source, phone.source);
        assert_eq!(binding.transport, Transport::Udp);
        assert_eq!(binding.user_agent.as_deref(), Some("TestPhone/1.0"));
        assert_eq!(writes.len(), 1, "a success is only its binding: {writes:?}");
        assert_eq!(ep.location().binding_count(), 1);
    }
}

#[test]
fn wrong_password_and_unknown_user_look_the_same_but_are_told_apart() {
    let mut ep = endpoint(vec![record("1001", "secret")]);
    let now = start();
    let mut wrong = Phone::new("1001", "guess");
    let r1 = register(&mut ep, now, &mut wrong, None);
    let mut unknown = Phone::new("1999", "guess");
    let r2 = register(&mut ep, now, &mut unknown, None);
    assert_eq!((r1.code, r2.code), (401, 401));
    assert_eq!(r1.reason, r2.reason);
    assert_eq!(
        r1.headers.get_raw(&Name::WWW_AUTHENTICATE).count(),
        r2.headers.get_raw(&Name::WWW_AUTHENTICATE).count()
    );
    assert_eq!(
        failures(&mut ep),
        vec![FailureReason::WrongPassword, FailureReason::UnknownUser]
    );
    let status = ep
        .location()
        .status(&UserKey::new(DOMAIN, "1001"))
        .expect("status");
    assert_eq!(
        status.last_failure.as_ref().map(|f| f.reason),
        Some(FailureReason::WrongPassword)
    );
    assert_eq!(ep.stats().failures[0] + ep.stats().failures[1], 2);
}

#[test]
fn retransmitted_register_gets_the_stored_response_and_is_not_reprocessed() {
    let mut ep = endpoint(vec![record("1001", "secret")]);
    let now = start();
    let mut phone = Phone::new("1001", "secret");
    let challenge = only(send(&mut ep, now, phone.source, phone.request(None, None)));
    let auth = phone.answer(&challenge, "secret");
    let request = phone.request(None, Some(auth));
    let first = ep_send_raw(&mut ep, now, phone.source, request.clone());
    ep.drain_writes();
    let again = ep_send_raw(
        &mut ep,
        now.plus(Duration::from_millis(500)),
        phone.source,
        request,
    );
    assert_eq!(first, again, "byte-identical retransmission");
    assert!(ep.drain_writes().is_empty(), "not reprocessed");
    assert_eq!(ep.stats().retransmissions, 1);
}

fn ep_send_raw(ep: &mut Endpoint, now: Now, source: SocketAddr, bytes: Bytes) -> Bytes {
    ep.handle_packet(now, Flow::udp(source), bytes);
    let t = ep.poll_transmit().expect("a response");
    assert!(ep.poll_transmit().is_none());
    t.bytes
}

#[test]
fn refresh_only_extends_and_removal_unregisters() {
    let mut ep = endpoint(vec![record("1001", "secret")]);
    let now = start();
    let mut phone = Phone::new("1001", "secret");
    assert_eq!(register(&mut ep, now, &mut phone, Some(600)).code, 200);
    ep.drain_writes();
    let later = now.plus(Duration::from_secs(300));
    assert_eq!(register(&mut ep, later, &mut phone, Some(600)).code, 200);
    let writes = ep.drain_writes();
    assert!(writes.iter().any(|w| matches!(w, Write::RefreshBinding { expires_at, .. } if *expires_at == later.wall.plus(Duration::from_secs(600)))), "{writes:?}");
    assert!(!writes.iter().any(|w| matches!(w, Write::PutBinding(_))));
    let ok = register(&mut ep, later, &mut phone, Some(0));
    assert_eq!(ok.code, 200);
    assert_eq!(ok.headers.get_raw(&Name::CONTACT).count(), 0);
    assert_eq!(ep.location().binding_count(), 0);
    assert!(
        ep.drain_writes()
            .iter()
            .any(|w| matches!(w, Write::DeleteBinding(_)))
    );
}

#[test]
fn wildcard_removes_every_binding_and_query_lists_them() {
    let mut ep = endpoint(vec![record("1001", "secret")]);
    let now = start();
    let mut desk = Phone::new("1001", "secret");
    let mut mobile = Phone::new("1001", "secret");
    mobile.source = "192.0.2.11:5060".parse().unwrap();
    mobile.contact = "<sip:1001@192.0.2.11:5060>".into();
    mobile.call_id = "other".into();
    register(&mut ep, now, &mut desk, None);
    register(&mut ep, now, &mut mobile, None);
    desk.contact = String::new();
    let listed = register(&mut ep, now, &mut desk, None);
    assert_eq!(listed.headers.get_raw(&Name::CONTACT).count(), 2);
    desk.contact = "*".into();
    assert_eq!(register(&mut ep, now, &mut desk, Some(0)).code, 200);
    assert_eq!(ep.location().binding_count(), 0);
    assert_eq!(
        register(&mut ep, now, &mut desk, Some(60)).code,
        400,
        "wildcard needs Expires: 0"
    );
}

#[test]
fn too_brief_interval_gets_423_with_min_expires() {
    let mut ep = endpoint(vec![record("1001", "secret")]);
    let mut phone = Phone::new("1001", "secret");
    let r = register(&mut ep, start(), &mut phone, Some(30));
    assert_eq!(r.code, 423);
    assert_eq!(
        r.header(&Name::MIN_EXPIRES).map(|v| v.to_string()),
        Some("60".into())
    );
    let long = register(&mut ep, start(), &mut phone, Some(86_400));
    let contact = long.header(&Name::CONTACT).unwrap().to_string();
    assert!(contact.ends_with(";expires=3600"), "{contact}");
}

#[test]
fn too_many_contacts_is_refused_and_classified() {
    let mut rec = record("1001", "secret");
    rec.max_contacts = 1;
    let mut ep = endpoint(vec![rec]);
    let now = start();
    let mut a = Phone::new("1001", "secret");
    register(&mut ep, now, &mut a, None);
    let mut b = Phone::new("1001", "secret");
    b.contact = "<sip:1001@192.0.2.99:5060>".into();
    b.call_id = "b".into();
    failures(&mut ep);
    let r = register(&mut ep, now, &mut b, None);
    assert_eq!(
        (r.code, r.reason.to_string()),
        (403, "Too Many Contacts".to_owned())
    );
    assert_eq!(failures(&mut ep), vec![FailureReason::TooManyContacts]);
    assert_eq!(ep.location().binding_count(), 1);
}

#[test]
fn same_instance_replaces_the_old_binding() {
    let mut ep = endpoint(vec![record("1001", "secret")]);
    let now = start();
    let mut phone = Phone::new("1001", "secret");
    let instance = "+sip.instance=\"<urn:uuid:a3b2c1d0-1234-4abc-8def-0123456789ab>\";reg-id=1";
    phone.contact = format!("<sip:abc@df7jal23ls0d.invalid;transport=ws>;{instance}");
    register(&mut ep, now, &mut phone, Some(600));
    phone.contact = format!("<sip:xyz@df7jal23ls0d.invalid;transport=ws>;{instance}");
    phone.call_id = "new-call-id-after-reconnect".into();
    let ok = register(&mut ep, now, &mut phone, Some(600));
    assert_eq!(ep.location().binding_count(), 1);
    let contacts: Vec<String> = ok
        .headers
        .get_raw(&Name::CONTACT)
        .map(|v| v.to_string())
        .collect();
    assert_eq!(contacts.len(), 1);
    assert!(
        contacts[0].starts_with("<sip:xyz@df7jal23ls0d.invalid;transport=ws>;expires=600"),
        "{contacts:?}"
    );
    assert!(
        contacts[0].contains("+sip.instance=\"<urn:uuid:a3b2c1d0-1234-4abc-8def-0123456789ab>\"")
    );
}

#[test]
fn private_contact_from_public_source_is_flagged_as_nat() {
    let mut ep = endpoint(vec![record("1001", "secret")]);
    let mut phone = Phone::new("1001", "secret");
    phone.source = "203.0.113.9:40000".parse().unwrap();
    phone.contact = "<sip:1001@192.168.1.20:5060>".into();
    assert_eq!(register(&mut ep, start(), &mut phone, None).code, 200);
    let mut nat = false;
    while let Some(e) = ep.poll_event() {
        nat |= matches!(e, EndpointEvent::NatDetected { .. });
    }
    assert!(nat);
    let binding = &ep.location().bindings(&UserKey::new(DOMAIN, "1001"))[0].binding;
    assert!(binding.nat);
    assert_eq!(
        binding.source, phone.source,
        "requests go where packets come from"
    );
}

#[test]
fn repeated_failures_ban_the_source() {
    let mut ep = endpoint(vec![record("1001", "secret")]);
    let now = start();
    let mut attacker = Phone::new("1001", "guess");
    for _ in 0..11 {
        assert_eq!(register(&mut ep, now, &mut attacker, None).code, 401);
    }
    let banned = send(&mut ep, now, attacker.source, attacker.request(None, None));
    assert!(banned.is_empty(), "banned source is dropped");
    assert_eq!(ep.stats().bans, 1);
    // Another source is unaffected.
    let mut good = Phone::new("1001", "secret");
    good.source = "192.0.2.77:5060".parse().unwrap();
    assert_eq!(register(&mut ep, now, &mut good, None).code, 200);
    // The ban ends.
    let later = now.plus(Duration::from_secs(601));
    assert_eq!(
        send(
            &mut ep,
            later,
            attacker.source,
            attacker.request(None, None)
        )
        .len(),
        1
    );
}

#[test]
fn expired_nonce_is_rechallenged_with_stale_and_not_counted() {
    let mut ep = endpoint(vec![record("1001", "secret")]);
    let now = start();
    let mut phone = Phone::new("1001", "secret");
    let challenge = only(send(&mut ep, now, phone.source, phone.request(None, None)));
    let auth = phone.answer(&challenge, "secret");
    let later = now.plus(Duration::from_secs(301));
    let r = only(send(
        &mut ep,
        later,
        phone.source,
        phone.request(None, Some(auth)),
    ));
    assert_eq!(r.code, 401);
    assert!(
        r.headers
            .get_raw(&Name::WWW_AUTHENTICATE)
            .all(|v| v.contains("stale=true"))
    );
    assert!(failures(&mut ep).is_empty());
}

#[test]
fn disabled_and_passwordless_extensions() {
    let mut off = record("1001", "secret");
    off.enabled = false;
    let mut nosecret = record("1002", "");
    nosecret.enabled = false;
    nosecret.disabled_reason = Some("Secret default/ext-1002 not found".into());
    nosecret.ha1 = Ha1Set {
        md5: String::new(),
        sha256: String::new(),
    };
    let mut ep = endpoint(vec![off, nosecret]);
    let mut a = Phone::new("1001", "secret");
    assert_eq!(register(&mut ep, start(), &mut a, None).code, 403);
    let mut b = Phone::new("1002", "whatever");
    assert_eq!(register(&mut ep, start(), &mut b, None).code, 401);
    assert_eq!(
        failures(&mut ep),
        vec![FailureReason::Disabled, FailureReason::Disabled]
    );
}

#[test]
fn unknown_domain_is_404_and_ip_addressed_requests_use_the_default_domain() {
    let mut ep = endpoint(vec![record("1001", "secret")]);
    let now = start();
    let text = |to_host: &str| {
        Bytes::from(format!(
            "REGISTER sip:{to_host} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{to_host}\r\n\
             From: <sip:1001@{to_host}>;tag=1\r\nTo: <sip:1001@{to_host}>\r\nCall-ID: c{to_host}\r\nCSeq: 1 REGISTER\r\n\
             Contact: <sip:1001@192.0.2.10>\r\nContent-Length: 0\r\n\r\n"
        ))
    };
    let source: SocketAddr = "192.0.2.10:5060".parse().unwrap();
    let r = only(send(&mut ep, now, source, text("other.example.org")));
    assert_eq!(
        (r.code, r.reason.to_string()),
        (404, "Domain Not Served".to_owned())
    );
    assert_eq!(failures(&mut ep), vec![FailureReason::RealmMismatch]);
    for host in ["192.168.1.10", "pbx.local"] {
        let r = only(send(&mut ep, now, source, text(host)));
        assert_eq!(r.code, 401, "{host}");
        assert!(
            r.header(&Name::WWW_AUTHENTICATE)
                .unwrap()
                .contains("realm=\"pbx.example.com\"")
        );
    }
}

#[test]
fn other_methods_and_broken_requests() {
    let mut ep = endpoint(vec![]);
    let now = start();
    let source: SocketAddr = "192.0.2.10:5060".parse().unwrap();
    let branch = std::cell::Cell::new(0);
    let req = |method: &str, uri: &str, extra: &str| {
        branch.set(branch.get() + 1);
        let n = branch.get();
        Bytes::from(format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{n}\r\n\
             From: <sip:1001@{DOMAIN}>;tag=1\r\nTo: <sip:{DOMAIN}>\r\n{extra}CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        ))
    };
    let call_id = "Call-ID: x\r\n";
    let r = only(send(
        &mut ep,
        now,
        source,
        req("OPTIONS", "sip:pbx.example.com", call_id),
    ));
    assert_eq!(r.code, 200);
    assert_eq!(
        r.header(&Name::ALLOW).map(|v| v.to_string()),
        Some(ALLOW.to_owned())
    );
    assert_eq!(
        only(send(
            &mut ep,
            now,
            source,
            req("SUBSCRIBE", "sip:1002@pbx.example.com", call_id)
        ))
        .code,
        405
    );
    assert_eq!(
        only(send(
            &mut ep,
            now,
            source,
            req("FROB", "sip:pbx.example.com", call_id)
        ))
        .code,
        501
    );
    let tel = only(send(
        &mut ep,
        now,
        source,
        req("OPTIONS", "tel:+15551234", "Call-ID: y\r\n"),
    ));
    assert_eq!(tel.code, 416);
    let missing = only(send(
        &mut ep,
        now,
        source,
        req("OPTIONS", "sip:pbx.example.com", ""),
    ));
    assert_eq!(
        (missing.code, missing.reason.to_string()),
        (400, "Missing Call-ID Header".to_owned())
    );
    let unsupported = only(send(
        &mut ep,
        now,
        source,
        req(
            "OPTIONS",
            "sip:pbx.example.com",
            "Call-ID: z\r\nRequire: foo\r\n",
        ),
    ));
    assert_eq!(unsupported.code, 420);
    assert_eq!(
        unsupported
            .header(&Name::UNSUPPORTED)
            .map(|v| v.to_string()),
        Some("foo".into())
    );
    assert!(send(&mut ep, now, source, Bytes::from_static(b"\x00\x01garbage")).is_empty());
    assert!(
        send(
            &mut ep,
            now,
            source,
            Bytes::from_static(b"SIP/2.0 200 OK\r\n\r\n")
        )
        .is_empty()
    );
    assert_eq!(
        ep.stats().dropped[DropReason::ALL
            .iter()
            .position(|d| *d == DropReason::Unparseable)
            .unwrap()],
        1
    );
}

#[test]
fn no_input_panics() {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut ep = endpoint(vec![record("1001", "secret")]);
    let source: SocketAddr = "192.0.2.10:5060".parse().unwrap();
    let base = Phone::new("1001", "secret").request(Some(60), None);
    for _ in 0..5_000 {
        let mut bytes = base.to_vec();
        for _ in 0..rng.random_range(1..8) {
            let i = rng.random_range(0..bytes.len());
            bytes[i] = rng.random();
        }
        let cut = rng.random_range(0..=bytes.len());
        bytes.truncate(cut);
        ep.handle_packet(start(), Flow::udp(source), Bytes::from(bytes));
        while ep.poll_transmit().is_some() {}
    }
}

mod proxy;
