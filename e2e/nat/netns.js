// A small internet inside network namespaces that the test creates and removes itself:
//
//   upstream (203.0.113.1: the bridge's address, the default route of every public host; forwards nothing)
//   server (203.0.113.10) ─┐
//   natA (203.0.113.21) ───┤ bridge "wan" ├─ natB (203.0.113.22)     blocked (203.0.113.30)
//     └─ a (192.168.1.2)   │              └─ b (192.168.2.2)          UDP dropped by its own firewall
//
// natA and natB are routers that masquerade their LAN: "symmetric" gives every new flow a random
// public port (endpoint-dependent mapping), "preserving" keeps one public port per LAN socket
// (endpoint-independent mapping, address-dependent filtering, like most home routers).
// No address here exists outside these namespaces.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const UPSTREAM_IP = '203.0.113.1';
export const SERVER_IP = '203.0.113.10';
export const NAT_A_IP = '203.0.113.21';
export const NAT_B_IP = '203.0.113.22';
export const BLOCKED_IP = '203.0.113.30';

/** Why these tests cannot run here, or null. */
export function unavailable() {
  if (process.getuid && process.getuid() !== 0) return 'network namespaces need root (run as root, as CI does)';
  for (const tool of ['ip', 'nft']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      return `${tool} is not installed (scripts/test installs iproute2 and nftables)`;
    }
  }
  return null;
}

function run(args, input) {
  try {
    return execFileSync(args[0], args.slice(1), { input, stdio: ['pipe', 'pipe', 'pipe'] }).toString();
  } catch (e) {
    throw new Error(`${args.join(' ')}: ${e.stderr?.toString() || e.message}`);
  }
}

/**
 * Namespace `wan` holding a bridge at `gateway` (a /24), and one namespace per `[name, address]`
 * of `hosts` on it, each with `eth0` at its address and a default route via the bridge. The
 * hosts' ports on the bridge are named `<last part of the name>-w` (for `tc` and the like).
 * IPv6 is off everywhere: its link-local addresses arrive a second after a link comes up, and
 * Chromium, seeing the network change, fails a page load under way (ERR_NETWORK_CHANGED).
 */
