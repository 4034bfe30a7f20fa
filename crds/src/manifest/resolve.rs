//! From Extensions and passwords to extension records: the mapping shared with the operator,
//! and its use on a [`ManifestSet`](super::ManifestSet).

use super::{ExtensionManifest, ManifestSet, SecretManifest};
use crate::extension::{ExtensionSpec, PasswordSecretRef};
use crate::ha1::Ha1Set;
use crate::records::{ExtensionRecord, UserKey};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

/// Why an Extension's password could not be resolved. The extension is then served disabled,
/// with this text as its `disabled_reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretProblem {
    /// The Secret does not exist.
    #[error(
        "password Secret {namespace}/{name} not found: create it with a {key:?} key \
         (kubectl create secret generic {name} -n {namespace} --from-literal={key}=…) \
         or fix spec.passwordSecretRef.name"
    )]
    SecretNotFound {
        /// Namespace of the Extension (and so of the Secret).
        namespace: String,
        /// `spec.passwordSecretRef.name`.
        name: String,
        /// `spec.passwordSecretRef.key`.
        key: String,
    },
    /// The Secret exists but has no such key.
    #[error(
        "password Secret {namespace}/{name} has no key {key:?}: add it (under stringData, or \
         base64-encoded under data) or fix spec.passwordSecretRef.key"
    )]
    SecretKeyMissing {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
        /// The missing key.
        key: String,
    },
    /// The key is there but its value cannot be used as a password.
    #[error("key {key:?} of password Secret {namespace}/{name} {why}")]
    SecretKeyInvalid {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
        /// The key.
        key: String,
        /// What is wrong, never the value.
        why: &'static str,
    },
    /// The password is empty.
    #[error("key {key:?} of password Secret {namespace}/{name} is empty: set a password")]
    PasswordEmpty {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
        /// The key.
        key: String,
    },
}

/// Checks a password value found (or not) under `secret_ref.key` of an existing Secret.
///
/// The operator calls this with the bytes of the Kubernetes Secret; a missing Secret is
/// [`SecretProblem::SecretNotFound`], which the caller builds.
pub fn password_text<'a>(
    namespace: &str,
    secret_ref: &PasswordSecretRef,
    value: Option<&'a [u8]>,
) -> Result<&'a str, SecretProblem> {
    let (namespace, name, key) = (
        namespace.to_owned(),
        secret_ref.name.clone(),
        secret_ref.key.clone(),
    );
    let Some(value) = value else {
        return Err(SecretProblem::SecretKeyMissing {
            namespace,
            name,
            key,
        });
    };
    let Ok(text) = std::str::from_utf8(value) else {
        return Err(SecretProblem::SecretKeyInvalid {
            namespace,
            name,
            key,
            why: "is not UTF-8 text: store the SIP password as plain text",
        });
    };
    if text.is_empty() {
        return Err(SecretProblem::PasswordEmpty {
            namespace,
            name,
            key,
        });
    }
    Ok(text)
}

/// The password of an Extension in `namespace` from a manifest Secret, if it was found.
pub fn password_of<'a>(
    namespace: &str,
    secret_ref: &PasswordSecretRef,
    secret: Option<&'a SecretManifest>,
) -> Result<&'a str, SecretProblem> {
    let Some(secret) = secret else {
        return Err(SecretProblem::SecretNotFound {
            namespace: namespace.to_owned(),
            name: secret_ref.name.clone(),
            key: secret_ref.key.clone(),
        });
    };
    if secret.invalid_keys.contains(&secret_ref.key) {
        return Err(SecretProblem::SecretKeyInvalid {
            namespace: namespace.to_owned(),
            name: secret_ref.name.clone(),
            key: secret_ref.key.clone(),
            why: "could not be decoded (see the error reported for that Secret)",
        });
    }
    let value = secret.data.get(&secret_ref.key).map(|v| v.expose());
    password_text(namespace, secret_ref, value)
}

/// The record for one Extension: the mapping shared by the operator and `kubepbx up`.
///
/// The domain is `spec.domain` or `default_domain`; HA1s are derived for it. Without a usable
/// password the record is disabled, says why in `disabled_reason`, and carries empty HA1s (a
/// registrar must check `enabled` before any digest). `source` is `namespace/name`.
pub fn extension_record(
    namespace: &str,
    name: &str,
    spec: &ExtensionSpec,
    default_domain: &str,
    password: Result<&str, SecretProblem>,
    generation: u64,
) -> ExtensionRecord {
    // Hosts are matched case-insensitively: the record (and realm) use the lower-case form.
    let domain = spec
        .domain
        .as_deref()
        .unwrap_or(default_domain)
        .to_ascii_lowercase();
    let domain = domain.as_str();
    let (ha1, enabled, disabled_reason) = match password {
        Ok(password) => (
            Ha1Set::derive(&spec.extension, domain, password),
            spec.enabled,
            None,
        ),
        Err(problem) => (
            Ha1Set {
                md5: String::new(),
                sha256: String::new(),
            },
            false,
            Some(problem.to_string()),
        ),
    };
    ExtensionRecord {
        domain: domain.to_owned(),
        extension: spec.extension.clone(),
        display_name: spec.display_name.clone(),
        ha1,
        enabled,
        disabled_reason,
        max_contacts: spec.max_contacts,
        recording: spec.recording,
        source: format!("{namespace}/{name}"),
        generation,
    }
}

