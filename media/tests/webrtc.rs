//! End-to-end tests of WebRTC legs: a str0m peer plays the browser (full ICE agent, SDP
//! offer/answer, DTLS, SRTP, as a browser's RTCPeerConnection does) and a plain UDP socket the
//! softphone, both on 127.0.0.1, with a `LocalRelay` between them. Every wait is bounded.
#![allow(clippy::unwrap_used, reason = "test code")]

use kubepbx_media::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::{Codec, FormatParams};
use str0m::media::{Direction, Frequency, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;

mod common;
use common::*;

/// The browser's payload type for telephone-event (the softphone uses 101).
const BROWSER_EVENTS: u8 = 126;

/// A relay with 5 port pairs of test `slot` and a WebRTC port.
fn config(slot: u16) -> RelayConfig {
    RelayConfig {
        webrtc: Some(SocketAddr::new(LOCAL, 0)),
        ..common::config(slot, 5)
    }
}

impl Relay {
    async fn offer(&self, session: &str, side: Side, sdp: String, peer: PeerMedia) -> SdpResult {
        self.relay
            .offer(OfferRequest {
                session: SessionId(session.into()),
                side,
                sdp,
                signalling_source: LOCAL,
                recording: None,
                peer,
            })
            .await
            .unwrap()
    }

    async fn answer(&self, session: &str, side: Side, sdp: String) -> String {
        self.relay
            .answer(AnswerRequest {
                session: SessionId(session.into()),
                side,
                sdp,
                signalling_source: LOCAL,
            })
            .await
            .unwrap()
            .sdp
    }

    async fn stats(&self, session: &str) -> SessionStats {
        self.relay
            .stats(&SessionId(session.into()))
            .await
            .unwrap()
            .unwrap()
    }
}

/// A packet a peer received.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    pt: u8,
    seq: u16,
    timestamp: u32,
    ssrc: u32,
    payload: Vec<u8>,
}

/// The browser: a str0m `Rtc` driven over a loopback socket.
struct Browser {
    rtc: Rtc,
    socket: UdpSocket,
    addr: SocketAddr,
    mid: Option<Mid>,
    connected: bool,
    received: Vec<Got>,
    /// Send STUN only (DTLS never starts).
    only_stun: bool,
    /// The SSRC the relay announced (`a=ssrc`) in the last SDP accepted.
    relay_ssrc: Option<u32>,
    next: Instant,
}

impl Browser {
    /// Runs until ICE and DTLS are up; fails after 5 s.
    async fn connect(&mut self) {
        assert!(
            self.run_until(Duration::from_secs(5), |b| b.connected)
                .await,
            "ICE + DTLS within 5 s"
        );
    }

    async fn new() -> Browser {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let mut config = RtcConfig::new()
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_pcmu(true, false)
            .enable_pcma(true, false);
        config.codec_config().add_config(
            Pt::from(BROWSER_EVENTS),
            None,
            Codec::Tele,
            Frequency::EIGHT_KHZ,
            None,
            FormatParams::default(),
        );
        let mut rtc = config.build(Instant::now());
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        Browser {
            rtc,
            socket,
            addr,
            mid: None,
            connected: false,
            received: Vec::new(),
            only_stun: false,
            relay_ssrc: None,
            next: Instant::now(),
        }
    }

    fn offer(&mut self) -> (String, SdpPendingOffer) {
        let mut api = self.rtc.sdp_api();
        let mid = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        self.mid = Some(mid);
        self.drain();
        (offer.to_sdp_string(), pending)
    }

    fn accept_answer(&mut self, pending: SdpPendingOffer, sdp: &str) {
        self.relay_ssrc = announced_ssrc(sdp);
        let answer = SdpAnswer::from_sdp_string(sdp).unwrap();
        self.rtc.sdp_api().accept_answer(pending, answer).unwrap();
        self.drain();
    }

    fn accept_offer(&mut self, sdp: &str) -> String {
        self.relay_ssrc = announced_ssrc(sdp);
        let offer = SdpOffer::from_sdp_string(sdp).unwrap();
        let answer = self.rtc.sdp_api().accept_offer(offer).unwrap();
        self.drain();
        answer.to_sdp_string()
    }

