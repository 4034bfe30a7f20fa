//! The drive loop: one task owns the sans-IO [`Endpoint`] and connects it to the world.
//!
//! ```text
//!  UDP reader ─┐                      ┌─► UDP socket (send_to)
//!  TCP conns  ─┼─► inbound (bounded) ─┤   Endpoint   ├─► TCP connection queues
//!  store watch ─► events ────────────►│              ├─► writer task ─► Store::apply (batched)
//!  HTTP ─────────► queries ──────────►└──────────────┘─► logs, metrics
//! ```
//!
//! Inbound packets are taken in batches; after each batch (and each timer or store event) the
//! loop drains the endpoint's transmits, store writes and events. Store writes go to a writer
//! task through a bounded queue, so a slow store slows the loop down instead of growing memory.
//! While the store is unreachable (etcd down) the writer keeps taking writes, retries them with
//! backoff until the store is back (bounded: the oldest go beyond `MAX_PENDING_WRITES`), and
//! logs the outage once when it starts and once when it ends; the endpoint serves from memory
//! meanwhile.
//! When the store reports that this loop fell behind ([`Event::Resync`]), the loop reloads a
//! fresh snapshot.

use crate::calls::{self, CallView, CdrLog, CdrView};
use crate::metrics::MetricsSnapshot;
use crate::views::{self, ExtensionView, RegistrationView};
use bytes::Bytes;
use kubepbx_api::Transport;
use kubepbx_api::records::{BindingKey, UserKey};
use kubepbx_api::store::{Event, Snapshot, Store, StoreError, Subscription, Write};
use kubepbx_api::time::UnixMillis;
use kubepbx_media::SessionStats;
use kubepbx_media::udp::Socket;
use kubepbx_sip::endpoint::{
    BindingChange, CallSummary, EndReason, Endpoint, EndpointEvent, MediaCommand, MediaFailure,
    Now, RelaySdp,
};
use kubepbx_sip::flow::{Flow, FlowId, Transmit};
use kubepbx_sip::message::{Message, ParseError};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// Packets taken from the inbound queue per loop turn.
const BATCH: usize = 256;
/// Store write batches queued for the writer task.
const WRITE_QUEUE: usize = 64;
/// First wait before a write is retried while the store is unreachable; doubles up to
/// [`RETRY_MAX`]. Writes are retried until the store is back (or the registrar stops).
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Writes kept while the store is unreachable (about 300 bytes each); beyond, the oldest go.
const MAX_PENDING_WRITES: usize = 200_000;

/// What drivers send to the loop.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A datagram or a stream frame, parsed by the driver that read it.
    Packet {
        flow: Flow,
        parsed: Box<Result<Message, ParseError>>,
    },
    /// A stream connection opened; responses for it go to `tx`.
    Connected { id: FlowId, tx: mpsc::Sender<Bytes> },
    /// A stream connection closed.
    Closed { id: FlowId },
    /// The media relay's result for an operation of the endpoint.
    Media {
        op: u64,
        result: Result<RelaySdp, MediaFailure>,
    },
    /// The relay released a session the endpoint deleted; its final counters, if it had one.
    MediaClosed {
        session: String,
        stats: Option<Box<SessionStats>>,
    },
    /// The relay closed a session on its own: no media for its timeout, or (with `failure`,
    /// the reason in words) a WebRTC leg whose ICE or DTLS failed.
    MediaEnded {
        session: String,
        stats: Box<SessionStats>,
        failure: Option<String>,
    },
}

/// What the HTTP side asks the loop.
#[derive(Debug)]
pub(crate) enum Query {
    Extensions(oneshot::Sender<Vec<ExtensionView>>),
    Extension(UserKey, oneshot::Sender<Option<ExtensionView>>),
    Registrations(
        views::RegistrationFilter,
        oneshot::Sender<Vec<RegistrationView>>,
    ),
    Metrics(oneshot::Sender<MetricsSnapshot>),
    Calls(oneshot::Sender<Vec<CallView>>),
    Cdrs(oneshot::Sender<Vec<CdrView>>),
    /// Hang up the call with this id; answers whether it existed.
    Hangup(String, oneshot::Sender<bool>),
}

