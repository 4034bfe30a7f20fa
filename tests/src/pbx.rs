//! [`Pbx`]: the real `kubepbx` binary in single-process mode, started for one test.
//!
//! ```text
//! Pbx::builder() ── start() ──► kubepbx up -f <manifests> --sip 127.0.0.1:<p> --http 127.0.0.1:<q>
//!                                         --advertise 127.0.0.1 --domain <d> --data-dir <dir>
//!                                         --admin-token <t> --rtp-ports <lo>-<hi> [extra args]
//!                  ◄── polls GET /readyz until 200 (or the process exits, or 20 s pass)
//! pbx.api_get("/api/…")  ── Authorization: Bearer <t> ──► serde_json::Value
//! pbx.api_delete("/api/…"), pbx.api_get_bytes("/api/…") ──► status, body
//! pbx.api_call("POST", "/api/…", Some(&json)) ──► status, JSON answer
//! drop(pbx)              ── kill + wait
//! ```
//!
//! The media relay gets its own block of [`DEFAULT_RTP_PORTS`] UDP ports
//! ([`crate::ports::free_udp_port_block`]) unless the test chooses a range
//! ([`PbxBuilder::rtp_ports`]); [`Pbx::rtp_ports`] says which, so a test can check that the SDP
//! a phone receives names the relay.
//!
//! The binary is `$KUBEPBX_BIN` if set, else `kubepbx` in the target directory the test
//! executable was built into (`target/debug/deps/<test>` → `target/debug/kubepbx`): build it
//! first with `cargo build -p kubepbx`. Everything the test does not choose lives in one temp
//! directory: `manifests/` (the `-f` folder the test writes Extensions into), `data/` and
//! `kubepbx.log` (stdout and stderr of every run). Set `KUBEPBX_TEST_KEEP=1` to keep that
//! directory after the test for a look at the log.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Error, IoContext, Result};
use crate::ports::{free_tcp_port, free_udp_port, free_udp_port_block, free_udp_tcp_port};
use crate::process::{Child, append_marker};

/// The SIP domain tests use unless they choose another.
pub const DEFAULT_DOMAIN: &str = "pbx.example.com";
/// How long [`PbxBuilder::start`] waits for `/readyz` unless told otherwise.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How many relay ports a PBX gets unless the test chooses: 25 calls (4 ports each), with room
/// for pairs another program holds (the relay skips those).
pub const DEFAULT_RTP_PORTS: u16 = 100;
/// The address the PBX advertises in Via, Record-Route and SDP (`--advertise`).
pub const ADVERTISE: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Chooses how a [`Pbx`] is started; [`PbxBuilder::start`] starts it.
#[derive(Debug, Clone)]
pub struct PbxBuilder {
    binary: Option<PathBuf>,
    manifest_dir: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    domain: String,
    token: Option<String>,
    sip_port: Option<u16>,
    http_port: Option<u16>,
    rtp_ports: Option<RangeInclusive<u16>>,
    extra_args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    rust_log: Option<String>,
    ready_timeout: Duration,
}

impl Default for PbxBuilder {
    fn default() -> Self {
        PbxBuilder {
            binary: None,
            manifest_dir: None,
            data_dir: None,
            domain: DEFAULT_DOMAIN.to_owned(),
            token: None,
            sip_port: None,
            http_port: None,
            rtp_ports: None,
            extra_args: Vec::new(),
            env: Vec::new(),
            rust_log: None,
            ready_timeout: DEFAULT_READY_TIMEOUT,
        }
    }
}

