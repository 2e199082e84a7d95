// The client's state, and one reducer per server message: the only place the state changes in
// answer to the server. Nothing here reads the page or touches media; app.js does the effects.

export const state = {
  me: null,
  name: '',
  room: null,
  mode: null,
  iceServers: [],
  participants: new Map(), // id -> info, others only
  permissions: null,       // what this participant may do (from `joined`)
  serverMuted: { audio: false, video: false },
  muted: { audio: false, video: false }, // this participant's own switches
  locked: false,
  recording: false,
  chat: [],                // chat messages and moderation notices, in order
  peerRoles: new Map(),    // P2P: the other browser's track roles, by mid
  stats: null,             // SFU: the media server's latest `stats` (what this browser receives)
  presence: [],            // participant-joined/-left as they came: { type, id, reason, at }
  pinned: null,            // the tile shown large: 'local', or a remote tile's key|role
  speaking: new Map(),     // participant id -> level (0 to 1), from the server's `speakers`
  lastSpoke: new Map(),    // participant id -> when it was last among the speakers (ms)
  dominant: null,          // the dominant speaker's participant id
  featured: null,          // the speaker view's speaker: the last dominant one other than me
  layout: localStorage.getItem('sori.layout') === 'speaker' ? 'speaker' : 'grid',
  videoSet: null,          // last-N: the participant ids whose video the server sends (null: all)
  speakerLog: [],          // `speakers` and `dominant-speaker` as they came: { type, at, ... }
  joins: 0,                // `joined` messages so far (a rejoin after a server restart counts)
  leaving: false,
  // Media, set by peer.js and app.js.
  local: null,             // camera + mic MediaStream
  screen: null,            // screen MediaStream while sharing
  pc: null,                // the one RTCPeerConnection
  peerId: null,            // P2P: the other participant's id
  offerer: false,          // this browser made the peer connection's first offer
  iceRestarts: 0,          // ICE restarts this page made
  mediaReconnects: 0,      // SFU: new peer connections made because the old one's SDP went astray
  remote: new Map(),       // remote track id -> { key, track, mid, trackId }
};

const setParticipant = (s, p) => s.participants.set(p.id, p);

/** Who-is-speaking and video-set messages as they came, with the time (the last 200), for
 * automation. */
function log(s, entry) {
  s.speakerLog.push({ ...entry, at: Date.now() });
  if (s.speakerLog.length > 200) s.speakerLog.shift();
}

function takeRoles(s, m) {
  if (m.from && m.roles) s.peerRoles = new Map(Object.entries(m.roles));
}

export const reducers = {
  joined(s, m) {
    s.joins += 1;
    s.me = m.id;
    s.name = m.name;
    s.mode = m.mode;
    s.permissions = m.permissions;
    s.locked = m.locked;
    s.serverMuted = { audio: false, video: false };
    s.iceServers = m.ice_servers || [];
    s.participants = new Map(m.participants.map((p) => [p.id, p]));
    s.chat = m.chat.map((c) => ({ kind: 'chat', ...c }));
  },
  'participant-joined'(s, m) {
    setParticipant(s, m.participant);
    s.presence.push({ type: m.type, id: m.participant.id, at: Date.now() });
  },
  'participant-updated'(s, m) {
    if (m.participant.id !== s.me) {
      setParticipant(s, m.participant);
      return;
    }
    const muted = m.participant.server_muted;
    s.serverMuted = { audio: !!muted.audio, video: !!muted.video };
    // A moderator's mute switches the own switch off too; lifting it leaves it off.
    for (const kind of ['audio', 'video']) if (s.serverMuted[kind]) s.muted[kind] = true;
  },
  'participant-left'(s, m) {
    s.presence.push({ type: m.type, id: m.id, reason: m.reason, at: Date.now() });
    const p = s.participants.get(m.id);
    s.participants.delete(m.id);
    s.speaking.delete(m.id);
    if (s.featured === m.id) s.featured = null;
    for (const [id, r] of s.remote) {
      if (r.key === m.id || (p && p.media_id && r.key === p.media_id)) s.remote.delete(id);
    }
    if (s.peerId === m.id) s.peerRoles = new Map();
  },
  mode(s, m) {
    s.mode = m.mode;
    s.peerRoles = new Map();
  },
  offer: takeRoles,
  answer: takeRoles,
  candidate() {},
  chat(s, m) {
    // A chat its sender sent again after a session server took the room over (the snapshot
    // it restored was older than the chat) has the first copy's sender and number.
    const again = m.re != null
      && s.chat.some((c) => c.kind === 'chat' && c.from === m.from && c.re === m.re);
    if (!again) s.chat.push({ kind: 'chat', ...m });
  },
  recording(s, m) { s.recording = m.on; },
  moderation(s, m) {
    if (m.action === 'lock' || m.action === 'unlock') s.locked = m.action === 'lock';
    s.chat.push({ kind: 'moderation', ...m });
  },
  removed() {},
  'ice-servers'(s, m) { s.iceServers = m.ice_servers || []; },
  stats(s, m) { s.stats = m; },
  speakers(s, m) {
    s.speaking = new Map(m.speakers.map((x) => [x.id, x.level]));
    log(s, { type: 'speakers', ids: m.speakers.map((x) => x.id) });
    // Loudest first: among those speaking now, the loudest counts as the latest.
    const now = Date.now();
    m.speakers.forEach((x, i) => s.lastSpoke.set(x.id, now - i / 1000));
  },
  'video-set'(s, m) {
    s.videoSet = m.ids ? new Set(m.ids) : null;
    log(s, { type: 'video-set', ids: m.ids });
  },
  'dominant-speaker'(s, m) {
    s.dominant = m.id;
    log(s, { type: 'dominant', id: m.id });
    if (m.id !== s.me) s.featured = m.id;
  },
  layers() {},
  error() {},
  pong() {},
  resumed() {},
  shutdown() {},
};

/** Applies one server message to the state. */
export function reduce(msg) {
  const reducer = reducers[msg.type];
  if (reducer) reducer(state, msg);
}

/** The participant a remote media key names: its id (P2P) or its media id (SFU). */
export function participantFor(key) {
  if (state.participants.has(key)) return state.participants.get(key);
  for (const p of state.participants.values()) if (p.media_id === key) return p;
  return null;
}

/** Forgets the room: after leaving or being removed. */
export function resetRoom() {
  Object.assign(state, {
    me: null, permissions: null, participants: new Map(), chat: [], recording: false,
    serverMuted: { audio: false, video: false }, muted: { audio: false, video: false },
    peerRoles: new Map(), locked: false, stats: null, pinned: null,
    speaking: new Map(), lastSpoke: new Map(), dominant: null, featured: null, videoSet: null,
  });
}