pub(crate) struct Core {
    pub endpoint: Endpoint,
    pub store: Arc<dyn Store>,
    pub subscription: Subscription,
    /// A fresh snapshot being fetched after the store asked for a resync.
    pub resync: Option<oneshot::Receiver<(Snapshot, Subscription)>>,
    pub udp: Arc<Socket>,
    pub inbound: mpsc::Receiver<Inbound>,
    pub queries: mpsc::Receiver<Query>,
    pub shutdown: CancellationToken,
    pub connections: HashMap<FlowId, mpsc::Sender<Bytes>>,
    pub undeliverable: u64,
    /// Commands for the media worker (`None`: media is not anchored).
    pub media: Option<mpsc::Sender<MediaCommand>>,
    /// Media commands the worker's queue had no room for, in order. The loop never waits for
    /// that queue: the worker hands its results back through `inbound`, which only this loop
    /// drains, so waiting here could deadlock both under load.
    pub media_backlog: VecDeque<MediaCommand>,
    /// Finished calls.
    pub cdrs: CdrLog,
    /// Finished calls waiting for the relay's final counters, by media session.
    pub pending_cdrs: HashMap<String, CallSummary>,
    /// Final counters of sessions the relay closed on its own, until their call is recorded.
    pub media_final: HashMap<String, SessionStats>,
    /// The socket other replicas send to (in a cluster).
    pub internal: Option<Arc<Socket>>,
    /// The other live registrar replicas (in a cluster).
    pub peers: Option<watch::Receiver<Vec<(String, std::net::SocketAddr)>>>,
    /// Where the calls this replica routes are shared (in a cluster).
    pub call_feed: Option<calls::CallFeed>,
}

