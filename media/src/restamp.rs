//! One outgoing RTP stream made of whatever the other leg sends: the SSRC, sequence numbers and
//! timestamps a browser sees stay continuous when the source changes. Sans-IO.
//!
//! ```text
//! phone: SSRC A 100 101 102 │ SSRC B 9000 9001 │ SSRC A 103 …
//! leg:   SSRC X 100 101 102 │        103  104  │        105 …   (timestamps likewise, marker
//!                                                                  set at each change)
//! ```
//! A softphone changes its SSRC after a transfer, a re-INVITE or a restart, and a browser call's
//! other party may be a phone one moment and music on hold the next. A browser leg that passed
//! every new SSRC on would depend on how the browser treats streams its SDP never announced
//! (WebRTC stacks differ; a str0m peer dropped whole streams after a few changes). So a WebRTC
//! leg sends one SSRC of its own, announced in its SDP, and maps each packet onto it the way
//! media gateways do: within a source, offsets are kept, so gaps, reordering and RFC 4733 event
//! timestamps pass through as sent; at a change of source, sequence numbers go on from the last
//! one written and the timestamp moves on by the time that passed (at least one sample), with
//! the marker bit set to start a talkspurt, so the browser's jitter buffer sees one stream that
//! paused. Only the current source is remembered: a late packet of the previous one counts as
//! one more change.

use std::time::Instant;

/// A source's sequence numbers are extended from this base, so that packets reordered before
/// its first one (smaller numbers) still map below it.
const BASE: u64 = 1 << 32;

/// What one packet becomes on the outgoing stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamped {
    /// Extended sequence number (its low 16 bits go on the wire).
    pub(crate) seq: u64,
    pub(crate) timestamp: u32,
    pub(crate) marker: bool,
}

/// The source being mapped now, and its offsets.
#[derive(Debug, Clone, Copy)]
struct Source {
    ssrc: u32,
    /// Extended sequence number of the highest packet seen from it.
    last: u64,
    /// Added to its extended sequence numbers.
    seq_offset: i64,
    /// Added to its timestamps.
    ts_offset: u32,
}

/// The mapping of one outgoing stream (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Restamp {
    source: Option<Source>,
    /// The highest sequence number written, its timestamp, and when.
    written: Option<(u64, u32, Instant)>,
}

