//! The relay's own threads: one single-threaded tokio runtime per core, each on a thread named
//! `relay-N`, and the session tasks spread over them round-robin.
//!
//! ```text
//! LocalRelay::create ── next() ──► Shard k: its Handle (sockets are registered with its
//!                                  reactor), spawn(session task)  ── thread relay-k: block_on
//! ```
//! Why not the owner's multi-threaded runtime: a relayed packet is a few microseconds of work,
//! and workers of one runtime that share it wake each other (and steal tasks) for each burst.
//! Independent runtimes never wake each other: a session's sockets, timers and task live on one
//! thread, so a packet costs its own syscalls and one task poll, no cross-thread wake-up. The
//! owner's runtime still runs the control side (offers, answers, the HTTP API, recorders).
//!
//! A session's sockets must be registered with the reactor of the runtime its task runs on:
//! bind them inside [`Shard::enter`]. Every task spawned here is tracked twice: by the owner's
//! [`TaskTracker`] (its shutdown waits for it) and by the shard's own, so a thread ends once the
//! relay is shut down (or dropped) and its last task has finished; each thread holds a token of
//! the owner's tracker until its runtime is gone.
//!
//! A session may move to another thread later (to follow its browser, see [`crate::follow`]):
//! its task ends on one thread and a new one, owning the same state with its sockets
//! registered anew, starts on the other.
//!
//! Each thread also runs its [`pacing`](crate::pacing): once busy, it wakes once per
//! [`RelayConfig::batch_interval`](crate::RelayConfig::batch_interval) instead of for every
//! packet.

use crate::MediaError;
use crate::metrics::RelayMetrics;
use crate::pacing::{Pacing, pace};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::runtime::{EnterGuard, Handle};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

/// Tasks a relay thread's runtime runs between two looks at its sockets and timers (tokio's
/// default is 61). The pacing of a batching thread ([`crate::pacing`]) runs in the thread's
/// main future, which tokio polls first after each look, and each time it sleeps for an
/// interval. With the default, a thread whose sessions were woken more than 61 times per
/// interval ran 61 of them per interval and let the rest wait, so that each session found
/// several packets waiting when it ran: 17 ms of median latency at 1,000 plain calls on one
/// thread (3 ms with this). With room for every session woken in an interval, they all run
/// before the thread sleeps again.
const EVENT_INTERVAL: u32 = 8192;

/// One relay thread and its runtime.
#[derive(Debug)]
pub(crate) struct Shard {
    index: usize,
    handle: Handle,
    tracker: TaskTracker,
}

impl Shard {
    /// Which thread (0 …): `relay-{index}`.
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// Makes this shard's runtime the current one (for binding sockets) until the guard drops.
    pub(crate) fn enter(&self) -> EnterGuard<'_> {
        self.handle.enter()
    }

    /// Runs `task` on this shard's thread, tracked by `owner`.
    pub(crate) fn spawn<F>(&self, owner: &TaskTracker, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        owner.spawn_on(self.tracker.track_future(task), &self.handle);
    }
}

/// The relay's threads (see the module docs).
#[derive(Debug)]
pub(crate) struct Shards {
    shards: Vec<Shard>,
    next: AtomicUsize,
    /// Tells the threads the relay is gone (dropped with it).
    _gone: DropGuard,
}

