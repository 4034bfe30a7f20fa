//! The etcd store against a real etcd: the whole store contract, then what is specific to
//! etcd (leases, refreshes seen by other replicas, corrupt values, outages, compaction).
//!
//! One etcd serves the whole test binary and each test works under its own key prefix; tests
//! that stop etcd start their own. Without etcd installed these tests fail, naming
//! `scripts/install-deps.sh test`.

use super::lease::BucketLease;
use super::testing::EtcdServer;
use super::{EtcdOptions, EtcdStore};
use crate::records::UserKey;
use crate::store::contract::{self, binding, events_until_marker, next_event, record};
use crate::store::{Event, Store, StoreError, Write};
use crate::time::UnixMillis;
use etcd_client::{Client, GetOptions, LeaseGrantOptions, PutOptions};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Lease bucket of the test stores: expiries are rounded up by at most this.
const BUCKET: Duration = Duration::from_secs(1);
const D: &str = "pbx.example.com";

static SERVER: OnceLock<EtcdServer> = OnceLock::new();

/// The etcd shared by this test binary.
pub(super) fn server() -> &'static EtcdServer {
    SERVER.get_or_init(|| EtcdServer::start().unwrap_or_else(|e| panic!("{e}")))
}

/// A key prefix no other test uses.
pub(super) fn unique_prefix(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("/test/{name}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

pub(super) fn quick(prefix: String) -> EtcdOptions {
    EtcdOptions {
        prefix,
        lease_bucket: BUCKET,
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
        retry_interval: Duration::from_millis(100),
        maintenance_interval: Duration::from_millis(200),
        ..EtcdOptions::default()
    }
}

pub(super) async fn connect(endpoints: &[String], options: EtcdOptions) -> EtcdStore {
    EtcdStore::connect(endpoints, options)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"))
}

/// A store on the shared etcd under a fresh prefix.
pub(super) async fn store(name: &str) -> EtcdStore {
    connect(&server().endpoints(), quick(unique_prefix(name))).await
}

/// A plain etcd client, to look under the store or to damage it.
pub(super) async fn raw(endpoints: &[String]) -> Client {
    Client::connect(endpoints, None).await.expect("raw client")
}

fn in_secs(secs: u64) -> UnixMillis {
    UnixMillis::now().plus(Duration::from_secs(secs))
}

macro_rules! run_contract {
    ($($name:ident $(, $arg:expr)?;)*) => {
        mod contract_on_etcd {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let store = store(stringify!($name)).await;
                    contract::$name(&store $(, $arg)?).await;
                }
            )*
        }
    };
}

run_contract! {
    contract_put_and_read_back;
    contract_delete_extension_cascades;
    contract_delete_binding;
    contract_refresh_extends_binding, BUCKET;
    contract_one_batch_touches_a_key_repeatedly, BUCKET;
    contract_large_batch_applies_in_order;
    contract_bindings_expire, Duration::from_secs(1);
    contract_snapshot_and_subscription_agree;
    contract_events_follow_apply_order;
}

#[tokio::test]
async fn contract_lagging_subscriber_resyncs() {
    let options = EtcdOptions {
        subscriber_capacity: 8,
        ..quick(unique_prefix("lagging"))
    };
    let store = connect(&server().endpoints(), options).await;
    contract::contract_lagging_subscriber_resyncs(&store, 40).await;
}

// --- replicas -------------------------------------------------------------------------------

#[tokio::test]
async fn two_replicas_see_each_others_writes() {
    let prefix = unique_prefix("replicas");
    let a = connect(&server().endpoints(), quick(prefix.clone())).await;
    let b = connect(&server().endpoints(), quick(prefix)).await;
    let (_, mut sub_a) = a.watch().await.expect("watch a");
    let (_, mut sub_b) = b.watch().await.expect("watch b");

    a.apply(vec![Write::PutExtension(record(D, "1001"))])
        .await
        .expect("apply a");
    assert_eq!(
        next_event(&mut sub_b).await,
        Event::ExtensionPut(record(D, "1001"))
    );
    let bound = binding(D, "1001", "x", in_secs(3600));
    b.apply(vec![Write::PutBinding(Arc::clone(&bound))])
        .await
        .expect("apply b");
    assert_eq!(
        next_event(&mut sub_a).await,
        Event::ExtensionPut(record(D, "1001"))
    );
    assert_eq!(
        next_event(&mut sub_a).await,
        Event::BindingPut(bound.clone())
    );
    let (snapshot, _) = a.watch().await.expect("watch");
    assert_eq!(snapshot.extensions, vec![record(D, "1001")]);
    assert_eq!(snapshot.bindings, vec![bound]);
}

