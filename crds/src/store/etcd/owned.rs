//! Records a replica keeps on its announcement lease besides the announcement (the calls it
//! routes): they live as long as the replica does and vanish with its lease when it dies.
//!
//! An [`OwnedRecords`] handle queues changes (bounded); the announcement task applies them to
//! [`Owned`] — what etcd should hold and which keys may differ — and writes the differing keys
//! in as few transactions as etcd accepts. A failed write is tried again on the next keep-alive
//! tick; a lost lease makes every held record differ, so all are written again on the new one.

use super::Shared;
use crate::calls::{CallRecord, calls_prefix, is_valid_call_id};
use crate::store::StoreError;
use etcd_client::{PutOptions, Txn, TxnOp};
use std::collections::{BTreeMap, BTreeSet};
use tokio::sync::mpsc;

/// Changes queued between the handles and the announcement task.
pub(super) const OWNED_QUEUE: usize = 4096;

/// One change to the owned records.
#[derive(Debug)]
pub(super) enum OwnedChange {
    /// Write `value` under the full key.
    Put(String, Vec<u8>),
    /// Remove the full key.
    Delete(String),
    /// Make the keys under `under` exactly these.
    Replace {
        under: String,
        records: BTreeMap<String, Vec<u8>>,
    },
}

/// What etcd should hold, and which keys may not hold it yet.
#[derive(Debug, Default)]
pub(super) struct Owned {
    held: BTreeMap<String, Vec<u8>>,
    dirty: BTreeSet<String>,
}

impl Owned {
    pub(super) fn apply(&mut self, change: OwnedChange) {
        match change {
            OwnedChange::Put(key, value) => {
                if self.held.get(&key) != Some(&value) {
                    self.held.insert(key.clone(), value);
                    self.dirty.insert(key);
                }
            }
            OwnedChange::Delete(key) => {
                if self.held.remove(&key).is_some() {
                    self.dirty.insert(key);
                }
            }
            OwnedChange::Replace { under, records } => {
                let gone: Vec<String> = self
                    .held
                    .keys()
                    .filter(|k| k.starts_with(&under) && !records.contains_key(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    self.apply(OwnedChange::Delete(key));
                }
                for (key, value) in records {
                    self.apply(OwnedChange::Put(key, value));
                }
            }
        }
    }

    /// Every held record must be written again (a new lease).
    pub(super) fn all_dirty(&mut self) {
        self.dirty.extend(self.held.keys().cloned());
    }

    pub(super) fn is_clean(&self) -> bool {
        self.dirty.is_empty()
    }

    /// Writes the keys that may differ: held ones on `lease`, the others deleted.
    pub(super) async fn flush(&mut self, shared: &Shared, lease: i64) -> Result<(), StoreError> {
        while !self.dirty.is_empty() {
            let keys: Vec<String> = self
                .dirty
                .iter()
                .take(shared.options.max_txn_ops)
                .cloned()
                .collect();
            let ops: Vec<TxnOp> = keys
                .iter()
                .map(|key| match self.held.get(key) {
                    Some(value) => TxnOp::put(
                        key.as_str(),
                        value.clone(),
                        Some(PutOptions::new().with_lease(lease)),
                    ),
                    None => TxnOp::delete(key.as_str(), None),
                })
                .collect();
            shared
                .client
                .kv_client()
                .txn(Txn::new().and_then(ops))
                .await
                .map_err(|e| shared.fail("writing this replica's calls", &e))?;
            shared.health.reachable();
            for key in keys {
                self.dirty.remove(&key);
            }
        }
        Ok(())
    }
}

/// Writes records on a replica's announcement lease (see the module docs). Cheap to clone.
#[derive(Debug, Clone)]
pub struct OwnedRecords {
    pub(super) tx: mpsc::Sender<OwnedChange>,
    pub(super) prefix: String,
}

impl OwnedRecords {
    /// Shares a call this replica routes (new, or changed); `false` once the announcement is
    /// released.
    pub async fn put_call(&self, record: &CallRecord) -> bool {
        match self.call_entry(record) {
            Some((key, value)) => self.tx.send(OwnedChange::Put(key, value)).await.is_ok(),
            None => true,
        }
    }

    /// Withdraws an ended call.
    pub async fn delete_call(&self, id: &str) -> bool {
        let key = format!("{}{id}", calls_prefix(&self.prefix));
        self.tx.send(OwnedChange::Delete(key)).await.is_ok()
    }

    /// Makes the shared calls of this replica exactly `records` (after changes were lost).
    pub async fn replace_calls(&self, records: &[CallRecord]) -> bool {
        let records = records.iter().filter_map(|r| self.call_entry(r)).collect();
        let under = calls_prefix(&self.prefix);
        self.tx
            .send(OwnedChange::Replace { under, records })
            .await
            .is_ok()
    }

    fn call_entry(&self, record: &CallRecord) -> Option<(String, Vec<u8>)> {
        if !is_valid_call_id(&record.id) {
            tracing::warn!(id = %record.id, "a call id that cannot be a key; not shared");
            return None;
        }
        let value = serde_json::to_vec(record).ok()?;
        Some((
            format!("{}{}", calls_prefix(&self.prefix), record.id),
            value,
        ))
    }
}
