// The camera, the microphone and the speaker: the lobby's preview (live camera, a microphone
// level meter, pickers, camera and microphone switches), the choice remembered in local
// storage, switching devices mid-call without renegotiation (`RTCRtpSender.replaceTrack`), and
// following the system when a device is plugged in or unplugged. A device that is denied,
// missing or busy is left out with a sentence saying what to do (`deviceProblem`).

import { state } from './store.js';
import { $, toast, setText, setAttr } from './page.js';
import { t } from './i18n.js';

const STORE_KEY = 'sori.devices';
/** 720p where the camera has it: the top simulcast layer (docs/simulcast.md). */
const VIDEO = { width: { ideal: 1280 }, height: { ideal: 720 } };
const KINDS = {
  video: { input: 'videoinput', select: 'camera-select', remember: 'camera', device: 'camera' },
  audio: { input: 'audioinput', select: 'mic-select', remember: 'microphone', device: 'microphone' },
};

/** What the person chose, kept across visits: device ids, and whether to join with the camera
 * and the microphone on. */
export const choice = Object.assign(
  { camera: '', microphone: '', speaker: '', cameraOn: true, micOn: true },
  read(),
);

function read() {
  try { return JSON.parse(localStorage.getItem(STORE_KEY)) || {}; } catch { return {}; }
}

function remember() {
  try { localStorage.setItem(STORE_KEY, JSON.stringify(choice)); } catch { /* private mode */ }
}

const gum = (c) => navigator.mediaDevices.getUserMedia(c);

/** getUserMedia constraints for `kind` on device `id` (none: the system's choice). */
function constraints(kind, id) {
  const base = kind === 'video' ? { ...VIDEO } : {};
  if (id) base.deviceId = { exact: id };
  return { [kind]: Object.keys(base).length ? base : true };
}

/** Opens `kind` on the remembered device; one that is gone (unplugged since) gives way to the
 * system's choice. (`ideal` device ids would do this in one call, but Chromium does not always
 * honour them.) */
async function openKind(kind) {
  const id = choice[KINDS[kind].remember];
  try {
    return await gum(constraints(kind, id));
  } catch (err) {
    if (!id || !['OverconstrainedError', 'NotFoundError'].includes(err.name)) throw err;
    return gum(constraints(kind, ''));
  }
}

/**
 * The camera and the microphone, or what of them works: a device that is denied, missing or
 * busy is left out, with a sentence saying what to do about it.
 */
export async function open() {
  try {
    // One request for both: one permission prompt.
    const both = { ...constraints('audio', choice.microphone), ...constraints('video', choice.camera) };
    return { stream: await gum(both), problems: [] };
  } catch {
    // One of them failed, or a remembered device is gone: each on its own says which.
  }
  const [audio, camera] = await Promise.allSettled([openKind('audio'), openKind('video')]);
  const tracks = [audio, camera].flatMap((r) => (r.status === 'fulfilled' ? r.value.getTracks() : []));
  const problems = [];
  if (audio.status === 'rejected') problems.push(deviceProblem('microphone', audio.reason));
  if (camera.status === 'rejected') problems.push(deviceProblem('camera', camera.reason));
  return { stream: new MediaStream(tracks), problems };
}

/** What went wrong with `device` (camera, microphone), and what to do, in a sentence. */
export function deviceProblem(device, err) {
  const name = err && err.name;
  const what = ['NotAllowedError', 'SecurityError'].includes(name) ? 'Denied'
    : ['NotFoundError', 'OverconstrainedError'].includes(name) ? 'Missing'
      : ['NotReadableError', 'AbortError'].includes(name) ? 'Busy' : 'Failed';
  return t(device + what, { why: (err && err.message) || String(err) });
}

// ---------- the lobby's preview ----------

/** The preview's media: `{ stream, problems }` once opened (a promise while opening). */
let preview = null;
let meter = null;

/** Opens the camera and the microphone for the lobby's preview (once; again after `take`). */
export function startPreview() {
  if (!preview) {
    preview = open().then((got) => {
      showPreview(got);
      return got;
    });
  }
  return preview;
}

function showPreview({ stream, problems }) {
  $('preview').srcObject = stream;
  const problem = $('preview-problem');
  problem.textContent = problems.join(' ');
  problem.hidden = !problems.length;
  applySwitches(stream);
  startMeter(stream);
  fillPickers();
}

/** The preview's media for the call: the lobby lets go of it (the meter stops); the next
 * visit to the lobby opens the devices again. */
export async function take() {
  const got = await startPreview();
  preview = null;
  stopMeter();
  $('preview').srcObject = null;
  return got;
}

