// Sori web client: plain ES modules, standard browser APIs only, no build step.
// One WebSocket (/ws, signaling.js) carries joining, SDP/ICE and chat; the state (store.js)
// changes with one reducer per server message; media goes through one RTCPeerConnection
// (peer.js) to the media server (SFU rooms) or to the other browser (P2P rooms); tiles.js,
// people.js, chat.js and controls.js draw the page from the state. This file wires them.

import * as hooks from './hooks.js';
import { state, reduce, resetRoom } from './store.js';
import { connect, disconnect, send } from './signaling.js';
import * as peer from './peer.js';
import * as tiles from './tiles.js';
import * as people from './people.js';
import * as chat from './chat.js';
import * as controls from './controls.js';
import * as devices from './devices.js';
import { $, setStatus, setReconnecting, toast, showMode, setText } from './page.js';
import { t, subject, translatePage } from './i18n.js';

translatePage();
document.querySelector('.tile.local').dataset.offText = t('cameraIsOff');

hooks.install();
const params = new URLSearchParams(location.search);

// An access token in the URL is read once and taken out of the address bar, so that it does
// not stay in the history or get shared with a copied link.
let token = params.get('token') || sessionStorage.getItem('sori.token') || '';
if (params.has('token')) {
  params.delete('token');
  sessionStorage.setItem('sori.token', token);
  history.replaceState(null, '', location.pathname + (params.toString() ? '?' + params : ''));
}

function render() {
  people.render();
  chat.render();
  controls.render();
  tiles.render();
  tiles.renderLocal();
  setText($('local-name'), state.name);
}

peer.onRemoteTracks({ onTrack: tiles.render, onTrackGone: tiles.render });
chat.wire();
controls.wire({ rerender: render, leave });
devices.wire({ onSwitched: render });

// ---------- lobby ----------

$('room').value = params.get('room') || '';
$('name').value = params.get('name') || localStorage.getItem('sori.name') || '';
$('token').value = token;
$('token-field').hidden = !token;
$('join-form').addEventListener('submit', (e) => {
  e.preventDefault();
  token = $('token').value.trim();
  if (token) sessionStorage.setItem('sori.token', token);
  join($('room').value.trim(), $('name').value.trim());
});
if (params.get('autojoin') === '1' && $('room').value && $('name').value) {
  join($('room').value.trim(), $('name').value.trim());
} else if (navigator.mediaDevices) {
  devices.startPreview();
}

async function join(room, name) {
  $('lobby-error').textContent = '';
  if (!room || !name) return;
  localStorage.setItem('sori.name', name);
  if (!navigator.mediaDevices) {
    // Browsers give camera and microphone only to secure pages.
    $('lobby-error').textContent = t('needsSecurePage');
    return;
  }
  const { stream, problems } = await devices.take();
  if (!stream.getTracks().length) {
    // Neither device: say what each needs; the lobby stays.
    $('lobby-error').textContent = problems.join(' ');
    return;
  }
  state.local = stream;
  for (const track of stream.getTracks()) devices.follow(track);
  // The lobby's camera and microphone switches: joined with them off, the others see and hear
  // nothing until they are switched on (the tracks are there: no renegotiation then).
  state.muted = { audio: !devices.choice.micOn, video: !devices.choice.cameraOn };
  const notice = $('device-notice');
  notice.textContent = problems.length ? `${problems.join(' ')} ${t('joinedWithout')}` : '';
  notice.hidden = !problems.length;
  Object.assign(state, { room, name, leaving: false });
  $('local-video').srcObject = state.local;
  $('local-name').textContent = name;
  $('room-name').textContent = room;
  $('lobby').hidden = true;
  $('call').hidden = false;
  setStatus(t('connecting'));
  if (!params.has('room')) history.replaceState(null, '', '?room=' + encodeURIComponent(room));
  const msg = { type: 'join', v: 1, room, name };
  if (token) msg.token = token;
  if (params.get('mode')) msg.mode = params.get('mode');
  connect(msg, { onMessage: handle, onClose: lost, onReconnecting: setReconnecting, onRejoin: rejoin });
}

