//! SDP flavours: what the relay writes when the two parties of a call are on different kinds of
//! leg (a softphone on plain RTP/AVP, a browser on WebRTC), and how payload types map between
//! them. Sans-IO: strings and numbers in, strings and tables out.
//!
//! - [`webrtc_offer`] / [`webrtc_answer`]: the SDP a browser gets: ICE-lite, one host
//!   candidate (the relay's advertised address and WebRTC port), DTLS fingerprint and role,
//!   rtcp-mux, one audio stream in a BUNDLE group, sent with the leg's own SSRC (`a=ssrc` with a
//!   CNAME), whatever the sender's. The MID header extension (RFC 8843) is the one header
//!   extension the relay negotiates.
//! - [`plain_offer`]: the SDP a softphone gets from a browser's offer: one `m=audio` on
//!   RTP/AVP with the codecs both sides can use.
//! - the answer to a softphone's offer is that offer rewritten
//!   ([`ParsedSdp::plain_answer`](crate::sdp::ParsedSdp::plain_answer)), since an answer must
//!   mirror its offer's `m=` lines.
//!
//! Codecs pass through untouched; [`webrtc_formats`] keeps those a WebRTC leg carries
//! ([`carried`]: G.711, G.722, Opus, telephone-event, comfort noise) and moves payload types in
//! 64–95, which rtcp-mux reserves for RTCP, to free dynamic numbers. [`PtMap`] then rewrites the
//! payload type of each forwarded packet where the two legs number a codec differently.

use crate::sdp::{Direction, Format, MID_EXTENSION, ParsedSdp, Setup};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

/// The `o=` line of the SDPs the relay writes for one party: a fixed session id, and a version
/// that grows with every SDP (RFC 3264 §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    id: u64,
    version: u64,
}

impl Origin {
    /// A new origin with session id `id`.
    pub fn new(id: u64) -> Origin {
        Origin { id, version: 0 }
    }

    fn line(&mut self, ip: IpAddr) -> String {
        self.version += 1;
        format!(
            "o=- {} {} IN {} {ip}\r\n",
            self.id,
            self.version,
            family(ip)
        )
    }
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv6() { "IP6" } else { "IP4" }
}

/// The relay's side of a WebRTC leg, as its SDPs name it.
#[derive(Debug, Clone, Copy)]
pub struct WebRtcLocal<'a> {
    /// The host candidate: advertised address, WebRTC port.
    pub candidate: SocketAddr,
    /// Local ICE username fragment.
    pub ufrag: &'a str,
    /// Local ICE password.
    pub pwd: &'a str,
    /// Local DTLS certificate fingerprint (`sha-256 AB:…`).
    pub fingerprint: &'a str,
    /// The audio stream's mid.
    pub mid: &'a str,
    /// The id of the MID header extension the relay writes, if any.
    pub mid_ext: Option<u8>,
    /// The SSRC the relay sends with.
    pub ssrc: u32,
}

/// Whether a WebRTC leg carries `f` (str0m in RTP mode needs a codec it knows for every
/// payload type; these are the audio ones browsers and softphones share).
pub fn carried(f: &Format) -> bool {
    let rate = f.rate;
    (f.is("PCMU") && rate == 8000 && f.pt == 0)
        || (f.is("PCMA") && rate == 8000 && f.pt == 8)
        || (f.is("G722") && rate == 8000 && f.pt == 9)
        || (f.is("CN") && rate == 8000 && f.pt == 13)
        || (f.is("opus") && rate == 48000)
        || (f.is("telephone-event") && (rate == 8000 || rate == 48000))
}

/// The formats of `offered` a WebRTC leg can carry, in order, with payload types in 64–95 moved
/// to free numbers in 96–127 (or 35–63). Their payload types then name the codecs on the
/// WebRTC leg.
pub fn webrtc_formats(offered: &[Format]) -> Vec<Format> {
    let mut out: Vec<Format> = offered.iter().filter(|f| carried(f)).cloned().collect();
    let mut used: Vec<u8> = out.iter().map(|f| f.pt).collect();
    for f in &mut out {
        if (64..=95).contains(&f.pt)
            && let Some(free) = (96..=127u8).chain(35..=63).find(|p| !used.contains(p))
        {
            f.pt = free;
            used.push(free);
        }
    }
    out.retain(|f| !(64..=95).contains(&f.pt));
    out
}

/// For each format of `wanted` (in its order), the same codec among `onto`, with `onto`'s
/// payload type and parameters; codecs `onto` lacks are left out.
pub fn map_onto(wanted: &[Format], onto: &[Format]) -> Vec<Format> {
    let mut out: Vec<Format> = Vec::new();
    for w in wanted {
        if let Some(o) = onto
            .iter()
            .find(|o| o.same_codec(w) && !out.iter().any(|x| x.pt == o.pt))
        {
            out.push(o.clone());
        }
    }
    out
}

/// Whether `formats` has a codec that is not telephone-event or comfort noise.
pub fn has_audio_codec(formats: &[Format]) -> bool {
    formats
        .iter()
        .any(|f| !f.is("telephone-event") && !f.is("CN"))
}

/// Payload type rewriting for packets going from one leg to the other: `to[pt]` is the number
/// the receiving leg uses for the codec the sending leg numbers `pt`; `None` when the receiving
/// leg does not take that codec (the packet is dropped).
#[derive(Clone, PartialEq, Eq)]
pub struct PtMap {
    to: [Option<u8>; 128],
}

impl std::fmt::Debug for PtMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pairs: Vec<(usize, u8)> = self
            .to
            .iter()
            .enumerate()
            .filter_map(|(from, to)| to.map(|to| (from, to)))
            .collect();
        f.debug_struct("PtMap").field("to", &pairs).finish()
    }
}

