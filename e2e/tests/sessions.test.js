// Several session servers on Redis: a room lives on one of them, a browser whose socket
// reaches the other is relayed to it, and when a session server dies its browsers resume on
// the other one — the room taken over from its snapshot when it was the room's server.
//
//   Ada ── lb-a ─┬─▶ sori signal --redis (s1) ─┐
//                ╳                             ├── redis-server, sori media --redis (m1)
//   Bo  ── lb-b ─┴─▶ sori signal --redis (s2) ─┘
//
// lb-a and lb-b stand for a load balancer: each sends connections to its own session server
// while it answers, else to the other (as a balancer that stopped sending to a dead server).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AccessToken, RoomServiceClient, TrackType } from 'livekit-server-sdk';
import {
  spawnSori, launchBrowser, joinPage, pollPage, waitForVideoFrom, freePorts, snapshot, presenceSince,
  watchMedia, mediaGaps, stats, until, assertUdp,
} from './helpers.js';

const RUNS = 5;
// Both session servers have the same API key: the pages join with tokens, applications call
// the server API through either.
const KEY = 'APIsessions';
const SECRET = 'sessions-test-secret-0123456789abcdef';
const ctx = { redis: null, port: 0, media: null, servers: new Map(), pastLogs: [], lbs: [], browser: null };
const redis = (...args) => execFileSync('redis-cli', ['-p', String(ctx.port), ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();

/** Starts session server `id` (again on its port when it ran before). */
async function startServer(id) {
  const old = ctx.servers.get(id);
  const port = old ? old.port : (await freePorts()).kurento;
  const proc = await spawnSori(
    ['signal', '--redis', `redis://127.0.0.1:${ctx.port}/0`, '--node-id', id, '--listen', `127.0.0.1:${port}`,
      '--api-key', KEY, '--api-secret', SECRET],
    /listening on (http:\/\/\S+)/,
  );
  if (old) ctx.pastLogs.push([id, old.proc.log]);
  ctx.servers.set(id, { proc, port });
  await until(`${id} announced`, () => redis('exists', `sori:session:${id}`) === '1');
}

/** A TCP balancer on a free port: each connection to `first`'s port, or `second`'s when
 * `first` refuses it. */
async function balancer(first, second) {
  const sockets = new Set();
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => client.destroy());
    const attempt = (ids) => {
      if (ids.length === 0) { client.destroy(); return; }
      const up = net.connect(ctx.servers.get(ids[0]).port, '127.0.0.1');
      let connected = false;
      up.once('connect', () => {
        connected = true;
        client.pipe(up);
        up.pipe(client);
      });
      up.on('error', () => { if (!connected) attempt(ids.slice(1)); else client.destroy(); });
      up.on('close', () => { if (connected) client.destroy(); });
      client.on('close', () => up.destroy());
    };
    attempt([first, second]);
  });
  await new Promise((r) => { server.listen(0, '127.0.0.1', r); });
  ctx.lbs.push({ server, sockets });
  return `http://127.0.0.1:${server.address().port}`;
}

/** A Prometheus value of session server `id`'s `/metrics`. */
async function metric(id, name) {
  const text = await (await fetch(`http://127.0.0.1:${ctx.servers.get(id).port}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : null;
}

before(async () => {
  ctx.port = (await freePorts()).kurento;
  ctx.redis = spawn('redis-server', ['--bind', '127.0.0.1', '--port', String(ctx.port), '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  await until('redis-server answers', () => { try { return redis('ping') === 'PONG'; } catch { return false; } });
  const ports = await freePorts();
  ctx.media = await spawnSori([
    'media', '--redis', `redis://127.0.0.1:${ctx.port}/0`, '--node-id', 'm1',
    '--kurento-listen', `127.0.0.1:${ports.kurento}`, '--rtc-port', String(ports.rtc),
    '--advertise-ip', '127.0.0.1', '--no-rtc-tcp', '--recordings-dir', mkdtempSync(join(tmpdir(), 'sori-rec-')),
  ], /control API on (ws:\/\/\S+)/);
  await startServer('s1');
  await startServer('s2');
  ctx.lbA = await balancer('s1', 's2');
  ctx.lbB = await balancer('s2', 's1');
  ctx.browser = await launchBrowser();
});

