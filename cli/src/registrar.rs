//! `kubepbx registrar`: one registrar replica of a cluster sharing etcd.
//!
//! Start-up: with `--advertise-service`, the address of the Service's load balancer (waited for:
//! nothing is served until the cloud has given it one, see [`kubepbx_operator::load_balancer`])
//! → etcd (extensions, bindings and the cluster key) → SIP, internal and HTTP sockets →
//! the replica registry (the other registrars, for flows they own; the media replicas, for
//! placing calls) → registrar → announcement under `replicas/registrar/{id}`.
//!
//! Every replica serves the same PBX: bindings are shared through etcd, a request for a phone
//! whose flow another replica owns goes through that replica (`--internal`), in-dialog
//! requests reach the replica that routed the call (docs/adr/0003-replicas.md), and the calls
//! each routes are shared in etcd so every replica's API lists and hangs up all of them
//! ([`crate::calls`]).
//!
//! While etcd is unreachable the replica keeps serving from its cache, `/readyz` says why it is
//! not ready, and writes are retried until etcd is back. SIGTERM: `/readyz` turns 503 and the
//! replica announces it is draining (peers stop sending through it), waits (at most
//! `--drain-timeout`) for the calls it routed to end, leaves the registry and exits 0.

use crate::calls;
use crate::etcd::EtcdArgs;
use crate::media::ANNOUNCE_TTL;
use crate::net;
use crate::serve::{
    Identity, SipArgs, bind_error, check_replica_id, parse_service_name, shutdown_signal,
    spawn_http, stop_tasks,
};
use anyhow::{Context, Result, bail};
use clap::Args;
use kubepbx_api::replicas::{ReplicaKind, ReplicaRecord};
use kubepbx_api::store::{EtcdStore, ReplicaMap, Store};
use kubepbx_media::{MediaPool, MediaReplica};
use kubepbx_operator::load_balancer;
use kubepbx_registrar::calls::{CALL_FEED_QUEUE, CDR_KEEP, CDR_SAVE_QUEUE, CdrStorage, CdrView};
use kubepbx_registrar::http::{AppState, Readiness, router};
use kubepbx_registrar::{ClusterLink, MediaLink, RegistrarHandle, Setup};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Flags of `kubepbx registrar`.
#[derive(Debug, Clone, Args)]
pub struct RegistrarArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// This replica's id, unique among registrars (the pod name in Kubernetes).
    #[arg(long, env = "KUBEPBX_REPLICA_ID", value_name = "ID")]
    pub replica_id: String,
    #[command(flatten)]
    pub sip: SipArgs,
    /// Advertise the address the cloud gives the load balancer of this Kubernetes Service (in
    /// the pod's namespace) instead of --advertise; waited for at start-up. Its port must be
    /// the --sip port.
    #[arg(
        long,
        env = "KUBEPBX_ADVERTISE_SERVICE",
        value_name = "NAME",
        conflicts_with = "advertise",
        value_parser = parse_service_name
    )]
    pub advertise_service: Option<String>,
    #[command(flatten)]
    pub web: crate::web::WebArgs,
    /// The directory the media replicas write recordings into (a volume they share with the
    /// registrars), served by `GET /api/v1/recordings`; without it the API lists none.
    #[arg(long, env = "KUBEPBX_RECORDINGS_DIR", value_name = "DIR")]
    pub recordings_dir: Option<PathBuf>,
    /// Where the other replicas send SIP to this one (UDP; keep it off the public network).
    #[arg(
        long,
        env = "KUBEPBX_INTERNAL",
        default_value = "0.0.0.0:5070",
        value_name = "ADDR:PORT"
    )]
    pub internal: SocketAddr,
    /// Bearer token for the admin API (the same on every replica).
    #[arg(
        long,
        env = "KUBEPBX_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: String,
    /// On SIGTERM, how long to wait for the calls this replica routed to end.
    #[arg(long, env = "KUBEPBX_DRAIN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
}

