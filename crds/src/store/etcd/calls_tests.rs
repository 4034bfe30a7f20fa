//! Calls in progress against a real etcd: a replica's call records appear on the others, change,
//! go when the call ends, are replaced wholesale, come back after their lease was lost and vanish
//! with a dead replica; hangup requests reach every replica and go when taken.

use super::registry_tests::until;
use super::tests::{connect, quick, raw, server, store};
use crate::calls::{CallPhase, CallRecord};
use crate::replicas::{ReplicaKind, ReplicaRecord};
use crate::store::StoreError;
use crate::time::UnixMillis;
use std::time::Duration;

const TTL: Duration = Duration::from_secs(2);
const SOON: Duration = Duration::from_secs(5);

fn call(id: &str, owner: &str, state: CallPhase) -> CallRecord {
    CallRecord {
        id: id.to_owned(),
        owner: owner.to_owned(),
        from: "1001".to_owned(),
        to: "1002".to_owned(),
        state,
        started_at: UnixMillis(1_795_000_000_000),
        answered_at: (state == CallPhase::Answered).then_some(UnixMillis(1_795_000_001_000)),
        media: Some("m0".to_owned()),
        session: Some(format!("s-{id}")),
    }
}

#[tokio::test]
async fn a_replicas_calls_are_shared_while_it_lives() {
    let a = store("calls").await;
    let b = connect(&server().endpoints(), quick(a.prefix().to_owned())).await;
    let mut seen = b.calls().await.expect("follow");
    let announced = a
        .announce(ReplicaRecord::new(ReplicaKind::Registrar, "a"), TTL)
        .await
        .expect("announce");
    let calls = announced.owned();

    assert!(
        calls
            .put_call(&call("a-1-1", "a", CallPhase::Ringing))
            .await
    );
    assert!(
        calls
            .put_call(&call("a-1-2", "a", CallPhase::Ringing))
            .await
    );
    until(&mut seen, SOON, "two calls", |m| m.len() == 2).await;
    calls
        .put_call(&call("a-1-1", "a", CallPhase::Answered))
        .await;
    let map = until(&mut seen, SOON, "answered", |m| {
        m.get("a-1-1")
            .is_some_and(|c| c.state == CallPhase::Answered)
    })
    .await;
    assert_eq!(map["a-1-1"], call("a-1-1", "a", CallPhase::Answered));
    calls.delete_call("a-1-2").await;
    until(&mut seen, SOON, "ended call gone", |m| {
        !m.contains_key("a-1-2")
    })
    .await;
    calls
        .replace_calls(&[call("a-1-3", "a", CallPhase::Ringing)])
        .await;
    until(&mut seen, SOON, "replaced", |m| {
        m.len() == 1 && m.contains_key("a-1-3")
    })
    .await;

    // etcd loses the lease (as after an outage longer than the TTL): the calls come back on a
    // new one.
    let mut client = raw(&server().endpoints()).await;
    let key = format!("{}/calls/a-1-3", a.prefix());
    let got = client.get(key.as_str(), None).await.expect("get");
    let lease = got.kvs()[0].lease();
    assert_ne!(lease, 0, "call records live on a lease");
    client.lease_revoke(lease).await.expect("revoke");
    until(&mut seen, SOON, "revoked", |m| m.is_empty()).await;
    until(&mut seen, TTL * 3, "written again", |m| {
        m.contains_key("a-1-3")
    })
    .await;

    // A crash: the calls go with the replica's lease.
    drop(announced);
    until(&mut seen, TTL * 3, "a dead replica's calls", |m| {
        m.is_empty()
    })
    .await;
}

#[tokio::test]
async fn hangup_requests_reach_every_replica_until_taken() {
    let a = store("hangups").await;
    let b = connect(&server().endpoints(), quick(a.prefix().to_owned())).await;
    let mut requests = a.hangups().await.expect("follow");
    b.request_hangup("a-1-7", "b").await.expect("request");
    let map = until(&mut requests, SOON, "request", |m| m.contains_key("a-1-7")).await;
    assert_eq!(map["a-1-7"].by, "b");
    a.forget_hangup("a-1-7").await.expect("forget");
    until(&mut requests, SOON, "taken", |m| m.is_empty()).await;
    match b.request_hangup("../ext", "b").await {
        Err(StoreError::Rejected { what, .. }) => assert!(what.contains("../ext"), "{what}"),
        other => panic!("a bad id is refused: {other:?}"),
    }
}

#[tokio::test]
async fn corrupt_call_records_are_skipped() {
    let s = store("calls-corrupt").await;
    let mut client = raw(&server().endpoints()).await;
    let prefix = format!("{}/calls/", s.prefix());
    client
        .put(format!("{prefix}junk"), "{", None)
        .await
        .expect("put");
    client
        .put(
            format!("{prefix}liar"),
            serde_json::to_vec(&call("other", "x", CallPhase::Ringing)).expect("json"),
            None,
        )
        .await
        .expect("put");
    let seen = s.calls().await.expect("follow");
    assert!(seen.borrow().is_empty());
    assert_eq!(s.corrupt_values(), 2);
}