/// How many threads [`Shards::start`] starts for [`RelayConfig::threads`](crate::RelayConfig::threads)
/// `configured` (0: one per core).
pub(crate) fn count(configured: usize) -> usize {
    match configured {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// A relay thread's runtime.
fn runtime(event_interval: u32) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .event_interval(event_interval)
        .build()
}

impl Shards {
    /// Starts `count` threads, named `relay-0` …; they stop once `shutdown` is cancelled or this
    /// is dropped, and their tasks have finished. Thread k judges its load by the packets
    /// `metrics` counts for it and batches its wake-ups in `batch_interval` once busy (zero:
    /// never).
    pub(crate) fn start(
        count: usize,
        batch_interval: Duration,
        metrics: &Arc<RelayMetrics>,
        shutdown: &CancellationToken,
        owner: &TaskTracker,
    ) -> Result<Shards, MediaError> {
        let count = count.max(1);
        let gone = CancellationToken::new();
        let mut shards = Vec::with_capacity(count);
        for k in 0..count {
            let unavailable = |e: std::io::Error| {
                MediaError::Unavailable(format!("cannot start the relay thread {k}: {e}"))
            };
            let runtime = runtime(EVENT_INTERVAL).map_err(unavailable)?;
            let shard = Shard {
                index: k,
                handle: runtime.handle().clone(),
                tracker: TaskTracker::new(),
            };
            let (tracker, token) = (shard.tracker.clone(), owner.token());
            let (shutdown, gone) = (shutdown.clone(), gone.clone());
            let metrics = Arc::clone(metrics);
            std::thread::Builder::new()
                .name(format!("relay-{k}"))
                .spawn(move || {
                    runtime.block_on(async {
                        let packets = move || metrics.relayed(k).packets();
                        let pacing = async move {
                            if batch_interval.is_zero() {
                                return std::future::pending().await;
                            }
                            pace(
                                Pacing::new(batch_interval, Instant::now(), packets()),
                                packets,
                            )
                            .await;
                        };
                        tokio::select! {
                            () = shutdown.cancelled() => {}
                            () = gone.cancelled() => {}
                            () = pacing => {}
                        }
                        tracker.close();
                        tracker.wait().await;
                    });
                    drop(runtime);
                    drop(token);
                })
                .map_err(unavailable)?;
            shards.push(shard);
        }
        Ok(Shards {
            shards,
            next: AtomicUsize::new(0),
            _gone: gone.drop_guard(),
        })
    }

    /// The shard for the next session (round-robin).
    pub(crate) fn next(&self) -> &Shard {
        let k = self.next.fetch_add(1, Ordering::Relaxed) % self.shards.len();
        &self.shards[k]
    }

    /// Every shard, in thread order.
    pub(crate) fn all(&self) -> &[Shard] {
        &self.shards
    }

    /// Shard `k`, if there is one.
    pub(crate) fn get(&self, k: usize) -> Option<&Shard> {
        self.shards.get(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// How many of `n` tasks, each waiting for a datagram on its own socket, have run when the
    /// thread's main future (where the pacing runs) has sent them all and then done two rounds
    /// of the pacing (sleep, yield). The main future is polled first after each look at the
    /// sockets, so the tasks woken by the first look run after its second sleep.
    fn sessions_run_after_two_rounds(event_interval: u32, n: usize) -> usize {
        let runtime = runtime(event_interval).unwrap();
        runtime.block_on(async {
            let ran = Arc::new(AtomicUsize::new(0));
            let mut addrs = Vec::new();
            for _ in 0..n {
                let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                addrs.push(socket.local_addr().unwrap());
                let ran = ran.clone();
                tokio::spawn(async move {
                    socket.readable().await.unwrap();
                    ran.fetch_add(1, Ordering::Relaxed);
                });
            }
            // Every task is waiting for its socket after this.
            tokio::task::yield_now().await;
            let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            for addr in addrs {
                sender.send_to(b"rtp", addr).unwrap();
            }
            for _ in 0..2 {
                std::thread::sleep(Duration::from_millis(1));
                tokio::task::yield_now().await;
            }
            ran.load(Ordering::Relaxed)
        })
    }

    #[test]
    fn a_round_of_the_pacing_lets_every_woken_session_run() {
        assert_eq!(sessions_run_after_two_rounds(EVENT_INTERVAL, 300), 300);
        // tokio's default interval: the main future is polled again (and sleeps) after 61.
        assert!(sessions_run_after_two_rounds(61, 300) < 300);
    }

    #[tokio::test]
    async fn tasks_run_on_the_relay_threads_and_the_threads_end_with_them() {
        let shutdown = CancellationToken::new();
        let owner = TaskTracker::new();
        let metrics = Arc::new(RelayMetrics::new(2));
        let shards = Shards::start(2, Duration::ZERO, &metrics, &shutdown, &owner).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        for _ in 0..4 {
            let tx = tx.clone();
            let stop = shutdown.clone();
            shards.next().spawn(&owner, async move {
                let name = std::thread::current().name().map(str::to_owned);
                tx.send(name).await.unwrap();
                stop.cancelled().await;
            });
        }
        let mut names = Vec::new();
        for _ in 0..4 {
            names.push(rx.recv().await.unwrap().unwrap());
        }
        names.sort();
        assert_eq!(names, ["relay-0", "relay-0", "relay-1", "relay-1"]);
        shutdown.cancel();
        owner.close();
        tokio::time::timeout(Duration::from_secs(5), owner.wait())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn dropping_the_relay_ends_idle_threads() {
        let owner = TaskTracker::new();
        let metrics = Arc::new(RelayMetrics::new(1));
        let shards = Shards::start(
            1,
            Duration::from_millis(1),
            &metrics,
            &CancellationToken::new(),
            &owner,
        )
        .unwrap();
        drop(shards);
        owner.close();
        tokio::time::timeout(Duration::from_secs(5), owner.wait())
            .await
            .unwrap();
    }
}
