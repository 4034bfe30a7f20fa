//! kubepbx media relay: anchors the RTP of calls the SIP proxy routes.
//!
//! The proxy drives it through [`MediaControl`] (offer / answer / delete / stats), in process
//! with [`LocalRelay`] or, for separate media replicas, over HTTP (same serde types). Each call
//! is a session with two legs, one per party. A leg is plain RTP/AVP (softphones: a pair of UDP
//! ports from the configured range, symmetric RTP and latching for NAT, RTCP alongside or
//! rtcp-mux) or WebRTC (browsers: ICE-lite, DTLS-SRTP, rtcp-mux, all WebRTC legs on one UDP port
//! demultiplexed by ICE username). Codecs pass through: browsers are offered G.711 so a
//! softphone↔browser call needs no transcoding; payload types are mapped where the legs number
//! a codec differently. Calls can be recorded to stereo WAV (from decrypted RTP on WebRTC legs).
//!
//! # Layout
//!
//! Sans-IO (no sockets, no clock; `now` is an argument):
//! - [`sdp`]: parse an offer/answer (plain or WebRTC), rewrite a plain one to point at the relay
//! - [`flavour`]: the SDP a party on the other kind of leg gets; payload type maps ([`flavour::PtMap`])
//! - [`session`]: one call's core — legs, [`latch`]ing, counters, [`rtp`] loss, media timeout
//! - [`webrtc`]: one WebRTC leg, a str0m `Rtc` in RTP mode (ICE-lite, DTLS-SRTP), its failures
//! - [`stun`]: the ICE username of a connectivity check, for routing
//! - [`ports`]: the port-pair pool with RAII leases
//! - [`recording`] (alignment of both sides) and [`g711`] (decode tables)
//!
//! Drivers (tokio):
//! - [`relay`]: [`LocalRelay`], the [`MediaControl`] implementation; binds sockets, spawns tasks
//! - `threads`: the relay's own threads, one single-threaded runtime per core, where session
//!   tasks run (spread round-robin; `follow`, sans-IO: when a session moves to the thread that
//!   reads its browser's datagrams)
//! - `driver`: the task per session — commands, plain sockets' readiness and the session's
//!   WebRTC datagrams → cores → `sendto`; `negotiate`: its offer/answer half (which leg gets
//!   which SDP flavour); `wakeups`: a waker per event source, so a wake-up polls what fired;
//!   `udp`: batched reads (`recvmmsg`) into per-thread buffers, sends that never wait
//! - [`hub`]: the task per relay thread that reads that thread's copy of the shared WebRTC
//!   port and routes each datagram to its session (by ICE username, then by source address)
//! - [`recorder`]: the WAV writer task per recorded call
//! - [`pool`]: [`MediaPool`], sessions spread over several media replicas reached over HTTP
//!
//! Data flow: `offer` → [`sdp::parse`] → lease port pairs and bind sockets for plain legs →
//! spawn session task → it makes the WebRTC legs it needs and writes the SDP for the other
//! party; plain packets → session task → [`session::Session::handle_packet`] → send from the
//! other leg's socket, or encrypt for its browser; browser datagrams → hub → session task → str0m
//! → [`session::Session::handle_webrtc_rtp`] → plain socket or the other browser (and a copy to
//! the recorder); deadline passes → [`RelayEvent::Timeout`], WebRTC leg fails →
//! [`RelayEvent::Failed`] to the owner.

pub mod api;
pub mod config;
pub mod control;
mod driver;
pub mod error;
pub mod flavour;
mod follow;
pub mod g711;
pub mod hub;
pub mod inbox;
pub mod latch;
pub mod metrics;
mod negotiate;
mod pacing;
pub mod pool;
pub mod ports;
pub mod recorder;
pub mod recording;
pub mod relay;
mod restamp;
pub mod rtp;
pub mod sdp;
pub mod session;
pub mod stun;
mod threads;
pub mod udp;
mod wakeups;
pub mod webrtc;

pub use api::*;
pub use config::{MAX_BATCH_INTERVAL, RelayConfig, parse_port_range};
pub use error::MediaError;
pub use metrics::MetricsSnapshot;
pub use pool::{MediaPool, MediaReplica};
pub use relay::{LocalRelay, RelayEvents};
