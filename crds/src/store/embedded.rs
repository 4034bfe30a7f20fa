//! The embedded store: the whole store in process memory, optionally persisted to a folder.
//!
//! Used by `kubepbx up` (one process, `--data-dir`) and by unit tests.
//!
//! # Data flow
//!
//! [`Store::apply`] takes one `std` mutex (never held across an `.await`), appends each write to
//! an in-memory log buffer as one JSON line, updates the maps and sends the matching [`Event`]s on
//! a broadcast channel. [`Store::watch`] copies the maps and subscribes under the same lock, so a
//! subscriber neither misses nor sees twice a change around its snapshot. No file I/O happens on
//! either path.
//!
//! A maintenance task owned by the store (aborted when the store is dropped):
//! - every `flush_interval` writes the log buffer to the current log file and `fdatasync`s it
//!   (sooner when the buffer passes 1 MiB);
//! - every `sweep_interval` deletes expired bindings, sending [`Event::BindingDeleted`]: an expiry
//!   index ordered by time is popped from the front, so a sweep costs what it removes, not the
//!   number of bindings;
//! - compacts the log when it passed `compaction_min_lines` lines and twice the live records.
//!
//! # Files (under `dir`)
//!
//! | file | holds |
//! |---|---|
//! | `snapshot.jsonl` | header `{"snapshot":{"format":1,"generation":G}}`, one put per live record, trailer `{"end":{"records":N}}` |
//! | `log-{G}.jsonl` | one write per line (`{"refreshBinding":{…}}`), appended; `G` zero-padded to 20 digits |
//! | `snapshot.jsonl.tmp` | a snapshot being written; deleted by open |
//! | `lock` | exclusively locked while a store has the folder open |
//!
//! The snapshot of generation `G` holds the effect of every log of generation below `G`; open
//! replays the snapshot, then every log of generation `G` or above in order, drops expired
//! bindings, and compacts at once (new snapshot, old logs deleted, fresh log), so it never
//! appends to a file a crash may have cut.
//!
//! # Compaction
//!
//! Under the lock: rotate to log `G+1` and copy the state (cheap: bindings are `Arc`s). Outside
//! it: finish log `G` (write, sync), write the snapshot of generation `G+1` to
//! `snapshot.jsonl.tmp`, sync, rename over `snapshot.jsonl`, sync the folder, delete logs below
//! `G+1`. A crash at any point leaves either the old snapshot and every log since it, or the new
//! snapshot (older logs are then ignored and removed).
//!
//! # Durability
//!
//! Writes are acknowledged from memory and reach the disk at the next flush: a crash (power loss,
//! `kill -9`) loses at most about one `flush_interval` (1 s) of writes. That is the trade the
//! PBX wants: phones re-register within their registration interval, and extension records are
//! re-derived from manifests at start. [`Store::flush`] forces a flush; dropping the store flushes
//! on a best-effort basis. A truncated last line in a log (the process stopped mid-write) is
//! ignored with a warning; any other damage fails [`EmbeddedStore::open`] with
//! [`StoreError::Corrupt`] naming the file and line.
//!
//! If writing a log fails (disk full), the store keeps serving from memory, stops logging and
//! retries a compaction (a full snapshot) every 30 s; [`Store::flush`] reports the error.

use super::{Event, Snapshot, Store, StoreError, Subscription, Write};
use crate::records::{Binding, BindingKey, ExtensionRecord, RegStatus, UserKey, UserKeyRef};
use crate::time::UnixMillis;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;

const SNAPSHOT_FILE: &str = "snapshot.jsonl";
const SNAPSHOT_TMP: &str = "snapshot.jsonl.tmp";
const LOCK_FILE: &str = "lock";
const SNAPSHOT_FORMAT: u32 = 1;
/// A log buffer this large is flushed without waiting for the next tick.
const FLUSH_SOON_BYTES: usize = 1 << 20;
/// Most bindings removed by one sweep step under the lock.
const SWEEP_BATCH: usize = 4096;
/// Wait before retrying a failed compaction.
const COMPACTION_RETRY: Duration = Duration::from_secs(30);
/// Largest broadcast capacity accepted (tokio's own limit is `usize::MAX / 2`).
const MAX_CAPACITY: usize = 1 << 24;

/// Tuning of an [`EmbeddedStore`]; `Default` gives the production values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// Events kept for slow subscribers before they get [`Event::Resync`] (default 8 192: each
    /// retained event keeps its records alive, so this is memory held at all times).
    pub broadcast_capacity: usize,
    /// How often buffered log writes are written and synced (default 1 s): the most a crash
    /// loses.
    pub flush_interval: Duration,
    /// How often expired bindings are removed (default 1 s).
    pub sweep_interval: Duration,
    /// The log is compacted once it has more lines than this and than twice the live records
    /// (default 10 000).
    pub compaction_min_lines: u64,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            broadcast_capacity: 8_192,
            flush_interval: Duration::from_secs(1),
            sweep_interval: Duration::from_secs(1),
            compaction_min_lines: 10_000,
        }
    }
}

impl EmbeddedOptions {
    /// Values tokio accepts: a capacity of at least 1, intervals of at least 1 ms.
    fn sanitized(mut self) -> Self {
        self.broadcast_capacity = self.broadcast_capacity.clamp(1, MAX_CAPACITY);
        self.flush_interval = self.flush_interval.max(Duration::from_millis(1));
        self.sweep_interval = self.sweep_interval.max(Duration::from_millis(1));
        self
    }
}

