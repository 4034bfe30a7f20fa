//! The sans-IO core of call recording: two mono 8 kHz streams in, aligned stereo frames out.
//!
//! Each RTP packet is placed on a common timeline (samples since the first recorded packet) by
//! its RTP timestamp, relative to an anchor set by the first packet of its SSRC (positioned by
//! arrival time). Gaps between packets become silence, late packets fill their slot, and both
//! channels stay aligned whatever each side's timestamps start at. A stream whose timestamps
//! drift more than [`MAX_DRIFT`] samples from arrival time (restart, clock skew, SSRC change) is
//! re-anchored. [`Aligner::drain`] hands out frames older than [`JITTER`] samples, padding a
//! channel that has nothing (one side silent or on hold) with silence, so memory stays bounded.

use crate::api::Side;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Samples per second of the recording.
pub const RATE: u32 = 8000;
/// Frames younger than this (200 ms) wait for late packets before being written.
pub const JITTER: u64 = RATE as u64 / 5;
/// More drift than this (1 s) between RTP time and arrival time re-anchors a stream.
pub const MAX_DRIFT: i64 = RATE as i64;

/// Aligns the caller's and callee's audio into interleaved stereo (caller left).
#[derive(Debug, Default)]
pub struct Aligner {
    start: Option<Instant>,
    /// Timeline position of the first sample still buffered.
    emitted: u64,
    channels: [Channel; 2],
}

#[derive(Debug, Default)]
struct Channel {
    samples: VecDeque<i16>,
    anchor: Option<Anchor>,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    ssrc: u32,
    timestamp: u32,
    position: u64,
}

fn samples_in(d: Duration) -> u64 {
    (d.as_nanos() * u128::from(RATE) / 1_000_000_000) as u64
}

impl Aligner {
    /// Adds decoded samples of one packet from `side`.
    pub fn push(
        &mut self,
        side: Side,
        ssrc: u32,
        timestamp: u32,
        arrival: Instant,
        samples: impl IntoIterator<Item = i16>,
    ) {
        let start = *self.start.get_or_insert(arrival);
        let arrived_at = samples_in(arrival.saturating_duration_since(start));
        let channel = &mut self.channels[side.index()];
        let by_timestamp = channel.anchor.filter(|a| a.ssrc == ssrc).and_then(|a| {
            let delta = i64::from(timestamp.wrapping_sub(a.timestamp) as i32);
            let position = a.position as i64 + delta;
            (position >= 0 && (position - arrived_at as i64).abs() <= MAX_DRIFT)
                .then_some(position as u64)
        });
        let position = by_timestamp.unwrap_or_else(|| {
            channel.anchor = Some(Anchor {
                ssrc,
                timestamp,
                position: arrived_at,
            });
            arrived_at
        });
        for (at, sample) in (position..).zip(samples) {
            let Some(index) = at.checked_sub(self.emitted) else {
                continue; // already written: too late
            };
            let index = index as usize;
            if index >= channel.samples.len() {
                channel.samples.resize(index, 0);
                channel.samples.push_back(sample);
            } else {
                channel.samples[index] = sample;
            }
        }
    }

    /// Appends to `out` the stereo frames that are at least [`JITTER`] old at `now`.
    pub fn drain(&mut self, now: Instant, out: &mut Vec<i16>) {
        let Some(start) = self.start else { return };
        let horizon = samples_in(now.saturating_duration_since(start)).saturating_sub(JITTER);
        self.emit(horizon.saturating_sub(self.emitted), out);
    }

    /// Appends every buffered frame to `out` (end of the call).
    pub fn finish(&mut self, out: &mut Vec<i16>) {
        let n = self
            .channels
            .iter()
            .map(|c| c.samples.len())
            .max()
            .unwrap_or(0);
        self.emit(n as u64, out);
    }

    fn emit(&mut self, frames: u64, out: &mut Vec<i16>) {
        out.reserve(frames as usize * 2);
        for _ in 0..frames {
            for channel in &mut self.channels {
                out.push(channel.samples.pop_front().unwrap_or(0));
            }
        }
        self.emitted += frames;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn two_sides_with_different_timestamps_line_up() {
        let t0 = Instant::now();
        let mut a = Aligner::default();
        // Caller from t0, timestamps from 1000; callee from t0 + 40 ms, timestamps from 9_000_000.
        for i in 0..10u32 {
            a.push(
                Side::Caller,
                1,
                1000 + i * 160,
                t0 + ms(20 * u64::from(i)),
                [1i16; 160],
            );
            a.push(
                Side::Callee,
                2,
                9_000_000 + i * 160,
                t0 + ms(40 + 20 * u64::from(i)),
                [2i16; 160],
            );
        }
        let mut out = Vec::new();
        a.finish(&mut out);
        let frames: Vec<(i16, i16)> = out.chunks(2).map(|f| (f[0], f[1])).collect();
        assert_eq!(frames.len(), 1600 + 320);
        assert_eq!(frames[0], (1, 0));
        assert_eq!(frames[319], (1, 0));
        assert_eq!(frames[320], (1, 2));
        assert_eq!(frames[1599], (1, 2));
        assert_eq!(frames[1600], (0, 2));
    }

    #[test]
    fn gaps_become_silence_and_late_packets_fill_in() {
        let t0 = Instant::now();
        let mut a = Aligner::default();
        a.push(Side::Caller, 1, 0, t0, [5i16; 160]);
        a.push(Side::Caller, 1, 480, t0 + ms(60), [7i16; 160]); // 160..480 missing
        a.push(Side::Caller, 1, 160, t0 + ms(70), [6i16; 160]); // late, fills 160..320
        let mut out = Vec::new();
        a.finish(&mut out);
        let left: Vec<i16> = out.chunks(2).map(|f| f[0]).collect();
        assert_eq!(left.len(), 640);
        assert!(left[..160].iter().all(|&s| s == 5));
        assert!(left[160..320].iter().all(|&s| s == 6));
        assert!(left[320..480].iter().all(|&s| s == 0));
        assert!(left[480..].iter().all(|&s| s == 7));
    }

    #[test]
    fn drain_keeps_a_jitter_window_and_pads_a_silent_side() {
        let t0 = Instant::now();
        let mut a = Aligner::default();
        for i in 0..50u32 {
            a.push(
                Side::Callee,
                3,
                i * 160,
                t0 + ms(20 * u64::from(i)),
                [9i16; 160],
            );
        }
        let mut out = Vec::new();
        a.drain(t0 + ms(1000), &mut out);
        assert_eq!(out.len(), 2 * (8000 - JITTER as usize));
        assert!(out.chunks(2).all(|f| f == [0, 9]));
        // Late packet for already written time is ignored.
        a.push(Side::Callee, 3, 0, t0 + ms(1000), [1i16; 160]);
        out.clear();
        a.finish(&mut out);
        assert_eq!(out.len(), 2 * JITTER as usize);
    }

    #[test]
    fn timestamp_jump_reanchors_by_arrival() {
        let t0 = Instant::now();
        let mut a = Aligner::default();
        a.push(Side::Caller, 1, 0, t0, [1i16; 160]);
        // Timestamp leaps by an hour, arrival by 20 ms: placed by arrival.
        a.push(Side::Caller, 1, 8000 * 3600, t0 + ms(20), [2i16; 160]);
        let mut out = Vec::new();
        a.finish(&mut out);
        assert_eq!(out.len(), 2 * 320);
    }
}
