// The page around the call: element lookup, the status line and the toast.

import { t } from './i18n.js';

export const $ = (id) => document.getElementById(id);

let shown = ['', undefined];
let reconnecting = false;

/** The status line: the media connection's state, unless the socket is reconnecting. */
export function setStatus(text, kind) {
  shown = [text, kind];
  drawStatus();
}

/** While the socket to the server is down, the status says so (the media may still flow). */
export function setReconnecting(on) {
  reconnecting = on;
  drawStatus();
}

function drawStatus() {
  const [text, kind] = reconnecting ? [t('reconnecting'), 'warn'] : shown;
  $('status').textContent = text;
  $('status-dot').className = 'dot' + (kind ? ' ' + kind : '');
}

let toastTimer = null;

export function toast(text) {
  const t = $('toast');
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 5000);
}

export function showMode(mode) {
  $('mode').textContent = t(mode === 'p2p' ? 'p2p' : 'sfu');
}

/** Sets an element's text only when it differs: redrawing never disturbs an unchanged page. */
export function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

export function setAttr(el, name, value) {
  if (el.getAttribute(name) !== value) el.setAttribute(name, value);
}
