//! Changing a manifest folder for the admin API: the files to write so that an extension is
//! created, changed or deleted — decided and checked before anything is written.
//!
//! | operation | files |
//! |---|---|
//! | [`create`] | a new `ext-<number>.yaml` holding the Extension and its Secret (`stringData`) |
//! | [`change`] | the file defining the Extension (spec fields) and the one defining its Secret (password under `stringData`, the old `data` key removed); a missing Secret is added to the Extension's file |
//! | [`delete`] | the Extension's document, and its Secret's unless another Extension uses it; a file left with nothing but comments is removed |
//!
//! Only the affected documents change (see [`super::edit`]). Each operation then reads the
//! folder again as it would be ([`read_dir_with`]) and refuses the change unless the extension
//! comes out as asked and every other extension stays exactly as it was. [`commit`] writes the
//! files, each atomically: a temporary file in the same folder, synced, renamed into place.

use super::edit::{DocumentId, EditError, FieldEdit, ManifestText, render};
use super::{ExtensionManifest, ManifestSet, Resolved, read_dir, read_dir_with, records};
use crate::admin::{ExtensionChange, NewExtension, Patch, RequestError, object_name};
use crate::extension::{ExtensionSpec, RecordingPolicy};
use crate::records::{ExtensionRecord, UserKey};
use serde_norway::{Mapping, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The namespace of what the admin API creates.
pub const NAMESPACE: &str = "default";

/// One file to write or remove.
#[derive(Clone, PartialEq, Eq)]
pub enum FileChange {
    /// Write `text` to `path` (new or replaced).
    Write {
        /// The file.
        path: PathBuf,
        /// Its new content (may hold a password).
        text: String,
    },
    /// Remove `path`.
    Remove {
        /// The file.
        path: PathBuf,
    },
}

impl FileChange {
    /// The file.
    pub fn path(&self) -> &Path {
        match self {
            FileChange::Write { path, .. } | FileChange::Remove { path } => path,
        }
    }
}

impl fmt::Debug for FileChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The text may hold a password: never shown.
        match self {
            FileChange::Write { path, text } => {
                write!(f, "Write({}, {} bytes)", path.display(), text.len())
            }
            FileChange::Remove { path } => write!(f, "Remove({})", path.display()),
        }
    }
}

/// Why a change of the folder was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// No extension with that number in that domain.
    #[error("{0}")]
    NotFound(String),
    /// The extension to create exists.
    #[error("{0}")]
    Exists(String),
    /// The request breaks a rule of the spec.
    #[error(transparent)]
    Invalid(#[from] RequestError),
    /// The folder's content prevents the change (nothing was written).
    #[error("{0}")]
    Conflict(String),
    /// A file or the folder cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file cannot be written or removed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What the folder must serve after a change.
enum Expect<'a> {
    /// The extension, from Extension `source` with this spec; with its password resolved when
    /// `password` is set.
    Served {
        key: &'a UserKey,
        source: String,
        spec: &'a ExtensionSpec,
        password: bool,
    },
    /// No such extension.
    Gone(&'a UserKey),
}

/// The folder as read before a change, and the files being edited.
struct Folder<'a> {
    dir: &'a Path,
    domain: &'a str,
    set: ManifestSet,
    resolved: Resolved,
    texts: BTreeMap<PathBuf, ManifestText>,
}

impl<'a> Folder<'a> {
    fn read(dir: &'a Path, domain: &'a str) -> Result<Self, WriteError> {
        let set = read_dir(dir).map_err(|e| WriteError::Read {
            path: e.path,
            source: e.source,
        })?;
        let resolved = records(&set, domain);
        Ok(Folder {
            dir,
            domain,
            set,
            resolved,
            texts: BTreeMap::new(),
        })
    }

    /// The key an Extension claims.
    fn key_of(&self, m: &ExtensionManifest) -> UserKey {
        let domain = m.spec.domain.as_deref().unwrap_or(self.domain);
        UserKey::new(domain.to_ascii_lowercase(), m.spec.extension.as_str())
    }

