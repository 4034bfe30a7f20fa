//! End-to-end tests of the challenge → response → verify flow, with a tiny client written here.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::{RngExt, SeedableRng, rngs::StdRng};

use super::params::AuthParams;
use super::*;

const SECRET: [u8; 32] = [0x5a; 32];
const REALM: &str = "pbx.example.com";
const USER: &str = "1001";
const PASSWORD: &str = "correct horse";
const URI: &str = "sip:pbx.example.com";
const T0: u64 = 1_750_000_000;

fn auth() -> Authenticator {
    Authenticator::with_first_seq(SECRET, 1, NonceConfig::default(), 1000)
}

fn stored() -> Ha1 {
    Ha1::derive(USER, REALM, PASSWORD)
}

/// A parsed challenge, as a client sees it.
#[derive(Debug)]
struct Challenge {
    realm: String,
    nonce: String,
    algorithm: String,
    qop: String,
    stale: bool,
}

fn read_challenge(value: &str) -> Challenge {
    let (scheme, mut params) = AuthParams::new(value).unwrap();
    assert_eq!(scheme, "Digest");
    let mut c = Challenge {
        realm: String::new(),
        nonce: String::new(),
        algorithm: String::new(),
        qop: String::new(),
        stale: false,
    };
    while let Some((name, v)) = params.next_param().unwrap() {
        let v = Cow::into_owned(v);
        match name {
            "realm" => c.realm = v,
            "nonce" => c.nonce = v,
            "algorithm" => c.algorithm = v,
            "qop" => c.qop = v,
            "stale" => c.stale = v.eq_ignore_ascii_case("true"),
            other => panic!("unexpected challenge parameter {other}"),
        }
    }
    c
}

/// What a phone does: answer a challenge with `password`, spelling the algorithm as `alg_text`
/// (`None` = omit the parameter), with `qop=auth` and count `nc` unless `nc` is `None`.
fn answer(
    c: &Challenge,
    alg_text: Option<&str>,
    password: &str,
    method: &str,
    nc: Option<u32>,
) -> Credentials {
    let algorithm = Algorithm::parse(alg_text.unwrap_or("MD5")).unwrap_or(Algorithm::Md5);
    let ha1 = ha1(algorithm, USER, &c.realm, password);
    let nc_text = nc.map(|n| format!("{n:08x}"));
    let cnonce = "0a4f113b";
    let qop = nc_text.as_deref().map(|nc| QopAuth {
        qop: "auth",
        nc,
        cnonce,
    });
    let resp = response(algorithm, &ha1, &c.nonce, method, URI, qop);
    let mut v = format!(
        "Digest username=\"{USER}\", realm=\"{}\", nonce=\"{}\", uri=\"{URI}\", response=\"{}\"",
        c.realm,
        c.nonce,
        resp.as_str()
    );
    if let Some(a) = alg_text {
        v.push_str(&format!(", algorithm={a}"));
    }
    if let Some(nc) = &nc_text {
        v.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
    }
    parse_credentials(&v).unwrap()
}

/// A fresh MD5 challenge from `a` at time `now`.
fn md5_challenge(a: &mut Authenticator, now: u64) -> Challenge {
    let [_, md5] = a.challenge(REALM, false, now);
    read_challenge(&md5)
}

#[test]
fn challenge_offers_sha256_first_and_md5_last() {
    let mut a = auth();
    let [first, last] = a.challenge(REALM, false, T0);
    let (first, last) = (read_challenge(&first), read_challenge(&last));
    assert_eq!(first.algorithm, "SHA-256");
    assert_eq!(last.algorithm, "MD5");
    for c in [&first, &last] {
        assert_eq!(c.realm, REALM);
        assert_eq!(c.qop, "auth");
        assert!(!c.stale);
    }
    assert_eq!(first.nonce, last.nonce, "one nonce for both challenges");
    let [again, _] = a.challenge(REALM, true, T0);
    let again = read_challenge(&again);
    assert!(again.stale);
    assert_ne!(
        again.nonce, first.nonce,
        "every challenge has a fresh nonce"
    );
}

