//! `--advertise-service` end to end: a real `kubepbx media` and `kubepbx registrar` sharing a real
//! etcd read their Services from a stand-in Kubernetes API server on loopback ([`FakeApi`], found
//! through `KUBECONFIG`, the namespace from `POD_NAMESPACE`). While the load balancers have no
//! address the replicas serve nothing (their pods stay unready); once the cloud (the test) gives
//! one, they start and advertise it. The wait itself and its errors are unit-tested against
//! kube's mock API server in `operator/src/load_balancer.rs`.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed step must fail the test, helpers included"
)]

use kubepbx_api::store::etcd::testing::EtcdServer;
use kubepbx_tests::cluster::log_dir;
use kubepbx_tests::{
    free_tcp_port, free_udp_port, free_udp_port_block, free_udp_tcp_port, kubepbx_binary,
    wait_until,
};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NAMESPACE: &str = "pbx";
/// The registrars' Service: its load balancer gets a DNS name, as on AWS.
const SIP_SERVICE: &str = "kubepbx-sip";
const SIP_HOSTNAME: &str = "localhost";
/// The media replica's own Service: its load balancer gets an IP.
const MEDIA_SERVICE: &str = "kubepbx-media-0";
const MEDIA_IP: &str = "127.0.0.9";
/// For a replica to start once its load balancer has an address (reads back off to 5 s).
const START_WAIT: Duration = Duration::from_secs(20);

/// A stand-in for the Kubernetes API server: `GET /api/v1/namespaces/pbx/services/{name}`
/// answers a `LoadBalancer` Service, with an address once [`FakeApi::provision`] was called;
/// any other path a 404 Status. It records the paths read.
struct FakeApi {
    addr: SocketAddr,
    provisioned: Arc<AtomicBool>,
    reads: Arc<Mutex<Vec<String>>>,
}

impl FakeApi {
    fn start() -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let api = FakeApi {
            addr: listener.local_addr().unwrap(),
            provisioned: Arc::default(),
            reads: Arc::default(),
        };
        let (provisioned, reads) = (Arc::clone(&api.provisioned), Arc::clone(&api.reads));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (provisioned, reads) = (Arc::clone(&provisioned), Arc::clone(&reads));
                std::thread::spawn(move || serve(stream, &provisioned, &reads));
            }
        });
        api
    }

    /// The cloud has provisioned the load balancers.
    fn provision(&self) {
        self.provisioned.store(true, Ordering::SeqCst);
    }

    fn reads(&self, name: &str) -> usize {
        let path = format!("/api/v1/namespaces/{NAMESPACE}/services/{name}");
        self.reads
            .lock()
            .unwrap()
            .iter()
            .filter(|p| **p == path)
            .count()
    }

    /// A kubeconfig (JSON is YAML) naming this server (plain HTTP, a token) and another
    /// namespace than `POD_NAMESPACE`, which must win.
    fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let config = json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": format!("http://{}", self.addr)}}],
            "users": [{"name": "pod", "user": {"token": "not-checked"}}],
            "contexts": [{"name": "fake", "context": {
                "cluster": "fake", "user": "pod", "namespace": "elsewhere",
            }}],
        });
        std::fs::write(&path, config.to_string()).unwrap();
        path
    }
}

/// Answers the requests of one connection (HTTP/1.1, kept alive) until it closes.
fn serve(stream: TcpStream, provisioned: &AtomicBool, reads: &Mutex<Vec<String>>) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
        }
        let path = request.split_whitespace().nth(1).unwrap_or("").to_owned();
        let (status, body) = answer(&path, provisioned.load(Ordering::SeqCst));
        reads.lock().unwrap().push(path);
        let body = body.to_string();
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn answer(path: &str, provisioned: bool) -> (&'static str, Value) {
    let prefix = format!("/api/v1/namespaces/{NAMESPACE}/services/");
    let Some(name) = path.strip_prefix(&prefix) else {
        let status = json!({
            "apiVersion": "v1", "kind": "Status", "status": "Failure",
            "reason": "NotFound", "code": 404, "message": format!("{path} not found"),
        });
        return ("404 Not Found", status);
    };
    let ingress = match (provisioned, name) {
        (false, _) => json!([]),
        (true, SIP_SERVICE) => json!([{"hostname": SIP_HOSTNAME}]),
        (true, _) => json!([{"ip": MEDIA_IP}]),
    };
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"type": "LoadBalancer"},
        "status": {"loadBalancer": {"ingress": ingress}},
    });
    ("200 OK", service)
}