impl Restamp {
    /// Maps a packet of source `ssrc` (sequence number `seq`, `timestamp` at `rate` Hz, its
    /// `marker`) that is sent at `now`.
    pub(crate) fn map(
        &mut self,
        ssrc: u32,
        seq: u16,
        timestamp: u32,
        marker: bool,
        rate: u32,
        now: Instant,
    ) -> Stamped {
        let (s, ext, marker) = match self.source {
            Some(mut s) if s.ssrc == ssrc => {
                let delta = i64::from(seq.wrapping_sub(s.last as u16) as i16);
                let ext = s.last.saturating_add_signed(delta);
                s.last = s.last.max(ext);
                (s, ext, marker)
            }
            _ => {
                let ext = BASE + u64::from(seq);
                let (seq_next, ts_next) = match self.written {
                    // The first source keeps its own numbers (from zero up: an SRTP receiver
                    // expects the rollover counter to start at 0).
                    None => (u64::from(seq), timestamp),
                    Some((seq, ts, at)) => {
                        let elapsed = now.saturating_duration_since(at);
                        let samples = (elapsed.as_micros() * u128::from(rate) / 1_000_000)
                            .clamp(1, u128::from(u32::MAX >> 1));
                        (seq + 1, ts.wrapping_add(samples as u32))
                    }
                };
                let s = Source {
                    ssrc,
                    last: ext,
                    seq_offset: seq_next as i64 - ext as i64,
                    ts_offset: ts_next.wrapping_sub(timestamp),
                };
                (s, ext, true)
            }
        };
        self.source = Some(s);
        let out = Stamped {
            // Only a packet reordered from before the first one can fall below zero.
            seq: (ext as i64 + s.seq_offset).max(0) as u64,
            timestamp: timestamp.wrapping_add(s.ts_offset),
            marker,
        };
        if self.written.is_none_or(|(seq, _, _)| out.seq > seq) {
            self.written = Some((out.seq, out.timestamp, now));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(start: Instant, n: u64) -> Instant {
        start + Duration::from_millis(n)
    }

    #[test]
    fn one_source_passes_through_with_gaps_reordering_and_the_wrap() {
        let mut r = Restamp::default();
        let t = Instant::now();
        let first = r.map(7, 65534, 1000, false, 8000, t);
        assert_eq!((first.seq as u16, first.timestamp), (65534, 1000));
        assert!(first.marker, "a stream starts with a talkspurt");
        let seqs: Vec<(u16, u32, bool)> = [(65535, 1160), (1, 1480), (0, 1320), (5, 2120)]
            .into_iter()
            .enumerate()
            .map(|(i, (seq, ts))| {
                let s = r.map(7, seq, ts, false, 8000, ms(t, 20 * (i as u64 + 1)));
                (s.seq as u16, s.timestamp, s.marker)
            })
            .collect();
        assert_eq!(
            seqs,
            [
                (65535, 1160, false),
                (1, 1480, false),
                (0, 1320, false),
                (5, 2120, false)
            ]
        );
        // Extended numbers keep their order across the wrap, and start from zero (the SRTP
        // rollover counter of the first packet is 0).
        assert_eq!(first.seq, 65534);
        let a = r.map(7, 6, 2280, false, 8000, ms(t, 120)).seq;
        let b = r.map(7, 4, 1960, false, 8000, ms(t, 121)).seq;
        assert_eq!((a, b), (65536 + 6, 65536 + 4));
    }

    #[test]
    fn a_packet_reordered_from_before_the_first_maps_below_it_not_below_zero() {
        let mut r = Restamp::default();
        let t = Instant::now();
        assert_eq!(r.map(1, 10, 1600, false, 8000, t).seq, 10);
        assert_eq!(r.map(1, 8, 1280, false, 8000, t).seq, 8);
        assert_eq!(r.map(1, 65535, 0, false, 8000, t).seq, 0);
        assert_eq!(r.map(1, 11, 1760, false, 8000, t).seq, 11);
    }

    #[test]
    fn a_new_source_continues_the_numbers_and_the_clock() {
        let mut r = Restamp::default();
        let t = Instant::now();
        for i in 0..3u16 {
            r.map(
                1,
                100 + i,
                8000 + 160 * u32::from(i),
                false,
                8000,
                ms(t, 20 * u64::from(i)),
            );
        }
        // Source 2 starts 60 ms after source 1's last packet: 480 samples at 8 kHz.
        let s = r.map(2, 40000, 123_456, false, 8000, ms(t, 100));
        assert_eq!(
            (s.seq as u16, s.timestamp, s.marker),
            (103, 8320 + 480, true)
        );
        let s = r.map(2, 40001, 123_616, false, 8000, ms(t, 120));
        assert_eq!((s.seq as u16, s.timestamp, s.marker), (104, 8960, false));
        // Back to source 1 at once: one more number, at least one sample later.
        let s = r.map(1, 103, 8480, false, 8000, ms(t, 120));
        assert_eq!((s.seq as u16, s.timestamp, s.marker), (105, 8961, true));
        let s = r.map(1, 104, 8640, true, 8000, ms(t, 140));
        assert_eq!((s.seq as u16, s.timestamp, s.marker), (106, 9121, true));
    }

    #[test]
    fn event_packets_of_one_source_keep_their_shared_timestamp() {
        let mut r = Restamp::default();
        let t = Instant::now();
        r.map(1, 10, 0, false, 8000, t);
        let event: Vec<u32> = (11..14u16)
            .map(|seq| r.map(1, seq, 160, false, 8000, ms(t, 20)).timestamp)
            .collect();
        assert_eq!(event, [160, 160, 160]);
    }

    #[test]
    fn opus_moves_on_at_its_own_clock() {
        let mut r = Restamp::default();
        let t = Instant::now();
        r.map(1, 1, 0, false, 48000, t);
        let s = r.map(2, 500, 77, false, 48000, ms(t, 20));
        assert_eq!((s.seq as u16, s.timestamp), (2, 960));
    }
}
