// Calls that survive the network. Each scenario measures the black-video seconds the other
// participant sees and checks that it saw no one leave or join.
//
// The socket cut: the browser of "Ada" loses its WebSocket (its TCP connections to the server
// are destroyed and new ones go unanswered for 8 s; its media's UDP is untouched). Media must keep flowing, Ada must come
// back on a new socket as the same participant, and the chat each side sent meanwhile must
// arrive after the resume.
//
//   wan bridge (10.93.0.1) ── server 10.93.0.10
//                          ├─ ada    10.93.0.20  (her socket is cut)
//                          └─ bo     10.93.0.30  (watches Ada's video)
//
// The namespaces are the test's own; no address here exists outside them.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join as joinPath } from 'node:path';
import { chromium } from 'playwright-core';
import { AccessToken } from 'livekit-server-sdk';
import { spawnSori, launchOptions, joinPage, waitForVideoFrom, assertUdp, pollPage } from '../tests/helpers.js';
import { unavailable, chromiumIn, bridgedHosts } from './netns.js';

const reason = unavailable();
if (reason && process.env.CI) throw new Error(`the survival tests must run in CI, but: ${reason}`);
const opts = reason ? { skip: reason } : {};

const KEY = 'APIe2eSurvive';
const SECRET = 'e2e-survive-secret-0123456789abcdef';
const tag = `sv${process.pid % 100000}`;
const ns = { wan: `${tag}-wan`, srv: `${tag}-srv`, ada: `${tag}-ada`, bo: `${tag}-bo` };
const run = (...args) => execFileSync(args[0], args.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
const inNs = (n, ...args) => run('ip', 'netns', 'exec', n, ...args);
const SERVER_IP = '10.93.0.10';
const URL = `http://${SERVER_IP}:8080`;

const createNetwork = () => bridgedHosts(ns.wan, '10.93.0.1',
  [[ns.srv, SERVER_IP], [ns.ada, '10.93.0.20'], [ns.bo, '10.93.0.30']]);

/** Cuts a host's WebSocket: its TCP connections to the server are destroyed (`ss -K`: the
 * browser gets an error at once, the server a reset at its next packet) and new ones go
 * unanswered until `mend`, while UDP (media) passes. */
const CUT_RULES = `table inet cut {
  chain out {
    type filter hook output priority 0;
    ip daddr ${SERVER_IP} tcp dport 8080 tcp flags syn drop
  }
}`;
function cut(host) {
  execFileSync('ip', ['netns', 'exec', host, 'nft', '-f', '-'], { input: CUT_RULES });
  try { inNs(host, 'ss', '-K', 'dst', SERVER_IP, 'dport', '=', ':8080'); } catch { /* some already gone */ }
}
const mend = (host) => inNs(host, 'nft', 'delete', 'table', 'inet', 'cut');

const ctx = { server: null, ada: null, bo: null, launchers: [], recordings: null };

async function browserIn(n) {
  const o = launchOptions(false);
  o.args.push(`--unsafely-treat-insecure-origin-as-secure=${URL}`);
  const launcher = chromiumIn(n);
  ctx.launchers.push(launcher);
  return chromium.launch({ ...o, executablePath: launcher });
}

/** `sori serve` in the server's namespace, always on the same ports. */
const startSori = () => spawnSori(
  ['serve', '--listen', `${SERVER_IP}:8080`, '--api-key', KEY, '--api-secret', SECRET,
    '--rtc-port', '40000', '--advertise-ip', SERVER_IP, '--no-rtc-tcp', '--no-turn',
    '--recordings-dir', ctx.recordings],
  /listening on (http:\/\/\S+)/,
  { netns: ns.srv },
);

before(async () => {
  if (reason) return;
  createNetwork();
  ctx.recordings = mkdtempSync(joinPath(tmpdir(), 'sori-survive-'));
  ctx.server = await startSori();
  ctx.ada = await browserIn(ns.ada);
  ctx.bo = await browserIn(ns.bo);
});
after(async () => {
  if (process.env.SORI_E2E_SERVER_LOG && ctx.server) {
    (await import('node:fs')).writeFileSync(process.env.SORI_E2E_SERVER_LOG, ctx.server.log.join('\n'));
  }
  await ctx.ada?.close();
  await ctx.bo?.close();
  await ctx.server?.stop();
  for (const n of Object.values(ns)) {
    try { run('ip', 'netns', 'del', n); } catch { /* not created */ }
  }
  for (const l of ctx.launchers) rmSync(dirname(l), { recursive: true, force: true });
  if (ctx.recordings) rmSync(ctx.recordings, { recursive: true, force: true });
});

function mint(name, room, grant = {}) {
  const at = new AccessToken(KEY, SECRET, { identity: name, name, ttl: '10m' });
  at.addGrant({ roomJoin: true, room, ...grant });
  return at.toJwt();
}

async function join(browser, room, name, grant = {}, query = '') {
  return joinPage(browser, URL, room, name, `&token=${await mint(name, room, grant)}${query}`);
}

const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });

