//! The one error type of the media relay, and its mapping to SIP status codes and metric labels.
//!
//! Every [`MediaControl`](crate::MediaControl) call fails with a [`MediaError`]. The proxy turns it
//! into a SIP response with [`MediaError::sip_status`] (adding `Retry-After` to 503s) and puts the
//! [`Display`](std::fmt::Display) text in a `Warning`/`Reason` header or the log; metrics label it with
//! [`MediaError::label`].

use serde::{Deserialize, Serialize};

/// Why the relay could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "error", content = "detail")]
pub enum MediaError {
    /// The SDP has no audio stream the relay could carry.
    #[error(
        "the SDP offers no usable audio stream (no m=audio line with a non-zero port); \
         enable an audio codec such as PCMU/PCMA on the phone"
    )]
    NoAudio,
    /// The audio stream uses a transport the relay does not carry (e.g. DTLS-SRTP).
    #[error(
        "the audio stream uses transport {0:?}, which this relay does not carry; \
         use RTP/AVP (plain RTP) or RTP/SAVP (SRTP with SDES keys) on the phone"
    )]
    UnsupportedTransport(String),
    /// The SDP could not be parsed.
    #[error("the SDP body is malformed: {0}")]
    MalformedSdp(String),
    /// No free port pair is left in the configured RTP port range.
    #[error(
        "no free RTP ports left in the relay's port range; widen --rtp-ports \
         (each call needs 4 ports) or wait for calls to end"
    )]
    PortsExhausted,
    /// Every free port pair the relay tried is bound by another program.
    #[error(
        "the relay's free RTP ports ({0} pairs tried) are all in use by other programs; \
         give kubepbx an --rtp-ports range no other program uses"
    )]
    PortsInUse(u32),
    /// The session named in the request does not exist (never offered, deleted or reaped).
    #[error("no media session with that id (it was never offered, or has ended)")]
    UnknownSession,
    /// The relay cannot serve requests (shut down, or unreachable over the control transport).
    #[error("the media relay is unavailable: {0}")]
    Unavailable(String),
    /// The relay configuration cannot work.
    #[error("invalid media relay configuration: {0}")]
    InvalidConfig(String),
}

impl MediaError {
    /// The SIP status code and reason phrase the proxy answers with for this error.
    ///
    /// 488 for SDPs the relay cannot use (with the reason in [`Self::sip_reason`]),
    /// 503 when the relay is out of ports or unavailable (with [`Self::retry_after`]), 481 for
    /// an unknown session, 500 for a broken configuration.
    pub fn sip_status(&self) -> (u16, &'static str) {
        match self {
            MediaError::NoAudio
            | MediaError::UnsupportedTransport(_)
            | MediaError::MalformedSdp(_) => (488, "Not Acceptable Here"),
            MediaError::PortsExhausted | MediaError::PortsInUse(_) | MediaError::Unavailable(_) => {
                (503, "Service Unavailable")
            }
            MediaError::UnknownSession => (481, "Call/Transaction Does Not Exist"),
            MediaError::InvalidConfig(_) => (500, "Server Internal Error"),
        }
    }

    /// The reason phrase for [`Self::sip_status`]: what is wrong with the SDP for 488 (the
    /// caller's phone shows it), the status's phrase otherwise.
    pub fn sip_reason(&self) -> String {
        match self.sip_status() {
            (488, _) => self.to_string(),
            (_, phrase) => phrase.to_owned(),
        }
    }

    /// `Retry-After` seconds to send with a 503: ports free up as calls end.
    pub fn retry_after(&self) -> Option<u32> {
        (self.sip_status().0 == 503).then_some(5)
    }

    /// A short, bounded label for metrics and structured logs.
    pub fn label(&self) -> &'static str {
        match self {
            MediaError::NoAudio => "no_audio",
            MediaError::UnsupportedTransport(_) => "unsupported_transport",
            MediaError::MalformedSdp(_) => "malformed_sdp",
            MediaError::PortsExhausted => "ports_exhausted",
            MediaError::PortsInUse(_) => "ports_in_use",
            MediaError::UnknownSession => "unknown_session",
            MediaError::Unavailable(_) => "unavailable",
            MediaError::InvalidConfig(_) => "invalid_config",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(MediaError::NoAudio.sip_status().0, 488);
        assert_eq!(
            MediaError::UnsupportedTransport("x".into()).sip_status().0,
            488
        );
        assert_eq!(MediaError::MalformedSdp("x".into()).sip_status().0, 488);
        assert_eq!(MediaError::PortsExhausted.sip_status().0, 503);
        assert_eq!(MediaError::PortsInUse(3).sip_status().0, 503);
        assert_eq!(MediaError::PortsInUse(3).retry_after(), Some(5));
        assert_eq!(MediaError::Unavailable("x".into()).sip_status().0, 503);
        assert_eq!(MediaError::UnknownSession.sip_status().0, 481);
    }

    #[test]
    fn serde_round_trip() {
        let e = MediaError::UnsupportedTransport("UDP/TLS/RTP/SAVPF".into());
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"error":"unsupportedTransport","detail":"UDP/TLS/RTP/SAVPF"}"#
        );
        assert_eq!(serde_json::from_str::<MediaError>(&json).unwrap(), e);
        let json = serde_json::to_string(&MediaError::NoAudio).unwrap();
        assert_eq!(
            serde_json::from_str::<MediaError>(&json).unwrap(),
            MediaError::NoAudio
        );
    }
}
