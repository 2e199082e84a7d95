// The web client for people who use a keyboard or a screen reader: axe-core finds no serious or
// critical violation in the lobby or in a call, and the documented shortcuts work.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverAndBrowser, joinPage, waitForVideoFrom, assertUdp, violations } from './helpers.js';

const ctx = serverAndBrowser();

test('axe-core finds no serious or critical violation in the lobby', async () => {
  const context = await ctx.browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  await page.goto(`${ctx.server.url}/?room=a11y`);
  await page.getByTestId('join').waitFor();
  // With the preview running: its switches, the level meter and the filled pickers.
  await page.getByTestId('preview-camera').waitFor();
  await page.waitForFunction(() => document.querySelector('[data-testid="camera-select"]').options.length > 0);
  assert.deepEqual(await violations(page), []);
  await context.close();
});

test('axe-core finds no serious or critical violation in a call', async () => {
  const ada = await joinPage(ctx.browser, ctx.server.url, 'a11y-call', 'Ada');
  const bo = await joinPage(ctx.browser, ctx.server.url, 'a11y-call', 'Bo');
  await waitForVideoFrom(ada, 'Bo');
  for (const p of [ada, bo]) await assertUdp(p);
  await ada.getByTestId('chat-input').fill('hello');
  await ada.getByTestId('chat-send').click();
  await bo.getByTestId('chat-message').filter({ hasText: 'hello' }).waitFor();
  for (const page of [ada, bo]) assert.deepEqual(await violations(page), []);
  // The device panel, open.
  await bo.getByTestId('devices').click();
  await bo.getByTestId('device-panel').waitFor();
  assert.deepEqual(await violations(bo), []);
  for (const p of [ada, bo]) await p.context().close();
});

test('axe-core finds no serious or critical violation in the WHEP player, live or refused', async () => {
  const ada = await joinPage(ctx.browser, ctx.server.url, 'a11y-watch', 'Ada');
  const bo = await joinPage(ctx.browser, ctx.server.url, 'a11y-watch', 'Bo');
  await waitForVideoFrom(bo, 'Ada');
  for (const p of [ada, bo]) await assertUdp(p);
  const context = await ctx.browser.newContext({ viewport: { width: 1280, height: 720 } });
  const page = await context.newPage();
  await page.goto(`${ctx.server.url}/watch.html?room=a11y-watch`);
  await page.waitForFunction(() => window.whep.firstFrameAt);
  const got = await page.evaluate(() => window.whep.inbound());
  assert.equal(got.pair && got.pair.protocol, 'udp', JSON.stringify(got));
  assert.deepEqual(await violations(page), []);
  await page.getByTestId('whep-sound').click();
  assert.equal(await page.getByTestId('whep-sound').innerText(), 'Mute');
  // A room that does not exist: the refusal is said, and still nothing serious.
  await page.goto(`${ctx.server.url}/watch.html?room=nowhere`);
  await page.waitForFunction(() => window.whep.error);
  assert.match(await page.getByTestId('whep-status').innerText(), /Cannot watch: 404 no room "nowhere"/);
  assert.deepEqual(await violations(page), []);
  await context.close();
  for (const p of [ada, bo]) await p.context().close();
});

test('shortcuts: M mutes the microphone, V stops the camera, Ctrl+Shift+L leaves; not while typing', async () => {
  const ada = await joinPage(ctx.browser, ctx.server.url, 'keys', 'Ada');
  const bo = await joinPage(ctx.browser, ctx.server.url, 'keys', 'Bo');
  await waitForVideoFrom(bo, 'Ada');
  const pressed = (id) => ada.getByTestId(id).getAttribute('aria-pressed');
  await ada.locator('body').click({ position: { x: 5, y: 5 } });
  await ada.keyboard.press('m');
  assert.equal(await pressed('mute-audio'), 'true');
  await ada.keyboard.press('v');
  assert.equal(await pressed('mute-video'), 'true');
  // Bo sees both.
  await bo.locator('[data-testid=participant][data-participant=Ada]').filter({ hasText: 'mic off' }).waitFor();
  // Typing an "m" in the chat is a letter, not a shortcut.
  await ada.getByTestId('chat-input').fill('');
  await ada.getByTestId('chat-input').press('m');
  assert.equal(await pressed('mute-audio'), 'true');
  assert.equal(await ada.getByTestId('chat-input').inputValue(), 'm');
  await ada.locator('body').click({ position: { x: 5, y: 5 } });
  await ada.keyboard.press('m');
  assert.equal(await pressed('mute-audio'), 'false');
  // Every control says what its shortcut is.
  assert.match(await ada.getByTestId('mute-audio').getAttribute('aria-keyshortcuts'), /^M$/);
  await ada.keyboard.press('Control+Shift+L');
  await ada.getByTestId('join').waitFor();
  await bo.waitForFunction(() => document.querySelectorAll('[data-testid=participant]').length === 1);
  for (const p of [ada, bo]) await p.context().close();
});

test('on a 360×740 phone every control is in view, nothing scrolls sideways, and the chat is a sheet', async () => {
  const phone = await ctx.browser.newContext({
    viewport: { width: 360, height: 740 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2,
  });
  const ada = await phone.newPage();
  await ada.goto(`${ctx.server.url}/?room=phone&name=Ada&autojoin=1`);
  const bo = await joinPage(ctx.browser, ctx.server.url, 'phone', 'Bo');
  const cy = await joinPage(ctx.browser, ctx.server.url, 'phone', 'Cy');
  await waitForVideoFrom(ada, 'Bo');
  await waitForVideoFrom(ada, 'Cy');
  // Three tiles one under another, each whole (16:9) and none over another: the page scrolls
  // down to the ones below.
  const tiles = await ada.evaluate(() => [...document.querySelectorAll('#grid > .tile')]
    .map((t) => t.getBoundingClientRect()).map((r) => ({ top: r.top, bottom: r.bottom, ratio: r.width / r.height })));
  assert.equal(tiles.length, 3);
  for (const [i, t] of tiles.entries()) {
    assert.ok(Math.abs(t.ratio - 16 / 9) < 0.05, `tile ${i} is 16:9: ${JSON.stringify(tiles)}`);
    if (i) assert.ok(t.top >= tiles[i - 1].bottom, `tile ${i} is below tile ${i - 1}: ${JSON.stringify(tiles)}`);
  }
  const layout = await ada.evaluate(() => {
    const off = [...document.querySelectorAll('.controls button')]
      .filter((b) => b.offsetParent !== null)
      .map((b) => [b.dataset.testid, b.getBoundingClientRect()])
      .filter(([, r]) => r.left < 0 || r.right > innerWidth || r.top < 0 || r.bottom > innerHeight)
      .map(([id]) => id);
    return { width: document.scrollingElement.scrollWidth, inner: innerWidth, off };
  });
  assert.deepEqual(layout, { width: 360, inner: 360, off: [] });
  // The chat opens as a sheet and works; closing it shows the call again.
  await ada.getByTestId('toggle-side').tap();
  await ada.getByTestId('chat-input').fill('from a phone');
  await ada.getByTestId('chat-send').tap();
  await bo.getByTestId('chat-message').filter({ hasText: 'from a phone' }).waitFor();
  await ada.screenshot({ path: 'artifacts/phone-chat.png' });
  await ada.getByTestId('toggle-side').tap();
  assert.equal(await ada.getByTestId('chat-input').isVisible(), false);
  await ada.screenshot({ path: 'artifacts/phone-call.png' });
  assert.deepEqual(await violations(ada), []);
  await phone.close();
  for (const p of [bo, cy]) await p.context().close();
});
