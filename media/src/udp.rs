//! Batched reads from the relay's UDP sockets: `recvmmsg` (through quinn-udp's safe wrapper)
//! into one set of buffers per relay thread, without the read that only returns `EAGAIN`; and
//! sends that never wait, from sockets registered for reading only ([`Socket`], which the SIP
//! registrar's UDP sockets are too); and the `SO_REUSEPORT` group that opens the shared WebRTC
//! port once per relay thread (`bind_group`).
//!
//! ```text
//! readiness wake ─► read(socket): recvmmsg(up to BATCH) ─► n datagrams in the thread's buffers
//!                                  n < BATCH: the socket is empty → tokio's readiness cleared
//! ```
//! Reading until `EAGAIN` costs a syscall that returns nothing after every wake-up (one of three
//! per packet when packets come one at a time). A `recvmmsg` that fills fewer buffers than it
//! was given has emptied the socket, so `Reader::read` clears tokio's readiness itself
//! (returning `WouldBlock` from `try_io`); a datagram arriving after that raises a new edge and
//! wakes the task again, so none is stranded. The buffers are per thread, not per session: a
//! session's read is synchronous, and sessions on one thread take turns.
//!
//! quinn-udp's [`UdpSocketState`] is made once per thread, from a socket of its own: its
//! `recv` only needs the socket it reads. The relay's sockets get none of the options it sets
//! (no GRO, no ancillary data), so each buffer holds exactly one datagram; a buffer holding
//! several (GRO) would still be split by its stride. Should the state not be made, reads fall
//! back to one `recv_from` per datagram.

use quinn_udp::{RecvMeta, UdpSocketState};
use std::cell::Cell;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::task::{Context, Poll};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// A UDP socket registered with the current runtime's reactor for reading only: the relay's
/// sockets and the SIP registrar's.
///
/// Why not `tokio::net::UdpSocket`: it is registered for writing too, and these sockets send
/// without waiting ([`Socket::send_to`]). The kernel then reports the socket writable again
/// after every datagram it sent: one more readiness event per datagram for the reactor to
/// collect and dispatch, and for a thread asleep in `epoll_wait` (the WebRTC hub's, whose
/// socket the sessions of every thread send from; a runtime worker parked while the SIP
/// drive loop answers) a wake-up for nothing.
#[derive(Debug)]
pub struct Socket(AsyncFd<std::net::UdpSocket>);

impl Socket {
    /// Binds `addr` and registers the socket with the current runtime (call it inside one).
    pub fn bind(addr: SocketAddr) -> io::Result<Socket> {
        Socket::from_std(std::net::UdpSocket::bind(addr)?)
    }

    /// Registers a bound socket with the current runtime (call it inside one).
    pub fn from_std(socket: std::net::UdpSocket) -> io::Result<Socket> {
        socket.set_nonblocking(true)?;
        // `with_interest` is deprecated because a type's `as_raw_fd` could change or close
        // its descriptor while registered; `std::net::UdpSocket` owns its descriptor for its
        // whole life, which is what the replacement's safety contract asks for.
        #[allow(deprecated)]
        AsyncFd::with_interest(socket, Interest::READABLE).map(Socket)
    }

    /// The same socket, registered with the current runtime instead of the one it was
    /// registered with (call it inside the new one). Datagrams waiting in it stay; the new
    /// registration reports them.
    pub(crate) fn rehome(self) -> io::Result<Socket> {
        Socket::from_std(self.0.into_inner())
    }

    /// Ready when a datagram may be waiting (readiness stays set until a read finds the socket
    /// empty).
    pub(crate) fn poll_recv_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_read_ready(cx).map_ok(drop)
    }

    /// Waits until a datagram may be waiting.
    pub(crate) async fn readable(&self) -> io::Result<()> {
        self.0.readable().await.map(drop)
    }

    /// Waits for the next datagram and reads it into `buf` (one `recvfrom`; a datagram longer
    /// than `buf` is cut).
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        loop {
            let mut ready = self.0.readable().await?;
            if let Ok(read) = ready.try_io(|socket| socket.get_ref().recv_from(buf)) {
                return read;
            }
        }
    }

    /// Sends `data` to `to` now, or fails (`WouldBlock` when the send buffer is full: these
    /// sockets never wait to send, a datagram that does not fit is dropped and counted). A
    /// plain `sendto`.
    pub fn send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.0.get_ref().send_to(data, to)
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().local_addr()
    }
}

