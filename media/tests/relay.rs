//! End-to-end tests of `LocalRelay` with real UDP sockets on loopback: two fake phones call
//! through the relay. Every address used is in 127.0.0.0/8.
#![allow(clippy::unwrap_used, reason = "test code")]

use kubepbx_media::*;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::UdpSocket;

mod common;
use common::*;

/// A fake phone: an RTP and an RTCP socket on loopback.
struct Phone {
    rtp: UdpSocket,
    rtcp: UdpSocket,
    ssrc: u32,
}

impl Phone {
    async fn new(ssrc: u32) -> Phone {
        Phone {
            rtp: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            rtcp: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            ssrc,
        }
    }

    /// An SDP naming `addr` and `port` (maybe not where the phone really is) and its RTCP port.
    fn sdp(&self, addr: &str, port: u16, rtcp: u16, pt: u8) -> String {
        format!(
            "v=0\r\no=- 1 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP {pt} 101\r\na=rtcp:{rtcp}\r\na=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-16\r\na=ptime:20\r\n"
        )
    }

    /// This phone's real SDP.
    fn honest_sdp(&self, pt: u8) -> String {
        let rtp = self.rtp.local_addr().unwrap().port();
        let rtcp = self.rtcp.local_addr().unwrap().port();
        self.sdp("127.0.0.1", rtp, rtcp, pt)
    }

    async fn send_rtp(&self, to: SocketAddr, seq: u16, pt: u8, payload: &[u8]) {
        self.rtp
            .send_to(&rtp_packet(self.ssrc, seq, pt, payload), to)
            .await
            .unwrap();
    }

    async fn send_rtcp(&self, to: SocketAddr) {
        let mut p = vec![0x80, 201, 0, 1];
        p.extend_from_slice(&self.ssrc.to_be_bytes());
        self.rtcp.send_to(&p, to).await.unwrap();
    }
}

fn rtp_packet(ssrc: u32, seq: u16, pt: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

async fn recv(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 2048];
    let (n, from) = tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf))
        .await
        .expect("no packet within 2 s")
        .unwrap();
    buf.truncate(n);
    (buf, from)
}

/// The relay address an SDP points at.
fn media_port(sdp: &str) -> SocketAddr {
    let line = sdp.lines().find(|l| l.starts_with("m=audio ")).unwrap();
    let port: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(sdp.contains("c=IN IP4 127.0.0.1\r\n"), "{sdp}");
    SocketAddr::new(LOCAL, port)
}

fn offer(session: &str, sdp: String, recording: Option<RecordingRequest>) -> OfferRequest {
    OfferRequest {
        session: SessionId(session.to_owned()),
        side: Side::Caller,
        sdp,
        signalling_source: LOCAL,
        recording,
        peer: PeerMedia::Rtp,
    }
}

fn answer(session: &str, sdp: String) -> AnswerRequest {
    AnswerRequest {
        session: SessionId(session.to_owned()),
        side: Side::Callee,
        sdp,
        signalling_source: LOCAL,
    }
}

