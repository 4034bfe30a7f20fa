//! The call path: a record-routing, transaction-stateful proxy (RFC 3261 §16) between the
//! extensions of this PBX.
//!
//! An initial INVITE is authenticated like a REGISTER (407 instead of 401, same failure
//! reasons), its Request-URI names the callee by number, and it is forked in parallel to every
//! live binding of the callee, each on the flow that binding registered from (so phones behind
//! NAT are reached at their real address). Provisional responses go upstream as they come; the
//! first 2xx wins and the other branches are cancelled; when every branch failed the best
//! failure goes upstream (6xx first, else the lowest code). CANCEL from the caller cancels every
//! pending branch. Requests inside the dialog (ACK, BYE, re-INVITE, UPDATE, INFO) come back
//! through this proxy because of its `Record-Route` and are sent on the other party's flow.
//!
//! With `anchor_media`, every SDP goes through the media relay first (see `media.rs`), so
//! both phones send their audio to the relay, whatever addresses their SDP claimed.

use super::auth_flow::AuthKind;
use super::events::{CallSummary, EndReason};
use super::media::{
    MediaFailure, Parked, PeerMedia, RecordRequest, RelaySdp, Role, SdpFor, Side, sdp_of,
};
use super::{Endpoint, EndpointEvent, Now, Reply};
use crate::builder::ResponseBuilder;
use crate::client::Received;
use crate::flow::{Flow, Transmit};
use crate::forward::{self, Forward, split_values};
use crate::message::{Essentials, Message, Method, Request, Response, parse};
use crate::transaction::TxKey;
use bytes::Bytes;
use ezk_sip_types::Name;
use ezk_sip_types::uri::{SipUri, SipUriUserPart};
use kubepbx_api::Transport;
use kubepbx_api::extension::RecordingPolicy;
use kubepbx_api::records::UserKey;
use kubepbx_api::time::UnixMillis;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

/// Timer C (RFC 3261 §16.6 step 11): a call nobody answers is given up after this long.
pub const TIMER_C: Duration = Duration::from_secs(180);

/// Where a call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// Forked; waiting for an answer.
    Ringing,
    /// A callee answered.
    Answered,
}

/// One branch of a forked INVITE.
#[derive(Debug)]
struct Branch {
    id: String,
    /// The INVITE as sent on this branch (for CANCEL and ACK).
    invite: Request,
    flow: Flow,
    done: bool,
}

/// How the PBX itself ends an unanswered call: the caller gets `code` whatever the cancelled
/// branches answer.
#[derive(Debug, Clone, Copy)]
struct Ending {
    reason: EndReason,
    code: u16,
    phrase: &'static str,
}

/// What the PBX needs to end an answered call itself: the callee's side of the dialog.
#[derive(Debug)]
struct Dialog {
    /// The `To` of the 2xx (with the callee's tag).
    to: String,
    /// The callee's remote target (Contact of the 2xx, updated by target refreshes).
    contact: String,
}

/// One call through this proxy.
#[derive(Debug)]
pub struct Call {
    /// Our number for the call (internal).
    pub id: u64,
    /// The call's id in the API and logs: `<replica>-<unix seconds>-<number>`.
    pub name: String,
    /// The SIP Call-ID.
    pub sip_call_id: String,
    /// Who calls.
    pub caller: UserKey,
    /// Who is called.
    pub callee: UserKey,
    /// Ringing or answered.
    pub state: CallState,
    /// When the INVITE arrived.
    pub started_at: UnixMillis,
    /// When the callee answered.
    pub answered_at: Option<UnixMillis>,
    caller_tag: String,
    caller_flow: Flow,
    callee_flow: Option<Flow>,
    invite: Request,
    uas: Reply,
    branches: Vec<Branch>,
    best: Option<Response>,
    /// Where the INVITE goes once its SDP is rewritten: (contact, flow) per live binding.
    targets: Vec<(String, Flow)>,
    /// The media relay session of this call.
    session: String,
    timer_c: Instant,
    /// Set when the PBX ends the call before an answer (Timer C, admin, media timeout).
    ending: Option<Ending>,
    /// The callee's side of the dialog, once answered.
    dialog: Option<Dialog>,
    /// The caller's remote target (Contact of the INVITE, updated by target refreshes).
    caller_contact: String,
    /// The INVITE carried no SDP while media is anchored: the callee's answer carries the
    /// offer, and the caller's ACK the answer.
    late_offer: bool,
    /// The highest CSeq seen from each party in this dialog.
    caller_cseq: u32,
    callee_cseq: u32,
}

impl Call {
    /// The media relay session, when this proxy anchors media.
    pub fn session(&self) -> Option<&str> {
        (!self.session.is_empty()).then_some(self.session.as_str())
    }
}

/// A request forwarded inside a dialog, waiting for its response.
#[derive(Debug)]
struct Relay {
    upstream: Reply,
    /// The forwarded request when it is a re-INVITE (a non-2xx answer is ACKed here).
    invite: Option<Request>,
    /// Set when the forwarded request carried an SDP offer: its 2xx answer goes to the relay,
    /// from this side.
    /// (session, responding side, its address: where the request was sent).
    answer_from: Option<(String, Side, std::net::IpAddr)>,
}

