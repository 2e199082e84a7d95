// Access control in the browser: tokens minted by LiveKit's own server SDK join, a page without
// one is asked for one, the server enforces what a token grants (a listener's media reaches no
// one, a moderator's mute holds against a page hacked to keep sending), bans and locks hold,
// and recordings are not public.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AccessToken } from 'livekit-server-sdk';
import { serverAndBrowser, joinPage, waitForVideoFrom, assertUdp, artifacts } from './helpers.js';

const KEY = 'APIe2eAccess';
const SECRET = 'e2e-access-secret-0123456789abcdef';
const ctx = serverAndBrowser(['--api-key', KEY, '--api-secret', SECRET]);

async function mint(identity, room, grant = {}) {
  const at = new AccessToken(KEY, SECRET, { identity, name: identity, ttl: '10m' });
  at.addGrant({ roomJoin: true, room, ...grant });
  return at.toJwt();
}

const join = async (room, identity, grant) =>
  joinPage(ctx.browser, ctx.server.url, room, identity, `&token=${await mint(identity, room, grant)}`);

const inboundFrom = (page, name) => page.evaluate((n) => window.sori.inboundFrom(n), name);

test('a livekit-server-sdk token joins and leaves the address bar; no token, no entry', async () => {
  const ada = await join('lk', 'Ada');
  const bo = await join('lk', 'Bo');
  await waitForVideoFrom(ada, 'Bo');
  await waitForVideoFrom(bo, 'Ada');
  for (const p of [ada, bo]) await assertUdp(p);
  assert.ok(!ada.url().includes('token='), `the token left the URL: ${ada.url()}`);
  const pair = await ada.evaluate(() => window.sori.selectedPair());
  assert.equal(pair.local.protocol, 'udp', JSON.stringify(pair));

  const anon = await joinPage(ctx.browser, ctx.server.url, 'lk', 'Mallory');
  await anon.getByTestId('lobby-error').filter({ hasText: 'access token' }).waitFor();
  assert.equal(await anon.getByTestId('token-input').isVisible(), true, 'the lobby asks for a token');
  const names = await ada.getByTestId('participant').allTextContents();
  assert.equal(names.length, 2, `Mallory never got in: ${names}`);
  for (const p of [ada, bo, anon]) await p.context().close();
});

test("a listener's media reaches no one, and it still receives", async () => {
  const ada = await join('listen', 'Ada');
  const li = await join('listen', 'Li', { canPublish: false });
  await waitForVideoFrom(li, 'Ada');
  // Ada only sends and Li only receives; both connections carry media.
  for (const p of [ada, li]) await assertUdp(p);
  // Li's browser captured a camera and a microphone and offered them; the server answered
  // them inactive. Ada has a tile for nobody and decodes nothing.
  await ada.waitForFunction(() => document.querySelectorAll('[data-testid=participant]').length === 2);
  const fromLi = await inboundFrom(ada, 'Li');
  const all = await ada.evaluate(() => window.sori.inboundStats());
  assert.deepEqual(fromLi, { audioPackets: 0, videoFrames: 0 });
  assert.deepEqual(all, { audioPackets: 0, videoFramesDecoded: 0 });
  assert.equal(await li.getByTestId('mute-audio').isHidden(), true, 'no mic switch for a listener');
  for (const p of [ada, li]) await p.context().close();
});

test("a moderator's mute holds against a page that keeps sending, and can be lifted", async () => {
  const mod = await join('mod', 'Mod', { roomAdmin: true });
  const bo = await join('mod', 'Bo');
  const cy = await join('mod', 'Cy');
  await waitForVideoFrom(cy, 'Bo');
  await cy.waitForFunction(async () => (await window.sori.inboundFrom('Bo')).audioPackets > 20);
  for (const p of [bo, cy]) await assertUdp(p);
  // Bo's page is hacked: nothing can switch its microphone off.
  await bo.evaluate(() => {
    Object.defineProperty(MediaStreamTrack.prototype, 'enabled', { get() { return true; }, set() {} });
  });
  const sentBefore = (await bo.evaluate(() => window.sori.outbound())).audioPackets;

  await mod.locator('[data-testid=participant][data-participant=Bo] [data-testid=moderate-mute-audio]').click();
  await cy.getByTestId('moderation-notice').filter({ hasText: 'Mod muted Bo' }).waitFor();
  await bo.getByTestId('mute-audio').filter({ hasText: 'muted by moderator' }).waitFor();
  // From half a second after everyone was told, nothing more of Bo's audio arrives.
  await cy.waitForTimeout(500);
  const at500 = (await inboundFrom(cy, 'Bo')).audioPackets;
  await cy.waitForTimeout(2000);
  const later = (await inboundFrom(cy, 'Bo')).audioPackets;
  const sentAfter = (await bo.evaluate(() => window.sori.outbound())).audioPackets;
  assert.ok(sentAfter - sentBefore > 100, `Bo's page kept sending (${sentAfter - sentBefore} packets)`);
  assert.equal(later, at500, `Cy got ${later - at500} packets of Bo's audio after the mute`);
  assert.equal(await bo.getByTestId('mute-audio').isDisabled(), true, 'Bo cannot unmute a server mute');
  await mod.screenshot({ path: `${artifacts}/moderator.png` });

  await mod.locator('[data-testid=participant][data-participant=Bo] [data-testid=moderate-mute-audio]').click();
  await cy.waitForFunction(async (n) => (await window.sori.inboundFrom('Bo')).audioPackets > n + 20, later);
  for (const p of [mod, bo, cy]) await p.context().close();
});

test('a banned identity cannot come back and a locked room takes no one new', async () => {
  const mod = await join('ban', 'Mod', { roomAdmin: true });
  const bo = await join('ban', 'Bo');
  await mod.waitForFunction(() => document.querySelectorAll('[data-testid=participant]').length === 2);
  await mod.locator('[data-testid=participant][data-participant=Bo] [data-testid=moderate-ban]').click();
  await bo.getByTestId('lobby-error').filter({ hasText: 'may not join it again' }).waitFor();
  // Bo tries again with a fresh token for the same identity.
  const again = await join('ban', 'Bo');
  await again.getByTestId('lobby-error').filter({ hasText: 'removed from this room' }).waitFor();

  await mod.getByTestId('lock-room').click();
  await mod.getByTestId('locked-indicator').waitFor();
  const dee = await join('ban', 'Dee');
  await dee.getByTestId('lobby-error').filter({ hasText: 'locked' }).waitFor();
  const names = await mod.getByTestId('participant').allTextContents();
  assert.equal(names.length, 1, `only the moderator: ${names}`);
  for (const p of [mod, bo, again, dee]) await p.context().close();
});

test('recordings refuse anonymous requests and tokens without the grant', async () => {
  const anonymous = await fetch(`${ctx.server.url}/recordings`);
  assert.equal(anonymous.status, 401);
  const plain = await fetch(`${ctx.server.url}/recordings`, {
    headers: { Authorization: `Bearer ${await mint('ada', 'rec')}` },
  });
  assert.equal(plain.status, 403);
  const recorder = await fetch(`${ctx.server.url}/recordings`, {
    headers: { Authorization: `Bearer ${await mint('rec', 'rec', { roomRecord: true })}` },
  });
  assert.equal(recorder.status, 200);
  assert.ok(Array.isArray(await recorder.json()));
});
