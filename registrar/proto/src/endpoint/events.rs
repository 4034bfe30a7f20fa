//! What the endpoint reports to its driver: notable events (for logs and metrics) and counters.

use kubepbx_api::records::{Binding, BindingKey, FailureReason, UserKey};
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
        id: u64,
        /// Who calls.
        caller: UserKey,
        /// Who is called.
        callee: UserKey,
    },
    /// The callee answered.
    CallAnswered {
        /// Our id of the call.
        id: u64,
        /// Who calls.
        caller: UserKey,
        /// Who answered.
        callee: UserKey,
    },
    /// A call ended: BYE after an answer, or the final failure before one.
    CallEnded {
        /// Our id of the call.
        id: u64,
        /// Who called.
        caller: UserKey,
        /// Who was called.
        callee: UserKey,
        /// Final status (200 for a BYE after an answer).
        code: u16,
        /// Whether it had been answered.
        answered: bool,
    },
    /// A request was answered with 400 (or 416/513) because it is malformed.
    BadRequest {
        /// Where it came from.
        source: SocketAddr,
        /// The reason phrase sent.
        reason: String,
    },
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
}

impl DropReason {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Banned => "banned",
            DropReason::Unparseable => "unparseable",
            DropReason::StrayResponse => "stray_response",
            DropReason::StrayAck => "stray_ack",
        }
    }

    /// Every reason, for metrics.
    pub const ALL: [DropReason; 4] = [
        DropReason::Banned,
        DropReason::Unparseable,
        DropReason::StrayResponse,
        DropReason::StrayAck,
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
}

/// Bounded method labels for metrics.
pub const METHOD_LABELS: [&str; 9] = [
    "REGISTER",
    "OPTIONS",
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "SUBSCRIBE",
    "NOTIFY",
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

    pub(crate) fn response(&mut self, code: u16) {
        let class = usize::from(code / 100).clamp(1, 6) - 1;
        self.responses[class] += 1;
    }
}