#[tokio::test]
async fn prefixes_do_not_see_each_other() {
    let prefix = unique_prefix("isolated");
    let a = connect(&server().endpoints(), quick(prefix.clone())).await;
    // A prefix that extends the first one as a string.
    let b = connect(&server().endpoints(), quick(format!("{prefix}b"))).await;
    let (_, mut sub_b) = b.watch().await.expect("watch");
    a.apply(vec![Write::PutExtension(record(D, "1001"))])
        .await
        .expect("apply");
    assert!(events_until_marker(&b, &mut sub_b).await.is_empty());
    assert!(b.watch().await.expect("watch").0.extensions.is_empty());
}

// --- leases ---------------------------------------------------------------------------------

#[tokio::test]
async fn lease_expiry_is_seen_by_every_replica() {
    let prefix = unique_prefix("expiry");
    let a = connect(&server().endpoints(), quick(prefix.clone())).await;
    let b = connect(&server().endpoints(), quick(prefix)).await;
    let (_, mut sub_b) = b.watch().await.expect("watch");
    let short = binding(
        D,
        "1001",
        "short",
        UnixMillis::now().plus(Duration::from_millis(1200)),
    );
    a.apply(vec![Write::PutBinding(Arc::clone(&short))])
        .await
        .expect("apply");
    assert_eq!(
        next_event(&mut sub_b).await,
        Event::BindingPut(Arc::clone(&short))
    );
    assert_eq!(
        next_event(&mut sub_b).await,
        Event::BindingDeleted(short.key())
    );
    let now = UnixMillis::now();
    assert!(now >= short.expires_at, "deleted before its expiry");
    assert!(
        now <= short.expires_at.plus(BUCKET + Duration::from_secs(2)),
        "deleted late: {:?} after its expiry",
        short.expires_at.until(now)
    );
}

#[tokio::test]
async fn a_refresh_keeps_a_binding_alive_and_other_replicas_see_it() {
    let prefix = unique_prefix("refresh");
    let a = connect(&server().endpoints(), quick(prefix.clone())).await;
    let b = connect(&server().endpoints(), quick(prefix)).await;
    let first = UnixMillis::now().plus(Duration::from_secs(2));
    let bound = binding(D, "1001", "phone", first);
    a.apply(vec![Write::PutBinding(Arc::clone(&bound))])
        .await
        .expect("put");
    let (snapshot, mut sub_b) = b.watch().await.expect("watch");
    assert_eq!(snapshot.bindings, vec![Arc::clone(&bound)]);

    let later = in_secs(6);
    a.apply(vec![Write::RefreshBinding {
        key: bound.key(),
        expires_at: later,
    }])
    .await
    .expect("refresh");
    let refreshed_to = match next_event(&mut sub_b).await {
        Event::BindingRefreshed { key, expires_at } if key == bound.key() => expires_at,
        other => panic!("expected a refresh, got {other:?}"),
    };
    assert!(refreshed_to >= later && refreshed_to <= later.plus(BUCKET));

    // Past the first expiry (and its bucket, and etcd's expiry check): still there.
    tokio::time::sleep(UnixMillis::now().until(first.plus(BUCKET + Duration::from_secs(1)))).await;
    assert!(
        events_until_marker(&b, &mut sub_b).await.is_empty(),
        "nothing happened to the binding"
    );
    let (snapshot, _) = b.watch().await.expect("watch");
    assert_eq!(snapshot.bindings.len(), 1, "alive past its first expiry");
    assert_eq!(snapshot.bindings[0].expires_at, refreshed_to);
    assert!(snapshot.bindings[0].same_except_lifetime(&bound));

    // And it goes at the refreshed expiry.
    assert_eq!(
        next_event(&mut sub_b).await,
        Event::BindingDeleted(bound.key())
    );
    assert!(UnixMillis::now() >= refreshed_to);
}

