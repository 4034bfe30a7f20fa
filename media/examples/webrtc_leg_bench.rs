//! CPU per packet of the relay's WebRTC legs alone ([`WebRtcLeg`]: str0m, SRTP, the leg's own
//! bookkeeping), without sockets, threads or the rest of the relay: how much of the relay's
//! cost per WebRTC packet ([`relay_bench`](relay_bench.rs) `--webrtc`) is the leg, and how it
//! grows with the number of legs a thread takes turns on.
//!
//! ```text
//! cargo run --release -p kubepbx-media --example webrtc_leg_bench -- [LEGS] [ROUNDS]
//! ```
//! LEGS legs (default 500), each connected in memory to a str0m peer standing for a browser
//! (full ICE, DTLS client, SRTP, RTP mode). Then ROUNDS rounds (default 100), each 20 ms of
//! media time: every leg is given one PCMU packet to send ([`WebRtcLeg::write_rtp`]: restamp,
//! str0m's queue and pacer, encryption) and one SRTP packet its peer made beforehand
//! ([`WebRtcLeg::handle_datagram`]: ICE/DTLS/SRTP demultiplexing, decryption), legs in turn,
//! as a relay thread serves its calls. Prints the wall time per call of each, on one thread with
//! nothing else running: with many legs, each leg's state has left the CPU caches before its
//! next packet, as in a busy relay; with few, it has not.
//!
//! The peers' packets are made before the timed loop and the peers dropped, so only the legs
//! are timed. The process uses jemalloc, like `kubepbx`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark tool")]

use kubepbx_media::rtp::RtpHeader;
use kubepbx_media::sdp::{Format, Setup, WebRtcParams};
use kubepbx_media::webrtc::{Outputs, WebRtcLeg, WebRtcShared};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use str0m::media::{MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo, Ssrc};
use str0m::{Candidate, IceCreds, Input, Output, Rtc, RtcConfig};

/// The allocator of the `kubepbx` binary.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The peers' SSRC.
const PEER_SSRC: u32 = 0x1234_5678;
/// 20 ms of PCMU.
const PAYLOAD: [u8; 160] = [0x55; 160];
/// Media time between rounds.
const PERIOD: Duration = Duration::from_millis(20);

/// A leg and the peer connected to it.
struct Pair {
    leg: WebRtcLeg,
    peer: Rtc,
    peer_addr: SocketAddr,
}

impl Pair {
    /// Leg `i` and its peer, connected (ICE and DTLS complete) by exchanging datagrams in
    /// memory from `now`; returns the pair and the time reached.
    fn connect(shared: &WebRtcShared, i: usize, now: Instant) -> (Pair, Instant) {
        let octets = u32::try_from(i).unwrap() + 1;
        let peer_addr = SocketAddr::from(([127, 1, (octets >> 8) as u8, octets as u8], 40000));
        let pcmu = Format {
            pt: 0,
            name: "PCMU".into(),
            rate: 8000,
            channels: None,
            fmtp: None,
        };
        let creds = IceCreds {
            ufrag: format!("leg{i}"),
            pass: format!("leg-password-{i:012}"),
        };
        let leg = WebRtcLeg::new(shared, creds, &[pcmu], "0", None, now);
        let mut peer = RtcConfig::new()
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_pcmu(true, false)
            .build(now);
        peer.add_local_candidate(Candidate::host(peer_addr, "udp").unwrap());
        peer.add_remote_candidate(Candidate::host(shared.candidate, "udp").unwrap());
        let mid = Mid::from("0");
        let params = {
            let mut api = peer.direct_api();
            api.set_ice_controlling(true);
            api.set_remote_ice_credentials(IceCreds {
                ufrag: leg.ufrag().into(),
                pass: leg.pwd().into(),
            });
            api.set_remote_fingerprint(shared.fingerprint.parse().unwrap());
            api.declare_media(mid, MediaKind::Audio);
            api.declare_stream_tx(Ssrc::from(PEER_SSRC), None, mid, None);
            api.expect_stream_rx(Ssrc::from(leg.ssrc()), None, mid, None)
                .suppress_nack(true);
            let creds = api.local_ice_credentials();
            let params = WebRtcParams {
                ufrag: creds.ufrag,
                pwd: creds.pass,
                fingerprint: api.local_dtls_fingerprint().to_string(),
                setup: Setup::Active,
                mid: Some("0".into()),
                ssrcs: vec![PEER_SSRC],
                mid_ext: None,
            };
            api.start_dtls(true).unwrap();
            params
        };
        let mut pair = Pair {
            leg,
            peer,
            peer_addr,
        };
        let mut out = Outputs::default();
        pair.leg.start(&params, false, now, &mut out);
        let mut now = now;
        for _ in 0..400 {
            now += Duration::from_millis(5);
            pair.exchange(&mut out, now);
            if pair.leg.is_connected() && pair.peer.is_connected() {
                return (pair, now);
            }
        }
        panic!("leg {i} did not connect: {:?}", pair.leg.failure());
    }

    /// Hands the leg's datagrams in `out` to the peer and the peer's to the leg, at `now`.
    fn exchange(&mut self, out: &mut Outputs, now: Instant) {
        let leg_addr = self.leg_addr();
        for t in out.transmits.drain(..) {
            let r = Receive::new(Protocol::Udp, leg_addr, self.peer_addr, &t.contents).unwrap();
            self.peer.handle_input(Input::Receive(now, r)).unwrap();
        }
        self.peer.handle_input(Input::Timeout(now)).unwrap();
        for datagram in self.drain_peer() {
            self.leg
                .handle_datagram(self.peer_addr, &datagram, now, out);
        }
        self.leg.handle_timeout(now, out);
    }

