//! Finished calls as the cluster shares them: every registrar replica writes the record of
//! each call it routed when the call ends, under `{prefix}/cdrs/{ended-at}/{id}`, so the admin
//! API of any replica lists the whole PBX's history and a replica's restart loses none of it.
//!
//! - `{ended-at}` is the end time as RFC 3339 UTC with second precision
//!   (`2026-11-21T10:00:00Z`): fixed width, so keys sort by end time and the newest records are
//!   one descending range read away; `{id}` is the call's id (no `/`, see
//!   [`is_valid_call_id`]).
//! - The value is the record as `GET /api/v1/cdrs` shows it (JSON, written by the registrar;
//!   this crate only reads the call's id from it, through [`CdrRecord`]).
//! - Records carry no lease: they outlive their writer. The store keeps the newest
//!   [`SHARED_CDR_KEEP`]; older ones are trimmed by whichever replica looks
//!   ([`crate::store::EtcdStore::trim_cdrs`]), so etcd's size stays bounded (a record is under
//!   1 KiB).
//! - Registrars read them from memory: each follows the newest few (as many as the API lists)
//!   with one read and a watch ([`crate::store::EtcdStore::follow_cdrs`]).
//!
//! The etcd side is [`crate::store::EtcdStore::save_cdrs`], `follow_cdrs` and `trim_cdrs`.

use crate::calls::is_valid_call_id;
use crate::time::UnixMillis;
use serde::de::DeserializeOwned;

/// Finished calls kept in etcd.
pub const SHARED_CDR_KEEP: usize = 100_000;

/// The prefix of every finished-call record (ends with `/`).
pub fn cdrs_prefix(prefix: &str) -> String {
    format!("{prefix}/cdrs/")
}

/// The key of the record of call `id` that ended at `ended`; `None` when `id` cannot be a call
/// id.
pub fn cdr_key(prefix: &str, ended: UnixMillis, id: &str) -> Option<String> {
    is_valid_call_id(id).then(|| format!("{}{}/{id}", cdrs_prefix(prefix), ended.to_rfc3339()))
}

/// The id of the call whose record is under `rest`, the part of a record's key after
/// [`cdrs_prefix`] (`{ended-at}/{id}`).
pub fn cdr_key_id(rest: &str) -> &str {
    rest.rsplit_once('/').map_or(rest, |(_, id)| id)
}

/// A finished call's record as a registrar reads it back (the registrar's own type: the
/// record is its JSON).
pub trait CdrRecord: DeserializeOwned + Clone + Send + Sync + 'static {
    /// The call's id, which its key names too.
    fn call_id(&self) -> &str;
}

/// One finished call to store: its id, when it ended, and its record (JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdrEntry {
    /// The call's id.
    pub id: String,
    /// When the call ended.
    pub ended: UnixMillis,
    /// The record, as the API shows it.
    pub json: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_end_time_and_ids_are_checked() {
        let early = cdr_key("/kubepbx", UnixMillis(1_795_000_000_000), "b-1-1").unwrap();
        let late = cdr_key("/kubepbx", UnixMillis(1_795_000_060_000), "a-1-1").unwrap();
        assert_eq!(early, "/kubepbx/cdrs/2026-11-18T11:06:40Z/b-1-1");
        assert!(early < late, "{early} sorts before {late}");
        assert!(early.starts_with(&cdrs_prefix("/kubepbx")));
        let rest = early.strip_prefix(&cdrs_prefix("/kubepbx")).unwrap();
        assert_eq!(cdr_key_id(rest), "b-1-1");
        assert_eq!(cdr_key("/kubepbx", UnixMillis(0), "a/b"), None);
        assert_eq!(cdr_key("/kubepbx", UnixMillis(0), ""), None);
    }
}
