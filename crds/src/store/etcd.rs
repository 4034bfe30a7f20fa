//! The etcd store: the store shared by every replica of a cluster (etcd 3.4 or later).
//!
//! Keys follow [`crate::keys`] under a configurable prefix (default `/kubepbx`); values are the
//! JSON records of [`crate::records`].
//!
//! # Data flow
//!
//! - [`Store::apply`] plans the batch (`plan`) into as few transactions as etcd accepts (one
//!   round trip each; a registrar's batch of a hundred REGISTERs is usually one), grants the
//!   bucket leases it needs that this replica has not seen yet, and sends the transactions in
//!   order. An unreachable etcd gives [`StoreError::Unavailable`], which the caller retries;
//!   writes are idempotent, so a retry after a partly applied batch is harmless. A batch split
//!   over several transactions is not atomic: an error may leave its first part applied.
//! - [`Store::watch`] reads everything under the prefix at one revision `R` (paged, every page at
//!   `R`), then starts a task that follows an etcd watch from `R + 1`: nothing is missed and
//!   nothing is seen twice. Each subscription has its own watch and a bounded broadcast buffer;
//!   a subscriber that falls behind it gets [`Event::Resync`](super::Event::Resync) ([`Subscription::next`]).
//! - When the watch stream breaks (etcd restarted, connection lost), the task reconnects with
//!   backoff and resumes at the next revision it has not seen, so a short outage costs no
//!   reload. It sends [`Event::Resync`](super::Event::Resync) and ends only when resuming is impossible: the revision
//!   was compacted meanwhile, or etcd's history went backwards or belongs to another cluster
//!   (restored or replaced).
//! - A maintenance task lists leases every `maintenance_interval`: that keeps
//!   [`EtcdStore::health`] current when the store is idle, and revokes bucket leases etcd kept
//!   past their end (see below).
//!
//! Every task belongs to the store and is aborted when it is dropped; subscriptions then end.
//!
//! # Expiry: bucket leases
//!
//! A binding lives on an etcd lease, so etcd deletes it when it expires and every watcher sees
//! [`Event::BindingDeleted`](super::Event::BindingDeleted). One lease per binding would cost a lease grant per REGISTER and
//! one lease per phone; instead bindings share a lease per *bucket* of time (`lease_bucket`, 5 s
//! by default) whose id encodes the bucket's end (`lease`). All replicas compute the same ids,
//! so there are two leases per bucket in the whole cluster, and granting one is needed once.
//!
//! A [`Write::RefreshBinding`] is a `Put` with `ignore_value` that moves the key to the refresh
//! lease of its new bucket, inside a nested transaction that does nothing if the key is gone.
//! No value travels; the watcher decodes the new expiry from the event's lease id and reports
//! [`Event::BindingRefreshed`](super::Event::BindingRefreshed).
//!
//! Trade-offs:
//! - A refreshed binding's expiry is rounded up to its bucket's end (at most `lease_bucket`
//!   later than asked; never earlier). A binding put in full keeps its exact expiry; etcd only
//!   removes it at the end of its bucket, so a deletion event may come up to `lease_bucket`
//!   after `expires_at` (readers treat a binding as gone at `expires_at` anyway).
//! - etcd still stores a new revision of the value for each refresh (MVCC copies it); what is
//!   saved is the value on the wire and in the Raft log, and the decoding on every watcher.
//! - etcd 3.4 forgets how much of a lease's TTL is left when it restarts or changes leader, and
//!   grants the full TTL again. The ids still say the intended end: snapshots drop bindings
//!   whose end is past, and the maintenance task revokes such leases after `lease_grace`.
//! - Lease ids are global to an etcd cluster: prefixes sharing one etcd share the bucket leases
//!   (harmless, they mean the same instant).
//!
//! # Corrupt values
//!
//! A value that does not decode (or names another record than its key) is skipped, counted
//! ([`EtcdHealth::corrupt_values`]) and logged with its key, in snapshots and in the watch alike.

mod calls;
#[cfg(test)]
mod calls_tests;
mod cdrs;
#[cfg(test)]
mod cdrs_tests;
mod decode;
mod endpoint;
mod failure;
mod follow;
mod health;
mod lease;
mod owned;
mod plan;
mod registry;
#[cfg(test)]
mod registry_tests;
mod snapshot;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;
mod tls;
#[cfg(test)]
mod tls_tests;
mod watch;
mod window;

