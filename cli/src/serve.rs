//! What every server role (`up`, `registrar`, `media`) shares: flag parsers, bind errors that
//! name the fix, the stop signal and the orderly stop of a role's tasks.

use anyhow::{Result, bail};
use clap::Args;
use kubepbx_registrar::SipListeners;
use kubepbx_sip::auth::{Algorithm, NonceConfig};
use kubepbx_sip::ban::BanConfig;
use kubepbx_sip::endpoint::{ClusterConfig, EndpointConfig};
use kubepbx_sip::registrar::RegistrarConfig;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The SIP and HTTP flags of every role that serves phones (`up`, `registrar`).
#[derive(Debug, Clone, Args)]
pub struct SipArgs {
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
    /// Host (and port, when phones reach the PBX at another port than --sip, e.g. through a
    /// load balancer) written into Via/Record-Route/SDP [default: the first non-loopback
    /// address and the --sip port].
    #[arg(long, env = "KUBEPBX_ADVERTISE", value_name = "HOST[:PORT]")]
    pub advertise: Option<String>,
    /// SIP over TLS address and port (e.g. 0.0.0.0:5061), with the certificate of --tls-cert
    /// and --tls-key [default: no SIP over TLS].
    #[arg(
        long,
        env = "KUBEPBX_SIP_TLS",
        value_name = "ADDR:PORT",
        requires = "tls_cert"
    )]
    pub sip_tls: Option<SocketAddr>,
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

/// Who this endpoint is: what [`SipArgs::endpoint_config`] needs besides the flags.
pub struct Identity {
    /// Replica id (`up` for the single process).
    pub replica: String,
    /// The bound SIP address (its port is advertised).
    pub sip: SocketAddr,
    /// Secret for nonces and tags (shared by a cluster's replicas).
    pub secret: [u8; 32],
    /// Nonce instance tag.
    pub instance: u16,
    /// Cluster membership, for `registrar`.
    pub cluster: Option<ClusterConfig>,
}

impl SipArgs {
    /// Rejects flag values that cannot work, naming the fix.
    pub fn check(&self) -> Result<()> {
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

    /// The advertised host: `--advertise` (without a port) or this machine's first
    /// non-loopback address.
    pub fn advertise_host(&self) -> String {
        match &self.advertise {
            Some(a) => split_host_port(a).0.to_owned(),
            None => crate::net::default_advertise().to_string(),
        }
    }

    /// Binds the SIP sockets: UDP and TCP on --sip, and TLS on --sip-tls with the certificate
    /// of `web`.
    pub async fn bind_listeners(&self, web: &crate::web::WebArgs) -> Result<SipListeners> {
        let listeners = SipListeners::bind(self.sip)
            .await
            .map_err(|e| bind_error("SIP", self.sip, &e))?;
        let Some(addr) = self.sip_tls else {
            return Ok(listeners);
        };
        let (Some(cert), Some(key)) = (&web.tls_cert, &web.tls_key) else {
            bail!("--sip-tls needs a certificate: give --tls-cert and --tls-key");
        };
        let acceptor = kubepbx_registrar::tls::sip_acceptor(cert, key)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| bind_error("SIP-TLS", addr, &e))?;
        Ok(listeners.with_tls(listener, acceptor))
    }

    /// `host:port` phones reach SIP over TLS at: the advertised host and the bound TLS port.
    pub fn advertise_tls(&self, bound: Option<SocketAddr>) -> Option<String> {
        bound.map(|addr| advertise_hostport(&self.advertise_host(), addr.port()))
    }

