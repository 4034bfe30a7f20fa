//! Prometheus metrics: the drive loop hands out a [`MetricsSnapshot`] of the endpoint's
//! counters and gauges; `/metrics` encodes it in the OpenMetrics text format.
//!
//! Names (counters get `_total` from the encoder):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `kubepbx_registrations` | gauge | — current bindings |
//! | `kubepbx_extensions` | gauge | — extensions known |
//! | `kubepbx_sip_requests_total` | counter | `method` |
//! | `kubepbx_sip_responses_total` | counter | `class` (`1xx` … `6xx`) |
//! | `kubepbx_sip_retransmissions_total` | counter | — requests answered from a transaction |
//! | `kubepbx_sip_transactions` | gauge | — live server transactions |
//! | `kubepbx_sip_dropped_total` | counter | `reason` |
//! | `kubepbx_registers_total` | counter | `result` (`ok`, `challenged`, `failed`) |
//! | `kubepbx_auth_failures_total` | counter | `reason` (the failure codes) |
//! | `kubepbx_bans_total` | counter | — sources banned |
//! | `kubepbx_banned_sources` | gauge | — sources banned now |
//! | `kubepbx_sip_connections` | gauge | — open TCP connections |
//! | `kubepbx_heap_allocated_bytes` | gauge | — live heap bytes (jemalloc) |
//! | `kubepbx_heap_resident_bytes` | gauge | — memory the allocator holds from the system |
//! | `kubepbx_calls_active` | gauge | — calls ringing or answered |
//! | `kubepbx_calls_started_total` | counter | — calls routed to a callee |
//! | `kubepbx_calls_answered_total` | counter | — calls answered |
//! | `kubepbx_calls_ended_total` | counter | `reason` (`caller-hangup`, `busy`, `no-answer`, …) |
//! | `kubepbx_calls_failed_total` | counter | `reason` — calls that ended before an answer |
//! | `kubepbx_media_sessions` | gauge | — relay sessions now |
//! | `kubepbx_media_packets_relayed_total` | counter | `kind` (`rtp`, `rtcp`) |
//! | `kubepbx_media_bytes_relayed_total` | counter | — RTP bytes |
//! | `kubepbx_media_packets_lost_total` | counter | — RTP lost before the relay (ended sessions) |
//! | `kubepbx_media_packets_dropped_total` | counter | `reason` |
//! | `kubepbx_media_sessions_timed_out_total` | counter | — sessions reaped for lack of media |
//! | `kubepbx_media_ports_free` | gauge | — RTP port pairs free (of `kubepbx_media_ports_total`) |

use kubepbx_api::records::FailureReason;
use kubepbx_sip::endpoint::{DropReason, EndReason, METHOD_LABELS, Stats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// Counters and gauges at one moment.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    /// The endpoint's counters.
    pub stats: Stats,
    /// Messages the driver could not deliver (flow closed, connection congested).
    pub undeliverable: u64,
    /// Current bindings.
    pub registrations: u64,
    /// Extensions known.
    pub extensions: u64,
    /// Live server transactions.
    pub transactions: u64,
    /// Sources banned now.
    pub banned: u64,
    /// Open TCP connections.
    pub connections: u64,
    /// Live heap bytes and bytes resident in the allocator, when the allocator is jemalloc.
    pub heap: Option<(u64, u64)>,
    /// Calls in progress.
    pub active_calls: u64,
    /// The media relay's counters, when it runs in this process.
    pub relay: Option<kubepbx_media::MetricsSnapshot>,
}

/// Live heap bytes and resident allocator bytes; `None` when jemalloc's statistics are not
/// readable.
pub fn heap() -> Option<(u64, u64)> {
    use tikv_jemalloc_ctl::{epoch, stats};
    let read = || -> Result<(u64, u64), tikv_jemalloc_ctl::Error> {
        epoch::advance()?;
        Ok((
            stats::allocated::read()? as u64,
            stats::resident::read()? as u64,
        ))
    };
    read()
        .inspect_err(|e| tracing::debug!(error = %e, "jemalloc statistics unavailable"))
        .ok()
}

