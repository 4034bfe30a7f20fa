//! The relay's control interface over HTTP: how a registrar drives a separate media replica.
//!
//! The same [`MediaControl`](crate::MediaControl) trait as in process, mapped one to one onto
//! JSON over HTTP/1.1 (the serde types of [`crate::api`]):
//!
//! | request | body | answer |
//! |---|---|---|
//! | `POST /v1/offer` | [`OfferRequest`](crate::OfferRequest) | [`SdpResult`](crate::SdpResult) |
//! | `POST /v1/answer` | [`AnswerRequest`](crate::AnswerRequest) | [`SdpResult`](crate::SdpResult) |
//! | `DELETE /v1/sessions/{id}` | — | final [`SessionStats`](crate::SessionStats), or `null` when unknown |
//! | `GET /v1/sessions/{id}` | — | [`SessionStats`](crate::SessionStats) or `null` |
//! | `GET /v1/sessions` | — | every session's stats |
//! | `GET /v1/metrics` | — | [`MetricsSnapshot`](crate::MetricsSnapshot) |
//! | `GET /v1/events?from=N&wait=S` | — | [`EventsPage`]: relay events numbered from `N`, waiting up to `S` s (long poll) |
//!
//! A failure is the [`MediaError`] as JSON with an HTTP status chosen by
//! [`http_status`]; the client turns it back into the same error, so the proxy answers a phone
//! exactly as it would with an in-process relay. An unreachable or slow replica is
//! [`MediaError::Unavailable`] naming its URL.
//!
//! Session ids travel percent-encoded in paths (they hold a SIP Call-ID).
//!
//! - [`server`]: the axum [`router`] and the [`EventFeed`]
//!   that numbers relay events for long polls.
//! - [`client`]: [`HttpMedia`], the [`MediaControl`](crate::MediaControl)
//!   implementation that talks to it.

pub mod client;
pub mod server;

pub use client::HttpMedia;
pub use server::{EventFeed, router};

use crate::{MediaError, RelayEvent};
use serde::{Deserialize, Serialize};

/// Longest long-poll wait a client may ask for.
pub const MAX_WAIT_SECONDS: u64 = 30;

/// One numbered relay event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NumberedEvent {
    /// Position in the relay's event sequence.
    pub seq: u64,
    /// The event.
    pub event: RelayEvent,
}

/// The answer to `GET /v1/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventsPage {
    /// Events with `seq >= from`, oldest first.
    pub events: Vec<NumberedEvent>,
    /// Where the next poll starts.
    pub next: u64,
    /// Events between `from` and the first one returned were dropped (the poller was away
    /// longer than the relay keeps them).
    pub missed: bool,
}

/// The HTTP status for a relay error: 422 for SDPs it cannot use, 404 for an unknown session,
/// 503 when out of ports or unavailable, 500 for a broken configuration.
pub fn http_status(e: &MediaError) -> u16 {
    match e {
        MediaError::NoAudio | MediaError::UnsupportedTransport(_) | MediaError::MalformedSdp(_) => {
            422
        }
        MediaError::UnknownSession => 404,
        MediaError::PortsExhausted | MediaError::PortsInUse(_) | MediaError::Unavailable(_) => 503,
        MediaError::InvalidConfig(_) => 500,
    }
}

/// Percent-encodes `text` as one path segment (everything but RFC 3986 unreserved characters).
pub fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("a1-._~"), "a1-._~");
        assert_eq!(
            encode_segment("3c2a@10.0.0.1;tag=x/y z"),
            "3c2a%4010.0.0.1%3Btag%3Dx%2Fy%20z"
        );
    }

    #[test]
    fn statuses() {
        assert_eq!(http_status(&MediaError::NoAudio), 422);
        assert_eq!(http_status(&MediaError::UnknownSession), 404);
        assert_eq!(http_status(&MediaError::PortsExhausted), 503);
    }
}
