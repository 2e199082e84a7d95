// A WHEP player: watches a room (whoever has the floor) or one participant of it, receive-only,
// without joining. `/watch.html?room=R[&who=NAME][#token=JWT]`: the token (when the server has
// API keys) goes in the fragment, which is not sent to servers or kept in their logs.
const params = new URLSearchParams(location.search);
const room = params.get('room') || '';
const who = params.get('who');
const token = new URLSearchParams(location.hash.slice(1)).get('token');

const video = document.getElementById('screen');
const status = document.getElementById('status');
const sound = document.getElementById('sound');
document.getElementById('title').textContent = who ? `${who} — ${room}` : room;
document.title = `${room} — Sori`;

const state = { pc: null, session: null, firstFrameAt: null, postedAt: null, connectedAt: null, error: null };

function say(text, problem = false) {
  status.textContent = text;
  status.classList.toggle('error', problem);
}

sound.addEventListener('click', () => {
  // Playback starts muted (autoplay rules); sound is one click away.
  video.muted = !video.muted;
  sound.textContent = video.muted ? 'Unmute' : 'Mute';
  sound.classList.toggle('primary', video.muted);
  video.play().catch(() => {});
});

async function start() {
  if (!room) {
    say('No room: open /watch.html?room=<name>', true);
    return;
  }
  const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
  state.pc = pc;
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  const stream = new MediaStream();
  pc.ontrack = (e) => {
    stream.addTrack(e.track);
    video.srcObject = stream;
  };
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === 'connected') {
      if (state.connectedAt === null) state.connectedAt = Date.now();
      say('Live');
    }
    if (pc.connectionState === 'failed') say('The connection failed: reload to try again.', true);
    if (pc.connectionState === 'disconnected') say('Reconnecting…');
  };
  await pc.setLocalDescription(await pc.createOffer());
  const headers = { 'Content-Type': 'application/sdp' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const url = `/whep/${encodeURIComponent(room)}${who ? `/${encodeURIComponent(who)}` : ''}`;
  // The server is ICE-lite: it needs none of this browser's candidates, so the offer goes at
  // once rather than after gathering.
  state.postedAt = Date.now();
  const res = await fetch(url, { method: 'POST', headers, body: pc.localDescription.sdp });
  if (res.status !== 201) {
    state.error = `${res.status} ${(await res.text()).trim()}`;
    say(`Cannot watch: ${state.error}`, true);
    pc.close();
    return;
  }
  state.session = new URL(res.headers.get('Location'), location.href).href;
  await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
  const onFrame = () => {
    if (state.firstFrameAt === null) state.firstFrameAt = Date.now();
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}

// Leaving the page ends the session at once rather than at the server's ICE timeout.
addEventListener('pagehide', () => {
  if (state.session) fetch(state.session, { method: 'DELETE', keepalive: true }).catch(() => {});
});

/** For tests: what the player received. */
window.whep = {
  get session() { return state.session; },
  get error() { return state.error; },
  get postedAt() { return state.postedAt; },
  get firstFrameAt() { return state.firstFrameAt; },
  get connectedAt() { return state.connectedAt; },
  async inbound() {
    const out = { videoFrames: 0, audioPackets: 0, width: 0, pair: null };
    if (!state.pc) return out;
    const stats = await state.pc.getStats();
    let pairId = null;
    for (const s of stats.values()) {
      if (s.type === 'inbound-rtp' && s.kind === 'video') {
        out.videoFrames += s.framesDecoded || 0;
        out.width = s.frameWidth || out.width;
      }
      if (s.type === 'inbound-rtp' && s.kind === 'audio') out.audioPackets += s.packetsReceived || 0;
      if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
    }
    const pair = pairId && stats.get(pairId);
    if (pair) {
      const local = stats.get(pair.localCandidateId);
      out.pair = local && { protocol: local.protocol, type: local.candidateType };
    }
    return out;
  },
  /** The mean colour of the picture now (to tell sources apart). */
  shade() {
    if (!video.videoWidth) return null;
    const c = document.createElement('canvas');
    c.width = 32; c.height = 18;
    const g = c.getContext('2d');
    g.drawImage(video, 0, 0, 32, 18);
    const d = g.getImageData(0, 0, 32, 18).data;
    const sum = [0, 0, 0];
    for (let i = 0; i < d.length; i += 4) { sum[0] += d[i]; sum[1] += d[i + 1]; sum[2] += d[i + 2]; }
    const n = d.length / 4;
    return sum.map((v) => Math.round(v / n));
  },
};

start().catch((e) => {
  state.error = String(e);
  say(`Cannot watch: ${e.message || e}`, true);
});
