// The lobby's preview and the device pickers: the camera shows before joining, the level meter
// moves with the microphone, the choice is remembered; in a call another camera or microphone
// replaces the old one without a new offer and without a pause the others would notice.
// Chromium's fake devices with `device-count=3`: three cameras, two microphones and two speakers
// besides the defaults. fake_device_0 and fake_device_2 paint the same animation on a green
// background of a slightly different shade (about 134 and 128 in the green channel): the shade
// tells which camera a picture comes from. (fake_device_1 gives depth frames, which Chromium
// shows but does not encode: not a camera to send.)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { startServer, launchOptions, joinPage, waitForVideoFrom, pollPage, assertUdp } from './helpers.js';

const ctx = { server: null, browser: null };

before(async () => {
  ctx.server = await startServer();
  const options = launchOptions();
  options.args = options.args.map((a) => (a === '--use-fake-device-for-media-stream'
    ? '--use-fake-device-for-media-stream=device-count=3' : a));
  ctx.browser = await chromium.launch(options);
});

after(async () => {
  await ctx.browser?.close();
  await ctx.server?.stop();
});

/** The green of the background of what `selector`'s video shows now: three patches away from
 * the animation, averaged (null before a frame). */
function shade(page, selector) {
  return page.evaluate((sel) => {
    const v = document.querySelector(sel);
    if (!v || !v.videoWidth) return null;
    const c = document.createElement('canvas');
    c.width = 32;
    c.height = 18;
    const g = c.getContext('2d');
    g.drawImage(v, 0, 0, 32, 18);
    const px = g.getImageData(0, 0, 32, 18).data;
    const green = ([x, y]) => px[(y * 32 + x) * 4 + 1];
    return Math.round([[5, 9], [26, 12], [16, 16]].map(green).reduce((a, b) => a + b) / 3);
  }, selector);
}

const firstCamera = (g) => g !== null && g >= 131 && g <= 140;
const thirdCamera = (g) => g !== null && g >= 122 && g <= 129;

/** Waits until `selector`'s video on `page` shows a picture whose shade passes `test`. */
async function waitForShade(page, selector, test, timeout = 10000) {
  const deadline = Date.now() + timeout;
  let g = null;
  while (Date.now() < deadline) {
    g = await shade(page, selector);
    if (test(g)) return g;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${selector}: shade ${g} after ${timeout} ms`);
}

async function openLobby(context, room) {
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error('[lobby] page error:', e.message));
  await page.goto(`${ctx.server.url}/?room=${room}`);
  return page;
}

/** Decoded frames of the lobby's preview. */
const previewFrames = (page) => page.evaluate(() => document.querySelector('[data-testid="preview"]').getVideoPlaybackQuality().totalVideoFrames);

const PREVIEW = '[data-testid="preview"]';

test('the lobby previews the camera, the meter follows the microphone, and the choice is kept for next time', async () => {
  const context = await ctx.browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await openLobby(context, 'lobby');
  // The camera plays before anyone joins.
  await pollPage(page, () => document.querySelector('[data-testid="preview"]').getVideoPlaybackQuality().totalVideoFrames > 10);
  const first = await previewFrames(page);
  await pollPage(page, (n) => document.querySelector('[data-testid="preview"]').getVideoPlaybackQuality().totalVideoFrames > n + 10, first);
  await waitForShade(page, PREVIEW, firstCamera);

  // The fake microphone beeps: the meter rises with each beep and falls between them.
  const levels = [];
  for (let i = 0; i < 30; i++) {
    levels.push(Number(await page.getByTestId('mic-level').getAttribute('aria-valuenow')));
    await page.waitForTimeout(100);
  }
  assert.ok(Math.max(...levels) >= 30, `the meter rises with the sound: ${levels}`);
  assert.ok(Math.min(...levels) < Math.max(...levels) - 20, `the meter moves: ${levels}`);

  // The pickers list the devices by name; the speaker picker is there (Chromium has setSinkId).
  const cameras = await page.getByTestId('camera-select').locator('option').allTextContents();
  assert.deepEqual(cameras, ['fake_device_0', 'fake_device_1', 'fake_device_2']);
  assert.ok((await page.getByTestId('mic-select').locator('option').count()) >= 3);
  assert.ok((await page.getByTestId('speaker-select').locator('option').count()) >= 3);

  // Another camera: the preview shows it.
  await page.getByTestId('camera-select').selectOption({ label: 'fake_device_2' });
  await waitForShade(page, PREVIEW, thirdCamera);
  await page.getByTestId('mic-select').selectOption({ label: 'Fake Audio Input 2' });
  await page.getByTestId('speaker-select').selectOption({ label: 'Fake Audio Output 1' });
  // Camera off: the preview says so.
  await page.getByTestId('preview-camera').click();
  assert.equal(await page.getByTestId('preview-off').isVisible(), true);
  assert.equal(await page.getByTestId('preview-camera').getAttribute('aria-pressed'), 'true');

  // Next visit: the same devices, the camera still off.
  await page.reload();
  await pollPage(page, () => document.querySelector('[data-testid="camera-select"]').options.length === 3);
  const chosen = async (id) => page.getByTestId(id).evaluate((s) => s.selectedOptions[0] && s.selectedOptions[0].textContent);
  assert.equal(await chosen('camera-select'), 'fake_device_2');
  assert.equal(await chosen('mic-select'), 'Fake Audio Input 2');
  assert.equal(await chosen('speaker-select'), 'Fake Audio Output 1');
  assert.equal(await page.getByTestId('preview-camera').getAttribute('aria-pressed'), 'true');
  assert.equal(await page.getByTestId('preview-off').isVisible(), true);
  await page.getByTestId('preview-camera').click();
  assert.equal(await page.getByTestId('preview-off').isVisible(), false);
  await waitForShade(page, PREVIEW, thirdCamera);
  await context.close();
});

test('joined with the camera off, then on: the others see the camera only once it is on', async () => {
  const ada = await joinPage(ctx.browser, ctx.server.url, 'camera-off', 'Ada');
  const context = await ctx.browser.newContext({ viewport: { width: 1280, height: 800 } });
  const bo = await openLobby(context, 'camera-off');
  await bo.getByTestId('preview-camera').waitFor();
  await bo.getByTestId('preview-camera').click();
  await bo.getByTestId('name-input').fill('Bo');
  await bo.getByTestId('join').click();
  await waitForVideoFrom(bo, 'Ada');
  const boAtAda = '[data-testid="remote-video"][data-participant="Bo"]';
  await ada.locator(boAtAda).waitFor();
  await pollPage(ada, (sel) => document.querySelector(sel).dataset.videoMuted === 'true', boAtAda);
  assert.equal(await bo.getByTestId('mute-video').getAttribute('aria-pressed'), 'true');
  // What arrives of a camera that is off is black, if anything.
  await ada.waitForTimeout(1000);
  const dark = await shade(ada, boAtAda);
  assert.ok(dark === null || dark < 20, `Bo's camera is off at Ada: ${dark}`);
  await bo.getByTestId('mute-video').click();
  await waitForShade(ada, boAtAda, firstCamera);
  assert.equal(await ada.locator(boAtAda).getAttribute('data-video-muted'), 'false');
  for (const p of [ada, bo]) await assertUdp(p);
  for (const p of [ada, bo]) await p.context().close();
});

