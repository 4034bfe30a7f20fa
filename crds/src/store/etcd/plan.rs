//! Write planning: a batch of [`Write`]s becomes as few etcd transactions as etcd accepts.
//!
//! Each write maps to one or a few operations ([`Op`]); operations are packed in order into
//! transactions, one round trip each. A new transaction starts when the current one would
//! exceed the operation limit (`--max-txn-ops`, 128 by default: one slot is kept free because a
//! nested transaction's own operations count against what the outer one leaves), the byte
//! budget (etcd refuses requests over 1.5 MiB by default), or when an operation touches a key
//! the transaction already puts or deletes (etcd refuses those as "duplicate key"). Transactions
//! run one after the other, so the writes take effect, and are seen by watchers, in order.
//!
//! Pure: no I/O, the clock is an input. [`to_txn`] turns a planned transaction into the
//! `etcd-client` request.

use super::lease::BucketLease;
use crate::keys::{self, Key};
use crate::store::{StoreError, Write};
use crate::time::UnixMillis;
use etcd_client::{Compare, CompareOp, DeleteOptions, PutOptions, Txn, TxnOp};
use std::collections::HashSet;
use std::time::Duration;

/// Bytes of keys and values per transaction; etcd's default request limit is 1.5 MiB.
const MAX_TXN_BYTES: usize = 1 << 20;
/// Per-operation overhead counted against the byte budget.
const OP_OVERHEAD: usize = 16;

/// One etcd operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Op {
    /// Put a value (on a lease, or none when `lease` is 0).
    Put {
        key: String,
        value: Vec<u8>,
        lease: i64,
    },
    /// Move an existing key to another lease, keeping its value; nothing if the key is gone.
    /// Sent as a nested transaction `if version(key) > 0 then put(key, ignore_value, lease)`.
    Refresh { key: String, lease: i64 },
    /// Delete one key.
    Delete { key: String },
    /// Delete every key under a prefix.
    DeletePrefix { prefix: String },
}

impl Op {
    fn bytes(&self) -> usize {
        OP_OVERHEAD
            + match self {
                Op::Put { key, value, .. } => key.len() + value.len(),
                Op::Refresh { key, .. } | Op::Delete { key } => key.len(),
                Op::DeletePrefix { prefix } => prefix.len(),
            }
    }
}

/// A batch of writes as etcd transactions, and the leases they use.
#[derive(Debug, Default)]
pub(super) struct Plan {
    /// Transactions, to be sent in order.
    pub(super) txns: Vec<Vec<Op>>,
    /// Every distinct lease the operations attach keys to.
    pub(super) leases: Vec<BucketLease>,
}

/// What a plan depends on besides the writes.
#[derive(Debug, Clone, Copy)]
pub(super) struct PlanContext<'a> {
    /// Key prefix, without the trailing `/`.
    pub(super) prefix: &'a str,
    /// The wall clock when the writes are sent.
    pub(super) now: UnixMillis,
    /// Lease bucket length.
    pub(super) bucket: Duration,
    /// The server's `--max-txn-ops`.
    pub(super) max_txn_ops: usize,
}

/// Plans `writes`. Fails only when a record cannot be encoded.
pub(super) fn plan(writes: Vec<Write>, cx: PlanContext<'_>) -> Result<Plan, StoreError> {
    let mut plan = Plan::default();
    let mut current = Pending::new(cx.max_txn_ops.saturating_sub(1).max(1));
    let lease = |expires_at, refresh, plan: &mut Plan| {
        let l = BucketLease::for_expiry(expires_at, cx.now, cx.bucket, refresh);
        if !plan.leases.contains(&l) {
            plan.leases.push(l);
        }
        l.id()
    };
    for write in writes {
        let ops = match write {
            Write::PutExtension(record) => vec![Op::Put {
                key: Key::Extension(record.key()).to_path(cx.prefix),
                value: encode(&record)?,
                lease: 0,
            }],
            Write::DeleteExtension(user) => vec![
                // In this order, so watchers see the extension go before its bindings.
                Op::Delete {
                    key: Key::Extension(user.clone()).to_path(cx.prefix),
                },
                Op::DeletePrefix {
                    prefix: keys::bindings_of(cx.prefix, &user),
                },
                Op::Delete {
                    key: Key::Status(user).to_path(cx.prefix),
                },
            ],
            Write::PutBinding(binding) => vec![Op::Put {
                key: Key::Binding(binding.key()).to_path(cx.prefix),
                value: encode(&*binding)?,
                lease: lease(binding.expires_at, false, &mut plan),
            }],
            Write::RefreshBinding { key, expires_at } => vec![Op::Refresh {
                key: Key::Binding(key).to_path(cx.prefix),
                lease: lease(expires_at, true, &mut plan),
            }],
            Write::DeleteBinding(key) => vec![Op::Delete {
                key: Key::Binding(key).to_path(cx.prefix),
            }],
            Write::PutStatus(user, status) => vec![Op::Put {
                key: Key::Status(user).to_path(cx.prefix),
                value: encode(&status)?,
                lease: 0,
            }],
        };
        for op in ops {
            if !current.fits(&op) {
                plan.txns.push(current.take());
            }
            current.push(op);
        }
    }
    if !current.ops.is_empty() {
        plan.txns.push(current.take());
    }
    Ok(plan)
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt {
        path: "write batch".to_owned(),
        detail: format!("a write cannot be encoded: {e}"),
    })
}

