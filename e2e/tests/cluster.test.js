// Several media nodes on Redis: `sori signal --redis` places each room on the least loaded
// media node announced there, and moves a room's participants when its node dies or drains.
//
//   browsers ── sori signal --redis ──┬── sori media --redis (m1)
//       │                  │          ├── sori media --redis (m2)
//       │               redis-server  └── sori media --redis (m3)
//       └──────── media (UDP) to the room's node ───┘
//
// Redis is Debian's redis-server, started here on a free loopback port without persistence.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  root, spawnSori, launchBrowser, joinPage, pollPage, waitForVideoFrom, freePorts, snapshot, presenceSince,
  watchMedia, mediaGaps, stats, until, assertUdp,
} from './helpers.js';

const BENCH = process.env.SORI_BENCH_BIN
  || join(process.env.CARGO_TARGET_DIR || join(root, 'target'), 'debug', 'sori-bench');
const RUNS = 5;
// The nodes' control APIs require a token, which the session server presents (one with
// characters a URL query must encode).
const TOKEN = 'cluster t0ken+&=%';
const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });
const ctx = { redis: null, port: 0, nodes: new Map(), pastLogs: [], signal: null, browser: null, benches: [] };

/** `redis-cli` against the test's Redis. */
const redis = (...args) => execFileSync('redis-cli', ['-p', String(ctx.port), ...args], { encoding: 'utf8' }).trim();

/** The announced state of node `id` (`null`: not announced). */
function announced(id) {
  const f = redis('hgetall', `sori:media:${id}`).split('\n');
  if (f.length < 2) return null;
  const o = {};
  for (let i = 0; i + 1 < f.length; i += 2) o[f[i]] = f[i + 1];
  return { load: Number(o.load), draining: o.draining === '1' };
}

/** Starts media node `id` (again on its earlier ports when it ran before). */
async function startNode(id) {
  const old = ctx.nodes.get(id);
  const ports = old ? old.ports : await freePorts();
  const proc = await spawnSori([
    'media', '--redis', `redis://127.0.0.1:${ctx.port}/0`, '--node-id', id,
    '--kurento-listen', `127.0.0.1:${ports.kurento}`, '--rtc-port', String(ports.rtc),
    '--advertise-ip', '127.0.0.1', '--no-rtc-tcp', '--recordings-dir', mkdtempSync(join(tmpdir(), 'sori-rec-')),
    '--drain-timeout', '15', '--kurento-token', TOKEN,
  ], /control API on (ws:\/\/\S+)/);
  if (old) ctx.pastLogs.push([id, old.proc.log]);
  ctx.nodes.set(id, { proc, ports });
  await until(`${id} announced`, () => announced(id) !== null);
}

/** The node room `room` is placed on. */
const nodeOf = (room) => redis('get', `sori:room:${room}:media`);

