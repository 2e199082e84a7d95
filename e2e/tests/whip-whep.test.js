// WHIP and WHEP with real clients: a GStreamer encoder (webrtcbin: VP8 or H.264 and Opus, one
// POST of its offer) publishes into a room, a Chromium participant decodes it and the room's
// recording has it in a file of its own; the WHEP player page (watch.html) in Chromium decodes
// the room's speaker and one named participant; the encoder's DELETE takes it out of the room
// at the others. Join times are measured from the POST to the first decoded frame.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { execFileSync, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';
import { startServer, launchOptions, joinPage, waitForMediaFrom, pollPage, assertUdp, root, split, speechWav } from './helpers.js';

const GST_WHIP = join(root, 'e2e', 'whip', 'gst-whip.py');
const ctx = { server: null, browser: null, talking: null };
// GStreamer's ICE (libnice) gathers no loopback candidates: its UDP checks reach a server
// that advertises 127.0.0.1 from the machine's address, and the answers from 127.0.0.1 to it
// are dropped (only ICE-TCP gets through). In the network namespace scripts/test gives the
// browser tests, the server advertises that namespace's own address, and offers no ICE-TCP:
// whatever connects, connects over UDP.
const owned = process.env.SORI_E2E_NETNS === '1';
// Recordings need the media server in the process (split: it records with its own endpoints).
const recordings = split ? null : mkdtempSync(join(tmpdir(), 'sori-whip-recordings-'));

before(async () => {
  const args = recordings ? ['--recordings-dir', recordings] : [];
  ctx.server = await startServer(args, { advertise: !owned, media: owned ? ['--no-rtc-tcp'] : [] });
  ctx.browser = await chromium.launch(launchOptions());
  const wav = join(tmpdir(), `sori-whep-speech-${process.pid}.wav`);
  speechWav(wav);
  const talking = launchOptions();
  talking.args.push(`--use-file-for-fake-audio-capture=${wav}`);
  ctx.talking = await chromium.launch(talking);
});

after(async () => {
  await ctx.browser?.close();
  await ctx.talking?.close();
  await ctx.server?.stop();
  if (recordings) rmSync(recordings, { recursive: true, force: true });
});

/**
 * Starts the GStreamer WHIP encoder on `url`; resolves once it is answered, with the time its
 * offer left (Unix ms) and a `stop()` that ends it with SIGTERM (its DELETE) and resolves with
 * what it printed.
 */
async function startEncoder(url, args = []) {
  const child = spawn('/usr/bin/python3', [GST_WHIP, url, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const out = [];
  const err = [];
  createInterface({ input: child.stderr }).on('line', (l) => err.push(l));
  const lines = createInterface({ input: child.stdout });
  const exited = new Promise((r) => child.once('exit', r));
  const published = await new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`gst-whip exited with ${code}: ${[...out, ...err].join('\n')}`)));
    lines.on('line', (l) => {
      out.push(l);
      if (l.startsWith('published ')) resolve(l.slice('published '.length));
    });
  });
  const postedAt = Number(out.find((l) => l.startsWith('posted ')).split(' ')[1]);
  return {
    postedAt,
    location: published,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
      return out;
    },
  };
}

/** The time (Unix ms, this machine's clock) at which `page` decoded its first frame of
 * `name`'s video, polled every 10 ms in the page. */
function firstFrameFrom(page, name) {
  return page.evaluate(async (who) => {
    const deadline = Date.now() + 20000;
    while (Date.now() < deadline) {
      const m = await window.sori.inboundFrom(who);
      if (m.videoFrames > 0) return Date.now();
      await new Promise((r) => setTimeout(r, 10));
    }
    return null;
  }, name);
}

async function sessions(kind) {
  const m = await ctx.server.metrics();
  return m.value(`sori_${kind}_sessions`);
}

