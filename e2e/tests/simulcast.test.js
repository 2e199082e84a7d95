// Simulcast in Chromium: a publisher in an SFU room sends its camera as three encodings (q, h, f
// at a quarter, half and full 720p size) and pauses the ones the media server says no one takes;
// a receiver tells the server how it shows each video (`view`: tile size, visibility, pinned
// quality) and reads back what it gets (`stats`, the tile's quality badge).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { serverAndBrowser, joinPage, pollPage, waitForVideoFrom, artifacts } from './helpers.js';

const ctx = serverAndBrowser();

/** The page's video encodings once each has sent frames of the expected height. */
function threeEncodings(page) {
  return pollPage(page, async () => {
    const v = await window.sori.outboundVideo();
    const height = (rid) => (v.find((e) => e.rid === rid) || {}).frameHeight;
    return height('q') === 180 && height('h') === 360 && height('f') === 720 && v;
  }, null, 30000);
}

test('an SFU publisher sends its 720p camera as three encodings and pauses the ones not wanted', async () => {
  const page = await joinPage(ctx.browser, ctx.server.url, 'simulcast-publish', 'Ada');
  const camera = await page.evaluate(() => new Promise((resolve) => {
    const check = () => {
      const v = document.getElementById('local-video');
      const t = v.srcObject && v.srcObject.getVideoTracks()[0];
      if (t) resolve(t.getSettings()); else setTimeout(check, 50);
    };
    check();
  }));
  assert.deepEqual([camera.width, camera.height], [1280, 720], 'the fake camera gives 720p when asked');

  const encodings = await threeEncodings(page);
  assert.deepEqual(encodings.map((e) => e.rid), ['f', 'h', 'q']);
  assert.deepEqual(encodings.map((e) => e.frameWidth), [1280, 640, 320]);
  const mid = encodings[0].mid;
  assert.ok(encodings.every((e) => e.mid === mid), 'one m-line carries all three');

  // `layers` from the media server: f is wanted by no one, then wanted again. The client's
  // own handler is the one the server's message reaches (app.js → peer.onLayers).
  const setLayers = (active) => page.evaluate(async ([m, a]) => {
    const peer = await import('/peer.js');
    await peer.onLayers({ type: 'layers', mid: m, active: a });
  }, [mid, active]);
  const encodedOf = (rid) => page.evaluate(async (r) => (await window.sori.outboundVideo()).find((e) => e.rid === r).framesEncoded, rid);
  await setLayers({ q: true, h: true, f: false });
  await pollPage(page, async () => {
    const v = await window.sori.outboundVideo();
    return v.find((e) => e.rid === 'f').active === false && v.find((e) => e.rid === 'q').active === true;
  });
  const paused = await encodedOf('f');
  const q = await encodedOf('q');
  await pollPage(page, async (n) => (await window.sori.outboundVideo()).find((e) => e.rid === 'q').framesEncoded > n + 20, q);
  assert.ok(await encodedOf('f') <= paused + 1, 'a paused encoding encodes nothing');
  await setLayers({ q: true, h: true, f: true });
  await pollPage(page, async (n) => (await window.sori.outboundVideo()).find((e) => e.rid === 'f').framesEncoded > n + 10, paused);
  await page.context().close();
});

test('a receiver reports its tile as a view, gets stats, and shows the received height', async () => {
  const ada = await joinPage(ctx.browser, ctx.server.url, 'simulcast-view', 'Ada');
  const grace = await joinPage(ctx.browser, ctx.server.url, 'simulcast-view', 'Grace');
  await waitForVideoFrom(grace, 'Ada');

  // The view of Ada's camera: the tile's size in device pixels, visible, auto.
  const [track, view] = await pollPage(grace, () => {
    const views = Object.entries(window.sori.views());
    return views.length === 1 && views[0][1].visible && views[0];
  });
  const tile = await grace.evaluate(() => {
    const r = document.querySelector('[data-testid="remote-video"]').closest('.tile').getBoundingClientRect();
    return { width: Math.round(r.width * devicePixelRatio), height: Math.round(r.height * devicePixelRatio) };
  });
  assert.deepEqual(view, { ...tile, visible: true, quality: 'auto' });
  assert.match(track, /^track-\d+$/);

  // Stats come for that track; the badge shows the height Grace decodes.
  const stats = await pollPage(grace, (id) => {
    const s = window.sori.stats;
    return s && s.tracks[id] && s;
  }, track);
  assert.equal(stats.tracks[track].paused, false);
  const badge = grace.getByTestId('quality');
  await pollPage(grace, () => /^\d+p$/.test(document.querySelector('[data-testid="quality"]').textContent));
  const decoded = await grace.evaluate(() => document.querySelector('[data-testid="remote-video"]').videoHeight);
  assert.equal(await badge.textContent(), `${decoded}p`);

  const shot = join(artifacts, 'simulcast-two.png');
  await grace.screenshot({ path: shot });
  console.log(`screenshot: ${shot}`);

  // A tile taken off the page is not seen: the media server pauses it; back, it resumes.
  const display = (value) => grace.evaluate((v) => {
    document.querySelector('[data-testid="remote-video"]').closest('.tile').style.display = v;
  }, value);
  await display('none');
  await pollPage(grace, (id) => window.sori.views()[id].visible === false, track);
  await pollPage(grace, (id) => window.sori.stats.tracks[id].paused === true, track, 10000);
  await display('');
  await pollPage(grace, (id) => window.sori.views()[id].visible === true, track);
  await pollPage(grace, (id) => window.sori.stats.tracks[id].paused === false, track, 10000);

  // A pinned quality goes with the view.
  await grace.getByTestId('quality-pin').selectOption('high');
  await pollPage(grace, (id) => window.sori.views()[id].quality === 'high', track);
  await waitForVideoFrom(grace, 'Ada');
  await ada.context().close();
  await grace.context().close();
});
