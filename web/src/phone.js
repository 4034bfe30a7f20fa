// kubepbx web phone: registers one extension over SIP-over-WebSocket (JsSIP) and makes and
// takes audio calls through the server's media relay. See docs/web-phone.md.
//
// What it needs from the server, all on the page's own origin:
//   ./config.json  {"domain", "websocket": "/ws", "extensions": [{extension, domain, displayName}]}
//   <websocket>    SIP over WebSocket (subprotocol "sip"), ws: beside http:, wss: beside https:
// On a WebSocket the server challenges with MD5 alone, the one digest algorithm JsSIP knows.
// The server relays media as an ICE-lite peer with a public address, so no STUN/TURN servers are
// configured and a call starts without waiting for candidates from them.

import JsSIP from 'jssip';
import { audioStats } from './stats.js';
import {
  callEndText,
  dialTarget,
  disconnectedText,
  formatDuration,
  loginIdentity,
  peerText,
  registrationFailedText,
  websocketUrl,
} from './status.js';
import { Tones } from './tones.js';

/** REGISTER failures that trying again cannot fix: the person has to log in again. */
const FINAL_REGISTER_CODES = new Set([401, 403, 404, 407]);
/** How long after another REGISTER failure the phone tries again. */
const REGISTER_RETRY_MS = 30_000;
const MEDIA = { audio: true, video: false };
const PC_CONFIG = { iceServers: [] };

const TITLE = document.title;
const byTestId = (id) => document.querySelector(`[data-testid="${id}"]`);
const el = {
  status: byTestId('status'),
  loginForm: document.getElementById('login'),
  extension: byTestId('extension'),
  extensions: document.getElementById('extensions'),
  password: byTestId('password'),
  configNote: byTestId('config-note'),
  phone: document.getElementById('phone'),
  account: byTestId('account'),
  micNote: byTestId('mic-note'),
  logout: byTestId('logout'),
  callBox: document.querySelector('.call'),
  callState: byTestId('call-state'),
  peer: byTestId('peer'),
  duration: byTestId('duration'),
  dialForm: document.getElementById('dial'),
  number: byTestId('number'),
  dtmf: byTestId('dtmf'),
  call: byTestId('call'),
  answer: byTestId('answer'),
  reject: byTestId('reject'),
  hangup: byTestId('hangup'),
  mute: byTestId('mute'),
  audio: byTestId('remote-audio'),
};

const tones = new Tones();

const state = {
  config: null,
  ua: null,
  account: null,
  wsUrl: null,
  status: 'not logged in',
  registered: false,
  /** The last connection or registration failure, kept on screen while JsSIP retries. */
  failure: null,
  retryTimer: null,
  session: null,
  direction: null,
  callState: 'idle',
  peer: '',
  answeredAt: null,
  endedAt: null,
  durationTimer: null,
  statsTimer: null,
  lastStats: null,
  muted: false,
  dtmfSent: '',
};

if (new URLSearchParams(location.search).has('debug')) JsSIP.debug.enable('JsSIP:*');

// ---- status line and call area -------------------------------------------------------------

/** `kind`: 'idle' | 'pending' | 'ok' | 'failed' (the colour). */
function setStatus(kind, text) {
  state.status = text;
  el.status.dataset.state = kind;
  el.status.textContent = text;
}

/** `look`: 'idle' | 'ringing' | 'incoming' | 'active' | 'ended' (the colour). */
function setCallState(text, look) {
  state.callState = text;
  el.callState.textContent = text;
  el.callBox.dataset.state = look;
  // A ringing call shows in the tab's title too, for a phone left in a background tab.
  document.title = look === 'incoming' ? `Incoming call · ${state.peer} · ${TITLE}` : TITLE;
}

function setPeer(text) {
  state.peer = text;
  el.peer.textContent = text;
}

/** Shows exactly the call buttons that fit the current moment. */
function showButtons({ call = false, answer = false, reject = false, hangup = false, mute = false }) {
  el.call.hidden = !call;
  el.answer.hidden = !answer;
  el.reject.hidden = !reject;
  el.hangup.hidden = !hangup;
  el.mute.hidden = !mute;
}

function showMuted(muted) {
  state.muted = muted;
  el.mute.textContent = muted ? 'Unmute' : 'Mute';
  el.mute.setAttribute('aria-pressed', String(muted));
}

function tickDuration() {
  if (state.answeredAt === null) {
    el.duration.textContent = '00:00';
    return;
  }
  const end = state.endedAt ?? Date.now();
  el.duration.textContent = formatDuration(end - state.answeredAt);
}

// ---- configuration -------------------------------------------------------------------------

