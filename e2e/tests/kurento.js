// Pieces of the tests that drive `sori media` with the unmodified npm kurento-client, the way
// Kurento applications do, and browser pages holding plain RTCPeerConnections.
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { spawnSori, assertUdpPair } from './helpers.js';

const require = createRequire(import.meta.url);
/** The npm package exactly as Kurento applications use it. */
export const kurento = require('kurento-client');

/**
 * Starts `sori media` (or `sori serve --kurento` with `serve: true`) on free loopback ports;
 * resolves with its control URL once it logs it.
 */
export async function startMedia(extraArgs = [], { serve = false } = {}) {
  const args = serve
    ? ['serve', '--kurento', '--listen', '127.0.0.1:0', '--no-turn']
    : ['media'];
  args.push('--kurento-listen', '127.0.0.1:0', '--rtc-port', '0', '--advertise-ip', '127.0.0.1');
  const sori = await spawnSori([...args, ...extraArgs], /control API on (ws:\/\/\S+)/);
  return { url: sori.match, log: sori.log, child: sori.child, stop: sori.stop };
}

/** A kurento-client connected to `url` (callback form, as the tutorials use it). */
export function connectClient(url) {
  return new Promise((resolve, reject) => {
    kurento(url, { failAfter: 1 }, (err, client) => (err ? reject(err) : resolve(client)));
  });
}

