//! The recording writer: a task per recorded call that decodes G.711, aligns both sides with the
//! [`Aligner`] and writes a stereo 16-bit 8 kHz WAV (caller left, callee right) with `hound`.
//!
//! The session task hands packets over a bounded channel with `try_send` ([`Recorder::tap`]); a
//! full channel drops the packet and counts it, so a slow disk never slows the relay. The WAV
//! header is rewritten every second (`hound`'s flush), so a file cut short by a crash is still a
//! valid WAV up to its last second; the file is finalised when the session ends. Payload types
//! other than PCMU/PCMA (opus, G.722, telephone-event, comfort noise, SRTP) are noted once in
//! the log and in `<id>.json`, and skipped.

use crate::api::{RecordingRequest, Side};
use crate::g711;
use crate::recording::{Aligner, RATE};
use crate::sdp::Codec;
use bytes::Bytes;
use kubepbx_api::time::UnixMillis;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

/// Packets waiting for the writer before new ones are dropped (~5 s of a call at 50 pps/side).
pub const QUEUE: usize = 512;

/// What the session task sends the writer.
#[derive(Debug)]
pub enum RecordMsg {
    /// An RTP packet's payload.
    Packet {
        /// Who sent it.
        side: Side,
        /// RTP SSRC.
        ssrc: u32,
        /// RTP timestamp.
        timestamp: u32,
        /// RTP payload type.
        payload_type: u8,
        /// When it arrived.
        arrival: Instant,
        /// The payload (copied out of the relay's buffer).
        payload: Bytes,
    },
    /// The payload types of `side`'s stream (from its SDP), and whether it is encrypted.
    Codecs {
        /// Whose SDP.
        side: Side,
        /// Payload type → codec.
        payloads: Vec<(u8, Codec)>,
        /// SRTP: nothing is decodable.
        secure: bool,
    },
}

