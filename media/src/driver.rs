//! The async driver of one session: a task that owns the session's plain legs' UDP sockets, its
//! WebRTC legs (str0m endpoints, see [`crate::webrtc`]), its [`Session`] core and its recorder,
//! and answers control commands (offers and answers included: see [`crate::negotiate`]).
//!
//! ```text
//! LocalRelay ──Command (bounded mpsc)──► session task ──RelayEvent──► owner
//!                                         │  waits (a waker each) on: commands, shutdown,
//! WebRTC hub ──Inbound (bounded inbox)──► │  deadline, WebRTC datagrams, plain sockets
//!                                         ▼  → Session core → send_to (own sockets, or
//!                                      Recorder       the shared WebRTC socket)
//! ```
//! One task per call (not per socket) keeps the core and the str0m endpoints lock-free. The
//! task runs on one of the relay's threads ([`crate::threads`]) and waits with a waker per
//! event source ([`crate::wakeups`]), so a packet's wake-up polls that socket alone. It reads
//! with `recvmmsg` into its thread's buffers ([`crate::udp`]), which also tells when the
//! socket is empty: a plain packet costs two syscalls (read, send) and no allocation, with no
//! read that returns `EAGAIN`. A WebRTC leg's datagrams arrive from a hub task (one queue
//! hop), and everything else happens here: decryption, relaying, and encryption towards a
//! browser, sent straight from this task on its thread's copy of the shared port. So a
//! browser↔softphone packet costs one hop in one direction and none in the other. Once a
//! browser's datagrams come steadily from another thread's hub, the task moves there
//! ([`crate::follow`], `hand_over`): the hop stays on one thread. Counters go to the shared
//! [`RelayMetrics`] (this thread's copy of the per-packet ones) once per batch.
//!
//! The deadline is the earliest of the core's (media/setup timeout) and each WebRTC leg's
//! (str0m timers, connect and disconnect limits). It is moved earlier when a leg asks for it
//! and left to fire otherwise: a deadline that fires early just recomputes.

use crate::api::{RelayEvent, SessionId, SessionStats, Side};
use crate::flavour::Origin;
use crate::follow::Follow;
use crate::hub::{HubHandle, Inbound};
use crate::inbox;
use crate::metrics::RelayMetrics;
use crate::negotiate::Negotiation;
use crate::ports::PortLease;
use crate::recorder::{RecordMsg, Recorder};
use crate::rtp::RtpHeader;
use crate::sdp::ParsedSdp;
use crate::session::{Action, Expiry, Port, Session};
use crate::threads::Shards;
use crate::udp::Socket;
use crate::udp::{MAX_DATAGRAM, Reader};
use crate::wakeups::Wakeups;
use crate::webrtc::{Outputs, WebRtcLeg, WebRtcShared};
use crate::{MediaError, SdpResult};
use bytes::Bytes;
use kubepbx_api::time::UnixMillis;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Instant;
use str0m::rtp::RtpPacket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

/// Reads (of up to [`crate::udp::BATCH`] datagrams) from one socket per wake before looking at
/// the others.
const READS: usize = 8;
/// WebRTC datagrams handled per wake before looking at the others.
const BATCH: usize = 64;
/// WebRTC datagrams queued for a session before the hub drops them (about a second of a
/// browser↔browser call plus checks and DTLS).
pub(crate) const INBOUND_QUEUE: usize = 256;

/// The answer to an offer or answer command.
pub(crate) type SdpReply = oneshot::Sender<Result<SdpResult, MediaError>>;

/// A request from the control side to a session task.
#[derive(Debug)]
pub(crate) enum Command {
    /// `side` sent an SDP offer.
    Offer {
        side: Side,
        parsed: Box<ParsedSdp>,
        reply: SdpReply,
    },
    /// `side` sent an SDP answer.
    Answer {
        side: Side,
        parsed: Box<ParsedSdp>,
        reply: SdpReply,
    },
    /// Current stats.
    Stats(oneshot::Sender<SessionStats>),
    /// End the session and return its final stats.
    Delete(oneshot::Sender<SessionStats>),
}

