//! An Extension's `.status` from what the reconcile decided and what etcd shows, and when it is
//! worth writing (sans-IO).
//!
//! The status says whether the credentials reached etcd (`Ready`, `CredentialsSynced`), who is
//! registered (`Registered`, `contacts`, up to ten `registrations`, newest first) and the last
//! failed attempt (`lastFailure`, as the registrars classified it).
//!
//! # Writing it: only on change, paced
//!
//! Phones refresh their registrations all the time; a status write per refresh would load the
//! API server for nothing. [`due`] decides:
//! - nothing changed: no write;
//! - the spec's outcome changed (`observedGeneration`, `domain`, `Ready`, `CredentialsSynced`):
//!   write now, the user is waiting for it;
//! - only the expiry of registrations moved (a refresh): no write while every expiry shown is
//!   still ahead; the Extension is looked at again when the first one passes ([`first_expiry`];
//!   a refresh alone does not even ask for a reconcile);
//! - registrations came or went, or a new failure: write, but at most once per `min_interval`
//!   per Extension.

use crate::conditions::{self, CREDENTIALS_SYNCED, READY, REGISTERED, Status, Wanted};
use crate::verdict::Verdict;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kubepbx_api::records::{Binding, RegStatus};
use kubepbx_api::status::{
    ExtensionStatus, FailureStatus, MAX_STATUS_REGISTRATIONS, RegistrationStatus,
};
use kubepbx_api::time::UnixMillis;
use std::sync::Arc;
use std::time::Duration;

/// Whether the record could be written to etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Etcd {
    /// Written, or already as wanted.
    Synced,
    /// etcd did not answer; the error as text.
    Unavailable(String),
}

/// Everything a status is made of.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// What the reconcile decided.
    pub verdict: &'a Verdict,
    /// `metadata.generation` of the Extension.
    pub generation: i64,
    /// The SIP domain in effect (`spec.domain` or the operator's `--domain`).
    pub domain: &'a str,
    /// Whether the record reached etcd.
    pub etcd: Etcd,
    /// Whether the operator's copy of etcd is current (loaded and etcd reachable).
    pub observed: bool,
    /// The live bindings of the extension, newest first (empty when it holds no record).
    pub bindings: &'a [Arc<Binding>],
    /// Its last registration outcomes.
    pub registration: Option<&'a RegStatus>,
    /// Now.
    pub now: UnixMillis,
}

/// The status the Extension should have, keeping the transition times of `previous`.
pub fn status(previous: Option<&ExtensionStatus>, facts: &Facts<'_>) -> ExtensionStatus {
    let now = timestamp(facts.now);
    let mut conditions = previous.map(|p| p.conditions.clone()).unwrap_or_default();
    let (ready, credentials) = match &facts.etcd {
        Etcd::Synced => (
            facts.verdict.ready.clone(),
            facts.verdict.credentials.clone(),
        ),
        Etcd::Unavailable(error) if facts.verdict.record.is_some() => {
            let message = format!(
                "cannot write the extension record to etcd ({error}); the registrars keep \
                 serving the credentials they had; retrying"
            );
            (
                Wanted::new(READY, Status::False, "EtcdUnavailable", message.clone()),
                Wanted::new(
                    CREDENTIALS_SYNCED,
                    Status::Unknown,
                    "EtcdUnavailable",
                    message,
                ),
            )
        }
        // Nothing was to be written: the verdict's reason is the one that matters.
        Etcd::Unavailable(_) => (
            facts.verdict.ready.clone(),
            facts.verdict.credentials.clone(),
        ),
    };
    let registered = registered(facts);
    for condition in [&ready, &credentials, &registered] {
        conditions::set(&mut conditions, condition, facts.generation, now);
    }
    // A disabled extension's bindings only wait for their expiry: nobody is served by them.
    let own = facts.verdict.record.is_some();
    let serving = facts.verdict.record.as_ref().is_some_and(|r| r.enabled);
    let bindings = if serving { facts.bindings } else { &[] };
    ExtensionStatus {
        observed_generation: Some(facts.generation),
        domain: Some(facts.domain.to_owned()),
        contacts: u32::try_from(bindings.len()).unwrap_or(u32::MAX),
        conditions,
        registrations: bindings
            .iter()
            .take(MAX_STATUS_REGISTRATIONS)
            .map(|b| registration(b))
            .collect(),
        last_failure: facts
            .registration
            .filter(|_| own)
            .and_then(|r| r.last_failure.as_ref())
            .map(|f| FailureStatus {
                reason: f.reason.as_str().to_owned(),
                at: f.at.to_rfc3339(),
                source: f.source.clone(),
                detail: f.detail.clone(),
            }),
    }
}