    /// Polls the `Rtc` to its next timeout, sending what it wants sent.
    fn drain(&mut self) {
        loop {
            match self.rtc.poll_output().unwrap() {
                Output::Timeout(t) => {
                    self.next = t;
                    return;
                }
                Output::Transmit(t) => {
                    let stun = t.contents.first().is_some_and(|b| *b < 4);
                    if !self.only_stun || stun {
                        let _ = self.socket.try_send_to(&t.contents, t.destination);
                    }
                }
                Output::Event(Event::Connected) => self.connected = true,
                Output::Event(Event::MediaAdded(m)) => self.mid = Some(m.mid),
                Output::Event(Event::RtpPacket(p)) => self.received.push(Got {
                    pt: *p.header.payload_type,
                    seq: p.header.sequence_number,
                    timestamp: p.header.timestamp,
                    ssrc: *p.header.ssrc,
                    payload: p.payload.to_vec(),
                }),
                Output::Event(_) => {}
            }
        }
    }

    /// Runs for at most `limit`: one input (datagram or timeout) at a time.
    async fn step(&mut self, limit: Duration) {
        let wait = self
            .next
            .saturating_duration_since(Instant::now())
            .min(limit)
            .max(Duration::from_millis(1));
        let mut buf = vec![0u8; 2048];
        match tokio::time::timeout(wait, self.socket.recv_from(&mut buf)).await {
            Ok(Ok((n, source))) => {
                let receive = Receive::new(Protocol::Udp, source, self.addr, &buf[..n]).unwrap();
                self.rtc
                    .handle_input(Input::Receive(Instant::now(), receive))
                    .unwrap();
            }
            _ => self
                .rtc
                .handle_input(Input::Timeout(Instant::now()))
                .unwrap(),
        }
        self.drain();
    }

    /// Steps until `done` holds (true) or `limit` passes (false).
    async fn run_until(&mut self, limit: Duration, done: impl Fn(&Browser) -> bool) -> bool {
        let end = Instant::now() + limit;
        while !done(self) {
            if Instant::now() >= end {
                return false;
            }
            self.step(Duration::from_millis(20)).await;
        }
        true
    }

    fn send_rtp(&mut self, seq: u16, pt: u8, payload: &[u8]) {
        let mid = self.mid.unwrap();
        let mut api = self.rtc.direct_api();
        let stream = api.stream_tx_by_mid(mid, None).unwrap();
        stream.write_rtp(RtpWrite::new(
            Pt::from(pt),
            SeqNo::from(u64::from(seq)),
            u32::from(seq) * 160,
            Instant::now(),
            payload,
        ));
        self.rtc
            .handle_input(Input::Timeout(Instant::now()))
            .unwrap();
        self.drain();
    }
}

/// The SSRC an SDP announces (`a=ssrc:N cname:…`).
fn announced_ssrc(sdp: &str) -> Option<u32> {
    let line = sdp.lines().find(|l| l.starts_with("a=ssrc:"))?;
    line["a=ssrc:".len()..].split(' ').next()?.parse().ok()
}

/// Steps both browsers until `done` or `limit`.
async fn run_both(
    a: &mut Browser,
    b: &mut Browser,
    limit: Duration,
    done: impl Fn(&Browser, &Browser) -> bool,
) -> bool {
    let end = Instant::now() + limit;
    while !done(a, b) {
        if Instant::now() >= end {
            return false;
        }
        a.step(Duration::from_millis(5)).await;
        b.step(Duration::from_millis(5)).await;
    }
    true
}

/// The softphone: a plain RTP socket (RTCP on the next port is not used here).
struct Phone {
    rtp: UdpSocket,
    ssrc: u32,
}

impl Phone {
    async fn new(ssrc: u32) -> Phone {
        Phone {
            rtp: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            ssrc,
        }
    }

