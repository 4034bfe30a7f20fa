//! Relay-wide counters for `/metrics`: plain atomics the owner reads with
//! [`RelayMetrics::snapshot`] and exports however it likes (the registrar maps them to
//! Prometheus). Session tasks add once per batch of packets, not per packet.

use crate::session::DropReason;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of one relay.
#[derive(Debug, Default)]
pub struct RelayMetrics {
    pub(crate) rtp_relayed: AtomicU64,
    pub(crate) rtp_bytes_relayed: AtomicU64,
    pub(crate) rtcp_relayed: AtomicU64,
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
    /// Sessions alive now.
    pub sessions_active: u64,
    /// Port pairs free now.
    pub port_pairs_free: u64,
    /// Port pairs in the range.
    pub port_pairs_total: u64,
}

impl RelayMetrics {
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
        MetricsSnapshot {
            rtp_relayed: get(&self.rtp_relayed),
            rtp_bytes_relayed: get(&self.rtp_bytes_relayed),
            rtcp_relayed: get(&self.rtcp_relayed),
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
            sessions_active: started.saturating_sub(ended),
            port_pairs_free: 0,
            port_pairs_total: 0,
        }
    }
}
