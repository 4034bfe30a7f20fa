//! Media anchoring, sans-IO: the proxy asks a media relay to rewrite every SDP it forwards.
//!
//! The endpoint cannot wait for the relay, so each SDP becomes a [`MediaCommand`] with an
//! operation number, and the message that carried it is parked. The driver performs the command
//! (in order) and hands the result back with [`Endpoint::handle_media_result`]; the parked
//! message then continues with the relay's SDP. A failed offer refuses the request (488 with the
//! relay's reason, 503 with `Retry-After` when the relay has no ports); a failed answer lets the
//! message through unchanged, so a call is never left half set up.

use super::{Endpoint, Now, Reply};
use crate::builder::ResponseBuilder;
use crate::message::{Request, Response};
use ezk_sip_types::Name;
use kubepbx_api::Transport;
use std::net::IpAddr;

/// Which party of a call an SDP comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The party that sent the initial INVITE.
    Caller,
    /// The party that answered it.
    Callee,
}

/// What the party that receives the relay's SDP can take: softphones want plain RTP/AVP,
/// browsers (WebSocket flows) WebRTC. Only the initial offer can need both, when a call forks
/// to a softphone and a browser at once; the relay then returns one SDP of each kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerMedia {
    /// Plain RTP (UDP, TCP, TLS phones).
    Rtp,
    /// WebRTC (phones on a WebSocket).
    WebRtc,
    /// Some of each.
    Either,
}

impl PeerMedia {
    /// What a phone on `transport` takes.
    pub fn of(transport: Transport) -> PeerMedia {
        match transport {
            Transport::Ws | Transport::Wss => PeerMedia::WebRtc,
            Transport::Udp | Transport::Tcp | Transport::Tls => PeerMedia::Rtp,
        }
    }

    /// What a set of phones on `transports` takes together (plain RTP for none).
    pub fn of_all(transports: impl IntoIterator<Item = Transport>) -> PeerMedia {
        let (mut rtp, mut webrtc) = (false, false);
        for t in transports {
            match PeerMedia::of(t) {
                PeerMedia::WebRtc => webrtc = true,
                _ => rtp = true,
            }
        }
        match (rtp, webrtc) {
            (true, true) => PeerMedia::Either,
            (false, true) => PeerMedia::WebRtc,
            _ => PeerMedia::Rtp,
        }
    }
}

/// The relay's rewritten SDP: `sdp`, plus a WebRTC one when an offer was for
/// [`PeerMedia::Either`] (`sdp` is then the plain one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySdp {
    /// The SDP to forward.
    pub sdp: String,
    /// The SDP for browsers, when it differs from `sdp`.
    pub webrtc: Option<String>,
}

impl RelaySdp {
    /// The SDP for a phone on `transport`.
    pub fn for_transport(&self, transport: Transport) -> &str {
        match (PeerMedia::of(transport), &self.webrtc) {
            (PeerMedia::WebRtc, Some(webrtc)) => webrtc,
            _ => &self.sdp,
        }
    }
}

impl From<String> for RelaySdp {
    fn from(sdp: String) -> Self {
        RelaySdp { sdp, webrtc: None }
    }
}

impl From<&str> for RelaySdp {
    fn from(sdp: &str) -> Self {
        RelaySdp::from(sdp.to_owned())
    }
}

/// A request to record a call, sent with the first offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRequest {
    /// Recording id (file name).
    pub id: String,
    /// Caller extension.
    pub caller: String,
    /// Callee extension.
    pub callee: String,
}

/// What the driver must ask the media relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaCommand {
    /// An SDP offer from `side`; answer with the SDP to forward to the other side.
    Offer {
        /// Operation number for [`Endpoint::handle_media_result`].
        op: u64,
        /// Media session (one per call).
        session: String,
        /// Who offers.
        side: Side,
        /// The offer.
        sdp: String,
        /// Signalling source address of the offering party.
        source: IpAddr,
        /// Record this call (first offer only).
        record: Option<RecordRequest>,
        /// What the party receiving the rewritten offer takes.
        peer: PeerMedia,
    },
    /// An SDP answer from `side`; answer with the SDP to forward to the offering side.
    Answer {
        /// Operation number for [`Endpoint::handle_media_result`].
        op: u64,
        /// Media session.
        session: String,
        /// Who answers.
        side: Side,
        /// The answer.
        sdp: String,
        /// Signalling source address of the answering party.
        source: IpAddr,
    },
    /// The call is over: release the session (no result expected).
    Delete {
        /// Media session.
        session: String,
    },
}

/// Why the relay could not take an SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaFailure {
    /// SIP status to refuse an offer with (488, 503, …).
    pub code: u16,
    /// Reason phrase (what the relay said).
    pub reason: String,
    /// `Retry-After` seconds for 503.
    pub retry_after: Option<u32>,
}

