//! The store contract, as test functions every [`Store`] implementation must pass.
//!
//! Each `contract_*` function takes a fresh, empty store through `&dyn Store` and panics on a
//! violation. They live in this crate (`#[cfg(test)]`, `pub(crate)`) because every
//! implementation does too: the etcd store runs the same functions from its own tests
//! (`etcd/tests.rs`). If a store outside this crate ever needs them, they move behind the
//! `testing` cargo feature.
//!
//! Below the contract: the embedded store runs it in memory and on disk, then its own tests
//! (expiry sweep, persistence, restart, compaction, crash simulations, damaged files).

use super::{Event, Snapshot, Store, Subscription, Write};
use crate::extension::RecordingPolicy;
use crate::ha1::Ha1Set;
use crate::records::{
    Binding, BindingKey, ExtensionRecord, Failure, FailureReason, RegStatus, Success, Transport,
    UserKey,
};
use crate::time::UnixMillis;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// How long a test waits for an event that must come.
const EVENT_WAIT: Duration = Duration::from_secs(10);

pub(crate) fn record(domain: &str, user: &str) -> ExtensionRecord {
    ExtensionRecord {
        domain: domain.to_owned(),
        extension: user.to_owned(),
        display_name: Some(format!("User {user}")),
        ha1: Ha1Set::derive(user, domain, "secret"),
        enabled: true,
        disabled_reason: None,
        max_contacts: 5,
        recording: RecordingPolicy::Never,
        source: format!("default/ext-{user}"),
        generation: 1,
    }
}

pub(crate) fn binding(domain: &str, user: &str, id: &str, expires_at: UnixMillis) -> Arc<Binding> {
    Arc::new(Binding {
        domain: domain.into(),
        user: user.into(),
        id: id.into(),
        contact: format!("sip:{user}@192.0.2.10:5060;transport=udp;ob={id}").into(),
        q: Some(1000),
        source: "198.51.100.7:40123".parse().expect("address"),
        transport: Transport::Udp,
        replica: "registrar-0".into(),
        flow: 0,
        user_agent: Some("MicroSIP/3.21.3".into()),
        instance: Some(format!("<urn:uuid:{id}>").into()),
        reg_id: Some(1),
        call_id: format!("call-{id}").into(),
        cseq: 7,
        registered_at: UnixMillis(1_700_000_000_000),
        expires_at,
        nat: false,
    })
}

pub(crate) fn status(at: u64) -> RegStatus {
    RegStatus {
        last_success: Some(Success {
            at: UnixMillis(at),
            source: "198.51.100.7:40123".to_owned(),
        }),
        last_failure: Some(Failure {
            reason: FailureReason::WrongPassword,
            at: UnixMillis(at - 1),
            source: "198.51.100.7:40123".to_owned(),
            detail: "digest response does not match".to_owned(),
        }),
        last_warning: None,
    }
}

fn key(domain: &str, user: &str, id: &str) -> BindingKey {
    BindingKey {
        user: UserKey::new(domain, user),
        id: id.to_owned(),
    }
}

fn in_an_hour() -> UnixMillis {
    UnixMillis::now().plus(Duration::from_secs(3600))
}

/// The next event, failing the test when none comes in time or the store went away.
pub(crate) async fn next_event(sub: &mut Subscription) -> Event {
    match tokio::time::timeout(EVENT_WAIT, sub.next()).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!("the store closed the subscription"),
        Err(_) => panic!("no event within {EVENT_WAIT:?}"),
    }
}

/// Applies a status put as a marker and returns every event before it: proves that nothing
/// else was sent (events arrive in order).
pub(crate) async fn events_until_marker(store: &dyn Store, sub: &mut Subscription) -> Vec<Event> {
    let marker = UserKey::new("marker.invalid", "marker");
    store
        .apply(vec![Write::PutStatus(marker.clone(), RegStatus::default())])
        .await
        .expect("apply marker");
    let mut seen = Vec::new();
    loop {
        match next_event(sub).await {
            Event::StatusPut(user, _) if user == marker => return seen,
            event => seen.push(event),
        }
    }
}

fn binding_in<'a>(snapshot: &'a Snapshot, key: &BindingKey) -> Option<&'a Arc<Binding>> {
    snapshot.bindings.iter().find(|b| b.key() == *key)
}

