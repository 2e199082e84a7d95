// The one RTCPeerConnection: to the media server (SFU rooms, send-only, the server offers what
// it forwards) or to the other browser (P2P rooms). Every offer and answer names the role of
// each sending video by mid: `camera` or `screen`. To the media server, videos go as simulcast:
// several encodings of one track (docs/simulcast.md), of which the server forwards each
// receiver one and asks (`layers`) for the encodings no one receives to pause.

import { state } from './store.js';
import { send, probe, forgetUnacked } from './signaling.js';
import { setStatus } from './page.js';
import { reset as resetViews } from './quality.js';
import { t } from './i18n.js';

const hooks = { onTrack: () => {}, onTrackGone: () => {} };

/** What to do when a remote track arrives or goes: `{ onTrack, onTrackGone }`. */
export function onRemoteTracks(h) { Object.assign(hooks, h); }

function direction() { return state.peerId ? 'sendrecv' : 'sendonly'; }

/** The simulcast encodings of a camera and of a screen share, lowest first (docs/simulcast.md).
 * No `scalabilityMode`: Firefox ESR drops it, and one setting for both browsers is simpler. */
export const ENCODINGS = {
  camera: [
    { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
    { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
    { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
  ],
  screen: [
    { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
    { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 2_000_000 },
  ],
};

/** Senders that asked for simulcast, and what for: sender -> 'camera' | 'screen'. */
const simulcastSenders = new WeakMap();

/**
 * Adds `track` to `pc`: as simulcast (the encodings of `role`) to the media server, as one
 * encoding to the other browser or where the browser cannot send simulcast.
 */
function addTrack(pc, track, stream, role) {
  const init = { direction: direction(), streams: [stream] };
  if (track.kind !== 'video' || state.peerId) return pc.addTransceiver(track, init);
  try {
    const sendEncodings = ENCODINGS[role].map((e) => ({ ...e }));
    const transceiver = pc.addTransceiver(track, { ...init, sendEncodings });
    simulcastSenders.set(transceiver.sender, role);
    return transceiver;
  } catch (err) {
    console.warn('simulcast not available, sending one encoding:', err.message);
    return pc.addTransceiver(track, init);
  }
}

/**
 * A media server that did not take simulcast leaves the browser sending the first encoding
 * alone (the smallest): that one is made the full-size, top-bitrate one instead.
 */
async function unicastFallback(pc) {
  for (const t of pc.getTransceivers()) {
    const role = simulcastSenders.get(t.sender);
    if (!role || !t.sender.track) continue;
    const params = t.sender.getParameters();
    const encodings = params.encodings || [];
    if (encodings.length !== 1 || (encodings[0].scaleResolutionDownBy || 1) === 1) continue;
    const top = ENCODINGS[role][ENCODINGS[role].length - 1];
    Object.assign(encodings[0], { scaleResolutionDownBy: 1, maxBitrate: top.maxBitrate });
    try { await on(pc, t.sender.setParameters(params)); } catch (err) { if (pc === state.pc) console.warn('one encoding', err); }
  }
}

/** Connects media the way the room's mode says. */
export async function startMedia() {
  if (state.mode === 'sfu') {
    createPc(null);
    state.offerer = true;
    await offer();
    return;
  }
  const other = [...state.participants.keys()][0];
  if (other) {
    createPc(other);
    state.offerer = true;
    await offer();
  } else {
    setStatus(t('waiting'));
  }
}

export function createPc(peerId) {
  closePc();
  const pc = new RTCPeerConnection({ iceServers: state.iceServers });
  state.pc = pc;
  state.peerId = peerId;
  state.offerer = false;
  resetViews();
  for (const track of state.local.getTracks()) addTrack(pc, track, state.local, 'camera');
  if (state.screen) addScreen(state.screen.getVideoTracks()[0]);
  pc.onicecandidate = (e) => {
    if (e.candidate && state.peerId && pc === state.pc) {
      send({ type: 'candidate', candidate: e.candidate.toJSON(), to: state.peerId });
    }
  };
  pc.ontrack = (e) => {
    if (pc === state.pc) remoteTrack(pc, peerId, e);
  };
  pc.onconnectionstatechange = () => {
    if (pc !== state.pc) return;
    const s = pc.connectionState;
    if (s === 'connected') setStatus(t('connected'), 'ok');
    else if (s === 'failed' || s === 'disconnected') setStatus(t(s), 'bad');
    else setStatus(t(s));
  };
  pc.oniceconnectionstatechange = () => {
    if (pc !== state.pc) return;
    const s = pc.iceConnectionState;
    console.debug(`ICE ${s}`);
    if (s === 'failed' || s === 'disconnected') probe(PROBE_MS);
    if (s === 'failed') restartIce('failed');
    // A blip often mends itself; a path that stays down gets a restart soon.
    else if (s === 'disconnected') later(DISCONNECTED_GRACE_MS, () => pc.iceConnectionState === 'disconnected', 'disconnected');
  };
  watchStall(pc);
  pc.onnegotiationneeded = () => {
    if (pc === state.pc && pc.signalingState === 'stable' && pc.remoteDescription) offer();
  };
  return pc;
}

// ---------- operations on a peer connection that may be closed meanwhile ----------

/** Each peer connection's end: an operation still pending on a peer connection when it is
 * closed never settles (the WebRTC spec abandons it), and the server's messages are handled
 * in turn, so one awaiting it would hold up every message after it (the next peer
 * connection's answer among them). */
const ends = new WeakMap();

function endOf(pc) {
  let end = ends.get(pc);
  if (!end) {
    end = {};
    end.promise = new Promise((_, reject) => { end.reject = reject; });
    end.promise.catch(() => {});
    ends.set(pc, end);
  }
  return end;
}

/** `op`, a promise of an operation on `pc`, or an error as soon as `pc` is closed. */
function on(pc, op) {
  return Promise.race([op, endOf(pc).promise]);
}

function ended(pc) {
  endOf(pc).reject(new Error('the peer connection was closed'));
}

// ---------- ICE restart: a new path without a new call ----------
// When the path to the media server (or the other browser) breaks — the network changed, a
// NAT forgot the mapping, an outage — the browser restarts ICE: an offer with new ICE
// credentials, answered like any other. The participant, its tracks and everyone else's view
// of it stay as they are. The server asks for it too (`ice-restart`) when nothing reaches it.

const DISCONNECTED_GRACE_MS = 1000;
/** A restart not connected after this long is made again (the path may have changed twice). */
const RESTART_RETRY_MS = 5000;
let restartedAt = -Infinity;
let retryTimer = null;
/** An ICE restart's offer is out and not answered yet. */
let restarting = false;

/** Media sent but nothing received for this long: the path is broken (the server answers
 * what a browser sends with RTCP feedback several times a second). A false alarm costs an
 * ICE restart nobody sees (media stays on the old path until a new one is checked). */
const STALL_MS = 700;
const STALL_POLL_MS = 200;
const PROBE_MS = 1000;
/** After a stall the socket must answer a ping sooner: an address change breaks it too. */
const STALL_PROBE_MS = 600;

/** Watches the bytes the peer connection sends and receives; when sending goes on and
 * receiving stops, restarts ICE. The socket the restart's offer goes on is checked as soon as
 * receiving pauses, meanwhile: one that does not answer a ping within STALL_PROBE_MS is
 * replaced at once (a resume), and the offer goes out on the new one. */
function watchStall(pc) {
  let last = null;
  let quietSince = null;
  const timer = setInterval(async () => {
    if (pc !== state.pc || pc.signalingState === 'closed') { clearInterval(timer); return; }
    let sent = 0;
    let received = 0;
    (await pc.getStats()).forEach((r) => {
      if (r.type !== 'candidate-pair') return;
      sent += r.bytesSent || 0;
      received += r.bytesReceived || 0;
    });
    const now = performance.now();
    // Receiving that stopped: a peer connection that has received nothing yet is still
    // connecting (its checks count as sent), which ICE's own states follow.
    if (last && last.received > 0 && received === last.received && sent !== last.sent) {
      if (quietSince === null) {
        quietSince = last.at;
        // Whatever broke the media path (a new address) has most likely broken the socket
        // too; a ping costs nothing if not.
        probe(STALL_PROBE_MS);
      }
      if (quietSince !== -1 && now - quietSince >= STALL_MS) {
        quietSince = -1; // once per stall
        restartIce('nothing received');
      }
    } else if (last && received !== last.received) {
      quietSince = null;
    }
    last = { sent, received, at: now };
  }, STALL_POLL_MS);
}

function later(ms, still, why) {
  const pc = state.pc;
  setTimeout(() => { if (pc === state.pc && still()) restartIce(why); }, ms);
}

/** Restarts ICE on the peer connection. A restart gets RESTART_RETRY_MS to connect before
 * another one replaces it (unless ICE failed outright). P2P: only the browser that made the
 * call offers, so that the two never offer at once; the other one answers. */
export function restartIce(why) {
  const pc = state.pc;
  if (!pc || pc.signalingState === 'closed' || (state.peerId && !state.offerer)) return;
  const now = performance.now();
  const interval = why === 'failed' ? 1000 : RESTART_RETRY_MS - 100;
  if (now - restartedAt < interval) return;
  restartedAt = now;
  restarting = true;
  state.iceRestarts += 1;
  console.info(`ICE restart (${why})`);
  clearTimeout(retryTimer);
  retryTimer = setTimeout(async function check() {
    if (pc !== state.pc || ['connected', 'completed'].includes(pc.iceConnectionState)) return;
    const offerOut = owed.find((o) => o.pc === pc);
    if (!state.peerId && offerOut) {
      // The session server replies to every offer, an answer or `media-error`, within its
      // deadline (10 s): that reply decides. Taken back before, the offer might be applied
      // by the media server all the same, and the two sides would disagree from then on.
      if (performance.now() - offerOut.at < OFFER_LOST_MS) {
        retryTimer = setTimeout(check, RESTART_RETRY_MS);
      } else {
        reconnectMedia('an offer got no reply');
      }
      return;
    }
    // P2P: an offer the other browser did not answer is taken back, so that the next one
    // can go.
    await rollback(pc);
    restartIce('still not connected');
  }, RESTART_RETRY_MS);
  pc.restartIce();
  // The offer goes now when nothing is pending (negotiationneeded is not always fired again
  // after an offer was taken back); else negotiationneeded sends it once the exchange ends.
  if (pc.signalingState === 'stable' && pc.remoteDescription) offer();
}

/** Takes back this browser's offer that got no answer. */
async function rollback(pc) {
  if (pc.signalingState !== 'have-local-offer') return;
  crossedOffer = null;
  try { await on(pc, pc.setLocalDescription({ type: 'rollback' })); } catch (err) { if (pc === state.pc) console.warn('rollback', err); }
}

/** ICE restarts whose offer failed in a row: each is made again a second later, up to this
 * many (the media server may have applied an offer whose answer was lost: a new restart puts
 * both sides on the same credentials again). */
const RESTART_AGAIN_MAX = 5;
let failedRestarts = 0;

/** An `error` naming a message of this browser (`re`). For its offer (`media-error`: the
 * server could not apply it; `rate-limited`): the offer is taken back, and an ICE restart it
 * carried is made again. For its answer: the offer is answered again if the media server says
 * it again. (Any other, e.g. a failed `record`, changes nothing here.) */
export async function onRefused(msg) {
  const pc = state.pc;
  if (!pc || state.peerId || msg.re == null) return;
  if (msg.re === answerOut) {
    answeredOffer = null;
    return;
  }
  const failed = repliedTo(msg.re);
  if (!failed || failed.pc !== pc) return;
  const wasRestart = restarting;
  await rollback(pc);
  if (!wasRestart || failedRestarts >= RESTART_AGAIN_MAX) return;
  failedRestarts += 1;
  setTimeout(() => {
    if (pc !== state.pc) return;
    restartedAt = -Infinity;
    restartIce('the last restart failed');
  }, 1000);
}

// The operating system says the network changed: restart at once rather than wait for the
// checks to fail.
window.addEventListener('online', () => restartIce('network online'));
if (navigator.connection) navigator.connection.addEventListener('change', () => restartIce('network change'));

function remoteTrack(pc, peerId, e) {
  const mid = e.transceiver && e.transceiver.mid;
  // SFU: the stream id is the publisher's media id; P2P: the other participant.
  const key = peerId || (e.streams[0] && e.streams[0].id) || e.track.id;
  const entry = { key, track: e.track, mid, trackId: msidTrack(pc.remoteDescription, mid) || e.track.id };
  state.remote.set(e.track.id, entry);
  const gone = () => {
    if (state.remote.get(e.track.id) !== entry) return;
    state.remote.delete(e.track.id);
    hooks.onTrackGone(entry);
  };
  e.track.addEventListener('ended', gone);
  if (e.streams[0]) {
    e.streams[0].addEventListener('removetrack', (ev) => { if (ev.track === e.track) gone(); });
  }
  hooks.onTrack(entry);
}

/** The track id of `a=msid` in the m-section of `mid`: how the media server names a track. */
function msidTrack(description, mid) {
  if (!description || mid == null) return null;
  for (const section of description.sdp.split(/\r?\nm=/)) {
    if (!new RegExp(`^a=mid:${mid.replace(/[^\w-]/g, '\\$&')}\\r?$`, 'm').test(section)) continue;
    const msid = section.match(/^a=msid:\S+ (\S+?)\r?$/m);
    return msid ? msid[1] : null;
  }
  return null;
}

/** The role of each of this browser's sending videos, by mid. */
function localRoles(pc) {
  const roles = {};
  const screen = state.screen ? state.screen.getVideoTracks() : [];
  for (const t of pc.getTransceivers()) {
    const track = t.sender.track;
    if (!t.mid || !track || track.kind !== 'video') continue;
    roles[t.mid] = screen.includes(track) ? 'screen' : 'camera';
  }
  return roles;
}

/** Sends this browser's local description; returns its `seq`. */
function describe(type, pc, to) {
  const msg = { type, sdp: pc.localDescription.sdp, roles: localRoles(pc) };
  if (to) msg.to = to;
  return send(msg);
}

/** SFU: this browser's offers the server has not replied to yet, oldest first: `{ seq, at,
 * pc }`. The server replies to each in turn, an `answer` or a `media-error` naming it (`re`).
 * A peer connection has at most one out (its next is made once the exchange ends); one that
 * was replaced may leave one whose reply is still to come. */
let owed = [];
const OWED_MAX = 8;
/** An offer out this long got no reply the server owes it (10 s): the two sides' state is
 * unknown, and the media is connected anew. */
const OFFER_LOST_MS = 30000;
/** SFU: the `seq` of this browser's last answer to the media server. */
let answerOut = null;

/** The peer connection an offer is being made for: negotiationneeded and an ICE restart may
 * ask at the same moment, and two offers made at once would leave the other side answering
 * the wrong one. */
let makingOffer = null;

/** SFU: a new peer connection (never answered) is making its first offer or has it out. */
export function joiningMedia() {
  const pc = state.pc;
  return !!pc && !state.peerId && !pc.remoteDescription
    && (makingOffer === pc || owed.some((o) => o.pc === pc));
}

export async function offer() {
  const pc = state.pc;
  if (!pc || makingOffer === pc) return;
  makingOffer = pc;
  try {
    await on(pc, pc.setLocalDescription(await on(pc, pc.createOffer())));
    const seq = describe('offer', pc, state.peerId);
    console.debug(`offer ${seq} out`);
    if (!state.peerId) {
      owed.push({ seq, at: performance.now(), pc });
      // Replies the session server never gave (offers it dropped, over the rate limit,
      // without saying so) are not kept for ever.
      if (owed.length > OWED_MAX) owed.shift();
    }
  } finally {
    if (makingOffer === pc) makingOffer = null;
  }
}

export async function onOffer(msg) {
  // P2P: the other browser calls us.
  if (msg.from && (!state.pc || state.peerId !== msg.from)) createPc(msg.from);
  const pc = state.pc;
  if (!pc) return;
  // The media server says an offer again after its control connection was lost meanwhile
  // (docs/signaling.md): one already answered is not answered twice.
  if (!msg.from && msg.sdp === answeredOffer) return;
  // Our own offer crossed theirs: the media server is the polite side and re-offers after
  // answering ours, so its offer is ignored here. Between browsers, the later joiner offers.
  // An offer still being made counts: applied now, theirs would take ours back (an implicit
  // rollback) after ours went out, and the answer to ours would find no offer out.
  if (pc.signalingState !== 'stable' || makingOffer === pc) {
    // Its re-offer may overtake the answer to ours on the way (the session server gets the
    // two from the media server on separate paths): kept, to be told apart from an offer
    // made before ours once the answer is in (`onAnswer`).
    if (!msg.from && restarting) crossedOffer = msg.sdp;
    return;
  }
  await answerOffer(pc, msg);
}

/** The last media server offer this page answered. */
let answeredOffer = null;

async function answerOffer(pc, msg) {
  if (msg.from) {
    try {
      await on(pc, pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp }));
      await on(pc, pc.setLocalDescription(await on(pc, pc.createAnswer())));
    } catch (err) {
      if (pc === state.pc) throw err;
      return;
    }
    describe('answer', pc, msg.from);
    return;
  }
  answeredOffer = msg.sdp;
  try {
    await on(pc, pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp }));
    await on(pc, pc.setLocalDescription(await on(pc, pc.createAnswer())));
  } catch (err) {
    // The media server's idea of this peer connection is not the browser's (its m-lines in
    // another order, say): nothing answered would be right.
    if (pc === state.pc) reconnectMedia(`its offer could not be applied: ${err.message}`);
    return;
  }
  answerOut = describe('answer', pc);
}

