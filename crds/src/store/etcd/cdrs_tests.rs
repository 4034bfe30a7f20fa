//! Finished calls against a real etcd: records written by one replica are read, newest first,
//! by another; more records than one transaction holds are written; bad ids are refused
//! without losing the others; trimming keeps exactly the newest.

use super::tests::{connect, quick, server, store};
use crate::cdrs::CdrEntry;
use crate::store::StoreError;
use crate::time::UnixMillis;

fn entry(id: &str, ended_secs: u64) -> CdrEntry {
    CdrEntry {
        id: id.to_owned(),
        ended: UnixMillis(1_795_000_000_000 + ended_secs * 1000),
        json: format!("{{\"id\":\"{id}\"}}").into_bytes(),
    }
}

fn ids(records: &[Vec<u8>]) -> Vec<String> {
    records
        .iter()
        .map(|json| {
            let value: serde_json::Value = serde_json::from_slice(json).expect("json");
            value["id"].as_str().expect("id").to_owned()
        })
        .collect()
}

#[tokio::test]
async fn finished_calls_are_shared_newest_first_and_trimmed_to_the_newest() {
    let a = store("cdrs").await;
    let b = connect(&server().endpoints(), quick(a.prefix().to_owned())).await;
    assert!(b.recent_cdrs(10).await.expect("empty read").is_empty());

    // Out of order, from two writers; 300 records need several transactions.
    a.save_cdrs(&[entry("a-1-2", 20), entry("a-1-1", 10)])
        .await
        .expect("save");
    b.save_cdrs(&[entry("b-1-1", 15)]).await.expect("save");
    assert_eq!(
        ids(&a.recent_cdrs(10).await.expect("read")),
        ["a-1-2", "b-1-1", "a-1-1"]
    );
    let many: Vec<CdrEntry> = (0..300)
        .map(|i| entry(&format!("c-1-{i}"), 100 + i))
        .collect();
    b.save_cdrs(&many).await.expect("save many");
    let newest = ids(&a.recent_cdrs(2).await.expect("read"));
    assert_eq!(newest, ["c-1-299", "c-1-298"]);

    // A bad id is refused by name; the good record beside it is kept.
    match a.save_cdrs(&[entry("bad/id", 1), entry("a-1-3", 1)]).await {
        Err(StoreError::Rejected { what, .. }) => assert!(what.contains("bad/id"), "{what}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(a.recent_cdrs(1000).await.expect("read").len(), 304);

    assert_eq!(a.trim_cdrs(1000).await.expect("trim nothing"), 0);
    assert_eq!(a.trim_cdrs(5).await.expect("trim"), 299);
    assert_eq!(
        ids(&b.recent_cdrs(10).await.expect("read")),
        ["c-1-299", "c-1-298", "c-1-297", "c-1-296", "c-1-295"]
    );
}
