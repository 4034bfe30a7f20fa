//! This machine's addresses: the default `--advertise` host and the names that mean "this PBX"
//! in a Request-URI.

use std::net::{IpAddr, SocketAddr};

/// The first non-loopback address (IPv4 preferred), else 127.0.0.1.
pub fn default_advertise() -> IpAddr {
    let addrs: Vec<IpAddr> = if_addrs::get_if_addrs()
        .map(|list| list.into_iter().map(|i| i.ip()).collect())
        .unwrap_or_default();
    addrs
        .iter()
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        .or_else(|| {
            addrs
                .iter()
                .find(|ip| !ip.is_loopback() && !is_link_local_v6(ip))
        })
        .copied()
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

fn is_link_local_v6(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

/// Host names and addresses a phone may use for this PBX: the advertised host, the SIP bind
/// address, every interface address, `localhost` and the host name.
pub fn local_hosts(advertise: &str, sip: SocketAddr) -> Vec<String> {
    let mut hosts = vec![advertise.to_ascii_lowercase(), "localhost".to_owned()];
    if !sip.ip().is_unspecified() {
        hosts.push(sip.ip().to_string());
    }
    if let Ok(list) = if_addrs::get_if_addrs() {
        hosts.extend(list.into_iter().map(|i| i.ip().to_string()));
    }
    if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let name = name.trim().to_ascii_lowercase();
        if !name.is_empty() {
            hosts.push(name);
        }
    }
    hosts.sort();
    hosts.dedup();
    hosts
}
