// The people panel: everyone in the room with their microphone and camera state, and the
// moderation buttons for a moderator.

import { state } from './store.js';
import { send } from './signaling.js';
import { $ } from './page.js';
import { t } from './i18n.js';

function moderationButton(label, testid, message) {
  const b = document.createElement('button');
  b.type = 'button';
  b.className = 'small';
  b.textContent = label;
  b.dataset.testid = testid;
  b.addEventListener('click', () => send(message));
  return b;
}

function tools(p) {
  const sm = p.server_muted || {};
  const span = document.createElement('span');
  span.className = 'moderation';
  span.append(
    moderationButton(t(sm.audio ? 'allowMic' : 'mute'), 'moderate-mute-audio',
      { type: 'mute-participant', id: p.id, audio: !sm.audio }),
    moderationButton(t(sm.video ? 'allowCamera' : 'stopCamera'), 'moderate-mute-video',
      { type: 'mute-participant', id: p.id, video: !sm.video }),
    moderationButton(t('remove'), 'moderate-remove', { type: 'remove-participant', id: p.id }),
    moderationButton(t('ban'), 'moderate-ban', { type: 'remove-participant', id: p.id, ban: true }),
  );
  return span;
}

function item(p, admin) {
  const li = document.createElement('li');
  li.dataset.testid = 'participant';
  li.dataset.participant = p.name;
  const name = document.createElement('span');
  name.textContent = p.name;
  const flags = document.createElement('span');
  flags.className = 'flags';
  const sm = p.server_muted || {};
  flags.textContent = [
    p.ingress ? t('encoder') : '',
    sm.audio ? t('mutedByModerator') : (p.audio_muted ? t('micOff') : ''),
    sm.video ? t('cameraStoppedByModerator') : (p.video_muted ? t('cameraOff') : ''),
  ].filter(Boolean).join(' · ');
  li.append(name, flags);
  if (admin && !p.self) li.append(tools(p));
  return li;
}

let drawn = ''; // what the list shows now, to redraw only on a change

export function render() {
  const me = {
    id: state.me, name: `${state.name} ${t('you')}`, audio_muted: state.muted.audio,
    video_muted: state.muted.video, server_muted: state.serverMuted, self: true,
  };
  const admin = state.permissions && state.permissions.admin;
  // The others by recent speech: who spoke last first, then those who have not spoken, in
  // the order they came.
  const spoke = (p) => state.lastSpoke.get(p.id) || 0;
  const others = [...state.participants.values()].sort((a, b) => spoke(b) - spoke(a));
  const now = JSON.stringify([admin, me, others, [...state.speaking.keys()]]);
  if (now === drawn) return;
  drawn = now;
  $('participants').replaceChildren(...[me, ...others].map((p) => {
    const li = item(p, admin);
    li.dataset.speaking = String(state.speaking.has(p.id));
    return li;
  }));
}
