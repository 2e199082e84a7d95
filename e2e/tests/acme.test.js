// HTTPS by ACME: `sori serve --domain sori.test --acme-directory <pebble>` gets its certificate
// from pebble (Debian's ACME test CA), which proves the domain by TLS-ALPN-01 against Sori's
// listener, resolving sori.test through a DNS server of the test's own. Chromium, trusting
// pebble's root, joins https://sori.test and decodes another browser's video; a forced renewal
// (SIGHUP) swaps the certificate without dropping the call.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import https from 'node:https';
import { spawnSori, joinPage, waitForVideoFrom, assertUdp } from './helpers.js';
import { makeCa, makeLeaf, launchTrustingBrowser, servedCertificate, startDns, readText } from './tls-helpers.js';

const NAME = 'sori.test';

/** A TCP port free at the time of asking. */
function freePort() {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** GET over HTTPS trusting `ca` (PEM text). */
function get(url, ca) {
  return new Promise((resolve, reject) => {
    https.get(url, { ca }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`${url}: ${res.statusCode}`))));
    }).once('error', reject);
  });
}

/** Starts pebble with its directory on `dirPort`, validating TLS-ALPN-01 on `tlsPort` and
 * HTTP-01 on `httpPort`. */
async function startPebble(dir, { dirPort, mgmtPort, tlsPort, httpPort = 1, dnsPort }) {
  makeCa(dir);
  const own = makeLeaf(dir, 'pebble', 'localhost');
  const config = join(dir, 'pebble.json');
  writeFileSync(config, JSON.stringify({
    pebble: {
      listenAddress: `127.0.0.1:${dirPort}`,
      managementListenAddress: `127.0.0.1:${mgmtPort}`,
      certificate: own.cert,
      privateKey: own.key,
      httpPort,
      tlsPort,
      ocspResponderURL: '',
      externalAccountBindingRequired: false,
    },
  }));
  const child = spawn('pebble', ['-config', config, '-dnsserver', `127.0.0.1:${dnsPort}`], {
    // No random sleeps before validating; no nonces refused on purpose (pebble refuses 5 % by
    // default to exercise clients' retries).
    env: { ...process.env, PEBBLE_VA_NOSLEEP: '1', PEBBLE_WFE_NONCEREJECT: '0' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log = [];
  await new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`pebble exited with ${code}:\n${log.join('\n')}`)));
    for (const stream of [child.stdout, child.stderr]) {
      createInterface({ input: stream }).on('line', (line) => {
        log.push(line);
        if (/Listening on: /.test(line) || /ACME directory available/.test(line)) resolve();
      });
    }
  });
  return { ca: join(dir, 'ca.pem'), log, stop: () => child.kill('SIGKILL') };
}

