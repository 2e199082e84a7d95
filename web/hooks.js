// `window.sori`: numbers for automation and the browser tests — when the page started, when the
// first remote frame decoded, what the peer connection sent and received, and the simulcast
// views and stats.

import { state, participantFor } from './store.js';
import { timing, describeTracks } from './tiles.js';
import { sentViews } from './quality.js';
import { closes, resumes, send } from './signaling.js';

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

/** The video from the participant named `name`: the height of the frames it decodes now and
 * the running totals of its `inbound-rtp` stats (frames, packets, packets lost after repair,
 * freezes, keyframes, NACKs and PLIs sent), and the codec (`video/VP8`; null before any). */
async function videoFrom(name) {
  const out = {
    frameHeight: 0, framesDecoded: 0, packetsReceived: 0, packetsLost: 0, freezeCount: 0,
    totalFreezesDuration: 0, keyFramesDecoded: 0, nackCount: 0, pliCount: 0, codec: null,
  };
  if (!state.pc) return out;
  const tracks = [...state.remote.values()]
    .filter((r) => { const p = participantFor(r.key); return p && p.name === name; })
    .map((r) => r.track);
  for (const receiver of state.pc.getReceivers()) {
    if (!receiver.track || receiver.track.kind !== 'video' || !tracks.includes(receiver.track)) continue;
    const report = await receiver.getStats();
    report.forEach((s) => {
      if (s.type !== 'inbound-rtp' || s.kind !== 'video') return;
      out.frameHeight = Math.max(out.frameHeight, s.frameHeight || 0);
      const codec = s.codecId && report.get(s.codecId);
      if (codec) out.codec = codec.mimeType;
      for (const k of Object.keys(out)) if (typeof out[k] === 'number' && k !== 'frameHeight') out[k] += s[k] || 0;
    });
  }
  return out;
}

