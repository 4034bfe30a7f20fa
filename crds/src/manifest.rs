//! Reading a folder of manifests — the YAML `kubectl apply -f` takes — into extension records.
//!
//! `kubepbx up -f examples/` serves the Extensions and Secrets of a folder without a cluster.
//! Data flows in two steps:
//!
//! 1. [`read_dir`] parses every `*.yaml` / `*.yml` file of the folder (not its subfolders;
//!    hidden files and editor backups skipped), in file-name order, each possibly holding several
//!    `---`-separated documents, into a [`ManifestSet`]: `kubepbx.io/v1alpha1 Extension`s,
//!    decoded `v1 Secret`s, and one [`ManifestError`] per document that could not be used
//!    (`examples/ext-1001.yaml: document 2: spec.maxContacts: invalid type: …`). Other kinds are
//!    ignored: the folder may hold other manifests.
//! 2. [`records`] turns the set into [`ExtensionRecord`](crate::ExtensionRecord)s with
//!    [`extension_record`], the mapping the operator shares. An Extension whose password cannot
//!    be resolved still yields a record, disabled and saying why; an Extension claiming a number
//!    already taken is left out. Both are reported as [`ExtensionProblem`]s.
//!
//! Secret values are kept as [`SecretValue`], whose `Debug` is redacted, and no error message
//! repeats a value found in a Secret.
//!
//! The admin API of `kubepbx up` changes the folder through [`write`](mod@write) (which files
//! to write for a new, changed or deleted extension, checked with [`read_dir_with`] before
//! anything is written) and [`edit`] (one file's documents edited as text, the others kept byte
//! for byte).

pub mod edit;
mod resolve;
mod sync;
#[cfg(test)]
mod tests;
pub mod write;

pub use resolve::{
    ExtensionProblem, ProblemKind, Resolved, SecretProblem, extension_record, fingerprint,
    password_of, password_text, records,
};
pub use sync::{Plan, plan};

use crate::extension::ExtensionSpec;
use base64::Engine as _;
use serde::Deserialize;
use serde_norway::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

/// `apiVersion` of the Extension resource.
pub const EXTENSION_API_VERSION: &str = "kubepbx.io/v1alpha1";
/// API group of kubepbx resources.
const GROUP_PREFIX: &str = "kubepbx.io/";
/// Larger files are refused rather than read.
const MAX_FILE_BYTES: u64 = 8 << 20;
/// At most this many documents are read from one file.
const MAX_DOCUMENTS: usize = 10_000;

/// Everything read from a manifest folder.
#[derive(Debug, Clone, Default)]
pub struct ManifestSet {
    /// Valid Extensions, in file-name then document order.
    pub extensions: Vec<ExtensionManifest>,
    /// Secrets by `(namespace, name)`.
    pub secrets: HashMap<(String, String), SecretManifest>,
    /// Documents or files that could not be used.
    pub errors: Vec<ManifestError>,
}

/// One `Extension` document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionManifest {
    /// `metadata.namespace`, `default` when absent.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// The validated spec.
    pub spec: ExtensionSpec,
    /// File it came from.
    pub file: PathBuf,
    /// 1-based document number in that file.
    pub document: usize,
}

/// One `Secret` document, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretManifest {
    /// `metadata.namespace`, `default` when absent.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// Keys and values: `data` decoded from base64, overridden by `stringData`.
    pub data: BTreeMap<String, SecretValue>,
    /// Keys whose value could not be decoded (each reported in [`ManifestSet::errors`]).
    pub invalid_keys: BTreeSet<String>,
    /// File it came from.
    pub file: PathBuf,
    /// 1-based document number in that file.
    pub document: usize,
}

/// A value from a Secret: bytes whose `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Vec<u8>);

impl SecretValue {
    /// Wraps a value.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        SecretValue(bytes.into())
    }

    /// The value itself: use it, never log it.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

/// A file or document that could not be used.
///
/// Displays as `file: document N: field: message`, leaving out the parts that do not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    /// The file.
    pub file: PathBuf,
    /// 1-based document number, when the problem is in one document.
    pub document: Option<usize>,
    /// Path of the offending field, e.g. `spec.maxContacts`.
    pub field: Option<String>,
    /// What is wrong, in words a user can act on.
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(document) = self.document {
            write!(f, ": document {document}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The manifest folder itself could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read manifest folder {}: {source}", path.display())]
