//! What the endpoint reports to its driver: notable events (for logs and metrics) and counters.

use kubepbx_api::records::{Binding, BindingKey, FailureReason, UserKey};
use kubepbx_api::time::UnixMillis;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// How a binding changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingChange {
    /// A new binding.
    Added,
    /// An existing binding with a new contact, source, transport or user agent.
    Updated,
    /// The same device registered again: the lifetime was extended (and possibly the Call-ID
    /// or CSeq changed).
    Refreshed,
}

/// A notable event.
#[derive(Debug, Clone, PartialEq)]
pub enum EndpointEvent {
    /// A binding was added, updated or refreshed.
    Registered {
        /// The binding as it is now.
        binding: Arc<Binding>,
        /// What happened to it.
        change: BindingChange,
        /// Granted lifetime.
        expires: Duration,
    },
    /// A binding was removed by its phone.
    Unregistered {
        /// The binding.
        key: BindingKey,
        /// Its contact.
        contact: String,
        /// Where the request came from.
        source: SocketAddr,
    },
    /// A REGISTER failed for a classified reason.
    RegisterFailed {
        /// The extension concerned, when known.
        user: Option<UserKey>,
        /// Why.
        reason: FailureReason,
        /// Where the request came from.
        source: SocketAddr,
        /// Detail (never secrets).
        detail: String,
    },
    /// A contact with a private address arrived from another address.
    NatDetected {
        /// The extension.
        user: UserKey,
        /// The contact as advertised.
        contact: String,
        /// The real source.
        source: String,
    },
    /// A source crossed the failure threshold and is banned.
    Banned {
        /// The source IP.
        ip: IpAddr,
        /// For how long.
        duration: Duration,
    },
    /// A call was routed to the callee's phones.
    CallStarted {
        /// Our id of the call.
        id: String,
        /// Who calls.
        caller: UserKey,
        /// Who is called.
        callee: UserKey,
    },
    /// The callee answered.
    CallAnswered {
        /// Our id of the call.
        id: String,
        /// Who calls.
        caller: UserKey,
        /// Who answered.
        callee: UserKey,
    },
    /// A call ended: BYE after an answer, or the final failure before one.
    CallEnded(Box<CallSummary>),
    /// A request was answered with 400 (or 416/513) because it is malformed.
    BadRequest {
        /// Where it came from.
        source: SocketAddr,
        /// The reason phrase sent.
        reason: String,
    },
}

/// Why a call ended, for call records and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// The caller hung up (BYE after the answer).
    CallerHangup,
    /// The callee hung up.
    CalleeHangup,
    /// Hung up through the admin API.
    AdminHangup,
    /// The media relay saw no RTP for its timeout and closed the session.
    MediaTimeout,
    /// A WebRTC leg failed (ICE or DTLS) and the relay closed the session.
    MediaFailed,
    /// The caller cancelled before an answer (487).
    Cancelled,
    /// The callee was busy (486, 600).
    Busy,
    /// The callee declined (603).
    Declined,
    /// Nobody answered: Timer C, 408 or 480 from every phone.
    NoAnswer,
    /// The media relay could not take the caller's offer (488, 503).
    MediaRefused,
    /// Any other failure before an answer.
    Failed,
}

impl EndReason {
    /// Every reason, for metrics.
    pub const ALL: [EndReason; 11] = [
        EndReason::CallerHangup,
        EndReason::CalleeHangup,
        EndReason::AdminHangup,
        EndReason::MediaTimeout,
        EndReason::MediaFailed,
        EndReason::Cancelled,
        EndReason::Busy,
        EndReason::Declined,
        EndReason::NoAnswer,
        EndReason::MediaRefused,
        EndReason::Failed,
    ];

    /// The name in the API and the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::CallerHangup => "caller-hangup",
            EndReason::CalleeHangup => "callee-hangup",
            EndReason::AdminHangup => "admin-hangup",
            EndReason::MediaTimeout => "media-timeout",
            EndReason::MediaFailed => "media-failed",
            EndReason::Cancelled => "cancelled",
            EndReason::Busy => "busy",
            EndReason::Declined => "declined",
            EndReason::NoAnswer => "no-answer",
            EndReason::MediaRefused => "media-refused",
            EndReason::Failed => "failed",
        }
    }

    /// The reason for a final failure `code` sent to the caller of an unanswered call.
    pub fn of_failure(code: u16) -> EndReason {
        match code {
            487 => EndReason::Cancelled,
            486 | 600 => EndReason::Busy,
            603 => EndReason::Declined,
            408 | 480 => EndReason::NoAnswer,
            488 | 503 => EndReason::MediaRefused,
            _ => EndReason::Failed,
        }
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A finished call, as the proxy saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSummary {
    /// Our id of the call (API, logs).
    pub id: String,
    /// Who called.
    pub caller: UserKey,
    /// Who was called.
    pub callee: UserKey,
    /// When the INVITE arrived.
    pub started_at: UnixMillis,
    /// When the callee answered.
    pub answered_at: Option<UnixMillis>,
    /// When it ended.
    pub ended_at: UnixMillis,
    /// The final status of the INVITE for an unanswered call; 200 for one that was answered.
    pub code: u16,
    /// Why it ended.
    pub reason: EndReason,
    /// The media relay session, when media was anchored.
    pub session: Option<String>,
}

/// Why a packet was dropped without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The source is banned.
    Banned,
    /// The bytes are not a SIP message.
    Unparseable,
    /// A response nobody waits for.
    StrayResponse,
    /// An ACK outside any transaction or dialog.
    StrayAck,
    /// Internal SIP from an address that is not a live replica's internal address.
    NotAReplica,
    /// A flow token or hop that does not check out (bad signature, another replica's flow, a
    /// flow nobody can reach any more).
    BadHop,
}