async function loadConfig() {
  const fallback = { domain: location.hostname, websocket: '/ws', extensions: [] };
  try {
    const res = await fetch('config.json', { cache: 'no-store' });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const config = await res.json();
    if (!config || typeof config !== 'object') throw new Error('not a JSON object');
    return { ...fallback, ...config, extensions: Array.isArray(config.extensions) ? config.extensions : [] };
  } catch (e) {
    el.configNote.textContent =
      `Could not load config.json (${e.message}); using domain ${fallback.domain} and ${fallback.websocket}.`;
    el.configNote.hidden = false;
    return fallback;
  }
}

/** The last extension logged in with (storage may be unavailable, e.g. in private modes). */
function remembered() {
  try {
    return localStorage.getItem('kubepbx.extension');
  } catch {
    return null;
  }
}

function remember(extension) {
  try {
    localStorage.setItem('kubepbx.extension', extension);
  } catch {
    // not remembered
  }
}

function fillExtensions(config) {
  el.extensions.replaceChildren();
  for (const e of config.extensions) {
    const option = document.createElement('option');
    option.value = String(e.extension);
    const domain = e.domain && e.domain !== config.domain ? ` @ ${e.domain}` : '';
    option.label = e.displayName ? `${e.displayName}${domain}` : `${e.extension}${domain}`;
    el.extensions.append(option);
  }
  const last = remembered();
  if (!el.extension.value && last) el.extension.value = last;
  else if (!el.extension.value && config.extensions.length === 1) {
    el.extension.value = String(config.extensions[0].extension);
  }
}

const configReady = loadConfig().then((config) => {
  state.config = config;
  fillExtensions(config);
  return config;
});

// ---- registration --------------------------------------------------------------------------

async function login(ev) {
  ev.preventDefault();
  tones.unlock();
  const config = await configReady;
  const typed = el.extension.value.trim();
  const password = el.password.value;
  if (!typed) {
    setStatus('failed', 'failed: enter your extension');
    el.extension.focus();
    return;
  }
  if (!password) {
    setStatus('failed', 'failed: enter your password');
    el.password.focus();
    return;
  }
  const id = loginIdentity(typed, config);
  if (!id.domain) {
    setStatus('failed', 'failed: no domain (config.json has none; log in as extension@domain)');
    return;
  }
  remember(typed);
  stopUa();
  state.account = id;
  state.wsUrl = websocketUrl(config.websocket, location);
  state.failure = null;
  let ua;
  try {
    const socket = new JsSIP.WebSocketInterface(state.wsUrl);
    const settings = {
      sockets: [socket],
      uri: `sip:${id.extension}@${id.domain}`,
      authorization_user: id.extension,
      password,
      register: true,
      session_timers: false,
      user_agent: `kubepbx-web-phone JsSIP/${JsSIP.version}`,
    };
    if (id.displayName) settings.display_name = id.displayName;
    ua = new JsSIP.UA(settings);
  } catch (e) {
    setStatus('failed', `failed: ${e.message || e}`);
    return;
  }
  state.ua = ua;
  wireUa(ua);
  el.account.textContent = id.displayName ? `${id.extension} · ${id.displayName}` : `${id.extension}@${id.domain}`;
  el.password.value = '';
  el.loginForm.hidden = true;
  el.phone.hidden = false;
  resetCall();
  const problem = microphoneProblem();
  el.micNote.textContent = !problem
    ? ''
    : window.isSecureContext
      ? 'This browser gives pages no microphone: calls cannot be made from it.'
      : 'Calls need the microphone, which browsers allow only on https or on localhost: open this page over https.';
  el.micNote.hidden = !problem;
  setStatus('pending', 'connecting');
  ua.start();
  el.number.focus();
}

function wireUa(ua) {
  const current = () => state.ua === ua;
  ua.on('connecting', () => {
    if (current() && !state.failure) setStatus('pending', 'connecting');
  });
  ua.on('connected', () => {
    if (!current()) return;
    state.failure = null;
    setStatus('pending', 'registering');
  });
  ua.on('disconnected', (e) => {
    if (!current()) return;
    state.registered = false;
    state.failure = disconnectedText(e, state.wsUrl, true);
    setStatus('failed', state.failure);
  });
  ua.on('registered', () => {
    if (!current()) return;
    state.registered = true;
    state.failure = null;
    setStatus('ok', 'registered');
  });
  ua.on('unregistered', () => {
    if (!current()) return;
    state.registered = false;
    // Also fired when the WebSocket closes: that failure is already on screen.
    if (!state.failure) setStatus('pending', 'not registered');
  });
  ua.on('registrationFailed', (e) => {
    if (!current()) return;
    state.registered = false;
    // A REGISTER lost with the WebSocket: the WebSocket's failure says more.
    if (!e.response && state.failure) return;
    const text = registrationFailedText(e);
    const code = e.response && e.response.status_code;
    if (code && FINAL_REGISTER_CODES.has(code)) {
      state.failure = text;
      setStatus('failed', text);
      // Wrong credentials or domain: ask again.
      stopUa();
      showLogin();
      el.password.focus();
      return;
    }
    state.failure = `${text}; retrying`;
    setStatus('failed', state.failure);
    clearTimeout(state.retryTimer);
    state.retryTimer = setTimeout(() => {
      if (current() && ua.isConnected()) ua.register();
    }, REGISTER_RETRY_MS);
  });
  ua.on('newRTCSession', ({ originator, session }) => {
    if (current()) newSession(originator, session);
  });
}