#[tokio::test]
async fn a_batch_is_one_transaction_and_a_refresh_keeps_the_value() {
    let store = store("batch").await;
    let client = raw(&server().endpoints()).await;
    let expires = in_secs(3600);
    let bindings: Vec<Write> = (0..100)
        .map(|i| Write::PutBinding(binding(D, &format!("{}", 2000 + i), "p", expires)))
        .collect();
    store.apply(bindings).await.expect("put");
    let range = format!("{}/reg/", store.prefix());
    let read = |client: Client| {
        let range = range.clone();
        async move {
            let mut client = client;
            client
                .get(range, Some(GetOptions::new().with_prefix()))
                .await
                .expect("get")
                .take_kvs()
        }
    };
    let put = read(client.clone()).await;
    assert_eq!(put.len(), 100);
    assert!(
        put.iter()
            .all(|kv| kv.mod_revision() == put[0].mod_revision()),
        "one transaction, one revision"
    );
    let refreshes: Vec<Write> = (0..100)
        .map(|i| Write::RefreshBinding {
            key: binding(D, &format!("{}", 2000 + i), "p", expires).key(),
            expires_at: in_secs(7200),
        })
        .collect();
    store.apply(refreshes).await.expect("refresh");
    let refreshed = read(client).await;
    assert!(
        refreshed
            .iter()
            .all(|kv| kv.mod_revision() == refreshed[0].mod_revision())
    );
    assert!(refreshed[0].mod_revision() > put[0].mod_revision());
    for (before, after) in put.iter().zip(&refreshed) {
        assert_eq!(before.value(), after.value(), "the value is untouched");
        let lease = BucketLease::decode(after.lease()).expect("a bucket lease");
        assert!(lease.is_refresh());
    }
}

#[tokio::test]
async fn leases_etcd_kept_past_their_end_are_revoked() {
    let prefix = unique_prefix("overdue");
    let options = EtcdOptions {
        lease_grace: Duration::from_secs(1),
        ..quick(prefix.clone())
    };
    let store = connect(&server().endpoints(), options).await;
    // What a restarted etcd does: a lease whose end is past, with a long TTL again.
    let past = UnixMillis(UnixMillis::now().0 - 10_000);
    let lease = BucketLease::for_expiry(past, past, BUCKET, false);
    let mut client = raw(&server().endpoints()).await;
    client
        .lease_grant(600, Some(LeaseGrantOptions::new().with_id(lease.id())))
        .await
        .expect("grant");
    let stale = binding(D, "1001", "stale", past);
    client
        .put(
            format!("{prefix}/reg/{D}/1001/stale"),
            serde_json::to_vec(&*stale).expect("encode"),
            Some(PutOptions::new().with_lease(lease.id())),
        )
        .await
        .expect("put");
    let (snapshot, mut sub) = store.watch().await.expect("watch");
    assert!(
        snapshot.bindings.is_empty(),
        "an expired binding is not in a snapshot"
    );
    assert_eq!(
        next_event(&mut sub).await,
        Event::BindingDeleted(stale.key())
    );
}

// --- bad data -------------------------------------------------------------------------------

