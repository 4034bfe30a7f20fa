//! The sans-IO core of one relayed call: two legs, latching, counters, and the media timeout.
//!
//! A driver hands every datagram received on one of the session's four relay sockets to
//! [`Session::handle_packet`] with the time it arrived, and gets back what to do: send the same
//! bytes from the other leg's socket to an address, or drop it. Timers are a single deadline,
//! [`Session::poll_timeout`]; the driver calls [`Session::handle_timeout`] when it passes. No
//! sockets, no clock reads: tests drive it with a fake `Instant`.
//!
//! ```text
//!  caller ──► [caller leg: rtp/rtcp sockets] ─┐   ┌─► [callee leg sockets] ──► callee
//!         ◄──                                 └─►─┘                         ◄──
//! ```
//! A packet received on leg L is sent out of the *other* leg's socket (so the receiver sees it
//! come from the port its SDP named) to that leg's [`Latch`] destination.
//!
//! A leg can also be WebRTC ([`LegKind::WebRtc`]): its party is a browser behind the relay's
//! WebRTC endpoint ([`crate::webrtc`]), which owns addressing, encryption and RTCP there. The
//! core then sees that leg's decrypted RTP ([`Session::handle_webrtc_rtp`]) and answers
//! [`Action::SendRtp`] (rebuild the packet for a plain leg) or [`Action::ToWebRtc`] (hand it to
//! the other WebRTC endpoint); plain RTCP towards a WebRTC leg ends here
//! ([`Action::Consumed`]). Payload types are rewritten with a [`PtMap`] per direction when the
//! legs number a codec differently; between two plain legs packets pass byte for byte.

use crate::api::{LegStats, Side};
use crate::flavour::PtMap;
use crate::latch::{Latch, Verdict};
use crate::rtp::{LossCounter, Packet, RtpHeader, classify};
use crate::sdp::{LegKind, Remote};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Which of a leg's two sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Port {
    /// The even port: RTP, and RTCP too under rtcp-mux.
    Rtp,
    /// The odd port: RTCP without rtcp-mux.
    Rtcp,
}

/// What the driver should do with a received datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send the datagram unchanged from `from`'s `port` socket to `to`.
    Forward {
        /// The leg whose socket sends (the other leg than the one it arrived on).
        from: Side,
        /// Which socket of that leg.
        port: Port,
        /// Destination.
        to: SocketAddr,
        /// For RTP: the header, so the driver can tap it for recording.
        rtp: Option<RtpHeader>,
    },
    /// Send the RTP packet rebuilt (12-byte header, payload type `pt`, no extensions) from
    /// `from`'s RTP socket to `to`: a WebRTC leg's packet for a plain leg.
    SendRtp {
        /// The plain leg whose socket sends.
        from: Side,
        /// Destination.
        to: SocketAddr,
        /// Payload type on the receiving leg.
        pt: u8,
        /// The packet's header (payload offset and length in the caller's buffer).
        rtp: RtpHeader,
    },
    /// Hand the RTP packet to `leg`'s WebRTC endpoint with payload type `pt`; report the
    /// outcome with [`Session::note_sent`] or [`Session::note_undelivered`].
    ToWebRtc {
        /// The WebRTC leg that sends it on.
        leg: Side,
        /// Payload type on that leg.
        pt: u8,
        /// The packet's header.
        rtp: RtpHeader,
    },
    /// Counted; goes no further (RTCP from a plain leg towards a WebRTC leg, whose RTCP the
    /// WebRTC endpoint makes itself).
    Consumed,
    /// Drop it.
    Drop(DropReason),
}

/// Why a datagram was dropped (bounded, usable as a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Not RTP/RTCP version 2.
    NotMedia,
    /// From a source other than the latched one.
    WrongSource,
    /// The receiving party has no address yet (hold, or no SDP and no packet from it), or its
    /// WebRTC connection is not up.
    NoDestination,
    /// A payload type the receiving leg did not negotiate.
    UnknownPayload,
}

impl DropReason {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::NotMedia => "not_media",
            DropReason::WrongSource => "wrong_source",
            DropReason::NoDestination => "no_destination",
            DropReason::UnknownPayload => "unknown_payload",
        }
    }
}

/// Why a session ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Answered, and no media for the media timeout.
    Media,
    /// Never answered within the setup timeout.
    Setup,
}

/// Timeouts and latching policy of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// See [`crate::RelayConfig::media_timeout`].
    pub media: Duration,
    /// See [`crate::RelayConfig::setup_timeout`].
    pub setup: Duration,
    /// See [`crate::RelayConfig::relatch_after`].
    pub relatch_after: Duration,
}

#[derive(Debug, Clone)]
struct Leg {
    kind: LegKind,
    rtp: Latch,
    rtcp: Latch,
    rtcp_mux: bool,
    loss: LossCounter,
    stats: LegStats,
}

