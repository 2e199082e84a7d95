// Shared pieces of the browser tests: a `sori serve` process, headless Chromium pages
// (Playwright) and headless Firefox pages (Puppeteer over WebDriver BiDi).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before } from 'node:test';
import { createRequire } from 'node:module';
import net from 'node:net';
import dgram from 'node:dgram';
import { chromium } from 'playwright-core';
import puppeteer from 'puppeteer-core';

const here = dirname(fileURLToPath(import.meta.url));
export const root = join(here, '..', '..');
export const artifacts = join(root, 'e2e', 'artifacts');
mkdirSync(artifacts, { recursive: true });

const SORI = process.env.SORI_BIN || join(process.env.CARGO_TARGET_DIR || join(root, 'target'), 'debug', 'sori');

/**
 * Spawns `sori ARGS` (inside network namespace `netns` when given); resolves with its log and
 * the first match of `pattern` in it.
 */
export async function spawnSori(args, pattern, { netns } = {}) {
  const [cmd, argv] = netns ? ['ip', ['netns', 'exec', netns, SORI, ...args]] : [SORI, args];
  const child = spawn(cmd, argv, {
    env: { ...process.env, NO_COLOR: '1', RUST_LOG: process.env.RUST_LOG || 'info,turn::server=off,turn::allocation=off' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const lines = createInterface({ input: child.stderr });
  const log = [];
  const match = await new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`sori exited with ${code}:\n${log.join('\n')}`)));
    lines.on('line', (line) => {
      log.push(line);
      if (/ (WARN|ERROR) /.test(line)) console.error(`[sori ${args[0]}] ${line}`);
      const m = line.match(pattern);
      if (m) resolve(m[1]);
    });
  });
  const stop = async () => {
    // A process killed by a signal has no exit code, only a signal code.
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  };
  return { match, log, stop, child };
}

/** Browser tests run against one `sori serve`, or with SORI_E2E_SPLIT=1 against a
 * `sori media` and a `sori signal` driving it over the control API (two processes). */
export const split = process.env.SORI_E2E_SPLIT === '1';

/**
 * Starts `sori serve` (or, split, `sori media` + `sori signal`) on free loopback ports;
 * resolves once it logs its address. The media server advertises 127.0.0.1 unless `advertise`
 * is false (then: its own default); `media` are flags of the media server (`sori serve`'s,
 * or split, `sori media`'s).
 */
export async function startServer(extraArgs = [], { advertise = true, media: mediaExtra = [] } = {}) {
  const mediaArgs = ['--rtc-port', '0', ...mediaExtra];
  // Several servers run at once: none takes the fixed TURN port.
  const turnArgs = ['--no-turn'];
  if (advertise) mediaArgs.push('--advertise-ip', '127.0.0.1');
  let media = null;
  let web;
  if (split) {
    media = await spawnSori(['media', '--kurento-listen', '127.0.0.1:0', ...mediaArgs], /control API on (ws:\/\/\S+)/);
    web = await spawnSori(['signal', '--listen', '127.0.0.1:0', '--media', media.match, ...extraArgs], /listening on (http:\/\/\S+)/);
  } else {
    web = await spawnSori(['serve', '--listen', '127.0.0.1:0', ...mediaArgs, ...turnArgs, ...extraArgs], /listening on (http:\/\/\S+)/);
  }
  const url = web.match;
  return {
    url,
    log: web.log,
    mediaLog: media ? media.log : [],
    async metrics() {
      let text = await (await fetch(url + '/metrics')).text();
      // Split: the media counters come from the media server's own /metrics.
      if (media) text += await (await fetch(media.match.replace(/^ws:/, 'http:').replace(/\/[^/]*$/, '/metrics'))).text();
      const value = (name) => Number((text.match(new RegExp(`^${name} (\\d+)$`, 'm')) || [])[1]);
      return { text, value };
    },
    async stop() {
      await web.stop();
      if (media) await media.stop();
    },
  };
}

/**
 * Launches Debian's Chromium with a fake camera and microphone. `loopback: false` leaves out the
 * flags that let WebRTC use 127.0.0.1, as in a real user's browser.
 */
export async function launchBrowser({ loopback = true } = {}) {
  return chromium.launch(launchOptions(loopback));
}

/** A browser whose process the test can kill: `{ browser, kill() }`. */
export async function launchKillableBrowser() {
  const server = await chromium.launchServer(launchOptions());
  const browser = await chromium.connect(server.wsEndpoint());
  return { browser, kill: () => server.process().kill('SIGKILL') };
}