/** Waits for `page`'s status line to read `want`; returns the time it took (ms). */
async function statusBecomes(page, want, timeout) {
  const t0 = Date.now();
  try {
    await pollPage(page, (w) => document.getElementById('status').textContent === w, want, timeout);
  } catch (e) {
    const now = await page.evaluate(() => document.getElementById('status').textContent);
    throw new Error(`the status did not become "${want}" within ${timeout} ms: it says "${now}"`);
  }
  return Date.now() - t0;
}

/** `window.sori.watchVideo`/`videoGaps` where the page's client predates them (a measurement of
 * an older build): the same timing, built on `window.sori.videoFrom`. */
const polyfillWatch = (page) => page.evaluate(() => {
  if (window.sori.watchVideo && window.sori.watchVideo.toString().includes('ends')) return;
  const watches = new Map();
  window.sori.watchVideo = (name) => {
    const w = { frames: -1, at: performance.now(), gaps: [], ends: [], start: performance.now(), first: null };
    setInterval(async () => {
      const { framesDecoded } = await window.sori.videoFrom(name);
      const now = performance.now();
      if (framesDecoded === w.frames) return;
      if (w.frames >= 0 && now - w.at > 500) {
        w.gaps.push((now - w.at) / 1000);
        w.ends.push((now - w.start) / 1000);
      }
      if (w.frames >= 0 && w.first === null) w.first = (now - w.start) / 1000;
      w.frames = framesDecoded;
      w.at = now;
    }, 100);
    watches.set(name, w);
  };
  window.sori.videoGaps = (name) => {
    const w = watches.get(name);
    const gaps = [...w.gaps];
    const open = performance.now() - w.at;
    if (w.frames < 0 || open > 500) gaps.push(open / 1000);
    return { gaps, ends: [...w.ends], first: w.first, black: gaps.reduce((a, b) => a + b, 0) };
  };
});

/** Sends a chat message from the page's chat box. */
async function say(page, text) {
  await page.getByTestId('chat-input').fill(text);
  await page.getByTestId('chat-input').press('Enter');
}

/** Waits for a chat message with `text` on the page. */
const chatArrives = (page, text, timeout) => pollPage(page, (t) => [
  ...document.querySelectorAll('[data-testid="chat-message"]'),
].some((li) => li.textContent.includes(t)), text, timeout);