/// The proxy's state: calls and forwarded transactions.
#[derive(Debug, Default)]
pub(super) struct Calls {
    next_id: u64,
    calls: HashMap<u64, Call>,
    by_call_id: HashMap<String, u64>,
    by_uas: HashMap<TxKey, u64>,
    /// Our branch → (call, branch index) for initial INVITEs.
    branches: HashMap<String, (u64, usize)>,
    /// Our branch → upstream transaction for in-dialog requests.
    relays: HashMap<String, Relay>,
    /// Branches of requests the proxy sent itself (BYEs ending a call): their responses end
    /// here.
    own: HashSet<String>,
    /// Timer C deadlines, earliest first. Entries of calls answered or gone are skipped when
    /// they come up (at most one needless wake-up each), so nothing scans every call.
    timer_c: BinaryHeap<Reverse<(Instant, u64)>>,
}

impl Calls {
    pub(super) fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether a call with this SIP Call-ID goes through this replica.
    pub(super) fn has_call_id(&self, call_id: &str) -> bool {
        self.by_call_id.contains_key(call_id)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Call> {
        self.calls.values()
    }

    pub(super) fn next_timer_c(&self) -> Option<Instant> {
        self.timer_c.peek().map(|Reverse((at, _))| *at)
    }

    /// Calls whose Timer C is due at `now` and still ringing.
    fn due_timer_c(&mut self, now: Instant) -> Vec<u64> {
        let mut due = Vec::new();
        while let Some(Reverse((at, id))) = self.timer_c.peek().copied() {
            if at > now {
                break;
            }
            self.timer_c.pop();
            if self
                .calls
                .get(&id)
                .is_some_and(|c| c.state == CallState::Ringing && c.timer_c == at)
            {
                due.push(id);
            }
        }
        due
    }

    fn remove(&mut self, id: u64) -> Option<Call> {
        let call = self.calls.remove(&id)?;
        self.by_call_id.remove(&call.sip_call_id);
        self.by_uas.remove(&call.uas.key);
        for b in &call.branches {
            self.branches.remove(&b.id);
        }
        // Relays stay: a BYE's transaction completes after its call is gone.
        Some(call)
    }
}

fn user_of(uri: &SipUri) -> String {
    match &uri.user_part {
        SipUriUserPart::User(u) => u.to_string(),
        _ => String::new(),
    }
}

pub(super) fn transport_token(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
        Transport::Tls => "TLS",
        Transport::Ws => "WS",
        Transport::Wss => "WSS",
    }
}

impl Endpoint {
    /// Where phones reach this replica over `transport`: the TLS port for TLS, else the SIP one.
    pub(super) fn advertise_for(&self, transport: Transport) -> &str {
        match (&self.config.advertise_tls, transport) {
            (Some(tls), Transport::Tls) => tls,
            _ => &self.config.advertise,
        }
    }

    /// Whether a `Via` or `Route` value names this replica (on any of its SIP ports).
    pub(super) fn names_us(&self, value: &str) -> bool {
        value.contains(&self.config.advertise)
            || self
                .config
                .advertise_tls
                .as_deref()
                .is_some_and(|tls| value.contains(tls))
    }

    /// Our Via for a request sent on `flow` with `branch`.
    fn via(&self, flow: &Flow, branch: &str) -> String {
        format!(
            "SIP/2.0/{} {};branch={branch}",
            transport_token(flow.transport),
            self.advertise_for(flow.transport)
        )
    }

    /// Our `Record-Route` for a call between `caller` and `callee` transports. When they
    /// differ the proxy record-routes twice (RFC 5658): the top entry, which the callee sends
    /// to, names the callee's transport; the second, which the caller sends to, the caller's.
    fn record_route(&self, caller: Transport, callee: Transport) -> String {
        let owner = self.owner_param();
        let entry = |t: Transport| match t {
            Transport::Udp => format!("<sip:{};lr{owner}>", self.config.advertise),
            other => format!(
                "<sip:{};transport={};lr{owner}>",
                self.advertise_for(other),
                other.as_str()
            ),
        };
        if caller == callee {
            entry(callee)
        } else {
            format!("{}, {}", entry(callee), entry(caller))
        }
    }

    fn new_branch(&mut self, call: u64) -> String {
        self.tag_counter += 1;
        format!(
            "z9hG4bK-kp{:x}-{call:x}-{:x}",
            self.tag_salt, self.tag_counter
        )
    }

    /// Sends prebuilt response bytes within the request's server transaction.
    fn respond_raw(&mut self, now: Now, reply: &Reply, code: u16, bytes: Bytes) {
        self.stats.response(code);
        self.txs
            .on_response(&reply.key, code, bytes.clone(), now.mono);
        self.transmits.push_back(Transmit {
            flow: reply.flow,
            bytes,
        });
    }

