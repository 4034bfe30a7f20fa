#!/usr/bin/env python3
"""A pjsua2 phone (pip package pjsua2-python, the pjsip stack MicroSIP is built on) that registers
and then makes or takes one call with audio, or analyses a recording.

    pjsua2_call.py --registrar 127.0.0.1:5060 --user 1001 --password change-me-1001 \
        --call 1002 [--duration 3] [--expect-hangup] [--tone 440] [--record caller.wav]
    pjsua2_call.py --registrar 127.0.0.1:5060 --user 1002 --password change-me-1002 \
        --answer [--ring 0.3] [--hangup [--duration 3]] [--tone 880] [--record callee.wav]
    (both also: [--bind 127.0.0.2] [--public-address 10.255.255.1] [--no-outbound]
     [--port 5062] [--codec PCMU] [--keep-registration] [--expect-dtmf 15#]
     [--send-dtmf 15# [--dtmf-method rfc4733|info]]; the caller also [--call-delay 2])
    pjsua2_call.py --analyse callee.wav [--channel left|right] [--min-rms 300] [--expect-hz 440]
        [--last 1.0] [--expect-silence]
    pjsua2_call.py --write-tone tone.wav [--tone 440]

Calling: registers, waits --call-delay seconds (default 0), calls sip:NUMBER@DOMAIN, keeps the
call up for --duration seconds once it is confirmed, hangs up (BYE) and waits for the end. With
--expect-hangup the caller does not hang up: it waits up to --duration seconds after the answer
for a BYE from the PBX (the callee hung up, or the PBX's admin API ended the call); none by then
is a failure (it hangs up itself and exits 1). Answering: registers, waits for one call, rings
(180) for --ring seconds, answers 200 and keeps the call until a BYE arrives (--expect-hangup says
the same explicitly); with --hangup it sends the BYE itself --duration seconds after the answer.
With --send-dtmf DIGITS the phone presses those keys once the call is confirmed: as RFC 4733
telephone-events in the RTP stream (--dtmf-method rfc4733, the default) or as one SIP INFO per
key (--dtmf-method info: `Content-Type: application/dtmf-relay`, body `Signal=5` and
`Duration=160`, as MicroSIP sends them), each INFO answered in its own transaction.
Both unregister before they exit, unless --keep-registration: then they leave without a word (no
un-REGISTER, as a phone that loses power), and the binding stays until it expires.
Both sides play a sine tone of --tone Hz (a WAV generated into a temp file, looped with
AudioMediaPlayer) into the call and record what they receive from it with AudioMediaRecorder
into --record. No sound device is opened (null device); the conference bridge still runs on its
own clock, so the tone flows and the recording fills. --codec NAME (e.g. PCMU) offers and
accepts that codec alone (by default pjsip prefers speex/16000).

The PBX's address is the outbound proxy, pjsip's resolver points at 127.0.0.1, and SIP and media
sockets bind to --bind (default 127.0.0.1; any 127.x.y.z works on Linux), so no packet leaves
loopback. --public-address IP makes the phone one behind NAT that does not know its public
address: it writes IP (say a private 10.x address) into its Via, Contact and SDP c=/o= lines
while sending from --bind, and pjsip's rewriting of Contact, Via and SDP from the received/rport
the PBX reports is off, so it keeps doing so. pjsip marks its Contact `;ob` (RFC 5626 outbound:
"use the flow this came over") unless --no-outbound, which makes it a phone like most desk
phones, whose Contact says nothing of the kind. The phone itself never sends to IP; the PBX must
answer, call and send media to where the packets come from. The default digest handling answers
SHA-256 and MD5 challenges (401 for REGISTER, 407 for INVITE) with the one credential.

Status lines on stdout, one per event, for a test to parse:
    pjsua2: pjsip VERSION
    pjsua2: registration state CODE REASON
    pjsua2: registered
    pjsua2: incoming call from URI
    pjsua2: remote sdp c=IP m=PORT in WHAT     (the connection address and audio port of an SDP
                                                received: WHAT is INVITE for an offer, CODE/INVITE
                                                for an answer; c= is the media-level one if any)
    pjsua2: local sdp c=IP m=PORT in WHAT      (the same for an SDP we sent)
    pjsua2: call state STATE CODE REASON       (CALLING, INCOMING, EARLY, CONNECTING,
                                                CONFIRMED, DISCONNECTED)
    pjsua2: remote media IP:PORT               (where the remote SDP says to send RTP)
    pjsua2: BYE sent, answered CODE            (we hung up)
    pjsua2: BYE received                       (the other side, or the PBX, hung up)
    pjsua2: BYE reason TEXT                    (its Reason header, if any)
    pjsua2: call disconnected CODE REASON
    pjsua2: dtmf DIGIT METHOD                  (a key press received: METHOD is rfc4733 for a
                                                telephone-event in the RTP stream, info for a
                                                SIP INFO)
    pjsua2: sent dtmf DIGITS METHOD            (--send-dtmf: the keys were pressed)
    pjsua2: INFO sent, answered CODE           (the final answer to one INFO we sent: 408 when
                                                none came)
    pjsua2: INFO received from IP:PORT         (an INFO came in, from that address: the PBX's
                                                when it went through the proxy)
    pjsua2: recorded PATH BYTES
    pjsua2: error TEXT
Exit 0 when the call was confirmed and ended with a BYE we sent answered 200 (caller; callee with
--hangup) or one we received (callee; caller with --expect-hangup); 1 otherwise (the error line
says why), after at most --timeout seconds. With --expect-dtmf DIGITS the digits received during
the call must be exactly DIGITS, in order, whatever their method; otherwise exit 1. With
--send-dtmf the keys must have been sent and, by the hang-up, each INFO among them answered 200.

--analyse prints `pjsua2: analysis rms=R seconds=S rate=HZ tone=F power440=P power880=P` for a
16-bit PCM WAV (pjmedia's recorder, or the PBX's recordings; also read when its header was not
finalised): the RMS of the samples after the first half second (out of 32767), and the strength
of each probed tone (Goertzel, summed over 0.1 s windows; only their ratio means something), the
stronger one as `tone`. A stereo file (the PBX records the caller left, the callee right) needs
--channel, which is then named in the line: `analysis channel=left rms=…`. Exits 0 when the RMS
is at least --min-rms and, with --expect-hz, `tone` is that one; 1 otherwise (with an error
line). --last S analyses only the last S seconds of the file (nothing skipped): what a phone
received just now, read while its recorder still writes (pjmedia flushes every eighth of a
second or so). --expect-silence turns the verdict round: exit 0 when the RMS is below
--min-rms.

--write-tone WAV writes the sine of --tone Hz that the phone plays (2 s, 16-bit mono 16 kHz,
loopable) and exits: a browser's fake microphone can play it too.
"""

