//! `MediaPool` over real media replicas: `LocalRelay`s behind `control::router` on loopback,
//! announced through a watch channel as the cluster registry would.
#![allow(clippy::unwrap_used, reason = "test code")]

use kubepbx_media::control::{EventFeed, router};
use kubepbx_media::*;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The RTP ports of replica number `slot` (10 pairs): below the kernel's ephemeral ports and
/// apart from the relay and control tests (which start at 21000 and offset by process id too).
fn ports(slot: u16) -> std::ops::RangeInclusive<u16> {
    let base = 23000 + (std::process::id() % 24) as u16 * 320 + slot * 20;
    base..=base + 19
}

/// A media replica on loopback.
struct Replica {
    id: String,
    url: String,
    relay: LocalRelay,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Replica {
    async fn start(id: &str, slot: u16, media_timeout: Duration) -> Replica {
        let config = RelayConfig {
            advertise: LOCAL,
            bind: LOCAL,
            ports: ports(slot),
            media_timeout,
            ..RelayConfig::default()
        };
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (relay, events) = LocalRelay::start(config, shutdown.clone(), &tasks).unwrap();
        let feed = EventFeed::start(events, shutdown.clone(), &tasks);
        let app = router(Arc::new(relay.clone()), feed);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = shutdown.clone();
        tasks.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
                .unwrap();
        });
        Replica {
            id: id.to_owned(),
            url: format!("http://{addr}"),
            relay,
            shutdown,
            tasks,
        }
    }

    /// Its announcement with these figures.
    fn announce(&self, sessions: u64, free_port_pairs: u64) -> MediaReplica {
        MediaReplica {
            id: self.id.clone(),
            control: self.url.clone(),
            sessions,
            free_port_pairs,
        }
    }

    /// The sessions it holds, by its own account.
    async fn holds(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .relay
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.session.0)
            .collect();
        ids.sort();
        ids
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.tasks.close();
        tokio::time::timeout(Duration::from_secs(5), self.tasks.wait())
            .await
            .unwrap();
    }
}

/// A replica announced at a URL where nothing listens (a port that was just free).
fn dead(id: &str, sessions: u64) -> MediaReplica {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    MediaReplica {
        id: id.to_owned(),
        control: format!("http://{addr}"),
        sessions,
        free_port_pairs: 100,
    }
}

/// A pool following `set`, with its events and the means to stop it.
struct Pool {
    pool: MediaPool,
    events: mpsc::Receiver<RelayEvent>,
    registry: watch::Sender<Vec<MediaReplica>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Pool {
    fn new(set: Vec<MediaReplica>) -> Pool {
        let (registry, replicas) = watch::channel(set);
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (pool, events) = MediaPool::new(replicas, shutdown.clone(), &tasks);
        Pool {
            pool,
            events,
            registry,
            shutdown,
            tasks,
        }
    }

    fn announce(&self, set: Vec<MediaReplica>) {
        self.registry.send_replace(set);
    }

    /// Stops the pool; its tasks must end.
    async fn stop(self) {
        self.shutdown.cancel();
        self.tasks.close();
        tokio::time::timeout(Duration::from_secs(5), self.tasks.wait())
            .await
            .unwrap();
    }
}

fn sdp(port: u16) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtcp:{}\r\n",
        port + 1
    )
}

fn id(name: &str) -> SessionId {
    SessionId(name.to_owned())
}

fn offer(session: &str) -> OfferRequest {
    OfferRequest {
        session: id(session),
        side: Side::Caller,
        sdp: sdp(4000),
        signalling_source: LOCAL,
        recording: None,
        peer: PeerMedia::Rtp,
    }
}

fn answer(session: &str, port: u16) -> AnswerRequest {
    AnswerRequest {
        session: id(session),
        side: Side::Callee,
        sdp: sdp(port),
        signalling_source: LOCAL,
    }
}

