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
    /// What the party receiving the returned SDP can take. Only used when this offer creates
    /// the other party's leg (the initial INVITE); later offers follow that leg's known kind.
    #[serde(default)]
    pub peer: PeerMedia,
}

/// What kind of media the party an offer is forwarded to takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PeerMedia {
    /// Plain RTP/AVP: a softphone (the default, and what older proxies mean).
    #[default]
    Rtp,
    /// WebRTC (ICE, DTLS-SRTP): a browser, e.g. a contact registered over WebSocket.
    WebRtc,
    /// Either: the offer is forked to softphones and browsers at once. The result carries both
    /// SDPs; the first answer decides which kind the leg becomes.
    Either,
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
///
/// For an offer: with [`PeerMedia::Rtp`] `sdp` is plain RTP/AVP; with [`PeerMedia::WebRtc`]
/// it is a WebRTC SDP; with [`PeerMedia::Either`] `sdp` is plain and `webrtc_sdp` the WebRTC
/// one (send each fork the one its transport takes). An answer has `sdp` only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SdpResult {
    /// The SDP body.
    pub sdp: String,
    /// The WebRTC flavour of the same offer, for browser forks ([`PeerMedia::Either`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webrtc_sdp: Option<String>,
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
    /// latched one, with nowhere to send them yet, or of a payload type the other leg did not
    /// negotiate.
    ///
    /// On a WebRTC leg, packets are counted after decryption (bytes: the RTP packet without
    /// SRTP's authentication tag), RTCP is SRTCP, and `rtcp_out` is the leg's own reports.
    pub dropped: u64,
}

/// Something the relay tells its owner without being asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RelayEvent {
    /// No RTP/RTCP flowed for the media timeout (or the call was never answered within the setup
    /// timeout): the session was closed and its ports returned. The proxy should BYE both sides.
    Timeout(SessionId, SessionStats),
    /// A WebRTC leg failed (ICE or DTLS: no connectivity check or handshake within the connect
    /// timeout, a DTLS error, ICE disconnected longer than the media timeout, the browser
    /// closed the connection); the reason in words. The session was closed and its resources
    /// returned. The proxy should BYE both sides.
    Failed(SessionId, String, SessionStats),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_json_still_parses_and_new_fields_are_camel_case() {
        let old = r#"{"session":"s","side":"caller","sdp":"v=0","signallingSource":"127.0.0.1","recording":null}"#;
        let req: OfferRequest = serde_json::from_str(old).unwrap();
        assert_eq!(req.peer, PeerMedia::Rtp);
        let json = serde_json::to_string(&OfferRequest {
            peer: PeerMedia::WebRtc,
            ..req
        })
        .unwrap();
        assert!(json.contains(r#""peer":"webRtc""#), "{json}");
        assert_eq!(
            serde_json::to_string(&PeerMedia::Either).unwrap(),
            r#""either""#
        );

        let plain: SdpResult = serde_json::from_str(r#"{"sdp":"v=0"}"#).unwrap();
        assert_eq!(plain.webrtc_sdp, None);
        assert_eq!(serde_json::to_string(&plain).unwrap(), r#"{"sdp":"v=0"}"#);
        let both = SdpResult {
            sdp: "a".into(),
            webrtc_sdp: Some("b".into()),
        };
        let json = serde_json::to_string(&both).unwrap();
        assert_eq!(json, r#"{"sdp":"a","webrtcSdp":"b"}"#);
        assert_eq!(serde_json::from_str::<SdpResult>(&json).unwrap(), both);
    }

    #[test]
    fn failed_event_round_trips() {
        let stats = SessionStats {
            session: SessionId("s".into()),
            caller: LegStats::default(),
            callee: LegStats::default(),
            recording: None,
            created_at: UnixMillis(1),
            last_packet_at: None,
        };
        let event = RelayEvent::Failed(
            SessionId("s".into()),
            "DTLS handshake failed: x".into(),
            stats,
        );
        let json = serde_json::to_string(&event).unwrap();
        assert!(
            json.starts_with(r#"{"failed":["s","DTLS handshake failed: x","#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<RelayEvent>(&json).unwrap(), event);
    }
}
