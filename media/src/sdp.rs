//! SDP: what a party's offer/answer says about its audio, and the rewrite that puts the relay in
//! the middle. Parsing and writing use the `sdp-types` crate, which keeps every line it does not
//! understand, in order, so the rewrite changes only what it must (see `docs/adr/0002-sdp.md`).
//!
//! [`parse`] picks the first audio stream with a non-zero port and an RTP transport the relay
//! carries (RTP/AVP, RTP/AVPF; RTP/SAVP and RTP/SAVPF pass through untouched, since the relay
//! never looks inside payloads), works out where that party wants media (its [`Remote`]), and
//! [`ParsedSdp::rewrite`] writes the SDP to forward: `c=` lines name the relay's advertised
//! address (an unspecified `0.0.0.0`, the old-style hold, stays so), the audio `m=` port and
//! `a=rtcp` name the relay port pair facing the receiver, ICE attributes are dropped (the legs
//! are plain RTP), and every other stream gets port 0, i.e. is declined: the relay carries one
//! audio stream per call. Codecs, fmtp, telephone-event, ptime, rtcp-mux and direction
//! attributes pass through unchanged — except in the offer of a recorded call, which
//! [`ParsedSdp::keep_only_g711`] limits to what the recorder decodes.

use crate::MediaError;
use sdp_types::{Connection, Session, TransportProto};
use std::net::{IpAddr, SocketAddr};

/// SDPs above this size are refused before parsing.
pub const MAX_SDP_LEN: usize = 64 * 1024;

/// Attributes of ICE, dropped from every rewritten SDP (session and media level).
const ICE_ATTRIBUTES: &[&str] = &[
    "candidate",
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "ice-lite",
    "ice-mismatch",
    "ice-pacing",
    "end-of-candidates",
    "remote-candidates",
];

/// Where a party wants its audio sent, from its SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// RTP destination; `None` when the SDP says not to send (`c=0.0.0.0`).
    pub rtp: Option<SocketAddr>,
    /// RTCP destination (`a=rtcp`, else RTP port + 1); `None` like `rtp`.
    pub rtcp: Option<SocketAddr>,
    /// The SDP has `a=rtcp-mux`: RTCP shares the RTP port.
    pub rtcp_mux: bool,
    /// The stream is SRTP (SAVP/SAVPF): payloads are encrypted, so not recordable.
    pub secure: bool,
    /// Payload types of the stream as the SDP maps them.
    pub payloads: Vec<(u8, Codec)>,
}

/// What a payload type carries, as far as recording cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Codec {
    /// G.711 µ-law, 8 kHz.
    Pcmu,
    /// G.711 A-law, 8 kHz.
    Pcma,
    /// Anything else (named by its rtpmap encoding).
    Other(String),
}

impl Codec {
    /// The codec of `pt` per the static table (RFC 3551), for types without an rtpmap.
    pub fn from_static(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        }
    }

    fn from_rtpmap(encoding: &str, clock_rate: u32) -> Codec {
        match encoding.to_ascii_uppercase().as_str() {
            "PCMU" if clock_rate == 8000 => Codec::Pcmu,
            "PCMA" if clock_rate == 8000 => Codec::Pcma,
            _ => Codec::Other(format!("{encoding}/{clock_rate}")),
        }
    }
}

/// A parsed SDP and the audio stream the relay will carry.
#[derive(Debug, Clone)]
pub struct ParsedSdp {
    session: Session,
    audio: usize,
    /// Where the party wants media.
    pub remote: Remote,
}

/// Parses `sdp` from a party whose signalling came from `signalling_source`.
pub fn parse(sdp: &str, signalling_source: IpAddr) -> Result<ParsedSdp, MediaError> {
    if sdp.len() > MAX_SDP_LEN {
        return Err(MediaError::MalformedSdp(format!(
            "{} bytes, more than the {MAX_SDP_LEN} accepted",
            sdp.len()
        )));
    }
    let session =
        Session::parse(sdp.as_bytes()).map_err(|e| MediaError::MalformedSdp(e.to_string()))?;
    let mut unsupported = None;
    let mut audio = None;
    for (i, m) in session.medias.iter().enumerate() {
        if !m.media.eq_ignore_ascii_case("audio") || m.port == 0 {
            continue;
        }
        if carried(&m.parse_transport_proto()) {
            audio = Some(i);
            break;
        }
        unsupported.get_or_insert_with(|| m.proto.clone());
    }
    let Some(audio) = audio else {
        return Err(match unsupported {
            Some(proto) => MediaError::UnsupportedTransport(proto),
            None => MediaError::NoAudio,
        });
    };
    let remote = remote_of(&session, audio, signalling_source);
    Ok(ParsedSdp {
        session,
        audio,
        remote,
    })
}