    /// How many of the topmost `Route` values name this proxy (RFC 3261 §16.4: they are
    /// removed before forwarding; phones with an outbound proxy preload one, and a double
    /// record-route puts two in every request of the dialog).
    fn our_routes(&self, request: &Request) -> usize {
        request
            .headers
            .get_raw(&Name::ROUTE)
            .flat_map(|line| split_values(line))
            .take_while(|v| self.names_us(v))
            .count()
    }

    /// A request that names this proxy in one of its Vias has been here before.
    fn is_loop(&self, request: &Request) -> bool {
        request.headers.get_raw(&Name::VIA).any(|line| {
            split_values(line).iter().any(|v| {
                self.names_us(v)
                        && v.contains("branch=z9hG4bK-kp")
                        // A stateless hop between replicas is not a loop.
                        && !v.contains(super::cluster::HOP_BRANCH)
            })
        })
    }

    /// An INVITE without a To tag: a new call.
    pub(super) fn handle_invite(
        &mut self,
        now: Now,
        reply: &Reply,
        request: &Request,
        e: &Essentials,
    ) {
        let source = reply.source.remote;
        if e.max_forwards == Some(0) {
            let b = ResponseBuilder::new(request, source, 483, "Too Many Hops");
            return self.respond(now, reply, b);
        }
        if self.is_loop(request) {
            let b = ResponseBuilder::new(request, source, 482, "Loop Detected");
            return self.respond(now, reply, b);
        }
        let from = &e.from.uri.uri;
        let from_host = from.host_port.host.to_string().to_ascii_lowercase();
        let Some(domain) = self.resolve_domain(&from_host) else {
            let b = ResponseBuilder::new(request, source, 403, "Domain Not Served");
            return self.respond(now, reply, b);
        };
        let caller = UserKey::new(domain.clone(), user_of(from));
        let Some((auth_key, _record)) =
            self.authenticate(now, reply, request, &domain, &caller, AuthKind::Proxy)
        else {
            return;
        };
        if auth_key != caller {
            let b = ResponseBuilder::new(request, source, 403, "From Does Not Match Credentials");
            return self.respond(now, reply, b);
        }
        let Some(uri) = &request.uri else {
            let b = ResponseBuilder::new(request, source, 416, "Unsupported URI Scheme");
            return self.respond(now, reply, b);
        };
        let target_host = uri.host_port.host.to_string().to_ascii_lowercase();
        let callee = match self.resolve_domain(&target_host) {
            Some(d) => UserKey::new(d, user_of(uri)),
            None => {
                let b = ResponseBuilder::new(request, source, 404, "Not Found");
                return self.respond(now, reply, b);
            }
        };
        match self.location.extension(&callee) {
            None => {
                let b = ResponseBuilder::new(request, source, 404, "Not Found");
                return self.respond(now, reply, b);
            }
            Some(r) if !r.enabled => {
                let b = ResponseBuilder::new(request, source, 480, "Temporarily Unavailable");
                return self.respond(now, reply, b);
            }
            Some(_) => {}
        }
        let bindings: Vec<_> = self
            .location
            .bindings(&callee)
            .iter()
            .filter(|c| c.is_live(now.wall))
            .map(|c| std::sync::Arc::clone(&c.binding))
            .collect();
        let targets: Vec<(String, Flow)> = bindings
            .iter()
            .filter_map(|b| Some((b.contact.to_string(), self.flow_to(b)?)))
            .collect();
        if targets.is_empty() {
            let b = ResponseBuilder::new(request, source, 480, "Temporarily Unavailable");
            return self.respond(now, reply, b);
        }
        let trying = ResponseBuilder::new(request, source, 100, "Trying");
        self.respond(now, reply, trying);

        self.calls.next_id += 1;
        let id = self.calls.next_id;
        let caller_tag = e.from.tag.as_deref().unwrap_or_default().to_owned();
        let session = if self.config.anchor_media {
            format!("{};{caller_tag}", e.call_id)
        } else {
            String::new()
        };
        // Without a Contact (a broken phone), the From URI is the best guess of a target.
        let caller_contact = [Name::CONTACT, Name::FROM]
            .iter()
            .find_map(|n| request.header(n).and_then(|v| forward::contact_uri(v)))
            .unwrap_or_default()
            .to_owned();
        let call = Call {
            id,
            name: format!("{}-{}-{id}", self.config.replica, now.wall.0 / 1000),
            sip_call_id: e.call_id.to_string(),
            caller: caller.clone(),
            callee: callee.clone(),
            state: CallState::Ringing,
            started_at: now.wall,
            answered_at: None,
            caller_tag,
            caller_flow: reply.flow,
            callee_flow: None,
            invite: request.clone(),
            uas: reply.clone(),
            branches: Vec::new(),
            best: None,
            targets,
            session: session.clone(),
            timer_c: now.mono + TIMER_C,
            ending: None,
            dialog: None,
            caller_contact,
            late_offer: self.config.anchor_media
                && sdp_of(&request.headers, &request.body).is_none(),
            caller_cseq: e.cseq.seq,
            callee_cseq: 0,
        };
        self.calls.by_call_id.insert(call.sip_call_id.clone(), id);
        self.calls.by_uas.insert(reply.key, id);
        self.calls.timer_c.push(Reverse((call.timer_c, id)));
        let name = call.name.clone();
        self.calls.calls.insert(id, call);
        self.stats.calls_started += 1;
        self.events.push_back(EndpointEvent::CallStarted {
            id: name.clone(),
            caller: caller.clone(),
            callee: callee.clone(),
        });
        match sdp_of(&request.headers, &request.body).filter(|_| self.config.anchor_media) {
            Some(sdp) => {
                let record = self.recording_of(&name, &caller, &callee);
                let source = reply.source.remote.ip();
                let peer = self.calls.calls.get(&id).map_or(PeerMedia::Rtp, |c| {
                    PeerMedia::of_all(c.targets.iter().map(|(_, flow)| flow.transport))
                });
                let sdp = SdpFor {
                    session,
                    side: Side::Caller,
                    sdp,
                    source,
                    role: Role::Offer(record, peer),
                };
                self.media_request(Parked::Fork { call: id }, sdp);
            }
            None => self.fork(now, id, None),
        }
    }