async function until(what, check, timeout = 10000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeout} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('a GStreamer encoder publishes over WHIP: a browser in the room decodes it, records it, and its DELETE takes it out', { skip: owned ? false : 'needs the network namespace scripts/test creates (run as root)' }, async () => {
  const ada = await joinPage(ctx.browser, ctx.server.url, 'whip-live', 'Ada');
  await pollPage(ada, () => window.sori && window.sori.me);
  const encoder = await startEncoder(`${ctx.server.url}/whip/whip-live?name=OBS`);
  try {
    const decodedAt = await firstFrameFrom(ada, 'OBS');
    assert.ok(decodedAt, 'Ada decoded no frame of the encoder');
    const joinMs = decodedAt - encoder.postedAt;
    console.log(`WHIP POST → first frame decoded at a browser in the room: ${joinMs} ms`);
    const media = await waitForMediaFrom(ada, 'OBS');
    assert.ok(media.videoFrames > 10 && media.audioPackets > 0, JSON.stringify(media));
    await assertUdp(ada);
    assert.equal(await sessions('whip'), 1);
    // The people list names it like anyone else, marked as a stream.
    await pollPage(ada, () => {
      const row = document.querySelector('[data-testid="participant"][data-participant="OBS"]');
      return row && row.innerText.includes('streaming (WHIP)');
    });
    if (recordings) {
      // Recorded like anyone else: its own file, which ffprobe and ffmpeg read.
      await ada.getByTestId('record').click();
      await ada.getByTestId('recording-indicator').waitFor({ state: 'visible' });
      await pollPage(ada, async () => (await window.sori.inboundFrom('OBS')).videoFrames > 0);
      const at = (await ada.evaluate(() => window.sori.inboundFrom('OBS'))).videoFrames;
      // Three seconds of the encoder's video at Ada while recording.
      await pollPage(ada, async (n) => (await window.sori.inboundFrom('OBS')).videoFrames > n + 90, at);
      await ada.getByTestId('record').click();
      await ada.getByTestId('recording-indicator').waitFor({ state: 'hidden' });
      const list = await (await fetch(`${ctx.server.url}/recordings`)).json();
      const file = list[0].files.find((f) => f.name === 'OBS');
      assert.ok(file, JSON.stringify(list));
      const local = join(recordings, `download-${file.file}`);
      writeFileSync(local, Buffer.from(await (await fetch(`${ctx.server.url}${file.href}`)).arrayBuffer()));
      const info = JSON.parse(execFileSync('ffprobe', ['-v', 'error', '-show_streams', '-show_format', '-of', 'json', local]).toString());
      assert.deepEqual(info.streams.map((x) => x.codec_name).sort(), ['opus', 'vp8']);
      assert.ok(Number(info.format.duration) > 2, `the encoder's recording: ${info.format.duration} s`);
      const errors = execFileSync('ffmpeg', ['-v', 'error', '-i', local, '-f', 'null', '-'], { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
      assert.equal(errors, '', 'the recording decodes cleanly');
      console.log(`the encoder's recording: ${Number(info.format.duration).toFixed(2)} s of vp8 and opus`);
    }
  } finally {
    const printed = await encoder.stop();
    assert.ok(printed.includes('deleted 200'), printed.join('\n'));
  }
  // Gone at Ada: its tile goes, and the server holds no session.
  await pollPage(ada, () => !document.querySelector('[data-testid="remote-video"][data-participant="OBS"]'));
  assert.equal(await sessions('whip'), 0);
  await ada.context().close();
});

test('an H.264 encoder, as OBS sends, publishes into rooms whose codecs put H.264 first', { skip: owned ? false : 'needs the network namespace scripts/test creates (run as root)' }, async () => {
  const config = join(tmpdir(), `sori-h264-${process.pid}.toml`);
  writeFileSync(config, '[media]\nvideo_codecs = ["h264", "vp8"]\n');
  const server = await startServer([], { advertise: false, media: ['--config', config, '--no-rtc-tcp'] });
  try {
    const ada = await joinPage(ctx.browser, server.url, 'obs-h264', 'Ada');
    await pollPage(ada, () => window.sori && window.sori.me);
    const encoder = await startEncoder(`${server.url}/whip/obs-h264?name=OBS`, ['--codec', 'h264']);
    try {
      const decodedAt = await firstFrameFrom(ada, 'OBS');
      assert.ok(decodedAt, 'Ada decoded no frame of the H.264 encoder');
      console.log(`WHIP POST (H.264) → first frame decoded at a browser in the room: ${decodedAt - encoder.postedAt} ms`);
      await waitForMediaFrom(ada, 'OBS');
      const video = await ada.evaluate(() => window.sori.videoFrom('OBS'));
      assert.equal(video.codec, 'video/H264', JSON.stringify(video));
      await assertUdp(ada);
    } finally {
      await encoder.stop();
    }
    // A VP8-only encoder in that room is refused, naming both codecs.
    const refused = spawn('/usr/bin/python3', [GST_WHIP, `${server.url}/whip/obs-h264?name=VP8`], { stdio: ['ignore', 'pipe', 'pipe'] });
    const err = [];
    createInterface({ input: refused.stderr }).on('line', (l) => err.push(l));
    const code = await new Promise((r) => refused.once('exit', r));
    assert.equal(code, 1);
    assert.match(err.join('\n'), /refused: 406 .*room uses h264 video.*vp8/);
    await ada.context().close();
  } finally {
    await server.stop();
  }
});

test('with the media server elsewhere, the WHEP player is told plainly that it cannot watch', { skip: split ? false : 'split deployment only (SORI_E2E_SPLIT=1)' }, async () => {
  // A remote media server cannot feed a viewer's own m-lines (docs/whip-whep.md, Limits).
  const encoder = await startEncoder(`${ctx.server.url}/whip/whep-split?name=OBS`);
  try {
    const context = await ctx.browser.newContext();
    const page = await context.newPage();
    await page.goto(`${ctx.server.url}/watch.html?room=whep-split`);
    const error = await pollPage(page, () => window.whep.error);
    assert.match(error, /^501 .*not supported by a remote media server/);
    assert.match(await page.getByTestId('whep-status').innerText(), /Cannot watch: 501/);
    assert.equal(await sessions('whep'), 0);
    await context.close();
  } finally {
    await encoder.stop();
  }
});

test('the WHEP player decodes the room\'s speaker and a named participant, and switches to whoever takes the floor', { skip: split ? 'WHEP needs the in-process media server (the test above checks the refusal)' : false }, async () => {
  const encoder = await startEncoder(`${ctx.server.url}/whip/whep-stage?name=OBS`);
  const viewers = [];
  let bo = null;
  try {
    const open = async (query) => {
      const context = await ctx.browser.newContext({ viewport: { width: 960, height: 600 } });
      const page = await context.newPage();
      page.on('console', (m) => { if (m.type() === 'error') console.error(`[watch ${query}] ${m.text()}`); });
      await page.goto(`${ctx.server.url}/watch.html?${query}`);
      viewers.push(page);
      return page;
    };
    // Nobody spoke yet: the room's viewer shows its first publisher, the encoder.
    const room = await open('room=whep-stage');
    const firstAt = await pollPage(room, () => window.whep.firstFrameAt);
    const [postedAt, connectedAt] = await room.evaluate(() => [window.whep.postedAt, window.whep.connectedAt]);
    console.log(`WHEP POST → first decoded frame (room viewer, encoder's video): ${firstAt - postedAt} ms (connected after ${connectedAt - postedAt} ms)`);
    const ball = await pollPage(room, () => window.whep.shade());
    // The encoder's ball on black.
    assert.ok(ball[1] < 60, `the encoder's picture: ${ball}`);

    // Bo joins from a browser and talks: he takes the floor, and the room's viewer follows.
    bo = await joinPage(ctx.talking, ctx.server.url, 'whep-stage', 'Bo');
    await pollPage(bo, () => window.sori && window.sori.me);
    // Bo's camera and microphone published (the encoder's two tracks and his).
    await until('Bo publishes', async () => (await ctx.server.metrics()).value('sori_tracks') >= 4);
    const named = await open('room=whep-stage&who=Bo');
    const namedAt = await pollPage(named, () => window.whep.firstFrameAt);
    const [namedPosted, namedConnected] = await named.evaluate(() => [window.whep.postedAt, window.whep.connectedAt]);
    console.log(`WHEP POST → first decoded frame (Bo's camera, named): ${namedAt - namedPosted} ms (connected after ${namedConnected - namedPosted} ms)`);
    const boShade = await pollPage(named, () => window.whep.shade());
    // Chromium's fake camera: a green picture.
    assert.ok(boShade[1] > 80, `Bo's picture: ${boShade}`);
    const switched = Date.now();
    await pollPage(room, () => { const s = window.whep.shade(); return s && s[1] > 80 && s; }, undefined, 15000);
    console.log(`room viewer on Bo's camera ${Date.now() - switched} ms after the named viewer first decoded it`);

    for (const page of viewers) {
      const before = await page.evaluate(() => window.whep.inbound());
      const after = await pollPage(page, async (n) => {
        const m = await window.whep.inbound();
        return m.videoFrames > n + 30 && m;
      }, before.videoFrames);
      assert.equal(after.pair && after.pair.protocol, 'udp', JSON.stringify(after));
      assert.ok(after.audioPackets > 0, JSON.stringify(after));
    }
    await assertUdp(bo);
    assert.equal(await sessions('whep'), 2);
    // Viewers are not participants: Bo sees only the encoder.
    const others = await bo.evaluate(() => document.querySelectorAll('[data-testid="remote-video"]').length);
    assert.equal(others, 1);
  } finally {
    // Leaving the page ends its session (its DELETE on pagehide).
    for (const page of viewers) await page.close({ runBeforeUnload: true });
    await encoder.stop();
    await bo?.context().close();
  }
  await until('the viewers\' sessions end', async () => (await sessions('whep')) === 0);
});
