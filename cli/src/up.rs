//! `kubepbx up -f DIR`: the whole PBX in one process.
//!
//! Start-up order: data directory → admin token → embedded store (`DATA/store`, so bindings
//! survive a restart) → manifest folder into the store → SIP sockets → registrar → HTTP. Then
//! the folder is polled every second ([`folder`]) and changes are reconciled into the store,
//! which the registrar follows. Ctrl-C or SIGTERM stops everything in order and flushes the
//! store.

mod folder;

use crate::{net, token};
use anyhow::{Context, Result, bail};
use clap::Args;
use kubepbx_api::store::{EmbeddedOptions, EmbeddedStore, Store};
use kubepbx_registrar::http::{AppState, router};
use kubepbx_registrar::{MediaLink, Setup, SipListeners};
use kubepbx_sip::auth::{Algorithm, NonceConfig};
use kubepbx_sip::ban::BanConfig;
use kubepbx_sip::endpoint::EndpointConfig;
use kubepbx_sip::registrar::RegistrarConfig;
use rand::RngExt as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long stopping may take before the remaining tasks are abandoned.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// SIP address and port, UDP and TCP.
    #[arg(
        long,
        env = "KUBEPBX_SIP",
        default_value = "0.0.0.0:5060",
        value_name = "ADDR:PORT"
    )]
    pub sip: SocketAddr,
    /// HTTP address and port (admin API, health, metrics).
    #[arg(
        long,
        env = "KUBEPBX_HTTP",
        default_value = "0.0.0.0:8080",
        value_name = "ADDR:PORT"
    )]
    pub http: SocketAddr,
    /// Default SIP domain (and digest realm) for Extensions without `spec.domain`.
    #[arg(
        long,
        env = "KUBEPBX_DOMAIN",
        default_value = "pbx.example.com",
        value_name = "NAME"
    )]
    pub domain: String,
    /// Host written into Via/Record-Route/SDP [default: the first non-loopback address].
    #[arg(long, env = "KUBEPBX_ADVERTISE", value_name = "HOST")]
    pub advertise: Option<String>,
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
    /// Failed attempts from one source tolerated within --ban-window; one more bans it
    /// (0: never ban).
    #[arg(
        long,
        env = "KUBEPBX_BAN_THRESHOLD",
        default_value_t = 10,
        value_name = "N"
    )]
    pub ban_threshold: u32,
    /// Window in which failed attempts are counted (e.g. 60s, 5m).
    #[arg(long, env = "KUBEPBX_BAN_WINDOW", default_value = "60s", value_parser = humantime::parse_duration)]
    pub ban_window: Duration,
    /// How long a banned source is ignored (e.g. 10m, 1h).
    #[arg(long, env = "KUBEPBX_BAN_DURATION", default_value = "10m", value_parser = humantime::parse_duration)]
    pub ban_duration: Duration,
    /// UDP ports of the media relay (each call takes 4).
    #[arg(long, env = "KUBEPBX_RTP_PORTS", default_value = "20000-20999", value_parser = parse_ports, value_name = "LO-HI")]
    pub rtp_ports: std::ops::RangeInclusive<u16>,
    /// A call with no RTP/RTCP on either leg for this long is hung up (BYE to both phones).
    #[arg(long, env = "KUBEPBX_MEDIA_TIMEOUT", default_value = "60s", value_parser = parse_media_timeout)]
    pub media_timeout: Duration,
    /// Shortest registration lifetime accepted, seconds (shorter requests get 423).
    #[arg(
        long,
        env = "KUBEPBX_MIN_EXPIRES",
        default_value_t = 60,
        value_name = "SECONDS"
    )]
    pub min_expires: u32,
    /// Digest algorithms offered in each 401, in order (one WWW-Authenticate each). Clients
    /// that read only the first challenge and know only MD5 (sipp, some old phones) need `md5`.
    #[arg(
        long,
        env = "KUBEPBX_DIGEST_CHALLENGE",
        default_value = "sha-256,md5",
        value_delimiter = ',',
        value_parser = parse_algorithm,
        value_name = "ALGORITHMS"
    )]
    pub digest_challenge: Vec<Algorithm>,
    /// Longest registration lifetime granted, seconds.
    #[arg(
        long,
        env = "KUBEPBX_MAX_EXPIRES",
        default_value_t = 3600,
        value_name = "SECONDS"
    )]
    pub max_expires: u32,
}

impl UpArgs {
    fn check(&self) -> Result<()> {
        if !kubepbx_api::extension::is_valid_domain(&self.domain) {
            bail!(
                "--domain {:?} is not a valid domain name: use letters, digits, '-' and '.', \
                 e.g. --domain pbx.example.com",
                self.domain
            );
        }
        if self.min_expires == 0 || self.min_expires > self.max_expires {
            bail!(
                "--min-expires ({}) must be at least 1 and at most --max-expires ({})",
                self.min_expires,
                self.max_expires
            );
        }
        Ok(())
    }
}