/** Serves a blank page on loopback (a secure context, so getUserMedia works). */
export async function blankPageServer() {
  const server = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><title>peer</title><body></body>');
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${server.address().port}/`,
    close: () => new Promise((r) => server.close(r)),
  };
}

// Runs in the page: named RTCPeerConnections, each with its own <video> for what it receives.
const PAGE = () => {
  window.pcs = {};
  window.localStream = null;
  window.openPc = async (name, { send, recv, codec }) => {
    const pc = new RTCPeerConnection();
    const entry = { pc, candidates: [], gathered: false, video: null };
    window.pcs[name] = entry;
    pc.onicecandidate = (e) => {
      if (e.candidate && e.candidate.candidate) entry.candidates.push(e.candidate.toJSON());
      else entry.gathered = true;
    };
    pc.ontrack = (e) => {
      if (e.track.kind !== 'video') return;
      if (!entry.video) {
        entry.video = document.createElement('video');
        entry.video.muted = true;
        entry.video.autoplay = true;
        entry.video.playsInline = true;
        entry.video.dataset.pc = name;
        document.body.appendChild(entry.video);
      }
      entry.video.srcObject = new MediaStream([e.track]);
    };
    if (send) {
      if (!window.localStream) {
        window.localStream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 320, height: 240 } });
      }
      for (const t of window.localStream.getTracks()) {
        const tr = pc.addTransceiver(t, { direction: recv ? 'sendrecv' : 'sendonly', streams: [window.localStream] });
        if (codec && t.kind === 'video') {
          // Offer only this video codec (as a browser preferring it would).
          tr.setCodecPreferences(RTCRtpReceiver.getCapabilities('video').codecs
            .filter((c) => c.mimeType.toLowerCase() === `video/${codec.toLowerCase()}`));
        }
      }
    } else if (recv) {
      pc.addTransceiver('audio', { direction: 'recvonly' });
      pc.addTransceiver('video', { direction: 'recvonly' });
    }
    if (!send && !recv) return null;
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    return pc.localDescription.sdp;
  };
  // The other way round: the endpoint offers, the page answers sending its camera.
  window.answerPc = async (name, offerSdp) => {
    await window.openPc(name, {});
    const { pc } = window.pcs[name];
    await pc.setRemoteDescription({ type: 'offer', sdp: offerSdp });
    if (!window.localStream) {
      window.localStream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 320, height: 240 } });
    }
    for (const t of pc.getTransceivers()) {
      const track = window.localStream.getTracks().find((x) => x.kind === t.receiver.track.kind);
      if (track) { await t.sender.replaceTrack(track); t.direction = 'sendrecv'; }
    }
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    return pc.localDescription.sdp;
  };
  window.takeCandidates = (name) => window.pcs[name].candidates.splice(0);
  window.gathered = (name) => window.pcs[name].gathered;
  window.setAnswer = (name, sdp) => window.pcs[name].pc.setRemoteDescription({ type: 'answer', sdp });
  window.addCandidate = (name, c) => window.pcs[name].pc.addIceCandidate(c);
  window.framesOf = (name) => {
    const v = window.pcs[name] && window.pcs[name].video;
    return v ? v.getVideoPlaybackQuality().totalVideoFrames : 0;
  };
  window.stateOf = (name) => window.pcs[name].pc.connectionState;
  // The same shape as the web client's window.sori.selectedPair().
  window.selectedPairOf = async (name) => {
    const report = await window.pcs[name].pc.getStats();
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
  };
};

/** Opens a page ready to hold peer connections. */
export async function peerPage(browser, url, label) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`[${label}] page error:`, e.message));
  page.on('console', (m) => {
    if (m.type() === 'error') console.error(`[${label}] console error:`, m.text());
  });
  await page.goto(url);
  await page.evaluate(PAGE);
  return page;
}

/**
 * What a Kurento application's server does for one browser peer connection, the way the
 * tutorials do it: the browser's early candidates are added before processOffer, candidates the
 * endpoint finds go to the browser, and the rest trickle. `beforeOffer` runs between the
 * endpoint's setup and processOffer (group call: connect first); `afterOffer` between
 * processOffer and gatherCandidates (one2many: connect there).
 */
export async function negotiate(page, name, endpoint, { send, recv, codec, beforeOffer, afterOffer } = {}) {
  const offer = await page.evaluate(([n, o]) => window.openPc(n, o), [name, { send, recv, codec }]);
  // Early candidates, queued before processOffer as in the tutorials.
  await page.waitForFunction((n) => window.gathered(n) || window.pcs[n].candidates.length > 0, name);
  for (const c of await page.evaluate((n) => window.takeCandidates(n), name)) {
    await endpoint.addIceCandidate(kurento.getComplexType('IceCandidate')(c));
  }
  // Candidates the endpoint finds go to the browser once it has the answer.
  const found = [];
  const early = [];
  let answered = false;
  const toBrowser = (c) => found.push(page.evaluate(([n, cand]) => window.addCandidate(n, cand), [name, c]));
  endpoint.on('IceCandidateFound', (event) => (answered ? toBrowser(event.candidate) : early.push(event.candidate)));
  if (beforeOffer) await beforeOffer();
  const answer = await endpoint.processOffer(offer);
  if (afterOffer) await afterOffer();
  await endpoint.gatherCandidates();
  await page.evaluate(([n, sdp]) => window.setAnswer(n, sdp), [name, answer]);
  answered = true;
  early.splice(0).forEach(toBrowser);
  // Later browser candidates trickle.
  for (const c of await page.evaluate((n) => window.takeCandidates(n), name)) {
    await endpoint.addIceCandidate(c);
  }
  await Promise.all(found);
  return answer;
}

/** Asserts that the peer connection `name` on `page` carries its media over UDP. */
export async function assertPcUdp(page, name) {
  assertUdpPair(await page.evaluate((n) => window.selectedPairOf(n), name), `peer connection ${name}`);
}

/** Waits until the video received on `name` decodes frames, and keeps decoding. */
export async function waitForFrames(page, name, timeout = 20000) {
  await page.waitForFunction((n) => window.framesOf(n) > 5, name, { timeout, polling: 100 });
  const before = await page.evaluate((n) => window.framesOf(n), name);
  await page.waitForFunction(([n, b]) => window.framesOf(n) > b + 5, [name, before], { timeout, polling: 100 });
  return page.evaluate((n) => window.framesOf(n), name);
}
