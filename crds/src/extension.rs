//! The `Extension` resource spec (`kubepbx.io/v1alpha1`), exactly as users write it.
//!
//! ```yaml
//! spec:
//!   extension: "1001"        # SIP user part: [A-Za-z0-9._-]{1,64}
//!   domain: pbx.example.com  # optional; defaults to the PBX's --domain
//!   displayName: Reception   # optional
//!   passwordSecretRef: {name: ext-1001, key: password}   # key defaults to "password"
//!   enabled: true            # optional, default true
//!   maxContacts: 5           # optional, default 5 (1..=100)
//!   recording: Never         # optional, Never | Always
//! ```
//!
//! Serde defaults mirror the CRD defaults; [`ExtensionSpec::validate`] checks what the schema
//! cannot express and names the offending field in its error.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Largest `maxContacts` accepted.
pub const MAX_CONTACTS_LIMIT: u32 = 100;

/// Desired state of one extension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionSpec {
    /// SIP user part (the number phones dial and register as).
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]{1,64}$"))]
    pub extension: String,
    /// SIP domain and digest realm; the PBX's default domain when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Name shown to callees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Where the SIP password is kept.
    pub password_secret_ref: PasswordSecretRef,
    /// A disabled extension cannot register or call.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How many devices may be registered at once.
    #[serde(default = "default_max_contacts")]
    #[schemars(range(min = 1, max = 100))]
    pub max_contacts: u32,
    /// Whether calls of this extension are recorded.
    #[serde(default)]
    pub recording: RecordingPolicy,
}

/// Reference to the key of a Secret (in the Extension's namespace) holding the password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PasswordSecretRef {
    /// Secret name.
    pub name: String,
    /// Key inside the Secret; `password` when absent.
    #[serde(default = "default_password_key")]
    pub key: String,
}

/// Call recording policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum RecordingPolicy {
    /// Calls are not recorded.
    #[default]
    Never,
    /// Every call of the extension is recorded.
    Always,
}

fn default_true() -> bool {
    true
}

fn default_max_contacts() -> u32 {
    5
}

fn default_password_key() -> String {
    "password".to_owned()
}

/// A spec field that breaks a rule; `field` is the path inside the resource (`spec.extension`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidField {
    /// Path of the field, e.g. `spec.maxContacts`.
    pub field: &'static str,
    /// What is wrong with it, in words a user can act on.
    pub problem: String,
}

impl ExtensionSpec {
    /// Checks the rules the schema states (patterns, bounds), so manifests read from a folder get
    /// the same verdict as `kubectl apply` would give.
    pub fn validate(&self) -> Result<(), InvalidField> {
        if !is_valid_user(&self.extension) {
            return Err(InvalidField {
                field: "spec.extension",
                problem: format!(
                    "{:?} is not a valid extension: use 1 to 64 of A-Z a-z 0-9 . _ -",
                    self.extension
                ),
            });
        }
        if let Some(domain) = self.domain.as_ref().filter(|d| !is_valid_domain(d)) {
            return Err(InvalidField {
                field: "spec.domain",
                problem: format!("{domain:?} is not a valid domain name"),
            });
        }
        if self.max_contacts == 0 || self.max_contacts > MAX_CONTACTS_LIMIT {
            return Err(InvalidField {
                field: "spec.maxContacts",
                problem: format!(
                    "{} is out of range: use 1 to {MAX_CONTACTS_LIMIT}",
                    self.max_contacts
                ),
            });
        }
        if self.password_secret_ref.name.is_empty() {
            return Err(InvalidField {
                field: "spec.passwordSecretRef.name",
                problem: "must name a Secret".to_owned(),
            });
        }
        if self.password_secret_ref.key.is_empty() {
            return Err(InvalidField {
                field: "spec.passwordSecretRef.key",
                problem: "must not be empty".to_owned(),
            });
        }
        Ok(())
    }
}

/// A SIP user part kubepbx accepts as an extension: `[A-Za-z0-9._-]{1,64}`.
pub fn is_valid_user(user: &str) -> bool {
    (1..=64).contains(&user.len())
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A DNS name or IP literal usable as a SIP domain.
pub fn is_valid_domain(domain: &str) -> bool {
    if domain.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    (1..=253).contains(&domain.len())
        && domain.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ExtensionSpec {
        serde_norway::from_str(yaml).expect("spec parses")
    }

    #[test]
    fn defaults_apply() {
        let s = spec("extension: \"1001\"\npasswordSecretRef: {name: ext-1001}\n");
        assert!(s.enabled);
        assert_eq!(s.max_contacts, 5);
        assert_eq!(s.recording, RecordingPolicy::Never);
        assert_eq!(s.password_secret_ref.key, "password");
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn invalid_fields_are_named() {
        let mut s = spec("extension: \"10 01\"\npasswordSecretRef: {name: x}\n");
        assert_eq!(s.validate().unwrap_err().field, "spec.extension");
        s.extension = "1001".into();
        s.max_contacts = 0;
        assert_eq!(s.validate().unwrap_err().field, "spec.maxContacts");
        s.max_contacts = 5;
        s.domain = Some("bad domain".into());
        assert_eq!(s.validate().unwrap_err().field, "spec.domain");
    }

    #[test]
    fn unknown_fields_and_bad_enums_are_rejected() {
        assert!(
            serde_norway::from_str::<ExtensionSpec>(
                "extension: \"1\"\npasswordSecretRef: {name: x}\npasword: y\n"
            )
            .is_err()
        );
        assert!(
            serde_norway::from_str::<ExtensionSpec>(
                "extension: \"1\"\npasswordSecretRef: {name: x}\nrecording: Sometimes\n"
            )
            .is_err()
        );
    }

    #[test]
    fn domains() {
        assert!(is_valid_domain("pbx.example.com"));
        assert!(is_valid_domain("192.168.1.10"));
        assert!(is_valid_domain("localhost"));
        assert!(!is_valid_domain("-bad.example"));
        assert!(!is_valid_domain(""));
    }
}