fn registered(facts: &Facts<'_>) -> Wanted {
    let ready = &facts.verdict.ready;
    match &facts.verdict.record {
        None => {
            let message = format!("no device can register: {}", ready.reason);
            return Wanted::new(REGISTERED, Status::False, "NotServed", message);
        }
        Some(record) if !record.enabled => {
            let message = if ready.status == Status::True {
                "no device can register: the extension is disabled (spec.enabled: false)".to_owned()
            } else {
                format!("no device can register until {} is fixed", ready.reason)
            };
            return Wanted::new(REGISTERED, Status::False, "Disabled", message);
        }
        Some(_) => {}
    }
    if !facts.observed {
        return Wanted::new(
            REGISTERED,
            Status::Unknown,
            "EtcdUnavailable",
            "etcd cannot be read; registrations are unknown until it answers".to_owned(),
        );
    }
    if let Some(newest) = facts.bindings.first() {
        let agent = newest.user_agent.as_deref().unwrap_or("a device");
        let message = match facts.bindings.len() {
            1 => format!("{agent} registered from {}", newest.source),
            n => format!(
                "{n} devices registered; newest: {agent} from {}",
                newest.source
            ),
        };
        return Wanted::new(REGISTERED, Status::True, "Registered", message);
    }
    let failure = facts
        .registration
        .and_then(|r| r.last_failure.as_ref())
        .filter(|f| {
            let success = facts.registration.and_then(|r| r.last_success.as_ref());
            success.is_none_or(|s| s.at <= f.at)
        });
    let message = match failure {
        Some(f) => format!(
            "no device is registered; the last attempt failed at {} from {}: {} ({})",
            f.at.to_rfc3339(),
            f.source,
            f.reason.as_str(),
            f.detail
        ),
        None => "no device is registered".to_owned(),
    };
    Wanted::new(REGISTERED, Status::False, "NotRegistered", message)
}

fn registration(b: &Binding) -> RegistrationStatus {
    RegistrationStatus {
        uri: b.contact.to_string(),
        source: b.source.to_string(),
        transport: b.transport.as_str().to_owned(),
        user_agent: b.user_agent.as_deref().map(str::to_owned),
        expires_at: b.expires_at.to_rfc3339(),
        replica: b.replica.to_string(),
    }
}

/// The conditions of `after` whose status or reason differ from `before` (or are new): each
/// becomes a Kubernetes Event.
pub fn transitions<'a>(
    before: Option<&ExtensionStatus>,
    after: &'a ExtensionStatus,
) -> Vec<&'a Condition> {
    [READY, CREDENTIALS_SYNCED, REGISTERED]
        .into_iter()
        .filter_map(|kind| {
            let now = conditions::find(&after.conditions, kind)?;
            let then = before.and_then(|b| conditions::find(&b.conditions, kind));
            let same = then.is_some_and(|t| t.status == now.status && t.reason == now.reason);
            (!same).then_some(now)
        })
        .collect()
}

/// When a status should be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Nothing worth writing changed.
    Unchanged,
    /// Now.
    Now,
    /// Not before this long (look again then).
    After(Duration),
}

/// Whether `next` should replace `previous` now (see the module documentation).
/// `last_write` is when this operator last wrote this Extension's status.
pub fn due(
    previous: Option<&ExtensionStatus>,
    next: &ExtensionStatus,
    last_write: Option<UnixMillis>,
    min_interval: Duration,
    now: UnixMillis,
) -> Due {
    let Some(previous) = previous else {
        return Due::Now;
    };
    if previous == next {
        return Due::Unchanged;
    }
    if essential(previous) != essential(next) {
        return Due::Now;
    }
    if without_expiry(previous) == without_expiry(next)
        && let Some(left) = first_expiry(previous, now)
    {
        return Due::After(left);
    }
    match last_write {
        Some(at) if at.plus(min_interval) > now => Due::After(now.until(at.plus(min_interval))),
        _ => Due::Now,
    }
}

