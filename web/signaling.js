// The WebSocket to the server (/ws): joining, SDP/ICE, chat and the room's events.
// Messages are handled one at a time, in order: an answer is applied before the offer that
// follows it is looked at.
//
// The socket survives network trouble: when it closes (or stays silent past SILENT_MS) after
// the join, the client opens a new one with backoff and jitter and sends `resume` with the
// secret `joined` gave and the number (`seq`) of the last server message it got (`received`); the server
// replays what came after, and says which of this client's numbered messages it had
// (`resumed.received`): the others are sent again. A resume the server refuses
// (`resume-failed`) becomes a fresh join on the same socket (docs/signaling.md).

const SILENT_MS = 12000;          // nothing at all for this long: the socket is dead
const PING_MS = 5000;
const KEPT = 200;                 // numbered messages kept until the server has them
const RETRY_MS = [250, 500, 1000, 2000, 4000, 5000];
const OPEN_MS = 5000;             // a new socket not open by then is given up (and retried)

let ws = null;
let pingTimer = null;
let watchdog = null;
let retryTimer = null;
let probeTimer = null;
let abandonCurrent = null;        // gives up on the current socket
let link = null;                  // { join, handlers, secret, lastSeq, sent, unacked, attempts }

const unnumbered = new Set(['join', 'resume', 'ping', 'leave']);

/** How the last sockets ended: `{ code, at }` (for the tests' hooks). */
export const closes = [];

/** When the last resumes were answered (`Date.now()`, for the tests' hooks). */
export const resumes = [];

function raw(message) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
}

/** Sends one message; numbered messages are kept until a resume shows the server had them.
 * Returns its number (`seq`), which an `error` refusing it names (`re`), or null. */
export function send(message) {
  if (!link || unnumbered.has(message.type) || !link.secret) {
    raw(message);
    return null;
  }
  const numbered = { ...message, seq: ++link.sent };
  link.unacked.push(numbered);
  if (link.unacked.length > KEPT) link.unacked.shift();
  raw(numbered);
  return numbered.seq;
}

/**
 * Opens the socket and sends `join` once it is open; `onMessage` gets every server message
 * (awaited in turn); `onReconnecting(true|false)` when the socket drops and comes back;
 * `onClose` when it ended for good (before a join, or after `disconnect`).
 */
export function connect(join, handlers) {
  link = {
    join, handlers, secret: null, lastSeq: 0, sent: 0, unacked: [], attempts: 0,
    queue: Promise.resolve(),   // one queue across sockets: messages stay in order
  };
  open(link, join);
}

function open(l, first) {
  const socket = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws');
  ws = socket;
  // Gives up on this socket and goes on with a new one, without waiting for the browser's
  // close event (a closing handshake on a dead connection can take long).
  const abandon = (code) => {
    if (ws !== socket) return;
    try { socket.close(code, 'reconnecting'); } catch { /* already closing */ }
    dropped(l, socket);
  };
  const alive = () => {
    clearTimeout(watchdog);
    // A socket that hears nothing (the server sends `pong` to every ping) is dead though the
    // browser has not noticed.
    watchdog = setTimeout(() => abandon(4000), SILENT_MS);
  };
  abandonCurrent = abandon;
  // A connection attempt into a black hole would hang for minutes.
  const opening = setTimeout(() => abandon(4000), OPEN_MS);
  socket.onopen = () => {
    clearTimeout(opening);
    raw(first);
    clearInterval(pingTimer);
    pingTimer = setInterval(() => raw({ type: 'ping' }), PING_MS);
    alive();
  };
  socket.onmessage = (e) => {
    if (ws !== socket) return;
    alive();
    clearTimeout(probeTimer);
    probeTimer = null;
    let msg;
    try { msg = JSON.parse(e.data); } catch { return; }
    if (typeof msg.seq === 'number') {
      if (msg.seq <= l.lastSeq) return;
      l.lastSeq = msg.seq;
    }
    if (msg.type === 'joined') {
      l.secret = msg.resume || null;
      l.attempts = 0;
    } else if (msg.type === 'resumed') {
      l.attempts = 0;
      resumes.push(Date.now());
      if (resumes.length > 20) resumes.shift();
      const missed = l.unacked.filter((m) => m.seq > msg.received);
      l.unacked = missed;
      for (const m of missed) raw(m);
      l.handlers.onReconnecting(false);
    } else if (msg.type === 'error' && msg.code === 'resume-failed') {
      // The participant is gone: join again as new, on this socket.
      Object.assign(l, { secret: null, lastSeq: 0, sent: 0, unacked: [] });
      raw(l.join);
      l.queue = l.queue.then(() => l.handlers.onRejoin()).catch((err) => console.error('sori:', err));
      return;
    }
    l.queue = l.queue.then(() => l.handlers.onMessage(msg)).catch((err) => console.error('sori:', err));
  };
  socket.onclose = (e) => {
    clearTimeout(opening);
    closes.push({ code: e.code, at: Date.now() });
    if (closes.length > 20) closes.shift();
    dropped(l, socket);
  };
}

/** The current socket ended: reconnect (after the join), or report the end. */
function dropped(l, socket) {
  if (ws !== socket) return;
  clearInterval(pingTimer);
  clearTimeout(watchdog);
  clearTimeout(probeTimer);
  probeTimer = null;
  ws = null;
  if (link !== l) return;
  if (!l.secret) {
    link = null;
    l.handlers.onClose();
    return;
  }
  l.handlers.onReconnecting(true);
  retry(l);
}

function retry(l) {
  clearTimeout(retryTimer);
  const base = RETRY_MS[Math.min(l.attempts, RETRY_MS.length - 1)];
  l.attempts += 1;
  const delay = base * (0.5 + Math.random());
  retryTimer = setTimeout(() => reopen(l), delay);
}

function reopen(l) {
  clearTimeout(retryTimer);
  if (link !== l || ws) return;
  const resume = { type: 'resume', v: 1, secret: l.secret, received: l.lastSeq };
  if (l.join.token) resume.token = l.join.token;
  open(l, resume);
}

/**
 * Forgets the numbered messages of `types` not yet known to have reached the server: they
 * belonged to a peer connection that is gone, and sent again after a resume they would reach
 * the media for its successor.
 */
export function forgetUnacked(types) {
  if (link) link.unacked = link.unacked.filter((m) => !types.includes(m.type));
}

/**
 * Checks the socket now: a ping that gets no answer within `ms` means the socket is dead
 * (the network under it changed), and a new one is opened at once instead of after
 * SILENT_MS. Used when media stops arriving: whatever broke the media path may have broken
 * the socket too.
 */
export function probe(ms) {
  if (!ws || ws.readyState !== WebSocket.OPEN || probeTimer || !link || !link.secret) return;
  const abandon = abandonCurrent;
  const l = link;
  raw({ type: 'ping' });
  // A socket found dead is replaced at once, without the reconnection backoff.
  probeTimer = setTimeout(() => { probeTimer = null; abandon(4000); reopen(l); }, ms);
}

// Back online: try at once rather than at the end of the backoff.
window.addEventListener('online', () => { if (link && link.secret) reopen(link); });

/** Closes the socket for good; its end is not reported. */
export function disconnect() {
  clearInterval(pingTimer);
  clearTimeout(watchdog);
  clearTimeout(retryTimer);
  link = null;
  const socket = ws;
  ws = null;
  if (socket) socket.close();
}
