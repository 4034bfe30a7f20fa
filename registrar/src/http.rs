//! The HTTP side: admin API (bearer token), health, readiness and metrics.
//!
//! | route | auth | answer |
//! |---|---|---|
//! | `GET /api/v1/extensions` | bearer | [`ExtensionView`](crate::views::ExtensionView)s |
//! | `POST /api/v1/extensions` | bearer | creates one ([`NewExtension`](kubepbx_api::admin::NewExtension)): 201 with its view; 409 when it exists, 422 naming a bad field |
//! | `GET /api/v1/extensions/{domain}/{extension}` | bearer | one [`ExtensionView`](crate::views::ExtensionView), 404 when unknown |
//! | `PATCH /api/v1/extensions/{domain}/{extension}` | bearer | a JSON merge patch ([`ExtensionChange`](kubepbx_api::admin::ExtensionChange)): 200 with the view; 404, 422 |
//! | `DELETE /api/v1/extensions/{domain}/{extension}` | bearer | 204; 404 when unknown |
//! | `GET /api/v1/registrations` | bearer | [`RegistrationView`](crate::views::RegistrationView)s, `?extension=&domain=` to select |
//! | `GET /api/v1/calls` | bearer | live [`CallView`](crate::calls::CallView)s with media counters (in a cluster, every replica's) |
//! | `DELETE /api/v1/calls/{id}` | bearer | hangs the call up (in a cluster, through the replica routing it): 204, 404 when there is no such call |
//! | `GET /api/v1/cdrs` | bearer | finished calls, newest first ([`CdrView`](crate::calls::CdrView)) |
//! | `GET /api/v1/recordings` | bearer | [`RecordingView`](crate::recordings::RecordingView)s, newest first |
//! | `GET /api/v1/recordings/{id}` | bearer | the WAV file (`audio/wav`) |
//! | `GET /ws` | — (digest, in SIP) | SIP over WebSocket, subprotocol `sip` ([`crate::ws`]) |
//! | `GET /` | — | the admin UI (it asks for the token) ([`crate::web`]) |
//! | `GET /phone/` | — | the web phone; `/phone/config.json` its configuration |
//! | `GET /healthz` | — | 200 while the process runs |
//! | `GET /readyz` | — | 200 once the registrar serves SIP, 503 before, while stopping and while etcd is unreachable (the reason in the problem's `detail`) |
//! | `GET /metrics` | — | OpenMetrics text ([`crate::metrics`]) |
//!
//! Errors are RFC 9457 problem documents (`application/problem+json`).
//!
//! The extension writes go to [`AppState::extension_admin`] (the manifest folder in `kubepbx
//! up`); without one (a cluster) they answer `405` naming `kubectl apply` and `kubepbx apply`
//! (`extensions`).

mod extensions;

use crate::RegistrarHandle;
use crate::views::RegistrationFilter;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query};
use axum::extract::{Request, State};
use axum::http::HeaderName;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The registrar to ask.
    pub registrar: RegistrarHandle,
    /// The admin token (compared in constant time).
    pub admin_token: Arc<str>,
    /// The media relay, for per-call counters and its metrics.
    pub media: Option<Arc<dyn kubepbx_media::MediaControl>>,
    /// Where the relay writes recordings.
    pub recordings_dir: Option<PathBuf>,
    /// What else must hold for `/readyz` (the shared store answering), beyond a running
    /// registrar.
    pub readiness: Option<Arc<dyn Readiness>>,
    /// The other replicas' calls (in a cluster): listed with this replica's, and hung up
    /// through their owners.
    pub cluster: Option<Arc<dyn crate::calls::ClusterCalls>>,
    /// Which page origins may open SIP WebSockets, and which proxies' forwarding headers name
    /// the phone behind them (`--ws-allowed-origins`, `--trusted-proxies`).
    pub ws_policy: crate::ws::WsPolicy,
    /// The built web phone and admin UI (`None`: the pages say they are not built).
    pub web: Option<crate::web::WebAssets>,
    /// Where the extension writes go; `None` where extensions are managed elsewhere (a
    /// cluster), and the write routes answer `405`.
    pub extension_admin: Option<Arc<dyn crate::admin::ExtensionAdmin>>,
}

