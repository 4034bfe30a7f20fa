//! Finished calls on etcd (see [`crate::cdrs`]): writing records, following the newest,
//! trimming the oldest.

use super::follow::{Followed, FollowedMap};
use super::window::Keep;
use super::{EtcdStore, prefix_end};
use crate::cdrs::{CdrEntry, CdrRecord, cdr_key, cdr_key_id, cdrs_prefix};
use crate::store::StoreError;
use etcd_client::{DeleteOptions, GetOptions, Txn, TxnOp};
use tokio::sync::watch;

/// A record names its call, whose id ends its key.
impl<T: CdrRecord> Followed for T {
    fn named_id(&self) -> Option<&str> {
        Some(self.call_id())
    }

    fn key_id(rest: &str) -> &str {
        cdr_key_id(rest)
    }
}

impl EtcdStore {
    /// Writes finished-call records (no lease: they outlive this replica), in transactions of
    /// at most `max_txn_ops` puts. A record whose id cannot be a key is refused, the others
    /// are written.
    pub async fn save_cdrs(&self, entries: &[CdrEntry]) -> Result<(), StoreError> {
        let prefix = &self.shared.options.prefix;
        let mut puts = Vec::with_capacity(entries.len());
        let mut refused = Vec::new();
        for entry in entries {
            match cdr_key(prefix, entry.ended, &entry.id) {
                Some(key) => puts.push(TxnOp::put(key, entry.json.clone(), None)),
                None => refused.push(entry.id.as_str()),
            }
        }
        let mut puts = puts.into_iter().peekable();
        while puts.peek().is_some() {
            let chunk: Vec<TxnOp> = puts
                .by_ref()
                .take(self.shared.options.max_txn_ops)
                .collect();
            self.shared
                .client
                .kv_client()
                .txn(Txn::new().and_then(chunk))
                .await
                .map_err(|e| self.shared.fail("writing finished calls", &e))?;
            self.shared.health.reachable();
        }
        if refused.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Rejected {
                what: format!("finished calls {refused:?}"),
                detail: "not call ids (1-128 visible characters, no '/')".to_owned(),
            })
        }
    }

    /// Follows the newest `keep` finished-call records (at least one), decoded, by the rest of
    /// their key (`{ended-at}/{id}`): the map's last entries are the newest. One read fills
    /// it, a watch keeps it current (new records enter, the oldest leave past `keep`, deleted
    /// ones go; a broken watch reads again); it is never larger than `keep`. Fails when etcd
    /// cannot be read now; afterwards a task of the store keeps it (until the store is
    /// dropped), and it stays as it was while etcd cannot be reached.
    pub async fn follow_cdrs<T: CdrRecord>(
        &self,
        keep: usize,
    ) -> Result<watch::Receiver<FollowedMap<T>>, StoreError> {
        let prefix = cdrs_prefix(&self.shared.options.prefix);
        self.follow_keeping(prefix, Keep::Newest(keep)).await
    }

    /// Deletes the oldest finished-call records beyond the newest `keep`; returns how many went.
    pub async fn trim_cdrs(&self, keep: usize) -> Result<u64, StoreError> {
        let prefix = cdrs_prefix(&self.shared.options.prefix);
        let end = prefix_end(prefix.as_bytes());
        let mut kv = self.shared.client.kv_client();
        let count = kv
            .get(
                prefix.as_str(),
                Some(GetOptions::new().with_range(end.clone()).with_count_only()),
            )
            .await
            .map_err(|e| self.shared.fail("counting finished calls", &e))?
            .count();
        let excess = usize::try_from(count).unwrap_or(0).saturating_sub(keep);
        if excess == 0 {
            self.shared.health.reachable();
            return Ok(0);
        }
        // The key of the newest record to go (keys sort by end time, oldest first).
        let oldest = kv
            .get(
                prefix.as_str(),
                Some(
                    GetOptions::new()
                        .with_range(end)
                        .with_keys_only()
                        .with_limit(i64::try_from(excess).unwrap_or(i64::MAX)),
                ),
            )
            .await
            .map_err(|e| self.shared.fail("reading the oldest finished calls", &e))?;
        let Some(last) = oldest.kvs().last() else {
            return Ok(0);
        };
        let mut through = last.key().to_vec();
        through.push(0);
        let deleted = kv
            .delete(
                prefix.as_str(),
                Some(DeleteOptions::new().with_range(through)),
            )
            .await
            .map_err(|e| self.shared.fail("deleting the oldest finished calls", &e))?
            .deleted();
        self.shared.health.reachable();
        Ok(u64::try_from(deleted).unwrap_or(0))
    }
}
