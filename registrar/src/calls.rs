//! Calls as the API shows them: live calls (from the proxy, with the relay's counters merged in
//! by the HTTP side) and call detail records of finished calls.
//!
//! In a cluster the drive loop also feeds the calls it routes to the shared store as
//! [`CallChange`]s ([`CallFeed`]), and the API lists the other replicas' calls from there
//! ([`ClusterCalls`]).
//!
//! Finished calls are kept in memory (the newest [`CDR_KEEP`]) and handed to where the
//! registrar keeps them ([`CdrStorage`]), so a restart keeps the history: `kubepbx up` appends
//! them to a file as JSON lines from a writer task (rotated to `<name>.1` past
//! [`CDR_FILE_MAX`] bytes); a cluster's replicas write them to the shared store, and the API
//! lists the whole PBX's history as each replica follows it in memory
//! ([`ClusterCalls::history`]), merged with the replica's own calls the store does not have yet
//! ([`merge_history`]).

use kubepbx_api::calls::{CallPhase, CallRecord};
use kubepbx_api::cdrs::{CdrEntry, CdrRecord};
use kubepbx_api::time::UnixMillis;
use kubepbx_media::{LegStats, SessionStats};
use kubepbx_sip::endpoint::{Call, CallState, CallSummary};
use serde::{Deserialize, Serialize};
use std::collections::{HashSet, VecDeque};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

/// Finished calls kept in memory for `GET /api/v1/cdrs`.
pub const CDR_KEEP: usize = 1000;
/// The CDR file is rotated past this size.
pub const CDR_FILE_MAX: u64 = 16 << 20;
/// CDR lines queued for the writer task; beyond that they are dropped (and counted in the log).
const CDR_QUEUE: usize = 1024;
/// Finished calls queued for the cluster's store (the same bound as for the file's writer).
pub const CDR_SAVE_QUEUE: usize = CDR_QUEUE;
/// Call changes queued for the cluster's store; beyond that the next change resends them all.
pub const CALL_FEED_QUEUE: usize = 4096;

/// A change to the calls this replica routes, for the cluster's store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallChange {
    /// A call started or changed (answered).
    Upsert(CallRecord),
    /// A call ended.
    Ended(String),
    /// Every call in progress (after changes were dropped for a full queue).
    All(Vec<CallRecord>),
}

/// The other replicas' calls, as the cluster's store shares them.
#[async_trait::async_trait]
pub trait ClusterCalls: Send + Sync + std::fmt::Debug + 'static {
    /// Calls in progress that other replicas route.
    fn others(&self) -> Vec<CallRecord>;
    /// Asks the replica that routes call `id` to hang it up and waits until it has: `Ok(false)`
    /// when no other replica has such a call, `Err` with the reason when the owner did not
    /// hang up in time or the store failed.
    async fn hangup(&self, id: &str) -> Result<bool, String>;
    /// Every replica's finished calls as the store shares them, newest first, at most `limit`:
    /// a memory read (while the store cannot be reached, what was last read from it).
    fn history(&self, limit: usize) -> Vec<CdrView>;
}

/// Where the drive loop sends [`CallChange`]s; it never waits for room.
#[derive(Debug)]
pub struct CallFeed {
    tx: mpsc::Sender<CallChange>,
    /// This replica's id (the owner in every record).
    owner: String,
    /// Changes were dropped: the next send is everything.
    lost: bool,
}

impl CallFeed {
    /// A feed of the calls `owner` routes into `tx`.
    pub fn new(tx: mpsc::Sender<CallChange>, owner: String) -> CallFeed {
        CallFeed {
            tx,
            owner,
            lost: false,
        }
    }

    /// The shared record of `call`.
    pub fn record(&self, call: &Call) -> CallRecord {
        record_of(call, &self.owner)
    }

    /// Sends `change`, or — after a full queue dropped one — every call (`all`) first.
    pub fn send<'a>(&mut self, change: CallChange, all: impl FnOnce() -> Vec<&'a Call>) {
        if self.lost {
            let every = all().into_iter().map(|c| self.record(c)).collect();
            if self.tx.try_send(CallChange::All(every)).is_err() {
                return;
            }
            self.lost = false;
            // `All` already holds the state `change` describes.
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(change) {
            tracing::warn!("the shared call list is behind; it will be sent again in full");
            self.lost = true;
        }
    }
}

/// The record of a call `owner` routes (the media replica is filled in by whoever places it).
fn record_of(call: &Call, owner: &str) -> CallRecord {
    CallRecord {
        id: call.name.clone(),
        owner: owner.to_owned(),
        from: call.caller.user.clone(),
        to: call.callee.user.clone(),
        state: match call.state {
            CallState::Ringing => CallPhase::Ringing,
            CallState::Answered => CallPhase::Answered,
        },
        started_at: call.started_at,
        answered_at: call.answered_at,
        media: None,
        session: call.session().map(str::to_owned),
    }
}