pub struct ManifestDirError {
    /// The folder.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Reads every manifest file of `dir` (see the module docs). Fails only when the folder itself
/// cannot be listed; problems with files and documents are collected in
/// [`ManifestSet::errors`].
pub fn read_dir(dir: &Path) -> Result<ManifestSet, ManifestDirError> {
    read_dir_with(dir, &[])
}

/// Like [`read_dir`], as if the files of `overlay` held the given text (`None`: as if the file
/// were gone). Shows what the folder would serve after a change, before it is written.
pub fn read_dir_with(
    dir: &Path,
    overlay: &[(PathBuf, Option<String>)],
) -> Result<ManifestSet, ManifestDirError> {
    let dir_error = |source| ManifestDirError {
        path: dir.to_owned(),
        source,
    };
    let mut set = ManifestSet::default();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(dir_error)? {
        let entry = entry.map_err(dir_error)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            tracing::debug!(file = ?entry.path(), "skipping a file whose name is not UTF-8");
            continue;
        };
        if !is_manifest_name(name) {
            continue;
        }
        let path = entry.path();
        // Follows symlinks: mounted ConfigMaps link every file.
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => files.push(path),
            Ok(_) => {}
            Err(e) => set.error(&path, None, None, format!("cannot read: {e}")),
        }
    }
    for (path, text) in overlay {
        let named = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(is_manifest_name);
        if text.is_some() && named && path.parent() == Some(dir) {
            files.push(path.clone());
        }
    }
    files.sort();
    files.dedup();
    for file in files {
        match overlay.iter().find(|(path, _)| *path == file) {
            Some((_, Some(text))) => set.read_str(&file, text),
            Some((_, None)) => {}
            None => set.read_file(&file),
        }
    }
    Ok(set)
}

/// `*.yaml` or `*.yml`, not hidden, not an editor's autosave.
fn is_manifest_name(name: &str) -> bool {
    if name.starts_with('.') || name.starts_with('#') || name.ends_with('~') {
        return false;
    }
    let Some((_, ext)) = name.rsplit_once('.') else {
        return false;
    };
    ext.eq_ignore_ascii_case("yaml") || ext.eq_ignore_ascii_case("yml")
}