    fn sdp(&self) -> String {
        let port = self.rtp.local_addr().unwrap().port();
        format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-16\r\na=ptime:20\r\n"
        )
    }

    async fn send(&self, to: SocketAddr, seq: u16, pt: u8, payload: &[u8]) {
        let mut p = vec![0x80, pt];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&self.ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        self.rtp.send_to(&p, to).await.unwrap();
    }

    /// The next RTP packet (RTCP and anything else skipped), within 2 s.
    async fn recv(&self) -> Got {
        let mut buf = vec![0u8; 2048];
        loop {
            let (n, _) = tokio::time::timeout(Duration::from_secs(2), self.rtp.recv_from(&mut buf))
                .await
                .expect("no packet within 2 s")
                .unwrap();
            let p = &buf[..n];
            if n < 12 || (192..=223).contains(&p[1]) {
                continue;
            }
            return Got {
                pt: p[1] & 0x7f,
                seq: u16::from_be_bytes([p[2], p[3]]),
                timestamp: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
                ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
                payload: p[12..].to_vec(),
            };
        }
    }
}

/// Sends G.711 A-law from `phone` to the relay at `to` every 20 ms until `browser` has
/// received a packet (at most 50); returns the last sequence number sent. The browser may
/// finish its DTLS handshake a moment before the relay's leg does (when the browser is the
/// DTLS server, its last flight is still on its way), and packets for a leg not yet up are
/// dropped.
async fn phone_until_heard(phone: &Phone, to: SocketAddr, browser: &mut Browser) -> u16 {
    for seq in 1..=50 {
        phone.send(to, seq, 8, &[0x55; 160]).await;
        if browser
            .run_until(Duration::from_millis(20), |b| !b.received.is_empty())
            .await
        {
            return seq;
        }
    }
    panic!("the browser got none of 50 packets");
}

/// Where an SDP sends media.
fn media_addr(sdp: &str) -> SocketAddr {
    let line = sdp.lines().find(|l| l.starts_with("m=audio ")).unwrap();
    SocketAddr::new(LOCAL, line.split(' ').nth(1).unwrap().parse().unwrap())
}

/// Browser calls softphone: sets up the call and returns the relay address the phone sends to.
async fn browser_calls_phone(
    r: &Relay,
    session: &str,
    browser: &mut Browser,
    phone: &Phone,
) -> SocketAddr {
    let (offer, pending) = browser.offer();
    assert!(offer.contains("UDP/TLS/RTP/SAVPF"));
    let to_phone = r.offer(session, Side::Caller, offer, PeerMedia::Rtp).await;
    assert_eq!(to_phone.webrtc_sdp, None);
    assert!(to_phone.sdp.contains(" RTP/AVP "), "{}", to_phone.sdp);
    assert!(!to_phone.sdp.contains("fingerprint"), "{}", to_phone.sdp);
    assert!(!to_phone.sdp.contains("VP8"), "{}", to_phone.sdp);
    let to_browser = r.answer(session, Side::Callee, phone.sdp()).await;
    assert!(to_browser.contains("a=ice-lite"), "{to_browser}");
    assert!(to_browser.contains("a=setup:passive"), "{to_browser}");
    let port = r.relay.webrtc_addr().unwrap().port();
    assert!(
        to_browser.contains(&format!("127.0.0.1 {port} typ host")),
        "{to_browser}"
    );
    assert!(
        !to_browser.contains("opus"),
        "only what the phone chose: {to_browser}"
    );
    browser.accept_answer(pending, &to_browser);
    media_addr(&to_phone.sdp)
}