#[test]
fn md5_and_sha256_responses_verify() {
    let mut a = auth();
    let [sha, md5] = a.challenge(REALM, false, T0);
    let (sha, md5) = (read_challenge(&sha), read_challenge(&md5));
    let creds = answer(&sha, Some("SHA-256"), PASSWORD, "REGISTER", Some(1));
    let ok = a
        .verify(&creds, "REGISTER", REALM, &stored(), T0 + 1)
        .unwrap();
    assert_eq!(ok.algorithm, Algorithm::Sha256);
    assert_eq!(ok.nc, Some(1));
    assert_eq!(ok.nonce_issued_at, T0);

    // Both challenges carry the same nonce, so its next use needs the next nc.
    let creds = answer(&md5, Some("MD5"), PASSWORD, "INVITE", Some(2));
    let ok = a
        .verify(&creds, "INVITE", REALM, &stored(), T0 + 1)
        .unwrap();
    assert_eq!((ok.algorithm, ok.nc), (Algorithm::Md5, Some(2)));

    // No algorithm parameter means MD5.
    let [_, md5_2] = a.challenge(REALM, false, T0);
    let creds = answer(&read_challenge(&md5_2), None, PASSWORD, "INVITE", Some(1));
    assert_eq!(creds.algorithm, None);
    let ok = a
        .verify(&creds, "INVITE", REALM, &stored(), T0 + 1)
        .unwrap();
    assert_eq!(ok.algorithm, Algorithm::Md5);
}

#[test]
fn zoiper_lowercase_md5_and_lowercase_sha256_are_accepted() {
    let mut a = auth();
    for alg in ["md5", "sha-256"] {
        let c = md5_challenge(&mut a, T0);
        let creds = answer(&c, Some(alg), PASSWORD, "REGISTER", Some(1));
        assert!(
            a.verify(&creds, "REGISTER", REALM, &stored(), T0).is_ok(),
            "{alg}"
        );
    }
}

#[test]
fn wrong_password_does_not_poison_the_nonce() {
    let mut a = auth();
    let c = md5_challenge(&mut a, T0);
    let bad = answer(&c, Some("MD5"), "wrong", "REGISTER", Some(1));
    assert_eq!(
        a.verify(&bad, "REGISTER", REALM, &stored(), T0),
        Err(AuthFailure::WrongPassword)
    );
    let good = answer(&c, Some("MD5"), PASSWORD, "REGISTER", Some(1));
    assert!(a.verify(&good, "REGISTER", REALM, &stored(), T0).is_ok());
}

#[test]
fn method_is_part_of_the_digest() {
    let mut a = auth();
    let c = md5_challenge(&mut a, T0);
    let creds = answer(&c, None, PASSWORD, "REGISTER", Some(1));
    assert_eq!(
        a.verify(&creds, "INVITE", REALM, &stored(), T0),
        Err(AuthFailure::WrongPassword)
    );
}

#[test]
fn realm_mismatch() {
    let mut a = auth();
    let c = md5_challenge(&mut a, T0);
    let mut creds = answer(&c, None, PASSWORD, "REGISTER", Some(1));
    creds.realm = "asterisk".into();
    let err = a
        .verify(&creds, "REGISTER", REALM, &stored(), T0)
        .unwrap_err();
    assert_eq!(
        err,
        AuthFailure::RealmMismatch {
            got: "asterisk".into(),
            expected: REALM.into()
        }
    );
    assert!(err.to_string().contains("\"asterisk\""), "{err}");
}

#[test]
fn check_order_follows_the_documented_sequence() {
    let mut a = auth();
    let late = T0 + 10_000;
    let c = md5_challenge(&mut a, T0);
    let mut creds = answer(&c, None, "wrong", "REGISTER", Some(1));
    // Wrong password, expired nonce, wrong realm: the realm is reported.
    creds.realm = "asterisk".into();
    assert!(matches!(
        a.verify(&creds, "REGISTER", REALM, &stored(), late),
        Err(AuthFailure::RealmMismatch { .. })
    ));
    // Wrong password and expired nonce: stale, so the phone retries with a fresh nonce ...
    creds.realm = REALM.into();
    assert_eq!(
        a.verify(&creds, "REGISTER", REALM, &stored(), late),
        Err(AuthFailure::StaleNonce(StaleReason::Expired))
    );
    // ... and only then learns about the password.
    let c = md5_challenge(&mut a, late);
    let creds = answer(&c, None, "wrong", "REGISTER", Some(1));
    assert_eq!(
        a.verify(&creds, "REGISTER", REALM, &stored(), late),
        Err(AuthFailure::WrongPassword)
    );
}

