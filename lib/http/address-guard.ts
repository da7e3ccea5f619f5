// Refuses loopback, private, link-local, unspecified, multicast and reserved addresses, so a crawl
// list cannot make us fetch from the machine itself, its LAN or a cloud metadata endpoint.
// The client checks the address a socket actually connected to, so DNS rebinding does not help.
import { BlockList, isIP } from 'node:net';

const v4: Array<[string, number, string]> = [
  ['0.0.0.0', 8, 'unspecified'],
  ['10.0.0.0', 8, 'private'],
  ['100.64.0.0', 10, 'carrier-grade NAT'],
  ['127.0.0.0', 8, 'loopback'],
  ['169.254.0.0', 16, 'link-local'],
  ['172.16.0.0', 12, 'private'],
  ['192.0.0.0', 24, 'reserved'],
  ['192.0.2.0', 24, 'documentation'],
  ['192.168.0.0', 16, 'private'],
  ['198.18.0.0', 15, 'benchmarking'],
  ['198.51.100.0', 24, 'documentation'],
  ['203.0.113.0', 24, 'documentation'],
  ['224.0.0.0', 4, 'multicast'],
  ['240.0.0.0', 4, 'reserved'],
];
const v6: Array<[string, number, string]> = [
  ['::', 128, 'unspecified'],
  ['::1', 128, 'loopback'],
  ['fc00::', 7, 'private'],
  ['fe80::', 10, 'link-local'],
  ['fec0::', 10, 'site-local'],
  ['ff00::', 8, 'multicast'],
  ['2001:db8::', 32, 'documentation'],
  ['100::', 64, 'discard'],
];

const lists = [...v4.map((r) => [...r, 'ipv4'] as const), ...v6.map((r) => [...r, 'ipv6'] as const)].map(
  ([net, prefix, reason, family]) => {
    const list = new BlockList();
    list.addSubnet(net, prefix, family);
    return { list, family, reason, cidr: `${net}/${prefix}` };
  },
);

/** IPv4 embedded in IPv6 forms that reach an IPv4 host: ::ffff:a.b.c.d, ::a.b.c.d, 64:ff9b::a.b.c.d. */
function embeddedV4(ip: string): string | null {
  const m = /^(?:::ffff:|::|64:ff9b::)(?:0:)?([\d.]+)$/i.exec(ip);
  if (m && isIP(m[1]!) === 4) return m[1]!;
  const hex = /^(?:::ffff:|64:ff9b::)([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i.exec(ip);
  if (hex) {
    const hi = parseInt(hex[1]!, 16);
    const lo = parseInt(hex[2]!, 16);
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  }
  return null;
}

/** Why an address is refused ("loopback 127.0.0.0/8"), or null when it is a public address. */
export function blockedReason(address: string): string | null {
  const ip = address.replace(/^\[|\]$/g, '').replace(/%.*$/, '');
  const family = isIP(ip);
  if (family === 0) return 'not an IP address';
  if (family === 6) {
    const inner = embeddedV4(ip);
    if (inner) return blockedReason(inner);
  }
  const fam = family === 4 ? 'ipv4' : 'ipv6';
  for (const l of lists) {
    if (l.family === fam && l.list.check(ip, fam)) return `${l.reason} ${l.cidr}`;
  }
  return null;
}

export class BlockedAddressError extends Error {
  readonly code = 'ADDRESS_BLOCKED';
  constructor(
    readonly host: string,
    readonly address: string,
    readonly reason: string,
  ) {
    super(
      `refused to connect to ${host} (${address}): ${reason} address; pass --allow-private-addresses to allow it`,
    );
  }
}