/// Live sessions by id, with a generation so a reaped task does not remove its successor.
pub(crate) type Registry = Arc<Mutex<HashMap<SessionId, Entry>>>;

/// A registry entry: how to reach a session task.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) generation: u64,
    pub(crate) commands: mpsc::Sender<Command>,
    /// The session is recorded: its offers are limited to G.711.
    pub(crate) recorded: bool,
}

/// One plain leg's bound sockets; the lease is dropped after them (field order), so a port
/// returns to the pool only once it is closed.
#[derive(Debug)]
pub(crate) struct LegSockets {
    pub(crate) rtp: Socket,
    pub(crate) rtcp: Socket,
    pub(crate) lease: PortLease,
}

impl LegSockets {
    fn socket(&self, port: Port) -> &Socket {
        match port {
            Port::Rtp => &self.rtp,
            Port::Rtcp => &self.rtcp,
        }
    }

    /// The same sockets, registered with the current runtime (see [`Socket::rehome`]).
    fn rehome(self) -> std::io::Result<LegSockets> {
        Ok(LegSockets {
            rtp: self.rtp.rehome()?,
            rtcp: self.rtcp.rehome()?,
            lease: self.lease,
        })
    }
}

/// A session's access to the relay's WebRTC endpoint.
#[derive(Debug)]
pub(crate) struct WebRtcAccess {
    pub(crate) hub: HubHandle,
    pub(crate) shared: Arc<WebRtcShared>,
    /// The hub's end of this session's queue (cloned into each leg's route).
    pub(crate) tx: inbox::Sender<Inbound>,
    /// Whether to move to the thread whose hub reads the browser's datagrams.
    pub(crate) follow: Follow,
    pub(crate) mover: Mover,
}

/// What a session needs to move to another relay thread.
#[derive(Debug)]
pub(crate) struct Mover {
    /// The relay's threads (weak: a session does not keep a dropped relay's threads).
    pub(crate) shards: Weak<Shards>,
    /// The relay owner's tracker, which tracks every session task.
    pub(crate) owner: TaskTracker,
}

/// Everything a session task owns.
#[derive(Debug)]
pub(crate) struct SessionTask {
    pub(crate) id: SessionId,
    pub(crate) generation: u64,
    pub(crate) core: Session,
    /// Plain legs' sockets (`None` for a WebRTC leg, or once released).
    pub(crate) legs: [Option<LegSockets>; 2],
    /// WebRTC legs' endpoints (boxed: large, and a plain call has none).
    pub(crate) rtcs: [Option<Box<WebRtcLeg>>; 2],
    /// What each WebRTC leg produced, emptied as it is sent (kept for its capacity).
    pub(crate) outs: [Outputs; 2],
    pub(crate) negotiation: Negotiation,
    pub(crate) webrtc: Option<WebRtcAccess>,
    pub(crate) inbound: Option<inbox::Receiver<Inbound>>,
    pub(crate) advertise: IpAddr,
    pub(crate) created_wall: UnixMillis,
    pub(crate) recorder: Option<Recorder>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) events: mpsc::Sender<RelayEvent>,
    pub(crate) registry: Registry,
    pub(crate) metrics: Arc<RelayMetrics>,
    /// The relay thread it runs on (its copy of the per-packet counters and of the WebRTC
    /// port).
    pub(crate) thread: usize,
    pub(crate) shutdown: CancellationToken,
    /// Why the session must end, found outside its legs (a move that lost a socket).
    pub(crate) broken: Option<String>,
}

enum Wake {
    Command(Option<Command>),
    Shutdown,
    Deadline,
    Readable(Side, Port),
    Inbound(Inbound),
}

/// Per-batch counters, added to the shared metrics once.
#[derive(Default)]
struct Tally {
    rtp: u64,
    rtp_bytes: u64,
    rtcp: u64,
    send_errors: u64,
}

impl Tally {
    fn flush(&mut self, m: &RelayMetrics, thread: usize) {
        let relayed = m.relayed(thread);
        RelayMetrics::add(&relayed.rtp, self.rtp);
        RelayMetrics::add(&relayed.rtp_bytes, self.rtp_bytes);
        RelayMetrics::add(&relayed.rtcp, self.rtcp);
        RelayMetrics::add(&m.send_errors, self.send_errors);
        *self = Tally::default();
    }
}

