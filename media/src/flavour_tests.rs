//! SDP flavour rules and payload type mapping.

use super::*;
use crate::sdp::{LegKind, parse};
use std::net::Ipv4Addr;

const WEBRTC: &str = include_str!("../tests/sdp/webrtc.sdp");
const ZOIPER: &str = include_str!("../tests/sdp/zoiper.sdp");

fn relay() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10))
}

fn f(pt: u8, name: &str, rate: u32) -> Format {
    Format {
        pt,
        name: name.to_owned(),
        rate,
        channels: None,
        fmtp: None,
    }
}

fn local() -> WebRtcLocal<'static> {
    WebRtcLocal {
        candidate: "203.0.113.10:3478".parse().unwrap(),
        ufrag: "relayufrag",
        pwd: "relaypasswordrelaypassword",
        fingerprint: "sha-256 AA:BB",
        mid: "0",
        mid_ext: Some(3),
        ssrc: 0x1234_abcd,
    }
}

#[test]
fn a_browser_offer_is_recognised() {
    let parsed = parse(WEBRTC, relay()).unwrap();
    assert_eq!(parsed.kind, LegKind::WebRtc);
    let w = parsed.webrtc.as_ref().unwrap();
    assert_eq!(w.ufrag, "Kx3Z");
    assert_eq!(w.setup, Setup::ActPass);
    assert_eq!(w.mid.as_deref(), Some("0"));
    assert!(w.fingerprint.starts_with("sha-256 3A:9B"));
    let names: Vec<String> = parsed.formats.iter().map(Format::rtpmap).collect();
    assert_eq!(
        names,
        [
            "opus/48000/2",
            "PCMU/8000",
            "PCMA/8000",
            "telephone-event/8000"
        ]
    );
    // DTLS without ICE credentials or fingerprint is no WebRTC the relay can answer.
    let no_fingerprint: String = WEBRTC
        .lines()
        .filter(|l| !l.starts_with("a=fingerprint"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    assert!(matches!(
        parse(&no_fingerprint, relay()),
        Err(crate::MediaError::UnsupportedTransport(_))
    ));
}

#[test]
fn browser_offer_becomes_a_plain_offer_with_the_carried_codecs() {
    let parsed = parse(WEBRTC, relay()).unwrap();
    let formats = webrtc_formats(&parsed.formats);
    let mut origin = Origin::new(7);
    let sdp = plain_offer(
        relay(),
        20000,
        &formats,
        parsed.direction,
        None,
        &mut origin,
    );
    assert!(
        sdp.contains("m=audio 20000 RTP/AVP 111 0 8 126\r\n"),
        "{sdp}"
    );
    assert!(sdp.contains("c=IN IP4 203.0.113.10\r\n"));
    assert!(sdp.contains("a=rtpmap:111 opus/48000/2\r\n"));
    assert!(sdp.contains("a=fmtp:111 minptime=10;useinbandfec=1\r\n"));
    assert!(sdp.contains("a=rtcp:20001\r\n"));
    for gone in ["ice-", "fingerprint", "setup", "mid", "BUNDLE", "candidate"] {
        assert!(!sdp.contains(gone), "{gone} in {sdp}");
    }
    let again = parse(&sdp, relay()).unwrap();
    assert_eq!(again.kind, LegKind::Plain);
    assert_eq!(again.formats, formats);
    // The version grows with every SDP for the same party.
    assert!(sdp.contains("o=- 7 1 IN IP4"));
    let second = plain_offer(
        relay(),
        20000,
        &formats,
        Direction::SendOnly,
        None,
        &mut origin,
    );
    assert!(second.contains("o=- 7 2 IN IP4") && second.contains("a=sendonly\r\n"));
}

#[test]
fn softphone_offer_becomes_a_webrtc_offer_with_g711_and_events() {
    let parsed = parse(ZOIPER, relay()).unwrap();
    let formats = webrtc_formats(&parsed.formats);
    assert!(formats.iter().all(carried));
    assert!(formats.iter().any(|f| f.is("PCMU")));
    assert!(formats.iter().any(|f| f.is("telephone-event")));
    let sdp = webrtc_offer(
        &local(),
        &formats,
        Direction::SendRecv,
        Some("20"),
        &mut Origin::new(1),
    );
    let again = parse(&sdp, relay()).unwrap();
    assert_eq!(again.kind, LegKind::WebRtc);
    let w = again.webrtc.unwrap();
    assert_eq!((w.ufrag.as_str(), w.setup), ("relayufrag", Setup::ActPass));
    assert_eq!(w.fingerprint, "sha-256 AA:BB");
    assert_eq!(w.mid_ext, Some(3));
    assert_eq!(w.ssrcs, [0x1234_abcd]);
    for line in [
        "a=ice-lite\r\n",
        "a=group:BUNDLE 0\r\n",
        "a=rtcp-mux\r\n",
        "a=mid:0\r\n",
        "m=audio 3478 UDP/TLS/RTP/SAVPF ",
        "a=candidate:1 1 udp 2130706431 203.0.113.10 3478 typ host\r\n",
        "a=ptime:20\r\n",
        "a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid\r\n",
        "a=ssrc:305441741 cname:kubepbx-1234abcd\r\n",
    ] {
        assert!(sdp.contains(line), "{line} missing in {sdp}");
    }
    assert_eq!(again.formats, formats);
}

#[test]
fn payload_types_in_the_rtcp_range_are_moved() {
    let offered = [
        f(0, "PCMU", 8000),
        f(72, "telephone-event", 8000),
        f(96, "opus", 48000),
        f(18, "G729", 8000),
    ];
    let webrtc = webrtc_formats(&offered);
    let pts: Vec<u8> = webrtc.iter().map(|f| f.pt).collect();
    assert_eq!(
        pts,
        [0, 97, 96],
        "G.729 is not carried; 72 moves to the first free type"
    );
    // Packets from the softphone with 72 reach the browser as 97, and back.
    let to_browser = PtMap::between(&offered, &webrtc);
    let to_phone = PtMap::between(&webrtc, &offered);
    assert_eq!(to_browser.get(72), Some(97));
    assert_eq!(to_phone.get(97), Some(72));
    assert_eq!(to_browser.get(0), Some(0));
    assert_eq!(to_browser.get(18), None);
    assert_eq!(to_browser.get(200), None);
}

#[test]
fn answers_map_onto_the_offer_numbering() {
    // The browser offered opus 111, PCMU 0, events 126; the softphone answered events as 101.
    let browser = [
        f(111, "opus", 48000),
        f(0, "PCMU", 8000),
        f(126, "telephone-event", 8000),
    ];
    let phone_answer = [f(0, "PCMU", 8000), f(101, "telephone-event", 8000)];
    let for_browser = map_onto(&phone_answer, &browser);
    let pts: Vec<u8> = for_browser.iter().map(|f| f.pt).collect();
    assert_eq!(pts, [0, 126]);
    assert!(has_audio_codec(&for_browser));
    assert!(!has_audio_codec(&[f(126, "telephone-event", 8000)]));
    let map = PtMap::between(&phone_answer, &for_browser);
    assert_eq!(
        (map.get(101), map.get(0), map.get(8)),
        (Some(126), Some(0), None)
    );
    // Rates matter: opus's 48 kHz events are another codec.
    assert!(!f(1, "telephone-event", 48000).same_codec(&f(1, "telephone-event", 8000)));
}

#[test]
fn webrtc_answer_mirrors_the_browser_offer() {
    let with_video = format!(
        "{WEBRTC}m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=rtpmap:96 VP8/90000\r\n"
    );
    let offer = parse(&with_video, relay()).unwrap();
    let chosen = map_onto(&[f(8, "PCMA", 8000)], &offer.formats);
    let sdp = webrtc_answer(
        &local(),
        &offer,
        &chosen,
        Direction::SendRecv,
        Setup::Passive,
        &mut Origin::new(3),
    );
    assert!(
        sdp.contains("m=audio 3478 UDP/TLS/RTP/SAVPF 8\r\n"),
        "{sdp}"
    );
    assert!(sdp.contains("a=setup:passive\r\n"));
    assert!(sdp.contains("a=mid:0\r\n"));
    assert!(
        sdp.contains("m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n"),
        "{sdp}"
    );
    assert!(sdp.contains("a=group:BUNDLE 0\r\n"));
    assert!(!sdp.contains("opus"));
    let again = parse(&sdp, relay()).unwrap();
    assert_eq!(again.formats, chosen);
}

#[test]
fn plain_answer_keeps_the_offer_shape_with_the_chosen_codecs() {
    let offer = parse(ZOIPER, relay()).unwrap();
    let pcmu: Vec<Format> = offer
        .formats
        .iter()
        .filter(|f| f.is("PCMU"))
        .cloned()
        .collect();
    let sdp = offer.plain_answer(relay(), 20100, &pcmu, Direction::RecvOnly);
    let again = parse(&sdp, relay()).unwrap();
    assert_eq!(again.formats, pcmu);
    assert_eq!(again.direction, Direction::RecvOnly);
    assert!(sdp.contains("m=audio 20100 RTP/AVP 0\r\n"), "{sdp}");
    assert!(!sdp.contains("a=rtcp-mux"));
    assert_eq!(again.medias().len(), offer.medias().len());
}
