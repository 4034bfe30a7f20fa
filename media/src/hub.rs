//! The WebRTC hubs: the UDP port every WebRTC leg of the relay shares, open once per relay
//! thread, and on each thread the task that reads its copy and hands each datagram to the
//! session that owns the leg.
//!
//! ```text
//!            ┌──────────── hub task k ──────────┐
//! browsers ─►│ recv ─► STUN Binding request?    │   ufrag → route   (shared map, set by
//!  (kernel   │          yes: route by USERNAME  │                   the session tasks)
//!  picks k   │               and learn the      │   source → route  (hub k's own map)
//!  by their  │               source address     │
//!  address)  │          no:  route by source    │──► session task (bounded, try_send)
//!            └──────────────────────────────────┘      owns the leg's str0m Rtc, sends
//!                                                       its datagrams on its thread's copy
//! ```
//!
//! Demultiplexing follows ICE: a browser's first datagrams are connectivity checks whose
//! USERNAME starts with the relay leg's ufrag ([`crate::stun::binding_ufrag`]); the address they
//! come from is then remembered, and DTLS and SRTP/SRTCP from it are routed by address. Both
//! lookups are one hash-map access; no datagram is shown to more than one leg. The leg's ICE
//! agent verifies each check (MESSAGE-INTEGRITY) and ignores a datagram its pair does not
//! match, so a forged check can at worst route a stranger's datagrams to a leg that drops
//! them. Learned addresses are bounded and forgotten once their session ends (a sweep every
//! [`SWEEP_EVERY`]).
//!
//! The copies of the port are one `SO_REUSEPORT` group (`udp::bind_group`): the
//! kernel delivers all datagrams of one browser address to the same copy, so each hub learns
//! the addresses it sees. Every datagram says which hub read it ([`Inbound::hub`]); a session
//! on another thread follows its browser there (module `follow`), after which a browser's
//! datagram is read, decrypted and relayed on one thread, without a wake-up of another.
//!
//! Decryption and everything else per packet happens in the session task: a hub only reads
//! (batches of datagrams with `recvmmsg`, see the `udp` module), looks up and queues. A full
//! session queue ([`inbox`]) drops the datagram (counted), so one slow call never stalls the
//! others. Sending needs no hub: a session task sends on its thread's copy (`send_to` on a UDP
//! socket is one datagram, safe from any task; every copy has the same address). The sockets'
//! buffers are enlarged ([`SOCKET_BUFFER`]): they take every browser's datagrams.

use crate::api::Side;
use crate::inbox;
use crate::metrics::RelayMetrics;
use crate::udp::Reader;
use crate::udp::Socket;
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Reads (of up to [`crate::udp::BATCH`] datagrams) per wake before looking at shutdown and
/// the sweep.
const READS: usize = 8;
/// Receive and send buffer asked for each copy of the shared port: browsers' datagrams wait
/// there while the hub's thread is busy (the kernel's default, about 200 KiB, holds only a few
/// hundred datagrams, which a thousand browsers send in 10 ms). The kernel caps it at
/// `net.core.rmem_max` / `wmem_max`.
pub const SOCKET_BUFFER: usize = 4 << 20;
/// Bytes of the buffer that routed datagrams are copied into, a new one when it is full: one
/// allocation per about a hundred datagrams rather than one each.
const ARENA: usize = 64 * crate::udp::MAX_DATAGRAM;
/// Source addresses remembered at most by one hub (across all legs).
pub const MAX_ADDRESSES: usize = 65_536;
/// How often addresses of ended sessions are forgotten.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// A datagram for a session's WebRTC leg.
#[derive(Debug)]
pub struct Inbound {
    /// Which leg of the session.
    pub side: Side,
    /// Where it came from.
    pub source: SocketAddr,
    /// When it was read.
    pub at: Instant,
    /// The datagram.
    pub data: Bytes,
    /// The hub (relay thread) that read it.
    pub hub: usize,
}

/// Where the datagrams of one leg go.
#[derive(Debug, Clone)]
pub struct Route {
    /// The leg within its session.
    pub side: Side,
    /// The session task's queue.
    pub tx: inbox::Sender<Inbound>,
}

