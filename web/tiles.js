// The video tiles of the others, one per (participant, track role): `camera` (with the sound)
// or `screen`. `render` makes the page match the state; nothing is read back from the page.

import { state, participantFor } from './store.js';
import { $ } from './page.js';
import * as quality from './quality.js';
import { t as tr } from './i18n.js';
import { useSpeaker } from './devices.js';

const tiles = new Map(); // "key|role" -> { tile, video, audio, caption, stream, role, badge, pin }

/** Numbers for automation: when the first remote frame decoded. */
export const timing = { firstRemoteFrameAt: null };

/** The role of a remote track: stated by its sender through the server, else guessed as the
 * client always did (the first video of a participant is its camera). */
function roleOf(entry, cameraTaken) {
  if (entry.track.kind === 'audio') return 'camera';
  const p = participantFor(entry.key);
  const stated = state.peerId
    ? state.peerRoles.get(entry.mid)
    : p && p.tracks && p.tracks[entry.trackId];
  if (stated) return stated;
  return cameraTaken.has(entry.key) ? 'screen' : 'camera';
}

/** Which tile each remote track belongs in: "key|role" -> { key, role, tracks }. */
function wanted() {
  const out = new Map();
  const cameraTaken = new Set();
  const entries = [...state.remote.values()];
  // Stated roles first, so a guess never takes a stated camera's place.
  entries.sort((a, b) => Number(roleKnown(b)) - Number(roleKnown(a)));
  for (const entry of entries) {
    const role = roleOf(entry, cameraTaken);
    if (role === 'camera' && entry.track.kind === 'video') cameraTaken.add(entry.key);
    const id = `${entry.key}|${role}`;
    if (!out.has(id)) out.set(id, { key: entry.key, role, tracks: [] });
    out.get(id).tracks.push(entry.track);
  }
  return out;
}

function roleKnown(entry) {
  if (entry.track.kind !== 'video') return false;
  const p = participantFor(entry.key);
  return state.peerId ? state.peerRoles.has(entry.mid) : !!(p && p.tracks && p.tracks[entry.trackId]);
}

function createTile(role) {
  const tile = document.createElement('figure');
  tile.className = role === 'screen' ? 'tile screen' : 'tile';
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  video.muted = true; // sound plays through the audio element, so autoplay rules never stop the picture
  video.dataset.testid = role === 'screen' ? 'remote-screen' : 'remote-video';
  const stream = new MediaStream();
  video.srcObject = stream;
  const caption = document.createElement('figcaption');
  const t = { tile, video, caption, stream, role, audio: null };
  if (role === 'camera') {
    t.audio = document.createElement('audio');
    t.audio.autoplay = true;
    t.audio.srcObject = stream;
    useSpeaker(t.audio);
    tile.append(video, t.audio, caption);
  } else {
    tile.append(video, caption);
  }
  $('grid').append(tile);
  quality.attach(t);
  watchFirstFrame(video);
  return t;
}

function syncTracks(t, tracks) {
  for (const track of t.stream.getTracks()) if (!tracks.includes(track)) t.stream.removeTrack(track);
  for (const track of tracks) if (!t.stream.getTracks().includes(track)) t.stream.addTrack(track);
}

function label(t, key) {
  const p = participantFor(key);
  const name = p ? p.name : tr('connectingTile');
  const now = JSON.stringify([name, p && p.audio_muted, p && p.video_muted]);
  if (t.drawn === now) return;
  t.drawn = now;
  t.video.dataset.participant = name;
  if (t.role === 'screen') {
    t.caption.textContent = tr('screen', { name });
    return;
  }
  t.caption.textContent = name;
  const flags = document.createElement('span');
  flags.className = 'muted-flags';
  flags.textContent = p && p.audio_muted ? ' · ' + tr('micOff') : '';
  t.caption.append(flags);
  t.tile.dataset.videoMuted = String(!!(p && p.video_muted));
  t.tile.dataset.audioMuted = String(!!(p && p.audio_muted));
  t.video.dataset.videoMuted = t.tile.dataset.videoMuted;
}

/** Makes the tiles match the remote tracks and what is known of their senders. */
export function render() {
  const want = wanted();
  for (const [id, t] of tiles) {
    if (!want.has(id)) {
      quality.detach(t);
      t.tile.remove();
      tiles.delete(id);
    }
  }
  for (const [id, w] of want) {
    let t = tiles.get(id);
    if (!t) {
      t = createTile(w.role);
      tiles.set(id, t);
    }
    syncTracks(t, w.tracks);
    label(t, w.key);
  }
  // A track or a "Camera off" may have changed what a tile shows.
  quality.schedule();
}

/** Each remote track: whose, its kind, its role, and whether its sender stated the role. */
export function describeTracks() {
  const out = [];
  for (const [id, w] of wanted()) {
    const p = participantFor(w.key);
    for (const track of w.tracks) {
      const entry = state.remote.get(track.id);
      out.push({ participant: p ? p.name : null, kind: track.kind, role: w.role, stated: !!entry && roleKnown(entry), tile: id });
    }
  }
  return out;
}

/** The local tile shows whether the own camera is off. */
export function renderLocal() {
  const tile = document.querySelector('.tile.local');
  if (tile.dataset.videoMuted !== String(state.muted.video)) tile.dataset.videoMuted = String(state.muted.video);
}

function watchFirstFrame(video) {
  const mark = () => {
    if (timing.firstRemoteFrameAt === null) timing.firstRemoteFrameAt = performance.now();
  };
  if ('requestVideoFrameCallback' in video) video.requestVideoFrameCallback(mark);
  else video.addEventListener('loadeddata', mark, { once: true });
}
