//! The operator's Prometheus metrics, served on `/metrics` (OpenMetrics text).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `kubepbx_operator_reconciles_total` | counter | `result` (`ok`, `error`) |
//! | `kubepbx_operator_reconcile_errors_total` | counter | `reason` ([`ErrorReason`]) |
//! | `kubepbx_operator_status_writes_total` | counter | — `.status` patches sent |
//! | `kubepbx_operator_queue_depth` | gauge | — Extensions waiting for a reconcile because etcd changed, plus reconciles running |
//! | `kubepbx_operator_leader` | gauge | — 1 while this replica holds the leader Lease |
//! | `kubepbx_operator_etcd_connected` | gauge | — 1 while etcd answers |

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicI64;

/// Why a reconcile failed, as the `reason` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum ErrorReason {
    /// etcd did not answer.
    EtcdUnavailable,
    /// The Kubernetes API refused or did not answer a request.
    KubeApi,
    /// Adding or removing the finalizer failed.
    Finalizer,
}

impl ErrorReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorReason::EtcdUnavailable => "EtcdUnavailable",
            ErrorReason::KubeApi => "KubeApi",
            ErrorReason::Finalizer => "Finalizer",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: ErrorReason,
}

/// The counters and gauges; shared by the reconciler and the HTTP server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabel, Counter>,
    errors: Family<ReasonLabel, Counter>,
    status_writes: Counter,
    queue_depth: Gauge<i64, AtomicI64>,
    leader: Gauge<i64, AtomicI64>,
    etcd_connected: Gauge<i64, AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kubepbx_operator");
        let reconciles = Family::<ResultLabel, Counter>::default();
        let errors = Family::<ReasonLabel, Counter>::default();
        let status_writes = Counter::default();
        let queue_depth = Gauge::<i64, AtomicI64>::default();
        let leader = Gauge::<i64, AtomicI64>::default();
        let etcd_connected = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "reconciles",
            "Reconciles of Extensions, by result",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles, by reason",
            errors.clone(),
        );
        registry.register(
            "status_writes",
            "Extension status patches sent",
            status_writes.clone(),
        );
        registry.register(
            "queue_depth",
            "Extensions waiting for a reconcile because etcd changed, plus reconciles running",
            queue_depth.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        registry.register(
            "etcd_connected",
            "1 while etcd answers",
            etcd_connected.clone(),
        );
        // Every label value exists from the start, so dashboards see zeros rather than gaps.
        for result in ["ok", "error"] {
            drop(reconciles.get_or_create(&ResultLabel { result }));
        }
        for reason in [
            ErrorReason::EtcdUnavailable,
            ErrorReason::KubeApi,
            ErrorReason::Finalizer,
        ] {
            drop(errors.get_or_create(&ReasonLabel { reason }));
        }
        Metrics {
            registry,
            reconciles,
            errors,
            status_writes,
            queue_depth,
            leader,
            etcd_connected,
        }
    }
}

impl Metrics {
    /// A reconcile ended well.
    pub fn reconciled(&self) {
        self.reconciles
            .get_or_create(&ResultLabel { result: "ok" })
            .inc();
    }

    /// A reconcile failed for `reason`.
    pub fn failed(&self, reason: ErrorReason) {
        self.reconciles
            .get_or_create(&ResultLabel { result: "error" })
            .inc();
        self.errors.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Failed reconciles for `reason` so far.
    pub fn failures(&self, reason: ErrorReason) -> u64 {
        self.errors.get_or_create(&ReasonLabel { reason }).get()
    }

    /// A status patch was sent.
    pub fn status_written(&self) {
        self.status_writes.inc();
    }

    /// Status patches sent so far.
    pub fn status_writes(&self) -> u64 {
        self.status_writes.get()
    }

    /// Sets the queue depth.
    pub fn set_queue_depth(&self, depth: usize) {
        self.queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// Sets whether this replica leads.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Sets whether etcd answers.
    pub fn set_etcd_connected(&self, connected: bool) {
        self.etcd_connected.set(i64::from(connected));
    }

    /// Everything in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_exposed_with_their_labels() {
        let m = Metrics::default();
        m.reconciled();
        m.failed(ErrorReason::EtcdUnavailable);
        m.set_queue_depth(3);
        let text = m.encode();
        for line in [
            "kubepbx_operator_reconciles_total{result=\"ok\"} 1",
            "kubepbx_operator_reconciles_total{result=\"error\"} 1",
            "kubepbx_operator_reconcile_errors_total{reason=\"EtcdUnavailable\"} 1",
            "kubepbx_operator_reconcile_errors_total{reason=\"KubeApi\"} 0",
            "kubepbx_operator_queue_depth 3",
            "kubepbx_operator_leader 0",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
