// Misbehaving image URLs for tests and the demo: /faults/<kind>/<n> answers the way broken or hostile
// servers on the real web do (errors, rate limits, resets, trickles, endless or lying bodies, bombs,
// redirect tricks, opt-out headers). FAULT_KINDS says what the image downloader must end with for each,
// so tests and the demo check the same table.
//
// Register on the crawl host: host.addRoute('/faults/', faultsRoute()).
import type { IncomingMessage, ServerResponse } from 'node:http';
import { constants as zlibConstants, crc32 as zlibCrc32, deflateRawSync } from 'node:zlib';
import sharp from 'sharp';
import type { RouteHandler } from './crawl-host.ts';
import { Rng } from './random.ts';

export type FaultKind =
  | 'ok'
  | 'redirect-ok'
  | '404'
  | '500'
  | '429-then-ok'
  | '429-always'
  | '503-retry-after-long'
  | 'reset'
  | 'close-early'
  | 'slow-headers'
  | 'slow-drip'
  | 'endless'
  | 'truncated'
  | 'short-length'
  | 'huge-declared'
  | 'huge-undeclared'
  | 'bomb'
  | 'html'
  | 'redirect-loop'
  | 'redirect-metadata'
  | 'redirect-private'
  | 'robots-noai'
  | 'robots-ours'
  | 'robots-otherbot';

export type SampleStatus = 'success' | 'failed_to_download' | 'failed_to_resize';

export interface FaultExpectation {
  description: string;
  /**
   * What ImageDownloader.download ends with under the default options (10 s timeout, 50 MB cap,
   * default X-Robots-Tag directives, no token) and an address policy that allows loopback only.
   */
  download: { ok: true } | { ok: false; error: string | RegExp };
  /** The sample's img2dataset status once the resizer has seen the bytes. */
  status: SampleStatus;
  /** Ends only when the request deadline runs out. */
  waitsForDeadline?: boolean;
}

const REDIRECT_LOOP =
  'HTTP Error 302: The HTTP server returned a redirect error that would lead to an infinite loop.\nThe last 30x error message was:\nFound';
const REFUSED = /^refused to connect to .*pass --allow-private-addresses to allow it$/;
const TOO_LARGE = /^image is larger than the --max-image-bytes limit of \d+ bytes$/;

