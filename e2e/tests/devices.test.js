// When devices fail: a browser that denies the camera shows what to do and joins with its
// microphone alone; the others hear it and see no broken tile. One that denies both stays in
// the lobby with the reason for each.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { startServer, launchBrowser, launchOptions, joinPage, waitForVideoFrom, pollPage, assertUdp } from './helpers.js';

const ctx = { server: null, browser: null, denying: null };

before(async () => {
  ctx.server = await startServer();
  ctx.browser = await launchBrowser();
  // Permission prompts are answered "no" instead of "yes"; a context grants what it lists.
  const options = launchOptions();
  options.args = options.args.filter((a) => a !== '--use-fake-ui-for-media-stream').concat('--deny-permission-prompts');
  ctx.denying = await chromium.launch(options);
});

after(async () => {
  await ctx.denying?.close();
  await ctx.browser?.close();
  await ctx.server?.stop();
});

test('camera denied: the page says what to do and joins with the microphone alone', async () => {
  const ada = await joinPage(ctx.browser, ctx.server.url, 'denied', 'Ada');
  const context = await ctx.denying.newContext({ permissions: ['microphone'] });
  const bo = await context.newPage();
  await bo.goto(`${ctx.server.url}/?room=denied&name=Bo&autojoin=1`);
  const notice = bo.getByTestId('device-notice');
  await notice.waitFor();
  assert.match(await notice.textContent(), /Camera access is blocked: allow the camera.*without it/);
  // In the call, audio only: no camera switch, Ada's video arrives, Bo's audio reaches Ada.
  await waitForVideoFrom(bo, 'Ada');
  assert.equal(await bo.getByTestId('mute-video').isHidden(), true);
  assert.equal(await bo.getByTestId('mute-audio').isVisible(), true);
  await pollPage(ada, async () => (await window.sori.inboundFrom('Bo')).audioPackets > 20);
  assert.equal((await ada.evaluate(() => window.sori.inboundFrom('Bo'))).videoFrames, 0);
  for (const p of [ada, bo]) await assertUdp(p);
  await context.close();
  await ada.context().close();
});

test('camera and microphone denied: the lobby says why for each and nothing breaks', async () => {
  const context = await ctx.denying.newContext({ permissions: [] });
  const page = await context.newPage();
  await page.goto(`${ctx.server.url}/?room=denied-all&name=Cy&autojoin=1`);
  const error = page.getByTestId('lobby-error');
  await error.filter({ hasText: 'Microphone access is blocked' }).waitFor();
  assert.match(await error.textContent(), /Camera access is blocked/);
  assert.equal(await page.getByTestId('join').isVisible(), true);
  await context.close();
});