impl DropReason {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Banned => "banned",
            DropReason::Unparseable => "unparseable",
            DropReason::StrayResponse => "stray_response",
            DropReason::StrayAck => "stray_ack",
            DropReason::NotAReplica => "not_a_replica",
            DropReason::BadHop => "bad_hop",
        }
    }

    /// Every reason, for metrics.
    pub const ALL: [DropReason; 6] = [
        DropReason::Banned,
        DropReason::Unparseable,
        DropReason::StrayResponse,
        DropReason::StrayAck,
        DropReason::NotAReplica,
        DropReason::BadHop,
    ];
}

/// Monotonic counters kept by the endpoint; drivers publish them as metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests received, by method label (see [`method_label`]).
    pub requests: [u64; METHOD_LABELS.len()],
    /// Retransmitted requests answered from a transaction.
    pub retransmissions: u64,
    /// Responses sent, by class (1xx..6xx → index 0..5).
    pub responses: [u64; 6],
    /// REGISTERs answered with a challenge and no failure (first step of digest).
    pub challenges: u64,
    /// REGISTERs accepted.
    pub registers_ok: u64,
    /// Auth/registration failures by reason (index of [`FailureReason::ALL`]).
    pub failures: [u64; FailureReason::ALL.len()],
    /// Dropped packets by reason (index of [`DropReason::ALL`]).
    pub dropped: [u64; DropReason::ALL.len()],
    /// Bans imposed.
    pub bans: u64,
    /// Calls routed to a callee's phones.
    pub calls_started: u64,
    /// Calls answered.
    pub calls_answered: u64,
    /// Calls ended, by reason (index of [`EndReason::ALL`]).
    pub calls_ended: [u64; EndReason::ALL.len()],
    /// Calls that ended before an answer, by reason (index of [`EndReason::ALL`]).
    pub calls_failed: [u64; EndReason::ALL.len()],
    /// Requests sent to a phone through the replica that owns its flow.
    pub via_owner: u64,
    /// Messages this replica passed on as a stateless hop for another replica (requests onto
    /// its flows or to a call's owner, and their responses).
    pub hops: u64,
}

/// Bounded method labels for metrics.
pub const METHOD_LABELS: [&str; 12] = [
    "REGISTER",
    "OPTIONS",
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "SUBSCRIBE",
    "NOTIFY",
    "UPDATE",
    "INFO",
    "PRACK",
    "other",
];

/// The metric label index of a method.
pub fn method_label(method: &crate::message::Method) -> usize {
    let name = method.as_str();
    METHOD_LABELS
        .iter()
        .position(|l| *l == name)
        .unwrap_or(METHOD_LABELS.len() - 1)
}

impl Stats {
    pub(crate) fn failure(&mut self, reason: FailureReason) {
        if let Some(i) = FailureReason::ALL.iter().position(|r| *r == reason) {
            self.failures[i] += 1;
        }
    }

    pub(crate) fn drop(&mut self, reason: DropReason) {
        if let Some(i) = DropReason::ALL.iter().position(|r| *r == reason) {
            self.dropped[i] += 1;
        }
    }

    pub(crate) fn call_ended(&mut self, reason: EndReason, answered: bool) {
        if let Some(i) = EndReason::ALL.iter().position(|r| *r == reason) {
            self.calls_ended[i] += 1;
            if !answered {
                self.calls_failed[i] += 1;
            }
        }
    }

    pub(crate) fn response(&mut self, code: u16) {
        let class = usize::from(code / 100).clamp(1, 6) - 1;
        self.responses[class] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Method;

    #[test]
    fn in_dialog_methods_have_labels_of_their_own_and_unknown_ones_count_as_other() {
        for name in ["INFO", "UPDATE", "PRACK", "INVITE"] {
            assert_eq!(METHOD_LABELS[method_label(&Method::from_token(name))], name);
        }
        for name in ["MESSAGE", "info", "FOO"] {
            assert_eq!(
                METHOD_LABELS[method_label(&Method::from_token(name))],
                "other"
            );
        }
    }
}