/// A `kubepbx` process logging into `<dir>/<name>.log`; killed when dropped.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn start(dir: &Path, name: &str, args: &[String], kubeconfig: &Path) -> Process {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(kubepbx_binary().unwrap())
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAMESPACE", NAMESPACE)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Process { child, log }
    }

    fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `GET http://{addr}/readyz` answers 200.
fn ready(addr: SocketAddr) -> bool {
    ureq::get(&format!("http://{addr}/readyz")).call().is_ok()
}

#[test]
fn replicas_wait_for_the_load_balancer_of_their_service_and_advertise_it() {
    let etcd = EtcdServer::start().unwrap();
    let dir = log_dir().unwrap();
    let api = FakeApi::start();
    let kubeconfig = api.kubeconfig(dir.path());
    let etcd_flags = |id: &str| {
        ["--etcd", &etcd.url(), "--etcd-prefix", "/kubepbx-test"]
            .into_iter()
            .chain(["--replica-id", id])
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };

    let control = SocketAddr::from(([127, 0, 0, 1], free_tcp_port().unwrap()));
    let ports = free_udp_port_block(8).unwrap();
    let mut args = vec!["media".to_owned()];
    args.extend(etcd_flags("m0"));
    args.extend([
        "--control".to_owned(),
        control.to_string(),
        "--rtp-ports".to_owned(),
        format!("{}-{}", ports.start(), ports.end()),
        "--webrtc-port".to_owned(),
        "0".to_owned(),
        "--rtp-bind".to_owned(),
        "127.0.0.1".to_owned(),
        "--advertise-service".to_owned(),
        MEDIA_SERVICE.to_owned(),
    ]);
    let mut media = Process::start(dir.path(), "m0", &args, &kubeconfig);

    let sip = SocketAddr::from(([127, 0, 0, 1], free_udp_tcp_port().unwrap()));
    let http = SocketAddr::from(([127, 0, 0, 1], free_tcp_port().unwrap()));
    let internal = SocketAddr::from(([127, 0, 0, 1], free_udp_port().unwrap()));
    let mut args = vec!["registrar".to_owned()];
    args.extend(etcd_flags("a"));
    args.extend(
        [
            "--sip",
            &sip.to_string(),
            "--http",
            &http.to_string(),
            "--internal",
            &internal.to_string(),
            "--admin-token",
            "cluster-test-admin-token",
            "--advertise-service",
            SIP_SERVICE,
        ]
        .map(str::to_owned),
    );
    let mut registrar = Process::start(dir.path(), "a", &args, &kubeconfig);
    let logs = |media: &Process, registrar: &Process| {
        format!("--- m0:\n{}\n--- a:\n{}", media.log(), registrar.log())
    };

    // No address yet: each says what it waits for, reads again, and serves nothing.
    let waiting = wait_until(Duration::from_secs(10), || {
        api.reads(MEDIA_SERVICE) >= 2
            && api.reads(SIP_SERVICE) >= 2
            && media.log().contains(&format!(
                "waiting for the load balancer of Service {NAMESPACE}/{MEDIA_SERVICE}"
            ))
            && registrar.log().contains(&format!(
                "waiting for the load balancer of Service {NAMESPACE}/{SIP_SERVICE}"
            ))
    });
    assert!(waiting, "{}", logs(&media, &registrar));
    assert!(
        media.running() && registrar.running(),
        "{}",
        logs(&media, &registrar)
    );
    assert!(
        !ready(control) && !ready(http),
        "{}",
        logs(&media, &registrar)
    );

    // The cloud provisions the load balancers: both start, advertising their addresses.
    api.provision();
    let started = wait_until(START_WAIT, || ready(control) && ready(http));
    assert!(started, "{}", logs(&media, &registrar));
    let media_log = media.log();
    assert!(
        media_log
            .lines()
            .any(|l| l.contains("kubepbx media: relaying RTP")
                && l.contains(&format!("advertise={MEDIA_IP}"))),
        "the media replica writes {MEDIA_IP} into SDP:\n{media_log}"
    );
    let registrar_log = registrar.log();
    let advertised = format!("advertise={SIP_HOSTNAME}:{}", sip.port());
    assert!(
        registrar_log
            .lines()
            .any(|l| l.contains("kubepbx registrar: serving SIP") && l.contains(&advertised)),
        "the registrar advertises {SIP_HOSTNAME} with its SIP port:\n{registrar_log}"
    );

    // Started without --recordings-dir, the registrar's recordings API says how to serve them.
    let mut response = ureq::get(&format!("http://{http}/api/v1/recordings"))
        .header("Authorization", "Bearer cluster-test-admin-token")
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap();
    let body = response.body_mut().read_to_string().unwrap();
    assert_eq!(response.status(), 404, "{body}");
    assert!(body.contains("start it with --recordings-dir"), "{body}");
}
