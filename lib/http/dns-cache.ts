// An in-process cache of DNS answers, positive and negative, so millions of requests to the same
// hosts do not each ask the resolver. Shaped as net's `lookup` option.
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import type { LookupFunction } from 'node:net';

export interface DnsCacheOptions {
  /** How long a successful answer is kept (the OS resolver gives no TTL to getaddrinfo callers). */
  ttlMs?: number;
  /** How long a failure (NXDOMAIN, timeout) is kept. */
  negativeTtlMs?: number;
  maxEntries?: number;
  /** The resolver underneath; defaults to the OS one (getaddrinfo). */
  resolve?: (hostname: string) => Promise<LookupAddress[]>;
}

interface Entry {
  expires: number;
  addresses?: LookupAddress[];
  error?: NodeJS.ErrnoException;
  pending?: Promise<LookupAddress[]>;
}

const osResolve = (hostname: string): Promise<LookupAddress[]> =>
  new Promise((resolve, reject) =>
    dnsLookup(hostname, { all: true }, (err, addresses) => (err ? reject(err) : resolve(addresses))),
  );

export class DnsCache {
  private readonly entries = new Map<string, Entry>();
  private readonly ttlMs: number;
  private readonly negativeTtlMs: number;
  private readonly maxEntries: number;
  private readonly resolveFn: (hostname: string) => Promise<LookupAddress[]>;
  hits = 0;
  misses = 0;

  constructor(opts: DnsCacheOptions = {}) {
    this.ttlMs = opts.ttlMs ?? 300_000;
    this.negativeTtlMs = opts.negativeTtlMs ?? 30_000;
    this.maxEntries = opts.maxEntries ?? 100_000;
    this.resolveFn = opts.resolve ?? osResolve;
  }

  async resolve(hostname: string): Promise<LookupAddress[]> {
    const now = Date.now();
    const e = this.entries.get(hostname);
    if (e && (e.pending || e.expires > now)) {
      this.hits++;
      if (e.pending) return e.pending;
      if (e.error) throw e.error;
      return e.addresses!;
    }
    this.misses++;
    const pending = this.resolveFn(hostname);
    this.set(hostname, { expires: Infinity, pending });
    try {
      const addresses = await pending;
      this.set(hostname, { expires: Date.now() + this.ttlMs, addresses });
      return addresses;
    } catch (err) {
      this.set(hostname, { expires: Date.now() + this.negativeTtlMs, error: err as NodeJS.ErrnoException });
      throw err;
    }
  }

  private set(hostname: string, entry: Entry): void {
    this.entries.delete(hostname);
    if (this.entries.size >= this.maxEntries) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
    this.entries.set(hostname, entry);
  }

  /** net/tls `lookup` option backed by this cache. */
  readonly lookup: LookupFunction = (hostname, options, callback) => {
    this.resolve(hostname).then(
      (all) => {
        const wanted = options.family === 4 || options.family === 6 ? all.filter((a) => a.family === options.family) : all;
        if (wanted.length === 0) {
          const err: NodeJS.ErrnoException = new Error(`getaddrinfo ENOTFOUND ${hostname}`);
          err.code = 'ENOTFOUND';
          callback(err, '', 0);
        } else if (options.all) {
          (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, wanted);
        } else {
          callback(null, wanted[0]!.address, wanted[0]!.family);
        }
      },
      (err: NodeJS.ErrnoException) => callback(err, '', 0),
    );
  };
}
