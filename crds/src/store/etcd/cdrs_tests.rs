//! Finished calls against a real etcd: records written by one replica are read, newest first,
//! by another; more records than one transaction holds are written; bad ids are refused
//! without losing the others; trimming keeps exactly the newest. The followed newest records
//! (the registrars' cache) take other writers' records within moments, never hold more than
//! their bound, lose trimmed records, skip records whose value names another call, and are
//! current again after an etcd outage.

use super::FollowedMap;
use super::registry_tests::until;
use super::testing::EtcdServer;
use super::tests::{connect, quick, raw, server, store, unique_prefix};
use crate::cdrs::{CdrEntry, CdrRecord, cdr_key};
use crate::store::{EtcdStore, StoreError};
use crate::time::UnixMillis;
use std::time::Duration;
use tokio::sync::watch;

/// How long a record written elsewhere may take to reach a follower.
const SOON: Duration = Duration::from_secs(5);

/// A record as the follower decodes it (the registrar's has more fields).
#[derive(Debug, Clone, serde::Deserialize)]
struct Cdr {
    id: String,
}

impl CdrRecord for Cdr {
    fn call_id(&self) -> &str {
        &self.id
    }
}

fn ended(secs: u64) -> UnixMillis {
    UnixMillis(1_795_000_000_000 + secs * 1000)
}

fn entry(id: &str, ended_secs: u64) -> CdrEntry {
    CdrEntry {
        id: id.to_owned(),
        ended: ended(ended_secs),
        json: format!("{{\"id\":\"{id}\"}}").into_bytes(),
    }
}

/// The ids in a followed map, newest first.
fn ids(map: &FollowedMap<Cdr>) -> Vec<String> {
    map.values().rev().map(|c| c.id.clone()).collect()
}

/// The ids of the newest `limit` records, newest first, as a follower starting now reads them.
async fn newest(store: &EtcdStore, limit: usize) -> Vec<String> {
    let followed = store.follow_cdrs::<Cdr>(limit).await.expect("read");
    ids(&followed.borrow())
}

/// Waits until the followed records are `want` (newest first), checking at every change that
/// they never exceed `bound`.
async fn until_ids(
    rx: &mut watch::Receiver<FollowedMap<Cdr>>,
    bound: usize,
    what: &str,
    want: &[&str],
) {
    until(rx, SOON, what, |map| {
        assert!(map.len() <= bound, "{what}: {} records: {map:?}", map.len());
        ids(map) == want
    })
    .await;
}

