// The chat panel: messages and moderators' notices, appended as the state gains them, and the
// form that sends a message.

import { state } from './store.js';
import { send } from './signaling.js';
import { $, toast } from './page.js';
import { lang, moderationText } from './i18n.js';

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
  time.textContent = at.toLocaleTimeString(lang, { hour: '2-digit', minute: '2-digit' });
  li.append(who, text, time);
  return li;
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
    const text = entry.kind === 'moderation' ? moderationText(entry, state.me) : null;
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
