//! The operator's reconciler against a mock Kubernetes API server (`tower-test`: every request
//! the reconciler sends is checked and answered in order, the controller-rs
//! `ApiServerVerifier` pattern) and a real etcd (Debian's etcd-server), with a real registrar
//! (`kubepbx registrar`) and sipp for the registrations the status mirrors.
//!
//! Most tests drive [`reconcile`] as the controller would, handing it the Extension as the API
//! server last returned it, and play the Secret watch by calling `Context::secret_users`.
//! `the_whole_operator_follows_extensions_secrets_and_etcd` runs the whole operator (`run`:
//! controller, Secret metadata watch, etcd follower) against [`FakeCluster`], a stateful
//! stand-in that answers lists and long-polled watches; the health endpoints are tested over
//! HTTP. Leader election needs a real API server (`operator_cluster.rs`).

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed step must fail the test, helpers included"
)]

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher;
use kubepbx_api::Extension;
use kubepbx_api::ha1::Ha1Set;
use kubepbx_api::records::{ExtensionRecord, UserKey};
use kubepbx_api::store::etcd::testing::EtcdServer;
use kubepbx_api::store::{EtcdOptions, EtcdStore, Snapshot, Store};
use kubepbx_operator::metrics::Metrics;
use kubepbx_operator::mirror::{self, Mirror};
use kubepbx_operator::reconcile::{self, Context, Settings};
use kubepbx_operator::triggers::Triggers;
use kubepbx_tests::cluster::{ClusterConfig, Replica, log_dir};
use kubepbx_tests::sipp::{REGISTER_DIGEST, REGISTER_WRONG_PASSWORD};
use kubepbx_tests::{Sipp, User};
use serde_json::{Value, json};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

const DOMAIN: &str = "pbx.example.com";
const NS: &str = "office";
/// For one step of the reconciler (an API request, the end of a reconcile).
const STEP: Duration = Duration::from_secs(10);

type ApiHandle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type Reply = tower_test::mock::SendResponse<Response<Body>>;

/// The mock API server: each call expects the reconciler's next request.
struct ApiServer {
    handle: ApiHandle,
}

impl ApiServer {
    /// The next request, which must be `method` on a path starting with `path`; its JSON body
    /// (Null when empty) and the way to answer it.
    async fn expect(&mut self, method: Method, path: &str) -> (Value, Reply) {
        let (request, reply) = tokio::time::timeout(STEP, self.handle.next_request())
            .await
            .unwrap_or_else(|_| panic!("no request came; expected {method} {path}"))
            .expect("the client is gone");
        let uri = request.uri().to_string();
        assert_eq!(request.method(), method, "{uri}");
        assert!(uri.starts_with(path), "expected {method} {path}, got {uri}");
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (body, reply)
    }

    fn answer(reply: Reply, status: StatusCode, body: &Value) {
        let response = Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap();
        reply.send_response(response);
    }

    /// Expects the finalizer to be added and answers with the Extension holding it.
    async fn add_finalizer(&mut self, ext: &Value) -> Value {
        let (patch, reply) = self
            .expect(Method::PATCH, &extension_path(name_of(ext)))
            .await;
        assert!(
            patch.to_string().contains(reconcile::FINALIZER),
            "a JSON patch adding the finalizer: {patch}"
        );
        let mut ext = ext.clone();
        ext["metadata"]["finalizers"] = json!([reconcile::FINALIZER]);
        Self::answer(reply, StatusCode::OK, &ext);
        ext
    }

