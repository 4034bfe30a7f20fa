//! `kubepbx apply -f DIR --etcd URL`: writes the Extensions of a manifest folder into etcd, the
//! way the operator does in a cluster (HA1 digests only: passwords never reach etcd), for
//! clusters without Kubernetes and for scripted set-ups.
//!
//! Prints one line per extension (`created`, `configured`, `unchanged`, `pruned`), like
//! `kubectl apply`. Documents with problems are reported on stderr and skipped; the others are
//! applied, and the exit status is then 1. Without `--prune`, extensions in etcd that the folder
//! does not name are left alone; with it they are deleted together with their registrations.

use crate::etcd::EtcdArgs;
use anyhow::{Context, Result, bail};
use clap::Args;
use kubepbx_api::manifest;
use kubepbx_api::store::Store;
use std::collections::HashSet;
use std::path::PathBuf;

/// Flags of `kubepbx apply`.
#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    /// Folder of manifests (Extensions and their Secrets), the same files `kubectl apply` takes.
    #[arg(
        short = 'f',
        long = "filename",
        env = "KUBEPBX_FILENAME",
        value_name = "DIR"
    )]
    pub filename: PathBuf,
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// SIP domain (and digest realm) for Extensions without `spec.domain`.
    #[arg(
        long,
        env = "KUBEPBX_DOMAIN",
        default_value = "pbx.example.com",
        value_name = "NAME"
    )]
    pub domain: String,
    /// Delete extensions (and their registrations) that are in etcd but not in the folder.
    #[arg(long)]
    pub prune: bool,
    /// Print what would change without writing anything.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `kubepbx apply`.
pub async fn run(args: ApplyArgs) -> Result<()> {
    let dir = args.filename.clone();
    let set = tokio::task::spawn_blocking(move || manifest::read_dir(&dir))
        .await?
        .with_context(|| format!("reading the manifests of {}", args.filename.display()))?;
    let resolved = manifest::records(&set, &args.domain);
    let mut problems = 0;
    for e in &set.errors {
        eprintln!("error: {e}");
        problems += 1;
    }
    for p in &resolved.problems {
        eprintln!("error: {p}");
        problems += 1;
    }

    let store = args.etcd.connect().await?;
    let (snapshot, _) = store
        .watch()
        .await
        .context("reading the extensions in etcd")?;
    let plan = manifest::plan(&snapshot.extensions, &resolved.records, args.prune);
    if !args.dry_run && !plan.is_empty() {
        store
            .apply(plan.writes.clone())
            .await
            .context("writing the extensions to etcd")?;
        store
            .flush()
            .await
            .context("writing the extensions to etcd")?;
    }
    let suffix = if args.dry_run { " (dry run)" } else { "" };
    let added: HashSet<_> = plan.added.iter().collect();
    let changed: HashSet<_> = plan.changed.iter().collect();
    for record in &resolved.records {
        let key = record.key();
        let verb = if added.contains(&key) {
            "created"
        } else if changed.contains(&key) {
            "configured"
        } else {
            "unchanged"
        };
        println!("extension {}@{} {verb}{suffix}", key.user, key.domain);
    }
    for key in &plan.removed {
        println!("extension {}@{} pruned{suffix}", key.user, key.domain);
    }
    if problems > 0 {
        bail!(
            "{problems} problem(s) in {}; the other extensions were applied",
            args.filename.display()
        );
    }
    Ok(())
}