#[tokio::test]
async fn nat_phone_gets_audio_both_ways_and_rtcp_is_relayed() {
    let r = Relay::start(config(0, 4));
    let caller = Phone::new(0x1111).await;
    let callee = Phone::new(0x2222).await;
    // The caller is "behind NAT": its SDP names an unreachable private address and wrong ports.
    let nat_sdp = caller.sdp("10.255.255.1", 4000, 4001, 0);
    let to_callee = r.relay.offer(offer("call-1", nat_sdp, None)).await.unwrap();
    let relay_for_callee = media_port(&to_callee.sdp);
    let to_caller = r
        .relay
        .answer(answer("call-1", callee.honest_sdp(0)))
        .await
        .unwrap();
    let relay_for_caller = media_port(&to_caller.sdp);
    assert_ne!(relay_for_caller, relay_for_callee);
    assert!(to_caller.sdp.contains("telephone-event/8000"));

    // Caller → callee (seq 4 lost on the way).
    for seq in (1..=10u16).filter(|s| *s != 4) {
        caller
            .send_rtp(relay_for_caller, seq, 0, &[0xff; 160])
            .await;
        let (got, from) = recv(&callee.rtp).await;
        assert_eq!(got, rtp_packet(0x1111, seq, 0, &[0xff; 160]));
        assert_eq!(
            from, relay_for_callee,
            "symmetric: comes from the port the SDP named"
        );
    }
    // Callee → caller: reaches the caller's real (latched) port, not the SDP's.
    for seq in 1..=10u16 {
        callee
            .send_rtp(relay_for_callee, seq, 0, &[0x7f; 160])
            .await;
        let (got, from) = recv(&caller.rtp).await;
        assert_eq!(got, rtp_packet(0x2222, seq, 0, &[0x7f; 160]));
        assert_eq!(from, relay_for_caller);
    }
    // telephone-event passes through untouched.
    callee
        .send_rtp(relay_for_callee, 11, 101, &[1, 0x8a, 0, 160])
        .await;
    assert_eq!(
        recv(&caller.rtp).await.0,
        rtp_packet(0x2222, 11, 101, &[1, 0x8a, 0, 160])
    );

    // RTCP on port + 1, both ways.
    let rtcp_of = |a: SocketAddr| SocketAddr::new(a.ip(), a.port() + 1);
    caller.send_rtcp(rtcp_of(relay_for_caller)).await;
    let (got, from) = recv(&callee.rtcp).await;
    assert_eq!((got[1], from), (201, rtcp_of(relay_for_callee)));
    callee.send_rtcp(rtcp_of(relay_for_callee)).await;
    let (got, from) = recv(&caller.rtcp).await;
    assert_eq!((got[1], from), (201, rtcp_of(relay_for_caller)));

    let id = SessionId("call-1".into());
    let stats = r.relay.stats(&id).await.unwrap().unwrap();
    assert_eq!(stats.caller.packets_in, 9);
    assert_eq!(stats.caller.lost, 1);
    assert_eq!(stats.caller.bytes_in, 9 * 172);
    assert_eq!(stats.callee.packets_out, 9);
    assert_eq!(stats.callee.packets_in, 11);
    assert_eq!(stats.caller.packets_out, 11);
    assert_eq!((stats.caller.rtcp_in, stats.caller.rtcp_out), (1, 1));
    assert!(stats.last_packet_at.is_some());
    assert_eq!(r.relay.list().await.unwrap().len(), 1);
    let m = r.relay.metrics();
    assert_eq!(
        (m.rtp_relayed, m.rtcp_relayed, m.sessions_active),
        (20, 2, 1)
    );

    let last = r.relay.delete(&id).await.unwrap().unwrap();
    assert_eq!(last.caller.packets_in, 9);
    assert_eq!(r.relay.delete(&id).await.unwrap(), None);
    assert_eq!(r.relay.stats(&id).await.unwrap(), None);
    r.wait_ports_free().await;
    assert_eq!(r.relay.metrics().lost, 1);
    r.stop().await;
}

#[tokio::test]
async fn rtcp_mux_is_relayed_on_the_rtp_port() {
    let r = Relay::start(config(1, 4));
    let caller = Phone::new(0x33).await;
    let callee = Phone::new(0x44).await;
    let mux = |p: &Phone| format!("{}a=rtcp-mux\r\n", p.honest_sdp(8));
    let to_callee = r
        .relay
        .offer(offer("mux", mux(&caller), None))
        .await
        .unwrap();
    assert!(to_callee.sdp.contains("a=rtcp-mux\r\n"));
    let to_caller = r.relay.answer(answer("mux", mux(&callee))).await.unwrap();
    let (for_caller, for_callee) = (media_port(&to_caller.sdp), media_port(&to_callee.sdp));
    // RTCP sent from the RTP socket to the RTP port arrives on the other's RTP socket.
    let mut p = vec![0x80, 200, 0, 1];
    p.extend_from_slice(&0x33u32.to_be_bytes());
    caller.rtp.send_to(&p, for_caller).await.unwrap();
    assert_eq!(recv(&callee.rtp).await, (p, for_callee));
    r.stop().await;
}

#[tokio::test]
async fn media_timeout_reaps_and_tells_the_owner() {
    let mut r = Relay::start(RelayConfig {
        media_timeout: Duration::from_millis(300),
        ..config(2, 4)
    });
    let caller = Phone::new(1).await;
    let callee = Phone::new(2).await;
    r.relay
        .offer(offer("quiet", caller.honest_sdp(0), None))
        .await
        .unwrap();
    let to_caller = r
        .relay
        .answer(answer("quiet", callee.honest_sdp(0)))
        .await
        .unwrap();
    caller
        .send_rtp(media_port(&to_caller.sdp), 1, 0, &[0xff; 160])
        .await;
    recv(&callee.rtp).await;
    let event = tokio::time::timeout(Duration::from_secs(3), r.events.recv())
        .await
        .unwrap()
        .unwrap();
    let RelayEvent::Timeout(id, stats) = event else {
        panic!("{event:?}")
    };
    assert_eq!(id, SessionId("quiet".into()));
    assert_eq!(stats.caller.packets_in, 1);
    assert_eq!(r.relay.stats(&id).await.unwrap(), None);
    assert_eq!(r.relay.metrics().sessions_timed_out, 1);
    r.wait_ports_free().await;
    r.stop().await;
}

