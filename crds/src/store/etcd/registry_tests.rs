//! The replica registry and cluster key against a real etcd: announcements appear, change,
//! leave on release, expire when their owner dies, come back after an outage; corrupt entries
//! are skipped; every replica gets the same cluster key.

use super::testing::EtcdServer;
use super::tests::{connect, quick, raw, server, store, unique_prefix};
use super::{EtcdStore, FollowedMap};
use crate::replicas::{ReplicaKind, ReplicaRecord};
use crate::store::StoreError;
use etcd_client::PutOptions;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const TTL: Duration = Duration::from_secs(2);

fn media(id: &str, sessions: u64) -> ReplicaRecord {
    let mut r = ReplicaRecord::new(ReplicaKind::Media, id);
    r.control = Some(format!("http://127.0.0.1:9{sessions:03}"));
    r.load.sessions = sessions;
    r
}

/// Waits until the map satisfies `check` (at most `within`), returning it.
pub(super) async fn until<T: std::fmt::Debug>(
    rx: &mut watch::Receiver<FollowedMap<T>>,
    within: Duration,
    what: &str,
    check: impl Fn(&FollowedMap<T>) -> bool,
) -> FollowedMap<T> {
    let deadline = Instant::now() + within;
    loop {
        let now = rx.borrow_and_update().clone();
        if check(&now) {
            return now;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
            panic!(
                "{what}: not within {within:?}; registry is {:?}",
                rx.borrow()
            );
        }
    }
}

#[tokio::test]
async fn announcements_appear_change_and_leave() {
    let a = store("registry").await;
    let b = connect(&server().endpoints(), quick(a.prefix().to_owned())).await;
    let mut seen = b.replicas(ReplicaKind::Media).await.expect("follow");
    assert!(seen.borrow().is_empty());

    let m0 = a.announce(media("m0", 0), TTL).await.expect("announce");
    let record = media("m1", 3);
    let m1 = a.announce(record.clone(), TTL).await.expect("announce");
    let map = until(&mut seen, Duration::from_secs(5), "both announced", |m| {
        m.len() == 2
    })
    .await;
    assert_eq!(map["m1"], record);

    m0.update(|r| r.load.sessions = 7);
    until(&mut seen, Duration::from_secs(5), "load update", |m| {
        m.get("m0").is_some_and(|r| r.load.sessions == 7)
    })
    .await;

    // Other kinds are elsewhere.
    let registrars = b.replicas(ReplicaKind::Registrar).await.expect("follow");
    assert!(registrars.borrow().is_empty());

    // Kept alive past several TTLs.
    tokio::time::sleep(TTL * 2).await;
    assert_eq!(seen.borrow().len(), 2, "announcements outlive their TTL");

    m0.release().await;
    until(
        &mut seen,
        Duration::from_secs(1),
        "release is immediate",
        |m| !m.contains_key("m0"),
    )
    .await;

    // A crash: the task stops, etcd expires the lease.
    drop(m1);
    until(&mut seen, TTL * 3, "expiry of a dead replica", |m| {
        m.is_empty()
    })
    .await;
}

#[tokio::test]
async fn corrupt_announcements_are_skipped_and_counted() {
    let s = store("registry-corrupt").await;
    let mut client = raw(&server().endpoints()).await;
    let prefix = format!("{}/replicas/media/", s.prefix());
    client
        .put(format!("{prefix}junk"), "not json", None)
        .await
        .expect("put");
    client
        .put(
            format!("{prefix}liar"),
            serde_json::to_vec(&media("someone-else", 0)).expect("json"),
            None,
        )
        .await
        .expect("put");
    let mut seen = s.replicas(ReplicaKind::Media).await.expect("follow");
    assert!(seen.borrow().is_empty());
    assert_eq!(s.corrupt_values(), 2);
    let _ok = s.announce(media("ok", 1), TTL).await.expect("announce");
    client
        .put(format!("{prefix}later"), "{", Some(PutOptions::new()))
        .await
        .expect("put");
    until(&mut seen, Duration::from_secs(5), "good entry", |m| {
        m.len() == 1 && m.contains_key("ok")
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.corrupt_values() < 3 {
        assert!(
            Instant::now() < deadline,
            "the watched corrupt value is counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_replica_gets_the_same_cluster_key() {
    let a = store("cluster-key").await;
    let b = connect(&server().endpoints(), quick(a.prefix().to_owned())).await;
    let (ka, kb) = tokio::join!(a.cluster_key(), b.cluster_key());
    let ka = ka.expect("key");
    assert_eq!(ka, kb.expect("key"));
    assert_eq!(a.cluster_key().await.expect("again"), ka);
    let other = store("cluster-key").await;
    assert_ne!(other.cluster_key().await.expect("key"), ka, "per prefix");

    let mut client = raw(&server().endpoints()).await;
    client
        .put(format!("{}/cluster/key", a.prefix()), "zz", None)
        .await
        .expect("put");
    let err = a.cluster_key().await.expect_err("corrupt");
    assert!(
        matches!(&err, StoreError::Corrupt { path, .. } if path.ends_with("/cluster/key")),
        "{err}"
    );
    assert!(err.to_string().contains("etcdctl del"), "{err}");
}

#[tokio::test]
async fn an_announcement_survives_an_etcd_outage() {
    let mut etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let prefix = unique_prefix("registry-outage");
    let a: EtcdStore = connect(&etcd.endpoints(), quick(prefix.clone())).await;
    let announcement = a.announce(media("m0", 0), TTL).await.expect("announce");
    etcd.stop();
    // Longer than the TTL: etcd 3.4 grants leases their full TTL again on restart, so the
    // entry may survive; either way it must be there once etcd is back and stay there.
    tokio::time::sleep(TTL * 2).await;
    announcement.update(|r| r.load.sessions = 5);
    etcd.restart().unwrap_or_else(|e| panic!("{e}"));
    let b = connect(&etcd.endpoints(), quick(prefix)).await;
    let mut seen = b.replicas(ReplicaKind::Media).await.expect("follow");
    until(
        &mut seen,
        TTL * 5,
        "announced again with the new load",
        |m| m.get("m0").is_some_and(|r| r.load.sessions == 5),
    )
    .await;
    tokio::time::sleep(TTL * 2).await;
    assert!(seen.borrow().contains_key("m0"), "still announced");
}
