// Simulcast in Chromium: a publisher in an SFU room sends its camera as three encodings (q, h, f
// at a quarter, half and full 720p size), each while someone receives it (the media server's
// `layers` pause the others); a receiver tells the server how it shows each video (`view`: tile size, visibility, pinned
// quality) and reads back what it gets (`stats`, the tile's quality badge).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { serverAndBrowser, joinPage, pollPage, waitForVideoFrom, artifacts, assertUdp } from './helpers.js';

const ctx = serverAndBrowser();

/** The page's camera encodings by rid (`q`, `h`, `f`), once `ok` holds for them. */
async function encodingsWhen(page, ok, timeout = 30000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const list = await page.evaluate(() => window.sori.outboundVideo());
    const byRid = Object.fromEntries(list.map((e) => [e.rid, e]));
    if (byRid.q && byRid.h && byRid.f && ok(byRid)) return byRid;
    if (Date.now() > deadline) throw new Error(`not within ${timeout} ms: ${ok}; last: ${JSON.stringify(list)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('an SFU publisher sends its 720p camera as three encodings, each while someone takes it', async () => {
  const ada = await joinPage(ctx.browser, ctx.server.url, 'simulcast-publish', 'Ada');
  const camera = await ada.evaluate(() => new Promise((resolve) => {
    const check = () => {
      const v = document.getElementById('local-video');
      const t = v.srcObject && v.srcObject.getVideoTracks()[0];
      if (t) resolve(t.getSettings()); else setTimeout(check, 50);
    };
    check();
  }));
  assert.deepEqual([camera.width, camera.height], [1280, 720], 'the fake camera gives 720p when asked');

  // Alone, Ada sends the lowest encoding only: the media server's `layers` paused the others.
  let e = await encodingsWhen(ada, (e) => e.q.frameHeight === 180 &&
    e.q.active === true && e.h.active === false && e.f.active === false);
  assert.deepEqual([e.q.frameWidth, e.q.frameHeight], [320, 180]);
  assert.ok(e.q.mid === e.h.mid && e.h.mid === e.f.mid, 'one m-line carries all three');

  // Grace pins Ada's camera to medium, then high: each time the layer she takes is encoded.
  const grace = await joinPage(ctx.browser, ctx.server.url, 'simulcast-publish', 'Grace');
  await waitForVideoFrom(grace, 'Ada');
  const pin = grace.getByTestId('quality-pin');
  await pin.selectOption('medium');
  e = await encodingsWhen(ada, (e) => e.h.active === true && e.h.frameHeight === 360);
  assert.equal(e.h.frameWidth, 640);
  await pin.selectOption('high');
  e = await encodingsWhen(ada, (e) => e.f.active === true && e.f.frameHeight === 720);
  assert.equal(e.f.frameWidth, 1280);
  const encoded = e.f.framesEncoded;
  await encodingsWhen(ada, (e) => e.f.framesEncoded > 20, 10000);
  console.log(`f encoded ${encoded} frames at 720p when first seen active`);
  await pollPage(grace, () => {
    const v = document.querySelector('[data-testid="remote-video"]');
    return v.videoHeight === 720 && document.querySelector('[data-testid="quality"]').textContent === '720p';
  }, null, 20000);

  // Grace leaves: no one takes h or f, and Ada stops encoding them.
  await grace.context().close();
  await encodingsWhen(ada, (e) => e.q.active === true && e.h.active === false && e.f.active === false);
  await ada.context().close();
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
  assert.equal(stats.tracks[track].layers, 3, 'Ada sends three layers');
  assert.ok(['q', 'h', 'f'].includes(stats.tracks[track].rid), JSON.stringify(stats));
  // The badge shows the height Grace decodes (the layer may still be moving up: polled).
  await pollPage(grace, () => {
    const v = document.querySelector('[data-testid="remote-video"]');
    const badge = document.querySelector('[data-testid="quality"]');
    return v.videoHeight > 0 && badge.textContent === `${v.videoHeight}p` && /layer [qhf]/.test(badge.title);
  });

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
  await pollPage(grace, () => document.querySelector('[data-testid="quality"]').textContent === 'paused');
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

test('a receiver whose tile is 320×180 gets the lowest layer, and the top one in a 1280×720 tile', async () => {
  const ada = await joinPage(ctx.browser, ctx.server.url, 'simulcast-tile', 'Ada');
  const grace = await joinPage(ctx.browser, ctx.server.url, 'simulcast-tile', 'Grace');
  await waitForVideoFrom(grace, 'Ada');
  for (const p of [ada, grace]) await assertUdp(p);
  const track = await pollPage(grace, () => Object.keys(window.sori.views())[0]);
  /** Sizes Ada's tile to `width`×`height` device pixels; resolves once that view was sent. */
  const tile = async (width, height) => {
    await grace.evaluate(([w, h]) => {
      const t = document.querySelector('[data-testid="remote-video"]').closest('.tile');
      Object.assign(t.style, { width: `${w / devicePixelRatio}px`, height: `${h / devicePixelRatio}px`, justifySelf: 'start' });
    }, [width, height]);
    await pollPage(grace, ([id, w, h]) => {
      const v = window.sori.views()[id];
      return v && v.width === w && v.height === h;
    }, [track, width, height]);
  };
  /** Resolves with the received layer once the video element decodes `height` lines. */
  const receives = (height) => pollPage(grace, ([id, h]) => {
    const v = document.querySelector('[data-testid="remote-video"]');
    const s = window.sori.stats && window.sori.stats.tracks[id];
    return v.videoHeight === h && s && s.height === h
      && document.querySelector('[data-testid="quality"]').textContent === `${h}p` && s.rid;
  }, [track, height], 20000);

  await tile(1280, 720);
  assert.equal(await receives(720), 'f', 'a 720-line tile: the top layer');
  await tile(320, 180);
  assert.equal(await receives(180), 'q', 'a 180-line tile: the lowest layer');
  const shot = join(artifacts, 'simulcast-small-tile.png');
  await grace.screenshot({ path: shot });
  console.log(`screenshot: ${shot}`);
  await ada.context().close();
  await grace.context().close();
});
