//! `kubepbx up -f DIR`: the whole PBX in one process.
//!
//! Start-up order: data directory → admin token → embedded store (`DATA/store`, so bindings
//! survive a restart) → manifest folder into the store → SIP sockets → registrar → HTTP. Then
//! the folder is polled every second ([`folder`]) and changes are reconciled into the store,
//! which the registrar follows. The admin API's extension writes edit the folder ([`admin`]).
//! Ctrl-C or SIGTERM stops everything in order and flushes the store.

mod admin;
mod folder;

use crate::serve::{
    Identity, SipArgs, bind_error, parse_batch_interval, parse_media_timeout, parse_ports,
    shutdown_signal, spawn_http, stop_tasks, webrtc_bind,
};
use crate::{net, token};
use anyhow::{Context, Result};
use clap::Args;
use kubepbx_api::store::{EmbeddedOptions, EmbeddedStore, Store};
use kubepbx_registrar::calls::CdrStorage;
use kubepbx_registrar::http::{AppState, router};
use kubepbx_registrar::{MediaLink, Setup};
use rand::RngExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Flags of `kubepbx up`.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Folder of manifests (Extensions and their Secrets) to serve; watched for changes.
    #[arg(
        short = 'f',
        long = "filename",
        env = "KUBEPBX_FILENAME",
        value_name = "DIR"
    )]
    pub filename: PathBuf,
    #[command(flatten)]
    pub sip: SipArgs,
    #[command(flatten)]
    pub web: crate::web::WebArgs,
    /// Where registrations, the admin token and recordings are kept.
    #[arg(
        long,
        env = "KUBEPBX_DATA_DIR",
        default_value = "./data",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,
    /// Bearer token for the admin API [default: generated on first start, kept in DATA_DIR].
    #[arg(
        long,
        env = "KUBEPBX_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// UDP ports of the media relay (each call takes 4).
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
    /// A call with no RTP/RTCP on either leg for this long is hung up (BYE to both phones).
    #[arg(long, env = "KUBEPBX_MEDIA_TIMEOUT", default_value = "60s", value_parser = parse_media_timeout)]
    pub media_timeout: Duration,
    /// Under load, a relay thread wakes once per this interval and relays every packet that
    /// arrived meanwhile, instead of waking for each packet: far less CPU per packet, at most
    /// this much extra delay. Engages above 2 packets per interval per thread (about 20 calls
    /// per core at 1ms), disengages below 1. 0: wake for every packet.
    #[arg(long, env = "KUBEPBX_MEDIA_BATCH_INTERVAL", default_value = "1ms", value_parser = parse_batch_interval, value_name = "DURATION")]
    pub media_batch_interval: Duration,
}