test('a certificate from an ACME CA (pebble): a call over https://sori.test, renewed mid-call', { timeout: 180_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sori-acme-'));
  const dns = await startDns(NAME);
  const [dirPort, mgmtPort, port] = [await freePort(), await freePort(), await freePort()];
  const pebble = await startPebble(join(dir, 'pebble'), { dirPort, mgmtPort, tlsPort: port, dnsPort: dns.port });
  const pebbleCa = readText(pebble.ca);
  const server = await spawnSori(['serve', '--listen', `127.0.0.1:${port}`, '--rtc-port', '0', '--advertise-ip', '127.0.0.1', '--no-turn',
    '--domain', NAME, '--acme-email', 'ops@sori.test', '--acme-directory', `https://127.0.0.1:${dirPort}/dir`,
    '--acme-ca-root', pebble.ca, '--acme-cache', join(dir, 'acme')], /(ACME: new certificate in use)/);
  let browser;
  try {
    // Pebble makes a new root at each start: Chromium trusts this one.
    const root = await get(`https://127.0.0.1:${mgmtPort}/roots/0`, pebbleCa);
    writeFileSync(join(dir, 'root.pem'), root);
    const first = await servedCertificate(port, NAME, root);
    assert.match(first.issuer, /Pebble/, `issued by pebble: ${JSON.stringify(first)}`);
    assert.equal(first.authorized, true, `verifies against pebble's root: ${first.error}`);
    assert.equal(first.subjectaltname, `DNS:${NAME}`);
    if (process.env.SORI_E2E_PEBBLE_LOG) console.log(pebble.log.join('\n'));

    browser = await launchTrustingBrowser(join(dir, 'home'), join(dir, 'root.pem'), NAME);
    const url = `https://${NAME}:${port}`;
    const ada = await joinPage(browser, url, 'acme', 'Ada');
    const bo = await joinPage(browser, url, 'acme', 'Bo');
    await waitForVideoFrom(ada, 'Bo');
    await waitForVideoFrom(bo, 'Ada');
    assert.equal(await ada.evaluate(() => window.isSecureContext), true);
    await assertUdp(ada);

    // A forced renewal: a new certificate from a new order, served to new connections, while
    // the call goes on over the connections it has.
    const renewed = () => server.log.filter((l) => l.includes('ACME: new certificate in use')).length;
    const joined = () => server.log.filter((l) => l.includes('participant joined')).length;
    const [before, joinedBefore] = [renewed(), joined()];
    const asked = Date.now();
    server.child.kill('SIGHUP');
    while (renewed() === before && Date.now() - asked < 60000) await new Promise((r) => setTimeout(r, 200));
    assert.ok(renewed() > before, 'renewed after SIGHUP');
    const second = await servedCertificate(port, NAME, root);
    assert.notEqual(second.serial, first.serial, 'a new certificate is served');
    assert.equal(second.authorized, true);
    console.log(`renewal: new certificate in use ${Date.now() - asked} ms after SIGHUP (serial ${first.serial} → ${second.serial})`);
    await waitForVideoFrom(ada, 'Bo');
    await waitForVideoFrom(bo, 'Ada');
    assert.equal(joined(), joinedBefore, 'nobody had to join again');
    const cy = await joinPage(browser, url, 'acme', 'Cy');
    await waitForVideoFrom(cy, 'Bo');
  } finally {
    if (browser) await browser.close();
    await server.stop();
    pebble.stop();
    dns.close();
  }
});

test('HTTP-01 through the plain-HTTP listener, which sends everything else to https://', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sori-acme-http-'));
  const dns = await startDns(NAME);
  const [dirPort, mgmtPort, port, httpPort] = [await freePort(), await freePort(), await freePort(), await freePort()];
  // TLS-ALPN-01 would be checked on a port nobody listens on: only HTTP-01 can succeed.
  const pebble = await startPebble(join(dir, 'pebble'), { dirPort, mgmtPort, tlsPort: 1, httpPort, dnsPort: dns.port });
  const server = await spawnSori(['serve', '--listen', `127.0.0.1:${port}`, '--http-listen', `127.0.0.1:${httpPort}`,
    '--rtc-port', '0', '--advertise-ip', '127.0.0.1', '--no-turn', '--domain', NAME,
    '--acme-directory', `https://127.0.0.1:${dirPort}/dir`, '--acme-ca-root', pebble.ca, '--acme-cache', join(dir, 'acme')],
  /(ACME: new certificate in use)/);
  try {
    const root = await get(`https://127.0.0.1:${mgmtPort}/roots/0`, readText(pebble.ca));
    const cert = await servedCertificate(port, NAME, root);
    assert.match(cert.issuer, /Pebble/);
    assert.equal(cert.authorized, true, cert.error);
    assert.ok(pebble.log.some((l) => /set VALID by completed challenge/.test(l)), pebble.log.join('\n'));
    // Everything else on plain HTTP: a permanent redirect to the same path on https:// at the
    // certificate's name, whatever host the request named.
    const res = await fetch(`http://127.0.0.1:${httpPort}/?room=standup&name=Ada`, { redirect: 'manual' });
    assert.equal(res.status, 308);
    assert.equal(res.headers.get('location'), `https://${NAME}:${port}/?room=standup&name=Ada`);
    // An unknown challenge token is not found, not redirected.
    const token = await fetch(`http://127.0.0.1:${httpPort}/.well-known/acme-challenge/nope`, { redirect: 'manual' });
    assert.equal(token.status, 404);
  } finally {
    await server.stop();
    pebble.stop();
    dns.close();
  }
});