/// A call (this replica's or another's) at `now`, as `GET /api/v1/calls` lists it (media
/// counters filled in by the HTTP side).
pub fn view_of(record: &CallRecord, now: UnixMillis) -> CallView {
    CallView {
        id: record.id.clone(),
        from: record.from.clone(),
        to: record.to.clone(),
        state: record.state.as_str().to_owned(),
        started_at: record.started_at.to_rfc3339(),
        answered_at: record.answered_at.map(UnixMillis::to_rfc3339),
        duration_seconds: seconds_between(record.answered_at, now),
        media: None,
        recording: None,
        session: record.session.clone(),
    }
}

/// One live call, as listed by `GET /api/v1/calls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallView {
    /// The call's id (for `DELETE /api/v1/calls/{id}`).
    pub id: String,
    /// The caller's extension number.
    pub from: String,
    /// The callee's extension number.
    pub to: String,
    /// `ringing`, `answered`, or `ended` in call records.
    pub state: String,
    /// When the INVITE arrived (RFC 3339).
    pub started_at: String,
    /// When the callee answered.
    pub answered_at: Option<String>,
    /// Talk time: seconds since the answer (until the end in call records); 0 before it.
    pub duration_seconds: u64,
    /// Per-leg media counters, when the relay carries the call's media.
    pub media: Option<MediaView>,
    /// The recording's id (`GET /api/v1/recordings/{id}`), when the call is recorded.
    pub recording: Option<String>,
    /// The relay session (internal).
    #[serde(skip)]
    pub session: Option<String>,
}

/// Media counters of a call: one leg per party.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaView {
    /// The caller's leg ("in" is what the caller sent to the relay).
    pub caller: LegStats,
    /// The callee's leg.
    pub callee: LegStats,
}

impl MediaView {
    /// The legs of a relay session.
    pub fn of(stats: &SessionStats) -> MediaView {
        MediaView {
            caller: stats.caller,
            callee: stats.callee,
        }
    }
}

/// One finished call, as listed by `GET /api/v1/cdrs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CdrView {
    /// Everything a live call shows (state `ended`).
    #[serde(flatten)]
    pub call: CallView,
    /// When it ended.
    pub ended_at: String,
    /// Why (`caller-hangup`, `busy`, … see `docs/api.md`).
    pub end_reason: String,
    /// The final SIP status: 200 for an answered call, else what the caller got.
    pub end_code: u16,
}

impl CdrRecord for CdrView {
    fn call_id(&self) -> &str {
        &self.call.id
    }
}

/// The newest `limit` finished calls of the cluster: `shared`, as the store has them, and this
/// replica's `own` that are not among them (ended a moment ago, or while the store cannot be
/// reached), newest first (by end, then id: the store's key order), each call once.
pub fn merge_history(shared: Vec<CdrView>, own: Vec<CdrView>, limit: usize) -> Vec<CdrView> {
    let unsaved: Vec<CdrView> = {
        let known: HashSet<&str> = shared.iter().map(|c| c.call.id.as_str()).collect();
        own.into_iter()
            .filter(|c| !known.contains(c.call.id.as_str()))
            .collect()
    };
    let mut list = shared;
    if !unsaved.is_empty() {
        list.extend(unsaved);
        list.sort_by(|a, b| (&b.ended_at, &b.call.id).cmp(&(&a.ended_at, &a.call.id)));
    }
    list.truncate(limit);
    list
}

fn seconds_between(from: Option<UnixMillis>, to: UnixMillis) -> u64 {
    from.map_or(0, |at| at.until(to).as_secs())
}

/// A live call of this replica at `now` (media filled in later by whoever can ask the relay).
pub fn call_view(call: &Call, now: UnixMillis) -> CallView {
    view_of(&record_of(call, ""), now)
}

/// The record of a finished call, with the relay's final counters when there are some.
pub fn cdr(summary: &CallSummary, media: Option<&SessionStats>) -> CdrView {
    CdrView {
        call: CallView {
            id: summary.id.clone(),
            from: summary.caller.user.clone(),
            to: summary.callee.user.clone(),
            state: "ended".to_owned(),
            started_at: summary.started_at.to_rfc3339(),
            answered_at: summary.answered_at.map(UnixMillis::to_rfc3339),
            duration_seconds: seconds_between(summary.answered_at, summary.ended_at),
            media: media.map(MediaView::of),
            recording: media.and_then(|m| m.recording.clone()),
            session: summary.session.clone(),
        },
        ended_at: summary.ended_at.to_rfc3339(),
        end_reason: summary.reason.as_str().to_owned(),
        end_code: summary.code,
    }
}

