//! What the admin API accepts to create or change an extension: JSON request bodies, decoded
//! and checked with the rules manifests get ([`ExtensionSpec::validate`]), every error naming
//! the JSON field to fix.
//!
//! | request | body |
//! |---|---|
//! | [`NewExtension`] | `extension` and `password` required; `domain`, `displayName`, `enabled`, `maxContacts`, `recording` optional |
//! | [`ExtensionChange`] | any of `password`, `displayName`, `enabled`, `maxContacts`, `recording`; a JSON merge patch: `null` removes the field from the manifest, so its default applies |
//!
//! Passwords are held as [`Password`], whose `Debug` is redacted; no error repeats one.

use crate::extension::{ExtensionSpec, InvalidField, PasswordSecretRef, RecordingPolicy};
use serde::{Deserialize, Deserializer};
use std::fmt;

/// The key of the password in the Secrets the admin API writes.
pub const PASSWORD_KEY: &str = "password";

/// A SIP password from a request: use it, never log it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(text: impl Into<String>) -> Self {
        Password(text.into())
    }

    /// The password itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Why a request body cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The body is not a JSON object (HTTP 400).
    #[error("the body is not a JSON object: {0}")]
    NotJson(String),
    /// A field is missing, of the wrong type or breaks a rule (HTTP 422).
    #[error("{field}: {problem}")]
    Invalid {
        /// The JSON field, e.g. `maxContacts`.
        field: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
}

impl RequestError {
    fn invalid(field: &str, problem: impl Into<String>) -> Self {
        RequestError::Invalid {
            field: field.to_owned(),
            problem: problem.into(),
        }
    }
}

impl From<InvalidField> for RequestError {
    /// A spec rule broken: `spec.maxContacts` is the request's `maxContacts`.
    fn from(invalid: InvalidField) -> Self {
        let field = invalid.field.strip_prefix("spec.").unwrap_or(invalid.field);
        RequestError::invalid(field, invalid.problem)
    }
}

/// A new extension (`POST /api/v1/extensions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewExtension {
    /// The spec to write; `passwordSecretRef` names the Secret [`object_name`] gives, with the
    /// key [`PASSWORD_KEY`] (a writer may choose another free name).
    pub spec: ExtensionSpec,
    /// Its SIP password.
    pub password: Password,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewBody {
    extension: Option<String>,
    password: Option<Password>,
    domain: Option<String>,
    display_name: Option<String>,
    enabled: Option<bool>,
    max_contacts: Option<u32>,
    recording: Option<RecordingPolicy>,
}

impl NewExtension {
    /// Decodes and checks a request body.
    pub fn from_json(body: &[u8]) -> Result<Self, RequestError> {
        let body = object(body)?;
        let b: NewBody = decode(&body)?;
        let extension = b.extension.ok_or_else(|| {
            RequestError::invalid("extension", "is required: the number, e.g. \"1003\"")
        })?;
        let password = b.password.ok_or_else(|| {
            RequestError::invalid("password", "is required: the SIP password of the extension")
        })?;
        check_password(&password)?;
        let defaults = ExtensionSpec {
            extension: String::new(),
            domain: None,
            display_name: None,
            password_secret_ref: PasswordSecretRef {
                name: String::new(),
                key: PASSWORD_KEY.to_owned(),
            },
            enabled: true,
            max_contacts: 5,
            recording: RecordingPolicy::Never,
        };
        let spec = ExtensionSpec {
            password_secret_ref: PasswordSecretRef {
                name: object_name(&extension),
                key: PASSWORD_KEY.to_owned(),
            },
            extension,
            domain: b.domain,
            display_name: b.display_name,
            enabled: b.enabled.unwrap_or(defaults.enabled),
            max_contacts: b.max_contacts.unwrap_or(defaults.max_contacts),
            recording: b.recording.unwrap_or(defaults.recording),
        };
        spec.validate()?;
        Ok(NewExtension { spec, password })
    }
}

/// A change to one field: keep it, set it, or remove it (its default then applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Patch<T> {
    /// The field is not in the request.
    #[default]
    Keep,
    /// `null`: remove the field from the manifest.
    Reset,
    /// A new value.
    Set(T),
}

impl<T> Patch<T> {
    /// Whether the request changes this field.
    pub fn is_change(&self) -> bool {
        !matches!(self, Patch::Keep)
    }

