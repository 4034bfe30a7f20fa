//! [`Replica`]: one process of a kubepbx cluster — `kubepbx registrar` or `kubepbx media` —
//! sharing an etcd the test started, on free loopback ports.
//!
//! ```text
//! Replica::registrar(&cfg, "a") ──► kubepbx registrar --etcd <url> --replica-id a
//!     --sip 127.0.0.1:<p> --internal 127.0.0.1:<i> --http 127.0.0.1:<q> --advertise <cfg.advertise>
//!     --domain <d> --admin-token <t>        ◄── polls GET /readyz until 200
//!     (KUBEPBX_WEB_DIR: this checkout's web/dist, so it serves the web phone at /phone/)
//! Replica::media(&cfg, "m0") ──► kubepbx media --etcd <url> --replica-id m0
//!     --control 127.0.0.1:<c> --rtp-ports <block> --advertise 127.0.0.1
//! ```
//!
//! [`Replica::registrar_with`] and [`Replica::media_with`] add flags of the test's own (e.g.
//! `--recordings-dir`), kept for every run.
//!
//! A replica can be killed (SIGKILL, a crash), terminated (SIGTERM, a rolling update) and started
//! again with the same ports and flags. Its log (every run) is `<dir>/<id>.log`.

use crate::error::{Error, Result};
use crate::pbx::{http_get, http_request, kubepbx_binary, web_dir};
use crate::ports::{free_tcp_port, free_udp_port, free_udp_port_block, free_udp_tcp_port};
use crate::process::{Child, append_marker};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

/// How long a replica may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Relay ports per media replica (25 calls).
const MEDIA_PORTS: u16 = 100;

/// What every replica of one test cluster shares.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// etcd URL.
    pub etcd: String,
    /// Key prefix (one per test, so tests sharing an etcd do not meet).
    pub prefix: String,
    /// SIP domain.
    pub domain: String,
    /// `host:port` every registrar advertises (the load balancer's front address).
    pub advertise: String,
    /// Admin token of every registrar.
    pub token: String,
    /// Where logs go.
    pub dir: PathBuf,
    /// `RUST_LOG` of every replica.
    pub rust_log: String,
}

/// Which role a replica plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `kubepbx registrar`.
    Registrar,
    /// `kubepbx media`.
    Media,
}

/// One replica process (see the module doc). Killed when dropped.
#[derive(Debug)]
pub struct Replica {
    role: Role,
    id: String,
    config: ClusterConfig,
    /// Registrar: SIP; media: unused.
    sip: Option<SocketAddr>,
    /// Registrar: internal SIP.
    internal: Option<SocketAddr>,
    /// Registrar: HTTP API; media: control API.
    http: SocketAddr,
    rtp_ports: Option<std::ops::RangeInclusive<u16>>,
    /// Flags of the test's own, after the harness's.
    extra: Vec<String>,
    log_path: PathBuf,
    child: Option<Child>,
    runs: u32,
}

impl Replica {
    /// Starts `kubepbx registrar` as replica `id` and waits until it is ready.
    pub fn registrar(config: &ClusterConfig, id: &str) -> Result<Replica> {
        Self::registrar_with(config, id, &[])
    }

