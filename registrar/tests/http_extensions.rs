//! The extension routes of the HTTP API against a running registrar: reads, the `405` of a
//! PBX without an [`ExtensionAdmin`] (a cluster), and how the writes of one are answered —
//! here an admin writing records straight into the store, as a cluster implementation might.
#![allow(clippy::unwrap_used, reason = "test code")]

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use kubepbx_api::admin::{ExtensionChange, NewExtension};
use kubepbx_api::manifest::extension_record;
use kubepbx_api::store::{EmbeddedOptions, EmbeddedStore, Store, Write};
use kubepbx_api::{ExtensionSpec, UserKey};
use kubepbx_registrar::admin::{AdminError, ExtensionAdmin};
use kubepbx_registrar::calls::CdrStorage;
use kubepbx_registrar::http::{AppState, router};
use kubepbx_registrar::{RegistrarHandle, Setup, SipListeners};
use kubepbx_sip::auth::NonceConfig;
use kubepbx_sip::ban::BanConfig;
use kubepbx_sip::endpoint::EndpointConfig;
use kubepbx_sip::registrar::RegistrarConfig;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

const DOMAIN: &str = "pbx.example.com";
const TOKEN: &str = "t0ken";

/// Writes records into the store; remembers specs to apply changes to.
#[derive(Debug)]
struct StoreAdmin {
    store: Arc<EmbeddedStore>,
    specs: Mutex<HashMap<UserKey, ExtensionSpec>>,
}

impl StoreAdmin {
    async fn put(&self, spec: &ExtensionSpec, password: &str) -> UserKey {
        let record = extension_record("default", "x", spec, DOMAIN, Ok(password), 1);
        let key = record.key();
        self.store
            .apply(vec![Write::PutExtension(record)])
            .await
            .unwrap();
        self.specs.lock().unwrap().insert(key.clone(), spec.clone());
        key
    }
}

#[async_trait::async_trait]
impl ExtensionAdmin for StoreAdmin {
    async fn create(&self, new: NewExtension) -> Result<UserKey, AdminError> {
        if new.spec.extension == "1001" {
            return Err(AdminError::Exists("extension 1001 exists".into()));
        }
        Ok(self.put(&new.spec, new.password.expose()).await)
    }

    async fn change(&self, key: &UserKey, change: ExtensionChange) -> Result<(), AdminError> {
        let spec = self.specs.lock().unwrap().get(key).cloned();
        let spec = spec.ok_or_else(|| AdminError::NotFound(format!("no {key}")))?;
        let spec = change.apply_to(&spec)?;
        let password = change.password.as_ref().map_or("same", |p| p.expose());
        self.put(&spec, password).await;
        Ok(())
    }

    async fn delete(&self, key: &UserKey) -> Result<(), AdminError> {
        Err(AdminError::Unavailable(format!(
            "cannot write /manifests/{}.yaml: Read-only file system (os error 30)",
            key.user
        )))
    }
}

async fn registrar(
    store: Arc<EmbeddedStore>,
    shutdown: &CancellationToken,
    tasks: &TaskTracker,
) -> RegistrarHandle {
    let listeners = SipListeners::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let sip = listeners.local_addr().unwrap();
    let config = EndpointConfig {
        replica: "test".into(),
        default_domain: DOMAIN.into(),
        advertise: sip.to_string(),
        advertise_tls: None,
        anchor_media: false,
        local_hosts: vec!["127.0.0.1".into()],
        registrar: RegistrarConfig::default(),
        bans: BanConfig::default(),
        nonce: NonceConfig::default(),
        secret: [7; 32],
        instance: 0,
        challenge: Vec::new(),
        cluster: None,
    };
    let setup = Setup {
        config,
        listeners,
        store: store as Arc<dyn Store>,
        media: None,
        cdrs: CdrStorage::Memory,
        cluster: None,
    };
    kubepbx_registrar::start(setup, shutdown.clone(), tasks)
        .await
        .unwrap()
}

fn state(registrar: RegistrarHandle, admin: Option<Arc<dyn ExtensionAdmin>>) -> AppState {
    AppState {
        registrar,
        admin_token: TOKEN.into(),
        media: None,
        recordings_dir: None,
        readiness: None,
        cluster: None,
        ws_policy: Default::default(),
        web: None,
        extension_admin: admin,
    }
}

/// Status, `Allow`, `Location`, `Content-Type` and the body as JSON.
struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    json: Value,
}

async fn call(state: &AppState, method: &str, path: &str, body: Option<Value>) -> Answer {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        json,
    }
}

