//! The operator process: leader election, the Extension controller while leading, and the
//! health/metrics endpoint all the time.
//!
//! - With leader election on (the default), replicas compete for a `coordination.k8s.io/v1`
//!   Lease (kube-lease-manager: server-side apply on the Lease, so two replicas can never both
//!   hold it). Only the holder runs the controller; the others wait, ready to take over when the
//!   holder stops renewing. A replica that loses the Lease stops its controller at once and
//!   competes again.
//! - The controller watches Extensions (all namespaces, or `--namespace`), the metadata of
//!   Secrets (a changed Secret reconciles the Extensions that use it; its data is read only
//!   then), and etcd (a registration, a failure or a rewritten record reconciles the Extension
//!   it concerns, see [`crate::mirror`]).
//! - `/healthz` answers while the process runs; `/readyz` when etcd answers and, on the leader,
//!   the operator's copy of etcd is loaded; `/metrics` see [`crate::metrics`].

use crate::http;
use crate::metrics::Metrics;
use crate::mirror::{self, Mirror};
use crate::reconcile::{self, Context, Settings};
use crate::triggers::Triggers;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use kube_lease_manager::LeaseManagerBuilder;
use kubepbx_api::Extension;
use kubepbx_api::store::{EtcdStore, Store};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::watch;
pub use tokio_util::sync::CancellationToken;

/// Name of the controller in Events and field managers.
pub const CONTROLLER: &str = "kubepbx-operator";

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Reconciler behaviour.
    pub settings: Settings,
    /// Where `/healthz`, `/readyz` and `/metrics` are served (none: not served).
    pub http: Option<SocketAddr>,
    /// Only watch Extensions and Secrets in this namespace (default: all namespaces).
    pub namespace: Option<String>,
    /// Leader election; `None` runs the controller right away (a single replica).
    pub election: Option<Election>,
    /// This replica's name (Lease holder identity, Event reporting instance).
    pub identity: String,
    /// Reconciles that may run at once.
    pub concurrency: u16,
}

/// Where and how the replicas compete for leadership.
#[derive(Debug, Clone)]
pub struct Election {
    /// Name of the Lease.
    pub lease: String,
    /// Namespace of the Lease.
    pub namespace: String,
    /// How long a holder keeps the Lease without renewing it, in seconds.
    pub duration_secs: u64,
    /// How long before the end the holder renews, in seconds.
    pub grace_secs: u64,
}

/// What the health endpoint reads.
#[derive(Debug)]
pub struct Shared {
    /// The counters.
    pub metrics: Arc<Metrics>,
    /// etcd.
    pub store: Arc<EtcdStore>,
    /// Whether this replica leads.
    pub leading: watch::Receiver<bool>,
    /// The context of the running controller, while leading.
    pub session: Mutex<Option<Arc<Context>>>,
    /// The operator's copy of etcd.
    pub mirror: Arc<RwLock<Mirror>>,
}

/// A client for the Kubernetes API: in-cluster service account, or `KUBECONFIG` /
/// `~/.kube/config`.
pub async fn client() -> anyhow::Result<Client> {
    Client::try_default().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the Kubernetes API: {e} (run in a pod with a service account, \
             or set KUBECONFIG to a kubeconfig file)"
        )
    })
}