impl PbxBuilder {
    /// The binary to run instead of `$KUBEPBX_BIN` or the one next to the test executable.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// The `-f` folder (default: an empty `manifests/` in the temp dir).
    pub fn manifest_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.manifest_dir = Some(dir.into());
        self
    }

    /// The `--data-dir` (default: `data/` in the temp dir). Give the same one to a second
    /// [`Pbx`] to test that a restart keeps registrations.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// The `--domain` (default [`DEFAULT_DOMAIN`]).
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = domain.into();
        self
    }

    /// The `--admin-token` (default: a fresh random-looking one).
    pub fn admin_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The SIP port, UDP and TCP (default: a free one).
    pub fn sip_port(mut self, port: u16) -> Self {
        self.sip_port = Some(port);
        self
    }

    /// The HTTP port (default: a free one).
    pub fn http_port(mut self, port: u16) -> Self {
        self.http_port = Some(port);
        self
    }

    /// The media relay's `--rtp-ports` (default: a free block of [`DEFAULT_RTP_PORTS`]).
    pub fn rtp_ports(mut self, ports: RangeInclusive<u16>) -> Self {
        self.rtp_ports = Some(ports);
        self
    }

    /// One more argument after the standard ones.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// More arguments after the standard ones.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An environment variable for the process.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// `RUST_LOG` for the process, e.g. `"debug"` or `"sip=debug,info"` (default: inherited).
    pub fn rust_log(mut self, filter: impl Into<String>) -> Self {
        self.rust_log = Some(filter.into());
        self
    }

    /// Offer MD5 alone in digest challenges (`--digest-challenge md5`): sipp 3.6 and
    /// baresip 1.0 answer only the first challenge and know only MD5.
    pub fn md5_only(self) -> Self {
        self.args(["--digest-challenge", "md5"])
    }

    /// How long to wait for `/readyz` (default [`DEFAULT_READY_TIMEOUT`]).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Starts the PBX and waits until it is ready.
    pub fn start(self) -> Result<Pbx> {
        let binary = match &self.binary {
            Some(b) => b.clone(),
            None => kubepbx_binary()?,
        };
        if !binary.is_file() {
            return Err(Error::ProgramNotFound {
                program: "kubepbx",
                path: binary,
                hint: "build it with `cargo build -p kubepbx`, or set KUBEPBX_BIN",
            });
        }
        let keep = std::env::var_os("KUBEPBX_TEST_KEEP").is_some_and(|v| v != "0" && !v.is_empty());
        let temp = tempfile::Builder::new()
            .prefix("kubepbx-test-")
            .disable_cleanup(keep)
            .tempdir()
            .context(|| "create temp dir".into())?;
        let manifest_dir = match &self.manifest_dir {
            Some(d) => d.clone(),
            None => temp.path().join("manifests"),
        };
        let data_dir = match &self.data_dir {
            Some(d) => d.clone(),
            None => temp.path().join("data"),
        };
        for dir in [&manifest_dir, &data_dir] {
            std::fs::create_dir_all(dir).context(|| format!("create {}", dir.display()))?;
        }
        let sip_port = match self.sip_port {
            Some(p) => p,
            None => free_udp_tcp_port()?,
        };
        let http_port = match self.http_port {
            Some(p) => p,
            None => free_tcp_port()?,
        };
        let rtp_ports = match &self.rtp_ports {
            Some(r) => r.clone(),
            None => free_udp_port_block(DEFAULT_RTP_PORTS)?,
        };
        let webrtc_port = free_udp_port()?;
        let token = self.token.clone().unwrap_or_else(fresh_token);
        let mut pbx = Pbx {
            log_path: temp.path().join("kubepbx.log"),
            temp,
            binary,
            manifest_dir,
            data_dir,
            sip_port,
            http_port,
            rtp_ports,
            webrtc_port,
            token,
            config: self,
            child: None,
            runs: 0,
        };
        // A port is picked free and bound by kubepbx a moment later: any program binding an
        // ephemeral port (another test's) may come in between. Then again, on fresh ports.
        for attempt in 1.. {
            let err = match pbx.launch() {
                Ok(()) => break,
                Err(e) => e,
            };
            let taken =
                matches!(&err, Error::Exited { log, .. } if log.contains("Address already in use"));
            if !taken || attempt == 3 {
                return Err(err);
            }
            pbx.fresh_ports()?;
        }
        Ok(pbx)
    }
}