    /// The peer's datagrams, until it has nothing more than a timeout.
    fn drain_peer(&mut self) -> Vec<Vec<u8>> {
        let mut datagrams = Vec::new();
        loop {
            match self.peer.poll_output().unwrap() {
                Output::Timeout(_) => return datagrams,
                Output::Transmit(t) => datagrams.push(t.contents.to_vec()),
                Output::Event(_) => {}
            }
        }
    }

    /// The SRTP packets of `rounds` rounds from `start`, one per round, as the peer sends them.
    fn peer_packets(&mut self, start: Instant, rounds: usize) -> Vec<Vec<u8>> {
        let mut packets = Vec::with_capacity(rounds);
        for round in 0..rounds {
            let now = start + PERIOD * u32::try_from(round).unwrap();
            let seq = u64::try_from(round).unwrap() + 1000;
            let timestamp = u32::try_from(round).unwrap() * 160;
            let mut api = self.peer.direct_api();
            let stream = api.stream_tx(&Ssrc::from(PEER_SSRC)).unwrap();
            stream.write_rtp(RtpWrite::new(
                Pt::from(0),
                SeqNo::from(seq),
                timestamp,
                now,
                &PAYLOAD[..],
            ));
            self.peer.handle_input(Input::Timeout(now)).unwrap();
            // RTP (172 bytes + SRTP tag) among the peer's RTCP.
            packets.extend(self.drain_peer().into_iter().filter(|d| d.len() > 172));
        }
        packets
    }

    fn leg_addr(&self) -> SocketAddr {
        "127.0.0.1:21000".parse().unwrap()
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let legs: usize = args
        .next()
        .map_or(500, |a| a.parse().expect("LEGS: a number"));
    let rounds: usize = args
        .next()
        .map_or(100, |a| a.parse().expect("ROUNDS: a number"));
    assert!(legs > 0 && rounds > 0, "LEGS and ROUNDS must be positive");
    let crypto = str0m::crypto::from_feature_flags();
    let candidate = "127.0.0.1:21000".parse().unwrap();
    let shared = WebRtcShared::new(
        candidate,
        crypto,
        Duration::from_secs(10),
        Duration::from_secs(3600),
    )
    .expect("a DTLS certificate");
    let mut now = Instant::now();
    let mut pairs = Vec::with_capacity(legs);
    for i in 0..legs {
        let (pair, connected) = Pair::connect(&shared, i, now);
        pairs.push(pair);
        now = now.max(connected);
    }
    // Every leg connected: media starts a second after the last connection.
    let start = now + Duration::from_secs(1);
    let inbound: Vec<Vec<Vec<u8>>> = pairs
        .iter_mut()
        .map(|p| p.peer_packets(start, rounds))
        .collect();
    let mut legs: Vec<(WebRtcLeg, SocketAddr)> =
        pairs.into_iter().map(|p| (p.leg, p.peer_addr)).collect();
    let timed = run(&mut legs, &inbound, start, rounds);
    let n = legs.len();
    println!(
        "{n} legs, {rounds} rounds: write_rtp {:.0} ns per packet, handle_datagram {:.0} ns per \
         packet; {} packets written and sent, {} received and decrypted",
        timed.write.as_nanos() as f64 / timed.written.max(1) as f64,
        timed.read.as_nanos() as f64 / timed.received.max(1) as f64,
        timed.sent,
        timed.decrypted,
    );
    println!(
        "RESULT legs={n} rounds={rounds} write_ns={:.0} read_ns={:.0} sent={} decrypted={}",
        timed.write.as_nanos() as f64 / timed.written.max(1) as f64,
        timed.read.as_nanos() as f64 / timed.received.max(1) as f64,
        timed.sent,
        timed.decrypted,
    );
}

/// What [`run`] measured.
#[derive(Default)]
struct Timed {
    write: Duration,
    read: Duration,
    written: u64,
    received: u64,
    /// Datagrams the legs produced while writing (RTP, and RTCP now and then).
    sent: u64,
    /// RTP packets the legs decrypted.
    decrypted: u64,
}

/// The timed rounds: every leg writes one packet, then every leg reads its peer's.
fn run(
    legs: &mut [(WebRtcLeg, SocketAddr)],
    inbound: &[Vec<Vec<u8>>],
    start: Instant,
    rounds: usize,
) -> Timed {
    let mut out = Outputs::default();
    let mut timed = Timed::default();
    for round in 0..rounds {
        let period = start + PERIOD * u32::try_from(round).unwrap();
        let header = RtpHeader {
            ssrc: 7,
            seq: round as u16,
            timestamp: u32::try_from(round).unwrap() * 160,
            payload_type: 0,
            marker: false,
            payload_offset: 12,
            payload_len: PAYLOAD.len(),
        };
        let began = Instant::now();
        for (i, (leg, _)) in legs.iter_mut().enumerate() {
            let now = period + Duration::from_micros(i as u64);
            assert!(leg.write_rtp(&header, 0, &PAYLOAD, now, &mut out));
            if leg.poll_timeout() <= now {
                leg.handle_timeout(now, &mut out);
            }
            timed.sent += out.transmits.len() as u64;
            out.transmits.clear();
        }
        let written = Instant::now();
        for (i, (leg, peer)) in legs.iter_mut().enumerate() {
            let now = period + PERIOD / 2 + Duration::from_micros(i as u64);
            if let Some(datagram) = inbound[i].get(round) {
                leg.handle_datagram(*peer, datagram, now, &mut out);
                timed.received += 1;
            }
            if leg.poll_timeout() <= now {
                leg.handle_timeout(now, &mut out);
            }
            timed.decrypted += out.rtp.len() as u64;
            out.rtp.clear();
            out.transmits.clear();
        }
        timed.write += written - began;
        timed.read += Instant::now() - written;
        timed.written += legs.len() as u64;
    }
    timed
}