/// The event sources a session task waits on, by [`Wakeups`] bit, in the order they are
/// polled: shutdown first, sockets last.
mod source {
    pub(super) const SHUTDOWN: usize = 0;
    pub(super) const COMMANDS: usize = 1;
    pub(super) const DEADLINE: usize = 2;
    pub(super) const INBOUND: usize = 3;
    /// Then the sockets, in the order of [`super::SOCKETS`].
    pub(super) const SOCKETS: usize = 4;
    pub(super) const COUNT: usize = SOCKETS + 4;
    /// Every socket's bit.
    pub(super) const ALL_SOCKETS: u32 = 0b1111 << SOCKETS;
}

const SOCKETS: [(Side, Port); 4] = [
    (Side::Caller, Port::Rtp),
    (Side::Callee, Port::Rtp),
    (Side::Caller, Port::Rtcp),
    (Side::Callee, Port::Rtcp),
];

/// What a session task waits with: the sources' wakers, the shutdown signal and the deadline
/// (pinned in the task, polled where they are).
struct Waits<'a> {
    wakeups: Wakeups<{ source::COUNT }>,
    shutdown: Pin<&'a mut WaitForCancellationFutureOwned>,
    deadline: Pin<&'a mut Sleep>,
}

/// How a session task ended.
enum End {
    Deleted(oneshot::Sender<SessionStats>),
    Stopped,
    Expired(Expiry),
    Failed(String),
}

/// What serving a session on one thread came to.
enum Served {
    Ended(End),
    /// The session goes on on relay thread k.
    Moved(usize),
}

/// Whether a datagram is RTCP (RFC 5761 §4).
fn is_rtcp(data: &[u8]) -> bool {
    data.len() >= 8 && data[0] >> 6 == 2 && (192..=223).contains(&data[1])
}

impl SessionTask {
    /// The `o=` origins of a new session's generated SDPs.
    pub(crate) fn origins(generation: u64) -> [Origin; 2] {
        let base = UnixMillis::now().0 ^ (generation << 40);
        [Origin::new(base), Origin::new(base ^ 1)]
    }

    pub(crate) async fn run(mut self) {
        let end = loop {
            match self.serve().await {
                Served::Ended(end) => break end,
                Served::Moved(to) => match self.hand_over(to) {
                    None => return,
                    Some(stays) => self = stays,
                },
            }
        };
        let mut final_reply = None;
        match end {
            End::Deleted(reply) => final_reply = Some(reply),
            End::Stopped => {}
            End::Expired(expiry) => self.report_end(None, Some(expiry)).await,
            End::Failed(reason) => self.report_end(Some(reason), None).await,
        }
        self.close_webrtc();
        let stats = self.stats();
        self.finish(&stats);
        if let Some(reply) = final_reply {
            let _ = reply.send(stats);
        }
    }

