//! Many replicas, one PBX: three `kubepbx registrar` and two `kubepbx media` processes sharing a
//! real etcd (Debian's etcd-server on free loopback ports), with real pjsua2 phones behind a UDP
//! load balancer ([`UdpBalancer`], standing in for the LoadBalancer Service every registrar
//! advertises). Extensions are loaded with `kubepbx apply`.
//!
//! The balancer pins each phone (by its IP: the caller binds 127.0.0.2, the callee 127.0.0.3) to
//! one registrar, as connection tracking does, and can steer a phone's next INVITE to another
//! one; it logs which registrar every packet to or from a phone went through.
//!
//! A recording cluster ([`Cluster::start_recording`]) gives every replica the same
//! `--recordings-dir`, as a chart mounts one ReadWriteMany volume on every pod: the media
//! replicas write recordings there, any registrar lists and serves them.
//!
//! The web phone (headless Chromium, [`Browser`]) opens `/phone/` and `/ws` of one registrar,
//! as an Ingress pins a WebSocket to one pod, while the softphone it talks to is on another.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed step must fail the test, helpers included"
)]

use kubepbx_api::replicas::ReplicaKind;
use kubepbx_api::store::etcd::testing::EtcdServer;
use kubepbx_api::store::{EtcdOptions, EtcdStore, ReplicaMap};
use kubepbx_tests::browser::Browser;
use kubepbx_tests::cluster::{ClusterConfig, Replica, log_dir};
use kubepbx_tests::{
    Channel, ExtensionOpts, Phone, UdpBalancer, analyse, analyse_channel, default_password,
    free_udp_port, kubepbx_binary, pjsua2, wait_until, web_phone, write_extension,
};
use serde_json::Value;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::watch;

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
/// How long etcd is away in `registrars_ride_out_an_etcd_outage`.
const OUTAGE: Duration = Duration::from_secs(10);
/// For a registrar to find etcd again (its retries back off up to 5 s).
const RECOVERY: Duration = Duration::from_secs(10);

/// Dropped in field order: the replicas go before etcd (so they do not log its loss) and the
/// log folder last.
struct Cluster {
    registry: Registry,
    registrars: Vec<Replica>,
    media: Vec<Replica>,
    lb: UdpBalancer,
    etcd: EtcdServer,
    dir: tempfile::TempDir,
}

/// The test's own view of the replica registry (`replicas/`): an [`EtcdStore`] following both
/// kinds on a runtime of its own, so the maps stay current between the test's steps.
struct Registry {
    registrars: watch::Receiver<ReplicaMap>,
    media: watch::Receiver<ReplicaMap>,
    _store: EtcdStore,
    runtime: tokio::runtime::Runtime,
}

impl Registry {
    fn follow(etcd: &str, prefix: &str) -> Registry {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (store, registrars, media) = runtime.block_on(async {
            let options = EtcdOptions {
                prefix: prefix.to_owned(),
                ..EtcdOptions::default()
            };
            let store = EtcdStore::connect(&[etcd.to_owned()], options)
                .await
                .unwrap();
            let registrars = store.replicas(ReplicaKind::Registrar).await.unwrap();
            let media = store.replicas(ReplicaKind::Media).await.unwrap();
            (store, registrars, media)
        });
        Registry {
            registrars,
            media,
            _store: store,
            runtime,
        }
    }

    /// The ids announced under `replicas/{kind}/` now.
    fn ids(&self, kind: ReplicaKind) -> Vec<String> {
        let map = match kind {
            ReplicaKind::Registrar => &self.registrars,
            ReplicaKind::Media => &self.media,
        };
        map.borrow().keys().cloned().collect()
    }

    fn lists(&self, kind: ReplicaKind, id: &str) -> bool {
        self.ids(kind).iter().any(|i| i == id)
    }

    /// Waits up to `timeout` until `n` replicas of `kind` are announced.
    fn wait_for(&self, kind: ReplicaKind, n: usize, timeout: Duration) -> bool {
        let mut seen = match kind {
            ReplicaKind::Registrar => self.registrars.clone(),
            ReplicaKind::Media => self.media.clone(),
        };
        self.runtime.block_on(async {
            let deadline = tokio::time::Instant::now() + timeout;
            while seen.borrow_and_update().len() < n {
                if tokio::time::timeout_at(deadline, seen.changed())
                    .await
                    .is_err()
                {
                    return false;
                }
            }
            true
        })
    }
}

impl Cluster {
    /// etcd, 1001/1002 applied, `registrars` registrars behind a balancer, `media` media
    /// replicas.
    fn start(registrars: usize, media: usize) -> Cluster {
        Self::start_with(registrars, media, false)
    }