    /// The SIP endpoint's configuration.
    pub fn endpoint_config(&self, id: Identity) -> EndpointConfig {
        let advertise = self.advertise_host();
        let port = self
            .advertise
            .as_deref()
            .and_then(|a| split_host_port(a).1)
            .unwrap_or(id.sip.port());
        EndpointConfig {
            replica: id.replica,
            default_domain: self.domain.to_ascii_lowercase(),
            advertise: advertise_hostport(&advertise, port),
            advertise_tls: None,
            anchor_media: true,
            local_hosts: crate::net::local_hosts(&advertise, id.sip),
            registrar: RegistrarConfig {
                min_expires: self.min_expires,
                max_expires: self.max_expires,
                default_expires: 3600.clamp(self.min_expires, self.max_expires),
            },
            bans: BanConfig {
                threshold: self.ban_threshold,
                window: self.ban_window,
                duration: self.ban_duration,
                ..BanConfig::default()
            },
            nonce: NonceConfig::default(),
            secret: id.secret,
            instance: id.instance,
            challenge: self.digest_challenge.clone(),
            cluster: id.cluster,
        }
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` → host (without brackets) and port.
pub fn split_host_port(text: &str) -> (&str, Option<u16>) {
    if let Some(rest) = text.strip_prefix('[')
        && let Some((host, after)) = rest.split_once(']')
    {
        return (host, after.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match text.split_once(':') {
        Some((host, port)) if !port.contains(':') => match port.parse() {
            Ok(p) => (host, Some(p)),
            Err(_) => (text, None),
        },
        _ => (text, None),
    }
}

/// Serves `app` on `listener` as a task on `tasks` until `shutdown`.
pub fn spawn_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: &CancellationToken,
    tasks: &TaskTracker,
) {
    let shutdown = shutdown.clone();
    tasks.spawn(async move {
        // Handlers see the peer's address (SIP WebSocket flows are named by it).
        let serve = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move { shutdown.cancelled().await });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "the HTTP server stopped");
        }
    });
}

/// Rejects a `--replica-id` that cannot name a replica, naming the fix.
pub fn check_replica_id(id: &str) -> Result<()> {
    if !kubepbx_api::replicas::is_valid_id(id) {
        bail!(
            "--replica-id {id:?} is not a valid id: use 1-63 letters, digits, '-', '_' or '.' \
             (in Kubernetes, the pod name)"
        );
    }
    Ok(())
}

/// How long stopping may take before the remaining tasks are abandoned.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Cancels `shutdown` and waits (at most [`STOP_TIMEOUT`]) for `tasks` to end.
pub async fn stop_tasks(shutdown: &CancellationToken, tasks: &TaskTracker) {
    shutdown.cancel();
    tasks.close();
    if tokio::time::timeout(STOP_TIMEOUT, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not stop in time");
    }
}

/// `host:port` for Via and Record-Route; IPv6 addresses in brackets.
pub fn advertise_hostport(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `--media-timeout`: at least 5 s.
pub fn parse_media_timeout(value: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(5) {
        return Err(format!(
            "{value} is too short: phones on hold may send no RTP for a while; use at least 5s (default 60s)"
        ));
    }
    Ok(d)
}

/// `--media-batch-interval`: 0 up to [`kubepbx_media::MAX_BATCH_INTERVAL`].
pub fn parse_batch_interval(value: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    let max = kubepbx_media::MAX_BATCH_INTERVAL;
    if d > max {
        return Err(format!(
            "{value} is too long: a packet would wait longer than the {}ms between two packets; use at most {}ms (default 1ms, 0 to wake for every packet)",
            max.as_millis(),
            max.as_millis()
        ));
    }
    Ok(d)
}

/// The WebRTC socket of a relay binding RTP on `bind`: `--webrtc-port` (0: no WebRTC).
pub fn webrtc_bind(bind: std::net::IpAddr, port: u16) -> Option<SocketAddr> {
    (port != 0).then(|| SocketAddr::new(bind, port))
}

/// `--advertise-service NAME`: a Service name, checked before anything starts.
pub fn parse_service_name(value: &str) -> Result<String, String> {
    kubepbx_operator::load_balancer::check_name(value)
        .map(|()| value.to_owned())
        .map_err(|e| e.to_string())
}

/// `--rtp-ports LO-HI`.
pub fn parse_ports(value: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    kubepbx_media::parse_port_range(value).map_err(|e| e.to_string())
}

/// One `--digest-challenge` algorithm (`sha-256`, `sha256`, `md5`).
pub fn parse_algorithm(value: &str) -> Result<Algorithm, String> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("sha256") {
        return Ok(Algorithm::Sha256);
    }
    Algorithm::parse(value).ok_or_else(|| format!("{value:?} is not SHA-256 or MD5"))
}

/// A failed bind of `--{what}` as an error naming the fix.
pub fn bind_error(what: &str, addr: SocketAddr, e: &std::io::Error) -> anyhow::Error {
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

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
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

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn advertise_with_and_without_port() {
        assert_eq!(
            split_host_port("pbx.example.com"),
            ("pbx.example.com", None)
        );
        assert_eq!(
            split_host_port("203.0.113.7:5070"),
            ("203.0.113.7", Some(5070))
        );
        assert_eq!(split_host_port("2001:db8::1"), ("2001:db8::1", None));
        assert_eq!(
            split_host_port("[2001:db8::1]:5080"),
            ("2001:db8::1", Some(5080))
        );
        assert_eq!(split_host_port("[2001:db8::1]"), ("2001:db8::1", None));
    }
}
