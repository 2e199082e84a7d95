// The chat panel: messages and moderators' notices, appended as the state gains them, and the
// form that sends a message.

import { state } from './store.js';
import { send } from './signaling.js';
import { $, toast } from './page.js';

let shown = 0; // entries of state.chat on the page

function chatItem(c) {
  const li = document.createElement('li');
  li.dataset.testid = 'chat-message';
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = c.name;
  const text = document.createElement('span');
  text.textContent = c.text; // text, never HTML
  const time = document.createElement('time');
  const at = new Date(c.time);
  time.dateTime = at.toISOString();
  time.textContent = at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  li.append(who, text, time);
  return li;
}

/** "Ada muted Bo", as this participant reads it; null for an action without a notice. */
export function moderationText(m) {
  // A moderator's name, or "the server" (the server API) starting the sentence.
  const who = m.by === state.me ? 'You' : m.by_name.charAt(0).toUpperCase() + m.by_name.slice(1);
  const whom = m.target === state.me ? 'you' : m.target_name;
  return {
    'mute-audio': `${who} muted ${whom}.`,
    'unmute-audio': `${who} let ${whom} unmute.`,
    'mute-video': `${who} stopped ${whom === 'you' ? 'your' : whom + "'s"} camera.`,
    'unmute-video': `${who} let ${whom} start ${whom === 'you' ? 'your' : 'their'} camera.`,
    'remove': `${who} removed ${whom} from the room.`,
    'ban': `${who} removed ${whom} from the room for good.`,
    'lock': `${who} locked the room: nobody new can join.`,
    'unlock': `${who} unlocked the room.`,
  }[m.action] || null;
}

function noticeItem(text) {
  const li = document.createElement('li');
  li.className = 'notice';
  li.dataset.testid = 'moderation-notice';
  li.textContent = text;
  return li;
}

/** Appends what the state has and the page does not (or starts over after a reset). */
export function render() {
  if (state.chat.length < shown) {
    $('messages').replaceChildren();
    shown = 0;
  }
  for (const entry of state.chat.slice(shown)) {
    const text = entry.kind === 'moderation' ? moderationText(entry) : null;
    if (entry.kind === 'moderation' && !text) continue;
    const li = text ? noticeItem(text) : chatItem(entry);
    if (text) toast(text);
    $('messages').append(li);
    li.scrollIntoView({ block: 'end' });
  }
  shown = state.chat.length;
}

export function wire() {
  $('chat-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = $('chat-input').value.trim();
    if (!text) return;
    send({ type: 'chat', text });
    $('chat-input').value = '';
  });
}
