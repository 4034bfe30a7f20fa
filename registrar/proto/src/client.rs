//! Client transactions (RFC 3261 §17.1): what the proxy sends downstream.
//!
//! Each request the proxy forwards gets its own branch (the key here). Over UDP the request is
//! retransmitted (Timer A for INVITE, E for others) until a response arrives; without any final
//! response the transaction times out (Timer B / F, 64·T1) and the core is told, so it can treat
//! the branch as `408`. A retransmitted final response is absorbed (and, for a non-2xx INVITE
//! response, answered again with the ACK the transaction already sent). Reliable transports are
//! never retransmitted but still time out.
//!
//! | transaction | retransmit (UDP) | gives up | after a final response |
//! |---|---|---|---|
//! | INVITE | A: T1, doubling, until a provisional | B: 64·T1, until a provisional | 2xx: done (ACK is end-to-end); 3xx–6xx: ACK sent here, D: 32 s on UDP |
//! | non-INVITE | E: T1, doubling to T2, T2 once proceeding | F: 64·T1 | K: T4 on UDP |

use crate::flow::{Flow, Transmit};
use crate::transaction::{T1, T2, T4};
use bytes::Bytes;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

/// Timer D: how long a completed INVITE client transaction absorbs response retransmissions.
const TIMER_D: Duration = Duration::from_secs(32);

/// What a response means for the transaction it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A new provisional or final response: the core acts on it.
    Deliver,
    /// A retransmission of a final response already delivered: ignore it (an ACK to resend,
    /// for non-2xx INVITE responses, is in the transmit).
    Absorbed(Option<Transmit>),
    /// No transaction has this branch (a stray or very late response).
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Sent, nothing heard yet (Calling / Trying).
    Sent,
    /// A provisional response arrived.
    Proceeding,
    /// A final response arrived; absorbing retransmissions.
    Completed,
}

#[derive(Debug)]
struct Tx {
    invite: bool,
    flow: Flow,
    request: Bytes,
    state: State,
    interval: Duration,
    /// The ACK sent for a non-2xx final INVITE response (resent on its retransmissions).
    ack: Option<Bytes>,
    generation: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// Retransmit the request (A or E).
    Retransmit,
    /// Give up (B or F).
    GiveUp,
    /// Forget the completed transaction (D or K).
    Forget,
}

/// Every client transaction of an endpoint, keyed by branch.
#[derive(Debug, Default)]
pub struct ClientTransactions {
    txs: HashMap<String, Tx>,
    timers: BinaryHeap<Reverse<(Instant, u64, Timer, String)>>,
    next_generation: u64,
}

