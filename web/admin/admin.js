// kubepbx admin UI: extensions, calls, finished calls and recordings over the admin API
// (same origin, /api/v1/..., bearer token). Plain ES module, no dependencies.
//
// - The token is kept in sessionStorage (this tab only). Any 401 signs out and shows why.
// - Every API error is shown in the message area (#error): the problem document's `detail`.
// - Tables are updated in place, row by row (keyed), so a password being typed or a focused
//   button survives the refresh. Calls refresh every 2 s; their durations tick every second.

const TOKEN_KEY = 'kubepbx-admin-token';
const CALLS_EVERY_MS = 2000;
const EXTENSIONS_EVERY_MS = 2000;
const HISTORY_EVERY_MS = 6000;

const $ = (id) => document.getElementById(id);

let token = sessionStorage.getItem(TOKEN_KEY);
let timers = [];
/** Server clock minus local clock (from the HTTP Date header), in ms. */
let clockOffset = 0;
/** Where the error shown came from: a poll's errors clear once that poll works again. */
let errorSource = null;
let playerUrl = null;

// ---------------------------------------------------------------------------------------------
// API

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

/** An answer that arrived after signing out (or in again): dropped without a message. */
const STALE = -1;

/** Whether `e` was already told to the user (a 401 signs out with its message) or is moot. */
const alreadyHandled = (e) => e instanceof ApiError && (e.status === 401 || e.status === STALE);

/** Calls the API; resolves to JSON, a Blob (audio) or null (204). Rejects with ApiError. */
async function api(method, path, body) {
  const sentWith = token;
  const headers = { Authorization: `Bearer ${token}` };
  const init = { method, headers, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, `Cannot reach the PBX (${e.message}). Is it running?`);
  }
  if (token !== sentWith) throw new ApiError(STALE, 'signed out meanwhile');
  noteServerClock(response);
  if (response.status === 401) {
    const detail = await problemDetail(response);
    signOut(`The admin token was refused: ${detail}`);
    throw new ApiError(401, detail);
  }
  if (!response.ok) {
    throw new ApiError(response.status, await problemDetail(response));
  }
  if (response.status === 204) return null;
  const type = response.headers.get('Content-Type') || '';
  return type.includes('json') ? response.json() : response.blob();
}

/** The `detail` of a problem document, or the status line. */
async function problemDetail(response) {
  try {
    const problem = await response.json();
    if (problem && typeof problem.detail === 'string') return problem.detail;
  } catch {
    // not JSON: fall through
  }
  return `${response.status} ${response.statusText}`.trim();
}

function noteServerClock(response) {
  const date = Date.parse(response.headers.get('Date') || '');
  if (!Number.isNaN(date)) clockOffset = date - Date.now();
}

const serverNow = () => Date.now() + clockOffset;

const extensionPath = (e) =>
  `/api/v1/extensions/${encodeURIComponent(e.domain)}/${encodeURIComponent(e.extension)}`;

// ---------------------------------------------------------------------------------------------
// Messages

function showError(message, source = 'action') {
  $('error-text').textContent = message;
  $('error').hidden = false;
  errorSource = source;
}

function clearError(source) {
  if (source && errorSource !== source) return;
  $('error').hidden = true;
  $('error-text').textContent = '';
  errorSource = null;
}

function showStatus(message) {
  $('status').textContent = message;
}

/** Runs a user action: clears the last message, shows the error of a failure. */
async function act(action) {
  clearError();
  showStatus('');
  try {
    await action();
  } catch (e) {
    if (!alreadyHandled(e)) showError(e.message);
  }
}

// ---------------------------------------------------------------------------------------------
// Formatting