/** Bytes of video received so far from each other participant, by name (one getStats). */
async function videoBytesByName() {
  const out = {};
  if (!state.pc) return out;
  (await state.pc.getStats()).forEach((s) => {
    if (s.type !== 'inbound-rtp' || s.kind !== 'video') return;
    const entry = state.remote.get(s.trackIdentifier);
    const p = entry && participantFor(entry.key);
    if (p) out[p.name] = (out[p.name] || 0) + (s.bytesReceived || 0);
  });
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
      keyFramesEncoded: s.keyFramesEncoded ?? 0, packetsSent: s.packetsSent ?? 0,
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

/** Every ICE candidate pair of the peer connection, as one line each: both sides, the pair's
 * state, nomination, and the checks sent and answered both ways (for a test that failed). */
async function candidatePairs() {
  if (!state.pc) return [];
  const report = await state.pc.getStats();
  const side = (id) => {
    const c = report.get(id);
    return c ? `${c.candidateType}/${c.protocol} ${c.address}:${c.port}` : '?';
  };
  const out = [];
  report.forEach((s) => {
    if (s.type !== 'candidate-pair') return;
    out.push(`${side(s.localCandidateId)} → ${side(s.remoteCandidateId)} ${s.state}`
      + `${s.nominated ? ' nominated' : ''} requests ${s.requestsSent ?? '-'}/${s.responsesReceived ?? '-'}`
      + ` in ${s.requestsReceived ?? '-'}/${s.responsesSent ?? '-'} consent ${s.consentRequestsSent ?? '-'}`);
  });
  return out;
}

/** Video watches by participant name: when the last new frame decoded, and the gaps. */
const watches = new Map();
const GAP_MS = 500;

/** Starts timing the video from `name`: every 100 ms, whether a new frame was decoded. */
function watchVideo(name) {
  const w = { frames: -1, at: performance.now(), gaps: [], ends: [], start: performance.now(), first: null };
  w.timer = setInterval(async () => {
    const { framesDecoded } = await videoFrom(name);
    const now = performance.now();
    if (framesDecoded === w.frames) return;
    if (w.frames >= 0 && now - w.at > GAP_MS) {
      w.gaps.push((now - w.at) / 1000);
      w.ends.push((now - w.start) / 1000);
    }
    if (w.frames >= 0 && w.first === null) w.first = (now - w.start) / 1000;
    w.frames = framesDecoded;
    w.at = now;
  }, 100);
  watches.set(name, w);
}

/** The video from `name` since `watchVideo`: each stretch over half a second without a new
 * frame (seconds; one still open counts up to now) and their sum, the black-video seconds;
 * when each closed stretch ended (seconds after `watchVideo`); and when the first new frame
 * came (seconds after `watchVideo`; null: none yet). */
function videoGaps(name) {
  const w = watches.get(name);
  if (!w) return null;
  const gaps = [...w.gaps];
  const open = performance.now() - w.at;
  if (w.frames < 0 || open > GAP_MS) gaps.push(open / 1000);
  return { gaps, ends: [...w.ends], first: w.first, black: gaps.reduce((a, b) => a + b, 0) };
}

export function install() {
  window.sori = {
    startedAt: performance.now(),
    get firstRemoteFrameAt() { return timing.firstRemoteFrameAt; },
    iceServers: () => state.iceServers,
    inboundStats,
    inboundFrom,
    videoFrom,
    outbound,
    outboundVideo,
    /** The server's latest `stats` message (SFU rooms; null before the first). */
    get stats() { return state.stats; },
    /** The `view` last sent for each remote video, by media-server track id. */
    views: sentViews,
    selectedPair,
    candidatePairs,
    /** The session versions (`o=` line) of the peer connection's local and remote
     * descriptions: each negotiation raises them. */
    sdpVersions: () => {
      const v = (d) => (d ? Number((d.sdp.match(/^o=\S+ \S+ (\d+)/m) || [])[1]) : null);
      return { local: v(state.pc && state.pc.localDescription), remote: v(state.pc && state.pc.remoteDescription) };
    },
    /** ICE restarts this page made (path lost, network change, or asked by the server). */
    get iceRestarts() { return state.iceRestarts; },
    /** New peer connections made because the media server and this page disagreed. */
    get mediaReconnects() { return state.mediaReconnects; },
    /** Sends the media server an ICE restart offer behind the peer connection's back (its
     * local description with new ICE credentials), as a restart taken back too late would:
     * the server applies an offer the page does not have (for tests of how the page finds
     * its way back). */
    offerBehindItsBack: () => {
      const fresh = (n) => Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) => 'abcdefghijklmnopqrstuvwxyz0123456789'[b % 36]).join('');
      const sdp = state.pc.localDescription.sdp
        .replace(/^a=ice-ufrag:.*$/gm, `a=ice-ufrag:${fresh(8)}`)
        .replace(/^a=ice-pwd:.*$/gm, `a=ice-pwd:${fresh(24)}`);
      send({ type: 'offer', sdp });
    },
    /** The remote tracks with their roles: `{ participant, kind, role, stated }`. */
    remoteTracks: describeTracks,
    /** Who speaks now (participant id -> level) and who has the floor, as the server said. */
    get speaking() { return Object.fromEntries(state.speaking); },
    get dominant() { return state.dominant; },
    /** `speakers`, `dominant-speaker` and `video-set` as they came, with Date.now() times. */
    get speakerLog() { return state.speakerLog; },
    /** Last-N: the participant ids whose video the server sends (null: all). */
    get videoSet() { return state.videoSet && [...state.videoSet]; },
    /** The others' names by participant id. */
    get names() { return Object.fromEntries([...state.participants].map(([id, p]) => [id, p.name])); },
    videoBytesByName,
    /** This participant's id, and the others' arrivals and departures as they were told. */
    get me() { return state.me; },
    get joins() { return state.joins; },
    get presence() { return state.presence; },
    watchVideo,
    videoGaps,
    /** How the page's sockets to the server ended: `{ code, at }`. */
    socketCloses: () => [...closes],
    /** When the page's `resume`s were answered (`Date.now()`). */
    resumes: () => [...resumes],
  };
}
