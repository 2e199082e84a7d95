// The buttons under the call: microphone, camera, screen share, recording, the moderator's
// lock and end, and leave. `render` sets them (and the local tracks) from the state.
// Shortcuts (not while typing in a field): M microphone, V camera, Ctrl+Shift+L leave.

import { state } from './store.js';
import { send } from './signaling.js';
import { addScreen, removeTracks } from './peer.js';
import { $, toast, setText, setAttr } from './page.js';
import { t } from './i18n.js';

const labels = {
  audio: { on: 'muteMic', off: 'unmuteMic', moderated: 'micModerated', button: 'mute-audio' },
  video: { on: 'stopCamera', off: 'startCamera', moderated: 'cameraModerated', button: 'mute-video' },
};

function tracksOf(kind) {
  if (!state.local) return [];
  return kind === 'audio' ? state.local.getAudioTracks() : state.local.getVideoTracks();
}

function renderPermissions() {
  const p = state.permissions;
  if (!p) return;
  const may = (source) => p.publish.includes(source);
  // A device that did not start has no switch.
  $('mute-audio').hidden = !may('microphone') || !tracksOf('audio').length;
  $('mute-video').hidden = !may('camera') || !tracksOf('video').length;
  $('share-screen').hidden = !may('screen_share');
  $('record').hidden = !p.record;
  $('chat-input').disabled = !p.chat;
  $('chat-send').disabled = !p.chat;
  setAttr($('chat-input'), 'placeholder', t(p.chat ? 'messageEveryone' : 'chatReadOnly'));
  $('admin-controls').hidden = !p.admin;
}

function renderSwitches() {
  for (const kind of ['audio', 'video']) {
    const l = labels[kind];
    const button = $(l.button);
    const muted = state.muted[kind];
    // A moderator's mute: the server forwards nothing of it anyway; the switch says so.
    for (const t of tracksOf(kind)) t.enabled = !muted;
    button.disabled = state.serverMuted[kind];
    setText(button, t(state.serverMuted[kind] ? l.moderated : (muted ? l.off : l.on)));
    setAttr(button, 'aria-pressed', String(muted));
  }
}

export function render() {
  renderPermissions();
  renderSwitches();
  setText($('lock-room'), t(state.locked ? 'unlockRoom' : 'lockRoom'));
  setAttr($('lock-room'), 'aria-pressed', String(state.locked));
  $('locked-indicator').hidden = !state.locked;
  $('recording-indicator').hidden = !state.recording;
  setAttr($('record'), 'aria-pressed', String(state.recording));
  setText($('record'), t(state.recording ? 'stopRecording' : 'record'));
  setAttr($('layout-toggle'), 'aria-pressed', String(state.layout === 'speaker'));
  setAttr($('share-screen'), 'aria-pressed', String(!!state.screen));
  setText($('share-screen'), t(state.screen ? 'stopSharing' : 'shareScreen'));
}

/** Tells the server this participant's microphone and camera state. */
export function sendMute() {
  send({ type: 'mute', audio: state.muted.audio, video: state.muted.video });
}

async function shareScreen(rerender) {
  if (state.screen) {
    stopScreen();
    rerender();
    return;
  }
  try {
    state.screen = await navigator.mediaDevices.getDisplayMedia({ video: true });
  } catch (err) {
    toast(t('screenNotStarted', { why: err.message }));
    return;
  }
  const track = state.screen.getVideoTracks()[0];
  track.addEventListener('ended', () => { stopScreen(); rerender(); });
  addScreen(track);
  rerender();
}

export function stopScreen() {
  if (!state.screen) return;
  const tracks = state.screen.getTracks();
  state.screen = null;
  for (const t of tracks) t.stop();
  removeTracks(tracks);
}

/** Connects the buttons; `rerender` redraws the page after a local change, `leave` leaves. */
export function wire({ rerender, leave }) {
  const toggle = (kind) => {
    if (state.serverMuted[kind]) return;
    state.muted[kind] = !state.muted[kind];
    sendMute();
    rerender();
  };
  $('mute-audio').addEventListener('click', () => toggle('audio'));
  $('mute-video').addEventListener('click', () => toggle('video'));
  $('share-screen').addEventListener('click', () => shareScreen(rerender));
  // The speaker view: the dominant speaker large, the others in a strip (kept for next time).
  $('layout-toggle').addEventListener('click', () => {
    state.layout = state.layout === 'speaker' ? 'grid' : 'speaker';
    try { localStorage.setItem('sori.layout', state.layout); } catch { /* private mode */ }
    rerender();
  });
  $('record').addEventListener('click', () => send({ type: 'record', on: !state.recording }));
  $('lock-room').addEventListener('click', () => send({ type: 'lock-room', locked: !state.locked }));
  $('end-room').addEventListener('click', () => {
    if (confirm(t('confirmEnd'))) send({ type: 'end-room' });
  });
  $('leave').addEventListener('click', () => leave(t('youLeft')));
  // Phones: the people and the chat are a sheet over the call, opened from the controls.
  $('toggle-side').addEventListener('click', () => {
    const open = !$('call').classList.toggle('side-closed');
    setAttr($('toggle-side'), 'aria-expanded', String(open));
  });
  document.addEventListener('keydown', (e) => {
    if (!state.me || e.repeat || typing(e.target)) return;
    const key = e.key.toLowerCase();
    if (e.ctrlKey && e.shiftKey && !e.altKey && !e.metaKey && key === 'l') {
      e.preventDefault();
      leave(t('youLeft'));
    } else if (!e.ctrlKey && !e.altKey && !e.metaKey && (key === 'm' || key === 'v')) {
      const kind = key === 'm' ? 'audio' : 'video';
      if (!$(labels[kind].button).hidden) toggle(kind);
    }
  });
}

/** Whether keys pressed in `el` are text (the shortcuts then stay out of the way). */
function typing(el) {
  return el instanceof HTMLElement
    && (el.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(el.tagName));
}
