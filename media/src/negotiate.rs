//! The offer/answer half of a session task: what each party's SDP does to its leg, and which
//! SDP flavour ([`crate::flavour`]) the other party gets.
//!
//! | offer from | other leg | the other party gets |
//! |---|---|---|
//! | plain | plain | the offer rewritten ([`ParsedSdp::rewrite`]) |
//! | plain | WebRTC | a WebRTC offer with the carried codecs of the offer ([`flavour::webrtc_offer`]) |
//! | WebRTC | plain | a plain offer with the carried codecs of the offer ([`flavour::plain_offer`]) |
//! | WebRTC | WebRTC | a WebRTC offer from the relay's own endpoint for that leg |
//! | any | either | both: `sdp` plain, `webrtc_sdp` WebRTC; the first answer picks |
//!
//! The answer comes back the same way: a plain answer to a plain offer is rewritten; a WebRTC
//! answer to a plain offer becomes the offer rewritten with the codecs the browser kept
//! ([`ParsedSdp::plain_answer`]); any answer to a browser's offer becomes a WebRTC answer with
//! the codecs the answerer kept, in the browser's payload types. Leg kinds are set once: from
//! the SDP for the offering party, from [`PeerMedia`](crate::PeerMedia) for the other (an
//! "either" leg becomes what its first answer is, and the resources of the other kind are
//! released). Re-offers (hold, resume, codec changes) from either side follow the same table
//! with the legs as they are; a WebRTC leg keeps its ICE credentials, DTLS role and keys, and
//! its payload types (str0m fixes them when the leg is made).

use crate::api::Side;
use crate::driver::SessionTask;
use crate::flavour::{self, Origin, PtMap, WebRtcLocal, has_audio_codec, map_onto, webrtc_formats};
use crate::hub::Route;
use crate::recorder::RecordMsg;
use crate::sdp::{Direction, Format, LegKind, ParsedSdp, Setup, WebRtcParams};
use crate::webrtc::{WebRtcLeg, WebRtcShared};
use crate::{MediaError, SdpResult};
use std::time::Instant;
use str0m::IceCreds;

/// What a leg is, or may still become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// Plain RTP.
    Plain,
    /// WebRTC.
    WebRtc,
    /// Either, until the first answer (forked offers).
    Either,
}

impl Want {
    fn name(self) -> &'static str {
        match self {
            Want::Plain => "plain RTP",
            Want::WebRtc => "WebRTC",
            Want::Either => "either",
        }
    }
}

/// The negotiation state of a session.
#[derive(Debug)]
pub(crate) struct Negotiation {
    kinds: [Want; 2],
    /// The formats each party uses, numbered as on its own leg.
    formats: [Vec<Format>; 2],
    /// Each plain party's stream is SDES-SRTP.
    secure: [bool; 2],
    /// Each browser's ICE/DTLS parameters, from its latest SDP.
    remote: [Option<WebRtcParams>; 2],
    /// `o=` of the SDPs the relay writes for each party.
    origins: [Origin; 2],
    /// The latest offer and who made it.
    last_offer: Option<(Side, ParsedSdp)>,
}

impl Negotiation {
    /// A session whose legs are (to be) `kinds`.
    pub(crate) fn new(kinds: [Want; 2], origins: [Origin; 2]) -> Negotiation {
        Negotiation {
            kinds,
            formats: [Vec::new(), Vec::new()],
            secure: [false, false],
            remote: [None, None],
            origins,
            last_offer: None,
        }
    }
}

fn local_of<'a>(rtc: &'a WebRtcLeg, shared: &'a WebRtcShared) -> WebRtcLocal<'a> {
    WebRtcLocal {
        candidate: shared.candidate,
        ufrag: rtc.ufrag(),
        pwd: rtc.pwd(),
        fingerprint: &shared.fingerprint,
        mid: rtc.mid(),
        mid_ext: rtc.mid_ext(),
        ssrc: rtc.ssrc(),
    }
}

fn proto_of(parsed: &ParsedSdp) -> String {
    parsed
        .medias()
        .get(parsed.audio_index())
        .map(|m| m.proto.clone())
        .unwrap_or_default()
}