    /// The Extension serving `key`.
    fn served(&self, key: &UserKey) -> Result<ExtensionManifest, WriteError> {
        let source = self
            .resolved
            .records
            .iter()
            .find(|r| r.key() == *key)
            .map(|r| r.source.clone());
        source
            .and_then(|source| {
                self.set
                    .extensions
                    .iter()
                    .find(|m| format!("{}/{}", m.namespace, m.name) == source)
                    .cloned()
            })
            .ok_or_else(|| {
                WriteError::NotFound(format!(
                    "there is no extension {} in domain {} (GET /api/v1/extensions lists them)",
                    key.user, key.domain
                ))
            })
    }

    /// The file's text, read once.
    fn text(&mut self, path: &Path) -> Result<&mut ManifestText, WriteError> {
        if !self.texts.contains_key(path) {
            let text = std::fs::read_to_string(path).map_err(|source| WriteError::Read {
                path: path.to_owned(),
                source,
            })?;
            self.texts
                .insert(path.to_owned(), ManifestText::parse(&text));
        }
        self.texts
            .get_mut(path)
            .ok_or_else(|| WriteError::Conflict(format!("{} vanished", path.display())))
    }

    /// The index of document `id` in `path`.
    fn find(&mut self, path: &Path, id: &DocumentId) -> Result<usize, WriteError> {
        self.text(path)?.find(id).ok_or_else(|| {
            WriteError::Conflict(format!(
                "{}: the {:?} {}/{} cannot be located as a document of its own; edit the file by \
                 hand",
                path.display(),
                id.kind,
                id.namespace,
                id.name
            ))
        })
    }

    fn edit(
        &mut self,
        path: &Path,
        id: &DocumentId,
        edits: &[FieldEdit],
    ) -> Result<(), WriteError> {
        let index = self.find(path, id)?;
        self.text(path)?
            .set_fields(index, edits)
            .map_err(|e| edit_error(path, e))
    }

    fn remove(&mut self, path: &Path, id: &DocumentId) -> Result<(), WriteError> {
        let index = self.find(path, id)?;
        self.text(path)?.remove(index);
        Ok(())
    }

    /// The edited files as changes: a file left blank is removed.
    fn changes(&self) -> Vec<FileChange> {
        self.texts
            .iter()
            .map(|(path, text)| {
                if text.is_blank() {
                    FileChange::Remove { path: path.clone() }
                } else {
                    FileChange::Write {
                        path: path.clone(),
                        text: text.text(),
                    }
                }
            })
            .collect()
    }