impl Leg {
    fn new(relatch_after: Duration) -> Leg {
        Leg {
            kind: LegKind::Plain,
            rtp: Latch::new(None, relatch_after),
            rtcp: Latch::new(None, relatch_after),
            rtcp_mux: false,
            loss: LossCounter::default(),
            stats: LegStats::default(),
        }
    }
}

/// One call's media state.
#[derive(Debug, Clone)]
pub struct Session {
    legs: [Leg; 2],
    /// `pt_maps[i]`: payload types of packets from leg `i` as the other leg numbers them;
    /// `None` between two plain legs (packets pass unchanged).
    pt_maps: [Option<PtMap>; 2],
    timeouts: Timeouts,
    created: Instant,
    answered: bool,
    /// The start of the current quiet period: the last packet, the answer, or creation.
    last_activity: Instant,
    last_packet: Option<Instant>,
}

impl Session {
    /// A session created at `now`, before any SDP.
    pub fn new(timeouts: Timeouts, now: Instant) -> Session {
        Session {
            legs: [
                Leg::new(timeouts.relatch_after),
                Leg::new(timeouts.relatch_after),
            ],
            pt_maps: [None, None],
            timeouts,
            created: now,
            answered: false,
            last_activity: now,
            last_packet: None,
        }
    }

    /// `side` sent an SDP (offer or answer) naming `remote`.
    pub fn set_remote(&mut self, side: Side, remote: &Remote) {
        let leg = &mut self.legs[side.index()];
        leg.rtp.set_target(remote.rtp);
        leg.rtcp.set_target(remote.rtcp);
        leg.rtcp_mux = remote.rtcp_mux;
    }

    /// `side`'s leg is of `kind` (plain when never said).
    pub fn set_kind(&mut self, side: Side, kind: LegKind) {
        self.legs[side.index()].kind = kind;
    }

    /// The kind of `side`'s leg.
    pub fn kind(&self, side: Side) -> LegKind {
        self.legs[side.index()].kind
    }

    /// Payload type maps for packets from the caller and from the callee (see
    /// [`Session::handle_webrtc_rtp`]).
    pub fn set_pt_maps(&mut self, maps: [Option<PtMap>; 2]) {
        self.pt_maps = maps;
    }

    /// The payload type for a packet from `on` with `pt` on the other leg: `Some(pt)` unchanged
    /// without a map.
    fn map_pt(&self, on: Side, pt: u8) -> Option<u8> {
        match &self.pt_maps[on.index()] {
            Some(map) => map.get(pt),
            None => Some(pt),
        }
    }

    /// The offer/answer exchange completed at `now`: the media timeout applies from here.
    pub fn set_answered(&mut self, now: Instant) {
        if !self.answered {
            self.answered = true;
            self.last_activity = self.last_activity.max(now);
        }
    }

    /// Handles a datagram that arrived on `on`'s `port` socket from `src` at `now`.
    pub fn handle_packet(
        &mut self,
        on: Side,
        port: Port,
        src: SocketAddr,
        data: &[u8],
        now: Instant,
    ) -> Action {
        let len = data.len() as u64;
        let Some(packet) = classify(data) else {
            self.legs[on.index()].stats.dropped += 1;
            return Action::Drop(DropReason::NotMedia);
        };
        let leg = &mut self.legs[on.index()];
        // RTCP under rtcp-mux arrives on the RTP port from the RTP source: same latch.
        let latch = match port {
            Port::Rtp => &mut leg.rtp,
            Port::Rtcp => &mut leg.rtcp,
        };
        let ssrc = match packet {
            Packet::Rtp(h) => h.ssrc,
            Packet::Rtcp { ssrc } => ssrc,
        };
        if latch.on_packet(src, ssrc, now) == Verdict::Reject {
            leg.stats.dropped += 1;
            return Action::Drop(DropReason::WrongSource);
        }
        self.last_activity = now;
        self.last_packet = Some(now);
        match packet {
            Packet::Rtp(h) => {
                leg.stats.packets_in += 1;
                leg.stats.bytes_in += len;
                leg.loss.on_packet(h.ssrc, h.seq);
            }
            Packet::Rtcp { .. } => leg.stats.rtcp_in += 1,
        }
        let from = on.other();
        if self.legs[from.index()].kind == LegKind::WebRtc {
            return match packet {
                Packet::Rtp(h) => self.toward_webrtc(on, h),
                Packet::Rtcp { .. } => Action::Consumed,
            };
        }
        let out = &mut self.legs[from.index()];
        let (out_port, to) = match packet {
            Packet::Rtp(_) => (Port::Rtp, out.rtp.destination()),
            Packet::Rtcp { .. } if out.rtcp_mux => (Port::Rtp, out.rtp.destination()),
            Packet::Rtcp { .. } => (Port::Rtcp, out.rtcp.destination()),
        };
        let Some(to) = to else {
            self.legs[on.index()].stats.dropped += 1;
            return Action::Drop(DropReason::NoDestination);
        };
        let rtp = match packet {
            Packet::Rtp(h) => {
                out.stats.packets_out += 1;
                out.stats.bytes_out += len;
                Some(h)
            }
            Packet::Rtcp { .. } => {
                out.stats.rtcp_out += 1;
                None
            }
        };
        Action::Forward {
            from,
            port: out_port,
            to,
            rtp,
        }
    }

