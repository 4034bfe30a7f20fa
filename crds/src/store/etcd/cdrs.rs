//! Finished calls on etcd (see [`crate::cdrs`]): writing records, reading the newest, trimming
//! the oldest.

use super::{EtcdStore, prefix_end};
use crate::cdrs::{CdrEntry, cdr_key, cdrs_prefix};
use crate::store::StoreError;
use etcd_client::{DeleteOptions, GetOptions, SortOrder, SortTarget, Txn, TxnOp};

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

    /// The newest `limit` finished-call records (JSON), newest first.
    pub async fn recent_cdrs(&self, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        let prefix = cdrs_prefix(&self.shared.options.prefix);
        let options = GetOptions::new()
            .with_range(prefix_end(prefix.as_bytes()))
            .with_sort(SortTarget::Key, SortOrder::Descend)
            .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        let response = self
            .shared
            .client
            .kv_client()
            .get(prefix.as_str(), Some(options))
            .await
            .map_err(|e| self.shared.fail("reading finished calls", &e))?;
        self.shared.health.reachable();
        Ok(response
            .kvs()
            .iter()
            .map(|kv| kv.value().to_vec())
            .collect())
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
