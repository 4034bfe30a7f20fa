//! `kubepbx operator` as a process.
//!
//! - Without a Kubernetes API it stops at once with a message naming the fix.
//! - Against a real cluster (only when `KUBECONFIG` is set; skipped otherwise, since no API
//!   server can run in CI): the CRD is applied, an Extension and its Secret are created in a
//!   fresh namespace, and the operator (with leader election) writes the record into a real
//!   etcd, reports `Ready`, follows a password change and removes everything on delete.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed step must fail the test, helpers included"
)]

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use kubepbx_api::Extension;
use kubepbx_api::ha1::Ha1Set;
use kubepbx_api::records::{ExtensionRecord, UserKey};
use kubepbx_api::store::etcd::testing::EtcdServer;
use kubepbx_api::store::{EtcdOptions, EtcdStore, Store};
use kubepbx_tests::{free_tcp_port, kubepbx_binary};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DOMAIN: &str = "pbx.example.com";
const PREFIX: &str = "/kubepbx-cluster-test";

#[test]
fn without_a_kubernetes_api_the_operator_names_the_fix() {
    let out = Command::new(kubepbx_binary().unwrap())
        .args(["operator", "--etcd", "http://127.0.0.1:1"])
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach the Kubernetes API") && stderr.contains("KUBECONFIG"),
        "{stderr}"
    );
}

#[test]
fn every_flag_is_documented() {
    let out = Command::new(kubepbx_binary().unwrap())
        .args(["operator", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--etcd ",
        "--etcd-prefix",
        "--domain",
        "--http",
        "--namespace",
        "--leader-election",
        "--lease-name",
        "--lease-namespace",
        "--lease-duration",
        "--identity",
        "--status-interval",
        "--resync",
        "--concurrency",
    ] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(flag))
            .unwrap_or_else(|| panic!("{flag} missing from:\n{help}"));
        assert!(line.contains("[env: KUBEPBX_"), "{line}");
        let text = line.split_once('>').map_or(line, |(_, rest)| rest).trim();
        assert!(text.len() > 20, "{flag} is explained: {line}");
    }
}

/// Runs against the cluster `KUBECONFIG` names; skipped without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_real_cluster() {
    if std::env::var_os("KUBECONFIG").is_none() {
        eprintln!("skipped: set KUBECONFIG to run the operator against a real cluster");
        return;
    }
    let client = Client::try_default().await.unwrap();
    let namespace = format!("kubepbx-test-{}", std::process::id());
    let params = PatchParams::apply("kubepbx-tests").force();

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = kubepbx_api::extension::crd();
    crds.patch(&crd.name_any(), &params, &Patch::Apply(&crd))
        .await
        .unwrap();
    wait_for("the CRD to be established", || async {
        crds.get(&crd.name_any()).await.is_ok_and(|c| {
            c.status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
    })
    .await;

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let _cleanup = Cleanup {
        namespaces: namespaces.clone(),
        extensions: Api::namespaced(client.clone(), &namespace),
        name: namespace.clone(),
    };

    let etcd = tokio::task::spawn_blocking(EtcdServer::start)
        .await
        .unwrap()
        .unwrap();
    let http = free_tcp_port().unwrap();
    let mut operator = Command::new(kubepbx_binary().unwrap())
        .args(["operator", "--etcd", &etcd.url(), "--etcd-prefix", PREFIX])
        .args(["--domain", DOMAIN, "--namespace", &namespace])
        .args([
            "--lease-namespace",
            &namespace,
            "--identity",
            "kubepbx-tests",
        ])
        .args(["--http", &format!("127.0.0.1:{http}")])
        .spawn()
        .unwrap();
    let _kill = KillOnDrop(&mut operator);

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let extensions: Api<Extension> = Api::namespaced(client.clone(), &namespace);
    let secret = |password: &str| {
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "ext-1001"}, "stringData": {"password": password}})
    };
    secrets
        .patch("ext-1001", &params, &Patch::Apply(secret("change-me-1001")))
        .await
        .unwrap();
    let ext = json!({"apiVersion": "kubepbx.io/v1alpha1", "kind": "Extension",
        "metadata": {"name": "ext-1001"},
        "spec": {"extension": "1001", "passwordSecretRef": {"name": "ext-1001"}}});
    extensions
        .patch("ext-1001", &params, &Patch::Apply(ext))
        .await
        .unwrap();

    let store = EtcdStore::connect(
        &etcd.endpoints(),
        EtcdOptions {
            prefix: PREFIX.to_owned(),
            ..EtcdOptions::default()
        },
    )
    .await
    .unwrap();
    wait_for("Ready=True and a finalizer", || async {
        extensions.get("ext-1001").await.is_ok_and(|e| {
            !e.finalizers().is_empty()
                && e.status.is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
        })
    })
    .await;
    assert_eq!(
        record(&store).await.map(|r| r.ha1),
        Some(Ha1Set::derive("1001", DOMAIN, "change-me-1001"))
    );

    secrets
        .patch("ext-1001", &params, &Patch::Apply(secret("a-new-password")))
        .await
        .unwrap();
    let new = Ha1Set::derive("1001", DOMAIN, "a-new-password");
    wait_for("the new password in etcd", || async {
        record(&store).await.is_some_and(|r| r.ha1 == new)
    })
    .await;

    extensions
        .delete("ext-1001", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the Extension and its record to go", || async {
        extensions.get_opt("ext-1001").await.unwrap().is_none() && record(&store).await.is_none()
    })
    .await;
}

async fn record(store: &EtcdStore) -> Option<ExtensionRecord> {
    let key = UserKey::new(DOMAIN, "1001");
    let (snapshot, _) = store.watch().await.unwrap();
    snapshot.extensions.into_iter().find(|r| r.key() == key)
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

struct Cleanup {
    namespaces: Api<Namespace>,
    extensions: Api<Extension>,
    name: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let namespaces = self.namespaces.clone();
        let extensions = self.extensions.clone();
        let name = self.name.clone();
        // Best effort: the namespace takes its Extensions, Secret and Lease with it, once no
        // finalizer holds an Extension (the operator is gone by now).
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    let unhold = json!({"metadata": {"finalizers": null}});
                    if let Ok(list) = extensions.list(&Default::default()).await {
                        for e in list {
                            let _ = extensions
                                .patch(
                                    &e.name_any(),
                                    &PatchParams::default(),
                                    &Patch::Merge(&unhold),
                                )
                                .await;
                        }
                    }
                    let _ = namespaces.delete(&name, &DeleteParams::default()).await;
                });
            }
        })
        .join();
    }
}

struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