/// Puts are visible through the subscription, in order, and in the next snapshot; a put
/// replaces.
pub(crate) async fn contract_put_and_read_back(store: &dyn Store) {
    let (snapshot, mut sub) = store.watch().await.expect("watch");
    assert!(snapshot.extensions.is_empty() && snapshot.bindings.is_empty());
    assert!(snapshot.statuses.is_empty(), "a fresh store is empty");

    let ext = record("pbx.example.com", "1001");
    let b = binding("pbx.example.com", "1001", "a1", in_an_hour());
    let user = ext.key();
    store
        .apply(vec![
            Write::PutExtension(ext.clone()),
            Write::PutBinding(Arc::clone(&b)),
            Write::PutStatus(user.clone(), status(1_700_000_000_500)),
        ])
        .await
        .expect("apply");
    assert_eq!(next_event(&mut sub).await, Event::ExtensionPut(ext.clone()));
    assert_eq!(
        next_event(&mut sub).await,
        Event::BindingPut(Arc::clone(&b))
    );
    assert_eq!(
        next_event(&mut sub).await,
        Event::StatusPut(user.clone(), status(1_700_000_000_500))
    );

    let (snapshot, _) = store.watch().await.expect("watch");
    assert_eq!(snapshot.extensions, vec![ext.clone()]);
    assert_eq!(snapshot.bindings, vec![b]);
    assert_eq!(
        snapshot.statuses,
        vec![(user.clone(), status(1_700_000_000_500))]
    );

    let mut renamed = ext;
    renamed.display_name = Some("Reception".to_owned());
    renamed.generation = 2;
    store
        .apply(vec![Write::PutExtension(renamed.clone())])
        .await
        .expect("apply");
    assert_eq!(
        next_event(&mut sub).await,
        Event::ExtensionPut(renamed.clone())
    );
    let (snapshot, _) = store.watch().await.expect("watch");
    assert_eq!(snapshot.extensions, vec![renamed]);
}

/// Deleting an extension removes its record, bindings and status, and nothing of others.
pub(crate) async fn contract_delete_extension_cascades(store: &dyn Store) {
    let d = "pbx.example.com";
    store
        .apply(vec![
            Write::PutExtension(record(d, "1001")),
            Write::PutBinding(binding(d, "1001", "a1", in_an_hour())),
            Write::PutBinding(binding(d, "1001", "a2", in_an_hour())),
            Write::PutStatus(UserKey::new(d, "1001"), status(1_700_000_000_500)),
            Write::PutExtension(record(d, "1002")),
            Write::PutBinding(binding(d, "1002", "b1", in_an_hour())),
            // A user whose key starts like 1001's: must survive the cascade.
            Write::PutExtension(record(d, "10010")),
            Write::PutBinding(binding(d, "10010", "c1", in_an_hour())),
        ])
        .await
        .expect("apply");
    let (_, mut sub) = store.watch().await.expect("watch");
    store
        .apply(vec![Write::DeleteExtension(UserKey::new(d, "1001"))])
        .await
        .expect("apply");
    let events = events_until_marker(store, &mut sub).await;
    assert!(events.contains(&Event::ExtensionDeleted(UserKey::new(d, "1001"))));
    for event in &events {
        match event {
            Event::ExtensionDeleted(u) => assert_eq!(u, &UserKey::new(d, "1001")),
            Event::BindingDeleted(k) => assert_eq!(k.user, UserKey::new(d, "1001")),
            other => panic!("unexpected event {other:?}"),
        }
    }

    let (snapshot, _) = store.watch().await.expect("watch");
    let users: BTreeSet<String> = snapshot
        .extensions
        .iter()
        .map(|e| e.extension.clone())
        .collect();
    assert_eq!(
        users,
        BTreeSet::from(["1002".to_owned(), "10010".to_owned()])
    );
    let ids: BTreeSet<String> = snapshot.bindings.iter().map(|b| b.id.to_string()).collect();
    assert_eq!(ids, BTreeSet::from(["b1".to_owned(), "c1".to_owned()]));
    assert!(
        snapshot
            .statuses
            .iter()
            .all(|(u, _)| u != &UserKey::new(d, "1001")),
        "the status goes with the extension"
    );
}

/// Deleting a binding sends one event; deleting a missing one sends none.
pub(crate) async fn contract_delete_binding(store: &dyn Store) {
    let d = "pbx.example.com";
    store
        .apply(vec![
            Write::PutBinding(binding(d, "1001", "a1", in_an_hour())),
            Write::PutBinding(binding(d, "1001", "a2", in_an_hour())),
        ])
        .await
        .expect("apply");
    let (_, mut sub) = store.watch().await.expect("watch");
    store
        .apply(vec![
            Write::DeleteBinding(key(d, "1001", "a1")),
            Write::DeleteBinding(key(d, "1001", "missing")),
        ])
        .await
        .expect("apply");
    let events = events_until_marker(store, &mut sub).await;
    assert_eq!(events, vec![Event::BindingDeleted(key(d, "1001", "a1"))]);
    let (snapshot, _) = store.watch().await.expect("watch");
    assert_eq!(snapshot.bindings.len(), 1);
    assert_eq!(&*snapshot.bindings[0].id, "a2");
}

