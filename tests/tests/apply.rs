//! `kubepbx apply -f DIR --etcd URL` against a real etcd (Debian's etcd-server, started on free
//! loopback ports): the manifest folder becomes extension records with HA1 digests, changes and
//! removals follow with `--prune`, and bad input is named.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed step must fail the test, helpers included"
)]

use kubepbx_api::ha1::Ha1Set;
use kubepbx_api::records::ExtensionRecord;
use kubepbx_api::store::etcd::testing::EtcdServer;
use kubepbx_api::store::{EtcdOptions, EtcdStore, Store};
use kubepbx_tests::{
    ExtensionOpts, default_password, kubepbx_binary, remove_extension, write_extension,
};
use std::path::Path;
use std::process::Output;

/// Runs `kubepbx apply` with `args`.
fn apply(args: &[&str]) -> Output {
    std::process::Command::new(kubepbx_binary().unwrap())
        .arg("apply")
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}stderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn stdout_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The extension records in etcd under `prefix`.
fn records(etcd: &EtcdServer, prefix: &str) -> Vec<ExtensionRecord> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let options = EtcdOptions {
            prefix: prefix.to_owned(),
            ..EtcdOptions::default()
        };
        let store = EtcdStore::connect(&etcd.endpoints(), options)
            .await
            .unwrap();
        let (snapshot, _) = store.watch().await.unwrap();
        let mut records = snapshot.extensions;
        records.sort_by(|a, b| a.extension.cmp(&b.extension));
        records
    })
}

fn write(dir: &Path, ext: &str, password: &str) {
    write_extension(dir, ext, password, &ExtensionOpts::default()).unwrap();
}

#[test]
fn a_folder_is_applied_changed_and_pruned() {
    let etcd = EtcdServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "1001", &default_password("1001"));
    write(dir.path(), "1002", &default_password("1002"));
    let url = etcd.url();
    let base = ["-f", dir.path().to_str().unwrap(), "--etcd", &url];

    let out = apply(&base);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        stdout_lines(&out),
        [
            "extension 1001@pbx.example.com created",
            "extension 1002@pbx.example.com created"
        ],
        "{}",
        text(&out)
    );
    let held = records(&etcd, "/kubepbx");
    assert_eq!(held.len(), 2);
    assert_eq!(
        held[0].ha1,
        Ha1Set::derive("1001", "pbx.example.com", "change-me-1001"),
        "HA1s of the Secret's password"
    );
    assert!(
        !format!("{:?}", held[0]).contains("change-me-1001"),
        "no password in etcd"
    );

    // A new password for 1001: only 1001 is rewritten.
    write(dir.path(), "1001", "new-secret-1001");
    let out = apply(&base);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        stdout_lines(&out),
        [
            "extension 1001@pbx.example.com configured",
            "extension 1002@pbx.example.com unchanged"
        ]
    );
    assert_eq!(
        records(&etcd, "/kubepbx")[0].ha1,
        Ha1Set::derive("1001", "pbx.example.com", "new-secret-1001")
    );

    // 1002 leaves the folder: kept without --prune, deleted with it; --dry-run writes nothing.
    remove_extension(dir.path(), "1002").unwrap();
    let out = apply(&base);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(records(&etcd, "/kubepbx").len(), 2);
    let mut prune: Vec<&str> = base.to_vec();
    prune.extend(["--prune", "--dry-run"]);
    let out = apply(&prune);
    assert!(
        stdout_lines(&out).contains(&"extension 1002@pbx.example.com pruned (dry run)".to_owned()),
        "{}",
        text(&out)
    );
    assert_eq!(records(&etcd, "/kubepbx").len(), 2);
    prune.pop();
    let out = apply(&prune);
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout_lines(&out).contains(&"extension 1002@pbx.example.com pruned".to_owned()));
    let held = records(&etcd, "/kubepbx");
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].extension, "1001");

    // Another prefix is another PBX: nothing there.
    assert!(records(&etcd, "/other").is_empty());
}

#[test]
fn bad_documents_are_named_and_the_rest_is_applied() {
    let etcd = EtcdServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "1001", &default_password("1001"));
    std::fs::write(
        dir.path().join("broken.yaml"),
        "apiVersion: kubepbx.io/v1alpha1\nkind: Extension\nmetadata: {name: ext-9}\nspec:\n  extension: \"no spaces allowed\"\n  passwordSecretRef: {name: ext-9}\n",
    )
    .unwrap();
    let url = etcd.url();
    let out = apply(&["-f", dir.path().to_str().unwrap(), "--etcd", &url]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.yaml"), "{}", text(&out));
    assert!(stderr.contains("problem"), "{}", text(&out));
    assert_eq!(
        stdout_lines(&out),
        ["extension 1001@pbx.example.com created"]
    );
    assert_eq!(records(&etcd, "/kubepbx").len(), 1);
}

#[test]
fn an_unreachable_etcd_is_named_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "1001", &default_password("1001"));
    // A port that was just free: nothing listens there.
    let port = kubepbx_tests::free_tcp_port().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let out = apply(&["-f", dir.path().to_str().unwrap(), "--etcd", &url]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&url), "{}", text(&out));
    assert!(stderr.contains("--etcd"), "{}", text(&out));
    let out = apply(&["-f", dir.path().to_str().unwrap(), "--etcd", "ftp://x"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ftp://x"),
        "{}",
        text(&out)
    );
}
