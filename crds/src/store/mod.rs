//! The store: the one shared memory of the PBX.
//!
//! Writers send batches of [`Write`]s through [`Store::apply`]; readers call [`Store::watch`] once
//! to get a consistent [`Snapshot`] plus a [`Subscription`] that delivers every later change as an
//! [`Event`]. Registrars keep a memory cache fed this way, so a lookup never waits for the store.
//!
//! Bindings expire on their own (`expires_at`); the store deletes expired bindings and reports
//! them as [`Event::BindingDeleted`] — etcd does this with leases, the embedded store with a sweep.
//!
//! A subscriber that falls behind gets [`Event::Resync`] and must call [`Store::watch`] again.
//!
//! Two implementations: [`EmbeddedStore`] (one process, `kubepbx up`, unit tests) and
//! [`EtcdStore`] (a cluster of replicas sharing one etcd). Both pass the same contract tests
//! (`contract.rs`).

pub mod embedded;
pub mod etcd;

#[cfg(test)]
mod contract;

pub use embedded::{EmbeddedOptions, EmbeddedStats, EmbeddedStore};
pub use etcd::{
    Announcement, ClientCert, EtcdHealth, EtcdOptions, EtcdStore, EtcdTls, EtcdTlsError,
    FollowedMap, OwnedRecords, ReplicaMap, TlsFile,
};

use crate::records::{Binding, BindingKey, ExtensionRecord, RegStatus, UserKey};
use crate::time::UnixMillis;
use std::fmt;
use std::sync::Arc;
use tokio::sync::broadcast;

/// One change to the store.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Creates or replaces an extension record.
    PutExtension(ExtensionRecord),
    /// Removes an extension together with its bindings and status.
    DeleteExtension(UserKey),
    /// Creates or replaces a binding.
    PutBinding(Arc<Binding>),
    /// Extends an existing binding without changing anything else (cheap: a lease change in
    /// etcd, a short log record in the embedded store). Ignored if the binding is gone.
    ///
    /// A store may round the new expiry up, never down: etcd keeps refreshed bindings until the
    /// end of a lease bucket (5 s by default), and reports that instant.
    RefreshBinding {
        /// The binding.
        key: BindingKey,
        /// New expiry.
        expires_at: UnixMillis,
    },
    /// Removes a binding.
    DeleteBinding(BindingKey),
    /// Replaces the registration status of an extension.
    PutStatus(UserKey, RegStatus),
}

/// One change seen by a subscriber.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An extension record was created or replaced.
    ExtensionPut(ExtensionRecord),
    /// An extension was removed (its bindings and status are removed with it; their own
    /// deletion events may or may not be sent).
    ExtensionDeleted(UserKey),
    /// A binding was created or replaced.
    BindingPut(Arc<Binding>),
    /// A binding's expiry was extended.
    BindingRefreshed {
        /// The binding.
        key: BindingKey,
        /// New expiry (possibly rounded up, see [`Write::RefreshBinding`]).
        expires_at: UnixMillis,
    },
    /// A binding was removed or expired.
    BindingDeleted(BindingKey),
    /// A registration status changed.
    StatusPut(UserKey, RegStatus),
    /// The subscriber missed events: call [`Store::watch`] again for a fresh snapshot.
    Resync,
}

/// Everything in the store at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every extension record.
    pub extensions: Vec<ExtensionRecord>,
    /// Every unexpired binding.
    pub bindings: Vec<Arc<Binding>>,
    /// Every registration status.
    pub statuses: Vec<(UserKey, RegStatus)>,
}

/// A stream of [`Event`]s following a snapshot.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Event>,
}

impl Subscription {
    /// Wraps the receiving end of a store's event channel.
    pub fn new(rx: broadcast::Receiver<Event>) -> Self {
        Subscription { rx }
    }

    /// The next event; `None` when the store is gone. A subscriber that fell behind receives
    /// [`Event::Resync`].
    pub async fn next(&mut self) -> Option<Event> {
        match self.rx.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(_)) => {
                self.rx = self.rx.resubscribe();
                Some(Event::Resync)
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing the store's files failed.
    #[error("store I/O on {path}: {source}")]
    Io {
        /// File or directory involved.
        path: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A stored value could not be decoded.
    #[error("corrupt store data in {path}: {detail}")]
    Corrupt {
        /// File (or key) involved.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The store is not reachable right now (etcd down); the write can be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A store address is malformed (e.g. a wrong `--etcd` URL).
    #[error("invalid store endpoint {url:?}: {detail}")]
    InvalidEndpoint {
        /// The address as given.
        url: String,
        /// What is wrong with it.
        detail: String,
    },
    /// TLS to etcd is misconfigured (`--etcd-ca`, `--etcd-cert`, `--etcd-key` against the
    /// `--etcd` URLs) or its handshake failed.
    #[error(transparent)]
    Tls(#[from] etcd::EtcdTlsError),
    /// The store refused a request; retrying the same request will not help (a misconfigured
    /// server, missing permissions, or a request over the server's limits).
    #[error("store rejected {what}: {detail}")]
    Rejected {
        /// What was asked, naming the server and key involved.
        what: String,
        /// The server's answer.
        detail: String,
    },
}

/// The store contract shared by the embedded store and etcd.
#[async_trait::async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// A consistent snapshot and a subscription to every change after it.
    async fn watch(&self) -> Result<(Snapshot, Subscription), StoreError>;

    /// Applies writes in order. Either all are accepted or an error is returned.
    async fn apply(&self, writes: Vec<Write>) -> Result<(), StoreError>;

    /// Makes accepted writes durable (flush and sync); also done periodically by the store.
    async fn flush(&self) -> Result<(), StoreError>;
}
