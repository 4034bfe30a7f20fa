//! Extension + Secret manifests written into a `kubepbx up -f` folder.
//!
//! The YAML has the shape of `examples/ext-1001.yaml` (what `kubectl apply` takes): one file
//! `ext-<n>.yaml` per extension holding the Extension and its Secret, or one multi-document file
//! for thousands of extensions ([`write_extensions_bulk`]). Files are written to a dot-named
//! temporary file and renamed into place, so a folder watcher never reads half a manifest.
//! Strings are emitted as YAML double-quoted scalars (JSON string syntax, which YAML 1.2 reads
//! as the same string), so any password round-trips.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::error::{IoContext, Result};

/// The password tests give extension `ext` unless they choose another: `change-me-<ext>`, as in
/// `examples/`.
pub fn default_password(ext: &str) -> String {
    format!("change-me-{ext}")
}

/// Optional fields of an Extension; [`Default`] gives an enabled extension in namespace
/// `default` with the PBX's domain and the CRD's defaults for the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionOpts {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `spec.domain`; `None` leaves it out (the PBX's `--domain` applies).
    pub domain: Option<String>,
    /// `spec.displayName`.
    pub display_name: Option<String>,
    /// `spec.enabled`.
    pub enabled: bool,
    /// `spec.maxContacts`; `None` leaves the CRD default.
    pub max_contacts: Option<u32>,
    /// `spec.recording` (`Never` or `Always`); `None` leaves the CRD default.
    pub recording: Option<String>,
    /// Put the password under `data:` base64-encoded (as `kubectl create secret` does) instead
    /// of `stringData:`.
    pub password_base64: bool,
}

impl Default for ExtensionOpts {
    fn default() -> Self {
        ExtensionOpts {
            namespace: "default".to_owned(),
            domain: None,
            display_name: None,
            enabled: true,
            max_contacts: None,
            recording: None,
            password_base64: false,
        }
    }
}

/// `metadata.name` for extension `ext`: `ext-<ext>`, lowercased, other characters than
/// `[a-z0-9-]` replaced by `-` (a Kubernetes object name).
pub fn object_name(ext: &str) -> String {
    let body: String = ext
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() { c } else { '-' }
        })
        .collect();
    format!("ext-{body}")
}

/// The file [`write_extension`] writes for `ext`: `<dir>/ext-<ext>.yaml`.
pub fn extension_path(dir: &Path, ext: &str) -> PathBuf {
    dir.join(format!("{}.yaml", object_name(ext)))
}

/// The Extension and Secret documents for one extension, separated by `---`.
pub fn extension_yaml(ext: &str, password: &str, opts: &ExtensionOpts) -> String {
    let name = object_name(ext);
    let mut y = String::new();
    let q = quote;
    // Writing to a String cannot fail.
    let _ = writeln!(y, "apiVersion: kubepbx.io/v1alpha1");
    let _ = writeln!(y, "kind: Extension");
    let _ = writeln!(y, "metadata:");
    let _ = writeln!(y, "  name: {}", q(&name));
    let _ = writeln!(y, "  namespace: {}", q(&opts.namespace));
    let _ = writeln!(y, "spec:");
    let _ = writeln!(y, "  extension: {}", q(ext));
    if let Some(domain) = &opts.domain {
        let _ = writeln!(y, "  domain: {}", q(domain));
    }
    if let Some(display) = &opts.display_name {
        let _ = writeln!(y, "  displayName: {}", q(display));
    }
    let _ = writeln!(y, "  passwordSecretRef:");
    let _ = writeln!(y, "    name: {}", q(&name));
    let _ = writeln!(y, "    key: password");
    let _ = writeln!(y, "  enabled: {}", opts.enabled);
    if let Some(max) = opts.max_contacts {
        let _ = writeln!(y, "  maxContacts: {max}");
    }
    if let Some(rec) = &opts.recording {
        let _ = writeln!(y, "  recording: {}", q(rec));
    }
    let _ = writeln!(y, "---");
    let _ = writeln!(y, "apiVersion: v1");
    let _ = writeln!(y, "kind: Secret");
    let _ = writeln!(y, "metadata:");
    let _ = writeln!(y, "  name: {}", q(&name));
    let _ = writeln!(y, "  namespace: {}", q(&opts.namespace));
    let _ = writeln!(y, "type: Opaque");
    if opts.password_base64 {
        let b64 = base64::engine::general_purpose::STANDARD.encode(password);
        let _ = writeln!(y, "data:");
        let _ = writeln!(y, "  password: {}", q(&b64));
    } else {
        let _ = writeln!(y, "stringData:");
        let _ = writeln!(y, "  password: {}", q(password));
    }
    y
}

/// Writes `ext-<ext>.yaml` (Extension + Secret) into `dir`, replacing an earlier version
/// atomically. Returns the path.
pub fn write_extension(
    dir: &Path,
    ext: &str,
    password: &str,
    opts: &ExtensionOpts,
) -> Result<PathBuf> {
    let path = extension_path(dir, ext);
    write_atomically(&path, &extension_yaml(ext, password, opts))?;
    Ok(path)
}

