//! Relay configuration, parsed once by the owner (flags of `kubepbx up` / the media replica).

use crate::MediaError;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

/// How a [`LocalRelay`](crate::LocalRelay) runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// The address written into rewritten SDPs (`c=`): where phones send media.
    pub advertise: IpAddr,
    /// The address the RTP/RTCP sockets bind to.
    pub bind: IpAddr,
    /// The UDP ports to use (`--rtp-ports LO-HI`). Each session takes 4: an even RTP port and the
    /// odd RTCP port above it, for each leg.
    pub ports: RangeInclusive<u16>,
    /// No RTP/RTCP on either leg of an answered session for this long → the session is reaped.
    pub media_timeout: Duration,
    /// A session not answered within this long after its offer (and without media) is reaped;
    /// covers calls the proxy forgot. Must exceed the longest ringing time.
    pub setup_timeout: Duration,
    /// A latched source is replaced by a packet from another address with another SSRC only after
    /// it has been silent this long (see [`crate::latch`]).
    pub relatch_after: Duration,
    /// Where recordings go; `None` disables recording (requests to record are then ignored with
    /// a warning).
    pub recordings_dir: Option<PathBuf>,
    /// The UDP address every WebRTC leg shares (`--webrtc-port`: bind address and port; port 0
    /// takes any free one, see [`LocalRelay::webrtc_addr`](crate::LocalRelay::webrtc_addr)).
    /// Browsers are offered one host candidate: [`Self::advertise`] and this port. `None`
    /// disables WebRTC legs (browser SDPs are refused as an unsupported transport).
    pub webrtc: Option<SocketAddr>,
    /// A WebRTC leg whose ICE and DTLS have not both completed this long after its offer/answer
    /// exchange fails the session ([`RelayEvent::Failed`](crate::RelayEvent::Failed)).
    pub webrtc_connect_timeout: Duration,
    /// Threads that run the sessions, each a single-threaded runtime of its own (`relay-0` …,
    /// module `threads`); 0: one per core.
    pub threads: usize,
    /// A relay thread that relays more than two packets per this interval (on average over
    /// 200 ms) stops waking for each packet: it wakes once per interval and relays what
    /// arrived, until it relays less than one per interval (module `pacing`). Costs a packet
    /// at most this much extra delay; saves most of the thread's wake-ups under load. Zero:
    /// always wake for each packet. At most [`MAX_BATCH_INTERVAL`].
    pub batch_interval: Duration,
}

/// The longest [`RelayConfig::batch_interval`]: a packet interval of a 20 ms codec.
pub const MAX_BATCH_INTERVAL: Duration = Duration::from_millis(20);

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            advertise: IpAddr::V4(Ipv4Addr::LOCALHOST),
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ports: 20000..=20999,
            media_timeout: Duration::from_secs(60),
            setup_timeout: Duration::from_secs(180),
            relatch_after: Duration::from_secs(2),
            recordings_dir: None,
            webrtc: None,
            webrtc_connect_timeout: Duration::from_secs(15),
            threads: 0,
            batch_interval: Duration::from_millis(1),
        }
    }
}

impl RelayConfig {
    /// Checks that the configuration can work.
    pub fn validate(&self) -> Result<(), MediaError> {
        let (lo, hi) = (*self.ports.start(), *self.ports.end());
        if lo == 0 || hi < lo || crate::ports::pairs_in(&self.ports) == 0 {
            return Err(MediaError::InvalidConfig(format!(
                "RTP port range {lo}-{hi} holds no even/odd port pair above 0"
            )));
        }
        if self.advertise.is_unspecified() {
            return Err(MediaError::InvalidConfig(format!(
                "advertised media address {} is unspecified; set the address phones can reach",
                self.advertise
            )));
        }
        if self.media_timeout.is_zero()
            || self.setup_timeout.is_zero()
            || self.webrtc_connect_timeout.is_zero()
        {
            return Err(MediaError::InvalidConfig(
                "media, setup and WebRTC connect timeouts must be above zero".to_owned(),
            ));
        }
        if self.batch_interval > MAX_BATCH_INTERVAL {
            return Err(MediaError::InvalidConfig(format!(
                "media batch interval {:?} is longer than {MAX_BATCH_INTERVAL:?}: packets would \
                 wait longer than a packet interval; use 1ms (0 to wake for every packet)",
                self.batch_interval
            )));
        }
        Ok(())
    }
}

/// Parses `LO-HI` as given to `--rtp-ports`.
pub fn parse_port_range(text: &str) -> Result<RangeInclusive<u16>, MediaError> {
    let bad = || {
        MediaError::InvalidConfig(format!(
            "RTP port range {text:?} is not LO-HI with 1 <= LO < HI <= 65535 (e.g. 20000-20999)"
        ))
    };
    let (lo, hi) = text.trim().split_once('-').ok_or_else(bad)?;
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if lo == 0 || hi <= lo {
        return Err(bad());
    }
    Ok(lo..=hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        RelayConfig::default().validate().unwrap();
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("20000-20999").unwrap(), 20000..=20999);
        assert_eq!(parse_port_range(" 1000 - 1003 ").unwrap(), 1000..=1003);
        for bad in ["", "20000", "0-10", "10-5", "a-b", "1-70000", "5-5"] {
            assert!(parse_port_range(bad).is_err(), "{bad}");
        }
        let config = RelayConfig {
            ports: 20001..=20002,
            ..RelayConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(MediaError::InvalidConfig(_))
        ));
        let config = RelayConfig {
            batch_interval: Duration::from_millis(21),
            ..RelayConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(MediaError::InvalidConfig(_))
        ));
    }
}