    /// A recording request when either party's extension records every call.
    fn recording_of(
        &self,
        name: &str,
        caller: &UserKey,
        callee: &UserKey,
    ) -> Option<RecordRequest> {
        let always = |k: &UserKey| {
            self.location
                .extension(k)
                .is_some_and(|r| r.recording == RecordingPolicy::Always)
        };
        (always(caller) || always(callee)).then(|| RecordRequest {
            id: format!("{name}-{}-{}", caller.user, callee.user),
            caller: caller.user.clone(),
            callee: callee.user.clone(),
        })
    }

    /// Sends the INVITE to every target, with the relay's offer (of the kind the target's
    /// transport takes) as body when given.
    pub(super) fn fork(&mut self, now: Now, id: u64, sdp: Option<RelaySdp>) {
        let Some(call) = self.calls.calls.get_mut(&id) else {
            return;
        };
        let targets = std::mem::take(&mut call.targets);
        let request = call.invite.clone();
        let (caller_transport, caller_remote) =
            (call.caller_flow.transport, call.caller_flow.remote);
        let pop_routes = self.our_routes(&request);
        let mut branches = Vec::with_capacity(targets.len());
        for (contact, flow) in targets {
            let branch = self.new_branch(id);
            let via = self.via(&flow, &branch);
            let record_route = self.record_route(caller_transport, flow.transport);
            let bytes = forward::request(
                &request,
                &Forward {
                    uri: Some(&contact),
                    via: &via,
                    record_route: Some(&record_route),
                    pop_routes,
                    body: sdp.as_ref().map(|s| {
                        (
                            "application/sdp",
                            s.for_transport(flow.transport).as_bytes(),
                        )
                    }),
                    strip_proxy_auth: true,
                    source: Some(caller_remote),
                },
            );
            let Ok(Message::Request(sent)) = parse(bytes.clone()) else {
                continue;
            };
            let t = self
                .clients
                .send(branch.clone(), true, flow, bytes, now.mono);
            self.transmits.push_back(t);
            self.calls
                .branches
                .insert(branch.clone(), (id, branches.len()));
            branches.push(Branch {
                id: branch,
                invite: sent,
                flow,
                done: false,
            });
        }
        if let Some(call) = self.calls.calls.get_mut(&id) {
            call.branches = branches;
        }
        self.finish_if_done(now, id);
    }

    /// The relay refused the caller's offer: the call ends before it started.
    pub(super) fn refuse_call(&mut self, now: Now, id: u64, failure: &MediaFailure) {
        let Some(call) = self.calls.remove(id) else {
            return;
        };
        let b = failure.response(&call.invite, call.uas.source.remote);
        self.respond(now, &call.uas, b);
        self.call_ended(now, call, failure.code, EndReason::MediaRefused);
    }

    /// Releases the call's media and reports it ended.
    fn call_ended(&mut self, now: Now, call: Call, code: u16, reason: EndReason) {
        self.media_delete(call.session.clone());
        self.stats.call_ended(reason, call.answered_at.is_some());
        let session = (!call.session.is_empty()).then_some(call.session);
        self.events
            .push_back(EndpointEvent::CallEnded(Box::new(CallSummary {
                id: call.name,
                caller: call.caller,
                callee: call.callee,
                started_at: call.started_at,
                answered_at: call.answered_at,
                ended_at: now.wall,
                code,
                reason,
                session,
            })));
    }