/// The session tasks' handle on the hubs: the port's copies and the ufrag table.
#[derive(Debug, Clone)]
pub struct HubHandle {
    sockets: Arc<[Socket]>,
    ufrags: Arc<Mutex<HashMap<String, Route>>>,
}

impl HubHandle {
    /// The copy of the port that relay thread `thread` sends from.
    pub(crate) fn socket(&self, thread: usize) -> &Socket {
        &self.sockets[thread % self.sockets.len()]
    }

    /// Routes checks for `ufrag` to `route`; `false` (and nothing changed) when the ufrag is
    /// taken.
    pub fn register(&self, ufrag: &str, route: Route) -> bool {
        let mut map = self.ufrags.lock().unwrap_or_else(|e| e.into_inner());
        if map.contains_key(ufrag) {
            return false;
        }
        map.insert(ufrag.to_owned(), route);
        true
    }

    /// Stops routing checks for `ufrag`.
    pub fn unregister(&self, ufrag: &str) {
        let mut map = self.ufrags.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(ufrag);
    }

    /// Whether `ufrag` is routed (tests).
    pub fn is_registered(&self, ufrag: &str) -> bool {
        let map = self.ufrags.lock().unwrap_or_else(|e| e.into_inner());
        map.contains_key(ufrag)
    }
}

/// A hub task: one relay thread's reader of the shared port.
#[derive(Debug)]
pub struct Hub {
    /// Its relay thread, and the copy of the port it reads.
    index: usize,
    handle: HubHandle,
    addresses: HashMap<SocketAddr, Route>,
    /// Where datagrams are copied out of the thread's read buffers (see [`ARENA`]).
    arena: BytesMut,
    metrics: Arc<RelayMetrics>,
    shutdown: CancellationToken,
}

impl Hub {
    /// A hub for each of `sockets` (the copies of the port, in relay thread order, each
    /// registered with its thread's reactor); run hub k on thread k with [`Hub::run`].
    pub(crate) fn new(
        sockets: Vec<Socket>,
        metrics: &Arc<RelayMetrics>,
        shutdown: &CancellationToken,
    ) -> (Vec<Hub>, HubHandle) {
        let handle = HubHandle {
            sockets: sockets.into(),
            ufrags: Arc::default(),
        };
        let hubs = (0..handle.sockets.len())
            .map(|index| Hub {
                index,
                handle: handle.clone(),
                addresses: HashMap::new(),
                arena: BytesMut::new(),
                metrics: metrics.clone(),
                shutdown: shutdown.clone(),
            })
            .collect();
        (hubs, handle)
    }

    fn socket(&self) -> &Socket {
        self.handle.socket(self.index)
    }