#[test]
fn expired_nonce_is_stale() {
    let mut a = auth();
    let ttl = a.config().ttl_secs;
    let c = md5_challenge(&mut a, T0);
    let creds = answer(&c, None, PASSWORD, "REGISTER", Some(1));
    let err = a
        .verify(&creds, "REGISTER", REALM, &stored(), T0 + ttl + 1)
        .unwrap_err();
    assert_eq!(err, AuthFailure::StaleNonce(StaleReason::Expired));
    assert!(err.rechallenge_stale());
    // Exactly at the ttl it is still valid; a clock that went back a little is tolerated.
    assert!(
        a.verify(&creds, "REGISTER", REALM, &stored(), T0 + ttl)
            .is_ok()
    );
    let c = md5_challenge(&mut a, T0);
    let creds = answer(&c, None, PASSWORD, "REGISTER", Some(1));
    assert!(
        a.verify(&creds, "REGISTER", REALM, &stored(), T0 - 5)
            .is_ok()
    );
}

#[test]
fn replayed_nc_is_refused_and_increasing_nc_is_accepted() {
    let mut a = auth();
    let c = md5_challenge(&mut a, T0);
    let first = answer(&c, None, PASSWORD, "REGISTER", Some(1));
    assert!(a.verify(&first, "REGISTER", REALM, &stored(), T0).is_ok());
    let err = a
        .verify(&first, "REGISTER", REALM, &stored(), T0)
        .unwrap_err();
    assert_eq!(err, AuthFailure::NonceReplay);
    assert!(!err.rechallenge_stale());
    let second = answer(&c, None, PASSWORD, "REGISTER", Some(2));
    assert_eq!(
        a.verify(&second, "REGISTER", REALM, &stored(), T0 + 60)
            .map(|v| v.nc),
        Ok(Some(2))
    );
    let jump = answer(&c, None, PASSWORD, "INVITE", Some(0x10));
    assert!(a.verify(&jump, "INVITE", REALM, &stored(), T0 + 61).is_ok());
    assert_eq!(
        a.verify(&second, "REGISTER", REALM, &stored(), T0 + 62),
        Err(AuthFailure::NonceReplay)
    );
}

#[test]
fn no_qop_response_is_accepted_once() {
    let mut a = auth();
    let c = md5_challenge(&mut a, T0);
    let wrong = answer(&c, None, "nope", "REGISTER", None);
    assert_eq!(
        a.verify(&wrong, "REGISTER", REALM, &stored(), T0),
        Err(AuthFailure::WrongPassword)
    );
    let creds = answer(&c, None, PASSWORD, "REGISTER", None);
    assert_eq!(creds.qop, None);
    assert_eq!(
        a.verify(&creds, "REGISTER", REALM, &stored(), T0)
            .map(|v| v.nc),
        Ok(None)
    );
    assert_eq!(
        a.verify(&creds, "REGISTER", REALM, &stored(), T0),
        Err(AuthFailure::NonceReplay)
    );
    let with_qop = answer(&c, None, PASSWORD, "REGISTER", Some(1));
    assert_eq!(
        a.verify(&with_qop, "REGISTER", REALM, &stored(), T0),
        Err(AuthFailure::NonceReplay),
        "a burned nonce cannot be reused with qop either"
    );
}

#[test]
fn unsupported_algorithms_and_qop() {
    let mut a = auth();
    let c = md5_challenge(&mut a, T0);
    for alg in ["MD5-sess", "SHA-256-sess", "SHA-512-256", "AKAv1-MD5"] {
        let mut creds = answer(&c, Some("MD5"), PASSWORD, "REGISTER", Some(1));
        creds.algorithm = Some(alg.into());
        // Checked before anything else, even a realm mismatch.
        creds.realm = "elsewhere".into();
        assert_eq!(
            a.verify(&creds, "REGISTER", REALM, &stored(), T0),
            Err(AuthFailure::UnsupportedAlgorithm(alg.into()))
        );
    }
    let mut creds = answer(&c, None, PASSWORD, "REGISTER", Some(1));
    creds.qop = Some("auth-int".into());
    assert_eq!(
        a.verify(&creds, "REGISTER", REALM, &stored(), T0),
        Err(AuthFailure::UnsupportedQop("auth-int".into()))
    );
}

