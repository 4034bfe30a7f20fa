//! Server transactions (RFC 3261 §17.2): absorb retransmissions, retransmit final responses.
//!
//! The endpoint asks [`ServerTransactions::on_request`] about every request before acting on
//! it. A request that matches a live transaction is a retransmission: it gets the last response
//! again (or nothing, while the transaction has none yet) and is never processed twice. An ACK
//! for a non-2xx INVITE response is absorbed here. Responses pass through
//! [`ServerTransactions::on_response`], which stores them and arms the timers:
//!
//! | transaction | after a final response | timers |
//! |---|---|---|
//! | non-INVITE | Completed: answers retransmissions | J = 64·T1 on UDP, 0 on streams |
//! | INVITE, 2xx | terminated (the 2xx is the UAS/proxy core's business) | — |
//! | INVITE, 3xx–6xx | Completed until ACK, then Confirmed | G (retransmit, UDP), H = 64·T1, I = T4 (UDP) |
//!
//! Time is an input; [`ServerTransactions::poll_timeout`] tells when to call
//! [`ServerTransactions::handle_timeout`] next.

use crate::flow::{Flow, Transmit};
use crate::message::{Essentials, Method};
use bytes::Bytes;
use hashbrown::HashMap;
use hashbrown::hash_map::Entry;
use std::cmp::Reverse;
use std::collections::hash_map::{DefaultHasher, RandomState};
use std::collections::{BinaryHeap, VecDeque};
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// RTT estimate (RFC 3261 §17.1.1.1).
pub const T1: Duration = Duration::from_millis(500);
/// Maximum retransmit interval for non-INVITE requests and INVITE responses.
pub const T2: Duration = Duration::from_secs(4);
/// Maximum duration a message remains in the network.
pub const T4: Duration = Duration::from_secs(5);

/// RFC 3261 §17.2.3 magic cookie.
const MAGIC_COOKIE: &str = "z9hG4bK";

/// Identifies a server transaction (RFC 3261 §17.2.3).
///
/// The identity (branch and sent-by of the top Via, or the RFC 2543 fallback) is kept as a
/// 128-bit keyed digest rather than as strings: a transaction table holds every request of the
/// last 32 s, and at tens of thousands of requests per second the strings (and their copies in
/// the timer queue) would cost more than the stored responses. The keys are random per process,
/// so nobody can make two requests collide on purpose; by chance it takes about 2^64 live
/// transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxKey {
    /// Digest of the branch (or RFC 2543 identity) and sent-by.
    request: u128,
    /// Digest of the method: INVITE and ACK share a transaction; other methods (CANCEL too)
    /// have their own.
    method: u64,
    /// Whether this is an INVITE transaction.
    invite: bool,
}

/// Two independently keyed hashers fed the same bytes: a 128-bit keyed digest.
struct Digest(DefaultHasher, DefaultHasher);

impl Digest {
    fn new() -> Self {
        static KEYS: OnceLock<[RandomState; 2]> = OnceLock::new();
        let [a, b] = KEYS.get_or_init(|| [RandomState::new(), RandomState::new()]);
        Digest(a.build_hasher(), b.build_hasher())
    }

    fn add(&mut self, part: &[u8]) {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        self.0.write_usize(part.len());
        self.0.write(part);
        self.1.write_usize(part.len());
        self.1.write(part);
    }

    fn finish(&self) -> u128 {
        (u128::from(self.0.finish()) << 64) | u128::from(self.1.finish())
    }
}

struct DigestWriter<'a>(&'a mut Digest);

impl std::fmt::Write for DigestWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.add(s.as_bytes());
        Ok(())
    }
}

impl TxKey {
    /// The key of a request. Requests without an RFC 3261 branch fall back to the RFC 2543
    /// identity (Call-ID, From tag, CSeq number, top Via).
    pub fn for_request(method: &Method, e: &Essentials) -> TxKey {
        let method = match method {
            Method::Ack => &Method::Invite,
            m => m,
        };
        let mut d = Digest::new();
        match e.via.params.get_val("branch") {
            Some(branch) if branch.starts_with(MAGIC_COOKIE) => d.add(branch.as_bytes()),
            _ => {
                d.add(b"2543");
                d.add(e.call_id.as_bytes());
                d.add(e.from.tag.as_deref().unwrap_or("").as_bytes());
                d.add(&e.cseq.seq.to_be_bytes());
            }
        }
        // The host's text without an allocation.
        let _ = write!(DigestWriter(&mut d), "{}", e.via.sent_by.host);
        d.add(&e.via.sent_by.port.unwrap_or(0).to_be_bytes());
        TxKey {
            request: d.finish(),
            method: method_digest(method),
            invite: *method == Method::Invite,
        }
    }