/// The transaction being filled, with what it touches.
#[derive(Debug)]
struct Pending {
    ops: Vec<Op>,
    max_ops: usize,
    bytes: usize,
    /// Keys put (or refreshed).
    puts: HashSet<String>,
    /// Keys deleted, and prefixes deleted (with a trailing `/`).
    deletes: Vec<String>,
}

impl Pending {
    fn new(max_ops: usize) -> Self {
        Pending {
            ops: Vec::new(),
            max_ops,
            bytes: 0,
            puts: HashSet::new(),
            deletes: Vec::new(),
        }
    }

    fn deleted(&self, key: &str) -> bool {
        self.deletes
            .iter()
            .any(|d| key == d || (d.ends_with('/') && key.starts_with(d.as_str())))
    }

    /// Whether `op` may join this transaction.
    fn fits(&self, op: &Op) -> bool {
        if self.ops.is_empty() {
            return true;
        }
        if self.ops.len() >= self.max_ops || self.bytes + op.bytes() > MAX_TXN_BYTES {
            return false;
        }
        match op {
            Op::Put { key, .. } | Op::Refresh { key, .. } => {
                !self.puts.contains(key) && !self.deleted(key)
            }
            Op::Delete { key } => !self.puts.contains(key),
            Op::DeletePrefix { prefix } => !self.puts.iter().any(|k| k.starts_with(prefix)),
        }
    }

    fn push(&mut self, op: Op) {
        self.bytes += op.bytes();
        match &op {
            Op::Put { key, .. } | Op::Refresh { key, .. } => {
                self.puts.insert(key.clone());
            }
            Op::Delete { key } => self.deletes.push(key.clone()),
            Op::DeletePrefix { prefix } => self.deletes.push(prefix.clone()),
        }
        self.ops.push(op);
    }

    fn take(&mut self) -> Vec<Op> {
        let ops = std::mem::take(&mut self.ops);
        *self = Pending::new(self.max_ops);
        ops
    }
}

