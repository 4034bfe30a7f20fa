//! Loopback ports chosen at run time.
//!
//! Tests never hard-code a port: they ask for one here, hand it to the process they start and
//! forget it. A port is checked free by binding it (for SIP on both UDP and TCP, since the PBX
//! listens on both with the same number) and released just before use. Ports handed out are
//! remembered for the life of the test process, so two tests running in parallel threads never
//! get the same one; another process can still take it in the short gap before the child binds,
//! which the child then reports as "address in use".
//!
//! A PBX's media relay gets a block of UDP ports of its own ([`free_udp_port_block`]) in
//! 10000–19999: below `kubepbx up`'s default `--rtp-ports` (20000–20999, which the benchmarks
//! widen to 20000–29999) and the kernel's ephemeral range (32768 and up on Linux), above pjsua's
//! default media ports (4000 and up), so parallel tests never share relay ports with each other
//! or with a benchmark running next to them.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{IoContext, Result};

/// How many candidates to try before giving up.
const ATTEMPTS: usize = 200;

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Records `port` as handed out; false if it already was.
fn claim(port: u16) -> bool {
    let mut guard = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    guard.get_or_insert_with(HashSet::new).insert(port)
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// A port on 127.0.0.1 that is free for both UDP and TCP, as a SIP listener needs.
pub fn free_udp_tcp_port() -> Result<u16> {
    for _ in 0..ATTEMPTS {
        let udp = UdpSocket::bind(loopback(0)).context(|| "bind UDP 127.0.0.1:0".into())?;
        let port = udp.local_addr().context(|| "UDP local_addr".into())?.port();
        // The TCP side must be free too; if not, try another number.
        if TcpListener::bind(loopback(port)).is_ok() && claim(port) {
            return Ok(port);
        }
    }
    Err(crate::Error::Invalid(format!(
        "no port free for both UDP and TCP after {ATTEMPTS} attempts"
    )))
}

/// A port on 127.0.0.1 that is free for TCP (an HTTP listener).
pub fn free_tcp_port() -> Result<u16> {
    for _ in 0..ATTEMPTS {
        let tcp = TcpListener::bind(loopback(0)).context(|| "bind TCP 127.0.0.1:0".into())?;
        let port = tcp.local_addr().context(|| "TCP local_addr".into())?.port();
        if claim(port) {
            return Ok(port);
        }
    }
    Err(crate::Error::Invalid(format!(
        "no free TCP port after {ATTEMPTS} attempts"
    )))
}

/// A port on 127.0.0.1 that is free for UDP (a SIP client's local port).
pub fn free_udp_port() -> Result<u16> {
    for _ in 0..ATTEMPTS {
        let udp = UdpSocket::bind(loopback(0)).context(|| "bind UDP 127.0.0.1:0".into())?;
        let port = udp.local_addr().context(|| "UDP local_addr".into())?.port();
        if claim(port) {
            return Ok(port);
        }
    }
    Err(crate::Error::Invalid(format!(
        "no free UDP port after {ATTEMPTS} attempts"
    )))
}

/// Where [`free_udp_port_block`] looks (see the module doc).
const BLOCK_AREA: RangeInclusive<u16> = 10000..=19999;

/// `len` consecutive ports on 127.0.0.1, starting at an even one, each free for UDP right now:
/// a `--rtp-ports` range for one PBX. Blocks are spread over 10000–19999 (see the module doc).
pub fn free_udp_port_block(len: u16) -> Result<RangeInclusive<u16>> {
    static SEED: AtomicU64 = AtomicU64::new(0);
    let span = u64::from(BLOCK_AREA.end() - BLOCK_AREA.start());
    if len < 2 || u64::from(len) > span {
        return Err(crate::Error::Invalid(format!(
            "a port block of {len} ports does not fit {BLOCK_AREA:?}"
        )));
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x =
        nanos ^ (u64::from(std::process::id()) << 32) ^ SEED.fetch_add(1, Ordering::Relaxed) | 1;
    for _ in 0..ATTEMPTS {
        // xorshift: spreads the candidates of one process and of parallel ones.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let offset = (x % (span - u64::from(len))) as u16 & !1;
        let start = BLOCK_AREA.start() + offset;
        let block = start..=start + (len - 1);
        let free = block
            .clone()
            .map(|p| UdpSocket::bind(loopback(p)))
            .collect::<std::io::Result<Vec<_>>>()
            .is_ok();
        if !free {
            continue;
        }
        let mut guard = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
        let handed = guard.get_or_insert_with(HashSet::new);
        if block.clone().all(|p| !handed.contains(&p)) {
            handed.extend(block.clone());
            return Ok(block);
        }
    }
    Err(crate::Error::Invalid(format!(
        "no block of {len} free UDP ports in {BLOCK_AREA:?} after {ATTEMPTS} attempts"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_tcp_port_is_bindable_on_both() {
        let port = free_udp_tcp_port().unwrap();
        assert_ne!(port, 0);
        UdpSocket::bind(loopback(port)).expect("UDP side free");
        TcpListener::bind(loopback(port)).expect("TCP side free");
    }

    #[test]
    fn tcp_and_udp_ports_are_bindable() {
        let tcp = free_tcp_port().unwrap();
        TcpListener::bind(loopback(tcp)).expect("TCP port free");
        let udp = free_udp_port().unwrap();
        UdpSocket::bind(loopback(udp)).expect("UDP port free");
    }

    #[test]
    fn port_blocks_are_free_even_and_disjoint() {
        let a = free_udp_port_block(40).unwrap();
        let b = free_udp_port_block(40).unwrap();
        for block in [&a, &b] {
            assert_eq!(block.end() - block.start(), 39);
            assert_eq!(block.start() % 2, 0);
            assert!(BLOCK_AREA.contains(block.start()) && BLOCK_AREA.contains(block.end()));
            UdpSocket::bind(loopback(*block.start())).expect("first port free");
        }
        assert!(a.end() < b.start() || b.end() < a.start(), "{a:?} {b:?}");
        assert!(free_udp_port_block(1).is_err());
    }

    #[test]
    fn ports_are_not_handed_out_twice() {
        let mut seen = HashSet::new();
        for _ in 0..50 {
            assert!(seen.insert(free_udp_tcp_port().unwrap()));
            assert!(seen.insert(free_tcp_port().unwrap()));
        }
    }
}