    /// A response from downstream.
    pub(super) fn handle_response(&mut self, now: Now, response: Response) {
        let Some(branch) = forward::top_branch(&response.headers) else {
            return self.stats.drop(super::DropReason::StrayResponse);
        };
        if self.cluster.is_some() && self.cluster_response(now, &branch, &response) {
            return;
        }
        let is_cancel = response
            .header(&Name::CSEQ)
            .is_some_and(|c| c.ends_with("CANCEL"));
        if is_cancel {
            let key = format!("{branch}|CANCEL");
            let _ = self
                .clients
                .on_response(&key, response.code, now.mono, || None);
            return;
        }
        if self.calls.own.contains(&branch) {
            let (received, _) = self
                .clients
                .on_response(&branch, response.code, now.mono, || None);
            if let Received::Absorbed(resend) = received {
                self.transmits.extend(resend);
            }
            if response.code >= 200 {
                self.calls.own.remove(&branch);
            }
            return;
        }
        if let Some(relay) = self.calls.relays.get(&branch) {
            let upstream = relay.upstream.clone();
            let answer_from = relay.answer_from.clone();
            let code = response.code;
            let (received, ack) = self.clients.on_response(&branch, code, now.mono, || {
                relay
                    .invite
                    .as_ref()
                    .filter(|_| code >= 300)
                    .map(|invite| forward::ack(invite, &response))
            });
            self.transmits.extend(ack);
            if let Received::Absorbed(resend) = received {
                self.transmits.extend(resend);
                return;
            }
            if received != Received::Deliver || response.code == 100 {
                return;
            }
            if response.code >= 200 {
                self.calls.relays.remove(&branch);
            }
            if let Some((session, side, source)) = answer_from
                && (200..300).contains(&response.code)
                && let Some(sdp) = sdp_of(&response.headers, &response.body)
            {
                let sdp = SdpFor {
                    session,
                    side,
                    sdp,
                    source,
                    role: Role::Answer,
                };
                self.media_request(Parked::RelayResponse { upstream, response }, sdp);
                return;
            }
            self.forward_relay_response(now, &upstream, &response, None);
            return;
        }
        let Some(&(call_id, index)) = self.calls.branches.get(&branch) else {
            return self.stats.drop(super::DropReason::StrayResponse);
        };
        let code = response.code;
        let (received, ack) = {
            let Some(call) = self.calls.calls.get(&call_id) else {
                return;
            };
            let invite = &call.branches[index].invite;
            self.clients.on_response(&branch, code, now.mono, || {
                (code >= 300).then(|| forward::ack(invite, &response))
            })
        };
        if let Some(ack) = ack {
            self.transmits.push_back(ack);
        }
        match received {
            Received::Absorbed(resend) => {
                self.transmits.extend(resend);
                return;
            }
            Received::Unknown if (200..300).contains(&code) => {
                // A 2xx retransmission: forward it upstream as is (RFC 3261 §16.7 step 10).
                if let Some(call) = self.calls.calls.get(&call_id)
                    && let Some(bytes) = forward::response(&response, None)
                {
                    self.transmits.push_back(Transmit {
                        flow: call.uas.flow,
                        bytes,
                    });
                }
                return;
            }
            Received::Unknown => return,
            Received::Deliver => {}
        }
        if code == 100 {
            return;
        }
        if self.config.anchor_media
            && code < 300
            && let Some(sdp) = sdp_of(&response.headers, &response.body)
            && let Some(call) = self.calls.calls.get(&call_id)
            && call.state == CallState::Ringing
        {
            let session = call.session.clone();
            let source = call.branches[index].flow.remote.ip();
            // With a late offer, the callee's SDP is the offer (and may ask for recording).
            let role = if call.late_offer {
                Role::Offer(
                    self.recording_of(&call.name, &call.caller, &call.callee),
                    PeerMedia::of(call.caller_flow.transport),
                )
            } else {
                Role::Answer
            };
            let parked = Parked::BranchResponse {
                call: call_id,
                index,
                response,
            };
            let sdp = SdpFor {
                session,
                side: Side::Callee,
                sdp,
                source,
                role,
            };
            self.media_request(parked, sdp);
            return;
        }
        self.branch_response(now, call_id, index, response, None);
    }

    /// A response of a branch of the initial INVITE, with the relay's SDP when it carried one.
    pub(super) fn branch_response(
        &mut self,
        now: Now,
        call_id: u64,
        index: usize,
        response: Response,
        sdp: Option<&str>,
    ) {
        let code = response.code;
        let body = sdp.map(|s| ("application/sdp", s.as_bytes()));
        let Some(call) = self.calls.calls.get_mut(&call_id) else {
            return;
        };
        if code < 200 {
            if call.state == CallState::Ringing
                && let Some(bytes) = forward::response(&response, body)
            {
                let uas = call.uas.clone();
                self.respond_raw(now, &uas, code, bytes);
            }
            return;
        }
        call.branches[index].done = true;
        if code < 300 {
            if call.state == CallState::Answered {
                // Another branch answered too late; its dialog is not ours to keep.
                return;
            }
            call.state = CallState::Answered;
            call.answered_at = Some(now.wall);
            call.callee_flow = Some(call.branches[index].flow);
            call.dialog = Some(Dialog {
                to: response
                    .header(&Name::TO)
                    .map_or_else(String::new, |t| t.to_string()),
                contact: response
                    .header(&Name::CONTACT)
                    .and_then(|c| forward::contact_uri(c))
                    .map_or_else(
                        || call.branches[index].invite.uri_raw.to_string(),
                        str::to_owned,
                    ),
            });
            let ending = call.ending.map(|e| e.reason);
            let pending: Vec<usize> = (0..call.branches.len())
                .filter(|&i| i != index && !call.branches[i].done)
                .collect();
            let uas = call.uas.clone();
            if let Some(bytes) = forward::response(&response, body) {
                self.respond_raw(now, &uas, code, bytes);
            }
            for i in pending {
                self.cancel_branch(now, call_id, i);
            }
            self.stats.calls_answered += 1;
            if let Some(c) = self.calls.calls.get(&call_id) {
                self.events.push_back(EndpointEvent::CallAnswered {
                    id: c.name.clone(),
                    caller: c.caller.clone(),
                    callee: c.callee.clone(),
                });
            }
            if let Some(reason) = ending {
                // The PBX was ending the call when the callee answered: hang up now.
                self.end_call(now, call_id, reason);
            }
            return;
        }
        let better = match &call.best {
            None => true,
            Some(best) => best.code < 600 && (code >= 600 || code < best.code),
        };
        if better {
            call.best = Some(response);
        }
        self.finish_if_done(now, call_id);
    }