#[tokio::test]
async fn a_new_session_goes_to_the_least_loaded_replica() {
    let a = Replica::start("media-a", 0, Duration::from_secs(60)).await;
    let b = Replica::start("media-b", 1, Duration::from_secs(60)).await;
    // Fewest sessions wins.
    let p = Pool::new(vec![a.announce(5, 10), b.announce(1, 10)]);
    p.pool.offer(offer("s1")).await.unwrap();
    assert_eq!(p.pool.replica_of(&id("s1")).as_deref(), Some("media-b"));
    assert_eq!(b.holds().await, ["s1"]);
    assert!(a.holds().await.is_empty());
    // Same sessions: most free port pairs wins.
    p.announce(vec![a.announce(3, 10), b.announce(3, 4)]);
    p.pool.offer(offer("s2")).await.unwrap();
    assert_eq!(p.pool.replica_of(&id("s2")).as_deref(), Some("media-a"));
    // All equal: the lowest id.
    p.announce(vec![b.announce(4, 8), a.announce(4, 8)]);
    p.pool.offer(offer("s3")).await.unwrap();
    assert_eq!(p.pool.replica_of(&id("s3")).as_deref(), Some("media-a"));
    assert_eq!(a.holds().await, ["s2", "s3"]);
    p.stop().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_burst_spreads_although_announcements_lag() {
    let a = Replica::start("media-a", 2, Duration::from_secs(60)).await;
    let b = Replica::start("media-b", 3, Duration::from_secs(60)).await;
    let p = Pool::new(vec![a.announce(0, 10), b.announce(0, 10)]);
    // Concurrent offers, no announcement in between.
    let mut burst = tokio::task::JoinSet::new();
    for n in 0..8 {
        let pool = p.pool.clone();
        burst.spawn(async move { pool.offer(offer(&format!("call-{n}"))).await });
    }
    while let Some(done) = burst.join_next().await {
        done.unwrap().unwrap();
    }
    assert_eq!(a.holds().await.len(), 4);
    assert_eq!(b.holds().await.len(), 4);
    // A fresh announcement replaces what the pool added: b now looks emptier.
    p.announce(vec![a.announce(4, 2), b.announce(3, 4)]);
    p.pool.offer(offer("next")).await.unwrap();
    assert_eq!(p.pool.replica_of(&id("next")).as_deref(), Some("media-b"));
    p.stop().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn requests_for_a_session_reach_the_replica_holding_it() {
    let a = Replica::start("media-a", 4, Duration::from_secs(60)).await;
    let b = Replica::start("media-b", 5, Duration::from_secs(60)).await;
    let p = Pool::new(vec![a.announce(0, 10), b.announce(0, 10)]);
    p.pool.offer(offer("on-a")).await.unwrap();
    p.pool.offer(offer("on-b")).await.unwrap();
    assert_eq!(p.pool.replica_of(&id("on-b")).as_deref(), Some("media-b"));

    // The answer reaches b: b relays the caller's RTP to the callee it names.
    let caller = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let callee = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let callee_port = callee.local_addr().unwrap().port();
    let mut req = offer("on-b");
    req.sdp = sdp(caller.local_addr().unwrap().port());
    // A re-offer goes to b as well, updating the caller's address.
    p.pool.offer(req).await.unwrap();
    let to_caller = p.pool.answer(answer("on-b", callee_port)).await.unwrap();
    let relay_port: u16 = to_caller
        .sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(ports(5).contains(&relay_port), "{relay_port}");
    let mut packet = vec![0x80, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 7];
    packet.extend_from_slice(&[0xff; 160]);
    caller.send_to(&packet, (LOCAL, relay_port)).await.unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), callee.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, packet.len());

    let stats = p.pool.stats(&id("on-b")).await.unwrap().unwrap();
    assert_eq!(stats.caller.packets_in, 1);
    assert_eq!(
        Some(stats.created_at),
        b.relay
            .stats(&id("on-b"))
            .await
            .unwrap()
            .map(|s| s.created_at)
    );
    let mut all: Vec<String> = p
        .pool
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.session.0)
        .collect();
    all.sort();
    assert_eq!(all, ["on-a", "on-b"]);
    let metrics = p.pool.metrics().await.unwrap();
    assert_eq!(metrics.sessions_active, 2);
    assert_eq!(metrics.port_pairs_total, 20);
    assert_eq!(metrics.port_pairs_free, 16);
    assert_eq!(metrics.rtp_relayed, 1);

    // Delete ends it on b only, and the pool forgets it.
    let last = p.pool.delete(&id("on-b")).await.unwrap().unwrap();
    assert_eq!(last.callee.packets_out, 1);
    assert!(b.holds().await.is_empty());
    assert_eq!(a.holds().await, ["on-a"]);
    assert_eq!(p.pool.replica_of(&id("on-b")), None);

    // Unknown sessions.
    assert_eq!(p.pool.delete(&id("on-b")).await.unwrap(), None);
    assert_eq!(p.pool.stats(&id("on-b")).await.unwrap(), None);
    assert_eq!(
        p.pool.answer(answer("on-b", 4000)).await.unwrap_err(),
        MediaError::UnknownSession
    );
    p.stop().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn offers_fail_over_to_the_next_replica() {
    let b = Replica::start("media-b", 6, Duration::from_secs(60)).await;
    let c = Replica::start("media-c", 7, Duration::from_secs(60)).await;
    // a is the least loaded but unreachable; b is next but has room for one call only (it
    // announces more); c is the most loaded.
    let p = Pool::new(vec![
        dead("media-a", 0),
        b.announce(1, 100),
        c.announce(9, 100),
    ]);
    // Fill b to its last port pair.
    for n in 0..4 {
        b.relay.offer(offer(&format!("local-{n}"))).await.unwrap();
    }
    p.pool.offer(offer("first")).await.unwrap();
    assert_eq!(p.pool.replica_of(&id("first")).as_deref(), Some("media-b"));
    // b is full now: a fails, b refuses, c takes it.
    p.pool.offer(offer("second")).await.unwrap();
    assert_eq!(p.pool.replica_of(&id("second")).as_deref(), Some("media-c"));
    assert_eq!(c.holds().await, ["second"]);
    // Lists and metrics leave the unreachable replica out.
    assert_eq!(p.pool.list().await.unwrap().len(), 6);
    assert_eq!(p.pool.metrics().await.unwrap().sessions_active, 6);

    // The SDP at fault: no other replica is tried.
    let mut video = offer("video");
    video.sdp = video.sdp.replace("m=audio", "m=video");
    assert_eq!(p.pool.offer(video).await.unwrap_err(), MediaError::NoAudio);
    assert_eq!(p.pool.replica_of(&id("video")), None);

    // Every replica unreachable: the last error, naming a replica.
    let q = Pool::new(vec![dead("media-x", 0), dead("media-y", 1)]);
    let err = q.pool.offer(offer("nowhere")).await.unwrap_err();
    let MediaError::Unavailable(text) = &err else {
        panic!("{err:?}")
    };
    assert!(text.contains("127.0.0.1"), "{text}");
    assert_eq!(q.pool.list().await.unwrap(), []);
    q.stop().await;
    p.stop().await;
    b.stop().await;
    c.stop().await;
}