    /// Serves the session on this thread until it ends or moves.
    async fn serve(&mut self) -> Served {
        if let Some(reason) = self.failure() {
            return Served::Ended(End::Failed(reason));
        }
        let mut next = self.next_deadline();
        let deadline = tokio::time::sleep_until(next.into());
        let shutdown = self.shutdown.clone().cancelled_owned();
        tokio::pin!(deadline, shutdown);
        let mut waits = Waits {
            wakeups: Wakeups::new(),
            shutdown: shutdown.as_mut(),
            deadline: deadline.as_mut(),
        };
        // The deadline fired: set it again, wherever the next one is.
        let mut fired = false;
        loop {
            let wake = std::future::poll_fn(|cx| self.poll_wake(cx, &mut waits)).await;
            if matches!(wake, Wake::Command(_)) {
                // A command can add or drop legs: look at every socket again.
                waits
                    .wakeups
                    .mark(source::ALL_SOCKETS | 1 << source::INBOUND);
            }
            match wake {
                Wake::Readable(side, port) if self.rtcs.iter().all(Option::is_none) => {
                    // Plain packets only move the core's deadline later, and fail nothing:
                    // straight back to waiting.
                    self.drain(side, port);
                    continue;
                }
                Wake::Readable(side, port) => self.drain(side, port),
                Wake::Inbound(first) => {
                    self.drain_inbound(first);
                    if let Some(to) = self.webrtc.as_ref().and_then(|w| w.follow.due()) {
                        return Served::Moved(to);
                    }
                }
                Wake::Command(Some(Command::Offer {
                    side,
                    parsed,
                    reply,
                })) => {
                    let result = self.offer(side, *parsed, Instant::now());
                    let _ = reply.send(result);
                }
                Wake::Command(Some(Command::Answer {
                    side,
                    parsed,
                    reply,
                })) => {
                    let result = self.answer(side, *parsed, Instant::now());
                    let _ = reply.send(result);
                }
                Wake::Command(Some(Command::Stats(reply))) => {
                    let _ = reply.send(self.stats());
                }
                Wake::Command(Some(Command::Delete(reply))) => {
                    return Served::Ended(End::Deleted(reply));
                }
                Wake::Command(None) | Wake::Shutdown => return Served::Ended(End::Stopped),
                Wake::Deadline => {
                    let now = Instant::now();
                    self.webrtc_timeouts(now);
                    if let Some(expiry) = self.core.handle_timeout(now) {
                        return Served::Ended(End::Expired(expiry));
                    }
                    // Whatever the deadline was, compute it afresh.
                    fired = true;
                }
            }
            if let Some(reason) = self.failure() {
                return Served::Ended(End::Failed(reason));
            }
            let wanted = self.next_deadline();
            if wanted < next || std::mem::take(&mut fired) {
                next = wanted;
                waits.deadline.as_mut().reset(next.into());
                waits.wakeups.mark(1 << source::DEADLINE);
            }
        }
    }

    /// Moves the session to relay thread `to`: its plain sockets are registered with that
    /// thread's reactor and a task there serves it on (`None`). The session stays here
    /// (`Some`) when the relay is going away. Datagrams waiting in its sockets or its queue
    /// are served there; none is lost.
    fn hand_over(mut self, to: usize) -> Option<SessionTask> {
        let Some(access) = self.webrtc.as_mut() else {
            return Some(self);
        };
        access.follow.moved();
        let owner = access.mover.owner.clone();
        let Some(shards) = access.mover.shards.upgrade() else {
            return Some(self);
        };
        let Some(shard) = shards.get(to).filter(|_| !self.shutdown.is_cancelled()) else {
            return Some(self);
        };
        {
            let _on = shard.enter();
            for slot in &mut self.legs {
                if let Some(leg) = slot.take() {
                    match leg.rehome() {
                        Ok(leg) => *slot = Some(leg),
                        Err(e) => {
                            self.broken.get_or_insert_with(|| {
                                format!("the session could not move to relay thread {to}: {e}")
                            });
                        }
                    }
                }
            }
        }
        tracing::debug!(target: "media", session = %self.id, from = self.thread, to, "media session follows its browser to another relay thread");
        self.thread = to;
        RelayMetrics::add(&self.metrics.sessions_moved, 1);
        shard.spawn(&owner, self.run());
        None
    }

    /// The next thing to do: polls the sources whose wakers fired (or that are marked), in
    /// [`source`] order.
    fn poll_wake(&mut self, cx: &mut Context<'_>, waits: &mut Waits<'_>) -> Poll<Wake> {
        let mut todo = waits.wakeups.pending(cx);
        while todo != 0 {
            let i = todo.trailing_zeros() as usize;
            let bit = 1 << i;
            todo &= !bit;
            let mut cx = waits.wakeups.context(i);
            let polled = match i {
                source::SHUTDOWN => waits
                    .shutdown
                    .as_mut()
                    .poll(&mut cx)
                    .map(|()| Wake::Shutdown),
                source::COMMANDS => self.commands.poll_recv(&mut cx).map(Wake::Command),
                source::DEADLINE => waits
                    .deadline
                    .as_mut()
                    .poll(&mut cx)
                    .map(|()| Wake::Deadline),
                source::INBOUND => match self.inbound.as_mut() {
                    Some(rx) => rx.poll_recv(&mut cx).map(Wake::Inbound),
                    None => Poll::Pending,
                },
                _ => {
                    let (side, port) = SOCKETS[(i - source::SOCKETS) % SOCKETS.len()];
                    match self.legs[side.index()].as_ref() {
                        // An error is read (and logged) by the drain.
                        Some(leg) => leg
                            .socket(port)
                            .poll_recv_ready(&mut cx)
                            .map(|_| Wake::Readable(side, port)),
                        None => Poll::Pending,
                    }
                }
            };
            if let Poll::Ready(wake) = polled {
                // This source again next time (it may be ready again), and those not polled.
                waits.wakeups.mark(todo | bit);
                return Poll::Ready(wake);
            }
        }
        Poll::Pending
    }

