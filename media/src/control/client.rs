//! [`HttpMedia`]: the [`MediaControl`] of a media replica reached over HTTP.

use super::{EventsPage, MAX_WAIT_SECONDS, encode_segment};
use crate::{
    AnswerRequest, MediaControl, MediaError, MetricsSnapshot, OfferRequest, RelayEvent, SdpResult,
    SessionId, SessionStats,
};
use axum::http::{Method, Request, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long one control request may take before the replica counts as unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest answer accepted (a session list of a busy replica).
const MAX_ANSWER: usize = 16 << 20;
/// Relay events queued for the owner.
const EVENT_QUEUE: usize = 256;

/// A media replica at `http://host:port`, driven through its control API.
#[derive(Debug, Clone)]
pub struct HttpMedia {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl HttpMedia {
    /// A client for the replica whose control API listens at `base` (`http://10.0.0.7:9090`).
    pub fn new(base: impl Into<String>) -> HttpMedia {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(REQUEST_TIMEOUT));
        HttpMedia {
            base: base.into().trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// The replica's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn unavailable(&self, what: impl std::fmt::Display) -> MediaError {
        MediaError::Unavailable(format!("media replica {}: {what}", self.base))
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        timeout: Duration,
    ) -> Result<T, MediaError> {
        let bytes = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b).map_err(|e| self.unavailable(e))?),
            None => Bytes::new(),
        };
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(bytes))
            .map_err(|e| self.unavailable(e))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                // The innermost cause says what happened (connection refused, reset, …).
                let mut cause: &dyn std::error::Error = &e;
                while let Some(inner) = cause.source() {
                    cause = inner;
                }
                self.unavailable(format!("unreachable ({cause})"))
            })?;
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| self.unavailable(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok::<_, MediaError>((status, body))
        };
        let (status, body) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| self.unavailable(format!("no answer within {timeout:?}")))??;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| self.unavailable(format!("unreadable answer to {path}: {e}")));
        }
        Err(serde_json::from_slice::<MediaError>(&body)
            .unwrap_or_else(|_| self.unavailable(format!("{path} answered HTTP {status}"))))
    }

    /// A request without a body, within the usual time limit.
    async fn bodiless<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> Result<T, MediaError> {
        self.call(method, path, None::<&()>, REQUEST_TIMEOUT).await
    }

    fn session_path(id: &SessionId) -> String {
        format!("/v1/sessions/{}", encode_segment(&id.0))
    }

    /// The replica's events (sessions it closed for lack of media), long-polled by a task on
    /// `tasks` until `shutdown`. Starts from now; when the replica was unreachable or restarted,
    /// polling resumes from its current position (events of the gap are lost and logged).
    pub fn events(
        &self,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> mpsc::Receiver<RelayEvent> {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let me = self.clone();
        tasks.spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = me.poll_events(tx) => {}
            }
        });
        rx
    }

    async fn poll_events(&self, tx: mpsc::Sender<RelayEvent>) {
        let wait = Duration::from_secs(MAX_WAIT_SECONDS);
        let mut from: Option<u64> = None;
        let mut failing = false;
        loop {
            let path = match from {
                Some(n) => format!("/v1/events?from={n}&wait={}", wait.as_secs()),
                None => "/v1/events".to_owned(),
            };
            match self
                .call::<EventsPage>(Method::GET, &path, None::<&()>, wait + REQUEST_TIMEOUT)
                .await
            {
                Ok(page) => {
                    if failing {
                        tracing::info!(replica = %self.base, "media replica events reachable again");
                        failing = false;
                    }
                    if page.missed && from.is_some() {
                        tracing::warn!(replica = %self.base, "missed media events (replica restarted or was unreachable)");
                    }
                    for numbered in page.events {
                        if tx.send(numbered.event).await.is_err() {
                            return;
                        }
                    }
                    from = Some(page.next);
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "polling media replica events failed; retrying");
                        failing = true;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl MediaControl for HttpMedia {
    async fn offer(&self, req: OfferRequest) -> Result<SdpResult, MediaError> {
        self.call(Method::POST, "/v1/offer", Some(&req), REQUEST_TIMEOUT)
            .await
    }

    async fn answer(&self, req: AnswerRequest) -> Result<SdpResult, MediaError> {
        self.call(Method::POST, "/v1/answer", Some(&req), REQUEST_TIMEOUT)
            .await
    }

    async fn delete(&self, session: &SessionId) -> Result<Option<SessionStats>, MediaError> {
        self.bodiless(Method::DELETE, &Self::session_path(session))
            .await
    }

    async fn stats(&self, session: &SessionId) -> Result<Option<SessionStats>, MediaError> {
        self.bodiless(Method::GET, &Self::session_path(session))
            .await
    }

    async fn list(&self) -> Result<Vec<SessionStats>, MediaError> {
        self.bodiless(Method::GET, "/v1/sessions").await
    }

    async fn metrics(&self) -> Result<MetricsSnapshot, MediaError> {
        self.bodiless(Method::GET, "/v1/metrics").await
    }
}