/// Runs the PBX until Ctrl-C or SIGTERM.
pub async fn run(args: UpArgs) -> Result<()> {
    args.check()?;
    let domain = args.domain.to_ascii_lowercase();
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

    let listeners = SipListeners::bind(args.sip)
        .await
        .map_err(|e| bind_error("SIP", args.sip, &e))?;
    let sip_addr = listeners.local_addr()?;
    let http_listener = tokio::net::TcpListener::bind(args.http)
        .await
        .map_err(|e| bind_error("HTTP", args.http, &e))?;

    let advertise = args
        .advertise
        .clone()
        .unwrap_or_else(|| net::default_advertise().to_string());
    let config = EndpointConfig {
        replica: "up".to_owned(),
        default_domain: domain.clone(),
        advertise: advertise_hostport(&advertise, sip_addr.port()),
        anchor_media: true,
        local_hosts: net::local_hosts(&advertise, sip_addr),
        registrar: RegistrarConfig {
            min_expires: args.min_expires,
            max_expires: args.max_expires,
            default_expires: 3600.clamp(args.min_expires, args.max_expires),
        },
        bans: BanConfig {
            threshold: args.ban_threshold,
            window: args.ban_window,
            duration: args.ban_duration,
            ..BanConfig::default()
        },
        nonce: NonceConfig::default(),
        // A new secret per start: nonces of a previous run are answered with stale=true and
        // phones re-authenticate without asking their user.
        secret: rand::rng().random(),
        instance: 0,
        challenge: args.digest_challenge.clone(),
    };

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
        bind: args.sip.ip(),
        ports: args.rtp_ports.clone(),
        recordings_dir: Some(recordings_dir.clone()),
        media_timeout: args.media_timeout,
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
        cdr_file: Some(args.data_dir.join("cdrs.jsonl")),
    };
    let registrar = kubepbx_registrar::start(setup, shutdown.clone(), &tasks)
        .await
        .context("starting the registrar")?;
    tasks.spawn(watcher.run(Arc::clone(&store), shutdown.clone()));
    let app = router(AppState {
        registrar,
        admin_token: admin_token.into(),
        media: Some(media),
        recordings_dir: Some(recordings_dir),
    });
    let http_shutdown = shutdown.clone();
    tasks.spawn(async move {
        let serve = axum::serve(http_listener, app)
            .with_graceful_shutdown(async move { http_shutdown.cancelled().await });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "the HTTP server stopped");
        }
    });
    tracing::info!(
        sip = %sip_addr,
        http = %args.http,
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
    shutdown.cancel();
    tasks.close();
    if tokio::time::timeout(STOP_TIMEOUT, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not stop in time");
    }
    store.flush().await.context("saving the store")?;
    Ok(())
}

/// `host:port` for Via and Record-Route; IPv6 addresses in brackets.
fn advertise_hostport(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn parse_media_timeout(value: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(5) {
        return Err(format!(
            "{value} is too short: phones on hold may send no RTP for a while; use at least 5s (default 60s)"
        ));
    }
    Ok(d)
}

fn parse_ports(value: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    kubepbx_media::parse_port_range(value).map_err(|e| e.to_string())
}

fn parse_algorithm(value: &str) -> Result<Algorithm, String> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("sha256") {
        return Ok(Algorithm::Sha256);
    }
    Algorithm::parse(value).ok_or_else(|| format!("{value:?} is not SHA-256 or MD5"))
}

fn bind_error(what: &str, addr: SocketAddr, e: &std::io::Error) -> anyhow::Error {
    let flag = what.to_ascii_lowercase();
    let hint = match e.kind() {
        std::io::ErrorKind::PermissionDenied => format!(
            "ports below 1024 need root or CAP_NET_BIND_SERVICE; run as root or choose another \
             port, e.g. --{flag} {}:{}",
            addr.ip(),
            if what == "SIP" { 5070 } else { 8081 }
        ),
        std::io::ErrorKind::AddrInUse => format!(
            "another program (or another kubepbx) uses it; stop it or choose another port with \
             --{flag}"
        ),
        std::io::ErrorKind::AddrNotAvailable => format!(
            "{} is not an address of this machine; use 0.0.0.0 or one of its addresses with --{flag}",
            addr.ip()
        ),
        _ => format!("choose another address with --{flag}"),
    };
    anyhow::anyhow!("cannot listen for {what} on {addr}: {e}: {hint}")
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
