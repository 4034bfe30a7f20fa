//! The decision of a reconcile, without any I/O: given an Extension, what its Secret holds and
//! which other Extensions claim the same number, which record goes to etcd and what the
//! `Ready` and `CredentialsSynced` conditions say.
//!
//! | situation | record in etcd | `Ready` / `CredentialsSynced` reason |
//! |---|---|---|
//! | valid spec, password found | written, enabled as the spec says | `Synced` (True) |
//! | Secret or key missing, value unusable | written *disabled*, its `disabledReason` naming the problem, so a phone trying to register is told why | `SecretNotFound`, `SecretKeyMissing`, `SecretKeyInvalid`, `PasswordEmpty` (False) |
//! | a spec the schema let through but the rules refuse | none | `InvalidSpec` (False), the message naming the field |
//! | an older Extension has the same number in the same domain | none: the older one keeps it | `DuplicateExtension` (False), naming the older one |
//!
//! The record is the one `kubepbx apply` and `kubepbx up` write for the same manifests
//! ([`kubepbx_api::manifest::extension_record`]). Failures to write it (`EtcdUnavailable`) are
//! the caller's to report.

use crate::conditions::{CREDENTIALS_SYNCED, READY, Status, Wanted};
use kubepbx_api::ExtensionSpec;
use kubepbx_api::manifest::{SecretProblem, extension_record, password_text};
use kubepbx_api::records::{ExtensionRecord, UserKey};
use std::collections::BTreeMap;

/// An Extension as the reconcile sees it.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// Its namespace (also the Secret's).
    pub namespace: &'a str,
    /// Its name.
    pub name: &'a str,
    /// `metadata.generation`.
    pub generation: i64,
    /// Its spec.
    pub spec: &'a ExtensionSpec,
}

/// What the referenced Secret holds: `None` when it does not exist.
pub type SecretData<'a> = Option<&'a BTreeMap<String, Vec<u8>>>;

/// What one reconcile decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The number and domain the Extension claims (`None` when its spec is invalid).
    pub key: Option<UserKey>,
    /// The record to write; `None` when nothing may be written for this Extension.
    pub record: Option<ExtensionRecord>,
    /// `Ready` as far as the spec and the Secret go (the writer may still fail).
    pub ready: Wanted,
    /// `CredentialsSynced` as far as the spec and the Secret go.
    pub credentials: Wanted,
}

/// Decides for `subject`. `older_claim` is `namespace/name` of the oldest other Extension with
/// the same number in the same domain when it is older than `subject` (it keeps the number).
pub fn decide(
    subject: Subject<'_>,
    secret: SecretData<'_>,
    default_domain: &str,
    older_claim: Option<&str>,
) -> Verdict {
    let spec = subject.spec;
    if let Err(invalid) = spec.validate() {
        let message = format!("invalid spec: {invalid}; fix the Extension and apply it again");
        return refused(None, "InvalidSpec", message);
    }
    let domain = spec.domain.as_deref().unwrap_or(default_domain);
    let key = key_of(spec, default_domain);
    if let Some(older) = older_claim {
        let message = format!(
            "extension {} in {domain} is already claimed by the older Extension {older}; \
             change spec.extension (or spec.domain) here, or delete one of the two",
            spec.extension
        );
        return refused(Some(key), "DuplicateExtension", message);
    }
    let secret_ref = &spec.password_secret_ref;
    let password = match secret {
        None => Err(SecretProblem::SecretNotFound {
            namespace: subject.namespace.to_owned(),
            name: secret_ref.name.clone(),
            key: secret_ref.key.clone(),
        }),
        Some(data) => password_text(
            subject.namespace,
            secret_ref,
            data.get(&secret_ref.key).map(Vec::as_slice),
        ),
    };
    let problem = password.as_ref().err().cloned();
    let generation = u64::try_from(subject.generation).unwrap_or(0);
    let record = extension_record(
        subject.namespace,
        subject.name,
        spec,
        default_domain,
        password,
        generation,
    );
    let (ready, credentials) = match problem {
        None => {
            let message = format!(
                "HA1 digests for {}@{domain} are in etcd{}",
                spec.extension,
                if spec.enabled {
                    ""
                } else {
                    "; the extension is disabled (spec.enabled: false)"
                }
            );
            (
                Wanted::new(READY, Status::True, "Synced", message.clone()),
                Wanted::new(CREDENTIALS_SYNCED, Status::True, "Synced", message),
            )
        }
        Some(problem) => {
            let reason = secret_reason(&problem);
            let message = format!("{problem}; the extension is disabled until then");
            (
                Wanted::new(READY, Status::False, reason, message.clone()),
                Wanted::new(CREDENTIALS_SYNCED, Status::False, reason, message),
            )
        }
    };
    Verdict {
        key: Some(key),
        record: Some(record),
        ready,
        credentials,
    }
}

/// The number and domain a valid `spec` claims (the record's key: the domain in lower case, as
/// hosts are matched); `None` for an invalid spec, which claims nothing.
pub fn claim(spec: &ExtensionSpec, default_domain: &str) -> Option<UserKey> {
    spec.validate().ok()?;
    Some(key_of(spec, default_domain))
}