impl MediaFailure {
    /// The response refusing `request` for this failure (with `Retry-After` for a 503).
    pub(super) fn response<'a>(
        &'a self,
        request: &'a Request,
        source: std::net::SocketAddr,
    ) -> ResponseBuilder<'a> {
        let b = ResponseBuilder::new(request, source, self.code, &self.reason);
        match self.retry_after {
            Some(s) => b.header("Retry-After", s.to_string()),
            None => b,
        }
    }
}

/// Whether an SDP passing through is an offer or an answer.
#[derive(Debug)]
pub(super) enum Role {
    /// An offer for a party taking `PeerMedia`; the first of a call may ask for the call to
    /// be recorded.
    Offer(Option<RecordRequest>, PeerMedia),
    /// An answer.
    Answer,
}

/// An SDP for the relay: what it is, whose, and from where it came.
#[derive(Debug)]
pub(super) struct SdpFor {
    pub session: String,
    pub side: Side,
    pub sdp: String,
    pub source: IpAddr,
    pub role: Role,
}

/// A message waiting for the relay.
#[derive(Debug)]
pub(super) enum Parked {
    /// The initial INVITE: fork once the offer is rewritten.
    Fork { call: u64 },
    /// A provisional or 2xx response of a branch of the initial INVITE.
    BranchResponse {
        call: u64,
        index: usize,
        response: Response,
    },
    /// A request inside a dialog (re-INVITE, UPDATE with an offer; ACK with an answer).
    InDialog {
        call: u64,
        reply: Reply,
        request: Request,
        offer: bool,
    },
    /// A response to a request forwarded inside a dialog.
    RelayResponse { upstream: Reply, response: Response },
}

/// The SDP body of a message, when it carries one.
pub(super) fn sdp_of(headers: &crate::headers::Headers, body: &[u8]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    let is_sdp = headers
        .get_raw(&Name::CONTENT_TYPE)
        .next()
        .is_some_and(|ct| {
            ct.trim()
                .to_ascii_lowercase()
                .starts_with("application/sdp")
        });
    if !is_sdp {
        return None;
    }
    std::str::from_utf8(body).ok().map(str::to_owned)
}

impl Endpoint {
    /// The next command for the media relay.
    pub fn poll_media(&mut self) -> Option<MediaCommand> {
        self.media_commands.pop_front()
    }

    /// Asks the relay about `sdp` and parks `parked` until it answers.
    pub(super) fn media_request(&mut self, parked: Parked, sdp: SdpFor) {
        self.next_media_op += 1;
        let op = self.next_media_op;
        let SdpFor {
            session,
            side,
            sdp,
            source,
            role,
        } = sdp;
        let command = match role {
            Role::Offer(record, peer) => MediaCommand::Offer {
                op,
                session,
                side,
                sdp,
                source,
                record,
                peer,
            },
            Role::Answer => MediaCommand::Answer {
                op,
                session,
                side,
                sdp,
                source,
            },
        };
        self.media_commands.push_back(command);
        self.parked.insert(op, parked);
    }

    pub(super) fn media_delete(&mut self, session: String) {
        if self.config.anchor_media {
            self.media_commands
                .push_back(MediaCommand::Delete { session });
        }
    }

    /// The relay's result for operation `op`: the parked message continues.
    pub fn handle_media_result(
        &mut self,
        now: Now,
        op: u64,
        result: Result<RelaySdp, MediaFailure>,
    ) {
        let Some(parked) = self.parked.remove(&op) else {
            return;
        };
        if let Parked::Fork { call } = parked {
            match result {
                Ok(sdp) => self.fork(now, call, Some(sdp)),
                Err(failure) => self.refuse_call(now, call, &failure),
            }
            return;
        }
        let result = result.map(|r| r.sdp);
        match parked {
            Parked::Fork { .. } => {}
            Parked::BranchResponse {
                call,
                index,
                response,
            } => {
                let sdp = result.ok();
                self.branch_response(now, call, index, response, sdp.as_deref());
            }
            Parked::InDialog {
                call,
                reply,
                request,
                offer,
            } => match result {
                Ok(sdp) => self.forward_in_dialog(now, call, &reply, &request, Some(&sdp)),
                Err(failure) if offer => {
                    let b = failure.response(&request, reply.source.remote);
                    self.respond(now, &reply, b);
                }
                Err(_) => self.forward_in_dialog(now, call, &reply, &request, None),
            },
            Parked::RelayResponse { upstream, response } => {
                let sdp = result.ok();
                self.forward_relay_response(now, &upstream, &response, sdp.as_deref());
            }
        }
    }
}