/// A stable 64-bit fingerprint of everything in a record but its `generation`: the first 8
/// bytes of SHA-256 over its JSON form. It changes when the spec, the effective domain or the
/// password changes, so a reload can skip unchanged records without comparing secrets.
///
/// Because it covers the HA1s, it is as sensitive as they are (a weak password could be
/// guessed from it offline): do not show it where HA1s are not shown.
pub fn fingerprint(record: &ExtensionRecord) -> u64 {
    let mut unversioned = record.clone();
    unversioned.generation = 0;
    let json = serde_json::to_vec(&unversioned).unwrap_or_default();
    let digest = Sha256::digest(&json);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The records of a manifest set, and what is wrong with some Extensions.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// One record per usable Extension, in file-name then document order.
    pub records: Vec<ExtensionRecord>,
    /// Disabled extensions (password problems) and ignored duplicates.
    pub problems: Vec<ExtensionProblem>,
}

/// Something wrong with one Extension of a manifest set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionProblem {
    /// `namespace/name` of the Extension.
    pub source: String,
    /// File it is defined in.
    pub file: PathBuf,
    /// 1-based document number in that file.
    pub document: usize,
    /// What is wrong.
    pub kind: ProblemKind,
}

/// What is wrong with an Extension of a manifest set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProblemKind {
    /// Its password cannot be resolved: the extension is served disabled.
    Secret(SecretProblem),
    /// Another Extension, defined first, has the same number in the same domain: this one is
    /// ignored.
    DuplicateExtension {
        /// The number and domain both claim.
        user: UserKey,
        /// `namespace/name` of the Extension that keeps it.
        first: String,
        /// Where that one is defined.
        first_file: PathBuf,
        /// Its document number.
        first_document: usize,
    },
    /// The same `namespace/name` is defined twice: the second definition is ignored.
    DuplicateResource {
        /// Where the first definition is.
        first_file: PathBuf,
        /// Its document number.
        first_document: usize,
    },
}

impl fmt::Display for ExtensionProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: document {}: Extension {}: ",
            self.file.display(),
            self.document,
            self.source
        )?;
        match &self.kind {
            ProblemKind::Secret(problem) => write!(f, "{problem}; the extension is disabled"),
            ProblemKind::DuplicateExtension {
                user,
                first,
                first_file,
                first_document,
            } => write!(
                f,
                "extension {user} is already defined by Extension {first} ({}: document \
                 {first_document}); this one is ignored",
                first_file.display()
            ),
            ProblemKind::DuplicateResource {
                first_file,
                first_document,
            } => write!(
                f,
                "defined again (first in {}: document {first_document}); this one is ignored",
                first_file.display()
            ),
        }
    }
}

/// Turns a manifest set into records (see the module docs): the first definition of a number
/// wins, a missing password disables an extension without affecting the others, and each
/// record's `generation` is its [`fingerprint`].
pub fn records(set: &ManifestSet, default_domain: &str) -> Resolved {
    let mut resolved = Resolved::default();
    let mut resources: HashMap<(&str, &str), &ExtensionManifest> = HashMap::new();
    let mut numbers: HashMap<(String, &str), &ExtensionManifest> = HashMap::new();
    for m in &set.extensions {
        let problem = |kind| ExtensionProblem {
            source: format!("{}/{}", m.namespace, m.name),
            file: m.file.clone(),
            document: m.document,
            kind,
        };
        if let Some(first) = resources.get(&(m.namespace.as_str(), m.name.as_str())) {
            resolved
                .problems
                .push(problem(ProblemKind::DuplicateResource {
                    first_file: first.file.clone(),
                    first_document: first.document,
                }));
            continue;
        }
        let domain = m.spec.domain.as_deref().unwrap_or(default_domain);
        // Domains compare case-insensitively, as DNS names do.
        let number = (domain.to_ascii_lowercase(), m.spec.extension.as_str());
        if let Some(first) = numbers.get(&number) {
            resolved
                .problems
                .push(problem(ProblemKind::DuplicateExtension {
                    user: UserKey::new(domain, &m.spec.extension),
                    first: format!("{}/{}", first.namespace, first.name),
                    first_file: first.file.clone(),
                    first_document: first.document,
                }));
            continue;
        }
        resources.insert((m.namespace.as_str(), m.name.as_str()), m);
        numbers.insert(number, m);

        let secret_id = (m.namespace.clone(), m.spec.password_secret_ref.name.clone());
        let password = password_of(
            &m.namespace,
            &m.spec.password_secret_ref,
            set.secrets.get(&secret_id),
        );
        if let Err(p) = &password {
            resolved
                .problems
                .push(problem(ProblemKind::Secret(p.clone())));
        }
        let mut record =
            extension_record(&m.namespace, &m.name, &m.spec, default_domain, password, 0);
        record.generation = fingerprint(&record);
        resolved.records.push(record);
    }
    resolved
}