after(async () => {
  if (process.env.SORI_E2E_SERVER_LOG) {
    const { writeFileSync } = await import('node:fs');
    const logs = [...ctx.pastLogs, ...[...ctx.servers].map(([id, { proc }]) => [id, proc.log]), ['m1', ctx.media?.log || []]];
    logs.forEach(([id, log], i) => writeFileSync(`${process.env.SORI_E2E_SERVER_LOG}.${i}.${id}`, log.join('\n')));
  }
  await ctx.browser?.close();
  for (const { server, sockets } of ctx.lbs) {
    for (const s of sockets) s.destroy();
    server.close();
  }
  for (const { proc } of ctx.servers.values()) proc.child.kill('SIGKILL');
  ctx.media?.child.kill('SIGKILL');
  ctx.redis?.kill('SIGKILL');
});

async function token(identity, room) {
  const at = new AccessToken(KEY, SECRET, { identity, name: identity, ttl: '10m' });
  at.addGrant({ roomJoin: true, room });
  return `&token=${await at.toJwt()}`;
}

/** Ada through lb-a (s1, whose room it becomes), then Bo through lb-b (s2, relayed to s1). */
async function pair(room) {
  const ada = await joinPage(ctx.browser, ctx.lbA, room, 'Ada', await token('Ada', room));
  await pollPage(ada, () => window.sori.joins > 0, null, 15000);
  const bo = await joinPage(ctx.browser, ctx.lbB, room, 'Bo', await token('Bo', room));
  await waitForVideoFrom(bo, 'Ada', 30000);
  await waitForVideoFrom(ada, 'Bo', 30000);
  // The media node offers no ICE-TCP: the call is on UDP, and the pages say so.
  await assertUdp(ada);
  await assertUdp(bo);
  assert.equal(redis('get', `sori:room:${room}:session`), 's1', 'the room lives where its first participant joined');
  return { ada, bo };
}

const messages = (page) => page.getByTestId('chat-message').allTextContents();

/** `page` sends `text` in the chat. */
async function say(page, text) {
  await page.getByTestId('chat-input').fill(text);
  await page.getByTestId('chat-send').click();
}

/** How many of `page`'s chat messages say `text`, once one says it. */
async function shown(page, text) {
  await page.waitForFunction((t) => [...document.querySelectorAll('[data-testid=chat-message]')]
    .some((m) => m.textContent.includes(t)), text, { timeout: 20000 });
  return (await messages(page)).filter((m) => m.includes(text)).length;
}

test('two participants on different session servers share a room: video both ways, one chat order', async () => {
  const { ada, bo } = await pair('shared');
  assert.equal(await metric('s2', 'sori_relayed_sockets'), 1, 'Bo\'s socket on s2 is relayed');
  assert.equal(await metric('s1', 'sori_relayed_participants'), 1, 'to his participant on s1');
  // Both type at once; everyone sees the room server's one order.
  await Promise.all([[ada, 'Ada'], [bo, 'Bo']].map(async ([p, n]) => {
    for (let i = 0; i < 5; i += 1) {
      await p.getByTestId('chat-input').fill(`${n} ${i}`);
      await p.getByTestId('chat-send').click();
    }
  }));
  for (const p of [ada, bo]) await p.waitForFunction(() => document.querySelectorAll('[data-testid=chat-message]').length === 10);
  const [atAda, atBo] = [await messages(ada), await messages(bo)];
  assert.deepEqual(atBo, atAda, 'the same chat, in the same order, on both servers');
  console.log(`# chat across two session servers: ${JSON.stringify(atAda.map((m) => m.match(/(Ada|Bo) \d/)?.[0]))}`);

  // LiveKit's server SDK through either balancer: the room lives on s1.
  const viaB = new RoomServiceClient(ctx.lbB, KEY, SECRET);
  const viaA = new RoomServiceClient(ctx.lbA, KEY, SECRET);
  const people = await viaB.listParticipants('shared');
  assert.deepEqual(people.map((p) => p.identity).sort(), ['Ada', 'Bo']);
  // Each one's microphone and camera, as the media node reported them.
  for (const p of people) {
    assert.deepEqual(p.tracks.map((t) => t.type).sort(), [TrackType.AUDIO, TrackType.VIDEO], `${p.identity}: ${JSON.stringify(p.tracks)}`);
  }
  await viaB.createRoom({ name: 'planned-on-s2' });
  assert.equal(redis('get', 'sori:room:planned-on-s2:session'), 's2');
  const rooms = (await viaA.listRooms()).map((r) => r.name).sort();
  assert.deepEqual(rooms, ['planned-on-s2', 'shared']);
  await viaB.removeParticipant('shared', 'Bo');
  await pollPage(bo, () => !document.getElementById('lobby').hidden, null, 10000);
  await pollPage(ada, () => !Object.values(window.sori.names).includes('Bo'), null, 10000);
  await viaA.deleteRoom('planned-on-s2');
  await ada.context().close();
  await bo.context().close();
});

