//! SDP parse/rewrite tests on real-world offers (`media/tests/sdp/`, see its README).

use super::*;
use std::net::Ipv4Addr;

const SIPP: &str = include_str!("../tests/sdp/sipp.sdp");
const PJSUA2: &str = include_str!("../tests/sdp/pjsua2.sdp");
const BARESIP: &str = include_str!("../tests/sdp/baresip.sdp");
const ZOIPER: &str = include_str!("../tests/sdp/zoiper.sdp");
const LINPHONE_ICE: &str = include_str!("../tests/sdp/linphone-ice.sdp");
const VIDEO: &str = include_str!("../tests/sdp/video.sdp");
const HOLD: &str = include_str!("../tests/sdp/hold.sdp");
const SRTP: &str = include_str!("../tests/sdp/srtp.sdp");
const NO_AUDIO: &str = include_str!("../tests/sdp/nonaudio.sdp");
const WEBRTC: &str = include_str!("../tests/sdp/webrtc.sdp");

const ALL_CARRIED: &[&str] = &[
    SIPP,
    PJSUA2,
    BARESIP,
    ZOIPER,
    LINPHONE_ICE,
    VIDEO,
    HOLD,
    SRTP,
];

fn relay() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10))
}

fn public_source() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7))
}

fn lan_source() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 168, 1, 99))
}

fn addr(s: &str) -> Option<SocketAddr> {
    Some(s.parse().unwrap())
}

fn lines(s: &str) -> Vec<&str> {
    s.split("\r\n").filter(|l| !l.is_empty()).collect()
}