/** An element with attributes and children (strings become text: never HTML). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name === 'text') node.textContent = value;
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

function size(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

const END_REASONS = {
  'caller-hangup': 'the caller hung up',
  'callee-hangup': 'the callee hung up',
  'admin-hangup': 'hung up by an administrator',
  'media-timeout': 'no audio for too long (media timeout)',
  cancelled: 'the caller hung up while it rang',
  busy: 'busy',
  declined: 'declined',
  'no-answer': 'no answer',
  'media-refused': "the relay could not take the call's audio",
  failed: 'failed',
};

/** Puts `items` into `tbody` as rows keyed by `keyOf`, reusing existing rows. */
function syncRows(tbody, items, keyOf, create, update) {
  const old = new Map([...tbody.rows].map((row) => [row.dataset.key, row]));
  let previous = null;
  for (const item of items) {
    const key = keyOf(item);
    let row = old.get(key);
    if (row) {
      old.delete(key);
    } else {
      row = create(item);
      row.dataset.key = key;
    }
    update(row, item);
    const next = previous ? previous.nextElementSibling : tbody.firstElementChild;
    if (row !== next) tbody.insertBefore(row, next);
    previous = row;
  }
  for (const row of old.values()) row.remove();
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

// ---------------------------------------------------------------------------------------------
// Extensions

async function refreshExtensions() {
  const list = await api('GET', '/api/v1/extensions');
  syncRows($('extensions'), list, (e) => `${e.domain}/${e.extension}`, extensionRow, updateExtension);
  $('extensions-empty').hidden = list.length > 0;
}

function extensionRow(e) {
  const n = e.extension;
  const password = el('input', {
    type: 'password',
    autocomplete: 'new-password',
    'data-testid': `password-${n}`,
    'aria-label': `New password for ${n}`,
    placeholder: 'new password',
  });
  const cells = {
    number: el('th', { scope: 'row', text: n }),
    name: el('td'),
    domain: el('td'),
    enabled: el('td'),
    state: el('span', { 'data-testid': `ext-state-${n}`, class: 'state' }),
    ua: el('span', { 'data-testid': `ext-ua-${n}` }),
    contacts: el('td'),
    failure: el('div', { 'data-testid': `ext-failure-${n}`, class: 'failure' }),
    toggle: el('button', { type: 'button', 'data-testid': `toggle-${n}`, class: 'secondary' }),
    password,
  };
  const row = el(
    'tr',
    { 'data-testid': `ext-row-${n}` },
    cells.number,
    cells.name,
    cells.domain,
    cells.enabled,
    el('td', {}, cells.state),
    el('td', {}, cells.ua),
    cells.contacts,
    el('td', {}, cells.failure),
    el(
      'td',
      {},
      el(
        'div',
        { class: 'actions' },
        el(
          'form',
          {
            class: 'inline',
            onsubmit: (ev) => {
              ev.preventDefault();
              setPassword(row);
            },
          },
          password,
          el('button', { type: 'submit', 'data-testid': `set-password-${n}` }, 'Set password'),
        ),
        cells.toggle,
        el(
          'button',
          {
            type: 'button',
            'data-testid': `delete-${n}`,
            class: 'danger',
            'aria-label': `Delete extension ${n}`,
            onclick: () => remove(row),
          },
          'Delete',
        ),
      ),
    ),
  );
  cells.toggle.addEventListener('click', () => toggle(row));
  row.cells_ = cells;
  return row;
}

function updateExtension(row, e) {
  row.view = e;
  const c = row.cells_;
  setText(c.name, e.displayName || '—');
  setText(c.domain, e.domain);
  c.enabled.replaceChildren(e.enabled ? 'yes' : 'no');
  if (e.disabledReason) c.enabled.append(el('p', { class: 'note', text: e.disabledReason }));
  setText(c.state, e.registered ? 'registered' : 'offline');
  c.state.className = `state ${e.registered ? 'registered' : 'offline'}`;
  const agents = [...new Set(e.contacts.map((ct) => ct.userAgent || 'unknown phone'))];
  setText(c.ua, agents.length ? agents.join(', ') : '—');
  c.contacts.replaceChildren(
    e.contacts.length
      ? el(
          'ul',
          { class: 'contacts' },
          e.contacts.map((ct) =>
            el(
              'li',
              {},
              `${ct.source} over ${ct.transport.toUpperCase()}, expires in ${duration(ct.expiresIn)}`,
              ct.nat ? ' (behind NAT)' : '',
            ),
          ),
        )
      : '—',
  );
  const f = e.lastFailure;
  const failureKey = f ? `${f.reason}|${f.at}|${f.source}` : '';
  if (c.failure.dataset.key !== failureKey) {
    c.failure.dataset.key = failureKey;
    c.failure.replaceChildren(
      ...(f
        ? [
            el('p', {}, el('strong', { class: 'reason', text: f.reason }), ` at ${when(f.at)} from ${f.source}`),
            el('p', { text: f.meaning }),
            el('p', {}, el('strong', { text: 'Fix: ' }), f.fix),
            el('p', { class: 'note', text: f.detail }),
          ]
        : ['—']),
    );
  }
  setText(c.toggle, e.enabled ? 'Disable' : 'Enable');
  c.toggle.setAttribute('aria-label', `${e.enabled ? 'Disable' : 'Enable'} extension ${e.extension}`);
}

function setPassword(row) {
  const e = row.view;
  const input = row.cells_.password;
  return act(async () => {
    if (!input.value) {
      throw new Error(`Type a new password for ${e.extension} first.`);
    }
    const view = await api('PATCH', extensionPath(e), { password: input.value });
    input.value = '';
    updateExtension(row, view);
    showStatus(`Password of ${e.extension} changed: its phones need the new one.`);
  });
}

function toggle(row) {
  const e = row.view;
  return act(async () => {
    const view = await api('PATCH', extensionPath(e), { enabled: !e.enabled });
    updateExtension(row, view);
    showStatus(`Extension ${e.extension} ${view.enabled ? 'enabled' : 'disabled'}.`);
  });
}

function remove(row) {
  const e = row.view;
  const question =
    `Delete extension ${e.extension} (${e.domain})? Its phones are unregistered and it ` +
    'can no longer register.';
  if (!window.confirm(question)) return undefined;
  return act(async () => {
    await api('DELETE', extensionPath(e));
    row.remove();
    $('extensions-empty').hidden = $('extensions').rows.length > 0;
    showStatus(`Extension ${e.extension} deleted.`);
  });
}

function create(ev) {
  ev.preventDefault();
  return act(async () => {
    const body = {
      extension: $('new-extension').value.trim(),
      password: $('new-password').value,
    };
    const displayName = $('new-display-name').value.trim();
    const domain = $('new-domain').value.trim();
    if (displayName) body.displayName = displayName;
    if (domain) body.domain = domain;
    const view = await api('POST', '/api/v1/extensions', body);
    $('create-form').reset();
    showStatus(`Extension ${view.extension} created in ${view.domain}.`);
    await refreshExtensions();
  });
}

// ---------------------------------------------------------------------------------------------
// Calls

async function refreshCalls() {
  const list = await api('GET', '/api/v1/calls');
  const fetchedAt = performance.now();
  syncRows($('calls'), list, (c) => c.id, callRow, (row, c) => updateCall(row, c, fetchedAt));
  $('calls-empty').hidden = list.length > 0;
  tick();
}

function callRow(c) {
  const cells = {
    from: el('td'),
    to: el('td'),
    state: el('td'),
    started: el('td'),
    duration: el('span', { 'data-testid': `call-duration-${c.id}`, class: 'duration' }),
    media: el('td'),
    recording: el('td'),
  };
  const hangup = el(
    'button',
    {
      type: 'button',
      class: 'danger',
      'data-testid': `hangup-${c.id}`,
      'aria-label': `Hang up the call from ${c.from} to ${c.to}`,
    },
    'Hang up',
  );
  const row = el(
    'tr',
    { 'data-testid': `call-row-${c.id}` },
    cells.from,
    cells.to,
    cells.state,
    cells.started,
    el('td', {}, cells.duration),
    cells.media,
    cells.recording,
    el('td', {}, hangup),
  );
  hangup.addEventListener('click', () => hangUp(row));
  row.cells_ = cells;
  return row;
}

function updateCall(row, c, fetchedAt) {
  row.view = c;
  row.fetchedAt = fetchedAt;
  const cells = row.cells_;
  setText(cells.from, c.from);
  setText(cells.to, c.to);
  setText(cells.state, c.state);
  setText(cells.started, when(c.startedAt));
  setText(cells.media, mediaSummary(c.media));
  setText(cells.recording, c.recording ? 'recorded' : '—');
}

/** Packets each way, and a hint at one-way audio. */
function mediaSummary(media) {
  if (!media) return '—';
  const { caller, callee } = media;
  const oneWay = [];
  if (caller.packetsIn === 0) oneWay.push(`nothing from the caller`);
  if (callee.packetsIn === 0) oneWay.push(`nothing from the callee`);
  const counts = `caller sent ${caller.packetsIn}, callee sent ${callee.packetsIn} packets`;
  return oneWay.length ? `${counts} (${oneWay.join(', ')})` : counts;
}

/** Updates the live durations: talk time once answered, ring time before. */
function tick() {
  const now = performance.now();
  for (const row of $('calls').rows) {
    const c = row.view;
    if (!c) continue;
    let text;
    if (c.state === 'answered') {
      text = duration(c.durationSeconds + (now - row.fetchedAt) / 1000);
    } else {
      const started = Date.parse(c.startedAt);
      text = `ringing ${duration((serverNow() - started) / 1000)}`;
    }
    setText(row.cells_.duration, text);
  }
}

function hangUp(row) {
  const c = row.view;
  return act(async () => {
    await api('DELETE', `/api/v1/calls/${encodeURIComponent(c.id)}`);
    row.remove();
    $('calls-empty').hidden = $('calls').rows.length > 0;
    showStatus(`Call from ${c.from} to ${c.to} hung up.`);
  });
}

// ---------------------------------------------------------------------------------------------
// Finished calls and recordings

async function refreshCdrs() {
  const list = await api('GET', '/api/v1/cdrs');
  syncRows($('cdrs'), list, (c) => c.id, cdrRow, updateCdr);
  $('cdrs-empty').hidden = list.length > 0;
}

function cdrRow(c) {
  return el('tr', { 'data-testid': `cdr-row-${c.id}` });
}

function updateCdr(row, c) {
  if (row.dataset.ended === c.endedAt) return; // a record does not change
  row.dataset.ended = c.endedAt;
  const how = `${END_REASONS[c.endReason] || c.endReason} (${c.endCode})`;
  row.replaceChildren(
    el('td', { text: c.from }),
    el('td', { text: c.to }),
    el('td', { text: when(c.startedAt) }),
    el('td', { text: c.answeredAt ? duration(c.durationSeconds) : 'not answered' }),
    el('td', { text: when(c.endedAt) }),
    el('td', {}, how, c.recording ? el('p', { class: 'note', text: 'recorded' }) : null),
  );
}

async function refreshRecordings() {
  let list;
  try {
    list = await api('GET', '/api/v1/recordings');
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) {
      // This PBX records nothing (no recordings directory): say so where the list would be.
      $('recordings').replaceChildren();
      $('recordings-empty').textContent = e.message;
      $('recordings-empty').hidden = false;
      return;
    }
    throw e;
  }
  syncRows($('recordings'), list, (r) => r.id, recordingRow, updateRecording);
  $('recordings-empty').textContent = 'No recordings.';
  $('recordings-empty').hidden = list.length > 0;
}