/** `n` sori-bench participants (one publisher, the rest receivers) in `room`, until stopped. */
async function bench(room, n) {
  const url = ctx.signal.match.replace(/^http/, 'ws') + '/ws';
  const child = spawn(BENCH, [
    '--url', url, '--load', String(n - 1), '--room', room, '--video-kbps', '100',
    '--warmup', '1', '--duration', '600', '--quiet',
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  createInterface({ input: child.stderr }).on('line', (l) => process.stderr.write(`[sori-bench ${room}] ${l}\n`));
  ctx.benches.push(child);
}

/** Starts redis-server on `ctx.port`, empty (no persistence), and waits for it. */
async function startRedis() {
  ctx.redis = spawn('redis-server', ['--bind', '127.0.0.1', '--port', String(ctx.port), '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  await until('redis-server answers', () => { try { return redis('ping') === 'PONG'; } catch { return false; } });
}

before(async () => {
  ctx.port = (await freePorts()).kurento;
  await startRedis();
  for (const id of ['m1', 'm2', 'm3']) await startNode(id);
  ctx.signal = await spawnSori(
    ['signal', '--redis', `redis://127.0.0.1:${ctx.port}/0`, '--listen', '127.0.0.1:0', '--kurento-token', TOKEN],
    /listening on (http:\/\/\S+)/,
  );
  ctx.browser = await launchBrowser();
});

after(async () => {
  // The servers' logs, to read when a run fails.
  if (process.env.SORI_E2E_SERVER_LOG && ctx.signal) {
    const { writeFileSync } = await import('node:fs');
    writeFileSync(process.env.SORI_E2E_SERVER_LOG, ctx.signal.log.join('\n'));
    const logs = [...ctx.pastLogs, ...[...ctx.nodes].map(([id, { proc }]) => [id, proc.log])];
    logs.forEach(([id, log], i) => writeFileSync(`${process.env.SORI_E2E_SERVER_LOG}.${i}.${id}`, log.join('\n')));
  }
  for (const b of ctx.benches) b.kill('SIGKILL');
  await ctx.browser?.close();
  await ctx.signal?.stop();
  for (const { proc } of ctx.nodes.values()) {
    proc.child.kill('SIGKILL');
  }
  ctx.redis?.kill('SIGKILL');
});

/** Two browsers in `room` that see each other. */
async function pair(room) {
  const ada = await joinPage(ctx.browser, ctx.signal.match, room, 'Ada');
  const bo = await joinPage(ctx.browser, ctx.signal.match, room, 'Bo');
  await waitForVideoFrom(bo, 'Ada', 30000);
  await waitForVideoFrom(ada, 'Bo', 30000);
  // The media node offers no ICE-TCP: the call is on UDP, and the pages say so.
  await assertUdp(ada);
  await assertUdp(bo);
  return { ada, bo };
}

test('a room is placed on the least loaded of three media nodes', async () => {
  // Unequal load on purpose: three participants on the first node, two on the second.
  await bench('busy-1', 3);
  await until('busy-1 on a node with 3', () => nodeOf('busy-1') && announced(nodeOf('busy-1')).load === 3);
  await bench('busy-2', 2);
  await until('busy-2 on a node with 2', () => nodeOf('busy-2') && announced(nodeOf('busy-2')).load === 2);
  const busy = [nodeOf('busy-1'), nodeOf('busy-2')];
  assert.notEqual(busy[0], busy[1], 'the second room went to an empty node, not the loaded one');
  const loads = Object.fromEntries(['m1', 'm2', 'm3'].map((id) => [id, announced(id).load]));
  const { ada, bo } = await pair('placed');
  const at = nodeOf('placed');
  console.log(`# loads before: ${JSON.stringify(loads)}; room placed on ${at}`);
  assert.equal(loads[at], 0, `the room went to the node with no load (${JSON.stringify(loads)}), not ${at}`);
  await until(`${at} counts the two browsers`, () => announced(at).load === 2);
  await ada.context().close();
  await bo.context().close();
  for (const b of ctx.benches.splice(0)) b.kill('SIGKILL');
});

/**
 * Marks the tile `page` shows `who`'s video in now, and samples every 50 ms when another tile
 * of `who` — the one a new peer connection brings — decoded its first frame (`newFirst`, ms
 * since the epoch): `window.__switch`.
 */
const watchSwitch = (page, who) => page.evaluate((name) => {
  if (window.__switch) clearInterval(window.__switch.timer);
  const sel = `[data-testid="remote-video"][data-participant="${name}"]`;
  const old = document.querySelector(sel);
  const w = { newFirst: null };
  w.timer = setInterval(() => {
    const now = Date.now();
    for (const v of document.querySelectorAll(sel)) {
      if (v !== old && w.newFirst === null && v.getVideoPlaybackQuality().totalVideoFrames > 0) w.newFirst = now;
    }
    if (w.newFirst !== null) clearInterval(w.timer);
  }, 50);
  window.__switch = w;
}, who);

/**
 * Five times: `stop` the node room `room` is on, measure how long until each browser decodes
 * the other's video again (from a new peer connection), and start the node again.
 */
async function failover(room, signal) {
  const { ada, bo } = await pair(room);
  const before = { ada: await snapshot(ada), bo: await snapshot(bo) };
  const runs = [];
  for (let i = 0; i < RUNS; i += 1) {
    const from = nodeOf(room);
    const node = ctx.nodes.get(from);
    await Promise.all([watchSwitch(ada, 'Bo'), watchSwitch(bo, 'Ada')]);
    let exitedAt = null;
    const exited = new Promise((r) => node.proc.child.once('exit', () => { exitedAt = Date.now(); r(); }));
    const stopped = Date.now();
    node.proc.child.kill(signal);
    // Back: the other's video decoded in the tile of a new peer connection, at each.
    const back = async (page, who) => {
      const sw = await pollPage(page, () => window.__switch.newFirst && window.__switch, null, 20000).catch(() => null);
      if (sw) await waitForVideoFrom(page, who, 20000);
      // Video is black at most from the stop to this first frame of the new tile.
      return sw && { first_new_frame_s: (sw.newFirst - stopped) / 1000 };
    };
    const [atAda, atBo] = await Promise.all([back(ada, 'Bo'), back(bo, 'Ada')]);
    // The new peer connections are on UDP too.
    await assertUdp(ada);
    await assertUdp(bo);
    const to = nodeOf(room);
    await exited;
    const exitedAfter = (exitedAt - stopped) / 1000;
    console.log(`# run ${i + 1}: ${signal} ${from} at ${new Date(stopped).toISOString()}, moved to ${to}; `
      + `at Ada ${JSON.stringify(atAda)}, at Bo ${JSON.stringify(atBo)}; ${from} exited after ${exitedAfter} s`);
    runs.push({
      from, to, exited_s: exitedAfter,
      ada_back_s: atAda?.first_new_frame_s ?? null, bo_back_s: atBo?.first_new_frame_s ?? null,
    });
    assert.notEqual(to, from, `run ${i + 1}: the room moved off ${from}`);
    await startNode(from);
  }
  for (const [name, page] of Object.entries({ ada, bo })) {
    assert.deepEqual(await presenceSince(page, before[name]), [], `${name} saw no one leave or join`);
    assert.equal((await snapshot(page)).joins, before[name].joins, `${name} stayed in the room (no join again)`);
  }
  await ada.context().close();
  await bo.context().close();
  const pick = (k) => stats(runs.map((r) => r[k]));
  return {
    runs,
    report: {
      back_at_ada_s: pick('ada_back_s'), back_at_bo_s: pick('bo_back_s'),
      node_exited_s: pick('exited_s'),
    },
  };
}

test('the room\'s media node killed: everyone back with video on another node within 10 s, nobody left', async () => {
  const { runs, report } = await failover('killed', 'SIGKILL');
  console.log(`# media node SIGKILL, ${RUNS} times: ${JSON.stringify(report)} ${JSON.stringify(runs.map((r) => `${r.from}→${r.to}`))}`);
  for (const r of runs) {
    assert.ok(r.ada_back_s !== null && r.ada_back_s <= 10, `Ada back with video within 10 s (${r.ada_back_s})`);
    assert.ok(r.bo_back_s !== null && r.bo_back_s <= 10, `Bo back with video within 10 s (${r.bo_back_s})`);
  }
});

test('the room\'s media node drained (SIGTERM): everyone moves to another node, then it stops', async () => {
  const { runs, report } = await failover('drained', 'SIGTERM');
  console.log(`# media node SIGTERM drain, ${RUNS} times: ${JSON.stringify(report)} ${JSON.stringify(runs.map((r) => `${r.from}→${r.to}`))}`);
  for (const r of runs) {
    assert.ok(r.ada_back_s !== null && r.ada_back_s <= 10, `Ada back with video within 10 s (${r.ada_back_s})`);
    assert.ok(r.bo_back_s !== null && r.bo_back_s <= 10, `Bo back with video within 10 s (${r.bo_back_s})`);
    // It stopped once its participants had gone, well before its drain timeout (15 s).
    assert.ok(r.exited_s < 10, `the drained node stopped once empty (${r.exited_s} s)`);
  }
});

test('Redis restarted during a call: the call goes on; a join into a new room waits for Redis and works once it is back', async () => {
  const { ada, bo } = await pair('redis-call');
  const node = nodeOf('redis-call');
  await watchMedia(bo, 'Ada');
  const exited = new Promise((r) => ctx.redis.once('exit', r));
  ctx.redis.kill('SIGKILL');
  await exited;
  const down = Date.now();
  // A newcomer in another room meanwhile: the room answers, its media cannot be placed.
  const cy = await joinPage(ctx.browser, ctx.signal.match, 'while-redis-down', 'Cy');
  await pollPage(cy, () => window.sori.joins > 0, null, 15000);
  const refused = await pollPage(cy, () => {
    const t = document.getElementById('toast');
    return !t.hidden && /media node/i.test(t.textContent) && t.textContent;
  }, null, 15000);
  // A newcomer to the call's room meanwhile joins its node, which this session server knows.
  const dee = await joinPage(ctx.browser, ctx.signal.match, 'redis-call', 'Dee');
  await waitForVideoFrom(dee, 'Ada', 20000);
  const deeIn = (Date.now() - down) / 1000;
  // The call in progress for five seconds (at least) without Redis.
  await sleep(Math.max(0, 5000 - (Date.now() - down)));
  const during = await mediaGaps(bo);
  const newPc = await bo.evaluate(() => window.__media.frames.reset !== null);
  await startRedis();
  const up = Date.now();
  // The nodes announce themselves again at their next beat; Cy is sent round and joins.
  await pollPage(cy, async () => (await window.sori.outbound()).videoPackets > 50, null, 20000);
  const cyBack = (Date.now() - up) / 1000;
  // The call's room was written back where it is, so a newcomer to it joins the same node.
  await until('the call\'s room placed again', () => nodeOf('redis-call') === node, 5000);
  const eve = await joinPage(ctx.browser, ctx.signal.match, 'redis-call', 'Eve');
  await waitForVideoFrom(eve, 'Ada', 20000);
  console.log(`# Redis killed for ${((up - down) / 1000).toFixed(1)} s during a call: Ada's video at Bo black ${during.black.toFixed(2)} s, `
    + `packet gap ${during.packetGap.toFixed(2)} s, new peer connection: ${newPc}; a newcomer to the call decoded Ada ${deeIn.toFixed(2)} s into the outage; `
    + `a newcomer to another room refused with "${refused}"; `
    + `its media joined ${cyBack.toFixed(2)} s after Redis was back`);
  assert.equal(newPc, false, 'the call kept its peer connections');
  assert.ok(during.packetGap < 1, `Ada's video kept arriving at Bo without Redis (${during.packetGap} s without packets)`);
  assert.equal(nodeOf('redis-call'), node, 'the call stayed on its node');
  for (const p of [ada, bo, cy, dee, eve]) await p.context().close();
});
