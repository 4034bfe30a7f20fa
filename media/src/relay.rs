//! [`LocalRelay`]: the in-process [`MediaControl`] used by `kubepbx up` (and behind the HTTP
//! API of a media replica). It parses SDPs, leases ports and binds sockets for plain legs, and
//! spawns one `SessionTask` per call, which negotiates (module `negotiate`) and relays.
//! Session tasks run on the relay's own threads, one single-threaded runtime per core
//! (module `threads`, sessions spread round-robin), tracked by the owner's [`TaskTracker`];
//! a session's sockets are registered with its thread's reactor. With a WebRTC address
//! configured it also binds the one WebRTC socket and runs its [`Hub`] task (on the first
//! relay thread).
//!
//! A session is set up completely or not at all: its plain legs' ports are leased and sockets
//! bound before anything is registered or spawned, and an initial offer the session task
//! refuses ends the session at once, so a failure (ports exhausted, bind error, an SDP that
//! cannot be bridged) leaves nothing behind. Ports return to the pool when the session task
//! ends (delete, timeout, failure, shutdown) or drops a leg it no longer needs.

use crate::MediaError;
use crate::api::*;
use crate::config::RelayConfig;
use crate::driver::{Command, Entry, LegSockets, Mover, Registry, SessionTask, WebRtcAccess};
use crate::follow::Follow;
use crate::hub::{Hub, HubHandle};
use crate::metrics::{MetricsSnapshot, RelayMetrics};
use crate::negotiate::{Negotiation, Want};
use crate::ports::PortPool;
use crate::recorder::Recorder;
use crate::sdp::{self, LegKind, ParsedSdp};
use crate::session::{Session, Timeouts};
use crate::threads::{self, Shards};
use crate::udp::Socket;
use crate::webrtc::{Outputs, WebRtcShared};
use kubepbx_api::time::UnixMillis;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Commands queued per session before the control side waits.
const COMMAND_QUEUE: usize = 16;
/// Events queued for the owner before reaped sessions wait to report.
pub const EVENT_QUEUE: usize = 256;

/// The owner's end of the relay's events (reaped sessions).
pub type RelayEvents = mpsc::Receiver<RelayEvent>;

/// An in-process media relay.
#[derive(Debug, Clone)]
pub struct LocalRelay {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: RelayConfig,
    pool: PortPool,
    registry: Registry,
    events: mpsc::Sender<RelayEvent>,
    metrics: Arc<RelayMetrics>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    generation: AtomicU64,
    webrtc: Option<WebRtcEndpoint>,
    /// The threads session tasks run on (dropped last: it ends idle threads). Sessions hold
    /// it weakly, to move between them.
    shards: Arc<Shards>,
}

/// The relay's WebRTC endpoint: the hub's handle and what every leg shares.
#[derive(Debug)]
struct WebRtcEndpoint {
    hub: HubHandle,
    shared: Arc<WebRtcShared>,
    local: SocketAddr,
}

