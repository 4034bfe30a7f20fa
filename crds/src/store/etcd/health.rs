//! Connection health, for `/readyz`, `kubepbx doctor` and logs.
//!
//! Every etcd request of the store reports its outcome here (a maintenance tick makes one every
//! few seconds even when idle). The state changes are logged once each, not per request: one
//! warning when etcd stops answering, one line when it answers again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// What an [`EtcdStore`](super::EtcdStore) knows about its etcd right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdHealth {
    /// The last request reached etcd (a refused request counts as reached).
    pub connected: bool,
    /// The last error that made etcd look unreachable, with the endpoints; kept after
    /// recovery for diagnostics.
    pub last_error: Option<String>,
    /// Values under the prefix that could not be decoded and were skipped.
    pub corrupt_values: u64,
}

#[derive(Debug)]
pub(super) struct Health {
    endpoints: String,
    connected: AtomicBool,
    last_error: Mutex<Option<String>>,
    corrupt: AtomicU64,
}

impl Health {
    pub(super) fn new(endpoints: String) -> Self {
        Health {
            endpoints,
            connected: AtomicBool::new(true),
            last_error: Mutex::new(None),
            corrupt: AtomicU64::new(0),
        }
    }

    /// etcd answered.
    pub(super) fn reachable(&self) {
        if !self.connected.swap(true, Ordering::Relaxed) {
            tracing::info!(endpoints = %self.endpoints, "etcd is reachable again");
        }
    }

    /// etcd did not answer; `error` says why (and names the endpoints).
    pub(super) fn unreachable(&self, error: &str) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error.to_owned());
        if self.connected.swap(false, Ordering::Relaxed) {
            tracing::warn!(%error, "etcd is unreachable; serving from cache and retrying");
        }
    }

    /// A value under `key` was skipped: `detail` says what is wrong with it.
    pub(super) fn corrupt(&self, key: &str, detail: &str) {
        self.corrupt.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%key, %detail, "skipping a corrupt value in etcd");
    }

    pub(super) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub(super) fn corrupt_values(&self) -> u64 {
        self.corrupt.load(Ordering::Relaxed)
    }

    pub(super) fn report(&self) -> EtcdHealth {
        EtcdHealth {
            connected: self.is_connected(),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            corrupt_values: self.corrupt_values(),
        }
    }
}
