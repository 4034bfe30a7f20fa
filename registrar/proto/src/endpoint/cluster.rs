//! Many replicas, one PBX: flows other replicas own, the stateless hop, and call owners
//! (docs/adr/0003-replicas.md).
//!
//! Only the replica that received a phone's packets can send to it (NAT and the load balancer pin
//! the path). So:
//!
//! - **Sending on another replica's flow.** A binding names its owner. When the owner is a live
//!   peer, the proxy addresses the request to a *remote flow* — an ordinary [`Flow`] whose id
//!   carries the peer's index and the owner's flow id ([`REMOTE`]) — so transactions, CANCEL
//!   and in-dialog routing work unchanged. On its way out ([`Endpoint::poll_transmit`]) such a
//!   request gets `Route: <sip:{owner-internal};lr;kpf={flow token}>` on top and goes to the
//!   owner's internal address. When the owner is gone, a UDP contact is tried directly; the
//!   phone answers through the load balancer, which may lead to another replica: that one
//!   passes the response to the sender, whom the salt of the branch names.
//! - **The stateless hop.** A request arriving on the internal socket with a `kpf` Route is
//!   passed on by its owner without any state: the Route is popped, a `Via` is pushed whose
//!   branch is a signed token of the flow the request came from (`z9hG4bK-kps…`), and the
//!   request goes out on the named flow. A response whose top `Via` is such a branch is passed
//!   back the same way, on the flow the token names.
//! - **Call owners.** The replica that routed an INVITE keeps the call (transactions, media,
//!   the record). Its `Record-Route` carries `kpo={owner token}`; an in-dialog request that
//!   lands on another replica is passed to the owner's internal address by the same stateless
//!   hop (the owner pops its Route as usual).
//!
//! Internal SIP is accepted only from the internal addresses of live peers; tokens are signed
//! with the cluster key ([`crate::token`]), so a phone cannot forge one.

use super::{DropReason, Endpoint, Now};
use crate::flow::{Flow, FlowId, Transmit};
use crate::forward::{self, Forward, split_values};
use crate::message::{Essentials, Request, Response};
use crate::token::{FlowToken, TokenCodec};
use bytes::{BufMut, Bytes, BytesMut};
use ezk_sip_types::Name;
use kubepbx_api::Binding;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;

/// Marks a remote flow id: bit 62 set, the peer's index in bits 32..62, the owner's flow id in
/// bits 0..32. ([`Flow::INTERNAL`] has every bit set and is tested first.)
pub const REMOTE: FlowId = 1 << 62;
const INDEX_BITS: FlowId = (1 << 30) - 1;
/// Branch prefix of the stateless hop's `Via`.
pub(super) const HOP_BRANCH: &str = "z9hG4bK-kps";
/// Branch prefix of the proxy's own requests: `z9hG4bK-kp{salt:x}-…`, the salt naming the
/// replica (hex digits, so never the hop's `kps`).
const PROXY_BRANCH: &str = "z9hG4bK-kp";
/// Route parameter naming the flow a request is for.
const FLOW_PARAM: &str = "kpf=";
/// Record-Route parameter naming the call's owner.
const OWNER_PARAM: &str = "kpo=";

/// What a replica of a cluster needs beyond a single-process PBX.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This replica's internal SIP address (UDP), where the others send to it.
    pub internal: SocketAddr,
    /// The cluster key: signs the tokens every replica must accept from the others.
    pub key: [u8; 32],
}

/// The peers this replica knows and the tokens it makes.
#[derive(Debug)]
pub(super) struct Cluster {
    codec: TokenCodec,
    /// `;kpo=…` for this replica's Record-Routes.
    owner_param: String,
    /// Live peers: id → internal address.
    live: HashMap<String, SocketAddr>,
    /// Live peers by internal address (to accept internal SIP).
    by_addr: HashMap<SocketAddr, String>,
    /// Live peers by the salt of their branches (to pass back responses meant for them).
    by_salt: HashMap<u32, String>,
    /// Every peer id ever seen, by the index remote flow ids carry.
    ids: Vec<String>,
    index: HashMap<String, FlowId>,
}