/// Runs the PBX until Ctrl-C or SIGTERM.
pub async fn run(args: UpArgs) -> Result<()> {
    args.sip.check()?;
    args.web.check()?;
    let domain = args.sip.domain.to_ascii_lowercase();
    std::fs::create_dir_all(&args.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {} (choose another with --data-dir)",
            args.data_dir.display()
        )
    })?;
    let (admin_token, origin) = token::load_or_create(&args.data_dir, args.admin_token.as_deref())?;
    if origin == token::Origin::Generated {
        println!(
            "Admin token (kept in {}): {admin_token}",
            args.data_dir.join(token::FILE).display()
        );
    }

    let store = EmbeddedStore::open(
        Some(args.data_dir.join("store")),
        EmbeddedOptions::default(),
    )
    .await
    .with_context(|| format!("opening the store in {}", args.data_dir.display()))?;
    let store: Arc<dyn Store> = Arc::new(store);

    let mut watcher = folder::Watcher::new(args.filename.clone(), domain.clone());
    watcher
        .initial_sync(store.as_ref())
        .await
        .with_context(|| format!("loading the manifests of {}", args.filename.display()))?;

    let listeners = args.sip.bind_listeners(&args.web).await?;
    let sip_addr = listeners.local_addr()?;
    let sip_tls_addr = listeners.tls_addr();
    let http_listener = tokio::net::TcpListener::bind(args.sip.http)
        .await
        .map_err(|e| bind_error("HTTP", args.sip.http, &e))?;
    let https = args.web.bind_https().await?;

    let advertise = args.sip.advertise_host();
    let mut config = args.sip.endpoint_config(Identity {
        replica: "up".to_owned(),
        sip: sip_addr,
        // A new secret per start: nonces of a previous run are answered with stale=true and
        // phones re-authenticate without asking their user.
        secret: rand::rng().random(),
        instance: 0,
        cluster: None,
    });
    config.advertise_tls = args.sip.advertise_tls(sip_tls_addr);

    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let media_ip = advertise.parse::<std::net::IpAddr>().unwrap_or_else(|_| {
        let ip = net::default_advertise();
        tracing::warn!(
            advertise = %advertise,
            media = %ip,
            "--advertise is not an IP address; SDP will name this machine's address instead"
        );
        ip
    });
    let recordings_dir = args.data_dir.join("recordings");
    let relay_config = kubepbx_media::RelayConfig {
        advertise: media_ip,
        bind: args.sip.sip.ip(),
        ports: args.rtp_ports.clone(),
        recordings_dir: Some(recordings_dir.clone()),
        media_timeout: args.media_timeout,
        batch_interval: args.media_batch_interval,
        webrtc: webrtc_bind(args.sip.sip.ip(), args.webrtc_port),
        ..kubepbx_media::RelayConfig::default()
    };
    let (relay, relay_events) =
        kubepbx_media::LocalRelay::start(relay_config, shutdown.clone(), &tasks)
            .map_err(|e| anyhow::anyhow!("starting the media relay: {e}"))?;
    let media: Arc<dyn kubepbx_media::MediaControl> = Arc::new(relay);
    let setup = Setup {
        config,
        listeners,
        store: Arc::clone(&store),
        media: Some(MediaLink {
            control: Arc::clone(&media),
            events: relay_events,
        }),
        cdrs: CdrStorage::File(args.data_dir.join("cdrs.jsonl")),
        cluster: None,
    };
    let registrar = kubepbx_registrar::start(setup, shutdown.clone(), &tasks)
        .await
        .context("starting the registrar")?;
    let watcher: folder::Shared = Arc::new(tokio::sync::Mutex::new(watcher));
    tasks.spawn(folder::Watcher::run(
        Arc::clone(&watcher),
        Arc::clone(&store),
        shutdown.clone(),
    ));
    let app = router(AppState {
        registrar,
        admin_token: admin_token.into(),
        media: Some(media),
        recordings_dir: Some(recordings_dir),
        readiness: None,
        cluster: None,
        ws_policy: args.web.ws_policy(),
        web: Some(args.web.assets(&domain)),
        extension_admin: Some(Arc::new(admin::FolderAdmin::new(
            watcher,
            Arc::clone(&store),
        ))),
    });
    if let Some(https) = https {
        tracing::info!(https = %https.local_addr()?, "serving HTTPS (WSS) with the given certificate");
        https.spawn(app.clone(), &shutdown, &tasks)?;
    }
    spawn_http(http_listener, app, &shutdown, &tasks);
    tracing::info!(
        sip = %sip_addr,
        sip_tls = ?sip_tls_addr,
        http = %args.sip.http,
        domain = %domain,
        advertise = %advertise,
        manifests = %args.filename.display(),
        data_dir = %args.data_dir.display(),
        "kubepbx up: serving SIP on udp and tcp",
    );

    tokio::select! {
        () = shutdown_signal() => tracing::info!("stopping"),
        () = shutdown.cancelled() => {}
    }
    stop_tasks(&shutdown, &tasks).await;
    store.flush().await.context("saving the store")?;
    Ok(())
}
