// The video tiles of the others, one per (participant, track role): `camera` (with the sound)
// or `screen`; and the own tile. Each shows a crossed microphone while its microphone is off
// and its connection quality (connection.js), and pins on a click (Enter or Space on its
// button): the pinned tile is drawn large (layout.js). `render` makes the page match the state;
// nothing is read back from the page.

import { state, participantFor } from './store.js';
import { $, setText, setAttr } from './page.js';
import { send } from './signaling.js';
import * as quality from './quality.js';
import * as connection from './connection.js';
import * as layout from './layout.js';
import { t as tr } from './i18n.js';
import { useSpeaker } from './devices.js';

// "key|role" -> { tile, video, audio, caption, stream, role, badge, pin, name, flags, conn, pinButton }
const tiles = new Map();
const LOCAL = 'local';

// A microphone with a line through it (drawn for 24×24, in the text's colour).
const MIC_OFF_SVG = '<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false" fill="none" stroke="currentColor"'
  + ' stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><path d="M3 3l18 18"/>'
  + '<path d="M9 9v3a3 3 0 0 0 5.1 2.1M15 9.3V5a3 3 0 0 0-5.9-.7"/>'
  + '<path d="M17 16.9A7 7 0 0 1 5 12v-1.5m14 0V12a7 7 0 0 1-.1 1.2"/><path d="M12 19v3M8.5 22h7"/></svg>';

/** Shows the crossed microphone in `flags` while `muted`, else nothing. */
function drawMic(flags, muted) {
  const shown = flags.querySelector('.mic-muted');
  if (muted && !shown) {
    const icon = document.createElement('span');
    icon.className = 'mic-muted';
    icon.dataset.testid = 'mic-muted';
    icon.setAttribute('role', 'img');
    icon.setAttribute('aria-label', tr('micMuted'));
    icon.title = tr('micMuted');
    icon.innerHTML = MIC_OFF_SVG;
    flags.append(icon);
  } else if (!muted && shown) {
    shown.remove();
  }
}

/** The button over a tile that pins it; a click anywhere on the tile but its quality corner
 * pins it too. */
function pinnable(tile, id) {
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'tile-pin';
  button.dataset.testid = 'tile-pin';
  setAttr(button, 'aria-pressed', 'false');
  tile.querySelector('video').after(button); // over the picture (a mirrored one too)
  tile.addEventListener('click', (e) => {
    if (e.target.closest('.quality')) return; // the quality select and badge
    state.pinned = state.pinned === id ? null : id;
    drawPins();
    // The server keeps a pinned participant's video coming whatever last-N says.
    if (state.mode === 'sfu' && !state.peerId) {
      const t = tiles.get(state.pinned);
      const owner = t && ownerOf(t);
      send({ type: 'last-n', n: null, pinned: owner ? [owner] : [] });
    }
  });
  return button;
}

/** Marks the pinned tile (`data-pinned`) and labels the buttons; marks the tile drawn large
 * (`data-featured`, layout.js): the pinned one, else in the speaker view the camera of the
 * last dominant speaker other than this participant (until someone spoke: the first other
 * camera); and the tiles of those speaking (`data-speaking`) and of the dominant speaker
 * (`data-dominant`). */
function drawPins() {
  const all = [...tiles.entries()].map(([id, t]) => [id, t.tile, t.pinButton, t.label, ownerOf(t)]);
  const local = document.querySelector('.tile.local');
  all.push([LOCAL, local, localPin, tr('youTile', { name: state.name }), state.me]);
  let featured = state.pinned;
  if (!featured && state.layout === 'speaker') {
    const camera = ([, t]) => t.role === 'camera';
    const speaker = [...tiles.entries()].find((e) => camera(e) && state.featured && ownerOf(e[1]) === state.featured);
    const first = [...tiles.entries()].find(camera);
    featured = (speaker || first || [null])[0];
  }
  for (const [id, tile, button, name, owner] of all) {
    const on = state.pinned === id;
    if (tile.dataset.pinned !== String(on)) tile.dataset.pinned = String(on);
    setAttr(button, 'aria-pressed', String(on));
    setAttr(button, 'aria-label', tr(on ? 'unpinTile' : 'pinTile', { name: name || '' }));
    const screen = tile.classList.contains('screen');
    // Last-N: a participant whose video the server does not send now shows its name.
    const paused = !!owner && owner !== state.me && !!state.videoSet && !state.videoSet.has(owner);
    const flags = {
      paused: String(paused),
      featured: String(featured === id),
      speaking: String(!screen && !!owner && state.speaking.has(owner)),
      dominant: String(!screen && !!owner && state.dominant === owner),
    };
    for (const [k, v] of Object.entries(flags)) if (tile.dataset[k] !== v) tile.dataset[k] = v;
  }
}