impl Cluster {
    pub(super) fn new(config: &ClusterConfig, me: &str) -> Self {
        let codec = TokenCodec::new(&config.key);
        Cluster {
            owner_param: format!(";{OWNER_PARAM}{}", codec.replica(me)),
            codec,
            live: HashMap::new(),
            by_addr: HashMap::new(),
            by_salt: HashMap::new(),
            ids: Vec::new(),
            index: HashMap::new(),
        }
    }

    fn index_of(&mut self, id: &str) -> Option<FlowId> {
        if let Some(&i) = self.index.get(id) {
            return Some(i);
        }
        let i = FlowId::try_from(self.ids.len()).ok()?;
        if i > INDEX_BITS {
            return None;
        }
        self.ids.push(id.to_owned());
        self.index.insert(id.to_owned(), i);
        Some(i)
    }
}

/// Whether `id` is a remote flow id.
pub fn is_remote(id: FlowId) -> bool {
    id != Flow::INTERNAL && id & REMOTE != 0
}

fn hash8(text: &str) -> [u8; 8] {
    let digest = Sha256::digest(text.as_bytes());
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// The value of `param` (`kpf=`, `kpo=`) in one header value, up to the next `;` or `>`.
fn param<'a>(value: &'a str, param: &str) -> Option<&'a str> {
    let start = value.find(param)? + param.len();
    let rest = &value[start..];
    let end = rest.find([';', '>', ',', ' ']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// `bytes` (a request) with `Route: route` as its first header.
fn with_route_on_top(bytes: &Bytes, route: &str) -> Option<Bytes> {
    let line_end = bytes.windows(2).position(|w| w == b"\r\n")? + 2;
    let mut out = BytesMut::with_capacity(bytes.len() + route.len() + 9);
    out.put_slice(&bytes[..line_end]);
    out.put_slice(b"Route: ");
    out.put_slice(route.as_bytes());
    out.put_slice(b"\r\n");
    out.put_slice(&bytes[line_end..]);
    Some(out.freeze())
}

impl Endpoint {
    /// Replaces the set of live peers (the other registrar replicas and their internal
    /// addresses); this replica's own id is ignored.
    pub fn set_peers(&mut self, peers: impl IntoIterator<Item = (String, SocketAddr)>) {
        let me = self.config.replica.clone();
        let secret = self.config.secret;
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        cluster.live = peers.into_iter().filter(|(id, _)| *id != me).collect();
        cluster.by_addr = cluster
            .live
            .iter()
            .map(|(id, addr)| (*addr, id.clone()))
            .collect();
        cluster.by_salt = cluster
            .live
            .keys()
            .map(|id| (super::tag_salt(&secret, id), id.clone()))
            .collect();
    }

    /// The flow to send to `b` on: its own when this replica owns it (or runs alone), a remote
    /// flow through its live owner, or — the owner is gone — the phone's address directly (UDP
    /// only; `None` for a stream flow nobody can reach).
    pub(super) fn flow_to(&mut self, b: &Binding) -> Option<Flow> {
        let own = Flow {
            transport: b.transport,
            id: b.flow,
            remote: b.source,
        };
        let me = self.config.replica.as_str();
        let Some(cluster) = &mut self.cluster else {
            return Some(own);
        };
        if *b.replica == *me {
            return Some(own);
        }
        if cluster.live.contains_key(&*b.replica)
            && let Ok(low) = u32::try_from(b.flow)
            && let Some(index) = cluster.index_of(&b.replica)
        {
            return Some(Flow {
                id: REMOTE | (index << 32) | FlowId::from(low),
                ..own
            });
        }
        (!b.transport.is_stream()).then(|| Flow::udp(b.source))
    }

    /// A transmit on its way out: a request for a remote flow goes to the owner's internal
    /// address with the owner's `kpf` Route on top; everything else as is. `None` when it
    /// cannot be sent (counted).
    pub(super) fn route_transmit(&mut self, t: Transmit) -> Option<Transmit> {
        if !is_remote(t.flow.id) {
            return Some(t);
        }
        let Some(cluster) = &self.cluster else {
            return Some(t);
        };
        let index = usize::try_from((t.flow.id >> 32) & INDEX_BITS).ok()?;
        let flow = Flow {
            id: t.flow.id & 0xffff_ffff,
            ..t.flow
        };
        let Some(owner) = cluster.ids.get(index) else {
            self.stats.drop(DropReason::BadHop);
            return None;
        };
        let Some(&internal) = cluster.live.get(owner) else {
            // The owner died after the request was addressed: a UDP phone may still be
            // reachable directly.
            if flow.transport.is_stream() {
                self.stats.drop(DropReason::BadHop);
                return None;
            }
            return Some(Transmit {
                flow: Flow::udp(flow.remote),
                bytes: t.bytes,
            });
        };
        if t.bytes.starts_with(b"SIP/2.0 ") {
            // Responses follow Vias, never remote flows.
            self.stats.drop(DropReason::BadHop);
            return None;
        }
        let token = cluster.codec.flow(
            &FlowToken {
                replica: owner.clone(),
                flow,
            },
            b"",
        );
        let route = format!("<sip:{internal};lr;{FLOW_PARAM}{token}>");
        let bytes = with_route_on_top(&t.bytes, &route)?;
        self.stats.via_owner += 1;
        Some(Transmit {
            flow: Flow::internal(internal),
            bytes,
        })
    }

    /// Whether internal SIP from `remote` may be accepted (a live peer's internal address).
    pub(super) fn is_peer(&self, remote: SocketAddr) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|c| c.by_addr.contains_key(&remote))
    }

    /// `;kpo=…` for this replica's Record-Route, in a cluster.
    pub(super) fn owner_param(&self) -> &str {
        self.cluster.as_ref().map_or("", |c| c.owner_param.as_str())
    }

    /// A request from a peer whose top Route names one of this replica's flows (`kpf`): passed
    /// on statelessly. Returns `false` when it has no such Route (handle it normally).
    pub(super) fn hop_request(&mut self, flow: Flow, request: &Request) -> bool {
        let Some(cluster) = &self.cluster else {
            return false;
        };
        let Some(top) = request
            .headers
            .get_raw(&Name::ROUTE)
            .next()
            .and_then(|line| split_values(line).into_iter().next())
        else {
            return false;
        };
        let Some(token) = param(top, FLOW_PARAM) else {
            return false;
        };
        let target = match cluster.codec.open_flow(token) {
            Some(t) if t.replica == self.config.replica && !t.flow.is_internal() => t.flow,
            _ => {
                self.stats.drop(DropReason::BadHop);
                return true;
            }
        };
        self.pass_on(flow, request, target, 1);
        true
    }

    /// An in-dialog request for a call this replica does not hold, whose Record-Route names a
    /// live peer as the call's owner: passed to the owner. `false` when this replica must handle
    /// it itself.
    pub(super) fn hop_to_owner(&mut self, flow: Flow, request: &Request, e: &Essentials) -> bool {
        if e.to.tag.is_none() || flow.is_internal() || self.calls.has_call_id(e.call_id.as_str()) {
            return false;
        }
        let Some(cluster) = &self.cluster else {
            return false;
        };
        let owner = request
            .headers
            .get_raw(&Name::ROUTE)
            .flat_map(|line| split_values(line))
            .take_while(|v| self.names_us(v))
            .find_map(|v| param(v, OWNER_PARAM))
            .and_then(|t| cluster.codec.open_replica(t));
        let Some(internal) = owner.and_then(|o| cluster.live.get(&o).copied()) else {
            return false;
        };
        self.pass_on(flow, request, Flow::internal(internal), 0);
        true
    }

    /// The stateless hop: `request` (which came on `from`) goes out on `to` with a Via whose
    /// branch names `from`, after popping `pop_routes` Routes.
    fn pass_on(&mut self, from: Flow, request: &Request, to: Flow, pop_routes: usize) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let max_forwards = request
            .header(&Name::MAX_FORWARDS)
            .and_then(|v| v.trim().parse::<u32>().ok());
        if max_forwards == Some(0) {
            self.stats.drop(DropReason::BadHop);
            return;
        }
        let incoming = forward::top_branch(&request.headers).unwrap_or_default();
        let back = cluster.codec.flow(
            &FlowToken {
                replica: self.config.replica.clone(),
                flow: from,
            },
            &hash8(&incoming),
        );
        let via = format!(
            "SIP/2.0/{} {};branch={HOP_BRANCH}{back}",
            super::proxy::transport_token(to.transport),
            self.advertise_for(to.transport)
        );
        let bytes = forward::request(
            request,
            &Forward {
                uri: None,
                via: &via,
                record_route: None,
                pop_routes,
                body: None,
                strip_proxy_auth: false,
                source: Some(from.remote),
            },
        );
        self.stats.hops += 1;
        self.transmits.push_back(Transmit { flow: to, bytes });
    }

    /// A response that is not this replica's to handle as a proxy, by its top Via `branch`:
    /// a stateless hop's (passed back on the flow the branch names), or one of a live peer's
    /// own requests (the peer sent it straight to a phone whose flow's owner had died, and the
    /// phone answered through the load balancer, which led here). Returns `false` for this
    /// replica's own responses.
    pub(super) fn cluster_response(&mut self, now: Now, branch: &str, response: &Response) -> bool {
        if let Some(token) = branch.strip_prefix(HOP_BRANCH) {
            self.hop_response(now, token, response);
            return true;
        }
        let Some(cluster) = &self.cluster else {
            return false;
        };
        let peer = branch
            .strip_prefix(PROXY_BRANCH)
            .and_then(|rest| u32::from_str_radix(rest.split('-').next()?, 16).ok())
            .filter(|salt| *salt != self.tag_salt)
            .and_then(|salt| cluster.by_salt.get(&salt).cloned());
        match peer {
            Some(peer) => {
                self.pass_to_peer(&peer, response);
                true
            }
            None => false,
        }
    }

    /// Hands `response` unchanged to live peer `peer`, which forwards it itself.
    fn pass_to_peer(&mut self, peer: &str, response: &Response) {
        let internal = self
            .cluster
            .as_ref()
            .and_then(|c| c.live.get(peer).copied());
        match internal {
            Some(internal) => {
                self.stats.hops += 1;
                self.transmits.push_back(Transmit {
                    flow: Flow::internal(internal),
                    bytes: forward::response_unchanged(response),
                });
            }
            None => self.stats.drop(DropReason::BadHop),
        }
    }

    /// A response through a stateless hop (`token`: its branch after the prefix): passed back on
    /// the flow the token names, or to the hop when it is another replica.
    fn hop_response(&mut self, now: Now, token: &str, response: &Response) {
        let back = self.cluster.as_ref().and_then(|c| c.codec.open_flow(token));
        let Some(back) = back else {
            return self.stats.drop(DropReason::BadHop);
        };
        if back.replica != self.config.replica {
            // The phone's path moved: the hop passes it back itself.
            return self.pass_to_peer(&back.replica, response);
        }
        let Some(bytes) = forward::response(response, None) else {
            return self.stats.drop(DropReason::BadHop);
        };
        self.stats.hops += 1;
        let internal = self.config.cluster.as_ref().map(|c| c.internal);
        if back.flow.is_internal() && Some(back.flow.remote) == internal {
            // The hop's upstream is this replica itself (the phone answered here): go on here.
            if let Ok(crate::message::Message::Response(next)) = crate::message::parse(bytes) {
                self.handle_response(now, next);
            }
            return;
        }
        self.transmits.push_back(Transmit {
            flow: back.flow,
            bytes,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::NonceConfig;
    use crate::ban::BanConfig;
    use crate::endpoint::EndpointConfig;
    use crate::message::Message;
    use crate::registrar::RegistrarConfig;
    use kubepbx_api::Transport;
    use kubepbx_api::time::UnixMillis;
    use std::time::Instant;

    const PHONE: &str = "198.51.100.7:40000";

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn internal(id: &str) -> SocketAddr {
        match id {
            "b" => addr("10.0.0.2:5070"),
            _ => addr("10.0.0.3:5070"),
        }
    }

    fn replica(id: &str, key: [u8; 32]) -> Endpoint {
        let mut ep = Endpoint::new(EndpointConfig {
            replica: id.into(),
            default_domain: "pbx.example.com".into(),
            advertise: "192.0.2.1:5060".into(),
            advertise_tls: None,
            anchor_media: false,
            local_hosts: Vec::new(),
            registrar: RegistrarConfig::default(),
            bans: BanConfig::default(),
            nonce: NonceConfig::default(),
            secret: key,
            instance: 1,
            challenge: Vec::new(),
            cluster: Some(ClusterConfig {
                internal: internal(id),
                key,
            }),
        });
        ep.set_peers([
            ("b".to_owned(), internal("b")),
            ("c".to_owned(), internal("c")),
        ]);
        ep
    }

    fn binding_on_b() -> Binding {
        Binding {
            domain: "pbx.example.com".into(),
            user: "1002".into(),
            id: "x".into(),
            contact: format!("sip:1002@{PHONE}").into(),
            q: None,
            source: addr(PHONE),
            transport: Transport::Udp,
            replica: "b".into(),
            flow: 0,
            user_agent: None,
            instance: None,
            reg_id: None,
            call_id: "r".into(),
            cseq: 1,
            registered_at: UnixMillis(0),
            expires_at: UnixMillis(u64::MAX),
            nat: false,
        }
    }

    fn now() -> Now {
        Now {
            mono: Instant::now(),
            wall: UnixMillis(1_795_000_000_000),
        }
    }

    const BYE: &str = "BYE sip:1002@198.51.100.7:40000 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-kp1-2-3\r\n\
        Max-Forwards: 70\r\nFrom: <sip:1001@pbx.example.com>;tag=a\r\n\
        To: <sip:1002@pbx.example.com>;tag=b\r\nCall-ID: c1\r\nCSeq: 2 BYE\r\n\
        Content-Length: 0\r\n\r\n";

    #[test]
    fn a_request_for_a_peer_s_flow_goes_through_the_peer_and_back() {
        let key = [9; 32];
        let mut c = replica("c", key);
        let mut b = replica("b", key);
        let flow = c
            .flow_to(&binding_on_b())
            .unwrap_or_else(|| panic!("reachable"));
        assert!(is_remote(flow.id));
        c.transmits.push_back(Transmit {
            flow,
            bytes: Bytes::from_static(BYE.as_bytes()),
        });
        let out = c.poll_transmit().unwrap_or_else(|| panic!("sent"));
        assert_eq!(out.flow, Flow::internal(internal("b")));
        let text = String::from_utf8_lossy(&out.bytes).into_owned();
        assert!(
            text.contains("\r\nRoute: <sip:10.0.0.2:5070;lr;kpf="),
            "{text}"
        );

        // b passes it on to the phone, statelessly, with its own Via on top.
        b.handle_packet(now(), Flow::internal(internal("c")), out.bytes);
        let to_phone = b.poll_transmit().unwrap_or_else(|| panic!("passed on"));
        assert_eq!(to_phone.flow, Flow::udp(addr(PHONE)));
        let Ok(Message::Request(req)) = crate::message::parse(to_phone.bytes) else {
            panic!("a request");
        };
        assert!(
            req.header(&Name::ROUTE).is_none(),
            "the kpf Route is popped"
        );
        let via = req
            .header(&Name::VIA)
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(
            via.starts_with("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-kps"),
            "{via}"
        );

        // The phone's 200 goes back to c's internal address with b's Via popped.
        let top = via.split(',').next().unwrap_or_default().trim().to_owned();
        let ok = format!(
            "SIP/2.0 200 OK\r\nVia: {top}\r\n\
             Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-kp1-2-3\r\n\
             From: <sip:1001@pbx.example.com>;tag=a\r\nTo: <sip:1002@pbx.example.com>;tag=b\r\n\
             Call-ID: c1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
        );
        b.handle_packet(now(), Flow::udp(addr(PHONE)), Bytes::from(ok.clone()));
        let back = b.poll_transmit().unwrap_or_else(|| panic!("passed back"));
        assert_eq!(back.flow, Flow::internal(internal("c")));
        assert!(!String::from_utf8_lossy(&back.bytes).contains("kps"));

        // A forged hop branch or a stranger on the internal socket gets nothing.
        let forged = ok.replace(
            &top,
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-kpsAAAAAAAAAAAAAAAA",
        );
        b.handle_packet(now(), Flow::udp(addr(PHONE)), Bytes::from(forged));
        assert!(b.poll_transmit().is_none());
        b.handle_packet(
            now(),
            Flow::internal(addr("10.9.9.9:5070")),
            Bytes::from_static(BYE.as_bytes()),
        );
        assert!(b.poll_transmit().is_none());
        let dropped = |r: DropReason| {
            let i = DropReason::ALL
                .iter()
                .position(|x| *x == r)
                .unwrap_or_default();
            b.stats().dropped[i]
        };
        assert_eq!(dropped(DropReason::BadHop), 1);
        assert_eq!(dropped(DropReason::NotAReplica), 1);

        // Another cluster's token is refused by the owner.
        let mut other = replica("c", [1; 32]);
        let flow = other
            .flow_to(&binding_on_b())
            .unwrap_or_else(|| panic!("reachable"));
        other.transmits.push_back(Transmit {
            flow,
            bytes: Bytes::from_static(BYE.as_bytes()),
        });
        let foreign = other.poll_transmit().unwrap_or_else(|| panic!("sent"));
        b.handle_packet(now(), Flow::internal(internal("c")), foreign.bytes);
        assert!(b.poll_transmit().is_none());
    }

    #[test]
    fn a_dead_owner_s_udp_phone_is_tried_directly() {
        let mut c = replica("c", [9; 32]);
        c.set_peers([]);
        assert_eq!(c.flow_to(&binding_on_b()), Some(Flow::udp(addr(PHONE))));
        let tcp = Binding {
            transport: Transport::Tcp,
            flow: 7,
            ..binding_on_b()
        };
        assert_eq!(c.flow_to(&tcp), None, "a stream flow dies with its owner");
    }

    #[test]
    fn a_response_for_a_peer_s_own_request_goes_back_to_the_peer() {
        // b sent a request straight to a phone (its flow's owner had died); the phone's answer
        // came back through the load balancer to c.
        let key = [9; 32];
        let mut c = replica("c", key);
        let response = |sender: &str| {
            format!(
                "SIP/2.0 180 Ringing\r\n\
                 Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-kp{:x}-2-3\r\n\
                 From: <sip:1001@pbx.example.com>;tag=a\r\nTo: <sip:1002@pbx.example.com>;tag=b\r\n\
                 Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
                super::super::tag_salt(&key, sender)
            )
        };
        c.handle_packet(now(), Flow::udp(addr(PHONE)), Bytes::from(response("b")));
        let back = c.poll_transmit().unwrap_or_else(|| panic!("passed to b"));
        assert_eq!(back.flow, Flow::internal(internal("b")));
        assert!(String::from_utf8_lossy(&back.bytes).starts_with("SIP/2.0 180 Ringing\r\n"));

        // Its own (stray) responses, and those of replicas that are not live peers, stay here.
        c.handle_packet(now(), Flow::udp(addr(PHONE)), Bytes::from(response("c")));
        c.handle_packet(now(), Flow::udp(addr(PHONE)), Bytes::from(response("x")));
        c.set_peers([]);
        c.handle_packet(now(), Flow::udp(addr(PHONE)), Bytes::from(response("b")));
        assert!(c.poll_transmit().is_none());
    }

    #[test]
    fn params_and_routes() {
        assert_eq!(
            param("<sip:10.0.0.1:5070;lr;kpf=AbC-_9>", FLOW_PARAM),
            Some("AbC-_9")
        );
        assert_eq!(param("<sip:h;kpo=x;lr>", OWNER_PARAM), Some("x"));
        assert_eq!(param("<sip:h;lr>", OWNER_PARAM), None);
        let out = with_route_on_top(
            &Bytes::from_static(b"BYE sip:a SIP/2.0\r\nVia: x\r\n\r\n"),
            "<sip:r;lr>",
        );
        assert_eq!(
            out.as_deref(),
            Some(&b"BYE sip:a SIP/2.0\r\nRoute: <sip:r;lr>\r\nVia: x\r\n\r\n"[..])
        );
        assert!(is_remote(REMOTE | 5));
        assert!(!is_remote(Flow::INTERNAL));
        assert!(!is_remote(7));
    }
}