/** Stops the UA (unregistering and ending any call); its events are ignored from now on. */
function stopUa() {
  clearTimeout(state.retryTimer);
  const ua = state.ua;
  state.ua = null;
  state.registered = false;
  if (state.session) endCall('ended: logged out');
  if (ua) ua.stop();
}

function showLogin() {
  el.phone.hidden = true;
  el.loginForm.hidden = false;
}

function logout() {
  stopUa();
  state.failure = null;
  setStatus('idle', 'logged out');
  showLogin();
  el.password.focus();
}

// ---- calls ---------------------------------------------------------------------------------

function resetCall() {
  state.session = null;
  state.direction = null;
  state.answeredAt = null;
  state.endedAt = null;
  state.dtmfSent = '';
  state.lastStats = null;
  setCallState('idle', 'idle');
  setPeer('');
  tickDuration();
  showMuted(false);
  el.dtmf.hidden = true;
  el.dtmf.textContent = '';
  showButtons({ call: true });
}

/** Whether the browser lets this page use a microphone at all. */
function microphoneProblem() {
  if (!window.isSecureContext) return 'failed: microphone needs https (or localhost)';
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    return 'failed: this browser gives no microphone access';
  }
  return null;
}

function startCall(ev) {
  ev.preventDefault();
  if (!state.ua || state.session) return;
  tones.unlock();
  const target = dialTarget(el.number.value, state.account.domain);
  if (!target) {
    setCallState('enter a number to call', 'idle');
    el.number.focus();
    return;
  }
  const problem = microphoneProblem();
  if (problem) {
    setCallState(problem, 'ended');
    return;
  }
  try {
    state.ua.call(target, { mediaConstraints: MEDIA, pcConfig: PC_CONFIG });
  } catch (e) {
    setCallState(`failed: ${e.message || e}`, 'ended');
  }
}

function newSession(originator, session) {
  if (state.session) {
    // One call at a time: a second caller hears busy.
    if (originator === 'remote') session.terminate({ status_code: 486, reason_phrase: 'Busy Here' });
    return;
  }
  resetCall();
  state.session = session;
  state.direction = originator === 'local' ? 'outgoing' : 'incoming';
  const mine = () => state.session === session;

  session.on('peerconnection', ({ peerconnection }) => playRemoteAudio(peerconnection));
  session.on('progress', ({ originator: from, response }) => {
    if (!mine() || from !== 'remote') return;
    setCallState('ringing', 'ringing');
    // 180 without early media: the caller hears a ringback made here.
    if (response && response.status_code === 180 && !response.body) tones.ringback();
    else tones.stop();
  });
  session.on('accepted', () => {
    if (!mine()) return;
    tones.stop();
    state.answeredAt = Date.now();
    setCallState('in call', 'active');
    showButtons({ hangup: true, mute: true });
    state.durationTimer = setInterval(tickDuration, 250);
    tickDuration();
    state.statsTimer = setInterval(sampleStats, 1000);
    if (session.connection) playRemoteAudio(session.connection);
  });
  session.on('muted', () => mine() && showMuted(true));
  session.on('unmuted', () => mine() && showMuted(false));
  session.on('ended', (e) => mine() && endCall(callEndText(e, false)));
  session.on('failed', (e) => mine() && endCall(callEndText(e, true)));

  if (state.direction === 'incoming') {
    setPeer(peerText(session.remote_identity));
    setCallState('incoming', 'incoming');
    showButtons({ answer: true, reject: true });
    tones.ring();
    el.answer.focus();
  } else {
    setPeer(peerText(session.remote_identity) || el.number.value.trim());
    setCallState('calling', 'ringing');
    showButtons({ hangup: true });
  }
}

/** Plays the call's received audio through the page's `<audio autoplay>` element. */
const audioWired = new WeakSet();
function playRemoteAudio(pc) {
  const play = () => {
    const tracks = pc.getReceivers().map((r) => r.track).filter((t) => t && t.kind === 'audio');
    if (!tracks.length) return;
    const current = el.audio.srcObject;
    if (current && current.getTracks().some((t) => tracks.includes(t))) return;
    el.audio.srcObject = new MediaStream(tracks);
    el.audio.play().catch((e) => console.warn('remote audio does not play yet:', e.message));
  };
  if (!audioWired.has(pc)) {
    audioWired.add(pc);
    pc.addEventListener('track', play);
  }
  play();
}

