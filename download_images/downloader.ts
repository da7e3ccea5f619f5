// Fetches one image the way img2dataset 1.47's download_image_with_retry does (same User-Agent,
// X-Robots-Tag opt-out check, retry rule and error_message wording, data: URLs), on our shared
// HttpClient, which adds what img2dataset lacks: an absolute deadline per attempt, a body cap, the
// address guard and Retry-After honoured while the deadline allows it.
import { STATUS_CODES } from 'node:http';
import { DnsCache } from '../lib/http/dns-cache.ts';
import { HttpClient, HttpError, header, parseRetryAfter, type Headers } from '../lib/http/client.ts';

export interface DownloaderOptions {
  /** --timeout: absolute per attempt (connect, headers, whole body, Retry-After waits). */
  timeoutMs: number;
  /** --retries: further attempts after the first, back to back as img2dataset makes them. */
  retries: number;
  /** --max-image-bytes */
  maxImageBytes: number;
  /** --user-agent-token */
  userAgentToken: string | null;
  /** --disallowed-header-directives; empty turns the X-Robots-Tag check off. */
  disallowedHeaderDirectives: string[];
}

export type DownloadOutcome = { ok: true; bytes: Buffer; url: string } | { ok: false; error: string };

export const DEFAULT_DISALLOWED_HEADER_DIRECTIVES: readonly string[] = ['noai', 'noimageai', 'noindex', 'noimageindex'];

export const DEFAULT_DOWNLOADER_OPTIONS: Readonly<DownloaderOptions> = {
  timeoutMs: 10_000,
  retries: 0,
  maxImageBytes: 50_000_000,
  userAgentToken: null,
  disallowedHeaderDirectives: [...DEFAULT_DISALLOWED_HEADER_DIRECTIVES],
};

export const ROBOTS_REFUSAL = 'Use of image disallowed by X-Robots-Tag directive';

const BASE_USER_AGENT = 'Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:72.0) Gecko/20100101 Firefox/72.0';
/** Our bot name in UA-scoped X-Robots-Tag rules, whether or not a token is given. */
const BOT_NAME = 'img2dataset';
/** A server that keeps answering 429 with Retry-After: 0 must not get a request storm. */
const MAX_RATE_LIMIT_WAITS = 3;

/** img2dataset strips and lower-cases the token once and uses that copy everywhere, UA included. */
function normaliseToken(token: string | null | undefined): string | null {
  const t = token?.trim().toLowerCase();
  return t ? t : null;
}

/** Our own refusals: the same request would be refused again (img2dataset has no such checks). */
const NOT_RETRIED: ReadonlySet<string> = new Set(['ADDRESS_BLOCKED', 'BAD_URL', 'BODY_TOO_LARGE']);

/** Ends a download for good: no retry would change the answer. */
class FinalError extends Error {}

