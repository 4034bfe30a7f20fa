//! The [`Authenticator`]: one per registrar replica, holding the nonce secret, the replica's
//! instance tag, the nonce sequence counter and the replay ring. Challenges are minted in
//! `challenge.rs`, responses checked in `verify.rs`.

use std::fmt;

use super::nonce::{NonceCodec, NonceFields};
use super::replay::ReplayRing;

/// Nonce lifetime and replay-tracking capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonceConfig {
    /// Seconds a nonce stays valid after it was issued (default 300). Older nonces are answered
    /// with [`AuthFailure::StaleNonce`](super::AuthFailure::StaleNonce).
    pub ttl_secs: u64,
    /// How many of the most recently issued nonces have their `nc` tracked (default 2^20, 8 MiB;
    /// clamped to 1..=2^24). Nonces issued earlier are stale even within `ttl_secs`, so under a
    /// flood of challenges legitimate phones get a `stale=true` re-challenge instead of the
    /// registrar growing without bound.
    pub replay_slots: usize,
}

impl Default for NonceConfig {
    fn default() -> Self {
        Self {
            ttl_secs: 300,
            replay_slots: 1 << 20,
        }
    }
}

/// Issues Digest challenges and verifies responses (see the [module docs](super)).
///
/// Sans-IO: time is passed in as unix seconds; the only outside input besides the arguments is
/// one random number drawn by [`Authenticator::new`] to start the sequence counter.
pub struct Authenticator {
    pub(super) codec: NonceCodec,
    pub(super) instance: u16,
    pub(super) config: NonceConfig,
    /// First sequence number this authenticator issued; nonces below it predate it.
    pub(super) first_seq: u64,
    /// Next sequence number to issue.
    pub(super) next_seq: u64,
    pub(super) ring: ReplayRing,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("secret", &"<redacted>")
            .field("instance", &self.instance)
            .field("config", &self.config)
            .field(
                "nonces_issued",
                &self.next_seq.saturating_sub(self.first_seq),
            )
            .finish()
    }
}

impl Authenticator {
    /// An authenticator for the replica tagged `instance`, with the cluster-wide nonce `secret`.
    ///
    /// The sequence counter starts at a random point in `0..2^62`, so a restarted replica (same
    /// secret, same tag) does not reuse the sequence numbers of its previous life: the previous
    /// life's nonces, whose `nc` history is lost, are classified as stale instead of being
    /// accepted again (which would allow replays across a restart).
    pub fn new(secret: [u8; 32], instance: u16, config: NonceConfig) -> Self {
        Self::with_first_seq(secret, instance, config, rand::random::<u64>() >> 2)
    }

    /// Like [`Authenticator::new`] with a chosen first sequence number, for deterministic tests.
    /// Production code should use `new`: two authenticators with the same secret, tag and first
    /// sequence number accept each other's nonces without sharing replay state.
    pub fn with_first_seq(
        secret: [u8; 32],
        instance: u16,
        config: NonceConfig,
        first_seq: u64,
    ) -> Self {
        Self {
            codec: NonceCodec::new(&secret),
            instance,
            config,
            first_seq,
            next_seq: first_seq,
            ring: ReplayRing::new(config.replay_slots),
        }
    }

    /// The instance tag put into every nonce.
    pub fn instance(&self) -> u16 {
        self.instance
    }

    /// The configuration in use.
    pub fn config(&self) -> &NonceConfig {
        &self.config
    }

    /// Mints a fresh nonce for `realm` and appends it to `out`.
    pub(super) fn mint_nonce_into(&mut self, realm: &str, now_unix_secs: u64, out: &mut String) {
        let fields = NonceFields {
            issued_at: now_unix_secs,
            seq: self.next_seq,
            instance: self.instance,
        };
        // Saturating: 2^62 nonces later the last sequence number repeats, which only makes
        // replays easier to detect.
        self.next_seq = self.next_seq.saturating_add(1);
        self.codec.mint_into(realm, fields, out);
    }
}