#[test]
fn nonce_from_another_instance_or_a_previous_life_is_stale() {
    let mut other = Authenticator::with_first_seq(SECRET, 2, NonceConfig::default(), 1000);
    let c = md5_challenge(&mut other, T0);
    let creds = answer(&c, None, PASSWORD, "REGISTER", Some(1));
    let mut a = auth();
    let _ = a.challenge(REALM, false, T0);
    assert_eq!(
        a.verify(&creds, "REGISTER", REALM, &stored(), T0),
        Err(AuthFailure::StaleNonce(StaleReason::OtherReplica))
    );
    assert!(
        other
            .verify(&creds, "REGISTER", REALM, &stored(), T0)
            .is_ok()
    );

    // Same secret and tag, recreated (a restart): the old nonces are stale.
    let mut before = Authenticator::new(SECRET, 1, NonceConfig::default());
    let c = md5_challenge(&mut before, T0);
    let creds = answer(&c, None, PASSWORD, "REGISTER", Some(1));
    let mut after = Authenticator::new(SECRET, 1, NonceConfig::default());
    let _ = after.challenge(REALM, false, T0);
    assert_eq!(
        after.verify(&creds, "REGISTER", REALM, &stored(), T0),
        Err(AuthFailure::StaleNonce(StaleReason::BeforeRestart))
    );
}

#[test]
fn forged_and_foreign_nonces_are_invalid() {
    let mut a = auth();
    let c = md5_challenge(&mut a, T0);
    let creds = |nonce: &str| {
        let forged = Challenge {
            nonce: nonce.into(),
            ..read_challenge(&format!(
                "Digest realm=\"{REALM}\", algorithm=MD5, qop=\"auth\""
            ))
        };
        answer(&forged, None, PASSWORD, "REGISTER", Some(1))
    };
    // Flip one character of a genuine nonce.
    let mut flipped = c.nonce.clone().into_bytes();
    flipped[5] = if flipped[5] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let other_secret = {
        let mut b = Authenticator::with_first_seq([9; 32], 1, NonceConfig::default(), 1000);
        md5_challenge(&mut b, T0).nonce
    };
    let other_realm = {
        let [_, md5] = a.challenge("other.example.com", false, T0);
        read_challenge(&md5).nonce
    };
    // Well-formed (version 1) but made up.
    let made_up = URL_SAFE_NO_PAD.encode([1u8; 35]);
    for nonce in [&flipped, &other_secret, &other_realm, &made_up] {
        let err = a
            .verify(&creds(nonce), "REGISTER", REALM, &stored(), T0)
            .unwrap_err();
        assert_eq!(err, AuthFailure::InvalidNonce(InvalidNonceReason::BadMac));
        assert!(err.rechallenge_stale());
    }
    let version_0 = "A".repeat(47);
    for nonce in [
        "",
        "abc",
        "1712345678/2f1c0a6b9e8d7c6b5a49382716051423",
        &version_0,
    ] {
        assert_eq!(
            a.verify(&creds(nonce), "REGISTER", REALM, &stored(), T0),
            Err(AuthFailure::InvalidNonce(InvalidNonceReason::Garbled))
        );
    }
    // The genuine nonce still works afterwards.
    let good = answer(&c, None, PASSWORD, "REGISTER", Some(1));
    assert!(a.verify(&good, "REGISTER", REALM, &stored(), T0).is_ok());
}

