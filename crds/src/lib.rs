//! The kubepbx API: what an extension is, what the PBX stores about it, and where.
//!
//! # Layout
//!
//! - [`extension`]: the `Extension` resource spec (`kubepbx.io/v1alpha1`) as users write it in
//!   manifests, with its validation rules.
//! - [`status`]: what the operator reports in an Extension's `.status`.
//! - [`records`]: what lives in the store: extension records (HA1 digests, never passwords),
//!   registration bindings, per-extension registration status with failure reasons.
//! - [`ha1`]: derivation of the digest HA1 values from a password.
//! - [`keys`]: the key layout shared by every store implementation (`ext/…`, `reg/…`, `status/…`).
//! - [`store`]: the [`Store`](store::Store) trait — a batched write path and a watch — and its
//!   embedded implementation used by `kubepbx up` and by tests.
//! - [`replicas`]: the replica registry (`replicas/{kind}/{id}`): who is alive, where, how busy.
//! - [`calls`]: calls in progress shared by the registrars (`calls/{id}`, `hangup/{id}`).
//! - [`cdrs`]: finished calls shared by the registrars (`cdrs/{ended-at}/{id}`).
//! - [`manifest`]: reading a folder of manifests (Extensions and Secrets) into extension records,
//!   and editing it for the admin API.
//! - [`admin`]: the admin API's requests to create or change an extension, checked with the
//!   manifest rules.

pub mod admin;
pub mod calls;
pub mod cdrs;
pub mod extension;
pub mod ha1;
pub mod keys;
pub mod manifest;
pub mod records;
pub mod replicas;
pub mod status;
pub mod store;
pub mod time;

pub use extension::{Extension, ExtensionSpec, PasswordSecretRef, RecordingPolicy};
pub use records::{
    Binding, BindingKey, ExtensionRecord, Failure, FailureReason, RegStatus, Transport, UserKey,
};