/// The etcd request for one planned transaction.
pub(super) fn to_txn(ops: &[Op]) -> Txn {
    let ops: Vec<TxnOp> = ops
        .iter()
        .map(|op| match op {
            Op::Put { key, value, lease } => {
                let options = (*lease != 0).then(|| PutOptions::new().with_lease(*lease));
                TxnOp::put(key.as_bytes(), value.clone(), options)
            }
            Op::Refresh { key, lease } => TxnOp::txn(
                Txn::new()
                    .when([Compare::version(key.as_bytes(), CompareOp::Greater, 0)])
                    .and_then([TxnOp::put(
                        key.as_bytes(),
                        Vec::new(),
                        Some(PutOptions::new().with_ignore_value().with_lease(*lease)),
                    )]),
            ),
            Op::Delete { key } => TxnOp::delete(key.as_bytes(), None),
            Op::DeletePrefix { prefix } => {
                TxnOp::delete(prefix.as_bytes(), Some(DeleteOptions::new().with_prefix()))
            }
        })
        .collect();
    Txn::new().and_then(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{BindingKey, UserKey};
    use crate::store::contract::{binding, record, status};
    use std::sync::Arc;

    const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

    fn cx(max_txn_ops: usize) -> PlanContext<'static> {
        PlanContext {
            prefix: "/p",
            now: NOW,
            bucket: Duration::from_secs(5),
            max_txn_ops,
        }
    }

    fn later(secs: u64) -> UnixMillis {
        NOW.plus(Duration::from_secs(secs))
    }

    fn key(user: &str, id: &str) -> BindingKey {
        BindingKey {
            user: UserKey::new("d", user),
            id: id.to_owned(),
        }
    }

    #[test]
    fn a_refresh_sends_no_value() {
        let plan = plan(
            vec![Write::RefreshBinding {
                key: key("1001", "a"),
                expires_at: later(3600),
            }],
            cx(128),
        )
        .expect("plan");
        let lease = BucketLease::for_expiry(later(3600), NOW, Duration::from_secs(5), true);
        assert_eq!(plan.leases, vec![lease]);
        assert_eq!(
            plan.txns,
            vec![vec![Op::Refresh {
                key: "/p/reg/d/1001/a".to_owned(),
                lease: lease.id(),
            }]]
        );
    }

    #[test]
    fn bindings_expiring_together_share_a_lease() {
        let writes = (0..50)
            .map(|i| Write::PutBinding(binding("d", &format!("{i}"), "a", later(3600))))
            .chain((0..50).map(|i| Write::RefreshBinding {
                key: key(&format!("{i}"), "b"),
                expires_at: later(3601),
            }))
            .collect();
        let plan = plan(writes, cx(128)).expect("plan");
        assert_eq!(plan.txns.len(), 1, "100 ops fit one transaction");
        assert_eq!(plan.leases.len(), 2, "one put lease, one refresh lease");
    }

    #[test]
    fn transactions_respect_the_op_limit() {
        let writes: Vec<Write> = (0..300)
            .map(|i| Write::PutStatus(UserKey::new("d", format!("{i}")), status(NOW.0)))
            .collect();
        let plan = plan(writes, cx(128)).expect("plan");
        let sizes: Vec<usize> = plan.txns.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![127, 127, 46]);
        let plan = plan_of(vec![Write::PutExtension(record("d", "1"))], 1);
        assert_eq!(plan.txns.len(), 1, "a limit of 1 still makes progress");
    }

    fn plan_of(writes: Vec<Write>, max_txn_ops: usize) -> Plan {
        plan(writes, cx(max_txn_ops)).expect("plan")
    }

    #[test]
    fn a_key_touched_twice_splits_the_transaction_in_order() {
        let b = binding("d", "1001", "a", later(60));
        let plan = plan_of(
            vec![
                Write::PutBinding(Arc::clone(&b)),
                Write::PutBinding(binding("d", "1002", "a", later(60))),
                Write::RefreshBinding {
                    key: b.key(),
                    expires_at: later(120),
                },
                Write::DeleteBinding(b.key()),
                Write::PutBinding(Arc::clone(&b)),
            ],
            128,
        );
        let sizes: Vec<usize> = plan.txns.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![2, 1, 1, 1]);
        assert!(matches!(plan.txns[3][0], Op::Put { .. }));
    }

    #[test]
    fn deleting_an_extension_splits_from_puts_under_it_only() {
        let plan = plan_of(
            vec![
                Write::PutExtension(record("d", "1001")),
                Write::PutBinding(binding("d", "10010", "a", later(60))),
                Write::PutStatus(UserKey::new("d", "10010"), status(NOW.0)),
                Write::DeleteExtension(UserKey::new("d", "1001")),
            ],
            128,
        );
        let sizes: Vec<usize> = plan.txns.iter().map(Vec::len).collect();
        assert_eq!(
            sizes,
            vec![3, 3],
            "1001's own put forces a split, 10010's do not"
        );
        assert_eq!(
            plan.txns[1],
            vec![
                Op::Delete {
                    key: "/p/ext/d/1001".to_owned()
                },
                Op::DeletePrefix {
                    prefix: "/p/reg/d/1001/".to_owned()
                },
                Op::Delete {
                    key: "/p/status/d/1001".to_owned()
                },
            ]
        );
        let plan = plan_of(
            vec![
                Write::DeleteExtension(UserKey::new("d", "1001")),
                Write::PutBinding(binding("d", "1001", "a", later(60))),
            ],
            128,
        );
        assert_eq!(
            plan.txns.len(),
            2,
            "a put under a deleted prefix splits too"
        );
    }

    #[test]
    fn large_values_split_by_bytes() {
        let mut r = record("d", "1");
        r.display_name = Some("x".repeat(300_000));
        let writes = (0..7)
            .map(|i| {
                let mut r = r.clone();
                r.extension = format!("{i}");
                Write::PutExtension(r)
            })
            .collect();
        let plan = plan_of(writes, 128);
        assert_eq!(plan.txns.len(), 3, "three values of 300 kB per MiB");
    }
}
