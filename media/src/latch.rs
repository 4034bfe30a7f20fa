//! Symmetric RTP with latching: where to send a leg's traffic, and which sources to believe.
//!
//! Phones behind NAT advertise private addresses in their SDP, so the relay sends each party's
//! media to where that party's packets come from. One [`Latch`] per leg and socket kind (RTP,
//! RTCP) decides, with `now` passed in:
//!
//! - **Before any packet** arrives, traffic goes to the address from the SDP (the *target*), if
//!   it is usable (see [`crate::sdp`]).
//! - **The first valid packet** (parsed as RTP/RTCP v2) latches its source: from then on traffic
//!   goes there, whatever the SDP said.
//! - **A packet from another source** is accepted, and re-latches, only if it carries the same
//!   SSRC as the latched stream (the phone's NAT rebound to a new port) or the latched source has
//!   been silent for `relatch_after` (the phone moved networks, or restarted its stream).
//!   Otherwise it is dropped: a third party spraying packets at relay ports cannot take over a
//!   flowing call, and can only latch a leg whose phone has not sent anything (the window every
//!   latching relay has; the SSRC is not a secret, so it is not a credential — a spoofer who
//!   sees the stream can already do worse).
//! - **A new SDP** from the party with a different address clears the latch (the media may now
//!   come from somewhere else, e.g. after a re-INVITE to another device).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The latching state of one leg for one kind of traffic (RTP or RTCP).
#[derive(Debug, Clone)]
pub struct Latch {
    target: Option<SocketAddr>,
    /// The last non-hold target, to tell a hold/unhold from a move.
    last_target: Option<SocketAddr>,
    latched: Option<Latched>,
    relatch_after: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Latched {
    addr: SocketAddr,
    ssrc: u32,
    last_seen: Instant,
}

/// What to do with a packet that arrived on this leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Relay it; the source is (still) the latched one.
    Accept,
    /// Relay it; its source became the latched one just now (first packet or a re-latch).
    Latched,
    /// Drop it: it comes from a source other than the active latched one.
    Reject,
}

impl Latch {
    /// A latch sending to `target` until a packet arrives.
    pub fn new(target: Option<SocketAddr>, relatch_after: Duration) -> Latch {
        Latch {
            target,
            last_target: target,
            latched: None,
            relatch_after,
        }
    }

    /// Judges a packet from `src` carrying `ssrc`, received at `now`.
    pub fn on_packet(&mut self, src: SocketAddr, ssrc: u32, now: Instant) -> Verdict {
        match &mut self.latched {
            Some(l) if l.addr == src => {
                l.ssrc = ssrc;
                l.last_seen = now;
                Verdict::Accept
            }
            Some(l)
                if l.ssrc != ssrc
                    && now.saturating_duration_since(l.last_seen) < self.relatch_after =>
            {
                Verdict::Reject
            }
            _ => {
                self.latched = Some(Latched {
                    addr: src,
                    ssrc,
                    last_seen: now,
                });
                Verdict::Latched
            }
        }
    }

    /// Where traffic for this leg goes now: the latched source, else the SDP target.
    pub fn destination(&self) -> Option<SocketAddr> {
        self.latched.map(|l| l.addr).or(self.target)
    }

    /// The latched source, if any.
    pub fn latched(&self) -> Option<SocketAddr> {
        self.latched.map(|l| l.addr)
    }

    /// A new SDP named `target`. A change of address clears the latch; a hold (`None`, from
    /// `c=0.0.0.0`) keeps it, so media resumes to the same place when the hold ends.
    pub fn set_target(&mut self, target: Option<SocketAddr>) {
        if let Some(new) = target {
            if self.last_target.is_some_and(|old| old != new) {
                self.latched = None;
            }
            self.last_target = Some(new);
        }
        self.target = target;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sends_to_the_sdp_address_until_the_first_packet() {
        let t0 = Instant::now();
        let mut l = Latch::new(Some(addr("10.255.255.1:4000")), Duration::from_secs(2));
        assert_eq!(l.destination(), Some(addr("10.255.255.1:4000")));
        assert_eq!(l.on_packet(addr("127.0.0.7:5555"), 1, t0), Verdict::Latched);
        assert_eq!(l.destination(), Some(addr("127.0.0.7:5555")));
        assert_eq!(l.on_packet(addr("127.0.0.7:5555"), 1, t0), Verdict::Accept);
    }

    #[test]
    fn a_third_party_cannot_hijack_a_flowing_stream() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut l = Latch::new(None, Duration::from_secs(2));
        assert_eq!(l.destination(), None);
        l.on_packet(addr("127.0.0.7:5555"), 1, t0);
        assert_eq!(
            l.on_packet(addr("127.0.0.66:6666"), 99, t0 + ms(20)),
            Verdict::Reject
        );
        assert_eq!(
            l.on_packet(addr("127.0.0.7:5555"), 1, t0 + ms(1000)),
            Verdict::Accept
        );
        assert_eq!(
            l.on_packet(addr("127.0.0.66:6666"), 99, t0 + ms(2999)),
            Verdict::Reject
        );
        assert_eq!(l.destination(), Some(addr("127.0.0.7:5555")));
        // The real source went silent for 2 s: a new stream may take over.
        assert_eq!(
            l.on_packet(addr("127.0.0.66:6666"), 99, t0 + ms(3000)),
            Verdict::Latched
        );
        assert_eq!(l.destination(), Some(addr("127.0.0.66:6666")));
    }

    #[test]
    fn same_ssrc_from_a_new_port_relatches_at_once() {
        let t0 = Instant::now();
        let mut l = Latch::new(None, Duration::from_secs(2));
        l.on_packet(addr("127.0.0.7:5555"), 42, t0);
        assert_eq!(
            l.on_packet(addr("127.0.0.7:5600"), 42, t0),
            Verdict::Latched
        );
        assert_eq!(l.destination(), Some(addr("127.0.0.7:5600")));
        // The old port is now the stranger.
        assert_eq!(l.on_packet(addr("127.0.0.7:5555"), 43, t0), Verdict::Reject);
    }

    #[test]
    fn new_sdp_address_clears_the_latch_hold_does_not() {
        let t0 = Instant::now();
        let mut l = Latch::new(Some(addr("127.0.0.7:4000")), Duration::from_secs(2));
        l.on_packet(addr("127.0.0.7:5555"), 1, t0);
        l.set_target(None); // hold
        assert_eq!(l.destination(), Some(addr("127.0.0.7:5555")));
        l.set_target(Some(addr("127.0.0.7:4000"))); // unhold, address as before the hold
        assert_eq!(l.destination(), Some(addr("127.0.0.7:5555")));
        l.set_target(Some(addr("127.0.0.8:4000"))); // another device
        assert_eq!(l.destination(), Some(addr("127.0.0.8:4000")));
        assert_eq!(l.latched(), None);
    }
}
