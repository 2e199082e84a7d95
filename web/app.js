// Sori web client: plain ES module, standard browser APIs only.
// One WebSocket (/ws) carries joining, SDP/ICE and chat; media goes through one
// RTCPeerConnection to the media server (SFU rooms) or to the other browser (P2P rooms).

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

// An access token in the URL is read once and taken out of the address bar, so that it does
// not stay in the history or get shared with a copied link.
let token = params.get('token') || sessionStorage.getItem('sori.token') || '';
if (params.has('token')) {
  params.delete('token');
  sessionStorage.setItem('sori.token', token);
  history.replaceState(null, '', location.pathname + (params.toString() ? '?' + params : ''));
}

const state = {
  ws: null,
  me: null,
  room: null,
  mode: null,
  iceServers: [],
  participants: new Map(), // id -> info
  local: null,             // camera + mic MediaStream
  screen: null,            // screen MediaStream while sharing
  pc: null,                // the one RTCPeerConnection
  peerId: null,            // P2P: the other participant's id
  remote: new Map(),       // key (media id or participant id) -> { tile, video, audio, stream }
  pingTimer: null,
  leaving: false,
  permissions: null,       // what this participant may do (from `joined`)
  serverMuted: { audio: false, video: false },
  locked: false,
};

// Numbers for automation and tests: when the page started and the first remote frame decoded.
window.sori = {
  startedAt: performance.now(),
  firstRemoteFrameAt: null,
  iceServers: () => state.iceServers,
  async inboundStats() {
    const out = { audioPackets: 0, videoFramesDecoded: 0 };
    if (!state.pc) return out;
    const report = await state.pc.getStats();
    report.forEach((s) => {
      if (s.type !== 'inbound-rtp') return;
      if (s.kind === 'audio') out.audioPackets += s.packetsReceived || 0;
      if (s.kind === 'video') out.videoFramesDecoded += s.framesDecoded || 0;
    });
    return out;
  },
  /** Packets and frames received so far from the participant named `name`. */
  async inboundFrom(name) {
    const out = { audioPackets: 0, videoFrames: 0 };
    if (!state.pc) return out;
    for (const [key, r] of state.remote) {
      const p = participantFor(key);
      if (!p || p.name !== name) continue;
      for (const receiver of state.pc.getReceivers()) {
        if (!receiver.track || !r.stream.getTracks().includes(receiver.track)) continue;
        (await receiver.getStats()).forEach((s) => {
          if (s.type !== 'inbound-rtp') return;
          if (s.kind === 'audio') out.audioPackets += s.packetsReceived || 0;
          if (s.kind === 'video') out.videoFrames += s.framesDecoded || 0;
        });
      }
    }
    return out;
  },
  /** Packets this page has sent, per kind. */
  async outbound() {
    const out = { audioPackets: 0, videoPackets: 0 };
    if (!state.pc) return out;
    (await state.pc.getStats()).forEach((s) => {
      if (s.type !== 'outbound-rtp') return;
      if (s.kind === 'audio') out.audioPackets += s.packetsSent || 0;
      if (s.kind === 'video') out.videoPackets += s.packetsSent || 0;
    });
    return out;
  },
  /** The ICE candidate pair media uses now: each side's type, protocol, address and port. */
  async selectedPair() {
    if (!state.pc) return null;
    const report = await state.pc.getStats();
    let pair = null;
    report.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
    });
    if (!pair) return null;
    const side = (id) => {
      const c = report.get(id);
      return c && {
        type: c.candidateType, protocol: c.protocol, address: c.address, port: c.port,
        relayProtocol: c.relayProtocol, url: c.url,
      };
    };
    return { local: side(pair.localCandidateId), remote: side(pair.remoteCandidateId) };
  },
};

function send(message) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(message));
}

function setStatus(text, kind) {
  $('status').textContent = text;
  $('status-dot').className = 'dot' + (kind ? ' ' + kind : '');
}

let toastTimer = null;
function toast(text) {
  const t = $('toast');
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 5000);
}

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
}