export function bridgedHosts(wan, gateway, hosts) {
  for (const n of [wan, ...hosts.map(([h]) => h)]) {
    run(['ip', 'netns', 'add', n]);
    run(['ip', 'netns', 'exec', n, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
    run(['ip', 'netns', 'exec', n, 'ip', 'link', 'set', 'lo', 'up']);
  }
  const inWan = (...args) => run(['ip', 'netns', 'exec', wan, ...args]);
  inWan('ip', 'link', 'add', 'br0', 'type', 'bridge');
  inWan('ip', 'addr', 'add', `${gateway}/24`, 'dev', 'br0');
  inWan('ip', 'link', 'set', 'br0', 'up');
  for (const [host, addr] of hosts) {
    const port = `${host.split('-').pop()}-w`;
    const inHost = (...args) => run(['ip', 'netns', 'exec', host, ...args]);
    run(['ip', 'link', 'add', port, 'netns', wan, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host]);
    inWan('ip', 'link', 'set', port, 'master', 'br0', 'up');
    inHost('ip', 'addr', 'add', `${addr}/24`, 'dev', 'eth0');
    inHost('ip', 'link', 'set', 'eth0', 'up');
    inHost('ip', 'route', 'add', 'default', 'via', gateway);
  }
}

/** Creates the namespaces; `nat` is 'symmetric' or 'preserving' for both routers. */
export function createNetwork(nat) {
  const tag = `sn${process.pid % 100000}`;
  const ns = {
    wan: `${tag}-wan`, server: `${tag}-srv`, natA: `${tag}-nata`, natB: `${tag}-natb`,
    a: `${tag}-a`, b: `${tag}-b`, blocked: `${tag}-blk`,
  };
  const ip = (...args) => run(['ip', ...args]);
  const inNs = (n, ...args) => run(['ip', 'netns', 'exec', n, ...args]);
  const net = {
    ns,
    nat,
    exec: inNs,
    destroy() {
      for (const n of Object.values(ns)) {
        try { ip('netns', 'del', n); } catch { /* already gone */ }
      }
    },
  };
  try {
    for (const n of Object.values(ns)) {
      ip('netns', 'add', n);
      // IPv6 addresses usable at once (see multihomed.test.js): no network change under a
      // page that is loading.
      inNs(n, 'sysctl', '-qw', 'net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0');
      inNs(n, 'ip', 'link', 'set', 'lo', 'up');
    }
    inNs(ns.wan, 'ip', 'link', 'add', 'br0', 'type', 'bridge');
    inNs(ns.wan, 'ip', 'link', 'set', 'br0', 'up');
    // One veth pair per host on the wan bridge.
    const attach = (host, dev, addr) => {
      ip('link', 'add', `${host}-w`, 'netns', ns.wan, 'type', 'veth', 'peer', 'name', dev, 'netns', host);
      inNs(ns.wan, 'ip', 'link', 'set', `${host}-w`, 'master', 'br0', 'up');
      inNs(host, 'ip', 'addr', 'add', `${addr}/24`, 'dev', dev);
      inNs(host, 'ip', 'link', 'set', dev, 'up');
    };
    attach(ns.server, 'wan0', SERVER_IP);
    attach(ns.natA, 'wan0', NAT_A_IP);
    attach(ns.natB, 'wan0', NAT_B_IP);
    attach(ns.blocked, 'wan0', BLOCKED_IP);
    // The rest of the internet: every public host has a default route, to an upstream router
    // (the bridge's own address) that forwards nothing and answers nothing, as the internet
    // drops datagrams to private addresses. Without it, sending to a peer's private host
    // candidate fails at once with "network unreachable", which real servers never see (and
    // which makes coturn close the sender's whole allocation).
    inNs(ns.wan, 'ip', 'addr', 'add', `${UPSTREAM_IP}/24`, 'dev', 'br0');
    inNs(ns.wan, 'sysctl', '-qw', 'net.ipv4.ip_forward=0');
    for (const host of [ns.server, ns.natA, ns.natB, ns.blocked]) inNs(host, 'ip', 'route', 'add', 'default', 'via', UPSTREAM_IP);
    // LANs behind the routers.
    const lan = (router, host, net24) => {
      ip('link', 'add', 'lan0', 'netns', router, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host);
      inNs(router, 'ip', 'addr', 'add', `${net24}.1/24`, 'dev', 'lan0');
      inNs(router, 'ip', 'link', 'set', 'lan0', 'up');
      inNs(host, 'ip', 'addr', 'add', `${net24}.2/24`, 'dev', 'eth0');
      inNs(host, 'ip', 'link', 'set', 'eth0', 'up');
      inNs(host, 'ip', 'route', 'add', 'default', 'via', `${net24}.1`);
      inNs(router, 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
      const mode = nat === 'symmetric' ? ' fully-random' : '';
      run(['ip', 'netns', 'exec', router, 'nft', '-f', '-'], `
table ip nat {
  chain post {
    type nat hook postrouting priority srcnat;
    oifname "wan0" masquerade${mode}
  }
}
table ip filter {
  # Unsolicited datagrams from outside are dropped before their conntrack entry is confirmed:
  # otherwise an early hole-punching packet from the other peer would leave an entry that makes
  # the router remap our own later flow to a new port (a router that keeps one mapping per
  # socket must not do that).
  chain in {
    type filter hook input priority filter; policy accept;
    iifname "wan0" ct state new drop
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
    iifname "lan0" oifname "wan0" accept
    iifname "wan0" oifname "lan0" ct state established,related accept
  }
}
`);
    };
    lan(ns.natA, ns.a, '192.168.1');
    lan(ns.natB, ns.b, '192.168.2');
    // The blocked host's firewall drops every UDP datagram it would send or receive.
    run(['ip', 'netns', 'exec', ns.blocked, 'nft', '-f', '-'], `
table inet fw {
  chain out {
    type filter hook output priority filter;
    oifname "wan0" meta l4proto udp drop
  }
  chain in {
    type filter hook input priority filter;
    iifname "wan0" meta l4proto udp drop
  }
}
`);
  } catch (e) {
    net.destroy();
    throw e;
  }
  return net;
}

/** A Chromium launcher that starts the browser inside namespace `n`. */
export function chromiumIn(n) {
  const dir = mkdtempSync(join(tmpdir(), 'sori-netns-'));
  const path = join(dir, 'chromium');
  writeFileSync(path, `#!/bin/sh\nexec ip netns exec ${n} ${process.env.CHROMIUM || '/usr/bin/chromium'} "$@"\n`);
  chmodSync(path, 0o755);
  return path;
}