/**
 * Five times, each in a new room: stop session server `victim` with `signal` while Ada (s1)
 * and Bo (s2, relayed) are in a call; measure when each browser's socket is resumed on the
 * survivor and when it decodes the other's video again; start `victim` again.
 */
async function killRuns(victim, signal = 'SIGKILL') {
  const runs = [];
  for (let i = 0; i < RUNS; i += 1) {
    // A room of its own: rooms of the runs before are still open on the survivor.
    const room = `${signal.toLowerCase()}-${victim}-${i}`;
    const { ada, bo } = await pair(room);
    const before = { ada: await snapshot(ada), bo: await snapshot(bo) };
    const ids = { ada: await ada.evaluate(() => window.sori.me), bo: await bo.evaluate(() => window.sori.me) };
    await Promise.all([watchMedia(ada, 'Bo'), watchMedia(bo, 'Ada')]);
    // Ada's last words, seen by both just before the kill: newer than the room's last
    // snapshot (stored at most every second) unless it was stored in between.
    const last = `last words ${i}`;
    await say(ada, last);
    for (const p of [ada, bo]) assert.equal(await shown(p, last), 1);
    const hit = { s1: ['ada', 'bo'], s2: ['bo'] }[victim];
    const { proc } = ctx.servers.get(victim);
    const exited = new Promise((r) => { proc.child.once('exit', r); });
    const killed = Date.now();
    proc.child.kill(signal);
    const measure = async (page, name, other) => {
      let resumed = null;
      if (hit.includes(name)) {
        const at = await pollPage(page, (t) => window.sori.resumes().find((r) => r > t), killed, 20000);
        resumed = (at - killed) / 1000;
      }
      // Video from the other: decoded again after the kill (a new peer connection when the
      // room was taken over).
      await pollPage(page, (w) => window.__media.frames.last > 0
        && performance.now() - window.__media.frames.at < 300, null, 20000);
      await waitForVideoFrom(page, other, 20000);
      const gaps = await mediaGaps(page);
      const newPc = await page.evaluate(() => window.__media.frames.reset !== null);
      const back = await page.evaluate(() => window.__media.frames.back ?? null);
      return { resumed_s: resumed, black_s: Number(gaps.black.toFixed(2)), new_pc: newPc, video_back_s: back };
    };
    const [atAda, atBo] = await Promise.all([measure(ada, 'ada', 'Bo'), measure(bo, 'bo', 'Ada')]);
    // Back on UDP (a new peer connection after a take-over, the old one otherwise).
    await assertUdp(ada);
    await assertUdp(bo);
    // Ada's client sends again what the room's server had not processed, her last words
    // too when the snapshot was older than them, before anything new: once her next
    // message is in, each page shows her last words once.
    await say(ada, `back ${i}`);
    for (const p of [ada, bo]) {
      assert.equal(await shown(p, `back ${i}`), 1);
      assert.equal(await shown(p, last), 1, `run ${i + 1}: ${p === ada ? 'Ada' : 'Bo'} shows "${last}" once: ${JSON.stringify(await messages(p))}`);
    }
    await exited;
    const exitedAfter = signal === 'SIGKILL' ? '' : `; exited within ${(Date.now() - killed) / 1000} s`;
    const owner = redis('get', `sori:room:${room}:session`);
    console.log(`# run ${i + 1}: ${signal} ${victim}; room now on ${owner}; at Ada ${JSON.stringify(atAda)}, at Bo ${JSON.stringify(atBo)}`
      + exitedAfter);
    for (const [name, page] of Object.entries({ ada, bo })) {
      assert.deepEqual(await presenceSince(page, before[name]), [], `run ${i + 1}: ${name} saw no one leave or join`);
      assert.equal((await snapshot(page)).joins, before[name].joins, `run ${i + 1}: ${name} kept her place (no join again)`);
      assert.equal(await page.evaluate(() => window.sori.me), ids[name], `run ${i + 1}: ${name} is the participant she was`);
    }
    assert.notEqual(owner, victim, `run ${i + 1}: the room lives on the survivor`);
    runs.push({ ada: atAda, bo: atBo });
    await ada.context().close();
    await bo.context().close();
    await startServer(victim);
  }
  return runs;
}