function lost() {
  if (state.leaving) return;
  setReconnecting(false);
  setStatus(t('disconnected'), 'bad');
  toast(t('connectionLost'));
}

/** The server no longer had this participant (away too long): it joins again as new. */
function rejoin() {
  peer.closePc(true);
  setReconnecting(false);
  setStatus(t('connecting'));
  toast(t('rejoined'));
}

// ---------- messages from the server: the state first, then what follows from it ----------

const effects = {
  async joined(msg) {
    showMode(msg.mode);
    // Joined with the microphone or the camera off (the lobby's switches): the others know.
    if (state.muted.audio || state.muted.video) controls.sendMute();
    render();
    await peer.startMedia();
  },
  'participant-updated'(msg) {
    if (msg.participant.id === state.me) controls.sendMute();
  },
  'participant-left'(msg) {
    if (state.mode === 'p2p' && state.peerId === msg.id) {
      peer.closePc();
      setStatus(t('waiting'));
    }
  },
  async mode(msg) {
    showMode(msg.mode);
    // SFU media lost while this page's new peer connection is on its way (it closed the old
    // one itself): that one's offer joins new media; another would only replace it.
    if (msg.mode === 'sfu' && peer.joiningMedia()) return;
    peer.closePc();
    await peer.startMedia();
  },
  offer: peer.onOffer,
  answer: peer.onAnswer,
  candidate: peer.onCandidate,
  'ice-servers': peer.setIceServers,
  layers: peer.onLayers,
  'ice-restart'() { peer.restartIce('asked by the server'); },
  recording(msg) {
    if (msg.by && msg.by !== state.me) {
      const who = state.participants.get(msg.by);
      toast(t(msg.on ? 'startedRecording' : 'stoppedRecording', { who: subject(who && who.name, 'someone') }));
    }
  },
  removed(msg) {
    // A moderator's name, or "the server" (the server API).
    const by = msg.by === 'the server' ? t('theServer') : subject(msg.by, 'aModerator');
    const why = { 'removed': 'removedYou', 'banned': 'bannedYou', 'room-ended': 'endedMeeting' }[msg.reason];
    leave(why ? t(why, { by }) : t('removed'));
  },
  shutdown() {
    // The socket closes next; the client reconnects to the restarted server by itself.
    toast(t('restarting'));
  },
  error: onError,
};

async function handle(msg) {
  reduce(msg);
  const effect = effects[msg.type];
  if (effect) await effect(msg);
  // `stats` and `layers` change nothing drawn (the quality badges refresh on their own).
  if (state.me && !['pong', 'stats', 'layers', 'ice-restart'].includes(msg.type)) render();
}

const refusedJoin = ['room-full', 'invalid-name', 'unsupported-version', 'forbidden', 'banned',
  'room-locked', 'replaced', 'server-full'];

function onError(msg) {
  if (msg.code === 'unauthorized') {
    // Ask for a token (or a fresh one).
    const why = token
      ? t('tokenRefused', { why: msg.message })
      : t('tokenNeeded');
    sessionStorage.removeItem('sori.token');
    token = '';
    $('token').value = '';
    $('token-field').hidden = false;
    leave(why);
  } else if (refusedJoin.includes(msg.code) && !state.me) {
    leave(msg.message);
  } else if (msg.code === 'replaced') {
    leave(t('replacedElsewhere'));
  } else {
    if (msg.re != null) peer.onRefused(msg);
    toast(msg.message);
  }
}

function leave(reason) {
  state.leaving = true;
  setReconnecting(false);
  send({ type: 'leave' });
  peer.closePc(true);
  disconnect();
  for (const t of state.local ? state.local.getTracks() : []) t.stop();
  state.local = null;
  controls.stopScreen();
  resetRoom();
  render();
  devices.closePanel();
  $('call').hidden = true;
  $('lobby').hidden = false;
  $('lobby-error').textContent = reason || '';
  devices.startPreview();
}
