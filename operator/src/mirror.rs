//! The operator's copy of what etcd holds: extension records (indexed by the Extension they came
//! from), bindings and registration statuses, kept current by the store's watch.
//!
//! [`Mirror`] is the sans-IO part: it applies a [`Snapshot`] or an [`Event`] and answers which
//! Extension (`namespace/name`, the record's `source`) the change concerns, so that Extension
//! is reconciled and its `.status` follows. [`follow`] is the task feeding it.

use crate::triggers::Triggers;
use kubepbx_api::records::{Binding, ExtensionRecord, RegStatus, UserKey};
use kubepbx_api::store::{Event, Snapshot, Store};
use kubepbx_api::time::UnixMillis;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// What etcd holds, as far as the operator cares.
#[derive(Debug, Default)]
pub struct Mirror {
    records: HashMap<UserKey, ExtensionRecord>,
    by_source: HashMap<String, BTreeSet<UserKey>>,
    bindings: HashMap<UserKey, HashMap<String, Arc<Binding>>>,
    statuses: HashMap<UserKey, RegStatus>,
    loaded: bool,
}

impl Mirror {
    /// Replaces everything with `snapshot`; returns every Extension concerned before or after.
    pub fn load(&mut self, snapshot: Snapshot) -> BTreeSet<String> {
        let mut touched: BTreeSet<String> = self.by_source.keys().cloned().collect();
        *self = Mirror {
            loaded: true,
            ..Mirror::default()
        };
        for record in snapshot.extensions {
            touched.insert(record.source.clone());
            self.put_record(record);
        }
        for binding in snapshot.bindings {
            self.bindings
                .entry(UserKey::new(&*binding.domain, &*binding.user))
                .or_default()
                .insert(binding.id.to_string(), binding);
        }
        self.statuses.extend(snapshot.statuses);
        touched
    }

    /// Applies one change; returns the Extension it concerns, if any.
    pub fn apply(&mut self, event: Event) -> Option<String> {
        match event {
            Event::ExtensionPut(record) => {
                let source = record.source.clone();
                let old = self.put_record(record);
                // A record moved from one Extension to another: both must look again.
                match old {
                    Some(old) if old != source => Some(old),
                    _ => Some(source),
                }
            }
            Event::ExtensionDeleted(key) => {
                self.bindings.remove(&key);
                self.statuses.remove(&key);
                let record = self.records.remove(&key)?;
                self.unindex(&record.source, &key);
                Some(record.source)
            }
            Event::BindingPut(binding) => {
                let key = UserKey::new(&*binding.domain, &*binding.user);
                self.bindings
                    .entry(key.clone())
                    .or_default()
                    .insert(binding.id.to_string(), binding);
                self.source_of(&key)
            }
            Event::BindingRefreshed { key, expires_at } => {
                // Only the expiry moves: the reconcile looks again when the shown one passes
                // (`report::first_expiry`), so a refresh — the most frequent change — asks for
                // nothing.
                let binding = self.bindings.get_mut(&key.user)?.get_mut(&key.id)?;
                Arc::make_mut(binding).expires_at = expires_at;
                None
            }
            Event::BindingDeleted(key) => {
                if let Some(all) = self.bindings.get_mut(&key.user) {
                    all.remove(&key.id);
                    if all.is_empty() {
                        self.bindings.remove(&key.user);
                    }
                }
                self.source_of(&key.user)
            }
            Event::StatusPut(key, status) => {
                self.statuses.insert(key.clone(), status);
                self.source_of(&key)
            }
            Event::Resync => None,
        }
    }

    /// Whether a snapshot has been loaded (before that, nothing here is known).
    pub fn is_loaded(&self) -> bool {
        self.loaded
    }

    /// The record stored under `key`.
    pub fn record(&self, key: &UserKey) -> Option<&ExtensionRecord> {
        self.records.get(key)
    }

    /// The keys of the records that came from the Extension `source` (`namespace/name`).
    pub fn keys_of(&self, source: &str) -> Vec<UserKey> {
        self.by_source
            .get(source)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The unexpired bindings of `key` at `now`, newest registration first.
    pub fn bindings(&self, key: &UserKey, now: UnixMillis) -> Vec<Arc<Binding>> {
        let mut live: Vec<Arc<Binding>> = self
            .bindings
            .get(key)
            .map(|all| {
                all.values()
                    .filter(|b| b.expires_at > now)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        live.sort_by(|a, b| (b.registered_at, &b.id).cmp(&(a.registered_at, &a.id)));
        live
    }

    /// The registration status (last success, failure, warning) of `key`.
    pub fn status(&self, key: &UserKey) -> Option<&RegStatus> {
        self.statuses.get(key)
    }

    fn source_of(&self, key: &UserKey) -> Option<String> {
        self.records.get(key).map(|r| r.source.clone())
    }

    /// Stores `record`; returns the source of the record it replaced.
    fn put_record(&mut self, record: ExtensionRecord) -> Option<String> {
        let key = record.key();
        self.by_source
            .entry(record.source.clone())
            .or_default()
            .insert(key.clone());
        let old = self.records.insert(key.clone(), record)?;
        let now = &self.records[&key].source;
        if old.source != *now {
            self.unindex(&old.source, &key);
        }
        Some(old.source)
    }

    fn unindex(&mut self, source: &str, key: &UserKey) {
        if let Some(keys) = self.by_source.get_mut(source) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_source.remove(source);
            }
        }
    }
}

/// Keeps `mirror` current from `store` and triggers the Extensions each change concerns; runs
/// until aborted. When the watch cannot be (re)opened it retries with backoff, up to 10 s.
pub async fn follow(store: Arc<dyn Store>, mirror: Arc<RwLock<Mirror>>, triggers: Triggers) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let (snapshot, mut subscription) = match store.watch().await {
            Ok(watching) => watching,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "reading etcd");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        backoff = Duration::from_millis(500);
        let touched = write(&mirror).load(snapshot);
        triggers.push_sources(touched);
        while let Some(event) = subscription.next().await {
            if event == Event::Resync {
                break;
            }
            let touched = write(&mirror).apply(event);
            triggers.push_sources(touched);
        }
        tracing::info!("etcd watch ended; reading etcd again");
    }
}