/// Counts describing an [`EmbeddedStore`], for tests, metrics and `kubepbx doctor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EmbeddedStats {
    /// Extension records.
    pub extensions: usize,
    /// Bindings (including expired ones the sweep has not removed yet).
    pub bindings: usize,
    /// Registration statuses.
    pub statuses: usize,
    /// Generation of the current log file; `None` for a memory-only store.
    pub log_generation: Option<u64>,
    /// Log lines written since the last snapshot.
    pub log_lines: u64,
}

/// The embedded [`Store`]: in memory, optionally persisted under a folder (see the module docs).
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("dir", &self.inner.dir)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens a store: memory only when `dir` is `None`, otherwise loaded from and persisted to
    /// `dir` (created if missing). Starts the maintenance task, so it must run inside a tokio
    /// runtime.
    ///
    /// Fails when the folder cannot be read or written, is in use by another process, or holds
    /// damaged files ([`StoreError::Corrupt`] names the file and line).
    pub async fn open(dir: Option<PathBuf>, options: EmbeddedOptions) -> Result<Self, StoreError> {
        let handle = Handle::try_current().map_err(|_| {
            StoreError::Unavailable("the embedded store needs a tokio runtime".to_owned())
        })?;
        let options = options.sanitized();
        let (data, io) = match dir.clone() {
            None => (Data::default(), None),
            Some(dir) => {
                let now = UnixMillis::now();
                let (data, io) = handle
                    .spawn_blocking(move || load(&dir, now))
                    .await
                    .map_err(|e| StoreError::Unavailable(format!("loading the store: {e}")))??;
                (data, Some(io))
            }
        };
        let log = io.as_ref().map(|_| LogBuf::default());
        let (tx, _) = broadcast::channel(options.broadcast_capacity);
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                data,
                tx: Some(tx),
                log,
            }),
            io: io.map(Mutex::new),
            wake: Arc::new(Notify::new()),
            dir,
            options,
        });
        let task = handle.spawn(maintain(
            Arc::downgrade(&inner),
            Arc::clone(&inner.wake),
            inner.options.flush_interval,
            inner.options.sweep_interval,
        ));
        Ok(EmbeddedStore {
            inner,
            task: Some(task),
        })
    }

    /// Removes every binding whose expiry is `now` or earlier, sending
    /// [`Event::BindingDeleted`] for each; returns how many. The maintenance task calls this
    /// with the wall clock every `sweep_interval`.
    pub fn sweep_expired(&self, now: UnixMillis) -> usize {
        self.inner.sweep_expired(now)
    }

    /// Writes a fresh snapshot and starts a new log (done automatically when the log grows).
    pub async fn compact(&self) -> Result<(), StoreError> {
        let inner = Arc::clone(&self.inner);
        blocking(move || inner.compact_sync(Stop::Never)).await
    }

    /// Current counts.
    pub fn stats(&self) -> EmbeddedStats {
        // `io` before `state`, the order every path takes them in.
        let log_generation = self.inner.io.as_ref().map(|io| lock(io).generation);
        let state = lock(&self.inner.state);
        EmbeddedStats {
            extensions: state.data.extensions.len(),
            bindings: state.data.binding_count,
            statuses: state.data.statuses.len(),
            log_generation,
            log_lines: state.log.as_ref().map_or(0, |l| l.lines),
        }
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.inner.close();
    }
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn watch(&self) -> Result<(Snapshot, Subscription), StoreError> {
        Ok(self.inner.watch_at(UnixMillis::now()))
    }

    async fn apply(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.inner.apply_sync(writes)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        if self.inner.io.is_none() {
            return Ok(());
        }
        let inner = Arc::clone(&self.inner);
        blocking(move || inner.flush_sync()).await
    }
}

