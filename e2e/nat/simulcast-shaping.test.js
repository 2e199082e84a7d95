// Simulcast under a shaped link: one receiver's downlink is held to 500 kbit/s with `tc`, the
// other's is not. The unshaped receiver gets the publisher's top layer, the shaped one a lower
// layer it can carry (under 2 % loss after repair, no freeze over a second), and the top layer
// again within 15 s of the cap being lifted. Once both receivers have settled (after 10 s), the
// publisher sends no more keyframes than in the same run without the shaped receiver, give or
// take one keyframe of each layer (a single layer change anywhere re-keys every layer in
// Chromium's VP8 simulcast). The layers over time, the keyframes over time, the loss, the
// freezes and the recovery time are printed (docs/simulcast.md, "Measured").
//
//   wan bridge (10.92.0.1) ── server 10.92.0.10
//                          ├─ fast   10.92.0.20  (publisher and unshaped receiver)
//                          └─ slow   10.92.0.30  (shaped receiver; tbf on its bridge port)
//
// The namespaces are the test's own; no address here exists outside them.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join as joinPath } from 'node:path';
import { chromium } from 'playwright-core';
import { AccessToken } from 'livekit-server-sdk';
import { spawnSori, launchOptions, joinPage, waitForVideoFrom, assertUdp } from '../tests/helpers.js';
import { unavailable, chromiumIn, bridgedHosts } from './netns.js';

const reason = unavailable();
if (reason && process.env.CI) throw new Error(`the shaping test must run in CI, but: ${reason}`);
const opts = reason ? { skip: reason } : {};

const KEY = 'APIe2eShaping';
const SECRET = 'e2e-shaping-secret-0123456789abcdef';
const CAP = '500kbit';
const tag = `sh${process.pid % 100000}`;
const ns = { wan: `${tag}-wan`, srv: `${tag}-srv`, fast: `${tag}-fast`, slow: `${tag}-slow` };
const run = (...args) => execFileSync(args[0], args.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
const inNs = (n, ...args) => run('ip', 'netns', 'exec', n, ...args);
const URL = 'http://10.92.0.10:8080';

const createNetwork = () => bridgedHosts(ns.wan, '10.92.0.1',
  [[ns.srv, '10.92.0.10'], [ns.fast, '10.92.0.20'], [ns.slow, '10.92.0.30']]);

/** Holds what reaches the slow host to the cap: a token bucket of a few packets (a deeper one
 * lets a short probe through at any rate, hiding the cap from the estimator until media runs
 * into it) and ~100 ms of queue. */
const shape = () => inNs(ns.wan, 'tc', 'qdisc', 'replace', 'dev', 'slow-w', 'root', 'tbf',
  'rate', CAP, 'burst', '4kb', 'latency', '100ms');
const unshape = () => inNs(ns.wan, 'tc', 'qdisc', 'del', 'dev', 'slow-w', 'root');

const ctx = { server: null, fast: null, slow: null, launchers: [], dir: null };

/**
 * A camera picture that is hard to compress: a moving test pattern under noise, three seconds
 * looped. Chromium's own fake camera draws a flat animation that a 720p encoder carries in a few
 * hundred kbit/s; this one fills each layer's bitrate, as a real camera does.
 */
function busyCamera() {
  ctx.dir = mkdtempSync(joinPath(tmpdir(), 'sori-shaping-'));
  const file = joinPath(ctx.dir, 'camera.y4m');
  run('ffmpeg', '-loglevel', 'error', '-y', '-f', 'lavfi', '-i',
    'testsrc2=size=1280x720:rate=30,noise=alls=40:allf=t+u', '-t', '3', '-pix_fmt', 'yuv420p', file);
  return file;
}

async function browserIn(n, camera) {
  const o = launchOptions(false);
  o.args.push(`--unsafely-treat-insecure-origin-as-secure=${URL}`);
  if (camera) o.args.push(`--use-file-for-fake-video-capture=${camera}`);
  const launcher = chromiumIn(n);
  ctx.launchers.push(launcher);
  return chromium.launch({ ...o, executablePath: launcher });
}

before(async () => {
  if (reason) return;
  createNetwork();
  ctx.server = await spawnSori(
    ['serve', '--listen', '10.92.0.10:8080', '--api-key', KEY, '--api-secret', SECRET,
      '--rtc-port', '40000', '--advertise-ip', '10.92.0.10', '--no-rtc-tcp', '--no-turn'],
    /listening on (http:\/\/\S+)/,
    { netns: ns.srv },
  );
  ctx.fast = await browserIn(ns.fast, busyCamera());
  ctx.slow = await browserIn(ns.slow);
});
after(async () => {
  if (process.env.SORI_E2E_SERVER_LOG && ctx.server) {
    (await import('node:fs')).writeFileSync(process.env.SORI_E2E_SERVER_LOG, ctx.server.log.join('\n'));
  }
  await ctx.fast?.close();
  await ctx.slow?.close();
  await ctx.server?.stop();
  for (const n of Object.values(ns)) {
    try { run('ip', 'netns', 'del', n); } catch { /* not created */ }
  }
  for (const l of ctx.launchers) rmSync(dirname(l), { recursive: true, force: true });
  if (ctx.dir) rmSync(ctx.dir, { recursive: true, force: true });
});

function mint(identity, room, grant = {}) {
  const at = new AccessToken(KEY, SECRET, { identity, name: identity, ttl: '10m' });
  at.addGrant({ roomJoin: true, room, ...grant });
  return at.toJwt();
}

/** A publisher (camera and microphone) or a listener (receives only). */
async function join(browser, room, name, listener = false) {
  const token = await mint(name, room, listener ? { canPublish: false } : {});
  return joinPage(browser, URL, room, name, `&token=${token}`);
}

/** The receiver wants the best the link carries (its tile alone would ask for less). */
const wantHigh = (page) => page.getByTestId('quality-pin').selectOption('high');
const videoFrom = (page, name) => page.evaluate((n) => window.sori.videoFrom(n), name);
const outboundVideo = (page) => page.evaluate(() => window.sori.outboundVideo());
const keyframes = (layers) => layers.reduce((n, l) => n + (l.keyFramesEncoded || 0), 0);
const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });

