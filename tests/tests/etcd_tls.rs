//! The real `kubepbx` binary against a real etcd serving clients over TLS only and asking for a
//! client certificate (`--client-cert-auth`, certificates made by the test): `kubepbx apply
//! -f examples/` works with `--etcd-ca`, `--etcd-cert` and `--etcd-key` (and with their
//! environment variables), and a wrong CA or a missing certificate is named with the flag that
//! fixes it.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed step must fail the test, helpers included"
)]

use kubepbx_api::records::ExtensionRecord;
use kubepbx_api::store::etcd::testing::{EtcdServer, TestCerts};
use kubepbx_api::store::{EtcdOptions, EtcdStore, Store};
use kubepbx_tests::kubepbx_binary;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// `kubepbx apply -f examples/` with `args`, the etcd variables of the caller removed.
fn apply(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut command = Command::new(kubepbx_binary().unwrap());
    command
        .arg("apply")
        .arg("-f")
        .arg(examples())
        .args(args)
        .env_remove("KUBEPBX_ETCD_CA")
        .env_remove("KUBEPBX_ETCD_CERT")
        .env_remove("KUBEPBX_ETCD_KEY");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}stderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The extension numbers in etcd under `/kubepbx`, read over TLS.
fn extensions(etcd: &EtcdServer) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let options = EtcdOptions {
            tls: Some(etcd.certs().unwrap().tls().unwrap()),
            ..EtcdOptions::default()
        };
        let store = EtcdStore::connect(&etcd.endpoints(), options)
            .await
            .unwrap();
        let (snapshot, _) = store.watch().await.unwrap();
        let mut numbers: Vec<String> = snapshot
            .extensions
            .iter()
            .map(|r: &ExtensionRecord| r.extension.clone())
            .collect();
        numbers.sort();
        numbers
    })
}

#[test]
fn apply_over_tls_with_a_client_certificate() {
    let etcd = EtcdServer::start_tls().unwrap();
    let certs = etcd.certs().unwrap();
    let url = etcd.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let out = apply(
        &[
            "--etcd",
            &url,
            "--etcd-ca",
            path(&certs.ca()),
            "--etcd-cert",
            path(&certs.client_cert()),
            "--etcd-key",
            path(&certs.client_key()),
        ],
        &[],
    );
    assert!(out.status.success(), "{}\n{}", text(&out), etcd.log_tail());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("extension 1001@pbx.example.com created"),
        "{}",
        text(&out)
    );
    assert_eq!(extensions(&etcd), ["1001", "1002"]);

    // The same through the environment variables a Helm chart sets.
    let out = apply(
        &["--etcd", &url],
        &[
            ("KUBEPBX_ETCD_CA", &certs.ca()),
            ("KUBEPBX_ETCD_CERT", &certs.client_cert()),
            ("KUBEPBX_ETCD_KEY", &certs.client_key()),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("extension 1001@pbx.example.com unchanged"),
        "{}",
        text(&out)
    );
}

#[test]
fn tls_mistakes_are_named_with_the_flag_to_fix() {
    let etcd = EtcdServer::start_tls().unwrap();
    let certs = etcd.certs().unwrap();
    let url = etcd.url();
    let other = tempfile::tempdir().unwrap();
    let other = TestCerts::generate(other.path()).unwrap();
    let (ca, cert, key) = (
        certs.ca().display().to_string(),
        certs.client_cert().display().to_string(),
        certs.client_key().display().to_string(),
    );
    let other_ca = other.ca().display().to_string();
    let fails = |args: &[&str]| {
        let out = apply(args, &[]);
        // 1: refused when connecting; 2: refused by the flag parser.
        assert!(
            matches!(out.status.code(), Some(1 | 2)),
            "{args:?}: {}",
            text(&out)
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!stderr.contains("panicked"), "{}", text(&out));
        stderr
    };

    // A CA that did not sign etcd's certificate.
    let stderr = fails(&[
        "--etcd",
        &url,
        "--etcd-ca",
        &other_ca,
        "--etcd-cert",
        &cert,
        "--etcd-key",
        &key,
    ]);
    assert!(
        stderr.contains("not signed by the CA in --etcd-ca"),
        "{stderr}"
    );
    assert!(stderr.contains(&url), "{stderr}");

    // https:// without a CA.
    let stderr = fails(&["--etcd", &url]);
    assert!(stderr.contains("--etcd-ca"), "{stderr}");

    // TLS files with http://.
    let plain = url.replacen("https://", "http://", 1);
    let stderr = fails(&["--etcd", &plain, "--etcd-ca", &ca]);
    assert!(stderr.contains("use https:// URLs in --etcd"), "{stderr}");

    // A certificate without its key is refused before anything runs.
    let stderr = fails(&["--etcd", &url, "--etcd-ca", &ca, "--etcd-cert", &cert]);
    assert!(stderr.contains("--etcd-key"), "{stderr}");

    // The CA file given as the key.
    let stderr = fails(&[
        "--etcd",
        &url,
        "--etcd-ca",
        &ca,
        "--etcd-cert",
        &cert,
        "--etcd-key",
        &ca,
    ]);
    assert!(
        stderr.contains("--etcd-key (KUBEPBX_ETCD_KEY): no private key"),
        "{stderr}"
    );

    // No client certificate for an etcd that asks for one.
    let stderr = fails(&["--etcd", &url, "--etcd-ca", &ca]);
    assert!(stderr.contains("--etcd-cert and --etcd-key"), "{stderr}");
}
