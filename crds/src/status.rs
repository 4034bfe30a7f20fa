//! What the operator reports in an Extension's `.status`: whether its credentials reached the
//! registrars, who is registered, and the last failure with its reason.
//!
//! ```yaml
//! status:
//!   observedGeneration: 3
//!   domain: pbx.example.com
//!   contacts: 1
//!   conditions:
//!   - {type: Ready, status: "True", reason: Synced, message: "…", lastTransitionTime: …}
//!   - {type: CredentialsSynced, status: "True", reason: Synced, …}
//!   - {type: Registered, status: "True", reason: Registered, …}
//!   registrations:
//!   - {uri: "sip:1001@192.168.1.23:5060;ob", source: "203.0.113.7:41234", transport: udp,
//!      userAgent: MicroSIP/3.21.3, expiresAt: …, replica: registrar-0}
//!   lastFailure: {reason: WrongPassword, at: …, source: "203.0.113.7:41234", detail: "…"}
//! ```

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// At most this many registrations are listed in the status.
pub const MAX_STATUS_REGISTRATIONS: usize = 10;

/// Observed state of one extension.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The SIP domain the extension lives in (its own, or the PBX's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// How many devices are registered.
    #[serde(default)]
    pub contacts: u32,
    /// `Ready`, `CredentialsSynced` and `Registered`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The registered devices (at most 10).
    #[serde(default)]
    #[schemars(length(max = 10))]
    pub registrations: Vec<RegistrationStatus>,
    /// The last failed registration or call authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<FailureStatus>,
}

/// One registered device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationStatus {
    /// The Contact URI the phone registered.
    pub uri: String,
    /// Where its REGISTER came from (`ip:port`).
    pub source: String,
    /// `udp`, `tcp`, `tls`, `ws` or `wss`.
    pub transport: String,
    /// The phone's `User-Agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// When the registration expires unless refreshed (RFC 3339).
    pub expires_at: String,
    /// The registrar replica the phone registered through.
    pub replica: String,
}

/// The last failure of an extension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureStatus {
    /// The reason code (`WrongPassword`, `RealmMismatch`, `Disabled`, … — docs/troubleshooting.md).
    pub reason: String,
    /// When (RFC 3339).
    pub at: String,
    /// Where the request came from (`ip:port`).
    pub source: String,
    /// What it means and how to fix it.
    pub detail: String,
}