    fn apply(self, field: &mut T, default: T) {
        match self {
            Patch::Keep => {}
            Patch::Reset => *field = default,
            Patch::Set(value) => *field = value,
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(d)? {
            Some(value) => Patch::Set(value),
            None => Patch::Reset,
        })
    }
}

/// A change to an extension (`PATCH /api/v1/extensions/{domain}/{extension}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionChange {
    /// A new password (`null` is refused: a password cannot be removed).
    #[serde(default, deserialize_with = "set_only")]
    pub password: Option<Password>,
    /// A new display name; `null` removes it.
    #[serde(default)]
    pub display_name: Patch<String>,
    /// Enable or disable; `null`: enabled (the default).
    #[serde(default)]
    pub enabled: Patch<bool>,
    /// Devices at once; `null`: 5 (the default).
    #[serde(default)]
    pub max_contacts: Patch<u32>,
    /// Recording policy; `null`: `Never` (the default).
    #[serde(default)]
    pub recording: Patch<RecordingPolicy>,
}

fn set_only<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Password>, D::Error> {
    Option::<Password>::deserialize(d)?
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom("cannot be removed: send a new password"))
}

impl ExtensionChange {
    /// Decodes and checks a request body (the spec rules are checked by [`Self::apply_to`],
    /// which needs the current spec).
    pub fn from_json(body: &[u8]) -> Result<Self, RequestError> {
        let body = object(body)?;
        for field in ["extension", "domain"] {
            if body.get(field).is_some() {
                return Err(RequestError::invalid(
                    field,
                    "cannot be changed: create the extension anew (POST /api/v1/extensions) \
                     and delete this one",
                ));
            }
        }
        let change: ExtensionChange = decode(&body)?;
        if let Some(password) = &change.password {
            check_password(password)?;
        }
        Ok(change)
    }

    /// Whether the request changes anything.
    pub fn is_empty(&self) -> bool {
        self.password.is_none()
            && !self.display_name.is_change()
            && !self.enabled.is_change()
            && !self.max_contacts.is_change()
            && !self.recording.is_change()
    }

    /// `spec` with the change applied, checked with the manifest rules.
    pub fn apply_to(&self, spec: &ExtensionSpec) -> Result<ExtensionSpec, RequestError> {
        let mut new = spec.clone();
        match &self.display_name {
            Patch::Keep => {}
            Patch::Reset => new.display_name = None,
            Patch::Set(name) => new.display_name = Some(name.clone()),
        }
        self.enabled.apply(&mut new.enabled, true);
        self.max_contacts.apply(&mut new.max_contacts, 5);
        self.recording
            .apply(&mut new.recording, RecordingPolicy::Never);
        new.validate()?;
        Ok(new)
    }
}

/// `metadata.name` the admin API gives the Extension and Secret of `extension`: `ext-<number>`,
/// lowercased, with characters a Kubernetes name cannot hold replaced by `-`.
pub fn object_name(extension: &str) -> String {
    let body: String = extension
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '.' | '-') => c,
            _ => '-',
        })
        .collect();
    let body = body.trim_end_matches(['-', '.']);
    if body.is_empty() {
        "ext".to_owned()
    } else {
        format!("ext-{body}")
    }
}

fn check_password(password: &Password) -> Result<(), RequestError> {
    if password.expose().is_empty() {
        return Err(RequestError::invalid(
            "password",
            "must not be empty: set a password",
        ));
    }
    if password.expose().chars().any(char::is_control) {
        return Err(RequestError::invalid(
            "password",
            "must not contain control characters (line breaks, tabs): phones cannot type them",
        ));
    }
    Ok(())
}

/// The body as a JSON object.
fn object(body: &[u8]) -> Result<serde_json::Value, RequestError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| RequestError::NotJson(e.to_string()))?;
    if !value.is_object() {
        return Err(RequestError::NotJson(
            "expected an object such as {\"extension\": \"1003\", \"password\": \"…\"}".to_owned(),
        ));
    }
    Ok(value)
}