impl LocalRelay {
    /// Starts a relay and its threads ([`RelayConfig::threads`]). Session tasks (and the
    /// WebRTC hub, when configured) run there, are tracked by `tasks` and stop when `shutdown`
    /// is cancelled; the threads end after them (or, idle, when the relay is dropped). Call it
    /// within a tokio runtime: recorders run on that one. The
    /// returned receiver gets a [`RelayEvent`] for every session the relay ends by itself; the
    /// owner should keep reading it (such sessions wait when it is full).
    pub fn start(
        config: RelayConfig,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<(LocalRelay, RelayEvents), MediaError> {
        config.validate()?;
        let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
        let threads = threads::count(config.threads);
        let metrics = Arc::new(RelayMetrics::new(threads));
        let shards = Shards::start(threads, config.batch_interval, &metrics, &shutdown, tasks)?;
        let webrtc = match config.webrtc {
            Some(addr) => Some(Self::start_webrtc(
                &config,
                addr,
                &metrics,
                &shutdown,
                (&shards, tasks),
            )?),
            None => None,
        };
        let relay = LocalRelay {
            inner: Arc::new(Inner {
                pool: PortPool::new(&config.ports),
                config,
                registry: Registry::default(),
                events,
                metrics,
                shutdown,
                tasks: tasks.clone(),
                generation: AtomicU64::new(0),
                webrtc,
                shards: Arc::new(shards),
            }),
        };
        Ok((relay, events_rx))
    }

    fn start_webrtc(
        config: &RelayConfig,
        addr: SocketAddr,
        metrics: &Arc<RelayMetrics>,
        shutdown: &CancellationToken,
        (shards, tasks): (&Shards, &TaskTracker),
    ) -> Result<WebRtcEndpoint, MediaError> {
        let unavailable = |e: io::Error| {
            MediaError::Unavailable(format!("cannot bind the WebRTC port {addr}: {e}"))
        };
        // One copy of the port per relay thread, each read by that thread's hub.
        let group = crate::udp::bind_group(addr, shards.all().len()).map_err(unavailable)?;
        let local = group[0].local_addr().map_err(unavailable)?;
        let mut sockets = Vec::with_capacity(group.len());
        for (socket, shard) in group.into_iter().zip(shards.all()) {
            crate::udp::enlarge_buffers(&socket, crate::hub::SOCKET_BUFFER);
            let _on = shard.enter();
            sockets.push(Socket::from_std(socket).map_err(unavailable)?);
        }
        let candidate = SocketAddr::new(config.advertise, local.port());
        let shared = WebRtcShared::new(
            candidate,
            str0m::crypto::from_feature_flags(),
            config.webrtc_connect_timeout,
            config.media_timeout,
        )
        .ok_or_else(|| {
            MediaError::Unavailable("the DTLS backend cannot make a certificate".to_owned())
        })?;
        let (hubs, handle) = Hub::new(sockets, metrics, shutdown);
        for (hub, shard) in hubs.into_iter().zip(shards.all()) {
            shard.spawn(tasks, hub.run());
        }
        tracing::info!(target: "media", %local, %candidate, readers = shards.all().len(), "WebRTC legs share one UDP port");
        Ok(WebRtcEndpoint {
            hub: handle,
            shared: Arc::new(shared),
            local,
        })
    }

    /// The bound address of the WebRTC socket, when WebRTC is enabled.
    pub fn webrtc_addr(&self) -> Option<SocketAddr> {
        self.inner.webrtc.as_ref().map(|w| w.local)
    }

    /// Relay-wide counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            port_pairs_free: self.inner.pool.free() as u64,
            port_pairs_total: self.inner.pool.total() as u64,
            ..self.inner.metrics.snapshot()
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &RelayConfig {
        &self.inner.config
    }

    fn entry(&self, id: &SessionId) -> Option<Entry> {
        let registry = self
            .inner
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        registry.get(id).cloned()
    }

    fn remove_entry(&self, id: &SessionId, generation: u64) {
        let mut registry = self
            .inner
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if registry.get(id).is_some_and(|e| e.generation == generation) {
            registry.remove(id);
        }
    }

    fn check_running(&self) -> Result<(), MediaError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(MediaError::Unavailable(
                "the relay is shutting down".to_owned(),
            ));
        }
        Ok(())
    }

    /// Hands an offer or answer to a session task; `None` if its task is gone.
    async fn negotiate(
        &self,
        entry: &Entry,
        side: Side,
        parsed: ParsedSdp,
        answer: bool,
    ) -> Option<Result<SdpResult, MediaError>> {
        let (reply, reply_rx) = oneshot::channel();
        let parsed = Box::new(parsed);
        let cmd = if answer {
            Command::Answer {
                side,
                parsed,
                reply,
            }
        } else {
            Command::Offer {
                side,
                parsed,
                reply,
            }
        };
        entry.commands.send(cmd).await.ok()?;
        reply_rx.await.ok()
    }

    /// Creates a session for an offer from `req.side` (kind `offered`) and returns its entry.
    fn create(&self, req: &OfferRequest, offered: LegKind) -> Result<Entry, MediaError> {
        let inner = &self.inner;
        let mut registry = inner.registry.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = registry.get(&req.session)
            && !existing.commands.is_closed()
        {
            return Ok(existing.clone());
        }
        let webrtc = inner.webrtc.as_ref();
        let offerer = match offered {
            LegKind::Plain => Want::Plain,
            LegKind::WebRtc if webrtc.is_some() => Want::WebRtc,
            LegKind::WebRtc => {
                return Err(MediaError::UnsupportedTransport(
                    "UDP/TLS/RTP/SAVPF (WebRTC is not enabled on this relay)".to_owned(),
                ));
            }
        };
        let other = match (req.peer, webrtc.is_some()) {
            (PeerMedia::Rtp, _) | (PeerMedia::Either, false) => Want::Plain,
            (PeerMedia::WebRtc, true) => Want::WebRtc,
            (PeerMedia::Either, true) => Want::Either,
            (PeerMedia::WebRtc, false) => {
                return Err(MediaError::UnsupportedTransport(
                    "UDP/TLS/RTP/SAVPF towards a browser (WebRTC is not enabled on this relay)"
                        .to_owned(),
                ));
            }
        };
        let mut kinds = [Want::Plain; 2];
        kinds[req.side.index()] = offerer;
        kinds[req.side.other().index()] = other;
        let shard = inner.shards.next();
        let mut legs = [None, None];
        {
            // The sockets belong to the reactor of the thread the task will run on.
            let _on = shard.enter();
            for side in [Side::Caller, Side::Callee] {
                if kinds[side.index()] != Want::WebRtc {
                    legs[side.index()] = Some(self.bind_leg()?);
                }
            }
        }
        let now = Instant::now();
        let timeouts = Timeouts {
            media: inner.config.media_timeout,
            setup: inner.config.setup_timeout,
            relatch_after: inner.config.relatch_after,
        };
        let mut core = Session::new(timeouts, now);
        for side in [Side::Caller, Side::Callee] {
            if kinds[side.index()] == Want::WebRtc {
                core.set_kind(side, LegKind::WebRtc);
            }
        }
        let recorder = self.start_recorder(req);
        let (commands, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let generation = inner.generation.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            generation,
            commands,
            recorded: recorder.is_some(),
        };
        registry.insert(req.session.clone(), entry.clone());
        drop(registry);
        RelayMetrics::add(&inner.metrics.sessions_started, 1);
        let ports = legs.each_ref().map(|l| l.as_ref().map(|l| l.lease.rtp()));
        tracing::debug!(target: "media", session = %req.session, ?ports, ?kinds, "media session created");
        let (webrtc, inbound) = match webrtc {
            Some(w) if kinds.iter().any(|k| *k != Want::Plain) => {
                let (tx, rx) = crate::inbox::channel(crate::driver::INBOUND_QUEUE);
                let access = WebRtcAccess {
                    hub: w.hub.clone(),
                    shared: w.shared.clone(),
                    tx,
                    follow: Follow::default(),
                    mover: Mover {
                        shards: Arc::downgrade(&inner.shards),
                        owner: inner.tasks.clone(),
                    },
                };
                (Some(access), Some(rx))
            }
            _ => (None, None),
        };
        let task = SessionTask {
            id: req.session.clone(),
            generation,
            core,
            legs,
            rtcs: [None, None],
            outs: [Outputs::default(), Outputs::default()],
            negotiation: Negotiation::new(kinds, SessionTask::origins(generation)),
            webrtc,
            inbound,
            advertise: inner.config.advertise,
            created_wall: UnixMillis::now(),
            recorder,
            commands: commands_rx,
            events: inner.events.clone(),
            registry: inner.registry.clone(),
            metrics: inner.metrics.clone(),
            thread: shard.index(),
            shutdown: inner.shutdown.clone(),
            broken: None,
        };
        shard.spawn(&inner.tasks, task.run());
        Ok(entry)
    }

    fn start_recorder(&self, req: &OfferRequest) -> Option<Recorder> {
        let wanted = req.recording.as_ref()?;
        let Some(dir) = &self.inner.config.recordings_dir else {
            tracing::warn!(target: "media", session = %req.session, "recording requested but no recordings directory is configured");
            return None;
        };
        match Recorder::start(dir, wanted, &self.inner.tasks) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(target: "media", session = %req.session, error = %e, "recording could not start; the call goes on unrecorded");
                None
            }
        }
    }

    /// Leases a port pair and binds both its sockets, skipping pairs other programs hold.
    fn bind_leg(&self) -> Result<LegSockets, MediaError> {
        let inner = &self.inner;
        // Pairs found bound by another program: when that is why no pair is left, say so.
        let mut in_use = 0u32;
        let mut skipped: Vec<u16> = Vec::new();
        let none_left = |in_use: u32| {
            if in_use > 0 {
                MediaError::PortsInUse(in_use)
            } else {
                MediaError::PortsExhausted
            }
        };
        for _ in 0..inner.pool.total() {
            let lease = inner.pool.acquire().ok_or_else(|| none_left(in_use))?;
            if skipped.contains(&lease.rtp()) {
                // Every free pair has been tried.
                break;
            }
            let bound = bind(inner.config.bind, lease.rtp())
                .and_then(|rtp| Ok((rtp, bind(inner.config.bind, lease.rtcp())?)));
            match bound {
                Ok((rtp, rtcp)) => return Ok(LegSockets { rtp, rtcp, lease }),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                    in_use += 1;
                    skipped.push(lease.rtp());
                    tracing::debug!(target: "media", port = lease.rtp(), "RTP port pair in use by another program; skipped");
                    lease.skip();
                }
                Err(e) => {
                    return Err(MediaError::Unavailable(format!(
                        "cannot bind RTP sockets on {}: {e}",
                        inner.config.bind
                    )));
                }
            }
        }
        Err(none_left(in_use))
    }
}