    /// Reads and routes until shutdown.
    pub async fn run(mut self) {
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                _ = sweep.tick() => self.sweep(),
                ready = self.socket().readable() => {
                    if ready.is_err() {
                        break;
                    }
                    self.drain();
                }
            }
        }
    }

    fn drain(&mut self) {
        let mut dropped = 0u64;
        let now = Instant::now();
        Reader::with(|reader| {
            for _ in 0..READS {
                let more = match reader.read(self.socket()) {
                    Ok(more) => more,
                    Err(e) => {
                        tracing::debug!(target: "media", error = %e, "WebRTC socket recv failed");
                        false
                    }
                };
                for (source, data) in reader.datagrams() {
                    let data = self.keep(data);
                    if !self.route(source, data, now) {
                        dropped += 1;
                    }
                }
                if !more {
                    break;
                }
            }
        });
        RelayMetrics::add(&self.metrics.webrtc_dropped, dropped);
    }

    /// `data` as an owned buffer, copied into the arena.
    fn keep(&mut self, data: &[u8]) -> Bytes {
        if self.arena.capacity() - self.arena.len() < data.len() {
            self.arena = BytesMut::with_capacity(ARENA.max(data.len()));
        }
        self.arena.extend_from_slice(data);
        self.arena.split().freeze()
    }

    /// Hands one datagram to its leg; `false` when it was dropped. A STUN check names its leg
    /// by ICE username and teaches the hub its source address; everything else (DTLS, SRTP) is
    /// routed by that address without a lock, an allocation or a reference count per packet.
    fn route(&mut self, source: SocketAddr, data: Bytes, at: Instant) -> bool {
        // Only when the learned-address table is full is a check's route used without it.
        let mut unlearned = None;
        if let Some(ufrag) = crate::stun::binding_ufrag(&data) {
            let found = {
                let map = self.handle.ufrags.lock().unwrap_or_else(|e| e.into_inner());
                map.get(ufrag).cloned()
            };
            let Some(route) = found else {
                tracing::trace!(target: "media", %source, %ufrag, "STUN check for an unknown ICE username dropped");
                return false;
            };
            if self.addresses.len() < MAX_ADDRESSES || self.addresses.contains_key(&source) {
                self.addresses.insert(source, route);
            } else {
                unlearned = Some(route);
            }
        }
        let Some(route) = unlearned.as_ref().or_else(|| self.addresses.get(&source)) else {
            tracing::trace!(target: "media", %source, "datagram from an unknown WebRTC source dropped");
            return false;
        };
        let inbound = Inbound {
            side: route.side,
            source,
            at,
            data,
            hub: self.index,
        };
        match route.tx.try_send(inbound) {
            Ok(()) => true,
            Err(inbox::SendError::Full) => false,
            Err(inbox::SendError::Closed) => {
                self.addresses.remove(&source);
                false
            }
        }
    }

    fn sweep(&mut self) {
        self.addresses.retain(|_, route| !route.tx.is_closed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hub on a loopback socket of its own.
    async fn hub() -> (Hub, HubHandle) {
        let socket = Socket::bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let (mut hubs, handle) = Hub::new(
            vec![socket],
            &Arc::new(RelayMetrics::default()),
            &CancellationToken::new(),
        );
        (hubs.remove(0), handle)
    }

    #[tokio::test]
    async fn kept_datagrams_stay_intact_when_the_arena_fills() {
        let (mut hub, _handle) = hub().await;
        let datagram = |i: usize| vec![u8::try_from(i % 251).unwrap(); 1000 + i % 500];
        // Enough to fill several arenas.
        let kept: Vec<Bytes> = (0..(4 * ARENA / 1000))
            .map(|i| hub.keep(&datagram(i)))
            .collect();
        for (i, bytes) in kept.iter().enumerate() {
            assert_eq!(bytes[..], datagram(i)[..], "datagram {i}");
        }
    }

    #[tokio::test]
    async fn routes_by_ufrag_then_by_address_and_forgets_ended_sessions() {
        let (mut hub, handle) = hub().await;
        let (tx, mut rx) = inbox::channel(4);
        assert!(handle.register(
            "leg1",
            Route {
                side: Side::Callee,
                tx
            }
        ));
        let (other, _other_rx) = inbox::channel(4);
        assert!(!handle.register(
            "leg1",
            Route {
                side: Side::Caller,
                tx: other
            }
        ));
        let browser: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let stranger: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        // DTLS before any check: unknown.
        assert!(!hub.route(
            browser,
            Bytes::from_static(&[22, 254, 253, 0]),
            Instant::now()
        ));
        let check = stun_check(b"leg1:brws");
        assert!(hub.route(browser, Bytes::from(check), Instant::now()));
        assert_eq!(rx.try_recv().unwrap().side, Side::Callee);
        assert!(hub.route(
            browser,
            Bytes::from_static(&[22, 254, 253, 0]),
            Instant::now()
        ));
        assert_eq!(rx.try_recv().unwrap().data[0], 22);
        assert!(!hub.route(
            stranger,
            Bytes::from_static(&[22, 254, 253, 0]),
            Instant::now()
        ));
        assert!(!hub.route(
            stranger,
            Bytes::from(stun_check(b"nobody:x")),
            Instant::now()
        ));
        drop(rx);
        hub.sweep();
        assert!(hub.addresses.is_empty());
        handle.unregister("leg1");
        assert!(!handle.is_registered("leg1"));
    }

    fn stun_check(username: &[u8]) -> Vec<u8> {
        let mut attrs = vec![0x00, 0x06, 0x00, username.len() as u8];
        attrs.extend_from_slice(username);
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        m.extend_from_slice(&[1; 12]);
        m.extend_from_slice(&attrs);
        m
    }
}