function recordingRow(r) {
  const row = el('tr', { 'data-testid': `recording-${r.id}` });
  row.cells_ = {
    from: el('td'),
    to: el('td'),
    started: el('td'),
    ended: el('td'),
    size: el('td'),
  };
  const play = el(
    'button',
    {
      type: 'button',
      'data-testid': `play-${r.id}`,
      'aria-label': `Play the recording of ${r.from} to ${r.to}`,
    },
    'Play',
  );
  const download = el(
    'button',
    {
      type: 'button',
      class: 'secondary',
      'data-testid': `download-${r.id}`,
      'aria-label': `Download the recording of ${r.from} to ${r.to}`,
    },
    'Download',
  );
  play.addEventListener('click', () => playRecording(r.id));
  download.addEventListener('click', () => downloadRecording(r.id));
  const c = row.cells_;
  row.append(
    c.from,
    c.to,
    c.started,
    c.ended,
    c.size,
    el('td', {}, el('div', { class: 'actions' }, play, download)),
  );
  return row;
}

function updateRecording(row, r) {
  const c = row.cells_;
  setText(c.from, r.from);
  setText(c.to, r.to);
  setText(c.started, when(r.startedAt));
  setText(c.ended, r.endedAt ? when(r.endedAt) : 'recording…');
  const skipped = r.skippedPayloads.length
    ? ` (silent: ${r.skippedPayloads.join(', ')} could not be decoded)`
    : '';
  setText(c.size, `${size(r.sizeBytes)}${skipped}`);
}