    /// Reads the folder as it would be after `changes` and checks it serves what `expect` says,
    /// every other extension unchanged.
    fn check(&self, changes: &[FileChange], expect: Expect<'_>) -> Result<(), WriteError> {
        let overlay: Vec<(PathBuf, Option<String>)> = changes
            .iter()
            .map(|c| match c {
                FileChange::Write { path, text } => (path.clone(), Some(text.clone())),
                FileChange::Remove { path } => (path.clone(), None),
            })
            .collect();
        let after = read_dir_with(self.dir, &overlay).map_err(|e| WriteError::Read {
            path: e.path,
            source: e.source,
        })?;
        let target = match &expect {
            Expect::Served { key, .. } | Expect::Gone(key) => *key,
        };
        let resolved = records(&after, self.domain);
        let others = |records: &[ExtensionRecord]| -> BTreeMap<UserKey, ExtensionRecord> {
            records
                .iter()
                .filter(|r| r.key() != *target)
                .map(|r| (r.key(), r.clone()))
                .collect()
        };
        let (before, now) = (others(&self.resolved.records), others(&resolved.records));
        if before != now {
            let changed = before
                .keys()
                .chain(now.keys())
                .find(|k| before.get(*k) != now.get(*k))
                .map_or_else(String::new, ToString::to_string);
            return Err(WriteError::Conflict(format!(
                "the change would also affect extension {changed}, so nothing was written; \
                 check the manifest folder for duplicate definitions"
            )));
        }
        if after.errors.len() > self.set.errors.len() {
            let first = after
                .errors
                .iter()
                .find(|e| !self.set.errors.contains(e))
                .map_or_else(String::new, ToString::to_string);
            return Err(WriteError::Conflict(format!(
                "the change would make a manifest invalid, so nothing was written: {first}"
            )));
        }
        let record = resolved.records.iter().find(|r| r.key() == *target);
        match (expect, record) {
            (Expect::Gone(_), None) => Ok(()),
            (Expect::Gone(key), Some(r)) => Err(WriteError::Conflict(format!(
                "extension {key} would still be defined by Extension {}, so nothing was written",
                r.source
            ))),
            (
                Expect::Served {
                    source,
                    spec,
                    password,
                    ..
                },
                Some(r),
            ) if r.source == source
                && r.display_name == spec.display_name
                && r.max_contacts == spec.max_contacts
                && r.recording == spec.recording
                && (r.disabled_reason.is_some() || r.enabled == spec.enabled)
                && (!password || r.disabled_reason.is_none()) =>
            {
                Ok(())
            }
            (Expect::Served { key, source, .. }, r) => {
                let why = r
                    .and_then(|r| r.disabled_reason.clone())
                    .or_else(|| {
                        resolved
                            .problems
                            .iter()
                            .find(|p| p.source == source)
                            .map(ToString::to_string)
                    })
                    .unwrap_or_else(|| "it is not served as asked".to_owned());
                Err(WriteError::Conflict(format!(
                    "extension {key} would not be served as asked ({why}), so nothing was written"
                )))
            }
        }
    }
}

fn edit_error(path: &Path, e: EditError) -> WriteError {
    WriteError::Conflict(format!("{}: {e}", path.display()))
}

/// The files creating `new`, and the extension's key (its domain defaults to `default_domain`).
pub fn create(
    dir: &Path,
    default_domain: &str,
    new: &NewExtension,
) -> Result<(UserKey, Vec<FileChange>), WriteError> {
    let folder = Folder::read(dir, default_domain)?;
    let mut spec = new.spec.clone();
    let domain = spec.domain.as_deref().unwrap_or(default_domain);
    let key = UserKey::new(domain.to_ascii_lowercase(), spec.extension.as_str());
    if let Some(m) = folder
        .set
        .extensions
        .iter()
        .find(|m| folder.key_of(m) == key)
    {
        return Err(WriteError::Exists(format!(
            "extension {} in domain {} exists (Extension {}/{} in {}); change it with PATCH \
             /api/v1/extensions/{}/{}",
            key.user,
            key.domain,
            m.namespace,
            m.name,
            m.file.display(),
            key.domain,
            key.user
        )));
    }
    let name = free_name(&folder, &object_name(&spec.extension))?;
    spec.password_secret_ref.name.clone_from(&name);
    let path = dir.join(format!("{name}.yaml"));
    let secret = secret_document(
        NAMESPACE,
        &name,
        &spec.password_secret_ref.key,
        new.password.expose(),
    );
    let documents = extension_document(&name, &spec)
        .and_then(|ext| Ok((render(&ext)?, render(&secret)?)))
        .map_err(|e| edit_error(&path, e))?;
    let text = format!(
        "# Extension {} and its password, created with the admin API; edit it freely.\n{}---\n{}",
        spec.extension, documents.0, documents.1,
    );
    let changes = vec![FileChange::Write { path, text }];
    folder.check(
        &changes,
        Expect::Served {
            key: &key,
            source: format!("{NAMESPACE}/{name}"),
            spec: &spec,
            password: true,
        },
    )?;
    Ok((key, changes))
}

