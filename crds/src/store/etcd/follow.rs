//! Following a prefix: the JSON values under it, decoded into a map by the rest of their key and
//! kept current by a watch (the replica registry, calls in progress, hangup requests, the newest
//! finished calls).
//!
//! A read, then a watch from the revision read; a broken watch is re-opened with a fresh read
//! (the watch may have missed deletions), so a restarted etcd or a compacted revision costs a
//! moment, never a stale map. A follower keeps every record, or only the newest `n` by key
//! ([`Keep`], see `window`): it reads just those, and reads them again when a deletion leaves
//! it one short of records it never read. Values that do not decode, or name another record
//! than their key, are skipped and counted as corrupt.

use super::window::{Keep, Window};
use super::{EtcdStore, MAX_MESSAGE, Shared, prefix_end};
use crate::calls::{CallRecord, HangupRequest};
use crate::replicas::ReplicaRecord;
use crate::store::StoreError;
use etcd_client::{EventType, GetOptions, SortOrder, SortTarget, WatchOptions};
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
    /// The id the value names, when it must equal [`key_id`](Followed::key_id) of its key.
    fn named_id(&self) -> Option<&str>;

    /// The id a key names, given the rest of the key after the prefix.
    fn key_id(rest: &str) -> &str {
        rest
    }
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
        self.follow_keeping(prefix, Keep::All).await
    }

    /// Follows the records under `prefix` that `keep` selects, as [`follow`](Self::follow).
    pub(super) async fn follow_keeping<T: Followed>(
        &self,
        prefix: String,
        keep: Keep,
    ) -> Result<watch::Receiver<FollowedMap<T>>, StoreError> {
        let mut window = Window::new(keep);
        let (map, revision) = self.shared.read_map::<T>(&prefix, &mut window).await?;
        let (tx, rx) = watch::channel(Arc::new(map));
        let follower = Follower {
            shared: Arc::clone(&self.shared),
            prefix,
            window,
            tx,
        };
        self.spawn(follower.run(revision));
        Ok(rx)
    }
}

impl Shared {
    /// The records under `prefix` that `window` keeps, and the revision read at; tells
    /// `window` where the read stopped.
    async fn read_map<T: Followed>(
        &self,
        prefix: &str,
        window: &mut Window,
    ) -> Result<(BTreeMap<String, T>, i64), StoreError> {
        let mut options = GetOptions::new().with_range(prefix_end(prefix.as_bytes()));
        if let Some(limit) = window.limit() {
            options = options
                .with_sort(SortTarget::Key, SortOrder::Descend)
                .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        }
        let response = self
            .client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE)
            .get(prefix, Some(options))
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
        let cut_at = response
            .more()
            .then(|| response.kvs().last().map(|kv| rest_of(prefix, kv.key())))
            .flatten();
        window.read(cut_at);
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
                Some(named) if named != T::key_id(id) => {
                    self.health.corrupt(
                        &key,
                        &format!("the value names {named:?}, not {:?}", T::key_id(id)),
                    );
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

/// The rest of `key` after `prefix`.
fn rest_of(prefix: &str, key: &[u8]) -> String {
    String::from_utf8_lossy(key)
        .strip_prefix(prefix)
        .unwrap_or_default()
        .to_owned()
}

/// The task keeping a followed map current.
struct Follower<T> {
    shared: Arc<Shared>,
    prefix: String,
    window: Window,
    tx: watch::Sender<FollowedMap<T>>,
}

/// Why a watch stopped being followed.
enum Stopped {
    /// The stream broke or etcd canceled it: read again after a pause.
    Lost,
    /// The window lost a record it cannot replace from what it read: read again now.
    Short,
}

impl<T: Followed> Follower<T> {
    /// Keeps the map equal to the records under the prefix, from `revision` on.
    async fn run(mut self, mut revision: i64) {
        let mut retry = self.shared.options.retry_interval;
        loop {
            let stopped = self.watch(&mut revision, &mut retry).await;
            if self.tx.is_closed() {
                return;
            }
            if matches!(stopped, Stopped::Short) && self.reread(&mut revision).await {
                continue;
            }
            loop {
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(MAX_RETRY);
                if self.reread(&mut revision).await {
                    break;
                }
                if self.tx.is_closed() {
                    return;
                }
            }
        }
    }

    /// Reads the map again; `false` when etcd could not be read.
    async fn reread(&mut self, revision: &mut i64) -> bool {
        match self
            .shared
            .read_map::<T>(&self.prefix, &mut self.window)
            .await
        {
            Ok((map, read_at)) => {
                *revision = read_at;
                self.tx.send_replace(Arc::new(map));
                true
            }
            Err(_) => false,
        }
    }

    /// Applies the watch's changes from `revision + 1` until it stops.
    async fn watch(&mut self, revision: &mut i64, retry: &mut Duration) -> Stopped {
        let options = WatchOptions::new()
            .with_range(prefix_end(self.prefix.as_bytes()))
            .with_start_revision(*revision + 1);
        let opened = self
            .shared
            .client
            .watch_client()
            .watch(self.prefix.as_str(), Some(options))
            .await;
        let Ok(mut stream) = opened else {
            return Stopped::Lost;
        };
        while let Ok(Some(response)) = stream.message().await {
            if response.canceled() {
                return Stopped::Lost;
            }
            *retry = self.shared.options.retry_interval;
            if let Some(header) = response.header() {
                *revision = (*revision).max(header.revision());
            }
            let (shared, prefix, window) = (&self.shared, self.prefix.as_str(), &mut self.window);
            let mut short = false;
            self.tx.send_modify(|map| {
                let map = Arc::make_mut(map);
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    let decoded = match event.event_type() {
                        EventType::Delete => None,
                        EventType::Put => shared.decode_followed::<T>(prefix, kv.key(), kv.value()),
                    };
                    match decoded {
                        Some((id, record)) => window.put(map, id, record),
                        None => short |= window.remove(map, &rest_of(prefix, kv.key())),
                    }
                }
            });
            if short {
                return Stopped::Short;
            }
        }
        Stopped::Lost
    }
}