fn bind(ip: IpAddr, port: u16) -> io::Result<Socket> {
    Socket::bind(SocketAddr::new(ip, port))
}

#[async_trait::async_trait]
impl MediaControl for LocalRelay {
    async fn offer(&self, req: OfferRequest) -> Result<SdpResult, MediaError> {
        self.check_running()?;
        let mut parsed = sdp::parse(&req.sdp, req.signalling_source)?;
        // A recorded call must use a codec the recorder decodes (when the offer has one).
        let recorded = match self.entry(&req.session) {
            Some(entry) => entry.recorded,
            None => req.recording.is_some() && self.inner.config.recordings_dir.is_some(),
        };
        if recorded && parsed.keep_only_g711() {
            tracing::debug!(target: "media", session = %req.session, "recorded call: offer limited to G.711");
        }
        if let Some(entry) = self.entry(&req.session) {
            match self
                .negotiate(&entry, req.side, parsed.clone(), false)
                .await
            {
                Some(result) => return result,
                None => self.remove_entry(&req.session, entry.generation),
            }
        }
        let entry = self.create(&req, parsed.kind)?;
        let generation = entry.generation;
        match self.negotiate(&entry, req.side, parsed, false).await {
            Some(Ok(result)) => Ok(result),
            Some(Err(e)) => {
                // The session exists for this offer only: nothing of it may stay.
                if let Some(current) = self.entry(&req.session)
                    && current.generation == generation
                {
                    self.remove_entry(&req.session, generation);
                    let (reply, _) = oneshot::channel();
                    let _ = entry.commands.send(Command::Delete(reply)).await;
                }
                Err(e)
            }
            None => Err(MediaError::Unavailable(
                "the media session ended while being set up".to_owned(),
            )),
        }
    }

