//! [`MediaPool`]: one [`MediaControl`] over several media replicas reached over HTTP, so a SIP
//! registrar can place each call on the least-loaded live replica.
//!
//! The pool follows the set of live replicas as the cluster registry announces them (a
//! [`watch`] of [`MediaReplica`]s, replaced as a whole whenever it changes) and keeps which
//! replica holds which session.
//!
//! # Placement
//!
//! An `offer` for a session the pool has not placed yet goes to the replica with the fewest
//! sessions; ties go to the one with the most free port pairs, then to the lowest id.
//! Announcements lag (replicas report every second or so), so the load the pool ranks by is
//! the announced one plus what the pool itself placed there since that replica's last
//! announcement: the sessions are added, the port pairs they take (one per session — a lower
//! bound; each session really takes two) subtracted. This local addition is reset when a new
//! announcement for the replica arrives, which the pool sees as a change of the replica's entry
//! (an announcement identical to the previous one cannot be told apart from no announcement;
//! the addition then stays until the figures change — the pool overestimates, it never
//! piles calls up). A slot is taken when the replica is chosen, before its answer, so a burst
//! of concurrent offers spreads too; a failed offer gives it back.
//!
//! Two kinds of replica rank after every other, whatever their load: one that was unreachable
//! within the last [`SUSPECT_FOR`] (its lease may not have lapsed yet; every call would
//! otherwise wait for its connection to fail), then one that has no free port pair left
//! (announced, or refused an offer for lack of ports since its last announcement). They are
//! still tried when nothing better is left.
//!
//! When the chosen replica fails with [`MediaError::Unavailable`], [`MediaError::PortsExhausted`]
//! or [`MediaError::PortsInUse`], the next best is tried, each replica at most once per offer;
//! the last error is returned when all failed. Any other error is the SDP's fault and returns at
//! once.
//!
//! # Sessions
//!
//! Re-offers, `answer`, `stats` and `delete` go to the replica holding the session: the one the
//! pool placed it on, or the one [`MediaPool::place`] names (a session another registrar replica
//! created). A replica that left the set is still tried at its last known URL (it may be alive
//! with a lapsed lease). `delete` forgets the session, also when it fails; so does a
//! [`RelayEvent::Timeout`] or [`RelayEvent::Failed`] from its replica. Entries not used for
//! [`PLACEMENT_TTL`] are swept (at most once per [`SWEEP_EVERY`], on placement), so calls the
//! registrar forgot do not keep the map growing.
//!
//! # Events
//!
//! Every live replica's events are long-polled ([`HttpMedia::events`]) into one merged stream.
//! A poller stops when its replica leaves the set and starts when it (re)appears. An event from
//! a replica that does not hold the session (a replica that answered an offer too late, after
//! the pool had moved the call elsewhere) is dropped, so the registrar never ends a call for a
//! stray session.

use crate::control::HttpMedia;
use crate::{
    AnswerRequest, MediaControl, MediaError, MetricsSnapshot, OfferRequest, RelayEvent, SdpResult,
    SessionId, SessionStats,
};
use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Merged relay events queued for the owner.
const EVENT_QUEUE: usize = 1024;
/// A session not used (placed, offered, answered) for this long is forgotten by the sweep.
pub const PLACEMENT_TTL: Duration = Duration::from_secs(24 * 3600);
/// How often, at most, the sweep runs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// How long a replica that was unreachable ranks last for new calls.
pub const SUSPECT_FOR: Duration = Duration::from_secs(10);

/// One live media replica as announced in the cluster registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaReplica {
    /// Its name (the pod name); unique in the set.
    pub id: String,
    /// The base URL of its control API (`http://host:port`).
    pub control: String,
    /// Sessions it holds, as of its last announcement.
    pub sessions: u64,
    /// Port pairs it has free, as of its last announcement (each session takes two).
    pub free_port_pairs: u64,
}