/// Runs the operator until `shutdown` is cancelled.
pub async fn run(
    client: Client,
    store: Arc<EtcdStore>,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let mirror = Arc::new(RwLock::new(Mirror::default()));
    let triggers = Triggers::default();
    let follower = tokio::spawn(mirror::follow(
        Arc::clone(&store) as Arc<dyn Store>,
        Arc::clone(&mirror),
        triggers.clone(),
    ));
    let _follower = AbortOnDrop(follower);

    // Without an election this replica always leads: the sender lives as long as the loop.
    let mut always = None;
    let (leading, election) = match &config.election {
        Some(election) => {
            let manager = LeaseManagerBuilder::new(client.clone(), &election.lease)
                .with_namespace(&election.namespace)
                .with_identity(&config.identity)
                .with_duration(election.duration_secs)
                .with_grace(election.grace_secs)
                .with_field_manager(CONTROLLER)
                .build()
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "preparing leader election on Lease {}/{}: {e}",
                        election.namespace,
                        election.lease
                    )
                })?;
            let (leading, task) = manager.watch().await;
            (leading, Some(task))
        }
        None => {
            let (tx, rx) = watch::channel(true);
            always = Some(tx);
            (rx, None)
        }
    };
    let shared = Arc::new(Shared {
        metrics: Arc::clone(&metrics),
        store: Arc::clone(&store),
        leading: leading.clone(),
        session: Mutex::new(None),
        mirror: Arc::clone(&mirror),
    });
    let server = match config.http {
        Some(addr) => Some(http::serve(addr, Arc::clone(&shared), shutdown.clone()).await?),
        None => None,
    };

    let mut leading = leading;
    loop {
        // Wait to lead (or to stop).
        let lead = tokio::select! {
            () = shutdown.cancelled() => None,
            r = leading.wait_for(|l| *l) => Some(r.is_ok()),
        };
        match lead {
            None => break,
            Some(true) => {}
            Some(false) => anyhow::bail!(
                "leader election stopped (the Lease can no longer be read or written); \
                 check the operator's RBAC for coordination.k8s.io leases"
            ),
        }
        tracing::info!(identity = %config.identity, "leading: starting the Extension controller");
        metrics.set_leader(true);
        let session = shutdown.child_token();
        let lost = {
            let mut leading = leading.clone();
            let session = session.clone();
            async move {
                let _ = leading.wait_for(|l| !*l).await;
                session.cancel();
            }
        };
        let stop = session.clone();
        tokio::select! {
            () = control(client.clone(), &store, &mirror, &triggers, &metrics, &config, &shared, stop) => {}
            () = lost => tracing::warn!("lost the leader Lease: stopping the controller"),
        }
        session.cancel();
        *lock(&shared.session) = None;
        metrics.set_leader(false);
        if shutdown.is_cancelled() {
            break;
        }
    }
    // Closing the channel makes the election task release the Lease.
    drop(leading);
    drop(always);
    drop(shared);
    if let Some(task) = election {
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "releasing the leader Lease"),
            Err(_) => tracing::warn!("releasing the leader Lease took too long"),
            _ => {}
        }
    }
    if let Some(server) = server {
        let _ = server.await;
    }
    Ok(())
}

/// Runs the controller until `stop` is cancelled.
#[allow(clippy::too_many_arguments)]
async fn control(
    client: Client,
    store: &Arc<EtcdStore>,
    mirror: &Arc<RwLock<Mirror>>,
    triggers: &Triggers,
    metrics: &Arc<Metrics>,
    config: &Config,
    shared: &Shared,
    stop: CancellationToken,
) {
    // Reconciling before etcd is read would rewrite every record for nothing.
    while !lock_read(mirror).is_loaded() {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    // Only the metadata of Secrets travels: their data is read when an Extension needs it.
    let (extensions, secrets): (Api<Extension>, Api<PartialObjectMeta<Secret>>) =
        match &config.namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
    let controller = Controller::new(extensions, watcher::Config::default().any_semantic());
    let reporter = Reporter {
        controller: CONTROLLER.to_owned(),
        instance: Some(config.identity.clone()),
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        Arc::clone(store),
        Arc::clone(mirror),
        controller.store(),
        triggers.clone(),
        Recorder::new(client, reporter),
        Arc::clone(metrics),
        config.settings.clone(),
    ));
    *lock(&shared.session) = Some(Arc::clone(&ctx));
    let mapper_ctx = Arc::clone(&ctx);
    let secret_changes =
        watcher(secrets, watcher::Config::default().any_semantic()).touched_objects();
    let graceful = stop.clone();
    controller
        .watches_stream(secret_changes, move |secret| {
            let namespace = secret.namespace().unwrap_or_default();
            mapper_ctx.secret_users(&namespace, &secret.name_any())
        })
        .reconcile_on(triggers.stream())
        .with_config(ControllerConfig::default().concurrency(config.concurrency))
        .graceful_shutdown_on(async move { graceful.cancelled().await })
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller");
            }
        })
        .await;
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock_read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}
