//! Calls across registrar replicas, through etcd (see `kubepbx_api::calls`):
//!
//! - [`publish`] writes the calls this replica routes under `calls/{id}` on its announcement
//!   lease, naming the media replica that relays each;
//! - [`take_hangups`] hangs up this replica's calls that another replica's API was asked to
//!   hang up (`hangup/{id}`), then removes the request;
//! - [`EtcdCalls`] gives the HTTP API the other replicas' calls and asks their owners to hang
//!   them up, and every replica's finished calls (the newest [`CDR_KEEP`], followed in memory);
//! - [`save_cdrs`] writes the records of this replica's finished calls under `cdrs/` and keeps
//!   that history to its bound.

use kubepbx_api::calls::{CallRecord, HangupRequest};
use kubepbx_api::cdrs::{CdrEntry, SHARED_CDR_KEEP};
use kubepbx_api::store::{EtcdStore, FollowedMap, OwnedRecords, StoreError};
use kubepbx_media::{MediaPool, SessionId};
use kubepbx_registrar::RegistrarHandle;
use kubepbx_registrar::calls::{CDR_KEEP, CallChange, CdrView, ClusterCalls};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// How long `DELETE /api/v1/calls/{id}` waits for another replica to hang its call up.
const HANGUP_WAIT: Duration = Duration::from_secs(5);

/// The other replicas' calls for the API of replica `replica`, and every replica's finished
/// calls.
#[derive(Debug)]
pub struct EtcdCalls {
    pub store: Arc<EtcdStore>,
    pub replica: String,
    pub calls: watch::Receiver<FollowedMap<CallRecord>>,
    /// The newest finished calls ([`EtcdStore::follow_cdrs`] of [`CDR_KEEP`]), oldest first.
    pub cdrs: watch::Receiver<FollowedMap<CdrView>>,
}

#[async_trait::async_trait]
impl ClusterCalls for EtcdCalls {
    fn others(&self) -> Vec<CallRecord> {
        self.calls
            .borrow()
            .values()
            .filter(|c| c.owner != self.replica)
            .cloned()
            .collect()
    }

    async fn hangup(&self, id: &str) -> Result<bool, String> {
        let mut calls = self.calls.clone();
        let owner = match calls.borrow_and_update().get(id) {
            Some(call) if call.owner != self.replica => call.owner.clone(),
            _ => return Ok(false),
        };
        self.store
            .request_hangup(id, &self.replica)
            .await
            .map_err(|e| format!("could not ask replica {owner} to hang call {id} up: {e}"))?;
        match tokio::time::timeout(HANGUP_WAIT, calls.wait_for(|m| !m.contains_key(id))).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(_)) => Err("this replica is stopping".to_owned()),
            Err(_) => Err(format!(
                "replica {owner} routes call {id} and did not hang it up within {}s; if that \
                 replica has died, its calls leave the list within 10 s",
                HANGUP_WAIT.as_secs()
            )),
        }
    }

    fn history(&self, limit: usize) -> Vec<CdrView> {
        self.cdrs
            .borrow()
            .values()
            .rev()
            .take(limit)
            .cloned()
            .collect()
    }
}

/// How often failed writes of finished calls are retried, and how often the shared history
/// is trimmed.
const CDR_RETRY: Duration = Duration::from_secs(5);
const CDR_TRIM_EVERY: Duration = Duration::from_secs(600);

/// Writes the records of this replica's finished calls to etcd until the drive loop stops
/// (and the queue is empty). While etcd cannot be reached they wait, the newest [`CDR_KEEP`]
/// of them, and are written when it is back; every 10 minutes the shared history is trimmed
/// to the newest [`SHARED_CDR_KEEP`].
pub async fn save_cdrs(mut finished: mpsc::Receiver<CdrEntry>, store: Arc<EtcdStore>) {
    let mut waiting: Vec<CdrEntry> = Vec::new();
    let mut trim = tokio::time::interval(CDR_TRIM_EVERY);
    trim.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let retry = !waiting.is_empty();
        tokio::select! {
            got = finished.recv_many(&mut waiting, 256) => if got == 0 && waiting.is_empty() {
                return;
            },
            () = tokio::time::sleep(CDR_RETRY), if retry => {}
            _ = trim.tick() => {
                match store.trim_cdrs(SHARED_CDR_KEEP).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(records = n, keep = SHARED_CDR_KEEP,
                        "trimmed the oldest finished calls"),
                    Err(e) => tracing::debug!(error = %e, "could not trim the finished calls"),
                }
                continue;
            }
        }
        match store.save_cdrs(&waiting).await {
            Ok(()) => waiting.clear(),
            Err(e @ StoreError::Rejected { .. }) => {
                tracing::warn!(error = %e, "finished calls not saved");
                waiting.clear();
            }
            Err(e) => {
                tracing::debug!(error = %e, records = waiting.len(),
                    "finished calls wait until etcd is back");
                if waiting.len() > CDR_KEEP {
                    waiting.drain(..waiting.len() - CDR_KEEP);
                }
                if finished.is_closed() && finished.is_empty() {
                    tracing::warn!(
                        records = waiting.len(),
                        "stopping with finished calls etcd did not take; they are lost"
                    );
                    return;
                }
            }
        }
    }
}

/// Writes the calls this replica routes, as the drive loop reports them, until it stops.
pub async fn publish(
    mut changes: mpsc::Receiver<CallChange>,
    owned: OwnedRecords,
    pool: Arc<MediaPool>,
) {
    let placed = |mut record: CallRecord| {
        record.media = record
            .session
            .as_ref()
            .and_then(|s| pool.replica_of(&SessionId(s.clone())));
        record
    };
    while let Some(change) = changes.recv().await {
        let written = match change {
            CallChange::Upsert(record) => owned.put_call(&placed(record)).await,
            CallChange::Ended(id) => owned.delete_call(&id).await,
            CallChange::All(records) => {
                let records: Vec<CallRecord> = records.into_iter().map(placed).collect();
                owned.replace_calls(&records).await
            }
        };
        if !written {
            return;
        }
    }
}

/// Hangs up this replica's calls that someone asked another replica to hang up, until
/// `shutdown`. Every replica sees every request; the one routing the call takes it.
pub async fn take_hangups(
    store: Arc<EtcdStore>,
    mut requests: watch::Receiver<FollowedMap<HangupRequest>>,
    registrar: RegistrarHandle,
    shutdown: CancellationToken,
) {
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        let pending: Vec<(String, HangupRequest)> = {
            let map = requests.borrow_and_update();
            seen.retain(|id| map.contains_key(id));
            map.iter()
                .filter(|(id, _)| !seen.contains(*id))
                .map(|(id, r)| (id.clone(), r.clone()))
                .collect()
        };
        for (id, request) in pending {
            seen.insert(id.clone());
            if registrar.hangup(&id).await == Some(true) {
                tracing::info!(call = %id, by = %request.by,
                    "hanging up at the request of another replica's API");
                if let Err(e) = store.forget_hangup(&id).await {
                    tracing::warn!(call = %id, error = %e,
                        "could not remove the hangup request; it expires by itself");
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = requests.changed() => if changed.is_err() { return },
        }
    }
}