/// A [`MediaControl`] spreading sessions over the live media replicas (see the module docs).
#[derive(Debug, Clone)]
pub struct MediaPool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The registry's announcements; looked at on every request.
    announced: watch::Receiver<Vec<MediaReplica>>,
    /// The live replicas by id.
    live: BTreeMap<String, Live>,
    /// Which replica holds which session.
    sessions: HashMap<SessionId, Placement>,
    /// Numbers announcements, so a placement knows whether it is counted in one yet.
    next_epoch: u64,
    last_sweep: Instant,
}

#[derive(Debug)]
struct Live {
    announced: MediaReplica,
    client: HttpMedia,
    /// Changes with every new announcement of this replica.
    epoch: u64,
    /// Sessions the pool placed here since the announcement (offers in flight included).
    placed: u64,
    /// An offer was refused for lack of ports since the announcement.
    full: bool,
    /// When a request last found it unreachable (cleared by a success).
    unreachable_at: Option<Instant>,
    /// `list`/`metrics` are failing on it (warned once per streak).
    failing: bool,
}

impl Live {
    fn new(announced: MediaReplica, epoch: u64) -> Live {
        Live {
            client: HttpMedia::new(announced.control.clone()),
            announced,
            epoch,
            placed: 0,
            full: false,
            unreachable_at: None,
            failing: false,
        }
    }

    /// Orders candidates for a new session: smaller is better.
    fn rank(&self, now: Instant) -> (bool, bool, u64, Reverse<u64>) {
        let suspect = self
            .unreachable_at
            .is_some_and(|at| now.duration_since(at) < SUSPECT_FOR);
        let free = if self.full {
            0
        } else {
            self.announced.free_port_pairs.saturating_sub(self.placed)
        };
        let sessions = self.announced.sessions.saturating_add(self.placed);
        (suspect, free == 0, sessions, Reverse(free))
    }
}

#[derive(Debug)]
struct Placement {
    replica: String,
    /// The replica's client when the pool knew its URL (kept after it leaves the set).
    client: Option<HttpMedia>,
    /// The replica's announcement epoch when the pool placed the session there (`None` when
    /// pinned with [`MediaPool::place`]: not counted in the pool's local addition).
    epoch: Option<u64>,
    touched: Instant,
}

/// Whether another replica may succeed where this one failed.
fn replica_at_fault(e: &MediaError) -> bool {
    matches!(
        e,
        MediaError::Unavailable(_) | MediaError::PortsExhausted | MediaError::PortsInUse(_)
    )
}

impl State {
    /// Takes in the registry's latest set when it changed.
    fn refresh(&mut self) {
        let set = {
            let announced = self.announced.borrow_and_update();
            if !announced.has_changed() {
                return;
            }
            announced.clone()
        };
        let mut old = std::mem::take(&mut self.live);
        for replica in set {
            if self.live.contains_key(&replica.id) {
                tracing::warn!(replica = %replica.id, "media replica announced twice; the first announcement counts");
                continue;
            }
            let live = match old.remove(&replica.id) {
                Some(known) if known.announced == replica => known,
                Some(mut known) => {
                    if known.announced.control != replica.control {
                        known.client = HttpMedia::new(replica.control.clone());
                    }
                    known.announced = replica.clone();
                    known.epoch = self.next_epoch;
                    self.next_epoch += 1;
                    known.placed = 0;
                    known.full = false;
                    known
                }
                None => {
                    let live = Live::new(replica.clone(), self.next_epoch);
                    self.next_epoch += 1;
                    live
                }
            };
            self.live.insert(replica.id, live);
        }
    }

    /// Takes a slot on the best replica not in `tried`: its id, client and epoch.
    fn reserve(&mut self, tried: &[String]) -> Option<(String, HttpMedia, u64)> {
        self.refresh();
        let now = Instant::now();
        let (id, live) = self
            .live
            .iter_mut()
            .filter(|(id, _)| !tried.contains(id))
            .min_by(|(a_id, a), (b_id, b)| {
                a.rank(now).cmp(&b.rank(now)).then_with(|| a_id.cmp(b_id))
            })?;
        live.placed += 1;
        Some((id.clone(), live.client.clone(), live.epoch))
    }