import argparse
import math
import os
import re
import shutil
import struct
import sys
import tempfile
import time
import wave

PROBE_HZ = (440, 880)


def say(text):
    print("pjsua2: %s" % text, flush=True)


def write_tone(path, hz, seconds=2.0, rate=16000, amplitude=0.4):
    """A mono 16-bit sine of a whole number of periods, so that looping it does not click."""
    frames = int(rate * seconds)
    period = rate / hz
    frames = int(round(frames / period) * period) or frames
    data = bytearray()
    for n in range(frames):
        v = int(amplitude * 32767 * math.sin(2 * math.pi * hz * n / rate))
        data += struct.pack("<h", v)
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(data))


def read_pcm16(path, channel=None):
    """(rate, samples) of a 16-bit WAV, mono or (with `channel` "left" or "right") one channel of
    a stereo one. Reads the data chunk to the end of the file when its size is missing or too
    large (a recorder that was not closed leaves 0 there)."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise ValueError("%s is not a RIFF/WAVE file" % path)
    pos, rate, channels, bits, data = 12, None, 1, 16, None
    while pos + 8 <= len(raw):
        cid, size = raw[pos:pos + 4], struct.unpack("<I", raw[pos + 4:pos + 8])[0]
        body = pos + 8
        if cid == b"fmt ":
            _fmt, channels, rate = struct.unpack("<HHI", raw[body:body + 8])
            bits = struct.unpack("<H", raw[body + 14:body + 16])[0]
        elif cid == b"data":
            end = body + size if 0 < size <= len(raw) - body else len(raw)
            data = raw[body:end]
            break
        pos = body + size + (size & 1)
    if rate is None or data is None:
        raise ValueError("%s has no fmt or data chunk" % path)
    if bits != 16 or channels not in (1, 2):
        raise ValueError("%s: %d bits, %d channels; want 16-bit mono or stereo" % (path, bits, channels))
    if channels == 2 and channel is None:
        raise ValueError("%s is stereo: choose --channel left or right" % path)
    if channels == 1 and channel is not None:
        raise ValueError("%s is mono: --channel is for stereo files" % path)
    frame = 2 * channels
    count = len(data) // frame
    samples = struct.unpack("<%dh" % (count * channels), data[:count * frame])
    if channels == 2:
        samples = samples[0 if channel == "left" else 1::2]
    return rate, samples


def goertzel_power(samples, rate, hz):
    """Mean power of `samples` at `hz` (normalised to the RMS scale of a sine)."""
    if not samples:
        return 0.0
    k = 2 * math.cos(2 * math.pi * hz / rate)
    s1 = s2 = 0.0
    for x in samples:
        s0 = x + k * s1 - s2
        s2, s1 = s1, s0
    power = s1 * s1 + s2 * s2 - k * s1 * s2
    return math.sqrt(max(power, 0.0)) * math.sqrt(2) / len(samples)


def analyse(path, min_rms, expect_hz, channel=None, last=None, expect_silence=False):
    try:
        rate, samples = read_pcm16(path, channel)
    except (OSError, ValueError, struct.error) as err:
        say("error cannot read %s: %s" % (path, err))
        return 1
    if last is not None:
        # The recent past only: a recording still being written.
        body = samples[-int(last * rate):] if len(samples) >= last * rate else []
        if not body:
            say("error %s holds less than %.2f s" % (path, last))
            return 1
    else:
        # The first half second may hold the silence before media started flowing.
        skip = min(len(samples) // 4, rate // 2)
        body = samples[skip:]
    rms = math.sqrt(sum(x * x for x in body) / len(body)) if body else 0.0
    # Probe in 0.1 s windows (stable against slow drift) and sum.
    window = max(rate // 10, 1)
    powers = {}
    for hz in PROBE_HZ:
        total = 0.0
        for start in range(0, len(body) - window + 1, window):
            total += goertzel_power(body[start:start + window], rate, hz)
        powers[hz] = total
    tone = max(powers, key=powers.get) if any(powers.values()) else 0
    say(
        "analysis %srms=%.1f seconds=%.2f rate=%d tone=%d %s"
        % (
            "channel=%s " % channel if channel else "",
            rms,
            len(samples) / rate,
            rate,
            tone,
            " ".join("power%d=%.1f" % (hz, p) for hz, p in sorted(powers.items())),
        )
    )
    if expect_silence:
        ok = rms < min_rms
        if not ok:
            say("error not silent: rms %.1f not below %.1f" % (rms, min_rms))
        return 0 if ok else 1
    ok = rms >= min_rms
    if not ok:
        say("error silent: rms %.1f below %.1f" % (rms, min_rms))
    if expect_hz is not None and tone != expect_hz:
        say("error tone %d Hz, expected %d Hz" % (tone, expect_hz))
        ok = False
    return 0 if ok else 1


def message_sdp(logged):
    """(c= address, audio port) of the SDP body of a message pjsua logged, or None. The
    media-level c= of the audio stream wins over the session-level one."""
    text = logged.replace("\r\n", "\n")
    if "\n\n" not in text:
        return None
    body = text.split("\n\n", 1)[1].split("--end msg--")[0]
    session_c = media_c = port = None
    in_audio = False
    for line in body.splitlines():
        line = line.strip()
        if line.startswith("m="):
            if port is not None:
                break
            parts = line[2:].split()
            in_audio = parts[:1] == ["audio"]
            if in_audio and len(parts) > 1:
                port = parts[1]
        elif line.startswith("c="):
            addr = line[2:].split()[-1] if line[2:].split() else ""
            if port is None and not in_audio:
                session_c = addr
            elif in_audio:
                media_c = addr
    if port is None:
        return None
    return (media_c or session_c or "-", port)


def run_phone(a):
    import pjsua2 as pj

    state_names = {
        pj.PJSIP_INV_STATE_NULL: "NULL",
        pj.PJSIP_INV_STATE_CALLING: "CALLING",
        pj.PJSIP_INV_STATE_INCOMING: "INCOMING",
        pj.PJSIP_INV_STATE_EARLY: "EARLY",
        pj.PJSIP_INV_STATE_CONNECTING: "CONNECTING",
        pj.PJSIP_INV_STATE_CONFIRMED: "CONFIRMED",
        pj.PJSIP_INV_STATE_DISCONNECTED: "DISCONNECTED",
    }
    dtmf_methods = {
        pj.PJSUA_DTMF_METHOD_RFC2833: "rfc4733",
        pj.PJSUA_DTMF_METHOD_SIP_INFO: "info",
    }
    dtmf_method_ids = {name: method for method, name in dtmf_methods.items()}

    class Call(pj.Call):
        def __init__(self, acc, call_id=pj.PJSUA_INVALID_ID):
            super().__init__(acc, call_id)
            self.confirmed = False
            self.disconnected = False
            self.player = None
            self.recorder = None
            self.confirmed_at = None
            self.dtmf = ""
            # The final answer to each INFO we sent, in the order they came.
            self.info_answers = []

        def onCallState(self, prm):
            ci = self.getInfo()
            name = state_names.get(ci.state, str(ci.state))
            say("call state %s %d %s" % (name, ci.lastStatusCode, ci.lastReason))
            if ci.state == pj.PJSIP_INV_STATE_CONFIRMED and not self.confirmed:
                self.confirmed = True
                self.confirmed_at = time.time()
            if ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                self.disconnected = True
                say("call disconnected %d %s" % (ci.lastStatusCode, ci.lastReason))

        def onDtmfDigit(self, prm):
            method = dtmf_methods.get(prm.method, str(prm.method))
            self.dtmf += prm.digit
            say("dtmf %s %s" % (prm.digit, method))

        def onCallTsxState(self, prm):
            # An INFO of ours is finished when its final answer comes (COMPLETED), or when it
            # ends without one (TERMINATED straight away: timeout or transport error, 408).
            if prm.e.type != pj.PJSIP_EVENT_TSX_STATE:
                return
            event = prm.e.body.tsxState
            tsx = event.tsx
            if tsx.role != pj.PJSIP_ROLE_UAC or tsx.method != "INFO":
                return
            finished = tsx.state == pj.PJSIP_TSX_STATE_COMPLETED or (
                tsx.state == pj.PJSIP_TSX_STATE_TERMINATED
                and event.prevState != pj.PJSIP_TSX_STATE_COMPLETED
            )
            if finished:
                self.info_answers.append(tsx.statusCode)
                say("INFO sent, answered %d" % tsx.statusCode)

        def onCallMediaState(self, prm):
            ci = self.getInfo()
            for i, mi in enumerate(ci.media):
                if mi.type != pj.PJMEDIA_TYPE_AUDIO:
                    continue
                if mi.status != pj.PJSUA_CALL_MEDIA_ACTIVE:
                    continue
                try:
                    si = self.getStreamInfo(i)
                    say("remote media %s" % si.remoteRtpAddress)
                except pj.Error as err:
                    say("error no stream info: %s" % err.info())
                am = self.getAudioMedia(i)
                if self.player is None:
                    self.player = pj.AudioMediaPlayer()
                    self.player.createPlayer(a.tone_file)
                self.player.startTransmit(am)
                if a.record:
                    if self.recorder is None:
                        self.recorder = pj.AudioMediaRecorder()
                        self.recorder.createRecorder(a.record)
                    am.startTransmit(self.recorder)

    class Log(pj.LogWriter):
        """pjsip's log, from which the BYE's fate is read: once a call is DISCONNECTED pjsua no
        longer reports its transactions, and the state says 200 for a BYE answered 403. pjsua
        logs every message it sends and receives at level 4 ("RX 345 bytes Response msg
        200/BYE/cseq=..."), and where a received one came from (the only place that says
        whether an INFO came through the PBX). Lines up to --log-level are echoed to stderr."""

        def __init__(self, echo):
            super().__init__()
            self.echo = echo
            self.bye_answer = None
            self.bye_received = False

        def write(self, entry):
            text = entry.msg
            m = re.search(r"RX \d+ bytes Response msg (\d+)/BYE/", text)
            if m and self.bye_answer is None and int(m.group(1)) >= 200:
                self.bye_answer = int(m.group(1))
                say("BYE sent, answered %d" % self.bye_answer)
            if re.search(r"RX \d+ bytes Request msg BYE/", text) and not self.bye_received:
                self.bye_received = True
                say("BYE received")
                reason = re.search(r"^Reason:[ \t]*(.*?)\r?$", text, re.M | re.I)
                if reason:
                    say("BYE reason %s" % reason.group(1))
            m = re.search(
                r"(RX|TX) \d+ bytes (?:Request msg (INVITE)/|Response msg (\d+/INVITE)/)", text
            )
            if m:
                sdp = message_sdp(text)
                if sdp:
                    say(
                        "%s sdp c=%s m=%s in %s"
                        % (
                            "remote" if m.group(1) == "RX" else "local",
                            sdp[0],
                            sdp[1],
                            m.group(2) or m.group(3),
                        )
                    )
            m = re.search(r"RX \d+ bytes Request msg INFO/.* from \w+ (\S+):\r?$", text, re.M)
            if m:
                say("INFO received from %s" % m.group(1))
            if entry.level <= self.echo:
                sys.stderr.write(text.rstrip("\n") + "\n")

    class Account(pj.Account):
        def __init__(self):
            super().__init__()
            self.code = None
            self.incoming = []

        def onRegState(self, prm):
            self.code = prm.code
            say("registration state %d %s" % (prm.code, prm.reason))

        def onIncomingCall(self, prm):
            call = Call(self, prm.callId)
            say("incoming call from %s" % call.getInfo().remoteUri)
            self.incoming.append(call)

    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    # Like every softphone, say who we are (the PBX shows it next to the registration).
    cfg.uaConfig.userAgent = "pjsua2/%s kubepbx-tests" % ep.libVersion().full
    cfg.uaConfig.nameserver.append("127.0.0.1")
    log = Log(a.log_level)
    cfg.logConfig.writer = log
    # The writer sees what passes both levels; it needs level 4 (messages) whatever it echoes.
    cfg.logConfig.level = max(4, a.log_level)
    cfg.logConfig.consoleLevel = max(4, a.log_level)
    cfg.logConfig.msgLogging = True
    cfg.medConfig.noVad = True
    ep.libInit(cfg)
    public = a.public_address or a.bind
    tcfg = pj.TransportConfig()
    tcfg.port = a.port
    tcfg.boundAddress = a.bind
    tcfg.publicAddress = public
    ttype = {
        "udp": pj.PJSIP_TRANSPORT_UDP,
        "tcp": pj.PJSIP_TRANSPORT_TCP,
        "tls": pj.PJSIP_TRANSPORT_TLS,
    }[a.transport]
    if a.tls_ca:
        # Check the PBX's certificate (and its name: the --registrar host) against this CA.
        tcfg.tlsConfig.CaListFile = a.tls_ca
        tcfg.tlsConfig.verifyServer = True
    ep.transportCreate(ttype, tcfg)
    ep.libStart()
    ep.audDevManager().setNullDev()
    if a.codec:
        wanted = [c.codecId for c in ep.codecEnum2() if c.codecId.upper().startswith(a.codec.upper() + "/")]
        if not wanted:
            say("error no codec %s in %s" % (a.codec, [c.codecId for c in ep.codecEnum2()]))
            ep.libDestroy()
            return 1
        for c in ep.codecEnum2():
            ep.codecSetPriority(c.codecId, 255 if c.codecId in wanted else 0)
    say("pjsip %s" % ep.libVersion().full)

    acfg = pj.AccountConfig()
    acfg.idUri = "sip:%s@%s" % (a.user, a.domain)
    acfg.regConfig.registrarUri = "sip:%s" % a.domain
    acfg.sipConfig.proxies.append("sip:%s;transport=%s;lr" % (a.registrar, a.transport))
    acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", a.user, 0, a.password))
    acfg.mediaConfig.transportConfig.boundAddress = a.bind
    acfg.mediaConfig.transportConfig.publicAddress = public
    if a.public_address:
        # A phone behind NAT without STUN: it keeps its private address in Contact, Via and SDP
        # even when the PBX's received/rport says otherwise.
        acfg.natConfig.contactRewriteUse = 0
        acfg.natConfig.viaRewriteUse = 0
        acfg.natConfig.sdpNatRewriteUse = 0
        acfg.natConfig.sipStunUse = pj.PJSUA_STUN_USE_DISABLED
        acfg.natConfig.mediaStunUse = pj.PJSUA_STUN_USE_DISABLED
    if a.no_outbound:
        # No RFC 5626 outbound: no ";ob" in the Contact, so nothing tells the PBX to use the flow.
        acfg.natConfig.sipOutboundUse = 0
    acc = Account()
    acc.create(acfg)

    deadline = time.time() + a.timeout
    outcome = {"ok": False, "why": "no registration within the timeout"}

    def pump(until):
        while time.time() < until:
            ep.libHandleEvents(20)

    while time.time() < deadline:
        ep.libHandleEvents(20)
        if acc.code is not None and acc.code not in (100, 401, 407):
            break
    call = None
    if acc.code == 200:
        say("registered")
        if a.call:
            pump(time.time() + a.call_delay)
            call = Call(acc)
            prm = pj.CallOpParam(True)
            try:
                call.makeCall("sip:%s@%s" % (a.call, a.domain), prm)
            except pj.Error as err:
                outcome["why"] = "makeCall failed: %s" % err.info()
                call = None
        # Who ends the call: we (BYE sent, must be answered 200) or the other side / the PBX.
        we_hang_up = (a.call and not a.expect_hangup) or (a.answer and a.hangup)
        hung_up = False
        late = False
        answered_at = None
        dtmf_sent = False
        dtmf_error = None
        while call is not None or a.answer:
            if time.time() >= deadline:
                outcome["why"] = "timed out"
                break
            ep.libHandleEvents(20)
            if call is None and acc.incoming:
                call = acc.incoming[0]
                ringing = pj.CallOpParam()
                ringing.statusCode = 180
                call.answer(ringing)
                answered_at = time.time() + a.ring
            if call is None:
                continue
            if answered_at is not None and time.time() >= answered_at:
                answered_at = None
                ok = pj.CallOpParam()
                ok.statusCode = 200
                call.answer(ok)
            if a.send_dtmf and call.confirmed and not dtmf_sent:
                dtmf_sent = True
                keys = pj.CallSendDtmfParam()
                keys.digits = a.send_dtmf
                keys.method = dtmf_method_ids[a.dtmf_method]
                try:
                    call.sendDtmf(keys)
                    say("sent dtmf %s %s" % (a.send_dtmf, a.dtmf_method))
                except pj.Error as err:
                    dtmf_error = err.info()
            if (
                call.confirmed
                and not hung_up
                and not call.disconnected
                and (we_hang_up or a.call)
                and time.time() >= call.confirmed_at + a.duration
            ):
                hung_up = True
                # --expect-hangup: the BYE should have come by now; end the call anyway.
                late = not we_hang_up
                call.hangup(pj.CallOpParam())
            if call.disconnected:
                # pjsua reports DISCONNECTED as soon as our BYE is sent: wait for its answer.
                until = time.time() + 5
                while hung_up and log.bye_answer is None and time.time() < until:
                    ep.libHandleEvents(20)
                if not call.confirmed:
                    outcome["why"] = "the call was never confirmed"
                elif late:
                    outcome["why"] = "no BYE within %s s of the answer (--expect-hangup)" % a.duration
                elif we_hang_up and log.bye_answer != 200:
                    outcome["why"] = "our BYE was answered %s" % log.bye_answer
                elif not we_hang_up and not log.bye_received:
                    outcome["why"] = "the call ended without a BYE from the %s" % (
                        "caller" if a.answer else "PBX or callee"
                    )
                elif a.expect_dtmf is not None and call.dtmf != a.expect_dtmf:
                    outcome["why"] = "received the digits %r, expected %r" % (
                        call.dtmf,
                        a.expect_dtmf,
                    )
                elif dtmf_error is not None:
                    outcome["why"] = "could not send the digits: %s" % dtmf_error
                elif a.send_dtmf and not dtmf_sent:
                    outcome["why"] = "the call ended before the digits were sent"
                elif (
                    a.send_dtmf
                    and a.dtmf_method == "info"
                    and call.info_answers != [200] * len(a.send_dtmf)
                ):
                    outcome["why"] = "our INFOs for %r were answered %s" % (
                        a.send_dtmf,
                        call.info_answers,
                    )
                else:
                    outcome = {"ok": True, "why": ""}
                break
    elif acc.code is not None:
        outcome["why"] = "registration failed with %d" % acc.code

    if call is not None and not call.disconnected:
        try:
            call.hangup(pj.CallOpParam())
            pump(time.time() + 1)
        except pj.Error:
            pass
    # Close the recording (writes the WAV header) before the library goes.
    if call is not None:
        call.recorder = None
        call.player = None
    if a.record and os.path.exists(a.record):
        say("recorded %s %d" % (a.record, os.path.getsize(a.record)))
    if not a.keep_registration:
        try:
            acc.setRegistration(False)
            pump(time.time() + 0.5)
        except pj.Error:
            pass
    if not outcome["ok"]:
        say("error %s" % outcome["why"])
    sys.stdout.flush()
    sys.stderr.flush()
    # Leave without pjsua2's teardown: the call is over, the recording closed and (unless
    # --keep-registration) the binding removed, and libDestroy with Python-held objects still
    # around crashed the process now and then after a call that had gone well. (pjsua would
    # also unregister when the account or the library goes.) os._exit skips the temporary
    # folder's clean-up, so that is done here.
    shutil.rmtree(os.path.dirname(a.tone_file), ignore_errors=True)
    os._exit(0 if outcome["ok"] else 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--registrar", help="host:port of the PBX (outbound proxy)")
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--domain", default="pbx.example.com")
    ap.add_argument("--transport", choices=["udp", "tcp", "tls"], default="udp")
    ap.add_argument("--tls-ca", metavar="PEM", help="--transport tls: verify the PBX against this CA")
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--call", metavar="NUMBER", help="call this extension")
    mode.add_argument("--answer", action="store_true", help="wait for one call and answer it")
    mode.add_argument("--analyse", metavar="WAV", help="say whether a recording holds audio")
    mode.add_argument(
        "--write-tone", metavar="WAV", help="write the --tone sine the phone plays, and exit"
    )
    ap.add_argument(
        "--duration",
        type=float,
        default=3.0,
        help="seconds to talk before our BYE (caller; callee with --hangup), or to wait for the "
        "PBX's BYE (--expect-hangup)",
    )
    ap.add_argument(
        "--expect-hangup",
        action="store_true",
        help="do not hang up: the call must end with a BYE from the PBX within --duration",
    )
    ap.add_argument("--hangup", action="store_true", help="callee: hang up after --duration")
    ap.add_argument(
        "--call-delay",
        type=float,
        default=0.0,
        metavar="S",
        help="caller: seconds to wait between the registration and the call",
    )
    ap.add_argument(
        "--keep-registration",
        action="store_true",
        help="exit without unregistering (a phone that loses power): the binding stays until it "
        "expires",
    )
    ap.add_argument("--bind", default="127.0.0.1", help="address SIP and media sockets bind to")
    ap.add_argument(
        "--port",
        type=int,
        default=0,
        help="SIP port to bind (default: any free one); a phone started again on the same port "
        "is the same device to the PBX",
    )
    ap.add_argument(
        "--public-address",
        metavar="IP",
        help="address written into Contact, Via and SDP (a phone behind NAT); never sent to",
    )
    ap.add_argument(
        "--no-outbound",
        action="store_true",
        help="no SIP outbound (RFC 5626): Contact without ;ob, as most desk phones",
    )
    ap.add_argument("--codec", metavar="NAME", help="offer and accept only this codec (PCMU)")
    ap.add_argument("--ring", type=float, default=0.3, help="seconds to ring (callee)")
    ap.add_argument("--tone", type=float, default=440.0, help="Hz of the tone we send")
    ap.add_argument("--record", metavar="WAV", help="record what we receive here")
    ap.add_argument("--timeout", type=float, default=30.0, help="give up after this long")
    ap.add_argument("--log-level", type=int, default=1, help="pjsip log level (0-6)")
    ap.add_argument("--min-rms", type=float, default=300.0, help="--analyse: silence below")
    ap.add_argument("--expect-hz", type=int, choices=PROBE_HZ, help="--analyse: the tone")
    ap.add_argument(
        "--channel", choices=["left", "right"], help="--analyse: which channel of a stereo WAV"
    )
    ap.add_argument(
        "--last", type=float, metavar="S", help="--analyse: only the last S seconds of the file"
    )
    ap.add_argument(
        "--expect-silence",
        action="store_true",
        help="--analyse: succeed when the RMS is below --min-rms",
    )
    ap.add_argument(
        "--expect-dtmf",
        metavar="DIGITS",
        help="the call must receive exactly these key presses (DTMF), in order",
    )
    ap.add_argument(
        "--send-dtmf",
        metavar="DIGITS",
        help="press these keys (DTMF) once the call is confirmed",
    )
    ap.add_argument(
        "--dtmf-method",
        choices=["rfc4733", "info"],
        default="rfc4733",
        help="--send-dtmf: as RFC 4733 telephone-events in the RTP stream, or one SIP INFO "
        "(application/dtmf-relay) per key",
    )
    a = ap.parse_args()

    if a.analyse:
        return analyse(a.analyse, a.min_rms, a.expect_hz, a.channel, a.last, a.expect_silence)
    if a.write_tone:
        write_tone(a.write_tone, a.tone)
        return 0
    if a.expect_hangup and a.hangup:
        ap.error("--hangup and --expect-hangup contradict each other")
    if a.hangup and not a.answer:
        ap.error("--hangup is for the callee (--answer); the caller hangs up by default")
    for need in ("registrar", "user", "password"):
        if not getattr(a, need):
            ap.error("--%s is required to make or take a call" % need)
    with tempfile.TemporaryDirectory(prefix="pjsua2-call-") as tmp:
        a.tone_file = os.path.join(tmp, "tone-%d.wav" % a.tone)
        write_tone(a.tone_file, a.tone)
        return run_phone(a)


if __name__ == "__main__":
    sys.exit(main())