#[test]
fn replay_ring_wraparound_makes_old_nonces_stale() {
    let config = NonceConfig {
        ttl_secs: 300,
        replay_slots: 4,
    };
    let mut a = Authenticator::with_first_seq(SECRET, 1, config, 0);
    let oldest = md5_challenge(&mut a, T0);
    let used = md5_challenge(&mut a, T0);
    let creds_used = answer(&used, None, PASSWORD, "REGISTER", Some(1));
    assert!(
        a.verify(&creds_used, "REGISTER", REALM, &stored(), T0)
            .is_ok()
    );
    let within: Vec<Challenge> = (0..3).map(|_| md5_challenge(&mut a, T0)).collect();
    // Five issued, four slots: the oldest is gone, the other four are tracked.
    let creds = answer(&oldest, None, PASSWORD, "REGISTER", Some(1));
    assert_eq!(
        a.verify(&creds, "REGISTER", REALM, &stored(), T0),
        Err(AuthFailure::StaleNonce(StaleReason::Evicted))
    );
    assert_eq!(
        a.verify(&creds_used, "REGISTER", REALM, &stored(), T0),
        Err(AuthFailure::NonceReplay)
    );
    for c in &within {
        let creds = answer(c, None, PASSWORD, "REGISTER", Some(1));
        assert!(a.verify(&creds, "REGISTER", REALM, &stored(), T0).is_ok());
    }
    // Slot reuse: the next nonce lands in the oldest's slot and starts fresh.
    let next = md5_challenge(&mut a, T0);
    let creds = answer(&next, None, PASSWORD, "REGISTER", Some(1));
    assert!(a.verify(&creds, "REGISTER", REALM, &stored(), T0).is_ok());
    assert_eq!(
        a.verify(&creds_used, "REGISTER", REALM, &stored(), T0),
        Err(AuthFailure::StaleNonce(StaleReason::Evicted))
    );
}

#[test]
fn malformed_and_missing_ha1() {
    let mut a = auth();
    let c = md5_challenge(&mut a, T0);
    let good = answer(&c, None, PASSWORD, "REGISTER", Some(1));

    let mut zero_nc = good.clone();
    zero_nc.nc = Some("00000000".into());
    let mut short_response = good.clone();
    short_response.response.pop();
    let mut sha_length_for_md5 = good.clone();
    sha_length_for_md5.response = "ab".repeat(32);
    let mut no_cnonce = good.clone();
    no_cnonce.cnonce = None;
    for creds in [zero_nc, short_response, sha_length_for_md5, no_cnonce] {
        let err = a
            .verify(&creds, "REGISTER", REALM, &stored(), T0)
            .unwrap_err();
        assert!(matches!(err, AuthFailure::Malformed(_)), "{err}");
    }

    let no_sha = Ha1 {
        md5: stored().md5,
        sha256: String::new(),
    };
    let sha = answer(&c, Some("SHA-256"), PASSWORD, "REGISTER", Some(1));
    assert_eq!(
        a.verify(&sha, "REGISTER", REALM, &no_sha, T0),
        Err(AuthFailure::MissingHa1(Algorithm::Sha256))
    );
    // Uppercase hex from a client, or in storage, is tolerated.
    let mut upper = good.clone();
    upper.response.make_ascii_uppercase();
    let upper_ha1 = Ha1 {
        md5: stored().md5.to_ascii_uppercase(),
        sha256: String::new(),
    };
    assert!(a.verify(&upper, "REGISTER", REALM, &upper_ha1, T0).is_ok());
}

#[test]
fn failures_have_distinct_labels_and_readable_text() {
    let all = [
        AuthFailure::WrongPassword,
        AuthFailure::RealmMismatch {
            got: "a".into(),
            expected: "b".into(),
        },
        AuthFailure::StaleNonce(StaleReason::Expired),
        AuthFailure::InvalidNonce(InvalidNonceReason::BadMac),
        AuthFailure::NonceReplay,
        AuthFailure::UnsupportedAlgorithm("MD5-sess".into()),
        AuthFailure::UnsupportedQop("auth-int".into()),
        AuthFailure::MissingHa1(Algorithm::Md5),
        AuthFailure::from(CredentialsError::MissingParam("nonce")),
    ];
    let mut labels: Vec<_> = all.iter().map(AuthFailure::reason).collect();
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels.len(), all.len());
    for f in &all {
        assert!(f.to_string().len() > 15, "{f}");
    }
    assert_eq!(
        all[8].to_string(),
        "malformed credentials: missing nonce parameter"
    );
}