/// A refresh changes only the expiry, and is visible in later snapshots; refreshing a missing
/// binding does nothing. The store may round the new expiry up by at most `rounding`.
pub(crate) async fn contract_refresh_extends_binding(store: &dyn Store, rounding: Duration) {
    let d = "pbx.example.com";
    let first = in_an_hour();
    let later = first.plus(Duration::from_secs(1800));
    let b = binding(d, "1001", "a1", first);
    store
        .apply(vec![Write::PutBinding(Arc::clone(&b))])
        .await
        .expect("apply");
    let (_, mut sub) = store.watch().await.expect("watch");
    store
        .apply(vec![
            Write::RefreshBinding {
                key: b.key(),
                expires_at: later,
            },
            Write::RefreshBinding {
                key: key(d, "1001", "missing"),
                expires_at: later,
            },
        ])
        .await
        .expect("apply");
    let events = events_until_marker(store, &mut sub).await;
    let reported = match events.as_slice() {
        [Event::BindingRefreshed { key, expires_at }] if *key == b.key() => *expires_at,
        other => panic!("expected one refresh of {:?}, got {other:?}", b.key()),
    };
    assert!(
        reported >= later && reported <= later.plus(rounding),
        "refreshed to {reported:?}, asked {later:?} (rounding {rounding:?})"
    );
    let (snapshot, _) = store.watch().await.expect("watch");
    assert_eq!(
        snapshot.bindings.len(),
        1,
        "a refresh never creates a binding"
    );
    let mut expected = Binding::clone(&b);
    expected.expires_at = reported;
    assert_eq!(*snapshot.bindings[0], expected);
}

/// One batch may put, refresh and delete the same binding several times: the writes apply in
/// order, with their events in order.
pub(crate) async fn contract_one_batch_touches_a_key_repeatedly(
    store: &dyn Store,
    rounding: Duration,
) {
    let d = "pbx.example.com";
    let b = binding(d, "1001", "a1", in_an_hour());
    let later = in_an_hour().plus(Duration::from_secs(600));
    let (_, mut sub) = store.watch().await.expect("watch");
    store
        .apply(vec![
            Write::PutExtension(record(d, "1001")),
            Write::PutBinding(Arc::clone(&b)),
            Write::RefreshBinding {
                key: b.key(),
                expires_at: later,
            },
            Write::DeleteBinding(b.key()),
            Write::RefreshBinding {
                key: b.key(),
                expires_at: later,
            },
            Write::PutBinding(Arc::clone(&b)),
            Write::PutStatus(UserKey::new(d, "1001"), status(1_700_000_000_500)),
            Write::DeleteExtension(UserKey::new(d, "1001")),
            Write::PutExtension(record(d, "1001")),
        ])
        .await
        .expect("apply");
    let mut events = events_until_marker(store, &mut sub).await;
    assert_eq!(events.len(), 9, "{events:#?}");
    match events[2] {
        Event::BindingRefreshed {
            ref key,
            expires_at,
        } if *key == b.key() && expires_at >= later && expires_at <= later.plus(rounding) => {
            events[2] = Event::BindingRefreshed {
                key: b.key(),
                expires_at: later,
            };
        }
        ref other => panic!("expected the refresh, got {other:?}"),
    }
    let user = UserKey::new(d, "1001");
    assert_eq!(
        events,
        vec![
            Event::ExtensionPut(record(d, "1001")),
            Event::BindingPut(Arc::clone(&b)),
            Event::BindingRefreshed {
                key: b.key(),
                expires_at: later,
            },
            Event::BindingDeleted(b.key()),
            Event::BindingPut(Arc::clone(&b)),
            Event::StatusPut(user.clone(), status(1_700_000_000_500)),
            Event::ExtensionDeleted(user),
            Event::BindingDeleted(b.key()),
            Event::ExtensionPut(record(d, "1001")),
        ]
    );
    let (snapshot, _) = store.watch().await.expect("watch");
    assert_eq!(snapshot.extensions, vec![record(d, "1001")]);
    assert!(snapshot.bindings.is_empty());
    assert!(
        snapshot.statuses.iter().all(|(u, _)| u.user != "1001"),
        "the status went with the extension"
    );
}

/// A batch larger than any one request the store makes (etcd: 128 operations) is applied
/// whole and in order.
pub(crate) async fn contract_large_batch_applies_in_order(store: &dyn Store) {
    const N: usize = 700;
    let d = "pbx.example.com";
    let (_, mut sub) = store.watch().await.expect("watch");
    let expires = in_an_hour();
    let mut writes = Vec::new();
    let mut expected = Vec::new();
    for i in 0..N {
        let user = format!("{}", 10_000 + i / 2);
        let b = binding(d, &user, &format!("b{i}"), expires);
        expected.push(Event::BindingPut(Arc::clone(&b)));
        writes.push(Write::PutBinding(b));
        if i % 7 == 0 {
            let u = UserKey::new(d, &user);
            expected.push(Event::StatusPut(
                u.clone(),
                status(1_700_000_000_000 + i as u64),
            ));
            writes.push(Write::PutStatus(u, status(1_700_000_000_000 + i as u64)));
        }
    }
    store.apply(writes).await.expect("apply");
    let events = events_until_marker(store, &mut sub).await;
    assert_eq!(events.len(), expected.len());
    assert!(events == expected, "events out of order");
    let (snapshot, _) = store.watch().await.expect("watch");
    assert_eq!(snapshot.bindings.len(), N);
}