/// Runs blocking file work off the async worker threads when a runtime is there.
async fn blocking<F>(f: F) -> Result<(), StoreError>
where
    F: FnOnce() -> Result<(), StoreError> + Send + 'static,
{
    match Handle::try_current() {
        Ok(handle) => handle
            .spawn_blocking(f)
            .await
            .map_err(|e| StoreError::Unavailable(format!("store file task failed: {e}")))?,
        Err(_) => f(),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing under these locks panics; if something ever did, the data is still consistent
    // enough to keep serving (each write is applied as a whole before the lock is released).
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// In-memory state

/// One binding and its current expiry (a refresh changes only the expiry, so the shared
/// `Arc<Binding>` is kept and patched when copied out).
#[derive(Debug)]
struct BindingEntry {
    binding: Arc<Binding>,
    expires_at: UnixMillis,
    /// Tie-breaker of this binding in the expiry index.
    slot: u64,
}

#[derive(Debug, Default)]
struct Data {
    extensions: BTreeMap<UserKey, ExtensionRecord>,
    /// Bindings per extension (most have one): the key is not repeated per binding.
    bindings: hashbrown::HashMap<UserKey, Vec<BindingEntry>>,
    binding_count: usize,
    /// `(expires_at, slot)` → binding, in expiry order (the `Arc` shared with `bindings`, so
    /// the index costs no copy of the key).
    expiry: BTreeMap<(UnixMillis, u64), Arc<Binding>>,
    statuses: BTreeMap<UserKey, RegStatus>,
    next_slot: u64,
}

/// A copy of the state taken under the lock; bindings still carry their possibly stale
/// `expires_at` next to the current one.
#[derive(Debug, Default)]
struct StateCopy {
    extensions: Vec<ExtensionRecord>,
    bindings: Vec<(Arc<Binding>, UnixMillis)>,
    statuses: Vec<(UserKey, RegStatus)>,
}

impl StateCopy {
    fn records(&self) -> u64 {
        (self.extensions.len() + self.bindings.len() + self.statuses.len()) as u64
    }

    fn into_snapshot(self) -> Snapshot {
        Snapshot {
            extensions: self.extensions,
            bindings: self
                .bindings
                .into_iter()
                .map(|(b, at)| current(b, at))
                .collect(),
            statuses: self.statuses,
        }
    }
}

/// The binding with its current expiry; cloned only when a refresh changed it.
fn current(binding: Arc<Binding>, expires_at: UnixMillis) -> Arc<Binding> {
    if binding.expires_at == expires_at {
        binding
    } else {
        let mut b = Binding::clone(&binding);
        b.expires_at = expires_at;
        Arc::new(b)
    }
}

fn emit(tx: Option<&broadcast::Sender<Event>>, event: impl FnOnce() -> Event) {
    if let Some(tx) = tx {
        // An error only means nobody listens right now.
        let _ = tx.send(event());
    }
}

impl Data {
    fn live(&self) -> u64 {
        (self.extensions.len() + self.binding_count + self.statuses.len()) as u64
    }

    /// Takes a binding out of the table (and drops its user's list when it empties).
    fn take_binding(&mut self, user: UserKeyRef<'_>, id: &str) -> Option<BindingEntry> {
        let list = self.bindings.get_mut(&user)?;
        let i = list.iter().position(|e| &*e.binding.id == id)?;
        let entry = list.swap_remove(i);
        if list.is_empty() {
            self.bindings.remove(&user);
        }
        self.binding_count -= 1;
        Some(entry)
    }

    /// Applies one write; events go to `tx` when it is given (`None` while replaying files or
    /// when nobody subscribes).
    fn apply(&mut self, write: Write, tx: Option<&broadcast::Sender<Event>>) {
        match write {
            Write::PutExtension(record) => {
                emit(tx, || Event::ExtensionPut(record.clone()));
                self.extensions.insert(record.key(), record);
            }
            Write::DeleteExtension(user) => {
                let existed = self.extensions.remove(&user).is_some();
                self.statuses.remove(&user);
                let keys: Vec<BindingKey> = self
                    .bindings
                    .get(&user)
                    .map(|list| list.iter().map(|e| e.binding.key()).collect())
                    .unwrap_or_default();
                if existed {
                    emit(tx, || Event::ExtensionDeleted(user));
                }
                for key in keys {
                    self.remove_binding(key, tx);
                }
            }
            Write::PutBinding(binding) => {
                let expires_at = binding.expires_at;
                emit(tx, || Event::BindingPut(Arc::clone(&binding)));
                let user = UserKeyRef {
                    domain: &binding.domain,
                    user: &binding.user,
                };
                let list = self
                    .bindings
                    .raw_entry_mut()
                    .from_key(&user)
                    .or_insert_with(|| (UserKey::new(&*binding.domain, &*binding.user), Vec::new()))
                    .1;
                match list.iter_mut().find(|e| e.binding.id == binding.id) {
                    Some(entry) => {
                        reschedule(&mut self.expiry, entry, expires_at);
                        if let Some(indexed) = self.expiry.get_mut(&(expires_at, entry.slot)) {
                            *indexed = Arc::clone(&binding);
                        }
                        entry.binding = binding;
                    }
                    None => {
                        let slot = self.next_slot;
                        self.next_slot += 1;
                        self.expiry.insert((expires_at, slot), Arc::clone(&binding));
                        list.reserve_exact(1);
                        list.push(BindingEntry {
                            binding,
                            expires_at,
                            slot,
                        });
                        self.binding_count += 1;
                    }
                }
            }
            Write::RefreshBinding { key, expires_at } => {
                let expiry = &mut self.expiry;
                if let Some(entry) = self
                    .bindings
                    .get_mut(&key.user)
                    .and_then(|list| list.iter_mut().find(|e| *e.binding.id == *key.id))
                {
                    reschedule(expiry, entry, expires_at);
                    emit(tx, || Event::BindingRefreshed { key, expires_at });
                }
            }
            Write::DeleteBinding(key) => self.remove_binding(key, tx),
            Write::PutStatus(user, status) => {
                emit(tx, || Event::StatusPut(user.clone(), status.clone()));
                self.statuses.insert(user, status);
            }
        }
    }

    fn remove_binding(&mut self, key: BindingKey, tx: Option<&broadcast::Sender<Event>>) {
        let user = UserKeyRef {
            domain: &key.user.domain,
            user: &key.user.user,
        };
        if let Some(entry) = self.take_binding(user, &key.id) {
            self.expiry.remove(&(entry.expires_at, entry.slot));
            emit(tx, || Event::BindingDeleted(key));
        }
    }

    /// Removes up to `limit` bindings expired at `now`, earliest first, and returns their keys.
    fn expire(&mut self, now: UnixMillis, limit: usize) -> Vec<BindingKey> {
        let mut out = Vec::new();
        while out.len() < limit {
            match self.expiry.first_key_value() {
                Some((&(at, _), _)) if at <= now => {}
                _ => break,
            }
            let Some((_, binding)) = self.expiry.pop_first() else {
                break;
            };
            let user = UserKeyRef {
                domain: &binding.domain,
                user: &binding.user,
            };
            self.take_binding(user, &binding.id);
            out.push(binding.key());
        }
        out
    }

    fn copy(&self) -> StateCopy {
        let mut bindings: Vec<(Arc<Binding>, UnixMillis)> = self
            .bindings
            .values()
            .flatten()
            .map(|e| (Arc::clone(&e.binding), e.expires_at))
            .collect();
        // In key order, as snapshots and compacted files always were.
        bindings.sort_unstable_by(|(a, _), (b, _)| {
            (&a.domain, &a.user, &a.id).cmp(&(&b.domain, &b.user, &b.id))
        });
        StateCopy {
            extensions: self.extensions.values().cloned().collect(),
            bindings,
            statuses: self
                .statuses
                .iter()
                .map(|(k, s)| (k.clone(), s.clone()))
                .collect(),
        }
    }
}

fn reschedule(
    expiry: &mut BTreeMap<(UnixMillis, u64), Arc<Binding>>,
    entry: &mut BindingEntry,
    expires_at: UnixMillis,
) {
    if entry.expires_at == expires_at {
        return;
    }
    if let Some(binding) = expiry.remove(&(entry.expires_at, entry.slot)) {
        expiry.insert((expires_at, entry.slot), binding);
    }
    entry.expires_at = expires_at;
}

// ---------------------------------------------------------------------------------------------
// Log records

/// One line of a log or snapshot: a [`Write`] in a serialisable form that borrows when writing.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum LogEntry<'a> {
    PutExtension(Cow<'a, ExtensionRecord>),
    DeleteExtension {
        domain: Cow<'a, str>,
        user: Cow<'a, str>,
    },
    PutBinding(Cow<'a, Binding>),
    RefreshBinding {
        domain: Cow<'a, str>,
        user: Cow<'a, str>,
        id: Cow<'a, str>,
        #[serde(rename = "expiresAt")]
        expires_at: UnixMillis,
    },
    DeleteBinding {
        domain: Cow<'a, str>,
        user: Cow<'a, str>,
        id: Cow<'a, str>,
    },
    PutStatus {
        domain: Cow<'a, str>,
        user: Cow<'a, str>,
        status: Cow<'a, RegStatus>,
    },
}

impl<'a> LogEntry<'a> {
    fn of(write: &'a Write) -> Self {
        match write {
            Write::PutExtension(r) => LogEntry::PutExtension(Cow::Borrowed(r)),
            Write::DeleteExtension(u) => LogEntry::DeleteExtension {
                domain: Cow::Borrowed(&u.domain),
                user: Cow::Borrowed(&u.user),
            },
            Write::PutBinding(b) => LogEntry::PutBinding(Cow::Borrowed(b)),
            Write::RefreshBinding { key, expires_at } => LogEntry::RefreshBinding {
                domain: Cow::Borrowed(&key.user.domain),
                user: Cow::Borrowed(&key.user.user),
                id: Cow::Borrowed(&key.id),
                expires_at: *expires_at,
            },
            Write::DeleteBinding(key) => LogEntry::delete_binding(key),
            Write::PutStatus(u, s) => LogEntry::PutStatus {
                domain: Cow::Borrowed(&u.domain),
                user: Cow::Borrowed(&u.user),
                status: Cow::Borrowed(s),
            },
        }
    }

    fn delete_binding(key: &'a BindingKey) -> Self {
        LogEntry::DeleteBinding {
            domain: Cow::Borrowed(&key.user.domain),
            user: Cow::Borrowed(&key.user.user),
            id: Cow::Borrowed(&key.id),
        }
    }

    fn into_write(self) -> Write {
        fn binding_key(domain: Cow<'_, str>, user: Cow<'_, str>, id: Cow<'_, str>) -> BindingKey {
            BindingKey {
                user: UserKey::new(domain.into_owned(), user.into_owned()),
                id: id.into_owned(),
            }
        }
        match self {
            LogEntry::PutExtension(r) => Write::PutExtension(r.into_owned()),
            LogEntry::DeleteExtension { domain, user } => {
                Write::DeleteExtension(UserKey::new(domain.into_owned(), user.into_owned()))
            }
            LogEntry::PutBinding(b) => Write::PutBinding(Arc::new(b.into_owned())),
            LogEntry::RefreshBinding {
                domain,
                user,
                id,
                expires_at,
            } => Write::RefreshBinding {
                key: binding_key(domain, user, id),
                expires_at,
            },
            LogEntry::DeleteBinding { domain, user, id } => {
                Write::DeleteBinding(binding_key(domain, user, id))
            }
            LogEntry::PutStatus {
                domain,
                user,
                status,
            } => Write::PutStatus(
                UserKey::new(domain.into_owned(), user.into_owned()),
                status.into_owned(),
            ),
        }
    }
}

/// First and last line of a snapshot file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Marker {
    Snapshot { format: u32, generation: u64 },
    End { records: u64 },
}

/// Appends one JSON line.
fn encode<T: Serialize>(out: &mut Vec<u8>, value: &T) -> Result<(), serde_json::Error> {
    serde_json::to_writer(&mut *out, value)?;
    out.push(b'\n');
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Shared state and its operations

#[derive(Debug)]
struct State {
    data: Data,
    /// `None` once the store is closed: subscribers then see the end of their stream.
    tx: Option<broadcast::Sender<Event>>,
    /// `None` for a memory-only store.
    log: Option<LogBuf>,
}

/// Log lines waiting for the next flush, and the bookkeeping that triggers compaction.
#[derive(Debug, Default)]
struct LogBuf {
    pending: Vec<u8>,
    /// Lines written (or buffered) since the last snapshot.
    lines: u64,
    /// A log write failed: the files miss writes, so logging stops until a snapshot is written.
    broken: bool,
    compaction_requested: bool,
    /// No compaction attempt before this (set after a failure).
    retry_at: Option<Instant>,
}

/// The file side, locked before `state` whenever both are needed.
#[derive(Debug)]
struct Io {
    dir: PathBuf,
    generation: u64,
    file: Option<File>,
    /// Bytes were written since the last sync.
    dirty: bool,
    /// The store was dropped: no more file I/O.
    closed: bool,
    _lock: Option<File>,
}

impl Io {
    fn log_path(&self) -> PathBuf {
        log_path(&self.dir, self.generation)
    }
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    io: Option<Mutex<Io>>,
    wake: Arc<Notify>,
    dir: Option<PathBuf>,
    options: EmbeddedOptions,
}

/// Where a compaction stops; anything but `Never` simulates a crash in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) enum Stop {
    AfterRotate,
    AfterTempWritten,
    AfterInstall,
    Never,
}

impl Inner {
    fn apply_sync(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let mut guard = lock(&self.state);
        let State { data, tx, log } = &mut *guard;
        if let Some(log) = log.as_mut().filter(|l| !l.broken) {
            let (len, lines) = (log.pending.len(), log.lines);
            for write in &writes {
                if let Err(e) = encode(&mut log.pending, &LogEntry::of(write)) {
                    log.pending.truncate(len);
                    log.lines = lines;
                    return Err(StoreError::Corrupt {
                        path: "write batch".to_owned(),
                        detail: format!("a write cannot be encoded: {e}"),
                    });
                }
                log.lines += 1;
            }
        }
        let tx = tx.as_ref().filter(|tx| tx.receiver_count() > 0);
        for write in writes {
            data.apply(write, tx);
        }
        if let Some(log) = log.as_mut() {
            self.check_thresholds(log, data.live());
        }
        Ok(())
    }

    fn check_thresholds(&self, log: &mut LogBuf, live: u64) {
        if !log.compaction_requested
            && log.lines > self.options.compaction_min_lines
            && log.lines > live.saturating_mul(2)
        {
            log.compaction_requested = true;
            self.wake.notify_one();
        } else if log.pending.len() >= FLUSH_SOON_BYTES {
            self.wake.notify_one();
        }
    }

    fn watch_at(&self, now: UnixMillis) -> (Snapshot, Subscription) {
        let (copy, rx) = {
            let mut state = lock(&self.state);
            // Expired bindings go first, so the snapshot holds only live ones and no deletion
            // for them follows.
            while self.sweep_locked(&mut state, now, SWEEP_BATCH) == SWEEP_BATCH {}
            let rx = match &state.tx {
                Some(tx) => tx.subscribe(),
                None => broadcast::channel(1).1,
            };
            (state.data.copy(), rx)
        };
        (copy.into_snapshot(), Subscription::new(rx))
    }

    fn sweep_expired(&self, now: UnixMillis) -> usize {
        let mut total = 0;
        loop {
            let n = self.sweep_locked(&mut lock(&self.state), now, SWEEP_BATCH);
            total += n;
            if n < SWEEP_BATCH {
                return total;
            }
        }
    }

    fn sweep_locked(&self, state: &mut State, now: UnixMillis, limit: usize) -> usize {
        let State { data, tx, log } = state;
        let expired = data.expire(now, limit);
        if expired.is_empty() {
            return 0;
        }
        let n = expired.len();
        let tx = tx.as_ref().filter(|tx| tx.receiver_count() > 0);
        for key in expired {
            if let Some(log) = log.as_mut().filter(|l| !l.broken) {
                // Logged so a replay does not resurrect the binding through a later refresh.
                if encode(&mut log.pending, &LogEntry::delete_binding(&key)).is_ok() {
                    log.lines += 1;
                }
            }
            emit(tx, || Event::BindingDeleted(key));
        }
        if let Some(log) = log.as_mut() {
            self.check_thresholds(log, data.live());
        }
        n
    }

    fn mark_broken(&self) {
        if let Some(log) = lock(&self.state).log.as_mut() {
            log.broken = true;
            log.pending = Vec::new();
        }
    }

    /// Writes buffered log lines to the current log and syncs it.
    fn flush_sync(&self) -> Result<(), StoreError> {
        let Some(io) = &self.io else {
            return Ok(());
        };
        let mut io = lock(io);
        if io.closed {
            return Ok(());
        }
        let bytes = {
            let mut state = lock(&self.state);
            match state.log.as_mut() {
                None => return Ok(()),
                Some(log) if log.broken => None,
                Some(log) => Some(std::mem::take(&mut log.pending)),
            }
        };
        match bytes {
            Some(bytes) => self.write_log(&mut io, &bytes).inspect_err(|e| {
                tracing::error!(error = %e,
                    "writing the store log failed; serving from memory, retrying with a snapshot");
                // The log file now misses writes (and may end in a partial line).
                self.mark_broken();
            }),
            None => {
                // The files miss writes: only a snapshot makes them whole again.
                drop(io);
                self.compact_sync(Stop::Never)
            }
        }
    }

    fn write_log(&self, io: &mut Io, bytes: &[u8]) -> Result<(), StoreError> {
        let path = io.log_path();
        let Some(file) = io.file.as_mut() else {
            return Ok(());
        };
        let mut result = Ok(());
        if !bytes.is_empty() {
            io.dirty = true;
            result = file.write_all(bytes);
        }
        if result.is_ok() && io.dirty {
            result = file.sync_data();
            if result.is_ok() {
                io.dirty = false;
            }
        }
        result.map_err(|source| StoreError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Rotates the log and writes a snapshot (see the module docs); `stop` cuts it short to
    /// simulate a crash.
    fn compact_sync(&self, stop: Stop) -> Result<(), StoreError> {
        let Some(io) = &self.io else {
            return Ok(());
        };
        let mut io = lock(io);
        if io.closed {
            return Ok(());
        }
        // Whether the files miss writes until the new snapshot is installed.
        let mut gap = false;
        let result = self.compact_locked(&mut io, stop, &mut gap);
        if result.is_err() && gap {
            self.mark_broken();
        }
        let mut state = lock(&self.state);
        if let Some(log) = state.log.as_mut() {
            match &result {
                Ok(()) => log.retry_at = None,
                Err(e) => {
                    tracing::error!(error = %e, "store compaction failed; retrying in 30 s");
                    log.compaction_requested = true;
                    log.retry_at = Some(Instant::now() + COMPACTION_RETRY);
                }
            }
        }
        result
    }

    fn compact_locked(&self, io: &mut Io, stop: Stop, gap: &mut bool) -> Result<(), StoreError> {
        let dir = io.dir.clone();
        let generation = io.generation + 1;
        let path = log_path(&dir, generation);
        let file = create_log(&path)?;

        let (old_pending, was_broken, copy) = {
            let mut state = lock(&self.state);
            let State { data, log, .. } = &mut *state;
            let Some(log) = log.as_mut() else {
                return Ok(());
            };
            let pending = std::mem::take(&mut log.pending);
            let was_broken = log.broken;
            log.broken = false;
            log.lines = 0;
            log.compaction_requested = false;
            (pending, was_broken, data.copy())
        };

        // Finish the old log: needed until the new snapshot is in place. If that fails, the
        // snapshot still covers these writes; only a failure to install it leaves a gap.
        *gap = was_broken;
        if !was_broken && let Err(e) = self.write_log(io, &old_pending) {
            tracing::warn!(error = %e, "finishing the old store log failed");
            *gap = true;
        }
        io.file = Some(file);
        io.generation = generation;
        io.dirty = false;
        sync_dir(&dir).map_err(io_error(&dir))?;
        if stop == Stop::AfterRotate {
            return Ok(());
        }

        let tmp = dir.join(SNAPSHOT_TMP);
        write_snapshot(&tmp, generation, copy).map_err(io_error(&tmp))?;
        if stop == Stop::AfterTempWritten {
            return Ok(());
        }
        let snapshot = dir.join(SNAPSHOT_FILE);
        fs::rename(&tmp, &snapshot).map_err(io_error(&snapshot))?;
        sync_dir(&dir).map_err(io_error(&dir))?;
        if stop == Stop::AfterInstall {
            return Ok(());
        }
        remove_logs_below(&dir, generation);
        tracing::debug!(generation, "store compacted");
        Ok(())
    }

    /// Flushes for the last time and stops all file I/O; ends every subscription.
    fn close(&self) {
        if let Some(io_mutex) = &self.io {
            let broken = lock(&self.state).log.as_ref().is_some_and(|l| l.broken);
            if broken {
                let _ = self.compact_sync(Stop::Never);
            }
            let mut io = lock(io_mutex);
            if !io.closed {
                let bytes = lock(&self.state)
                    .log
                    .as_mut()
                    .filter(|l| !l.broken)
                    .map(|l| std::mem::take(&mut l.pending))
                    .unwrap_or_default();
                if let Err(e) = self.write_log(&mut io, &bytes) {
                    tracing::warn!(error = %e, "final flush of the store log failed");
                }
                io.closed = true;
                io.file = None;
                io._lock = None;
            }
        }
        lock(&self.state).tx = None;
    }

    /// What the maintenance task does with the files on a tick (`periodic`) or a wake-up.
    fn maintain_files(&self, periodic: bool) {
        let (compact, broken, flush) = {
            let state = lock(&self.state);
            let Some(log) = state.log.as_ref() else {
                return;
            };
            let may_compact = log.retry_at.is_none_or(|t| Instant::now() >= t);
            (
                (log.broken || log.compaction_requested) && may_compact,
                log.broken,
                periodic || log.pending.len() >= FLUSH_SOON_BYTES,
            )
        };
        let result = if compact {
            self.compact_sync(Stop::Never)
        } else if broken {
            Ok(()) // waiting to retry the snapshot; nothing is logged meanwhile
        } else if flush {
            self.flush_sync()
        } else {
            Ok(())
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "store maintenance failed");
        }
    }
}

/// The maintenance task: flush, sweep, compact. Holds only a weak reference, so it ends by
/// itself once the store is gone (it is also aborted by `Drop`).
async fn maintain(
    inner: Weak<Inner>,
    wake: Arc<Notify>,
    flush_every: Duration,
    sweep_every: Duration,
) {
    #[derive(Clone, Copy)]
    enum Job {
        Flush,
        Sweep,
        Wake,
    }
    let mut flush = tokio::time::interval(flush_every);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep = tokio::time::interval(sweep_every);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let job = tokio::select! {
            _ = flush.tick() => Job::Flush,
            _ = sweep.tick() => Job::Sweep,
            () = wake.notified() => Job::Wake,
        };
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match job {
            Job::Sweep => {
                inner.sweep_expired(UnixMillis::now());
            }
            Job::Flush | Job::Wake if inner.io.is_some() => {
                let periodic = matches!(job, Job::Flush);
                let done = tokio::task::spawn_blocking(move || inner.maintain_files(periodic));
                if let Err(e) = done.await {
                    tracing::warn!(error = %e, "store maintenance task failed");
                }
            }
            Job::Flush | Job::Wake => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Files

fn log_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("log-{generation:020}.jsonl"))
}

fn parse_log_name(name: &str) -> Option<u64> {
    name.strip_prefix("log-")?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn corrupt(path: &Path, detail: String) -> StoreError {
    StoreError::Corrupt {
        path: path.display().to_string(),
        detail,
    }
}

fn create_log(path: &Path) -> Result<File, StoreError> {
    // A log above the current generation can only be left over from a failed attempt.
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .map_err(io_error(path))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Log generations present in `dir`, ascending.
fn log_generations(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut gens = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        if let Some(generation) = entry.file_name().to_str().and_then(parse_log_name) {
            gens.push(generation);
        }
    }
    gens.sort_unstable();
    Ok(gens)
}

fn remove_logs_below(dir: &Path, generation: u64) {
    let gens = match log_generations(dir) {
        Ok(gens) => gens,
        Err(e) => {
            tracing::warn!(error = %e, "listing old store logs failed");
            return;
        }
    };
    for g in gens.into_iter().filter(|g| *g < generation) {
        let path = log_path(dir, g);
        if let Err(e) = fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "removing an old store log failed");
        }
    }
}

/// Writes a complete snapshot file at `path` and syncs it.
fn write_snapshot(path: &Path, generation: u64, copy: StateCopy) -> io::Result<()> {
    fn put<T: Serialize>(
        out: &mut BufWriter<File>,
        line: &mut Vec<u8>,
        value: &T,
    ) -> io::Result<()> {
        line.clear();
        encode(line, value).map_err(io::Error::other)?;
        out.write_all(line)
    }
    let mut out = BufWriter::with_capacity(1 << 18, File::create(path)?);
    let mut line = Vec::with_capacity(1024);
    let records = copy.records();
    let header = Marker::Snapshot {
        format: SNAPSHOT_FORMAT,
        generation,
    };
    put(&mut out, &mut line, &header)?;
    for record in &copy.extensions {
        put(
            &mut out,
            &mut line,
            &LogEntry::PutExtension(Cow::Borrowed(record)),
        )?;
    }
    for (binding, expires_at) in copy.bindings {
        let binding = current(binding, expires_at);
        put(
            &mut out,
            &mut line,
            &LogEntry::PutBinding(Cow::Borrowed(&binding)),
        )?;
    }
    for (user, status) in &copy.statuses {
        let entry = LogEntry::PutStatus {
            domain: Cow::Borrowed(&user.domain),
            user: Cow::Borrowed(&user.user),
            status: Cow::Borrowed(status),
        };
        put(&mut out, &mut line, &entry)?;
    }
    put(&mut out, &mut line, &Marker::End { records })?;
    let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.sync_all()
}

/// Lines of a file with their 1-based numbers, skipping blank ones; the flag tells whether the
/// line is the unterminated tail of the file.
fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8], bool)> {
    let terminated = bytes.last().is_none_or(|b| *b == b'\n');
    let count = bytes.split(|b| *b == b'\n').count();
    bytes
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .map(move |(i, line)| (i + 1, line, !terminated && i + 1 == count))
}