/** The participant id of a remote tile. */
function ownerOf(t) {
  const p = t.key && participantFor(t.key);
  return p ? p.id : null;
}

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

function createTile(role, id) {
  const tile = document.createElement('figure');
  tile.className = role === 'screen' ? 'tile screen' : 'tile';
  tile.dataset.offText = tr('cameraIsOff');
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  video.muted = true; // sound plays through the audio element, so autoplay rules never stop the picture
  video.dataset.testid = role === 'screen' ? 'remote-screen' : 'remote-video';
  const stream = new MediaStream();
  video.srcObject = stream;
  const caption = document.createElement('figcaption');
  const name = document.createElement('span');
  name.className = 'name';
  const flags = document.createElement('span');
  flags.className = 'muted-flags';
  const conn = connection.indicator();
  caption.append(conn, name, flags);
  const t = { tile, video, caption, stream, role, audio: null, name, flags, conn };
  if (role === 'camera') {
    t.audio = document.createElement('audio');
    t.audio.autoplay = true;
    t.audio.srcObject = stream;
    useSpeaker(t.audio);
    tile.append(video, t.audio, caption);
  } else {
    tile.append(video, caption);
  }
  t.pinButton = pinnable(tile, id);
  $('grid').append(tile);
  quality.attach(t);
  connection.watch(conn, () => t.stream.getTracks());
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
  const now = JSON.stringify([name, p && p.audio_muted, p && p.video_muted, p && p.server_muted]);
  if (t.drawn === now) return;
  t.drawn = now;
  t.video.dataset.participant = name;
  if (t.role === 'screen') {
    t.label = tr('screen', { name });
    setText(t.name, t.label);
    return;
  }
  t.label = name;
  t.tile.dataset.name = name;
  setText(t.name, name);
  const micOff = !!(p && (p.audio_muted || (p.server_muted && p.server_muted.audio)));
  drawMic(t.flags, micOff);
  t.tile.dataset.videoMuted = String(!!(p && p.video_muted));
  t.tile.dataset.audioMuted = String(micOff);
  t.video.dataset.videoMuted = t.tile.dataset.videoMuted;
}

/** Makes the tiles match the remote tracks and what is known of their senders. */
export function render() {
  const want = wanted();
  for (const [id, t] of tiles) {
    if (!want.has(id)) {
      quality.detach(t);
      connection.unwatch(t.conn);
      t.tile.remove();
      tiles.delete(id);
      // Its participant left (or stopped sharing): nothing is pinned.
      if (state.pinned === id) state.pinned = null;
    }
  }
  for (const [id, w] of want) {
    let t = tiles.get(id);
    if (!t) {
      t = createTile(w.role, id);
      tiles.set(id, t);
    }
    t.key = w.key;
    syncTracks(t, w.tracks);
    label(t, w.key);
  }
  drawPins();
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

/** The local tile shows whether the own camera and microphone are off. */
export function renderLocal() {
  const tile = document.querySelector('.tile.local');
  if (tile.dataset.videoMuted !== String(state.muted.video)) tile.dataset.videoMuted = String(state.muted.video);
  if (tile.dataset.audioMuted !== String(state.muted.audio)) tile.dataset.audioMuted = String(state.muted.audio);
  drawMic(tile.querySelector('.muted-flags'), state.muted.audio);
  drawPins();
}

// The own tile: its connection quality (what the other side reports of the own streams), its
// pin button; and the grid's layout.
const localTile = document.querySelector('.tile.local');
const localConn = connection.indicator();
localTile.querySelector('figcaption').prepend(localConn);
connection.watch(localConn, null);
const localPin = pinnable(localTile, LOCAL);
layout.wire($('grid'));

function watchFirstFrame(video) {
  const mark = () => {
    if (timing.firstRemoteFrameAt === null) timing.firstRemoteFrameAt = performance.now();
  };
  if ('requestVideoFrameCallback' in video) video.requestVideoFrameCallback(mark);
  else video.addEventListener('loadeddata', mark, { once: true });
}