    /// Gives back a slot taken by [`Self::reserve`] or counted for a placed session.
    fn release(&mut self, replica: &str, epoch: Option<u64>) {
        if let Some(live) = self.live.get_mut(replica)
            && Some(live.epoch) == epoch
        {
            live.placed = live.placed.saturating_sub(1);
        }
    }

    /// Where requests for `session` go: `Ok(None)` when unknown.
    fn route(&mut self, session: &SessionId) -> Result<Option<HttpMedia>, MediaError> {
        self.refresh();
        let Some(placement) = self.sessions.get_mut(session) else {
            return Ok(None);
        };
        placement.touched = Instant::now();
        if let Some(live) = self.live.get(&placement.replica) {
            // Its current URL: the one the pool knew may be stale.
            return Ok(Some(live.client.clone()));
        }
        placement.client.clone().map(Some).ok_or_else(|| {
            MediaError::Unavailable(format!(
                "media replica {} (holding session {session}) is not in the cluster registry",
                placement.replica
            ))
        })
    }

    /// Forgets `session`; its client as [`Self::route`] would give it.
    fn forget(&mut self, session: &SessionId) -> Result<Option<HttpMedia>, MediaError> {
        let route = self.route(session);
        if let Some(placement) = self.sessions.remove(session) {
            self.release(&placement.replica, placement.epoch);
        }
        route
    }

    fn insert(&mut self, session: SessionId, placement: Placement) {
        let now = placement.touched;
        if now.duration_since(self.last_sweep) >= SWEEP_EVERY {
            self.last_sweep = now;
            let before = self.sessions.len();
            self.sessions
                .retain(|_, p| now.duration_since(p.touched) < PLACEMENT_TTL);
            let swept = before - self.sessions.len();
            if swept > 0 {
                tracing::info!(
                    swept,
                    "forgot media sessions unused for {}h",
                    PLACEMENT_TTL.as_secs() / 3600
                );
            }
        }
        self.sessions.insert(session, placement);
    }

    /// Notes how a request to `replica` went (`Some(error)` when the replica was at fault).
    fn outcome(&mut self, replica: &str, epoch: u64, error: Option<&MediaError>) {
        let Some(live) = self.live.get_mut(replica) else {
            return;
        };
        match error {
            None => live.unreachable_at = None,
            Some(MediaError::Unavailable(_)) => live.unreachable_at = Some(Instant::now()),
            Some(_) if live.epoch == epoch => live.full = true,
            Some(_) => {}
        }
    }

    /// Whether an event from `replica` is for its owner; forgets a timed-out session.
    fn accept(&mut self, replica: &str, event: &RelayEvent) -> bool {
        let (RelayEvent::Timeout(session, _) | RelayEvent::Failed(session, _, _)) = event;
        match self.sessions.get(session) {
            Some(p) if p.replica != replica => {
                tracing::info!(%session, stray = %replica, holder = %p.replica, "ignored a media event from a replica that does not hold the session");
                false
            }
            Some(_) => {
                if let Some(p) = self.sessions.remove(session) {
                    self.release(&p.replica, p.epoch);
                }
                true
            }
            None => true,
        }
    }

    /// Notes how `list`/`metrics` went on `replica`; logs the start and end of failure streaks.
    fn reached(&mut self, replica: &str, result: Result<(), &MediaError>) {
        let Some(live) = self.live.get_mut(replica) else {
            return;
        };
        match result {
            Ok(()) if live.failing => {
                live.failing = false;
                tracing::info!(%replica, "media replica reachable again");
            }
            Ok(()) => {}
            Err(e) if !live.failing => {
                live.failing = true;
                tracing::warn!(%replica, error = %e, "media replica left out of session lists and metrics until it answers again");
            }
            Err(_) => {}
        }
    }
}