async function join(room, name) {
  $('lobby-error').textContent = '';
  if (!room || !name) return;
  localStorage.setItem('sori.name', name);
  if (!navigator.mediaDevices) {
    // Browsers give camera and microphone only to secure pages.
    $('lobby-error').textContent = 'Camera and microphone need a secure page: open Sori over https:// (or on localhost).';
    return;
  }
  try {
    state.local = await navigator.mediaDevices.getUserMedia({
      audio: true,
      video: { width: { ideal: 640 }, height: { ideal: 480 } },
    });
  } catch (err) {
    $('lobby-error').textContent = 'Camera or microphone unavailable: ' + err.message;
    return;
  }
  state.room = room;
  state.leaving = false;
  $('local-video').srcObject = state.local;
  $('local-name').textContent = name;
  $('room-name').textContent = room;
  $('lobby').hidden = true;
  $('call').hidden = false;
  setStatus('connecting');
  if (!params.has('room')) history.replaceState(null, '', '?room=' + encodeURIComponent(room));

  const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws');
  state.ws = ws;
  ws.onopen = () => {
    const msg = { type: 'join', v: 1, room, name };
    if (token) msg.token = token;
    const mode = params.get('mode');
    if (mode) msg.mode = mode;
    send(msg);
    state.pingTimer = setInterval(() => send({ type: 'ping' }), 5000);
  };
  // Messages are handled one at a time, in order: an answer is applied before the offer that
  // follows it is looked at.
  let queue = Promise.resolve();
  ws.onmessage = (e) => {
    let msg;
    try { msg = JSON.parse(e.data); } catch { return; }
    queue = queue.then(() => handle(msg)).catch((err) => console.error('sori:', err));
  };
  ws.onclose = () => {
    clearInterval(state.pingTimer);
    if (!state.leaving) {
      setStatus('disconnected', 'bad');
      toast('Connection to the server lost.');
    }
  };
}

// ---------- messages from the server ----------

async function handle(msg) {
  switch (msg.type) {
    case 'joined':
      state.me = msg.id;
      state.mode = msg.mode;
      state.permissions = msg.permissions;
      state.locked = msg.locked;
      state.serverMuted = { audio: false, video: false };
      $('local-name').textContent = msg.name;
      applyPermissions();
      state.iceServers = msg.ice_servers || [];
      state.participants.clear();
      for (const p of msg.participants) state.participants.set(p.id, p);
      for (const c of msg.chat) showChat(c);
      renderParticipants();
      $('mode').textContent = msg.mode === 'p2p' ? 'peer to peer' : 'sfu';
      await startMedia();
      break;
    case 'participant-joined':
      state.participants.set(msg.participant.id, msg.participant);
      renderParticipants();
      break;
    case 'participant-updated':
      if (msg.participant.id === state.me) {
        applyServerMute(msg.participant.server_muted);
        break;
      }
      state.participants.set(msg.participant.id, msg.participant);
      renderParticipants();
      refreshTiles();
      break;
    case 'moderation':
      showModeration(msg);
      break;
    case 'removed': {
      const why = {
        'removed': `${msg.by || 'A moderator'} removed you from the room.`,
        'banned': `${msg.by || 'A moderator'} removed you from the room; you may not join it again.`,
        'room-ended': `${msg.by || 'A moderator'} ended the meeting.`,
      }[msg.reason] || 'You were removed from the room.';
      leave(why);
      break;
    }
    case 'ice-servers':
      state.iceServers = msg.ice_servers || [];
      if (state.pc) {
        try { state.pc.setConfiguration({ ...state.pc.getConfiguration(), iceServers: state.iceServers }); } catch (err) { console.warn('ice servers', err); }
      }
      break;
    case 'participant-left': {
      const p = state.participants.get(msg.id);
      state.participants.delete(msg.id);
      renderParticipants();
      if (p) {
        removeRemote(msg.id);
        if (p.media_id) removeRemote(p.media_id);
      }
      if (state.mode === 'p2p' && state.peerId === msg.id) {
        closePc();
        setStatus('waiting for someone to join');
      }
      break;
    }
    case 'mode':
      state.mode = msg.mode;
      $('mode').textContent = msg.mode === 'p2p' ? 'peer to peer' : 'sfu';
      closePc();
      for (const key of [...state.remote.keys()]) removeRemote(key);
      await startMedia();
      break;
    case 'offer':
      await onOffer(msg);
      break;
    case 'answer':
      if (state.pc) await state.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
      break;
    case 'candidate':
      if (state.pc && msg.candidate) {
        try { await state.pc.addIceCandidate(msg.candidate); } catch (err) { console.warn('candidate', err); }
      }
      break;
    case 'chat':
      showChat(msg);
      break;
    case 'recording':
      showRecording(msg.on);
      if (msg.by && msg.by !== state.me) {
        const who = state.participants.get(msg.by);
        toast(`${who ? who.name : 'Someone'} ${msg.on ? 'started' : 'stopped'} recording the room.`);
      }
      break;
    case 'error':
      if (msg.code === 'unauthorized') {
        // Ask for a token (or a fresh one).
        const why = token
          ? `Your access token was not accepted: ${msg.message}.`
          : 'This server needs an access token: paste the one you were given.';
        sessionStorage.removeItem('sori.token');
        token = '';
        $('token').value = '';
        $('token-field').hidden = false;
        leave(why);
      } else if (['room-full', 'invalid-name', 'unsupported-version', 'forbidden', 'banned',
        'room-locked', 'replaced', 'server-full'].includes(msg.code) && !state.me) {
        leave(msg.message);
      } else if (msg.code === 'replaced') {
        leave('You joined this room from another tab or device.');
      } else {
        toast(msg.message);
      }
      break;
    case 'pong':
      break;
  }
}

