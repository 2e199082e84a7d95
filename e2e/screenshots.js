// Screenshots of the web client for people to look at (not a test): the lobby, a four-party
// call, the speaker view, the phone layout, the Korean lobby and the WHEP player (watch.html),
// written to e2e/artifacts/.
//   cd e2e && node screenshots.js
import { join } from 'node:path';
import { startServer, launchBrowser, joinPage, waitForVideoFrom, artifacts } from './tests/helpers.js';

const server = await startServer();
const browser = await launchBrowser();
const shot = (page, name) => page.screenshot({ path: join(artifacts, `${name}.png`) });
try {
  for (const [name, query, viewport] of [
    ['screenshot-lobby', '', { width: 1280, height: 800 }],
    ['screenshot-lobby-ko', '&lang=ko', { width: 1280, height: 800 }],
  ]) {
    const context = await browser.newContext({ viewport });
    const page = await context.newPage();
    await page.goto(`${server.url}/?room=standup${query}`);
    await page.getByTestId('preview-camera').waitFor();
    await page.waitForTimeout(1500);
    await shot(page, name);
    await context.close();
  }

  const names = ['Ada', 'Bo', 'Cy', 'Dee'];
  const pages = [];
  for (const name of names) pages.push(await joinPage(browser, server.url, 'four', name));
  for (const other of names.slice(1)) await waitForVideoFrom(pages[0], other);
  await pages[1].getByTestId('mute-audio').click();
  await pages[0].getByTestId('chat-input').fill('Morning, all!');
  await pages[0].getByTestId('chat-send').click();
  await pages[0].waitForTimeout(3000);
  await shot(pages[0], 'screenshot-four-party');

  // The speaker view at Ada: only Cy's microphone is on (every page here hears Chromium's
  // beeping fake microphone), so Cy has the floor.
  await pages[0].getByTestId('mute-audio').click();
  await pages[3].getByTestId('mute-audio').click();
  await pages[0].getByTestId('layout-toggle').click();
  await pages[0].locator('.tile[data-dominant="true"]:has([data-testid="remote-video"][data-participant="Cy"])').waitFor();
  await pages[0].waitForTimeout(1500);
  await shot(pages[0], 'screenshot-speaker-view');

  const phone = await browser.newContext({ viewport: { width: 360, height: 740 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  const page = await phone.newPage();
  await page.goto(`${server.url}/?room=four&name=Eun&autojoin=1`);
  await waitForVideoFrom(page, 'Ada');
  await page.waitForTimeout(2000);
  await shot(page, 'screenshot-phone');

  // The WHEP player watching the room: whoever has the floor (Cy).
  const watch = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  const player = await watch.newPage();
  await player.goto(`${server.url}/watch.html?room=four`);
  await player.waitForFunction(() => window.whep && window.whep.firstFrameAt);
  await player.waitForTimeout(1500);
  await shot(player, 'screenshot-watch');
} finally {
  await browser.close();
  await server.stop();
}