/// How long until the first `expiresAt` the status shows passes (`None`: none ahead). A
/// refresh does not ask for a reconcile (it only moves expiries); the Extension is looked at
/// again then, so the status never shows a past expiry for a live registration for long.
pub fn first_expiry(status: &ExtensionStatus, now: UnixMillis) -> Option<Duration> {
    let first = status
        .registrations
        .iter()
        .filter_map(|r| r.expires_at.parse::<Timestamp>().ok())
        .min()?;
    let left = first.as_millisecond() - timestamp(now).as_millisecond();
    (left > 0).then(|| Duration::from_millis(left.unsigned_abs()))
}

/// What the user changed or is waiting for: the spec's outcome.
fn essential(s: &ExtensionStatus) -> impl PartialEq + '_ {
    let outcome = |kind| {
        conditions::find(&s.conditions, kind)
            .map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
    };
    (
        s.observed_generation,
        s.domain.as_deref(),
        outcome(READY),
        outcome(CREDENTIALS_SYNCED),
    )
}

fn without_expiry(status: &ExtensionStatus) -> ExtensionStatus {
    let mut status = status.clone();
    for r in &mut status.registrations {
        r.expires_at.clear();
    }
    status
}

fn timestamp(at: UnixMillis) -> Timestamp {
    Timestamp::from_millisecond(i64::try_from(at.0).unwrap_or(i64::MAX))
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::{Subject, decide};
    use kubepbx_api::records::{Failure, FailureReason, Success, Transport};
    use kubepbx_api::{ExtensionSpec, PasswordSecretRef, RecordingPolicy};
    use std::collections::BTreeMap;

    const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

    fn verdict(password: Option<&str>) -> Verdict {
        let spec = ExtensionSpec {
            extension: "1001".into(),
            domain: None,
            display_name: None,
            password_secret_ref: PasswordSecretRef {
                name: "ext-1001".into(),
                key: "password".into(),
            },
            enabled: true,
            max_contacts: 5,
            recording: RecordingPolicy::Never,
        };
        let data = password.map(|p| BTreeMap::from([("password".into(), p.as_bytes().to_vec())]));
        let subject = Subject {
            namespace: "office",
            name: "ext-1001",
            generation: 2,
            spec: &spec,
        };
        decide(subject, data.as_ref(), "pbx.example.com", None)
    }

    fn binding(expires_in: u64) -> Arc<Binding> {
        Arc::new(Binding {
            domain: "pbx.example.com".into(),
            user: "1001".into(),
            id: "d1".into(),
            contact: "sip:1001@192.168.1.23:5060".into(),
            q: None,
            source: "203.0.113.7:41234".parse().expect("addr"),
            transport: Transport::Udp,
            replica: "registrar-0".into(),
            flow: 0,
            user_agent: Some("MicroSIP/3.21.3".into()),
            instance: None,
            reg_id: None,
            call_id: "c".into(),
            cseq: 1,
            registered_at: UnixMillis(NOW.0 - 5_000),
            expires_at: UnixMillis(NOW.0 + expires_in),
            nat: false,
        })
    }

    fn facts<'a>(
        v: &'a Verdict,
        bindings: &'a [Arc<Binding>],
        reg: Option<&'a RegStatus>,
    ) -> Facts<'a> {
        Facts {
            verdict: v,
            generation: 2,
            domain: "pbx.example.com",
            etcd: Etcd::Synced,
            observed: true,
            bindings,
            registration: reg,
            now: NOW,
        }
    }

    fn find<'a>(s: &'a ExtensionStatus, kind: &str) -> (&'a str, &'a str) {
        let c = conditions::find(&s.conditions, kind).expect("condition");
        (c.status.as_str(), c.reason.as_str())
    }

    fn failure() -> RegStatus {
        RegStatus {
            last_success: Some(Success {
                at: UnixMillis(NOW.0 - 60_000),
                source: "203.0.113.7:41234".into(),
            }),
            last_failure: Some(Failure {
                reason: FailureReason::WrongPassword,
                at: UnixMillis(NOW.0 - 1_000),
                source: "203.0.113.7:41234".into(),
                detail: "the digest response does not match".into(),
            }),
            last_warning: None,
        }
    }

    #[test]
    fn a_registered_device_and_the_last_failure_are_shown() {
        let v = verdict(Some("pw"));
        let bindings = [binding(60_000)];
        let reg = failure();
        let s = status(None, &facts(&v, &bindings, Some(&reg)));
        assert_eq!(find(&s, READY), ("True", "Synced"));
        assert_eq!(find(&s, REGISTERED), ("True", "Registered"));
        assert_eq!(s.contacts, 1);
        let r = &s.registrations[0];
        assert_eq!(
            (r.transport.as_str(), r.replica.as_str()),
            ("udp", "registrar-0")
        );
        assert_eq!(r.user_agent.as_deref(), Some("MicroSIP/3.21.3"));
        let f = s.last_failure.as_ref().expect("failure");
        assert_eq!(f.reason, "WrongPassword");
        assert_eq!(s.domain.as_deref(), Some("pbx.example.com"));
    }

    #[test]
    fn not_registered_names_the_last_failure() {
        let v = verdict(Some("pw"));
        let reg = failure();
        let s = status(None, &facts(&v, &[], Some(&reg)));
        assert_eq!(find(&s, REGISTERED), ("False", "NotRegistered"));
        let c = conditions::find(&s.conditions, REGISTERED).expect("registered");
        assert!(c.message.contains("WrongPassword"), "{}", c.message);
    }

    #[test]
    fn etcd_down_is_a_reason_of_its_own() {
        let v = verdict(Some("pw"));
        let mut f = facts(&v, &[], None);
        f.etcd = Etcd::Unavailable("connection refused".into());
        f.observed = false;
        let s = status(None, &f);
        assert_eq!(find(&s, READY), ("False", "EtcdUnavailable"));
        assert_eq!(find(&s, CREDENTIALS_SYNCED), ("Unknown", "EtcdUnavailable"));
        assert_eq!(find(&s, REGISTERED), ("Unknown", "EtcdUnavailable"));
    }

    #[test]
    fn a_missing_secret_serves_nothing() {
        let v = verdict(None);
        let left = [binding(60_000)];
        let reg = failure();
        let s = status(None, &facts(&v, &left, Some(&reg)));
        assert_eq!(find(&s, READY), ("False", "SecretNotFound"));
        assert_eq!(find(&s, REGISTERED), ("False", "Disabled"));
        assert_eq!(
            s.contacts, 0,
            "bindings waiting for their expiry serve nobody"
        );
        assert!(s.registrations.is_empty());
        assert!(s.last_failure.is_some(), "the failure says why");
    }

    #[test]
    fn refreshes_are_not_written_while_the_shown_expiry_is_ahead() {
        let v = verdict(Some("pw"));
        let first = [binding(60_000)];
        let before = status(None, &facts(&v, &first, None));
        assert_eq!(first_expiry(&before, NOW), Some(Duration::from_secs(60)));
        let refreshed = [binding(120_000)];
        let after = status(Some(&before), &facts(&v, &refreshed, None));
        let interval = Duration::from_secs(2);
        assert_eq!(
            due(Some(&before), &after, Some(NOW), interval, NOW),
            Due::After(Duration::from_secs(60))
        );
        let later = UnixMillis(NOW.0 + 61_000);
        assert_eq!(
            due(Some(&before), &after, Some(NOW), interval, later),
            Due::Now
        );
        assert_eq!(
            due(Some(&before), &before.clone(), None, interval, NOW),
            Due::Unchanged
        );
    }

    #[test]
    fn only_changed_statuses_or_reasons_are_transitions() {
        let v = verdict(Some("pw"));
        let none = status(None, &facts(&v, &[], None));
        let kinds =
            |list: Vec<&Condition>| list.iter().map(|c| c.type_.clone()).collect::<Vec<_>>();
        assert_eq!(
            kinds(transitions(None, &none)),
            [READY, CREDENTIALS_SYNCED, REGISTERED]
        );
        assert!(transitions(Some(&none), &none).is_empty());
        let one = [binding(60_000)];
        let registered = status(Some(&none), &facts(&v, &one, None));
        assert_eq!(kinds(transitions(Some(&none), &registered)), [REGISTERED]);
    }

    #[test]
    fn registration_changes_are_paced_and_spec_outcomes_are_not() {
        let v = verdict(Some("pw"));
        let none = status(None, &facts(&v, &[], None));
        let one = [binding(60_000)];
        let registered = status(Some(&none), &facts(&v, &one, None));
        let interval = Duration::from_secs(2);
        let just_now = Some(UnixMillis(NOW.0 - 500));
        assert_eq!(
            due(Some(&none), &registered, just_now, interval, NOW),
            Due::After(Duration::from_millis(1_500))
        );
        assert_eq!(due(Some(&none), &registered, None, interval, NOW), Due::Now);
        let broken = verdict(None);
        let failed = status(Some(&none), &facts(&broken, &[], None));
        assert_eq!(due(Some(&none), &failed, just_now, interval, NOW), Due::Now);
    }
}
