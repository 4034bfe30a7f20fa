//! The phone behind a reverse proxy: which address a WebSocket really comes from when it
//! arrives through an Ingress (`--trusted-proxies`).
//!
//! Behind an Ingress every connection comes from the Ingress controller; the phone's address is
//! in the headers the controller adds. Those headers are believed only from a TCP peer inside
//! one of the [`TrustedProxies`] ranges (by default none: every header is ignored), because
//! anyone else can write them.
//!
//! [`TrustedProxies::client`] reads `X-Forwarded-For` from right to left: each proxy appends the
//! address it got the request from, so addresses that are themselves trusted proxies are skipped
//! and the first one that is not is the client. When every address is trusted, the leftmost
//! one is. An entry may carry a port (`198.51.100.7:4711`, `[2001:db8::7]:4711`), which is the
//! client's; without one the TCP peer's port is kept. Without `X-Forwarded-For`, RFC 7239
//! `Forwarded: for=` is read the same way (`for="[2001:db8::7]:4711"`). Only one of the two is
//! ever read, `X-Forwarded-For` first: a proxy that sets only `Forwarded` must drop a client's
//! own `X-Forwarded-For`, or that client chooses its address.
//!
//! An entry that is not an address (`unknown`, an obfuscated name, garbage) where the client
//! should be leaves the TCP peer as the source, logged at debug level. A client cannot spoil
//! its own entry that way: the entries read are the ones trusted proxies wrote.
//!
//! [`TrustedProxies::forwarded_https`] says whether `X-Forwarded-Proto: https` marks the
//! connection as secure (the flow's transport becomes `wss`): from trusted peers when
//! `--trusted-proxies` is set, from anyone when it is not (the behaviour before the flag
//! existed; the header changes only the transport shown, recorded and named in a `Via`, not
//! where anything is sent).

use axum::http::HeaderMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// An address range: `10.0.0.0/8`, `fd00::/8`; a bare address is a range of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a `--trusted-proxies` entry is not a range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{given:?} is not an address range: {reason}; use ADDRESS/PREFIX (10.0.0.0/8, fd00::/8) or \
     one address (10.0.0.7)"
)]
pub struct CidrError {
    /// The entry as given.
    pub given: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(given: &str) -> Result<Self, CidrError> {
        let error = |reason| CidrError {
            given: given.to_owned(),
            reason,
        };
        let text = given.trim();
        if text.is_empty() {
            return Err(error("it is empty"));
        }
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address
            .parse()
            .map_err(|_| error("the address is not an IPv4 or IPv6 address"))?;
        let address = address.to_canonical();
        let bits = match address {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let prefix = match prefix {
            None => bits,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= bits => p,
                _ if bits == 32 => return Err(error("an IPv4 prefix length is 0 to 32")),
                _ => return Err(error("an IPv6 prefix length is 0 to 128")),
            },
        };
        Ok(Cidr {
            network: mask(address, prefix),
            prefix,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Cidr {
    /// Whether `ip` is in the range (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let same_family = matches!(
            (ip, self.network),
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_))
        );
        same_family && mask(ip, self.prefix) == self.network
    }
}

/// `ip` with every bit past `prefix` cleared.
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let keep = u32::MAX
                .checked_shl(32u32.saturating_sub(prefix.into()))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & keep))
        }
        IpAddr::V6(v6) => {
            let keep = u128::MAX
                .checked_shl(128u32.saturating_sub(prefix.into()))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & keep))
        }
    }
}

/// The proxies whose forwarding headers are believed (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    ranges: Vec<Cidr>,
}

impl TrustedProxies {
    /// Trusts peers in `ranges`; none: no one.
    pub fn new(ranges: impl IntoIterator<Item = Cidr>) -> Self {
        TrustedProxies {
            ranges: ranges.into_iter().collect(),
        }
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
    }