    /// The key of the INVITE transaction a CANCEL refers to (same branch, method INVITE).
    pub fn invite_of_cancel(&self) -> TxKey {
        TxKey {
            method: method_digest(&Method::Invite),
            invite: true,
            ..*self
        }
    }
}

fn method_digest(method: &Method) -> u64 {
    let mut d = Digest::new();
    d.add(method.as_str().as_bytes());
    d.0.finish()
}

/// What to do with a request, according to the transaction layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// A new request: process it (and answer through [`ServerTransactions::on_response`]).
    New,
    /// A retransmission: send this (the last response), or nothing when `None`.
    Retransmission(Option<Transmit>),
    /// An ACK for a non-2xx final response: consumed by the transaction.
    AckAbsorbed,
}

#[derive(Debug)]
enum State {
    /// No final response yet; holds the last provisional one.
    Proceeding { last: Option<Bytes> },
    /// Final response sent; retransmissions get it again.
    Completed { response: Bytes, next_g: Duration },
    /// INVITE only: the ACK arrived; absorb ACK retransmissions until Timer I.
    Confirmed,
}

#[derive(Debug)]
struct Tx {
    state: State,
    flow: Flow,
    /// Bumped at every state change so stale timer entries are ignored.
    generation: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    /// INVITE final response retransmission.
    G,
    /// INVITE: give up waiting for ACK.
    H,
    /// INVITE: stop absorbing ACKs.
    I,
    /// Non-INVITE: stop answering retransmissions.
    J,
}

/// An event the transaction layer reports to the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxEvent {
    /// Timer H fired: no ACK came for a final INVITE response.
    AckTimeout(TxKey),
}

/// Every server transaction of an endpoint.
#[derive(Debug, Default)]
pub struct ServerTransactions {
    txs: Table,
    /// Timer J of every non-INVITE transaction, in the order they were armed. All of them run
    /// for 64·T1 from a clock that only moves forward, so the order of arming is the order of
    /// firing: a queue does what a heap would, without a heap's cache misses at a million
    /// entries. (A deadline earlier than the last one queued goes to `timers`.)
    expiries: Fifo<(Instant, u64, TxKey)>,
    /// The other timers (INVITE transactions only), and any J out of order.
    timers: BinaryHeap<Reverse<(Instant, u64, TimerKind, TxKey)>>,
    next_generation: u64,
}

/// Shards of the transaction table.
const SHARDS: usize = 256;

/// The transactions by key, spread over [`SHARDS`] maps by the key's low bits.
///
/// At tens of thousands of requests per second the table holds a million transactions or more
/// (each lives 32 s after its response). One map that size doubles by copying everything at
/// once, stalling the drive loop for over 100 ms while datagrams pile up in the socket; a
/// shard grows by a 256th of that at a time (`examples/transactions_bench.rs` measures it).
/// hashbrown's default hasher (foldhash) rather than SipHash: the keys are keyed digests
/// already, so a fast hash of them is as hard to steer.
#[derive(Debug)]
struct Table {
    shards: Box<[HashMap<TxKey, Tx>]>,
    len: usize,
}

impl Default for Table {
    fn default() -> Self {
        Table {
            shards: (0..SHARDS).map(|_| HashMap::new()).collect(),
            len: 0,
        }
    }
}

impl Table {
    fn shard(&self, key: &TxKey) -> &HashMap<TxKey, Tx> {
        &self.shards[key.request as usize % SHARDS]
    }

    fn shard_mut(&mut self, key: &TxKey) -> &mut HashMap<TxKey, Tx> {
        &mut self.shards[key.request as usize % SHARDS]
    }

    fn get(&self, key: &TxKey) -> Option<&Tx> {
        self.shard(key).get(key)
    }

    fn get_mut(&mut self, key: &TxKey) -> Option<&mut Tx> {
        self.shard_mut(key).get_mut(key)
    }