    /// [`Self::start`] with 1002 recording every call (`recording: Always`) and every replica
    /// started with `--recordings-dir` [`Self::recordings`].
    fn start_recording(registrars: usize, media: usize) -> Cluster {
        Self::start_with(registrars, media, true)
    }

    fn start_with(registrars: usize, media: usize, record: bool) -> Cluster {
        let etcd = EtcdServer::start().unwrap();
        let dir = log_dir().unwrap();
        let prefix = "/kubepbx-test";
        let manifests = dir.path().join("manifests");
        std::fs::create_dir_all(&manifests).unwrap();
        for ext in ["1001", "1002"] {
            let opts = ExtensionOpts {
                recording: (record && ext == "1002").then(|| "Always".to_owned()),
                ..ExtensionOpts::default()
            };
            write_extension(&manifests, ext, &default_password(ext), &opts).unwrap();
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
        let recordings = dir.path().join("recordings");
        let recordings = recordings.to_str().unwrap();
        let extra = if record {
            vec!["--recordings-dir", recordings]
        } else {
            Vec::new()
        };
        let media: Vec<Replica> = (0..media)
            .map(|i| Replica::media_with(&config, &format!("m{i}"), &extra).unwrap())
            .collect();
        let registrars: Vec<Replica> = ["a", "b", "c"][..registrars]
            .iter()
            .map(|id| Replica::registrar_with(&config, id, &extra).unwrap())
            .collect();
        lb.set_backends(registrars.iter().map(Replica::sip_addr).collect());
        let cluster = Cluster {
            registry: Registry::follow(&cluster_etcd, prefix),
            registrars,
            media,
            lb,
            etcd,
            dir,
        };
        // Every replica is announced (each registrar's watch follows within milliseconds).
        for (kind, n) in [
            (ReplicaKind::Registrar, cluster.registrars.len()),
            (ReplicaKind::Media, cluster.media.len()),
        ] {
            assert!(
                cluster.registry.wait_for(kind, n, Duration::from_secs(10)),
                "{n} {kind} replicas announced"
            );
        }
        cluster
    }

    /// A pjsua2 phone of `ext` behind the balancer (see [`Phone::start_at`]).
    fn phone(&self, name: &str, ext: &str, args: &[&str]) -> Phone {
        Phone::start_at(self.lb.front(), DOMAIN, self.dir(), name, ext, args).unwrap()
    }

    /// Waits until `check` holds for the contacts of `ext` every registrar lists; panics with
    /// the report otherwise.
    fn wait_listed(&self, ext: &str, check: impl Fn(&[Value]) -> bool, phones: &[&Phone]) {
        for r in &self.registrars {
            assert!(
                wait_until(REGISTER_WAIT, || check(&registrations(r, ext))),
                "{} lists {ext} as {:?}\n{}",
                r.id(),
                registrations(r, ext),
                self.report(phones)
            );
        }
    }

    /// Waits until every registrar lists exactly one contact of `ext`, for which `check` holds.
    fn wait_listed_once(&self, ext: &str, check: impl Fn(&Value) -> bool, phones: &[&Phone]) {
        self.wait_listed(ext, |l| l.len() == 1 && check(&l[0]), phones);
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The `--recordings-dir` of every replica of a recording cluster.
    fn recordings(&self) -> std::path::PathBuf {
        self.dir().join("recordings")
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
        .api_get(&format!("/api/v1/registrations?extension={ext}"))
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

fn wav(dir: &Path, name: &str) -> String {
    dir.join(format!("{name}.wav")).to_str().unwrap().to_owned()
}

/// 1001 calls 1002 through a cluster: routed by c, delivered by b (1002's flow), with audio
/// both ways through one media replica. 1002 records every call: the media replica writes the
/// recording into the directory it shares with the registrars, and a, which took no part in the
/// call, lists it and serves the WAV.
#[test]
fn a_call_routed_by_one_replica_reaches_a_phone_registered_on_another() {
    let cluster = Cluster::start_recording(3, 2);
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

    // The recording, through a registrar that took no part in the call.
    let recording = finished_recording(&cluster, &cluster.registrars[A], &ctx);
    let cdr = &cluster.registrars[C].api_get("/api/v1/cdrs").unwrap()[0];
    assert_eq!(cdr["recording"], recording.id.as_str(), "{cdr}");
    // Every replica lists the finished call: the history is shared through etcd.
    for r in [&cluster.registrars[A], &cluster.registrars[B]] {
        assert!(
            wait_until(Duration::from_secs(5), || r
                .api_get("/api/v1/cdrs")
                .is_ok_and(|c| c[0] == *cdr)),
            "{} lists {:?}, c {cdr}",
            r.id(),
            r.api_get("/api/v1/cdrs")
        );
    }
    assert_eq!(
        (&recording.entry["from"], &recording.entry["to"]),
        (&"1001".into(), &"1002".into()),
        "{}",
        recording.entry
    );
    let on_disk = cluster.recordings().join(format!("{}.wav", recording.id));
    assert_eq!(
        std::fs::read(&on_disk).unwrap(),
        recording.wav,
        "the WAV served is the file the media replica wrote"
    );
    let downloaded = dir.join("downloaded.wav");
    std::fs::write(&downloaded, &recording.wav).unwrap();
    for (channel, hz) in [(Channel::Left, 440), (Channel::Right, 880)] {
        let a = analyse_channel(&downloaded, channel, hz).unwrap();
        assert!(
            a.ok,
            "{channel:?} channel of the recording should hold {hz} Hz: {}\n{ctx}",
            a.text
        );
    }
}

/// A recording as a registrar's API lists and serves it.
struct Recording {
    id: String,
    /// Its entry in `GET /api/v1/recordings`.
    entry: Value,
    /// `GET /api/v1/recordings/{id}`.
    wav: Vec<u8>,
}

/// The one recording `registrar` lists, once the recorder has finished it (`endedAt` set and a
/// WAV whose RIFF size matches its length), with the WAV it serves.
fn finished_recording(cluster: &Cluster, registrar: &Replica, ctx: &str) -> Recording {
    let mut found = None;
    let finished = wait_until(Duration::from_secs(10), || {
        let Ok(list) = registrar.api_get("/api/v1/recordings") else {
            return false;
        };
        let [entry] = list.as_array().map(Vec::as_slice).unwrap_or_default() else {
            return false;
        };
        let Some(id) = entry["id"]
            .as_str()
            .filter(|_| entry["endedAt"].is_string())
        else {
            return false;
        };
        let Ok((200, Some(kind), wav)) =
            registrar.api_get_bytes(&format!("/api/v1/recordings/{id}"))
        else {
            return false;
        };
        let finalised = kind == "audio/wav"
            && wav.len() > 44
            && wav.starts_with(b"RIFF")
            && wav[4..8] == u32::try_from(wav.len() - 8).unwrap().to_le_bytes()
            && entry["sizeBytes"].as_u64() == Some(wav.len() as u64);
        if finalised {
            found = Some(Recording {
                id: id.to_owned(),
                entry: entry.clone(),
                wav,
            });
        }
        finalised
    });
    assert!(
        finished,
        "{} lists no finished recording: {:?}; in {}: {:?}\n{ctx}",
        registrar.id(),
        registrar.api_get("/api/v1/recordings"),
        cluster.recordings().display(),
        std::fs::read_dir(cluster.recordings())
            .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>()),
    );
    found.unwrap()
}

/// The live calls `GET /api/v1/calls` of `replica` lists.
fn live_calls(replica: &Replica) -> Vec<Value> {
    replica
        .api_get("/api/v1/calls")
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// The admin API of any replica shows the whole PBX: a call routed by c is listed by a and b
/// too (with the relay's counters rising), and a `DELETE` on a hangs it up through c — both
/// phones get a BYE, the call leaves every list and c records it as `admin-hangup`.
#[test]
fn any_replica_lists_a_call_another_routes_and_hangs_it_up() {
    let cluster = Cluster::start(3, 1);
    let lb = &cluster.lb;
    lb.pin(ip(CALLEE_IP), B);
    lb.pin(ip(CALLER_IP), A);
    lb.steer_next_invite(ip(CALLER_IP), C);
    let mut callee = cluster.phone(
        "callee",
        "1002",
        &["--answer", "--expect-hangup", "--bind", CALLEE_IP],
    );
    cluster.wait_listed_once("1002", |_| true, &[&callee]);
    let mut caller = cluster.phone(
        "caller",
        "1001",
        &[
            "--call",
            "1002",
            "--expect-hangup",
            "--duration",
            "20",
            "--bind",
            CALLER_IP,
        ],
    );
    let answered = |r: &Replica| live_calls(r).into_iter().find(|c| c["state"] == "answered");
    let mut id = String::new();
    for r in &cluster.registrars {
        let listed = wait_until(Duration::from_secs(15), || answered(r).is_some());
        assert!(
            listed,
            "{} does not list the answered call: {:?}\n{}",
            r.id(),
            live_calls(r),
            cluster.report(&[&caller, &callee])
        );
        let call = answered(r).unwrap();
        assert_eq!(
            (&call["from"], &call["to"]),
            (&"1001".into(), &"1002".into())
        );
        let this = call["id"].as_str().unwrap().to_owned();
        assert!(this.starts_with("c-"), "c routes the call: {call}");
        assert!(
            id.is_empty() || id == this,
            "one id everywhere: {id} vs {this}"
        );
        id = this;
    }
    // a reads the relay's counters of c's call from the media replica.
    let flowing = wait_until(Duration::from_secs(10), || {
        answered(&cluster.registrars[A]).is_some_and(|c| {
            ["caller", "callee"]
                .iter()
                .all(|leg| c["media"][leg]["packetsIn"].as_u64().unwrap_or(0) > 0)
        })
    });
    assert!(
        flowing,
        "a lists no media counters: {:?}",
        live_calls(&cluster.registrars[A])
    );

    let (status, body) = cluster.registrars[A]
        .api_delete(&format!("/api/v1/calls/{id}"))
        .unwrap();
    let ctx = cluster.report(&[&caller, &callee]);
    assert_eq!(status, 204, "DELETE on a: {body}\n{ctx}");
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
    for r in &cluster.registrars {
        assert!(
            wait_until(Duration::from_secs(5), || live_calls(r).is_empty()),
            "{} still lists {:?}\n{ctx}",
            r.id(),
            live_calls(r)
        );
    }
    let cdrs = cluster.registrars[C].api_get("/api/v1/cdrs").unwrap();
    assert_eq!(cdrs[0]["id"], id.as_str(), "{cdrs}");
    assert_eq!(cdrs[0]["endReason"], "admin-hangup", "{cdrs}");
    let (status, body) = cluster.registrars[B]
        .api_delete(&format!("/api/v1/calls/{id}"))
        .unwrap();
    assert_eq!(status, 404, "a call that ended: {body}");
}

/// Options of a callee that answers one call playing 880 Hz and records into `<name>.wav`,
/// bound to [`CALLEE_IP`], then `extra`.
fn answering(dir: &Path, name: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--answer",
        "--tone",
        "880",
        "--record",
        &wav(dir, name),
        "--bind",
        CALLEE_IP,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

/// Options of a caller of 1002 playing 440 Hz, recording into `<name>.wav`, bound to
/// [`CALLER_IP`], then `extra`.
fn calling(dir: &Path, name: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--call",
        "1002",
        "--tone",
        "440",
        "--record",
        &wav(dir, name),
        "--bind",
        CALLER_IP,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Waits for both phones of a call; both must have ended well, and each must have heard the
/// other's tone (the caller 880 Hz, the callee 440 Hz).
fn assert_talked(cluster: &Cluster, caller: &mut Phone, callee: &mut Phone) {
    let first = caller.wait(PHONE_WAIT);
    let second = callee.wait(Duration::from_secs(10));
    let ctx = cluster.report(&[caller, callee]);
    assert!(
        first.is_some_and(|s| s.success()),
        "caller: {first:?}\n{ctx}"
    );
    assert!(
        second.is_some_and(|s| s.success()),
        "callee: {second:?}\n{ctx}"
    );
    for (phone, hz) in [(&*caller, 880), (&*callee, 440)] {
        let path = cluster.dir().join(format!("{}.wav", phone.name()));
        let a = analyse(&path, hz).unwrap();
        assert!(
            a.ok,
            "{} should hear {hz} Hz: {}\n{ctx}",
            phone.name(),
            a.text
        );
    }
}

/// `sessionsStarted` of each media replica that answers.
fn sessions_started(cluster: &Cluster) -> Vec<Option<u64>> {
    cluster
        .media
        .iter()
        .map(|m| {
            m.api_get("/v1/metrics")
                .ok()
                .and_then(|v| v["sessionsStarted"].as_u64())
        })
        .collect()
}

#[test]
fn a_killed_registrar_s_phones_stay_reachable_and_its_restart_duplicates_nothing() {
    let mut cluster = Cluster::start(3, 2);
    let dir = cluster.dir().to_owned();
    cluster.lb.pin(ip(CALLEE_IP), B);
    cluster.lb.pin(ip(CALLER_IP), A);

    // 1002 registers through b (and stays registered when its phone exits).
    let port = free_udp_port().unwrap().to_string();
    let args = answering(
        &dir,
        "callee",
        &["--port", &port, "--keep-registration", "--timeout", "45"],
    );
    let mut callee = cluster.phone("callee", "1002", &strs(&args));
    cluster.wait_listed_once("1002", |b| b["replica"] == "b", &[&callee]);
    let source = registrations(&cluster.registrars[A], "1002")[0]["source"].clone();

    // b crashes. a and c keep its binding, owner and all.
    cluster.registrars[B].kill().unwrap();
    let killed = Instant::now();
    let kept = |cluster: &Cluster| {
        for r in [&cluster.registrars[A], &cluster.registrars[C]] {
            let listed = registrations(r, "1002");
            assert!(
                listed.len() == 1 && listed[0]["replica"] == "b" && listed[0]["source"] == source,
                "{} lists 1002 as {listed:?}",
                r.id()
            );
        }
    };
    kept(&cluster);
    // While b is still announced (its lease runs 10 s), requests for its flows go to its
    // internal address and are lost; once it is gone they go to the phone directly.
    assert!(
        wait_until(Duration::from_secs(15), || !cluster
            .registry
            .lists(ReplicaKind::Registrar, "b")),
        "b is still announced {:?} after its death",
        killed.elapsed()
    );
    eprintln!("b left the registry {:?} after SIGKILL", killed.elapsed());
    kept(&cluster);

    // The balancer now sends 1002's packets to c (b's endpoint is gone), but keeps the path b
    // used, the address in the binding.
    cluster.lb.pin(ip(CALLEE_IP), C);
    let args = calling(&dir, "caller", &["--keep-registration", "--duration", "2"]);
    let mut caller = cluster.phone("caller", "1001", &strs(&args));
    assert_talked(&cluster, &mut caller, &mut callee);
    let ctx = cluster.report(&[&caller, &callee]);
    let invites = cluster.lb.relayed(ip(CALLER_IP), false, "INVITE ");
    assert!(
        !invites.is_empty() && invites.iter().all(|r| r.backend == A),
        "1001's INVITEs go to a\n{ctx}"
    );
    let delivered = cluster.lb.relayed(ip(CALLEE_IP), true, "INVITE ");
    assert!(
        !delivered.is_empty() && delivered.iter().all(|r| r.backend == B),
        "a sends the INVITE straight to the binding's address, b's path\n{ctx}"
    );
    let answers = cluster.lb.relayed(ip(CALLEE_IP), false, "SIP/2.0 200 ");
    assert!(
        !answers.is_empty() && answers.iter().all(|r| r.backend == C),
        "1002's answer reaches c, which passes it to a\n{ctx}"
    );
    let byes = cluster.lb.relayed(ip(CALLEE_IP), true, "BYE ");
    assert!(
        !byes.is_empty() && byes.iter().all(|r| r.backend == B),
        "the BYE takes the same path\n{ctx}"
    );

    // b comes back: one binding per phone on every replica, b's own included.
    cluster.registrars[B].start_again().unwrap();
    // (It may be back on other ports: the balancer follows, as a Service follows a new pod.)
    cluster
        .lb
        .set_backends(cluster.registrars.iter().map(Replica::sip_addr).collect());
    cluster.wait_listed_once("1002", |b| b["replica"] == "b", &[]);
    cluster.wait_listed_once("1001", |b| b["replica"] == "a", &[]);
    // The restarted replica lists the call a routed while it was down.
    let history = |r: &Replica| r.api_get("/api/v1/cdrs").unwrap();
    let routed = history(&cluster.registrars[A]);
    assert_eq!(routed[0]["from"], "1001", "{routed}");
    assert_eq!(history(&cluster.registrars[B])[0], routed[0]);

    // The phone starts again (same address) and registers through b: its binding is renewed,
    // not doubled.
    cluster.lb.pin(ip(CALLEE_IP), B);
    let before = registrations(&cluster.registrars[A], "1002")[0]["expiresIn"]
        .as_u64()
        .unwrap();
    let again = cluster.phone(
        "callee-again",
        "1002",
        &[
            "--answer",
            "--bind",
            CALLEE_IP,
            "--port",
            &port,
            "--timeout",
            "20",
        ],
    );
    cluster.wait_listed_once(
        "1002",
        |b| {
            b["replica"] == "b"
                && b["source"] == source
                && b["expiresIn"].as_u64().is_some_and(|e| e > before)
        },
        &[&again],
    );
    cluster.wait_listed_once("1001", |b| b["replica"] == "a", &[&again]);
}

#[test]
fn a_killed_media_replica_gets_no_new_calls() {
    let mut cluster = Cluster::start(2, 2);
    let dir = cluster.dir().to_owned();
    cluster.lb.pin(ip(CALLEE_IP), B);
    cluster.lb.pin(ip(CALLER_IP), A);
    let args = answering(&dir, "callee", &[]);
    let mut callee = cluster.phone("callee", "1002", &strs(&args));
    cluster.wait_listed_once("1002", |b| b["replica"] == "b", &[&callee]);

    // Both media replicas are idle, so m0 (the lower id) would get the next call. It crashes;
    // its announcement lives on for up to 10 s.
    assert_eq!(sessions_started(&cluster), [Some(0), Some(0)]);
    cluster.media[0].kill().unwrap();
    let killed = Instant::now();
    let args = calling(&dir, "caller", &["--duration", "2"]);
    let mut caller = cluster.phone("caller", "1001", &strs(&args));
    assert!(
        callee.wait_for_line("incoming call", PHONE_WAIT),
        "no call reached 1002\n{}",
        cluster.report(&[&caller, &callee])
    );
    // The call was placed while m0 was still announced: a's pool skipped it at once.
    let announced = cluster.registry.lists(ReplicaKind::Media, "m0");
    let placed_after = killed.elapsed();
    assert_talked(&cluster, &mut caller, &mut callee);
    let ctx = cluster.report(&[&caller, &callee]);
    assert!(
        announced,
        "m0 had left the registry when the call was placed ({placed_after:?} after its death): \
         the test did not exercise the failover\n{ctx}"
    );
    assert_eq!(
        sessions_started(&cluster),
        [None, Some(1)],
        "the call went to m1\n{ctx}"
    );
    assert!(
        cluster.registrars[A]
            .log()
            .lines()
            .any(|l| l.contains("trying the next one") && l.contains("replica=m0")),
        "a tried m0 first, then m1\n{ctx}"
    );
    eprintln!("the call was placed on m1 {placed_after:?} after m0's death");
}

#[test]
fn registrars_ride_out_an_etcd_outage() {
    let mut cluster = Cluster::start(3, 2);
    let dir = cluster.dir().to_owned();
    cluster.lb.pin(ip(CALLEE_IP), B);
    cluster.lb.pin(ip(CALLER_IP), A);

    // 1002 registers through b, 1001 through a; the caller waits before it calls.
    let args = answering(&dir, "callee", &["--keep-registration"]);
    let mut callee = cluster.phone("callee", "1002", &strs(&args));
    cluster.wait_listed_once("1002", |b| b["replica"] == "b", &[&callee]);
    let args = calling(
        &dir,
        "caller",
        &[
            "--keep-registration",
            "--duration",
            "2",
            "--call-delay",
            "3",
        ],
    );
    let mut caller = cluster.phone("caller", "1001", &strs(&args));
    cluster.wait_listed_once("1001", |b| b["replica"] == "a", &[&caller, &callee]);

    // etcd goes away.
    cluster.etcd.stop();
    let stopped = Instant::now();
    assert!(
        !caller.has_line("call state"),
        "the call started before etcd stopped (raise --call-delay)\n{}",
        cluster.report(&[&caller, &callee])
    );
    for r in &cluster.registrars {
        let mut last = None;
        let unready = wait_until(Duration::from_secs(5), || {
            last = r.get_status("/readyz").ok();
            last.as_ref()
                .is_some_and(|(code, body)| *code == 503 && body.contains("etcd"))
        });
        assert!(
            unready,
            "{}'s /readyz during the outage: {last:?}\n{}",
            r.id(),
            cluster.report(&[&caller, &callee])
        );
    }
    eprintln!(
        "every registrar reported etcd unreachable {:?} after it stopped",
        stopped.elapsed()
    );

    // The registered phones talk meanwhile.
    assert_talked(&cluster, &mut caller, &mut callee);
    let talked = stopped.elapsed();
    assert!(
        talked < OUTAGE,
        "the call ended {talked:?} after etcd stopped, after the outage"
    );
    eprintln!("the call ended {talked:?} into the outage");
    for r in &cluster.registrars {
        for (ext, owner) in [("1001", "a"), ("1002", "b")] {
            let listed = registrations(r, ext);
            assert!(
                listed.len() == 1 && listed[0]["replica"] == owner,
                "{} lists {ext} as {listed:?} during the outage",
                r.id()
            );
        }
    }

    // Another phone of 1002 registers through c meanwhile: c answers from memory and keeps the
    // write until etcd is back.
    cluster.lb.pin(ip(CALLEE_IP), C);
    let callee_again = cluster.phone(
        "callee-again",
        "1002",
        &["--answer", "--bind", CALLEE_IP, "--timeout", "30"],
    );
    let through_c =
        |r: &Replica, ext: &str| registrations(r, ext).iter().any(|b| b["replica"] == "c");
    assert!(
        wait_until(REGISTER_WAIT, || through_c(&cluster.registrars[C], "1002")),
        "1002 did not register through c during the outage\n{}",
        cluster.report(&[&callee_again])
    );
    let talked = stopped.elapsed();
    assert!(
        talked < OUTAGE,
        "the registration ended {talked:?} after etcd stopped, after the outage"
    );
    std::thread::sleep(OUTAGE - talked);
    for r in cluster
        .registrars
        .iter_mut()
        .chain(cluster.media.iter_mut())
    {
        assert!(r.is_running(), "{} exited during the outage", r.id());
    }
    for r in &cluster.registrars {
        let (code, body) = r.get_status("/readyz").unwrap();
        assert!(
            code == 503 && body.contains("etcd"),
            "{}'s /readyz at the end of the outage: {code} {body}",
            r.id()
        );
    }
    for r in [&cluster.registrars[A], &cluster.registrars[B]] {
        assert!(
            !through_c(r, "1002"),
            "{} learnt of c's binding without etcd",
            r.id()
        );
    }
    // a, which routed the call, lists it from memory; the others still answer, without it.
    let cdr_ids = |r: &Replica| -> Vec<String> {
        let list = r.api_get("/api/v1/cdrs").unwrap();
        let list = list.as_array().unwrap();
        list.iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let routed = cdr_ids(&cluster.registrars[A]);
    assert!(
        routed.len() == 1 && routed[0].starts_with("a-"),
        "a lists {routed:?} at the end of the outage"
    );
    for r in [&cluster.registrars[B], &cluster.registrars[C]] {
        let listed = cdr_ids(r);
        assert!(
            listed.is_empty(),
            "{} lists {listed:?} without etcd",
            r.id()
        );
    }

    // etcd is back: every registrar is ready again within seconds.
    cluster.etcd.restart().unwrap();
    let back = Instant::now();
    for r in &cluster.registrars {
        assert!(
            wait_until(RECOVERY, || r.is_ready()),
            "{} not ready {RECOVERY:?} after etcd came back: {:?}",
            r.id(),
            r.get_status("/readyz")
        );
    }
    eprintln!(
        "every registrar was ready {:?} after etcd came back",
        back.elapsed()
    );

    // a writes the call's record once etcd is back; every replica lists it, once.
    for r in &cluster.registrars {
        assert!(
            wait_until(Duration::from_secs(20), || cdr_ids(r) == routed),
            "{} lists {:?} after the outage, not {routed:?}",
            r.id(),
            cdr_ids(r)
        );
    }

    // Another phone of 1001 registers, through c: every replica learns it, and the one of 1002
    // that registered during the outage; the first phones' bindings stay.
    cluster.lb.pin(ip(CALLER_IP), C);
    let caller_again = cluster.phone(
        "caller-again",
        "1001",
        &["--answer", "--bind", CALLER_IP, "--timeout", "20"],
    );
    let phones = [&callee_again, &caller_again];
    assert!(
        wait_until(REGISTER_WAIT, || through_c(&cluster.registrars[C], "1001")),
        "1001 did not register through c\n{}",
        cluster.report(&phones)
    );
    let registered = Instant::now();
    let owners = |l: &[Value]| {
        let mut owners: Vec<String> = l
            .iter()
            .filter_map(|b| b["replica"].as_str().map(str::to_owned))
            .collect();
        owners.sort_unstable();
        owners
    };
    cluster.wait_listed("1001", |l| owners(l) == ["a", "c"], &phones);
    cluster.wait_listed("1002", |l| owners(l) == ["b", "c"], &phones);
    eprintln!(
        "1001 registered through c {:?} after etcd came back; every replica listed both new \
         bindings {:?} later",
        registered - back,
        registered.elapsed()
    );
    for r in cluster
        .registrars
        .iter_mut()
        .chain(cluster.media.iter_mut())
    {
        assert!(r.is_running(), "{} exited", r.id());
    }
}

#[test]
fn sigterm_stops_a_registrar_gracefully() {
    let mut cluster = Cluster::start(2, 1);
    let started = Instant::now();
    let status = cluster.registrars[B]
        .terminate(Duration::from_secs(10))
        .unwrap();
    let exited = started.elapsed();
    assert!(
        status.success(),
        "b exited with {status:?}\n{}",
        cluster.report(&[])
    );
    assert!(exited < Duration::from_secs(3), "b took {exited:?} to stop");
    assert!(
        wait_until(Duration::from_secs(1), || !cluster
            .registry
            .lists(ReplicaKind::Registrar, "b")),
        "b is still announced {:?} after SIGTERM\n{}",
        started.elapsed(),
        cluster.report(&[])
    );
    eprintln!(
        "b exited {exited:?} after SIGTERM and left the registry {:?} after it",
        started.elapsed()
    );
    assert_eq!(
        cluster.registry.ids(ReplicaKind::Registrar),
        ["a"],
        "a stays"
    );
    assert!(cluster.registrars[A].is_ready());
}

/// The web phone of 1001 is connected to a over `/ws` (an Ingress pins the WebSocket to one
/// pod); softphones of 1002 register through b. A call from the web phone to the softphone
/// enters at a and goes out through b, which owns the softphone's flow; a call from the
/// softphone enters at b and reaches the browser through a, which owns the WebSocket: b
/// forwards the INVITE over `--internal`, and the in-dialog requests follow the same way. Both
/// calls have audio both ways through the one media replica (the browser's `getStats()`; the
/// softphone's recording holds the browser's 440 Hz tone), and a BYE from either side ends the
/// call on both.
#[test]
fn the_web_phone_on_one_replica_calls_and_takes_calls_from_a_softphone_on_another() {
    kubepbx_tests::browser::require_web_build().unwrap();
    let cluster = Cluster::start(2, 1);
    let dir = cluster.dir().to_owned();
    let lb = &cluster.lb;
    lb.pin(ip(CALLEE_IP), B);
    let microphone = dir.join("microphone-440.wav");
    pjsua2::write_tone(&microphone, 440).unwrap();
    let browser = Browser::start_with_microphone(&microphone).unwrap();
    let a_url = cluster.registrars[A].http_url();
    web_phone::log_in(
        &browser,
        "web",
        &a_url,
        "1001",
        &default_password("1001"),
        REGISTER_WAIT,
    )
    .unwrap_or_else(|e| {
        panic!(
            "the web phone did not register at a: {e}\n{}",
            cluster.report(&[])
        )
    });
    cluster.wait_listed_once(
        "1001",
        |c| c["replica"] == "a" && c["transport"] == "ws",
        &[],
    );
    let in_call = |phone: &Phone| {
        browser
            .wait_text("web", "call-state", "^in call$", PHONE_WAIT)
            .unwrap_or_else(|e| panic!("no call: {e}\n{}", cluster.report(&[phone])));
        web_phone::wait_for_audio_both_ways(&browser, "web", PHONE_WAIT)
            .unwrap_or_else(|e| panic!("{e}\n{}", cluster.report(&[phone])));
    };
    let heard_the_browser = |phone: &Phone| {
        let path = dir.join(format!("{}.wav", phone.name()));
        let a = analyse(&path, 440).unwrap();
        assert!(
            a.ok,
            "{} should hear 440 Hz: {}\n{}",
            phone.name(),
            a.text,
            cluster.report(&[phone])
        );
    };

    // The web phone calls; it hangs up.
    let mut callee = cluster.phone(
        "callee",
        "1002",
        &strs(&answering(&dir, "callee", &["--timeout", "60"])),
    );
    cluster.wait_listed_once("1002", |c| c["replica"] == "b", &[&callee]);
    web_phone::dial(&browser, "web", "1002").unwrap();
    in_call(&callee);
    browser
        .screenshot("web", "replicas-web-calls-softphone")
        .unwrap();
    browser.click("web", "hangup").unwrap();
    browser
        .wait_text("web", "call-state", "^ended", PHONE_WAIT)
        .unwrap();
    assert!(
        callee.ended_by_bye(PHONE_WAIT),
        "callee: {:?}\n{}",
        callee.try_wait(),
        cluster.report(&[&callee])
    );
    heard_the_browser(&callee);

    // The softphone calls; the web phone answers, the softphone hangs up.
    let mut caller = cluster.phone(
        "caller",
        "1002",
        &[
            "--call",
            "1001",
            "--duration",
            "8",
            "--tone",
            "880",
            "--record",
            &wav(&dir, "caller"),
            "--bind",
            CALLEE_IP,
            "--timeout",
            "60",
        ],
    );
    browser
        .wait_text("web", "call-state", "^incoming$", PHONE_WAIT)
        .unwrap_or_else(|e| {
            panic!(
                "the web phone does not ring: {e}\n{}",
                cluster.report(&[&caller])
            )
        });
    browser.click("web", "answer").unwrap();
    in_call(&caller);
    browser
        .wait_text(
            "web",
            "call-state",
            "^ended: the other party hung up$",
            PHONE_WAIT,
        )
        .unwrap_or_else(|e| {
            panic!(
                "the softphone's BYE did not reach the browser: {e}\n{}",
                cluster.report(&[&caller])
            )
        });
    let done = caller.wait(PHONE_WAIT);
    assert!(
        done.is_some_and(|s| s.success()),
        "caller: {done:?}\n{}",
        cluster.report(&[&caller])
    );
    heard_the_browser(&caller);

    // The softphone's messages went through b alone: a reached it, and was reached, through b.
    let ctx = cluster.report(&[&callee, &caller]);
    for (to_phone, method) in [
        (true, "INVITE "),
        (true, "BYE "),
        (false, "INVITE "),
        (false, "BYE "),
    ] {
        let relayed = lb.relayed(ip(CALLEE_IP), to_phone, method);
        assert!(
            !relayed.is_empty() && relayed.iter().all(|r| r.backend == B),
            "{method}{} the softphone: not all through b\n{ctx}",
            if to_phone { "to" } else { "from" }
        );
    }
}
