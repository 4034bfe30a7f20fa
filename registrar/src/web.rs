//! The browser side of the HTTP server: the admin UI at `/`, the web phone at `/phone/` and the
//! phone's configuration at `/phone/config.json`.
//!
//! Both UIs are static files built from `web/` (`npm ci && npm run build`, which `make` runs)
//! into a folder given with `--web-dir`: `phone/` and `admin/` below it. Nothing is fetched from
//! elsewhere at runtime. When the folder has not been built, the pages answer 503 with a
//! problem naming the command that builds them, and the API keeps working.
//!
//! `config.json` tells the phone what it cannot know by itself: the default SIP domain, where
//! the SIP WebSocket is (`/ws` on the same origin) and the enabled extensions, for the login
//! picker (numbers and display names only: a phone directory, no secrets).

use crate::http::{AppState, Problem};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::path::{Path, PathBuf};
use tower_http::services::{ServeDir, ServeFile};

/// Where the built UIs are.
#[derive(Debug, Clone)]
pub struct WebAssets {
    /// The folder holding `phone/` and `admin/` (`web/dist` in a checkout).
    pub dir: PathBuf,
    /// The SIP domain of extensions without their own (`--domain`).
    pub default_domain: String,
}

/// What the web phone reads at start.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PhoneConfig {
    /// The default SIP domain.
    pub domain: String,
    /// The SIP WebSocket's path on this origin.
    pub websocket: &'static str,
    /// Extensions one may log in as.
    pub extensions: Vec<PhoneExtension>,
}

/// An extension in the phone's login picker.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PhoneExtension {
    /// The number.
    pub extension: String,
    /// Its SIP domain.
    pub domain: String,
    /// Its display name, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// The UI routes; `assets` `None` serves the "not built" problem for every page.
pub(crate) fn routes(assets: Option<&WebAssets>) -> Router<AppState> {
    let built = assets.filter(|a| is_built(&a.dir));
    let Some(assets) = built else {
        if let Some(a) = assets {
            tracing::warn!(
                dir = %a.dir.display(),
                "the web phone and admin UI are not built there; run `make web` (npm ci && npm run build in web/) or point --web-dir at the built folder"
            );
        }
        return Router::new()
            .route("/", get(not_built))
            .route("/phone", get(not_built))
            .route("/phone/", get(not_built))
            .route("/phone/config.json", get(phone_config))
            .fallback(not_found);
    };
    let phone = assets.dir.join("phone");
    let admin = assets.dir.join("admin");
    Router::new()
        .route("/phone", get(|| async { Redirect::permanent("/phone/") }))
        .route("/phone/config.json", get(phone_config))
        .nest_service(
            "/phone/",
            ServeDir::new(&phone).not_found_service(ServeFile::new(phone.join("index.html"))),
        )
        .route_service("/", ServeFile::new(admin.join("index.html")))
        .fallback_service(ServeDir::new(&admin).fallback(get(not_found)))
}

/// Whether `dir` holds a built phone.
fn is_built(dir: &Path) -> bool {
    dir.join("phone").join("index.html").is_file()
}

async fn not_built() -> Response {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the web phone and admin UI are not built: run `make web` (npm ci && npm run build in web/) \
         and start kubepbx with --web-dir pointing at web/dist",
    )
    .into_response()
}

async fn not_found() -> Response {
    Problem::new(StatusCode::NOT_FOUND, "no such endpoint").into_response()
}

async fn phone_config(State(state): State<AppState>) -> Response {
    let Some(extensions) = state.registrar.extensions().await else {
        return Problem::new(StatusCode::SERVICE_UNAVAILABLE, "the registrar is stopping")
            .into_response();
    };
    let domain = state
        .web
        .as_ref()
        .map(|w| w.default_domain.clone())
        .unwrap_or_default();
    let config = PhoneConfig {
        domain,
        websocket: "/ws",
        extensions: extensions
            .into_iter()
            .filter(|e| e.enabled)
            .map(|e| PhoneExtension {
                extension: e.extension,
                domain: e.domain,
                display_name: e.display_name,
            })
            .collect(),
    };
    ([(header::CACHE_CONTROL, "no-store")], Json(config)).into_response()
}