#[tokio::test]
async fn exhausted_ports_fail_cleanly_and_leak_nothing() {
    // Three pairs: one session takes two; a second gets one pair and must give it back.
    let r = Relay::start(config(3, 3));
    let a = Phone::new(1).await;
    r.relay
        .offer(offer("first", a.honest_sdp(0), None))
        .await
        .unwrap();
    assert_eq!(r.relay.metrics().port_pairs_free, 1);
    let err = r
        .relay
        .offer(offer("second", a.honest_sdp(0), None))
        .await
        .unwrap_err();
    assert_eq!(err, MediaError::PortsExhausted);
    assert_eq!(err.sip_status().0, 503);
    assert_eq!(r.relay.metrics().port_pairs_free, 1);
    assert_eq!(r.relay.list().await.unwrap().len(), 1);
    // Bad SDPs allocate nothing either.
    let err = r
        .relay
        .offer(offer("third", "v=0\r\nbogus".into(), None))
        .await
        .unwrap_err();
    assert_eq!(err.sip_status().0, 488);
    let video_only = a.honest_sdp(0).replace("m=audio", "m=video");
    let err = r
        .relay
        .offer(offer("fourth", video_only, None))
        .await
        .unwrap_err();
    assert_eq!(err, MediaError::NoAudio);
    assert_eq!(r.relay.metrics().port_pairs_free, 1);
    // An answer for a session nobody offered.
    let err = r
        .relay
        .answer(answer("nobody", a.honest_sdp(0)))
        .await
        .unwrap_err();
    assert_eq!(err, MediaError::UnknownSession);
    // Freed ports are usable again.
    r.end("first").await;
    r.wait_ports_free().await;
    r.relay
        .offer(offer("second", a.honest_sdp(0), None))
        .await
        .unwrap();
    r.stop().await;
}

#[tokio::test]
async fn reinvite_hold_keeps_the_session_and_its_ports() {
    let r = Relay::start(config(4, 4));
    let caller = Phone::new(1).await;
    let callee = Phone::new(2).await;
    let first = r
        .relay
        .offer(offer("hold", caller.honest_sdp(0), None))
        .await
        .unwrap();
    r.relay
        .answer(answer("hold", callee.honest_sdp(0)))
        .await
        .unwrap();
    // The callee puts the call on hold with a re-INVITE.
    let hold_sdp = callee
        .honest_sdp(0)
        .replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0")
        .replace("a=ptime:20", "a=sendonly");
    let hold = r
        .relay
        .offer(OfferRequest {
            side: Side::Callee,
            ..offer("hold", hold_sdp, None)
        })
        .await
        .unwrap();
    assert!(hold.sdp.contains("a=sendonly\r\n") && hold.sdp.contains("c=IN IP4 0.0.0.0\r\n"));
    let hold_port: u16 = hold.sdp.split("m=audio ").nth(1).unwrap()[..5]
        .parse()
        .unwrap();
    let answer_to_hold = r
        .relay
        .answer(AnswerRequest {
            side: Side::Caller,
            ..answer(
                "hold",
                caller.honest_sdp(0).replace("a=ptime:20", "a=recvonly"),
            )
        })
        .await
        .unwrap();
    // Each party keeps talking to its own leg: the re-offer points the caller at the caller's
    // leg, the answer points the callee at the callee's leg, as in the first exchange.
    assert_ne!(SocketAddr::new(LOCAL, hold_port), media_port(&first.sdp));
    assert_eq!(media_port(&answer_to_hold.sdp), media_port(&first.sdp));
    assert_eq!(r.relay.list().await.unwrap().len(), 1);
    r.stop().await;
}

fn wav_rms(path: &PathBuf) -> (u16, u32, f64, f64, usize) {
    let mut reader = hound::WavReader::open(path).unwrap();
    let spec = reader.spec();
    let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    let rms = |ch: usize| {
        let v: Vec<f64> = samples
            .iter()
            .skip(ch)
            .step_by(2)
            .map(|&s| f64::from(s))
            .collect();
        (v.iter().map(|s| s * s).sum::<f64>() / v.len().max(1) as f64).sqrt()
    };
    (
        spec.channels,
        spec.sample_rate,
        rms(0),
        rms(1),
        samples.len() / 2,
    )
}

