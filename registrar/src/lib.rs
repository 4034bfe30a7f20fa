//! kubepbx registrar: SIP transports, the drive loop around the sans-IO endpoint, and the HTTP
//! API.
//!
//! # Layout
//!
//! - [`start`]: binds nothing itself — it takes [`SipListeners`] (bound by the caller, so tests
//!   and `kubepbx up` choose ports) and a [`Store`], loads the store's snapshot and spawns the
//!   tasks below on the caller's [`TaskTracker`]; they stop when the [`CancellationToken`] fires.
//! - `core`: the drive loop owning the [`Endpoint`].
//! - `udp`, `tcp`, [`ws`]: the transport drivers (WebSockets arrive through the HTTP server;
//!   [`forwarded`] finds the phone behind a trusted proxy).
//! - [`http`]: the axum router (admin API, health, metrics); [`tls`]: HTTPS and the SIP over
//!   TLS acceptor, with the [`certificate`] they present (renewed without a restart).
//! - [`views`]: what the API shows ([`advice`]: what each failure reason means and its fix);
//!   [`metrics`]: the Prometheus encoding.
//! - [`admin`]: [`ExtensionAdmin`](admin::ExtensionAdmin), how the API writes extensions where
//!   the deployment keeps them (none in a cluster).

pub mod admin;
pub mod advice;
pub mod calls;
pub mod certificate;
mod core;
pub mod forwarded;
pub mod http;
pub mod metrics;
pub mod recordings;
mod tcp;
pub mod tls;
mod udp;
pub mod views;
pub mod web;
pub mod ws;

use crate::calls::{CallView, CdrLog, CdrStorage, CdrView};
use crate::core::{Core, Inbound, Query};
use crate::metrics::MetricsSnapshot;
use crate::views::{ExtensionView, RegistrationView};
use kubepbx_api::store::{Store, StoreError};
use kubepbx_media::udp::Socket;
use kubepbx_sip::endpoint::{Endpoint, EndpointConfig};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Packets queued between the transport drivers and the drive loop.
const INBOUND_QUEUE: usize = 8192;
/// Media commands queued for the media worker.
const MEDIA_QUEUE: usize = 1024;
/// Socket buffer asked for on the UDP socket (the kernel may grant less).
const UDP_BUFFER: usize = 4 << 20;

/// The SIP sockets: UDP and TCP on the same address and port, and optionally TLS.
pub struct SipListeners {
    udp: Socket,
    tcp: TcpListener,
    tls: Option<(TcpListener, tls::TlsAcceptor)>,
}

impl std::fmt::Debug for SipListeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipListeners")
            .field("udp", &self.udp)
            .field("tcp", &self.tcp)
            .field("tls", &self.tls.as_ref().map(|(l, _)| l))
            .finish()
    }
}