/// Where finished calls are kept besides the newest in memory.
#[derive(Debug)]
pub enum CdrStorage {
    /// Nowhere: a restart forgets them.
    Memory,
    /// Appended to this file as JSON lines, and read back at start.
    File(PathBuf),
    /// Handed to this queue, whose reader writes them to the cluster's store.
    Shared(mpsc::Sender<CdrEntry>),
}

/// The newest call records, and where they are saved.
#[derive(Debug)]
pub struct CdrLog {
    recent: VecDeque<CdrView>,
    keep: usize,
    sink: Option<mpsc::Sender<CdrEntry>>,
    dropped: u64,
}

impl CdrLog {
    /// A log of the newest `keep` records that hands each new one to `sink` (if any).
    pub fn new(keep: usize, sink: Option<mpsc::Sender<CdrEntry>>) -> CdrLog {
        CdrLog {
            recent: VecDeque::new(),
            keep,
            sink,
            dropped: 0,
        }
    }

    /// A log that loads the newest `keep` records of `path` (if it exists) and appends new
    /// ones to it from a task on `tasks`. Unreadable lines are skipped with a warning; a file
    /// that cannot be read at all is an error (nothing is overwritten).
    pub fn open(
        path: PathBuf,
        keep: usize,
        tasks: &tokio_util::task::TaskTracker,
    ) -> std::io::Result<CdrLog> {
        let (tx, rx) = mpsc::channel(CDR_QUEUE);
        let mut log = CdrLog::new(keep, Some(tx));
        log.load(&path)?;
        tasks.spawn(write_loop(path, rx));
        Ok(log)
    }

    fn load(&mut self, path: &Path) -> std::io::Result<()> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut bad = 0usize;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<CdrView>(line) {
                Ok(cdr) => self.remember(cdr),
                Err(_) => bad += 1,
            }
        }
        if bad > 0 {
            tracing::warn!(file = %path.display(), lines = bad, "skipped unreadable call records");
        }
        Ok(())
    }

    fn remember(&mut self, cdr: CdrView) {
        if self.recent.len() == self.keep {
            self.recent.pop_front();
        }
        self.recent.push_back(cdr);
    }

    /// Adds the record of a finished call, with the relay's final counters when there are
    /// some, and saves it.
    pub fn push(&mut self, summary: &CallSummary, media: Option<&SessionStats>) {
        let record = cdr(summary, media);
        if let Some(sink) = &self.sink
            && let Ok(json) = serde_json::to_vec(&record)
        {
            let entry = CdrEntry {
                id: summary.id.clone(),
                ended: summary.ended_at,
                json,
            };
            if sink.try_send(entry).is_err() {
                self.dropped += 1;
                tracing::warn!(
                    dropped = self.dropped,
                    "call records are not being saved fast enough; a record was not saved"
                );
            }
        }
        self.remember(record);
    }

    /// The records, newest first.
    pub fn newest_first(&self) -> Vec<CdrView> {
        self.recent.iter().rev().cloned().collect()
    }
}

/// Appends lines to `path` (kept open between batches), rotating it past [`CDR_FILE_MAX`].
/// Lines a write failed for (disk full, out of descriptors) are kept, up to [`CDR_KEEP`]
/// of them, and written first when the next write succeeds; they are retried every few seconds
/// even when no new record comes.
async fn write_loop(path: PathBuf, mut rx: mpsc::Receiver<CdrEntry>) {
    let mut file: Option<std::fs::File> = None;
    let mut lines: Vec<CdrEntry> = Vec::new();
    loop {
        // Wait for records; with failed ones waiting, no longer than RETRY.
        let closed = if lines.is_empty() {
            rx.recv_many(&mut lines, 256).await == 0
        } else {
            matches!(
                tokio::time::timeout(RETRY, rx.recv_many(&mut lines, 256)).await,
                Ok(0)
            )
        };
        if lines.is_empty() {
            return;
        }
        let target = path.clone();
        let batch = std::mem::take(&mut lines);
        let mut open = file.take();
        let written = tokio::task::spawn_blocking(move || {
            let result = append(&target, &mut open, &batch);
            (result, open, batch)
        })
        .await;
        match written {
            Ok((Ok(()), open, _)) => file = open,
            Ok((Err(e), _, mut failed)) => {
                tracing::error!(file = %path.display(), error = %e, lines = failed.len(),
                    "writing call records failed; retrying");
                if failed.len() > CDR_KEEP {
                    failed.drain(..failed.len() - CDR_KEEP);
                }
                lines = failed;
            }
            Err(e) => tracing::error!(error = %e, "the call record writer panicked"),
        }
        if closed {
            return;
        }
    }
}

