// The one RTCPeerConnection: to the media server (SFU rooms, send-only, the server offers what
// it forwards) or to the other browser (P2P rooms). Every offer and answer names the role of
// each sending video by mid: `camera` or `screen`.

import { state } from './store.js';
import { send } from './signaling.js';
import { setStatus } from './page.js';

const hooks = { onTrack: () => {}, onTrackGone: () => {} };

/** What to do when a remote track arrives or goes: `{ onTrack, onTrackGone }`. */
export function onRemoteTracks(h) { Object.assign(hooks, h); }

function direction() { return state.peerId ? 'sendrecv' : 'sendonly'; }

/** Connects media the way the room's mode says. */
export async function startMedia() {
  if (state.mode === 'sfu') {
    createPc(null);
    await offer();
    return;
  }
  const other = [...state.participants.keys()][0];
  if (other) {
    createPc(other);
    await offer();
  } else {
    setStatus('waiting for someone to join');
  }
}

export function createPc(peerId) {
  closePc();
  const pc = new RTCPeerConnection({ iceServers: state.iceServers });
  state.pc = pc;
  state.peerId = peerId;
  for (const track of state.local.getTracks()) {
    pc.addTransceiver(track, { direction: direction(), streams: [state.local] });
  }
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
    if (s === 'connected') setStatus('connected', 'ok');
    else if (s === 'failed' || s === 'disconnected') setStatus(s, 'bad');
    else setStatus(s);
  };
  pc.onnegotiationneeded = () => {
    if (pc === state.pc && pc.signalingState === 'stable' && pc.remoteDescription) offer();
  };
  return pc;
}

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

function describe(type, pc, to) {
  const msg = { type, sdp: pc.localDescription.sdp, roles: localRoles(pc) };
  if (to) msg.to = to;
  send(msg);
}

export async function offer() {
  const pc = state.pc;
  if (!pc) return;
  await pc.setLocalDescription(await pc.createOffer());
  describe('offer', pc, state.peerId);
}

export async function onOffer(msg) {
  // P2P: the other browser calls us.
  if (msg.from && (!state.pc || state.peerId !== msg.from)) createPc(msg.from);
  const pc = state.pc;
  if (!pc) return;
  // Our own offer crossed theirs: the media server is the polite side and re-offers after
  // answering ours, so its offer is ignored here. Between browsers, the later joiner offers.
  if (pc.signalingState !== 'stable') return;
  await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
  await pc.setLocalDescription(await pc.createAnswer());
  describe('answer', pc, msg.from);
}

export async function onAnswer(msg) {
  if (state.pc) await state.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
}

export async function onCandidate(msg) {
  if (!state.pc || !msg.candidate) return;
  try { await state.pc.addIceCandidate(msg.candidate); } catch (err) { console.warn('candidate', err); }
}

export function setIceServers() {
  if (!state.pc) return;
  try {
    state.pc.setConfiguration({ ...state.pc.getConfiguration(), iceServers: state.iceServers });
  } catch (err) { console.warn('ice servers', err); }
}

/** Sends the screen share too; negotiationneeded sends the new offer. */
export function addScreen(track) {
  if (state.pc) state.pc.addTransceiver(track, { direction: direction(), streams: [state.screen] });
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

export function closePc() {
  if (state.pc) {
    state.pc.close();
    state.pc = null;
  }
  state.peerId = null;
  state.remote.clear();
}