/** The camera and microphone switches of the lobby: on or off when joining. */
function applySwitches(stream) {
  for (const track of stream.getTracks()) {
    track.enabled = track.kind === 'video' ? choice.cameraOn : choice.micOn;
  }
  const hasVideo = stream.getVideoTracks().length > 0;
  const hasAudio = stream.getAudioTracks().length > 0;
  $('preview-camera').hidden = !hasVideo;
  $('preview-mic').hidden = !hasAudio;
  setText($('preview-camera'), t(choice.cameraOn ? 'stopCamera' : 'startCamera'));
  setAttr($('preview-camera'), 'aria-pressed', String(!choice.cameraOn));
  setText($('preview-mic'), t(choice.micOn ? 'muteMic' : 'unmuteMic'));
  setAttr($('preview-mic'), 'aria-pressed', String(!choice.micOn));
  $('preview-off').hidden = hasVideo && choice.cameraOn;
  setText($('preview-off'), t(hasVideo ? 'cameraIsOff' : 'noCamera'));
  $('mic-level').classList.toggle('off', !hasAudio || !choice.micOn);
}

// The microphone level: the loudness of the last ~20 ms, as a bar from 0 to 100 (silence at
// -60 dBFS and below, full at 0 dBFS), redrawn ten times a second.
function startMeter(stream) {
  stopMeter();
  const track = stream.getAudioTracks()[0];
  const Ctx = window.AudioContext || window.webkitAudioContext;
  if (!track || !Ctx) return;
  const ctx = new Ctx();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 1024;
  ctx.createMediaStreamSource(new MediaStream([track])).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  // A page may not start sound before the person touches it: the meter starts with the first
  // key or click (typing one's name does it).
  const resume = () => { if (ctx.state === 'suspended') ctx.resume(); };
  resume();
  for (const ev of ['pointerdown', 'keydown']) document.addEventListener(ev, resume, { once: true });
  const timer = setInterval(() => {
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const s of samples) sum += s * s;
    const db = 10 * Math.log10(sum / samples.length + 1e-12);
    const level = track.enabled ? Math.round(Math.max(0, Math.min(100, ((db + 60) / 60) * 100))) : 0;
    const bar = $('mic-level');
    setAttr(bar, 'aria-valuenow', String(level));
    bar.style.setProperty('--level', `${level}%`);
  }, 100);
  meter = { ctx, timer };
}

function stopMeter() {
  if (!meter) return;
  clearInterval(meter.timer);
  meter.ctx.close();
  meter = null;
  setAttr($('mic-level'), 'aria-valuenow', '0');
  $('mic-level').style.setProperty('--level', '0%');
}

// ---------- pickers ----------

/** Fills the camera, microphone and speaker pickers from the devices the browser lists
 * (their names show once a device of that kind has been allowed). */
export async function fillPickers() {
  const all = await navigator.mediaDevices.enumerateDevices();
  const current = currentIds();
  for (const kind of ['video', 'audio']) {
    const k = KINDS[kind];
    fill($(k.select), all.filter((d) => d.kind === k.input && d.deviceId), current[kind] || choice[k.remember], k.device);
  }
  const outputs = all.filter((d) => d.kind === 'audiooutput' && d.deviceId);
  const canChoose = 'setSinkId' in HTMLMediaElement.prototype && outputs.length > 0;
  $('speaker-field').hidden = !canChoose;
  if (canChoose) fill($('speaker-select'), outputs, choice.speaker || 'default', 'speaker');
}

function fill(select, devices, selected, device) {
  const options = devices.map((d, i) => [d.deviceId, d.label || `${t(device)} ${i + 1}`]);
  const drawn = JSON.stringify(options);
  if (select.dataset.drawn !== drawn) {
    select.dataset.drawn = drawn;
    select.replaceChildren(...options.map(([id, label]) => new Option(label, id)));
  }
  select.disabled = options.length === 0;
  if (options.some(([id]) => id === selected)) select.value = selected;
}

/** The device ids of the tracks in use: `{ video, audio }`. */
function currentIds() {
  const stream = $('preview').srcObject || state.local;
  const id = (tracks) => (tracks[0] && tracks[0].getSettings().deviceId) || '';
  return stream ? { video: id(stream.getVideoTracks()), audio: id(stream.getAudioTracks()) } : {};
}

/** The stream whose devices the pickers change: the preview's in the lobby, else the call's. */
function liveStream() {
  return $('preview').srcObject || state.local;
}

/**
 * Switches `kind` (audio, video) of the live stream to device `id`: a new track replaces the
 * old one in the stream and on the peer connection's senders (no new offer), keeps its on/off
 * switch, and the old one stops. Resolves with whether it switched.
 */
