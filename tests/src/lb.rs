//! A UDP load balancer for SIP tests, standing in for a Kubernetes LoadBalancer Service in front of
//! several registrar replicas.
//!
//! Phones send to one front address. Each phone (by IP address) is pinned to one backend; the
//! balancer relays its packets through an upstream socket of its own per (phone, backend), as
//! connection tracking would, so the backend sees that socket as the phone's address and whatever
//! the backend sends there reaches the phone from the front address. Re-pinning a phone opens a
//! new path; the old one stays, so the replica that owns the old flow can still reach the phone.
//!
//! Tests can also steer the next new INVITE of a phone to another backend (what a changed
//! connection-tracking entry does in production) and read which backend every packet delivered
//! to a phone came from.

use crate::error::{IoContext, Result};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the relay threads look at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// One packet relayed to or from a phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayed {
    /// The phone's address.
    pub phone: SocketAddr,
    /// Index of the backend the packet went to or came from.
    pub backend: usize,
    /// `true`: backend → phone; `false`: phone → backend.
    pub to_phone: bool,
    /// The first line of the SIP message.
    pub first_line: String,
}

#[derive(Debug, Default)]
struct State {
    pins: HashMap<IpAddr, usize>,
    /// The next new INVITE from this IP goes to this backend (once).
    steer: HashMap<IpAddr, usize>,
    /// Call-IDs of steered INVITEs: their packets go to the steered backend until a 2xx to the
    /// INVITE reached the phone (so the challenge, its ACK and the authenticated INVITE follow).
    steered_calls: HashMap<(IpAddr, String), usize>,
    /// Where each backend index sends to.
    backends: Vec<SocketAddr>,
    /// (phone, backend) → upstream socket.
    paths: HashMap<(SocketAddr, usize), Arc<UdpSocket>>,
    log: Vec<Relayed>,
}

/// The balancer (see the module doc). Stops when dropped.
#[derive(Debug)]
pub struct UdpBalancer {
    front: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl UdpBalancer {
    /// Listens on a free port of 127.0.0.1; every phone starts pinned to backend 0 (set the
    /// backends with [`Self::set_backends`] once they listen).
    pub fn start() -> Result<UdpBalancer> {
        let socket = UdpSocket::bind("127.0.0.1:0").context(|| "bind the balancer".into())?;
        socket
            .set_read_timeout(Some(POLL))
            .context(|| "balancer timeout".into())?;
        let front = socket.local_addr().context(|| "balancer address".into())?;
        let lb = UdpBalancer {
            front,
            state: Arc::default(),
            stop: Arc::default(),
            threads: Arc::default(),
        };
        let front_socket = Arc::new(socket);
        let worker = lb.worker(Arc::clone(&front_socket));
        let handle = std::thread::spawn(move || worker.front_loop());
        lock(&lb.threads).push(handle);
        Ok(lb)
    }

    fn worker(&self, front_socket: Arc<UdpSocket>) -> Worker {
        Worker {
            front: front_socket,
            state: Arc::clone(&self.state),
            stop: Arc::clone(&self.stop),
            threads: Arc::clone(&self.threads),
        }
    }

    /// Where phones send to (every replica advertises it).
    pub fn front(&self) -> SocketAddr {
        self.front
    }

    /// The backends' addresses, by index.
    pub fn set_backends(&self, backends: Vec<SocketAddr>) {
        lock(&self.state).backends = backends;
    }

    /// Pins every packet from `phone` to backend `backend` from now on.
    pub fn pin(&self, phone: IpAddr, backend: usize) {
        lock(&self.state).pins.insert(phone, backend);
    }

    /// Sends the next new INVITE (one without a To tag) from `phone` to `backend`, with what
    /// belongs to its setup (the ACK of a challenge, the authenticated INVITE) until a 2xx
    /// answers it; the phone's later packets (the ACK of the 2xx, the BYE) follow its pin.
    pub fn steer_next_invite(&self, phone: IpAddr, backend: usize) {
        lock(&self.state).steer.insert(phone, backend);
    }

    /// Every packet relayed so far.
    pub fn log(&self) -> Vec<Relayed> {
        lock(&self.state).log.clone()
    }

    /// The relayed packets whose first line starts with `start` (`INVITE `, `BYE `, …).
    pub fn relayed(&self, phone: IpAddr, to_phone: bool, start: &str) -> Vec<Relayed> {
        self.log()
            .into_iter()
            .filter(|r| {
                r.phone.ip() == phone && r.to_phone == to_phone && r.first_line.starts_with(start)
            })
            .collect()
    }
}

impl Drop for UdpBalancer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let threads = std::mem::take(&mut *lock(&self.threads));
        for t in threads {
            let _ = t.join();
        }
    }
}

