//! Many replicas, one PBX: three `kubepbx registrar` and two `kubepbx media` processes sharing a
//! real etcd (Debian's etcd-server on free loopback ports), with real pjsua2 phones behind a UDP
//! load balancer ([`UdpBalancer`], standing in for the LoadBalancer Service every registrar
//! advertises). Extensions are loaded with `kubepbx apply`.
//!
//! The balancer pins each phone (by its IP: the caller binds 127.0.0.2, the callee 127.0.0.3) to
//! one registrar, as connection tracking does, and can steer a phone's next INVITE to another
//! one; it logs which registrar every packet to or from a phone went through.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed step must fail the test, helpers included"
)]

use kubepbx_api::replicas::ReplicaKind;
use kubepbx_api::store::etcd::testing::EtcdServer;
use kubepbx_api::store::{EtcdOptions, EtcdStore};
use kubepbx_tests::cluster::{ClusterConfig, Replica, log_dir};
use kubepbx_tests::{
    ExtensionOpts, Phone, UdpBalancer, analyse, default_password, kubepbx_binary, wait_until,
    write_extension,
};
use serde_json::Value;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const DOMAIN: &str = "pbx.example.com";
const CALLER_IP: &str = "127.0.0.2";
const CALLEE_IP: &str = "127.0.0.3";
const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
/// From a phone's start to its registration on every replica.
const REGISTER_WAIT: Duration = Duration::from_secs(15);
/// For a phone to finish: the script's own --timeout (30 s) plus its shutdown.
const PHONE_WAIT: Duration = Duration::from_secs(40);

struct Cluster {
    _etcd: EtcdServer,
    dir: tempfile::TempDir,
    lb: UdpBalancer,
    registrars: Vec<Replica>,
    media: Vec<Replica>,
}

impl Cluster {
    /// etcd, 1001/1002 applied, `registrars` registrars behind a balancer, `media` media
    /// replicas.
    fn start(registrars: usize, media: usize) -> Cluster {
        let etcd = EtcdServer::start().unwrap();
        let dir = log_dir().unwrap();
        let prefix = "/kubepbx-test";
        let manifests = dir.path().join("manifests");
        std::fs::create_dir_all(&manifests).unwrap();
        for ext in ["1001", "1002"] {
            write_extension(
                &manifests,
                ext,
                &default_password(ext),
                &ExtensionOpts::default(),
            )
            .unwrap();
        }
        let out = std::process::Command::new(kubepbx_binary().unwrap())
            .arg("apply")
            .args(["-f", manifests.to_str().unwrap()])
            .args(["--etcd", &etcd.url(), "--etcd-prefix", prefix])
            .args(["--domain", DOMAIN])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubepbx apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lb = UdpBalancer::start().unwrap();
        let cluster_etcd = etcd.url();
        let config = ClusterConfig {
            etcd: etcd.url(),
            prefix: prefix.to_owned(),
            domain: DOMAIN.to_owned(),
            advertise: lb.front().to_string(),
            token: "cluster-test-admin-token".to_owned(),
            dir: dir.path().to_owned(),
            rust_log: "info,sip=debug".to_owned(),
        };
        let media: Vec<Replica> = (0..media)
            .map(|i| Replica::media(&config, &format!("m{i}")).unwrap())
            .collect();
        let registrars: Vec<Replica> = ["a", "b", "c"][..registrars]
            .iter()
            .map(|id| Replica::registrar(&config, id).unwrap())
            .collect();
        lb.set_backends(registrars.iter().map(Replica::sip_addr).collect());
        let cluster = Cluster {
            _etcd: etcd,
            dir,
            lb,
            registrars,
            media,
        };
        // Every replica is announced (each registrar's watch follows within milliseconds).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let options = EtcdOptions {
                prefix: prefix.to_owned(),
                ..EtcdOptions::default()
            };
            let store = EtcdStore::connect(std::slice::from_ref(&cluster_etcd), options)
                .await
                .unwrap();
            for (kind, n) in [
                (ReplicaKind::Registrar, cluster.registrars.len()),
                (ReplicaKind::Media, cluster.media.len()),
            ] {
                let mut seen = store.replicas(kind).await.unwrap();
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                while seen.borrow_and_update().len() < n {
                    assert!(
                        tokio::time::timeout_at(deadline, seen.changed())
                            .await
                            .is_ok(),
                        "{n} {kind} replicas announced"
                    );
                }
            }
        });
        cluster
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything that could explain a failure: the balancer's log and every replica's log tail.
    fn report(&self, phones: &[&Phone]) -> String {
        let mut out = String::new();
        for p in phones {
            out.push_str(&format!("--- phone {}:\n{}\n", p.name(), p.output()));
        }
        out.push_str("--- balancer:\n");
        for r in self.lb.log() {
            out.push_str(&format!(
                "{} {} {} {}\n",
                r.phone,
                if r.to_phone { "<-" } else { "->" },
                ["a", "b", "c"].get(r.backend).unwrap_or(&"?"),
                r.first_line
            ));
        }
        for r in self.registrars.iter().chain(&self.media) {
            let log = r.log();
            let lines: Vec<&str> = log.lines().collect();
            let start = lines.len().saturating_sub(80);
            out.push_str(&format!("--- {}:\n{}\n", r.id(), lines[start..].join("\n")));
        }
        out
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// The contacts `GET /api/v1/registrations` of `replica` lists for `ext`, with their owners.
fn registrations(replica: &Replica, ext: &str) -> Vec<Value> {
    replica
        .api_get("/api/v1/registrations")
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r["extension"] == ext)
        .collect()
}

