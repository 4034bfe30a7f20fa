//! Telling RTP from RTCP from noise, and counting lost RTP packets.
//!
//! [`classify`] looks at one datagram as it arrives on a relay port: RTP and RTCP share a port
//! under rtcp-mux, so they are told apart by the payload-type byte (RFC 5761 §4); anything else
//! (STUN, garbage) is not media. RTP headers are parsed with the `rtp-types` crate.
//! [`LossCounter`] follows RFC 3550 appendix A.1: extended highest sequence number minus packets
//! received, with sequence wraparound, and a restart when the SSRC changes or the sequence jumps.

use rtp_types::RtpPacket;

/// What one datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet {
    /// An RTP packet.
    Rtp(RtpHeader),
    /// An RTCP (compound) packet, with the SSRC of its sender.
    Rtcp {
        /// Sender SSRC (bytes 4..8 of the first RTCP packet).
        ssrc: u32,
    },
}

/// The fields of an RTP header the relay uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Synchronisation source.
    pub ssrc: u32,
    /// Sequence number.
    pub seq: u16,
    /// Media timestamp.
    pub timestamp: u32,
    /// Payload type (0..=127).
    pub payload_type: u8,
    /// The marker bit (start of a talkspurt, end of a DTMF event).
    pub marker: bool,
    /// Where the payload starts in the datagram.
    pub payload_offset: usize,
    /// Payload length (padding excluded).
    pub payload_len: usize,
}

/// Classifies a datagram; `None` when it is neither RTP nor RTCP (version 2).
pub fn classify(data: &[u8]) -> Option<Packet> {
    let (&first, rest) = data.split_first()?;
    if first >> 6 != 2 {
        return None;
    }
    let second = *rest.first()?;
    // RFC 5761 §4: RTCP packet types 192..=223 occupy the byte RTP uses for marker + payload type.
    if (192..=223).contains(&second) {
        if data.len() < 8 {
            return None;
        }
        let ssrc = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
        return Some(Packet::Rtcp { ssrc });
    }
    let rtp = RtpPacket::parse(data).ok()?;
    Some(Packet::Rtp(RtpHeader {
        ssrc: rtp.ssrc(),
        seq: rtp.sequence_number(),
        timestamp: rtp.timestamp(),
        payload_type: rtp.payload_type(),
        marker: rtp.marker_bit(),
        payload_offset: rtp.payload_offset(),
        payload_len: rtp.payload_len(),
    }))
}

/// A jump forward by more than this many sequence numbers is taken as a restart of the stream.
const MAX_DROPOUT: i32 = 3000;
/// A packet more than this many sequence numbers behind is taken as a restart, not a late packet.
const MAX_MISORDER: i32 = 100;

/// Counts RTP packets lost on the way to the relay, from sequence numbers (RFC 3550 A.1).
#[derive(Debug, Clone, Default)]
pub struct LossCounter {
    current: Option<Stream>,
    /// Losses of streams that ended (SSRC change or restart).
    lost_before: u64,
}

#[derive(Debug, Clone)]
struct Stream {
    ssrc: u32,
    /// Extended sequence number (with wrap cycles) of the first packet.
    base: u64,
    /// Highest extended sequence number seen.
    max: u64,
    received: u64,
}

impl Stream {
    fn new(ssrc: u32, seq: u16) -> Stream {
        // Start one cycle up so late packets just before the first one stay positive.
        let ext = (1 << 16) + u64::from(seq);
        Stream {
            ssrc,
            base: ext,
            max: ext,
            received: 1,
        }
    }

    fn lost(&self) -> u64 {
        (self.max - self.base + 1).saturating_sub(self.received)
    }
}

impl LossCounter {
    /// Notes one received RTP packet.
    pub fn on_packet(&mut self, ssrc: u32, seq: u16) {
        let Some(stream) = self.current.as_mut().filter(|s| s.ssrc == ssrc) else {
            self.restart(ssrc, seq);
            return;
        };
        // Sequence numbers wrap at 2^16: the signed 16-bit difference is the distance.
        let delta = i32::from(seq.wrapping_sub(stream.max as u16) as i16);
        if !(-MAX_MISORDER..=MAX_DROPOUT).contains(&delta) {
            self.restart(ssrc, seq);
            return;
        }
        if delta > 0 {
            stream.max += delta.unsigned_abs() as u64;
        }
        stream.received += 1;
    }