test('a cut WebSocket comes back on a new socket: same participant, media never stops, chat arrives', opts, async () => {
  const room = 'cut';
  const ada = await join(ctx.ada, room, 'Ada');
  const bo = await join(ctx.bo, room, 'Bo');
  await waitForVideoFrom(bo, 'Ada', 30000);
  await waitForVideoFrom(ada, 'Bo', 30000);
  await assertUdp(ada);
  await assertUdp(bo);
  const adaId = await ada.evaluate(() => window.sori.me);
  await polyfillWatch(ada);
  await polyfillWatch(bo);
  await bo.evaluate(() => window.sori.watchVideo('Ada'));
  await ada.evaluate(() => window.sori.watchVideo('Bo'));
  const presenceBefore = (await bo.evaluate(() => window.sori.presence ?? [])).length;

  const CUT_MS = 8000;
  const t0 = Date.now();
  cut(ns.ada);
  // Ada's page notices (a reset at the next packet: the pings every 5 s at the latest).
  const noticed = await statusBecomes(ada, 'reconnecting…', 15000).catch(() => null);
  await say(bo, 'said while Ada was away');
  await say(ada, 'typed while cut off');
  await sleep(Math.max(0, CUT_MS - (Date.now() - t0)));
  mend(ns.ada);
  const mended = Date.now();
  const back = await statusBecomes(ada, 'connected', 15000).catch(() => null);
  const backAfter = back === null ? null : (Date.now() - mended) / 1000;
  const chatToAda = await chatArrives(ada, 'said while Ada was away', 10000).then(() => true, () => false);
  const chatFromAda = await chatArrives(bo, 'typed while cut off', 10000).then(() => true, () => false);
  // Media after the resume, for a second more.
  await sleep(2000);
  const atBo = await bo.evaluate(() => window.sori.videoGaps('Ada'));
  const atAda = await ada.evaluate(() => window.sori.videoGaps('Bo'));
  const presence = (await bo.evaluate(() => window.sori.presence ?? ['(not recorded by this client)'])).slice(presenceBefore);
  const adaIdAfter = await ada.evaluate(() => window.sori.me);
  const report = {
    cut_s: CUT_MS / 1000, noticed_s: noticed === null ? null : noticed / 1000, back_after_mend_s: backAfter,
    black_at_bo_s: Number(atBo.black.toFixed(2)), gaps_at_bo: atBo.gaps.map((g) => Number(g.toFixed(2))),
    black_at_ada_s: Number(atAda.black.toFixed(2)),
    presence_at_bo: presence, same_id: adaIdAfter === adaId, chatToAda, chatFromAda,
  };
  if (!chatFromAda) {
    report.chat_at_ada = await ada.evaluate(() => [...document.querySelectorAll('[data-testid="chat-message"]')].map((li) => li.textContent));
    report.chat_at_bo = await bo.evaluate(() => [...document.querySelectorAll('[data-testid="chat-message"]')].map((li) => li.textContent));
  }
  console.log(`# socket cut: ${JSON.stringify(report)}`);

  assert.notEqual(noticed, null, 'Ada\'s page says "reconnecting…" while her socket is cut');
  assert.notEqual(back, null, 'Ada is connected again within 15 s of the network coming back');
  assert.equal(adaIdAfter, adaId, 'Ada is the same participant');
  assert.deepEqual(presence, [], 'Bo saw no one leave or join');
  assert.ok(chatToAda, 'the chat Bo sent meanwhile reached Ada after the resume');
  assert.ok(chatFromAda, 'the chat Ada typed while cut off reached Bo after the resume');
  assert.ok(atBo.black < 1, `Ada's video kept playing at Bo (${atBo.black.toFixed(2)} s without frames)`);
  assert.ok(atAda.black < 1, `Bo's video kept playing at Ada (${atAda.black.toFixed(2)} s without frames)`);
  await assertUdp(bo);
});

/** Waits until `page` joined again (more than `joins` `joined` messages) and decodes new
 * video from `name`; returns when. */
async function backWithVideo(page, joins, name, timeout) {
  await pollPage(page, (n) => window.sori.joins > n, joins, timeout);
  await waitForVideoFrom(page, name, timeout);
  return Date.now();
}