#[derive(Deserialize)]
struct ObjectMeta {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Deserialize)]
struct ExtensionDoc {
    metadata: ObjectMeta,
    spec: ExtensionSpec,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecretDoc {
    metadata: ObjectMeta,
    #[serde(default)]
    data: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    string_data: Option<BTreeMap<String, Value>>,
}

impl ManifestSet {
    /// Reads one manifest file into the set.
    pub fn read_file(&mut self, path: &Path) {
        match std::fs::metadata(path) {
            Ok(meta) if meta.len() > MAX_FILE_BYTES => {
                let message = format!("file too large ({} bytes)", meta.len());
                return self.error(path, None, None, message);
            }
            Ok(_) => {}
            Err(e) => return self.error(path, None, None, format!("cannot read: {e}")),
        }
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => return self.error(path, None, None, format!("cannot read: {e}")),
        };
        match String::from_utf8(bytes) {
            Ok(text) => self.read_str(path, &text),
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                let message =
                    format!("not UTF-8 text (invalid byte at offset {at}): save it as UTF-8");
                self.error(path, None, None, message);
            }
        }
    }

    /// Reads the documents of one file's text; `file` names it in errors.
    pub fn read_str(&mut self, file: &Path, text: &str) {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (i, document) in serde_norway::Deserializer::from_str(text).enumerate() {
            let n = i + 1;
            if n > MAX_DOCUMENTS {
                let message = format!("more than {MAX_DOCUMENTS} documents; the rest is ignored");
                return self.error(file, None, None, message);
            }
            let mut value = match Value::deserialize(document) {
                Ok(value) => value,
                Err(e) => {
                    // A YAML syntax error ends the file: the parser cannot resynchronise.
                    return self.error(file, Some(n), None, e.to_string());
                }
            };
            if let Err(e) = value.apply_merge() {
                self.error(file, Some(n), None, e.to_string());
                continue;
            }
            self.read_document(file, n, value);
        }
    }

    fn read_document(&mut self, file: &Path, n: usize, value: Value) {
        if value.is_null() {
            return; // empty document or comments only
        }
        let api_version = value.get("apiVersion").and_then(Value::as_str);
        let kind = value.get("kind").and_then(Value::as_str);
        match (api_version, kind) {
            (Some(EXTENSION_API_VERSION), Some("Extension")) => self.read_extension(file, n, value),
            (Some(api), Some("Extension")) if api.starts_with(GROUP_PREFIX) => {
                let message = format!("{api} is not supported: use {EXTENSION_API_VERSION}");
                self.error(file, Some(n), Some("apiVersion".to_owned()), message);
            }
            (Some("v1"), Some("Secret")) => self.read_secret(file, n, value),
            (api, kind) => {
                tracing::debug!(file = %file.display(), document = n, ?api, ?kind,
                    "ignoring a manifest that is not an Extension or a Secret");
            }
        }
    }

    fn read_extension(&mut self, file: &Path, n: usize, value: Value) {
        let doc: ExtensionDoc = match serde_path_to_error::deserialize(value) {
            Ok(doc) => doc,
            Err(e) => {
                let field = field_path(e.path());
                let message = with_hint(&e.inner().to_string());
                return self.error(file, Some(n), field, message);
            }
        };
        let Some((namespace, name)) = self.metadata(file, n, doc.metadata) else {
            return;
        };
        if let Err(invalid) = doc.spec.validate() {
            let field = Some(invalid.field.to_owned());
            return self.error(file, Some(n), field, invalid.problem);
        }
        self.extensions.push(ExtensionManifest {
            namespace,
            name,
            spec: doc.spec,
            file: file.to_owned(),
            document: n,
        });
    }

    fn read_secret(&mut self, file: &Path, n: usize, value: Value) {
        let doc: SecretDoc = match serde_path_to_error::deserialize(value) {
            Ok(doc) => doc,
            Err(e) => {
                // The values are read as raw YAML, so this is about metadata or the shape of
                // `data` / `stringData`, never about a secret value.
                let field = field_path(e.path());
                return self.error(file, Some(n), field, e.inner().to_string());
            }
        };
        let Some((namespace, name)) = self.metadata(file, n, doc.metadata) else {
            return;
        };
        let mut data = BTreeMap::new();
        let mut invalid_keys = BTreeSet::new();
        for (key, value) in doc.data.unwrap_or_default() {
            let decoded = match &value {
                Value::String(text) => decode_base64(text)
                    .ok_or("not valid base64 (the value is not shown); encode it with `base64 -w0` or use stringData"),
                _ => Err("must be a base64-encoded string (the value is not shown)"),
            };
            match decoded {
                Ok(bytes) => {
                    data.insert(key, SecretValue(bytes));
                }
                Err(message) => {
                    self.error(
                        file,
                        Some(n),
                        Some(format!("data.{key}")),
                        message.to_owned(),
                    );
                    invalid_keys.insert(key);
                }
            }
        }
        for (key, value) in doc.string_data.unwrap_or_default() {
            match value {
                Value::String(text) => {
                    invalid_keys.remove(&key);
                    data.insert(key, SecretValue(text.into_bytes()));
                }
                _ => {
                    let message =
                        "must be a string: quote the value in YAML (the value is not shown)";
                    self.error(
                        file,
                        Some(n),
                        Some(format!("stringData.{key}")),
                        message.to_owned(),
                    );
                    data.remove(&key);
                    invalid_keys.insert(key);
                }
            }
        }
        let id = (namespace.clone(), name.clone());
        if let Some(first) = self.secrets.get(&id) {
            let message = format!(
                "Secret {namespace}/{name} is already defined in {}: document {}; this one is ignored",
                first.file.display(),
                first.document
            );
            return self.error(file, Some(n), Some("metadata.name".to_owned()), message);
        }
        let secret = SecretManifest {
            namespace,
            name,
            data,
            invalid_keys,
            file: file.to_owned(),
            document: n,
        };
        self.secrets.insert(id, secret);
    }

    /// Namespace and name, validated as Kubernetes would.
    fn metadata(&mut self, file: &Path, n: usize, meta: ObjectMeta) -> Option<(String, String)> {
        if !is_dns_subdomain(&meta.name) {
            let message = format!(
                "{:?} is not a valid name: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
                meta.name
            );
            self.error(file, Some(n), Some("metadata.name".to_owned()), message);
            return None;
        }
        let namespace = match meta.namespace {
            None => "default".to_owned(),
            Some(ns) if ns.is_empty() => "default".to_owned(),
            Some(ns) if is_dns_label(&ns) => ns,
            Some(ns) => {
                let message = format!(
                    "{ns:?} is not a valid namespace: use up to 63 lowercase letters, digits and '-'"
                );
                self.error(
                    file,
                    Some(n),
                    Some("metadata.namespace".to_owned()),
                    message,
                );
                return None;
            }
        };
        Some((namespace, meta.name))
    }

    fn error(
        &mut self,
        file: &Path,
        document: Option<usize>,
        field: Option<String>,
        message: String,
    ) {
        self.errors.push(ManifestError {
            file: file.to_owned(),
            document,
            field,
            message,
        });
    }
}

/// `None` for the root (`.`), which names no field.
fn field_path(path: &serde_path_to_error::Path) -> Option<String> {
    let text = path.to_string();
    (text != ".").then_some(text)
}

/// Adds what to do to serde's wording where it helps.
fn with_hint(message: &str) -> String {
    let scalar = ["integer", "floating point", "boolean"];
    if message.contains("expected a string")
        && scalar
            .iter()
            .any(|s| message.starts_with(&format!("invalid type: {s}")))
    {
        format!("{message}; quote the value")
    } else {
        message.to_owned()
    }
}

/// Standard base64 as Kubernetes writes it; line breaks are ignored, as the API server does.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !matches!(c, '\n' | '\r')).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .ok()
}

/// RFC 1123 subdomain: what Kubernetes accepts as an object name.
fn is_dns_subdomain(name: &str) -> bool {
    (1..=253).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// RFC 1123 label: what Kubernetes accepts as a namespace.
fn is_dns_label(name: &str) -> bool {
    name.len() <= 63 && !name.contains('.') && is_dns_subdomain(name)
}
