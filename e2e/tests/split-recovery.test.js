// Split mode (`sori signal` driving `sori media` over the control API) when the media server
// goes away. Each scenario runs five times and prints the black-video seconds the other
// participant saw and how long until everyone was back.
//
//   browsers ── HTTP/WebSocket ── sori signal ── proxy (the test's) ── sori media
//       └──────────────────── media (UDP) ───────────────────────────────┘
//
// (a) The control connection is cut for 3 s at the proxy: the session is resumed, the media
//     never stops, nobody leaves or joins.
// (b) `sori media` is killed (SIGKILL) and started again on the same ports: everyone's media
//     is made again, with video within 10 s, and nobody leaves the room.
// (c) `sori media` is frozen (SIGSTOP): offers fail at the request timeout with an error the
//     page shows, /healthz says unhealthy, a join in another room is not held up; after
//     SIGCONT everyone has media again.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import {
  spawnSori, split, launchBrowser, joinPage, pollPage, waitForVideoFrom, consoleOf, freePorts, snapshot,
  presenceSince, watchMedia, mediaGaps, stats,
} from './helpers.js';

const opts = split ? {} : { skip: 'split-mode recovery: run with SORI_E2E_SPLIT=1 (sori media + sori signal)' };
const RUNS = 5;
const CUT_MS = 3000;

const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });
const ctx = { media: null, signal: null, proxy: null, browser: null, ports: null };

/** A TCP proxy to `port` whose connections can be cut: `cut()` destroys them and refuses new
 * ones (accepted, then closed at once) until `restore()`. */
function startProxy(port) {
  const sockets = new Set();
  let open = true;
  const server = net.createServer((client) => {
    if (!open) { client.destroy(); return; }
    const upstream = net.connect(port, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {});
    }
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve({
      port: server.address().port,
      cut() { open = false; for (const s of sockets) s.destroy(); },
      restore() { open = true; },
      close: () => { for (const s of sockets) s.destroy(); server.close(); },
    }));
  });
}

const startMedia = () => spawnSori(
  ['media', '--kurento-listen', `127.0.0.1:${ctx.ports.kurento}`, '--rtc-port', String(ctx.ports.rtc),
    '--advertise-ip', '127.0.0.1', '--no-rtc-tcp'],
  /control API on (ws:\/\/\S+)/,
);

before(async () => {
  if (!split) return;
  ctx.ports = await freePorts();
  ctx.media = await startMedia();
  ctx.proxy = await startProxy(ctx.ports.kurento);
  ctx.signal = await spawnSori(
    ['signal', '--listen', '127.0.0.1:0', '--media', `ws://127.0.0.1:${ctx.proxy.port}/kurento`],
    /listening on (http:\/\/\S+)/,
  );
  ctx.browser = await launchBrowser();
});
after(async () => {
  // The session server's log, to read when a run fails.
  if (process.env.SORI_E2E_SERVER_LOG && ctx.signal) {
    (await import('node:fs')).writeFileSync(process.env.SORI_E2E_SERVER_LOG, ctx.signal.log.join('\n'));
    if (ctx.media) (await import('node:fs')).writeFileSync(`${process.env.SORI_E2E_SERVER_LOG}.media`, ctx.media.log.join('\n'));
  }
  await ctx.browser?.close();
  await ctx.signal?.stop();
  ctx.proxy?.close();
  if (ctx.media) {
    ctx.media.child.kill('SIGCONT');
    await ctx.media.stop();
  }
});

/** Lines of the session server's log matching `re` so far. */
const logged = (re) => ctx.signal.log.filter((l) => re.test(l)).length;

/** Waits until the session server has logged `re` more than `n` times. */
async function logs(re, n, timeout) {
  const deadline = Date.now() + timeout;
  while (logged(re) <= n) {
    if (Date.now() > deadline) throw new Error(`not logged within ${timeout} ms: ${re}`);
    await sleep(50);
  }
}