fn write(mirror: &RwLock<Mirror>) -> std::sync::RwLockWriteGuard<'_, Mirror> {
    mirror
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubepbx_api::RecordingPolicy;
    use kubepbx_api::ha1::Ha1Set;
    use kubepbx_api::records::{BindingKey, Transport};

    fn record(user: &str, source: &str) -> ExtensionRecord {
        ExtensionRecord {
            domain: "pbx.example.com".into(),
            extension: user.into(),
            display_name: None,
            ha1: Ha1Set {
                md5: "a".into(),
                sha256: "b".into(),
            },
            enabled: true,
            disabled_reason: None,
            max_contacts: 5,
            recording: RecordingPolicy::Never,
            source: source.into(),
            generation: 1,
        }
    }

    fn binding(user: &str, id: &str, registered_at: u64) -> Arc<Binding> {
        Arc::new(Binding {
            domain: "pbx.example.com".into(),
            user: user.into(),
            id: id.into(),
            contact: format!("sip:{user}@10.0.0.2").into(),
            q: None,
            source: "127.0.0.1:5070".parse().expect("addr"),
            transport: Transport::Udp,
            replica: "r1".into(),
            flow: 0,
            user_agent: None,
            instance: None,
            reg_id: None,
            call_id: "c".into(),
            cseq: 1,
            registered_at: UnixMillis(registered_at),
            expires_at: UnixMillis(registered_at + 60_000),
            nat: false,
        })
    }

    #[test]
    fn changes_name_the_extension_they_concern() {
        let mut m = Mirror::default();
        let touched = m.load(Snapshot {
            extensions: vec![record("1001", "office/ext-1001")],
            ..Snapshot::default()
        });
        assert_eq!(touched.into_iter().collect::<Vec<_>>(), ["office/ext-1001"]);
        let key = UserKey::new("pbx.example.com", "1001");
        let b = binding("1001", "x", 1_000);
        assert_eq!(
            m.apply(Event::BindingPut(b.clone())).as_deref(),
            Some("office/ext-1001")
        );
        assert_eq!(m.bindings(&key, UnixMillis(2_000)).len(), 1);
        assert!(m.bindings(&key, UnixMillis(61_000)).is_empty(), "expired");
        let refreshed = Event::BindingRefreshed {
            key: BindingKey {
                user: key.clone(),
                id: "x".into(),
            },
            expires_at: UnixMillis(200_000),
        };
        assert_eq!(m.apply(refreshed), None, "a refresh asks for no reconcile");
        assert_eq!(m.bindings(&key, UnixMillis(61_000)).len(), 1);
        // A binding of an extension without a record concerns no Extension.
        assert_eq!(m.apply(Event::BindingPut(binding("1002", "y", 0))), None);
        assert_eq!(
            m.apply(Event::ExtensionDeleted(key.clone())).as_deref(),
            Some("office/ext-1001")
        );
        assert!(m.bindings(&key, UnixMillis(2_000)).is_empty());
        assert!(m.keys_of("office/ext-1001").is_empty());
    }

    #[test]
    fn a_record_taken_over_by_another_extension_moves_its_index() {
        let mut m = Mirror::default();
        m.apply(Event::ExtensionPut(record("1001", "office/a")));
        let old = m.apply(Event::ExtensionPut(record("1001", "office/b")));
        assert_eq!(old.as_deref(), Some("office/a"), "the loser looks again");
        assert!(m.keys_of("office/a").is_empty());
        assert_eq!(m.keys_of("office/b").len(), 1);
    }

    #[test]
    fn newest_registration_first() {
        let mut m = Mirror::default();
        m.apply(Event::ExtensionPut(record("1001", "office/a")));
        m.apply(Event::BindingPut(binding("1001", "old", 1_000)));
        m.apply(Event::BindingPut(binding("1001", "new", 5_000)));
        let key = UserKey::new("pbx.example.com", "1001");
        let ids: Vec<_> = m
            .bindings(&key, UnixMillis(6_000))
            .iter()
            .map(|b| b.id.to_string())
            .collect();
        assert_eq!(ids, ["new", "old"]);
    }
}
