// Three browsers in an SFU room: video and audio from both others, a screenshot to look at.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { serverAndBrowser, joinPage, waitForVideoFrom, assertUdp, artifacts } from './helpers.js';

const ctx = serverAndBrowser();

test('three browsers in an SFU room see and hear each other', async () => {
  const names = ['Ada', 'Grace', 'Linus'];
  const pages = [];
  for (const n of names) pages.push(await joinPage(ctx.browser, ctx.server.url, 'sfu-three', n));
  for (const [i, page] of pages.entries()) {
    for (const other of names.filter((_, j) => j !== i)) {
      await waitForVideoFrom(page, other);
    }
    await page.waitForFunction(async () => (await window.sori.inboundStats()).audioPackets > 0, null, { timeout: 15000 });
    await assertUdp(page);
    assert.equal(await page.getByTestId('status').textContent(), 'connected');
    assert.equal(await page.getByTestId('remote-video').count(), 2);
    assert.equal(await page.getByTestId('participant').count(), 3);
  }
  const joinTimes = [];
  for (const page of pages) {
    joinTimes.push(await page.evaluate(() => Math.round(window.sori.firstRemoteFrameAt - window.sori.startedAt)));
  }
  console.log(`join time (page load to first remote frame decoded), ms: ${joinTimes.join(', ')}`);
  const shot = join(artifacts, 'three-party-call.png');
  await pages[0].screenshot({ path: shot });
  console.log(`screenshot: ${shot}`);
  const { value } = await ctx.server.metrics();
  assert.ok(value('sori_rtp_forwarded_packets_total') > 0);
  assert.equal(value('sori_participants'), 3);
});

test('a browser whose SDP state and the media server\'s disagree connects its media anew, staying in the room', async () => {
  const ada = await joinPage(ctx.browser, ctx.server.url, 'sfu-astray', 'Ada');
  const bo = await joinPage(ctx.browser, ctx.server.url, 'sfu-astray', 'Bo');
  await waitForVideoFrom(ada, 'Bo');
  await waitForVideoFrom(bo, 'Ada');
  const before = await bo.evaluate(() => ({ joins: window.sori.joins, presence: window.sori.presence.length }));
  const adaPresence = await ada.evaluate(() => window.sori.presence.length);
  // The media server answers an offer Bo's peer connection does not have out.
  await bo.evaluate(() => window.sori.offerBehindItsBack());
  await bo.waitForFunction(() => window.sori.mediaReconnects === 1, null, { timeout: 10000 });
  const reconnectedAt = Date.now();
  // Each sees the other's video on the new media: frames decoded since.
  await waitForVideoFrom(bo, 'Ada');
  await waitForVideoFrom(ada, 'Bo');
  console.log(`video both ways again ${(Date.now() - reconnectedAt) / 1000} s after Bo's new peer connection`);
  await assertUdp(bo);
  assert.equal(await bo.evaluate(() => window.sori.mediaReconnects), 1, 'once');
  assert.deepEqual(
    await bo.evaluate(() => ({ joins: window.sori.joins, presence: window.sori.presence.length })),
    before,
    'Bo did not join again and saw no one come or go',
  );
  assert.equal(await ada.evaluate(() => window.sori.presence.length), adaPresence, 'Ada saw Bo neither leave nor join');
  assert.equal(await ada.getByTestId('remote-video').count(), 1, 'one tile for Bo at Ada');
  await ada.context().close();
  await bo.context().close();
});

test('an offer lost with its socket, its peer connection replaced meanwhile: the new one\'s answer is not taken for it', async () => {
  const room = 'sfu-lost-offer';
  const ada = await joinPage(ctx.browser, ctx.server.url, room, 'Ada');
  // Bo's socket goes through the test, which can lose what Bo sends (as a socket dying under
  // it does) and cut it.
  const link = { uplink: true, page: null, server: null };
  const bo = await joinPage(ctx.browser, ctx.server.url, room, 'Bo', '', (page) => page.routeWebSocket(/\/ws$/, (ws) => {
    const server = ws.connectToServer();
    Object.assign(link, { page: ws, server });
    ws.onMessage((m) => { if (link.uplink) server.send(m); });
  }));
  await waitForVideoFrom(ada, 'Bo');
  await waitForVideoFrom(bo, 'Ada');
  link.uplink = false;
  // The network changes under Bo: its ICE restart offer is lost.
  const first = await bo.evaluate(() => window.sori.sdpVersions().local);
  await bo.evaluate(() => window.dispatchEvent(new Event('online')));
  await bo.waitForFunction((v) => window.sori.sdpVersions().local > v, first);
  // Meanwhile the server says to connect media anew (its media was lost): a new peer
  // connection, whose offer is lost too, but is sent again once the socket is back; the lost
  // restart offer (of the old peer connection) is not.
  link.page.send(JSON.stringify({ type: 'mode', mode: 'sfu' }));
  await bo.waitForFunction(() => {
    const v = window.sori.sdpVersions();
    return v.local !== null && v.remote === null;
  });
  link.uplink = true;
  const cutAt = Date.now();
  link.server.close({ code: 4000, reason: 'cut' });
  link.page.close({ code: 4000 });
  await waitForVideoFrom(bo, 'Ada');
  await waitForVideoFrom(ada, 'Bo');
  console.log(`video both ways again ${(Date.now() - cutAt) / 1000} s after the socket was cut`);
  await assertUdp(bo);
  assert.equal(await bo.evaluate(() => window.sori.joins), 1, 'Bo resumed, it did not join again');
  await ada.context().close();
  await bo.context().close();
});