fn key_of(spec: &ExtensionSpec, default_domain: &str) -> UserKey {
    let domain = spec.domain.as_deref().unwrap_or(default_domain);
    UserKey::new(domain.to_ascii_lowercase(), spec.extension.as_str())
}

/// The condition reason of a Secret problem.
pub fn secret_reason(problem: &SecretProblem) -> &'static str {
    match problem {
        SecretProblem::SecretNotFound { .. } => "SecretNotFound",
        SecretProblem::SecretKeyMissing { .. } => "SecretKeyMissing",
        SecretProblem::SecretKeyInvalid { .. } => "SecretKeyInvalid",
        SecretProblem::PasswordEmpty { .. } => "PasswordEmpty",
    }
}

fn refused(key: Option<UserKey>, reason: &'static str, message: String) -> Verdict {
    Verdict {
        key,
        record: None,
        ready: Wanted::new(READY, Status::False, reason, message.clone()),
        credentials: Wanted::new(CREDENTIALS_SYNCED, Status::False, reason, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubepbx_api::PasswordSecretRef;
    use kubepbx_api::RecordingPolicy;

    fn spec(number: &str) -> ExtensionSpec {
        ExtensionSpec {
            extension: number.to_owned(),
            domain: None,
            display_name: Some("Reception".to_owned()),
            password_secret_ref: PasswordSecretRef {
                name: format!("ext-{number}"),
                key: "password".to_owned(),
            },
            enabled: true,
            max_contacts: 5,
            recording: RecordingPolicy::Never,
        }
    }

    fn subject(spec: &ExtensionSpec) -> Subject<'_> {
        Subject {
            namespace: "office",
            name: "ext-1001",
            generation: 3,
            spec,
        }
    }

    fn secret(pairs: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
            .collect()
    }

    #[test]
    fn a_found_password_becomes_the_shared_record() {
        let s = spec("1001");
        let data = secret(&[("password", b"change-me-1001")]);
        let v = decide(subject(&s), Some(&data), "pbx.example.com", None);
        let record = v.record.expect("a record");
        assert!(record.enabled);
        assert_eq!(record.domain, "pbx.example.com");
        assert_eq!(record.generation, 3);
        let same = extension_record(
            "office",
            "ext-1001",
            &s,
            "pbx.example.com",
            Ok("change-me-1001"),
            3,
        );
        assert_eq!(record, same, "the mapping kubepbx apply uses");
        assert_eq!((v.ready.status, v.ready.reason), (Status::True, "Synced"));
        assert_eq!(v.credentials.status, Status::True);
        assert_eq!(v.key, Some(UserKey::new("pbx.example.com", "1001")));
    }

    #[test]
    fn secret_problems_disable_the_extension_and_say_why() {
        let s = spec("1001");
        type Data = Option<BTreeMap<String, Vec<u8>>>;
        let cases: [(Data, &str); 4] = [
            (None, "SecretNotFound"),
            (Some(secret(&[("pass", b"x")])), "SecretKeyMissing"),
            (
                Some(secret(&[("password", &[0xff, 0xfe])])),
                "SecretKeyInvalid",
            ),
            (Some(secret(&[("password", b"")])), "PasswordEmpty"),
        ];
        for (data, reason) in cases {
            let v = decide(subject(&s), data.as_ref(), "pbx.example.com", None);
            let record = v.record.expect("a disabled record");
            assert!(!record.enabled, "{reason}");
            assert!(record.disabled_reason.is_some(), "{reason}");
            assert_eq!((v.ready.status, v.ready.reason), (Status::False, reason));
            assert_eq!(v.credentials.reason, reason);
            assert!(v.ready.message.contains("ext-1001"), "{}", v.ready.message);
        }
    }

    #[test]
    fn domains_are_stored_lower_case_as_the_registrars_match_them() {
        let mut s = spec("1001");
        s.domain = Some("PBX.Example.com".to_owned());
        let data = secret(&[("password", b"pw")]);
        let v = decide(subject(&s), Some(&data), "ignored", None);
        let record = v.record.expect("a record");
        assert_eq!(record.domain, "pbx.example.com");
        assert_eq!(
            record.ha1,
            kubepbx_api::ha1::Ha1Set::derive("1001", "pbx.example.com", "pw")
        );
        assert_eq!(v.key, Some(record.key()));
        let v = decide(subject(&spec("1001")), Some(&data), "Default.Example", None);
        assert_eq!(
            v.record.map(|r| r.domain).as_deref(),
            Some("default.example")
        );
    }

    #[test]
    fn invalid_specs_and_duplicates_write_nothing() {
        let mut s = spec("1001");
        s.max_contacts = 0;
        let data = secret(&[("password", b"pw")]);
        let v = decide(subject(&s), Some(&data), "pbx.example.com", None);
        assert_eq!((v.record, v.ready.reason), (None, "InvalidSpec"));
        assert!(
            v.ready.message.contains("spec.maxContacts"),
            "{}",
            v.ready.message
        );

        let s = spec("1001");
        let v = decide(
            subject(&s),
            Some(&data),
            "pbx.example.com",
            Some("office/reception"),
        );
        assert_eq!(v.record, None);
        assert_eq!(v.ready.reason, "DuplicateExtension");
        assert!(v.ready.message.contains("office/reception"));
        assert_eq!(v.key, Some(UserKey::new("pbx.example.com", "1001")));
    }
}