/** Two participants in `room` receiving each other's video. */
async function pair(room) {
  const ada = await joinPage(ctx.browser, ctx.signal.match, room, 'Ada');
  const bo = await joinPage(ctx.browser, ctx.signal.match, room, 'Bo');
  await waitForVideoFrom(bo, 'Ada', 30000);
  await waitForVideoFrom(ada, 'Bo', 30000);
  return { ada, bo };
}

/** The toasts a page shows from now on, with when: `window.__toasts`. */
const recordToasts = (page) => page.evaluate(() => {
  window.__toasts = [];
  const t = document.getElementById('toast');
  // One shown already (before the page could be watched: an error right after the join).
  if (!t.hidden && t.textContent) window.__toasts.push({ text: t.textContent, at: Date.now() });
  new MutationObserver(() => {
    if (!t.hidden && t.textContent) window.__toasts.push({ text: t.textContent, at: Date.now() });
  }).observe(t, { childList: true, characterData: true, subtree: true, attributes: true });
});

/** Black-video and packet-gap seconds at `bo` for Ada's video over `ms` of a quiet call. */
async function baseline(bo, ms) {
  await watchMedia(bo, 'Ada');
  await sleep(ms);
  return mediaGaps(bo);
}

const RESUMED = /media server session resumed/;
const SESSION_GONE = /media server session gone/;

test('(a) a control connection cut for 3 s: the session is resumed, media never stops', opts, async () => {
  const { ada, bo } = await pair('cut');
  const before = { ada: await snapshot(ada), bo: await snapshot(bo) };
  const runs = [];
  for (let i = 0; i < RUNS; i += 1) {
    // The same span without a cut, for comparison: what the machine's load alone costs.
    const quiet = await baseline(bo, CUT_MS + 1500);
    await watchMedia(bo, 'Ada');
    const resumed = logged(RESUMED);
    ctx.proxy.cut();
    await sleep(CUT_MS);
    ctx.proxy.restore();
    const restored = Date.now();
    await logs(RESUMED, resumed, 10000);
    const resumedAfter = (Date.now() - restored) / 1000;
    // Video for a second more.
    await sleep(1000);
    const atBo = await mediaGaps(bo);
    runs.push({
      black: atBo.black, packet_gap: atBo.packetGap, resumed: resumedAfter,
      quiet_black: quiet.black, quiet_packet_gap: quiet.packetGap,
    });
  }
  const round = (r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, Number(v.toFixed(2))]));
  const report = {
    runs: runs.map(round),
    black_at_bo_s: stats(runs.map((r) => r.black)),
    packet_gap_at_bo_s: stats(runs.map((r) => r.packet_gap)),
    quiet_black_at_bo_s: stats(runs.map((r) => r.quiet_black)),
    resumed_after_restore_s: stats(runs.map((r) => r.resumed)),
    session_gone: logged(SESSION_GONE),
  };
  console.log(`# control connection cut ${CUT_MS / 1000} s, ${RUNS} times: ${JSON.stringify(report)}`);

  assert.equal(report.session_gone, 0, 'the media server kept the session every time');
  for (const [name, page] of Object.entries({ ada, bo })) {
    assert.deepEqual(await presenceSince(page, before[name]), [], `${name} saw no one leave or join`);
    assert.equal((await snapshot(page)).joins, before[name].joins, `${name} did not join again`);
  }
  // Media stopped for the cut would leave a gap of 3 s at least; a loaded machine's own
  // hiccups reach about 1 s (the quiet spans).
  for (const r of runs) {
    assert.ok(r.packet_gap < 2, `Ada's video kept arriving at Bo (${r.packet_gap.toFixed(2)} s without packets)`);
  }
  assert.ok(report.black_at_bo_s.median < 1, `Ada's video kept playing at Bo (median ${report.black_at_bo_s.median} s without frames)`);
  await ada.context().close();
  await bo.context().close();
});