/// Runs a registrar replica until SIGTERM or Ctrl-C.
pub async fn run(mut args: RegistrarArgs) -> Result<()> {
    args.sip.check()?;
    args.web.check()?;
    check_replica_id(&args.replica_id)?;
    if args.admin_token.len() < 16 {
        bail!(
            "--admin-token is too short: use at least 16 characters (e.g. `openssl rand -hex 24`)"
        );
    }
    if let Some(dir) = &args.recordings_dir {
        open_recordings_dir(dir)?;
    }
    if let Some(service) = &args.advertise_service {
        let client = kubepbx_operator::run::client()
            .await
            .context("--advertise-service reads the Service from the Kubernetes API")?;
        let namespace = load_balancer::own_namespace(&client);
        let address = load_balancer::wait_for_address(client, &namespace, service).await?;
        // An IPv6 address without brackets is read as a host (`split_host_port`).
        args.sip.advertise = Some(address.to_string());
    }
    let store = Arc::new(args.etcd.connect().await?);
    let key = store
        .cluster_key()
        .await
        .context("reading the cluster key from etcd")?;

    let listeners = args.sip.bind_listeners(&args.web).await?;
    let sip_addr = listeners.local_addr()?;
    let sip_tls_addr = listeners.tls_addr();
    let internal_socket = kubepbx_media::udp::Socket::bind(args.internal)
        .map_err(|e| bind_error("internal", args.internal, &e))?;
    let internal_bound = internal_socket.local_addr()?;
    let internal = if internal_bound.ip().is_unspecified() {
        SocketAddr::new(net::default_advertise(), internal_bound.port())
    } else {
        internal_bound
    };
    let http_listener = tokio::net::TcpListener::bind(args.sip.http)
        .await
        .map_err(|e| bind_error("HTTP", args.sip.http, &e))?;
    let https = args.web.bind_https().await?;

    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let registrars = store
        .replicas(ReplicaKind::Registrar)
        .await
        .context("reading the registrar replicas from etcd")?;
    let medias = store
        .replicas(ReplicaKind::Media)
        .await
        .context("reading the media replicas from etcd")?;
    // A draining registrar still sends on its flows and ends its calls: it stays a peer until
    // it leaves the registry.
    let peers = follow(registrars, &shutdown, &tasks, |map| {
        map.values()
            .filter_map(|r| Some((r.id.clone(), r.internal?)))
            .collect::<Vec<_>>()
    });
    let media_set = follow(medias, &shutdown, &tasks, |map| {
        map.values()
            .filter(|r| !r.draining)
            .filter_map(|r| {
                Some(MediaReplica {
                    id: r.id.clone(),
                    control: r.control.clone()?,
                    sessions: r.load.sessions,
                    free_port_pairs: r.load.free_port_pairs,
                })
            })
            .collect::<Vec<_>>()
    });
    let (pool, media_events) = MediaPool::new(media_set, shutdown.clone(), &tasks);
    let pool = Arc::new(pool);
    let control: Arc<dyn kubepbx_media::MediaControl> = Arc::clone(&pool) as _;
    let all_calls = store
        .calls()
        .await
        .context("reading the calls in progress from etcd")?;
    let hangups = store
        .hangups()
        .await
        .context("reading the hangup requests from etcd")?;
    let finished_calls = store
        .follow_cdrs::<CdrView>(CDR_KEEP)
        .await
        .context("reading the finished calls from etcd")?;
    let (call_changes, call_feed) = mpsc::channel(CALL_FEED_QUEUE);
    let (cdr_sink, finished) = mpsc::channel(CDR_SAVE_QUEUE);
    tasks.spawn(calls::save_cdrs(finished, Arc::clone(&store)));

    let mut config = args.sip.endpoint_config(Identity {
        replica: args.replica_id.clone(),
        sip: sip_addr,
        secret: key,
        instance: instance_tag(&args.replica_id),
        cluster: Some(kubepbx_sip::endpoint::ClusterConfig { internal, key }),
    });
    config.advertise_tls = args.sip.advertise_tls(sip_tls_addr);
    let advertise = config.advertise.clone();
    let setup = Setup {
        config,
        listeners,
        store: Arc::clone(&store) as Arc<dyn Store>,
        media: Some(MediaLink {
            control: Arc::clone(&control),
            events: media_events,
        }),
        cdrs: CdrStorage::Shared(cdr_sink),
        cluster: Some(ClusterLink {
            internal: internal_socket,
            peers,
            calls: call_changes,
        }),
    };
    let registrar = kubepbx_registrar::start(setup, shutdown.clone(), &tasks)
        .await
        .context("starting the registrar")?;

    let mut record = ReplicaRecord::new(ReplicaKind::Registrar, &args.replica_id);
    record.internal = Some(internal);
    record.sip = Some(advertise.clone());
    let announcement = store
        .announce(record, ANNOUNCE_TTL)
        .await
        .context("announcing this replica in etcd")?;
    tasks.spawn(calls::publish(call_feed, announcement.owned(), pool));
    tasks.spawn(calls::take_hangups(
        Arc::clone(&store),
        hangups,
        registrar.clone(),
        shutdown.clone(),
    ));

    let draining = Arc::new(AtomicBool::new(false));
    let app = router(AppState {
        registrar: registrar.clone(),
        admin_token: args.admin_token.clone().into(),
        media: Some(control),
        recordings_dir: args.recordings_dir.clone(),
        readiness: Some(Arc::new(EtcdReadiness {
            store: Arc::clone(&store),
            draining: Arc::clone(&draining),
        })),
        cluster: Some(Arc::new(calls::EtcdCalls {
            store: Arc::clone(&store),
            replica: args.replica_id.clone(),
            calls: all_calls,
            cdrs: finished_calls,
        })),
        ws_policy: args.web.ws_policy(),
        web: Some(args.web.assets(&args.sip.domain.to_ascii_lowercase())),
        // Extensions come from Extension resources or `kubepbx apply`: the API only reads them.
        extension_admin: None,
    });
    if let Some(https) = https {
        tracing::info!(https = %https.local_addr()?, "serving HTTPS (WSS) with the given certificate");
        https.spawn(app.clone(), &shutdown, &tasks)?;
    }
    spawn_http(http_listener, app, &shutdown, &tasks);
    tracing::info!(
        replica = %args.replica_id,
        sip = %sip_addr,
        sip_tls = ?sip_tls_addr,
        internal = %internal,
        http = %args.sip.http,
        advertise = %advertise,
        recordings = ?args.recordings_dir,
        etcd = %args.etcd.endpoints.join(","),
        "kubepbx registrar: serving SIP on udp and tcp",
    );

    tokio::select! {
        () = shutdown_signal() => {}
        () = shutdown.cancelled() => {}
    }
    draining.store(true, Ordering::Relaxed);
    announcement.update(|r| r.draining = true);
    drain(&registrar, args.drain_timeout).await;
    announcement.release().await;
    stop_tasks(&shutdown, &tasks).await;
    Ok(())
}

