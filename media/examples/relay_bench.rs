//! Load benchmark of `LocalRelay` on loopback: N calls, each with two fake phones sending
//! 20 ms packets (50 pps each way), for a fixed time; reports relay CPU per relayed packet
//! (from the relay threads' `/proc/self/task/*/schedstat`), loss seen by the phones, and memory.
//!
//! ```text
//! cargo run --release -p kubepbx-media --example relay_bench -- CALLS SECONDS
//! ```
//! The relay runs on a 2-worker tokio runtime (threads `relay-*`), the phones on a separate
//! 1-thread runtime (`phones`); both share the machine's cores. Traffic stays on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark tool")]

use kubepbx_media::*;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Nanoseconds of CPU used so far by this process's threads whose name starts with `prefix`.
fn thread_cpu_ns(prefix: &str) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim().starts_with(prefix) {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            total += stat
                .split(' ')
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn sdp(port: u16) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
}

fn media_port(sdp: &str) -> SocketAddr {
    let line = sdp.lines().find(|l| l.starts_with("m=audio ")).unwrap();
    SocketAddr::new(LOCAL, line.split(' ').nth(1).unwrap().parse().unwrap())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let calls: u16 = args.next().map_or(100, |a| a.parse().expect("CALLS"));
    let seconds: u64 = args.next().map_or(10, |a| a.parse().expect("SECONDS"));
    let relay_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("relay-worker")
        .enable_all()
        .build()
        .unwrap();
    let phones_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let rss_before = rss_kib();
    let config = RelayConfig {
        advertise: LOCAL,
        bind: LOCAL,
        ports: 20000..=20000 + calls * 4 + 99,
        ..RelayConfig::default()
    };
    let (relay, _events) = {
        let _guard = relay_rt.enter();
        LocalRelay::start(config, shutdown.clone(), &tasks).unwrap()
    };
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    // The phones' runtime runs on this thread; session setup goes through the relay's runtime.
    std::thread::Builder::new()
        .name("phones".into())
        .spawn({
            let (sent, received, stop) = (sent.clone(), received.clone(), stop.clone());
            let relay = relay.clone();
            let handle = relay_rt.handle().clone();
            move || {
                phones_rt.block_on(async move {
                    let phones = TaskTracker::new();
                    for call in 0..calls {
                        let a = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                        let b = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                        let id = SessionId(format!("call-{call}"));
                        let (relay, id2) = (relay.clone(), id.clone());
                        let (pa, pb) = (
                            a.local_addr().unwrap().port(),
                            b.local_addr().unwrap().port(),
                        );
                        let (to_b, to_a) = handle
                            .spawn(async move {
                                let o = relay
                                    .offer(OfferRequest {
                                        session: id2.clone(),
                                        side: Side::Caller,
                                        sdp: sdp(pa),
                                        signalling_source: LOCAL,
                                        recording: None,
                                    })
                                    .await
                                    .unwrap();
                                let ans = relay
                                    .answer(AnswerRequest {
                                        session: id2,
                                        side: Side::Callee,
                                        sdp: sdp(pb),
                                        signalling_source: LOCAL,
                                    })
                                    .await
                                    .unwrap();
                                (media_port(&o.sdp), media_port(&ans.sdp))
                            })
                            .await
                            .unwrap();
                        for sock in [a.clone(), b.clone()] {
                            let (received, stop) = (received.clone(), stop.clone());
                            phones.spawn(async move {
                                let mut buf = [0u8; 2048];
                                loop {
                                    tokio::select! {
                                        r = sock.recv_from(&mut buf) => if r.is_ok() {
                                            received.fetch_add(1, Ordering::Relaxed);
                                        },
                                        _ = stop.cancelled() => break,
                                    }
                                }
                            });
                        }
                        let (sent, stop) = (sent.clone(), stop.clone());
                        phones.spawn(async move {
                            // Stagger calls over the 20 ms period.
                            let offset =
                                Duration::from_micros(u64::from(call) * 20_000 / u64::from(calls));
                            tokio::time::sleep(offset).await;
                            let mut tick = tokio::time::interval(Duration::from_millis(20));
                            let mut packet = vec![0x80u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
                            packet.extend_from_slice(&[0xff; 160]);
                            let mut seq = 0u16;
                            loop {
                                tokio::select! {
                                    _ = tick.tick() => {}
                                    _ = stop.cancelled() => break,
                                }
                                seq = seq.wrapping_add(1);
                                packet[2..4].copy_from_slice(&seq.to_be_bytes());
                                let _ = a.send_to(&packet, to_a).await;
                                let _ = b.send_to(&packet, to_b).await;
                                sent.fetch_add(2, Ordering::Relaxed);
                            }
                        });
                    }
                    stop.cancelled().await;
                    phones.close();
                    phones.wait().await;
                });
            }
        })
        .unwrap();
    // Warm up: all calls set up and flowing.
    std::thread::sleep(Duration::from_secs(2));
    let (cpu0, m0, t0) = (thread_cpu_ns("relay-"), relay.metrics(), Instant::now());
    let (sent0, recv0) = (
        sent.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
    );
    std::thread::sleep(Duration::from_secs(seconds));
    let (cpu1, m1, elapsed) = (thread_cpu_ns("relay-"), relay.metrics(), t0.elapsed());
    let (sent1, recv1) = (
        sent.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
    );
    let rss = rss_kib();
    let phones_cpu = thread_cpu_ns("phones");
    stop.cancel();
    std::thread::sleep(Duration::from_millis(200));
    let relayed = m1.rtp_relayed - m0.rtp_relayed;
    let cpu = cpu1 - cpu0;
    println!("calls                {calls}");
    println!("sessions active      {}", m1.sessions_active);
    println!("window               {:.2} s", elapsed.as_secs_f64());
    println!("packets sent         {}", sent1 - sent0);
    println!(
        "packets relayed      {relayed} ({:.0} pps)",
        relayed as f64 / elapsed.as_secs_f64()
    );
    println!("packets received     {}", recv1 - recv0);
    println!(
        "dropped by relay     {}",
        m1.dropped_no_destination + m1.dropped_wrong_source + m1.dropped_not_media
    );
    println!("send errors          {}", m1.send_errors);
    println!(
        "relay CPU            {:.3} s ({:.0}% of one core)",
        cpu as f64 / 1e9,
        cpu as f64 / 1e7 / elapsed.as_secs_f64()
    );
    println!(
        "relay CPU / packet   {:.2} µs",
        cpu as f64 / 1e3 / relayed.max(1) as f64
    );
    println!("phones CPU (total)   {:.3} s", phones_cpu as f64 / 1e9);
    println!(
        "RSS growth           {} KiB ({:.1} KiB per call, phones' sockets included)",
        rss.saturating_sub(rss_before),
        rss.saturating_sub(rss_before) as f64 / f64::from(calls.max(1))
    );
    shutdown.cancel();
}
