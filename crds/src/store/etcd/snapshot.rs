//! Reading a snapshot: every key under the prefix at one revision, in pages.
//!
//! The first page is read at the newest revision `R`; the following pages at `R` too, so the
//! result is one consistent moment even while replicas write. A revision compacted during the
//! read (only possible for huge stores under heavy writes) makes it start over.
//! Corrupt values are skipped and counted; bindings whose expiry is past are left out.

use super::decode::{self, Record};
use super::failure::{Failure, classify};
use super::{MAX_MESSAGE, Shared};
use crate::store::{Snapshot, StoreError};
use crate::time::UnixMillis;
use etcd_client::GetOptions;

/// Keys read per request (each page at the snapshot's revision).
const SNAPSHOT_PAGE: i64 = 1000;
/// Attempts at reading a snapshot whose revision gets compacted while it is read.
const SNAPSHOT_ATTEMPTS: usize = 3;

impl Shared {
    /// Everything under the prefix at one revision; returns the snapshot and the revision.
    pub(super) async fn snapshot(&self, now: UnixMillis) -> Result<(Snapshot, i64), StoreError> {
        let mut attempt = 1;
        loop {
            match self.read_all().await {
                Err(e) if attempt < SNAPSHOT_ATTEMPTS && classify(&e) == Failure::Compacted => {
                    attempt += 1;
                }
                Err(e) => return Err(self.fail("reading a snapshot", &e)),
                Ok((records, revision)) => {
                    self.health.reachable();
                    return Ok((assemble(records, now), revision));
                }
            }
        }
    }

    async fn read_all(&self) -> Result<(Vec<Record>, i64), etcd_client::Error> {
        let (mut from, end) = self.range();
        let mut kv = self
            .client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE);
        let mut revision = 0;
        let mut records = Vec::new();
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(SNAPSHOT_PAGE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let mut page = kv.get(from.clone(), Some(options)).await?;
            if revision == 0 {
                revision = page.header().map_or(0, |h| h.revision());
            }
            let more = page.more();
            let kvs = page.take_kvs();
            if let Some(last) = kvs.last() {
                from = last.key().to_vec();
                from.push(0);
            }
            for kv in &kvs {
                if let Some(record) = self.decode(kv.key(), kv.value(), kv.lease()) {
                    records.push(record);
                }
            }
            if !more || kvs.is_empty() {
                return Ok((records, revision));
            }
        }
    }

    /// The record under `key`; `None` for other kinds of keys and for corrupt values (counted).
    fn decode(&self, key: &[u8], value: &[u8], lease: i64) -> Option<Record> {
        let parsed = match decode::parse_key(&self.options.prefix, key) {
            Ok(parsed) => parsed?,
            Err(detail) => {
                self.health.corrupt(&String::from_utf8_lossy(key), &detail);
                return None;
            }
        };
        decode::record(&parsed, value, lease)
            .map_err(|detail| self.health.corrupt(&String::from_utf8_lossy(key), &detail))
            .ok()
    }
}

/// Builds a snapshot from decoded records, in key order like the embedded store, without
/// bindings whose expiry is past.
fn assemble(records: Vec<Record>, now: UnixMillis) -> Snapshot {
    let mut snapshot = Snapshot::default();
    for record in records {
        match record {
            Record::Extension(r) => snapshot.extensions.push(r),
            Record::Binding(b) if b.expires_at > now => snapshot.bindings.push(b),
            Record::Binding(_) => {}
            Record::Status(u, s) => snapshot.statuses.push((u, s)),
        }
    }
    snapshot.extensions.sort_by_key(|r| r.key());
    snapshot
        .bindings
        .sort_by(|a, b| (&a.domain, &a.user, &a.id).cmp(&(&b.domain, &b.user, &b.id)));
    snapshot.statuses.sort_by(|a, b| a.0.cmp(&b.0));
    snapshot
}
