// Which refused address ranges a client may reach after all. `allowPrivateAddresses` lifts the
// whole guard; tests and the demo only need loopback, and must still see 10/8, 169.254/16 and the
// rest refused (a redirect to a metadata endpoint is exactly what they check), hence ranges.
import { BlockList, isIP } from 'node:net';
import { blockedReason } from './address-guard.ts';

export interface AddressPolicyOptions {
  /** Lifts the guard entirely. */
  allowPrivateAddresses?: boolean;
  /** CIDRs reachable although the guard refuses them, e.g. LOOPBACK_RANGES. */
  allowRanges?: readonly string[];
}

export interface AddressPolicy {
  /** True when nothing is refused, so a client can skip the checks. */
  readonly allowsAll: boolean;
  /** Why `address` is refused under this policy, or null. Accepts bracketed and zoned IPv6. */
  blockedReason(address: string): string | null;
}

export const LOOPBACK_RANGES: readonly string[] = ['127.0.0.0/8', '::1/128'];

/** The IPv4 address inside an IPv4-mapped or NAT64 IPv6 address, whatever its spelling. */
function mappedV4(ip: string): string | null {
  let canonical: string;
  try {
    canonical = new URL(`http://[${ip}]/`).hostname.slice(1, -1);
  } catch {
    return null;
  }
  const m = /^(?:::ffff:|64:ff9b::|::)([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(canonical);
  if (!m) return null;
  const hi = parseInt(m[1]!, 16);
  const lo = parseInt(m[2]!, 16);
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

function parseCidr(cidr: string): { net: string; prefix: number; family: 'ipv4' | 'ipv6' } {
  const [net = '', prefixText] = cidr.trim().split('/');
  const family = isIP(net);
  if (family === 0) throw new Error(`not a CIDR range: ${cidr}`);
  const max = family === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? max : Number(prefixText);
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max) throw new Error(`not a CIDR range: ${cidr}`);
  return { net, prefix, family: family === 4 ? 'ipv4' : 'ipv6' };
}

export function createAddressPolicy(opts: AddressPolicyOptions = {}): AddressPolicy {
  if (opts.allowPrivateAddresses) return { allowsAll: true, blockedReason: () => null };
  const allowed = new BlockList();
  const ranges = (opts.allowRanges ?? []).map(parseCidr);
  for (const r of ranges) allowed.addSubnet(r.net, r.prefix, r.family);
  const isAllowed = (ip: string): boolean => {
    if (ranges.length === 0) return false;
    const family = isIP(ip);
    if (family === 4) return allowed.check(ip, 'ipv4');
    if (family !== 6) return false;
    const v4 = mappedV4(ip);
    return v4 !== null ? allowed.check(v4, 'ipv4') : allowed.check(ip, 'ipv6');
  };
  return {
    allowsAll: false,
    blockedReason(address: string): string | null {
      const reason = blockedReason(address);
      if (reason === null) return null;
      const ip = address.replace(/^\[|\]$/g, '').replace(/%.*$/, '');
      return isAllowed(ip) ? null : reason;
    },
  };
}