pub use follow::FollowedMap;
pub use health::EtcdHealth;
pub use owned::OwnedRecords;
pub use registry::{Announcement, ReplicaMap};
pub use tls::{ClientCert, EtcdTls, EtcdTlsError, TlsFile};

use super::{Snapshot, Store, StoreError, Subscription, Write};
use crate::keys::DEFAULT_PREFIX;
use crate::time::UnixMillis;
use endpoint::endpoint;
use etcd_client::{
    Client, ConnectOptions, GetOptions, LeaseGrantOptions, WatchOptions, WatchStream,
};
use failure::{Failure, chain, classify};
use health::Health;
use lease::{BucketLease, Granted};
use plan::{Op, PlanContext};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::task::JoinSet;

/// Largest subscriber buffer accepted (tokio's own limit is `usize::MAX / 2`).
const MAX_CAPACITY: usize = 1 << 24;
/// Largest message accepted from etcd (a snapshot page of big records, a large watch response).
const MAX_MESSAGE: usize = 64 << 20;

/// Tuning of an [`EtcdStore`]; `Default` gives the production values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// Key prefix (default `/kubepbx`); a trailing `/` is ignored.
    pub prefix: String,
    /// Length of a lease bucket, in whole seconds (default 5 s): refreshed expiries are rounded
    /// up to a bucket's end.
    pub lease_bucket: Duration,
    /// The server's `--max-txn-ops` (default 128, etcd's default).
    pub max_txn_ops: usize,
    /// Time limit of one request (default 5 s).
    pub request_timeout: Duration,
    /// Time limit of opening a connection (default 3 s).
    pub connect_timeout: Duration,
    /// Events buffered per subscriber before it gets [`Event::Resync`](super::Event::Resync)
    /// (default 8 192).
    pub subscriber_capacity: usize,
    /// First wait before re-opening a lost watch; doubles up to 10 s (default 500 ms).
    pub retry_interval: Duration,
    /// How often the maintenance task checks etcd and its leases (default 5 s).
    pub maintenance_interval: Duration,
    /// How long past its end a bucket lease may live before it is revoked (default 30 s: more
    /// than the clock difference expected between replicas and etcd).
    pub lease_grace: Duration,
    /// TLS to etcd, for `https://` endpoints (default none: plain `http://`).
    pub tls: Option<EtcdTls>,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            prefix: DEFAULT_PREFIX.to_owned(),
            lease_bucket: Duration::from_secs(5),
            max_txn_ops: 128,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            subscriber_capacity: 8_192,
            retry_interval: Duration::from_millis(500),
            maintenance_interval: Duration::from_secs(5),
            lease_grace: Duration::from_secs(30),
            tls: None,
        }
    }
}

impl EtcdOptions {
    /// Values etcd and tokio accept.
    fn sanitized(mut self) -> Self {
        self.prefix = self.prefix.trim_end_matches('/').to_owned();
        self.lease_bucket = Duration::from_secs(self.lease_bucket.as_secs().max(1));
        self.max_txn_ops = self.max_txn_ops.max(2);
        self.subscriber_capacity = self.subscriber_capacity.clamp(1, MAX_CAPACITY);
        self.retry_interval = self.retry_interval.max(Duration::from_millis(10));
        self.maintenance_interval = self.maintenance_interval.max(Duration::from_millis(10));
        self
    }
}

