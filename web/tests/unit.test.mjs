// Unit tests of the web phone's browser-free parts: `npm test` (node's test runner).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { audioStats } from '../src/stats.js';
import {
  callEndText,
  dialTarget,
  disconnectedText,
  formatDuration,
  loginIdentity,
  peerText,
  registrationFailedText,
  websocketUrl,
} from '../src/status.js';


test('registration failures carry the code and the server reason phrase', () => {
  const r = (status_code, reason_phrase) => ({ response: { status_code, reason_phrase }, cause: 'x' });
  assert.equal(registrationFailedText(r(403, 'Extension Disabled')), 'failed: 403 Extension Disabled');
  assert.equal(registrationFailedText(r(404, 'Domain Not Served')), 'failed: 404 Domain Not Served');
  assert.equal(
    registrationFailedText(r(401, 'Unauthorized')),
    'failed: 401 Unauthorized (wrong password or unknown extension)',
  );
  assert.equal(registrationFailedText(r(503, '')), 'failed: 503 (server unavailable)');
  assert.equal(registrationFailedText({ cause: 'Request Timeout' }), 'failed: request timeout');
});

test('WebSocket failures name the URL and the close code', () => {
  assert.equal(
    disconnectedText({ error: true, code: 1006 }, 'ws://127.0.0.1:9/ws'),
    'failed: WebSocket ws://127.0.0.1:9/ws could not connect, or the connection dropped (code 1006); retrying',
  );
  assert.equal(
    disconnectedText({ code: 1000, reason: 'shutting down' }, 'wss://x/ws', false),
    'failed: WebSocket wss://x/ws closed by the server: shutting down (code 1000)',
  );
});

test('call ends are worded by who ended them and how', () => {
  assert.equal(callEndText({ originator: 'remote', cause: 'Terminated' }, false), 'ended: the other party hung up');
  assert.equal(callEndText({ originator: 'local', cause: 'Terminated' }, false), 'ended: you hung up');
  assert.equal(
    callEndText({ originator: 'remote', message: { status_code: 486, reason_phrase: 'Busy Here' }, cause: 'Busy' }, true),
    'failed: 486 Busy Here',
  );
  assert.equal(callEndText({ originator: 'remote', message: {}, cause: 'Canceled' }, true), 'ended: missed call');
  assert.equal(callEndText({ originator: 'local', cause: 'Canceled' }, true), 'ended: cancelled');
  assert.equal(callEndText({ originator: 'local', cause: 'Rejected' }, true), 'ended: rejected');
  assert.equal(callEndText({ originator: 'local', cause: 'User Denied Media Access' }, true), 'failed: microphone blocked');
});

test('durations are mm:ss', () => {
  assert.equal(formatDuration(0), '00:00');
  assert.equal(formatDuration(59_999), '00:59');
  assert.equal(formatDuration(61_000), '01:01');
  assert.equal(formatDuration(3_725_000), '62:05');
  assert.equal(formatDuration(-5), '00:00');
});

test('peers show name and number', () => {
  assert.equal(peerText({ display_name: 'Reception', uri: { user: '1001' } }), 'Reception (1001)');
  assert.equal(peerText({ display_name: '', uri: { user: '1002' } }), '1002');
  assert.equal(peerText(null), '');
});

test('dial targets', () => {
  assert.equal(dialTarget(' 1002 ', 'pbx.example.com'), 'sip:1002@pbx.example.com');
  assert.equal(dialTarget('+1 (555) 010-0000', 'd'), 'sip:+15550100000@d');
  assert.equal(dialTarget('1002@other.example', 'd'), 'sip:1002@other.example');
  assert.equal(dialTarget('sip:echo@d', 'x'), 'sip:echo@d');
  assert.equal(dialTarget('  ', 'd'), null);
});

test('login identity comes from the config entry, or extension@domain', () => {
  const config = {
    domain: 'pbx.example.com',
    extensions: [{ extension: '2001', domain: 'b.example', displayName: 'Desk' }],
  };
  assert.deepEqual(loginIdentity('2001', config), { extension: '2001', domain: 'b.example', displayName: 'Desk' });
  assert.deepEqual(loginIdentity('1001', config), { extension: '1001', domain: 'pbx.example.com', displayName: undefined });
  assert.deepEqual(loginIdentity('1001@c.example', config), { extension: '1001', domain: 'c.example' });
});

test('WebSocket URL follows the page scheme', () => {
  assert.equal(websocketUrl('/ws', { protocol: 'http:', host: '127.0.0.1:8080' }), 'ws://127.0.0.1:8080/ws');
  assert.equal(websocketUrl('/ws', { protocol: 'https:', host: 'pbx.example.com' }), 'wss://pbx.example.com/ws');
  assert.equal(websocketUrl('ws', { protocol: 'http:', host: 'h' }), 'ws://h/ws');
  assert.equal(websocketUrl(undefined, { protocol: 'http:', host: 'h' }), 'ws://h/ws');
  assert.equal(websocketUrl('wss://sip.example/ws', { protocol: 'http:', host: 'h' }), 'wss://sip.example/ws');
});

test('audio stats are summed from inbound-rtp, outbound-rtp and media-source', () => {
  const report = new Map([
    ['a', { type: 'inbound-rtp', kind: 'audio', packetsReceived: 50, bytesReceived: 8000, audioLevel: 0.3, totalAudioEnergy: 0.2 }],
    ['b', { type: 'outbound-rtp', kind: 'audio', packetsSent: 49, bytesSent: 7840 }],
    ['c', { type: 'media-source', kind: 'audio', audioLevel: 0.5 }],
    ['d', { type: 'inbound-rtp', kind: 'video', packetsReceived: 999 }],
  ]);
  assert.deepEqual(audioStats(report), {
    inbound: { packetsReceived: 50, bytesReceived: 8000, audioLevel: 0.3, totalAudioEnergy: 0.2 },
    outbound: { packetsSent: 49, bytesSent: 7840, audioLevel: 0.5 },
  });
});

test('older Chromium: the received level comes from the remote track stat', () => {
  const report = [
    { type: 'inbound-rtp', mediaType: 'audio', packetsReceived: 5, bytesReceived: 800 },
    { type: 'track', kind: 'audio', remoteSource: true, audioLevel: 0.1, totalAudioEnergy: 0.01 },
    { type: 'track', kind: 'audio', remoteSource: false, audioLevel: 0.9 },
  ];
  const { inbound } = audioStats(report);
  assert.equal(inbound.audioLevel, 0.1);
  assert.equal(inbound.totalAudioEnergy, 0.01);
  assert.equal(inbound.packetsReceived, 5);
});
