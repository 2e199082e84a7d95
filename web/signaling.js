// The WebSocket to the server (/ws): joining, SDP/ICE, chat and the room's events.
// Messages are handled one at a time, in order: an answer is applied before the offer that
// follows it is looked at.

let ws = null;
let pingTimer = null;

/** Sends one message, if the socket is open. */
export function send(message) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
}

/**
 * Opens the socket and sends `join` once it is open; `onMessage` gets every server message
 * (awaited in turn), `onClose` the socket's end.
 */
export function connect(join, { onMessage, onClose }) {
  const socket = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws');
  ws = socket;
  socket.onopen = () => {
    send(join);
    pingTimer = setInterval(() => send({ type: 'ping' }), 5000);
  };
  let queue = Promise.resolve();
  socket.onmessage = (e) => {
    let msg;
    try { msg = JSON.parse(e.data); } catch { return; }
    queue = queue.then(() => onMessage(msg)).catch((err) => console.error('sori:', err));
  };
  socket.onclose = () => {
    clearInterval(pingTimer);
    if (socket === ws) onClose();
  };
}

/** Closes the socket; its end is not reported. */
export function disconnect() {
  clearInterval(pingTimer);
  const socket = ws;
  ws = null;
  if (socket) socket.close();
}
