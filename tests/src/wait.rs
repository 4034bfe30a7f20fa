//! Polling: wait until a condition holds, with a deadline.
//!
//! Integration tests watch real processes, so "until the binding shows up in the API" is a poll,
//! not a sleep. The interval starts at 10 ms and doubles up to 200 ms, so a condition that holds
//! almost at once costs almost nothing and a slow one does not spin.

use std::time::{Duration, Instant};

/// Calls `condition` until it returns true or `timeout` has passed; returns whether it held.
/// The condition is always evaluated at least once, and once more at the deadline.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut interval = Duration::from_millis(10);
    loop {
        if condition() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(interval.min(deadline - now));
        interval = (interval * 2).min(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_true_as_soon_as_the_condition_holds() {
        let mut calls = 0;
        assert!(wait_until(Duration::from_secs(5), || {
            calls += 1;
            calls == 3
        }));
        assert_eq!(calls, 3);
    }

    #[test]
    fn returns_false_after_the_timeout() {
        let start = Instant::now();
        assert!(!wait_until(Duration::from_millis(50), || false));
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