test('(b) sori media killed and restarted: everyone back with video within 10 s, nobody left', opts, async () => {
  const { ada, bo } = await pair('restart');
  const before = { ada: await snapshot(ada), bo: await snapshot(bo) };
  const runs = [];
  for (let i = 0; i < RUNS; i += 1) {
    await watchMedia(bo, 'Ada');
    const gone = logged(SESSION_GONE);
    const exited = new Promise((r) => ctx.media.child.once('exit', r));
    const killed = Date.now();
    ctx.media.child.kill('SIGKILL');
    await exited;
    ctx.media = await startMedia();
    const up = Date.now();
    const back = await Promise.all([waitForVideoFrom(bo, 'Ada', 20000), waitForVideoFrom(ada, 'Bo', 20000)])
      .then(() => (Date.now() - up) / 1000, () => null);
    const atBo = await mediaGaps(bo);
    const firstFrame = await bo.evaluate(() => window.__media.frames.back ?? null);
    runs.push({
      back_after_restart_s: back, back_after_kill_s: back === null ? null : (Date.now() - killed) / 1000,
      black_at_bo_s: atBo.black, packet_gap_at_bo_s: atBo.packetGap, session_gone: logged(SESSION_GONE) > gone,
      first_new_frame_at_bo_s: firstFrame,
    });
    assert.notEqual(back, null, `run ${i + 1}: both pages decode video again within 20 s of the restart`);
  }
  const report = {
    runs: runs.map((r) => ({
      back: r.back_after_restart_s, back_after_kill: r.back_after_kill_s, black: Number(r.black_at_bo_s.toFixed(2)),
      packet_gap: Number(r.packet_gap_at_bo_s.toFixed(2)), first_new_frame: r.first_new_frame_at_bo_s,
    })),
    first_new_frame_at_bo_after_kill_s: stats(runs.map((r) => r.first_new_frame_at_bo_s)),
    back_after_kill_s: stats(runs.map((r) => r.back_after_kill_s)),
    back_after_restart_s: stats(runs.map((r) => r.back_after_restart_s)),
    black_at_bo_s: stats(runs.map((r) => r.black_at_bo_s)),
  };
  console.log(`# sori media SIGKILL + restart, ${RUNS} times: ${JSON.stringify(report)}`);

  for (const r of runs) {
    assert.ok(r.session_gone, 'the session server found the session gone and made the media again');
    assert.ok(r.back_after_restart_s <= 10, `back with video within 10 s of the restart (${r.back_after_restart_s} s)`);
  }
  for (const [name, page] of Object.entries({ ada, bo })) {
    assert.deepEqual(await presenceSince(page, before[name]), [], `${name} saw no one leave or join`);
    assert.equal((await snapshot(page)).joins, before[name].joins, `${name} stayed in the room (no join again)`);
  }
  await ada.context().close();
  await bo.context().close();
});

/** /healthz of the session server: its status code, within 5 s. */
async function health() {
  const res = await fetch(`${ctx.signal.match}/healthz`, { signal: AbortSignal.timeout(5000) });
  return res.status;
}

