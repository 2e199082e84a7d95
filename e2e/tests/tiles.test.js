// The tiles of a call: a crossed microphone on the tile of whoever's microphone is off, a
// connection-quality indicator on every tile (good on loopback), a tile pinned large on a click
// or Enter, and a grid that fits 1 to 16 tiles in a laptop's window without scrolling (the
// others are sori-bench's synthetic participants).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { serverAndBrowser, joinPage, waitForVideoFrom, assertUdp, pollPage, artifacts, root, violations } from './helpers.js';

const BENCH = process.env.SORI_BENCH_BIN
  || join(process.env.CARGO_TARGET_DIR || join(root, 'target'), 'debug', 'sori-bench');
const ctx = serverAndBrowser();

const benches = [];
after(() => {
  for (const b of benches) if (b.exitCode === null && b.signalCode === null) b.kill('SIGKILL');
});

/** Starts sori-bench clients that join `room` and stay a minute and a half (killed after). */
function bench(room, scenario, load) {
  const url = ctx.server.url.replace(/^http/, 'ws') + '/ws';
  const child = spawn(BENCH, [
    '--url', url, '--scenario', scenario, '--load', String(load), '--room', room,
    '--video-kbps', '100', '--warmup', '1', '--duration', '90', '--quiet',
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr.on('data', (d) => process.stderr.write(`[sori-bench] ${d}`));
  benches.push(child);
  return child;
}

/** The tile of `name`'s camera on `page` (a Playwright locator). */
const tileOf = (page, name) => page.locator(`.tile:has([data-testid=remote-video][data-participant="${name}"])`);

/** Every tile's box, the viewport and whether the grid scrolls; measured after the layout of
 * the current tiles was painted. */
function measure(page) {
  return page.evaluate(async () => {
    await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
    const grid = document.getElementById('grid');
    const tiles = [...grid.querySelectorAll(':scope > .tile')].map((el) => {
      const r = el.getBoundingClientRect();
      return { left: r.left, top: r.top, right: r.right, bottom: r.bottom, width: r.width, height: r.height, pinned: el.dataset.pinned === 'true' };
    });
    return {
      tiles,
      viewport: { width: innerWidth, height: innerHeight },
      grid: { scrollHeight: grid.scrollHeight, clientHeight: grid.clientHeight, scrollWidth: grid.scrollWidth, clientWidth: grid.clientWidth },
      page: { scrollHeight: document.scrollingElement.scrollHeight, scrollWidth: document.scrollingElement.scrollWidth },
    };
  });
}

/** Asserts that the `n` tiles of measurement `m` lie inside the viewport, apart, unscrolled. */
function assertFits(m, n, what) {
  const where = `${what}: ${JSON.stringify(m)}`;
  assert.equal(m.tiles.length, n, `${n} tiles — ${where}`);
  for (const t of m.tiles) {
    assert.ok(t.width > 0 && t.height > 0, `a tile with no size — ${where}`);
    assert.ok(t.left >= 0 && t.top >= 0 && t.right <= m.viewport.width && t.bottom <= m.viewport.height,
      `a tile out of the viewport: ${JSON.stringify(t)} — ${where}`);
  }
  for (let i = 0; i < m.tiles.length; i++) {
    for (let j = i + 1; j < m.tiles.length; j++) {
      const [a, b] = [m.tiles[i], m.tiles[j]];
      const x = Math.min(a.right, b.right) - Math.max(a.left, b.left);
      const y = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
      assert.ok(x <= 0.5 || y <= 0.5, `tiles ${i} and ${j} overlap — ${where}`);
    }
  }
  assert.ok(m.grid.scrollHeight <= m.grid.clientHeight, `the grid scrolls down — ${where}`);
  assert.ok(m.grid.scrollWidth <= m.grid.clientWidth, `the grid scrolls sideways — ${where}`);
  assert.ok(m.page.scrollHeight <= m.viewport.height && m.page.scrollWidth <= m.viewport.width, `the page scrolls — ${where}`);
}

const area = (t) => t.width * t.height;

test('mic-off icon, connection quality, and a tile pinned by a click or the keyboard', async () => {
  const ada = await joinPage(ctx.browser, ctx.server.url, 'tiles', 'Ada');
  const bo = await joinPage(ctx.browser, ctx.server.url, 'tiles', 'Bo');
  const cy = await joinPage(ctx.browser, ctx.server.url, 'tiles', 'Cy');
  await waitForVideoFrom(ada, 'Bo');
  await waitForVideoFrom(ada, 'Cy');
  for (const p of [ada, bo, cy]) await assertUdp(p);

  // Bo mutes the microphone: a crossed microphone on Bo's tile at Ada and on Bo's own tile.
  assert.equal(await tileOf(ada, 'Bo').getByTestId('mic-muted').count(), 0, 'no icon while the mic is on');
  await bo.getByTestId('mute-audio').click();
  const icon = tileOf(ada, 'Bo').getByTestId('mic-muted');
  await icon.waitFor({ timeout: 5000 });
  assert.equal(await icon.getAttribute('role'), 'img');
  assert.equal(await icon.getAttribute('aria-label'), 'Microphone off');
  assert.equal(await tileOf(ada, 'Bo').getAttribute('data-audio-muted'), 'true');
  assert.equal(await tileOf(ada, 'Cy').getByTestId('mic-muted').count(), 0, 'Cy is not muted');
  await bo.locator('.tile.local [data-testid=mic-muted]').waitFor({ timeout: 5000 });
  assert.equal(await bo.locator('.tile.local').getAttribute('data-audio-muted'), 'true');
  await bo.getByTestId('mute-audio').click();
  await icon.waitFor({ state: 'detached', timeout: 5000 });
  assert.equal(await bo.locator('.tile.local [data-testid=mic-muted]').count(), 0);

  // Connection quality: every tile, the own included, good on loopback, the numbers in its title.
  for (const page of [ada, bo]) {
    const qualities = await pollPage(page, () => {
      const els = [...document.querySelectorAll('.tile [data-testid=connection-quality]')];
      const all = els.map((el) => ({ quality: el.dataset.quality, title: el.title, label: el.getAttribute('aria-label') }));
      return els.length === 3 && all.every((q) => q.quality === 'good' && /\d+ ms/.test(q.title) && /\d+\.\d %/.test(q.title)) && all;
    }, null, 15000).catch(async (e) => {
      throw new Error(`${e.message}: ${JSON.stringify(await page.evaluate(() => [...document.querySelectorAll('[data-testid=connection-quality]')].map((el) => [el.dataset.quality, el.title])))}`);
    });
    console.log(`connection quality at ${new URL(page.url()).searchParams.get('name')}: ${qualities.map((q) => q.title).join(' | ')}`);
    for (const q of qualities) assert.equal(q.label, q.title);
  }

  // A click on Bo's tile pins it: large, the others in a strip.
  const before = await measure(ada);
  await tileOf(ada, 'Bo').click();
  assert.equal(await tileOf(ada, 'Bo').getAttribute('data-pinned'), 'true');
  assert.equal(await tileOf(ada, 'Bo').getByTestId('tile-pin').getAttribute('aria-pressed'), 'true');
  assert.equal(await tileOf(ada, 'Bo').getByTestId('tile-pin').getAttribute('aria-label'), 'Bo: unpin');
  let m = await measure(ada);
  const pinned = m.tiles.filter((t) => t.pinned);
  const others = m.tiles.filter((t) => !t.pinned);
  assert.equal(pinned.length, 1, JSON.stringify(m));
  for (const o of others) assert.ok(area(pinned[0]) >= 3 * area(o), `pinned ${JSON.stringify(pinned[0])} vs ${JSON.stringify(o)}`);
  assertFits(m, 3, 'Bo pinned');
  console.log(`pinned: ${Math.round(pinned[0].width)}×${Math.round(pinned[0].height)}, others ${others.map((t) => `${Math.round(t.width)}×${Math.round(t.height)}`).join(', ')}`);
  await ada.screenshot({ path: join(artifacts, 'tiles-pinned.png') });

  // The quality select in a tile does not pin it.
  await tileOf(ada, 'Cy').getByTestId('quality-pin').selectOption('low');
  assert.equal(await tileOf(ada, 'Cy').getAttribute('data-pinned'), 'false');
  assert.equal(await tileOf(ada, 'Bo').getAttribute('data-pinned'), 'true');
  await tileOf(ada, 'Cy').getByTestId('quality-pin').selectOption('auto');

  // axe-core with the icons, the indicators and a pinned tile.
  await bo.getByTestId('mute-audio').click();
  await icon.waitFor({ timeout: 5000 });
  assert.deepEqual(await violations(ada), []);
  await bo.getByTestId('mute-audio').click();

  // A second click unpins: the tiles are equal again.
  await tileOf(ada, 'Bo').click();
  assert.equal(await ada.locator('.tile[data-pinned=true]').count(), 0);
  m = await measure(ada);
  for (const t of m.tiles) assert.ok(Math.abs(area(t) - area(m.tiles[0])) < 4, `equal tiles again: ${JSON.stringify(m.tiles)}`);
  assert.deepEqual(m.tiles.map((t) => Math.round(t.width)), before.tiles.map((t) => Math.round(t.width)));

  // One pinned at a time: clicking Cy's tile moves the pin from Bo's; the own tile pins too.
  await tileOf(ada, 'Bo').click();
  await tileOf(ada, 'Cy').click();
  assert.deepEqual(await ada.locator('.tile[data-pinned=true]').count(), 1);
  assert.equal(await tileOf(ada, 'Cy').getAttribute('data-pinned'), 'true');
  await ada.locator('.tile.local').click();
  assert.equal(await ada.locator('.tile.local').getAttribute('data-pinned'), 'true');
  assert.equal(await ada.locator('.tile[data-pinned=true]').count(), 1);
  await ada.locator('.tile.local').click();

  // The keyboard: on a tile's focused pin button Enter pins, Space unpins.
  const button = tileOf(ada, 'Bo').getByTestId('tile-pin');
  await button.focus();
  await ada.keyboard.press('Enter');
  assert.equal(await tileOf(ada, 'Bo').getAttribute('data-pinned'), 'true');
  await ada.keyboard.press(' ');
  assert.equal(await tileOf(ada, 'Bo').getAttribute('data-pinned'), 'false');

  // A pinned participant who leaves leaves nothing pinned.
  await tileOf(ada, 'Cy').click();
  assert.equal(await tileOf(ada, 'Cy').getAttribute('data-pinned'), 'true');
  await cy.context().close();
  await pollPage(ada, () => document.querySelectorAll('#grid > .tile').length === 2 && !document.querySelector('.tile[data-pinned=true]')
    && !document.getElementById('grid').className.includes('pinned'), null, 10000);
  assertFits(await measure(ada), 2, 'after Cy left');
  for (const p of [ada, bo]) await p.context().close();
});

test('1, 2, 4, 9 and 16 tiles fit a 1280×720 window without scrolling (sori-bench fills the room)', async () => {
  const room = 'sixteen';
  const context = await ctx.browser.newContext({ viewport: { width: 1280, height: 720 } });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error('[Ada] page error:', e.message));
  await page.goto(`${ctx.server.url}/?room=${room}&name=Ada&autojoin=1`);
  await page.locator('.tile.local').waitFor();
  const sizes = {};
  const expect = async (n) => {
    await pollPage(page, (k) => document.querySelectorAll('#grid > .tile').length === k, n, 20000);
    const m = await measure(page);
    assertFits(m, n, `${n} tiles at 1280×720`);
    sizes[n] = `${Math.round(m.tiles[0].width)}×${Math.round(m.tiles[0].height)}`;
    return m;
  };
  await expect(1);
  bench(room, 'fanout', 1); // one publisher (one tile) and one receiver (none)
  await expect(2);
  bench(room, 'meeting', 2);
  await expect(4);
  bench(room, 'meeting', 5);
  await expect(9);
  bench(room, 'meeting', 7);
  await expect(16);
  assert.equal(await page.getByTestId('remote-video').count(), 15);
  console.log(`tile sizes at 1280×720: ${Object.entries(sizes).map(([n, s]) => `${n}: ${s}`).join(', ')}`);
  // What the synthetic video shows: frames decoded and their size, per tile.
  const videos = await page.evaluate(() => [...document.querySelectorAll('[data-testid=remote-video]')]
    .map((v) => `${v.videoWidth}×${v.videoHeight}/${v.getVideoPlaybackQuality().totalVideoFrames}`));
  console.log(`remote videos (width×height/frames): ${videos.join(' ')}`);
  // Their packets arrive all the same: every tile's quality is measured (loss from its packets).
  const measured = await pollPage(page, () => {
    const q = [...document.querySelectorAll('.tile [data-testid=connection-quality]')];
    return q.every((el) => el.dataset.quality !== 'unknown' && /%/.test(el.title)) && q.map((el) => el.dataset.quality);
  }, null, 10000);
  console.log(`connection quality of the 16 tiles: ${measured.join(' ')}`);
  await page.screenshot({ path: join(artifacts, 'tiles-16.png') });

  // Pinned among 16, and at 1366×768, the tiles still fit.
  await page.locator('.tile').nth(5).click();
  const m = await measure(page);
  assertFits(m, 16, '16 tiles, one pinned');
  const big = m.tiles.find((t) => t.pinned);
  for (const t of m.tiles.filter((x) => !x.pinned)) assert.ok(area(big) >= 3 * area(t));
  await page.screenshot({ path: join(artifacts, 'tiles-16-pinned.png') });
  await page.locator('.tile').nth(5).click();
  await page.setViewportSize({ width: 1366, height: 768 });
  const wide = await measure(page);
  assertFits(wide, 16, '16 tiles at 1366×768');
  console.log(`16 tiles at 1366×768: ${Math.round(wide.tiles[0].width)}×${Math.round(wide.tiles[0].height)}`);
  await context.close();
});

test('more tiles than fit: pages of tiles, and only the shown ones receive video', async () => {
  const room = 'pages';
  const context = await ctx.browser.newContext({ viewport: { width: 1000, height: 600 } });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error('[Ada] page error:', e.message));
  await page.goto(`${ctx.server.url}/?room=${room}&name=Ada&autojoin=1`);
  bench(room, 'meeting', 10);
  await pollPage(page, () => document.querySelectorAll('[data-testid="remote-video"]').length === 10, undefined, 30000);
  await page.getByTestId('pager').waitFor();
  assert.equal(await page.getByTestId('page-label').textContent(), '1 / 2');

  /** The others' names on this page and off it. */
  const split = () => page.evaluate(() => {
    const out = { on: [], off: [] };
    for (const v of document.querySelectorAll('[data-testid="remote-video"]')) {
      (v.closest('.tile').dataset.offPage === 'true' ? out.off : out.on).push(v.dataset.participant);
    }
    out.on.sort();
    out.off.sort();
    return out;
  });
  /** Whose video bytes grow over one second. */
  const flowing = async () => {
    const a = await page.evaluate(() => window.sori.videoBytesByName());
    await page.waitForTimeout(1000);
    const b = await page.evaluate(() => window.sori.videoBytesByName());
    return Object.keys(b).filter((n) => b[n] > (a[n] || 0)).sort();
  };
  /** Waits until exactly the tiles on the page receive video. */
  const onlyShownFlow = async () => {
    const deadline = Date.now() + 15000;
    for (;;) {
      const { on, off } = await split();
      const got = await flowing();
      if (JSON.stringify(got) === JSON.stringify(on)) return { on, off };
      if (Date.now() > deadline) assert.fail(`video flows from ${got}, the page shows ${on} (off: ${off})`);
    }
  };
  const first = await onlyShownFlow();
  assert.ok(first.off.length >= 1, `some tiles are on the next page: ${JSON.stringify(first)}`);
  // Every tile of the page inside the window, none scrolled to.
  const inView = await page.evaluate(() => [...document.querySelectorAll('#grid > .tile')]
    .filter((t) => t.dataset.offPage !== 'true')
    .every((t) => { const r = t.getBoundingClientRect(); return r.left >= 0 && r.top >= 0 && r.right <= innerWidth && r.bottom <= innerHeight; }));
  assert.ok(inView, 'the page fits the window');

  await page.getByTestId('page-next').click();
  assert.equal(await page.getByTestId('page-label').textContent(), '2 / 2');
  const second = await onlyShownFlow();
  for (const name of first.off) assert.ok(second.on.includes(name), `${name} is on page 2 and its video flows`);
  for (const name of second.off) assert.ok(first.on.includes(name), `${name} left the page and stopped`);
  await page.screenshot({ path: join(artifacts, 'tiles-pages.png') });
  await assertUdp(page);
  await context.close();
});