    fn insert(&mut self, key: TxKey, tx: Tx) {
        if self.shard_mut(&key).insert(key, tx).is_none() {
            self.len += 1;
        }
    }

    fn remove(&mut self, key: &TxKey) {
        if self.shard_mut(key).remove(key).is_some() {
            self.len -= 1;
        }
    }

    /// Removes `key`'s transaction if no state change since `generation` re-armed it (one
    /// lookup).
    fn expire(&mut self, key: &TxKey, generation: u64) {
        let removed = match self.shard_mut(key).entry(*key) {
            Entry::Occupied(tx) if tx.get().generation == generation => {
                tx.remove();
                true
            }
            _ => false,
        };
        if removed {
            self.len -= 1;
        }
    }

    /// Gives back the room of shards that are less than a quarter full.
    fn shrink(&mut self, min: usize) {
        for shard in &mut self.shards {
            if shard.capacity() > 4 * shard.len().max(min) {
                shard.shrink_to(2 * shard.len().max(min));
            }
        }
    }
}

/// A first-in first-out queue kept in chunks of up to [`Fifo::CHUNK`] items, so that it never
/// copies more than a chunk to grow (a `VecDeque` of a million timers would copy them all) and
/// gives memory back as it drains. A chunk grows as a `VecDeque` does, so a queue of a few
/// items stays small.
#[derive(Debug)]
struct Fifo<T> {
    chunks: VecDeque<VecDeque<T>>,
}

impl<T> Default for Fifo<T> {
    fn default() -> Self {
        Fifo {
            chunks: VecDeque::new(),
        }
    }
}

impl<T> Fifo<T> {
    const CHUNK: usize = 4096;

    fn back(&self) -> Option<&T> {
        self.chunks.back().and_then(VecDeque::back)
    }

    fn front(&self) -> Option<&T> {
        self.chunks.front().and_then(VecDeque::front)
    }

    fn push(&mut self, item: T) {
        match self.chunks.back_mut() {
            Some(chunk) if chunk.len() < Self::CHUNK => chunk.push_back(item),
            _ => self.chunks.push_back(VecDeque::from([item])),
        }
    }

    fn pop(&mut self) -> Option<T> {
        let chunk = self.chunks.front_mut()?;
        let item = chunk.pop_front();
        if chunk.is_empty() {
            self.chunks.pop_front();
        }
        item
    }
}

impl ServerTransactions {
    /// An empty transaction table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of live transactions.
    pub fn len(&self) -> usize {
        self.txs.len
    }

    /// Whether there are no live transactions.
    pub fn is_empty(&self) -> bool {
        self.txs.len == 0
    }

    /// Classifies a request arriving on `flow`.
    pub fn on_request(
        &mut self,
        key: TxKey,
        method: &Method,
        flow: Flow,
        now: Instant,
    ) -> Disposition {
        let generation = self.bump();
        match self.txs.get_mut(&key) {
            Some(tx) => {
                if *method == Method::Ack {
                    return match tx.state {
                        State::Completed { .. } => {
                            tx.state = State::Confirmed;
                            tx.generation = generation;
                            let wait = if tx.flow.is_reliable() {
                                Duration::ZERO
                            } else {
                                T4
                            };
                            self.timers
                                .push(Reverse((now + wait, generation, TimerKind::I, key)));
                            Disposition::AckAbsorbed
                        }
                        State::Confirmed => Disposition::AckAbsorbed,
                        // An ACK while no final response was sent: not ours to absorb.
                        State::Proceeding { .. } => Disposition::New,
                    };
                }
                let resend = match &tx.state {
                    State::Proceeding { last } => last.clone(),
                    State::Completed { response, .. } => Some(response.clone()),
                    State::Confirmed => None,
                };
                Disposition::Retransmission(resend.map(|bytes| Transmit {
                    flow: tx.flow,
                    bytes,
                }))
            }
            None => {
                if *method == Method::Ack {
                    // ACK for a 2xx (its own transaction) or for an unknown INVITE.
                    return Disposition::New;
                }
                self.txs.insert(
                    key,
                    Tx {
                        state: State::Proceeding { last: None },
                        flow,
                        generation,
                    },
                );
                Disposition::New
            }
        }
    }

