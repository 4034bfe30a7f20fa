//! The replica registry: which registrar and media replicas are alive, where to reach them and
//! how busy they are.
//!
//! Every replica announces itself under `{prefix}/replicas/{kind}/{id}` with a lease of a few
//! seconds that it keeps alive, so a replica that dies vanishes from the registry within the
//! lease's TTL. Registrars read `replicas/media/` to place calls on the least-loaded media
//! replica and `replicas/registrar/` to know which replica owns a flow and where to forward to
//! it; they accept forwarded SIP only from the internal addresses listed there.
//!
//! The etcd side (announcing, following) is [`crate::store::EtcdStore::announce`] and
//! [`crate::store::EtcdStore::replicas`].

use crate::time::UnixMillis;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;

/// What a replica does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaKind {
    /// A SIP registrar and proxy (`kubepbx registrar`).
    Registrar,
    /// A media relay (`kubepbx media`).
    Media,
}

impl ReplicaKind {
    /// The key segment (`registrar`, `media`).
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaKind::Registrar => "registrar",
            ReplicaKind::Media => "media",
        }
    }
}

impl fmt::Display for ReplicaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One replica's announcement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaRecord {
    /// What the replica does.
    pub kind: ReplicaKind,
    /// Its id (`--replica-id`, the pod name in Kubernetes); unique per kind.
    pub id: String,
    /// When the replica started.
    pub started_at: UnixMillis,
    /// Registrars: where other replicas forward SIP to it (`--internal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal: Option<SocketAddr>,
    /// Registrars: `host:port` phones reach it at (`--advertise` and the SIP port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip: Option<String>,
    /// Media replicas: base URL of the control API (`http://host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
    /// How busy it is.
    #[serde(default)]
    pub load: ReplicaLoad,
    /// The replica is shutting down: it takes no new calls or flows.
    #[serde(default)]
    pub draining: bool,
}

impl ReplicaRecord {
    /// A record with no addresses and no load yet.
    pub fn new(kind: ReplicaKind, id: impl Into<String>) -> Self {
        ReplicaRecord {
            kind,
            id: id.into(),
            started_at: UnixMillis::now(),
            internal: None,
            sip: None,
            control: None,
            load: ReplicaLoad::default(),
            draining: false,
        }
    }

    /// Its key under `prefix`.
    pub fn key(&self, prefix: &str) -> String {
        format!("{}{}", kind_prefix(prefix, self.kind), self.id)
    }
}

/// How busy a replica is (updated as it changes, at most about once a second).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaLoad {
    /// Media: live relay sessions. Registrars: calls in progress.
    pub sessions: u64,
    /// Media: free RTP port pairs.
    pub free_port_pairs: u64,
}

/// The prefix of every announcement of `kind` (ends with `/`).
pub fn kind_prefix(prefix: &str, kind: ReplicaKind) -> String {
    format!("{prefix}/replicas/{}/", kind.as_str())
}

/// Whether `id` can be a replica id: 1–63 characters of letters, digits, `-`, `_` and `.`
/// (pod names qualify).
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_ids() {
        let r = ReplicaRecord::new(ReplicaKind::Media, "media-0");
        assert_eq!(r.key("/kubepbx"), "/kubepbx/replicas/media/media-0");
        assert!(is_valid_id("registrar-7d9f-x2"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a/b"));
        assert!(!is_valid_id(&"a".repeat(64)));
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<ReplicaRecord>(&json).unwrap(), r);
    }
}