impl MetricsSnapshot {
    /// The snapshot in the OpenMetrics text format.
    pub fn encode(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn labelled<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = e.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (value, n) in values {
        let labels = [(label, value)];
        ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for MetricsSnapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.stats;
        gauge(
            &mut e,
            "kubepbx_registrations",
            "Current registration bindings",
            self.registrations,
        )?;
        gauge(
            &mut e,
            "kubepbx_extensions",
            "Extensions known",
            self.extensions,
        )?;
        labelled(
            &mut e,
            "kubepbx_sip_requests",
            "SIP requests received",
            "method",
            METHOD_LABELS
                .iter()
                .copied()
                .zip(s.requests.iter().copied()),
        )?;
        const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];
        labelled(
            &mut e,
            "kubepbx_sip_responses",
            "SIP responses sent, by class",
            "class",
            CLASSES.iter().copied().zip(s.responses.iter().copied()),
        )?;
        counter(
            &mut e,
            "kubepbx_sip_retransmissions",
            "Retransmitted requests answered from their transaction",
            s.retransmissions,
        )?;
        gauge(
            &mut e,
            "kubepbx_sip_transactions",
            "Live server transactions",
            self.transactions,
        )?;
        let dropped = DropReason::ALL
            .iter()
            .map(|r| r.as_str())
            .zip(s.dropped.iter().copied())
            .chain([("undeliverable", self.undeliverable)]);
        labelled(
            &mut e,
            "kubepbx_sip_dropped",
            "SIP packets dropped without an answer, by reason",
            "reason",
            dropped,
        )?;
        let failed: u64 = s.failures.iter().sum();
        labelled(
            &mut e,
            "kubepbx_registers",
            "REGISTER requests by result",
            "result",
            [
                ("ok", s.registers_ok),
                ("challenged", s.challenges),
                ("failed", failed),
            ],
        )?;
        labelled(
            &mut e,
            "kubepbx_auth_failures",
            "Failed registration attempts by reason",
            "reason",
            FailureReason::ALL
                .iter()
                .map(|r| r.as_str())
                .zip(s.failures.iter().copied()),
        )?;
        counter(
            &mut e,
            "kubepbx_bans",
            "Sources banned for repeated failures",
            s.bans,
        )?;
        gauge(
            &mut e,
            "kubepbx_banned_sources",
            "Sources banned now",
            self.banned,
        )?;
        gauge(
            &mut e,
            "kubepbx_sip_connections",
            "Open SIP TCP connections",
            self.connections,
        )?;
        encode_calls(self, &mut e)?;
        if let Some(relay) = &self.relay {
            encode_relay(relay, &mut e)?;
        }
        if let Some((allocated, resident)) = self.heap {
            gauge(
                &mut e,
                "kubepbx_heap_allocated_bytes",
                "Live heap bytes",
                allocated,
            )?;
            gauge(
                &mut e,
                "kubepbx_heap_resident_bytes",
                "Bytes the allocator holds from the system",
                resident,
            )?;
        }
        Ok(())
    }
}

fn encode_calls(m: &MetricsSnapshot, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let s = &m.stats;
    gauge(
        e,
        "kubepbx_calls_active",
        "Calls ringing or answered",
        m.active_calls,
    )?;
    counter(
        e,
        "kubepbx_calls_started",
        "Calls routed to a callee",
        s.calls_started,
    )?;
    counter(
        e,
        "kubepbx_calls_answered",
        "Calls answered",
        s.calls_answered,
    )?;
    labelled(
        e,
        "kubepbx_calls_ended",
        "Calls ended, by reason",
        "reason",
        EndReason::ALL
            .iter()
            .map(|r| r.as_str())
            .zip(s.calls_ended.iter().copied()),
    )?;
    labelled(
        e,
        "kubepbx_calls_failed",
        "Calls that ended before an answer, by reason",
        "reason",
        EndReason::ALL
            .iter()
            .map(|r| r.as_str())
            .zip(s.calls_failed.iter().copied()),
    )
}

fn encode_relay(
    r: &kubepbx_media::MetricsSnapshot,
    e: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    gauge(
        e,
        "kubepbx_media_sessions",
        "Media relay sessions now",
        r.sessions_active,
    )?;
    labelled(
        e,
        "kubepbx_media_packets_relayed",
        "Packets relayed",
        "kind",
        [("rtp", r.rtp_relayed), ("rtcp", r.rtcp_relayed)],
    )?;
    counter(
        e,
        "kubepbx_media_bytes_relayed",
        "RTP bytes relayed",
        r.rtp_bytes_relayed,
    )?;
    counter(
        e,
        "kubepbx_media_packets_lost",
        "RTP packets lost before reaching the relay (sequence gaps, ended sessions)",
        r.lost,
    )?;
    labelled(
        e,
        "kubepbx_media_packets_dropped",
        "Packets the relay dropped, by reason",
        "reason",
        [
            ("not_media", r.dropped_not_media),
            ("wrong_source", r.dropped_wrong_source),
            ("no_destination", r.dropped_no_destination),
            ("send_error", r.send_errors),
            ("recording_queue_full", r.recording_dropped),
        ],
    )?;
    counter(
        e,
        "kubepbx_media_sessions_timed_out",
        "Media sessions reaped for lack of media",
        r.sessions_timed_out,
    )?;
    gauge(
        e,
        "kubepbx_media_ports_free",
        "RTP port pairs free",
        r.port_pairs_free,
    )?;
    gauge(
        e,
        "kubepbx_media_ports_total",
        "RTP port pairs in the range",
        r.port_pairs_total,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_names_and_labels() {
        let mut snapshot = MetricsSnapshot {
            registrations: 3,
            ..Default::default()
        };
        snapshot.stats.failures[1] = 7;
        snapshot.stats.registers_ok = 5;
        let text = snapshot.encode();
        assert!(text.contains("kubepbx_registrations 3\n"), "{text}");
        let wrong = FailureReason::ALL[1].as_str();
        assert!(
            text.contains(&format!(
                "kubepbx_auth_failures_total{{reason=\"{wrong}\"}} 7\n"
            )),
            "{text}"
        );
        assert!(
            text.contains("kubepbx_registers_total{result=\"ok\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("kubepbx_sip_dropped_total{reason=\"banned\"} 0\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