/// Checks `--recordings-dir` before anything starts: the directory is created when missing
/// (the media replicas create it as well, on the volume they share) and must be readable.
fn open_recordings_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create the recordings directory {} (mount the volume the media replicas \
             record into there, or choose another with --recordings-dir)",
            dir.display()
        )
    })?;
    std::fs::read_dir(dir).with_context(|| {
        format!(
            "cannot read the recordings directory {} (the registrar lists and serves the \
             recordings in it: give it read access, or choose another with --recordings-dir)",
            dir.display()
        )
    })?;
    Ok(())
}

/// The nonce instance tag of a replica: a hash of its id (FNV-1a folded to 16 bits).
fn instance_tag(id: &str) -> u16 {
    let hash = id.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    (hash ^ (hash >> 16)) as u16
}

/// A watch of `map(registry)`, kept current by a task until `shutdown`.
fn follow<T: Send + Sync + 'static>(
    mut registry: watch::Receiver<ReplicaMap>,
    shutdown: &CancellationToken,
    tasks: &TaskTracker,
    map: impl Fn(&ReplicaMap) -> T + Send + 'static,
) -> watch::Receiver<T> {
    let (tx, rx) = watch::channel(map(&registry.borrow_and_update()));
    let shutdown = shutdown.clone();
    tasks.spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = registry.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
            let next = map(&registry.borrow_and_update());
            if tx.send(next).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits (at most `timeout`) until the calls this replica routed have ended: it holds their
/// transactions and in-dialog requests reach it.
async fn drain(registrar: &RegistrarHandle, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let busy = match registrar.metrics().await {
            Some(m) => m.active_calls,
            None => return,
        };
        if busy == 0 {
            tracing::info!("stopping");
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                calls = busy,
                "calls still in progress at the end of --drain-timeout; stopping anyway"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `/readyz`: etcd must answer, and the replica must not be stopping.
#[derive(Debug)]
struct EtcdReadiness {
    store: Arc<EtcdStore>,
    draining: Arc<AtomicBool>,
}

impl Readiness for EtcdReadiness {
    fn not_ready(&self) -> Option<String> {
        if self.draining.load(Ordering::Relaxed) {
            return Some("stopping: waiting for the calls it routed to end".to_owned());
        }
        let health = self.store.health();
        (!health.connected).then(|| {
            format!(
                "etcd unreachable: {}; serving registered phones from cache",
                health.last_error.unwrap_or_else(|| "no answer".to_owned())
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::open_recordings_dir;

    #[test]
    fn a_recordings_dir_is_created_when_missing_and_must_be_a_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("shared").join("recordings");
        open_recordings_dir(&dir).unwrap();
        assert!(dir.is_dir());
        open_recordings_dir(&dir).unwrap();

        let file = tmp.path().join("a-file");
        std::fs::write(&file, b"not a directory").unwrap();
        let error = format!("{:#}", open_recordings_dir(&file).unwrap_err());
        assert!(
            error.contains("cannot create the recordings directory")
                && error.contains("--recordings-dir"),
            "{error}"
        );
    }
}
