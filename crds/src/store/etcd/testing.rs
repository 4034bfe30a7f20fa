//! A real etcd for tests: [`EtcdServer::start`] runs Debian's `etcd` (package `etcd-server`) on
//! free loopback ports with a temporary data folder, waits until it reports healthy, and stops
//! it when dropped.
//!
//! Enabled by the `testing` cargo feature (and in this crate's own tests), so other crates'
//! tests can start etcd too.
//!
//! etcd runs under a small `sh` guard that holds a pipe from the test process: when the test
//! process exits, even killed, the pipe closes and the guard kills etcd and removes its folder.
//! So a server kept in a `static` for a whole test binary does not outlive it.
//!
//! The server is tuned for tests: 10 ms heartbeats, so elections take milliseconds and leases
//! can be as short as 1 s; the data folder is on `/dev/shm` when there is one (no disk syncs).
//! `KUBEPBX_ETCD` names another binary than `etcd` on `PATH`.
//!
//! [`EtcdServer::start_tls`] serves clients over TLS only and asks them for a certificate
//! (`--client-cert-auth`), with fresh certificates ([`TestCerts`]) in its folder; its health is
//! then read on a plain-HTTP metrics port.

mod certs;

pub use certs::TestCerts;

use std::io::{self, BufRead, BufReader, Read, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// How long etcd may take to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts with fresh ports when the chosen ones were taken meanwhile.
const START_ATTEMPTS: usize = 3;
const NAME: &str = "kubepbx-test";

/// The guard: starts etcd in the background, prints its pid, then waits for a line ("stop":
/// kill etcd, keep the data) or the end of its input (the test process is gone: kill etcd and
/// remove the folder).
const GUARD: &str = r#"
log=$1; dir=$2; shift 2
"$@" </dev/null >>"$log" 2>&1 &
pid=$!
echo "$pid"
if read -r _; then
  kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
else
  kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"
fi
"#;

/// Why a test etcd could not be started.
#[derive(Debug, thiserror::Error)]
pub enum EtcdServerError {
    /// The binary is missing.
    #[error(
        "etcd is not installed ({binary} not found): run `scripts/install-deps.sh test` \
         (it installs Debian's etcd-server), or set KUBEPBX_ETCD to an etcd binary"
    )]
    NotInstalled {
        /// What was looked for.
        binary: String,
    },
    /// Starting the process or preparing its folder failed.
    #[error("starting etcd: {0}")]
    Io(#[from] io::Error),
    /// etcd did not become healthy.
    #[error("etcd at {url} did not become healthy: {reason}; its log ends with:\n{log}")]
    NotHealthy {
        /// Its client URL.
        url: String,
        /// What was seen.
        reason: String,
        /// The end of its log.
        log: String,
    },
    /// The test certificates could not be generated.
    #[error("generating test certificates: {0}")]
    Certificates(String),
}

/// A running etcd (see the module docs).
#[derive(Debug)]
pub struct EtcdServer {
    binary: PathBuf,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    /// Plain-HTTP port for `/health` when the client port speaks TLS.
    metrics_port: Option<u16>,
    certs: Option<TestCerts>,
    guard: Option<Guard>,
}

#[derive(Debug)]
struct Guard {
    child: Child,
    stdin: ChildStdin,
    etcd_pid: u32,
}

impl EtcdServer {
    /// Starts etcd on free loopback ports and waits until it is healthy.
    pub fn start() -> Result<Self, EtcdServerError> {
        Self::start_with(false)
    }