#[tokio::test]
async fn browser_calls_softphone_and_audio_and_dtmf_flow_both_ways() {
    let r = Relay::start(config(0));
    let mut browser = Browser::new().await;
    let phone = Phone::new(0x2222).await;
    let relay_for_phone = browser_calls_phone(&r, "b2p", &mut browser, &phone).await;
    browser.connect().await;

    // Browser → phone: plain RTP with the browser's SSRC, sequence numbers and timestamps.
    for seq in 1..=5u16 {
        browser.send_rtp(seq, 0, &[0xd5; 160]);
        let got = phone.recv().await;
        assert_eq!(
            (got.pt, got.seq, got.timestamp),
            (0, seq, u32::from(seq) * 160)
        );
        assert_eq!(got.payload, vec![0xd5; 160]);
    }
    // Phone → browser, and its telephone-event (101) arrives as the browser's 126.
    for seq in 1..=5u16 {
        phone.send(relay_for_phone, seq, 0, &[0x7f; 160]).await;
    }
    phone
        .send(relay_for_phone, 6, 101, &[1, 0x0a, 0, 160])
        .await;
    assert!(
        browser
            .run_until(Duration::from_secs(3), |b| b.received.len() >= 6)
            .await,
        "got {:?}",
        browser.received.len()
    );
    // The phone's SSRC becomes the leg's own, the one its SDP announced.
    let first = &browser.received[0];
    assert_eq!(
        (first.pt, first.seq, Some(first.ssrc)),
        (0, 1, browser.relay_ssrc)
    );
    assert_ne!(first.ssrc, 0x2222);
    assert_eq!(first.payload, vec![0x7f; 160]);
    let dtmf = browser.received.iter().find(|g| g.seq == 6).unwrap();
    assert_eq!(
        (dtmf.pt, dtmf.payload.as_slice()),
        (BROWSER_EVENTS, &[1, 0x0a, 0, 160][..])
    );

    // The browser puts the call on hold (a re-offer from the WebRTC side, same ICE and DTLS).
    let (reoffer, pending) = {
        let mid = browser.mid.unwrap();
        let mut api = browser.rtc.sdp_api();
        api.set_direction(mid, Direction::SendOnly);
        let (offer, pending) = api.apply().unwrap();
        (offer.to_sdp_string(), pending)
    };
    let to_phone = r.offer("b2p", Side::Caller, reoffer, PeerMedia::Rtp).await;
    assert!(to_phone.sdp.contains("a=sendonly"), "{}", to_phone.sdp);
    assert_eq!(
        media_addr(&to_phone.sdp),
        relay_for_phone,
        "same leg, same port"
    );
    let phone_hold_answer = phone.sdp().replace("a=ptime:20", "a=recvonly");
    let to_browser = r.answer("b2p", Side::Callee, phone_hold_answer).await;
    assert!(
        to_browser.contains("a=setup:passive\r\n"),
        "role kept: {to_browser}"
    );
    assert!(to_browser.contains("a=recvonly\r\n"), "{to_browser}");
    browser.accept_answer(pending, &to_browser);
    browser.step(Duration::from_millis(5)).await;
    assert!(browser.connected && browser.rtc.is_connected());

    let stats = r.stats("b2p").await;
    assert_eq!(stats.caller.packets_in, 5);
    assert_eq!(stats.callee.packets_out, 5);
    assert_eq!(stats.callee.packets_in, 6);
    assert_eq!(stats.caller.packets_out, 6);
    assert_eq!(stats.caller.lost, 0);
    assert!(stats.last_packet_at.is_some());

    let last = r.end("b2p").await;
    assert_eq!(last.caller.packets_in, 5);
    r.wait_ports_free().await;
    r.stop().await;
}