/** The last media server offer that arrived while this browser's ICE restart offer waited
 * for its answer. */
let crossedOffer = null;

/** Whether answer `sdp` describes the session `current` does: its ICE username fragment and
 * its m-lines (by mid, in order). */
function sameSession(sdp, current) {
  if (!current) return false;
  const mids = (d) => [...d.matchAll(/^a=mid:(\S+?)\r?$/gm)].map((m) => m[1]).join(' ');
  return iceUfrag(sdp) === iceUfrag(current.sdp) && mids(sdp) === mids(current.sdp);
}

/** The ICE username fragment of a session description. */
function iceUfrag(sdp) {
  const m = sdp.match(/^a=ice-ufrag:(\S+?)\r?$/m);
  return m ? m[1] : null;
}

/** The offer out that an answer from the media server replies to, taken out of `owed`: the one
 * it names (`re`), and with it the older ones, which will get no reply (the server replies in
 * turn: they never reached it, forgotten with the peer connection they were made for while the
 * socket was down). An answer naming no offer out replies to none (null). */
function repliedTo(re) {
  if (re == null) return owed.shift();
  const i = owed.findIndex((o) => o.seq === re);
  if (i < 0) return null;
  return owed.splice(0, i + 1)[i];
}

export async function onAnswer(msg) {
  const pc = state.pc;
  if (!pc) return;
  if (msg.from) {
    try {
      await on(pc, pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp }));
    } catch (err) {
      if (pc === state.pc) throw err;
    }
    return;
  }
  console.debug(`answer to offer ${msg.re}`);
  const crossed = crossedOffer;
  const replied = repliedTo(msg.re);
  // The reply to an offer of a peer connection since replaced.
  if (replied && replied.pc !== pc) return;
  if (!replied || pc.signalingState !== 'have-local-offer') {
    // Not a reply to an offer this browser has out. The same offer answered twice (a resume
    // while the server was handling it) changes nothing: same ICE credentials, same m-lines.
    // Otherwise the media server applied an offer this browser no longer has (an ICE restart
    // it took back, say), and the two sides disagree.
    if (sameSession(msg.sdp, pc.currentRemoteDescription)) return;
    reconnectMedia(`an answer to no offer out (to offer ${msg.re}, ${pc.signalingState})`);
    return;
  }
  restarting = false;
  failedRestarts = 0;
  crossedOffer = null;
  try {
    await on(pc, pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp }));
  } catch (err) {
    if (pc === state.pc) reconnectMedia(`the answer could not be applied: ${err.message}`);
    return;
  }
  await unicastFallback(pc);
  // An ICE restart gives the media server new credentials: an offer that crossed ours and
  // carries them was made after it answered ours (its re-offer, which will not come again),
  // one with the old ones was dropped by it and is not answered.
  if (crossed && pc === state.pc && pc.signalingState === 'stable'
      && iceUfrag(crossed) === iceUfrag(msg.sdp)) {
    await answerOffer(pc, { sdp: crossed });
  }
}

