// Certificates for the HTTPS tests: a test CA made with openssl, a browser that trusts a CA
// (an NSS database in a HOME of its own, as Chromium on Linux reads it), the certificate a
// server presents, and a DNS server that knows one name (for the ACME CA's validation).
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import dgram from 'node:dgram';
import tls from 'node:tls';
import { chromium } from 'playwright-core';
import { launchOptions } from './helpers.js';

const openssl = (args, cwd) => execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });

/** A CA (`ca.pem`, `ca.key`) in `dir`. */
export function makeCa(dir) {
  mkdirSync(dir, { recursive: true });
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=Sori test CA'], dir);
  return { cert: join(dir, 'ca.pem'), key: join(dir, 'ca.key') };
}

/** A server certificate for `name` (and 127.0.0.1) signed by the CA of `dir`: `<base>.pem`,
 * `<base>.key`. */
export function makeLeaf(dir, base, name) {
  writeFileSync(join(dir, `${base}.ext`), `subjectAltName=DNS:${name},IP:127.0.0.1\nextendedKeyUsage=serverAuth\n`);
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', `${base}.key`, '-out', `${base}.csr`, '-subj', `/CN=${name}`], dir);
  openssl(['x509', '-req', '-in', `${base}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-days', '1', '-out', `${base}.pem`, '-extfile', `${base}.ext`], dir);
  return { cert: join(dir, `${base}.pem`), key: join(dir, `${base}.key`) };
}

/** Chromium trusting the CA certificate `caPem` (a file), with `name` resolving to 127.0.0.1;
 * its HOME (and NSS database) is `home`. */
export async function launchTrustingBrowser(home, caPem, name) {
  const db = join(home, '.pki', 'nssdb');
  mkdirSync(db, { recursive: true });
  execFileSync('certutil', ['-N', '-d', `sql:${db}`, '--empty-password']);
  execFileSync('certutil', ['-A', '-d', `sql:${db}`, '-t', 'C,,', '-n', 'sori-test-ca', '-i', caPem]);
  const options = launchOptions();
  options.args.push(`--host-resolver-rules=MAP ${name} 127.0.0.1`);
  options.env = { ...process.env, HOME: home };
  return chromium.launch(options);
}

/** The certificate `127.0.0.1:port` presents for `name`: serial, issuer CN, and whether it
 * verifies against `caPem` (text). */
export function servedCertificate(port, name, caPem) {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: name, ca: caPem, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] }, () => {
      const c = socket.getPeerCertificate();
      resolve({ serial: c.serialNumber, issuer: c.issuer && c.issuer.CN, subjectaltname: c.subjectaltname, authorized: socket.authorized, error: socket.authorizationError });
      socket.end();
    });
    socket.once('error', reject);
    socket.setTimeout(5000, () => { socket.destroy(); reject(new Error('TLS handshake timed out')); });
  });
}

/** A DNS server on 127.0.0.1 (UDP) that answers A queries for `name` with 127.0.0.1, other
 * types for it with no records, and anything else with NXDOMAIN. */
export async function startDns(name) {
  const socket = dgram.createSocket('udp4');
  const want = name.toLowerCase();
  socket.on('message', (q, from) => {
    if (q.length < 12) return;
    let i = 12;
    const labels = [];
    while (i < q.length && q[i] !== 0) {
      const len = q[i];
      if (len > 63 || i + 1 + len > q.length) return;
      labels.push(q.subarray(i + 1, i + 1 + len).toString('latin1'));
      i += 1 + len;
    }
    if (i + 5 > q.length) return;
    const qtype = q.readUInt16BE(i + 1);
    const question = q.subarray(12, i + 5);
    const known = labels.join('.').toLowerCase() === want;
    const answer = known && qtype === 1
      ? Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1])
      : Buffer.alloc(0);
    const header = Buffer.alloc(12);
    header.writeUInt16BE(q.readUInt16BE(0), 0);
    header.writeUInt16BE(0x8180 | (known ? 0 : 3), 2);
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(answer.length ? 1 : 0, 6);
    socket.send(Buffer.concat([header, question, answer]), from.port, from.address);
  });
  await new Promise((r) => socket.bind(0, '127.0.0.1', r));
  return { port: socket.address().port, close: () => socket.close() };
}

export const readText = (path) => readFileSync(path, 'utf8');
