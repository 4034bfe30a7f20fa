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
//!
//! An audio stream on `UDP/TLS/RTP/SAVP(F)` with `a=fingerprint` and `a=ice-ufrag`/`a=ice-pwd`
//! is a browser's (WebRTC, DTLS-SRTP): [`ParsedSdp::kind`] says [`LegKind::WebRtc`] and
//! [`ParsedSdp::webrtc`] holds its ICE credentials, fingerprint, DTLS role and mid. Such an SDP
//! is never rewritten in place: [`crate::flavour`] writes what the other party gets.

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

/// What kind of leg an SDP is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegKind {
    /// Plain RTP/AVP(F) (or SDES-SRTP passed through): softphones.
    Plain,
    /// WebRTC: ICE, DTLS-SRTP, rtcp-mux (`UDP/TLS/RTP/SAVPF`): browsers.
    WebRtc,
}

/// One payload type of the audio stream, as its SDP maps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    /// Payload type number.
    pub pt: u8,
    /// Encoding name as written (`PCMU`, `opus`, `telephone-event`).
    pub name: String,
    /// RTP clock rate.
    pub rate: u32,
    /// Channels (the third rtpmap field), when given.
    pub channels: Option<u8>,
    /// The `a=fmtp` parameters, when given.
    pub fmtp: Option<String>,
}

impl Format {
    /// `name/rate[/channels]`, as in `a=rtpmap`.
    pub fn rtpmap(&self) -> String {
        match self.channels {
            Some(ch) => format!("{}/{}/{ch}", self.name, self.rate),
            None => format!("{}/{}", self.name, self.rate),
        }
    }

    /// Whether `self` and `other` are the same codec (name, rate and channels; payload type and
    /// fmtp aside).
    pub fn same_codec(&self, other: &Format) -> bool {
        self.name.eq_ignore_ascii_case(&other.name)
            && self.rate == other.rate
            && self.channels.unwrap_or(1) == other.channels.unwrap_or(1)
    }

    /// Whether this is `name` (case-insensitive).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// What the recorder makes of it.
    pub fn codec(&self) -> Codec {
        Codec::from_rtpmap(&self.name, self.rate)
    }
}

/// The DTLS role an SDP asks for (`a=setup`, RFC 4145/8842).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// Either role (offers).
    ActPass,
    /// The party is the DTLS client.
    Active,
    /// The party is the DTLS server.
    Passive,
    /// No connection yet.
    HoldConn,
}

impl Setup {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Setup::ActPass => "actpass",
            Setup::Active => "active",
            Setup::Passive => "passive",
            Setup::HoldConn => "holdconn",
        }
    }
}

/// The media direction attribute of the audio stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// `a=sendrecv` (also the default when none is given).
    #[default]
    SendRecv,
    /// `a=sendonly` (the party puts the other on hold).
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

impl Direction {
    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    fn parse(name: &str) -> Option<Direction> {
        [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ]
        .into_iter()
        .find(|d| d.as_str().eq_ignore_ascii_case(name))
    }
}

/// What a WebRTC SDP says about its transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebRtcParams {
    /// `a=ice-ufrag`.
    pub ufrag: String,
    /// `a=ice-pwd`.
    pub pwd: String,
    /// `a=fingerprint` value: `sha-256 AB:CD:…`.
    pub fingerprint: String,
    /// `a=setup` (absent: `actpass` in an offer).
    pub setup: Setup,
    /// `a=mid` of the audio stream.
    pub mid: Option<String>,
    /// SSRCs the party announced (`a=ssrc`).
    pub ssrcs: Vec<u32>,
    /// The id of the MID header extension (`a=extmap:N urn:ietf:params:rtp-hdrext:sdes:mid`),
    /// which binds unsignalled SSRCs to the stream.
    pub mid_ext: Option<u8>,
}

/// The URI of the MID RTP header extension (RFC 8843).
pub const MID_EXTENSION: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";

