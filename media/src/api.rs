//! The media control interface: what the SIP proxy asks of a relay, and what it gets back.
//!
//! One trait, [`MediaControl`], two transports: [`LocalRelay`](crate::LocalRelay) answers in
//! process (`kubepbx up`), and an HTTP client will answer for separate media replicas. Every
//! request and response type is serde (camelCase) so the HTTP transport is a thin JSON mapping.
//!
//! Flow for one call: `offer` (caller's INVITE SDP) → forward the returned SDP to the callee;
//! `answer` (callee's 200/183 SDP) → forward the returned SDP to the caller; `delete` on BYE,
//! CANCEL or failure. Re-INVITEs/UPDATEs repeat `offer`/`answer` from either side.

use crate::MediaError;
use kubepbx_api::time::UnixMillis;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// The control interface of a media relay.
#[async_trait::async_trait]
pub trait MediaControl: Send + Sync + std::fmt::Debug + 'static {
    /// An SDP offer from `side` (Caller for the initial INVITE; either side for re-INVITE/UPDATE).
    /// Creates the session if new. Returns the SDP to forward to the other side (pointing at the
    /// relay).
    async fn offer(&self, req: OfferRequest) -> Result<SdpResult, MediaError>;
    /// The SDP answer from `side`. Returns the SDP to forward to the offering side.
    async fn answer(&self, req: AnswerRequest) -> Result<SdpResult, MediaError>;
    /// Ends a session (BYE/CANCEL/failure); returns its final stats; `Ok(None)` if unknown.
    async fn delete(&self, session: &SessionId) -> Result<Option<SessionStats>, MediaError>;
    /// Live stats of one session; `Ok(None)` if unknown.
    async fn stats(&self, session: &SessionId) -> Result<Option<SessionStats>, MediaError>;
    /// Live stats of every session.
    async fn list(&self) -> Result<Vec<SessionStats>, MediaError>;
    /// Relay-wide counters (packets relayed, loss, ports) for `/metrics`.
    async fn metrics(&self) -> Result<crate::MetricsSnapshot, MediaError>;
}

/// Names a session. The proxy uses the Call-ID (plus tags); the relay treats it as opaque.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(pub String);

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One of the two parties of a call; each has its own leg (port pair) on the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Side {
    /// The party that sent the initial INVITE.
    Caller,
    /// The party that was called.
    Callee,
}

impl Side {
    /// The other party.
    pub fn other(self) -> Side {
        match self {
            Side::Caller => Side::Callee,
            Side::Callee => Side::Caller,
        }
    }

    /// 0 for the caller, 1 for the callee (array index and WAV channel).
    pub fn index(self) -> usize {
        match self {
            Side::Caller => 0,
            Side::Callee => 1,
        }
    }
}

/// An SDP offer passing through the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OfferRequest {
    /// The session (created if new).
    pub session: SessionId,
    /// Who sent this offer.
    pub side: Side,
    /// The SDP body as received.
    pub sdp: String,
    /// The signalling source IP of the sender: used instead of the SDP's `c=` address when that
    /// one is unusable (a hostname) or private while the sender is not (NAT).
    pub signalling_source: IpAddr,
    /// `Some` to record this session; only honoured when the session is created.
    pub recording: Option<RecordingRequest>,
}

/// Asks for a call to be recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingRequest {
    /// File name stem: the recording is `<recordings dir>/<id>.wav` (plus `<id>.json` metadata).
    /// Must be a plain name (letters, digits, `-`, `_`, `.`; not starting with `.`).
    pub id: String,
    /// Who called (left channel), as the proxy names them (e.g. `1001@pbx.example.com`).
    pub caller: String,
    /// Who was called (right channel).
    pub callee: String,
}

/// An SDP answer passing through the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnswerRequest {
    /// The session the offer created.
    pub session: SessionId,
    /// Who sent this answer.
    pub side: Side,
    /// The SDP body as received.
    pub sdp: String,
    /// The signalling source IP of the sender (see [`OfferRequest::signalling_source`]).
    pub signalling_source: IpAddr,
}

/// The rewritten SDP, pointing at the relay, to forward to the other party.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SdpResult {
    /// The SDP body.
    pub sdp: String,
}

/// Counters of one session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionStats {
    /// The session.
    pub session: SessionId,
    /// The caller's leg.
    pub caller: LegStats,
    /// The callee's leg.
    pub callee: LegStats,
    /// The recording id, when the session is being recorded.
    pub recording: Option<String>,
    /// When the session was created (wall clock).
    pub created_at: UnixMillis,
    /// When the last valid RTP or RTCP packet arrived on either leg.
    pub last_packet_at: Option<UnixMillis>,
}

/// Counters of one leg. "In" is from that party to the relay, "out" from the relay to that party.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LegStats {
    /// RTP packets received from the party.
    pub packets_in: u64,
    /// RTP bytes (UDP payload) received from the party.
    pub bytes_in: u64,
    /// RTP packets sent to the party.
    pub packets_out: u64,
    /// RTP bytes sent to the party.
    pub bytes_out: u64,
    /// RTP packets the party sent that never arrived, from sequence-number gaps.
    pub lost: u64,
    /// RTCP packets received from the party.
    pub rtcp_in: u64,
    /// RTCP packets sent to the party.
    pub rtcp_out: u64,
    /// Packets received on this leg and dropped: not RTP/RTCP, from a source that is not the
    /// latched one, or with nowhere to send them yet.
    pub dropped: u64,
}

/// Something the relay tells its owner without being asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RelayEvent {
    /// No RTP/RTCP flowed for the media timeout (or the call was never answered within the setup
    /// timeout): the session was closed and its ports returned. The proxy should BYE both sides.
    Timeout(SessionId, SessionStats),
}