/** The server sent fewer bytes than it declared, worded as CPython's http.client.IncompleteRead. */
function incompleteRead(got: number, declared: number | undefined): string {
  return declared !== undefined && declared > got
    ? `IncompleteRead(${got} bytes read, ${declared - got} more expected)`
    : `IncompleteRead(${got} bytes read)`;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface ImageHttpClientOptions {
  allowPrivateAddresses?: boolean;
  /** --per-host-connections (default 16). */
  perHostConnections?: number;
  userAgentToken?: string | null;
  dnsCache?: DnsCache;
}

/** The one keep-alive pool a download_images process shares between all its shards. */
export function createImageHttpClient(opts: ImageHttpClientOptions = {}): HttpClient {
  return new HttpClient({
    allowPrivateAddresses: opts.allowPrivateAddresses ?? false,
    connectionsPerHost: opts.perHostConnections ?? 16,
    userAgent: ImageDownloader.userAgent(opts.userAgentToken ?? null),
    dnsCache: opts.dnsCache ?? new DnsCache(),
  });
}

/**
 * Whether any X-Robots-Tag value forbids our use. Each value is `directives` (applies to every bot)
 * or `botname: directives` (applies when botname is ours); directives are comma-separated.
 */
export function isDisallowed(headers: Headers, userAgentToken: string | null, disallowed: ReadonlySet<string>): boolean {
  if (disallowed.size === 0) return false;
  const raw = headers['x-robots-tag'];
  const values = raw === undefined ? [] : Array.isArray(raw) ? raw : [raw];
  const ours = new Set([BOT_NAME, ...(userAgentToken ? [userAgentToken] : [])]);
  for (const value of values) {
    const colon = value.indexOf(':');
    const bot = colon >= 0 ? value.slice(0, colon).trim().toLowerCase() : null;
    if (bot !== null && !ours.has(bot)) continue;
    const directives = (colon >= 0 ? value.slice(colon + 1) : value).split(',').map((d) => d.trim().toLowerCase());
    if (directives.some((d) => disallowed.has(d))) return true;
  }
  return false;
}

/** Decodes a data: URL as urllib's DataHandler does: percent-decoded to bytes, then base64 if flagged. */
function decodeDataUrl(url: string, maxBytes: number): DownloadOutcome {
  const rest = url.slice(url.indexOf(':') + 1);
  const comma = rest.indexOf(',');
  if (comma < 0) return { ok: false, error: 'not enough values to unpack (expected 2, got 1)' };
  const mediatype = rest.slice(0, comma);
  const src = Buffer.from(rest.slice(comma + 1), 'utf8');
  const out = Buffer.alloc(src.length);
  let n = 0;
  const hex = (b: number | undefined): number => (b === undefined ? NaN : parseInt(String.fromCharCode(b), 16));
  for (let i = 0; i < src.length; i++) {
    const hi = hex(src[i + 1]);
    const lo = hex(src[i + 2]);
    if (src[i] === 0x25 && !Number.isNaN(hi) && !Number.isNaN(lo)) {
      out[n++] = hi * 16 + lo;
      i += 2;
    } else out[n++] = src[i]!;
  }
  let bytes = out.subarray(0, n);
  if (mediatype.toLowerCase().endsWith(';base64')) bytes = Buffer.from(bytes.toString('latin1'), 'base64');
  if (bytes.length > maxBytes) return { ok: false, error: tooLarge(maxBytes) };
  return { ok: true, bytes: Buffer.from(bytes), url };
}

function tooLarge(maxBytes: number): string {
  return `image is larger than the --max-image-bytes limit of ${maxBytes} bytes`;
}

/** Undici/OS error codes to the text CPython's urllib puts in str(exception) for the same failure. */
const URLLIB_ERRORS: Record<string, string> = {
  ENOTFOUND: '<urlopen error [Errno -2] Name or service not known>',
  EAI_NONAME: '<urlopen error [Errno -2] Name or service not known>',
  EAI_AGAIN: '<urlopen error [Errno -3] Temporary failure in name resolution>',
  EAI_NODATA: '<urlopen error [Errno -5] No address associated with hostname>',
  ECONNREFUSED: '<urlopen error [Errno 111] Connection refused>',
  EHOSTUNREACH: '<urlopen error [Errno 113] No route to host>',
  ENETUNREACH: '<urlopen error [Errno 101] Network is unreachable>',
  ECONNRESET: '[Errno 104] Connection reset by peer',
  EPIPE: '[Errno 32] Broken pipe',
  ETIMEDOUT: '<urlopen error timed out>',
  UND_ERR_CONNECT_TIMEOUT: '<urlopen error timed out>',
};

const CERT_ERRORS: Record<string, string> = {
  CERT_HAS_EXPIRED: 'certificate has expired',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'self-signed certificate',
  SELF_SIGNED_CERT_IN_CHAIN: 'self-signed certificate in certificate chain',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'unable to get local issuer certificate',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'unable to get local issuer certificate',
  ERR_TLS_CERT_ALTNAME_INVALID: 'Hostname mismatch, certificate is not valid',
};

function causeCode(err: unknown): string | undefined {
  for (let e = err as { code?: unknown; cause?: unknown } | undefined, i = 0; e && i < 5; e = e.cause as typeof e, i++) {
    if (typeof e.code === 'string' && !(e instanceof HttpError)) return e.code;
  }
  return undefined;
}

export class ImageDownloader {
  private readonly token: string | null;
  private readonly directives: ReadonlySet<string>;
  private readonly userAgentString: string;

  constructor(
    private readonly client: HttpClient,
    private readonly opts: DownloaderOptions,
  ) {
    this.token = normaliseToken(opts.userAgentToken);
    this.directives = new Set(opts.disallowedHeaderDirectives.map((d) => d.trim().toLowerCase()));
    this.userAgentString = ImageDownloader.userAgent(opts.userAgentToken);
  }

  /** img2dataset's User-Agent: Firefox 72 on Ubuntu, plus `(compatible; <token>; +repo)` with a token. */
  static userAgent(token: string | null): string {
    const t = normaliseToken(token);
    return t ? `${BASE_USER_AGENT} (compatible; ${t}; +https://github.com/rom1504/img2dataset)` : BASE_USER_AGENT;
  }

  /** Never throws. Takes at most (retries + 1) x timeoutMs, plus scheduling slack. */
  async download(url: string): Promise<DownloadOutcome> {
    try {
      const target = url.trim();
      const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(target)?.[1]?.toLowerCase();
      if (!scheme) return { ok: false, error: `unknown url type: '${target}'` };
      if (scheme === 'data') return decodeDataUrl(target, this.opts.maxImageBytes);
      // urllib would also read file: and ftp:; a crawl list must not read local files, so neither.
      if (scheme !== 'http' && scheme !== 'https') return { ok: false, error: `<urlopen error unknown url type: ${scheme}>` };
      let error = 'no attempt made';
      for (let attempt = 0; attempt <= Math.max(0, this.opts.retries); attempt++) {
        try {
          return await this.attempt(target);
        } catch (err) {
          error = this.describe(err);
          if (err instanceof FinalError || (err instanceof HttpError && NOT_RETRIED.has(err.code))) break;
        }
      }
      return { ok: false, error };
    } catch (err) {
      return { ok: false, error: this.describe(err) };
    }
  }

  /** One img2dataset attempt; throws on failure. 429/503 Retry-After is waited out inside it. */
  private async attempt(url: string): Promise<DownloadOutcome & { ok: true }> {
    const deadline = Date.now() + this.opts.timeoutMs;
    for (let waits = 0; ; waits++) {
      const left = deadline - Date.now();
      if (left <= 0) throw new HttpError('TIMEOUT', 'timed out', url);
      // The cap is enforced below with img2dataset's message, so open() gets no maxBytes. We ask
      // for identity, but some servers gzip images anyway: a browser decodes those, so do we.
      const res = await this.client.open(url, {
        timeoutMs: left,
        headers: { 'user-agent': this.userAgentString, 'accept-encoding': 'identity' },
        decodeContentEncoding: true,
      });
      if (res.status < 200 || res.status >= 300) {
        await res.dump();
        if ((res.status === 429 || res.status === 503) && waits < MAX_RATE_LIMIT_WAITS) {
          const wait = parseRetryAfter(header(res.headers, 'retry-after'));
          // Only a wait that leaves time for the next request; otherwise fail now, not at the deadline.
          if (wait !== undefined && Date.now() + wait < deadline - 50) {
            await sleep(wait);
            continue;
          }
        }
        throw new HttpError('HTTP_STATUS', `HTTP Error ${res.status}: ${STATUS_CODES[res.status] ?? ''}`, res.url, res.status);
      }
      // Like img2dataset, decided on the headers before the body is read (the request is already made).
      if (isDisallowed(res.headers, this.token, this.directives)) {
        await res.dump();
        throw new FinalError(ROBOTS_REFUSAL);
      }
      // An encoded body's Content-Length counts wire bytes, not the image's.
      const lengthHeader = res.decodedEncoding === undefined ? header(res.headers, 'content-length') : undefined;
      const declared = lengthHeader !== undefined && /^\d+$/.test(lengthHeader.trim()) ? Number(lengthHeader) : undefined;
      const max = this.opts.maxImageBytes;
      if (declared !== undefined && declared > max) {
        await res.dump();
        throw new HttpError('BODY_TOO_LARGE', tooLarge(max), res.url, res.status);
      }
      const parts: Buffer[] = [];
      let got = 0;
      try {
        for await (const chunk of res.body) {
          got += chunk.length;
          if (got > max) {
            await res.dump();
            throw new HttpError('BODY_TOO_LARGE', tooLarge(max), res.url, res.status);
          }
          parts.push(chunk);
        }
      } catch (err) {
        // The connection ended before the declared (or chunked) body did.
        const code = causeCode(err);
        if (err instanceof HttpError && err.code === 'NETWORK' && (code === 'UND_ERR_SOCKET' || code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH')) {
          throw new HttpError('NETWORK', incompleteRead(got, declared), res.url, res.status);
        }
        throw err;
      }
      return { ok: true, bytes: parts.length === 1 ? parts[0]! : Buffer.concat(parts, got), url: res.url };
    }
  }

  /** An error_message worded as img2dataset's for the same failure; ours for our own checks. */
  private describe(err: unknown): string {
    if (err instanceof FinalError) return err.message;
    if (!(err instanceof HttpError)) return err instanceof Error ? err.message : String(err);
    switch (err.code) {
      case 'TIMEOUT':
        return 'timed out';
      case 'HTTP_STATUS':
        return err.message.startsWith('HTTP Error') ? err.message : `HTTP Error ${err.status}: ${STATUS_CODES[err.status ?? 0] ?? ''}`;
      case 'TOO_MANY_REDIRECTS': {
        const status = err.status ?? 302;
        return `HTTP Error ${status}: The HTTP server returned a redirect error that would lead to an infinite loop.\nThe last 30x error message was:\n${STATUS_CODES[status] ?? ''}`;
      }
      case 'BODY_TOO_LARGE':
        return tooLarge(this.opts.maxImageBytes);
      case 'ADDRESS_BLOCKED':
        return err.message;
      case 'BAD_URL': {
        const scheme = /unsupported scheme (\S+?):/.exec(err.message)?.[1];
        // A redirect to another scheme: urllib refuses those with a 30x HTTPError; we name the scheme.
        return scheme ? `<urlopen error unknown url type: ${scheme}>` : `<urlopen error ${err.message}>`;
      }
      case 'NETWORK': {
        if (err.message.startsWith('IncompleteRead(')) return err.message;
        const code = causeCode(err);
        if (code && URLLIB_ERRORS[code]) return URLLIB_ERRORS[code]!;
        if (code && CERT_ERRORS[code]) {
          return `<urlopen error [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: ${CERT_ERRORS[code]} (_ssl.c:1006)>`;
        }
        if (code === 'UND_ERR_SOCKET') return 'Remote end closed connection without response';
        return err.message;
      }
    }
  }
}
