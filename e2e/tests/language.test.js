// Korean and English: the browser's language picks the page's, `?lang=` overrides it, and the
// whole page — lobby, call, the other participants' states — speaks the one chosen.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverAndBrowser, joinPage, waitForVideoFrom, assertUdp } from './helpers.js';

const ctx = serverAndBrowser();

test('?lang=ko shows the lobby in Korean; a Korean browser gets it without asking', async () => {
  const context = await ctx.browser.newContext();
  const page = await context.newPage();
  await page.goto(`${ctx.server.url}/?room=ko&lang=ko`);
  assert.equal(await page.getByTestId('join').textContent(), '방에 들어가기');
  assert.equal(await page.evaluate(() => document.documentElement.lang), 'ko');
  assert.match(await page.locator('.tagline').textContent(), /화상 회의/);
  await context.close();

  const korean = await ctx.browser.newContext({ locale: 'ko-KR' });
  const kp = await korean.newPage();
  await kp.goto(`${ctx.server.url}/?room=ko`);
  assert.equal(await kp.getByTestId('join').textContent(), '방에 들어가기');
  // ?lang=en wins over the browser's language.
  await kp.goto(`${ctx.server.url}/?room=ko&lang=en`);
  assert.equal(await kp.getByTestId('join').textContent(), 'Join room');
  await korean.close();
});

test('a call in Korean: controls, status, people and what others do', async () => {
  const ada = await joinPage(ctx.browser, ctx.server.url, 'ko-call', 'Ada', '&lang=ko');
  const bo = await joinPage(ctx.browser, ctx.server.url, 'ko-call', 'Bo');
  await waitForVideoFrom(ada, 'Bo');
  for (const p of [ada, bo]) await assertUdp(p);
  assert.equal(await ada.getByTestId('mute-audio').textContent(), '마이크 끄기');
  assert.equal(await ada.getByTestId('leave').textContent(), '나가기');
  assert.equal(await ada.locator('.panel h2').first().textContent(), '참가자');
  await ada.getByTestId('status').filter({ hasText: '연결됨' }).waitFor();
  // Bo (in English) turns his microphone off: Ada reads it in Korean, Bo in English.
  await bo.getByTestId('mute-audio').click();
  await ada.locator('[data-testid=participant][data-participant=Bo]').filter({ hasText: '마이크 꺼짐' }).waitFor();
  assert.equal(await bo.getByTestId('mute-audio').textContent(), 'Unmute mic');
  await ada.getByTestId('mute-audio').click();
  assert.equal(await ada.getByTestId('mute-audio').textContent(), '마이크 켜기');
  // Bo's camera off: his tile says so in Korean at Ada, Ada's own in English at Bo.
  await bo.getByTestId('mute-video').click();
  await ada.getByTestId('mute-video').click();
  const offText = (page, sel) => page.waitForFunction((s) => {
    const tile = document.querySelector(s);
    return tile && tile.dataset.videoMuted === 'true' && getComputedStyle(tile, '::after').content;
  }, sel).then((h) => h.jsonValue());
  assert.equal(await offText(ada, '.tile:has([data-participant="Bo"])'), '"카메라가 꺼져 있습니다"');
  assert.equal(await offText(bo, '.tile:has([data-participant="Ada"])'), '"Camera is off"');
  await ada.screenshot({ path: 'artifacts/korean-call.png' });
  for (const p of [ada, bo]) await p.context().close();
});