impl PtMap {
    /// The map from the formats of the sending leg to those of the receiving leg, by codec.
    pub fn between(from: &[Format], to: &[Format]) -> PtMap {
        let mut map = PtMap { to: [None; 128] };
        for f in from {
            if let Some(t) = to.iter().find(|t| t.same_codec(f))
                && let Some(slot) = map.to.get_mut(usize::from(f.pt))
            {
                *slot = Some(t.pt);
            }
        }
        map
    }

    /// The receiving leg's payload type for `pt`.
    pub fn get(&self, pt: u8) -> Option<u8> {
        self.to.get(usize::from(pt)).copied().flatten()
    }
}

fn write_formats(out: &mut String, formats: &[Format], ptime: Option<&str>) {
    for f in formats {
        let _ = write!(out, "a=rtpmap:{} {}\r\n", f.pt, f.rtpmap());
        if let Some(fmtp) = &f.fmtp {
            let _ = write!(out, "a=fmtp:{} {fmtp}\r\n", f.pt);
        }
    }
    if let Some(ptime) = ptime {
        let _ = write!(out, "a=ptime:{ptime}\r\n");
    }
}

fn pt_list(formats: &[Format]) -> String {
    let pts: Vec<String> = formats.iter().map(|f| f.pt.to_string()).collect();
    pts.join(" ")
}

/// The audio `m=` section of a WebRTC SDP.
fn webrtc_audio(
    out: &mut String,
    local: &WebRtcLocal<'_>,
    formats: &[Format],
    direction: Direction,
    setup: Setup,
    ptime: Option<&str>,
) {
    let ip = local.candidate.ip();
    let port = local.candidate.port();
    let fam = family(ip);
    let _ = write!(
        out,
        "m=audio {port} UDP/TLS/RTP/SAVPF {}\r\nc=IN {fam} {ip}\r\na=rtcp:{port} IN {fam} {ip}\r\n\
         a=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=fingerprint:{}\r\na=setup:{}\r\na=mid:{}\r\n\
         a={}\r\na=rtcp-mux\r\n",
        pt_list(formats),
        local.ufrag,
        local.pwd,
        local.fingerprint,
        setup.as_str(),
        local.mid,
        direction.as_str(),
    );
    if let Some(id) = local.mid_ext {
        let _ = write!(out, "a=extmap:{id} {MID_EXTENSION}\r\n");
    }
    write_formats(out, formats, ptime);
    let _ = write!(
        out,
        "a=ssrc:{ssrc} cname:kubepbx-{ssrc:08x}\r\n\
         a=candidate:1 1 udp 2130706431 {ip} {port} typ host\r\na=end-of-candidates\r\n",
        ssrc = local.ssrc,
    );
}

fn session_head(origin: &mut Origin, ip: IpAddr, bundle: &str) -> String {
    let mut out = String::with_capacity(1024);
    out.push_str("v=0\r\n");
    out.push_str(&origin.line(ip));
    let _ = write!(
        out,
        "s=-\r\nt=0 0\r\na=group:BUNDLE {bundle}\r\na=ice-lite\r\n"
    );
    out
}

/// A WebRTC offer: one audio stream with `formats` (their payload types are the WebRTC leg's),
/// `a=setup:actpass`.
pub fn webrtc_offer(
    local: &WebRtcLocal<'_>,
    formats: &[Format],
    direction: Direction,
    ptime: Option<&str>,
    origin: &mut Origin,
) -> String {
    let mut out = session_head(origin, local.candidate.ip(), local.mid);
    webrtc_audio(&mut out, local, formats, direction, Setup::ActPass, ptime);
    out
}

/// The WebRTC answer to a browser's `offer`: its audio stream (mid `local.mid`, the offer's)
/// accepted with `formats` (payload types of the offer), in the DTLS role `setup`; every other
/// stream rejected (port 0), as JSEP wants, with its mid kept.
pub fn webrtc_answer(
    local: &WebRtcLocal<'_>,
    offer: &ParsedSdp,
    formats: &[Format],
    direction: Direction,
    setup: Setup,
    origin: &mut Origin,
) -> String {
    let mut out = session_head(origin, local.candidate.ip(), local.mid);
    for (i, media) in offer.medias().iter().enumerate() {
        if i == offer.audio_index() {
            webrtc_audio(
                &mut out,
                local,
                formats,
                direction,
                setup,
                offer.ptime.as_deref(),
            );
            continue;
        }
        let fmt = if media.fmt.trim().is_empty() {
            "0"
        } else {
            media.fmt.trim()
        };
        let _ = write!(out, "m={} 0 {} {fmt}\r\n", media.media, media.proto);
        if let Some(Some(mid)) = media.get_first_attribute_value("mid") {
            let _ = write!(out, "a=mid:{}\r\n", mid.trim());
        }
    }
    out
}

/// A plain RTP/AVP SDP for a softphone: one audio stream on the relay's `ip`/`port` (RTCP on
/// `port + 1`) with `formats`.
pub fn plain_offer(
    ip: IpAddr,
    port: u16,
    formats: &[Format],
    direction: Direction,
    ptime: Option<&str>,
    origin: &mut Origin,
) -> String {
    let mut out = String::with_capacity(512);
    out.push_str("v=0\r\n");
    out.push_str(&origin.line(ip));
    let fam = family(ip);
    let _ = write!(
        out,
        "s=-\r\nc=IN {fam} {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {}\r\na=rtcp:{}\r\n",
        pt_list(formats),
        port.saturating_add(1),
    );
    write_formats(&mut out, formats, ptime);
    let _ = write!(out, "a={}\r\n", direction.as_str());
    out
}

#[cfg(test)]
#[path = "flavour_tests.rs"]
mod tests;