/// Transports the relay carries: RTP with or without feedback, plain or SDES-SRTP.
fn carried(proto: &TransportProto) -> bool {
    matches!(
        proto,
        TransportProto::RtpAvp
            | TransportProto::RtpAvpf
            | TransportProto::RtpSavp
            | TransportProto::RtpSavpf
    )
}

fn remote_of(session: &Session, audio: usize, signalling_source: IpAddr) -> Remote {
    let media = &session.medias[audio];
    let connection = media.connections.first().or(session.connection.as_ref());
    let sdp_ip = connection.map(|c| c.try_address().ok().map(|a| a.ip));
    let ip = usable_ip(sdp_ip, signalling_source);
    let rtp = ip.map(|ip| SocketAddr::new(ip, media.port));
    let rtcp = match media.get_first_attribute_typed::<sdp_types::Rtcp>() {
        Some(Ok(a)) => {
            let a_ip = match a.connection_address.as_deref() {
                Some(text) => usable_ip(Some(text.parse().ok()), signalling_source),
                None => ip,
            };
            a_ip.map(|ip| SocketAddr::new(ip, a.port))
        }
        _ => match media.port.checked_add(1) {
            Some(port) => ip.map(|ip| SocketAddr::new(ip, port)),
            None => None,
        },
    };
    let mut payloads: Vec<(u8, Codec)> = Vec::new();
    for map in media.attributes_typed::<sdp_types::RtpMap>().flatten() {
        payloads.push((
            map.payload_type,
            Codec::from_rtpmap(&map.encoding_name, map.clock_rate),
        ));
    }
    for pt in media
        .fmt
        .split_ascii_whitespace()
        .filter_map(|f| f.parse::<u8>().ok())
    {
        if !payloads.iter().any(|(p, _)| *p == pt)
            && let Some(codec) = Codec::from_static(pt)
        {
            payloads.push((pt, codec));
        }
    }
    Remote {
        rtp,
        rtcp,
        rtcp_mux: media.has_attribute("rtcp-mux"),
        secure: media.parse_transport_proto().is_secure(),
        payloads,
    }
}

/// The address to send to, from the SDP's (outer `None`: no `c=`; inner `None`: not an IP).
///
/// - `0.0.0.0`/`::` (hold): nowhere, until the party's packets latch an address.
/// - no `c=`, a hostname, or a private/loopback address while signalling came from a
///   different, public one (the party is behind NAT): the signalling source.
/// - otherwise the SDP's address.
pub fn usable_ip(sdp_ip: Option<Option<IpAddr>>, signalling_source: IpAddr) -> Option<IpAddr> {
    match sdp_ip {
        Some(Some(ip)) if ip.is_unspecified() => None,
        Some(Some(ip)) if ip.is_multicast() => Some(signalling_source),
        Some(Some(ip)) if is_internal(ip) && !is_internal(signalling_source) => {
            Some(signalling_source)
        }
        Some(Some(ip)) if ip.is_loopback() && !signalling_source.is_loopback() => {
            Some(signalling_source)
        }
        Some(Some(ip)) => Some(ip),
        _ => Some(signalling_source),
    }
}

/// Addresses that are not reachable from the Internet: RFC 1918, CGNAT (RFC 6598), link-local,
/// unique-local IPv6.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private() || v4.is_link_local() || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

impl ParsedSdp {
    /// The SDP to forward to the other party: media to `advertise`, RTP port `rtp_port` (RTCP
    /// `rtp_port + 1`).
    pub fn rewrite(&self, advertise: IpAddr, rtp_port: u16) -> String {
        let mut session = self.session.clone();
        if let Some(c) = session.connection.as_mut() {
            point_at(c, advertise);
        }
        strip_ice(&mut session.attributes);
        for (i, media) in session.medias.iter_mut().enumerate() {
            strip_ice(&mut media.attributes);
            for c in &mut media.connections {
                point_at(c, advertise);
            }
            if i != self.audio {
                // Declined: port 0, and its a=rtcp (which would name the party's address) goes.
                media.port = 0;
                media
                    .attributes
                    .retain(|a| !a.attribute.eq_ignore_ascii_case("rtcp"));
                continue;
            }
            media.port = rtp_port;
            media.num_ports = None;
            let rtcp_port = rtp_port.saturating_add(1);
            for a in &mut media.attributes {
                if a.attribute.eq_ignore_ascii_case("rtcp") {
                    a.value = Some(rtcp_value(a.value.as_deref(), advertise, rtcp_port));
                }
            }
        }
        session.to_string()
    }