    fn next_deadline(&self) -> Instant {
        self.rtcs
            .iter()
            .flatten()
            .map(|leg| leg.poll_timeout())
            .fold(self.core.poll_timeout(), Instant::min)
    }

    /// Why the session must end: a failed move, or the first failed WebRTC leg's reason.
    fn failure(&self) -> Option<String> {
        self.broken.clone().or_else(|| {
            self.rtcs
                .iter()
                .flatten()
                .find_map(|r| r.failure().map(str::to_owned))
        })
    }

    fn webrtc_timeouts(&mut self, now: Instant) {
        for side in [Side::Caller, Side::Callee] {
            let i = side.index();
            if let Some(rtc) = self.rtcs[i].as_mut()
                && rtc.poll_timeout() <= now
            {
                rtc.handle_timeout(now, &mut self.outs[i]);
                self.flush_webrtc(side, now);
            }
        }
    }

    /// Reads what `side`'s `port` socket holds and relays it.
    fn drain(&mut self, side: Side, port: Port) {
        let now = Instant::now();
        let mut tally = Tally::default();
        Reader::with(|reader| {
            for _ in 0..READS {
                let Some(legs) = self.legs[side.index()].as_ref() else {
                    break;
                };
                let more = match reader.read(legs.socket(port)) {
                    Ok(more) => more,
                    Err(e) => {
                        tracing::debug!(target: "media", session = %self.id, error = %e, "recv failed");
                        false
                    }
                };
                for (src, data) in reader.datagrams() {
                    let action = self.core.handle_packet(side, port, src, data, now);
                    self.act(side, action, data, now, &mut tally);
                }
                if !more {
                    break;
                }
            }
        });
        tally.flush(&self.metrics, self.thread);
    }

    /// Carries out what the core decided for a packet that arrived from `side` (`data`: the
    /// whole RTP packet, or for WebRTC the payload alone, see [`RtpHeader::payload_offset`]).
    fn act(&mut self, side: Side, action: Action, data: &[u8], now: Instant, tally: &mut Tally) {
        match action {
            Action::Forward {
                from,
                port,
                to,
                rtp,
            } => {
                if let Some(out) = self.legs[from.index()].as_ref()
                    && let Err(e) = out.socket(port).send_to(data, to)
                {
                    tally.send_errors += 1;
                    tracing::trace!(target: "media", session = %self.id, error = %e, "send failed");
                }
                match rtp {
                    Some(h) => {
                        tally.rtp += 1;
                        tally.rtp_bytes += data.len() as u64;
                        self.tap(side, &h, payload_of(data, &h), now);
                    }
                    None => tally.rtcp += 1,
                }
            }
            Action::SendRtp { from, to, pt, rtp } => {
                let payload = payload_of(data, &rtp);
                let mut packet = [0u8; MAX_DATAGRAM];
                let len = 12 + payload.len();
                if let Some(room) = packet.get_mut(..len) {
                    room[0] = 0x80;
                    room[1] = pt | if rtp.marker { 0x80 } else { 0 };
                    room[2..4].copy_from_slice(&rtp.seq.to_be_bytes());
                    room[4..8].copy_from_slice(&rtp.timestamp.to_be_bytes());
                    room[8..12].copy_from_slice(&rtp.ssrc.to_be_bytes());
                    room[12..].copy_from_slice(payload);
                    if let Some(out) = self.legs[from.index()].as_ref()
                        && let Err(e) = out.rtp.send_to(room, to)
                    {
                        tally.send_errors += 1;
                        tracing::trace!(target: "media", session = %self.id, error = %e, "send failed");
                    }
                    tally.rtp += 1;
                    tally.rtp_bytes += len as u64;
                }
                self.tap(side, &rtp, payload, now);
            }
            Action::ToWebRtc { leg, pt, rtp } => {
                let payload = payload_of(data, &rtp);
                let i = leg.index();
                let sent = match self.rtcs[i].as_mut() {
                    Some(rtc) => rtc.write_rtp(&rtp, pt, payload, now, &mut self.outs[i]),
                    None => false,
                };
                if sent {
                    self.core.note_sent(leg, 12 + payload.len());
                    tally.rtp += 1;
                    tally.rtp_bytes += (12 + payload.len()) as u64;
                    self.flush_webrtc(leg, now);
                } else {
                    self.core.note_undelivered(side);
                    RelayMetrics::add(&self.metrics.dropped_no_destination, 1);
                }
                self.tap(side, &rtp, payload, now);
            }
            Action::Consumed => {}
            Action::Drop(reason) => RelayMetrics::add(self.metrics.dropped(reason), 1),
        }
    }

