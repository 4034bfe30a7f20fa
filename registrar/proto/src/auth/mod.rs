//! SIP Digest authentication (RFC 7616, RFC 8760 algorithm names, RFC 3261 §22), sans-IO.
//!
//! # Flow
//!
//! 1. A REGISTER (or INVITE) arrives without credentials, or they failed. The caller asks
//!    [`Authenticator::challenge`] for two header values and sends 401 with two
//!    `WWW-Authenticate` headers (407 with `Proxy-Authenticate` for INVITE), SHA-256 first and
//!    MD5 last, in that order.
//! 2. The phone answers with an `Authorization` header; the caller parses its value with
//!    [`parse_credentials`], looks the user up by `username` and domain (unknown user is the
//!    caller's own failure reason) and calls [`Authenticator::verify`] with the stored [`Ha1`].
//! 3. On [`AuthFailure`], the caller records [`AuthFailure::reason`] and the `Display` text, and
//!    re-challenges, with `stale=true` when [`AuthFailure::rechallenge_stale`] says so.
//!
//! # Nonces
//!
//! Nonces are stateless (see `nonce.rs` for the byte layout): issue time, a per-authenticator
//! sequence number and the replica's instance tag, authenticated with a truncated HMAC-SHA256
//! over those fields and the realm under a 32-byte secret shared by the cluster. Classification:
//!
//! - garbled, forged, other realm, other secret → [`AuthFailure::InvalidNonce`] (the digest is
//!   not checked; re-challenge with `stale=true` so a phone holding an old nonce retries
//!   silently, and a wrong password shows up on the next attempt);
//! - authentic but expired, issued by another instance tag, issued before this authenticator
//!   existed (restart), or evicted from the replay ring → [`AuthFailure::StaleNonce`].
//!
//! Replay state is a fixed-size ring indexed by sequence number holding the highest `nc` seen
//! (see `replay.rs`). It is only updated after the response was found correct, so a wrong
//! response cannot burn a phone's nonce.
//!
//! # qop
//!
//! `qop=auth` is offered and verified with nonce counts. Responses without `qop` (RFC 2069, old
//! desk phones) are accepted, and their nonce may be used once. `qop=auth-int` is never offered
//! and is refused as [`AuthFailure::UnsupportedQop`].
//!
//! Nothing here logs; `Debug` of [`Ha1`], [`Credentials`] and [`Authenticator`] redacts HA1s,
//! responses and the secret.

mod algorithm;
mod authenticator;
mod challenge;
mod credentials;
mod nonce;
mod params;
mod replay;
mod verify;

#[cfg(test)]
mod tests;

pub use algorithm::{Algorithm, Ha1, HexDigest, QopAuth, ha1, response};
pub use authenticator::{Authenticator, NonceConfig};
pub use credentials::{Credentials, CredentialsError, MAX_CREDENTIALS_LEN, parse_credentials};
pub use nonce::InvalidNonceReason;
pub use verify::{AuthFailure, StaleReason, Verified};
