//! The SIP endpoint: the sans-IO heart of a registrar replica.
//!
//! A driver owns one [`Endpoint`] and feeds it:
//!
//! - [`Endpoint::handle_packet`] with every datagram or stream frame and the flow it came on;
//! - [`Endpoint::load`] / [`Endpoint::handle_store_event`] with the store's snapshot and changes;
//! - [`Endpoint::handle_timeout`] when [`Endpoint::poll_timeout`] says so.
//!
//! After each call it drains [`Endpoint::poll_transmit`] (bytes to send on a flow),
//! [`Endpoint::drain_writes`] (batched store writes) and [`Endpoint::poll_event`] (logs and
//! metrics). Nothing here blocks or reads a clock; [`Now`] carries both clocks in.
//!
//! Per request: ban check → parse → transaction match (retransmissions answered from the stored
//! response) → sanity checks (400, 416, 420) → method dispatch (REGISTER in `register.rs`,
//! OPTIONS 200, CANCEL 481, known-but-unsupported methods 405 with `Allow`, unknown 501).

mod auth_flow;
mod cluster;
mod events;
mod media;
mod proxy;
mod register;
#[cfg(test)]
mod tests;

pub use cluster::{ClusterConfig, REMOTE, is_remote};
pub use events::{
    BindingChange, CallSummary, DropReason, EndReason, EndpointEvent, METHOD_LABELS, Stats,
    method_label,
};
pub use media::{MediaCommand, MediaFailure, PeerMedia, RecordRequest, RelaySdp, Side};
pub use proxy::{Call, CallState, TIMER_C};

use crate::auth::{Algorithm, Authenticator, NonceConfig};
use crate::ban::{BanConfig, Bans};
use crate::builder::{ResponseBuilder, response_destination};
use crate::client::ClientTransactions;
use crate::flow::{Flow, Transmit};
use crate::location::Location;
use crate::message::{self, Message, Method, Request};
use crate::registrar::RegistrarConfig;
use crate::transaction::{Disposition, ServerTransactions, TxKey};
use bytes::Bytes;
use ezk_sip_types::Name;
use kubepbx_api::store::{Event, Snapshot, Write};
use kubepbx_api::time::UnixMillis;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Methods this endpoint answers itself.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, UPDATE, INFO, REGISTER, OPTIONS";

/// How often bans and counters are tidied.
const HOUSEKEEPING: Duration = Duration::from_secs(10);

/// Both clocks, as inputs: monotonic for timers, wall-clock for binding lifetimes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time.
    pub mono: Instant,
    /// Wall-clock time.
    pub wall: UnixMillis,
}

impl Now {
    /// Both clocks advanced by `d` (for tests and simulations).
    pub fn plus(self, d: Duration) -> Now {
        Now {
            mono: self.mono + d,
            wall: self.wall.plus(d),
        }
    }
}

/// Everything an endpoint needs to know about its place in the PBX.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// This replica's id (recorded as the owner of the flows it receives).
    pub replica: String,
    /// Domain for requests addressed to an IP address or another name of this PBX.
    pub default_domain: String,
    /// Host names and addresses that mean "this PBX" (the advertised host, local addresses).
    pub local_hosts: Vec<String>,
    /// `host:port` of this replica as phones reach it: written into `Via` and `Record-Route`.
    pub advertise: String,
    /// `host:port` phones reach SIP over TLS at (`--sip-tls`), for the `Via` and
    /// `Record-Route` of TLS flows; `None` without a TLS listener.
    pub advertise_tls: Option<String>,
    /// Send every SDP through the media relay ([`Endpoint::poll_media`]); without it SDP
    /// passes through untouched.
    pub anchor_media: bool,
    /// Registration lifetimes.
    pub registrar: RegistrarConfig,
    /// Brute-force protection.
    pub bans: BanConfig,
    /// Nonce lifetime and replay window.
    pub nonce: NonceConfig,
    /// Secret for nonces (shared by every replica of a cluster).
    pub secret: [u8; 32],
    /// This replica's nonce instance tag.
    pub instance: u16,
    /// Digest algorithms offered in each challenge, one `WWW-Authenticate` each, in this order
    /// (default SHA-256 then MD5: clients that read only the last challenge get MD5). Clients
    /// that read only the *first* challenge and know only MD5 (sipp, some old phones) need
    /// `[Md5]`. An empty list means the default.
    pub challenge: Vec<Algorithm>,
    /// Set when this replica is one of several sharing etcd (`kubepbx registrar`): flows of
    /// other replicas are reached through them (see `cluster.rs`).
    pub cluster: Option<ClusterConfig>,
}

