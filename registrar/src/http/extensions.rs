//! The extension routes: one extension read, and the writes (create, change, delete) handed to
//! the deployment's [`ExtensionAdmin`](crate::admin::ExtensionAdmin).
//!
//! An extension is named in the path by its domain and number, as [`ExtensionView`] shows them
//! (`/api/v1/extensions/pbx.example.com/1001`; the domain in any case). A write answers once
//! the registrar serves the result, with the extension as it now is. Without an admin (a
//! cluster) the writes answer `405` saying where extensions are managed instead.

use super::{AppState, Problem, unavailable};
use crate::admin::{AdminError, ExtensionAdmin};
use crate::views::ExtensionView;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kubepbx_api::UserKey;
use kubepbx_api::admin::{ExtensionChange, NewExtension, RequestError};
use std::sync::Arc;

/// `GET /api/v1/extensions/{domain}/{extension}`.
pub(super) async fn one(
    State(state): State<AppState>,
    Path((domain, extension)): Path<(String, String)>,
) -> Result<Json<ExtensionView>, Problem> {
    let key = key(&domain, &extension);
    Ok(Json(
        view(&state, &key).await?.ok_or_else(|| not_found(&key))?,
    ))
}

/// `POST /api/v1/extensions`: 201 with the new extension.
pub(super) async fn create(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, Problem> {
    let admin = writable(&state)?;
    let new = NewExtension::from_json(&body).map_err(request_problem)?;
    let key = admin.create(new).await.map_err(admin_problem)?;
    let view = view(&state, &key).await?.ok_or_else(|| not_served(&key))?;
    let mut response = (StatusCode::CREATED, Json(view)).into_response();
    if let Ok(location) = HeaderValue::from_str(&path_of(&key)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `PATCH /api/v1/extensions/{domain}/{extension}`: a JSON merge patch; 200 with the result.
pub(super) async fn change(
    State(state): State<AppState>,
    Path((domain, extension)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<ExtensionView>, Problem> {
    let admin = writable(&state)?;
    let key = key(&domain, &extension);
    let change = ExtensionChange::from_json(&body).map_err(request_problem)?;
    admin.change(&key, change).await.map_err(admin_problem)?;
    Ok(Json(
        view(&state, &key).await?.ok_or_else(|| not_served(&key))?,
    ))
}

/// `DELETE /api/v1/extensions/{domain}/{extension}`: 204.
pub(super) async fn delete(
    State(state): State<AppState>,
    Path((domain, extension)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    let admin = writable(&state)?;
    let key = key(&domain, &extension);
    admin.delete(&key).await.map_err(admin_problem)?;
    Ok(StatusCode::NO_CONTENT)
}

fn key(domain: &str, extension: &str) -> UserKey {
    UserKey::new(domain.to_ascii_lowercase(), extension)
}

fn path_of(key: &UserKey) -> String {
    format!("/api/v1/extensions/{}/{}", key.domain, key.user)
}

async fn view(state: &AppState, key: &UserKey) -> Result<Option<ExtensionView>, Problem> {
    state
        .registrar
        .extension(key.clone())
        .await
        .ok_or_else(unavailable)
}

fn not_found(key: &UserKey) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        format!(
            "there is no extension {} in domain {} (GET /api/v1/extensions lists them)",
            key.user, key.domain
        ),
    )
}

/// The write succeeded but the registrar does not list the extension: should not happen.
fn not_served(key: &UserKey) -> Problem {
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!(
            "extension {key} was written but the registrar does not serve it; the log says why"
        ),
    )
}

/// The admin, or `405` naming where extensions are managed.
fn writable(state: &AppState) -> Result<&Arc<dyn ExtensionAdmin>, Problem> {
    state.extension_admin.as_ref().ok_or_else(|| {
        Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "this PBX reads its extensions from the cluster: manage them with `kubectl apply` \
             (Extension resources and their Secrets) or `kubepbx apply -f DIR`; this API only \
             lists them",
        )
        .with_header(header::ALLOW, HeaderValue::from_static("GET"))
    })
}

fn request_problem(e: RequestError) -> Problem {
    match e {
        RequestError::NotJson(_) => Problem::new(StatusCode::BAD_REQUEST, e.to_string()),
        RequestError::Invalid { .. } => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
    }
}

fn admin_problem(e: AdminError) -> Problem {
    let status = match &e {
        AdminError::NotFound(_) => StatusCode::NOT_FOUND,
        AdminError::Exists(_) | AdminError::Conflict(_) => StatusCode::CONFLICT,
        AdminError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        AdminError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    Problem::new(status, e.to_string())
}