/// The etcd [`Store`] (see the module docs).
pub struct EtcdStore {
    shared: Arc<Shared>,
    /// The maintenance task and one task per subscription; aborted on drop.
    tasks: Mutex<JoinSet<()>>,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.shared.endpoints)
            .field("prefix", &self.shared.options.prefix)
            .field("health", &self.health())
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to etcd at `endpoints` (`http://host:port`, `https://host:port` or
    /// `host:port`) and checks that it answers. `https://` needs [`EtcdOptions::tls`]; a bare
    /// `host:port` is `https://` when it is set, `http://` otherwise. Must run inside a tokio
    /// runtime (it starts the maintenance task).
    ///
    /// Fails with [`StoreError::InvalidEndpoint`] for a malformed URL, with [`StoreError::Tls`]
    /// when the TLS settings do not fit the endpoints, a file is not what it should be, or the
    /// TLS handshake fails, and with [`StoreError::Unavailable`] naming the URLs when etcd does
    /// not answer in time.
    pub async fn connect(endpoints: &[String], options: EtcdOptions) -> Result<Self, StoreError> {
        let options = options.sanitized();
        let endpoints = endpoints
            .iter()
            .map(|e| endpoint(e))
            .collect::<Result<Vec<_>, StoreError>>()?;
        if endpoints.is_empty() {
            return Err(StoreError::InvalidEndpoint {
                url: String::new(),
                detail: "no etcd endpoint given".to_owned(),
            });
        }
        let (urls, tls) = tls::client_tls(&endpoints, options.tls.as_ref())?;
        let joined = urls.join(",");
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            .with_timeout(options.request_timeout)
            .with_keep_alive(Duration::from_secs(10), options.request_timeout)
            .with_require_leader(true);
        if let Some(tls) = tls {
            connect = connect.with_tls(tls);
        }
        let client = Client::connect(&urls, Some(connect)).await.map_err(|e| {
            StoreError::Unavailable(format!("etcd at {joined}: connecting: {}", chain(&e)))
        })?;
        let mut shared = Shared {
            client,
            health: Health::new(joined.clone()),
            endpoints: joined,
            granted: Mutex::new(Granted::default()),
            cluster_id: None,
            options,
        };
        // One cheap read proves etcd answers (and has a leader) and names the cluster.
        let (start, end) = shared.range();
        let probe = shared
            .client
            .kv_client()
            .get(
                start,
                Some(GetOptions::new().with_range(end).with_count_only()),
            )
            .await
            .map_err(|e| {
                let detail = chain(&e);
                let tls = shared.options.tls.as_ref();
                let client_cert = tls.is_some_and(|t| t.client.is_some());
                match tls::handshake_hint(&detail, client_cert) {
                    Some(hint) if tls.is_some() => {
                        shared.health.unreachable(&detail);
                        StoreError::Tls(EtcdTlsError::Handshake {
                            endpoints: shared.endpoints.clone(),
                            detail,
                            hint,
                        })
                    }
                    _ => shared.fail("reading the prefix", &e),
                }
            })?;
        shared.cluster_id = probe.header().map(|h| h.cluster_id());
        let shared = Arc::new(shared);
        let mut tasks = JoinSet::new();
        tasks.spawn(maintain(Arc::clone(&shared)));
        tracing::info!(endpoints = %shared.endpoints, prefix = %shared.options.prefix,
            "connected to etcd");
        Ok(EtcdStore {
            shared,
            tasks: Mutex::new(tasks),
        })
    }

    /// Whether etcd answered the last request (for `/readyz`).
    pub fn is_connected(&self) -> bool {
        self.shared.health.is_connected()
    }

    /// Connection state, last error and corrupt value count.
    pub fn health(&self) -> EtcdHealth {
        self.shared.health.report()
    }

    /// Values skipped because they could not be decoded.
    pub fn corrupt_values(&self) -> u64 {
        self.shared.health.corrupt_values()
    }

    /// The key prefix in use (without a trailing `/`).
    pub fn prefix(&self) -> &str {
        &self.shared.options.prefix
    }

    /// Revokes kubepbx leases that etcd kept past their end (the maintenance task does this
    /// every `maintenance_interval`); returns how many.
    pub async fn revoke_overdue_leases(&self) -> Result<usize, StoreError> {
        self.shared.revoke_overdue(UnixMillis::now()).await
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = lock(&self.tasks);
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn watch(&self) -> Result<(Snapshot, Subscription), StoreError> {
        let (snapshot, revision) = self.shared.snapshot(UnixMillis::now()).await?;
        let (tx, rx) = broadcast::channel(self.shared.options.subscriber_capacity);
        self.spawn(watch::follow(Arc::clone(&self.shared), tx, revision + 1));
        Ok((snapshot, Subscription::new(rx)))
    }

    async fn apply(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let now = UnixMillis::now();
        let options = &self.shared.options;
        let plan = plan::plan(
            writes,
            PlanContext {
                prefix: &options.prefix,
                now,
                bucket: options.lease_bucket,
                max_txn_ops: options.max_txn_ops,
            },
        )?;
        self.shared.ensure_leases(&plan.leases, now).await?;
        for ops in &plan.txns {
            self.shared.transact(ops, &plan.leases, now).await?;
        }
        Ok(())
    }

    /// etcd has made a write durable when it acknowledges it: nothing to do.
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// What the store and its tasks share.
struct Shared {
    client: Client,
    /// The endpoints, comma-separated, for messages.
    endpoints: String,
    options: EtcdOptions,
    granted: Mutex<Granted>,
    health: Health,
    /// The cluster the store connected to; a watch that finds another one resyncs.
    cluster_id: Option<u64>,
}

impl Shared {
    /// The key range of the store: everything under `{prefix}/`.
    fn range(&self) -> (Vec<u8>, Vec<u8>) {
        let start = format!("{}/", self.options.prefix).into_bytes();
        let end = prefix_end(&start);
        (start, end)
    }

    /// Maps a failed request to a [`StoreError`] naming the endpoints, and records it.
    fn fail(&self, what: &str, e: &etcd_client::Error) -> StoreError {
        let detail = chain(e);
        match classify(e) {
            Failure::Unavailable => {
                let message = format!("etcd at {}: {what}: {detail}", self.endpoints);
                self.health.unreachable(&message);
                StoreError::Unavailable(message)
            }
            _ => {
                self.health.reachable();
                StoreError::Rejected {
                    what: format!("{what} (etcd at {})", self.endpoints),
                    detail,
                }
            }
        }
    }

    /// Grants the leases of `wanted` this replica has not seen yet.
    async fn ensure_leases(
        &self,
        wanted: &[BucketLease],
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let missing = lock(&self.granted).missing(wanted, now);
        for lease in missing {
            let options = LeaseGrantOptions::new().with_id(lease.id());
            let granted = self
                .client
                .lease_client()
                .grant(lease.ttl_secs(now), Some(options))
                .await;
            match granted {
                Ok(_) => {}
                Err(e) if classify(&e) == Failure::LeaseExists => {}
                Err(e) => {
                    let what = format!(
                        "granting the lease {:x} for {}",
                        lease.id(),
                        lease.end().to_rfc3339()
                    );
                    return Err(self.fail(&what, &e));
                }
            }
            lock(&self.granted).insert(lease);
        }
        self.health.reachable();
        Ok(())
    }

    /// Sends one planned transaction; if etcd lost a lease (revoked, or expired while the clocks
    /// disagree), grants the batch's leases again and retries once.
    async fn transact(
        &self,
        ops: &[Op],
        leases: &[BucketLease],
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let mut retried = false;
        loop {
            match self.client.kv_client().txn(plan::to_txn(ops)).await {
                Ok(_) => {
                    self.health.reachable();
                    return Ok(());
                }
                Err(e) if !retried && classify(&e) == Failure::LeaseNotFound => {
                    retried = true;
                    lock(&self.granted).forget(leases);
                    self.ensure_leases(leases, now.max(UnixMillis::now()))
                        .await?;
                }
                Err(e) => {
                    let first = match ops.first() {
                        Some(
                            Op::Put { key, .. } | Op::Refresh { key, .. } | Op::Delete { key },
                        ) => key.as_str(),
                        Some(Op::DeletePrefix { prefix }) => prefix.as_str(),
                        None => "",
                    };
                    let what = format!("writing {} operations (first key {first})", ops.len());
                    return Err(self.fail(&what, &e));
                }
            }
        }
    }

    /// Opens a watch on the store's range from `revision`.
    async fn open_watch(&self, revision: i64) -> Result<WatchStream, etcd_client::Error> {
        let (start, end) = self.range();
        let options = WatchOptions::new()
            .with_range(end)
            .with_start_revision(revision)
            .with_progress_notify();
        self.client
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE)
            .watch(start, Some(options))
            .await
    }

    async fn revoke_overdue(&self, now: UnixMillis) -> Result<usize, StoreError> {
        let listed = self
            .client
            .lease_client()
            .leases()
            .await
            .map_err(|e| self.fail("listing leases", &e))?;
        self.health.reachable();
        let ids: Vec<i64> = listed.leases().iter().map(|l| l.id()).collect();
        let mut revoked = 0;
        for id in lease::overdue(&ids, now, self.options.lease_grace) {
            match self.client.lease_client().revoke(id).await {
                Ok(_) => revoked += 1,
                Err(e) if classify(&e) == Failure::LeaseNotFound => {}
                Err(e) => return Err(self.fail(&format!("revoking the lease {id:x}"), &e)),
            }
        }
        if revoked > 0 {
            tracing::info!(revoked, "revoked binding leases etcd kept past their end");
        }
        Ok(revoked)
    }
}

/// The maintenance task: health probe and overdue lease revocation.
async fn maintain(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.options.maintenance_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        // Failures are recorded in the health state (and logged there once).
        let _ = shared.revoke_overdue(UnixMillis::now()).await;
    }
}

/// The end of the key range of every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing under these locks panics; the data stays usable if something ever did.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/kubepbx/"), b"/kubepbx0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
