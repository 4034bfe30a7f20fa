//! Bounded replay state: a ring of `replay_slots` entries indexed by nonce sequence number
//! (`seq % slots`), each holding the highest `nc` accepted for the nonce occupying it.
//!
//! Memory is fixed at construction (8 bytes a slot, zero pages until touched) and nothing is
//! allocated per nonce. A slot packs the nonce's generation (`seq / slots`, truncated to 32 bits)
//! with its highest `nc`, so a slot left over from an older nonce with the same index reads as
//! "never used". Nonces older than the last `slots` issued are refused by the caller through
//! [`ReplayRing::in_window`] before the ring is consulted.

/// Upper bound on the number of slots (128 MiB); larger configurations are clamped.
pub(crate) const MAX_SLOTS: usize = 1 << 24;
/// Highest-nc value marking a nonce used once without qop: nothing can follow it.
const BURNED: u32 = u32::MAX;

/// How a verified response uses its nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NonceUse {
    /// `qop=auth` with this nonce count: must exceed every count accepted before.
    Count(u32),
    /// No qop (RFC 2069): the nonce may be used exactly once.
    Once,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct ReplayRing {
    slots: Vec<u64>,
}

impl ReplayRing {
    /// A ring of `slots` entries, clamped to `1..=MAX_SLOTS`.
    pub(crate) fn new(slots: usize) -> Self {
        Self {
            // `vec![0; n]` allocates zeroed memory, which the OS maps lazily.
            slots: vec![0; slots.clamp(1, MAX_SLOTS)],
        }
    }

    /// Number of slots, i.e. how many of the most recent nonces are tracked.
    pub(crate) fn capacity(&self) -> u64 {
        u64::try_from(self.slots.len()).unwrap_or(u64::MAX)
    }

    /// Whether `seq` is one of the last `capacity` sequence numbers handed out, given that this
    /// authenticator issued `first_seq..next_seq`.
    pub(crate) fn in_window(&self, seq: u64, first_seq: u64, next_seq: u64) -> bool {
        seq >= first_seq && seq < next_seq && next_seq - seq <= self.capacity()
    }

    /// Records a use of nonce `seq`; returns false (and records nothing) if it is a replay.
    pub(crate) fn record(&mut self, seq: u64, nonce_use: NonceUse) -> bool {
        let n = self.capacity();
        let Ok(index) = usize::try_from(seq % n) else {
            return false;
        };
        // Truncation intended: two live nonces sharing a slot would be 2^32 generations apart.
        let generation = (seq / n) as u32;
        let Some(slot) = self.slots.get_mut(index) else {
            return false;
        };
        let highest = if (*slot >> 32) as u32 == generation {
            *slot as u32
        } else {
            0
        };
        let new_highest = match nonce_use {
            NonceUse::Count(nc) if nc > highest => nc,
            NonceUse::Once if highest == 0 => BURNED,
            _ => return false,
        };
        *slot = (u64::from(generation) << 32) | u64::from(new_highest);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use NonceUse::{Count, Once};

    #[test]
    fn nc_must_increase() {
        let mut r = ReplayRing::new(8);
        assert!(r.record(3, Count(1)));
        assert!(!r.record(3, Count(1)));
        assert!(r.record(3, Count(2)));
        assert!(r.record(3, Count(7)));
        assert!(!r.record(3, Count(5)));
        assert!(r.record(4, Count(1)), "other nonces are independent");
    }

    #[test]
    fn once_means_once() {
        let mut r = ReplayRing::new(8);
        assert!(r.record(1, Once));
        assert!(!r.record(1, Once));
        assert!(!r.record(1, Count(u32::MAX)));
        assert!(r.record(2, Count(1)));
        assert!(
            !r.record(2, Once),
            "a nonce used with qop cannot be reused without"
        );
    }

    #[test]
    fn slot_reuse_by_a_newer_generation_starts_fresh() {
        let mut r = ReplayRing::new(4);
        assert!(r.record(1, Count(9)));
        assert!(r.record(5, Count(1)), "seq 5 shares slot 1 with seq 1");
        assert!(!r.record(5, Count(1)));
        assert!(
            r.record(1 + (4 << 32), Count(1)),
            "generation wraps without panic"
        );
    }

    #[test]
    fn window() {
        let r = ReplayRing::new(4);
        // Issued 10..20: the last four are 16..=19.
        for seq in 16..20 {
            assert!(r.in_window(seq, 10, 20), "{seq}");
        }
        for seq in [0, 9, 10, 15, 20, u64::MAX] {
            assert!(!r.in_window(seq, 10, 20), "{seq}");
        }
        assert!(!r.in_window(0, 0, 0), "nothing issued yet");
    }

    #[test]
    fn zero_slots_is_clamped_to_one() {
        let mut r = ReplayRing::new(0);
        assert_eq!(r.capacity(), 1);
        assert!(r.record(u64::MAX, Count(1)));
    }
}