/** `layers`: the media server says which encodings of the video on `mid` anyone receives;
 * the others stop being encoded until they are wanted again. */
export async function onLayers(msg) {
  const pc = state.pc;
  if (!pc || state.peerId || !msg.active) return;
  const t = pc.getTransceivers().find((tr) => tr.mid === msg.mid);
  if (!t || !t.sender.track) return;
  const params = t.sender.getParameters();
  let changed = false;
  for (const e of params.encodings || []) {
    if (!e.rid || !Object.hasOwn(msg.active, e.rid)) continue;
    const active = msg.active[e.rid] === true;
    if (e.active !== active) {
      e.active = active;
      changed = true;
    }
  }
  if (!changed) return;
  try { await on(pc, t.sender.setParameters(params)); } catch (err) { if (pc === state.pc) console.warn('layers', err); }
}

export async function onCandidate(msg) {
  const pc = state.pc;
  if (!pc || !msg.candidate) return;
  try { await on(pc, pc.addIceCandidate(msg.candidate)); } catch (err) { if (pc === state.pc) console.warn('candidate', err); }
}

export function setIceServers() {
  if (!state.pc) return;
  try {
    state.pc.setConfiguration({ ...state.pc.getConfiguration(), iceServers: state.iceServers });
  } catch (err) { console.warn('ice servers', err); }
}

