// Through NATs and firewalls: browsers in network namespaces behind masquerading routers reach
// `sori serve` on a "public" address (all inside namespaces this file creates; see netns.js).
// - both browsers behind symmetric NATs: a P2P call connects through Sori's TURN relay;
// - both behind address-preserving NATs: a P2P call connects directly (server-reflexive);
// - a browser whose firewall drops UDP joins an SFU room over ICE-TCP;
// - forged and expired TURN credentials get no relay.
// (coturn accepting Sori's credentials: crates/sori-turn/tests/coturn.rs.)
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { chromium } from 'playwright-core';
import { spawnSori, launchOptions, joinPage, waitForVideoFrom } from '../tests/helpers.js';
import { unavailable, createNetwork, chromiumIn, SERVER_IP } from './netns.js';

const SECRET = 'nat-test-secret';
// This internet's "public" addresses are a documentation range (203.0.113.0/24), which Sori's
// TURN server refuses as a relay peer by default, as it does every non-public range: allow it,
// as an operator would allow a range of their own.
const TURN = ['--turn-secret', SECRET, '--turn-allow', '203.0.113.0/24'];
const reason = unavailable();
if (reason && process.env.CI) throw new Error(`the NAT tests must run in CI, but: ${reason}`);
if (reason) console.log(`skipping the NAT tests: ${reason}`);
const opts = reason ? { skip: reason } : {};

/** A network of `nat` routers with `sori serve ARGS` in its server namespace. */
function world(nat, serverArgs) {
  const ctx = { net: null, server: null, url: null, browsers: [], launchers: [] };
  before(async () => {
    if (reason) return;
    ctx.net = createNetwork(nat);
    ctx.server = await spawnSori(
      ['serve', '--listen', `${SERVER_IP}:8080`, '--rtc-port', '40000', ...serverArgs],
      /listening on (http:\/\/\S+)/,
      { netns: ctx.net.ns.server },
    );
    ctx.url = `http://${SERVER_IP}:8080`;
  });
  after(async () => {
    for (const b of ctx.browsers) await b.close().catch(() => {});
    await ctx.server?.stop();
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