#[tokio::test]
async fn corrupt_values_are_skipped_and_counted() {
    let store = store("corrupt").await;
    let p = store.prefix().to_owned();
    let mut client = raw(&server().endpoints()).await;
    let other = binding(D, "1001", "someone-else", in_secs(3600));
    let values: [(String, Vec<u8>); 5] = [
        (format!("{p}/ext/{D}/bad"), b"{not json".to_vec()),
        (
            format!("{p}/reg/{D}/1001/x"),
            serde_json::to_vec(&*other).expect("encode"),
        ),
        (
            format!("{p}/status/{D}/1001"),
            br#"{"lastSuccess":5}"#.to_vec(),
        ),
        (
            format!("{p}/ext/{D}/1001"),
            serde_json::to_vec(&record(D, "1001")).expect("encode"),
        ),
        // Another kind of record: not this store's business, not corrupt.
        (format!("{p}/calls/abc"), b"whatever".to_vec()),
    ];
    for (key, value) in values {
        client.put(key, value, None).await.expect("put");
    }
    let (snapshot, mut sub) = store.watch().await.expect("watch");
    assert_eq!(snapshot.extensions, vec![record(D, "1001")]);
    assert!(snapshot.bindings.is_empty() && snapshot.statuses.is_empty());
    assert_eq!(store.corrupt_values(), 3);

    client
        .put(format!("{p}/reg/{D}/1001/y"), b"\x00\x01".to_vec(), None)
        .await
        .expect("put");
    assert!(events_until_marker(&store, &mut sub).await.is_empty());
    assert_eq!(store.corrupt_values(), 4);
    assert_eq!(store.health().corrupt_values, 4);
}

#[tokio::test]
async fn bad_endpoints_are_named() {
    let err = EtcdStore::connect(
        &["etcd.example:notaport".to_owned()],
        EtcdOptions::default(),
    )
    .await
    .expect_err("invalid");
    assert!(err.to_string().contains("etcd.example:notaport"), "{err}");
    assert!(matches!(err, StoreError::InvalidEndpoint { .. }));
    let err = EtcdStore::connect(&[], EtcdOptions::default())
        .await
        .expect_err("none");
    assert!(matches!(err, StoreError::InvalidEndpoint { .. }), "{err}");

    let nobody = format!(
        "http://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port()
    );
    let started = Instant::now();
    let err = EtcdStore::connect(
        std::slice::from_ref(&nobody),
        quick(unique_prefix("nobody")),
    )
    .await
    .expect_err("unreachable");
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains(&nobody)),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

// --- outages --------------------------------------------------------------------------------

/// Applies `writes` until etcd takes them (it is coming back).
async fn apply_when_back(store: &EtcdStore, writes: Vec<Write>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store.apply(writes.clone()).await {
            Ok(()) => return,
            Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("etcd did not come back: {e}"),
        }
    }
}

#[tokio::test]
async fn an_etcd_outage_gives_unavailable_and_the_watch_resumes() {
    let mut etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let store = connect(&etcd.endpoints(), quick(unique_prefix("outage"))).await;
    let (_, mut sub) = store.watch().await.expect("watch");
    store
        .apply(vec![Write::PutExtension(record(D, "1001"))])
        .await
        .expect("apply");
    assert_eq!(
        next_event(&mut sub).await,
        Event::ExtensionPut(record(D, "1001"))
    );

    etcd.stop();
    let started = Instant::now();
    let err = store
        .apply(vec![Write::PutExtension(record(D, "1002"))])
        .await
        .expect_err("etcd is down");
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains(&etcd.url())),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(!store.is_connected());
    let health = store.health();
    assert!(health.last_error.is_some_and(|e| e.contains(&etcd.url())));
    assert!(store.watch().await.is_err(), "no snapshot without etcd");

    etcd.restart().unwrap_or_else(|e| panic!("{e}"));
    apply_when_back(&store, vec![Write::PutExtension(record(D, "1003"))]).await;
    assert!(store.is_connected());
    // The subscription resumed where it stopped: the next event is the write after the
    // outage, with no reload.
    assert_eq!(
        next_event(&mut sub).await,
        Event::ExtensionPut(record(D, "1003"))
    );
    let (snapshot, _) = store.watch().await.expect("watch");
    let users: Vec<&str> = snapshot
        .extensions
        .iter()
        .map(|e| e.extension.as_str())
        .collect();
    assert_eq!(users, ["1001", "1003"]);
}