/// A binding disappears by itself once `expires_at` passes, with a deletion event; a binding
/// with time left stays. `lifetime` is how far ahead the short binding expires.
pub(crate) async fn contract_bindings_expire(store: &dyn Store, lifetime: Duration) {
    let d = "pbx.example.com";
    let short = binding(d, "1001", "short", UnixMillis::now().plus(lifetime));
    let long = binding(d, "1001", "long", in_an_hour());
    store
        .apply(vec![
            Write::PutBinding(Arc::clone(&short)),
            Write::PutBinding(Arc::clone(&long)),
        ])
        .await
        .expect("apply");
    let (_, mut sub) = store.watch().await.expect("watch");
    let deadline = tokio::time::Instant::now() + lifetime + EVENT_WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, sub.next())
            .await
            .expect("the short binding expires in time")
            .expect("store alive");
        match event {
            Event::BindingDeleted(k) if k == short.key() => break,
            Event::BindingDeleted(k) => panic!("{k:?} expired too early"),
            _ => {}
        }
    }
    assert!(UnixMillis::now() >= short.expires_at, "not before its time");
    let (snapshot, _) = store.watch().await.expect("watch");
    assert_eq!(snapshot.bindings, vec![long]);
}

/// A snapshot taken while writes go on, plus the events after it, is exactly the written
/// data: nothing lost, nothing twice.
pub(crate) async fn contract_snapshot_and_subscription_agree(store: &dyn Store) {
    const N: usize = 400;
    let d = "pbx.example.com";
    let expires = in_an_hour();
    let writer = async {
        for i in 0..N {
            store
                .apply(vec![Write::PutBinding(binding(
                    d,
                    "1001",
                    &format!("{i:04}"),
                    expires,
                ))])
                .await
                .expect("apply");
            tokio::task::yield_now().await;
        }
    };
    let reader = async {
        for _ in 0..N / 3 {
            tokio::task::yield_now().await;
        }
        let (snapshot, mut sub) = store.watch().await.expect("watch");
        let mut ids: Vec<String> = snapshot.bindings.iter().map(|b| b.id.to_string()).collect();
        let last = format!("{:04}", N - 1);
        while !ids.contains(&last) {
            match next_event(&mut sub).await {
                Event::BindingPut(b) => ids.push(b.id.to_string()),
                other => panic!("unexpected event {other:?}"),
            }
        }
        ids
    };
    let ((), ids) = tokio::join!(writer, reader);
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no binding seen twice");
    assert_eq!(ids.len(), N, "no binding missed");
}

/// Events come in the order writes were applied, across and within batches.
pub(crate) async fn contract_events_follow_apply_order(store: &dyn Store) {
    let d = "pbx.example.com";
    let (_, mut sub) = store.watch().await.expect("watch");
    let mut expected = Vec::new();
    for batch in 0..20u64 {
        let mut writes = Vec::new();
        for i in 0..=batch % 4 {
            let user = UserKey::new(d, format!("{}", 1000 + batch * 10 + i));
            let s = status(1_700_000_000_000 + batch * 10 + i);
            expected.push(Event::StatusPut(user.clone(), s.clone()));
            writes.push(Write::PutStatus(user, s));
        }
        store.apply(writes).await.expect("apply");
    }
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        seen.push(next_event(&mut sub).await);
    }
    assert_eq!(seen, expected);
}

/// A subscriber that does not keep up with `overflow` writes gets `Resync`, and a new watch
/// shows everything.
pub(crate) async fn contract_lagging_subscriber_resyncs(store: &dyn Store, overflow: usize) {
    let d = "pbx.example.com";
    let (_, mut sub) = store.watch().await.expect("watch");
    for i in 0..overflow {
        store
            .apply(vec![Write::PutExtension(record(
                d,
                &format!("{}", 2000 + i),
            ))])
            .await
            .expect("apply");
    }
    assert_eq!(next_event(&mut sub).await, Event::Resync);
    let (snapshot, mut sub) = store.watch().await.expect("watch again");
    assert_eq!(snapshot.extensions.len(), overflow);
    store
        .apply(vec![Write::DeleteExtension(UserKey::new(d, "2000"))])
        .await
        .expect("apply");
    assert_eq!(
        next_event(&mut sub).await,
        Event::ExtensionDeleted(UserKey::new(d, "2000"))
    );
}

#[cfg(test)]
mod embedded {
    use super::*;
    use crate::store::embedded::Stop;
    use crate::store::{EmbeddedOptions, EmbeddedStore, StoreError};
    use std::io::Write as _;
    use std::path::{Path, PathBuf};

    fn quick() -> EmbeddedOptions {
        EmbeddedOptions {
            sweep_interval: Duration::from_millis(20),
            ..EmbeddedOptions::default()
        }
    }

    /// No background sweep during the test: expiry happens only where the test says.
    fn no_sweep() -> EmbeddedOptions {
        EmbeddedOptions {
            sweep_interval: Duration::from_secs(3600),
            flush_interval: Duration::from_secs(3600),
            ..EmbeddedOptions::default()
        }
    }

