//! kubepbx media relay: anchors the RTP of calls the SIP proxy routes.
//!
//! The proxy drives it through [`MediaControl`] (offer / answer / delete / stats), in process
//! with [`LocalRelay`] or, for separate media replicas, over HTTP (same serde types). Each call
//! is a session with two legs, one per party, each a pair of UDP ports from the configured
//! range; packets from one party are relayed unchanged to the other with symmetric RTP and
//! latching (NAT), RTCP alongside (own port, or rtcp-mux). Calls can be recorded to stereo WAV.
//!
//! # Layout
//!
//! Sans-IO (no sockets, no clock; `now` is an argument):
//! - [`sdp`]: parse an offer/answer, rewrite it to point at the relay
//! - [`session`]: one call's core — legs, [`latch`]ing, counters, [`rtp`] loss, media timeout
//! - [`ports`]: the port-pair pool with RAII leases
//! - [`recording`] (alignment of both sides) and [`g711`] (decode tables)
//!
//! Drivers (tokio):
//! - [`relay`]: [`LocalRelay`], the [`MediaControl`] implementation; binds sockets, spawns tasks
//! - `driver`: the task per session — socket readiness → core → `try_send_to`
//! - [`recorder`]: the WAV writer task per recorded call
//! - [`pool`]: [`MediaPool`], sessions spread over several media replicas reached over HTTP
//!
//! Data flow: `offer` → [`sdp::parse`] → lease 2 port pairs, bind 4 sockets → spawn session task
//! → [`sdp::ParsedSdp::rewrite`]; packets → session task → [`session::Session::handle_packet`] →
//! send from the other leg's socket (and a copy to the recorder); deadline passes →
//! [`RelayEvent::Timeout`] to the owner.

pub mod api;
pub mod config;
pub mod control;
mod driver;
pub mod error;
pub mod g711;
pub mod latch;
pub mod metrics;
pub mod pool;
pub mod ports;
pub mod recorder;
pub mod recording;
pub mod relay;
pub mod rtp;
pub mod sdp;
pub mod session;

pub use api::*;
pub use config::{RelayConfig, parse_port_range};
pub use error::MediaError;
pub use metrics::MetricsSnapshot;
pub use pool::{MediaPool, MediaReplica};
pub use relay::{LocalRelay, RelayEvents};