const summary = (runs, who, k) => stats(runs.map((r) => r[who][k]));

test('the session server relaying a browser killed: it resumes on the room\'s server, its media untouched', async () => {
  const runs = await killRuns('s2');
  console.log(`# relaying session server SIGKILL, ${RUNS} times: Bo resumed ${JSON.stringify(summary(runs, 'bo', 'resumed_s'))} s after the kill; `
    + `black at Bo ${JSON.stringify(summary(runs, 'bo', 'black_s'))} s, at Ada ${JSON.stringify(summary(runs, 'ada', 'black_s'))} s`);
  for (const r of runs) {
    assert.ok(r.bo.resumed_s <= 10, `Bo resumed within 10 s (${r.bo.resumed_s})`);
    assert.equal(r.bo.new_pc, false, 'Bo kept his peer connection');
    assert.equal(r.ada.new_pc, false, 'Ada kept hers');
  }
});

test('the room\'s session server killed: the other takes the room over, everyone resumes there and gets video back', async () => {
  const runs = await killRuns('s1');
  console.log(`# room's session server SIGKILL, ${RUNS} times: resumed at Ada ${JSON.stringify(summary(runs, 'ada', 'resumed_s'))} s, `
    + `at Bo ${JSON.stringify(summary(runs, 'bo', 'resumed_s'))} s; video back at Ada ${JSON.stringify(summary(runs, 'ada', 'video_back_s'))} s, `
    + `at Bo ${JSON.stringify(summary(runs, 'bo', 'video_back_s'))} s; black at Ada ${JSON.stringify(summary(runs, 'ada', 'black_s'))} s, at Bo ${JSON.stringify(summary(runs, 'bo', 'black_s'))} s`);
  for (const r of runs) {
    for (const who of ['ada', 'bo']) {
      assert.ok(r[who].resumed_s <= 10, `${who} resumed within 10 s (${r[who].resumed_s})`);
    }
  }
});

test('the room\'s session server stopped (SIGTERM): it hands the room over, everyone resumes on the other', async () => {
  const runs = await killRuns('s1', 'SIGTERM');
  console.log(`# room's session server SIGTERM, ${RUNS} times: resumed at Ada ${JSON.stringify(summary(runs, 'ada', 'resumed_s'))} s, `
    + `at Bo ${JSON.stringify(summary(runs, 'bo', 'resumed_s'))} s; video back at Ada ${JSON.stringify(summary(runs, 'ada', 'video_back_s'))} s, `
    + `at Bo ${JSON.stringify(summary(runs, 'bo', 'video_back_s'))} s; black at Ada ${JSON.stringify(summary(runs, 'ada', 'black_s'))} s, at Bo ${JSON.stringify(summary(runs, 'bo', 'black_s'))} s`);
  for (const r of runs) {
    for (const who of ['ada', 'bo']) {
      assert.ok(r[who].resumed_s <= 10, `${who} resumed within 10 s (${r[who].resumed_s})`);
    }
  }
});
