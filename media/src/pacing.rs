//! Batched wake-ups for a busy relay thread ([`RelayConfig::batch_interval`]).
//!
//! An idle relay thread sleeps until a socket has a packet, so a lightly loaded relay forwards
//! every packet at once. Under load that costs more than the packets do: at 100 packets per
//! call per second, a thread with a few hundred calls is woken tens of thousands of times a
//! second, and each wake-up (the kernel putting the thread to sleep and waking it, in a virtual
//! machine an exit to the hypervisor as well) costs a few microseconds, more than relaying the
//! one or two packets it finds. So a thread that relays more than two packets per interval on
//! average stops waiting for sockets: it sleeps for one interval, relays everything that
//! arrived meanwhile, and sleeps again, the way a network card coalesces its interrupts. It goes
//! back to waking for each packet when it relays less than one packet per interval.
//!
//! A packet then waits at most one interval longer (1 ms by default: a jitter buffer absorbs
//! far more), and the thread is woken at most once per interval whatever the load. Timers and
//! new sessions wait for the end of the interval too. [`Pacing`] is the decision alone, a plain
//! function of the time and the thread's packet count; [`pace`] runs it on the thread.
//!
//! [`RelayConfig::batch_interval`]: crate::RelayConfig::batch_interval

use std::time::{Duration, Instant};

/// How often the load is judged.
const WINDOW: Duration = Duration::from_millis(200);
/// Batch from this many packets per interval on average …
const ENTER_PER_INTERVAL: u64 = 2;
/// … until it falls below this many.
const LEAVE_PER_INTERVAL: u64 = 1;

/// What the thread does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Sleep this long whatever arrives, then relay what did.
    Batch(Duration),
    /// Wake for every packet; come back after this long to judge the load again.
    Watch(Duration),
}

/// The batching decision of one relay thread (see the module docs).
#[derive(Debug)]
pub(crate) struct Pacing {
    interval: Duration,
    batching: bool,
    /// Start of the current judging window, and the packet count then.
    since: Instant,
    count_then: u64,
}

impl Pacing {
    /// A thread that batches its wake-ups in `interval` (non-zero) once busy; `count` is its
    /// packet count now.
    pub(crate) fn new(interval: Duration, now: Instant, count: u64) -> Pacing {
        Pacing {
            interval,
            batching: false,
            since: now,
            count_then: count,
        }
    }

    /// Whether the thread batches its wake-ups at the moment.
    #[cfg(test)]
    pub(crate) fn batching(&self) -> bool {
        self.batching
    }

    /// The next step, given the time and the number of packets the thread has relayed so far
    /// (a counter that only grows).
    pub(crate) fn next(&mut self, now: Instant, count: u64) -> Step {
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed >= WINDOW {
            let packets = count.saturating_sub(self.count_then);
            // packets per interval ≥ n  ⇔  packets × interval ≥ n × elapsed
            let per = |n: u64| u128::from(n) * elapsed.as_nanos();
            let load = u128::from(packets) * self.interval.as_nanos();
            if !self.batching && load >= per(ENTER_PER_INTERVAL) {
                self.batching = true;
            } else if self.batching && load < per(LEAVE_PER_INTERVAL) {
                self.batching = false;
            }
            self.since = now;
            self.count_then = count;
        }
        if self.batching {
            Step::Batch(self.interval)
        } else {
            Step::Watch(WINDOW.saturating_sub(now.saturating_duration_since(self.since)))
        }
    }
}

/// Runs `pacing` on the current relay thread forever; `count` reads the thread's packet count.
///
/// While batching, the thread is blocked in `std::thread::sleep` on purpose: that is the
/// interval in which packets gather in the sockets. `yield_now` then lets the runtime poll its
/// sockets without waiting (a task that yielded is due) and run every session with packets
/// before this task sleeps again.
pub(crate) async fn pace(mut pacing: Pacing, count: impl Fn() -> u64) {
    loop {
        match pacing.next(Instant::now(), count()) {
            Step::Batch(interval) => {
                std::thread::sleep(interval);
                tokio::task::yield_now().await;
            }
            Step::Watch(wait) => tokio::time::sleep(wait).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds `rate` packets per second for `for_` in steps of `step`; returns the last step.
    fn run(p: &mut Pacing, t: &mut Instant, count: &mut u64, rate: u64, for_: Duration) -> Step {
        let mut last = p.next(*t, *count);
        let end = *t + for_;
        while *t < end {
            let step = match last {
                Step::Batch(d) | Step::Watch(d) => d.max(MS),
            };
            *t += step;
            *count += rate * u64::try_from(step.as_micros()).unwrap() / 1_000_000;
            last = p.next(*t, *count);
        }
        last
    }

    #[test]
    fn an_idle_or_lightly_loaded_thread_wakes_for_every_packet() {
        let (mut t, mut count) = (Instant::now(), 0);
        let mut p = Pacing::new(MS, t, count);
        assert_eq!(p.next(t, count), Step::Watch(WINDOW));
        // 1,000 packets/s = 1 per interval: not busy enough.
        let last = run(&mut p, &mut t, &mut count, 1_000, Duration::from_secs(2));
        assert!(matches!(last, Step::Watch(_)), "{last:?}");
        assert!(!p.batching());
    }

    #[test]
    fn a_busy_thread_batches_and_stops_when_the_load_falls() {
        let (mut t, mut count) = (Instant::now(), 0);
        let mut p = Pacing::new(MS, t, count);
        // 50,000 packets/s (500 calls): batched within one window.
        let last = run(&mut p, &mut t, &mut count, 50_000, WINDOW * 2);
        assert_eq!(last, Step::Batch(MS));
        // Between the two thresholds: stays batched.
        let last = run(&mut p, &mut t, &mut count, 1_500, Duration::from_secs(1));
        assert_eq!(last, Step::Batch(MS));
        // Calls ended: back to waking for each packet within a window or two.
        let last = run(&mut p, &mut t, &mut count, 200, WINDOW * 2 + MS);
        assert!(matches!(last, Step::Watch(_)), "{last:?}");
        // And between the thresholds from below: stays unbatched.
        let last = run(&mut p, &mut t, &mut count, 1_500, Duration::from_secs(1));
        assert!(matches!(last, Step::Watch(_)), "{last:?}");
    }

    #[test]
    fn the_watch_step_ends_with_the_window() {
        let t = Instant::now();
        let mut p = Pacing::new(MS, t, 0);
        assert_eq!(p.next(t + 50 * MS, 10), Step::Watch(WINDOW - 50 * MS));
        // A late wake-up judges at once and starts a new window.
        assert_eq!(p.next(t + 3 * WINDOW, 20), Step::Watch(WINDOW));
    }

    #[test]
    fn a_counter_that_went_backwards_counts_as_no_packets() {
        let t = Instant::now();
        let mut p = Pacing::new(MS, t, 1_000_000);
        assert!(matches!(p.next(t + WINDOW, 5), Step::Watch(_)));
    }
}