/// A parsed SDP and the audio stream the relay will carry.
#[derive(Debug, Clone)]
pub struct ParsedSdp {
    session: Session,
    audio: usize,
    /// Where the party wants media (plain legs; meaningless for WebRTC).
    pub remote: Remote,
    /// Plain or WebRTC.
    pub kind: LegKind,
    /// The audio stream's payload types, in the SDP's order of preference.
    pub formats: Vec<Format>,
    /// The audio stream's direction.
    pub direction: Direction,
    /// `a=ptime` of the audio stream.
    pub ptime: Option<String>,
    /// ICE/DTLS parameters, for [`LegKind::WebRtc`].
    pub webrtc: Option<WebRtcParams>,
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
        let proto = m.parse_transport_proto();
        if carried(&proto) {
            audio = Some((i, LegKind::Plain));
            break;
        }
        if is_dtls(&proto) && webrtc_params(&session, m).is_some() {
            audio = Some((i, LegKind::WebRtc));
            break;
        }
        unsupported.get_or_insert_with(|| m.proto.clone());
    }
    let Some((audio, kind)) = audio else {
        return Err(match unsupported {
            Some(proto) => MediaError::UnsupportedTransport(proto),
            None => MediaError::NoAudio,
        });
    };
    let remote = remote_of(&session, audio, signalling_source);
    let media = &session.medias[audio];
    let webrtc = match kind {
        LegKind::WebRtc => webrtc_params(&session, media),
        LegKind::Plain => None,
    };
    let direction = media
        .attributes
        .iter()
        .chain(&session.attributes)
        .find_map(|a| Direction::parse(&a.attribute))
        .unwrap_or_default();
    let ptime = media
        .get_first_attribute_value("ptime")
        .flatten()
        .map(|v| v.trim().to_owned());
    let formats = formats_of(media);
    Ok(ParsedSdp {
        session,
        audio,
        remote,
        kind,
        formats,
        direction,
        ptime,
        webrtc,
    })
}

/// DTLS-SRTP transports (WebRTC).
fn is_dtls(proto: &TransportProto) -> bool {
    matches!(
        proto,
        TransportProto::UdpTlsRtpSavpf | TransportProto::UdpTlsRtpSavp
    )
}

/// The ICE credentials, fingerprint and DTLS role of `media` (falling back to session-level
/// attributes); `None` when any of credentials or fingerprint is missing.
fn webrtc_params(session: &Session, media: &sdp_types::Media) -> Option<WebRtcParams> {
    let value = |name: &str| {
        media
            .get_first_attribute_value(name)
            .or_else(|| session.get_first_attribute_value(name))
            .flatten()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let setup = match value("setup")
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("active") => Setup::Active,
        Some("passive") => Setup::Passive,
        Some("holdconn") => Setup::HoldConn,
        _ => Setup::ActPass,
    };
    let mut ssrcs: Vec<u32> = media
        .get_attribute_values("ssrc")
        .flatten()
        .filter_map(|v| v.split_ascii_whitespace().next()?.parse().ok())
        .collect();
    ssrcs.dedup();
    let mid_ext = media
        .get_attribute_values("extmap")
        .flatten()
        .find_map(|v| {
            let mut parts = v.split_ascii_whitespace();
            let id = parts.next()?.split('/').next()?.parse::<u8>().ok()?;
            (parts.next()? == MID_EXTENSION && (1..=14).contains(&id)).then_some(id)
        });
    Some(WebRtcParams {
        mid_ext,
        ufrag: value("ice-ufrag")?,
        pwd: value("ice-pwd")?,
        fingerprint: value("fingerprint")?,
        setup,
        mid: media
            .get_first_attribute_value("mid")
            .flatten()
            .map(|v| v.trim().to_owned()),
        ssrcs,
    })
}