export const FAULT_KINDS: Readonly<Record<FaultKind, FaultExpectation>> = {
  ok: { description: 'a 64x64 JPEG', download: { ok: true }, status: 'success' },
  'redirect-ok': { description: 'three 302 hops, then the JPEG', download: { ok: true }, status: 'success' },
  '404': { description: '404 Not Found', download: { ok: false, error: 'HTTP Error 404: Not Found' }, status: 'failed_to_download' },
  '500': {
    description: '500 Internal Server Error',
    download: { ok: false, error: 'HTTP Error 500: Internal Server Error' },
    status: 'failed_to_download',
  },
  '429-then-ok': {
    description: 'first request 429 with Retry-After: 1, then the JPEG (waited out inside the deadline)',
    download: { ok: true },
    status: 'success',
  },
  '429-always': {
    description: '429 with Retry-After: 1 on every request',
    download: { ok: false, error: 'HTTP Error 429: Too Many Requests' },
    status: 'failed_to_download',
  },
  '503-retry-after-long': {
    description: '503 with Retry-After: 3600, longer than any deadline: fails at once',
    download: { ok: false, error: 'HTTP Error 503: Service Unavailable' },
    status: 'failed_to_download',
  },
  reset: {
    description: 'half a status line, then a TCP reset',
    download: { ok: false, error: '[Errno 104] Connection reset by peer' },
    status: 'failed_to_download',
  },
  'close-early': {
    description: 'the connection is closed before any response',
    download: { ok: false, error: 'Remote end closed connection without response' },
    status: 'failed_to_download',
  },
  'slow-headers': {
    description: 'accepts the request and never answers',
    download: { ok: false, error: 'timed out' },
    status: 'failed_to_download',
    waitsForDeadline: true,
  },
  'slow-drip': {
    description: '200 with headers, then one byte every 500 ms forever',
    download: { ok: false, error: 'timed out' },
    status: 'failed_to_download',
    waitsForDeadline: true,
  },
  endless: {
    description: '200, chunked, bytes as fast as the client reads, forever',
    download: { ok: false, error: TOO_LARGE },
    status: 'failed_to_download',
  },
  truncated: {
    description: 'Content-Length of the whole JPEG, half of it sent, then the connection closes',
    download: { ok: false, error: /^IncompleteRead\(\d+ bytes read, \d+ more expected\)$/ },
    status: 'failed_to_download',
  },
  'short-length': {
    description: 'Content-Length of the JPEG but trailing junk after it: the declared bytes are the image',
    download: { ok: true },
    status: 'success',
  },
  'huge-declared': {
    description: 'Content-Length over the cap (the body is really sent)',
    download: { ok: false, error: TOO_LARGE },
    status: 'failed_to_download',
  },
  'huge-undeclared': {
    description: 'chunked body over the cap',
    download: { ok: false, error: TOO_LARGE },
    status: 'failed_to_download',
  },
  bomb: {
    description: 'a valid 1-bit PNG of about 110 kB whose header says 30000x30000',
    download: { ok: true },
    status: 'failed_to_resize',
  },
  html: { description: 'an HTML page served as the image', download: { ok: true }, status: 'failed_to_resize' },
  'redirect-loop': { description: '302 to itself', download: { ok: false, error: REDIRECT_LOOP }, status: 'failed_to_download' },
  'redirect-metadata': {
    description: '302 to the cloud metadata endpoint http://169.254.169.254/latest/meta-data/',
    download: { ok: false, error: REFUSED },
    status: 'failed_to_download',
  },
  'redirect-private': {
    description: '302 to http://10.0.0.1/x',
    download: { ok: false, error: REFUSED },
    status: 'failed_to_download',
  },
  'robots-noai': {
    description: 'the JPEG with X-Robots-Tag: noai',
    download: { ok: false, error: 'Use of image disallowed by X-Robots-Tag directive' },
    status: 'failed_to_download',
  },
  'robots-ours': {
    description: 'the JPEG with X-Robots-Tag: img2dataset: noimageai (scoped to our bot)',
    download: { ok: false, error: 'Use of image disallowed by X-Robots-Tag directive' },
    status: 'failed_to_download',
  },
  'robots-otherbot': {
    description: 'the JPEG with X-Robots-Tag: otherbot: noai (scoped to another bot)',
    download: { ok: true },
    status: 'success',
  },
};

export interface FaultsOptions {
  /** Path prefix the route is registered under. */
  prefix?: string;
  seed?: number;
  /** Size of the huge bodies; above the 50 MB default cap unless a test lowers both. */
  hugeBytes?: number;
  /** Retry-After of the 429 kinds, in seconds. */
  retryAfterSeconds?: number;
  metadataUrl?: string;
  privateUrl?: string;
  /** Called with each request's path and User-Agent (tests check what arrived). */
  onRequest?: (path: string, userAgent: string | undefined) => void;
}

export function faultUrl(origin: string, kind: FaultKind, n = 0, prefix = '/faults/'): string {
  return `${origin}${prefix}${kind}/${n}`;
}

const imageCache = new Map<string, Promise<Buffer>>();

/** A small JPEG whose colour depends on seed and n. */
export function faultImage(seed: number, n: number, size = 64): Promise<Buffer> {
  const k = `${seed}/${n}/${size}`;
  let p = imageCache.get(k);
  if (!p) {
    const rng = new Rng(seed).fork(`fault-image-${n}`);
    const background = { r: rng.int(0, 255), g: rng.int(0, 255), b: rng.int(0, 255) };
    p = sharp({ create: { width: size, height: size, channels: 3, background } }).jpeg({ quality: 90 }).toBuffer();
    imageCache.set(k, p);
  }
  return p;
}

function pngChunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}

