// RecorderEndpoint through the unmodified kurento-client: a browser's fake camera and
// microphone recorded by `sori media`, the files judged by Debian's ffprobe and ffmpeg.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, statSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launchBrowser } from './helpers.js';
import { startMedia, connectClient, blankPageServer, peerPage, negotiate, waitForFrames, assertPcUdp } from './kurento.js';

let media; let browser; let pages; let client; let dir;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sori-recordings-'));
  media = await startMedia(['--recordings-dir', dir]);
  browser = await launchBrowser();
  pages = await blankPageServer();
  client = await connectClient(media.url);
});

after(async () => {
  client?.close();
  await browser?.close();
  await pages?.close();
  await media?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function probe(file) {
  const out = execFileSync('ffprobe', ['-v', 'error', '-count_frames', '-show_streams', '-show_format', '-of', 'json', file]);
  return JSON.parse(out.toString());
}

/** Decodes the whole file; returns ffmpeg's error output (empty when clean). */
function decodeErrors(file) {
  try {
    return execFileSync('ffmpeg', ['-v', 'error', '-i', file, '-f', 'null', '-'], { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
  } catch (e) {
    return `${e.stderr}` || `ffmpeg failed: ${e.message}`;
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A browser sending camera and microphone into a WebRtcEndpoint of a new pipeline. */
async function sender(label, codec) {
  const page = await peerPage(browser, pages.url, label);
  const pipeline = await client.create('MediaPipeline');
  const webRtc = await pipeline.create('WebRtcEndpoint');
  await webRtc.connect(webRtc);
  await negotiate(page, 'loop', webRtc, { send: true, recv: true, codec });
  await waitForFrames(page, 'loop');
  await assertPcUdp(page, 'loop');
  return { page, pipeline, webRtc };
}

/** Records `seconds` of the sender into `file` with `profile`; returns ffprobe's view. */
async function record({ page, pipeline, webRtc }, file, profile, seconds) {
  const recorder = await pipeline.create('RecorderEndpoint', { uri: `file://${file}`, mediaProfile: profile });
  const events = [];
  for (const name of ['Recording', 'Stopped', 'UriEndpointStateChanged']) {
    recorder.on(name, (e) => events.push(name === 'UriEndpointStateChanged' ? `state:${e.state}` : name));
  }
  const flowing = new Promise((resolve) => recorder.on('MediaFlowInStateChanged', (e) => e.state === 'FLOWING' && resolve()));
  const videoOut = (field) => page.evaluate(async (f) => {
    let n = 0;
    (await window.pcs.loop.pc.getStats()).forEach((r) => { if (r.type === 'outbound-rtp' && r.kind === 'video') n = r[f]; });
    return n;
  }, field);
  const keyframesBefore = await videoOut('keyFramesEncoded');
  await webRtc.connect(recorder);
  await recorder.record();
  await flowing;
  // The file starts at the keyframe the recorder asks for: the browser encoding it starts the
  // measured window.
  await page.waitForFunction(async (k) => {
    let n = 0;
    (await window.pcs.loop.pc.getStats()).forEach((r) => { if (r.type === 'outbound-rtp' && r.kind === 'video') n = r.keyFramesEncoded; });
    return n > k;
  }, keyframesBefore, { polling: 50 });
  const sent = () => videoOut('framesSent');
  const sentBefore = await sent();
  // The recording's length is what is being tested: a fixed stretch of wall-clock time.
  await sleep(seconds * 1000);
  await recorder.stopAndWait();
  const framesSent = (await sent()) - sentBefore;
  assert.deepEqual(events, ['state:START', 'Recording', 'state:STOP', 'Stopped']);
  await recorder.release();
  return { ...probe(file), framesSent };
}

test('a 10 s recording of the fake camera: VP8 + Opus WebM, right length, decodes cleanly, in sync', async () => {
  const s = await sender('rec10');
  const file = join(dir, 'ten.webm');
  const info = await record(s, file, 'WEBM', 10);
  const video = info.streams.find((x) => x.codec_type === 'video');
  const audio = info.streams.find((x) => x.codec_type === 'audio');
  assert.equal(info.format.format_name.includes('webm') || info.format.format_name.includes('matroska'), true);
  assert.equal(video.codec_name, 'vp8');
  assert.equal(audio.codec_name, 'opus');
  const duration = Number(info.format.duration);
  const frames = Number(video.nb_read_frames);
  // What the browser sent while the recorder was fed.
  const expected = info.framesSent;
  console.log(`10 s recording: ${statSync(file).size} bytes, duration ${duration.toFixed(3)} s, ${frames} video frames of ${expected} sent ` +
    `(${video.width}x${video.height}), ${audio.nb_read_frames} audio frames, start video ${video.start_time} audio ${audio.start_time}`);
  assert.ok(Math.abs(duration - 10) <= 0.5, `duration ${duration} within 5% of 10 s`);
  assert.ok(frames >= 0.9 * expected, `${frames} video frames, expected about ${expected}`);
  assert.ok(Math.abs(Number(video.start_time) - Number(audio.start_time)) <= 0.1, 'audio and video start within 100 ms');
  assert.equal(decodeErrors(file), '', 'ffmpeg decodes every frame without errors');
  await s.pipeline.release();
  await s.page.context().close();
});

test('every WebM and MKV profile records what it names', async () => {
  const s = await sender('profiles');
  for (const [profile, ext, kinds] of [
    ['WEBM_AUDIO_ONLY', 'webm', ['audio']],
    ['WEBM_VIDEO_ONLY', 'webm', ['video']],
    ['MKV', 'mkv', ['audio', 'video']],
    ['MKV_AUDIO_ONLY', 'mkv', ['audio']],
    ['MKV_VIDEO_ONLY', 'mkv', ['video']],
  ]) {
    const file = join(dir, `${profile}.${ext}`);
    const info = await record(s, file, profile, 3);
    assert.deepEqual(info.streams.map((x) => x.codec_type).sort(), kinds, profile);
    const duration = Number(info.format.duration);
    assert.ok(duration > 2.5 && duration < 3.6, `${profile}: ${duration} s`);
    assert.equal(decodeErrors(file), '', `${profile} decodes cleanly`);
    console.log(`${profile}: ${duration.toFixed(2)} s, ${info.streams.map((x) => x.codec_name).join('+')}`);
  }
  await s.pipeline.release();
  await s.page.context().close();
});

test('H.264 video goes into Matroska with Opus, and decodes cleanly', async () => {
  const s = await sender('h264', 'H264');
  const file = join(dir, 'h264.mkv');
  const info = await record(s, file, 'MKV', 4);
  const video = info.streams.find((x) => x.codec_type === 'video');
  assert.deepEqual(info.streams.map((x) => x.codec_name).sort(), ['h264', 'opus']);
  const duration = Number(info.format.duration);
  assert.ok(duration > 3.5 && duration < 4.6, `${duration} s`);
  assert.ok(Number(video.nb_read_frames) >= 0.9 * info.framesSent, `${video.nb_read_frames} of ${info.framesSent} frames`);
  assert.equal(decodeErrors(file), '', 'decodes cleanly');
  console.log(`H.264 MKV: ${duration.toFixed(2)} s, ${video.width}x${video.height}, ${video.nb_read_frames} frames of ${info.framesSent} sent`);
  // WebM cannot hold H.264: the same source recorded as WEBM keeps its audio.
  const webm = await record(s, join(dir, 'h264.webm'), 'WEBM', 2);
  assert.deepEqual(webm.streams.map((x) => x.codec_name), ['opus']);
  await s.pipeline.release();
  await s.page.context().close();
});

test('the source can be switched while recording: one file, continuous, decoding cleanly', async () => {
  const pa = await peerPage(browser, pages.url, 'first-source');
  const pb = await peerPage(browser, pages.url, 'second-source');
  const pipeline = await client.create('MediaPipeline');
  const [ea, eb] = [await pipeline.create('WebRtcEndpoint'), await pipeline.create('WebRtcEndpoint')];
  const pass = await pipeline.create('PassThrough');
  await negotiate(pa, 'send', ea, { send: true });
  await negotiate(pb, 'send', eb, { send: true });
  const file = join(dir, 'switched.webm');
  const recorder = await pipeline.create('RecorderEndpoint', { uri: `file://${file}` });
  const flowing = new Promise((resolve) => recorder.on('MediaFlowInStateChanged', (e) => e.state === 'FLOWING' && resolve()));
  await ea.connect(pass);
  await pass.connect(recorder);
  await recorder.record();
  await flowing;
  await assertPcUdp(pa, 'send');
  await sleep(3000);
  // Hot swap: the second source replaces the first, which then goes away entirely.
  await eb.connect(pass);
  await ea.release();
  await sleep(3000);
  await assertPcUdp(pb, 'send');
  await recorder.stopAndWait();
  const info = probe(file);
  const duration = Number(info.format.duration);
  const errors = decodeErrors(file);
  console.log(`switched sources: ${duration.toFixed(2)} s, ${info.streams.map((x) => `${x.codec_name}:${x.nb_read_frames}`).join(', ')}, decode errors: ${errors ? errors.trim() : 'none'}`);
  assert.deepEqual(info.streams.map((x) => x.codec_name).sort(), ['opus', 'vp8']);
  assert.ok(duration > 5 && duration < 6.8, `${duration} s for about 6 s of recording`);
  assert.equal(errors, '', 'both sources decode cleanly');
  await pipeline.release();
  await pa.context().close();
  await pb.context().close();
});

test('paths outside the recordings directory are refused; an unwritable one is an Error event', async () => {
  const pipeline = await client.create('MediaPipeline');
  for (const uri of ['file:///etc/passwd', `file://${dir}/../escape.webm`, 'http://example.invalid/x.webm']) {
    await assert.rejects(pipeline.create('RecorderEndpoint', { uri }), (e) => e.code === 40107, uri);
  }
  await assert.rejects(pipeline.create('RecorderEndpoint', { uri: `file://${dir}/x.mp4`, mediaProfile: 'MP4' }), /not supported/);
  const recorder = await pipeline.create('RecorderEndpoint', { uri: `file://${dir}/missing/sub/x.webm` });
  const error = new Promise((resolve) => recorder.on('Error', resolve));
  await recorder.record();
  const e = await error;
  assert.equal(e.type, 'RESOURCE_ERROR_OPEN');
  await pipeline.release();
});

test('a media server killed with SIGKILL mid-recording leaves a file that plays up to within 2 s of the kill', async (t) => {
  const doomed = await startMedia(['--recordings-dir', dir]);
  const c = await connectClient(doomed.url);
  // A failure before the kill must not leave the server (and this file's process) running.
  t.after(async () => {
    c.close();
    await doomed.stop();
  });
  const page = await peerPage(browser, pages.url, 'crash');
  const pipeline = await c.create('MediaPipeline');
  const webRtc = await pipeline.create('WebRtcEndpoint');
  await webRtc.connect(webRtc);
  await negotiate(page, 'loop', webRtc, { send: true, recv: true });
  await waitForFrames(page, 'loop');
  await assertPcUdp(page, 'loop');
  const file = join(dir, 'killed.webm');
  const recorder = await pipeline.create('RecorderEndpoint', { uri: `file://${file}` });
  const flowing = new Promise((resolve) => recorder.on('MediaFlowInStateChanged', (e) => e.state === 'FLOWING' && resolve()));
  await webRtc.connect(recorder);
  await recorder.record();
  await flowing;
  const recordedFor = 6;
  await sleep(recordedFor * 1000);
  const exited = new Promise((r) => doomed.child.once('exit', r));
  doomed.child.kill('SIGKILL');
  await exited;
  c.close();
  const info = probe(file);
  const duration = Number(info.format.duration);
  const errors = decodeErrors(file);
  console.log(`killed after ${recordedFor} s of recording: file of ${statSync(file).size} bytes plays ${duration.toFixed(2)} s; ` +
    `streams ${info.streams.map((x) => `${x.codec_name}:${x.nb_read_frames}`).join(', ')}; decode errors: ${errors ? errors.trim() : 'none'}`);
  assert.ok(duration >= recordedFor - 2, `plays ${duration} s of ${recordedFor}`);
  assert.deepEqual(info.streams.map((x) => x.codec_name).sort(), ['opus', 'vp8']);
  assert.equal(errors, '', 'what is there decodes cleanly');
  await page.context().close();
});