    /// Expects the Secret to be read and answers with `password` (or 404 when `None`).
    async fn secret(&mut self, name: &str, password: Option<&str>) {
        let path = format!("/api/v1/namespaces/{NS}/secrets/{name}");
        let (_, reply) = self.expect(Method::GET, &path).await;
        match password {
            Some(pw) => {
                use base64::Engine as _;
                let encoded = base64::engine::general_purpose::STANDARD.encode(pw);
                let secret = json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": name, "namespace": NS, "resourceVersion": "7"},
                    "data": {"password": encoded},
                });
                Self::answer(reply, StatusCode::OK, &secret);
            }
            None => {
                let status = json!({
                    "apiVersion": "v1", "kind": "Status", "status": "Failure",
                    "reason": "NotFound", "code": 404,
                    "message": format!("secrets \"{name}\" not found"),
                });
                Self::answer(reply, StatusCode::NOT_FOUND, &status);
            }
        }
    }

    /// Expects a server-side apply of the status; answers with the Extension carrying it and
    /// returns that Extension.
    async fn status_patch(&mut self, ext: &Value) -> Value {
        let path = format!("{}/status?", extension_path(name_of(ext)));
        let (patch, reply) = self.expect(Method::PATCH, &path).await;
        assert_eq!(patch["kind"], "Extension", "{patch}");
        assert_eq!(patch["apiVersion"], "kubepbx.io/v1alpha1", "{patch}");
        let mut ext = ext.clone();
        ext["status"] = patch["status"].clone();
        Self::answer(reply, StatusCode::OK, &ext);
        ext
    }

    /// Expects one Event per reason given (in order), regarding `ext`. An Event that repeats
    /// one published a little earlier is a PATCH of that Event's series instead.
    async fn events(&mut self, ext: &Value, reasons: &[&str]) {
        let path = format!("/apis/events.k8s.io/v1/namespaces/{NS}/events");
        for reason in reasons {
            let (request, reply) = tokio::time::timeout(STEP, self.handle.next_request())
                .await
                .unwrap_or_else(|_| panic!("no Event came; expected {reason}"))
                .expect("the client is gone");
            let uri = request.uri().to_string();
            assert!(uri.starts_with(&path), "an Event, got {uri}");
            let method = request.method().clone();
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let event: Value = serde_json::from_slice(&bytes).unwrap();
            if method == Method::POST {
                assert_eq!(event["reason"], *reason, "{event}");
                assert_eq!(
                    event["regarding"]["name"], ext["metadata"]["name"],
                    "{event}"
                );
                assert_eq!(event["reportingController"], "kubepbx-operator");
                Self::answer(reply, StatusCode::CREATED, &event);
            } else {
                assert_eq!(method, Method::PATCH, "{uri}");
                assert!(event["series"]["count"].as_i64() >= Some(2), "{event}");
                let name = uri.rsplit('/').next().unwrap().trim_end_matches('?');
                let stored = json!({
                    "apiVersion": "events.k8s.io/v1", "kind": "Event",
                    "metadata": {"name": name, "namespace": NS},
                    "eventTime": "2026-01-01T00:00:00.000000Z",
                    "reason": reason, "series": event["series"],
                });
                Self::answer(reply, StatusCode::OK, &stored);
            }
        }
    }

    /// Expects the finalizer to be removed.
    async fn remove_finalizer(&mut self, ext: &Value) {
        let (patch, reply) = self
            .expect(Method::PATCH, &extension_path(name_of(ext)))
            .await;
        assert!(
            patch.to_string().contains("remove"),
            "a JSON patch removing the finalizer: {patch}"
        );
        let mut ext = ext.clone();
        ext["metadata"]["finalizers"] = json!([]);
        Self::answer(reply, StatusCode::OK, &ext);
    }
}

fn extension_path(name: &str) -> String {
    format!("/apis/kubepbx.io/v1alpha1/namespaces/{NS}/extensions/{name}")
}

fn name_of(ext: &Value) -> &str {
    ext["metadata"]["name"].as_str().unwrap()
}

/// An Extension as the API server would return it.
fn extension(name: &str, number: &str, created: &str) -> Value {
    json!({
        "apiVersion": "kubepbx.io/v1alpha1",
        "kind": "Extension",
        "metadata": {
            "name": name, "namespace": NS, "uid": format!("uid-{name}"),
            "generation": 1, "resourceVersion": "1", "creationTimestamp": created,
        },
        "spec": {
            "extension": number,
            "displayName": "Reception",
            "passwordSecretRef": {"name": name, "key": "password"},
        },
    })
}

fn typed(ext: &Value) -> Arc<Extension> {
    Arc::new(serde_json::from_value(ext.clone()).unwrap())
}

fn condition<'a>(ext: &'a Value, kind: &str) -> &'a Value {
    ext["status"]["conditions"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["type"] == kind))
        .unwrap_or_else(|| panic!("no {kind} condition in {}", ext["status"]))
}

/// A mock API server, a real etcd, the operator's context over both.
struct Harness {
    api: ApiServer,
    ctx: Arc<Context>,
    extensions: reflector::store::Writer<Extension>,
    /// A second view of etcd, as the registrars see it.
    etcd_view: EtcdStore,
    follower: JoinHandle<()>,
    etcd: EtcdServer,
    prefix: String,
}