export function launchOptions(loopback = true) {
  const webrtc = loopback
    ? ['--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns']
    : [];
  return {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
      '--autoplay-policy=no-user-gesture-required',
      ...webrtc,
    ],
  };
}

const consoles = new WeakMap();

/** What the web client of `page` (a `joinPage` page) logged since `since` (ms since the epoch),
 * the last `n` lines. */
export function consoleOf(page, since = 0, n = 30) {
  return (consoles.get(page) || []).filter((l) => Number(l.split(' ', 1)[0]) >= since).slice(-n);
}

/** Opens the web client in a fresh context (its own devices and storage) and joins.
 * `prepare(page)`, when given, runs before the page loads (to route its socket, say). */
export async function joinPage(browser, serverUrl, room, name, extra = '', prepare = null) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`[${name}] page error:`, e.message));
  // The client's own errors and warnings, to read when a test fails; with SORI_E2E_CONSOLE,
  // everything it logs, with the time.
  // The last lines it logged, for a failing test to print (`consoleOf`).
  const kept = [];
  consoles.set(page, kept);
  page.on('console', (m) => {
    kept.push(`${Date.now()} ${m.type()}: ${m.text()}`);
    if (kept.length > 200) kept.shift();
    if (process.env.SORI_E2E_CONSOLE) console.error(`[${name}] ${Date.now()} ${m.type()}: ${m.text()}`);
    else if (m.type() === 'error' || m.type() === 'warning') console.error(`[${name}] console ${m.type()}:`, m.text());
  });
  page.on('dialog', (d) => { throw new Error(`[${name}] unexpected dialog: ${d.message()}`); });
  if (prepare) await prepare(page);
  await page.goto(`${serverUrl}/?room=${encodeURIComponent(room)}&name=${encodeURIComponent(name)}&autojoin=1${extra}`);
  return page;
}

/**
 * Launches Debian's Firefox ESR, headless, driven over WebDriver BiDi, with a fake camera and
 * microphone that need no permission prompt. `media.peerconnection.ice.loopback` lets WebRTC use
 * 127.0.0.1, as Chromium's loopback flags do in `launchOptions`.
 */
export function launchFirefox() {
  return puppeteer.launch({
    browser: 'firefox',
    executablePath: process.env.FIREFOX || '/usr/bin/firefox-esr',
    headless: true,
    extraPrefsFirefox: {
      'media.navigator.streams.fake': true,
      'media.navigator.permission.disabled': true,
      'permissions.default.camera': 1,
      'permissions.default.microphone': 1,
      'media.peerconnection.ice.loopback': true,
      // Remote tiles play with sound; without a click Firefox would block them.
      'media.autoplay.default': 0,
    },
  });
}

/** `joinPage` for Firefox: the web client in a fresh browser context, joined. */
export async function joinFirefoxPage(browser, serverUrl, room, name, extra = '') {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  await page.setViewport({ width: 1280, height: 800 });
  page.on('pageerror', (e) => console.error(`[${name}] page error:`, e.message));
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warn') console.error(`[${name}] console ${m.type()}:`, m.text());
  });
  page.on('dialog', (d) => { throw new Error(`[${name}] unexpected dialog: ${d.message()}`); });
  await page.goto(`${serverUrl}/?room=${encodeURIComponent(room)}&name=${encodeURIComponent(name)}&autojoin=1${extra}`);
  return page;
}

/**
 * Evaluates `fn(arg)` in `page` every 100 ms until it returns something truthy, and returns
 * that; fails after `timeout` ms. Works for Playwright's and Puppeteer's pages alike, whose
 * `waitForFunction`s take their arguments in different orders.
 */
