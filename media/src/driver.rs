//! The async driver of one session: a task that owns the session's four UDP sockets, its
//! [`Session`] core and its recorder, and answers control commands.
//!
//! ```text
//! LocalRelay ──Command (bounded mpsc)──► session task ──RelayEvent::Timeout──► owner
//!                                         │  select! over: commands, shutdown, deadline,
//!                                         │  readiness of 4 sockets → try_recv_from loop
//!                                         ▼  → Session::handle_packet → try_send_to
//!                                      Recorder (bounded, try_send)
//! ```
//! One task per call (not per socket) keeps the core lock-free; after a readiness wake it drains
//! the socket with non-blocking `try_recv_from` into one reused buffer, so a packet costs two
//! syscalls and no allocation. Counters go to the shared [`RelayMetrics`] once per batch.

use crate::api::{RelayEvent, SessionId, SessionStats, Side};
use crate::metrics::RelayMetrics;
use crate::ports::PortLease;
use crate::recorder::{RecordMsg, Recorder};
use crate::sdp::Remote;
use crate::session::{Action, Expiry, Port, Session};
use bytes::Bytes;
use kubepbx_api::time::UnixMillis;
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Datagrams handled per socket per wake before looking at the others.
const BATCH: usize = 64;
/// Largest datagram relayed (bigger ones are truncated by the kernel and dropped as noise).
const MAX_DATAGRAM: usize = 2048;

/// A request from the control side to a session task.
#[derive(Debug)]
pub(crate) enum Command {
    /// `side` sent an SDP; `answered` when it was an answer.
    Remote {
        side: Side,
        remote: Remote,
        answered: bool,
        done: oneshot::Sender<()>,
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
    /// RTP port of the caller's and the callee's leg.
    pub(crate) ports: [u16; 2],
    /// The session is recorded: its offers are limited to G.711.
    pub(crate) recorded: bool,
}

/// One leg's bound sockets; the lease is dropped after them (field order), so a port returns to
/// the pool only once it is closed.
#[derive(Debug)]
pub(crate) struct LegSockets {
    pub(crate) rtp: UdpSocket,
    pub(crate) rtcp: UdpSocket,
    pub(crate) lease: PortLease,
}

impl LegSockets {
    fn socket(&self, port: Port) -> &UdpSocket {
        match port {
            Port::Rtp => &self.rtp,
            Port::Rtcp => &self.rtcp,
        }
    }
}

/// Everything a session task owns.
#[derive(Debug)]
pub(crate) struct SessionTask {
    pub(crate) id: SessionId,
    pub(crate) generation: u64,
    pub(crate) core: Session,
    pub(crate) legs: [LegSockets; 2],
    pub(crate) created_wall: UnixMillis,
    pub(crate) recorder: Option<Recorder>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) events: mpsc::Sender<RelayEvent>,
    pub(crate) registry: Registry,
    pub(crate) metrics: Arc<RelayMetrics>,
    pub(crate) shutdown: CancellationToken,
}

enum Wake {
    Command(Option<Command>),
    Shutdown,
    Deadline,
    Readable(Side, Port),
}

/// Per-batch counters, added to the shared metrics once.
#[derive(Default)]
struct Tally {
    rtp: u64,
    rtp_bytes: u64,
    rtcp: u64,
    send_errors: u64,
}