/// The default challenge order: SHA-256 first, MD5 last.
pub const DEFAULT_CHALLENGE: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Md5];

/// The sans-IO SIP endpoint (registrar for now; the proxy joins it later).
#[derive(Debug)]
pub struct Endpoint {
    config: EndpointConfig,
    auth: Authenticator,
    txs: ServerTransactions,
    clients: ClientTransactions,
    calls: proxy::Calls,
    cluster: Option<cluster::Cluster>,
    location: Location,
    bans: Bans,
    transmits: VecDeque<Transmit>,
    media_commands: VecDeque<MediaCommand>,
    parked: std::collections::HashMap<u64, media::Parked>,
    next_media_op: u64,
    writes: Vec<Write>,
    events: VecDeque<EndpointEvent>,
    stats: Stats,
    tag_counter: u64,
    tag_salt: u32,
    next_housekeeping: Option<Instant>,
}

/// The salt of a replica's tags and branches. Replicas of a cluster share the secret: the
/// replica id keeps their tags and branches apart (and tells a peer whose branch it is).
pub(super) fn tag_salt(secret: &[u8; 32], replica: &str) -> u32 {
    replica.bytes().fold(
        u32::from_le_bytes([secret[0], secret[1], secret[2], secret[3]]),
        |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193),
    )
}

impl Endpoint {
    /// A new endpoint with an empty location view (call [`Self::load`] before serving).
    pub fn new(config: EndpointConfig) -> Self {
        let auth = Authenticator::new(config.secret, config.instance, config.nonce);
        let tag_salt = tag_salt(&config.secret, &config.replica);
        let cluster = config
            .cluster
            .as_ref()
            .map(|c| cluster::Cluster::new(c, &config.replica));
        Endpoint {
            cluster,
            bans: Bans::new(config.bans),
            auth,
            config,
            txs: ServerTransactions::new(),
            clients: ClientTransactions::new(),
            calls: proxy::Calls::default(),
            location: Location::new(),
            transmits: VecDeque::new(),
            media_commands: VecDeque::new(),
            parked: std::collections::HashMap::new(),
            next_media_op: 0,
            writes: Vec::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            tag_counter: 0,
            tag_salt,
            next_housekeeping: None,
        }
    }

    /// Replaces the location view with a store snapshot.
    pub fn load(&mut self, snapshot: Snapshot) {
        self.location.load(snapshot);
    }

    /// Applies a store change. Returns `false` when the store asks for a resync: the driver
    /// must call [`Self::load`] with a fresh snapshot.
    pub fn handle_store_event(&mut self, event: Event) -> bool {
        self.location.apply(event)
    }

    /// The location view (read-only).
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Counters so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Number of live server transactions.
    pub fn transaction_count(&self) -> usize {
        self.txs.len()
    }

    /// Calls in progress (ringing or answered).
    pub fn calls(&self) -> impl Iterator<Item = &Call> {
        self.calls.iter()
    }

    /// Number of calls in progress.
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// Number of sources banned at `now`.
    pub fn banned_count(&self, now: Instant) -> usize {
        self.bans.banned_count(now)
    }

