//! Bucket leases: how bindings expire in etcd without one lease, or one value write, per binding.
//!
//! Time is cut into buckets of `bucket` seconds. Every binding that must live until some instant
//! in a bucket is attached to that bucket's lease, which expires at the bucket's end. The lease id
//! is chosen by kubepbx and encodes the end, so any replica computes the same id without asking
//! etcd, and any watcher decodes the expiry from an event's lease alone:
//!
//! ```text
//!  63  62 ........ 48  47       46 ............................ 0
//!  0   TAG (0x6B70)    refresh  bucket end, Unix seconds
//! ```
//!
//! Each bucket has two leases, the same end: the *put* lease carries bindings written in full
//! (their value's own `expiresAt` is exact and is what readers report), the *refresh* lease
//! carries bindings refreshed without rewriting their value (readers report the bucket end).
//!
//! A replica grants a lease the first time it needs it (`LeaseGrant` with the id; "already
//! exists" means another replica did) and remembers it until its end ([`Granted`]).
//!
//! etcd 3.4 does not persist how much of a lease's TTL is left: a restart or a leader change
//! grants every lease its full TTL again. The id still tells the intended end, so a maintenance
//! pass revokes leases whose end is past ([`overdue`]).

use crate::time::UnixMillis;
use std::collections::HashMap;
use std::time::Duration;

/// Marks lease ids chosen by kubepbx (bits 48..=62; bit 63 stays 0 so ids are positive).
const TAG: i64 = 0x6B70;
const TAG_SHIFT: u32 = 48;
const REFRESH_BIT: i64 = 1 << 47;
const END_MASK: i64 = REFRESH_BIT - 1;
/// A lease is never chosen to end sooner than this after the write that uses it, so it cannot
/// expire between being granted and being attached.
const MIN_REMAINING: Duration = Duration::from_secs(1);
/// Expiries further ahead are cut to this (etcd refuses TTLs above 9·10⁹ s).
const MAX_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Bucket ends before this (2020-01-01) are not ours, whatever the tag says.
const PLAUSIBLE_SINCE_SECS: i64 = 1_577_836_800;

/// One bucket lease: its end and whether it carries refreshed bindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct BucketLease {
    end_secs: i64,
    refresh: bool,
}

impl BucketLease {
    /// The lease for a binding that must live until `expires_at`, written at `now`: the end of
    /// the first bucket that ends at or after both `expires_at` and `now` + 1 s (an expiry more
    /// than ten years ahead counts as ten years).
    pub(super) fn for_expiry(
        expires_at: UnixMillis,
        now: UnixMillis,
        bucket: Duration,
        refresh: bool,
    ) -> Self {
        let bucket_ms = bucket.as_secs().max(1) * 1000;
        let target = expires_at
            .min(now.plus(MAX_LIFETIME))
            .max(now.plus(MIN_REMAINING))
            .0;
        let end_ms = target.div_ceil(bucket_ms).saturating_mul(bucket_ms);
        let end_secs = i64::try_from(end_ms / 1000)
            .unwrap_or(END_MASK)
            .min(END_MASK);
        BucketLease { end_secs, refresh }
    }

    /// The etcd lease id.
    pub(super) fn id(self) -> i64 {
        let refresh = if self.refresh { REFRESH_BIT } else { 0 };
        (TAG << TAG_SHIFT) | refresh | self.end_secs
    }

    /// The lease behind an id, if kubepbx chose it.
    pub(super) fn decode(id: i64) -> Option<Self> {
        if id <= 0 || id >> TAG_SHIFT != TAG {
            return None;
        }
        let end_secs = id & END_MASK;
        (end_secs >= PLAUSIBLE_SINCE_SECS).then_some(BucketLease {
            end_secs,
            refresh: id & REFRESH_BIT != 0,
        })
    }

    /// When the lease ends.
    pub(super) fn end(self) -> UnixMillis {
        UnixMillis(
            u64::try_from(self.end_secs)
                .unwrap_or(0)
                .saturating_mul(1000),
        )
    }

    /// Whether bindings on this lease were refreshed (their value's expiry is stale).
    pub(super) fn is_refresh(self) -> bool {
        self.refresh
    }

    /// TTL to grant at `now` so the lease ends at [`end`](Self::end) (at least 1 s).
    pub(super) fn ttl_secs(self, now: UnixMillis) -> i64 {
        let ms = now.until(self.end()).as_millis();
        i64::try_from(ms.div_ceil(1000)).unwrap_or(i64::MAX).max(1)
    }
}

/// Leases this replica knows to exist in etcd, until their end.
#[derive(Debug, Default)]
pub(super) struct Granted {
    ends: HashMap<i64, UnixMillis>,
}

impl Granted {
    /// The leases among `wanted` not known to exist at `now`; forgets leases that ended.
    pub(super) fn missing(&mut self, wanted: &[BucketLease], now: UnixMillis) -> Vec<BucketLease> {
        self.ends.retain(|_, end| *end > now);
        wanted
            .iter()
            .copied()
            .filter(|l| !self.ends.contains_key(&l.id()))
            .collect()
    }

