//! Load benchmark of `LocalRelay` on loopback: N calls, each with two fake phones sending
//! 20 ms packets (50 pps each way, 172-byte RTP), for a fixed time. Reports relay CPU per relayed
//! packet (from the relay threads' `/proc/self/task/*/schedstat`), loss and one-way latency as
//! seen by the phones, and memory per call.
//!
//! ```text
//! cargo run --release -p kubepbx-media --example relay_bench -- CALLS SECONDS [PORT_BASE] \
//!     [--burst] [--threads N] [--batch-us MICROSECONDS] [--webrtc] [--replay] [--pin]
//! ```
//! `--webrtc` makes every caller a browser: a str0m peer (full ICE, DTLS client, SRTP, RTP
//! mode) calling a plain phone through a WebRTC leg and a plain leg of the relay (the relay's
//! WebRTC socket is one more port, any free one). Each browser receives on a tokio task of the
//! phones' runtime; one thread (`phones-btx`) paces all their sends over the 20 ms period as
//! `phones-tx` does the phones' (see the `browser` module). Compare
//! the relay CPU per packet with a plain run of the same size: the difference is what a WebRTC
//! leg costs (SRTP both ways, str0m's bookkeeping, the hub's queue hop).
//! The relay's ports are PORT_BASE (default 20000) … PORT_BASE + 4 × CALLS + 99. `--burst`
//! sends the packets due within each millisecond together (as tokio timers would) instead of
//! evenly; `--threads N` sets the relay's threads ([`RelayConfig::threads`]; default 0: one per
//! core, as in `kubepbx up` and `kubepbx media`); `--batch-us` sets how long a busy relay thread
//! gathers packets between wake-ups ([`RelayConfig::batch_interval`]; default 1,000 as in
//! `kubepbx up` and `kubepbx media`, 0: wake for every packet).
//! `--replay` (implies `--webrtc`) makes the browsers cheap: they encrypt their packets in
//! advance and only send them (see the `browser` module). `--pin` (needs `--threads N`, fewer
//! than the CPUs) gives the relay CPUs of its own: its N threads run on the last N CPUs, every
//! other thread on the rest, so the relay's CPU share is the share of cores it needs.
//!
//! The relay runs as in `kubepbx up`: its sessions on its own single-threaded runtimes (threads
//! `relay-*`, the relay CPU measured), offers and answers made from a 1-worker runtime standing
//! for the SIP side (thread `control`, idle during traffic). The phones' receivers run on a
//! 1-worker runtime (thread `phones-rx`, which owns the phones' sockets) and their senders on a
//! plain thread (`phones-tx`) that paces the packets over each 20 ms period. All share the
//! machine's cores. Traffic stays on 127.0.0.1. On loopback the relay's `sendto` also delivers
//! the packet to the phone's socket and wakes its thread, which a relay does not pay for real
//! phones: the CPU per packet measured here is an upper bound.
//!
//! Phases, each followed by an RSS reading (`/proc/self/status`), so the relay's memory can be
//! told from the phones':
//! 1. the phones' 2 × CALLS sockets are bound (phones' share);
//! 2. the relay's CALLS sessions are created through `offer`/`answer` (relay's share: 4 sockets,
//!    a task and its buffer, a registry entry per call; kernel socket memory is not in RSS);
//! 3. traffic: every phone sends a packet every 20 ms (calls spread evenly over the period) and
//!    receives the other side's; after 2 s of warm-up the counters are read over `SECONDS`.
//!
//! Each packet carries its send time (nanoseconds since a start `Instant`, first 8 bytes of the
//! payload); the receiving phone, in the same process (same monotonic clock), records
//! now − send time in a 1 µs-bucket histogram during the window: the one-way latency phone →
//! relay → phone, including the kernel's loopback delivery and the phones' own scheduling delay.
//! Loss is counted twice: over the window (received − sent, sampled at slightly different
//! instants) and over the whole run after the senders stop and 500 ms of drain (exact).
//! Where packets wait is sampled every second of the window from `/proc/net/udp` (receive queues
//! of the relay's sockets and of the phones'), to tell a slow relay from slow phones.
//! The last line (`RESULT key=value …`) is for tests/bench/relay.sh.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark tool")]

use kubepbx_media::*;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The allocator of the `kubepbx` binary, which runs the relay in `kubepbx up` and
/// `kubepbx media` (str0m allocates a buffer for every packet it queues and sends).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// RTP header (12) + 160 bytes of PCMU (20 ms): 172 bytes of UDP payload.
const PACKET: usize = 172;
/// Every phone and browser sends a packet per period.
const PERIOD: Duration = Duration::from_millis(20);
/// Latency histogram: 1 µs buckets up to this many µs; later arrivals go to the last bucket.
const HIST_US: usize = 200_000;
const WARM_UP: Duration = Duration::from_secs(2);
const DRAIN: Duration = Duration::from_millis(500);
/// `--replay`: the browsers prepare packets for the warm-up, the window and this much more
/// (the drain, and the moments between the phases).
const REPLAY_SPARE: Duration = Duration::from_secs(5);

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

/// The ids of this process's threads whose name starts with `prefix`.
fn thread_ids(prefix: &str) -> Vec<u32> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            comm.trim().starts_with(prefix)
        })
        .filter_map(|t| t.file_name().to_str()?.parse().ok())
        .collect()
}

/// How many of this process's threads have a name starting with `prefix`.
fn thread_count(prefix: &str) -> usize {
    thread_ids(prefix).len()
}