function endCall(text) {
  tones.stop();
  clearInterval(state.durationTimer);
  clearInterval(state.statsTimer);
  if (state.answeredAt !== null) state.endedAt = Date.now();
  tickDuration();
  const session = state.session;
  state.session = null;
  if (session && !session.isEnded()) {
    try {
      session.terminate();
    } catch {
      // already ending
    }
  }
  setCallState(text, 'ended');
  showButtons({ call: true });
  showMuted(false);
  el.audio.srcObject = null;
}

function answer() {
  const session = state.session;
  if (!session || state.direction !== 'incoming') return;
  tones.stop();
  const problem = microphoneProblem();
  if (problem) {
    session.terminate({ status_code: 480, reason_phrase: 'Temporarily Unavailable' });
    endCall(problem);
    return;
  }
  setCallState('answering', 'active');
  showButtons({ hangup: true });
  session.answer({ mediaConstraints: MEDIA, pcConfig: PC_CONFIG });
}

function reject() {
  const session = state.session;
  if (!session) return;
  tones.stop();
  session.terminate({ status_code: 486, reason_phrase: 'Busy Here' });
}

function hangup() {
  const session = state.session;
  if (!session) return;
  try {
    session.terminate();
  } catch (e) {
    endCall(`ended: ${e.message || e}`);
  }
}

function toggleMute() {
  const session = state.session;
  if (!session) return;
  if (session.isMuted().audio) session.unmute({ audio: true });
  else session.mute({ audio: true });
}

/** A dial pad key: part of the number before a call, a DTMF tone during one. */
function pressKey(key) {
  const session = state.session;
  if (!session) {
    el.number.value += key;
    return;
  }
  if (state.answeredAt === null) return;
  try {
    session.sendDTMF(key, { transportType: dtmfTransport(session) });
    state.dtmfSent += key;
    el.dtmf.textContent = `Tones sent: ${state.dtmfSent}`;
    el.dtmf.hidden = false;
  } catch (e) {
    console.warn('DTMF not sent:', e);
  }
}

/** RTP telephone-event (RFC 4733) when the call negotiated it, else SIP INFO. */
function dtmfTransport(session) {
  const pc = session.connection;
  const sender = pc && pc.getSenders().find((s) => s.track && s.track.kind === 'audio');
  return sender && sender.dtmf && sender.dtmf.canInsertDTMF ? 'RFC2833' : 'INFO';
}

async function sampleStats() {
  const pc = state.session && state.session.connection;
  if (!pc || pc.connectionState === 'closed') return;
  try {
    state.lastStats = audioStats(await pc.getStats());
  } catch {
    // closing
  }
}

// ---- wiring --------------------------------------------------------------------------------

el.loginForm.addEventListener('submit', login);
el.logout.addEventListener('click', logout);
el.dialForm.addEventListener('submit', startCall);
el.answer.addEventListener('click', answer);
el.reject.addEventListener('click', reject);
el.hangup.addEventListener('click', hangup);
el.mute.addEventListener('click', toggleMute);
for (const button of document.querySelectorAll('.keypad button')) {
  button.addEventListener('click', () => pressKey(button.dataset.key));
}
// Keys typed during a call are tones, wherever the focus is (but the number field).
document.addEventListener('keydown', (ev) => {
  if (!state.session || state.answeredAt === null || ev.target === el.number) return;
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (/^[0-9*#]$/.test(ev.key)) {
    ev.preventDefault();
    pressKey(ev.key);
  }
});
// Unregister when the tab closes, so calls do not ring a page that is gone.
window.addEventListener('pagehide', () => {
  if (state.ua) state.ua.stop();
});

// ---- test and debugging hooks --------------------------------------------------------------

window.kubepbxPhone = {
  version: JsSIP.version,
  /**
   * Audio counters of the current call (live), or of the last second of the call that just
   * ended (`final: true`); nulls when there was no call.
   */
  async stats() {
    const pc = state.session && state.session.connection;
    if (pc && pc.connectionState !== 'closed') {
      return { ...audioStats(await pc.getStats()), final: false };
    }
    if (state.lastStats) return { ...state.lastStats, final: true };
    return { inbound: null, outbound: null, final: true };
  },
  state() {
    return {
      status: state.status,
      registered: state.registered,
      extension: state.account && state.account.extension,
      domain: state.account && state.account.domain,
      websocket: state.wsUrl,
      callState: state.callState,
      direction: state.direction,
      peer: state.peer,
      inCall: state.session !== null && state.answeredAt !== null,
      duration: el.duration.textContent,
      muted: state.muted,
      dtmfSent: state.dtmfSent,
      tone: tones.current,
    };
  },
};