    /// Records that a lease exists.
    pub(super) fn insert(&mut self, lease: BucketLease) {
        self.ends.insert(lease.id(), lease.end());
    }

    /// Forgets leases (etcd said one of them is gone).
    pub(super) fn forget(&mut self, leases: &[BucketLease]) {
        for l in leases {
            self.ends.remove(&l.id());
        }
    }
}

/// Of the lease ids etcd lists, the kubepbx ones whose end is more than `grace` before `now`:
/// etcd extended them (restart, leader change) and they should be revoked.
pub(super) fn overdue(ids: &[i64], now: UnixMillis, grace: Duration) -> Vec<i64> {
    ids.iter()
        .copied()
        .filter(|id| BucketLease::decode(*id).is_some_and(|l| l.end().plus(grace) < now))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

    #[test]
    fn ids_round_trip_and_stay_positive() {
        for refresh in [false, true] {
            let l = BucketLease::for_expiry(
                NOW.plus(Duration::from_secs(3600)),
                NOW,
                Duration::from_secs(5),
                refresh,
            );
            assert!(l.id() > 0);
            assert_eq!(BucketLease::decode(l.id()), Some(l));
            assert_eq!(l.is_refresh(), refresh);
        }
        assert_eq!(BucketLease::decode(0), None);
        assert_eq!(BucketLease::decode(-5), None);
        assert_eq!(
            BucketLease::decode(0x694d_8b1e_3a5c_1234),
            None,
            "etcd's own ids"
        );
        assert_eq!(
            BucketLease::decode((TAG << TAG_SHIFT) | 12),
            None,
            "implausible end"
        );
    }

    #[test]
    fn the_bucket_end_is_never_before_the_expiry() {
        let bucket = Duration::from_secs(5);
        for offset_ms in [0, 1, 999, 1000, 3_999, 4_000, 4_001, 60_000, 3_600_123] {
            let expires = NOW.plus(Duration::from_millis(offset_ms));
            let l = BucketLease::for_expiry(expires, NOW, bucket, false);
            assert!(l.end() >= expires, "{offset_ms}");
            assert!(l.end() >= NOW.plus(MIN_REMAINING), "{offset_ms}");
            assert!(
                l.end().0 - expires.0.max(NOW.0 + 1000) < 5000,
                "{offset_ms}"
            );
            assert_eq!(l.end().0 % 5000, 0);
        }
        // Everything expiring within one bucket shares its lease.
        let a = BucketLease::for_expiry(NOW.plus(Duration::from_millis(60_001)), NOW, bucket, true);
        let b = BucketLease::for_expiry(NOW.plus(Duration::from_millis(64_999)), NOW, bucket, true);
        assert_eq!(a, b);
        // Absurd expiries are cut to what etcd accepts.
        let l = BucketLease::for_expiry(UnixMillis(u64::MAX), NOW, bucket, false);
        assert!(l.ttl_secs(NOW) <= 9_000_000_000);
        assert_eq!(BucketLease::decode(l.id()), Some(l));
        // A sub-second bucket means one second.
        let l = BucketLease::for_expiry(NOW, NOW, Duration::from_millis(200), false);
        assert_eq!(l.end(), NOW.plus(Duration::from_secs(1)));
    }

    #[test]
    fn ttl_covers_the_rest_of_the_bucket() {
        let l = BucketLease::for_expiry(
            NOW.plus(Duration::from_millis(7_300)),
            NOW,
            Duration::from_secs(5),
            false,
        );
        assert_eq!(l.end(), NOW.plus(Duration::from_secs(10)));
        assert_eq!(l.ttl_secs(NOW), 10);
        assert_eq!(l.ttl_secs(NOW.plus(Duration::from_millis(9_001))), 1);
        assert_eq!(l.ttl_secs(NOW.plus(Duration::from_secs(60))), 1);
    }

    #[test]
    fn granted_leases_are_remembered_until_their_end() {
        let bucket = Duration::from_secs(5);
        let soon = BucketLease::for_expiry(NOW, NOW, bucket, false);
        let later = BucketLease::for_expiry(NOW.plus(Duration::from_secs(60)), NOW, bucket, false);
        let mut granted = Granted::default();
        assert_eq!(granted.missing(&[soon, later], NOW), vec![soon, later]);
        granted.insert(soon);
        granted.insert(later);
        assert!(granted.missing(&[soon, later], NOW).is_empty());
        assert_eq!(granted.missing(&[soon, later], soon.end()), vec![soon]);
        granted.forget(&[later]);
        assert_eq!(granted.missing(&[later], NOW), vec![later]);
    }

    #[test]
    fn only_kubepbx_leases_past_their_end_are_overdue() {
        let bucket = Duration::from_secs(5);
        let grace = Duration::from_secs(30);
        let past = BucketLease::for_expiry(NOW, NOW, bucket, true);
        let now = past.end().plus(Duration::from_secs(31));
        let recent = BucketLease::for_expiry(now, now, bucket, false);
        let ids = [past.id(), recent.id(), 0x694d_8b1e_3a5c_1234, 7];
        assert_eq!(overdue(&ids, now, grace), vec![past.id()]);
        assert!(overdue(&ids, past.end().plus(grace), grace).is_empty());
    }
}
