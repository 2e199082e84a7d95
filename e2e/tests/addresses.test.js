// A server that advertises a secondary address of its host (127.0.0.2; its socket bound to
// 0.0.0.0, so the route back to the browsers on 127.0.0.1 would pick 127.0.0.1) with ICE-TCP
// off: the call must run over UDP, every reply coming from 127.0.0.2.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, launchBrowser, joinPage, waitForVideoFrom } from './helpers.js';

test('a secondary advertised address carries the call over UDP', async () => {
  const server = await startServer(['--advertise-ip', '127.0.0.2', '--no-rtc-tcp'], { advertise: false });
  const browser = await launchBrowser();
  try {
    const a = await joinPage(browser, server.url, 'secondary', 'Ada');
    const b = await joinPage(browser, server.url, 'secondary', 'Grace');
    await waitForVideoFrom(a, 'Grace');
    await waitForVideoFrom(b, 'Ada');
    for (const page of [a, b]) {
      const pair = await page.evaluate(() => window.sori.selectedPair());
      assert.equal(pair.local.protocol, 'udp', JSON.stringify(pair));
      assert.equal(pair.remote.address, '127.0.0.2', JSON.stringify(pair));
    }
  } finally {
    await browser.close();
    await server.stop();
  }
});