#[tokio::test]
async fn finished_calls_are_shared_newest_first_and_trimmed_to_the_newest() {
    let a = store("cdrs").await;
    let b = connect(&server().endpoints(), quick(a.prefix().to_owned())).await;
    assert!(newest(&b, 10).await.is_empty());

    // Out of order, from two writers; 300 records need several transactions.
    a.save_cdrs(&[entry("a-1-2", 20), entry("a-1-1", 10)])
        .await
        .expect("save");
    b.save_cdrs(&[entry("b-1-1", 15)]).await.expect("save");
    assert_eq!(newest(&a, 10).await, ["a-1-2", "b-1-1", "a-1-1"]);
    let many: Vec<CdrEntry> = (0..300)
        .map(|i| entry(&format!("c-1-{i}"), 100 + i))
        .collect();
    b.save_cdrs(&many).await.expect("save many");
    assert_eq!(newest(&a, 2).await, ["c-1-299", "c-1-298"]);

    // A bad id is refused by name; the good record beside it is kept.
    match a.save_cdrs(&[entry("bad/id", 1), entry("a-1-3", 1)]).await {
        Err(StoreError::Rejected { what, .. }) => assert!(what.contains("bad/id"), "{what}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(newest(&a, 1000).await.len(), 304);

    assert_eq!(a.trim_cdrs(1000).await.expect("trim nothing"), 0);
    assert_eq!(a.trim_cdrs(5).await.expect("trim"), 299);
    assert_eq!(
        newest(&b, 10).await,
        ["c-1-299", "c-1-298", "c-1-297", "c-1-296", "c-1-295"]
    );
}

#[tokio::test]
async fn the_followed_newest_take_other_writers_records_and_lose_trimmed_ones() {
    let reader = store("cdr-cache").await;
    let writer = connect(&server().endpoints(), quick(reader.prefix().to_owned())).await;
    writer
        .save_cdrs(&[entry("w-1-1", 10), entry("w-1-2", 20)])
        .await
        .expect("save");
    let mut followed = reader.follow_cdrs::<Cdr>(3).await.expect("follow");
    assert_eq!(
        ids(&followed.borrow()),
        ["w-1-2", "w-1-1"],
        "the first read"
    );

    // Another writer's records arrive by the watch; past 3 the oldest leave.
    writer.save_cdrs(&[entry("w-1-3", 30)]).await.expect("save");
    until_ids(
        &mut followed,
        3,
        "a new record",
        &["w-1-3", "w-1-2", "w-1-1"],
    )
    .await;
    writer
        .save_cdrs(&[entry("w-1-5", 50), entry("w-1-4", 40)])
        .await
        .expect("save");
    until_ids(
        &mut followed,
        3,
        "the newest three",
        &["w-1-5", "w-1-4", "w-1-3"],
    )
    .await;

    // A late record older than the three, and one whose value names another call, stay out;
    // the marker written after them shows they were seen.
    writer.save_cdrs(&[entry("w-1-0", 5)]).await.expect("save");
    let corrupt = reader.corrupt_values();
    let liar = cdr_key(reader.prefix(), ended(60), "w-1-6").expect("key");
    raw(&server().endpoints())
        .await
        .put(liar, br#"{"id":"other-1-1"}"#.to_vec(), None)
        .await
        .expect("put");
    writer.save_cdrs(&[entry("w-1-7", 70)]).await.expect("save");
    until_ids(&mut followed, 3, "the marker", &["w-1-7", "w-1-5", "w-1-4"]).await;
    assert!(reader.corrupt_values() > corrupt, "the liar was counted");

    // Trimming to three deletes w-1-0 to w-1-4: w-1-4 leaves the window, w-1-5 stays (w-1-6
    // is still undecodable).
    assert_eq!(writer.trim_cdrs(3).await.expect("trim"), 5);
    until_ids(&mut followed, 3, "after trimming", &["w-1-7", "w-1-5"]).await;
    delete(reader.prefix(), 60, "w-1-6").await;
    writer
        .save_cdrs(&[entry("w-1-8", 80), entry("w-1-9", 90)])
        .await
        .expect("save");
    until_ids(
        &mut followed,
        3,
        "new records",
        &["w-1-9", "w-1-8", "w-1-7"],
    )
    .await;

    // A record of the window deleted while an older one is left in etcd: the older one,
    // never read, takes its place.
    delete(reader.prefix(), 80, "w-1-8").await;
    until_ids(
        &mut followed,
        3,
        "a deletion in the window",
        &["w-1-9", "w-1-7", "w-1-5"],
    )
    .await;
}

/// Deletes the record of call `id` that ended at `ended_secs`, as `etcdctl del` would.
async fn delete(prefix: &str, ended_secs: u64, id: &str) {
    let key = cdr_key(prefix, ended(ended_secs), id).expect("key");
    let deleted = raw(&server().endpoints())
        .await
        .delete(key, None)
        .await
        .expect("delete")
        .deleted();
    assert_eq!(deleted, 1, "{id} was there");
}

#[tokio::test]
async fn the_followed_newest_stay_through_an_outage_and_are_current_after_it() {
    let mut etcd = EtcdServer::start().unwrap_or_else(|e| panic!("{e}"));
    let prefix = unique_prefix("cdr-outage");
    let reader = connect(&etcd.endpoints(), quick(prefix.clone())).await;
    reader
        .save_cdrs(&[entry("r-1-1", 10), entry("r-1-2", 20), entry("r-1-3", 30)])
        .await
        .expect("save");
    let mut followed = reader.follow_cdrs::<Cdr>(2).await.expect("follow");
    assert_eq!(ids(&followed.borrow()), ["r-1-3", "r-1-2"]);

    etcd.stop();
    // A replica lists what it had while etcd is away (reads fail meanwhile).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ids(&followed.borrow()), ["r-1-3", "r-1-2"]);

    // Back, another writer deletes a record of the window (r-1-1, older, takes its place)
    // and adds one.
    etcd.restart().unwrap_or_else(|e| panic!("{e}"));
    let writer = connect(&etcd.endpoints(), quick(prefix)).await;
    let gone = cdr_key(writer.prefix(), ended(30), "r-1-3").expect("key");
    raw(&etcd.endpoints())
        .await
        .delete(gone, None)
        .await
        .expect("delete");
    until_ids(&mut followed, 2, "after the outage", &["r-1-2", "r-1-1"]).await;
    writer.save_cdrs(&[entry("w-1-4", 40)]).await.expect("save");
    until_ids(&mut followed, 2, "a new record", &["w-1-4", "r-1-2"]).await;
}