/**
 * Samples each receiver's video from `from` once a second for `seconds`: the frame height,
 * and the running totals the checks need. Returns one row per second per receiver.
 */
async function sample(receivers, from, seconds, rows, t0, publisher) {
  for (let i = 0; i < seconds; i += 1) {
    await sleep(1000);
    const layers = await outboundVideo(publisher);
    rows.push({
      t: Math.round((Date.now() - t0) / 1000), who: 'pub',
      keyframes: Object.fromEntries(layers.map((l) => [l.rid, l.keyFramesEncoded])),
      active: Object.fromEntries(layers.map((l) => [l.rid, l.active])),
    });
    if (process.env.SORI_E2E_VERBOSE) console.log(JSON.stringify(rows.at(-1)));
    for (const [who, page] of Object.entries(receivers)) {
      const v = await videoFrom(page, from);
      const stats = await page.evaluate(() => window.sori.stats);
      const layer = stats && Object.values(stats.tracks || {})[0];
      rows.push({
        t: Math.round((Date.now() - t0) / 1000), who, ...v,
        estimate: stats?.estimate_bps, layerBps: layer?.bitrate_bps,
      });
      if (process.env.SORI_E2E_VERBOSE) console.log(JSON.stringify(rows.at(-1)));
    }
  }
}

/** The publisher's keyframes over time: the seconds in which a layer sent one, and which. */
function keyframeTimeline(rows, before) {
  const out = [];
  let last = Object.fromEntries(before.map((l) => [l.rid, l.keyFramesEncoded]));
  for (const r of rows.filter((x) => x.who === 'pub')) {
    const sent = Object.entries(r.keyframes).filter(([rid, n]) => n > (last[rid] ?? 0))
      .map(([rid, n]) => `${rid}${n - (last[rid] ?? 0) > 1 ? `×${n - (last[rid] ?? 0)}` : ''}`);
    if (sent.length) out.push(`${r.t}s ${sent.join('+')}`);
    last = r.keyframes;
  }
  return out.join(', ');
}

