// A room bigger than its media node (cascading): when the room's node is full, a newcomer's
// media goes to another node, and the two nodes' pipelines are linked by a relay (each
// publisher's media crosses once per node).
//
//   Ada, Bo ── m1 (--capacity 2) ══ relay ══ m2 ── Cy
//                     ╲ sori signal --redis ╱         m3 (--capacity 1): the delay benchmark
//
// Redis is Debian's redis-server, started here on a free loopback port without persistence.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AccessToken } from 'livekit-server-sdk';
import {
  root, spawnSori, launchBrowser, joinPage as openPage, waitForVideoFrom, freePorts, snapshot, presenceSince,
  pollPage, until, assertUdp,
} from './helpers.js';

const BENCH = process.env.SORI_BENCH_BIN
  || join(process.env.CARGO_TARGET_DIR || join(root, 'target'), 'debug', 'sori-bench');
const TOKEN = 'cascade t0ken+&=%';
// The session server has API keys: pages join with tokens (Ada's with roomAdmin: she
// moderates), sori-bench signs its participants' tokens.
const KEY = 'APIcascade';
const SECRET = 'cascade-secret-of-enough-length-0123456789';
const ROUNDS = 3;
const ctx = { redis: null, port: 0, nodes: new Map(), signal: null, browser: null };

const redis = (...args) => execFileSync('redis-cli', ['-p', String(ctx.port), ...args], { encoding: 'utf8' }).trim();

/** The announced load of node `id`. */
function load(id) {
  const f = redis('hgetall', `sori:media:${id}`).split('\n');
  const i = f.indexOf('load');
  return i < 0 ? null : Number(f[i + 1]);
}

async function startNode(id, extra = []) {
  const ports = await freePorts();
  const proc = await spawnSori([
    'media', '--redis', `redis://127.0.0.1:${ctx.port}/0`, '--node-id', id,
    '--kurento-listen', `127.0.0.1:${ports.kurento}`, '--rtc-port', String(ports.rtc),
    '--advertise-ip', '127.0.0.1', '--no-rtc-tcp', '--recordings-dir', mkdtempSync(join(tmpdir(), 'sori-rec-')),
    '--kurento-token', TOKEN, ...extra,
  ], /control API on (ws:\/\/\S+)/);
  ctx.nodes.set(id, { proc, ports });
  await until(`${id} announced`, () => load(id) !== null);
}

/** Places `room` on node `id` before anyone joins it (as a session server would). */
const placeOn = (room, id) => redis('set', `sori:room:${room}:media`, id, 'PX', '60000');

/** A page that joins `room` as `name` with a token of its own (Ada's with roomAdmin). */
async function joinPage(browser, url, room, name) {
  const at = new AccessToken(KEY, SECRET, { identity: name, name, ttl: '10m' });
  at.addGrant({ room, roomJoin: true, roomAdmin: name === 'Ada' });
  return openPage(browser, url, room, name, `&token=${await at.toJwt()}`);
}

const inboundFrom = (page, name) => page.evaluate((n) => window.sori.inboundFrom(n), name);

/** Whether `who`'s audio stops (`stopped`) or keeps arriving at `page` over 2 s, from 0.5 s on. */
async function audioFlows(page, who) {
  await page.waitForTimeout(500);
  const at = (await inboundFrom(page, who)).audioPackets;
  await page.waitForTimeout(2000);
  return (await inboundFrom(page, who)).audioPackets - at;
}

/** The session server's log lines since `from` that match `re`. */
const logSince = (from, re) => ctx.signal.log.slice(from).filter((l) => re.test(l));