impl ClientTransactions {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of live client transactions.
    pub fn len(&self) -> usize {
        self.txs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    /// Whether `branch` is a live transaction.
    pub fn contains(&self, branch: &str) -> bool {
        self.txs.contains_key(branch)
    }

    /// Starts a transaction for `request` (already carrying our Via with `branch`) on `flow`;
    /// returns the first transmission.
    pub fn send(
        &mut self,
        branch: String,
        invite: bool,
        flow: Flow,
        request: Bytes,
        now: Instant,
    ) -> Transmit {
        let generation = self.bump();
        if !flow.is_reliable() {
            self.timers.push(Reverse((
                now + T1,
                generation,
                Timer::Retransmit,
                branch.clone(),
            )));
        }
        self.timers.push(Reverse((
            now + 64 * T1,
            generation,
            Timer::GiveUp,
            branch.clone(),
        )));
        let transmit = Transmit {
            flow,
            bytes: request.clone(),
        };
        self.txs.insert(
            branch,
            Tx {
                invite,
                flow,
                request,
                state: State::Sent,
                interval: T1,
                ack: None,
                generation,
            },
        );
        transmit
    }

    /// Classifies a response with `code` for `branch`. For a first non-2xx final response to
    /// an INVITE, `ack` builds the ACK to send (the transaction keeps it for retransmissions).
    pub fn on_response(
        &mut self,
        branch: &str,
        code: u16,
        now: Instant,
        ack: impl FnOnce() -> Option<Bytes>,
    ) -> (Received, Option<Transmit>) {
        let generation = self.bump();
        let Some(tx) = self.txs.get_mut(branch) else {
            return (Received::Unknown, None);
        };
        if tx.state == State::Completed {
            let resend = tx.ack.clone().map(|bytes| Transmit {
                flow: tx.flow,
                bytes,
            });
            return (Received::Absorbed(resend), None);
        }
        if code < 200 {
            if tx.state == State::Sent {
                tx.state = State::Proceeding;
                if tx.invite {
                    // Proceeding: Timers A and B stop (RFC 3261 §17.1.1.2); how long a call
                    // may ring is the proxy's Timer C.
                    tx.generation = generation;
                } else if !tx.flow.is_reliable() {
                    tx.interval = T2;
                }
            }
            return (Received::Deliver, None);
        }
        tx.state = State::Completed;
        tx.generation = generation;
        let mut send = None;
        let linger = if tx.invite && code >= 300 {
            tx.ack = ack();
            send = tx.ack.clone().map(|bytes| Transmit {
                flow: tx.flow,
                bytes,
            });
            if tx.flow.is_reliable() {
                Duration::ZERO
            } else {
                TIMER_D
            }
        } else if tx.invite || tx.flow.is_reliable() {
            Duration::ZERO
        } else {
            T4
        };
        if linger.is_zero() {
            self.txs.remove(branch);
        } else {
            self.timers.push(Reverse((
                now + linger,
                generation,
                Timer::Forget,
                branch.into(),
            )));
        }
        (Received::Deliver, send)
    }

    /// Drops a transaction without waiting (e.g. a branch whose flow is gone).
    pub fn remove(&mut self, branch: &str) {
        self.txs.remove(branch);
    }

    /// When [`Self::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, ..))| *at)
    }