/// The files changing extension `key` as `change` says (none when it changes nothing).
pub fn change(
    dir: &Path,
    default_domain: &str,
    key: &UserKey,
    change: &ExtensionChange,
) -> Result<Vec<FileChange>, WriteError> {
    let mut folder = Folder::read(dir, default_domain)?;
    let m = folder.served(key)?;
    let spec = change.apply_to(&m.spec)?;
    if change.is_empty() {
        return Ok(Vec::new());
    }
    let edits = spec_edits(change);
    let ext_id = DocumentId::extension(&m.namespace, &m.name);
    if !edits.is_empty() {
        folder.edit(&m.file, &ext_id, &edits)?;
    }
    if let Some(password) = &change.password {
        let secret_ref = &m.spec.password_secret_ref;
        let sharing = folder.set.extensions.iter().find(|other| {
            other.namespace == m.namespace
                && other.spec.password_secret_ref == *secret_ref
                && (other.name != m.name || other.file != m.file)
        });
        if let Some(other) = sharing {
            return Err(WriteError::Conflict(format!(
                "the password is key {:?} of Secret {}/{}, which Extension {}/{} ({}) uses too; \
                 a change would change its password as well. Give this extension a Secret of \
                 its own (spec.passwordSecretRef) or edit the Secret by hand",
                secret_ref.key,
                m.namespace,
                secret_ref.name,
                other.namespace,
                other.name,
                other.file.display()
            )));
        }
        let secret_id = DocumentId::secret(&m.namespace, &secret_ref.name);
        let found = folder
            .set
            .secrets
            .get(&(m.namespace.clone(), secret_ref.name.clone()))
            .map(|s| s.file.clone());
        match found {
            Some(file) => folder.edit(
                &file,
                &secret_id,
                &[
                    FieldEdit::set("stringData", &secret_ref.key, password.expose()),
                    FieldEdit::remove("data", &secret_ref.key),
                ],
            )?,
            None => {
                let doc = secret_document(
                    &m.namespace,
                    &secret_ref.name,
                    &secret_ref.key,
                    password.expose(),
                );
                folder
                    .text(&m.file)?
                    .push(&doc)
                    .map_err(|e| edit_error(&m.file, e))?;
            }
        }
    }
    let changes = folder.changes();
    folder.check(
        &changes,
        Expect::Served {
            key,
            source: format!("{}/{}", m.namespace, m.name),
            spec: &spec,
            password: change.password.is_some(),
        },
    )?;
    Ok(changes)
}

/// The files deleting extension `key`: every Extension claiming it, and their Secrets that no
/// other Extension uses.
pub fn delete(
    dir: &Path,
    default_domain: &str,
    key: &UserKey,
) -> Result<Vec<FileChange>, WriteError> {
    let mut folder = Folder::read(dir, default_domain)?;
    folder.served(key)?;
    let claimers: Vec<ExtensionManifest> = folder
        .set
        .extensions
        .iter()
        .filter(|m| folder.key_of(m) == *key)
        .cloned()
        .collect();
    for m in &claimers {
        folder.remove(&m.file, &DocumentId::extension(&m.namespace, &m.name))?;
        let secret = (m.namespace.clone(), m.spec.password_secret_ref.name.clone());
        let used_elsewhere = folder.set.extensions.iter().any(|other| {
            folder.key_of(other) != *key
                && other.namespace == secret.0
                && other.spec.password_secret_ref.name == secret.1
        });
        let file = folder.set.secrets.get(&secret).map(|s| s.file.clone());
        if let Some(file) = file.filter(|_| !used_elsewhere) {
            let id = DocumentId::secret(&secret.0, &secret.1);
            // Two claimers may share the Secret: removed once.
            if folder.text(&file)?.find(&id).is_some() {
                folder.remove(&file, &id)?;
            }
        }
    }
    let changes = folder.changes();
    folder.check(&changes, Expect::Gone(key))?;
    Ok(changes)
}

/// The spec fields `change` sets or removes.
fn spec_edits(change: &ExtensionChange) -> Vec<FieldEdit> {
    fn edit<T: Clone + Into<Value>>(edits: &mut Vec<FieldEdit>, key: &str, patch: &Patch<T>) {
        match patch {
            Patch::Keep => {}
            Patch::Reset => edits.push(FieldEdit::remove("spec", key)),
            Patch::Set(value) => edits.push(FieldEdit::set("spec", key, value.clone())),
        }
    }
    let mut edits = Vec::new();
    edit(&mut edits, "displayName", &change.display_name);
    edit(&mut edits, "enabled", &change.enabled);
    edit(&mut edits, "maxContacts", &change.max_contacts);
    let recording = match change.recording {
        Patch::Keep => Patch::Keep,
        Patch::Reset => Patch::Reset,
        Patch::Set(RecordingPolicy::Never) => Patch::Set("Never"),
        Patch::Set(RecordingPolicy::Always) => Patch::Set("Always"),
    };
    edit(&mut edits, "recording", &recording);
    edits
}