impl MediaPool {
    /// Follows `replicas` (the current set of live replicas, replaced as a whole whenever it
    /// changes); returns the pool and one merged stream of every replica's relay events. The
    /// event pollers run on `tasks` until `shutdown` (or until the stream is dropped).
    pub fn new(
        replicas: watch::Receiver<Vec<MediaReplica>>,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> (MediaPool, mpsc::Receiver<RelayEvent>) {
        let mut announced = replicas.clone();
        // Seen as changed on the first request, whatever the receiver saw before.
        announced.mark_changed();
        let pool = MediaPool {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    announced,
                    live: BTreeMap::new(),
                    sessions: HashMap::new(),
                    next_epoch: 0,
                    last_sweep: Instant::now(),
                }),
            }),
        };
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let follower = Follower {
            pool: pool.clone(),
            shutdown,
            tasks: tasks.clone(),
            merged: tx,
            pollers: HashMap::new(),
        };
        tasks.spawn(follower.run(replicas));
        (pool, rx)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pins `session` to replica `id` (a session another registrar replica created, whose call
    /// record names its media replica): later requests for the session go there. A replica not
    /// in the set is reached once it (re)appears; until then its requests fail as unavailable.
    pub fn place(&self, session: &SessionId, replica_id: &str) {
        let mut state = self.lock();
        state.refresh();
        let client = match state.live.get(replica_id) {
            Some(live) => Some(live.client.clone()),
            // Re-pinned to where it already is: keep the URL known for it.
            None => state
                .sessions
                .get(session)
                .filter(|p| p.replica == replica_id)
                .and_then(|p| p.client.clone()),
        };
        if let Some(old) = state.sessions.remove(session) {
            state.release(&old.replica, old.epoch);
        }
        let placement = Placement {
            replica: replica_id.to_owned(),
            client,
            epoch: None,
            touched: Instant::now(),
        };
        state.insert(session.clone(), placement);
    }

    /// Which replica holds `session`, if known.
    pub fn replica_of(&self, session: &SessionId) -> Option<String> {
        self.lock().sessions.get(session).map(|p| p.replica.clone())
    }

    /// Every live replica's id and client.
    fn live(&self) -> Vec<(String, HttpMedia)> {
        let mut state = self.lock();
        state.refresh();
        state
            .live
            .iter()
            .map(|(id, live)| (id.clone(), live.client.clone()))
            .collect()
    }

    /// `ask` of every live replica at once, in id order; unreachable ones left out (and logged).
    async fn gather<T, F>(&self, ask: impl Fn(HttpMedia) -> F) -> Vec<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, MediaError>> + Send + 'static,
    {
        let replicas = self.live();
        let mut requests = JoinSet::new();
        for (n, (_, client)) in replicas.iter().enumerate() {
            let request = ask(client.clone());
            requests.spawn(async move { (n, request.await) });
        }
        let mut answers: Vec<Option<Result<T, MediaError>>> =
            replicas.iter().map(|_| None).collect();
        while let Some(joined) = requests.join_next().await {
            match joined {
                Ok((n, answer)) => answers[n] = Some(answer),
                Err(e) => tracing::warn!(error = %e, "media replica request task failed"),
            }
        }
        let mut state = self.lock();
        let mut found = Vec::with_capacity(answers.len());
        for ((id, _), answer) in replicas.iter().zip(answers) {
            match answer {
                Some(Ok(t)) => {
                    state.reached(id, Ok(()));
                    found.push(t);
                }
                Some(Err(e)) => state.reached(id, Err(&e)),
                None => {}
            }
        }
        found
    }
}

