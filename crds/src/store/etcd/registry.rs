//! The replica registry and the cluster key on etcd (see [`crate::replicas`]).
//!
//! - [`EtcdStore::announce`] writes this replica's [`ReplicaRecord`] on a lease of its own (a few
//!   seconds) and returns an [`Announcement`] whose task keeps the lease alive, rewrites the
//!   record when it changes, and writes it again on a new lease when etcd lost the old one (etcd
//!   was unreachable longer than the TTL). [`Announcement::release`] revokes the lease: the
//!   replica leaves the registry at once instead of at the end of its TTL.
//! - [`Announcement::owned`] writes records that live as long as the replica on the same lease
//!   (its calls, see [`super::owned`]).
//! - [`EtcdStore::replicas`] follows every announcement of one kind ([`super::follow`]).
//! - [`EtcdStore::cluster_key`] returns the 32 random bytes under `cluster/key`, created by the
//!   first replica that asks (one transaction: create if absent, then read).

use super::failure::{Failure, chain, classify};
use super::follow::FollowedMap;
use super::lease::BucketLease;
use super::owned::{OWNED_QUEUE, Owned, OwnedChange, OwnedRecords};
use super::{EtcdStore, Shared};
use crate::replicas::{ReplicaKind, ReplicaRecord, kind_prefix};
use crate::store::StoreError;
use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// The live replicas of one kind, by id.
pub type ReplicaMap = FollowedMap<ReplicaRecord>;

/// Shortest announcement lease granted.
const MIN_TTL: Duration = Duration::from_secs(2);
/// How long [`Announcement::release`] waits for etcd.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

