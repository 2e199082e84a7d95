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
import { rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { chromium } from 'playwright-core';
import { AccessToken } from 'livekit-server-sdk';
import { spawnSori, launchOptions, joinPage, waitForVideoFrom, assertUdp, pollPage } from '../tests/helpers.js';
import { unavailable, chromiumIn } from './netns.js';

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

function createNetwork() {
  for (const n of Object.values(ns)) {
    run('ip', 'netns', 'add', n);
    // No IPv6: its late link-local addresses make Chromium fail a page load under way.
    inNs(n, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1');
    inNs(n, 'ip', 'link', 'set', 'lo', 'up');
  }
  inNs(ns.wan, 'ip', 'link', 'add', 'br0', 'type', 'bridge');
  inNs(ns.wan, 'ip', 'addr', 'add', '10.93.0.1/24', 'dev', 'br0');
  inNs(ns.wan, 'ip', 'link', 'set', 'br0', 'up');
  for (const [host, addr] of [[ns.srv, SERVER_IP], [ns.ada, '10.93.0.20'], [ns.bo, '10.93.0.30']]) {
    const port = `${host.split('-').pop()}-w`;
    run('ip', 'link', 'add', port, 'netns', ns.wan, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host);
    inNs(ns.wan, 'ip', 'link', 'set', port, 'master', 'br0', 'up');
    inNs(host, 'ip', 'addr', 'add', `${addr}/24`, 'dev', 'eth0');
    inNs(host, 'ip', 'link', 'set', 'eth0', 'up');
    inNs(host, 'ip', 'route', 'add', 'default', 'via', '10.93.0.1');
  }
}

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

const ctx = { server: null, ada: null, bo: null, launchers: [] };

async function browserIn(n) {
  const o = launchOptions(false);
  o.args.push(`--unsafely-treat-insecure-origin-as-secure=${URL}`);
  const launcher = chromiumIn(n);
  ctx.launchers.push(launcher);
  return chromium.launch({ ...o, executablePath: launcher });
}

before(async () => {
  if (reason) return;
  createNetwork();
  ctx.server = await spawnSori(
    ['serve', '--listen', `${SERVER_IP}:8080`, '--api-key', KEY, '--api-secret', SECRET,
      '--rtc-port', '40000', '--advertise-ip', SERVER_IP, '--no-rtc-tcp', '--no-turn'],
    /listening on (http:\/\/\S+)/,
    { netns: ns.srv },
  );
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
});

async function join(browser, room, name) {
  const at = new AccessToken(KEY, SECRET, { identity: name, name, ttl: '10m' });
  at.addGrant({ roomJoin: true, room });
  return joinPage(browser, URL, room, name, `&token=${await at.toJwt()}`);
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
  await bo.evaluate(() => window.sori.watchVideo('Ada'));
  await ada.evaluate(() => window.sori.watchVideo('Bo'));
  const presenceBefore = (await bo.evaluate(() => window.sori.presence)).length;

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
  const presence = (await bo.evaluate(() => window.sori.presence)).slice(presenceBefore);
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
