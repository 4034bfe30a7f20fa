//! [`LocalRelay`]: the in-process [`MediaControl`] used by `kubepbx up` (and behind the HTTP
//! API of a media replica). It parses and rewrites SDPs, leases ports and binds sockets, and
//! spawns one [`SessionTask`] per call on the owner's [`TaskTracker`].
//!
//! A session is set up completely or not at all: both legs' ports are leased and all four
//! sockets bound before anything is registered or spawned, so a failure (ports exhausted, bind
//! error) leaves nothing behind. Ports return to the pool when the session task ends (delete,
//! timeout, shutdown).

use crate::MediaError;
use crate::api::*;
use crate::config::RelayConfig;
use crate::driver::{Command, Entry, LegSockets, Registry, SessionTask};
use crate::metrics::{MetricsSnapshot, RelayMetrics};
use crate::ports::PortPool;
use crate::recorder::{RecordMsg, Recorder};
use crate::sdp::{self, ParsedSdp};
use crate::session::{Session, Timeouts};
use kubepbx_api::time::UnixMillis;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::net::UdpSocket;
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
}

impl LocalRelay {
    /// Starts a relay. Session tasks are spawned on `tasks` and stop when `shutdown` is
    /// cancelled. The returned receiver gets a [`RelayEvent::Timeout`] for every reaped session;
    /// the owner should keep reading it (reaped sessions wait when it is full).
    pub fn start(
        config: RelayConfig,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<(LocalRelay, RelayEvents), MediaError> {
        config.validate()?;
        let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
        let relay = LocalRelay {
            inner: Arc::new(Inner {
                pool: PortPool::new(&config.ports),
                config,
                registry: Registry::default(),
                events,
                metrics: Arc::new(RelayMetrics::default()),
                shutdown,
                tasks: tasks.clone(),
                generation: AtomicU64::new(0),
            }),
        };
        Ok((relay, events_rx))
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

    /// Tells an existing session about `side`'s SDP; `false` if its task is gone.
    async fn update(&self, entry: &Entry, side: Side, parsed: &ParsedSdp, answered: bool) -> bool {
        let (done, done_rx) = oneshot::channel();
        let cmd = Command::Remote {
            side,
            remote: parsed.remote.clone(),
            answered,
            done,
        };
        entry.commands.send(cmd).await.is_ok() && done_rx.await.is_ok()
    }

    /// Creates a session for an offer from `side`; returns its RTP ports.
    fn create(&self, req: &OfferRequest, parsed: &ParsedSdp) -> Result<[u16; 2], MediaError> {
        let inner = &self.inner;
        let mut registry = inner.registry.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = registry.get(&req.session)
            && !existing.commands.is_closed()
        {
            return Ok(existing.ports);
        }
        let legs = [self.bind_leg()?, self.bind_leg()?];
        let ports = [legs[0].lease.rtp(), legs[1].lease.rtp()];
        let now = Instant::now();
        let timeouts = Timeouts {
            media: inner.config.media_timeout,
            setup: inner.config.setup_timeout,
            relatch_after: inner.config.relatch_after,
        };
        let mut core = Session::new(timeouts, now);
        core.set_remote(req.side, &parsed.remote);
        let recorder = self.start_recorder(req);
        if let Some(recorder) = &recorder {
            recorder.tap(RecordMsg::Codecs {
                side: req.side,
                payloads: parsed.remote.payloads.clone(),
                secure: parsed.remote.secure,
            });
        }
        let (commands, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let generation = inner.generation.fetch_add(1, Ordering::Relaxed);
        registry.insert(
            req.session.clone(),
            Entry {
                generation,
                commands,
                ports,
                recorded: recorder.is_some(),
            },
        );
        drop(registry);
        RelayMetrics::add(&inner.metrics.sessions_started, 1);
        tracing::debug!(target: "media", session = %req.session, ?ports, "media session created");
        let task = SessionTask {
            id: req.session.clone(),
            generation,
            core,
            legs,
            created_wall: UnixMillis::now(),
            recorder,
            commands: commands_rx,
            events: inner.events.clone(),
            registry: inner.registry.clone(),
            metrics: inner.metrics.clone(),
            shutdown: inner.shutdown.clone(),
        };
        inner.tasks.spawn(task.run());
        Ok(ports)
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

fn bind(ip: IpAddr, port: u16) -> io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(SocketAddr::new(ip, port))?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
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
        let ports = match self.entry(&req.session) {
            Some(entry) if self.update(&entry, req.side, &parsed, false).await => entry.ports,
            stale => {
                if let Some(entry) = stale {
                    self.remove_entry(&req.session, entry.generation);
                }
                self.create(&req, &parsed)?
            }
        };
        let port = ports[req.side.other().index()];
        Ok(SdpResult {
            sdp: parsed.rewrite(self.inner.config.advertise, port),
        })
    }

    async fn answer(&self, req: AnswerRequest) -> Result<SdpResult, MediaError> {
        self.check_running()?;
        let parsed = sdp::parse(&req.sdp, req.signalling_source)?;
        let entry = self.entry(&req.session).ok_or(MediaError::UnknownSession)?;
        if !self.update(&entry, req.side, &parsed, true).await {
            self.remove_entry(&req.session, entry.generation);
            return Err(MediaError::UnknownSession);
        }
        let port = entry.ports[req.side.other().index()];
        Ok(SdpResult {
            sdp: parsed.rewrite(self.inner.config.advertise, port),
        })
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