export async function pollPage(page, fn, arg, timeout = 20000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await page.evaluate(fn, arg);
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`not true within ${timeout} ms: ${fn}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Waits until `page` decodes video frames and receives audio packets from `participant`, and
 * both keep coming; resolves with the counts (`window.sori.inboundFrom`). Decoded frames come
 * from the receiver's statistics, which Firefox keeps too (its `getVideoPlaybackQuality()`
 * stays 0 for a MediaStream).
 */
export async function waitForMediaFrom(page, participant, timeout = 20000) {
  const first = await pollPage(page, async (who) => {
    const m = await window.sori.inboundFrom(who);
    return m.videoFrames > 5 && m.audioPackets > 0 && m;
  }, participant, timeout);
  return pollPage(page, async ([who, n]) => {
    const m = await window.sori.inboundFrom(who);
    return m.videoFrames > n.videoFrames + 5 && m.audioPackets > n.audioPackets && m;
  }, [participant, first], timeout);
}

/** A selected candidate pair, e.g. `host/udp 127.0.0.1:40000 → host/udp 127.0.0.1:51234`. */
export function describePair(p) {
  if (!p) return 'no selected candidate pair';
  const side = (c) => `${c.type}/${c.protocol}${c.relayProtocol ? `(relayed over ${c.relayProtocol})` : ''} ${c.address}:${c.port}`;
  return `${side(p.local)} → ${side(p.remote)}`;
}

/**
 * What carries the media of a selected candidate pair from this browser: `udp`, `tcp` (ICE-TCP),
 * or `turn/tcp` and `turn/tls` when a relayed candidate reaches its TURN server that way.
 */
export function transportOf(p) {
  if (!p) return 'none';
  const viaTurn = p.local.relayProtocol && p.local.relayProtocol !== 'udp';
  return viaTurn ? `turn/${p.local.relayProtocol}` : p.local.protocol;
}

/** Asserts that the selected candidate pair `pair` of `who` carries media over UDP. */
export function assertUdpPair(pair, who) {
  assert.equal(transportOf(pair), 'udp', `${who}: media over ${describePair(pair)}`);
}

/**
 * Asserts that the web client on `page` (Playwright's or Puppeteer's) carries its media over
 * UDP: a call that fell back to ICE-TCP still works, so only this tells the two apart. The
 * browser nominates the first candidate pair that answers and moves to a better one (UDP)
 * once that answers too, which on a loaded machine can come a little later: a pair that is
 * not UDP yet gets `within` ms to become it, and the change is logged.
 */
export async function assertUdp(page, within = 5000) {
  const who = new URL(page.url()).searchParams.get('name') || page.url();
  const first = await page.evaluate(() => window.sori.selectedPair());
  let pair = first;
  const deadline = Date.now() + within;
  while (transportOf(pair) !== 'udp' && Date.now() < deadline) {
    await new Promise((r) => { setTimeout(r, 100); });
    pair = await page.evaluate(() => window.sori.selectedPair());
  }
  if (transportOf(first) !== 'udp') {
    console.log(`# ${who}: media over ${describePair(first)} at first, then ${describePair(pair)}`);
    const pairs = await page.evaluate(() => window.sori.candidatePairs?.() ?? []);
    for (const p of pairs) console.log(`#   ${who}: ${p}`);
  }
  assertUdpPair(pair, who);
}

/** Total decoded frames of the remote video of `participant` (0 when it is not there). */
export function remoteFrames(page, participant) {
  return page.evaluate((who) => {
    const v = document.querySelector(`[data-testid="remote-video"][data-participant="${who}"]`);
    return v ? v.getVideoPlaybackQuality().totalVideoFrames : 0;
  }, participant);
}

/** Waits until `participant`'s video on `page` decodes frames and keeps decoding: one and the
 * same video element decodes over 5 frames in all and 5 more after it was first seen. (A tile
 * replaced meanwhile, as when media is connected anew, is watched from its own start: the old
 * element's count says nothing of the new one.) */
export async function waitForVideoFrom(page, participant, timeout = 20000) {
  const token = `${participant}-${Math.random()}`;
  await page.waitForFunction(([who, key]) => {
    const v = document.querySelector(`[data-testid="remote-video"][data-participant="${who}"]`);
    if (!v) return false;
    const n = v.getVideoPlaybackQuality().totalVideoFrames;
    window.__videoWaits = window.__videoWaits || new Map();
    const seen = window.__videoWaits.get(key);
    if (!seen || seen.element !== v) {
      window.__videoWaits.set(key, { element: v, from: n });
      return false;
    }
    if (n > 5 && n > seen.from + 5) {
      window.__videoWaits.delete(key);
      return true;
    }
    return false;
  }, [participant, token], { timeout, polling: 100 });
}

/**
 * Registers a `sori serve` and a browser for the test file: started before its tests, stopped
 * after. Returns an object whose `server` and `browser` are set once started.
 */
export function serverAndBrowser(extraArgs = []) {
  const ctx = { server: null, browser: null };
  before(async () => {
    ctx.server = await startServer(extraArgs);
    ctx.browser = await launchBrowser();
  });
  after(async () => {
    await ctx.browser?.close();
    await ctx.server?.stop();
  });
  return ctx;
}

const AXE = createRequire(import.meta.url).resolve('axe-core/axe.min.js');

/** axe-core's serious and critical violations on `page`, as "rule: target" lines. */
export async function violations(page) {
  await page.addScriptTag({ path: AXE });
  const result = await page.evaluate(async () => window.axe.run(document, { resultTypes: ['violations'] }));
  return result.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .flatMap((v) => v.nodes.map((n) => `${v.id} (${v.impact}): ${n.target.join(' ')} — ${n.failureSummary}`));
}