/// A phone may change its SSRC (a transfer, a re-INVITE, music on hold): the browser hears one
/// stream throughout, the SSRC the relay announced, its sequence numbers going on without a gap
/// and its timestamps moving forward at each change. Ten sources in turn, the first coming
/// back at the end. (The wrap of sequence numbers within a source is in `restamp`'s tests.)
#[tokio::test]
async fn a_phone_changing_its_ssrc_often_is_heard_as_one_stream() {
    let r = Relay::start(config(9));
    let mut browser = Browser::new().await;
    let mut phone = Phone::new(0x7000).await;
    let relay_for_phone = browser_calls_phone(&r, "ssrcs", &mut browser, &phone).await;
    browser.connect().await;
    let first = phone_until_heard(&phone, relay_for_phone, &mut browser).await;
    let heard = browser.received.last().unwrap().clone();
    browser.received.clear();
    let mut plan = Vec::new();
    for k in 1..10u32 {
        for i in 0..4u16 {
            plan.push((0x7000 + k, 1000 * k as u16 + i));
        }
    }
    for i in 1..=4u16 {
        plan.push((0x7000, first + i));
    }
    for (n, &(ssrc, seq)) in plan.iter().enumerate() {
        phone.ssrc = ssrc;
        phone.send(relay_for_phone, seq, 8, &[n as u8; 160]).await;
        browser.step(Duration::from_millis(1)).await;
    }
    assert!(
        browser
            .run_until(Duration::from_secs(3), |b| b.received.len() >= plan.len())
            .await,
        "the browser got {} of {}",
        browser.received.len(),
        plan.len()
    );
    assert_eq!(Some(heard.ssrc), browser.relay_ssrc);
    let got: Vec<(u32, u16, u8)> = browser
        .received
        .iter()
        .map(|g| (g.ssrc, g.seq, g.payload[0]))
        .collect();
    let expected: Vec<(u32, u16, u8)> = (0..plan.len())
        .map(|n| (heard.ssrc, heard.seq + 1 + n as u16, n as u8))
        .collect();
    assert_eq!(got, expected);
    let timestamps: Vec<u32> = browser.received.iter().map(|g| g.timestamp).collect();
    assert!(
        timestamps
            .windows(2)
            .all(|w| w[1].wrapping_sub(w[0]) as i32 > 0),
        "timestamps move forward: {timestamps:?}"
    );
    r.end("ssrcs").await;
    r.wait_ports_free().await;
    r.stop().await;
}

/// Sessions are placed on the relay's threads in turn, but the kernel picks which thread's copy
/// of the WebRTC port reads a browser's datagrams; a session on the other thread moves to it.
/// Calls are made until one has moved (each does with probability 1/2), and media flows both
/// ways, packet by packet, across the move without loss.
#[tokio::test]
async fn a_session_follows_its_browser_to_the_thread_reading_it_and_loses_nothing() {
    let r = Relay::start(RelayConfig {
        threads: 2,
        ..config(8)
    });
    let mut moved = false;
    for call in 0..24u32 {
        let session = format!("follow{call}");
        let mut browser = Browser::new().await;
        let phone = Phone::new(0x5000 + call).await;
        let relay_for_phone = browser_calls_phone(&r, &session, &mut browser, &phone).await;
        browser.connect().await;
        let before = r.relay.metrics().sessions_moved;
        for seq in 1..=60u16 {
            browser.send_rtp(seq, 0, &[seq as u8; 160]);
            let got = phone.recv().await;
            assert_eq!((got.seq, got.payload[0]), (seq, seq as u8), "call {call}");
            phone.send(relay_for_phone, seq, 8, &[seq as u8; 160]).await;
            browser.step(Duration::from_millis(1)).await;
        }
        assert!(
            browser
                .run_until(Duration::from_secs(3), |b| b.received.len() >= 60)
                .await,
            "call {call}: the browser got {} of 60",
            browser.received.len()
        );
        let seqs: Vec<u16> = browser.received.iter().map(|g| g.seq).collect();
        assert_eq!(seqs, (1..=60).collect::<Vec<_>>(), "call {call}");
        let stats = r.stats(&session).await;
        assert_eq!(
            (stats.caller.packets_in, stats.callee.packets_in),
            (60, 60),
            "call {call}"
        );
        r.end(&session).await;
        if r.relay.metrics().sessions_moved > before {
            moved = true;
            break;
        }
    }
    assert!(moved, "no session moved in 24 calls");
    r.wait_ports_free().await;
    r.stop().await;
}

