//! Verification of Digest credentials against a stored [`Ha1`], with every failure classified
//! ([`AuthFailure`]) so the reason can reach the Extension status, metrics, logs and
//! `kubepbx doctor`.

use std::fmt;

use super::algorithm::{
    Algorithm, Ha1, QopAuth, ct_eq_hex, ha1_for, is_hex_of_len, response, stored_ha1,
};
use super::authenticator::Authenticator;
use super::credentials::{Credentials, CredentialsError};
use super::nonce::InvalidNonceReason;
use super::params::clip;
use super::replay::NonceUse;

/// A successful verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Algorithm the client used.
    pub algorithm: Algorithm,
    /// Nonce count accepted, or `None` for an RFC 2069 style response without qop (whose nonce
    /// is now used up).
    pub nc: Option<u32>,
    /// When the nonce was issued (unix seconds); it expires `ttl_secs` later.
    pub nonce_issued_at: u64,
}

/// Why an authentic-looking nonce cannot be accepted by this authenticator. The caller
/// re-challenges with `stale=true`; a phone that knows the password then succeeds silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleReason {
    /// Issued more than `ttl_secs` ago (or more than `ttl_secs` in the future).
    Expired,
    /// Issued by the replica with another instance tag, which alone tracks its nonce counts.
    /// Frequent occurrences mean a phone's requests are not sticking to one replica.
    OtherReplica,
    /// Issued by this replica's tag before the authenticator was (re)created, e.g. before a
    /// restart.
    BeforeRestart,
    /// Pushed out of the replay ring by `replay_slots` newer challenges (challenge flood).
    Evicted,
}

impl fmt::Display for StaleReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Expired => "it expired",
            Self::OtherReplica => "it was issued by another registrar replica",
            Self::BeforeRestart => "it was issued before this registrar restarted",
            Self::Evicted => "too many challenges were issued since (replay window overflow)",
        })
    }
}

/// Why a response was refused. `Display` is meant for humans (logs, status, doctor);
/// [`AuthFailure::reason`] is a bounded label for metrics. Text that came from the client is
/// truncated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// The response does not match the stored HA1: the phone has another password.
    #[error("wrong password: the digest response does not match the password stored for this user")]
    WrongPassword,
    /// The phone answered for another realm, usually a wrong domain setting on the phone.
    #[error(
        "realm mismatch: the phone answered for realm {got:?} but this domain's realm is \
         {expected:?}; check the domain configured on the phone"
    )]
    RealmMismatch {
        /// Realm in the credentials.
        got: String,
        /// Realm expected for the domain.
        expected: String,
    },
    /// The nonce is authentic but not usable here; re-challenge with `stale=true`.
    #[error("stale nonce: {0}; the phone should retry with the fresh challenge")]
    StaleNonce(StaleReason),
    /// The nonce was not issued by this PBX for this realm. Re-challenge (with `stale=true`,
    /// see [`AuthFailure::rechallenge_stale`]).
    #[error("invalid nonce: {0}")]
    InvalidNonce(InvalidNonceReason),
    /// The response is correct but its nonce count was already used (or the nonce was used
    /// once without qop): a replay, or a client reusing `nc`. Re-challenge without `stale`.
    #[error("replayed nonce: this nonce and nonce count were already used")]
    NonceReplay,
    /// `algorithm` other than MD5 and SHA-256 (e.g. MD5-sess, SHA-512-256, AKAv1-MD5).
    #[error("unsupported digest algorithm {0:?}; configure the phone for MD5 or SHA-256")]
    UnsupportedAlgorithm(String),
    /// `qop` other than `auth` (e.g. `auth-int`, which was never offered).
    #[error("unsupported qop {0:?}; only qop=auth (or no qop) is supported")]
    UnsupportedQop(String),
    /// No usable HA1 is stored for the algorithm the phone chose: credentials not synced.
    #[error("no {0} HA1 is stored for this user; the credentials are not synced")]
    MissingHa1(Algorithm),
    /// The credentials violate the Digest syntax (missing or bad nc/cnonce, response length).
    #[error("malformed credentials: {0}")]
    Malformed(String),
}

impl AuthFailure {
    /// A short, bounded label for metrics (`reason="wrong_password"`, …).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::WrongPassword => "wrong_password",
            Self::RealmMismatch { .. } => "realm_mismatch",
            Self::StaleNonce(_) => "stale_nonce",
            Self::InvalidNonce(_) => "invalid_nonce",
            Self::NonceReplay => "nonce_replay",
            Self::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            Self::UnsupportedQop(_) => "unsupported_qop",
            Self::MissingHa1(_) => "missing_ha1",
            Self::Malformed(_) => "malformed",
        }
    }

    /// Whether the re-challenge should carry `stale=true`, telling the phone to retry with the
    /// same password instead of reporting a failure (pjsip-based phones give up on a second 401
    /// without it). True for stale and invalid nonces: the digest was not checked, and a phone
    /// holding a nonce from another replica, a previous secret or a previous realm deserves a
    /// silent retry; a wrong password is then reported on the next attempt.
    pub fn rechallenge_stale(&self) -> bool {
        matches!(self, Self::StaleNonce(_) | Self::InvalidNonce(_))
    }
}

impl From<CredentialsError> for AuthFailure {
    fn from(e: CredentialsError) -> Self {
        Self::Malformed(e.to_string())
    }
}