    /// An RTP packet from `on`'s party towards the other leg, a WebRTC one.
    fn toward_webrtc(&mut self, on: Side, h: RtpHeader) -> Action {
        match self.map_pt(on, h.payload_type) {
            Some(pt) => Action::ToWebRtc {
                leg: on.other(),
                pt,
                rtp: h,
            },
            None => {
                self.legs[on.index()].stats.dropped += 1;
                Action::Drop(DropReason::UnknownPayload)
            }
        }
    }

    /// A decrypted RTP packet (`h`, its payload `h.payload_len` bytes after a header of
    /// `h.payload_offset`) from the browser on WebRTC leg `on`, at `now`.
    pub fn handle_webrtc_rtp(&mut self, on: Side, h: RtpHeader, now: Instant) -> Action {
        self.last_activity = now;
        self.last_packet = Some(now);
        let leg = &mut self.legs[on.index()];
        leg.stats.packets_in += 1;
        leg.stats.bytes_in += (h.payload_offset + h.payload_len) as u64;
        leg.loss.on_packet(h.ssrc, h.seq);
        let from = on.other();
        if self.legs[from.index()].kind == LegKind::WebRtc {
            return self.toward_webrtc(on, h);
        }
        let Some(pt) = self.map_pt(on, h.payload_type) else {
            self.legs[on.index()].stats.dropped += 1;
            return Action::Drop(DropReason::UnknownPayload);
        };
        let out = &mut self.legs[from.index()];
        let Some(to) = out.rtp.destination() else {
            self.legs[on.index()].stats.dropped += 1;
            return Action::Drop(DropReason::NoDestination);
        };
        out.stats.packets_out += 1;
        out.stats.bytes_out += (12 + h.payload_len) as u64;
        Action::SendRtp {
            from,
            to,
            pt,
            rtp: h,
        }
    }

    /// An RTCP packet from the browser on WebRTC leg `on` at `now` (consumed by its endpoint).
    pub fn note_webrtc_rtcp(&mut self, on: Side, now: Instant) {
        self.last_activity = now;
        self.last_packet = Some(now);
        self.legs[on.index()].stats.rtcp_in += 1;
    }

    /// The WebRTC endpoint of `to` sent RTCP of its own to its browser.
    pub fn note_webrtc_rtcp_out(&mut self, to: Side) {
        self.legs[to.index()].stats.rtcp_out += 1;
    }

    /// An [`Action::ToWebRtc`] packet of `bytes` went out to `to`'s browser.
    pub fn note_sent(&mut self, to: Side, bytes: usize) {
        let leg = &mut self.legs[to.index()];
        leg.stats.packets_out += 1;
        leg.stats.bytes_out += bytes as u64;
    }

    /// An [`Action::ToWebRtc`] packet from `from` could not go out (the WebRTC connection is
    /// not up yet): counted as dropped on the leg it came from.
    pub fn note_undelivered(&mut self, from: Side) {
        self.legs[from.index()].stats.dropped += 1;
    }

    /// A datagram on `on`'s WebRTC leg that its endpoint did not take.
    pub fn note_dropped(&mut self, on: Side) {
        self.legs[on.index()].stats.dropped += 1;
    }

    /// When [`Session::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Instant {
        let limit = if self.answered {
            self.timeouts.media
        } else {
            self.timeouts.setup
        };
        self.last_activity + limit
    }

    /// Checks the deadline at `now`: `Some` when the session has expired.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Expiry> {
        if now < self.poll_timeout() {
            return None;
        }
        Some(if self.answered {
            Expiry::Media
        } else {
            Expiry::Setup
        })
    }

    /// Counters of `side`'s leg.
    pub fn leg_stats(&self, side: Side) -> LegStats {
        let leg = &self.legs[side.index()];
        LegStats {
            lost: leg.loss.lost(),
            ..leg.stats
        }
    }

    /// When the session was created.
    pub fn created(&self) -> Instant {
        self.created
    }

    /// When the last valid packet arrived.
    pub fn last_packet(&self) -> Option<Instant> {
        self.last_packet
    }

    /// Where `side`'s RTP currently goes (latched source, else its SDP address).
    pub fn destination(&self, side: Side) -> Option<SocketAddr> {
        self.legs[side.index()].rtp.destination()
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