// ---------- media ----------

async function startMedia() {
  if (state.mode === 'sfu') {
    createPc(null);
    await offer();
  } else {
    const other = [...state.participants.keys()][0];
    if (other) {
      createPc(other);
      await offer();
    } else {
      setStatus('waiting for someone to join');
    }
  }
}

function createPc(peerId) {
  closePc();
  const pc = new RTCPeerConnection({ iceServers: state.iceServers });
  state.pc = pc;
  state.peerId = peerId;
  const direction = peerId ? 'sendrecv' : 'sendonly';
  for (const track of state.local.getTracks()) {
    pc.addTransceiver(track, { direction, streams: [state.local] });
  }
  if (state.screen) {
    for (const track of state.screen.getVideoTracks()) {
      pc.addTransceiver(track, { direction, streams: [state.screen] });
    }
  }
  pc.onicecandidate = (e) => {
    if (e.candidate && state.peerId && pc === state.pc) {
      send({ type: 'candidate', candidate: e.candidate.toJSON(), to: state.peerId });
    }
  };
  pc.ontrack = (e) => {
    if (pc !== state.pc) return;
    // SFU: the stream id is the publisher's media id; P2P: the other participant.
    const key = peerId || (e.streams[0] && e.streams[0].id) || e.track.id;
    addRemoteTrack(key, e.track);
  };
  pc.onconnectionstatechange = () => {
    if (pc !== state.pc) return;
    const s = pc.connectionState;
    if (s === 'connected') setStatus('connected', 'ok');
    else if (s === 'failed' || s === 'disconnected') setStatus(s, 'bad');
    else setStatus(s);
  };
  pc.onnegotiationneeded = () => {
    if (pc === state.pc && pc.signalingState === 'stable' && pc.remoteDescription) offer();
  };
  return pc;
}

async function offer() {
  const pc = state.pc;
  if (!pc) return;
  await pc.setLocalDescription(await pc.createOffer());
  const msg = { type: 'offer', sdp: pc.localDescription.sdp };
  if (state.peerId) msg.to = state.peerId;
  send(msg);
}

async function onOffer(msg) {
  if (msg.from) {
    // P2P: the other browser calls us.
    if (!state.pc || state.peerId !== msg.from) createPc(msg.from);
  }
  const pc = state.pc;
  if (!pc) return;
  // Our own offer crossed theirs: the media server is the polite side and re-offers after
  // answering ours, so its offer is ignored here. Between browsers, the later joiner offers.
  if (pc.signalingState !== 'stable') return;
  await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
  await pc.setLocalDescription(await pc.createAnswer());
  const answer = { type: 'answer', sdp: pc.localDescription.sdp };
  if (msg.from) answer.to = msg.from;
  send(answer);
}

