//! The conditions of an Extension's status, in the standard `metav1.Condition` shape.
//!
//! | type | `True` when | reasons when not |
//! |---|---|---|
//! | `Ready` | the extension is served as its spec says | any reason below |
//! | `CredentialsSynced` | its HA1 digests from the Secret are in etcd | `SecretNotFound`, `SecretKeyMissing`, `SecretKeyInvalid`, `PasswordEmpty`, `InvalidSpec`, `DuplicateExtension`, `EtcdUnavailable` |
//! | `Registered` | at least one device is registered | `NotRegistered` (the message names the last failure), `Disabled` (no device may register), `NotServed` (no record: the spec or a duplicate), `EtcdUnavailable` (Unknown) |
//!
//! [`set`] replaces a condition but keeps its `lastTransitionTime` while its status stays the
//! same, as Kubernetes conventions ask: the time says when the status changed, not when the
//! operator last looked.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// `Ready`: the extension is served as its spec says.
pub const READY: &str = "Ready";
/// `CredentialsSynced`: the HA1 digests derived from the Secret are in etcd.
pub const CREDENTIALS_SYNCED: &str = "CredentialsSynced";
/// `Registered`: at least one device is registered.
pub const REGISTERED: &str = "Registered";

/// A condition's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `"True"`.
    True,
    /// `"False"`.
    False,
    /// `"Unknown"`.
    Unknown,
}

impl Status {
    /// The API's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

/// One condition to set: type, status, reason (CamelCase) and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// `Ready`, `CredentialsSynced` or `Registered`.
    pub kind: &'static str,
    /// True, False or Unknown.
    pub status: Status,
    /// Why, as a CamelCase code.
    pub reason: &'static str,
    /// What it means and how to fix it.
    pub message: String,
}

impl Wanted {
    /// A condition of type `kind` with its status, reason and message.
    pub fn new(kind: &'static str, status: Status, reason: &'static str, message: String) -> Self {
        Wanted {
            kind,
            status,
            reason,
            message,
        }
    }
}

/// Sets `wanted` in `conditions` for `generation` at `now`: the condition of that type is
/// replaced, keeping its transition time when the status did not change; others stay.
pub fn set(conditions: &mut Vec<Condition>, wanted: &Wanted, generation: i64, now: Timestamp) {
    let status = wanted.status.as_str();
    let since = conditions
        .iter()
        .find(|c| c.type_ == wanted.kind && c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    let condition = Condition {
        type_: wanted.kind.to_owned(),
        status: status.to_owned(),
        reason: wanted.reason.to_owned(),
        message: wanted.message.clone(),
        observed_generation: Some(generation),
        last_transition_time: since,
    };
    match conditions.iter_mut().find(|c| c.type_ == wanted.kind) {
        Some(existing) => *existing = condition,
        None => conditions.push(condition),
    }
}

/// The condition of type `kind`, if set.
pub fn find<'a>(conditions: &'a [Condition], kind: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn wanted(status: Status, reason: &'static str) -> Wanted {
        Wanted {
            kind: READY,
            status,
            reason,
            message: format!("{reason} happened"),
        }
    }

    #[test]
    fn the_transition_time_moves_only_with_the_status() {
        let mut list = Vec::new();
        set(
            &mut list,
            &wanted(Status::False, "SecretNotFound"),
            1,
            at(100),
        );
        set(
            &mut list,
            &wanted(Status::False, "SecretKeyMissing"),
            2,
            at(200),
        );
        let ready = find(&list, READY).cloned();
        let ready = ready.as_ref();
        assert_eq!(ready.map(|c| c.last_transition_time.0), Some(at(100)));
        assert_eq!(ready.map(|c| c.reason.as_str()), Some("SecretKeyMissing"));
        assert_eq!(ready.and_then(|c| c.observed_generation), Some(2));
        set(&mut list, &wanted(Status::True, "Synced"), 2, at(300));
        assert_eq!(
            find(&list, READY).map(|c| (c.status.as_str(), c.last_transition_time.0)),
            Some(("True", at(300)))
        );
        set(
            &mut list,
            &Wanted {
                kind: REGISTERED,
                status: Status::Unknown,
                reason: "NotObserved",
                message: String::new(),
            },
            2,
            at(400),
        );
        assert_eq!(list.len(), 2, "one condition per type");
    }
}
