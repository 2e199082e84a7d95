// Through NATs and firewalls: browsers in network namespaces behind masquerading routers reach
// `sori serve` on a "public" address (all inside namespaces this file creates; see netns.js).
// - both browsers behind symmetric NATs: a P2P call connects through Sori's TURN relay;
// - both behind address-preserving NATs: a P2P call connects directly (server-reflexive);
// - a browser whose firewall drops UDP joins an SFU room over ICE-TCP;
// - forged and expired TURN credentials get no relay;
// - coturn, sharing Sori's secret (`use-auth-secret`), relays a P2P call with the credentials
//   Sori issued.
import { test, describe, before, after } from 'node:test';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { chromium } from 'playwright-core';
import { spawnSori, launchOptions, joinPage, waitForVideoFrom, remoteFrames, artifacts } from '../tests/helpers.js';
import { unavailable, createNetwork, chromiumIn, SERVER_IP } from './netns.js';

const SECRET = 'nat-test-secret';
const METRICS_TOKEN = 'nat-test-metrics-token';
// This internet's "public" addresses are a documentation range (203.0.113.0/24), which Sori's
// TURN server refuses as a relay peer by default, as it does every non-public range: allow it,
// as an operator would allow a range of their own.
const TURN = ['--turn-secret', SECRET, '--turn-allow', '203.0.113.0/24'];
const reason = unavailable();
if (reason && process.env.CI) throw new Error(`the NAT tests must run in CI, but: ${reason}`);
if (reason) console.log(`skipping the NAT tests: ${reason}`);
const opts = reason ? { skip: reason } : {};

/**
 * Debian's coturn in namespace `ns`, on SERVER_IP:3478, checking Sori's REST-API credentials with
 * the shared secret; resolves once it listens.
 */