    async fn memory(options: EmbeddedOptions) -> EmbeddedStore {
        EmbeddedStore::open(None, options).await.expect("open")
    }

    async fn disk(dir: &Path, options: EmbeddedOptions) -> EmbeddedStore {
        EmbeddedStore::open(Some(dir.to_owned()), options)
            .await
            .expect("open")
    }

    macro_rules! run_contract {
        ($($name:ident $(, $arg:expr)?;)*) => {
            mod in_memory {
                use super::*;
                $(
                    #[tokio::test]
                    async fn $name() {
                        let store = memory(quick()).await;
                        super::super::$name(&store $(, $arg)?).await;
                    }
                )*
            }
            mod on_disk {
                use super::*;
                $(
                    #[tokio::test]
                    async fn $name() {
                        let dir = tempfile::tempdir().expect("tempdir");
                        let store = disk(dir.path(), quick()).await;
                        super::super::$name(&store $(, $arg)?).await;
                        // Whatever the contract did must also survive a restart.
                        let (before, _) = store.watch().await.expect("watch");
                        drop(store);
                        let store = disk(dir.path(), quick()).await;
                        let (after, _) = store.watch().await.expect("watch");
                        assert_same(&before, &after);
                    }
                )*
            }
        };
    }

    run_contract! {
        contract_put_and_read_back;
        contract_delete_extension_cascades;
        contract_delete_binding;
        contract_refresh_extends_binding, Duration::ZERO;
        contract_one_batch_touches_a_key_repeatedly, Duration::ZERO;
        contract_large_batch_applies_in_order;
        contract_bindings_expire, Duration::from_millis(150);
        contract_snapshot_and_subscription_agree;
        contract_events_follow_apply_order;
    }

    #[tokio::test]
    async fn lagging_subscriber_resyncs_in_memory() {
        let store = memory(EmbeddedOptions {
            broadcast_capacity: 8,
            ..quick()
        })
        .await;
        contract_lagging_subscriber_resyncs(&store, 40).await;
    }

