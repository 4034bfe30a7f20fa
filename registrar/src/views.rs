//! What the HTTP API shows: extensions with their contacts and last failure, and bindings.
//!
//! Built by the drive loop from its location view on request, so the API always reads the same
//! memory the registrar answers phones from.

use crate::advice::advice;
use kubepbx_api::RecordingPolicy;
use kubepbx_api::records::{ExtensionRecord, Failure, FailureReason, UserKey};
use kubepbx_api::time::UnixMillis;
use kubepbx_sip::location::{CachedBinding, Location};
use serde::Serialize;

/// One extension as listed by `GET /api/v1/extensions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionView {
    /// The number (SIP user part).
    pub extension: String,
    /// SIP domain and digest realm.
    pub domain: String,
    /// Display name, if set.
    pub display_name: Option<String>,
    /// Whether phones may register.
    pub enabled: bool,
    /// Why the extension is disabled, when it is disabled by a problem (missing Secret, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// How many devices may be registered at once.
    pub max_contacts: u32,
    /// Whether its calls are recorded (`Never`, `Always`).
    pub recording: RecordingPolicy,
    /// Whether at least one contact is registered.
    pub registered: bool,
    /// Current contacts.
    pub contacts: Vec<ContactView>,
    /// The last failed attempt.
    pub last_failure: Option<FailureView>,
}

/// One registered contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContactView {
    /// The Contact URI as registered.
    pub uri: String,
    /// Where the phone registered from (`ip:port`).
    pub source: String,
    /// `udp`, `tcp`, …
    pub transport: &'static str,
    /// The phone's User-Agent header.
    pub user_agent: Option<String>,
    /// Seconds until the binding expires.
    pub expires_in: u64,
    /// The contact is behind NAT (private address, different source).
    pub nat: bool,
    /// The replica that owns the phone's flow (received its REGISTER); `up` for the
    /// single-process PBX.
    pub replica: String,
}

/// One binding as listed by `GET /api/v1/registrations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationView {
    /// The extension number.
    pub extension: String,
    /// Its domain.
    pub domain: String,
    /// The contact.
    #[serde(flatten)]
    pub contact: ContactView,
}

/// A failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureView {
    /// One of the failure codes (see docs/troubleshooting.md).
    pub reason: FailureReason,
    /// When (RFC 3339).
    pub at: String,
    /// Source `ip:port` of the attempt.
    pub source: String,
    /// What exactly was wrong.
    pub detail: String,
    /// What the reason means, in a sentence ([`crate::advice`]).
    pub meaning: &'static str,
    /// What fixes it, in a sentence.
    pub fix: &'static str,
}

impl From<&Failure> for FailureView {
    fn from(f: &Failure) -> Self {
        let advice = advice(f.reason);
        FailureView {
            reason: f.reason,
            at: f.at.to_rfc3339(),
            source: f.source.clone(),
            detail: f.detail.clone(),
            meaning: advice.meaning,
            fix: advice.fix,
        }
    }
}

fn contact(c: &CachedBinding, now: UnixMillis) -> ContactView {
    let b = &c.binding;
    ContactView {
        uri: b.contact.to_string(),
        source: b.source.to_string(),
        transport: b.transport.as_str(),
        user_agent: b.user_agent.as_deref().map(str::to_owned),
        // Rounded up: a binding with 0.4 s left is still there.
        expires_in: now.until(c.expires_at).as_millis().div_ceil(1000) as u64,
        nat: b.nat,
        replica: b.replica.to_string(),
    }
}

/// Every extension, sorted by domain then number.
pub fn extensions(location: &Location, now: UnixMillis) -> Vec<ExtensionView> {
    let mut out: Vec<ExtensionView> = location
        .extensions()
        .map(|record| view(location, record, now))
        .collect();
    out.sort_by(|a, b| (&a.domain, &a.extension).cmp(&(&b.domain, &b.extension)));
    out
}

/// One extension, if it exists.
pub fn extension(location: &Location, key: &UserKey, now: UnixMillis) -> Option<ExtensionView> {
    location
        .extension(key)
        .map(|record| view(location, record, now))
}

fn view(location: &Location, record: &ExtensionRecord, now: UnixMillis) -> ExtensionView {
    let key = record.key();
    let contacts: Vec<ContactView> = location
        .bindings(&key)
        .iter()
        .filter(|c| c.is_live(now))
        .map(|c| contact(c, now))
        .collect();
    ExtensionView {
        extension: record.extension.clone(),
        domain: record.domain.clone(),
        display_name: record.display_name.clone(),
        enabled: record.enabled,
        disabled_reason: record.disabled_reason.clone(),
        max_contacts: record.max_contacts,
        recording: record.recording,
        registered: !contacts.is_empty(),
        contacts,
        last_failure: location
            .status(&key)
            .and_then(|s| s.last_failure.as_ref())
            .map(FailureView::from),
    }
}

/// Which bindings `GET /api/v1/registrations` lists: `?extension=1001&domain=pbx.example.com`,
/// either or both; none lists every binding.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationFilter {
    /// Only this extension number (exact).
    pub extension: Option<String>,
    /// Only this domain (any case).
    pub domain: Option<String>,
}

impl RegistrationFilter {
    fn matches(&self, user: &str, domain: &str) -> bool {
        self.extension.as_deref().is_none_or(|e| e == user)
            && self
                .domain
                .as_deref()
                .is_none_or(|d| d.eq_ignore_ascii_case(domain))
    }
}

/// The live bindings `filter` selects, sorted by domain, number and contact. One extension in
/// one domain is a lookup, not a walk over every binding.
pub fn registrations(
    location: &Location,
    now: UnixMillis,
    filter: &RegistrationFilter,
) -> Vec<RegistrationView> {
    let bindings: Box<dyn Iterator<Item = &CachedBinding>> =
        match (&filter.extension, &filter.domain) {
            (Some(user), Some(domain)) => Box::new(
                location
                    .bindings(&UserKey::new(domain.to_ascii_lowercase(), user.as_str()))
                    .iter(),
            ),
            _ => Box::new(
                location
                    .all_bindings()
                    .filter(|c| filter.matches(&c.binding.user, &c.binding.domain)),
            ),
        };
    let mut out: Vec<RegistrationView> = bindings
        .filter(|c| c.is_live(now))
        .map(|c| RegistrationView {
            extension: c.binding.user.to_string(),
            domain: c.binding.domain.to_string(),
            contact: contact(c, now),
        })
        .collect();
    out.sort_by(|a, b| {
        (&a.domain, &a.extension, &a.contact.uri).cmp(&(&b.domain, &b.extension, &b.contact.uri))
    });
    out
}