    /// Limits the audio stream to G.711 (PCMU, PCMA) plus `telephone-event` and comfort noise
    /// (`CN`), when it offers G.711 at all: a recorded call must use a codec the recorder can
    /// decode. Drops the `a=rtpmap`/`a=fmtp`/`a=rtcp-fb` lines of the removed payload types.
    /// Returns whether anything was removed.
    pub fn keep_only_g711(&mut self) -> bool {
        // Encoding names with their clock rate: events and comfort noise at G.711's 8 kHz.
        let keep = |codec: &str| {
            let mut parts = codec.split('/');
            let name = parts.next().unwrap_or_default();
            let rate = parts.next().unwrap_or("8000");
            ["PCMU", "PCMA", "telephone-event", "CN"]
                .iter()
                .any(|k| name.eq_ignore_ascii_case(k))
                && rate == "8000"
        };
        let Some(media) = self.session.medias.get_mut(self.audio) else {
            return false;
        };
        let names = payload_names(media);
        let kept: Vec<&str> = media
            .fmt
            .split_ascii_whitespace()
            .filter(|pt| names.iter().any(|(p, n)| p == pt && keep(n)))
            .collect();
        let has_g711 = kept.iter().any(|pt| {
            names
                .iter()
                .any(|(p, n)| p == pt && !n.starts_with("telephone-event") && !n.starts_with("CN"))
        });
        let total = media.fmt.split_ascii_whitespace().count();
        if !has_g711 || kept.len() == total {
            return false;
        }
        let kept: Vec<String> = kept.into_iter().map(str::to_owned).collect();
        media.fmt = kept.join(" ");
        media.attributes.retain(|a| {
            let per_payload = ["rtpmap", "fmtp", "rtcp-fb"]
                .iter()
                .any(|n| a.attribute.eq_ignore_ascii_case(n));
            if !per_payload {
                return true;
            }
            let pt = a
                .value
                .as_deref()
                .and_then(|v| v.split_ascii_whitespace().next())
                .unwrap_or_default();
            pt == "*" || kept.iter().any(|k| k == pt)
        });
        self.remote
            .payloads
            .retain(|(pt, _)| kept.iter().any(|k| *k == pt.to_string()));
        true
    }

    /// The index of the carried audio stream among the `m=` lines.
    pub fn audio_index(&self) -> usize {
        self.audio
    }
}

/// Every payload type of `media` with its encoding name (`PCMU/8000`), from `a=rtpmap` or the
/// static table (RFC 3551) for 0 (PCMU), 8 (PCMA) and 13 (CN).
fn payload_names(media: &sdp_types::Media) -> Vec<(String, String)> {
    media
        .fmt
        .split_ascii_whitespace()
        .map(|pt| {
            let mapped = media.attributes.iter().find_map(|a| {
                if !a.attribute.eq_ignore_ascii_case("rtpmap") {
                    return None;
                }
                let value = a.value.as_deref()?;
                let (p, name) = value.split_once(char::is_whitespace)?;
                (p == pt).then(|| name.trim().to_owned())
            });
            let name = mapped.unwrap_or_else(|| {
                match pt {
                    "0" => "PCMU/8000",
                    "8" => "PCMA/8000",
                    "13" => "CN/8000",
                    _ => "",
                }
                .to_owned()
            });
            (pt.to_owned(), name)
        })
        .collect()
}

/// Points a `c=` line at `advertise`, unless it is the unspecified (hold) address.
fn point_at(c: &mut Connection, advertise: IpAddr) {
    let hold = c.try_address().is_ok_and(|a| a.ip.is_unspecified());
    if !hold {
        *c = Connection::from_ip_addr(advertise);
    }
}

fn rtcp_value(old: Option<&str>, advertise: IpAddr, port: u16) -> String {
    let old_addr = old
        .and_then(|v| v.parse::<sdp_types::Rtcp>().ok())
        .and_then(|r| r.connection_address);
    match old_addr {
        None => port.to_string(),
        Some(addr) if addr.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified()) => {
            format!(
                "{port} IN {} {addr}",
                if addr.contains(':') { "IP6" } else { "IP4" }
            )
        }
        Some(_) => {
            let family = if advertise.is_ipv6() { "IP6" } else { "IP4" };
            format!("{port} IN {family} {advertise}")
        }
    }
}

fn strip_ice(attributes: &mut Vec<sdp_types::Attribute>) {
    attributes.retain(|a| {
        !ICE_ATTRIBUTES
            .iter()
            .any(|name| a.attribute.eq_ignore_ascii_case(name))
    });
}

#[cfg(test)]
#[path = "sdp_tests.rs"]
mod tests;
