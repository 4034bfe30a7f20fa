//! One subscription's task: follows an etcd watch and turns its events into [`Event`]s.
//!
//! ```text
//!  etcd watch (from revision N) ──► decode ──► broadcast (bounded) ──► Subscription::next
//!        ▲ reconnect at the next unseen revision after a break
//! ```
//!
//! The task remembers the next revision it has not seen (events advance it, and so do the
//! progress notifications etcd sends on an idle watch). When the stream breaks it waits
//! (`retry_interval`, doubling up to [`MAX_BACKOFF`]) and resumes there. It ends with
//! [`Event::Resync`] when resuming cannot be exact — the revision was compacted, or the etcd it
//! reaches has a shorter history or another cluster id — and ends quietly when the subscriber is
//! gone.

use super::failure::{Failure, chain, classify};
use super::{Shared, decode};
use crate::store::Event;
use etcd_client::{EventType, WatchResponse};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// Longest wait between attempts at re-opening a watch.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What to do after a watch response.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Continue,
    /// The stream is unusable (canceled by the server): open another one.
    Reconnect(String),
    /// The subscriber must reload.
    Resync(String),
    /// Nobody listens any more.
    Stop,
}

/// Follows the store's range from `revision`, sending to `tx` until the subscriber is gone.
pub(super) async fn follow(shared: Arc<Shared>, tx: broadcast::Sender<Event>, mut revision: i64) {
    let mut backoff = shared.options.retry_interval;
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                () = tx.closed() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF.max(shared.options.retry_interval));
        }
        first = false;
        let opened = tokio::select! {
            () = tx.closed() => return,
            opened = shared.open_watch(revision) => opened,
        };
        let mut stream = match opened {
            Ok(stream) => stream,
            Err(e) => {
                let _ = shared.fail("opening a watch", &e);
                continue;
            }
        };
        loop {
            let message = tokio::select! {
                () = tx.closed() => return,
                message = stream.message() => message,
            };
            let next = match message {
                Ok(Some(response)) => handle(&shared, &tx, &mut revision, &response),
                Ok(None) => Next::Reconnect("etcd closed the watch stream".to_owned()),
                Err(e) => {
                    if classify(&e) == Failure::Unavailable {
                        let _ = shared.fail("watching", &e);
                    }
                    Next::Reconnect(chain(&e))
                }
            };
            match next {
                Next::Continue => backoff = shared.options.retry_interval,
                Next::Reconnect(reason) => {
                    tracing::debug!(%reason, revision, "etcd watch lost; resuming");
                    break;
                }
                Next::Resync(reason) => {
                    tracing::warn!(%reason, revision, "etcd watch cannot resume; subscriber resyncs");
                    let _ = tx.send(Event::Resync);
                    return;
                }
                Next::Stop => return,
            }
        }
    }
}

fn handle(
    shared: &Shared,
    tx: &broadcast::Sender<Event>,
    revision: &mut i64,
    response: &WatchResponse,
) -> Next {
    if response.canceled() {
        return if response.compact_revision() > 0 {
            Next::Resync(format!(
                "revision {revision} was compacted (etcd keeps revisions from {})",
                response.compact_revision()
            ))
        } else {
            Next::Reconnect(format!(
                "etcd canceled the watch: {}",
                response.cancel_reason()
            ))
        };
    }
    let header = response.header();
    if response.created() {
        shared.health.reachable();
        if let Some(header) = header {
            if shared
                .cluster_id
                .is_some_and(|id| id != header.cluster_id())
            {
                return Next::Resync(format!(
                    "etcd cluster {:x} replaced the one the store connected to",
                    header.cluster_id()
                ));
            }
            if header.revision() < *revision - 1 {
                return Next::Resync(format!(
                    "etcd is at revision {}, before revision {} already seen (restored?)",
                    header.revision(),
                    *revision - 1
                ));
            }
        }
        return Next::Continue;
    }
    if response.events().is_empty() {
        // A progress notification: every change up to the header's revision was sent.
        if let Some(header) = header {
            *revision = (*revision).max(header.revision() + 1);
        }
        return Next::Continue;
    }
    for event in response.events() {
        let Some(kv) = event.kv() else {
            continue;
        };
        *revision = (*revision).max(kv.mod_revision() + 1);
        let key = match decode::parse_key(&shared.options.prefix, kv.key()) {
            Ok(Some(key)) => key,
            Ok(None) => continue,
            Err(detail) => {
                shared
                    .health
                    .corrupt(&String::from_utf8_lossy(kv.key()), &detail);
                continue;
            }
        };
        let converted = match event.event_type() {
            EventType::Put => decode::put_event(key, kv.value(), kv.lease())
                .map_err(|detail| {
                    shared
                        .health
                        .corrupt(&String::from_utf8_lossy(kv.key()), &detail)
                })
                .ok(),
            EventType::Delete => decode::delete_event(key),
        };
        if let Some(converted) = converted
            && tx.send(converted).is_err()
        {
            return Next::Stop;
        }
    }
    Next::Continue
}