    /// Fires due timers: retransmissions go to `out`; returns the branches that timed out
    /// without a final response.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Transmit>) -> Vec<String> {
        let mut timed_out = Vec::new();
        while let Some(Reverse((at, ..))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, generation, timer, branch))) = self.timers.pop() else {
                break;
            };
            let Some(tx) = self.txs.get_mut(&branch) else {
                continue;
            };
            match timer {
                Timer::Retransmit => {
                    let due = match tx.state {
                        State::Sent => true,
                        State::Proceeding => !tx.invite,
                        State::Completed => false,
                    };
                    if !due {
                        continue;
                    }
                    out.push(Transmit {
                        flow: tx.flow,
                        bytes: tx.request.clone(),
                    });
                    tx.interval = if tx.invite {
                        tx.interval * 2
                    } else {
                        (tx.interval * 2).min(T2)
                    };
                    let next = at + tx.interval;
                    self.timers
                        .push(Reverse((next, generation, Timer::Retransmit, branch)));
                }
                Timer::GiveUp => {
                    if tx.generation == generation && tx.state != State::Completed {
                        self.txs.remove(&branch);
                        timed_out.push(branch);
                    }
                }
                Timer::Forget => {
                    if tx.generation == generation {
                        self.txs.remove(&branch);
                    }
                }
            }
        }
        timed_out
    }

    fn bump(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn udp() -> Flow {
        Flow::udp(SocketAddr::from(([127, 0, 0, 1], 5062)))
    }

    fn fire(c: &mut ClientTransactions, now: Instant) -> (usize, Vec<String>) {
        let mut out = Vec::new();
        let timed_out = c.handle_timeout(now, &mut out);
        (out.len(), timed_out)
    }

    #[test]
    fn invite_over_udp_retransmits_until_provisional_and_then_waits_without_timeout() {
        let t0 = Instant::now();
        let mut c = ClientTransactions::new();
        c.send("b1".into(), true, udp(), Bytes::from_static(b"INVITE"), t0);
        // Timer A: 0.5, 1.5, 3.5 s …
        assert_eq!(fire(&mut c, t0 + Duration::from_millis(500)).0, 1);
        assert_eq!(fire(&mut c, t0 + Duration::from_millis(1400)).0, 0);
        assert_eq!(fire(&mut c, t0 + Duration::from_millis(1500)).0, 1);
        let (r, _) = c.on_response("b1", 100, t0 + Duration::from_secs(2), || None);
        assert_eq!(r, Received::Deliver);
        assert_eq!(
            fire(&mut c, t0 + Duration::from_secs(10)).0,
            0,
            "A stops when proceeding"
        );
        // Proceeding: Timer B no longer applies (the proxy's Timer C does).
        assert!(fire(&mut c, t0 + Duration::from_secs(300)).1.is_empty());
        assert!(c.contains("b1"));
        let (r, _) = c.on_response("b1", 487, t0 + Duration::from_secs(301), || None);
        assert_eq!(r, Received::Deliver);

        // Without any response, Timer B gives up 32 s after the start.
        let mut silent = ClientTransactions::new();
        silent.send("b0".into(), true, udp(), Bytes::from_static(b"INVITE"), t0);
        assert!(fire(&mut silent, t0 + Duration::from_secs(31)).1.is_empty());
        assert_eq!(fire(&mut silent, t0 + Duration::from_secs(32)).1, ["b0"]);
    }

    #[test]
    fn non_2xx_invite_response_is_acked_and_retransmissions_absorbed() {
        let t0 = Instant::now();
        let mut c = ClientTransactions::new();
        c.send("b1".into(), true, udp(), Bytes::from_static(b"INVITE"), t0);
        let (r, ack) = c.on_response("b1", 486, t0, || Some(Bytes::from_static(b"ACK")));
        assert_eq!(r, Received::Deliver);
        assert_eq!(ack.unwrap().bytes, Bytes::from_static(b"ACK"));
        let (r, _) = c.on_response("b1", 486, t0, || panic!("built once"));
        let Received::Absorbed(Some(again)) = r else {
            panic!("{r:?}")
        };
        assert_eq!(again.bytes, Bytes::from_static(b"ACK"));
        assert!(
            fire(&mut c, t0 + Duration::from_secs(40)).1.is_empty(),
            "no timeout"
        );
        assert!(c.is_empty(), "Timer D forgot it");
    }

    #[test]
    fn invite_2xx_ends_the_transaction_at_once() {
        let t0 = Instant::now();
        let mut c = ClientTransactions::new();
        c.send("b1".into(), true, udp(), Bytes::from_static(b"INVITE"), t0);
        let (r, ack) = c.on_response("b1", 200, t0, || panic!("2xx ACK is end-to-end"));
        assert_eq!((r, ack), (Received::Deliver, None));
        assert!(c.is_empty());
        assert_eq!(c.on_response("b1", 200, t0, || None).0, Received::Unknown);
    }

    #[test]
    fn non_invite_retransmits_capped_at_t2_and_times_out_with_f() {
        let t0 = Instant::now();
        let mut c = ClientTransactions::new();
        c.send("b2".into(), false, udp(), Bytes::from_static(b"BYE"), t0);
        let mut sent = 0;
        let mut t = t0;
        while t < t0 + Duration::from_secs(31) {
            t += Duration::from_millis(100);
            sent += fire(&mut c, t).0;
        }
        // 0.5, 1.5, 3.5, 7.5, then every 4 s up to 31 s: 11.5 … 31.5 → 4 + 5 = 9
        assert_eq!(sent, 9);
        assert_eq!(fire(&mut c, t0 + Duration::from_secs(32)).1, ["b2"]);
    }

    #[test]
    fn reliable_flows_never_retransmit() {
        let t0 = Instant::now();
        let mut c = ClientTransactions::new();
        let tcp = Flow {
            transport: kubepbx_api::Transport::Tcp,
            id: 3,
            remote: SocketAddr::from(([127, 0, 0, 1], 5062)),
        };
        c.send("b3".into(), false, tcp, Bytes::from_static(b"BYE"), t0);
        assert_eq!(fire(&mut c, t0 + Duration::from_secs(20)).0, 0);
        let (r, _) = c.on_response("b3", 200, t0, || None);
        assert_eq!(r, Received::Deliver);
        assert!(c.is_empty());
    }
}