#[tokio::test]
async fn softphone_calls_browser_with_g711_and_events() {
    let r = Relay::start(config(1));
    let mut browser = Browser::new().await;
    let phone = Phone::new(0x3333).await;
    let to_browser = r
        .offer("p2b", Side::Caller, phone.sdp(), PeerMedia::WebRtc)
        .await;
    assert_eq!(to_browser.webrtc_sdp, None);
    let offer = to_browser.sdp;
    for line in [
        "UDP/TLS/RTP/SAVPF 0 8 101",
        "a=ice-lite",
        "a=setup:actpass",
        "a=rtcp-mux",
    ] {
        assert!(offer.contains(line), "{line}: {offer}");
    }
    let answer = browser.accept_offer(&offer);
    let to_phone = r.answer("p2b", Side::Callee, answer).await;
    assert!(to_phone.contains(" RTP/AVP 0"), "{to_phone}");
    assert!(!to_phone.contains("ice-"), "{to_phone}");
    let relay_for_phone = media_addr(&to_phone);
    browser.connect().await;
    let sent = phone_until_heard(&phone, relay_for_phone, &mut browser).await;
    assert_eq!(
        (browser.received[0].pt, Some(browser.received[0].ssrc)),
        (8, browser.relay_ssrc)
    );
    browser.send_rtp(1, 8, &[0x2a; 160]);
    let got = phone.recv().await;
    assert_eq!((got.pt, got.seq, got.payload.len()), (8, 1, 160));

    // A re-INVITE from the phone (hold) keeps the browser's connection.
    let hold = phone.sdp().replace("a=ptime:20", "a=sendonly");
    let reoffer = r.offer("p2b", Side::Caller, hold, PeerMedia::Rtp).await;
    assert!(reoffer.sdp.contains("a=sendonly"), "{}", reoffer.sdp);
    assert!(
        reoffer.sdp.contains("UDP/TLS/RTP/SAVPF"),
        "the leg stays WebRTC"
    );
    let same_ufrag = |sdp: &str| {
        sdp.lines()
            .find(|l| l.starts_with("a=ice-ufrag"))
            .map(str::to_owned)
    };
    assert_eq!(same_ufrag(&reoffer.sdp), same_ufrag(&offer));
    let reanswer = browser.accept_offer(&reoffer.sdp);
    let to_phone = r.answer("p2b", Side::Callee, reanswer).await;
    assert!(to_phone.contains("a=recvonly"), "{to_phone}");
    phone.send(relay_for_phone, sent + 1, 8, &[0x56; 160]).await;
    assert!(
        browser
            .run_until(Duration::from_secs(3), |b| b
                .received
                .iter()
                .any(|g| g.seq == sent + 1))
            .await
    );
    r.stop().await;
}

#[tokio::test]
async fn browser_calls_browser_through_two_webrtc_legs() {
    let r = Relay::start(config(2));
    let mut alice = Browser::new().await;
    let mut bob = Browser::new().await;
    let (offer, pending) = alice.offer();
    let to_bob = r.offer("b2b", Side::Caller, offer, PeerMedia::WebRtc).await;
    assert!(
        to_bob.sdp.contains("opus/48000/2"),
        "Opus passes: {}",
        to_bob.sdp
    );
    let answer = bob.accept_offer(&to_bob.sdp);
    let to_alice = r.answer("b2b", Side::Callee, answer).await;
    alice.accept_answer(pending, &to_alice);
    assert!(
        run_both(&mut alice, &mut bob, Duration::from_secs(5), |a, b| a
            .connected
            && b.connected)
        .await
    );
    // Each browser reached the relay through the copy of the port the kernel picked for it:
    // the relay's two legs may finish their handshakes a moment apart, and a packet towards
    // a leg that has not is dropped. So both send every 20 ms until each has heard the other.
    let mut sent = 0u16;
    while sent < 50 && (alice.received.is_empty() || bob.received.is_empty()) {
        sent += 1;
        alice.send_rtp(sent, 111, &[1, 2, 3]);
        bob.send_rtp(sent, 111, &[4, 5, 6]);
        run_both(&mut alice, &mut bob, Duration::from_millis(20), |a, b| {
            !a.received.is_empty() && !b.received.is_empty()
        })
        .await;
    }
    assert!(
        !alice.received.is_empty() && !bob.received.is_empty(),
        "no audio after {sent} packets each way"
    );
    assert_eq!(
        (bob.received[0].pt, &bob.received[0].payload[..]),
        (111, &[1, 2, 3][..])
    );
    assert_eq!(alice.received[0].payload, vec![4, 5, 6]);
    let stats = r.stats("b2b").await;
    let sent = u64::from(sent);
    assert_eq!(
        (stats.caller.packets_in, stats.callee.packets_in),
        (sent, sent)
    );
    assert!((1..=sent).contains(&stats.callee.packets_out));
    assert!((1..=sent).contains(&stats.caller.packets_out));
    r.stop().await;
}

