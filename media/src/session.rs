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

use crate::api::{LegStats, Side};
use crate::latch::{Latch, Verdict};
use crate::rtp::{LossCounter, Packet, RtpHeader, classify};
use crate::sdp::Remote;
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
    /// The receiving party has no address yet (hold, or no SDP and no packet from it).
    NoDestination,
}

impl DropReason {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::NotMedia => "not_media",
            DropReason::WrongSource => "wrong_source",
            DropReason::NoDestination => "no_destination",
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
    rtp: Latch,
    rtcp: Latch,
    rtcp_mux: bool,
    loss: LossCounter,
    stats: LegStats,
}

impl Leg {
    fn new(relatch_after: Duration) -> Leg {
        Leg {
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