// zlib.crc32 arrived in Node 20.15 / 22.2; keep a fallback for older 20.x.
const crcTable = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();
function crc32(buf: Buffer): number {
  if (typeof zlibCrc32 === 'function') return zlibCrc32(buf) >>> 0;
  let c = 0xffffffff;
  for (const b of buf) c = crcTable[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

let bombPromise: Promise<Buffer> | undefined;

/**
 * A complete, valid PNG of side x side black 1-bit pixels whose 112 MB of scanlines (for 30000)
 * deflate to about 110 kB; decoding it would need 900 MB+ of pixels. Built in milliseconds, not by
 * deflating 112 MB: the scanlines are all zero bytes, so one full-flushed deflate block of a slice
 * of them can be repeated (a full flush makes each copy independent of the one before), and the
 * zlib trailer's Adler-32 of n zeros is simply a = 1, b = n mod 65521.
 */
export function decompressionBomb(side = 30000): Promise<Buffer> {
  if (side === 30000 && bombPromise) return bombPromise;
  const rowBytes = 1 + Math.ceil(side / 8); // filter byte 0, then zero pixels
  let rowsPerBlock = Math.min(side, 1000);
  while (side % rowsPerBlock !== 0) rowsPerBlock--;
  const block = deflateRawSync(Buffer.alloc(rowsPerBlock * rowBytes), { level: 9, finishFlush: zlibConstants.Z_FULL_FLUSH });
  const finalBlock = Buffer.from([0x03, 0x00]); // an empty fixed-Huffman block with BFINAL set
  const total = side * rowBytes;
  const adler = Buffer.alloc(4);
  adler.writeUInt32BE((((total % 65521) << 16) | 1) >>> 0, 0);
  const blocks: Buffer[] = [Buffer.from([0x78, 0xda])];
  for (let i = 0; i < side / rowsPerBlock; i++) blocks.push(block);
  blocks.push(finalBlock, adler);
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(side, 0);
  ihdr.writeUInt32BE(side, 4);
  ihdr[8] = 1; // bit depth
  ihdr[9] = 0; // greyscale
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const p = Promise.resolve(
    Buffer.concat([signature, pngChunk('IHDR', ihdr), pngChunk('IDAT', Buffer.concat(blocks)), pngChunk('IEND', Buffer.alloc(0))]),
  );
  if (side === 30000) bombPromise = p;
  return p;
}

const HTML = Buffer.from('<!doctype html>\n<html><head><title>Not an image</title></head><body><p>Page moved.</p></body></html>\n');

/** Streams `total` bytes (Infinity: forever) as fast as the client takes them; stops when it leaves. */
function pump(res: ServerResponse, total: number): void {
  const chunk = Buffer.alloc(64 * 1024, 0x5a);
  let sent = 0;
  const write = (): void => {
    while (!res.destroyed && sent < total) {
      const part = total - sent >= chunk.length ? chunk : chunk.subarray(0, total - sent);
      sent += part.length;
      if (!res.write(part)) {
        res.once('drain', write);
        return;
      }
    }
    if (!res.destroyed) res.end();
  };
  write();
}

export function faultsRoute(opts: FaultsOptions = {}): RouteHandler {
  const prefix = opts.prefix ?? '/faults/';
  const seed = opts.seed ?? 0;
  const hugeBytes = opts.hugeBytes ?? 64 * 1024 * 1024;
  const retryAfter = opts.retryAfterSeconds ?? 1;
  const metadataUrl = opts.metadataUrl ?? 'http://169.254.169.254/latest/meta-data/';
  const privateUrl = opts.privateUrl ?? 'http://10.0.0.1/x';
  const seen = new Map<string, number>();

  return async (req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> => {
    const path = decodeURIComponent(url.pathname);
    opts.onRequest?.(path, req.headers['user-agent']);
    const [kind = '', nText = '0'] = path.slice(prefix.length).split('/');
    const n = Number.parseInt(nText, 10) || 0;
    const count = (seen.get(path) ?? 0) + 1;
    seen.set(path, count);
    const image = (): Promise<Buffer> => faultImage(seed, n);
    const sendImage = async (extra: Record<string, string> = {}): Promise<void> => {
      const body = await image();
      res.writeHead(200, { 'content-type': 'image/jpeg', 'content-length': body.length, ...extra });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    const redirect = (location: string): void => {
      res.writeHead(302, { location });
      res.end();
    };

    switch (kind as FaultKind) {
      case 'ok':
        return sendImage();
      case 'redirect-ok': {
        const hop = Number(url.searchParams.get('hop') ?? '0');
        if (hop < 3) return redirect(`${prefix}redirect-ok/${n}?hop=${hop + 1}`);
        return sendImage();
      }
      case '404':
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end('not found\n');
        return;
      case '500':
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end('boom\n');
        return;
      case '429-then-ok':
        if (count === 1) {
          res.writeHead(429, { 'retry-after': String(retryAfter), 'content-type': 'text/plain' });
          res.end('slow down\n');
          return;
        }
        return sendImage();
      case '429-always':
        res.writeHead(429, { 'retry-after': String(retryAfter), 'content-type': 'text/plain' });
        res.end('slow down\n');
        return;
      case '503-retry-after-long':
        res.writeHead(503, { 'retry-after': '3600', 'content-type': 'text/plain' });
        res.end('maintenance\n');
        return;
      case 'reset':
        // The reset only reads as ECONNRESET once the partial headers have left.
        req.socket.write('HTTP/1.1 200 OK\r\nContent-Type: ima', () => {
          setTimeout(() => req.socket.resetAndDestroy(), 20);
        });
        return;
      case 'close-early':
        req.socket.destroy();
        return;
      case 'slow-headers':
        // Never answers; the server's close() ends the socket.
        return;
      case 'slow-drip': {
        res.writeHead(200, { 'content-type': 'image/jpeg' });
        const timer = setInterval(() => {
          if (!res.destroyed) res.write(Buffer.from([0xff]));
        }, 500);
        res.on('close', () => clearInterval(timer));
        res.write(Buffer.from([0xff]));
        return;
      }
      case 'endless':
        res.writeHead(200, { 'content-type': 'image/jpeg' });
        pump(res, Infinity);
        return;
      case 'truncated': {
        const body = await image();
        res.writeHead(200, { 'content-type': 'image/jpeg', 'content-length': body.length });
        res.write(body.subarray(0, Math.floor(body.length / 2)), () => req.socket.destroy());
        return;
      }
      case 'short-length': {
        const body = await image();
        // Framing by hand: node's response would refuse to send more than Content-Length.
        req.socket.write(
          `HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`,
        );
        req.socket.end(Buffer.concat([body, Buffer.from('trailing junk the Content-Length does not cover\n')]));
        return;
      }
      case 'huge-declared':
        res.writeHead(200, { 'content-type': 'image/jpeg', 'content-length': hugeBytes });
        pump(res, hugeBytes);
        return;
      case 'huge-undeclared':
        res.writeHead(200, { 'content-type': 'image/jpeg' });
        pump(res, hugeBytes);
        return;
      case 'bomb': {
        const body = await decompressionBomb();
        res.writeHead(200, { 'content-type': 'image/png', 'content-length': body.length });
        res.end(body);
        return;
      }
      case 'html':
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': HTML.length });
        res.end(HTML);
        return;
      case 'redirect-loop':
        return redirect(`${prefix}redirect-loop/${n}`);
      case 'redirect-metadata':
        return redirect(metadataUrl);
      case 'redirect-private':
        return redirect(privateUrl);
      case 'robots-noai':
        return sendImage({ 'x-robots-tag': 'noai' });
      case 'robots-ours':
        return sendImage({ 'x-robots-tag': 'img2dataset: noimageai' });
      case 'robots-otherbot':
        return sendImage({ 'x-robots-tag': 'otherbot: noai' });
      default:
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end(`unknown fault kind ${kind}\n`);
    }
  };
}