#[test]
fn sipp_default_offer_is_rewritten_exactly() {
    let parsed = parse(SIPP, IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
    assert_eq!(parsed.remote.rtp, addr("127.0.0.1:6000"));
    assert_eq!(parsed.remote.rtcp, addr("127.0.0.1:6001"));
    assert!(!parsed.remote.rtcp_mux);
    assert_eq!(parsed.remote.payloads, vec![(0, Codec::Pcmu)]);
    assert_eq!(
        parsed.rewrite(relay(), 20000),
        "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 203.0.113.10\r\n\
         t=0 0\r\nm=audio 20000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    );
}

#[test]
fn pjsua2_offer_keeps_everything_but_addresses_and_ports() {
    let parsed = parse(PJSUA2, IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
    assert_eq!(parsed.remote.rtp, addr("127.0.0.1:4000"));
    assert_eq!(parsed.remote.rtcp, addr("127.0.0.1:4001"));
    assert!(parsed.remote.payloads.contains(&(8, Codec::Pcma)));
    assert!(
        parsed
            .remote
            .payloads
            .contains(&(96, Codec::Other("speex/16000".into())))
    );
    let out = parsed.rewrite(relay(), 20010);
    let (before, after) = (lines(PJSUA2), lines(&out));
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(&after) {
        match *b {
            "m=audio 4000 RTP/AVP 96 97 98 99 3 0 8 9 120 121 122" => {
                assert_eq!(*a, "m=audio 20010 RTP/AVP 96 97 98 99 3 0 8 9 120 121 122")
            }
            "c=IN IP4 127.0.0.1" => assert_eq!(*a, "c=IN IP4 203.0.113.10"),
            "a=rtcp:4001 IN IP4 127.0.0.1" => assert_eq!(*a, "a=rtcp:20011 IN IP4 203.0.113.10"),
            _ => assert_eq!(a, b),
        }
    }
}

#[test]
fn rtcp_mux_and_telephone_event_pass_through() {
    for sdp in [BARESIP, ZOIPER] {
        let parsed = parse(sdp, public_source()).unwrap();
        assert!(parsed.remote.rtcp_mux);
        let out = parsed.rewrite(relay(), 20020);
        assert!(out.contains("a=rtcp-mux\r\n"), "{out}");
        assert!(out.contains("telephone-event/8000\r\n"), "{out}");
        assert!(out.contains("m=audio 20020 RTP/AVP "), "{out}");
        assert!(!out.contains("c=IN IP4 192.168."), "{out}");
    }
    let out = parse(BARESIP, public_source())
        .unwrap()
        .rewrite(relay(), 20020);
    assert!(
        out.contains("a=ptime:20\r\na=") || out.ends_with("a=ptime:20\r\n"),
        "{out}"
    );
    assert!(out.contains("a=fmtp:96 stereo=1;sprop-stereo=1\r\n"));
}

#[test]
fn private_sdp_address_from_a_public_source_is_nat() {
    // baresip behind NAT: c=192.168.1.30, signalling from a public address.
    let parsed = parse(BARESIP, public_source()).unwrap();
    assert_eq!(parsed.remote.rtp, addr("198.51.100.7:10000"));
    // rtcp-mux offered, but RTCP's fallback port is still port + 1 until the answer decides.
    assert_eq!(parsed.remote.rtcp, addr("198.51.100.7:10001"));
    // Same LAN as the PBX: the SDP address is right.
    let parsed = parse(BARESIP, lan_source()).unwrap();
    assert_eq!(parsed.remote.rtp, addr("192.168.1.30:10000"));
}

#[test]
fn ice_attributes_are_stripped_at_both_levels() {
    let parsed = parse(LINPHONE_ICE, public_source()).unwrap();
    assert_eq!(parsed.remote.rtp, addr("203.0.113.5:7078"));
    assert_eq!(parsed.remote.rtcp, addr("203.0.113.5:7079"));
    let out = parsed.rewrite(relay(), 20030);
    for gone in ["candidate", "ice-", "end-of-candidates"] {
        assert!(!out.contains(gone), "{gone} in {out}");
    }
    assert!(out.contains("a=rtcp:20031\r\n"), "{out}");
    assert!(out.contains("a=rtcp-xr:rcvr-rtt=all:10000"), "{out}");
    assert!(out.contains("a=rtcp-fb:* ccm tmmbr\r\n"), "{out}");
    assert_eq!(lines(&out).len(), lines(LINPHONE_ICE).len() - 8);
}

#[test]
fn video_is_declined_with_port_zero() {
    let parsed = parse(VIDEO, lan_source()).unwrap();
    assert_eq!(parsed.audio_index(), 0);
    let out = parsed.rewrite(relay(), 20040);
    assert!(out.contains("m=audio 20040 RTP/AVP 0 8 101\r\n"), "{out}");
    assert!(out.contains("m=video 0 RTP/AVP 97\r\n"), "{out}");
    assert!(!out.contains("c=IN IP4 10.0.0.7"), "{out}");
    assert!(!out.contains("a=rtcp:4003 IN IP4 10.0.0.7"), "{out}");
}

#[test]
fn hold_reoffer_keeps_direction_and_unspecified_address() {
    let parsed = parse(HOLD, IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
    assert_eq!(parsed.remote.rtp, None);
    assert_eq!(parsed.remote.rtcp, None);
    let out = parsed.rewrite(relay(), 20050);
    assert!(out.contains("c=IN IP4 0.0.0.0\r\n"), "{out}");
    assert!(out.contains("a=sendonly\r\n"), "{out}");
    assert!(out.contains("m=audio 20050 RTP/AVP 0 101\r\n"), "{out}");
    assert!(out.contains("a=rtcp:20051 IN IP4 0.0.0.0\r\n"), "{out}");
}

#[test]
fn sdes_srtp_passes_through() {
    let parsed = parse(SRTP, lan_source()).unwrap();
    assert!(parsed.remote.secure);
    let out = parsed.rewrite(relay(), 20060);
    assert!(out.contains("m=audio 20060 RTP/SAVP 0 101\r\n"), "{out}");
    assert!(
        out.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"),
        "{out}"
    );
}

#[test]
fn rejections() {
    assert_eq!(
        parse(NO_AUDIO, lan_source()).unwrap_err(),
        MediaError::NoAudio
    );
    // A browser's offer is WebRTC (see flavour_tests); DTLS without ICE is not.
    assert_eq!(parse(WEBRTC, lan_source()).unwrap().kind, LegKind::WebRtc);
    let no_ice = WEBRTC.replace("a=ice-ufrag:Kx3Z\r\n", "");
    assert_eq!(
        parse(&no_ice, lan_source()).unwrap_err(),
        MediaError::UnsupportedTransport("UDP/TLS/RTP/SAVPF".into())
    );
    let disabled = SIPP.replace("m=audio 6000", "m=audio 0");
    assert_eq!(
        parse(&disabled, lan_source()).unwrap_err(),
        MediaError::NoAudio
    );
    assert!(matches!(
        parse("", lan_source()),
        Err(MediaError::MalformedSdp(_))
    ));
    assert!(matches!(
        parse("hello", lan_source()),
        Err(MediaError::MalformedSdp(_))
    ));
    let huge = format!("{SIPP}{}", "a=x\r\n".repeat(20_000));
    assert!(matches!(
        parse(&huge, lan_source()),
        Err(MediaError::MalformedSdp(_))
    ));
}

#[test]
fn every_carried_fixture_rewrites_consistently() {
    for sdp in ALL_CARRIED {
        let parsed = parse(sdp, public_source()).unwrap();
        let out = parsed.rewrite(relay(), 20100);
        // The rewritten SDP parses again, and its audio now points at the relay.
        let again = parse(&out, public_source()).unwrap();
        if parsed.remote.rtp.is_some() {
            assert_eq!(again.remote.rtp, addr("203.0.113.10:20100"), "{out}");
            assert_eq!(again.remote.rtcp, addr("203.0.113.10:20101"), "{out}");
        }
        assert_eq!(again.remote.rtcp_mux, parsed.remote.rtcp_mux);
        assert_eq!(again.remote.payloads, parsed.remote.payloads);
        // Rewriting is idempotent.
        assert_eq!(again.rewrite(relay(), 20100), out);
    }
}

#[test]
fn ipv6_advertise() {
    let v6: IpAddr = "2001:db8::10".parse().unwrap();
    let out = parse(SIPP, lan_source()).unwrap().rewrite(v6, 20000);
    assert!(out.contains("c=IN IP6 2001:db8::10\r\n"), "{out}");
}

#[test]
fn address_rules() {
    let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    let public = v4(198, 51, 100, 7);
    let lo = v4(127, 0, 0, 1);
    assert_eq!(usable_ip(Some(Some(v4(0, 0, 0, 0))), public), None);
    assert_eq!(usable_ip(Some(Some(v4(10, 255, 255, 1))), lo), Some(lo));
    assert_eq!(
        usable_ip(Some(Some(v4(100, 64, 0, 1))), public),
        Some(public)
    );
    assert_eq!(
        usable_ip(Some(Some(v4(10, 0, 0, 1))), v4(10, 0, 0, 2)),
        Some(v4(10, 0, 0, 1))
    );
    assert_eq!(usable_ip(Some(Some(lo)), public), Some(public));
    assert_eq!(usable_ip(Some(None), public), Some(public)); // c=IN IP4 host.example.com
    assert_eq!(usable_ip(None, public), Some(public));
    assert_eq!(
        usable_ip(Some(Some(v4(203, 0, 113, 5))), public),
        Some(v4(203, 0, 113, 5))
    );
    assert!(is_internal("fd00::1".parse().unwrap()));
    assert!(is_internal("fe80::1".parse().unwrap()));
    assert!(!is_internal("2001:db8::1".parse().unwrap()));
}

/// A deterministic xorshift generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn garbage_never_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Every truncation of every fixture.
    for sdp in ALL_CARRIED.iter().chain([&NO_AUDIO, &WEBRTC]) {
        for cut in 0..sdp.len() {
            if let Some(prefix) = sdp.get(..cut)
                && let Ok(p) = parse(prefix, public_source())
            {
                let _ = p.rewrite(relay(), 20000);
            }
        }
    }
    // Random byte flips and line splices.
    let alphabet = b"v=omcsta:/ \r\n0123456789IN IP4audioRTP/AVP-.*;";
    for round in 0..20_000 {
        let base = ALL_CARRIED[round % ALL_CARRIED.len()];
        let mut bytes = base.as_bytes().to_vec();
        for _ in 0..(1 + rng.next() % 8) {
            let at = (rng.next() as usize) % bytes.len();
            match rng.next() % 3 {
                0 => bytes[at] = alphabet[(rng.next() as usize) % alphabet.len()],
                1 => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, (rng.next() & 0xff) as u8),
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(p) = parse(&text, public_source()) {
            let out = p.rewrite(relay(), 65534);
            let _ = parse(&out, public_source());
        }
    }
    // Pure noise.
    for _ in 0..2_000 {
        let len = (rng.next() % 300) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| (rng.next() & 0x7f) as u8).collect();
        let _ = parse(&String::from_utf8_lossy(&bytes), public_source());
    }
}

#[test]
fn recorded_calls_keep_only_g711_and_dtmf() {
    let mut parsed = parse(PJSUA2, lan_source()).unwrap();
    assert!(parsed.keep_only_g711());
    let out = parsed.rewrite(relay(), 20000);
    let m = lines(&out)
        .into_iter()
        .find(|l| l.starts_with("m=audio"))
        .unwrap()
        .to_owned();
    let pts: Vec<&str> = m.split(' ').skip(3).collect();
    for pt in &pts {
        assert!(
            out.contains(&format!("a=rtpmap:{pt} ")) || ["0", "8", "13"].contains(pt),
            "{pt} kept without a mapping:\n{out}"
        );
    }
    assert!(pts.contains(&"0") && pts.contains(&"8"), "{m}");
    for gone in ["speex", "iLBC", "GSM", "G722", "opus"] {
        assert!(!out.contains(gone), "{gone} still offered:\n{out}");
    }
    assert!(out.contains("a=rtpmap:121 telephone-event/8000"), "{out}");
    assert!(!out.contains("telephone-event/16000"), "{out}");
    assert_eq!(pts, ["0", "8", "121"], "{m}");
    assert!(
        parsed
            .remote
            .payloads
            .iter()
            .all(|(_, c)| c != &Codec::Other("speex/16000".into()))
    );
    // Nothing to do for an offer that is G.711 already, nor for one without G.711.
    let mut sipp = parse(SIPP, lan_source()).unwrap();
    assert!(!sipp.keep_only_g711());
    let opus_only = PJSUA2.replace(
        "m=audio 4000 RTP/AVP 96 97 98 99 3 0 8 9 120 121 122",
        "m=audio 4000 RTP/AVP 96 97 99 9 121",
    );
    assert_ne!(opus_only, PJSUA2);
    let mut opus = parse(&opus_only, lan_source()).unwrap();
    assert!(!opus.keep_only_g711());
}
