//! Watching the manifest folder of `kubepbx up`.
//!
//! Every second the folder's listing (names, sizes, modification times of the manifest files)
//! is compared with the last one; when it changed, the folder is read again and the store is
//! brought in line with it ([`kubepbx_api::manifest::plan`] with pruning: an extension whose
//! manifest is gone is deleted, with its bindings). Polling works the same on every filesystem,
//! including mounted ConfigMaps and network shares, and a change is live within two seconds.
//!
//! Problems are logged with file, document and field. A broken document only loses what it
//! defined: every other extension keeps working. If the folder cannot be read at all (removed
//! while running), the store is left as it is until it can.
//!
//! The watcher is [`Shared`] with the admin API's writes ([`super::admin`]): a write holds its
//! lock while it edits the folder and then applies the folder at once ([`Watcher::rescan`]).

use anyhow::Result;
use kubepbx_api::manifest::{self, ManifestSet, ProblemKind};
use kubepbx_api::records::ExtensionRecord;
use kubepbx_api::store::Store;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// How often the folder is looked at.
const POLL: Duration = Duration::from_secs(1);

/// The watcher, shared by its polling task and the admin API's writes.
pub type Shared = Arc<tokio::sync::Mutex<Watcher>>;

/// Names, sizes and modification times of the manifest files: what "changed" means.
type Listing = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// The folder and what was last made of it.
#[derive(Debug)]
pub struct Watcher {
    dir: PathBuf,
    domain: String,
    listing: Option<Listing>,
    /// The records last written (what the store holds from this folder).
    held: Vec<ExtensionRecord>,
    /// Problems last reported, so an unchanged problem is not logged every second.
    reported: Vec<String>,
    unreadable: bool,
}

impl Watcher {
    /// A watcher for `dir`, with `domain` for Extensions without `spec.domain`.
    pub fn new(dir: PathBuf, domain: String) -> Self {
        Watcher {
            dir,
            domain,
            listing: None,
            held: Vec::new(),
            reported: Vec::new(),
            unreadable: false,
        }
    }

    /// The first load: the folder must be readable, and the store is brought in line with it
    /// (extensions removed from the folder while kubepbx was stopped are deleted).
    pub async fn initial_sync(&mut self, store: &dyn Store) -> Result<()> {
        let (snapshot, _) = store.watch().await?;
        self.held = snapshot.extensions;
        let listing = listing(&self.dir)?;
        let set = manifest::read_dir(&self.dir)?;
        self.sync(store, set).await?;
        self.listing = Some(listing);
        Ok(())
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The domain of Extensions without `spec.domain`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Polls until `shutdown`.
    pub async fn run(shared: Shared, store: Arc<dyn Store>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let mut watcher = shared.lock().await;
            if let Err(e) = watcher.poll(store.as_ref()).await {
                tracing::error!(error = %format!("{e:#}"), "applying the manifest folder failed; will retry");
                // Forget the listing so the next tick tries again.
                watcher.listing = None;
            }
        }
    }

    /// Reads the folder and applies it now, changed listing or not (a file rewritten within
    /// the same second may keep its size and modification time).
    pub async fn rescan(&mut self, store: &dyn Store) -> Result<()> {
        let dir = self.dir.clone();
        let (listing, set) =
            tokio::task::spawn_blocking(move || -> Result<(Listing, ManifestSet)> {
                Ok((listing(&dir)?, manifest::read_dir(&dir)?))
            })
            .await??;
        let synced = self.sync(store, set).await;
        // On failure the next poll tries again.
        self.listing = synced.is_ok().then_some(listing);
        synced
    }

    async fn poll(&mut self, store: &dyn Store) -> Result<()> {
        let dir = self.dir.clone();
        let read = tokio::task::spawn_blocking(move || listing(&dir)).await?;
        let listing = match read {
            Ok(l) => l,
            Err(e) => {
                if !self.unreadable {
                    tracing::error!(
                        error = %format!("{e:#}"),
                        "the manifest folder cannot be read; extensions stay as they are"
                    );
                    self.unreadable = true;
                }
                return Ok(());
            }
        };
        if self.unreadable {
            tracing::info!(folder = %self.dir.display(), "the manifest folder is readable again");
            self.unreadable = false;
        }
        if self.listing.as_ref() == Some(&listing) {
            return Ok(());
        }
        let dir = self.dir.clone();
        let set = tokio::task::spawn_blocking(move || manifest::read_dir(&dir)).await??;
        self.sync(store, set).await?;
        self.listing = Some(listing);
        Ok(())
    }

    async fn sync(&mut self, store: &dyn Store, set: ManifestSet) -> Result<()> {
        let resolved = manifest::records(&set, &self.domain);
        let mut problems: Vec<String> = set.errors.iter().map(ToString::to_string).collect();
        problems.extend(resolved.problems.iter().map(ToString::to_string));
        if problems != self.reported {
            for e in &set.errors {
                tracing::error!("invalid manifest: {e}; the rest of the folder is served");
            }
            for p in &resolved.problems {
                match p.kind {
                    ProblemKind::Secret(_) => tracing::error!("{p}"),
                    _ => tracing::warn!("{p}"),
                }
            }
            self.reported = problems;
        }
        let plan = manifest::plan(&self.held, &resolved.records, true);
        if plan.is_empty() {
            return Ok(());
        }
        store.apply(plan.writes.clone()).await?;
        for key in &plan.added {
            tracing::info!(extension = %key.user, domain = %key.domain, "extension added");
        }
        for key in &plan.changed {
            tracing::info!(extension = %key.user, domain = %key.domain, "extension updated");
        }
        for key in &plan.removed {
            tracing::info!(
                extension = %key.user,
                domain = %key.domain,
                "extension removed; its registrations are dropped"
            );
        }
        tracing::info!(
            folder = %self.dir.display(),
            extensions = resolved.records.len(),
            added = plan.added.len(),
            changed = plan.changed.len(),
            removed = plan.removed.len(),
            "manifests applied"
        );
        self.held = resolved.records;
        Ok(())
    }
}

/// The manifest files of `dir` with their sizes and modification times, sorted.
fn listing(dir: &Path) -> Result<Listing> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let is_manifest = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
        if !is_manifest {
            continue;
        }
        // Follows symlinks, as reading does (mounted ConfigMaps swap a symlinked folder).
        match std::fs::metadata(&path) {
            Ok(meta) => out.push((path, meta.len(), meta.modified().ok())),
            Err(_) => out.push((path, 0, None)),
        }
    }
    out.sort();
    Ok(out)
}