    fn tap(&self, side: Side, h: &RtpHeader, payload: &[u8], now: Instant) {
        if let Some(recorder) = &self.recorder {
            recorder.tap(RecordMsg::Packet {
                side,
                ssrc: h.ssrc,
                timestamp: h.timestamp,
                payload_type: h.payload_type,
                arrival: now,
                payload: Bytes::copy_from_slice(payload),
            });
        }
    }

    /// Handles `first` and whatever else the hub has queued for this session.
    fn drain_inbound(&mut self, first: Inbound) {
        let mut tally = Tally::default();
        self.on_inbound(first, &mut tally);
        for _ in 1..BATCH {
            let Some(rx) = self.inbound.as_mut() else {
                break;
            };
            match rx.try_recv() {
                Some(inbound) => self.on_inbound(inbound, &mut tally),
                None => break,
            }
        }
        tally.flush(&self.metrics, self.thread);
    }

    fn on_inbound(&mut self, inbound: Inbound, tally: &mut Tally) {
        if let Some(access) = self.webrtc.as_mut() {
            access.follow.note(inbound.hub, self.thread);
        }
        let side = inbound.side;
        let i = side.index();
        let now = inbound.at;
        let Some(rtc) = self.rtcs[i].as_mut() else {
            RelayMetrics::add(&self.metrics.webrtc_dropped, 1);
            return;
        };
        if rtc.handle_datagram(inbound.source, &inbound.data, now, &mut self.outs[i]) {
            if is_rtcp(&inbound.data) {
                self.core.note_webrtc_rtcp(side, now);
            }
        } else {
            self.core.note_dropped(side);
            RelayMetrics::add(&self.metrics.webrtc_dropped, 1);
        }
        let packets = std::mem::take(&mut self.outs[i].rtp);
        self.flush_webrtc(side, now);
        for packet in &packets {
            self.on_webrtc_rtp(side, packet, now, tally);
        }
        let mut packets = packets;
        packets.clear();
        self.outs[i].rtp = packets;
    }

    /// A decrypted RTP packet from the browser on `side`.
    fn on_webrtc_rtp(&mut self, side: Side, p: &RtpPacket, now: Instant, tally: &mut Tally) {
        let h = RtpHeader {
            ssrc: *p.header.ssrc,
            seq: p.header.sequence_number,
            timestamp: p.header.timestamp,
            payload_type: *p.header.payload_type,
            marker: p.header.marker,
            // The payload alone is at hand: offsets are relative to it.
            payload_offset: 0,
            payload_len: p.payload.len(),
        };
        let action = self.core.handle_webrtc_rtp(side, h, now);
        self.act(side, action, &p.payload, now, tally);
    }

