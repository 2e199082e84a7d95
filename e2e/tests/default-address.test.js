// With its defaults the media server advertises the machine's first non-loopback address, and
// browsers without any special flag connect to it. Runs only where the test owns the network:
// scripts/test gives the browser tests a namespace with one private interface of their own.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, joinPage, waitForVideoFrom, assertUdp } from './helpers.js';

const owned = process.env.SORI_E2E_NETNS === '1';
let server;
let browser;
before(async () => {
  if (!owned) return;
  server = await startServer([], { advertise: false });
  browser = await launchBrowser({ loopback: false });
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

test('browsers with no special flags join an SFU room on the advertised default address', { skip: owned ? false : 'needs the network namespace scripts/test creates (run as root)' }, async () => {
  const advertised = server.log.find((l) => l.includes('advertised as'));
  assert.ok(advertised && !advertised.includes('advertised as 127.'), `a non-loopback address: ${advertised}`);
  const a = await joinPage(browser, server.url, 'plain', 'Ada');
  const b = await joinPage(browser, server.url, 'plain', 'Grace');
  await waitForVideoFrom(a, 'Grace');
  await waitForVideoFrom(b, 'Ada');
  for (const p of [a, b]) await assertUdp(p);
});