    /// Records a response sent in transaction `key` (the caller transmits it).
    pub fn on_response(&mut self, key: &TxKey, code: u16, bytes: Bytes, now: Instant) {
        let generation = self.bump();
        let Some(tx) = self.txs.get_mut(key) else {
            return;
        };
        if code < 200 {
            if let State::Proceeding { last } = &mut tx.state {
                *last = Some(bytes);
            }
            return;
        }
        let invite = key.invite;
        let reliable = tx.flow.is_reliable();
        if invite && code < 300 {
            self.txs.remove(key);
            return;
        }
        tx.generation = generation;
        tx.state = State::Completed {
            response: bytes,
            next_g: T1,
        };
        if invite {
            if !reliable {
                self.timers
                    .push(Reverse((now + T1, generation, TimerKind::G, *key)));
            }
            self.timers
                .push(Reverse((now + 64 * T1, generation, TimerKind::H, *key)));
        } else if reliable {
            self.txs.remove(key);
        } else {
            let at = now + 64 * T1;
            if self.expiries.back().is_some_and(|(last, ..)| at < *last) {
                self.timers
                    .push(Reverse((at, generation, TimerKind::J, *key)));
            } else {
                self.expiries.push((at, generation, *key));
            }
        }
    }

    /// Whether a transaction is waiting for its final response (used to match CANCEL).
    pub fn is_proceeding(&self, key: &TxKey) -> bool {
        matches!(
            self.txs.get(key),
            Some(Tx {
                state: State::Proceeding { .. },
                ..
            })
        )
    }

