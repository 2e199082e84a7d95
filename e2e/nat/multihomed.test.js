// A server with two addresses that advertises its second while its default route leaves from
// the first: browsers send media to the second, and every reply must come back from it, over
// UDP (ICE-TCP and TURN are off, so nothing else could carry the call).
//
//   cli (10.90.3.2) ── router ──┬── srv wan0 10.90.1.10  (default route)
//                               └── srv wan1 10.90.2.10  (advertised)
//
// The namespaces are the test's own; no address here exists outside them.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { chromium } from 'playwright-core';
import { spawnSori, launchOptions, joinPage, waitForVideoFrom } from '../tests/helpers.js';
import { unavailable, chromiumIn } from './netns.js';

const reason = unavailable();
if (reason && process.env.CI) throw new Error(`the multi-homed test must run in CI, but: ${reason}`);
const opts = reason ? { skip: reason } : {};

const tag = `mh${process.pid % 100000}`;
const ns = { cli: `${tag}-cli`, router: `${tag}-rtr`, srv: `${tag}-srv` };
const run = (...args) => execFileSync(args[0], args.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
const inNs = (n, ...args) => run('ip', 'netns', 'exec', n, ...args);

function createNetwork() {
  for (const n of Object.values(ns)) {
    run('ip', 'netns', 'add', n);
    // IPv6 addresses usable at once: one that finishes duplicate address detection a moment
    // later is a network change to Chromium, which fails the page it is loading then.
    inNs(n, 'sysctl', '-qw', 'net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0');
    inNs(n, 'ip', 'link', 'set', 'lo', 'up');
    // Replies that leave from the address the request arrived at may take the other link:
    // no strict reverse-path filtering, as on most multi-homed hosts.
    inNs(n, 'sysctl', '-qw', 'net.ipv4.conf.all.rp_filter=0');
    inNs(n, 'sysctl', '-qw', 'net.ipv4.conf.default.rp_filter=0');
  }
  const link = (a, devA, addrA, b, devB, addrB) => {
    run('ip', 'link', 'add', devA, 'netns', a, 'type', 'veth', 'peer', 'name', devB, 'netns', b);
    inNs(a, 'ip', 'addr', 'add', addrA, 'dev', devA);
    inNs(b, 'ip', 'addr', 'add', addrB, 'dev', devB);
    inNs(a, 'ip', 'link', 'set', devA, 'up');
    inNs(b, 'ip', 'link', 'set', devB, 'up');
  };
  link(ns.cli, 'c0', '10.90.3.2/24', ns.router, 'r3', '10.90.3.1/24');
  link(ns.srv, 'wan0', '10.90.1.10/24', ns.router, 'r1', '10.90.1.1/24');
  link(ns.srv, 'wan1', '10.90.2.10/24', ns.router, 'r2', '10.90.2.1/24');
  inNs(ns.router, 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
  inNs(ns.cli, 'ip', 'route', 'add', 'default', 'via', '10.90.3.1');
  inNs(ns.srv, 'ip', 'route', 'add', 'default', 'via', '10.90.1.1');
}

const ctx = { server: null, browser: null, launcher: null };
before(async () => {
  if (reason) return;
  createNetwork();
  ctx.server = await spawnSori(
    ['serve', '--listen', '10.90.1.10:8080', '--dev', '--rtc-port', '40000', '--advertise-ip',
      '10.90.2.10', '--no-rtc-tcp', '--no-turn'],
    /listening on (http:\/\/\S+)/,
    { netns: ns.srv },
  );
  const o = launchOptions(false);
  o.args.push('--unsafely-treat-insecure-origin-as-secure=http://10.90.1.10:8080');
  ctx.launcher = chromiumIn(ns.cli);
  ctx.browser = await chromium.launch({ ...o, executablePath: ctx.launcher });
});
after(async () => {
  await ctx.browser?.close();
  await ctx.server?.stop();
  for (const n of Object.values(ns)) {
    try { run('ip', 'netns', 'del', n); } catch { /* not created */ }
  }
  if (ctx.launcher) rmSync(dirname(ctx.launcher), { recursive: true, force: true });
});

test('media advertised on the second address of a two-address host flows over UDP', opts, async () => {
  const url = 'http://10.90.1.10:8080';
  const a = await joinPage(ctx.browser, url, 'two-homes', 'Ada');
  const b = await joinPage(ctx.browser, url, 'two-homes', 'Grace');
  await waitForVideoFrom(a, 'Grace', 30000);
  await waitForVideoFrom(b, 'Ada', 30000);
  for (const page of [a, b]) {
    const pair = await page.evaluate(() => window.sori.selectedPair());
    assert.equal(pair.local.protocol, 'udp', JSON.stringify(pair));
    assert.equal(pair.remote.address, '10.90.2.10', JSON.stringify(pair));
  }
});