export async function switchDevice(kind, id, { remembered = true } = {}) {
  const stream = liveStream();
  if (!stream) return false;
  const old = kind === 'video' ? stream.getVideoTracks()[0] : stream.getAudioTracks()[0];
  let fresh;
  try {
    fresh = (await gum(constraints(kind, id))).getTracks()[0];
  } catch (err) {
    // A camera some systems open only once: let go of the old one and try again.
    if (old && err.name === 'NotReadableError') {
      old.stop();
      try {
        fresh = (await gum(constraints(kind, id))).getTracks()[0];
      } catch (again) {
        toast(deviceProblem(KINDS[kind].device, again));
        return false;
      }
    } else {
      toast(deviceProblem(KINDS[kind].device, err));
      return false;
    }
  }
  if (old) fresh.enabled = old.enabled;
  else fresh.enabled = stream === state.local ? !state.muted[kind] : (kind === 'video' ? choice.cameraOn : choice.micOn);
  if (state.pc && stream === state.local) {
    for (const sender of state.pc.getSenders()) {
      if (old && sender.track === old) await sender.replaceTrack(fresh);
    }
  }
  if (old) stream.removeTrack(old);
  stream.addTrack(fresh);
  if (old) old.stop();
  follow(fresh);
  // The element shows the stream's tracks as they are now.
  const video = stream === state.local ? $('local-video') : $('preview');
  video.srcObject = stream;
  if (kind === 'audio' && stream !== state.local) startMeter(stream);
  if (remembered) {
    choice[KINDS[kind].remember] = fresh.getSettings().deviceId || id;
    remember();
  }
  fillPickers();
  hooks.onSwitched();
  return true;
}

/** Plays the others' sound on the chosen speaker (where the browser can choose). */
export function useSpeaker(el) {
  if (choice.speaker && el && typeof el.setSinkId === 'function') {
    el.setSinkId(choice.speaker).catch((err) => console.warn('speaker', err.message));
  }
}

async function chooseSpeaker(id) {
  choice.speaker = id;
  remember();
  for (const el of document.querySelectorAll('audio')) useSpeaker(el);
}

// ---------- following the system ----------

/** A device that goes away (unplugged) ends its track: the system's default of that kind
 * takes its place, and the others keep receiving. */
export function follow(track) {
  track.addEventListener('ended', async () => {
    const stream = liveStream();
    if (!stream || !stream.getTracks().includes(track)) return;
    const label = track.label;
    const ok = await switchDevice(track.kind, '', { remembered: false });
    const now = stream.getTracks().find((x) => x.kind === track.kind);
    if (ok && now) toast(t('deviceGone', { device: label, other: now.label }));
  });
}

/** A device plugged in or out: the pickers list what is there; a microphone chosen as "the
 * system's default" follows the system's default to its new device. */
async function devicesChanged() {
  await fillPickers();
  const stream = liveStream();
  if (!stream || (choice.microphone && choice.microphone !== 'default')) return;
  const track = stream.getAudioTracks()[0];
  if (!track) return;
  const all = await navigator.mediaDevices.enumerateDevices();
  const def = all.find((d) => d.kind === 'audioinput' && d.deviceId === 'default');
  if (def && def.groupId && def.groupId !== track.getSettings().groupId) {
    await switchDevice('audio', 'default', { remembered: false });
  }
}

const hooks = { onSwitched: () => {} };

/** Connects the pickers and the lobby's switches; `onSwitched` redraws the call after a
 * device changed. */
export function wire({ onSwitched }) {
  hooks.onSwitched = onSwitched;
  if (!navigator.mediaDevices) return;
  $('camera-select').addEventListener('change', (e) => switchDevice('video', e.target.value));
  $('mic-select').addEventListener('change', (e) => switchDevice('audio', e.target.value));
  $('speaker-select').addEventListener('change', (e) => chooseSpeaker(e.target.value));
  navigator.mediaDevices.addEventListener('devicechange', devicesChanged);
  const flip = (key) => {
    choice[key] = !choice[key];
    remember();
    const stream = $('preview').srcObject;
    if (stream) applySwitches(stream);
  };
  $('preview-camera').addEventListener('click', () => flip('cameraOn'));
  $('preview-mic').addEventListener('click', () => flip('micOn'));
  // In a call, the pickers open in a panel from the controls.
  $('devices').addEventListener('click', () => openPanel(!$('device-panel').open));
  $('device-panel-close').addEventListener('click', () => openPanel(false));
}

/** Opens (or closes) the call's device panel: the lobby's pickers move into it. */
function openPanel(open) {
  const panel = $('device-panel');
  if (open) {
    $('device-panel-body').append($('device-pickers'));
    fillPickers();
    panel.show();
  } else {
    panel.close();
    $('device-pickers-home').append($('device-pickers'));
  }
  setAttr($('devices'), 'aria-expanded', String(open));
}

/** Back in the lobby: the pickers go home. */
export function closePanel() {
  if ($('device-panel').open) openPanel(false);
}