    async fn answer(&self, req: AnswerRequest) -> Result<SdpResult, MediaError> {
        self.check_running()?;
        let parsed = sdp::parse(&req.sdp, req.signalling_source)?;
        let entry = self.entry(&req.session).ok_or(MediaError::UnknownSession)?;
        match self.negotiate(&entry, req.side, parsed, true).await {
            Some(result) => result,
            None => {
                self.remove_entry(&req.session, entry.generation);
                Err(MediaError::UnknownSession)
            }
        }
    }

    async fn delete(&self, session: &SessionId) -> Result<Option<SessionStats>, MediaError> {
        let entry = {
            let mut registry = self
                .inner
                .registry
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            registry.remove(session)
        };
        let Some(entry) = entry else { return Ok(None) };
        let (reply, reply_rx) = oneshot::channel();
        if entry.commands.send(Command::Delete(reply)).await.is_err() {
            return Ok(None);
        }
        Ok(reply_rx.await.ok())
    }

    async fn stats(&self, session: &SessionId) -> Result<Option<SessionStats>, MediaError> {
        let Some(entry) = self.entry(session) else {
            return Ok(None);
        };
        Ok(query(&entry).await)
    }

    async fn list(&self) -> Result<Vec<SessionStats>, MediaError> {
        let entries: Vec<Entry> = {
            let registry = self
                .inner
                .registry
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            registry.values().cloned().collect()
        };
        let mut all = Vec::with_capacity(entries.len());
        for entry in &entries {
            if let Some(stats) = query(entry).await {
                all.push(stats);
            }
        }
        all.sort_by(|a, b| a.session.cmp(&b.session));
        Ok(all)
    }

    async fn metrics(&self) -> Result<MetricsSnapshot, MediaError> {
        Ok(LocalRelay::metrics(self))
    }
}

async fn query(entry: &Entry) -> Option<SessionStats> {
    let (reply, reply_rx) = oneshot::channel();
    entry.commands.send(Command::Stats(reply)).await.ok()?;
    reply_rx.await.ok()
}