/** The change of `field` between the first and the last row of `who` in `rows`. */
/** The longest single freeze, at most: what one sample interval (about a second) added to
 * `totalFreezesDuration`, less the least each other freeze counted in it lasted (Chromium
 * counts a frame gap as a freeze from 150 ms over the mean frame interval). */
function longestFreeze(mine) {
  let longest = 0;
  for (let i = 1; i < mine.length; i += 1) {
    const count = (mine[i].freezeCount || 0) - (mine[i - 1].freezeCount || 0);
    const added = (mine[i].totalFreezesDuration || 0) - (mine[i - 1].totalFreezesDuration || 0);
    if (count > 0) longest = Math.max(longest, added - 0.15 * (count - 1));
  }
  return Number(longest.toFixed(3));
}

function delta(rows, who, field) {
  const mine = rows.filter((r) => r.who === who);
  return (mine.at(-1)?.[field] || 0) - (mine[0]?.[field] || 0);
}

/** Layer per receiver over time, compressed to the seconds where it changed. */
function timeline(rows) {
  const out = [];
  const last = {};
  for (const r of rows.filter((x) => x.who !== 'pub')) {
    if (last[r.who] !== r.frameHeight) out.push(`${r.t}s ${r.who} ${r.frameHeight}p`);
    last[r.who] = r.frameHeight;
  }
  return out.join(', ');
}

const RUN = 40;
/** The first seconds of a run, in which the estimates settle. */
const SETTLE = 10;

/** The publisher's keyframes (all layers) from `SETTLE` s to the end of the run. */
function settledKeyframes(rows) {
  const pub = rows.filter((r) => r.who === 'pub');
  const sum = (r) => Object.values(r?.keyframes ?? {}).reduce((a, b) => a + b, 0);
  return sum(pub.at(-1)) - sum(pub.find((r) => r.t >= SETTLE));
}

test('without a shaped receiver: the publisher\'s keyframes when nobody is slow', opts, async () => {
  const pub = await join(ctx.fast, 'calm', 'Pub');
  const fast = await join(ctx.fast, 'calm', 'Fast', true);
  await waitForVideoFrom(fast, 'Pub', 30000);
  await wantHigh(fast);
  const before = await outboundVideo(pub);
  const rows = [];
  await sample({ fast }, 'Pub', RUN, rows, Date.now(), pub);
  const after = await outboundVideo(pub);
  ctx.calmKeyframes = keyframes(after) - keyframes(before);
  ctx.calmSettled = settledKeyframes(rows);
  const perLayer = after.map((l) => {
    const b = before.find((x) => x.rid === l.rid);
    return `${l.rid} ${l.keyFramesEncoded - (b?.keyFramesEncoded || 0)}`;
  });
  console.log(`publisher keyframes in ${RUN} s without a shaped receiver: ${ctx.calmKeyframes} (${perLayer.join(', ')}): `
    + `${keyframeTimeline(rows, before)}; layers over time: ${timeline(rows)}`);
  assert.equal(rows.filter((r) => r.who === 'fast').at(-1).frameHeight, 720, `the receiver gets the top layer: ${timeline(rows)}`);
  for (const p of [pub, fast]) await p.context().close();
});

