// HTTPS from certificate files: `sori serve --tls-cert --tls-key` with a certificate of a test
// CA that Chromium trusts; two browsers join over https:// and wss:// and decode each other;
// replacing the files is picked up by new connections while the call goes on; a missing or
// unusable file stops the start with an error naming it.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mkdtempSync, copyFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSori, joinPage, waitForVideoFrom, assertUdp } from './helpers.js';
import { makeCa, makeLeaf, launchTrustingBrowser, servedCertificate, readText } from './tls-helpers.js';

const NAME = 'sori.test';

test('https from certificate files: a call over https:// and wss://, new files picked up mid-call', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sori-https-'));
  const ca = makeCa(dir);
  const first = makeLeaf(dir, 'first', NAME);
  const second = makeLeaf(dir, 'second', NAME);
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  copyFileSync(first.cert, cert);
  copyFileSync(first.key, key);
  const server = await spawnSori(['serve', '--listen', '127.0.0.1:0', '--rtc-port', '0', '--advertise-ip', '127.0.0.1', '--no-turn',
    '--tls-cert', cert, '--tls-key', key], /listening on (https:\/\/\S+)/);
  const port = Number(new URL(server.match).port);
  const browser = await launchTrustingBrowser(join(dir, 'home'), ca.cert, NAME);
  try {
    const caPem = readText(ca.cert);
    const before = await servedCertificate(port, NAME, caPem);
    assert.equal(before.authorized, true, `the certificate verifies against the test CA: ${before.error}`);
    const url = `https://${NAME}:${port}`;
    const ada = await joinPage(browser, url, 'secure', 'Ada');
    const bo = await joinPage(browser, url, 'secure', 'Bo');
    await waitForVideoFrom(ada, 'Bo');
    await waitForVideoFrom(bo, 'Ada');
    assert.equal(await ada.evaluate(() => location.protocol), 'https:');
    assert.equal(await ada.evaluate(() => window.isSecureContext), true);
    await assertUdp(ada);

    // The files are replaced (key, then certificate, each renamed into place, as a renewal
    // tool does): new connections get the new certificate within seconds; the call goes on.
    const joinedBefore = server.log.filter((l) => l.includes('participant joined')).length;
    copyFileSync(second.key, key + '.new');
    renameSync(key + '.new', key);
    copyFileSync(second.cert, cert + '.new');
    renameSync(cert + '.new', cert);
    const started = Date.now();
    let now = before;
    while (now.serial === before.serial && Date.now() - started < 15000) {
      await new Promise((r) => setTimeout(r, 200));
      now = await servedCertificate(port, NAME, caPem);
    }
    assert.notEqual(now.serial, before.serial, 'the new certificate is served');
    assert.equal(now.authorized, true);
    console.log(`new certificate served ${Date.now() - started} ms after the files were replaced`);
    await waitForVideoFrom(ada, 'Bo');
    const joinedAfter = server.log.filter((l) => l.includes('participant joined')).length;
    assert.equal(joinedAfter, joinedBefore, 'nobody had to join again');
    // A third browser page comes in on the new certificate.
    const cy = await joinPage(browser, url, 'secure', 'Cy');
    await waitForVideoFrom(cy, 'Ada');

    // Broken files: reported, and the certificate in use stays.
    const reports = () => server.log.filter((l) => l.includes('do not load')).length;
    const reported = reports();
    writeFileSync(cert, 'not a certificate\n');
    const brokeAt = Date.now();
    while (reports() === reported && Date.now() - brokeAt < 15000) await new Promise((r) => setTimeout(r, 200));
    assert.ok(reports() > reported, 'the broken files are reported');
    assert.equal((await servedCertificate(port, NAME, caPem)).serial, now.serial);
  } finally {
    await browser.close();
    await server.stop();
  }
});

test('a missing or unusable certificate or key stops the start, naming the file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sori-https-bad-'));
  makeCa(dir);
  const leaf = makeLeaf(dir, 'leaf', NAME);
  const other = makeLeaf(dir, 'other', NAME);
  const missing = join(dir, 'missing.pem');
  writeFileSync(join(dir, 'empty.pem'), '');
  for (const [cert, key, says] of [
    [missing, leaf.key, missing],
    [leaf.cert, missing, missing],
    [join(dir, 'empty.pem'), leaf.key, join(dir, 'empty.pem')],
    [leaf.cert, other.key, leaf.cert],
  ]) {
    const run = spawnSori(['serve', '--listen', '127.0.0.1:0', '--rtc-port', '0', '--no-turn', '--tls-cert', cert, '--tls-key', key], /listening on (\S+)/);
    const error = await run.then(() => null, (e) => e.message);
    assert.ok(error, `started with ${cert} and ${key}`);
    assert.ok(error.includes(says), `the error names ${says}: ${error}`);
  }
});