#[tokio::test]
async fn no_replica_is_a_clear_unavailable_error() {
    let p = Pool::new(Vec::new());
    let err = p.pool.offer(offer("s")).await.unwrap_err();
    let MediaError::Unavailable(text) = &err else {
        panic!("{err:?}")
    };
    assert!(text.contains("no media replica"), "{text}");
    assert_eq!(err.sip_status().0, 503);
    assert_eq!(p.pool.list().await.unwrap(), []);
    assert_eq!(p.pool.metrics().await.unwrap(), MetricsSnapshot::default());
    p.stop().await;
}

/// The next event on the merged stream, within 5 s.
async fn next_timeout(events: &mut mpsc::Receiver<RelayEvent>) -> SessionId {
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("a timeout event within 5 s")
        .unwrap();
    let RelayEvent::Timeout(session, _) = event else {
        panic!("{event:?}")
    };
    session
}

/// Sets up an answered call on `pool` that carries no media.
async fn silent_call(pool: &MediaPool, session: &str) {
    pool.offer(offer(session)).await.unwrap();
    pool.answer(answer(session, 4002)).await.unwrap();
}

#[tokio::test]
async fn media_timeouts_of_every_replica_arrive_on_one_stream() {
    let timeout = Duration::from_millis(300);
    let a = Replica::start("media-a", 8, timeout).await;
    let b = Replica::start("media-b", 9, timeout).await;
    let mut p = Pool::new(vec![a.announce(0, 10)]);
    // Let the pollers learn the feeds' positions before the events.
    tokio::time::sleep(Duration::from_millis(200)).await;
    silent_call(&p.pool, "on-a").await;
    assert_eq!(next_timeout(&mut p.events).await, id("on-a"));
    assert_eq!(p.pool.replica_of(&id("on-a")), None);

    // A replica joining the set gets a poller.
    p.announce(vec![a.announce(5, 10), b.announce(0, 10)]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    silent_call(&p.pool, "on-b").await;
    assert_eq!(p.pool.replica_of(&id("on-b")).as_deref(), Some("media-b"));
    assert_eq!(next_timeout(&mut p.events).await, id("on-b"));
    p.stop().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_replica_that_left_gets_no_new_sessions_but_keeps_its_own() {
    let a = Replica::start("media-a", 10, Duration::from_secs(60)).await;
    let b = Replica::start("media-b", 11, Duration::from_secs(60)).await;
    let p = Pool::new(vec![a.announce(0, 10), b.announce(5, 10)]);
    p.pool.offer(offer("old")).await.unwrap();
    assert_eq!(p.pool.replica_of(&id("old")).as_deref(), Some("media-a"));
    // a's lease lapses: new calls avoid it though it is the least loaded…
    p.announce(vec![b.announce(5, 10)]);
    for n in 0..3 {
        p.pool.offer(offer(&format!("new-{n}"))).await.unwrap();
    }
    assert_eq!(a.holds().await, ["old"]);
    assert_eq!(b.holds().await, ["new-0", "new-1", "new-2"]);
    assert_eq!(p.pool.list().await.unwrap().len(), 3);
    // …but its call is still reached at its last known URL.
    assert!(p.pool.stats(&id("old")).await.unwrap().is_some());
    p.pool.answer(answer("old", 4002)).await.unwrap();
    assert!(p.pool.delete(&id("old")).await.unwrap().is_some());
    assert!(a.holds().await.is_empty());
    p.stop().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn place_pins_a_session_created_elsewhere() {
    let a = Replica::start("media-a", 12, Duration::from_secs(60)).await;
    let b = Replica::start("media-b", 13, Duration::from_secs(60)).await;
    let p = Pool::new(vec![a.announce(0, 10), b.announce(5, 10)]);
    // Another registrar replica created the session on b.
    b.relay.offer(offer("elsewhere")).await.unwrap();
    assert_eq!(p.pool.replica_of(&id("elsewhere")), None);
    assert_eq!(
        p.pool.answer(answer("elsewhere", 4002)).await.unwrap_err(),
        MediaError::UnknownSession
    );
    p.pool.place(&id("elsewhere"), "media-b");
    assert_eq!(
        p.pool.replica_of(&id("elsewhere")).as_deref(),
        Some("media-b")
    );
    p.pool.answer(answer("elsewhere", 4002)).await.unwrap();
    // A re-offer stays on b, though a is less loaded.
    let mut reinvite = offer("elsewhere");
    reinvite.side = Side::Callee;
    p.pool.offer(reinvite).await.unwrap();
    assert!(a.holds().await.is_empty());
    assert!(p.pool.stats(&id("elsewhere")).await.unwrap().is_some());
    assert!(p.pool.delete(&id("elsewhere")).await.unwrap().is_some());
    assert!(b.holds().await.is_empty());
    assert_eq!(p.pool.replica_of(&id("elsewhere")), None);

    // Pinned to a replica the pool does not know: unavailable until it appears.
    p.pool.place(&id("unknown"), "media-z");
    let err = p.pool.stats(&id("unknown")).await.unwrap_err();
    assert!(
        matches!(&err, MediaError::Unavailable(t) if t.contains("media-z")),
        "{err:?}"
    );
    assert!(p.pool.delete(&id("unknown")).await.is_err());
    assert_eq!(p.pool.replica_of(&id("unknown")), None);
    p.stop().await;
    a.stop().await;
    b.stop().await;
}