test('another camera and microphone mid-call: no new offer, and the others keep decoding', async () => {
  const ada = await joinPage(ctx.browser, ctx.server.url, 'switch', 'Ada');
  const bo = await joinPage(ctx.browser, ctx.server.url, 'switch', 'Bo');
  await waitForVideoFrom(ada, 'Bo');
  await waitForVideoFrom(bo, 'Ada');
  const boAtAda = '[data-testid="remote-video"][data-participant="Bo"]';
  await waitForShade(ada, boAtAda, firstCamera);
  const versions = async () => [await ada.evaluate(() => window.sori.sdpVersions()), await bo.evaluate(() => window.sori.sdpVersions())];
  const before = await versions();
  await ada.evaluate(() => window.sori.watchVideo('Bo'));
  await ada.waitForTimeout(1000);

  // Bo opens the device panel and picks the third camera.
  await bo.getByTestId('devices').click();
  await bo.getByTestId('camera-select').selectOption({ label: 'fake_device_2' });
  const switched = Date.now();
  await waitForShade(ada, boAtAda, thirdCamera);
  const shownAfter = Date.now() - switched;
  await ada.waitForTimeout(1500);
  const gaps = await ada.evaluate(() => window.sori.videoGaps('Bo'));
  assert.ok(gaps.gaps.every((g) => g <= 1.0), `no pause over 1 s in Bo's video at Ada: ${JSON.stringify(gaps)}`);

  // The microphone: another one, and Ada keeps hearing Bo.
  await bo.getByTestId('mic-select').selectOption({ label: 'Fake Audio Input 1' });
  await pollPage(bo, () => document.querySelector('[data-testid="local-video"]').srcObject.getAudioTracks()[0].label === 'Fake Audio Input 1');
  const heard = (await ada.evaluate(() => window.sori.inboundFrom('Bo'))).audioPackets;
  await pollPage(ada, async (n) => (await window.sori.inboundFrom('Bo')).audioPackets > n + 25, heard);

  // No renegotiation either way: both sides' descriptions are the ones from before.
  assert.deepEqual(await versions(), before, 'no SDP offer or answer for the switch');
  // The old camera is let go of: only the chosen one is live at Bo.
  const live = await bo.evaluate(() => document.querySelector('[data-testid="local-video"]').srcObject.getVideoTracks().map((t) => `${t.label}:${t.readyState}`));
  assert.deepEqual(live, ['fake_device_2:live']);

  // The camera is unplugged (its track ends, as the browser ends it then): the system's default
  // camera takes its place, the page says so, and Ada sees it — still without renegotiation.
  await bo.evaluate(() => document.querySelector('[data-testid="local-video"]').srcObject.getVideoTracks()[0].dispatchEvent(new Event('ended')));
  await waitForShade(ada, boAtAda, firstCamera);
  assert.match(await bo.locator('#toast').textContent(), /fake_device_2 was disconnected: now using fake_device_0/);
  assert.deepEqual(await versions(), before, 'no SDP offer or answer for the unplugged camera');
  console.log(`camera switch: Ada saw the new camera ${shownAfter} ms after the choice; pauses over 0.5 s: ${JSON.stringify(gaps.gaps)}`);
  for (const p of [ada, bo]) await assertUdp(p);
  for (const p of [ada, bo]) await p.context().close();
});