    /// [`Self::registrar`] with `extra` flags after the harness's.
    pub fn registrar_with(config: &ClusterConfig, id: &str, extra: &[&str]) -> Result<Replica> {
        let sip = SocketAddr::from(([127, 0, 0, 1], free_udp_tcp_port()?));
        let internal = SocketAddr::from(([127, 0, 0, 1], free_udp_port()?));
        let http = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?));
        let mut r = Replica {
            role: Role::Registrar,
            id: id.to_owned(),
            config: config.clone(),
            sip: Some(sip),
            internal: Some(internal),
            http,
            rtp_ports: None,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            log_path: config.dir.join(format!("{id}.log")),
            child: None,
            runs: 0,
        };
        r.launch_on_free_ports()?;
        Ok(r)
    }

    /// Starts `kubepbx media` as replica `id` with its own block of relay ports and waits
    /// until it is ready.
    pub fn media(config: &ClusterConfig, id: &str) -> Result<Replica> {
        Self::media_with(config, id, &[])
    }

    /// [`Self::media`] with `extra` flags after the harness's.
    pub fn media_with(config: &ClusterConfig, id: &str, extra: &[&str]) -> Result<Replica> {
        let http = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?));
        let mut r = Replica {
            role: Role::Media,
            id: id.to_owned(),
            config: config.clone(),
            sip: None,
            internal: None,
            http,
            rtp_ports: Some(free_udp_port_block(MEDIA_PORTS)?),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            log_path: config.dir.join(format!("{id}.log")),
            child: None,
            runs: 0,
        };
        r.launch_on_free_ports()?;
        Ok(r)
    }

    /// The replica id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A registrar's SIP address (UDP and TCP).
    pub fn sip_addr(&self) -> SocketAddr {
        self.sip.unwrap_or(self.http)
    }

    /// A registrar's HTTP base URL, `http://127.0.0.1:<port>` without a trailing slash: the
    /// admin API, `/ws` and the web phone at `/phone/`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// A media replica's relay ports.
    pub fn rtp_ports(&self) -> Option<std::ops::RangeInclusive<u16>> {
        self.rtp_ports.clone()
    }

    /// The log of every run.
    pub fn log(&self) -> String {
        crate::process::read_lossy(&self.log_path)
    }

    /// `GET <path>` on the replica's HTTP port (with the admin token); JSON; errors unless 2xx.
    pub fn api_get(&self, path: &str) -> Result<serde_json::Value> {
        let url = format!("http://{}{path}", self.http);
        let (status, body) = http_get(&url, Some(&self.config.token))?;
        if !(200..300).contains(&status) {
            return Err(Error::Http {
                method: "GET",
                url,
                message: format!("status {status}: {body}"),
            });
        }
        serde_json::from_str(&body).map_err(|source| Error::Json { url, body, source })
    }

    /// `DELETE <path>` with the admin token: status and body, whatever the status.
    pub fn api_delete(&self, path: &str) -> Result<(u16, String)> {
        let r = http_request(
            "DELETE",
            &format!("http://{}{path}", self.http),
            Some(&self.config.token),
        )?;
        Ok((r.status, r.text()))
    }

    /// `GET <path>`: status and body, whatever the status.
    pub fn get_status(&self, path: &str) -> Result<(u16, String)> {
        let r = http_request(
            "GET",
            &format!("http://{}{path}", self.http),
            Some(&self.config.token),
        )?;
        Ok((r.status, r.text()))
    }

    /// `GET <path>` with the admin token: status, content type and body, whatever the status.
    pub fn api_get_bytes(&self, path: &str) -> Result<(u16, Option<String>, Vec<u8>)> {
        let r = http_request(
            "GET",
            &format!("http://{}{path}", self.http),
            Some(&self.config.token),
        )?;
        Ok((r.status, r.content_type, r.body))
    }

    /// Whether `/readyz` answers 200 now.
    pub fn is_ready(&self) -> bool {
        matches!(
            http_get(&format!("http://{}/readyz", self.http), None),
            Ok((200, _))
        )
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        match self.child.take() {
            Some(mut child) => child.kill(),
            None => Err(Error::Invalid(format!("{} is not running", self.id))),
        }
    }

    /// SIGTERM, then waits up to `timeout` for the exit; how it exited.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        match self.child.take() {
            Some(mut child) => child.terminate(timeout),
            None => Err(Error::Invalid(format!("{} is not running", self.id))),
        }
    }

    /// Starts the process again with the same flags and, when they are still free, the same
    /// ports; waits until it is ready. A port of the dead process may have been taken meanwhile
    /// (by any program binding an ephemeral port): then the replica comes back on fresh ports,
    /// as a restarted pod comes back on a new address ([`Self::sip_addr`] says which).
    pub fn start_again(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Err(Error::Invalid(format!("{} is running", self.id)));
        }
        self.launch_on_free_ports()
    }

    /// [`Self::launch`], again on fresh ports (up to 3 times) when the process found one of
    /// its ports taken: a port is picked free and bound by the process a moment later, and
    /// any program binding an ephemeral port (another test's) may come in between.
    fn launch_on_free_ports(&mut self) -> Result<()> {
        let mut attempts = 0;
        loop {
            match self.launch() {
                Err(Error::Exited { log, .. })
                    if log.contains("Address already in use") && attempts < 3 =>
                {
                    attempts += 1;
                    self.fresh_ports()?;
                }
                other => return other,
            }
        }
    }

    fn fresh_ports(&mut self) -> Result<()> {
        self.http = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?));
        match self.role {
            Role::Registrar => {
                self.sip = Some(SocketAddr::from(([127, 0, 0, 1], free_udp_tcp_port()?)));
                self.internal = Some(SocketAddr::from(([127, 0, 0, 1], free_udp_port()?)));
            }
            Role::Media => self.rtp_ports = Some(free_udp_port_block(MEDIA_PORTS)?),
        }
        Ok(())
    }

    fn command(&self) -> Result<Command> {
        let c = &self.config;
        let mut cmd = Command::new(kubepbx_binary()?);
        match self.role {
            Role::Registrar => {
                cmd.arg("registrar")
                    .args(["--sip", &self.sip_addr().to_string()])
                    .args([
                        "--internal",
                        &self.internal.map(|a| a.to_string()).unwrap_or_default(),
                    ])
                    .args(["--http", &self.http.to_string()])
                    .args(["--advertise", &c.advertise])
                    .args(["--domain", &c.domain])
                    .args(["--admin-token", &c.token])
                    .args(["--digest-challenge", "md5"])
                    // The built web phone and admin UI of this checkout (`make web`).
                    .env("KUBEPBX_WEB_DIR", web_dir());
            }
            Role::Media => {
                // The block's last port is the WebRTC one; the others carry plain RTP.
                let ports = self.rtp_ports.clone().unwrap_or(20000..=20099);
                cmd.arg("media")
                    .args(["--control", &self.http.to_string()])
                    .args([
                        "--rtp-ports",
                        &format!("{}-{}", ports.start(), ports.end() - 1),
                    ])
                    .args(["--webrtc-port", &ports.end().to_string()])
                    .args(["--advertise", "127.0.0.1", "--rtp-bind", "127.0.0.1"]);
            }
        }
        cmd.args(["--etcd", &c.etcd])
            .args(["--etcd-prefix", &c.prefix])
            .args(["--replica-id", &self.id])
            .args(&self.extra)
            .env("RUST_LOG", &c.rust_log)
            .env("NO_COLOR", "1");
        Ok(cmd)
    }

    fn launch(&mut self) -> Result<()> {
        self.runs += 1;
        let cmd = self.command()?;
        append_marker(
            &self.log_path,
            &format!("=== kubepbx-tests: run {}: {cmd:?}", self.runs),
        )?;
        let mut child = Child::spawn("kubepbx", cmd, &self.log_path)?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if self.is_ready() {
                self.child = Some(child);
                return Ok(());
            }
            child.ensure_running()?;
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    program: "kubepbx",
                    what: format!("{} ready", self.id),
                    timeout: READY_TIMEOUT,
                    log: child.tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A fresh directory for a cluster's logs (kept with `KUBEPBX_TEST_KEEP=1`).
pub fn log_dir() -> Result<tempfile::TempDir> {
    let keep = std::env::var_os("KUBEPBX_TEST_KEEP").is_some_and(|v| v != "0" && !v.is_empty());
    tempfile::Builder::new()
        .prefix("kubepbx-cluster-")
        .disable_cleanup(keep)
        .tempdir()
        .map_err(|e| Error::io("create temp dir", e))
}
