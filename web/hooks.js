// `window.sori`: numbers for automation and the browser tests — when the page started, when the
// first remote frame decoded, what the peer connection sent and received, and the simulcast
// views and stats.

import { state, participantFor } from './store.js';
import { timing, describeTracks } from './tiles.js';
import { sentViews } from './quality.js';

function count(report, type, fields) {
  const out = Object.fromEntries(Object.keys(fields).map((k) => [k, 0]));
  report.forEach((s) => {
    if (s.type !== type) return;
    for (const [key, [kind, field]] of Object.entries(fields)) {
      if (s.kind === kind) out[key] += s[field] || 0;
    }
  });
  return out;
}

async function inboundStats() {
  const fields = { audioPackets: ['audio', 'packetsReceived'], videoFramesDecoded: ['video', 'framesDecoded'] };
  if (!state.pc) return count(new Map(), '', fields);
  return count(await state.pc.getStats(), 'inbound-rtp', fields);
}

/** Packets and frames received so far from the participant named `name`. */
async function inboundFrom(name) {
  const out = { audioPackets: 0, videoFrames: 0 };
  if (!state.pc) return out;
  const tracks = [...state.remote.values()]
    .filter((r) => { const p = participantFor(r.key); return p && p.name === name; })
    .map((r) => r.track);
  for (const receiver of state.pc.getReceivers()) {
    if (!receiver.track || !tracks.includes(receiver.track)) continue;
    const got = count(await receiver.getStats(), 'inbound-rtp',
      { audioPackets: ['audio', 'packetsReceived'], videoFrames: ['video', 'framesDecoded'] });
    out.audioPackets += got.audioPackets;
    out.videoFrames += got.videoFrames;
  }
  return out;
}

/** Packets this page has sent, per kind. */
async function outbound() {
  const fields = { audioPackets: ['audio', 'packetsSent'], videoPackets: ['video', 'packetsSent'] };
  if (!state.pc) return count(new Map(), '', fields);
  return count(await state.pc.getStats(), 'outbound-rtp', fields);
}

/** Each video encoding this page sends: its `rid` (null without simulcast), frame size,
 * frames encoded and whether it is active. */
async function outboundVideo() {
  if (!state.pc) return [];
  const out = [];
  (await state.pc.getStats()).forEach((s) => {
    if (s.type !== 'outbound-rtp' || s.kind !== 'video') return;
    out.push({
      mid: s.mid ?? null, rid: s.rid ?? null, frameWidth: s.frameWidth ?? 0,
      frameHeight: s.frameHeight ?? 0, framesEncoded: s.framesEncoded ?? 0, active: s.active ?? null,
    });
  });
  return out.sort((a, b) => String(a.rid).localeCompare(String(b.rid)));
}

/** The ICE candidate pair media uses now: each side's type, protocol, address and port. */
async function selectedPair() {
  if (!state.pc) return null;
  const report = await state.pc.getStats();
  let pair = null;
  report.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
  });
  if (!pair) return null;
  const side = (id) => {
    const c = report.get(id);
    return c && {
      type: c.candidateType, protocol: c.protocol, address: c.address, port: c.port,
      relayProtocol: c.relayProtocol, url: c.url,
    };
  };
  return { local: side(pair.localCandidateId), remote: side(pair.remoteCandidateId) };
}

export function install() {
  window.sori = {
    startedAt: performance.now(),
    get firstRemoteFrameAt() { return timing.firstRemoteFrameAt; },
    iceServers: () => state.iceServers,
    inboundStats,
    inboundFrom,
    outbound,
    outboundVideo,
    /** The server's latest `stats` message (SFU rooms; null before the first). */
    get stats() { return state.stats; },
    /** The `view` last sent for each remote video, by media-server track id. */
    views: sentViews,
    selectedPair,
    /** The remote tracks with their roles: `{ participant, kind, role, stated }`. */
    remoteTracks: describeTracks,
  };
}