/** Sends the screen share too, sharp rather than smooth; negotiationneeded sends the new offer. */
export function addScreen(track) {
  if (!state.pc) return;
  if ('contentHint' in track) track.contentHint = 'detail';
  const { sender } = addTrack(state.pc, track, state.screen, 'screen');
  const params = sender.getParameters();
  params.degradationPreference = 'maintain-resolution';
  sender.setParameters(params).catch((err) => console.warn('screen degradation preference', err.message));
}

/** Stops sending `tracks` (a screen share that ended). */
export function removeTracks(tracks) {
  if (!state.pc) return;
  for (const tr of state.pc.getTransceivers()) {
    if (tr.sender.track && tracks.includes(tr.sender.track)) {
      tr.sender.replaceTrack(null);
      tr.direction = 'inactive';
    }
  }
}

/** No media connections made anew within this long of each other: one that comes sooner
 * waits for the rest. */
const RECONNECT_MIN_MS = 5000;
/** At most this many within RECONNECT_WINDOW_MS: a disagreement that comes back every time
 * (a browser that cannot apply what this server offers) is shown, not looped on. */
const RECONNECT_MAX = 3;
const RECONNECT_WINDOW_MS = 60000;
let reconnects = [];
let reconnectedAt = -Infinity;
let reconnectTimer = null;