/// A running `kubepbx up` (see the module doc). Killed when dropped.
#[derive(Debug)]
pub struct Pbx {
    temp: tempfile::TempDir,
    binary: PathBuf,
    manifest_dir: PathBuf,
    data_dir: PathBuf,
    sip_port: u16,
    http_port: u16,
    rtp_ports: RangeInclusive<u16>,
    webrtc_port: u16,
    token: String,
    log_path: PathBuf,
    config: PbxBuilder,
    child: Option<Child>,
    runs: u32,
}

impl Pbx {
    /// A builder with every default.
    pub fn builder() -> PbxBuilder {
        PbxBuilder::default()
    }

    /// Starts a PBX with every default: empty manifest folder, fresh data dir, free ports.
    pub fn start() -> Result<Pbx> {
        Self::builder().start()
    }

    /// Where phones send SIP (UDP and TCP): `127.0.0.1:<port>`.
    pub fn sip_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.sip_port))
    }

    /// The address the PBX writes into SDP for its media relay ([`ADVERTISE`]).
    pub fn advertise(&self) -> IpAddr {
        IpAddr::V4(ADVERTISE)
    }

    /// The relay's `--rtp-ports`: every port the PBX puts into SDP lies in it.
    pub fn rtp_ports(&self) -> RangeInclusive<u16> {
        self.rtp_ports.clone()
    }

    /// The UDP port of the relay's WebRTC legs (`--webrtc-port`).
    pub fn webrtc_port(&self) -> u16 {
        self.webrtc_port
    }

    /// The HTTP base URL, `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The admin token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The SIP domain the PBX serves.
    pub fn domain(&self) -> &str {
        &self.config.domain
    }

    /// The `-f` folder: write Extensions here (see [`crate::manifests`]).
    pub fn manifest_dir(&self) -> &Path {
        &self.manifest_dir
    }

    /// The `--data-dir`.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The temp dir holding the log and default folders.
    pub fn temp_dir(&self) -> &Path {
        self.temp.path()
    }

    /// The process id of the current run, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the process wrote so far, over all runs (runs are separated by marker lines).
    pub fn log(&self) -> String {
        crate::process::read_lossy(&self.log_path)
    }

    /// The last `lines` lines of the log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        crate::process::tail(&self.log(), lines)
    }

    /// The path of the log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// `GET <path>` with the admin token; the body as JSON. Errors unless the status is 2xx.
    pub fn api_get(&self, path: &str) -> Result<serde_json::Value> {
        let url = self.url(path);
        let (status, body) = http_get(&url, Some(&self.token))?;
        if !(200..300).contains(&status) {
            return Err(Error::Http {
                method: "GET",
                url,
                message: format!("status {status}: {body}"),
            });
        }
        serde_json::from_str(&body).map_err(|source| Error::Json { url, body, source })
    }

    /// `GET <path>` with the given bearer token (or none); the status and the body as text.
    /// For checking that the API refuses a missing or wrong token.
    pub fn api_get_status(&self, path: &str, token: Option<&str>) -> Result<(u16, String)> {
        http_get(&self.url(path), token)
    }

    /// `DELETE <path>` with the admin token; the status and the body as text (any status).
    pub fn api_delete(&self, path: &str) -> Result<(u16, String)> {
        let r = http_request("DELETE", &self.url(path), Some(&self.token))?;
        Ok((r.status, r.text()))
    }

    /// `method <path>` with the admin token and `body` as JSON (for `POST`, `PUT`, `PATCH`):
    /// the status and the answer (see [`Pbx::api_send`]).
    pub fn api_call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, serde_json::Value)> {
        let (status, _, json) = self.api_send(method, path, body, Some(&self.token))?;
        Ok((status, json))
    }

    /// `method <path>` with the given bearer token (or none) and `body` as JSON: the status,
    /// the `Content-Type` and the body as JSON (`null` when empty, a JSON string when it is not
    /// JSON). Any status is a success here.
    pub fn api_send(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&serde_json::Value>,
        token: Option<&str>,
    ) -> Result<(u16, Option<String>, serde_json::Value)> {
        let bytes = body.map(|b| b.to_string().into_bytes());
        let r = http_send(method, &self.url(path), token, bytes.as_deref())?;
        let json = if r.body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&r.body).unwrap_or_else(|_| serde_json::Value::String(r.text()))
        };
        Ok((r.status, r.content_type, json))
    }

    /// `GET <path>` with the admin token; the status, the `Content-Type` and the body as bytes
    /// (any status), for downloads such as recordings.
    pub fn api_get_bytes(&self, path: &str) -> Result<(u16, Option<String>, Vec<u8>)> {
        let r = http_request("GET", &self.url(path), Some(&self.token))?;
        Ok((r.status, r.content_type, r.body))
    }

    /// The object `GET /api/v1/extensions` lists for `ext`, if any.
    pub fn extension(&self, ext: &str) -> Result<Option<serde_json::Value>> {
        let list = self.api_get("/api/v1/extensions")?;
        Ok(list
            .as_array()
            .and_then(|a| a.iter().find(|e| e["extension"] == ext))
            .cloned())
    }

    /// Waits until the API lists `ext` (the manifest folder is polled every second) and
    /// returns it.
    pub fn wait_for_extension(&self, ext: &str, timeout: Duration) -> Result<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = self.extension(ext)? {
                return Ok(found);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    program: "kubepbx",
                    what: format!("extension {ext} in GET /api/v1/extensions"),
                    timeout,
                    log: crate::process::tail(&self.log(), 40),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Writes `ext-<n>.yaml` with the default password for each extension into the manifest
    /// folder.
    pub fn add_extensions(&self, extensions: &[&str]) -> Result<()> {
        for ext in extensions {
            crate::manifests::write_extension(
                &self.manifest_dir,
                ext,
                &crate::manifests::default_password(ext),
                &crate::manifests::ExtensionOpts::default(),
            )?;
        }
        Ok(())
    }

    /// Whether `GET /readyz` answers 200 right now.
    pub fn is_ready(&self) -> bool {
        matches!(http_get(&self.url("/readyz"), None), Ok((200, _)))
    }

    /// Errors with the log if the process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self.child.as_mut() {
            Some(child) => child.ensure_running(),
            None => Err(Error::Invalid("kubepbx is stopped".into())),
        }
    }

    /// Kills the process and waits for it (no graceful shutdown; see [`Pbx::shutdown`]).
    pub fn stop(&mut self) -> Result<ExitStatus> {
        match self.child.take() {
            Some(mut child) => child.kill(),
            None => Err(Error::Invalid("kubepbx is not running".into())),
        }
    }

    /// SIGTERM, then waits up to `timeout` for a clean exit (kills after that). Returns how it
    /// exited, so a test can assert a graceful shutdown exits 0.
    pub fn shutdown(&mut self, timeout: Duration) -> Result<ExitStatus> {
        match self.child.take() {
            Some(mut child) => child.terminate(timeout),
            None => Err(Error::Invalid("kubepbx is not running".into())),
        }
    }

    /// Stops the process (if running) with SIGTERM and starts it again with the same ports,
    /// folders, token and arguments; waits until it is ready.
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.shutdown(Duration::from_secs(10))?;
        }
        self.launch()
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with('/') {
            format!("{}{path}", self.http_url())
        } else {
            format!("{}/{path}", self.http_url())
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("up")
            .arg("-f")
            .arg(&self.manifest_dir)
            .arg("--sip")
            .arg(format!("127.0.0.1:{}", self.sip_port))
            .arg("--http")
            .arg(format!("127.0.0.1:{}", self.http_port))
            .arg("--advertise")
            .arg(ADVERTISE.to_string())
            .arg("--domain")
            .arg(&self.config.domain)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--admin-token")
            .arg(&self.token)
            .arg("--rtp-ports")
            .arg(format!(
                "{}-{}",
                self.rtp_ports.start(),
                self.rtp_ports.end()
            ))
            .arg("--webrtc-port")
            .arg(self.webrtc_port.to_string())
            .args(&self.config.extra_args)
            .env("NO_COLOR", "1")
            // The built web phone and admin UI of this checkout (`make web`).
            .env("KUBEPBX_WEB_DIR", web_dir());
        if let Some(filter) = &self.config.rust_log {
            cmd.env("RUST_LOG", filter);
        }
        for (k, v) in &self.config.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// New free ports for those the harness picked (not those the test fixed).
    fn fresh_ports(&mut self) -> Result<()> {
        let c = &self.config;
        if c.sip_port.is_none() {
            self.sip_port = free_udp_tcp_port()?;
        }
        if c.http_port.is_none() {
            self.http_port = free_tcp_port()?;
        }
        if c.rtp_ports.is_none() {
            self.rtp_ports = free_udp_port_block(DEFAULT_RTP_PORTS)?;
        }
        self.webrtc_port = free_udp_port()?;
        Ok(())
    }

    fn launch(&mut self) -> Result<()> {
        self.runs += 1;
        let cmd = self.command();
        append_marker(
            &self.log_path,
            &format!("=== kubepbx-tests: run {}: {cmd:?}", self.runs),
        )?;
        let mut child = Child::spawn("kubepbx", cmd, &self.log_path)?;
        let timeout = self.config.ready_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            if self.is_ready() {
                self.child = Some(child);
                return Ok(());
            }
            child.ensure_running()?;
            if Instant::now() >= deadline {
                let log = child.tail();
                drop(child);
                return Err(Error::Timeout {
                    program: "kubepbx",
                    what: format!("GET {} → 200", self.url("/readyz")),
                    timeout,
                    log,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The built web UIs of this checkout (`web/dist`, built by `make web`).
pub fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/dist")
}

/// `$KUBEPBX_BIN`, else `kubepbx` in the profile dir above the running test executable: the
/// binary every test runs.
pub fn kubepbx_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("KUBEPBX_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe().context(|| "locate the test executable".into())?;
    // target/<profile>/deps/<test-exe> → target/<profile>/kubepbx
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| Error::Invalid(format!("unexpected test path {}", exe.display())))?;
    Ok(profile_dir.join(format!("kubepbx{}", std::env::consts::EXE_SUFFIX)))
}

/// A token unique to this test process and call; not secret, just not guessable by accident.
fn fresh_token() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "test-{}-{}-{nanos:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// One blocking GET with a 5 s timeout; any status is a success here.
pub(crate) fn http_get(url: &str, token: Option<&str>) -> Result<(u16, String)> {
    let r = http_request("GET", url, token)?;
    Ok((r.status, r.text()))
}

/// What [`http_request`] got back.
pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    pub(crate) content_type: Option<String>,
    pub(crate) body: Vec<u8>,
}

impl HttpResponse {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The largest body read (a recording of a few minutes).
const MAX_BODY: u64 = 64 << 20;

/// One blocking request without a body (`GET` or `DELETE`) with a 5 s timeout; any status is a
/// success here.
pub(crate) fn http_request(
    method: &'static str,
    url: &str,
    token: Option<&str>,
) -> Result<HttpResponse> {
    http_send(method, url, token, None)
}

/// One blocking request with a 5 s timeout: `GET` or `DELETE` without a body, `POST`, `PUT` or
/// `PATCH` with `body` sent as JSON; any status is a success here.
pub(crate) fn http_send(
    method: &'static str,
    url: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> Result<HttpResponse> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let err = |message: String| Error::Http {
        method,
        url: url.to_owned(),
        message,
    };
    let auth = token.map(|t| format!("Bearer {t}"));
    let result = match method {
        "POST" | "PUT" | "PATCH" => {
            let mut req = match method {
                "POST" => agent.post(url),
                "PUT" => agent.put(url),
                _ => agent.patch(url),
            };
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            req.header("Content-Type", "application/json")
                .send(body.unwrap_or_default())
        }
        "DELETE" => {
            let mut req = agent.delete(url);
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            req.call()
        }
        _ => {
            let mut req = agent.get(url);
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            req.call()
        }
    };
    let mut resp = result.map_err(|e| err(e.to_string()))?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_vec()
        .map_err(|e| err(format!("reading the body: {e}")))?;
    Ok(HttpResponse {
        status,
        content_type,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn missing_binary_is_a_clear_error() {
        let err = Pbx::builder()
            .binary("/nonexistent/kubepbx")
            .start()
            .unwrap_err();
        assert!(
            matches!(err, Error::ProgramNotFound { .. }),
            "unexpected: {err}"
        );
        assert!(err.to_string().contains("cargo build -p kubepbx"));
    }

    #[test]
    fn default_binary_sits_next_to_the_deps_dir() {
        if std::env::var_os("KUBEPBX_BIN").is_some() {
            return;
        }
        let bin = kubepbx_binary().unwrap();
        let exe = std::env::current_exe().unwrap();
        assert_eq!(bin.parent(), exe.parent().unwrap().parent());
        assert!(bin.ends_with(format!("kubepbx{}", std::env::consts::EXE_SUFFIX)));
    }

    #[test]
    fn a_process_that_exits_early_reports_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake-kubepbx");
        std::fs::write(&fake, "#!/bin/sh\necho \"fake pbx: args $*\"\nexit 2\n").unwrap();
        make_executable(&fake);
        let err = Pbx::builder().binary(&fake).start().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("exited early"), "{text}");
        assert!(text.contains("fake pbx: args up -f"), "{text}");
        assert!(text.contains("--domain pbx.example.com"), "{text}");
    }

    #[test]
    fn readiness_timeout_includes_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake-kubepbx");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho starting but never ready\nexec sleep 30\n",
        )
        .unwrap();
        make_executable(&fake);
        let err = Pbx::builder()
            .binary(&fake)
            .ready_timeout(Duration::from_millis(300))
            .start()
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/readyz"), "{text}");
        assert!(text.contains("starting but never ready"), "{text}");
    }

    #[test]
    fn http_get_sends_the_bearer_token() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let n = conn.read(&mut buf).unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            let body = r#"{"ok":true}"#;
            write!(
                conn,
                "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            req
        });
        let (status, body) =
            http_get(&format!("http://127.0.0.1:{port}/api/x"), Some("t0k")).unwrap();
        assert_eq!(status, 401);
        assert_eq!(body, r#"{"ok":true}"#);
        let req = server.join().unwrap().to_ascii_lowercase();
        assert!(req.starts_with("get /api/x http/1.1"), "{req}");
        assert!(req.contains("authorization: bearer t0k"), "{req}");
    }

    #[test]
    fn http_request_deletes_and_reads_bytes_with_their_type() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let n = conn.read(&mut buf).unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            let body = b"RIFF\x00\xffWAVE";
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: audio/wav\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .unwrap();
            conn.write_all(body).unwrap();
            req
        });
        let r = http_request(
            "DELETE",
            &format!("http://127.0.0.1:{port}/api/c/1"),
            Some("t"),
        )
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type.as_deref(), Some("audio/wav"));
        assert_eq!(r.body, b"RIFF\x00\xffWAVE", "bytes, not text");
        let req = server.join().unwrap().to_ascii_lowercase();
        assert!(req.starts_with("delete /api/c/1 http/1.1"), "{req}");
        assert!(req.contains("authorization: bearer t"), "{req}");
    }

    fn make_executable(path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        let mut perms = std::fs::metadata(path).unwrap().permissions();
        perms.set_mode(0o755);
        std::fs::set_permissions(path, perms).unwrap();
    }
}
