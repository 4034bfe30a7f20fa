//! One WebRTC leg: a [str0m](https://docs.rs/str0m) [`Rtc`] in RTP mode, ICE-lite, DTLS-SRTP,
//! rtcp-mux, configured through str0m's direct API from SDPs the relay writes itself
//! ([`crate::flavour`]). Sans-IO like str0m: datagrams and `now` in, [`Outputs`] (datagrams to
//! send, decrypted RTP) out; no sockets, no clock.
//!
//! - **RTP mode.** The relay forwards packets: decrypted RTP comes out as str0m
//!   [`RtpPacket`]s (header and payload), and RTP from the other leg goes in with
//!   [`WebRtcLeg::write_rtp`] onto the leg's one send stream: its own SSRC, announced in the
//!   SDP, with sequence numbers and timestamps that stay continuous when the other leg's
//!   source changes (the `restamp` module). The browser's SSRCs are not signalled: a receive
//!   stream is declared for each one it sends (read from the clear RTP header before str0m
//!   decrypts it), at most a few. RTCP (SR/RR) towards the browser is str0m's own; no NACKs
//!   (browsers do not retransmit audio).
//! - **Codecs.** The leg's payload types are fixed when it is made (str0m's codec table belongs
//!   to the `Rtc`): the formats of the SDP that created it. Later SDPs pick among them.
//! - **ICE-lite**, controlled: the browser's checks arrive from its peer-reflexive address and
//!   str0m answers them; its `.local` candidates are never needed. One host candidate: the
//!   relay's advertised address and WebRTC port. Every datagram is handed to str0m as received
//!   on that candidate, whatever address the socket is bound to.
//! - **Failure** ([`WebRtcLeg::failure`]): the leg is dead when str0m reports an error (a
//!   DTLS handshake that failed, a wrong fingerprint), when ICE and DTLS have not both completed
//!   within the connect timeout of the offer/answer exchange, when ICE stays disconnected
//!   (no consent checks) longer than the media timeout, or when the browser closes DTLS.

