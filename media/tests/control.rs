//! The HTTP control transport: a `LocalRelay` behind `control::router` on loopback, driven by
//! `HttpMedia` exactly as the proxy drives a relay in process.
#![allow(clippy::unwrap_used, reason = "test code")]

use kubepbx_media::control::{EventFeed, HttpMedia, router};
use kubepbx_media::*;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

struct Replica {
    client: HttpMedia,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Replica {
    async fn start(slot: u16, media_timeout: Duration) -> Replica {
        // Below the ephemeral ports, like the relay tests (see `ports` in relay.rs).
        let base = 21000 + (std::process::id() % 100) as u16 * 100 + slot * 10;
        let config = RelayConfig {
            advertise: LOCAL,
            bind: LOCAL,
            ports: base..=base + 7,
            media_timeout,
            webrtc: Some(SocketAddr::new(LOCAL, 0)),
            webrtc_connect_timeout: Duration::from_millis(300),
            ..RelayConfig::default()
        };
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (relay, events) = LocalRelay::start(config, shutdown.clone(), &tasks).unwrap();
        let feed = EventFeed::start(events, shutdown.clone(), &tasks);
        let app = router(Arc::new(relay), feed);
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
            client: HttpMedia::new(format!("http://{addr}")),
            shutdown,
            tasks,
        }
    }

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

fn relay_port(sdp: &str) -> SocketAddr {
    let line = sdp.lines().find(|l| l.starts_with("m=audio ")).unwrap();
    SocketAddr::new(LOCAL, line.split(' ').nth(1).unwrap().parse().unwrap())
}

/// An id with the characters a SIP Call-ID and tag bring into a URL path.
const SESSION: &str = "a84b4c76e66710@pc33.example.com;tag=1928/301774 x";

fn offer(sdp: String) -> OfferRequest {
    OfferRequest {
        session: SessionId(SESSION.into()),
        side: Side::Caller,
        sdp,
        signalling_source: LOCAL,
        recording: None,
        peer: PeerMedia::Rtp,
    }
}

#[tokio::test]
async fn a_call_is_set_up_relayed_listed_and_deleted_over_http() {
    let r = Replica::start(0, Duration::from_secs(60)).await;
    let caller = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let callee = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = |s: &UdpSocket| s.local_addr().unwrap().port();

    let to_callee = r.client.offer(offer(sdp(port(&caller)))).await.unwrap();
    let to_caller = r
        .client
        .answer(AnswerRequest {
            session: SessionId(SESSION.into()),
            side: Side::Callee,
            sdp: sdp(port(&callee)),
            signalling_source: LOCAL,
        })
        .await
        .unwrap();

    // RTP from the caller to the relay port its answer names reaches the callee.
    let mut packet = vec![0x80, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 7];
    packet.extend_from_slice(&[0xff; 160]);
    caller
        .send_to(&packet, relay_port(&to_caller.sdp))
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let (n, from) = tokio::time::timeout(Duration::from_secs(2), callee.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, packet.len());
    assert_eq!(from, relay_port(&to_callee.sdp));

    let id = SessionId(SESSION.into());
    let stats = r.client.stats(&id).await.unwrap().unwrap();
    assert_eq!(stats.caller.packets_in, 1);
    assert_eq!(r.client.list().await.unwrap().len(), 1);
    assert_eq!(r.client.metrics().await.unwrap().sessions_active, 1);
    let last = r.client.delete(&id).await.unwrap().unwrap();
    assert_eq!(last.callee.packets_out, 1);
    assert_eq!(r.client.delete(&id).await.unwrap(), None);
    assert_eq!(r.client.stats(&id).await.unwrap(), None);
    r.stop().await;
}

#[tokio::test]
async fn relay_errors_arrive_as_the_same_errors() {
    let r = Replica::start(1, Duration::from_secs(60)).await;
    let video = sdp(4000).replace("m=audio", "m=video");
    assert_eq!(
        r.client.offer(offer(video)).await.unwrap_err(),
        MediaError::NoAudio
    );
    let unknown = r
        .client
        .answer(AnswerRequest {
            session: SessionId("nobody".into()),
            side: Side::Callee,
            sdp: sdp(4000),
            signalling_source: LOCAL,
        })
        .await
        .unwrap_err();
    assert_eq!(unknown, MediaError::UnknownSession);
    // Four port pairs: two calls fit, the third is refused with 503 and Retry-After.
    for n in 0..2 {
        let mut req = offer(sdp(4000));
        req.session = SessionId(format!("call-{n}"));
        r.client.offer(req).await.unwrap();
    }
    let err = r.client.offer(offer(sdp(4000))).await.unwrap_err();
    assert_eq!(err, MediaError::PortsExhausted);
    assert_eq!(err.retry_after(), Some(5));
    r.stop().await;
}

#[tokio::test]
async fn an_unreachable_replica_is_unavailable_naming_its_url() {
    // A port that was just free: nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = HttpMedia::new(format!("http://{addr}"));
    let err = client.list().await.unwrap_err();
    let MediaError::Unavailable(text) = &err else {
        panic!("{err:?}")
    };
    assert!(text.contains(&addr.to_string()), "{text}");
    assert_eq!(err.sip_status().0, 503);
}

#[tokio::test]
async fn media_timeouts_reach_the_poller() {
    let r = Replica::start(2, Duration::from_millis(300)).await;
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let mut events = r.client.events(shutdown.clone(), &tasks);
    // Let the poller learn the feed's position before the event.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let caller = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = caller.local_addr().unwrap().port();
    r.client.offer(offer(sdp(port))).await.unwrap();
    r.client
        .answer(AnswerRequest {
            session: SessionId(SESSION.into()),
            side: Side::Callee,
            sdp: sdp(port),
            signalling_source: LOCAL,
        })
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("a timeout event within 5 s")
        .unwrap();
    let RelayEvent::Timeout(id, _) = event else {
        panic!("{event:?}")
    };
    assert_eq!(id.0, SESSION);
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
    r.stop().await;
}

/// A browser's offer (never connecting) from the SDP fixtures.
const BROWSER_OFFER: &str = include_str!("sdp/webrtc.sdp");

#[tokio::test]
async fn webrtc_fields_and_failures_travel_over_http() {
    let r = Replica::start(3, Duration::from_secs(60)).await;
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let mut events = r.client.events(shutdown.clone(), &tasks);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A forked offer: both flavours come back.
    let forked = r
        .client
        .offer(OfferRequest {
            session: SessionId("forked".into()),
            peer: PeerMedia::Either,
            ..offer(sdp(4000))
        })
        .await
        .unwrap();
    assert!(forked.sdp.contains(" RTP/AVP 0"), "{}", forked.sdp);
    let webrtc = forked.webrtc_sdp.expect("webrtcSdp");
    assert!(webrtc.contains("UDP/TLS/RTP/SAVPF 0"), "{webrtc}");

    // A browser calls a softphone; the browser never connects: the session fails and the
    // poller hears why.
    let to_phone = r
        .client
        .offer(OfferRequest {
            session: SessionId("browser".into()),
            ..offer(BROWSER_OFFER.to_owned())
        })
        .await
        .unwrap();
    assert_eq!(to_phone.webrtc_sdp, None);
    assert!(
        to_phone.sdp.contains(" RTP/AVP 111 0 8 126"),
        "{}",
        to_phone.sdp
    );
    let to_browser = r
        .client
        .answer(AnswerRequest {
            session: SessionId("browser".into()),
            side: Side::Callee,
            sdp: sdp(4002),
            signalling_source: LOCAL,
        })
        .await
        .unwrap();
    assert!(to_browser.sdp.contains("a=ice-lite"), "{}", to_browser.sdp);
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("a failure event within 5 s")
        .unwrap();
    let RelayEvent::Failed(id, reason, stats) = event else {
        panic!("{event:?}")
    };
    assert_eq!(id.0, "browser");
    assert!(reason.contains("no connectivity check"), "{reason}");
    assert_eq!(stats.session.0, "browser");
    assert_eq!(r.client.metrics().await.unwrap().sessions_failed, 1);
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
    r.stop().await;
}
