//! The kubepbx operator: Extension custom resources become extension records in etcd, and what
//! the registrars see (registrations, the last failure) comes back into each Extension's
//! `.status`, so `kubectl get extensions` tells who is registered and why not.
//!
//! # Layout
//!
//! - [`verdict`]: the sans-IO heart of a reconcile: from an Extension, its Secret and the other
//!   Extensions claiming the same number, the record to write and the `Ready` and
//!   `CredentialsSynced` conditions with their reasons.
//! - [`conditions`]: `metav1.Condition`s as the status keeps them (a transition time that only
//!   moves when the status does).
//! - [`report`]: the whole `.status` from the verdict and etcd's view, and when it is worth
//!   writing (sans-IO).
//! - [`mirror`]: the operator's copy of etcd and the task keeping it current; [`triggers`]: the
//!   Extensions a change in etcd asks to reconcile; [`secrets`]: password Secrets already read.
//! - [`reconcile`]: one reconcile (finalizer, Secret, etcd, status, Events) and its error policy.
//! - [`run`]: the process (leader election, controller, watches); [`http`]: `/healthz`,
//!   `/readyz`, `/metrics`; [`metrics`]: the counters.
//! - [`load_balancer`]: not the operator's own: the address of a `LoadBalancer` Service, which
//!   registrar and media replicas wait for and advertise (`--advertise-service`).
//!
//! Design decisions: `docs/adr/0004-operator.md`; for users: `docs/operator.md`.

pub mod conditions;
pub mod http;
pub mod load_balancer;
pub mod metrics;
pub mod mirror;
pub mod reconcile;
pub mod report;
pub mod run;
pub mod secrets;
pub mod triggers;
pub mod verdict;