#[derive(Clone)]
struct Worker {
    front: Arc<UdpSocket>,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Worker {
    fn front_loop(self) {
        let mut buf = vec![0u8; 65_536];
        while !self.stop.load(Ordering::Relaxed) {
            let Ok((n, phone)) = self.front.recv_from(&mut buf) else {
                continue;
            };
            let packet = &buf[..n];
            let line = first_line(packet);
            let (backend, to) = {
                let mut state = lock(&self.state);
                let call_id = header(packet, &["call-id", "i"]).unwrap_or_default();
                if line.starts_with("INVITE ")
                    && !has_to_tag(packet)
                    && let Some(b) = state.steer.remove(&phone.ip())
                {
                    state.steered_calls.insert((phone.ip(), call_id.clone()), b);
                }
                let backend = state
                    .steered_calls
                    .get(&(phone.ip(), call_id))
                    .copied()
                    .or_else(|| state.pins.get(&phone.ip()).copied())
                    .unwrap_or(0);
                state.log.push(Relayed {
                    phone,
                    backend,
                    to_phone: false,
                    first_line: line,
                });
                (backend, state.backends.get(backend).copied())
            };
            let Some(to) = to else { continue };
            let Some(upstream) = self.path(phone, backend) else {
                continue;
            };
            let _ = upstream.send_to(packet, to);
        }
    }

    /// The upstream socket of (phone, backend), opened (with its relay thread) on first use.
    fn path(&self, phone: SocketAddr, backend: usize) -> Option<Arc<UdpSocket>> {
        let mut state = lock(&self.state);
        if let Some(s) = state.paths.get(&(phone, backend)) {
            return Some(Arc::clone(s));
        }
        let socket = UdpSocket::bind("127.0.0.1:0").ok()?;
        socket.set_read_timeout(Some(POLL)).ok()?;
        let socket = Arc::new(socket);
        state.paths.insert((phone, backend), Arc::clone(&socket));
        drop(state);
        let worker = self.clone();
        let up = Arc::clone(&socket);
        let handle = std::thread::spawn(move || worker.upstream_loop(&up, phone, backend));
        lock(&self.threads).push(handle);
        Some(socket)
    }

    /// Backend → phone on one path.
    fn upstream_loop(self, socket: &UdpSocket, phone: SocketAddr, backend: usize) {
        let mut buf = vec![0u8; 65_536];
        while !self.stop.load(Ordering::Relaxed) {
            let Ok((n, _from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let packet = &buf[..n];
            let line = first_line(packet);
            let mut state = lock(&self.state);
            if line.starts_with("SIP/2.0 2")
                && header(packet, &["cseq"]).is_some_and(|c| c.ends_with("INVITE"))
                && let Some(call_id) = header(packet, &["call-id", "i"])
            {
                state.steered_calls.remove(&(phone.ip(), call_id));
            }
            state.log.push(Relayed {
                phone,
                backend,
                to_phone: true,
                first_line: line,
            });
            drop(state);
            let _ = self.front.send_to(packet, phone);
        }
    }
}

fn first_line(packet: &[u8]) -> String {
    let end = packet
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(packet.len().min(200));
    String::from_utf8_lossy(&packet[..end]).into_owned()
}

/// The value of the first header named one of `names` (lowercase; compact forms too).
fn header(packet: &[u8], names: &[&str]) -> Option<String> {
    let text = String::from_utf8_lossy(packet);
    text.lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            names
                .contains(&name.trim().to_ascii_lowercase().as_str())
                .then(|| value.trim().to_owned())
        })
}

/// Whether the message's To header has a tag (an in-dialog request).
fn has_to_tag(packet: &[u8]) -> bool {
    header(packet, &["to", "t"]).is_some_and(|v| v.to_ascii_lowercase().contains(";tag="))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