function closePc() {
  if (state.pc) {
    state.pc.close();
    state.pc = null;
  }
  state.peerId = null;
}

function participantFor(key) {
  if (state.participants.has(key)) return state.participants.get(key);
  for (const p of state.participants.values()) if (p.media_id === key) return p;
  return null;
}

function addRemoteTrack(key, track) {
  let r = state.remote.get(key);
  if (!r) {
    const tile = document.createElement('figure');
    tile.className = 'tile';
    const video = document.createElement('video');
    video.autoplay = true;
    video.playsInline = true;
    video.muted = true; // sound plays through the audio element, so autoplay rules never stop the picture
    video.dataset.testid = 'remote-video';
    const audio = document.createElement('audio');
    audio.autoplay = true;
    const caption = document.createElement('figcaption');
    tile.append(video, audio, caption);
    $('grid').append(tile);
    r = { tile, video, audio, caption, stream: new MediaStream(), screens: new Map() };
    video.srcObject = r.stream;
    audio.srcObject = r.stream;
    state.remote.set(key, r);
    watchFirstFrame(video);
  }
  if (track.kind === 'video' && r.stream.getVideoTracks().length > 0) {
    // A second video track from the same person is a screen share: its own tile.
    addScreenTile(key, r, track);
  } else {
    r.stream.addTrack(track);
  }
  track.addEventListener('ended', () => dropTrack(key, track));
  refreshTiles();
}

function addScreenTile(key, r, track) {
  const tile = document.createElement('figure');
  tile.className = 'tile screen';
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  video.muted = true;
  video.dataset.testid = 'remote-screen';
  video.srcObject = new MediaStream([track]);
  const caption = document.createElement('figcaption');
  tile.append(video, caption);
  $('grid').append(tile);
  r.screens.set(track.id, { tile, caption });
}

function dropTrack(key, track) {
  const r = state.remote.get(key);
  if (!r) return;
  const screen = r.screens.get(track.id);
  if (screen) {
    screen.tile.remove();
    r.screens.delete(track.id);
    return;
  }
  r.stream.removeTrack(track);
  if (r.stream.getTracks().length === 0) removeRemote(key);
}

function removeRemote(key) {
  const r = state.remote.get(key);
  if (!r) return;
  r.tile.remove();
  for (const s of r.screens.values()) s.tile.remove();
  state.remote.delete(key);
}

function refreshTiles() {
  for (const [key, r] of state.remote) {
    const p = participantFor(key);
    const name = p ? p.name : 'Connecting…';
    r.video.dataset.participant = name;
    r.caption.textContent = name;
    const flags = document.createElement('span');
    flags.className = 'muted-flags';
    flags.textContent = p && p.audio_muted ? ' · mic off' : '';
    r.caption.append(flags);
    r.tile.dataset.videoMuted = String(!!(p && p.video_muted));
    r.tile.dataset.audioMuted = String(!!(p && p.audio_muted));
    r.video.dataset.videoMuted = r.tile.dataset.videoMuted;
    for (const s of r.screens.values()) s.caption.textContent = name + ' — screen';
  }
}

function watchFirstFrame(video) {
  const mark = () => {
    if (window.sori.firstRemoteFrameAt === null) window.sori.firstRemoteFrameAt = performance.now();
  };
  if ('requestVideoFrameCallback' in video) video.requestVideoFrameCallback(mark);
  else video.addEventListener('loadeddata', mark, { once: true });
}

// ---------- permissions and moderation ----------

/** Shows only the controls this participant's token allows. */
function applyPermissions() {
  const p = state.permissions;
  if (!p) return;
  const may = (source) => p.publish.includes(source);
  $('mute-audio').hidden = !may('microphone');
  $('mute-video').hidden = !may('camera');
  $('share-screen').hidden = !may('screen_share');
  $('record').hidden = !p.record;
  $('chat-input').disabled = !p.chat;
  $('chat-send').disabled = !p.chat;
  $('chat-input').placeholder = p.chat ? 'Message everyone' : 'You can read the chat but not write in it';
  $('admin-controls').hidden = !p.admin;
  showLocked(state.locked);
}

