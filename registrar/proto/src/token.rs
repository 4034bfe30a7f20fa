//! Signed tokens that name a flow or a replica, carried in SIP headers other replicas (and
//! phones) echo back: `Route`/`Record-Route` parameters and `Via` branches.
//!
//! A token is `base64url(payload ‖ tag)` with `tag` the first 8 bytes of HMAC-SHA-256 over the
//! payload, keyed with the cluster key that every replica shares. A phone sees tokens (they are
//! in the headers it echoes) but cannot make one: a token with a bad tag decodes to `None`, so a
//! forged header cannot make a replica send on another phone's flow.
//!
//! Payloads:
//! - a flow: version, transport, flow id, remote address, owning replica id ([`FlowToken`]);
//! - a replica id alone ([`TokenCodec::replica`]).
//!
//! Every token is made of URI-parameter and branch-safe characters (`A-Z a-z 0-9 - _`).

use crate::flow::Flow;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use kubepbx_api::Transport;
use sha2::Sha256;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const TAG_LEN: usize = 8;
const FLOW: u8 = 1;
const REPLICA: u8 = 2;
/// Longest payload accepted (a flow with a 63-character replica id needs 92 bytes).
const MAX_PAYLOAD: usize = 128;

/// A flow on a named replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowToken {
    /// The replica that owns the flow.
    pub replica: String,
    /// The flow on that replica.
    pub flow: Flow,
}

/// Makes and checks tokens with one cluster key.
#[derive(Clone)]
pub struct TokenCodec {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for TokenCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenCodec { <key redacted> }")
    }
}

impl TokenCodec {
    /// A codec keyed with the cluster key.
    pub fn new(key: &[u8; 32]) -> Self {
        let mut padded = [0u8; 64];
        padded[..32].copy_from_slice(key);
        let mut mac = <Hmac<Sha256> as KeyInit>::new(&padded.into());
        mac.update(b"kubepbx-token-v1");
        TokenCodec { mac }
    }

    fn seal(&self, payload: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(payload);
        let tag = mac.finalize().into_bytes();
        let mut raw = Vec::with_capacity(payload.len() + TAG_LEN);
        raw.extend_from_slice(payload);
        raw.extend_from_slice(&tag[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    fn open(&self, token: &str) -> Option<Vec<u8>> {
        if token.len() > (MAX_PAYLOAD + TAG_LEN) * 4 / 3 + 4 {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
        let split = raw.len().checked_sub(TAG_LEN)?;
        let (payload, tag) = raw.split_at(split);
        let mut mac = self.mac.clone();
        mac.update(payload);
        mac.verify_truncated_left(tag).ok()?;
        Some(payload.to_vec())
    }

    /// A token for `flow` on `replica`; `extra` bytes are bound into it (e.g. a hash that makes
    /// a Via branch unique per request).
    pub fn flow(&self, token: &FlowToken, extra: &[u8]) -> String {
        let mut p = vec![FLOW, transport_code(token.flow.transport)];
        p.extend_from_slice(&token.flow.id.to_be_bytes());
        match token.flow.remote.ip() {
            IpAddr::V4(ip) => {
                p.push(4);
                p.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                p.push(6);
                p.extend_from_slice(&ip.octets());
            }
        }
        p.extend_from_slice(&token.flow.remote.port().to_be_bytes());
        let id = token.replica.as_bytes();
        p.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
        p.extend_from_slice(&id[..id.len().min(usize::from(u8::MAX))]);
        p.extend_from_slice(extra);
        self.seal(&p)
    }

    /// The flow a token names, if the token is genuine.
    pub fn open_flow(&self, token: &str) -> Option<FlowToken> {
        let p = self.open(token)?;
        let mut r = Reader(&p);
        if r.byte()? != FLOW {
            return None;
        }
        let transport = transport_of(r.byte()?)?;
        let id = u64::from_be_bytes(r.take(8)?.try_into().ok()?);
        let ip = match r.byte()? {
            4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(r.take(4)?).ok()?)),
            6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(r.take(16)?).ok()?)),
            _ => return None,
        };
        let port = u16::from_be_bytes(r.take(2)?.try_into().ok()?);
        let len = usize::from(r.byte()?);
        let replica = String::from_utf8(r.take(len)?.to_vec()).ok()?;
        Some(FlowToken {
            replica,
            flow: Flow {
                transport,
                id,
                remote: SocketAddr::new(ip, port),
            },
        })
    }

    /// A token naming `replica` (the owner of a call).
    pub fn replica(&self, replica: &str) -> String {
        let mut p = vec![REPLICA];
        p.extend_from_slice(replica.as_bytes());
        self.seal(&p)
    }

    /// The replica a token names, if the token is genuine.
    pub fn open_replica(&self, token: &str) -> Option<String> {
        let p = self.open(token)?;
        let (&kind, id) = p.split_first()?;
        (kind == REPLICA).then(|| String::from_utf8(id.to_vec()).ok())?
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
}

fn transport_code(t: Transport) -> u8 {
    match t {
        Transport::Udp => 0,
        Transport::Tcp => 1,
        Transport::Tls => 2,
        Transport::Ws => 3,
        Transport::Wss => 4,
    }
}

fn transport_of(code: u8) -> Option<Transport> {
    Some(match code {
        0 => Transport::Udp,
        1 => Transport::Tcp,
        2 => Transport::Tls,
        3 => Transport::Ws,
        4 => Transport::Wss,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(remote: &str) -> FlowToken {
        FlowToken {
            replica: "registrar-1".into(),
            flow: Flow {
                transport: Transport::Tcp,
                id: 42,
                remote: remote.parse().unwrap_or_else(|e| panic!("{e}")),
            },
        }
    }

    #[test]
    fn flows_and_replicas_round_trip() {
        let codec = TokenCodec::new(&[7; 32]);
        for remote in ["203.0.113.5:5060", "[2001:db8::1]:5062"] {
            let t = token(remote);
            let text = codec.flow(&t, b"branch-hash");
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{text}"
            );
            assert_eq!(codec.open_flow(&text), Some(t));
            assert_eq!(codec.open_replica(&text), None, "kinds do not mix");
        }
        let r = codec.replica("registrar-0");
        assert_eq!(codec.open_replica(&r).as_deref(), Some("registrar-0"));
        assert_eq!(codec.open_flow(&r), None);
    }

    #[test]
    fn forged_or_damaged_tokens_are_refused() {
        let codec = TokenCodec::new(&[7; 32]);
        let text = codec.flow(&token("203.0.113.5:5060"), b"");
        let other = TokenCodec::new(&[8; 32]);
        assert_eq!(other.open_flow(&text), None, "another cluster's key");
        let mut damaged = text.clone().into_bytes();
        damaged[3] = if damaged[3] == b'A' { b'B' } else { b'A' };
        let damaged = String::from_utf8(damaged).unwrap_or_default();
        assert_eq!(codec.open_flow(&damaged), None);
        assert_eq!(codec.open_flow(""), None);
        assert_eq!(codec.open_flow("!!"), None);
        assert_eq!(codec.open_flow(&"A".repeat(4000)), None);
    }
}