impl Authenticator {
    /// Verifies `creds` sent with a request of SIP `method` (REGISTER, INVITE, …) against the
    /// user's stored `ha1`, for a domain whose realm is `expected_realm`.
    ///
    /// Checks, in this order (the first failing one is reported):
    /// 1. algorithm is MD5 or SHA-256 (absent = MD5) → [`AuthFailure::UnsupportedAlgorithm`];
    ///    qop is absent or `auth` → [`AuthFailure::UnsupportedQop`];
    /// 2. nc/cnonce/response are well-formed → [`AuthFailure::Malformed`];
    /// 3. realm equals `expected_realm` → [`AuthFailure::RealmMismatch`];
    /// 4. the nonce is ours for this realm → [`AuthFailure::InvalidNonce`], and usable here
    ///    (this instance, this incarnation, within ttl, still tracked) →
    ///    [`AuthFailure::StaleNonce`];
    /// 5. an HA1 for the algorithm is stored → [`AuthFailure::MissingHa1`];
    /// 6. the response matches, compared in constant time → [`AuthFailure::WrongPassword`];
    /// 7. nc exceeds every nc accepted for this nonce, or, without qop, the nonce is unused →
    ///    [`AuthFailure::NonceReplay`]. Only a correct response updates the replay state.
    ///
    /// Not checked here: that `creds.uri` matches the Request-URI and that `creds.username`
    /// is the user whose `ha1` was looked up — the caller does both.
    pub fn verify(
        &mut self,
        creds: &Credentials,
        method: &str,
        expected_realm: &str,
        ha1: &Ha1,
        now_unix_secs: u64,
    ) -> Result<Verified, AuthFailure> {
        // 1. What the phone speaks.
        let algorithm = match creds.algorithm.as_deref() {
            None => Algorithm::Md5,
            Some(a) => {
                Algorithm::parse(a).ok_or_else(|| AuthFailure::UnsupportedAlgorithm(clip(a)))?
            }
        };
        let qop = match creds.qop.as_deref() {
            None => None,
            Some(q) if q.eq_ignore_ascii_case("auth") => Some(q),
            Some(q) => return Err(AuthFailure::UnsupportedQop(clip(q))),
        };

        // 2. Well-formedness.
        let qop = match qop {
            None => None,
            Some(qop) => {
                let (Some(nc_str), Some(cnonce)) = (creds.nc.as_deref(), creds.cnonce.as_deref())
                else {
                    return Err(malformed("qop=auth requires nc and cnonce"));
                };
                let nc = parse_nc(nc_str)?;
                Some((
                    QopAuth {
                        qop,
                        nc: nc_str,
                        cnonce,
                    },
                    nc,
                ))
            }
        };
        if !is_hex_of_len(&creds.response, algorithm.hex_len()) {
            return Err(AuthFailure::Malformed(format!(
                "response must be {} hex digits for {algorithm}",
                algorithm.hex_len()
            )));
        }

        // 3. Realm.
        if creds.realm != expected_realm {
            return Err(AuthFailure::RealmMismatch {
                got: clip(&creds.realm),
                expected: clip(expected_realm),
            });
        }

        // 4. Nonce.
        let nonce = self
            .codec
            .open(expected_realm, &creds.nonce)
            .map_err(AuthFailure::InvalidNonce)?;
        if nonce.instance != self.instance {
            return Err(AuthFailure::StaleNonce(StaleReason::OtherReplica));
        }
        let ttl = self.config.ttl_secs;
        if now_unix_secs.saturating_sub(nonce.issued_at) > ttl
            || nonce.issued_at.saturating_sub(now_unix_secs) > ttl
        {
            return Err(AuthFailure::StaleNonce(StaleReason::Expired));
        }
        if !self
            .ring
            .in_window(nonce.seq, self.first_seq, self.next_seq)
        {
            let issued_by_us = nonce.seq >= self.first_seq && nonce.seq < self.next_seq;
            return Err(AuthFailure::StaleNonce(if issued_by_us {
                StaleReason::Evicted
            } else {
                StaleReason::BeforeRestart
            }));
        }

        // 5. Stored secret.
        let stored = stored_ha1(algorithm, ha1_for(ha1, algorithm))
            .ok_or(AuthFailure::MissingHa1(algorithm))?;

        // 6. Response.
        let expected = response(
            algorithm,
            stored.as_str(),
            &creds.nonce,
            method,
            &creds.uri,
            qop.map(|(q, _)| q),
        );
        if !ct_eq_hex(expected.as_bytes(), creds.response.as_bytes()) {
            return Err(AuthFailure::WrongPassword);
        }

        // 7. Replay.
        let nonce_use = match qop {
            Some((_, nc)) => NonceUse::Count(nc),
            None => NonceUse::Once,
        };
        if !self.ring.record(nonce.seq, nonce_use) {
            return Err(AuthFailure::NonceReplay);
        }
        Ok(Verified {
            algorithm,
            nc: qop.map(|(_, nc)| nc),
            nonce_issued_at: nonce.issued_at,
        })
    }
}

fn malformed(detail: &str) -> AuthFailure {
    AuthFailure::Malformed(detail.to_owned())
}

/// `nc`: exactly 8 hex digits, not zero.
fn parse_nc(nc: &str) -> Result<u32, AuthFailure> {
    if !is_hex_of_len(nc, 8) {
        return Err(AuthFailure::Malformed(format!(
            "nc must be 8 hex digits, got {:?}",
            clip(nc)
        )));
    }
    match u32::from_str_radix(nc, 16) {
        Ok(0) => Err(malformed(
            "nc 00000000 is invalid; nonce counts start at 00000001",
        )),
        Ok(n) => Ok(n),
        Err(_) => Err(malformed("nc must be 8 hex digits")),
    }
}
