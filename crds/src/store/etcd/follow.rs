//! Following a prefix: every JSON value under it, decoded into a map by the rest of its key and
//! kept current by a watch (the replica registry, calls in progress, hangup requests).
//!
//! A read, then a watch from the revision read; a broken watch is re-opened with a fresh read
//! (the watch may have missed deletions), so a restarted etcd costs a moment, never a stale map.
//! Values that do not decode, or name another record than their key, are skipped and counted as
//! corrupt.

use super::{EtcdStore, Shared, prefix_end};
use crate::calls::{CallRecord, HangupRequest};
use crate::replicas::ReplicaRecord;
use crate::store::StoreError;
use etcd_client::{EventType, GetOptions, WatchOptions};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Longest wait before a broken watch is re-opened.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// The records under a followed prefix, by the rest of their key.
pub type FollowedMap<T> = Arc<BTreeMap<String, T>>;

/// A record that can be followed.
pub(super) trait Followed: DeserializeOwned + Clone + Send + Sync + 'static {
    /// The id the value names, when it must equal the rest of its key.
    fn named_id(&self) -> Option<&str>;
}

impl Followed for ReplicaRecord {
    fn named_id(&self) -> Option<&str> {
        Some(&self.id)
    }
}

impl Followed for CallRecord {
    fn named_id(&self) -> Option<&str> {
        Some(&self.id)
    }
}

impl Followed for HangupRequest {
    fn named_id(&self) -> Option<&str> {
        None
    }
}

impl EtcdStore {
    /// Follows every record under `prefix` (ending with `/`). Fails when etcd cannot be read
    /// now; afterwards the map is kept current by a task of the store (it stops when the store
    /// is dropped).
    pub(super) async fn follow<T: Followed>(
        &self,
        prefix: String,
    ) -> Result<watch::Receiver<FollowedMap<T>>, StoreError> {
        let (map, revision) = self.shared.read_map::<T>(&prefix).await?;
        let (tx, rx) = watch::channel(Arc::new(map));
        self.spawn(follow_map(Arc::clone(&self.shared), prefix, tx, revision));
        Ok(rx)
    }
}

impl Shared {
    /// Every record under `prefix` and the revision read at.
    async fn read_map<T: Followed>(
        &self,
        prefix: &str,
    ) -> Result<(BTreeMap<String, T>, i64), StoreError> {
        let end = prefix_end(prefix.as_bytes());
        let response = self
            .client
            .kv_client()
            .get(prefix, Some(GetOptions::new().with_range(end)))
            .await
            .map_err(|e| self.fail(&format!("reading {prefix}"), &e))?;
        self.health.reachable();
        let revision = response.header().map_or(0, |h| h.revision());
        let mut map = BTreeMap::new();
        for kv in response.kvs() {
            if let Some((id, record)) = self.decode_followed::<T>(prefix, kv.key(), kv.value()) {
                map.insert(id, record);
            }
        }
        Ok((map, revision))
    }

    /// The record in `value` with its id, or `None` (counted as corrupt) when it does not decode
    /// or names another record than its key.
    fn decode_followed<T: Followed>(
        &self,
        prefix: &str,
        key: &[u8],
        value: &[u8],
    ) -> Option<(String, T)> {
        let key = String::from_utf8_lossy(key);
        let id = key.strip_prefix(prefix).unwrap_or_default();
        match serde_json::from_slice::<T>(value) {
            Ok(record) => match record.named_id() {
                Some(named) if named != id => {
                    self.health
                        .corrupt(&key, &format!("the value names {named:?}, not {id:?}"));
                    None
                }
                _ => Some((id.to_owned(), record)),
            },
            Err(e) => {
                self.health.corrupt(&key, &e.to_string());
                None
            }
        }
    }
}

/// Keeps `tx` equal to the records under `prefix`, from `revision` on.
async fn follow_map<T: Followed>(
    shared: Arc<Shared>,
    prefix: String,
    tx: watch::Sender<FollowedMap<T>>,
    mut revision: i64,
) {
    let end = prefix_end(prefix.as_bytes());
    let mut retry = shared.options.retry_interval;
    loop {
        let options = WatchOptions::new()
            .with_range(end.clone())
            .with_start_revision(revision + 1);
        let opened = shared
            .client
            .watch_client()
            .watch(prefix.as_str(), Some(options))
            .await;
        if let Ok(mut stream) = opened {
            while let Ok(Some(response)) = stream.message().await {
                if response.canceled() {
                    break;
                }
                retry = shared.options.retry_interval;
                if let Some(header) = response.header() {
                    revision = revision.max(header.revision());
                }
                tx.send_modify(|map| {
                    let map = Arc::make_mut(map);
                    for event in response.events() {
                        let Some(kv) = event.kv() else { continue };
                        let id = String::from_utf8_lossy(kv.key())
                            .strip_prefix(prefix.as_str())
                            .unwrap_or_default()
                            .to_owned();
                        let decoded = match event.event_type() {
                            EventType::Delete => None,
                            EventType::Put => {
                                shared.decode_followed::<T>(&prefix, kv.key(), kv.value())
                            }
                        };
                        match decoded {
                            Some((id, record)) => map.insert(id, record),
                            None => map.remove(&id),
                        };
                    }
                });
            }
        }
        if tx.is_closed() {
            return;
        }
        loop {
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(MAX_RETRY);
            if let Ok((map, read_at)) = shared.read_map::<T>(&prefix).await {
                revision = read_at;
                tx.send_replace(Arc::new(map));
                break;
            }
            if tx.is_closed() {
                return;
            }
        }
    }
}