/// The payload types of `media` in `m=` order, with their rtpmap (or the static table) and
/// fmtp. Types with neither a mapping nor a static meaning are left out.
fn formats_of(media: &sdp_types::Media) -> Vec<Format> {
    let mut out: Vec<Format> = Vec::new();
    for pt in media
        .fmt
        .split_ascii_whitespace()
        .filter_map(|f| f.parse::<u8>().ok())
        .filter(|pt| *pt < 128)
    {
        if out.iter().any(|f| f.pt == pt) {
            continue;
        }
        let mapped = media
            .attributes_typed::<sdp_types::RtpMap>()
            .flatten()
            .find(|m| m.payload_type == pt);
        let (name, rate, channels) = match mapped {
            Some(m) => (
                m.encoding_name.clone(),
                m.clock_rate,
                m.encoding_params
                    .as_deref()
                    .and_then(|c| c.trim().parse().ok()),
            ),
            None => match static_format(pt) {
                Some((name, rate)) => (name.to_owned(), rate, None),
                None => continue,
            },
        };
        let fmtp = media.get_attribute_values("fmtp").flatten().find_map(|v| {
            let (p, params) = v.trim().split_once(char::is_whitespace)?;
            (p.parse::<u8>().ok()? == pt).then(|| params.trim().to_owned())
        });
        out.push(Format {
            pt,
            name,
            rate,
            channels,
            fmtp,
        });
    }
    out
}

/// The static payload types of RFC 3551 a relay may meet.
fn static_format(pt: u8) -> Option<(&'static str, u32)> {
    Some(match pt {
        0 => ("PCMU", 8000),
        3 => ("GSM", 8000),
        4 => ("G723", 8000),
        8 => ("PCMA", 8000),
        9 => ("G722", 8000),
        13 => ("CN", 8000),
        18 => ("G729", 8000),
        _ => return None,
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
        self.formats
            .retain(|f| kept.iter().any(|k| *k == f.pt.to_string()));
        true
    }

    /// The answer to this offer (from a plain party) when the answering party is on another
    /// kind of leg: the offer rewritten like [`Self::rewrite`], its audio stream limited to
    /// `formats` (payload types of this offer) with `direction`.
    pub fn plain_answer(
        &self,
        advertise: IpAddr,
        rtp_port: u16,
        formats: &[Format],
        direction: Direction,
    ) -> String {
        let mut answer = self.clone();
        if let Some(media) = answer.session.medias.get_mut(answer.audio) {
            let kept: Vec<String> = formats.iter().map(|f| f.pt.to_string()).collect();
            media.fmt = kept.join(" ");
            media.attributes.retain(|a| {
                let name = a.attribute.to_ascii_lowercase();
                if Direction::parse(&name).is_some() || name == "rtcp-mux" {
                    return false;
                }
                if !["rtpmap", "fmtp", "rtcp-fb"].contains(&name.as_str()) {
                    return true;
                }
                let pt = a
                    .value
                    .as_deref()
                    .and_then(|v| v.split_ascii_whitespace().next())
                    .unwrap_or_default();
                kept.iter().any(|k| k == pt)
            });
            for f in formats {
                let mapped = media.attributes.iter().any(|a| {
                    a.attribute.eq_ignore_ascii_case("rtpmap")
                        && a.value
                            .as_deref()
                            .and_then(|v| v.split_ascii_whitespace().next())
                            == Some(f.pt.to_string().as_str())
                });
                if !mapped && f.pt >= 96 {
                    media.attributes.push(sdp_types::Attribute {
                        attribute: "rtpmap".to_owned(),
                        value: Some(format!("{} {}", f.pt, f.rtpmap())),
                    });
                }
            }
            media.attributes.push(sdp_types::Attribute {
                attribute: direction.as_str().to_owned(),
                value: None,
            });
        }
        answer
            .session
            .attributes
            .retain(|a| Direction::parse(&a.attribute).is_none());
        answer.rewrite(advertise, rtp_port)
    }

    /// The index of the carried audio stream among the `m=` lines.
    pub fn audio_index(&self) -> usize {
        self.audio
    }

    /// Every `m=` line, as parsed.
    pub fn medias(&self) -> &[sdp_types::Media] {
        &self.session.medias
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
