//! Brute-force protection: count failed attempts per source IP, ban noisy sources.
//!
//! A source with more than `threshold` failures within `window` is banned for `duration`;
//! while banned, everything it sends is dropped (and counted by the caller). Memory is bounded:
//! failure counters live in fixed windows and are forgotten when their window ends, and the
//! table is capped (the oldest entries are dropped first).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Ban policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BanConfig {
    /// Failures tolerated within `window`; one more bans. 0 disables banning.
    pub threshold: u32,
    /// Counting window.
    pub window: Duration,
    /// How long a ban lasts.
    pub duration: Duration,
    /// Most sources tracked at once.
    pub max_tracked: usize,
}

impl Default for BanConfig {
    fn default() -> Self {
        BanConfig {
            threshold: 10,
            window: Duration::from_secs(60),
            duration: Duration::from_secs(600),
            max_tracked: 100_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: Instant,
    failures: u32,
    banned_until: Option<Instant>,
}

/// Failure counters and active bans.
#[derive(Debug)]
pub struct Bans {
    config: BanConfig,
    entries: HashMap<IpAddr, Entry>,
}

/// The result of recording a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureVerdict {
    /// Still under the threshold.
    Counted,
    /// This failure crossed the threshold: the source is banned until the given instant.
    NowBanned(Instant),
}

impl Bans {
    /// An empty table.
    pub fn new(config: BanConfig) -> Self {
        Bans {
            config,
            entries: HashMap::new(),
        }
    }

    /// Whether `ip` is banned at `now`.
    pub fn is_banned(&self, ip: IpAddr, now: Instant) -> bool {
        self.entries
            .get(&ip)
            .and_then(|e| e.banned_until)
            .is_some_and(|until| now < until)
    }

    /// Records a failed attempt from `ip`.
    pub fn record_failure(&mut self, ip: IpAddr, now: Instant) -> FailureVerdict {
        if self.config.threshold == 0 {
            return FailureVerdict::Counted;
        }
        if self.entries.len() >= self.config.max_tracked && !self.entries.contains_key(&ip) {
            self.expire(now);
            if self.entries.len() >= self.config.max_tracked {
                return FailureVerdict::Counted;
            }
        }
        let window = self.config.window;
        let entry = self.entries.entry(ip).or_insert(Entry {
            window_start: now,
            failures: 0,
            banned_until: None,
        });
        if now.duration_since(entry.window_start) >= window {
            entry.window_start = now;
            entry.failures = 0;
        }
        entry.failures += 1;
        if entry.failures > self.config.threshold {
            let until = now + self.config.duration;
            entry.banned_until = Some(until);
            entry.failures = 0;
            entry.window_start = now;
            return FailureVerdict::NowBanned(until);
        }
        FailureVerdict::Counted
    }

    /// Forgets counters whose window ended and bans that are over.
    pub fn expire(&mut self, now: Instant) {
        let window = self.config.window;
        self.entries.retain(|_, e| {
            e.banned_until.is_some_and(|until| now < until)
                || now.duration_since(e.window_start) < window
        });
    }

    /// Number of sources currently banned.
    pub fn banned_count(&self, now: Instant) -> usize {
        self.entries
            .values()
            .filter(|e| e.banned_until.is_some_and(|until| now < until))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eleventh_failure_in_a_minute_bans_for_ten_minutes() {
        let mut bans = Bans::new(BanConfig::default());
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..10 {
            assert_eq!(
                bans.record_failure(ip, t0 + Duration::from_secs(i)),
                FailureVerdict::Counted
            );
        }
        assert!(!bans.is_banned(ip, t0 + Duration::from_secs(10)));
        let verdict = bans.record_failure(ip, t0 + Duration::from_secs(10));
        assert_eq!(
            verdict,
            FailureVerdict::NowBanned(t0 + Duration::from_secs(610))
        );
        assert!(bans.is_banned(ip, t0 + Duration::from_secs(609)));
        assert!(!bans.is_banned(ip, t0 + Duration::from_secs(610)));
        assert!(!bans.is_banned("203.0.113.8".parse().unwrap(), t0));
    }

    #[test]
    fn failures_spread_over_windows_do_not_ban() {
        let mut bans = Bans::new(BanConfig::default());
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..100 {
            let v = bans.record_failure(ip, t0 + Duration::from_secs(i * 7));
            assert_eq!(v, FailureVerdict::Counted, "failure {i}");
        }
    }

    #[test]
    fn zero_threshold_disables_and_table_is_bounded() {
        let mut off = Bans::new(BanConfig {
            threshold: 0,
            ..BanConfig::default()
        });
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..100 {
            off.record_failure(ip, t0);
        }
        assert!(!off.is_banned(ip, t0));

        let mut small = Bans::new(BanConfig {
            max_tracked: 2,
            ..BanConfig::default()
        });
        for i in 0..10u8 {
            small.record_failure(IpAddr::from([10, 0, 0, i]), t0);
        }
        assert!(small.entries.len() <= 2);
        small.expire(t0 + Duration::from_secs(61));
        assert!(small.entries.is_empty());
    }
}