    fn restart(&mut self, ssrc: u32, seq: u16) {
        if let Some(old) = self.current.take() {
            self.lost_before += old.lost();
        }
        self.current = Some(Stream::new(ssrc, seq));
    }

    /// Packets lost so far (duplicates can hide losses, as in RFC 3550; never negative).
    pub fn lost(&self) -> u64 {
        self.lost_before + self.current.as_ref().map_or(0, Stream::lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(seq: u16, pt: u8, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, pt];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&1234u32.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0xff; 160]);
        p
    }

    #[test]
    fn classifies_rtp_rtcp_and_noise() {
        let Some(Packet::Rtp(h)) = classify(&rtp(7, 8, 99)) else {
            panic!("not rtp")
        };
        assert_eq!(
            (h.seq, h.payload_type, h.ssrc, h.timestamp),
            (7, 8, 99, 1234)
        );
        assert_eq!((h.payload_offset, h.payload_len), (12, 160));
        // Marker bit set on PT 101 (telephone-event): 0x80 | 101 = 229 is RTP, not RTCP.
        assert!(
            matches!(classify(&rtp(1, 0x80 | 101, 1)), Some(Packet::Rtp(h)) if h.payload_type == 101)
        );
        // RTCP receiver report, SSRC 0x01020304.
        let rr = [0x80, 201, 0, 1, 1, 2, 3, 4];
        assert_eq!(classify(&rr), Some(Packet::Rtcp { ssrc: 0x0102_0304 }));
        // STUN binding request, truncated packets, version 0/1.
        assert_eq!(classify(&[0x00, 0x01, 0x00, 0x00]), None);
        assert_eq!(classify(&[]), None);
        assert_eq!(classify(&[0x80]), None);
        assert_eq!(classify(&[0x80, 200, 0]), None);
        assert_eq!(classify(&rtp(1, 0, 1)[..11]), None);
        assert_eq!(classify(&[0x40; 20]), None);
    }

    #[test]
    fn no_loss_in_order() {
        let mut l = LossCounter::default();
        for s in 0..1000u16 {
            l.on_packet(1, s);
        }
        assert_eq!(l.lost(), 0);
    }

    #[test]
    fn gaps_are_lost_and_late_packets_fill_them() {
        let mut l = LossCounter::default();
        for s in [10u16, 11, 14, 15] {
            l.on_packet(1, s);
        }
        assert_eq!(l.lost(), 2);
        l.on_packet(1, 12); // late
        assert_eq!(l.lost(), 1);
    }

    #[test]
    fn wraparound() {
        let mut l = LossCounter::default();
        for s in [65533u16, 65534, 65535, 0, 1, 3, 4] {
            l.on_packet(1, s);
        }
        assert_eq!(l.lost(), 1); // only 2 missing
        // Many cycles.
        let mut l = LossCounter::default();
        let mut seq = 60000u16;
        for i in 0..200_000u32 {
            if i % 1000 != 0 {
                l.on_packet(5, seq);
            }
            seq = seq.wrapping_add(1);
        }
        assert_eq!(l.lost(), 199); // i = 0 was never seen either, so counting starts at i = 1
    }

    #[test]
    fn ssrc_change_and_jumps_restart_the_count() {
        let mut l = LossCounter::default();
        for s in [1u16, 2, 4] {
            l.on_packet(1, s);
        }
        assert_eq!(l.lost(), 1);
        for s in [5000u16, 5001, 5003] {
            l.on_packet(2, s);
        }
        assert_eq!(l.lost(), 2);
        l.on_packet(2, 30000); // a jump: restart, not 25,000 losses
        l.on_packet(2, 30001);
        assert_eq!(l.lost(), 2);
        l.on_packet(2, 29000); // far behind: restart too
        assert_eq!(l.lost(), 2);
    }
}
