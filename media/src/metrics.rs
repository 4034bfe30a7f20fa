//! Relay-wide counters for `/metrics`: plain atomics the owner reads with
//! [`RelayMetrics::snapshot`] and exports however it likes (the registrar maps them to
//! Prometheus). Session tasks add once per batch of packets, not per packet, and the counters
//! that move with every packet have a copy per relay thread (`Relayed`, on a cache line of
//! its own), summed when read: threads adding to one shared counter would pass its cache line
//! back and forth with every packet.

use crate::session::DropReason;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

/// The per-packet counters of one relay thread.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Relayed {
    pub(crate) rtp: AtomicU64,
    pub(crate) rtp_bytes: AtomicU64,
    pub(crate) rtcp: AtomicU64,
}

impl Relayed {
    /// RTP and RTCP packets relayed so far.
    pub(crate) fn packets(&self) -> u64 {
        self.rtp.load(Ordering::Relaxed) + self.rtcp.load(Ordering::Relaxed)
    }
}

/// Live counters of one relay.
#[derive(Debug)]
pub struct RelayMetrics {
    /// By relay thread.
    relayed: Box<[Relayed]>,
    pub(crate) dropped_not_media: AtomicU64,
    pub(crate) dropped_wrong_source: AtomicU64,
    pub(crate) dropped_no_destination: AtomicU64,
    pub(crate) send_errors: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) sessions_started: AtomicU64,
    pub(crate) sessions_ended: AtomicU64,
    pub(crate) sessions_timed_out: AtomicU64,
    pub(crate) recording_dropped: AtomicU64,
    pub(crate) dropped_unknown_payload: AtomicU64,
    pub(crate) webrtc_dropped: AtomicU64,
    pub(crate) sessions_failed: AtomicU64,
    pub(crate) sessions_moved: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSnapshot {
    /// RTP packets relayed (both directions).
    pub rtp_relayed: u64,
    /// RTP bytes relayed.
    pub rtp_bytes_relayed: u64,
    /// RTCP packets relayed.
    pub rtcp_relayed: u64,
    /// Dropped: not RTP/RTCP.
    pub dropped_not_media: u64,
    /// Dropped: from a source other than the latched one.
    pub dropped_wrong_source: u64,
    /// Dropped: the receiver had no address yet.
    pub dropped_no_destination: u64,
    /// `send_to` failed.
    pub send_errors: u64,
    /// RTP packets lost before reaching the relay, summed over ended sessions.
    pub lost: u64,
    /// Sessions created.
    pub sessions_started: u64,
    /// Sessions ended (deleted, reaped or shut down).
    pub sessions_ended: u64,
    /// Sessions reaped by the media/setup timeout.
    pub sessions_timed_out: u64,
    /// Packets the recording writers could not keep up with.
    pub recording_dropped: u64,
    /// Dropped: a payload type the receiving leg did not negotiate.
    #[serde(default)]
    pub dropped_unknown_payload: u64,
    /// Datagrams on the WebRTC port dropped before reaching a leg: unknown ICE username or
    /// source, or the leg's session behind.
    #[serde(default)]
    pub webrtc_dropped: u64,
    /// Sessions ended by a WebRTC failure (ICE or DTLS).
    #[serde(default)]
    pub sessions_failed: u64,
    /// Times a session moved to the relay thread that reads its browser's datagrams.
    #[serde(default)]
    pub sessions_moved: u64,
    /// Sessions alive now.
    pub sessions_active: u64,
    /// Port pairs free now.
    pub port_pairs_free: u64,
    /// Port pairs in the range.
    pub port_pairs_total: u64,
}

impl Default for RelayMetrics {
    fn default() -> Self {
        RelayMetrics::new(1)
    }
}

impl RelayMetrics {
    /// Counters for a relay with `threads` threads.
    pub(crate) fn new(threads: usize) -> RelayMetrics {
        RelayMetrics {
            relayed: (0..threads.max(1)).map(|_| Relayed::default()).collect(),
            dropped_not_media: AtomicU64::default(),
            dropped_wrong_source: AtomicU64::default(),
            dropped_no_destination: AtomicU64::default(),
            send_errors: AtomicU64::default(),
            lost: AtomicU64::default(),
            sessions_started: AtomicU64::default(),
            sessions_ended: AtomicU64::default(),
            sessions_timed_out: AtomicU64::default(),
            recording_dropped: AtomicU64::default(),
            dropped_unknown_payload: AtomicU64::default(),
            webrtc_dropped: AtomicU64::default(),
            sessions_failed: AtomicU64::default(),
            sessions_moved: AtomicU64::default(),
        }
    }

    /// The per-packet counters of relay thread `thread`.
    pub(crate) fn relayed(&self, thread: usize) -> &Relayed {
        &self.relayed[thread % self.relayed.len()]
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn dropped(&self, reason: DropReason) -> &AtomicU64 {
        match reason {
            DropReason::NotMedia => &self.dropped_not_media,
            DropReason::WrongSource => &self.dropped_wrong_source,
            DropReason::NoDestination => &self.dropped_no_destination,
            DropReason::UnknownPayload => &self.dropped_unknown_payload,
        }
    }

    /// Reads every counter (pool and session gauges are filled in by the relay).
    pub fn snapshot(&self) -> MetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let started = get(&self.sessions_started);
        let ended = get(&self.sessions_ended);
        let sum = |c: fn(&Relayed) -> &AtomicU64| self.relayed.iter().map(|r| get(c(r))).sum();
        MetricsSnapshot {
            rtp_relayed: sum(|r| &r.rtp),
            rtp_bytes_relayed: sum(|r| &r.rtp_bytes),
            rtcp_relayed: sum(|r| &r.rtcp),
            dropped_not_media: get(&self.dropped_not_media),
            dropped_wrong_source: get(&self.dropped_wrong_source),
            dropped_no_destination: get(&self.dropped_no_destination),
            send_errors: get(&self.send_errors),
            lost: get(&self.lost),
            sessions_started: started,
            sessions_ended: ended,
            sessions_timed_out: get(&self.sessions_timed_out),
            recording_dropped: get(&self.recording_dropped),
            dropped_unknown_payload: get(&self.dropped_unknown_payload),
            webrtc_dropped: get(&self.webrtc_dropped),
            sessions_failed: get(&self.sessions_failed),
            sessions_moved: get(&self.sessions_moved),
            sessions_active: started.saturating_sub(ended),
            port_pairs_free: 0,
            port_pairs_total: 0,
        }
    }
}