    /// The source of a request that arrived from `peer` with `headers`: the client named by a
    /// trusted proxy, or `peer` itself.
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        if !self.trusts(peer.ip()) {
            return peer;
        }
        let found = if headers.contains_key(X_FORWARDED_FOR) {
            self.walk(X_FORWARDED_FOR, headers, x_forwarded_for_entry)
        } else if headers.contains_key(FORWARDED) {
            self.walk(FORWARDED, headers, forwarded_entry)
        } else {
            return peer;
        };
        match found {
            Ok(Some(Node { ip, port })) => {
                SocketAddr::new(ip.to_canonical(), port.unwrap_or(peer.port()))
            }
            Ok(None) => peer,
            Err(bad) => {
                tracing::debug!(%peer, header = bad.header, entry = %bad.entry,
                    "forwarding header entry is not an address; using the proxy's address");
                peer
            }
        }
    }

    /// Whether the request reached the (first) proxy over TLS, by `X-Forwarded-Proto: https`
    /// from `peer` (see the module docs for who is believed).
    pub fn forwarded_https(&self, peer: SocketAddr, headers: &HeaderMap) -> bool {
        if !self.is_empty() && !self.trusts(peer.ip()) {
            return false;
        }
        headers
            .get(X_FORWARDED_PROTO)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
    }

    /// Walks the entries of `name` (every header line, in order) from the right.
    fn walk(
        &self,
        name: &'static str,
        headers: &HeaderMap,
        parse: fn(&str) -> Option<Node>,
    ) -> Result<Option<Node>, BadEntry> {
        let mut entries = Vec::new();
        for value in headers.get_all(name) {
            let Ok(text) = value.to_str() else {
                return Err(BadEntry {
                    header: name,
                    entry: String::from_utf8_lossy(value.as_bytes()).into_owned(),
                });
            };
            entries.extend(split_unquoted(text, ',').filter(|e| !e.trim().is_empty()));
        }
        let mut leftmost = None;
        for entry in entries.iter().rev() {
            let Some(node) = parse(entry) else {
                return Err(BadEntry {
                    header: name,
                    entry: entry.trim().to_owned(),
                });
            };
            if !self.trusts(node.ip) {
                return Ok(Some(node));
            }
            leftmost = Some(node);
        }
        Ok(leftmost)
    }
}

const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const FORWARDED: &str = "forwarded";

/// An address from a forwarding header, with the client's port when the proxy gave one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Node {
    ip: IpAddr,
    port: Option<u16>,
}

/// An entry that is not an address.
#[derive(Debug)]
struct BadEntry {
    header: &'static str,
    entry: String,
}

/// An `X-Forwarded-For` entry: `192.0.2.7`, `192.0.2.7:4711`, `2001:db8::7`, `[2001:db8::7]`,
/// `[2001:db8::7]:4711`.
fn x_forwarded_for_entry(entry: &str) -> Option<Node> {
    node(entry.trim())
}

/// The `for=` of a `Forwarded` element (`for=192.0.2.7;proto=https`,
/// `for="[2001:db8::7]:4711"`).
fn forwarded_entry(element: &str) -> Option<Node> {
    let value = split_unquoted(element, ';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim())
    })?;
    let value = match value.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"')?,
        None => value,
    };
    node(value)
}

/// An address with an optional port; an obfuscated or zero port counts as none.
fn node(text: &str) -> Option<Node> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(Node { ip, port: None });
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (host.parse::<Ipv6Addr>().ok().map(IpAddr::V6)?, port)
    } else {
        let (host, port) = text.rsplit_once(':')?;
        (host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)?, Some(port))
    };
    let port = match port {
        None => None,
        Some(p) if p.starts_with('_') => None,
        Some(p) => Some(p.parse::<u16>().ok()?).filter(|&p| p != 0),
    };
    Some(Node { ip: host, port })
}

