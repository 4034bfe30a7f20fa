//! The etcd store over TLS against a real etcd serving clients over TLS only and requiring a
//! client certificate (`--client-cert-auth`): the store works with the right certificates, and
//! a wrong CA, a missing client certificate or plain http are refused with a message naming
//! the flag that fixes it.

use super::testing::{EtcdServer, TestCerts};
use super::tests::{quick, unique_prefix};
use super::{EtcdStore, EtcdTls, EtcdTlsError};
use crate::store::contract::{binding, record};
use crate::store::{Store, StoreError, Write};
use crate::time::UnixMillis;
use std::sync::OnceLock;
use std::time::Duration;

const D: &str = "pbx.example.com";

static SERVER: OnceLock<EtcdServer> = OnceLock::new();

/// The TLS etcd shared by these tests.
fn server() -> &'static EtcdServer {
    SERVER.get_or_init(|| EtcdServer::start_tls().unwrap_or_else(|e| panic!("{e}")))
}

fn certs() -> &'static TestCerts {
    server().certs().expect("a TLS server has certificates")
}

async fn connect(tls: Option<EtcdTls>, endpoints: &[String]) -> Result<EtcdStore, StoreError> {
    let mut options = quick(unique_prefix("tls"));
    options.tls = tls;
    EtcdStore::connect(endpoints, options).await
}

#[tokio::test]
async fn the_store_works_over_tls_with_a_client_certificate() {
    let tls = certs().tls().expect("read the test certificates");
    let store = connect(Some(tls.clone()), &server().endpoints())
        .await
        .unwrap_or_else(|e| panic!("connect over TLS: {e}\n{}", server().log_tail()));
    assert!(server().url().starts_with("https://"));
    let expires = UnixMillis::now().plus(Duration::from_secs(60));
    store
        .apply(vec![
            Write::PutExtension(record(D, "1001")),
            Write::PutBinding(binding(D, "1001", "phone", expires)),
        ])
        .await
        .expect("write over TLS");
    let (snapshot, _subscription) = store.watch().await.expect("read over TLS");
    assert_eq!(snapshot.extensions, vec![record(D, "1001")]);
    assert_eq!(snapshot.bindings.len(), 1);
    assert!(store.is_connected());

    // A bare host:port takes https:// when TLS is configured.
    let bare = server().url().replacen("https://", "", 1);
    let store = connect(Some(tls), &[bare]).await;
    assert!(store.is_ok(), "{store:?}");
}

#[tokio::test]
async fn a_wrong_ca_is_named() {
    let other = tempfile::tempdir().expect("temp dir");
    let other = TestCerts::generate(other.path()).expect("another CA");
    let mut tls = certs().tls().expect("read the test certificates");
    tls.ca_pem = std::fs::read(other.ca()).expect("read the other CA");
    let err = connect(Some(tls), &server().endpoints())
        .await
        .expect_err("etcd's certificate is not signed by that CA");
    let message = err.to_string();
    assert!(
        matches!(&err, StoreError::Tls(EtcdTlsError::Handshake { hint, .. })
            if hint.contains("not signed by the CA in --etcd-ca")),
        "{message}"
    );
    assert!(message.contains(&server().url()), "{message}");
}

#[tokio::test]
async fn etcd_refuses_a_client_without_a_certificate() {
    let mut tls = certs().tls().expect("read the test certificates");
    tls.client = None;
    let err = connect(Some(tls), &server().endpoints())
        .await
        .expect_err("etcd asks for a client certificate");
    assert!(
        matches!(&err, StoreError::Tls(EtcdTlsError::Handshake { hint, .. })
            if hint.contains("--etcd-cert")),
        "{err}"
    );
}

#[tokio::test]
async fn schemes_are_checked_before_connecting() {
    let tls = certs().tls().expect("read the test certificates");
    let plain = server().url().replacen("https://", "http://", 1);
    let err = connect(Some(tls), &[plain])
        .await
        .expect_err("http with TLS");
    assert!(
        matches!(err, StoreError::Tls(EtcdTlsError::NotHttps { .. })),
        "{err}"
    );
    let err = connect(None, &server().endpoints())
        .await
        .expect_err("https without a CA");
    assert!(
        matches!(err, StoreError::Tls(EtcdTlsError::MissingCa { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("--etcd-ca"), "{err}");
}
