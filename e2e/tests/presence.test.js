// Leaving, closing the tab, a killed browser, and mute state, as the others see them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverAndBrowser, launchKillableBrowser, joinPage, pollPage, waitForVideoFrom, assertUdp } from './helpers.js';

const ctx = serverAndBrowser();

const remoteNames = (page) =>
  page.$$eval('[data-testid=remote-video]', (vs) => vs.map((v) => v.dataset.participant).sort());

test('a closed tab and a killed browser disappear at the others within 5 s', async () => {
  const a = await joinPage(ctx.browser, ctx.server.url, 'presence', 'Ada');
  const b = await joinPage(ctx.browser, ctx.server.url, 'presence', 'Grace');
  const other = await launchKillableBrowser();
  const c = await joinPage(other.browser, ctx.server.url, 'presence', 'Linus');
  for (const [page, names] of [[a, ['Grace', 'Linus']], [b, ['Ada', 'Linus']], [c, ['Ada', 'Grace']]]) {
    for (const n of names) await waitForVideoFrom(page, n);
  }
  for (const p of [a, b, c]) await assertUdp(p);

  await b.close();
  let start = Date.now();
  await a.waitForFunction(() => ![...document.querySelectorAll('[data-testid=remote-video]')].some((v) => v.dataset.participant === 'Grace'), null, { timeout: 5000 });
  console.log(`closed tab gone after ${Date.now() - start} ms`);

  other.kill();
  start = Date.now();
  await a.waitForFunction(() => document.querySelectorAll('[data-testid=remote-video]').length === 0, null, { timeout: 5000 });
  console.log(`killed browser gone after ${Date.now() - start} ms`);
  assert.deepEqual(await remoteNames(a), []);
  assert.equal(await a.getByTestId('participant').count(), 1);
  const { value } = await ctx.server.metrics();
  assert.equal(value('sori_participants'), 1);
});

test('muting the camera shows as muted at the others', async () => {
  const a = await joinPage(ctx.browser, ctx.server.url, 'mute', 'Ada');
  const b = await joinPage(ctx.browser, ctx.server.url, 'mute', 'Grace');
  await waitForVideoFrom(b, 'Ada');
  for (const p of [a, b]) await assertUdp(p);
  await a.getByTestId('mute-video').click();
  await b.locator('[data-testid=remote-video][data-participant="Ada"][data-video-muted="true"]').waitFor({ timeout: 5000 });
  await b.getByTestId('participant').filter({ hasText: 'Ada' }).filter({ hasText: 'camera off' }).waitFor();
  assert.equal(await a.getByTestId('mute-video').getAttribute('aria-pressed'), 'true');
  await a.getByTestId('mute-video').click();
  await b.locator('[data-testid=remote-video][data-participant="Ada"][data-video-muted="false"]').waitFor({ timeout: 5000 });
});

for (const mode of ['sfu', 'p2p']) {
  test(`a screen share reaches the others as an extra video and goes away when stopped (${mode})`, async () => {
    const a = await joinPage(ctx.browser, ctx.server.url, `screen-${mode}`, 'Ada', `&mode=${mode}`);
    const b = await joinPage(ctx.browser, ctx.server.url, `screen-${mode}`, 'Grace', `&mode=${mode}`);
    await waitForVideoFrom(b, 'Ada');
    for (const p of [a, b]) await assertUdp(p);
    await a.getByTestId('share-screen').click();
    await b.waitForFunction(() => {
      const v = document.querySelector('[data-testid=remote-screen]');
      return v && v.getVideoPlaybackQuality().totalVideoFrames > 5;
    }, null, { timeout: 15000, polling: 100 });
    assert.equal(await b.getByTestId('remote-video').count(), 1, 'still one camera tile for Ada');
    // To the media server the camera goes as three encodings and the screen as two
    // (docs/simulcast.md); to the other browser each as one.
    const rids = mode === 'sfu' ? ['f', 'f', 'h', 'h', 'q'] : ['-', '-'];
    await pollPage(a, async (want) => {
      const sent = (await window.sori.outboundVideo()).map((e) => e.rid || '-').sort();
      return JSON.stringify(sent) === JSON.stringify(want);
    }, rids, 15000);
    // The roles come from Ada's browser through the server, not from the order of arrival
    // (split too: the remote media server reports each track as it arrives).
    const videos = (await b.evaluate(() => window.sori.remoteTracks())).filter((t) => t.kind === 'video');
    assert.deepEqual(videos.map((t) => [t.participant, t.role, t.stated]).sort(),
      [['Ada', 'camera', true], ['Ada', 'screen', true]]);
    await a.getByTestId('share-screen').click();
    await b.locator('[data-testid=remote-screen]').waitFor({ state: 'detached', timeout: 10000 });
    await waitForVideoFrom(b, 'Ada');
    for (const p of [a, b]) await p.context().close();
  });
}