test('a receiver shaped to 500 kbit/s gets a lower layer without loss or freezes', opts, async () => {
  // As without the shaped receiver; then the shaped one joins.
  const pub = await join(ctx.fast, 'shaped', 'Pub');
  const fast = await join(ctx.fast, 'shaped', 'Fast', true);
  await waitForVideoFrom(fast, 'Pub', 30000);
  await wantHigh(fast);
  shape();
  const slow = await join(ctx.slow, 'shaped', 'Slow', true);
  await waitForVideoFrom(slow, 'Pub', 30000);
  await wantHigh(slow);
  // UDP carries every call (ICE-TCP and TURN are off; checked, not assumed).
  for (const p of [pub, fast, slow]) await assertUdp(p);
  const t0 = Date.now();
  const before = await outboundVideo(pub);
  const rows = [];
  await sample({ fast, slow }, 'Pub', RUN, rows, t0, pub);
  const after = await outboundVideo(pub);
  const shapedKeyframes = keyframes(after) - keyframes(before);
  const shapedSettled = settledKeyframes(rows);

  // The shaped phase, after the first seconds in which the estimate settles.
  const settled = rows.filter((r) => r.t >= SETTLE);
  const slowNow = rows.filter((r) => r.who === 'slow').at(-1);
  const lost = delta(settled, 'slow', 'packetsLost');
  const received = delta(settled, 'slow', 'packetsReceived');
  const lossPercent = (100 * lost) / Math.max(1, lost + received);
  const freezes = delta(rows, 'slow', 'freezeCount');
  const frozen = delta(rows, 'slow', 'totalFreezesDuration');
  const longest = longestFreeze(rows.filter((r) => r.who === 'slow'));
  // Layer changes of both receivers during the shaped phase (each needs one keyframe).
  const changes = (who) => rows.filter((r) => r.who === who)
    .filter((r, i, mine) => i > 0 && mine[i - 1].frameHeight !== r.frameHeight).length;
  const switches = changes('slow');
  const allSwitches = switches + changes('fast');

  // Lifted: how long until the top layer again (up to 30 s).
  unshape();
  const lifted = Date.now();
  let recovered = null;
  while (Date.now() - lifted < 30000) {
    const v = await videoFrom(slow, 'Pub');
    rows.push({ t: Math.round((Date.now() - t0) / 1000), who: 'slow', ...v });
    if (v.frameHeight === 720) {
      recovered = (Date.now() - lifted) / 1000;
      break;
    }
    await sleep(500);
  }

  console.log(`layers over time: ${timeline(rows)}`);
  console.log(`shaped receiver: ${lossPercent.toFixed(2)} % lost after repair (${lost} of ${lost + received}), `
    + `${freezes} freezes totalling ${frozen.toFixed(2)} s, ${switches} layer changes; `
    + `top layer again ${recovered} s after the cap was lifted`);
  const perLayer = after.map((l) => {
    const b = before.find((x) => x.rid === l.rid);
    return `${l.rid} ${l.keyFramesEncoded - (b?.keyFramesEncoded || 0)}`;
  });
  console.log(`publisher keyframes over time: ${keyframeTimeline(rows, before)}`);
  console.log(`publisher keyframes in ${RUN} s: ${shapedKeyframes} (${perLayer.join(', ')}; without the shaped `
    + `receiver: ${ctx.calmKeyframes}); after the first ${SETTLE} s: ${shapedSettled} (without: ${ctx.calmSettled}); shaped `
    + `receiver sent ${delta(rows, 'slow', 'pliCount')} PLIs and ${delta(rows, 'slow', 'nackCount')} NACKs`);

  // The unshaped receiver climbs as its estimate does; it ends the shaped phase on the top
  // layer and stays there.
  const fastEnd = rows.filter((r) => r.who === 'fast' && r.t > RUN - 15);
  assert.ok(fastEnd.length > 0 && fastEnd.every((r) => r.frameHeight === 720),
    `the unshaped receiver is on the top layer: ${timeline(rows)}`);
  assert.ok(slowNow.frameHeight > 0 && slowNow.frameHeight < 720,
    `the shaped receiver is on a lower layer: ${timeline(rows)}`);
  assert.ok(lossPercent < 2, `loss after repair ${lossPercent.toFixed(2)} %`);
  assert.ok(longest <= 1, `no freeze over a second: ${freezes} freezes, ${frozen} s in all, the longest at most ${longest} s`);
  assert.ok(recovered !== null && recovered <= 15, `the top layer again within 15 s: ${recovered} s`);
  const layerCount = before.length;
  assert.ok(ctx.calmSettled !== undefined, 'the run without the shaped receiver ran first');
  assert.ok(shapedSettled <= ctx.calmSettled + layerCount,
    `the shaped receiver does not drive the publisher's keyframes: ${shapedSettled} after ${SETTLE} s, `
    + `${ctx.calmSettled} without it (${allSwitches} layer changes)`);
  for (const p of [pub, fast, slow]) await p.context().close();
});