/// The direction to offer a browser for a plain offer: an old-style hold (`c=0.0.0.0`) means
/// the party takes nothing.
fn offered_direction(parsed: &ParsedSdp) -> Direction {
    if parsed.kind == LegKind::Plain && parsed.remote.rtp.is_none() {
        match parsed.direction {
            Direction::SendRecv | Direction::RecvOnly => Direction::Inactive,
            d => d,
        }
    } else {
        parsed.direction
    }
}

/// The MID header extension id in the relay's own WebRTC offers.
const RELAY_MID_EXTENSION: u8 = 1;

fn internal(what: &str) -> MediaError {
    MediaError::Unavailable(format!("media session state: {what}"))
}

impl SessionTask {
    /// An offer from `side`: sets up that party's leg, returns what the other party gets.
    pub(crate) fn offer(
        &mut self,
        side: Side,
        parsed: ParsedSdp,
        now: Instant,
    ) -> Result<SdpResult, MediaError> {
        let (s, other) = (side.index(), side.other());
        let o = other.index();
        self.decide(side, &parsed)?;
        match parsed.kind {
            LegKind::WebRtc => {
                let (mid, mid_ext) = match &parsed.webrtc {
                    Some(w) => (w.mid.clone().unwrap_or_else(|| "0".to_owned()), w.mid_ext),
                    None => ("0".to_owned(), None),
                };
                self.ensure_webrtc(side, &parsed.formats, &mid, mid_ext, now)?;
                let rtc = self.rtcs[s]
                    .as_ref()
                    .ok_or_else(|| internal("no WebRTC leg"))?;
                if let (Some(old), Some(new)) = (&self.negotiation.remote[s], &parsed.webrtc)
                    && old.ufrag != new.ufrag
                {
                    tracing::warn!(target: "media", session = %self.id, "browser re-offer restarts ICE, which the relay does not support; keeping the current connection");
                }
                self.negotiation.formats[s] = map_onto(&parsed.formats, rtc.formats());
                self.negotiation.remote[s] = parsed.webrtc.clone();
            }
            LegKind::Plain => {
                self.core.set_remote(side, &parsed.remote);
                self.negotiation.formats[s] = parsed.formats.clone();
                self.negotiation.secure[s] = parsed.remote.secure;
            }
        }
        let want = self.negotiation.kinds[o];
        let plain = if matches!(want, Want::Plain | Want::Either) {
            let port = self.legs[o]
                .as_ref()
                .map(|l| l.lease.rtp())
                .ok_or_else(|| internal("no plain leg"))?;
            Some(match parsed.kind {
                LegKind::Plain => parsed.rewrite(self.advertise, port),
                LegKind::WebRtc => flavour::plain_offer(
                    self.advertise,
                    port,
                    &self.negotiation.formats[s],
                    parsed.direction,
                    parsed.ptime.as_deref(),
                    &mut self.negotiation.origins[o],
                ),
            })
        } else {
            None
        };
        let webrtc = if matches!(want, Want::WebRtc | Want::Either) {
            match self.webrtc_offer_for(other, &parsed, now) {
                Ok(sdp) => Some(sdp),
                Err(e) if want == Want::Either => {
                    tracing::debug!(target: "media", session = %self.id, error = %e, "no WebRTC flavour for the forked offer");
                    None
                }
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        self.negotiation.last_offer = Some((side, parsed));
        self.tell_recorder(side);
        self.update_pt_maps();
        match (plain, webrtc) {
            (Some(sdp), webrtc_sdp) => Ok(SdpResult { sdp, webrtc_sdp }),
            (None, Some(sdp)) => Ok(SdpResult {
                sdp,
                webrtc_sdp: None,
            }),
            (None, None) => Err(MediaError::NoAudio),
        }
    }

    /// The WebRTC offer for the browser on `to`, from the offer `parsed` of the other party.
    fn webrtc_offer_for(
        &mut self,
        to: Side,
        parsed: &ParsedSdp,
        now: Instant,
    ) -> Result<String, MediaError> {
        let from = to.other();
        if parsed.kind == LegKind::Plain && parsed.remote.secure {
            return Err(MediaError::UnsupportedTransport(format!(
                "{} towards a browser (SDES-SRTP cannot be bridged to WebRTC)",
                proto_of(parsed)
            )));
        }
        let source = self.negotiation.formats[from.index()].clone();
        self.ensure_webrtc(to, &source, "0", Some(RELAY_MID_EXTENSION), now)?;
        let (Some(rtc), Some(access)) = (self.rtcs[to.index()].as_ref(), self.webrtc.as_ref())
        else {
            return Err(internal("no WebRTC leg"));
        };
        let formats = map_onto(&source, rtc.formats());
        if !has_audio_codec(&formats) {
            return Err(MediaError::NoAudio);
        }
        let local = local_of(rtc, &access.shared);
        Ok(flavour::webrtc_offer(
            &local,
            &formats,
            offered_direction(parsed),
            parsed.ptime.as_deref(),
            &mut self.negotiation.origins[to.index()],
        ))
    }

    /// An answer from `side` to the latest offer: completes that party's leg, returns what the
    /// offering party gets.
    pub(crate) fn answer(
        &mut self,
        side: Side,
        parsed: ParsedSdp,
        now: Instant,
    ) -> Result<SdpResult, MediaError> {
        let (a, offerer) = (side.index(), side.other());
        let s = offerer.index();
        let Some((_, offer)) = self.negotiation.last_offer.clone() else {
            return Err(MediaError::UnknownSession);
        };
        self.decide(side, &parsed)?;
        match parsed.kind {
            LegKind::WebRtc => {
                let remote = parsed
                    .webrtc
                    .clone()
                    .ok_or_else(|| internal("WebRTC SDP without ICE parameters"))?;
                let rtc = self.rtcs[a]
                    .as_mut()
                    .ok_or_else(|| MediaError::UnsupportedTransport(proto_of(&parsed)))?;
                let chosen = map_onto(&parsed.formats, rtc.formats());
                if !has_audio_codec(&chosen) {
                    return Err(MediaError::NoAudio);
                }
                // The browser's role decides ours; an answer must not say actpass (RFC 8842),
                // so anything but passive makes the browser the client.
                rtc.start(
                    &remote,
                    remote.setup == Setup::Passive,
                    now,
                    &mut self.outs[a],
                );
                self.negotiation.formats[a] = chosen;
                self.negotiation.remote[a] = Some(remote);
                self.flush_webrtc(side, now);
            }
            LegKind::Plain => {
                self.core.set_remote(side, &parsed.remote);
                self.negotiation.formats[a] = parsed.formats.clone();
                self.negotiation.secure[a] = parsed.remote.secure;
            }
        }
        let sdp = match self.negotiation.kinds[s] {
            Want::WebRtc => {
                let remote = self.negotiation.remote[s]
                    .clone()
                    .ok_or_else(|| internal("browser offer without ICE parameters"))?;
                let (Some(rtc), Some(access)) = (self.rtcs[s].as_mut(), self.webrtc.as_ref())
                else {
                    return Err(internal("no WebRTC leg"));
                };
                let chosen = map_onto(&self.negotiation.formats[a], rtc.formats());
                if !has_audio_codec(&chosen) {
                    return Err(MediaError::NoAudio);
                }
                // The browser offered actpass (or asked for a role): we serve unless it wants to.
                let active = match rtc.setup() {
                    Some(setup) => setup == Setup::Active,
                    None => remote.setup == Setup::Passive,
                };
                rtc.start(&remote, active, now, &mut self.outs[s]);
                let setup = if active {
                    Setup::Active
                } else {
                    Setup::Passive
                };
                let local = local_of(rtc, &access.shared);
                let sdp = flavour::webrtc_answer(
                    &local,
                    &offer,
                    &chosen,
                    parsed.direction,
                    setup,
                    &mut self.negotiation.origins[s],
                );
                self.negotiation.formats[s] = chosen;
                self.flush_webrtc(offerer, now);
                sdp
            }
            Want::Plain | Want::Either => {
                let port = self.legs[s]
                    .as_ref()
                    .map(|l| l.lease.rtp())
                    .ok_or_else(|| internal("no plain leg"))?;
                match parsed.kind {
                    LegKind::Plain => parsed.rewrite(self.advertise, port),
                    LegKind::WebRtc => {
                        let formats = map_onto(&self.negotiation.formats[a], &offer.formats);
                        offer.plain_answer(self.advertise, port, &formats, parsed.direction)
                    }
                }
            }
        };
        self.core.set_answered(now);
        self.tell_recorder(side);
        self.tell_recorder(offerer);
        self.update_pt_maps();
        Ok(SdpResult {
            sdp,
            webrtc_sdp: None,
        })
    }

    /// Checks `parsed` against the kind of `side`'s leg, deciding an "either" leg (and
    /// releasing the resources of the kind it does not become).
    fn decide(&mut self, side: Side, parsed: &ParsedSdp) -> Result<(), MediaError> {
        let i = side.index();
        match (self.negotiation.kinds[i], parsed.kind) {
            (Want::Plain, LegKind::Plain) | (Want::WebRtc, LegKind::WebRtc) => Ok(()),
            (Want::Either, LegKind::Plain) => {
                self.negotiation.kinds[i] = Want::Plain;
                self.drop_webrtc(side);
                self.core.set_kind(side, LegKind::Plain);
                Ok(())
            }
            (Want::Either, LegKind::WebRtc) if self.rtcs[i].is_some() => {
                self.negotiation.kinds[i] = Want::WebRtc;
                self.legs[i] = None;
                self.core.set_kind(side, LegKind::WebRtc);
                Ok(())
            }
            (want, _) => Err(MediaError::UnsupportedTransport(format!(
                "{} on a leg set up for {}",
                proto_of(parsed),
                want.name()
            ))),
        }
    }

    /// Makes `side`'s WebRTC leg, with the carried codecs of `formats` and the audio stream
    /// `mid`, unless it exists.
    fn ensure_webrtc(
        &mut self,
        side: Side,
        formats: &[Format],
        mid: &str,
        mid_ext: Option<u8>,
        now: Instant,
    ) -> Result<(), MediaError> {
        if self.rtcs[side.index()].is_some() {
            return Ok(());
        }
        let Some(access) = &self.webrtc else {
            return Err(MediaError::UnsupportedTransport(
                "UDP/TLS/RTP/SAVPF (WebRTC is not enabled on this relay)".to_owned(),
            ));
        };
        let formats = webrtc_formats(formats);
        if !has_audio_codec(&formats) {
            return Err(MediaError::NoAudio);
        }
        for _ in 0..4 {
            let creds = IceCreds::new();
            let route = Route {
                side,
                tx: access.tx.clone(),
            };
            if access.hub.register(&creds.ufrag, route) {
                let leg = WebRtcLeg::new(&access.shared, creds, &formats, mid, mid_ext, now);
                self.rtcs[side.index()] = Some(Box::new(leg));
                if self.negotiation.kinds[side.index()] == Want::WebRtc {
                    self.core.set_kind(side, LegKind::WebRtc);
                }
                return Ok(());
            }
        }
        Err(internal("no free ICE username"))
    }

    /// Payload type maps from the parties' formats; none between two plain legs.
    fn update_pt_maps(&mut self) {
        // An undecided leg counts as plain until its answer: early media passes unchanged.
        let plain = |s: Side| self.core.kind(s) == LegKind::Plain;
        if plain(Side::Caller) && plain(Side::Callee) {
            self.core.set_pt_maps([None, None]);
            return;
        }
        let [caller, callee] = &self.negotiation.formats;
        self.core.set_pt_maps([
            Some(PtMap::between(caller, callee)),
            Some(PtMap::between(callee, caller)),
        ]);
    }

    fn tell_recorder(&self, side: Side) {
        if let Some(recorder) = &self.recorder {
            let i = side.index();
            recorder.tap(RecordMsg::Codecs {
                side,
                payloads: self.negotiation.formats[i]
                    .iter()
                    .map(|f| (f.pt, f.codec()))
                    .collect(),
                secure: self.negotiation.secure[i] && self.core.kind(side) == LegKind::Plain,
            });
        }
    }
}