#[tokio::test]
async fn recording_has_both_parties() {
    let dir = tempfile::tempdir().unwrap();
    let r = Relay::start(RelayConfig {
        recordings_dir: Some(dir.path().to_owned()),
        ..config(5, 4)
    });
    let caller = Phone::new(7).await;
    let callee = Phone::new(8).await;
    let rec = RecordingRequest {
        id: "rec-1".into(),
        caller: "1001@pbx.example.com".into(),
        callee: "1002@pbx.example.com".into(),
    };
    let to_callee = r
        .relay
        .offer(offer("rec", caller.honest_sdp(0), Some(rec)))
        .await
        .unwrap();
    let to_caller = r
        .relay
        .answer(answer("rec", callee.honest_sdp(8)))
        .await
        .unwrap();
    let (for_caller, for_callee) = (media_port(&to_caller.sdp), media_port(&to_callee.sdp));
    // 25 packets (0.5 s) each way: caller µ-law loud-ish, callee A-law; a 440 Hz-like pattern.
    let ulaw: Vec<u8> = (0..160)
        .map(|i| if i % 18 < 9 { 0x8f } else { 0x0f })
        .collect();
    let alaw: Vec<u8> = (0..160)
        .map(|i| if i % 18 < 9 { 0xa5 } else { 0x25 })
        .collect();
    for seq in 1..=25u16 {
        caller.send_rtp(for_caller, seq, 0, &ulaw).await;
        callee.send_rtp(for_callee, seq, 8, &alaw).await;
        recv(&callee.rtp).await;
        recv(&caller.rtp).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = r.end("rec").await;
    assert_eq!(stats.recording.as_deref(), Some("rec-1"));
    r.stop().await; // waits for the writer to finalise
    let (channels, rate, left, right, frames) = wav_rms(&dir.path().join("rec-1.wav"));
    assert_eq!((channels, rate), (2, 8000));
    assert!(frames >= 25 * 160, "{frames} frames");
    assert!(left > 1000.0 && right > 1000.0, "rms {left} {right}");
    let meta = std::fs::read_to_string(dir.path().join("rec-1.json")).unwrap();
    assert!(
        meta.contains("\"caller\": \"1001@pbx.example.com\""),
        "{meta}"
    );
    assert!(meta.contains("\"endedAt\": \"20"), "{meta}");
}

#[tokio::test]
async fn ports_held_by_another_program_are_skipped_and_named() {
    // Two pairs; another program holds the first pair's RTP port.
    let config = config(9, 2);
    let first = *config.ports.start();
    let _squatter = std::net::UdpSocket::bind((LOCAL, first)).unwrap();
    let r = Relay::start(config);
    let a = Phone::new(1).await;
    let err = r
        .relay
        .offer(offer("squeezed", a.honest_sdp(0), None))
        .await
        .unwrap_err();
    assert_eq!(err, MediaError::PortsInUse(1));
    assert!(err.to_string().contains("other programs"), "{err}");
    assert_eq!(err.sip_status().0, 503);
    r.wait_ports_free().await;
    r.stop().await;
}

#[tokio::test]
async fn a_recorded_call_is_offered_g711_only_and_others_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let r = Relay::start(RelayConfig {
        recordings_dir: Some(dir.path().to_owned()),
        ..config(6, 4)
    });
    let caller = Phone::new(9).await;
    // A softphone's default order: a wideband codec first, G.711 further down.
    let rich = caller.honest_sdp(0).replace(
        "RTP/AVP 0 101",
        "RTP/AVP 96 9 0 101\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:9 G722/8000",
    );
    let rec = RecordingRequest {
        id: "rec-g711".into(),
        caller: "1001".into(),
        callee: "1002".into(),
    };
    let recorded = r
        .relay
        .offer(offer("recorded", rich.clone(), Some(rec)))
        .await
        .unwrap();
    assert!(
        recorded.sdp.contains("RTP/AVP 0 101\r\n"),
        "{}",
        recorded.sdp
    );
    assert!(!recorded.sdp.contains("opus") && !recorded.sdp.contains("G722"));
    let plain = r.relay.offer(offer("plain", rich, None)).await.unwrap();
    assert!(
        plain.sdp.contains("RTP/AVP 96 9 0 101\r\n"),
        "{}",
        plain.sdp
    );
    r.stop().await;
}