    /// When every branch of an unanswered call has failed, the best failure goes upstream.
    fn finish_if_done(&mut self, now: Now, call_id: u64) {
        let Some(call) = self.calls.calls.get(&call_id) else {
            return;
        };
        if call.state != CallState::Ringing || call.branches.iter().any(|b| !b.done) {
            return;
        }
        let Some(call) = self.calls.remove(call_id) else {
            return;
        };
        let best = if call.ending.is_some() {
            None
        } else {
            call.best.as_ref()
        };
        let code = match best {
            Some(best) => {
                let code = best.code;
                match forward::response(best, None) {
                    Some(bytes) => self.respond_raw(now, &call.uas, code, bytes),
                    None => {
                        let b = ResponseBuilder::new(
                            &call.invite,
                            call.uas.source.remote,
                            code,
                            &best.reason,
                        );
                        self.respond(now, &call.uas, b.to_tag(call.uas.to_tag.clone()));
                    }
                }
                code
            }
            None => {
                let (code, phrase) = call
                    .ending
                    .map_or((408, "Request Timeout"), |e| (e.code, e.phrase));
                let b = ResponseBuilder::new(&call.invite, call.uas.source.remote, code, phrase);
                self.respond(now, &call.uas, b);
                code
            }
        };
        let reason = call
            .ending
            .map_or_else(|| EndReason::of_failure(code), |e| e.reason);
        self.call_ended(now, call, code, reason);
    }

    fn cancel_branch(&mut self, now: Now, call_id: u64, index: usize) {
        let Some(call) = self.calls.calls.get_mut(&call_id) else {
            return;
        };
        let branch = &mut call.branches[index];
        if branch.done {
            return;
        }
        let bytes = forward::cancel(&branch.invite);
        let key = format!("{}|CANCEL", branch.id);
        let flow = branch.flow;
        let t = self.clients.send(key, false, flow, bytes, now.mono);
        self.transmits.push_back(t);
    }

    /// CANCEL from the caller (RFC 3261 §16.10): 200 for the CANCEL, then every pending branch
    /// is cancelled; the 487s they answer end the call.
    pub(super) fn handle_cancel(
        &mut self,
        now: Now,
        reply: &Reply,
        request: &Request,
        e: &Essentials,
    ) {
        let source = reply.source.remote;
        let invite_key = TxKey::for_request(&Method::Invite, e);
        let Some(&call_id) = self.calls.by_uas.get(&invite_key) else {
            let b = ResponseBuilder::new(request, source, 481, "Call/Transaction Does Not Exist");
            return self.respond(now, reply, b);
        };
        let b = ResponseBuilder::new(request, source, 200, "OK");
        self.respond(now, reply, b);
        if self
            .calls
            .calls
            .get(&call_id)
            .is_some_and(|c| c.state == CallState::Ringing)
        {
            self.end_call(now, call_id, EndReason::Cancelled);
        }
    }

    /// A request inside a dialog this proxy record-routed (To tag present).
    pub(super) fn handle_in_dialog(
        &mut self,
        now: Now,
        reply: &Reply,
        request: &Request,
        e: &Essentials,
    ) {
        let source = reply.source.remote;
        let Some(&call_id) = self.calls.by_call_id.get(e.call_id.as_str()) else {
            if request.method != Method::Ack {
                let b =
                    ResponseBuilder::new(request, source, 481, "Call/Transaction Does Not Exist");
                self.respond(now, reply, b);
            }
            return;
        };
        if let Some(call) = self.calls.calls.get_mut(&call_id) {
            call.note_request(request, e);
        }
        if self.config.anchor_media
            && let Some(sdp) = sdp_of(&request.headers, &request.body)
            && let Some(call) = self.calls.calls.get(&call_id)
        {
            let side = if e.from.tag.as_deref() == Some(call.caller_tag.as_str()) {
                Side::Caller
            } else {
                Side::Callee
            };
            let session = call.session.clone();
            let source = source.ip();
            let offer = request.method != Method::Ack;
            let parked = Parked::InDialog {
                call: call_id,
                reply: reply.clone(),
                request: request.clone(),
                offer,
            };
            // The party receiving the rewritten offer: the other one.
            let peer_flow = match side {
                Side::Caller => call.callee_flow,
                Side::Callee => Some(call.caller_flow),
            };
            let role = if offer {
                Role::Offer(
                    None,
                    peer_flow.map_or(PeerMedia::Rtp, |f| PeerMedia::of(f.transport)),
                )
            } else {
                Role::Answer
            };
            let sdp = SdpFor {
                session,
                side,
                sdp,
                source,
                role,
            };
            self.media_request(parked, sdp);
            return;
        }
        self.forward_in_dialog(now, call_id, reply, request, None);
    }

