//! What the store holds: extension records, registration bindings and registration status.
//!
//! These types are the values under the keys of [`crate::keys`]; they are serialised as JSON
//! (camelCase) in etcd and in the embedded store's files. Passwords never appear here: an
//! [`ExtensionRecord`] carries HA1 digests only.

use crate::extension::RecordingPolicy;
use crate::ha1::Ha1Set;
use crate::time::UnixMillis;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;

/// Identifies one extension: its SIP domain and user part.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UserKey {
    /// SIP domain (also the digest realm).
    pub domain: String,
    /// SIP user part, e.g. `1001`.
    pub user: String,
}

impl UserKey {
    /// Builds a key from borrowed parts.
    pub fn new(domain: impl Into<String>, user: impl Into<String>) -> Self {
        UserKey {
            domain: domain.into(),
            user: user.into(),
        }
    }
}

impl fmt::Display for UserKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.user, self.domain)
    }
}

/// Identifies one binding of an extension.
/// A borrowed [`UserKey`] for lookups that should not allocate. It hashes exactly like
/// `UserKey` (field by field; `&str` and `String` hash the same), so it finds `UserKey` keys of
/// hashbrown maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserKeyRef<'a> {
    /// SIP domain.
    pub domain: &'a str,
    /// User part.
    pub user: &'a str,
}

impl hashbrown::Equivalent<UserKey> for UserKeyRef<'_> {
    fn equivalent(&self, key: &UserKey) -> bool {
        key.domain == self.domain && key.user == self.user
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BindingKey {
    /// The extension the binding belongs to.
    pub user: UserKey,
    /// Binding id, unique per extension (see [`Binding::id`]).
    pub id: String,
}

/// The stored form of an extension: everything the registrar needs, nothing secret but HA1s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionRecord {
    /// SIP domain and realm.
    pub domain: String,
    /// SIP user part.
    pub extension: String,
    /// Display name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// HA1 digests for the realm `domain`.
    pub ha1: Ha1Set,
    /// A disabled extension cannot register.
    pub enabled: bool,
    /// Why the extension is disabled when it was not disabled on purpose (e.g. its password
    /// Secret is missing); shown with `Disabled` failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// Maximum number of simultaneous bindings.
    pub max_contacts: u32,
    /// Recording policy for its calls.
    pub recording: RecordingPolicy,
    /// Where the record came from: `namespace/name` of the Extension resource.
    pub source: String,
    /// The resource generation (or a content hash for manifest folders) it was derived from.
    pub generation: u64,
}

impl ExtensionRecord {
    /// The key of this record.
    pub fn key(&self) -> UserKey {
        UserKey::new(&self.domain, &self.extension)
    }
}

/// Transport of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// SIP over UDP.
    Udp,
    /// SIP over TCP.
    Tcp,
    /// SIP over TLS.
    Tls,
    /// SIP over WebSocket.
    Ws,
    /// SIP over secure WebSocket.
    Wss,
}

impl Transport {
    /// Lowercase name as used in APIs and metric labels (`udp`, `tcp`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }

    /// Whether the transport is connection-oriented (a flow is a connection).
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One registered contact of an extension (RFC 3261 §10 binding) and the flow that reaches it.
///
/// Strings are `Box<str>` (no spare capacity, one word less each): a PBX holds one of these per
/// registered phone, shared by the store and the location view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Binding {
    /// SIP domain of the extension.
    pub domain: Box<str>,
    /// User part of the extension.
    pub user: Box<str>,
    /// Stable id: derived from `+sip.instance` and `reg-id` when the device sends them
    /// (RFC 5626), otherwise from the Contact URI.
    pub id: Box<str>,
    /// The Contact URI as registered (angle brackets and header parameters removed).
    pub contact: Box<str>,
    /// Contact preference `q` in thousandths (RFC 3261 §20.10), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<u16>,
    /// Where the REGISTER came from (after NAT): where requests must be sent.
    pub source: SocketAddr,
    /// Transport the REGISTER arrived on.
    pub transport: Transport,
    /// Replica that owns the flow.
    pub replica: Box<str>,
    /// Flow id on the owning replica (a connection id; 0 for datagram flows, which the source
    /// address identifies).
    pub flow: u64,
    /// `User-Agent` of the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<Box<str>>,
    /// `+sip.instance` of the device (RFC 5626).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<Box<str>>,
    /// `reg-id` of the device (RFC 5626).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reg_id: Option<u32>,
    /// Call-ID of the REGISTER that last updated the binding.
    pub call_id: Box<str>,
    /// CSeq of the REGISTER that last updated the binding.
    pub cseq: u32,
    /// When the binding was first created.
    pub registered_at: UnixMillis,
    /// When the binding expires unless refreshed.
    pub expires_at: UnixMillis,
    /// The Contact named a private address while the REGISTER came from another address.
    #[serde(default)]
    pub nat: bool,
}