    /// The next bytes to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        while let Some(t) = self.transmits.pop_front() {
            if let Some(t) = self.route_transmit(t) {
                return Some(t);
            }
        }
        None
    }

    /// Store writes decided since the last call, in order.
    pub fn drain_writes(&mut self) -> Vec<Write> {
        std::mem::take(&mut self.writes)
    }

    /// The next event to log or count.
    pub fn poll_event(&mut self) -> Option<EndpointEvent> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.txs.poll_timeout(),
            self.clients.poll_timeout(),
            self.calls.next_timer_c(),
            self.next_housekeeping,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Fires due timers: response retransmissions, transaction expiry, housekeeping.
    pub fn handle_timeout(&mut self, now: Now) {
        let mut out = Vec::new();
        self.txs.handle_timeout(now.mono, &mut out);
        let timed_out = self.clients.handle_timeout(now.mono, &mut out);
        self.transmits.extend(out);
        self.client_timeouts(now, timed_out);
        self.expire_calls(now);
        if self.next_housekeeping.is_some_and(|at| at <= now.mono) {
            self.bans.expire(now.mono);
            self.txs.shrink();
            self.next_housekeeping = Some(now.mono + HOUSEKEEPING);
        }
    }

    /// Handles one datagram or stream frame received on `flow`.
    pub fn handle_packet(&mut self, now: Now, flow: Flow, bytes: Bytes) {
        self.handle_message(now, flow, message::parse(bytes));
    }

    /// Handles one datagram or stream frame already parsed with [`message::parse`] (drivers
    /// parse on their reading task, so this endpoint's task only decides).
    pub fn handle_message(
        &mut self,
        now: Now,
        flow: Flow,
        parsed: Result<Message, message::ParseError>,
    ) {
        if self.next_housekeeping.is_none() {
            self.next_housekeeping = Some(now.mono + HOUSEKEEPING);
        }
        if self.bans.is_banned(flow.remote.ip(), now.mono) {
            self.stats.drop(DropReason::Banned);
            return;
        }
        if flow.is_internal() && !self.is_peer(flow.remote) {
            self.stats.drop(DropReason::NotAReplica);
            return;
        }
        match parsed {
            Ok(Message::Request(request))
                if flow.is_internal() && self.hop_request(flow, &request) => {}
            Ok(Message::Request(request)) => self.handle_request(now, flow, request),
            Ok(Message::Response(response)) => self.handle_response(now, response),
            Err(_) => self.stats.drop(DropReason::Unparseable),
        }
    }

    fn handle_request(&mut self, now: Now, flow: Flow, mut request: Request) {
        self.stats.requests[method_label(&request.method)] += 1;
        let essentials = match request.take_essentials() {
            Ok(e) => e,
            Err(problem) => {
                // Without a readable Via there is no transaction and no sensible destination
                // beyond the source itself; answer there when a Via line exists at all.
                if request.header(&Name::VIA).is_some() && request.method != Method::Ack {
                    let reason = problem.to_string();
                    let bytes = ResponseBuilder::new(&request, flow.remote, 400, &reason).build();
                    self.stats.response(400);
                    self.events.push_back(EndpointEvent::BadRequest {
                        source: flow.remote,
                        reason,
                    });
                    self.transmits.push_back(Transmit { flow, bytes });
                } else {
                    self.stats.drop(DropReason::Unparseable);
                }
                return;
            }
        };
        if self.cluster.is_some() && self.hop_to_owner(flow, &request, &essentials) {
            return;
        }
        let key = TxKey::for_request(&request.method, &essentials);
        match self.txs.on_request(key, &request.method, flow, now.mono) {
            Disposition::New => {}
            Disposition::Retransmission(resend) => {
                self.stats.retransmissions += 1;
                self.transmits.extend(resend);
                return;
            }
            Disposition::AckAbsorbed => return,
        }
        let in_dialog = essentials.to.tag.is_some();
        if request.method == Method::Ack && !in_dialog {
            self.stats.drop(DropReason::StrayAck);
            return;
        }
        // Between replicas, responses go back where the request came from.
        let destination = if flow.is_internal() {
            flow.remote
        } else {
            response_destination(&essentials.via, flow.remote, flow.is_reliable())
        };
        let reply = Reply {
            key,
            flow: flow.with_remote(destination),
            source: flow,
            to_tag: self.next_tag(),
        };

        if let Some(defect) = request.defect {
            let code = if defect == message::Defect::UriScheme {
                416
            } else {
                400
            };
            let reason = defect.to_string();
            self.events.push_back(EndpointEvent::BadRequest {
                source: flow.remote,
                reason: reason.clone(),
            });
            self.respond(
                now,
                &reply,
                ResponseBuilder::new(&request, flow.remote, code, &reason),
            );
            return;
        }
        if let Some(unsupported) = unsupported_requires(&request) {
            let builder = ResponseBuilder::new(&request, flow.remote, 420, "Bad Extension")
                .header("Unsupported", unsupported);
            self.respond(now, &reply, builder);
            return;
        }

        match request.method {
            Method::Register => self.handle_register(now, &reply, &request, &essentials),
            Method::Invite if !in_dialog => self.handle_invite(now, &reply, &request, &essentials),
            Method::Cancel => self.handle_cancel(now, &reply, &request, &essentials),
            Method::Ack | Method::Bye | Method::Invite | Method::Update | Method::Info
                if in_dialog =>
            {
                self.handle_in_dialog(now, &reply, &request, &essentials)
            }
            Method::Options => {
                let builder = ResponseBuilder::new(&request, flow.remote, 200, "OK")
                    .header("Allow", ALLOW)
                    .header("Accept", "application/sdp");
                self.respond(now, &reply, builder);
            }
            Method::Other(_) => {
                let builder = ResponseBuilder::new(&request, flow.remote, 501, "Not Implemented")
                    .header("Allow", ALLOW);
                self.respond(now, &reply, builder);
            }
            _ => {
                let builder =
                    ResponseBuilder::new(&request, flow.remote, 405, "Method Not Allowed")
                        .header("Allow", ALLOW);
                self.respond(now, &reply, builder);
            }
        }
    }

    /// Sends a response within the request's server transaction.
    fn respond(&mut self, now: Now, reply: &Reply, builder: ResponseBuilder<'_>) {
        let builder = builder.to_tag(&reply.to_tag);
        let code = builder.code();
        let bytes = builder.build();
        self.stats.response(code);
        self.txs
            .on_response(&reply.key, code, bytes.clone(), now.mono);
        self.transmits.push_back(Transmit {
            flow: reply.flow,
            bytes,
        });
    }

    fn next_tag(&mut self) -> String {
        self.tag_counter += 1;
        // The salt, then the counter, in hex (without the formatting machinery: one per request).
        let mut raw = [0u8; 12];
        raw[..4].copy_from_slice(&self.tag_salt.to_be_bytes());
        raw[4..].copy_from_slice(&self.tag_counter.to_be_bytes());
        hex::encode(raw)
    }
}

/// Where and how to answer one request.
#[derive(Debug, Clone)]
struct Reply {
    key: TxKey,
    /// Destination for responses (RFC 3261 §18.2.2 / RFC 3581).
    flow: Flow,
    /// The flow the request arrived on (source address as seen).
    source: Flow,
    to_tag: String,
}

/// Option tags in `Require` (and `Proxy-Require`) this endpoint does not support: none yet.
fn unsupported_requires(request: &Request) -> Option<String> {
    let mut unsupported = Vec::new();
    for name in [Name::REQUIRE, Name::PROXY_REQUIRE] {
        for value in request.headers.get_raw(&name) {
            unsupported.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned),
            );
        }
    }
    (!unsupported.is_empty()).then(|| unsupported.join(", "))
}
