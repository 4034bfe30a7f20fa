//! The HTTP side of a media replica: routes onto a [`MediaControl`], and the numbered event feed
//! registrars long-poll.

use super::{EventsPage, MAX_WAIT_SECONDS, NumberedEvent, http_status};
use crate::{AnswerRequest, MediaControl, MediaError, OfferRequest, RelayEvent, SessionId};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Relay events kept for pollers.
const FEED_KEEP: usize = 4096;

/// Relay events, numbered and kept for a while so each registrar can poll them at its pace.
#[derive(Debug, Clone)]
pub struct EventFeed {
    inner: Arc<FeedInner>,
}

#[derive(Debug, Default)]
struct FeedInner {
    state: Mutex<FeedState>,
    notify: Notify,
}

#[derive(Debug, Default)]
struct FeedState {
    /// The number the next event gets.
    next: u64,
    events: VecDeque<NumberedEvent>,
}

impl EventFeed {
    /// An empty feed (fill it with [`Self::push`]).
    pub fn new() -> EventFeed {
        EventFeed {
            inner: Arc::new(FeedInner::default()),
        }
    }

    /// A feed of what `events` delivers, filled by a task on `tasks` until `shutdown`.
    pub fn start(
        mut events: mpsc::Receiver<RelayEvent>,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> EventFeed {
        let feed = EventFeed::new();
        let filler = feed.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    event = events.recv() => match event {
                        Some(event) => filler.push(event),
                        None => break,
                    },
                }
            }
        });
        feed
    }

    /// Adds an event and wakes the pollers.
    pub fn push(&self, event: RelayEvent) {
        {
            let mut state = self.lock();
            let seq = state.next;
            state.next += 1;
            if state.events.len() == FEED_KEEP {
                state.events.pop_front();
            }
            state.events.push_back(NumberedEvent { seq, event });
        }
        self.inner.notify.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FeedState> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Events from `from` on (`None`: none, just the current position).
    pub fn page(&self, from: Option<u64>) -> EventsPage {
        let state = self.lock();
        let Some(from) = from else {
            return EventsPage {
                events: Vec::new(),
                next: state.next,
                missed: false,
            };
        };
        let oldest = state.events.front().map_or(state.next, |e| e.seq);
        let events: Vec<NumberedEvent> = state
            .events
            .iter()
            .filter(|e| e.seq >= from)
            .cloned()
            .collect();
        EventsPage {
            events,
            next: state.next,
            // Also when the poller is ahead of us: this relay restarted and numbers anew.
            missed: from < oldest || from > state.next,
        }
    }

    /// [`Self::page`], waiting up to `wait` for an event when there is none yet.
    pub async fn poll(&self, from: Option<u64>, wait: Duration) -> EventsPage {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let page = self.page(from);
            if from.is_none() || !page.events.is_empty() || page.missed {
                return page;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.page(from);
            }
        }
    }
}

impl Default for EventFeed {
    fn default() -> Self {
        EventFeed::new()
    }
}

#[derive(Clone)]
struct AppState {
    relay: Arc<dyn MediaControl>,
    feed: EventFeed,
}

/// The control routes (see the module docs of [`crate::control`]) onto `relay`.
pub fn router(relay: Arc<dyn MediaControl>, feed: EventFeed) -> Router {
    Router::new()
        .route("/v1/offer", post(offer))
        .route("/v1/answer", post(answer))
        .route("/v1/sessions", get(list))
        .route("/v1/sessions/{id}", get(stats).delete(delete))
        .route("/v1/metrics", get(metrics))
        .route("/v1/events", get(events))
        .with_state(AppState { relay, feed })
}

/// A relay error as its JSON with the matching status.
struct Failure(MediaError);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(http_status(&self.0)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0)).into_response()
    }
}

impl From<MediaError> for Failure {
    fn from(e: MediaError) -> Self {
        Failure(e)
    }
}

async fn offer(
    State(s): State<AppState>,
    Json(req): Json<OfferRequest>,
) -> Result<Response, Failure> {
    Ok(Json(s.relay.offer(req).await?).into_response())
}

async fn answer(
    State(s): State<AppState>,
    Json(req): Json<AnswerRequest>,
) -> Result<Response, Failure> {
    Ok(Json(s.relay.answer(req).await?).into_response())
}

async fn delete(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, Failure> {
    Ok(Json(s.relay.delete(&SessionId(id)).await?).into_response())
}

async fn stats(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, Failure> {
    Ok(Json(s.relay.stats(&SessionId(id)).await?).into_response())
}

async fn list(State(s): State<AppState>) -> Result<Response, Failure> {
    Ok(Json(s.relay.list().await?).into_response())
}

async fn metrics(State(s): State<AppState>) -> Result<Response, Failure> {
    Ok(Json(s.relay.metrics().await?).into_response())
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    from: Option<u64>,
    wait: Option<u64>,
}

async fn events(State(s): State<AppState>, Query(q): Query<EventsQuery>) -> Response {
    let wait = Duration::from_secs(q.wait.unwrap_or(0).min(MAX_WAIT_SECONDS));
    Json(s.feed.poll(q.from, wait).await).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{LegStats, SessionStats};
    use kubepbx_api::time::UnixMillis;

    fn timeout(id: &str) -> RelayEvent {
        let stats = SessionStats {
            session: SessionId(id.into()),
            caller: LegStats::default(),
            callee: LegStats::default(),
            recording: None,
            created_at: UnixMillis(0),
            last_packet_at: None,
        };
        RelayEvent::Timeout(SessionId(id.into()), stats)
    }

    #[tokio::test]
    async fn the_feed_numbers_events_and_wakes_pollers() {
        let feed = EventFeed::new();
        let start = feed.page(None);
        assert_eq!((start.next, start.events.len()), (0, 0));
        let waiter = {
            let feed = feed.clone();
            tokio::spawn(async move { feed.poll(Some(0), Duration::from_secs(5)).await })
        };
        tokio::task::yield_now().await;
        feed.push(timeout("a"));
        let page = waiter.await.unwrap();
        assert_eq!(page.events.len(), 1);
        assert_eq!(page.events[0].seq, 0);
        assert_eq!(page.next, 1);
        // Nothing new: an empty page after the wait.
        let page = feed.poll(Some(1), Duration::from_millis(20)).await;
        assert!(page.events.is_empty() && !page.missed);
        assert_eq!(page.next, 1);
    }

    #[test]
    fn a_poller_that_fell_behind_is_told() {
        let feed = EventFeed::new();
        for i in 0..FEED_KEEP + 3 {
            feed.push(timeout(&i.to_string()));
        }
        let page = feed.page(Some(0));
        assert!(page.missed);
        assert_eq!(page.events.len(), FEED_KEEP);
        assert_eq!(page.events[0].seq, 3);
        assert_eq!(page.next, (FEED_KEEP + 3) as u64);
        // A poller ahead of the feed (the relay restarted) starts over.
        let page = feed.page(Some(1_000_000));
        assert!(page.missed && page.events.is_empty());
    }
}