impl SipListeners {
    /// Binds UDP and TCP on `addr`. With port 0, TCP takes the port the system gave UDP; when
    /// that port is taken for TCP (by any TCP socket, a connection's local end included),
    /// another one is tried, up to [`FREE_PORT_TRIES`] times.
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        let mut tries = 1;
        loop {
            let udp = bind_udp(addr)?;
            let tcp_addr = SocketAddr::new(addr.ip(), udp.local_addr()?.port());
            match TcpListener::bind(tcp_addr).await {
                Ok(tcp) => {
                    return Ok(SipListeners {
                        udp,
                        tcp,
                        tls: None,
                    });
                }
                Err(e)
                    if addr.port() == 0
                        && e.kind() == io::ErrorKind::AddrInUse
                        && tries < FREE_PORT_TRIES =>
                {
                    tries += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Adds SIP over TLS on `listener` (bound by the caller), handshaking with `acceptor`.
    pub fn with_tls(mut self, listener: TcpListener, acceptor: tls::TlsAcceptor) -> Self {
        self.tls = Some((listener, acceptor));
        self
    }

    /// The bound TLS address, when SIP over TLS is on.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The bound address (the same for both transports).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.udp.local_addr()
    }
}

/// How many ports [`SipListeners::bind`] tries with port 0 before giving up.
pub const FREE_PORT_TRIES: usize = 16;

fn bind_udp(addr: SocketAddr) -> io::Result<Socket> {
    use socket2::{Domain, Protocol, Type};
    let socket = socket2::Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: bursts of REGISTERs are absorbed by the kernel instead of dropped.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER);
    let _ = socket.set_send_buffer_size(UDP_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Socket::from_std(socket.into())
}

/// A cheap, cloneable way to ask a running registrar for its state.
#[derive(Debug, Clone)]
pub struct RegistrarHandle {
    queries: mpsc::Sender<Query>,
    shutdown: CancellationToken,
    /// Where WebSocket flows accepted by the HTTP server go.
    pub(crate) streams: ws::StreamLink,
}

impl RegistrarHandle {
    /// Whether the registrar serves SIP (false once shutdown started).
    pub fn is_ready(&self) -> bool {
        !self.shutdown.is_cancelled() && !self.queries.is_closed()
    }

    async fn ask<T>(&self, query: impl FnOnce(oneshot::Sender<T>) -> Query) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.queries.send(query(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Every extension with its contacts and last failure; `None` when the registrar stopped.
    pub async fn extensions(&self) -> Option<Vec<ExtensionView>> {
        self.ask(Query::Extensions).await
    }

    /// One extension (`Some(None)` when there is no such extension); `None` when the registrar
    /// stopped.
    pub async fn extension(&self, key: kubepbx_api::UserKey) -> Option<Option<ExtensionView>> {
        self.ask(|reply| Query::Extension(key, reply)).await
    }

    /// The live bindings `filter` selects; `None` when the registrar stopped.
    pub async fn registrations(
        &self,
        filter: views::RegistrationFilter,
    ) -> Option<Vec<RegistrationView>> {
        self.ask(|reply| Query::Registrations(filter, reply)).await
    }

    /// Counters and gauges; `None` when the registrar stopped.
    pub async fn metrics(&self) -> Option<MetricsSnapshot> {
        self.ask(Query::Metrics).await
    }

    /// Calls in progress, without media counters; `None` when the registrar stopped.
    pub async fn calls(&self) -> Option<Vec<CallView>> {
        self.ask(Query::Calls).await
    }

    /// Finished calls, newest first; `None` when the registrar stopped.
    pub async fn cdrs(&self) -> Option<Vec<CdrView>> {
        self.ask(Query::Cdrs).await
    }

    /// Hangs up the call with API id `id`: `Some(false)` when there is no such call, `None`
    /// when the registrar stopped.
    pub async fn hangup(&self, id: &str) -> Option<bool> {
        let id = id.to_owned();
        self.ask(|tx| Query::Hangup(id, tx)).await
    }
}

/// The media relay a registrar anchors calls on.
#[derive(Debug)]
pub struct MediaLink {
    /// Offer/answer/delete/stats.
    pub control: Arc<dyn kubepbx_media::MediaControl>,
    /// What the relay reports on its own (sessions it closed for lack of media).
    pub events: mpsc::Receiver<kubepbx_media::RelayEvent>,
}

/// A replica's place in a cluster: the socket other replicas send SIP to, and who they are.
#[derive(Debug)]
pub struct ClusterLink {
    /// The bound `--internal` socket.
    pub internal: Socket,
    /// The other live registrar replicas: id and internal address.
    pub peers: watch::Receiver<Vec<(String, SocketAddr)>>,
    /// Where the calls this replica routes are shared with the others.
    pub calls: mpsc::Sender<calls::CallChange>,
}

/// Everything [`start`] needs.
#[derive(Debug)]
pub struct Setup {
    /// The SIP endpoint's configuration.
    pub config: EndpointConfig,
    /// The bound SIP sockets.
    pub listeners: SipListeners,
    /// Where extensions and bindings live.
    pub store: Arc<dyn Store>,
    /// With a relay, every SDP of a call is rewritten by it (the endpoint config's
    /// `anchor_media` must then be set).
    pub media: Option<MediaLink>,
    /// Where finished calls are kept besides the newest in memory.
    pub cdrs: CdrStorage,
    /// Set for a replica of a cluster (the endpoint config's `cluster` must then be set).
    pub cluster: Option<ClusterLink>,
}

/// Why the registrar could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store's snapshot could not be loaded.
    #[error("loading the store: {0}")]
    Store(#[from] StoreError),
    /// The call record file exists but cannot be read.
    #[error("reading the call records {path}: {source}")]
    Cdrs {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Loads the store's view and starts serving SIP (see the module docs).
pub async fn start(
    setup: Setup,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> Result<RegistrarHandle, StartError> {
    let Setup {
        config,
        listeners,
        store,
        media,
        cdrs,
        cluster,
    } = setup;
    let cdrs = match cdrs {
        CdrStorage::Memory => CdrLog::new(calls::CDR_KEEP, None),
        CdrStorage::Shared(sink) => CdrLog::new(calls::CDR_KEEP, Some(sink)),
        CdrStorage::File(path) => CdrLog::open(path.clone(), calls::CDR_KEEP, tasks)
            .map_err(|source| StartError::Cdrs { path, source })?,
    };
    let (snapshot, subscription) = store.watch().await?;
    let config_replica = config.replica.clone();
    let mut endpoint = Endpoint::new(config);
    endpoint.load(snapshot);
    let (internal, peers, call_feed) = match cluster {
        Some(link) => {
            endpoint.set_peers(link.peers.borrow().iter().cloned());
            let feed = calls::CallFeed::new(link.calls, config_replica.clone());
            (Some(Arc::new(link.internal)), Some(link.peers), Some(feed))
        }
        None => (None, None, None),
    };
    let (inbound_tx, inbound_rx) = mpsc::channel::<Inbound>(INBOUND_QUEUE);
    let (queries_tx, queries_rx) = mpsc::channel(64);
    let udp = Arc::new(listeners.udp);
    let media = media.map(|link| {
        let (tx, rx) = mpsc::channel(MEDIA_QUEUE);
        tasks.spawn(core::media_worker(link.control, rx, inbound_tx.clone()));
        tasks.spawn(core::relay_events(link.events, inbound_tx.clone()));
        tx
    });
    let core = Core {
        endpoint,
        store,
        subscription,
        resync: None,
        udp: Arc::clone(&udp),
        inbound: inbound_rx,
        queries: queries_rx,
        shutdown: shutdown.clone(),
        connections: HashMap::new(),
        undeliverable: 0,
        media,
        media_backlog: std::collections::VecDeque::new(),
        cdrs,
        pending_cdrs: HashMap::new(),
        media_final: HashMap::new(),
        internal: internal.clone(),
        peers,
        call_feed,
    };
    tasks.spawn(core.run());
    tasks.spawn(udp::run(udp, inbound_tx.clone(), shutdown.clone(), false));
    if let Some(socket) = internal {
        tasks.spawn(udp::run(socket, inbound_tx.clone(), shutdown.clone(), true));
    }
    // Stream flows (TCP connections and WebSockets) share one numbering.
    let ids = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let streams = ws::StreamLink {
        inbound: inbound_tx.clone(),
        ids: Arc::clone(&ids),
        shutdown: shutdown.clone(),
    };
    if let Some((listener, acceptor)) = listeners.tls {
        tasks.spawn(tcp::run_tls(
            listener,
            acceptor,
            inbound_tx.clone(),
            Arc::clone(&ids),
            shutdown.clone(),
            tasks.clone(),
        ));
    }
    tasks.spawn(tcp::run(
        listeners.tcp,
        inbound_tx,
        ids,
        shutdown.clone(),
        tasks.clone(),
    ));
    Ok(RegistrarHandle {
        queries: queries_tx,
        shutdown,
        streams,
    })
}