test('(c) sori media frozen: offers fail at the timeout with an error shown, other rooms are not held up; all recover after SIGCONT', opts, async () => {
  const { ada, bo } = await pair('freeze');
  const before = { ada: await snapshot(ada), bo: await snapshot(bo) };
  const runs = [];
  for (let i = 0; i < RUNS; i += 1) {
    await watchMedia(bo, 'Ada');
    ctx.media.child.kill('SIGSTOP');
    const frozen = Date.now();
    // A newcomer in the frozen room, and one in another room at the same time.
    const [cy, dee] = await Promise.all([
      joinPage(ctx.browser, ctx.signal.match, 'freeze', `Cy${i}`),
      joinPage(ctx.browser, ctx.signal.match, `other${i}`, `Dee${i}`),
    ]);
    await Promise.all([recordToasts(cy), recordToasts(dee)]);
    const joined = async (page) => {
      await pollPage(page, () => window.sori.joins > 0, null, 15000);
      return (Date.now() - frozen) / 1000;
    };
    const [cyJoined, deeJoined] = await Promise.all([joined(cy), joined(dee)]);
    const failed = async (page) => {
      const t = await pollPage(page, () => window.__toasts.find((x) => /media server/i.test(x.text)), null, 25000);
      return { after_s: (t.at - frozen) / 1000, text: t.text };
    };
    const [cyFailed, deeFailed] = await Promise.all([failed(cy), failed(dee)]);
    const healthz = await health();
    ctx.media.child.kill('SIGCONT');
    const thawed = Date.now();
    const missing = [];
    const waitFor = (what, p) => p.catch(() => { missing.push(what); });
    await Promise.all([
      waitFor(`Ada's video at Cy${i}`, waitForVideoFrom(cy, 'Ada', 30000)),
      waitFor(`Cy${i}'s video at Bo`, waitForVideoFrom(bo, `Cy${i}`, 30000)),
      waitFor("Ada's video at Bo", waitForVideoFrom(bo, 'Ada', 30000)),
      waitFor(`Dee${i}'s media sent`, pollPage(dee, async () => (await window.sori.outbound()).videoPackets > 50, null, 30000)),
    ]);
    const back = missing.length ? null : (Date.now() - thawed) / 1000;
    const atBo = await mediaGaps(bo);
    const healthAfter = await health();
    runs.push({
      cy_joined_s: cyJoined, dee_joined_s: deeJoined, cy_offer_failed_s: cyFailed.after_s,
      dee_offer_failed_s: deeFailed.after_s, error: cyFailed.text, healthz_frozen: healthz,
      back_after_sigcont_s: back, black_at_bo_s: atBo.black, healthz_after: healthAfter,
    });
    if (missing.length) {
      // What the pages and the session server did meanwhile, to read when this fails.
      const since = new Date(frozen).toISOString();
      const server = ctx.signal.log.filter((l) => l.slice(0, since.length) >= since).slice(-40);
      for (const [name, page] of Object.entries({ ada, bo, [`Cy${i}`]: cy })) {
        console.log(`# ${name} since SIGSTOP:\n${consoleOf(page, frozen).map((l) => `#   ${l}`).join('\n')}`);
      }
      console.log(`# sori signal since SIGSTOP:\n${server.map((l) => `#   ${l}`).join('\n')}`);
    }
    await cy.context().close();
    await dee.context().close();
    assert.deepEqual(missing, [], `run ${i + 1}: everyone has media again within 30 s of SIGCONT`);
  }
  const pick = (k) => stats(runs.map((r) => r[k]));
  const report = {
    error_shown: runs[0].error,
    joined_s: pick('dee_joined_s'), offer_failed_same_room_s: pick('cy_offer_failed_s'),
    offer_failed_other_room_s: pick('dee_offer_failed_s'), back_after_sigcont_s: pick('back_after_sigcont_s'),
    black_at_bo_s: pick('black_at_bo_s'), healthz_frozen: runs.map((r) => r.healthz_frozen),
  };
  console.log(`# sori media SIGSTOP, ${RUNS} times: ${JSON.stringify(report)}`);

  for (const r of runs) {
    assert.equal(r.healthz_frozen, 503, '/healthz says unhealthy while the media server is frozen');
    assert.equal(r.healthz_after, 200, '/healthz is healthy again after SIGCONT');
    assert.ok(r.cy_joined_s < 5 && r.dee_joined_s < 5, `joins are answered at once (${r.cy_joined_s} s, ${r.dee_joined_s} s)`);
    // The request timeout is 10 s; the page sees the error a moment later.
    assert.ok(r.cy_offer_failed_s <= 12, `the offer in the frozen room failed at the timeout (${r.cy_offer_failed_s} s)`);
    assert.ok(r.dee_offer_failed_s <= 12, `the offer in the other room was not held up (${r.dee_offer_failed_s} s)`);
  }
  const ids = { ada: await ada.evaluate(() => window.sori.me), bo: await bo.evaluate(() => window.sori.me) };
  for (const [name, page, other] of [['ada', ada, 'bo'], ['bo', bo, 'ada']]) {
    assert.equal((await snapshot(page)).joins, before[name].joins, `${name} stayed in the room`);
    const seen = (await presenceSince(page, before[name])).filter((p) => p.id === ids[other]);
    assert.deepEqual(seen, [], `${name} saw ${other} neither leave nor join`);
  }
  await ada.context().close();
  await bo.context().close();
});