fn is_problem(a: &Answer) -> bool {
    a.headers[header::CONTENT_TYPE] == "application/problem+json"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_the_writes_say_where_extensions_are_managed() {
    let store = Arc::new(
        EmbeddedStore::open(None, EmbeddedOptions::default())
            .await
            .unwrap(),
    );
    let (shutdown, tasks) = (CancellationToken::new(), TaskTracker::new());
    let admin = StoreAdmin {
        store: Arc::clone(&store),
        specs: Mutex::default(),
    };
    let spec = NewExtension::from_json(br#"{"extension": "1001", "password": "x"}"#)
        .unwrap()
        .spec;
    admin.put(&spec, "x").await;
    let state = state(registrar(store, &shutdown, &tasks).await, None);

    let one = call(
        &state,
        "GET",
        "/api/v1/extensions/PBX.example.com/1001",
        None,
    )
    .await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json["extension"], "1001");
    assert_eq!(one.json["maxContacts"], 5);
    assert_eq!(one.json["recording"], "Never");
    let unknown = call(
        &state,
        "GET",
        "/api/v1/extensions/pbx.example.com/1002",
        None,
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(is_problem(&unknown));

    for (method, path, body) in [
        (
            "POST",
            "/api/v1/extensions",
            Some(json!({"extension": "1002", "password": "x"})),
        ),
        (
            "PATCH",
            "/api/v1/extensions/pbx.example.com/1001",
            Some(json!({"enabled": false})),
        ),
        ("DELETE", "/api/v1/extensions/pbx.example.com/1001", None),
    ] {
        let a = call(&state, method, path, body).await;
        assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert!(is_problem(&a));
        assert_eq!(a.headers[header::ALLOW], "GET");
        let detail = a.json["detail"].as_str().unwrap();
        assert!(
            detail.contains("kubectl apply") && detail.contains("kubepbx apply -f DIR"),
            "{detail}"
        );
    }
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_answer_with_the_served_extension_or_a_problem() {
    let store = Arc::new(
        EmbeddedStore::open(None, EmbeddedOptions::default())
            .await
            .unwrap(),
    );
    let (shutdown, tasks) = (CancellationToken::new(), TaskTracker::new());
    let admin: Arc<dyn ExtensionAdmin> = Arc::new(StoreAdmin {
        store: Arc::clone(&store),
        specs: Mutex::default(),
    });
    let state = state(registrar(store, &shutdown, &tasks).await, Some(admin));

    let body = json!({"extension": "1003", "password": "s3cret-pw", "displayName": "Desk"});
    let created = call(&state, "POST", "/api/v1/extensions", Some(body)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.json);
    assert_eq!(
        created.headers[header::LOCATION],
        "/api/v1/extensions/pbx.example.com/1003"
    );
    assert_eq!(created.json["displayName"], "Desk");
    assert!(!created.json.to_string().contains("s3cret-pw"));

    let changed = call(
        &state,
        "PATCH",
        "/api/v1/extensions/pbx.example.com/1003",
        Some(json!({"enabled": false, "displayName": null})),
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.json);
    assert_eq!(changed.json["enabled"], false);
    assert_eq!(changed.json["displayName"], Value::Null);

    let cases = [
        (
            "POST",
            "/api/v1/extensions",
            json!({"extension": "1004", "password": "x", "maxContacts": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "maxContacts",
        ),
        (
            "POST",
            "/api/v1/extensions",
            json!({"extension": "1001", "password": "x"}),
            StatusCode::CONFLICT,
            "exists",
        ),
        (
            "POST",
            "/api/v1/extensions",
            json!([]),
            StatusCode::BAD_REQUEST,
            "JSON object",
        ),
        (
            "PATCH",
            "/api/v1/extensions/pbx.example.com/1003",
            json!({"domain": "b.example"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "domain: cannot be changed",
        ),
        (
            "PATCH",
            "/api/v1/extensions/pbx.example.com/1003",
            json!({"maxContacts": 1000}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "maxContacts",
        ),
        (
            "PATCH",
            "/api/v1/extensions/pbx.example.com/4711",
            json!({"enabled": true}),
            StatusCode::NOT_FOUND,
            "no 4711",
        ),
        (
            "DELETE",
            "/api/v1/extensions/pbx.example.com/1003",
            Value::Null,
            StatusCode::SERVICE_UNAVAILABLE,
            "os error 30",
        ),
    ];
    for (method, path, body, status, detail) in cases {
        let body = (!body.is_null()).then_some(body);
        let a = call(&state, method, path, body).await;
        assert_eq!(a.status, status, "{method} {path}: {}", a.json);
        assert!(is_problem(&a));
        let text = a.json["detail"].as_str().unwrap();
        assert!(text.contains(detail), "{text}");
    }
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
}