    /// Starts etcd serving clients over TLS only and requiring a client certificate signed by
    /// its CA ([`certs`](Self::certs)); waits until it is healthy.
    pub fn start_tls() -> Result<Self, EtcdServerError> {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Result<Self, EtcdServerError> {
        let binary = find_binary()?;
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            let dir = temp_dir()?;
            let (metrics_port, certs) = if tls {
                let certs = TestCerts::generate(&dir.path().join("certs"))?;
                (Some(free_port()?), Some(certs))
            } else {
                (None, None)
            };
            let mut server = EtcdServer {
                binary: binary.clone(),
                dir,
                client_port: free_port()?,
                peer_port: free_port()?,
                metrics_port,
                certs,
                guard: None,
            };
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| EtcdServerError::Io(io::Error::other("no attempt made"))))
    }

    /// The client URL, `http://127.0.0.1:PORT` (`https://` when started with
    /// [`start_tls`](Self::start_tls)).
    pub fn url(&self) -> String {
        let scheme = if self.certs.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The certificates of an etcd started with [`start_tls`](Self::start_tls).
    pub fn certs(&self) -> Option<&TestCerts> {
        self.certs.as_ref()
    }

    /// The client URL as a one-element endpoint list.
    pub fn endpoints(&self) -> Vec<String> {
        vec![self.url()]
    }

    /// Kills etcd (like a crash: SIGKILL), keeping its data for [`restart`](Self::restart).
    pub fn stop(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            let _ = guard.stdin.write_all(b"stop\n");
            let _ = guard.stdin.flush();
            let _ = guard.child.wait();
        }
    }

    /// Starts etcd again on the same ports with the same data, and waits until it is healthy.
    pub fn restart(&mut self) -> Result<(), EtcdServerError> {
        self.stop();
        self.launch()
    }

    /// The end of etcd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn launch(&mut self) -> Result<(), EtcdServerError> {
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let data = self.dir.path().join("data");
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(GUARD)
            .arg("kubepbx-etcd-guard")
            .arg(self.log_path())
            .arg(self.dir.path())
            .arg(&self.binary)
            .args(["--name", NAME, "--data-dir"])
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .arg(format!("--initial-cluster={NAME}={peer}"))
            .args(["--initial-cluster-state", "new"])
            .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
            .args(["--logger", "zap", "--log-level", "warn"]);
        if let Some(certs) = &self.certs {
            command
                .arg("--cert-file")
                .arg(certs.server_cert())
                .arg("--key-file")
                .arg(certs.server_key())
                .arg("--trusted-ca-file")
                .arg(certs.ca())
                .arg("--client-cert-auth");
        }
        if let Some(port) = self.metrics_port {
            command.arg(format!("--listen-metrics-urls=http://127.0.0.1:{port}"));
        }
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ETCD_") {
                command.env_remove(name);
            }
        }
        let mut child = command.spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let etcd_pid = line.trim().parse().map_err(|_| {
            io::Error::other(format!("the etcd guard printed {line:?} instead of a pid"))
        })?;
        self.guard = Some(Guard {
            child,
            stdin,
            etcd_pid,
        });
        self.wait_healthy()
    }

    fn wait_healthy(&mut self) -> Result<(), EtcdServerError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let not_healthy = |server: &mut EtcdServer, reason: String| {
            let log = server.log_tail();
            server.stop();
            EtcdServerError::NotHealthy {
                url: server.url(),
                reason,
                log,
            }
        };
        loop {
            let pid = self.guard.as_ref().map_or(0, |g| g.etcd_pid);
            if !alive(pid) {
                return Err(not_healthy(self, "etcd exited".to_owned()));
            }
            if healthy(self.metrics_port.unwrap_or(self.client_port)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(not_healthy(
                    self,
                    format!("not healthy within {START_TIMEOUT:?}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn find_binary() -> Result<PathBuf, EtcdServerError> {
    if let Some(path) = std::env::var_os("KUBEPBX_ETCD") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(EtcdServerError::NotInstalled {
                binary: path.display().to_string(),
            })
        };
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("etcd"))
                .find(|p| p.is_file())
        })
        .unwrap_or_default();
    on_path
        .or_else(|| Some(PathBuf::from("/usr/bin/etcd")).filter(|p| p.is_file()))
        .ok_or_else(|| EtcdServerError::NotInstalled {
            binary: "etcd (on PATH or /usr/bin/etcd)".to_owned(),
        })
}

fn temp_dir() -> io::Result<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    let mut builder = tempfile::Builder::new();
    builder.prefix("kubepbx-etcd-");
    if shm.is_dir()
        && let Ok(dir) = builder.tempdir_in(shm)
    {
        return Ok(dir);
    }
    builder.tempdir()
}

/// A loopback port nobody listens on right now.
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Whether a process runs (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Whether etcd's `/health` says so.
fn healthy(port: u16) -> bool {
    let attempt = || -> io::Result<String> {
        let mut stream = TcpStream::connect_timeout(
            &(Ipv4Addr::LOCALHOST, port).into(),
            Duration::from_millis(500),
        )?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    };
    attempt().is_ok_and(|r| r.contains("\"health\":\"true\""))
}