/// How long failed call records wait before they are written again.
const RETRY: std::time::Duration = std::time::Duration::from_secs(5);

fn append(
    path: &Path,
    file: &mut Option<std::fs::File>,
    lines: &[CdrEntry],
) -> std::io::Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() > CDR_FILE_MAX) {
        let mut old = path.as_os_str().to_owned();
        old.push(".1");
        std::fs::rename(path, old)?;
        *file = None;
    }
    let open = match file {
        Some(f) => f,
        None => file.insert(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
    };
    let mut text = Vec::with_capacity(lines.iter().map(|l| l.json.len() + 1).sum());
    for line in lines {
        text.extend_from_slice(&line.json);
        text.push(b'\n');
    }
    open.write_all(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubepbx_api::records::UserKey;
    use kubepbx_sip::endpoint::EndReason;

    fn summary(id: &str) -> CallSummary {
        CallSummary {
            id: id.to_owned(),
            caller: UserKey::new("pbx.example.com", "1001"),
            callee: UserKey::new("pbx.example.com", "1002"),
            started_at: UnixMillis(1_795_000_000_000),
            answered_at: Some(UnixMillis(1_795_000_002_000)),
            ended_at: UnixMillis(1_795_000_062_500),
            code: 200,
            reason: EndReason::CallerHangup,
            session: Some("c;t".into()),
        }
    }

    #[test]
    fn a_record_has_the_call_fields_plus_its_end() {
        let json = serde_json::to_value(cdr(&summary("up-1-1"), None)).unwrap();
        assert_eq!(json["id"], "up-1-1");
        assert_eq!(json["from"], "1001");
        assert_eq!(json["to"], "1002");
        assert_eq!(json["state"], "ended");
        assert_eq!(json["durationSeconds"], 60);
        assert_eq!(json["endReason"], "caller-hangup");
        assert_eq!(json["endCode"], 200);
        assert!(json["media"].is_null());
        assert!(json.get("session").is_none());
    }

    /// The record of call `id` that ended `secs` after the first.
    fn ended(id: &str, secs: u64) -> CdrView {
        let mut summary = summary(id);
        summary.ended_at = UnixMillis(1_795_000_062_000 + secs * 1000);
        cdr(&summary, None)
    }

    #[test]
    fn the_clusters_history_takes_this_replicas_unsaved_calls_once_newest_first() {
        let ids =
            |list: Vec<CdrView>| -> Vec<String> { list.into_iter().map(|c| c.call.id).collect() };
        let shared = vec![ended("b-1-3", 3), ended("a-1-2", 2), ended("b-1-1", 1)];
        // a-1-2 is saved; a-1-4 is not yet, a-1-0 is older than everything shared.
        let own = vec![ended("a-1-4", 4), ended("a-1-2", 2), ended("a-1-0", 0)];
        assert_eq!(
            ids(merge_history(shared.clone(), own.clone(), 10)),
            ["a-1-4", "b-1-3", "a-1-2", "b-1-1", "a-1-0"]
        );
        assert_eq!(
            ids(merge_history(shared.clone(), own, 2)),
            ["a-1-4", "b-1-3"]
        );
        // Calls that ended in the same second sort by id, as their keys do.
        let same = vec![ended("c-1-1", 5)];
        assert_eq!(
            ids(merge_history(
                same,
                vec![ended("a-1-9", 5), ended("d-1-1", 5)],
                10
            )),
            ["d-1-1", "c-1-1", "a-1-9"]
        );
        assert_eq!(ids(merge_history(shared, Vec::new(), 10)).len(), 3);
    }

    #[tokio::test]
    async fn records_survive_a_restart_newest_first_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdrs.jsonl");
        let tasks = tokio_util::task::TaskTracker::new();
        let mut log = CdrLog::open(path.clone(), 2, &tasks).unwrap();
        for id in ["a", "b", "c"] {
            log.push(&summary(id), None);
        }
        let ids = |log: &CdrLog| -> Vec<String> {
            log.newest_first().into_iter().map(|c| c.call.id).collect()
        };
        assert_eq!(ids(&log), ["c", "b"]);
        drop(log);
        tasks.close();
        tasks.wait().await;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"not json\n")
            .unwrap();
        let tasks = tokio_util::task::TaskTracker::new();
        let log = CdrLog::open(path, 2, &tasks).unwrap();
        assert_eq!(ids(&log), ["c", "b"]);
    }
}