/// Datagrams read per syscall at most.
pub(crate) const BATCH: usize = 8;
/// Largest datagram read whole (bigger ones are truncated by the kernel).
pub(crate) const MAX_DATAGRAM: usize = 2048;

/// One relay thread's receive buffers (see the module docs).
pub(crate) struct Reader {
    state: Option<UdpSocketState>,
    bufs: Box<[[u8; MAX_DATAGRAM]; BATCH]>,
    meta: [RecvMeta; BATCH],
    /// Buffers filled by the last read.
    filled: usize,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("batched", &self.state.is_some())
            .field("filled", &self.filled)
            .finish_non_exhaustive()
    }
}

thread_local! {
    static READER: Cell<Option<Box<Reader>>> = const { Cell::new(None) };
}

impl Reader {
    fn new() -> Reader {
        let state = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
            .and_then(|own| UdpSocketState::new((&own).into()));
        if let Err(e) = &state {
            tracing::warn!(target: "media", error = %e, "batched UDP reads unavailable; reading one datagram per syscall");
        }
        Reader {
            state: state.ok(),
            bufs: Box::new([[0; MAX_DATAGRAM]; BATCH]),
            meta: [RecvMeta::default(); BATCH],
            filled: 0,
        }
    }

    /// Runs `f` with this thread's reader (made on first use).
    pub(crate) fn with<R>(f: impl FnOnce(&mut Reader) -> R) -> R {
        let mut reader = READER.take().unwrap_or_else(|| Box::new(Reader::new()));
        let result = f(&mut reader);
        READER.set(Some(reader));
        result
    }

