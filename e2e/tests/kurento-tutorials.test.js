// The Kurento tutorials' flows, driven by the unmodified npm kurento-client against
// `sori media`, with Chromium pages holding plain RTCPeerConnections. Every receiver must
// decode video frames.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser } from './helpers.js';
import { startMedia, connectClient, blankPageServer, peerPage, negotiate, waitForFrames, assertPcUdp } from './kurento.js';

let media; let browser; let pages; let client;

before(async () => {
  media = await startMedia();
  browser = await launchBrowser();
  pages = await blankPageServer();
  client = await connectClient(media.url);
});

after(async () => {
  client?.close();
  await browser?.close();
  await pages?.close();
  await media?.stop();
});

test('hello world: a browser decodes its own video sent back through a loopback endpoint', async () => {
  const page = await peerPage(browser, pages.url, 'hello');
  const pipeline = await client.create('MediaPipeline');
  const webRtc = await pipeline.create('WebRtcEndpoint');
  const flowing = new Promise((resolve) => webRtc.on('MediaFlowInStateChanged', (e) => e.state === 'FLOWING' && resolve(e)));
  await negotiate(page, 'loop', webRtc, {
    send: true,
    recv: true,
    beforeOffer: () => webRtc.connect(webRtc),
  });
  const frames = await waitForFrames(page, 'loop');
  await assertPcUdp(page, 'loop');
  console.log(`hello world: ${frames} frames decoded from its own loopback`);
  const event = await flowing;
  assert.ok(['AUDIO', 'VIDEO'].includes(event.mediaType));
  const sources = await webRtc.getSourceConnections();
  assert.equal(sources.length, 3, 'audio, video and data connected to itself');
  assert.ok(sources.every((c) => c.source === webRtc.id && c.sink === webRtc.id));
  await pipeline.release();
  await page.context().close();
});

test('generateOffer: the endpoint offers, the browser answers and decodes its own loopback', async () => {
  const page = await peerPage(browser, pages.url, 'answerer');
  const pipeline = await client.create('MediaPipeline');
  const webRtc = await pipeline.create('WebRtcEndpoint');
  await webRtc.connect(webRtc);
  const offer = await webRtc.generateOffer();
  const answer = await page.evaluate(([sdp]) => window.answerPc('answer', sdp), [offer]);
  const local = await webRtc.processAnswer(answer);
  assert.equal(local, offer, 'processAnswer returns the local description');
  await webRtc.gatherCandidates();
  const frames = await waitForFrames(page, 'answer');
  await assertPcUdp(page, 'answer');
  console.log(`generateOffer: ${frames} frames decoded`);
  await pipeline.release();
  await page.context().close();
});

test('one2one call: caller and callee each decode the other', async () => {
  const caller = await peerPage(browser, pages.url, 'caller');
  const callee = await peerPage(browser, pages.url, 'callee');
  const pipeline = await client.create('MediaPipeline');
  const a = await pipeline.create('WebRtcEndpoint');
  const b = await pipeline.create('WebRtcEndpoint');
  // Both connects happen before any SDP, as in the tutorial.
  await a.connect(b);
  await b.connect(a);
  await negotiate(caller, 'call', a, { send: true, recv: true });
  await negotiate(callee, 'call', b, { send: true, recv: true });
  const [fa, fb] = await Promise.all([waitForFrames(caller, 'call'), waitForFrames(callee, 'call')]);
  for (const p of [caller, callee]) await assertPcUdp(p, 'call');
  console.log(`one2one: caller decoded ${fa} frames, callee ${fb}`);
  await pipeline.release();
  await caller.context().close();
  await callee.context().close();
});

