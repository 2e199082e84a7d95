// Firefox and Chromium in one call, in an SFU room and in a P2P room: each decodes the other's
// video and receives its audio, over UDP. How long each took from page load to the first remote
// frame is printed; the second to join measures a join, the first also waited for the second,
// so each room lets the other browser join second.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  serverAndBrowser, launchFirefox, joinFirefoxPage, joinPage, waitForMediaFrom, assertUdp,
  describePair,
} from './helpers.js';

const ctx = serverAndBrowser();
let firefox;
before(async () => {
  firefox = await launchFirefox();
});
after(async () => {
  await firefox?.close();
});

const rooms = [
  { label: 'an SFU room', room: 'firefox-sfu', extra: '', mode: 'sfu', firefoxFirst: false },
  { label: 'a P2P room', room: 'firefox-p2p', extra: '&mode=p2p', mode: 'peer to peer', firefoxFirst: true },
];

for (const { label, room, extra, mode, firefoxFirst } of rooms) {
  test(`Firefox and Chromium in ${label} see and hear each other over UDP`, async () => {
    const joinFox = () => joinFirefoxPage(firefox, ctx.server.url, room, 'Fox', extra);
    const joinChrome = () => joinPage(ctx.browser, ctx.server.url, room, 'Chrome', extra);
    let fox;
    let chrome;
    if (firefoxFirst) {
      fox = await joinFox();
      chrome = await joinChrome();
    } else {
      chrome = await joinChrome();
      fox = await joinFox();
    }
    const received = {
      Fox: await waitForMediaFrom(fox, 'Chrome'),
      Chrome: await waitForMediaFrom(chrome, 'Fox'),
    };
    const pages = { Fox: fox, Chrome: chrome };
    const report = [];
    for (const [who, page] of Object.entries(pages)) {
      const { pair, toFirstFrame, status, shownMode } = await page.evaluate(async () => ({
        pair: await window.sori.selectedPair(),
        toFirstFrame: Math.round(window.sori.firstRemoteFrameAt - window.sori.startedAt),
        status: document.querySelector('[data-testid=status]').textContent,
        shownMode: document.querySelector('[data-testid=mode]').textContent,
      }));
      assert.equal(status, 'connected', who);
      assert.equal(shownMode, mode, who);
      const { videoFrames, audioPackets } = received[who];
      report.push(`${who}: first remote frame ${toFirstFrame} ms after page load, ` +
        `${videoFrames} frames and ${audioPackets} audio packets received, over ${describePair(pair)}`);
    }
    console.log(`${label} with ${await firefox.version()}, ${firefoxFirst ? 'Chrome' : 'Fox'} joining second: ${report.join('; ')}`);
    for (const page of Object.values(pages)) await assertUdp(page);
    // Both browsers send their camera to the media server as three simulcast encodings, and
    // to each other as one.
    const rids = mode === 'sfu' ? ['f', 'h', 'q'] : ['-'];
    for (const page of Object.values(pages)) {
      const sent = await page.evaluate(async () => (await window.sori.outboundVideo()).map((e) => e.rid || '-').sort());
      assert.deepEqual(sent, rids, `${new URL(page.url()).searchParams.get('name')} in ${label}`);
    }
    await fox.browserContext().close();
    await chrome.context().close();
  });
}