impl Core {
    /// Runs until `shutdown`; then hands the last writes to the store and flushes it.
    pub(crate) async fn run(mut self) {
        let (writes_tx, writes_rx) = mpsc::channel(WRITE_QUEUE);
        let writer = tokio::spawn(write_loop(Arc::clone(&self.store), writes_rx));
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let deadline = self.endpoint.poll_timeout();
            tokio::select! {
                // Store events before queries: a query sent after a store write has returned
                // sees that write (the admin API answers with the state it just wrote).
                biased;
                () = self.shutdown.cancelled() => break,
                event = self.subscription.next() => match event {
                    Some(event) => self.store_event(event).await,
                    None => {
                        tracing::error!("the store closed its event stream; stopping");
                        self.shutdown.cancel();
                        break;
                    }
                },
                n = self.inbound.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        break;
                    }
                    let now = now();
                    for item in batch.drain(..) {
                        self.inbound(now, item);
                    }
                }
                Some(query) = self.queries.recv() => self.answer(query),
                () = media_room(&self.media, !self.media_backlog.is_empty()) => {
                    self.send_media_backlog();
                }
                () = peers_changed(&mut self.peers) => {
                    if let Some(peers) = &mut self.peers {
                        let list = peers.borrow_and_update().clone();
                        self.endpoint.set_peers(list);
                    }
                }
                fresh = recv_resync(&mut self.resync) => {
                    self.resync = None;
                    if let Some((snapshot, subscription)) = fresh {
                        self.endpoint.load(snapshot);
                        self.subscription = subscription;
                        tracing::info!("the registrar's view is in line with the store again");
                    }
                }
                () = sleep_until(deadline) => self.endpoint.handle_timeout(now()),
            }
            self.drain(&writes_tx).await;
        }
        drop(writes_tx);
        let _ = writer.await;
        if let Err(e) = self.store.flush().await {
            tracing::error!(error = %e, "flushing the store at shutdown failed");
        }
    }

    fn inbound(&mut self, now: Now, item: Inbound) {
        match item {
            Inbound::Packet { flow, parsed } => {
                self.endpoint.handle_message(now, flow, *parsed);
            }
            Inbound::Connected { id, tx } => {
                self.connections.insert(id, tx);
            }
            Inbound::Closed { id } => {
                self.connections.remove(&id);
            }
            Inbound::Media { op, result } => self.endpoint.handle_media_result(now, op, result),
            Inbound::MediaClosed { session, stats } => {
                let stats = stats
                    .map(|s| *s)
                    .or_else(|| self.media_final.remove(&session));
                if let Some(summary) = self.pending_cdrs.remove(&session) {
                    self.cdrs.push(&summary, stats.as_ref());
                }
            }
            Inbound::MediaEnded {
                session,
                stats,
                failure,
            } => {
                let reason = match &failure {
                    None => {
                        tracing::info!(%session, "no media for the media timeout; ending the call");
                        EndReason::MediaTimeout
                    }
                    Some(why) => {
                        tracing::warn!(%session, reason = %why, "a WebRTC leg failed; ending the call");
                        EndReason::MediaFailed
                    }
                };
                self.media_final.insert(session.clone(), *stats);
                if !self.endpoint.hangup_session(now, &session, reason) {
                    self.media_final.remove(&session);
                }
            }
        }
    }

    /// Tells the cluster's store about a call that started, was answered or ended.
    fn share_call(&mut self, event: &EndpointEvent) {
        let Some(feed) = &mut self.call_feed else {
            return;
        };
        let change = match event {
            EndpointEvent::CallStarted { id, .. } | EndpointEvent::CallAnswered { id, .. } => {
                match self.endpoint.calls().find(|c| &c.name == id) {
                    Some(call) => calls::CallChange::Upsert(feed.record(call)),
                    None => return,
                }
            }
            EndpointEvent::CallEnded(summary) => calls::CallChange::Ended(summary.id.clone()),
            _ => return,
        };
        feed.send(change, || self.endpoint.calls().collect());
    }

    /// A finished call becomes a record: at once without media, else once the relay has
    /// handed over its final counters.
    fn call_ended(&mut self, summary: CallSummary) {
        match (&self.media, &summary.session) {
            (Some(_), Some(session)) => {
                self.pending_cdrs.insert(session.clone(), summary);
            }
            _ => self.cdrs.push(&summary, None),
        }
    }

    async fn store_event(&mut self, event: Event) {
        if let Event::BindingDeleted(key) = &event {
            self.log_expiry(key);
        }
        if !self.endpoint.handle_store_event(event) {
            self.resync().await;
        }
    }

    /// A binding the store removed while it was still in our view: expired (or removed by
    /// another replica). Removals decided here are already gone from the view.
    fn log_expiry(&self, key: &BindingKey) {
        let location = self.endpoint.location();
        if let Some(held) = location
            .bindings(&key.user)
            .iter()
            .find(|c| *c.binding.id == *key.id)
        {
            let b = &held.binding;
            tracing::info!(
                extension = %b.user,
                domain = %b.domain,
                contact = %b.contact,
                source = %b.source,
                "registration expired",
            );
        }
    }

    /// Fetches a fresh snapshot in the background; until it arrives the loop keeps serving
    /// from the view it has (and applying the events still coming), so an unreachable store
    /// never stops SIP.
    async fn resync(&mut self) {
        if self.resync.is_some() {
            return;
        }
        tracing::warn!("the registrar fell behind the store; reloading its view");
        let (tx, rx) = oneshot::channel();
        let store = Arc::clone(&self.store);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                match store.watch().await {
                    Ok(fresh) => {
                        let _ = tx.send(fresh);
                        return;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "reloading from the store failed; retrying");
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
            }
        });
        self.resync = Some(rx);
    }

    fn answer(&mut self, query: Query) {
        let wall = UnixMillis::now();
        let location = self.endpoint.location();
        match query {
            Query::Extensions(reply) => {
                let _ = reply.send(views::extensions(location, wall));
            }
            Query::Extension(key, reply) => {
                let _ = reply.send(views::extension(location, &key, wall));
            }
            Query::Registrations(filter, reply) => {
                let _ = reply.send(views::registrations(location, wall, &filter));
            }
            Query::Metrics(reply) => {
                let _ = reply.send(MetricsSnapshot {
                    stats: self.endpoint.stats().clone(),
                    undeliverable: self.undeliverable,
                    registrations: location.binding_count() as u64,
                    extensions: location.extension_count() as u64,
                    transactions: self.endpoint.transaction_count() as u64,
                    banned: self.endpoint.banned_count(Instant::now()) as u64,
                    connections: self.connections.len() as u64,
                    heap: None,
                    active_calls: self.endpoint.call_count() as u64,
                    relay: None,
                });
            }
            Query::Calls(reply) => {
                let list = self
                    .endpoint
                    .calls()
                    .map(|c| calls::call_view(c, wall))
                    .collect();
                let _ = reply.send(list);
            }
            Query::Cdrs(reply) => {
                let _ = reply.send(self.cdrs.newest_first());
            }
            Query::Hangup(id, reply) => {
                let found = self.endpoint.hangup(now(), &id, EndReason::AdminHangup);
                if found {
                    tracing::info!(call = %id, "hanging up on the administrator's request");
                }
                let _ = reply.send(found);
            }
        }
    }

    /// Sends what the endpoint produced, queues its store writes and logs its events.
    async fn drain(&mut self, writes: &mpsc::Sender<Vec<Write>>) {
        while let Some(t) = self.endpoint.poll_transmit() {
            self.transmit(t);
        }
        let batch = self.endpoint.drain_writes();
        if !batch.is_empty() && writes.send(batch).await.is_err() {
            tracing::error!("the store writer stopped; changes are not being saved");
        }
        while let Some(event) = self.endpoint.poll_event() {
            log_event(&event);
            self.share_call(&event);
            if let EndpointEvent::CallEnded(summary) = event {
                self.call_ended(*summary);
            }
        }
        while let Some(command) = self.endpoint.poll_media() {
            self.media_backlog.push_back(command);
        }
        self.send_media_backlog();
    }

    /// Hands queued media commands to the worker as far as its queue has room, in order.
    fn send_media_backlog(&mut self) {
        let Some(tx) = &self.media else {
            for command in self.media_backlog.drain(..) {
                tracing::error!("media command without a media relay: {command:?}");
            }
            return;
        };
        while let Some(command) = self.media_backlog.pop_front() {
            match tx.try_send(command) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(command)) => {
                    self.media_backlog.push_front(command);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    tracing::error!("the media worker stopped; media commands are dropped");
                    self.media_backlog.clear();
                    return;
                }
            }
        }
    }

    fn transmit(&mut self, Transmit { flow, bytes }: Transmit) {
        log_sip("sent", &flow, &bytes);
        match flow.transport {
            Transport::Udp if flow.is_internal() => {
                let Some(socket) = &self.internal else {
                    self.undeliverable += 1;
                    return;
                };
                if let Err(e) = socket.send_to(&bytes, flow.remote) {
                    self.undeliverable += 1;
                    tracing::debug!(remote = %flow.remote, error = %e, "internal send failed");
                }
            }
            Transport::Udp => {
                if let Err(e) = self.udp.send_to(&bytes, flow.remote) {
                    self.undeliverable += 1;
                    tracing::debug!(remote = %flow.remote, error = %e, "UDP send failed");
                }
            }
            _ => match self.connections.get(&flow.id) {
                Some(tx) => {
                    if tx.try_send(bytes).is_err() {
                        // Congested or closing: a phone that does not read its responses
                        // loses the connection rather than our memory.
                        self.undeliverable += 1;
                        self.connections.remove(&flow.id);
                        tracing::info!(remote = %flow.remote, "SIP connection congested; closing it");
                    }
                }
                None => {
                    self.undeliverable += 1;
                    tracing::debug!(remote = %flow.remote, "response for a closed connection dropped");
                }
            },
        }
    }
}

