//! A busy relay thread batches its wake-ups (`RelayConfig::batch_interval`): real UDP calls
//! on loopback through a one-thread relay. In a file of its own so that the only thread named
//! `relay-0` in this process is this relay's.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use kubepbx_media::*;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[allow(dead_code, reason = "shared with the other tests")]
mod common;
use common::*;

const CALLS: usize = 10;
/// Each phone sends a packet this often: 10 calls × 2 phones × 200/s = 4,000 packets/s, 20 per
/// interval below, far above the 2 per interval that start batching.
const EVERY: Duration = Duration::from_millis(5);
const INTERVAL: Duration = Duration::from_millis(5);

fn sdp(port: u16) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtcp-mux\r\na=ptime:20\r\n"
    )
}

fn relay_addr(sdp: &str) -> SocketAddr {
    let line = sdp.lines().find(|l| l.starts_with("m=audio ")).unwrap();
    SocketAddr::new(LOCAL, line.split(' ').nth(1).unwrap().parse().unwrap())
}

/// Voluntary context switches (times the thread went to sleep) of this process's `relay-0`.
fn relay_thread_sleeps() -> u64 {
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == "relay-0" {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap();
            let line = status
                .lines()
                .find(|l| l.starts_with("voluntary_ctxt_switches:"))
                .unwrap();
            return line.split_whitespace().nth(1).unwrap().parse().unwrap();
        }
    }
    panic!("no relay-0 thread");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_relay_thread_wakes_once_per_interval_and_loses_nothing() {
    let r = Relay::start(RelayConfig {
        threads: 1,
        batch_interval: INTERVAL,
        ..config(0, u16::try_from(CALLS * 2).unwrap())
    });
    // Each call: phone a (caller) and phone b (callee), each sending to its relay port.
    let mut legs = Vec::new();
    for call in 0..CALLS {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let session = SessionId(format!("call-{call}"));
        let to_b = r
            .relay
            .offer(OfferRequest {
                session: session.clone(),
                side: Side::Caller,
                sdp: sdp(a.local_addr().unwrap().port()),
                signalling_source: LOCAL,
                recording: None,
                peer: PeerMedia::Rtp,
            })
            .await
            .unwrap();
        let to_a = r
            .relay
            .answer(AnswerRequest {
                session,
                side: Side::Callee,
                sdp: sdp(b.local_addr().unwrap().port()),
                signalling_source: LOCAL,
            })
            .await
            .unwrap();
        legs.push((a, relay_addr(&to_a.sdp)));
        legs.push((b, relay_addr(&to_b.sdp)));
    }
    let legs = Arc::new(legs);

    // Receivers: every phone counts what reaches it.
    let (stop, stop_receiving) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let received = Arc::new(AtomicU64::new(0));
    let mut receivers = Vec::new();
    for k in 0..legs.len() {
        let (legs, stop, received) = (legs.clone(), stop_receiving.clone(), received.clone());
        receivers.push(std::thread::spawn(move || {
            let socket = &legs[k].0;
            socket
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut buf = [0u8; 2048];
            loop {
                match socket.recv(&mut buf) {
                    Ok(n) => {
                        assert_eq!(n, 172);
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) if stop.load(Ordering::Relaxed) => return,
                    Err(_) => {}
                }
            }
        }));
    }
    // One sender thread paces every phone's packets.
    let sent = Arc::new(AtomicU64::new(0));
    let sender = {
        let (legs, stop, sent) = (legs.clone(), stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut packet = [0u8; 172];
            packet[0] = 0x80;
            // Spread evenly, as calls that started at different times send: a relay that
            // wakes for each packet wakes for each of them.
            let gap = EVERY / u32::try_from(legs.len()).unwrap();
            let mut due = start;
            for seq in 0u16.. {
                packet[2..4].copy_from_slice(&seq.to_be_bytes());
                for (k, (socket, relay)) in legs.iter().enumerate() {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    packet[8..12].copy_from_slice(&u32::try_from(k + 1).unwrap().to_be_bytes());
                    socket.send_to(&packet, relay).unwrap();
                    sent.fetch_add(1, Ordering::Relaxed);
                    due += gap;
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                }
            }
        })
    };

    // Batching starts within a judging window (200 ms); measure well after it.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (sleeps_before, at) = (relay_thread_sleeps(), Instant::now());
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (sleeps, took) = (relay_thread_sleeps() - sleeps_before, at.elapsed());
    let packets_meanwhile = 4_000 * took.as_millis() / 1_000;
    // Batched: one sleep per interval (a few more for the odd timer); per packet it would be
    // one sleep for every packet or two.
    let intervals = u64::try_from(took.as_millis() / INTERVAL.as_millis()).unwrap();
    assert!(
        sleeps <= intervals + intervals / 2 + 20,
        "relay-0 slept {sleeps} times in {took:?} ({intervals} intervals, about \
         {packets_meanwhile} packets): it did not batch its wake-ups"
    );

    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    // Everything sent reaches the other phone (the last packets within an interval or two).
    let sent = sent.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(2);
    while received.load(Ordering::Relaxed) < sent && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop_receiving.store(true, Ordering::Relaxed);
    for receiver in receivers {
        receiver.join().unwrap();
    }
    assert_eq!(received.load(Ordering::Relaxed), sent, "packets lost");
    assert_eq!(r.relay.metrics().rtp_relayed, sent);
    r.stop().await;
}