    /// Reads what `socket` holds, up to [`BATCH`] datagrams, into the buffers
    /// ([`Self::datagrams`]). `Ok(true)`: the socket may hold more; `Ok(false)`: it is empty
    /// and its readiness cleared.
    pub(crate) fn read(&mut self, socket: &Socket) -> io::Result<bool> {
        self.filled = 0;
        let Some(state) = &self.state else {
            let buf = &mut self.bufs[0];
            return match socket
                .0
                .try_io(Interest::READABLE, |socket| socket.recv_from(buf))
            {
                Ok((len, addr)) => {
                    let meta = &mut self.meta[0];
                    (meta.addr, meta.len, meta.stride) = (addr, len, len);
                    self.filled = 1;
                    Ok(true)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
                Err(e) => Err(e),
            };
        };
        let (bufs, meta, filled) = (&mut self.bufs, &mut self.meta, &mut self.filled);
        let read = socket.0.try_io(Interest::READABLE, |socket| {
            let mut slices = bufs.each_mut().map(|b| IoSliceMut::new(b));
            let n = state.recv(socket.into(), &mut slices, meta)?;
            *filled = n;
            if n < BATCH {
                // Empty now: have try_io clear the readiness (the data is kept).
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        });
        match read {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The datagrams of the last read and where each came from.
    pub(crate) fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.meta[..self.filled]
            .iter()
            .zip(self.bufs.iter())
            .flat_map(|(meta, buf)| {
                let stride = if meta.stride == 0 {
                    meta.len
                } else {
                    meta.stride
                };
                buf[..meta.len.min(MAX_DATAGRAM)]
                    .chunks(stride.max(1))
                    .map(move |d| (meta.addr, d))
            })
    }
}

/// `count` UDP sockets bound to the same `addr` (port 0: one the kernel picks) with
/// `SO_REUSEPORT`, so that the kernel spreads the datagrams arriving there over them, keeping
/// each pair of addresses on one socket. One socket, bound plainly, when `count` is 1.
///
/// A port someone already holds is refused (`AddrInUse`) even when that holder is a group of
/// this kind (another relay of the same user): a plain bind of the port is tried first, and a
/// group lets only its members in.
pub(crate) fn bind_group(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::UdpSocket>> {
    if count <= 1 {
        return Ok(vec![std::net::UdpSocket::bind(addr)?]);
    }
    if addr.port() != 0 {
        drop(std::net::UdpSocket::bind(addr)?);
    }
    let member = |addr: SocketAddr| -> io::Result<std::net::UdpSocket> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        socket.set_reuse_port(true)?;
        socket.bind(&addr.into())?;
        Ok(socket.into())
    };
    let first = member(addr)?;
    let bound = first.local_addr()?;
    let mut group = vec![first];
    for _ in 1..count {
        group.push(member(bound)?);
    }
    Ok(group)
}

/// Asks for `bytes` of receive and send buffer on `socket`, as far as the kernel allows
/// (`net.core.rmem_max`, `wmem_max`); what it got is logged at debug level.
pub(crate) fn enlarge_buffers(socket: &std::net::UdpSocket, bytes: usize) {
    let socket = socket2::SockRef::from(socket);
    let rcv = socket.set_recv_buffer_size(bytes);
    let snd = socket.set_send_buffer_size(bytes);
    tracing::debug!(
        target: "media",
        asked = bytes,
        receive = ?rcv.and_then(|()| socket.recv_buffer_size()),
        send = ?snd.and_then(|()| socket.send_buffer_size()),
        "UDP socket buffers"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_shares_one_port_and_a_held_port_is_refused() {
        let group = bind_group("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let port = group[0].local_addr().unwrap().port();
        assert!(group.iter().all(|s| s.local_addr().unwrap().port() == port));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // Neither a second group nor a plain socket gets the port.
        assert_eq!(
            bind_group(addr, 2).unwrap_err().kind(),
            io::ErrorKind::AddrInUse
        );
        assert_eq!(
            bind_group(addr, 1).unwrap_err().kind(),
            io::ErrorKind::AddrInUse
        );
        // Every member receives: the kernel spreads senders over them.
        for s in &group {
            s.set_nonblocking(true).unwrap();
        }
        let senders: Vec<_> = (0..64)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for s in &senders {
            s.send_to(b"x", addr).unwrap();
        }
        let mut counts = vec![0; group.len()];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while counts.iter().sum::<usize>() < senders.len() && std::time::Instant::now() < deadline {
            for (s, n) in group.iter().zip(&mut counts) {
                let mut buf = [0; 8];
                while s.recv_from(&mut buf).is_ok() {
                    *n += 1;
                }
            }
        }
        assert_eq!(counts.iter().sum::<usize>(), senders.len());
        assert!(counts.iter().all(|&n| n > 0), "{counts:?}");
    }

    #[tokio::test]
    async fn a_rehomed_socket_keeps_its_datagrams() {
        let std_rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = std_rx.local_addr().unwrap();
        let rx = Socket::from_std(std_rx).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(&[1; 10], to).unwrap();
        rx.readable().await.unwrap();
        // Registered with another runtime while a datagram waits.
        let other = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let rx = {
            let _on = other.enter();
            rx.rehome().unwrap()
        };
        let got = std::thread::spawn(move || {
            other.block_on(async {
                let mut got = Vec::new();
                for _ in 0..2 {
                    tokio::time::timeout(std::time::Duration::from_secs(2), rx.readable())
                        .await
                        .unwrap()
                        .unwrap();
                    Reader::with(|r| {
                        r.read(&rx).unwrap();
                        got.extend(r.datagrams().map(|(_, d)| d[0]));
                    });
                    if got.len() == 1 {
                        tx.send_to(&[2; 10], to).unwrap();
                    }
                }
                got
            })
        })
        .join()
        .unwrap();
        assert_eq!(got, [1, 2]);
    }

    #[tokio::test]
    async fn reads_a_batch_and_stops_at_an_empty_socket() {
        let std_rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = std_rx.local_addr().unwrap();
        let rx = Socket::from_std(std_rx).unwrap();
        let tx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for i in 0..(BATCH as u8 + 3) {
            tx.send_to(&[i; 20], to).await.unwrap();
        }
        rx.readable().await.unwrap();
        let mut got = Vec::new();
        let mut more = true;
        let mut reads = 0;
        while more {
            more = Reader::with(|r| {
                let more = r.read(&rx).unwrap();
                for (from, d) in r.datagrams() {
                    assert_eq!(from, tx.local_addr().unwrap());
                    assert_eq!(d.len(), 20);
                    got.push(d[0]);
                }
                more
            });
            reads += 1;
        }
        assert_eq!(got, (0..(BATCH as u8 + 3)).collect::<Vec<_>>());
        // A full batch, then a short one that ended the loop: no read found the socket empty.
        assert_eq!(reads, 2);
        // Readiness was cleared: the next datagram wakes the socket again.
        tx.send_to(&[9; 4], to).await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(2), rx.readable())
            .await
            .unwrap()
            .unwrap();
        Reader::with(|r| {
            assert!(!r.read(&rx).unwrap());
            assert_eq!(r.datagrams().map(|(_, d)| d.len()).collect::<Vec<_>>(), [4]);
        });
    }
}