#[async_trait::async_trait]
impl MediaControl for MediaPool {
    async fn offer(&self, req: OfferRequest) -> Result<SdpResult, MediaError> {
        // A re-offer goes where the session is.
        let placed = self.lock().route(&req.session)?;
        if let Some(client) = placed {
            return client.offer(req).await;
        }
        let mut tried: Vec<String> = Vec::new();
        let mut last_error = None;
        loop {
            let Some((id, client, epoch)) = self.lock().reserve(&tried) else {
                break;
            };
            let result = client.offer(req.clone()).await;
            let mut state = self.lock();
            match result {
                Ok(sdp) => {
                    state.outcome(&id, epoch, None);
                    let placement = Placement {
                        replica: id,
                        client: Some(client),
                        epoch: Some(epoch),
                        touched: Instant::now(),
                    };
                    if let Some(old) = state.sessions.remove(&req.session) {
                        // A concurrent offer for the same session placed it first.
                        state.release(&old.replica, old.epoch);
                    }
                    state.insert(req.session, placement);
                    return Ok(sdp);
                }
                Err(e) => {
                    state.release(&id, Some(epoch));
                    if !replica_at_fault(&e) {
                        return Err(e);
                    }
                    state.outcome(&id, epoch, Some(&e));
                    tracing::warn!(replica = %id, session = %req.session, error = %e, "media replica refused a new session; trying the next one");
                    tried.push(id);
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| {
            MediaError::Unavailable(
                "no media replica is available (none is announced in the cluster registry)"
                    .to_owned(),
            )
        }))
    }

    async fn answer(&self, req: AnswerRequest) -> Result<SdpResult, MediaError> {
        let client = self
            .lock()
            .route(&req.session)?
            .ok_or(MediaError::UnknownSession)?;
        client.answer(req).await
    }

    async fn delete(&self, session: &SessionId) -> Result<Option<SessionStats>, MediaError> {
        let Some(client) = self.lock().forget(session)? else {
            return Ok(None);
        };
        client.delete(session).await
    }

    async fn stats(&self, session: &SessionId) -> Result<Option<SessionStats>, MediaError> {
        let Some(client) = self.lock().route(session)? else {
            return Ok(None);
        };
        client.stats(session).await
    }

    async fn list(&self) -> Result<Vec<SessionStats>, MediaError> {
        let lists = self
            .gather(|client| async move { client.list().await })
            .await;
        Ok(lists.into_iter().flatten().collect())
    }

    async fn metrics(&self) -> Result<MetricsSnapshot, MediaError> {
        let all = self
            .gather(|client| async move { client.metrics().await })
            .await;
        Ok(all.iter().fold(MetricsSnapshot::default(), sum))
    }
}

/// `a + b`, counter by counter (every field named: a new one must be added here).
fn sum(a: MetricsSnapshot, b: &MetricsSnapshot) -> MetricsSnapshot {
    let MetricsSnapshot {
        rtp_relayed,
        rtp_bytes_relayed,
        rtcp_relayed,
        dropped_not_media,
        dropped_wrong_source,
        dropped_no_destination,
        send_errors,
        lost,
        sessions_started,
        sessions_ended,
        sessions_timed_out,
        recording_dropped,
        dropped_unknown_payload,
        webrtc_dropped,
        sessions_failed,
        sessions_moved,
        sessions_active,
        port_pairs_free,
        port_pairs_total,
    } = *b;
    MetricsSnapshot {
        rtp_relayed: a.rtp_relayed + rtp_relayed,
        rtp_bytes_relayed: a.rtp_bytes_relayed + rtp_bytes_relayed,
        rtcp_relayed: a.rtcp_relayed + rtcp_relayed,
        dropped_not_media: a.dropped_not_media + dropped_not_media,
        dropped_wrong_source: a.dropped_wrong_source + dropped_wrong_source,
        dropped_no_destination: a.dropped_no_destination + dropped_no_destination,
        send_errors: a.send_errors + send_errors,
        lost: a.lost + lost,
        sessions_started: a.sessions_started + sessions_started,
        sessions_ended: a.sessions_ended + sessions_ended,
        sessions_timed_out: a.sessions_timed_out + sessions_timed_out,
        recording_dropped: a.recording_dropped + recording_dropped,
        dropped_unknown_payload: a.dropped_unknown_payload + dropped_unknown_payload,
        webrtc_dropped: a.webrtc_dropped + webrtc_dropped,
        sessions_failed: a.sessions_failed + sessions_failed,
        sessions_moved: a.sessions_moved + sessions_moved,
        sessions_active: a.sessions_active + sessions_active,
        port_pairs_free: a.port_pairs_free + port_pairs_free,
        port_pairs_total: a.port_pairs_total + port_pairs_total,
    }
}

/// The task that keeps one event poller per live replica.
struct Follower {
    pool: MediaPool,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    merged: mpsc::Sender<RelayEvent>,
    /// Replica id → (control URL, its poller's token).
    pollers: HashMap<String, (String, CancellationToken)>,
}

impl Follower {
    async fn run(mut self, mut replicas: watch::Receiver<Vec<MediaReplica>>) {
        let mut following = true;
        loop {
            if following {
                let set = replicas.borrow_and_update().clone();
                self.reconcile(&set);
            }
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                () = self.merged.closed() => break,
                changed = replicas.changed(), if following => {
                    if changed.is_err() {
                        // The registry stopped: keep polling the last set until shutdown.
                        following = false;
                    }
                }
            }
        }
        for (_, token) in self.pollers.values() {
            token.cancel();
        }
    }

