//! Loopback ports chosen at run time.
//!
//! Tests never hard-code a port: they ask for one here, hand it to the process they start and
//! forget it. A port is checked free by binding it (for SIP on both UDP and TCP, since the PBX
//! listens on both with the same number) and released just before use. Ports handed out are
//! remembered for the life of the test process, so two tests running in parallel threads never
//! get the same one; another process can still take it in the short gap before the child binds,
//! which the child then reports as "address in use".

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::{Mutex, PoisonError};

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
    fn ports_are_not_handed_out_twice() {
        let mut seen = HashSet::new();
        for _ in 0..50 {
            assert!(seen.insert(free_udp_tcp_port().unwrap()));
            assert!(seen.insert(free_tcp_port().unwrap()));
        }
    }
}