impl EtcdStore {
    /// The cluster's shared secret (`{prefix}/cluster/key`), created on first use: keys flow
    /// tokens and digest nonces so that every replica accepts what another one issued.
    pub async fn cluster_key(&self) -> Result<[u8; 32], StoreError> {
        let shared = &self.shared;
        let key = format!("{}/cluster/key", shared.options.prefix);
        let fresh: [u8; 32] = rand_key();
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.as_str(), hex::encode(fresh), None)])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let response = shared
            .client
            .kv_client()
            .txn(txn)
            .await
            .map_err(|e| shared.fail(&format!("creating or reading {key}"), &e))?;
        shared.health.reachable();
        if response.succeeded() {
            return Ok(fresh);
        }
        let stored = response
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                etcd_client::TxnOpResponse::Get(get) => {
                    get.kvs().first().map(|kv| kv.value().to_vec())
                }
                _ => None,
            })
            .unwrap_or_default();
        let corrupt = |detail: &str| StoreError::Corrupt {
            path: key.clone(),
            detail: format!(
                "{detail}; delete the key (etcdctl del {key}) and restart the replicas"
            ),
        };
        let text = std::str::from_utf8(&stored).map_err(|_| corrupt("not UTF-8"))?;
        let bytes = hex::decode(text.trim()).map_err(|_| corrupt("not hexadecimal"))?;
        bytes
            .try_into()
            .map_err(|_| corrupt("not 32 bytes (64 hex digits)"))
    }

    /// Announces `record` under `replicas/{kind}/{id}` on a lease of `ttl` (at least 2 s), kept
    /// alive until the returned [`Announcement`] is released or dropped. Fails when etcd cannot
    /// be reached now; later outages are ridden out by the announcement's task.
    pub async fn announce(
        &self,
        record: ReplicaRecord,
        ttl: Duration,
    ) -> Result<Announcement, StoreError> {
        let ttl = ttl.max(MIN_TTL);
        let key = record.key(&self.shared.options.prefix);
        let lease = self.shared.grant_own_lease(ttl).await?;
        self.shared.put_record(&key, &record, lease).await?;
        let (updates, rx) = watch::channel(record);
        let (stop, stop_rx) = oneshot::channel();
        let (owned, owned_rx) = mpsc::channel(OWNED_QUEUE);
        let task = tokio::spawn(keep_announced(
            Lease {
                shared: Arc::clone(&self.shared),
                key,
                ttl,
                id: lease,
            },
            rx,
            owned_rx,
            stop_rx,
        ));
        Ok(Announcement {
            updates,
            owned: OwnedRecords {
                tx: owned,
                prefix: self.shared.options.prefix.clone(),
            },
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Follows every announcement of `kind`. Fails when etcd cannot be read now; afterwards the
    /// map is kept current by a task of the store (it stops when the store is dropped).
    pub async fn replicas(
        &self,
        kind: ReplicaKind,
    ) -> Result<watch::Receiver<ReplicaMap>, StoreError> {
        self.follow(kind_prefix(&self.shared.options.prefix, kind))
            .await
    }
}

/// This replica's entry in the registry (see [`EtcdStore::announce`]).
#[derive(Debug)]
pub struct Announcement {
    updates: watch::Sender<ReplicaRecord>,
    owned: OwnedRecords,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Announcement {
    /// Changes the record (load, draining); written to etcd at once when it differs.
    pub fn update(&self, change: impl FnOnce(&mut ReplicaRecord)) {
        self.updates.send_if_modified(|record| {
            let before = record.clone();
            change(record);
            *record != before
        });
    }

    /// Writes records that live as long as this replica (its calls) on the announcement's
    /// lease.
    pub fn owned(&self) -> OwnedRecords {
        self.owned.clone()
    }

    /// The record as last set.
    pub fn record(&self) -> ReplicaRecord {
        self.updates.borrow().clone()
    }

    /// Leaves the registry now (revokes the lease, waiting at most 2 s for etcd).
    pub async fn release(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(RELEASE_TIMEOUT * 2, task).await;
        }
    }
}

impl Drop for Announcement {
    fn drop(&mut self) {
        // Dropped without release (a crash path): etcd expires the lease.
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Shared {
    /// A lease of `ttl` whose id etcd chooses — never one that looks like a bucket lease, which
    /// the maintenance pass would revoke.
    pub(super) async fn grant_own_lease(&self, ttl: Duration) -> Result<i64, StoreError> {
        let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        loop {
            let granted = self
                .client
                .lease_client()
                .grant(secs, None)
                .await
                .map_err(|e| self.fail("granting an announcement lease", &e))?;
            let id = granted.id();
            if BucketLease::decode(id).is_none() {
                self.health.reachable();
                return Ok(id);
            }
            let _ = self.client.lease_client().revoke(id).await;
        }
    }

    async fn put_record(
        &self,
        key: &str,
        record: &ReplicaRecord,
        lease: i64,
    ) -> Result<(), StoreError> {
        let value = serde_json::to_vec(record).map_err(|e| StoreError::Rejected {
            what: format!("encoding {key}"),
            detail: e.to_string(),
        })?;
        self.client
            .kv_client()
            .put(key, value, Some(PutOptions::new().with_lease(lease)))
            .await
            .map_err(|e| self.fail(&format!("writing {key}"), &e))?;
        self.health.reachable();
        Ok(())
    }

    /// Extends `lease`; `Ok(false)` when etcd no longer has it.
    async fn keep_alive(&self, lease: i64) -> Result<bool, StoreError> {
        match self.client.lease_client().keep_alive(lease).await {
            Ok(_) => {
                self.health.reachable();
                Ok(true)
            }
            Err(etcd_client::Error::LeaseKeepAliveError(_)) => Ok(false),
            Err(e) if classify(&e) == Failure::LeaseNotFound => Ok(false),
            Err(e) => Err(self.fail("keeping the announcement lease alive", &e)),
        }
    }
}

fn rand_key() -> [u8; 32] {
    use rand::RngExt as _;
    rand::rng().random()
}

/// The announcement's key and lease.
struct Lease {
    shared: Arc<Shared>,
    key: String,
    ttl: Duration,
    id: i64,
}

/// The announcement task: keep-alive every third of the TTL, rewrite on change, re-grant and
/// rewrite (with every owned record) when the lease was lost; revoke on release.
async fn keep_announced(
    lease: Lease,
    mut updates: watch::Receiver<ReplicaRecord>,
    mut changes: mpsc::Receiver<OwnedChange>,
    mut stop: oneshot::Receiver<()>,
) {
    let Lease {
        shared,
        key,
        ttl,
        mut id,
    } = lease;
    let mut tick = tokio::time::interval((ttl / 3).max(Duration::from_millis(500)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    // The record differs from what etcd holds (changed, or etcd lost it with the lease).
    let mut dirty = false;
    let mut owned = Owned::default();
    loop {
        tokio::select! {
            _ = &mut stop => {
                let mut leases = shared.client.lease_client();
                match tokio::time::timeout(RELEASE_TIMEOUT, leases.revoke(id)).await {
                    Ok(Ok(_)) => tracing::info!(%key, "left the replica registry"),
                    Ok(Err(e)) => tracing::warn!(%key, error = %chain(&e),
                        "could not leave the replica registry; the entry expires with its lease"),
                    Err(_) => tracing::warn!(%key,
                        "etcd did not answer; the registry entry expires with its lease"),
                }
                return;
            }
            changed = updates.changed() => {
                if changed.is_err() {
                    return;
                }
                dirty = true;
            }
            Some(change) = changes.recv() => {
                owned.apply(change);
                while let Ok(change) = changes.try_recv() {
                    owned.apply(change);
                }
            }
            _ = tick.tick() => match shared.keep_alive(id).await {
                Ok(true) => {}
                Ok(false) => match shared.grant_own_lease(ttl).await {
                    Ok(fresh) => {
                        tracing::info!(%key, "announcement lease was lost; announcing again");
                        id = fresh;
                        dirty = true;
                        owned.all_dirty();
                    }
                    Err(_) => continue,
                },
                // Recorded in the store's health (logged once per outage); the next tick retries.
                Err(_) => continue,
            },
        }
        if dirty {
            let record = updates.borrow_and_update().clone();
            dirty = shared.put_record(&key, &record, id).await.is_err();
        }
        if !owned.is_clean() {
            // A failure is recorded in the store's health; the next tick or change retries.
            let _ = owned.flush(&shared, id).await;
        }
    }
}