    /// Stops the pollers of replicas that left (or moved), starts those of new ones.
    fn reconcile(&mut self, set: &[MediaReplica]) {
        self.pollers.retain(|id, (url, token)| {
            let keep = set.iter().any(|r| &r.id == id && &r.control == url);
            if !keep {
                token.cancel();
            }
            keep
        });
        for replica in set {
            if self.pollers.contains_key(&replica.id) {
                continue;
            }
            let token = self.shutdown.child_token();
            let client = HttpMedia::new(replica.control.clone());
            let events = client.events(token.clone(), &self.tasks);
            self.tasks.spawn(forward(
                replica.id.clone(),
                events,
                self.merged.clone(),
                self.pool.clone(),
                token.clone(),
            ));
            self.pollers
                .insert(replica.id.clone(), (replica.control.clone(), token));
        }
    }
}

/// Moves one replica's events to the merged stream until `stop`.
async fn forward(
    replica: String,
    mut events: mpsc::Receiver<RelayEvent>,
    merged: mpsc::Sender<RelayEvent>,
    pool: MediaPool,
    stop: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            event = events.recv() => match event {
                Some(event) => event,
                None => return,
            },
        };
        if !pool.lock().accept(&replica, &event) {
            continue;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            sent = merged.send(event) => if sent.is_err() {
                return;
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LegStats;
    use kubepbx_api::time::UnixMillis;

    fn replica(id: &str, sessions: u64, free_port_pairs: u64) -> MediaReplica {
        MediaReplica {
            id: id.to_owned(),
            control: format!("http://{id}:9090"),
            sessions,
            free_port_pairs,
        }
    }

    fn state(set: Vec<MediaReplica>) -> (watch::Sender<Vec<MediaReplica>>, State) {
        let (tx, mut announced) = watch::channel(set);
        announced.mark_changed();
        let state = State {
            announced,
            live: BTreeMap::new(),
            sessions: HashMap::new(),
            next_epoch: 0,
            last_sweep: Instant::now(),
        };
        (tx, state)
    }

    fn pick(state: &mut State) -> String {
        state.reserve(&[]).unwrap().0
    }

    fn placed(state: &mut State, session: &str) -> String {
        let (replica, client, epoch) = state.reserve(&[]).unwrap();
        let placement = Placement {
            replica: replica.clone(),
            client: Some(client),
            epoch: Some(epoch),
            touched: Instant::now(),
        };
        state.insert(SessionId(session.into()), placement);
        replica
    }

    fn timeout(session: &str) -> RelayEvent {
        let stats = SessionStats {
            session: SessionId(session.into()),
            caller: LegStats::default(),
            callee: LegStats::default(),
            recording: None,
            created_at: UnixMillis(0),
            last_packet_at: None,
        };
        RelayEvent::Timeout(SessionId(session.into()), stats)
    }

    #[test]
    fn local_additions_last_until_the_replica_announces_anew() {
        let (tx, mut s) = state(vec![replica("a", 2, 10), replica("b", 4, 10)]);
        assert_eq!(placed(&mut s, "1"), "a");
        assert_eq!(placed(&mut s, "2"), "a");
        // a: 2 + 2 placed; b: 4 → tie on sessions, a has fewer free pairs left.
        assert_eq!(placed(&mut s, "3"), "b");
        // The same set again: no new announcement, the additions stay.
        tx.send_replace(vec![replica("a", 2, 10), replica("b", 4, 10)]);
        assert_eq!(pick(&mut s), "a"); // a 4, b 5 (the pick itself counts).
        // a announces its calls: its addition is reset, b's stays.
        tx.send_replace(vec![replica("a", 5, 6), replica("b", 4, 10)]);
        s.refresh();
        assert_eq!((s.live["a"].placed, s.live["b"].placed), (0, 1));
        // A deleted session placed before a's announcement is not taken off a's figures again.
        s.forget(&SessionId("1".into())).unwrap();
        assert_eq!(s.live["a"].placed, 0);
        // One placed since b's announcement is.
        s.forget(&SessionId("3".into())).unwrap();
        assert_eq!(s.live["b"].placed, 0);
    }

    #[test]
    fn unreachable_and_full_replicas_rank_last() {
        let (_tx, mut s) = state(vec![
            replica("a", 0, 10),
            replica("b", 1, 0),
            replica("c", 7, 10),
        ]);
        let (a, _, epoch) = s.reserve(&[]).unwrap();
        s.release(&a, Some(epoch));
        s.outcome(&a, epoch, Some(&MediaError::Unavailable("down".into())));
        // b announced no free port pair; c is the only good one.
        assert_eq!(pick(&mut s), "c");
        let (c, _, epoch) = s.reserve(&["c".to_owned()]).unwrap();
        assert_eq!(c, "b");
        s.outcome(&c, epoch, None);
        // Tried everything: nothing left.
        let all = ["a", "b", "c"].map(String::from);
        assert!(s.reserve(&all).is_none());
    }

    #[test]
    fn timeouts_from_a_replica_not_holding_the_session_are_dropped() {
        let (_tx, mut s) = state(vec![replica("a", 0, 10), replica("b", 5, 10)]);
        assert_eq!(placed(&mut s, "x"), "a");
        assert!(!s.accept("b", &timeout("x")));
        assert!(s.sessions.contains_key(&SessionId("x".into())));
        assert!(s.accept("a", &timeout("x")));
        assert!(s.sessions.is_empty());
        assert_eq!(s.live["a"].placed, 0);
        // Sessions the pool does not know (another registrar's) pass.
        assert!(s.accept("b", &timeout("y")));
    }

    #[test]
    fn the_sweep_forgets_sessions_unused_for_a_day() {
        let (_tx, mut s) = state(vec![replica("a", 0, 10)]);
        let Some(long_ago) = Instant::now().checked_sub(PLACEMENT_TTL + SWEEP_EVERY) else {
            return; // The clock starts too recently on this machine to tell.
        };
        s.last_sweep = long_ago;
        let old = Placement {
            replica: "a".into(),
            client: None,
            epoch: None,
            touched: long_ago,
        };
        s.sessions.insert(SessionId("old".into()), old);
        placed(&mut s, "new");
        assert!(!s.sessions.contains_key(&SessionId("old".into())));
        assert!(s.sessions.contains_key(&SessionId("new".into())));
    }

    #[test]
    fn metrics_add_up() {
        let one = MetricsSnapshot {
            rtp_relayed: 3,
            sessions_active: 1,
            port_pairs_total: 10,
            ..MetricsSnapshot::default()
        };
        let two = sum(one, &one);
        assert_eq!(
            (two.rtp_relayed, two.sessions_active, two.port_pairs_total),
            (6, 2, 20)
        );
    }
}