use crate::restamp::Restamp;
use crate::rtp::RtpHeader;
use crate::sdp::{Format, Setup, WebRtcParams};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::config::{CryptoProvider, DtlsCert, Fingerprint};
use str0m::format::{Codec, FormatParams};
use str0m::media::{Frequency, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::rtp::{Extension, RtpPacket, RtpWrite, SeqNo, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc, RtcConfig};

/// Receive streams (browser SSRCs) a leg accepts; more are dropped.
const MAX_RX_STREAMS: usize = 8;

/// What every WebRTC leg of a relay shares.
#[derive(Clone)]
pub struct WebRtcShared {
    /// The host candidate: advertised address, WebRTC port.
    pub candidate: SocketAddr,
    /// The DTLS crypto backend.
    pub crypto: Arc<CryptoProvider>,
    /// The relay's DTLS certificate (one for all legs: generating one per call costs a key
    /// pair each time, and browsers accept any certificate whose fingerprint the SDP names).
    pub cert: DtlsCert,
    /// Its fingerprint, as SDP writes it.
    pub fingerprint: String,
    /// ICE and DTLS must complete within this after the leg's offer/answer exchange.
    pub connect_timeout: Duration,
    /// ICE may stay disconnected this long (the media timeout).
    pub disconnect_timeout: Duration,
}

impl std::fmt::Debug for WebRtcShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcShared")
            .field("candidate", &self.candidate)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl WebRtcShared {
    /// Makes the relay's certificate with `crypto`; `None` when the backend cannot.
    pub fn new(
        candidate: SocketAddr,
        crypto: CryptoProvider,
        connect_timeout: Duration,
        disconnect_timeout: Duration,
    ) -> Option<WebRtcShared> {
        let crypto = Arc::new(crypto);
        let cert = crypto.dtls_provider.generate_certificate()?;
        // The fingerprint as a leg reports it (it hashes the certificate with the backend).
        let probe = RtcConfig::new()
            .set_crypto_provider(crypto.clone())
            .set_dtls_cert(cert.clone())
            .clear_codecs()
            .build(Instant::now());
        let mut probe = probe;
        let fingerprint = probe.direct_api().local_dtls_fingerprint().to_string();
        Some(WebRtcShared {
            candidate,
            crypto,
            cert,
            fingerprint,
            connect_timeout,
            disconnect_timeout,
        })
    }
}

/// What a leg produced: datagrams to send from the WebRTC socket, and decrypted RTP from the
/// browser. The driver empties it after each call.
#[derive(Debug, Default)]
pub struct Outputs {
    /// Datagrams for the socket.
    pub transmits: Vec<Transmit>,
    /// RTP received from the browser, decrypted.
    pub rtp: Vec<RtpPacket>,
}

/// One WebRTC leg (see the module docs).
pub struct WebRtcLeg {
    rtc: Rtc,
    mid: Mid,
    sdp_mid: String,
    mid_ext: Option<u8>,
    candidate: SocketAddr,
    ufrag: String,
    pwd: String,
    formats: Vec<Format>,
    /// The one stream the leg sends, whatever the other leg's sources (see [`crate::restamp`]).
    tx_ssrc: u32,
    restamp: Restamp,
    rx: Vec<u32>,
    /// Our DTLS role once the offer/answer exchange set it (`true`: client).
    active: Option<bool>,
    /// When the exchange completed: the connect timer runs from here.
    started: Option<Instant>,
    connected: bool,
    checks_seen: bool,
    disconnected_since: Option<Instant>,
    rtc_timeout: Instant,
    connect_timeout: Duration,
    disconnect_timeout: Duration,
    failure: Option<String>,
}

impl std::fmt::Debug for WebRtcLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcLeg")
            .field("ufrag", &self.ufrag)
            .field("connected", &self.connected)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

impl WebRtcLeg {
    /// A leg with local ICE credentials `creds` whose payload types are `formats` (each must
    /// satisfy [`crate::flavour::carried`]; others are left out) and whose audio stream is
    /// `mid`, writing the MID header extension with id `mid_ext` when given; made at `now`.
    pub fn new(
        shared: &WebRtcShared,
        creds: IceCreds,
        formats: &[Format],
        mid: &str,
        mid_ext: Option<u8>,
        now: Instant,
    ) -> WebRtcLeg {
        let IceCreds { ufrag, pass: pwd } = creds;
        let mut config = RtcConfig::new()
            .set_crypto_provider(shared.crypto.clone())
            .set_dtls_cert(shared.cert.clone())
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_local_ice_credentials(IceCreds {
                ufrag: ufrag.clone(),
                pass: pwd.clone(),
            })
            .clear_extension_map()
            .clear_codecs();
        if let Some(id) = mid_ext {
            config = config.set_extension(id, Extension::RtpMid);
        }
        let mut kept = Vec::new();
        for f in formats {
            let added = match (f.name.to_ascii_lowercase().as_str(), f.pt) {
                ("pcmu", 0) => {
                    config = config.enable_pcmu(true, false);
                    true
                }
                ("pcma", 8) => {
                    config = config.enable_pcma(true, false);
                    true
                }
                ("g722", 9) => {
                    config = config.enable_g722(true, false);
                    true
                }
                ("cn", 13) => {
                    config = config.enable_comfort_noise(true);
                    true
                }
                ("opus", pt) => {
                    config.codec_config().add_config(
                        Pt::from(pt),
                        None,
                        Codec::Opus,
                        Frequency::FORTY_EIGHT_KHZ,
                        Some(2),
                        FormatParams::default(),
                    );
                    true
                }
                ("telephone-event", pt) => {
                    let rate = if f.rate == 48000 {
                        Frequency::FORTY_EIGHT_KHZ
                    } else {
                        Frequency::EIGHT_KHZ
                    };
                    config.codec_config().add_config(
                        Pt::from(pt),
                        None,
                        Codec::Tele,
                        rate,
                        None,
                        FormatParams::default(),
                    );
                    true
                }
                _ => false,
            };
            if added {
                kept.push(f.clone());
            }
        }
        let mut rtc = config.build(now);
        let sdp_mid = mid.to_owned();
        let mid = Mid::from(mid);
        let tx_ssrc = {
            let mut api = rtc.direct_api();
            api.set_ice_controlling(false);
            api.declare_media(mid, MediaKind::Audio);
            let ssrc = api.new_ssrc();
            api.declare_stream_tx(ssrc, None, mid, None);
            *ssrc
        };
        let mut leg = WebRtcLeg {
            rtc,
            mid,
            sdp_mid,
            mid_ext,
            candidate: shared.candidate,
            ufrag,
            pwd,
            formats: kept,
            tx_ssrc,
            restamp: Restamp::default(),
            rx: Vec::new(),
            active: None,
            started: None,
            connected: false,
            checks_seen: false,
            disconnected_since: None,
            rtc_timeout: now,
            connect_timeout: shared.connect_timeout,
            disconnect_timeout: shared.disconnect_timeout,
            failure: None,
        };
        let mut out = Outputs::default();
        leg.drain(now, &mut out);
        if let Ok(candidate) = Candidate::host(shared.candidate, "udp") {
            leg.rtc.add_local_candidate(candidate);
            leg.drain(now, &mut out);
        }
        leg
    }

    /// The SSRC the leg sends with (announced in its SDP).
    pub fn ssrc(&self) -> u32 {
        self.tx_ssrc
    }

    /// Local ICE username fragment (what the hub routes checks by).
    pub fn ufrag(&self) -> &str {
        &self.ufrag
    }

    /// Local ICE password.
    pub fn pwd(&self) -> &str {
        &self.pwd
    }

    /// The audio stream's mid, as SDP names it.
    pub fn mid(&self) -> &str {
        &self.sdp_mid
    }

    /// The id of the MID header extension the leg writes.
    pub fn mid_ext(&self) -> Option<u8> {
        self.mid_ext
    }

    /// The leg's payload types.
    pub fn formats(&self) -> &[Format] {
        &self.formats
    }

    /// Our DTLS role, once set: `Setup::Active` (client) or `Setup::Passive` (server).
    pub fn setup(&self) -> Option<Setup> {
        self.active
            .map(|a| if a { Setup::Active } else { Setup::Passive })
    }

    /// ICE and DTLS are up: media can flow.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Why the leg is dead, once it is.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// The offer/answer exchange completed at `now`: the browser's credentials and fingerprint
    /// are `remote`, and the relay takes the DTLS client role when `active`. Later exchanges
    /// (re-INVITEs) keep the first role and keys: str0m does not renegotiate DTLS.
    pub fn start(&mut self, remote: &WebRtcParams, active: bool, now: Instant, out: &mut Outputs) {
        if self.active.is_some() {
            return;
        }
        let fingerprint: Fingerprint = match remote.fingerprint.parse() {
            Ok(f) => f,
            Err(e) => {
                self.fail(format!("the browser's DTLS fingerprint is unreadable: {e}"));
                return;
            }
        };
        self.active = Some(active);
        self.started = Some(now);
        let started = {
            let mut api = self.rtc.direct_api();
            api.set_remote_ice_credentials(IceCreds {
                ufrag: remote.ufrag.clone(),
                pass: remote.pwd.clone(),
            });
            api.set_remote_fingerprint(fingerprint);
            api.start_dtls(active)
        };
        if let Err(e) = started {
            self.fail(format!("DTLS could not start: {e}"));
            return;
        }
        self.drain(now, out);
        for &ssrc in remote.ssrcs.iter().take(MAX_RX_STREAMS) {
            if ssrc != 0 && self.expect_rx(ssrc) {
                self.drain(now, out);
            }
        }
        self.tick(now, out);
    }

    /// Declares a receive stream for `ssrc`; `true` when it is new (drain before the next
    /// change).
    fn expect_rx(&mut self, ssrc: u32) -> bool {
        if self.rx.contains(&ssrc) || self.rx.len() >= MAX_RX_STREAMS {
            return false;
        }
        self.rx.push(ssrc);
        let mid = self.mid;
        // No NACKs: browsers do not retransmit audio, and the NACK timer would wake the
        // session every 33 ms for nothing.
        self.rtc
            .direct_api()
            .expect_stream_rx(Ssrc::from(ssrc), None, mid, None)
            .suppress_nack(true);
        true
    }

    /// A datagram from `source` arrived at `now` on the WebRTC socket. Returns `false` when it
    /// was not for this leg (unknown source, not STUN/DTLS/SRTP).
    pub fn handle_datagram(
        &mut self,
        source: SocketAddr,
        data: &[u8],
        now: Instant,
        out: &mut Outputs,
    ) -> bool {
        if self.failure.is_some() {
            return false;
        }
        let Ok(receive) = Receive::new(Protocol::Udp, source, self.candidate, data) else {
            return false;
        };
        let input = Input::Receive(now, receive);
        if !self.rtc.accepts(&input) {
            return false;
        }
        // Browser RTP from the connected peer: declare its SSRC (from the clear header) so
        // str0m decrypts it even without a MID header extension. SSRC 0 is str0m's own
        // (bandwidth probes).
        if self.connected
            && data.len() >= 12
            && data[0] >> 6 == 2
            && !(64..96).contains(&(data[1] & 0x7f))
        {
            let ssrc = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
            if ssrc != 0 && self.expect_rx(ssrc) {
                self.drain(now, out);
            }
        }
        if crate::stun::is_stun(data) {
            self.checks_seen = true;
        }
        if let Err(e) = self.rtc.handle_input(input) {
            self.fail(self.error_reason(&e.to_string()));
            return true;
        }
        self.drain(now, out);
        true
    }

    /// Encrypts and queues an RTP packet `h` from the other leg, with payload type `pt` (one of
    /// [`Self::formats`]), on the leg's send stream ([`Self::ssrc`]; sequence number,
    /// timestamp and marker mapped so they stay continuous when the source changes).
    /// Dropped (`false`) until ICE and DTLS are up: a browser wants no stale audio.
    pub fn write_rtp(
        &mut self,
        h: &RtpHeader,
        pt: u8,
        payload: &[u8],
        now: Instant,
        out: &mut Outputs,
    ) -> bool {
        if !self.connected || self.failure.is_some() {
            return false;
        }
        let rate = self
            .formats
            .iter()
            .find(|f| f.pt == pt)
            .map_or(8000, |f| f.rate);
        let stamped = self
            .restamp
            .map(h.ssrc, h.seq, h.timestamp, h.marker, rate, now);
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_tx(&Ssrc::from(self.tx_ssrc)) else {
            return false;
        };
        let seq = SeqNo::from(stamped.seq);
        let write = RtpWrite::new(Pt::from(pt), seq, stamped.timestamp, now, payload)
            .marker(stamped.marker);
        stream.write_rtp(write);
        // str0m releases queued packets on a time input: give it one now, not a timer later
        // (the drain after it also collects whatever the write produced).
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            self.fail(self.error_reason(&e.to_string()));
            return false;
        }
        self.drain(now, out);
        true
    }

    /// When [`Self::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Instant {
        let mut next = self.rtc_timeout;
        if let (Some(started), false) = (self.started, self.connected) {
            next = next.min(started + self.connect_timeout);
        }
        if let Some(since) = self.disconnected_since {
            next = next.min(since + self.disconnect_timeout);
        }
        next
    }

    /// Drives timers at `now` (retransmissions, RTCP reports, consent expiry) and the leg's
    /// own deadlines.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Outputs) {
        self.tick(now, out);
        if self.failure.is_some() {
            return;
        }
        if let (Some(started), false) = (self.started, self.connected)
            && now >= started + self.connect_timeout
        {
            let reason = if self.checks_seen {
                format!(
                    "DTLS handshake did not complete within {:?} of the offer/answer exchange",
                    self.connect_timeout
                )
            } else {
                format!(
                    "ICE failed: no connectivity check from the browser within {:?} of the \
                     offer/answer exchange",
                    self.connect_timeout
                )
            };
            self.fail(reason);
            return;
        }
        if let Some(since) = self.disconnected_since
            && now >= since + self.disconnect_timeout
        {
            self.fail(format!(
                "ICE disconnected (no consent checks from the browser) for {:?}",
                self.disconnect_timeout
            ));
        }
    }

    fn tick(&mut self, now: Instant, out: &mut Outputs) {
        if self.failure.is_some() {
            return;
        }
        if now >= self.rtc_timeout
            && let Err(e) = self.rtc.handle_input(Input::Timeout(now))
        {
            self.fail(self.error_reason(&e.to_string()));
            return;
        }
        self.drain(now, out);
    }

    fn error_reason(&self, error: &str) -> String {
        if self.connected {
            format!("WebRTC error: {error}")
        } else {
            format!("DTLS handshake failed: {error}")
        }
    }

    fn fail(&mut self, reason: String) {
        if self.failure.is_none() {
            self.failure = Some(reason);
            self.rtc.disconnect();
        }
    }

    /// Polls str0m until it has nothing more than a timeout.
    fn drain(&mut self, now: Instant, out: &mut Outputs) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.rtc_timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => out.transmits.push(t),
                Ok(Output::Event(event)) => self.on_event(event, now, out),
                Err(e) => {
                    let reason = self.error_reason(&e.to_string());
                    self.fail(reason);
                    return;
                }
            }
            if !self.rtc.is_alive() {
                if self.failure.is_none() {
                    self.failure = Some("the browser closed the connection".to_owned());
                }
                return;
            }
        }
    }

    fn on_event(&mut self, event: Event, now: Instant, out: &mut Outputs) {
        match event {
            Event::RtpPacket(packet) => out.rtp.push(packet),
            Event::Connected => self.connected = true,
            Event::IceConnectionStateChange(state) => {
                tracing::debug!(target: "media", ufrag = %self.ufrag, ?state, "WebRTC leg ICE state");
                match state {
                    IceConnectionState::Disconnected => {
                        self.disconnected_since.get_or_insert(now);
                    }
                    IceConnectionState::Connected | IceConnectionState::Completed => {
                        self.disconnected_since = None;
                    }
                    _ => {}
                }
            }
            Event::Closed if self.failure.is_none() => {
                self.failure = Some("the browser closed the DTLS connection".to_owned());
            }
            _ => {}
        }
    }
}