/// A condition of `/readyz` besides the registrar itself.
pub trait Readiness: Send + Sync + std::fmt::Debug + 'static {
    /// `Some(reason)` while not ready (e.g. "etcd at http://…: unreachable").
    fn not_ready(&self) -> Option<String>;
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// Always `about:blank`: the status says what kind of problem it is.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Short summary (the status's reason phrase).
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What went wrong and how to fix it.
    pub detail: String,
    /// Headers sent with it (`Allow` of a 405).
    #[serde(skip)]
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Problem {
    /// A problem with `status` and `detail`.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Problem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            headers: Vec::new(),
        }
    }

    /// The problem with one more response header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(mut self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = std::mem::take(&mut self.headers);
        let mut response = (status, Json(self)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        for (name, value) in headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// The router for `--http`.
pub fn router(state: AppState) -> Router {
    let admin = Router::new()
        .route(
            "/api/v1/extensions",
            get(list_extensions).post(extensions::create),
        )
        .route(
            "/api/v1/extensions/{domain}/{extension}",
            get(extensions::one)
                .patch(extensions::change)
                .delete(extensions::delete),
        )
        .route("/api/v1/registrations", get(registrations))
        .route("/api/v1/calls", get(calls))
        .route("/api/v1/calls/{id}", delete(hangup))
        .route("/api/v1/cdrs", get(cdrs))
        .route("/api/v1/recordings", get(recordings))
        .route("/api/v1/recordings/{id}", get(recording))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let web = crate::web::routes(state.web.as_ref());
    Router::new()
        .merge(admin)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/ws", get(crate::ws::upgrade))
        // The UIs, and the fallback (a problem document for unknown paths).
        .merge(web)
        .with_state(state)
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), state.admin_token.as_bytes()) => {
            next.run(request).await
        }
        other => {
            let detail = if other.is_some() {
                "the bearer token is not the admin token"
            } else {
                "send the admin token as 'Authorization: Bearer <token>' (it is in the data \
                 directory's admin-token file, or the --admin-token you started kubepbx with)"
            };
            let mut response = Problem::new(StatusCode::UNAUTHORIZED, detail).into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"kubepbx\""),
            );
            response
        }
    }
}

/// Compares without leaking where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unavailable() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the registrar is not running (starting or stopping)",
    )
}

async fn list_extensions(State(state): State<AppState>) -> Result<Response, Problem> {
    let list = state.registrar.extensions().await.ok_or_else(unavailable)?;
    Ok(Json(list).into_response())
}

async fn registrations(
    State(state): State<AppState>,
    filter: Result<Query<RegistrationFilter>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(filter) = filter.map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            format!(
                "{}; the query takes extension= and domain= (e.g. ?extension=1001)",
                e.body_text()
            ),
        )
    })?;
    let list = state
        .registrar
        .registrations(filter)
        .await
        .ok_or_else(unavailable)?;
    Ok(Json(list).into_response())
}

