// Recording a whole room from the web client: the record button, everyone's indicator, one
// file per participant plus a manifest, listed at /recordings and downloadable; ffprobe and
// ffmpeg judge the files.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serverAndBrowser, joinPage, waitForVideoFrom, assertUdp, artifacts } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'sori-room-recordings-'));
const ctx = serverAndBrowser(['--recordings-dir', dir]);
// Runs after the server has stopped (hooks run in the order they were registered).
after(() => rmSync(dir, { recursive: true, force: true }));

test('the record button records every participant into its own file, with a manifest', async () => {
  const names = ['Ada', 'Grace', 'Linus'];
  const pages = [];
  for (const n of names) pages.push(await joinPage(ctx.browser, ctx.server.url, 'rec-room', n));
  for (const [i, page] of pages.entries()) {
    for (const other of names.filter((_, j) => j !== i)) await waitForVideoFrom(page, other);
    await assertUdp(page);
  }
  for (const page of pages) assert.equal(await page.getByTestId('recording-indicator').isVisible(), false);

  const pressed = Date.now();
  await pages[0].getByTestId('record').click();
  for (const page of pages) await page.getByTestId('recording-indicator').waitFor({ state: 'visible' });
  await pages[2].screenshot({ path: join(artifacts, 'room-recording.png') });
  // The recording's length is what is being tested: a fixed stretch of wall-clock time.
  await new Promise((r) => setTimeout(r, 5000));
  await pages[1].getByTestId('record').click();
  // How long the recording ran, as the test saw it: from before the first press to after the
  // second (a loaded machine takes its time over the screenshot and the waits in between).
  const ran = (Date.now() - pressed) / 1000;
  for (const page of pages) await page.getByTestId('recording-indicator').waitFor({ state: 'hidden' });

  const list = await (await fetch(`${ctx.server.url}/recordings`)).json();
  assert.equal(list.length, 1);
  const rec = list[0];
  assert.equal(rec.room, 'rec-room');
  assert.equal(rec.files.length, 3);
  assert.deepEqual(rec.files.map((f) => f.name).sort(), names);
  const manifest = await (await fetch(`${ctx.server.url}${rec.href}`)).json();
  assert.equal(manifest.files.length, 3);
  const summary = [];
  for (const f of rec.files) {
    const res = await fetch(`${ctx.server.url}${f.href}`);
    assert.equal(res.headers.get('content-type'), 'video/webm');
    const local = join(dir, `download-${f.file}`);
    writeFileSync(local, Buffer.from(await res.arrayBuffer()));
    const info = JSON.parse(execFileSync('ffprobe', ['-v', 'error', '-show_streams', '-show_format', '-of', 'json', local]).toString());
    assert.deepEqual(info.streams.map((s) => s.codec_name).sort(), ['opus', 'vp8'], f.name);
    const duration = Number(info.format.duration);
    assert.ok(duration > ran - 1.5 && duration < ran + 0.5, `${f.name}: ${duration} s, recorded for ${ran} s`);
    const errors = execFileSync('ffmpeg', ['-v', 'error', '-i', local, '-f', 'null', '-'], { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
    assert.equal(errors, '', `${f.name} decodes cleanly`);
    assert.equal(typeof f.start_ms, 'number');
    assert.ok(f.start_ms < 3000, `${f.name} starts ${f.start_ms} ms into the recording`);
    summary.push(`${f.name}: ${duration.toFixed(2)} s from +${f.start_ms} ms`);
  }
  console.log(`room recording ${rec.recording}: ${summary.join('; ')}`);
  // Downloads stay inside the recordings directory.
  const escape = await fetch(`${ctx.server.url}/recordings/..%2F..%2Fetc/passwd`);
  assert.equal(escape.status, 404);
});

test('a peer-to-peer room cannot be recorded, and says why', async () => {
  const page = await joinPage(ctx.browser, ctx.server.url, 'rec-p2p', 'Solo', '&mode=p2p');
  await page.getByTestId('status').waitFor();
  await page.getByTestId('record').click();
  await page.locator('#toast').filter({ hasText: 'only SFU rooms can be recorded' }).waitFor({ state: 'visible' });
  assert.equal(await page.getByTestId('recording-indicator').isVisible(), false);
});