#[tokio::test]
async fn a_watch_that_cannot_resume_resyncs() {
    let mut etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let options = EtcdOptions {
        // Long enough for etcd to restart and compact before the watch is re-opened.
        retry_interval: Duration::from_secs(6),
        ..quick(unique_prefix("compacted"))
    };
    let store = connect(&etcd.endpoints(), options).await;
    let (_, mut sub) = store.watch().await.expect("watch");
    store
        .apply(vec![Write::PutExtension(record(D, "1001"))])
        .await
        .expect("apply");
    assert_eq!(
        next_event(&mut sub).await,
        Event::ExtensionPut(record(D, "1001"))
    );

    etcd.stop();
    etcd.restart().unwrap_or_else(|e| panic!("{e}"));
    let mut client = raw(&etcd.endpoints()).await;
    for i in 0..2 {
        client
            .put(format!("/elsewhere/{i}"), "x", None)
            .await
            .expect("put");
    }
    let head = client
        .get("/elsewhere/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("get")
        .header()
        .map(|h| h.revision())
        .expect("revision");
    client.compact(head, None).await.expect("compact");

    assert_eq!(next_event(&mut sub).await, Event::Resync);
    let (snapshot, _) = store.watch().await.expect("watch again");
    assert_eq!(snapshot.extensions, vec![record(D, "1001")]);
}

#[tokio::test]
async fn dropping_the_store_ends_subscriptions() {
    let store = store("drop").await;
    let (_, mut sub) = store.watch().await.expect("watch");
    drop(store);
    let end = tokio::time::timeout(Duration::from_secs(5), sub.next()).await;
    assert_eq!(end, Ok(None));
}

#[tokio::test]
async fn the_status_of_an_unknown_user_goes_with_delete_extension() {
    let store = store("status").await;
    let user = UserKey::new(D, "1001");
    store
        .apply(vec![Write::PutStatus(
            user.clone(),
            contract::status(1_700_000_000_500),
        )])
        .await
        .expect("apply");
    store
        .apply(vec![Write::DeleteExtension(user)])
        .await
        .expect("apply");
    assert!(store.watch().await.expect("watch").0.statuses.is_empty());
}

// --- cost -----------------------------------------------------------------------------------

/// `cargo test --release -p kubepbx-api etcd_apply_cost -- --ignored --nocapture`
#[tokio::test]
#[ignore = "measurement; run in release mode"]
async fn etcd_apply_cost() {
    const BATCHES: u64 = 200;
    const BATCH: u64 = 100;
    let store = store("cost").await;
    let (_, mut sub) = store.watch().await.expect("watch");
    let drain = tokio::spawn(async move { while sub.next().await.is_some() {} });
    let expires = in_secs(3600);
    let keys: Vec<Vec<crate::records::BindingKey>> = (0..BATCHES)
        .map(|b| {
            (0..BATCH)
                .map(|i| binding(D, &format!("{}", 10_000 + b * BATCH + i), "p", expires).key())
                .collect()
        })
        .collect();
    let started = Instant::now();
    for b in 0..BATCHES {
        let writes = (0..BATCH)
            .map(|i| {
                Write::PutBinding(binding(
                    D,
                    &format!("{}", 10_000 + b * BATCH + i),
                    "p",
                    expires,
                ))
            })
            .collect();
        store.apply(writes).await.expect("put");
    }
    let put = started.elapsed();
    let started = Instant::now();
    for batch in &keys {
        let writes = batch
            .iter()
            .map(|k| Write::RefreshBinding {
                key: k.clone(),
                expires_at: in_secs(7200),
            })
            .collect();
        store.apply(writes).await.expect("refresh");
    }
    let refresh = started.elapsed();
    let started = Instant::now();
    let (snapshot, _) = store.watch().await.expect("watch");
    let n = (BATCHES * BATCH) as f64;
    println!(
        "batches of {BATCH}: PutBinding {:.0}/s, RefreshBinding {:.0}/s (one subscriber); \
         snapshot of {} bindings in {:?}",
        n / put.as_secs_f64(),
        n / refresh.as_secs_f64(),
        snapshot.bindings.len(),
        started.elapsed()
    );
    drain.abort();
}