/** SFU: the media server and this browser disagree about the peer connection (an offer or an
 * answer that cannot be applied, an answer to an offer that is not out): a new peer connection
 * replaces it, which the session server takes as new media for this participant (a new DTLS
 * fingerprint). The participant stays in the room; its video is black for a moment. */
function reconnectMedia(why) {
  if (!state.pc || state.peerId || reconnectTimer) return;
  const now = performance.now();
  reconnects = reconnects.filter((t) => now - t < RECONNECT_WINDOW_MS);
  if (reconnects.length >= RECONNECT_MAX) {
    console.error(`sori: media not connected again (${why}): ${RECONNECT_MAX} tries within a minute`);
    setStatus(t('mediaFailed'), 'bad');
    return;
  }
  const wait = Math.max(0, reconnectedAt + RECONNECT_MIN_MS - performance.now());
  const pc = state.pc;
  reconnectTimer = setTimeout(() => {
    reconnectTimer = null;
    if (pc !== state.pc) return;
    reconnectedAt = performance.now();
    reconnects.push(reconnectedAt);
    state.mediaReconnects += 1;
    console.warn(`media connected anew: ${why}`);
    startMedia().catch((err) => console.error('sori:', err));
  }, wait);
}

/** Closes the peer connection. `serverForgot`: the session server no longer has this
 * participant (a join anew), so no reply to an offer is still to come. */
export function closePc(serverForgot = false) {
  if (serverForgot) owed = [];
  answeredOffer = null;
  answerOut = null;
  crossedOffer = null;
  restarting = false;
  failedRestarts = 0;
  clearTimeout(retryTimer);
  if (state.pc) {
    ended(state.pc);
    state.pc.close();
    state.pc = null;
    // Its offers, answers and candidates mean nothing to the next one.
    forgetUnacked(['offer', 'answer', 'candidate']);
  }
  state.peerId = null;
  // Their tiles go now: the next peer connection's tracks get tiles (and video elements) of
  // their own rather than a stream whose track is swapped under a playing element.
  const had = state.remote.size > 0;
  state.remote.clear();
  if (had) hooks.onTrackGone(null);
}