/// Deletes `ext-<ext>.yaml` from `dir` (the PBX should then drop the extension).
pub fn remove_extension(dir: &Path, ext: &str) -> Result<()> {
    let path = extension_path(dir, ext);
    std::fs::remove_file(&path).context(|| format!("remove {}", path.display()))
}

/// Writes many extensions as one multi-document YAML file `<dir>/<file_name>` (for benchmarks:
/// one file for 10,000 extensions instead of 10,000 files). Returns the path.
pub fn write_extensions_bulk<'a>(
    dir: &Path,
    file_name: &str,
    extensions: impl IntoIterator<Item = (&'a str, &'a str)>,
    opts: &ExtensionOpts,
) -> Result<PathBuf> {
    let mut yaml = String::new();
    for (i, (ext, password)) in extensions.into_iter().enumerate() {
        if i > 0 {
            yaml.push_str("---\n");
        }
        yaml.push_str(&extension_yaml(ext, password, opts));
    }
    let path = dir.join(file_name);
    write_atomically(&path, &yaml)?;
    Ok(path)
}

/// A YAML double-quoted scalar (JSON string syntax).
fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn write_atomically(path: &Path, contents: &str) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).context(|| format!("create {}", dir.display()))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp"));
    std::fs::write(&tmp, contents).context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .context(|| format!("rename {} to {}", tmp.display(), path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_extension_matches_the_example_shape() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_extension(
            dir.path(),
            "1001",
            "change-me-1001",
            &ExtensionOpts {
                display_name: Some("Reception".into()),
                max_contacts: Some(5),
                recording: Some("Never".into()),
                ..ExtensionOpts::default()
            },
        )
        .unwrap();
        assert_eq!(path, dir.path().join("ext-1001.yaml"));
        let yaml = std::fs::read_to_string(&path).unwrap();
        let expected = "\
apiVersion: kubepbx.io/v1alpha1
kind: Extension
metadata:
  name: \"ext-1001\"
  namespace: \"default\"
spec:
  extension: \"1001\"
  displayName: \"Reception\"
  passwordSecretRef:
    name: \"ext-1001\"
    key: password
  enabled: true
  maxContacts: 5
  recording: \"Never\"
---
apiVersion: v1
kind: Secret
metadata:
  name: \"ext-1001\"
  namespace: \"default\"
type: Opaque
stringData:
  password: \"change-me-1001\"
";
        assert_eq!(yaml, expected);
        // Nothing but the manifest is left in the folder.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("ext-1001.yaml")]);
    }

    #[test]
    fn awkward_passwords_are_quoted_and_base64_matches_kubectl() {
        let yaml = extension_yaml("1002", "p\"a:ss\\#1", &ExtensionOpts::default());
        assert!(yaml.contains(r#"  password: "p\"a:ss\\#1""#), "{yaml}");
        let opts = ExtensionOpts {
            password_base64: true,
            domain: Some("other.example.com".into()),
            enabled: false,
            ..ExtensionOpts::default()
        };
        let yaml = extension_yaml("1002", "change-me-1002", &opts);
        // The same value examples/ext-1002.yaml carries.
        assert!(
            yaml.contains("data:\n  password: \"Y2hhbmdlLW1lLTEwMDI=\"\n"),
            "{yaml}"
        );
        assert!(yaml.contains("  domain: \"other.example.com\"\n"));
        assert!(yaml.contains("  enabled: false\n"));
        assert!(!yaml.contains("maxContacts"));
    }

    #[test]
    fn object_names_are_kubernetes_names() {
        assert_eq!(object_name("1001"), "ext-1001");
        assert_eq!(object_name("Alice.Smith_2"), "ext-alice-smith-2");
    }

    #[test]
    fn rewrite_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let opts = ExtensionOpts::default();
        write_extension(dir.path(), "1001", "one", &opts).unwrap();
        write_extension(dir.path(), "1001", "two", &opts).unwrap();
        let yaml = std::fs::read_to_string(extension_path(dir.path(), "1001")).unwrap();
        assert!(yaml.contains("\"two\"") && !yaml.contains("\"one\""));
        remove_extension(dir.path(), "1001").unwrap();
        assert!(!extension_path(dir.path(), "1001").exists());
        assert!(remove_extension(dir.path(), "1001").is_err());
    }

    #[test]
    fn bulk_file_holds_two_documents_per_extension() {
        let dir = tempfile::tempdir().unwrap();
        let users: Vec<(String, String)> = (1001..1004)
            .map(|n| (n.to_string(), default_password(&n.to_string())))
            .collect();
        let path = write_extensions_bulk(
            dir.path(),
            "bulk.yaml",
            users.iter().map(|(u, p)| (u.as_str(), p.as_str())),
            &ExtensionOpts::default(),
        )
        .unwrap();
        let yaml = std::fs::read_to_string(path).unwrap();
        assert_eq!(yaml.matches("kind: Extension").count(), 3);
        assert_eq!(yaml.matches("kind: Secret").count(), 3);
        assert_eq!(
            yaml.matches("\n---\n").count() + usize::from(yaml.starts_with("---")),
            5
        );
        assert!(yaml.contains("password: \"change-me-1003\""));
    }
}