fn now() -> Now {
    Now {
        mono: Instant::now(),
        wall: UnixMillis::now(),
    }
}

/// Ready when the media worker's queue has room again while commands wait; never otherwise.
async fn media_room(media: &Option<mpsc::Sender<MediaCommand>>, waiting: bool) {
    match media {
        Some(tx) if waiting => {
            // The permit is released at once: `send_media_backlog` uses try_send, and only
            // this loop sends, so the room stays.
            if tx.reserve().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        _ => std::future::pending().await,
    }
}

/// Ready when the set of peers changed; never without a cluster. A closed registry (its task
/// ended) stops being watched.
async fn peers_changed(peers: &mut Option<watch::Receiver<Vec<(String, std::net::SocketAddr)>>>) {
    match peers {
        Some(rx) => {
            if rx.changed().await.is_err() {
                *peers = None;
            }
        }
        None => std::future::pending().await,
    }
}

/// The fresh view of a pending resync; never ready when none is pending. `None` when the
/// fetching task ended without one (shutdown).
async fn recv_resync(
    pending: &mut Option<oneshot::Receiver<(Snapshot, Subscription)>>,
) -> Option<(Snapshot, Subscription)> {
    match pending {
        Some(rx) => rx.await.ok(),
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Parses what a driver read, logging it first (drivers call this on their own task).
pub(crate) fn packet(flow: Flow, bytes: Bytes) -> Inbound {
    log_sip("received", &flow, &bytes);
    Inbound::Packet {
        flow,
        parsed: Box::new(kubepbx_sip::message::parse(bytes)),
    }
}

/// Full messages at debug level under target `sip` (`RUST_LOG=sip=debug`).
fn log_sip(direction: &str, flow: &Flow, bytes: &Bytes) {
    if tracing::enabled!(target: "sip", tracing::Level::DEBUG) {
        tracing::debug!(
            target: "sip",
            "{direction} {} bytes {} {}:\n{}",
            bytes.len(),
            flow.transport.as_str(),
            flow.remote,
            String::from_utf8_lossy(bytes)
        );
    }
}

fn log_event(event: &EndpointEvent) {
    match event {
        EndpointEvent::Registered {
            binding: b,
            change,
            expires,
        } => {
            let user_agent = b.user_agent.as_deref().unwrap_or("-");
            let change = match change {
                BindingChange::Added => "registered",
                BindingChange::Updated => "registration updated",
                BindingChange::Refreshed => {
                    tracing::debug!(
                        extension = %b.user,
                        domain = %b.domain,
                        source = %b.source,
                        expires = expires.as_secs(),
                        "registration refreshed",
                    );
                    return;
                }
            };
            tracing::info!(
                extension = %b.user,
                domain = %b.domain,
                contact = %b.contact,
                source = %b.source,
                transport = b.transport.as_str(),
                expires = expires.as_secs(),
                user_agent,
                "{change}",
            );
        }
        EndpointEvent::Unregistered {
            key,
            contact,
            source,
        } => tracing::info!(
            extension = %key.user.user,
            domain = %key.user.domain,
            %contact,
            %source,
            "unregistered",
        ),
        EndpointEvent::RegisterFailed {
            user,
            reason,
            source,
            detail,
        } => {
            let extension = user.as_ref().map_or("-", |u| u.user.as_str());
            let domain = user.as_ref().map_or("-", |u| u.domain.as_str());
            if reason.is_routine() {
                tracing::debug!(extension, domain, %source, %reason, %detail, "registration failed");
            } else {
                tracing::info!(extension, domain, %source, %reason, %detail, "registration failed");
            }
        }
        EndpointEvent::NatDetected {
            user,
            contact,
            source,
        } => tracing::info!(
            extension = %user.user,
            domain = %user.domain,
            %contact,
            %source,
            "phone is behind NAT; using its source address",
        ),
        EndpointEvent::Banned { ip, duration } => tracing::warn!(
            %ip,
            seconds = duration.as_secs(),
            "source banned after repeated failed attempts",
        ),
        EndpointEvent::CallStarted { id, caller, callee } => tracing::info!(
            call = %id,
            from = %caller.user,
            to = %callee.user,
            domain = %caller.domain,
            "call started",
        ),
        EndpointEvent::CallAnswered { id, caller, callee } => tracing::info!(
            call = %id,
            from = %caller.user,
            to = %callee.user,
            "call answered",
        ),
        EndpointEvent::CallEnded(c) => tracing::info!(
            call = %c.id,
            from = %c.caller.user,
            to = %c.callee.user,
            code = c.code,
            reason = %c.reason,
            answered = c.answered_at.is_some(),
            "call ended",
        ),
        EndpointEvent::BadRequest { source, reason } => {
            tracing::debug!(%source, %reason, "malformed request answered with an error")
        }
    }
}

/// Performs the endpoint's media commands in order and hands the results back.
pub(crate) async fn media_worker(
    relay: std::sync::Arc<dyn kubepbx_media::MediaControl>,
    mut commands: mpsc::Receiver<MediaCommand>,
    inbound: mpsc::Sender<Inbound>,
) {
    use kubepbx_media::{AnswerRequest, OfferRequest, RecordingRequest, SessionId};
    let side_of = |s: kubepbx_sip::endpoint::Side| match s {
        kubepbx_sip::endpoint::Side::Caller => kubepbx_media::Side::Caller,
        kubepbx_sip::endpoint::Side::Callee => kubepbx_media::Side::Callee,
    };
    while let Some(command) = commands.recv().await {
        let (op, result) = match command {
            MediaCommand::Offer {
                op,
                session,
                side,
                sdp,
                source,
                record,
                peer,
            } => {
                let request = OfferRequest {
                    peer: match peer {
                        kubepbx_sip::endpoint::PeerMedia::Rtp => kubepbx_media::PeerMedia::Rtp,
                        kubepbx_sip::endpoint::PeerMedia::WebRtc => {
                            kubepbx_media::PeerMedia::WebRtc
                        }
                        kubepbx_sip::endpoint::PeerMedia::Either => {
                            kubepbx_media::PeerMedia::Either
                        }
                    },
                    session: SessionId(session),
                    side: side_of(side),
                    sdp,
                    signalling_source: source,
                    recording: record.map(|r| RecordingRequest {
                        id: r.id,
                        caller: r.caller,
                        callee: r.callee,
                    }),
                };
                (op, relay.offer(request).await)
            }
            MediaCommand::Answer {
                op,
                session,
                side,
                sdp,
                source,
            } => {
                let request = AnswerRequest {
                    session: SessionId(session),
                    side: side_of(side),
                    sdp,
                    signalling_source: source,
                };
                (op, relay.answer(request).await)
            }
            MediaCommand::Delete { session } => {
                let id = SessionId(session);
                let stats = match relay.delete(&id).await {
                    Ok(stats) => stats.map(Box::new),
                    Err(e) => {
                        tracing::warn!(error = %e, "releasing a media session failed");
                        None
                    }
                };
                let closed = Inbound::MediaClosed {
                    session: id.0,
                    stats,
                };
                if inbound.send(closed).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let result = result
            .map(|r| RelaySdp {
                sdp: r.sdp,
                webrtc: r.webrtc_sdp,
            })
            .map_err(|e| {
                let (code, _) = e.sip_status();
                tracing::info!(error = %e, code, "the media relay refused an SDP");
                MediaFailure {
                    code,
                    reason: e.sip_reason(),
                    retry_after: e.retry_after(),
                }
            });
        if inbound.send(Inbound::Media { op, result }).await.is_err() {
            return;
        }
    }
}

/// Hands what the relay reports on its own to the loop.
pub(crate) async fn relay_events(
    mut events: mpsc::Receiver<kubepbx_media::RelayEvent>,
    inbound: mpsc::Sender<Inbound>,
) {
    while let Some(event) = events.recv().await {
        let item = match event {
            kubepbx_media::RelayEvent::Timeout(session, stats) => Inbound::MediaEnded {
                session: session.0,
                stats: Box::new(stats),
                failure: None,
            },
            kubepbx_media::RelayEvent::Failed(session, reason, stats) => Inbound::MediaEnded {
                session: session.0,
                stats: Box::new(stats),
                failure: Some(reason),
            },
        };
        if inbound.send(item).await.is_err() {
            return;
        }
    }
}

/// Applies write batches in order, merging whatever has queued up meanwhile.
async fn write_loop(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Vec<Write>>) {
    let mut pending: Vec<Write> = Vec::new();
    // Since when the store has been unreachable, and how many writes were dropped meanwhile.
    let mut outage: Option<(Instant, u64)> = None;
    let mut backoff = RETRY_FIRST;
    let mut closed = false;
    loop {
        if pending.is_empty() {
            if closed {
                return;
            }
            match rx.recv().await {
                Some(batch) => pending = batch,
                None => return,
            }
        }
        while let Ok(more) = rx.try_recv() {
            pending.extend(more);
        }
        if pending.len() > MAX_PENDING_WRITES {
            // Only during a long outage under load: the oldest go first (later writes of the
            // same records supersede most of them).
            let excess = pending.len() - MAX_PENDING_WRITES;
            pending.drain(..excess);
            if let Some((_, dropped)) = &mut outage {
                *dropped += excess as u64;
            }
        }
        match store.apply(pending.clone()).await {
            Ok(()) => {
                if let Some((since, dropped)) = outage.take() {
                    tracing::info!(
                        writes = pending.len(),
                        dropped,
                        after = ?since.elapsed(),
                        "the store is reachable again; the changes made meanwhile are written"
                    );
                }
                pending.clear();
                backoff = RETRY_FIRST;
            }
            Err(e @ StoreError::Unavailable(_)) if !closed => {
                if outage.is_none() {
                    tracing::warn!(error = %e, "store writes fail; serving from memory and retrying until the store is back");
                    outage = Some((Instant::now(), 0));
                }
                // Keep taking new writes while waiting, so the drive loop never waits for
                // the store.
                let wait = tokio::time::sleep(backoff);
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        () = &mut wait => break,
                        more = rx.recv() => match more {
                            Some(batch) => pending.extend(batch),
                            None => {
                                closed = true;
                                break;
                            }
                        },
                    }
                }
                backoff = (backoff * 2).min(RETRY_MAX);
            }
            Err(e) => {
                tracing::error!(error = %e, writes = pending.len(), "store write failed; these changes are lost");
                pending.clear();
            }
        }
    }
}