before(async () => {
  ctx.port = (await freePorts()).kurento;
  ctx.redis = spawn('redis-server', ['--bind', '127.0.0.1', '--port', String(ctx.port), '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  await until('redis-server answers', () => { try { return redis('ping') === 'PONG'; } catch { return false; } });
  await startNode('m1', ['--capacity', '2']);
  await startNode('m2');
  await startNode('m3', ['--capacity', '1']);
  ctx.signal = await spawnSori(
    ['signal', '--redis', `redis://127.0.0.1:${ctx.port}/0`, '--listen', '127.0.0.1:0', '--kurento-token', TOKEN,
      '--api-key', KEY, '--api-secret', SECRET],
    /listening on (http:\/\/\S+)/,
  );
  ctx.browser = await launchBrowser();
});

after(async () => {
  if (process.env.SORI_E2E_SERVER_LOG && ctx.signal) {
    const { writeFileSync } = await import('node:fs');
    writeFileSync(process.env.SORI_E2E_SERVER_LOG, ctx.signal.log.join('\n'));
    for (const [id, { proc }] of ctx.nodes) writeFileSync(`${process.env.SORI_E2E_SERVER_LOG}.${id}`, proc.log.join('\n'));
  }
  await ctx.browser?.close();
  await ctx.signal?.stop();
  for (const { proc } of ctx.nodes.values()) proc.child.kill('SIGKILL');
  ctx.redis?.kill('SIGKILL');
});

test('a room bigger than its node spans two: browsers on both decode each other, and a node is unlinked once its side empties', async () => {
  placeOn('cascade', 'm1');
  const ada = await joinPage(ctx.browser, ctx.signal.match, 'cascade', 'Ada');
  const bo = await joinPage(ctx.browser, ctx.signal.match, 'cascade', 'Bo');
  await waitForVideoFrom(bo, 'Ada', 30000);
  await waitForVideoFrom(ada, 'Bo', 30000);
  await until('m1 counts Ada and Bo', () => load('m1') === 2);
  const from = ctx.signal.log.length;
  // m1 is full: Cy's media goes to another node, linked to m1 for the room.
  const cy = await joinPage(ctx.browser, ctx.signal.match, 'cascade', 'Cy');
  for (const [page, others] of [[cy, ['Ada', 'Bo']], [ada, ['Cy']], [bo, ['Cy']]]) {
    for (const who of others) await waitForVideoFrom(page, who, 30000);
  }
  for (const p of [ada, bo, cy]) await assertUdp(p);
  await until('m2 counts Cy', () => load('m2') === 1);
  assert.equal(load('m1'), 2, 'Ada and Bo stayed on m1');
  assert.equal(load('m3'), 0, 'nothing went to m3');
  assert.equal(logSince(from, /room linked across two media nodes room="cascade" a="m1" b="m2"/).length, 1, 'm1 and m2 linked once');
  // Ada and Bo still decode each other.
  await waitForVideoFrom(ada, 'Bo', 10000);
  await waitForVideoFrom(bo, 'Ada', 10000);

  // A moderator's mute holds across the nodes, both ways, and so does its end: Ada (m1) mutes
  // Bo (m1) and Cy (m2).
  await pollPage(cy, async () => (await window.sori.inboundFrom('Bo')).audioPackets > 20, null, 10000);
  await pollPage(ada, async () => (await window.sori.inboundFrom('Cy')).audioPackets > 20, null, 10000);
  const moderate = (who) => ada.locator(`[data-testid=participant][data-participant=${who}] [data-testid=moderate-mute-audio]`).click();
  await moderate('Bo');
  await moderate('Cy');
  for (const p of [bo, cy]) await p.getByTestId('mute-audio').filter({ hasText: 'muted by moderator' }).waitFor();
  const muted = { boAtCy: await audioFlows(cy, 'Bo'), cyAtAda: await audioFlows(ada, 'Cy'), cyAtBo: await audioFlows(bo, 'Cy') };
  const boBefore = (await inboundFrom(cy, "Bo")).audioPackets;
  const lifted = Date.now();
  await moderate('Bo');
  // Lifting the mute lets Bo speak again; his microphone comes on when he switches it on.
  await bo.waitForFunction(() => !document.querySelector('[data-testid=mute-audio]').disabled);
  await bo.getByTestId('mute-audio').click();
  const back = await pollPage(cy, async (n) => (await window.sori.inboundFrom('Bo')).audioPackets > n + 20, boBefore, 15000)
    .then(() => (Date.now() - lifted) / 1000, () => null);
  console.log(`# audio packets in 2 s while muted: ${JSON.stringify(muted)}; Bo's audio back at Cy ${back} s after the mute was lifted and he switched his microphone on`);
  assert.deepEqual(muted, { boAtCy: 0, cyAtAda: 0, cyAtBo: 0 }, 'muted audio reaches no one, on either node');
  assert.ok(back !== null, 'Bo\'s audio reaches Cy again on the other node once the mute is lifted');

  // Cy leaves: m2 has no one of the room left and is unlinked; a newcomer links it again.
  const before = await snapshot(ada);
  await cy.context().close();
  await pollPage(ada, (n) => window.sori.presence.slice(n).some((p) => /left/.test(p.type)), before.presence, 20000)
    .catch(async () => assert.fail(`Ada never saw Cy leave: ${JSON.stringify(await presenceSince(ada, before))}`));
  await until('m1 and m2 unlinked', () => logSince(from, /media nodes unlinked for the room room="cascade"/).length === 1);
  const dee = await joinPage(ctx.browser, ctx.signal.match, 'cascade', 'Dee');
  await waitForVideoFrom(dee, 'Ada', 30000);
  await waitForVideoFrom(dee, 'Bo', 30000);
  await waitForVideoFrom(ada, 'Dee', 30000);
  await assertUdp(dee);
  assert.equal(logSince(from, /room linked across two media nodes room="cascade"/).length, 2, 'linked again for Dee');
  for (const p of [ada, bo, dee]) await p.context().close();
});

/** One sori-bench step: a publisher and `receivers` receivers in `room`; its JSON result. */
function benchStep(room, receivers) {
  const out = join(mkdtempSync(join(tmpdir(), 'sori-cascade-')), 'step.json');
  const url = `${ctx.signal.match.replace(/^http/, 'ws')}/ws`;
  return new Promise((resolve, reject) => {
    const child = spawn(BENCH, [
      '--url', url, '--api-key', KEY, '--api-secret', SECRET, '--load', String(receivers), '--room', room, '--video-kbps', '300',
      '--warmup', '2', '--duration', '6', '--json', out, '--quiet',
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    createInterface({ input: child.stderr }).on('line', (l) => process.stderr.write(`[sori-bench ${room}] ${l}\n`));
    child.on('exit', (code) => {
      if (code !== 0) reject(new Error(`sori-bench exited with ${code}`));
      else resolve(JSON.parse(readFileSync(out, 'utf8')).steps[0]);
    });
  });
}

test('the relay\'s added one-way delay, measured with sori-bench (same room, relayed or not, alternating rounds)', async () => {
  const RECEIVERS = 4;
  const rows = { direct: [], relayed: [] };
  for (let i = 0; i < ROUNDS; i += 1) {
    for (const variant of ['direct', 'relayed']) {
      const room = `bench-${variant}-${i}`;
      await until('the nodes empty', () => ['m1', 'm2', 'm3'].every((id) => load(id) === 0));
      // Direct: the publisher and its receivers on m2. Relayed: the publisher on m3 (it
      // takes one), its receivers on other nodes, through relays.
      placeOn(room, variant === 'direct' ? 'm2' : 'm3');
      const from = ctx.signal.log.length;
      const step = await benchStep(room, RECEIVERS);
      const linked = logSince(from, new RegExp(`room linked across two media nodes room="${room}"`)).length;
      const on = logSince(from, new RegExp(`media joined on a node room="${room}" node="(m\\d)"`)).map((l) => l.match(/node="(m\d)"/)[1]);
      console.log(`# ${variant} round ${i + 1}: nodes ${JSON.stringify(on)}, delay p50 ${step.delay.p50_ms} ms, p95 ${step.delay.p95_ms} ms, p99 ${step.delay.p99_ms} ms, loss ${(step.loss * 100).toFixed(3)} %, ${step.received_packets} packets`);
      assert.equal(step.joins_failed, 0, `${variant}: every participant joined`);
      assert.ok(step.received_packets > 0 && step.loss < 0.01, `${variant}: receivers got the media (loss ${step.loss})`);
      if (variant === 'direct') {
        assert.deepEqual(on, Array(RECEIVERS + 1).fill('m2'), 'direct: everyone on m2');
        assert.equal(linked, 0, 'direct: no relay');
      } else {
        // m3 takes one: its receivers go to the other nodes (m1 until it is full, m2).
        assert.equal(on[0], 'm3', 'relayed: the publisher on m3');
        assert.equal(on.length, RECEIVERS + 1, 'relayed: every participant joined a node');
        assert.ok(on.slice(1).every((n) => n !== 'm3'), `relayed: no receiver on m3 (${on})`);
        assert.ok(linked >= 1, 'relayed: the nodes linked');
      }
      rows[variant].push(step.delay);
    }
  }
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const p = (variant, k) => median(rows[variant].map((d) => d[k]));
  console.log(`# relay's added one-way delay over ${ROUNDS} alternating rounds (median of rounds): `
    + `p50 ${p('direct', 'p50_ms')} → ${p('relayed', 'p50_ms')} ms, p95 ${p('direct', 'p95_ms')} → ${p('relayed', 'p95_ms')} ms, `
    + `p99 ${p('direct', 'p99_ms')} → ${p('relayed', 'p99_ms')} ms`);
});