test('SIGTERM finishes the recording and closes sockets with 1001; after a restart everyone is back with video, no click', opts, async () => {
  const room = 'restart';
  const ada = await join(ctx.ada, room, 'Ada', { roomRecord: true });
  const bo = await join(ctx.bo, room, 'Bo');
  const cy = await join(ctx.bo, room, 'Cy');
  for (const [page, other] of [[bo, 'Ada'], [cy, 'Ada'], [ada, 'Bo'], [ada, 'Cy'], [bo, 'Cy']]) {
    await waitForVideoFrom(page, other, 30000);
  }
  for (const page of [ada, bo, cy]) await assertUdp(page);
  await ada.getByTestId('record').click();
  for (const page of [ada, bo, cy]) await page.getByTestId('recording-indicator').waitFor({ state: 'visible' });
  // The recording's length is what the files are checked against: wall-clock time.
  await sleep(3000);
  const ids = {}; // `joined` messages so far, per page
  for (const [n, page] of Object.entries({ ada, bo, cy })) ids[n] = await page.evaluate(() => window.sori.joins);
  await polyfillWatch(bo);
  await bo.evaluate(() => window.sori.watchVideo('Ada'));

  const t0 = Date.now();
  const exited = new Promise((r) => ctx.server.child.once('exit', r));
  ctx.server.child.kill('SIGTERM');
  await exited;
  const exitS = (Date.now() - t0) / 1000;
  const closes = {};
  for (const [n, page] of Object.entries({ ada, bo, cy })) {
    // The page hears of the close a moment after the process is gone.
    const seen = () => page.evaluate(() => (window.sori.socketCloses ? window.sori.socketCloses() : []));
    await pollPage(page, () => window.sori.socketCloses && window.sori.socketCloses().length > 0, null, 3000).catch(() => {});
    closes[n] = (await seen()).map((c) => c.code);
  }
  ctx.server = await startSori();
  const up = Date.now();
  const back = await Promise.all([
    backWithVideo(ada, ids.ada, 'Bo', 20000), backWithVideo(bo, ids.bo, 'Ada', 20000),
    backWithVideo(cy, ids.cy, 'Ada', 20000),
  ]).then((ts) => (Math.max(...ts) - up) / 1000, () => null);
  const atBo = await bo.evaluate(() => window.sori.videoGaps('Ada'));

  // The recording: listed by the restarted server, one complete file per participant.
  const token = await mint('Ada', room, { roomRecord: true });
  // Asked from Ada's page: the server's address exists only inside the namespaces.
  const list = await ada.evaluate(async (t) => {
    const res = await fetch('/recordings', { headers: { authorization: `Bearer ${t}` } });
    return res.json();
  }, token);
  const files = [];
  for (const rec of list) {
    for (const f of rec.files) {
      const path = joinPath(ctx.recordings, rec.recording, f.file);
      const info = JSON.parse(run('ffprobe', '-v', 'error', '-show_format', '-show_streams', '-of', 'json', path));
      const errors = execFileSync('ffmpeg', ['-v', 'error', '-i', path, '-f', 'null', '-'], { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
      files.push({ name: f.name, duration: Number(Number(info.format.duration).toFixed(2)), codecs: info.streams.map((x) => x.codec_name).sort(), clean: errors === '' });
    }
  }
  const report = {
    exit_s: exitS, close_codes: closes, back_with_video_after_restart_s: back,
    black_at_bo_s: Number(atBo.black.toFixed(2)), recordings: list.length, files,
  };
  console.log(`# SIGTERM and restart: ${JSON.stringify(report)}`);

  assert.ok(exitS < 10, `sori exits within 10 s of SIGTERM (${exitS} s)`);
  for (const [n, codes] of Object.entries(closes)) assert.ok(codes.includes(1001), `${n}'s socket closed with 1001: ${codes}`);
  assert.notEqual(back, null, 'all three pages are back in the room with video');
  // How soon is a measurement (printed above): 3.4 s on a quiet run, past 10 s when a loaded
  // machine starts the server slowly and the pages' reconnect backoff has grown meanwhile.
  // Back at all, without a click, within the 20 s the pages are given, is the behaviour.
  assert.equal(list.length, 1, 'the recording is listed after the restart');
  assert.ok(existsSync(joinPath(ctx.recordings, list[0].recording, 'manifest.json')), 'with its manifest');
  assert.deepEqual(files.map((f) => f.name).sort(), ['Ada', 'Bo', 'Cy']);
  for (const f of files) {
    assert.deepEqual(f.codecs, ['opus', 'vp8'], f.name);
    assert.ok(f.clean, `${f.name}'s file decodes without errors`);
    assert.ok(f.duration > 2, `${f.name}'s file holds the recording (${f.duration} s)`);
  }
});

/** Ada's interface gets a new address and the old one goes, as on a network change; the
 * route follows. Returns when (ms). */
function moveAda(from, to) {
  inNs(ns.ada, 'sysctl', '-q', '-w', 'net.ipv4.conf.eth0.promote_secondaries=1');
  inNs(ns.ada, 'ip', 'addr', 'add', `${to}/24`, 'dev', 'eth0');
  inNs(ns.ada, 'ip', 'addr', 'del', `${from}/24`, 'dev', 'eth0');
  inNs(ns.ada, 'ip', 'route', 'replace', 'default', 'via', '10.93.0.1');
  return Date.now();
}

/** Blocks a host's media (UDP to and from the server), leaving its WebSocket alone. */
const UDP_RULES = `table inet udpcut {
  chain out { type filter hook output priority 0; ip daddr ${SERVER_IP} udp dport 40000 drop; }
  chain in { type filter hook input priority 0; ip saddr ${SERVER_IP} udp sport 40000 drop; }
}`;

/** Two pages in `room` with video both ways over UDP; Bo times Ada's video. `query` adds to
 * the pages' address (`&mode=p2p`: a P2P room, where the one that joins second makes the call). */
async function call(room, query = '') {
  const ada = await join(ctx.ada, room, 'Ada', {}, query);
  const bo = await join(ctx.bo, room, 'Bo', {}, query);
  await waitForVideoFrom(bo, 'Ada', 30000);
  await waitForVideoFrom(ada, 'Bo', 30000);
  await assertUdp(ada);
  await polyfillWatch(bo);
  if (process.env.SORI_E2E_DEBUG) {
    ada.on('console', (m) => console.log(`ada ${Date.now()} ${m.text()}`));
    bo.on('console', (m) => console.log(`bo ${Date.now()} ${m.text()}`));
  }
  const before = {
    presence: (await bo.evaluate(() => window.sori.presence ?? [])).length,
    id: await ada.evaluate(() => window.sori.me),
    boSdp: await bo.evaluate(() => window.sori.sdpVersions && window.sori.sdpVersions()),
  };
  return { ada, bo, before };
}

/** SORI_E2E_DEBUG: what Bo receives of Ada's video and what Ada sends, every 250 ms for 10 s
 * from `restored` (ms). */
async function trace({ ada, bo }, restored) {
  for (let i = 0; i < 40; i += 1) {
    const [v, out] = await Promise.all([
      bo.evaluate(() => window.sori.videoFrom('Ada')).catch(() => null),
      ada.evaluate(() => window.sori.outboundVideo()).catch(() => null),
    ]);
    if (!v || !out) return;
    const enc = out.map((e) => `${e.rid}:${e.active ? '' : 'off,'}${e.frameHeight}p f${e.framesEncoded} k${e.keyFramesEncoded} p${e.packetsSent}`).join(' ');
    console.log(`# trace ${((Date.now() - restored) / 1000).toFixed(2)} bo: f${v.framesDecoded} ${v.frameHeight}p p${v.packetsReceived} k${v.keyFramesDecoded} pli${v.pliCount} nack${v.nackCount} frz${v.freezeCount} | ada: ${enc}`);
    await sleep(250);
  }
}

/** Starts timing Ada's video at Bo; returns when (ms), to place later instants on the page's
 * clock. */
async function watchAda({ bo }) {
  await bo.evaluate(() => window.sori.watchVideo('Ada'));
  return Date.now();
}

/** After an interruption of Ada's media that ended at `restored` (ms; the watch started at
 * `watched`): when Ada's video came back at Bo (the end of the first stretch without frames
 * that ended after `restored`; 0 if none), how much Bo missed, and what Bo saw of Ada. */
async function afterwards({ ada, bo, before }, watched, restored) {
  const since = (restored - watched) / 1000;
  if (process.env.SORI_E2E_DEBUG) trace({ ada, bo }, restored);
  let resumed = null;
  for (const deadline = Date.now() + 20000; Date.now() < deadline; await sleep(100)) {
    const g = await bo.evaluate(() => window.sori.videoGaps('Ada'));
    const end = g.ends.find((e) => e > since);
    if (end !== undefined) { resumed = end; break; }
    // No stretch without frames since, none open, 3 s on: the video never stopped.
    if (Date.now() - restored > 3000 && g.gaps.length === g.ends.length) { resumed = since; break; }
  }
  const back = resumed === null ? null : Math.max(0, resumed - since);
  // Frames that keep coming, over the next two seconds (the sender's rate climbs back after
  // an outage: its bandwidth estimate fell).
  const flowing = (await bo.evaluate(() => window.sori.videoFrom('Ada'))).framesDecoded;
  await sleep(2000);
  const inTwo = (await bo.evaluate(() => window.sori.videoFrom('Ada'))).framesDecoded - flowing;
  const gaps = await bo.evaluate(() => window.sori.videoGaps('Ada'));
  return {
    back_after_s: back === null ? null : Number(back.toFixed(2)),
    black_at_bo_s: Number(gaps.black.toFixed(2)),
    frames_in_2_s_after: inTwo,
    presence_at_bo: (await bo.evaluate(() => window.sori.presence ?? [])).slice(before.presence),
    same_id: (await ada.evaluate(() => window.sori.me)) === before.id,
    ada_ice_restarts: await ada.evaluate(() => window.sori.iceRestarts ?? null),
    bo_ice_restarts: await bo.evaluate(() => window.sori.iceRestarts ?? null),
    bo_renegotiated: JSON.stringify(await bo.evaluate(() => window.sori.sdpVersions && window.sori.sdpVersions())) !== JSON.stringify(before.boSdp),
  };
}

test('UDP dropped for 5 s: Ada\'s video is back at Bo within 2 s of the restore, no one leaves', opts, async () => {
  const c = await call('udp');
  const watched = await watchAda(c);
  execFileSync('ip', ['netns', 'exec', ns.ada, 'nft', '-f', '-'], { input: UDP_RULES });
  if (process.env.SORI_E2E_DEBUG) console.log(`cut at ${Date.now()}`);
  // The outage is what is measured: a fixed stretch of wall-clock time.
  await sleep(5000);
  inNs(ns.ada, 'nft', 'delete', 'table', 'inet', 'udpcut');
  const restored = Date.now();
  if (process.env.SORI_E2E_DEBUG) console.log(`restored at ${restored}`);
  const report = { outage_s: 5, ...(await afterwards(c, watched, restored)) };
  console.log(`# UDP outage: ${JSON.stringify(report)}`);
  assert.notEqual(report.back_after_s, null, 'Ada\'s video comes back at Bo');
  assert.ok(report.back_after_s <= 2, `within 2 s of the restore (${report.back_after_s} s)`);
  assert.ok(report.frames_in_2_s_after >= 5, `and keeps coming (${report.frames_in_2_s_after} frames in the next 2 s)`);
  assert.deepEqual(report.presence_at_bo, [], 'Bo saw no one leave or join');
  assert.ok(report.same_id, 'Ada is the same participant');
  assert.equal(report.bo_renegotiated, false, 'Bo\'s connection was not renegotiated');
  await assertUdp(c.ada);
  await c.ada.close();
  await c.bo.close();
});

test('Ada\'s address changes mid-call: an ICE restart brings her video back, same participant, Bo renegotiates nothing', opts, async () => {
  const c = await call('moved');
  const watched = await watchAda(c);
  const pairBefore = await c.ada.evaluate(() => window.sori.selectedPair());
  const moved = moveAda('10.93.0.20', '10.93.0.21');
  if (process.env.SORI_E2E_DEBUG) console.log(`moved at ${moved}`);
  const report = { ...(await afterwards(c, watched, moved)) };
  const pairAfter = await c.ada.evaluate(() => window.sori.selectedPair());
  report.address_before = pairBefore.local.address;
  report.address_after = pairAfter && pairAfter.local.address;
  console.log(`# address change: ${JSON.stringify(report)}`);
  assert.equal(report.address_after, '10.93.0.21', 'Ada\'s media goes from her new address');
  assert.notEqual(report.back_after_s, null, 'Ada\'s video comes back at Bo');
  // How soon is a measurement (printed above; docs/signaling.md): 2.2–2.4 s on a quiet
  // machine, past 3 s under CI's load. The bound only tells a restart from what came before
  // it: the media server's ICE timeout (15 s) and a new participant, or in P2P never.
  assert.ok(report.back_after_s <= 12, `well before the 15 s ICE timeout (${report.back_after_s} s)`);
  assert.ok(report.frames_in_2_s_after >= 5, `and keeps coming (${report.frames_in_2_s_after} frames in the next 2 s)`);
  assert.ok(report.ada_ice_restarts >= 1, 'through an ICE restart');
  assert.ok(report.same_id, 'Ada is the same participant');
  assert.deepEqual(report.presence_at_bo, [], 'Bo saw no one leave or join');
  assert.equal(report.bo_renegotiated, false, 'Bo\'s connection was not renegotiated');
  await assertUdp(c.ada);
  await c.ada.close();
  await c.bo.close();
});

test('P2P: Ada\'s address changes mid-call: the browser that made the call restarts ICE, her video comes back', opts, async () => {
  const c = await call('moved-p2p', '&mode=p2p');
  const watched = await watchAda(c);
  const moved = moveAda('10.93.0.21', '10.93.0.22');
  if (process.env.SORI_E2E_DEBUG) console.log(`moved at ${moved}`);
  const report = { ...(await afterwards(c, watched, moved)) };
  const pair = await c.ada.evaluate(() => window.sori.selectedPair());
  report.address_after = pair && pair.local.address;
  console.log(`# P2P address change: ${JSON.stringify(report)}`);
  assert.equal(report.address_after, '10.93.0.22', 'Ada\'s media goes from her new address');
  assert.notEqual(report.back_after_s, null, 'Ada\'s video comes back at Bo');
  // How soon is a measurement (printed above; docs/signaling.md): 2.2–2.4 s on a quiet
  // machine, past 3 s under CI's load. The bound only tells a restart from what came before
  // it: the media server's ICE timeout (15 s) and a new participant, or in P2P never.
  assert.ok(report.back_after_s <= 12, `well before the 15 s ICE timeout (${report.back_after_s} s)`);
  assert.ok(report.frames_in_2_s_after >= 5, `and keeps coming (${report.frames_in_2_s_after} frames in the next 2 s)`);
  // Whoever joined the room second made the call (the two pages join at about the same time).
  assert.ok(report.ada_ice_restarts + report.bo_ice_restarts >= 1, 'through an ICE restart');
  assert.ok(report.same_id, 'Ada is the same participant');
  assert.deepEqual(report.presence_at_bo, [], 'Bo saw no one leave or join');
  await c.ada.close();
  await c.bo.close();
});
