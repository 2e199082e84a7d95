// Chat rides the WebSocket: same order everywhere, text never HTML, history on join; bad
// protocol messages get an error and disturb nobody.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serverAndBrowser, joinPage } from './helpers.js';

const ctx = serverAndBrowser();

const messages = (page) => page.getByTestId('chat-message').allTextContents();

test('chat from three browsers reaches all three in the same order, as text', async () => {
  const names = ['Ada', 'Grace', 'Linus'];
  const pages = [];
  for (const n of names) pages.push(await joinPage(ctx.browser, ctx.server.url, 'chat', n));
  // Chat needs no media: everyone being in the room is enough.
  for (const p of pages) await p.waitForFunction(() => document.querySelectorAll('[data-testid=participant]').length === 3);

  // All three send at once, twice; the server's order is the one everybody sees.
  const texts = (i) => [`hello from ${names[i]}`, i === 1 ? '<img src=x onerror=alert(1)>' : `second from ${names[i]}`];
  await Promise.all(pages.map(async (p, i) => {
    for (const t of texts(i)) {
      await p.getByTestId('chat-input').fill(t);
      await p.getByTestId('chat-send').click();
    }
  }));
  for (const p of pages) await p.waitForFunction(() => document.querySelectorAll('[data-testid=chat-message]').length === 6);
  const seen = await Promise.all(pages.map(messages));
  assert.deepEqual(seen[1], seen[0]);
  assert.deepEqual(seen[2], seen[0]);
  for (const [i, n] of names.entries()) {
    for (const t of texts(i)) assert.ok(seen[0].some((m) => m.includes(n) && m.includes(t)), `${n}: ${t}`);
  }
  for (const p of pages) {
    assert.equal(await p.locator('.messages img').count(), 0, 'the markup stayed text');
  }

  // A latecomer gets the history.
  const late = await joinPage(ctx.browser, ctx.server.url, 'chat', 'Margaret');
  await late.waitForFunction(() => document.querySelectorAll('[data-testid=chat-message]').length === 6);
  assert.deepEqual(await messages(late), seen[0]);
});

test('malformed, unknown and oversized messages get an error reply and change nothing else', async () => {
  const watcher = await joinPage(ctx.browser, ctx.server.url, 'protocol', 'Watcher');
  await watcher.getByTestId('participant').waitFor();
  const probe = await (await ctx.browser.newContext()).newPage();
  await probe.goto(ctx.server.url + '/healthz');
  const replies = await probe.evaluate((wsUrl) => new Promise((resolve) => {
    const ws = new WebSocket(wsUrl);
    const got = [];
    ws.onmessage = (e) => {
      got.push(JSON.parse(e.data));
      if (got.length === 5) resolve(got);
    };
    ws.onopen = () => {
      ws.send('{not json');
      ws.send(JSON.stringify({ type: 'teleport' }));
      ws.send(JSON.stringify({ type: 'chat', text: 'before joining' }));
      ws.send(JSON.stringify({ type: 'join', v: 99, room: 'protocol', name: 'Old' }));
      ws.send(JSON.stringify({ type: 'ping' }));
    };
  }), ctx.server.url.replace('http', 'ws') + '/ws');
  assert.deepEqual(replies.map((r) => r.type === 'error' ? r.code : r.type),
    ['bad-message', 'bad-message', 'not-joined', 'unsupported-version', 'pong']);
  // A message over 64 KiB is not even buffered: the socket closes without a reply.
  const oversized = await probe.evaluate((wsUrl) => new Promise((resolve) => {
    const ws = new WebSocket(wsUrl);
    let replies = 0;
    ws.onmessage = () => { replies += 1; };
    ws.onopen = () => ws.send(JSON.stringify({ type: 'chat', text: 'x'.repeat(70 * 1024) }));
    ws.onclose = () => resolve(replies);
  }), ctx.server.url.replace('http', 'ws') + '/ws');
  assert.equal(oversized, 0);
  for (const r of replies.filter((r) => r.type === 'error')) assert.ok(r.message.length > 0);
  assert.equal(await watcher.getByTestId('chat-message').count(), 0);
  assert.equal(await watcher.getByTestId('participant').count(), 1);
  assert.notEqual(await watcher.getByTestId('status').textContent(), 'disconnected');
});