/// Replays one log file into `data`.
fn replay_log(path: &Path, data: &mut Data) -> Result<u64, StoreError> {
    let bytes = fs::read(path).map_err(io_error(path))?;
    let mut applied = 0;
    for (n, line, unterminated) in lines(&bytes) {
        if line.contains(&0) {
            // The writer never writes NUL (JSON escapes it): this is a tail the file system
            // zero-filled because the machine stopped before the data reached the disk.
            tracing::warn!(path = %path.display(), line = n,
                "ignoring the zero-filled end of a store log (crash before sync)");
            break;
        }
        match serde_json::from_slice::<LogEntry<'_>>(line) {
            Ok(entry) => {
                data.apply(entry.into_write(), None);
                applied += 1;
            }
            Err(e) if unterminated => {
                tracing::warn!(path = %path.display(), line = n, error = %e,
                    "ignoring a truncated last line in a store log (stopped mid-write)");
            }
            Err(e) => return Err(corrupt(path, format!("line {n}: {e}"))),
        }
    }
    Ok(applied)
}

/// Replays a snapshot file into `data`; returns its generation.
fn replay_snapshot(path: &Path, data: &mut Data) -> Result<u64, StoreError> {
    let bytes = fs::read(path).map_err(io_error(path))?;
    let mut lines = lines(&bytes);
    let generation = match lines.next() {
        Some((n, line, _)) => match serde_json::from_slice::<Marker>(line) {
            Ok(Marker::Snapshot { format, generation }) if format == SNAPSHOT_FORMAT => generation,
            Ok(Marker::Snapshot { format, .. }) => {
                return Err(corrupt(
                    path,
                    format!("line {n}: unsupported snapshot format {format}"),
                ));
            }
            Ok(Marker::End { .. }) => {
                return Err(corrupt(
                    path,
                    format!("line {n}: expected a snapshot header"),
                ));
            }
            Err(e) => {
                return Err(corrupt(
                    path,
                    format!("line {n}: not a snapshot header: {e}"),
                ));
            }
        },
        None => return Err(corrupt(path, "empty snapshot".to_owned())),
    };
    let mut records = 0u64;
    for (n, line, _) in lines.by_ref() {
        match serde_json::from_slice::<LogEntry<'_>>(line) {
            Ok(entry) => {
                data.apply(entry.into_write(), None);
                records += 1;
            }
            Err(e) => match serde_json::from_slice::<Marker>(line) {
                Ok(Marker::End { records: expected }) if expected == records => {
                    return match lines.next() {
                        None => Ok(generation),
                        Some((n, _, _)) => Err(corrupt(
                            path,
                            format!("line {n}: data after the end marker"),
                        )),
                    };
                }
                Ok(Marker::End { records: expected }) => {
                    return Err(corrupt(
                        path,
                        format!("line {n}: {records} records read, {expected} announced"),
                    ));
                }
                _ => return Err(corrupt(path, format!("line {n}: {e}"))),
            },
        }
    }
    Err(corrupt(
        path,
        "incomplete snapshot (no end marker)".to_owned(),
    ))
}