    /// Sends what `side`'s WebRTC leg produced (its decrypted RTP is handled by the caller).
    pub(crate) fn flush_webrtc(&mut self, side: Side, now: Instant) {
        let i = side.index();
        if self.outs[i].transmits.is_empty() {
            return;
        }
        let mut transmits = std::mem::take(&mut self.outs[i].transmits);
        if let Some(webrtc) = &self.webrtc {
            let socket = webrtc.hub.socket(self.thread);
            let mut errors = 0;
            for t in &transmits {
                if is_rtcp(&t.contents) {
                    self.core.note_webrtc_rtcp_out(side);
                }
                if socket.send_to(&t.contents, t.destination).is_err() {
                    errors += 1;
                }
            }
            RelayMetrics::add(&self.metrics.send_errors, errors);
        }
        transmits.clear();
        self.outs[i].transmits = transmits;
        // Packets str0m decrypted while timing out (none in practice) would be lost otherwise.
        if !self.outs[i].rtp.is_empty() {
            let packets = std::mem::take(&mut self.outs[i].rtp);
            let mut tally = Tally::default();
            for packet in &packets {
                self.on_webrtc_rtp(side, packet, now, &mut tally);
            }
            tally.flush(&self.metrics, self.thread);
        }
    }

    /// Releases `side`'s WebRTC leg (its ICE username stops routing).
    pub(crate) fn drop_webrtc(&mut self, side: Side) {
        if let Some(rtc) = self.rtcs[side.index()].take()
            && let Some(webrtc) = &self.webrtc
        {
            webrtc.hub.unregister(rtc.ufrag());
        }
    }

    fn close_webrtc(&mut self) {
        for side in [Side::Caller, Side::Callee] {
            self.drop_webrtc(side);
        }
    }

    async fn report_end(&mut self, failure: Option<String>, expiry: Option<Expiry>) {
        {
            let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
            if registry
                .get(&self.id)
                .is_some_and(|e| e.generation == self.generation)
            {
                registry.remove(&self.id);
            }
        }
        let event = match failure {
            Some(reason) => {
                RelayMetrics::add(&self.metrics.sessions_failed, 1);
                tracing::warn!(target: "media", session = %self.id, %reason, "WebRTC leg failed; media session closed");
                RelayEvent::Failed(self.id.clone(), reason, self.stats())
            }
            None => {
                RelayMetrics::add(&self.metrics.sessions_timed_out, 1);
                tracing::info!(target: "media", session = %self.id, ?expiry, "media session timed out");
                RelayEvent::Timeout(self.id.clone(), self.stats())
            }
        };
        tokio::select! {
            _ = self.events.send(event) => {}
            _ = self.shutdown.cancelled() => {}
        }
    }

    pub(crate) fn stats(&self) -> SessionStats {
        let since_created = |t: Instant| {
            let offset = t.saturating_duration_since(self.core.created());
            self.created_wall.plus(offset)
        };
        SessionStats {
            session: self.id.clone(),
            caller: self.core.leg_stats(Side::Caller),
            callee: self.core.leg_stats(Side::Callee),
            recording: self.recorder.as_ref().map(|r| r.id().to_owned()),
            created_at: self.created_wall,
            last_packet_at: self.core.last_packet().map(since_created),
        }
    }

    fn finish(&self, stats: &SessionStats) {
        let m = &self.metrics;
        RelayMetrics::add(&m.lost, stats.caller.lost + stats.callee.lost);
        RelayMetrics::add(&m.sessions_ended, 1);
        if let Some(recorder) = &self.recorder {
            RelayMetrics::add(&m.recording_dropped, recorder.dropped());
        }
        let ports = self
            .legs
            .each_ref()
            .map(|l| l.as_ref().map(|l| l.lease.rtp()));
        tracing::debug!(target: "media", session = %self.id, ?ports, "media session ended");
    }
}

/// The payload of a packet whose header is `h` in `data` (empty when out of bounds).
fn payload_of<'a>(data: &'a [u8], h: &RtpHeader) -> &'a [u8] {
    let end = (h.payload_offset + h.payload_len).min(data.len());
    data.get(h.payload_offset..end).unwrap_or_default()
}