#[tokio::test]
async fn two_sessions_share_the_webrtc_port_and_garbage_is_dropped() {
    let r = Relay::start(config(3));
    let mut b1 = Browser::new().await;
    let mut b2 = Browser::new().await;
    let p1 = Phone::new(0x11).await;
    let p2 = Phone::new(0x22).await;
    browser_calls_phone(&r, "one", &mut b1, &p1).await;
    browser_calls_phone(&r, "two", &mut b2, &p2).await;
    assert!(
        run_both(&mut b1, &mut b2, Duration::from_secs(5), |a, b| a.connected
            && b.connected)
        .await
    );
    // Noise on the WebRTC port: a check for an ICE username nobody has, and junk.
    let port = r.relay.webrtc_addr().unwrap();
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    stranger
        .send_to(&stun_check(b"nobody:x"), port)
        .await
        .unwrap();
    stranger.send_to(&[0x80, 0, 1, 2, 3], port).await.unwrap();
    stranger.send_to(&[22, 254, 253], port).await.unwrap();
    b1.send_rtp(1, 0, &[1; 160]);
    b2.send_rtp(1, 0, &[2; 160]);
    assert_eq!(p1.recv().await.payload, vec![1; 160]);
    assert_eq!(p2.recv().await.payload, vec![2; 160]);
    for _ in 0..100 {
        if r.relay.metrics().webrtc_dropped >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        r.relay.metrics().webrtc_dropped >= 3,
        "{:?}",
        r.relay.metrics()
    );
    assert_eq!(r.stats("one").await.caller.packets_in, 1);
    assert_eq!(r.stats("two").await.caller.packets_in, 1);
    r.stop().await;
}

fn stun_check(username: &[u8]) -> Vec<u8> {
    let mut attrs = vec![0x00, 0x06, 0x00, username.len() as u8];
    attrs.extend_from_slice(username);
    while attrs.len() % 4 != 0 {
        attrs.push(0);
    }
    let mut m = vec![0x00, 0x01];
    m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    m.extend_from_slice(&[9; 12]);
    m.extend_from_slice(&attrs);
    m
}

#[tokio::test]
async fn dtls_that_never_completes_fails_the_session() {
    let mut r = Relay::start(RelayConfig {
        webrtc_connect_timeout: Duration::from_millis(700),
        ..config(4)
    });
    // ICE works, but the browser's DTLS never leaves it.
    let mut browser = Browser::new().await;
    browser.only_stun = true;
    let phone = Phone::new(1).await;
    browser_calls_phone(&r, "no-dtls", &mut browser, &phone).await;
    // A second browser never even checks.
    let mut silent = Browser::new().await;
    let phone2 = Phone::new(2).await;
    browser_calls_phone(&r, "no-ice", &mut silent, &phone2).await;

    let end = Instant::now() + Duration::from_secs(5);
    let mut failed = std::collections::HashMap::new();
    while failed.len() < 2 && Instant::now() < end {
        browser.step(Duration::from_millis(20)).await;
        if let Ok(event) = r.events.try_recv() {
            let RelayEvent::Failed(id, reason, _) = event else {
                panic!("{event:?}")
            };
            failed.insert(id.0, reason);
        }
    }
    assert!(
        failed["no-dtls"].contains("DTLS handshake did not complete"),
        "{failed:?}"
    );
    assert!(
        failed["no-ice"].contains("no connectivity check"),
        "{failed:?}"
    );
    assert!(!browser.connected);
    assert_eq!(r.relay.metrics().sessions_failed, 2);
    assert_eq!(
        r.relay.stats(&SessionId("no-dtls".into())).await.unwrap(),
        None
    );
    r.wait_ports_free().await;
    r.stop().await;
}