impl Binding {
    /// Whether `other` describes the same device on the same flow, differing at most in
    /// lifetime and CSeq (a refresh, or the store's echo of one).
    pub fn same_except_lifetime(&self, other: &Binding) -> bool {
        self.contact == other.contact
            && self.source == other.source
            && self.transport == other.transport
            && self.flow == other.flow
            && self.replica == other.replica
            && self.call_id == other.call_id
            && self.user_agent == other.user_agent
            && self.instance == other.instance
            && self.reg_id == other.reg_id
            && self.q == other.q
            && self.nat == other.nat
    }

    /// The key of this binding.
    pub fn key(&self) -> BindingKey {
        BindingKey {
            user: UserKey::new(&*self.domain, &*self.user),
            id: self.id.to_string(),
        }
    }
}

/// Why a registration (or an authenticated request) failed.
///
/// The same codes appear in the admin API, in `kubectl get extensions`, as a metric label and in
/// `docs/troubleshooting.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FailureReason {
    /// No extension with that user part in that domain.
    UnknownUser,
    /// The digest response does not match the password.
    WrongPassword,
    /// Credentials for another realm, or a request addressed to a domain the PBX does not serve.
    RealmMismatch,
    /// The nonce expired; the phone should retry with the fresh one.
    StaleNonce,
    /// A nonce count was reused: a replayed or duplicated request.
    NonceReplay,
    /// A digest algorithm the PBX does not offer.
    UnsupportedAlgorithm,
    /// The extension is disabled, or its password Secret is missing.
    Disabled,
    /// The source address is banned after too many failures.
    Banned,
    /// More contacts than the extension's `maxContacts`.
    TooManyContacts,
    /// The request could not be understood.
    Malformed,
}

impl FailureReason {
    /// Every reason, for exhaustive metrics and docs.
    pub const ALL: [FailureReason; 10] = [
        FailureReason::UnknownUser,
        FailureReason::WrongPassword,
        FailureReason::RealmMismatch,
        FailureReason::StaleNonce,
        FailureReason::NonceReplay,
        FailureReason::UnsupportedAlgorithm,
        FailureReason::Disabled,
        FailureReason::Banned,
        FailureReason::TooManyContacts,
        FailureReason::Malformed,
    ];

    /// The code as text, e.g. `WrongPassword`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::UnknownUser => "UnknownUser",
            FailureReason::WrongPassword => "WrongPassword",
            FailureReason::RealmMismatch => "RealmMismatch",
            FailureReason::StaleNonce => "StaleNonce",
            FailureReason::NonceReplay => "NonceReplay",
            FailureReason::UnsupportedAlgorithm => "UnsupportedAlgorithm",
            FailureReason::Disabled => "Disabled",
            FailureReason::Banned => "Banned",
            FailureReason::TooManyContacts => "TooManyContacts",
            FailureReason::Malformed => "Malformed",
        }
    }

    /// Whether a phone normally recovers on its own (a stale nonce is part of normal operation).
    pub fn is_routine(self) -> bool {
        matches!(self, FailureReason::StaleNonce)
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed attempt, as kept in an extension's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// The classified reason.
    pub reason: FailureReason,
    /// When it happened.
    pub at: UnixMillis,
    /// Source address of the request (`ip:port`).
    pub source: String,
    /// Human-readable detail (never a password or digest).
    pub detail: String,
}

/// A warning about an otherwise successful registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WarningReason {
    /// The Contact names a private address but the REGISTER came from another address: the
    /// phone is behind NAT and kubepbx will use the source address instead.
    NatDetected,
}

/// A warning with its context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Warning {
    /// What was noticed.
    pub reason: WarningReason,
    /// When.
    pub at: UnixMillis,
    /// Source address of the request (`ip:port`).
    pub source: String,
    /// Detail, e.g. the advertised and the real address.
    pub detail: String,
}

/// Registration status of one extension: the last success and the last failure.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegStatus {
    /// Last successful REGISTER: when and from where.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<Success>,
    /// Last failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Failure>,
    /// Last warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_warning: Option<Warning>,
}

/// A successful registration event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Success {
    /// When.
    pub at: UnixMillis,
    /// Source address (`ip:port`).
    pub source: String,
}