test('one2many: three viewers, each negotiated before it is connected, decode the presenter', async () => {
  const presenterPage = await peerPage(browser, pages.url, 'presenter');
  const pipeline = await client.create('MediaPipeline');
  const presenter = await pipeline.create('WebRtcEndpoint');
  await negotiate(presenterPage, 'present', presenter, { send: true, recv: false });
  const viewers = [];
  for (let i = 0; i < 3; i++) {
    const page = await peerPage(browser, pages.url, `viewer${i}`);
    const viewer = await pipeline.create('WebRtcEndpoint');
    // The viewer's recvonly offer is answered before it has a source; connect comes in the
    // processOffer callback, then gatherCandidates.
    await negotiate(page, 'view', viewer, {
      recv: true,
      afterOffer: () => presenter.connect(viewer),
    });
    viewers.push({ page, viewer });
  }
  const frames = await Promise.all(viewers.map(({ page }) => waitForFrames(page, 'view')));
  console.log(`one2many: viewers decoded ${frames.join(', ')} frames`);
  await assertPcUdp(presenterPage, 'present');
  for (const { page } of viewers) await assertPcUdp(page, 'view');
  const sinks = await presenter.getSinkConnections('VIDEO');
  assert.equal(sinks.length, 3);
  // A viewer leaves; the others keep decoding.
  await viewers[0].viewer.release();
  await waitForFrames(viewers[1].page, 'view');
  assert.equal((await presenter.getSinkConnections('VIDEO')).length, 2);
  await pipeline.release();
  for (const { page } of viewers) await page.context().close();
  await presenterPage.context().close();
});

test('a PassThrough between presenter and viewer forwards video, and rewiring switches the source', async () => {
  const a = await peerPage(browser, pages.url, 'source-a');
  const b = await peerPage(browser, pages.url, 'source-b');
  const v = await peerPage(browser, pages.url, 'pt-viewer');
  const pipeline = await client.create('MediaPipeline');
  const [ea, eb, viewer] = [await pipeline.create('WebRtcEndpoint'), await pipeline.create('WebRtcEndpoint'), await pipeline.create('WebRtcEndpoint')];
  const pass = await pipeline.create('PassThrough');
  await negotiate(a, 'send', ea, { send: true });
  await negotiate(b, 'send', eb, { send: true });
  await ea.connect(pass);
  await pass.connect(viewer);
  await negotiate(v, 'view', viewer, { recv: true });
  const before = await waitForFrames(v, 'view');
  await assertPcUdp(a, 'send');
  await assertPcUdp(v, 'view');
  // A new source into the pass-through replaces the old one; the viewer keeps decoding.
  await eb.connect(pass);
  const sources = await pass.getSourceConnections('VIDEO');
  assert.equal(sources.length, 1);
  assert.equal(sources[0].source, eb.id);
  // The first source goes away entirely: frames still arriving come from the second.
  await ea.release();
  const after = await waitForFrames(v, 'view');
  console.log(`pass-through: ${before} frames from the first source, ${after} in all after the switch`);
  await pipeline.release();
  for (const p of [a, b, v]) await p.context().close();
});

test('group call: an endpoint per subscription, connects repeated, everyone decodes everyone', async () => {
  const names = ['ana', 'ben', 'cho'];
  const pipeline = await client.create('MediaPipeline');
  const users = {};
  for (const name of names) {
    const page = await peerPage(browser, pages.url, name);
    const outgoing = await pipeline.create('WebRtcEndpoint');
    await negotiate(page, 'self', outgoing, { send: true, recv: false });
    users[name] = { page, outgoing, incoming: {} };
  }
  const receive = async (who, from) => {
    const user = users[who];
    const incoming = await pipeline.create('WebRtcEndpoint');
    user.incoming[from] = incoming;
    await negotiate(user.page, `from-${from}`, incoming, {
      recv: true,
      // getEndpointForUser connects every time it runs: the same pair twice.
      beforeOffer: async () => {
        await users[from].outgoing.connect(incoming);
        await users[from].outgoing.connect(incoming);
      },
    });
  };
  for (const who of names) {
    for (const from of names) if (from !== who) await receive(who, from);
  }
  const counts = [];
  for (const who of names) {
    for (const from of names) {
      if (from === who) continue;
      counts.push(`${who}<-${from}: ${await waitForFrames(users[who].page, `from-${from}`)}`);
    }
  }
  console.log(`group call: ${counts.join(', ')}`);
  for (const who of names) {
    await assertPcUdp(users[who].page, 'self');
    for (const from of names) if (from !== who) await assertPcUdp(users[who].page, `from-${from}`);
  }
  // Repeated connects left one link per type.
  const links = await users.ana.outgoing.getSinkConnections('VIDEO');
  assert.equal(links.length, 2);
  // Leaving: release the leaver's endpoints and the others' endpoints for the leaver.
  await users.cho.outgoing.release();
  for (const e of Object.values(users.cho.incoming)) await e.release();
  await users.ana.incoming.cho.release();
  await users.ben.incoming.cho.release();
  await waitForFrames(users.ana.page, 'from-ben');
  await pipeline.release();
  for (const u of Object.values(users)) await u.page.context().close();
});
