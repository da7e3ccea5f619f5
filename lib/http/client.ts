// The HTTP client every fetching stage uses: an undici keep-alive pool with a per-host connection
// cap, an absolute deadline per request (connect + headers + whole body), a body size cap,
// redirects followed by hand so that every hop is checked, retries with backoff and Retry-After,
// and the address guard applied to the address each socket actually connected to.
import { lookup as osLookup } from 'node:dns';
import { isIP, type LookupFunction } from 'node:net';
import { STATUS_CODES } from 'node:http';
import { createBrotliDecompress, createGunzip, createInflate, createInflateRaw, type Gunzip } from 'node:zlib';
import { Agent, buildConnector } from 'undici';
import { BlockedAddressError } from './address-guard.ts';
import { createAddressPolicy, type AddressPolicy } from './address-policy.ts';
import { DnsCache } from './dns-cache.ts';
import { BodyCapError, ResponseReceiver, type ResponseHead } from './response-receiver.ts';

export type HttpErrorCode =
  | 'TIMEOUT'
  | 'BODY_TOO_LARGE'
  | 'TOO_MANY_REDIRECTS'
  | 'BAD_URL'
  | 'ADDRESS_BLOCKED'
  | 'NETWORK'
  | 'HTTP_STATUS';

export class HttpError extends Error {
  constructor(
    readonly code: HttpErrorCode,
    message: string,
    readonly url: string,
    readonly status?: number,
    /** Delay the server asked for (Retry-After), in ms. */
    readonly retryAfterMs?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface HttpClientOptions {
  /** Lifts the address guard (tests, the local demo). */
  allowPrivateAddresses?: boolean;
  /** Finer than allowPrivateAddresses (e.g. loopback only, for tests); wins over it when given. */
  addressPolicy?: AddressPolicy;
  /** Concurrent connections per origin. */
  connectionsPerHost?: number;
  userAgent?: string;
  /** A shared DNS cache; `false` asks the OS resolver every time. */
  dnsCache?: DnsCache | false;
  keepAliveMs?: number;
}

export interface RequestOptions {
  method?: 'GET' | 'HEAD';
  headers?: Record<string, string>;
  /** Absolute deadline for this request: connect, headers and the whole body. */
  timeoutMs: number;
  /** Body size cap in bytes. */
  maxBytes?: number;
  maxRedirects?: number;
  signal?: AbortSignal;
  /**
   * How far (bytes) the reader may fall behind the network before the request fails; see
   * response-receiver.ts for why the client buffers instead of pausing the connection.
   */
  highWaterBytes?: number;
  /**
   * Decode a gzip / deflate / br Content-Encoding (sent even though we never ask for one); the
   * cap then applies to the decoded bytes too. Off: the body is the bytes as sent.
   */
  decodeContentEncoding?: boolean;
}

export interface RetryOptions {
  /** Further attempts after the first. */
  retries?: number;
  /** Statuses worth another try. */
  retryStatuses?: readonly number[];
  /** First backoff delay; doubles each attempt, with jitter. */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** No retry is started that would wait past this time (ms since epoch). */
  giveUpAt?: number;
  onRetry?: (err: HttpError, attempt: number, delayMs: number) => void;
}

export type Headers = Record<string, string | string[] | undefined>;

export interface HttpResponse {
  /** The final URL, after redirects. */
  url: string;
  status: number;
  headers: Headers;
  redirects: number;
  /** The Content-Encoding that was decoded (decodeContentEncoding), if any. */
  decodedEncoding?: string;
  /** The body, capped and under the request's deadline. Consume it or call dump(). */
  body: AsyncIterable<Buffer>;
  buffer(): Promise<Buffer>;
  text(): Promise<string>;
  /** Discards the rest of the body and releases the connection. */
  dump(): Promise<void>;
}

export interface BufferedResponse {
  url: string;
  status: number;
  headers: Headers;
  redirects: number;
  body: Buffer;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
export const DEFAULT_HIGH_WATER_BYTES = 16 * 1024 * 1024;
export const DEFAULT_RETRY_STATUSES: readonly number[] = [408, 425, 429, 500, 502, 503, 504];

export function header(headers: Headers, name: string): string | undefined {
  const v = headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

/** Retry-After as milliseconds from now (delta-seconds or an HTTP date). */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  const t = value.trim();
  if (/^\d+$/.test(t)) return Number(t) * 1000;
  const date = Date.parse(t);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

export class HttpClient {
  private readonly agent: Agent;
  private readonly allowPrivate: boolean;
  private readonly policy: AddressPolicy;
  private readonly userAgent: string | undefined;

  constructor(opts: HttpClientOptions = {}) {
    this.policy = opts.addressPolicy ?? createAddressPolicy({ allowPrivateAddresses: opts.allowPrivateAddresses });
    this.allowPrivate = this.policy.allowsAll;
    this.userAgent = opts.userAgent;
    const cache = opts.dnsCache === false ? undefined : (opts.dnsCache ?? new DnsCache());
    const lookup = this.guardedLookup(cache?.lookup);
    const base = buildConnector({ ...(lookup ? { lookup } : {}), timeout: null } as buildConnector.BuildOptions);
    const allowPrivate = this.allowPrivate;
    const policy = this.policy;
    const connect: buildConnector.connector = (options, callback) => {
      base(options, (err, socket) => {
        if (err || !socket) return callback(err ?? new Error('connect failed'), null);
        if (!allowPrivate) {
          // The authoritative check: where did this socket really go?
          const addr = socket.remoteAddress ?? '';
          const reason = policy.blockedReason(addr);
          if (reason) {
            socket.destroy();
            return callback(new BlockedAddressError(options.hostname, addr, reason), null);
          }
        }
        callback(null, socket);
      });
    };
    this.agent = new Agent({
      connections: opts.connectionsPerHost ?? 16,
      keepAliveTimeout: opts.keepAliveMs ?? 10_000,
      keepAliveMaxTimeout: 60_000,
      connect,
    });
  }

  /** Fails fast, before any packet is sent, when every resolved address is refused. */
  private guardedLookup(lookup: LookupFunction | undefined): LookupFunction | undefined {
    if (this.allowPrivate) return lookup;
    const resolve = lookup ?? (osLookup as unknown as LookupFunction);
    return (hostname, options, callback) => {
      resolve(hostname, { ...options, all: true }, (err, addresses) => {
        if (err) return callback(err, '', 0);
        const all = addresses as unknown as Array<{ address: string; family: number }>;
        const ok = all.filter((a) => this.policy.blockedReason(a.address) === null);
        if (ok.length === 0) {
          const first = all[0];
          return callback(
            new BlockedAddressError(hostname, first?.address ?? '?', this.policy.blockedReason(first?.address ?? '') ?? 'no address'),
            '',
            0,
          );
        }
        if (options.all) (callback as unknown as (e: null, a: typeof ok) => void)(null, ok);
        else callback(null, ok[0]!.address, ok[0]!.family);
      });
    };
  }

  /** Opens a request, following redirects; the deadline keeps running while the body is read. */
  async open(url: string, opts: RequestOptions): Promise<HttpResponse> {
    let timedOut = false;
    let receiver: ResponseReceiver | undefined;
    const timer = setTimeout(() => {
      timedOut = true;
      receiver?.abort(new Error('deadline'));
    }, opts.timeoutMs);
    timer.unref();
    const onOuterAbort = (): void => receiver?.abort(new Error('aborted by the caller'));
    opts.signal?.addEventListener('abort', onOuterAbort, { once: true });
    const finish = (): void => {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onOuterAbort);
    };
    const seconds = `${(opts.timeoutMs / 1000).toFixed(opts.timeoutMs % 1000 ? 1 : 0)}s`;
    const translate = (err: unknown, at: string, status?: number): HttpError => {
      if (err instanceof HttpError) return err;
      if (timedOut) return new HttpError('TIMEOUT', `timed out after ${seconds} (connect, headers and body): ${at}`, at);
      if (err instanceof BodyCapError) return new HttpError('BODY_TOO_LARGE', err.message, at, status);
      if (err instanceof BlockedAddressError || (err as { code?: string })?.code === 'ADDRESS_BLOCKED') {
        return new HttpError('ADDRESS_BLOCKED', (err as Error).message, at, undefined, undefined, { cause: err });
      }
      const e = err as NodeJS.ErrnoException;
      const code = e?.code ? `${e.code}: ` : '';
      const msg = `${code}${e?.message ?? String(err)}`.replace(/\s*\n\s*/g, ' ');
      return new HttpError('NETWORK', msg, at, status, undefined, { cause: err });
    };
    if (opts.signal?.aborted) {
      finish();
      throw translate(new Error('aborted by the caller'), url);
    }

    let current = url;
    let method = opts.method ?? 'GET';
    const maxRedirects = opts.maxRedirects ?? 5;
    const maxBytes = opts.maxBytes ?? Infinity;
    try {
      for (let hop = 0; ; hop++) {
        const target = this.checkUrl(current);
        const headers: Record<string, string> = { ...(this.userAgent ? { 'user-agent': this.userAgent } : {}), ...opts.headers };
        // Encoded bodies can be far larger than the wire bytes: decoded ones are capped in decode().
        const rx = new ResponseReceiver(maxBytes, opts.highWaterBytes ?? DEFAULT_HIGH_WATER_BYTES);
        receiver = rx;
        this.agent.dispatch(
          {
            origin: target.origin,
            path: `${target.pathname}${target.search}`,
            method,
            headers,
            headersTimeout: opts.timeoutMs,
            bodyTimeout: opts.timeoutMs,
          },
          rx,
        );
        let head: ResponseHead;
        try {
          head = await rx.head;
        } catch (err) {
          throw translate(malformedHead(err), current);
        }
        const location = header(head.headers, 'location');
        if (REDIRECTS.has(head.status) && location !== undefined) {
          rx.abort(new Error('redirect followed'));
          if (hop >= maxRedirects) {
            throw new HttpError('TOO_MANY_REDIRECTS', `more than ${maxRedirects} redirects, last to ${location}`, current, head.status);
          }
          current = new URL(location, current).toString();
          if (head.status === 303) method = 'GET';
          continue;
        }
        const finalUrl = current;
        const declared = Number(header(head.headers, 'content-length'));
        const encoding = (header(head.headers, 'content-encoding') ?? 'identity').trim().toLowerCase();
        // Unknown codings pass through as they came (what a client that decodes nothing would store).
        const decoding = opts.decodeContentEncoding === true && method !== 'HEAD' && DECODABLE.has(encoding) && declared !== 0;
        if (method !== 'HEAD' && !decoding && Number.isFinite(declared) && declared > maxBytes) {
          rx.abort(new Error('declared body over the cap'));
          throw new HttpError('BODY_TOO_LARGE', `body of ${declared} bytes is over the ${maxBytes}-byte cap`, finalUrl, head.status);
        }
        const status = head.status;
        const wire = rx.chunks();
        const source = decoding ? decode(wire, encoding, maxBytes) : wire;
        async function* body(): AsyncGenerator<Buffer> {
          try {
            yield* source;
          } catch (err) {
            throw translate(err, finalUrl, status);
          } finally {
            rx.abort(new Error('body closed by the reader'));
            finish();
          }
        }
        const iter = body();
        const buffer = async (): Promise<Buffer> => {
          const parts: Buffer[] = [];
          for await (const c of iter) parts.push(c);
          return Buffer.concat(parts);
        };
        return {
          url: finalUrl,
          status,
          headers: head.headers,
          redirects: hop,
          decodedEncoding: decoding ? encoding : undefined,
          body: iter,
          buffer,
          text: async () => (await buffer()).toString('utf8'),
          dump: async () => {
            rx.abort(new Error('body discarded'));
            finish();
            await iter.return(undefined);
          },
        };
      }
    } catch (err) {
      finish();
      throw translate(err, current);
    }
  }

  private checkUrl(url: string): URL {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      throw new HttpError('BAD_URL', `not a URL: ${url}`, url);
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') {
      throw new HttpError('BAD_URL', `unsupported scheme ${u.protocol} in ${url}`, url);
    }
    const host = u.hostname.replace(/^\[|\]$/g, '');
    if (!this.allowPrivate && isIP(host)) {
      const reason = this.policy.blockedReason(host);
      if (reason) throw new HttpError('ADDRESS_BLOCKED', new BlockedAddressError(host, host, reason).message, url);
    }
    return u;
  }

  /**
   * GET the whole body (under the cap) with retries on network errors, timeouts and the retry
   * statuses. A final non-2xx status throws HTTP_STATUS.
   */
  async get(url: string, opts: RequestOptions & RetryOptions): Promise<BufferedResponse> {
    return withRetries(url, opts, async () => {
      const res = await this.open(url, opts);
      if (res.status < 200 || res.status >= 300) {
        await res.dump();
        throw statusError(res.url, res.status, res.headers);
      }
      const body = await res.buffer();
      return { url: res.url, status: res.status, headers: res.headers, redirects: res.redirects, body };
    });
  }

  async close(): Promise<void> {
    await this.agent.close();
  }
}

/**
 * Parser errors before the headers are whole mean the server's framing cannot be trusted. undici
 * reports two different Content-Length headers as a length mismatch, which reads like a truncation.
 */
function malformedHead(err: unknown): unknown {
  const e = err as { code?: string; message?: string };
  if (e?.code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH') {
    return new Error('malformed response: conflicting Content-Length headers', { cause: err });
  }
  if (/^HPE_/.test(e?.code ?? '') || (err as Error)?.name === 'HTTPParserError') {
    return new Error(`malformed response: ${e.message ?? String(err)}`, { cause: err });
  }
  return err;
}

const DECODABLE = new Set(['gzip', 'x-gzip', 'br', 'deflate']);

function hasZlibHeader(b: Buffer): boolean {
  return b.length >= 2 && (b[0]! & 0x0f) === 8 && ((b[0]! << 8) | b[1]!) % 31 === 0;
}

/** A Content-Encoding'd body, decoded as it streams, the decoded bytes under the same cap. */
async function* decode(wire: AsyncIterable<Buffer>, encoding: string, maxBytes: number): AsyncGenerator<Buffer> {
  const it = wire[Symbol.asyncIterator]();
  const first = await it.next();
  const head = first.done ? Buffer.alloc(0) : first.value;
  let z: Gunzip | ReturnType<typeof createInflate>;
  if (encoding === 'gzip' || encoding === 'x-gzip') z = createGunzip();
  else if (encoding === 'br') z = createBrotliDecompress();
  // "deflate" should be zlib-wrapped, but many servers send raw deflate; browsers accept both.
  else z = hasZlibHeader(head) ? createInflate() : createInflateRaw();
  const feeding = (async () => {
    try {
      for (let r: IteratorResult<Buffer> = first; !r.done; r = await it.next()) {
        const chunk = r.value;
        if (!z.write(chunk)) await new Promise<void>((r) => z.once('drain', r).once('close', r));
        if (z.destroyed) return;
      }
      z.end();
    } catch (err) {
      z.destroy(err as Error);
    }
  })();
  let n = 0;
  try {
    for await (const out of z) {
      n += (out as Buffer).length;
      if (n > maxBytes) throw new BodyCapError(`body is over the ${maxBytes}-byte cap once decoded (${encoding})`);
      yield out as Buffer;
    }
    await feeding;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code?.startsWith('Z_')) throw new Error(`bad ${encoding} body: ${e.message}`);
    throw err;
  } finally {
    z.destroy();
  }
}

export function statusError(url: string, status: number, headers: Headers): HttpError {
  return new HttpError(
    'HTTP_STATUS',
    `HTTP ${status} ${STATUS_CODES[status] ?? ''}`.trim(),
    url,
    status,
    parseRetryAfter(header(headers, 'retry-after')),
  );
}

export function isRetryable(err: HttpError, statuses: readonly number[] = DEFAULT_RETRY_STATUSES): boolean {
  if (err.code === 'NETWORK' || err.code === 'TIMEOUT') return true;
  return err.code === 'HTTP_STATUS' && err.status !== undefined && statuses.includes(err.status);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Runs `attempt` until it succeeds, the error is final, or the retries or time run out. */
export async function withRetries<T>(url: string, opts: RetryOptions, attempt: () => Promise<T>): Promise<T> {
  const retries = opts.retries ?? 0;
  for (let i = 0; ; i++) {
    try {
      return await attempt();
    } catch (err) {
      const e = err instanceof HttpError ? err : new HttpError('NETWORK', String(err), url);
      if (i >= retries || !isRetryable(e, opts.retryStatuses)) throw e;
      const cap = opts.maxBackoffMs ?? 60_000;
      const backoff = (opts.backoffMs ?? 500) * 2 ** i * (0.75 + Math.random() / 2);
      const delay = Math.min(cap, e.retryAfterMs ?? backoff);
      if (opts.giveUpAt !== undefined && Date.now() + delay > opts.giveUpAt) throw e;
      opts.onRetry?.(e, i + 1, delay);
      await sleep(delay);
    }
  }
}