fn wav(dir: &Path, name: &str) -> String {
    dir.join(format!("{name}.wav")).to_str().unwrap().to_owned()
}

#[test]
fn a_call_routed_by_one_replica_reaches_a_phone_registered_on_another() {
    let cluster = Cluster::start(3, 2);
    let dir = cluster.dir().to_owned();
    let lb = &cluster.lb;
    lb.pin(ip(CALLEE_IP), B);
    lb.pin(ip(CALLER_IP), A);

    // 1002 registers through B; every replica sees it (and how long that took).
    let callee_wav = wav(&dir, "callee");
    let mut callee = Phone::start_at(
        lb.front(),
        DOMAIN,
        &dir,
        "callee",
        "1002",
        &[
            "--answer",
            "--tone",
            "880",
            "--record",
            &callee_wav,
            "--bind",
            CALLEE_IP,
        ],
    )
    .unwrap();
    let started = Instant::now();
    assert!(
        wait_until(REGISTER_WAIT, || !registrations(
            &cluster.registrars[B],
            "1002"
        )
        .is_empty()),
        "1002 never registered on b\n{}",
        cluster.report(&[&callee])
    );
    let on_b = started.elapsed();
    for r in &cluster.registrars {
        assert!(
            wait_until(Duration::from_secs(5), || !registrations(r, "1002")
                .is_empty()),
            "1002's registration is not visible on {}\n{}",
            r.id(),
            cluster.report(&[&callee])
        );
    }
    eprintln!(
        "1002 registered on b after {on_b:?}; visible on every replica {:?} later",
        started.elapsed() - on_b
    );
    let binding = &registrations(&cluster.registrars[C], "1002")[0];
    assert_eq!(binding["replica"], "b", "{binding}");

    // 1001 registers through A, then its INVITE lands on C; ACK and BYE go through A.
    lb.steer_next_invite(ip(CALLER_IP), C);
    let caller_wav = wav(&dir, "caller");
    let mut caller = Phone::start_at(
        lb.front(),
        DOMAIN,
        &dir,
        "caller",
        "1001",
        &[
            "--call",
            "1002",
            "--tone",
            "440",
            "--record",
            &caller_wav,
            "--bind",
            CALLER_IP,
        ],
    )
    .unwrap();
    let first = caller.wait(PHONE_WAIT);
    let second = callee.wait(Duration::from_secs(10));
    let ctx = cluster.report(&[&caller, &callee]);
    assert!(
        first.is_some_and(|s| s.success()),
        "caller: {first:?}\n{ctx}"
    );
    assert!(
        second.is_some_and(|s| s.success()),
        "callee: {second:?}\n{ctx}"
    );

    // The paths each message took.
    let registers = lb.relayed(ip(CALLER_IP), false, "REGISTER ");
    assert!(
        !registers.is_empty() && registers.iter().all(|r| r.backend == A),
        "1001 registers through a\n{ctx}"
    );
    let invites = lb.relayed(ip(CALLER_IP), false, "INVITE ");
    assert!(
        !invites.is_empty() && invites.iter().all(|r| r.backend == C),
        "1001's INVITEs (challenged, then authenticated) go to c\n{ctx}"
    );
    let acks = lb.relayed(ip(CALLER_IP), false, "ACK ");
    assert!(
        acks.last().is_some_and(|r| r.backend == A),
        "1001's ACK of the 200 goes through a\n{ctx}"
    );
    let byes = lb.relayed(ip(CALLER_IP), false, "BYE ");
    assert!(
        !byes.is_empty() && byes.iter().all(|r| r.backend == A),
        "1001's BYE goes through a\n{ctx}"
    );
    let delivered = lb.relayed(ip(CALLEE_IP), true, "INVITE ");
    assert!(
        !delivered.is_empty() && delivered.iter().all(|r| r.backend == B),
        "1002 gets the INVITE from b, the owner of its flow\n{ctx}"
    );
    let bye_to_callee = lb.relayed(ip(CALLEE_IP), true, "BYE ");
    assert!(
        !bye_to_callee.is_empty() && bye_to_callee.iter().all(|r| r.backend == B),
        "1002 gets the BYE from b\n{ctx}"
    );

    // Audio both ways, through one media replica.
    for (side, hz) in [("caller", 880), ("callee", 440)] {
        let path = dir.join(format!("{side}.wav"));
        let a = analyse(&path, hz).unwrap();
        assert!(a.ok, "{side} should hear {hz} Hz: {}\n{ctx}", a.text);
    }
    let started: Vec<u64> = cluster
        .media
        .iter()
        .map(|m| {
            m.api_get("/v1/metrics").unwrap()["sessionsStarted"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        started.iter().sum::<u64>(),
        1,
        "one session: {started:?}\n{ctx}"
    );

    // The call is over on the replica that routed it (recorded once the relay's final counters
    // are in).
    let ended = || {
        cluster.registrars[C]
            .api_get("/api/v1/cdrs")
            .is_ok_and(|c| c[0]["endReason"] == "caller-hangup")
    };
    assert!(
        wait_until(Duration::from_secs(5), ended),
        "{:?}\n{ctx}",
        cluster.registrars[C].api_get("/api/v1/cdrs")
    );
}