/// `--pin`: restricts thread `tid` (the process's id: its main thread) to the CPUs `cpus`,
/// through `taskset` (util-linux): `sched_setaffinity` itself would need `unsafe`, which the
/// workspace forbids. Threads started later by that thread inherit its CPUs.
fn set_cpus(tid: u32, cpus: std::ops::Range<usize>) {
    let list = format!("{}-{}", cpus.start, cpus.end - 1);
    let status = std::process::Command::new("taskset")
        .args(["-p", "-c", &list, &tid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("--pin runs taskset (util-linux)");
    assert!(status.success(), "taskset -p -c {list} {tid} failed");
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

/// Bytes waiting in the receive queues of the UDP sockets on 127.0.0.1 (`/proc/net/udp`,
/// rx_queue: the kernel's accounting, headers included): (relay's sockets, phones' sockets).
fn udp_queued(relay: &std::ops::RangeInclusive<u16>, phones: &HashSet<u16>) -> (u64, u64) {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let (mut r, mut p) = (0, 0);
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(queues)) = (f.get(1), f.get(4)) else {
            continue;
        };
        let Some(("0100007F", port)) = local.split_once(':') else {
            continue;
        };
        let port = u16::from_str_radix(port, 16).unwrap_or(0);
        let rx = queues
            .split_once(':')
            .and_then(|(_, rx)| u64::from_str_radix(rx, 16).ok())
            .unwrap_or(0);
        if relay.contains(&port) {
            r += rx;
        } else if phones.contains(&port) {
            p += rx;
        }
    }
    (r, p)
}

/// Samples [`udp_queued`] every second until `stop` (reading the table costs a few ms of CPU
/// on this thread, which is not the relay's nor the phones'): (max relay, mean relay, max phones, mean
/// phones), bytes.
fn sample_queues(
    relay: std::ops::RangeInclusive<u16>,
    phones: HashSet<u16>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<[u64; 4]> {
    std::thread::spawn(move || {
        let (mut max_r, mut sum_r, mut max_p, mut sum_p, mut n) = (0, 0, 0, 0, 0u64);
        while !stop.load(Ordering::Relaxed) {
            let (r, p) = udp_queued(&relay, &phones);
            (max_r, max_p) = (max_r.max(r), max_p.max(p));
            (sum_r, sum_p, n) = (sum_r + r, sum_p + p, n + 1);
            for _ in 0..10 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let n = n.max(1);
        [max_r, sum_r / n, max_p, sum_p / n]
    })
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

/// One-way latencies in 1 µs buckets, recorded only while `on`.
struct Latency {
    on: AtomicBool,
    buckets: Vec<AtomicU64>,
}

impl Latency {
    fn new() -> Latency {
        // Written one by one, so the pages are resident before the first RSS reading.
        Latency {
            on: AtomicBool::new(false),
            buckets: (0..=HIST_US).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn record(&self, ns: u64) {
        if self.on.load(Ordering::Relaxed) {
            let us = usize::try_from(ns / 1000).unwrap_or(HIST_US).min(HIST_US);
            self.buckets[us].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The given quantiles (0..1) in µs, the largest value, and the sample count.
    fn quantiles(&self, qs: &[f64]) -> (Vec<usize>, usize, u64) {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let max = counts.iter().rposition(|&c| c > 0).unwrap_or(0);
        let mut out = Vec::new();
        for &q in qs {
            let rank = ((total as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            let mut at = 0;
            for (us, &c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    at = us;
                    break;
                }
            }
            out.push(at);
        }
        (out, max, total)
    }
}

/// Counters shared by the phones.
#[derive(Default)]
struct Phones {
    sent: AtomicU64,
    received: AtomicU64,
    send_errors: AtomicU64,
    /// `--replay`: the browsers' packets carry their send time relative to the start of the
    /// replay, this many nanoseconds after the phones' base (0 otherwise).
    replay_offset_ns: AtomicU64,
    /// `--replay`: packets the browsers received and str0m decrypted (a sample of them).
    verified: AtomicU64,
    /// `--replay`: sends that found no prepared packet (the run outlasted the preparation).
    replay_short: AtomicU64,
}

/// How the phones' packets are spread over each 20 ms period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrivals {
    /// Call `i` of `n` sends at `i × 20 ms / n`: the thread sleeps until the next packet is due
    /// and sends whatever is due (the kernel wakes it up to ~50 µs late, so a few packets leave
    /// together). Closest to independent phones.
    Even,
    /// The packets due within a millisecond leave together at its end, as from tokio timers
    /// (1 ms resolution): 100 packets at once per millisecond at 1,000 calls.
    Burst,
}

impl Arrivals {
    /// When sender `i` of `n` is due in `cycle` (20 ms periods from `start`), as spread by
    /// these arrivals.
    fn due(self, start: Instant, cycle: u32, i: usize, n: usize) -> Instant {
        let due = start + PERIOD * cycle + PERIOD * i as u32 / n as u32;
        if self == Arrivals::Burst {
            let ms = (due - start).as_micros().div_ceil(1000) as u64;
            return start + Duration::from_millis(ms);
        }
        due
    }

    /// Sleeps until sender `i` of `n` is due in `cycle`; returns when that was.
    fn wait_turn(self, start: Instant, cycle: u32, i: usize, n: usize) -> Instant {
        let due = self.due(start, cycle, i, n);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        due
    }
}

/// One call's phones that the sender thread drives: (socket, relay address, SSRC) for each.
type Link = Vec<(Arc<UdpSocket>, SocketAddr, u32)>;

/// The phones' senders, on one thread: call `i` of `n` sends its packets (one each way, or
/// just the plain phone's with `--webrtc`) `i × 20 ms / n` into every 20 ms period, spread as
/// `arrivals` says.
fn send_paced(
    links: &[Link],
    arrivals: Arrivals,
    base: Instant,
    phones: &Phones,
    stop: &CancellationToken,
) {
    let n = links.len() as u64;
    let start = Instant::now() + Duration::from_millis(5);
    let mut packet = [0u8; PACKET];
    packet[0] = 0x80; // RTP version 2, PT 0 (PCMU)
    packet[20..].fill(0xff);
    let mut cycle = 0u64;
    while !stop.is_cancelled() {
        let seq = (cycle + 1) as u16;
        let ts = ((cycle + 1) * 160) as u32;
        packet[2..4].copy_from_slice(&seq.to_be_bytes());
        packet[4..8].copy_from_slice(&ts.to_be_bytes());
        for (call, link) in links.iter().enumerate() {
            arrivals.wait_turn(start, cycle as u32, call, n as usize);
            for (sock, to, ssrc) in link {
                packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
                let sent = base.elapsed().as_nanos() as u64;
                packet[12..20].copy_from_slice(&sent.to_be_bytes());
                // The socket belongs to the receivers' runtime; a non-blocking send works from
                // any thread (loopback never makes it wait).
                if sock.try_send_to(&packet, *to).is_err() {
                    phones.send_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            phones.sent.fetch_add(link.len() as u64, Ordering::Relaxed);
        }
        cycle += 1;
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut numbers, mut arrivals, mut threads, mut webrtc) =
        (Vec::new(), Arrivals::Even, 0usize, false);
    let (mut replay, mut pin) = (false, false);
    let mut batch_interval = RelayConfig::default().batch_interval;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--burst" => arrivals = Arrivals::Burst,
            "--webrtc" => webrtc = true,
            "--replay" => (webrtc, replay) = (true, true),
            "--pin" => pin = true,
            "--threads" => {
                threads = args
                    .next()
                    .and_then(|w| w.parse().ok())
                    .expect("--threads N");
            }
            "--batch-us" => {
                batch_interval = args
                    .next()
                    .and_then(|w| w.parse().ok())
                    .map(Duration::from_micros)
                    .expect("--batch-us MICROSECONDS");
            }
            _ => numbers.push(arg),
        }
    }
    let mut numbers = numbers.into_iter();
    let calls: u16 = numbers.next().map_or(100, |a| a.parse().expect("CALLS"));
    let seconds: u64 = numbers.next().map_or(10, |a| a.parse().expect("SECONDS"));
    let base: u16 = numbers
        .next()
        .map_or(20000, |a| a.parse().expect("PORT_BASE"));
    let last = u32::from(base) + u32::from(calls) * 4 + 99;
    assert!(
        calls >= 1 && base >= 1024 && last <= 65535,
        "need CALLS >= 1 and 1024 <= PORT_BASE <= PORT_BASE + 4 x CALLS + 99 <= 65535"
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = pin.then(|| {
        assert!(
            threads >= 1 && threads < cores,
            "--pin needs --threads N with 1 <= N < {cores} (the CPUs this process may use)"
        );
        // Every thread started from here on inherits this: all but the last N CPUs.
        set_cpus(std::process::id(), 0..cores - threads);
        (0..cores - threads, cores - threads..cores)
    });
    let latency = Arc::new(Latency::new());
    let late = Arc::new(Latency::new());
    // Offers and answers come from here, as from the SIP side; the sessions run on the relay's
    // own threads (`relay-*`).
    let relay_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("control")
        .enable_all()
        .build()
        .unwrap();
    // The phones' receivers (and their sockets) live on this runtime; the senders are a plain
    // thread (`phones-tx`, see below).
    let phones_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("phones-rx")
        .enable_all()
        .build()
        .unwrap();
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let relay_ports = base..=u16::try_from(last).unwrap();
    let config = RelayConfig {
        advertise: LOCAL,
        bind: LOCAL,
        ports: relay_ports.clone(),
        webrtc: webrtc.then_some(SocketAddr::new(LOCAL, 0)),
        threads,
        batch_interval,
        ..RelayConfig::default()
    };
    let (relay, _events) = {
        let _guard = relay_rt.enter();
        LocalRelay::start(config, shutdown.clone(), &tasks).unwrap()
    };
    // Let both runtimes start their threads before the first reading.
    std::thread::sleep(Duration::from_millis(100));
    if let Some((_, relay_cpus)) = &pinned {
        for tid in thread_ids("relay-") {
            set_cpus(tid, relay_cpus.clone());
        }
    }
    let rss_start = rss_kib();

    // 1. The phones' sockets.
    let sockets: Vec<(Arc<UdpSocket>, Arc<UdpSocket>)> = phones_rt.block_on(async {
        let mut v = Vec::with_capacity(usize::from(calls));
        for _ in 0..calls {
            let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            v.push((Arc::new(a), Arc::new(b)));
        }
        v
    });
    std::thread::sleep(Duration::from_millis(100));
    let rss_phones = rss_kib();

    // 2. The relay's sessions: offer from the caller (phone a), answer from the callee (b).
    let t_setup = Instant::now();
    let phones = Arc::new(Phones::default());
    let base = Instant::now();
    // Senders stop first; receivers once the last packets had time to arrive.
    let (stop_send, stop_recv) = (CancellationToken::new(), CancellationToken::new());
    // The browsers (connected during set-up) send media once the phones receive.
    let start_send = CancellationToken::new();
    let phone_tasks = TaskTracker::new();
    let browsers = if webrtc {
        let ctx = browser::Ctx {
            phones: phones.clone(),
            latency: latency.clone(),
            base,
            start_send: start_send.clone(),
            stop_send: stop_send.clone(),
            stop_recv: stop_recv.clone(),
            connected: Arc::new(AtomicU64::new(0)),
            replay: replay.then_some(WARM_UP + Duration::from_secs(seconds) + REPLAY_SPARE),
            ready: Arc::new(AtomicU64::new(0)),
            late: late.clone(),
        };
        let (targets, pacer) = browser::set_up(
            &relay,
            &relay_rt,
            &phones_rt,
            &phone_tasks,
            &sockets,
            arrivals,
            &ctx,
        );
        Some((targets, ctx.connected, ctx.ready, pacer))
    } else {
        None
    };
    let targets: Vec<(SocketAddr, SocketAddr)> = match &browsers {
        Some((targets, _, _, _)) => targets.clone(),
        None => relay_rt.block_on(async {
            let mut v = Vec::with_capacity(sockets.len());
            for (call, (a, b)) in sockets.iter().enumerate() {
                let id = SessionId(format!("call-{call}"));
                let (pa, pb) = (
                    a.local_addr().unwrap().port(),
                    b.local_addr().unwrap().port(),
                );
                let relay = relay.clone();
                let setup = async move {
                    let o = relay
                        .offer(OfferRequest {
                            session: id.clone(),
                            side: Side::Caller,
                            sdp: sdp(pa),
                            signalling_source: LOCAL,
                            recording: None,
                            peer: PeerMedia::Rtp,
                        })
                        .await
                        .unwrap();
                    let ans = relay
                        .answer(AnswerRequest {
                            session: id,
                            side: Side::Callee,
                            sdp: sdp(pb),
                            signalling_source: LOCAL,
                        })
                        .await
                        .unwrap();
                    // a sends to the relay port the callee's answer was rewritten to, b to the one
                    // in the rewritten offer.
                    (media_port(&ans.sdp), media_port(&o.sdp))
                };
                v.push(setup.await);
            }
            v
        }),
    };
    if let Some((_, connected, ready, _)) = &browsers {
        let wait = |count: &AtomicU64, limit: u64| {
            let end = Instant::now() + Duration::from_secs(limit);
            while count.load(Ordering::Relaxed) < u64::from(calls) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
            count.load(Ordering::Relaxed)
        };
        let connected = wait(connected, 30);
        println!("browsers connected   {connected} of {calls}");
        // They prepare their packets once all are connected.
        if replay && connected == u64::from(calls) {
            let t = Instant::now();
            let prepared = wait(ready, 300);
            println!(
                "browsers prepared    {prepared} of {calls} (their packets encrypted in {:.1} s)",
                t.elapsed().as_secs_f64()
            );
        }
    }
    let setup = t_setup.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let rss_sessions = rss_kib();

    // 3. Traffic (the browsers, with --webrtc, already run: they send once connected).
    for (a, b) in &sockets {
        let plain = if webrtc {
            vec![b.clone()]
        } else {
            vec![a.clone(), b.clone()]
        };
        for sock in plain {
            let (phones, stop, latency) = (phones.clone(), stop_recv.clone(), latency.clone());
            phone_tasks.spawn_on(
                async move {
                    let mut buf = [0u8; 2048];
                    loop {
                        tokio::select! {
                            r = sock.recv_from(&mut buf) => if let Ok((len, _)) = r {
                                let now = base.elapsed().as_nanos() as u64;
                                phones.received.fetch_add(1, Ordering::Relaxed);
                                if len >= 20 {
                                    let sent = u64::from_be_bytes(buf[12..20].try_into().unwrap())
                                        + phones.replay_offset_ns.load(Ordering::Relaxed);
                                    latency.record(now.saturating_sub(sent));
                                }
                            },
                            _ = stop.cancelled() => break,
                        }
                    }
                },
                phones_rt.handle(),
            );
        }
    }
    phone_tasks.close();
    start_send.cancel();
    let senders = {
        let links: Vec<_> = sockets
            .iter()
            .zip(&targets)
            .enumerate()
            .map(|(call, ((a, b), &(a_to, b_to)))| {
                let ssrc = (call as u32) << 1;
                let b_link = (b.clone(), b_to, ssrc | 1);
                if webrtc {
                    vec![b_link]
                } else {
                    vec![(a.clone(), a_to, ssrc), b_link]
                }
            })
            .collect();
        let (phones, stop) = (phones.clone(), stop_send.clone());
        std::thread::Builder::new()
            .name("phones-tx".into())
            .spawn(move || send_paced(&links, arrivals, base, &phones, &stop))
            .unwrap()
    };

    // Warm up: all calls flowing.
    std::thread::sleep(WARM_UP);
    let read = || {
        (
            thread_cpu_ns("relay-"),
            thread_cpu_ns("phones"),
            relay.metrics(),
            phones.sent.load(Ordering::Relaxed),
            phones.received.load(Ordering::Relaxed),
        )
    };
    let phone_ports: HashSet<u16> = sockets
        .iter()
        .flat_map(|(a, b)| [a, b])
        .map(|s| s.local_addr().unwrap().port())
        .collect();
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampler = sample_queues(relay_ports, phone_ports, stop_sampling.clone());
    latency.on.store(true, Ordering::Relaxed);
    late.on.store(true, Ordering::Relaxed);
    let (cpu0, pcpu0, m0, sent0, recv0) = read();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let (cpu1, pcpu1, m1, sent1, recv1) = read();
    let elapsed = t0.elapsed();
    latency.on.store(false, Ordering::Relaxed);
    late.on.store(false, Ordering::Relaxed);
    let rss_traffic = rss_kib();
    stop_sampling.store(true, Ordering::Relaxed);
    let [q_relay_max, q_relay_mean, q_phones_max, q_phones_mean] = sampler.join().unwrap();

    // Stop sending, let the last packets arrive, then count over the whole run.
    stop_send.cancel();
    senders.join().unwrap();
    std::thread::sleep(DRAIN);
    let m_end = relay.metrics();
    let total_sent = phones.sent.load(Ordering::Relaxed);
    let total_recv = phones.received.load(Ordering::Relaxed);
    stop_recv.cancel();
    phones_rt.block_on(phone_tasks.wait());
    if let Some((_, _, _, pacer)) = browsers {
        pacer.join().unwrap();
    }

    let relayed = m1.rtp_relayed - m0.rtp_relayed;
    let (cpu, pcpu) = (cpu1 - cpu0, pcpu1 - pcpu0);
    let secs = elapsed.as_secs_f64();
    let (q, max_us, samples) = latency.quantiles(&[0.5, 0.99, 0.999]);
    let (late_q, late_max, _) = late.quantiles(&[0.5, 0.99]);
    let per_call = |kib: u64| kib as f64 / f64::from(calls);
    let relay_kib = rss_sessions.saturating_sub(rss_phones);
    let phones_kib = rss_phones.saturating_sub(rss_start);
    let traffic_kib = rss_traffic.saturating_sub(rss_sessions);
    let dropped = m_end.dropped_no_destination
        + m_end.dropped_wrong_source
        + m_end.dropped_not_media
        + m_end.dropped_unknown_payload
        + m_end.webrtc_dropped;
    let lost_window = (sent1 - sent0) as i64 - (recv1 - recv0) as i64;
    let lost_total = total_sent.saturating_sub(total_recv);
    let relay_threads = thread_count("relay-");
    let threads = format!(
        "{relay_threads} relay threads, batch interval {} us",
        batch_interval.as_micros()
    );
    let mode = if webrtc { "webrtc" } else { "plain" };
    let generator = if replay { "replay" } else { "str0m" };
    let cpus = |r: &std::ops::Range<usize>| format!("{}-{}", r.start, r.end - 1);
    let pinning = match &pinned {
        Some((rest, relay)) => format!("{},{}", cpus(relay), cpus(rest)),
        None => "no".to_owned(),
    };
    println!("calls                {calls} ({mode}, {arrivals:?} arrivals, {threads})");
    if let Some((rest, relay)) = &pinned {
        println!(
            "pinned               relay threads to CPUs {}, every other thread to CPUs {}",
            cpus(relay),
            cpus(rest)
        );
    }
    if replay {
        println!(
            "browsers' sends      late by p50 {} µs, p99 {} µs, max {}{} µs (against their \
             planned times; in the latency)",
            late_q[0],
            late_q[1],
            if late_max >= HIST_US { ">=" } else { "" },
            late_max
        );
        println!(
            "browsers (replay)    {} of their received packets decrypted by str0m (1 in {}), \
             {} sends without a prepared packet",
            phones.verified.load(Ordering::Relaxed),
            browser::VERIFY_EVERY,
            phones.replay_short.load(Ordering::Relaxed)
        );
    }
    println!(
        "sessions active      {} (set up in {:.0} ms)",
        m1.sessions_active,
        setup.as_secs_f64() * 1e3
    );
    println!("window               {secs:.2} s");
    println!("packets sent         {}", sent1 - sent0);
    println!(
        "packets relayed      {relayed} ({:.0} pps)",
        relayed as f64 / secs
    );
    println!(
        "packets received     {} (window difference {lost_window})",
        recv1 - recv0
    );
    println!(
        "whole run            {total_sent} sent, {total_recv} received, {lost_total} lost \
         (after {} ms of drain)",
        DRAIN.as_millis()
    );
    println!("dropped by relay     {dropped}");
    println!(
        "sessions moved       {} (to the relay thread reading their browser's datagrams)",
        m_end.sessions_moved
    );
    println!(
        "send errors          relay {}, phones {}",
        m_end.send_errors,
        phones.send_errors.load(Ordering::Relaxed)
    );
    println!(
        "relay CPU            {:.3} s ({:.0}% of one core)",
        cpu as f64 / 1e9,
        cpu as f64 / 1e7 / secs
    );
    println!(
        "relay CPU / packet   {:.2} µs",
        cpu as f64 / 1e3 / relayed.max(1) as f64
    );
    println!(
        "phones CPU           {:.3} s ({:.0}% of one core, {:.2} µs per packet sent+received)",
        pcpu as f64 / 1e9,
        pcpu as f64 / 1e7 / secs,
        pcpu as f64 / 1e3 / ((sent1 - sent0) + (recv1 - recv0)).max(1) as f64
    );
    println!(
        "latency (one way)    p50 {} µs, p99 {} µs, p99.9 {} µs, max {}{} µs ({samples} packets)",
        q[0],
        q[1],
        q[2],
        if max_us >= HIST_US { ">=" } else { "" },
        max_us
    );
    println!(
        "RSS                  start {rss_start} KiB, +phones' sockets {phones_kib} KiB \
         ({:.1} KiB/call), +relay sessions {relay_kib} KiB ({:.1} KiB/call), \
         +during traffic {traffic_kib} KiB ({:.1} KiB/call)",
        per_call(phones_kib),
        per_call(relay_kib),
        per_call(traffic_kib)
    );
    println!(
        "queued in sockets    relay max {} KiB, mean {} KiB; phones max {} KiB, mean {} KiB \
         (/proc/net/udp rx_queue every second of the window, kernel accounting)",
        q_relay_max / 1024,
        q_relay_mean / 1024,
        q_phones_max / 1024,
        q_phones_mean / 1024
    );
    println!(
        "RESULT mode={mode} generator={generator} pinned={pinning} calls={calls} arrivals={} \
         threads={relay_threads} seconds={secs:.2} sent={} relayed={relayed} received={} \
         lost_window={lost_window} sent_total={total_sent} received_total={total_recv} \
         lost_total={lost_total} relay_dropped={dropped} relay_send_errors={} pps={:.0} \
         relay_cpu_pct={:.1} cpu_us_per_packet={:.2} phones_cpu_pct={:.1} p50_us={} p99_us={} \
         p999_us={} max_us={max_us} relay_kib_per_call={:.1} phones_kib_per_call={:.1} \
         traffic_kib_per_call={:.1} relay_queue_max_kib={} phones_queue_max_kib={} \
         sessions_moved={} verified={} replay_short={} late_p50_us={} late_p99_us={}",
        format!("{arrivals:?}").to_lowercase(),
        sent1 - sent0,
        recv1 - recv0,
        m_end.send_errors,
        relayed as f64 / secs,
        cpu as f64 / 1e7 / secs,
        cpu as f64 / 1e3 / relayed.max(1) as f64,
        pcpu as f64 / 1e7 / secs,
        q[0],
        q[1],
        q[2],
        per_call(relay_kib),
        per_call(phones_kib),
        per_call(traffic_kib),
        q_relay_max / 1024,
        q_phones_max / 1024,
        m_end.sessions_moved,
        phones.verified.load(Ordering::Relaxed),
        phones.replay_short.load(Ordering::Relaxed),
        late_q[0],
        late_q[1],
    );
    shutdown.cancel();
    relay_rt.block_on(async {
        tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), tasks.wait()).await;
    });
}

/// The browsers of `--webrtc`: str0m peers calling the plain phones through the relay.
///
/// Each browser is a str0m `Rtc` behind a mutex, driven from two sides: a receiving task per
/// browser on the phones' runtime (reads its socket on readiness, hands every datagram to
/// str0m, which decrypts the relay's SRTP), and one pacing thread (`phones-btx`) for all of
/// them that gives each browser, every 20 ms at its offset in the period, its time input
/// (ICE checks, DTLS retransmissions, RTCP) and, once connected, a packet to encrypt and send.
/// No tokio timer per browser: their sends are spread over the period like the phones'.
///
/// `--replay` makes the browsers cheap enough to leave a core to the relay: once all are
/// connected, each encrypts the packets of its whole run in advance (str0m, as it would send
/// them: same SRTP, sequence numbers and timestamps) and the pacing thread only sends them at
/// their turns; a browser's time input then comes once a second (ICE consent, RTCP). The
/// relay's packets are counted by their RTP header, and 1 in [`VERIFY_EVERY`] is handed to
/// str0m, which decrypts and authenticates it (`verified`). A prepared packet carries its
/// planned send time relative to the start of the replay (`Phones::replay_offset_ns`); the
/// latency is then that of the browsers' packets only, late sends included.
mod browser {
    use super::{Arrivals, Latency, PERIOD, Phones};
    use kubepbx_media::*;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    use str0m::change::{SdpAnswer, SdpPendingOffer};
    use str0m::media::{Direction, MediaKind, Mid, Pt};
    use str0m::net::{Protocol, Receive};
    use str0m::rtp::{RtpWrite, SeqNo};
    use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
    use tokio::net::UdpSocket;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    /// What every browser shares.
    pub struct Ctx {
        pub phones: Arc<Phones>,
        pub latency: Arc<Latency>,
        pub base: Instant,
        /// Cancelled when the browsers may send media (the phones receive).
        pub start_send: CancellationToken,
        pub stop_send: CancellationToken,
        pub stop_recv: CancellationToken,
        /// Browsers whose ICE and DTLS are up.
        pub connected: Arc<AtomicU64>,
        /// `--replay`: prepare packets for this long of sending.
        pub replay: Option<Duration>,
        /// `--replay`: browsers whose packets are prepared.
        pub ready: Arc<AtomicU64>,
        /// `--replay`: how late the browsers' packets left, against their planned times.
        pub late: Arc<Latency>,
    }

    /// `--replay`: the relay's packets a browser counts for each one it hands to str0m.
    pub const VERIFY_EVERY: u64 = 50;

    /// What the pacing thread needs.
    struct Pacing {
        arrivals: Arrivals,
        base: Instant,
        phones: Arc<Phones>,
        start_send: CancellationToken,
        stop_send: CancellationToken,
        stop: CancellationToken,
        replay: Option<Duration>,
        ready: Arc<AtomicU64>,
        late: Arc<Latency>,
    }

    /// Sets up every call (browser on `a`, phone on `b`), starts the browsers' receivers and
    /// their pacing thread (joined by the returned handle after `stop_recv`); returns where
    /// each side sends (`a`'s entry unused: the browser sends where ICE says).
    pub fn set_up(
        relay: &LocalRelay,
        relay_rt: &tokio::runtime::Runtime,
        phones_rt: &tokio::runtime::Runtime,
        tasks: &TaskTracker,
        sockets: &[(Arc<UdpSocket>, Arc<UdpSocket>)],
        arrivals: Arrivals,
        ctx: &Ctx,
    ) -> (Vec<(SocketAddr, SocketAddr)>, std::thread::JoinHandle<()>) {
        let mut targets = Vec::with_capacity(sockets.len());
        let mut peers = Vec::with_capacity(sockets.len());
        // One certificate for all browsers (making one per browser takes most of the set-up).
        let crypto = Arc::new(str0m::crypto::from_feature_flags());
        let cert = crypto.dtls_provider.generate_certificate().unwrap();
        for (call, (a, b)) in sockets.iter().enumerate() {
            let addr = a.local_addr().unwrap();
            let mut rtc = RtcConfig::new()
                .set_crypto_provider(crypto.clone())
                .set_dtls_cert(cert.clone())
                .set_rtp_mode(true)
                .clear_codecs()
                .enable_pcmu(true, false)
                .build(Instant::now());
            rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
            let mut api = rtc.sdp_api();
            let mid = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
            let (offer, pending): (_, SdpPendingOffer) = api.apply().unwrap();
            let id = SessionId(format!("call-{call}"));
            let pb = b.local_addr().unwrap().port();
            let (to_phone, to_browser) = relay_rt.block_on(async {
                let o = relay
                    .offer(OfferRequest {
                        session: id.clone(),
                        side: Side::Caller,
                        sdp: offer.to_sdp_string(),
                        signalling_source: super::LOCAL,
                        recording: None,
                        peer: PeerMedia::Rtp,
                    })
                    .await
                    .unwrap();
                let ans = relay
                    .answer(AnswerRequest {
                        session: id,
                        side: Side::Callee,
                        sdp: super::sdp(pb),
                        signalling_source: super::LOCAL,
                    })
                    .await
                    .unwrap();
                (o.sdp, ans.sdp)
            });
            let answer = SdpAnswer::from_sdp_string(&to_browser).unwrap();
            rtc.sdp_api().accept_answer(pending, answer).unwrap();
            targets.push((addr, super::media_port(&to_phone)));
            let peer = Arc::new(Mutex::new(Peer {
                rtc,
                socket: a.clone(),
                mid,
                seq: 0,
                connected: false,
                to: None,
                connected_count: ctx.connected.clone(),
            }));
            peers.push(peer.clone());
            let receiver = Receiver {
                peer,
                socket: a.clone(),
                addr,
                phones: ctx.phones.clone(),
                latency: ctx.latency.clone(),
                base: ctx.base,
                replay: ctx.replay.is_some(),
            };
            tasks.spawn_on(receiver.run(ctx.stop_recv.clone()), phones_rt.handle());
        }
        let pacing = Pacing {
            arrivals,
            base: ctx.base,
            phones: ctx.phones.clone(),
            start_send: ctx.start_send.clone(),
            stop_send: ctx.stop_send.clone(),
            stop: ctx.stop_recv.clone(),
            replay: ctx.replay,
            ready: ctx.ready.clone(),
            late: ctx.late.clone(),
        };
        let pacer = std::thread::Builder::new()
            .name("phones-btx".into())
            .spawn(move || match pacing.replay {
                Some(span) => replay(&peers, span, &pacing),
                None => pace(&peers, &pacing),
            })
            .unwrap();
        (targets, pacer)
    }

    /// Every 20 ms, at browser `i`'s offset `i × 20 ms / n`: its time input, and a packet once
    /// it is connected, between the start and the stop of sending; until `stop`.
    fn pace(peers: &[Arc<Mutex<Peer>>], p: &Pacing) {
        let n = peers.len();
        let start = Instant::now();
        let mut cycle = 0u32;
        while !p.stop.is_cancelled() {
            for (i, peer) in peers.iter().enumerate() {
                p.arrivals.wait_turn(start, cycle, i, n);
                let mut peer = peer.lock().unwrap();
                let now = Instant::now();
                if peer.connected && p.start_send.is_cancelled() && !p.stop_send.is_cancelled() {
                    let sent = p.base.elapsed().as_nanos() as u64;
                    peer.write(now, sent);
                    p.phones.sent.fetch_add(1, Ordering::Relaxed);
                }
                peer.tick(now, &p.phones, None);
            }
            cycle += 1;
        }
    }

    /// `--replay`: time inputs every 20 ms until every browser is connected; then each
    /// prepares its packets for `span`; time inputs again until the sending starts; then the
    /// prepared packets at their turns, and each browser's time input once a second, until
    /// `stop`.
    fn replay(peers: &[Arc<Mutex<Peer>>], span: Duration, p: &Pacing) {
        let n = peers.len();
        let tick_until = |done: &dyn Fn() -> bool| {
            let start = Instant::now();
            let mut cycle = 0u32;
            while !done() && !p.stop.is_cancelled() {
                for (i, peer) in peers.iter().enumerate() {
                    p.arrivals.wait_turn(start, cycle, i, n);
                    peer.lock().unwrap().tick(Instant::now(), &p.phones, None);
                }
                cycle += 1;
            }
        };
        tick_until(&|| peers.iter().all(|peer| peer.lock().unwrap().connected));
        let count = (span.as_nanos() / PERIOD.as_nanos()) as usize + 1;
        let mut prepared = Vec::with_capacity(n);
        for (i, peer) in peers.iter().enumerate() {
            if p.stop.is_cancelled() {
                return;
            }
            // The planned send times, relative to the start of the replay.
            let zero = Instant::now();
            let times = (0..count as u32).map(|cycle| p.arrivals.due(zero, cycle, i, n) - zero);
            prepared.push(peer.lock().unwrap().prepare(times, &p.phones));
            p.ready.fetch_add(1, Ordering::Relaxed);
        }
        tick_until(&|| p.start_send.is_cancelled());
        let start = Instant::now() + Duration::from_millis(5);
        let offset = (start - p.base).as_nanos() as u64;
        p.phones.replay_offset_ns.store(offset, Ordering::Relaxed);
        let ticks_every = (Duration::from_secs(1).as_nanos() / PERIOD.as_nanos()) as usize;
        let mut cycle = 0usize;
        while !p.stop.is_cancelled() {
            for (i, (peer, packets)) in peers.iter().zip(&prepared).enumerate() {
                let due = p.arrivals.wait_turn(start, cycle as u32, i, n);
                p.late.record((Instant::now() - due).as_nanos() as u64);
                if !p.stop_send.is_cancelled() {
                    match packets.get(cycle) {
                        Some(packet) => packets.send(packet, &p.phones),
                        None => _ = p.phones.replay_short.fetch_add(1, Ordering::Relaxed),
                    }
                }
                if cycle % ticks_every == i % ticks_every {
                    peer.lock().unwrap().tick(Instant::now(), &p.phones, None);
                }
            }
            cycle += 1;
        }
    }

    /// A browser's packets encrypted in advance (`--replay`), and where they go.
    struct Prepared {
        socket: Arc<UdpSocket>,
        to: SocketAddr,
        packets: Vec<Vec<u8>>,
    }

    impl Prepared {
        fn get(&self, cycle: usize) -> Option<&[u8]> {
            self.packets.get(cycle).map(Vec::as_slice)
        }

        fn send(&self, packet: &[u8], phones: &Phones) {
            phones.sent.fetch_add(1, Ordering::Relaxed);
            if self.socket.try_send_to(packet, self.to).is_err() {
                phones.send_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Whether a datagram of this browser's (rtcp-muxed) flow is RTP (RFC 5761 §4: RTCP's
    /// packet types take the second byte's values 192–223).
    fn is_rtp(datagram: &[u8]) -> bool {
        datagram.len() >= 12 && datagram[0] >> 6 == 2 && !(192..=223).contains(&datagram[1])
    }

    struct Peer {
        rtc: Rtc,
        socket: Arc<UdpSocket>,
        mid: Mid,
        seq: u16,
        connected: bool,
        /// Where str0m last sent (the relay's WebRTC port).
        to: Option<SocketAddr>,
        /// Browsers whose ICE and DTLS are up (all of them).
        connected_count: Arc<AtomicU64>,
    }

    impl Peer {
        /// Gives str0m the next packet, stamped `sent` (nanoseconds) in its first 8 bytes.
        fn write(&mut self, now: Instant, sent: u64) {
            self.seq = self.seq.wrapping_add(1);
            let seq = self.seq;
            let mut payload = [0xffu8; 160];
            payload[..8].copy_from_slice(&sent.to_be_bytes());
            let mid = self.mid;
            let mut api = self.rtc.direct_api();
            if let Some(stream) = api.stream_tx_by_mid(mid, None) {
                stream.write_rtp(RtpWrite::new(
                    Pt::from(0u8),
                    SeqNo::from(u64::from(seq)),
                    u32::from(seq) * 160,
                    now,
                    &payload[..],
                ));
            }
        }

        /// The time input at `now`, then [`Peer::drain`].
        fn tick(&mut self, now: Instant, phones: &Phones, keep: Option<&mut Vec<Vec<u8>>>) {
            let _ = self.rtc.handle_input(Input::Timeout(now));
            self.drain(phones, &mut |_| {}, keep);
        }

        /// Encrypts a packet for each of `times` (planned send times), keeping them instead of
        /// sending them (`--replay`).
        fn prepare(
            &mut self,
            times: impl ExactSizeIterator<Item = Duration>,
            phones: &Phones,
        ) -> Prepared {
            let mut packets = Vec::with_capacity(times.len());
            for time in times {
                let now = Instant::now();
                self.write(now, time.as_nanos() as u64);
                self.tick(now, phones, Some(&mut packets));
            }
            let to = self
                .to
                .expect("a connected browser knows the relay's address");
            let socket = self.socket.clone();
            Prepared {
                socket,
                to,
                packets,
            }
        }

        /// Polls the peer to its next timeout, sending what it produced (but keeping RTP in
        /// `keep` when given) and handing each event to `on_event`.
        fn drain(
            &mut self,
            phones: &Phones,
            on_event: &mut dyn FnMut(Event),
            mut keep: Option<&mut Vec<Vec<u8>>>,
        ) {
            loop {
                match self.rtc.poll_output() {
                    Ok(Output::Timeout(_)) | Err(_) => return,
                    Ok(Output::Transmit(t)) => {
                        self.to = Some(t.destination);
                        if let Some(keep) = keep.as_deref_mut()
                            && is_rtp(&t.contents)
                        {
                            keep.push(t.contents.to_vec());
                            continue;
                        }
                        if self.socket.try_send_to(&t.contents, t.destination).is_err() {
                            phones.send_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Output::Event(Event::Connected)) => {
                        self.connected = true;
                        self.connected_count.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Output::Event(e)) => on_event(e),
                }
            }
        }
    }

    /// A browser's receiving side.
    struct Receiver {
        peer: Arc<Mutex<Peer>>,
        socket: Arc<UdpSocket>,
        addr: SocketAddr,
        phones: Arc<Phones>,
        latency: Arc<Latency>,
        base: Instant,
        /// `--replay`: RTP is counted by its header, 1 in [`VERIFY_EVERY`] decrypted.
        replay: bool,
    }

    impl Receiver {
        async fn run(self, stop: CancellationToken) {
            let mut buf = vec![0u8; 2048];
            let mut counted = 0u64;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    r = self.socket.readable() => if r.is_err() { break },
                }
                while let Ok((len, source)) = self.socket.try_recv_from(&mut buf) {
                    if self.replay && is_rtp(&buf[..len]) {
                        self.phones.received.fetch_add(1, Ordering::Relaxed);
                        counted += 1;
                        if !counted.is_multiple_of(VERIFY_EVERY) {
                            continue;
                        }
                    }
                    let Ok(receive) = Receive::new(Protocol::Udp, source, self.addr, &buf[..len])
                    else {
                        continue;
                    };
                    let mut peer = self.peer.lock().unwrap();
                    let _ = peer
                        .rtc
                        .handle_input(Input::Receive(Instant::now(), receive));
                    peer.drain(&self.phones, &mut |event| self.on_event(event), None);
                }
            }
        }

        fn on_event(&self, event: Event) {
            if let Event::RtpPacket(p) = event {
                if self.replay {
                    // Counted when it arrived; its payload is the phone's, stamped against
                    // the phones' clock base, not the replay's.
                    self.phones.verified.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                self.phones.received.fetch_add(1, Ordering::Relaxed);
                if let Some(sent) = p.payload.get(..8) {
                    let sent = u64::from_be_bytes(sent.try_into().unwrap());
                    let now = self.base.elapsed().as_nanos() as u64;
                    self.latency.record(now.saturating_sub(sent));
                }
            }
        }
    }
}
