//! kubepbx registrar: SIP transports, the drive loop around the sans-IO endpoint, and the HTTP
//! API.
//!
//! # Layout
//!
//! - [`start`]: binds nothing itself — it takes [`SipListeners`] (bound by the caller, so tests
//!   and `kubepbx up` choose ports) and a [`Store`], loads the store's snapshot and spawns the
//!   tasks below on the caller's [`TaskTracker`]; they stop when the [`CancellationToken`] fires.
//! - `core`: the drive loop owning the [`Endpoint`](kubepbx_sip::endpoint::Endpoint).
//! - `udp`, `tcp`: the transport drivers.
//! - [`http`]: the axum router (admin API, health, metrics).
//! - [`views`]: what the API shows; [`metrics`]: the Prometheus encoding.

mod core;
pub mod http;
pub mod metrics;
mod tcp;
mod udp;
pub mod views;

use crate::core::{Core, Inbound, Query};
use crate::metrics::MetricsSnapshot;
use crate::views::{ExtensionView, RegistrationView};
use kubepbx_api::store::{Store, StoreError};
use kubepbx_sip::endpoint::{Endpoint, EndpointConfig};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Packets queued between the transport drivers and the drive loop.
const INBOUND_QUEUE: usize = 8192;
/// Media commands queued for the media worker.
const MEDIA_QUEUE: usize = 1024;
/// Socket buffer asked for on the UDP socket (the kernel may grant less).
const UDP_BUFFER: usize = 4 << 20;

/// The SIP sockets: UDP and TCP on the same address and port.
#[derive(Debug)]
pub struct SipListeners {
    udp: UdpSocket,
    tcp: TcpListener,
}

impl SipListeners {
    /// Binds UDP and TCP on `addr`. With port 0, TCP takes the port the system gave UDP.
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        let udp = bind_udp(addr)?;
        let tcp_addr = SocketAddr::new(addr.ip(), udp.local_addr()?.port());
        let tcp = TcpListener::bind(tcp_addr).await?;
        Ok(SipListeners { udp, tcp })
    }

    /// The bound address (the same for both transports).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.udp.local_addr()
    }
}

fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: bursts of REGISTERs are absorbed by the kernel instead of dropped.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER);
    let _ = socket.set_send_buffer_size(UDP_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// A cheap, cloneable way to ask a running registrar for its state.
#[derive(Debug, Clone)]
pub struct RegistrarHandle {
    queries: mpsc::Sender<Query>,
    shutdown: CancellationToken,
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

    /// Every live binding; `None` when the registrar stopped.
    pub async fn registrations(&self) -> Option<Vec<RegistrationView>> {
        self.ask(Query::Registrations).await
    }

    /// Counters and gauges; `None` when the registrar stopped.
    pub async fn metrics(&self) -> Option<MetricsSnapshot> {
        self.ask(Query::Metrics).await
    }
}

/// Loads the store's view and starts serving SIP on `listeners` (see the module docs).
/// With `media`, every SDP of a call is rewritten by that relay (the endpoint config's
/// `anchor_media` must then be set).
pub async fn start(
    config: EndpointConfig,
    listeners: SipListeners,
    store: Arc<dyn Store>,
    media: Option<Arc<dyn kubepbx_media::MediaControl>>,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> Result<RegistrarHandle, StoreError> {
    let (snapshot, subscription) = store.watch().await?;
    let mut endpoint = Endpoint::new(config);
    endpoint.load(snapshot);
    let (inbound_tx, inbound_rx) = mpsc::channel::<Inbound>(INBOUND_QUEUE);
    let (queries_tx, queries_rx) = mpsc::channel(64);
    let udp = Arc::new(listeners.udp);
    let media = media.map(|relay| {
        let (tx, rx) = mpsc::channel(MEDIA_QUEUE);
        tasks.spawn(core::media_worker(relay, rx, inbound_tx.clone()));
        tx
    });
    let core = Core {
        endpoint,
        store,
        subscription,
        udp: Arc::clone(&udp),
        inbound: inbound_rx,
        queries: queries_rx,
        shutdown: shutdown.clone(),
        connections: HashMap::new(),
        undeliverable: 0,
        media,
    };
    tasks.spawn(core.run());
    tasks.spawn(udp::run(udp, inbound_tx.clone(), shutdown.clone()));
    tasks.spawn(tcp::run(
        listeners.tcp,
        inbound_tx,
        shutdown.clone(),
        tasks.clone(),
    ));
    Ok(RegistrarHandle {
        queries: queries_tx,
        shutdown,
    })
}