/// Decodes a JSON object, naming the field of an error.
fn decode<'a, T: Deserialize<'a>>(object: &'a serde_json::Value) -> Result<T, RequestError> {
    serde_path_to_error::deserialize(object).map_err(|e| RequestError::Invalid {
        field: e.path().to_string(),
        problem: e.into_inner().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(e: RequestError) -> String {
        match e {
            RequestError::Invalid { field, .. } => field,
            RequestError::NotJson(m) => panic!("not a field error: {m}"),
        }
    }

    #[test]
    fn a_new_extension_gets_the_manifest_defaults() {
        let new =
            NewExtension::from_json(br#"{"extension": "1003", "password": "pw"}"#).expect("valid");
        assert_eq!(new.spec.extension, "1003");
        assert!(new.spec.enabled);
        assert_eq!(new.spec.max_contacts, 5);
        assert_eq!(new.spec.password_secret_ref.name, "ext-1003");
        assert_eq!(new.spec.password_secret_ref.key, "password");
        assert_eq!(new.password.expose(), "pw");
        assert!(!format!("{new:?}").contains("pw\""), "{new:?}");
    }

    #[test]
    fn bad_fields_are_named() {
        let cases: [(&[u8], &str); 9] = [
            (br#"{"password": "pw"}"#, "extension"),
            (br#"{"extension": "1003"}"#, "password"),
            (br#"{"extension": "1003", "password": ""}"#, "password"),
            (br#"{"extension": "10 03", "password": "x"}"#, "extension"),
            (br#"{"extension": 1003, "password": "x"}"#, "extension"),
            (
                br#"{"extension": "1", "password": "x", "maxContacts": 0}"#,
                "maxContacts",
            ),
            (
                br#"{"extension": "1", "password": "x", "domain": "a b"}"#,
                "domain",
            ),
            (
                br#"{"extension": "1", "password": "x", "recording": "Sometimes"}"#,
                "recording",
            ),
            (
                br#"{"extension": "1", "password": "x", "pasword": "y"}"#,
                "pasword",
            ),
        ];
        for (body, field) in cases {
            let e = NewExtension::from_json(body).expect_err("invalid");
            assert!(!e.to_string().contains(" at line "), "{e}");
            assert_eq!(invalid(e), field, "{}", String::from_utf8_lossy(body));
        }
        assert!(matches!(
            NewExtension::from_json(b"[1]"),
            Err(RequestError::NotJson(_))
        ));
        assert!(matches!(
            NewExtension::from_json(b"{\"a"),
            Err(RequestError::NotJson(_))
        ));
    }

    #[test]
    fn a_change_is_a_merge_patch() {
        let change = ExtensionChange::from_json(
            br#"{"enabled": false, "displayName": null, "maxContacts": 7}"#,
        )
        .expect("valid");
        assert_eq!(change.enabled, Patch::Set(false));
        assert_eq!(change.display_name, Patch::Reset);
        assert_eq!(change.recording, Patch::Keep);
        let spec =
            NewExtension::from_json(br#"{"extension": "1", "password": "x", "displayName": "A"}"#)
                .expect("valid")
                .spec;
        let new = change.apply_to(&spec).expect("valid");
        assert!(!new.enabled);
        assert_eq!(new.display_name, None);
        assert_eq!(new.max_contacts, 7);
        let reset = ExtensionChange::from_json(br#"{"maxContacts": null}"#).expect("valid");
        assert_eq!(reset.apply_to(&new).expect("valid").max_contacts, 5);
        assert!(ExtensionChange::from_json(b"{}").expect("valid").is_empty());
    }

    #[test]
    fn a_change_names_what_cannot_change() {
        for (body, field) in [
            (&br#"{"extension": "2"}"#[..], "extension"),
            (br#"{"domain": "b.example"}"#, "domain"),
            (br#"{"password": ""}"#, "password"),
            (br#"{"password": null}"#, "password"),
            (br#"{"enabled": "no"}"#, "enabled"),
            (br#"{"colour": "red"}"#, "colour"),
        ] {
            let e = ExtensionChange::from_json(body).expect_err("invalid");
            assert_eq!(invalid(e), field);
        }
        let spec = NewExtension::from_json(br#"{"extension": "1", "password": "x"}"#)
            .expect("valid")
            .spec;
        let e = ExtensionChange::from_json(br#"{"maxContacts": 101}"#)
            .expect("decodes")
            .apply_to(&spec)
            .expect_err("out of range");
        assert_eq!(invalid(e), "maxContacts");
    }

    #[test]
    fn object_names_are_kubernetes_names() {
        assert_eq!(object_name("1003"), "ext-1003");
        assert_eq!(object_name("Alice_B"), "ext-alice-b");
        assert_eq!(object_name("x."), "ext-x");
        assert_eq!(object_name("__"), "ext");
    }
}
