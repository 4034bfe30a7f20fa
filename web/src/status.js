// Words the phone shows: connection status, call state, durations. Pure functions of what JsSIP
// reports, so they are unit-tested in Node (tests/unit.test.mjs) without a browser.

/** What a SIP failure code usually means on a kubepbx server, for the person at the phone. */
const REGISTER_HINTS = new Map([
  // kubepbx answers a wrong password and an unknown extension alike (a second challenge), so
  // nobody can probe which extensions exist.
  [401, 'wrong password or unknown extension'],
  [407, 'wrong password or unknown extension'],
  [404, 'this server does not serve that domain'],
  [408, 'the server did not answer in time'],
  [423, 'registration interval too short'],
  [480, 'the server is not ready yet'],
  [500, 'server error'],
  [503, 'server unavailable'],
]);

/** `"403 Extension Disabled"` from a JsSIP IncomingResponse (or null). */
export function responseText(response) {
  if (!response || !response.status_code) return null;
  const phrase = (response.reason_phrase || '').trim();
  return phrase ? `${response.status_code} ${phrase}` : String(response.status_code);
}

/**
 * The status line after a failed REGISTER: JsSIP's `registrationFailed` event data
 * (`{response, cause}`). The server's reason phrase comes first because kubepbx words it for
 * people (`403 Extension Disabled`, `404 Domain Not Served`); a hint follows for bare codes.
 */
export function registrationFailedText({ response, cause } = {}) {
  const text = responseText(response);
  if (!text) return `failed: ${(cause || 'unknown error').toLowerCase()}`;
  const hint = REGISTER_HINTS.get(response.status_code);
  const phrase = (response.reason_phrase || '').toLowerCase();
  // A hint only where the phrase does not say more than the standard wording already does.
  const standard = ['unauthorized', 'proxy authentication required', 'not found', 'forbidden',
    'request timeout', 'interval too brief', 'temporarily unavailable', 'server internal error',
    'service unavailable', ''];
  return hint && standard.includes(phrase) ? `failed: ${text} (${hint})` : `failed: ${text}`;
}

/** WebSocket close codes a browser reports, in words. */
const CLOSE_CODES = new Map([
  [1000, 'closed by the server'],
  [1001, 'the server is going away'],
  [1002, 'protocol error'],
  [1003, 'unsupported data'],
  [1006, 'could not connect, or the connection dropped'],
  [1011, 'server error'],
  [1015, 'TLS handshake failed'],
]);

/**
 * The status line after the WebSocket closed or failed: JsSIP's `disconnected` event data
 * (`{error, code, reason}`) and the URL it tried. `retrying`: JsSIP will connect again.
 */
export function disconnectedText({ code, reason } = {}, url, retrying = true) {
  const words = CLOSE_CODES.get(code) || 'connection closed';
  const why = reason ? `${words}: ${reason}` : words;
  const codeText = code ? ` (code ${code})` : '';
  return `failed: WebSocket ${url} ${why}${codeText}${retrying ? '; retrying' : ''}`;
}

/**
 * The call state after a call ended or failed: JsSIP's `ended`/`failed` event data
 * (`{originator, message, cause}`); `failed` says whether the call was never established.
 */
export function callEndText({ originator, message, cause } = {}, failed) {
  if (failed) {
    if (originator === 'remote' && message && message.status_code) {
      return `failed: ${responseText(message)}`;
    }
    if (cause === 'Canceled') {
      return originator === 'remote' ? 'ended: missed call' : 'ended: cancelled';
    }
    if (cause === 'Rejected' && originator === 'local') return 'ended: rejected';
    if (cause === 'User Denied Media Access') return 'failed: microphone blocked';
    return `failed: ${(cause || 'unknown error').toLowerCase()}`;
  }
  if (originator === 'remote') return 'ended: the other party hung up';
  if (originator === 'local') return 'ended: you hung up';
  return `ended: ${(cause || 'unknown').toLowerCase()}`;
}

/** `mm:ss` for a duration in milliseconds (minutes go past 59 rather than adding hours). */
export function formatDuration(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const minutes = Math.floor(total / 60);
  const seconds = total % 60;
  return `${String(minutes).padStart(2, '0')}:${String(seconds).padStart(2, '0')}`;
}

/** The other party of a call, as shown: `Reception (1001)`, or `1001` without a name. */
export function peerText(identity) {
  if (!identity) return '';
  const user = identity.uri ? identity.uri.user || identity.uri.toString() : '';
  const name = (identity.display_name || '').trim();
  if (name && user && name !== user) return `${name} (${user})`;
  return name || user;
}

/**
 * The SIP target for what was typed: a number or user becomes `sip:<it>@<domain>`; something
 * with an `@` keeps its own domain; a `sip:`/`sips:` URI is used as typed. Spaces, dashes and
 * brackets people put in numbers are dropped. Returns null for nothing dialable.
 */
export function dialTarget(typed, domain) {
  const raw = (typed || '').trim();
  if (!raw) return null;
  if (/^sips?:/i.test(raw)) return raw;
  if (raw.includes('@')) return `sip:${raw}`;
  const user = raw.replace(/[\s\-().]/g, '');
  if (!user) return null;
  return `sip:${user}@${domain}`;
}

/**
 * The extension and domain for the login form's extension field: `1001` (domain from the
 * config's entry for it, else the config's domain) or `1001@other.example`.
 */
export function loginIdentity(typed, config) {
  const raw = (typed || '').trim();
  const at = raw.indexOf('@');
  if (at > 0) return { extension: raw.slice(0, at), domain: raw.slice(at + 1) };
  const entry = (config.extensions || []).find((e) => String(e.extension) === raw);
  return {
    extension: raw,
    domain: (entry && entry.domain) || config.domain,
    displayName: entry && entry.displayName,
  };
}

/**
 * The WebSocket URL for the config's `websocket`: a path on this page's origin (`wss:` when the
 * page is https, else `ws:`), or a full `ws:`/`wss:` URL used as given.
 */
export function websocketUrl(websocket, location) {
  const value = websocket || '/ws';
  if (/^wss?:\/\//i.test(value)) return value;
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const path = value.startsWith('/') ? value : `/${value}`;
  return `${scheme}//${location.host}${path}`;
}
