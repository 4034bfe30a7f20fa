//! The admin API's extension writes in `kubepbx up`: they edit the manifest folder.
//!
//! A write holds the folder watcher's lock, so it never interleaves with a poll or another
//! write. It plans the file changes with [`kubepbx_api::manifest::write`] (a new
//! `ext-<number>.yaml`, or only the affected documents of existing files; the outcome checked
//! before anything is written), writes each file atomically (a temporary file in the folder,
//! then a rename), then has the watcher apply the folder at once ([`super::folder::Watcher::rescan`]) — the
//! path a hand edit takes, without waiting for the next poll. The store's change reaches the
//! registrar before any later query, so the API's answer already shows the result.
//!
//! Passwords go into the files only: logs name the files and extensions.

use super::folder::Shared;
use kubepbx_api::UserKey;
use kubepbx_api::admin::{ExtensionChange, NewExtension};
use kubepbx_api::manifest::write::{self, FileChange, WriteError};
use kubepbx_api::store::Store;
use kubepbx_registrar::admin::{AdminError, ExtensionAdmin};
use std::path::Path;
use std::sync::Arc;

/// [`ExtensionAdmin`] over the manifest folder (see the module docs).
#[derive(Debug)]
pub struct FolderAdmin {
    watcher: Shared,
    store: Arc<dyn Store>,
}

/// What a write planned, and the changes made before it ended.
struct Written<T> {
    result: Result<T, WriteError>,
    done: Vec<FileChange>,
}

impl FolderAdmin {
    /// Writes go to `watcher`'s folder and are applied to `store`.
    pub fn new(watcher: Shared, store: Arc<dyn Store>) -> Self {
        FolderAdmin { watcher, store }
    }

    /// Plans with `plan`, writes the files, applies the folder.
    async fn write<T, F>(&self, plan: F) -> Result<T, AdminError>
    where
        T: Send + 'static,
        F: FnOnce(&Path, &str) -> Result<(T, Vec<FileChange>), WriteError> + Send + 'static,
    {
        let mut watcher = self.watcher.lock().await;
        let (dir, domain) = (watcher.dir().to_owned(), watcher.domain().to_owned());
        let done = tokio::task::spawn_blocking(move || commit(plan(&dir, &domain)))
            .await
            .map_err(|e| AdminError::Unavailable(format!("the manifest write failed: {e}")))?;
        for change in &done.done {
            let file = change.path().display();
            match change {
                FileChange::Write { .. } => {
                    tracing::info!(%file, "manifest written through the admin API");
                }
                FileChange::Remove { .. } => {
                    tracing::info!(%file, "manifest removed through the admin API");
                }
            }
        }
        let written = names(&done.done);
        let result = done.result.map_err(|e| admin_error(e, &written));
        if !done.done.is_empty()
            && let Err(e) = watcher.rescan(self.store.as_ref()).await
        {
            return Err(AdminError::Unavailable(format!(
                "{written} written, but applying the folder failed: {e:#}; it is retried every \
                 second"
            )));
        }
        result
    }
}

/// Writes the planned changes in order, stopping at the first failure.
fn commit<T>(planned: Result<(T, Vec<FileChange>), WriteError>) -> Written<T> {
    let (out, changes) = match planned {
        Ok(planned) => planned,
        Err(e) => {
            return Written {
                result: Err(e),
                done: Vec::new(),
            };
        }
    };
    let mut done = Vec::new();
    for change in changes {
        if let Err(e) = write::commit(std::slice::from_ref(&change)) {
            return Written {
                result: Err(e),
                done,
            };
        }
        done.push(change);
    }
    Written {
        result: Ok(out),
        done,
    }
}

fn names(changes: &[FileChange]) -> String {
    let names: Vec<String> = changes
        .iter()
        .map(|c| c.path().display().to_string())
        .collect();
    names.join(", ")
}

fn admin_error(e: WriteError, written: &str) -> AdminError {
    match e {
        WriteError::NotFound(m) => AdminError::NotFound(m),
        WriteError::Exists(m) => AdminError::Exists(m),
        WriteError::Invalid(e) => e.into(),
        WriteError::Conflict(m) => AdminError::Conflict(m),
        WriteError::Read { .. } => AdminError::Unavailable(format!(
            "{e}; check that the manifest folder exists and is readable"
        )),
        WriteError::Write { .. } => {
            let done = if written.is_empty() {
                "nothing was changed".to_owned()
            } else {
                format!("{written} was written already")
            };
            AdminError::Unavailable(format!(
                "{e}; make the manifest folder writable for the user kubepbx runs as, or edit \
                 the manifests by hand ({done})"
            ))
        }
    }
}

#[async_trait::async_trait]
impl ExtensionAdmin for FolderAdmin {
    async fn create(&self, new: NewExtension) -> Result<UserKey, AdminError> {
        let key = self
            .write(move |dir, domain| write::create(dir, domain, &new))
            .await?;
        tracing::info!(extension = %key.user, domain = %key.domain, "extension created through the admin API");
        Ok(key)
    }

    async fn change(&self, key: &UserKey, change: ExtensionChange) -> Result<(), AdminError> {
        let k = key.clone();
        self.write(move |dir, domain| Ok(((), write::change(dir, domain, &k, &change)?)))
            .await?;
        tracing::info!(extension = %key.user, domain = %key.domain, "extension changed through the admin API");
        Ok(())
    }

    async fn delete(&self, key: &UserKey) -> Result<(), AdminError> {
        let k = key.clone();
        self.write(move |dir, domain| Ok(((), write::delete(dir, domain, &k)?)))
            .await?;
        tracing::info!(extension = %key.user, domain = %key.domain, "extension deleted through the admin API");
        Ok(())
    }
}
