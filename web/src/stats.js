// The audio counters of a call, from `RTCPeerConnection.getStats()`, for tests and the screen.

/**
 * Sums the audio RTP counters of a stats report (an `RTCStatsReport` or any iterable/Map of
 * stats objects):
 * `{inbound: {packetsReceived, bytesReceived, audioLevel, totalAudioEnergy},
 *   outbound: {packetsSent, bytesSent, audioLevel}}`.
 *
 * The received audio level is on `inbound-rtp` in current Chromium; older versions put it on a
 * `track` stat (`remoteSource: true`), which is used when `inbound-rtp` has none. The sent
 * audio level (the microphone) is on the `media-source` stat.
 */
export function audioStats(report) {
  const inbound = { packetsReceived: 0, bytesReceived: 0, audioLevel: null, totalAudioEnergy: null };
  const outbound = { packetsSent: 0, bytesSent: 0, audioLevel: null };
  let trackLevel = null;
  let trackEnergy = null;
  const values = typeof report.values === 'function' ? report.values() : report;
  for (const s of values) {
    const audio = s.kind === 'audio' || s.mediaType === 'audio';
    if (s.type === 'inbound-rtp' && audio) {
      inbound.packetsReceived += s.packetsReceived || 0;
      inbound.bytesReceived += s.bytesReceived || 0;
      if (typeof s.audioLevel === 'number') inbound.audioLevel = Math.max(inbound.audioLevel ?? 0, s.audioLevel);
      if (typeof s.totalAudioEnergy === 'number') {
        inbound.totalAudioEnergy = (inbound.totalAudioEnergy ?? 0) + s.totalAudioEnergy;
      }
    } else if (s.type === 'outbound-rtp' && audio) {
      outbound.packetsSent += s.packetsSent || 0;
      outbound.bytesSent += s.bytesSent || 0;
    } else if (s.type === 'media-source' && audio) {
      if (typeof s.audioLevel === 'number') outbound.audioLevel = Math.max(outbound.audioLevel ?? 0, s.audioLevel);
    } else if (s.type === 'track' && s.remoteSource && (s.kind === 'audio' || s.audioLevel !== undefined)) {
      if (typeof s.audioLevel === 'number') trackLevel = Math.max(trackLevel ?? 0, s.audioLevel);
      if (typeof s.totalAudioEnergy === 'number') trackEnergy = (trackEnergy ?? 0) + s.totalAudioEnergy;
    }
  }
  if (inbound.audioLevel === null) inbound.audioLevel = trackLevel;
  if (inbound.totalAudioEnergy === null) inbound.totalAudioEnergy = trackEnergy;
  return { inbound, outbound };
}