    /// Sends an in-dialog request on the other party's flow, with the relay's SDP when given.
    pub(super) fn forward_in_dialog(
        &mut self,
        now: Now,
        call_id: u64,
        reply: &Reply,
        request: &Request,
        sdp: Option<&str>,
    ) {
        let source = reply.source.remote;
        let Some(call) = self.calls.calls.get(&call_id) else {
            if request.method != Method::Ack {
                let b =
                    ResponseBuilder::new(request, source, 481, "Call/Transaction Does Not Exist");
                self.respond(now, reply, b);
            }
            return;
        };
        let from_caller = request
            .essentials()
            .is_ok_and(|e| e.from.tag.as_deref() == Some(call.caller_tag.as_str()));
        let toward = if from_caller {
            call.callee_flow
        } else {
            Some(call.caller_flow)
        };
        let session = call.session.clone();
        let Some(flow) = toward else {
            if request.method != Method::Ack {
                let b = ResponseBuilder::new(request, source, 481, "Dialog Not Established");
                self.respond(now, reply, b);
            }
            return;
        };
        let pop_routes = self.our_routes(request);
        let branch = self.new_branch(call_id);
        let via = self.via(&flow, &branch);
        let bytes = forward::request(
            request,
            &Forward {
                uri: None,
                via: &via,
                record_route: None,
                pop_routes,
                body: sdp.map(|s| ("application/sdp", s.as_bytes())),
                strip_proxy_auth: false,
                source: Some(source),
            },
        );
        if request.method == Method::Ack {
            self.transmits.push_back(Transmit { flow, bytes });
            return;
        }
        let is_invite = request.method == Method::Invite;
        let sent = match parse(bytes.clone()) {
            Ok(Message::Request(r)) if is_invite => Some(r),
            _ => None,
        };
        let t = self
            .clients
            .send(branch.clone(), is_invite, flow, bytes, now.mono);
        self.transmits.push_back(t);
        let responder = if from_caller {
            Side::Callee
        } else {
            Side::Caller
        };
        let answer_from = (sdp.is_some() && self.config.anchor_media).then_some((
            session,
            responder,
            flow.remote.ip(),
        ));
        self.calls.relays.insert(
            branch,
            Relay {
                upstream: reply.clone(),
                invite: sent,
                answer_from,
            },
        );
        if request.method == Method::Bye
            && let Some(call) = self.calls.remove(call_id)
        {
            let reason = if from_caller {
                EndReason::CallerHangup
            } else {
                EndReason::CalleeHangup
            };
            self.call_ended(now, call, 200, reason);
        }
    }

    /// A response to a request forwarded inside a dialog goes upstream.
    pub(super) fn forward_relay_response(
        &mut self,
        now: Now,
        upstream: &Reply,
        response: &Response,
        sdp: Option<&str>,
    ) {
        let body = sdp.map(|s| ("application/sdp", s.as_bytes()));
        if let Some(bytes) = forward::response(response, body) {
            self.respond_raw(now, upstream, response.code, bytes);
        }
    }

    /// Client transactions that timed out: a branch that never answered counts as 408.
    pub(super) fn client_timeouts(&mut self, now: Now, branches: Vec<String>) {
        for branch in branches {
            if self.calls.relays.remove(&branch).is_some() || self.calls.own.remove(&branch) {
                continue;
            }
            if let Some(&(call_id, index)) = self.calls.branches.get(&branch)
                && let Some(call) = self.calls.calls.get_mut(&call_id)
            {
                call.branches[index].done = true;
                self.finish_if_done(now, call_id);
            }
        }
    }

    /// Timer C: unanswered calls past their time are cancelled.
    pub(super) fn expire_calls(&mut self, now: Now) {
        for id in self.calls.due_timer_c(now.mono) {
            if let Some(call) = self.calls.calls.get_mut(&id) {
                // Timer C again, in case a branch never answers the CANCEL.
                call.timer_c = now.mono + TIMER_C;
                self.calls.timer_c.push(Reverse((call.timer_c, id)));
            }
            self.end_call(now, id, EndReason::NoAnswer);
        }
    }

