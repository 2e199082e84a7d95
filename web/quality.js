// The quality of each remote video tile (SFU rooms): what this browser asks the media server for
// — the tile's size in device pixels, whether it is seen, a quality pinned on the tile — sent as
// `view` messages when it changes; and what it gets — the badge with the received frame height,
// its title the layer and bitrate from the server's latest `stats`.

import { state } from './store.js';
import { send } from './signaling.js';
import { setText, setAttr } from './page.js';
import { t as tr } from './i18n.js';

/** Wait after a change before telling the server, so a resize or a scroll sends one view. */
const DEBOUNCE_MS = 300;
const BADGE_EVERY_MS = 1000;
const PINS = [['auto', 'qualityAuto'], ['low', 'qualityLow'], ['medium', 'qualityMedium'], ['high', 'qualityHigh']];

const watched = new Set(); // tiles (tiles.js entries) with a badge and a pin
const sent = new Map();    // media-server track id -> the view last sent, as JSON
let timer = null;
let badgeTimer = null;

const seen = new IntersectionObserver((entries) => {
  for (const e of entries) {
    for (const t of watched) if (t.tile === e.target) t.intersecting = e.isIntersecting;
  }
  schedule();
});
const resized = new ResizeObserver(() => schedule());
document.addEventListener('visibilitychange', () => schedule());

/** Gives a remote tile its quality badge and pin, and reports its view from now on. */
export function attach(t) {
  const corner = document.createElement('div');
  corner.className = 'quality';
  const badge = document.createElement('span');
  badge.className = 'quality-badge';
  badge.dataset.testid = 'quality';
  const pin = document.createElement('select');
  pin.className = 'quality-pin';
  pin.dataset.testid = 'quality-pin';
  pin.title = tr('qualityToReceive');
  setAttr(pin, 'aria-label', tr('qualityToReceive'));
  for (const [value, key] of PINS) pin.append(new Option(tr(key), value));
  pin.addEventListener('change', () => schedule(0));
  corner.append(badge, pin);
  t.tile.append(corner);
  Object.assign(t, { badge, pin, intersecting: true });
  watched.add(t);
  seen.observe(t.tile);
  resized.observe(t.tile);
  schedule();
  if (!badgeTimer) badgeTimer = setInterval(refreshBadges, BADGE_EVERY_MS);
}

/** Stops watching a tile that is gone. */
export function detach(t) {
  // Should the track come back, the media server starts it from a default view: send it anew.
  if (t.sentId) sent.delete(t.sentId);
  watched.delete(t);
  seen.unobserve(t.tile);
  resized.unobserve(t.tile);
  if (!watched.size) {
    clearInterval(badgeTimer);
    badgeTimer = null;
  }
}

/** A new media connection: the server knows none of the views yet. */
export function reset() {
  sent.clear();
  schedule();
}

/** Tells the server the views that changed, once things settle for `delay` ms. */
export function schedule(delay = DEBOUNCE_MS) {
  clearTimeout(timer);
  timer = setTimeout(sendViews, delay);
}

/** The media server's id of the video a tile shows (`track-<n>`), in SFU rooms. */
function serverTrackId(t) {
  const track = t.stream.getVideoTracks()[0];
  const entry = track && state.remote.get(track.id);
  return entry && /^track-\d+$/.test(entry.trackId) ? entry.trackId : null;
}

function viewOf(t) {
  const rect = t.tile.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  const width = Math.min(16384, Math.round(rect.width * dpr));
  const height = Math.min(16384, Math.round(rect.height * dpr));
  const rendered = t.tile.isConnected && width > 0 && height > 0;
  // A "Camera off" tile covers its video.
  const covered = t.tile.dataset.videoMuted === 'true';
  const visible = rendered && t.intersecting && !document.hidden && !covered;
  return { width, height, visible, quality: t.pin.value };
}

function sendViews() {
  timer = null;
  if (state.mode !== 'sfu' || state.peerId || !state.pc) return;
  const tracks = {};
  for (const t of watched) {
    const id = serverTrackId(t);
    if (!id) continue;
    const view = viewOf(t);
    const json = JSON.stringify(view);
    if (sent.get(id) === json) continue;
    sent.set(id, json);
    t.sentId = id;
    tracks[id] = view;
  }
  if (Object.keys(tracks).length) send({ type: 'view', tracks });
}

/** The received frame height of a tile's video: from the receiver's statistics, else the
 * element's own size. */
async function frameHeight(t) {
  const track = t.stream.getVideoTracks()[0];
  const receiver = track && state.pc && state.pc.getReceivers().find((r) => r.track === track);
  let height = 0;
  if (receiver) {
    (await receiver.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video' && s.frameHeight) height = s.frameHeight;
    });
  }
  return height || t.video.videoHeight || 0;
}

function describeLayer(id) {
  const s = state.stats && id && state.stats.tracks && state.stats.tracks[id];
  if (!s) return tr('receivedQuality');
  const layer = s.rid ? tr('layerOf', { rid: s.rid, n: s.spatial + 1, of: s.layers }) : tr('oneLayer');
  const rate = `${(s.bitrate_bps / 1e6).toFixed(2)} Mbit/s`;
  return `${layer}, ${s.paused ? tr('paused') : rate}`;
}

async function refreshBadges() {
  for (const t of [...watched]) {
    const id = serverTrackId(t);
    const got = state.stats && id && state.stats.tracks && state.stats.tracks[id];
    // Paused by the media server (too little bandwidth): the picture stands still.
    const height = got && got.paused ? 0 : await frameHeight(t);
    setText(t.badge, got && got.paused ? tr('paused') : (height ? `${height}p` : '–'));
    setAttr(t.badge, 'title', describeLayer(id));
  }
}

/** For the browser tests: the views last sent, by media-server track id. */
export function sentViews() {
  return Object.fromEntries([...sent].map(([id, json]) => [id, JSON.parse(json)]));
}