/// The session task's end of a recording.
#[derive(Debug)]
pub struct Recorder {
    id: String,
    tx: mpsc::Sender<RecordMsg>,
    dropped: Arc<AtomicU64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Meta<'a> {
    id: &'a str,
    caller: &'a str,
    callee: &'a str,
    started_at: String,
    ended_at: Option<String>,
    sample_rate: u32,
    channels: [&'static str; 2],
    skipped_payloads: Vec<String>,
    dropped_packets: u64,
}

/// Whether `id` is safe as a file name stem.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Recorder {
    /// Creates `<dir>/<id>.wav` and `<dir>/<id>.json` and starts the writer task.
    pub fn start(
        dir: &Path,
        req: &RecordingRequest,
        tasks: &TaskTracker,
    ) -> std::io::Result<Recorder> {
        if !valid_id(&req.id) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("recording id {:?} is not a plain file name", req.id),
            ));
        }
        std::fs::create_dir_all(dir)?;
        let wav_path = dir.join(format!("{}.wav", req.id));
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let wav = hound::WavWriter::create(&wav_path, spec).map_err(into_io)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            wav,
            meta_path: dir.join(format!("{}.json", req.id)),
            req: req.clone(),
            started_at: UnixMillis::now(),
            aligner: Aligner::default(),
            codecs: [Vec::new(), Vec::new()],
            secure: [false, false],
            skipped: BTreeSet::new(),
            dropped: dropped.clone(),
            frames: Vec::new(),
        };
        writer.write_meta(None);
        tasks.spawn(writer.run(rx));
        Ok(Recorder {
            id: req.id.clone(),
            tx,
            dropped,
        })
    }

    /// The recording id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Hands a message to the writer without waiting; drops (and counts) it when the writer is
    /// behind.
    pub fn tap(&self, msg: RecordMsg) {
        if self.tx.try_send(msg).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Packets dropped because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn into_io(e: hound::Error) -> std::io::Error {
    match e {
        hound::Error::IoError(e) => e,
        other => std::io::Error::other(other.to_string()),
    }
}

struct Writer {
    wav: hound::WavWriter<std::io::BufWriter<std::fs::File>>,
    meta_path: PathBuf,
    req: RecordingRequest,
    started_at: UnixMillis,
    aligner: Aligner,
    codecs: [Vec<(u8, Codec)>; 2],
    secure: [bool; 2],
    skipped: BTreeSet<String>,
    dropped: Arc<AtomicU64>,
    frames: Vec<i16>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<RecordMsg>) {
        let mut flush = tokio::time::interval(Duration::from_secs(1));
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => self.handle(msg),
                    None => break,
                },
                _ = flush.tick() => self.write(Some(Instant::now())),
            }
        }
        self.write(None);
        let id = self.req.id;
        if let Err(e) = self.wav.finalize() {
            tracing::warn!(target: "media", recording = %id, error = %e, "recording: finalising the WAV failed");
        }
    }

    fn handle(&mut self, msg: RecordMsg) {
        match msg {
            RecordMsg::Codecs {
                side,
                payloads,
                secure,
            } => {
                self.codecs[side.index()] = payloads;
                self.secure[side.index()] = secure;
            }
            RecordMsg::Packet {
                side,
                ssrc,
                timestamp,
                payload_type,
                arrival,
                payload,
            } => {
                let table = match self.codec(side, payload_type) {
                    Some(Codec::Pcmu) if !self.secure[side.index()] => &g711::ULAW,
                    Some(Codec::Pcma) if !self.secure[side.index()] => &g711::ALAW,
                    other => {
                        let name = match (other, self.secure[side.index()]) {
                            (_, true) => format!("{payload_type} (SRTP)"),
                            (Some(Codec::Other(name)), _) => format!("{payload_type} {name}"),
                            _ => format!("{payload_type}"),
                        };
                        if self.skipped.insert(name.clone()) {
                            tracing::info!(target: "media", recording = %self.req.id, payload = %name, "recording: payload type not decodable, skipped");
                        }
                        return;
                    }
                };
                let samples = payload.iter().map(|&b| table[usize::from(b)]);
                self.aligner.push(side, ssrc, timestamp, arrival, samples);
            }
        }
    }

    fn codec(&self, side: Side, pt: u8) -> Option<Codec> {
        // Payload numbers follow the receiver's SDP; phones mirror them, so look at both.
        let mine = &self.codecs[side.index()];
        let theirs = &self.codecs[side.other().index()];
        mine.iter()
            .chain(theirs)
            .find(|(p, _)| *p == pt)
            .map(|(_, c)| c.clone())
            .or_else(|| Codec::from_static(pt))
    }

    /// Writes aligned frames (all of them when `now` is `None`) and updates the WAV header.
    fn write(&mut self, now: Option<Instant>) {
        self.frames.clear();
        match now {
            Some(now) => self.aligner.drain(now, &mut self.frames),
            None => self.aligner.finish(&mut self.frames),
        }
        let mut result = Ok(());
        for &sample in &self.frames {
            result = self.wav.write_sample(sample);
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            result = self.wav.flush();
        }
        if let Err(e) = result {
            tracing::warn!(target: "media", recording = %self.req.id, error = %e, "recording: writing the WAV failed");
        }
        if now.is_none() {
            self.write_meta(Some(UnixMillis::now()));
        }
    }

    fn write_meta(&self, ended_at: Option<UnixMillis>) {
        let meta = Meta {
            id: &self.req.id,
            caller: &self.req.caller,
            callee: &self.req.callee,
            started_at: self.started_at.to_rfc3339(),
            ended_at: ended_at.map(UnixMillis::to_rfc3339),
            sample_rate: RATE,
            channels: ["caller", "callee"],
            skipped_payloads: self.skipped.iter().cloned().collect(),
            dropped_packets: self.dropped.load(Ordering::Relaxed),
        };
        let written = serde_json::to_vec_pretty(&meta)
            .map_err(std::io::Error::other)
            .and_then(|json| std::fs::write(&self.meta_path, json));
        if let Err(e) = written {
            tracing::warn!(target: "media", recording = %self.req.id, error = %e, "recording: writing the metadata failed");
        }
    }
}
