//! `--http ADDR:PORT`: `/healthz` (the process answers), `/readyz` (etcd answers and, on the
//! leader, the operator's copy of etcd is loaded; a standby replica is ready to take over) and
//! `/metrics` (OpenMetrics text, see [`crate::metrics`]).

use crate::run::Shared;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Binds `addr` and serves until `shutdown` is cancelled.
pub async fn serve(
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on --http {addr}: {e} (is another process using it?)")
    })?;
    tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(shared);
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "health endpoint stopped");
        }
    }))
}

async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    if !shared.store.is_connected() {
        let health = shared.store.health();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: etcd does not answer ({health:?})\n"),
        );
    }
    let leading = *shared.leading.borrow();
    if leading {
        let loaded = shared
            .mirror
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_loaded();
        if !loaded {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: reading etcd\n".to_owned(),
            );
        }
        return (StatusCode::OK, "ready: leading\n".to_owned());
    }
    (StatusCode::OK, "ready: standby\n".to_owned())
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let session = shared
        .session
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    shared
        .metrics
        .set_queue_depth(session.map_or(0, |ctx| ctx.queue_depth()));
    shared
        .metrics
        .set_etcd_connected(shared.store.is_connected());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
}