async function startCoturn(ns) {
  const child = spawn('ip', ['netns', 'exec', ns, 'turnserver', '-c', '/dev/null', '-n', '-v', '--log-file=stdout',
    '--simple-log', '--listening-ip', SERVER_IP, '--listening-port', '3478', '--use-auth-secret',
    '--static-auth-secret', SECRET, '--realm', 'sori.test', '--no-tls', '--no-dtls', '--no-cli',
    '--min-port', '50000', '--max-port', '50999'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const log = [];
  await new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`turnserver exited with ${code}:\n${log.join('\n')}`)));
    for (const stream of [child.stdout, child.stderr]) {
      createInterface({ input: stream }).on('line', (l) => {
        log.push(l);
        if (l.includes(`UDP listener opened on: ${SERVER_IP}:3478`)) resolve();
      });
    }
  });
  return {
    log,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/** A network of `nat` routers with `sori serve ARGS` (and coturn if asked) in its server namespace. */
function world(nat, serverArgs, { coturn = false } = {}) {
  const ctx = { net: null, server: null, coturn: null, url: null, browsers: [], launchers: [] };
  before(async () => {
    if (reason) return;
    ctx.net = createNetwork(nat);
    if (coturn) ctx.coturn = await startCoturn(ctx.net.ns.server);
    ctx.server = await spawnSori(
      // Anonymous joins on the test's own network, on purpose: --dev.
      // /metrics answers pages beyond loopback only with its token.
      ['serve', '--listen', `${SERVER_IP}:8080`, '--dev', '--metrics-token', METRICS_TOKEN,
        '--rtc-port', '40000', ...serverArgs],
      /listening on (http:\/\/\S+)/,
      { netns: ctx.net.ns.server },
    );
    ctx.url = `http://${SERVER_IP}:8080`;
  });
  after(async () => {
    for (const b of ctx.browsers) await b.close().catch(() => {});
    await ctx.server?.stop();
    await ctx.coturn?.stop();
    if (ctx.coturn) writeFileSync(join(artifacts, 'coturn.log'), ctx.coturn.log.join('\n'));
    ctx.net?.destroy();
    for (const l of ctx.launchers) rmSync(dirname(l), { recursive: true, force: true });
  });
  ctx.browserIn = async (host) => {
    // A real user's browser: no loopback or mDNS flags.
    const o = launchOptions(false);
    // The page is plain http on a non-local address, where browsers give no camera: a deployment
    // serves it over https; here the origin is declared secure instead.
    o.args.push(`--unsafely-treat-insecure-origin-as-secure=${ctx.url}`);
    const launcher = chromiumIn(ctx.net.ns[host]);
    ctx.launchers.push(launcher);
    const b = await chromium.launch({ ...o, executablePath: launcher });
    ctx.browsers.push(b);
    return b;
  };
  return ctx;
}

const pairOf = (page) => page.evaluate(() => window.sori.selectedPair());
const joinToFrame = (page) => page.evaluate(() => Math.round(window.sori.firstRemoteFrameAt - window.sori.startedAt));
const describePair = (p) => `${p.local.type}/${p.local.protocol}${p.local.relayProtocol ? `(${p.local.relayProtocol})` : ''} → ${p.remote.type}/${p.remote.protocol}`;

/** Two browsers, in namespaces a and b, in a P2P room; resolves with both pages once video flows both ways. */
async function p2pCall(ctx, room) {
  const [ba, bb] = [await ctx.browserIn('a'), await ctx.browserIn('b')];
  const a = await joinPage(ba, ctx.url, room, 'Ada', '&mode=p2p');
  const b = await joinPage(bb, ctx.url, room, 'Grace', '&mode=p2p');
  await waitForVideoFrom(a, 'Grace', 30000);
  await waitForVideoFrom(b, 'Ada', 30000);
  // And keeps flowing: 40 more frames (about two seconds) on each side.
  for (const [page, who] of [[a, 'Grace'], [b, 'Ada']]) {
    const n = await remoteFrames(page, who);
    await page.waitForFunction(([who, n]) => {
      const v = document.querySelector(`[data-testid="remote-video"][data-participant="${who}"]`);
      return v.getVideoPlaybackQuality().totalVideoFrames >= n + 40;
    }, [who, n], { timeout: 30000, polling: 100 });
  }
  return { a, b };
}

/** Gathers candidates on `page` with one ICE server and relay-only policy: the candidates and errors. */
function gatherRelay(page, server) {
  return page.evaluate(async (server) => {
    const pc = new RTCPeerConnection({ iceServers: [server], iceTransportPolicy: 'relay' });
    const errors = [];
    const candidates = [];
    pc.onicecandidateerror = (e) => errors.push(e.errorCode);
    pc.onicecandidate = (e) => { if (e.candidate && e.candidate.candidate) candidates.push(e.candidate.candidate); };
    const done = new Promise((r) => { pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') r(); }; });
    pc.createDataChannel('probe');
    await pc.setLocalDescription();
    await done;
    pc.close();
    return { errors, candidates };
  }, server);
}

/** A browser in the UDP-blocked namespace and one behind NAT A in an SFU room: video both ways. */
async function blockedJoins(ctx, room) {
  const [bb, ba] = [await ctx.browserIn('blocked'), await ctx.browserIn('a')];
  const blocked = await joinPage(bb, ctx.url, room, 'Linus', '&mode=sfu');
  const other = await joinPage(ba, ctx.url, room, 'Ada', '&mode=sfu');
  await waitForVideoFrom(blocked, 'Ada', 30000);
  await waitForVideoFrom(other, 'Linus', 30000);
  const p = await pairOf(blocked);
  console.log(`UDP blocked, SFU room "${room}": ${describePair(p)}; join → first frame ${await joinToFrame(blocked)} ms`);
  return { p };
}

const credential = (username) => createHmac('sha1', SECRET).update(username).digest('base64');

describe('behind symmetric NATs, with Sori\'s own TURN server', opts, () => {
  const ctx = world('symmetric', TURN);

  test('a P2P call connects through the TURN relay and video flows both ways', opts, async () => {
    const { a, b } = await p2pCall(ctx, 'relayed');
    const [pa, pb] = [await pairOf(a), await pairOf(b)];
    console.log(`symmetric NATs, P2P: Ada ${describePair(pa)}, Grace ${describePair(pb)}; join → first frame ${await joinToFrame(a)} / ${await joinToFrame(b)} ms`);
    for (const p of [pa, pb]) assert.ok(p.local.type === 'relay' || p.remote.type === 'relay', `a relayed pair, got ${describePair(p)}`);
    const servers = await a.evaluate(() => window.sori.iceServers());
    assert.ok(servers.some((s) => [].concat(s.urls).some((u) => u.startsWith('turn:')) && s.username && s.credential), JSON.stringify(servers));
    // Each browser also offered its LAN address (192.168.x.2) as a host candidate, and the other
    // asked the relay for a permission toward it: refused, as a private address.
    // (Fetched by the page: only the namespaces can reach the server's address.)
    assert.equal(await a.evaluate(() => fetch('/metrics').then((r) => r.status)), 401, 'no token, no metrics');
    const metrics = await a.evaluate((t) => fetch('/metrics', { headers: { Authorization: `Bearer ${t}` } })
      .then((r) => r.text()), METRICS_TOKEN);
    const value = (name) => Number((metrics.match(new RegExp(`^${name} (\\d+)$`, 'm')) || [])[1]);
    console.log(`symmetric NATs, P2P: TURN allocations ${value('sori_turn_allocations')}, peers refused ${value('sori_turn_peers_refused_total')}`);
    assert.ok(value('sori_turn_allocations') >= 2, metrics);
    assert.ok(value('sori_turn_peers_refused_total') >= 1, metrics);
  });

  test('a browser whose firewall drops UDP joins an SFU room, its media over TCP', opts, async () => {
    const { p } = await blockedJoins(ctx, 'tcp-or-turn');
    // With TURN on offer the browser may pick TURN over TCP or the media server's own TCP
    // candidate; either way no UDP leaves it.
    assert.ok(p.local.protocol === 'tcp' || p.local.relayProtocol === 'tcp', describePair(p));
  });

  test('forged and expired TURN credentials get no relay; fresh ones do', opts, async () => {
    const page = await joinPage(await ctx.browserIn('a'), ctx.url, 'credentials', 'Ada', '&mode=sfu');
    await page.waitForFunction(() => window.sori.iceServers().length > 0);
    const issued = (await page.evaluate(() => window.sori.iceServers())).find((s) => s.username);
    const url = `turn:${SERVER_IP}:3478?transport=udp`;
    const good = await gatherRelay(page, { urls: url, username: issued.username, credential: issued.credential });
    assert.ok(good.candidates.some((c) => / typ relay /.test(c)), `issued credentials give a relay candidate: ${JSON.stringify(good)}`);
    const future = `${Math.floor(Date.now() / 1000) + 3600}:mallory`;
    const forged = await gatherRelay(page, { urls: url, username: future, credential: 'Zm9yZ2Vk' });
    const past = `${Math.floor(Date.now() / 1000) - 60}:mallory`;
    const expired = await gatherRelay(page, { urls: url, username: past, credential: credential(past) });
    for (const [name, r] of [['forged', forged], ['expired', expired]]) {
      assert.equal(r.candidates.filter((c) => / typ relay /.test(c)).length, 0, `${name}: ${JSON.stringify(r)}`);
      // Sori's TURN server answers a failed authentication with 400 (coturn: 401).
      assert.ok(r.errors.some((c) => c === 400 || c === 401), `${name}: refused, got ${JSON.stringify(r.errors)}`);
    }
  });
});

describe('no TURN server: ICE-TCP alone', opts, () => {
  const ctx = world('symmetric', ['--no-turn']);

  test('a browser whose firewall drops UDP joins an SFU room over ICE-TCP', opts, async () => {
    const { p } = await blockedJoins(ctx, 'ice-tcp');
    assert.equal(p.local.protocol, 'tcp', describePair(p));
    assert.equal(p.remote.protocol, 'tcp', describePair(p));
    assert.equal(p.remote.type, 'host', 'the media server\'s own TCP candidate');
  });
});

describe('behind address-preserving NATs', opts, () => {
  const ctx = world('preserving', TURN);

  test('a P2P call connects directly with server-reflexive candidates, no relay', opts, async () => {
    const { a, b } = await p2pCall(ctx, 'direct');
    const [pa, pb] = [await pairOf(a), await pairOf(b)];
    console.log(`address-preserving NATs, P2P: Ada ${describePair(pa)}, Grace ${describePair(pb)}; join → first frame ${await joinToFrame(a)} / ${await joinToFrame(b)} ms`);
    for (const p of [pa, pb]) {
      assert.ok(p.local.type !== 'relay' && p.remote.type !== 'relay', `no relay, got ${describePair(p)}`);
      assert.ok(['srflx', 'prflx'].includes(p.remote.type), `the other side's NAT address, got ${describePair(p)}`);
    }
  });
});

describe('behind symmetric NATs, with coturn in place of Sori\'s TURN server', opts, () => {
  const ctx = world('symmetric', ['--turn-external', `turn:${SERVER_IP}:3478?transport=udp`, '--turn-secret', SECRET], { coturn: true });

  test('coturn relays a P2P call with the credentials Sori issued', opts, async () => {
    const { a, b } = await p2pCall(ctx, 'coturn');
    const [pa, pb] = [await pairOf(a), await pairOf(b)];
    console.log(`symmetric NATs, P2P, coturn: Ada ${describePair(pa)}, Grace ${describePair(pb)}; join → first frame ${await joinToFrame(a)} / ${await joinToFrame(b)} ms`);
    for (const p of [pa, pb]) assert.ok(p.local.type === 'relay' || p.remote.type === 'relay', `a relayed pair, got ${describePair(p)}`);
    const servers = await a.evaluate(() => window.sori.iceServers());
    assert.deepEqual(servers.flatMap((s) => [].concat(s.urls)), [`turn:${SERVER_IP}:3478?transport=udp`]);
    // coturn itself says it authenticated Sori's user and relayed for it: for one of the two
    // at least (a call may run through one side's relay alone, the other reaching it from its
    // NAT's address).
    const users = [servers[0].username, (await b.evaluate(() => window.sori.iceServers()))[0].username];
    assert.ok(ctx.coturn.log.some((l) => users.some((u) => l.includes(`user <${u}>`)) && /CHANNEL_BIND processed, success|CREATE_PERMISSION processed, success/.test(l)),
      ctx.coturn.log.slice(-20).join('\n'));
  });
});