#[tokio::test]
async fn either_peer_gets_both_flavours_and_the_answer_decides() {
    let r = Relay::start(config(5));
    let phone = Phone::new(7).await;
    let forked = r
        .offer("fork", Side::Caller, phone.sdp(), PeerMedia::Either)
        .await;
    assert!(forked.sdp.contains(" RTP/AVP "), "{}", forked.sdp);
    let webrtc = forked.webrtc_sdp.unwrap();
    assert!(webrtc.contains("UDP/TLS/RTP/SAVPF"), "{webrtc}");
    let before = r.relay.metrics().port_pairs_free;
    // The browser fork answers: the callee's plain ports go back.
    let mut browser = Browser::new().await;
    let answer = browser.accept_offer(&webrtc);
    r.answer("fork", Side::Callee, answer).await;
    assert_eq!(r.relay.metrics().port_pairs_free, before + 1);
    browser.connect().await;
    // A re-offer from the browser now gets a plain offer for the phone (the caller's leg).
    r.stop().await;
}

#[tokio::test]
async fn a_call_with_a_browser_is_recorded_from_decrypted_audio() {
    let dir = tempfile::tempdir().unwrap();
    let r = Relay::start(RelayConfig {
        recordings_dir: Some(dir.path().to_owned()),
        ..config(7)
    });
    let mut browser = Browser::new().await;
    let phone = Phone::new(0x44).await;
    let (offer, pending) = browser.offer();
    let to_phone = r
        .relay
        .offer(OfferRequest {
            session: SessionId("rec".into()),
            side: Side::Caller,
            sdp: offer,
            signalling_source: LOCAL,
            recording: Some(RecordingRequest {
                id: "rec-webrtc".into(),
                caller: "browser".into(),
                callee: "1002".into(),
            }),
            peer: PeerMedia::Rtp,
        })
        .await
        .unwrap();
    assert!(!to_phone.sdp.contains("opus"), "recorded: G.711 only");
    let to_browser = r.answer("rec", Side::Callee, phone.sdp()).await;
    browser.accept_answer(pending, &to_browser);
    let relay_for_phone = media_addr(&to_phone.sdp);
    browser.connect().await;
    let loud: Vec<u8> = (0..160)
        .map(|i| if i % 18 < 9 { 0x8f } else { 0x0f })
        .collect();
    for seq in 1..=25u16 {
        browser.send_rtp(seq, 0, &loud);
        phone.send(relay_for_phone, seq, 0, &loud).await;
        phone.recv().await;
        browser.step(Duration::from_millis(20)).await;
    }
    let stats = r.end("rec").await;
    assert_eq!(stats.recording.as_deref(), Some("rec-webrtc"));
    assert_eq!(stats.caller.packets_in, 25);
    r.stop().await; // the writer finalises
    let mut reader = hound::WavReader::open(dir.path().join("rec-webrtc.wav")).unwrap();
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
    assert!(
        samples.len() / 2 >= 25 * 160,
        "{} frames",
        samples.len() / 2
    );
    assert!(
        rms(0) > 1000.0 && rms(1) > 1000.0,
        "rms {} {}",
        rms(0),
        rms(1)
    );
}

#[tokio::test]
async fn webrtc_needs_the_webrtc_port() {
    let r = Relay::start(RelayConfig {
        webrtc: None,
        ..config(6)
    });
    let mut browser = Browser::new().await;
    let (offer, _) = browser.offer();
    let err = r
        .relay
        .offer(OfferRequest {
            session: SessionId("x".into()),
            side: Side::Caller,
            sdp: offer,
            signalling_source: LOCAL,
            recording: None,
            peer: PeerMedia::Rtp,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::UnsupportedTransport(_)), "{err}");
    assert_eq!(
        r.relay.metrics().port_pairs_free,
        r.relay.metrics().port_pairs_total
    );
    r.stop().await;
}