/// `base`, or `base-2`, `base-3`…: the first name no Extension, Secret or file of the folder
/// has.
fn free_name(folder: &Folder<'_>, base: &str) -> Result<String, WriteError> {
    let taken = |name: &str| {
        folder
            .set
            .extensions
            .iter()
            .any(|m| m.namespace == NAMESPACE && m.name == name)
            || folder
                .set
                .secrets
                .contains_key(&(NAMESPACE.to_owned(), name.to_owned()))
            || ["yaml", "yml"]
                .iter()
                .any(|ext| folder.dir.join(format!("{name}.{ext}")).exists())
    };
    std::iter::once(base.to_owned())
        .chain((2..100).map(|n| format!("{base}-{n}")))
        .find(|name| !taken(name))
        .ok_or_else(|| {
            WriteError::Conflict(format!(
                "no free name for the manifest: {base} to {base}-99 are taken"
            ))
        })
}

fn extension_document(name: &str, spec: &ExtensionSpec) -> Result<Value, EditError> {
    let spec = serde_norway::to_value(spec).map_err(|e| EditError::new(e.to_string()))?;
    let mut doc = Mapping::new();
    doc.insert("apiVersion".into(), super::EXTENSION_API_VERSION.into());
    doc.insert("kind".into(), "Extension".into());
    doc.insert("metadata".into(), metadata(NAMESPACE, name));
    doc.insert("spec".into(), spec);
    Ok(Value::Mapping(doc))
}

fn secret_document(namespace: &str, name: &str, key: &str, password: &str) -> Value {
    let mut data = Mapping::new();
    data.insert(key.into(), password.into());
    let mut doc = Mapping::new();
    doc.insert("apiVersion".into(), "v1".into());
    doc.insert("kind".into(), "Secret".into());
    doc.insert("metadata".into(), metadata(namespace, name));
    doc.insert("type".into(), "Opaque".into());
    doc.insert("stringData".into(), Value::Mapping(data));
    Value::Mapping(doc)
}

fn metadata(namespace: &str, name: &str) -> Value {
    let mut meta = Mapping::new();
    meta.insert("name".into(), name.into());
    meta.insert("namespace".into(), namespace.into());
    Value::Mapping(meta)
}

/// Writes the files of `changes`, each atomically, in order. A file that is a symlink is
/// written where it points (the link stays).
pub fn commit(changes: &[FileChange]) -> Result<(), WriteError> {
    for change in changes {
        match change {
            FileChange::Write { path, text } => write_atomically(path, text.as_bytes())?,
            FileChange::Remove { path } => match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(WriteError::Write {
                        path: path.clone(),
                        source,
                    });
                }
            },
        }
    }
    Ok(())
}

/// A temporary file beside `path`, synced, then renamed over it; the old file's permissions
/// are kept (a new file is readable by its owner only: it holds a password).
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let error = |source| WriteError::Write {
        path: path.to_owned(),
        source,
    };
    let target = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => std::fs::canonicalize(path).map_err(error)?,
        _ => path.to_owned(),
    };
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return Err(error(std::io::Error::other("not a file path")));
    };
    let temp = dir.join(format!(
        ".{}.{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        if let Ok(old) = std::fs::metadata(&target) {
            std::fs::set_permissions(&temp, old.permissions())?;
        }
        std::fs::rename(&temp, &target)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(error(e));
    }
    // The rename is durable once the folder is synced; a failure here loses nothing.
    if let Ok(folder) = std::fs::File::open(dir) {
        let _ = folder.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests;
