//! `kubepbx media`: one media replica of a cluster — the RTP relay, its control API for the
//! registrars, and its entry in the replica registry.
//!
//! Start-up: with `--advertise-service`, the address of the Service's load balancer (waited for,
//! a DNS name resolved: nothing, not even `/readyz`, is served until the cloud has given one,
//! see [`kubepbx_operator::load_balancer`]) → etcd → relay → control listener → announcement
//! (`replicas/media/{id}` with the control URL and the load). The load (live sessions, free
//! port pairs) is re-announced each second when it changed, so registrars place new calls on
//! the least busy replica.
//!
//! SIGTERM (or Ctrl-C): the replica announces that it is draining (registrars stop placing calls
//! on it), waits up to `--drain-timeout` for its calls to end, leaves the registry and exits 0.

use crate::etcd::EtcdArgs;
use crate::net;
use crate::serve::{
    bind_error, check_replica_id, parse_batch_interval, parse_media_timeout, parse_ports,
    parse_service_name, shutdown_signal, spawn_http, stop_tasks,
};
use anyhow::{Context, Result};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use clap::Args;
use kubepbx_api::replicas::{self, ReplicaKind, ReplicaRecord};
use kubepbx_api::store::{Announcement, EtcdStore};
use kubepbx_media::control::{EventFeed, router};
use kubepbx_media::{LocalRelay, MediaControl, RelayConfig};
use kubepbx_operator::load_balancer;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long an announcement outlives a replica that died without leaving.
pub const ANNOUNCE_TTL: Duration = Duration::from_secs(10);
/// How often the load is re-announced (when it changed).
const LOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Flags of `kubepbx media`.
#[derive(Debug, Clone, Args)]
pub struct MediaArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// This replica's id, unique among media replicas (the pod name in Kubernetes).
    #[arg(long, env = "KUBEPBX_REPLICA_ID", value_name = "ID")]
    pub replica_id: String,
    /// Address and port of the control API registrars drive the relay through (HTTP).
    #[arg(
        long,
        env = "KUBEPBX_CONTROL",
        default_value = "0.0.0.0:9090",
        value_name = "ADDR:PORT"
    )]
    pub control: SocketAddr,
    /// Control URL announced to registrars [default: http://{the --control address, or this
    /// machine's first non-loopback address when it is 0.0.0.0}:{port}].
    #[arg(long, env = "KUBEPBX_CONTROL_URL", value_name = "URL")]
    pub control_url: Option<String>,
    /// UDP ports for RTP and RTCP (each call takes 4).
    #[arg(long, env = "KUBEPBX_RTP_PORTS", default_value = "20000-20999", value_parser = parse_ports, value_name = "LO-HI")]
    pub rtp_ports: std::ops::RangeInclusive<u16>,
    /// UDP port every browser (WebRTC) call leg shares: ICE-lite, DTLS-SRTP, demultiplexed by
    /// ICE username, so one load-balancer port carries them all (0: no WebRTC).
    #[arg(
        long,
        env = "KUBEPBX_WEBRTC_PORT",
        default_value_t = 21000,
        value_name = "PORT"
    )]
    pub webrtc_port: u16,
    /// Address phones send media to, written into SDP [default: the first non-loopback address].
    #[arg(long, env = "KUBEPBX_ADVERTISE", value_name = "IP")]
    pub advertise: Option<IpAddr>,
    /// Advertise the address the cloud gives the load balancer of this Kubernetes Service (in
    /// the pod's namespace; a DNS name is resolved to its first IPv4 address) instead of
    /// --advertise; waited for at start-up. It must carry --rtp-ports and --webrtc-port.
    #[arg(
        long,
        env = "KUBEPBX_ADVERTISE_SERVICE",
        value_name = "NAME",
        conflicts_with = "advertise",
        value_parser = parse_service_name
    )]
    pub advertise_service: Option<String>,
    /// Address the RTP sockets bind to.
    #[arg(
        long,
        env = "KUBEPBX_RTP_BIND",
        default_value = "0.0.0.0",
        value_name = "ADDR"
    )]
    pub rtp_bind: IpAddr,
    /// Where recordings are written (`<id>.wav` and `<id>.json`); without it calls are not
    /// recorded.
    #[arg(long, env = "KUBEPBX_RECORDINGS_DIR", value_name = "DIR")]
    pub recordings_dir: Option<PathBuf>,
    /// A call with no RTP/RTCP on either leg for this long is closed and reported to the
    /// registrars, which hang it up.
    #[arg(long, env = "KUBEPBX_MEDIA_TIMEOUT", default_value = "60s", value_parser = parse_media_timeout)]
    pub media_timeout: Duration,
    /// Under load, a relay thread wakes once per this interval and relays every packet that
    /// arrived meanwhile, instead of waking for each packet: far less CPU per packet, at most
    /// this much extra delay. Engages above 2 packets per interval per thread (about 20 calls
    /// per core at 1ms), disengages below 1. 0: wake for every packet.
    #[arg(long, env = "KUBEPBX_MEDIA_BATCH_INTERVAL", default_value = "1ms", value_parser = parse_batch_interval, value_name = "DURATION")]
    pub media_batch_interval: Duration,
    /// On SIGTERM, how long to wait for calls in progress to end before stopping anyway.
    #[arg(long, env = "KUBEPBX_DRAIN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
}