    /// When [`Self::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((at, ..))| *at);
        let expiry = self.expiries.front().map(|(at, ..)| *at);
        timer.into_iter().chain(expiry).min()
    }

    /// Gives memory back after a burst: the table and the timer queue keep their largest size
    /// otherwise (a burst of 10,000 requests/s leaves room for 640,000 transactions).
    pub fn shrink(&mut self) {
        const MIN: usize = 1024;
        self.txs.shrink(MIN / SHARDS);
        if self.timers.capacity() > 4 * self.timers.len().max(MIN) {
            self.timers.shrink_to(2 * self.timers.len().max(MIN));
        }
    }

    /// Fires every timer due at `now`, pushing retransmissions to `out` and returning events.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Transmit>) -> Vec<TxEvent> {
        let mut events = Vec::new();
        while self.expiries.front().is_some_and(|(at, ..)| *at <= now) {
            let Some((_, generation, key)) = self.expiries.pop() else {
                break;
            };
            self.txs.expire(&key, generation);
        }
        while let Some(Reverse((at, ..))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, generation, kind, key))) = self.timers.pop() else {
                break;
            };
            let Some(tx) = self.txs.get_mut(&key) else {
                continue;
            };
            if tx.generation != generation {
                continue;
            }
            match kind {
                TimerKind::G => {
                    if let State::Completed { response, next_g } = &mut tx.state {
                        out.push(Transmit {
                            flow: tx.flow,
                            bytes: response.clone(),
                        });
                        *next_g = (*next_g * 2).min(T2);
                        let next = at + *next_g;
                        self.timers
                            .push(Reverse((next, generation, TimerKind::G, key)));
                    }
                }
                TimerKind::H => {
                    self.txs.remove(&key);
                    events.push(TxEvent::AckTimeout(key));
                }
                TimerKind::I | TimerKind::J => {
                    self.txs.remove(&key);
                }
            }
        }
        events
    }

    fn bump(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Message, parse};

    fn essentials(method: &str, branch: &str) -> (Method, Essentials) {
        let cseq_method = if method == "ACK" { "ACK" } else { method };
        let text = format!(
            "{method} sip:pbx.example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch={branch}\r\n\
             From: <sip:1001@pbx.example.com>;tag=a\r\nTo: <sip:1002@pbx.example.com>\r\n\
             Call-ID: c\r\nCSeq: 1 {cseq_method}\r\nContent-Length: 0\r\n\r\n"
        );
        match parse(Bytes::from(text)) {
            Ok(Message::Request(r)) => (r.method.clone(), r.essentials().unwrap()),
            other => panic!("{other:?}"),
        }
    }

    fn udp() -> Flow {
        Flow::udp("10.0.0.1:5060".parse().unwrap())
    }

    fn tcp() -> Flow {
        Flow {
            transport: kubepbx_api::Transport::Tcp,
            id: 7,
            remote: "10.0.0.1:5060".parse().unwrap(),
        }
    }

    #[test]
    fn non_invite_retransmission_gets_stored_response_until_timer_j() {
        let mut t = ServerTransactions::new();
        let now = Instant::now();
        let (m, e) = essentials("REGISTER", "z9hG4bK1");
        let key = TxKey::for_request(&m, &e);
        assert_eq!(t.on_request(key, &m, udp(), now), Disposition::New);
        // Retransmitted before the TU answered: absorbed silently.
        assert_eq!(
            t.on_request(key, &m, udp(), now),
            Disposition::Retransmission(None)
        );
        t.on_response(&key, 200, Bytes::from_static(b"200"), now);
        let again = t.on_request(key, &m, udp(), now + Duration::from_secs(10));
        assert_eq!(
            again,
            Disposition::Retransmission(Some(Transmit {
                flow: udp(),
                bytes: Bytes::from_static(b"200")
            }))
        );
        assert_eq!(t.poll_timeout(), Some(now + 64 * T1));
        let mut out = Vec::new();
        t.handle_timeout(now + 64 * T1 - Duration::from_millis(1), &mut out);
        assert_eq!(t.len(), 1);
        t.handle_timeout(now + 64 * T1, &mut out);
        assert!(t.is_empty() && out.is_empty());
        // After Timer J the same request is new again.
        assert_eq!(
            t.on_request(key, &m, udp(), now + 64 * T1),
            Disposition::New
        );
    }

    #[test]
    fn timer_j_fires_in_order_across_shards_and_chunks() {
        let mut t = ServerTransactions::new();
        let start = Instant::now();
        let ms = Duration::from_millis;
        let count = 2 * Fifo::<()>::CHUNK as u64 + 10;
        let keys: Vec<(Method, TxKey)> = (0..count)
            .map(|i| {
                let (m, e) = essentials("REGISTER", &format!("z9hG4bKj{i}"));
                let key = TxKey::for_request(&m, &e);
                (m, key)
            })
            .collect();
        for (i, (m, key)) in (0u64..).zip(&keys) {
            assert_eq!(
                t.on_request(*key, m, udp(), start + ms(i)),
                Disposition::New
            );
            t.on_response(key, 200, Bytes::from_static(b"200"), start + ms(i));
        }
        // Answered out of order (an earlier clock): still expires on time.
        let (late_m, late_e) = essentials("OPTIONS", "z9hG4bKlate");
        let late = TxKey::for_request(&late_m, &late_e);
        t.on_request(late, &late_m, udp(), start);
        t.on_response(&late, 200, Bytes::from_static(b"200"), start);
        assert_eq!(t.len(), keys.len() + 1);
        assert_eq!(t.poll_timeout(), Some(start + 64 * T1));

        // Half-way through: exactly the first half (and the late one) are gone.
        let half = count / 2;
        let mut out = Vec::new();
        t.handle_timeout(start + 64 * T1 + ms(half - 1), &mut out);
        assert_eq!(t.len() as u64, count - half);
        for (i, (m, key)) in (0u64..).zip(&keys) {
            let at = start + 64 * T1 + ms(half);
            let expected = if i < half {
                Disposition::New
            } else {
                Disposition::Retransmission(Some(Transmit {
                    flow: udp(),
                    bytes: Bytes::from_static(b"200"),
                }))
            };
            assert_eq!(
                t.on_request(*key, m, udp(), at),
                expected,
                "transaction {i}"
            );
        }
        assert_eq!(
            t.on_request(late, &late_m, udp(), start + 64 * T1),
            Disposition::New
        );
        assert!(out.is_empty());
    }

    #[test]
    fn non_invite_over_tcp_terminates_at_once() {
        let mut t = ServerTransactions::new();
        let now = Instant::now();
        let (m, e) = essentials("OPTIONS", "z9hG4bK2");
        let key = TxKey::for_request(&m, &e);
        t.on_request(key, &m, tcp(), now);
        t.on_response(&key, 200, Bytes::from_static(b"200"), now);
        assert!(t.is_empty());
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn provisional_is_resent_while_proceeding() {
        let mut t = ServerTransactions::new();
        let now = Instant::now();
        let (m, e) = essentials("INVITE", "z9hG4bK3");
        let key = TxKey::for_request(&m, &e);
        t.on_request(key, &m, udp(), now);
        t.on_response(&key, 100, Bytes::from_static(b"100"), now);
        assert!(t.is_proceeding(&key));
        assert_eq!(
            t.on_request(key, &m, udp(), now),
            Disposition::Retransmission(Some(Transmit {
                flow: udp(),
                bytes: Bytes::from_static(b"100")
            }))
        );
    }

    #[test]
    fn invite_error_is_retransmitted_with_backoff_until_ack() {
        let mut t = ServerTransactions::new();
        let now = Instant::now();
        let (m, e) = essentials("INVITE", "z9hG4bK4");
        let key = TxKey::for_request(&m, &e);
        t.on_request(key, &m, udp(), now);
        t.on_response(&key, 486, Bytes::from_static(b"486"), now);
        let mut out = Vec::new();
        // Timer G fires at 0.5, 1.5, 3.5, 7.5, 11.5 s (interval doubles, capped at T2 = 4 s).
        let mut fired = Vec::new();
        let mut at = now;
        while let Some(next) = t.poll_timeout() {
            if next > now + Duration::from_secs(12) {
                break;
            }
            at = next;
            let before = out.len();
            t.handle_timeout(at, &mut out);
            if out.len() > before {
                fired.push(at - now);
            }
        }
        let ms: Vec<u128> = fired.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![500, 1500, 3500, 7500, 11500]);
        // ACK stops retransmissions and is absorbed, as are its retransmissions.
        let (ack, ack_e) = essentials("ACK", "z9hG4bK4");
        let ack_key = TxKey::for_request(&ack, &ack_e);
        assert_eq!(ack_key, key);
        assert_eq!(
            t.on_request(ack_key, &ack, udp(), at),
            Disposition::AckAbsorbed
        );
        assert_eq!(
            t.on_request(ack_key, &ack, udp(), at),
            Disposition::AckAbsorbed
        );
        let before = out.len();
        t.handle_timeout(at + T4, &mut out);
        assert_eq!(out.len(), before);
        assert!(t.is_empty());
    }

    #[test]
    fn invite_without_ack_times_out_with_timer_h() {
        let mut t = ServerTransactions::new();
        let now = Instant::now();
        let (m, e) = essentials("INVITE", "z9hG4bK5");
        let key = TxKey::for_request(&m, &e);
        t.on_request(key, &m, tcp(), now);
        t.on_response(&key, 404, Bytes::from_static(b"404"), now);
        let mut out = Vec::new();
        let events = t.handle_timeout(now + 64 * T1, &mut out);
        assert!(out.is_empty(), "no retransmission over TCP");
        assert_eq!(events, vec![TxEvent::AckTimeout(key)]);
        assert!(t.is_empty());
    }

    #[test]
    fn invite_2xx_leaves_the_transaction_layer() {
        let mut t = ServerTransactions::new();
        let now = Instant::now();
        let (m, e) = essentials("INVITE", "z9hG4bK6");
        let key = TxKey::for_request(&m, &e);
        t.on_request(key, &m, udp(), now);
        t.on_response(&key, 200, Bytes::from_static(b"200"), now);
        assert!(t.is_empty());
        let (ack, ack_e) = essentials("ACK", "z9hG4bK7");
        assert_eq!(
            t.on_request(TxKey::for_request(&ack, &ack_e), &ack, udp(), now),
            Disposition::New
        );
    }

    #[test]
    fn rfc2543_requests_are_matched_without_branch() {
        let (m, e1) = essentials("REGISTER", "oldstyle1");
        let (_, e2) = essentials("REGISTER", "oldstyle2");
        assert_eq!(TxKey::for_request(&m, &e1), TxKey::for_request(&m, &e2));
        let (c, ce) = essentials("CANCEL", "z9hG4bK8");
        let (i, ie) = essentials("INVITE", "z9hG4bK8");
        assert_ne!(TxKey::for_request(&c, &ce), TxKey::for_request(&i, &ie));
        assert_eq!(
            TxKey::for_request(&c, &ce).invite_of_cancel(),
            TxKey::for_request(&i, &ie)
        );
    }
}