impl Harness {
    async fn start(prefix: &str) -> Harness {
        let etcd = tokio::task::spawn_blocking(EtcdServer::start)
            .await
            .unwrap()
            .unwrap();
        let options = || EtcdOptions {
            prefix: prefix.to_owned(),
            request_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            ..EtcdOptions::default()
        };
        let store = Arc::new(
            EtcdStore::connect(&etcd.endpoints(), options())
                .await
                .unwrap(),
        );
        let etcd_view = EtcdStore::connect(&etcd.endpoints(), options())
            .await
            .unwrap();
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let mirror = Arc::new(RwLock::new(Mirror::default()));
        let triggers = Triggers::default();
        let follower = tokio::spawn(mirror::follow(
            Arc::clone(&store) as Arc<dyn Store>,
            Arc::clone(&mirror),
            triggers.clone(),
        ));
        let (reader, writer) = reflector::store::<Extension>();
        let reporter = Reporter {
            controller: "kubepbx-operator".to_owned(),
            instance: Some("test".to_owned()),
        };
        let settings = Settings {
            domain: DOMAIN.to_owned(),
            status_interval: Duration::ZERO,
            ..Settings::default()
        };
        let ctx = Arc::new(Context::new(
            client.clone(),
            store,
            Arc::clone(&mirror),
            reader,
            triggers,
            Recorder::new(client, reporter),
            Arc::new(Metrics::default()),
            settings,
        ));
        let deadline = Instant::now() + STEP;
        while !mirror.read().unwrap().is_loaded() {
            assert!(Instant::now() < deadline, "the mirror never loaded etcd");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Harness {
            api: ApiServer { handle },
            ctx,
            extensions: writer,
            etcd_view,
            follower,
            etcd,
            prefix: prefix.to_owned(),
        }
    }

    /// Tells the controller's cache about `ext` (as its watch would).
    fn seen(&mut self, ext: &Value) {
        let ext: Extension = serde_json::from_value(ext.clone()).unwrap();
        self.extensions
            .apply_watcher_event(&watcher::Event::Apply(ext));
    }

    fn reconcile(&self, ext: &Value) -> JoinHandle<Result<Action, reconcile::Error>> {
        tokio::spawn(reconcile::reconcile(typed(ext), Arc::clone(&self.ctx)))
    }

    async fn snapshot(&self) -> Snapshot {
        self.etcd_view.watch().await.unwrap().0
    }

    async fn record(&self, number: &str) -> Option<ExtensionRecord> {
        let key = UserKey::new(DOMAIN, number);
        self.snapshot()
            .await
            .extensions
            .into_iter()
            .find(|r| r.key() == key)
    }

    /// Creates `ext` with a Secret holding `password`: finalizer, Secret, record, status and
    /// the Events of a served extension; returns it as last written.
    async fn create(&mut self, ext: &Value, password: &str) -> Value {
        let served = ["Synced", "Synced", "NotRegistered"];
        self.create_with(ext, Some(password), &served).await.0
    }

    /// Creates `ext`: its first reconcile adds the finalizer; the second reads its Secret
    /// (`password`, or 404 when `None`), writes the status and publishes one Event per reason
    /// in `events`. Returns it as last written and what the second reconcile asked for.
    async fn create_with(
        &mut self,
        ext: &Value,
        password: Option<&str>,
        events: &[&str],
    ) -> (Value, Action) {
        self.seen(ext);
        let first = self.reconcile(ext);
        let ext = self.api.add_finalizer(ext).await;
        done(first).await;
        self.seen(&ext);
        let second = self.reconcile(&ext);
        self.api.secret(name_of(&ext), password).await;
        let ext = self.api.status_patch(&ext).await;
        self.api.events(&ext, events).await;
        let action = done(second).await;
        self.seen(&ext);
        (ext, action)
    }

    /// Waits until a change in etcd asks for `ext` to be reconciled.
    async fn triggered(&self, ext: &Value) {
        let wanted = ObjectRef::<Extension>::new(name_of(ext)).within(NS);
        let deadline = Instant::now() + STEP;
        loop {
            if self.ctx.triggers.pop().is_some_and(|next| next == wanted) {
                return;
            }
            assert!(Instant::now() < deadline, "etcd never asked for {wanted}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.follower.abort();
        let _ = &self.etcd;
    }
}

/// The reconcile ends (without asking the API server anything more) and succeeds.
async fn done(task: JoinHandle<Result<Action, reconcile::Error>>) -> Action {
    tokio::time::timeout(STEP, task)
        .await
        .expect("the reconcile did not end: it sent a request the test did not expect")
        .unwrap()
        .expect("the reconcile failed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_password_change_and_delete_follow_the_resource() {
    let mut h = Harness::start("/op-lifecycle").await;
    let ext = extension("ext-1001", "1001", "2026-01-01T00:00:00Z");
    let ext = h.create(&ext, "change-me-1001").await;
    assert_eq!(condition(&ext, "Ready")["status"], "True");
    assert_eq!(condition(&ext, "CredentialsSynced")["reason"], "Synced");
    assert_eq!(ext["status"]["domain"], DOMAIN);
    assert_eq!(ext["status"]["observedGeneration"], 1);
    let record = h.record("1001").await.expect("the record in etcd");
    assert!(record.enabled);
    assert_eq!(record.source, "office/ext-1001");
    assert_eq!(record.ha1, Ha1Set::derive("1001", DOMAIN, "change-me-1001"));

    // The Secret watch sees a change: the new password reaches etcd; the status is unchanged
    // so nothing is written to the API server.
    let users = h.ctx.secret_users(NS, "ext-1001");
    assert_eq!(users, [ObjectRef::new("ext-1001").within(NS)]);
    let again = h.reconcile(&ext);
    h.api.secret("ext-1001", Some("a-new-password")).await;
    done(again).await;
    let record = h.record("1001").await.unwrap();
    assert_eq!(
        record.ha1,
        Ha1Set::derive("1001", DOMAIN, "a-new-password"),
        "the new password's HA1"
    );

    // Unrelated Secrets change nothing; the cached Secret is not read again.
    assert!(h.ctx.secret_users(NS, "someone-else").is_empty());
    done(h.reconcile(&ext)).await;

    // Deleted: record (and bindings) gone, then the finalizer.
    let mut deleting = ext.clone();
    deleting["metadata"]["deletionTimestamp"] = json!("2026-01-02T00:00:00Z");
    let cleanup = h.reconcile(&deleting);
    h.api.remove_finalizer(&deleting).await;
    done(cleanup).await;
    assert!(h.record("1001").await.is_none(), "the record is gone");
    assert!(
        h.ctx.metrics.status_writes() >= 1,
        "status writes are counted"
    );
    let _ = &h.prefix;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_and_a_duplicate_number_are_conditions() {
    let mut h = Harness::start("/op-problems").await;
    // The Secret does not exist: a disabled record saying why, Ready=False SecretNotFound.
    let ext = extension("ext-1001", "1001", "2026-01-01T00:00:00Z");
    let missing = ["SecretNotFound", "SecretNotFound", "Disabled"];
    let (ext, _) = h.create_with(&ext, None, &missing).await;
    let ready = condition(&ext, "Ready");
    assert_eq!(
        (&ready["status"], &ready["reason"]),
        (&json!("False"), &json!("SecretNotFound"))
    );
    let message = ready["message"].as_str().unwrap();
    assert!(message.contains("ext-1001"), "names the Secret: {message}");
    let record = h.record("1001").await.expect("a disabled record");
    assert!(!record.enabled);
    assert!(record.disabled_reason.unwrap().contains("ext-1001"));

    // A younger Extension claiming 1002 that the older one has: nothing written, a condition
    // naming the older one.
    let older = h
        .create(
            &extension("reception", "1002", "2026-01-01T00:00:00Z"),
            "pw-a",
        )
        .await;
    let younger = extension("front-desk", "1002", "2026-03-01T00:00:00Z");
    let duplicate = ["DuplicateExtension", "DuplicateExtension", "NotServed"];
    let (younger, action) = h.create_with(&younger, Some("pw-b"), &duplicate).await;
    assert_eq!(
        action,
        Action::requeue(Settings::default().duplicate_retry),
        "the loser looks again"
    );
    let ready = condition(&younger, "Ready");
    assert_eq!(ready["reason"], "DuplicateExtension");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("office/reception"),
        "{ready}"
    );
    let record = h.record("1002").await.unwrap();
    assert_eq!(record.source, "office/reception", "the older one keeps it");
    assert_eq!(record.ha1, Ha1Set::derive("1002", DOMAIN, "pw-a"));

    // The older one is deleted: its record goes, and the younger one is asked to take over.
    let mut deleting = older.clone();
    deleting["metadata"]["deletionTimestamp"] = json!("2026-04-01T00:00:00Z");
    let cleanup = h.reconcile(&deleting);
    h.api.remove_finalizer(&deleting).await;
    done(cleanup).await;
    h.extensions
        .apply_watcher_event(&watcher::Event::Delete((*typed(&deleting)).clone()));
    h.triggered(&younger).await;
    let takeover = h.reconcile(&younger);
    let younger = h.api.status_patch(&younger).await;
    h.api
        .events(&younger, &["Synced", "Synced", "NotRegistered"])
        .await;
    done(takeover).await;
    let record = h.record("1002").await.unwrap();
    assert_eq!(record.source, "office/front-desk");
    assert_eq!(record.ha1, Ha1Set::derive("1002", DOMAIN, "pw-b"));
}

/// Runs the sipp `scenario` as 1001 with `password` against `sip`; it must succeed.
async fn register(scenario: &'static str, sip: std::net::SocketAddr, password: &'static str) {
    let outcome = tokio::task::spawn_blocking(move || {
        Sipp::new(scenario, sip)
            .users(vec![User::new("1001", password)])
            .domain(DOMAIN)
            .run()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(outcome.all_succeeded(), "{}", outcome.diagnostics());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_mirrors_a_registration_and_a_wrong_password() {
    let prefix = "/op-mirror";
    let mut h = Harness::start(prefix).await;
    let dir = log_dir().unwrap();
    let config = ClusterConfig {
        etcd: h.etcd.url(),
        prefix: prefix.to_owned(),
        domain: DOMAIN.to_owned(),
        advertise: "127.0.0.1".to_owned(),
        token: "operator-test-token".to_owned(),
        dir: dir.path().to_owned(),
        rust_log: "info".to_owned(),
    };
    let registrar = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || Replica::registrar(&config, "registrar-0"))
            .await
            .unwrap()
            .unwrap()
    };
    let registrar = Arc::new(registrar);
    let ext = h
        .create(
            &extension("ext-1001", "1001", "2026-01-01T00:00:00Z"),
            "change-me-1001",
        )
        .await;
    // The registrar learns the extension from etcd.
    let known = {
        let r = Arc::clone(&registrar);
        tokio::task::spawn_blocking(move || {
            kubepbx_tests::wait_until(STEP, || {
                r.api_get("/api/v1/extensions")
                    .is_ok_and(|v| v.to_string().contains("\"1001\""))
            })
        })
        .await
        .unwrap()
    };
    assert!(
        known,
        "the registrar never served 1001:\n{}",
        registrar.log()
    );

    let sip = registrar.sip_addr();
    register(REGISTER_DIGEST, sip, "change-me-1001").await;
    h.triggered(&ext).await;
    let mirror = h.reconcile(&ext);
    let ext = h.api.status_patch(&ext).await;
    h.api.events(&ext, &["Registered"]).await;
    done(mirror).await;
    assert_eq!(condition(&ext, "Registered")["status"], "True");
    assert_eq!(ext["status"]["contacts"], 1);
    let registration = &ext["status"]["registrations"][0];
    assert_eq!(registration["transport"], "udp", "{registration}");
    assert_eq!(registration["replica"], "registrar-0");
    assert!(
        registration["uri"]
            .as_str()
            .unwrap()
            .starts_with("sip:1001@"),
        "{registration}"
    );
    assert!(
        registration["source"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(registration["expiresAt"].as_str().unwrap().ends_with('Z'));

    // The scenario succeeds when the registrar refuses the password.
    register(REGISTER_WRONG_PASSWORD, sip, "not-the-password").await;
    h.triggered(&ext).await;
    let mirror = h.reconcile(&ext);
    let ext = h.api.status_patch(&ext).await;
    done(mirror).await;
    let failure = &ext["status"]["lastFailure"];
    assert_eq!(failure["reason"], "WrongPassword", "{failure}");
    assert!(
        failure["source"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(!failure["detail"].as_str().unwrap().is_empty());
    assert_eq!(
        condition(&ext, "Registered")["status"],
        "True",
        "the earlier registration still stands"
    );

    // Deleted: the record, the binding and the status go from etcd.
    let mut deleting = ext.clone();
    deleting["metadata"]["deletionTimestamp"] = json!("2026-01-02T00:00:00Z");
    let cleanup = h.reconcile(&deleting);
    h.api.remove_finalizer(&deleting).await;
    done(cleanup).await;
    let snapshot = h.snapshot().await;
    let key = UserKey::new(DOMAIN, "1001");
    assert!(snapshot.extensions.iter().all(|r| r.key() != key));
    assert!(
        snapshot.bindings.iter().all(|b| &*b.user != "1001"),
        "bindings removed: {:?}",
        snapshot.bindings
    );
    assert!(snapshot.statuses.iter().all(|(k, _)| *k != key));
    drop(registrar);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_is_reported_in_the_status_and_retried() {
    let mut h = Harness::start("/op-outage").await;
    let ext = h
        .create(
            &extension("ext-1001", "1001", "2026-01-01T00:00:00Z"),
            "change-me-1001",
        )
        .await;
    h.etcd.stop();
    // A password change cannot reach etcd: the status says so and the reconcile fails, so the
    // controller retries it with backoff.
    h.ctx.secret_users(NS, "ext-1001");
    let attempt = h.reconcile(&ext);
    h.api.secret("ext-1001", Some("a-new-password")).await;
    let failed = h.api.status_patch(&ext).await;
    h.api
        .events(
            &failed,
            &["EtcdUnavailable", "EtcdUnavailable", "EtcdUnavailable"],
        )
        .await;
    let result = tokio::time::timeout(STEP, attempt).await.unwrap().unwrap();
    let error = result.expect_err("the write failed");
    assert_eq!(
        error.reason(),
        kubepbx_operator::metrics::ErrorReason::EtcdUnavailable
    );
    let ready = condition(&failed, "Ready");
    assert_eq!(
        (&ready["status"], &ready["reason"]),
        (&json!("False"), &json!("EtcdUnavailable"))
    );
    assert_eq!(condition(&failed, "CredentialsSynced")["status"], "Unknown");
    let retry = reconcile::error_policy(typed(&failed), &error, Arc::clone(&h.ctx));
    assert_eq!(retry, Action::requeue(Duration::from_secs(1)));
    assert_eq!(
        h.ctx
            .metrics
            .failures(kubepbx_operator::metrics::ErrorReason::EtcdUnavailable),
        1
    );

    // etcd is back: the retry writes the new password and the status recovers.
    tokio::task::spawn_blocking(move || {
        h.etcd.restart().unwrap();
        h
    })
    .await
    .map(|mut h| async move {
        let deadline = Instant::now() + STEP;
        loop {
            let retry = h.reconcile(&failed);
            match tokio::time::timeout(Duration::from_millis(1500), h.api.handle.next_request())
                .await
            {
                Ok(Some((request, reply))) => {
                    let uri = request.uri().to_string();
                    assert!(uri.contains("/status?"), "a status patch, got {uri}");
                    let bytes = request.into_body().collect_bytes().await.unwrap();
                    let patch: Value = serde_json::from_slice(&bytes).unwrap();
                    let mut ext = failed.clone();
                    ext["status"] = patch["status"].clone();
                    ApiServer::answer(reply, StatusCode::OK, &ext);
                    h.api
                        .events(&ext, &["Synced", "Synced", "NotRegistered"])
                        .await;
                    done(retry).await;
                    assert_eq!(condition(&ext, "Ready")["status"], "True");
                    break;
                }
                _ => {
                    // etcd not answering yet: the attempt fails without a new status.
                    let _ = tokio::time::timeout(STEP, retry).await;
                    assert!(Instant::now() < deadline, "etcd never came back");
                }
            }
        }
        let record = h.record("1001").await.unwrap();
        assert_eq!(record.ha1, Ha1Set::derive("1001", DOMAIN, "a-new-password"));
    })
    .unwrap()
    .await;
}

/// `GET path` on `port`: status code and body.
async fn get(port: u16, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_endpoints() {
    use kubepbx_operator::run::Shared;
    use tokio::sync::watch;
    let etcd = tokio::task::spawn_blocking(EtcdServer::start)
        .await
        .unwrap()
        .unwrap();
    let store = Arc::new(
        EtcdStore::connect(&etcd.endpoints(), EtcdOptions::default())
            .await
            .unwrap(),
    );
    let (leading, leading_rx) = watch::channel(false);
    let mirror = Arc::new(RwLock::new(Mirror::default()));
    let metrics = Arc::new(Metrics::default());
    let shared = Arc::new(Shared {
        metrics: Arc::clone(&metrics),
        store,
        leading: leading_rx,
        session: std::sync::Mutex::new(None),
        mirror: Arc::clone(&mirror),
    });
    let port = kubepbx_tests::free_tcp_port().unwrap();
    let shutdown = kubepbx_operator::run::CancellationToken::new();
    let server = kubepbx_operator::http::serve(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        shared,
        shutdown.clone(),
    )
    .await
    .unwrap();

    assert_eq!(get(port, "/healthz").await.0, 200);
    assert_eq!(
        get(port, "/readyz").await,
        (200, "ready: standby\n".to_owned()),
        "a standby is ready to take over"
    );
    leading.send(true).unwrap();
    metrics.set_leader(true);
    assert_eq!(
        get(port, "/readyz").await,
        (503, "not ready: reading etcd\n".to_owned())
    );
    mirror.write().unwrap().load(Snapshot::default());
    assert_eq!(
        get(port, "/readyz").await,
        (200, "ready: leading\n".to_owned())
    );
    metrics.failed(kubepbx_operator::metrics::ErrorReason::KubeApi);
    let (status, text) = get(port, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "kubepbx_operator_leader 1",
        "kubepbx_operator_etcd_connected 1",
        "kubepbx_operator_queue_depth 0",
        "kubepbx_operator_reconcile_errors_total{reason=\"KubeApi\"} 1",
    ] {
        assert!(text.contains(line), "{line} in:\n{text}");
    }
    shutdown.cancel();
    tokio::time::timeout(STEP, server).await.unwrap().unwrap();
}

/// A stateful stand-in for the API server, enough for the whole operator (`run`): lists and
/// long-polled watches of Extensions and Secret metadata, Secret reads, finalizer and status
/// patches, Events. Watch requests are answered after a short pause with the events queued
/// since, so the operator's watches see changes as they would on a real cluster.
#[derive(Default)]
struct FakeCluster {
    ext: Value,
    version: u64,
    password: String,
    extension_events: Vec<Value>,
    secret_events: Vec<Value>,
    status_patches: Vec<Value>,
}

impl FakeCluster {
    fn bump(&mut self) {
        self.version += 1;
        self.ext["metadata"]["resourceVersion"] = json!(self.version.to_string());
        self.extension_events
            .push(json!({"type": "MODIFIED", "object": self.ext.clone()}));
    }

    /// The Secret changes (the operator only sees its metadata move).
    fn change_password(&mut self, password: &str) {
        self.password = password.to_owned();
        self.version += 1;
        self.secret_events
            .push(json!({"type": "MODIFIED", "object": {
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": "ext-1001", "namespace": NS,
                         "resourceVersion": self.version.to_string()}}}));
    }

    fn answer(&mut self, method: &Method, uri: &str, body: &Value) -> (StatusCode, String) {
        let extensions = format!("/apis/kubepbx.io/v1alpha1/namespaces/{NS}/extensions");
        let secrets = format!("/api/v1/namespaces/{NS}/secrets");
        let json = |v: &Value| v.to_string();
        let list_meta = json!({"resourceVersion": self.version.to_string()});
        match *method {
            Method::GET if uri.starts_with(&format!("{extensions}?")) => {
                if uri.contains("watch=true") {
                    let lines: Vec<String> =
                        self.extension_events.drain(..).map(|e| json(&e)).collect();
                    (StatusCode::OK, lines.join("\n"))
                } else {
                    let list = json!({"apiVersion": "kubepbx.io/v1alpha1", "kind": "ExtensionList",
                        "metadata": list_meta, "items": [self.ext.clone()]});
                    (StatusCode::OK, json(&list))
                }
            }
            Method::GET if uri.starts_with(&format!("{secrets}?")) => {
                if uri.contains("watch=true") {
                    let lines: Vec<String> =
                        self.secret_events.drain(..).map(|e| json(&e)).collect();
                    (StatusCode::OK, lines.join("\n"))
                } else {
                    let list = json!({"apiVersion": "meta.k8s.io/v1",
                        "kind": "PartialObjectMetadataList", "metadata": list_meta, "items": []});
                    (StatusCode::OK, json(&list))
                }
            }
            Method::GET if uri.starts_with(&format!("{secrets}/ext-1001")) => {
                use base64::Engine as _;
                let encoded = base64::engine::general_purpose::STANDARD.encode(&self.password);
                let secret = json!({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": "ext-1001", "namespace": NS},
                    "data": {"password": encoded}});
                (StatusCode::OK, json(&secret))
            }
            Method::PATCH if uri.starts_with(&format!("{extensions}/ext-1001/status")) => {
                self.status_patches.push(body.clone());
                self.ext["status"] = body["status"].clone();
                self.bump();
                (StatusCode::OK, json(&self.ext))
            }
            Method::PATCH if uri.starts_with(&format!("{extensions}/ext-1001")) => {
                assert!(body.to_string().contains(reconcile::FINALIZER), "{body}");
                self.ext["metadata"]["finalizers"] = json!([reconcile::FINALIZER]);
                self.bump();
                (StatusCode::OK, json(&self.ext))
            }
            Method::POST | Method::PATCH if uri.contains("/events") => {
                let mut event = body.clone();
                event["metadata"]["name"] = json!("event");
                event["eventTime"] = json!("2026-01-01T00:00:00.000000Z");
                (StatusCode::CREATED, json(&event))
            }
            _ => panic!("unexpected request {method} {uri}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_operator_follows_extensions_secrets_and_etcd() {
    use kubepbx_operator::run::{self, CancellationToken, Config};
    let etcd = tokio::task::spawn_blocking(EtcdServer::start)
        .await
        .unwrap()
        .unwrap();
    let options = || EtcdOptions {
        prefix: "/op-run".to_owned(),
        ..EtcdOptions::default()
    };
    let store = Arc::new(
        EtcdStore::connect(&etcd.endpoints(), options())
            .await
            .unwrap(),
    );
    let view = EtcdStore::connect(&etcd.endpoints(), options())
        .await
        .unwrap();
    let fake = Arc::new(std::sync::Mutex::new(FakeCluster {
        ext: extension("ext-1001", "1001", "2026-01-01T00:00:00Z"),
        version: 1,
        password: "change-me-1001".to_owned(),
        ..FakeCluster::default()
    }));
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = {
        let fake = Arc::clone(&fake);
        tokio::spawn(async move {
            while let Some((request, reply)) = handle.next_request().await {
                let fake = Arc::clone(&fake);
                tokio::spawn(async move {
                    let method = request.method().clone();
                    let uri = request.uri().to_string();
                    if uri.contains("watch=true") {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    let bytes = request.into_body().collect_bytes().await.unwrap();
                    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    let (status, text) = fake.lock().unwrap().answer(&method, &uri, &body);
                    let response = Response::builder()
                        .status(status)
                        .body(Body::from(text.into_bytes()))
                        .unwrap();
                    reply.send_response(response);
                });
            }
        })
    };
    let config = Config {
        settings: Settings {
            domain: DOMAIN.to_owned(),
            status_interval: Duration::ZERO,
            ..Settings::default()
        },
        http: None,
        namespace: Some(NS.to_owned()),
        election: None,
        identity: "test".to_owned(),
        concurrency: 2,
    };
    let shutdown = CancellationToken::new();
    let operator = tokio::spawn(run::run(
        Client::new(service, "default"),
        store,
        config,
        shutdown.clone(),
    ));

    let record = |password: &'static str| {
        let view = &view;
        async move {
            let (snapshot, _) = view.watch().await.unwrap();
            snapshot.extensions.iter().any(|r| {
                r.key() == UserKey::new(DOMAIN, "1001")
                    && r.ha1 == Ha1Set::derive("1001", DOMAIN, password)
            })
        }
    };
    let deadline = Instant::now() + STEP;
    while !record("change-me-1001").await {
        assert!(Instant::now() < deadline, "the record never reached etcd");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + STEP;
    loop {
        let ready = {
            let fake = fake.lock().unwrap();
            fake.ext["status"]["conditions"]
                .as_array()
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        };
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "the status never said Ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The Secret changes: its metadata watch brings the new password to etcd.
    fake.lock().unwrap().change_password("a-new-password");
    let deadline = Instant::now() + STEP;
    while !record("a-new-password").await {
        assert!(
            Instant::now() < deadline,
            "the new password never reached etcd"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let patches = fake.lock().unwrap().status_patches.len();
    assert!(
        (1..=3).contains(&patches),
        "status written on change only: {patches}"
    );

    // A phone registers (a binding appears in etcd): the status follows.
    let now = kubepbx_api::time::UnixMillis::now().0;
    let binding: kubepbx_api::records::Binding = serde_json::from_value(json!({
        "domain": DOMAIN, "user": "1001", "id": "desk", "contact": "sip:1001@192.168.1.23:5060",
        "source": "203.0.113.7:41234", "transport": "udp", "replica": "registrar-0", "flow": 0,
        "userAgent": "MicroSIP/3.21.3", "callId": "c1", "cseq": 1,
        "registeredAt": now, "expiresAt": now + 600_000,
    }))
    .unwrap();
    view.apply(vec![kubepbx_api::store::Write::PutBinding(Arc::new(
        binding,
    ))])
    .await
    .unwrap();
    let deadline = Instant::now() + STEP;
    while fake.lock().unwrap().ext["status"]["contacts"] != 1 {
        assert!(
            Instant::now() < deadline,
            "the registration never reached the status"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let registration = fake.lock().unwrap().ext["status"]["registrations"][0].clone();
    assert_eq!(
        registration["userAgent"], "MicroSIP/3.21.3",
        "{registration}"
    );

    shutdown.cancel();
    tokio::time::timeout(STEP, operator)
        .await
        .expect("the operator stops when asked")
        .unwrap()
        .unwrap();
    server.abort();
}