/** A moderator muted (or let go of) this participant's microphone or camera. */
function applyServerMute(muted) {
  const was = state.serverMuted;
  state.serverMuted = { audio: !!muted.audio, video: !!muted.video };
  for (const kind of ['audio', 'video']) {
    const button = kind === 'audio' ? $('mute-audio') : $('mute-video');
    if (state.serverMuted[kind]) {
      // The server forwards nothing of it anyway; the switch says so and stays off.
      const tracks = kind === 'audio' ? state.local.getAudioTracks() : state.local.getVideoTracks();
      for (const t of tracks) t.enabled = false;
      button.disabled = true;
      button.textContent = kind === 'audio' ? 'Mic muted by moderator' : 'Camera stopped by moderator';
      button.setAttribute('aria-pressed', 'true');
    } else if (was[kind]) {
      button.disabled = false;
      button.textContent = kind === 'audio' ? 'Unmute mic' : 'Start camera';
    }
  }
  send({ type: 'mute', audio: isMuted('audio'), video: isMuted('video') });
  renderParticipants();
}

function showLocked(locked) {
  state.locked = locked;
  $('lock-room').textContent = locked ? 'Unlock room' : 'Lock room';
  $('lock-room').setAttribute('aria-pressed', String(locked));
  $('locked-indicator').hidden = !locked;
}

/** "Ada muted Bo" for everyone in the room. */
function showModeration(m) {
  const who = m.by === state.me ? 'You' : m.by_name;
  const whom = m.target === state.me ? 'you' : m.target_name;
  const text = {
    'mute-audio': `${who} muted ${whom}.`,
    'unmute-audio': `${who} let ${whom} unmute.`,
    'mute-video': `${who} stopped ${whom === 'you' ? 'your' : whom + "'s"} camera.`,
    'unmute-video': `${who} let ${whom} start ${whom === 'you' ? 'your' : 'their'} camera.`,
    'remove': `${who} removed ${whom} from the room.`,
    'ban': `${who} removed ${whom} from the room for good.`,
    'lock': `${who} locked the room: nobody new can join.`,
    'unlock': `${who} unlocked the room.`,
  }[m.action];
  if (m.action === 'lock' || m.action === 'unlock') showLocked(m.action === 'lock');
  if (!text) return;
  toast(text);
  const li = document.createElement('li');
  li.className = 'notice';
  li.dataset.testid = 'moderation-notice';
  li.textContent = text;
  $('messages').append(li);
  li.scrollIntoView({ block: 'end' });
}

function moderationButton(label, testid, message) {
  const b = document.createElement('button');
  b.type = 'button';
  b.className = 'small';
  b.textContent = label;
  b.dataset.testid = testid;
  b.addEventListener('click', () => send(message));
  return b;
}

$('lock-room').addEventListener('click', () => send({ type: 'lock-room', locked: !state.locked }));
$('end-room').addEventListener('click', () => {
  if (confirm('End the meeting for everyone?')) send({ type: 'end-room' });
});

// ---------- participants and chat ----------

function renderParticipants() {
  const list = $('participants');
  list.replaceChildren();
  const me = {
    id: state.me, name: $('local-name').textContent + ' (you)', audio_muted: isMuted('audio'),
    video_muted: isMuted('video'), server_muted: state.serverMuted, self: true,
  };
  const admin = state.permissions && state.permissions.admin;
  for (const p of [me, ...state.participants.values()]) {
    const li = document.createElement('li');
    li.dataset.testid = 'participant';
    li.dataset.participant = p.name;
    const name = document.createElement('span');
    name.textContent = p.name;
    const flags = document.createElement('span');
    flags.className = 'flags';
    const sm = p.server_muted || {};
    flags.textContent = [
      sm.audio ? 'muted by moderator' : (p.audio_muted ? 'mic off' : ''),
      sm.video ? 'camera stopped by moderator' : (p.video_muted ? 'camera off' : ''),
    ].filter(Boolean).join(' · ');
    li.append(name, flags);
    if (admin && !p.self) {
      const tools = document.createElement('span');
      tools.className = 'moderation';
      tools.append(
        moderationButton(sm.audio ? 'Allow mic' : 'Mute', 'moderate-mute-audio',
          { type: 'mute-participant', id: p.id, audio: !sm.audio }),
        moderationButton(sm.video ? 'Allow camera' : 'Stop camera', 'moderate-mute-video',
          { type: 'mute-participant', id: p.id, video: !sm.video }),
        moderationButton('Remove', 'moderate-remove', { type: 'remove-participant', id: p.id }),
        moderationButton('Ban', 'moderate-ban', { type: 'remove-participant', id: p.id, ban: true }),
      );
      li.append(tools);
    }
    list.append(li);
  }
}

