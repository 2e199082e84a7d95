// The connection-quality indicator of each tile: three signal bars from the peer connection's
// statistics. One `getStats()` every SAMPLE_MS for the whole page, whatever the number of tiles:
//  - round-trip time: the selected ICE candidate pair's `currentRoundTripTime` (for the local
//    tile, the `roundTripTime` the receiver of the own streams reported, when there is one);
//  - loss, a remote tile: of its `inbound-rtp` streams, packetsLost / (packetsLost +
//    packetsReceived) over the last interval (not since the start);
//  - loss, the local tile: the `fractionLost` the receiver of the own streams reported
//    (`remote-inbound-rtp`), the worst of those with a report since the last sample (a
//    simulcast layer no one receives keeps its last report forever: it is left out).
// `classify` turns the numbers into good, fair or poor (THRESHOLDS); docs/web-client.md.

import { state } from './store.js';
import { setAttr } from './page.js';
import { t } from './i18n.js';

export const SAMPLE_MS = 2000;

/** Good: under 2 % loss and under 300 ms round trip; fair: under 10 % and under 600 ms;
 * else poor. A number not measured does not count against the connection. */
export const THRESHOLDS = {
  good: { lossPct: 2, rttMs: 300 },
  fair: { lossPct: 10, rttMs: 600 },
};

/** `good`, `fair`, `poor`, or `unknown` when neither number is known. */
export function classify({ rttMs = null, lossPct = null } = {}) {
  if (rttMs == null && lossPct == null) return 'unknown';
  const under = (limit) => (lossPct == null || lossPct < limit.lossPct) && (rttMs == null || rttMs < limit.rttMs);
  if (under(THRESHOLDS.good)) return 'good';
  if (under(THRESHOLDS.fair)) return 'fair';
  return 'poor';
}

/** The numbers in words: "Connection good: round trip 12 ms, 0.0 % loss". */
export function describe({ rttMs = null, lossPct = null } = {}) {
  const quality = classify({ rttMs, lossPct });
  if (quality === 'unknown') return t('connectionUnknown');
  return t('connectionTitle', {
    quality: t('connection_' + quality),
    rtt: rttMs == null ? t('rttUnknown') : t('rtt', { ms: Math.round(rttMs) }),
    loss: lossPct == null ? t('lossUnknown') : t('loss', { pct: lossPct.toFixed(1) }),
  });
}

// Indicator element -> { tracks: () => MediaStreamTrack[] (a remote tile) or null (the local
// tile), counts: inbound-rtp id -> { lost, received } at the last sample, lossPct }.
const watched = new Map();
let timer = null;

/** A new indicator: `unknown` until the first sample. */
export function indicator() {
  const el = document.createElement('span');
  el.className = 'connection';
  el.dataset.testid = 'connection-quality';
  el.setAttribute('role', 'img');
  for (let i = 0; i < 3; i++) el.append(document.createElement('i'));
  draw(el, {});
  return el;
}

/** Samples for `el` from now on: `tracks()` gives a remote tile's tracks; null: the own. */
export function watch(el, tracks) {
  watched.set(el, { tracks, counts: new Map(), lossPct: null });
  if (!timer) timer = setInterval(sample, SAMPLE_MS);
}

export function unwatch(el) {
  watched.delete(el);
  if (!watched.size) {
    clearInterval(timer);
    timer = null;
  }
}

function draw(el, numbers) {
  const quality = classify(numbers);
  if (el.dataset.quality !== quality) el.dataset.quality = quality;
  const words = describe(numbers);
  setAttr(el, 'title', words);
  setAttr(el, 'aria-label', words);
}

async function sample() {
  const pc = state.pc;
  if (!pc || pc.connectionState === 'closed') {
    for (const [el, w] of watched) {
      w.counts.clear();
      w.lossPct = null;
      w.last = null;
      draw(el, {});
    }
    return;
  }
  let report;
  try {
    report = await pc.getStats();
  } catch {
    return; // closed meanwhile
  }
  let pair = null;
  report.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
  });
  // Firefox names no selected pair on the transport: the nominated, working one.
  if (!pair) report.forEach((s) => { if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s; });
  const pairRtt = pair && pair.currentRoundTripTime != null ? pair.currentRoundTripTime * 1000 : null;

  const inbound = new Map(); // track id -> inbound-rtp stats
  const remoteInbound = [];
  report.forEach((s) => {
    if (s.type === 'inbound-rtp' && s.trackIdentifier) inbound.set(s.trackIdentifier, s);
    if (s.type === 'remote-inbound-rtp') remoteInbound.push(s);
  });

  for (const [el, w] of watched) {
    if (!w.tracks) {
      draw(el, own(w, remoteInbound, pairRtt));
      continue;
    }
    let lost = 0;
    let received = 0;
    const now = new Map();
    for (const track of w.tracks()) {
      const s = inbound.get(track.id);
      if (!s) continue;
      const before = w.counts.get(s.id) || { lost: 0, received: 0 };
      const c = { lost: Math.max(0, s.packetsLost || 0), received: s.packetsReceived || 0 };
      now.set(s.id, c);
      lost += Math.max(0, c.lost - before.lost);
      received += Math.max(0, c.received - before.received);
    }
    w.counts = now;
    // No packets in this interval (nothing sent): the last loss stands.
    if (lost + received > 0) w.lossPct = (100 * lost) / (lost + received);
    draw(el, { rttMs: pairRtt, lossPct: now.size ? w.lossPct : null });
  }
}

/** The own streams as their receiver reported them since the last sample: the worst loss and
 * round trip. No new report: the last numbers stand. */
function own(w, remoteInbound, pairRtt) {
  let lossPct = null;
  let rttMs = null;
  const now = new Map();
  for (const s of remoteInbound) {
    const reports = s.roundTripTimeMeasurements ?? s.packetsLost ?? 0;
    now.set(s.id, reports);
    if (w.counts.get(s.id) === reports) continue; // no report since: stale
    if (s.fractionLost != null) lossPct = Math.max(lossPct ?? 0, s.fractionLost * 100);
    if (s.roundTripTime != null) rttMs = Math.max(rttMs ?? 0, s.roundTripTime * 1000);
  }
  w.counts = now;
  if (lossPct == null && rttMs == null && w.last) return w.last;
  w.last = { rttMs: rttMs ?? pairRtt, lossPct };
  return w.last;
}