#[test]
fn debug_output_has_no_secrets() {
    let mut a = auth();
    let c = md5_challenge(&mut a, T0);
    let creds = answer(&c, None, PASSWORD, "REGISTER", Some(1));
    let h = stored();
    let dbg = format!("{a:?} {creds:?} {h:?}");
    assert!(!dbg.contains(&creds.response));
    assert!(!dbg.contains(&h.md5) && !dbg.contains(&h.sha256));
    assert!(!dbg.contains("90, 90"), "secret bytes");
}

#[test]
fn random_credentials_never_panic() {
    let mut rng = StdRng::seed_from_u64(42);
    let mut a = auth();
    let c = md5_challenge(&mut a, T0);
    let template = answer(&c, None, PASSWORD, "REGISTER", Some(1));
    let pieces = [
        "",
        "MD5",
        "md5",
        "SHA-256",
        "auth",
        "auth-int",
        "00000001",
        "ffffffff",
        "zz",
        "\"",
        "é",
        REALM,
        &c.nonce,
        &template.response,
    ];
    let pick = |rng: &mut StdRng| -> String {
        match rng.random_range(0..3) {
            0 => pieces[rng.random_range(0..pieces.len())].to_owned(),
            1 => (0..rng.random_range(0..70))
                .map(|_| char::from(rng.random_range(0x20u8..0x7f)))
                .collect(),
            _ => {
                let bytes: Vec<u8> = (0..rng.random_range(0..70)).map(|_| rng.random()).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
        }
    };
    for i in 0..5_000 {
        let mut creds = template.clone();
        match i % 8 {
            0 => creds.algorithm = Some(pick(&mut rng)),
            1 => creds.qop = Some(pick(&mut rng)),
            2 => creds.nc = Some(pick(&mut rng)),
            3 => creds.cnonce = None,
            4 => creds.nonce = pick(&mut rng),
            5 => creds.response = pick(&mut rng),
            6 => creds.realm = pick(&mut rng),
            _ => {
                creds.nc = None;
                creds.uri = pick(&mut rng);
            }
        }
        let ha1 = Ha1 {
            md5: pick(&mut rng),
            sha256: stored().sha256,
        };
        let _ = a.verify(&creds, &pick(&mut rng), REALM, &ha1, rng.random());
        let _ = a.verify(&creds, "REGISTER", REALM, &stored(), T0);
    }
}

/// Throughput check: `cargo test --release -p kubepbx-sip auth::tests::throughput -- --ignored
/// --nocapture`.
#[test]
#[ignore = "timing; run in release mode"]
fn throughput() {
    let mut a = auth();
    let h = stored();
    let n: u32 = 200_000;
    let start = std::time::Instant::now();
    for i in 0..n {
        let [_, md5] = a.challenge(REALM, false, T0);
        let c = read_challenge(&md5);
        let creds = answer(&c, Some("MD5"), PASSWORD, "REGISTER", Some(1));
        let header = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{}\", \
             algorithm=MD5, cnonce=\"0a4f113b\", qop=auth, nc=00000001",
            creds.username, creds.realm, creds.nonce, creds.uri, creds.response
        );
        let parsed = parse_credentials(&header).unwrap();
        let _ =
            std::hint::black_box(a.verify(&parsed, "REGISTER", REALM, &h, T0 + u64::from(i % 100)));
    }
    let full = start.elapsed();

    // Verification alone (parse + verify), on pre-built headers.
    let headers: Vec<String> = (0..n)
        .map(|_| {
            let c = md5_challenge(&mut a, T0);
            let cr = answer(&c, Some("MD5"), PASSWORD, "REGISTER", Some(1));
            format!(
                "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", \
                 response=\"{}\", algorithm=MD5, cnonce=\"0a4f113b\", qop=auth, nc=00000001",
                cr.username, cr.realm, cr.nonce, cr.uri, cr.response
            )
        })
        .collect();
    let start = std::time::Instant::now();
    for header in &headers {
        let parsed = parse_credentials(header).unwrap();
        a.verify(&parsed, "REGISTER", REALM, &h, T0).unwrap();
    }
    let verify = start.elapsed();
    println!(
        "challenge+client+parse+verify: {:.0}/s; parse+verify: {:.0}/s",
        f64::from(n) / full.as_secs_f64(),
        f64::from(n) / verify.as_secs_f64()
    );
}