impl SessionTask {
    pub(crate) async fn run(mut self) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let deadline = tokio::time::sleep_until(self.core.poll_timeout().into());
        tokio::pin!(deadline);
        let final_reply = loop {
            let wake = {
                let [caller, callee] = &self.legs;
                tokio::select! {
                    biased;
                    _ = self.shutdown.cancelled() => Wake::Shutdown,
                    cmd = self.commands.recv() => Wake::Command(cmd),
                    _ = &mut deadline => Wake::Deadline,
                    _ = caller.rtp.readable() => Wake::Readable(Side::Caller, Port::Rtp),
                    _ = callee.rtp.readable() => Wake::Readable(Side::Callee, Port::Rtp),
                    _ = caller.rtcp.readable() => Wake::Readable(Side::Caller, Port::Rtcp),
                    _ = callee.rtcp.readable() => Wake::Readable(Side::Callee, Port::Rtcp),
                }
            };
            match wake {
                Wake::Readable(side, port) => self.drain(side, port, &mut buf),
                Wake::Command(Some(Command::Remote {
                    side,
                    remote,
                    answered,
                    done,
                })) => {
                    self.core.set_remote(side, &remote);
                    if answered {
                        self.core.set_answered(Instant::now());
                    }
                    if let Some(recorder) = &self.recorder {
                        recorder.tap(RecordMsg::Codecs {
                            side,
                            payloads: remote.payloads.clone(),
                            secure: remote.secure,
                        });
                    }
                    deadline.as_mut().reset(self.core.poll_timeout().into());
                    let _ = done.send(());
                }
                Wake::Command(Some(Command::Stats(reply))) => {
                    let _ = reply.send(self.stats());
                }
                Wake::Command(Some(Command::Delete(reply))) => break Some(reply),
                Wake::Command(None) | Wake::Shutdown => break None,
                Wake::Deadline => {
                    let now = Instant::now();
                    if let Some(expiry) = self.core.handle_timeout(now) {
                        self.expire(expiry).await;
                        break None;
                    }
                    deadline.as_mut().reset(self.core.poll_timeout().into());
                }
            }
        };
        let stats = self.stats();
        self.finish(&stats);
        if let Some(reply) = final_reply {
            let _ = reply.send(stats);
        }
    }

    /// Reads what `side`'s `port` socket holds and relays it.
    fn drain(&mut self, side: Side, port: Port, buf: &mut [u8]) {
        let now = Instant::now();
        let mut tally = Tally::default();
        for _ in 0..BATCH {
            let socket = self.legs[side.index()].socket(port);
            let (len, src) = match socket.try_recv_from(buf) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!(target: "media", session = %self.id, error = %e, "recv failed");
                    break;
                }
            };
            let data = &buf[..len];
            match self.core.handle_packet(side, port, src, data, now) {
                Action::Forward {
                    from,
                    port,
                    to,
                    rtp,
                } => {
                    let out = self.legs[from.index()].socket(port);
                    match out.try_send_to(data, to) {
                        Ok(_) => {}
                        Err(e) => {
                            tally.send_errors += 1;
                            tracing::trace!(target: "media", session = %self.id, error = %e, "send failed");
                        }
                    }
                    match rtp {
                        Some(h) => {
                            tally.rtp += 1;
                            tally.rtp_bytes += len as u64;
                            if let Some(recorder) = &self.recorder {
                                let end = (h.payload_offset + h.payload_len).min(len);
                                let payload = data.get(h.payload_offset..end).unwrap_or_default();
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
                        None => tally.rtcp += 1,
                    }
                }
                Action::Drop(reason) => RelayMetrics::add(self.metrics.dropped(reason), 1),
            }
        }
        let m = &self.metrics;
        RelayMetrics::add(&m.rtp_relayed, tally.rtp);
        RelayMetrics::add(&m.rtp_bytes_relayed, tally.rtp_bytes);
        RelayMetrics::add(&m.rtcp_relayed, tally.rtcp);
        RelayMetrics::add(&m.send_errors, tally.send_errors);
    }

    async fn expire(&mut self, expiry: Expiry) {
        {
            let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
            if registry
                .get(&self.id)
                .is_some_and(|e| e.generation == self.generation)
            {
                registry.remove(&self.id);
            }
        }
        RelayMetrics::add(&self.metrics.sessions_timed_out, 1);
        tracing::info!(target: "media", session = %self.id, ?expiry, "media session timed out");
        let event = RelayEvent::Timeout(self.id.clone(), self.stats());
        tokio::select! {
            _ = self.events.send(event) => {}
            _ = self.shutdown.cancelled() => {}
        }
    }

    fn stats(&self) -> SessionStats {
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
        tracing::debug!(target: "media", session = %self.id, ports = ?[self.legs[0].lease.rtp(), self.legs[1].lease.rtp()], "media session ended");
    }
}