/** Ten seconds of "speech" (a voice-like tone in 4 Hz syllables), 48 kHz mono 16-bit WAV;
 * `quiet`: a faint hiss (about -70 dBFS) instead, a microphone in a quiet room. */
export function speechWav(path, quiet = false) {
  const rate = 48000;
  const n = rate * 10;
  const buf = Buffer.alloc(44 + n * 2);
  buf.write('RIFF', 0); buf.writeUInt32LE(36 + n * 2, 4); buf.write('WAVE', 8);
  buf.write('fmt ', 12); buf.writeUInt32LE(16, 16); buf.writeUInt16LE(1, 20); buf.writeUInt16LE(1, 22);
  buf.writeUInt32LE(rate, 24); buf.writeUInt32LE(rate * 2, 28); buf.writeUInt16LE(2, 32); buf.writeUInt16LE(16, 34);
  buf.write('data', 36); buf.writeUInt32LE(n * 2, 40);
  for (let i = 0; i < n; i++) {
    const t = i / rate;
    const syllable = (t % 0.25) < 0.17 ? 1 : 0.25;
    const f = 180 + 60 * Math.sin(2 * Math.PI * 0.7 * t);
    const v = quiet
      ? 0.0003 * (Math.random() * 2 - 1)
      : (0.35 * syllable * (Math.sin(2 * Math.PI * f * t) + 0.4 * Math.sin(2 * Math.PI * 2.3 * f * t))) / 1.4;
    buf.writeInt16LE(Math.round(v * 32767), 44 + i * 2);
  }
  writeFileSync(path, buf);
}

/** A free loopback TCP port and a free UDP port. */
export async function freePorts() {
  const tcp = await new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
  const udp = await new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    s.bind(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
  return { kurento: tcp, rtc: udp };
}

/** What a page knows before a scenario: its `joined` count and the presence changes seen. */
export const snapshot = (page) => page.evaluate(() => ({ joins: window.sori.joins, presence: window.sori.presence.length }));

/** The presence changes `page` saw since `before`. */
export const presenceSince = (page, before) => page.evaluate((n) => window.sori.presence.slice(n), before.presence);

/**
 * Starts timing the video `page` receives from `name`: every 100 ms, whether a new frame was
 * decoded and a new packet arrived. Like `window.sori.watchVideo`, but only a count that grows
 * is news: when the page makes a new peer connection its counters start again from 0, which
 * is no frame. Reset for each run.
 */
export const watchMedia = (page, name) => page.evaluate((who) => {
  if (window.__media) clearInterval(window.__media.timer);
  const start = performance.now();
  const track = () => ({ last: -1, at: start, gaps: [], reset: null });
  const w = { frames: track(), packets: track(), start };
  const see = (t, value, now) => {
    if (t.last >= 0 && value < t.last) { t.last = value; t.reset = now; return; }
    if (value === t.last) return;
    if (t.last >= 0 && now - t.at > 500) t.gaps.push((now - t.at) / 1000);
    if (t.reset !== null && t.back === undefined) t.back = (now - start) / 1000;
    t.last = value;
    t.at = now;
  };
  w.timer = setInterval(async () => {
    const v = await window.sori.videoFrom(who);
    const now = performance.now();
    see(w.frames, v.framesDecoded, now);
    see(w.packets, v.packetsReceived, now);
  }, 100);
  window.__media = w;
}, name);

/** Since `watchMedia`: seconds without a new frame (`black`) and without a new packet
 * (`packetGap`), counting stretches over half a second (one still open counts up to now). */
export const mediaGaps = (page) => page.evaluate(() => {
  const sum = (t) => {
    const gaps = [...t.gaps];
    const open = performance.now() - t.at;
    if (t.last < 0 || open > 500) gaps.push(open / 1000);
    return gaps.reduce((a, b) => a + b, 0);
  };
  const w = window.__media;
  return { black: sum(w.frames), packetGap: sum(w.packets) };
});

/** min / median / max of the numbers in `xs`, to two decimals (null: none). */
export const stats = (xs) => {
  const s = xs.filter((x) => typeof x === 'number').sort((a, b) => a - b);
  if (s.length === 0) return null;
  const r = (x) => Number(x.toFixed(2));
  return { min: r(s[0]), median: r(s[Math.floor(s.length / 2)]), max: r(s[s.length - 1]) };
};

/** Waits until `check()` (may be async) is true, checking every 50 ms; throws after `timeout`
 * ms naming `what`. */
export async function until(what, check, timeout = 20000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`not within ${timeout} ms: ${what}`);
    await new Promise((r) => { setTimeout(r, 50); });
  }
}