function showChat(c) {
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
  $('messages').append(li);
  li.scrollIntoView({ block: 'end' });
}

$('chat-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = $('chat-input').value.trim();
  if (!text) return;
  send({ type: 'chat', text });
  $('chat-input').value = '';
});

// ---------- controls ----------

function isMuted(kind) {
  if (!state.local) return false;
  const t = kind === 'audio' ? state.local.getAudioTracks()[0] : state.local.getVideoTracks()[0];
  return t ? !t.enabled : true;
}

function toggle(kind) {
  if (state.serverMuted[kind]) return;
  const tracks = kind === 'audio' ? state.local.getAudioTracks() : state.local.getVideoTracks();
  const muted = !isMuted(kind);
  for (const t of tracks) t.enabled = !muted;
  const button = kind === 'audio' ? $('mute-audio') : $('mute-video');
  button.setAttribute('aria-pressed', String(muted));
  button.textContent = kind === 'audio' ? (muted ? 'Unmute mic' : 'Mute mic') : (muted ? 'Start camera' : 'Stop camera');
  send({ type: 'mute', audio: isMuted('audio'), video: isMuted('video') });
  document.querySelector('.tile.local').dataset.videoMuted = String(isMuted('video'));
  renderParticipants();
}

$('mute-audio').addEventListener('click', () => toggle('audio'));
$('mute-video').addEventListener('click', () => toggle('video'));

$('share-screen').addEventListener('click', async () => {
  if (state.screen) {
    stopScreen();
    return;
  }
  try {
    state.screen = await navigator.mediaDevices.getDisplayMedia({ video: true });
  } catch (err) {
    toast('Screen sharing was not started: ' + err.message);
    return;
  }
  const track = state.screen.getVideoTracks()[0];
  track.addEventListener('ended', stopScreen);
  $('share-screen').setAttribute('aria-pressed', 'true');
  $('share-screen').textContent = 'Stop sharing';
  if (state.pc) {
    // negotiationneeded sends the new offer.
    state.pc.addTransceiver(track, { direction: state.peerId ? 'sendrecv' : 'sendonly', streams: [state.screen] });
  }
});

function stopScreen() {
  if (!state.screen) return;
  const tracks = state.screen.getTracks();
  state.screen = null;
  for (const t of tracks) t.stop();
  if (state.pc) {
    for (const tr of state.pc.getTransceivers()) {
      if (tr.sender.track && tracks.includes(tr.sender.track)) {
        tr.sender.replaceTrack(null);
        tr.direction = 'inactive';
      }
    }
  }
  $('share-screen').setAttribute('aria-pressed', 'false');
  $('share-screen').textContent = 'Share screen';
}

// ---------- room recording ----------

function showRecording(on) {
  state.recording = on;
  $('recording-indicator').hidden = !on;
  $('record').setAttribute('aria-pressed', String(on));
  $('record').textContent = on ? 'Stop recording' : 'Record';
}

$('record').addEventListener('click', () => send({ type: 'record', on: !state.recording }));

$('leave').addEventListener('click', () => leave('You left the room.'));

function leave(reason) {
  state.leaving = true;
  send({ type: 'leave' });
  closePc();
  if (state.ws) state.ws.close();
  clearInterval(state.pingTimer);
  for (const t of state.local ? state.local.getTracks() : []) t.stop();
  stopScreen();
  for (const key of [...state.remote.keys()]) removeRemote(key);
  state.participants.clear();
  state.me = null;
  state.permissions = null;
  for (const id of ['mute-audio', 'mute-video']) $(id).disabled = false;
  showRecording(false);
  $('messages').replaceChildren();
  $('call').hidden = true;
  $('lobby').hidden = false;
  $('lobby-error').textContent = reason || '';
}