/// Splits at `separator` outside double quotes (a quoted-string may hold one).
fn split_unquoted(text: &str, separator: char) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        let mut quoted = false;
        let mut escaped = false;
        for (i, c) in current.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                c if c == separator && !quoted => {
                    rest = Some(&current[i + c.len_utf8()..]);
                    return Some(&current[..i]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(current)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn proxies(ranges: &[&str]) -> TrustedProxies {
        TrustedProxies::new(ranges.iter().map(|r| r.parse::<Cidr>().expect(r)))
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("header value"));
        }
        map
    }

    const PEER: &str = "10.0.0.9:40000";

    fn client(trusted: &[&str], pairs: &[(&'static str, &str)]) -> String {
        proxies(trusted)
            .client(PEER.parse().expect("peer"), &headers(pairs))
            .to_string()
    }

    #[test]
    fn ranges_parse_and_match() {
        let r: Cidr = "10.1.2.3/8".parse().expect("v4");
        assert_eq!(r.to_string(), "10.0.0.0/8");
        assert!(r.contains("10.255.0.1".parse().expect("ip")));
        assert!(r.contains("::ffff:10.0.0.1".parse().expect("mapped")));
        assert!(!r.contains("11.0.0.1".parse().expect("ip")));
        assert!(!r.contains("::a00:1".parse().expect("v6 with the same bits")));
        let one: Cidr = " 192.0.2.7 ".parse().expect("bare v4");
        assert_eq!(one.to_string(), "192.0.2.7/32");
        assert!(!one.contains("192.0.2.8".parse().expect("ip")));
        let v6: Cidr = "fd00::1/8".parse().expect("v6");
        assert_eq!(v6.to_string(), "fd00::/8");
        assert!(v6.contains("fdff::1".parse().expect("ip")));
        assert_eq!(
            "::1".parse::<Cidr>().expect("bare v6").to_string(),
            "::1/128"
        );
        let all: Cidr = "0.0.0.0/0".parse().expect("everything");
        assert!(all.contains("203.0.113.1".parse().expect("ip")));
        assert!(!all.contains("2001:db8::1".parse().expect("ip")));
        assert!(
            "::/0"
                .parse::<Cidr>()
                .expect("v6 everything")
                .contains("2001:db8::1".parse().expect("ip"))
        );
    }

    #[test]
    fn bad_ranges_say_why() {
        for (given, reason) in [
            ("10.0.0.0/33", "0 to 32"),
            ("fd00::/129", "0 to 128"),
            ("10.0.0.0/x", "0 to 32"),
            ("10.0.0/8", "not an IPv4 or IPv6"),
            ("ingress.example", "not an IPv4 or IPv6"),
            ("", "empty"),
        ] {
            let err = given.parse::<Cidr>().expect_err(given);
            assert!(err.reason.contains(reason), "{given}: {err}");
            assert!(err.to_string().contains("10.0.0.0/8"), "{err}");
        }
    }

    #[test]
    fn untrusted_peers_are_their_own_source() {
        let h = [("x-forwarded-for", "198.51.100.7")];
        assert_eq!(client(&[], &h), PEER);
        assert_eq!(client(&["192.168.0.0/16"], &h), PEER);
        assert_eq!(client(&["10.0.0.0/8"], &h), "198.51.100.7:40000");
    }

    #[test]
    fn x_forwarded_for_is_read_from_the_right() {
        let t = ["10.0.0.0/8"];
        // The client wrote the first entry itself; the proxy appended the real address.
        assert_eq!(
            client(&t, &[("x-forwarded-for", "203.0.113.66, 198.51.100.7")]),
            "198.51.100.7:40000"
        );
        // Another trusted proxy in between is skipped, across header lines too.
        assert_eq!(
            client(
                &t,
                &[
                    ("x-forwarded-for", "203.0.113.66, 198.51.100.7"),
                    ("x-forwarded-for", "10.2.0.1")
                ]
            ),
            "198.51.100.7:40000"
        );
        // Every entry trusted: the leftmost.
        assert_eq!(
            client(&t, &[("x-forwarded-for", "10.3.0.1, 10.2.0.1")]),
            "10.3.0.1:40000"
        );
        // Ports the proxy gave are the client's.
        assert_eq!(
            client(&t, &[("x-forwarded-for", "198.51.100.7:4711")]),
            "198.51.100.7:4711"
        );
        assert_eq!(
            client(&t, &[("x-forwarded-for", "[2001:db8::7]:4711")]),
            "[2001:db8::7]:4711"
        );
        assert_eq!(
            client(&t, &[("x-forwarded-for", "2001:db8::7")]),
            "[2001:db8::7]:40000"
        );
        assert_eq!(
            client(&t, &[("x-forwarded-for", "::ffff:198.51.100.7")]),
            "198.51.100.7:40000"
        );
        // X-Forwarded-Port is the server's port, not the client's.
        assert_eq!(
            client(
                &t,
                &[
                    ("x-forwarded-for", "198.51.100.7"),
                    ("x-forwarded-port", "443")
                ]
            ),
            "198.51.100.7:40000"
        );
    }

    #[test]
    fn bad_entries_leave_the_peer() {
        let t = ["10.0.0.0/8"];
        for value in [
            "unknown",
            "198.51.100.7, garbage",
            "198.51.100.7:99999",
            "[2001:db8::7",
        ] {
            assert_eq!(client(&t, &[("x-forwarded-for", value)]), PEER, "{value}");
        }
        // Garbage left of the client is never read.
        assert_eq!(
            client(&t, &[("x-forwarded-for", "garbage, 198.51.100.7")]),
            "198.51.100.7:40000"
        );
        // Empty list elements are skipped.
        assert_eq!(
            client(&t, &[("x-forwarded-for", " , 198.51.100.7,")]),
            "198.51.100.7:40000"
        );
        assert_eq!(client(&t, &[]), PEER);
    }

    #[test]
    fn forwarded_is_read_without_x_forwarded_for() {
        let t = ["10.0.0.0/8"];
        let f = |value: &str| client(&t, &[("forwarded", value)]);
        assert_eq!(
            f("for=203.0.113.66, for=198.51.100.7;proto=https;by=10.0.0.9"),
            "198.51.100.7:40000"
        );
        assert_eq!(f("For=\"[2001:db8::7]:4711\""), "[2001:db8::7]:4711");
        assert_eq!(f("for=\"198.51.100.7:4711\""), "198.51.100.7:4711");
        assert_eq!(f("for=\"198.51.100.7:_port\""), "198.51.100.7:40000");
        assert_eq!(f("for=198.51.100.7, for=10.2.0.1"), "198.51.100.7:40000");
        // A quoted comma does not split an element.
        assert_eq!(f("for=198.51.100.7;by=\"a,b\""), "198.51.100.7:40000");
        for bad in [
            "for=unknown",
            "for=_hidden",
            "proto=https",
            "for=\"[2001:db8::7]",
        ] {
            assert_eq!(f(bad), PEER, "{bad}");
        }
        // X-Forwarded-For wins when both are there.
        assert_eq!(
            client(
                &t,
                &[
                    ("forwarded", "for=203.0.113.66"),
                    ("x-forwarded-for", "198.51.100.7")
                ]
            ),
            "198.51.100.7:40000"
        );
    }

    #[test]
    fn forwarded_proto_needs_trust_once_proxies_are_set() {
        let peer: SocketAddr = PEER.parse().expect("peer");
        let https = headers(&[("x-forwarded-proto", "HTTPS")]);
        assert!(
            proxies(&[]).forwarded_https(peer, &https),
            "no list: as before"
        );
        assert!(proxies(&["10.0.0.0/8"]).forwarded_https(peer, &https));
        assert!(!proxies(&["192.168.0.0/16"]).forwarded_https(peer, &https));
        assert!(!proxies(&[]).forwarded_https(peer, &headers(&[("x-forwarded-proto", "http")])));
        assert!(
            proxies(&[]).forwarded_https(peer, &headers(&[("x-forwarded-proto", "https, http")]))
        );
        assert!(!proxies(&[]).forwarded_https(peer, &HeaderMap::new()));
    }
}