/// Runs a media replica until SIGTERM or Ctrl-C.
pub async fn run(args: MediaArgs) -> Result<()> {
    check_replica_id(&args.replica_id)?;
    if let Some(dir) = &args.recordings_dir {
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "cannot create the recordings directory {} (choose another with --recordings-dir)",
                dir.display()
            )
        })?;
    }
    let advertise = advertise(&args).await?;
    let store = args.etcd.connect().await?;
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let config = RelayConfig {
        advertise,
        bind: args.rtp_bind,
        ports: args.rtp_ports.clone(),
        recordings_dir: args.recordings_dir.clone(),
        media_timeout: args.media_timeout,
        batch_interval: args.media_batch_interval,
        webrtc: crate::serve::webrtc_bind(args.rtp_bind, args.webrtc_port),
        ..RelayConfig::default()
    };
    let (relay, events) = LocalRelay::start(config, shutdown.clone(), &tasks)
        .map_err(|e| anyhow::anyhow!("starting the media relay: {e}"))?;
    let feed = EventFeed::start(events, shutdown.clone(), &tasks);
    let listener = tokio::net::TcpListener::bind(args.control)
        .await
        .map_err(|e| bind_error("control", args.control, &e))?;
    let control_addr = listener.local_addr()?;
    let control_url = args.control_url.clone().unwrap_or_else(|| {
        let host = if control_addr.ip().is_unspecified() {
            net::default_advertise()
        } else {
            control_addr.ip()
        };
        format!("http://{}", SocketAddr::new(host, control_addr.port()))
    });

    let mut record = ReplicaRecord::new(ReplicaKind::Media, &args.replica_id);
    record.control = Some(control_url.clone());
    record.load = load_of(&relay);
    let announcement = Arc::new(
        store
            .announce(record, ANNOUNCE_TTL)
            .await
            .context("announcing this replica in etcd")?,
    );
    let store = Arc::new(store);
    let health = Health {
        store: Arc::clone(&store),
        announcement: Arc::clone(&announcement),
    };
    let relay_control: Arc<dyn MediaControl> = Arc::new(relay.clone());
    let app = router(relay_control, feed).merge(
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .with_state(health),
    );
    spawn_http(listener, app, &shutdown, &tasks);
    tasks.spawn(report_load(
        relay.clone(),
        Arc::clone(&announcement),
        shutdown.clone(),
    ));
    tracing::info!(
        replica = %args.replica_id,
        control = %control_addr,
        control_url = %control_url,
        rtp_ports = ?args.rtp_ports,
        advertise = %advertise,
        "kubepbx media: relaying RTP",
    );

    tokio::select! {
        () = shutdown_signal() => {}
        () = shutdown.cancelled() => {}
    }
    drain(&relay, &announcement, args.drain_timeout).await;
    stop_tasks(&shutdown, &tasks).await;
    if let Ok(announcement) = Arc::try_unwrap(announcement) {
        announcement.release().await;
    }
    Ok(())
}

/// The address written into SDP: `--advertise`, the load balancer of `--advertise-service`
/// (waited for), or this machine's first non-loopback address.
async fn advertise(args: &MediaArgs) -> Result<IpAddr> {
    if let Some(ip) = args.advertise {
        return Ok(ip);
    }
    let Some(service) = &args.advertise_service else {
        return Ok(net::default_advertise());
    };
    let client = kubepbx_operator::run::client()
        .await
        .context("--advertise-service reads the Service from the Kubernetes API")?;
    let namespace = load_balancer::own_namespace(&client);
    Ok(load_balancer::wait_for_ip(client, &namespace, service, load_balancer::lookup).await?)
}

fn load_of(relay: &LocalRelay) -> replicas::ReplicaLoad {
    let m = relay.metrics();
    replicas::ReplicaLoad {
        sessions: m.sessions_active,
        free_port_pairs: m.port_pairs_free,
    }
}

/// Re-announces the load each [`LOAD_INTERVAL`] (written only when it changed).
async fn report_load(
    relay: LocalRelay,
    announcement: Arc<Announcement>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(LOAD_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let load = load_of(&relay);
        announcement.update(|r| r.load = load);
    }
}

/// Announces draining and waits (at most `timeout`) for the calls in progress to end.
async fn drain(relay: &LocalRelay, announcement: &Announcement, timeout: Duration) {
    announcement.update(|r| r.draining = true);
    let active = relay.metrics().sessions_active;
    if active == 0 {
        tracing::info!("stopping");
        return;
    }
    tracing::info!(calls = active, timeout = ?timeout, "stopping: waiting for calls in progress to end");
    let deadline = tokio::time::Instant::now() + timeout;
    while relay.metrics().sessions_active > 0 {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                calls = relay.metrics().sessions_active,
                "calls still in progress at the end of --drain-timeout; their audio stops now"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[derive(Clone)]
struct Health {
    store: Arc<EtcdStore>,
    announcement: Arc<Announcement>,
}

/// Ready when etcd answers and the replica is not draining; the reason otherwise.
async fn readyz(State(h): State<Health>) -> (StatusCode, String) {
    if h.announcement.record().draining {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "draining: stopping\n".to_owned(),
        );
    }
    let health = h.store.health();
    if !health.connected {
        let reason = health
            .last_error
            .unwrap_or_else(|| "etcd unreachable".to_owned());
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("etcd unreachable: {reason}\n"),
        );
    }
    (StatusCode::OK, "ready\n".to_owned())
}