    /// Ends the call named `name` (its API id) for `reason`; `false` when there is no such
    /// call.
    pub fn hangup(&mut self, now: Now, name: &str, reason: EndReason) -> bool {
        match self.calls.calls.values().find(|c| c.name == name) {
            Some(call) => {
                let id = call.id;
                self.end_call(now, id, reason);
                true
            }
            None => false,
        }
    }

    /// Ends the call whose media session is `session` (the relay closed it for lack of media).
    pub fn hangup_session(&mut self, now: Now, session: &str, reason: EndReason) -> bool {
        match self.calls.calls.values().find(|c| c.session == session) {
            Some(call) => {
                let id = call.id;
                self.end_call(now, id, reason);
                true
            }
            None => false,
        }
    }

    /// Ends a call: the caller's CANCEL, Timer C, the admin API, the relay's media timeout.
    /// Ringing: every pending branch is cancelled and the caller gets a final failure naming
    /// the reason (at once when nothing was sent downstream yet).
    /// Answered: a BYE goes to each phone, in the dialog as the other party would send it.
    fn end_call(&mut self, now: Now, id: u64, reason: EndReason) {
        let Some(call) = self.calls.calls.get_mut(&id) else {
            return;
        };
        if call.state == CallState::Answered {
            if let Some(call) = self.calls.remove(id) {
                self.send_byes(now, &call, reason);
                self.call_ended(now, call, 200, reason);
            }
            return;
        }
        let (code, phrase) = match reason {
            EndReason::Cancelled => (487, "Request Terminated"),
            EndReason::NoAnswer => (408, "Request Timeout"),
            EndReason::MediaTimeout => (408, "Media Timeout"),
            EndReason::MediaFailed => (488, "WebRTC Media Failed"),
            _ => (487, "Call Ended By The PBX"),
        };
        call.ending = Some(Ending {
            reason,
            code,
            phrase,
        });
        if call.branches.is_empty() {
            // Still waiting for the relay: nothing went downstream.
            if let Some(call) = self.calls.remove(id) {
                let b = ResponseBuilder::new(&call.invite, call.uas.source.remote, code, phrase);
                self.respond(now, &call.uas, b);
                self.call_ended(now, call, code, reason);
            }
            return;
        }
        let pending: Vec<usize> = (0..call.branches.len())
            .filter(|&i| !call.branches[i].done)
            .collect();
        for i in pending {
            self.cancel_branch(now, id, i);
        }
    }

    /// A BYE to each party of an answered call.
    fn send_byes(&mut self, now: Now, call: &Call, reason: EndReason) {
        let Some(dialog) = &call.dialog else {
            return;
        };
        let Some(callee_flow) = call.callee_flow else {
            return;
        };
        let text = match reason {
            EndReason::AdminHangup => "Hung up by the administrator",
            EndReason::MediaTimeout => "No media received for the media timeout",
            EndReason::MediaFailed => "WebRTC media failed (ICE or DTLS)",
            _ => "Call ended by the PBX",
        };
        let reason_header = format!("SIP;cause=200;text=\"{text}\"");
        let from = call.invite.header(&Name::FROM).map_or("", |v| v.as_str());
        // To the callee, as from the caller; to the caller, as from the callee.
        let legs = [
            (
                callee_flow,
                dialog.contact.as_str(),
                from,
                dialog.to.as_str(),
                call.caller_cseq,
            ),
            (
                call.caller_flow,
                call.caller_contact.as_str(),
                dialog.to.as_str(),
                from,
                call.callee_cseq,
            ),
        ];
        for (flow, uri, from, to, cseq) in legs {
            let branch = self.new_branch(call.id);
            let via = self.via(&flow, &branch);
            let bytes = forward::originate(&forward::Originate {
                method: "BYE",
                uri,
                via: &via,
                from,
                to,
                call_id: &call.sip_call_id,
                cseq: cseq.saturating_add(1).max(1),
                reason: Some(&reason_header),
            });
            let t = self
                .clients
                .send(branch.clone(), false, flow, bytes, now.mono);
            self.transmits.push_back(t);
            self.calls.own.insert(branch);
        }
    }
}

impl Call {
    /// Keeps what the PBX needs to send its own requests in this dialog: each party's highest
    /// CSeq and, on a target refresh, its new Contact.
    fn note_request(&mut self, request: &Request, e: &Essentials) {
        let from_caller = e.from.tag.as_deref() == Some(self.caller_tag.as_str());
        let seq = e.cseq.seq;
        let contact = matches!(request.method, Method::Invite | Method::Update)
            .then(|| {
                request
                    .header(&Name::CONTACT)
                    .and_then(|c| forward::contact_uri(c))
            })
            .flatten();
        if from_caller {
            self.caller_cseq = self.caller_cseq.max(seq);
            if let Some(c) = contact {
                self.caller_contact = c.to_owned();
            }
        } else {
            self.callee_cseq = self.callee_cseq.max(seq);
            if let (Some(c), Some(d)) = (contact, self.dialog.as_mut()) {
                d.contact = c.to_owned();
            }
        }
    }
}