const recordingPath = (id) => `/api/v1/recordings/${encodeURIComponent(id)}`;

function playRecording(id) {
  return act(async () => {
    const blob = await api('GET', recordingPath(id));
    const player = $('player');
    if (playerUrl) URL.revokeObjectURL(playerUrl);
    playerUrl = URL.createObjectURL(blob);
    player.src = playerUrl;
    player.hidden = false;
    player.setAttribute('aria-label', `Recording ${id}`);
    await player.play().catch(() => {
      showStatus('Press play on the player to listen.');
    });
  });
}

function downloadRecording(id) {
  return act(async () => {
    const blob = await api('GET', recordingPath(id));
    const url = URL.createObjectURL(blob);
    const link = el('a', { href: url, download: `${id}.wav`, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  });
}

// ---------------------------------------------------------------------------------------------
// Polling, sign-in and sign-out

/**
 * Runs `refresh` every `ms` (not overlapping itself). Its errors go to the message area, and
 * its next success clears them.
 */
function every(name, ms, refresh) {
  const source = `poll:${name}`;
  let busy = false;
  const run = async () => {
    if (busy || !token) return;
    busy = true;
    try {
      await refresh();
      clearError(source);
    } catch (e) {
      if (!alreadyHandled(e)) showError(e.message, source);
    } finally {
      busy = false;
    }
  };
  run();
  timers.push(setInterval(run, ms));
}

function startApp() {
  $('login').hidden = true;
  $('app').hidden = false;
  $('logout').hidden = false;
  stopTimers();
  every('extensions', EXTENSIONS_EVERY_MS, refreshExtensions);
  every('calls', CALLS_EVERY_MS, refreshCalls);
  every('history', HISTORY_EVERY_MS, async () => {
    await refreshCdrs();
    await refreshRecordings();
  });
  timers.push(setInterval(tick, 1000));
}

function stopTimers() {
  for (const t of timers) clearInterval(t);
  timers = [];
}

function signOut(message) {
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  stopTimers();
  for (const id of ['extensions', 'calls', 'cdrs', 'recordings']) $(id).replaceChildren();
  const player = $('player');
  player.pause();
  player.removeAttribute('src');
  player.hidden = true;
  if (playerUrl) URL.revokeObjectURL(playerUrl);
  playerUrl = null;
  $('app').hidden = true;
  $('logout').hidden = true;
  $('login').hidden = false;
  showStatus('');
  if (message) showError(message, 'login');
  else clearError();
  $('token').value = '';
  $('token').focus();
}

async function signIn(ev) {
  ev.preventDefault();
  clearError();
  const typed = $('token').value.trim();
  if (!typed) {
    showError('Type the admin token.', 'login');
    return;
  }
  token = typed;
  sessionStorage.setItem(TOKEN_KEY, token);
  try {
    await api('GET', '/api/v1/extensions');
  } catch (e) {
    if (!alreadyHandled(e)) {
      showError(e.message, 'login');
      signOutQuietly();
    }
    return;
  }
  $('token').value = '';
  startApp();
}

/** Forgets a token that could not be checked, keeping the message shown. */
function signOutQuietly() {
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
}

function init() {
  $('login-form').addEventListener('submit', signIn);
  $('create-form').addEventListener('submit', create);
  $('logout').addEventListener('click', () => signOut());
  $('error-close').addEventListener('click', () => clearError());
  if (token) startApp();
  else $('token').focus();
}

init();