    #[tokio::test]
    async fn lagging_subscriber_resyncs_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = EmbeddedOptions {
            broadcast_capacity: 8,
            ..quick()
        };
        let store = disk(dir.path(), options).await;
        contract_lagging_subscriber_resyncs(&store, 40).await;
    }

    fn assert_same(a: &Snapshot, b: &Snapshot) {
        assert_eq!(a.extensions, b.extensions);
        assert_eq!(a.bindings, b.bindings);
        assert_eq!(a.statuses, b.statuses);
    }

    async fn snapshot(store: &EmbeddedStore) -> Snapshot {
        store.watch().await.expect("watch").0
    }

    fn files(dir: &Path) -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn logs(dir: &Path) -> Vec<PathBuf> {
        files(dir)
            .into_iter()
            .filter(|n| n.starts_with("log-"))
            .map(|n| dir.join(n))
            .collect()
    }

    fn append(path: &Path, bytes: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .expect("open log");
        f.write_all(bytes).expect("append");
    }

    // --- expiry ---------------------------------------------------------------------------

    #[tokio::test]
    async fn sweep_removes_exactly_the_expired_bindings() {
        let store = memory(no_sweep()).await;
        let d = "pbx.example.com";
        let t = UnixMillis(4_000_000_000_000);
        store
            .apply(vec![
                Write::PutBinding(binding(d, "1001", "a", UnixMillis(t.0 + 1000))),
                Write::PutBinding(binding(d, "1001", "b", UnixMillis(t.0 + 2000))),
                Write::PutBinding(binding(d, "1002", "c", UnixMillis(t.0 + 3000))),
                // Refreshed later than b: must outlive it.
                Write::RefreshBinding {
                    key: key(d, "1001", "a"),
                    expires_at: UnixMillis(t.0 + 2500),
                },
                // Replaced with an earlier expiry.
                Write::PutBinding(binding(d, "1002", "c", UnixMillis(t.0 + 1500))),
            ])
            .await
            .expect("apply");
        let (_, mut sub) = store.watch().await.expect("watch");
        assert_eq!(store.sweep_expired(UnixMillis(t.0 + 999)), 0);
        assert_eq!(store.sweep_expired(UnixMillis(t.0 + 1500)), 1);
        assert_eq!(
            next_event(&mut sub).await,
            Event::BindingDeleted(key(d, "1002", "c"))
        );
        assert_eq!(store.sweep_expired(UnixMillis(t.0 + 2000)), 1);
        assert_eq!(
            next_event(&mut sub).await,
            Event::BindingDeleted(key(d, "1001", "b"))
        );
        assert_eq!(store.stats().bindings, 1);
        assert_eq!(store.sweep_expired(UnixMillis(t.0 + 2500)), 1);
        assert_eq!(
            next_event(&mut sub).await,
            Event::BindingDeleted(key(d, "1001", "a"))
        );
        assert_eq!(store.sweep_expired(UnixMillis(u64::MAX)), 0);
    }

    #[tokio::test]
    async fn sweep_is_cheap_with_many_bindings() {
        let store = memory(no_sweep()).await;
        let base = UnixMillis(4_000_000_000_000);
        for chunk in 0..100u64 {
            let writes = (0..1000u64)
                .map(|i| {
                    let n = chunk * 1000 + i;
                    Write::PutBinding(binding(
                        "pbx.example.com",
                        &format!("{}", n % 5000),
                        &format!("{n}"),
                        UnixMillis(base.0 + n),
                    ))
                })
                .collect();
            store.apply(writes).await.expect("apply");
        }
        let started = std::time::Instant::now();
        for step in 0..1000 {
            let expected = if step == 0 { 1 } else { 10 };
            assert_eq!(
                store.sweep_expired(UnixMillis(base.0 + step * 10)),
                expected
            );
        }
        let elapsed = started.elapsed();
        assert_eq!(store.stats().bindings, 100_000 - 1 - 999 * 10);
        // 1000 sweeps over 100 000 bindings: a full scan each would take far longer.
        assert!(
            elapsed < Duration::from_millis(500),
            "sweeps took {elapsed:?}"
        );
    }

    #[tokio::test]
    async fn delete_extension_sends_one_deletion_per_binding() {
        let store = memory(no_sweep()).await;
        let d = "pbx.example.com";
        store
            .apply(vec![
                Write::PutExtension(record(d, "1001")),
                Write::PutBinding(binding(d, "1001", "a1", in_an_hour())),
                Write::PutBinding(binding(d, "1001", "a2", in_an_hour())),
            ])
            .await
            .expect("apply");
        let (_, mut sub) = store.watch().await.expect("watch");
        store
            .apply(vec![Write::DeleteExtension(UserKey::new(d, "1001"))])
            .await
            .expect("apply");
        assert_eq!(
            next_event(&mut sub).await,
            Event::ExtensionDeleted(UserKey::new(d, "1001"))
        );
        assert_eq!(
            next_event(&mut sub).await,
            Event::BindingDeleted(key(d, "1001", "a1"))
        );
        assert_eq!(
            next_event(&mut sub).await,
            Event::BindingDeleted(key(d, "1001", "a2"))
        );
    }

    #[tokio::test]
    async fn dropping_the_store_ends_subscriptions() {
        let store = memory(quick()).await;
        let (_, mut sub) = store.watch().await.expect("watch");
        drop(store);
        assert_eq!(sub.next().await, None);
    }

    // --- persistence ----------------------------------------------------------------------

    #[tokio::test]
    async fn restart_keeps_live_bindings_with_their_remaining_lifetime() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = "pbx.example.com";
        let live = binding(d, "1001", "live", in_an_hour());
        let refreshed_to = in_an_hour().plus(Duration::from_secs(600));
        let expired = binding(d, "1001", "gone", UnixMillis(UnixMillis::now().0 - 1000));
        {
            let store = disk(dir.path(), no_sweep()).await;
            store
                .apply(vec![
                    Write::PutExtension(record(d, "1001")),
                    Write::PutBinding(Arc::clone(&live)),
                    Write::PutBinding(binding(d, "1001", "refreshed", in_an_hour())),
                    Write::RefreshBinding {
                        key: key(d, "1001", "refreshed"),
                        expires_at: refreshed_to,
                    },
                    Write::PutBinding(Arc::clone(&expired)),
                ])
                .await
                .expect("apply");
            assert_eq!(store.stats().bindings, 3, "no sweep ran");
        }
        let store = disk(dir.path(), no_sweep()).await;
        let snap = snapshot(&store).await;
        assert_eq!(snap.extensions, vec![record(d, "1001")]);
        assert_eq!(snap.bindings.len(), 2);
        assert_eq!(binding_in(&snap, &live.key()), Some(&live));
        let refreshed = binding_in(&snap, &key(d, "1001", "refreshed")).expect("refreshed");
        assert_eq!(refreshed.expires_at, refreshed_to);
        assert_eq!(binding_in(&snap, &expired.key()), None);
    }

    #[tokio::test]
    async fn a_crash_loses_only_unflushed_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = "pbx.example.com";
        let store = disk(dir.path(), no_sweep()).await;
        store
            .apply(vec![Write::PutExtension(record(d, "1001"))])
            .await
            .expect("apply");
        store.flush().await.expect("flush");
        store
            .apply(vec![Write::PutExtension(record(d, "1002"))])
            .await
            .expect("apply");
        store.crash();
        let store = disk(dir.path(), no_sweep()).await;
        assert_eq!(snapshot(&store).await.extensions, vec![record(d, "1001")]);
    }

    #[tokio::test]
    async fn the_folder_is_locked_while_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = disk(dir.path(), no_sweep()).await;
        let second = EmbeddedStore::open(Some(dir.path().to_owned()), no_sweep()).await;
        assert!(
            matches!(second, Err(StoreError::Unavailable(ref m)) if m.contains("in use")),
            "{second:?}"
        );
        drop(store);
        disk(dir.path(), no_sweep()).await;
    }

    /// A store with a bit of everything, including deletions and refreshes.
    async fn populate(store: &EmbeddedStore, round: u64) {
        let d = "pbx.example.com";
        let mut writes = Vec::new();
        for u in 0..20u64 {
            let user = format!("{}", 1000 + u);
            writes.push(Write::PutExtension(record(d, &user)));
            writes.push(Write::PutStatus(
                UserKey::new(d, &user),
                status(1_700_000_000_000 + round),
            ));
            for b in 0..3 {
                writes.push(Write::PutBinding(binding(
                    d,
                    &user,
                    &format!("r{round}-{b}"),
                    in_an_hour(),
                )));
            }
            writes.push(Write::RefreshBinding {
                key: key(d, &user, &format!("r{round}-0")),
                expires_at: in_an_hour().plus(Duration::from_secs(round + 1)),
            });
            writes.push(Write::DeleteBinding(key(d, &user, &format!("r{round}-1"))));
        }
        writes.push(Write::DeleteExtension(UserKey::new(
            d,
            format!("{}", 1000 + round % 20),
        )));
        store.apply(writes).await.expect("apply");
    }

    #[tokio::test]
    async fn compaction_then_restart_keeps_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = EmbeddedOptions {
            compaction_min_lines: 200,
            flush_interval: Duration::from_millis(10),
            ..no_sweep()
        };
        let store = disk(dir.path(), options.clone()).await;
        let first = store.stats().log_generation.expect("on disk");
        for round in 0..10 {
            populate(&store, round).await;
        }
        // The maintenance task compacts on its own once the log outgrows the data.
        let deadline = std::time::Instant::now() + EVENT_WAIT;
        while store.stats().log_generation == Some(first) {
            assert!(
                std::time::Instant::now() < deadline,
                "no compaction happened"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        populate(&store, 10).await;
        store.compact().await.expect("compact");
        populate(&store, 11).await;
        let before = snapshot(&store).await;
        drop(store);
        assert_eq!(logs(dir.path()).len(), 1, "old logs are removed");
        let store = disk(dir.path(), options).await;
        assert_same(&before, &snapshot(&store).await);
    }

    /// Runs a compaction that "crashes" at `stop`, with writes before (flushed and buffered)
    /// and after it; a restart must show every write that reached a log.
    async fn crash_during_compaction(stop: Stop, damage: impl FnOnce(&Path)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = disk(dir.path(), no_sweep()).await;
        populate(&store, 0).await;
        store.flush().await.expect("flush");
        populate(&store, 1).await; // buffered: the compaction writes it to the old log
        store.compact_until(stop).expect("partial compaction");
        populate(&store, 2).await; // goes to the new log
        store.flush_now().expect("flush");
        let expected = snapshot(&store).await;
        store.crash();
        damage(dir.path());
        let store = disk(dir.path(), no_sweep()).await;
        assert_same(&expected, &snapshot(&store).await);
        drop(store);
        let left = files(dir.path());
        assert!(!left.contains("snapshot.jsonl.tmp"), "{left:?}");
        assert_eq!(logs(dir.path()).len(), 1, "{left:?}");
    }

    #[tokio::test]
    async fn crash_after_log_rotation() {
        crash_during_compaction(Stop::AfterRotate, |_| {}).await;
    }

    #[tokio::test]
    async fn crash_while_writing_the_snapshot() {
        crash_during_compaction(Stop::AfterRotate, |dir| {
            std::fs::write(dir.join("snapshot.jsonl.tmp"), b"{\"snapshot\":{\"form")
                .expect("write tmp");
        })
        .await;
    }

    #[tokio::test]
    async fn crash_before_the_snapshot_is_installed() {
        crash_during_compaction(Stop::AfterTempWritten, |_| {}).await;
    }

    #[tokio::test]
    async fn crash_before_old_logs_are_removed() {
        crash_during_compaction(Stop::AfterInstall, |dir| {
            assert!(logs(dir).len() >= 2, "old log still there");
        })
        .await;
    }

    /// A store with one flushed extension, stopped like a crash; returns its log.
    async fn crashed_store(dir: &Path) -> PathBuf {
        let store = disk(dir, no_sweep()).await;
        store
            .apply(vec![
                Write::PutExtension(record("pbx.example.com", "1001")),
                Write::PutBinding(binding("pbx.example.com", "1001", "a", in_an_hour())),
            ])
            .await
            .expect("apply");
        store.flush().await.expect("flush");
        store.crash();
        let logs = logs(dir);
        assert_eq!(logs.len(), 1);
        logs.into_iter().next().expect("one log")
    }

    #[tokio::test]
    async fn a_truncated_last_line_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = crashed_store(dir.path()).await;
        append(&log, b"{\"putBinding\":{\"domain\":\"pbx.exa");
        let store = disk(dir.path(), no_sweep()).await;
        let snap = snapshot(&store).await;
        assert_eq!(snap.extensions.len(), 1);
        assert_eq!(snap.bindings.len(), 1);
    }

    #[tokio::test]
    async fn a_zero_filled_tail_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = crashed_store(dir.path()).await;
        append(&log, &[0; 4096]);
        let store = disk(dir.path(), no_sweep()).await;
        assert_eq!(snapshot(&store).await.bindings.len(), 1);
    }

    #[tokio::test]
    async fn a_corrupt_line_names_the_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = crashed_store(dir.path()).await;
        let lines = std::fs::read_to_string(&log).expect("read").lines().count();
        append(
            &log,
            b"{\"putNothing\":1}\n{\"deleteExtension\":{\"domain\":\"d\",\"user\":\"u\"}}\n",
        );
        let err = EmbeddedStore::open(Some(dir.path().to_owned()), no_sweep())
            .await
            .expect_err("corrupt");
        match &err {
            StoreError::Corrupt { path, detail } => {
                assert_eq!(Path::new(path), log);
                assert!(
                    detail.starts_with(&format!("line {}: ", lines + 1)),
                    "{detail}"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("log-"), "{err}");
    }

    #[tokio::test]
    async fn invalid_utf8_in_a_log_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = crashed_store(dir.path()).await;
        append(
            &log,
            b"{\"deleteExtension\":{\"domain\":\"\xff\xfe\",\"user\":\"u\"}}\n",
        );
        let err = EmbeddedStore::open(Some(dir.path().to_owned()), no_sweep())
            .await
            .expect_err("corrupt");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_damaged_snapshot_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        crashed_store(dir.path()).await;
        // Opening compacted everything into the snapshot; cut its end marker off.
        drop(disk(dir.path(), no_sweep()).await);
        let path = dir.path().join("snapshot.jsonl");
        let text = std::fs::read_to_string(&path).expect("read");
        let cut: Vec<&str> = text.lines().collect();
        std::fs::write(&path, cut[..cut.len() - 1].join("\n") + "\n").expect("write");
        let err = EmbeddedStore::open(Some(dir.path().to_owned()), no_sweep())
            .await
            .expect_err("corrupt");
        assert!(err.to_string().contains("snapshot.jsonl"), "{err}");
        assert!(err.to_string().contains("end marker"), "{err}");

        std::fs::write(&path, b"\xff\xfe garbage").expect("write");
        let err = EmbeddedStore::open(Some(dir.path().to_owned()), no_sweep())
            .await
            .expect_err("corrupt");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn garbage_options_do_not_panic() {
        let store = memory(EmbeddedOptions {
            broadcast_capacity: 0,
            flush_interval: Duration::ZERO,
            sweep_interval: Duration::ZERO,
            compaction_min_lines: 0,
        })
        .await;
        store
            .apply(vec![Write::PutExtension(record("d", "u"))])
            .await
            .expect("apply");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // --- cost -----------------------------------------------------------------------------

    /// `cargo test --release -p kubepbx-api apply_cost -- --ignored --nocapture`
    #[tokio::test]
    #[ignore = "measurement; run in release mode"]
    async fn apply_cost() {
        const N: u64 = 100_000;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = disk(dir.path(), EmbeddedOptions::default()).await;
        let (_, mut sub) = store.watch().await.expect("watch");
        let drain = tokio::spawn(async move { while sub.next().await.is_some() {} });
        let expires = in_an_hour();
        let bindings: Vec<Arc<Binding>> = (0..N)
            .map(|n| {
                binding(
                    "pbx.example.com",
                    &format!("{}", 10_000 + n / 2),
                    &format!("{n:016x}"),
                    expires,
                )
            })
            .collect();
        let started = std::time::Instant::now();
        for b in &bindings {
            store
                .apply(vec![Write::PutBinding(Arc::clone(b))])
                .await
                .expect("apply");
        }
        let put = started.elapsed() / N as u32;
        let keys: Vec<BindingKey> = bindings.iter().map(|b| b.key()).collect();
        let started = std::time::Instant::now();
        for (i, k) in keys.into_iter().enumerate() {
            store
                .apply(vec![Write::RefreshBinding {
                    key: k,
                    expires_at: expires.plus(Duration::from_millis(i as u64)),
                }])
                .await
                .expect("apply");
        }
        let refresh = started.elapsed() / N as u32;
        let started = std::time::Instant::now();
        let (snap, _) = store.watch().await.expect("watch");
        let watch = started.elapsed();
        println!(
            "PutBinding {put:?}/op, RefreshBinding {refresh:?}/op (with a subscriber), \
             watch of {} bindings {watch:?}, Event is {} bytes",
            snap.bindings.len(),
            std::mem::size_of::<Event>()
        );
        let started = std::time::Instant::now();
        store.compact().await.expect("compact");
        println!("compaction of {N} bindings: {:?}", started.elapsed());
        drop(store);
        let started = std::time::Instant::now();
        let store = disk(dir.path(), EmbeddedOptions::default()).await;
        println!(
            "open with {} bindings: {:?}",
            store.stats().bindings,
            started.elapsed()
        );
        drain.abort();
    }
}