/// Takes the folder's lock, replays it, drops expired bindings and compacts at once; returns
/// the state and the file side writing a fresh log.
fn load(dir: &Path, now: UnixMillis) -> Result<(Data, Io), StoreError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let lock_path = dir.join(LOCK_FILE);
    let lock_file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(io_error(&lock_path))?;
    match lock_file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            return Err(StoreError::Unavailable(format!(
                "data directory {} is in use by another kubepbx process",
                dir.display()
            )));
        }
        Err(fs::TryLockError::Error(e)) if e.kind() == io::ErrorKind::Unsupported => {
            tracing::warn!(dir = %dir.display(), "file locking unsupported; not locking the store");
        }
        Err(fs::TryLockError::Error(e)) => return Err(io_error(&lock_path)(e)),
    }

    let tmp = dir.join(SNAPSHOT_TMP);
    if tmp.exists() {
        fs::remove_file(&tmp).map_err(io_error(&tmp))?;
    }
    let mut data = Data::default();
    let snapshot = dir.join(SNAPSHOT_FILE);
    let base = if snapshot.exists() {
        replay_snapshot(&snapshot, &mut data)?
    } else {
        0
    };
    let gens = log_generations(dir)?;
    for &g in gens.iter().filter(|g| **g >= base) {
        replay_log(&log_path(dir, g), &mut data)?;
    }
    let expired = data.expire(now, usize::MAX).len();

    let generation = gens.last().copied().unwrap_or(0).max(base) + 1;
    write_snapshot(&tmp, generation, data.copy()).map_err(io_error(&tmp))?;
    fs::rename(&tmp, &snapshot).map_err(io_error(&snapshot))?;
    sync_dir(dir).map_err(io_error(dir))?;
    remove_logs_below(dir, generation);
    let path = log_path(dir, generation);
    let file = create_log(&path)?;
    sync_dir(dir).map_err(io_error(dir))?;
    tracing::info!(dir = %dir.display(), extensions = data.extensions.len(),
        bindings = data.binding_count, expired, generation, "embedded store loaded");
    Ok((
        data,
        Io {
            dir: dir.to_owned(),
            generation,
            file: Some(file),
            dirty: false,
            closed: false,
            _lock: Some(lock_file),
        },
    ))
}

#[cfg(test)]
impl EmbeddedStore {
    /// Stops like a killed process: no final flush, buffered writes are lost, the folder lock is
    /// released.
    pub(crate) fn crash(self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        if let Some(io) = &self.inner.io {
            let mut io = lock(io);
            io.closed = true;
            io.file = None;
            io._lock = None;
        }
    }

    /// Runs a compaction that stops at `stop`, as if the process died there.
    pub(crate) fn compact_until(&self, stop: Stop) -> Result<(), StoreError> {
        self.inner.compact_sync(stop)
    }

    /// Writes buffered log lines now (the maintenance task does it every `flush_interval`).
    pub(crate) fn flush_now(&self) -> Result<(), StoreError> {
        self.inner.flush_sync()
    }
}
