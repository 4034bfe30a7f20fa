//! Calls in progress as the cluster shares them: every registrar replica writes the calls it
//! routes under `{prefix}/calls/{id}` and follows everyone's, so the admin API of any replica
//! lists every call of the PBX.
//!
//! A call record lives on its owner's announcement lease (see [`crate::replicas`]): it is
//! deleted when the call ends and vanishes with the lease when the owner dies. Hanging up a call
//! that another replica routes is a request under `{prefix}/hangup/{id}` (on a short lease of
//! the requester's): the owner follows those, hangs the call up (BYE both ways) and deletes the
//! request; the requester sees the call record go.
//!
//! The etcd side is [`crate::store::EtcdStore::calls`], [`crate::store::Announcement::owned`] and
//! [`crate::store::EtcdStore::request_hangup`].

use crate::time::UnixMillis;
use serde::{Deserialize, Serialize};

/// Where a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallPhase {
    /// The callee's phones ring.
    Ringing,
    /// Someone answered.
    Answered,
}

impl CallPhase {
    /// The API's word for it (`ringing`, `answered`).
    pub fn as_str(self) -> &'static str {
        match self {
            CallPhase::Ringing => "ringing",
            CallPhase::Answered => "answered",
        }
    }
}

/// One call in progress, as its owner shares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRecord {
    /// The call's API id (`<replica>-<unix seconds>-<number>`).
    pub id: String,
    /// The registrar replica that routes the call (received its INVITE).
    pub owner: String,
    /// The caller's extension number.
    pub from: String,
    /// The callee's extension number.
    pub to: String,
    /// Ringing or answered.
    pub state: CallPhase,
    /// When the INVITE arrived.
    pub started_at: UnixMillis,
    /// When the callee answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<UnixMillis>,
    /// The media replica relaying the call's audio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<String>,
    /// The relay session on that media replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

/// Someone asked the owner to hang a call up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HangupRequest {
    /// The replica whose API was asked.
    pub by: String,
    /// When.
    pub at: UnixMillis,
}

/// The prefix of every call record (ends with `/`).
pub fn calls_prefix(prefix: &str) -> String {
    format!("{prefix}/calls/")
}

/// The prefix of every hangup request (ends with `/`).
pub fn hangup_prefix(prefix: &str) -> String {
    format!("{prefix}/hangup/")
}

/// Whether `id` can be a call id in a key: 1–128 characters, no `/`, nothing invisible.
pub fn is_valid_call_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_ids_are_checked() {
        let record = CallRecord {
            id: "a-1795000000-3".into(),
            owner: "a".into(),
            from: "1001".into(),
            to: "1002".into(),
            state: CallPhase::Answered,
            started_at: UnixMillis(1_795_000_000_000),
            answered_at: Some(UnixMillis(1_795_000_002_000)),
            media: Some("m0".into()),
            session: Some("s1".into()),
        };
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains("\"state\":\"answered\""), "{json}");
        assert_eq!(serde_json::from_str::<CallRecord>(&json).unwrap(), record);
        assert_eq!(calls_prefix("/kubepbx"), "/kubepbx/calls/");
        assert_eq!(hangup_prefix("/p"), "/p/hangup/");
        assert!(is_valid_call_id("registrar-0-1795000000-12"));
        assert!(!is_valid_call_id("a/b"));
        assert!(!is_valid_call_id(""));
        assert!(!is_valid_call_id("a b"));
    }
}