async fn calls(State(state): State<AppState>) -> Result<Response, Problem> {
    let mut list = state.registrar.calls().await.ok_or_else(unavailable)?;
    if let Some(cluster) = &state.cluster {
        let now = kubepbx_api::time::UnixMillis::now();
        let others = cluster.others();
        list.extend(others.iter().map(|r| crate::calls::view_of(r, now)));
        list.sort_by(|a, b| (&a.started_at, &a.id).cmp(&(&b.started_at, &b.id)));
    }
    if let Some(media) = &state.media {
        match media.list().await {
            Ok(sessions) => {
                let by_session: HashMap<&str, &kubepbx_media::SessionStats> =
                    sessions.iter().map(|s| (s.session.0.as_str(), s)).collect();
                for call in &mut list {
                    if let Some(stats) = call.session.as_deref().and_then(|s| by_session.get(s)) {
                        call.media = Some(crate::calls::MediaView::of(stats));
                        call.recording.clone_from(&stats.recording);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "the media relay did not list its sessions"),
        }
    }
    Ok(Json(list).into_response())
}

async fn hangup(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let not_found = || {
        Problem::new(
            StatusCode::NOT_FOUND,
            format!("there is no call {id:?} in progress (GET /api/v1/calls lists them)"),
        )
    };
    match state.registrar.hangup(&id).await {
        Some(true) => Ok(StatusCode::NO_CONTENT),
        Some(false) => match &state.cluster {
            None => Err(not_found()),
            Some(cluster) => match cluster.hangup(&id).await {
                Ok(true) => Ok(StatusCode::NO_CONTENT),
                Ok(false) => Err(not_found()),
                Err(reason) => Err(Problem::new(StatusCode::SERVICE_UNAVAILABLE, reason)),
            },
        },
        None => Err(unavailable()),
    }
}

/// This replica's finished calls; in a cluster, every replica's as this replica follows them
/// in memory, with its own that the store does not have yet (never waiting for etcd).
async fn cdrs(State(state): State<AppState>) -> Result<Response, Problem> {
    let own = state.registrar.cdrs().await;
    let list = match &state.cluster {
        Some(cluster) => crate::calls::merge_history(
            cluster.history(crate::calls::CDR_KEEP),
            own.unwrap_or_default(),
            crate::calls::CDR_KEEP,
        ),
        None => own.ok_or_else(unavailable)?,
    };
    Ok(Json(list).into_response())
}

fn recordings_dir(state: &AppState) -> Result<PathBuf, Problem> {
    state.recordings_dir.clone().ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "no recordings here: this registrar has no recordings directory (start it with \
             --recordings-dir, the directory the media replicas record into on a volume they \
             share)",
        )
    })
}

async fn recordings(State(state): State<AppState>) -> Result<Response, Problem> {
    let dir = recordings_dir(&state)?;
    let listed = tokio::task::spawn_blocking(move || crate::recordings::list(&dir)).await;
    match listed {
        Ok(Ok(list)) => Ok(Json(list).into_response()),
        Ok(Err(e)) => Err(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the recordings directory cannot be read: {e}"),
        )),
        Err(e) => Err(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("listing recordings failed: {e}"),
        )),
    }
}

async fn recording(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let dir = recordings_dir(&state)?;
    let not_found = || {
        Problem::new(
            StatusCode::NOT_FOUND,
            format!("there is no recording {id:?} (GET /api/v1/recordings lists them)"),
        )
    };
    if !crate::recordings::valid_id(&id) {
        return Err(not_found());
    }
    let file = match tokio::fs::File::open(crate::recordings::wav_path(&dir, &id)).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
        Err(e) => {
            return Err(Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the recording cannot be read: {e}"),
            ));
        }
    };
    let length = file.metadata().await.map(|m| m.len()).ok();
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    if let Ok(v) = HeaderValue::from_str(&format!("inline; filename=\"{id}.wav\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

async fn readyz(State(state): State<AppState>) -> Result<&'static str, Problem> {
    if !state.registrar.is_ready() || state.registrar.metrics().await.is_none() {
        return Err(unavailable());
    }
    match state.readiness.as_ref().and_then(|r| r.not_ready()) {
        None => Ok("ready\n"),
        Some(reason) => Err(Problem::new(StatusCode::SERVICE_UNAVAILABLE, reason)),
    }
}

async fn metrics(State(state): State<AppState>) -> Result<Response, Problem> {
    let mut snapshot = state.registrar.metrics().await.ok_or_else(unavailable)?;
    snapshot.heap = crate::metrics::heap();
    if let Some(media) = &state.media {
        snapshot.relay = media.metrics().await.ok();
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        snapshot.encode(),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
